//! The `ud_request` target: the input is one request datagram's payload,
//! through the server's datagram path ([`answer_datagram`]: framing, the
//! retry cache, the requests, `NEEDS_RC`) on a real store. Checks: the
//! framing accepts exactly the datagrams that are a sequence of whole
//! binary requests (a reference walk); a malformed one gets no reply and
//! changes nothing; the replies are whole response frames, in request order,
//! each fitting a datagram, and `reply_chunks` cuts them into datagrams that
//! hold all of them; a retried write is answered from the cache, byte for
//! byte, without running again; the replies are those the same requests get
//! over TCP (up to where TCP would close); the client's opaque stamp touches
//! exactly the opaque fields.

use std::ops::Range;

use super::binary::responses;
use super::conn::Conn;
use crate::client::wire;
use crate::protocol::binary::header::{HEADER_LEN, REQUEST_MAGIC};
use crate::protocol::binary::opcode;
use crate::rdma_wire::frames::{reply_chunks, split_frames};
use crate::rdma_wire::NEEDS_RC;
use crate::server::rdma::answer_datagram;
use crate::server::rdma::dedup::{is_write, Recent, PER_CLIENT_BYTES};
use crate::stats::counter;

/// Path MTUs a UD datagram can have.
const MTUS: [usize; 5] = [256, 512, 1024, 2048, 4096];

pub fn ud_request(data: &[u8]) {
    // The worker drops a datagram larger than its MTU before decoding it.
    let Some(mtu) = MTUS.into_iter().find(|&m| m >= data.len()) else { return };
    let frames = split_frames(data);
    assert_eq!(frames, reference_frames(data), "split_frames disagrees with a plain walk of the frames");
    check_opaque_stamp(data, frames.as_deref());

    let c = Conn::new();
    let ctx = c.ctx();
    let mut recent = Recent::default();
    let mut out = Vec::new();
    let answer = answer_datagram(data, &mut recent, &mut out, &ctx, mtu);
    assert_eq!(answer.is_some(), frames.is_some(), "answered a malformed datagram, or dropped a well-formed one");
    let Some(frames) = frames else {
        assert!(out.is_empty(), "a dropped datagram got a reply");
        assert_eq!(c.store.snapshot().records_appended, 0, "a dropped datagram changed the store");
        return;
    };
    c.check_store();
    let replies = responses(&out);
    check_order(data, &frames, &replies);
    assert!(
        replies.iter().all(|r| 24 + r.extras.len() + r.key.len() + r.value.len() <= mtu),
        "a reply frame over the MTU"
    );
    let chunks = reply_chunks(&out, mtu);
    let mut at = 0;
    for ch in &chunks {
        assert!(ch.start == at && ch.len() <= mtu && !ch.is_empty(), "chunks {chunks:?} of {} bytes", out.len());
        at = ch.end;
    }
    assert_eq!(at, out.len(), "reply_chunks left replies unsent");

    let write = frames.iter().any(|f| is_write(data[f.start + 1]));
    assert!(answer == Some(false) || write, "remembered the replies of reads");
    if write && out.len() <= PER_CLIENT_BYTES {
        assert_eq!(answer, Some(true), "a write's replies were not remembered");
    }
    // Replies over dedup::PER_CLIENT_BYTES are not remembered (their retry
    // runs again): the reply cache's stated bound.
    if answer == Some(true) {
        let appended = c.store.snapshot().records_appended;
        let mut again = Vec::new();
        assert_eq!(answer_datagram(data, &mut recent, &mut again, &ctx, mtu), Some(false));
        assert!(again == out, "a retried write got another reply");
        assert_eq!(c.store.snapshot().records_appended, appended, "a retried write ran again");
        assert_eq!(counter(&c.rt.workers, "rdma_retries"), 1);
    }

    // Over TCP the same bytes are a binary stream: the same replies, up to
    // where the stream closes (a datagram has no stream to close, so every
    // request in it runs). Not comparable: NEEDS_RC, and stat's rusage.
    let comparable = !replies.iter().any(|r| r.status == NEEDS_RC)
        && !frames.iter().any(|f| opcode::base(data[f.start + 1]).0 == opcode::STAT);
    let t0 = seconds();
    let tcp = Conn::fed(data, &[]);
    if comparable && seconds() == t0 {
        assert!(out.starts_with(&tcp.out), "the datagram's replies differ from TCP's");
        if !tcp.closed {
            assert!(out == tcp.out, "the datagram's replies differ from TCP's");
        }
    }
}

fn seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The frames of a datagram that is nothing but whole binary requests.
fn reference_frames(d: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut v = Vec::new();
    let mut pos = 0;
    while pos < d.len() {
        let h = d.get(pos..pos + HEADER_LEN)?;
        let key = u16::from_be_bytes([h[2], h[3]]) as u64;
        let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as u64;
        if h[0] != REQUEST_MAGIC || h[4] as u64 + key > body || (d.len() - pos) as u64 - (HEADER_LEN as u64) < body {
            return None;
        }
        v.push(pos..pos + HEADER_LEN + body as usize);
        pos += HEADER_LEN + body as usize;
    }
    (!v.is_empty()).then_some(v)
}

/// Replies come in request order: each under the opcode and opaque of the
/// request it answers, that request at or after the previous reply's.
fn check_order(data: &[u8], frames: &[Range<usize>], replies: &[wire::Response]) {
    let ids: Vec<(u8, u32)> = frames
        .iter()
        .map(|f| {
            (
                data[f.start + 1],
                u32::from_be_bytes([data[f.start + 12], data[f.start + 13], data[f.start + 14], data[f.start + 15]]),
            )
        })
        .collect();
    let mut i = 0;
    for r in replies {
        while i < ids.len() && ids[i] != (r.opcode, r.opaque) {
            i += 1;
        }
        assert!(i < ids.len(), "reply {:?} answers no request at or after the previous reply's", (r.opcode, r.opaque));
    }
}

/// The client stamps its request id in every frame's opaque and nowhere else.
fn check_opaque_stamp(data: &[u8], frames: Option<&[Range<usize>]>) {
    let mut b = data.to_vec();
    wire::set_opaque(&mut b, 0x5eed_f00d);
    let Some(frames) = frames else { return };
    let mut want = data.to_vec();
    for f in frames {
        want[f.start + 12..f.start + 16].copy_from_slice(&0x5eed_f00du32.to_be_bytes());
    }
    assert!(b == want, "set_opaque changed more than the opaque fields");
}
