//! Completion queues (with an optional completion channel for blocking waits)
//! and work completions with typed errors.

use std::ffi::CStr;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdma_sys::*;

use crate::bail;
use crate::error::{Error, Result};

use super::device::{Context, ContextInner};

pub(crate) struct CqInner {
    pub(crate) cq: *mut ibv_cq,
    channel: *mut ibv_comp_channel,
    /// Serialises blocking waiters (one arm/sleep/ack cycle at a time).
    wait_lock: Mutex<()>,
    _ctx: Arc<ContextInner>,
}

// SAFETY: ibv_poll_cq/ibv_req_notify_cq are thread-safe in rdma-core providers;
// the channel is used under `wait_lock`.
unsafe impl Send for CqInner {}
// SAFETY: as above.
unsafe impl Sync for CqInner {}

impl Drop for CqInner {
    fn drop(&mut self) {
        // SAFETY: QPs using this CQ hold an Arc<CqInner>, so none is left. Every
        // event we took was acked right away (ibv_destroy_cq waits for acks).
        // The channel is destroyed after its only CQ.
        unsafe {
            ibv_destroy_cq(self.cq);
            if !self.channel.is_null() {
                ibv_destroy_comp_channel(self.channel);
            }
        }
    }
}

/// A completion queue. Cheap to clone; QPs keep it alive.
#[derive(Clone)]
pub struct CompletionQueue {
    pub(crate) inner: Arc<CqInner>,
}

impl CompletionQueue {
    pub(crate) fn create(ctx: &Context, entries: u32, with_channel: bool) -> Result<CompletionQueue> {
        let mut channel: *mut ibv_comp_channel = std::ptr::null_mut();
        if with_channel {
            // SAFETY: live context.
            channel = unsafe { ibv_create_comp_channel(ctx.inner.ctx) };
            if channel.is_null() {
                bail!("ibv_create_comp_channel({}): {}", ctx.name(), std::io::Error::last_os_error());
            }
            // SAFETY: `channel` is valid; its fd is ours to make non-blocking, so
            // a spurious wakeup never blocks in ibv_get_cq_event.
            let fd = unsafe { (*channel).fd };
            // SAFETY: fcntl on a valid fd with integer flags.
            let ok = unsafe {
                let fl = libc::fcntl(fd, libc::F_GETFL);
                fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
            };
            if !ok {
                let e = std::io::Error::last_os_error();
                // SAFETY: created above, not used by any CQ yet.
                unsafe { ibv_destroy_comp_channel(channel) };
                bail!("making the completion channel non-blocking: {e}");
            }
        }
        let n = libc::c_int::try_from(entries.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: live context; channel is null or valid; no cq_context.
        let cq = unsafe { ibv_create_cq(ctx.inner.ctx, n, std::ptr::null_mut(), channel, 0) };
        if cq.is_null() {
            let e = std::io::Error::last_os_error();
            if !channel.is_null() {
                // SAFETY: created above, no CQ uses it.
                unsafe { ibv_destroy_comp_channel(channel) };
            }
            bail!("ibv_create_cq({} entries on {}): {e}", entries, ctx.name());
        }
        Ok(CompletionQueue {
            inner: Arc::new(CqInner { cq, channel, wait_lock: Mutex::new(()), _ctx: ctx.inner.clone() }),
        })
    }

    pub fn has_channel(&self) -> bool {
        !self.inner.channel.is_null()
    }

    /// The completion channel's fd (for an epoll loop), if any. Readable means
    /// "call [`CompletionQueue::wait`] / drain events".
    pub fn channel_fd(&self) -> Option<std::os::fd::RawFd> {
        // SAFETY: the channel lives as long as `inner`.
        (!self.inner.channel.is_null()).then(|| unsafe { (*self.inner.channel).fd })
    }

    /// The completion channel's fd, borrowed (for `epoll_ctl` through safe
    /// APIs that take `AsFd`).
    pub fn channel_borrowed_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        // SAFETY: the channel, and so its fd, stays open as long as `inner`,
        // which outlives the returned borrow of `self`.
        self.channel_fd().map(|fd| unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
    }

    /// Non-blocking batched poll: fills the front of `wcs`, returns how many.
    /// Failed completions are returned too; check each with [`Wc::ok`].
    pub fn poll(&self, wcs: &mut [Wc]) -> Result<usize> {
        if wcs.is_empty() {
            return Ok(0);
        }
        let n = libc::c_int::try_from(wcs.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: live CQ; `Wc` is repr(transparent) over ibv_wc, and `wcs` has
        // room for `n` of them.
        let got = unsafe { ibv_poll_cq(self.inner.cq, n, wcs.as_mut_ptr().cast::<ibv_wc>()) };
        if got < 0 {
            bail!("ibv_poll_cq failed ({got})");
        }
        Ok(got as usize)
    }

    /// Wait for at least one completion, up to `timeout` (None = forever):
    /// returns how many were put in `wcs`, 0 only on timeout. With a channel it
    /// sleeps in the kernel (req_notify, re-poll, poll(2) on the channel fd,
    /// get_cq_event, ack); without one it spins on the CQ.
    pub fn wait(&self, wcs: &mut [Wc], timeout: Option<Duration>) -> Result<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let n = self.poll(wcs)?;
        if n > 0 {
            return Ok(n);
        }
        if !self.has_channel() {
            let mut spins = 0u32;
            loop {
                let n = self.poll(wcs)?;
                if n > 0 {
                    return Ok(n);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(0);
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        let _g = self.inner.wait_lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            self.arm()?;
            // A completion that arrived before arming raises no event: re-poll.
            let n = self.poll(wcs)?;
            if n > 0 {
                return Ok(n);
            }
            let ms: libc::c_int = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(0);
                    }
                    left.as_millis().clamp(1, libc::c_int::MAX as u128) as libc::c_int
                }
            };
            let mut pfd = libc::pollfd { fd: self.channel_fd().unwrap_or(-1), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let pr = unsafe { libc::poll(&mut pfd, 1, ms) };
            if pr < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                bail!("poll on completion channel: {e}");
            }
            if pr > 0 {
                self.drain_events()?;
            }
            let n = self.poll(wcs)?;
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// Arm the completion channel: the next completion makes
    /// [`channel_fd`](Self::channel_fd) readable. For an external epoll loop:
    /// `arm`, poll once more (a completion that raced the arming raises no
    /// event), epoll_wait, [`drain_events`](Self::drain_events), poll.
    pub fn arm(&self) -> Result<()> {
        if !self.has_channel() {
            bail!("this CQ has no completion channel");
        }
        // SAFETY: live CQ with a channel.
        let rc = unsafe { ibv_req_notify_cq(self.inner.cq, 0) };
        if rc != 0 {
            bail!("ibv_req_notify_cq: {}", std::io::Error::from_raw_os_error(rc.abs()));
        }
        Ok(())
    }

    /// Take and ack every pending event on the channel (non-blocking).
    pub fn drain_events(&self) -> Result<()> {
        if !self.has_channel() {
            return Ok(());
        }
        loop {
            let mut cq: *mut ibv_cq = std::ptr::null_mut();
            let mut cq_ctx: *mut libc::c_void = std::ptr::null_mut();
            // SAFETY: the channel is valid and non-blocking; out-pointers valid.
            let rc = unsafe { ibv_get_cq_event(self.inner.channel, &mut cq, &mut cq_ctx) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EAGAIN) {
                    return Ok(());
                }
                bail!("ibv_get_cq_event: {e}");
            }
            // SAFETY: the event is for our CQ (a channel serves exactly one CQ
            // here); acked once, as ibv_destroy_cq requires.
            unsafe { ibv_ack_cq_events(cq, 1) };
        }
    }

    /// Wait (as [`wait`](Self::wait)) for exactly one completion; Err on
    /// timeout. The completion may have failed: check with [`Wc::ok`].
    pub fn wait_one(&self, timeout: Duration) -> Result<Wc> {
        let mut w = [Wc::default()];
        match self.wait(&mut w, Some(timeout))? {
            0 => bail!("no completion within {timeout:?}"),
            _ => Ok(w[0].clone()),
        }
    }
}

/// One work completion (`ibv_wc`), as filled in by `ibv_poll_cq`.
#[repr(transparent)]
pub struct Wc(pub(crate) ibv_wc);

impl Default for Wc {
    fn default() -> Wc {
        // SAFETY: ibv_wc is plain data; all-zero is a valid value.
        Wc(unsafe { std::mem::zeroed() })
    }
}

impl Clone for Wc {
    fn clone(&self) -> Wc {
        // SAFETY: ibv_wc is plain old data (integers and a union of integers).
        Wc(unsafe { std::ptr::read(&self.0) })
    }
}

impl Wc {
    /// A batch of empty completions to poll into.
    pub fn batch(n: usize) -> Vec<Wc> {
        (0..n).map(|_| Wc::default()).collect()
    }
    pub fn wr_id(&self) -> u64 {
        self.0.wr_id
    }
    pub fn status(&self) -> WcStatus {
        WcStatus(self.0.status)
    }
    pub fn is_ok(&self) -> bool {
        self.0.status == ibv_wc_status::IBV_WC_SUCCESS
    }
    /// Opcode; meaningful only for successful completions.
    pub fn opcode(&self) -> WcOpcode {
        WcOpcode(self.0.opcode)
    }
    pub fn byte_len(&self) -> u32 {
        self.0.byte_len
    }
    pub fn qp_num(&self) -> u32 {
        self.0.qp_num
    }
    /// Sender's QPN (UD receives).
    pub fn src_qp(&self) -> u32 {
        self.0.src_qp
    }
    /// Sender's LID (UD receives; what identifies it without a GRH).
    pub fn slid(&self) -> u16 {
        self.0.slid
    }
    /// Whether a GRH sits in the first 40 bytes of the receive buffer (UD).
    pub fn has_grh(&self) -> bool {
        self.0.wc_flags & ibv_wc_flags::IBV_WC_GRH.0 != 0
    }
    pub fn vendor_err(&self) -> u32 {
        self.0.vendor_err
    }
    /// Ok(self) when successful, else the typed error.
    pub fn ok(&self) -> std::result::Result<&Wc, WcError> {
        if self.is_ok() {
            Ok(self)
        } else {
            Err(WcError {
                wr_id: self.wr_id(),
                status: self.status(),
                vendor_err: self.vendor_err(),
                qp_num: self.qp_num(),
            })
        }
    }
}

impl fmt::Debug for Wc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wc")
            .field("wr_id", &self.wr_id())
            .field("status", &self.status())
            .field("opcode", &self.opcode())
            .field("byte_len", &self.byte_len())
            .field("qp_num", &self.qp_num())
            .field("src_qp", &self.src_qp())
            .finish()
    }
}

/// `ibv_wc_status`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WcStatus(pub u32);

const STATUS_NAMES: [&str; 24] = [
    "IBV_WC_SUCCESS",
    "IBV_WC_LOC_LEN_ERR",
    "IBV_WC_LOC_QP_OP_ERR",
    "IBV_WC_LOC_EEC_OP_ERR",
    "IBV_WC_LOC_PROT_ERR",
    "IBV_WC_WR_FLUSH_ERR",
    "IBV_WC_MW_BIND_ERR",
    "IBV_WC_BAD_RESP_ERR",
    "IBV_WC_LOC_ACCESS_ERR",
    "IBV_WC_REM_INV_REQ_ERR",
    "IBV_WC_REM_ACCESS_ERR",
    "IBV_WC_REM_OP_ERR",
    "IBV_WC_RETRY_EXC_ERR",
    "IBV_WC_RNR_RETRY_EXC_ERR",
    "IBV_WC_LOC_RDD_VIOL_ERR",
    "IBV_WC_REM_INV_RD_REQ_ERR",
    "IBV_WC_REM_ABORT_ERR",
    "IBV_WC_INV_EECN_ERR",
    "IBV_WC_INV_EEC_STATE_ERR",
    "IBV_WC_FATAL_ERR",
    "IBV_WC_RESP_TIMEOUT_ERR",
    "IBV_WC_GENERAL_ERR",
    "IBV_WC_TM_ERR",
    "IBV_WC_TM_RNDV_INCOMPLETE",
];

impl WcStatus {
    pub const SUCCESS: WcStatus = WcStatus(ibv_wc_status::IBV_WC_SUCCESS);
    pub const LOC_LEN_ERR: WcStatus = WcStatus(ibv_wc_status::IBV_WC_LOC_LEN_ERR);
    pub const LOC_PROT_ERR: WcStatus = WcStatus(ibv_wc_status::IBV_WC_LOC_PROT_ERR);
    pub const WR_FLUSH_ERR: WcStatus = WcStatus(ibv_wc_status::IBV_WC_WR_FLUSH_ERR);
    pub const REM_INV_REQ_ERR: WcStatus = WcStatus(ibv_wc_status::IBV_WC_REM_INV_REQ_ERR);
    pub const REM_ACCESS_ERR: WcStatus = WcStatus(ibv_wc_status::IBV_WC_REM_ACCESS_ERR);
    pub const REM_OP_ERR: WcStatus = WcStatus(ibv_wc_status::IBV_WC_REM_OP_ERR);
    pub const RETRY_EXC_ERR: WcStatus = WcStatus(ibv_wc_status::IBV_WC_RETRY_EXC_ERR);
    pub const RNR_RETRY_EXC_ERR: WcStatus = WcStatus(ibv_wc_status::IBV_WC_RNR_RETRY_EXC_ERR);
    pub const FATAL_ERR: WcStatus = WcStatus(ibv_wc_status::IBV_WC_FATAL_ERR);
    pub const GENERAL_ERR: WcStatus = WcStatus(ibv_wc_status::IBV_WC_GENERAL_ERR);

    /// The enum name, e.g. "IBV_WC_REM_ACCESS_ERR".
    pub fn name(self) -> &'static str {
        STATUS_NAMES.get(self.0 as usize).copied().unwrap_or("IBV_WC_UNKNOWN")
    }
    /// libibverbs' text, e.g. "remote access error" (`ibv_wc_status_str`).
    pub fn description(self) -> String {
        // SAFETY: ibv_wc_status_str accepts any value and returns a static string.
        let p = unsafe { ibv_wc_status_str(self.0) };
        if p.is_null() {
            return String::from("unknown");
        }
        // SAFETY: static NUL-terminated string owned by libibverbs.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

impl fmt::Debug for WcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for WcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.description())
    }
}

/// `ibv_wc_opcode`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WcOpcode(pub u32);

impl WcOpcode {
    pub const SEND: WcOpcode = WcOpcode(ibv_wc_opcode::IBV_WC_SEND);
    pub const RDMA_WRITE: WcOpcode = WcOpcode(ibv_wc_opcode::IBV_WC_RDMA_WRITE);
    pub const RDMA_READ: WcOpcode = WcOpcode(ibv_wc_opcode::IBV_WC_RDMA_READ);
    pub const RECV: WcOpcode = WcOpcode(ibv_wc_opcode::IBV_WC_RECV);
}

impl fmt::Debug for WcOpcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match *self {
            WcOpcode::SEND => "SEND",
            WcOpcode::RDMA_WRITE => "RDMA_WRITE",
            WcOpcode::RDMA_READ => "RDMA_READ",
            WcOpcode::RECV => "RECV",
            _ => return write!(f, "opcode {}", self.0),
        };
        f.write_str(n)
    }
}

/// A work request that completed in error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WcError {
    pub wr_id: u64,
    pub status: WcStatus,
    pub vendor_err: u32,
    pub qp_num: u32,
}

impl fmt::Display for WcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "work request {} on QP {} completed with {} (vendor error {:#x})",
            self.wr_id, self.qp_num, self.status, self.vendor_err
        )
    }
}

impl std::error::Error for WcError {}

impl From<WcError> for Error {
    fn from(e: WcError) -> Error {
        Error::new(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_match_the_enum_and_libibverbs() {
        assert_eq!(WcStatus::SUCCESS.name(), "IBV_WC_SUCCESS");
        assert_eq!(WcStatus::REM_ACCESS_ERR.name(), "IBV_WC_REM_ACCESS_ERR");
        assert_eq!(WcStatus::RETRY_EXC_ERR.name(), "IBV_WC_RETRY_EXC_ERR");
        assert_eq!(WcStatus(ibv_wc_status::IBV_WC_TM_RNDV_INCOMPLETE).name(), "IBV_WC_TM_RNDV_INCOMPLETE");
        assert_eq!(WcStatus(999).name(), "IBV_WC_UNKNOWN");
        // libibverbs' own strings need no device.
        assert_eq!(WcStatus::REM_ACCESS_ERR.description(), "remote access error");
        assert_eq!(WcStatus::RETRY_EXC_ERR.description(), "transport retry counter exceeded");
        assert_eq!(WcStatus::SUCCESS.description(), "success");
    }

    #[test]
    fn failed_completion_is_a_typed_error_with_the_name() {
        let mut w = Wc::default();
        w.0.wr_id = 42;
        w.0.status = ibv_wc_status::IBV_WC_REM_ACCESS_ERR;
        let e = w.ok().unwrap_err();
        assert_eq!(e.status, WcStatus::REM_ACCESS_ERR);
        assert_eq!(e.wr_id, 42);
        let crate_err: Error = e.into();
        assert!(crate_err.to_string().contains("IBV_WC_REM_ACCESS_ERR (remote access error)"), "{crate_err}");
        let ok = Wc::default();
        assert!(ok.ok().is_ok());
    }
}
