//! The admin endpoint (`--admin-socket PATH`): a unix stream socket that
//! speaks the text (and binary) protocol like the data port, in admin
//! sessions ([`Session::admin`]): the commands that change a server's role
//! or data (`replica promote`, `replica follow URL`) run only here, and
//! `shutdown` and `flush_all` run here whatever `-A` and `-F` say.
//!
//! ```sh
//! printf 'replica promote\r\n' | socat - UNIX-CONNECT:/run/logmemcached/admin.sock
//! ```
//!
//! It is protected by its file mode: created `--admin-socket-mode` (default
//! 0600, so only the server's user and root may connect), owned by the
//! server's user. The mode is set before the socket listens, so no connection
//! can be made while the file still has the umask's mode. A stale socket
//! left by a killed server is replaced; a live one (another server's) or a
//! file that is not a socket is an error at start. The file is removed when
//! the server stops.
//!
//! A control-path thread accepts; each connection gets a thread, at most
//! [`MAX_CONNECTIONS`] at once (one more is told so and closed), and is
//! closed after [`IDLE_TIMEOUT`] without input. Requests of all sessions run
//! one at a time (they are rare), so the control path's counters
//! ([`Runtime::control_stats`]) keep a single writer.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};

use crate::error::{Context as _, Result};
use crate::protocol::{self, Ctx, Session, Step};
use crate::runtime::Runtime;
use crate::store::Store;

/// Admin connections open at once.
pub const MAX_CONNECTIONS: usize = 8;
/// An admin connection with no input for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Replies are written out once they hold this much (a large multi-get).
const OUT_FLUSH: usize = 1 << 20;

/// The listening socket's file; removed when dropped (at shutdown).
pub struct AdminSocket {
    path: PathBuf,
    /// Device and inode of the socket we created: only that file is removed.
    id: (u64, u64),
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Create the socket at `path` with file mode `mode` and start serving it.
pub fn start(path: &Path, mode: u32, store: Arc<Store>, rt: Arc<Runtime>) -> Result<AdminSocket> {
    let what = || format!("--admin-socket {}", path.display());
    clear_stale(path).with_context(what)?;
    let fd = socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .context("creating the admin socket")
        .with_context(what)?;
    let addr = UnixAddr::new(path).context("admin socket path").with_context(what)?;
    socket::bind(fd.as_raw_fd(), &addr).context("binding").with_context(what)?;
    let m = std::fs::symlink_metadata(path).context("reading it back").with_context(what)?;
    // From here on the file is removed on any failure (and at shutdown).
    let guard = AdminSocket { path: path.to_path_buf(), id: (m.dev(), m.ino()) };
    // Not listening yet: a connect now is refused, so nobody gets in while
    // the file still has the umask's mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
        .context("setting its mode")
        .with_context(what)?;
    socket::listen(&fd, Backlog::new(16).unwrap_or(Backlog::MAXCONN)).context("listening").with_context(what)?;
    let listener = UnixListener::from(fd);
    let open = Arc::new(AtomicUsize::new(0));
    let one_at_a_time = Arc::new(Mutex::new(()));
    std::thread::Builder::new()
        .name("admin-socket".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(s) = conn else { continue };
                admit(s, &open, &store, &rt, &one_at_a_time);
            }
        })
        .context("starting the admin socket thread")?;
    Ok(guard)
}

/// A socket file left by a server that is gone is removed; anything else
/// at `path` is an error (never delete what is not ours to delete).
fn clear_stale(path: &Path) -> Result<()> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !m.file_type().is_socket() {
        crate::bail!("{} exists and is not a socket", path.display());
    }
    match UnixStream::connect(path) {
        Ok(_) => crate::bail!("another server is serving on {}", path.display()),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).context("removing a stale admin socket")?;
            Ok(())
        }
        Err(e) => Err(crate::error::Error::from(e).context("checking an existing socket")),
    }
}

fn admit(mut s: UnixStream, open: &Arc<AtomicUsize>, store: &Arc<Store>, rt: &Arc<Runtime>, lock: &Arc<Mutex<()>>) {
    if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        open.fetch_sub(1, Ordering::AcqRel);
        let _ = s.write_all(b"SERVER_ERROR too many admin connections\r\n");
        return;
    }
    let open_count = open;
    let (open, store, rt, lock) = (open.clone(), store.clone(), rt.clone(), lock.clone());
    let spawned = std::thread::Builder::new().name("admin-session".into()).spawn(move || {
        if let Err(e) = serve(s, &store, &rt, &lock) {
            if rt.verbosity() > 0 {
                crate::log_warn!("admin socket session: {e}");
            }
        }
        open.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        // The closure went with the failed spawn, its decrement too.
        open_count.fetch_sub(1, Ordering::AcqRel);
        crate::log_warn!("admin socket: cannot start a session thread");
    }
}

/// One admin session: read, run every complete request, write the replies.
fn serve(mut s: UnixStream, store: &Store, rt: &Runtime, lock: &Mutex<()>) -> std::io::Result<()> {
    s.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut session = Session::admin();
    let (mut input, mut out) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(()),
            Err(e) => return Err(e),
        };
        input.extend_from_slice(&buf[..n]);
        let mut pos = 0;
        let mut close = false;
        while pos < input.len() && !close {
            let step = {
                let _one = lock.lock().unwrap_or_else(|p| p.into_inner());
                let ctx = Ctx { store, stats: rt.control_stats(), rt };
                protocol::step(&mut session, &input[pos..], &mut out, &ctx)
            };
            match step {
                Step::Consumed { len, .. } | Step::Discarded(len) => pos += len,
                Step::NeedMore => break,
                Step::Close => close = true,
                // A multi-get stopped between hits (never here: admin sessions
                // set no output limit); the next step carries on from its state.
                Step::Paused => {}
            }
            if out.len() >= OUT_FLUSH {
                s.write_all(&out)?;
                out.clear();
            }
        }
        input.drain(..pos);
        s.write_all(&out)?;
        out.clear();
        if close {
            return Ok(());
        }
    }
}
