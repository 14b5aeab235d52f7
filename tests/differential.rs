//! Differential test: one seeded random sequence of operations over the
//! binary, meta and text protocols (keys from a small set, so they collide,
//! with control bytes, DEL and high bytes among them, and base64 meta keys;
//! values over `-I` now and then; quiet/noreply at random) is sent to
//! Debian's memcached 1.6 and to logmemcached; the replies must agree. A
//! second test walks the edge cases of keys and of too-large stores one by
//! one in every protocol. CAS values are compared by equality
//! pattern (the n-th distinct CAS seen), relative times (meta `t`, `l`,
//! `me` exp/la) within a second; stats are not compared.
//!
//! Protocols: `LOGMEMCACHED_DIFF_PROTOCOLS` (comma list of binary, meta,
//! text), default `DEFAULT_PROTOCOLS`. The text part needs the full text
//! protocol (its own branch); once merged, add "text" to the default.
//! Ops per seed: `LOGMEMCACHED_DIFF_OPS` (default 1500); seeds:
//! `LOGMEMCACHED_DIFF_SEEDS` (default 3). tests/differential/sequences.rs
//! holds fixed sequences (stale/win/recache tokens, flush_all's time rules,
//! a small -m) whose replies are also checked against memcached's.
mod common;
use common::*;
#[path = "differential/edges.rs"]
mod edges;
#[path = "differential/sequences.rs"]
mod sequences;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const DEFAULT_PROTOCOLS: &str = "binary,meta,text";
const MEMCACHED: &str = "/usr/bin/memcached";
/// Keys every protocol can name: memcached checks only their length, so
/// control bytes (memcaslap starts its keys with 0x10), DEL and bytes
/// from 0x80 up are keys like any other. A key is a string of chars below
/// 256, one byte each on the wire (`wire`), so such bytes stay printable
/// in a failure's history.
const KEYS: &[&str] =
    &["k0", "k1", "k2", "k3", "k4", "k5", "\x10k6", "k\x017", "k\x7f8", "k\u{e9}\u{ff}9", "k\t\x0b10", "k\r11"];
/// Keys only binary requests and base64 meta keys (`b`) can carry: the text
/// tokenizer splits at a space and ends the line at a NUL or newline.
const BINARY_KEYS: &[&str] = &["k 12", "k\x0013", "k\n14"];

/// A value over `-I` (1 MiB on both servers), written as `BIG` in an op
/// (and its length as `BIG_LEN`) so a failure's history stays readable.
const BIG: &str = "{BIG}";
const BIG_LEN: &str = "{BIGLEN}";
const BIG_BYTES: usize = 1_200_000;

/// A value, now and then one too large to store: memcached then removes
/// the key's old value (text `set`, binary SET, meta `ms`) so that a
/// client never reads back what it believes it overwrote.
fn value_or_big(r: &mut Rng, pct: u64) -> String {
    if r.chance(pct) {
        BIG.to_string()
    } else {
        value(r)
    }
}

/// The length token of a value from `value_or_big`.
fn len_of(v: &str) -> String {
    if v == BIG {
        BIG_LEN.to_string()
    } else {
        v.len().to_string()
    }
}

/// The bytes of a test string: each char (all below 256) is one byte.
fn wire(s: &str) -> Vec<u8> {
    s.chars().map(|c| u8::try_from(u32::from(c)).expect("test strings are bytes")).collect()
}

/// The inverse of `wire`, for replies.
fn unwire(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// Standard base64 with padding, as meta's `b` flag takes keys.
fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// xorshift64*: deterministic, no crate needed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// One connection per protocol to one server.
struct Conns {
    binary: BufReader<TcpStream>,
    meta: BufReader<TcpStream>,
    text: BufReader<TcpStream>,
    /// CAS values seen, in order of first appearance (the equality pattern).
    cas_ids: HashMap<u64, usize>,
    /// Last CAS this server reported per key (to send a right one).
    last_cas: HashMap<String, u64>,
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    BufReader::new(s)
}

impl Conns {
    fn new(port: u16) -> Conns {
        Conns {
            binary: connect(port),
            meta: connect(port),
            text: connect(port),
            cas_ids: HashMap::new(),
            last_cas: HashMap::new(),
        }
    }

    fn cas_name(&mut self, cas: u64) -> String {
        if cas == 0 {
            return "0".into();
        }
        let n = self.cas_ids.len();
        format!("#{}", self.cas_ids.entry(cas).or_insert(n))
    }
}

/// How the request names a CAS: none, the key's current one, a wrong one
/// (higher than any issued), or a lower one (what `ms I` stores as stale).
#[derive(Clone, Copy, Debug)]
enum CasPick {
    None,
    Right,
    Wrong,
    Low,
}

impl CasPick {
    fn value(self, c: &Conns, key: &str) -> u64 {
        let last = c.last_cas.get(key).copied().unwrap_or(1);
        match self {
            CasPick::None => 0,
            CasPick::Right => last,
            CasPick::Wrong => last + 1_000_000,
            CasPick::Low => last.saturating_sub(1).max(1),
        }
    }
}

/// One operation, protocol-independent of the server it goes to.
#[derive(Clone, Debug)]
enum Op {
    Bin {
        op: u8,
        key: String,
        extras: Vec<u8>,
        value: Vec<u8>,
        cas: CasPick,
        quiet: bool,
    },
    /// A meta line; `{C}` is replaced by the server's CAS choice.
    Meta {
        line: String,
        data: Option<String>,
        key: String,
        cas: CasPick,
    },
    Text {
        line: String,
        data: Option<String>,
        key: String,
        cas: CasPick,
    },
}

fn value(r: &mut Rng) -> String {
    let n = r.below(6);
    if r.chance(30) {
        return r.below(100).to_string(); // numeric, for incr/decr
    }
    (0..n).map(|_| (b'a' + r.below(26) as u8) as char).collect()
}

fn exptime(r: &mut Rng) -> i64 {
    // Long enough never to cross a boundary during the run, or already past.
    *r.pick(&[0, 0, 0, 100, 1000, -1])
}

fn cas_pick(r: &mut Rng) -> CasPick {
    match r.below(20) {
        0..=11 => CasPick::None,
        12..=16 => CasPick::Right,
        17 => CasPick::Low,
        _ => CasPick::Wrong,
    }
}

fn gen_binary(r: &mut Rng) -> Op {
    let key = if r.chance(10) { r.pick(BINARY_KEYS) } else { r.pick(KEYS) }.to_string();
    let quiet = r.chance(30);
    let be32 = |v: u32| v.to_be_bytes().to_vec();
    let set_extras = |r: &mut Rng| [be32(r.below(1000) as u32), be32(exptime(r) as u32)].concat();
    let (op, extras, value, cas) = match r.below(100) {
        0..=19 => (*r.pick(&[0x00u8, 0x0c]), vec![], vec![], CasPick::None),
        20..=34 => (*r.pick(&[0x01u8, 0x02, 0x03]), set_extras(r), value_or_big(r, 4).into_bytes(), cas_pick(r)),
        35..=44 => (*r.pick(&[0x0eu8, 0x0f]), vec![], value(r).into_bytes(), cas_pick(r)),
        45..=54 => (0x04, vec![], vec![], cas_pick(r)),
        55..=69 => {
            let exp: u32 = if r.chance(50) { u32::MAX } else { exptime(r).max(0) as u32 };
            let ex = [r.below(20).to_be_bytes().to_vec(), r.below(100).to_be_bytes().to_vec(), be32(exp)].concat();
            (*r.pick(&[0x05u8, 0x06]), ex, vec![], cas_pick(r))
        }
        70..=84 => (*r.pick(&[0x1cu8, 0x1d, 0x23]), be32(exptime(r).max(0) as u32), vec![], CasPick::None),
        85..=89 => (0x0a, vec![], vec![], CasPick::None),
        90..=92 => (0x0b, vec![], vec![], CasPick::None),
        93 => (0x08, vec![], vec![], CasPick::None),
        _ => (*r.pick(&[0x20u8, 0x3f, 0x45]), vec![], vec![], CasPick::None),
    };
    let quiet = quiet && !matches!(op, 0x0a | 0x0b | 0x1c | 0x20 | 0x3f | 0x45);
    let key = if matches!(op, 0x0a | 0x0b | 0x08 | 0x20 | 0x3f | 0x45) { String::new() } else { key };
    Op::Bin { op, key, extras, value, cas, quiet }
}

fn gen_meta(r: &mut Rng) -> Op {
    let key = if r.chance(10) { r.pick(BINARY_KEYS) } else { r.pick(KEYS) }.to_string();
    let mut flags: Vec<String> = Vec::new();
    // A key the line cannot carry as it is travels base64-encoded (`b`);
    // any other does so now and then.
    let b64 = BINARY_KEYS.contains(&key.as_str()) || r.chance(15);
    if b64 {
        flags.push("b".into());
    }
    let opt = |r: &mut Rng, pct: u64, f: &str, flags: &mut Vec<String>| {
        if r.chance(pct) {
            flags.push(f.to_string());
        }
    };
    let mut cas = CasPick::None;
    let (cmd, data) = match r.below(100) {
        0..=34 => {
            for f in ["v", "k", "c", "f", "s", "t", "h", "q"] {
                opt(r, 35, f, &mut flags);
            }
            if r.chance(15) {
                flags.push(format!("T{}", exptime(r)));
            }
            if r.chance(10) {
                flags.push(format!("N{}", *r.pick(&[0, 100, 1000])));
            }
            if r.chance(10) {
                flags.push(format!("R{}", *r.pick(&[30, 500, 5000])));
            }
            ("mg", None)
        }
        35..=64 => {
            let v = value_or_big(r, 3);
            if r.chance(40) {
                flags.push(format!("M{}", r.pick(&["E", "A", "P", "R", "S"])));
            }
            if r.chance(40) {
                flags.push(format!("F{}", r.below(100)));
            }
            if r.chance(40) {
                flags.push(format!("T{}", exptime(r)));
            }
            cas = cas_pick(r);
            if !matches!(cas, CasPick::None) {
                flags.push("C{C}".into());
                opt(r, 30, "I", &mut flags);
            }
            for f in ["c", "k", "q"] {
                opt(r, 25, f, &mut flags);
            }
            flags.insert(0, len_of(&v));
            ("ms", Some(v))
        }
        65..=79 => {
            cas = cas_pick(r);
            if !matches!(cas, CasPick::None) {
                flags.push("C{C}".into());
            }
            opt(r, 30, "I", &mut flags);
            if flags.contains(&"I".to_string()) && r.chance(50) {
                flags.push("T100".into());
            }
            for f in ["q", "k"] {
                opt(r, 30, f, &mut flags);
            }
            ("md", None)
        }
        80..=94 => {
            if r.chance(40) {
                flags.push(format!("N{}", *r.pick(&[0, 100])));
                flags.push(format!("J{}", r.below(50)));
            }
            if r.chance(50) {
                flags.push(format!("D{}", r.below(30)));
            }
            if r.chance(40) {
                flags.push(format!("M{}", r.pick(&["I", "+", "D", "-"])));
            }
            if r.chance(20) {
                flags.push(format!("T{}", *r.pick(&[0, 100, 1000])));
            }
            cas = cas_pick(r);
            if !matches!(cas, CasPick::None) {
                flags.push("C{C}".into());
            }
            for f in ["v", "c", "t", "q", "k"] {
                opt(r, 30, f, &mut flags);
            }
            ("ma", None)
        }
        95..=97 => ("me", None),
        _ => ("mn", None),
    };
    if r.chance(20) && cmd != "me" && cmd != "mn" {
        flags.push(format!("O{}", r.below(1000)));
    }
    // Shuffle flags (order matters to memcached's output) except ms's length.
    let fixed = usize::from(cmd == "ms");
    for i in (fixed + 1..flags.len()).rev() {
        let j = fixed + r.below((i - fixed + 1) as u64) as usize;
        flags.swap(i, j);
    }
    // memcached echoes a key as stored unless the item was stored with
    // `b`: a newline in it would split the reply line, so it is not asked for.
    if key.contains('\n') {
        flags.retain(|f| f != "k");
    }
    let named = if b64 { base64(&wire(&key)) } else { key.clone() };
    // `me` always echoes the key: not for one with a newline.
    let cmd = if cmd == "me" && key.contains('\n') { "mn" } else { cmd };
    let line = if cmd == "mn" {
        "mn".to_string()
    } else {
        format!("{cmd} {named} {}", flags.join(" ")).trim_end().to_string()
    };
    Op::Meta { line, data, key, cas }
}

fn gen_text(r: &mut Rng) -> Op {
    let key = r.pick(KEYS).to_string();
    let noreply = if r.chance(20) { " noreply" } else { "" };
    let mut cas = CasPick::None;
    let (line, data) = match r.below(100) {
        0..=24 => (
            format!(
                "{} {key}{}",
                r.pick(&["get", "gets"]),
                if r.chance(30) { format!(" {}", r.pick(KEYS)) } else { String::new() }
            ),
            None,
        ),
        25..=49 => {
            let v = value_or_big(r, 4);
            let cmd = *r.pick(&["set", "add", "replace", "append", "prepend", "cas"]);
            let tail = if cmd == "cas" {
                cas = if r.chance(70) { CasPick::Right } else { CasPick::Wrong };
                " {C}"
            } else {
                ""
            };
            (format!("{cmd} {key} {} {} {}{tail}{noreply}", r.below(100), exptime(r), len_of(&v)), Some(v))
        }
        50..=64 => (format!("{} {key} {}{noreply}", r.pick(&["incr", "decr"]), r.below(20)), None),
        65..=74 => (format!("delete {key}{noreply}"), None),
        75..=84 => (format!("touch {key} {}{noreply}", exptime(r)), None),
        85..=94 => (format!("{} {} {key}", r.pick(&["gat", "gats"]), exptime(r)), None),
        _ => ("version".into(), None),
    };
    Op::Text { line, data, key, cas }
}

/// Send one op to one server; return its reply, normalized.
fn run(c: &mut Conns, op: &Op) -> Vec<String> {
    match op {
        Op::Bin { op, key, extras, value, cas, quiet } => {
            let opcode = if *quiet { quiet_of(*op) } else { *op };
            let casv = cas.value(c, key);
            let big = vec![b'z'; BIG_BYTES];
            let value = if value == BIG.as_bytes() { &big } else { value };
            let mut p = vec![0x80, opcode];
            let key_bytes = wire(key);
            p.extend_from_slice(&(key_bytes.len() as u16).to_be_bytes());
            p.push(extras.len() as u8);
            p.extend_from_slice(&[0, 0, 0]);
            p.extend_from_slice(&((key_bytes.len() + extras.len() + value.len()) as u32).to_be_bytes());
            p.extend_from_slice(&7u32.to_be_bytes());
            p.extend_from_slice(&casv.to_be_bytes());
            p.extend_from_slice(extras);
            p.extend_from_slice(&key_bytes);
            p.extend_from_slice(value);
            // A noop after every request marks the end of its replies.
            p.extend_from_slice(&[0x80, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0]);
            c.binary.get_mut().write_all(&p).unwrap();
            let mut out = Vec::new();
            loop {
                let mut h = [0u8; 24];
                c.binary.read_exact(&mut h).expect("binary reply header");
                let bl = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
                let mut body = vec![0u8; bl];
                c.binary.read_exact(&mut body).unwrap();
                if h[1] == 0x0a && u32::from_be_bytes([h[12], h[13], h[14], h[15]]) == 9 {
                    break;
                }
                let status = u16::from_be_bytes([h[6], h[7]]);
                let rcas = u64::from_be_bytes(h[16..24].try_into().unwrap());
                if rcas != 0 && !key.is_empty() {
                    c.last_cas.insert(key.clone(), rcas);
                }
                let mut body_s = unwire(&body);
                if h[1] == 0x0b && status == 0 {
                    body_s = "<version>".into();
                }
                let cas_s = c.cas_name(rcas);
                out.push(format!(
                    "op={:02x} st={:04x} ext={} key={} cas={} body={:?}",
                    h[1],
                    status,
                    h[4],
                    u16::from_be_bytes([h[2], h[3]]),
                    cas_s,
                    body_s
                ));
            }
            out
        }
        Op::Meta { line, data, key, cas } | Op::Text { line, data, key, cas } => {
            let is_meta = matches!(op, Op::Meta { .. });
            let line = line.replace("{C}", &cas.value(c, key).to_string()).replace(BIG_LEN, &BIG_BYTES.to_string());
            let mut req = format!("{line}\r\n");
            if let Some(d) = data {
                if d == BIG {
                    req.push_str(&"z".repeat(BIG_BYTES));
                } else {
                    req.push_str(d);
                }
                req.push_str("\r\n");
            }
            // mn marks the end of the replies (an mn op is its own marker).
            if line != "mn" {
                req.push_str("mn\r\n");
            }
            let conn = if is_meta { &mut c.meta } else { &mut c.text };
            conn.get_mut().write_all(&wire(&req)).unwrap();
            let mut lines = Vec::new();
            loop {
                let mut raw = Vec::new();
                conn.read_until(b'\n', &mut raw).expect("meta/text reply");
                let l = unwire(&raw);
                assert!(!l.is_empty(), "connection closed after {line:?}");
                if l == "MN\r\n" {
                    break;
                }
                lines.push(l.trim_end_matches("\r\n").to_string());
            }
            lines.into_iter().map(|l| normalize_line(c, key, &l)).collect()
        }
    }
}

fn quiet_of(op: u8) -> u8 {
    match op {
        0x00 => 0x09,
        0x0c => 0x0d,
        0x01 => 0x11,
        0x02 => 0x12,
        0x03 => 0x13,
        0x04 => 0x14,
        0x05 => 0x15,
        0x06 => 0x16,
        0x08 => 0x18,
        0x0e => 0x19,
        0x0f => 0x1a,
        0x1d => 0x1e,
        0x23 => 0x24,
        o => o,
    }
}

/// CAS values to their equality pattern; remember the key's latest CAS.
fn normalize_line(c: &mut Conns, key: &str, l: &str) -> String {
    let toks: Vec<&str> = l.split(' ').collect();
    let meta_status = matches!(toks[0], "HD" | "VA" | "EN" | "NF" | "NS" | "EX");
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if meta_status && i > 0 && t.len() > 1 && t.starts_with('c') && t[1..].bytes().all(|b| b.is_ascii_digit()) {
            let v: u64 = t[1..].parse().unwrap();
            if v != 0 {
                c.last_cas.insert(key.to_string(), v);
            }
            out.push(format!("c{}", c.cas_name(v)));
        } else if toks[0] == "ME" && t.starts_with("cas=") {
            let v: u64 = t[4..].parse().unwrap();
            out.push(format!("cas={}", c.cas_name(v)));
        } else if toks[0] == "VALUE" && toks.len() == 5 && i == 4 {
            let v: u64 = t.parse().unwrap();
            c.last_cas.insert(toks[1].to_string(), v);
            out.push(c.cas_name(v));
        } else if toks[0] == "VERSION" && i == 1 {
            out.push("<version>".into());
        } else {
            out.push(t.to_string());
        }
    }
    out.join(" ")
}

/// A counter value as "digits then spaces": the spaces memcached leaves
/// after a shrinking incr/decr done in place. Whether it is done in place
/// depends on memcached's reference counts (an item still referenced by an
/// unsent reply is copied instead), so the padding is not compared.
fn strip_pad(v: &str) -> Option<&str> {
    let t = v.trim_end_matches(' ');
    (t.len() < v.len() && !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).then_some(t)
}

fn depad(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = lines.to_vec();
    for i in 0..out.len() {
        let is_meta = out[i].starts_with("VA ");
        let is_text = out[i].starts_with("VALUE ");
        if (is_meta || is_text) && i + 1 < out.len() {
            if let Some(t) = strip_pad(&out[i + 1]).map(str::to_string) {
                let n = t.len().to_string();
                let mut toks: Vec<String> = out[i].split(' ').map(String::from).collect();
                toks[if is_meta { 1 } else { 3 }] = n.clone();
                for tok in toks.iter_mut().skip(2) {
                    if tok.starts_with('s') && tok[1..].bytes().all(|b| b.is_ascii_digit()) && tok.len() > 1 {
                        *tok = format!("s{n}");
                    }
                }
                out[i] = toks.join(" ");
                out[i + 1] = t;
            }
        }
        if let Some(pos) = out[i].find(" body=\"") {
            let body = out[i][pos + 7..].trim_end_matches('"').to_string();
            let digits_from = body
                .char_indices()
                .rev()
                .find(|(_, c)| !c.is_ascii_digit() && *c != ' ')
                .map_or(0, |(p, c)| p + c.len_utf8());
            if let Some(t) = strip_pad(&body[digits_from..]) {
                out[i] = format!("{} body=\"{}{}\"", &out[i][..pos], &body[..digits_from], t);
            }
        }
    }
    out
}

/// Equal, but relative seconds (meta t/l, me exp/la) may differ by one,
/// and counter padding is not compared (see `strip_pad`).
fn same(a: &[String], b: &[String]) -> bool {
    same_exact(&depad(a), &depad(b))
}

fn same_exact(a: &[String], b: &[String]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let (xt, yt): (Vec<&str>, Vec<&str>) = (x.split(' ').collect(), y.split(' ').collect());
            xt.len() == yt.len()
                && xt.iter().zip(&yt).all(|(p, q)| {
                    if p == q {
                        return true;
                    }
                    let num = |s: &str| -> Option<(String, i64)> {
                        for pre in ["t", "l", "exp=", "la="] {
                            if let Some(n) = s.strip_prefix(pre).and_then(|n| n.parse::<i64>().ok()) {
                                return Some((pre.to_string(), n));
                            }
                        }
                        None
                    };
                    // A `t` after a negative `T` is memcached's unsigned
                    // wrap of a past time (different per clock base): both
                    // just have to be "in the past".
                    matches!((num(p), num(q)), (Some((a, m)), Some((b, n))) if a == b && ((m - n).abs() <= 1 || (m >= 1 << 31 && n >= 1 << 31)))
                })
        })
}

enum Effect {
    /// incr/decr/ma; `true` when an ma's T sets the TTL, which memcached
    /// applies to the old item when it copies (so the TTL is uncertain too).
    Arith(bool),
    Rewrite,
    Flush,
    None,
}

/// What an op does to its key's item state (see `uncertain`).
fn effect_of(op: &Op) -> (String, Effect) {
    match op {
        Op::Bin { op, key, .. } => (
            key.clone(),
            match op {
                0x05 | 0x06 => Effect::Arith(false),
                // Append and prepend (0x0e, 0x0f) keep the old bytes,
                // padding included, so they do not end the uncertainty.
                0x01..=0x04 => Effect::Rewrite,
                0x08 => Effect::Flush,
                _ => Effect::None,
            },
        ),
        Op::Meta { line, key, .. } | Op::Text { line, key, .. } => {
            let cmd = line.split(' ').next().unwrap_or("");
            // An ms in append or prepend mode (MA, MP) keeps the old bytes.
            let concat = cmd == "ms" && line.split(' ').any(|t| t == "MA" || t == "MP");
            (
                key.clone(),
                match cmd {
                    "ma" => Effect::Arith(line.split(' ').any(|t| t.starts_with('T'))),
                    "incr" | "decr" => Effect::Arith(false),
                    "append" | "prepend" => Effect::None,
                    "ms" if concat => Effect::None,
                    "ms" | "md" | "set" | "add" | "replace" | "cas" | "delete" => Effect::Rewrite,
                    "flush_all" => Effect::Flush,
                    _ => Effect::None,
                },
            )
        }
    }
}

/// Whether a write's reply says it changed the item.
fn took_effect(reply: &[String]) -> bool {
    reply.first().is_some_and(|l| l == "STORED" || l == "DELETED" || l.starts_with("HD") || l.contains(" st=0000 "))
}

/// Drop what an in-place vs copied incr/decr may change: meta h, X, Z, W,
/// me's fetch, meta s, the form of the key echo, and the counter's padding spaces, which an append or prepend
/// carries into the middle of a value. Generated values never contain a
/// space, so in an uncertain key's value every space is padding. With
/// `ttl`, the remaining TTL (meta t, me exp) is dropped as well.
fn loosen(lines: &[String], ttl: bool) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| {
            let meta = l.starts_with("VA ") || l.starts_with("HD") || l.starts_with("ME ");
            if !meta {
                return l.clone();
            }
            // Whether the item keeps `ms b`'s base64-key mark is uncertain
            // too (a copy drops it): the key echo is not compared.
            l.split(' ')
                .enumerate()
                .map(|(i, t)| if (i == 1 && l.starts_with("ME ")) || (i > 0 && t.starts_with('k')) { "k" } else { t })
                .filter(|t| *t != "b")
                .filter(|t| !matches!(*t, "h0" | "h1" | "X" | "Z" | "W" | "fetch=yes" | "fetch=no"))
                .filter(|t| !(ttl && (t.starts_with("exp=") || (t.starts_with('t') && t.len() > 1))))
                // The size includes the padding (a VA line's data shows it).
                .filter(|t| !(t.len() > 1 && t.starts_with('s') && t[1..].bytes().all(|b| b.is_ascii_digit())))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    for i in 0..out.len() {
        let (is_meta, is_text) = (out[i].starts_with("VA "), out[i].starts_with("VALUE "));
        if (is_meta || is_text) && i + 1 < out.len() && out[i + 1].contains(' ') {
            let data: String = out[i + 1].chars().filter(|&c| c != ' ').collect();
            let n = data.len().to_string();
            let mut toks: Vec<String> = out[i].split(' ').map(String::from).collect();
            toks[if is_meta { 1 } else { 3 }] = n;
            out[i] = toks.join(" ");
            out[i + 1] = data;
        }
        // A binary reply's body: extras and value; the flags in the extras
        // lose the same bytes on both sides, so the comparison stays fair.
        if let Some(pos) = out[i].find(" body=\"") {
            let (head, body) = out[i].split_at(pos + 7);
            out[i] = format!("{head}{}", body.replace(' ', ""));
        }
    }
    out
}

#[test]
fn same_replies_as_memcached() {
    if !common::peer(MEMCACHED, std::path::Path::new(MEMCACHED).exists()) {
        return;
    }
    let protocols = std::env::var("LOGMEMCACHED_DIFF_PROTOCOLS").unwrap_or_else(|_| DEFAULT_PROTOCOLS.into());
    let protocols: Vec<&str> = protocols.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    let ops: usize = std::env::var("LOGMEMCACHED_DIFF_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
    // LOGMEMCACHED_DIFF_SEEDS: how many seeds (default 3), from 0x5eed_0001 on.
    let seeds: u64 = std::env::var("LOGMEMCACHED_DIFF_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    for seed in (1..=seeds).map(|i| 0x5eed_0000u64 + i) {
        let mc = Memcached::start();
        let lm = Server::start(&["-m", "64"]);
        let mut a = Conns::new(mc.port);
        let mut b = Conns::new(lm.port);
        let mut rng = Rng(seed);
        let mut history: Vec<String> = Vec::new();
        // Keys whose last change was an incr/decr: memcached does those in
        // place or on a copy depending on its reference counts (an item still
        // held by a reply is copied), so the item's fetched/stale/token marks
        // and counter padding are not compared until the key is rewritten.
        // The value says whether the TTL is uncertain too (see `Effect`).
        let mut uncertain: HashMap<String, bool> = HashMap::new();
        for i in 0..ops {
            let op = match *rng.pick(&protocols) {
                "binary" => gen_binary(&mut rng),
                "meta" => gen_meta(&mut rng),
                "text" => gen_text(&mut rng),
                other => panic!("unknown protocol {other:?} in LOGMEMCACHED_DIFF_PROTOCOLS"),
            };
            let (ra, rb) = (run(&mut a, &op), run(&mut b, &op));
            let (key, effect) = effect_of(&op);
            let (ra, rb) = match uncertain.get(&key) {
                Some(&ttl) => (loosen(&ra, ttl), loosen(&rb, ttl)),
                None => (ra, rb),
            };
            match effect {
                Effect::Arith(ttl) => {
                    *uncertain.entry(key).or_insert(false) |= ttl;
                }
                // Only a write that took effect replaces the item: a refused
                // add or cas, or a quiet write (no reply to tell), leaves the
                // padded counter in place.
                Effect::Rewrite if took_effect(&ra) => {
                    uncertain.remove(&key);
                }
                Effect::Rewrite => {}
                Effect::Flush => uncertain.clear(),
                Effect::None => {}
            }
            history.push(format!("{op:?}\n    memcached:    {ra:?}\n    logmemcached: {rb:?}"));
            if !same(&ra, &rb) {
                let from = history.len().saturating_sub(
                    std::env::var("LOGMEMCACHED_DIFF_HISTORY").ok().and_then(|v| v.parse().ok()).unwrap_or(12),
                );
                panic!("seed {seed:#x} op {i}: replies differ\n{}\n", history[from..].join("\n"));
            }
        }
        eprintln!("differential: seed {seed:#x}: {ops} ops over {protocols:?} agree");
    }
}
