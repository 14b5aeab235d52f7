//! A connection without a socket: a real in-memory store and runtime, input
//! arriving in pieces, `protocol::step` called the way `server::conn` calls
//! it, and every step checked as it happens.

use std::ops::Range;

use super::input::cut_plans;
use super::text::lossy;
use crate::memory::region::HugePages;
use crate::protocol::binary::header::{RequestHeader, HEADER_LEN};
use crate::protocol::binary::opcode;
use crate::protocol::text::{MAX_MULTIGET_LINE, NO_NEWLINE_LIMIT};
use crate::protocol::{self, Ctx, Kind, Protocol, Session, Step};
use crate::runtime::{Runtime, Settings};
use crate::store::{Store, StoreConfig};

/// The store's log: small, so that a fuzz input can fill it and make it evict.
pub const MEMORY: usize = 1 << 20;
/// `-I`: values past it are refused (and swallowed) unread.
pub const MAX_ITEM: usize = 16 << 10;
/// Room for the largest reply that does not grow with the request: `stats`.
const FIXED_REPLY: usize = 64 << 10;
/// Most a step may wait on before it must decide: a get line up to its bound,
/// or a storage line and its data block.
const NEED_MORE_BOUND: usize = MAX_MULTIGET_LINE + MAX_ITEM + 2;

/// One step that did something.
#[derive(Clone, Debug)]
pub struct Record {
    pub step: Step,
    /// Stream positions of the bytes it consumed (for `Close`: the bytes
    /// that were buffered when it closed).
    pub input: Range<usize>,
    /// Positions in `Conn::out` of what it wrote.
    pub out: Range<usize>,
}

pub struct Conn {
    pub store: Store,
    pub rt: Runtime,
    pub session: Session,
    /// Every byte received so far.
    pub stream: Vec<u8>,
    /// Start of the bytes not yet handled.
    pub pos: usize,
    /// Every byte replied.
    pub out: Vec<u8>,
    pub records: Vec<Record>,
    pub closed: bool,
    /// Reply bytes a step may write before a multi-get pauses
    /// (`Session::out_limit` as `server::conn` sets it from its budget).
    pub room: usize,
    /// Where the output of a request that paused began.
    paused_at: Option<usize>,
}

/// Most output one step may produce for `consumed` request bytes: each key of
/// a request (at least two bytes: the key and a space) can answer one value.
fn output_bound(consumed: usize) -> usize {
    (consumed / 2 + 1) * (MAX_ITEM + 512) + FIXED_REPLY
}

/// Stores here are small and short-lived: a transparent huge page per store
/// (the region asks for them) costs more, zeroed and compacted, than the
/// run itself. Off for this process, which only fuzzes or tests.
fn small_pages() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = nix::sys::prctl::set_thp_disable(true);
    });
}

impl Conn {
    pub fn new() -> Conn {
        let cfg = StoreConfig { memory_bytes: MEMORY, max_item_size: MAX_ITEM, hugepages: HugePages::Off };
        small_pages();
        let store = Store::new(&cfg).unwrap_or_else(|e| panic!("a {MEMORY}-byte store: {e}"));
        let settings = Settings { memory_bytes: MEMORY, max_item_size: MAX_ITEM, threads: 1, ..Settings::default() };
        Conn {
            store,
            rt: Runtime::new(settings, 0),
            session: Session::default(),
            stream: Vec::new(),
            pos: 0,
            out: Vec::new(),
            records: Vec::new(),
            closed: false,
            room: usize::MAX,
            paused_at: None,
        }
    }

    /// A fresh connection fed `data` in pieces cut at `cuts`.
    pub fn fed(data: &[u8], cuts: &[usize]) -> Conn {
        Conn::fed_with_room(data, cuts, usize::MAX)
    }

    /// As [`Conn::fed`], a multi-get pausing once it has written `room`
    /// bytes in a step (and resuming, as if the client had read them).
    pub fn fed_with_room(data: &[u8], cuts: &[usize], room: usize) -> Conn {
        let mut c = Conn::new();
        c.room = room;
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
            c.receive(&data[start..cut]);
            start = cut;
        }
        c.check_store();
        c
    }

    pub fn ctx(&self) -> Ctx<'_> {
        Ctx { store: &self.store, stats: &self.rt.workers[0], rt: &self.rt }
    }

    /// Bytes arrive: handle every complete request, as `server::conn` does.
    pub fn receive(&mut self, piece: &[u8]) {
        self.stream.extend_from_slice(piece);
        let mut pauses = 0;
        while !self.closed && self.pos < self.stream.len() {
            let avail = self.stream.len() - self.pos;
            let before = self.out.len();
            self.session.out_limit = before.saturating_add(self.room);
            let ctx = Ctx { store: &self.store, stats: &self.rt.workers[0], rt: &self.rt };
            let step = protocol::step(&mut self.session, &self.stream[self.pos..], &mut self.out, &ctx);
            let wrote = self.out.len() - before;
            let at = self.pos;
            let consumed = match step {
                Step::Consumed { len, .. } | Step::Discarded(len) => {
                    assert!(len > 0, "{step:?} at {at}: no progress");
                    assert!(len <= avail, "{step:?} at {at}: consumed more than the {avail} bytes given");
                    len
                }
                Step::NeedMore => {
                    assert!(avail <= NEED_MORE_BOUND, "waiting on {avail} buffered bytes at {at}");
                    0
                }
                Step::Close => 0,
                Step::Paused => {
                    assert!(wrote > 0, "paused at {at} without writing a hit");
                    assert!(self.room < usize::MAX, "paused at {at} with no output limit");
                    // Progress: every pause wrote a hit, each for a distinct key.
                    assert!(wrote <= output_bound(avail), "paused at {at} after {wrote} bytes");
                    pauses += 1;
                    assert!(pauses <= self.stream.len(), "paused {pauses} times at {at}: no end in sight");
                    self.paused_at.get_or_insert(before);
                    continue;
                }
            };
            if matches!(step, Step::NeedMore | Step::Discarded(_)) {
                assert_eq!(wrote, 0, "{step:?} at {at} wrote {:?}", lossy(&self.out[before..]));
            }
            assert!(
                wrote <= output_bound(consumed),
                "{step:?} at {at} wrote {wrote} bytes for {consumed} bytes of request {:?}",
                lossy(&self.stream[at..at + consumed])
            );
            if step == Step::NeedMore {
                break;
            }
            let input = if step == Step::Close { at..self.stream.len() } else { at..at + consumed };
            let start = self.paused_at.take().unwrap_or(before);
            if let Step::Consumed { .. } = step {
                // The request's whole reply, pauses included, is bounded.
                let all = self.out.len() - start;
                assert!(all <= output_bound(consumed), "{step:?} at {at} wrote {all} bytes in all");
            } else {
                assert_eq!(start, before, "a paused request ended in {step:?} at {at}");
            }
            self.records.push(Record { step, input, out: start..self.out.len() });
            self.pos += consumed;
            self.closed = step == Step::Close;
        }
    }

    /// The store's counters stay within its log.
    pub fn check_store(&self) {
        let s = self.store.snapshot();
        assert!(s.log_head >= s.log_tail && s.log_head - s.log_tail <= s.log_capacity, "{s:?}");
        assert!(s.bytes <= s.limit_maxbytes, "bytes beyond the limit (a counter wrapped?): {s:?}");
        let least = crate::log::record::HEADER_LEN as u64;
        assert!(s.curr_items <= s.log_capacity / least, "more items than the log can hold: {s:?}");
    }

    /// The requests and replies a peer would see: discards merged, `Close`
    /// last, each with its reply.
    fn exchanges(&self) -> Vec<Exchange> {
        let mut v: Vec<Exchange> = Vec::new();
        for r in &self.records {
            if let (Step::Discarded(_), Some(Exchange { what: What::Discard, input, .. })) = (r.step, v.last_mut()) {
                if input.end == r.input.start {
                    input.end = r.input.end;
                    continue;
                }
            }
            let what = match r.step {
                Step::Consumed { kind, .. } => What::Request(kind),
                Step::Discarded(_) => What::Discard,
                _ => What::Close,
            };
            v.push(Exchange { what, input: r.input.clone(), out: r.out.clone() });
        }
        v
    }

    /// Whether the request at `input` has a reply that differs run to run
    /// (process statistics: rusage, uptime).
    fn volatile(&self, input: &Range<usize>) -> bool {
        let req = &self.stream[input.clone()];
        match self.session.protocol {
            Some(Protocol::Binary) => RequestHeader::parse(req).is_some_and(|h| h.opcode == opcode::STAT),
            // The line as memcached reads it: up to its first NUL.
            _ => {
                let line = super::text::command_line(req);
                line.split(|&b| b == b' ' || b == b'\r').find(|t| !t.is_empty()) == Some(b"stats")
            }
        }
    }
}

impl Default for Conn {
    fn default() -> Self {
        Conn::new()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum What {
    Request(Kind),
    Discard,
    Close,
}

#[derive(Debug)]
struct Exchange {
    what: What,
    input: Range<usize>,
    out: Range<usize>,
}

/// Wall-clock seconds: the store's times (TTLs, ages) tick with them.
fn seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `piece` fed in pieces gives the same requests and replies as `whole`.
/// With `steady` (no clock tick during both runs), replies must match byte
/// for byte, except process statistics.
fn assert_same(whole: &Conn, piece: &Conn, cuts: &[usize], steady: bool) {
    let (a, b) = (whole.exchanges(), piece.exchanges());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if y.what == What::Close && x.what != What::Close && early_close_allowed(piece, y) {
            return; // the pieces met memcached's limit on a line without "\n"; the whole input did not
        }
        let req = lossy(&whole.stream[x.input.clone()]);
        // A close's input is what was buffered then: only where it closed counts.
        let same_input = x.input == y.input || (x.what == What::Close && x.input.start == y.input.start);
        assert!(
            x.what == y.what && same_input,
            "exchange {i} differs fed in pieces at {cuts:?}: whole {x:?}, in pieces {y:?} (request {req:?})"
        );
        if steady && !whole.volatile(&x.input) {
            let (ox, oy) = (&whole.out[x.out.clone()], &piece.out[y.out.clone()]);
            assert!(
                ox == oy,
                "reply {i} to {req:?} differs fed in pieces at {cuts:?}: {:?} vs {:?}",
                lossy(ox),
                lossy(oy)
            );
        }
    }
    assert_eq!(a.len(), b.len(), "fed in pieces at {cuts:?}: {} exchanges, whole {}", b.len(), a.len());
    assert_eq!((whole.pos, whole.closed), (piece.pos, piece.closed), "final state fed in pieces at {cuts:?}");
}

/// A text line with no "\n" yet, longer than memcached allows, closes the
/// connection: whether it does depends on how the bytes arrived.
fn early_close_allowed(c: &Conn, e: &Exchange) -> bool {
    let buffered = &c.stream[e.input.clone()];
    c.session.protocol == Some(Protocol::Text) && buffered.len() > NO_NEWLINE_LIMIT && !buffered.contains(&b'\n')
}

/// Run `data` as one connection's input, whole and in pieces, with the
/// checks of its protocol on every step; returns the whole run.
pub fn run(data: &[u8]) -> Conn {
    let t0 = seconds();
    let whole = Conn::fed(data, &[]);
    check_replies(&whole);
    for cuts in cut_plans(data) {
        // In pieces, a multi-get also pauses after every hit (as a server
        // whose client reads slowly): the same replies all the same.
        let piece = Conn::fed_with_room(data, &cuts, 1);
        let steady = seconds() == t0;
        assert_same(&whole, &piece, &cuts, steady);
    }
    whole
}

/// Each step's reply, checked against its request by protocol.
fn check_replies(c: &Conn) {
    for r in &c.records {
        let (req, out) = (&c.stream[r.input.clone()], &c.out[r.out.clone()]);
        match (c.session.protocol, r.step) {
            (_, Step::Discarded(_)) => {}
            (Some(Protocol::Binary), step) => super::binary::check_step(req, out, step),
            (_, Step::Close) => {
                super::text::units(out).unwrap_or_else(|e| panic!("closing reply {:?}: {e}", lossy(out)));
            }
            (_, _) => super::text::check_step(req, out),
        }
    }
    // The binary header's parse is the inverse of its encoding.
    if c.session.protocol == Some(Protocol::Binary) {
        for r in &c.records {
            if let Some(h) = c.stream.get(r.input.start..r.input.start + HEADER_LEN).and_then(RequestHeader::parse) {
                assert_eq!(&super::binary::encode_header(&h)[..], &c.stream[r.input.start..r.input.start + HEADER_LEN]);
            }
        }
    }
}
