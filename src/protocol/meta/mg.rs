//! mg: meta get, with v k c f t s h l O q b N R T u (memcached 1.6.18's set).

use super::{common_checks, flags, line, push_key, push_opaque_and_key, store_error, ttl};
use crate::protocol::Ctx;
use crate::store::{absolute_expiry, MetaGet, MetaGetArgs};

/// `cfd`: the connection's descriptor, for `watch` lines.
pub(super) fn handle(tokens: &[&[u8]], cfd: i32, out: &mut Vec<u8>, ctx: &Ctx) {
    if let Err(e) = common_checks(tokens, "CLIENT_ERROR options flags are too long") {
        return line(out, e);
    }
    let ftok = &tokens[2..];
    let f = match flags::parse(tokens[1], ftok) {
        Ok(f) => f,
        Err(e) => return line(out, e),
    };
    if flags::opaque_too_long(ftok) {
        return line(out, "CLIENT_ERROR opaque token too long");
    }
    let args = MetaGetArgs {
        value: f.value,
        note_access: !f.no_update,
        vivify: f.vivify,
        touch: f.ttl,
        touch_after_vivify: flags::position(ftok, b'T') > flags::position(ftok, b'N'),
        recache: f.recache,
        touch_before_recache: flags::position(ftok, b'R') > flags::position(ftok, b'T'),
    };
    if f.ttl.is_some() {
        ctx.stats.cmd_touch.incr();
    } else {
        ctx.stats.cmd_get.incr();
    }
    let r = ctx.store.meta_get(&f.key, &args, out, |m, out| header(out, m, ftok, &f, ctx));
    if let Ok(hit) = &r {
        if ctx.rt.watch.wants(crate::stats::watch::FETCHERS) {
            let size = hit.as_ref().map_or(0, |m| m.item.value_len as usize);
            ctx.rt.watch.item_get(&f.key, hit.is_some(), size, cfd);
        }
    }
    match r {
        Ok(Some(_)) => {
            if f.value {
                out.extend_from_slice(b"\r\n");
            }
            if f.ttl.is_some() {
                ctx.stats.touch_hits.incr()
            } else {
                ctx.stats.get_hits.incr()
            }
        }
        Ok(None) => {
            if f.ttl.is_some() {
                ctx.stats.touch_misses.incr()
            } else {
                ctx.stats.get_misses.incr()
            }
            // q: a miss is the nominal outcome to leave out.
            if !f.no_reply {
                out.extend_from_slice(b"EN");
                push_opaque_and_key(out, ftok, &f.key, f.key_binary);
                out.extend_from_slice(b"\r\n");
            }
        }
        Err(e) => line(out, store_error(e, ctx)),
    }
}

/// The status line of a hit, flags in the order they were asked for.
fn header(out: &mut Vec<u8>, m: &MetaGet, ftok: &[&[u8]], f: &flags::MetaFlags, ctx: &Ctx) {
    let it = &m.item;
    if f.value {
        out.extend_from_slice(format!("VA {}", it.value_len).as_bytes());
    } else {
        out.extend_from_slice(b"HD");
    }
    // `t` shows the expiry as it stands at its place on the line: before or
    // after a `T` (or the `N` that created the item).
    let mut expiry = m.expiry_before;
    for t in ftok {
        let field = match t[0] {
            // Each of T and N (N: only on a created item) sets the expiry in
            // memcached's loop; t shows the one so far.
            b'T' => {
                expiry = f.ttl.map_or(expiry, |t| absolute_expiry(t, m.now));
                continue;
            }
            b'N' if m.created => {
                expiry = f.vivify.map_or(expiry, |n| absolute_expiry(n, m.now));
                continue;
            }
            b's' => format!(" s{}", it.value_len),
            b't' => format!(" t{}", ttl(expiry, m.now)),
            b'c' => format!(" c{}", ctx.shown_cas(it.cas)),
            b'f' => format!(" f{}", it.flags),
            b'l' => format!(" l{}", m.now.saturating_sub(it.last_access)),
            b'h' => format!(" h{}", it.fetched as u8),
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(t);
                continue;
            }
            // memcached echoes a hit's key base64-encoded if the item was
            // stored so (`ms ... b`), whatever this request said (a miss, ms,
            // md and ma go by the request's `b`).
            b'k' => {
                push_key(out, &f.key, it.key_binary);
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(field.as_bytes());
    }
    // Z: someone holds the token; X: stale; W: this request won it.
    if m.token_sent {
        out.extend_from_slice(b" Z");
    }
    if it.stale {
        out.extend_from_slice(b" X");
    }
    if m.win {
        out.extend_from_slice(b" W");
    }
    out.extend_from_slice(b"\r\n");
}
