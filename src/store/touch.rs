//! touch and gat / gats: a new expiry for an existing item, written as a
//! Touch record under the writer lock.

use std::sync::atomic::Ordering;

use super::{absolute_expiry, ItemMeta, ReadOpts, Store, StoreError, Writer};
use crate::log::record::{Header, Kind};

impl Store {
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

    /// Re-append the item at `pos` with a new expiry. CAS is unchanged, as
    /// memcached's touch leaves it.
    pub(super) fn retouch_locked(
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
}

#[cfg(test)]
mod tests {
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
}
