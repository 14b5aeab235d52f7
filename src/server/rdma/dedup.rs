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

use std::collections::VecDeque;

/// Writes remembered per client.
pub const PER_CLIENT: usize = 16;

/// The last few (request id, reply bytes) of one client.
#[derive(Debug, Default)]
pub struct Recent {
    ring: VecDeque<(u32, Vec<u8>)>,
}

impl Recent {
    /// The reply already sent for `id`, if it is one of the remembered ones.
    pub fn lookup(&self, id: u32) -> Option<&[u8]> {
        self.ring.iter().rev().find(|(i, _)| *i == id).map(|(_, r)| r.as_slice())
    }

    /// Remember `reply` as the answer to `id`, forgetting the oldest beyond
    /// [`PER_CLIENT`]. A repeated id replaces its old entry.
    pub fn remember(&mut self, id: u32, reply: &[u8]) {
        if let Some(pos) = self.ring.iter().position(|(i, _)| *i == id) {
            self.ring.remove(pos);
        }
        if self.ring.len() == PER_CLIENT {
            // Reuse the evicted buffer: no allocation per write in steady state.
            if let Some((_, mut buf)) = self.ring.pop_front() {
                buf.clear();
                buf.extend_from_slice(reply);
                self.ring.push_back((id, buf));
                return;
            }
        }
        self.ring.push_back((id, reply.to_vec()));
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
