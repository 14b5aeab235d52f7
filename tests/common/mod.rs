//! Shared by the integration tests: start the real `logmemcached` binary on a
//! free 127.0.0.1 port, talk to it, and stop it (by its own pid) when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub port: u16,
    child: Child,
}

/// Whether tests that need a real peer (memcached, memccapable, systemd's
/// tools, ...) must fail when it is missing: `LOGMEMCACHED_REQUIRE_PEERS=1`,
/// which tests/run-all.sh (and so CI) sets. The one rule for every test file.
pub fn peers_required() -> bool {
    std::env::var("LOGMEMCACHED_REQUIRE_PEERS").as_deref() == Ok("1")
}

/// A test's gate on a peer: true when `present`. When it is missing, panics
/// under `LOGMEMCACHED_REQUIRE_PEERS=1`; otherwise says loudly that the test
/// did not run (so a skip is never silent) and returns false.
pub fn peer(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(!peers_required(), "{what} is required (LOGMEMCACHED_REQUIRE_PEERS=1) but not installed");
    eprintln!("SKIPPED: {what} is not installed (LOGMEMCACHED_REQUIRE_PEERS=1 makes this a failure)");
    false
}

/// Whether `cmd` runs at all on this machine.
pub fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A port the kernel just handed out and released (racy but fine for tests).
/// `LOGMEMCACHED_TEST_IO=uring|epoll|auto` runs every server the tests start
/// with that `--io` (unless the test names its own), so the TCP suites run
/// against either worker loop (tests/run-all.sh runs them under both).
pub fn test_io(args: &[&str]) -> Option<String> {
    let m = std::env::var("LOGMEMCACHED_TEST_IO").ok().filter(|m| !m.is_empty())?;
    assert!(matches!(m.as_str(), "uring" | "epoll" | "auto"), "LOGMEMCACHED_TEST_IO={m}: uring, epoll or auto");
    (!args.iter().any(|a| *a == "--io" || a.starts_with("--io="))).then_some(m)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port")
}

impl Server {
    /// Start with extra flags, e.g. `&["-m", "8"]`; waits until it accepts.
    pub fn start(args: &[&str]) -> Server {
        Self::start_bin(env!("CARGO_BIN_EXE_logmemcached"), args)
    }

    pub fn start_bin(bin: &str, args: &[&str]) -> Server {
        Self::start_cmd(|| Command::new(bin), args)
    }

    /// Start under a shell that first runs `setup` (e.g. `ulimit -Sn 256`)
    /// and then execs the server, so the pid is the server's.
    pub fn start_after(setup: &str, args: &[&str]) -> Server {
        let script = format!("{setup} && exec \"$0\" \"$@\"");
        let sh = || {
            let mut c = Command::new("sh");
            c.args(["-c", &script, env!("CARGO_BIN_EXE_logmemcached")]);
            c
        };
        Self::start_cmd(sh, args)
    }

    fn start_cmd(program: impl Fn() -> Command, args: &[&str]) -> Server {
        // A port from free_port() can be taken by a parallel test before the
        // server binds it; then the server exits and we try another.
        for _ in 0..5 {
            let port = free_port();
            // Two workers unless the test names its own count.
            let threads: &[&str] = if args.contains(&"-t") { &[] } else { &["-t", "2"] };
            let io = test_io(args);
            let child = program()
                .args(["serve", "-p", &port.to_string(), "-l", "127.0.0.1", "--hugepages", "off"])
                .args(threads)
                .args(io.iter().flat_map(|m| ["--io", m.as_str()]))
                .args(args)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawning logmemcached");
            let mut s = Server { port, child };
            if s.wait_ready() {
                return s;
            }
        }
        panic!("logmemcached did not start in 5 attempts (see its errors above)");
    }

    /// Wait until the server accepts; false if it exited first or another
    /// server holds the port. Sends it one `stats` (to read its pid).
    fn wait_ready(&mut self) -> bool {
        // The emulated VM (TCG, about 20x slower) needs far longer to start a server.
        let limit = if std::env::var_os("LOGMEMCACHED_IN_VM").is_some() { 60 } else { 10 };
        let deadline = Instant::now() + Duration::from_secs(limit);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(c) = TcpStream::connect(("127.0.0.1", self.port)) {
                // Ours, or another test's server that won the port race?
                if Self::pid_of(c) == Some(self.child.id()) {
                    return true;
                }
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server on port {} did not start", self.port);
    }

    /// The `STAT pid` of the server at the other end of `c`.
    pub(crate) fn pid_of(c: TcpStream) -> Option<u32> {
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        (&c).write_all(b"stats\r\n").ok()?;
        let mut r = BufReader::new(c);
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).ok()? == 0 || line.starts_with("END") {
                return None;
            }
            if let Some(pid) = line.strip_prefix("STAT pid ") {
                return pid.trim().parse().ok();
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.port)
    }

    /// Send SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().expect("waiting for server") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL this server (and only it, by its pid) and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking client for exact request/reply checks.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("sending");
    }

    /// Send many requests in one write and read `n` one-line replies.
    pub fn pipeline(&mut self, reqs: &str, n: usize) -> Vec<String> {
        self.send(reqs.as_bytes());
        (0..n).map(|_| self.line()).collect()
    }

    /// `stats [group]` as a map.
    pub fn stats(&mut self, group: &str) -> std::collections::HashMap<String, String> {
        let req = if group.is_empty() { "stats\r\n".to_string() } else { format!("stats {group}\r\n") };
        self.send(req.as_bytes());
        let mut m = std::collections::HashMap::new();
        loop {
            let l = self.line();
            if l == "END\r\n" || l.is_empty() {
                return m;
            }
            let mut it = l.trim_end().splitn(3, ' ');
            it.next();
            if let (Some(k), Some(v)) = (it.next(), it.next()) {
                m.insert(k.to_string(), v.to_string());
            } else if let Some(k) = l.trim_end().split(' ').nth(1) {
                m.insert(k.to_string(), String::new());
            }
        }
    }

    /// `gets key`: Some((value, flags, cas)) or None.
    pub fn gets(&mut self, key: &str) -> Option<(Vec<u8>, u32, u64)> {
        self.send(format!("gets {key}\r\n").as_bytes());
        let l = self.line();
        if l == "END\r\n" {
            return None;
        }
        let f: Vec<&str> = l.trim_end().split(' ').collect();
        assert_eq!(f[0], "VALUE", "unexpected reply {l:?}");
        let len: usize = f[3].parse().unwrap();
        let v = self.bytes(len + 2);
        assert_eq!(self.line(), "END\r\n");
        Some((v[..len].to_vec(), f[2].parse().unwrap(), f[4].parse().unwrap()))
    }

    /// One reply line, with its "\r\n".
    pub fn line(&mut self) -> String {
        let mut s = String::new();
        self.reader.read_line(&mut s).expect("reading a line");
        s
    }

    /// Exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.reader.read_exact(&mut b).expect("reading bytes");
        b
    }

    /// Send a request and return its one-line reply.
    pub fn cmd(&mut self, req: &str) -> String {
        self.send(req.as_bytes());
        self.line()
    }

    /// Read lines until (and including) one equal to `last`.
    pub fn until(&mut self, last: &str) -> Vec<String> {
        let mut v = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                panic!("connection closed before {last:?}; got {v:?}");
            }
            let done = l == last;
            v.push(l);
            if done {
                return v;
            }
        }
    }

    /// True if the server closed the connection (read returns EOF).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }
}

/// A fresh path for a server's `--admin-socket` (in the temp dir, unique to
/// this process, `tag` and call; removed first if a crashed run left it).
pub fn admin_socket_path(tag: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("lmc-admin-{}-{tag}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p.to_string_lossy().into_owned()
}

/// A blocking text client on a server's `--admin-socket`.
pub struct Admin {
    stream: std::os::unix::net::UnixStream,
    reader: BufReader<std::os::unix::net::UnixStream>,
}

impl Admin {
    pub fn connect(path: &str) -> Admin {
        let stream = std::os::unix::net::UnixStream::connect(path).expect("connecting to the admin socket");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Admin { stream, reader }
    }

    /// Send a request and return its one-line reply (empty at EOF).
    pub fn cmd(&mut self, req: &str) -> String {
        self.stream.write_all(req.as_bytes()).expect("sending");
        let mut s = String::new();
        self.reader.read_line(&mut s).expect("reading a line");
        s
    }

    /// True if the server closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }
}

/// The side channels' test token: 32 bytes, the same in every test process.
pub const TEST_TOKEN: &[u8; 32] = b"logmemcached-test-token-32-bytes";

/// A file holding [`TEST_TOKEN`] (mode 0600, as `--auth-token-file` wants),
/// written once per test process.
pub fn token_file() -> String {
    use std::os::unix::fs::PermissionsExt;
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("lmc-test-token-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, TEST_TOKEN).expect("writing the test token");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod 600 the test token");
        p.to_string_lossy().into_owned()
    })
    .clone()
}

/// [`TEST_TOKEN`] as a client option.
pub fn test_token() -> logmemcached::auth::AuthToken {
    logmemcached::auth::AuthToken::new(TEST_TOKEN).expect("the test token is long enough")
}

/// Debian's memcached 1.6, the reference the differential and tool tests
/// compare against.
pub const MEMCACHED_BIN: &str = "/usr/bin/memcached";

/// A reference memcached on a free 127.0.0.1 port, killed when dropped.
pub struct Memcached {
    pub port: u16,
    child: Child,
}

impl Memcached {
    /// `-m 64 -t 2`, as the tests start logmemcached.
    pub fn start() -> Memcached {
        Memcached::start_with(&["-m", "64"])
    }

    /// memcached with `args` after its port, address, `-U 0` and `-t 2`
    /// (a later `-t` wins).
    pub fn start_with(args: &[&str]) -> Memcached {
        // Another test's server may take the free port first: then memcached
        // cannot bind, and whoever answers is not ours (checked by pid).
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(MEMCACHED_BIN);
            cmd.args(["-p", &port.to_string(), "-l", "127.0.0.1", "-U", "0", "-t", "2"]).args(args);
            // memcached refuses to run as root without -u; /proc/self belongs
            // to our effective user.
            use std::os::unix::fs::MetadataExt;
            if std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false) {
                cmd.args(["-u", "nobody"]);
            }
            let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("spawning memcached");
            let mut m = Memcached { port, child };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if !m.alive() {
                    break; // it could not bind: try another port
                }
                if let Ok(c) = TcpStream::connect(("127.0.0.1", port)) {
                    if Server::pid_of(c) == Some(m.child.id()) {
                        return m;
                    }
                    break; // someone else's server holds the port
                }
                assert!(Instant::now() < deadline, "memcached did not start");
                std::thread::sleep(Duration::from_millis(20)); // test-side start-up wait only
            }
        }
        panic!("memcached did not start on a free port in 5 attempts");
    }

    /// Whether it is still running (false once it exited, e.g. on `shutdown`).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `r` has applied everything its primary's log holds.
pub fn converge(p: &mut Client, r: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let head = p.stats("replication")["head"].clone();
        let rs = r.stats("replication");
        if rs["applied"] == head && rs["head"] == head {
            return;
        }
        assert!(Instant::now() < deadline, "replica stuck: primary head {head}, replica {rs:?}");
        std::thread::sleep(Duration::from_millis(20)); // polling its progress
    }
}
