//! The UD transport: requests and replies as datagrams to the server's
//! per-worker UD QPs; the format both sides speak is [`crate::rdma_wire`].
//!
//! # Timeouts and retries
//!
//! One request is outstanding per endpoint. The client spins on its receive
//! CQ for [`ClientOptions::spin`], then blocks on the completion channel until
//! the attempt's deadline ([`ClientOptions::timeout`]); no sleeps. When the
//! deadline passes it sends the *same* datagram again (same request id in the
//! opaque field, same server QP), up to [`ClientOptions::retries`] times.
//!
//! Every operation is retried:
//! * reads (get, multi-get) are idempotent: the server simply runs them again;
//! * writes (set, add, replace, append, prepend, delete, incr, decr, touch)
//!   are answered from the server's per-client reply cache when the id was
//!   already executed (the reply was what got lost), so they apply once.
//!   See [retries](crate::rdma_wire#retries-apply-writes-once).
//!
//! Replies with another id (late answers to an earlier attempt or call) are
//! ignored and counted as stale.
//!
//! A multi-get is quiet GETKs plus a NOOP in one datagram; its reply may span
//! several datagrams and is complete when the NOOP's answer arrives. That
//! relies on datagrams from one server QP to ours arriving in order, which
//! holds on one path (RoCE v2: one UDP flow); a reordered reply would at worst
//! turn a hit into a miss, never return a wrong value (keys come back with
//! each hit).
//!
//! A request larger than a datagram, or a reply the server flags as
//! [`NEEDS_RC`], goes over an RC connection
//! opened on first use ([`super::rc`]).

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::rc::RcTransport;
use super::wait::next_completions;
use super::wire::{self, opcode, Replies, Response};
use super::{ClientOptions, End, Transport, TransportStats};
use crate::bail;
use crate::error::{Context as _, Error, Result};
use crate::rdma::connect::UdEndpointInfo;
use crate::rdma::{UdDest, UdEndpoint, Wc, GRH_SIZE};
use crate::rdma_wire::handshake::{greeting, read_ud_endpoints, Command};
use crate::rdma_wire::NEEDS_RC;

/// Receive buffers posted (a multi-get reply may span many datagrams).
const RECV_SLOTS: usize = 64;

pub struct UdTransport {
    addr: String,
    /// One send slot: one request is outstanding at a time.
    ep: UdEndpoint,
    /// Largest request datagram: the smaller MTU of ours and the server's.
    mtu: usize,
    servers: Vec<UdDest>,
    next_server: usize,
    id: u32,
    send_pending: bool,
    wcs: Vec<Wc>,
    payload: Vec<u8>,
    rc: Option<RcTransport>,
    opts: ClientOptions,
    drop_requests: u32,
    drop_replies: u32,
    stats: TransportStats,
}

/// Ask the side channel at `addr` for the server's UD endpoints.
pub fn fetch_endpoints(addr: &str, timeout: Duration) -> Result<Vec<UdEndpointInfo>> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("rdma side channel {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&greeting(Command::Ud)).context("asking for the UD endpoints")?;
    let v = read_ud_endpoints(&mut s)?;
    if v.is_empty() {
        bail!("{addr} offers no UD endpoints");
    }
    Ok(v)
}

impl UdTransport {
    pub fn connect(addr: &str, opts: &ClientOptions) -> Result<UdTransport> {
        let eps = fetch_endpoints(addr, opts.connect_timeout)?;
        let (ctx, pd) = super::verbs()?;
        let ep = UdEndpoint::builder(&ctx, &pd).recv_slots(RECV_SLOTS).send_slots(1).build()?;
        // Both sides must fit: the smaller MTU of ours and the server's.
        let server_mtu = eps.iter().filter_map(|e| e.mtu.bytes()).min().unwrap_or(256) as usize;
        let mtu = ep.max_payload().min(server_mtu);
        let servers = eps.iter().map(|e| ep.dest(e)).collect::<Result<Vec<_>>>()?;
        // Start at a different server QP per endpoint so endpoints spread out.
        let next_server = (ep.qpn() as usize) % servers.len();
        let payload = Vec::with_capacity(GRH_SIZE + ep.max_payload());
        Ok(UdTransport {
            addr: addr.to_string(),
            ep,
            mtu,
            servers,
            next_server,
            id: crate::log::random_u64() as u32,
            send_pending: false,
            wcs: Wc::batch(RECV_SLOTS),
            payload,
            rc: None,
            drop_requests: opts.drop_requests,
            drop_replies: opts.drop_replies,
            opts: opts.clone(),
            stats: TransportStats::default(),
        })
    }

    /// Largest datagram payload.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// How many server QPs (workers) this endpoint knows.
    pub fn server_qps(&self) -> usize {
        self.servers.len()
    }

    fn rc(&mut self) -> Result<&mut RcTransport> {
        if self.rc.is_none() {
            self.rc = Some(RcTransport::connect(&self.addr, &self.opts)?);
        }
        self.stats.rc_calls += 1;
        self.rc.as_mut().ok_or_else(|| Error::new("RC connection vanished"))
    }

    fn send_datagram(&mut self, req: &[u8], server: usize) -> Result<()> {
        if self.send_pending {
            // The send buffer is reused: its previous SEND must be done.
            let mut w = [Wc::default()];
            if self.ep.send_cq().wait(&mut w, Some(self.opts.timeout))? == 0 {
                bail!("UD send to {} did not complete within {:?}", self.addr, self.opts.timeout);
            }
            w[0].ok()?;
            self.send_pending = false;
        }
        if self.drop_requests > 0 {
            // Test hook: lose this request on purpose.
            self.drop_requests -= 1;
            return Ok(());
        }
        self.ep.post_send(0, req, &self.servers[server])?;
        self.send_pending = true;
        Ok(())
    }

    /// Take replies for the call `replies` assembles until it is complete
    /// or `deadline` passes.
    fn collect(&mut self, replies: &mut Replies, deadline: Instant) -> Result<bool> {
        let spin_until = Instant::now() + self.opts.spin;
        loop {
            // The deadline is the retry timer.
            let n = next_completions(self.ep.recv_cq(), &mut self.wcs, spin_until, deadline)?;
            if n == 0 {
                return Ok(false);
            }
            for i in 0..n {
                let wc = self.wcs[i].clone();
                wc.ok().map_err(Error::from).with_context(|| format!("UD receive from {}", self.addr))?;
                let slot = wc.wr_id() as usize;
                let len = (wc.byte_len() as usize).saturating_sub(GRH_SIZE).min(self.ep.max_payload());
                self.ep.read_payload(slot, len, &mut self.payload)?;
                self.ep.repost(slot)?;
                if self.drop_replies > 0 {
                    // Test hook: lose this reply on purpose (after the server applied it).
                    self.drop_replies -= 1;
                    continue;
                }
                let stale = replies.stale;
                if replies.take(&self.payload).is_err() {
                    self.stats.bad_replies += 1;
                }
                self.stats.stale += replies.stale - stale;
            }
            if replies.is_done() {
                return Ok(true);
            }
        }
    }

    /// Replies flagged NEEDS_RC, fetched again over RC.
    fn via_rc(&mut self, req: &mut Vec<u8>, end: End, got: Vec<Response>) -> Result<Vec<Response>> {
        if end == End::First {
            return self.rc()?.call(req, end);
        }
        let mut out = Vec::with_capacity(got.len());
        for r in got {
            if r.status != NEEDS_RC {
                out.push(r);
                continue;
            }
            let mut one = Vec::new();
            wire::request(&mut one, opcode::GETK, 0, &[], &r.key, &[]);
            let mut reply = self.rc()?.call(&mut one, End::First)?;
            if let Some(x) = reply.pop() {
                if x.status == wire::status::SUCCESS {
                    out.push(x);
                }
            }
        }
        Ok(out)
    }
}

impl Transport for UdTransport {
    fn call(&mut self, req: &mut Vec<u8>, end: End) -> Result<Vec<Response>> {
        self.stats.requests += 1;
        if req.len() > self.mtu {
            return self.rc()?.call(req, end);
        }
        self.id = self.id.wrapping_add(1);
        let id = self.id;
        wire::set_opaque(req, id);
        // Spread calls over the server's QPs; a retry goes where the original went.
        let server = self.next_server;
        self.next_server = (self.next_server + 1) % self.servers.len();
        let mut replies = Replies::new(id, end);
        let mut ok = false;
        for attempt in 0..=self.opts.retries {
            if attempt > 0 {
                self.stats.retries += 1;
            }
            self.send_datagram(req, server)?;
            if self.collect(&mut replies, Instant::now() + self.opts.timeout)? {
                ok = true;
                break;
            }
        }
        if !ok {
            self.stats.timeouts += 1;
            bail!(
                "no reply from {} after {} attempts of {:?} each",
                self.addr,
                self.opts.retries + 1,
                self.opts.timeout
            );
        }
        let got = replies.into_replies();
        if got.iter().any(|r| r.status == NEEDS_RC) {
            return self.via_rc(req, end, got);
        }
        Ok(got)
    }

    fn max_request(&self) -> usize {
        self.mtu
    }

    fn stats(&self) -> TransportStats {
        self.stats
    }
}
