//! One call, request to replies, for the UD and RC transports: each request
//! carries an id in the binary header's `opaque` field (the server echoes
//! it), and a reply with an id this call did not send (a late answer to an
//! earlier call) is discarded and counted as stale. The logic runs over a
//! [`Link`], which the verbs endpoints implement and the unit tests below
//! fake.
//!
//! Retries (UD): a request of plain reads (the get family and NOOP) is
//! resent under a fresh id, and the replies of each attempt are kept apart:
//! the answer is one attempt's replies, whole (a multi-get's hits from a
//! failed attempt used to stay in its result next to the retry's). A late
//! reply to an earlier attempt still answers the call: it is as good as
//! the retry's. Any other request is resent under the same id: the
//! server's reply cache answers a repeated id without running the write
//! again (and its frames, which may then come twice, are kept once).

use std::time::{Duration, Instant};

use super::wire::{self, opcode, Response};
use super::{End, TransportStats};
use crate::bail;
use crate::error::Result;
use crate::protocol::binary::header::HEADER_LEN;

/// Where one call's messages go and come from.
pub(super) trait Link {
    /// Send one message (a datagram, or an RC SEND).
    fn send(&mut self, msg: &[u8]) -> Result<()>;
    /// The next message that arrives before `deadline`, into `buf`; false
    /// when none did.
    fn recv(&mut self, buf: &mut Vec<u8>, deadline: Instant) -> Result<bool>;
}

/// Whether every request in `req` is a plain read, which the server runs
/// again when it comes again (so a retry may carry a new id).
pub(super) fn only_reads(req: &[u8]) -> bool {
    let mut pos = 0;
    while pos + HEADER_LEN <= req.len() {
        if !matches!(req[pos + 1], opcode::GET | opcode::GETQ | opcode::GETK | opcode::GETKQ | opcode::NOOP) {
            return false;
        }
        let body = u32::from_be_bytes([req[pos + 8], req[pos + 9], req[pos + 10], req[pos + 11]]) as usize;
        pos += HEADER_LEN + body;
    }
    true
}

/// The replies to one call, kept apart by the id of the attempt they answer.
/// Public (hidden) for the `client_reply` fuzz target only.
#[doc(hidden)]
pub struct Collector {
    end: End,
    /// (attempt id, its replies so far).
    attempts: Vec<(u32, Vec<Response>)>,
    /// Keep a frame that came before under the same id once (a resent
    /// write's reply may come twice: once late, once from the reply cache).
    dedup: bool,
    /// The attempt whose replies are complete: the answer.
    answer: Option<usize>,
}

impl Collector {
    pub fn new(end: End, dedup: bool) -> Collector {
        Collector { end, attempts: Vec::new(), dedup, answer: None }
    }

    pub fn attempt(&mut self, id: u32) {
        if !self.attempts.iter().any(|(i, _)| *i == id) {
            self.attempts.push((id, Vec::new()));
        }
    }

    pub fn done(&self) -> bool {
        self.answer.is_some()
    }

    /// Take the frames of one message that answer one of this call's attempts.
    pub fn take(&mut self, msg: &[u8], stats: &mut TransportStats) {
        let Ok(frames) = wire::parse_all(msg) else {
            stats.bad_replies += 1;
            return;
        };
        for f in frames {
            let Some(a) = self.attempts.iter().position(|(i, _)| *i == f.opaque).filter(|_| self.answer.is_none())
            else {
                stats.stale += 1;
                continue;
            };
            let got = &mut self.attempts[a].1;
            match self.end {
                End::First => {
                    got.push(f);
                    self.answer = Some(a);
                }
                End::Noop if f.opcode == opcode::NOOP => self.answer = Some(a),
                End::Noop if self.dedup && got.contains(&f) => {}
                End::Noop => got.push(f),
            }
        }
    }

    pub fn into_answer(self) -> Vec<Response> {
        let Some(a) = self.answer else { return Vec::new() };
        self.attempts.into_iter().nth(a).map(|(_, got)| got).unwrap_or_default()
    }
}

/// How a call is tried.
pub(super) struct Tries<'a> {
    /// Attempts in all (1: no resend, as over RC).
    pub attempts: u32,
    /// How long each attempt waits for its replies.
    pub timeout: Duration,
    /// Test hook ([`super::ClientOptions::expire_attempts`]): attempts left
    /// that give up at once, so their replies come late.
    pub expire: &'a mut u32,
    /// The last id used on this endpoint; ids only increase.
    pub id: &'a mut u32,
    /// For error messages: the server.
    pub peer: &'a str,
}

/// Send `req` over `link` and collect its replies up to `end`.
pub(super) fn call(
    link: &mut dyn Link,
    req: &mut [u8],
    end: End,
    tries: Tries<'_>,
    stats: &mut TransportStats,
) -> Result<Vec<Response>> {
    let fresh = only_reads(req);
    let mut buf = Vec::new();
    let mut c = Collector::new(end, !fresh);
    for attempt in 0..tries.attempts {
        if attempt == 0 || fresh {
            *tries.id = tries.id.wrapping_add(1);
            wire::set_opaque(req, *tries.id);
            c.attempt(*tries.id);
        }
        if attempt > 0 {
            stats.retries += 1;
        }
        link.send(req)?;
        // An expiring attempt (the test hook) takes nothing, not even a
        // reply already waiting: a deadline of now still polled once, and a
        // fast server's reply, in before the send's completion was seen,
        // made "gives up at once" a race the VM suite lost.
        let expiring = *tries.expire > 0;
        if expiring {
            *tries.expire -= 1;
        }
        let deadline = Instant::now() + tries.timeout;
        while !expiring && !c.done() && link.recv(&mut buf, deadline)? {
            c.take(&buf, stats);
        }
        if c.done() {
            return Ok(c.into_answer());
        }
    }
    stats.timeouts += 1;
    bail!("no reply from {} after {} attempts of {:?} each", tries.peer, tries.attempts, tries.timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::binary::header::write_response_header;
    use crate::protocol::binary::status;
    use std::collections::VecDeque;

    /// A fake server: answers each request message with `answer`, whose
    /// messages come after the given number of further sends (0: at once,
    /// 1: only once the next message was sent, i.e. late) or never (None).
    /// The fake server's answer to request message `n`: messages, each due
    /// after that many further sends (or lost).
    type Answer = Box<dyn FnMut(usize, &[u8]) -> Vec<(Option<usize>, Vec<u8>)>>;

    struct FakeLink {
        sent: Vec<Vec<u8>>,
        inbox: VecDeque<(usize, Vec<u8>)>,
        answer: Answer,
    }

    impl FakeLink {
        fn new(answer: impl FnMut(usize, &[u8]) -> Vec<(Option<usize>, Vec<u8>)> + 'static) -> FakeLink {
            FakeLink { sent: Vec::new(), inbox: VecDeque::new(), answer: Box::new(answer) }
        }
    }

    impl Link for FakeLink {
        fn send(&mut self, msg: &[u8]) -> Result<()> {
            let n = self.sent.len();
            self.sent.push(msg.to_vec());
            for (after, m) in (self.answer)(n, msg) {
                if let Some(a) = after {
                    self.inbox.push_back((n + a, m));
                }
            }
            Ok(())
        }
        fn recv(&mut self, buf: &mut Vec<u8>, _deadline: Instant) -> Result<bool> {
            // Time is simulated: what is due now arrives, the rest "later".
            let due = self.sent.len() - 1;
            match self.inbox.iter().position(|(at, _)| *at <= due) {
                Some(i) => {
                    *buf = self.inbox.remove(i).map(|x| x.1).unwrap_or_default();
                    Ok(true)
                }
                None => Ok(false),
            }
        }
    }

    fn opaque(req: &[u8]) -> u32 {
        u32::from_be_bytes([req[12], req[13], req[14], req[15]])
    }

    /// Each key of `req` (GET or GETKQ) and its opaque.
    fn keys(req: &[u8]) -> Vec<(u8, Vec<u8>, u32)> {
        let mut v = Vec::new();
        let mut pos = 0;
        while pos + HEADER_LEN <= req.len() {
            let kl = u16::from_be_bytes([req[pos + 2], req[pos + 3]]) as usize;
            let el = req[pos + 4] as usize;
            let body = u32::from_be_bytes([req[pos + 8], req[pos + 9], req[pos + 10], req[pos + 11]]) as usize;
            let k = req[pos + HEADER_LEN + el..pos + HEADER_LEN + el + kl].to_vec();
            v.push((req[pos + 1], k, opaque(&req[pos..])));
            pos += HEADER_LEN + body;
        }
        v
    }

    /// The reply to a get of `key`: its value is "value of KEY".
    fn hit(op: u8, key: &[u8], id: u32) -> Vec<u8> {
        let value = [b"value of ", key].concat();
        let k: &[u8] = if op == opcode::GET { &[] } else { key };
        let mut b = Vec::new();
        write_response_header(
            &mut b,
            op,
            status::SUCCESS,
            4,
            k.len() as u16,
            (4 + k.len() + value.len()) as u32,
            id,
            1,
        );
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(k);
        b.extend_from_slice(&value);
        b
    }

    fn noop(id: u32) -> Vec<u8> {
        let mut b = Vec::new();
        write_response_header(&mut b, opcode::NOOP, 0, 0, 0, 0, id, 0);
        b
    }

    fn get(key: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        wire::request(&mut r, opcode::GET, 0, &[], key, &[]);
        r
    }

    fn run(link: &mut FakeLink, req: &mut [u8], end: End, attempts: u32, id: &mut u32) -> Result<Vec<Response>> {
        let mut expire = 0;
        let tries = Tries { attempts, timeout: Duration::from_millis(1), expire: &mut expire, id, peer: "fake" };
        call(link, req, end, tries, &mut TransportStats::default())
    }

    /// The RC case: one attempt per call. The reply to the first call comes
    /// only after the second call was sent; the second call must get its
    /// own answer, not the first one's.
    #[test]
    fn a_late_reply_is_not_taken_for_the_next_calls_answer() {
        let mut link = FakeLink::new(|n, req| {
            let (op, k, id) = keys(req).remove(0);
            vec![(Some(if n == 0 { 1 } else { 0 }), hit(op, &k, id))]
        });
        let mut id = 0;
        assert!(run(&mut link, &mut get(b"a"), End::First, 1, &mut id).is_err(), "the first call times out");
        let r = run(&mut link, &mut get(b"b"), End::First, 1, &mut id).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].value, b"value of b", "the late reply to `get a` answered `get b`");
    }

    /// The test hook's expiring call gives up at once even when its reply is
    /// already there (a fast server), and that reply, taken by the next
    /// call's receive, is not that call's answer.
    #[test]
    fn an_expiring_call_takes_not_even_a_reply_already_waiting() {
        let mut link = FakeLink::new(|_, req| {
            let (op, k, id) = keys(req).remove(0);
            vec![(Some(0), hit(op, &k, id))]
        });
        let (mut id, mut expire) = (0, 1);
        let tries =
            Tries { attempts: 1, timeout: Duration::from_millis(50), expire: &mut expire, id: &mut id, peer: "fake" };
        let mut stats = TransportStats::default();
        assert!(call(&mut link, &mut get(b"a"), End::First, tries, &mut stats).is_err(), "the expiring call gave up");
        assert_eq!(expire, 0);
        let r = run(&mut link, &mut get(b"b"), End::First, 1, &mut id).unwrap();
        assert_eq!(r[0].value, b"value of b", "the waiting reply to `get a` answered `get b`");
    }

    /// The UD case: a multi-get whose first attempt lost the datagram with
    /// the NOOP. The retry's answer alone is the result: no hit twice.
    #[test]
    fn a_retried_multi_get_keeps_nothing_of_the_failed_attempt() {
        for late_hits in [false, true] {
            let mut link = FakeLink::new(move |n, req| {
                let ks = keys(req);
                let id = ks[0].2;
                let hits: Vec<u8> = ks
                    .iter()
                    .filter(|(op, ..)| *op == opcode::GETKQ)
                    .flat_map(|(op, k, id)| hit(*op, k, *id))
                    .collect();
                // Attempt 1: its hits arrive (at once or during the retry), its NOOP is lost.
                let first = n == 0;
                let hits_at = if first && late_hits { 1 } else { 0 };
                vec![(Some(hits_at), hits), (if first { None } else { Some(0) }, noop(id))]
            });
            let mut req = Vec::new();
            for k in [&b"x"[..], b"y"] {
                wire::request(&mut req, opcode::GETKQ, 0, &[], k, &[]);
            }
            wire::request(&mut req, opcode::NOOP, 0, &[], &[], &[]);
            let mut id = 0;
            let r = run(&mut link, &mut req, End::Noop, 3, &mut id).unwrap();
            let got: Vec<&[u8]> = r.iter().map(|x| x.key.as_slice()).collect();
            assert_eq!(got, vec![&b"x"[..], b"y"], "late hits: {late_hits}");
            assert_ne!(opaque(&link.sent[0]), opaque(&link.sent[1]), "a read is retried under a fresh id");
        }
    }

    /// A server slower than the attempt timeout: each attempt's reply comes
    /// during the next attempt. The first of them answers the call.
    #[test]
    fn a_late_reply_to_an_earlier_attempt_still_answers_the_call() {
        let mut link = FakeLink::new(|_, req| {
            let (op, k, id) = keys(req).remove(0);
            vec![(Some(1), hit(op, &k, id))]
        });
        let mut id = 0;
        let r = run(&mut link, &mut get(b"slow"), End::First, 3, &mut id).unwrap();
        assert_eq!(r[0].value, b"value of slow");
        assert_eq!(link.sent.len(), 2, "answered during the second attempt");
    }

    /// A quiet write batch resent under its id: frames of the late first
    /// reply and of the cached resend are kept once.
    #[test]
    fn a_resent_writes_reply_frames_are_kept_once() {
        let mut link = FakeLink::new(|n, req| {
            let id = opaque(req);
            let err = hit(opcode::SETQ, b"", id);
            // The first reply's error frame comes during the resend; its NOOP is lost.
            if n == 0 {
                vec![(Some(1), err), (None, noop(id))]
            } else {
                vec![(Some(0), [err, noop(id)].concat())]
            }
        });
        let mut req = Vec::new();
        wire::request(&mut req, opcode::SETQ, 0, &wire::store_extras(0, 0), b"k", b"v");
        wire::request(&mut req, opcode::NOOP, 0, &[], &[], &[]);
        let mut id = 0;
        let r = run(&mut link, &mut req, End::Noop, 3, &mut id).unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
    }

    #[test]
    fn a_retried_write_keeps_its_id_for_the_servers_reply_cache() {
        let mut link =
            FakeLink::new(|n, req| vec![(if n == 0 { None } else { Some(0) }, hit(opcode::SET, b"", opaque(req)))]);
        let mut req = Vec::new();
        wire::request(&mut req, opcode::SET, 0, &wire::store_extras(0, 0), b"k", b"v");
        let mut id = 41;
        run(&mut link, &mut req, End::First, 3, &mut id).unwrap();
        assert_eq!(link.sent.len(), 2);
        assert_eq!((opaque(&link.sent[0]), opaque(&link.sent[1])), (42, 42));
    }

    #[test]
    fn only_the_get_family_and_noop_are_plain_reads() {
        let mut r = Vec::new();
        wire::request(&mut r, opcode::GETKQ, 0, &[], b"a", &[]);
        wire::request(&mut r, opcode::NOOP, 0, &[], &[], &[]);
        assert!(only_reads(&r));
        wire::request(&mut r, opcode::SETQ, 0, &wire::store_extras(0, 0), b"a", b"1");
        assert!(!only_reads(&r));
        let mut g = Vec::new();
        wire::request(&mut g, opcode::GAT, 0, &0u32.to_be_bytes(), b"a", &[]);
        assert!(!only_reads(&g), "gat changes the expiry");
    }
}
