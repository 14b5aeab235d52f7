//! memcached's binary protocol (issue 3 fills this in).

use super::{Ctx, Session, Step};

/// First byte of every binary request.
pub const REQUEST_MAGIC: u8 = 0x80;

/// Handle at most one binary request from the front of `input`.
pub fn step(_session: &mut Session, _input: &[u8], _out: &mut Vec<u8>, _ctx: &Ctx) -> Step {
    // Not yet implemented: close rather than misinterpret binary frames.
    Step::Close
}
