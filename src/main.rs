//! The `logmemcached` command: CLI parsing (argh) and wiring only.

use std::sync::Arc;

use argh::FromArgs;

use logmemcached::auth::{self, AuthToken};
use logmemcached::error::{Context, Result};
use logmemcached::memory::region::HugePages;
use logmemcached::replication::{self, primary::SlotTable, replica::ReplicaOptions, Replication, Trust, Url};
use logmemcached::runtime::{default_output_budget, PollMode, Runtime, Settings};
use logmemcached::server;
use logmemcached::store::{Store, StoreConfig};

/// A memcached-compatible cache whose item memory is one log in huge pages,
/// replicated to read-only replicas by one-sided RDMA. With no subcommand it
/// serves with the defaults; `logmemcached -p 11212 ...` means `serve -p 11212 ...`.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Serve(ServeArgs),
    RdmaDevices(RdmaDevicesArgs),
    Bench(logmemcached::bench::BenchArgs),
}

/// List RDMA devices, ports, port state, MTU, link layer and GIDs (a short
/// ibv_devinfo). On a host without RDMA it says so and succeeds.
#[derive(FromArgs)]
#[argh(subcommand, name = "rdma-devices")]
struct RdmaDevicesArgs {}

/// Serve the memcached protocols over TCP.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct ServeArgs {
    /// TCP port to listen on (memcached's -p; default 11211)
    #[argh(option, short = 'p', default = "11211")]
    port: u16,

    /// interface to listen on (memcached's -l; default 127.0.0.1)
    #[argh(option, short = 'l', default = "String::from(\"127.0.0.1\")")]
    listen: String,

    /// item memory in megabytes: the log's size (memcached's -m; default 64)
    #[argh(option, short = 'm', default = "64")]
    memory_limit: usize,

    /// number of worker threads (memcached's -t; default 4)
    #[argh(option, short = 't', default = "4")]
    threads: usize,

    /// maximum simultaneous connections (memcached's -c; default 1024)
    #[argh(option, short = 'c', default = "1024")]
    conn_limit: usize,

    /// largest value accepted, with an optional k or m suffix (memcached's -I; default 1m)
    #[argh(option, short = 'I', default = "1 << 20", from_str_fn(parse_size))]
    max_item_size: usize,

    /// huge pages for the log: auto (use when reserved, else say so and fall
    /// back), require (fail with instructions), off (default auto)
    #[argh(option, default = "HugePages::Auto")]
    hugepages: HugePages,

    /// worker polling: busy (never block) or adaptive (spin, then block when
    /// idle; default adaptive)
    #[argh(option, default = "PollMode::Adaptive")]
    poll: PollMode,

    /// adaptive polling: empty polls a worker spins through before it blocks
    /// (default: 2000 when the workers leave a core free, else 0, since
    /// spinning then only steals CPU from whoever shares the box)
    #[argh(option)]
    idle_spins: Option<u32>,

    /// offer this server's log to replicas: shm://NAME (same host) or
    /// rdma://ADDR:PORT (RDMA verbs); repeatable
    #[argh(option)]
    replication_listen: Vec<String>,

    /// run as a read-only replica of the primary at this URL (shm://NAME or
    /// rdma://HOST:PORT); use the same -m as the primary
    #[argh(option)]
    replica_of: Option<String>,

    /// a replica promotes itself when its primary's heartbeat has been silent
    /// this many milliseconds (give it to one replica only)
    #[argh(option)]
    promote_after: Option<u64>,

    /// at promotion, the longest a replica spends first applying what the
    /// old primary's log still holds beyond its own, in milliseconds
    /// (default 300; 0: promote at once)
    #[argh(option, default = "ReplicaOptions::DEFAULT_PROMOTE_DRAIN.as_millis() as u64")]
    promote_drain_ms: u64,

    /// hold each write's reply until this many replicas have it (default 0:
    /// asynchronous)
    #[argh(option, default = "0")]
    sync_replicas: usize,

    /// with --sync-replicas, the longest a reply waits, in milliseconds
    /// (default 100); on timeout the reply says the write was not replicated
    #[argh(option, default = "100")]
    sync_timeout: u64,

    /// serve RDMA clients: UD datagrams (one QP per worker) and RC for large
    /// values; ADDR:PORT is the TCP side channel where clients learn the
    /// endpoints (e.g. 10.0.2.15:11311)
    #[argh(option)]
    rdma_listen: Option<String>,

    /// RDMA clients: memory, in megabytes, that all RC connections' buffers
    /// may pin together (each pins two buffers of about -I); past it new RC
    /// connections are refused (default: a quarter of -m, and at least 4
    /// connections' worth; 0 refuses every RC connection)
    #[argh(option)]
    rdma_rc_memory: Option<usize>,

    /// serve admin commands (replica promote, replica follow URL; shutdown
    /// and flush_all whatever -A and -F say) on a unix socket at PATH,
    /// created with --admin-socket-mode and removed at shutdown; on the data
    /// port they are refused
    #[argh(option)]
    admin_socket: Option<std::path::PathBuf>,

    /// file mode of the --admin-socket, in octal (default 0600: the server's
    /// user and root only)
    #[argh(option, default = "0o600", from_str_fn(parse_mode))]
    admin_socket_mode: u32,

    /// let the `shutdown` command stop the server from the data port
    /// (memcached's -A)
    #[argh(switch, short = 'A')]
    enable_shutdown: bool,

    /// refuse `flush_all` on the data port (memcached's -F)
    #[argh(switch, short = 'F')]
    disable_flush_all: bool,
    /// reply bytes all connections together may hold for clients that have
    /// not read them yet, with an optional k or m suffix; past it each
    /// connection produces one reply at a time (default: half of -m, at most
    /// 4 MiB per -c connection, at least 4 MiB)
    #[argh(option, from_str_fn(parse_size))]
    output_budget: Option<usize>,

    /// verbose logging to stderr; repeat for more (-v -v)
    #[argh(switch, short = 'v')]
    verbose: u32,

    /// write an HdrHistogram interval log of service times per command kind
    /// to this file (truncated at start)
    #[argh(option)]
    latency_log: Option<std::path::PathBuf>,

    /// seconds per interval in the --latency-log (default 10)
    #[argh(option, default = "10")]
    latency_log_interval: u64,

    /// the side channels' shared secret (replication rdma:// both ways, and
    /// --rdma-listen): the same file on the primary, its replicas and RDMA
    /// clients; mode 0600 or stricter, at least 16 bytes (e.g. head -c 32
    /// /dev/urandom)
    #[argh(option)]
    auth_token_file: Option<std::path::PathBuf>,

    /// let a replication or RDMA listener reachable beyond loopback run
    /// without --auth-token-file (anyone who reaches it gets the whole cache)
    #[argh(switch)]
    insecure: bool,

    /// share shm:// region files with this group (name or gid): mode 0640
    /// instead of 0600, so replicas run by its members can map them; a
    /// replica trusts a primary's region file of this group
    #[argh(option)]
    shm_group: Option<String>,
}

fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1usize << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    let n: usize = num.parse().map_err(|_| format!("not a size: {s:?} (e.g. 1048576, 512k, 2m)"))?;
    if n == 0 {
        return Err("the item size must be at least 1 byte".into());
    }
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

/// An octal file mode such as 0600 or 660.
fn parse_mode(s: &str) -> std::result::Result<u32, String> {
    match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("not a file mode: {s:?} (octal, e.g. 0600 or 0660)")),
    }
}

/// memcached habits: `-vv` means `-v -v`, and flags without a subcommand mean `serve`.
fn normalize_args(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 1);
    for (i, a) in args.into_iter().enumerate() {
        if i == 1 && a.starts_with('-') && a != "--help" && a != "help" {
            out.push("serve".to_string());
        }
        if a.len() > 2 && a.starts_with("-v") && a[1..].bytes().all(|b| b == b'v') {
            out.extend(std::iter::repeat_n("-v".to_string(), a.len() - 1));
        } else {
            out.push(a);
        }
    }
    out
}

fn serve(a: ServeArgs) -> Result<()> {
    logmemcached::logging::set_verbosity(a.verbose);
    if a.latency_log_interval == 0 {
        logmemcached::bail!("--latency-log-interval must be at least 1 (seconds)");
    }
    if a.threads == 0 {
        logmemcached::bail!("-t must be at least 1");
    }
    if a.memory_limit == 0 {
        logmemcached::bail!("-m must be at least 1 (megabytes)");
    }
    let token = a.auth_token_file.as_deref().map(AuthToken::load).transpose().context("--auth-token-file")?;
    let shm_group = a.shm_group.as_deref().map(replication::shm::parse_group).transpose()?;
    let settings = Settings {
        port: a.port,
        listen: a.listen,
        memory_bytes: a.memory_limit << 20,
        threads: a.threads,
        conn_limit: a.conn_limit,
        max_item_size: a.max_item_size,
        poll: a.poll,
        hugepages: a.hugepages,
        idle_spins: a.idle_spins.unwrap_or_else(|| default_idle_spins(a.threads)),
        rdma_listen: a.rdma_listen,
        rdma: server::rdma::budgets(
            a.memory_limit << 20,
            a.max_item_size,
            a.rdma_rc_memory.map(|mb| mb.saturating_mul(1 << 20)),
        ),
        enable_shutdown: a.enable_shutdown,
        flush_enabled: !a.disable_flush_all,
        admin_socket: a.admin_socket,
        admin_socket_mode: a.admin_socket_mode,
        auth_token: token.clone(),
        output_budget: a.output_budget.unwrap_or_else(|| default_output_budget(a.memory_limit << 20, a.conn_limit)),
    };
    // Before anything opens descriptors of its own: fail early, as memcached does.
    server::ensure_fd_limit(&settings)?;
    let listeners = a
        .replication_listen
        .iter()
        .map(|u| u.parse::<Url>().map_err(logmemcached::error::Error::new))
        .collect::<Result<Vec<_>>>()
        .context("--replication-listen")?;
    let replica_of = match &a.replica_of {
        Some(u) => Some(u.parse::<Url>().map_err(logmemcached::error::Error::new).context("--replica-of")?),
        None => None,
    };
    if a.promote_after.is_some() && replica_of.is_none() {
        logmemcached::bail!("--promote-after applies to replicas: give --replica-of too");
    }
    // Safe defaults: a listener that hands out the cache stays on loopback
    // unless it checks a token (or the operator says --insecure).
    for u in &listeners {
        if let Url::Rdma { host, .. } = u {
            auth::check_exposure(&format!("--replication-listen {u}"), host, token.as_ref(), a.insecure)?;
        }
    }
    if let Some(l) = &settings.rdma_listen {
        let host = l.rsplit_once(':').map_or(l.as_str(), |(h, _)| h);
        auth::check_exposure("--rdma-listen", host, token.as_ref(), a.insecure)?;
    }
    // An shm listener puts the log in a file its replicas can map.
    let shm_name = listeners.iter().find_map(|u| match u {
        Url::Shm(name) => Some(name.clone()),
        _ => None,
    });
    let region_file = shm_name.as_deref().map(|n| replication::shm::region_path(n, a.hugepages != HugePages::Off));
    let store = Arc::new(
        Store::open(
            &StoreConfig {
                memory_bytes: settings.memory_bytes,
                max_item_size: settings.max_item_size,
                hugepages: settings.hugepages,
            },
            region_file.as_deref(),
        )
        .context("creating the item log")?,
    );
    if let (Some(p), Some(g)) = (&region_file, shm_group) {
        replication::shm::share_with_group(p, g)?;
    }
    if let Some(n) = &shm_name {
        replication::shm::prepare_slot_dir(n, shm_group)?;
    }
    let slots = Arc::new(SlotTable::new(store.log().clone(), shm_name.clone().map(|n| (n, shm_group))));
    if a.sync_replicas > 0 {
        store.set_sync_wait(replication::primary::sync_waiter(
            slots.clone(),
            a.sync_replicas,
            std::time::Duration::from_millis(a.sync_timeout),
        ));
    }
    let snap = store.snapshot();
    if snap.backing == logmemcached::memory::region::Backing::Normal && a.hugepages == HugePages::Auto {
        logmemcached::log_notice!(
            "no 2 MiB huge pages reserved; the log uses normal pages (with THP advice). \
             Reserve some (hugepages/logmemcached-hugepages) or pass --hugepages off to silence this."
        );
    }
    let listener = server::bind(&settings)?;
    let rt = Arc::new(Runtime::new(settings, a.verbose));
    logmemcached::logging::follow(rt.verbosity_handle());
    let shared = server::Shared::new(rt.clone())?;
    server::install_shutdown_signals(shared.clone())?;
    // After the signals are blocked: its thread inherits the mask.
    let latency_log = match &a.latency_log {
        Some(p) => Some(logmemcached::latency::LatencyLog::start(
            p,
            std::time::Duration::from_secs(a.latency_log_interval),
            rt.workers.clone(),
        )?),
        None => None,
    };
    let opts = ReplicaOptions {
        promote_after: a.promote_after.map(std::time::Duration::from_millis),
        promote_drain: std::time::Duration::from_millis(a.promote_drain_ms),
        id: logmemcached::log::random_u64(),
    };
    for u in &listeners {
        if let Url::Rdma { host, port } = u {
            replication::verbs::listen(store.log().region().clone(), host, *port, token.clone(), a.verbose > 0)
                .with_context(|| format!("--replication-listen {u}"))?;
        }
    }
    let trust = Trust { token, shm_group };
    let repl =
        Arc::new(Replication::new(store.clone(), listeners, opts, a.sync_replicas, a.verbose > 0, trust, slots)?);
    if let Some(url) = replica_of {
        repl.follow(url)?;
    }
    let _ = rt.replication.set(repl.clone());
    if a.verbose > 0 {
        logmemcached::log_info!(
            "serving on {}:{} with {} threads, {} MiB log ({} bytes usable)",
            rt.settings.listen,
            rt.settings.port,
            rt.settings.threads,
            a.memory_limit,
            snap.log_capacity
        );
    }
    let served = server::serve(listener, store, shared);
    if let Some(l) = latency_log {
        // Writes the last partial interval.
        l.stop();
    }
    repl.shutdown();
    if let (Some(p), Some(n)) = (region_file, shm_name) {
        // Replicas that still map it keep their copy; new ones must not find a dead log.
        replication::shm::remove_files(&n, &p, shm_group);
    }
    served
}

fn run() -> Result<()> {
    let args = normalize_args(std::env::args().collect());
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let cli = match Cli::from_args(&[strs[0]], &strs[1..]) {
        Ok(cli) => cli,
        Err(early) => {
            // --help prints to stdout and succeeds; a usage error fails.
            return match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    Ok(())
                }
                Err(()) => Err(logmemcached::error::Error::new(early.output.trim_end().to_string())),
            };
        }
    };
    match cli.cmd {
        None => serve(default_serve_args()?),
        Some(Cmd::Serve(a)) => serve(a),
        Some(Cmd::RdmaDevices(_)) => logmemcached::rdma::print_devices(&mut std::io::stdout().lock()),
        Some(Cmd::Bench(a)) => logmemcached::bench::run(a),
    }
}

fn main() {
    logmemcached::logging::init();
    if let Err(e) = run() {
        logmemcached::log_error!("{e}");
        std::process::exit(1);
    }
}

/// Spin before blocking only when there is a core the workers do not use:
/// measured on 2 cores with a load generator beside us, spinning cost more
/// than half the get throughput (perf/results/memcaslap.md).
fn default_idle_spins(threads: usize) -> u32 {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if threads < cores {
        2000
    } else {
        0
    }
}

/// `serve` with every default (no subcommand given).
fn default_serve_args() -> Result<ServeArgs> {
    ServeArgs::from_args(&["logmemcached serve"], &[])
        .map_err(|e| logmemcached::error::Error::new(format!("default arguments: {}", e.output)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_memcached_habits() {
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        let v = |s: &[&str]| normalize_args(s.iter().map(|s| s.to_string()).collect());
        assert_eq!(v(&["lm", "-p", "1"]), ["lm", "serve", "-p", "1"]);
        assert_eq!(v(&["lm", "serve", "-vv"]), ["lm", "serve", "-v", "-v"]);
        assert_eq!(v(&["lm", "--help"]), ["lm", "--help"]);
        assert_eq!(v(&["lm", "-A", "-F"]), ["lm", "serve", "-A", "-F"]);
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert!(parse_mode("0800").is_err() && parse_mode("7777").is_err() && parse_mode("rw").is_err());
    }
}
