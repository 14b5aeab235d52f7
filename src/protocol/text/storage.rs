//! set, add, replace, append, prepend, cas:
//! `<cmd> <key> <flags> <exptime> <bytes> [noreply]\r\n<data>\r\n` and
//! `cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]\r\n<data>\r\n`.
//!
//! The order of checks is memcached's, so a line with several faults gets
//! the reply memcached would give. A refused line leaves the data block to
//! be parsed as the next command (memcached's behaviour) unless we know its
//! length, in which case it is swallowed.

use super::parse::{safe_strtol, safe_strtoul, safe_strtoull, Tokens, KEY_MAX_LENGTH};
use super::{reply, reply_error, reply_read_only, Ctx, Kind, Session, Step, BAD_FORMAT, ERROR, TOO_LARGE};
use crate::store::{valid_key, SetArgs, SetMode, SetOutcome, StoreError};

/// Consumed `len` bytes: every storage command is timed as a set.
fn set_step(len: usize) -> Step {
    Step::Consumed { len, kind: Kind::Set }
}

pub fn step(t: &Tokens, session: &mut Session, input: &[u8], next: usize, out: &mut Vec<u8>, ctx: &Ctx) -> Step {
    let (mode, is_cas) = match t.get(0) {
        b"set" => (SetMode::Set, false),
        b"add" => (SetMode::Add, false),
        b"replace" => (SetMode::Replace, false),
        b"append" => (SetMode::Append, false),
        b"prepend" => (SetMode::Prepend, false),
        _ => (SetMode::Set, true),
    };
    // memcached's token counts include its terminal token: 6|7, cas 7|8.
    let base = if is_cas { 7 } else { 6 };
    if t.count() != base && t.count() != base + 1 {
        reply_error(out, false, ERROR, ctx);
        return set_step(next);
    }
    // Any token in the noreply position counts only if it says noreply;
    // anything else there is ignored, as memcached does.
    let noreply = t.noreply();
    let key = t.get(1);
    let numbers = (safe_strtoul(t.get(2)), safe_strtol(t.get(3)), safe_strtol(t.get(4)));
    let (Some(flags), Some(exptime), Some(vlen)) = numbers else {
        reply_error(out, noreply, BAD_FORMAT, ctx);
        return set_step(next);
    };
    let cas_unique = if is_cas {
        match safe_strtoull(t.get(5)) {
            Some(c) => c,
            None => {
                reply_error(out, noreply, BAD_FORMAT, ctx);
                return set_step(next);
            }
        }
    } else {
        0
    };
    if !(0..=i32::MAX - 2).contains(&vlen) {
        reply_error(out, noreply, BAD_FORMAT, ctx);
        return set_step(next);
    }
    let vlen = vlen as usize;
    // The data block and its "\r\n".
    let block = vlen + 2;
    if key.len() > KEY_MAX_LENGTH || !valid_key(key) {
        reply_error(out, noreply, BAD_FORMAT, ctx);
        session.swallow = block;
        return set_step(next);
    }
    if vlen > ctx.store.max_item_size() {
        // Refused before it is read; memcached swallows the data unparsed,
        // and a failed `set` unlinks the key's old value: a client that
        // believes it wrote must never read the old one back.
        ctx.stats.store_too_large.incr();
        if mode == SetMode::Set && !is_cas && !ctx.store.is_read_only() {
            let _ = ctx.store.delete(key, 0);
        }
        reply(out, noreply, TOO_LARGE);
        session.swallow = block;
        return set_step(next);
    }
    if input.len() < next + block {
        return Step::NeedMore;
    }
    let consumed = set_step(next + block);
    let data = &input[next..next + block];
    ctx.stats.cmd_set.incr();
    ctx.rt.detail.set(key, ctx.rt.settings.detail_delimiter);
    if &data[vlen..] != b"\r\n" {
        // The block was read as declared; the next command starts after it.
        reply_error(out, noreply, b"CLIENT_ERROR bad data chunk", ctx);
        return consumed;
    }
    let mut args = SetArgs::new(mode, key, &data[..vlen], flags, exptime as i64);
    if is_cas {
        // Our store reads CAS 0 as "unconditional"; memcached's items never
        // have CAS 0, so `cas ... 0` must fail (EXISTS or NOT_FOUND). No
        // item can carry u64::MAX, which gives exactly that.
        args.cas = ctx.compared_cas(if cas_unique == 0 { u64::MAX } else { cas_unique });
    }
    let line: &[u8] = match ctx.store.set(&args) {
        Ok(SetOutcome::Stored { .. }) => {
            if is_cas {
                ctx.stats.cas_hits.incr();
            }
            b"STORED"
        }
        Ok(SetOutcome::NotStored) => b"NOT_STORED",
        Ok(SetOutcome::Exists) => {
            ctx.stats.cas_badval.incr();
            b"EXISTS"
        }
        Ok(SetOutcome::NotFound) => {
            ctx.stats.cas_misses.incr();
            b"NOT_FOUND"
        }
        Err(StoreError::ReadOnly) => {
            reply_read_only(out, noreply, ctx);
            return consumed;
        }
        Err(e @ (StoreError::Fenced | StoreError::NotReplicated)) => {
            super::reply_role_error(out, noreply, e, ctx);
            return consumed;
        }
        // An append or prepend that would outgrow -I: memcached fails the
        // allocation and answers NOT_STORED.
        Err(StoreError::TooLarge) if matches!(mode, SetMode::Append | SetMode::Prepend) => b"NOT_STORED",
        Err(StoreError::TooLarge) => {
            ctx.stats.store_too_large.incr();
            TOO_LARGE
        }
        Err(StoreError::BadKey) => {
            reply_error(out, noreply, BAD_FORMAT, ctx);
            return consumed;
        }
        // -M: storing it would have evicted a live item. memcached then
        // unlinks a plain set's old value, as for one too large.
        Err(StoreError::NoMemory) => {
            ctx.stats.store_no_memory.incr();
            if mode == SetMode::Set && !is_cas {
                let _ = ctx.store.delete(key, 0);
            }
            b"SERVER_ERROR out of memory storing object"
        }
    };
    if ctx.rt.watch.wants(crate::stats::watch::MUTATIONS) {
        watch_store(t.get(0), key, line, exptime as i64, vlen, session.cfd, ctx);
    }
    reply(out, noreply, line);
    consumed
}

/// memcached's `item_store` line for this outcome (`watch mutations`).
fn watch_store(cmd: &[u8], key: &[u8], line: &[u8], exptime: i64, size: usize, cfd: i32, ctx: &Ctx) {
    let status = match line {
        b"STORED" => "stored",
        b"NOT_STORED" => "not_stored",
        b"EXISTS" => "exists",
        b"NOT_FOUND" => "not_found",
        _ => "too_large",
    };
    // memcached shows the time left: an absolute time (past 30 days) relative to now.
    let ttl = if exptime > 60 * 60 * 24 * 30 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        (exptime - now).max(0)
    } else {
        exptime.max(0)
    };
    ctx.rt.watch.item_store(key, status, std::str::from_utf8(cmd).unwrap_or("set"), ttl, size, cfd);
}
