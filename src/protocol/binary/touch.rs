//! touch, gat, gatq, gatk, gatkq: a new expiry, with or without the value.

use super::{get, opcode, Req};
use crate::protocol::Ctx;
use crate::store::ReadOpts;

pub(crate) fn handle(req: &Req, out: &mut Vec<u8>, ctx: &Ctx) {
    let exptime = u32::from_be_bytes([req.extras[0], req.extras[1], req.extras[2], req.extras[3]]) as i64;
    let with_value = req.op != opcode::TOUCH;
    let with_key = req.op == opcode::GATK;
    ctx.stats.cmd_touch.incr();
    let r =
        ctx.store.get_and_touch(req.key, exptime, ReadOpts { value: with_value, note_access: true }, out, |m, out| {
            // touch answers the flags and CAS but not the value.
            let len = if with_value { m.value_len } else { 0 };
            get::write_hit_header(req, out, m.flags, ctx.shown_cas(m.cas), len, with_key);
        });
    if let (Ok(hit), true) = (&r, ctx.rt.watch.wants(crate::stats::watch::FETCHERS)) {
        ctx.rt.watch.item_get(req.key, hit.is_some(), hit.as_ref().map_or(0, |m| m.value_len as usize), req.cfd);
    }
    match r {
        Ok(Some(_)) => ctx.stats.touch_hits.incr(),
        Ok(None) => {
            ctx.stats.touch_misses.incr();
            get::miss(req, out, with_key);
        }
        Err(e) => req.store_error(out, e, ctx),
    }
}
