//! set, add, replace, append, prepend and their quiet twins (CAS on all).

use super::{opcode, status, Req};
use crate::protocol::Ctx;
use crate::store::{SetArgs, SetMode, SetOutcome, StoreError};

fn mode(op: u8) -> SetMode {
    match op {
        opcode::ADD => SetMode::Add,
        opcode::REPLACE => SetMode::Replace,
        opcode::APPEND => SetMode::Append,
        opcode::PREPEND => SetMode::Prepend,
        _ => SetMode::Set,
    }
}

pub(crate) fn handle(req: &Req, out: &mut Vec<u8>, ctx: &Ctx) {
    let mut mode = mode(req.op);
    let (flags, exptime) = if req.extras.len() == 8 {
        let x = req.extras;
        (u32::from_be_bytes([x[0], x[1], x[2], x[3]]), u32::from_be_bytes([x[4], x[5], x[6], x[7]]) as i64)
    } else {
        (0, 0)
    };
    let cas = req.h.cas;
    // memcached turns set/add/replace with a CAS into a plain CAS store.
    if cas != 0 && matches!(mode, SetMode::Add | SetMode::Replace) {
        mode = SetMode::Set;
    }
    let mut args = SetArgs::new(mode, req.key, req.value, flags, exptime);
    args.cas = ctx.compared_cas(cas);
    ctx.stats.cmd_set.incr();
    let appending = matches!(mode, SetMode::Append | SetMode::Prepend);
    if !appending {
        ctx.rt.detail.set(req.key, ctx.rt.settings.detail_delimiter);
    }
    let result = ctx.store.set(&args);
    if ctx.rt.watch.wants(crate::stats::watch::MUTATIONS) {
        watch_store(req, mode, exptime, &result, ctx);
    }
    match result {
        Ok(SetOutcome::Stored { cas: new }) => {
            if cas != 0 && !appending {
                ctx.stats.cas_hits.incr();
            }
            req.ok(out, ctx.shown_cas(new))
        }
        Ok(SetOutcome::Exists) => {
            if !appending {
                ctx.stats.cas_badval.incr();
            }
            req.error(out, status::KEY_EEXISTS)
        }
        // append/prepend with a CAS on a missing key: memcached's "not stored".
        Ok(SetOutcome::NotFound) if appending => req.error(out, status::NOT_STORED),
        Ok(SetOutcome::NotFound) => {
            ctx.stats.cas_misses.incr();
            req.error(out, status::KEY_ENOENT)
        }
        Ok(SetOutcome::NotStored) => req.error(
            out,
            match mode {
                SetMode::Add => status::KEY_EEXISTS,
                SetMode::Replace => status::KEY_ENOENT,
                _ => status::NOT_STORED,
            },
        ),
        // A grown append/prepend that no longer fits: memcached says "not stored".
        Err(StoreError::TooLarge) if appending => req.error(out, status::NOT_STORED),
        Err(e) => {
            // -M refused a SET: memcached unlinks the old value, as in `too_large`.
            if e == StoreError::NoMemory && req.op == opcode::SET {
                let _ = ctx.store.delete(req.key, 0);
            }
            req.store_error(out, e, ctx)
        }
    }
}

/// A value over the item size limit, refused before it is read. memcached
/// also drops the key's old value on a failed set, so no stale data stays.
pub(crate) fn too_large(req: &Req, out: &mut Vec<u8>, ctx: &Ctx) {
    ctx.stats.store_too_large.incr();
    if req.op == opcode::SET && !ctx.store.is_read_only() {
        let _ = ctx.store.delete(req.key, 0);
    }
    req.error(out, status::E2BIG);
}

/// memcached's `item_store` line for a binary store (`watch mutations`); a
/// refusal for the role stored nothing to show.
fn watch_store(req: &Req, mode: SetMode, exptime: i64, r: &Result<SetOutcome, StoreError>, ctx: &Ctx) {
    let appending = matches!(mode, SetMode::Append | SetMode::Prepend);
    let status = match r {
        Ok(SetOutcome::Stored { .. }) => "stored",
        Ok(SetOutcome::Exists) => "exists",
        Ok(SetOutcome::NotFound) if !appending => "not_found",
        Ok(_) | Err(StoreError::TooLarge) => "not_stored",
        Err(_) => return,
    };
    let cmd = match mode {
        SetMode::Set if req.h.cas != 0 => "cas",
        SetMode::Set => "set",
        SetMode::Add => "add",
        SetMode::Replace => "replace",
        SetMode::Append => "append",
        SetMode::Prepend => "prepend",
    };
    ctx.rt.watch.item_store(req.key, status, cmd, exptime.max(0), req.value.len(), req.cfd);
}
