//! The text protocol in-process: a real store and counters, no sockets.
//! (tests/text_protocol.rs covers the same ground over TCP; these tests
//! reach what TCP cannot, such as a read-only store.)

use super::*;
use crate::memory::region::HugePages;
use crate::runtime::{Runtime, Settings};
use crate::stats::counter;
use crate::store::{Store, StoreConfig};

struct Harness {
    store: Store,
    rt: Runtime,
    session: Session,
}

impl Harness {
    fn new() -> Harness {
        let store =
            Store::new(&StoreConfig { memory_bytes: 4 << 20, max_item_size: 64 << 10, hugepages: HugePages::Off })
                .expect("store");
        let rt = Runtime::new(Settings::default(), 0);
        Harness { store, rt, session: Session::default() }
    }

    /// Feed `input` through the protocol as a connection would; returns the
    /// output and whether the protocol asked to close.
    fn run(&mut self, input: &[u8]) -> (String, bool) {
        let ctx = Ctx { store: &self.store, stats: &self.rt.workers[0], rt: &self.rt };
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            match crate::protocol::step(&mut self.session, &input[pos..], &mut out, &ctx) {
                Step::Consumed { len: n, .. } | Step::Discarded(n) => {
                    assert!(n > 0, "no progress");
                    pos += n;
                }
                Step::NeedMore | Step::Paused => break,
                Step::Close => return (String::from_utf8_lossy(&out).into_owned(), true),
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), false)
    }

    fn out(&mut self, input: &str) -> String {
        self.run(input.as_bytes()).0
    }

    fn count(&self, name: &str) -> u64 {
        counter(&self.rt.workers, name)
    }
}

#[test]
fn storage_commands_and_replies() {
    let mut h = Harness::new();
    assert_eq!(h.out("set k 5 0 3\r\nabc\r\n"), "STORED\r\n");
    assert_eq!(h.out("get k\r\n"), "VALUE k 5 3\r\nabc\r\nEND\r\n");
    assert_eq!(h.out("add k 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
    assert_eq!(h.out("replace nope 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
    assert_eq!(h.out("append k 0 0 1\r\n>\r\nprepend k 0 0 1\r\n<\r\n"), "STORED\r\nSTORED\r\n");
    assert_eq!(h.out("get k\r\n"), "VALUE k 5 5\r\n<abc>\r\nEND\r\n");
    assert_eq!(h.out("cas k 0 0 1 0\r\nx\r\n"), "EXISTS\r\n", "CAS 0 never matches");
    assert_eq!(h.out("cas nope 0 0 1 0\r\nx\r\n"), "NOT_FOUND\r\n");
    let gets = h.out("gets k\r\n");
    let cas: u64 = gets.split_whitespace().nth(4).and_then(|c| c.parse().ok()).expect("cas in gets");
    assert_eq!(h.out(&format!("cas k 1 0 1 {cas}\r\nz\r\n")), "STORED\r\n");
    assert_eq!(h.out(&format!("cas k 1 0 1 {cas}\r\nz\r\n")), "EXISTS\r\n");
    assert_eq!((h.count("cas_hits"), h.count("cas_badval"), h.count("cas_misses")), (1, 2, 1));
    assert_eq!(h.count("cmd_set"), 9);
}

#[test]
fn noreply_silences_every_reply_including_errors() {
    let mut h = Harness::new();
    let (out, _) = h.run(
        b"set k 0 0 1 noreply\r\nv\r\nadd k 0 0 1 noreply\r\nv\r\nincr k 1 noreply\r\n\
          set n 0 0 1 noreply\r\n1\r\nincr n 1 noreply\r\ndecr n 1 noreply\r\ntouch n 10 noreply\r\n\
          delete n noreply\r\ndelete n 0 noreply\r\nflush_all 10 noreply\r\nverbosity 1 noreply\r\n\
          set k 0 0 2 noreply\r\nabcdset k 0 0 x noreply\r\n",
    );
    assert_eq!(out, "");
}

#[test]
fn bad_data_chunk_resynchronises_after_the_declared_length() {
    let mut h = Harness::new();
    h.out("set k 0 0 1\r\nv\r\n");
    // 3 declared, 5 sent: the block is "abcde" (not ending "\r\n"), then "\r\n" is an empty command.
    assert_eq!(
        h.out("set k 0 0 3\r\nabcde\r\nget k\r\n"),
        "CLIENT_ERROR bad data chunk\r\nERROR\r\nVALUE k 0 1\r\nv\r\nEND\r\n"
    );
}

#[test]
fn too_large_is_swallowed_and_a_set_drops_the_old_value() {
    let mut h = Harness::new();
    h.out("set k 0 0 1\r\nv\r\nset other 0 0 1\r\no\r\n");
    let big = 64 * 1024 + 1;
    let mut req = format!("set k 0 0 {big}\r\n").into_bytes();
    let (out, _) = h.run(&req);
    assert_eq!(out, "SERVER_ERROR object too large for cache\r\n");
    assert_eq!(h.session.swallow, big + 2);
    // The value arrives in pieces and is discarded; the next command works,
    // and the old value is gone (as memcached: the client must never read
    // back what it believes it overwrote).
    req = vec![b'x'; big];
    req.extend_from_slice(b"\r\nget k\r\n");
    let (out, _) = h.run(&req);
    assert_eq!(out, "END\r\n");
    assert_eq!(h.count("store_too_large"), 1);
    // Only set does that (memcached's NREAD_SET): add, replace, append,
    // prepend and cas leave the item.
    for cmd in ["add", "replace", "append", "prepend"] {
        h.out(&format!("{cmd} other 0 0 {big} noreply\r\n"));
        h.run(&vec![b'x'; big + 2]);
    }
    h.out(&format!("cas other 0 0 {big} 1 noreply\r\n"));
    h.run(&vec![b'x'; big + 2]);
    assert_eq!(h.out("get other\r\n"), "VALUE other 0 1\r\no\r\nEND\r\n");
}

#[test]
fn partial_input_waits_without_side_effects() {
    let mut h = Harness::new();
    assert_eq!(h.out("set k 0 0 5\r\nhel"), "");
    assert_eq!(h.count("cmd_set"), 0);
    assert_eq!(h.out("get k"), "");
}

#[test]
fn read_only_refuses_every_write_and_serves_reads() {
    let mut h = Harness::new();
    h.out("set k 3 0 1\r\nv\r\nset n 0 0 1\r\n5\r\n");
    h.store.set_read_only(true);
    let writes = [
        "set k 0 0 1\r\nx\r\n",
        "add new 0 0 1\r\nx\r\n",
        "replace k 0 0 1\r\nx\r\n",
        "append k 0 0 1\r\nx\r\n",
        "prepend k 0 0 1\r\nx\r\n",
        "cas k 0 0 1 1\r\nx\r\n",
        "incr n 1\r\n",
        "decr n 1\r\n",
        "delete k\r\n",
        "touch k 10\r\n",
        "gat 10 k\r\n",
        "gats 10 k\r\n",
        "flush_all\r\n",
    ];
    for w in writes {
        assert_eq!(h.out(w), "SERVER_ERROR read-only replica\r\n", "{w:?}");
    }
    assert_eq!(h.count("readonly_refused"), writes.len() as u64);
    assert_eq!(h.out("set k 0 0 1 noreply\r\nx\r\n"), "");
    assert_eq!(h.out("get k n\r\n"), "VALUE k 3 1\r\nv\r\nVALUE n 0 1\r\n5\r\nEND\r\n");
    assert!(h.out("gets k\r\n").starts_with("VALUE k 3 1 "));
    assert!(h.out("stats\r\n").contains("STAT read_only 1\r\n"));
}

#[test]
fn counters_follow_memcached() {
    let mut h = Harness::new();
    h.out("set a 0 0 1\r\n1\r\nget a b\r\ngat 100 a b\r\ntouch a 10\r\ntouch b 10\r\n");
    h.out("incr a 1\r\nincr b 1\r\ndecr a 1\r\ndecr b 1\r\ndelete a\r\ndelete a\r\nflush_all\r\n");
    let want = [
        ("cmd_get", 2),
        ("get_hits", 1),
        ("get_misses", 1),
        ("cmd_touch", 4),
        ("touch_hits", 2),
        ("touch_misses", 2),
        ("incr_hits", 1),
        ("incr_misses", 1),
        ("decr_hits", 1),
        ("decr_misses", 1),
        ("delete_hits", 1),
        ("delete_misses", 1),
        ("cmd_flush", 1),
        ("cmd_set", 1),
    ];
    for (name, v) in want {
        assert_eq!(h.count(name), v, "{name}");
    }
    assert_eq!(h.out("stats reset\r\n"), "RESET\r\n");
    assert_eq!(h.count("cmd_get"), 0);
    assert!(h.out("stats\r\n").contains("STAT cmd_get 0\r\n"));
}

#[test]
fn stats_groups() {
    let mut h = Harness::new();
    h.out("set a 0 0 1\r\n1\r\n");
    let general = h.out("stats\r\n");
    for f in [
        "pid",
        "uptime",
        "version",
        "curr_connections",
        "cmd_get",
        "get_hits",
        "curr_items",
        "bytes",
        "limit_maxbytes",
        "threads",
        "log_capacity",
    ] {
        assert!(general.contains(&format!("STAT {f} ")), "{f} missing");
    }
    assert!(general.ends_with("END\r\n"));
    assert!(h.out("stats settings\r\n").contains("STAT item_size_max 1048576\r\n"));
    let items = h.out("stats items\r\n");
    assert!(items.starts_with("STAT items:1:number 1\r\n"), "{items}");
    let slabs = h.out("stats slabs\r\n");
    assert!(slabs.contains("STAT 1:log_capacity ") && slabs.contains("STAT active_slabs 1\r\n"), "{slabs}");
    assert_eq!(h.out("stats sizes\r\n"), "STAT sizes_status disabled\r\nEND\r\n");
    assert_eq!(h.out("stats nonsense\r\n"), "ERROR\r\n");
    assert_eq!(h.out("stats detail\r\n"), "CLIENT_ERROR usage: stats detail on|off|dump\r\n");
    h.out("flush_all\r\n");
    assert_eq!(h.out("stats items\r\n"), "END\r\n", "no items, no class");
}

#[test]
fn command_line_shapes() {
    let mut h = Harness::new();
    assert_eq!(h.out("\r\n"), "ERROR\r\n");
    assert_eq!(h.out("\n"), "ERROR\r\n");
    assert_eq!(h.out("x\r\n"), "ERROR\r\n");
    assert_eq!(h.out("GET k\r\n"), "ERROR\r\n", "commands are case-sensitive");
    assert_eq!(h.out("get\r\n"), "ERROR\r\n");
    assert_eq!(h.out("set k 0 0\r\n"), "ERROR\r\n");
    assert_eq!(h.out("   get   k   \r\n"), "END\r\n");
    assert_eq!(h.out("get k\n"), "END\r\n", "a bare \\n ends a line too");
    assert!(h.out("version\r\n").starts_with("VERSION 1.6."));
    assert_eq!(h.out("verbosity 9\r\n"), "OK\r\n");
    assert_eq!(h.rt.verbosity(), 2, "clamped to memcached's maximum");
    assert_eq!(h.out("shutdown\r\n"), "ERROR: shutdown not enabled\r\n");
    assert_eq!(h.run(b"quit\r\nget k\r\n"), (String::new(), true));
    assert_eq!(h.run(b"GET / HTTP/1.1\r\n"), (String::new(), true));
}

#[test]
fn keys_too_long_are_refused_and_control_bytes_accepted() {
    let mut h = Harness::new();
    h.out("set k 0 0 1\r\nv\r\n");
    let long = "a".repeat(251);
    assert_eq!(h.out(&format!("get k {long}\r\n")), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(
        h.out(&format!("set {long} 0 0 8\r\ndelete k\r\nget k\r\n")),
        "CLIENT_ERROR bad command line format\r\nVALUE k 0 1\r\nv\r\nEND\r\n",
        "the data block is swallowed, never run as a command"
    );
    // memcached checks a key's length only: memcaslap's keys start with 0x10.
    for key in ["\x10mcs", "a\x01b", "k\x7f", "tab\there", "cr\rin", "\u{e9}t\u{e9}"] {
        assert_eq!(h.out(&format!("set {key} 3 0 1\r\nx\r\n")), "STORED\r\n", "{key:?}");
        assert_eq!(h.out(&format!("get {key}\r\n")), format!("VALUE {key} 3 1\r\nx\r\nEND\r\n"), "{key:?}");
    }
    for cmd in ["incr a\x02 1", "decr a\x02 1", "delete a\x02", "touch a\x02 1"] {
        assert_eq!(h.out(&format!("{cmd}\r\n")), "NOT_FOUND\r\n", "{cmd:?}");
    }
    assert_eq!(h.out("gat 1 a\x02\r\n"), "END\r\n");
    // A NUL ends the line, as memcached's C string does: "set a" is too short.
    assert_eq!(h.out("set a\0b 0 0 1\r\nx\r\n"), "ERROR\r\nERROR\r\n");
    assert_eq!(h.store.snapshot().curr_items, 7);
    let ok = "k".repeat(250);
    assert_eq!(h.out(&format!("set {ok} 0 0 1\r\nv\r\n")), "STORED\r\n");
}
