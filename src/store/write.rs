//! Everything under the writer lock: the append and accounting helpers every
//! mutation uses, and set (add, replace, append, prepend, cas), delete,
//! invalidate (`md I`) and flush_all.

use std::sync::atomic::Ordering;

use super::{absolute_expiry, DeleteOutcome, SetArgs, SetMode, SetOutcome, Store, StoreError, Writer};
use crate::index::Entry;
use crate::log::record::{Header, Kind, ITEM_KEY_BINARY, ITEM_STALE};
use crate::log::{AppendError, NewRecord, Reclaim};

/// The access state a new item starts with: memcached keeps it across an
/// in-place change (incr/decr that fits, `md I`, a stale `ms I`). Set on
/// the entry before it is inserted, so a lock-free reader never sees the
/// item without it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ItemState {
    pub fetched: bool,
    pub win_sent: bool,
}

/// `-M`: the log space item writes leave for Delete, Touch and Flush
/// records (1/64 of the log: about a thousand deletes of long keys in a
/// 2 MiB log).
pub(super) fn no_evictions_reserve(capacity: u64) -> u64 {
    capacity / 64
}

impl Store {
    /// The live item for `key`, read under the writer lock (so it cannot
    /// change or be reclaimed while the caller decides): its Set record's
    /// position and header, `expiry` the item's latest.
    pub(super) fn live_locked(&self, key: &[u8], now: u32) -> Option<(u64, Header)> {
        let (pos, h) = {
            let e = self.index.get(key)?;
            (e.pos(), self.item_header(e.pos(), e.expiry())?)
        };
        if self.is_live(&h, now) {
            Some((pos, h))
        } else {
            None
        }
    }

    /// Append an item (a Set record) and point the index at it, its entry
    /// starting with `state`. Caller holds the lock.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_locked(
        &self,
        w: &mut Writer,
        key: &[u8],
        value: &[&[u8]],
        flags: u32,
        expiry: u32,
        cas: u64,
        time: u32,
        item_flags: u8,
        state: ItemState,
    ) -> std::result::Result<u64, StoreError> {
        let rec = NewRecord { kind: Kind::Set, item_flags, client_flags: flags, cas, expiry, time };
        let pos = self.append_locked(w, rec, key, value)?;
        let len = w.log.head() - pos;
        let entry = Entry::new(pos, len as u32, expiry, time).with_state(state.fetched, state.win_sent);
        self.index.insert(key, entry);
        self.stats.total_items.fetch_add(1, Ordering::Relaxed);
        Ok(pos)
    }

    pub(super) fn append_locked(
        &self,
        w: &mut Writer,
        rec: NewRecord,
        key: &[u8],
        value: &[&[u8]],
    ) -> std::result::Result<u64, StoreError> {
        // The cleaner judges at the clock, not at the new record's time (a
        // record may carry an older one).
        let now = self.clock.now();
        let index = &self.index;
        let stats = &self.stats;
        let mut reclaim = |pos: u64, h: &Header, key: &[u8]| {
            stats.reclaimed.fetch_add(1, Ordering::Relaxed);
            // Reclaiming an item's Set record ends the item, touched or not;
            // its latest expiry says whether it was evicted or had expired.
            if let Some(e) = index.remove_if_at(key, pos) {
                let fetched = e.fetched;
                if self.alive(e.expiry, h.time, now) {
                    stats.evictions.fetch_add(1, Ordering::Relaxed);
                    if e.expiry != 0 {
                        stats.evicted_nonzero.fetch_add(1, Ordering::Relaxed);
                    }
                    let idle = now.saturating_sub(e.last_access);
                    stats.evicted_time.store(idle as u64, Ordering::Relaxed);
                    if !fetched {
                        stats.evicted_unfetched.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(hook) = self.eviction_hook.get() {
                        let ttl = if e.expiry == 0 { -1 } else { i64::from(e.expiry) - i64::from(now) };
                        hook(key, &super::Evicted { fetched, ttl, idle, value_len: h.value_len });
                    }
                } else if !fetched {
                    stats.expired_unfetched.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let r = if w.evictions {
            w.log.append(rec, key, value, &mut reclaim)
        } else {
            // `-M`: an item write (memcached's allocation) reclaims only dead
            // records and keeps `reserve` bytes free the same way, for the
            // Delete, Touch and Flush records memcached writes without
            // allocating: a full cache must still take deletes. Those use the
            // reserve, and only once it is gone reclaim a live record (an
            // eviction) rather than fail.
            let mut live = |pos: u64, h: &Header, key: &[u8]| {
                self.index.get(key).is_some_and(|e| e.pos() == pos && self.alive(e.expiry(), h.time, now))
            };
            let reserve = if rec.kind == Kind::Set { no_evictions_reserve(w.log.log().capacity()) } else { 0 };
            let policy = Reclaim::DeadOnly { live: &mut live, reserve };
            match w.log.append_with(rec, key, value, policy, &mut reclaim) {
                Err(AppendError::NoRoom) if rec.kind != Kind::Set => w.log.append(rec, key, value, &mut reclaim),
                r => r,
            }
        };
        let pos = r.map_err(|e| match e {
            AppendError::TooLarge => StoreError::TooLarge,
            AppendError::NoRoom => {
                self.stats.outofmemory.fetch_add(1, Ordering::Relaxed);
                StoreError::NoMemory
            }
        })?;
        self.stats.records_appended.fetch_add(1, Ordering::Relaxed);
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

    /// The next CAS value, published in the control block as issued (so the
    /// published `max cas` bounds every CAS a client may hold).
    pub(super) fn next_cas(&self, w: &mut Writer) -> u64 {
        let c = w.next_cas;
        w.next_cas = c.saturating_add(1);
        self.log.publish_max_cas(c);
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
        match (a.mode, existing) {
            (SetMode::Add, Some(_)) => return Ok(SetOutcome::NotStored),
            (SetMode::Replace, None) => return Ok(SetOutcome::NotStored),
            (SetMode::Append | SetMode::Prepend, None) if a.vivify.is_none() => return Ok(SetOutcome::NotStored),
            (SetMode::Append | SetMode::Prepend, Some((_, h)))
                if h.value_len as usize + a.value.len() > self.max_item_size =>
            {
                return Err(StoreError::TooLarge)
            }
            _ => {}
        }
        let cas = self.next_cas(&mut w);
        let fresh = ItemState::default();
        match (a.mode, existing) {
            (SetMode::Append | SetMode::Prepend, None) => {
                let expiry = absolute_expiry(a.vivify.unwrap_or(0), now);
                self.put_locked(&mut w, a.key, &[a.value], a.flags, expiry, cas, now, 0, fresh)?;
            }
            (SetMode::Append | SetMode::Prepend, Some((pos, h))) => {
                let old = self.take_value(&mut w, pos, &h);
                let parts: [&[u8]; 2] = if a.mode == SetMode::Append { [&old, a.value] } else { [a.value, &old] };
                // Flags and expiry stay the item's own, as memcached does; it
                // builds a new item, so the stale mark does not carry over.
                let r = self.put_locked(&mut w, a.key, &parts, h.client_flags, h.expiry, cas, now, 0, fresh);
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
                // (memcached copies ITEM_TOKEN_SENT), so no second client
                // wins: the new entry has it from the start.
                let token_out = item_flags == ITEM_STALE && self.entry_state(a.key).win_sent;
                let state = ItemState { fetched: false, win_sent: token_out };
                if a.key_binary {
                    item_flags |= ITEM_KEY_BINARY;
                }
                self.put_locked(&mut w, a.key, &[a.value], a.flags, expiry, cas, now, item_flags, state)?;
            }
        }
        let end = w.log.head();
        drop(w);
        self.replicated(end)?;
        Ok(SetOutcome::Stored { cas })
    }

    /// The access state of the key's index entry.
    pub(super) fn entry_state(&self, key: &[u8]) -> ItemState {
        self.index.get(key).map(|e| ItemState { fetched: e.fetched(), win_sent: e.win_sent() }).unwrap_or_default()
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
        self.index.remove(key);
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
        let cas = self.next_cas(&mut w);
        // memcached marks the item in place: it stays fetched; the win token
        // is cleared so the next reader can win.
        let state = ItemState { fetched: self.entry_state(key).fetched, win_sent: false };
        let flags = ITEM_STALE | (h.item_flags & ITEM_KEY_BINARY);
        let r = self.put_locked(&mut w, key, &[&value], h.client_flags, expiry, cas, now, flags, state);
        w.scratch = value;
        r?;
        let end = w.log.head();
        drop(w);
        self.replicated(end)?;
        Ok(DeleteOutcome::Deleted)
    }

    /// flush_all [delay]: 0 drops everything now; a delay makes everything
    /// written before then die at that time; memcached's rules for a delay
    /// that is a past time are `apply_flush`'s.
    pub fn flush_all(&self, delay: i64) -> std::result::Result<(), StoreError> {
        self.check_role()?;
        let mut w = self.lock();
        let now = self.clock.now();
        let at = self.flush_point(delay, now);
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
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"", b"v", 0, 0)), Err(StoreError::BadKey));
        let big = vec![0u8; (256 << 10) + 1];
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"k", &big, 0, 0)), Err(StoreError::TooLarge));
        assert_eq!(s.snapshot().records_appended, 0);
    }

    #[test]
    fn keys_are_any_bytes_up_to_250() {
        let s = store(4);
        let mut keys: Vec<Vec<u8>> = [&b"a b"[..], b"\x10memcaslap", b"\0", b"a\r\nb", b"\x7f", b"\xff\xfe"]
            .iter()
            .map(|k| k.to_vec())
            .collect();
        keys.push(vec![0x01; 250]);
        for k in &keys {
            assert!(valid_key(k));
            assert!(matches!(set(&s, SetMode::Set, k, b"v"), SetOutcome::Stored { .. }), "{k:?}");
            assert_eq!(get(&s, k).unwrap().0, b"v", "{k:?}");
        }
        assert_eq!(s.snapshot().curr_items, keys.len() as u64);
    }

    #[test]
    fn a_full_cache_stays_within_the_memory_limit() {
        // 4 MiB and the control block take three huge pages: the log still
        // holds only 4 MiB.
        let s = store(4);
        let snap = s.snapshot();
        assert_eq!(snap.limit_maxbytes, 4 << 20);
        assert!(snap.log_capacity <= snap.limit_maxbytes, "{} > {}", snap.log_capacity, snap.limit_maxbytes);
        assert!(s.log().region().len() > snap.limit_maxbytes as usize, "the region is rounded up to pages");
        let mut peak = 0;
        for i in 0..12_000 {
            set(&s, SetMode::Set, format!("fill:{i}").as_bytes(), &[b'x'; 1000]);
            peak = peak.max(s.snapshot().bytes);
        }
        let snap = s.snapshot();
        assert!(snap.evictions > 0, "the cache filled");
        assert!(peak <= snap.limit_maxbytes, "bytes {peak} > limit_maxbytes {}", snap.limit_maxbytes);
        assert!(peak > snap.limit_maxbytes * 9 / 10, "the log is used: {peak}");
    }

    /// `-M`: filled with live items until a write is refused; the refusal
    /// writes nothing, loses nothing and is counted; dead records behind a
    /// live one free nothing until the live one is gone; deletes still work.
    #[test]
    fn without_evictions_a_full_log_refuses_and_keeps_every_item() {
        let s = store(4);
        s.set_evictions(false);
        let v = [b'x'; 1000];
        let mut n = 0;
        let refused = loop {
            match s.set(&SetArgs::new(SetMode::Set, format!("k{n}").as_bytes(), &v, 0, 0)) {
                Ok(SetOutcome::Stored { .. }) if n < 10_000 => n += 1,
                other => break other,
            }
        };
        assert_eq!(refused, Err(StoreError::NoMemory));
        let snap = s.snapshot();
        assert_eq!((snap.evictions, snap.outofmemory, snap.curr_items), (0, 1, n));
        assert!(snap.log_head - snap.log_tail > snap.log_capacity * 9 / 10, "the log filled");
        // Refused again, and nothing in the log moved.
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"again", &v, 0, 0)), Err(StoreError::NoMemory));
        let again = s.snapshot();
        assert_eq!(
            (again.log_head, again.log_tail, again.records_appended),
            (snap.log_head, snap.log_tail, snap.records_appended)
        );
        assert_eq!(again.outofmemory, 2);
        let incr = ArithArgs { key: b"k0", incr: true, delta: 1, cas: 0, initial: None, new_exptime: None };
        assert!(s.arith(&incr).is_ok(), "not numeric: refused before any write");
        for i in 0..n {
            assert_eq!(get(&s, format!("k{i}").as_bytes()).unwrap().0, v, "k{i}");
        }
        // Deleting items behind the tail frees nothing: the tail is live.
        for i in 10..20 {
            assert_eq!(s.delete(format!("k{i}").as_bytes(), 0).unwrap(), DeleteOutcome::Deleted);
        }
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"new", &v, 0, 0)), Err(StoreError::NoMemory));
        assert_eq!(s.snapshot().evictions, 0, "deletes took the reserve, not a live item");
        // Once the items at the tail are dead too, their space and the
        // deleted items' behind them are reclaimed.
        for i in 0..10 {
            s.delete(format!("k{i}").as_bytes(), 0).unwrap();
        }
        for i in 0..15 {
            let r = s.set(&SetArgs::new(SetMode::Set, format!("new{i}").as_bytes(), &v, 0, 0));
            assert!(matches!(r, Ok(SetOutcome::Stored { .. })), "new{i}: {r:?}");
        }
        let snap = s.snapshot();
        assert_eq!(snap.evictions, 0);
        for i in 20..n {
            assert!(get(&s, format!("k{i}").as_bytes()).is_some(), "k{i} kept");
        }
        // Expired items are dead: they are reclaimed.
        let t = store(4);
        t.set_evictions(false);
        for i in 0..n {
            t.set(&SetArgs::new(SetMode::Set, format!("e{i}").as_bytes(), &v, 0, 10)).unwrap();
        }
        assert!(t.snapshot().log_head - t.snapshot().log_tail > t.snapshot().log_capacity * 9 / 10);
        t.clock.advance(11);
        // (A lap's padding falls elsewhere this time: one item fewer.)
        for i in 0..n - 1 {
            let r = t.set(&SetArgs::new(SetMode::Set, format!("f{i}").as_bytes(), &v, 0, 0));
            assert!(matches!(r, Ok(SetOutcome::Stored { .. })), "f{i}/{n}: {r:?}");
        }
        assert_eq!((t.snapshot().evictions, t.snapshot().outofmemory), (0, 0));
    }

    /// A store whose `--sync-replicas` wait always times out.
    fn unconfirmed() -> Store {
        let s = store(4);
        let never = crate::store::sync::tests::Confirmed(Default::default(), std::time::Duration::ZERO);
        s.set_sync_wait(Box::new(never));
        s
    }

    #[test]
    fn every_write_waits_for_the_replicas() {
        let s = unconfirmed();
        let not = Err(StoreError::NotReplicated);
        assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"k", b"1", 0, 0)), not.map(|()| SetOutcome::NotStored));
        assert_eq!(s.invalidate(b"k", 0, None), not.map(|()| DeleteOutcome::Deleted), "md I");
        let mut out = b"before".to_vec();
        let opts = ReadOpts { value: true, note_access: true };
        assert_eq!(s.get_and_touch(b"k", 100, opts, &mut out, |_, o| o.extend_from_slice(b"hit")), not.map(|()| None));
        assert_eq!(out, b"before", "no hit is answered with the error");
        let touch = MetaGetArgs { value: true, touch: Some(100), ..MetaGetArgs::default() };
        assert_eq!(s.meta_get(b"k", &touch, &mut out, |_, _| {}).map(|m| m.is_some()), not.map(|()| false), "mg T");
        let vivify = MetaGetArgs { vivify: Some(100), ..MetaGetArgs::default() };
        assert_eq!(s.meta_get(b"new", &vivify, &mut out, |_, _| {}).map(|m| m.is_some()), not.map(|()| false), "mg N");
        assert_eq!(out, b"before");
        let create = ArithArgs { key: b"n", incr: true, delta: 1, cas: 0, initial: Some((5, 0)), new_exptime: None };
        assert_eq!(s.arith(&create), not.map(|()| ArithOutcome::NotFound), "incr creating the item");
        assert_eq!(s.arith(&create), not.map(|()| ArithOutcome::NotFound), "incr");
        assert_eq!(s.touch(b"k", 1), not.map(|()| false));
        assert_eq!(s.delete(b"k", 0), not.map(|()| DeleteOutcome::Deleted));
        assert_eq!(s.flush_all(0), not);
        // A read writes nothing and waits for nothing.
        reads_wait_for_nothing(&s);
    }

    fn reads_wait_for_nothing(s: &Store) {
        let _ = s.set(&SetArgs::new(SetMode::Set, b"r", b"v", 0, 0));
        assert!(get(s, b"r").is_some());
        let plain = MetaGetArgs { value: true, vivify: Some(100), ..MetaGetArgs::default() };
        assert!(s.meta_get(b"r", &plain, &mut Vec::new(), |_, _| {}).unwrap().is_some(), "mg N on a hit");
    }

    #[test]
    fn a_stale_store_never_lets_a_second_reader_win() {
        // `ms I` with an old CAS stores a stale value keeping the token that
        // is out; a lock-free `mg` racing it must never win a second one.
        let s = std::sync::Arc::new(store(4));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let wins = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let readers: Vec<_> = (0..1)
            .map(|_| {
                let (s, stop, wins) = (s.clone(), stop.clone(), wins.clone());
                std::thread::spawn(move || {
                    let a = MetaGetArgs { value: false, note_access: false, ..MetaGetArgs::default() };
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Ok(Some(m)) = s.meta_get(b"k", &a, &mut Vec::new(), |_, _| {}) {
                            if m.win {
                                wins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        let rounds = 3000;
        for _ in 0..rounds {
            let SetOutcome::Stored { cas } = set(&s, SetMode::Set, b"k", b"v") else { panic!() };
            // Invalidated: exactly one reader wins the right to refill it...
            s.invalidate(b"k", 0, None).unwrap();
            while !s.entry_state(b"k").win_sent {
                std::hint::spin_loop();
            }
            // ... and a stale write-back keeps that token out.
            let mut a = SetArgs::new(SetMode::Set, b"k", b"old", 0, 0);
            a.cas = cas;
            a.invalidate = true;
            assert!(matches!(s.set(&a).unwrap(), SetOutcome::Stored { .. }));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(wins.load(std::sync::atomic::Ordering::Relaxed), rounds, "a token was won twice");
    }

    #[test]
    fn readers_unlinking_expired_items_never_make_the_counters_wrap() {
        // Readers unlink expired items outside the writer lock while
        // flush_all empties the index: every entry is counted out once.
        let s = std::sync::Arc::new(store(4));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let keys: Vec<Vec<u8>> = (0..64).map(|i| format!("e{i}").into_bytes()).collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (s, stop, keys) = (s.clone(), stop.clone(), keys.clone());
                std::thread::spawn(move || {
                    let mut worst = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for k in &keys {
                            let _ = get(&s, k);
                        }
                        let snap = s.snapshot();
                        worst = worst.max(snap.curr_items).max(snap.bytes);
                    }
                    worst
                })
            })
            .collect();
        for round in 0..600 {
            for k in &keys {
                s.set(&SetArgs::new(SetMode::Set, k, b"v", 0, -1)).unwrap();
            }
            if round % 2 == 0 {
                s.flush_all(0).unwrap();
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let bound = 64 * crate::log::record::record_len(3, 1);
        for r in readers {
            let worst = r.join().unwrap();
            assert!(worst <= bound, "a counter wrapped: {worst}");
        }
        s.flush_all(0).unwrap();
        let snap = s.snapshot();
        assert_eq!((snap.curr_items, snap.bytes), (0, 0));
    }
}
