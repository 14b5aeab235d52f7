//! Reads: a plain get, and the shared read path (under the index shard's read
//! lock) that meta `mg` and gat also use; a reader unlinks what it finds dead.

use std::sync::atomic::Ordering;

use super::{ItemMeta, ReadOpts, Store};
use crate::index::Held;
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

    /// A multi-get's keys are about to be read: start loading their index
    /// slots and records (`Index::prefetch_lookups`).
    pub fn prefetch_gets<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) {
        self.index.prefetch_lookups(keys)
    }

    /// Look `key` up and run `f` on its index entry and record header while
    /// the shard's read lock is held (so the record cannot be reclaimed under
    /// it). With `check_live`, an expired or flushed item is unlinked and
    /// reads as a miss.
    pub(super) fn with_entry<R>(
        &self,
        key: &[u8],
        check_live: bool,
        f: impl FnOnce(&Held, &Header, u32) -> R,
    ) -> Option<R> {
        let now = self.clock.now();
        let e = self.index.get(key)?;
        let h = self.item_header(e.pos(), e.expiry())?;
        if check_live && !self.is_live(&h, now) {
            let pos = e.pos();
            drop(e);
            self.forget_dead(key, pos);
            return None;
        }
        Some(f(&e, &h, now))
    }

    /// The header of the item's Set record at `pos`, with `expiry` the
    /// item's latest, the entry's (a Touch record moves only the entry's).
    pub(super) fn item_header(&self, pos: u64, expiry: u32) -> Option<Header> {
        let mut h = self.log.read_header(pos)?;
        h.expiry = expiry;
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
                self.log.append_value(e.pos(), h, out);
            }
            meta
        })
    }

    pub(super) fn meta_of(&self, h: &Header, e: &Held, note: bool, now: u32) -> ItemMeta {
        let meta = meta_from(h, e.last_access(), e.fetched(), e.win_sent());
        if note {
            e.touch_access(now);
        }
        meta
    }

    /// Unlink an expired or flushed item found by a reader (index only: the
    /// record stays until the cleaner reaches it; a replica expires its own).
    /// Outside the writer lock: the index counts the entry out under its
    /// shard's lock, so a `flush_all` clearing meanwhile cannot make the
    /// counters wrap.
    pub(super) fn forget_dead(&self, key: &[u8], pos: u64) {
        if let Some(e) = self.index.remove_if_at(key, pos) {
            if !e.fetched {
                self.stats.expired_unfetched.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Visit every live item (`lru_crawler metadump`, `stats sizes`): its key
    /// and metadata, without noting an access. Shard by shard under each
    /// shard's read lock (records cannot be reclaimed meanwhile), so a
    /// write racing the walk may or may not be seen, as with memcached's
    /// crawler.
    pub fn for_each_item(&self, mut f: impl FnMut(&[u8], &ItemMeta)) {
        let now = self.clock.now();
        self.index.for_each(|key, e| {
            let Some(h) = self.item_header(e.pos, e.expiry) else { return };
            if self.is_live(&h, now) {
                f(key, &meta_from(&h, e.last_access, e.fetched, e.win_sent));
            }
        });
    }
}

/// What a reader reports of an item: its record's header (expiry the
/// latest) and the entry's access state.
fn meta_from(h: &Header, last_access: u32, fetched: bool, win_taken: bool) -> ItemMeta {
    ItemMeta {
        flags: h.client_flags,
        cas: h.cas,
        expiry: h.expiry,
        value_len: h.value_len,
        last_access,
        fetched,
        stale: h.item_flags & ITEM_STALE != 0,
        // A plain read never hands out a win token (memcached: only `mg`
        // does, see `meta_get`); it only reports whether one is out.
        win: false,
        win_taken,
        key_binary: h.item_flags & ITEM_KEY_BINARY != 0,
    }
}
