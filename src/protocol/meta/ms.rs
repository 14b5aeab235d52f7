//! ms: meta set, with T F C I q O k b and modes (M) E A P R S.

use super::{common_checks, flags, line, meta_step, push_key, store_error};
use crate::protocol::{Ctx, Session, Step};
use crate::store::{SetArgs, SetMode, SetOutcome, StoreError};

/// Answer `msg` and swallow the data block that follows the line.
fn refuse(session: &mut Session, out: &mut Vec<u8>, msg: &str, data_len: usize, next: usize) -> Step {
    line(out, msg);
    session.swallow = data_len;
    meta_step(next)
}

pub(super) fn handle(
    session: &mut Session,
    input: &[u8],
    tokens: &[&[u8]],
    next: usize,
    out: &mut Vec<u8>,
    ctx: &Ctx,
) -> Step {
    // Errors before the length is known cannot swallow the data: memcached
    // then reads it as a command line, and so do we.
    let checked = common_checks(tokens, "CLIENT_ERROR options flags too long");
    let checked = checked.and(if tokens.len() < 3 { Err("CLIENT_ERROR bad command line format") } else { Ok(()) });
    if let Err(e) = checked {
        line(out, e);
        return meta_step(next);
    }
    let Some(vlen) = flags::strtol(tokens[2]).filter(|&v| v >= 0) else {
        line(out, "CLIENT_ERROR bad command line format");
        return meta_step(next);
    };
    let vlen = vlen as usize;
    let data_len = vlen + 2;
    let ftok = &tokens[3..];
    let f = match flags::parse(tokens[1], ftok) {
        Ok(f) => f,
        Err(e) => return refuse(session, out, e, data_len, next),
    };
    if flags::opaque_too_long(ftok) {
        return refuse(session, out, "CLIENT_ERROR opaque token too long", data_len, next);
    }
    let mode = match f.mode {
        None | Some(b'S') => SetMode::Set,
        Some(b'E') => SetMode::Add,
        Some(b'A') => SetMode::Append,
        Some(b'P') => SetMode::Prepend,
        Some(b'R') => SetMode::Replace,
        Some(_) => return refuse(session, out, "CLIENT_ERROR invalid mode for ms M token", data_len, next),
    };
    if vlen > ctx.store.max_item_size() {
        ctx.stats.store_too_large.incr();
        // As memcached: a failed store must not leave the old value behind.
        if !ctx.store.is_read_only() {
            let _ = ctx.store.delete(&f.key, 0);
        }
        return refuse(session, out, "SERVER_ERROR object too large for cache", data_len, next);
    }
    let end = next + data_len;
    if input.len() < end {
        return Step::NeedMore;
    }
    if &input[next + vlen..end] != b"\r\n" {
        line(out, "CLIENT_ERROR bad data chunk");
        return meta_step(end);
    }
    let value = &input[next..next + vlen];

    // memcached: C upgrades set and replace to a CAS store (I then allows a
    // stale store); append/prepend check it; add ignores it.
    let (mode, cas) = match (mode, f.cas) {
        (SetMode::Set | SetMode::Replace, Some(c)) => (SetMode::Set, c),
        (SetMode::Append | SetMode::Prepend, Some(c)) => (mode, c),
        (m, _) => (m, 0),
    };
    let mut args = SetArgs::new(mode, &f.key, value, f.client_flags, f.ttl.unwrap_or(0));
    args.cas = ctx.compared_cas(cas);
    args.invalidate = f.invalidate && cas != 0 && mode == SetMode::Set;
    args.key_binary = f.key_binary;
    // memcached 1.6.18 accepts N on ms but does not vivify an append.
    ctx.stats.cmd_set.incr();
    let appending = matches!(mode, SetMode::Append | SetMode::Prepend);
    let result = ctx.store.set(&args);
    // A refusal for the role (a replica, fenced) stored nothing to show.
    let watched = ctx.rt.watch.wants(crate::stats::watch::MUTATIONS);
    if let (true, Some(status)) = (watched, store_status(&result, appending)) {
        let cmd = match mode {
            SetMode::Set => "set",
            SetMode::Add => "add",
            SetMode::Replace => "replace",
            SetMode::Append => "append",
            SetMode::Prepend => "prepend",
        };
        ctx.rt.watch.item_store(&f.key, status, cmd, f.ttl.unwrap_or(0).max(0), value.len(), session.cfd);
    }
    let (status, new_cas) = match result {
        Ok(SetOutcome::Stored { cas }) => {
            if f.no_reply {
                return meta_step(end);
            }
            ("HD", cas)
        }
        Ok(SetOutcome::NotStored) => ("NS", 0),
        Ok(SetOutcome::Exists) => ("EX", 0),
        Ok(SetOutcome::NotFound) if appending => ("NS", 0),
        Ok(SetOutcome::NotFound) => ("NF", 0),
        Err(StoreError::TooLarge) if appending => ("NS", 0),
        Err(e) => {
            if e == StoreError::NoMemory {
                // -M: memcached unlinks the old value (any mode), as above.
                let _ = ctx.store.delete(&f.key, 0);
            }
            line(out, store_error(e, ctx));
            return meta_step(end);
        }
    };
    out.extend_from_slice(status.as_bytes());
    for t in ftok {
        match t[0] {
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(t);
            }
            b'k' => push_key(out, &f.key, f.key_binary),
            b'c' => out.extend_from_slice(format!(" c{}", ctx.shown_cas(new_cas)).as_bytes()),
            _ => {}
        }
    }
    out.extend_from_slice(b"\r\n");
    meta_step(end)
}

/// memcached's `item_store` status word for an outcome (`watch mutations`).
fn store_status(r: &Result<SetOutcome, StoreError>, appending: bool) -> Option<&'static str> {
    Some(match r {
        Ok(SetOutcome::Stored { .. }) => "stored",
        Ok(SetOutcome::Exists) => "exists",
        Ok(SetOutcome::NotFound) if !appending => "not_found",
        Ok(_) | Err(StoreError::TooLarge) => "not_stored",
        Err(_) => return None,
    })
}
