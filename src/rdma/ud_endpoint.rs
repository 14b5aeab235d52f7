//! A UD endpoint: one UD QP with its two CQs and registered slots of receive
//! and send buffers, every receive posted. The server's workers and the
//! client's UD transport are both built on it.
//!
//! Receive slot `i` is `GRH_SIZE + max_payload` bytes at `i * recv_slot_len`
//! and is posted with wr_id `i`; send slot `i` is `max_payload` bytes and
//! [`UdEndpoint::post_send`] posts it with wr_id `i`, so a completion names
//! its slot. Slot indices are checked: a wr_id that is not ours is an error,
//! never an out-of-bounds copy.

use crate::bail;
use crate::error::Result;

use super::connect::UdEndpointInfo;
use super::cq::{CompletionQueue, Wc};
use super::device::Context;
use super::mr::{Access, Buffer, MemoryRegion, ProtectionDomain};
use super::qp::{QpCaps, ReplyRoute, UdDest, UdOptions, UdQp, GRH_SIZE};

/// How a [`UdEndpoint`] is sized; from [`UdEndpoint::builder`].
#[must_use]
pub struct UdEndpointBuilder<'a> {
    ctx: &'a Context,
    pd: &'a ProtectionDomain,
    recv_slots: usize,
    send_slots: usize,
    cq_headroom: usize,
    recv_channel: bool,
    options: UdOptions,
}

impl UdEndpointBuilder<'_> {
    /// Receive buffers posted (bounds how many datagrams can wait). Default 64.
    pub fn recv_slots(mut self, n: usize) -> Self {
        self.recv_slots = n;
        self
    }

    /// Send buffers, and so sends in flight. Default 1.
    pub fn send_slots(mut self, n: usize) -> Self {
        self.send_slots = n;
        self
    }

    /// CQ entries beyond the slots, for other QPs that share these CQs (the
    /// server's RC connections). Default 8.
    pub fn cq_headroom(mut self, n: usize) -> Self {
        self.cq_headroom = n;
        self
    }

    /// Give the receive CQ a completion channel (to block on, or to put in an
    /// epoll set). Default on. The send CQ has none: it is only polled.
    pub fn recv_channel(mut self, on: bool) -> Self {
        self.recv_channel = on;
        self
    }

    /// Port, GID index and qkey of the QP. Default [`UdOptions::default`].
    pub fn options(mut self, options: UdOptions) -> Self {
        self.options = options;
        self
    }

    /// Create the CQs and the QP, register the buffers, post every receive.
    pub fn build(self) -> Result<UdEndpoint> {
        if self.recv_slots == 0 || self.send_slots == 0 {
            bail!("a UD endpoint needs receive and send slots ({} and {})", self.recv_slots, self.send_slots);
        }
        let entries = |slots: usize| -> Result<u32> {
            match slots.checked_add(self.cq_headroom).map(u32::try_from) {
                Some(Ok(n)) => Ok(n),
                _ => bail!("UD endpoint CQ of {slots} + {} entries is too large", self.cq_headroom),
            }
        };
        let wrs = |slots: usize| -> Result<u32> {
            u32::try_from(slots).map_err(|_| crate::error::Error::new(format!("{slots} UD slots is too many")))
        };
        let scq = self.ctx.create_cq(entries(self.send_slots)?, false)?;
        let rcq = self.ctx.create_cq(entries(self.recv_slots)?, self.recv_channel)?;
        let caps =
            QpCaps { max_send_wr: wrs(self.send_slots)?, max_recv_wr: wrs(self.recv_slots)?, ..QpCaps::default() };
        let qp = self.pd.create_ud_qp(&scq, &rcq, &caps, &self.options)?;
        let payload = qp.max_payload();
        let recv_slot = GRH_SIZE + payload;
        let (Some(recv_len), Some(send_len)) =
            (recv_slot.checked_mul(self.recv_slots), payload.checked_mul(self.send_slots))
        else {
            bail!("UD endpoint buffers of {} and {} slots overflow", self.recv_slots, self.send_slots);
        };
        let recv = self.pd.register_buffer(recv_len, Access::LOCAL_WRITE)?;
        let send = self.pd.register_buffer(send_len, Access::LOCAL_WRITE)?;
        let ep = UdEndpoint { qp, scq, rcq, recv, send, recv_slots: self.recv_slots, send_slots: self.send_slots };
        for i in 0..ep.recv_slots {
            ep.repost(i)?;
        }
        Ok(ep)
    }
}

/// A UD QP in RTS with its CQs and buffers (see the module doc for slots).
pub struct UdEndpoint {
    qp: UdQp,
    scq: CompletionQueue,
    rcq: CompletionQueue,
    recv: MemoryRegion<Buffer>,
    send: MemoryRegion<Buffer>,
    recv_slots: usize,
    send_slots: usize,
}

impl UdEndpoint {
    pub fn builder<'a>(ctx: &'a Context, pd: &'a ProtectionDomain) -> UdEndpointBuilder<'a> {
        UdEndpointBuilder {
            ctx,
            pd,
            recv_slots: 64,
            send_slots: 1,
            cq_headroom: 8,
            recv_channel: true,
            options: UdOptions::default(),
        }
    }

    pub fn qp(&self) -> &UdQp {
        &self.qp
    }

    pub fn qpn(&self) -> u32 {
        self.qp.qpn()
    }

    /// The record peers need to send to this endpoint.
    pub fn info(&self) -> UdEndpointInfo {
        self.qp.endpoint()
    }

    /// Largest datagram payload (the port's active MTU); the size of a send slot.
    pub fn max_payload(&self) -> usize {
        self.qp.max_payload()
    }

    pub fn send_cq(&self) -> &CompletionQueue {
        &self.scq
    }

    pub fn recv_cq(&self) -> &CompletionQueue {
        &self.rcq
    }

    pub fn recv_slots(&self) -> usize {
        self.recv_slots
    }

    pub fn send_slots(&self) -> usize {
        self.send_slots
    }

    fn recv_slot_len(&self) -> usize {
        GRH_SIZE + self.max_payload()
    }

    fn recv_offset(&self, slot: usize) -> Result<usize> {
        if slot >= self.recv_slots {
            bail!("UD receive slot {slot} of {}", self.recv_slots);
        }
        Ok(slot * self.recv_slot_len())
    }

    /// Post receive slot `slot` again (after its datagram was copied out).
    pub fn repost(&self, slot: usize) -> Result<()> {
        let off = self.recv_offset(slot)?;
        self.qp.post_recv(slot as u64, self.recv.slice(off, self.recv_slot_len())?)
    }

    /// The GRH area of receive slot `slot`.
    pub fn grh(&self, slot: usize) -> Result<[u8; GRH_SIZE]> {
        let mut grh = [0u8; GRH_SIZE];
        self.recv.read(self.recv_offset(slot)?, &mut grh);
        Ok(grh)
    }

    /// Copy `len` payload bytes of receive slot `slot` into `out` (resized
    /// to `len`); `len` beyond [`UdEndpoint::max_payload`] is an error.
    pub fn read_payload(&self, slot: usize, len: usize, out: &mut Vec<u8>) -> Result<()> {
        let off = self.recv_offset(slot)?;
        if len > self.max_payload() {
            bail!("UD payload of {len} bytes exceeds the {}-byte slot", self.max_payload());
        }
        out.resize(len, 0);
        self.recv.read(off + GRH_SIZE, out);
        Ok(())
    }

    /// The return address of the datagram in receive slot `slot` (`wc` is its
    /// completion), and where it sends to (see [`UdQp::reply_dest_route`]).
    /// Take it before the slot is reposted.
    pub fn reply_dest(&self, wc: &Wc, slot: usize) -> Result<(UdDest, ReplyRoute)> {
        self.qp.reply_dest_route(wc, &self.recv, self.recv_offset(slot)?)
    }

    /// An address handle + QPN for sending to `peer`.
    pub fn dest(&self, peer: &UdEndpointInfo) -> Result<UdDest> {
        self.qp.dest(peer)
    }

    /// Copy `payload` into send slot `slot` and send it to `dest`, signaled
    /// with wr_id `slot`; the slot is the caller's again once that completes.
    pub fn post_send(&self, slot: usize, payload: &[u8], dest: &UdDest) -> Result<()> {
        let max = self.max_payload();
        if slot >= self.send_slots {
            bail!("UD send slot {slot} of {}", self.send_slots);
        }
        if payload.len() > max {
            bail!("UD datagram of {} bytes exceeds the {max}-byte path MTU", payload.len());
        }
        self.send.write(slot * max, payload);
        self.qp.post_send(slot as u64, self.send.slice(slot * max, payload.len())?, dest, true)
    }
}
