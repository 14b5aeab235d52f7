//! Binary-protocol framing on the client side: encode requests, parse
//! responses. The same bytes go over TCP, in UD datagrams and in RC messages.

use crate::bail;
use crate::error::Result;
use crate::protocol::binary::header::{HEADER_LEN, REQUEST_MAGIC, RESPONSE_MAGIC};
pub use crate::protocol::binary::opcode;
pub use crate::protocol::binary::status;

/// One response frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub opcode: u8,
    pub status: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Response {
    /// The flags of a get reply (4 bytes of extras).
    pub fn flags(&self) -> u32 {
        match self.extras.get(..4) {
            Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            None => 0,
        }
    }
}

/// Append one request. `opaque` is usually 0 here: transports stamp their
/// request id with [`set_opaque`].
pub fn request(out: &mut Vec<u8>, op: u8, cas: u64, extras: &[u8], key: &[u8], value: &[u8]) {
    let body = extras.len() + key.len() + value.len();
    out.push(REQUEST_MAGIC);
    out.push(op);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.push(0);
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Overwrite the opaque of every request frame in `buf` with `id`.
pub fn set_opaque(buf: &mut [u8], id: u32) {
    let mut pos = 0;
    while pos + HEADER_LEN <= buf.len() {
        buf[pos + 12..pos + 16].copy_from_slice(&id.to_be_bytes());
        let body = u32::from_be_bytes([buf[pos + 8], buf[pos + 9], buf[pos + 10], buf[pos + 11]]) as usize;
        pos += HEADER_LEN + body;
    }
}

/// Parse one response from the front of `b`: `Ok(None)` until it is complete.
pub fn parse(b: &[u8]) -> Result<Option<(Response, usize)>> {
    if b.len() < HEADER_LEN {
        return Ok(None);
    }
    if b[0] != RESPONSE_MAGIC {
        bail!("not a binary response (magic {:#04x})", b[0]);
    }
    let key_len = u16::from_be_bytes([b[2], b[3]]) as usize;
    let extras_len = b[4] as usize;
    let body = u32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize;
    if extras_len + key_len > body {
        bail!("response lengths disagree: extras {extras_len} + key {key_len} > body {body}");
    }
    let total = HEADER_LEN + body;
    if b.len() < total {
        return Ok(None);
    }
    let e = HEADER_LEN + extras_len;
    let k = e + key_len;
    let mut cas = [0u8; 8];
    cas.copy_from_slice(&b[16..24]);
    Ok(Some((
        Response {
            opcode: b[1],
            status: u16::from_be_bytes([b[6], b[7]]),
            opaque: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
            cas: u64::from_be_bytes(cas),
            extras: b[HEADER_LEN..e].to_vec(),
            key: b[e..k].to_vec(),
            value: b[k..total].to_vec(),
        },
        total,
    )))
}

/// Every response in a whole message (a datagram or an RC message).
pub fn parse_all(mut b: &[u8]) -> Result<Vec<Response>> {
    let mut v = Vec::new();
    while !b.is_empty() {
        match parse(b)? {
            Some((r, n)) => {
                v.push(r);
                b = &b[n..];
            }
            None => bail!("truncated response ({} bytes left)", b.len()),
        }
    }
    Ok(v)
}

pub fn store_extras(flags: u32, exptime: u32) -> [u8; 8] {
    let mut x = [0u8; 8];
    x[..4].copy_from_slice(&flags.to_be_bytes());
    x[4..].copy_from_slice(&exptime.to_be_bytes());
    x
}

/// incr/decr extras; without `initial` a missing key stays missing
/// (expiration 0xffffffff, memcached's rule).
pub fn arith_extras(delta: u64, initial: Option<u64>, exptime: u32) -> [u8; 20] {
    let mut x = [0u8; 20];
    x[..8].copy_from_slice(&delta.to_be_bytes());
    x[8..16].copy_from_slice(&initial.unwrap_or(0).to_be_bytes());
    let e = if initial.is_some() { exptime } else { u32::MAX };
    x[16..].copy_from_slice(&e.to_be_bytes());
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::binary::header::{write_response_header, RequestHeader};

    #[test]
    fn request_then_opaque_stamp() {
        let mut b = Vec::new();
        request(&mut b, opcode::SET, 7, &store_extras(5, 60), b"key", b"value");
        request(&mut b, opcode::NOOP, 0, &[], &[], &[]);
        set_opaque(&mut b, 0xabcd);
        let h = RequestHeader::parse(&b).unwrap();
        assert_eq!(
            (h.opcode, h.key_len, h.extras_len, h.body_len, h.opaque, h.cas),
            (opcode::SET, 3, 8, 16, 0xabcd, 7)
        );
        let h2 = RequestHeader::parse(&b[24 + 16..]).unwrap();
        assert_eq!((h2.opcode, h2.opaque), (opcode::NOOP, 0xabcd));
    }

    #[test]
    fn responses_parse_and_bad_ones_fail() {
        let mut b = Vec::new();
        write_response_header(&mut b, opcode::GETK, 0, 4, 1, 4 + 1 + 2, 9, 42);
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(b"kvv");
        write_response_header(&mut b, opcode::NOOP, 0, 0, 0, 0, 9, 0);
        let all = parse_all(&b).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].flags(), &all[0].key[..], &all[0].value[..], all[0].cas), (3, &b"k"[..], &b"vv"[..], 42));
        assert_eq!(all[1].opcode, opcode::NOOP);
        assert!(parse(&b[..30]).unwrap().is_none());
        assert!(parse_all(&b[..30]).is_err());
        let mut bad = b.clone();
        bad[0] = 0x80;
        assert!(parse(&bad).is_err());
        let mut bad = b.clone();
        bad[4] = 100;
        assert!(parse(&bad).is_err());
    }
}
