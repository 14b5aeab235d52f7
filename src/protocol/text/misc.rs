//! version, verbosity, shutdown (quit is a plain close, in mod.rs).

use super::parse::{safe_strtoul, Tokens};
use super::{reply, reply_error, Ctx, Session, BAD_FORMAT, ERROR, VERSION};

/// memcached's highest verbosity level; larger requests are clamped to it.
const MAX_VERBOSITY_LEVEL: u32 = 2;

/// `version`: clients sniff the 1.6 prefix to pick features.
pub fn version(out: &mut Vec<u8>) {
    out.extend_from_slice(b"VERSION ");
    out.extend_from_slice(VERSION.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `verbosity <level> [noreply]`.
pub fn verbosity(t: &Tokens, out: &mut Vec<u8>, ctx: &Ctx) {
    if t.count() != 3 && t.count() != 4 {
        return reply_error(out, false, ERROR, ctx);
    }
    let noreply = t.noreply();
    let Some(level) = safe_strtoul(t.get(1)) else {
        return reply_error(out, noreply, BAD_FORMAT, ctx);
    };
    ctx.rt.set_verbosity(level.min(MAX_VERBOSITY_LEVEL));
    reply(out, noreply, b"OK");
}

/// `shutdown [graceful]`: memcached refuses it unless started with `-A`; so
/// do we on the data port (a cache is stopped by its supervisor, with
/// SIGTERM). Allowed (with `-A`, or in an admin session), it starts the same
/// orderly shutdown as SIGTERM (`graceful` too: there is no restart to keep
/// state for) and, as memcached, closes the connection without a reply:
/// returns true then. Any other argument: memcached's `CLIENT_ERROR invalid
/// shutdown mode`.
pub fn shutdown(t: &Tokens, session: &Session, out: &mut Vec<u8>, ctx: &Ctx) -> bool {
    if !(ctx.rt.settings.enable_shutdown || session.admin) {
        reply(out, false, b"ERROR: shutdown not enabled");
        return false;
    }
    match t.count() {
        2 => {}
        3 if t.get(1) == b"graceful" => {}
        _ => {
            reply(out, false, b"CLIENT_ERROR invalid shutdown mode");
            return false;
        }
    }
    if !ctx.rt.request_shutdown() {
        // Nothing installed to hear it (a runtime without a server).
        reply(out, false, b"SERVER_ERROR shutdown not available");
        return false;
    }
    true
}

/// `watch [fetchers] [mutations] [evictions] [connevents]`: from now on the
/// session streams event lines (the connection drains them; see
/// `crate::stats::watch`). Refused under `-W`, and on the admin socket,
/// whose sessions no worker polls.
pub fn watch(t: &Tokens, session: &mut Session, out: &mut Vec<u8>, ctx: &Ctx) {
    if ctx.rt.settings.disable_watch || session.admin {
        return reply(out, false, b"CLIENT_ERROR watch commands not allowed");
    }
    let Some(classes) = crate::stats::watch::parse_classes((1..t.count() - 1).map(|i| t.get(i))) else {
        return reply_error(out, false, ERROR, ctx);
    };
    let queue = crate::stats::watch::queue_bytes(ctx.rt.settings.watcher_logbuf_size);
    session.watch = Some(ctx.rt.watch.add(classes, queue));
    reply(out, false, b"OK");
}
