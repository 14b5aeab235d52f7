//! The RC transport for what does not fit a datagram: one Reliable
//! Connection to the server, opened on first use through the side channel
//! ([`crate::rdma_wire`] documents the handshake). The request goes as one RC
//! SEND, the reply comes back as one RC SEND into our receive buffer; RC is
//! reliable, so nothing is retried here (an error closes the connection and
//! the next call opens a new one).

use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::wait::next_completions;
use super::wire::{self, opcode, Response};
use super::{ClientOptions, End, Transport, TransportStats};
use crate::bail;
use crate::error::{Context as _, Error, Result};
use crate::rdma::connect::handshake_rc;
use crate::rdma::{CompletionQueue, PreparedRcMessenger, RcMessenger, Wc};
use crate::rdma_wire::handshake::{dial, read_capacity, Command};

/// Largest message capacity we accept from a server (it says what it wants).
const MAX_CAPACITY: usize = 256 << 20;

pub struct RcTransport {
    addr: String,
    /// Open for as long as the connection lives: closing it tells the server.
    _side: TcpStream,
    qp: RcMessenger,
    scq: CompletionQueue,
    rcq: CompletionQueue,
    capacity: usize,
    timeout: Duration,
    spin: Duration,
    stats: TransportStats,
}

impl RcTransport {
    pub fn connect(addr: &str, opts: &ClientOptions) -> Result<RcTransport> {
        let (ctx, pd) = super::verbs()?;
        let mut s = dial(addr, Command::Rc, opts.auth_token.as_ref(), opts.connect_timeout)?;
        // 0 is the server's refusal.
        let capacity = read_capacity(&mut s)?;
        if capacity == 0 || capacity > MAX_CAPACITY {
            bail!("{addr} offers an RC message capacity of {capacity} bytes");
        }
        let scq = ctx.create_cq(8, false)?;
        let rcq = ctx.create_cq(8, true)?;
        let qp = PreparedRcMessenger::new(&pd, &scq, &rcq, capacity)?
            .connect_with(|qp| handshake_rc(&mut s, qp, None, opts.connect_timeout).context("RC handshake"))?;
        Ok(RcTransport {
            addr: addr.to_string(),
            _side: s,
            qp,
            scq,
            rcq,
            capacity,
            timeout: opts.rc_timeout,
            spin: opts.spin,
            stats: TransportStats::default(),
        })
    }

    fn wait(&self, cq: &CompletionQueue, what: &str) -> Result<Wc> {
        let now = Instant::now();
        let mut w = [Wc::default()];
        if next_completions(cq, &mut w, now + self.spin, now + self.timeout)? == 0 {
            bail!("RC {what} with {} did not complete within {:?}", self.addr, self.timeout);
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
        self.qp.send(1, req)?;
        self.wait(&self.scq, "send")?;
        let wc = self.wait(&self.rcq, "receive")?;
        let mut reply = Vec::new();
        self.qp.receive(&wc, &mut reply)?;
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
