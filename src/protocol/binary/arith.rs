//! increment, decrement and their quiet twins.
//!
//! Extras: delta (u64), initial (u64), expiration (u32). An expiration of
//! 0xffffffff means "do not create on a miss".

use super::{status, Req};
use crate::protocol::Ctx;
use crate::store::{ArithArgs, ArithOutcome};

pub(crate) fn handle(req: &Req, out: &mut Vec<u8>, ctx: &Ctx) {
    let e = req.extras;
    let be64 = |b: &[u8]| b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64);
    let delta = be64(&e[0..8]);
    let initial = be64(&e[8..16]);
    let expiration = be64(&e[16..20]) as u32;
    let incr = req.op == super::opcode::INCREMENT;
    let args = ArithArgs {
        key: req.key,
        incr,
        delta,
        cas: ctx.compared_cas(req.h.cas),
        initial: (expiration != u32::MAX).then_some((initial, expiration as i64)),
        new_exptime: None,
    };
    crate::protocol::watch_lookup(req.key, req.cfd, ctx);
    match ctx.store.arith(&args) {
        Ok(ArithOutcome::Value { value, cas }) => {
            if incr {
                ctx.stats.incr_hits.incr()
            } else {
                ctx.stats.decr_hits.incr()
            }
            if !req.quiet {
                req.reply(out, status::SUCCESS, ctx.shown_cas(cas), &[], &[], &value.to_be_bytes());
            }
        }
        Ok(ArithOutcome::NotFound) => {
            if incr {
                ctx.stats.incr_misses.incr()
            } else {
                ctx.stats.decr_misses.incr()
            }
            req.error(out, status::KEY_ENOENT);
        }
        Ok(ArithOutcome::NonNumeric) => req.error(out, status::DELTA_BADVAL),
        Ok(ArithOutcome::Exists) => req.error(out, status::KEY_EEXISTS),
        Err(e) => req.store_error(out, e, ctx),
    }
}
