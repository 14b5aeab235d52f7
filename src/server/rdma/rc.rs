//! The RC path of a worker: the RC connections the side channel set up on
//! this worker's CQs, each running one request message at a time, and the
//! budget that bounds the memory their buffers pin.
//!
//! # RC buffer budget
//!
//! Each connection pins two registered buffers of [`rc_capacity`] bytes (a
//! request and a reply of the largest item, with its header, extras and key).
//! The side channel admits a connection only while every open connection's
//! buffers together stay within `--rdma-rc-memory` (default
//! [`default_rc_memory`]) and its worker has fewer than
//! [`MAX_RC_PER_WORKER`]; otherwise the client gets the protocol's refusal
//! (capacity 0) and the refusal is counted (`rdma_rc_refused`). The
//! reservation lives in the connection ([`Admission`]), so it is given back
//! exactly when the worker drops the QP and its buffers; the side channel
//! wakes the worker when a client hangs up, so that happens at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{run_frames, Waker};
use crate::protocol::binary::status::E2BIG;
use crate::protocol::Ctx;
use crate::rdma::{RcMessenger, Wc};
use crate::rdma_wire::frames::{split_frames, write_status_each};
use crate::runtime::RdmaControl;

/// RC connections per worker. Each has one receive and at most one send in
/// flight, and the worker's CQs are sized for this many: past it a client is
/// refused (capacity 0 on the side channel) rather than risk a CQ overrun.
pub(super) const MAX_RC_PER_WORKER: usize = 256;

/// Room beyond `-I` in an RC message: the binary header (24 bytes), extras
/// (at most 255), the key (at most 250), and small frames sent beside it (a
/// trailing noop, a few quiet replies).
const RC_SLACK: usize = 4 << 10;
/// Smallest RC message buffer, so a multi-get of many small values sent over
/// RC still fits with a small `-I`.
const RC_MIN_CAPACITY: usize = 64 << 10;
/// The default budget admits at least this many connections.
const MIN_DEFAULT_CONNECTIONS: usize = 4;

/// The largest RC message either way for a server with `-I max_item_size`:
/// what the side channel announces and each buffer's size.
pub fn rc_capacity(max_item_size: usize) -> usize {
    max_item_size.saturating_add(RC_SLACK).max(RC_MIN_CAPACITY)
}

/// Memory one RC connection pins: its receive and its send buffer.
pub fn rc_connection_bytes(max_item_size: usize) -> usize {
    rc_capacity(max_item_size).saturating_mul(2)
}

/// `--rdma-rc-memory`'s default: a quarter of the log's size (`-m`), and at
/// least enough for [`MIN_DEFAULT_CONNECTIONS`] connections of `-I`.
pub fn default_rc_memory(memory_bytes: usize, max_item_size: usize) -> usize {
    (memory_bytes / 4).max(rc_connection_bytes(max_item_size).saturating_mul(MIN_DEFAULT_CONNECTIONS))
}

/// The RC buffer budget shared by the side channel's threads.
pub(super) struct RcBudget {
    limit: usize,
    capacity: usize,
    control: Arc<RdmaControl>,
}

/// Why an RC connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    WorkerFull,
    OverBudget { limit: usize, pinned: usize },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::WorkerFull => write!(f, "{MAX_RC_PER_WORKER} RC connections already open on this worker"),
            Refusal::OverBudget { limit, pinned } => {
                write!(f, "RC buffers would pass --rdma-rc-memory ({pinned} of {limit} bytes pinned)")
            }
        }
    }
}

impl RcBudget {
    pub(super) fn new(limit: usize, max_item_size: usize, control: Arc<RdmaControl>) -> RcBudget {
        RcBudget { limit, capacity: rc_capacity(max_item_size), control }
    }

    /// Each buffer's size (the capacity announced to clients).
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    fn conn_bytes(&self) -> u64 {
        (self.capacity as u64).saturating_mul(2)
    }

    /// Reserve one connection on `inbox`'s worker, or say why not (counted
    /// in `rdma_rc_refused`).
    pub(super) fn admit(self: &Arc<Self>, inbox: &Arc<Inbox>) -> Result<Admission, Refusal> {
        let r = self.try_admit(inbox);
        if r.is_err() {
            self.control.rc_refused.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn try_admit(self: &Arc<Self>, inbox: &Arc<Inbox>) -> Result<Admission, Refusal> {
        if inbox.open.fetch_add(1, Ordering::AcqRel) >= MAX_RC_PER_WORKER {
            inbox.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::WorkerFull);
        }
        let need = self.conn_bytes();
        let limit = self.limit as u64;
        let pinned = &self.control.rc_pinned_bytes;
        if let Err(now) =
            pinned.fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| p.checked_add(need).filter(|&n| n <= limit))
        {
            inbox.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::OverBudget { limit: self.limit, pinned: now as usize });
        }
        self.control.rc_open.fetch_add(1, Ordering::Relaxed);
        Ok(Admission { budget: self.clone(), inbox: inbox.clone() })
    }
}

/// One admitted connection's share of the budget, given back when dropped
/// (with the connection, by its worker; or by the side channel when the
/// connection never got that far).
pub(super) struct Admission {
    budget: Arc<RcBudget>,
    inbox: Arc<Inbox>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.inbox.open.fetch_sub(1, Ordering::AcqRel);
        self.budget.control.rc_pinned_bytes.fetch_sub(self.budget.conn_bytes(), Ordering::AcqRel);
        self.budget.control.rc_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An RC connection owned by a worker.
pub(super) struct RcConn {
    pub(super) qp: RcMessenger,
    /// Set by the side channel when the client hung up.
    pub(super) dead: Arc<AtomicBool>,
    /// Its buffers' reservation; dropped after `qp` (field order), so the
    /// budget never shows memory free that is still registered.
    pub(super) _admission: Admission,
}

/// What the side-channel threads hand a worker.
pub(super) struct Inbox {
    new: Mutex<Vec<RcConn>>,
    /// Bumped on every change (new connection, one closed) so the worker
    /// looks at the inbox only when something happened.
    generation: AtomicU64,
    /// RC connections open or being set up on this worker.
    open: AtomicUsize,
    /// Wakes the worker out of a blocking wait.
    wake: Waker,
}

impl Inbox {
    /// Side channel: hand a connected QP to its worker.
    pub(super) fn hand_over(&self, conn: RcConn) {
        lock(&self.new).push(conn);
        self.changed();
    }

    /// Side channel: something the worker must look at (a `dead` flag set):
    /// wake it, so a closed connection's buffers go now, not at its next
    /// datagram.
    pub(super) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        (self.wake)();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A worker's RC connections, by QPN.
pub(super) struct RcPath {
    inbox: Arc<Inbox>,
    seen_generation: u64,
    conns: HashMap<u32, RcConn>,
}

impl RcPath {
    /// `wake` wakes this path's worker (see [`Inbox::changed`]).
    pub(super) fn new(wake: Waker) -> RcPath {
        let inbox =
            Inbox { new: Mutex::new(Vec::new()), generation: AtomicU64::new(0), open: AtomicUsize::new(0), wake };
        RcPath { inbox: Arc::new(inbox), seen_generation: 0, conns: HashMap::new() }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox() -> Arc<Inbox> {
        RcPath::new(Arc::new(|| {})).inbox()
    }

    #[test]
    fn buffers_are_sized_to_the_largest_item_and_the_default_budget_follows_m_and_i() {
        assert_eq!(rc_capacity(1 << 20), (1 << 20) + RC_SLACK);
        assert_eq!(rc_capacity(1024), RC_MIN_CAPACITY, "small -I: still room for a multi-get");
        assert_eq!(rc_connection_bytes(1 << 20), 2 * ((1 << 20) + RC_SLACK));
        // -m 64 -I 1m: a quarter of the log (16 MiB), 7 connections.
        assert_eq!(default_rc_memory(64 << 20, 1 << 20), 16 << 20);
        // -m 8: never fewer than 4 connections' worth.
        assert_eq!(default_rc_memory(8 << 20, 1 << 20), 4 * rc_connection_bytes(1 << 20));
    }

    #[test]
    fn connections_past_the_budget_are_refused_and_given_back_when_dropped() {
        let control = Arc::new(RdmaControl::default());
        let per = rc_connection_bytes(1 << 20);
        let budget = Arc::new(RcBudget::new(3 * per + per / 2, 1 << 20, control.clone()));
        let ib = inbox();
        let held: Vec<Admission> = (0..3).map(|_| budget.admit(&ib).expect("within the budget")).collect();
        assert_eq!(control.rc_pinned_bytes.load(Ordering::Relaxed), 3 * per as u64);
        assert_eq!(control.rc_open.load(Ordering::Relaxed), 3);
        let refused = budget.admit(&ib).err().expect("a fourth passes the budget");
        assert!(matches!(refused, Refusal::OverBudget { .. }), "{refused}");
        assert!(refused.to_string().contains("--rdma-rc-memory"), "{refused}");
        assert_eq!(control.rc_refused.load(Ordering::Relaxed), 1);
        assert_eq!(ib.open.load(Ordering::Relaxed), 3, "a refusal holds nothing");
        drop(held);
        assert_eq!(control.rc_pinned_bytes.load(Ordering::Relaxed), 0);
        assert_eq!((control.rc_open.load(Ordering::Relaxed), ib.open.load(Ordering::Relaxed)), (0, 0));
        assert!(budget.admit(&ib).is_ok(), "room again once they closed");
    }

    #[test]
    fn a_worker_takes_at_most_its_cq_sized_share() {
        let control = Arc::new(RdmaControl::default());
        let budget = Arc::new(RcBudget::new(usize::MAX, 1024, control.clone()));
        let (a, b) = (inbox(), inbox());
        let held: Vec<Admission> = (0..MAX_RC_PER_WORKER).map(|_| budget.admit(&a).unwrap()).collect();
        assert_eq!(budget.admit(&a).err(), Some(Refusal::WorkerFull));
        assert!(budget.admit(&b).is_ok(), "another worker still has room");
        assert_eq!(held.len(), MAX_RC_PER_WORKER);
    }

    #[test]
    fn a_change_wakes_the_worker() {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let path = RcPath::new(Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }));
        path.inbox().changed();
        assert_eq!(woken.load(Ordering::Relaxed), 1);
    }
}
