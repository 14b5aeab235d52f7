//! The replica side of the store: apply a record copied from the primary's
//! log, resync from a new position, adopt the primary's epoch, and promotion.

use std::sync::atomic::Ordering;

use super::{ApplyError, Store};
use crate::index::Entry;
use crate::log::record::{Header, Kind, Record};

impl Store {
    /// A replica applies a record validated from its primary's log: the raw
    /// bytes go into its own log at the same position (so the two logs stay
    /// byte-for-byte alike and a promoted replica continues the numbering),
    /// then the index follows the record's meaning.
    pub fn apply_raw(&self, bytes: &[u8], r: &Record) -> std::result::Result<(), ApplyError> {
        let mut w = self.lock();
        let h = &r.header;
        let pos = h.position;
        let index = &self.index;
        let stats = &self.stats;
        let mut reclaim = |p: u64, _h: &Header, key: &[u8]| {
            stats.reclaimed.fetch_add(1, Ordering::Relaxed);
            if let Some(e) = index.remove_if_at(key, p) {
                stats.curr_items.fetch_sub(1, Ordering::Relaxed);
                stats.bytes.fetch_sub(e.len as u64, Ordering::Relaxed);
            }
        };
        w.log.append_raw(pos, &bytes[..h.total_len() as usize], &mut reclaim).map_err(ApplyError::Log)?;
        self.stats.records_appended.fetch_add(1, Ordering::Relaxed);
        w.next_cas = w.next_cas.max(h.cas.saturating_add(1));
        match h.kind {
            Kind::Set | Kind::Touch => {
                let len = h.total_len();
                let old = self.index.insert(r.key, Entry::new(pos, len as u32, h.expiry, h.time));
                self.account_replace(old, len);
                self.stats.total_items.fetch_add(1, Ordering::Relaxed);
            }
            Kind::Delete => {
                if let Some(old) = self.index.remove(r.key) {
                    self.account_remove(&old);
                }
            }
            Kind::Flush => self.apply_flush(h.expiry, self.clock.now()),
            Kind::Padding => {}
        }
        Ok(())
    }

    /// Forget everything and restart this (replica) log at `pos`: what a
    /// replica does when it joins late, is lapped, or its primary changed
    /// history. Everything live on the primary lies in [its tail, head), so
    /// replaying that window rebuilds the same state.
    pub fn resync_at(&self, pos: u64) {
        let mut w = self.lock();
        self.index.clear();
        self.stats.curr_items.store(0, Ordering::Relaxed);
        self.stats.bytes.store(0, Ordering::Relaxed);
        self.flush_at.store(0, Ordering::Relaxed);
        w.log.reset_to(pos);
    }

    /// Become a primary at `epoch` (promotion): CAS continues above anything
    /// seen, records carry the new epoch, writes are accepted.
    pub fn promote(&self, epoch: u64) {
        let mut w = self.lock();
        w.log.begin_epoch(epoch);
        self.fenced.store(false, Ordering::Release);
        self.read_only.store(false, Ordering::Release);
    }

    /// A replica adopts the epoch of the primary it follows, so its own
    /// control block tells its followers (and a later promotion) the truth.
    pub fn adopt_epoch(&self, epoch: u64, epoch_start: u64) {
        let mut w = self.lock();
        if w.log.epoch() != epoch {
            w.log.set_epoch(epoch);
            self.log.set_epoch_start(epoch_start);
        }
    }

    /// The epoch this store's log carries.
    pub fn epoch(&self) -> u64 {
        self.log.epoch()
    }
}

#[cfg(test)]
mod tests {
    use crate::log::record;
    use crate::store::tests::{get, set, store};
    use crate::store::*;

    /// Copy every record of `p`'s log from `from` into `r`, as a replica does.
    fn mirror(p: &Store, r: &Store, from: u64) -> u64 {
        let log = p.log();
        let mut pos = from;
        let head = log.head();
        while pos < head {
            pos = log.skip_gap(pos);
            if pos >= head {
                break;
            }
            let mut buf = vec![0u8; log.room_to_end(pos).min(head - pos) as usize];
            log.read_span(pos, &mut buf);
            let rec = record::validate(&buf, pos).unwrap();
            r.apply_raw(&buf, &rec).unwrap();
            pos += rec.header.total_len();
        }
        pos
    }

    #[test]
    fn replica_apply_reproduces_primary_state_byte_for_byte() {
        let p = store(4);
        let r = store(4);
        set(&p, SetMode::Set, b"a", b"1");
        set(&p, SetMode::Set, b"b", b"2");
        set(&p, SetMode::Append, b"a", b"+");
        p.delete(b"b", 0).unwrap();
        p.touch(b"a", 1000).unwrap();
        let end = mirror(&p, &r, 0);
        assert_eq!(end, p.log().head());
        assert_eq!(r.log().head(), p.log().head());
        let (pv, pm) = get(&p, b"a").unwrap();
        let (rv, rm) = get(&r, b"a").unwrap();
        assert_eq!(pv, rv);
        assert_eq!((pm.cas, pm.expiry, pm.flags), (rm.cas, rm.expiry, rm.flags));
        assert!(get(&r, b"b").is_none());
        let mut a = vec![0u8; end as usize];
        let mut b = vec![0u8; end as usize];
        p.log().read_span(0, &mut a);
        r.log().read_span(0, &mut b);
        assert!(a == b, "logs differ");
    }

    #[test]
    fn replica_follows_through_wraps_and_resyncs_from_tail() {
        let p = store(4);
        let r = store(4);
        let value = vec![b'v'; 3000];
        let mut applied = 0;
        for round in 0..6 {
            for i in 0..500 {
                set(&p, SetMode::Set, format!("k{i}").as_bytes(), &value);
            }
            p.delete(b"k7", 0).unwrap();
            if round == 3 {
                // Lapped: skip to the primary's tail with a clean slate.
                r.resync_at(p.log().tail());
                applied = p.log().tail();
            }
            applied = mirror(&p, &r, applied.max(p.log().tail()));
        }
        assert_eq!(r.snapshot().curr_items, p.snapshot().curr_items);
        for i in 0..500 {
            let k = format!("k{i}");
            assert_eq!(get(&p, k.as_bytes()).map(|x| x.0), get(&r, k.as_bytes()).map(|x| x.0), "{k}");
        }
        // A promoted replica continues the numbering with a higher epoch.
        r.set_read_only(true);
        r.promote(2);
        let SetOutcome::Stored { .. } = set(&r, SetMode::Set, b"new", b"x") else { panic!() };
        assert!(r.log().head() > p.log().head());
        assert_eq!(r.epoch(), 2);
    }
}
