//! delete: `delete <key> [0] [noreply]`.
//!
//! memcached still accepts a hold time, but only `0` (the old delayed delete
//! is gone); anything else gets its usage message.

use super::parse::{Tokens, KEY_MAX_LENGTH};
use super::{reply, reply_error, reply_read_only, Ctx, BAD_FORMAT, ERROR};
use crate::store::{valid_key, DeleteOutcome, StoreError};

/// `session_cfd`: the connection's descriptor, for `watch` lines.
pub fn step(t: &Tokens, session_cfd: i32, out: &mut Vec<u8>, ctx: &Ctx) {
    if !(3..=5).contains(&t.count()) {
        return reply_error(out, false, ERROR, ctx);
    }
    let mut noreply = false;
    if t.count() > 3 {
        let hold_is_zero = t.get(2) == b"0";
        noreply = t.noreply();
        let valid = (t.count() == 4 && (hold_is_zero || noreply)) || (t.count() == 5 && hold_is_zero && noreply);
        if !valid {
            let usage = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";
            return reply_error(out, noreply, usage, ctx);
        }
    }
    let key = t.get(1);
    if key.len() > KEY_MAX_LENGTH || !valid_key(key) {
        return reply_error(out, noreply, BAD_FORMAT, ctx);
    }
    ctx.rt.detail.delete(key, ctx.rt.settings.detail_delimiter);
    crate::protocol::watch_lookup(key, session_cfd, ctx);
    match ctx.store.delete(key, 0) {
        Ok(DeleteOutcome::Deleted) => {
            ctx.stats.delete_hits.incr();
            reply(out, noreply, b"DELETED");
        }
        Ok(DeleteOutcome::NotFound) => {
            ctx.stats.delete_misses.incr();
            reply(out, noreply, b"NOT_FOUND");
        }
        // Only with a CAS, which the text protocol never sends.
        Ok(DeleteOutcome::Exists) => reply(out, noreply, b"EXISTS"),
        Err(StoreError::ReadOnly) => reply_read_only(out, noreply, ctx),
        Err(e @ (StoreError::Fenced | StoreError::NotReplicated)) => super::reply_role_error(out, noreply, e, ctx),
        Err(StoreError::TooLarge | StoreError::NoMemory) => reply(out, noreply, b"SERVER_ERROR out of memory"),
        Err(StoreError::BadKey) => reply_error(out, noreply, BAD_FORMAT, ctx),
    }
}
