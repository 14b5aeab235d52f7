//! The wire protocols: text, binary and meta. Each parses requests and
//! encodes replies; none stores anything. Every operation is one call into
//! `crate::store::Store`, shared by all three.
//!
//! A connection's protocol is chosen from its first byte, as memcached does:
//! 0x80 is the binary request magic, anything else is text (meta commands are
//! text commands whose name starts with `m`).

pub mod admin;
mod ascii_auth;
pub mod binary;
pub mod held;
pub mod meta;
pub mod text;

#[cfg(test)]
mod admin_tests;
#[cfg(test)]
mod kind_tests;

pub use crate::latency::Kind;
use crate::runtime::{BindingProtocol, Runtime};
use crate::stats::WorkerStats;
use crate::store::Store;

/// What a request handler needs besides its bytes.
pub struct Ctx<'a> {
    pub store: &'a Store,
    /// This worker's counters (it is their only writer).
    pub stats: &'a WorkerStats,
    /// The process: settings, every worker's stats, role, verbosity.
    pub rt: &'a Runtime,
}

impl Ctx<'_> {
    /// The CAS a client is shown: 0 under `-C` (memcached's items then
    /// carry none).
    pub fn shown_cas(&self, cas: u64) -> u64 {
        if self.rt.settings.cas_enabled {
            cas
        } else {
            0
        }
    }

    /// The CAS a request compares with: under `-C` a compare never matches
    /// (EXISTS, or NOT_FOUND for a missing key), as memcached's; 0 stays
    /// "unconditional".
    pub fn compared_cas(&self, cas: u64) -> u64 {
        if self.rt.settings.cas_enabled || cas == 0 {
            cas
        } else {
            u64::MAX
        }
    }
}

/// `watch fetchers`: memcached logs the lookup a keyed command makes
/// (delete, touch, incr/decr, md, ma) as an `item_get`; peek at the item
/// for it, only while someone watches.
pub(crate) fn watch_lookup(key: &[u8], cfd: i32, ctx: &Ctx) {
    if ctx.rt.watch.wants(crate::stats::watch::FETCHERS) {
        let peek = crate::store::ReadOpts { value: false, note_access: false };
        let found = ctx.store.get(key, peek, &mut Vec::new(), |_, _| {});
        ctx.rt.watch.item_get(key, found.is_some(), found.map_or(0, |m| m.value_len as usize), cfd);
    }
}

/// The result of one attempt to handle the front of a connection's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// One request was handled (its reply, if any, appended to the output):
    /// `len` input bytes are done with, and `kind` is the command that ran
    /// (the latency histogram its service time goes to).
    Consumed { len: usize, kind: Kind },
    /// Input bytes discarded unparsed (the value of a request already
    /// refused): not a request, so not timed.
    Discarded(usize),
    /// The input holds no complete request yet: read more.
    NeedMore,
    /// Flush what was written, then close (quit, or input beyond repair).
    Close,
    /// The request at the front wrote part of its reply and stopped at
    /// `Session::out_limit` (a multi-get naming many large hits): nothing is
    /// consumed; call again with the same input once the output has drained,
    /// and it carries on from where it stopped.
    Paused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Text,
    Binary,
}

/// Per-connection protocol state.
#[derive(Debug)]
pub struct Session {
    /// Decided by the first byte the client sends.
    pub protocol: Option<Protocol>,
    /// Input bytes still to discard (a text value that was refused before it
    /// was read, e.g. over `-I`: memcached swallows it rather than parse it).
    pub swallow: usize,
    /// An admin session (the `--admin-socket`): admin commands that change
    /// the role or the data (`replica ...`) run only here; `shutdown` and
    /// `flush_all` run here whatever `-A` and `-F` say. Data-port sessions
    /// (TCP, RDMA) are never admin.
    pub admin: bool,
    /// Set by the connection before each step: the output length past which
    /// a reply that can stop part-way (a text multi-get, between hits) stops
    /// with `Step::Paused`. At least one hit is written per step, so a reply
    /// always progresses. `usize::MAX` (the default): never stop.
    pub out_limit: usize,
    /// Where a paused multi-get carries on.
    pub resume: Option<text::Resume>,
    /// Logged in (`-Y`: see ascii_auth.rs); unused without `-Y`.
    pub authenticated: bool,
    /// Set by `watch`: the session only streams events from then on.
    pub watch: Option<std::sync::Arc<crate::stats::watch::Watcher>>,
    /// The connection's descriptor, as memcached's event lines name it
    /// (`cfd=`); -1 where there is none.
    pub cfd: i32,
}

impl Default for Session {
    fn default() -> Session {
        Session {
            protocol: None,
            swallow: 0,
            admin: false,
            out_limit: usize::MAX,
            resume: None,
            authenticated: false,
            watch: None,
            cfd: -1,
        }
    }
}

impl Session {
    /// A session of the admin endpoint.
    pub fn admin() -> Session {
        Session { admin: true, ..Session::default() }
    }
}

/// Handle at most one request from the front of `input`.
pub fn step(session: &mut Session, input: &[u8], out: &mut Vec<u8>, ctx: &Ctx) -> Step {
    if session.swallow > 0 {
        if input.is_empty() {
            return Step::NeedMore;
        }
        let n = session.swallow.min(input.len());
        session.swallow -= n;
        return Step::Discarded(n);
    }
    let Some(&first) = input.first() else { return Step::NeedMore };
    // `-B`: one protocol for every connection, or chosen by the first byte.
    let protocol = *session.protocol.get_or_insert(match ctx.rt.settings.protocol {
        BindingProtocol::Ascii => Protocol::Text,
        BindingProtocol::Binary => Protocol::Binary,
        BindingProtocol::Auto if first == binary::REQUEST_MAGIC => Protocol::Binary,
        BindingProtocol::Auto => Protocol::Text,
    });
    if let Some(auth) = &ctx.rt.settings.ascii_auth {
        // Text only: `-Y` implies `-B ascii`; a binary session here is an
        // RDMA client's, which its endpoint's token admitted.
        if !session.authenticated && !session.admin && protocol == Protocol::Text {
            return ascii_auth::step(session, input, out, auth);
        }
    }
    match protocol {
        Protocol::Text => text::step(session, input, out, ctx),
        Protocol::Binary => binary::step(session, input, out, ctx),
    }
}
