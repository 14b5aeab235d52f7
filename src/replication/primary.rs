//! The primary's side of replication. Replicas pull; the primary only
//! publishes a heartbeat, reads the progress slots replicas write (for
//! `stats replication` and `--sync-replicas`), and fences itself when a slot
//! carries a higher epoch than its own (a replica was promoted: this primary
//! is stale and must refuse writes rather than fork history).
//!
//! Slots live in two places ([`SlotTable`]): the control block's 64 slots,
//! which `rdma` replicas WRITE (each only its own), and the slot files of
//! `shm` replicas (`shm::slot_path`), mapped read-only here and found by a
//! rescan every [`RESCAN_EVERY`] heartbeats.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use super::shm::{now_us, open_trusted, slot_path, SLOT_FILE_INCARNATION, SLOT_FILE_SLEEP, SLOT_STALE_US};
use crate::log::control::{self, MAX_REPLICAS, SLOT_LEN};
use crate::log::Log;
use crate::memory::futex;
use crate::memory::region::Region;
use crate::store::{Store, SyncReplicas};

/// How often the heartbeat moves (and the slots are checked for fencing).
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(5);
/// Heartbeats between looks for new or replaced shm slot files (100 ms).
pub const RESCAN_EVERY: u32 = 20;

/// One replica's progress as its slot shows it. `slot` is the control
/// block's slot for an rdma replica, `MAX_REPLICAS + N` for shm slot file N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView {
    pub slot: usize,
    pub id: u64,
    pub applied: u64,
    pub epoch: u64,
    pub updated_us: u64,
    pub caught_up_us: u64,
}

impl SlotView {
    fn fresh(&self, now: u64) -> bool {
        self.id != 0 && now.saturating_sub(self.updated_us) <= SLOT_STALE_US
    }
}

/// A mapped shm slot file, and which inode it is (a replaced file is remapped).
struct SlotFile {
    dev: u64,
    ino: u64,
    map: Region,
    /// The replica's sleep count we last rang for (`ring_sleepers`).
    rung: AtomicU64,
}

impl SlotFile {
    /// Whether the replica writing it follows the log of this incarnation.
    fn follows(&self, incarnation: u64) -> bool {
        self.map.atomic_u64(SLOT_FILE_INCARNATION).load(Ordering::Acquire) == incarnation
    }
}

/// Every replica's progress slot, wherever it lives.
pub struct SlotTable {
    log: Arc<Log>,
    /// `shm://NAME` whose slot files we read, and the group trusted to own them.
    shm: Option<(String, Option<u32>)>,
    files: RwLock<Vec<Option<SlotFile>>>,
}

fn read_slot(r: &Region, base: usize, slot: usize) -> SlotView {
    let a = |o| r.atomic_u64(base + o).load(Ordering::Acquire);
    SlotView {
        slot,
        id: a(control::SLOT_REPLICA_ID),
        applied: a(control::SLOT_APPLIED),
        epoch: a(control::SLOT_EPOCH),
        updated_us: a(control::SLOT_UPDATED_US),
        caught_up_us: a(control::SLOT_CAUGHT_UP_US),
    }
}

impl SlotTable {
    /// Slots of `log`'s control block, plus those of `shm` replicas of that
    /// name (whose files `group` may own besides us and root).
    pub fn new(log: Arc<Log>, shm: Option<(String, Option<u32>)>) -> SlotTable {
        let t = SlotTable { log, shm, files: RwLock::new((0..MAX_REPLICAS).map(|_| None).collect()) };
        t.rescan();
        t
    }

    /// Map slot files that appeared or were replaced since the last look,
    /// forget those that went. A file we do not trust is never mapped.
    pub fn rescan(&self) {
        let Some((name, group)) = &self.shm else { return };
        for i in 0..MAX_REPLICAS {
            let p = slot_path(name, i);
            let id = std::fs::symlink_metadata(&p).ok().map(|m| (m.dev(), m.ino()));
            let known = self.files.read().unwrap_or_else(|e| e.into_inner())[i].as_ref().map(|f| (f.dev, f.ino));
            if id == known {
                continue;
            }
            let opened = id.and_then(|_| {
                let f = open_trusted(&p, *group).ok()?;
                let md = f.metadata().ok()?;
                if (md.len() as usize) < SLOT_LEN.max(SLOT_FILE_SLEEP + 8) {
                    return None;
                }
                let map = Region::map_readonly(&f, &p).ok()?;
                Some(SlotFile { dev: md.dev(), ino: md.ino(), map, rung: AtomicU64::new(0) })
            });
            self.files.write().unwrap_or_else(|e| e.into_inner())[i] = opened;
        }
    }

    /// Every slot, held or not (fencing looks at stale ones too).
    pub fn all(&self) -> Vec<SlotView> {
        let region = self.log.region();
        let mut v: Vec<SlotView> = (0..MAX_REPLICAS).map(|i| read_slot(region, control::slot_offset(i), i)).collect();
        let files = self.files.read().unwrap_or_else(|e| e.into_inner());
        let ours = self.incarnation();
        v.extend(files.iter().enumerate().filter_map(|(i, f)| {
            f.as_ref().filter(|f| f.follows(ours)).map(|f| read_slot(&f.map, 0, MAX_REPLICAS + i))
        }));
        v
    }

    /// Our log's incarnation: slot files of replicas of another log are ignored.
    fn incarnation(&self) -> u64 {
        self.log.region().atomic_u64(control::OFF_INCARNATION).load(Ordering::Acquire)
    }

    /// Say in the control block whether this primary rings the doorbell for
    /// every write it holds (`--sync-replicas`): its `shm` replicas then
    /// sleep longer between looks (`shm::RUNG_WAIT`). Set at every start: a
    /// restart from a memory file may change its mind.
    pub fn set_ringing(&self, rings: bool) {
        self.log.region().atomic_u32(control::OFF_RINGS).store(u32::from(rings), Ordering::Release);
    }

    /// Wake the `shm` replicas asleep on the doorbell that have not applied
    /// up to `head` (called while replies wait for them): bump the doorbell
    /// and wake its waiters, once per sleep a replica announced, and not at
    /// all while every replica is awake (see `ShmTransport::idle_wait` for
    /// why no wake is lost). Remote replicas poll and need none.
    pub fn ring_sleepers(&self, head: u64) {
        if self.shm.is_none() {
            return;
        }
        // Orders the head published before this call before the loads of
        // the replicas' sleep words (their fence orders the other way).
        fence(Ordering::SeqCst);
        let files = self.files.read().unwrap_or_else(|e| e.into_inner());
        let ours = self.incarnation();
        let mut ring = false;
        for f in files.iter().flatten().filter(|f| f.follows(ours)) {
            let sleep = f.map.atomic_u64(SLOT_FILE_SLEEP).load(Ordering::SeqCst);
            let behind = f.map.atomic_u64(control::SLOT_APPLIED).load(Ordering::Acquire) < head;
            if sleep % 2 == 1 && behind && f.rung.swap(sleep, Ordering::Relaxed) != sleep {
                ring = true;
            }
        }
        if ring {
            let bell = self.log.region().atomic_u32(control::OFF_DOORBELL);
            bell.fetch_add(1, Ordering::SeqCst);
            futex::wake(bell);
        }
    }

    /// How many `shm` replicas of our log say they sleep on the doorbell.
    pub fn sleepers(&self) -> usize {
        let files = self.files.read().unwrap_or_else(|e| e.into_inner());
        let ours = self.incarnation();
        let asleep = |f: &&SlotFile| f.map.atomic_u64(SLOT_FILE_SLEEP).load(Ordering::Acquire) % 2 == 1;
        files.iter().flatten().filter(|f| f.follows(ours)).filter(asleep).count()
    }

    /// The slots of replicas that reported recently.
    pub fn live(&self) -> Vec<SlotView> {
        let now = now_us();
        self.all().into_iter().filter(|s| s.fresh(now)).collect()
    }

    /// The position below which `k` live replicas at `epoch` hold
    /// everything: the k-th highest `applied` among them (0 if fewer).
    fn confirmed_by(&self, epoch: u64, k: usize) -> u64 {
        if k == 0 {
            return u64::MAX;
        }
        let now = now_us();
        let mut applied = [0u64; 2 * MAX_REPLICAS];
        let mut n = 0;
        let mut note = |s: &SlotView| {
            if s.fresh(now) && s.epoch == epoch && n < applied.len() {
                applied[n] = s.applied;
                n += 1;
            }
        };
        let region = self.log.region();
        (0..MAX_REPLICAS).for_each(|i| note(&read_slot(region, control::slot_offset(i), i)));
        let files = self.files.read().unwrap_or_else(|e| e.into_inner());
        let ours = self.incarnation();
        files.iter().flatten().filter(|f| f.follows(ours)).for_each(|f| note(&read_slot(&f.map, 0, 0)));
        if n < k {
            return 0;
        }
        let live = &mut applied[..n];
        live.sort_unstable_by(|a, b| b.cmp(a));
        live[k - 1]
    }
}

/// The slots of replicas that reported recently.
pub fn live_slots(slots: &SlotTable) -> Vec<SlotView> {
    slots.live()
}

/// The heartbeat thread: bumps the heartbeat and watches for fencing.
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    pub fn start(store: Arc<Store>, slots: Arc<SlotTable>, verbose: bool) -> crate::error::Result<Ticker> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let st = stop.clone();
        let fenced_reported = AtomicBool::new(false);
        let handle = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                let (lock, cv) = &*st;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                let mut ticks = 0u32;
                while !*stopped {
                    let log = store.log();
                    log.beat(now_us());
                    ticks = ticks.wrapping_add(1);
                    if ticks.is_multiple_of(RESCAN_EVERY) {
                        slots.rescan();
                    }
                    if !store.is_read_only() && !store.is_fenced() {
                        let mine = log.epoch();
                        // Any slot, fresh or not: a promotion's mark must not
                        // expire while this primary was frozen.
                        let newer = slots.all().into_iter().find(|s| s.id != 0 && s.epoch > mine);
                        if let Some(SlotView { slot, epoch, .. }) = newer {
                            store.fence(epoch);
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

/// `--sync-replicas K --sync-timeout T`: how far K live replicas at our
/// epoch have applied the log, read from their progress slots. The store
/// holds a write's reply until this passes the write's end (group commit,
/// in the TCP workers' poll loops) or waits for it in the request, bounded
/// by T (the other callers): see `store::sync`.
pub fn sync_waiter(slots: Arc<SlotTable>, k: usize, timeout: Duration) -> Box<dyn SyncReplicas> {
    Box::new(SyncBy { slots, k, timeout })
}

struct SyncBy {
    slots: Arc<SlotTable>,
    k: usize,
    timeout: Duration,
}

impl SyncReplicas for SyncBy {
    fn confirmed(&self) -> u64 {
        self.slots.confirmed_by(self.slots.log.epoch(), self.k)
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    fn nudge(&self) {
        self.slots.ring_sleepers(self.slots.log.head());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::region::HugePages;
    use crate::store::StoreConfig;

    #[test]
    fn confirmed_is_the_kth_highest_fresh_slot_at_our_epoch() {
        let store =
            Store::new(&StoreConfig { memory_bytes: 4 << 20, max_item_size: 1 << 10, hugepages: HugePages::Off })
                .expect("store");
        let log = store.log().clone();
        let slots = Arc::new(SlotTable::new(log.clone(), None));
        let epoch = log.epoch();
        // As an rdma replica WRITEs its own slot.
        let put = |i: usize, applied: u64, epoch: u64, age_us: u64| {
            let base = control::slot_offset(i);
            let set = |o: usize, v: u64| log.region().atomic_u64(base + o).store(v, Ordering::Release);
            set(control::SLOT_REPLICA_ID, 1 + i as u64);
            set(control::SLOT_APPLIED, applied);
            set(control::SLOT_EPOCH, epoch);
            set(control::SLOT_UPDATED_US, now_us() - age_us);
        };
        let two = sync_waiter(slots.clone(), 2, Duration::from_millis(5));
        assert_eq!(two.confirmed(), 0, "no replica");
        put(0, 500, epoch, 0);
        assert_eq!(two.confirmed(), 0, "one of two");
        put(1, 300, epoch, 0);
        put(2, 900, epoch + 1, 0);
        put(3, 800, epoch, SLOT_STALE_US * 10);
        assert_eq!(two.confirmed(), 300, "the second highest of the fresh slots at our epoch");
        assert_eq!(sync_waiter(slots.clone(), 1, Duration::ZERO).confirmed(), 500);
        put(4, 700, epoch, 0);
        assert_eq!(two.confirmed(), 500);
        assert_eq!(two.timeout(), Duration::from_millis(5));
    }
}
