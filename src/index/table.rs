//! One shard's table: open addressing with linear probing kept in Robin
//! Hood order, 20 bytes a slot, no key copy (the key stays in the log; a
//! candidate is confirmed by the caller's comparison against its record).
//!
//! A slot holds 32 bits of the key's hash, the record's position in 8-byte
//! units (59 bits: positions stay below 2^62), the item's latest expiry, its
//! last access and the flag bits. The hash bits pick the home slot by
//! multiply-shift over any table size (so the table grows by half, not
//! double) and are compared before any record is read: a miss reads no log
//! memory unless 32 bits of keyed hash collide. Robin Hood order (a probe
//! passes no entry nearer its home than the probe is to its own) ends a
//! miss early and keeps probes short at the 7/8 load the table grows at;
//! removal shifts the run back, so there are no tombstones.
//!
//! Readers share the table under the shard's read lock and change only the
//! atomic fields (access time, flags, and the writer's touch of the
//! expiry); slots move only under the write lock.

use std::sync::atomic::{AtomicU32, Ordering};

/// Flag bits in `Slot::hi`, above the position's top 27 bits.
const OCCUPIED: u32 = 1 << 31;
const FETCHED: u32 = 1 << 30;
const WIN_SENT: u32 = 1 << 29;
const POS_HI: u32 = (1 << 27) - 1;

/// Positions the table can hold: below 2^62, 8-byte aligned (records are).
pub const POSITION_LIMIT: u64 = 1 << 62;

/// Smallest table; a shard starts with none and allocates on first insert.
const MIN_SLOTS: usize = 16;

#[derive(Debug, Default)]
pub struct Slot {
    hash: u32,
    pos_lo: u32,
    /// OCCUPIED | FETCHED | WIN_SENT | position units >> 32.
    hi: AtomicU32,
    expiry: AtomicU32,
    last_access: AtomicU32,
}

/// What a slot says, copied out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotValue {
    pub hash: u32,
    pub pos: u64,
    pub expiry: u32,
    pub last_access: u32,
    pub fetched: bool,
    pub win_sent: bool,
}

impl Slot {
    fn occupied(&self) -> bool {
        self.hi.load(Ordering::Relaxed) & OCCUPIED != 0
    }

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
            hash: self.hash,
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
        let mut hi = OCCUPIED | ((units >> 32) as u32 & POS_HI);
        if v.fetched {
            hi |= FETCHED;
        }
        if v.win_sent {
            hi |= WIN_SENT;
        }
        Slot {
            hash: v.hash,
            pos_lo: units as u32,
            hi: AtomicU32::new(hi),
            expiry: AtomicU32::new(v.expiry),
            last_access: AtomicU32::new(v.last_access),
        }
    }

    fn take(&mut self) -> Slot {
        std::mem::take(self)
    }
}

#[derive(Debug, Default)]
pub struct Table {
    slots: Vec<Slot>,
    len: usize,
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

    /// Bytes the slots take (what this table costs beside the log).
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    fn home(&self, hash: u32) -> usize {
        ((hash as u64 * self.slots.len() as u64) >> 32) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// How far the entry in slot `i` sits past its home.
    fn distance(&self, i: usize) -> usize {
        let home = self.home(self.slots[i].hash);
        if i >= home {
            i - home
        } else {
            i + self.slots.len() - home
        }
    }

    /// The slot of the entry with `hash` for which `is_it` says yes.
    pub fn find(&self, hash: u32, mut is_it: impl FnMut(&Slot) -> bool) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        let mut i = self.home(hash);
        for d in 0..self.slots.len() {
            let s = &self.slots[i];
            if !s.occupied() || self.distance(i) < d {
                return None;
            }
            if s.hash == hash && is_it(s) {
                return Some(i);
            }
            i = self.next(i);
        }
        None
    }

    /// A read of the home slot of `hash`, so a batch of lookups can have
    /// their cache misses in flight together (returns what it read so the
    /// load is not optimised away).
    pub fn touch_home(&self, hash: u32) -> u32 {
        if self.slots.is_empty() {
            0
        } else {
            self.slots[self.home(hash)].hash
        }
    }

    pub fn slot(&self, i: usize) -> &Slot {
        &self.slots[i]
    }

    /// Replace the entry in slot `i` by `v` (same hash: its place stays).
    pub fn replace(&mut self, i: usize, v: &SlotValue) -> SlotValue {
        debug_assert_eq!(self.slots[i].hash, v.hash);
        std::mem::replace(&mut self.slots[i], Slot::from_value(v)).value()
    }

    /// Add an entry whose key the table does not hold.
    pub fn insert_new(&mut self, v: &SlotValue) {
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.grow_to(((self.slots.len() * 3) / 2).max(MIN_SLOTS).max((self.len + 1) * 8 / 7 + 1));
        }
        self.place(Slot::from_value(v));
        self.len += 1;
    }

    /// Robin Hood insertion: the carried entry takes the place of any entry
    /// nearer its home than the carried one is to its own.
    fn place(&mut self, mut carried: Slot) {
        let mut i = self.home(carried.hash);
        let mut d = 0;
        loop {
            if !self.slots[i].occupied() {
                self.slots[i] = carried;
                return;
            }
            let here = self.distance(i);
            if here < d {
                std::mem::swap(&mut self.slots[i], &mut carried);
                d = here;
            }
            i = self.next(i);
            d += 1;
        }
    }

    /// Remove the entry in slot `i`, shifting the run after it back.
    pub fn remove_at(&mut self, i: usize) -> SlotValue {
        let out = self.slots[i].take().value();
        let mut hole = i;
        let mut j = self.next(i);
        while self.slots[j].occupied() && self.distance(j) > 0 {
            let moved = self.slots[j].take();
            self.slots[hole] = moved;
            hole = j;
            j = self.next(j);
        }
        self.len -= 1;
        out
    }

    /// Room for at least `n` entries without growing.
    pub fn reserve(&mut self, n: usize) {
        let want = n * 8 / 7 + 1;
        if want > self.slots.len() {
            self.grow_to(want.max(MIN_SLOTS));
        }
    }

    fn grow_to(&mut self, n: usize) {
        let mut slots = Vec::with_capacity(n);
        slots.resize_with(n, Slot::default);
        let old = std::mem::replace(&mut self.slots, slots);
        for mut s in old {
            if s.occupied() {
                self.place(s.take());
            }
        }
    }

    /// Every entry, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.occupied())
    }

    /// Drop every entry and the slots with them.
    pub fn clear(&mut self) {
        *self = Table::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hash: u32, pos: u64) -> SlotValue {
        SlotValue { hash, pos, expiry: 0, last_access: 1, fetched: false, win_sent: false }
    }

    fn find_pos(t: &Table, hash: u32, pos: u64) -> Option<usize> {
        t.find(hash, |s| s.pos() == pos)
    }

    #[test]
    fn a_slot_is_twenty_bytes_and_round_trips_its_fields() {
        assert_eq!(std::mem::size_of::<Slot>(), 20);
        let x = SlotValue {
            hash: 0xdead_beef,
            pos: POSITION_LIMIT - 8,
            expiry: 7,
            last_access: 9,
            fetched: true,
            win_sent: true,
        };
        assert_eq!(Slot::from_value(&x).value(), x);
        let y = SlotValue { pos: 8, fetched: false, ..x };
        assert_eq!(Slot::from_value(&y).value(), y);
    }

    #[test]
    fn entries_sharing_a_home_and_hash_are_all_found_and_removed() {
        // The same hash for all: one long run, told apart only by `is_it`.
        let mut t = Table::default();
        for i in 0..100u64 {
            t.insert_new(&v(42, i * 8));
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
        assert!(find_pos(&t, 43, 8).is_none());
    }

    #[test]
    fn growth_keeps_every_entry_and_stays_under_seven_eighths() {
        let mut t = Table::default();
        let hash = |i: u64| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32;
        for i in 0..50_000u64 {
            t.insert_new(&v(hash(i), i * 8));
            assert!(t.len() * 8 <= t.slots.len() * 7);
        }
        for i in 0..50_000u64 {
            assert!(find_pos(&t, hash(i), i * 8).is_some(), "entry {i}");
        }
        // Removal in any order keeps the rest reachable (backward shift).
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

    #[test]
    fn reserve_presizes_and_clear_frees() {
        let mut t = Table::default();
        t.reserve(1000);
        let bytes = t.memory_bytes();
        assert!(bytes >= 1000 * 20, "{bytes}");
        for i in 0..1000u64 {
            t.insert_new(&v((i as u32).wrapping_mul(2_654_435_761), i * 8));
        }
        assert_eq!(t.memory_bytes(), bytes, "no growth after reserve");
        t.clear();
        assert_eq!((t.len(), t.memory_bytes()), (0, 0));
    }

    #[test]
    fn readers_flags_are_set_once() {
        let s = Slot::from_value(&v(1, 8));
        assert!(s.take_win());
        assert!(!s.take_win(), "the token goes to one reader");
        assert!(!s.fetched());
        s.touch_access(77);
        assert!(s.fetched() && s.last_access() == 77 && s.pos() == 8);
    }
}
