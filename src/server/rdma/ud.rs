//! The datagram path of a worker: take a request datagram from its receive
//! slot, answer a retried write from the client's reply cache or run it, and
//! send the replies back in as many datagrams as they need.
//!
//! Replies go to the datagram's source as the NIC delivered it: the work
//! completion's source QPN and the GRH area's source address
//! ([`crate::rdma_wire::peer`]); nothing in the request names it. The
//! address handle made for a client is filed under that same source, and
//! only after checking that the handle sends exactly there.
//!
//! The worker never waits for a send slot: a reply datagram that finds none
//! free joins a bounded queue, sent from the poll loop as send completions
//! free slots, in order (a client reads one reply's datagrams in the order
//! they come). A reply that would overflow the queue is dropped whole and
//! counted (`rdma_drops`); the client's retry covers it, and a retried write
//! is answered from the reply cache, so it still applies once.

use std::collections::VecDeque;

use super::dedup::Recent;
use super::peers::{PeerTable, Weigh};
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
/// Reply datagrams that may wait for a send slot, per worker (at most this
/// many path-MTU buffers: 1 MiB at a 4 KiB MTU).
pub(super) const PENDING_SENDS: usize = 2 * SEND_SLOTS;
/// Clients a worker keeps address handles and reply caches for.
pub(super) const MAX_PEERS: usize = 4096;
/// Bytes of client state per worker: [`PEER_OVERHEAD`] per client plus its
/// remembered replies (at most [`super::dedup::PER_CLIENT_BYTES`] each).
pub(super) const PEER_BYTES: usize = 8 << 20;
/// What a client's entry costs beyond its replies (key, handle, ring).
const PEER_OVERHEAD: usize = 256;

/// What one client looks like to a worker.
struct Peer {
    dest: UdDest,
    recent: Recent,
}

impl Weigh for Peer {
    fn weight(&self) -> usize {
        PEER_OVERHEAD + self.recent.bytes()
    }
}

/// A reply datagram waiting for a send slot.
struct Pending {
    dest: UdDest,
    bytes: Vec<u8>,
}

/// A worker's UD endpoint and what it knows of its clients.
pub(super) struct UdPath {
    ep: UdEndpoint,
    free_send: Vec<usize>,
    peers: PeerTable<PeerKey, Peer>,
    /// Oldest first.
    pending: VecDeque<Pending>,
    /// Buffers of sent pending datagrams, for the next ones.
    spare: Vec<Vec<u8>>,
}

impl UdPath {
    /// `qkey`: the server's secret Q_Key (see `super::start`).
    pub(super) fn new(ctx: &Context, pd: &ProtectionDomain, qkey: u32) -> Result<UdPath> {
        // The CQs also take one completion per RC connection (they share them).
        let ep = UdEndpoint::builder(ctx, pd)
            .options(crate::rdma::UdOptions { qkey, ..Default::default() })
            .recv_slots(RECV_SLOTS)
            .send_slots(SEND_SLOTS)
            .cq_headroom(MAX_RC_PER_WORKER + 16)
            .build()?;
        Ok(UdPath {
            ep,
            free_send: (0..SEND_SLOTS).collect(),
            peers: PeerTable::new(MAX_PEERS, PEER_BYTES),
            pending: VecDeque::new(),
            spare: Vec::new(),
        })
    }

    pub(super) fn endpoint(&self) -> &UdEndpoint {
        &self.ep
    }

    pub(super) fn max_payload(&self) -> usize {
        self.ep.max_payload()
    }

    /// Take send completions: UD sends give their slot back (a failed one
    /// is a reply lost: counted as a drop); RC sends (other QPNs on the same
    /// CQ) free nothing.
    pub(super) fn reap_sends(&mut self, ctx: &Ctx) {
        let mut wcs: [Wc; 8] = Default::default();
        loop {
            let n = self.ep.send_cq().poll(&mut wcs).unwrap_or(0);
            for wc in &wcs[..n] {
                if wc.qp_num() == self.ep.qpn() {
                    if !wc.is_ok() {
                        ctx.stats.rdma_drops.incr();
                    }
                    self.free_send.push(wc.wr_id() as usize);
                }
            }
            if n < wcs.len() {
                return;
            }
        }
    }

    /// Send what waits for a slot, in order, as far as free slots go.
    /// Returns whether some still waits (the worker must not block then:
    /// send completions raise no event it could wait for).
    pub(super) fn flush_pending(&mut self, ctx: &Ctx) -> bool {
        while !self.pending.is_empty() {
            let Some(s) = self.free_send.pop() else { break };
            let Some(p) = self.pending.pop_front() else { break };
            self.post(s, &p.bytes, &p.dest, ctx);
            let mut b = p.bytes;
            b.clear();
            self.spare.push(b);
        }
        !self.pending.is_empty()
    }

    fn post(&mut self, slot: usize, bytes: &[u8], dest: &UdDest, ctx: &Ctx) {
        match self.ep.post_send(slot, bytes, dest) {
            Ok(()) => ctx.stats.rdma_replies.incr(),
            Err(_) => {
                self.free_send.push(slot);
                ctx.stats.rdma_drops.incr();
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
        // The sender as the NIC delivered it; the GRH area holds no GRH
        // (only stale bytes) unless the completion says so.
        let Some(key) = peer_key(wc.has_grh().then_some(&grh), wc.slid(), wc.src_qp()) else {
            ctx.stats.rdma_drops.incr();
            self.repost(slot);
            return;
        };
        // The reply address must be taken from the GRH before the buffer is reused.
        if self.peers.get_mut(&key).is_none() && !self.add_peer(wc, slot, key, ctx) {
            ctx.stats.rdma_drops.incr();
            self.repost(slot);
            return;
        }
        self.repost(slot);
        let Some(peer) = self.peers.get_mut(&key) else { return };
        let Some(remembered) = super::answer_datagram(input, &mut peer.recent, out, ctx, mtu) else {
            ctx.stats.rdma_drops.incr();
            return;
        };
        if remembered {
            // The reply cache grew: the peer table may have to give way.
            let gone = self.peers.settle(&key);
            ctx.stats.rdma_peer_evictions.add(gone as u64);
        }
        if out.is_empty() {
            return; // quiet requests that succeeded: nothing to say
        }
        let Some(dest) = self.peers.get_mut(&key).map(|p| p.dest.clone()) else { return };
        self.send_reply(out, mtu, &dest, ctx);
    }

    /// A new client: make its reply handle and file it under `key`, if the
    /// handle sends where the key says (libibverbs and [`peer_key`] read the
    /// same GRH area; should they ever disagree, the datagram is dropped
    /// rather than answered through a handle filed for someone else).
    fn add_peer(&mut self, wc: &Wc, slot: usize, key: PeerKey, ctx: &Ctx) -> bool {
        let Ok((dest, route)) = self.ep.reply_dest(wc, slot) else { return false };
        if route != key.route || dest.qpn != key.qpn {
            return false;
        }
        let gone = self.peers.insert(key, Peer { dest, recent: Recent::default() });
        ctx.stats.rdma_peer_evictions.add(gone as u64);
        true
    }

    /// Send `out` (whole reply frames) to `dest` in datagrams of at most
    /// `mtu`: each into a free send slot, else behind the ones already
    /// waiting; dropped whole (the client retries) when the queue has no
    /// room for all of it.
    fn send_reply(&mut self, out: &[u8], mtu: usize, dest: &UdDest, ctx: &Ctx) {
        let chunks = reply_chunks(out, mtu);
        if self.free_send.len() < chunks.len() {
            self.reap_sends(ctx);
        }
        let direct = if self.pending.is_empty() { self.free_send.len() } else { 0 };
        let room = direct + PENDING_SENDS.saturating_sub(self.pending.len());
        if chunks.len() > room {
            ctx.stats.rdma_drops.add(chunks.len() as u64);
            return;
        }
        for chunk in chunks {
            let bytes = &out[chunk];
            if self.pending.is_empty() {
                if let Some(s) = self.free_send.pop() {
                    self.post(s, bytes, dest, ctx);
                    continue;
                }
            }
            let mut b = self.spare.pop().unwrap_or_default();
            b.extend_from_slice(bytes);
            self.pending.push_back(Pending { dest: dest.clone(), bytes: b });
            ctx.stats.rdma_send_queued.incr();
        }
    }
}
