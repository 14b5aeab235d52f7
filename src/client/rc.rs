//! The RC transport for what does not fit a datagram: one Reliable
//! Connection to the server, opened on first use through the side channel
//! (`crate::server::ud` documents the handshake). The request goes as one RC
//! SEND, the reply comes back as one RC SEND into our receive buffer; RC is
//! reliable, so nothing is retried here (an error closes the connection and
//! the next call opens a new one).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::wire::{self, opcode, Response};
use super::{ClientOptions, End, Transport, TransportStats};
use crate::bail;
use crate::error::{Context as _, Error, Result};
use crate::rdma::connect::handshake_rc;
use crate::rdma::{Access, Buffer, CompletionQueue, MemoryRegion, QpCaps, RcOptions, RcQp, Wc};
use crate::server::ud::{CMD_RC, HELLO, VERSION};

/// Largest message capacity we accept from a server (it says what it wants).
const MAX_CAPACITY: usize = 256 << 20;

pub struct RcTransport {
    addr: String,
    /// Open for as long as the connection lives: closing it tells the server.
    _side: TcpStream,
    qp: RcQp,
    scq: CompletionQueue,
    rcq: CompletionQueue,
    send: MemoryRegion<Buffer>,
    recv: MemoryRegion<Buffer>,
    capacity: usize,
    timeout: Duration,
    spin: Duration,
    stats: TransportStats,
}

impl RcTransport {
    pub fn connect(addr: &str, opts: &ClientOptions) -> Result<RcTransport> {
        let (ctx, pd) = super::verbs()?;
        let mut s = TcpStream::connect(addr).with_context(|| format!("rdma side channel {addr}"))?;
        s.set_read_timeout(Some(opts.connect_timeout))?;
        s.set_write_timeout(Some(opts.connect_timeout))?;
        let mut hello = HELLO.to_vec();
        hello.extend_from_slice(&[VERSION, CMD_RC]);
        s.write_all(&hello).context("asking for an RC connection")?;
        let mut cap = [0u8; 4];
        s.read_exact(&mut cap).context("reading the RC capacity")?;
        let capacity = u32::from_be_bytes(cap) as usize;
        if capacity == 0 || capacity > MAX_CAPACITY {
            bail!("{addr} offers an RC message capacity of {capacity} bytes");
        }
        let scq = ctx.create_cq(8, false)?;
        let rcq = ctx.create_cq(8, true)?;
        let caps = QpCaps { max_send_wr: 4, max_recv_wr: 4, ..QpCaps::default() };
        let prepared = pd.create_rc_qp(&scq, &rcq, &caps, &RcOptions::default())?;
        let send = pd.register_buffer(capacity, Access::LOCAL_WRITE)?;
        let recv = pd.register_buffer(capacity, Access::LOCAL_WRITE)?;
        prepared.post_recv(0, recv.slice(0, capacity)?)?;
        let qp = handshake_rc(&mut s, prepared, None, opts.connect_timeout).context("RC handshake")?;
        Ok(RcTransport {
            addr: addr.to_string(),
            _side: s,
            qp,
            scq,
            rcq,
            send,
            recv,
            capacity,
            timeout: opts.rc_timeout,
            spin: opts.spin,
            stats: TransportStats::default(),
        })
    }

    fn wait(&self, cq: &CompletionQueue, what: &str) -> Result<Wc> {
        let deadline = Instant::now() + self.timeout;
        let spin_until = Instant::now() + self.spin;
        let mut w = [Wc::default()];
        loop {
            if cq.poll(&mut w)? > 0 {
                break;
            }
            let now = Instant::now();
            if now >= spin_until {
                if cq.wait(&mut w, Some(deadline.saturating_duration_since(now)))? == 0 {
                    bail!("RC {what} with {} did not complete within {:?}", self.addr, self.timeout);
                }
                break;
            }
            std::hint::spin_loop();
        }
        let wc = w[0].clone();
        wc.ok().map_err(Error::from).with_context(|| format!("RC {what} with {}", self.addr))?;
        Ok(wc)
    }
}

impl Transport for RcTransport {
    fn call(&mut self, req: &mut Vec<u8>, end: End) -> Result<Vec<Response>> {
        self.stats.requests += 1;
        if req.len() > self.capacity {
            bail!("request of {} bytes exceeds the server's RC capacity of {}", req.len(), self.capacity);
        }
        self.send.write(0, req);
        self.qp.post_send(1, self.send.slice(0, req.len())?, true)?;
        self.wait(&self.scq, "send")?;
        let wc = self.wait(&self.rcq, "receive")?;
        let len = (wc.byte_len() as usize).min(self.capacity);
        let mut reply = vec![0u8; len];
        self.recv.read(0, &mut reply);
        self.qp.post_recv(0, self.recv.slice(0, self.capacity)?)?;
        let mut frames = wire::parse_all(&reply)?;
        if end == End::Noop {
            frames.retain(|f| f.opcode != opcode::NOOP);
        }
        Ok(frames)
    }

    fn max_request(&self) -> usize {
        self.capacity
    }

    fn stats(&self) -> TransportStats {
        self.stats
    }
}
