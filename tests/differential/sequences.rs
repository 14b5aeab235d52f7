//! Fixed sequences against memcached (part of tests/differential.rs): the
//! meta protocol's stale, win and recache tokens with a low CAS, flush_all's
//! time rules, and a small `-m`. Each reply must be memcached's, and the
//! known ones are checked against what memcached 1.6.18 answers, so a
//! change on either side shows.

use super::*;

fn text(line: &str, data: Option<&str>) -> Op {
    Op::Text { line: line.into(), data: data.map(String::from), key: String::new(), cas: CasPick::None }
}

/// A meta op on `key`; `{C}` in the line is the key's latest CAS picked by `cas`.
fn meta(line: &str, data: Option<&str>, key: &str, cas: CasPick) -> Op {
    Op::Meta { line: line.into(), data: data.map(String::from), key: key.into(), cas }
}

fn check(a: &mut Conns, b: &mut Conns, ops: &[(Op, Option<&[&str]>)]) {
    for (op, known) in ops {
        let (ra, rb) = (run(a, op), run(b, op));
        if let Some(want) = known {
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(ra, want, "memcached's reply to {op:?}");
        }
        assert!(same(&ra, &rb), "{op:?}\n    memcached:    {ra:?}\n    logmemcached: {rb:?}");
    }
}

/// `ms I` with a CAS lower than the item's stores the value as stale (HD,
/// and the next reader wins: X W); with a higher one it is EX; a win token
/// handed out (N, R, a stale item) makes later readers see Z, until the
/// item is replaced or invalidated again.
/// No CAS on the line.
const NO: CasPick = CasPick::None;

fn tokens() -> Vec<(Op, Option<&'static [&'static str]>)> {
    use CasPick::{Low, Right, Wrong};
    let m = |l: &str, d: Option<&str>, c: CasPick| meta(l, d, "tk", c);
    vec![
        (m("ms tk 1 c", Some("a"), NO), Some(&["HD c#0"])),
        (m("ms tk 1 c", Some("b"), NO), Some(&["HD c#1"])),
        // A lower CAS with I: stored stale, keeping the item's TTL.
        (m("ms tk 1 C{C} I c", Some("x"), Low), Some(&["HD c#2"])),
        (m("mg tk v c", None, NO), Some(&["VA 1 c#2 X W", "x"])),
        (m("mg tk v c", None, NO), Some(&["VA 1 c#2 Z X", "x"])),
        // A higher CAS with I is no stale store: EX.
        (m("ms tk 1 C{C} I", Some("y"), Wrong), Some(&["EX"])),
        // Without I a lower CAS is EX too.
        (m("ms tk 1 C{C}", Some("y"), Low), Some(&["EX"])),
        // A stale store keeps the token that is out: still Z.
        (m("ms tk 1 C{C} I c", Some("z"), Low), None),
        (m("mg tk v c", None, NO), None),
        // md I clears the token: the next reader wins again, once.
        (m("md tk I", None, NO), Some(&["HD"])),
        (m("mg tk c", None, NO), None),
        (m("mg tk c", None, NO), None),
        // The right CAS replaces the item: fresh, no token.
        (m("ms tk 1 C{C} I", Some("r"), Right), Some(&["HD"])),
        (m("mg tk v", None, NO), Some(&["VA 1", "r"])),
        // Vivify: the first gets W, the rest Z; a set replaces the placeholder.
        (meta("mg tn N30 c", None, "tn", NO), Some(&["HD c#5 W"])),
        (meta("mg tn N30 c", None, "tn", NO), Some(&["HD c#5 Z"])),
        (meta("mg tn c", None, "tn", NO), Some(&["HD c#5 Z"])),
        (meta("ms tn 1 T30", Some("v"), "tn", NO), Some(&["HD"])),
        // Recache: win when the TTL is below R, once; T keeps the token.
        (meta("mg tn R40 c t", None, "tn", NO), None),
        (meta("mg tn R40 c", None, "tn", NO), None),
        (meta("mg tn T100 c", None, "tn", NO), None),
        (meta("mg tn R40 c", None, "tn", NO), None),
        (text("touch tn 20", None), Some(&["TOUCHED"])),
        (meta("mg tn R40 c", None, "tn", NO), None),
        // An invalidated item with a new TTL, then a stale write-back.
        (meta("md tn I T30", None, "tn", NO), Some(&["HD"])),
        (meta("mg tn c t", None, "tn", NO), None),
        (meta("ms tn 1 C{C} I", Some("q"), "tn", Low), Some(&["HD"])),
        (meta("mg tn c t", None, "tn", NO), None),
        // Other modes with a low CAS and I: replace is a CAS set (stale),
        // append/prepend check it (EX), add ignores it (NS on a hit).
        (meta("ms tm 1", Some("a"), "tm", NO), Some(&["HD"])),
        (meta("ms tm 1", Some("b"), "tm", NO), Some(&["HD"])),
        (meta("ms tm 1 C{C} I MR", Some("x"), "tm", Low), Some(&["HD"])),
        (meta("ms tm 1 C{C} I MA", Some("x"), "tm", Low), Some(&["EX"])),
        (meta("ms tm 1 C{C} I MP", Some("x"), "tm", Low), Some(&["EX"])),
        (meta("ms tm 1 C{C} I ME", Some("x"), "tm", Low), Some(&["NS"])),
        (meta("mg tm v c", None, "tm", NO), None),
        // md and ma with a low CAS: EX.
        (meta("md tm C{C}", None, "tm", Low), Some(&["EX"])),
        (meta("ma tm C{C}", None, "tm", Low), None),
    ]
}

#[test]
fn meta_tokens_with_a_low_cas_agree_with_memcached() {
    if !common::peer(MEMCACHED, std::path::Path::new(MEMCACHED).exists()) {
        return;
    }
    let mc = Memcached::start();
    let lm = Server::start(&["-m", "64"]);
    let (mut a, mut b) = (Conns::new(mc.port), Conns::new(lm.port));
    check(&mut a, &mut b, &tokens());
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// memcached 1.6's flush_all time rules: an absolute time from before the
/// server started flushes nothing; a past one after it flushes everything
/// now (items written later live); `flush_all 1` flushes at once.
#[test]
fn flush_all_with_past_and_short_times_agrees_with_memcached() {
    if !common::peer(MEMCACHED, std::path::Path::new(MEMCACHED).exists()) {
        return;
    }
    let mc = Memcached::start();
    let lm = Server::start(&["-m", "64"]);
    let (mut a, mut b) = (Conns::new(mc.port), Conns::new(lm.port));
    let set = |k: &str| (text(&format!("set {k} 0 0 1"), Some("v")), Some(&["STORED"][..]));
    let long_ago = "1000000000"; // 2001: long before either server started
    let ops: Vec<(Op, Option<&[&str]>)> = vec![
        set("f1"),
        (text(&format!("flush_all {long_ago}"), None), Some(&["OK"])),
        (text("get f1", None), Some(&["VALUE f1 0 1", "v", "END"])),
        (text(&format!("flush_all {}", now() - 2), None), Some(&["OK"])),
        (text("get f1", None), Some(&["END"])),
        set("f2"),
        (text("get f2", None), None),
        (text("flush_all 1", None), Some(&["OK"])),
        (text("get f2", None), Some(&["END"])),
        (text("flush_all 0", None), Some(&["OK"])),
        set("f3"),
        (text("get f3", None), None),
        (text("flush_all -5", None), Some(&["OK"])),
        (text("get f3", None), Some(&["END"])),
        set("f4"),
        (text("flush_all noreply", None), Some(&[])),
        set("f5"),
        (text("get f4 f5", None), Some(&["VALUE f5 0 1", "v", "END"])),
    ];
    check(&mut a, &mut b, &ops);
}

/// `-m 2` with the default `-I 1m`: memcached starts and stores a 1 MB
/// value; so do we (-I is lowered to what half the log holds, with a notice).
#[test]
fn a_two_megabyte_cache_starts_and_stores_a_megabyte_like_memcached() {
    if !common::peer(MEMCACHED, std::path::Path::new(MEMCACHED).exists()) {
        return;
    }
    let mc = Memcached::start_with(&["-m", "2"]);
    let lm = Server::start(&["-m", "2"]);
    let (mut a, mut b) = (Conns::new(mc.port), Conns::new(lm.port));
    let big = "v".repeat(1_000_000);
    let ops: Vec<(Op, Option<&[&str]>)> = vec![
        (text("set m 0 0 1000000", Some(&big)), Some(&["STORED"])),
        (text("set n 0 0 5", Some("small")), Some(&["STORED"])),
        (text("get n", None), Some(&["VALUE n 0 5", "small", "END"])),
    ];
    check(&mut a, &mut b, &ops);
    let got = run(&mut b, &text("get m", None));
    assert_eq!(got.len(), 3, "the megabyte is there");
    assert_eq!(got[1].len(), 1_000_000);
}

/// memcached 1.6's tuning and other commands a log gives no meaning to,
/// answered as memcached answers (argument checks included).
#[test]
fn tuning_and_other_commands_agree_with_memcached() {
    if !common::peer(MEMCACHED, std::path::Path::new(MEMCACHED).exists()) {
        return;
    }
    let mc = Memcached::start();
    let lm = Server::start(&["-m", "64"]);
    let (mut a, mut b) = (Conns::new(mc.port), Conns::new(lm.port));
    let lines = [
        "cache_memlimit 64",
        "cache_memlimit 64 noreply",
        "cache_memlimit 1",
        "cache_memlimit",
        "cache_memlimit x",
        "cache_memlimit -5",
        "slabs reassign 1 1",
        "slabs reassign 0 1",
        "slabs reassign 2 1",
        "slabs reassign -1 1",
        "slabs reassign 1 39",
        "slabs reassign 1 40",
        "slabs reassign a 1",
        "slabs reassign 1",
        "slabs reassign 1 2 3",
        "slabs automove 0",
        "slabs automove 2",
        "slabs automove 3",
        "slabs automove x",
        "slabs",
        "lru mode flat",
        "lru mode segmented",
        "lru mode foo",
        "lru mode",
        "lru tune 10 25 0.1 2",
        "lru tune 10 25 0.1 2 5",
        "lru tune 10 25 0.1",
        "lru tune a b c d",
        "lru temp_ttl 10",
        "lru temp_ttl -1",
        "lru temp_ttl x",
        "lru",
        "extstore foo",
        "misbehave",
        "debugtime 10",
        "mcp_config_pools",
        "stats extstore",
        "stats proxy",
        "stats detail",
        "stats detail foo",
    ];
    let ops: Vec<(Op, Option<&[&str]>)> = lines.iter().map(|l| (text(l, None), None)).collect();
    check(&mut a, &mut b, &ops);
    // A limit other than -m: memcached resizes; the log cannot (one region
    // mapped at start), and says so.
    let r = run(&mut b, &text("cache_memlimit 100", None));
    assert_eq!(r.len(), 1);
    assert!(r[0].starts_with("SERVER_ERROR cache_memlimit cannot resize the log"), "{r:?}");
    assert_eq!(run(&mut a, &text("cache_memlimit 100", None)), ["OK"]);
}

fn bin_op(op: u8, key: &str, value: &str) -> Op {
    let extras = if matches!(op, 0x01..=0x03) { vec![0, 0, 0, 5, 0, 0, 0, 0] } else { vec![] };
    Op::Bin { op, key: key.into(), extras, value: value.into(), cas: CasPick::None, quiet: false }
}

/// A dump's lines in order of prefix (memcached's order is its hash table's).
fn sorted_dump(lines: &[String]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for l in lines {
        // A binary reply carries the dump in its body, lines escaped.
        match l.find(" body=\"") {
            Some(p) => {
                all.push(l[..p].to_string());
                let body = l[p + 7..].trim_end_matches('"').replace("\\r\\n", "\n");
                all.extend(body.lines().map(String::from));
            }
            None => all.push(l.clone()),
        }
    }
    all.sort();
    all
}

/// `stats detail on|off|dump` in text and binary: the same per-prefix
/// counts as memcached for every command memcached counts (and none for
/// those it does not).
#[test]
fn stats_detail_agrees_with_memcached() {
    if !common::peer(MEMCACHED, std::path::Path::new(MEMCACHED).exists()) {
        return;
    }
    let mc = Memcached::start();
    let lm = Server::start(&["-m", "64"]);
    let (mut a, mut b) = (Conns::new(mc.port), Conns::new(lm.port));
    let t = |l: &str, d: Option<&str>| (text(l, d), None);
    let m = |l: &str, d: Option<&str>| (meta(l, d, "", CasPick::None), None);
    let ops: Vec<(Op, Option<&[&str]>)> = vec![
        (text("stats detail dump", None), Some(&["END"])),
        (text("set a:0 0 0 1", Some("v")), Some(&["STORED"])),
        (text("stats detail on", None), Some(&["OK"])),
        t("set a:1 0 0 1", Some("v")),
        t("get a:1 b:1 nodelim", None),
        t("gets a:1", None),
        t("gat 0 c:1 a:1", None),
        t("delete d:1", None),
        t("delete a:0", None),
        t("cas e:1 0 0 1 1", Some("v")),
        t("append f:1 0 0 1", Some("v")),
        t("prepend a:1 0 0 1", Some("v")),
        t("add a:1 0 0 1", Some("v")),
        t("incr g:1 1", None),
        t("touch h:1 1", None),
        t("set nodelim 0 0 1", Some("v")),
        t("set :empty 0 0 1", Some("v")),
        m("mg i:1 v", None),
        m("ms j:1 1", Some("v")),
        m("md k:1", None),
        (bin_op(0x00, "l:1", ""), None),
        (bin_op(0x01, "m:1", "v"), None),
        (bin_op(0x04, "n:1", ""), None),
        (bin_op(0x0c, "m:1", ""), None),
        (bin_op(0x10, "detail on", ""), None),
        (bin_op(0x10, "detail foo", ""), None),
    ];
    check(&mut a, &mut b, &ops);
    for dump in [text("stats detail dump", None), bin_op(0x10, "detail dump", "")] {
        let (ra, rb) = (run(&mut a, &dump), run(&mut b, &dump));
        assert_eq!(sorted_dump(&ra), sorted_dump(&rb), "{dump:?}\n    memcached:    {ra:?}\n    logmemcached: {rb:?}");
        assert!(ra.concat().contains("PREFIX a get 3 hit 3 set 3 del 1"), "{ra:?}");
    }
    // Off: nothing more is counted; the counts stay.
    let ops: Vec<(Op, Option<&[&str]>)> = vec![
        (text("stats detail off", None), Some(&["OK"])),
        t("get a:1", None),
        (bin_op(0x10, "detail off", ""), None),
        (bin_op(0x00, "a:1", ""), None),
    ];
    check(&mut a, &mut b, &ops);
    let dump = text("stats detail dump", None);
    let (ra, rb) = (run(&mut a, &dump), run(&mut b, &dump));
    assert_eq!(sorted_dump(&ra), sorted_dump(&rb));
    assert!(ra.contains(&"PREFIX a get 3 hit 3 set 3 del 1".to_string()), "{ra:?}");
}

/// `stats conns`: memcached's block per listener and per connection, the
/// asking connection `conn_parse_cmd`, an idle one `conn_read`, each with
/// its peer's address; a closed one is gone.
#[test]
fn stats_conns_has_memcached_shape() {
    if !common::peer(MEMCACHED, std::path::Path::new(MEMCACHED).exists()) {
        return;
    }
    let mc = Memcached::start();
    let lm = Server::start(&["-m", "64"]);
    for port in [mc.port, lm.port] {
        let mut idle = Client::connect(port);
        assert!(idle.cmd("version\r\n").starts_with("VERSION "));
        let mut c = Client::connect(port);
        let stats = c.stats("conns");
        let addr = |s: &TcpStream| format!("tcp:{}", s.local_addr().unwrap());
        let fd_of = |a: &str| {
            stats
                .iter()
                .find(|(k, v)| k.ends_with(":addr") && *v == a)
                .map(|(k, _)| k.trim_end_matches(":addr").to_string())
        };
        let (me, other) =
            (fd_of(&addr(&c.stream)).expect("the asking connection"), fd_of(&addr(&idle.stream)).unwrap());
        let listen = format!("tcp:127.0.0.1:{port}");
        assert_eq!(stats[&format!("{me}:state")], "conn_parse_cmd", "port {port}: {stats:?}");
        // memcached's idle connection may still be finishing its reply
        // (conn_mwrite, conn_new_cmd) when asked; ours is between events.
        let idle_state = &stats[&format!("{other}:state")];
        if port == lm.port {
            // Its worker may still be finishing the event that answered
            // `version` (conn_parse_cmd): it reads conn_read once done.
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.stats("conns")[&format!("{other}:state")] != "conn_read" {
                assert!(Instant::now() < deadline, "an idle connection stays conn_parse_cmd: {stats:?}");
                std::thread::sleep(Duration::from_millis(5));
            }
        } else {
            assert!(idle_state.starts_with("conn_") && idle_state != "conn_parse_cmd", "{stats:?}");
        }
        assert_eq!(stats[&format!("{me}:listen_addr")], listen);
        assert!(stats[&format!("{other}:secs_since_last_cmd")].parse::<u64>().unwrap() <= 2);
        assert!(stats.iter().any(|(k, v)| k.ends_with(":state") && v == "conn_listening"), "{stats:?}");
        assert!(stats.iter().any(|(k, v)| k.ends_with(":addr") && *v == listen), "the listener: {stats:?}");
        let idle_addr = addr(&idle.stream);
        drop(idle);
        // The closed connection leaves the table (once the server saw it close).
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.stats("conns").values().any(|v| *v == idle_addr) {
            assert!(Instant::now() < deadline, "port {port}: a closed connection stays listed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `stats sizes`: disabled until `stats sizes_enable` (which, as
/// memcached, answers its status line without END); then the 32-byte
/// histogram of the items stored, following deletes and replacements.
#[test]
fn stats_sizes_agrees_with_memcached() {
    if !common::peer(MEMCACHED, std::path::Path::new(MEMCACHED).exists()) {
        return;
    }
    let mc = Memcached::start();
    let lm = Server::start(&["-m", "64"]);
    let (mut a, mut b) = (Conns::new(mc.port), Conns::new(lm.port));
    let hundred = "x".repeat(100);
    let t = |l: &str, d: Option<&str>| (text(l, d), None);
    let ops: Vec<(Op, Option<&[&str]>)> = vec![
        (text("stats sizes", None), Some(&["STAT sizes_status disabled", "END"])),
        (text("stats sizes_enable", None), Some(&["STAT sizes_status enabled"])),
        (text("stats sizes", None), Some(&["END"])),
        t("set a 0 0 1", Some("1")),
        t("set b 0 0 100", Some(&hundred)),
        t("set c 5 0 100", Some(&hundred)),
        t("set d 0 0 3", Some("abc")),
        (text("stats sizes", None), None),
        t("delete a", None),
        t("set d 0 0 100", Some(&hundred)),
        (text("stats sizes", None), None),
        (text("stats sizes_disable", None), Some(&["STAT sizes_status disabled"])),
        (text("stats sizes", None), Some(&["STAT sizes_status disabled", "END"])),
    ];
    check(&mut a, &mut b, &ops);
}
