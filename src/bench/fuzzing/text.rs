//! The `text` target: arbitrary bytes as a connection's input. Beyond the
//! connection checks of [`super::conn`], every step's reply must be whole
//! text-protocol replies ([`units`]), and what the request asked for shapes
//! it: a get answers only keys it named (with CAS exactly for gets/gats) and
//! ends with END; a noreply command says nothing; its tokens re-join and
//! re-split to themselves; its numbers parse as Rust's would.

use super::conn;
use crate::protocol::meta::flags;
use crate::protocol::text::parse::{c_line_len, safe_strtol, safe_strtoul, safe_strtoull, Tokens, MAX_TOKENS};

pub fn text(data: &[u8]) {
    conn::run(data);
}

/// One reply of the text protocol (meta included).
#[derive(Debug)]
pub enum Unit<'a> {
    /// `VALUE <key> <flags> <bytes>[ <cas>]` and its data block.
    Value { key: &'a [u8], cas: Option<u64> },
    /// `VA <bytes> <flags>*` (meta, with its data block): the line.
    Va(&'a [u8]),
    /// Any other reply line, without its "\r\n".
    Line(&'a [u8]),
}

/// First words a reply line may start with (memcached's, and meta's codes).
const LINE_WORDS: &[&[u8]] = &[
    b"END",
    b"STORED",
    b"NOT_STORED",
    b"EXISTS",
    b"NOT_FOUND",
    b"DELETED",
    b"TOUCHED",
    b"OK",
    b"RESET",
    b"ERROR",
    b"ERROR:",
    b"CLIENT_ERROR",
    b"SERVER_ERROR",
    b"STAT",
    b"VERSION",
    b"HD",
    b"EN",
    b"NF",
    b"NS",
    b"EX",
    b"MN",
    b"ME",
];

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// The number a reply token holds, decimal digits only.
fn number(tok: &[u8]) -> Option<u64> {
    if tok.is_empty() || !tok.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(tok).ok()?.parse().ok()
}

/// Split `out` into whole replies, or say where it stops being one.
pub fn units(out: &[u8]) -> Result<Vec<Unit<'_>>, String> {
    let mut v = Vec::new();
    let mut pos = 0;
    while pos < out.len() {
        let rest = &out[pos..];
        let Some(end) = find_crlf(rest) else { return Err(format!("no \\r\\n after byte {pos}")) };
        let line = &rest[..end];
        let next = pos + end + 2;
        let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let block = |len: usize| -> Result<usize, String> {
            let stop = next.checked_add(len).filter(|&s| s + 2 <= out.len()).ok_or("data block runs past the end")?;
            if &out[stop..stop + 2] != b"\r\n" {
                return Err(format!("data block of {len} bytes at {next} is not followed by \\r\\n"));
            }
            Ok(stop + 2)
        };
        match words[0] {
            b"VALUE" => {
                if words.len() != 4 && words.len() != 5 {
                    return Err(format!("VALUE line of {} words", words.len()));
                }
                let flags = number(words[2]).filter(|&f| f <= u32::MAX as u64);
                let len = number(words[3]);
                let cas = words.get(4).map(|c| number(c));
                let (Some(_), Some(len), None | Some(Some(_))) = (flags, len, cas) else {
                    return Err(format!("VALUE line {:?}", String::from_utf8_lossy(line)));
                };
                if words[1].is_empty() {
                    return Err("VALUE without a key".into());
                }
                pos = block(len as usize)?;
                v.push(Unit::Value { key: words[1], cas: cas.flatten() });
            }
            b"VA" => {
                let Some(len) = words.get(1).and_then(|w| number(w)) else {
                    return Err(format!("VA line {:?}", String::from_utf8_lossy(line)));
                };
                pos = block(len as usize)?;
                v.push(Unit::Va(line));
            }
            w if LINE_WORDS.contains(&w) || (words.len() == 1 && number(w).is_some()) => {
                pos = next;
                v.push(Unit::Line(line));
            }
            _ => return Err(format!("unknown reply line {:?}", String::from_utf8_lossy(line))),
        }
    }
    Ok(v)
}

/// The command line of a consumed request, as the protocol cuts it: up to
/// the first "\n", without the "\r" before it (unless it is the only byte),
/// and only up to its first NUL.
pub fn command_line(req: &[u8]) -> &[u8] {
    let nl = req.iter().position(|&b| b == b'\n').unwrap_or(req.len());
    let line = if nl > 1 && req[nl - 1] == b'\r' { &req[..nl - 1] } else { &req[..nl] };
    // memcached tokenizes up to the first NUL: the rest of the line is not there.
    &line[..c_line_len(line)]
}

/// Checks on one consumed text request `req` and its reply `out`.
pub fn check_step(req: &[u8], out: &[u8]) {
    let units =
        units(out).unwrap_or_else(|e| panic!("reply to {:?} is not text replies: {e}: {:?}", lossy(req), lossy(out)));
    let line = command_line(req);
    let t = Tokens::new(line);
    tokens_round_trip(&t);
    for i in 0..t.count() - 1 {
        numbers_agree(t.get(i));
    }
    let cmd = t.get(0);
    let errors = matches!(units.first(), Some(Unit::Line(l)) if l.starts_with(b"ERROR") || l.starts_with(b"CLIENT_ERROR") || l.starts_with(b"SERVER_ERROR"));
    if cmd.len() == 2 && cmd[0] == b'm' {
        return super::meta::check_step(line, &units);
    }
    match cmd {
        b"get" | b"bget" | b"gets" | b"gat" | b"gats" if !errors => {
            let with_cas = cmd == b"gets" || cmd == b"gats";
            let skip = if cmd.starts_with(b"gat") { 1 } else { 0 };
            let keys: Vec<&[u8]> = t.rest().skip(skip).collect();
            let Some((Unit::Line(b"END"), hits)) = units.split_last() else {
                panic!("{:?} answered {:?}, not ending with END", lossy(line), lossy(out))
            };
            assert!(hits.len() <= keys.len(), "more hits than keys for {:?}", lossy(line));
            for u in hits {
                let Unit::Value { key, cas } = u else { panic!("{:?} in a get reply", u) };
                assert!(
                    keys.contains(key),
                    "{:?} answered key {:?}, which it did not ask for",
                    lossy(line),
                    lossy(key)
                );
                assert_eq!(cas.is_some(), with_cas, "CAS shown iff gets/gats: {:?}", lossy(line));
            }
        }
        _ if silenced(&t) => {
            assert!(out.is_empty(), "{:?} is noreply but answered {:?}", lossy(line), lossy(out))
        }
        _ => {}
    }
}

/// Lines whose shape makes memcached set noreply for every outcome,
/// errors included.
fn silenced(t: &Tokens) -> bool {
    let words = t.count() - 1;
    let shape = match t.get(0) {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" => words == 6,
        b"cas" => words == 7,
        b"incr" | b"decr" | b"touch" => words == 4,
        b"delete" => words == 3 || words == 4,
        b"flush_all" => words == 2 || words == 3,
        b"verbosity" => words == 3,
        _ => false,
    };
    shape && t.noreply()
}

/// Tokens joined by one space split back into the same tokens.
fn tokens_round_trip(t: &Tokens) {
    let n = t.count() - 1;
    let words: Vec<&[u8]> = (0..n).map(|i| t.get(i)).collect();
    assert!(words.iter().all(|w| !w.is_empty() && !w.contains(&b' ')), "tokens {words:?}");
    let joined = words.join(&b' ');
    let again = Tokens::new(&joined);
    assert_eq!(again.count(), t.count());
    for (i, w) in words.iter().enumerate() {
        assert_eq!(again.get(i), *w);
    }
    if t.count() < MAX_TOKENS {
        let rest: Vec<&[u8]> = t.rest().collect();
        assert_eq!(rest, words.get(1..).unwrap_or(&[]), "rest() is the tokens after the command");
    }
}

/// memcached's number helpers, as the text protocol and meta flags each
/// implement them, agree with each other, and with Rust on plain digits.
pub(super) fn numbers_agree(tok: &[u8]) {
    let u = safe_strtoull(tok);
    assert_eq!(safe_strtoul(tok), u.map(|v| v as u32), "strtoul is strtoull truncated: {:?}", lossy(tok));
    if let Some(v) = u {
        assert_eq!(safe_strtoull(v.to_string().as_bytes()), Some(v));
    }
    if !tok.is_empty() && tok.iter().all(u8::is_ascii_digit) {
        let s = std::str::from_utf8(tok).unwrap_or_default();
        assert_eq!(u, s.parse::<u64>().ok(), "strtoull {s:?}");
        assert_eq!(safe_strtol(tok), s.parse::<i64>().ok().map(|v| v as i32), "strtol {s:?}");
    }
    assert_eq!(flags::strtoull(tok), u, "meta and text strtoull disagree on {:?}", lossy(tok));
    assert_eq!(flags::strtoul(tok), safe_strtoul(tok), "meta and text strtoul disagree on {:?}", lossy(tok));
    assert_eq!(
        flags::strtol(tok),
        safe_strtol(tok).map(i64::from),
        "meta and text strtol disagree on {:?}",
        lossy(tok)
    );
}

pub fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
    if b.len() > 300 {
        format!("{s}... ({} bytes)", b.len())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_grammar() {
        let ok = b"VALUE k 0 3\r\nabc\r\nVALUE k2 5 0 9\r\n\r\nEND\r\nVA 2 f1\r\nhi\r\nHD c4\r\n12\r\nSTAT pid 1\r\n";
        let u = units(ok).unwrap();
        assert_eq!(u.len(), 7);
        assert!(matches!(u[1], Unit::Value { key: b"k2", cas: Some(9) }));
        for bad in
            [&b"VALUE k 0 3\r\nabcd\r\n"[..], b"STORED", b"WHAT\r\n", b"VA x\r\n", b"VALUE k 0\r\n", b"VA 5\r\nab\r\n"]
        {
            assert!(units(bad).is_err(), "{:?}", lossy(bad));
        }
    }

    #[test]
    fn command_lines_are_cut_as_the_protocol_does() {
        assert_eq!(command_line(b"get k\r\n"), b"get k");
        assert_eq!(command_line(b"get k\n"), b"get k");
        assert_eq!(command_line(b"\r\n"), b"\r");
        assert_eq!(command_line(b"set k 0 0 1\r\nx\r\n"), b"set k 0 0 1");
        assert_eq!(command_line(b"mg k\0z v q\r\n"), b"mg k", "a NUL ends the line, as in memcached");
    }
}
