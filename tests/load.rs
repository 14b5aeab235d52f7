//! Load on loopback against the real binary, bounded in time: 10,000
//! concurrent connections, the multi-get flood (a 1 MB item named hundreds
//! of times by clients that never read), slow readers, pipelined floods, and
//! running out of file descriptors. The server's RSS (VmRSS) must stay under
//! `-m` plus the fixed overhead plus the output bound the README states
//! ("Memory"), another client's gets must keep a p99 under 10 ms meanwhile (a
//! starved client, not a performance goal: those live in perf/), and every
//! reply must arrive intact once the clients read.
//!
//! The tests take turns (one lock): they measure the server's memory and
//! latency on a 2-core box.

mod common;
#[path = "common/load.rs"]
mod load;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{have, peer, Server};
use load::{hit, Expect, Probe, RssPeak, Silent, MIB};

static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

// What the README ("Memory") states a server costs beyond -m.
/// Code, libraries, the log's control block, the index of a few items.
const BASE: u64 = 12 * MIB;
/// Per worker (-t): its scratch buffers, latency histograms, stack, allocator arena.
const PER_WORKER: u64 = 2 * MIB;
/// Per open connection, idle.
const PER_CONN: u64 = 1024;
/// Per connection that waits for output room: the unhandled input it keeps.
const PER_WAITING_CONN: u64 = 16 << 10;

/// The README's bound on RSS: `-m` + fixed overhead (`conns` open, `waiting`
/// of them holding unread replies and unhandled input) + output: the budget
/// plus one reply of `reply` bytes per worker and per waiting connection.
fn bound(m: u64, threads: u64, conns: u64, waiting: u64, budget: u64, reply: u64) -> u64 {
    m * MIB
        + BASE
        + threads * PER_WORKER
        + conns * PER_CONN
        + waiting * PER_WAITING_CONN
        + budget
        + (threads + waiting) * (reply + 1024)
}

/// Wait until the server stops using CPU (at most one tick in 300 ms): it has
/// done all it can for clients that do not read. Panics after `limit`.
fn wait_quiet(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last = (load::cpu_ticks(pid), Instant::now());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let ticks = load::cpu_ticks(pid);
        if ticks > last.0 + 1 {
            last = (ticks, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(300) {
            return;
        }
    }
    panic!("the server kept using CPU for {limit:?} with nobody reading");
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

/// Flood the server with `clients` silent clients sending `request`, each
/// expecting `expect`. Once the server has done all it can for them (with
/// the budget spent: they hold their replies unread), its RSS must be under
/// `limit` and another client's 1,000 gets must have a p99 under 10 ms; then
/// every byte must arrive once they read.
fn flood(s: &Server, clients: usize, request: &[u8], expect: Expect, limit: u64, what: &str) {
    let small = load::value_for("small", 100);
    let peak = RssPeak::start(s.pid());
    let t0 = Instant::now();
    let silent = Silent::start(s.port, clients, request, &expect);
    wait_quiet(s.pid(), Duration::from_secs(20));
    let held = load::stats(s.port, "");
    let probe = Probe::run(s.port, "small", &small, 1000);
    let rss = peak.stop();
    let p99 = probe.quantile(0.99);
    eprintln!(
        "{what}: held after {:?}: {} reply bytes, {} input bytes; RSS peak {:.1} MiB (bound {:.1}); probe p99 {p99:?}",
        t0.elapsed(),
        held.get("conn_output_bytes").map_or("?", String::as_str),
        held.get("conn_input_bytes").map_or("?", String::as_str),
        mib(rss),
        mib(limit),
    );
    assert!(rss < limit, "{what}: RSS {:.1} MiB over the stated bound {:.1} MiB", mib(rss), mib(limit));
    assert!(p99 < Duration::from_millis(10), "{what}: another client's get p99 is {p99:?}");
    assert_eq!(load::stats(s.port, "settings")["output_budget"], (4 * MIB).to_string(), "the default for -m {M}");
    let t0 = Instant::now();
    let bytes = silent.expected_bytes();
    silent.drain().unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!("{what}: {:.0} MiB read and checked in {:?}", mib(bytes), t0.elapsed());
    // A worker counts a connection's buffers just after its last write.
    let freed = || {
        let st = load::stats(s.port, "");
        (st["conn_output_bytes"].clone(), st["conn_input_bytes"].clone()) == ("0".into(), "0".into())
    };
    assert!(load::wait_for(Duration::from_secs(5), freed), "{what}: buffers still counted once all was read");
    let mut c = s.connect();
    assert_eq!(c.cmd("get small\r\n"), format!("VALUE small 0 {}\r\n", small.len()), "{what}: served after");
}

/// -m 8: the default output budget is 4 MiB, one connection's cap.
const M: u64 = 8;

fn start() -> (Server, u64) {
    let s = Server::start(&["-m", &M.to_string()]);
    load::store(s.port, "small", &load::value_for("small", 100));
    (s, 4 * MIB)
}

#[test]
fn multiget_flood_is_held_to_the_output_bound() {
    let _t = turn();
    let (s, budget) = start();
    let big = load::value_for("big", 1_000_000);
    load::store(s.port, "big", &big);
    // 0.4 KB of request, 100 MB of reply, per client.
    let req = [b"get".to_vec(), b" big".repeat(100), b"\r\n".to_vec()].concat();
    let expect = Expect::default().then(&hit("big", &big), 100).then(b"END\r\n", 1);
    let limit = bound(M, 2, 4, 3, budget, big.len() as u64);
    flood(&s, 2, &req, expect, limit, "2 clients, get big x100, not reading");
}

#[test]
fn slow_readers_are_held_to_the_output_bound() {
    let _t = turn();
    let (s, budget) = start();
    let mid = load::value_for("mid", 500_000);
    load::store(s.port, "mid", &mid);
    // 8 MB of replies each: more than the kernel's socket buffers take.
    let req = b"get mid\r\n".repeat(16);
    let expect = Expect::default().then(&[hit("mid", &mid), b"END\r\n".to_vec()].concat(), 16);
    let limit = bound(M, 2, 22, 21, budget, mid.len() as u64);
    flood(&s, 20, &req, expect, limit, "20 clients pipelining get mid (500 KB) x16, not reading");
}

#[test]
fn pipelined_floods_are_held_to_the_output_bound() {
    let _t = turn();
    let (s, budget) = start();
    let small = load::value_for("small", 100);
    let v4k = load::value_for("v4k", 4000);
    load::store(s.port, "v4k", &v4k);
    // A text get of 4 KB and a meta get of 100 bytes, 2,000 times, per
    // client: 40 KB in, 8.4 MB out.
    let one = b"get v4k\r\nmg small v f\r\n";
    let reply = [hit("v4k", &v4k), b"END\r\nVA 100 f0\r\n".to_vec(), small.clone(), b"\r\n".to_vec()].concat();
    let limit = bound(M, 2, 12, 11, budget, reply.len() as u64);
    let what = "10 clients pipelining get 4 KB + mg x2000";
    flood(&s, 10, &one.repeat(2_000), Expect::default().then(&reply, 2_000), limit, what);
}

#[test]
fn ten_thousand_concurrent_connections() {
    let _t = turn();
    const N: usize = 10_000;
    let raised = load::raise_nofile(N as u64 + 500);
    if !peer(&format!("an RLIMIT_NOFILE of {} for this test ({raised:?})", N + 500), raised.is_ok()) {
        return;
    }
    let s = Server::start(&["-m", "16", "-c", &(N + 100).to_string()]);
    let budget = load::stat(s.port, "limit_maxbytes") / 2;
    let small = load::value_for("small", 100);
    load::store(s.port, "small", &small);
    let peak = RssPeak::start(s.pid());
    let probe = Probe::start(s.port, "small", &small);
    let t0 = Instant::now();
    let conns = load::served_connections(s.port, N, "small", &small);
    let opened = t0.elapsed();
    assert!(load::stat(s.port, "curr_connections") > N as u64);
    let rss = peak.stop();
    let p99 = probe.stop().quantile(0.99);
    let limit = bound(16, 2, N as u64 + 2, 0, budget, 0);
    eprintln!(
        "{N} connections in {opened:?}: RSS peak {:.1} MiB (bound {:.1}), probe p99 {p99:?}",
        mib(rss),
        mib(limit)
    );
    assert!(rss < limit, "RSS {:.1} MiB with {N} connections, over the stated {:.1} MiB", mib(rss), mib(limit));
    assert!(p99 < Duration::from_millis(10), "another client's get p99 is {p99:?}");
    drop(conns);
}

#[test]
fn the_soft_fd_limit_is_raised_for_c() {
    let _t = turn();
    let s = Server::start_after("ulimit -Sn 256", &["-c", "1024"]);
    let small = load::value_for("small", 100);
    load::store(s.port, "small", &small);
    // Far past 256 descriptors, every connection accepted and served.
    let conns = load::served_connections(s.port, 600, "small", &small);
    assert_eq!(load::stat(s.port, "listen_disabled_num"), 0);
    drop(conns);
}

#[test]
fn too_few_fds_for_c_refuses_to_start_and_says_why() {
    let _t = turn();
    let port = common::free_port().to_string();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_logmemcached")])
        .args(["serve", "-p", &port, "--hugepages", "off", "-t", "2", "-c", "1024"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning logmemcached");
    let exited = load::wait_for(Duration::from_secs(10), || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("waiting");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(exited && !out.status.success(), "started with -c 1024 under ulimit -n 256; stderr: {err}");
    assert!(err.contains("failed to set rlimit for open files"), "memcached's words: {err}");
    assert!(err.contains("-c 1024") && err.contains("256"), "the numbers: {err}");
}

#[test]
fn out_of_fds_accept_backs_off_instead_of_spinning() {
    let _t = turn();
    if !peer("prlimit (util-linux)", have("prlimit", "--version")) {
        return;
    }
    let s = Server::start(&["-c", "1024"]);
    let small = load::value_for("small", 100);
    load::store(s.port, "small", &small);
    let mut control = s.connect();
    // Leave the server ten descriptors beyond those it has open now (the
    // soft limit: raising it back needs no privilege).
    let nofile = |n: usize| {
        let ok = std::process::Command::new("prlimit")
            .args(["--pid", &s.pid().to_string(), &format!("--nofile={n}:")])
            .status()
            .expect("prlimit");
        assert!(ok.success(), "prlimit --nofile={n}:");
    };
    let limit = load::open_fds(s.pid()) + 10;
    nofile(limit);
    let req = b"get small\r\n";
    let mut waiting: Vec<_> = (0..40)
        .map(|_| {
            let mut c = load::connect(s.port);
            std::io::Write::write_all(&mut c, req).expect("sending");
            c
        })
        .collect();
    assert!(load::wait_for(Duration::from_secs(5), || load::open_fds(s.pid()) >= limit), "never out of descriptors");
    // Out of descriptors with clients waiting in the backlog: the workers
    // must not spin on a listener that stays readable.
    let t0 = load::cpu_ticks(s.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = load::cpu_ticks(s.pid()) - t0;
    assert!(used <= 10, "{used} CPU ticks (of 100) in one second while out of descriptors");
    control.send(b"stats\r\n");
    let st = control.until("END\r\n");
    let disabled = st.iter().find_map(|l| l.strip_prefix("STAT listen_disabled_num ")).map(str::trim_end);
    assert!(disabled.is_some_and(|n| n != "0"), "listen_disabled_num: {disabled:?}");
    // Descriptors again: every waiting client is accepted and served.
    nofile(1024 + 200);
    let expect = Expect::default().then(&hit("small", &small), 1).then(b"END\r\n", 1);
    for (i, c) in waiting.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = vec![0u8; expect.len() as usize];
        std::io::Read::read_exact(c, &mut buf).unwrap_or_else(|e| panic!("client {i} not served: {e}"));
        assert_eq!(buf, [hit("small", &small), b"END\r\n".to_vec()].concat(), "client {i}");
    }
}
