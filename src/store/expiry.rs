//! Time and liveness: the store's clock, memcached's exptime rules, and
//! when a record is visible (not expired, not flushed; `flush_all` with a
//! delay sets `flush_at`).

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
    /// Whether the record is visible at `now` (not expired, not flushed).
    pub(super) fn is_live(&self, h: &Header, now: u32) -> bool {
        if h.expiry != 0 && h.expiry <= now {
            return false;
        }
        let f = self.flush_at.load(Ordering::Relaxed);
        !(f != 0 && now >= f && h.time < f)
    }

    pub(super) fn apply_flush(&self, at: u32, now: u32) {
        if at == 0 || at <= now {
            self.flush_at.store(0, Ordering::Relaxed);
            self.index.clear();
            self.stats.curr_items.store(0, Ordering::Relaxed);
            self.stats.bytes.store(0, Ordering::Relaxed);
        } else {
            self.flush_at.store(at, Ordering::Relaxed);
        }
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
