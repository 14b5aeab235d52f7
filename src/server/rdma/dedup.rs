//! Per-client reply cache that keeps a retried write from applying twice.
//!
//! Over UD a datagram (request or reply) can be lost. The client retries by
//! sending the very same datagram again: same request id in the binary
//! header's `opaque` field. When the request was a write and the *reply* was
//! the one lost, executing the retry again would apply it twice (an `incr`
//! counts twice, an `add` answers NOT_STORED to its own first attempt, an
//! `append` doubles). So a worker remembers, per client endpoint (its GID and
//! QPN), the replies to that client's last few writes, keyed by request id,
//! and answers a repeated id from here without touching the store.
//!
//! Reads are not cached: re-executing a get is harmless and its reply may be
//! large. A client issues its ids in increasing order and keeps one request
//! outstanding per endpoint, so a small ring per client is enough.
//!
//! Bounded: at most [`PER_CLIENT`] replies and [`PER_CLIENT_BYTES`] per
//! client (a reply larger than that, only a datagram of get-and-touch
//! requests on large values, is not remembered: its retry runs again), and
//! the worker's whole table of clients has a byte budget of its own
//! (`super::peers`).

use std::collections::VecDeque;

/// Writes remembered per client.
pub const PER_CLIENT: usize = 16;
/// Reply bytes remembered per client (buffer capacity, as allocated).
pub const PER_CLIENT_BYTES: usize = 64 << 10;

/// The last few (request id, reply bytes) of one client.
#[derive(Debug, Default)]
pub struct Recent {
    ring: VecDeque<(u32, Vec<u8>)>,
    /// Sum of the ring's buffer capacities.
    bytes: usize,
}

impl Recent {
    /// The reply already sent for `id`, if it is one of the remembered ones.
    pub fn lookup(&self, id: u32) -> Option<&[u8]> {
        self.ring.iter().rev().find(|(i, _)| *i == id).map(|(_, r)| r.as_slice())
    }

    /// Remember `reply` as the answer to `id`, forgetting the oldest beyond
    /// [`PER_CLIENT`] replies or [`PER_CLIENT_BYTES`]. A repeated id replaces
    /// its old entry. A reply larger than [`PER_CLIENT_BYTES`] is not kept;
    /// returns whether this one was.
    pub fn remember(&mut self, id: u32, reply: &[u8]) -> bool {
        if let Some(pos) = self.ring.iter().position(|(i, _)| *i == id) {
            if let Some((_, b)) = self.ring.remove(pos) {
                self.bytes -= b.capacity();
            }
        }
        if reply.len() > PER_CLIENT_BYTES {
            return false;
        }
        // Reuse the evicted buffer: no allocation per write in steady state.
        let mut buf = Vec::new();
        while self.ring.len() >= PER_CLIENT || self.bytes + reply.len() > PER_CLIENT_BYTES {
            let Some((_, old)) = self.ring.pop_front() else { break };
            self.bytes -= old.capacity();
            buf = old;
        }
        buf.clear();
        if buf.capacity() > PER_CLIENT_BYTES / 4 && reply.len() < buf.capacity() / 4 {
            buf.shrink_to(reply.len()); // a big old reply does not pin its buffer
        }
        buf.extend_from_slice(reply);
        self.bytes += buf.capacity();
        if self.bytes > PER_CLIENT_BYTES {
            // Capacity rounding: make room once more.
            while self.bytes > PER_CLIENT_BYTES {
                let Some((_, old)) = self.ring.pop_front() else { break };
                self.bytes -= old.capacity();
            }
        }
        self.ring.push_back((id, buf));
        true
    }

    /// Bytes this client's remembered replies hold (buffer capacities).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

/// Whether a binary opcode changes the store (and so must not run twice).
/// Quiet variants included. GAT/GATK change the expiry; caching their reply
/// (which carries the value) is the price of exactly-once for them.
pub fn is_write(opcode: u8) -> bool {
    use crate::protocol::binary::opcode::*;
    let (op, _) = base(opcode);
    matches!(op, SET | ADD | REPLACE | APPEND | PREPEND | DELETE | INCREMENT | DECREMENT | TOUCH | GAT | GATK | FLUSH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::binary::opcode;

    #[test]
    fn remembers_the_last_writes_per_client() {
        let mut r = Recent::default();
        assert!(r.lookup(1).is_none());
        r.remember(1, b"one");
        r.remember(2, b"two");
        assert_eq!(r.lookup(1), Some(&b"one"[..]));
        assert_eq!(r.lookup(2), Some(&b"two"[..]));
        for i in 3..3 + PER_CLIENT as u32 {
            r.remember(i, &i.to_be_bytes());
        }
        assert_eq!(r.len(), PER_CLIENT);
        assert!(r.lookup(1).is_none() && r.lookup(2).is_none(), "oldest forgotten");
        let last = 2 + PER_CLIENT as u32;
        assert_eq!(r.lookup(last), Some(&last.to_be_bytes()[..]));
        r.remember(last, b"again");
        assert_eq!(r.lookup(last), Some(&b"again"[..]));
        assert_eq!(r.len(), PER_CLIENT);
    }

    #[test]
    fn a_clients_replies_stay_within_its_byte_budget() {
        let mut r = Recent::default();
        let big = vec![7u8; PER_CLIENT_BYTES / 3];
        for id in 0..10u32 {
            assert!(r.remember(id, &big));
            assert!(r.bytes() <= PER_CLIENT_BYTES, "{} bytes after {id}", r.bytes());
            assert_eq!(r.lookup(id), Some(&big[..]), "the newest is always kept");
        }
        assert!(r.len() <= 3);
        assert!(r.lookup(0).is_none(), "the oldest went to make room");
        // Too large to keep at all: not remembered, and nothing else lost for it.
        let before = r.len();
        assert!(!r.remember(99, &vec![0u8; PER_CLIENT_BYTES + 1]));
        assert!(r.lookup(99).is_none());
        assert_eq!(r.len(), before);
        // Small replies after big ones do not keep the big buffers pinned.
        for id in 100..100 + PER_CLIENT as u32 {
            r.remember(id, b"ok");
        }
        assert!(r.bytes() < 4 * 1024, "{} bytes for {} small replies", r.bytes(), r.len());
    }

    #[test]
    fn writes_and_reads() {
        for op in [
            opcode::SET,
            opcode::ADDQ,
            opcode::INCREMENT,
            opcode::DECREMENTQ,
            opcode::APPEND,
            opcode::DELETE,
            opcode::TOUCH,
        ] {
            assert!(is_write(op), "{op:#x}");
        }
        for op in [opcode::GET, opcode::GETKQ, opcode::NOOP, opcode::VERSION, opcode::STAT] {
            assert!(!is_write(op), "{op:#x}");
        }
    }
}
