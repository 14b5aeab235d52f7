//! The TCP server: `-t` worker threads, each a busy-polling loop over its own
//! non-blocking connections, sharing one listening socket.
//!
//! What requests see of the process (settings, stats, role, verbosity) is
//! `crate::runtime::Runtime`; this module keeps the sockets, the workers and
//! the shutdown plumbing. Shutdown is orderly: SIGTERM or SIGINT (or the
//! runtime's shutdown hook) sets `Shared::shutdown` and wakes every worker
//! through its eventfd; each closes its connections and returns.

pub mod admin;
mod conn;
pub mod notify;
pub mod rdma;
mod signals;
mod worker;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::{Context, Result};
use crate::runtime::{Runtime, Settings};
use crate::store::Store;

pub use signals::install_shutdown_signals;

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

/// Bind one listening socket per worker (127.0.0.1:11211 by default), all
/// on the same port with SO_REUSEPORT: the kernel spreads new connections
/// across the workers, where one shared socket let whichever worker polled
/// first take most of them. SO_REUSEPORT would also let a second server of
/// the same user join the port silently, so a plain socket claims the port
/// first: if anything listens there already, that bind fails as memcached's
/// would.
pub fn bind(settings: &Settings) -> Result<Vec<TcpListener>> {
    use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage};
    use std::net::ToSocketAddrs;
    let addr = format!("{}:{}", settings.listen, settings.port);
    let sa = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .ok_or_else(|| crate::error::Error::new(format!("{addr} resolves to no address")))?;
    let family = if sa.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    {
        let probe =
            socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).context("creating a socket")?;
        socket::setsockopt(&probe, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&probe), &SockaddrStorage::from(sa))
            .with_context(|| format!("listening on {addr} (is another server using this port?)"))?;
    }
    (0..settings.threads.max(1))
        .map(|_| -> Result<TcpListener> {
            let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
                .context("creating the listening socket")?;
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
            socket::setsockopt(&fd, sockopt::ReusePort, &true).context("SO_REUSEPORT")?;
            socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(sa))
                .with_context(|| format!("listening on {addr}"))?;
            socket::listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))
                .with_context(|| format!("listening on {addr}"))?;
            Ok(TcpListener::from(fd))
        })
        .collect()
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
pub fn serve(listeners: Vec<TcpListener>, store: Arc<Store>, shared: Arc<Shared>) -> Result<()> {
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
            .spawn(move || worker::Worker::new(id, l, store, shared)?.with_rdma(rdma)?.run())
            .context("starting a worker thread")?;
        handles.push(h);
    }
    // The listener was bound before: connections queue from now on.
    let s = &shared.rt.settings;
    notify::ready(&format!("serving on {}:{} with {} threads", s.listen, s.port, s.threads));
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
