//! The log: one circular sequence of immutable records in the region.
//!
//! Logical positions are u64, only ever increase and are never reused; the
//! physical offset of position `p` is `CONTROL_SIZE + p % capacity`
//! ([`LogGeometry`], which replicas use for their primary's log too).
//! Invariants (what replication relies on, byte for byte):
//! 1. every byte below `head` belongs to a complete, sealed record; `head` is
//!    published with Release after those bytes are written;
//! 2. `tail` is advanced before the space below it is overwritten, with a
//!    fence between the two, so a reader that copied [p, q), then fenced
//!    (Acquire) and then sees `tail <= p` read intact bytes (`tests/loom_log.rs`
//!    models this and shows the torn read the fences prevent);
//! 3. a record never straddles the end of the circular log: the writer pads to
//!    the end with a Padding record, or, where fewer than HEADER_LEN bytes
//!    remain, leaves an implicit gap that every reader skips by the same rule
//!    (`skip_gap`).
//!
//! `Log` is the shared, read-side view; `LogWriter` is the single writer
//! (the store keeps it behind its write lock): it holds the region's one
//! [`RegionWriter`], so no other code can write the log's bytes.

pub mod checksum;
pub mod control;
pub mod geometry;
pub mod random;
pub mod record;
pub mod recover;

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use crate::memory::region::{Region, RegionWriter};
use control::*;
pub use geometry::LogGeometry;
pub use random::{random_u64, try_random_u64};
use record::{Header, Kind, HEADER_LEN};

/// Read-side view of the log in a region.
pub struct Log {
    region: Arc<Region>,
    geo: LogGeometry,
}

impl Log {
    /// Lay out a fresh control block in `region` and return the log in it.
    pub fn create(region: Arc<Region>, epoch: u64) -> Log {
        let geo = LogGeometry::for_region(region.len());
        Log::create_in(region, epoch, geo)
    }

    /// `create`, with a log of at most `max_capacity` bytes (`-m`: the region
    /// is whole huge pages, so it may hold more than the log may use).
    pub fn create_with_capacity(region: Arc<Region>, epoch: u64, max_capacity: u64) -> Log {
        let cap = recover::capacity_for(region.len(), max_capacity);
        let geo = LogGeometry::new(cap).unwrap_or_else(|| LogGeometry::for_region(region.len()));
        Log::create_in(region, epoch, geo)
    }

    fn create_in(region: Arc<Region>, epoch: u64, geo: LogGeometry) -> Log {
        let a = |off| region.atomic_u64(off);
        a(OFF_MAGIC).store(MAGIC, Ordering::Relaxed);
        a(OFF_VERSION).store(FORMAT_VERSION, Ordering::Relaxed);
        a(OFF_CAPACITY).store(geo.capacity(), Ordering::Relaxed);
        a(OFF_LOG_OFFSET).store(CONTROL_SIZE as u64, Ordering::Relaxed);
        a(OFF_HEAD).store(0, Ordering::Relaxed);
        a(OFF_TAIL).store(0, Ordering::Relaxed);
        a(OFF_MAX_CAS).store(0, Ordering::Relaxed);
        a(OFF_HEARTBEAT).store(0, Ordering::Relaxed);
        a(OFF_EPOCH_START).store(0, Ordering::Relaxed);
        a(OFF_INCARNATION).store(random_u64(), Ordering::Relaxed);
        a(OFF_FLUSH_AT).store(0, Ordering::Relaxed);
        a(OFF_MEMORY_BYTES).store(0, Ordering::Relaxed);
        a(OFF_MAX_ITEM).store(0, Ordering::Relaxed);
        a(OFF_FOLLOWS).store(0, Ordering::Relaxed);
        a(OFF_FENCED_BY).store(0, Ordering::Relaxed);
        a(OFF_EPOCH).store(epoch, Ordering::Release);
        Log { region, geo }
    }

    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    pub fn capacity(&self) -> u64 {
        self.geo.capacity()
    }

    /// Where positions live in the region (wrap and gap rules).
    pub fn geometry(&self) -> LogGeometry {
        self.geo
    }

    pub fn head(&self) -> u64 {
        self.region.atomic_u64(OFF_HEAD).load(Ordering::Acquire)
    }

    pub fn tail(&self) -> u64 {
        self.region.atomic_u64(OFF_TAIL).load(Ordering::Acquire)
    }

    pub fn epoch(&self) -> u64 {
        self.region.atomic_u64(OFF_EPOCH).load(Ordering::Acquire)
    }

    pub fn set_epoch(&self, epoch: u64) {
        self.region.atomic_u64(OFF_EPOCH).store(epoch, Ordering::Release)
    }

    /// The primary's liveness signal for replicas (microseconds, any clock
    /// that only increases while the primary runs).
    pub fn beat(&self, now_us: u64) {
        self.region.atomic_u64(OFF_HEARTBEAT).store(now_us, Ordering::Release)
    }

    pub fn heartbeat(&self) -> u64 {
        self.region.atomic_u64(OFF_HEARTBEAT).load(Ordering::Acquire)
    }

    /// Where the current epoch began (set at promotion): a replica that had
    /// applied no further than this shares the new primary's history.
    pub fn epoch_start(&self) -> u64 {
        self.region.atomic_u64(OFF_EPOCH_START).load(Ordering::Acquire)
    }

    pub fn set_epoch_start(&self, pos: u64) {
        self.region.atomic_u64(OFF_EPOCH_START).store(pos, Ordering::Release)
    }

    pub fn incarnation(&self) -> u64 {
        self.region.atomic_u64(OFF_INCARNATION).load(Ordering::Acquire)
    }

    /// Remember the `-m` and `-I` this log was made with (a `-e` restart
    /// refuses a file made with others).
    pub fn record_settings(&self, memory_bytes: u64, max_item_size: u64) {
        self.region.atomic_u64(OFF_MEMORY_BYTES).store(memory_bytes, Ordering::Release);
        self.region.atomic_u64(OFF_MAX_ITEM).store(max_item_size, Ordering::Release);
    }

    /// A replica's log: the incarnation of the primary log it mirrors (0 = none).
    pub fn follows(&self) -> u64 {
        self.region.atomic_u64(OFF_FOLLOWS).load(Ordering::Acquire)
    }

    pub fn set_follows(&self, incarnation: u64) {
        self.region.atomic_u64(OFF_FOLLOWS).store(incarnation, Ordering::Release)
    }

    /// The epoch of the promotion that fenced this log's primary (0: none).
    pub fn fenced_by(&self) -> u64 {
        self.region.atomic_u64(OFF_FENCED_BY).load(Ordering::Acquire)
    }

    pub fn set_fenced_by(&self, epoch: u64) {
        self.region.atomic_u64(OFF_FENCED_BY).store(epoch, Ordering::Release)
    }

    pub fn max_cas(&self) -> u64 {
        self.region.atomic_u64(OFF_MAX_CAS).load(Ordering::Acquire)
    }

    /// The delayed-flush point published in the control block (0 = none).
    pub fn flush_at(&self) -> u64 {
        self.region.atomic_u64(OFF_FLUSH_AT).load(Ordering::Acquire)
    }

    pub fn publish_max_cas(&self, cas: u64) {
        self.region.atomic_u64(OFF_MAX_CAS).store(cas, Ordering::Release)
    }

    /// The delayed-flush point (0 = none), for replicas that replay from a
    /// tail past the Flush record that set it.
    pub fn publish_flush_at(&self, at: u32) {
        self.region.atomic_u64(OFF_FLUSH_AT).store(at as u64, Ordering::Release)
    }

    /// Region offset of logical position `pos` ([`LogGeometry::physical`]).
    pub fn physical(&self, pos: u64) -> usize {
        self.geo.physical(pos)
    }

    /// Bytes from `pos` to the physical end of the log.
    pub fn room_to_end(&self, pos: u64) -> u64 {
        self.geo.room_to_end(pos)
    }

    /// Where the next record after a gap starts ([`LogGeometry::skip_gap`]).
    pub fn skip_gap(&self, pos: u64) -> u64 {
        self.geo.skip_gap(pos)
    }

    /// Header of a record the index (or the writer) knows is at `pos`.
    /// Local and trusted; `None` only if the log is corrupt (a bug).
    pub fn read_header(&self, pos: u64) -> Option<Header> {
        let mut b = [0u8; HEADER_LEN];
        self.region.read(self.physical(pos), &mut b);
        Header::decode(&b).ok()
    }

    /// Copy the key of the record at `pos` into `dst` (`dst.len() == key_len`).
    pub fn read_key(&self, pos: u64, dst: &mut [u8]) {
        self.region.read(self.physical(pos) + HEADER_LEN, dst);
    }

    /// Whether the record at `pos` (one the index holds) is for `key`: its
    /// key length, then its key bytes (never read past the lap's end).
    pub fn key_is(&self, pos: u64, key: &[u8]) -> bool {
        // A record with a key this long fits before the lap's end, so one
        // that would not is another record. Compared in place: copying the
        // key out first was most of a get's memmove.
        if key.len() > record::MAX_KEY_LEN || HEADER_LEN + key.len() > self.room_to_end(pos) as usize {
            return false;
        }
        let at = self.physical(pos);
        let mut len = [0u8; 1];
        self.region.read(at + record::KEY_LEN_AT, &mut len);
        len[0] as usize == key.len() && self.region.bytes_eq(at + HEADER_LEN, key)
    }

    /// Start loading the record at `pos`: its header and a key's worth.
    pub fn prefetch_record(&self, pos: u64) {
        let at = self.physical(pos);
        self.region.prefetch(at);
        self.region.prefetch(at + 64);
    }

    /// Append the value of the record at `pos` to `out`.
    pub fn append_value(&self, pos: u64, h: &Header, out: &mut Vec<u8>) {
        self.region.append_to(self.physical(pos) + HEADER_LEN + h.key_len as usize, h.value_len as usize, out);
    }

    /// Copy `dst.len()` bytes of the log starting at logical `pos`, wrapping
    /// at the physical end (as a replica reads [applied, head)). The caller
    /// validates what it got. A plain copy: a `Log` is always this process's
    /// own (`create` lays out its control block), so its writer is here and
    /// callers read while it is not writing (tests mirroring a log between
    /// writes); a replica of another process's log reads through its
    /// transport, whose shm reads are `Region::read_racy`.
    pub fn read_span(&self, pos: u64, dst: &mut [u8]) {
        let first = (self.room_to_end(pos) as usize).min(dst.len());
        self.region.read(self.physical(pos), &mut dst[..first]);
        if first < dst.len() {
            self.region.read(self.geo.start(), &mut dst[first..]);
        }
    }

    /// Replica progress slot `i`: (applied position, epoch, updated us, id).
    pub fn slot(&self, i: usize) -> (u64, u64, u64, u64) {
        let base = slot_offset(i);
        let r = |o| self.region.atomic_u64(base + o).load(Ordering::Acquire);
        (r(SLOT_APPLIED), r(SLOT_EPOCH), r(SLOT_UPDATED_US), r(SLOT_REPLICA_ID))
    }

    /// Write a progress slot (what a remote replica does with RDMA WRITE; an
    /// shm replica, which maps the region read-only, reports another way).
    pub fn write_slot(&self, i: usize, applied: u64, epoch: u64, updated_us: u64, id: u64) {
        let base = slot_offset(i);
        let w = |o, v| self.region.atomic_u64(base + o).store(v, Ordering::Release);
        w(SLOT_EPOCH, epoch);
        w(SLOT_UPDATED_US, updated_us);
        w(SLOT_REPLICA_ID, id);
        w(SLOT_APPLIED, applied);
    }
}

/// A record could not be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    /// Larger than the log can ever hold (more than half its capacity).
    TooLarge,
    /// [`Reclaim::DeadOnly`]: making room would reclaim a record the caller
    /// holds live; nothing was reclaimed or written.
    NoRoom,
}

/// What the cleaner may reclaim to make room for an append.
pub enum Reclaim<'a> {
    /// The oldest records, whatever they hold (a cache's eviction).
    Any,
    /// Only records `live(pos, header, key)` says are dead (memcached's
    /// `-M`), and only if `reserve` more bytes could be freed the same way
    /// after this record (room kept for records that must not fail). Space
    /// is freed in log order, so a live record at the tail refuses the
    /// append even if dead bytes lie behind it.
    DeadOnly { live: &'a mut dyn FnMut(u64, &Header, &[u8]) -> bool, reserve: u64 },
}

/// A mirrored record does not fit where it claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawError {
    NotContiguous { head: u64, pos: u64 },
    BadLength,
}

/// A record about to be appended: everything but position, checksum, lengths.
#[derive(Clone, Copy, Debug)]
pub struct NewRecord {
    pub kind: Kind,
    pub item_flags: u8,
    pub client_flags: u32,
    pub cas: u64,
    pub expiry: u32,
    pub time: u32,
}

/// The single writer. Keeps its own copies of head and tail so it never
/// re-reads what only it writes, and the region's one write token.
pub struct LogWriter {
    log: Arc<Log>,
    bytes: RegionWriter,
    head: u64,
    tail: u64,
    epoch: u64,
}

impl LogWriter {
    /// The writer of `log`.
    ///
    /// # Panics
    /// If the log's region is read-only or its writer was taken already: a
    /// log has one writer, and a second one is a bug.
    pub fn new(log: Arc<Log>) -> LogWriter {
        let bytes = log
            .region()
            .take_writer()
            .unwrap_or_else(|| panic!("the log's region is read-only or already has its writer"));
        let (head, tail, epoch) = (log.head(), log.tail(), log.epoch());
        LogWriter { log, bytes, head, tail, epoch }
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn tail(&self) -> u64 {
        self.tail
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Raise the epoch (promotion); records written from now on carry it.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.log.set_epoch(epoch);
    }

    /// Start a new epoch here (promotion): records from now on carry it.
    pub fn begin_epoch(&mut self, epoch: u64) {
        self.log.set_epoch_start(self.head);
        self.set_epoch(epoch);
    }

    /// The largest record this log accepts ([`LogGeometry::max_record`]).
    pub fn max_record(&self) -> u64 {
        self.log.geometry().max_record()
    }

    /// Append one record whose value is the concatenation of `value`. Space
    /// is made by reclaiming from the tail; `reclaim(pos, header, key)` is
    /// called for every item record reclaimed, so the index can drop it.
    /// Returns the record's position; the record is published when this returns.
    pub fn append(
        &mut self,
        rec: NewRecord,
        key: &[u8],
        value: &[&[u8]],
        reclaim: &mut dyn FnMut(u64, &Header, &[u8]),
    ) -> Result<u64, AppendError> {
        self.append_with(rec, key, value, Reclaim::Any, reclaim)
    }

    /// `append`, reclaiming only what `policy` allows: with
    /// [`Reclaim::DeadOnly`] an append that would reclaim a live record
    /// fails with `NoRoom` and leaves the log as it was.
    pub fn append_with(
        &mut self,
        rec: NewRecord,
        key: &[u8],
        value: &[&[u8]],
        policy: Reclaim<'_>,
        reclaim: &mut dyn FnMut(u64, &Header, &[u8]),
    ) -> Result<u64, AppendError> {
        let value_len: usize = value.iter().map(|p| p.len()).sum();
        let len = record::record_len(key.len(), value_len);
        if len > self.max_record() || key.len() > record::MAX_KEY_LEN || value_len > u32::MAX as usize {
            return Err(AppendError::TooLarge);
        }
        let room = self.log.room_to_end(self.head);
        let pad = if room < len { room } else { 0 };
        if let Reclaim::DeadOnly { live, reserve } = policy {
            let need = (pad + len).saturating_add(reserve).min(self.log.capacity());
            if !self.room_without_live(need, live) {
                return Err(AppendError::NoRoom);
            }
        }
        self.make_room(pad + len, reclaim);

        let mut pos = self.head;
        if pad > 0 {
            if pad >= HEADER_LEN as u64 {
                self.write_padding(pos, pad);
            }
            pos += pad;
        }
        let mut h = Header {
            position: pos,
            checksum: 0,
            kind: rec.kind,
            key_len: key.len() as u8,
            item_flags: rec.item_flags,
            value_len: value_len as u32,
            client_flags: rec.client_flags,
            cas: rec.cas,
            expiry: rec.expiry,
            time: rec.time,
            epoch: self.epoch,
        };
        let mut body: Vec<&[u8]> = Vec::with_capacity(value.len() + 1);
        body.push(key);
        body.extend_from_slice(value);
        h.seal(&body);
        let region = self.log.region();
        let mut off = self.log.physical(pos);
        region.write(&mut self.bytes, off, &h.encode());
        off += HEADER_LEN;
        for piece in body {
            region.write(&mut self.bytes, off, piece);
            off += piece.len();
        }
        self.head = pos + len;
        // Invariant 1: the bytes above are complete before anyone sees head move.
        self.log.region().atomic_u64(OFF_HEAD).store(self.head, Ordering::Release);
        Ok(pos)
    }

    fn write_padding(&mut self, pos: u64, len: u64) {
        let mut h = Header {
            position: pos,
            checksum: 0,
            kind: Kind::Padding,
            key_len: 0,
            item_flags: 0,
            value_len: (len - HEADER_LEN as u64) as u32,
            client_flags: 0,
            cas: 0,
            expiry: 0,
            time: 0,
            epoch: self.epoch,
        };
        h.seal(&[]);
        self.log.region().write(&mut self.bytes, self.log.physical(pos), &h.encode());
    }

    /// Reclaim from the tail until `need` bytes are free above head.
    ///
    /// # Panics
    /// If `need` is more than the whole log: callers bound it (`append` by
    /// `max_record`, `append_raw` by the lap's room), so that is a bug, and
    /// reclaiming past head to find the room would walk into garbage.
    fn make_room(&mut self, need: u64, reclaim: &mut dyn FnMut(u64, &Header, &[u8])) {
        let cap = self.log.capacity();
        assert!(need <= cap, "make_room({need}) in a log of {cap} bytes");
        let before = self.tail;
        while self.head + need - self.tail > cap {
            self.reclaim_one(reclaim);
        }
        if self.tail != before {
            self.publish_tail();
        }
    }

    /// Whether `need` bytes can be freed above head without reclaiming a
    /// record `live` holds live: the walk `make_room` would take, reading
    /// only (so a refusal leaves the tail where it was).
    fn room_without_live(&self, need: u64, live: &mut dyn FnMut(u64, &Header, &[u8]) -> bool) -> bool {
        let cap = self.log.capacity();
        let mut tail = self.tail;
        while self.head + need - tail > cap {
            let pos = self.log.skip_gap(tail);
            if pos != tail {
                tail = pos;
                continue;
            }
            let h = self
                .log
                .read_header(pos)
                .unwrap_or_else(|| panic!("log corrupt: no valid record at tail position {pos}"));
            if h.kind.is_item() {
                let mut key = [0u8; record::MAX_KEY_LEN];
                let key = &mut key[..h.key_len as usize];
                self.log.read_key(pos, key);
                if live(pos, &h, key) {
                    return false;
                }
            }
            tail = pos + h.total_len();
        }
        true
    }

    /// Invariant 2: readers learn the space below `tail` is gone before any
    /// of it is overwritten. The Release store alone does not order the
    /// stores that follow it; the fence does: it pairs with the Acquire
    /// fence a reader takes between copying bytes and re-checking the tail
    /// (`ShmTransport::read`), so a reader that copied any byte we write
    /// after this point also sees the new tail and drops what it copied.
    fn publish_tail(&mut self) {
        self.log.region().atomic_u64(OFF_TAIL).store(self.tail, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    fn reclaim_one(&mut self, reclaim: &mut dyn FnMut(u64, &Header, &[u8])) {
        // make_room's bound keeps the tail at or below head; past it there
        // is no record to reclaim, only what the next append overwrites.
        assert!(self.tail < self.head, "reclaiming past head {} (tail {})", self.head, self.tail);
        let pos = self.log.skip_gap(self.tail);
        if pos != self.tail {
            self.tail = pos;
            return;
        }
        // Our own record below head: it decodes unless memory was corrupted,
        // which is a bug we must not paper over.
        let h =
            self.log.read_header(pos).unwrap_or_else(|| panic!("log corrupt: no valid record at tail position {pos}"));
        if h.kind.is_item() || h.kind == Kind::Delete {
            let mut key = [0u8; record::MAX_KEY_LEN];
            let key = &mut key[..h.key_len as usize];
            self.log.read_key(pos, key);
            reclaim(pos, &h, key);
        }
        self.tail = pos + h.total_len();
    }

    /// Mirror a record validated from another log into this one at the same
    /// logical position (a replica copying its primary byte for byte).
    /// `pos` must be this log's head, or the head after the gap/padding that
    /// ends a lap. Space is reclaimed exactly as for `append`. The record
    /// came from another process: it is refused if it is larger than this
    /// log's largest record, or if it and the padding before it are more
    /// than the log can free (the cleaner would have to pass head).
    pub fn append_raw(
        &mut self,
        pos: u64,
        bytes: &[u8],
        reclaim: &mut dyn FnMut(u64, &Header, &[u8]),
    ) -> Result<(), RawError> {
        let len = bytes.len() as u64;
        if pos < self.head || pos > self.head + self.log.room_to_end(self.head) {
            return Err(RawError::NotContiguous { head: self.head, pos });
        }
        if pos > self.head && pos != self.head + self.log.room_to_end(self.head) {
            return Err(RawError::NotContiguous { head: self.head, pos });
        }
        if len > self.log.room_to_end(pos) || !len.is_multiple_of(record::ALIGN) {
            return Err(RawError::BadLength);
        }
        let need = pos - self.head + len;
        if len > self.max_record() || need > self.log.capacity() {
            return Err(RawError::BadLength);
        }
        self.make_room(need, reclaim);
        if pos > self.head && pos - self.head >= HEADER_LEN as u64 {
            // The primary padded here; its padding record was not part of
            // `bytes`, so write our own to keep the log walkable.
            self.write_padding(self.head, pos - self.head);
        }
        self.log.region().write(&mut self.bytes, self.log.physical(pos), bytes);
        self.head = pos + len;
        self.log.region().atomic_u64(OFF_HEAD).store(self.head, Ordering::Release);
        Ok(())
    }

    /// Drop everything: head and tail meet (used by a replica that restarts
    /// its log from a primary's tail).
    pub fn reset_to(&mut self, pos: u64) {
        self.head = pos;
        self.tail = pos;
        // The tail first (with its fence), as when the cleaner frees space:
        // everything below `pos` may be overwritten from now on.
        self.publish_tail();
        self.log.region().atomic_u64(OFF_HEAD).store(pos, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::region::HugePages;

    fn small_log() -> (Arc<Log>, LogWriter) {
        let region = Arc::new(Region::anonymous(1, HugePages::Off).unwrap());
        let log = Arc::new(Log::create(region, 1));
        let w = LogWriter::new(log.clone());
        (log, w)
    }

    fn set(ts: u32) -> NewRecord {
        NewRecord { kind: Kind::Set, item_flags: 0, client_flags: 5, cas: ts as u64, expiry: 0, time: ts }
    }

    #[test]
    fn appended_records_validate_at_their_positions() {
        let (log, mut w) = small_log();
        let p1 = w.append(set(1), b"a", &[b"xyz"], &mut |_, _, _| {}).unwrap();
        let p2 = w.append(set(2), b"bb", &[b"12", b"34"], &mut |_, _, _| {}).unwrap();
        assert_eq!(p1, 0);
        assert_eq!(p2, record::record_len(1, 3));
        assert_eq!(log.head(), p2 + record::record_len(2, 4));
        let mut buf = vec![0u8; (log.head() - p2) as usize];
        log.read_span(p2, &mut buf);
        let r = record::validate(&buf, p2).unwrap();
        assert_eq!(r.key, b"bb");
        assert_eq!(r.value, b"1234");
        assert!(log.key_is(p2, b"bb") && log.key_is(p1, b"a"));
        for other in [&b"b"[..], b"bc", b"bbb", b""] {
            assert!(!log.key_is(p2, other), "{other:?} is not the key at p2");
        }
        assert!(!log.key_is(log.capacity() - 8, b"bb"), "a key that cannot fit before the lap's end");
    }

    #[test]
    fn wraps_without_straddling_and_reclaims_in_order() {
        let (log, mut w) = small_log();
        let value = vec![9u8; 100_000];
        let mut reclaimed = Vec::new();
        let mut positions = Vec::new();
        for i in 0..200u32 {
            let key = format!("k{i}");
            let p = w
                .append(set(i), key.as_bytes(), &[&value], &mut |pos, _, k| reclaimed.push((pos, k.to_vec())))
                .unwrap();
            positions.push(p);
            // Never straddles the physical end.
            assert!(log.room_to_end(p) >= record::record_len(key.len(), value.len()));
            assert!(log.head() - log.tail() <= log.capacity());
        }
        // Reclaimed in append order, oldest first, with their keys.
        assert!(!reclaimed.is_empty());
        for (i, (pos, key)) in reclaimed.iter().enumerate() {
            assert_eq!(*pos, positions[i]);
            assert_eq!(key, format!("k{i}").as_bytes());
        }
        // Every record still between tail and head validates.
        let last = *positions.last().unwrap();
        let mut buf = vec![0u8; 200_000];
        log.read_span(last, &mut buf);
        assert_eq!(record::validate(&buf, last).unwrap().value.len(), 100_000);
    }

    #[test]
    #[should_panic(expected = "already has its writer")]
    fn a_log_has_one_writer() {
        let (log, _w) = small_log();
        let _second = LogWriter::new(log);
    }

    #[test]
    fn the_log_uses_the_geometry_of_its_region() {
        let (log, _w) = small_log();
        let g = log.geometry();
        assert_eq!(g, LogGeometry::for_region(log.region().len()));
        assert_eq!(log.capacity(), g.capacity());
        let last = g.capacity() - 8;
        assert_eq!(
            (log.physical(last), log.room_to_end(last), log.skip_gap(last)),
            (g.physical(last), 8, g.capacity())
        );
    }

    /// Mirrored records come from another process: what this log cannot
    /// hold is refused, not reclaimed for (the cleaner would walk past head).
    #[test]
    fn append_raw_refuses_what_the_log_cannot_hold() {
        let (log, mut w) = small_log();
        let cap = log.capacity();
        let h = |position| Header {
            position,
            checksum: 0,
            kind: Kind::Set,
            key_len: 0,
            item_flags: 0,
            value_len: 0,
            client_flags: 0,
            cas: 1,
            expiry: 0,
            time: 0,
            epoch: 1,
        };
        // Larger than half the log, though it fits the lap.
        let big = record::encode_record(h(0), b"k", &vec![0; (cap / 2) as usize]);
        assert_eq!(w.append_raw(0, &big, &mut |_, _, _| {}), Err(RawError::BadLength));
        assert_eq!(log.head(), 0);
        // A small record, then one at the next lap: the lap's rest plus the
        // record are more than the log can free.
        let small = record::encode_record(h(0), b"k", b"v");
        w.append_raw(0, &small, &mut |_, _, _| {}).unwrap();
        let next = record::encode_record(h(cap), b"k", &[7; 1000]);
        assert_eq!(w.append_raw(cap, &next, &mut |_, _, _| {}), Err(RawError::BadLength));
        assert_eq!((log.tail(), log.head()), (0, small.len() as u64));
        // What fits is still taken.
        let fits = record::encode_record(h(small.len() as u64), b"k", &[7; 1000]);
        w.append_raw(small.len() as u64, &fits, &mut |_, _, _| {}).unwrap();
    }

    /// `-M`: a live record at the tail refuses the append, and the log is
    /// as it was; once it is dead, the same append reclaims it.
    #[test]
    fn dead_only_refuses_at_a_live_tail_and_changes_nothing() {
        let (log, mut w) = small_log();
        let value = vec![3u8; 100_000];
        let mut n = 0u32;
        let mut live_from = 0u64;
        loop {
            let key = format!("k{n}");
            let mut live = |pos: u64, _: &Header, _: &[u8]| pos >= live_from;
            let r = w.append_with(
                set(n),
                key.as_bytes(),
                &[&value],
                Reclaim::DeadOnly { live: &mut live, reserve: 0 },
                &mut |_, _, _| panic!("nothing live may be reclaimed"),
            );
            match r {
                Ok(_) => n += 1,
                Err(e) => {
                    assert_eq!(e, AppendError::NoRoom);
                    break;
                }
            }
        }
        assert!(n > 1);
        let (head, tail) = (log.head(), log.tail());
        assert_eq!(tail, 0);
        // Still refused: nothing moved.
        let mut live = |_: u64, _: &Header, _: &[u8]| true;
        let r = w.append_with(
            set(n),
            b"x",
            &[&value],
            Reclaim::DeadOnly { live: &mut live, reserve: 0 },
            &mut |_, _, _| {},
        );
        assert_eq!(r, Err(AppendError::NoRoom));
        assert_eq!((log.head(), log.tail()), (head, tail));
        // The first two records dead (room for the record and a lap's
        // padding): only they may be reclaimed to make room.
        live_from = 2 * record::record_len(2, value.len());
        let mut live = |pos: u64, _: &Header, _: &[u8]| pos >= live_from;
        let mut reclaimed = Vec::new();
        w.append_with(set(n), b"x", &[&value], Reclaim::DeadOnly { live: &mut live, reserve: 0 }, &mut |p, _, k| {
            reclaimed.push((p, k.to_vec()))
        })
        .unwrap();
        assert!(!reclaimed.is_empty());
        assert!(reclaimed.iter().all(|(p, _)| *p < live_from), "{reclaimed:?}");
        assert_eq!(reclaimed[0], (0, b"k0".to_vec()));
    }

    #[test]
    fn too_large_is_refused() {
        let (log, mut w) = small_log();
        let big = vec![0u8; log.capacity() as usize];
        assert_eq!(w.append(set(1), b"k", &[&big], &mut |_, _, _| {}), Err(AppendError::TooLarge));
        assert_eq!(log.head(), 0);
    }
}
