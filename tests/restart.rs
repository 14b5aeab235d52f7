//! Warm restart from a memory file (`-e PATH`) with real processes: after
//! `kill -9`, SIGTERM or SIGUSR1 every write acknowledged before the stop
//! is served again (values, flags, CAS, expiry; deletes stay deleted; a
//! delayed flush still fires); a torn tail is dropped and reported; a file
//! of another `-m`, `-I` or format version, or not ours, is refused with
//! the reason; replicas keep their data across their primary's restart and
//! across their own.

mod common;
use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Bytes before the log in the file (`log::control::CONTROL_SIZE`).
const CONTROL_SIZE: u64 = 4096 + 64 * 64;

/// Removes what a test leaves (memory file directories, shm links and slot
/// directories of servers killed with -9) when it ends, pass or fail.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// The files `shm://NAME` leaves in /dev/shm, and the memory files' directories.
fn cleanup(url: Option<&str>, files: &[&Path]) -> Cleanup {
    let mut v: Vec<PathBuf> = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
    if let Some(name) = url.and_then(|u| u.strip_prefix("shm://")) {
        v.push(PathBuf::from(format!("/dev/shm/logmemcached-{name}")));
        v.push(PathBuf::from(format!("/dev/shm/logmemcached-{name}.slots")));
    }
    Cleanup(v)
}

fn memfile(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lmc-restart-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.join("log")
}

fn start(file: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["-m", "8", "-e", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Stop `s` with `sig` and wait until it is gone.
fn stop(mut s: Server, sig: &str) {
    if sig == "KILL" {
        s.kill9();
        return;
    }
    let st = Command::new("kill").args([&format!("-{sig}"), &s.pid().to_string()]).status().unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.alive() {
        assert!(Instant::now() < deadline, "the server did not stop on SIG{sig}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Remaining TTL of `key` (meta `mg key t`): None on a miss, -1 for never.
fn ttl(c: &mut Client, key: &str) -> Option<i64> {
    let l = c.cmd(&format!("mg {key} t\r\n"));
    if l.starts_with("EN") {
        return None;
    }
    l.trim_end().split(' ').find_map(|t| t.strip_prefix('t')).and_then(|t| t.parse().ok())
}

/// What each key reads: `gets` (value, flags, CAS), or None.
type Reads = HashMap<String, Option<(Vec<u8>, u32, u64)>>;

/// A deterministic workload; returns what every key must read afterwards.
fn workload(c: &mut Client) -> Reads {
    let mut want = HashMap::new();
    for i in 0..300 {
        let v = format!("value-{i}-{}", "x".repeat(i % 97));
        let r = c.cmd(&format!("set k{i} {i} 0 {}\r\n{v}\r\n", v.len()));
        assert_eq!(r, "STORED\r\n");
    }
    for i in (0..300).step_by(7) {
        assert_eq!(c.cmd(&format!("delete k{i}\r\n")), "DELETED\r\n");
    }
    assert_eq!(c.cmd("append k1 0 0 4\r\n+app\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("incr k2 0\r\n"), "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    assert_eq!(c.cmd("set n 0 0 2\r\n41\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("incr n 1\r\n"), "42\r\n");
    assert_eq!(c.cmd("set ttl 3 1000 1\r\nt\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("set touched 0 0 1\r\nt\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("touch touched 2000\r\n"), "TOUCHED\r\n");
    let mut keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    keys.extend(["n", "ttl", "touched"].map(String::from));
    for k in keys {
        let g = c.gets(&k);
        want.insert(k, g);
    }
    want
}

fn served(c: &mut Client, want: &Reads) {
    for (k, v) in want {
        assert_eq!(&c.gets(k), v, "key {k} after the restart");
    }
}

#[test]
fn every_acknowledged_write_is_served_after_kill9_sigterm_and_sigusr1() {
    for sig in ["KILL", "TERM", "USR1"] {
        let f = memfile(&format!("stop-{sig}"));
        let _clean = cleanup(None, &[&f]);
        let s = start(&f, &[]);
        let mut c = s.connect();
        let want = workload(&mut c);
        let before = c.stats("");
        let (ttl0, touched0) = (ttl(&mut c, "ttl").unwrap(), ttl(&mut c, "touched").unwrap());
        drop(c);
        stop(s, sig);

        let s = start(&f, &[]);
        let mut c = s.connect();
        let st = c.stats("");
        assert_eq!(st["restart_from_file"], "1", "SIG{sig}");
        assert_eq!(st["restart_dropped_bytes"], "0", "SIG{sig}: {st:?}");
        assert_eq!(st["restart_cut"], "none");
        assert_eq!(st["curr_items"], before["curr_items"], "SIG{sig}");
        assert_eq!(st["log_head"], before["log_head"], "SIG{sig}");
        assert_eq!(st["restart_records"], before["log_records"], "SIG{sig}");
        served(&mut c, &want);
        // Expiries come back as they were (give or take the restart's seconds).
        let (ttl1, touched1) = (ttl(&mut c, "ttl").unwrap(), ttl(&mut c, "touched").unwrap());
        assert!(ttl1 <= ttl0 && ttl1 > ttl0 - 30, "ttl {ttl0} then {ttl1}");
        assert!(touched1 <= touched0 && touched1 > 1900, "touched ttl {touched0} then {touched1}");
        // New CAS values continue above every one handed out before.
        let max_cas = want.values().flatten().map(|v| v.2).max().unwrap();
        assert_eq!(c.cmd("set fresh 0 0 1\r\nf\r\n"), "STORED\r\n");
        assert!(c.gets("fresh").unwrap().2 > max_cas, "a CAS handed out again after SIG{sig}");
        drop(c);
        s.stop();
    }
}

#[test]
fn a_delayed_flush_still_fires_after_a_restart() {
    let f = memfile("flush");
    let _clean = cleanup(None, &[&f]);
    let mut s = start(&f, &[]);
    let mut c = s.connect();
    assert_eq!(c.cmd("set old 0 0 1\r\no\r\n"), "STORED\r\n");
    let now: u64 = c.stats("")["time"].parse().unwrap();
    assert_eq!(c.cmd("flush_all 4\r\n"), "OK\r\n");
    drop(c);
    s.kill9();
    let s = start(&f, &[]);
    let mut c = s.connect();
    let t: u64 = c.stats("")["time"].parse().unwrap();
    // As memcached, a delayed flush takes effect from the second before
    // the time it names (`now + 4`).
    if t < now + 2 {
        assert!(c.gets("old").is_some(), "flushed before its time");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.gets("old").is_some() {
        assert!(Instant::now() < deadline, "the delayed flush never fired after the restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t: u64 = c.stats("")["time"].parse().unwrap();
    assert!(t >= now + 3, "gone at {t}, before the flush point {}", now + 3);
}

/// Where the record at log position `pos` lies in the file.
fn file_offset(pos: u64, capacity: u64) -> u64 {
    CONTROL_SIZE + pos % capacity
}

fn rewrite(f: &Path, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
    file.write_all_at(bytes, off).unwrap();
}

#[test]
fn a_torn_tail_is_dropped_and_reported() {
    // Garble one value byte; zero the whole record (as if never written).
    for (tag, garble) in [("flip", true), ("zero", false)] {
        let f = memfile(&format!("torn-{tag}"));
        let _clean = cleanup(None, &[&f]);
        let mut s = start(&f, &[]);
        let mut c = s.connect();
        for i in 0..50 {
            assert_eq!(c.cmd(&format!("set k{i} 0 0 5\r\nv{i:04}\r\n")), "STORED\r\n");
        }
        // The last record: key "last", value 10 bytes: 48 + 4 + 10, aligned to 64.
        assert_eq!(c.cmd("set last 0 0 10\r\n0123456789\r\n"), "STORED\r\n");
        let st = c.stats("");
        let (head, cap): (u64, u64) = (st["log_head"].parse().unwrap(), st["log_capacity"].parse().unwrap());
        drop(c);
        s.kill9();
        let at = file_offset(head - 64, cap);
        if garble {
            rewrite(&f, at + 48 + 4 + 3, b"#");
        } else {
            rewrite(&f, at, &[0u8; 64]);
        }
        let s = start(&f, &[]);
        let mut c = s.connect();
        let st = c.stats("");
        assert_eq!(st["restart_dropped_bytes"], "64", "{tag}: {st:?}");
        assert_eq!(st["restart_records"], "50", "{tag}");
        let why = if garble { "checksum" } else { "position" };
        assert!(st["restart_cut"].contains(why), "{tag}: {}", st["restart_cut"]);
        assert_eq!(st["log_head"], (head - 64).to_string());
        assert!(c.gets("last").is_none(), "{tag}: a torn record was served");
        for i in 0..50 {
            assert_eq!(c.gets(&format!("k{i}")).unwrap().0, format!("v{i:04}").as_bytes(), "{tag}");
        }
        // The log goes on from the cut.
        assert_eq!(c.cmd("set last 0 0 3\r\nnew\r\n"), "STORED\r\n");
        assert_eq!(c.gets("last").unwrap().0, b"new");
    }
}

/// Start on `f` with `args`, expecting a refusal: its stderr.
fn refused(f: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_logmemcached"))
        .args(["serve", "-p", &free_port().to_string(), "--hugepages", "off", "-e", f.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "started on {} with {args:?}", f.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_file_of_other_settings_a_version_or_not_ours_is_refused() {
    let f = memfile("refuse");
    let h = memfile("held");
    let _clean = cleanup(None, &[&f, &h]);
    let s = start(&f, &["-I", "512k"]);
    let mut c = s.connect();
    assert_eq!(c.cmd("set k 0 0 1\r\nv\r\n"), "STORED\r\n");
    drop(c);
    s.stop();
    let e = refused(&f, &["-m", "16", "-I", "512k"]);
    assert!(e.contains("made with -m 8") && e.contains("started with -m 16"), "{e}");
    let e = refused(&f, &["-m", "8"]);
    assert!(e.contains("made with -I 524288") && e.contains("started with -I 1048576"), "{e}");
    // Another format version (the control block's word at offset 8).
    rewrite(&f, 8, &1u64.to_le_bytes());
    let e = refused(&f, &["-m", "8", "-I", "512k"]);
    assert!(e.contains("format version 1"), "{e}");
    let g = f.with_file_name("notours");
    std::fs::write(&g, vec![0xa5u8; 1 << 20]).unwrap();
    let e = refused(&g, &["-m", "8"]);
    assert!(e.contains("not a logmemcached memory file"), "{e}");
    // Refused files are left as they were.
    assert_eq!(std::fs::read(&g).unwrap(), vec![0xa5u8; 1 << 20]);
    // A file another server holds is refused too.
    let _s = start(&h, &[]);
    let e = refused(&h, &["-m", "8"]);
    assert!(e.contains("in use by another process"), "{e}");
}

fn fill(c: &mut Client, from: usize, to: usize) {
    for i in from..to {
        assert_eq!(c.cmd(&format!("set r{i} {i} 0 6\r\nv{i:05}\r\n")), "STORED\r\n");
    }
}

fn all_there(c: &mut Client, to: usize) {
    for i in 0..to {
        let (v, flags, _) = c.gets(&format!("r{i}")).unwrap_or_else(|| panic!("r{i} missing"));
        assert_eq!((v, flags), (format!("v{i:05}").into_bytes(), i as u32));
    }
}

#[test]
fn replicas_keep_their_data_across_the_primary_restart_and_their_own() {
    let url = format!("shm://t{}-restart", std::process::id());
    let pf = memfile("repl-p");
    let rf = memfile("repl-r");
    let _clean = cleanup(Some(&url), &[&pf, &rf]);
    let mut p = start(&pf, &["--replication-listen", &url]);
    let mut r = start(&rf, &["--replica-of", &url]);
    let mut pc = p.connect();
    let mut rc = r.connect();
    fill(&mut pc, 0, 500);
    converge(&mut pc, &mut rc);
    let resyncs = rc.stats("replication")["resyncs"].clone();
    let epoch = pc.stats("replication")["epoch"].clone();

    // The primary dies and comes back from its file: the same history.
    drop(pc);
    p.kill9();
    p = start(&pf, &["--replication-listen", &url]);
    pc = p.connect();
    assert_eq!(pc.stats("replication")["epoch"], epoch);
    fill(&mut pc, 500, 1000);
    converge(&mut pc, &mut rc);
    let rs = rc.stats("replication");
    assert_eq!(rs["resyncs"], resyncs, "the replica started over after its primary's restart: {rs:?}");
    all_there(&mut rc, 1000);

    // The replica dies and comes back from its own file: it catches up
    // only what it missed.
    drop(rc);
    r.kill9();
    let head0: u64 = pc.stats("replication")["head"].parse().unwrap();
    fill(&mut pc, 1000, 1200);
    let missed = pc.stats("replication")["head"].parse::<u64>().unwrap() - head0;
    r = start(&rf, &["--replica-of", &url]);
    rc = r.connect();
    assert_eq!(rc.stats("")["restart_from_file"], "1");
    converge(&mut pc, &mut rc);
    let rs = rc.stats("replication");
    assert_eq!(rs["resyncs"], "0", "the restarted replica replayed its primary's log: {rs:?}");
    let applied: u64 = rs["bytes_applied"].parse().unwrap();
    assert_eq!(applied, missed, "caught up {applied} bytes, missed {missed}");
    all_there(&mut rc, 1200);
    assert_eq!(pc.stats("")["curr_items"], rc.stats("")["curr_items"]);
    drop((pc, rc));
    r.stop();
    p.stop();
}

#[test]
fn a_replica_beyond_what_its_restarted_primary_recovered_resyncs() {
    let url = format!("shm://t{}-cut", std::process::id());
    let pf = memfile("cut-p");
    let _clean = cleanup(Some(&url), &[&pf]);
    let mut p = start(&pf, &["--replication-listen", &url]);
    let mut r = Server::start(&["-m", "8", "--replica-of", &url]);
    let mut pc = p.connect();
    let mut rc = r.connect();
    fill(&mut pc, 0, 100);
    assert_eq!(pc.cmd("set last 0 0 10\r\n0123456789\r\n"), "STORED\r\n");
    converge(&mut pc, &mut rc);
    let st = pc.stats("");
    let (head, cap): (u64, u64) = (st["log_head"].parse().unwrap(), st["log_capacity"].parse().unwrap());
    let resyncs: u64 = rc.stats("replication")["resyncs"].parse().unwrap();
    // The replica sleeps through the restart and the writes after it, so it
    // sees the primary's head only once it is past where the replica was:
    // only the new incarnation says the history changed (the records after
    // the cut are 64 bytes, as the lost one, so positions line up).
    signal(&r, "-STOP");
    drop(pc);
    p.kill9();
    // The last record, which the replica applied, does not survive.
    rewrite(&pf, file_offset(head - 64, cap) + 60, b"#");
    p = start(&pf, &["--replication-listen", &url]);
    pc = p.connect();
    assert_eq!(pc.stats("")["restart_dropped_bytes"], "64");
    fill(&mut pc, 100, 110);
    signal(&r, "-CONT");
    converge(&mut pc, &mut rc);
    let now: u64 = rc.stats("replication")["resyncs"].parse().unwrap();
    assert!(now > resyncs, "the replica kept a record its primary lost");
    assert!(rc.gets("last").is_none(), "the replica serves what its primary lost");
    all_there(&mut rc, 110);
    assert!(r.alive());
}

/// Send SIGSTOP or SIGCONT to a server (by its pid only).
fn signal(s: &Server, sig: &str) {
    let st = Command::new("kill").args([sig, &s.pid().to_string()]).status().expect("running kill");
    assert!(st.success(), "kill {sig} {}", s.pid());
}
