//! md: meta delete, with q C I T O k b.

use super::{common_checks, flags, line, push_opaque_and_key, store_error};
use crate::protocol::Ctx;
use crate::store::DeleteOutcome;

/// `cfd`: the connection's descriptor, for `watch` lines.
pub(super) fn handle(tokens: &[&[u8]], cfd: i32, out: &mut Vec<u8>, ctx: &Ctx) {
    if let Err(e) = common_checks(tokens, "CLIENT_ERROR options flags too long") {
        return line(out, e);
    }
    let ftok = &tokens[2..];
    // memcached's md and ma answer every flag error with one message.
    let Ok(f) = flags::parse(tokens[1], ftok) else {
        return line(out, "CLIENT_ERROR invalid or duplicate flag");
    };
    if flags::opaque_too_long(ftok) {
        return line(out, "CLIENT_ERROR opaque token too long");
    }
    let cas = ctx.compared_cas(f.cas.unwrap_or(0));
    crate::protocol::watch_lookup(&f.key, cfd, ctx);
    let r = if f.invalidate {
        // I: mark stale (new CAS, optional new TTL) instead of removing.
        ctx.store.invalidate(&f.key, cas, f.ttl)
    } else {
        ctx.store.delete(&f.key, cas)
    };
    let status = match r {
        Ok(DeleteOutcome::Deleted) => {
            ctx.stats.delete_hits.incr();
            if f.no_reply {
                return;
            }
            "HD"
        }
        Ok(DeleteOutcome::NotFound) => {
            ctx.stats.delete_misses.incr();
            "NF"
        }
        Ok(DeleteOutcome::Exists) => {
            ctx.stats.delete_misses.incr();
            "EX"
        }
        Err(e) => return line(out, store_error(e, ctx)),
    };
    out.extend_from_slice(status.as_bytes());
    push_opaque_and_key(out, ftok, &f.key, f.key_binary);
    out.extend_from_slice(b"\r\n");
}
