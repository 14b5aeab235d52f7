//! memcached's text protocol, as memcached 1.6 speaks it.
//!
//! This file finds the command line, applies memcached's rules for lines
//! without a newline, splits the line into tokens and dispatches on the
//! command name. Each command lives in the file named after it:
//!
//! | file          | commands                                       |
//! |---------------|------------------------------------------------|
//! | retrieval.rs  | get, gets, gat, gats (and the ancient bget)    |
//! | storage.rs    | set, add, replace, append, prepend, cas        |
//! | arith.rs      | incr, decr                                     |
//! | delete.rs     | delete                                         |
//! | touch.rs      | touch                                          |
//! | flush.rs      | flush_all                                      |
//! | stats.rs      | stats [group]                                  |
//! | misc.rs       | version, verbosity, quit, shutdown             |
//! | parse.rs      | tokens, memcached's number rules               |
//!
//! Meta commands (`mg`, `ms`, `md`, `ma`, `mn`, `me`) share the line format
//! and are handed to `super::meta`.
//!
//! Replies and error strings are byte for byte memcached's, and so are the
//! keys accepted: any bytes but the space that separates tokens, up to 250
//! (a NUL ends the line, as memcached's C string does). Deliberate
//! differences (each where memcached would let bad input change data):
//! - a storage command refused for its key (too long) swallows its data
//!   block when the length parsed, so the value cannot be run as a command
//!   (memcached parses it as the next command line);
//! - a multi-get line without a newline is buffered up to
//!   `MAX_MULTIGET_LINE` bytes, then the connection is closed (memcached has
//!   no limit).

mod arith;
mod crawler;
mod delete;
mod flush;
mod misc;
pub mod parse;
mod retrieval;

pub use retrieval::Resume;
mod stats;
mod storage;
mod touch;
mod tuning;

use super::{meta, Ctx, Kind, Session, Step};
use parse::Tokens;

pub use crate::runtime::VERSION;

/// memcached closes a connection whose buffered input has no newline after
/// this many bytes (unless it looks like a large multi-get).
pub const NO_NEWLINE_LIMIT: usize = 2048;
/// Our bound on a multi-get line still waiting for its newline, so that one
/// connection cannot grow our memory without bound (~30 000 maximal keys).
pub const MAX_MULTIGET_LINE: usize = 8 << 20;

pub const ERROR: &[u8] = b"ERROR";
pub const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format";
pub const BAD_EXPTIME: &[u8] = b"CLIENT_ERROR invalid exptime argument";
pub const READ_ONLY: &[u8] = b"SERVER_ERROR read-only replica";
pub const TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache";

/// memcached's `out_string`: one reply line, unless the command said noreply
/// (which silences errors too, as in memcached: the client is not reading).
pub(crate) fn reply(out: &mut Vec<u8>, noreply: bool, line: &[u8]) {
    if !noreply {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

/// A reply to input we could not accept; also counted.
pub(crate) fn reply_error(out: &mut Vec<u8>, noreply: bool, line: &[u8], ctx: &Ctx) {
    ctx.stats.protocol_errors.incr();
    reply(out, noreply, line);
}

/// A write refused because this primary was fenced by a newer epoch, or
/// stored but not confirmed by `--sync-replicas` in time: `SERVER_ERROR <why>`.
pub(crate) fn reply_role_error(out: &mut Vec<u8>, noreply: bool, e: crate::store::StoreError, ctx: &Ctx) {
    // A sync timeout is counted by the store (`sync_timeouts`); a refusal here.
    if e == crate::store::StoreError::Fenced {
        ctx.stats.readonly_refused.incr();
    }
    let line = format!("SERVER_ERROR {e}");
    reply(out, noreply, line.as_bytes());
}

/// A write refused because this process is a read-only replica.
pub(crate) fn reply_read_only(out: &mut Vec<u8>, noreply: bool, ctx: &Ctx) {
    ctx.stats.readonly_refused.incr();
    reply(out, noreply, READ_ONLY);
}

/// Handle at most one text command from the front of `input`.
pub fn step(session: &mut Session, input: &[u8], out: &mut Vec<u8>, ctx: &Ctx) -> Step {
    if let Some(r) = session.resume.take() {
        return retrieval::resume(r, session, input, out, ctx);
    }
    let Some(nl) = input.iter().position(|&b| b == b'\n') else {
        return no_newline_yet(input);
    };
    let next = nl + 1;
    // As memcached: a "\r" before the "\n" is dropped unless it is the
    // line's only byte ("\r\n" alone is then the one-byte command "\r").
    let line_end = if nl > 1 && input[nl - 1] == b'\r' { nl - 1 } else { nl };
    let line_end = parse::c_line_len(&input[..line_end]);
    let line = &input[..line_end];
    let tokens = Tokens::new(line);
    let cmd = tokens.get(0);
    if cmd.len() == 2 && cmd[0] == b'm' && b"gsdaen".contains(&cmd[1]) {
        return meta::step(session, input, line_end, next, out, ctx);
    }
    // Every command has a name of at least two bytes.
    if tokens.count() < 2 || cmd.len() < 2 {
        reply_error(out, false, ERROR, ctx);
        return Step::Consumed { len: next, kind: Kind::Other };
    }
    let kind = match cmd {
        b"get" | b"bget" => return retrieval::get(&tokens, retrieval::Kind::Get, line, next, session, out, ctx),
        b"gets" => return retrieval::get(&tokens, retrieval::Kind::Gets, line, next, session, out, ctx),
        b"gat" => return retrieval::get(&tokens, retrieval::Kind::Gat, line, next, session, out, ctx),
        b"gats" => return retrieval::get(&tokens, retrieval::Kind::Gats, line, next, session, out, ctx),
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            return storage::step(&tokens, session, input, next, out, ctx)
        }
        b"incr" | b"decr" => {
            arith::step(&tokens, cmd == b"incr", session.cfd, out, ctx);
            Kind::IncrDecr
        }
        b"delete" => {
            delete::step(&tokens, session.cfd, out, ctx);
            Kind::Delete
        }
        b"touch" => {
            touch::step(&tokens, session.cfd, out, ctx);
            Kind::Touch
        }
        b"flush_all" => {
            flush::step(&tokens, session, out, ctx);
            Kind::Other
        }
        b"stats" => {
            stats::step(&tokens, out, ctx);
            Kind::Other
        }
        b"cache_memlimit" => {
            tuning::cache_memlimit(&tokens, out, ctx);
            Kind::Other
        }
        b"slabs" => {
            tuning::slabs(&tokens, out, ctx);
            Kind::Other
        }
        b"lru" => {
            tuning::lru(&tokens, out, ctx);
            Kind::Other
        }
        b"lru_crawler" => {
            crawler::step(&tokens, out, ctx);
            Kind::Other
        }
        b"version" => {
            misc::version(out);
            Kind::Other
        }
        b"verbosity" => {
            misc::verbosity(&tokens, out, ctx);
            Kind::Other
        }
        b"watch" => {
            misc::watch(&tokens, session, out, ctx);
            Kind::Other
        }
        b"quit" => return Step::Close,
        // Ours, not memcached's: replication admin (`replica promote`, `replica follow URL`).
        b"replica" => {
            let args: Vec<&[u8]> = (1..tokens.count() - 1).map(|i| tokens.get(i)).collect();
            out.extend_from_slice(super::admin::replica_command(&args, session, ctx).as_bytes());
            Kind::Other
        }
        b"shutdown" => {
            if misc::shutdown(&tokens, session, out, ctx) {
                return Step::Close;
            }
            Kind::Other
        }
        // memcached hangs up on what looks like an HTTP request.
        _ if tokens.last().starts_with(b"HTTP/") => return Step::Close,
        _ => {
            reply_error(out, false, ERROR, ctx);
            Kind::Other
        }
    };
    Step::Consumed { len: next, kind }
}

/// No newline in the buffered input yet: wait, or give up as memcached does.
fn no_newline_yet(input: &[u8]) -> Step {
    if input.len() <= NO_NEWLINE_LIMIT {
        return Step::NeedMore;
    }
    // Beyond 2 KiB without a newline, only a large multi-get is plausible
    // (memcached's rule: at most 100 leading spaces, then "get " or "gets ").
    let spaces = input.iter().take_while(|&&b| b == b' ').count();
    let rest = &input[spaces..];
    let multiget = spaces <= 100 && (rest.starts_with(b"get ") || rest.starts_with(b"gets "));
    if multiget && input.len() <= MAX_MULTIGET_LINE {
        Step::NeedMore
    } else {
        Step::Close
    }
}

#[cfg(test)]
mod retrieval_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod line_tests {
    use super::*;

    #[test]
    fn endless_lines_close_unless_a_multiget() {
        assert_eq!(no_newline_yet(&[b'x'; 2048]), Step::NeedMore);
        assert_eq!(no_newline_yet(&[b'x'; 2049]), Step::Close);
        let mut get = b"get ".to_vec();
        get.resize(5000, b'k');
        assert_eq!(no_newline_yet(&get), Step::NeedMore);
        let mut gets = vec![b' '; 100];
        gets.extend_from_slice(b"gets ");
        gets.resize(5000, b'k');
        assert_eq!(no_newline_yet(&gets), Step::NeedMore);
        let mut spaced = vec![b' '; 101];
        spaced.extend_from_slice(b"get ");
        spaced.resize(5000, b'k');
        assert_eq!(no_newline_yet(&spaced), Step::Close);
        let mut gat = b"gat 0 ".to_vec();
        gat.resize(5000, b'k');
        assert_eq!(no_newline_yet(&gat), Step::Close, "only get/gets may be long");
        get.resize(MAX_MULTIGET_LINE + 1, b'k');
        assert_eq!(no_newline_yet(&get), Step::Close);
    }
}
