//! memcached's memory-tuning commands: `cache_memlimit`, `slabs reassign`,
//! `slabs automove`, `lru mode|tune|temp_ttl`. A log has no slab classes
//! to move pages between and no LRU segments to tune, so these answer as
//! memcached 1.6.18 does (its argument checks and replies) and change
//! nothing; `cache_memlimit` cannot resize the log (below).

use super::parse::{safe_strtol, safe_strtoul, Tokens};
use super::{reply, reply_error, Ctx, BAD_FORMAT, ERROR};

/// memcached's highest slab class id with its defaults (-n 48 -f 1.25 -I
/// 1m): `slabs reassign` names classes up to it.
const LARGEST_CLASS: i32 = 39;

/// `cache_memlimit <megabytes> [noreply]`. memcached refuses less than 8
/// MB and otherwise changes its limit. The log is one region mapped and
/// registered once at start (replicas map it and RDMA peers address it by
/// offset), so it can be neither grown nor moved: the current `-m` is
/// accepted (OK, nothing to do) and any other value refused, saying why.
pub fn cache_memlimit(t: &Tokens, out: &mut Vec<u8>, ctx: &Ctx) {
    if t.count() != 3 && t.count() != 4 {
        return reply_error(out, false, ERROR, ctx);
    }
    let noreply = t.noreply();
    let Some(mb) = safe_strtoul(t.get(1)) else {
        return reply_error(out, noreply, ERROR, ctx);
    };
    if mb < 8 {
        return reply(out, noreply, b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m");
    }
    if mb as usize == ctx.rt.settings.memory_bytes >> 20 {
        return reply(out, noreply, b"OK");
    }
    reply(
        out,
        noreply,
        b"SERVER_ERROR cache_memlimit cannot resize the log: it is one region mapped at start (replicas and RDMA peers address it); restart with -m",
    );
}

/// `slabs reassign <src> <dst>` and `slabs automove <0|1|2>`.
pub fn slabs(t: &Tokens, out: &mut Vec<u8>, ctx: &Ctx) {
    match (t.get(1), t.count()) {
        (b"reassign", 5) => {
            let (Some(src), Some(dst)) = (safe_strtol(t.get(2)), safe_strtol(t.get(3))) else {
                return reply(out, false, BAD_FORMAT);
            };
            let answer: &[u8] = if src == dst {
                b"SAME src and dst class are identical"
            } else if !(0..=LARGEST_CLASS).contains(&src) || !(1..=LARGEST_CLASS).contains(&dst) {
                b"BADCLASS invalid src or dst class id"
            } else {
                // True of a log: no class has pages to give.
                b"NOSPARE source class has no spare pages"
            };
            reply(out, false, answer)
        }
        (b"automove", 4) => match safe_strtoul(t.get(2)) {
            Some(0..=2) => reply(out, false, b"OK"),
            Some(_) => reply_error(out, false, ERROR, ctx),
            None => reply(out, false, BAD_FORMAT),
        },
        _ => reply_error(out, false, ERROR, ctx),
    }
}

/// `lru mode flat|segmented`, `lru temp_ttl <secs>`, `lru tune <pct_hot>
/// <pct_warm> <hot_max_factor> <warm_max_factor>`.
pub fn lru(t: &Tokens, out: &mut Vec<u8>, ctx: &Ctx) {
    let num = |i: usize| std::str::from_utf8(t.get(i)).ok().and_then(|s| s.parse::<f64>().ok()).is_some();
    let ok = match (t.get(1), t.count()) {
        (b"mode", 4) => matches!(t.get(2), b"flat" | b"segmented"),
        (b"temp_ttl", 4) => safe_strtol(t.get(2)).is_some(),
        (b"tune", n) if n >= 7 => {
            safe_strtoul(t.get(2)).is_some() && safe_strtoul(t.get(3)).is_some() && num(4) && num(5)
        }
        _ => false,
    };
    if ok {
        reply(out, false, b"OK")
    } else {
        reply_error(out, false, ERROR, ctx)
    }
}
