//! The replica side of the store: apply a record copied from the primary's
//! log, learn what the primary's control block says (its delayed-flush
//! point, its highest CAS), resync from a new position, adopt the
//! primary's epoch, and promotion.

use std::sync::atomic::Ordering;

use super::{cas_floor, ApplyError, Store};
use crate::index::Entry;
use crate::log::control::ControlSnapshot;
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
            index.remove_if_at(key, p);
        };
        w.log.append_raw(pos, &bytes[..h.total_len() as usize], &mut reclaim).map_err(ApplyError::Log)?;
        self.stats.records_appended.fetch_add(1, Ordering::Relaxed);
        if h.cas >= w.next_cas {
            w.next_cas = h.cas.saturating_add(1);
            // Our own followers, and a promotion of theirs, learn it from us.
            self.log.publish_max_cas(h.cas);
        }
        self.apply_meaning(r);
        Ok(())
    }

    /// What a record means for the index and the flush point, once its
    /// bytes are in our log at its position (a replica's apply, a restart's
    /// rebuild): an item whose Set record is gone is gone.
    pub(super) fn apply_meaning(&self, r: &Record) {
        let h = &r.header;
        match h.kind {
            Kind::Set => {
                let len = h.total_len();
                self.index.insert(r.key, Entry::new(h.position, len as u32, h.expiry, h.time));
                self.stats.total_items.fetch_add(1, Ordering::Relaxed);
            }
            Kind::Touch => {
                // The item it touches is the one the key holds, with its CAS;
                // a replica that replayed from a tail past the item's Set
                // record does not hold it (nor does the primary any more).
                if let Some(e) = self.index.get(r.key) {
                    if self.log.read_header(e.pos()).is_some_and(|item| item.cas == h.cas) {
                        e.set_expiry(h.expiry);
                    }
                }
            }
            Kind::Delete => {
                self.index.remove(r.key);
            }
            // By the record's times, not our clock: a delayed flush we replay
            // after its time still kills what was written before it.
            Kind::Flush => self.apply_flush(h.expiry, h.time),
            Kind::Padding => {}
        }
    }

    /// What a replica learns from its primary's control block each round,
    /// besides positions: the delayed-flush point (a replica that replayed
    /// from a tail past the Flush record would miss it otherwise) and the
    /// highest CAS issued (promotion starts above it). A flush point of 0
    /// is learnt only from a Flush record or a resync: the control block may
    /// be ahead of what we applied.
    pub fn observe_primary(&self, c: &ControlSnapshot) {
        self.primary_max_cas.fetch_max(c.max_cas, Ordering::Relaxed);
        let at = c.flush_at.min(u32::MAX as u64) as u32;
        if at != 0 && at != self.flush_at.load(Ordering::Relaxed) {
            self.set_flush_at(at);
        }
    }

    /// Forget everything and restart this (replica) log at `pos`: what a
    /// replica does when it joins late, is lapped, or its primary changed
    /// history. Everything live on the primary lies in [its tail, head), so
    /// replaying that window rebuilds the same state, with the delayed-flush
    /// point from the primary's control block (`observe_primary`).
    pub fn resync_at(&self, pos: u64) {
        let mut w = self.lock();
        self.index.clear();
        self.set_flush_at(0);
        w.log.reset_to(pos);
    }

    /// Become a primary at `epoch` (promotion): records carry the new epoch,
    /// writes are accepted, and CAS continues above anything this log holds,
    /// anything the old primary published, and every earlier epoch's range
    /// (`cas_floor`), so no CAS value is handed out twice.
    pub fn promote(&self, epoch: u64) {
        let mut w = self.lock();
        let seen = self.primary_max_cas.load(Ordering::Relaxed).saturating_add(1);
        w.next_cas = w.next_cas.max(seen).max(cas_floor(epoch));
        w.log.begin_epoch(epoch);
        // Our log is its own history now, no longer a mirror of another.
        self.log.set_follows(0);
        self.log.set_fenced_by(0);
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

    /// `p`'s control block as a replica reads it.
    fn control(p: &Store) -> crate::log::control::ControlSnapshot {
        let region = p.log().region();
        crate::log::control::ControlSnapshot::load(|off| {
            region.atomic_u64(off).load(std::sync::atomic::Ordering::Acquire)
        })
    }

    #[test]
    fn a_replica_applies_touches_as_expiries_and_ignores_one_for_an_item_it_lacks() {
        let p = store(4);
        let r = store(4);
        set(&p, SetMode::Set, b"k", b"v");
        for i in 0..10 {
            set(&p, SetMode::Set, format!("filler:{i}").as_bytes(), &vec![b'f'; 200 << 10]);
        }
        let t0 = p.clock.now();
        assert!(p.touch(b"k", 1000).unwrap());
        let end = mirror(&p, &r, 0);
        assert_eq!(get(&r, b"k").unwrap().1.expiry, get(&p, b"k").unwrap().1.expiry);
        let touched = get(&r, b"k").unwrap().1.expiry;
        assert!((t0 + 1000..=p.clock.now() + 1000).contains(&touched), "expiry {touched}");
        // The primary's cleaner takes k's Set record but not its Touch; a
        // replica replaying from that tail sees the Touch alone.
        let mut i = 0;
        while p.index().position(b"k").is_some() {
            set(&p, SetMode::Set, format!("more:{i}").as_bytes(), &[b'm'; 1000]);
            i += 1;
        }
        assert!(p.log().tail() < end, "the Touch record is still in the primary's log");
        let fresh = store(4);
        fresh.resync_at(p.log().tail());
        assert_eq!(mirror(&p, &fresh, p.log().tail()), p.log().head());
        assert!(get(&fresh, b"k").is_none(), "the replica made up an item from a touch");
        assert_eq!(fresh.snapshot().curr_items, p.snapshot().curr_items);
        assert_eq!(fresh.snapshot().bytes, p.snapshot().bytes);
    }

    #[test]
    fn cas_values_stay_unique_across_a_promotion() {
        let p = store(4);
        let r = store(4);
        let SetOutcome::Stored { cas: replicated } = set(&p, SetMode::Set, b"k", b"v1") else { panic!() };
        mirror(&p, &r, 0);
        r.observe_primary(&control(&p));
        // Acknowledged by the primary, which dies before the replica reads it.
        let head = p.log().head();
        let SetOutcome::Stored { cas: lost } = set(&p, SetMode::Set, b"k", b"v2") else { panic!() };
        let mut more = vec![lost];
        for i in 0..10 {
            let SetOutcome::Stored { cas } = set(&p, SetMode::Set, format!("x{i}").as_bytes(), b"x") else { panic!() };
            more.push(cas);
        }
        assert!(p.log().head() > head);
        r.set_read_only(true);
        r.promote(2);
        let mut issued = Vec::new();
        for i in 0..20 {
            let SetOutcome::Stored { cas } = set(&r, SetMode::Set, format!("y{i}").as_bytes(), b"y") else { panic!() };
            issued.push(cas);
        }
        let SetOutcome::Stored { cas: now } = set(&r, SetMode::Set, b"k", b"v3") else { panic!() };
        issued.push(now);
        for c in &issued {
            assert!(!more.contains(c) && *c != replicated, "CAS {c} handed out twice");
            assert!(*c >= cas_floor(2), "CAS {c} below epoch 2's range");
        }
        // A client holding the lost write's CAS cannot overwrite the new value.
        let mut stale = SetArgs::new(SetMode::Set, b"k", b"mine", 0, 0);
        stale.cas = lost;
        assert_eq!(r.set(&stale).unwrap(), SetOutcome::Exists);
        assert_eq!(get(&r, b"k").unwrap().0, b"v3");
    }

    #[test]
    fn a_replica_replaying_from_a_tail_past_a_delayed_flush_learns_it() {
        let p = store(4);
        set(&p, SetMode::Set, b"old", b"1");
        p.flush_all(100).unwrap();
        let after_flush = p.log().head();
        set(&p, SetMode::Set, b"later", b"2");
        // The replica joins from a tail past the Flush record.
        let r = store(4);
        r.resync_at(after_flush);
        r.observe_primary(&control(&p));
        mirror(&p, &r, after_flush);
        assert!(get(&r, b"later").is_some());
        for s in [&p, &r] {
            s.clock.advance(101);
        }
        assert!(get(&p, b"later").is_none(), "written before the flush point");
        assert!(get(&r, b"later").is_none(), "the replica kept serving what its primary flushed");
        // A later resync forgets the point, and the control block restores it.
        r.resync_at(p.log().head());
        assert_eq!(control(&r).flush_at, 0);
        r.observe_primary(&control(&p));
        assert_eq!(control(&r).flush_at, control(&p).flush_at, "a replica publishes the point to its own followers");
    }

    #[test]
    fn a_replayed_delayed_flush_goes_by_the_records_times() {
        let p = store(4);
        let r = store(4);
        set(&p, SetMode::Set, b"before", b"1");
        p.flush_all(5).unwrap();
        set(&p, SetMode::Set, b"between", b"2");
        // Both clocks pass the flush point before the replica replays it.
        for s in [&p, &r] {
            s.clock.advance(10);
        }
        set(&p, SetMode::Set, b"after", b"3");
        mirror(&p, &r, 0);
        for k in [&b"before"[..], b"between", b"after"] {
            assert_eq!(get(&p, k).is_some(), get(&r, k).is_some(), "{}", String::from_utf8_lossy(k));
        }
        assert!(get(&r, b"between").is_none() && get(&r, b"after").is_some());
    }
}
