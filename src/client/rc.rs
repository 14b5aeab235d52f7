//! The RC transport for what does not fit a datagram: one Reliable
//! Connection to the server, opened on first use through the side channel
//! ([`crate::rdma_wire`] documents the handshake). The request goes as one RC
//! SEND, the reply comes back as one RC SEND into our receive buffer, matched
//! to its request by id ([`super::exchange`]). RC is reliable, so nothing is
//! retried here; an error (a timeout above all: the late reply may still
//! come) closes the connection and the next call opens a new one.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::exchange::{self, Link, Tries};
use super::wait::next_completions;
use super::wire::Response;
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
    /// The last request id (each call stamps the next).
    id: u32,
    /// Test hook: calls left whose reply wait gives up at once.
    expire: u32,
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
            id: crate::log::random_u64() as u32,
            expire: opts.expire_rc_calls,
            stats: TransportStats::default(),
        })
    }
}

/// The connection as a [`Link`]: one SEND (waited for: its buffer is
/// reused), one receive at a time.
struct RcLink<'a> {
    qp: &'a RcMessenger,
    scq: &'a CompletionQueue,
    rcq: &'a CompletionQueue,
    addr: &'a str,
    spin: Duration,
    timeout: Duration,
}

impl RcLink<'_> {
    fn next(&self, cq: &CompletionQueue, deadline: Instant, what: &str) -> Result<Option<Wc>> {
        let mut w = [Wc::default()];
        if next_completions(cq, &mut w, Instant::now() + self.spin, deadline)? == 0 {
            return Ok(None);
        }
        let wc = w[0].clone();
        wc.ok().map_err(Error::from).with_context(|| format!("RC {what} with {}", self.addr))?;
        Ok(Some(wc))
    }
}

impl Link for RcLink<'_> {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.qp.send(1, msg)?;
        if self.next(self.scq, Instant::now() + self.timeout, "send")?.is_none() {
            bail!("RC send to {} did not complete within {:?}", self.addr, self.timeout);
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>, deadline: Instant) -> Result<bool> {
        match self.next(self.rcq, deadline, "receive")? {
            Some(wc) => {
                self.qp.receive(&wc, buf)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl Transport for RcTransport {
    /// One request message, one reply message, matched by id. An error
    /// (a timeout above all) leaves the connection unusable: its late reply
    /// could still arrive, so the owner drops it ([`super::ud`] does).
    fn call(&mut self, req: &mut Vec<u8>, end: End) -> Result<Vec<Response>> {
        self.stats.requests += 1;
        if req.len() > self.capacity {
            bail!("request of {} bytes exceeds the server's RC capacity of {}", req.len(), self.capacity);
        }
        let mut link = RcLink {
            qp: &self.qp,
            scq: &self.scq,
            rcq: &self.rcq,
            addr: &self.addr,
            spin: self.spin,
            timeout: self.timeout,
        };
        // RC is reliable: one attempt; a reply that does not come in time is lost to this call.
        let tries =
            Tries { attempts: 1, timeout: self.timeout, expire: &mut self.expire, id: &mut self.id, peer: &self.addr };
        exchange::call(&mut link, req, end, tries, &mut self.stats)
    }

    fn max_request(&self) -> usize {
        self.capacity
    }

    fn stats(&self) -> TransportStats {
        self.stats
    }
}
