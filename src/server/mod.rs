//! The TCP server: `-t` worker threads, each a busy-polling loop over its own
//! non-blocking connections, sharing one listening socket.
//!
//! Shutdown is orderly: SIGTERM or SIGINT sets `Shared::shutdown` and wakes
//! every worker through its eventfd; each closes its connections and returns.

mod conn;
pub mod notify;
pub mod rdma;
mod signals;
mod worker;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::{Context, Result};
use crate::memory::region::HugePages;
use crate::stats::WorkerStats;
use crate::store::Store;

pub use signals::install_shutdown_signals;

/// How idle workers wait (`--poll`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// Never block: lowest latency, one core per worker.
    Busy,
    /// Spin while there is work, block after an idle budget, so a small box
    /// running a load generator beside us is not starved.
    Adaptive,
}

impl std::str::FromStr for PollMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "busy" => Ok(PollMode::Busy),
            "adaptive" => Ok(PollMode::Adaptive),
            _ => Err(format!("--poll takes busy or adaptive, not {s:?}")),
        }
    }
}

impl PollMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PollMode::Busy => "busy",
            PollMode::Adaptive => "adaptive",
        }
    }
}

/// The settings `stats settings` reports; fixed at start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub port: u16,
    pub listen: String,
    pub memory_bytes: usize,
    pub threads: usize,
    pub conn_limit: usize,
    pub max_item_size: usize,
    pub poll: PollMode,
    pub hugepages: HugePages,
    /// Empty polls before an adaptive worker blocks.
    pub idle_spins: u32,
    /// `--rdma-listen ADDR:PORT`: the UD/RC client endpoint's side channel.
    pub rdma_listen: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            port: 11211,
            listen: "127.0.0.1".into(),
            memory_bytes: 64 << 20,
            threads: 4,
            conn_limit: 1024,
            max_item_size: 1 << 20,
            poll: PollMode::Adaptive,
            hugepages: HugePages::Auto,
            idle_spins: 2000,
            rdma_listen: None,
        }
    }
}

/// State every worker and every `stats` report sees.
pub struct Shared {
    pub settings: Settings,
    /// One per worker, in worker order; each written only by its worker.
    pub workers: Vec<Arc<WorkerStats>>,
    pub started: Instant,
    pub started_unix: u64,
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    /// `verbosity N` and `-v`.
    pub verbosity: AtomicU32,
    pub shutdown: AtomicBool,
    /// Replication role and handles (`stats replication`, `replica ...`).
    pub replication: std::sync::OnceLock<Arc<crate::replication::Replication>>,
    /// Wakes each worker out of a blocking wait (shutdown).
    wakers: Vec<EventFd>,
}

impl Shared {
    pub fn new(settings: Settings, verbosity: u32) -> Result<Shared> {
        let n = settings.threads;
        let wakers = (0..n)
            .map(|_| EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC))
            .collect::<std::result::Result<Vec<_>, _>>()
            .context("creating worker eventfds")?;
        Ok(Shared {
            workers: (0..n).map(|_| Arc::new(WorkerStats::default())).collect(),
            settings,
            started: Instant::now(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            curr_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            verbosity: AtomicU32::new(verbosity),
            shutdown: AtomicBool::new(false),
            replication: std::sync::OnceLock::new(),
            wakers,
        })
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

    pub fn verbosity(&self) -> u32 {
        self.verbosity.load(Ordering::Relaxed)
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

/// Serve until shutdown is requested. Returns once every worker has stopped.
pub fn serve(listeners: Vec<TcpListener>, store: Arc<Store>, shared: Arc<Shared>) -> Result<()> {
    let mut handles = Vec::new();
    // `--rdma-listen`: one UD endpoint per worker (see rdma/mod.rs for why).
    let mut rdma: Vec<Option<rdma::WorkerRdma>> = match &shared.settings.rdma_listen {
        Some(addr) => rdma::start(&rdma::Config {
            listen: addr,
            threads: shared.settings.threads,
            max_item_size: shared.settings.max_item_size,
            verbose: shared.verbosity() > 0,
        })?
        .into_iter()
        .map(Some)
        .collect(),
        None => Vec::new(),
    };
    rdma.resize_with(shared.settings.threads, || None);
    for (id, (l, rdma)) in listeners.into_iter().zip(rdma).enumerate() {
        let (store, shared) = (store.clone(), shared.clone());
        let h = std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || worker::Worker::new(id, l, store, shared)?.with_rdma(rdma)?.run())
            .context("starting a worker thread")?;
        handles.push(h);
    }
    // The listener was bound before: connections queue from now on.
    let s = &shared.settings;
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
