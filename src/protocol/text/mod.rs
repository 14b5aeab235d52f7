//! memcached's text protocol (minimal placeholder: the full command set is
//! being written against this interface).

use super::{meta, Ctx, Session, Step};
use crate::store::{ReadOpts, SetArgs, SetMode, SetOutcome};

pub const VERSION: &str = concat!("1.6.21-logmemcached-", env!("CARGO_PKG_VERSION"));

pub fn step(session: &mut Session, input: &[u8], out: &mut Vec<u8>, ctx: &Ctx) -> Step {
    let Some(nl) = input.iter().position(|&b| b == b'\n') else {
        return if input.len() > 2048 { Step::Close } else { Step::NeedMore };
    };
    let next = nl + 1;
    let line_end = if nl > 0 && input[nl - 1] == b'\r' { nl - 1 } else { nl };
    let line = &input[..line_end];
    if line.len() >= 2 && line[0] == b'm' && b"gsdaen".contains(&line[1]) && (line.len() == 2 || line[2] == b' ') {
        return meta::step(session, input, line_end, next, out, ctx);
    }
    let tokens: Vec<&[u8]> = line.split(|&b| b == b' ').filter(|t| !t.is_empty()).collect();
    match tokens.first().copied() {
        Some(b"version") => out.extend_from_slice(format!("VERSION {VERSION}\r\n").as_bytes()),
        Some(b"quit") => return Step::Close,
        Some(b"replica") => out.extend_from_slice(super::admin::replica_command(&tokens[1..], ctx).as_bytes()),
        Some(b"stats") => {
            let group = tokens.get(1).and_then(|g| std::str::from_utf8(g).ok()).unwrap_or("");
            match crate::stats::report(group, ctx) {
                Some(lines) => {
                    for (k, v) in lines {
                        out.extend_from_slice(format!("STAT {k} {v}\r\n").as_bytes());
                    }
                    out.extend_from_slice(b"END\r\n");
                }
                None => out.extend_from_slice(b"ERROR\r\n"),
            }
        }
        Some(b"get") => {
            for key in &tokens[1..] {
                let hit = ctx.store.get(key, ReadOpts { value: true, note_access: true }, out, |m, out| {
                    out.extend_from_slice(b"VALUE ");
                    out.extend_from_slice(key);
                    out.extend_from_slice(format!(" {} {}\r\n", m.flags, m.value_len).as_bytes());
                });
                if hit.is_some() {
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(b"END\r\n");
        }
        Some(b"set") if tokens.len() >= 5 => {
            let len: usize = std::str::from_utf8(tokens[4]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            if input.len() < next + len + 2 {
                return Step::NeedMore;
            }
            let flags = std::str::from_utf8(tokens[2]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            let exptime = std::str::from_utf8(tokens[3]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            let value = &input[next..next + len];
            match ctx.store.set(&SetArgs::new(SetMode::Set, tokens[1], value, flags, exptime)) {
                Ok(SetOutcome::Stored { .. }) => out.extend_from_slice(b"STORED\r\n"),
                _ => out.extend_from_slice(b"NOT_STORED\r\n"),
            }
            return Step::Consumed(next + len + 2);
        }
        _ => out.extend_from_slice(b"ERROR\r\n"),
    }
    Step::Consumed(next)
}
