//! What hostile and idle clients cost each server, side by side: Debian's
//! memcached and logmemcached, each started fresh for each measurement with
//! the same flags (`-m 64 -t 2`), driven by the same clients
//! (tests/common/load.rs, as tests/load.rs uses them).
//!
//!   cargo run --release --example load_bounds -- LOGMEMCACHED MEMCACHED [OUT.md]
//!
//! Every figure is printed only after the replies behind it were checked
//! (every set STORED, every probe get exactly its value, every flood reply
//! byte in order once the clients read), and after every logmemcached run
//! its own `stats` showed no `protocol_errors`; anything else panics,
//! naming what.
//! Prints a markdown table and writes it to OUT.md when given.

#[path = "../tests/common/load.rs"]
mod load;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use load::{hit, Expect, Probe, RssPeak, Silent, MIB};

struct Srv {
    port: u16,
    child: Child,
    memcached: bool,
}

/// Runs whose server counted protocol errors (checked as each server stops;
/// `main` refuses to print a table while this holds anything).
static INVALID: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// logmemcached's `protocol_errors`, read over a fresh connection.
fn protocol_errors(port: u16) -> Result<u64, String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    c.write_all(b"stats\r\n").map_err(|e| e.to_string())?;
    let mut r = BufReader::new(c);
    let mut l = String::new();
    loop {
        l.clear();
        if r.read_line(&mut l).map_err(|e| e.to_string())? == 0 || l.starts_with("END") {
            return Err("no protocol_errors in stats".into());
        }
        if let Some(v) = l.trim_end().strip_prefix("STAT protocol_errors ") {
            return v.parse().map_err(|_| format!("protocol_errors {v:?}"));
        }
    }
}

impl Srv {
    fn start(bin: &str, memcached: bool, extra: &[&str]) -> Srv {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let mut cmd = Command::new(bin);
        cmd.args(["-p", &port.to_string(), "-l", "127.0.0.1", "-m", "64", "-t", "2"]);
        if memcached {
            cmd.args(["-U", "0"]);
            // memcached refuses to run as root without -u; /proc/self is ours.
            let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc/self"));
            if uid == 0 {
                cmd.args(["-u", "root"]);
            }
        } else {
            cmd.args(["--hugepages", "off"]);
        }
        let child = cmd.args(extra).stdin(Stdio::null()).spawn().unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let s = Srv { port, child, memcached };
        assert!(
            load::wait_for(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "{bin} never listened on {port}"
        );
        s
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        // memcached counts no protocol errors; its replies were checked.
        if !self.memcached {
            let bad = match protocol_errors(self.port) {
                Ok(0) => None,
                Ok(n) => Some(format!("logmemcached on port {} counted {n} protocol errors", self.port)),
                Err(e) => Some(format!("logmemcached on port {}: {e}", self.port)),
            };
            if let Some(b) = bad {
                INVALID.lock().unwrap_or_else(|e| e.into_inner()).push(b);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / MIB as f64)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Wait until `pid` has used at most one CPU tick in 300 ms.
fn quiet(pid: u32) {
    let mut last = (load::cpu_ticks(pid), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let t = load::cpu_ticks(pid);
        if t > last.0 + 1 {
            last = (t, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(300) {
            return;
        }
    }
    panic!("server {pid} kept busy for a minute with nobody reading");
}

/// Set `n` items of `len` bytes, pipelined, reading the replies as they come;
/// returns how many the server refused for want of memory (memcached does so
/// when it cannot evict fast enough under a pipelined flood), and panics on
/// any other reply or if more than 1% were refused: then the cache was not
/// filled and its RSS would measure nothing.
fn fill(port: u16, n: usize, len: usize) -> usize {
    let mut w = load::connect(port);
    let mut r = std::io::BufReader::new(w.try_clone().expect("clone"));
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let mut refused = 0;
        for i in 0..n {
            line.clear();
            std::io::BufRead::read_line(&mut r, &mut line).expect("reading a set reply");
            if line == "SERVER_ERROR out of memory storing object\r\n" {
                refused += 1;
                continue;
            }
            assert_eq!(line, "STORED\r\n", "set {i} of {n}");
        }
        assert!(refused <= n / 100, "{refused} of {n} sets refused: the cache was not filled");
        refused
    });
    let v = load::value_for("fill", len);
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(format!("set key:{i:010} 0 0 {len}\r\n").as_bytes());
        batch.extend_from_slice(&v);
        batch.extend_from_slice(b"\r\n");
        if batch.len() > 1 << 20 || i + 1 == n {
            w.write_all(&batch).expect("sending sets");
            batch.clear();
        }
    }
    reader.join().expect("a set was not STORED")
}

/// One flood: RSS growth (peak over start), the probe's p99 from the
/// flood's start until the server is quiet and 500 gets more, then every
/// byte checked once the clients read.
fn flood(srv: &Srv, clients: usize, request: &[u8], expect: &Expect) -> (u64, Duration) {
    let small = load::value_for("small", 100);
    let before = load::rss(srv.pid());
    let peak = RssPeak::start(srv.pid());
    let probe = Probe::start(srv.port, "small", &small);
    let silent = Silent::start(srv.port, clients, request, expect);
    quiet(srv.pid());
    let after = Probe::run(srv.port, "small", &small, 500);
    let rss = peak.stop();
    let mut t = probe.stop();
    t.rtts.extend(after.rtts);
    t.rtts.sort();
    silent.drain().unwrap_or_else(|e| panic!("flood replies: {e}"));
    (rss.saturating_sub(before), t.quantile(0.99))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: load_bounds LOGMEMCACHED MEMCACHED [OUT.md]");
        std::process::exit(2);
    }
    load::raise_nofile(11_000).unwrap_or_else(|e| panic!("10,000 connections need descriptors: {e}"));
    let servers = [("memcached", args[2].as_str(), true), ("logmemcached", args[1].as_str(), false)];
    let mut rows: Vec<(String, [String; 2])> = Vec::new();
    let mut row = |name: &str, vals: [String; 2]| {
        eprintln!("{name}: memcached {} / logmemcached {}", vals[0], vals[1]);
        rows.push((name.to_string(), vals));
    };
    let each = |f: &dyn Fn(&str, bool) -> String| [f(servers[0].1, true), f(servers[1].1, false)];
    let small = load::value_for("small", 100);

    row("RSS at start, MiB", each(&|bin, mc| mib(load::rss(Srv::start(bin, mc, &[]).pid()))));

    let idle = |bin: &str, mc: bool, n: usize| -> (u64, Duration) {
        let s = Srv::start(bin, mc, &["-c", &(n + 100).to_string()]);
        load::store(s.port, "small", &small);
        let before = load::rss(s.pid());
        let probe = Probe::start(s.port, "small", &small);
        let conns = load::served_connections(s.port, n, "small", &small);
        let p99 = probe.stop().quantile(0.99);
        let grown = load::rss(s.pid()).saturating_sub(before);
        drop(conns);
        (grown, p99)
    };
    row(
        "RSS per idle connection (5,000 open, each served once), KiB",
        each(&|bin, mc| format!("{:.2}", idle(bin, mc, 5000).0 as f64 / 1024.0 / 5000.0)),
    );
    let ten: Vec<(u64, Duration)> = servers.iter().map(|(_, bin, mc)| idle(bin, *mc, 10_000)).collect();
    row("10,000 connections: RSS growth, MiB", [mib(ten[0].0), mib(ten[1].0)]);
    row("10,000 connections: another client's get p99 while they open, ms", [ms(ten[0].1), ms(ten[1].1)]);

    let big = load::value_for("big", 1_000_000);
    let mg_req = [b"get".to_vec(), b" big".repeat(400), b"\r\n".to_vec()].concat();
    let mg_expect = Expect::default().then(&hit("big", &big), 400).then(b"END\r\n", 1);
    let mg: Vec<(u64, Duration)> = servers
        .iter()
        .map(|(_, bin, mc)| {
            let s = Srv::start(bin, *mc, &[]);
            load::store(s.port, "big", &big);
            load::store(s.port, "small", &small);
            flood(&s, 4, &mg_req, &mg_expect)
        })
        .collect();
    row(
        "multi-get flood (4 clients, get big x400 of 1 MB, not reading): RSS growth, MiB",
        [mib(mg[0].0), mib(mg[1].0)],
    );
    row("multi-get flood: another client's get p99, ms", [ms(mg[0].1), ms(mg[1].1)]);

    let mid = load::value_for("mid", 500_000);
    let slow_req = b"get mid\r\n".repeat(20);
    let slow_expect = Expect::default().then(&[hit("mid", &mid), b"END\r\n".to_vec()].concat(), 20);
    let slow: Vec<(u64, Duration)> = servers
        .iter()
        .map(|(_, bin, mc)| {
            let s = Srv::start(bin, *mc, &[]);
            load::store(s.port, "mid", &mid);
            load::store(s.port, "small", &small);
            flood(&s, 50, &slow_req, &slow_expect)
        })
        .collect();
    row(
        "slow readers (50 clients, get 500 KB x20 pipelined, not reading): RSS growth, MiB",
        [mib(slow[0].0), mib(slow[1].0)],
    );
    row("slow readers: another client's get p99, ms", [ms(slow[0].1), ms(slow[1].1)]);

    let unit = b"get small\r\nmg small v f\r\n";
    let reply = [hit("small", &small), b"END\r\nVA 100 f0\r\n".to_vec(), small.clone(), b"\r\n".to_vec()].concat();
    let pipe_expect = Expect::default().then(&reply, 20_000);
    let pipe: Vec<(u64, Duration)> = servers
        .iter()
        .map(|(_, bin, mc)| {
            let s = Srv::start(bin, *mc, &[]);
            load::store(s.port, "small", &small);
            flood(&s, 40, &unit.repeat(20_000), &pipe_expect)
        })
        .collect();
    row(
        "pipelined flood (40 clients, get + mg of 100 B x20,000, not reading): RSS growth, MiB",
        [mib(pipe[0].0), mib(pipe[1].0)],
    );
    row("pipelined flood: another client's get p99, ms", [ms(pipe[0].1), ms(pipe[1].1)]);

    for (len, n) in [(1000usize, 200_000usize), (100, 1_500_000)] {
        let full: Vec<(String, usize)> = servers
            .iter()
            .map(|(_, bin, mc)| {
                let s = Srv::start(bin, *mc, &[]);
                let refused = fill(s.port, n, len);
                (mib(load::rss(s.pid())), refused)
            })
            .collect();
        row(
            &format!("-m 64 after {n} sets of {len}-byte values (the cache full): RSS, MiB"),
            [full[0].0.clone(), full[1].0.clone()],
        );
        row(
            "the same fill: sets refused with SERVER_ERROR out of memory (at most 1% allowed)",
            [full[0].1.to_string(), full[1].1.to_string()],
        );
    }

    let invalid = INVALID.lock().unwrap_or_else(|e| e.into_inner());
    assert!(invalid.is_empty(), "INVALID: {}", invalid.join("; "));
    let mut table = String::from("| measurement | memcached | logmemcached |\n|---|---:|---:|\n");
    for (name, v) in &rows {
        table.push_str(&format!("| {name} | {} | {} |\n", v[0], v[1]));
    }
    print!("{table}");
    if let Some(out) = args.get(3) {
        std::fs::write(out, &table).unwrap_or_else(|e| panic!("writing {out}: {e}"));
    }
}
