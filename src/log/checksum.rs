//! The record checksum: CRC32C (hardware-accelerated on x86_64 and aarch64)
//! over the record's header (its checksum field excluded), key and value.
//!
//! Covering the position too means a stale record from an earlier lap of the
//! circular log, or bytes left by a torn read, cannot pass as the record a
//! reader expected at that position.

use super::record::{CHECKSUM_RANGE, HEADER_LEN};

/// Incremental checksum over the pieces of one record, in order.
pub struct RecordChecksum(u32);

impl RecordChecksum {
    /// Start with the header: every byte except the 4-byte checksum field.
    pub fn over_header(header: &[u8; HEADER_LEN]) -> Self {
        let c = crc32c::crc32c(&header[..CHECKSUM_RANGE.start]);
        RecordChecksum(crc32c::crc32c_append(c, &header[CHECKSUM_RANGE.end..]))
    }

    /// The checksum of a whole record laid out in `rec` (header, then the
    /// checksummed body, nothing after): what `over_header` and `update`
    /// compute, in two passes over contiguous bytes instead of three.
    pub fn over_record(rec: &[u8]) -> u32 {
        let c = crc32c::crc32c(&rec[..CHECKSUM_RANGE.start]);
        crc32c::crc32c_append(c, &rec[CHECKSUM_RANGE.end..])
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, bytes);
    }

    pub fn finish(&self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_field_itself_is_excluded() {
        let mut h = [7u8; HEADER_LEN];
        let a = RecordChecksum::over_header(&h).finish();
        h[CHECKSUM_RANGE].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(a, RecordChecksum::over_header(&h).finish());
        h[0] ^= 1;
        assert_ne!(a, RecordChecksum::over_header(&h).finish());
    }

    #[test]
    fn a_laid_out_record_sums_as_its_pieces() {
        let mut rec = vec![5u8; HEADER_LEN];
        rec.extend_from_slice(b"keyvalue");
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&rec[..HEADER_LEN]);
        let mut a = RecordChecksum::over_header(&h);
        a.update(b"keyvalue");
        assert_eq!(RecordChecksum::over_record(&rec), a.finish());
        rec[CHECKSUM_RANGE.start] ^= 0xff;
        assert_eq!(RecordChecksum::over_record(&rec), a.finish(), "the checksum field is not covered");
        rec[HEADER_LEN + 2] ^= 1;
        assert_ne!(RecordChecksum::over_record(&rec), a.finish());
    }

    #[test]
    fn pieces_equal_whole() {
        let h = [3u8; HEADER_LEN];
        let mut a = RecordChecksum::over_header(&h);
        a.update(b"key");
        a.update(b"value");
        let mut b = RecordChecksum::over_header(&h);
        b.update(b"keyvalue");
        assert_eq!(a.finish(), b.finish());
    }
}
