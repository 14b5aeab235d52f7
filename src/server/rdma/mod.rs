//! RDMA client access (`--rdma-listen ADDR:PORT`): UD datagrams polled by the
//! worker loops, RC connections for what does not fit a datagram. The wire
//! format (side channel, datagram framing, `NEEDS_RC`, reply chunking) is
//! [`crate::rdma_wire`], shared with the client; this is the server's half.
//!
//! * `side_channel.rs`: the TCP thread that hands out the UD endpoints and
//!   sets RC connections up for the workers;
//! * `ud.rs`: the datagram path (per-client address handles, the retry reply
//!   cache of [`dedup`], send slots and the queue of replies waiting for one);
//! * `peers.rs`: the bounded table of per-client state (least recently seen
//!   client forgotten first);
//! * `rc.rs`: the RC path (connections a worker owns, one request at a time)
//!   and the budget of memory their buffers pin.
//!
//! # One UD QP per worker
//!
//! Every worker owns a UD QP, its two CQs and its buffers; the receive CQ's
//! completion channel fd sits in the worker's epoll set. The worker polls the
//! CQ on every loop iteration (user space, no syscall) next to its sockets,
//! and arms the channel before it blocks in `epoll_wait`. Why not one shared
//! QP: a shared QP needs a lock (or one poller handing work to the others) on
//! the hottest path, and its CQ would wake every blocked worker. Per worker,
//! nothing is shared but the store, each worker is the single writer of its
//! counters, the per-client state (address handles, reply cache) needs no
//! lock, and clients spread load by choosing among the QPs (they learn all of
//! them). A client sends a retry to the QP it sent the original to, so the
//! reply cache (see [`dedup`]) can be per worker.
//!
//! # Datagrams
//!
//! A malformed datagram is dropped without a reply and counted in
//! `rdma_drops`. Each request of a well-formed one runs through
//! [`protocol::step`], the same code TCP uses (here, in `run_frames`, the
//! one place this module calls it). Replies go to the datagram's source as
//! the NIC delivered it (the completion's source QPN, the GRH's source
//! GID), never to an address the request names, through an address handle
//! cached per client (source GID, QPN) next to that client's reply cache for
//! retried writes.
//!
//! # Budgets (per worker unless said)
//!
//! * client state: at most `ud::MAX_PEERS` (4,096) clients and
//!   `ud::PEER_BYTES` (8 MiB: 256 bytes each plus the replies remembered for
//!   it, at most 16 and 64 KiB per client); past either the least recently
//!   seen client is forgotten (`rdma_peer_evictions`);
//! * replies waiting for a send slot: `ud::PENDING_SENDS` (256) datagrams;
//!   a reply that does not fit is dropped whole (`rdma_drops`) and the
//!   client retries; queued ones count in `rdma_send_queued`;
//! * RC: every connection's two buffers together within `--rdma-rc-memory`
//!   (for the whole server; see `rc.rs`), at most 256 connections per worker.
//!
//! # RC for large values
//!
//! A client opens one RC QP on demand through the side channel. It SENDs the
//! same binary request (up to `capacity` bytes); the worker that owns the QP
//! (its CQs are that worker's) runs it and SENDs the reply back. One request
//! at a time per RC connection, so one receive and one send buffer each.
//! SEND/SEND was chosen over letting clients RDMA READ a server buffer: the
//! reply is produced on demand anyway, and a READ would need a second round
//! trip to learn where and how long it is.

pub mod dedup;
mod peers;
mod rc;
mod side_channel;
mod ud;

use std::net::TcpListener;
use std::ops::Range;
use std::sync::Arc;

use crate::error::{Context as _, Result};
use crate::protocol::binary::header::RequestHeader;
use crate::protocol::{self, Ctx, Protocol, Session};
use crate::rdma::{Context, Wc};
use crate::rdma_wire::frames::{split_frames, write_needs_rc};
use crate::runtime::{RdmaBudgets, RdmaControl};

pub use rc::{default_rc_memory, rc_capacity, rc_connection_bytes};

/// Wakes one worker out of a blocking wait (from the side channel's threads).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// The endpoint's budgets for a server with `-m memory_bytes`, `-I
/// max_item_size` and `--rdma-rc-memory rc_memory` (default
/// [`default_rc_memory`]): what `stats settings` reports and what the
/// endpoint enforces.
pub fn budgets(memory_bytes: usize, max_item_size: usize, rc_memory: Option<usize>) -> RdmaBudgets {
    RdmaBudgets {
        rc_memory: rc_memory.unwrap_or_else(|| default_rc_memory(memory_bytes, max_item_size)),
        rc_connection_bytes: rc_connection_bytes(max_item_size),
        peers_per_worker: ud::MAX_PEERS,
        peer_bytes_per_worker: ud::PEER_BYTES,
        pending_sends_per_worker: ud::PENDING_SENDS,
    }
}

/// Completions taken per poll.
const POLL_BATCH: usize = 32;

/// What the RDMA endpoint needs from the server's settings.
#[derive(Clone, Debug)]
pub struct Config<'a> {
    /// `--rdma-listen ADDR:PORT`: the side channel.
    pub listen: &'a str,
    /// Workers, one UD QP each.
    pub threads: usize,
    /// `-I`: sizes the RC message buffers.
    pub max_item_size: usize,
    /// `--rdma-rc-memory`: bytes every RC connection's buffers may pin together.
    pub rc_memory: usize,
    /// Where RC admissions and refusals are counted (`stats`).
    pub control: Arc<RdmaControl>,
    /// Log side-channel failures (`-v`).
    pub verbose: bool,
    /// What a client must prove it holds before it learns an endpoint.
    pub auth_token: Option<crate::auth::AuthToken>,
}

/// A worker's UD endpoint and RC connections.
pub struct WorkerRdma {
    ud: ud::UdPath,
    rc: rc::RcPath,
    wcs: Vec<Wc>,
    /// The message being run, copied out of its receive buffer.
    input: Vec<u8>,
    /// Its replies.
    out: Vec<u8>,
}

/// Start the RDMA endpoint: one UD QP per worker (returned, to be moved into
/// the workers; `wakers` wakes each) and the side-channel thread. Binds now,
/// so a bad address or a missing device is an error at start.
pub fn start(cfg: &Config, wakers: Vec<Waker>) -> Result<Vec<WorkerRdma>> {
    if wakers.len() != cfg.threads {
        crate::bail!("--rdma-listen: {} wakers for {} workers", wakers.len(), cfg.threads);
    }
    let listener = TcpListener::bind(cfg.listen).with_context(|| format!("--rdma-listen {}", cfg.listen))?;
    let dev = std::env::var("LOGMEMCACHED_RDMA_DEV").ok();
    let ctx = Context::open(dev.as_deref()).context("--rdma-listen: opening the RDMA device")?;
    let pd = ctx.alloc_pd()?;
    // A random Q_Key, told only to clients that passed the side channel's
    // handshake: the NIC drops datagrams without it, so a stranger who
    // guesses a QPN still cannot send requests (31 bits: the high bit marks
    // privileged Q_Keys; this raises the bar, it is not cryptography).
    let qkey = (crate::log::try_random_u64().context("--rdma-listen: a random Q_Key")? as u32 & 0x7fff_ffff).max(1);
    let mut workers = Vec::new();
    for wake in wakers {
        let ud = ud::UdPath::new(&ctx, &pd, qkey)?;
        let input = Vec::with_capacity(ud.max_payload() + crate::rdma::GRH_SIZE);
        workers.push(WorkerRdma {
            ud,
            rc: rc::RcPath::new(wake),
            wcs: Wc::batch(POLL_BATCH),
            input,
            out: Vec::with_capacity(64 << 10),
        });
    }
    let handles = workers.iter().map(|w| w.side_channel_handle()).collect();
    let budget = Arc::new(rc::RcBudget::new(cfg.rc_memory, cfg.max_item_size, cfg.control.clone()));
    side_channel::spawn(listener, handles, pd, budget, cfg.auth_token.clone(), cfg.verbose)?;
    Ok(workers)
}

impl WorkerRdma {
    /// What the side channel needs of this worker: its UD endpoint record,
    /// its CQs (RC QPs share them) and its RC inbox.
    fn side_channel_handle(&self) -> side_channel::WorkerHandle {
        let ep = self.ud.endpoint();
        side_channel::WorkerHandle {
            ud: ep.info(),
            scq: ep.send_cq().clone(),
            rcq: ep.recv_cq().clone(),
            inbox: self.rc.inbox(),
        }
    }

    /// The receive CQ's completion channel (for the worker's epoll set).
    pub fn channel_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.ud.endpoint().recv_cq().channel_borrowed_fd()
    }

    /// After the channel fd was readable: take its events.
    pub fn drain_events(&self) {
        let _ = self.ud.endpoint().recv_cq().drain_events();
    }

    /// Handle what has arrived. With `about_to_block`, arm the channel when
    /// nothing did (and poll once more: a completion racing the arming raises
    /// no event). Returns whether there was work.
    pub fn poll(&mut self, ctx: &Ctx, about_to_block: bool) -> bool {
        self.rc.take_inbox_if_changed();
        self.ud.reap_sends(ctx);
        let waiting = self.ud.flush_pending(ctx);
        let mut work = self.poll_recv(ctx) || waiting;
        if !work && about_to_block {
            if self.ud.endpoint().recv_cq().arm().is_err() {
                return true; // cannot block safely: keep polling
            }
            work = self.poll_recv(ctx);
        }
        work
    }

    /// One batch from the receive CQ, which the UD QP and this worker's RC
    /// QPs share: each completion goes to the path its QP belongs to.
    fn poll_recv(&mut self, ctx: &Ctx) -> bool {
        let n = match self.ud.endpoint().recv_cq().poll(&mut self.wcs) {
            Ok(n) => n,
            Err(_) => return false,
        };
        let ud_qpn = self.ud.endpoint().qpn();
        for wc in &self.wcs[..n] {
            if wc.qp_num() == ud_qpn {
                self.ud.on_datagram(wc, ctx, &mut self.input, &mut self.out);
            } else {
                self.rc.on_message(wc, ctx, &mut self.input, &mut self.out);
            }
        }
        n > 0
    }
}

/// One request datagram's payload from a client whose recent writes are
/// `recent`: `None` when its framing is malformed (it is dropped without a
/// reply). Otherwise `out` holds the replies (empty: nothing to send): a
/// retried write answered from `recent`, or the requests run (each reply
/// larger than `mtu` replaced by `NEEDS_RC`); `Some(true)` when a write's
/// replies were remembered in `recent` (it changed). Pure: no verbs, so the
/// fuzz target `ud_request` drives it as the worker does.
pub fn answer_datagram(
    input: &[u8],
    recent: &mut dedup::Recent,
    out: &mut Vec<u8>,
    ctx: &Ctx,
    mtu: usize,
) -> Option<bool> {
    let frames = split_frames(input)?;
    let first = RequestHeader::parse(input).map(|h| h.opaque);
    let write = frames.iter().any(|f| input.get(f.start + 1).is_some_and(|&op| dedup::is_write(op)));
    out.clear();
    if let (true, Some(id)) = (write, first) {
        if let Some(r) = recent.lookup(id) {
            out.extend_from_slice(r);
            ctx.stats.rdma_retries.incr();
            return Some(false);
        }
    }
    run_frames(input, &frames, out, ctx, Some(mtu));
    if let (true, Some(id)) = (write, first) {
        return Some(recent.remember(id, out));
    }
    Some(false)
}

/// Run every request of a well-formed message (`frames` from
/// [`crate::rdma_wire::frames::split_frames`]) through the protocol, appending
/// the replies to `out`. With `max_frame`, a reply frame larger than that is
/// replaced by a `NEEDS_RC` frame with the request's opaque and key.
fn run_frames(input: &[u8], frames: &[Range<usize>], out: &mut Vec<u8>, ctx: &Ctx, max_frame: Option<usize>) {
    for f in frames {
        let req = &input[f.clone()];
        let before = out.len();
        let mut session = Session { protocol: Some(Protocol::Binary), ..Session::default() };
        // The message's framing was checked, so each request is complete;
        // Close (quit, or a request the opcode does not allow) has already
        // written its answer, and there is no stream to close.
        //
        // `--sync-replicas` is not group commit here: a write waits in the
        // request, for at most `--sync-timeout` (store/sync.rs), stalling this
        // worker meanwhile. A datagram's replies are one message, sent as a
        // whole, and a client retries one that is late, so holding them would
        // need a per-client queue and the reply cache to learn of it; RDMA
        // writes under --sync-replicas are rare. TCP holds replies instead
        // (server/conn.rs).
        let _ = protocol::step(&mut session, req, out, ctx);
        if let Some(max) = max_frame {
            if out.len() - before > max {
                out.truncate(before);
                write_needs_rc(req, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_settings_state_the_budgets_the_endpoint_enforces() {
        let d = crate::runtime::Settings::default();
        assert_eq!(budgets(d.memory_bytes, d.max_item_size, None), d.rdma);
        assert_eq!(budgets(d.memory_bytes, d.max_item_size, Some(0)).rc_memory, 0, "an explicit budget wins");
    }
}
