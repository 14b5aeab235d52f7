//! What a replica accepts from its primary beyond a record's checksum: every
//! field of the control block and of a record is bounded before the replica
//! uses it. A checksum only says the primary wrote these bytes; a buggy or
//! hostile primary writes checksum-valid nonsense too, and nothing it sends
//! may crash, hang or grow a replica.
//!
//! The bounds are far beyond anything a real log reaches (positions grow by
//! the bytes written, epochs by one per promotion, CAS by one per write), so
//! a value past them is refused, with the reason, rather than risk an
//! overflow in the arithmetic that follows.

use crate::log::control::ControlSnapshot;
use crate::log::record::ALIGN;
use crate::log::LogGeometry;

/// Highest log position a primary may report: 4 EiB written, centuries at
/// memory speed, and far from `u64::MAX` so `position + length` never wraps.
pub const MAX_POSITION: u64 = 1 << 62;
/// Highest epoch a primary may report: one per promotion. Below `u64::MAX`
/// so a promotion (`epoch + 1`) never overflows.
pub const MAX_EPOCH: u64 = u32::MAX as u64;
/// A record's bounds: the log's own check, which a restart's scan applies
/// to its memory file too.
pub use crate::log::recover::{check_record, MAX_CAS};

/// Check a primary's control block: its layout is one we read, its log has
/// our capacity, and head, tail, epoch, epoch start and max CAS are in
/// bounds and in order. Returns the primary's geometry, or why not.
pub fn check_control(c: &ControlSnapshot, our_capacity: u64) -> Result<LogGeometry, String> {
    if !c.is_valid() {
        return Err("does not hold a logmemcached log of a version we read".into());
    }
    if c.capacity != our_capacity {
        return Err(format!(
            "primary's log holds {} bytes, ours {}: start the replica with the same -m as its primary",
            c.capacity, our_capacity
        ));
    }
    let Some(geo) = LogGeometry::new(c.capacity) else {
        return Err(format!("reports a log of {} bytes, which no log has", c.capacity));
    };
    if c.head > MAX_POSITION {
        return Err(format!("reports head {}, beyond any log's ({MAX_POSITION})", c.head));
    }
    if !c.head.is_multiple_of(ALIGN) || !c.tail.is_multiple_of(ALIGN) {
        return Err(format!("reports head {} and tail {}, not {ALIGN}-byte aligned", c.head, c.tail));
    }
    if c.epoch == 0 || c.epoch >= MAX_EPOCH {
        return Err(format!("reports epoch {}, outside 1..{MAX_EPOCH}", c.epoch));
    }
    if c.epoch_start > c.head {
        return Err(format!("says its epoch began at {}, above its head {}", c.epoch_start, c.head));
    }
    if c.max_cas > MAX_CAS {
        return Err(format!("reports max CAS {}, beyond {MAX_CAS}", c.max_cas));
    }
    Ok(geo)
}

/// Whether a header's claimed length (checksum not yet seen) is one a
/// replica may read that much staging for.
pub fn plausible_len(len: usize, geo: LogGeometry) -> bool {
    len as u64 <= geo.max_record()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{Header, Kind, HEADER_LEN};

    const CAP: u64 = 1 << 20;

    fn control() -> ControlSnapshot {
        let mut c = crate::replication::fuzzing::fresh_control(CAP);
        (c.head, c.tail, c.epoch, c.max_cas, c.epoch_start) = (3 * CAP, 2 * CAP + 64, 2, 100, CAP);
        c
    }

    fn header(kind: Kind, position: u64, value_len: u32) -> Header {
        Header {
            position,
            checksum: 0,
            kind,
            key_len: if kind == Kind::Padding { 0 } else { 3 },
            item_flags: 0,
            value_len,
            client_flags: 0,
            cas: 5,
            expiry: 0,
            time: 0,
            epoch: 2,
        }
    }

    #[test]
    fn a_sane_control_block_passes_and_each_absurd_field_is_named() {
        assert_eq!(check_control(&control(), CAP).map(LogGeometry::capacity), Ok(CAP));
        type Spoil = fn(&mut ControlSnapshot);
        let bad: [(Spoil, &str); 7] = [
            (|c| c.capacity = CAP * 2, "same -m"),
            (|c| c.tail = c.head + 8, "version we read"),
            (
                |c| {
                    c.head = u64::MAX - 7;
                    c.tail = c.head - 64;
                },
                "beyond any log",
            ),
            (|c| c.head += 3, "aligned"),
            (|c| c.epoch = u64::MAX, "outside"),
            (|c| c.epoch_start = c.head + 8, "above its head"),
            (|c| c.max_cas = u64::MAX, "max CAS"),
        ];
        for (spoil, why) in bad {
            let mut c = control();
            spoil(&mut c);
            let e = check_control(&c, CAP).unwrap_err();
            assert!(e.contains(why), "{c:?}: {e}");
        }
        let mut c = control();
        c.epoch = 0;
        assert!(check_control(&c, CAP).is_err());
    }

    #[test]
    fn records_must_fit_the_log_and_carry_sane_fields() {
        let geo = LogGeometry::new(CAP).unwrap();
        assert_eq!(check_record(&header(Kind::Set, 0, 100), geo), Ok(()));
        // Larger than half the log, though it fits the lap.
        let e = check_record(&header(Kind::Set, 0, (CAP / 2) as u32), geo).unwrap_err();
        assert!(e.contains("largest record"), "{e}");
        // Past the lap's end.
        let e = check_record(&header(Kind::Set, CAP - 64, 100), geo).unwrap_err();
        assert!(e.contains("left before"), "{e}");
        // Padding ends exactly at the lap's end.
        let pad = 4096u64;
        assert_eq!(check_record(&header(Kind::Padding, CAP - pad, (pad - HEADER_LEN as u64) as u32), geo), Ok(()));
        assert!(check_record(&header(Kind::Padding, CAP - pad - 8, (pad - HEADER_LEN as u64) as u32), geo).is_err());
        let mut h = header(Kind::Delete, 64, 0);
        h.key_len = 0;
        assert!(check_record(&h, geo).unwrap_err().contains("without a key"));
        let mut h = header(Kind::Set, 64, 0);
        h.cas = u64::MAX;
        assert!(check_record(&h, geo).unwrap_err().contains("CAS"));
        assert!(plausible_len((CAP / 2) as usize, geo) && !plausible_len((CAP / 2 + 8) as usize, geo));
    }
}
