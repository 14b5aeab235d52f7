//! `serve`'s command line: memcached 1.6's every flag (`memcached -h`), in
//! memcached's syntaxes (see `getopt.rs`), and our own long options. One
//! table gives each its forms and its help line; [`ServeArgs::parse`] applies
//! them in order as memcached's `main()` does (the last `-p` wins, `-l`
//! accumulates, `-v` counts) and then checks them as memcached does after
//! its loop, with memcached's words and exit statuses where it has them.

use std::path::PathBuf;

use super::getopt::{self, Arg, Opt};
use super::Fail;
use logmemcached::memory::region::HugePages;
use logmemcached::runtime::{BindingProtocol, IoMode, PollMode};

/// memcached's `sysexits.h` statuses it uses for a bad command line.
pub const EX_USAGE: i32 = 64;

macro_rules! table {
    ($( $id:ident : $short:expr, $long:literal, $arg:ident, $meta:literal, $help:literal; )*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Id { $($id),* }
        const IDS: &[Id] = &[$(Id::$id),*];
        pub const OPTS: &[Opt] = &[$(Opt { short: $short, long: $long, arg: Arg::$arg }),*];
        /// (placeholder for the argument, help) per option, in table order.
        pub const HELP: &[(&str, &str)] = &[$(($meta, $help)),*];
    };
}

// memcached's own options first (its order in `memcached -h`), then ours.
table! {
    Port: Some('p'), "port", Required, "<num>", "TCP port to listen on (default: 11211; 0: none)";
    UdpPort: Some('U'), "udp-port", Required, "<num>", "UDP port: only 0 (off) is accepted here; memcached's UDP frames are not served";
    UnixSocket: Some('s'), "unix-socket", Required, "<file>", "UNIX socket to listen on (disables network support, as in memcached)";
    UnixMask: Some('a'), "unix-mask", Required, "<mask>", "access mask for the UNIX socket, in octal (default: 700)";
    EnableShutdown: Some('A'), "enable-shutdown", None, "", "enable the ascii \"shutdown\" command on the data port";
    Listen: Some('l'), "listen", Required, "<addr>", "interface(s) to listen on, comma separated or repeated, ADDR or ADDR:PORT or [V6]:PORT, * for any (default: 127.0.0.1)";
    Daemon: Some('d'), "daemon", None, "", "run as a daemon (detach; the command returns once the server accepts)";
    Coredumps: Some('r'), "enable-coredumps", None, "", "maximize core file limit";
    User: Some('u'), "user", Required, "<user>", "assume identity of <user> after binding, mapping and registering memory (only when run as root)";
    MemoryLimit: Some('m'), "memory-limit", Required, "<num>", "item memory in megabytes: the log's size (default: 64)";
    DisableEvictions: Some('M'), "disable-evictions", None, "", "return an error when memory is full instead of evicting";
    ConnLimit: Some('c'), "conn-limit", Required, "<num>", "max simultaneous connections (default: 1024)";
    LockMemory: Some('k'), "lock-memory", None, "", "lock down all paged memory, the log included (mlockall)";
    Verbose: Some('v'), "verbose", Optional, "", "verbose; repeat for more (-vv: debug, -vvv: trace)";
    Help: Some('h'), "help", None, "", "print this help and exit";
    License: Some('i'), "license", None, "", "print the license and exit";
    Version: Some('V'), "version", None, "", "print version and exit";
    Pidfile: Some('P'), "pidfile", Required, "<file>", "save PID in <file> (removed at exit)";
    GrowthFactor: Some('f'), "slab-growth-factor", Required, "<num>", "accepted, no effect: the log has no slab classes";
    SlabMinSize: Some('n'), "slab-min-size", Required, "<bytes>", "accepted, no effect: the log has no slab classes";
    Threads: Some('t'), "threads", Required, "<num>", "number of worker threads (default: 4)";
    LargePages: Some('L'), "enable-largepages", None, "", "use 2 MiB huge pages when reserved (--hugepages auto, the default)";
    Delimiter: Some('D'), "delimiter", Required, "<char>", "prefix delimiter for `stats detail`, and turn detail stats on (default ':')";
    ReqsPerEvent: Some('R'), "max-reqs-per-event", Required, "<num>", "requests one connection runs per event before others get a turn (default: 64)";
    DisableCas: Some('C'), "disable-cas", None, "", "disable use of CAS";
    Backlog: Some('b'), "listen-backlog", Required, "<num>", "the listen backlog (default: 1024)";
    Protocol: Some('B'), "protocol", Required, "<name>", "protocol: ascii, binary, or auto (default: auto-negotiate)";
    MaxItemSize: Some('I'), "max-item-size", Required, "<num>", "max item size, k and m suffixes (default: 1m, min: 1k, max: 1024m)";
    Sasl: Some('S'), "enable-sasl", None, "", "refused: binary SASL is not supported (see -Y for ascii authentication)";
    DisableFlushAll: Some('F'), "disable-flush-all", None, "", "disable the flush_all command on the data port";
    DisableDumping: Some('X'), "disable-dumping", None, "", "disable stats cachedump and lru_crawler metadump";
    DisableWatch: Some('W'), "disable-watch", None, "", "disable watch commands (live logging)";
    AuthFile: Some('Y'), "auth-file", Required, "<file>", "ascii protocol authentication: user:pass lines (as memcached's, 8 at most)";
    MemoryFile: Some('e'), "memory-file", Required, "<file>", "keep the log in this file (tmpfs, hugetlbfs, DAX): a restart serves it again";
    Tls: Some('Z'), "enable-ssl", None, "", "refused: TLS is not supported";
    Extended: Some('o'), "extended", Required, "<opts>", "comma separated extended options (see below)";
    NapiIds: Some('N'), "napi-ids", Required, "<num>", "accepted, no effect: workers do not follow NAPI ids";
    Hugepages: None, "hugepages", Required, "<mode>", "huge pages for the log: auto (use when reserved, else say so and fall back), require (fail with instructions), off (default: auto)";
    Poll: None, "poll", Required, "<mode>", "worker polling: busy (never block) or adaptive (spin, then block when idle; default: adaptive)";
    Io: None, "io", Required, "<mode>", "the TCP workers' loop: uring (io_uring: multishot receive, batched sends; with --poll busy, SQPOLL), epoll, or auto (uring where the kernel and seccomp allow it, else epoll; says which; default: auto)";
    IdleSpins: None, "idle-spins", Required, "<num>", "adaptive polling: empty polls before a worker blocks (default: 2000 when the workers leave a core free, else 0)";
    ReplicationListen: None, "replication-listen", Required, "<url>", "offer the log to replicas: shm://NAME (same host) or rdma://ADDR:PORT; repeatable";
    ReplicaOf: None, "replica-of", Required, "<url>", "run as a read-only replica of the primary at shm://NAME or rdma://HOST:PORT (same -m)";
    PromoteAfter: None, "promote-after", Required, "<ms>", "a replica promotes itself when its primary's heartbeat has been silent this long";
    PromoteDrainMs: None, "promote-drain-ms", Required, "<ms>", "at promotion, the longest spent applying what the old primary's log still holds (default: 300; 0: at once)";
    SyncReplicas: None, "sync-replicas", Required, "<k>", "hold each write's reply until this many replicas have it (default: 0)";
    SyncTimeout: None, "sync-timeout", Required, "<ms>", "with --sync-replicas, the longest a reply waits (default: 100)";
    RdmaListen: None, "rdma-listen", Required, "<addr:port>", "serve RDMA clients (UD, and RC for large values); the TCP side channel's address";
    RdmaRcMemory: None, "rdma-rc-memory", Required, "<mb>", "memory all RDMA clients' RC buffers may pin together (default: -m/4, at least 4 connections)";
    AdminSocket: None, "admin-socket", Required, "<path>", "serve admin commands (replica promote/follow; shutdown and flush_all whatever -A/-F say) on a unix socket";
    AdminSocketMode: None, "admin-socket-mode", Required, "<mode>", "file mode of the --admin-socket, octal (default: 0600)";
    OutputBudget: None, "output-budget", Required, "<size>", "reply bytes all connections may hold unread, k/m suffixes (default: half of -m, at most 4 MiB per -c, at least 4 MiB)";
    LatencyLog: None, "latency-log", Required, "<file>", "write an HdrHistogram interval log of service times per command kind";
    LatencyLogInterval: None, "latency-log-interval", Required, "<s>", "seconds per interval in the --latency-log (default: 10)";
    AuthTokenFile: None, "auth-token-file", Required, "<file>", "the side channels' shared secret (replication rdma://, --rdma-listen): mode 0600, at least 16 bytes";
    Insecure: None, "insecure", None, "", "let a replication or RDMA listener beyond loopback run without --auth-token-file";
    ShmGroup: None, "shm-group", Required, "<group>", "shm:// region files 0640 of this group instead of 0600";
}

/// Everything `serve` was told, checked.
#[derive(Debug)]
pub struct ServeArgs {
    pub port: u16,
    pub listen: Vec<String>,
    pub unix_socket: Option<PathBuf>,
    pub unix_mask: u32,
    pub enable_shutdown: bool,
    pub daemonize: bool,
    pub coredumps: bool,
    pub user: Option<String>,
    pub memory_limit: usize,
    pub evictions: bool,
    pub conn_limit: usize,
    pub lock_memory: bool,
    pub verbose: u32,
    pub pidfile: Option<PathBuf>,
    pub threads: usize,
    pub detail_delimiter: Option<u8>,
    pub reqs_per_event: u32,
    pub cas_enabled: bool,
    pub backlog: u32,
    pub protocol: BindingProtocol,
    pub max_item_size: usize,
    pub flush_enabled: bool,
    pub dumping_enabled: bool,
    pub watch_enabled: bool,
    pub auth_file: Option<PathBuf>,
    pub memory_file: Option<PathBuf>,
    pub ext: super::extended::Extended,
    pub hugepages: HugePages,
    pub poll: PollMode,
    pub io: IoMode,
    pub idle_spins: Option<u32>,
    pub replication_listen: Vec<String>,
    pub replica_of: Option<String>,
    pub promote_after: Option<u64>,
    pub promote_drain_ms: u64,
    pub sync_replicas: usize,
    pub sync_timeout: u64,
    pub rdma_listen: Option<String>,
    pub rdma_rc_memory: Option<usize>,
    pub admin_socket: Option<PathBuf>,
    pub admin_socket_mode: u32,
    pub output_budget: Option<usize>,
    pub latency_log: Option<PathBuf>,
    pub latency_log_interval: u64,
    pub auth_token_file: Option<PathBuf>,
    pub insecure: bool,
    pub shm_group: Option<String>,
}

impl Default for ServeArgs {
    fn default() -> ServeArgs {
        ServeArgs {
            port: 11211,
            listen: Vec::new(),
            unix_socket: None,
            unix_mask: 0o700,
            enable_shutdown: false,
            daemonize: false,
            coredumps: false,
            user: None,
            memory_limit: 64,
            evictions: true,
            conn_limit: 1024,
            lock_memory: false,
            verbose: 0,
            pidfile: None,
            threads: 4,
            detail_delimiter: None,
            reqs_per_event: 64,
            cas_enabled: true,
            backlog: 1024,
            protocol: BindingProtocol::Auto,
            max_item_size: 1 << 20,
            flush_enabled: true,
            dumping_enabled: true,
            watch_enabled: true,
            auth_file: None,
            memory_file: None,
            ext: Default::default(),
            hugepages: HugePages::Auto,
            poll: PollMode::Adaptive,
            io: IoMode::Auto,
            idle_spins: None,
            replication_listen: Vec::new(),
            replica_of: None,
            promote_after: None,
            promote_drain_ms: 300,
            sync_replicas: 0,
            sync_timeout: 100,
            rdma_listen: None,
            rdma_rc_memory: None,
            admin_socket: None,
            admin_socket_mode: 0o600,
            output_budget: None,
            latency_log: None,
            latency_log_interval: 10,
            auth_token_file: None,
            insecure: false,
            shm_group: None,
        }
    }
}

/// What the command line asks for: serve, or print something and exit.
#[derive(Debug)]
pub enum Action {
    Serve(Box<ServeArgs>),
    Help,
    License,
    Version,
}

/// A number, in memcached's sense of the option, with our message when it is not one.
fn num<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, Fail> {
    v.trim().parse::<T>().map_err(|_| Fail::usage(1, format!("{what}: not a number: {v:?}")))
}

/// memcached's `-I`: bytes, or a k/m suffix.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1usize << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    let n: usize = num.parse().map_err(|_| format!("not a size: {s:?} (e.g. 1048576, 512k, 2m)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

/// An octal file mode such as 0600 or 660.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("not a file mode: {s:?} (octal, e.g. 0600 or 0660)")),
    }
}

impl ServeArgs {
    /// Parse `serve`'s arguments (without the program and subcommand names).
    pub fn parse(args: &[String]) -> Result<Action, Fail> {
        let parsed = getopt::parse(args, OPTS).map_err(|e| {
            // glibc's line, then memcached's (its switch's default case).
            Fail::usage(
                1,
                format!("logmemcached: {e}\nIllegal argument \"?\" (logmemcached serve --help lists the flags)"),
            )
        })?;
        let mut a = ServeArgs::default();
        let mut protocol_given = false;
        for f in parsed.found {
            let v = f.value.as_deref().unwrap_or("");
            match IDS[f.opt] {
                Id::Help => return Ok(Action::Help),
                Id::License => return Ok(Action::License),
                Id::Version => return Ok(Action::Version),
                Id::Port => {
                    let p: u32 = num(v, "-p")?;
                    if p > 65535 {
                        return Err(Fail::usage(EX_USAGE, format!("ERROR: Invalid port number {p}.")));
                    }
                    a.port = p as u16;
                }
                Id::UdpPort => {
                    let p: u32 = num(v, "-U")?;
                    if p != 0 {
                        return Err(Fail::usage(
                            EX_USAGE,
                            format!(
                                "-U {p}: UDP is not supported: memcached's UDP frame protocol is not served \
                                 (use -U 0, memcached's default since 1.5.6, and TCP)"
                            ),
                        ));
                    }
                }
                Id::UnixSocket => a.unix_socket = Some(PathBuf::from(v)),
                // memcached's strtol(.., 8): the mask as octal.
                Id::UnixMask => a.unix_mask = parse_mode(v).map_err(|e| Fail::usage(1, format!("-a: {e}")))?,
                Id::EnableShutdown => a.enable_shutdown = true,
                Id::Listen => {
                    // memcached joins every -l with commas, skipping one it already has.
                    for addr in v.split(',').filter(|s| !s.is_empty()) {
                        if !a.listen.iter().any(|l| l == addr) {
                            a.listen.push(addr.to_string());
                        }
                    }
                }
                Id::Daemon => a.daemonize = true,
                Id::Coredumps => a.coredumps = true,
                Id::User => a.user = Some(v.to_string()),
                Id::MemoryLimit => a.memory_limit = num(v, "-m")?,
                Id::DisableEvictions => a.evictions = false,
                Id::ConnLimit => {
                    a.conn_limit = num(v, "-c")?;
                    if a.conn_limit == 0 {
                        return Err(Fail::usage(1, "Maximum connections must be greater than 0"));
                    }
                }
                Id::LockMemory => a.lock_memory = true,
                Id::Verbose => a.verbose += 1,
                Id::Pidfile => a.pidfile = Some(PathBuf::from(v)),
                Id::GrowthFactor => {
                    let f: f64 = num(v, "-f")?;
                    if f <= 1.0 {
                        return Err(Fail::usage(1, "Factor must be greater than 1"));
                    }
                }
                Id::SlabMinSize => {
                    if num::<u32>(v, "-n")? == 0 {
                        return Err(Fail::usage(1, "Chunk size must be greater than 0"));
                    }
                }
                Id::Threads => {
                    a.threads = num(v, "-t")?;
                    if a.threads == 0 {
                        return Err(Fail::usage(1, "Number of threads must be greater than 0"));
                    }
                }
                Id::LargePages => a.hugepages = HugePages::Auto,
                Id::Delimiter => {
                    let Some(&d) = v.as_bytes().first() else {
                        return Err(Fail::usage(1, "No delimiter specified"));
                    };
                    a.detail_delimiter = Some(d);
                }
                Id::ReqsPerEvent => {
                    a.reqs_per_event = num(v, "-R")?;
                    if a.reqs_per_event == 0 {
                        return Err(Fail::usage(1, "Number of requests per event must be greater than 0"));
                    }
                }
                Id::DisableCas => a.cas_enabled = false,
                Id::Backlog => a.backlog = num(v, "-b")?,
                Id::Protocol => {
                    protocol_given = true;
                    a.protocol = match v {
                        "auto" => BindingProtocol::Auto,
                        "binary" => BindingProtocol::Binary,
                        "ascii" => BindingProtocol::Ascii,
                        _ => {
                            return Err(Fail::usage(
                                EX_USAGE,
                                format!(
                                "Invalid value for binding protocol: {v}\n -- should be one of auto, binary, or ascii"
                            ),
                            ))
                        }
                    }
                }
                Id::MaxItemSize => a.max_item_size = parse_size(v).map_err(|e| Fail::usage(1, format!("-I: {e}")))?,
                Id::Sasl => {
                    return Err(Fail::usage(
                        EX_USAGE,
                        "This server is not built with SASL support. (binary SASL is refused; \
                         -Y FILE gives memcached's ascii authentication)",
                    ))
                }
                Id::DisableFlushAll => a.flush_enabled = false,
                Id::DisableDumping => a.dumping_enabled = false,
                Id::DisableWatch => a.watch_enabled = false,
                Id::AuthFile => a.auth_file = Some(PathBuf::from(v)),
                Id::MemoryFile => a.memory_file = Some(PathBuf::from(v)),
                Id::Tls => {
                    return Err(Fail::usage(
                        EX_USAGE,
                        "This server is not built with TLS support. (put a TLS proxy such as stunnel in front)",
                    ))
                }
                Id::Extended => a.ext.apply(v)?,
                Id::NapiIds => {
                    if num::<i64>(v, "-N")? <= 0 {
                        return Err(Fail::usage(1, "Maximum number of NAPI IDs must be greater than 0"));
                    }
                }
                Id::Hugepages => a.hugepages = v.parse().map_err(|e: String| Fail::usage(1, e))?,
                Id::Poll => a.poll = v.parse().map_err(|e: String| Fail::usage(1, e))?,
                Id::Io => a.io = v.parse().map_err(|e: String| Fail::usage(1, e))?,
                Id::IdleSpins => a.idle_spins = Some(num(v, "--idle-spins")?),
                Id::ReplicationListen => a.replication_listen.push(v.to_string()),
                Id::ReplicaOf => a.replica_of = Some(v.to_string()),
                Id::PromoteAfter => a.promote_after = Some(num(v, "--promote-after")?),
                Id::PromoteDrainMs => a.promote_drain_ms = num(v, "--promote-drain-ms")?,
                Id::SyncReplicas => a.sync_replicas = num(v, "--sync-replicas")?,
                Id::SyncTimeout => a.sync_timeout = num(v, "--sync-timeout")?,
                Id::RdmaListen => a.rdma_listen = Some(v.to_string()),
                Id::RdmaRcMemory => a.rdma_rc_memory = Some(num(v, "--rdma-rc-memory")?),
                Id::AdminSocket => a.admin_socket = Some(PathBuf::from(v)),
                Id::AdminSocketMode => {
                    a.admin_socket_mode =
                        parse_mode(v).map_err(|e| Fail::usage(1, format!("--admin-socket-mode: {e}")))?
                }
                Id::OutputBudget => {
                    a.output_budget = Some(parse_size(v).map_err(|e| Fail::usage(1, format!("--output-budget: {e}")))?)
                }
                Id::LatencyLog => a.latency_log = Some(PathBuf::from(v)),
                Id::LatencyLogInterval => a.latency_log_interval = num(v, "--latency-log-interval")?,
                Id::AuthTokenFile => a.auth_token_file = Some(PathBuf::from(v)),
                Id::Insecure => a.insecure = true,
                Id::ShmGroup => a.shm_group = Some(v.to_string()),
            }
        }
        a.check(protocol_given)?;
        Ok(Action::Serve(Box::new(a)))
    }

    /// memcached's checks after its option loop, in its order and words.
    fn check(&mut self, protocol_given: bool) -> Result<(), Fail> {
        if self.max_item_size < 1024 {
            return Err(Fail::usage(EX_USAGE, "Item max size cannot be less than 1024 bytes."));
        }
        if self.max_item_size > (self.memory_limit << 20) / 2 {
            return Err(Fail::usage(EX_USAGE, "Cannot set item size limit higher than 1/2 of memory max."));
        }
        if self.max_item_size > 1 << 30 {
            return Err(Fail::usage(EX_USAGE, "Cannot set item size limit higher than a gigabyte."));
        }
        self.ext.check()?;
        if self.auth_file.is_some() {
            if !protocol_given {
                self.protocol = BindingProtocol::Ascii;
            } else if self.protocol != BindingProtocol::Ascii {
                return Err(Fail::usage(
                    EX_USAGE,
                    "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.",
                ));
            }
        }
        if self.latency_log_interval == 0 {
            return Err(Fail::usage(1, "--latency-log-interval must be at least 1 (seconds)"));
        }
        if self.memory_limit == 0 {
            return Err(Fail::usage(1, "-m must be at least 1 (megabytes)"));
        }
        if self.promote_after.is_some() && self.replica_of.is_none() {
            return Err(Fail::usage(1, "--promote-after applies to replicas: give --replica-of too"));
        }
        if self.port == 0 && self.unix_socket.is_none() {
            return Err(Fail::usage(
                EX_USAGE,
                "-p 0 turns TCP off, and there is no -s UNIX socket (and no UDP here): nothing would be served",
            ));
        }
        Ok(())
    }
}

/// `serve --help`: memcached's flags, ours, and the `-o` options.
pub fn help() -> String {
    let mut s = format!(
        "logmemcached {} (memcached 1.6's command line)\n\
         Usage: logmemcached [serve] [flags]; short flags group (-vv, -dA), arguments attach (-p11211)\n\
         or follow, long ones take --name=value or --name value, and unambiguous prefixes work.\n\n",
        logmemcached::runtime::VERSION
    );
    for (i, o) in OPTS.iter().enumerate() {
        let (meta, text) = HELP[i];
        if IDS[i] == Id::Hugepages {
            s.push_str("\nOptions of our own (no memcached equivalent):\n");
        }
        let short = o.short.map_or_else(|| "    ".to_string(), |c| format!("-{c}, "));
        let long = if meta.is_empty() { o.long.to_string() } else { format!("{}={meta}", o.long) };
        s.push_str(&format!("{short}--{long:<28} {text}\n"));
    }
    s.push_str("\n-o, --extended: comma separated; NAME or NAME=VALUE:\n");
    s.push_str(&super::extended::help());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeArgs, Fail> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match ServeArgs::parse(&v)? {
            Action::Serve(a) => Ok(*a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn memcached_forms_and_ours() {
        let a = serve(&["-p11212", "-vv", "-dA", "--memory-limit=32", "-l", "127.0.0.1,::1", "-l127.0.0.1"]).unwrap();
        assert_eq!((a.port, a.verbose, a.daemonize, a.enable_shutdown, a.memory_limit), (11212, 2, true, true, 32));
        assert_eq!(a.listen, ["127.0.0.1", "::1"], "a repeated -l adds only what is new");
        let a = serve(&["--replication-listen=shm://a", "--replication-listen", "shm://b", "-I", "2m"]).unwrap();
        assert_eq!((a.replication_listen.len(), a.max_item_size), (2, 2 << 20));
        assert_eq!(serve(&["-B", "binary"]).unwrap().protocol, BindingProtocol::Binary);
        assert_eq!(serve(&["-Y", "f"]).unwrap().protocol, BindingProtocol::Ascii, "-Y implies ascii");
        assert_eq!(serve(&["-D", "#"]).unwrap().detail_delimiter, Some(b'#'));
        assert!(!serve(&["-M", "-C"]).map(|a| a.evictions || a.cas_enabled).unwrap());
        for form in [&["-e", "/dev/shm/lm"][..], &["--memory-file=/dev/shm/lm"], &["-e/dev/shm/lm"]] {
            assert_eq!(serve(form).unwrap().memory_file, Some(PathBuf::from("/dev/shm/lm")), "{form:?}");
        }
        let a =
            serve(&["-R", "5", "-b", "9", "-s", "/tmp/x.sock", "-a", "0660", "-X", "-W", "-Y", "/etc/auth"]).unwrap();
        assert_eq!((a.reqs_per_event, a.backlog, a.unix_mask), (5, 9, 0o660));
        assert_eq!(a.unix_socket, Some(PathBuf::from("/tmp/x.sock")));
        assert!(!a.dumping_enabled && !a.watch_enabled && a.auth_file.is_some());
        assert_eq!(serve(&["-L", "--hugepages", "off"]).unwrap().hugepages, HugePages::Off, "the last word wins");
    }

    #[test]
    fn memcached_refusals_with_its_words_and_statuses() {
        let e = |args: &[&str]| serve(args).map(|_| ()).unwrap_err();
        let cases: &[(&[&str], i32, &str)] = &[
            (&["-t", "0"], 1, "Number of threads must be greater than 0"),
            (&["-c", "0"], 1, "Maximum connections must be greater than 0"),
            (&["-R", "0"], 1, "Number of requests per event must be greater than 0"),
            (&["-I", "512"], 64, "Item max size cannot be less than 1024 bytes."),
            (&["-I", "2000m"], 64, "Cannot set item size limit higher than 1/2 of memory max."),
            (&["-B", "foo"], 64, "Invalid value for binding protocol: foo"),
            (&["-p", "70000"], 64, "ERROR: Invalid port number 70000."),
            (&["-D", ""], 1, "No delimiter specified"),
            (&["-f", "1"], 1, "Factor must be greater than 1"),
            (&["-Y", "f", "-B", "binary"], 64, "ERROR: You cannot allow the BINARY protocol"),
            (&["-x"], 1, "logmemcached: invalid option -- 'x'"),
            (&["--mem=5"], 1, "is ambiguous; possibilities: '--memory-limit' '--memory-file'"),
            (&["-S"], 64, "not built with SASL support"),
            (&["-Z"], 64, "not built with TLS support"),
            (&["-U", "11211"], 64, "UDP is not supported"),
        ];
        for (args, code, text) in cases {
            let f = e(args);
            assert_eq!(f.code, *code, "{args:?}: {f:?}");
            assert!(f.msg.contains(text), "{args:?}: {f:?}");
        }
        assert!(serve(&["-U", "0", "-n", "48", "-f", "1.25", "-N", "1", "-L", "-r", "-k"]).is_ok());
    }

    #[test]
    fn help_lists_every_option() {
        let h = help();
        for o in OPTS {
            assert!(h.contains(&format!("--{}", o.long)), "{}", o.long);
        }
    }
}
