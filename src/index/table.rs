//! One shard's table: open addressing with linear probing, 20 bytes an
//! entry, no key copy (the key stays in the log; a
//! candidate is confirmed by the caller's comparison against its record).
//!
//! Two arrays side by side: 32 bits of each key's hash (0 marks an empty
//! slot; the low bit is always set in a stored one), and a 16-byte entry:
//! the record's position in 8-byte units (59 bits: positions stay below
//! 2^62), the item's latest expiry, its last access and the flag bits. The
//! hash bits pick the home slot by multiply-shift over any table size (so
//! the table grows by a quarter, not double) and are what a probe walks: sixteen
//! to a cache line, and a miss reads no entry, and no log memory unless 32
//! bits of keyed hash collide. An insert writes its entry in the first
//! empty slot and moves nothing (Robin Hood order, tried first, shifted
//! whole runs of entries on every insert at this load: 26% of a restart's
//! CPU); removal moves back the entries the hole would cut off from their
//! homes (Knuth's algorithm R), so there are no tombstones. The table
//! grows at 7/8 load: a miss scans about 32 tags there, two cache lines.
//!
//! Readers share the table under the shard's read lock and change only the
//! atomic fields (access time, flags, and the writer's touch of the
//! expiry); entries move only under the write lock.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::memory::prefetch::prefetch;

/// Flag bits in `Slot::hi`, above the position's top 27 bits.
const FETCHED: u32 = 1 << 30;
const WIN_SENT: u32 = 1 << 29;
const POS_HI: u32 = (1 << 27) - 1;

/// Positions the table can hold: below 2^62, 8-byte aligned (records are).
pub const POSITION_LIMIT: u64 = 1 << 62;

/// Smallest table; a shard starts with none and allocates on first insert.
const MIN_SLOTS: usize = 16;

/// The stored form of a key's table hash: never 0 (0 is an empty slot).
fn tag(hash: u32) -> u32 {
    hash | 1
}

#[derive(Debug, Default)]
pub struct Slot {
    pos_lo: u32,
    /// FETCHED | WIN_SENT | position units >> 32.
    hi: AtomicU32,
    expiry: AtomicU32,
    last_access: AtomicU32,
}

/// What an entry says, copied out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotValue {
    pub pos: u64,
    pub expiry: u32,
    pub last_access: u32,
    pub fetched: bool,
    pub win_sent: bool,
}

impl Slot {
    pub fn pos(&self) -> u64 {
        let hi = (self.hi.load(Ordering::Relaxed) & POS_HI) as u64;
        ((hi << 32) | self.pos_lo as u64) << 3
    }

    pub fn expiry(&self) -> u32 {
        self.expiry.load(Ordering::Relaxed)
    }

    pub fn set_expiry(&self, x: u32) {
        self.expiry.store(x, Ordering::Relaxed)
    }

    pub fn last_access(&self) -> u32 {
        self.last_access.load(Ordering::Relaxed)
    }

    pub fn fetched(&self) -> bool {
        self.hi.load(Ordering::Relaxed) & FETCHED != 0
    }

    pub fn win_sent(&self) -> bool {
        self.hi.load(Ordering::Relaxed) & WIN_SENT != 0
    }

    pub fn mark_fetched(&self) {
        self.hi.fetch_or(FETCHED, Ordering::Relaxed);
    }

    pub fn touch_access(&self, now: u32) {
        self.last_access.store(now, Ordering::Relaxed);
        self.mark_fetched();
    }

    /// Take the win token: true for exactly one caller until the item is
    /// rewritten (the flag is never cleared in place).
    pub fn take_win(&self) -> bool {
        self.hi.fetch_or(WIN_SENT, Ordering::Relaxed) & WIN_SENT == 0
    }

    pub fn value(&self) -> SlotValue {
        SlotValue {
            pos: self.pos(),
            expiry: self.expiry(),
            last_access: self.last_access(),
            fetched: self.fetched(),
            win_sent: self.win_sent(),
        }
    }

    fn from_value(v: &SlotValue) -> Slot {
        debug_assert!(v.pos < POSITION_LIMIT && v.pos.is_multiple_of(8), "position {}", v.pos);
        let units = v.pos >> 3;
        let mut hi = (units >> 32) as u32 & POS_HI;
        if v.fetched {
            hi |= FETCHED;
        }
        if v.win_sent {
            hi |= WIN_SENT;
        }
        Slot {
            pos_lo: units as u32,
            hi: AtomicU32::new(hi),
            expiry: AtomicU32::new(v.expiry),
            last_access: AtomicU32::new(v.last_access),
        }
    }
}

/// Where a probe for a missing key ended: the first empty slot of its run
/// (None: the table is empty or full), for `Table::insert_at`, and the
/// table's change count then: a slot found before entries moved is not used.
#[derive(Clone, Copy, Debug)]
pub struct Vacancy {
    slot: Option<usize>,
    changes: u64,
}

#[derive(Debug, Default)]
pub struct Table {
    /// Each slot's stored hash (`tag`), 0 where empty.
    tags: Vec<u32>,
    slots: Vec<Slot>,
    len: usize,
    /// Inserts, removals and regrowths so far (see `Vacancy`).
    changes: u64,
    /// Bytes of the records this table's entries point at (kept by the
    /// index, so a clear counts them out without reading every record).
    pub bytes: u64,
}

impl Table {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the table takes (what it costs beside the log).
    pub fn memory_bytes(&self) -> usize {
        self.tags.capacity() * 4 + self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    fn home(&self, tag: u32) -> usize {
        ((tag as u64 * self.tags.len() as u64) >> 32) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.tags.len() {
            0
        } else {
            i + 1
        }
    }

    /// The slot of the entry with `hash` for which `is_it` says yes.
    pub fn find(&self, hash: u32, is_it: impl FnMut(&Slot) -> bool) -> Option<usize> {
        self.find_or_vacancy(hash, is_it).ok()
    }

    /// `find`, or where the walk ended when the key is missing: the empty
    /// slot an insert of it may take (`insert_at`), so a write of a new key
    /// walks its run once, not twice.
    pub fn find_or_vacancy(&self, hash: u32, mut is_it: impl FnMut(&Slot) -> bool) -> Result<usize, Vacancy> {
        let vacancy = |slot| Vacancy { slot, changes: self.changes };
        if self.is_empty() {
            return Err(vacancy(None));
        }
        let want = tag(hash);
        let mut i = self.home(want);
        for _ in 0..self.tags.len() {
            let t = self.tags[i];
            if t == 0 {
                return Err(vacancy(Some(i)));
            }
            if t == want && is_it(&self.slots[i]) {
                return Ok(i);
            }
            i = self.next(i);
        }
        Err(vacancy(None))
    }

    /// Start loading the home slot of `hash` (its tag and its entry), so a
    /// batch of lookups has its cache misses in flight together.
    pub fn prefetch_home(&self, hash: u32) {
        if !self.tags.is_empty() {
            let i = self.home(tag(hash));
            prefetch(&self.tags[i]);
            prefetch(&self.slots[i]);
        }
    }

    /// After `prefetch_home`: walk the (now loaded) tags from the home of
    /// `hash` to where a probe for it stops, at its first candidate or the
    /// empty slot an insert would take, and start loading that entry: at
    /// high load it is often a cache line past the home's.
    pub fn prefetch_probe(&self, hash: u32) {
        if let Ok(i) | Err(Vacancy { slot: Some(i), .. }) = self.find_or_vacancy(hash, |_| true) {
            prefetch(&self.slots[i]);
        }
    }

    /// The first entry a lookup of `hash` would check, if any: a batch of
    /// lookups prefetches the records of these before any key is compared.
    pub fn first_candidate(&self, hash: u32) -> Option<&Slot> {
        self.find_or_vacancy(hash, |_| true).ok().map(|i| &self.slots[i])
    }

    pub fn slot(&self, i: usize) -> &Slot {
        &self.slots[i]
    }

    /// Replace the entry in slot `i` by `v` (same key: its place stays).
    pub fn replace(&mut self, i: usize, v: &SlotValue) -> SlotValue {
        std::mem::replace(&mut self.slots[i], Slot::from_value(v)).value()
    }

    /// `insert_at` without a find first (tests).
    #[cfg(test)]
    pub fn insert_new(&mut self, hash: u32, v: &SlotValue) {
        self.insert_at(Vacancy { slot: None, changes: self.changes }, hash, v)
    }

    /// Add an entry whose key the table does not hold (`find_or_vacancy`
    /// missed it), into the slot that find ended on if nothing was
    /// inserted, removed or moved since (else by a walk of its own). At 7/8 load the
    /// table grows by a quarter, so it stays between 7/10 and 7/8 full
    /// (20 to 29 bytes an entry): all shards fill alike and grow at about
    /// the same count, so growing by half left the whole index as little
    /// as 7/12 full at some counts (34 bytes an entry).
    pub fn insert_at(&mut self, at: Vacancy, hash: u32, v: &SlotValue) {
        if (self.len + 1) * 8 > self.tags.len() * 7 {
            self.grow_to((self.tags.len() * 5 / 4).max(MIN_SLOTS).max((self.len + 1) * 8 / 7 + 1));
            self.place(tag(hash), Slot::from_value(v));
        } else {
            match at.slot {
                Some(i) if at.changes == self.changes => {
                    self.tags[i] = tag(hash);
                    self.slots[i] = Slot::from_value(v);
                }
                _ => self.place(tag(hash), Slot::from_value(v)),
            }
        }
        self.len += 1;
        self.changes += 1;
    }

    /// The first empty slot from the home of `t` on (the load bound
    /// keeps one).
    fn place(&mut self, t: u32, s: Slot) {
        let mut i = self.home(t);
        while self.tags[i] != 0 {
            i = self.next(i);
        }
        self.tags[i] = t;
        self.slots[i] = s;
    }

    /// Remove the entry in slot `i`: every later entry of the run whose
    /// home is not between the hole and itself moves into the hole, so
    /// every probe still reaches what it reached before.
    pub fn remove_at(&mut self, i: usize) -> SlotValue {
        let out = std::mem::take(&mut self.slots[i]).value();
        self.tags[i] = 0;
        let mut hole = i;
        let mut j = self.next(i);
        while self.tags[j] != 0 {
            let home = self.home(self.tags[j]);
            let reachable = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !reachable {
                self.tags[hole] = std::mem::take(&mut self.tags[j]);
                self.slots[hole] = std::mem::take(&mut self.slots[j]);
                hole = j;
            }
            j = self.next(j);
        }
        self.len -= 1;
        self.changes += 1;
        out
    }

    /// Room for at least `n` entries without growing.
    pub fn reserve(&mut self, n: usize) {
        let want = n * 8 / 7 + 1;
        if want > self.tags.len() {
            self.grow_to(want.max(MIN_SLOTS));
        }
    }

    /// Down to 7/8 load if it is below the 7/10 growth leaves (a rebuild
    /// that reserved for more entries than it kept).
    pub fn trim(&mut self) {
        if self.len * 10 < self.tags.len() * 7 {
            if self.len == 0 {
                self.clear();
            } else {
                self.grow_to((self.len * 8 / 7 + 1).max(MIN_SLOTS));
            }
        }
    }

    fn grow_to(&mut self, n: usize) {
        let mut slots = Vec::with_capacity(n);
        slots.resize_with(n, Slot::default);
        let tags = vec![0; n];
        let old_slots = std::mem::replace(&mut self.slots, slots);
        let old_tags = std::mem::replace(&mut self.tags, tags);
        self.changes += 1;
        for (t, s) in old_tags.into_iter().zip(old_slots) {
            if t != 0 {
                self.place(t, s);
            }
        }
    }

    /// Every entry, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.tags.iter().zip(&self.slots).filter(|(t, _)| **t != 0).map(|(_, s)| s)
    }

    /// Drop every entry and the slots with them.
    pub fn clear(&mut self) {
        let changes = self.changes + 1;
        *self = Table { changes, ..Table::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pos: u64) -> SlotValue {
        SlotValue { pos, expiry: 0, last_access: 1, fetched: false, win_sent: false }
    }

    fn find_pos(t: &Table, hash: u32, pos: u64) -> Option<usize> {
        t.find(hash, |s| s.pos() == pos)
    }

    #[test]
    fn an_entry_is_sixteen_bytes_and_round_trips_its_fields() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        let x = SlotValue { pos: POSITION_LIMIT - 8, expiry: 7, last_access: 9, fetched: true, win_sent: true };
        assert_eq!(Slot::from_value(&x).value(), x);
        let y = SlotValue { pos: 8, fetched: false, ..x };
        assert_eq!(Slot::from_value(&y).value(), y);
    }

    #[test]
    fn an_insert_takes_the_vacancy_its_find_ended_on_unless_entries_moved_since() {
        let mut t = Table::default();
        for i in 0..40u64 {
            t.insert_new(7, &v(i * 8));
        }
        // A run of 40 on one home: the vacancy is the slot after it.
        let Err(at) = t.find_or_vacancy(7, |s| s.pos() == 4000) else { panic!("found a missing entry") };
        assert_eq!(at.slot, find_pos(&t, 7, 39 * 8).map(|i| (i + 1) % t.tags.len()));
        t.insert_at(at, 7, &v(4000));
        assert!(find_pos(&t, 7, 4000).is_some());
        // Found, then an entry of the run removed: the old vacancy would sit
        // beyond the hole the removal closed, out of the probe's reach.
        let Err(stale) = t.find_or_vacancy(7, |s| s.pos() == 4008) else { panic!("found a missing entry") };
        let first = find_pos(&t, 7, 0).unwrap();
        t.remove_at(first);
        t.insert_at(stale, 7, &v(4008));
        assert!(find_pos(&t, 7, 4008).is_some(), "an insert through a stale vacancy is lost");
        assert_eq!(t.len(), 41);
        // A stale vacancy across a clear is not used either.
        let Err(old) = t.find_or_vacancy(9, |_| false) else { panic!() };
        t.clear();
        t.insert_at(old, 9, &v(8));
        assert_eq!((t.len(), find_pos(&t, 9, 8).is_some()), (1, true));
    }

    #[test]
    fn entries_sharing_a_home_and_hash_are_all_found_and_removed() {
        // The same hash for all: one long run, told apart only by `is_it`.
        let mut t = Table::default();
        for i in 0..100u64 {
            t.insert_new(42, &v(i * 8));
        }
        assert_eq!(t.len(), 100);
        for i in 0..100u64 {
            assert!(find_pos(&t, 42, i * 8).is_some(), "entry {i}");
        }
        for i in (0..100u64).step_by(2) {
            let at = find_pos(&t, 42, i * 8).unwrap();
            assert_eq!(t.remove_at(at).pos, i * 8);
        }
        for i in 0..100u64 {
            assert_eq!(find_pos(&t, 42, i * 8).is_some(), i % 2 == 1, "entry {i}");
        }
        assert!(find_pos(&t, 44, 8).is_none(), "another hash (43 is the same once its low bit is set)");
    }

    #[test]
    fn growth_keeps_every_entry_and_stays_under_seven_eighths() {
        let mut t = Table::default();
        let hash = |i: u64| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32;
        for i in 0..50_000u64 {
            t.insert_new(hash(i), &v(i * 8));
            assert!(t.len() * 8 <= t.tags.len() * 7);
        }
        for i in 0..50_000u64 {
            assert!(find_pos(&t, hash(i), i * 8).is_some(), "entry {i}");
        }
        // Removal in any order keeps the rest reachable (algorithm R).
        for i in (0..50_000u64).filter(|i| i % 3 != 0) {
            let at = find_pos(&t, hash(i), i * 8).unwrap();
            t.remove_at(at);
        }
        assert_eq!(t.len(), (0..50_000u64).filter(|i| i % 3 == 0).count());
        for i in 0..50_000u64 {
            assert_eq!(find_pos(&t, hash(i), i * 8).is_some(), i % 3 == 0, "entry {i}");
        }
        assert_eq!(t.iter().count(), t.len());
    }

    /// Inserts and removals against a model, with hashes from a few values
    /// near the top of the range: long runs that wrap past the table's end.
    #[test]
    fn wrapping_runs_survive_any_removal_order() {
        let mut t = Table::default();
        let mut model = std::collections::HashMap::new();
        let mut live = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let hash = u32::MAX - (x % 8) as u32 * 0x0100_0000;
            if x.is_multiple_of(3) && !live.is_empty() {
                let pos = live.swap_remove((x >> 8) as usize % live.len());
                let at = find_pos(&t, model[&pos], pos).expect("a live entry is found");
                assert_eq!(t.remove_at(at).pos, pos);
                model.remove(&pos);
            } else {
                t.insert_new(hash, &v(step * 8));
                model.insert(step * 8, hash);
                live.push(step * 8);
            }
            if step % 997 == 0 {
                for (&pos, &hash) in &model {
                    assert!(find_pos(&t, hash, pos).is_some(), "step {step}: entry at {pos} lost");
                }
            }
        }
        assert_eq!(t.len(), model.len());
        for (&pos, &hash) in &model {
            assert!(find_pos(&t, hash, pos).is_some(), "entry at {pos} lost");
        }
    }

    #[test]
    fn reserve_presizes_and_clear_frees() {
        let mut t = Table::default();
        t.reserve(1000);
        let bytes = t.memory_bytes();
        assert!(bytes >= 1000 * 20, "{bytes}");
        for i in 0..1000u64 {
            t.insert_new((i as u32).wrapping_mul(2_654_435_761), &v(i * 8));
        }
        assert_eq!(t.memory_bytes(), bytes, "no growth after reserve");
        t.clear();
        assert_eq!((t.len(), t.memory_bytes()), (0, 0));
    }

    #[test]
    fn readers_flags_are_set_once() {
        let s = Slot::from_value(&v(8));
        assert!(s.take_win());
        assert!(!s.take_win(), "the token goes to one reader");
        assert!(!s.fetched());
        s.touch_access(77);
        assert!(s.fetched() && s.last_access() == 77 && s.pos() == 8);
    }
}
