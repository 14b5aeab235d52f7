//! The TCP server: `-t` worker threads, each a busy-polling loop over its own
//! non-blocking connections, sharing one listening socket.
//!
//! What requests see of the process (settings, stats, role, verbosity) is
//! `crate::runtime::Runtime`; this module keeps the sockets, the workers and
//! the shutdown plumbing. Shutdown is orderly: SIGTERM or SIGINT (or the
//! runtime's shutdown hook) sets `Shared::shutdown` and wakes every worker
//! through its eventfd; each closes its connections and returns.

mod accept;
pub mod admin;
mod conn;
pub mod listen;
pub mod notify;
pub mod rdma;
mod signals;
mod uring_stream;
mod uring_worker;
mod waiters;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::{Context, Result};
use crate::runtime::{IoMode, Runtime, Settings};
use crate::store::Store;

pub use signals::install_shutdown_signals;

/// A worker's maps and sets keyed by connection token. Tokens are counters
/// the worker hands out, never a client's choice, so a fast unkeyed hash
/// serves them (SipHash cost about 1.5% of a get's CPU).
type TokenMap<V> = rustc_hash::FxHashMap<u64, V>;
type TokenSet = rustc_hash::FxHashSet<u64>;

/// What only the server needs besides the runtime: the shutdown flag and
/// the eventfds that wake each worker out of a blocking wait.
pub struct Shared {
    pub rt: Arc<Runtime>,
    shutdown: AtomicBool,
    /// Wakes each worker out of a blocking wait (shutdown).
    wakers: Vec<EventFd>,
}

impl Shared {
    /// One waker per worker; installs the runtime's shutdown hook (so a
    /// request can stop the server without naming it).
    pub fn new(rt: Arc<Runtime>) -> Result<Arc<Shared>> {
        let wakers = (0..rt.settings.threads)
            .map(|_| EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC))
            .collect::<std::result::Result<Vec<_>, _>>()
            .context("creating worker eventfds")?;
        let shared = Arc::new(Shared { rt, shutdown: AtomicBool::new(false), wakers });
        // Weak: the runtime must not keep the server alive.
        let weak = Arc::downgrade(&shared);
        shared.rt.set_shutdown_hook(Box::new(move || {
            if let Some(s) = weak.upgrade() {
                s.request_shutdown();
            }
        }));
        Ok(shared)
    }

    /// Ask every worker to finish; safe to call from any thread, repeatedly.
    pub fn request_shutdown(&self) {
        if !self.shutdown.swap(true, Ordering::AcqRel) {
            // Tell systemd once, at the start of the shutdown.
            notify::stopping();
        }
        for w in &self.wakers {
            // A full eventfd counter still wakes the worker; ignore EAGAIN.
            let _ = w.write(1);
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Wakes worker `id` out of a blocking wait, from any thread (it then
    /// polls everything once, e.g. its RDMA connections' inbox).
    fn waker(self: &Arc<Self>, id: usize) -> rdma::Waker {
        let weak = Arc::downgrade(self);
        Arc::new(move || {
            if let Some(w) = weak.upgrade().as_ref().and_then(|s| s.wakers.get(id)) {
                let _ = w.write(1);
            }
        })
    }
}

/// The loop the workers run for `--io`: `uring` where io_uring works here
/// (probed: io_uring_setup fails with ENOSYS or EPERM where the kernel
/// lacks it or a seccomp profile forbids it), else `epoll`. `auto` logs
/// which it chose and why; `uring` fails when it cannot have it. The
/// RDMA endpoint's completion channel is served by the epoll loop only.
pub fn choose_io(settings: &Settings) -> Result<IoMode> {
    let probed = crate::memory::uring::probe();
    match (settings.io, probed, settings.rdma_listen.is_some()) {
        (IoMode::Epoll, _, _) => Ok(IoMode::Epoll),
        (IoMode::Uring, _, true) => crate::bail!("--io uring: --rdma-listen is served by the epoll loop only (use --io epoll or auto)"),
        (IoMode::Uring, Err(e), _) => Err(crate::error::Error::new(format!(
            "--io uring: io_uring is not available here ({e}); the kernel may lack it or a seccomp profile forbid it (use --io epoll or auto)"
        ))),
        (IoMode::Uring, Ok(()), _) => Ok(IoMode::Uring),
        (IoMode::Auto, _, true) => {
            crate::log_notice!("--io auto: epoll (--rdma-listen is served by the epoll loop only)");
            Ok(IoMode::Epoll)
        }
        (IoMode::Auto, Err(e), _) => {
            crate::log_notice!("--io auto: epoll (io_uring is not available here: {e})");
            Ok(IoMode::Epoll)
        }
        (IoMode::Auto, Ok(()), _) => {
            crate::log_notice!("--io auto: uring");
            Ok(IoMode::Uring)
        }
    }
}

/// Bind the TCP listeners (`-l`, `-p`, `-b`): for each worker, one socket
/// per address (see `listen.rs`); none under `-s`, whose socket
/// `listen::bind_unix` adds after privileges are dropped.
pub fn bind(settings: &Settings) -> Result<Vec<Vec<listen::Listener>>> {
    listen::bind_tcp(settings)
}

/// Descriptors the server needs besides its `-c` connections: stdio, each
/// worker's listener, epoll set and eventfd, and room for the log's region
/// file, replication, the RDMA endpoint and the latency log.
pub fn own_fds(threads: usize) -> u64 {
    64 + 3 * threads as u64
}

/// Make sure `-c` connections can be open at once: raise the soft
/// RLIMIT_NOFILE to what they need (the hard limit too when we may), or
/// refuse to start and say why, as memcached does. Returns the soft limit now
/// in force.
pub fn ensure_fd_limit(settings: &Settings) -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let need = settings.conn_limit as u64 + own_fds(settings.threads);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    if soft >= need {
        return Ok(soft);
    }
    let raised = if hard >= need {
        setrlimit(Resource::RLIMIT_NOFILE, need, hard)
    } else {
        setrlimit(Resource::RLIMIT_NOFILE, need, need)
    };
    match raised {
        Ok(()) => Ok(need),
        Err(e) => Err(crate::error::Error::new(format!(
            "failed to set rlimit for open files. Try starting as root or requesting smaller maxconns value. \
             (-c {} needs {need} open files with this server's own; the limit is {soft}, at most {hard}: {e})",
            settings.conn_limit
        ))),
    }
}

/// Serve until shutdown is requested. Returns once every worker has stopped.
pub fn serve(listeners: Vec<Vec<listen::Listener>>, store: Arc<Store>, shared: Arc<Shared>) -> Result<()> {
    let mut handles = Vec::new();
    // `--admin-socket`: its file goes when this returns.
    let _admin = match &shared.rt.settings.admin_socket {
        Some(p) => Some(admin::start(p, shared.rt.settings.admin_socket_mode, store.clone(), shared.rt.clone())?),
        None => None,
    };
    // `--rdma-listen`: one UD endpoint per worker (see rdma/mod.rs for why).
    let threads = shared.rt.settings.threads;
    let mut rdma: Vec<Option<rdma::WorkerRdma>> = match &shared.rt.settings.rdma_listen {
        Some(addr) => rdma::start(
            &rdma::Config {
                listen: addr,
                threads,
                max_item_size: shared.rt.settings.max_item_size,
                rc_memory: shared.rt.settings.rdma.rc_memory,
                control: shared.rt.rdma.clone(),
                verbose: shared.rt.verbosity() > 0,
                auth_token: shared.rt.settings.auth_token.clone(),
            },
            (0..threads).map(|id| shared.waker(id)).collect(),
        )?
        .into_iter()
        .map(Some)
        .collect(),
        None => Vec::new(),
    };
    rdma.resize_with(shared.rt.settings.threads, || None);
    for (id, (l, rdma)) in listeners.into_iter().zip(rdma).enumerate() {
        let (store, shared) = (store.clone(), shared.clone());
        let h = std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || match shared.rt.settings.io {
                IoMode::Uring => uring_worker::UringWorker::new(id, l, store, shared)?.run(),
                _ => worker::Worker::new(id, l, store, shared)?.with_rdma(rdma)?.run(),
            })
            .context("starting a worker thread")?;
        handles.push(h);
    }
    // The listener was bound before: connections queue from now on.
    let s = &shared.rt.settings;
    let on = match &s.unix_socket {
        Some(p) => p.display().to_string(),
        None => format!("{}:{}", s.listen, s.port),
    };
    notify::ready(&format!("serving on {on} with {} threads", s.threads));
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.request_shutdown();
                first_err.get_or_insert(e);
            }
            Err(_) => {
                shared.request_shutdown();
                first_err.get_or_insert(crate::error::Error::new("a worker thread panicked"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
