//! memcached's text protocol against the real binary over TCP: every
//! command, noreply, pipelining, and the bad-input list (after each bad
//! input, other connections still work and stored items are unchanged).
mod common;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

fn stats(c: &mut Client, group: &str) -> HashMap<String, String> {
    let req = if group.is_empty() { "stats\r\n".to_string() } else { format!("stats {group}\r\n") };
    c.send(req.as_bytes());
    c.until("END\r\n")
        .iter()
        .filter_map(|l| {
            let mut p = l.trim_end().splitn(3, ' ');
            (p.next() == Some("STAT")).then(|| (p.next().unwrap_or("").to_string(), p.next().unwrap_or("").to_string()))
        })
        .collect()
}

fn get(c: &mut Client, key: &str) -> Option<String> {
    c.send(format!("get {key}\r\n").as_bytes());
    let first = c.line();
    if first == "END\r\n" {
        return None;
    }
    let len: usize = first.trim_end().rsplit(' ').next().and_then(|n| n.parse().ok()).expect("VALUE line");
    let v = c.bytes(len + 2);
    assert_eq!(c.line(), "END\r\n");
    Some(String::from_utf8_lossy(&v[..len]).into_owned())
}

fn gets_cas(c: &mut Client, key: &str) -> u64 {
    c.send(format!("gets {key}\r\n").as_bytes());
    let l = c.until("END\r\n");
    l[0].trim_end().rsplit(' ').next().and_then(|n| n.parse().ok()).expect("cas")
}

#[test]
fn storage_commands() {
    let s = Server::start(&["-m", "8"]);
    let mut c = s.connect();
    assert_eq!(c.cmd("set k 42 0 5\r\nhello\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("get k\r\n"), "VALUE k 42 5\r\n");
    assert_eq!(c.line(), "hello\r\n");
    assert_eq!(c.line(), "END\r\n");
    assert_eq!(c.cmd("add k 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
    assert_eq!(c.cmd("add a 0 0 1\r\nx\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("replace nope 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
    assert_eq!(c.cmd("replace a 7 0 1\r\ny\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("append k 0 0 1\r\n!\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("prepend k 0 0 2\r\n>>\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("append nope 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
    assert_eq!(c.cmd("prepend nope 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
    c.send(b"get nope\r\n");
    assert_eq!(c.until("END\r\n").len(), 1, "get of nothing is just END");
    c.send(b"get k a nope\r\n");
    assert_eq!(c.until("END\r\n"), ["VALUE k 42 8\r\n", ">>hello!\r\n", "VALUE a 7 1\r\n", "y\r\n", "END\r\n"]);
    // Empty values and binary-safe values.
    assert_eq!(c.cmd("set e 0 0 0\r\n\r\n"), "STORED\r\n");
    assert_eq!(get(&mut c, "e").as_deref(), Some(""));
    c.send(b"set bin 0 0 4\r\n\r\n\0\xff\r\n");
    assert_eq!(c.line(), "STORED\r\n");
    c.send(b"get bin\r\n");
    assert_eq!(c.line(), "VALUE bin 0 4\r\n");
    assert_eq!(c.bytes(6), b"\r\n\0\xff\r\n");
    assert_eq!(c.line(), "END\r\n");
    // Flags are 32-bit.
    assert_eq!(c.cmd("set f 4294967295 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("get f\r\n"), "VALUE f 4294967295 1\r\n");
}

#[test]
fn cas_gets_and_their_errors() {
    let s = Server::start(&["-m", "8"]);
    let mut c = s.connect();
    assert_eq!(c.cmd("set k 0 0 1\r\na\r\n"), "STORED\r\n");
    let cas = gets_cas(&mut c, "k");
    assert_eq!(c.cmd(&format!("cas k 3 0 1 {}\r\nb\r\n", cas + 1)), "EXISTS\r\n");
    assert_eq!(c.cmd(&format!("cas k 3 0 1 {cas}\r\nb\r\n")), "STORED\r\n");
    assert_eq!(c.cmd(&format!("cas k 3 0 1 {cas}\r\nc\r\n")), "EXISTS\r\n", "a used CAS cannot win again");
    assert_eq!(c.cmd(&format!("cas nope 0 0 1 {cas}\r\nc\r\n")), "NOT_FOUND\r\n");
    assert_eq!(c.cmd("cas k 0 0 1 0\r\nc\r\n"), "EXISTS\r\n");
    let cas2 = gets_cas(&mut c, "k");
    assert!(cas2 > cas);
    assert_eq!(c.cmd(&format!("cas k 0 0 1 {cas2} noreply\r\nd\r\nget k\r\n")), "VALUE k 0 1\r\n");
    assert_eq!(c.line(), "d\r\n");
    assert_eq!(c.line(), "END\r\n");
    c.send(b"gets k nope\r\n");
    let l = c.until("END\r\n");
    assert_eq!(l.len(), 3);
    assert!(l[0].starts_with("VALUE k 0 1 "));
    // Touch keeps CAS; every write changes it.
    let before = gets_cas(&mut c, "k");
    assert_eq!(c.cmd("touch k 100\r\n"), "TOUCHED\r\n");
    assert_eq!(gets_cas(&mut c, "k"), before);
    assert_eq!(c.cmd("append k 0 0 1\r\nx\r\n"), "STORED\r\n");
    assert!(gets_cas(&mut c, "k") > before);
    assert_eq!(c.cmd("cas k 0 0 1\r\n"), "ERROR\r\n");
    assert_eq!(c.cmd("cas k 0 0 1 abc\r\n"), "CLIENT_ERROR bad command line format\r\n");
    let st = stats(&mut c, "");
    assert_eq!((st["cas_hits"].as_str(), st["cas_badval"].as_str(), st["cas_misses"].as_str()), ("2", "3", "1"));
}

#[test]
fn incr_decr_wrap_floor_and_errors() {
    let s = Server::start(&["-m", "8"]);
    let mut c = s.connect();
    assert_eq!(c.cmd("set n 5 0 2\r\n10\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("incr n 5\r\n"), "15\r\n");
    assert_eq!(c.cmd("decr n 6\r\n"), "9\r\n");
    // A shrinking number keeps its length, padded with spaces, as memcached.
    assert_eq!(get(&mut c, "n").as_deref(), Some("9 "));
    assert_eq!(c.cmd("decr n 100\r\n"), "0\r\n", "decr stops at 0");
    assert_eq!(c.cmd("set n 0 0 20\r\n18446744073709551615\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("incr n 2\r\n"), "1\r\n", "incr wraps at 2^64");
    assert_eq!(c.cmd("incr n 18446744073709551615\r\n"), "0\r\n");
    assert_eq!(c.cmd("incr n +3\r\n"), "3\r\n");
    assert_eq!(c.cmd("incr n -1\r\n"), "CLIENT_ERROR invalid numeric delta argument\r\n");
    assert_eq!(c.cmd("incr n abc\r\n"), "CLIENT_ERROR invalid numeric delta argument\r\n");
    assert_eq!(c.cmd("incr n 18446744073709551616\r\n"), "CLIENT_ERROR invalid numeric delta argument\r\n");
    assert_eq!(c.cmd("incr nope 1\r\n"), "NOT_FOUND\r\n");
    assert_eq!(c.cmd("decr nope 1\r\n"), "NOT_FOUND\r\n");
    assert_eq!(c.cmd("set s 0 0 3\r\nabc\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("incr s 1\r\n"), "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    assert_eq!(c.cmd("set s 0 0 2\r\n-5\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("decr s 1\r\n"), "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    assert_eq!(c.cmd("incr n\r\n"), "ERROR\r\n");
    assert_eq!(c.cmd("incr n 1 noreply\r\nget n\r\n"), "VALUE n 0 20\r\n");
    assert_eq!(c.line(), format!("4{}\r\n", " ".repeat(19)));
    assert_eq!(c.line(), "END\r\n");
    let st = stats(&mut c, "");
    assert_eq!((st["incr_hits"].as_str(), st["incr_misses"].as_str()), ("5", "1"));
    assert_eq!((st["decr_hits"].as_str(), st["decr_misses"].as_str()), ("2", "1"));
}

#[test]
fn delete_touch_gat() {
    let s = Server::start(&["-m", "8"]);
    let mut c = s.connect();
    assert_eq!(c.cmd("set k 1 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("delete k\r\n"), "DELETED\r\n");
    assert_eq!(c.cmd("delete k\r\n"), "NOT_FOUND\r\n");
    assert_eq!(c.cmd("set k 1 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("delete k 0\r\n"), "DELETED\r\n");
    let usage = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
    assert_eq!(c.cmd("delete k 5\r\n"), usage);
    assert_eq!(c.cmd("delete k 0 0\r\n"), usage);
    assert_eq!(c.cmd("delete\r\n"), "ERROR\r\n");
    assert_eq!(c.cmd("touch k 10\r\n"), "NOT_FOUND\r\n");
    assert_eq!(c.cmd("set k 1 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("touch k 10\r\n"), "TOUCHED\r\n");
    assert_eq!(c.cmd("touch k abc\r\n"), "CLIENT_ERROR invalid exptime argument\r\n");
    assert_eq!(c.cmd("touch k\r\n"), "ERROR\r\n");
    c.send(b"gat 100 k nope\r\n");
    assert_eq!(c.until("END\r\n"), ["VALUE k 1 1\r\n", "v\r\n", "END\r\n"]);
    c.send(b"gats 100 k\r\n");
    let l = c.until("END\r\n");
    assert!(l[0].starts_with("VALUE k 1 1 "), "{l:?}");
    assert_eq!(c.cmd("gat abc k\r\n"), "CLIENT_ERROR invalid exptime argument\r\n");
    assert_eq!(c.cmd("gat 10\r\n"), "END\r\n");
    assert_eq!(c.cmd("gat\r\n"), "ERROR\r\n");
    // gat with a negative exptime returns the item, which is then gone.
    c.send(b"gat -1 k\r\n");
    assert_eq!(c.until("END\r\n").len(), 3);
    assert_eq!(get(&mut c, "k"), None);
    let st = stats(&mut c, "");
    assert_eq!((st["delete_hits"].as_str(), st["delete_misses"].as_str()), ("2", "1"));
    assert_eq!((st["touch_hits"].as_str(), st["touch_misses"].as_str()), ("4", "2"));
    assert_eq!(st["cmd_touch"], "6");
}

#[test]
fn noreply_everywhere_memcached_has_it() {
    let s = Server::start(&["-m", "8"]);
    let mut c = s.connect();
    c.send(
        b"set a 0 0 1 noreply\r\n1\r\nadd b 0 0 1 noreply\r\n2\r\nreplace a 0 0 1 noreply\r\n3\r\n\
          append a 0 0 1 noreply\r\n4\r\nprepend a 0 0 1 noreply\r\n5\r\nincr b 10 noreply\r\n\
          decr b 1 noreply\r\ntouch a 100 noreply\r\nset d 0 0 1 noreply\r\nx\r\ndelete d noreply\r\n\
          delete d 0 noreply\r\nverbosity 1 noreply\r\ncas a 0 0 1 1 noreply\r\nz\r\n\
          add a 0 0 1 noreply\r\nz\r\nincr nope 1 noreply\r\ntouch nope 1 noreply\r\n",
    );
    // Nothing came back: the next reply is the get's.
    c.send(b"get a b d\r\n");
    assert_eq!(c.until("END\r\n"), ["VALUE a 0 3\r\n", "534\r\n", "VALUE b 0 2\r\n", "11\r\n", "END\r\n"]);
    assert_eq!(c.cmd("flush_all noreply\r\nget a\r\n"), "END\r\n");
    assert_eq!(c.cmd("set a 0 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("flush_all 0 noreply\r\nget a\r\n"), "END\r\n");
}

#[test]
fn pipelined_mixed_commands_answer_in_order() {
    let s = Server::start(&["-m", "8"]);
    let mut c = s.connect();
    let mut req = Vec::new();
    for i in 0..50 {
        req.extend_from_slice(format!("set k{i} {i} 0 {}\r\nv{i}\r\n", format!("v{i}").len()).as_bytes());
        req.extend_from_slice(
            format!("incr c{i} 1\r\nset n{i} 0 0 1 noreply\r\n{}\r\nincr n{i} 2\r\n", i % 10).as_bytes(),
        );
        req.extend_from_slice(format!("get k{i} n{i}\r\ndelete k{i}\r\nbogus\r\n").as_bytes());
    }
    // One write, split at an awkward place to exercise partial lines.
    let (a, b) = req.split_at(req.len() / 3 + 7);
    c.send(a);
    std::thread::sleep(Duration::from_millis(20));
    c.send(b);
    for i in 0..50 {
        assert_eq!(c.line(), "STORED\r\n");
        assert_eq!(c.line(), "NOT_FOUND\r\n");
        assert_eq!(c.line(), format!("{}\r\n", i % 10 + 2));
        let v = (i % 10 + 2).to_string();
        assert_eq!(
            c.until("END\r\n"),
            [
                format!("VALUE k{i} {i} {}\r\n", format!("v{i}").len()),
                format!("v{i}\r\n"),
                format!("VALUE n{i} 0 {}\r\n", v.len()),
                format!("{v}\r\n"),
                "END\r\n".to_string()
            ]
        );
        assert_eq!(c.line(), "DELETED\r\n");
        assert_eq!(c.line(), "ERROR\r\n");
    }
}

#[test]
fn expiry_touch_and_delayed_flush() {
    let s = Server::start(&["-m", "8"]);
    let mut c = s.connect();
    assert_eq!(c.cmd("set short 0 1 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("set touched 0 1 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("touch touched 100\r\n"), "TOUCHED\r\n");
    assert_eq!(c.cmd("set gatted 0 1 1\r\nv\r\n"), "STORED\r\n");
    c.send(b"gat 100 gatted\r\n");
    assert_eq!(c.until("END\r\n").len(), 3);
    assert_eq!(c.cmd("set neg 0 -1 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(get(&mut c, "neg"), None, "negative exptime: expired at once");
    let abs_past = "1000000000"; // beyond 30 days: a unix time, long past
    assert_eq!(c.cmd(&format!("set past 0 {abs_past} 1\r\nv\r\n")), "STORED\r\n");
    assert_eq!(get(&mut c, "past"), None);
    assert_eq!(c.cmd("set forever 0 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("flush_all 1\r\n"), "OK\r\n");
    assert_eq!(get(&mut c, "forever").as_deref(), Some("v"), "a delayed flush waits");
    // The condition itself, not a guess at how long it takes: the flush fires
    // when the server's clock passes it. `short` (1 s) expires no later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&mut c, "forever").is_some() {
        assert!(std::time::Instant::now() < deadline, "the delayed flush did not fire in 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(&mut c, "short"), None);
    assert_eq!(get(&mut c, "touched"), None, "written before the delayed flush");
    assert_eq!(get(&mut c, "forever"), None, "the delayed flush fired");
    assert_eq!(c.cmd("set after 0 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(get(&mut c, "after").as_deref(), Some("v"), "items written after the flush live");
    assert_eq!(c.cmd("flush_all\r\n"), "OK\r\n");
    assert_eq!(get(&mut c, "after"), None);
    assert_eq!(c.cmd("flush_all abc\r\n"), "CLIENT_ERROR invalid exptime argument\r\n");
    assert_eq!(c.cmd("flush_all 1 2 3\r\n"), "ERROR\r\n");
    // A line with the wrong token count is not a flush_all at all.
    assert_eq!(stats(&mut c, "")["cmd_flush"], "3");
}

#[test]
fn stats_version_verbosity_quit() {
    let s = Server::start(&["-m", "8"]);
    let mut c = s.connect();
    assert_eq!(c.cmd("set a 0 0 1\r\n1\r\nget a b\r\n"), "STORED\r\n");
    assert_eq!(c.until("END\r\n").len(), 3);
    let st = stats(&mut c, "");
    for f in [
        "pid",
        "uptime",
        "time",
        "version",
        "pointer_size",
        "rusage_user",
        "rusage_system",
        "curr_connections",
        "total_connections",
        "cmd_get",
        "cmd_set",
        "cmd_flush",
        "cmd_touch",
        "get_hits",
        "get_misses",
        "get_expired",
        "delete_hits",
        "delete_misses",
        "incr_hits",
        "incr_misses",
        "decr_hits",
        "decr_misses",
        "cas_hits",
        "cas_misses",
        "cas_badval",
        "touch_hits",
        "touch_misses",
        "bytes_read",
        "bytes_written",
        "limit_maxbytes",
        "threads",
        "bytes",
        "curr_items",
        "total_items",
        "evictions",
        "reclaimed",
        "log_capacity",
        "log_head",
        "log_tail",
        "hugepages",
    ] {
        assert!(st.contains_key(f), "stats lacks {f}");
    }
    assert_eq!((st["cmd_get"].as_str(), st["get_hits"].as_str(), st["get_misses"].as_str()), ("2", "1", "1"));
    assert_eq!((st["curr_items"].as_str(), st["cmd_set"].as_str()), ("1", "1"));
    assert!(st["version"].starts_with("1.6."));
    let set = stats(&mut c, "settings");
    assert_eq!(set["maxbytes"], (8u64 << 20).to_string());
    assert_eq!(set["item_size_max"], "1048576");
    assert_eq!(stats(&mut c, "items")["items:1:number"], "1");
    let slabs = stats(&mut c, "slabs");
    assert_eq!(slabs["active_slabs"], "1");
    assert_eq!(slabs["1:get_hits"], "1");
    assert_eq!(stats(&mut c, "sizes")["sizes_status"], "disabled");
    assert_eq!(c.cmd("stats nonsense\r\n"), "ERROR\r\n");
    assert_eq!(c.cmd("stats noreply\r\n"), "ERROR\r\n");
    assert_eq!(c.cmd("stats reset\r\n"), "RESET\r\n");
    assert_eq!(stats(&mut c, "")["cmd_get"], "0");
    assert!(c.cmd("version\r\n").starts_with("VERSION 1.6."));
    assert_eq!(c.cmd("verbosity 1\r\n"), "OK\r\n");
    assert_eq!(stats(&mut c, "settings")["verbosity"], "1");
    assert_eq!(c.cmd("verbosity\r\n"), "ERROR\r\n");
    assert_eq!(c.cmd("verbosity abc\r\n"), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(c.cmd("verbosity 0\r\n"), "OK\r\n");
    c.send(b"quit\r\nversion\r\n");
    assert!(c.closed(), "quit closes without answering what follows");
    let mut d = s.connect();
    assert!(d.cmd("version\r\n").starts_with("VERSION"));
}

/// A fresh connection still works and the sentinel items are unchanged.
fn assert_intact(s: &Server, items: &[(&str, &str)]) {
    let mut c = s.connect();
    for (k, v) in items {
        assert_eq!(get(&mut c, k).as_deref(), Some(*v), "item {k} changed");
    }
    let st = stats(&mut c, "");
    assert_eq!(st["curr_items"], items.len().to_string(), "items appeared or vanished");
}

#[test]
fn bad_input_gets_memcached_replies_and_changes_nothing() {
    let s = Server::start(&["-m", "8", "-I", "64k"]);
    let mut setup = s.connect();
    let items = [("keep", "precious"), ("k", "orig"), ("n", "7")];
    for (k, v) in items {
        assert_eq!(setup.cmd(&format!("set {k} 0 0 {}\r\n{v}\r\n", v.len())), "STORED\r\n");
    }
    // A connection in the middle of a command while others misbehave.
    let mut slow = s.connect();
    slow.send(b"set slow 0 0 10\r\nabc");

    let long = "x".repeat(251);
    let big = "y".repeat(64 * 1024 + 1);
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("bogus\r\n".into(), vec!["ERROR\r\n"]),
        ("GeT k\r\n".into(), vec!["ERROR\r\n"]),
        ("\r\n".into(), vec!["ERROR\r\n"]),
        ("set k 0 0\r\n".into(), vec!["ERROR\r\n"]),
        ("set k abc 0 4\r\nnope\r\n".into(), vec!["CLIENT_ERROR bad command line format\r\n", "ERROR\r\n"]),
        ("set k 0 abc 4\r\nnope\r\n".into(), vec!["CLIENT_ERROR bad command line format\r\n", "ERROR\r\n"]),
        ("set k 0 0 abc\r\n".into(), vec!["CLIENT_ERROR bad command line format\r\n"]),
        ("set k -1 0 4\r\nnope\r\n".into(), vec!["CLIENT_ERROR bad command line format\r\n", "ERROR\r\n"]),
        ("set k 0 0 -1\r\nnope\r\n".into(), vec!["CLIENT_ERROR bad command line format\r\n", "ERROR\r\n"]),
        ("set k 0 0 2\r\nnope\r\n".into(), vec!["CLIENT_ERROR bad data chunk\r\n", "ERROR\r\n"]),
        ("replace k 0 0 6\r\nno\r\n\r\nxx".into(), vec!["CLIENT_ERROR bad data chunk\r\n"]),
        ("cas k 0 0 4 1 2 3\r\nnope\r\n".into(), vec!["ERROR\r\n", "ERROR\r\n"]),
        // (A too-large set of an existing key removes it, as memcached: not here.)
        (format!("set fresh 0 0 {}\r\n{big}\r\n", big.len()), vec!["SERVER_ERROR object too large for cache\r\n"]),
        (format!("append k 0 0 {}\r\n{big}\r\n", big.len()), vec!["SERVER_ERROR object too large for cache\r\n"]),
        (format!("set {long} 0 0 4\r\nnope\r\n"), vec!["CLIENT_ERROR bad command line format\r\n"]),
        // The value is swallowed, never run: "delete k" must not happen.
        (format!("set {long} 0 0 8\r\ndelete k\r\n"), vec!["CLIENT_ERROR bad command line format\r\n"]),
        (format!("get keep {long}\r\n"), vec!["CLIENT_ERROR bad command line format\r\n"]),
        // Control bytes and DEL are key bytes like any other, as in memcached.
        ("get keep bad\x7fkey \x10k\r\n".into(), vec!["VALUE keep 0 8\r\n", "precious\r\n", "END\r\n"]),
        (format!("delete {long}\r\n"), vec!["CLIENT_ERROR bad command line format\r\n"]),
        (format!("incr {long} 1\r\n"), vec!["CLIENT_ERROR bad command line format\r\n"]),
        (format!("touch {long} 1\r\n"), vec!["CLIENT_ERROR bad command line format\r\n"]),
        ("incr n abc\r\n".into(), vec!["CLIENT_ERROR invalid numeric delta argument\r\n"]),
        ("incr n -5\r\n".into(), vec!["CLIENT_ERROR invalid numeric delta argument\r\n"]),
        ("incr k 1\r\n".into(), vec!["CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"]),
        ("touch k abc\r\n".into(), vec!["CLIENT_ERROR invalid exptime argument\r\n"]),
        ("delete k 1\r\n".into(), vec!["CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"]),
        ("flush_all never\r\n".into(), vec!["CLIENT_ERROR invalid exptime argument\r\n"]),
        ("verbosity loud\r\n".into(), vec!["CLIENT_ERROR bad command line format\r\n"]),
        ("gat soon keep\r\n".into(), vec!["CLIENT_ERROR invalid exptime argument\r\n"]),
    ];
    for (req, replies) in &cases {
        let mut c = s.connect();
        c.send(req.as_bytes());
        for r in replies {
            assert_eq!(&c.line(), r, "reply to {:?}", &req[..req.len().min(60)]);
        }
        // The same connection carries on.
        assert!(c.cmd("version\r\n").starts_with("VERSION"), "after {:?}", &req[..req.len().min(60)]);
        assert_intact(&s, &items);
    }

    // An endless line without a newline: memcached's 2048-byte rule closes it.
    let mut c = s.connect();
    c.send(&[b'z'; 3000]);
    assert!(c.closed(), "a 3000-byte line with no newline closes the connection");
    assert_intact(&s, &items);
    // ... unless it is a large multi-get, which may be long.
    let mut c = s.connect();
    let mut mget = b"get".to_vec();
    for i in 0..600 {
        mget.extend_from_slice(format!(" nokey{i}").as_bytes());
    }
    mget.extend_from_slice(b" keep");
    c.send(&mget);
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"\r\n");
    assert_eq!(c.until("END\r\n"), ["VALUE keep 0 8\r\n", "precious\r\n", "END\r\n"]);
    // An HTTP request is hung up on, as memcached does.
    let mut c = s.connect();
    c.send(b"GET / HTTP/1.1\r\n");
    assert!(c.closed());

    // The slow client finishes its set after all that.
    slow.send(b"defghij\r\n");
    assert_eq!(slow.line(), "STORED\r\n");
    assert_eq!(get(&mut slow, "slow").as_deref(), Some("abcdefghij"));
}

/// memccapable's 27 ascii tests (Debian's libmemcached-tools), when it is
/// installed; tests/conformance/memccapable.sh runs the same by hand.
#[test]
fn memccapable_ascii_passes() {
    if !common::peer("memccapable (apt-get install libmemcached-tools)", common::have("memccapable", "-h")) {
        return;
    }
    let s = Server::start(&["-m", "64"]);
    let out = std::process::Command::new("timeout")
        .args(["120", "memccapable", "-a", "-h", "127.0.0.1", "-p", &s.port.to_string()])
        .output()
        .expect("running memccapable");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let passed = text.matches("[pass]").count();
    assert!(out.status.success() && passed == 27, "memccapable -a: {passed} passed\n{text}");
}
