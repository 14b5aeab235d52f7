//! memcached's meta protocol: mn, mg, ms, md, ma, me (issue 3 fills this in).

use super::{Ctx, Session, Step};

/// Handle one meta command whose line is `input[..line_end]` (without the
/// line terminator) and whose whole line, terminator included, is
/// `input[..next]`. Data blocks (ms) follow at `input[next..]`.
pub fn step(_session: &mut Session, input: &[u8], line_end: usize, next: usize, out: &mut Vec<u8>, _ctx: &Ctx) -> Step {
    let _ = (input, line_end);
    out.extend_from_slice(b"CLIENT_ERROR meta commands not yet supported\r\n");
    Step::Consumed(next)
}
