//! Everything under the writer lock: the append and accounting helpers every
//! mutation uses, and set (add, replace, append, prepend, cas), delete,
//! invalidate (`md I`) and flush_all.

use std::sync::atomic::Ordering;

use super::{absolute_expiry, DeleteOutcome, SetArgs, SetMode, SetOutcome, Store, StoreError, Writer};
use crate::index::Entry;
use crate::log::record::{Header, Kind, ITEM_STALE};
use crate::log::{AppendError, NewRecord};

impl Store {
    /// The live record for `key`, read under the writer lock (so it cannot
    /// change or be reclaimed while the caller decides).
    pub(super) fn live_locked(&self, key: &[u8], now: u32) -> Option<(u64, Header)> {
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
    pub(super) fn put_locked(
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

    pub(super) fn account_replace(&self, old: Option<Entry>, new_len: u64) {
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

    pub(super) fn account_remove(&self, old: &Entry) {
        self.stats.curr_items.fetch_sub(1, Ordering::Relaxed);
        self.stats.bytes.fetch_sub(old.len as u64, Ordering::Relaxed);
    }

    pub(super) fn append_locked(
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
    pub(super) fn take_value(&self, w: &mut Writer, pos: u64, h: &Header) -> Vec<u8> {
        let mut v = std::mem::take(&mut w.scratch);
        v.clear();
        self.log.append_value(pos, h, &mut v);
        v
    }

    pub(super) fn next_cas(w: &mut Writer) -> u64 {
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

    /// (fetched, win token out) of the key's index entry.
    pub(super) fn entry_state(&self, key: &[u8]) -> (bool, bool) {
        self.index
            .read(key)
            .get(key)
            .map(|e| (e.fetched.load(Ordering::Relaxed), e.win_sent.load(Ordering::Relaxed)))
            .unwrap_or((false, false))
    }

    /// Carry access state over to a key's new entry (an in-place change in
    /// memcached's terms).
    pub(super) fn set_entry_state(&self, key: &[u8], fetched: bool, win_sent: bool) {
        if let Some(e) = self.index.read(key).get(key) {
            e.fetched.store(fetched, Ordering::Relaxed);
            e.win_sent.store(win_sent, Ordering::Relaxed);
        }
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
}

#[cfg(test)]
mod tests {
    use crate::store::tests::{get, set, store};
    use crate::store::*;

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
    fn bad_keys_and_sizes_change_nothing() {
        let s = store(4);
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, &[b'a'; 251], b"v", 0, 0)), Err(StoreError::BadKey));
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"a b", b"v", 0, 0)), Err(StoreError::BadKey));
        let big = vec![0u8; (256 << 10) + 1];
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"k", &big, 0, 0)), Err(StoreError::TooLarge));
        assert_eq!(s.snapshot().records_appended, 0);
    }
}
