//! The control block at the start of the region: what a remote reader needs to
//! find its way in the log, and where replicas report their progress.
//!
//! ```text
//!  offset  field
//!  0       magic "LOGMCD01"      (u64)   set once at creation
//!  8       format version         (u64)
//!  16      capacity (log bytes)   (u64)
//!  24      log offset in region   (u64)  = CONTROL_SIZE
//!  32      head      AtomicU64    everything below is complete (Release)
//!  40      tail      AtomicU64    oldest byte that may still be valid
//!  48      epoch     AtomicU64    primary term; raised by promotion
//!  56      heartbeat AtomicU64    primary's clock in microseconds, bumped while alive
//!  64      max cas   AtomicU64    highest CAS issued (a promoted replica starts above it)
//!  72      epoch start AtomicU64  position where the current epoch began
//!  80      incarnation (u64)      random, set when the log is created: a restarted
//!                                 primary is a different history even at the same epoch
//!  88      flush at  AtomicU64    a delayed flush_all's point (unix seconds, 0 = none):
//!                                 items written before it die at it. Here, not only in
//!                                 the Flush record, so a replica replaying from a tail
//!                                 past that record learns it
//!  96      memory bytes (u64)     the -m this log was made with (a -e restart checks it)
//!  104     max item size (u64)    the -I this log was made with (likewise)
//!  112     follows AtomicU64      a replica: the incarnation of the primary log it
//!                                 mirrors (0 = none), so a replica restarted from its
//!                                 memory file knows whose history it holds
//!  120     fenced by AtomicU64    a primary fenced by a promoted replica: that epoch
//!                                 (0 = not fenced), so a restart from the memory file
//!                                 stays fenced instead of taking writes a newer
//!                                 primary will never see
//!  128     doorbell  AtomicU32    bumped by the primary (then a futex wake) to wake
//!                                 `shm` replicas that said they sleep; not fetched
//!                                 by remote readers, who poll
//!  132     rings     AtomicU32    1 while this primary rings the doorbell for every
//!                                 write it holds for `--sync-replicas` (0: never)
//!  4096    progress slots: MAX_REPLICAS x 64 bytes (one cache line each)
//!          slot: applied position u64, epoch u64, updated (us) u64, replica id u64,
//!                caught-up (us) u64
//! ```
//! The log occupies [CONTROL_SIZE, region end). Only the progress slots are
//! remotely writable; everything else is remotely read-only.

pub const MAGIC: u64 = u64::from_le_bytes(*b"LOGMCD01");
/// The layout of this block and the meaning of records. 2: a Touch record
/// carries the key and the new expiry, no value; the flush point is here.
/// A replica refuses a primary of another version (`ControlSnapshot::is_valid`).
pub const FORMAT_VERSION: u64 = 2;

pub const OFF_MAGIC: usize = 0;
pub const OFF_VERSION: usize = 8;
pub const OFF_CAPACITY: usize = 16;
pub const OFF_LOG_OFFSET: usize = 24;
pub const OFF_HEAD: usize = 32;
pub const OFF_TAIL: usize = 40;
pub const OFF_EPOCH: usize = 48;
pub const OFF_HEARTBEAT: usize = 56;
pub const OFF_MAX_CAS: usize = 64;
pub const OFF_EPOCH_START: usize = 72;
pub const OFF_INCARNATION: usize = 80;
pub const OFF_FLUSH_AT: usize = 88;
pub const OFF_MEMORY_BYTES: usize = 96;
pub const OFF_MAX_ITEM: usize = 104;
pub const OFF_FOLLOWS: usize = 112;
pub const OFF_FENCED_BY: usize = 120;
/// Bytes a remote reader fetches to learn head, tail, epoch and heartbeat.
pub const HEADER_FETCH_LEN: usize = 128;
/// The `shm` doorbell (a futex word; see `replication::shm`), past what a
/// remote reader fetches. A primary that predates it leaves it 0 and never
/// rings: its replicas' waits just time out, as before it existed.
pub const OFF_DOORBELL: usize = 128;
/// 1 while the primary rings the doorbell for each write whose reply waits
/// for replicas (`--sync-replicas`): its `shm` replicas may then sleep long.
pub const OFF_RINGS: usize = 132;

pub const OFF_SLOTS: usize = 4096;
pub const SLOT_LEN: usize = 64;
pub const MAX_REPLICAS: usize = 64;
pub const SLOT_APPLIED: usize = 0;
pub const SLOT_EPOCH: usize = 8;
pub const SLOT_UPDATED_US: usize = 16;
pub const SLOT_REPLICA_ID: usize = 24;
pub const SLOT_CAUGHT_UP_US: usize = 32;

/// Bytes before the log starts; a multiple of every alignment we need.
pub const CONTROL_SIZE: usize = OFF_SLOTS + MAX_REPLICAS * SLOT_LEN;

pub fn slot_offset(slot: usize) -> usize {
    OFF_SLOTS + slot * SLOT_LEN
}

/// The control block's fixed fields decoded from bytes a reader fetched
/// (a remote replica READs `HEADER_FETCH_LEN` bytes from offset 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlSnapshot {
    pub magic: u64,
    pub version: u64,
    pub capacity: u64,
    pub log_offset: u64,
    pub head: u64,
    pub tail: u64,
    pub epoch: u64,
    pub heartbeat_us: u64,
    pub max_cas: u64,
    pub epoch_start: u64,
    pub incarnation: u64,
    /// A delayed flush_all's point (0 = none).
    pub flush_at: u64,
}

impl ControlSnapshot {
    pub fn decode(b: &[u8]) -> Option<ControlSnapshot> {
        if b.len() < HEADER_FETCH_LEN {
            return None;
        }
        Some(ControlSnapshot::load(|i| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        }))
    }

    /// The snapshot whose field at offset `off` is `word(off)` (every offset
    /// is below `HEADER_FETCH_LEN`): one list of fields for every reader,
    /// whether it decodes fetched bytes or loads atomics in a mapping.
    pub fn load(word: impl Fn(usize) -> u64) -> ControlSnapshot {
        ControlSnapshot {
            magic: word(OFF_MAGIC),
            version: word(OFF_VERSION),
            capacity: word(OFF_CAPACITY),
            log_offset: word(OFF_LOG_OFFSET),
            head: word(OFF_HEAD),
            tail: word(OFF_TAIL),
            epoch: word(OFF_EPOCH),
            heartbeat_us: word(OFF_HEARTBEAT),
            max_cas: word(OFF_MAX_CAS),
            epoch_start: word(OFF_EPOCH_START),
            incarnation: word(OFF_INCARNATION),
            flush_at: word(OFF_FLUSH_AT),
        }
    }

    /// A snapshot a replica may trust the layout of.
    pub fn is_valid(&self) -> bool {
        self.magic == MAGIC
            && self.version == FORMAT_VERSION
            && self.log_offset == CONTROL_SIZE as u64
            && self.capacity > 0
            && self.tail <= self.head
            && self.head - self.tail <= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_fetched_and_decoded() {
        let mut b = vec![0u8; HEADER_FETCH_LEN];
        let offsets = [
            OFF_MAGIC,
            OFF_VERSION,
            OFF_CAPACITY,
            OFF_LOG_OFFSET,
            OFF_HEAD,
            OFF_TAIL,
            OFF_EPOCH,
            OFF_HEARTBEAT,
            OFF_MAX_CAS,
            OFF_EPOCH_START,
            OFF_INCARNATION,
            OFF_FLUSH_AT,
        ];
        for (i, off) in offsets.iter().enumerate() {
            assert!(off + 8 <= HEADER_FETCH_LEN, "field at {off} is not fetched");
            b[*off..off + 8].copy_from_slice(&(i as u64 + 100).to_le_bytes());
        }
        let c = ControlSnapshot::decode(&b).unwrap();
        assert_eq!((c.magic, c.max_cas, c.incarnation, c.flush_at), (100, 108, 110, 111));
        assert_eq!(ControlSnapshot::decode(&b[..HEADER_FETCH_LEN - 1]), None);
        // The replica progress slots keep their place.
        assert_eq!((OFF_SLOTS, SLOT_LEN, slot_offset(1)), (4096, 64, 4160));
    }
}
