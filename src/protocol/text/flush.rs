//! flush_all: `flush_all [delay] [noreply]`. Without a delay (or with 0 or a
//! negative one) every item is gone at once; with a delay, every item stored
//! before that time dies at it. Delays follow exptime rules (up to 30 days
//! relative, beyond that a unix time).

use super::parse::{safe_strtol, Tokens};
use super::{reply, reply_error, reply_read_only, Ctx, Session, BAD_EXPTIME, ERROR};

/// memcached's reply to `flush_all` under `-F`.
pub const FLUSH_DISABLED: &[u8] = b"CLIENT_ERROR flush_all not allowed";

pub fn step(t: &Tokens, session: &Session, out: &mut Vec<u8>, ctx: &Ctx) {
    if !(2..=4).contains(&t.count()) {
        return reply_error(out, false, ERROR, ctx);
    }
    let noreply = t.noreply();
    ctx.stats.cmd_flush.incr();
    // `-F`, as memcached: counted, refused (silently with noreply).
    if !(ctx.rt.settings.flush_enabled || session.admin) {
        return reply(out, noreply, FLUSH_DISABLED);
    }
    let mut delay = 0;
    // memcached reads a delay whenever the line has more than the command
    // (and its noreply); anything after the delay is ignored.
    if t.count() != if noreply { 3 } else { 2 } {
        match safe_strtol(t.get(1)) {
            Some(d) => delay = d,
            None => return reply_error(out, noreply, BAD_EXPTIME, ctx),
        }
    }
    match ctx.store.flush_all(delay as i64) {
        Ok(()) => reply(out, noreply, b"OK"),
        Err(crate::store::StoreError::ReadOnly) => reply_read_only(out, noreply, ctx),
        Err(e @ (crate::store::StoreError::Fenced | crate::store::StoreError::NotReplicated)) => {
            super::reply_role_error(out, noreply, e, ctx)
        }
        Err(_) => reply(out, noreply, b"SERVER_ERROR out of memory"),
    }
}
