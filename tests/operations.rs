//! Operations: the systemd units, the readiness protocol, the huge-page
//! helper, latency statistics and the interval log, journald-style logging.
//!
//! There is no systemd as PID 1 in the test container, so the service is not
//! started by a real systemd here: `sd_notify` is tested by binding the
//! `$NOTIFY_SOCKET` ourselves, as systemd does, and reading what arrives.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Client, Server};

const BIN: &str = env!("CARGO_BIN_EXE_logmemcached");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A fresh directory under the target dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ops-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating a temp dir");
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have(cmd: &str) -> bool {
    common::have(cmd, "--version")
}

fn write(path: &Path, text: &str) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

// ---------------------------------------------------------------- systemd units

/// `systemd-analyze verify` on every unit, inside a scratch root that holds
/// the installed layout (binaries where ExecStart= points, the distribution's
/// units for targets such as rdma-hw.target), so the unit files are checked
/// exactly as shipped. Warnings count as failures: verify exits 0 on an
/// unknown key or a bad value, and only says so on stderr.
#[test]
fn systemd_units_verify() {
    if !common::peer("systemd-analyze (tests/install-deps.sh installs systemd)", have("systemd-analyze")) {
        return;
    }
    let t = TempDir::new("units");
    let r = t.path();
    let sys = Path::new("/usr/lib/systemd/system");
    assert!(sys.is_dir(), "no {}", sys.display());
    let cp = |src: &Path, dst: &Path| {
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap_or_else(|e| panic!("copying {} to {}: {e}", src.display(), dst.display()));
    };
    for e in std::fs::read_dir(sys).unwrap().flatten() {
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            cp(&e.path(), &r.join("usr/lib/systemd/system").join(e.file_name()));
        }
    }
    cp(Path::new(BIN), &r.join("usr/local/bin/logmemcached"));
    cp(&Path::new(ROOT).join("hugepages/logmemcached-hugepages"), &r.join("usr/local/sbin/logmemcached-hugepages"));
    cp(
        &Path::new(ROOT).join("systemd/logmemcached-memcached-wrapper"),
        &r.join("usr/local/lib/logmemcached/logmemcached-memcached-wrapper"),
    );
    let units = [
        "logmemcached.service",
        "logmemcached@.service",
        "logmemcached-hugepages.service",
        "logmemcached-memcached.service",
    ];
    for u in units {
        cp(&Path::new(ROOT).join("systemd").join(u), &r.join("etc/systemd/system").join(u));
    }
    // The template is verified through an instance, as systemd loads it.
    for u in [
        "logmemcached.service",
        "logmemcached@primary.service",
        "logmemcached-hugepages.service",
        "logmemcached-memcached.service",
    ] {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no", &format!("--root={}", r.display()), u])
            .output()
            .expect("running systemd-analyze");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.trim().is_empty(), "systemd-analyze verify {u}: {:?}\n{err}", out.status);
    }

    // Negative control: verify in this root does read our files.
    let bad = r.join("etc/systemd/system/logmemcached.service");
    let text = std::fs::read_to_string(&bad).unwrap().replace("Restart=on-failure", "Restart=bogus");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", &format!("--root={}", r.display()), "logmemcached.service"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"), "a broken unit went unnoticed");
}

/// The units carry what the issue asks for (verify does not check intent).
#[test]
fn units_have_the_required_settings() {
    for u in ["logmemcached.service", "logmemcached@.service"] {
        let text = std::fs::read_to_string(Path::new(ROOT).join("systemd").join(u)).unwrap();
        for needle in [
            "Type=notify",
            "LimitMEMLOCK=infinity",
            "AmbientCapabilities=CAP_IPC_LOCK",
            "CapabilityBoundingSet=CAP_IPC_LOCK",
            "After=network-online.target rdma-hw.target",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "User=logmemcached",
            "ReadWritePaths=-/dev/shm -/dev/hugepages",
            "EnvironmentFile=-/etc/default/logmemcached",
            "ExecStart=/usr/local/bin/logmemcached serve ",
        ] {
            assert!(text.contains(needle), "{u} lacks {needle}");
        }
    }
    let t = std::fs::read_to_string(Path::new(ROOT).join("systemd/logmemcached@.service")).unwrap();
    assert!(t.contains("EnvironmentFile=/etc/logmemcached/%i.conf"));
    // ProtectSystem=strict: the --admin-socket needs a directory of its own.
    assert!(t.contains("RuntimeDirectory=logmemcached/%i\n"));
    let t = std::fs::read_to_string(Path::new(ROOT).join("systemd/logmemcached.service")).unwrap();
    assert!(t.contains("RuntimeDirectory=logmemcached\n"));
    // memcached's place: Debian's conf through the wrapper, Debian's pidfile.
    let t = std::fs::read_to_string(Path::new(ROOT).join("systemd/logmemcached-memcached.service")).unwrap();
    for needle in [
        "ExecStart=/usr/local/lib/logmemcached/logmemcached-memcached-wrapper /etc/memcached.conf",
        "PIDFile=/run/memcached/memcached.pid",
        "Conflicts=memcached.service",
        "CAP_SETUID",
    ] {
        assert!(t.contains(needle), "logmemcached-memcached.service lacks {needle}");
    }
}

/// sysusers.d creates the service user (in a scratch root, not this host).
#[test]
fn sysusers_creates_the_service_user() {
    if !common::peer("systemd-sysusers", have("systemd-sysusers")) {
        return;
    }
    let t = TempDir::new("sysusers");
    std::fs::create_dir_all(t.path().join("etc")).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", t.path().display()))
        .arg(Path::new(ROOT).join("systemd/logmemcached.sysusers"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let passwd = std::fs::read_to_string(t.path().join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("logmemcached:")), "{passwd}");
}

// ---------------------------------------------------------------- sd_notify

/// A server started with `$NOTIFY_SOCKET` set, as systemd would start it.
fn spawn_notified(port: u16, notify_socket: &str) -> Child {
    Command::new(BIN)
        .args(["serve", "-p", &port.to_string(), "-l", "127.0.0.1", "--hugepages", "off", "-t", "2", "-m", "8"])
        .env("NOTIFY_SOCKET", notify_socket)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning logmemcached")
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("no notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_notify_sequence(sock: UnixDatagram, addr: &str) {
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = free_port();
    let mut child = spawn_notified(port, addr);
    let ready = recv(&sock);
    // The port must already accept when READY=1 arrives (systemd then starts
    // what depends on us).
    let accepted = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(ready.lines().any(|l| l == "READY=1"), "first message {ready:?}");
    assert!(ready.contains("STATUS=serving on 127.0.0.1:"), "{ready:?}");
    assert!(ready.contains(&format!("MAINPID={}", child.id())), "{ready:?}");
    assert!(accepted, "READY=1 came before the port accepted");
    let mut c = Client::connect(port);
    assert_eq!(c.cmd("set k 0 0 1\r\nv\r\n"), "STORED\r\n");
    drop(c);
    // SIGTERM to this child only, by pid.
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let stopping = recv(&sock);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "after SIGTERM: {stopping:?}");
    let st = wait_exit(&mut child);
    assert!(st.success(), "exit status {st:?}");
}

#[test]
fn notify_ready_then_stopping_on_a_path_socket() {
    let t = TempDir::new("notify");
    let path = t.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("binding the notify socket");
    check_notify_sequence(sock, path.to_str().unwrap());
}

#[test]
fn notify_ready_then_stopping_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("logmemcached-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).expect("binding the abstract notify socket");
    check_notify_sequence(sock, &format!("@{name}"));
}

#[test]
fn no_notify_socket_is_fine() {
    // Without $NOTIFY_SOCKET (common::Server does not set it) nothing changes.
    let s = Server::start(&["-m", "8"]);
    assert_eq!(s.connect().cmd("version\r\n").split(' ').next(), Some("VERSION"));
    assert!(s.stop().success());
}

// ---------------------------------------------------------------- huge pages

struct FakeSys {
    dir: TempDir,
}

const HP: &str = "hugepages/hugepages-2048kB";

impl FakeSys {
    /// A fake /proc and /sys: `nodes` is (reserved, free) per NUMA node.
    fn new(tag: &str, nodes: &[(u64, u64)], resv: u64) -> FakeSys {
        let dir = TempDir::new(tag);
        let r = dir.path();
        let (total, free): (u64, u64) = nodes.iter().fold((0, 0), |(t, f), (a, b)| (t + a, f + b));
        write(
            &r.join("proc/meminfo"),
            &format!(
                "MemTotal:       16318480 kB\nHugePages_Total:   {total:5}\nHugePages_Free:    {free:5}\n\
                 HugePages_Rsvd:    {resv:5}\nHugePages_Surp:        0\nHugepagesize:       2048 kB\n"
            ),
        );
        write(&r.join("proc/mounts"), "proc /proc proc rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n");
        write(&r.join("proc/sys/vm/nr_hugepages"), &format!("{total}\n"));
        let g = r.join("sys/kernel/mm").join(HP);
        write(&g.join("nr_hugepages"), &format!("{total}\n"));
        write(&g.join("free_hugepages"), &format!("{free}\n"));
        write(&g.join("resv_hugepages"), &format!("{resv}\n"));
        for (i, (t, f)) in nodes.iter().enumerate() {
            let d = r.join(format!("sys/devices/system/node/node{i}")).join(HP);
            write(&d.join("nr_hugepages"), &format!("{t}\n"));
            write(&d.join("free_hugepages"), &format!("{f}\n"));
        }
        FakeSys { dir }
    }

    fn run(&self, args: &[&str]) -> (i32, String) {
        let out: Output = Command::new("bash")
            .arg(Path::new(ROOT).join("hugepages/logmemcached-hugepages"))
            .args(args)
            .env("LOGMEMCACHED_SYSROOT", self.dir.path())
            .output()
            .expect("running logmemcached-hugepages");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).unwrap().trim().to_string()
    }
}

/// The value after `key:` on its line.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key}: line in\n{text}"))
}

#[test]
fn hugepages_check_with_none_reserved() {
    let f = FakeSys::new("hp-none", &[(0, 0)], 0);
    let (code, out) = f.run(&["check", "-m", "64"]);
    assert_eq!(code, 1, "{out}");
    assert!(field(&out, "needed").starts_with("33 pages"), "{out}");
    assert!(field(&out, "reserved").starts_with("0 pages"), "{out}");
    assert!(field(&out, "free").starts_with("0 pages"), "{out}");
    assert!(field(&out, "result").starts_with("SHORT"), "{out}");
    assert!(field(&out, "result").contains("reserve -m 64"), "{out}");
    assert!(field(&out, "mount").starts_with("none"), "{out}");
    assert!(!out.contains("node0"), "a single node is not listed per node:\n{out}");
}

#[test]
fn hugepages_check_with_pages_reserved() {
    let f = FakeSys::new("hp-some", &[(64, 40)], 0);
    let (code, out) = f.run(&["check", "-m", "64"]);
    assert_eq!(code, 0, "{out}");
    assert!(field(&out, "reserved").starts_with("64 pages"), "{out}");
    assert!(field(&out, "free").starts_with("40 pages"), "{out}");
    assert!(field(&out, "result").starts_with("OK: 40 available in total >= 33 needed"), "{out}");
    // Two instances need more than is free.
    let (code, out) = f.run(&["check", "-m", "64", "-m", "64"]);
    assert_eq!(code, 1, "{out}");
    assert!(field(&out, "needed").starts_with("66 pages"), "{out}");
    // Pages promised to mappings are not available.
    let f = FakeSys::new("hp-resv", &[(64, 40)], 10);
    let (code, out) = f.run(&["check", "-m", "64"]);
    assert_eq!(code, 1, "{out}");
    assert!(field(&out, "free").contains("30 available"), "{out}");
}

#[test]
fn hugepages_check_per_numa_node() {
    let f = FakeSys::new("hp-numa", &[(20, 20), (30, 10)], 0);
    let (code, out) = f.run(&["check", "-m", "32"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(field(&out, "node0"), "reserved 20 free 20");
    assert_eq!(field(&out, "node1"), "reserved 30 free 10");
    assert!(field(&out, "needed").starts_with("17 pages"), "{out}");
    let (code, out) = f.run(&["check", "-m", "32", "--node", "1"]);
    assert_eq!(code, 1, "node 1 has 10 free, 17 needed:\n{out}");
    assert!(field(&out, "result").contains("on node 1"), "{out}");
    let (code, out) = f.run(&["check", "-m", "32", "--node", "0"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn hugepages_reserve_writes_the_pool() {
    // One node: the global sysctl file.
    let f = FakeSys::new("hp-res1", &[(4, 4)], 0);
    let (code, out) = f.run(&["reserve", "-m", "64"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.read("proc/sys/vm/nr_hugepages"), "33");
    // Never shrinks.
    let f = FakeSys::new("hp-res2", &[(100, 100)], 0);
    assert_eq!(f.run(&["reserve", "-m", "64"]).0, 0);
    assert_eq!(f.read("proc/sys/vm/nr_hugepages"), "100");
    // Two nodes: spread evenly, per node.
    let f = FakeSys::new("hp-res3", &[(0, 0), (0, 0)], 0);
    let (code, out) = f.run(&["reserve", "-m", "64"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.read(&format!("sys/devices/system/node/node0/{HP}/nr_hugepages")), "17");
    assert_eq!(f.read(&format!("sys/devices/system/node/node1/{HP}/nr_hugepages")), "17");
    // All on one node.
    let f = FakeSys::new("hp-res4", &[(0, 0), (0, 0)], 0);
    assert_eq!(f.run(&["reserve", "-m", "64", "--node", "1"]).0, 0);
    assert_eq!(f.read(&format!("sys/devices/system/node/node0/{HP}/nr_hugepages")), "0");
    assert_eq!(f.read(&format!("sys/devices/system/node/node1/{HP}/nr_hugepages")), "33");
}

#[test]
fn hugepages_usage_errors_and_mount_detection() {
    let f = FakeSys::new("hp-usage", &[(0, 0)], 0);
    assert_eq!(f.run(&["check"]).0, 2);
    assert_eq!(f.run(&["check", "-m", "lots"]).0, 2);
    assert_eq!(f.run(&["check", "-m", "8", "--node", "3"]).0, 2);
    assert_eq!(f.run(&["frobnicate"]).0, 2);
    // An existing hugetlbfs mount (systemd's dev-hugepages.mount) is kept.
    write(&f.dir.path().join("proc/mounts"), "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n");
    std::fs::create_dir_all(f.dir.path().join("dev/hugepages")).unwrap();
    let (_, out) = f.run(&["check", "-m", "8"]);
    assert_eq!(field(&out, "mount"), "/dev/hugepages");
    let (code, out) = f.run(&["mount", "--group", "no-such-group-for-logmemcached"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("already a hugetlbfs mount"), "{out}");
}

/// The script's page arithmetic is the server's: the same control block and
/// the same rounding to whole 2 MiB pages.
#[test]
fn hugepages_arithmetic_matches_the_server() {
    use logmemcached::log::control::CONTROL_SIZE;
    use logmemcached::memory::region::{round_to_huge, HUGE_PAGE};
    let script = std::fs::read_to_string(Path::new(ROOT).join("hugepages/logmemcached-hugepages")).unwrap();
    assert!(script.contains(&format!("CONTROL_BYTES={CONTROL_SIZE}\n")), "CONTROL_BYTES differs from CONTROL_SIZE");
    let f = FakeSys::new("hp-arith", &[(0, 0)], 0);
    for mb in [1usize, 2, 3, 63, 64, 1000, 4096] {
        let (_, out) = f.run(&["check", "-m", &mb.to_string()]);
        let pages = round_to_huge((mb << 20) + CONTROL_SIZE) / HUGE_PAGE;
        assert!(field(&out, "needed").starts_with(&format!("{pages} pages")), "-m {mb}: {out}");
    }
}

// ---------------------------------------------------------------- latency

fn stats_f64(m: &HashMap<String, String>, k: &str) -> f64 {
    m.get(k).unwrap_or_else(|| panic!("no stat {k}")).parse().unwrap_or_else(|_| panic!("{k} = {:?}", m[k]))
}

fn check_shape(m: &HashMap<String, String>, kind: &str, count: u64) {
    assert_eq!(m[&format!("{kind}_count")], count.to_string(), "{kind}_count");
    let q: Vec<f64> =
        ["p50", "p90", "p99", "p99_9", "max"].iter().map(|p| stats_f64(m, &format!("{kind}_{p}_us"))).collect();
    for w in q.windows(2) {
        assert!(w[0] <= w[1], "{kind}: quantiles out of order {q:?}");
    }
    if count > 0 {
        assert!(q[0] > 0.0, "{kind}: p50 {q:?}");
        assert!(q[4] < 1_000_000.0, "{kind}: max over 1 s {q:?}");
    } else {
        assert!(q.iter().all(|&v| v == 0.0), "{kind}: {q:?}");
    }
}

#[test]
fn stats_latency_and_the_interval_log() {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::Histogram;

    let t = TempDir::new("latency");
    let log = t.path().join("latency.hlog");
    let s = Server::start(&["-m", "8", "--latency-log", log.to_str().unwrap(), "--latency-log-interval", "1"]);
    let mut c = s.connect();
    let n = 500;
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!("set key{i} 0 0 5\r\nvalue\r\n"));
    }
    assert!(c.pipeline(&batch, n).iter().all(|l| l == "STORED\r\n"));
    for i in 0..n {
        c.send(format!("get key{i}\r\n").as_bytes());
        assert_eq!(c.line(), format!("VALUE key{i} 0 5\r\n"));
        c.bytes(7);
        assert_eq!(c.line(), "END\r\n");
    }
    assert_eq!(c.cmd("delete key0\r\n"), "DELETED\r\n");
    assert_eq!(c.cmd("delete key0\r\n"), "NOT_FOUND\r\n");
    assert_eq!(c.cmd("set n 0 0 1\r\n1\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("incr n 5\r\n"), "6\r\n");
    assert_eq!(c.cmd("decr n 1\r\n"), "5\r\n");
    assert_eq!(c.cmd("touch n 100\r\n"), "TOUCHED\r\n");
    c.cmd("mn\r\n"); // meta: counted whatever this build answers
    assert!(c.cmd("version\r\n").starts_with("VERSION"));

    let m = c.stats("latency");
    check_shape(&m, "get", n as u64);
    check_shape(&m, "set", n as u64 + 1);
    check_shape(&m, "delete", 2);
    check_shape(&m, "incr_decr", 2);
    check_shape(&m, "touch", 1);
    check_shape(&m, "meta", 1);
    // version, and the `stats` with which Server::start knew its server.
    check_shape(&m, "other", 2);
    assert_eq!(m.len(), 7 * 6, "{m:?}");

    // At least one full interval (a line per kind) is in the log before the
    // reset, so the log's totals below show it ignores `stats reset`.
    let deadline = Instant::now() + Duration::from_secs(10);
    let intervals_in = |p: &Path| std::fs::read_to_string(p).unwrap_or_default().matches("Tag=").count();
    while intervals_in(&log) < 7 {
        assert!(Instant::now() < deadline, "no full interval in the latency log after 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.cmd("stats reset\r\n"), "RESET\r\n");
    let m = c.stats("latency");
    check_shape(&m, "get", 0);
    check_shape(&m, "set", 0);
    check_shape(&m, "other", 1); // the `stats reset` itself, timed after the reset
    assert_eq!(c.cmd("get key1\r\n"), "VALUE key1 0 5\r\n");
    c.bytes(7);
    assert_eq!(c.line(), "END\r\n");
    check_shape(&c.stats("latency"), "get", 1);
    drop(c);
    assert!(s.stop().success());

    // The interval log: the standard header, then tagged compressed histograms.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("#[Histogram log format version 1.3]"), "{text}");
    assert!(
        text.contains("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"),
        "{text}"
    );
    let mut saw = (false, false);
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut last_start: HashMap<String, Duration> = HashMap::new();
    let mut intervals = 0;
    for e in IntervalLogIterator::new(text.as_bytes()) {
        match e.unwrap_or_else(|e| panic!("interval log does not parse: {e:?}\n{text}")) {
            LogEntry::StartTime(_) => saw.0 = true,
            LogEntry::BaseTime(_) => saw.1 = true,
            LogEntry::Interval(h) => {
                intervals += 1;
                let tag = h.tag().expect("every interval is tagged").as_str().to_string();
                assert!(
                    ["get", "set", "delete", "incr_decr", "touch", "meta", "other"].contains(&tag.as_str()),
                    "tag {tag}"
                );
                assert!(h.duration() > Duration::ZERO && h.duration() < Duration::from_secs(5), "{:?}", h.duration());
                if let Some(prev) = last_start.insert(tag.clone(), h.start_timestamp()) {
                    assert!(h.start_timestamp() > prev, "{tag}: intervals out of order");
                }
                let bytes = base64_decode(h.encoded_histogram());
                let hist: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).expect("histogram decodes");
                if !hist.is_empty() {
                    assert!(hist.max() > 0 && hist.max() < 1_000_000_000, "{tag}: max {} ns", hist.max());
                    // Interval_Max is in milliseconds (the Java writer's default ratio).
                    let max_ms = hist.max() as f64 / 1e6;
                    assert!((h.max() - max_ms).abs() <= 0.001 + max_ms * 0.01, "{tag}: {} vs {max_ms}", h.max());
                }
                *counts.entry(tag).or_default() += hist.len();
            }
        }
    }
    assert!(saw.0 && saw.1, "StartTime and BaseTime headers:\n{text}");
    assert!(intervals >= 14, "at least two intervals of 7 kinds, got {intervals}:\n{text}");
    // The log is cumulative over the run, independent of `stats reset`.
    assert_eq!(counts["get"], n as u64 + 1, "{counts:?}");
    assert_eq!(counts["set"], n as u64 + 1, "{counts:?}");
    assert_eq!(counts["incr_decr"], 2, "{counts:?}");
    assert_eq!(counts["meta"], 1, "{counts:?}");
}

/// Standard base64 (the interval log's), decoded without another crate.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let b: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(b.len() * 3 / 4);
    for chunk in b.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn latency_log_flags_are_checked() {
    let out = Command::new(BIN)
        .args(["serve", "-p", &free_port().to_string(), "--hugepages", "off", "-m", "8"])
        .args(["--latency-log", "/nonexistent-dir/x.hlog"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: ") && err.contains("latency log"), "{err}");
    let out = Command::new(BIN)
        .args(["serve", "-p", &free_port().to_string(), "--latency-log-interval", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

// ---------------------------------------------------------------- logging

/// Start with stderr on a pipe we read; `journal` sets `$JOURNAL_STREAM` to
/// that pipe's device:inode, as systemd does for a stream it connects.
fn stderr_lines(args: &[&str], journal: bool) -> String {
    use std::os::unix::fs::MetadataExt;
    let (mut reader, writer) = std::io::pipe().unwrap();
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "-p", &port.to_string(), "-l", "127.0.0.1", "--hugepages", "off", "-t", "1", "-m", "8"])
        .args(args)
        .stdin(Stdio::null())
        .env_remove("JOURNAL_STREAM");
    if journal {
        let fd = std::os::fd::OwnedFd::from(writer.try_clone().unwrap());
        let meta = std::fs::File::from(fd).metadata().unwrap();
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    let mut child = cmd.stderr(writer).spawn().unwrap();
    // Ready when the port accepts; then stop it and read everything it said.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A reply proves the worker accepted the connection, and it logs the
    // accept (-vv) before it serves anything.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut c, b"version\r\n").unwrap();
    let mut reply = [0u8; 8];
    std::io::Read::read_exact(&mut c, &mut reply).unwrap();
    assert_eq!(&reply, b"VERSION ");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(wait_exit(&mut child).success());
    drop(cmd);
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn journald_gets_syslog_priorities_one_line_per_event() {
    let text = stderr_lines(&["-vv"], true);
    assert!(text.lines().any(|l| l.starts_with("<6>info: serving on 127.0.0.1:")), "{text:?}");
    assert!(
        text.lines().any(|l| l.starts_with("<7>debug: worker 0: new client connection from 127.0.0.1:")),
        "{text:?}"
    );
    assert!(text.lines().any(|l| l.starts_with("<6>info: SIGTERM received")), "{text:?}");
    assert!(text.lines().all(|l| l.starts_with('<')), "every line has a priority: {text:?}");
    assert!(!text.contains('\x1b'), "no colours: {text:?}");
}

#[test]
fn plain_stderr_has_level_words_and_verbosity_levels() {
    let text = stderr_lines(&["-v"], false);
    assert!(text.lines().any(|l| l.starts_with("info: serving on")), "{text:?}");
    assert!(!text.contains("debug:"), "-v does not print debug lines: {text:?}");
    assert!(!text.contains('\x1b') && !text.contains("<6>"), "{text:?}");
    let quiet = stderr_lines(&[], false);
    assert!(!quiet.contains("info:"), "no -v, no info lines: {quiet:?}");
}
