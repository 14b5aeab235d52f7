//! The primary's side of replication. Replicas pull; the primary only
//! publishes a heartbeat, reads the progress slots replicas write (for
//! `stats replication` and `--sync-replicas`), and fences itself when a slot
//! carries a higher epoch than its own (a replica was promoted: this primary
//! is stale and must refuse writes rather than fork history).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

use super::shm::{now_us, SLOT_STALE_US};
use crate::log::control::{self, MAX_REPLICAS};
use crate::log::Log;
use crate::store::Store;

/// How often the heartbeat moves (and the slots are checked for fencing).
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(5);

/// One replica's progress as its slot shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView {
    pub slot: usize,
    pub id: u64,
    pub applied: u64,
    pub epoch: u64,
    pub updated_us: u64,
    pub caught_up_us: u64,
}

/// The slots of replicas that reported recently.
pub fn live_slots(log: &Log) -> Vec<SlotView> {
    let now = now_us();
    (0..MAX_REPLICAS)
        .filter_map(|i| {
            let (applied, epoch, updated_us, id) = log.slot(i);
            let caught_up_us =
                log.region().atomic_u64(control::slot_offset(i) + control::SLOT_CAUGHT_UP_US).load(Ordering::Acquire);
            (id != 0 && now.saturating_sub(updated_us) <= SLOT_STALE_US).then_some(SlotView {
                slot: i,
                id,
                applied,
                epoch,
                updated_us,
                caught_up_us,
            })
        })
        .collect()
}

/// The heartbeat thread: bumps the heartbeat and watches for fencing.
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    pub fn start(store: Arc<Store>, verbose: bool) -> crate::error::Result<Ticker> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let st = stop.clone();
        let fenced_reported = AtomicBool::new(false);
        let handle = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                let (lock, cv) = &*st;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !*stopped {
                    let log = store.log();
                    log.beat(now_us());
                    if !store.is_read_only() && !store.is_fenced() {
                        let mine = log.epoch();
                        // Any slot, fresh or not: a promotion's mark must not
                        // expire while this primary was frozen.
                        let newer = (0..MAX_REPLICAS).map(|i| (i, log.slot(i))).find(|(_, (_, e, _, id))| *id != 0 && *e > mine);
                        if let Some((slot, (_, epoch, _, _))) = newer {
                            store.fence();
                            if !fenced_reported.swap(true, Ordering::Relaxed) || verbose {
                                crate::log_warn!(
                                    "replica in slot {slot} reports epoch {epoch} > ours ({mine}): a replica was promoted; \
                                     this primary now refuses writes (restart it as a replica of the new primary)"
                                );
                            }
                        }
                    }
                    // A timed wait for the stop signal: the control path's clock.
                    stopped = cv.wait_timeout(stopped, HEARTBEAT_EVERY).unwrap_or_else(|e| e.into_inner()).0;
                }
            })
            .map_err(|e| crate::error::Error::new(format!("starting the heartbeat thread: {e}")))?;
        Ok(Ticker { stop, handle: Some(handle) })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.1.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// `--sync-replicas K --sync-timeout T`: a wait until K live replicas at our
/// epoch have applied everything below `end`. Spins, then yields (a
/// `Backoff`'s snooze): the wait is bounded by T and short in the common case
/// (replicas are microseconds behind).
pub fn sync_waiter(log: Arc<Log>, k: usize, timeout: Duration) -> Box<dyn Fn(u64) -> bool + Send + Sync> {
    Box::new(move |end| {
        let deadline = Instant::now() + timeout;
        let backoff = Backoff::new();
        loop {
            let epoch = log.epoch();
            let now = now_us();
            let have = (0..MAX_REPLICAS)
                .filter(|&i| {
                    let (applied, e, updated, id) = log.slot(i);
                    id != 0 && e == epoch && applied >= end && now.saturating_sub(updated) <= SLOT_STALE_US
                })
                .count();
            if have >= k {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            backoff.snooze();
        }
    })
}
