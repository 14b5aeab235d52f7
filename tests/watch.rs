//! `watch`: a connection streams memcached 1.6's event lines (item_get,
//! item_store, conn_new, conn_close) from every worker; a slow watcher
//! loses lines (and is told how many) but never slows the other clients;
//! `-W` refuses it; the lines have Debian memcached's fields in its order.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A watcher connection, reading its stream line by line.
struct Watch {
    reader: BufReader<TcpStream>,
}

impl Watch {
    fn start(port: u16, classes: &str) -> Watch {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("watch {classes}\r\n").as_bytes()).unwrap();
        let mut w = Watch { reader: BufReader::new(s) };
        assert_eq!(w.line(), "OK\r\n");
        w
    }

    /// One event line without its "\n"; panics after 10 s without one.
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).expect("a watch line within 10 s");
        assert!(!l.is_empty(), "the watch connection closed");
        l
    }

    /// Lines up to and including the first of `kind` for `key` (or, with
    /// an empty key, of `kind` alone).
    fn until(&mut self, kind: &str, key: &str) -> Vec<String> {
        let mut v = Vec::new();
        loop {
            let l = self.line();
            let done = field(&l, "type") == Some(kind) && (key.is_empty() || field(&l, "key") == Some(key));
            v.push(l);
            if done {
                return v;
            }
        }
    }
}

/// The value of `name=` in an event line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.trim_end().split(' ').find_map(|f| f.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

/// An event line's field names, in order.
fn names(line: &str) -> Vec<String> {
    line.trim_end().split(' ').map(|f| f.split('=').next().unwrap_or("").to_string()).collect()
}

/// (type, key, status, cmd) of an event line.
fn what(line: &str) -> (String, String, String, String) {
    let f = |n| field(line, n).unwrap_or("").to_string();
    (f("type"), f("key"), f("status"), f("cmd"))
}

#[test]
fn a_watcher_sees_gets_sets_and_deletes_from_another_client() {
    let s = Server::start(&["-t", "2"]);
    let mut w = Watch::start(s.port, "fetchers mutations");
    let mut c = s.connect();
    assert_eq!(c.cmd("set foo 0 0 3\r\nbar\r\n"), "STORED\r\n");
    c.send(b"get foo\r\n");
    assert_eq!(c.until("END\r\n").len(), 3);
    assert_eq!(c.cmd("get nope\r\n"), "END\r\n");
    assert_eq!(c.cmd("delete foo\r\n"), "DELETED\r\n");
    assert_eq!(c.cmd("add foo 0 0 1\r\nx\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("add foo 0 0 1\r\ny\r\n"), "NOT_STORED\r\n");
    let lines = w.until("item_store", "");
    assert_eq!(what(&lines[0]), ("item_store".into(), "foo".into(), "stored".into(), "set".into()));
    assert_eq!(field(&lines[0], "size"), Some("3"));
    let mut lines = w.until("item_store", "");
    lines.extend(w.until("item_store", ""));
    let seen: Vec<_> = lines.iter().map(|l| what(l)).collect();
    let get = |k: &str, st: &str| ("item_get".to_string(), k.to_string(), st.to_string(), String::new());
    let store = |st: &str| ("item_store".to_string(), "foo".to_string(), st.to_string(), "add".to_string());
    assert_eq!(
        seen,
        [get("foo", "found"), get("nope", "not_found"), get("foo", "found"), store("stored"), store("not_stored")],
        "{lines:?}"
    );
    assert_eq!(field(&lines[0], "size"), Some("3"));
    // Every line has the connection's descriptor and a growing gid.
    let gids: Vec<u64> = lines.iter().map(|l| field(l, "gid").unwrap().parse().unwrap()).collect();
    assert!(gids.windows(2).all(|p| p[0] < p[1]), "{gids:?}");
    // The default class is the fetchers only: no item_store lines.
    let mut f = Watch::start(s.port, "");
    assert_eq!(c.cmd("set bar 0 0 1\r\nz\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("get bar\r\n"), "VALUE bar 0 1\r\n");
    c.until("END\r\n");
    let l = f.line();
    assert_eq!(what(&l), ("item_get".into(), "bar".into(), "found".into(), String::new()), "{l}");
}

#[test]
fn a_watcher_that_never_reads_skips_lines_without_slowing_a_client() {
    // memcached's own test of this uses an 8 KiB watcher buffer too.
    let s = Server::start(&["-t", "2", "-o", "watcher_logbuf_size=8"]);
    let small = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    small.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&small).write_all(b"watch\r\n").unwrap();
    let mut w = Watch { reader: BufReader::new(small) };
    assert_eq!(w.line(), "OK\r\n");
    // Misses of 200-byte keys: about 290 bytes a line, 29 MB in all, far
    // more than the watcher's queue, its output cap and its socket hold.
    let mut c = s.connect();
    let key = "k".repeat(200);
    let (batches, per) = (100, 1000);
    let batch = format!("get {key}\r\n").repeat(per);
    for _ in 0..batches {
        c.send(batch.as_bytes());
        // The client gets every reply while the watcher reads nothing.
        assert_eq!(c.bytes(per * 5), "END\r\n".repeat(per).as_bytes());
    }
    assert_eq!(c.cmd("version\r\n").split(' ').next(), Some("VERSION"));
    // Now the watcher reads: whole lines, and counts of what it missed,
    // adding up to every event exactly.
    let (mut lines, mut skipped) = (0usize, 0usize);
    while lines + skipped < batches * per {
        let l = w.line();
        if let Some(n) = l.strip_prefix("skipped=") {
            skipped += n.trim_end().parse::<usize>().expect("a skipped count");
        } else {
            assert_eq!(what(&l).0, "item_get", "{l:?}");
            assert!(l.ends_with(" size=0\n"), "a whole line: {l:?}");
            lines += 1;
        }
    }
    assert_eq!(lines + skipped, batches * per);
    assert!(skipped > 0 && lines > 0, "lines {lines}, skipped {skipped}");
}

#[test]
fn dash_w_refuses_watch_and_unknown_classes_are_errors() {
    let s = Server::start(&["-W"]);
    let mut c = s.connect();
    assert_eq!(c.cmd("watch\r\n"), "CLIENT_ERROR watch commands not allowed\r\n");
    assert_eq!(c.cmd("get x\r\n"), "END\r\n", "the session goes on as before");
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_eq!(c.cmd("watch bogus\r\n"), "ERROR\r\n");
    assert_eq!(c.cmd("watch fetchers\r\n"), "OK\r\n");
}

/// The same client session, watched: every line up to its conn_close.
fn watched_session(port: u16) -> Vec<String> {
    let mut w = Watch::start(port, "fetchers mutations evictions connevents");
    let mut c = Client::connect(port);
    assert_eq!(c.cmd("set foo 0 100 3\r\nbar\r\n"), "STORED\r\n");
    c.send(b"get foo\r\n");
    c.until("END\r\n");
    assert_eq!(c.cmd("get nope\r\n"), "END\r\n");
    assert_eq!(c.cmd("add foo 0 0 1\r\ny\r\n"), "NOT_STORED\r\n");
    assert_eq!(c.cmd("delete foo\r\n"), "DELETED\r\n");
    assert_eq!(c.cmd("set a%b 0 0 1\r\n5\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("incr a%b 2\r\n"), "7\r\n");
    assert_eq!(c.cmd("touch a%b 9\r\n"), "TOUCHED\r\n");
    assert_eq!(c.cmd("ms m1 2 T5\r\nhi\r\n"), "HD\r\n");
    c.send(b"mg m1 v\r\n");
    assert_eq!((c.line(), c.line()), ("VA 2\r\n".to_string(), "hi\r\n".to_string()));
    assert_eq!(c.cmd("md m1\r\n"), "HD\r\n");
    assert_eq!(c.cmd("mg m1\r\n"), "EN\r\n");
    c.send(b"quit\r\n");
    let mut rest = Vec::new();
    assert_eq!(c.stream.read_to_end(&mut rest).unwrap(), 0);
    w.until("conn_close", "")
}

#[test]
fn event_lines_have_memcacheds_fields_in_its_order() {
    if !peer("memcached", have("memcached", "-V")) {
        return;
    }
    let mc = Memcached::start();
    let s = Server::start(&["-t", "2"]);
    let theirs = watched_session(mc.port);
    let ours = watched_session(s.port);
    // Field names, per event type, as memcached writes them.
    for l in &ours {
        let kind = field(l, "type").unwrap_or("");
        let same = theirs.iter().find(|t| field(t, "type") == Some(kind));
        let same = same.unwrap_or_else(|| panic!("memcached has no {kind} line: {theirs:?}"));
        assert_eq!(names(l), names(same), "ours {l:?}, memcached's {same:?}");
        assert!(l.ends_with('\n') && !l.ends_with("\r\n"), "{l:?}");
        let ts = field(l, "ts").unwrap();
        assert!(ts.split_once('.').is_some_and(|(s, us)| s.parse::<u64>().is_ok() && us.parse::<u32>().is_ok()));
    }
    // Our events are memcached's, in its order (memcached also logs the
    // lookup a store makes inside: those are the lines we do not have).
    let (ours, theirs): (Vec<_>, Vec<_>) =
        (ours.iter().map(|l| what(l)).collect(), theirs.iter().map(|l| what(l)).collect());
    let mut rest = theirs.iter();
    for e in &ours {
        assert!(rest.any(|t| t == e), "{e:?} is not in memcached's {theirs:?} (ours {ours:?})");
    }
    let without_lookups: Vec<_> = theirs.iter().filter(|t| !ours.contains(t)).collect();
    assert!(without_lookups.iter().all(|t| t.0 == "item_get"), "only store-side lookups differ: {without_lookups:?}");
    assert_eq!(ours.iter().filter(|e| e.0 == "conn_new").count(), 1);
    assert!(ours.iter().any(|e| e.1 == "a%25b"), "keys URI-encoded as memcached's: {ours:?}");
    assert_eq!(ours.len(), 14, "every command's event: {ours:?}");
}

/// One binary request: opcode, extras, key, value.
fn binary(op: u8, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = (extras.len() + key.len() + value.len()) as u32;
    let mut v = vec![0x80, op];
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
    v.extend_from_slice(&body.to_be_bytes());
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(extras);
    v.extend_from_slice(key);
    v.extend_from_slice(value);
    v
}

#[test]
fn binary_protocol_commands_are_watched_too() {
    let s = Server::start(&["-t", "2"]);
    let mut w = Watch::start(s.port, "fetchers mutations");
    let mut c = s.connect();
    c.send(&binary(0x01, &[0, 0, 0, 0, 0, 0, 0, 30], b"bk", b"hello"));
    let h = c.bytes(24);
    assert_eq!((h[1], &h[6..8]), (0x01, &[0u8, 0][..]), "SET succeeded: {h:?}");
    c.send(&binary(0x00, &[], b"bk", b""));
    let h = c.bytes(24);
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    assert_eq!(&c.bytes(body)[4..], b"hello");
    c.send(&binary(0x00, &[], b"gone", b""));
    let h = c.bytes(24);
    c.bytes(u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize);
    let lines = w.until("item_get", "gone");
    let seen: Vec<_> = lines.iter().map(|l| what(l)).collect();
    let e = |t: &str, k: &str, st: &str, cmd: &str| (t.to_string(), k.to_string(), st.to_string(), cmd.to_string());
    assert_eq!(
        seen,
        [
            e("item_store", "bk", "stored", "set"),
            e("item_get", "bk", "found", ""),
            e("item_get", "gone", "not_found", "")
        ]
    );
    assert_eq!((field(&lines[0], "ttl"), field(&lines[0], "size")), (Some("30"), Some("5")));
}

/// Fill a 2 MB cache past full after storing and reading `k0` (ttl 100):
/// the first eviction line the watcher sees.
fn first_eviction(port: u16) -> String {
    let mut w = Watch::start(port, "evictions");
    let mut c = Client::connect(port);
    let value = "x".repeat(1000);
    assert_eq!(c.cmd(&format!("set k0 0 100 1000\r\n{value}\r\n")), "STORED\r\n");
    c.send(b"get k0\r\n");
    c.until("END\r\n");
    let sets: String = (1..4000).map(|i| format!("set k{i} 0 0 1000 noreply\r\n{value}\r\n")).collect();
    c.send(sets.as_bytes());
    assert_eq!(c.cmd("version\r\n").split(' ').next(), Some("VERSION"));
    w.line()
}

#[test]
fn evictions_are_watched_with_memcacheds_fields() {
    let s = Server::start(&["-m", "2"]);
    let ours = first_eviction(s.port);
    assert_eq!(what(&ours).0, "eviction", "{ours}");
    assert_eq!(
        (field(&ours, "key"), field(&ours, "fetch"), field(&ours, "size")),
        (Some("k0"), Some("yes"), Some("1000"))
    );
    let ttl: i64 = field(&ours, "ttl").unwrap().parse().unwrap();
    assert!((90..=100).contains(&ttl), "{ours}");
    if !peer("memcached", have("memcached", "-V")) {
        return;
    }
    let mc = Memcached::start_with(&["-m", "2"]);
    let theirs = first_eviction(mc.port);
    assert_eq!(names(&ours), names(&theirs), "ours {ours:?}, memcached's {theirs:?}");
    assert_eq!(what(&ours), what(&theirs));
}
