//! Promotion: a replica becomes a primary. It fences the old primary first
//! (the new epoch in its progress slot: a live one stops taking writes),
//! drains what the old primary's log still holds beyond its own, every
//! record validated and bounded as always, for at most
//! `--promote-drain-ms`, and only then takes writes. The old primary's
//! memory may outlive it: an shm region survives its process's kill -9; a
//! verbs primary whose process is wedged still answers READs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::primary::HEARTBEAT_EVERY;
use super::replica::{Connector, Follower, ReplicaControl, ReplicaOptions, ReplicaStatus};
use super::shm::now_us;
use super::transport::{Progress, Transport};
use super::Url;
use crate::error::{Error, Result};
use crate::store::Store;

/// A promotion's drain is complete once the old primary's head has stood
/// still this long with everything below it applied: a live old primary
/// stops writing within a heartbeat of seeing the fence.
pub(super) const DRAIN_SETTLE: Duration = Duration::from_millis(2 * HEARTBEAT_EVERY.as_millis() as u64);

/// The old primary at a promotion: still connected, or to be dialled again.
pub(super) enum Old<'a> {
    Connected(&'a mut dyn Transport),
    Dial(&'a Arc<Connector>, &'a Url),
}

/// Dial `url` again, giving up after `limit`: a dead host's side channel
/// can take seconds to time out, so the dial runs on a helper thread that
/// is abandoned (and drops what it connects) if it is late.
fn reconnect_within(connector: &Arc<Connector>, url: &Url, id: u64, limit: Duration) -> Result<Box<dyn Transport>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (c, u) = (connector.clone(), url.clone());
    std::thread::Builder::new()
        .name("drain-dial".into())
        .spawn(move || {
            let _ = tx.send(c(&u, id));
        })
        .map_err(|e| Error::new(format!("starting the drain's dial: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => crate::bail!("{url} did not answer within {} ms", limit.as_millis()),
    }
}

/// Become a primary continuing from our applied head, one epoch above
/// anything we saw. First fence the old primary (the new epoch in our slot:
/// a live one stops taking writes) and drain what its log still holds
/// beyond ours, within `opts.promote_drain`; then take writes, and leave
/// the fence in place.
pub(super) fn promote(
    store: &Store,
    status: &ReplicaStatus,
    ctl: &ReplicaControl,
    opts: &ReplicaOptions,
    old: Old<'_>,
) {
    // Both epochs are bounded (ours by this rule, the primary's by
    // `bounds::check_control`), so this cannot overflow.
    let epoch = store.epoch().max(status.primary_epoch.load(Ordering::Relaxed)).saturating_add(1);
    let t0 = Instant::now();
    let mut dialled: Option<Box<dyn Transport>>;
    let t: Option<&mut dyn Transport> = match old {
        Old::Connected(t) => Some(t),
        Old::Dial(..) if opts.promote_drain.is_zero() => None,
        Old::Dial(c, url) => {
            dialled = reconnect_within(c, url, opts.id, opts.promote_drain)
                .map_err(|e| note_drain(status, 0, 0, t0, &format!("old primary unreachable: {e}")))
                .ok();
            dialled.as_deref_mut()
        }
    };
    if opts.promote_drain.is_zero() {
        note_drain(status, 0, 0, t0, "no drain (--promote-drain-ms 0)");
    }
    if let Some(t) = t {
        if !opts.promote_drain.is_zero() {
            drain(store, status, ctl, opts, &mut *t, epoch, t0);
        }
        let applied = store.log().head();
        let _ = t.report(&Progress { applied, epoch, caught_up_us: now_us() });
        // A signalled read after it: when it completes, the epoch that
        // fences the old primary has landed (reports need not be waited for).
        let _ = t.control();
        t.keep_slot();
    }
    // The drain's figures first: `stats replication` shows them from the
    // moment it says `role primary` (a client that waits for the role and
    // then reads them must not find them missing).
    status.promoted.store(true, Ordering::Release);
    store.promote(epoch);
    status.connected.store(false, Ordering::Release);
    crate::log_notice!("promoted to primary at epoch {epoch}, head {}", store.log().head());
    ctl.finish_promotion(Ok(epoch));
}

/// A promotion's drain: follow the old primary as usual (every record
/// validated and bounded) until we hold its head and it has stood still,
/// the deadline passes, or its log no longer continues ours; never
/// resynchronise (that would throw away what we hold). Reports carry the
/// new epoch from the first one on, so a live old primary is fenced.
fn drain(
    store: &Store,
    status: &ReplicaStatus,
    ctl: &ReplicaControl,
    opts: &ReplicaOptions,
    t: &mut dyn Transport,
    epoch: u64,
    t0: Instant,
) {
    let (r0, b0) = (status.records_applied.load(Ordering::Relaxed), status.bytes_applied.load(Ordering::Relaxed));
    let applied = store.log().head();
    let _ = t.report(&Progress { applied, epoch, caught_up_us: now_us() });
    let mut f = Follower::new(store, status, ctl, opts);
    f.drain = Some(Drain { deadline: t0 + opts.promote_drain, epoch, settled: None });
    let why = match f.follow(t) {
        Ok(_) => f.drain_end.to_string(),
        Err(e) => format!("stopped: {e}"),
    };
    let records = status.records_applied.load(Ordering::Relaxed) - r0;
    let bytes = status.bytes_applied.load(Ordering::Relaxed) - b0;
    note_drain(status, records, bytes, t0, &why);
}

fn note_drain(status: &ReplicaStatus, records: u64, bytes: u64, t0: Instant, why: &str) {
    let us = t0.elapsed().as_micros() as u64;
    status.drain_records.store(records, Ordering::Relaxed);
    status.drain_bytes.store(bytes, Ordering::Relaxed);
    status.drain_us.store(us, Ordering::Relaxed);
    *status.drain_result.lock().unwrap_or_else(|e| e.into_inner()) = why.to_string();
    crate::log_notice!(
        "promotion drained {records} records ({bytes} bytes) from the old primary in {} ms: {why}",
        us / 1000
    );
}

/// A promotion's drain in progress.
pub(super) struct Drain {
    pub(super) deadline: Instant,
    /// The new epoch, reported in our slot throughout (the fence).
    pub(super) epoch: u64,
    /// The old primary's head once we held it, and since when.
    pub(super) settled: Option<(u64, Instant)>,
}
