//! delete, deleteq (with CAS).

use super::{status, Req};
use crate::protocol::Ctx;
use crate::store::DeleteOutcome;

pub(crate) fn handle(req: &Req, out: &mut Vec<u8>, ctx: &Ctx) {
    ctx.rt.detail.delete(req.key, ctx.rt.settings.detail_delimiter);
    crate::protocol::watch_lookup(req.key, req.cfd, ctx);
    match ctx.store.delete(req.key, ctx.compared_cas(req.h.cas)) {
        Ok(DeleteOutcome::Deleted) => {
            ctx.stats.delete_hits.incr();
            req.ok(out, 0);
        }
        Ok(DeleteOutcome::NotFound) => {
            ctx.stats.delete_misses.incr();
            req.error(out, status::KEY_ENOENT);
        }
        Ok(DeleteOutcome::Exists) => req.error(out, status::KEY_EEXISTS),
        Err(e) => req.store_error(out, e, ctx),
    }
}
