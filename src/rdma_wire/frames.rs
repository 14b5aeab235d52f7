//! Framing of whole messages (a UD datagram, an RC message) made of binary
//! protocol frames, and the frames RDMA adds: [`NEEDS_RC`] and the per-request
//! refusal of an RC reply too large for its buffer.

use std::ops::Range;

use crate::protocol::binary::header::{write_response_header, RequestHeader, HEADER_LEN, REQUEST_MAGIC};

/// Reply status (outside memcached's codes) telling the client that this
/// request's reply does not fit a datagram: repeat it over RC.
pub const NEEDS_RC: u16 = 0x00a0;

/// Check the framing of a whole message: `Some` ranges of each complete
/// request when it is exactly a sequence of well-formed binary requests.
pub fn split_frames(input: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let h = RequestHeader::parse(&input[pos..])?;
        if h.magic != REQUEST_MAGIC {
            return None;
        }
        h.value_len()?;
        let end = pos.checked_add(HEADER_LEN)?.checked_add(h.body_len as usize)?;
        if end > input.len() {
            return None;
        }
        frames.push(pos..end);
        pos = end;
    }
    if frames.is_empty() {
        return None;
    }
    Some(frames)
}

/// Append the [`NEEDS_RC`] frame answering request `req` (one frame from
/// [`split_frames`]): its opcode and opaque, and its key in the key field, so
/// a client can fetch that key again over RC. Nothing for a frame too short
/// to be a request.
pub fn write_needs_rc(req: &[u8], out: &mut Vec<u8>) {
    let Some(h) = RequestHeader::parse(req) else { return };
    let key_start = HEADER_LEN + h.extras_len as usize;
    let key = req.get(key_start..key_start + h.key_len as usize).unwrap_or(&[]);
    write_response_header(out, h.opcode, NEEDS_RC, 0, key.len() as u16, key.len() as u32, h.opaque, 0);
    out.extend_from_slice(key);
}

/// Append one empty reply with `status` for every request of `input`
/// (`frames` from [`split_frames`]): how an RC reply that does not fit the
/// connection's capacity is refused (with `E2BIG`).
pub fn write_status_each(input: &[u8], frames: &[Range<usize>], status: u16, out: &mut Vec<u8>) {
    for f in frames {
        if let Some(h) = input.get(f.clone()).and_then(RequestHeader::parse) {
            write_response_header(out, h.opcode, status, 0, 0, 0, h.opaque, 0);
        }
    }
}

/// Split `out` (whole response frames) into chunks of at most `mtu` bytes at
/// frame boundaries, one datagram each. A frame larger than `mtu` (which the
/// server replaces by [`NEEDS_RC`], so never sends) ends the split.
pub fn reply_chunks(out: &[u8], mtu: usize) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let (mut start, mut pos) = (0, 0);
    while pos + HEADER_LEN <= out.len() {
        let body = u32::from_be_bytes([out[pos + 8], out[pos + 9], out[pos + 10], out[pos + 11]]) as usize;
        let end = pos + HEADER_LEN + body;
        if end > out.len() || end - pos > mtu {
            break;
        }
        if end - start > mtu {
            chunks.push(start..pos);
            start = pos;
        }
        pos = end;
    }
    if pos > start {
        chunks.push(start..pos);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::binary::header::RESPONSE_MAGIC;
    use crate::protocol::binary::{opcode, status};

    fn req(op: u8, key: &[u8], extras: &[u8], value: &[u8], opaque: u32) -> Vec<u8> {
        let mut v = vec![REQUEST_MAGIC, op];
        v.extend_from_slice(&(key.len() as u16).to_be_bytes());
        v.push(extras.len() as u8);
        v.push(0);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
        v.extend_from_slice(&opaque.to_be_bytes());
        v.extend_from_slice(&0u64.to_be_bytes());
        v.extend_from_slice(extras);
        v.extend_from_slice(key);
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn framing_of_whole_datagrams() {
        let a = req(opcode::GETKQ, b"a", &[], &[], 1);
        let b = req(opcode::SET, b"k", &[0; 8], b"value", 1);
        let n = req(opcode::NOOP, b"", &[], &[], 1);
        let d = [a.clone(), b.clone(), n.clone()].concat();
        let f = split_frames(&d).unwrap();
        assert_eq!(f, vec![0..a.len(), a.len()..a.len() + b.len(), a.len() + b.len()..d.len()]);
        // Truncated, trailing garbage, bad magic, lengths that disagree, empty.
        assert!(split_frames(&d[..d.len() - 1]).is_none());
        assert!(split_frames(&[d.clone(), vec![0x80]].concat()).is_none());
        let mut bad = a.clone();
        bad[0] = 0x81;
        assert!(split_frames(&bad).is_none());
        let mut bad = b.clone();
        bad[4] = 200; // extras longer than the body
        assert!(split_frames(&bad).is_none());
        assert!(split_frames(&[]).is_none());
        assert!(split_frames(b"get foo\r\n").is_none());
    }

    #[test]
    fn reply_chunks_keep_frames_whole() {
        let frame = |body: usize| {
            let mut o = Vec::new();
            write_response_header(&mut o, 0, 0, 0, 0, body as u32, 0, 0);
            o.resize(HEADER_LEN + body, 7);
            o
        };
        let out = [frame(100), frame(100), frame(500), frame(10)].concat();
        assert_eq!(out[0], RESPONSE_MAGIC);
        // A frame larger than the MTU ends the split (the server never sends one).
        assert_eq!(reply_chunks(&out, 300), vec![0..248]);
        assert_eq!(reply_chunks(&out, 1024), vec![0..out.len()]);
        let c = reply_chunks(&out, 600);
        assert_eq!(c, vec![0..248, 248..out.len()]);
        let total: usize = c.iter().map(|r| r.len()).sum();
        assert_eq!(total, out.len());
    }

    /// What a client reads from a NEEDS_RC frame: a response with the
    /// request's opcode and opaque, status NEEDS_RC, the key and no value.
    #[test]
    fn needs_rc_frame_carries_the_request_opaque_and_key() {
        let r = req(opcode::GETKQ, b"big-key", &[], &[], 0xdead_beef);
        let mut out = Vec::new();
        write_needs_rc(&r, &mut out);
        assert_eq!(out.len(), HEADER_LEN + 7);
        assert_eq!((out[0], out[1]), (RESPONSE_MAGIC, opcode::GETKQ));
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 7, "key length");
        assert_eq!(out[4], 0, "no extras");
        assert_eq!(u16::from_be_bytes([out[6], out[7]]), NEEDS_RC);
        assert_eq!(u32::from_be_bytes([out[8], out[9], out[10], out[11]]), 7, "body is the key alone");
        assert_eq!(u32::from_be_bytes([out[12], out[13], out[14], out[15]]), 0xdead_beef);
        assert_eq!(&out[HEADER_LEN..], b"big-key");
        // The key comes from after the extras.
        let mut out = Vec::new();
        write_needs_rc(&req(opcode::GAT, b"k", &[0, 0, 0, 9], &[], 3), &mut out);
        assert_eq!(&out[HEADER_LEN..], b"k");
        // Not a request: nothing.
        let mut out = Vec::new();
        write_needs_rc(b"short", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn status_for_each_request() {
        let d = [req(opcode::GETKQ, b"a", &[], &[], 5), req(opcode::NOOP, b"", &[], &[], 6)].concat();
        let frames = split_frames(&d).unwrap();
        let mut out = Vec::new();
        write_status_each(&d, &frames, status::E2BIG, &mut out);
        assert_eq!(out.len(), 2 * HEADER_LEN);
        for (f, (op, opaque)) in out.chunks(HEADER_LEN).zip([(opcode::GETKQ, 5u32), (opcode::NOOP, 6)]) {
            assert_eq!((f[0], f[1]), (RESPONSE_MAGIC, op));
            assert_eq!(u16::from_be_bytes([f[6], f[7]]), status::E2BIG);
            assert_eq!(u32::from_be_bytes([f[8], f[9], f[10], f[11]]), 0);
            assert_eq!(u32::from_be_bytes([f[12], f[13], f[14], f[15]]), opaque);
        }
    }
}
