//! The `client_reply` target: the input is what a server (or anyone who can
//! send to the client's QP) sent: a reply datagram, an RC message, a TCP
//! stream. Checks on the client's decoders: `parse` takes a frame exactly
//! when one is whole and consistent, reports a partial one as incomplete
//! whatever its cut, and what it takes re-encodes to the bytes it came from;
//! `parse_all` takes a message iff it is whole frames; the reply assembly
//! ([`Collector`], as UD and RC calls use it) keeps only frames of its
//! call, at most one for a single-key call and never the NOOP of a
//! multi-get, counts frames after the end as stale, takes nothing from a
//! malformed datagram, and does not care how whole frames were spread over
//! datagrams.

use crate::client::wire::{self, opcode, Response};
use crate::client::{Collector, End, TransportStats};
use crate::protocol::binary::header::{write_response_header, HEADER_LEN, RESPONSE_MAGIC};

pub fn client_reply(data: &[u8]) {
    let first = check_parse(data);
    if let Some(n) = first {
        for cut in [0, 1, HEADER_LEN - 1, HEADER_LEN, n / 2, n - 1] {
            if cut < n {
                assert!(
                    matches!(wire::parse(&data[..cut]), Ok(None)),
                    "a {cut}-byte prefix of a {n}-byte frame is not incomplete"
                );
            }
        }
    }
    let all = wire::parse_all(data);
    let frames = reference_frames(data);
    assert_eq!(all.is_ok(), frames.is_some(), "parse_all disagrees with a plain walk of the frames");
    if let Ok(all) = &all {
        let mut again = Vec::new();
        for r in all {
            encode(r, &mut again);
        }
        assert!(same_but_data_type(&again, data, frames.as_deref().unwrap_or(&[])), "parse_all then encode");
    }

    let id = data.get(12..16).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let ranges = frames.as_deref().unwrap_or(&[]);
    for end in [End::First, End::Noop] {
        for dedup in [false, true] {
            let (one, st) = collect(id, end, dedup, &[data]);
            let Ok(all) = &all else {
                assert_eq!((st.bad_replies, st.stale), (1, 0), "a malformed datagram is one bad reply");
                assert!(one.is_none(), "took frames from a malformed datagram");
                continue;
            };
            assert_eq!(st.bad_replies, 0);
            check_assembly(&one, st.stale, all, id, end, dedup);
            // Each frame in a datagram of its own: the same call.
            let each: Vec<&[u8]> = ranges.iter().map(|r| &data[r.clone()]).collect();
            assert_eq!(collect(id, end, dedup, &each), (one, st), "spread over datagrams");
            // A datagram cut inside a frame is refused whole, taking nothing.
            if let Some(r) = ranges.last() {
                let (cut, st) = collect(id, end, dedup, &[&data[..r.end - 1]]);
                assert!(cut.is_none() && st.bad_replies == 1 && st.stale == 0, "a truncated datagram was taken");
            }
        }
    }
}

/// The client's assembly ([`Collector`]) of one call with attempt `id`
/// over the datagrams `msgs`: its answer when complete, and its counters.
fn collect(id: u32, end: End, dedup: bool, msgs: &[&[u8]]) -> (Option<Vec<Response>>, TransportStats) {
    let mut c = Collector::new(end, dedup);
    c.attempt(id);
    let mut st = TransportStats::default();
    for m in msgs {
        c.take(m, &mut st);
    }
    let done = c.done();
    let got = c.into_answer();
    if !done {
        assert!(got.is_empty(), "an unfinished call has an answer");
    }
    (done.then_some(got), st)
}

/// `parse` on `data`: what it says matches the header; returns the length
/// of the first frame when it took one.
fn check_parse(data: &[u8]) -> Option<usize> {
    let r = wire::parse(data);
    if data.len() < HEADER_LEN {
        assert!(matches!(r, Ok(None)), "{r:?} from {} bytes", data.len());
        return None;
    }
    let key = u16::from_be_bytes([data[2], data[3]]) as usize;
    let body = u32::from_be_bytes([data[8], data[9], data[10], data[11]]) as usize;
    let consistent = data[0] == RESPONSE_MAGIC && data[4] as usize + key <= body;
    match r {
        Err(_) => assert!(!consistent, "refused a consistent header"),
        Ok(None) => assert!(consistent && data.len() < HEADER_LEN + body, "incomplete, yet whole"),
        Ok(Some((resp, n))) => {
            assert!(consistent && n == HEADER_LEN + body && n <= data.len(), "took {n} bytes");
            let mut again = Vec::new();
            encode(&resp, &mut again);
            assert!(same_but_data_type(&again, &data[..n], std::slice::from_ref(&(0..n))), "parse then encode");
            return Some(n);
        }
    }
    None
}

/// The frame `r` was parsed from (data type 0).
fn encode(r: &Response, out: &mut Vec<u8>) {
    let body = (r.extras.len() + r.key.len() + r.value.len()) as u32;
    write_response_header(out, r.opcode, r.status, r.extras.len() as u8, r.key.len() as u16, body, r.opaque, r.cas);
    out.extend_from_slice(&r.extras);
    out.extend_from_slice(&r.key);
    out.extend_from_slice(&r.value);
}

/// `a == b` but for the data-type byte of each frame, which the client ignores.
fn same_but_data_type(a: &[u8], b: &[u8], frames: &[std::ops::Range<usize>]) -> bool {
    let mut b = b.to_vec();
    for f in frames {
        if let Some(x) = b.get_mut(f.start + 5) {
            *x = 0;
        }
    }
    a == b
}

/// The frames of a message that is nothing but whole response frames.
fn reference_frames(d: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut v = Vec::new();
    let mut pos = 0;
    while pos < d.len() {
        let h = d.get(pos..pos + HEADER_LEN)?;
        let key = u16::from_be_bytes([h[2], h[3]]) as usize;
        let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
        if h[0] != RESPONSE_MAGIC || h[4] as usize + key > body || d.len() - pos - HEADER_LEN < body {
            return None;
        }
        v.push(pos..pos + HEADER_LEN + body);
        pos += HEADER_LEN + body;
    }
    Some(v)
}

/// What a call keeps of the frames `all` of one datagram: only frames of
/// its id, up to the one that ends it (later ones are stale), at most one
/// for a single-key call, never a multi-get's NOOP, repeats once with `dedup`.
fn check_assembly(got: &Option<Vec<Response>>, stale: u64, all: &[Response], id: u32, end: End, dedup: bool) {
    let last = match end {
        End::First => all.iter().position(|f| f.opaque == id),
        End::Noop => all.iter().position(|f| f.opaque == id && f.opcode == opcode::NOOP),
    };
    assert_eq!(got.is_some(), last.is_some(), "the call ends at its first reply / its NOOP");
    let upto = last.map_or(all.len(), |l| l + 1);
    let mine = all[..upto].iter().filter(|f| f.opaque == id).count();
    assert_eq!(stale as usize, all.len() - mine, "stale frames counted");
    let Some(got) = got else { return };
    assert!(got.iter().all(|f| f.opaque == id), "kept a frame of another call");
    match end {
        End::First => assert_eq!(got.as_slice(), std::slice::from_ref(&all[upto - 1]), "the first frame is the reply"),
        End::Noop => {
            let mut want: Vec<&Response> = Vec::new();
            for f in all[..upto - 1].iter().filter(|f| f.opaque == id) {
                if !(dedup && want.contains(&f)) {
                    want.push(f);
                }
            }
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "a multi-get keeps the frames before its NOOP");
        }
    }
}
