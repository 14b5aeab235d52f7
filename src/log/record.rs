//! The record format: every mutation of the cache is one immutable,
//! self-describing, self-verifying record in the log.
//!
//! A reader, local or remote, accepts a record only where both its own
//! logical position and its checksum match. Records are 8-byte aligned and
//! never straddle the end of the circular log.
//!
//! ```text
//!  byte 0               8          12     13       14        15       16
//!       +---------------+----------+------+--------+---------+--------+
//!       | position u64  | crc32c   | kind | keylen | itemflg | rsvd=0 |
//!       +---------------+----------+------+--------+---------+--------+
//!  16   | value_len u32 | client flags u32 | cas u64                   |
//!       +---------------+------------------+---------------------------+
//!  32   | expiry u32    | time u32         | epoch u64                 |
//!       +---------------+------------------+---------------------------+
//!  48   | key (keylen bytes) | value (value_len bytes) | pad to 8       |
//!       +--------------------+-------------------------+----------------+
//! ```
//! All integers little-endian. `expiry` is absolute unix seconds (0 = never):
//! relative times would mean something else in another process. `time` is
//! when the record was written (for delayed `flush_all`). `epoch` is the
//! primary term that wrote it. The checksum covers everything but itself:
//! header, key and value (for padding: the header only, since the pad bytes
//! are whatever was there before).
//!
//! What each kind means, and what the cleaner does when it reclaims one:
//! - `Set`: an item, value and all. The index points at it; reclaiming it
//!   ends the item if the index still points there. Whether that counts as
//!   an eviction or an expiry is decided by the item's *latest* expiry (a
//!   later Touch may have moved it) and the delayed-flush point, at the
//!   cleaner's clock: an item still live then was evicted.
//! - `Touch`: a new expiry for the item whose Set record the index points
//!   at: the key, `expiry` = the new absolute expiry, `cas` = the item's
//!   CAS (unchanged by a touch), `client_flags` = the item's, `time` = when
//!   touched; no value. It costs the same small record whatever the value's
//!   size. Reclaiming it frees nothing live: the item stays where its Set
//!   record is, with its latest expiry, until that record is reclaimed
//!   (even if the touch promised it longer). A replica applying a Touch
//!   whose item it does not hold (it replayed from a tail between the Set
//!   and the Touch), or holds with another CAS, ignores it.
//! - `Delete`: the key's removal. `Flush`: flush_all, `expiry` = when it
//!   takes effect (0 = at once), `time` = when it was issued. `Padding`:
//!   filler up to the log's physical end. Reclaiming these frees nothing live.

use std::ops::Range;

use super::checksum::RecordChecksum;

pub const HEADER_LEN: usize = 48;
pub const CHECKSUM_RANGE: Range<usize> = 8..12;
/// memcached's key limit.
pub const MAX_KEY_LEN: usize = 250;
/// Where the header keeps the key's length.
pub const KEY_LEN_AT: usize = 13;
pub const ALIGN: u64 = 8;

/// Item flag: the item was invalidated (meta `md I` / `ms I`) and is stale.
pub const ITEM_STALE: u8 = 1;
/// Item flag: the item was stored by meta `ms` with a base64 key (`b`);
/// memcached then echoes its key base64-encoded on `mg` hits and `me`.
pub const ITEM_KEY_BINARY: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A full item: set, add, replace, append, prepend, cas, incr/decr results.
    Set = 1,
    /// A key's removal (delete, or a replica applying one).
    Delete = 2,
    /// A new expiry for an existing item (touch, gat, meta `T`): the key
    /// and the expiry, no value (see the module doc).
    Touch = 3,
    /// flush_all: `expiry` is when it takes effect.
    Flush = 4,
    /// Fills the space up to the end of the circular log so the next record
    /// does not straddle it.
    Padding = 5,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Set,
            2 => Kind::Delete,
            3 => Kind::Touch,
            4 => Kind::Flush,
            5 => Kind::Padding,
            _ => return None,
        })
    }

    /// Whether this record holds an item (its value) for the index to point
    /// at. A Touch only changes the expiry of the item a Set record holds.
    pub fn is_item(self) -> bool {
        matches!(self, Kind::Set)
    }
}

/// The decoded fixed-size header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub position: u64,
    pub checksum: u32,
    pub kind: Kind,
    pub key_len: u8,
    pub item_flags: u8,
    pub value_len: u32,
    pub client_flags: u32,
    pub cas: u64,
    pub expiry: u32,
    pub time: u32,
    pub epoch: u64,
}

/// Why bytes were not accepted as a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes than the header says the record has (read more, or torn).
    Truncated {
        need: usize,
    },
    /// The position stamped in the record is not where we read it: an older
    /// lap's bytes, or garbage.
    WrongPosition {
        found: u64,
    },
    BadKind(u8),
    BadLength,
    BadChecksum,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Truncated { need } => write!(f, "truncated record (needs {need} bytes)"),
            Invalid::WrongPosition { found } => write!(f, "record stamped with position {found}"),
            Invalid::BadKind(k) => write!(f, "unknown record kind {k}"),
            Invalid::BadLength => f.write_str("record lengths out of range"),
            Invalid::BadChecksum => f.write_str("record checksum mismatch"),
        }
    }
}

pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

impl Header {
    /// Total bytes the record occupies in the log, padding included.
    pub fn total_len(&self) -> u64 {
        if self.kind == Kind::Padding {
            HEADER_LEN as u64 + self.value_len as u64
        } else {
            record_len(self.key_len as usize, self.value_len as usize)
        }
    }

    /// Bytes covered by the checksum after the header.
    fn body_len(&self) -> usize {
        if self.kind == Kind::Padding {
            0
        } else {
            self.key_len as usize + self.value_len as usize
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.position.to_le_bytes());
        b[8..12].copy_from_slice(&self.checksum.to_le_bytes());
        b[12] = self.kind as u8;
        b[KEY_LEN_AT] = self.key_len;
        b[14] = self.item_flags;
        b[16..20].copy_from_slice(&self.value_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.client_flags.to_le_bytes());
        b[24..32].copy_from_slice(&self.cas.to_le_bytes());
        b[32..36].copy_from_slice(&self.expiry.to_le_bytes());
        b[36..40].copy_from_slice(&self.time.to_le_bytes());
        b[40..48].copy_from_slice(&self.epoch.to_le_bytes());
        b
    }

    /// Decode without judging; `validate` judges.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, Invalid> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let kind = Kind::from_u8(b[12]).ok_or(Invalid::BadKind(b[12]))?;
        Ok(Header {
            position: u64_at(0),
            checksum: u32_at(8),
            kind,
            key_len: b[KEY_LEN_AT],
            item_flags: b[14],
            value_len: u32_at(16),
            client_flags: u32_at(20),
            cas: u64_at(24),
            expiry: u32_at(32),
            time: u32_at(36),
            epoch: u64_at(40),
        })
    }

    /// Fill in the checksum over this header and the given body pieces.
    pub fn seal(&mut self, body: &[&[u8]]) {
        self.checksum = 0;
        let mut c = RecordChecksum::over_header(&self.encode());
        for p in body {
            c.update(p);
        }
        self.checksum = c.finish();
    }
}

/// Log bytes a record with this key and value takes.
pub fn record_len(key_len: usize, value_len: usize) -> u64 {
    align_up((HEADER_LEN + key_len + value_len) as u64)
}

/// A record accepted by `validate`, borrowing the bytes it was read from.
#[derive(Debug)]
pub struct Record<'a> {
    pub header: Header,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// The length the header at the start of `buf` claims for the record at
/// `expected_pos`, without checking the body (no checksum): enough to plan
/// the next read; `validate` still judges every record.
pub fn claimed_len(buf: &[u8], expected_pos: u64) -> Option<usize> {
    let hb: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
    let h = Header::decode(hb).ok()?;
    let n = h.total_len() as usize;
    (h.position == expected_pos && n >= HEADER_LEN).then_some(n)
}

/// Accept `buf` (starting at the record) as the record at `expected_pos`, or
/// say why not. `buf` must hold the whole record, alignment included, and
/// may extend past it.
pub fn validate(buf: &[u8], expected_pos: u64) -> Result<Record<'_>, Invalid> {
    let Some(hb) = buf.get(..HEADER_LEN) else {
        return Err(Invalid::Truncated { need: HEADER_LEN });
    };
    let mut hbytes = [0u8; HEADER_LEN];
    hbytes.copy_from_slice(hb);
    // Check the position first: it is the cheap test that rejects old laps.
    let pos = u64::from_le_bytes(hbytes[0..8].try_into().unwrap_or([0; 8]));
    if pos != expected_pos {
        return Err(Invalid::WrongPosition { found: pos });
    }
    let h = Header::decode(&hbytes)?;
    if h.kind != Kind::Padding && h.key_len as usize > MAX_KEY_LEN {
        return Err(Invalid::BadLength);
    }
    if h.kind == Kind::Padding && (h.key_len != 0 || h.value_len % ALIGN as u32 != 0) {
        return Err(Invalid::BadLength);
    }
    // A Touch carries no value (format version 2 on).
    if h.kind == Kind::Touch && h.value_len != 0 {
        return Err(Invalid::BadLength);
    }
    let total = h.total_len() as usize;
    let body_end = HEADER_LEN + h.body_len();
    // The whole record, not just its checksummed part: a padding record's
    // body is not checksummed, and callers step `total` bytes on.
    if buf.len() < total {
        return Err(Invalid::Truncated { need: total });
    }
    if RecordChecksum::over_record(&buf[..body_end]) != h.checksum {
        return Err(Invalid::BadChecksum);
    }
    let key_end = HEADER_LEN + if h.kind == Kind::Padding { 0 } else { h.key_len as usize };
    Ok(Record { header: h, key: &buf[HEADER_LEN..key_end], value: &buf[key_end..body_end] })
}

/// Encode a whole record into a fresh buffer (tests and tools; the log writes
/// pieces straight into the region instead).
pub fn encode_record(mut h: Header, key: &[u8], value: &[u8]) -> Vec<u8> {
    h.key_len = key.len() as u8;
    h.value_len = value.len() as u32;
    h.seal(&[key, value]);
    let mut out = Vec::with_capacity(h.total_len() as usize);
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out.resize(h.total_len() as usize, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pos: u64) -> (Header, Vec<u8>) {
        let h = Header {
            position: pos,
            checksum: 0,
            kind: Kind::Set,
            key_len: 0,
            item_flags: 0,
            value_len: 0,
            client_flags: 0xdead_beef,
            cas: 77,
            expiry: 1_900_000_000,
            time: 1_800_000_000,
            epoch: 3,
        };
        let bytes = encode_record(h, b"user:42", b"hello world");
        (h, bytes)
    }

    #[test]
    fn round_trip() {
        let (_, bytes) = sample(4096);
        assert_eq!(bytes.len() % 8, 0);
        let r = validate(&bytes, 4096).unwrap();
        assert_eq!(r.key, b"user:42");
        assert_eq!(r.value, b"hello world");
        assert_eq!(r.header.client_flags, 0xdead_beef);
        assert_eq!(r.header.cas, 77);
        assert_eq!(r.header.expiry, 1_900_000_000);
        assert_eq!(r.header.epoch, 3);
        assert_eq!(r.header.total_len() as usize, bytes.len());
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let (_, bytes) = sample(64);
        let body_end = HEADER_LEN + 7 + 11;
        for i in 0..body_end {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(validate(&b, 64).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn wrong_position_is_rejected() {
        let (_, bytes) = sample(64);
        assert_eq!(validate(&bytes, 64 + (1 << 20)).unwrap_err(), Invalid::WrongPosition { found: 64 });
    }

    #[test]
    fn truncated_is_rejected_at_every_length() {
        let (_, bytes) = sample(64);
        for n in 0..bytes.len() {
            assert!(matches!(validate(&bytes[..n], 64), Err(Invalid::Truncated { .. })), "accepted {n} bytes");
        }
    }

    #[test]
    fn a_touch_is_small_and_carries_no_value() {
        let (mut h, _) = sample(64);
        h.kind = Kind::Touch;
        let touch = encode_record(h, b"user:42", b"");
        assert_eq!(touch.len() as u64, record_len(7, 0));
        let r = validate(&touch, 64).unwrap();
        assert_eq!((r.header.kind, r.key, r.value), (Kind::Touch, &b"user:42"[..], &b""[..]));
        assert!(!Kind::Touch.is_item(), "a touch holds no item for the index");
        assert_eq!(validate(&encode_record(h, b"user:42", b"v"), 64).unwrap_err(), Invalid::BadLength);
    }

    #[test]
    fn zeroed_memory_is_not_a_record() {
        assert!(validate(&[0u8; 128], 0).is_err());
    }

    #[test]
    fn padding_is_checked_over_its_header_only() {
        let mut h = Header {
            position: 8,
            checksum: 0,
            kind: Kind::Padding,
            key_len: 0,
            item_flags: 0,
            value_len: 64,
            client_flags: 0,
            cas: 0,
            expiry: 0,
            time: 0,
            epoch: 1,
        };
        h.seal(&[]);
        let mut b = h.encode().to_vec();
        b.extend_from_slice(&[0xAB; 64]);
        let r = validate(&b, 8).unwrap();
        assert_eq!(r.header.total_len(), 112);
        // Cut anywhere, even after its header, it is not whole.
        for n in 0..b.len() {
            assert!(
                matches!(
                    validate(&b[..n], 8),
                    Err(Invalid::Truncated { need: 112 } | Invalid::Truncated { need: HEADER_LEN })
                ),
                "accepted {n} bytes"
            );
        }
    }
}
