//! The edge cases of keys and of too-large stores, one op at a time in
//! every protocol, against memcached (part of tests/differential.rs).

use super::*;

fn text(line: &str, data: Option<&str>) -> Op {
    Op::Text { line: line.into(), data: data.map(String::from), key: String::new(), cas: CasPick::None }
}

fn meta(line: &str, data: Option<&str>) -> Op {
    Op::Meta { line: line.into(), data: data.map(String::from), key: String::new(), cas: CasPick::None }
}

fn bin(op: u8, key: &str, value: &str) -> Op {
    let extras = if matches!(op, 0x01..=0x03) { vec![0, 0, 0, 5, 0, 0, 0, 0] } else { vec![] };
    Op::Bin { op, key: key.into(), extras, value: value.into(), cas: CasPick::None, quiet: false }
}

/// The edge cases of keys and of a too-large store, one by one, in every
/// protocol: each op's replies must be memcached's, and a few are also
/// checked against what memcached is known to answer.
fn edge_cases() -> Vec<(Op, Option<&'static [&'static str]>)> {
    let mut v: Vec<(Op, Option<&'static [&'static str]>)> = Vec::new();
    // Keys with control bytes, DEL and high bytes: accepted as any other.
    let odd: Vec<char> = (1u8..0x20).chain([0x7f, 0x80, 0xc3, 0xff]).filter(|&b| b != b'\n').map(char::from).collect();
    for c in &odd {
        let k = format!("t{c}k");
        v.push((text(&format!("set {k} 1 0 1"), Some("x")), Some(&["STORED"])));
        v.push((text(&format!("get {k} {c}{c}"), None), None));
        let m = format!("m{c}k");
        v.push((meta(&format!("ms {m} 1 T0 F2"), Some("y")), Some(&["HD"])));
        v.push((meta(&format!("mg {m} v k f"), None), None));
        let b = format!("b{c}k");
        v.push((bin(0x01, &b, "z"), None));
        v.push((bin(0x0c, &b, ""), None));
        v.push((text(&format!("get {b} {m} {k}"), None), None));
    }
    // Keys only binary and base64 meta can carry: a space, a NUL, a newline.
    for (i, k) in ["s p", "n\0l", "l\nf", "\0"].iter().enumerate() {
        let k64 = base64(&wire(k));
        v.push((bin(0x01, k, "v"), None));
        v.push((meta(&format!("mg {k64} b v k"), None), None));
        v.push((meta(&format!("ms {k64} 2 b k"), Some("ab")), None));
        v.push((meta(&format!("mg {k64} b v"), None), None));
        v.push((meta(&format!("me {k64} b"), None), None));
        v.push((bin(0x0c, k, ""), None));
        v.push((meta(&format!("md {k64} b k"), None), None));
        v.push((meta(&format!("mg k{i} b"), None), None));
    }
    // A NUL ends a text line, as memcached's C string does.
    v.push((text("set nul\0x 0 0 1", Some("x")), Some(&["ERROR", "ERROR"])));
    v.push((text("get nul\0x", None), Some(&["END"])));
    // A set over -I answers an error and removes the old value, in every
    // protocol; add, replace, append, prepend and cas leave it.
    for (cmd, gone) in [("set", true), ("add", false), ("replace", false), ("append", false), ("cas", false)] {
        let k = format!("big-{cmd}");
        let tail = if cmd == "cas" { " 1" } else { "" };
        v.push((text(&format!("set {k} 0 0 3"), Some("old")), Some(&["STORED"])));
        v.push((text(&format!("{cmd} {k} 0 0 {BIG_LEN}{tail}"), Some(BIG)), None));
        let after: &'static [&'static str] = if gone { &["END"] } else { &["VALUE big-add 0 3", "old", "END"] };
        v.push((text(&format!("get {k}"), None), if cmd == "add" || gone { Some(after) } else { None }));
    }
    v.push((text("set big-noreply 0 0 3", Some("old")), Some(&["STORED"])));
    v.push((text(&format!("set big-noreply 0 0 {BIG_LEN} noreply"), Some(BIG)), Some(&[])));
    v.push((text("get big-noreply", None), Some(&["END"])));
    for mode in ["", " MS", " ME", " MR", " MA", " MP"] {
        v.push((meta("ms big-meta 3", Some("old")), Some(&["HD"])));
        v.push((meta(&format!("ms big-meta {BIG_LEN}{mode}"), Some(BIG)), None));
        v.push((meta("mg big-meta v", None), Some(&["EN"])));
    }
    for op in [0x01, 0x02, 0x03] {
        v.push((bin(0x01, "big-bin", "old"), None));
        v.push((bin(op, "big-bin", BIG), None));
        v.push((bin(0x0c, "big-bin", ""), None));
    }
    v
}

#[test]
fn edge_cases_of_keys_and_sizes_agree_with_memcached() {
    if !common::peer(MEMCACHED, std::path::Path::new(MEMCACHED).exists()) {
        return;
    }
    let mc = Memcached::start();
    let lm = Server::start(&["-m", "64"]);
    let (mut a, mut b) = (Conns::new(mc.port), Conns::new(lm.port));
    for (op, known) in edge_cases() {
        let (ra, rb) = (run(&mut a, &op), run(&mut b, &op));
        if let Some(want) = known {
            assert_eq!(ra, want.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "memcached's reply to {op:?}");
        }
        assert!(same(&ra, &rb), "{op:?}\n    memcached:    {ra:?}\n    logmemcached: {rb:?}");
    }
}
