//! Reads: a plain get, and the shared read path (under the index shard's read
//! lock) that meta `mg` and gat also use; a reader unlinks what it finds dead.

use std::sync::atomic::Ordering;

use super::{ItemMeta, ReadOpts, Store};
use crate::index::Entry;
use crate::log::record::{Header, ITEM_KEY_BINARY, ITEM_STALE};

impl Store {
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
    pub(super) fn with_entry<R>(
        &self,
        key: &[u8],
        check_live: bool,
        f: impl FnOnce(&Entry, &Header, u32) -> R,
    ) -> Option<R> {
        let now = self.clock.now();
        let shard = self.index.read(key);
        let e = shard.get(key)?;
        let h = self.item_header(e)?;
        if check_live && !self.is_live(&h, now) {
            let pos = e.pos;
            drop(shard);
            self.forget_dead(key, pos);
            return None;
        }
        Some(f(e, &h, now))
    }

    /// The header of the Set record `e` points at, with `expiry` the item's
    /// latest (a Touch record moves only the entry's).
    pub(super) fn item_header(&self, e: &Entry) -> Option<Header> {
        let mut h = self.log.read_header(e.pos)?;
        h.expiry = e.expiry();
        Some(h)
    }

    /// `get` with or without the liveness check (gat reads back the record it
    /// just wrote, which may already be expired by a negative exptime).
    pub(super) fn read_item(
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

    pub(super) fn meta_of(&self, h: &Header, e: &Entry, note: bool, now: u32) -> ItemMeta {
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
            key_binary: h.item_flags & ITEM_KEY_BINARY != 0,
        }
    }

    /// Unlink an expired or flushed item found by a reader (index only: the
    /// record stays until the cleaner reaches it; a replica expires its own).
    /// Outside the writer lock: the index counts the entry out under its
    /// shard's lock, so a `flush_all` clearing meanwhile cannot make the
    /// counters wrap.
    pub(super) fn forget_dead(&self, key: &[u8], pos: u64) {
        if let Some(e) = self.index.remove_if_at(key, pos) {
            if !e.fetched.load(Ordering::Relaxed) {
                self.stats.expired_unfetched.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
