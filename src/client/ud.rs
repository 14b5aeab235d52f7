//! The UD transport: requests and replies as datagrams to the server's
//! per-worker UD QPs; the format both sides speak is [`crate::rdma_wire`].
//!
//! # Timeouts and retries
//!
//! One request is outstanding per endpoint. The client spins on its receive
//! CQ for [`ClientOptions::spin`], then blocks on the completion channel until
//! the attempt's deadline ([`ClientOptions::timeout`]); no sleeps. When the
//! deadline passes it sends the datagram again, to the same server QP, up to
//! [`ClientOptions::retries`] times.
//!
//! Every operation is retried:
//! * reads (get, multi-get) are idempotent: the server simply runs them
//!   again, so they are resent under a fresh id;
//! * writes (set, add, replace, append, prepend, delete, incr, decr, touch)
//!   are resent under the *same* request id (the opaque field) and are
//!   answered from the server's per-client reply cache when the id was
//!   already executed (the reply was what got lost), so they apply once.
//!   See [retries](crate::rdma_wire#retries-apply-writes-once).
//!
//! Replies with another id (late answers to an earlier attempt or call) are
//! ignored and counted as stale, and each attempt starts from no replies:
//! a retried multi-get (plain reads) goes under a fresh id, so no hit of a
//! failed attempt stays in its result ([`super::exchange`]).
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

use std::time::{Duration, Instant};

use super::exchange::{self, Link, Tries};
use super::rc::RcTransport;
use super::wait::next_completions;
use super::wire::{self, opcode, Response};
use super::{ClientOptions, End, Transport, TransportStats};
use crate::auth::AuthToken;
use crate::bail;
use crate::error::{Context as _, Error, Result};
use crate::rdma::connect::UdEndpointInfo;
use crate::rdma::{UdDest, UdEndpoint, Wc, GRH_SIZE};
use crate::rdma_wire::handshake::{dial, read_ud_endpoints, Command};
use crate::rdma_wire::NEEDS_RC;

/// Receive buffers posted (a multi-get reply may span many datagrams).
const RECV_SLOTS: usize = 64;

pub struct UdTransport {
    addr: String,
    link: UdLink,
    /// Largest request datagram: the smaller MTU of ours and the server's.
    mtu: usize,
    next_server: usize,
    id: u32,
    rc: Option<RcTransport>,
    opts: ClientOptions,
    /// Test hook: attempts left that give up at once.
    expire: u32,
    stats: TransportStats,
}

/// The endpoint as a [`Link`] to one server QP at a time.
struct UdLink {
    addr: String,
    /// One send slot: one request is outstanding at a time.
    ep: UdEndpoint,
    servers: Vec<UdDest>,
    /// Where this call's datagrams go (a retry goes where the original went).
    server: usize,
    send_pending: bool,
    /// Receive completions polled and not yet taken: `wcs[next..polled]`.
    wcs: Vec<Wc>,
    next: usize,
    polled: usize,
    spin: Duration,
    send_timeout: Duration,
    drop_requests: u32,
    drop_replies: u32,
    drop_noop_replies: u32,
}

/// Ask the side channel at `addr` for the server's UD endpoints, proving
/// we hold `token` (and checking the server does) first.
pub fn fetch_endpoints(addr: &str, timeout: Duration, token: Option<&AuthToken>) -> Result<Vec<UdEndpointInfo>> {
    let mut s = dial(addr, Command::Ud, token, timeout)?;
    let v = read_ud_endpoints(&mut s)?;
    if v.is_empty() {
        bail!("{addr} offers no UD endpoints");
    }
    Ok(v)
}

impl UdTransport {
    pub fn connect(addr: &str, opts: &ClientOptions) -> Result<UdTransport> {
        let eps = fetch_endpoints(addr, opts.connect_timeout, opts.auth_token.as_ref())?;
        let (ctx, pd) = super::verbs()?;
        // The server's Q_Key (learnt on the authenticated side channel) on
        // our QP too: replies come back with it.
        let qkey = eps[0].qkey;
        if qkey & 0x8000_0000 != 0 || eps.iter().any(|e| e.qkey != qkey) {
            bail!("{addr} offers UD endpoints with a privileged or mixed Q_Key");
        }
        let ep = UdEndpoint::builder(&ctx, &pd)
            .options(crate::rdma::UdOptions { qkey, ..Default::default() })
            .recv_slots(RECV_SLOTS)
            .send_slots(1)
            .build()?;
        // Both sides must fit: the smaller MTU of ours and the server's.
        let server_mtu = eps.iter().filter_map(|e| e.mtu.bytes()).min().unwrap_or(256) as usize;
        let mtu = ep.max_payload().min(server_mtu);
        let servers = eps.iter().map(|e| ep.dest(e)).collect::<Result<Vec<_>>>()?;
        // Start at a different server QP per endpoint so endpoints spread out.
        let next_server = (ep.qpn() as usize) % servers.len();
        let link = UdLink {
            addr: addr.to_string(),
            ep,
            servers,
            server: next_server,
            send_pending: false,
            wcs: Wc::batch(RECV_SLOTS),
            next: 0,
            polled: 0,
            spin: opts.spin,
            send_timeout: opts.timeout,
            drop_requests: opts.drop_requests,
            drop_replies: opts.drop_replies,
            drop_noop_replies: opts.drop_noop_replies,
        };
        Ok(UdTransport {
            addr: addr.to_string(),
            link,
            mtu,
            next_server,
            id: crate::log::random_u64() as u32,
            rc: None,
            expire: opts.expire_attempts,
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
        self.link.servers.len()
    }

    /// One call over RC, opened on first use. Any error drops the
    /// connection: a reply that came too late may still arrive on it, and
    /// must never be taken for a later call's answer.
    fn rc_call(&mut self, req: &mut Vec<u8>, end: End) -> Result<Vec<Response>> {
        if self.rc.is_none() {
            self.rc = Some(RcTransport::connect(&self.addr, &self.opts)?);
            // The test hook is for the first RC connection only.
            self.opts.expire_rc_calls = 0;
        }
        self.stats.rc_calls += 1;
        let rc = self.rc.as_mut().ok_or_else(|| Error::new("RC connection vanished"))?;
        let before = rc.stats();
        let r = rc.call(req, end);
        // The RC connection's own counters, as this endpoint's.
        let after = rc.stats();
        self.stats.timeouts += after.timeouts - before.timeouts;
        self.stats.stale += after.stale - before.stale;
        self.stats.bad_replies += after.bad_replies - before.bad_replies;
        if r.is_err() {
            self.rc = None;
        }
        r
    }

    /// Replies flagged NEEDS_RC, fetched again over RC.
    fn via_rc(&mut self, req: &mut Vec<u8>, end: End, got: Vec<Response>) -> Result<Vec<Response>> {
        if end == End::First {
            return self.rc_call(req, end);
        }
        let mut out = Vec::with_capacity(got.len());
        for r in got {
            if r.status != NEEDS_RC {
                out.push(r);
                continue;
            }
            let mut one = Vec::new();
            wire::request(&mut one, opcode::GETK, 0, &[], &r.key, &[]);
            let mut reply = self.rc_call(&mut one, End::First)?;
            if let Some(x) = reply.pop() {
                if x.status == wire::status::SUCCESS {
                    out.push(x);
                }
            }
        }
        Ok(out)
    }
}

impl Link for UdLink {
    fn send(&mut self, req: &[u8]) -> Result<()> {
        if self.send_pending {
            // The send buffer is reused: its previous SEND must be done.
            let mut w = [Wc::default()];
            if self.ep.send_cq().wait(&mut w, Some(self.send_timeout))? == 0 {
                bail!("UD send to {} did not complete within {:?}", self.addr, self.send_timeout);
            }
            w[0].ok()?;
            self.send_pending = false;
        }
        if self.drop_requests > 0 {
            // Test hook: lose this request on purpose.
            self.drop_requests -= 1;
            return Ok(());
        }
        self.ep.post_send(0, req, &self.servers[self.server])?;
        self.send_pending = true;
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>, deadline: Instant) -> Result<bool> {
        loop {
            if self.next == self.polled {
                // The deadline is the retry timer.
                let spin_until = Instant::now() + self.spin;
                self.polled = next_completions(self.ep.recv_cq(), &mut self.wcs, spin_until, deadline)?;
                self.next = 0;
                if self.polled == 0 {
                    return Ok(false);
                }
            }
            let wc = self.wcs[self.next].clone();
            self.next += 1;
            wc.ok().map_err(Error::from).with_context(|| format!("UD receive from {}", self.addr))?;
            let slot = wc.wr_id() as usize;
            let len = (wc.byte_len() as usize).saturating_sub(GRH_SIZE).min(self.ep.max_payload());
            self.ep.read_payload(slot, len, buf)?;
            self.ep.repost(slot)?;
            if self.drop_replies > 0 {
                // Test hook: lose this reply on purpose (after the server applied it).
                self.drop_replies -= 1;
                continue;
            }
            if self.drop_noop_replies > 0
                && wire::parse_all(buf).is_ok_and(|f| f.iter().any(|f| f.opcode == opcode::NOOP))
            {
                // Test hook: lose the datagram that ends a multi-get's reply.
                self.drop_noop_replies -= 1;
                continue;
            }
            return Ok(true);
        }
    }
}

impl Transport for UdTransport {
    fn call(&mut self, req: &mut Vec<u8>, end: End) -> Result<Vec<Response>> {
        self.stats.requests += 1;
        if req.len() > self.mtu {
            return self.rc_call(req, end);
        }
        // Spread calls over the server's QPs; a retry goes where the original went.
        self.link.server = self.next_server;
        self.next_server = (self.next_server + 1) % self.link.servers.len();
        let tries = Tries {
            attempts: self.opts.retries + 1,
            timeout: self.opts.timeout,
            expire: &mut self.expire,
            id: &mut self.id,
            peer: &self.addr,
        };
        let got = exchange::call(&mut self.link, req, end, tries, &mut self.stats)?;
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
