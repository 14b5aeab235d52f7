//! Reopening a log that an earlier run left in a memory file (`-e`): check
//! that the file is ours and was made with the same settings, then scan
//! `[tail, head)` validating every record as a replica does (its position,
//! its checksum, the bounds of a record we did not write in this process),
//! and cut the log after the last record that validates.
//!
//! Why a torn record can only be at the end: `head` is published after a
//! record's bytes (invariant 1 of `crate::log`), so a `kill -9` mid-append
//! leaves the partial record above `head`, where nobody looks; and `tail` is
//! published before the cleaner overwrites anything below it (invariant 2).
//! A `head` that claims more than validates (a file garbled or truncated
//! while we were down) is cut back to what validates: trust the records,
//! not the control block. A cut log is a different history from the one
//! replicas may hold beyond the cut, so it gets a new incarnation.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::control::*;
use super::record::{self, Kind, Record, ALIGN};
use super::{Log, LogGeometry, LogWriter};
use crate::memory::prefetch::prefetch;
use crate::memory::region::Region;

/// Highest position, epoch and CAS a file may claim (as a replica bounds its
/// primary's: `replication::bounds`), so the arithmetic after never wraps.
const MAX_POSITION: u64 = 1 << 62;
const MAX_EPOCH: u64 = u32::MAX as u64;
/// Highest CAS a record (or the control block's max CAS) may carry: one per
/// write, so a promoted replica can go on counting (`cas + 1`).
pub const MAX_CAS: u64 = 1 << 62;

/// How far ahead of the record being validated a scan prefetches the log.
const SCAN_AHEAD: usize = 2048;

/// The log capacity a region of `region_len` bytes holds for `-m` of
/// `max_capacity` bytes (what `Log::create_with_capacity` lays out).
pub fn capacity_for(region_len: usize, max_capacity: u64) -> u64 {
    let whole = LogGeometry::for_region(region_len);
    let capped = max_capacity / ALIGN * ALIGN;
    LogGeometry::new(capped.min(whole.capacity())).unwrap_or(whole).capacity()
}

/// What a memory file must match: the settings of this run.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub region_len: usize,
    pub memory_bytes: u64,
    pub max_item_size: u64,
}

/// Check that `region` (a memory file's whole mapping) holds a log of ours,
/// of this format version, made with this run's `-m` and `-I`, with a
/// control block whose fields are in bounds. The message says what differs.
pub fn check_file(region: &Region, e: Expect) -> Result<(), String> {
    if region.len() < CONTROL_SIZE {
        return Err(format!("{} bytes: not a logmemcached memory file", region.len()));
    }
    let c = ControlSnapshot::load(|off| region.atomic_u64(off).load(Ordering::Acquire));
    if c.magic != MAGIC {
        return Err("not a logmemcached memory file (no LOGMCD01 magic at its start)".into());
    }
    if c.version != FORMAT_VERSION {
        return Err(format!("made with log format version {}; this build reads version {FORMAT_VERSION}", c.version));
    }
    let made_mb = region.atomic_u64(OFF_MEMORY_BYTES).load(Ordering::Acquire);
    if made_mb != e.memory_bytes || region.len() != e.region_len {
        return Err(format!(
            "made with -m {} ({} bytes of file), started with -m {} ({} bytes)",
            made_mb >> 20,
            region.len(),
            e.memory_bytes >> 20,
            e.region_len
        ));
    }
    let made_item = region.atomic_u64(OFF_MAX_ITEM).load(Ordering::Acquire);
    if made_item != e.max_item_size {
        return Err(format!("made with -I {made_item} bytes, started with -I {}", e.max_item_size));
    }
    let cap = capacity_for(region.len(), e.memory_bytes);
    if c.capacity != cap || c.log_offset != CONTROL_SIZE as u64 {
        return Err(format!(
            "its log holds {} bytes at offset {}, -m {} gives {cap}",
            c.capacity,
            c.log_offset,
            e.memory_bytes >> 20
        ));
    }
    let bad = if c.tail > c.head || c.head - c.tail > c.capacity {
        Some(format!("tail {} and head {} are not a window of a {}-byte log", c.tail, c.head, c.capacity))
    } else if c.head > MAX_POSITION || !c.head.is_multiple_of(ALIGN) || !c.tail.is_multiple_of(ALIGN) {
        Some(format!("head {} or tail {} is out of bounds or unaligned", c.head, c.tail))
    } else if c.epoch == 0 || c.epoch >= MAX_EPOCH || c.epoch_start > c.head {
        Some(format!("epoch {} (from {}) is out of bounds", c.epoch, c.epoch_start))
    } else if c.max_cas > MAX_CAS {
        Some(format!("max CAS {} is out of bounds", c.max_cas))
    } else {
        None
    };
    match bad {
        Some(why) => Err(format!("its control block is corrupt: {why}")),
        None => Ok(()),
    }
}

impl Log {
    /// The log in a region whose control block `check_file` accepted.
    pub fn open_existing(region: Arc<Region>) -> Log {
        let cap = region.atomic_u64(OFF_CAPACITY).load(Ordering::Acquire);
        let geo = LogGeometry::new(cap).unwrap_or_else(|| LogGeometry::for_region(region.len()));
        Log { region, geo }
    }

    /// After a scan that stopped at `end` below `head`: the log ends there,
    /// as a new incarnation (replicas may hold what was cut, so they must
    /// not take it for the same history).
    pub fn cut_at(&self, end: u64) {
        let a = |off| self.region.atomic_u64(off);
        a(OFF_HEAD).store(end, Ordering::Release);
        if a(OFF_EPOCH_START).load(Ordering::Acquire) > end {
            a(OFF_EPOCH_START).store(end, Ordering::Release);
        }
        a(OFF_INCARNATION).store(super::random_u64(), Ordering::Release);
    }

    /// Forget the progress slots of replicas of an earlier run (they
    /// reconnect and claim a slot again).
    pub fn forget_replicas(&self) {
        for i in 0..MAX_REPLICAS {
            self.write_slot(i, 0, 0, 0, 0);
        }
    }
}

impl LogWriter {
    /// The log ends at `end` (a restart's scan stopped there): see `Log::cut_at`.
    pub fn cut_at(&mut self, end: u64) {
        self.log.cut_at(end);
        self.head = end;
    }
}

/// What a scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// The position after the last record that validated: the log's head.
    pub end: u64,
    pub records: u64,
    pub bytes: u64,
    /// Bytes between `end` and the head the control block claimed.
    pub dropped_bytes: u64,
    /// Why the scan stopped before that head (None: it reached it).
    pub cut: Option<String>,
    /// The highest CAS a record carried.
    pub max_cas: u64,
}

/// Check a record that `record::validate` accepted (a restart's scan here,
/// a replica's apply in `replication`) at `h.position`: it fits
/// the log (no larger than its largest record, within the lap, a padding
/// record ending exactly at the lap's end), carries a key where its kind
/// needs one, and a CAS in bounds.
pub fn check_record(h: &record::Header, geo: LogGeometry) -> Result<(), String> {
    let pos = h.position;
    let len = h.total_len();
    if len > geo.max_record() {
        return Err(format!("claims {len} bytes, more than the log's largest record ({})", geo.max_record()));
    }
    let room = geo.room_to_end(pos);
    if len > room {
        return Err(format!("claims {len} bytes with {room} left before the log's end"));
    }
    match h.kind {
        Kind::Padding if len != room => {
            return Err(format!("is padding of {len} bytes that ends {} bytes before the log's end", room - len));
        }
        Kind::Set | Kind::Touch | Kind::Delete if h.key_len == 0 => {
            return Err(format!("is a {:?} record without a key", h.kind));
        }
        _ => {}
    }
    if h.cas > MAX_CAS {
        return Err(format!("carries CAS {}, beyond {MAX_CAS}", h.cas));
    }
    Ok(())
}

/// Walk `[tail, head)` of the log `w` writes, validating every record and
/// handing each to `visit` in log order; stop at the first that does not
/// validate. Records are validated where they lie in the mapping (the
/// writer, borrowed, keeps every store out meanwhile: `Region::view`), so
/// they borrow it for as long as `w` is: a visitor may keep their keys.
pub fn scan<'w>(w: &'w LogWriter, visit: &mut dyn FnMut(&Record<'w>)) -> Scan {
    let log = &w.log;
    let geo = log.geometry();
    let (tail, head) = (log.tail(), log.head());
    let mut s = Scan { end: tail, ..Scan::default() };
    let mut pos = geo.skip_gap(tail);
    'laps: while pos < head {
        // Up to head or the lap's end, whichever is first: records never
        // straddle the lap's end.
        let st = geo.stretch(pos, head, geo.capacity() as usize);
        let bytes = log.region().view(&w.bytes, st.offset, st.len);
        let mut p = pos;
        while p < st.end {
            let o = (p - pos) as usize;
            // The bytes a few records on: their misses overlap this
            // record's work instead of stalling the next checksum (the
            // rebuild's random table accesses keep the stream prefetcher
            // from running far enough ahead on its own).
            for line in 0..3 {
                prefetch(bytes.as_ptr().wrapping_add(o + SCAN_AHEAD + line * 64));
            }
            match record::validate(&bytes[o..], p) {
                Ok(r) => {
                    if let Err(why) = check_record(&r.header, geo) {
                        s.cut = Some(format!("the record at {p} {why}"));
                        break 'laps;
                    }
                    let n = r.header.total_len();
                    if r.header.kind != Kind::Padding {
                        s.records += 1;
                        s.max_cas = s.max_cas.max(r.header.cas);
                    }
                    visit(&r);
                    s.bytes += n;
                    p += n;
                    s.end = p;
                    if geo.in_gap(p) {
                        break;
                    }
                }
                Err(why) => {
                    s.cut = Some(format!("the record at {p}: {why}"));
                    break 'laps;
                }
            }
        }
        pos = geo.skip_gap(p);
    }
    if s.cut.is_none() && s.end < head {
        // Only a gap at a lap's end lies between the last record and head.
        s.end = head;
    }
    s.dropped_bytes = head - s.end;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogWriter, NewRecord};
    use crate::memory::region::HugePages;

    fn log_with(n: usize, value: usize) -> (Arc<Log>, LogWriter, Vec<u64>) {
        let region = Arc::new(Region::anonymous(1, HugePages::Off).unwrap());
        let log = Arc::new(Log::create(region, 1));
        let mut w = LogWriter::new(log.clone());
        let v = vec![7u8; value];
        let mut at = Vec::new();
        for i in 0..n {
            let rec =
                NewRecord { kind: Kind::Set, item_flags: 0, client_flags: 0, cas: i as u64 + 1, expiry: 0, time: 1 };
            at.push(w.append(rec, format!("k{i}").as_bytes(), &[&v], &mut |_, _, _| {}).unwrap());
        }
        (log, w, at)
    }

    #[test]
    fn a_whole_log_scans_to_its_head_through_wraps() {
        let (log, w, at) = log_with(300, 20_000);
        assert!(log.tail() > 0, "the log wrapped");
        let mut seen = Vec::new();
        let s = scan(&w, &mut |r| {
            if r.header.kind == Kind::Set {
                seen.push(r.header.position)
            }
        });
        assert_eq!((s.end, s.dropped_bytes, s.cut.clone()), (log.head(), 0, None));
        assert_eq!(seen, at.iter().copied().filter(|&p| p >= log.tail()).collect::<Vec<_>>());
        assert_eq!(s.max_cas, 300);
    }

    #[test]
    fn a_garbled_last_record_is_cut_and_reported() {
        let (log, mut w, at) = log_with(10, 100);
        let last = *at.last().unwrap();
        let head = log.head();
        // Flip a value byte of the last record.
        let off = log.physical(last) + record::HEADER_LEN + 5;
        let mut b = [0u8; 1];
        log.region().read(off, &mut b);
        // The test holds the writer: only it may store bytes.
        log.region().write(&mut w.bytes, off, &[b[0] ^ 1]);
        let s = scan(&w, &mut |_| {});
        assert_eq!((s.end, s.records, s.dropped_bytes), (last, 9, head - last));
        assert!(s.cut.as_deref().unwrap_or("").contains("checksum"), "{:?}", s.cut);
        let inc = log.incarnation();
        log.cut_at(s.end);
        assert_eq!(log.head(), last);
        assert_ne!(log.incarnation(), inc, "a cut log is another history");
    }

    #[test]
    fn a_head_beyond_the_records_is_cut_back() {
        let (log, w, _) = log_with(3, 100);
        let head = log.head();
        log.region().atomic_u64(OFF_HEAD).store(head + 4096, Ordering::Release);
        let s = scan(&w, &mut |_| {});
        assert_eq!((s.end, s.records, s.dropped_bytes), (head, 3, 4096));
        assert!(s.cut.is_some());
    }
}
