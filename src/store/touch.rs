//! touch and gat / gats: a new expiry for an existing item, written as one
//! small Touch record (the key and the new expiry, no value) under the
//! writer lock, whatever the value's size. The index entry takes the new
//! expiry; the item stays where its Set record is (see the module doc of
//! `crate::store` for what the cleaner does with a touched item).

use super::{absolute_expiry, ItemMeta, ReadOpts, Store, StoreError, Writer};
use crate::log::record::{Header, Kind};
use crate::log::NewRecord;

impl Store {
    /// gat / gats: read and set a new expiry in one step (a Touch record).
    /// memcached returns the item even when the new exptime expires it.
    pub fn get_and_touch(
        &self,
        key: &[u8],
        exptime: i64,
        opts: ReadOpts,
        out: &mut Vec<u8>,
        before_value: impl FnOnce(&ItemMeta, &mut Vec<u8>),
    ) -> std::result::Result<Option<ItemMeta>, StoreError> {
        self.writable(key)?;
        let start = out.len();
        let mut w = self.lock();
        let now = self.clock.now();
        let Some((pos, h)) = self.live_locked(key, now) else { return Ok(None) };
        let expiry = absolute_expiry(exptime, now);
        // Read back while still holding the writer (lock order writer, then
        // shard), without the liveness check: the item as the touch left it.
        let hit = self
            .touch_locked(&mut w, key, pos, &h, expiry, now, || self.read_item(key, opts, false, out, before_value))?;
        let end = w.log.head();
        drop(w);
        if let Err(e) = self.replicated(end) {
            out.truncate(start);
            return Err(e);
        }
        Ok(hit)
    }

    /// touch: a new expiry for an existing item.
    pub fn touch(&self, key: &[u8], exptime: i64) -> std::result::Result<bool, StoreError> {
        self.writable(key)?;
        let mut w = self.lock();
        let now = self.clock.now();
        let Some((pos, h)) = self.live_locked(key, now) else { return Ok(false) };
        let expiry = absolute_expiry(exptime, now);
        self.touch_locked(&mut w, key, pos, &h, expiry, now, || {
            // memcached's touch finds the item with DO_UPDATE, which marks it fetched.
            if let Some(e) = self.index.get(key) {
                e.mark_fetched();
            }
        })?;
        let end = w.log.head();
        drop(w);
        self.replicated(end)?;
        Ok(true)
    }

    /// Give the live item at `pos` (header `h`) the absolute `expiry`: the
    /// index entry takes it, `read` runs (it sees the item as the touch left
    /// it), then one Touch record carries the change to replicas. CAS,
    /// flags, value, the access state and a handed-out win token stay, as
    /// memcached's touch edits the item in place. The record comes after the
    /// read so that the cleaner making room for it, should it reach this
    /// very item, cannot take the item from a gat's reply.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn touch_locked<R>(
        &self,
        w: &mut Writer,
        key: &[u8],
        pos: u64,
        h: &Header,
        expiry: u32,
        now: u32,
        read: impl FnOnce() -> R,
    ) -> std::result::Result<R, StoreError> {
        let set_expiry = |x: u32| {
            if let Some(e) = self.index.get(key).filter(|e| e.pos() == pos) {
                e.set_expiry(x);
            }
        };
        set_expiry(expiry);
        let r = read();
        let rec =
            NewRecord { kind: Kind::Touch, item_flags: 0, client_flags: h.client_flags, cas: h.cas, expiry, time: now };
        if let Err(e) = self.append_locked(w, rec, key, &[]) {
            set_expiry(h.expiry);
            return Err(e);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use crate::log::record;
    use crate::store::tests::{get, store};
    use crate::store::*;

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
    fn a_touch_is_one_small_record_whatever_the_value() {
        let s = store(4);
        let big = vec![b'b'; 200 << 10];
        s.set(&SetArgs::new(SetMode::Set, b"big", &big, 0, 0)).unwrap();
        for i in 0..1000 {
            s.set(&SetArgs::new(SetMode::Set, format!("other:{i}").as_bytes(), &[b'o'; 1000], 0, 0)).unwrap();
        }
        let before = s.snapshot();
        // 100 touches of a 200 KB item: 20 MB (five times the log) if each
        // rewrote the value; one small record each here.
        for i in 0..100 {
            assert!(s.touch(b"big", 1000 + i).unwrap());
        }
        let mut out = Vec::new();
        let opts = ReadOpts { value: true, note_access: true };
        let t0 = s.clock.now();
        assert!(s.get_and_touch(b"big", 5000, opts, &mut out, |_, _| {}).unwrap().is_some());
        assert_eq!(out, big);
        let after = s.snapshot();
        assert_eq!(after.log_head - before.log_head, 101 * record::record_len(3, 0));
        assert_eq!((after.evictions, after.curr_items), (0, 1001), "a touch evicted items");
        assert_eq!(after.bytes, before.bytes, "a touch adds no item bytes");
        assert_eq!(after.total_items, before.total_items, "a touch stores no item");
        let expiry = get(&s, b"big").unwrap().1.expiry;
        assert!((t0 + 5000..=s.clock.now() + 5000).contains(&expiry), "expiry {expiry}");
    }

    #[test]
    fn a_touch_keeps_cas_access_state_and_a_win_token() {
        let s = store(4);
        s.set(&SetArgs::new(SetMode::Set, b"k", b"v", 0, 0)).unwrap();
        assert!(!get(&s, b"k").unwrap().1.fetched);
        // Stale, then a token handed out.
        s.invalidate(b"k", 0, None).unwrap();
        let mut out = Vec::new();
        let mg = |s: &Store, touch: Option<i64>, out: &mut Vec<u8>| {
            let a = MetaGetArgs { value: true, note_access: false, touch, ..MetaGetArgs::default() };
            s.meta_get(b"k", &a, out, |_, _| {}).unwrap().unwrap()
        };
        let first = mg(&s, None, &mut out);
        assert!(first.win && first.item.stale);
        let t0 = s.clock.now();
        let touched = mg(&s, Some(100), &mut out);
        assert!(!touched.win && touched.token_sent, "a touch handed out a second token");
        assert_eq!(touched.item.cas, first.item.cas, "a touch keeps the CAS");
        assert_eq!(touched.expiry_before, 0);
        assert!((t0 + 100..=s.clock.now() + 100).contains(&touched.item.expiry));
        assert!(get(&s, b"k").unwrap().1.fetched);
    }

    #[test]
    fn the_cleaner_ends_a_touched_item_and_counts_it_by_its_latest_expiry() {
        let s = store(4);
        // Written to expire soon, touched to live long: reclaiming it after
        // its first expiry is an eviction.
        s.set(&SetArgs::new(SetMode::Set, b"extended", b"v", 0, 5)).unwrap();
        assert!(s.touch(b"extended", 10_000).unwrap());
        // Written to live long, touched to expire: reclaiming it is an
        // expiry (it was never fetched: a meta touch without the access).
        s.set(&SetArgs::new(SetMode::Set, b"shortened", b"v", 0, 10_000)).unwrap();
        let a = MetaGetArgs { touch: Some(5), ..MetaGetArgs::default() };
        assert!(s.meta_get(b"shortened", &a, &mut Vec::new(), |_, _| {}).unwrap().is_some());
        s.clock.advance(100);
        assert!(get(&s, b"extended").is_some());
        let before = s.snapshot();
        // Push both Set records out of the log: the first fill records go
        // too, evicted (never fetched) by the append that wraps.
        let mut n = 0;
        while s.index().position(b"extended").is_some() || s.index().position(b"shortened").is_some() {
            s.set(&SetArgs::new(SetMode::Set, format!("fill:{n}").as_bytes(), &[b'f'; 1000], 0, 0)).unwrap();
            n += 1;
        }
        let fills_gone = (0..n).filter(|i| s.index().position(format!("fill:{i}").as_bytes()).is_none()).count() as u64;
        let after = s.snapshot();
        assert_eq!(after.evictions - before.evictions, 1 + fills_gone, "the touched-to-live item was evicted");
        assert_eq!(after.expired_unfetched - before.expired_unfetched, 1, "the touched-to-expire item expired");
        assert_eq!(after.evicted_unfetched - before.evicted_unfetched, fills_gone, "the touch fetched it");
    }

    #[test]
    fn items_that_expired_are_not_counted_as_evictions_whatever_makes_room() {
        let s = store(4);
        let old = vec![b'x'; 100 << 10];
        s.set(&SetArgs::new(SetMode::Set, b"old", &old, 0, 0)).unwrap();
        for i in 0..3000 {
            s.set(&SetArgs::new(SetMode::Set, format!("short:{i}").as_bytes(), &[b's'; 1000], 0, 5)).unwrap();
        }
        s.clock.advance(100);
        let before = s.snapshot();
        // Every "short" item has expired: whatever reclaims them (touches of
        // an item written before they expired included) counts expiries.
        for i in 0..100 {
            assert!(s.touch(b"old", 1000 + i).unwrap() || s.index().position(b"old").is_none());
        }
        for i in 0..3000 {
            s.set(&SetArgs::new(SetMode::Set, format!("new:{i}").as_bytes(), &[b'n'; 1000], 0, 0)).unwrap();
        }
        let after = s.snapshot();
        assert!(after.expired_unfetched - before.expired_unfetched > 1000, "{after:?}");
        assert_eq!(after.evictions - before.evictions, u64::from(s.index().position(b"old").is_none()));
    }
}
