//! get, gets, gat, gats: `get <key>*`, `gat <exptime> <key>*`.
//!
//! Each hit is `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n`; the reply
//! ends with `END`. A bad key anywhere in the line throws away the hits
//! already written and answers `CLIENT_ERROR bad command line format` alone,
//! as memcached does.

use super::parse::{push_u64, safe_strtol, Tokens};
use super::{reply, reply_error, reply_read_only, Ctx, BAD_EXPTIME, BAD_FORMAT, ERROR};
use crate::store::{valid_key, ItemMeta, ReadOpts, StoreError};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Get,
    Gets,
    Gat,
    Gats,
}

impl Kind {
    fn with_cas(self) -> bool {
        matches!(self, Kind::Gets | Kind::Gats)
    }
    fn touches(self) -> bool {
        matches!(self, Kind::Gat | Kind::Gats)
    }
}

/// The line before a hit's data.
fn value_header(out: &mut Vec<u8>, key: &[u8], m: &ItemMeta, with_cas: bool) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    push_u64(out, m.flags as u64);
    out.push(b' ');
    push_u64(out, m.value_len as u64);
    if with_cas {
        out.push(b' ');
        push_u64(out, m.cas);
    }
    out.extend_from_slice(b"\r\n");
}

pub fn get(t: &Tokens, kind: Kind, out: &mut Vec<u8>, ctx: &Ctx) {
    // At least one argument (a key, or gat's exptime).
    if t.count() < 3 {
        return reply_error(out, false, ERROR, ctx);
    }
    let mut args = t.rest();
    let mut exptime = 0i64;
    if kind.touches() {
        match args.next().and_then(safe_strtol) {
            Some(e) => exptime = e as i64,
            None => return reply_error(out, false, BAD_EXPTIME, ctx),
        }
    }
    let start = out.len();
    let opts = ReadOpts { value: true, note_access: true };
    let with_cas = kind.with_cas();
    for key in args {
        // memcached checks only the length (`valid_key`: any bytes).
        if !valid_key(key) {
            out.truncate(start);
            return reply_error(out, false, BAD_FORMAT, ctx);
        }
        let header = |m: &ItemMeta, out: &mut Vec<u8>| value_header(out, key, m, with_cas);
        let hit = if kind.touches() {
            ctx.stats.cmd_touch.incr();
            match ctx.store.get_and_touch(key, exptime, opts, out, header) {
                Ok(hit) => {
                    if hit.is_some() {
                        ctx.stats.touch_hits.incr();
                    } else {
                        ctx.stats.touch_misses.incr();
                    }
                    hit
                }
                Err(StoreError::ReadOnly) => {
                    out.truncate(start);
                    return reply_read_only(out, false, ctx);
                }
                Err(e @ (StoreError::Fenced | StoreError::NotReplicated)) => {
                    out.truncate(start);
                    return super::reply_role_error(out, false, e, ctx);
                }
                // The key was checked above and a touch never grows an item.
                Err(_) => {
                    out.truncate(start);
                    return reply_error(out, false, BAD_FORMAT, ctx);
                }
            }
        } else {
            ctx.stats.cmd_get.incr();
            let hit = ctx.store.get(key, opts, out, header);
            if hit.is_some() {
                ctx.stats.get_hits.incr();
            } else {
                ctx.stats.get_misses.incr();
            }
            hit
        };
        if hit.is_some() {
            out.extend_from_slice(b"\r\n");
        }
    }
    reply(out, false, b"END");
}
