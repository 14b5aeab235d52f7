//! stats: `stats [group]`. The report itself (shared with the binary
//! protocol's stat command) is `crate::stats::report`; this file handles the
//! text-only subcommands and the `STAT <name> <value>` / `END` framing.

use super::parse::Tokens;
use super::{reply, reply_error, Ctx, ERROR};

pub fn step(t: &Tokens, out: &mut Vec<u8>, ctx: &Ctx) {
    let group = t.get(1);
    match group {
        // memcached answers these with the status line alone (no END).
        b"sizes_enable" | b"sizes_disable" => {
            let on = group == b"sizes_enable";
            ctx.rt.sizes_enabled.store(on, std::sync::atomic::Ordering::Relaxed);
            let status: &[u8] = if on { b"STAT sizes_status enabled" } else { b"STAT sizes_status disabled" };
            return reply(out, false, status);
        }
        b"reset" => {
            crate::stats::reset(ctx.rt);
            return reply(out, false, b"RESET");
        }
        b"detail" => {
            // memcached's usage message for anything else.
            return match t.get(2) {
                b"on" | b"off" => {
                    ctx.rt.detail.set_enabled(t.get(2) == b"on");
                    reply(out, false, b"OK")
                }
                b"dump" => out.extend_from_slice(&ctx.rt.detail.dump()),
                _ => reply(out, false, b"CLIENT_ERROR usage: stats detail on|off|dump"),
            };
        }
        b"cachedump" => return super::crawler::cachedump(t, out, ctx),
        _ => {}
    }
    let report = std::str::from_utf8(group).ok().and_then(|g| crate::stats::report(g, ctx.rt, ctx.store));
    let Some(lines) = report else {
        return reply_error(out, false, ERROR, ctx);
    };
    for (name, value) in lines {
        out.extend_from_slice(b"STAT ");
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    reply(out, false, b"END");
}
