//! A primary made of bytes, for the fuzzer and the hostile-primary tests:
//! [`FakePrimary`] serves a control block and log memory the caller (or the
//! fuzzer's input) sets, as a [`Transport`]; [`replica_apply`] feeds such a
//! primary to the real replica loop and checks that the replica survived
//! with its own log walkable and its index consistent
//! ([`check_replica`]). `fuzz/fuzz_targets/replica_apply.rs` calls
//! [`replica_apply`]; `tests/replica_apply_corpus.rs` replays its corpus.
//!
//! Not part of the crate's interface (hidden from the docs).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::replica::{follow_until_error, ReplicaStatus};
use super::transport::{Progress, Transport};
use crate::error::{Error, Result};
use crate::log::control::{
    ControlSnapshot, CONTROL_SIZE, FORMAT_VERSION, HEADER_FETCH_LEN, MAGIC, OFF_CAPACITY, OFF_EPOCH, OFF_HEARTBEAT,
    OFF_INCARNATION, OFF_LOG_OFFSET, OFF_MAGIC, OFF_VERSION,
};
use crate::log::record::{self, Header, Kind, HEADER_LEN};
use crate::log::LogGeometry;
use crate::memory::region::HugePages;
use crate::store::{Store, StoreConfig};

/// What a fake primary holds.
struct Image {
    geo: LogGeometry,
    /// The whole region: control block area and log.
    region: Vec<u8>,
    control: ControlSnapshot,
    /// Control blocks to serve first, one per `control()`; then `control`
    /// again and again, or an error if `end_after_script`.
    script: VecDeque<ControlSnapshot>,
    end_after_script: bool,
    reports: Vec<Progress>,
}

/// An in-memory primary; clones share it (a test keeps one to change what
/// the replica sees while the replica holds another as its transport).
#[derive(Clone)]
pub struct FakePrimary {
    image: Arc<Mutex<Image>>,
    /// This handle's copy of the last read.
    staged: Vec<u8>,
}

/// The control block of a fresh log of `capacity` bytes at epoch 1, decoded
/// from the bytes a replica would fetch (so fields added to the control
/// block later start at zero here too).
pub fn fresh_control(capacity: u64) -> ControlSnapshot {
    let mut b = [0u8; HEADER_FETCH_LEN];
    let mut put = |off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(OFF_MAGIC, MAGIC);
    put(OFF_VERSION, FORMAT_VERSION);
    put(OFF_CAPACITY, capacity);
    put(OFF_LOG_OFFSET, CONTROL_SIZE as u64);
    put(OFF_EPOCH, 1);
    put(OFF_HEARTBEAT, 1);
    put(OFF_INCARNATION, 0x5eed);
    ControlSnapshot::decode(&b).unwrap_or_else(|| panic!("a control block of {HEADER_FETCH_LEN} bytes decodes"))
}

/// A sealed record (valid checksum) of `kind` at `pos`.
pub fn sealed(pos: u64, kind: Kind, key: &[u8], value: &[u8], cas: u64) -> Vec<u8> {
    let h = Header {
        position: pos,
        checksum: 0,
        kind,
        key_len: 0,
        item_flags: 0,
        value_len: 0,
        client_flags: 0,
        cas,
        expiry: 0,
        time: 0,
        epoch: 1,
    };
    record::encode_record(h, key, value)
}

/// A sealed header claiming `value_len` bytes of value (the body is not
/// written: a record too large to build, checksum-valid over what it says).
pub fn sealed_header(pos: u64, kind: Kind, key: &[u8], value_len: u32, body: &[u8]) -> Vec<u8> {
    let mut h = Header {
        position: pos,
        checksum: 0,
        kind,
        key_len: key.len() as u8,
        item_flags: 0,
        value_len,
        client_flags: 0,
        cas: 1,
        expiry: 0,
        time: 0,
        epoch: 1,
    };
    h.seal(&[key, body]);
    let mut out = h.encode().to_vec();
    out.extend_from_slice(key);
    out.extend_from_slice(body);
    out
}

impl FakePrimary {
    /// An empty log of `capacity` bytes (a multiple of 8).
    ///
    /// # Panics
    /// On a capacity no log has (tests and the fuzzer pass the replica's).
    pub fn new(capacity: u64) -> FakePrimary {
        let geo = LogGeometry::new(capacity).unwrap_or_else(|| panic!("no log holds {capacity} bytes"));
        let image = Image {
            geo,
            region: vec![0; CONTROL_SIZE + capacity as usize],
            control: fresh_control(capacity),
            script: VecDeque::new(),
            end_after_script: false,
            reports: Vec::new(),
        };
        FakePrimary { image: Arc::new(Mutex::new(image)), staged: Vec::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Image> {
        self.image.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write `bytes` into the log at logical `pos`, cut at the lap's end.
    pub fn put(&self, pos: u64, bytes: &[u8]) {
        let mut g = self.lock();
        let off = g.geo.physical(pos);
        let n = bytes.len().min(g.geo.room_to_end(pos) as usize);
        g.region[off..off + n].copy_from_slice(&bytes[..n]);
    }

    /// Change the control block served from now on.
    pub fn control(&self, f: impl FnOnce(&mut ControlSnapshot)) {
        f(&mut self.lock().control);
    }

    /// Serve these control blocks first, one per read; then fail every
    /// read (the replica loop ends with that error).
    pub fn script(&self, rounds: Vec<ControlSnapshot>) {
        let mut g = self.lock();
        g.script = rounds.into();
        g.end_after_script = true;
    }

    /// What the replica reported into its slot, in order.
    pub fn reports(&self) -> Vec<Progress> {
        self.lock().reports.clone()
    }

    pub fn transport(&self) -> Box<dyn Transport> {
        Box::new(self.clone())
    }
}

impl Transport for FakePrimary {
    fn control(&mut self) -> Result<ControlSnapshot> {
        let mut g = self.lock();
        match g.script.pop_front() {
            Some(c) => Ok(c),
            None if g.end_after_script => Err(Error::new("the fake primary's script ended")),
            None => Ok(g.control),
        }
    }

    fn read(&mut self, off: usize, len: usize) -> Result<&[u8]> {
        let g = self.image.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bytes) = off.checked_add(len).and_then(|end| g.region.get(off..end)) else {
            crate::bail!("read of {len} bytes at {off} is outside the fake primary's region");
        };
        self.staged.clear();
        self.staged.extend_from_slice(bytes);
        drop(g);
        Ok(&self.staged)
    }

    fn report(&mut self, p: &Progress) -> Result<()> {
        self.lock().reports.push(*p);
        Ok(())
    }

    fn slot(&self) -> usize {
        0
    }

    fn describe(&self) -> String {
        "fake://primary".into()
    }
}

/// The replica's log size in the harness: the smallest a store has (one
/// huge page less the control block).
fn harness_config() -> StoreConfig {
    StoreConfig { memory_bytes: 1 << 20, max_item_size: 1 << 18, hugepages: HugePages::Off }
}

/// Bytes the fuzzer gave, read front to back; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
}

const KINDS: [Kind; 5] = [Kind::Set, Kind::Delete, Kind::Touch, Kind::Flush, Kind::Padding];
/// Bounds on one input's work, so every run is short.
const MAX_OPS: usize = 96;
const MAX_ROUNDS: usize = 12;

/// Build a primary from `data` (records sealed or raw, control blocks sane
/// or absurd), run the replica loop against it until the primary's script
/// ends, and check the replica: it must not panic, and its log must stay
/// walkable and its index consistent ([`check_replica`]).
///
/// # Panics
/// When the replica is left inconsistent (that is the finding).
pub fn replica_apply(data: &[u8]) {
    let Some(store) = run(data) else { return };
    if let Err(e) = check_replica(&store) {
        panic!("replica inconsistent after a fuzzed primary: {e}");
    }
}

/// The replica store after following the primary `data` describes.
fn run(data: &[u8]) -> Option<Store> {
    let store = Store::new(&harness_config()).ok()?;
    store.set_read_only(true);
    let geo = store.log().geometry();
    let cap = geo.capacity();
    let primary = FakePrimary::new(cap);
    let mut input = Input(data);
    let mut cursor: u64 = 0;
    let mut control = fresh_control(cap);
    let mut rounds = Vec::new();
    let mut cas = 1u64;
    for _ in 0..MAX_OPS {
        if input.is_empty() || rounds.len() >= MAX_ROUNDS {
            break;
        }
        match input.u8() % 8 {
            0 => {
                // A sealed record of any kind and shape at the cursor.
                let kind = KINDS[input.u8() as usize % KINDS.len()];
                let key = input.take(input.0.first().map_or(0, |&n| n as usize % 40)).to_vec();
                let value = vec![input.u8(); input.u16() as usize % 4096];
                let rec = match kind {
                    Kind::Padding => {
                        let room = geo.room_to_end(cursor);
                        let len = room.saturating_sub(HEADER_LEN as u64) as u32;
                        sealed_header(cursor, kind, &[], len, &[])
                    }
                    _ => sealed(cursor, kind, &key, &value, cas),
                };
                cas += 1;
                primary.put(cursor, &rec);
                cursor = geo.skip_gap(cursor + rec.len() as u64);
            }
            1 => {
                // A header claiming any length, sealed over that many zero
                // bytes when they fit the lap (checksum-valid nonsense).
                let value_len = input.u32() % (2 * cap as u32);
                let room = geo.room_to_end(cursor);
                let fits = HEADER_LEN as u64 + 8 + value_len as u64 <= room;
                let body = if fits { vec![0; value_len as usize] } else { Vec::new() };
                let rec = sealed_header(cursor, Kind::Set, b"absurd", value_len, &body);
                primary.put(cursor, &rec);
                cursor = geo.skip_gap(cursor + record::align_up(rec.len() as u64));
            }
            2 => {
                // Raw bytes anywhere near the cursor (corruption, torn reads).
                let at = cursor.saturating_sub(u64::from(input.u16()) * 8);
                let n = input.u8() as usize;
                let bytes = input.take(n).to_vec();
                primary.put(at, &bytes);
            }
            3 => {
                // A control block, its fields sane or not.
                let sel = input.u8();
                let mut c = control;
                c.head = match sel & 3 {
                    0 => cursor,
                    1 => cursor.saturating_sub(u64::from(input.u16()) * 8),
                    2 => input.u64(),
                    _ => cursor + u64::from(input.u16()) * 8,
                };
                c.tail = match (sel >> 2) & 3 {
                    0 => control.tail,
                    1 => c.head.saturating_sub(u64::from(input.u32()) * 8),
                    2 => input.u64(),
                    _ => c.head.saturating_sub(cap),
                };
                match (sel >> 4) & 3 {
                    0 => {}
                    1 => c.epoch = u64::from(input.u8()),
                    2 => c.epoch = input.u64(),
                    _ => c.incarnation ^= 1,
                }
                match sel >> 6 {
                    0 => {}
                    1 => c.epoch_start = input.u64(),
                    2 => c.max_cas = input.u64(),
                    _ => c.capacity = input.u64(),
                }
                c.heartbeat_us = c.heartbeat_us.wrapping_add(1);
                control = c;
                rounds.push(c);
            }
            4 => cursor = geo.skip_gap(cursor + u64::from(input.u16()) * 8),
            5 => cursor += geo.room_to_end(cursor),
            // Far out, past the replica's bounds but not where the
            // harness's own arithmetic would wrap.
            6 => cursor = input.u64() & ((1 << 63) - 8),
            _ => {
                // An ordinary set of one of a few keys (keeps the index busy).
                let key = format!("k{}", input.u8() % 16);
                let value = vec![b'v'; input.u8() as usize * 16];
                let rec = sealed(cursor, Kind::Set, key.as_bytes(), &value, cas);
                cas += 1;
                primary.put(cursor, &rec);
                cursor = geo.skip_gap(cursor + rec.len() as u64);
            }
        }
    }
    if rounds.is_empty() {
        control.head = cursor;
        rounds.push(control);
    }
    primary.script(rounds);
    let status = ReplicaStatus::default();
    let mut t = primary.transport();
    let _ = follow_until_error(&store, &status, t.as_mut());
    Some(store)
}

/// Check a replica's own state: its log walks from tail to head, record by
/// record, each valid at its position and within the geometry; every index
/// entry points at a live item record of its key inside [tail, head); the
/// item count and byte stats agree with the index.
pub fn check_replica(store: &Store) -> std::result::Result<(), String> {
    let log = store.log();
    let geo = log.geometry();
    let (tail, head) = (log.tail(), log.head());
    if tail > head || head - tail > geo.capacity() {
        return Err(format!("tail {tail} and head {head} do not bound a log of {}", geo.capacity()));
    }
    let record_at = |p: u64| -> std::result::Result<Header, String> {
        let mut hb = [0u8; HEADER_LEN];
        log.read_span(p, &mut hb);
        let h = Header::decode(&hb).map_err(|e| format!("at {p}: {e}"))?;
        let n = h.total_len();
        if n > geo.max_record() || n > geo.room_to_end(p) {
            return Err(format!("record at {p} of {n} bytes does not fit the log"));
        }
        let mut buf = vec![0u8; n as usize];
        log.read_span(p, &mut buf);
        record::validate(&buf, p).map(|r| r.header).map_err(|e| format!("record at {p}: {e}"))
    };
    let mut p = tail;
    while p < head {
        p = geo.skip_gap(p);
        if p >= head {
            break;
        }
        p += record_at(p)?.total_len();
    }
    if p != head {
        return Err(format!("the walk from tail {tail} ends at {p}, not at head {head}"));
    }
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut bad = None;
    let mut entries = Vec::new();
    store.index().for_each(|k, e| {
        count += 1;
        bytes += u64::from(e.len);
        let why = if e.pos < tail || e.pos >= head {
            Some(format!("points at {} outside [{tail}, {head})", e.pos))
        } else {
            match record_at(e.pos) {
                Err(e) => Some(e),
                Ok(h) if !h.kind.is_item() => Some(format!("points at a {:?} record", h.kind)),
                Ok(h) if h.total_len() != u64::from(e.len) => {
                    Some(format!("says {} bytes, the record {}", e.len, h.total_len()))
                }
                Ok(_) => None,
            }
        };
        if let (None, Some(why)) = (&bad, why) {
            bad = Some(format!("index entry {k:?} {why}"));
        }
        entries.push((k.to_vec(), e.pos));
    });
    if let Some(b) = bad {
        return Err(b);
    }
    // The index keeps no key: the one for_each reports is its record's, so
    // what can go wrong is an entry its own key no longer finds.
    if let Some((k, pos)) = entries.iter().find(|(k, pos)| store.index().position(k) != Some(*pos)) {
        return Err(format!("index entry at {pos} is not found by its key {k:?}"));
    }
    let snap = store.snapshot();
    if snap.curr_items != count || snap.bytes != bytes {
        return Err(format!(
            "stats say {} items in {} bytes, the index {count} in {bytes}",
            snap.curr_items, snap.bytes
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_primary_is_followed_and_the_replica_checks_out() {
        // Three sets of keys k1, k2, k1 again; then a control block at the cursor.
        let data = [7, 1, 2, 7, 2, 3, 7, 1, 4, 3, 0];
        let store = run(&data).expect("a store");
        check_replica(&store).unwrap();
        assert_eq!(store.index().len(), 2);
        assert_eq!(store.log().head(), 3 * record::record_len(2, 0) + 16 * (2 + 3 + 4));
    }

    #[test]
    fn absurd_primaries_leave_a_consistent_replica() {
        // An absurd length, an absurd control block, corruption; each alone
        // and after a few good records.
        let cases: [&[u8]; 5] = [
            &[1, 0xff, 0xff, 0x0f, 0, 3, 0],
            &[7, 1, 2, 1, 0xf0, 0xff, 0x0f, 0, 3, 0],
            &[7, 1, 2, 3, 0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0],
            &[7, 1, 2, 2, 1, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 3, 0],
            &[6, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 7, 1, 2, 3, 0],
        ];
        for data in cases {
            let store = run(data).expect("a store");
            check_replica(&store).unwrap_or_else(|e| panic!("{data:?}: {e}"));
        }
    }
}
