//! touch: `touch <key> <exptime> [noreply]` sets a new expiry, keeping the
//! value, flags and CAS.

use super::parse::{safe_strtol, Tokens, KEY_MAX_LENGTH};
use super::{reply, reply_error, reply_read_only, Ctx, BAD_EXPTIME, BAD_FORMAT, ERROR};
use crate::store::{valid_key, StoreError};

/// `cfd`: the connection's descriptor, for `watch` lines.
pub fn step(t: &Tokens, cfd: i32, out: &mut Vec<u8>, ctx: &Ctx) {
    if t.count() != 4 && t.count() != 5 {
        return reply_error(out, false, ERROR, ctx);
    }
    let noreply = t.noreply();
    let key = t.get(1);
    if key.len() > KEY_MAX_LENGTH {
        return reply_error(out, noreply, BAD_FORMAT, ctx);
    }
    let Some(exptime) = safe_strtol(t.get(2)) else {
        return reply_error(out, noreply, BAD_EXPTIME, ctx);
    };
    if !valid_key(key) {
        return reply_error(out, noreply, BAD_FORMAT, ctx);
    }
    crate::protocol::watch_lookup(key, cfd, ctx);
    match ctx.store.touch(key, exptime as i64) {
        Ok(found) => {
            ctx.stats.cmd_touch.incr();
            if found {
                ctx.stats.touch_hits.incr();
                reply(out, noreply, b"TOUCHED");
            } else {
                ctx.stats.touch_misses.incr();
                reply(out, noreply, b"NOT_FOUND");
            }
        }
        Err(StoreError::ReadOnly) => reply_read_only(out, noreply, ctx),
        Err(e @ (StoreError::Fenced | StoreError::NotReplicated)) => super::reply_role_error(out, noreply, e, ctx),
        Err(StoreError::TooLarge | StoreError::NoMemory) => reply(out, noreply, b"SERVER_ERROR out of memory"),
        Err(StoreError::BadKey) => reply_error(out, noreply, BAD_FORMAT, ctx),
    }
}
