//! Time and liveness: the store's clock, memcached's exptime rules, and
//! when an item is visible (not expired by its latest expiry, not flushed;
//! `flush_all` with a delay sets `flush_at`, which the control block
//! publishes for replicas).

use std::sync::atomic::{AtomicI64, Ordering};

use super::Store;
use crate::log::record::Header;

/// memcached's boundary between relative and absolute expiry times (30 days).
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// The Flush record's `at` of a flush_all that flushes nothing (see
/// `Store::apply_flush`): no real flush time is this small.
pub(super) const FLUSH_CANCEL: u32 = 1;

/// memcached's `process_started` is 62 seconds before it started
/// (`ITEM_UPDATE_INTERVAL + 2`): absolute times from then on are its
/// relative time 1 and later.
const PROCESS_STARTED_SLACK: i64 = 62;

/// Wall-clock seconds, with an offset tests (and `debug time` tooling) can move.
#[derive(Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> u32 {
        let t = crate::clock::unix_secs().min(i64::MAX as u64) as i64;
        (t + self.offset.load(Ordering::Relaxed)).clamp(1, u32::MAX as i64) as u32
    }

    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}

/// memcached's exptime rules, to an absolute unix time (0 = never):
/// negative = already expired; up to 30 days = relative; beyond = absolute.
pub fn absolute_expiry(exptime: i64, now: u32) -> u32 {
    if exptime == 0 {
        0
    } else if exptime < 0 {
        1
    } else if exptime > REALTIME_MAXDELTA {
        exptime.min(u32::MAX as i64) as u32
    } else {
        (now as i64 + exptime).min(u32::MAX as i64) as u32
    }
}

impl Store {
    /// Whether an item is visible at `now`; `h` is its Set record's header
    /// with `expiry` the item's latest (see `item_header`).
    pub(super) fn is_live(&self, h: &Header, now: u32) -> bool {
        self.alive(h.expiry, h.time, now)
    }

    /// Whether an item written at `time` that expires at `expiry` (0 =
    /// never) is visible at `now`: not expired, not flushed. A flush point
    /// `f` ends items written before `f` from the second before it on, as
    /// memcached does (its `oldest_live` is the target time minus one, and
    /// an item is flushed once `oldest_live <= current_time`).
    pub(super) fn alive(&self, expiry: u32, time: u32, now: u32) -> bool {
        if expiry != 0 && expiry <= now {
            return false;
        }
        let f = self.flush_at.load(Ordering::Relaxed);
        !(f > FLUSH_CANCEL && now.saturating_add(1) >= f && time < f)
    }

    /// A flush_all issued at `issued` to take effect at `at`, as its Flush
    /// record says (replicas replaying the record go by its times, not
    /// their clock), with memcached 1.6's rules:
    /// - `at` 0 (no delay, 0 or negative): everything now is gone;
    /// - `at` `FLUSH_CANCEL`: an absolute time from before the server
    ///   started: nothing is flushed, and a pending delayed flush is
    ///   cancelled (memcached's `oldest_live` becomes 0);
    /// - `at` no later than a second after `issued` (an absolute time in
    ///   the past, or `flush_all 1`): everything now is gone (memcached's
    ///   `oldest_cas`), and items written before `at` die too (with
    ///   `flush_all 1`, those written in the same second);
    /// - later: the delayed-flush point.
    pub(super) fn apply_flush(&self, at: u32, issued: u32) {
        if self.flush_point_clears(at, issued) {
            self.index.clear();
        }
    }

    /// `apply_flush` but for the index: sets the flush point and says
    /// whether everything indexed now is gone (a restart's rebuild, which
    /// holds the index's shards itself, clears them).
    pub(super) fn flush_point_clears(&self, at: u32, issued: u32) -> bool {
        if at == 0 {
            self.set_flush_at(0);
            true
        } else if at == FLUSH_CANCEL {
            self.set_flush_at(0);
            false
        } else if at <= issued.saturating_add(1) {
            self.set_flush_at(at);
            true
        } else {
            self.set_flush_at(at);
            false
        }
    }

    /// The Flush record's `at` for `flush_all delay` issued at `now` (see
    /// `apply_flush`): memcached's `realtime()` of the delay, where an
    /// absolute time not after the process started (memcached counts from
    /// 62 seconds before it started) means "no flush".
    pub(super) fn flush_point(&self, delay: i64, now: u32) -> u32 {
        if delay <= 0 {
            0
        } else if delay > REALTIME_MAXDELTA && delay <= self.started as i64 - PROCESS_STARTED_SLACK {
            FLUSH_CANCEL
        } else {
            absolute_expiry(delay, now).max(FLUSH_CANCEL + 1)
        }
    }

    /// Set the delayed-flush point here and in the control block.
    pub(super) fn set_flush_at(&self, at: u32) {
        self.flush_at.store(at, Ordering::Relaxed);
        self.log.publish_flush_at(at);
    }
}

#[cfg(test)]
mod tests {
    use crate::store::tests::{get, store};
    use crate::store::*;

    #[test]
    fn expiry_relative_absolute_negative() {
        let s = store(4);
        s.set(&SetArgs::new(SetMode::Set, b"rel", b"v", 0, 10)).unwrap();
        let abs = s.clock.now() as i64 + 100;
        s.set(&SetArgs::new(SetMode::Set, b"abs", b"v", 0, abs)).unwrap();
        s.set(&SetArgs::new(SetMode::Set, b"neg", b"v", 0, -1)).unwrap();
        assert!(get(&s, b"neg").is_none());
        assert!(get(&s, b"rel").is_some());
        s.clock.advance(11);
        assert!(get(&s, b"rel").is_none());
        assert!(get(&s, b"abs").is_some());
        s.clock.advance(100);
        assert!(get(&s, b"abs").is_none());
        assert_eq!(s.snapshot().curr_items, 0);
    }

    #[test]
    fn flush_all_follows_memcached_for_past_and_short_times() {
        let s = store(4);
        s.set(&SetArgs::new(SetMode::Set, b"a", b"v", 0, 0)).unwrap();
        // Before the server started: nothing is flushed, and a pending
        // delayed flush is cancelled.
        s.flush_all(100).unwrap();
        s.flush_all(1_000_000_000).unwrap();
        s.clock.advance(200);
        assert!(get(&s, b"a").is_some(), "a time before the start flushes nothing and cancels");
        // A past time after the start: everything now; later writes live.
        s.flush_all(s.clock.now() as i64 - 5).unwrap();
        assert!(get(&s, b"a").is_none());
        s.set(&SetArgs::new(SetMode::Set, b"b", b"v", 0, 0)).unwrap();
        assert!(get(&s, b"b").is_some());
        // flush_all 1 is at once, and also ends what is written in the same second.
        s.flush_all(1).unwrap();
        assert!(get(&s, b"b").is_none());
        s.set(&SetArgs::new(SetMode::Set, b"c", b"v", 0, 0)).unwrap();
        assert!(get(&s, b"c").is_none(), "written in the second flush_all 1 names");
        s.clock.advance(1);
        s.set(&SetArgs::new(SetMode::Set, b"d", b"v", 0, 0)).unwrap();
        assert!(get(&s, b"d").is_some());
        // A delay fires from the second before it.
        s.flush_all(3).unwrap();
        s.clock.advance(1);
        assert!(get(&s, b"d").is_some());
        s.clock.advance(1);
        assert!(get(&s, b"d").is_none());
    }
}
