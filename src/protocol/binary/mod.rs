//! memcached's binary protocol: framing and validation here, one file per
//! group of commands (`get.rs`, `store.rs`, `delete.rs`, `arith.rs`,
//! `touch.rs`, `misc.rs`). Every command is one call into the store.
//!
//! Framing follows memcached 1.6 (proto_bin.c): wait for header, extras and
//! key; check the lengths; then either read the value (storage commands) or
//! swallow what the body still holds. Bad magic closes the connection; a
//! body shorter than extras + key, an over-long key, or lengths an opcode
//! does not allow answer an error and close, as memcached does. Unknown
//! opcodes (SASL included: we have none) answer "Unknown command" and the
//! connection carries on.

mod arith;
mod delete;
mod get;
pub mod header;
mod misc;
pub mod opcode;
pub mod status;
mod store;
mod touch;

use super::{Ctx, Kind, Session, Step};
use crate::log::record::MAX_KEY_LEN;
use crate::store::StoreError;
use header::{write_response_header, RequestHeader};

pub use header::REQUEST_MAGIC;

/// One request, its parts split out.
pub(crate) struct Req<'a> {
    pub h: RequestHeader,
    /// The loud opcode (quiet ones mapped to theirs).
    pub op: u8,
    pub quiet: bool,
    pub extras: &'a [u8],
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// The connection's descriptor, for `watch` lines (-1: none, RDMA).
    pub cfd: i32,
}

impl Req<'_> {
    /// A reply packet under the request's own opcode and opaque.
    pub fn reply(&self, out: &mut Vec<u8>, status: u16, cas: u64, extras: &[u8], key: &[u8], value: &[u8]) {
        let body = extras.len() + key.len() + value.len();
        write_response_header(
            out,
            self.h.opcode,
            status,
            extras.len() as u8,
            key.len() as u16,
            body as u32,
            self.h.opaque,
            cas,
        );
        out.extend_from_slice(extras);
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    }

    /// An error: always sent, quiet or not, with memcached's message.
    pub fn error(&self, out: &mut Vec<u8>, status: u16) {
        self.reply(out, status, 0, &[], &[], status::message(status).as_bytes());
    }

    /// Success without a body; quiet commands stay silent.
    pub fn ok(&self, out: &mut Vec<u8>, cas: u64) {
        if !self.quiet {
            self.reply(out, status::SUCCESS, cas, &[], &[], &[]);
        }
    }

    /// The reply for a store refusal that is not a per-key outcome.
    pub fn store_error(&self, out: &mut Vec<u8>, e: StoreError, ctx: &Ctx) {
        match e {
            StoreError::ReadOnly => {
                ctx.stats.readonly_refused.incr();
                self.error(out, status::NOT_SUPPORTED)
            }
            StoreError::TooLarge => self.error(out, status::E2BIG),
            // Keys may hold any byte; only an empty one is refused here.
            StoreError::BadKey => self.error(out, status::EINVAL),
            // A fenced primary refuses like a replica, saying why in the body.
            StoreError::Fenced => {
                ctx.stats.readonly_refused.incr();
                self.reply(out, status::NOT_SUPPORTED, 0, &[], &[], e.to_string().as_bytes())
            }
            StoreError::NotReplicated => self.reply(out, status::ETMPFAIL, 0, &[], &[], e.to_string().as_bytes()),
            // -M: memcached's words for a failed item allocation.
            StoreError::NoMemory => self.reply(out, status::ENOMEM, 0, &[], &[], b"Out of memory allocating item"),
        }
    }
}

/// The shape of request an opcode admits (memcached's dispatch_bin_command).
fn shape_ok(op: u8, h: &RequestHeader) -> bool {
    let (ext, key, body) = (h.extras_len as u32, h.key_len as u32, h.body_len);
    use opcode::*;
    match op {
        VERSION | NOOP | QUIT | SASL_LIST_MECHS => ext == 0 && key == 0 && body == 0,
        FLUSH => key == 0 && body == ext && (ext == 0 || ext == 4),
        SET | ADD | REPLACE => ext == 8 && key != 0 && body >= key + 8,
        GET | GETK => ext == 0 && body == key && key > 0,
        DELETE => key > 0 && ext == 0 && body == key,
        INCREMENT | DECREMENT => key > 0 && ext == 20 && body == key + ext,
        APPEND | PREPEND => key > 0 && ext == 0,
        STAT => ext == 0,
        SASL_AUTH | SASL_STEP => ext == 0 && key != 0,
        TOUCH | GAT | GATK => ext == 4 && key != 0,
        // memcached 1.4's rule; 1.6 dropped the opcode (see misc.rs).
        VERBOSITY => ext == 4 && key == 0 && body == 4,
        _ => true,
    }
}

fn is_storage(op: u8) -> bool {
    use opcode::*;
    matches!(op, SET | ADD | REPLACE | APPEND | PREPEND)
}

/// Handle at most one binary request from the front of `input`.
pub fn step(session: &mut Session, input: &[u8], out: &mut Vec<u8>, ctx: &Ctx) -> Step {
    let Some(h) = RequestHeader::parse(input) else { return Step::NeedMore };
    if h.magic != REQUEST_MAGIC {
        // memcached closes without a word: the stream cannot be re-synced.
        ctx.stats.protocol_errors.incr();
        return Step::Close;
    }
    let head = h.head_len();
    if input.len() < head {
        return Step::NeedMore;
    }
    let (op, quiet) = opcode::base(h.opcode);
    let fail = |out: &mut Vec<u8>, status: u16| {
        ctx.stats.protocol_errors.incr();
        let req = Req { h, op, quiet, extras: &[], key: &[], value: &[], cfd: session.cfd };
        req.error(out, status);
        Step::Close
    };
    let Some(value_len) = h.value_len() else {
        // Extras + key longer than the body: memcached answers "Unknown
        // command" and closes, the framing being untrustworthy.
        return fail(out, status::UNKNOWN_COMMAND);
    };
    if h.key_len as usize > MAX_KEY_LEN || !shape_ok(op, &h) {
        return fail(out, status::EINVAL);
    }
    let extras = &input[header::HEADER_LEN..header::HEADER_LEN + h.extras_len as usize];
    let key = &input[header::HEADER_LEN + h.extras_len as usize..head];
    let mut req = Req { h, op, quiet, extras, key, value: &[], cfd: session.cfd };

    if is_storage(op) {
        if value_len > ctx.store.max_item_size() {
            // Refuse before buffering it: answer E2BIG and swallow the value.
            store::too_large(&req, out, ctx);
            session.swallow = value_len;
            return Step::Consumed { len: head, kind: Kind::Set };
        }
        let total = head + value_len;
        if input.len() < total {
            return Step::NeedMore;
        }
        req.value = &input[head..total];
        store::handle(&req, out, ctx);
        return Step::Consumed { len: total, kind: Kind::Set };
    }

    // Everything else carries no value; whatever the body still holds
    // (unknown opcodes, stat/touch with trailing bytes) is swallowed so the
    // next header is found where the client put it.
    session.swallow = value_len;
    use opcode::*;
    let kind = match op {
        GET | GETK => {
            get::handle(&req, out, ctx);
            Kind::Get
        }
        // Get-and-touch is timed as a touch.
        TOUCH | GAT | GATK => {
            touch::handle(&req, out, ctx);
            Kind::Touch
        }
        DELETE => {
            delete::handle(&req, out, ctx);
            Kind::Delete
        }
        INCREMENT | DECREMENT => {
            arith::handle(&req, out, ctx);
            Kind::IncrDecr
        }
        NOOP => {
            misc::noop(&req, out);
            Kind::Other
        }
        VERSION => {
            misc::version(&req, out);
            Kind::Other
        }
        FLUSH => {
            misc::flush(&req, session.admin, out, ctx);
            Kind::Other
        }
        VERBOSITY => {
            misc::verbosity(&req, out, ctx);
            Kind::Other
        }
        STAT => {
            misc::stat(&req, out, ctx);
            Kind::Other
        }
        QUIT => {
            if !quiet {
                req.ok(out, 0);
            }
            session.swallow = 0;
            return Step::Close;
        }
        // No SASL here: memcached built without it answers exactly this.
        _ => {
            req.error(out, status::UNKNOWN_COMMAND);
            Kind::Other
        }
    };
    Step::Consumed { len: head, kind }
}
