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
//!  64      max cas   AtomicU64    highest CAS issued (for a promoted replica)
//!  72      epoch start AtomicU64  position where the current epoch began
//!  80      incarnation (u64)      random, set when the log is created: a restarted
//!                                 primary is a different history even at the same epoch
//!  4096    progress slots: MAX_REPLICAS x 64 bytes (one cache line each)
//!          slot: applied position u64, epoch u64, updated (us) u64, replica id u64,
//!                caught-up (us) u64
//! ```
//! The log occupies [CONTROL_SIZE, region end). Only the progress slots are
//! remotely writable; everything else is remotely read-only.

pub const MAGIC: u64 = u64::from_le_bytes(*b"LOGMCD01");
pub const FORMAT_VERSION: u64 = 1;

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
/// Bytes a remote reader fetches to learn head, tail, epoch and heartbeat.
pub const HEADER_FETCH_LEN: usize = 128;

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
}

impl ControlSnapshot {
    pub fn decode(b: &[u8]) -> Option<ControlSnapshot> {
        let at = |i: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
        Some(ControlSnapshot {
            magic: at(OFF_MAGIC)?,
            version: at(OFF_VERSION)?,
            capacity: at(OFF_CAPACITY)?,
            log_offset: at(OFF_LOG_OFFSET)?,
            head: at(OFF_HEAD)?,
            tail: at(OFF_TAIL)?,
            epoch: at(OFF_EPOCH)?,
            heartbeat_us: at(OFF_HEARTBEAT)?,
            max_cas: at(OFF_MAX_CAS)?,
            epoch_start: at(OFF_EPOCH_START)?,
            incarnation: at(OFF_INCARNATION)?,
        })
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
