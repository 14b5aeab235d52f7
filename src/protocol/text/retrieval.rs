//! get, gets, gat, gats: `get <key>*`, `gat <exptime> <key>*`.
//!
//! Each hit is `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n`; the reply
//! ends with `END`. A bad key anywhere in the line throws away the hits
//! already written and answers `CLIENT_ERROR bad command line format` alone,
//! as memcached does.
//!
//! One line may name a large item hundreds of times, so a reply stops after
//! the hit that reaches `Session::out_limit` and carries on from the next key
//! once the connection's output has drained ([`Resume`]). memcached's reply
//! is all hits or the error, so every key is checked before the first hit is
//! written: the first hits of a paused reply may be on the wire already.

use super::parse::{push_u64, safe_strtol, Tokens};
use super::{reply, reply_error, reply_read_only, Ctx, Session, Step, BAD_EXPTIME, BAD_FORMAT, ERROR};
use crate::store::{valid_key, ItemMeta, ReadOpts, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Get,
    Gets,
    Gat,
    Gats,
}

impl Kind {
    fn with_cas(self) -> bool {
        matches!(self, Kind::Gets | Kind::Gats)
    }
    fn touches(self) -> bool {
        matches!(self, Kind::Gat | Kind::Gats)
    }
    /// The latency histogram: get-and-touch is timed as a touch.
    fn timed_as(self) -> crate::protocol::Kind {
        if self.touches() {
            crate::protocol::Kind::Touch
        } else {
            crate::protocol::Kind::Get
        }
    }
}

/// A paused multi-get's place in its request, which stays at the front of
/// the connection's input (unconsumed) until the reply is complete. Offsets
/// count from the start of that input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    kind: Kind,
    exptime: i64,
    /// The next key starts at or after this offset.
    at: usize,
    /// End of the command line (before its "\r\n").
    line_end: usize,
    /// The request's length, newline included.
    next: usize,
}

/// The line before a hit's data.
fn value_header(out: &mut Vec<u8>, key: &[u8], m: &ItemMeta, cas: Option<u64>) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    push_u64(out, m.flags as u64);
    out.push(b' ');
    push_u64(out, m.value_len as u64);
    if let Some(cas) = cas {
        out.push(b' ');
        push_u64(out, cas);
    }
    out.extend_from_slice(b"\r\n");
}

/// The token (split on spaces, as `Tokens` splits) starting at or after
/// `from`: its start and end.
fn next_token(line: &[u8], from: usize) -> Option<(usize, usize)> {
    let s = from + line.get(from..)?.iter().position(|&b| b != b' ')?;
    let e = line[s..].iter().position(|&b| b == b' ').map_or(line.len(), |n| s + n);
    Some((s, e))
}

/// `get`/`gets`/`gat`/`gats` with the command `line` (without its newline);
/// the request is `next` bytes long.
pub fn get(
    t: &Tokens,
    kind: Kind,
    line: &[u8],
    next: usize,
    session: &mut Session,
    out: &mut Vec<u8>,
    ctx: &Ctx,
) -> Step {
    let done = Step::Consumed { len: next, kind: kind.timed_as() };
    // At least one argument (a key, or gat's exptime).
    if t.count() < 3 {
        reply_error(out, false, ERROR, ctx);
        return done;
    }
    // After the command name (and gat's exptime).
    let mut at = next_token(line, 0).map_or(line.len(), |(_, e)| e);
    let mut exptime = 0i64;
    if kind.touches() {
        match next_token(line, at).and_then(|(s, e)| Some((safe_strtol(&line[s..e])?, e))) {
            Some((e, end)) => (exptime, at) = (e as i64, end),
            None => {
                reply_error(out, false, BAD_EXPTIME, ctx);
                return done;
            }
        }
    }
    // memcached checks only the length (`valid_key`: any bytes), and
    // before any hit, so a bad key anywhere answers the error alone.
    if line[at..].split(|&b| b == b' ').any(|k| !k.is_empty() && !valid_key(k)) {
        reply_error(out, false, BAD_FORMAT, ctx);
        return done;
    }
    produce(Resume { kind, exptime, at, line_end: line.len(), next }, line, session, out, ctx)
}

/// Carry on with a paused multi-get; `input` starts with its request.
pub fn resume(r: Resume, session: &mut Session, input: &[u8], out: &mut Vec<u8>, ctx: &Ctx) -> Step {
    match input.get(..r.line_end) {
        Some(line) if r.next <= input.len() => produce(r, line, session, out, ctx),
        // The connection handed us other input than it paused on: a bug,
        // and no reply can be right any more.
        _ => Step::Close,
    }
}

/// Write the hits for the keys from `r.at` on, and `END`; or stop after the
/// hit that reaches `session.out_limit` when keys remain.
fn produce(mut r: Resume, line: &[u8], session: &mut Session, out: &mut Vec<u8>, ctx: &Ctx) -> Step {
    let done = Step::Consumed { len: r.next, kind: r.kind.timed_as() };
    // A refusal mid-reply (the role changed under a gat) throws away the
    // hits this step wrote; those of earlier steps may have been sent.
    let start = out.len();
    let opts = ReadOpts { value: true, note_access: true };
    let with_cas = r.kind.with_cas();
    // More than one key: their lookups' cache misses go out together first.
    if next_token(line, r.at).is_some_and(|(_, e)| next_token(line, e).is_some()) {
        let mut at = r.at;
        ctx.store.prefetch_gets(std::iter::from_fn(|| {
            let (s, e) = next_token(line, at)?;
            at = e;
            Some(&line[s..e])
        }));
    }
    while let Some((s, e)) = next_token(line, r.at) {
        let key = &line[s..e];
        r.at = e;
        let header =
            |m: &ItemMeta, out: &mut Vec<u8>| value_header(out, key, m, with_cas.then(|| ctx.shown_cas(m.cas)));
        let hit = if r.kind.touches() {
            ctx.stats.cmd_touch.incr();
            match ctx.store.get_and_touch(key, r.exptime, opts, out, header) {
                Ok(hit) => {
                    if hit.is_some() {
                        ctx.stats.touch_hits.incr();
                    } else {
                        ctx.stats.touch_misses.incr();
                    }
                    hit
                }
                Err(StoreError::ReadOnly) => {
                    out.truncate(start);
                    reply_read_only(out, false, ctx);
                    return done;
                }
                Err(e @ (StoreError::Fenced | StoreError::NotReplicated)) => {
                    out.truncate(start);
                    super::reply_role_error(out, false, e, ctx);
                    return done;
                }
                // The key was checked above and a touch never grows an item.
                Err(_) => {
                    out.truncate(start);
                    reply_error(out, false, BAD_FORMAT, ctx);
                    return done;
                }
            }
        } else {
            ctx.stats.cmd_get.incr();
            let hit = ctx.store.get(key, opts, out, header);
            if hit.is_some() {
                ctx.stats.get_hits.incr();
            } else {
                ctx.stats.get_misses.incr();
            }
            hit
        };
        ctx.rt.detail.get(key, ctx.rt.settings.detail_delimiter, hit.is_some());
        if ctx.rt.watch.wants(crate::stats::watch::FETCHERS) {
            ctx.rt.watch.item_get(key, hit.is_some(), hit.as_ref().map_or(0, |m| m.value_len as usize), session.cfd);
        }
        if hit.is_some() {
            out.extend_from_slice(b"\r\n");
            if out.len() >= session.out_limit && next_token(line, r.at).is_some() {
                session.resume = Some(r);
                return Step::Paused;
            }
        }
    }
    reply(out, false, b"END");
    done
}
