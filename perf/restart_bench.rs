//! Restart speed from a memory file (`-e`): fill a 1 GiB log (`-m 1024`)
//! with values of one size until it is full without evicting, `kill -9` the
//! server, start it again on the file and time it to the first served
//! request; then check every item is there (`curr_items` against what was
//! written, no evictions, sampled values byte for byte) before any figure
//! is printed.
//!
//!   cargo run --release --example restart_bench -- LOGMEMCACHED DIR VALUE_SIZE [VALUE_SIZE...]
//!
//! DIR holds the memory file (tmpfs: /dev/shm). Prints one markdown table
//! row per value size: log bytes scanned, records, the server's own scan
//! time (`restart_scan_us`: validating every record and rebuilding the
//! index) and whole open (`restart_us`: mapping included), the time from
//! spawn to the first reply, GB/s and records/s of the scan, the scan's
//! share of the time to first reply, and an anchor: CRC32C alone over the
//! same bytes in this process (what validation costs without the index).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Srv {
    port: u16,
    child: Child,
}

impl Srv {
    /// Start and wait for the first served reply; returns the server and
    /// the time from spawn to that reply.
    fn start(bin: &str, file: &str) -> (Srv, Duration) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let t0 = Instant::now();
        let child = Command::new(bin)
            .args(["serve", "-p", &port.to_string(), "-l", "127.0.0.1", "-m", &megabytes(), "-t", "1"])
            .args(["--hugepages", "off", "-I", "1m", "-e", file])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let srv = Srv { port, child };
        let deadline = t0 + Duration::from_secs(120);
        loop {
            if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                c.write_all(b"version\r\n").expect("version");
                let mut b = [0u8; 64];
                let n = c.read(&mut b).expect("reading version");
                assert!(b[..n].starts_with(b"VERSION "), "not a version reply: {:?}", &b[..n]);
                return (srv, t0.elapsed());
            }
            assert!(Instant::now() < deadline, "the server never served");
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `-m`: 1024 unless RESTART_BENCH_MB says otherwise (a quick look, a profile).
fn megabytes() -> String {
    std::env::var("RESTART_BENCH_MB").unwrap_or_else(|_| "1024".into())
}

fn connect(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let r = BufReader::new(c.try_clone().unwrap());
    (c, r)
}

fn stats(port: u16) -> std::collections::HashMap<String, String> {
    let (mut c, mut r) = connect(port);
    c.write_all(b"stats\r\n").unwrap();
    let mut m = std::collections::HashMap::new();
    let mut l = String::new();
    loop {
        l.clear();
        r.read_line(&mut l).unwrap();
        if l.starts_with("END") || l.is_empty() {
            return m;
        }
        let f: Vec<&str> = l.trim_end().splitn(3, ' ').collect();
        if f.len() == 3 {
            m.insert(f[1].to_string(), f[2].to_string());
        }
    }
}

fn stat(port: u16, k: &str) -> u64 {
    stats(port)[k].parse().unwrap_or_else(|_| panic!("stat {k}"))
}

fn key(i: u64) -> String {
    format!("k{i:09}")
}

/// The value of item `i`: its index spelt into a filler, so a sample that
/// came back from another item or torn is seen.
fn value(i: u64, len: usize) -> Vec<u8> {
    let tag = format!("{i:016x}");
    (0..len).map(|j| if j < 16 { tag.as_bytes()[j] } else { b'a' + ((i as usize + j) % 26) as u8 }).collect()
}

/// Store items 0..n with `noreply` sets in large writes, then sync on a
/// `version` round trip.
fn fill(port: u16, n: u64, len: usize) {
    let (mut c, mut r) = connect(port);
    let mut buf = Vec::with_capacity(1 << 20);
    for i in 0..n {
        buf.extend_from_slice(format!("set {} 0 0 {len} noreply\r\n", key(i)).as_bytes());
        buf.extend_from_slice(&value(i, len));
        buf.extend_from_slice(b"\r\n");
        if buf.len() >= 1 << 20 {
            c.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    buf.extend_from_slice(b"version\r\n");
    c.write_all(&buf).unwrap();
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    assert!(l.starts_with("VERSION"), "a noreply set failed: {l:?}");
}

/// `samples` items spread over 0..n read back byte for byte.
fn check_values(port: u16, n: u64, len: usize, samples: u64) {
    let (mut c, mut r) = connect(port);
    for s in 0..samples {
        let i = s * n / samples + s % 7;
        let i = i.min(n - 1);
        c.write_all(format!("get {}\r\n", key(i)).as_bytes()).unwrap();
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert_eq!(l, format!("VALUE {} 0 {len}\r\n", key(i)), "item {i} after the restart");
        let mut v = vec![0u8; len + 2];
        r.read_exact(&mut v).unwrap();
        assert!(v[..len] == value(i, len)[..], "item {i}'s value after the restart");
        l.clear();
        r.read_line(&mut l).unwrap();
        assert_eq!(l, "END\r\n");
    }
}

/// CRC32C over the file's log bytes in this process: the validation's cost alone.
fn crc_anchor(file: &str, bytes: u64) -> Duration {
    let data = std::fs::read(file).expect("reading the memory file");
    let log = &data[8192..8192 + bytes as usize];
    let t = Instant::now();
    let mut c = 0u32;
    for chunk in log.chunks(1 << 20) {
        c = crc32c::crc32c_append(c, chunk);
    }
    let d = t.elapsed();
    assert_ne!(c, 0, "the anchor computed nothing");
    d
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() >= 4, "usage: restart_bench LOGMEMCACHED DIR VALUE_SIZE...");
    let (bin, dir) = (&args[1], &args[2]);
    println!("| value | log bytes scanned | records | restart_scan_us | its CPU, us | restart_us | spawn to first reply, ms | scan GB/s (wall) | scan GB/s per CPU second | records/s per CPU second (M) | ns per record (CPU) | scan share of first reply | CRC32C alone GB/s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for len in args[3..].iter().map(|s| s.parse::<usize>().expect("a value size")) {
        let file = format!("{dir}/lmc-restart-bench-{len}");
        let _ = std::fs::remove_file(&file);
        let (srv, _) = Srv::start(bin, &file);
        let cap = stat(srv.port, "log_capacity");
        // The record a set makes: 48-byte header, key, value, aligned to 8.
        let rec = (48 + key(0).len() as u64 + len as u64).div_ceil(8) * 8;
        let n = cap / rec - 1;
        fill(srv.port, n, len);
        let before = stats(srv.port);
        assert_eq!(before["curr_items"], n.to_string(), "items after the fill");
        assert_eq!(before["evictions"], "0", "the fill evicted");
        assert_eq!(before["protocol_errors"], "0", "the fill had protocol errors");
        let head: u64 = before["log_head"].parse().unwrap();
        // kill -9, by pid.
        drop(srv);
        if std::env::var("RESTART_BENCH_KEEP").is_ok() {
            println!("left {file} filled with {n} items, for a look");
            continue;
        }
        let (srv, first) = Srv::start(bin, &file);
        let after = stats(srv.port);
        assert_eq!(after["restart_from_file"], "1");
        assert_eq!(after["restart_dropped_bytes"], "0");
        assert_eq!(after["curr_items"], n.to_string(), "items served after the restart");
        assert_eq!(after["restart_records"], n.to_string());
        assert_eq!(after["restart_bytes"], head.to_string());
        check_values(srv.port, n, len, 2000);
        // The server's own count of the work: the sampled gets all hit, and
        // no request of the fill or the checks was refused as malformed.
        let done = stats(srv.port);
        assert_eq!(done["protocol_errors"], "0", "protocol errors after the restart");
        assert!(done["get_hits"].parse::<u64>().unwrap_or(0) >= 2000, "the sampled gets did not all hit");
        let scan_us: u64 = after["restart_scan_us"].parse().unwrap();
        let total_us: u64 = after["restart_us"].parse().unwrap();
        let cpu_us: u64 = after["restart_scan_cpu_us"].parse().unwrap();
        assert!(cpu_us > 0, "no scan CPU time");
        assert!(scan_us > 0, "no scan time");
        let anchor = crc_anchor(&file, head);
        drop(srv);
        let _ = std::fs::remove_file(&file);
        let gbs = head as f64 / (scan_us as f64 / 1e6) / 1e9;
        let cpu_s = cpu_us as f64 / 1e6;
        println!(
            "| {len} B | {head} | {n} | {scan_us} | {cpu_us} | {total_us} | {:.0} | {gbs:.2} | {:.2} | {:.2} | {:.0} | {:.0}% | {:.1} |",
            first.as_secs_f64() * 1000.0,
            head as f64 / cpu_s / 1e9,
            n as f64 / cpu_s / 1e6,
            cpu_us as f64 * 1000.0 / n as f64,
            100.0 * scan_us as f64 / first.as_micros() as f64,
            head as f64 / anchor.as_secs_f64() / 1e9,
        );
    }
}
