//! Every cache operation, once, for all three protocols. The store is the only
//! writer of the log and the index.
//!
//! Concurrency: all mutations are serialized by one write lock (`writer`);
//! each appends a record and then repoints the index. Reads take only the
//! index shard's read lock, which they hold while copying the value out of the
//! log; the cleaner (inside an append) needs that shard's write lock to unlink
//! a record before its space is reused. Lock order: writer, then shard.
//! Methods named `*_locked` expect the caller to hold the write lock (most
//! take its `&mut Writer`); the `--sync-replicas` step (`replicated`, in
//! `sync.rs`) runs after it is dropped.
//!
//! An item is its Set record (value, flags, CAS, write time) plus what the
//! index entry adds: its latest expiry and its access state. A touch (touch,
//! gat, meta `T`) appends a small Touch record (key and new expiry, no
//! value) and moves only the entry's expiry; the item stays where its Set
//! record is. The cleaner reclaiming that Set record ends the item even if
//! a touch promised it longer, and counts it as an eviction if the item was
//! still live by its latest expiry at that moment, else as an expiry.
//! Reclaiming a Touch (or Delete, Flush, Padding) record frees nothing live.
//!
//! CAS values are unique across epochs: epoch `e` issues CAS values from
//! `(e - 1) << 48` on (`cas_floor`), and a promoted replica also starts above
//! the highest CAS its primary published (`max cas` in the control block), so
//! a CAS the dead primary handed out for a write that never reached the
//! replica is never handed out again.
//!
//! Files:
//! - `mod.rs`: the `Store`, its construction, the writer lock, role
//!   (read-only, fenced), `snapshot`;
//! - `sync.rs`: `--sync-replicas`: group commit (a write notes its end for
//!   its caller to hold the reply) or a bounded wait in the request;
//! - `types.rs`: request, outcome and error types, item metadata, counters;
//! - `expiry.rs`: the clock, exptime rules, liveness (expired, flushed);
//! - `read.rs`: get and the shared read path under the shard lock;
//! - `meta.rs`: meta `mg` (create on miss, touch, recache, win tokens);
//! - `write.rs`: the append and accounting helpers; set and its modes,
//!   delete, invalidate, flush_all;
//! - `touch.rs`: touch, gat;
//! - `arith.rs`: incr / decr and the counter parse;
//! - `replica.rs`: applying a primary's records, resync, epochs, promotion;
//! - `recover.rs`: a store over a memory file (`-e`), rebuilt from its log.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Result;
use crate::index::{Index, Records};
use crate::log::record::{self, MAX_KEY_LEN};
use crate::log::{Log, LogWriter};
use crate::memory::region::{HugePages, Region};

mod arith;
mod expiry;
mod meta;
mod read;
mod recover;
mod replica;
mod sync;
mod touch;
mod types;
mod write;

pub use arith::parse_counter;
pub use expiry::{absolute_expiry, Clock, REALTIME_MAXDELTA};
pub use recover::Recovery;
pub use sync::SyncReplicas;
pub use types::{
    memcached_item_size, ApplyError, ArithArgs, ArithExpiry, ArithOutcome, DeleteOutcome, ItemMeta, MetaGet,
    MetaGetArgs, ReadOpts, SetArgs, SetMode, SetOutcome, StoreError, StoreSnapshot, StoreStats,
};

/// The single writer's state, behind the write lock.
struct Writer {
    log: LogWriter,
    next_cas: u64,
    /// Reused for read-modify-write values (append, prepend, incr): the new
    /// record is assembled once, never allocated twice.
    scratch: Vec<u8>,
    /// memcached's evictions setting (`-M` turns it off): whether a write
    /// may reclaim a live item to make room (see `append_locked`).
    evictions: bool,
}

pub struct StoreConfig {
    pub memory_bytes: usize,
    pub max_item_size: usize,
    pub hugepages: HugePages,
}

/// The index's view of the log: keys and lengths of the records it points
/// at, read where they are (the index keeps no copy of a key).
pub struct LogRecords(Arc<Log>);

impl Records for LogRecords {
    fn key_is(&self, pos: u64, key: &[u8]) -> bool {
        self.0.key_is(pos, key)
    }

    fn prefetch(&self, pos: u64) {
        self.0.prefetch_record(pos)
    }

    fn len_at(&self, pos: u64) -> u64 {
        // An indexed position always holds a record; a header that does not
        // decode is a corrupt log (a bug), counted as nothing.
        self.0.read_header(pos).map_or(0, |h| h.total_len())
    }

    fn key_into(&self, pos: u64, out: &mut Vec<u8>) {
        let n = self.0.read_header(pos).map_or(0, |h| h.key_len as usize);
        out.resize(n, 0);
        self.0.read_key(pos, out);
    }
}

pub struct Store {
    log: Arc<Log>,
    writer: Mutex<Writer>,
    index: Index<LogRecords>,
    pub clock: Clock,
    max_item_size: usize,
    limit_maxbytes: u64,
    read_only: AtomicBool,
    /// A delayed flush_all: items written before this time die at it (0 =
    /// none). Published in the control block as well (`Log::publish_flush_at`).
    flush_at: AtomicU32,
    /// When this store started (its clock), for memcached's rule that a
    /// `flush_all` naming an absolute time before the process started
    /// flushes nothing (see `Store::flush_all`).
    started: u32,
    /// A replica: the highest CAS its primary published; promotion starts above.
    primary_max_cas: AtomicU64,
    /// Set when a higher epoch fenced this primary.
    fenced: AtomicBool,
    /// `--sync-replicas`: how far K replicas hold the log, and the timeout
    /// (`sync.rs`). Installed once at start.
    sync: std::sync::OnceLock<Box<dyn SyncReplicas>>,
    stats: StoreStats,
    /// A store over a memory file (`-e`): what opening it found.
    recovery: std::sync::OnceLock<Recovery>,
    /// Told of every eviction (`watch evictions`); installed once at start.
    eviction_hook: std::sync::OnceLock<EvictionHook>,
}

/// An item the log's writer evicted to make room, as memcached's `watch
/// evictions` line describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evicted {
    pub fetched: bool,
    /// Seconds it had left; -1: no expiry.
    pub ttl: i64,
    /// Seconds since its last access.
    pub idle: u32,
    pub value_len: u32,
}

/// Called (with the key) for every eviction, under the writer's lock: it
/// must not block.
pub type EvictionHook = Box<dyn Fn(&[u8], &Evicted) + Send + Sync>;

/// The key rule every protocol shares: 1..=250 bytes, any bytes, as
/// memcached 1.6 checks only the length (its text and meta tokenizers split
/// on spaces and end the line at a NUL or newline, so those bytes never
/// reach a text key; binary and base64 meta keys may hold anything).
pub fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN
}

/// Bits of a CAS value below the epoch's part (see `cas_floor`).
pub const CAS_EPOCH_SHIFT: u32 = 48;

/// The first CAS epoch `epoch` may issue: `(epoch - 1) << 48`, so a primary
/// that was never promoted issues 1, 2, ... as memcached does, and each
/// epoch has 2^48 values of its own (nine years at a million writes a
/// second). From epoch 65537 on the floor stays at the last epoch's, and
/// uniqueness rests on the published `max cas` alone.
pub fn cas_floor(epoch: u64) -> u64 {
    epoch.saturating_sub(1).min(u16::MAX as u64) << CAS_EPOCH_SHIFT
}

impl Store {
    pub fn new(cfg: &StoreConfig) -> Result<Store> {
        Store::open(cfg, None)
    }

    /// A store whose region is anonymous memory, or the file at `path` (which
    /// same-host `shm` replicas map).
    pub fn open(cfg: &StoreConfig, path: Option<&std::path::Path>) -> Result<Store> {
        let len = cfg.memory_bytes + crate::log::control::CONTROL_SIZE;
        let region = match path {
            Some(p) => Region::create_file(p, len, cfg.hugepages)?,
            None => Region::anonymous(len, cfg.hugepages)?,
        };
        Store::with_region(Arc::new(region), cfg)
    }

    /// A store over a region the caller mapped (a file for `shm` replicas).
    pub fn with_region(region: Arc<Region>, cfg: &StoreConfig) -> Result<Store> {
        // The log holds -m bytes however many huge pages the region took, so
        // `bytes` never exceeds `limit_maxbytes`.
        let log = Arc::new(Log::create_with_capacity(region, 1, cfg.memory_bytes as u64));
        log.record_settings(cfg.memory_bytes as u64, cfg.max_item_size as u64);
        Store::over(log, cfg)
    }

    /// A store over `log` as it stands (a fresh one, or one reopened from a
    /// memory file, whose head, tail and epoch the writer takes over).
    fn over(log: Arc<Log>, cfg: &StoreConfig) -> Result<Store> {
        // The log holds a record of at most half its capacity (see
        // `LogGeometry::max_record`). memcached starts with any -m and -I
        // (`-m 2` with the default `-I 1m` serves 1 MB items), so a -I the
        // log cannot hold is lowered to what it can, with a notice, rather
        // than refused.
        let fits = (log.capacity() / 2).saturating_sub(record::HEADER_LEN as u64 + MAX_KEY_LEN as u64) as usize;
        let max_item_size = cfg.max_item_size.min(fits);
        if max_item_size < cfg.max_item_size {
            crate::log_notice!(
                "-I {} bytes does not fit a {} MiB log (an item may use at most half of it): items up to {} bytes",
                cfg.max_item_size,
                cfg.memory_bytes >> 20,
                max_item_size
            );
        }
        let writer = Writer { log: LogWriter::new(log.clone()), next_cas: 1, scratch: Vec::new(), evictions: true };
        let clock = Clock::default();
        let started = clock.now();
        let index = Index::new(LogRecords(log.clone()));
        Ok(Store {
            log,
            writer: Mutex::new(writer),
            index,
            clock,
            max_item_size,
            limit_maxbytes: cfg.memory_bytes as u64,
            read_only: AtomicBool::new(false),
            flush_at: AtomicU32::new(0),
            started,
            primary_max_cas: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            sync: std::sync::OnceLock::new(),
            stats: StoreStats::default(),
            recovery: std::sync::OnceLock::new(),
            eviction_hook: std::sync::OnceLock::new(),
        })
    }

    /// Install what every eviction calls (once; later calls change nothing).
    pub fn set_eviction_hook(&self, hook: EvictionHook) {
        let _ = self.eviction_hook.set(hook);
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn index(&self) -> &Index<LogRecords> {
        &self.index
    }

    pub fn max_item_size(&self) -> usize {
        self.max_item_size
    }

    /// memcached's `-M` (`on` false): a write of an item that would need
    /// the cleaner to reclaim a live item is refused (`StoreError::NoMemory`)
    /// instead; dead records are still reclaimed.
    pub fn set_evictions(&self, on: bool) {
        self.lock().evictions = on;
    }

    pub fn set_read_only(&self, ro: bool) {
        self.read_only.store(ro, Ordering::Release);
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // Poisoned only if a writer panicked; its record was either published
        // whole or not at all, so carrying on is sound.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuse writes from now on: a newer primary exists (promoted at
    /// `epoch`). Kept in the control block, so a restart from the memory
    /// file stays fenced until it is promoted or follows a primary.
    pub fn fence(&self, epoch: u64) {
        self.log.set_fenced_by(epoch.max(1));
        self.fenced.store(true, Ordering::Release);
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    fn check_role(&self) -> std::result::Result<(), StoreError> {
        if self.is_fenced() {
            return Err(StoreError::Fenced);
        }
        if self.is_read_only() {
            return Err(StoreError::ReadOnly);
        }
        Ok(())
    }

    fn writable(&self, key: &[u8]) -> std::result::Result<(), StoreError> {
        self.check_role()?;
        if !valid_key(key) {
            return Err(StoreError::BadKey);
        }
        Ok(())
    }

    /// When the oldest record still in the log was written (`stats`
    /// `oldest_age`), or None for an empty log. Read under the writer lock:
    /// the cleaner may be overwriting the tail's bytes otherwise.
    pub fn oldest_record_time(&self) -> Option<u32> {
        let w = self.lock();
        let (head, tail) = (w.log.head(), w.log.tail());
        let pos = self.log.skip_gap(tail);
        if pos >= head {
            return None;
        }
        self.log.read_header(pos).map(|h| h.time).filter(|&t| t != 0)
    }

    pub fn snapshot(&self) -> StoreSnapshot {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreSnapshot {
            curr_items: self.index.items(),
            total_items: l(&s.total_items),
            bytes: self.index.bytes(),
            evictions: l(&s.evictions),
            outofmemory: l(&s.outofmemory),
            evicted_unfetched: l(&s.evicted_unfetched),
            evicted_nonzero: l(&s.evicted_nonzero),
            evicted_time: l(&s.evicted_time),
            expired_unfetched: l(&s.expired_unfetched),
            reclaimed: l(&s.reclaimed),
            records_appended: l(&s.records_appended),
            sync_timeouts: l(&s.sync_timeouts),
            log_capacity: self.log.capacity(),
            index_bytes: self.index.memory_bytes(),
            log_head: self.log.head(),
            log_tail: self.log.tail(),
            epoch: self.log.epoch(),
            backing: self.log.region().backing(),
            limit_maxbytes: self.limit_maxbytes,
            max_item_size: self.max_item_size as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn store(mb: usize) -> Store {
        Store::new(&StoreConfig { memory_bytes: mb << 20, max_item_size: 256 << 10, hugepages: HugePages::Off })
            .unwrap()
    }

    #[test]
    fn a_small_log_lowers_the_item_size_instead_of_refusing_to_start() {
        // memcached starts with -m 2 and the default -I 1m.
        let s = Store::new(&StoreConfig { memory_bytes: 2 << 20, max_item_size: 1 << 20, hugepages: HugePages::Off })
            .unwrap();
        let max = s.max_item_size();
        assert!(max < 1 << 20 && max > 1_000_000, "{max}");
        assert_eq!(s.snapshot().max_item_size, max as u64);
        let v = vec![b'x'; max];
        assert!(matches!(set(&s, SetMode::Set, b"k", &v), SetOutcome::Stored { .. }));
        assert_eq!(get(&s, b"k").unwrap().0.len(), max);
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"k", &[b'x'; (1 << 20) - 1], 0, 0)), Err(StoreError::TooLarge));
        // A -I the log holds stays as given.
        assert_eq!(store(4).max_item_size(), 256 << 10);
    }

    pub(super) fn get(s: &Store, key: &[u8]) -> Option<(Vec<u8>, ItemMeta)> {
        let mut out = Vec::new();
        let m = s.get(key, ReadOpts { value: true, note_access: true }, &mut out, |_, _| {})?;
        Some((out, m))
    }

    pub(super) fn set(s: &Store, mode: SetMode, key: &[u8], v: &[u8]) -> SetOutcome {
        s.set(&SetArgs::new(mode, key, v, 7, 0)).unwrap()
    }

    #[test]
    fn read_only_refuses_every_write() {
        let s = store(4);
        set(&s, SetMode::Set, b"k", b"v");
        s.set_read_only(true);
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"k", b"x", 0, 0)), Err(StoreError::ReadOnly));
        assert_eq!(s.delete(b"k", 0), Err(StoreError::ReadOnly));
        assert_eq!(s.touch(b"k", 1), Err(StoreError::ReadOnly));
        assert_eq!(s.flush_all(0), Err(StoreError::ReadOnly));
        assert_eq!(get(&s, b"k").unwrap().0, b"v");
    }
}
