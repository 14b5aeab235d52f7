//! Every cache operation, once, for all three protocols. The store is the only
//! writer of the log and the index.
//!
//! Concurrency: all mutations are serialized by one write lock (`writer`);
//! each appends a record and then repoints the index. Reads take only the
//! index shard's read lock, which they hold while copying the value out of the
//! log; the cleaner (inside an append) needs that shard's write lock to unlink
//! a record before its space is reused. Lock order: writer, then shard.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Result;
use crate::index::{Entry, Index};
use crate::log::record::{self, Header, Kind, Record, ITEM_STALE, MAX_KEY_LEN};
use crate::log::{AppendError, Log, LogWriter, NewRecord};
use crate::memory::region::{Backing, HugePages, Region};

/// memcached's boundary between relative and absolute expiry times (30 days).
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// Wall-clock seconds, with an offset tests (and `debug time` tooling) can move.
#[derive(Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> u32 {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        (t + self.offset.load(Ordering::Relaxed)).clamp(1, u32::MAX as i64) as u32
    }

    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}

/// memcached's exptime rules, to an absolute unix time (0 = never):
/// negative = already expired; up to 30 days = relative; beyond = absolute.
pub fn absolute_expiry(exptime: i64, now: u32) -> u32 {
    if exptime == 0 {
        0
    } else if exptime < 0 {
        1
    } else if exptime > REALTIME_MAXDELTA {
        exptime.min(u32::MAX as i64) as u32
    } else {
        (now as i64 + exptime).min(u32::MAX as i64) as u32
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

/// One storage request, whichever protocol it came in.
#[derive(Clone, Copy, Debug)]
pub struct SetArgs<'a> {
    pub mode: SetMode,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub flags: u32,
    /// memcached convention (see `absolute_expiry`).
    pub exptime: i64,
    /// Compare-and-swap against this CAS; 0 = unconditional.
    pub cas: u64,
    /// Meta `ms I`: a CAS older than the item's stores the value as stale
    /// instead of failing.
    pub invalidate: bool,
    /// Meta `ms N`: append/prepend to a missing key creates it with this exptime.
    pub vivify: Option<i64>,
}

impl<'a> SetArgs<'a> {
    pub fn new(mode: SetMode, key: &'a [u8], value: &'a [u8], flags: u32, exptime: i64) -> Self {
        SetArgs { mode, key, value, flags, exptime, cas: 0, invalidate: false, vivify: None }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOutcome {
    Stored {
        cas: u64,
    },
    NotStored,
    /// CAS mismatch.
    Exists,
    /// CAS given and no such item.
    NotFound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    Exists,
}

#[derive(Clone, Copy, Debug)]
pub struct ArithArgs<'a> {
    pub key: &'a [u8],
    pub incr: bool,
    pub delta: u64,
    /// Compare-and-swap (binary, meta); 0 = unconditional.
    pub cas: u64,
    /// Create on miss with (initial value, exptime) — binary and meta `N`.
    pub initial: Option<(u64, i64)>,
    /// Also set a new expiry (meta `T`).
    pub new_exptime: Option<i64>,
}

/// Absolute expiries around an arithmetic update (`Store::arith_ex`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArithExpiry {
    pub before: u32,
    pub after: u32,
    /// The miss created the item (binary initial value, meta `N`).
    pub created: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOutcome {
    Value { value: u64, cas: u64 },
    NotFound,
    NonNumeric,
    Exists,
}

/// A replicated record could not be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyError {
    Log(crate::log::RawError),
}

/// Why a write was not performed at all (as opposed to NOT_STORED & co).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// This process is a read-only replica.
    ReadOnly,
    /// Value larger than `-I` or than the log can hold.
    TooLarge,
    /// The key is empty, longer than 250 bytes, or has control characters.
    BadKey,
    /// This primary was superseded by a promoted replica (a higher epoch):
    /// it refuses writes rather than fork history.
    Fenced,
    /// Written, but fewer than `--sync-replicas` replicas confirmed it within
    /// `--sync-timeout`.
    NotReplicated,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreError::ReadOnly => "read-only replica",
            StoreError::TooLarge => "object too large for cache",
            StoreError::BadKey => "bad key",
            StoreError::Fenced => "stale primary: a replica was promoted to a newer epoch; writes refused",
            StoreError::NotReplicated => "stored, but not confirmed by the required replicas in time",
        })
    }
}

/// What a read learns about an item besides its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemMeta {
    pub flags: u32,
    pub cas: u64,
    /// Absolute expiry, 0 = never.
    pub expiry: u32,
    pub value_len: u32,
    /// Unix seconds of the previous access (before this read).
    pub last_access: u32,
    /// Had been fetched before this read.
    pub fetched: bool,
    pub stale: bool,
    /// This read is the first to see the item since a win token was due (meta).
    pub win: bool,
    /// A win token was already handed out to someone else.
    pub win_taken: bool,
}

/// What meta `mg` asks of the store besides a plain read.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetaGetArgs {
    /// Copy the value out.
    pub value: bool,
    /// Record the access (`mg` without `u`).
    pub note_access: bool,
    /// `N`: on a miss, create an empty item with this exptime and win.
    pub vivify: Option<i64>,
    /// `T`: a new exptime for the item.
    pub touch: Option<i64>,
    /// `T` comes after `N` on the line (it then sets a created item's expiry).
    pub touch_after_vivify: bool,
    /// `R`: win if the item expires before this exptime would.
    pub recache: Option<i64>,
    /// `T` comes before `R` on the line (`R` then judges the new expiry).
    pub touch_before_recache: bool,
}

/// What `meta_get` learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaGet {
    /// The item as it is now (after any `T`); `expiry` is the new one.
    pub item: ItemMeta,
    /// A win token had already been handed out (meta `Z`).
    pub token_sent: bool,
    /// This request won the token (meta `W`).
    pub win: bool,
    /// `N` created the item.
    pub created: bool,
    /// Absolute expiry before `T`/`N` changed it (0 for a created item).
    pub expiry_before: u32,
    /// The store's clock at the read (for relative times).
    pub now: u32,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOpts {
    /// Copy the value out (meta `mg` without `v` does not).
    pub value: bool,
    /// Record the access (off on replicas: reads change nothing there).
    pub note_access: bool,
}

/// Counters the store keeps itself (the workers keep per-command counters).
#[derive(Default)]
pub struct StoreStats {
    pub curr_items: AtomicU64,
    pub total_items: AtomicU64,
    pub bytes: AtomicU64,
    pub evictions: AtomicU64,
    pub evicted_unfetched: AtomicU64,
    pub expired_unfetched: AtomicU64,
    pub reclaimed: AtomicU64,
    pub records_appended: AtomicU64,
    /// Writes whose `--sync-replicas` wait timed out.
    pub sync_timeouts: AtomicU64,
}

/// A point-in-time copy of the store's state for `stats`.
#[derive(Clone, Debug)]
pub struct StoreSnapshot {
    pub curr_items: u64,
    pub total_items: u64,
    pub bytes: u64,
    pub evictions: u64,
    pub evicted_unfetched: u64,
    pub expired_unfetched: u64,
    pub reclaimed: u64,
    pub records_appended: u64,
    pub sync_timeouts: u64,
    pub log_capacity: u64,
    pub log_head: u64,
    pub log_tail: u64,
    pub epoch: u64,
    pub backing: Backing,
    pub limit_maxbytes: u64,
    pub max_item_size: u64,
}

/// The single writer's state, behind the write lock.
struct Writer {
    log: LogWriter,
    next_cas: u64,
    /// Reused for read-modify-write values (append, prepend, incr): the new
    /// record is assembled once, never allocated twice.
    scratch: Vec<u8>,
}

pub struct StoreConfig {
    pub memory_bytes: usize,
    pub max_item_size: usize,
    pub hugepages: HugePages,
}

pub struct Store {
    log: Arc<Log>,
    writer: Mutex<Writer>,
    index: Index,
    pub clock: Clock,
    max_item_size: usize,
    limit_maxbytes: u64,
    read_only: AtomicBool,
    /// A delayed flush_all: items written before this time die at it (0 = none).
    flush_at: AtomicU32,
    /// Set when a higher epoch fenced this primary.
    fenced: AtomicBool,
    /// `--sync-replicas`: waits until replicas hold everything below the
    /// given position; false on timeout. Installed once at start.
    sync_wait: std::sync::OnceLock<Box<dyn Fn(u64) -> bool + Send + Sync>>,
    stats: StoreStats,
}

/// Key rules shared by every protocol: 1..=250 bytes, no spaces or control chars.
pub fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.iter().all(|&b| b > b' ' && b != 0x7f)
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
        let log = Arc::new(Log::create(region, 1));
        if (cfg.max_item_size as u64) + record::HEADER_LEN as u64 + MAX_KEY_LEN as u64 > log.capacity() / 2 {
            crate::bail!(
                "-I {} bytes is too large for a {} MiB log: an item may use at most half of it; raise -m or lower -I",
                cfg.max_item_size,
                cfg.memory_bytes >> 20
            );
        }
        let writer = Writer { log: LogWriter::new(log.clone()), next_cas: 1, scratch: Vec::new() };
        Ok(Store {
            log,
            writer: Mutex::new(writer),
            index: Index::new(),
            clock: Clock::default(),
            max_item_size: cfg.max_item_size,
            limit_maxbytes: cfg.memory_bytes as u64,
            read_only: AtomicBool::new(false),
            flush_at: AtomicU32::new(0),
            fenced: AtomicBool::new(false),
            sync_wait: std::sync::OnceLock::new(),
            stats: StoreStats::default(),
        })
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn max_item_size(&self) -> usize {
        self.max_item_size
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

    /// Refuse writes from now on: a newer primary exists.
    pub fn fence(&self) {
        self.fenced.store(true, Ordering::Release);
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Install the `--sync-replicas` wait (once, before serving).
    pub fn set_sync_wait(&self, f: Box<dyn Fn(u64) -> bool + Send + Sync>) {
        let _ = self.sync_wait.set(f);
    }

    /// After a write whose records end at `end`: wait for the replicas the
    /// operator asked for. Called without the write lock held.
    fn replicated(&self, end: u64) -> std::result::Result<(), StoreError> {
        match self.sync_wait.get() {
            Some(wait) if !wait(end) => {
                self.stats.sync_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::NotReplicated)
            }
            _ => Ok(()),
        }
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

    /// Whether the record is visible at `now` (not expired, not flushed).
    fn is_live(&self, h: &Header, now: u32) -> bool {
        if h.expiry != 0 && h.expiry <= now {
            return false;
        }
        let f = self.flush_at.load(Ordering::Relaxed);
        !(f != 0 && now >= f && h.time < f)
    }

    /// The live record for `key`, read under the writer lock (so it cannot
    /// change or be reclaimed while the caller decides).
    fn live_locked(&self, key: &[u8], now: u32) -> Option<(u64, Header)> {
        let pos = self.index.position(key)?;
        let h = self.log.read_header(pos)?;
        if self.is_live(&h, now) {
            Some((pos, h))
        } else {
            None
        }
    }

    /// Append an item record and point the index at it. Caller holds the lock.
    #[allow(clippy::too_many_arguments)]
    fn put_locked(
        &self,
        w: &mut Writer,
        kind: Kind,
        key: &[u8],
        value: &[&[u8]],
        flags: u32,
        expiry: u32,
        cas: u64,
        time: u32,
        item_flags: u8,
    ) -> std::result::Result<u64, StoreError> {
        let rec = NewRecord { kind, item_flags, client_flags: flags, cas, expiry, time };
        let pos = self.append_locked(w, rec, key, value)?;
        if kind.is_item() {
            let len = w.log.head() - pos;
            let old = self.index.insert(key, Entry::new(pos, len as u32, expiry, time));
            self.account_replace(old, len);
            self.stats.total_items.fetch_add(1, Ordering::Relaxed);
        }
        Ok(pos)
    }

    fn account_replace(&self, old: Option<Entry>, new_len: u64) {
        match old {
            Some(o) => {
                self.stats.bytes.fetch_sub(o.len as u64, Ordering::Relaxed);
            }
            None => {
                self.stats.curr_items.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.stats.bytes.fetch_add(new_len, Ordering::Relaxed);
    }

    fn account_remove(&self, old: &Entry) {
        self.stats.curr_items.fetch_sub(1, Ordering::Relaxed);
        self.stats.bytes.fetch_sub(old.len as u64, Ordering::Relaxed);
    }

    fn append_locked(
        &self,
        w: &mut Writer,
        rec: NewRecord,
        key: &[u8],
        value: &[&[u8]],
    ) -> std::result::Result<u64, StoreError> {
        let now = rec.time;
        let index = &self.index;
        let stats = &self.stats;
        let mut reclaim = |pos: u64, h: &Header, key: &[u8]| {
            stats.reclaimed.fetch_add(1, Ordering::Relaxed);
            if let Some(e) = index.remove_if_at(key, pos) {
                stats.curr_items.fetch_sub(1, Ordering::Relaxed);
                stats.bytes.fetch_sub(e.len as u64, Ordering::Relaxed);
                let fetched = e.fetched.load(Ordering::Relaxed);
                if self.is_live(h, now) {
                    stats.evictions.fetch_add(1, Ordering::Relaxed);
                    if !fetched {
                        stats.evicted_unfetched.fetch_add(1, Ordering::Relaxed);
                    }
                } else if !fetched {
                    stats.expired_unfetched.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let pos = w.log.append(rec, key, value, &mut reclaim).map_err(|e| match e {
            AppendError::TooLarge => StoreError::TooLarge,
        })?;
        self.stats.records_appended.fetch_add(1, Ordering::Relaxed);
        if rec.cas != 0 {
            self.log.publish_max_cas(rec.cas);
        }
        Ok(pos)
    }

    /// Copy the value of the record at `pos` into the writer's reusable
    /// scratch buffer and lend it out, so a read-modify-write builds its new
    /// record without allocating; the caller gives it back (`w.scratch = v`)
    /// once the record is written.
    fn take_value(&self, w: &mut Writer, pos: u64, h: &Header) -> Vec<u8> {
        let mut v = std::mem::take(&mut w.scratch);
        v.clear();
        self.log.append_value(pos, h, &mut v);
        v
    }

    fn next_cas(w: &mut Writer) -> u64 {
        let c = w.next_cas;
        w.next_cas += 1;
        c
    }

    /// set, add, replace, append, prepend, cas.
    pub fn set(&self, a: &SetArgs) -> std::result::Result<SetOutcome, StoreError> {
        self.writable(a.key)?;
        if a.value.len() > self.max_item_size {
            return Err(StoreError::TooLarge);
        }
        let mut w = self.lock();
        let now = self.clock.now();
        let existing = self.live_locked(a.key, now);
        let mut item_flags = 0;
        if a.cas != 0 {
            match existing {
                None => return Ok(SetOutcome::NotFound),
                Some((_, h)) if h.cas != a.cas => {
                    if a.invalidate && a.cas < h.cas {
                        item_flags = ITEM_STALE;
                    } else {
                        return Ok(SetOutcome::Exists);
                    }
                }
                Some(_) => {}
            }
        }
        let cas = Self::next_cas(&mut w);
        match (a.mode, existing) {
            (SetMode::Add, Some(_)) => return Ok(SetOutcome::NotStored),
            (SetMode::Replace, None) => return Ok(SetOutcome::NotStored),
            (SetMode::Append | SetMode::Prepend, None) => {
                let Some(exptime) = a.vivify else { return Ok(SetOutcome::NotStored) };
                let expiry = absolute_expiry(exptime, now);
                self.put_locked(&mut w, Kind::Set, a.key, &[a.value], a.flags, expiry, cas, now, 0)?;
            }
            (SetMode::Append | SetMode::Prepend, Some((pos, h))) => {
                if h.value_len as usize + a.value.len() > self.max_item_size {
                    return Err(StoreError::TooLarge);
                }
                let old = self.take_value(&mut w, pos, &h);
                let parts: [&[u8]; 2] = if a.mode == SetMode::Append { [&old, a.value] } else { [a.value, &old] };
                // Flags and expiry stay the item's own, as memcached does; it
                // builds a new item, so the stale mark does not carry over.
                let r = self.put_locked(&mut w, Kind::Set, a.key, &parts, h.client_flags, h.expiry, cas, now, 0);
                w.scratch = old;
                r?;
            }
            _ => {
                // A stale store (`ms I` with an older CAS) keeps the item's
                // TTL, as memcached does; it only replaces the value.
                let expiry = match existing {
                    Some((_, h)) if item_flags == ITEM_STALE => h.expiry,
                    _ => absolute_expiry(a.exptime, now),
                };
                // `ms I` storing a stale value keeps a win token already out
                // (memcached copies ITEM_TOKEN_SENT), so no second client wins.
                let token_out = item_flags == ITEM_STALE
                    && self.index.read(a.key).get(a.key).map(|e| e.win_sent.load(Ordering::Relaxed)).unwrap_or(false);
                self.put_locked(&mut w, Kind::Set, a.key, &[a.value], a.flags, expiry, cas, now, item_flags)?;
                if token_out {
                    if let Some(e) = self.index.read(a.key).get(a.key) {
                        e.win_sent.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        w.next_cas = w.next_cas.max(cas + 1);
        let end = w.log.head();
        drop(w);
        self.replicated(end)?;
        Ok(SetOutcome::Stored { cas })
    }

    /// Read an item: `before_value` writes the protocol's header for it into
    /// `out`, then the value is copied after it (when `opts.value`).
    pub fn get(
        &self,
        key: &[u8],
        opts: ReadOpts,
        out: &mut Vec<u8>,
        before_value: impl FnOnce(&ItemMeta, &mut Vec<u8>),
    ) -> Option<ItemMeta> {
        self.read_item(key, opts, true, out, before_value)
    }

    /// Look `key` up and run `f` on its index entry and record header while
    /// the shard's read lock is held (so the record cannot be reclaimed under
    /// it). With `check_live`, an expired or flushed item is unlinked and
    /// reads as a miss.
    fn with_entry<R>(&self, key: &[u8], check_live: bool, f: impl FnOnce(&Entry, &Header, u32) -> R) -> Option<R> {
        let now = self.clock.now();
        let shard = self.index.read(key);
        let e = shard.get(key)?;
        let h = self.log.read_header(e.pos)?;
        if check_live && !self.is_live(&h, now) {
            let pos = e.pos;
            drop(shard);
            self.forget_dead(key, pos);
            return None;
        }
        Some(f(e, &h, now))
    }

    /// `get` with or without the liveness check (gat reads back the record it
    /// just wrote, which may already be expired by a negative exptime).
    fn read_item(
        &self,
        key: &[u8],
        opts: ReadOpts,
        check_live: bool,
        out: &mut Vec<u8>,
        before_value: impl FnOnce(&ItemMeta, &mut Vec<u8>),
    ) -> Option<ItemMeta> {
        self.with_entry(key, check_live, |e, h, now| {
            let meta = self.meta_of(h, e, opts.note_access && !self.is_read_only(), now);
            before_value(&meta, out);
            if opts.value {
                self.log.append_value(e.pos, h, out);
            }
            meta
        })
    }

    fn meta_of(&self, h: &Header, e: &Entry, note: bool, now: u32) -> ItemMeta {
        let last_access = e.last_access.load(Ordering::Relaxed);
        let fetched = e.fetched.load(Ordering::Relaxed);
        let stale = h.item_flags & ITEM_STALE != 0;
        // A plain read never hands out a win token (memcached: only `mg`
        // does, see `meta_get`); it only reports whether one is out.
        let win = false;
        let win_taken = e.win_sent.load(Ordering::Relaxed);
        if note {
            e.touch_access(now);
        }
        ItemMeta {
            flags: h.client_flags,
            cas: h.cas,
            expiry: h.expiry,
            value_len: h.value_len,
            last_access,
            fetched,
            stale,
            win,
            win_taken,
        }
    }

    /// Unlink an expired or flushed item found by a reader (index only: the
    /// record stays until the cleaner reaches it; a replica expires its own).
    fn forget_dead(&self, key: &[u8], pos: u64) {
        if let Some(e) = self.index.remove_if_at(key, pos) {
            self.account_remove(&e);
            if !e.fetched.load(Ordering::Relaxed) {
                self.stats.expired_unfetched.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// gat / gats: read and set a new expiry in one step (a Touch record).
    pub fn get_and_touch(
        &self,
        key: &[u8],
        exptime: i64,
        opts: ReadOpts,
        out: &mut Vec<u8>,
        before_value: impl FnOnce(&ItemMeta, &mut Vec<u8>),
    ) -> std::result::Result<Option<ItemMeta>, StoreError> {
        self.writable(key)?;
        let mut w = self.lock();
        let now = self.clock.now();
        let Some((pos, h)) = self.live_locked(key, now) else { return Ok(None) };
        self.retouch_locked(&mut w, key, pos, &h, exptime, now)?;
        // Read back the touch record while still holding the writer (lock
        // order writer, then shard): memcached returns the item even when the
        // new exptime expires it at once.
        Ok(self.read_item(key, opts, false, out, before_value))
    }

    /// Meta `mg`: one read with the extras `mg` may ask for, done as one
    /// step: create on miss (`N`), new expiry (`T`), and the win-token
    /// protocol (`N` created, `R` recache, stale items). `before_value`
    /// writes the reply's header; the value follows when `a.value`.
    /// Read-only stores refuse `T` and never create (a miss stays a miss).
    pub fn meta_get(
        &self,
        key: &[u8],
        a: &MetaGetArgs,
        out: &mut Vec<u8>,
        before_value: impl FnOnce(&MetaGet, &mut Vec<u8>),
    ) -> std::result::Result<Option<MetaGet>, StoreError> {
        let read_only = self.is_read_only();
        if a.touch.is_some() && read_only {
            return Err(StoreError::ReadOnly);
        }
        if (a.vivify.is_none() && a.touch.is_none()) || read_only {
            // Nothing to write: the lock-free read path.
            return Ok(self.meta_read(key, a, false, None, true, out, before_value));
        }
        self.writable(key)?;
        let mut w = self.lock();
        let now = self.clock.now();
        match self.live_locked(key, now) {
            None => {
                let Some(vivify) = a.vivify else { return Ok(None) };
                // An empty placeholder the winner fills in (memcached: a
                // zero-length item with flags 0).
                let exptime = match a.touch {
                    Some(t) if a.touch_after_vivify => t,
                    _ => vivify,
                };
                let cas = Self::next_cas(&mut w);
                let expiry = absolute_expiry(exptime, now);
                self.put_locked(&mut w, Kind::Set, key, &[b""], 0, expiry, cas, now, 0)?;
                Ok(self.meta_read(key, a, true, Some(0), false, out, before_value))
            }
            Some((pos, h)) => {
                if let Some(t) = a.touch {
                    self.retouch_locked(&mut w, key, pos, &h, t, now)?;
                }
                // Still under the writer lock: read back what we just wrote,
                // even if the new expiry already ended it (as gat does).
                Ok(self.meta_read(key, a, false, Some(h.expiry), false, out, before_value))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn meta_read(
        &self,
        key: &[u8],
        a: &MetaGetArgs,
        created: bool,
        expiry_before: Option<u32>,
        check_live: bool,
        out: &mut Vec<u8>,
        before_value: impl FnOnce(&MetaGet, &mut Vec<u8>),
    ) -> Option<MetaGet> {
        self.with_entry(key, check_live, |e, h, now| {
            let note = a.note_access && !self.is_read_only();
            let item = self.meta_of(h, e, note, now);
            let token_sent = e.win_sent.load(Ordering::Relaxed);
            let mut want_win = created;
            if let Some(r) = a.recache {
                // memcached: win if the item expires sooner than the recache time.
                let expiry = if a.touch_before_recache { h.expiry } else { expiry_before.unwrap_or(h.expiry) };
                if !token_sent && !created && expiry != 0 && expiry < absolute_expiry(r, now) {
                    want_win = true;
                }
            }
            if item.stale && !token_sent {
                want_win = true;
            }
            // Exactly one reader gets the token, even racing on another worker.
            let win = want_win
                && !self.is_read_only()
                && e.win_sent.compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed).is_ok();
            let m = MetaGet { item, token_sent, win, created, expiry_before: expiry_before.unwrap_or(h.expiry), now };
            before_value(&m, out);
            if a.value {
                self.log.append_value(e.pos, h, out);
            }
            m
        })
    }

    /// touch: a new expiry for an existing item.
    pub fn touch(&self, key: &[u8], exptime: i64) -> std::result::Result<bool, StoreError> {
        self.writable(key)?;
        let mut w = self.lock();
        let now = self.clock.now();
        let Some((pos, h)) = self.live_locked(key, now) else { return Ok(false) };
        self.retouch_locked(&mut w, key, pos, &h, exptime, now)?;
        // memcached's touch finds the item with DO_UPDATE, which marks it fetched.
        if let Some(e) = self.index.read(key).get(key) {
            e.fetched.store(true, Ordering::Relaxed);
        }
        let end = w.log.head();
        drop(w);
        self.replicated(end)?;
        Ok(true)
    }

    /// (fetched, win token out) of the key's index entry.
    fn entry_state(&self, key: &[u8]) -> (bool, bool) {
        self.index
            .read(key)
            .get(key)
            .map(|e| (e.fetched.load(Ordering::Relaxed), e.win_sent.load(Ordering::Relaxed)))
            .unwrap_or((false, false))
    }

    /// Carry access state over to a key's new entry (an in-place change in
    /// memcached's terms).
    fn set_entry_state(&self, key: &[u8], fetched: bool, win_sent: bool) {
        if let Some(e) = self.index.read(key).get(key) {
            e.fetched.store(fetched, Ordering::Relaxed);
            e.win_sent.store(win_sent, Ordering::Relaxed);
        }
    }

    /// Re-append the item at `pos` with a new expiry. CAS is unchanged, as
    /// memcached's touch leaves it.
    fn retouch_locked(
        &self,
        w: &mut Writer,
        key: &[u8],
        pos: u64,
        h: &Header,
        exptime: i64,
        now: u32,
    ) -> std::result::Result<(), StoreError> {
        let value = self.take_value(w, pos, h);
        let (fetched, win_sent) = self.entry_state(key);
        let expiry = absolute_expiry(exptime, now);
        let r = self.put_locked(w, Kind::Touch, key, &[&value], h.client_flags, expiry, h.cas, h.time, h.item_flags);
        w.scratch = value;
        r?;
        // A touch changes the expiry only (memcached edits the item in
        // place): the access state and a handed-out win token stay.
        if fetched || win_sent {
            if let Some(e) = self.index.read(key).get(key) {
                e.fetched.store(fetched, Ordering::Relaxed);
                e.win_sent.store(win_sent, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// delete, optionally only if the CAS matches.
    pub fn delete(&self, key: &[u8], cas: u64) -> std::result::Result<DeleteOutcome, StoreError> {
        self.writable(key)?;
        let mut w = self.lock();
        let now = self.clock.now();
        let Some((_, h)) = self.live_locked(key, now) else { return Ok(DeleteOutcome::NotFound) };
        if cas != 0 && cas != h.cas {
            return Ok(DeleteOutcome::Exists);
        }
        self.delete_locked(&mut w, key, now)?;
        let end = w.log.head();
        drop(w);
        self.replicated(end)?;
        Ok(DeleteOutcome::Deleted)
    }

    fn delete_locked(&self, w: &mut Writer, key: &[u8], now: u32) -> std::result::Result<(), StoreError> {
        let rec = NewRecord { kind: Kind::Delete, item_flags: 0, client_flags: 0, cas: 0, expiry: 0, time: now };
        self.append_locked(w, rec, key, &[])?;
        if let Some(old) = self.index.remove(key) {
            self.account_remove(&old);
        }
        Ok(())
    }

    /// Meta `md I`: mark stale instead of removing (a Set record with the
    /// stale flag), optionally with a new expiry.
    pub fn invalidate(
        &self,
        key: &[u8],
        cas: u64,
        exptime: Option<i64>,
    ) -> std::result::Result<DeleteOutcome, StoreError> {
        self.writable(key)?;
        let mut w = self.lock();
        let now = self.clock.now();
        let Some((pos, h)) = self.live_locked(key, now) else { return Ok(DeleteOutcome::NotFound) };
        if cas != 0 && cas != h.cas {
            return Ok(DeleteOutcome::Exists);
        }
        let value = self.take_value(&mut w, pos, &h);
        let expiry = exptime.map(|t| absolute_expiry(t, now)).unwrap_or(h.expiry);
        // memcached gives an invalidated item a new CAS, so a writer holding
        // the old one can only store it as stale (`ms I`).
        let cas = Self::next_cas(&mut w);
        let fetched = self.entry_state(key).0;
        let r = self.put_locked(&mut w, Kind::Set, key, &[&value], h.client_flags, expiry, cas, now, ITEM_STALE);
        w.scratch = value;
        r?;
        // memcached marks the item in place: it stays fetched; the win token
        // is cleared so the next reader can win.
        self.set_entry_state(key, fetched, false);
        Ok(DeleteOutcome::Deleted)
    }

    /// incr / decr on a decimal u64: incr wraps at 2^64, decr stops at 0.
    pub fn arith(&self, a: &ArithArgs) -> std::result::Result<ArithOutcome, StoreError> {
        self.arith_ex(a).map(|(o, _)| o)
    }

    /// `arith`, also telling the item's absolute expiry before and after
    /// (meta `ma t` reports either, depending on where `T`/`N` stand). A
    /// created item's "before" is 0, as memcached allocates it without one.
    pub fn arith_ex(&self, a: &ArithArgs) -> std::result::Result<(ArithOutcome, Option<ArithExpiry>), StoreError> {
        self.writable(a.key)?;
        let mut w = self.lock();
        let now = self.clock.now();
        let Some((pos, h)) = self.live_locked(a.key, now) else {
            let Some((initial, exptime)) = a.initial else { return Ok((ArithOutcome::NotFound, None)) };
            let cas = Self::next_cas(&mut w);
            let digits = initial.to_string();
            let expiry = absolute_expiry(exptime, now);
            self.put_locked(&mut w, Kind::Set, a.key, &[digits.as_bytes()], 0, expiry, cas, now, 0)?;
            return Ok((
                ArithOutcome::Value { value: initial, cas },
                Some(ArithExpiry { before: 0, after: expiry, created: true }),
            ));
        };
        // memcached refuses an empty value before it looks at the CAS.
        if h.value_len == 0 {
            return Ok((ArithOutcome::NonNumeric, None));
        }
        if a.cas != 0 && a.cas != h.cas {
            return Ok((ArithOutcome::Exists, None));
        }
        let mut value = self.take_value(&mut w, pos, &h);
        let parsed = parse_counter(&value);
        let Some(current) = parsed else {
            w.scratch = value;
            return Ok((ArithOutcome::NonNumeric, None));
        };
        let new = if a.incr { current.wrapping_add(a.delta) } else { current.saturating_sub(a.delta) };
        let old_len = value.len();
        value.clear();
        value.extend_from_slice(new.to_string().as_bytes());
        // memcached rewrites a shrinking number in place, padded with spaces to
        // the old length; clients see those spaces, so we keep them too.
        if value.len() < old_len {
            value.resize(old_len, b' ');
        }
        let expiry = a.new_exptime.map(|t| absolute_expiry(t, now)).unwrap_or(h.expiry);
        let cas = Self::next_cas(&mut w);
        // memcached updates a number that still fits in place (keeping the
        // item's stale, fetched and token state) and copies a longer one
        // into a fresh item.
        let in_place = value.len() <= old_len;
        let (fetched, win_sent) = self.entry_state(a.key);
        let item_flags = if in_place { h.item_flags } else { 0 };
        let r = self.put_locked(&mut w, Kind::Set, a.key, &[&value], h.client_flags, expiry, cas, now, item_flags);
        w.scratch = value;
        r?;
        if in_place {
            self.set_entry_state(a.key, fetched, win_sent);
        }
        let end = w.log.head();
        drop(w);
        self.replicated(end)?;
        Ok((
            ArithOutcome::Value { value: new, cas },
            Some(ArithExpiry { before: h.expiry, after: expiry, created: false }),
        ))
    }

    /// flush_all [delay]: 0 drops everything now; a delay makes everything
    /// written before then die at that time.
    pub fn flush_all(&self, delay: i64) -> std::result::Result<(), StoreError> {
        self.check_role()?;
        let mut w = self.lock();
        let now = self.clock.now();
        let at = if delay > 0 { absolute_expiry(delay, now) } else { 0 };
        let rec = NewRecord { kind: Kind::Flush, item_flags: 0, client_flags: 0, cas: 0, expiry: at, time: now };
        self.append_locked(&mut w, rec, b"", &[])?;
        self.apply_flush(at, now);
        let end = w.log.head();
        drop(w);
        self.replicated(end)
    }

    fn apply_flush(&self, at: u32, now: u32) {
        if at == 0 || at <= now {
            self.flush_at.store(0, Ordering::Relaxed);
            self.index.clear();
            self.stats.curr_items.store(0, Ordering::Relaxed);
            self.stats.bytes.store(0, Ordering::Relaxed);
        } else {
            self.flush_at.store(at, Ordering::Relaxed);
        }
    }

    /// A replica applies a record validated from its primary's log: the raw
    /// bytes go into its own log at the same position (so the two logs stay
    /// byte-for-byte alike and a promoted replica continues the numbering),
    /// then the index follows the record's meaning.
    pub fn apply_raw(&self, bytes: &[u8], r: &Record) -> std::result::Result<(), ApplyError> {
        let mut w = self.lock();
        let h = &r.header;
        let pos = h.position;
        let index = &self.index;
        let stats = &self.stats;
        let mut reclaim = |p: u64, _h: &Header, key: &[u8]| {
            stats.reclaimed.fetch_add(1, Ordering::Relaxed);
            if let Some(e) = index.remove_if_at(key, p) {
                stats.curr_items.fetch_sub(1, Ordering::Relaxed);
                stats.bytes.fetch_sub(e.len as u64, Ordering::Relaxed);
            }
        };
        w.log.append_raw(pos, &bytes[..h.total_len() as usize], &mut reclaim).map_err(ApplyError::Log)?;
        self.stats.records_appended.fetch_add(1, Ordering::Relaxed);
        w.next_cas = w.next_cas.max(h.cas + 1);
        match h.kind {
            Kind::Set | Kind::Touch => {
                let len = h.total_len();
                let old = self.index.insert(r.key, Entry::new(pos, len as u32, h.expiry, h.time));
                self.account_replace(old, len);
                self.stats.total_items.fetch_add(1, Ordering::Relaxed);
            }
            Kind::Delete => {
                if let Some(old) = self.index.remove(r.key) {
                    self.account_remove(&old);
                }
            }
            Kind::Flush => self.apply_flush(h.expiry, self.clock.now()),
            Kind::Padding => {}
        }
        Ok(())
    }

    /// Forget everything and restart this (replica) log at `pos`: what a
    /// replica does when it joins late, is lapped, or its primary changed
    /// history. Everything live on the primary lies in [its tail, head), so
    /// replaying that window rebuilds the same state.
    pub fn resync_at(&self, pos: u64) {
        let mut w = self.lock();
        self.index.clear();
        self.stats.curr_items.store(0, Ordering::Relaxed);
        self.stats.bytes.store(0, Ordering::Relaxed);
        self.flush_at.store(0, Ordering::Relaxed);
        w.log.reset_to(pos);
    }

    /// Become a primary at `epoch` (promotion): CAS continues above anything
    /// seen, records carry the new epoch, writes are accepted.
    pub fn promote(&self, epoch: u64) {
        let mut w = self.lock();
        w.log.begin_epoch(epoch);
        self.fenced.store(false, Ordering::Release);
        self.read_only.store(false, Ordering::Release);
    }

    /// A replica adopts the epoch of the primary it follows, so its own
    /// control block tells its followers (and a later promotion) the truth.
    pub fn adopt_epoch(&self, epoch: u64, epoch_start: u64) {
        let mut w = self.lock();
        if w.log.epoch() != epoch {
            w.log.set_epoch(epoch);
            self.log.set_epoch_start(epoch_start);
        }
    }

    /// The epoch this store's log carries.
    pub fn epoch(&self) -> u64 {
        self.log.epoch()
    }

    pub fn snapshot(&self) -> StoreSnapshot {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreSnapshot {
            curr_items: l(&s.curr_items),
            total_items: l(&s.total_items),
            bytes: l(&s.bytes),
            evictions: l(&s.evictions),
            evicted_unfetched: l(&s.evicted_unfetched),
            expired_unfetched: l(&s.expired_unfetched),
            reclaimed: l(&s.reclaimed),
            records_appended: l(&s.records_appended),
            sync_timeouts: l(&s.sync_timeouts),
            log_capacity: self.log.capacity(),
            log_head: self.log.head(),
            log_tail: self.log.tail(),
            epoch: self.log.epoch(),
            backing: self.log.region().backing(),
            limit_maxbytes: self.limit_maxbytes,
            max_item_size: self.max_item_size as u64,
        }
    }
}

/// memcached's counter parse (its `safe_strtoull` over the stored value,
/// which is followed by "\r\n"): optional leading white space and sign,
/// decimal digits that fit a u64, then the end or white space (anything may
/// follow that, e.g. the spaces a shrinking in-place rewrite leaves). A minus
/// sign is refused unless the number is zero.
pub fn parse_counter(v: &[u8]) -> Option<u64> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut i = v.iter().take_while(|&&b| is_space(b)).count();
    let neg = v.get(i) == Some(&b'-');
    if matches!(v.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let start = i;
    let mut n: u64 = 0;
    while let Some(d) = v.get(i).filter(|b| b.is_ascii_digit()) {
        n = n.checked_mul(10)?.checked_add((d - b'0') as u64)?;
        i += 1;
    }
    if i == start || (neg && n != 0) {
        return None;
    }
    // The stored value is followed by "\r\n", so its end counts as white space.
    match v.get(i) {
        None => Some(n),
        Some(&b) if is_space(b) => Some(n),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(mb: usize) -> Store {
        Store::new(&StoreConfig { memory_bytes: mb << 20, max_item_size: 256 << 10, hugepages: HugePages::Off })
            .unwrap()
    }

    fn get(s: &Store, key: &[u8]) -> Option<(Vec<u8>, ItemMeta)> {
        let mut out = Vec::new();
        let m = s.get(key, ReadOpts { value: true, note_access: true }, &mut out, |_, _| {})?;
        Some((out, m))
    }

    fn set(s: &Store, mode: SetMode, key: &[u8], v: &[u8]) -> SetOutcome {
        s.set(&SetArgs::new(mode, key, v, 7, 0)).unwrap()
    }

    #[test]
    fn set_get_replace_add() {
        let s = store(4);
        assert!(matches!(set(&s, SetMode::Set, b"k", b"v1"), SetOutcome::Stored { .. }));
        assert_eq!(get(&s, b"k").unwrap().0, b"v1");
        assert_eq!(get(&s, b"k").unwrap().1.flags, 7);
        assert_eq!(set(&s, SetMode::Add, b"k", b"x"), SetOutcome::NotStored);
        assert_eq!(set(&s, SetMode::Replace, b"nope", b"x"), SetOutcome::NotStored);
        assert!(matches!(set(&s, SetMode::Replace, b"k", b"v2"), SetOutcome::Stored { .. }));
        assert_eq!(get(&s, b"k").unwrap().0, b"v2");
        assert_eq!(s.snapshot().curr_items, 1);
    }

    #[test]
    fn append_prepend_keep_flags_and_allocate_one_record() {
        let s = store(4);
        s.set(&SetArgs::new(SetMode::Set, b"k", b"mid", 42, 0)).unwrap();
        let before = s.snapshot().records_appended;
        s.set(&SetArgs::new(SetMode::Append, b"k", b">", 1, 0)).unwrap();
        s.set(&SetArgs::new(SetMode::Prepend, b"k", b"<", 1, 0)).unwrap();
        assert_eq!(s.snapshot().records_appended - before, 2);
        let (v, m) = get(&s, b"k").unwrap();
        assert_eq!(v, b"<mid>");
        assert_eq!(m.flags, 42);
        assert_eq!(set(&s, SetMode::Append, b"missing", b"x"), SetOutcome::NotStored);
    }

    #[test]
    fn cas_rules() {
        let s = store(4);
        let SetOutcome::Stored { cas } = set(&s, SetMode::Set, b"k", b"a") else { panic!() };
        let mut a = SetArgs::new(SetMode::Set, b"k", b"b", 0, 0);
        a.cas = cas + 100;
        assert_eq!(s.set(&a).unwrap(), SetOutcome::Exists);
        a.cas = cas;
        let SetOutcome::Stored { cas: c2 } = s.set(&a).unwrap() else { panic!() };
        assert!(c2 > cas);
        assert_eq!(s.set(&a).unwrap(), SetOutcome::Exists, "old cas must not win twice");
        a.key = b"missing";
        assert_eq!(s.set(&a).unwrap(), SetOutcome::NotFound);
        assert_eq!(get(&s, b"k").unwrap().1.cas, c2);
    }

    #[test]
    fn expiry_relative_absolute_negative() {
        let s = store(4);
        s.set(&SetArgs::new(SetMode::Set, b"rel", b"v", 0, 10)).unwrap();
        let abs = s.clock.now() as i64 + 100;
        s.set(&SetArgs::new(SetMode::Set, b"abs", b"v", 0, abs)).unwrap();
        s.set(&SetArgs::new(SetMode::Set, b"neg", b"v", 0, -1)).unwrap();
        assert!(get(&s, b"neg").is_none());
        assert!(get(&s, b"rel").is_some());
        s.clock.advance(11);
        assert!(get(&s, b"rel").is_none());
        assert!(get(&s, b"abs").is_some());
        s.clock.advance(100);
        assert!(get(&s, b"abs").is_none());
        assert_eq!(s.snapshot().curr_items, 0);
    }

    #[test]
    fn touch_and_gat_keep_value_and_cas() {
        let s = store(4);
        let SetOutcome::Stored { cas } = s.set(&SetArgs::new(SetMode::Set, b"k", b"v", 3, 5)).unwrap() else {
            panic!()
        };
        assert!(s.touch(b"k", 100).unwrap());
        s.clock.advance(10);
        let (v, m) = get(&s, b"k").unwrap();
        assert_eq!((v.as_slice(), m.cas, m.flags), (&b"v"[..], cas, 3));
        let mut out = Vec::new();
        let m = s.get_and_touch(b"k", -1, ReadOpts { value: true, note_access: true }, &mut out, |_, _| {}).unwrap();
        assert_eq!((m.unwrap().cas, out.as_slice()), (cas, &b"v"[..]), "gat returns the item it touched");
        assert!(get(&s, b"k").is_none(), "gat with negative exptime expires it");
        assert!(!s.touch(b"missing", 1).unwrap());
    }

    #[test]
    fn incr_decr_wrap_floor_and_space_padding() {
        let s = store(4);
        set(&s, SetMode::Set, b"n", b"10");
        let dec = |d| ArithArgs { key: b"n", incr: false, delta: d, cas: 0, initial: None, new_exptime: None };
        assert!(matches!(s.arith(&dec(1)).unwrap(), ArithOutcome::Value { value: 9, .. }));
        assert_eq!(get(&s, b"n").unwrap().0, b"9 ");
        assert!(matches!(s.arith(&dec(100)).unwrap(), ArithOutcome::Value { value: 0, .. }));
        set(&s, SetMode::Set, b"n", u64::MAX.to_string().as_bytes());
        let inc = ArithArgs { incr: true, delta: 2, ..dec(0) };
        assert!(matches!(s.arith(&inc).unwrap(), ArithOutcome::Value { value: 1, .. }));
        set(&s, SetMode::Set, b"n", b"abc");
        assert_eq!(s.arith(&inc).unwrap(), ArithOutcome::NonNumeric);
        for (v, want) in [
            (&b" 12"[..], Some(12)),
            (b"0 21", Some(0)),
            (b"+7", Some(7)),
            (b"-0", Some(0)),
            (b"-3", None),
            (b"12abc", None),
            (b"", None),
            (b"99999999999999999999", None),
        ] {
            assert_eq!(parse_counter(v), want, "{:?}", String::from_utf8_lossy(v));
        }
        let miss = ArithArgs { key: b"nokey", ..inc };
        assert_eq!(s.arith(&miss).unwrap(), ArithOutcome::NotFound);
    }

    #[test]
    fn delete_and_flush() {
        let s = store(4);
        set(&s, SetMode::Set, b"a", b"1");
        set(&s, SetMode::Set, b"b", b"2");
        assert_eq!(s.delete(b"a", 0).unwrap(), DeleteOutcome::Deleted);
        assert_eq!(s.delete(b"a", 0).unwrap(), DeleteOutcome::NotFound);
        s.flush_all(0).unwrap();
        assert!(get(&s, b"b").is_none());
        set(&s, SetMode::Set, b"c", b"3");
        assert!(get(&s, b"c").is_some(), "a set right after flush_all survives");
        s.flush_all(5).unwrap();
        assert!(get(&s, b"c").is_some());
        s.clock.advance(6);
        assert!(get(&s, b"c").is_none());
        set(&s, SetMode::Set, b"d", b"4");
        assert!(get(&s, b"d").is_some(), "written after the delayed flush fired");
    }

    #[test]
    fn writing_three_times_memory_keeps_newest_and_serves() {
        let s = store(4);
        let value = vec![b'x'; 1000];
        let n = 3 * (4 << 20) / 1000;
        for i in 0..n {
            let key = format!("key:{i}");
            assert!(matches!(set(&s, SetMode::Set, key.as_bytes(), &value), SetOutcome::Stored { .. }));
        }
        let snap = s.snapshot();
        assert!(snap.evictions > 0);
        assert!(snap.bytes <= snap.log_capacity);
        // The newest items are all there; the oldest are gone.
        for i in n - 1000..n {
            assert_eq!(get(&s, format!("key:{i}").as_bytes()).unwrap().0.len(), 1000);
        }
        assert!(get(&s, b"key:0").is_none());
        assert_eq!(snap.curr_items as usize, s.index().len());
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

    #[test]
    fn bad_keys_and_sizes_change_nothing() {
        let s = store(4);
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, &[b'a'; 251], b"v", 0, 0)), Err(StoreError::BadKey));
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"a b", b"v", 0, 0)), Err(StoreError::BadKey));
        let big = vec![0u8; (256 << 10) + 1];
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"k", &big, 0, 0)), Err(StoreError::TooLarge));
        assert_eq!(s.snapshot().records_appended, 0);
    }

    /// Copy every record of `p`'s log from `from` into `r`, as a replica does.
    fn mirror(p: &Store, r: &Store, from: u64) -> u64 {
        let log = p.log();
        let mut pos = from;
        let head = log.head();
        while pos < head {
            pos = log.skip_gap(pos);
            if pos >= head {
                break;
            }
            let mut buf = vec![0u8; log.room_to_end(pos).min(head - pos) as usize];
            log.read_span(pos, &mut buf);
            let rec = record::validate(&buf, pos).unwrap();
            r.apply_raw(&buf, &rec).unwrap();
            pos += rec.header.total_len();
        }
        pos
    }

    #[test]
    fn replica_apply_reproduces_primary_state_byte_for_byte() {
        let p = store(4);
        let r = store(4);
        set(&p, SetMode::Set, b"a", b"1");
        set(&p, SetMode::Set, b"b", b"2");
        set(&p, SetMode::Append, b"a", b"+");
        p.delete(b"b", 0).unwrap();
        p.touch(b"a", 1000).unwrap();
        let end = mirror(&p, &r, 0);
        assert_eq!(end, p.log().head());
        assert_eq!(r.log().head(), p.log().head());
        let (pv, pm) = get(&p, b"a").unwrap();
        let (rv, rm) = get(&r, b"a").unwrap();
        assert_eq!(pv, rv);
        assert_eq!((pm.cas, pm.expiry, pm.flags), (rm.cas, rm.expiry, rm.flags));
        assert!(get(&r, b"b").is_none());
        let mut a = vec![0u8; end as usize];
        let mut b = vec![0u8; end as usize];
        p.log().read_span(0, &mut a);
        r.log().read_span(0, &mut b);
        assert!(a == b, "logs differ");
    }

    #[test]
    fn replica_follows_through_wraps_and_resyncs_from_tail() {
        let p = store(4);
        let r = store(4);
        let value = vec![b'v'; 3000];
        let mut applied = 0;
        for round in 0..6 {
            for i in 0..500 {
                set(&p, SetMode::Set, format!("k{i}").as_bytes(), &value);
            }
            p.delete(b"k7", 0).unwrap();
            if round == 3 {
                // Lapped: skip to the primary's tail with a clean slate.
                r.resync_at(p.log().tail());
                applied = p.log().tail();
            }
            applied = mirror(&p, &r, applied.max(p.log().tail()));
        }
        assert_eq!(r.snapshot().curr_items, p.snapshot().curr_items);
        for i in 0..500 {
            let k = format!("k{i}");
            assert_eq!(get(&p, k.as_bytes()).map(|x| x.0), get(&r, k.as_bytes()).map(|x| x.0), "{k}");
        }
        // A promoted replica continues the numbering with a higher epoch.
        r.set_read_only(true);
        r.promote(2);
        let SetOutcome::Stored { .. } = set(&r, SetMode::Set, b"new", b"x") else { panic!() };
        assert!(r.log().head() > p.log().head());
        assert_eq!(r.epoch(), 2);
    }
}
