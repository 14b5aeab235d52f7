//! noop, version, flush, verbosity, stat (quit is framing: see mod.rs).

use super::{status, Req};
use crate::protocol::Ctx;

/// Always answered: clients send it to flush the replies of quiet commands
/// (ours are written in order anyway).
pub(crate) fn noop(req: &Req, out: &mut Vec<u8>) {
    req.reply(out, status::SUCCESS, 0, &[], &[], &[]);
}

pub(crate) fn version(req: &Req, out: &mut Vec<u8>) {
    req.reply(out, status::SUCCESS, 0, &[], &[], crate::runtime::VERSION.as_bytes());
}

/// flush with an optional 4-byte delay. Under `-F` (outside an admin
/// session), memcached's answer: status AUTH_ERROR with "Auth failure."
/// (also to the quiet variant), not counted.
pub(crate) fn flush(req: &Req, admin: bool, out: &mut Vec<u8>, ctx: &Ctx) {
    if !(ctx.rt.settings.flush_enabled || admin) {
        req.error(out, status::AUTH_ERROR);
        return;
    }
    let delay = match req.extras {
        [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]) as i64,
        _ => 0,
    };
    ctx.stats.cmd_flush.incr();
    match ctx.store.flush_all(delay) {
        Ok(()) => req.ok(out, 0),
        Err(e) => req.store_error(out, e, ctx),
    }
}

/// memcached 1.6 no longer knows this opcode ("Unknown command"); 1.4
/// answered it and libmemcached's memcached_verbosity() still sends it, so
/// we accept it as 1.4 did: set the level, answer success.
pub(crate) fn verbosity(req: &Req, out: &mut Vec<u8>, ctx: &Ctx) {
    let x = req.extras;
    let level = u32::from_be_bytes([x[0], x[1], x[2], x[3]]);
    ctx.rt.set_verbosity(level);
    req.ok(out, 0);
}

/// stat [group]: one packet per line, then an empty packet.
pub(crate) fn stat(req: &Req, out: &mut Vec<u8>, ctx: &Ctx) {
    let group = String::from_utf8_lossy(req.key);
    let lines = match group.as_ref() {
        // Accepted, as memcached does; there is nothing to reset or detail here.
        "reset" | "detail on" | "detail off" => Some(Vec::new()),
        g if g.starts_with("detail") => None,
        g => crate::stats::report(g, ctx.rt, ctx.store),
    };
    let Some(lines) = lines else {
        req.error(out, status::KEY_ENOENT);
        return;
    };
    for (k, v) in &lines {
        req.reply(out, status::SUCCESS, 0, &[], k.as_bytes(), v.as_bytes());
    }
    req.reply(out, status::SUCCESS, 0, &[], &[], &[]);
}
