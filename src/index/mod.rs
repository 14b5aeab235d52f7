//! The index: key -> position of the record that holds the key's value.
//!
//! Local to each process (replicas rebuild theirs by applying records in
//! order). Sharded read-write locks: a get holds its shard's read lock while
//! it copies the value out of the log, and the cleaner must take the write
//! lock to unlink a record before its space is reused, so a reader never sees
//! bytes overwritten under it. Writers are already serialized by the store.
//!
//! Compact (issue 13): no key copy. An entry is 20 bytes in its shard's
//! table (`table`): 32 bits of the key's hash beside 16 bytes of the
//! record's position, the item's latest expiry, last access and flags. A candidate whose hash bits
//! match is confirmed against the key in its record, through [`Records`],
//! which the store implements over the log (so this module stays below the
//! log in the layer order). That read is safe under the shard's lock: an
//! indexed record is never reclaimed before the cleaner unlinks it under the
//! write lock. The record's length, for the `bytes` counter, is read the
//! same way when an entry leaves.
//!
//! Hashing: keys come from clients, so each is hashed once with SipHash-1-3
//! under random keys drawn per index (std's `RandomState`): nobody outside
//! the process can build keys that collide. The top 6 bits pick the shard,
//! the low 32 bits are the table's (home slot by multiply-shift, and the
//! bits compared before any record is read); the two never overlap.
//! Measured on this host (release, 200k keys): 31 ns per 10-byte key,
//! 41 ns per 30-byte key, 50 ns per 100-byte key.
//!
//! The index also keeps the `curr_items` and `bytes` counters: every change
//! to them happens under the write lock of the shard whose entry it
//! counts, so a reader unlinking an expired item and a `flush_all` clearing
//! everything can never count the same entry twice (the counters cannot
//! wrap below zero).

mod table;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use table::POSITION_LIMIT;
use table::{Slot, SlotValue, Table};

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// The records the index points at, as the index needs to see them: the
/// store implements it over the log. Called only for positions the index
/// holds, under the shard's lock (so the record is there and stays).
pub trait Records {
    /// Whether the record at `pos` is for `key`.
    fn key_is(&self, pos: u64, key: &[u8]) -> bool;
    /// Bytes the record at `pos` occupies.
    fn len_at(&self, pos: u64) -> u64;
    /// The key of the record at `pos`, into `out` (replacing what it held).
    fn key_into(&self, pos: u64, out: &mut Vec<u8>);
    /// Start loading the start of the record at `pos` (a hint, see
    /// `Index::prefetch_lookups`).
    fn prefetch(&self, _pos: u64) {}
}

/// An entry's fields, copied out of the index (what `insert` takes and what
/// `insert`, `remove` and `for_each` hand back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The record holding the item's value (a Set record).
    pub pos: u64,
    /// Bytes that record occupies (for the `bytes` stat).
    pub len: u32,
    /// The item's latest absolute expiry (0 = never): the value record's,
    /// or that of a later Touch record, which moves only this.
    pub expiry: u32,
    /// Unix seconds of the last read or write (meta `l`, `h`).
    pub last_access: u32,
    /// Fetched at least once since written (meta `h`, stats).
    pub fetched: bool,
    /// A meta win token was handed out for this stale/vivified item.
    pub win_sent: bool,
}

impl Entry {
    pub fn new(pos: u64, len: u32, expiry: u32, now: u32) -> Entry {
        Entry { pos, len, expiry, last_access: now, fetched: false, win_sent: false }
    }

    /// The entry with its access state set before anyone can see it (an
    /// in-place change in memcached's terms keeps the item's state).
    pub fn with_state(self, fetched: bool, win_sent: bool) -> Entry {
        Entry { fetched, win_sent, ..self }
    }

    fn of(v: SlotValue, len: u64) -> Entry {
        Entry {
            pos: v.pos,
            len: len as u32,
            expiry: v.expiry,
            last_access: v.last_access,
            fetched: v.fetched,
            win_sent: v.win_sent,
        }
    }

    fn slot_value(&self) -> SlotValue {
        SlotValue {
            pos: self.pos,
            expiry: self.expiry,
            last_access: self.last_access,
            fetched: self.fetched,
            win_sent: self.win_sent,
        }
    }
}

/// A key's entry, found, with its shard's read lock held: the record it
/// points at stays while this lives. Readers change only the access state
/// (and the writer, a touch's expiry).
pub struct Held<'a> {
    shard: RwLockReadGuard<'a, Table>,
    slot: usize,
}

impl Held<'_> {
    fn s(&self) -> &Slot {
        self.shard.slot(self.slot)
    }

    pub fn pos(&self) -> u64 {
        self.s().pos()
    }

    /// The item's latest absolute expiry (0 = never).
    pub fn expiry(&self) -> u32 {
        self.s().expiry()
    }

    /// A touch: the item lives until `expiry` now. Only the store's writer
    /// calls this (a reader may see the old or the new value meanwhile).
    pub fn set_expiry(&self, expiry: u32) {
        self.s().set_expiry(expiry)
    }

    pub fn last_access(&self) -> u32 {
        self.s().last_access()
    }

    pub fn fetched(&self) -> bool {
        self.s().fetched()
    }

    pub fn win_sent(&self) -> bool {
        self.s().win_sent()
    }

    pub fn mark_fetched(&self) {
        self.s().mark_fetched()
    }

    /// A read: last access now, and fetched.
    pub fn touch_access(&self, now: u32) {
        self.s().touch_access(now)
    }

    /// Hand out the win token: true for exactly one caller per entry.
    pub fn take_win(&self) -> bool {
        self.s().take_win()
    }
}

pub struct Index<R> {
    shards: Vec<RwLock<Table>>,
    /// The one keyed hash of a key: shard from its top bits, table from its low.
    hasher: RandomState,
    records: R,
    items: AtomicU64,
    bytes: AtomicU64,
    /// Bytes of all shards' slots (`index_bytes`).
    table_bytes: AtomicU64,
}

/// A key's hash, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHash {
    shard: usize,
    table: u32,
}

impl<R: Records> Index<R> {
    pub fn new(records: R) -> Index<R> {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(Table::default())).collect(),
            hasher: RandomState::new(),
            records,
            items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            table_bytes: AtomicU64::new(0),
        }
    }

    pub fn records(&self) -> &R {
        &self.records
    }

    pub fn hash(&self, key: &[u8]) -> KeyHash {
        let h = self.hasher.hash_one(key);
        KeyHash { shard: (h >> (64 - SHARD_BITS)) as usize, table: h as u32 }
    }

    // A poisoned lock means a thread panicked mid-update; the table's moves
    // are plain assignments between consistent states, so its data is kept.
    fn read_shard(&self, i: usize) -> RwLockReadGuard<'_, Table> {
        self.shards[i].read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_shard(&self, i: usize) -> RwLockWriteGuard<'_, Table> {
        self.shards[i].write().unwrap_or_else(|e| e.into_inner())
    }

    fn find(&self, t: &Table, h: KeyHash, key: &[u8]) -> Option<usize> {
        t.find(h.table, |s| self.records.key_is(s.pos(), key))
    }

    /// The entry for `key`, its shard's read lock held while the result lives.
    pub fn get(&self, key: &[u8]) -> Option<Held<'_>> {
        let h = self.hash(key);
        let shard = self.read_shard(h.shard);
        let slot = self.find(&shard, h, key)?;
        Some(Held { shard, slot })
    }

    /// Before a batch of lookups (a multi-get's keys): start loading every
    /// key's home slot, then every first candidate's record, so the two
    /// cache misses each lookup takes overlap across the batch instead of
    /// coming one after another. Hints only: nothing is looked up here.
    pub fn prefetch_lookups<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) {
        const BATCH: usize = 32;
        let mut hashes = [KeyHash { shard: 0, table: 0 }; BATCH];
        let mut n = 0;
        for key in keys.take(BATCH) {
            hashes[n] = self.hash(key);
            n += 1;
        }
        for h in &hashes[..n] {
            self.read_shard(h.shard).prefetch_home(h.table);
        }
        for h in &hashes[..n] {
            if let Some(s) = self.read_shard(h.shard).first_candidate(h.table) {
                self.records.prefetch(s.pos());
            }
        }
    }

    /// Apply counter changes, under the lock of every shard whose entries
    /// they count (so no entry is counted out twice).
    fn count(&self, d: Delta) {
        let apply = |a: &AtomicU64, by: i64| {
            if by > 0 {
                a.fetch_add(by as u64, Ordering::Relaxed);
            } else if by < 0 {
                a.fetch_sub(by.unsigned_abs(), Ordering::Relaxed);
            }
        };
        apply(&self.items, d.items);
        apply(&self.bytes, d.bytes);
        apply(&self.table_bytes, d.memory);
    }

    /// Point `key` at a new record; returns the entry it replaced.
    ///
    /// # Panics
    /// If `entry.pos` is not a record position (8-byte aligned, below
    /// [`POSITION_LIMIT`]): the log and the replication bounds keep them so.
    pub fn insert(&self, key: &[u8], entry: Entry) -> Option<Entry> {
        let h = self.hash(key);
        self.insert_hashed(h, key, entry)
    }

    /// `insert` with the key's hash already taken (`hash`).
    pub fn insert_hashed(&self, h: KeyHash, key: &[u8], entry: Entry) -> Option<Entry> {
        let mut t = self.write_shard(h.shard);
        let mut d = Delta::default();
        let old = self.insert_into(&mut t, h, key, entry, &mut d);
        self.count(d);
        old
    }

    fn insert_into(&self, t: &mut Table, h: KeyHash, key: &[u8], entry: Entry, d: &mut Delta) -> Option<Entry> {
        assert!(entry.pos < POSITION_LIMIT && entry.pos.is_multiple_of(8), "not a record position: {}", entry.pos);
        d.bytes += entry.len as i64;
        t.bytes += entry.len as u64;
        let v = entry.slot_value();
        match t.find_or_vacancy(h.table, |s| self.records.key_is(s.pos(), key)) {
            Ok(i) => {
                let old_len = self.records.len_at(t.slot(i).pos());
                let old = t.replace(i, &v);
                d.bytes -= old_len as i64;
                t.bytes -= old_len;
                Some(Entry::of(old, old_len))
            }
            Err(at) => {
                let before = t.memory_bytes();
                t.insert_at(at, h.table, &v);
                d.memory += t.memory_bytes() as i64 - before as i64;
                d.items += 1;
                None
            }
        }
    }

    fn remove_slot(&self, t: &mut Table, i: usize, d: &mut Delta) -> Entry {
        let len = self.records.len_at(t.slot(i).pos());
        let old = t.remove_at(i);
        t.bytes -= len;
        d.items -= 1;
        d.bytes -= len as i64;
        Entry::of(old, len)
    }

    fn remove_found(&self, t: &mut Table, i: usize) -> Entry {
        let mut d = Delta::default();
        let old = self.remove_slot(t, i, &mut d);
        self.count(d);
        old
    }

    pub fn remove(&self, key: &[u8]) -> Option<Entry> {
        let h = self.hash(key);
        let mut t = self.write_shard(h.shard);
        let i = self.find(&t, h, key)?;
        Some(self.remove_found(&mut t, i))
    }

    /// Remove `key` only if it still points at `pos` (the cleaner reclaiming
    /// a record, or a reader unlinking an expired item: a newer record for
    /// the key must survive). Matched by position: no record is read to
    /// find it.
    pub fn remove_if_at(&self, key: &[u8], pos: u64) -> Option<Entry> {
        let h = self.hash(key);
        let mut t = self.write_shard(h.shard);
        let i = t.find(h.table, |s| s.pos() == pos)?;
        Some(self.remove_found(&mut t, i))
    }

    pub fn position(&self, key: &[u8]) -> Option<u64> {
        self.get(key).map(|e| e.pos())
    }

    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.read_shard(i).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in the index (`curr_items`), without taking the shard locks.
    pub fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }

    /// Bytes of the records the entries point at (`bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Bytes the index's tables take in memory (beside the log).
    pub fn memory_bytes(&self) -> u64 {
        self.table_bytes.load(Ordering::Relaxed)
    }

    /// Make room for about `n` entries spread over the shards (a restart
    /// that knows how many it will insert), so the tables do not grow on
    /// the way.
    pub fn reserve(&self, n: usize) {
        let mut bulk = self.bulk();
        bulk.reserve(n);
    }

    /// Give back what `reserve` set aside and was not used.
    pub fn trim(&self) {
        for i in 0..SHARDS {
            let mut t = self.write_shard(i);
            let before = t.memory_bytes();
            t.trim();
            self.count(Delta { memory: t.memory_bytes() as i64 - before as i64, ..Delta::default() });
        }
    }

    /// Remove every entry; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut n = 0;
        for i in 0..SHARDS {
            let mut d = Delta::default();
            n += Self::clear_table(&mut self.write_shard(i), &mut d);
            self.count(d);
        }
        n
    }

    fn clear_table(t: &mut Table, d: &mut Delta) -> usize {
        let n = t.len();
        d.items -= n as i64;
        d.bytes -= t.bytes as i64;
        d.memory -= t.memory_bytes() as i64;
        t.clear();
        n
    }

    /// Every shard's write lock at once, for a restart's rebuild: batches
    /// of lookups without a lock each (whose atomic operations would also
    /// keep the batch's cache misses from overlapping). Nobody reads the
    /// index meanwhile: the server is not serving yet.
    pub fn bulk(&self) -> Bulk<'_, R> {
        Bulk { index: self, shards: (0..SHARDS).map(|i| self.write_shard(i)).collect(), delta: Delta::default() }
    }

    /// Visit every (key, entry); shard by shard under each shard's read
    /// lock, so a snapshot only per shard.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &Entry)) {
        let mut key = Vec::new();
        for i in 0..SHARDS {
            let t = self.read_shard(i);
            for s in t.iter() {
                let pos = s.pos();
                self.records.key_into(pos, &mut key);
                f(&key, &Entry::of(s.value(), self.records.len_at(pos)));
            }
        }
    }
}

/// The index with all its shards held (`Index::bulk`).
pub struct Bulk<'a, R: Records> {
    index: &'a Index<R>,
    shards: Vec<RwLockWriteGuard<'a, Table>>,
    /// Counter changes, applied when it ends, while every shard is still
    /// held: a locked add per insert would wait for the batch's stores.
    delta: Delta,
}

impl<R: Records> Drop for Bulk<'_, R> {
    fn drop(&mut self) {
        self.index.count(std::mem::take(&mut self.delta));
    }
}

/// Changes to the index's counters, to apply at once.
#[derive(Clone, Copy, Debug, Default)]
struct Delta {
    items: i64,
    bytes: i64,
    memory: i64,
}

impl<R: Records> Bulk<'_, R> {
    pub fn hash(&self, key: &[u8]) -> KeyHash {
        self.index.hash(key)
    }

    /// `Table::prefetch_home` in `h`'s shard: a batch prefetches every
    /// home first, then every probe's end, then applies in order.
    pub fn prefetch_home(&self, h: KeyHash) {
        self.shards[h.shard].prefetch_home(h.table)
    }

    /// `Table::prefetch_probe` in `h`'s shard.
    pub fn prefetch_probe(&self, h: KeyHash) {
        self.shards[h.shard].prefetch_probe(h.table)
    }

    pub fn insert(&mut self, h: KeyHash, key: &[u8], entry: Entry) -> Option<Entry> {
        self.index.insert_into(&mut self.shards[h.shard], h, key, entry, &mut self.delta)
    }

    pub fn remove(&mut self, h: KeyHash, key: &[u8]) -> Option<Entry> {
        let t = &mut self.shards[h.shard];
        let i = self.index.find(t, h, key)?;
        Some(self.index.remove_slot(t, i, &mut self.delta))
    }

    /// The position `key` points at, if any.
    pub fn position(&self, h: KeyHash, key: &[u8]) -> Option<u64> {
        let t = &self.shards[h.shard];
        self.index.find(t, h, key).map(|i| t.slot(i).pos())
    }

    /// A touch: `key`'s entry takes `expiry` if it points at `pos`.
    pub fn set_expiry_at(&self, h: KeyHash, pos: u64, expiry: u32) {
        let t = &self.shards[h.shard];
        if let Some(i) = t.find(h.table, |s| s.pos() == pos) {
            t.slot(i).set_expiry(expiry);
        }
    }

    /// `Index::reserve`, with the shards held.
    pub fn reserve(&mut self, n: usize) {
        // A shard's share is binomial: the mean and four standard deviations.
        let mean = n / SHARDS;
        let per = mean + 4 * mean.isqrt() + 16;
        for t in &mut self.shards {
            let before = t.memory_bytes();
            let want = t.len() + per;
            t.reserve(want);
            self.delta.memory += t.memory_bytes() as i64 - before as i64;
        }
    }

    pub fn clear(&mut self) -> usize {
        self.shards.iter_mut().map(|t| Index::<R>::clear_table(t, &mut self.delta)).sum()
    }
}

#[cfg(test)]
mod tests;
