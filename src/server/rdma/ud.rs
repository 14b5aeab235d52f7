//! The datagram path of a worker: take a request datagram from its receive
//! slot, answer a retried write from the client's reply cache or run it, and
//! send the replies back in as many datagrams as they need.

use std::collections::HashMap;

use super::dedup::Recent;
use super::rc::MAX_RC_PER_WORKER;
use crate::error::Result;
use crate::protocol::Ctx;
use crate::rdma::{Context, ProtectionDomain, UdDest, UdEndpoint, Wc, GRH_SIZE};
use crate::rdma_wire::frames::reply_chunks;
use crate::rdma_wire::peer::{peer_key, PeerKey};

/// Receive buffers posted per worker QP (bounds how many datagrams can wait).
const RECV_SLOTS: usize = 512;
/// Send buffers per worker QP (replies in flight).
const SEND_SLOTS: usize = 128;
/// Clients a worker keeps address handles and reply caches for; beyond it the
/// table starts over (a client then only pays one address-handle creation).
const MAX_PEERS: usize = 4096;
/// Polls waiting for a free send slot before the reply is dropped (the client
/// retries); the send queue drains in microseconds unless the device is stuck.
/// The only wait on this path: see [`UdPath::send_slot`].
const SEND_SLOT_SPINS: u32 = 1_000_000;

/// What one client looks like to a worker.
struct Peer {
    dest: UdDest,
    recent: Recent,
}

/// A worker's UD endpoint and what it knows of its clients.
pub(super) struct UdPath {
    ep: UdEndpoint,
    free_send: Vec<usize>,
    peers: HashMap<PeerKey, Peer>,
}

impl UdPath {
    pub(super) fn new(ctx: &Context, pd: &ProtectionDomain) -> Result<UdPath> {
        // The CQs also take one completion per RC connection (they share them).
        let ep = UdEndpoint::builder(ctx, pd)
            .recv_slots(RECV_SLOTS)
            .send_slots(SEND_SLOTS)
            .cq_headroom(MAX_RC_PER_WORKER + 16)
            .build()?;
        Ok(UdPath { ep, free_send: (0..SEND_SLOTS).collect(), peers: HashMap::new() })
    }

    pub(super) fn endpoint(&self) -> &UdEndpoint {
        &self.ep
    }

    pub(super) fn max_payload(&self) -> usize {
        self.ep.max_payload()
    }

    /// Take send completions: UD sends give their slot back; RC sends (other
    /// QPNs on the same CQ) free nothing.
    pub(super) fn reap_sends(&mut self) {
        let mut wcs: [Wc; 8] = Default::default();
        loop {
            let n = self.ep.send_cq().poll(&mut wcs).unwrap_or(0);
            for wc in &wcs[..n] {
                if wc.qp_num() == self.ep.qpn() {
                    self.free_send.push(wc.wr_id() as usize);
                }
            }
            if n < wcs.len() {
                return;
            }
        }
    }

    fn repost(&self, slot: usize) {
        let _ = self.ep.repost(slot);
    }

    /// One receive completion of the UD QP. `input` and `out` are the
    /// worker's scratch buffers.
    pub(super) fn on_datagram(&mut self, wc: &Wc, ctx: &Ctx, input: &mut Vec<u8>, out: &mut Vec<u8>) {
        let slot = wc.wr_id() as usize;
        ctx.stats.rdma_requests.incr();
        if slot >= self.ep.recv_slots() {
            ctx.stats.rdma_drops.incr();
            return;
        }
        let mtu = self.ep.max_payload();
        let len = (wc.byte_len() as usize).saturating_sub(GRH_SIZE);
        if !wc.is_ok() || (wc.byte_len() as usize) < GRH_SIZE || len > mtu {
            ctx.stats.rdma_drops.incr();
            if wc.is_ok() {
                self.repost(slot);
            }
            return;
        }
        let (Ok(grh), Ok(())) = (self.ep.grh(slot), self.ep.read_payload(slot, len, input)) else {
            ctx.stats.rdma_drops.incr();
            self.repost(slot);
            return;
        };
        let key = peer_key(&grh, wc.src_qp());
        // The reply address must be taken from the GRH before the buffer is reused.
        if !self.peers.contains_key(&key) {
            let dest = match self.ep.reply_dest(wc, slot) {
                Ok(d) => d,
                Err(_) => {
                    ctx.stats.rdma_drops.incr();
                    self.repost(slot);
                    return;
                }
            };
            if self.peers.len() >= MAX_PEERS {
                self.peers.clear();
            }
            self.peers.insert(key, Peer { dest, recent: Recent::default() });
        }
        self.repost(slot);
        let Some(peer) = self.peers.get_mut(&key) else { return };
        if !super::answer_datagram(input, &mut peer.recent, out, ctx, mtu) {
            ctx.stats.rdma_drops.incr();
            return;
        }
        if out.is_empty() {
            return; // quiet requests that succeeded: nothing to say
        }
        let Some(dest) = self.peers.get(&key).map(|p| p.dest.clone()) else { return };
        for chunk in reply_chunks(out, mtu) {
            let Some(s) = self.send_slot() else {
                ctx.stats.rdma_drops.incr();
                return;
            };
            match self.ep.post_send(s, &out[chunk], &dest) {
                Ok(()) => ctx.stats.rdma_replies.incr(),
                Err(_) => {
                    self.free_send.push(s);
                    ctx.stats.rdma_drops.incr();
                }
            }
        }
    }

    /// A free send slot, reaping send completions until one is; `None` after
    /// [`SEND_SLOT_SPINS`] polls (the reply is dropped and the client retries).
    fn send_slot(&mut self) -> Option<usize> {
        let mut spins = 0;
        loop {
            if let Some(s) = self.free_send.pop() {
                return Some(s);
            }
            if spins >= SEND_SLOT_SPINS {
                return None;
            }
            spins += 1;
            self.reap_sends();
        }
    }
}
