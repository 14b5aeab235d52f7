//! The 24-byte binary packet header: request parsing, response encoding.

/// Every binary packet starts with a 24-byte header.
pub const HEADER_LEN: usize = 24;
/// First byte of every binary request.
pub const REQUEST_MAGIC: u8 = 0x80;
/// First byte of every binary response.
pub const RESPONSE_MAGIC: u8 = 0x81;

/// A request header, in host byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub magic: u8,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub data_type: u8,
    pub vbucket: u16,
    /// Extras + key + value.
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

impl RequestHeader {
    /// Parse the front of `b`; `None` until 24 bytes are there.
    pub fn parse(b: &[u8]) -> Option<RequestHeader> {
        let h: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(RequestHeader {
            magic: h[0],
            opcode: h[1],
            key_len: u16::from_be_bytes([h[2], h[3]]),
            extras_len: h[4],
            data_type: h[5],
            vbucket: u16::from_be_bytes([h[6], h[7]]),
            body_len: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            cas: u64::from_be_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]),
        })
    }

    /// Bytes of header, extras and key: what must be present before the
    /// request can be looked at (the value may then be swallowed instead).
    pub fn head_len(&self) -> usize {
        HEADER_LEN + self.extras_len as usize + self.key_len as usize
    }

    /// Body bytes after extras and key; `None` when the lengths disagree.
    pub fn value_len(&self) -> Option<usize> {
        (self.body_len as usize).checked_sub(self.extras_len as usize + self.key_len as usize)
    }
}

/// Append a response header.
#[allow(clippy::too_many_arguments)]
pub fn write_response_header(
    out: &mut Vec<u8>,
    opcode: u8,
    status: u16,
    extras_len: u8,
    key_len: u16,
    body_len: u32,
    opaque: u32,
    cas: u64,
) {
    out.push(RESPONSE_MAGIC);
    out.push(opcode);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.push(extras_len);
    out.push(0); // data type: raw bytes
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&body_len.to_be_bytes());
    // The opaque is echoed byte for byte.
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
}

/// A whole request frame, for tests: header (opaque and CAS zero), extras, key, value.
#[cfg(test)]
pub(crate) fn test_request(op: u8, key: &[u8], extras: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = vec![REQUEST_MAGIC, op];
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.push(extras.len() as u8);
    v.extend_from_slice(&[0, 0, 0]);
    v.extend_from_slice(&((key.len() + extras.len() + value.len()) as u32).to_be_bytes());
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(extras);
    v.extend_from_slice(key);
    v.extend_from_slice(value);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(op: u8, key: u16, ext: u8, body: u32, opaque: u32, cas: u64) -> Vec<u8> {
        let mut v = vec![REQUEST_MAGIC, op];
        v.extend_from_slice(&key.to_be_bytes());
        v.push(ext);
        v.push(0);
        v.extend_from_slice(&0u16.to_be_bytes());
        v.extend_from_slice(&body.to_be_bytes());
        v.extend_from_slice(&opaque.to_be_bytes());
        v.extend_from_slice(&cas.to_be_bytes());
        v
    }

    #[test]
    fn parses_big_endian_fields() {
        let b = raw(0x01, 3, 8, 14, 0xdead_beef, 0x0102_0304_0506_0708);
        let h = RequestHeader::parse(&b).unwrap();
        assert_eq!(h.magic, REQUEST_MAGIC);
        assert_eq!((h.opcode, h.key_len, h.extras_len, h.body_len), (1, 3, 8, 14));
        assert_eq!((h.opaque, h.cas), (0xdead_beef, 0x0102_0304_0506_0708));
        assert_eq!(h.head_len(), 24 + 8 + 3);
        assert_eq!(h.value_len(), Some(3));
    }

    #[test]
    fn short_input_and_inconsistent_lengths() {
        let b = raw(0x00, 3, 0, 3, 0, 0);
        assert!(RequestHeader::parse(&b[..23]).is_none());
        let bad = RequestHeader::parse(&raw(0x00, 10, 4, 5, 0, 0)).unwrap();
        assert_eq!(bad.value_len(), None);
        let max = RequestHeader::parse(&raw(0x01, u16::MAX, u8::MAX, u32::MAX, 0, 0)).unwrap();
        assert_eq!(max.value_len(), Some(u32::MAX as usize - 65535 - 255));
    }

    #[test]
    fn response_header_round_trip() {
        let mut out = Vec::new();
        write_response_header(&mut out, 0x0c, 0x0001, 4, 3, 10, 0x11223344, 99);
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(out[0], RESPONSE_MAGIC);
        assert_eq!(&out[2..4], &3u16.to_be_bytes());
        assert_eq!(out[4], 4);
        assert_eq!(&out[6..8], &1u16.to_be_bytes());
        assert_eq!(&out[8..12], &10u32.to_be_bytes());
        assert_eq!(&out[12..16], &0x11223344u32.to_be_bytes());
        assert_eq!(&out[16..24], &99u64.to_be_bytes());
    }
}
