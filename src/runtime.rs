//! What a request needs from the process, below the protocols so that they
//! never name the server: the settings, the stats sink (each worker's
//! counters, the connection counters, the start time), the replication
//! role and admin handle, the verbosity, and a way to ask for shutdown.
//!
//! The server builds one `Runtime`, shares it with its workers and installs
//! the shutdown hook; tests build one with no server at all. Sockets, worker
//! threads and the wake-up plumbing stay with the server.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::auth::AuthToken;
use crate::memory::region::HugePages;
use crate::replication::Replication;
use crate::stats::WorkerStats;

/// The version `version` answers and `stats` reports: clients sniff the
/// memcached 1.6 prefix to pick features.
pub const VERSION: &str = concat!("1.6.21-logmemcached-", env!("CARGO_PKG_VERSION"));

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

/// Which loop the TCP workers run (`--io`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring where this kernel and seccomp profile allow it, else epoll
    /// (the server decides at start and logs which).
    Auto,
    /// io_uring, or fail to start.
    Uring,
    Epoll,
}

impl std::str::FromStr for IoMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(IoMode::Auto),
            "uring" => Ok(IoMode::Uring),
            "epoll" => Ok(IoMode::Epoll),
            _ => Err(format!("--io takes auto, uring or epoll, not {s:?}")),
        }
    }
}

impl IoMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Epoll => "epoll",
        }
    }
}

/// Which protocols a connection may speak (memcached's `-B`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingProtocol {
    /// Chosen per connection from its first byte.
    Auto,
    /// Text (and meta) only: every byte is read as text.
    Ascii,
    /// Binary only: every byte is read as a binary header.
    Binary,
}

impl BindingProtocol {
    /// memcached's `stats settings` word.
    pub fn as_str(self) -> &'static str {
        match self {
            BindingProtocol::Auto => "auto-negotiate",
            BindingProtocol::Ascii => "ascii",
            BindingProtocol::Binary => "binary",
        }
    }
}

/// The settings `stats settings` reports; fixed at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `-p`: the TCP port (0: no TCP listener, as memcached).
    pub port: u16,
    /// `-l`: the listen addresses as memcached's `inter` (comma separated:
    /// `ADDR`, `ADDR:PORT`, `[V6]:PORT`, `*`).
    pub listen: String,
    /// `-s PATH`: a UNIX socket instead of TCP; `-a`: its mode.
    pub unix_socket: Option<std::path::PathBuf>,
    pub unix_mask: u32,
    /// `-b`: the listen backlog.
    pub backlog: u32,
    /// `-B`: which protocols connections may speak.
    pub protocol: BindingProtocol,
    /// Not `-M`: the log's cleaner may evict live items to make room.
    pub evictions: bool,
    /// Not `-C`: clients see CAS values and may compare-and-swap.
    pub cas_enabled: bool,
    /// `-R`: requests one connection runs per readiness event.
    pub reqs_per_event: u32,
    /// `-Y FILE`: the ascii authentication file (`user:pass` lines).
    pub auth_file: Option<std::path::PathBuf>,
    /// Its entries, loaded at start: text clients must authenticate.
    pub ascii_auth: Option<Arc<crate::auth::ascii::AsciiAuth>>,
    /// `-D CHAR`: the key prefix delimiter of `stats detail`.
    pub detail_delimiter: u8,
    /// `-D` also turns `stats detail` on from the start.
    pub detail_enabled: bool,
    /// `-X`: no `stats cachedump` / `lru_crawler metadump`.
    pub disable_dumping: bool,
    /// `-W`: no `watch`.
    pub disable_watch: bool,
    /// `-e PATH` (`--memory-file`): the log lives in this file.
    pub memory_file: Option<std::path::PathBuf>,
    /// `-o idle_timeout=S`: close connections idle this long (0: never).
    pub idle_timeout: u32,
    /// `-o track_sizes`: `stats sizes` reports the size histogram.
    pub track_sizes: bool,
    /// `-o watcher_logbuf_size`, `worker_logbuf_size`, in bytes.
    pub watcher_logbuf_size: usize,
    pub worker_logbuf_size: usize,
    pub memory_bytes: usize,
    pub threads: usize,
    pub conn_limit: usize,
    pub max_item_size: usize,
    pub poll: PollMode,
    /// `--io`: after the server starts, the loop it chose (never `Auto`).
    pub io: IoMode,
    pub hugepages: HugePages,
    /// Empty polls before an adaptive worker blocks.
    pub idle_spins: u32,
    /// `--rdma-listen ADDR:PORT`: the UD/RC client endpoint's side channel.
    pub rdma_listen: Option<String>,
    /// The RDMA endpoint's budgets (`--rdma-rc-memory` and the fixed ones),
    /// reported by `stats settings`.
    pub rdma: RdmaBudgets,
    /// `-A`: the `shutdown` command works on the data port (memcached's
    /// `-A, --enable-shutdown`). It always works on the admin socket.
    pub enable_shutdown: bool,
    /// Not `-F`: `flush_all` works on the data port (memcached's
    /// `-F, --disable-flush-all` clears it). It always works on the admin socket.
    pub flush_enabled: bool,
    /// `--admin-socket PATH`: the unix socket that takes admin commands.
    pub admin_socket: Option<std::path::PathBuf>,
    /// `--admin-socket-mode`: its file mode (default 0600).
    pub admin_socket_mode: u32,
    /// `--auth-token-file`: what side-channel peers must prove they hold.
    pub auth_token: Option<AuthToken>,
    /// `--output-budget`: reply bytes all connections together may hold
    /// before each of them waits for its client to read (see
    /// [`default_output_budget`] and `Buffers`).
    pub output_budget: usize,
}

/// Requests a connection runs per readiness event unless `-R` says
/// otherwise (memcached's default is 20; this server's loop was tuned at 64).
pub const DEFAULT_REQS_PER_EVENT: u32 = 64;

/// One connection's cap on the reply bytes it holds: past it the connection
/// takes no more requests (and a multi-get stops between hits) until its
/// client reads.
pub const CONN_OUTPUT_CAP: usize = 4 << 20;

/// The default `--output-budget`: half the item memory, no more than every
/// connection at its cap, and at least one connection's cap.
pub fn default_output_budget(memory_bytes: usize, conn_limit: usize) -> usize {
    (memory_bytes / 2).min(conn_limit.saturating_mul(CONN_OUTPUT_CAP)).max(CONN_OUTPUT_CAP)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            port: 11211,
            listen: "127.0.0.1".into(),
            unix_socket: None,
            unix_mask: 0o700,
            backlog: 1024,
            protocol: BindingProtocol::Auto,
            evictions: true,
            cas_enabled: true,
            reqs_per_event: DEFAULT_REQS_PER_EVENT,
            auth_file: None,
            ascii_auth: None,
            detail_delimiter: b':',
            detail_enabled: false,
            disable_dumping: false,
            disable_watch: false,
            memory_file: None,
            idle_timeout: 0,
            track_sizes: false,
            watcher_logbuf_size: 256 << 10,
            worker_logbuf_size: 64 << 10,
            memory_bytes: 64 << 20,
            threads: 4,
            conn_limit: 1024,
            max_item_size: 1 << 20,
            poll: PollMode::Adaptive,
            io: IoMode::Auto,
            hugepages: HugePages::Auto,
            idle_spins: 2000,
            rdma_listen: None,
            rdma: RdmaBudgets::default(),
            enable_shutdown: false,
            flush_enabled: true,
            admin_socket: None,
            admin_socket_mode: 0o600,
            auth_token: None,
            output_budget: default_output_budget(64 << 20, 1024),
        }
    }
}

/// Connection counters (`stats`), changed by every worker on accept and
/// close. Kept together: an accept writes `curr` and `total` at once.
#[derive(Debug, Default)]
pub struct Connections {
    pub curr: AtomicU64,
    pub total: AtomicU64,
    pub rejected: AtomicU64,
    /// Closed by `-o idle_timeout` (memcached's `idle_kicks`).
    pub idle_kicks: AtomicU64,
}

/// What the RDMA endpoint (`--rdma-listen`) may hold; `server::rdma::budgets`
/// computes them from the flags, and the endpoint enforces exactly these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RdmaBudgets {
    /// `--rdma-rc-memory`: bytes every RC connection's buffers pin together.
    pub rc_memory: usize,
    /// What one RC connection pins (two buffers sized for `-I`).
    pub rc_connection_bytes: usize,
    /// Clients whose address handle and reply cache a worker keeps.
    pub peers_per_worker: usize,
    /// Bytes that client state may take per worker.
    pub peer_bytes_per_worker: usize,
    /// Reply datagrams that may wait for a send slot, per worker.
    pub pending_sends_per_worker: usize,
}

impl Default for RdmaBudgets {
    /// `server::rdma::budgets` for the default `-m 64 -I 1m` (a test there
    /// keeps the two equal).
    fn default() -> Self {
        RdmaBudgets {
            rc_memory: 16 << 20,
            rc_connection_bytes: 2 * ((1 << 20) + (4 << 10)),
            peers_per_worker: 4096,
            peer_bytes_per_worker: 8 << 20,
            pending_sends_per_worker: 256,
        }
    }
}

/// Bytes that connections hold in their buffers (`stats`: `conn_output_bytes`,
/// `conn_input_bytes`), summed over every worker's connections. A
/// connection updates its share when it leaves a readiness event still
/// holding bytes (or no longer holding them), not per request: most replies
/// are sent at once and never counted.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Reply bytes not yet sent (and sent bytes not yet reclaimed from the
    /// front of a partly sent buffer). Held under `Settings::output_budget`.
    pub output: AtomicU64,
    /// Input kept between reads: partial requests, and requests waiting
    /// for output room.
    pub input: AtomicU64,
}

impl Buffers {
    /// Move a share from `old` to `new` bytes.
    pub fn update(counter: &AtomicU64, old: usize, new: usize) {
        if new > old {
            counter.fetch_add((new - old) as u64, Ordering::Relaxed);
        } else if old > new {
            counter.fetch_sub((old - new) as u64, Ordering::Relaxed);
        }
    }
}

/// The RDMA endpoint's RC admission figures (`stats`). Its side-channel
/// threads are no worker, so these are shared atomics rather than
/// `WorkerStats` counters.
#[derive(Debug, Default)]
pub struct RdmaControl {
    /// RC connections open (or being set up).
    pub rc_open: AtomicU64,
    /// Bytes their buffers pin, within `--rdma-rc-memory`.
    pub rc_pinned_bytes: AtomicU64,
    /// RC connections refused: over the memory budget or a full worker.
    pub rc_refused: AtomicU64,
}

/// Asks the server to stop (installed by whoever runs the workers).
pub type ShutdownHook = Box<dyn Fn() + Send + Sync>;

/// State every request and every `stats` report sees.
pub struct Runtime {
    pub settings: Settings,
    /// One per worker, in worker order, then one for the control path (the
    /// admin socket: see [`Runtime::control_stats`]); each written only by
    /// its thread and on cache lines of its own, so one worker's counting
    /// never invalidates another's. `stats` sums them all. Shared with the
    /// latency-log thread.
    pub workers: Arc<[CachePadded<WorkerStats>]>,
    pub started: Instant,
    pub started_unix: u64,
    /// On their own cache lines, away from the read-mostly fields around them.
    pub connections: CachePadded<Connections>,
    /// Connection buffers, against the output budget; on their own cache line.
    pub buffers: CachePadded<Buffers>,
    /// `-v` and `verbosity N`; shared with the logger once it follows it.
    verbosity: Arc<AtomicU32>,
    /// Replication role and handles (`stats replication`, `replica ...`).
    pub replication: OnceLock<Arc<Replication>>,
    /// RC admissions of the RDMA endpoint.
    pub rdma: Arc<RdmaControl>,
    shutdown: OnceLock<ShutdownHook>,
    /// `stats detail`: per-prefix counters, off until `stats detail on`.
    pub detail: crate::stats::detail::PrefixStats,
    /// `stats conns`: the open connections (the server registers them).
    pub conn_table: crate::stats::conns::ConnTable,
    /// `stats sizes_enable|sizes_disable`: whether `stats sizes` answers.
    pub sizes_enabled: std::sync::atomic::AtomicBool,
    /// `watch`: the connections streaming events.
    /// Shared with the store's eviction hook (`Watchers::eviction_hook`).
    pub watch: Arc<crate::stats::watch::Watchers>,
}

impl Runtime {
    /// A runtime with one `WorkerStats` per `settings.threads`, and one more
    /// for the control path.
    pub fn new(settings: Settings, verbosity: u32) -> Runtime {
        // -D turns per-prefix stats on, -o track_sizes the size histogram (as memcached).
        let (detail_on, sizes_on) = (settings.detail_enabled, settings.track_sizes);
        let rt = Runtime {
            workers: (0..=settings.threads).map(|_| CachePadded::new(WorkerStats::default())).collect(),
            settings,
            started: Instant::now(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            connections: CachePadded::new(Connections::default()),
            buffers: CachePadded::new(Buffers::default()),
            verbosity: Arc::new(AtomicU32::new(verbosity)),
            replication: OnceLock::new(),
            rdma: Arc::new(RdmaControl::default()),
            shutdown: OnceLock::new(),
            detail: Default::default(),
            conn_table: Default::default(),
            sizes_enabled: std::sync::atomic::AtomicBool::new(sizes_on),
            watch: Default::default(),
        };
        rt.detail.set_enabled(detail_on);
        rt
    }

    /// The counters of the control path (the admin socket's sessions: one
    /// thread at a time writes them, so they keep a single writer).
    pub fn control_stats(&self) -> &WorkerStats {
        &self.workers[self.settings.threads]
    }

    pub fn verbosity(&self) -> u32 {
        self.verbosity.load(Ordering::Relaxed)
    }

    /// `verbosity N`: takes effect at once, in the logger too once it
    /// follows [`Runtime::verbosity_handle`].
    pub fn set_verbosity(&self, level: u32) {
        self.verbosity.store(level, Ordering::Relaxed)
    }

    /// The cell `verbosity()` reads, for the logger to follow.
    pub fn verbosity_handle(&self) -> Arc<AtomicU32> {
        self.verbosity.clone()
    }

    /// Install what `request_shutdown` calls; only the first one counts.
    /// Returns whether this one was installed.
    pub fn set_shutdown_hook(&self, hook: ShutdownHook) -> bool {
        self.shutdown.set(hook).is_ok()
    }

    /// Ask the process to stop serving, from any thread, repeatedly. Returns
    /// false when nothing is installed to hear it (no server: a test).
    pub fn request_shutdown(&self) -> bool {
        match self.shutdown.get() {
            Some(hook) => {
                hook();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn one_padded_stats_per_worker_and_a_shutdown_hook() {
        let rt = Runtime::new(Settings { threads: 3, ..Settings::default() }, 1);
        assert_eq!(rt.workers.len(), 3 + 1, "one per worker and the control path's");
        assert!(std::ptr::eq(rt.control_stats(), &*rt.workers[3]));
        let (a, b) = (&rt.workers[0] as *const _ as usize, &rt.workers[1] as *const _ as usize);
        assert!(b - a >= 64 && a % 64 == 0, "each worker's counters start a cache line");
        assert_eq!(rt.verbosity(), 1);
        let handle = rt.verbosity_handle();
        rt.set_verbosity(2);
        assert_eq!(handle.load(Ordering::Relaxed), 2, "the logger sees `verbosity N`");

        assert!(!rt.request_shutdown(), "no hook yet");
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        assert!(rt.set_shutdown_hook(Box::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        })));
        assert!(!rt.set_shutdown_hook(Box::new(|| {})), "the first hook stays");
        assert!(rt.request_shutdown() && rt.request_shutdown());
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn output_budget_default_and_share_updates() {
        assert_eq!(default_output_budget(64 << 20, 1024), 32 << 20, "half of -m");
        assert_eq!(default_output_budget(64 << 20, 2), 8 << 20, "each connection at its cap");
        assert_eq!(default_output_budget(1 << 20, 1024), CONN_OUTPUT_CAP, "at least one cap");
        let b = Buffers::default();
        Buffers::update(&b.output, 0, 100);
        Buffers::update(&b.output, 100, 40);
        Buffers::update(&b.output, 40, 40);
        assert_eq!(b.output.load(Ordering::Relaxed), 40);
    }
}
