//! Load generators and process figures shared by `tests/load.rs` (bounds
//! asserted) and `perf/load_bounds.rs` (figures beside memcached's): clients
//! that send and never read, then read everything and check it byte for byte;
//! a probe client timing gets meanwhile; RSS and CPU time from /proc.
//!
//! Standalone (no `common::Server`): the perf binary includes it by path.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const MIB: u64 = 1 << 20;

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM, ...).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Resident memory of `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    status_kib(pid, "VmRSS") * 1024
}

/// User + system CPU time of `pid`, in clock ticks (1/100 s here).
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/PID/stat");
    // Fields after the command (which may hold spaces) start after ')'.
    let rest = &s[s.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// Descriptors `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Raise this process's RLIMIT_NOFILE soft limit to at least `want` (and the
/// hard limit when allowed); children inherit it. Err says why not.
pub fn raise_nofile(want: u64) -> Result<u64, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    if soft >= want {
        return Ok(soft);
    }
    let hard = hard.max(want);
    setrlimit(Resource::RLIMIT_NOFILE, want, hard)
        .map(|()| want)
        .map_err(|e| format!("RLIMIT_NOFILE {soft}:{hard} cannot be raised to {want}: {e}"))
}

pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s
}

/// A connection whose receive buffer is `rcvbuf` bytes (set before the
/// handshake, so the window stays small): a client that does not read then
/// leaves its replies in the server's buffers rather than the kernel's.
pub fn connect_small_window(port: u16, rcvbuf: usize) -> TcpStream {
    use nix::sys::socket::{connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    setsockopt(&fd, sockopt::RcvBuf, &rcvbuf).expect("SO_RCVBUF");
    connect(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).expect("connecting");
    let s = TcpStream::from(fd);
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s
}

/// A value whose bytes depend on its key, so a reply carrying another
/// item's bytes (or shifted ones) does not compare equal.
pub fn value_for(key: &str, len: usize) -> Vec<u8> {
    let seed = key.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    (0..len).map(|i| b'a' + ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 27) as u8 % 26).collect()
}

/// Read one reply line (through "\r\n") byte by byte: for short replies.
fn read_line(s: &mut TcpStream) -> String {
    let mut v = Vec::new();
    let mut b = [0u8; 1];
    while !v.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(1) => v.push(b[0]),
            other => panic!("reading a reply line: {other:?} after {:?}", String::from_utf8_lossy(&v)),
        }
    }
    String::from_utf8_lossy(&v).into_owned()
}

/// `set key 0 0 len` with `value` on a fresh connection; panics unless STORED.
pub fn store(port: u16, key: &str, value: &[u8]) {
    let mut s = connect(port);
    s.write_all(format!("set {key} 0 0 {}\r\n", value.len()).as_bytes()).expect("sending");
    s.write_all(value).expect("sending");
    s.write_all(b"\r\n").expect("sending");
    assert_eq!(read_line(&mut s), "STORED\r\n", "storing {key}");
}

/// `stats [group]` on a fresh connection, as (name, value) pairs.
pub fn stats(port: u16, group: &str) -> std::collections::HashMap<String, String> {
    let mut s = connect(port);
    let req = if group.is_empty() { "stats\r\n".to_string() } else { format!("stats {group}\r\n") };
    s.write_all(req.as_bytes()).expect("sending");
    let mut m = std::collections::HashMap::new();
    loop {
        let l = read_line(&mut s);
        if l == "END\r\n" {
            return m;
        }
        let mut it = l.trim_end().splitn(3, ' ');
        if let (Some("STAT"), Some(k), Some(v)) = (it.next(), it.next(), it.next()) {
            m.insert(k.to_string(), v.to_string());
        }
    }
}

pub fn stat(port: u16, name: &str) -> u64 {
    stats(port, "").get(name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no stat {name}"))
}

/// One text hit: `VALUE key 0 len\r\n<value>\r\n`.
pub fn hit(key: &str, value: &[u8]) -> Vec<u8> {
    let mut v = format!("VALUE {key} 0 {}\r\n", value.len()).into_bytes();
    v.extend_from_slice(value);
    v.extend_from_slice(b"\r\n");
    v
}

/// The bytes a connection must receive, as pieces each repeated (400 hits of
/// a 1 MB item need not be built to be compared).
#[derive(Clone, Default)]
pub struct Expect(Vec<(Arc<Vec<u8>>, usize)>);

impl Expect {
    pub fn then(mut self, bytes: &[u8], times: usize) -> Expect {
        self.0.push((Arc::new(bytes.to_vec()), times));
        self
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|(b, n)| (b.len() * n) as u64).sum()
    }

    /// Read from `s` until every expected byte came, comparing as it goes.
    fn check(&self, s: &mut TcpStream) -> Result<(), String> {
        let mut buf = vec![0u8; 256 << 10];
        let (mut seg, mut rep, mut off, mut at) = (0usize, 0usize, 0usize, 0u64);
        let total = self.len();
        while at < total {
            let n = match s.read(&mut buf) {
                Ok(0) => return Err(format!("closed after {at} of {total} bytes")),
                Ok(n) => n,
                Err(e) => return Err(format!("{e} after {at} of {total} bytes")),
            };
            let mut got = &buf[..n];
            while !got.is_empty() {
                let Some((piece, times)) = self.0.get(seg) else {
                    return Err(format!("{} bytes more than the {total} expected", got.len()));
                };
                let take = (piece.len() - off).min(got.len());
                if got[..take] != piece[off..off + take] {
                    let shown = String::from_utf8_lossy(&got[..take.min(60)]).into_owned();
                    return Err(format!("wrong bytes at offset {at}: {shown:?}"));
                }
                (got, off, at) = (&got[take..], off + take, at + take as u64);
                if off == piece.len() {
                    (off, rep) = (0, rep + 1);
                    if rep == *times {
                        (seg, rep) = (seg + 1, 0);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Clients that each send `request` and read nothing until `drain`. Each
/// sends from its own thread: a server that stops reading must not block us.
/// Their receive windows are small (64 KiB), so what the server cannot send
/// stays in its own memory, where the bounds apply.
pub struct Silent {
    conns: Vec<(TcpStream, Expect)>,
    writers: Vec<JoinHandle<()>>,
}

impl Silent {
    pub fn start(port: u16, clients: usize, request: &[u8], expect: &Expect) -> Silent {
        let request = Arc::new(request.to_vec());
        let mut s = Silent { conns: Vec::new(), writers: Vec::new() };
        for _ in 0..clients {
            let c = connect_small_window(port, 64 << 10);
            let mut w = c.try_clone().expect("cloning a socket");
            let req = request.clone();
            s.writers.push(std::thread::spawn(move || {
                let _ = w.write_all(&req);
            }));
            s.conns.push((c, expect.clone()));
        }
        s
    }

    /// Bytes all clients will have received once drained.
    pub fn expected_bytes(&self) -> u64 {
        self.conns.iter().map(|(_, e)| e.len()).sum()
    }

    /// Every client reads its replies (all at once); Err names the first
    /// client whose bytes were not exactly the expected ones.
    pub fn drain(self) -> Result<(), String> {
        let readers: Vec<_> =
            self.conns.into_iter().map(|(mut c, e)| std::thread::spawn(move || e.check(&mut c))).collect();
        for w in self.writers {
            w.join().map_err(|_| "a writer panicked".to_string())?;
        }
        for (i, r) in readers.into_iter().enumerate() {
            r.join().map_err(|_| "a reader panicked".to_string())?.map_err(|e| format!("client {i}: {e}"))?;
        }
        Ok(())
    }
}

/// What a probe or sampler measured.
pub struct Timings {
    /// Sorted round-trip times.
    pub rtts: Vec<Duration>,
}

impl Timings {
    pub fn quantile(&self, q: f64) -> Duration {
        assert!(!self.rtts.is_empty(), "no samples");
        self.rtts[((self.rtts.len() - 1) as f64 * q).round() as usize]
    }
}

/// Another client: `get key` in a loop, each reply checked to be exactly
/// that value, until stopped; times every round trip. Panics (in `stop`) on
/// a wrong reply.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Vec<Duration>, String>>,
}

impl Probe {
    pub fn start(port: u16, key: &str, value: &[u8]) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, req) = (stop.clone(), format!("get {key}\r\n"));
        let expect = Expect::default().then(&hit(key, value), 1).then(b"END\r\n", 1);
        let mut s = connect(port);
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                expect.check(&mut s).map_err(|e| format!("probe get: {e}"))?;
                v.push(t0.elapsed());
                // About a thousand gets a second: a client, not a flood.
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(v)
        });
        Probe { stop, thread }
    }

    /// `n` gets back to back, each checked; their round-trip times.
    pub fn run(port: u16, key: &str, value: &[u8], n: usize) -> Timings {
        let expect = Expect::default().then(&hit(key, value), 1).then(b"END\r\n", 1);
        let req = format!("get {key}\r\n");
        let mut s = connect(port);
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut rtts: Vec<Duration> = (0..n)
            .map(|i| {
                let t0 = Instant::now();
                s.write_all(req.as_bytes()).expect("sending");
                expect.check(&mut s).unwrap_or_else(|e| panic!("probe get {i}: {e}"));
                t0.elapsed()
            })
            .collect();
        rtts.sort();
        Timings { rtts }
    }

    pub fn stop(self) -> Timings {
        self.stop.store(true, Ordering::Relaxed);
        let mut rtts = self.thread.join().expect("probe thread").unwrap_or_else(|e| panic!("{e}"));
        rtts.sort();
        Timings { rtts }
    }
}

/// The largest RSS of `pid` seen while it runs, sampled every 10 ms.
pub struct RssPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl RssPeak {
    pub fn start(pid: u32) -> RssPeak {
        let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(rss(pid))));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssPeak { stop, peak, thread }
    }

    pub fn now(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Wait until `cond` holds, up to `limit`; whether it did.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Open `n` connections, each answering one `get key` with exactly `value`
/// before the next opens (so each was accepted and served).
pub fn served_connections(port: u16, n: usize, key: &str, value: &[u8]) -> Vec<TcpStream> {
    let expect = Expect::default().then(&hit(key, value), 1).then(b"END\r\n", 1);
    let req = format!("get {key}\r\n");
    (0..n)
        .map(|i| {
            let mut c = connect(port);
            c.write_all(req.as_bytes()).expect("sending");
            expect.check(&mut c).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            c
        })
        .collect()
}
