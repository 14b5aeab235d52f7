//! incr, decr: `incr|decr <key> <delta> [noreply]`.
//!
//! 64-bit unsigned: incr wraps at 2^64, decr stops at 0, and a shrinking
//! number keeps its length padded with spaces (the store does both). The
//! reply is the new value.

use super::parse::{push_u64, safe_strtoull, Tokens, KEY_MAX_LENGTH};
use super::{reply, reply_error, reply_read_only, Ctx, BAD_FORMAT, ERROR};
use crate::store::{valid_key, ArithArgs, ArithOutcome, StoreError};

/// `cfd`: the connection's descriptor, for `watch` lines.
pub fn step(t: &Tokens, incr: bool, cfd: i32, out: &mut Vec<u8>, ctx: &Ctx) {
    if t.count() != 4 && t.count() != 5 {
        return reply_error(out, false, ERROR, ctx);
    }
    let noreply = t.noreply();
    let key = t.get(1);
    if key.len() > KEY_MAX_LENGTH {
        return reply_error(out, noreply, BAD_FORMAT, ctx);
    }
    let Some(delta) = safe_strtoull(t.get(2)) else {
        return reply_error(out, noreply, b"CLIENT_ERROR invalid numeric delta argument", ctx);
    };
    if !valid_key(key) {
        return reply_error(out, noreply, BAD_FORMAT, ctx);
    }
    let args = ArithArgs { key, incr, delta, cas: 0, initial: None, new_exptime: None };
    crate::protocol::watch_lookup(key, cfd, ctx);
    match ctx.store.arith(&args) {
        Ok(ArithOutcome::Value { value, .. }) => {
            if incr {
                ctx.stats.incr_hits.incr();
            } else {
                ctx.stats.decr_hits.incr();
            }
            if !noreply {
                push_u64(out, value);
                out.extend_from_slice(b"\r\n");
            }
        }
        Ok(ArithOutcome::NotFound) => {
            if incr {
                ctx.stats.incr_misses.incr();
            } else {
                ctx.stats.decr_misses.incr();
            }
            reply(out, noreply, b"NOT_FOUND");
        }
        Ok(ArithOutcome::NonNumeric) => {
            reply(out, noreply, b"CLIENT_ERROR cannot increment or decrement non-numeric value")
        }
        // Only with a CAS, which the text protocol never sends.
        Ok(ArithOutcome::Exists) => reply(out, noreply, b"EXISTS"),
        Err(StoreError::ReadOnly) => reply_read_only(out, noreply, ctx),
        Err(e @ (StoreError::Fenced | StoreError::NotReplicated)) => super::reply_role_error(out, noreply, e, ctx),
        // The new record could not be written: memcached's allocation failure.
        Err(StoreError::TooLarge | StoreError::NoMemory) => reply(out, noreply, b"SERVER_ERROR out of memory"),
        Err(StoreError::BadKey) => reply_error(out, noreply, BAD_FORMAT, ctx),
    }
}
