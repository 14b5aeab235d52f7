//! Time and liveness: the store's clock, memcached's exptime rules, and
//! when an item is visible (not expired by its latest expiry, not flushed;
//! `flush_all` with a delay sets `flush_at`, which the control block
//! publishes for replicas).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Store;
use crate::log::record::Header;

/// memcached's boundary between relative and absolute expiry times (30 days).
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// Wall-clock seconds, with an offset tests (and `debug time` tooling) can move.
#[derive(Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> u32 {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
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
    /// never) is visible at `now`: not expired, not flushed.
    pub(super) fn alive(&self, expiry: u32, time: u32, now: u32) -> bool {
        if expiry != 0 && expiry <= now {
            return false;
        }
        let f = self.flush_at.load(Ordering::Relaxed);
        !(f != 0 && now >= f && time < f)
    }

    /// A flush_all issued at `issued` to take effect at `at` (0 = at once),
    /// as its Flush record says: at once (or at a time not after it was
    /// issued) drops everything now; later sets the delayed-flush point.
    /// Replicas replaying the record go by its times, not their clock.
    pub(super) fn apply_flush(&self, at: u32, issued: u32) {
        if at == 0 || at <= issued {
            self.set_flush_at(0);
            self.index.clear();
        } else {
            self.set_flush_at(at);
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
}
