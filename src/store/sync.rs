//! `--sync-replicas K`: a write counts as done once K replicas hold it.
//!
//! The store decides only until when a write's reply must wait (its
//! records' end, against how far K replicas have confirmed), not where:
//!
//! - **Group commit** (the TCP workers): inside [`Store::deferring`] a write
//!   does not wait. It notes where its records end and returns its outcome;
//!   the caller holds the reply in its connection's output until
//!   [`Store::sync_confirmed`] passes that end, or, after
//!   [`Store::sync_timeout`], answers `NotReplicated` instead and counts it
//!   ([`Store::note_sync_timeout`]). Nothing waits inside a request.
//! - **In the request** (every other caller: the admin socket's threads,
//!   the RDMA endpoint, tests): the write waits here, spinning then
//!   yielding, for at most the timeout, as before group commit existed.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

use super::{Store, StoreError};

/// What `--sync-replicas` needs from replication (installed by main).
pub trait SyncReplicas: Send + Sync {
    /// The log position below which K live replicas at the current epoch
    /// hold every record (0 while fewer than K are live).
    fn confirmed(&self) -> u64;
    /// `--sync-timeout`: the longest a write's reply waits.
    fn timeout(&self) -> Duration;
    /// Replies wait for replicas: wake those that sleep (a replica that
    /// polls needs nothing, the default).
    fn nudge(&self) {}
}

thread_local! {
    /// Inside [`Store::deferring`] on this thread: the end of the last write
    /// (0 before any). Outside: `None`, and writes wait in the request.
    static DEFERRED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Puts back the caller's deferring scope (carrying this one's end into
/// it, if it is one), even if the request unwinds: a panic must not leave
/// the thread's later writes deferred with nobody to hold their replies.
struct Restore(Option<u64>);

impl Drop for Restore {
    fn drop(&mut self) {
        let outer = self.0;
        DEFERRED.with(|d| {
            let inner = d.get().unwrap_or(0);
            d.set(outer.map(|o| o.max(inner)));
        });
    }
}

impl Store {
    /// Install `--sync-replicas` (once, before serving).
    pub fn set_sync_wait(&self, s: Box<dyn SyncReplicas>) {
        let _ = self.sync.set(s);
    }

    /// Whether writes wait for replicas at all.
    pub fn syncs(&self) -> bool {
        self.sync.get().is_some()
    }

    /// Run `f` (one request) with group commit: its writes do not wait for
    /// replicas. Returns what `f` returned and, if a write under
    /// `--sync-replicas` succeeded in it, where the last one's records end:
    /// its reply must wait until [`Store::sync_confirmed`] reaches that.
    pub fn deferring<R>(&self, f: impl FnOnce() -> R) -> (R, Option<u64>) {
        if !self.syncs() {
            return (f(), None);
        }
        let guard = Restore(DEFERRED.with(|d| d.replace(Some(0))));
        let r = f();
        let end = DEFERRED.with(|d| d.get()).filter(|&e| e > 0);
        drop(guard);
        (r, end)
    }

    /// How far K replicas hold the log (`u64::MAX` without `--sync-replicas`).
    pub fn sync_confirmed(&self) -> u64 {
        self.sync.get().map_or(u64::MAX, |s| s.confirmed())
    }

    /// `--sync-timeout` (zero without `--sync-replicas`).
    pub fn sync_timeout(&self) -> Duration {
        self.sync.get().map_or(Duration::ZERO, |s| s.timeout())
    }

    /// Replies are held for replicas: wake any that sleep on a doorbell.
    pub fn sync_nudge(&self) {
        if let Some(s) = self.sync.get() {
            s.nudge();
        }
    }

    /// A held reply's wait ran out (`sync_timeouts`).
    pub fn note_sync_timeout(&self) {
        self.stats.sync_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// After a write whose records end at `end`, called without the write
    /// lock: under group commit note the end, else wait for the replicas.
    pub(super) fn replicated(&self, end: u64) -> std::result::Result<(), StoreError> {
        let Some(sync) = self.sync.get() else { return Ok(()) };
        let deferred = DEFERRED.with(|d| match d.get() {
            Some(e) => {
                d.set(Some(e.max(end)));
                true
            }
            None => false,
        });
        if deferred {
            return Ok(());
        }
        let deadline = Instant::now() + sync.timeout();
        let backoff = Backoff::new();
        loop {
            if sync.confirmed() >= end {
                return Ok(());
            }
            sync.nudge();
            if Instant::now() >= deadline {
                self.note_sync_timeout();
                return Err(StoreError::NotReplicated);
            }
            backoff.snooze();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::tests::store;
    use crate::store::{SetArgs, SetMode, SetOutcome};
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// Replicas that have confirmed what the test says.
    pub(crate) struct Confirmed(pub Arc<AtomicU64>, pub Duration);

    impl SyncReplicas for Confirmed {
        fn confirmed(&self) -> u64 {
            self.0.load(Ordering::Acquire)
        }
        fn timeout(&self) -> Duration {
            self.1
        }
    }

    #[test]
    fn deferred_writes_return_their_end_without_waiting() {
        let s = store(4);
        let at = Arc::new(AtomicU64::new(0));
        // A timeout no test would sit through: a deferred write must not wait.
        s.set_sync_wait(Box::new(Confirmed(at.clone(), Duration::from_secs(3600))));
        let t0 = Instant::now();
        let (r, end) = s.deferring(|| s.set(&SetArgs::new(SetMode::Set, b"k", b"v", 0, 0)));
        assert!(matches!(r, Ok(SetOutcome::Stored { .. })));
        assert_eq!(end, Some(s.log().head()), "the write's end");
        let (r, end2) = s.deferring(|| {
            let a = s.set(&SetArgs::new(SetMode::Set, b"a", b"1", 0, 0));
            let b = s.set(&SetArgs::new(SetMode::Set, b"b", b"2", 0, 0));
            (a, b)
        });
        assert!(r.0.is_ok() && r.1.is_ok());
        assert_eq!(end2, Some(s.log().head()), "the last write's end");
        let (_, none) = s.deferring(|| s.set(&SetArgs::new(SetMode::Add, b"k", b"v", 0, 0)));
        assert_eq!(none, None, "NOT_STORED wrote nothing, so it waits for nothing");
        assert!(t0.elapsed() < Duration::from_secs(60));
        assert_eq!(s.snapshot().sync_timeouts, 0);
        // Outside a deferring scope the write waits in the request again.
        at.store(u64::MAX, Ordering::Release);
        assert!(s.set(&SetArgs::new(SetMode::Set, b"k", b"w", 0, 0)).is_ok());
    }

    #[test]
    fn a_scope_is_put_back_after_a_panic_and_a_nested_one_carries_its_end_out() {
        let s = store(4);
        s.set_sync_wait(Box::new(Confirmed(Arc::new(AtomicU64::new(0)), Duration::ZERO)));
        let set = |k: &[u8]| s.set(&SetArgs::new(SetMode::Set, k, b"v", 0, 0));
        let (_, end) = s.deferring(|| s.deferring(|| set(b"inner")));
        assert_eq!(end, Some(s.log().head()), "the outer scope holds for the inner write");
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.deferring(|| -> () { panic!("a request that panics") })
        }));
        assert!(unwound.is_err());
        // Outside any scope again: the write waits in the request (and,
        // confirmed by nobody within zero time, says so).
        assert_eq!(set(b"after"), Err(StoreError::NotReplicated));
    }

    #[test]
    fn in_request_waits_are_bounded_by_the_timeout() {
        let s = store(4);
        s.set_sync_wait(Box::new(Confirmed(Arc::new(AtomicU64::new(0)), Duration::from_millis(20))));
        let t0 = Instant::now();
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"k", b"v", 0, 0)), Err(StoreError::NotReplicated));
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(s.snapshot().sync_timeouts, 1);
        assert_eq!(s.sync_timeout(), Duration::from_millis(20));
        assert_eq!(s.sync_confirmed(), 0);
    }
}
