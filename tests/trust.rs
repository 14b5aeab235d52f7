//! The trust boundary on the host (issue 12): the side channels' token
//! handshake and its bounds, driven with raw TcpStreams (the handshake runs
//! before any verbs object, so this needs no RDMA device); the start-up
//! rules for listeners and token files; shm file modes, read-only replicas
//! and slot files a stranger cannot use. The same over real verbs, and the
//! per-slot memory regions, are the `vm_*` tests in tests/verbs.rs.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use logmemcached::auth::{self, AuthToken, Channel, Limits};
use logmemcached::replication::shm::{region_path, slot_dir, slot_path};

/// What the handler sends once a peer is in: stands for a slot, an rkey, a
/// QP number. No peer that failed the handshake may ever read it.
const SECRET: &[u8] = b"SLOT-7-RKEY-0x1234-QPN-0x11";

fn token(b: u8) -> AuthToken {
    AuthToken::new(&[b; 32]).unwrap()
}

/// A gated side channel whose handler counts admissions and sends SECRET.
fn gated(limits: Limits) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let admitted = Arc::new(AtomicUsize::new(0));
    let a = admitted.clone();
    auth::spawn(l, "test-side", Channel::Replication, Some(token(7)), limits, false, move |mut adm| {
        a.fetch_add(1, Ordering::SeqCst);
        adm.bounded().write_all(SECRET)?;
        adm.handshake_done();
        Ok(())
    })
    .unwrap();
    (addr, admitted)
}

/// A stream that keeps a copy of everything written to it.
struct Recorder<'a>(&'a TcpStream, Vec<u8>);
impl Read for Recorder<'_> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        (&mut &*self.0).read(b)
    }
}
impl Write for Recorder<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(b);
        (&mut &*self.0).write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything the server sends until it closes (bounded by a timeout).
fn drain(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn unauthenticated_wrong_token_and_replayed_peers_get_nothing() {
    let (addr, admitted) = gated(Limits::default());

    // A genuine client, recorded: it gets in and reads the secret.
    let s = TcpStream::connect(&addr).unwrap();
    let mut rec = Recorder(&s, Vec::new());
    auth::client_handshake(&mut rec, Channel::Replication, Some(&token(7))).unwrap();
    let transcript = rec.1.clone();
    let mut got = [0u8; SECRET.len()];
    (&s).read_exact(&mut got).unwrap();
    assert_eq!(&got, SECRET);
    assert_eq!(admitted.load(Ordering::SeqCst), 1);

    // Replayed: the very bytes of that client, on a new connection. The
    // server's nonce is fresh, so the recorded proof fails.
    let mut r = TcpStream::connect(&addr).unwrap();
    r.write_all(&transcript).unwrap();
    let back = drain(&mut r);
    assert!(!contains(&back, SECRET), "a replayed handshake got in");
    assert_eq!(back.last(), Some(&1), "the verdict is a refusal");

    // No token, a wrong token, the other channel, a memcached client, junk.
    let e = auth::client_handshake(&mut TcpStream::connect(&addr).unwrap(), Channel::Replication, None);
    assert!(e.unwrap_err().to_string().contains("requires a token"));
    let e = auth::client_handshake(&mut TcpStream::connect(&addr).unwrap(), Channel::Replication, Some(&token(8)));
    assert!(e.unwrap_err().to_string().contains("server's proof is wrong"));
    let e = auth::client_handshake(&mut TcpStream::connect(&addr).unwrap(), Channel::RdmaClient, Some(&token(7)));
    assert!(e.is_err());
    for junk in [&b"get foo\r\nget foo\r\nget foo\r\nget foo\r\nget foo\r\n"[..], &[0u8; 200][..], &b"LMRP\x02"[..]] {
        let mut j = TcpStream::connect(&addr).unwrap();
        j.write_all(junk).unwrap();
        let _ = j.shutdown(std::net::Shutdown::Write);
        assert!(!contains(&drain(&mut j), SECRET));
    }
    // A wrong-token peer that proves anyway (it cannot check our proof,
    // but sends one of its own): refused, nothing more.
    let mut w = TcpStream::connect(&addr).unwrap();
    let mut hello = transcript[..auth::HELLO_LEN].to_vec();
    hello[auth::HELLO_LEN - 1] ^= 0xff; // another nonce
    w.write_all(&hello).unwrap();
    let mut ch = vec![0u8; auth::CHALLENGE_LEN];
    w.read_exact(&mut ch).unwrap();
    w.write_all(&[0x5a; auth::PROOF_LEN]).unwrap();
    let back = drain(&mut w);
    assert_eq!(back, [1], "only the refusal comes back");
    assert_eq!(admitted.load(Ordering::SeqCst), 1, "no failed peer reached the handler");
}

#[test]
fn a_hundred_bogus_hellos_do_not_keep_a_real_peer_out() {
    let (addr, admitted) = gated(Limits::default());
    let bogus: Vec<std::thread::JoinHandle<()>> = (0..100u8)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                // Half without a token, half with a wrong one.
                let t = (i % 2 == 1).then(|| token(100 + i));
                assert!(auth::client_handshake(&mut s, Channel::Replication, t.as_ref()).is_err());
            })
        })
        .collect();
    for b in bogus {
        b.join().unwrap();
    }
    let t0 = Instant::now();
    let mut s = TcpStream::connect(&addr).unwrap();
    auth::client_handshake(&mut s, Channel::Replication, Some(&token(7))).unwrap();
    let mut got = [0u8; SECRET.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, SECRET);
    assert!(t0.elapsed() < Duration::from_secs(2), "the real peer waited {:?}", t0.elapsed());
    assert_eq!(admitted.load(Ordering::SeqCst), 1);
}

#[test]
fn squatters_are_bounded_in_number_and_time() {
    let limits =
        Limits { max_handshakes: 4, io_timeout: Duration::from_millis(300), deadline: Duration::from_millis(600) };
    let (addr, admitted) = gated(limits);
    // Four idle connections hold every handshake place...
    let mut squatters: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    // ...one trickling a byte at a time is held to the deadline too.
    let mut trickle = TcpStream::connect(&addr).unwrap();
    let t0 = Instant::now();
    // The fifth (and sixth) is closed on accept, without a byte.
    assert!(drain(&mut trickle).is_empty());
    assert!(t0.elapsed() < Duration::from_millis(500), "not dropped at once: {:?}", t0.elapsed());
    // Every squatter is dropped by the deadline, with nothing sent to it.
    for s in &mut squatters {
        let _ = s.write_all(b"LM");
        assert!(drain(s).is_empty());
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "squatters were held {:?}", t0.elapsed());
    // And then a real peer gets in (no sleep: the places are free once the
    // squatters' connections are closed, which drain saw).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(&addr).unwrap();
        if auth::client_handshake(&mut s, Channel::Replication, Some(&token(7))).is_ok() {
            // The handler counts before it sends: once read, it has counted.
            let mut got = [0u8; SECRET.len()];
            s.read_exact(&mut got).unwrap();
            assert_eq!(&got, SECRET);
            break;
        }
        assert!(Instant::now() < deadline, "never let in after the squatters left");
    }
    assert_eq!(admitted.load(Ordering::SeqCst), 1);
}

/// Run the binary with `args` until it exits (at most 10 s): exit success
/// and its stderr.
fn run(args: &[&str]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logmemcached"))
        .args(["serve", "--hugepages", "off", "-t", "1", "-m", "4", "-p", &free_port().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = c.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let ok = loop {
        if let Some(st) = c.try_wait().unwrap() {
            break st.success();
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (ok, reader.join().unwrap())
}

fn write_token(name: &str, body: &[u8], mode: u32) -> String {
    let p = std::env::temp_dir().join(format!("lmc-trust-{}-{name}", std::process::id()));
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn listeners_beyond_loopback_need_a_token_or_insecure() {
    let port = free_port().to_string();
    for (flag, val) in
        [("--rdma-listen", format!("0.0.0.0:{port}")), ("--replication-listen", format!("rdma://0.0.0.0:{port}"))]
    {
        let (ok, err) = run(&[flag, &val]);
        assert!(!ok, "{flag} {val} started without a token");
        assert!(
            err.contains("beyond loopback") && err.contains("--auth-token-file") && err.contains("--insecure"),
            "{err}"
        );
        // --insecure lets it past the rule (and says so); on this host the
        // RDMA device is what stops it next, if there is none.
        let (_, err) = run(&[flag, &val, "--insecure"]);
        assert!(err.contains("--insecure given") && !err.contains("beyond loopback"), "{err}");
    }
    // A token file that others can read is refused, as are a short and an
    // empty one; the message never shows the token.
    let open = write_token("open", b"0123456789abcdef0123456789abcdef", 0o644);
    let (ok, err) = run(&["--auth-token-file", &open]);
    assert!(!ok && err.contains("chmod 600"), "{err}");
    assert!(!err.contains("0123456789abcdef"), "the token leaked: {err}");
    let short = write_token("short", b"hunter2", 0o600);
    let (ok, err) = run(&["--auth-token-file", &short]);
    assert!(!ok && err.contains("at least 16") && !err.contains("hunter2"), "{err}");
    let empty = write_token("empty", b"", 0o600);
    assert!(!run(&["--auth-token-file", &empty]).0);
    for p in [open, short, empty] {
        let _ = std::fs::remove_file(p);
    }
    // Loopback needs no token, and a good token file starts a server.
    let good = token_file();
    let s = Server::start(&["--auth-token-file", &good]);
    assert!(s.connect().cmd("version\r\n").starts_with("VERSION"));
}

fn shm(tag: &str) -> String {
    format!("tr{}-{tag}", std::process::id())
}

/// The lines of /proc/PID/maps that map `path`.
fn maps_of(pid: u32, path: &std::path::Path) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let p = path.to_string_lossy();
    maps.lines().filter(|l| l.ends_with(&*p)).map(str::to_string).collect()
}

/// Wait until `f` holds (a polled condition; panics after 15 s).
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shm_files_are_private_and_replicas_map_the_log_read_only() {
    let name = shm("modes");
    let p = Server::start(&["-m", "8", "--replication-listen", &format!("shm://{name}")]);
    let region = region_path(&name, false);
    assert_eq!(std::fs::metadata(&region).unwrap().mode() & 0o7777, 0o600, "region file");
    assert_eq!(std::fs::metadata(slot_dir(&name)).unwrap().mode() & 0o7777, 0o700, "slot directory");
    let r = Server::start(&["-m", "8", "--replica-of", &format!("shm://{name}")]);
    let mut pc = p.connect();
    assert_eq!(pc.cmd("set k 0 0 1\r\nx\r\n"), "STORED\r\n");
    let mut rc = r.connect();
    until("the replica to show up", || pc.stats("replication")["replicas"] == "1");
    until("the replica to apply", || rc.gets("k").is_some());
    // The replica maps the region, and only read-only (r--s), nothing writable.
    let m = maps_of(r.pid(), &region);
    assert!(!m.is_empty(), "the replica does not map {}", region.display());
    for l in &m {
        let perms = l.split_whitespace().nth(1).unwrap();
        assert!(perms.starts_with("r-") && !perms.contains('w'), "writable mapping of the log: {l}");
    }
    // Its progress goes to a slot file of its own: 0600, ours, mapped rw by it alone.
    let slot = slot_path(&name, 0);
    let md = std::fs::metadata(&slot).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert_eq!(md.uid(), nix::unistd::geteuid().as_raw());
    assert!(maps_of(r.pid(), &slot).iter().all(|l| l.contains("rw-s")));
    assert!(maps_of(p.pid(), &slot).iter().all(|l| l.contains("r--s")), "the primary maps slot files read-only");
    assert!(pc.stats("replication").keys().any(|k| k == "replica64"), "shm slot 0 is listed as replica64");
}

#[test]
fn shm_group_shares_the_files_with_one_group() {
    let name = shm("group");
    let gid = nix::unistd::getegid().as_raw().to_string();
    let _p = Server::start(&["-m", "8", "--replication-listen", &format!("shm://{name}"), "--shm-group", &gid]);
    let md = std::fs::metadata(region_path(&name, false)).unwrap();
    assert_eq!((md.mode() & 0o7777, md.gid().to_string()), (0o640, gid.clone()));
    let md = std::fs::metadata(slot_dir(&name)).unwrap();
    assert_eq!((md.mode() & 0o7777, md.gid().to_string()), (0o1770, gid));
}

/// Root can make a file owned by someone else, as a local attacker's own.
fn as_root() -> bool {
    peer("root (to make files another user owns)", nix::unistd::geteuid().is_root())
}

/// A slot file: applied, epoch, updated, id, caught up, the log's incarnation.
fn slot_bytes(applied: u64, epoch: u64, id: u64, incarnation: u64) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let mut b = vec![0u8; 4096];
    for (i, v) in [applied, epoch, now, id, now, incarnation].into_iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    b
}

#[test]
fn a_strangers_slot_file_neither_fences_nor_counts() {
    if !as_root() {
        return;
    }
    let name = shm("stranger");
    let p = Server::start(&[
        "-m",
        "8",
        "--replication-listen",
        &format!("shm://{name}"),
        "--sync-replicas",
        "1",
        "--sync-timeout",
        "50",
    ]);
    let mut pc = p.connect();
    let epoch: u64 = pc.stats("replication")["epoch"].parse().unwrap();
    // A stranger's file: a higher epoch (would fence) and everything applied
    // (would count for --sync-replicas), owned by nobody.
    let region = std::fs::read(region_path(&name, false)).unwrap();
    let incarnation = u64::from_le_bytes(region[80..88].try_into().unwrap());
    let evil = slot_path(&name, 5);
    std::fs::write(&evil, slot_bytes(u64::MAX / 2, epoch + 100, 0xbad, incarnation)).unwrap();
    std::os::unix::fs::chown(&evil, Some(65534), Some(65534)).unwrap();
    // Ours, but left by a replica of another log (a previous primary of
    // this name): the same, and it must not count either.
    let old = slot_path(&name, 4);
    std::fs::write(&old, slot_bytes(u64::MAX / 2, epoch + 100, 0x01d, incarnation ^ 1)).unwrap();
    // A file of ours beside them, to know when the primary has looked.
    let ours = slot_path(&name, 6);
    std::fs::write(&ours, slot_bytes(0, epoch, 0x600d, incarnation)).unwrap();
    until("the primary to see our slot file", || pc.stats("replication").contains_key("replica70"));
    let st = pc.stats("replication");
    assert_eq!(st["role"], "primary", "{st:?}");
    assert!(!st.contains_key("replica69"), "the stranger's file is listed: {st:?}");
    assert!(!st.contains_key("replica68"), "another log's replica is listed: {st:?}");
    let reply = pc.cmd("set k 0 0 1\r\nx\r\n");
    assert!(reply.contains("not confirmed"), "a stranger's slot confirmed a write: {reply}");
    assert_eq!(pc.stats("replication")["role"], "primary", "fenced by a stranger");
}

#[test]
fn a_replica_refuses_a_region_file_someone_else_planted() {
    if !as_root() {
        return;
    }
    let name = shm("planted");
    let region = region_path(&name, false);
    std::fs::write(&region, vec![0u8; 8 << 20]).unwrap();
    std::os::unix::fs::chown(&region, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&region, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = Server::start(&["-m", "8", "--replica-of", &format!("shm://{name}")]);
    let mut rc = r.connect();
    let last = Arc::new(Mutex::new(String::new()));
    until("the replica to refuse the planted file", || {
        let e = rc.stats("replication").get("last_error").cloned().unwrap_or_default();
        *last.lock().unwrap() = e.clone();
        e.contains("refusing") && e.contains("uid 65534")
    });
    assert_eq!(rc.stats("replication")["connected"], "0");
    let _ = std::fs::remove_file(&region);
}
