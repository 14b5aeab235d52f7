//! The index: key -> position of the record that currently holds the key.
//!
//! Local to each process (replicas rebuild theirs by applying records in
//! order). Sharded read-write locks: a get holds its shard's read lock while
//! it copies the value out of the log, and the cleaner must take the write
//! lock to unlink a record before its space is reused, so a reader never sees
//! bytes overwritten under it. Writers are already serialized by the store.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

const SHARDS: usize = 64;

/// What the index keeps per key. Access metadata lives here, not in the log:
/// it changes on reads, and records are immutable.
#[derive(Debug)]
pub struct Entry {
    pub pos: u64,
    /// Bytes the record occupies (for the `bytes` stat).
    pub len: u32,
    /// Absolute expiry (0 = never), copied from the record for cheap checks.
    pub expiry: u32,
    /// Unix seconds of the last read or write (meta `l`, `h`).
    pub last_access: AtomicU32,
    /// Fetched at least once since written (meta `h`, stats).
    pub fetched: AtomicBool,
    /// A meta win token was handed out for this stale/vivified item.
    pub win_sent: AtomicBool,
}

impl Entry {
    pub fn new(pos: u64, len: u32, expiry: u32, now: u32) -> Entry {
        Entry {
            pos,
            len,
            expiry,
            last_access: AtomicU32::new(now),
            fetched: AtomicBool::new(false),
            win_sent: AtomicBool::new(false),
        }
    }

    pub fn touch_access(&self, now: u32) {
        self.last_access.store(now, Ordering::Relaxed);
        self.fetched.store(true, Ordering::Relaxed);
    }
}

/// FNV-1a: keys are short; SipHash's DoS resistance costs more than it buys
/// behind a per-shard table sized by the operator. Seeded per process.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Map = HashMap<Box<[u8]>, Entry, BuildHasherDefault<KeyHasher>>;

pub struct Index {
    shards: Vec<RwLock<Map>>,
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

fn shard_of(key: &[u8]) -> usize {
    let mut h = KeyHasher::default();
    h.write(key);
    // High bits: the map itself uses the low ones.
    (h.finish() >> 58) as usize % SHARDS
}

impl Index {
    pub fn new() -> Index {
        Index { shards: (0..SHARDS).map(|_| RwLock::new(Map::default())).collect() }
    }

    /// Read access to the shard holding `key`; hold it while reading the record.
    pub fn read(&self, key: &[u8]) -> RwLockReadGuard<'_, Map> {
        // A poisoned lock means a thread panicked mid-update of a HashMap whose
        // invariants std keeps anyway; the data is still consistent.
        self.shards[shard_of(key)].read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self, key: &[u8]) -> RwLockWriteGuard<'_, Map> {
        self.shards[shard_of(key)].write().unwrap_or_else(|e| e.into_inner())
    }

    /// Point `key` at a new record; returns the entry it replaced.
    pub fn insert(&self, key: &[u8], entry: Entry) -> Option<Entry> {
        let mut s = self.write(key);
        match s.get_mut(key) {
            Some(e) => Some(std::mem::replace(e, entry)),
            None => s.insert(key.into(), entry),
        }
    }

    pub fn remove(&self, key: &[u8]) -> Option<Entry> {
        self.write(key).remove(key)
    }

    /// Remove `key` only if it still points at `pos` (the cleaner reclaiming
    /// a record; a newer record for the key must survive).
    pub fn remove_if_at(&self, key: &[u8], pos: u64) -> Option<Entry> {
        let mut s = self.write(key);
        if s.get(key).is_some_and(|e| e.pos == pos) {
            s.remove(key)
        } else {
            None
        }
    }

    pub fn position(&self, key: &[u8]) -> Option<u64> {
        self.read(key).get(key).map(|e| e.pos)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remove every entry; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut n = 0;
        for s in &self.shards {
            let mut s = s.write().unwrap_or_else(|e| e.into_inner());
            n += s.len();
            s.clear();
        }
        n
    }

    /// Visit every (key, position); shard by shard, so a snapshot only per shard.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &Entry)) {
        for s in &self.shards {
            let s = s.read().unwrap_or_else(|e| e.into_inner());
            for (k, e) in s.iter() {
                f(k, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replace_remove() {
        let ix = Index::new();
        assert!(ix.insert(b"a", Entry::new(8, 64, 0, 1)).is_none());
        let old = ix.insert(b"a", Entry::new(72, 64, 0, 1)).unwrap();
        assert_eq!(old.pos, 8);
        assert_eq!(ix.position(b"a"), Some(72));
        assert_eq!(ix.len(), 1);
        assert!(ix.remove(b"a").is_some());
        assert!(ix.position(b"a").is_none());
    }

    #[test]
    fn cleaner_removal_spares_newer_records() {
        let ix = Index::new();
        ix.insert(b"k", Entry::new(100, 64, 0, 1));
        assert!(ix.remove_if_at(b"k", 36).is_none());
        assert_eq!(ix.position(b"k"), Some(100));
        assert!(ix.remove_if_at(b"k", 100).is_some());
        assert!(ix.is_empty());
    }

    #[test]
    fn many_keys_spread_and_clear() {
        let ix = Index::new();
        for i in 0..10_000u64 {
            ix.insert(format!("key:{i}").as_bytes(), Entry::new(i * 64, 64, 0, 1));
        }
        assert_eq!(ix.len(), 10_000);
        let used = ix.shards.iter().filter(|s| !s.read().unwrap().is_empty()).count();
        assert!(used > SHARDS / 2, "keys landed in only {used} shards");
        assert_eq!(ix.clear(), 10_000);
        assert_eq!(ix.len(), 0);
    }
}
