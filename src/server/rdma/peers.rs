//! The per-client state a worker keeps (a client's address handle and reply
//! cache), bounded by a count and a byte budget. Past either, the least
//! recently seen client is forgotten, one at a time: a flood of new sources
//! costs the oldest clients their state, never every client at once (a
//! forgotten client pays one address-handle creation, and a write it retries
//! after that runs again instead of being answered from the cache).
//!
//! Exact LRU: a doubly linked list through a slab, most recent at the head;
//! a lookup moves its entry to the head (a few index writes, no allocation).

use std::collections::HashMap;
use std::hash::Hash;

/// What an entry costs against the byte budget.
pub(super) trait Weigh {
    fn weight(&self) -> usize;
}

const NIL: usize = usize::MAX;

struct Slot<K, V> {
    key: K,
    value: V,
    weight: usize,
    prev: usize,
    next: usize,
}

/// An LRU table of at most `max_entries` entries weighing at most `max_bytes`.
pub(super) struct PeerTable<K, V> {
    index: HashMap<K, usize>,
    slots: Vec<Option<Slot<K, V>>>,
    free: Vec<usize>,
    /// Most and least recently used.
    head: usize,
    tail: usize,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<K: Hash + Eq + Copy, V: Weigh> PeerTable<K, V> {
    pub(super) fn new(max_entries: usize, max_bytes: usize) -> Self {
        PeerTable {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Bytes the entries weigh (as of their last [`PeerTable::settle`]).
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub(super) fn contains(&self, k: &K) -> bool {
        self.index.contains_key(k)
    }

    /// The entry for `k`, now the most recently used.
    pub(super) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let i = *self.index.get(k)?;
        self.unlink(i);
        self.push_front(i);
        self.slots[i].as_mut().map(|s| &mut s.value)
    }

    /// Add `k` as the most recently used (replacing an entry it had), then
    /// evict the oldest others down to the budgets. Returns how many went.
    pub(super) fn insert(&mut self, k: K, v: V) -> usize {
        if let Some(i) = self.index.remove(&k) {
            self.remove_slot(i);
        }
        let weight = v.weight();
        let slot = Slot { key: k, value: v, weight, prev: NIL, next: NIL };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.bytes += weight;
        self.index.insert(k, i);
        self.push_front(i);
        self.evict_beyond_budgets(i)
    }

    /// After `k`'s value changed: take its new weight, then evict the oldest
    /// others down to the budgets (never `k` itself: it was just used).
    /// Returns how many went.
    pub(super) fn settle(&mut self, k: &K) -> usize {
        let Some(&i) = self.index.get(k) else { return 0 };
        if let Some(s) = self.slots[i].as_mut() {
            let w = s.value.weight();
            self.bytes = self.bytes - s.weight + w;
            s.weight = w;
        }
        self.evict_beyond_budgets(i)
    }

    fn evict_beyond_budgets(&mut self, keep: usize) -> usize {
        let mut evicted = 0;
        while (self.index.len() > self.max_entries || self.bytes > self.max_bytes) && self.tail != keep {
            let t = self.tail;
            if t == NIL {
                break;
            }
            if let Some(k) = self.slots[t].as_ref().map(|s| s.key) {
                self.index.remove(&k);
            }
            self.remove_slot(t);
            evicted += 1;
        }
        evicted
    }

    fn remove_slot(&mut self, i: usize) {
        self.unlink(i);
        if let Some(s) = self.slots[i].take() {
            self.bytes -= s.weight;
        }
        self.free.push(i);
    }

    fn links(&self, i: usize) -> (usize, usize) {
        self.slots[i].as_ref().map_or((NIL, NIL), |s| (s.prev, s.next))
    }

    fn set_prev(&mut self, i: usize, p: usize) {
        if let Some(s) = self.slots[i].as_mut() {
            s.prev = p;
        }
    }

    fn set_next(&mut self, i: usize, n: usize) {
        if let Some(s) = self.slots[i].as_mut() {
            s.next = n;
        }
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = self.links(i);
        if p == NIL {
            if self.head == i {
                self.head = n;
            }
        } else {
            self.set_next(p, n);
        }
        if n == NIL {
            if self.tail == i {
                self.tail = p;
            }
        } else {
            self.set_prev(n, p);
        }
        self.set_prev(i, NIL);
        self.set_next(i, NIL);
    }

    fn push_front(&mut self, i: usize) {
        let old = self.head;
        self.set_next(i, old);
        self.set_prev(i, NIL);
        if old != NIL {
            self.set_prev(old, i);
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct W(usize);
    impl Weigh for W {
        fn weight(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn full_by_count_forgets_only_the_least_recently_seen() {
        let mut t = PeerTable::new(3, usize::MAX);
        for k in 0..3u32 {
            assert_eq!(t.insert(k, W(1)), 0);
        }
        assert!(t.get_mut(&0).is_some(), "0 is now the most recent");
        assert_eq!(t.insert(3, W(1)), 1, "one entry makes room");
        assert!(!t.contains(&1), "the oldest (1) went");
        assert!(t.contains(&0) && t.contains(&2) && t.contains(&3));
        assert_eq!(t.len(), 3);
        // A flood of new keys never leaves more than the budget, and the
        // newest always stays.
        for k in 100..1000u32 {
            t.insert(k, W(1));
            assert!(t.len() <= 3 && t.contains(&k));
        }
        assert_eq!(t.bytes(), 3);
    }

    #[test]
    fn over_the_byte_budget_the_oldest_go_but_never_the_one_just_used() {
        let mut t = PeerTable::new(100, 10);
        t.insert(1u32, W(4));
        t.insert(2, W(4));
        assert_eq!(t.bytes(), 8);
        // 2 grows past the budget: 1 (older) goes, 2 stays.
        if let Some(v) = t.get_mut(&2) {
            v.0 = 9;
        }
        assert_eq!(t.settle(&2), 1);
        assert!(!t.contains(&1) && t.contains(&2));
        assert_eq!(t.bytes(), 9);
        // Alone over the budget: kept (it is the one in use), nothing else to drop.
        if let Some(v) = t.get_mut(&2) {
            v.0 = 50;
        }
        assert_eq!(t.settle(&2), 0);
        assert!(t.contains(&2));
        // The next newcomer evicts it.
        assert_eq!(t.insert(3, W(1)), 1);
        assert!(!t.contains(&2) && t.contains(&3));
        assert_eq!(t.bytes(), 1);
        // Re-inserting a key replaces its entry and its weight.
        t.insert(3, W(5));
        assert_eq!((t.len(), t.bytes()), (1, 5));
    }

    #[test]
    fn recency_order_survives_many_moves() {
        let mut t = PeerTable::new(4, usize::MAX);
        for k in 0..4u32 {
            t.insert(k, W(0));
        }
        for k in [2u32, 0, 3, 2, 1] {
            assert!(t.get_mut(&k).is_some());
        }
        // Oldest to newest now: 0, 3, 2, 1.
        t.insert(9, W(0));
        assert!(!t.contains(&0));
        t.insert(10, W(0));
        assert!(!t.contains(&3));
        assert!(t.contains(&2) && t.contains(&1) && t.contains(&9) && t.contains(&10));
    }
}
