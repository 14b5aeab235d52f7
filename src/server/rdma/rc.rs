//! The RC path of a worker: the RC connections the side channel set up on
//! this worker's CQs, each running one request message at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::run_frames;
use crate::protocol::binary::status::E2BIG;
use crate::protocol::Ctx;
use crate::rdma::{RcMessenger, Wc};
use crate::rdma_wire::frames::{split_frames, write_status_each};

/// RC connections per worker. Each has one receive and at most one send in
/// flight, and the worker's CQs are sized for this many: past it a client is
/// refused (capacity 0 on the side channel) rather than risk a CQ overrun.
pub(super) const MAX_RC_PER_WORKER: usize = 256;

/// An RC connection owned by a worker.
pub(super) struct RcConn {
    pub(super) qp: RcMessenger,
    /// Set by the side channel when the client hung up.
    pub(super) dead: Arc<AtomicBool>,
}

/// What the side-channel threads hand a worker.
#[derive(Default)]
pub(super) struct Inbox {
    new: Mutex<Vec<RcConn>>,
    /// Bumped on every change (new connection, one closed) so the worker
    /// looks at the inbox only when something happened.
    generation: AtomicU64,
    /// RC connections open on this worker (side channel's count).
    pub(super) open: AtomicUsize,
}

impl Inbox {
    /// Side channel: hand a connected QP to its worker.
    pub(super) fn hand_over(&self, conn: RcConn) {
        lock(&self.new).push(conn);
        self.changed();
    }

    /// Side channel: something the worker must look at (a `dead` flag set).
    pub(super) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A worker's RC connections, by QPN.
#[derive(Default)]
pub(super) struct RcPath {
    inbox: Arc<Inbox>,
    seen_generation: u64,
    conns: HashMap<u32, RcConn>,
}

impl RcPath {
    pub(super) fn inbox(&self) -> Arc<Inbox> {
        self.inbox.clone()
    }

    pub(super) fn take_inbox_if_changed(&mut self) {
        if self.inbox.generation.load(Ordering::Acquire) != self.seen_generation {
            self.take_inbox();
        }
    }

    fn take_inbox(&mut self) {
        self.seen_generation = self.inbox.generation.load(Ordering::Acquire);
        for c in lock(&self.inbox.new).drain(..) {
            self.conns.insert(c.qp.qpn(), c);
        }
        self.conns.retain(|_, c| !c.dead.load(Ordering::Acquire));
    }

    /// One receive completion of an RC QP (any QPN but the UD QP's).
    pub(super) fn on_message(&mut self, wc: &Wc, ctx: &Ctx, input: &mut Vec<u8>, out: &mut Vec<u8>) {
        if !self.conns.contains_key(&wc.qp_num()) {
            self.take_inbox();
        }
        let Some(c) = self.conns.get(&wc.qp_num()) else { return };
        if !wc.is_ok() {
            // Flushed or failed: the client went away; its side channel says so too.
            return;
        }
        ctx.stats.rdma_requests.incr();
        // Re-posts before the request runs, so the client's next one always
        // finds a buffer; a failed repost shows as that request's timeout.
        let _ = c.qp.receive(wc, input);
        out.clear();
        let Some(frames) = split_frames(input) else {
            ctx.stats.rdma_drops.incr();
            return;
        };
        run_frames(input, &frames, out, ctx, None);
        if out.len() > c.qp.capacity() {
            // Only a multi-get of several huge values gets here: say so per request.
            out.clear();
            write_status_each(input, &frames, E2BIG, out);
        }
        match c.qp.send(1, out) {
            Ok(()) => ctx.stats.rdma_replies.incr(),
            Err(_) => ctx.stats.rdma_drops.incr(),
        }
    }
}
