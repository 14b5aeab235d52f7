//! The `meta` target: meta command lines built from the input (mg ms md ma
//! mn me, keys plain or base64 with `b`, a soup of flags with and without
//! arguments, data blocks of the declared length or not), run as a text
//! connection. Beyond the text checks, for each meta request: its flags
//! parse, re-encode and parse to the same flags; base64 keys decode to what
//! encodes to them; a reply is one line (and `VA`'s data block); an opaque
//! `O` token comes back on every status reply; `q` silences the nominal
//! outcome (EN for mg, HD for ms and md). An input starting with
//! [`RAW`] is the lines themselves (seeds from tests and protocol.txt).

use super::binary::RAW;
use super::conn;
use super::input::Choices;
use super::text::{lossy, Unit};
use crate::protocol::meta::{base64, flags};

pub fn meta(data: &[u8]) {
    match data.split_first() {
        Some((&RAW, raw)) => conn::run(raw),
        _ => conn::run(&lines(data)),
    };
}

const KEYS: &[&[u8]] = &[b"a", b"b", b"key", b"n"];
/// Flag bytes meta commands know, and a few they do not.
const FLAGS: &[u8] = b"bcfhklqstuvIOTNRFCMDJPLSExE ";
const COMMANDS: &[&[u8]] = &[b"mg", b"ms", b"md", b"ma", b"mn", b"me", b"mx"];

/// A stream of meta commands decoded from the fuzzer's choices.
pub fn lines(data: &[u8]) -> Vec<u8> {
    let mut c = Choices::new(data);
    let mut out = Vec::new();
    while !c.is_empty() && out.len() < 64 << 10 {
        let cmd = c.pick(COMMANDS);
        out.extend_from_slice(cmd);
        let mut binary_key = false;
        match c.below(8) {
            0 => {}
            1..=4 => {
                out.push(b' ');
                out.extend_from_slice(c.pick(KEYS));
            }
            5 => {
                out.push(b' ');
                let n = 1 + c.below(12);
                base64::encode(c.bytes(n), &mut out);
                binary_key = true;
            }
            6 => {
                out.push(b' ');
                let n = c.below(16);
                out.extend(c.bytes(n).iter().map(|&b| if b == b' ' || b == b'\n' { b'_' } else { b }));
            }
            _ => {
                out.push(b' ');
                out.resize(out.len() + 245 + c.below(10), b'k');
            }
        }
        let data_len = if cmd == b"ms" { c.below(40) } else { 0 };
        if cmd == b"ms" {
            let declared = if c.below(8) == 0 { data_len + c.below(3) } else { data_len };
            out.extend_from_slice(format!(" {declared}").as_bytes());
        }
        if binary_key && c.below(4) != 0 {
            out.extend_from_slice(b" b");
        }
        for _ in 0..c.below(9) {
            out.push(b' ');
            out.push(c.pick(FLAGS));
            match c.below(6) {
                0 | 1 => {}
                2 => out.extend_from_slice(c.u8().to_string().as_bytes()),
                3 => out.extend_from_slice((c.u32() as i32).to_string().as_bytes()),
                4 => out.extend_from_slice(c.u64().to_string().as_bytes()),
                _ => {
                    let n = c.below(36);
                    out.extend(c.bytes(n).iter().map(|&b| if b == b' ' || b == b'\n' { b'_' } else { b }));
                }
            }
        }
        out.extend_from_slice(if c.below(8) == 0 { b"\n" } else { b"\r\n" });
        if cmd == b"ms" {
            out.extend((0..data_len).map(|i| b'0' + (i % 10) as u8));
            out.extend_from_slice(if c.below(8) == 0 { b"xx" } else { b"\r\n" });
        }
    }
    out
}

/// Checks on one meta request `line` (without its terminator) and the
/// replies it got.
pub fn check_step(line: &[u8], units: &[Unit]) {
    let tokens = flags::tokenize(line);
    let Some(&cmd) = tokens.first() else { return };
    if !matches!(cmd, b"mg" | b"ms" | b"md" | b"ma" | b"mn" | b"me") {
        return;
    }
    assert!(units.len() <= 1, "{:?} answered {} replies", lossy(line), units.len());
    let ftok: &[&[u8]] = match cmd {
        b"ms" => tokens.get(3..).unwrap_or(&[]),
        _ => tokens.get(2..).unwrap_or(&[]),
    };
    if let Some(&key) = tokens.get(1) {
        check_flags(key, ftok);
    }
    for t in ftok {
        super::text::numbers_agree(&t[1..]);
    }
    let Some(unit) = units.first() else { return };
    let reply = match unit {
        Unit::Va(l) | Unit::Line(l) => *l,
        Unit::Value { .. } => panic!("{:?} answered a VALUE", lossy(line)),
    };
    if cmd == b"mn" {
        assert_eq!(reply, b"MN");
        return;
    }
    let code = &reply[..reply.len().min(2)];
    let status = matches!(code, b"HD" | b"VA" | b"EN" | b"NF" | b"NS" | b"EX") && cmd != b"me";
    if !status || reply.starts_with(b"ERROR") {
        return;
    }
    let words: Vec<&[u8]> = reply.split(|&b| b == b' ').collect();
    for t in ftok.iter().filter(|t| t[0] == b'O') {
        assert!(words.contains(t), "{:?} answered {:?} without its opaque", lossy(line), lossy(reply));
    }
    let quiet = ftok.iter().any(|t| t[0] == b'q');
    if quiet {
        let nominal: &[u8] = if cmd == b"mg" { b"EN" } else { b"HD" };
        assert!(cmd == b"ma" || code != nominal, "{:?} has q but answered {:?}", lossy(line), lossy(reply));
    }
}

/// Flags that parse re-encode to flags that parse the same; a base64 key
/// decodes to bytes that encode back to a key decoding the same.
fn check_flags(key: &[u8], ftok: &[&[u8]]) {
    if let Some(k) = base64::decode(key) {
        let mut again = Vec::new();
        base64::encode(&k, &mut again);
        assert_eq!(base64::decode(&again).as_deref(), Some(&k[..]), "base64 of {:?}", lossy(key));
    }
    let Ok(f) = flags::parse(key, ftok) else { return };
    let (key2, toks) = encode_flags(&f);
    let refs: Vec<&[u8]> = toks.iter().map(|t| t.as_slice()).collect();
    let g = flags::parse(&key2, &refs).unwrap_or_else(|e| panic!("re-encoded flags {toks:?} do not parse: {e}"));
    assert_eq!(f, g, "flags {:?} re-encoded as {toks:?}", ftok.iter().map(|t| lossy(t)).collect::<Vec<_>>());
}

/// The key and flag tokens that say what `f` says.
fn encode_flags(f: &flags::MetaFlags) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut t: Vec<Vec<u8>> = Vec::new();
    let key = if f.key_binary {
        t.push(b"b".to_vec());
        let mut k = Vec::new();
        base64::encode(&f.key, &mut k);
        k
    } else {
        f.key.clone()
    };
    for (on, flag) in [(f.value, b'v'), (f.no_reply, b'q'), (f.no_update, b'u'), (f.invalidate, b'I')] {
        if on {
            t.push(vec![flag]);
        }
    }
    let numbers = [
        (b'N', f.vivify.map(|v| v.to_string())),
        (b'T', f.ttl.map(|v| v.to_string())),
        (b'R', f.recache.map(|v| v.to_string())),
        (b'F', (f.client_flags != 0).then(|| f.client_flags.to_string())),
        (b'C', f.cas.map(|v| v.to_string())),
        (b'D', f.delta.map(|v| v.to_string())),
        (b'J', f.initial.map(|v| v.to_string())),
    ];
    for (flag, v) in numbers {
        if let Some(v) = v {
            t.push([&[flag][..], v.as_bytes()].concat());
        }
    }
    if let Some(m) = f.mode {
        t.push(vec![b'M', m]);
    }
    (key, t)
}
