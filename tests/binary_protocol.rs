//! The binary protocol over TCP against the real binary: every opcode,
//! quiet variants, CAS, opaque, and the bad-input list (each answered with
//! the status memcached 1.6 gives, the connection and data surviving where
//! memcached's would).
mod common;
use common::*;
use std::io::Write;

const GET: u8 = 0x00;
const SET: u8 = 0x01;
const ADD: u8 = 0x02;
const REPLACE: u8 = 0x03;
const DELETE: u8 = 0x04;
const INCR: u8 = 0x05;
const DECR: u8 = 0x06;
const QUIT: u8 = 0x07;
const FLUSH: u8 = 0x08;
const GETQ: u8 = 0x09;
const NOOP: u8 = 0x0a;
const VERSION: u8 = 0x0b;
const GETK: u8 = 0x0c;
const GETKQ: u8 = 0x0d;
const APPEND: u8 = 0x0e;
const PREPEND: u8 = 0x0f;
const STAT: u8 = 0x10;
const SETQ: u8 = 0x11;
const ADDQ: u8 = 0x12;
const REPLACEQ: u8 = 0x13;
const DELETEQ: u8 = 0x14;
const INCRQ: u8 = 0x15;
const DECRQ: u8 = 0x16;
const QUITQ: u8 = 0x17;
const FLUSHQ: u8 = 0x18;
const APPENDQ: u8 = 0x19;
const PREPENDQ: u8 = 0x1a;
const VERBOSITY: u8 = 0x1b;
const TOUCH: u8 = 0x1c;
const GAT: u8 = 0x1d;
const GATQ: u8 = 0x1e;
const GATK: u8 = 0x23;
const GATKQ: u8 = 0x24;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Resp {
    magic: u8,
    opcode: u8,
    status: u16,
    extras: Vec<u8>,
    key: Vec<u8>,
    value: Vec<u8>,
    opaque: u32,
    cas: u64,
}

fn packet(op: u8, key: &[u8], extras: &[u8], value: &[u8], opaque: u32, cas: u64) -> Vec<u8> {
    let mut v = vec![0x80, op];
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.push(extras.len() as u8);
    v.push(0);
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&((key.len() + extras.len() + value.len()) as u32).to_be_bytes());
    v.extend_from_slice(&opaque.to_be_bytes());
    v.extend_from_slice(&cas.to_be_bytes());
    v.extend_from_slice(extras);
    v.extend_from_slice(key);
    v.extend_from_slice(value);
    v
}

fn simple(op: u8, key: &[u8]) -> Vec<u8> {
    packet(op, key, &[], &[], 0x1234_5678, 0)
}

fn set_extras(flags: u32, exp: u32) -> Vec<u8> {
    [flags.to_be_bytes(), exp.to_be_bytes()].concat()
}

fn arith_extras(delta: u64, initial: u64, exp: u32) -> Vec<u8> {
    [&delta.to_be_bytes()[..], &initial.to_be_bytes(), &exp.to_be_bytes()].concat()
}

fn read(c: &mut Client) -> Resp {
    let h = c.bytes(24);
    let kl = u16::from_be_bytes([h[2], h[3]]) as usize;
    let el = h[4] as usize;
    let bl = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let body = c.bytes(bl);
    Resp {
        magic: h[0],
        opcode: h[1],
        status: u16::from_be_bytes([h[6], h[7]]),
        extras: body[..el].to_vec(),
        key: body[el..el + kl].to_vec(),
        value: body[el + kl..].to_vec(),
        opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
        cas: u64::from_be_bytes(h[16..24].try_into().unwrap()),
    }
}

fn call(c: &mut Client, p: Vec<u8>) -> Resp {
    c.send(&p);
    read(c)
}

fn set(c: &mut Client, key: &[u8], value: &[u8], flags: u32) -> Resp {
    call(c, packet(SET, key, &set_extras(flags, 0), value, 1, 0))
}

fn server() -> (Server, Client) {
    let s = Server::start(&["-m", "8"]);
    let c = s.connect();
    (s, c)
}

#[test]
fn get_set_getk_with_flags_cas_and_opaque() {
    let (_s, mut c) = server();
    let r = call(&mut c, packet(SET, b"k", &set_extras(0xdead, 0), b"hello", 0xcafe_f00d, 0));
    assert_eq!((r.magic, r.opcode, r.status, r.opaque), (0x81, SET, 0, 0xcafe_f00d));
    assert!(r.cas != 0 && r.value.is_empty());
    let g = call(&mut c, packet(GET, b"k", &[], &[], 77, 0));
    assert_eq!(
        (g.status, g.extras.as_slice(), g.key.as_slice(), g.value.as_slice()),
        (0, &0xdeadu32.to_be_bytes()[..], &b""[..], &b"hello"[..])
    );
    assert_eq!((g.cas, g.opaque), (r.cas, 77));
    let k = call(&mut c, simple(GETK, b"k"));
    assert_eq!((k.key.as_slice(), k.value.as_slice()), (&b"k"[..], &b"hello"[..]));
    // Misses: get says "Not found", getk returns the key.
    let m = call(&mut c, simple(GET, b"nope"));
    assert_eq!((m.status, m.value.as_slice(), m.cas), (1, &b"Not found"[..], 0));
    let mk = call(&mut c, simple(GETK, b"nope"));
    assert_eq!((mk.status, mk.key.as_slice(), mk.value.as_slice()), (1, &b"nope"[..], &b""[..]));
}

#[test]
fn add_replace_append_prepend_delete() {
    let (_s, mut c) = server();
    assert_eq!(call(&mut c, packet(ADD, b"a", &set_extras(1, 0), b"x", 0, 0)).status, 0);
    let r = call(&mut c, packet(ADD, b"a", &set_extras(1, 0), b"y", 0, 0));
    assert_eq!((r.status, r.value.as_slice()), (2, &b"Data exists for key."[..]));
    let r = call(&mut c, packet(REPLACE, b"nope", &set_extras(1, 0), b"y", 0, 0));
    assert_eq!((r.status, r.value.as_slice()), (1, &b"Not found"[..]));
    assert_eq!(call(&mut c, packet(REPLACE, b"a", &set_extras(2, 0), b"mid", 0, 0)).status, 0);
    assert_eq!(call(&mut c, packet(APPEND, b"a", &[], b">", 0, 0)).status, 0);
    assert_eq!(call(&mut c, packet(PREPEND, b"a", &[], b"<", 0, 0)).status, 0);
    let g = call(&mut c, simple(GET, b"a"));
    assert_eq!((g.value.as_slice(), g.extras.as_slice()), (&b"<mid>"[..], &2u32.to_be_bytes()[..]));
    let r = call(&mut c, packet(APPEND, b"nope", &[], b">", 0, 0));
    assert_eq!((r.status, r.value.as_slice()), (5, &b"Not stored."[..]));
    assert_eq!(call(&mut c, simple(DELETE, b"a")).status, 0);
    assert_eq!(call(&mut c, simple(DELETE, b"a")).status, 1);
    assert_eq!(call(&mut c, simple(GET, b"a")).status, 1);
}

#[test]
fn cas_on_every_storage_opcode() {
    let (_s, mut c) = server();
    let cas = set(&mut c, b"k", b"v", 0).cas;
    for op in [SET, ADD, REPLACE] {
        let r = call(&mut c, packet(op, b"k", &set_extras(0, 0), b"z", 0, cas + 1000));
        assert_eq!(r.status, 2, "op {op:#x} with a stale CAS");
        let r = call(&mut c, packet(op, b"missing", &set_extras(0, 0), b"z", 0, cas));
        assert_eq!(r.status, 1, "op {op:#x} with a CAS on a missing key");
    }
    for op in [APPEND, PREPEND] {
        assert_eq!(call(&mut c, packet(op, b"k", &[], b"z", 0, cas + 1000)).status, 2);
        assert_eq!(call(&mut c, packet(op, b"missing", &[], b"z", 0, cas)).status, 5);
    }
    assert_eq!(call(&mut c, packet(DELETE, b"k", &[], &[], 0, cas + 1000)).status, 2);
    assert_eq!(call(&mut c, packet(INCR, b"k", &arith_extras(1, 0, 0), &[], 0, cas + 1000)).status, 2);
    // The right CAS wins, once.
    let mut cur = cas;
    for op in [SET, REPLACE, ADD, APPEND, PREPEND] {
        let ext = if matches!(op, APPEND | PREPEND) { vec![] } else { set_extras(0, 0) };
        let r = call(&mut c, packet(op, b"k", &ext, b"1", 0, cur));
        assert_eq!(r.status, 0, "op {op:#x} with the current CAS");
        assert!(r.cas > cur);
        assert_eq!(call(&mut c, packet(op, b"k", &ext, b"1", 0, cur)).status, 2);
        cur = r.cas;
    }
    assert_eq!(call(&mut c, packet(DELETE, b"k", &[], &[], 0, cur)).status, 0);
}

#[test]
fn incr_decr_initial_and_errors() {
    let (_s, mut c) = server();
    let r = call(&mut c, packet(INCR, b"n", &arith_extras(1, 5, u32::MAX), &[], 0, 0));
    assert_eq!((r.status, r.value.as_slice()), (1, &b"Not found"[..]));
    let r = call(&mut c, packet(INCR, b"n", &arith_extras(1, 5, 0), &[], 0, 0));
    assert_eq!((r.status, r.value.as_slice()), (0, &5u64.to_be_bytes()[..]));
    let r = call(&mut c, packet(INCR, b"n", &arith_extras(10, 5, 0), &[], 0, 0));
    assert_eq!(r.value, 15u64.to_be_bytes());
    let r = call(&mut c, packet(DECR, b"n", &arith_extras(100, 5, 0), &[], 0, 0));
    assert_eq!(r.value, 0u64.to_be_bytes());
    assert_eq!(call(&mut c, simple(GET, b"n")).value, b"0 ", "memcached pads a shrinking number");
    set(&mut c, b"s", b"abc", 0);
    let r = call(&mut c, packet(INCR, b"s", &arith_extras(1, 0, 0), &[], 0, 0));
    assert_eq!((r.status, r.value.as_slice()), (6, &b"Non-numeric server-side value for incr or decr"[..]));
    set(&mut c, b"m", u64::MAX.to_string().as_bytes(), 0);
    assert_eq!(call(&mut c, packet(INCR, b"m", &arith_extras(2, 0, 0), &[], 0, 0)).value, 1u64.to_be_bytes());
}

#[test]
fn touch_gat_gatk() {
    let (_s, mut c) = server();
    let cas = set(&mut c, b"t", b"val", 9).cas;
    let r = call(&mut c, packet(TOUCH, b"t", &100u32.to_be_bytes(), &[], 3, 0));
    assert_eq!((r.status, r.extras.as_slice(), r.value.as_slice(), r.cas), (0, &9u32.to_be_bytes()[..], &b""[..], cas));
    let r = call(&mut c, packet(GAT, b"t", &100u32.to_be_bytes(), &[], 3, 0));
    assert_eq!((r.status, r.value.as_slice(), r.key.as_slice()), (0, &b"val"[..], &b""[..]));
    let r = call(&mut c, packet(GATK, b"t", &100u32.to_be_bytes(), &[], 3, 0));
    assert_eq!((r.key.as_slice(), r.value.as_slice()), (&b"t"[..], &b"val"[..]));
    assert_eq!(call(&mut c, packet(TOUCH, b"none", &1u32.to_be_bytes(), &[], 0, 0)).status, 1);
    let r = call(&mut c, packet(GATK, b"none", &1u32.to_be_bytes(), &[], 0, 0));
    assert_eq!((r.status, r.key.as_slice()), (1, &b"none"[..]));
    // An absolute exptime in the past (beyond 30 days = absolute) expires it.
    call(&mut c, packet(TOUCH, b"t", &2_592_001u32.to_be_bytes(), &[], 0, 0));
    assert_eq!(call(&mut c, simple(GET, b"t")).status, 1);
}

#[test]
fn quiet_variants_answer_only_errors_and_noop_flushes_in_order() {
    let (_s, mut c) = server();
    let mut batch = Vec::new();
    batch.extend(packet(SETQ, b"q", &set_extras(0, 0), b"1", 1, 0)); // silent
    batch.extend(packet(ADDQ, b"q", &set_extras(0, 0), b"1", 2, 0)); // EEXISTS
    batch.extend(packet(GETQ, b"miss", &[], &[], 3, 0)); // silent
    batch.extend(packet(GETQ, b"q", &[], &[], 4, 0)); // hit
    batch.extend(packet(GETKQ, b"q", &[], &[], 5, 0)); // hit with key
    batch.extend(packet(REPLACEQ, b"miss", &set_extras(0, 0), b"1", 6, 0)); // ENOENT
    batch.extend(packet(APPENDQ, b"q", &[], b"2", 7, 0)); // silent
    batch.extend(packet(PREPENDQ, b"q", &[], b"0", 8, 0)); // silent
    batch.extend(packet(INCRQ, b"q", &arith_extras(1, 0, 0), &[], 9, 0)); // silent
    batch.extend(packet(DECRQ, b"miss", &arith_extras(1, 0, u32::MAX), &[], 10, 0)); // ENOENT
    batch.extend(packet(DELETEQ, b"miss", &[], &[], 11, 0)); // ENOENT
    batch.extend(packet(GATQ, b"miss", &0u32.to_be_bytes(), &[], 12, 0)); // silent
    batch.extend(packet(GATKQ, b"q", &0u32.to_be_bytes(), &[], 13, 0)); // hit
    batch.extend(packet(NOOP, b"", &[], &[], 14, 0));
    c.send(&batch);
    let mut got = Vec::new();
    loop {
        let r = read(&mut c);
        got.push((r.opaque, r.status, r.value.clone()));
        if r.opcode == NOOP {
            break;
        }
    }
    assert_eq!(
        got,
        vec![
            (2, 2, b"Data exists for key.".to_vec()),
            (4, 0, b"1".to_vec()),
            (5, 0, b"1".to_vec()),
            (6, 1, b"Not found".to_vec()),
            (10, 1, b"Not found".to_vec()),
            (11, 1, b"Not found".to_vec()),
            (13, 0, b"13 ".to_vec()),
            (14, 0, vec![]),
        ]
    );
    // flushq is silent too; the flush took effect.
    c.send(&[simple(FLUSHQ, b""), simple(NOOP, b"")].concat());
    assert_eq!(read(&mut c).opcode, NOOP);
    assert_eq!(call(&mut c, simple(GET, b"q")).status, 1);
}

#[test]
fn noop_version_flush_verbosity_stat() {
    let (_s, mut c) = server();
    assert_eq!(call(&mut c, simple(NOOP, b"")).status, 0);
    let v = call(&mut c, simple(VERSION, b""));
    assert!(v.value.starts_with(b"1.6."), "{:?}", v.value);
    set(&mut c, b"f", b"v", 0);
    assert_eq!(call(&mut c, simple(FLUSH, b"")).status, 0);
    assert_eq!(call(&mut c, simple(GET, b"f")).status, 1);
    // flush with a delay: the item lives until then.
    set(&mut c, b"f", b"v", 0);
    assert_eq!(call(&mut c, packet(FLUSH, b"", &100u32.to_be_bytes(), &[], 0, 0)).status, 0);
    assert_eq!(call(&mut c, simple(GET, b"f")).status, 0);
    assert_eq!(call(&mut c, packet(VERBOSITY, b"", &1u32.to_be_bytes(), &[], 0, 0)).status, 0);
    // stat: one packet per line, ended by an empty one.
    c.send(&simple(STAT, b""));
    let mut names = Vec::new();
    loop {
        let r = read(&mut c);
        assert_eq!((r.status, r.opaque), (0, 0x1234_5678));
        if r.key.is_empty() {
            break;
        }
        names.push(String::from_utf8(r.key).unwrap());
    }
    assert!(names.iter().any(|n| n == "pid") && names.iter().any(|n| n == "cmd_get"), "{names:?}");
    c.send(&simple(STAT, b"settings"));
    let first = read(&mut c);
    assert_eq!(first.key, b"maxbytes");
    while !read(&mut c).key.is_empty() {}
    let r = call(&mut c, simple(STAT, b"nonsense"));
    assert_eq!((r.status, r.value.as_slice()), (1, &b"Not found"[..]));
}

#[test]
fn unknown_and_sasl_opcodes_answer_unknown_command_and_carry_on() {
    let (_s, mut c) = server();
    for op in [0x20u8, 0x3f, 0x50, 0xff] {
        let r = call(&mut c, packet(op, b"", &[], b"", 5, 0));
        assert_eq!((r.opcode, r.status, r.value.as_slice(), r.opaque), (op, 0x81, &b"Unknown command"[..], 5));
    }
    // With a body: it is swallowed, the next request is read correctly.
    for op in [0x21u8, 0x22] {
        let r = call(&mut c, packet(op, b"PLAIN", &[], b"\0user\0pass", 6, 0));
        assert_eq!(r.status, 0x81);
    }
    let r = call(&mut c, packet(0x40, b"", &[], b"some body", 7, 0));
    assert_eq!(r.status, 0x81);
    assert_eq!(call(&mut c, simple(NOOP, b"")).status, 0);
}

#[test]
fn quit_and_quitq_close() {
    let (s, mut c) = server();
    let r = call(&mut c, simple(QUIT, b""));
    assert_eq!((r.opcode, r.status), (QUIT, 0));
    assert!(c.closed());
    let mut c = s.connect();
    c.send(&simple(QUITQ, b""));
    assert!(c.closed());
}

#[test]
fn inconsistent_lengths_answer_unknown_command_and_close_data_survives() {
    let (s, mut c) = server();
    set(&mut c, b"keep", b"safe", 0);
    let mut p = simple(GET, b"foo");
    p[8..12].copy_from_slice(&1u32.to_be_bytes()); // body shorter than the key
    let r = call(&mut c, p);
    assert_eq!((r.status, r.value.as_slice()), (0x81, &b"Unknown command"[..]));
    assert!(c.closed());
    let mut c = s.connect();
    assert_eq!(call(&mut c, simple(GET, b"keep")).value, b"safe");
}

#[test]
fn wrong_shape_for_an_opcode_is_einval_and_closes() {
    let (s, mut c) = server();
    let r = call(&mut c, packet(GET, b"foo", &[0, 0, 0, 1], &[], 0, 0));
    assert_eq!((r.status, r.value.as_slice()), (4, &b"Invalid arguments"[..]));
    assert!(c.closed());
    let mut c = s.connect();
    let r = call(&mut c, simple(GET, &[b'k'; 251]));
    assert_eq!(r.status, 4, "key over 250 bytes");
    assert!(c.closed());
    let mut c = s.connect();
    assert_eq!(call(&mut c, packet(FLUSH, b"", &[0; 8], &[], 0, 0)).status, 4);
    assert!(c.closed());
}

#[test]
fn wrong_magic_mid_stream_closes_data_survives() {
    let (s, mut c) = server();
    set(&mut c, b"keep", b"safe", 0);
    let mut p = simple(NOOP, b"");
    p[0] = 0x81;
    c.send(&p);
    assert!(c.closed());
    let mut c = s.connect();
    assert_eq!(call(&mut c, simple(GET, b"keep")).value, b"safe");
}

#[test]
fn truncated_packet_waits_for_the_rest() {
    let (_s, mut c) = server();
    let p = packet(SET, b"slow", &set_extras(0, 0), b"abcdef", 9, 0);
    for chunk in p.chunks(5) {
        c.stream.write_all(chunk).unwrap();
        c.stream.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(read(&mut c).status, 0);
    assert_eq!(call(&mut c, simple(GET, b"slow")).value, b"abcdef");
}

#[test]
fn oversized_body_is_e2big_swallowed_and_connection_survives() {
    let (_s, mut c) = server();
    set(&mut c, b"big", b"old", 0);
    let value = vec![b'x'; 2 << 20];
    let r = call(&mut c, packet(SET, b"big", &set_extras(0, 0), &value, 4, 0));
    assert_eq!((r.status, r.value.as_slice(), r.opaque), (3, &b"Too large."[..], 4));
    assert_eq!(call(&mut c, simple(NOOP, b"")).status, 0, "the value was swallowed");
    assert_eq!(call(&mut c, simple(GET, b"big")).status, 1, "a failed set drops the old value, as memcached");
    let r = call(&mut c, packet(APPEND, b"big", &[], &value, 4, 0));
    assert_eq!(r.status, 3);
    assert_eq!(call(&mut c, simple(NOOP, b"")).status, 0);
}

#[test]
fn pipelined_mixed_requests_in_one_write() {
    let (_s, mut c) = server();
    let mut batch = Vec::new();
    for i in 0..100u32 {
        batch.extend(packet(SET, format!("p{i}").as_bytes(), &set_extras(i, 0), format!("v{i}").as_bytes(), i, 0));
    }
    for i in 0..100u32 {
        batch.extend(packet(GET, format!("p{i}").as_bytes(), &[], &[], 1000 + i, 0));
    }
    c.send(&batch);
    for i in 0..100u32 {
        assert_eq!(read(&mut c).opaque, i);
    }
    for i in 0..100u32 {
        let r = read(&mut c);
        assert_eq!((r.opaque, r.value), (1000 + i, format!("v{i}").into_bytes()));
    }
}
