//! `-M` (memcached's "return error on memory exhausted instead of evicting
//! items"): filled with live items until a write is refused, the refusal is
//! memcached's in text, meta and binary, every item acknowledged before it
//! is still there, and it is counted as memcached counts it. The same
//! sequence runs against Debian's memcached 1.6 (`-M -m 2`), and the parts
//! that do not depend on where each server fills up must agree. What only a
//! log does (space freed in log order) is checked on logmemcached alone.
mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VALUE_LEN: usize = 1000;
/// Far more 1000-byte items than 2 MiB holds: a server that never refuses fails.
const MAX_ITEMS: usize = 10_000;

struct Conn(BufReader<TcpStream>);

impl Conn {
    fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        Conn(BufReader::new(s))
    }
    fn send(&mut self, b: &[u8]) {
        self.0.get_mut().write_all(b).expect("send");
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.0.read_line(&mut l).expect("read");
        l
    }
    fn set(&mut self, key: &str) -> String {
        let mut req = format!("set {key} 0 0 {VALUE_LEN}\r\n").into_bytes();
        req.extend_from_slice(&[b'v'; VALUE_LEN]);
        req.extend_from_slice(b"\r\n");
        self.send(&req);
        self.line()
    }
    /// The value of `key`, or None on a miss.
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.send(format!("get {key}\r\n").as_bytes());
        let l = self.line();
        if l == "END\r\n" {
            return None;
        }
        let len: usize = l.trim_end().rsplit(' ').next().and_then(|n| n.parse().ok()).expect("VALUE line");
        let mut v = vec![0; len + 2];
        self.0.read_exact(&mut v).unwrap();
        assert_eq!(self.line(), "END\r\n");
        v.truncate(len);
        Some(v)
    }
    fn stat(&mut self, group: &str, name: &str) -> String {
        self.send(format!("stats {group}\r\n").trim_end().as_bytes());
        self.send(b"\r\n");
        let mut found = String::new();
        loop {
            let l = self.line();
            if l == "END\r\n" || l.is_empty() {
                return found;
            }
            let mut f = l.trim_end().splitn(3, ' ');
            let (_, k, v) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
            if k == name || k.ends_with(&format!(":{name}")) {
                found = v.to_string();
            }
        }
    }
    /// A binary SET of a 1000-byte value: (status, body).
    fn binary_set(&mut self, key: &[u8]) -> (u16, Vec<u8>) {
        let extras = [0u8; 8];
        let body_len = (extras.len() + key.len() + VALUE_LEN) as u32;
        let mut req = vec![0x80, 0x01];
        req.extend_from_slice(&(key.len() as u16).to_be_bytes());
        req.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
        req.extend_from_slice(&body_len.to_be_bytes());
        req.extend_from_slice(&[0u8; 12]);
        req.extend_from_slice(&extras);
        req.extend_from_slice(key);
        req.extend_from_slice(&[b'v'; VALUE_LEN]);
        self.send(&req);
        let mut h = [0u8; 24];
        self.0.read_exact(&mut h).unwrap();
        let status = u16::from_be_bytes([h[6], h[7]]);
        let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let mut body = vec![0; len];
        self.0.read_exact(&mut body).unwrap();
        (status, body)
    }
}

/// Fill with live items until refused, then the refusals and what follows
/// them: the transcript both servers must agree on, and how many items were
/// stored.
fn fill_and_refuse(port: u16) -> (Vec<String>, usize) {
    let mut c = Conn::new(port);
    let mut t = Vec::new();
    let mut n = 0;
    let refusal = loop {
        let r = c.set(&format!("k{n}"));
        if r != "STORED\r\n" || n == MAX_ITEMS {
            break r;
        }
        n += 1;
    };
    t.push(format!("text set: {refusal:?}"));
    let lost: Vec<usize> = (0..n).filter(|i| c.get(&format!("k{i}")) != Some(vec![b'v'; VALUE_LEN])).collect();
    t.push(format!("acknowledged but not readable: {:?}", &lost[..lost.len().min(5)]));
    let mut ms = format!("ms mk {VALUE_LEN} T0\r\n").into_bytes();
    ms.extend_from_slice(&[b'v'; VALUE_LEN]);
    ms.extend_from_slice(b"\r\n");
    c.send(&ms);
    t.push(format!("meta ms: {:?}", c.line()));
    let (status, body) = Conn::new(port).binary_set(b"bk");
    t.push(format!("binary SET: {status:#x} {:?}", String::from_utf8_lossy(&body)));
    // A refused set of an existing key unlinks its old value (memcached).
    t.push(format!("set k0 again: {:?}", c.set("k0")));
    t.push(format!("k0 after: {:?}", c.get("k0").map(|v| v.len())));
    t.push(format!("k1 after: {:?}", c.get("k1").map(|v| v.len())));
    for (group, name) in
        [("", "evictions"), ("", "store_no_memory"), ("items", "outofmemory"), ("settings", "evictions")]
    {
        t.push(format!("stats {group} {name}: {}", c.stat(group, name)));
    }
    (t, n)
}

#[test]
fn a_full_cache_refuses_writes_as_memcached_and_keeps_every_item() {
    let s = Server::start(&["-M", "-m", "2"]);
    let (t, n) = fill_and_refuse(s.port);
    let expect = [
        "text set: \"SERVER_ERROR out of memory storing object\\r\\n\"".to_string(),
        "acknowledged but not readable: []".into(),
        "meta ms: \"SERVER_ERROR out of memory storing object\\r\\n\"".into(),
        "binary SET: 0x82 \"Out of memory allocating item\"".into(),
        "set k0 again: \"SERVER_ERROR out of memory storing object\\r\\n\"".into(),
        "k0 after: None".into(),
        format!("k1 after: Some({VALUE_LEN})"),
        "stats  evictions: 0".into(),
        // Text and meta count store_no_memory; binary does not (memcached 1.6.18).
        "stats  store_no_memory: 3".into(),
        "stats items outofmemory: 4".into(),
        "stats settings evictions: off".into(),
    ];
    assert_eq!(t, expect);
    assert!(n > 1000 && n < MAX_ITEMS, "{n} items in 2 MiB");

    // Space is freed in log order. The unlinked k0 was at the tail: its
    // space goes first, to whatever fits.
    let mut c = Conn::new(s.port);
    let mut fillers = 0;
    while c.set(&format!("f{fillers}")) == "STORED\r\n" {
        fillers += 1;
        assert!(fillers < 10, "k0's space holds one item");
    }
    // Now k1 is live at the tail: deleted items behind it free nothing yet.
    for i in 10..20 {
        assert_eq!(c.cmd(&format!("delete k{i}")), "DELETED\r\n");
    }
    assert_eq!(c.set("new"), "SERVER_ERROR out of memory storing object\r\n");
    // Once the items at the tail are dead too, their space and that of the
    // deleted items behind them is reclaimed.
    for i in 1..10 {
        assert_eq!(c.cmd(&format!("delete k{i}")), "DELETED\r\n");
    }
    for i in 0..10 {
        assert_eq!(c.set(&format!("new{i}")), "STORED\r\n", "new{i}");
    }
    for i in 20..n {
        assert!(c.get(&format!("k{i}")).is_some(), "k{i} was evicted");
    }
    assert_eq!(c.stat("", "evictions"), "0");
}

impl Conn {
    fn cmd(&mut self, req: &str) -> String {
        self.send(format!("{req}\r\n").as_bytes());
        self.line()
    }
}

/// memcached `-M -m 2` as the reference; killed (by its pid) on drop.
struct Memcached(Child, u16);

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn refusals_match_memcached() {
    if !peer("memcached", have("/usr/bin/memcached", "-V")) {
        return;
    }
    let port = free_port();
    let mut cmd = Command::new("/usr/bin/memcached");
    cmd.args(["-M", "-m", "2", "-p", &port.to_string(), "-l", "127.0.0.1", "-U", "0", "-t", "2"]);
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false) {
        cmd.args(["-u", "nobody"]);
    }
    let mc = Memcached(cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("spawning memcached"), port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", mc.1)).is_err() {
        assert!(Instant::now() < deadline, "memcached did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = Server::start(&["-M", "-m", "2"]);
    let (theirs, _) = fill_and_refuse(mc.1);
    let (ours, _) = fill_and_refuse(s.port);
    assert_eq!(ours, theirs);
}
