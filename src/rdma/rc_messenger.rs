//! An RC QP for request/reply messages: one send and one receive buffer of
//! `capacity` bytes each, the receive posted before the QP connects. The
//! server's RC connections for large values and the client's RC transport
//! are both built on it. One message at a time each way: the receive is
//! posted again as soon as its message is copied out.

use crate::bail;
use crate::error::Result;

use super::connect::RcEndpointInfo;
use super::cq::{CompletionQueue, Wc};
use super::mr::{Access, Buffer, MemoryRegion, ProtectionDomain};
use super::qp::{PreparedRcQp, QpCaps, RcOptions, RcQp};

/// Work requests per queue: one message in flight each way, with room to spare.
const QUEUE_DEPTH: u32 = 4;

/// Buffers registered and the receive posted; not connected yet.
pub struct PreparedRcMessenger {
    qp: PreparedRcQp,
    send: MemoryRegion<Buffer>,
    recv: MemoryRegion<Buffer>,
}

impl PreparedRcMessenger {
    /// An RC QP on `scq`/`rcq` (which may be shared with other QPs) with
    /// `capacity`-byte buffers.
    pub fn new(
        pd: &ProtectionDomain,
        scq: &CompletionQueue,
        rcq: &CompletionQueue,
        capacity: usize,
    ) -> Result<PreparedRcMessenger> {
        let caps = QpCaps { max_send_wr: QUEUE_DEPTH, max_recv_wr: QUEUE_DEPTH, ..QpCaps::default() };
        let qp = pd.create_rc_qp(scq, rcq, &caps, &RcOptions::default())?;
        let recv = pd.register_buffer(capacity, Access::LOCAL_WRITE)?;
        let send = pd.register_buffer(capacity, Access::LOCAL_WRITE)?;
        qp.post_recv(0, recv.slice(0, capacity)?)?;
        Ok(PreparedRcMessenger { qp, send, recv })
    }

    /// Our record for the peer.
    pub fn endpoint(&self) -> RcEndpointInfo {
        self.qp.endpoint()
    }

    /// Connect with `handshake`, which takes the prepared QP through the side
    /// channel (e.g. [`super::connect::handshake_rc`], or an exchange and
    /// [`PreparedRcQp::connect`]) and returns it connected.
    pub fn connect_with(self, handshake: impl FnOnce(PreparedRcQp) -> Result<RcQp>) -> Result<RcMessenger> {
        let qp = handshake(self.qp)?;
        Ok(RcMessenger { qp, send: self.send, recv: self.recv })
    }
}

/// A connected RC QP with its message buffers.
pub struct RcMessenger {
    qp: RcQp,
    send: MemoryRegion<Buffer>,
    recv: MemoryRegion<Buffer>,
}

impl RcMessenger {
    pub fn qpn(&self) -> u32 {
        self.qp.qpn()
    }

    pub fn qp(&self) -> &RcQp {
        &self.qp
    }

    /// Largest message either way.
    pub fn capacity(&self) -> usize {
        self.recv.len().min(self.send.len())
    }

    /// Copy `msg` into the send buffer and SEND it, signaled with `wr_id`.
    /// The buffer is reused: the previous send must have completed.
    pub fn send(&self, wr_id: u64, msg: &[u8]) -> Result<()> {
        if msg.len() > self.send.len() {
            bail!("RC message of {} bytes exceeds the {}-byte buffer", msg.len(), self.send.len());
        }
        self.send.write(0, msg);
        self.qp.post_send(wr_id, self.send.slice(0, msg.len())?, true)
    }

    /// After a receive completion `wc`: copy its message (at most the
    /// buffer) into `out`, then post the receive again. `out` holds the
    /// message even when the repost fails (the error says so).
    pub fn receive(&self, wc: &Wc, out: &mut Vec<u8>) -> Result<()> {
        let len = (wc.byte_len() as usize).min(self.recv.len());
        out.resize(len, 0);
        self.recv.read(0, out);
        self.qp.post_recv(0, self.recv.slice(0, self.recv.len())?)
    }
}
