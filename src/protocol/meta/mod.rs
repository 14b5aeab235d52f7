//! memcached's meta protocol: mn, mg, ms, md, ma, me. The text protocol
//! hands us each line starting with one of them; `flags.rs` is the flags
//! parser shared by all, `base64.rs` the `b` key codec, and one file per
//! command encodes its replies. Replies follow memcached 1.6 byte for byte
//! (see tests/meta_protocol.rs and tests/differential.rs).

pub mod base64;
pub mod flags;
mod ma;
mod md;
mod mg;
pub(crate) mod mn_me;
mod ms;

#[cfg(test)]
mod readonly_tests;

use super::{Ctx, Kind, Session, Step};
use crate::store::StoreError;

/// Handle one meta command whose line is `input[..line_end]` (without the
/// line terminator) and whose whole line, terminator included, is
/// `input[..next]`. Data blocks (ms) follow at `input[next..]`.
pub fn step(session: &mut Session, input: &[u8], line_end: usize, next: usize, out: &mut Vec<u8>, ctx: &Ctx) -> Step {
    let tokens = flags::tokenize(&input[..line_end]);
    let Some(cmd) = tokens.first() else {
        out.extend_from_slice(b"ERROR\r\n");
        return meta_step(next);
    };
    ctx.stats.cmd_meta.incr();
    match cmd.get(1).copied() {
        Some(b'n') if cmd.len() == 2 => mn_me::mn(out),
        Some(b'e') if cmd.len() == 2 => mn_me::me(&tokens, out, ctx),
        Some(b'g') if cmd.len() == 2 => mg::handle(&tokens, session.cfd, out, ctx),
        Some(b'd') if cmd.len() == 2 => md::handle(&tokens, session.cfd, out, ctx),
        Some(b'a') if cmd.len() == 2 => ma::handle(&tokens, session.cfd, out, ctx),
        Some(b's') if cmd.len() == 2 => return ms::handle(session, input, &tokens, next, out, ctx),
        _ => out.extend_from_slice(b"ERROR\r\n"),
    }
    meta_step(next)
}

/// Consumed `len` bytes: every meta command is timed as meta.
fn meta_step(len: usize) -> Step {
    Step::Consumed { len, kind: Kind::Meta }
}

/// One reply line: `text` then "\r\n".
fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The checks every keyed meta command makes first, as memcached orders
/// them. `Err` carries the reply line.
fn common_checks(tokens: &[&[u8]], too_long_msg: &'static str) -> Result<(), &'static str> {
    if tokens.len() < 2 {
        return Err("ERROR");
    }
    if tokens[1].len() > flags::MAX_KEY_LEN {
        return Err("CLIENT_ERROR bad command line format");
    }
    if flags::too_many(tokens) {
        return Err(too_long_msg);
    }
    Ok(())
}

/// " k<key>", base64-encoded with " b" after it when the key came so.
fn push_key(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    out.extend_from_slice(b" k");
    if binary {
        base64::encode(key, out);
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

/// The flags echoed on every reply, hit or miss: opaque and key.
fn push_opaque_and_key(out: &mut Vec<u8>, flag_tokens: &[&[u8]], key: &[u8], binary: bool) {
    for t in flag_tokens {
        match t[0] {
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(t);
            }
            b'k' => push_key(out, key, binary),
            _ => {}
        }
    }
}

/// Remaining TTL as meta `t` shows it: -1 for none, else seconds left
/// (memcached's unsigned arithmetic).
fn ttl(expiry: u32, now: u32) -> String {
    if expiry == 0 {
        "-1".to_string()
    } else {
        expiry.wrapping_sub(now).to_string()
    }
}

/// The reply line for a store refusal.
fn store_error(e: StoreError, ctx: &Ctx) -> &'static str {
    match e {
        StoreError::ReadOnly => {
            ctx.stats.readonly_refused.incr();
            "SERVER_ERROR read-only replica"
        }
        StoreError::TooLarge => "SERVER_ERROR object too large for cache",
        // A base64 key that decodes to nothing.
        StoreError::BadKey => "CLIENT_ERROR bad command line format",
        StoreError::Fenced => {
            ctx.stats.readonly_refused.incr();
            "SERVER_ERROR stale primary: a replica was promoted to a newer epoch; writes refused"
        }
        StoreError::NotReplicated => "SERVER_ERROR stored, but not confirmed by the required replicas in time",
        StoreError::NoMemory => {
            ctx.stats.store_no_memory.incr();
            "SERVER_ERROR out of memory storing object"
        }
    }
}
