//! Queue pairs: RC (INIT/RTR/RTS with the GRH on RoCE) and UD with address
//! handles; posting READ / WRITE / SEND / RECV.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use rdma_sys::*;

use crate::bail;
use crate::error::{Context as _, Error, Result};

use super::connect::{RcEndpointInfo, UdEndpointInfo};
use super::cq::{CompletionQueue, CqInner, Wc};
use super::device::{Gid, LinkLayer, Mtu};
use super::mr::{Access, LocalSlice, MemoryRegion, PdInner, ProtectionDomain, RegisterableMemory, RemoteSlice};

/// Bytes at the front of every UD receive buffer where the GRH (or, for RoCE
/// v2 over IPv4, the IPv4 header in its last 20 bytes) lands.
pub const GRH_SIZE: usize = 40;

/// Queue sizes of a QP.
#[derive(Clone, Copy, Debug)]
pub struct QpCaps {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    /// SENDs/WRITEs up to this many bytes are posted inline (copied at post time).
    pub max_inline_data: u32,
}

impl Default for QpCaps {
    fn default() -> QpCaps {
        QpCaps { max_send_wr: 128, max_recv_wr: 128, max_send_sge: 1, max_recv_sge: 1, max_inline_data: 0 }
    }
}

/// The state of a QP (`ibv_qp_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QpState {
    Reset,
    Init,
    Rtr,
    Rts,
    Sqd,
    Sqe,
    Err,
    Unknown(u32),
}

impl QpState {
    fn from_raw(v: u32) -> QpState {
        use ibv_qp_state::*;
        match v {
            IBV_QPS_RESET => QpState::Reset,
            IBV_QPS_INIT => QpState::Init,
            IBV_QPS_RTR => QpState::Rtr,
            IBV_QPS_RTS => QpState::Rts,
            IBV_QPS_SQD => QpState::Sqd,
            IBV_QPS_SQE => QpState::Sqe,
            IBV_QPS_ERR => QpState::Err,
            o => QpState::Unknown(o),
        }
    }
}

struct QpInner {
    qp: *mut ibv_qp,
    qpn: u32,
    max_inline: u32,
    pd: ProtectionDomain,
    _send_cq: Arc<CqInner>,
    _recv_cq: Arc<CqInner>,
}

// SAFETY: ibv_post_send/recv and ibv_modify_qp are thread-safe in rdma-core
// providers (they lock the queues); the pointer is only passed to them.
unsafe impl Send for QpInner {}
// SAFETY: as above.
unsafe impl Sync for QpInner {}

impl Drop for QpInner {
    fn drop(&mut self) {
        // SAFETY: destroyed exactly once, while its PD and CQs are alive (we
        // hold Arcs to them; they are dropped after this body runs).
        unsafe { ibv_destroy_qp(self.qp) };
    }
}

fn errno(rc: libc::c_int) -> std::io::Error {
    if rc > 0 {
        std::io::Error::from_raw_os_error(rc)
    } else if rc < 0 {
        std::io::Error::from_raw_os_error(-rc)
    } else {
        std::io::Error::last_os_error()
    }
}

fn random_psn() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    (h.finish() as u32) & 0x00ff_ffff
}

impl QpInner {
    fn create(
        pd: &ProtectionDomain,
        send_cq: &CompletionQueue,
        recv_cq: &CompletionQueue,
        caps: &QpCaps,
        qp_type: ibv_qp_type::Type,
    ) -> Result<QpInner> {
        // SAFETY: ibv_qp_init_attr is plain data; zero is valid (no SRQ, no context).
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = send_cq.inner.cq;
        init.recv_cq = recv_cq.inner.cq;
        init.cap = ibv_qp_cap {
            max_send_wr: caps.max_send_wr,
            max_recv_wr: caps.max_recv_wr,
            max_send_sge: caps.max_send_sge,
            max_recv_sge: caps.max_recv_sge,
            max_inline_data: caps.max_inline_data,
        };
        init.qp_type = qp_type;
        init.sq_sig_all = 0;
        // SAFETY: live PD and CQs of the same context; `init` fully initialised.
        let qp = unsafe { ibv_create_qp(pd.inner.pd, &mut init) };
        if qp.is_null() {
            bail!("ibv_create_qp({caps:?}): {}", std::io::Error::last_os_error());
        }
        // SAFETY: valid QP; qp_num is a plain field. `init.cap` now holds the
        // actual capacities (the provider may round up).
        let qpn = unsafe { (*qp).qp_num };
        Ok(QpInner {
            qp,
            qpn,
            max_inline: init.cap.max_inline_data,
            pd: pd.clone(),
            _send_cq: send_cq.inner.clone(),
            _recv_cq: recv_cq.inner.clone(),
        })
    }

    fn modify(&self, attr: &mut ibv_qp_attr, mask: ibv_qp_attr_mask, what: &str) -> Result<()> {
        // SAFETY: valid QP; `attr` initialised for every field named in `mask`.
        let rc = unsafe { ibv_modify_qp(self.qp, attr, mask.0 as libc::c_int) };
        if rc != 0 {
            bail!("ibv_modify_qp(QP {} to {what}): {}", self.qpn, errno(rc));
        }
        Ok(())
    }

    fn state(&self) -> Result<QpState> {
        // SAFETY: plain data, zero valid.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        // SAFETY: plain data, zero valid.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        // SAFETY: valid QP and out-pointers.
        let rc =
            unsafe { ibv_query_qp(self.qp, &mut attr, ibv_qp_attr_mask::IBV_QP_STATE.0 as libc::c_int, &mut init) };
        if rc != 0 {
            bail!("ibv_query_qp(QP {}): {}", self.qpn, errno(rc));
        }
        Ok(QpState::from_raw(attr.qp_state))
    }

    /// Post one send-queue work request. `remote` for READ/WRITE, `ud` for UD SEND.
    fn post_send(
        &self,
        wr_id: u64,
        opcode: ibv_wr_opcode::Type,
        local: &LocalSlice<'_>,
        remote: Option<&RemoteSlice>,
        ud: Option<&UdDest>,
        signaled: bool,
    ) -> Result<()> {
        let mut sge = local.sge();
        // SAFETY: ibv_send_wr is plain data (pointers, integers, unions of them); zero is valid.
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.next = std::ptr::null_mut();
        wr.sg_list = &mut sge;
        wr.num_sge = if local.is_empty() { 0 } else { 1 };
        wr.opcode = opcode;
        let mut flags = 0;
        if signaled {
            flags |= ibv_send_flags::IBV_SEND_SIGNALED.0;
        }
        if opcode != ibv_wr_opcode::IBV_WR_RDMA_READ && !local.is_empty() && local.len <= self.max_inline {
            flags |= ibv_send_flags::IBV_SEND_INLINE.0;
        }
        wr.send_flags = flags;
        if let Some(r) = remote {
            wr.wr.rdma = rdma_t { remote_addr: r.addr, rkey: r.rkey };
        }
        if let Some(d) = ud {
            wr.wr.ud = ud_t { ah: d.ah.0.ah, remote_qpn: d.qpn, remote_qkey: d.qkey };
        }
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: valid QP; `wr` and `sge` live across the call (the provider
        // copies them into the send queue); the lkey/addr come from a live MR
        // (the LocalSlice borrows it); an AH named by `wr.ud` is kept alive by `d`.
        let rc = unsafe { ibv_post_send(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            bail!("ibv_post_send(QP {}, wr_id {wr_id}): {}", self.qpn, errno(rc));
        }
        Ok(())
    }

    fn post_recv(&self, wr_id: u64, local: &LocalSlice<'_>) -> Result<()> {
        let mut sge = local.sge();
        let mut wr = ibv_recv_wr { wr_id, next: std::ptr::null_mut(), sg_list: &mut sge, num_sge: 1 };
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: valid QP; `wr`/`sge` live across the call; lkey from a live MR.
        // The receive buffer must stay registered until the RECV completes; if
        // the MR is dropped first the completion is a protection error.
        let rc = unsafe { ibv_post_recv(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            bail!("ibv_post_recv(QP {}, wr_id {wr_id}): {}", self.qpn, errno(rc));
        }
        Ok(())
    }
}

/// How an RC QP connects.
#[derive(Clone, Debug)]
pub struct RcOptions {
    /// Port number (1-based).
    pub port: u8,
    /// Source GID index; None = [`Context::default_gid_index`](super::Context::default_gid_index).
    pub gid_index: Option<u8>,
    /// Cap on the path MTU (the smaller of both ports' active MTU is used).
    pub mtu: Option<Mtu>,
    /// What the PEER may do to our memory through this QP.
    pub access: Access,
    /// Local ACK timeout: 4.096 us * 2^timeout (14 = 67 ms).
    pub timeout: u8,
    /// Transport retries before IBV_WC_RETRY_EXC_ERR; must be < 7 (7 = forever on rxe).
    pub retry_cnt: u8,
    /// RNR retries (7 = forever).
    pub rnr_retry: u8,
    /// Minimum RNR NAK timer we ask a sender to wait (12 = 0.64 ms).
    pub min_rnr_timer: u8,
    /// Outstanding READs/atomics we initiate; None = device maximum (capped at 16).
    pub max_rd_atomic: Option<u8>,
    /// Initial send PSN; None = random.
    pub psn: Option<u32>,
}

impl Default for RcOptions {
    fn default() -> RcOptions {
        RcOptions {
            port: 1,
            gid_index: None,
            mtu: None,
            access: Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE,
            timeout: 14,
            retry_cnt: 3,
            rnr_retry: 6,
            min_rnr_timer: 12,
            max_rd_atomic: None,
            psn: None,
        }
    }
}

impl RcOptions {
    fn validate(&self) -> Result<()> {
        if self.retry_cnt >= 7 {
            bail!("retry_cnt {} would retry forever (rxe and the spec treat 7 as infinite); use 0..=6", self.retry_cnt);
        }
        if self.rnr_retry > 7 || self.timeout > 31 || self.min_rnr_timer > 31 {
            bail!("rnr_retry must be <= 7, timeout and min_rnr_timer <= 31: {self:?}");
        }
        if self.port == 0 {
            bail!("port numbers start at 1");
        }
        Ok(())
    }
}

/// Resolved addressing of our side of a QP.
#[derive(Clone, Copy, Debug)]
struct PortInfo {
    port: u8,
    gid_index: u8,
    gid: Gid,
    lid: u16,
    mtu: Mtu,
    link_layer: LinkLayer,
}

fn port_info(pd: &ProtectionDomain, port: u8, gid_index: Option<u8>) -> Result<PortInfo> {
    let ctx = pd.context();
    let attr = ctx.query_port(port)?;
    if !attr.is_active() {
        bail!("{} port {port} is {} (not active)", ctx.name(), attr.state_name());
    }
    let gid_index = match gid_index {
        Some(i) => i,
        None => ctx.default_gid_index(port)?,
    };
    let gid = ctx.query_gid(port, gid_index)?;
    if attr.link_layer.needs_grh() && gid.is_zero() {
        bail!("{} port {port} GID index {gid_index} is empty; RoCE needs a populated GID", ctx.name());
    }
    Ok(PortInfo { port, gid_index, gid, lid: attr.lid, mtu: attr.active_mtu, link_layer: attr.link_layer })
}

fn ah_attr(local: &PortInfo, gid: Gid, lid: u16) -> ibv_ah_attr {
    let global = local.link_layer.needs_grh() || lid == 0;
    ibv_ah_attr {
        grh: ibv_global_route {
            dgid: gid.to_raw(),
            flow_label: 0,
            sgid_index: local.gid_index,
            hop_limit: if global { 64 } else { 0 },
            traffic_class: 0,
        },
        dlid: lid,
        sl: 0,
        src_path_bits: 0,
        static_rate: 0,
        is_global: u8::from(global),
        port_num: local.port,
    }
}

impl ProtectionDomain {
    /// A new RC QP, already in INIT (receives may be posted), waiting for the
    /// peer's [`RcEndpointInfo`] to [`connect`](PreparedRcQp::connect).
    pub fn create_rc_qp(
        &self,
        send_cq: &CompletionQueue,
        recv_cq: &CompletionQueue,
        caps: &QpCaps,
        opts: &RcOptions,
    ) -> Result<PreparedRcQp> {
        opts.validate()?;
        let port = port_info(self, opts.port, opts.gid_index)?;
        let dev = self.context().query_device()?;
        let qp = QpInner::create(self, send_cq, recv_cq, caps, ibv_qp_type::IBV_QPT_RC)?;
        // SAFETY: plain data, zero valid.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = opts.port;
        a.qp_access_flags = opts.access.0;
        qp.modify(
            &mut a,
            ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
                | ibv_qp_attr_mask::IBV_QP_PORT
                | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS,
            "INIT",
        )?;
        let psn = opts.psn.unwrap_or_else(random_psn) & 0x00ff_ffff;
        let rd_init = dev.max_qp_init_rd_atom.clamp(1, 255) as u8;
        let rd_dest = dev.max_qp_rd_atom.clamp(1, 255) as u8;
        Ok(PreparedRcQp {
            qp,
            port,
            psn,
            opts: opts.clone(),
            max_rd_atomic: opts.max_rd_atomic.unwrap_or(16).min(rd_init).max(1),
            max_dest_rd_atomic: rd_dest,
        })
    }

    /// A UD QP, ready to send and receive (INIT, RTR, RTS done).
    pub fn create_ud_qp(
        &self,
        send_cq: &CompletionQueue,
        recv_cq: &CompletionQueue,
        caps: &QpCaps,
        opts: &UdOptions,
    ) -> Result<UdQp> {
        let port = port_info(self, opts.port, opts.gid_index)?;
        let qp = QpInner::create(self, send_cq, recv_cq, caps, ibv_qp_type::IBV_QPT_UD)?;
        // SAFETY: plain data, zero valid.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = opts.port;
        a.qkey = opts.qkey;
        qp.modify(
            &mut a,
            ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
                | ibv_qp_attr_mask::IBV_QP_PORT
                | ibv_qp_attr_mask::IBV_QP_QKEY,
            "INIT",
        )?;
        a.qp_state = ibv_qp_state::IBV_QPS_RTR;
        qp.modify(&mut a, ibv_qp_attr_mask::IBV_QP_STATE, "RTR")?;
        a.qp_state = ibv_qp_state::IBV_QPS_RTS;
        a.sq_psn = random_psn();
        qp.modify(&mut a, ibv_qp_attr_mask::IBV_QP_STATE | ibv_qp_attr_mask::IBV_QP_SQ_PSN, "RTS")?;
        Ok(UdQp { qp, port, qkey: opts.qkey })
    }
}

/// An RC QP in INIT: tell the peer [`endpoint`](Self::endpoint), then
/// [`connect`](Self::connect) with theirs.
pub struct PreparedRcQp {
    qp: QpInner,
    port: PortInfo,
    psn: u32,
    opts: RcOptions,
    max_rd_atomic: u8,
    max_dest_rd_atomic: u8,
}

impl PreparedRcQp {
    pub fn qpn(&self) -> u32 {
        self.qp.qpn
    }
    pub fn gid_index(&self) -> u8 {
        self.port.gid_index
    }
    /// Our side of the connection (add `mem` with [`RcEndpointInfo::with_memory`]).
    pub fn endpoint(&self) -> RcEndpointInfo {
        RcEndpointInfo {
            gid: self.port.gid,
            lid: self.port.lid,
            qpn: self.qp.qpn,
            psn: self.psn,
            mtu: self.port.mtu,
            mem: Default::default(),
        }
    }
    /// Receives may be posted before connecting (so the peer's first SEND finds one).
    pub fn post_recv(&self, wr_id: u64, local: LocalSlice<'_>) -> Result<()> {
        self.qp.post_recv(wr_id, &local)
    }
    /// INIT -> RTR -> RTS towards `remote`.
    pub fn connect(self, remote: &RcEndpointInfo) -> Result<RcQp> {
        let mut mtu = self.port.mtu.min(remote.mtu);
        if let Some(cap) = self.opts.mtu {
            mtu = mtu.min(cap);
        }
        if mtu.bytes().is_none() {
            bail!("no common path MTU (local {}, remote {})", self.port.mtu, remote.mtu);
        }
        // SAFETY: plain data, zero valid.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = mtu.0;
        a.dest_qp_num = remote.qpn;
        a.rq_psn = remote.psn;
        a.max_dest_rd_atomic = self.max_dest_rd_atomic;
        a.min_rnr_timer = self.opts.min_rnr_timer;
        a.ah_attr = ah_attr(&self.port, remote.gid, remote.lid);
        self.qp
            .modify(
                &mut a,
                ibv_qp_attr_mask::IBV_QP_STATE
                    | ibv_qp_attr_mask::IBV_QP_AV
                    | ibv_qp_attr_mask::IBV_QP_PATH_MTU
                    | ibv_qp_attr_mask::IBV_QP_DEST_QPN
                    | ibv_qp_attr_mask::IBV_QP_RQ_PSN
                    | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
                    | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER,
                "RTR",
            )
            .with_context(|| format!("connecting to QP {} at {}", remote.qpn, remote.gid))?;
        a.qp_state = ibv_qp_state::IBV_QPS_RTS;
        a.timeout = self.opts.timeout;
        a.retry_cnt = self.opts.retry_cnt;
        a.rnr_retry = self.opts.rnr_retry;
        a.sq_psn = self.psn;
        a.max_rd_atomic = self.max_rd_atomic;
        self.qp.modify(
            &mut a,
            ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_TIMEOUT
                | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
                | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
                | ibv_qp_attr_mask::IBV_QP_SQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC,
            "RTS",
        )?;
        Ok(RcQp { qp: self.qp, remote: *remote, mtu, max_rd_atomic: self.max_rd_atomic })
    }
}

/// A connected RC QP.
///
/// Posting is thread-safe. An unsignaled work request produces no completion
/// unless it fails; signal at least every `max_send_wr`-th one so the send
/// queue drains. Memory named by a work request must stay registered until it
/// completes (the MR borrow ends with the post call: dropping the MR early turns
/// the request into a protection-error completion, never a stray write).
pub struct RcQp {
    qp: QpInner,
    remote: RcEndpointInfo,
    mtu: Mtu,
    max_rd_atomic: u8,
}

impl RcQp {
    pub fn qpn(&self) -> u32 {
        self.qp.qpn
    }
    /// The peer's endpoint record (its QPN, GID and advertised memory).
    pub fn remote(&self) -> &RcEndpointInfo {
        &self.remote
    }
    pub fn path_mtu(&self) -> Mtu {
        self.mtu
    }
    /// How many READs may be outstanding at once.
    pub fn max_rd_atomic(&self) -> u8 {
        self.max_rd_atomic
    }
    pub fn state(&self) -> Result<QpState> {
        self.qp.state()
    }
    /// One-sided READ of `remote` into `local` (`local.len()` bytes; the remote
    /// slice must be at least as long).
    pub fn post_read(&self, wr_id: u64, local: LocalSlice<'_>, remote: RemoteSlice, signaled: bool) -> Result<()> {
        if remote.len < local.len {
            bail!("READ of {} bytes from a {}-byte remote slice", local.len, remote.len);
        }
        self.qp.post_send(wr_id, ibv_wr_opcode::IBV_WR_RDMA_READ, &local, Some(&remote), None, signaled)
    }
    /// One-sided WRITE of `local` into `remote`.
    pub fn post_write(&self, wr_id: u64, local: LocalSlice<'_>, remote: RemoteSlice, signaled: bool) -> Result<()> {
        if remote.len < local.len {
            bail!("WRITE of {} bytes into a {}-byte remote slice", local.len, remote.len);
        }
        self.qp.post_send(wr_id, ibv_wr_opcode::IBV_WR_RDMA_WRITE, &local, Some(&remote), None, signaled)
    }
    /// Two-sided SEND (the peer must have a RECV posted).
    pub fn post_send(&self, wr_id: u64, local: LocalSlice<'_>, signaled: bool) -> Result<()> {
        self.qp.post_send(wr_id, ibv_wr_opcode::IBV_WR_SEND, &local, None, None, signaled)
    }
    pub fn post_recv(&self, wr_id: u64, local: LocalSlice<'_>) -> Result<()> {
        self.qp.post_recv(wr_id, &local)
    }
}

/// How a UD QP is set up.
#[derive(Clone, Debug)]
pub struct UdOptions {
    pub port: u8,
    pub gid_index: Option<u8>,
    /// Datagrams are accepted only with this qkey (high bit clear).
    pub qkey: u32,
}

impl Default for UdOptions {
    fn default() -> UdOptions {
        UdOptions { port: 1, gid_index: None, qkey: 0x1111_1111 }
    }
}

struct AhInner {
    ah: *mut ibv_ah,
    _pd: Arc<PdInner>,
}

// SAFETY: an AH is immutable after creation and only passed to post calls.
unsafe impl Send for AhInner {}
// SAFETY: as above.
unsafe impl Sync for AhInner {}

impl Drop for AhInner {
    fn drop(&mut self) {
        // SAFETY: destroyed once, while its PD is alive. Providers copy the
        // address vector into the WQE at post time, so sends in flight are fine.
        unsafe { ibv_destroy_ah(self.ah) };
    }
}

/// An address handle (route to one remote port). Cheap to clone; cache per peer.
#[derive(Clone)]
pub struct AddressHandle(Arc<AhInner>);

/// Where a UD datagram goes: address handle, QPN, qkey.
#[derive(Clone)]
pub struct UdDest {
    pub ah: AddressHandle,
    pub qpn: u32,
    pub qkey: u32,
}

/// Where a reply's address handle sends to: the sender's GID when the
/// datagram carried a GRH (always on RoCE), else its LID (InfiniBand within
/// a subnet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyRoute {
    Gid([u8; 16]),
    Lid(u16),
}

/// A UD QP in RTS. Receive buffers need [`GRH_SIZE`] bytes in front of the
/// payload; the largest payload is the path MTU ([`UdQp::max_payload`]).
pub struct UdQp {
    qp: QpInner,
    port: PortInfo,
    qkey: u32,
}

impl UdQp {
    pub fn qpn(&self) -> u32 {
        self.qp.qpn
    }
    pub fn qkey(&self) -> u32 {
        self.qkey
    }
    pub fn endpoint(&self) -> UdEndpointInfo {
        UdEndpointInfo { gid: self.port.gid, lid: self.port.lid, qpn: self.qp.qpn, qkey: self.qkey, mtu: self.port.mtu }
    }
    /// Largest datagram payload (the port's active MTU).
    pub fn max_payload(&self) -> usize {
        self.port.mtu.bytes().unwrap_or(256) as usize
    }
    pub fn state(&self) -> Result<QpState> {
        self.qp.state()
    }
    /// An address handle + QPN for sending to `peer`.
    pub fn dest(&self, peer: &UdEndpointInfo) -> Result<UdDest> {
        let mut attr = ah_attr(&self.port, peer.gid, peer.lid);
        // SAFETY: live PD; `attr` fully initialised.
        let ah = unsafe { ibv_create_ah(self.qp.pd.inner.pd, &mut attr) };
        if ah.is_null() {
            bail!("ibv_create_ah(to {} qpn {}): {}", peer.gid, peer.qpn, std::io::Error::last_os_error());
        }
        Ok(UdDest {
            ah: AddressHandle(Arc::new(AhInner { ah, _pd: self.qp.pd.inner.clone() })),
            qpn: peer.qpn,
            qkey: peer.qkey,
        })
    }
    /// The return address of a received datagram: `wc` is its completion and
    /// `buf_off` where its receive buffer (GRH first) starts in `mr`. The reply
    /// goes to the sender's QPN with our qkey (peers share one qkey).
    pub fn reply_dest<M: RegisterableMemory>(&self, wc: &Wc, mr: &MemoryRegion<M>, buf_off: usize) -> Result<UdDest> {
        self.reply_dest_route(wc, mr, buf_off).map(|(d, _)| d)
    }

    /// [`UdQp::reply_dest`], and where the handle sends to as libibverbs
    /// read it from the completion and the GRH area (`ibv_init_ah_from_wc`):
    /// a caller that files the handle under its own reading of the source can
    /// check that the two agree before reusing the handle for later datagrams.
    pub fn reply_dest_route<M: RegisterableMemory>(
        &self,
        wc: &Wc,
        mr: &MemoryRegion<M>,
        buf_off: usize,
    ) -> Result<(UdDest, ReplyRoute)> {
        wc.ok().map_err(Error::from)?;
        let mut grh = [0u8; GRH_SIZE];
        if buf_off.checked_add(GRH_SIZE).is_none_or(|e| e > mr.len()) {
            bail!("receive buffer offset {buf_off} leaves no room for a GRH in a {}-byte MR", mr.len());
        }
        mr.read(buf_off, &mut grh);
        let mut w = wc.clone();
        // SAFETY: ibv_ah_attr is plain data; all-zero is a valid value (and
        // ibv_init_ah_from_wc clears it first anyway).
        let mut attr: ibv_ah_attr = unsafe { std::mem::zeroed() };
        // SAFETY: live PD, whose `context` is the open device context; `w.0` is
        // a valid ibv_wc; `grh` is 40 bytes laid out as struct ibv_grh (the
        // library reads the header it describes); `attr` is ours to fill.
        let rc = unsafe {
            ibv_init_ah_from_wc(
                (*self.qp.pd.inner.pd).context,
                self.port.port,
                &mut w.0,
                grh.as_mut_ptr().cast::<ibv_grh>(),
                &mut attr,
            )
        };
        if rc != 0 {
            bail!("ibv_init_ah_from_wc(src_qp {}): {}", wc.src_qp(), std::io::Error::last_os_error());
        }
        let route = if attr.is_global != 0 {
            // SAFETY: every bit pattern of the 16-byte union is a valid `raw`.
            ReplyRoute::Gid(unsafe { attr.grh.dgid.raw })
        } else {
            ReplyRoute::Lid(attr.dlid)
        };
        // SAFETY: live PD; `attr` fully initialised by ibv_init_ah_from_wc.
        let ah = unsafe { ibv_create_ah(self.qp.pd.inner.pd, &mut attr) };
        if ah.is_null() {
            bail!("ibv_create_ah(reply to src_qp {}): {}", wc.src_qp(), std::io::Error::last_os_error());
        }
        let dest = UdDest {
            ah: AddressHandle(Arc::new(AhInner { ah, _pd: self.qp.pd.inner.clone() })),
            qpn: wc.src_qp(),
            qkey: self.qkey,
        };
        Ok((dest, route))
    }
    /// Send one datagram (payload only; no GRH room needed on the send side).
    pub fn post_send(&self, wr_id: u64, local: LocalSlice<'_>, dest: &UdDest, signaled: bool) -> Result<()> {
        if local.len() > self.max_payload() {
            bail!("UD datagram of {} bytes exceeds the {}-byte path MTU", local.len(), self.max_payload());
        }
        self.qp.post_send(wr_id, ibv_wr_opcode::IBV_WR_SEND, &local, None, Some(dest), signaled)
    }
    /// Post a receive buffer: GRH_SIZE bytes of GRH, then up to MTU of payload.
    pub fn post_recv(&self, wr_id: u64, local: LocalSlice<'_>) -> Result<()> {
        if local.len() < GRH_SIZE {
            bail!("UD receive buffer of {} bytes has no room for the {GRH_SIZE}-byte GRH", local.len());
        }
        self.qp.post_recv(wr_id, &local)
    }
}
