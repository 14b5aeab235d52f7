//! ma: meta arithmetic, with N J D T M (I + D -) q O k b v c t.

use super::{common_checks, flags, line, push_key, push_opaque_and_key, store_error, ttl};
use crate::protocol::Ctx;
use crate::store::{absolute_expiry, ArithArgs, ArithOutcome};

/// `cfd`: the connection's descriptor, for `watch` lines.
pub(super) fn handle(tokens: &[&[u8]], cfd: i32, out: &mut Vec<u8>, ctx: &Ctx) {
    if let Err(e) = common_checks(tokens, "CLIENT_ERROR options flags too long") {
        return line(out, e);
    }
    let ftok = &tokens[2..];
    let Ok(f) = flags::parse(tokens[1], ftok) else {
        return line(out, "CLIENT_ERROR invalid or duplicate flag");
    };
    let incr = match f.mode {
        None | Some(b'I') | Some(b'+') => true,
        Some(b'D') | Some(b'-') => false,
        Some(_) => return line(out, "CLIENT_ERROR invalid mode for ma M token"),
    };
    if flags::opaque_too_long(ftok) {
        return line(out, "CLIENT_ERROR opaque token too long");
    }
    // A created item takes the expiry of whichever of N and T comes last.
    let t_last = flags::position(ftok, b'T') > flags::position(ftok, b'N');
    let initial = f.vivify.map(|n| (f.initial.unwrap_or(0), if t_last { f.ttl.unwrap_or(n) } else { n }));
    let args = ArithArgs {
        key: &f.key,
        incr,
        delta: f.delta.unwrap_or(1),
        cas: ctx.compared_cas(f.cas.unwrap_or(0)),
        initial,
        new_exptime: f.ttl,
    };
    let now = ctx.store.clock.now();
    crate::protocol::watch_lookup(&f.key, cfd, ctx);
    let (outcome, expiry) = match ctx.store.arith_ex(&args) {
        Ok(r) => r,
        Err(e) => return line(out, store_error(e, ctx)),
    };
    let status = match outcome {
        ArithOutcome::Value { value, cas } => {
            if incr {
                ctx.stats.incr_hits.incr()
            } else {
                ctx.stats.decr_hits.incr()
            }
            let (mut cur, created) = expiry.map(|e| (e.before, e.created)).unwrap_or((0, false));
            // memcached's q hides the reply to an update only, not to a creation.
            if f.no_reply && !created {
                return;
            }
            let digits = value.to_string();
            if f.value {
                out.extend_from_slice(format!("VA {}", digits.len()).as_bytes());
            } else {
                out.extend_from_slice(b"HD");
            }
            for t in ftok {
                match t[0] {
                    b'c' => out.extend_from_slice(format!(" c{}", ctx.shown_cas(cas)).as_bytes()),
                    b't' => out.extend_from_slice(format!(" t{}", ttl(cur, now)).as_bytes()),
                    // Each of T and N (N: only on a created item) sets the
                    // expiry in memcached's loop; t shows the one so far.
                    b'T' => cur = f.ttl.map_or(cur, |t| absolute_expiry(t, now)),
                    b'N' if created => cur = f.vivify.map_or(cur, |n| absolute_expiry(n, now)),
                    b'O' => {
                        out.push(b' ');
                        out.extend_from_slice(t);
                    }
                    b'k' => push_key(out, &f.key, f.key_binary),
                    _ => {}
                }
            }
            out.extend_from_slice(b"\r\n");
            if f.value {
                out.extend_from_slice(digits.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            return;
        }
        ArithOutcome::NotFound => {
            if incr {
                ctx.stats.incr_misses.incr()
            } else {
                ctx.stats.decr_misses.incr()
            }
            "NF"
        }
        ArithOutcome::Exists => "EX",
        ArithOutcome::NonNumeric => return line(out, "CLIENT_ERROR cannot increment or decrement non-numeric value"),
    };
    out.extend_from_slice(status.as_bytes());
    push_opaque_and_key(out, ftok, &f.key, f.key_binary);
    out.extend_from_slice(b"\r\n");
}
