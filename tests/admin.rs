//! The admin endpoint against the real binary: admin commands (`replica
//! promote`, `replica follow`) are refused on the data port and leave the
//! server's data and role intact, and work on the `--admin-socket` (created
//! with its mode, replaced when stale, removed at shutdown); memcached's own
//! switches (`shutdown` with `-A`, `flush_all` under `-F`) answer as Debian's
//! memcached does, byte for byte.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MEMCACHED: &str = "/usr/bin/memcached";

fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20)); // polling a condition
    }
}

#[test]
fn admin_commands_on_the_data_port_are_refused_and_data_and_role_stay_intact() {
    let name = format!("shm://t{}-admin", std::process::id());
    let (pa, ra) = (admin_socket_path("p"), admin_socket_path("r"));
    let p = Server::start(&["-m", "16", "--replication-listen", &name, "--admin-socket", &pa]);
    let r = Server::start(&["-m", "16", "--replica-of", &name, "--admin-socket", &ra]);
    let (mut pc, mut rc) = (p.connect(), r.connect());
    for i in 0..100 {
        assert_eq!(pc.cmd(&format!("set k{i} 0 0 2\r\nv{}\r\n", i % 10)), "STORED\r\n");
    }
    let head = pc.stats("replication")["head"].clone();
    wait_until("the replica to apply the primary's log", 30, || rc.stats("replication")["applied"] == head);
    let before = (pc.stats("replication"), rc.stats("replication"));

    // Each would change a role or the data: promote fences the primary,
    // follow makes the primary a replica of nothing (or of someone else).
    let follow_self = format!("replica follow {name}\r\n");
    for (primary_side, cmd) in [
        (true, "replica follow shm://doesnotexist\r\n"),
        (true, follow_self.as_str()),
        (true, "replica promote\r\n"),
        (false, "replica promote\r\n"),
        (false, "replica follow shm://doesnotexist\r\n"),
    ] {
        let reply = if primary_side { pc.cmd(cmd) } else { rc.cmd(cmd) };
        assert!(
            reply.starts_with("CLIENT_ERROR ") && reply.contains("admin") && reply.contains("--admin-socket"),
            "{cmd:?} -> {reply:?}"
        );
    }
    assert_eq!(pc.stats("")["admin_refused"], "3");
    assert_eq!(rc.stats("")["admin_refused"], "2");
    // Role and epoch as they were; the primary still takes writes, the replica still refuses them.
    let after = (pc.stats("replication"), rc.stats("replication"));
    for k in ["role", "epoch"] {
        assert_eq!(before.0[k], after.0[k], "primary {k}");
        assert_eq!(before.1[k], after.1[k], "replica {k}");
    }
    assert_eq!(after.0["role"], "primary");
    assert_eq!(after.1["role"], "replica");
    assert_eq!(pc.cmd("set after 0 0 1\r\nx\r\n"), "STORED\r\n");
    assert_eq!(rc.cmd("set z 0 0 1\r\nx\r\n"), "SERVER_ERROR read-only replica\r\n");
    // Every item still there, on both.
    let head = pc.stats("replication")["head"].clone();
    wait_until("the replica to apply the last write", 30, || rc.stats("replication")["applied"] == head);
    for i in 0..100 {
        let want = Some((format!("v{}", i % 10).into_bytes(), 0));
        assert_eq!(pc.gets(&format!("k{i}")).map(|x| (x.0, x.1)), want, "primary k{i}");
        assert_eq!(rc.gets(&format!("k{i}")).map(|x| (x.0, x.1)), want, "replica k{i}");
    }
    assert_eq!(pc.stats("")["curr_items"], "101");

    // The same commands work on the admin socket.
    let mut admin = Admin::connect(&ra);
    assert_eq!(admin.cmd("replica promote\r\n"), "OK\r\n");
    let st = rc.stats("replication");
    assert_eq!((st["role"].as_str(), st["epoch"].as_str()), ("primary", "2"), "{st:?}");
    assert_eq!(rc.cmd("set z 0 0 1\r\nx\r\n"), "STORED\r\n");
    // The admin socket speaks the rest of the protocol too, and is not counted as refused.
    assert_eq!(admin.cmd("get z\r\n"), "VALUE z 0 1\r\n");
    assert_eq!(rc.stats("")["admin_refused"], "2");
}

#[test]
fn the_admin_socket_has_its_mode_is_replaced_when_stale_and_goes_at_shutdown() {
    let path = admin_socket_path("mode");
    let mut s = Server::start(&["--admin-socket", &path]);
    let m = std::fs::symlink_metadata(&path).expect("the socket exists once the server serves");
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o7777, 0o600, "default mode");
    let st = s.connect().stats("settings");
    assert_eq!((st["admin_socket"].as_str(), st["admin_socket_mode"].as_str()), (path.as_str(), "0600"));
    assert!(Admin::connect(&path).cmd("version\r\n").starts_with("VERSION 1.6."));
    // Killed: the file stays behind, and the next server replaces it.
    s.kill9();
    assert!(std::fs::symlink_metadata(&path).is_ok(), "a killed server leaves its socket");
    let s = Server::start(&["--admin-socket", &path, "--admin-socket-mode", "0660"]);
    let m = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o660, "--admin-socket-mode");
    assert!(Admin::connect(&path).cmd("version\r\n").starts_with("VERSION "));
    assert!(s.stop().success());
    assert!(std::fs::symlink_metadata(&path).is_err(), "removed at shutdown");

    // A live server's socket, or a file that is not a socket, is never taken over.
    let live = Server::start(&["--admin-socket", &path]);
    let taken = Command::new(env!("CARGO_BIN_EXE_logmemcached"))
        .args(["serve", "-p", &free_port().to_string(), "--hugepages", "off", "--admin-socket", &path])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("another server"), "{taken:?}");
    assert!(Admin::connect(&path).cmd("version\r\n").starts_with("VERSION "), "the first server keeps it");
    drop(live);
    let file = admin_socket_path("plain");
    std::fs::write(&file, b"not a socket").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_logmemcached"))
        .args(["serve", "-p", &free_port().to_string(), "--hugepages", "off", "--admin-socket", &file])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"), "{out:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket", "left alone");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn the_admin_socket_may_flush_under_dash_f_and_shut_down_without_dash_a() {
    let path = admin_socket_path("sw");
    let mut s = Server::start(&["-F", "--admin-socket", &path]);
    let mut c = s.connect();
    assert_eq!(c.cmd("set k 0 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("flush_all\r\n"), "CLIENT_ERROR flush_all not allowed\r\n");
    assert_eq!(c.cmd("shutdown\r\n"), "ERROR: shutdown not enabled\r\n");
    assert!(c.gets("k").is_some());
    let mut admin = Admin::connect(&path);
    assert_eq!(admin.cmd("flush_all\r\n"), "OK\r\n");
    assert!(c.gets("k").is_none());
    assert_eq!(admin.cmd("shutdown\r\n"), "", "closed without a reply, as memcached's shutdown");
    wait_until("the server to exit", 10, || !s.alive());
    assert!(std::fs::symlink_metadata(&path).is_err(), "removed at shutdown");
}

// ------------------------------------------------ memcached's own switches

/// Send `req` on a new connection; everything received until `n` bytes came
/// or the server closed (then "<EOF>" is appended).
fn exchange(port: u16, req: &[u8], n: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while got.len() < n {
        match s.read(&mut b) {
            Ok(0) | Err(_) => {
                got.extend_from_slice(b"<EOF>");
                break;
            }
            Ok(k) => got.extend_from_slice(&b[..k]),
        }
    }
    got
}

fn bin(opcode: u8, extras: &[u8]) -> Vec<u8> {
    let mut r = vec![0x80, opcode, 0, 0, extras.len() as u8, 0, 0, 0];
    r.extend_from_slice(&(extras.len() as u32).to_be_bytes());
    r.extend_from_slice(&9u32.to_be_bytes());
    r.extend_from_slice(&[0; 8]);
    r.extend_from_slice(extras);
    r
}

/// The same request, the same reply from both, of `n` bytes.
fn same(mc: u16, lm: u16, req: &[u8], n: usize) -> Vec<u8> {
    let (a, b) = (exchange(mc, req, n), exchange(lm, req, n));
    assert_eq!(String::from_utf8_lossy(&b), String::from_utf8_lossy(&a), "request {:?}", String::from_utf8_lossy(req));
    a
}

#[test]
fn shutdown_and_flush_all_switches_answer_as_memcached_does() {
    if !peer("memcached (Debian's, for the differential check)", std::path::Path::new(MEMCACHED).exists()) {
        return;
    }
    // Without -A: shutdown is refused, whatever its arguments.
    let (mc, lm) = (Memcached::start_with(&["-t", "1"]), Server::start(&[]));
    let refused = b"ERROR: shutdown not enabled\r\n";
    for req in ["shutdown\r\n", "shutdown graceful\r\n", "shutdown nonsense\r\n"] {
        assert_eq!(same(mc.port, lm.port, req.as_bytes(), refused.len()), refused);
    }
    assert_eq!(same(mc.port, lm.port, b"flush_all\r\n", 4), b"OK\r\n", "flush_all works without -F");
    drop((mc, lm));

    // -F: flush_all refused (text: CLIENT_ERROR, silent with noreply; binary:
    // Auth failure, to the quiet variant too), data kept.
    let (mut mc, mut lm) = (Memcached::start_with(&["-t", "1", "-A", "-F"]), Server::start(&["-A", "-F"]));
    let set = b"set k 0 0 1\r\nv\r\n";
    same(mc.port, lm.port, set, 8);
    let text = b"flush_all\r\nflush_all 10\r\nflush_all noreply\r\nflush_all a b c d\r\nget k\r\n";
    let want = b"CLIENT_ERROR flush_all not allowed\r\nCLIENT_ERROR flush_all not allowed\r\nERROR\r\nVALUE k 0 1\r\nv\r\nEND\r\n";
    assert_eq!(same(mc.port, lm.port, text, want.len()), want);
    let binary = [bin(0x08, &[]), bin(0x18, &[]), bin(0x08, &5u32.to_be_bytes()), bin(0x0a, &[])].concat();
    let reply = same(mc.port, lm.port, &binary, 3 * (24 + 13) + 24);
    assert_eq!(u16::from_be_bytes([reply[6], reply[7]]), 0x20, "Auth failure");
    assert_eq!(same(mc.port, lm.port, b"get k\r\n", 20), b"VALUE k 0 1\r\nv\r\nEND\r\n");
    let st = lm.connect().stats("settings");
    assert_eq!((st["shutdown_command"].as_str(), st["flush_enabled"].as_str()), ("yes", "no"));

    // -A: a bad mode is refused; `shutdown` closes without a reply and the server stops.
    let bad = b"CLIENT_ERROR invalid shutdown mode\r\n";
    for req in ["shutdown nonsense\r\n", "shutdown graceful extra\r\n"] {
        assert_eq!(same(mc.port, lm.port, req.as_bytes(), bad.len()), bad);
    }
    assert_eq!(same(mc.port, lm.port, b"shutdown\r\n", 1), b"<EOF>");
    wait_until("memcached to exit", 10, || !mc.alive());
    wait_until("logmemcached to exit", 10, || !lm.alive());
}
