//! RDMA client access (`--rdma-listen ADDR:PORT`): UD datagrams polled by the
//! worker loops, RC connections for what does not fit a datagram.
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
//! reply cache (see [`super::dedup`]) can be per worker.
//!
//! # Side channel (TCP at ADDR:PORT)
//!
//! ```text
//! client -> server  "LMCL" version(1) command(u8)
//! command 'U'  server -> client  count(u8), then count 64-byte UdEndpointInfo
//!              records (rdma::connect wire format), one per worker; closes.
//! command 'R'  server -> client  capacity(u32 BE): largest message either way
//!              then rdma::connect::exchange of RcEndpointInfo, both connect,
//!              barrier 'R'. The stream stays open; closing it ends the RC QP.
//! ```
//!
//! # Datagrams
//!
//! A request datagram holds one or more whole binary-protocol requests; the
//! framing of the whole datagram is checked before any of it runs, and a
//! malformed datagram (bad magic, lengths that disagree, a truncated frame,
//! trailing bytes) is dropped without a reply and counted in `rdma_drops`.
//! Each request runs through [`protocol::step`], the same code TCP uses. The
//! replies go back in as many datagrams as needed, each holding whole frames
//! (at most the path MTU). A reply frame larger than a datagram (a big value)
//! is replaced by a [`NEEDS_RC`] frame carrying the request's opaque and key;
//! the client then repeats that request over RC.
//!
//! Replies are addressed through an address handle made from the request's
//! GRH and cached per client (source GID, QPN), next to that client's reply
//! cache for retried writes.
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

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::dedup::{self, Recent};
use crate::error::{Context as _, Result};
use crate::protocol::binary::header::{write_response_header, RequestHeader, HEADER_LEN, REQUEST_MAGIC};
use crate::protocol::{self, Ctx, Protocol, Session};
use crate::rdma::connect::{barrier, exchange, UdEndpointInfo, WireInfo};
use crate::rdma::{
    Access, Buffer, CompletionQueue, Context, MemoryRegion, ProtectionDomain, QpCaps, RcEndpointInfo, RcOptions, RcQp,
    UdDest, UdOptions, UdQp, Wc, GRH_SIZE,
};
use crate::runtime::Runtime;

/// Reply status (outside memcached's codes) telling the client that this
/// request's reply does not fit a datagram: repeat it over RC.
pub const NEEDS_RC: u16 = 0x00a0;
/// Side-channel greeting.
pub const HELLO: &[u8; 4] = b"LMCL";
pub const VERSION: u8 = 1;
pub const CMD_UD: u8 = b'U';
pub const CMD_RC: u8 = b'R';

/// Receive buffers posted per worker QP (bounds how many datagrams can wait).
const RECV_SLOTS: usize = 512;
/// Send buffers per worker QP (replies in flight).
const SEND_SLOTS: usize = 128;
/// Completions taken per poll.
const POLL_BATCH: usize = 32;
/// Clients a worker keeps address handles and reply caches for; beyond it the
/// table starts over (a client then only pays one address-handle creation).
const MAX_PEERS: usize = 4096;
const SIDE_TIMEOUT: Duration = Duration::from_secs(10);
/// RC connections per worker. Each has one receive and at most one send in
/// flight, and the worker's CQs are sized for this many: past it a client is
/// refused (capacity 0 on the side channel) rather than risk a CQ overrun.
const MAX_RC_PER_WORKER: usize = 256;
/// Polls waiting for a free send slot before the reply is dropped (the client
/// retries); the send queue drains in microseconds unless the device is stuck.
const SEND_SLOT_SPINS: u32 = 1_000_000;

/// Check the framing of a whole datagram: `Some` ranges of each complete
/// request when it is exactly a sequence of well-formed binary requests.
pub fn split_frames(input: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let h = RequestHeader::parse(&input[pos..])?;
        if h.magic != REQUEST_MAGIC {
            return None;
        }
        h.value_len()?;
        let end = pos.checked_add(HEADER_LEN)?.checked_add(h.body_len as usize)?;
        if end > input.len() {
            return None;
        }
        frames.push(pos..end);
        pos = end;
    }
    if frames.is_empty() {
        return None;
    }
    Some(frames)
}

/// The sender of a datagram: its QPN and source address from the GRH. For
/// RoCE v2 over IPv4 the last 20 bytes of the GRH area hold the IPv4 header,
/// whose source address we map to `::ffff:a.b.c.d` (as its GID is); otherwise
/// the GRH's source GID (bytes 8..24).
pub fn peer_key(grh: &[u8; GRH_SIZE], src_qp: u32) -> ([u8; 16], u32) {
    let mut gid = [0u8; 16];
    if grh[20] == 0x45 {
        gid[10] = 0xff;
        gid[11] = 0xff;
        gid[12..].copy_from_slice(&grh[32..36]);
    } else {
        gid.copy_from_slice(&grh[8..24]);
    }
    (gid, src_qp)
}

/// Run every request of a well-formed message (`frames` from
/// [`split_frames`]) through the protocol, appending the replies to `out`.
/// With `max_frame`, a reply frame larger than that is replaced by a
/// [`NEEDS_RC`] frame with the request's opaque and key.
pub fn run_frames(
    input: &[u8],
    frames: &[std::ops::Range<usize>],
    out: &mut Vec<u8>,
    ctx: &Ctx,
    max_frame: Option<usize>,
) {
    for f in frames {
        let req = &input[f.clone()];
        let before = out.len();
        let mut session = Session { protocol: Some(Protocol::Binary), swallow: 0 };
        // The datagram's framing was checked, so each request is complete;
        // Close (quit, or a request the opcode does not allow) has already
        // written its answer, and there is no stream to close.
        let _ = protocol::step(&mut session, req, out, ctx);
        if let Some(max) = max_frame {
            if out.len() - before > max {
                out.truncate(before);
                needs_rc(req, out);
            }
        }
    }
}

fn needs_rc(req: &[u8], out: &mut Vec<u8>) {
    let Some(h) = RequestHeader::parse(req) else { return };
    let key_start = HEADER_LEN + h.extras_len as usize;
    let key = req.get(key_start..key_start + h.key_len as usize).unwrap_or(&[]);
    write_response_header(out, h.opcode, NEEDS_RC, 0, key.len() as u16, key.len() as u32, h.opaque, 0);
    out.extend_from_slice(key);
}

/// Split `out` (whole response frames) into chunks of at most `mtu` bytes at
/// frame boundaries. A frame larger than `mtu` (which [`run_frames`] never
/// produces) ends the split.
pub fn reply_chunks(out: &[u8], mtu: usize) -> Vec<std::ops::Range<usize>> {
    let mut chunks = Vec::new();
    let (mut start, mut pos) = (0, 0);
    while pos + HEADER_LEN <= out.len() {
        let body = u32::from_be_bytes([out[pos + 8], out[pos + 9], out[pos + 10], out[pos + 11]]) as usize;
        let end = pos + HEADER_LEN + body;
        if end > out.len() || end - pos > mtu {
            break;
        }
        if end - start > mtu {
            chunks.push(start..pos);
            start = pos;
        }
        pos = end;
    }
    if pos > start {
        chunks.push(start..pos);
    }
    chunks
}

/// What one client looks like to a worker.
struct Peer {
    dest: UdDest,
    recent: Recent,
}

/// An RC connection owned by a worker.
struct RcConn {
    qp: RcQp,
    recv: MemoryRegion<Buffer>,
    send: MemoryRegion<Buffer>,
    dead: Arc<AtomicBool>,
}

/// What the side-channel threads hand a worker.
struct Inbox {
    new: Mutex<Vec<RcConn>>,
    /// Bumped on every change (new connection, one closed) so the worker
    /// looks at the inbox only when something happened.
    generation: AtomicU64,
    /// RC connections open on this worker (side channel's count).
    open: AtomicUsize,
}

/// Per-worker verbs objects the side channel needs to build RC QPs on.
#[derive(Clone)]
struct WorkerVerbs {
    scq: CompletionQueue,
    rcq: CompletionQueue,
    inbox: Arc<Inbox>,
}

/// A worker's UD endpoint and RC connections.
pub struct WorkerRdma {
    qp: UdQp,
    scq: CompletionQueue,
    rcq: CompletionQueue,
    recv: MemoryRegion<Buffer>,
    send: MemoryRegion<Buffer>,
    slot: usize,
    mtu: usize,
    free_send: Vec<usize>,
    peers: HashMap<([u8; 16], u32), Peer>,
    wcs: Vec<Wc>,
    input: Vec<u8>,
    out: Vec<u8>,
    inbox: Arc<Inbox>,
    seen_generation: u64,
    rc: HashMap<u32, RcConn>,
}

/// Start the RDMA endpoint: one UD QP per worker (returned, to be moved into
/// the workers) and the side-channel thread. Binds now, so a bad address or a
/// missing device is an error at start.
pub fn start(rt: &Runtime, addr: &str) -> Result<Vec<WorkerRdma>> {
    let listener = TcpListener::bind(addr).with_context(|| format!("--rdma-listen {addr}"))?;
    let dev = std::env::var("LOGMEMCACHED_RDMA_DEV").ok();
    let ctx = Context::open(dev.as_deref()).context("--rdma-listen: opening the RDMA device")?;
    let pd = ctx.alloc_pd()?;
    let mut workers = Vec::new();
    let mut verbs = Vec::new();
    for _ in 0..rt.settings.threads {
        let w = WorkerRdma::new(&ctx, &pd)?;
        verbs.push(WorkerVerbs { scq: w.scq.clone(), rcq: w.rcq.clone(), inbox: w.inbox.clone() });
        workers.push(w);
    }
    let endpoints: Vec<UdEndpointInfo> = workers.iter().map(|w| w.qp.endpoint()).collect();
    // Largest RC message: a value of -I bytes plus its header, key and extras.
    let capacity = rt.settings.max_item_size + 64 * 1024;
    let verbose = rt.verbosity() > 0;
    let next = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("rdma-side-channel".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(s) = conn else { continue };
                let (endpoints, verbs, pd, next) = (endpoints.clone(), verbs.clone(), pd.clone(), next.clone());
                // Control path: a thread per side-channel connection.
                let _ = std::thread::Builder::new().name("rdma-client".into()).spawn(move || {
                    if let Err(e) = side_channel(s, &endpoints, &verbs, &pd, capacity, &next) {
                        if verbose {
                            eprintln!("warn: rdma side channel: {e}");
                        }
                    }
                });
            }
        })
        .context("starting the rdma side-channel thread")?;
    Ok(workers)
}

fn side_channel(
    mut s: TcpStream,
    endpoints: &[UdEndpointInfo],
    verbs: &[WorkerVerbs],
    pd: &ProtectionDomain,
    capacity: usize,
    next: &AtomicUsize,
) -> Result<()> {
    s.set_read_timeout(Some(SIDE_TIMEOUT))?;
    s.set_write_timeout(Some(SIDE_TIMEOUT))?;
    let _ = s.set_nodelay(true);
    let mut hello = [0u8; 6];
    s.read_exact(&mut hello).context("reading the client's greeting")?;
    if &hello[..4] != HELLO || hello[4] != VERSION {
        crate::bail!("not a LogMemcached RDMA client greeting: {hello:02x?}");
    }
    match hello[5] {
        CMD_UD => {
            let mut b = vec![endpoints.len() as u8];
            for e in endpoints {
                b.extend_from_slice(&e.encode());
            }
            s.write_all(&b).context("sending the UD endpoints")?;
            Ok(())
        }
        CMD_RC => {
            let w = &verbs[next.fetch_add(1, Ordering::Relaxed) % verbs.len()];
            if w.inbox.open.fetch_add(1, Ordering::AcqRel) >= MAX_RC_PER_WORKER {
                w.inbox.open.fetch_sub(1, Ordering::AcqRel);
                s.write_all(&0u32.to_be_bytes())?;
                crate::bail!("refusing an RC connection: {MAX_RC_PER_WORKER} already open on this worker");
            }
            let r = serve_rc(&mut s, w, pd, capacity);
            w.inbox.open.fetch_sub(1, Ordering::AcqRel);
            r
        }
        c => crate::bail!("unknown side-channel command {c:#x}"),
    }
}

/// One RC client: set the QP up, hand it to its worker, hold the side
/// channel until the client closes it.
fn serve_rc(s: &mut TcpStream, w: &WorkerVerbs, pd: &ProtectionDomain, capacity: usize) -> Result<()> {
    s.write_all(&(capacity as u32).to_be_bytes())?;
    let caps = QpCaps { max_send_wr: 4, max_recv_wr: 4, ..QpCaps::default() };
    let prepared = pd.create_rc_qp(&w.scq, &w.rcq, &caps, &RcOptions::default())?;
    let recv = pd.register_buffer(capacity, Access::LOCAL_WRITE)?;
    let send = pd.register_buffer(capacity, Access::LOCAL_WRITE)?;
    prepared.post_recv(0, recv.slice(0, capacity)?)?;
    let remote: RcEndpointInfo = exchange(s, &prepared.endpoint())?;
    let qp = prepared.connect(&remote)?;
    let dead = Arc::new(AtomicBool::new(false));
    // Hand the QP to its worker before the barrier: the client's first
    // SEND may come right after, and the worker must know the QPN.
    lock(&w.inbox.new).push(RcConn { qp, recv, send, dead: dead.clone() });
    w.inbox.generation.fetch_add(1, Ordering::Release);
    let r = barrier(s, b'R');
    if r.is_ok() {
        // Block until the client hangs up (EOF, error): then the QP goes.
        s.set_read_timeout(None)?;
        let mut b = [0u8; 64];
        while matches!(s.read(&mut b), Ok(n) if n > 0) {}
    }
    dead.store(true, Ordering::Release);
    w.inbox.generation.fetch_add(1, Ordering::Release);
    r
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WorkerRdma {
    fn new(ctx: &Context, pd: &ProtectionDomain) -> Result<WorkerRdma> {
        // Room for every UD slot plus one completion per RC connection.
        let scq = ctx.create_cq((SEND_SLOTS + MAX_RC_PER_WORKER + 16) as u32, false)?;
        let rcq = ctx.create_cq((RECV_SLOTS + MAX_RC_PER_WORKER + 16) as u32, true)?;
        let caps = QpCaps { max_send_wr: SEND_SLOTS as u32, max_recv_wr: RECV_SLOTS as u32, ..QpCaps::default() };
        let qp = pd.create_ud_qp(&scq, &rcq, &caps, &UdOptions::default())?;
        let mtu = qp.max_payload();
        let slot = GRH_SIZE + mtu;
        let recv = pd.register_buffer(slot * RECV_SLOTS, Access::LOCAL_WRITE)?;
        let send = pd.register_buffer(mtu * SEND_SLOTS, Access::LOCAL_WRITE)?;
        for i in 0..RECV_SLOTS {
            qp.post_recv(i as u64, recv.slice(i * slot, slot)?)?;
        }
        Ok(WorkerRdma {
            qp,
            scq,
            rcq,
            recv,
            send,
            slot,
            mtu,
            free_send: (0..SEND_SLOTS).collect(),
            peers: HashMap::new(),
            wcs: Wc::batch(POLL_BATCH),
            input: Vec::with_capacity(slot),
            out: Vec::with_capacity(64 << 10),
            inbox: Arc::new(Inbox {
                new: Mutex::new(Vec::new()),
                generation: AtomicU64::new(0),
                open: AtomicUsize::new(0),
            }),
            seen_generation: 0,
            rc: HashMap::new(),
        })
    }

    /// The receive CQ's completion channel (for the worker's epoll set).
    pub fn channel_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.rcq.channel_borrowed_fd()
    }

    /// After the channel fd was readable: take its events.
    pub fn drain_events(&self) {
        let _ = self.rcq.drain_events();
    }

    /// Handle what has arrived. With `about_to_block`, arm the channel when
    /// nothing did (and poll once more: a completion racing the arming raises
    /// no event). Returns whether there was work.
    pub fn poll(&mut self, ctx: &Ctx, about_to_block: bool) -> bool {
        if self.inbox.generation.load(Ordering::Acquire) != self.seen_generation {
            self.take_inbox();
        }
        self.reap_sends();
        let mut work = self.poll_recv(ctx);
        if !work && about_to_block {
            if self.rcq.arm().is_err() {
                return true; // cannot block safely: keep polling
            }
            work = self.poll_recv(ctx);
        }
        work
    }

    fn take_inbox(&mut self) {
        self.seen_generation = self.inbox.generation.load(Ordering::Acquire);
        for c in lock(&self.inbox.new).drain(..) {
            self.rc.insert(c.qp.qpn(), c);
        }
        self.rc.retain(|_, c| !c.dead.load(Ordering::Acquire));
    }

    fn reap_sends(&mut self) {
        let mut wcs = [
            Wc::default(),
            Wc::default(),
            Wc::default(),
            Wc::default(),
            Wc::default(),
            Wc::default(),
            Wc::default(),
            Wc::default(),
        ];
        loop {
            let n = self.scq.poll(&mut wcs).unwrap_or(0);
            for wc in &wcs[..n] {
                // UD sends carry their slot; RC sends (other QPNs) free nothing.
                if wc.qp_num() == self.qp.qpn() {
                    self.free_send.push(wc.wr_id() as usize);
                }
            }
            if n < wcs.len() {
                return;
            }
        }
    }

    fn poll_recv(&mut self, ctx: &Ctx) -> bool {
        let n = match self.rcq.poll(&mut self.wcs) {
            Ok(n) => n,
            Err(_) => return false,
        };
        for i in 0..n {
            let wc = self.wcs[i].clone();
            if wc.qp_num() == self.qp.qpn() {
                self.on_datagram(&wc, ctx);
            } else {
                self.on_rc(&wc, ctx);
            }
        }
        n > 0
    }

    fn repost(&self, slot: usize) {
        if let Ok(s) = self.recv.slice(slot * self.slot, self.slot) {
            let _ = self.qp.post_recv(slot as u64, s);
        }
    }

    fn on_datagram(&mut self, wc: &Wc, ctx: &Ctx) {
        let slot = wc.wr_id() as usize;
        ctx.stats.rdma_requests.incr();
        if slot >= RECV_SLOTS {
            ctx.stats.rdma_drops.incr();
            return;
        }
        let len = (wc.byte_len() as usize).saturating_sub(GRH_SIZE);
        if !wc.is_ok() || (wc.byte_len() as usize) < GRH_SIZE || len > self.mtu {
            ctx.stats.rdma_drops.incr();
            if wc.is_ok() {
                self.repost(slot);
            }
            return;
        }
        let mut grh = [0u8; GRH_SIZE];
        self.recv.read(slot * self.slot, &mut grh);
        self.input.resize(len, 0);
        self.recv.read(slot * self.slot + GRH_SIZE, &mut self.input);
        let key = peer_key(&grh, wc.src_qp());
        // The reply address must be taken from the GRH before the buffer is reused.
        if !self.peers.contains_key(&key) {
            let dest = match self.qp.reply_dest(wc, &self.recv, slot * self.slot) {
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
        let Some(frames) = split_frames(&self.input) else {
            ctx.stats.rdma_drops.incr();
            return;
        };
        let first = RequestHeader::parse(&self.input).map(|h| (h.opaque, h.opcode));
        let write = frames.iter().any(|f| self.input.get(f.start + 1).is_some_and(|&op| dedup::is_write(op)));
        self.out.clear();
        let mut from_cache = false;
        if let (true, Some((id, _))) = (write, first) {
            if let Some(r) = self.peers.get(&key).and_then(|p| p.recent.lookup(id)) {
                self.out.extend_from_slice(r);
                ctx.stats.rdma_retries.incr();
                from_cache = true;
            }
        }
        if !from_cache {
            run_frames(&self.input, &frames, &mut self.out, ctx, Some(self.mtu));
            if let (true, Some((id, _))) = (write, first) {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.recent.remember(id, &self.out);
                }
            }
        }
        if self.out.is_empty() {
            return; // quiet requests that succeeded: nothing to say
        }
        let Some(dest) = self.peers.get(&key).map(|p| p.dest.clone()) else { return };
        for chunk in reply_chunks(&self.out, self.mtu) {
            let Some(s) = self.send_slot() else {
                ctx.stats.rdma_drops.incr();
                return;
            };
            self.send.write(s * self.mtu, &self.out[chunk.clone()]);
            let sent = self
                .send
                .slice(s * self.mtu, chunk.len())
                .and_then(|local| self.qp.post_send(s as u64, local, &dest, true));
            match sent {
                Ok(()) => ctx.stats.rdma_replies.incr(),
                Err(_) => {
                    self.free_send.push(s);
                    ctx.stats.rdma_drops.incr();
                }
            }
        }
    }

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

    fn on_rc(&mut self, wc: &Wc, ctx: &Ctx) {
        if !self.rc.contains_key(&wc.qp_num()) {
            self.take_inbox();
        }
        let Some(c) = self.rc.get(&wc.qp_num()) else { return };
        if !wc.is_ok() {
            // Flushed or failed: the client went away; its side channel says so too.
            return;
        }
        ctx.stats.rdma_requests.incr();
        let len = (wc.byte_len() as usize).min(c.recv.len());
        self.input.resize(len, 0);
        c.recv.read(0, &mut self.input);
        // Re-post first, so the client's next request always finds a buffer.
        if let Ok(s) = c.recv.slice(0, c.recv.len()) {
            let _ = c.qp.post_recv(0, s);
        }
        self.out.clear();
        match split_frames(&self.input) {
            Some(frames) => run_frames(&self.input, &frames, &mut self.out, ctx, None),
            None => {
                ctx.stats.rdma_drops.incr();
                return;
            }
        }
        if self.out.len() > c.send.len() {
            // Only a multi-get of several huge values gets here: say so per request.
            self.out.clear();
            if let Some(frames) = split_frames(&self.input) {
                for f in frames {
                    let req = &self.input[f];
                    if let Some(h) = RequestHeader::parse(req) {
                        write_response_header(
                            &mut self.out,
                            h.opcode,
                            crate::protocol::binary::status::E2BIG,
                            0,
                            0,
                            0,
                            h.opaque,
                            0,
                        );
                    }
                }
            }
        }
        c.send.write(0, &self.out);
        let sent = c.send.slice(0, self.out.len()).and_then(|l| c.qp.post_send(1, l, true));
        match sent {
            Ok(()) => ctx.stats.rdma_replies.incr(),
            Err(_) => ctx.stats.rdma_drops.incr(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::binary::header::RESPONSE_MAGIC;
    use crate::protocol::binary::opcode;

    fn req(op: u8, key: &[u8], extras: &[u8], value: &[u8], opaque: u32) -> Vec<u8> {
        let mut v = vec![REQUEST_MAGIC, op];
        v.extend_from_slice(&(key.len() as u16).to_be_bytes());
        v.push(extras.len() as u8);
        v.push(0);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
        v.extend_from_slice(&opaque.to_be_bytes());
        v.extend_from_slice(&0u64.to_be_bytes());
        v.extend_from_slice(extras);
        v.extend_from_slice(key);
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn framing_of_whole_datagrams() {
        let a = req(opcode::GETKQ, b"a", &[], &[], 1);
        let b = req(opcode::SET, b"k", &[0; 8], b"value", 1);
        let n = req(opcode::NOOP, b"", &[], &[], 1);
        let d = [a.clone(), b.clone(), n.clone()].concat();
        let f = split_frames(&d).unwrap();
        assert_eq!(f, vec![0..a.len(), a.len()..a.len() + b.len(), a.len() + b.len()..d.len()]);
        // Truncated, trailing garbage, bad magic, lengths that disagree, empty.
        assert!(split_frames(&d[..d.len() - 1]).is_none());
        assert!(split_frames(&[d.clone(), vec![0x80]].concat()).is_none());
        let mut bad = a.clone();
        bad[0] = 0x81;
        assert!(split_frames(&bad).is_none());
        let mut bad = b.clone();
        bad[4] = 200; // extras longer than the body
        assert!(split_frames(&bad).is_none());
        assert!(split_frames(&[]).is_none());
        assert!(split_frames(b"get foo\r\n").is_none());
    }

    #[test]
    fn reply_chunks_keep_frames_whole() {
        let frame = |body: usize| {
            let mut o = Vec::new();
            write_response_header(&mut o, 0, 0, 0, 0, body as u32, 0, 0);
            o.resize(HEADER_LEN + body, 7);
            o
        };
        let out = [frame(100), frame(100), frame(500), frame(10)].concat();
        assert_eq!(out[0], RESPONSE_MAGIC);
        // A frame larger than the MTU ends the split (run_frames never makes one).
        assert_eq!(reply_chunks(&out, 300), vec![0..248]);
        assert_eq!(reply_chunks(&out, 1024), vec![0..out.len()]);
        let c = reply_chunks(&out, 600);
        assert_eq!(c, vec![0..248, 248..out.len()]);
        let total: usize = c.iter().map(|r| r.len()).sum();
        assert_eq!(total, out.len());
    }

    #[test]
    fn peer_key_from_roce_v2_ipv4_and_ib_grh() {
        let mut grh = [0u8; GRH_SIZE];
        grh[20] = 0x45;
        grh[32..36].copy_from_slice(&[10, 0, 2, 15]);
        grh[28] = 0x99; // TTL/checksum bytes must not matter
        let (gid, qpn) = peer_key(&grh, 17);
        assert_eq!(qpn, 17);
        assert_eq!(&gid[10..], &[0xff, 0xff, 10, 0, 2, 15]);
        let mut ib = [0u8; GRH_SIZE];
        ib[0] = 0x60;
        ib[8..24].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(peer_key(&ib, 3).0, [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
