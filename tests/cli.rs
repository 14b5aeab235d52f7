//! memcached 1.6's command line: its syntaxes, its refusals (compared with
//! Debian's memcached where it is installed), and the flags that do
//! something here: -d, -P, -u, -s/-a, several -l, -k, -o, -U.
//!
//! Servers are started with `-d`, which returns once the daemon accepts
//! (or has failed), so no test waits on a guess; each is stopped by the pid
//! its `-P` file holds.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_logmemcached");

/// A fresh directory, removed when dropped; `owner` may chown it.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating a temp dir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog).args(args).stdin(Stdio::null()).output().expect("running the command")
}

/// Run `logmemcached -d ...` with stderr in a file: under `-v` (or with a
/// file as stderr) the daemon keeps its stderr, so a pipe would never close.
fn daemonize(args: &[&str], stderr: &Path) -> Output {
    let f = std::fs::File::create(stderr).expect("creating the stderr file");
    let status = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .status()
        .expect("running logmemcached -d");
    Output { status, stdout: Vec::new(), stderr: std::fs::read(stderr).unwrap_or_default() }
}

/// A server started with `-d -P FILE`; SIGTERMed by that pid when dropped.
struct Daemon {
    pid: i32,
    stderr: String,
}

impl Daemon {
    /// `args` without `-d`/`-P`; panics unless it started.
    fn start(pidfile: &Path, args: &[&str]) -> Daemon {
        let out = Self::try_start(pidfile, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "logmemcached -d {args:?}: {:?}\n{stderr}", out.status);
        let pid = std::fs::read_to_string(pidfile).expect("the pidfile, written before -d returns");
        Daemon { pid: pid.trim().parse().expect("a pid in the pidfile"), stderr }
    }

    fn try_start(pidfile: &Path, args: &[&str]) -> Output {
        let p = pidfile.to_str().unwrap();
        let mut all = vec!["-d", "-P", p, "--hugepages", "off"];
        all.extend_from_slice(args);
        daemonize(&all, &pidfile.with_extension("stderr"))
    }

    fn status_field(&self, name: &str) -> String {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("the daemon's /proc status");
        s.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).map(|v| v.trim().to_string()).unwrap_or_default()
    }

    fn alive(&self) -> bool {
        // A zombie is gone for our purposes (its parent is init here).
        Path::new(&format!("/proc/{}", self.pid)).exists() && !self.status_field("State").starts_with('Z')
    }

    /// SIGTERM and wait until the process is gone.
    fn stop(&mut self) {
        if self.pid <= 0 {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.alive() {
            assert!(Instant::now() < deadline, "daemon {} did not stop within 10 s of SIGTERM", self.pid);
            std::thread::sleep(Duration::from_millis(20));
        }
        self.pid = 0;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.pid > 0 {
            let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        }
    }
}

/// `stats settings` from a stream.
fn settings<S: Read + Write>(mut s: S) -> std::collections::HashMap<String, String> {
    s.write_all(b"stats settings\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut out = std::collections::HashMap::new();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "connection closed in stats settings");
        if line == "END\r\n" {
            return out;
        }
        let mut w = line.trim_end().splitn(3, ' ');
        if let (Some("STAT"), Some(k), Some(v)) = (w.next(), w.next(), w.next()) {
            out.insert(k.to_string(), v.to_string());
        }
    }
}

fn tcp(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn set_get<S: Read + Write>(mut s: S) -> String {
    s.write_all(b"set k 0 0 1\r\nv\r\nget k\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"END\r\n") {
        let n = s.read(&mut buf).expect("reading the reply");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

/// Every syntax memcached's getopt_long takes, with and without `serve`,
/// sets the same settings.
#[test]
fn memcached_syntaxes_set_the_same_settings() {
    let t = TempDir::new("syntax");
    let forms: &[&[&str]] = &[
        &["-p", "{P}", "-m", "16", "-t", "2", "-v", "-v", "-c", "100"],
        &["serve", "-p{P}", "-m16", "-t2", "-vv", "-c100"],
        &["--port={P}", "--memory-limit=16", "--threads", "2", "--verbose", "--verbose", "--conn-limit=100"],
        &["serve", "-vvp{P}", "--memory-l", "16", "--thr=2", "--conn", "100"],
    ];
    for (i, form) in forms.iter().enumerate() {
        let port = free_port();
        let args: Vec<String> = form.iter().map(|a| a.replace("{P}", &port.to_string())).collect();
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        // `serve` goes first, before -d.
        let serve = args.first() == Some(&"serve");
        if serve {
            args.remove(0);
        }
        let pidfile = t.0.join(format!("{i}.pid"));
        let mut all: Vec<&str> = Vec::new();
        if serve {
            all.push("serve");
        }
        let p = pidfile.to_str().unwrap();
        all.extend(["-d", "-P", p, "--hugepages", "off"]);
        all.extend(args);
        let out = daemonize(&all, &t.0.join(format!("{i}.stderr")));
        assert!(out.status.success(), "{all:?}: {}", String::from_utf8_lossy(&out.stderr));
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let mut d = Daemon { pid, stderr: String::new() };
        let s = settings(tcp(port));
        let want = [
            ("tcpport", port.to_string()),
            ("maxbytes", (16 << 20).to_string()),
            ("num_threads", "2".into()),
            ("verbosity", "2".into()),
            ("maxconns", "100".into()),
        ];
        for (k, v) in want {
            assert_eq!(s.get(k), Some(&v), "{all:?}: stats settings {k}");
        }
        d.stop();
        assert!(!pidfile.exists(), "{all:?}: the pidfile outlived the server");
        // -d -v keeps a file as stderr: the daemon's log went there.
        let log = std::fs::read_to_string(t.0.join(format!("{i}.stderr"))).unwrap();
        assert!(log.contains(&format!("serving on 127.0.0.1:{port}")), "{all:?}: stderr file {log:?}");
    }
}

/// A bad command line fails with memcached's words (glibc's for getopt)
/// and memcached's exit status, checked against Debian's memcached.
#[test]
fn bad_command_lines_fail_as_memcached_does() {
    let have_memcached = common::peer("memcached", common::have("memcached", "-V"));
    let cases: &[&[&str]] = &[
        &["-x"],
        &["--bogus"],
        &["-p"],
        &["-o", "bogus"],
        &["-o", "idle_timeout=5,bogus=1"],
        &["-t", "0"],
        &["-c", "0"],
        &["-R", "0"],
        &["-f", "1"],
        &["-B", "foo"],
        &["-I", "512"],
        &["-I", "64m", "-m", "64"],
        &["-p", "70000"],
    ];
    for args in cases {
        let ours = run(BIN, args);
        let err = String::from_utf8_lossy(&ours.stderr);
        assert!(!ours.status.success(), "{args:?} was accepted");
        if !have_memcached {
            continue;
        }
        let mut theirs_args = vec!["-u", "memcache", "-U", "0"];
        theirs_args.extend_from_slice(args);
        let theirs = run("memcached", &theirs_args);
        let their_err = String::from_utf8_lossy(&theirs.stderr);
        assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}: ours {err:?}, memcached's {their_err:?}");
        let first = their_err.lines().next().unwrap_or_default().replace("memcached:", "logmemcached:");
        assert!(!first.is_empty() && err.contains(&first), "{args:?}: memcached says {their_err:?}, we say {err:?}");
    }
}

/// What is refused here, with the reason and memcached's EX_USAGE.
#[test]
fn unsupported_flags_are_refused_with_the_reason() {
    let cases: &[(&[&str], &str)] = &[
        (&["-U", "11211"], "UDP is not supported"),
        (&["-S"], "SASL"),
        (&["-Z"], "TLS"),
        (&["-p", "0"], "nothing would be served"),
        (&["-o", "proxy_config=x"], "proxy"),
        (&["-Y", "f", "-B", "binary"], "BINARY protocol"),
    ];
    for (args, why) in cases {
        let out = run(BIN, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // Version, help and license print and succeed.
    for a in ["-V", "-h", "-i", "--help"] {
        let out = run(BIN, &[a]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{a}: {out:?}");
    }
    let help = String::from_utf8(run(BIN, &["serve", "--help"]).stdout).unwrap();
    for needle in ["--replication-listen", "--hugepages", "-u, --user", "-o, --extended", "idle_timeout"] {
        assert!(help.contains(needle), "serve --help lacks {needle}");
    }
}

fn uid_of(user: &str) -> Option<String> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn is_root() -> bool {
    uid_of("root").is_some() && Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n")
}

/// `-d -P -u memcache -s PATH -a 660`: the daemon detaches (another
/// session, not our child), writes its pid, runs as memcache, serves the
/// UNIX socket with that mode and no TCP; SIGTERM removes pidfile and socket.
#[test]
fn daemon_pidfile_user_and_unix_socket() {
    let Some(uid) = uid_of("memcache") else {
        assert!(!common::peers_required(), "the memcache user (Debian's memcached package) is required");
        eprintln!("SKIPPED: no memcache user");
        return;
    };
    if !common::peer("root (to test -u)", is_root()) {
        return;
    }
    let t = TempDir::new("daemon");
    // memcached's order: the pidfile and the socket are made as the user.
    assert!(Command::new("chown").args(["memcache", t.0.to_str().unwrap()]).status().unwrap().success());
    let pidfile = t.0.join("lm.pid");
    let sock = t.0.join("lm.sock");
    let port = free_port();
    let p = port.to_string();
    let mut d =
        Daemon::start(&pidfile, &["-u", "memcache", "-s", sock.to_str().unwrap(), "-a", "660", "-p", &p, "-m", "8"]);
    let uids = d.status_field("Uid");
    assert!(uids.split_whitespace().all(|u| u == uid), "uids {uids:?}, want all {uid}");
    assert!(d.status_field("Gid").split_whitespace().all(|g| g != "0"), "still in group root");
    assert_ne!(d.status_field("PPid"), std::process::id().to_string(), "not detached");
    let sid = std::fs::read_to_string(format!("/proc/{}/stat", d.pid)).unwrap();
    let ours = std::fs::read_to_string("/proc/self/stat").unwrap();
    let field = |s: &str, i| s.rsplit_once(')').unwrap().1.split_whitespace().nth(i).unwrap().to_string();
    assert_ne!(field(&sid, 3), field(&ours, 3), "the daemon is still in our session");
    let m = std::fs::metadata(&sock).expect("the -s socket");
    assert_eq!(m.permissions().mode() & 0o777, 0o660, "the -a mask");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&m).to_string(), uid, "the socket is made after -u");
    let u = UnixStream::connect(&sock).expect("connecting to the -s socket");
    u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(set_get(&u), "STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "-s must disable TCP, as in memcached");
    d.stop();
    assert!(!pidfile.exists() && !sock.exists(), "pidfile or socket left behind");
}

/// `-d` without `-v`: a daemon that fails to start makes the command fail,
/// with its error (here: the port is taken).
#[test]
fn daemon_failure_is_the_commands_failure() {
    let t = TempDir::new("dfail");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Daemon::try_start(&t.0.join("x.pid"), &["-p", &port, "-m", "8"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is another server using this port"), "{out:?}");
    assert!(!t.0.join("x.pid").exists());
}

/// `-l` as memcached takes it: a comma list, repeated, ADDR:PORT.
#[test]
fn several_listen_addresses() {
    let t = TempDir::new("listen");
    let (p1, p2) = (free_port(), free_port());
    let extra = format!("127.0.0.1:{p2}");
    let mut d = Daemon::start(&t.0.join("l.pid"), &["-p", &p1.to_string(), "-l", "127.0.0.1,127.0.0.2", "-l", &extra]);
    assert_eq!(set_get(tcp(p1)), "STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n");
    let mut second = TcpStream::connect(("127.0.0.2", p1)).expect("-l 127.0.0.2");
    second.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    second.write_all(b"get k\r\n").unwrap();
    let mut third = tcp(p2);
    third.write_all(b"get k\r\n").unwrap();
    for mut s in [second, third] {
        let mut b = [0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"END\r\n") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&b[..n]);
        }
        assert_eq!(got, b"VALUE k 0 1\r\nv\r\nEND\r\n");
    }
    assert_eq!(
        settings(tcp(p1)).get("inter").map(String::as_str),
        Some(format!("127.0.0.1,127.0.0.2,{extra}").as_str())
    );
    d.stop();
}

/// `-k` locks the log (root may); dropping to a user whose RLIMIT_MEMLOCK
/// is finite is refused at start, with the limit and the fix.
#[test]
fn lock_memory() {
    if !common::peer("root (to test -k)", is_root()) {
        return;
    }
    let t = TempDir::new("lock");
    let port = free_port().to_string();
    let mut d = Daemon::start(&t.0.join("k.pid"), &["-k", "-p", &port, "-m", "8"]);
    let locked: u64 = d.status_field("VmLck").trim_end_matches(" kB").trim().parse().unwrap();
    assert!(locked >= 8 << 10, "VmLck {locked} kB: the 8 MiB log is not locked");
    d.stop();
    if uid_of("memcache").is_some() {
        let script = format!("ulimit -l 64 && exec {BIN} -k -u memcache -p {port} -m 8 --hugepages off");
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert_eq!(out.status.code(), Some(71), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("RLIMIT_MEMLOCK"), "{out:?}");
    }
}

/// `-o`: the options with a meaning are taken, the others are accepted
/// with a notice that says why they change nothing; the flags that have no
/// effect on a log are accepted.
#[test]
fn extended_and_no_effect_flags_are_accepted() {
    let t = TempDir::new("ext");
    let port = free_port().to_string();
    let mut d = Daemon::start(
        &t.0.join("o.pid"),
        &[
            "-p",
            &port,
            "-m",
            "8",
            "-o",
            "hash_algorithm=murmur3,modern,slab_reassign",
            "-o",
            "lru_crawler",
            "-U",
            "0",
            "-n",
            "48",
            "-f",
            "1.25",
            "-L",
            "-R",
            "4",
            "-b",
            "16",
            "-B",
            "auto",
            "-N",
            "1",
        ],
    );
    for needle in ["-o hash_algorithm", "SipHash", "-o slab_reassign", "-o lru_crawler"] {
        assert!(d.stderr.contains(needle), "no notice {needle:?} in {:?}", d.stderr);
    }
    assert_eq!(set_get(tcp(port.parse().unwrap())), "STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n");
    d.stop();
}

/// Debian's `/etc/memcached.conf`, copied and given a free port, its paths
/// in a temp dir and its `# -v` line uncommented, run through Debian's own
/// wrapper (memcached) and then ours (logmemcached): the same `stats
/// settings`; ours also writes the pidfile, runs as `-u memcache`, and
/// appends its log to `logfile`.
#[test]
fn debian_memcached_conf_through_our_wrapper() {
    let conf = ["/etc/memcached.conf", "/usr/share/memcached/memcached.conf.default"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let debian_wrapper = "/usr/share/memcached/scripts/systemd-memcached-wrapper";
    let present = conf.is_some() && Path::new(debian_wrapper).exists() && common::have("perl", "-v");
    if !common::peer("Debian's memcached package (its conf and wrapper) and perl", present) {
        return;
    }
    if !common::peer("root (the wrapper runs as root, -u memcache)", is_root()) {
        return;
    }
    let text = std::fs::read_to_string(conf.unwrap()).unwrap();
    assert!(text.contains("\n-u memcache") && text.contains("\nlogfile ") && text.contains("\n-P "), "{text}");
    let t = TempDir::new("debian");
    let port = free_port();
    let (log, pid) = (t.0.join("log/memcached.log"), t.0.join("run/memcached.pid"));
    std::fs::create_dir_all(t.0.join("log")).unwrap();
    let mine: String = text
        .lines()
        .map(|l| match l.split_whitespace().next() {
            Some("logfile") => format!("logfile {}", log.display()),
            Some("-P") => format!("-P {}", pid.display()),
            Some("-p") => format!("-p {port}"),
            _ if l.trim() == "# -v" => "-v".to_string(),
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect();
    let conf = t.0.join("memcached.conf");
    std::fs::write(&conf, &mine).unwrap();

    let start = |prog: &str, bin: &str| {
        let mut c = Command::new(prog);
        c.arg(&conf).env("LOGMEMCACHED_BIN", bin).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = c.spawn().expect("starting a wrapper");
        let deadline = Instant::now() + Duration::from_secs(20);
        let s = loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                break s;
            }
            assert!(child.try_wait().unwrap().is_none(), "{prog} exited before serving");
            assert!(Instant::now() < deadline, "{prog}: nothing serves port {port}");
            std::thread::sleep(Duration::from_millis(20));
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (child, s)
    };
    let stop = |mut child: std::process::Child| {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // memcached writes its pidfile as memcache: its directory must be that user's.
    std::fs::create_dir_all(t.0.join("run")).unwrap();
    assert!(Command::new("chown")
        .args(["memcache:memcache", t.0.join("run").to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let (child, s) = start(debian_wrapper, "");
    let theirs = settings(s);
    stop(child);
    let _ = std::fs::remove_file(&pid);
    std::fs::remove_dir(t.0.join("run")).unwrap();

    let ours_wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/logmemcached-memcached-wrapper");
    let (child, s) = start(ours_wrapper.to_str().unwrap(), BIN);
    let ours = settings(s);
    for k in [
        "maxbytes",
        "maxconns",
        "tcpport",
        "udpport",
        "inter",
        "verbosity",
        "num_threads",
        "item_size_max",
        "evictions",
        "cas_enabled",
        "shutdown_command",
        "flush_enabled",
        "binding_protocol",
        "auth_enabled_ascii",
        "domain_socket",
        "umask",
        "tcp_backlog",
    ] {
        assert_eq!(ours.get(k), theirs.get(k), "stats settings {k}: ours vs memcached's from the same conf");
    }
    assert_eq!(theirs.get("tcpport"), Some(&port.to_string()));
    // The wrapper execs: the child's pid is the server's.
    let written = std::fs::read_to_string(&pid).expect("the -P pidfile");
    assert_eq!(written.trim(), child.id().to_string());
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let uid = uid_of("memcache").unwrap();
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    assert!(uids.split_whitespace().all(|u| u == uid), "-u memcache: uids {uids:?}");
    stop(child);
    let logged = std::fs::read_to_string(&log).expect("the logfile");
    assert!(logged.contains("serving on 127.0.0.1:"), "logfile holds {logged:?}");
}

/// `-b`: the listen backlog the kernel reports for the socket (`ss`'s
/// Send-Q of a listening socket), and `-R` is accepted.
#[test]
fn listen_backlog() {
    if !common::peer("ss (iproute2)", common::have("ss", "-V")) {
        return;
    }
    let t = TempDir::new("backlog");
    let port = free_port();
    let mut d =
        Daemon::start(&t.0.join("b.pid"), &["-p", &port.to_string(), "-b", "7", "-R", "3", "-t", "1", "-m", "8"]);
    let out = run("ss", &["-ltnH", &format!("sport = :{port}")]);
    let text = String::from_utf8_lossy(&out.stdout);
    let backlogs: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert_eq!(backlogs, ["7"], "ss -ltn: {text}");
    assert_eq!(set_get(tcp(port)), "STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n", "with -R 3");
    d.stop();
}

/// One reply: a line, or VALUE lines through END.
fn reply(r: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            all.push_str("<closed>");
            return all;
        }
        all.push_str(&line);
        if !(line.starts_with("VALUE ") || all.starts_with("VALUE ")) || line == "END\r\n" {
            return all;
        }
        if line.starts_with("VALUE ") {
            let mut data = String::new();
            r.read_line(&mut data).unwrap();
            all.push_str(&data);
        }
    }
}

/// The replies to each request, sent one at a time on one connection.
fn session(port: u16, requests: &[&str]) -> Vec<String> {
    let s = tcp(port);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    requests
        .iter()
        .map(|q| {
            w.write_all(q.as_bytes()).unwrap();
            reply(&mut r)
        })
        .collect()
}

/// `-Y FILE`: memcached's ascii authentication, reply for reply the same as
/// Debian's memcached given the same file.
#[test]
fn ascii_auth_as_memcached() {
    let t = TempDir::new("auth");
    let file = t.0.join("auth");
    std::fs::write(&file, "alice:secret\nbob:pw2\n").unwrap();
    let f = file.to_str().unwrap();
    let sessions: &[&[&str]] = &[
        &["get a\r\n", "version\r\n", "set a 0 0 1\r\nv\r\n", "set auth x 0 11\r\nalice wrong\r\n", "get a\r\n"],
        &["set auth x 0 12\r\nalice secret\r\n", "set a 0 0 1\r\nv\r\n", "get a\r\n", "delete a\r\n"],
        &["set auth x 0 9\r\nbob   pw2\r\n", "get a\r\n"],
    ];
    let port = free_port();
    let mut d = Daemon::start(&t.0.join("y.pid"), &["-p", &port.to_string(), "-m", "8", "-Y", f]);
    let ours: Vec<Vec<String>> = sessions.iter().map(|s| session(port, s)).collect();
    d.stop();
    assert_eq!(ours[0][0], "CLIENT_ERROR unauthenticated\r\n");
    assert_eq!(ours[1][..3], ["STORED\r\n", "STORED\r\n", "VALUE a 0 1\r\nv\r\nEND\r\n"]);
    if !common::peer("memcached", common::have("memcached", "-V")) {
        return;
    }
    let port = free_port();
    let mut theirs = Command::new("memcached")
        .args(["-u", "memcache", "-U", "0", "-l", "127.0.0.1", "-p", &port.to_string(), "-Y", f])
        .stdin(Stdio::null())
        .spawn()
        .expect("starting memcached");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline && theirs.try_wait().unwrap().is_none(), "memcached did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let want: Vec<Vec<String>> = sessions.iter().map(|s| session(port, s)).collect();
    let _ = theirs.kill();
    let _ = theirs.wait();
    assert_eq!(ours, want, "ours, then memcached's");
}

/// `-B ascii`: a binary request is read as text (memcached answers it as
/// an unknown command); `-B binary`: text is not served.
#[test]
fn binding_protocol() {
    let t = TempDir::new("proto");
    let port = free_port();
    let mut d = Daemon::start(&t.0.join("b.pid"), &["-p", &port.to_string(), "-m", "8", "-B", "ascii"]);
    let mut s = tcp(port);
    let mut noop = [0u8; 24];
    noop[0] = 0x80;
    noop[1] = 0x0a;
    s.write_all(&noop).unwrap();
    s.write_all(b"\r\nversion\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    assert!(
        first.starts_with("ERROR") || first.starts_with("CLIENT_ERROR"),
        "a binary request under -B ascii: {first:?}"
    );
    d.stop();
    let port = free_port();
    let mut d = Daemon::start(&t.0.join("c.pid"), &["-p", &port.to_string(), "-m", "8", "-B", "binary"]);
    let mut s = tcp(port);
    // A whole binary header's worth: read as one, with a bad magic.
    s.write_all(b"version\r\nversion\r\nversion\r\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(!got.starts_with(b"VERSION"), "text served under -B binary: {:?}", String::from_utf8_lossy(&got));
    d.stop();
}

/// `-C`: CAS 0 shown, and every compare-and-swap fails, reply for reply as
/// Debian's memcached with `-C`.
#[test]
fn disable_cas_as_memcached() {
    let requests: &[&str] = &[
        "set a 0 0 1\r\nv\r\n",
        "gets a\r\n",
        "cas a 0 0 1 0\r\nw\r\n",
        "cas a 0 0 1 5\r\nx\r\n",
        "get a\r\n",
        "mg a c\r\n",
        "ms a 1 c\r\ny\r\n",
        "ms a 1 C5\r\nz\r\n",
        "cas zz 0 0 1 0\r\nw\r\n",
        "gets a\r\n",
    ];
    let t = TempDir::new("nocas");
    let port = free_port();
    let mut d = Daemon::start(&t.0.join("c.pid"), &["-p", &port.to_string(), "-m", "8", "-C"]);
    let ours = session(port, requests);
    let cas_line = settings(tcp(port)).get("cas_enabled").cloned();
    d.stop();
    assert_eq!(ours[1], "VALUE a 0 1 0\r\nv\r\nEND\r\n");
    assert_eq!(ours[2], "EXISTS\r\n");
    assert_eq!(cas_line.as_deref(), Some("no"));
    if !common::peer("memcached", common::have("memcached", "-V")) {
        return;
    }
    let port = free_port();
    let mut theirs = Command::new("memcached")
        .args(["-u", "memcache", "-U", "0", "-l", "127.0.0.1", "-p", &port.to_string(), "-C"])
        .stdin(Stdio::null())
        .spawn()
        .expect("starting memcached");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline && theirs.try_wait().unwrap().is_none(), "memcached did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let want = session(port, requests);
    let _ = theirs.kill();
    let _ = theirs.wait();
    assert_eq!(ours, want, "ours, then memcached's");
}
