//! Where logical positions live in a region: the one statement of the log's
//! wrap and gap rules, used by the local log and writer and by a replica
//! walking its primary's log (built from that log's control block).
//!
//! Position `p` is at region offset `CONTROL_SIZE + p % capacity`. A record
//! never straddles the physical end: where fewer than `HEADER_LEN` bytes
//! remain before it, those bytes are an implicit gap and records resume at
//! the next lap (invariant 3 of `crate::log`).

use super::control::CONTROL_SIZE;
use super::record::{ALIGN, HEADER_LEN};

/// A log's shape: its capacity in bytes (a non-zero multiple of `ALIGN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogGeometry {
    capacity: u64,
}

/// A physically contiguous piece of the log: logical `[start, end)` at
/// region offset `offset`, `len` bytes long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stretch {
    pub end: u64,
    pub offset: usize,
    pub len: usize,
}

impl LogGeometry {
    /// The geometry of a log of `capacity` bytes; `None` for a capacity no
    /// log has (zero, or not a multiple of `ALIGN`): it may come from a peer.
    pub fn new(capacity: u64) -> Option<LogGeometry> {
        (capacity > 0 && capacity.is_multiple_of(ALIGN)).then_some(LogGeometry { capacity })
    }

    /// The log that fills a region of `region_len` bytes after its control block.
    ///
    /// # Panics
    /// If the region cannot hold a control block and one aligned word (a bug:
    /// regions are whole huge pages).
    pub fn for_region(region_len: usize) -> LogGeometry {
        let capacity = region_len.saturating_sub(CONTROL_SIZE) as u64 / ALIGN * ALIGN;
        LogGeometry::new(capacity).unwrap_or_else(|| panic!("a {region_len}-byte region has no room for a log"))
    }

    pub fn capacity(self) -> u64 {
        self.capacity
    }

    /// The largest record this log holds: half its capacity, so a record
    /// and the padding before it always fit what the cleaner can free.
    pub fn max_record(self) -> u64 {
        self.capacity / 2
    }

    /// Region offset of logical position `pos`.
    pub fn physical(self, pos: u64) -> usize {
        CONTROL_SIZE + (pos % self.capacity) as usize
    }

    /// Region offset where every lap begins (position 0, capacity, ...).
    pub fn start(self) -> usize {
        CONTROL_SIZE
    }

    /// Bytes from `pos` to the physical end of the log.
    pub fn room_to_end(self, pos: u64) -> u64 {
        self.capacity - pos % self.capacity
    }

    /// Whether `pos` is in the gap before the physical end where no record
    /// fits (fewer than `HEADER_LEN` bytes remain).
    pub fn in_gap(self, pos: u64) -> bool {
        self.room_to_end(pos) < HEADER_LEN as u64
    }

    /// Where the next record after a gap starts: `pos` itself, or the next
    /// lap's start if `pos` is in the gap.
    pub fn skip_gap(self, pos: u64) -> u64 {
        if self.in_gap(pos) {
            pos + self.room_to_end(pos)
        } else {
            pos
        }
    }

    /// The stretch of `[pos, head)` that starts at `pos` and one read can
    /// take: it ends at `head`, at the physical end of the log, or after
    /// `max_len` bytes, whichever comes first.
    pub fn stretch(self, pos: u64, head: u64, max_len: usize) -> Stretch {
        let end = head.min(pos + self.room_to_end(pos)).min(pos + max_len as u64);
        let len = end.saturating_sub(pos) as usize;
        Stretch { end: end.max(pos), offset: self.physical(pos), len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo() -> LogGeometry {
        LogGeometry::new(1024).unwrap()
    }

    #[test]
    fn capacities_no_log_has_are_refused() {
        assert_eq!(LogGeometry::new(0), None);
        assert_eq!(LogGeometry::new(1021), None);
        assert_eq!(LogGeometry::new(1024).map(LogGeometry::capacity), Some(1024));
        let g = LogGeometry::for_region(CONTROL_SIZE + 1029);
        assert_eq!(g.capacity(), 1024);
    }

    #[test]
    fn physical_offsets_wrap_at_the_capacity() {
        let g = geo();
        assert_eq!(g.physical(0), CONTROL_SIZE);
        assert_eq!(g.physical(1023), CONTROL_SIZE + 1023);
        assert_eq!(g.physical(1024), CONTROL_SIZE);
        assert_eq!(g.physical(5 * 1024 + 40), CONTROL_SIZE + 40);
        assert_eq!(g.start(), g.physical(3 * 1024));
        assert_eq!(g.room_to_end(0), 1024);
        assert_eq!(g.room_to_end(1000), 24);
        assert_eq!(g.room_to_end(2048), 1024);
    }

    #[test]
    fn the_gap_at_the_end_of_a_lap_skips_to_the_next() {
        let g = geo();
        let lap_end = 2 * 1024;
        // Exactly HEADER_LEN bytes left: a record (a padding one at least) fits.
        let fits = lap_end - HEADER_LEN as u64;
        assert!(!g.in_gap(fits));
        assert_eq!(g.skip_gap(fits), fits);
        // One word less: a gap; the next record starts at the next lap.
        for pos in [fits + 8, lap_end - 8] {
            assert!(g.in_gap(pos), "{pos}");
            assert_eq!(g.skip_gap(pos), lap_end, "{pos}");
            assert_eq!(g.physical(g.skip_gap(pos)), CONTROL_SIZE);
        }
        // A lap's start is never a gap.
        assert_eq!(g.skip_gap(lap_end), lap_end);
    }

    #[test]
    fn a_stretch_ends_at_head_the_log_end_or_the_read_size() {
        let g = geo();
        // Head first.
        assert_eq!(g.stretch(100, 300, 4096), Stretch { end: 300, offset: CONTROL_SIZE + 100, len: 200 });
        // The physical end first: the rest is the next stretch, from offset 0.
        assert_eq!(g.stretch(1024 + 900, 5000, 4096), Stretch { end: 2048, offset: CONTROL_SIZE + 900, len: 124 });
        assert_eq!(g.stretch(2048, 2100, 4096).offset, CONTROL_SIZE);
        // The read size first.
        assert_eq!(g.stretch(0, 1000, 64), Stretch { end: 64, offset: CONTROL_SIZE, len: 64 });
        // Nothing to read.
        assert_eq!(g.stretch(300, 300, 64).len, 0);
    }
}
