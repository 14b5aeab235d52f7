//! The `verbs` transport: one RDMA Reliable Connection per replica.
//!
//! The primary registers its log region once, REMOTE_READ only. A replica
//! dials the primary's TCP side channel (`rdma://HOST:PORT`):
//!
//! ```text
//!  both                 auth::client_handshake / server_handshake (the
//!                       token's mutual challenge-response; nothing below
//!                       is sent to a peer that fails it)
//!  replica -> primary   "LMRP" version(2) replica-id(u64)
//!  primary -> replica   status(u8: 0 ok, 1 no free slot) slot(u32)
//!                       its slot: addr(u64) rkey(u32) len(u64)
//!  both                 rdma::connect::handshake_rc (QP numbers, GIDs, the
//!                       log region's addr/rkey/len), then a barrier
//! ```
//! The slot is claimed only after the token's handshake, and given back if
//! the rest of the setup fails. Each connection gets a memory region of its
//! own covering exactly its 64-byte slot (LOCAL_WRITE | REMOTE_WRITE),
//! registered when the slot is assigned and deregistered when the connection
//! ends: a replica's WRITE anywhere else (another slot, the control block,
//! the log) is a remote access error on its QP and changes nothing. Why
//! memory regions rather than type-2 memory windows bound to each QP: one
//! `ibv_reg_mr` per connection, no bind work request, and no MW support
//! needed from the device; the cost is that an rkey is valid on any QP of the
//! protection domain, so isolation rests on rkeys a replica is never told
//! (each slot's key dies with its connection). After setup the primary's CPU
//! does nothing for the replica: it READs the control block and the log, and
//! WRITEs its slot. The TCP stream stays open only so the primary notices
//! the replica leaving (and drops its QP and slot region); a thread per
//! replica blocks on it, at most one per slot.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shm::{claim_slot_at, now_us, release_slot_at};
use super::transport::{NextRead, Progress, Transport};
use crate::auth::{self, Admitted, AuthToken, Bounded, Channel, Limits};
use crate::error::{Context as _, Error, Result};
use crate::log::control::{self, ControlSnapshot, MAX_REPLICAS, SLOT_LEN};
use crate::memory::region::Region;
use crate::rdma::{
    connect::handshake_rc_over, Access, Buffer, CompletionQueue, Context, MemoryRegion, ProtectionDomain, QpCaps,
    RcOptions, RcQp, RegionRange, RemoteMemory, Wc,
};

const MAGIC: &[u8; 4] = b"LMRP";
/// 2: the slot record names the replica's own slot region (1 named the area).
const VERSION: u8 = 2;
const SIDE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Replicas in their handshake at once (the rest wait in the TCP backlog
/// or are dropped); connected replicas are bounded by the slots.
const MAX_HANDSHAKES: usize = 8;
/// A completion that takes longer than this means the peer is gone (the QP's
/// own retry timeout normally reports that first, as an error completion).
const WC_TIMEOUT: Duration = Duration::from_secs(15);
/// Polls of the CQ before blocking on its completion channel. A counted
/// busy poll, not a crossbeam `Backoff`: its snooze gives up after about ten
/// polls (microseconds), which would send every READ of a large stretch
/// through the completion channel's interrupt and wake-up, and its spin
/// stretches the gap between polls to 64 pauses (~3 us), added to each
/// completion's detection; either slows catch-up.
const SPIN_POLLS: u32 = 20_000;
/// Bytes of a slot a replica writes (applied, epoch, updated, id, caught up).
const PROGRESS_LEN: usize = 40;

/// The primary's verbs resources, shared by every replica's QP.
struct PrimaryRdma {
    ctx: Context,
    pd: ProtectionDomain,
    cq: CompletionQueue,
    log_mr: MemoryRegion<Arc<Region>>,
    region: Arc<Region>,
}

/// Accept replicas on `host:port` (the TCP side channel) until the process
/// ends; only peers that prove they hold `token` (or, with no token, any
/// peer without one) get further. Binds now, so a bad address is an error
/// at start.
pub fn listen(region: Arc<Region>, host: &str, port: u16, token: Option<AuthToken>, verbose: bool) -> Result<()> {
    let l =
        TcpListener::bind((host, port)).with_context(|| format!("rdma replication side channel on {host}:{port}"))?;
    let ctx = Context::open(None).context("opening the RDMA device for replication")?;
    let pd = ctx.alloc_pd()?;
    let cq = ctx.create_cq(64, false)?;
    // Registered once, for the life of the process; never remotely writable.
    let log_mr = pd.register(region.clone(), Access::REMOTE_READ).context("registering the log region")?;
    let rdma = Arc::new(PrimaryRdma { ctx, pd, cq, log_mr, region });
    // The per-read bound allows for a replica opening its device (seconds
    // under emulation: 10 s was seen to drop replicas of a busy VM).
    let limits = Limits { max_handshakes: MAX_HANDSHAKES, io_timeout: 3 * SIDE_TIMEOUT, deadline: 4 * SIDE_TIMEOUT };
    auth::spawn(l, "rdma-replication", Channel::Replication, token, limits, verbose, move |adm| {
        serve_replica(&rdma, adm)
    })
}

/// One authenticated replica: assign a slot, connect its QP, hold both while
/// it stays connected.
fn serve_replica(rdma: &PrimaryRdma, mut adm: Admitted) -> Result<()> {
    let mut hello = [0u8; 13];
    adm.bounded().read_exact(&mut hello).context("reading the replica's hello")?;
    if &hello[0..4] != MAGIC || hello[4] != VERSION {
        crate::bail!("not a logmemcached replica (or another version)");
    }
    let id = u64::from_le_bytes(hello[5..13].try_into().unwrap_or([0; 8]));
    if id == 0 {
        crate::bail!("replica id 0 is reserved");
    }
    let Some(slot) = claim_slot_at(&rdma.region, control::OFF_SLOTS, id) else {
        let mut reply = [0u8; 25];
        reply[0] = 1;
        let _ = adm.bounded().write_all(&reply);
        crate::bail!("no free progress slot");
    };
    let held = setup_replica(rdma, &mut adm, slot);
    let (_qp, _slot_mr) = match held {
        Ok(h) => h,
        Err(e) => {
            // Nothing is kept for a replica that did not finish connecting.
            release_slot_at(&rdma.region, control::OFF_SLOTS, slot, id);
            // Said even without -v: the peer proved the token, so this is
            // one of ours failing, not a stranger's noise.
            crate::log_warn!("rdma replica {} (slot {slot}): setup failed: {e}", adm.peer);
            return Err(e);
        }
    };
    adm.handshake_done();
    let _ = &rdma.ctx;
    // Hold the QP and the slot's region while the replica stays connected.
    adm.stream.set_read_timeout(None)?;
    let mut b = [0u8; 1];
    while matches!(adm.stream.read(&mut b), Ok(n) if n > 0) {}
    Ok(())
}

/// Register `slot`'s region, tell the replica about it, connect the QP.
fn setup_replica(rdma: &PrimaryRdma, adm: &mut Admitted, slot: usize) -> Result<(RcQp, MemoryRegion<RegionRange>)> {
    let range = RegionRange::new(rdma.region.clone(), control::slot_offset(slot), SLOT_LEN)?;
    let slot_mr = rdma
        .pd
        .register(range, Access::LOCAL_WRITE | Access::REMOTE_WRITE)
        .with_context(|| format!("registering progress slot {slot}"))?;
    let mut reply = [0u8; 25];
    reply[1..5].copy_from_slice(&(slot as u32).to_le_bytes());
    let sm = slot_mr.remote();
    reply[5..13].copy_from_slice(&sm.addr.to_le_bytes());
    reply[13..17].copy_from_slice(&sm.rkey.to_le_bytes());
    reply[17..25].copy_from_slice(&sm.len.to_le_bytes());
    adm.bounded().write_all(&reply).context("sending the slot assignment")?;
    let opts = RcOptions { access: Access::REMOTE_READ | Access::REMOTE_WRITE, ..RcOptions::default() };
    let qp = rdma.pd.create_rc_qp(&rdma.cq, &rdma.cq, &QpCaps::default(), &opts)?;
    let qp = handshake_rc_over(&mut adm.bounded(), qp, Some(rdma.log_mr.remote()))?;
    Ok((qp, slot_mr))
}

/// A replica's end of the RC connection.
pub struct VerbsTransport {
    _stream: TcpStream,
    pd: ProtectionDomain,
    cq: CompletionQueue,
    qp: RcQp,
    staging: MemoryRegion<Buffer>,
    progress: MemoryRegion<Buffer>,
    out: Vec<u8>,
    log: RemoteMemory,
    /// Our own slot's region on the primary (exactly the slot).
    slot_mem: RemoteMemory,
    slot: usize,
    id: u64,
    desc: String,
    wr: u64,
    /// A read-ahead in flight: (wr_id, region offset, length, completed).
    ahead: Option<(u64, usize, usize, bool)>,
}

impl VerbsTransport {
    /// Dial `host:port`, prove we hold `token` and check the primary does
    /// (before we take anything from it), claim a slot, connect the QP.
    pub fn connect(host: &str, port: u16, id: u64, token: Option<&AuthToken>) -> Result<VerbsTransport> {
        let desc = format!("rdma://{host}:{port}");
        // Bounded: a dead host sends no RST, and an unbounded connect would
        // hold up promotion and shutdown behind it.
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .with_context(|| format!("resolving {desc}"))?
            .next()
            .ok_or_else(|| Error::new(format!("{desc} resolves to no address")))?;
        // Dial first (a primary that is down fails this at once, before any
        // device work), then set the device up before the handshake starts:
        // opening it and registering buffers can take seconds under
        // emulation, and the primary should not wait on that mid-handshake.
        let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).with_context(|| format!("dialling {desc}"))?;
        let ctx = Context::open(None).context("opening the RDMA device")?;
        let pd = ctx.alloc_pd()?;
        let cq = ctx.create_cq(16, true)?;
        let staging = pd.register_buffer(4 << 20, Access::LOCAL_WRITE)?;
        let progress = pd.register_buffer(64, Access::LOCAL_WRITE)?;
        let qp =
            pd.create_rc_qp(&cq, &cq, &QpCaps::default(), &RcOptions { access: Access::NONE, ..RcOptions::default() })?;
        let _ = s.set_nodelay(true);
        let deadline = Instant::now() + 4 * SIDE_TIMEOUT;
        let mut b = Bounded::new(&s, deadline, 3 * SIDE_TIMEOUT);
        auth::client_handshake(&mut b, Channel::Replication, token).with_context(|| desc.clone())?;
        let mut hello = [0u8; 13];
        hello[0..4].copy_from_slice(MAGIC);
        hello[4] = VERSION;
        hello[5..13].copy_from_slice(&id.to_le_bytes());
        b.write_all(&hello)?;
        let mut r = [0u8; 25];
        b.read_exact(&mut r).context("reading the primary's slot assignment")?;
        if r[0] != 0 {
            crate::bail!("{desc} has no free progress slot ({MAX_REPLICAS} replicas at most)");
        }
        let le32 = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or([0; 4]));
        let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let slot = le32(&r[1..5]) as usize;
        let slot_mem = RemoteMemory { addr: le64(&r[5..13]), rkey: le32(&r[13..17]), len: le64(&r[17..25]) };
        if slot >= MAX_REPLICAS || slot_mem.len < PROGRESS_LEN as u64 {
            crate::bail!("{desc} sent a bad slot assignment (slot {slot}, {} bytes)", slot_mem.len);
        }
        let qp = handshake_rc_over(&mut b, qp, None)?;
        let log = qp.remote().mem;
        Ok(VerbsTransport {
            _stream: s,
            pd,
            cq,
            qp,
            staging,
            progress,
            out: Vec::new(),
            log,
            slot_mem,
            slot,
            id,
            desc,
            wr: 0,
            ahead: None,
        })
    }

    /// The primary's log region as it advertised it (REMOTE_READ).
    pub fn log_memory(&self) -> RemoteMemory {
        self.log
    }

    /// Our slot's region on the primary (the only bytes we may WRITE).
    pub fn slot_memory(&self) -> RemoteMemory {
        self.slot_mem
    }

    /// A signalled RDMA WRITE of `bytes` at `at` (any address and rkey),
    /// waited for. Not used by the replica loop: tests use it to show what
    /// the primary lets a replica write (its slot, nothing else).
    pub fn probe_write(&mut self, at: RemoteMemory, bytes: &[u8]) -> Result<()> {
        let n = bytes.len().min(self.progress.len());
        self.progress.write(0, &bytes[..n]);
        self.wr += 1;
        let wr = self.wr;
        self.qp.post_write(wr, self.progress.slice(0, n)?, at.slice(0, n)?, true)?;
        self.complete(wr)
    }

    /// Wait for work request `wr`: spin on the CQ first (an RDMA READ
    /// completes in microseconds), then block on its completion channel. The
    /// read-ahead's completion may come first; it is noted, not lost.
    fn complete(&mut self, wr: u64) -> Result<()> {
        let deadline = Instant::now() + WC_TIMEOUT;
        let mut spins = 0u32;
        loop {
            let mut wc = [Wc::default()];
            let n = if spins < SPIN_POLLS {
                spins += 1;
                self.cq.poll(&mut wc)?
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    crate::bail!("{}: no completion within {WC_TIMEOUT:?}", self.desc);
                }
                self.cq.wait(&mut wc, Some(left))?
            };
            if n == 0 {
                std::hint::spin_loop();
                continue;
            }
            wc[0].ok().map_err(|e| Error::from(e).context(format!("{}: work request failed", self.desc)))?;
            let got = wc[0].wr_id();
            if got == wr {
                return Ok(());
            }
            match &mut self.ahead {
                Some((a, _, _, done)) if *a == got => *done = true,
                _ => crate::bail!("{}: completion for request {got}, expected {wr}", self.desc),
            }
        }
    }

    /// Post a READ of `len` bytes at region offset `off` into the staging buffer.
    fn post_read(&mut self, off: usize, len: usize) -> Result<u64> {
        if len > self.staging.len() {
            // Registered once per size we ever need: grows to the largest record.
            self.staging = self.pd.register_buffer(len.next_power_of_two(), Access::LOCAL_WRITE)?;
        }
        self.wr += 1;
        let remote = self.log.slice(off as u64, len)?;
        self.qp.post_read(self.wr, self.staging.slice(0, len)?, remote, true)?;
        Ok(self.wr)
    }

    /// Collect the read-ahead if one is in flight; true if it was `(off, len)`.
    fn settle_ahead(&mut self, off: usize, len: usize) -> Result<bool> {
        let Some((wr, aoff, alen, done)) = self.ahead else { return Ok(false) };
        if !done {
            self.complete(wr)?;
        }
        self.ahead = None;
        Ok(aoff == off && alen == len)
    }
}

impl Transport for VerbsTransport {
    fn control(&mut self) -> Result<ControlSnapshot> {
        let b = self.read(0, control::HEADER_FETCH_LEN)?;
        ControlSnapshot::decode(b).ok_or_else(|| Error::new("short control block read"))
    }

    fn read(&mut self, off: usize, len: usize) -> Result<&[u8]> {
        self.read_ahead(off, len, &mut |_| None)
    }

    fn read_ahead(&mut self, off: usize, len: usize, next: NextRead<'_>) -> Result<&[u8]> {
        if !self.settle_ahead(off, len)? {
            let wr = self.post_read(off, len)?;
            self.complete(wr)?;
        }
        // Copy out, so the staging buffer is free for the next READ while the
        // caller works on these bytes.
        self.out.resize(len, 0);
        self.staging.read(0, &mut self.out[..len]);
        if let Some((noff, nlen)) = next(&self.out[..len]) {
            let wr = self.post_read(noff, nlen)?;
            self.ahead = Some((wr, noff, nlen, false));
        }
        Ok(&self.out[..len])
    }

    fn report(&mut self, p: &Progress) -> Result<()> {
        let mut b = [0u8; PROGRESS_LEN];
        b[control::SLOT_APPLIED..control::SLOT_APPLIED + 8].copy_from_slice(&p.applied.to_le_bytes());
        b[control::SLOT_EPOCH..control::SLOT_EPOCH + 8].copy_from_slice(&p.epoch.to_le_bytes());
        b[control::SLOT_UPDATED_US..control::SLOT_UPDATED_US + 8].copy_from_slice(&now_us().to_le_bytes());
        b[control::SLOT_REPLICA_ID..control::SLOT_REPLICA_ID + 8].copy_from_slice(&self.id.to_le_bytes());
        b[control::SLOT_CAUGHT_UP_US..control::SLOT_CAUGHT_UP_US + 8].copy_from_slice(&p.caught_up_us.to_le_bytes());
        self.progress.write(0, &b);
        self.wr += 1;
        let remote = self.slot_mem.slice(0, b.len())?;
        // Unsignalled, not waited for: the replica need not stall a round
        // trip on its own bookkeeping. On an RC QP work completes in order, so
        // the next signalled READ's completion also retires this WRITE (and
        // frees its send-queue slot); a failure breaks the QP, which that READ
        // then reports. The staging of `progress` cannot be overwritten early:
        // the next report comes after at least one completed READ.
        self.qp.post_write(self.wr, self.progress.slice(0, b.len())?, remote, false)?;
        Ok(())
    }

    fn slot(&self) -> usize {
        self.slot
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }
}
