//! Protection domains, memory registration, local and remote memory slices.

use std::alloc::Layout;
use std::fmt;
use std::marker::PhantomData;
use std::ops::BitOr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rdma_sys::*;

use crate::bail;
use crate::error::{Error, Result};
use crate::memory::region::Region;

use super::device::{Context, ContextInner};

pub(crate) struct PdInner {
    pub(crate) pd: *mut ibv_pd,
    _ctx: Arc<ContextInner>,
}

// SAFETY: a PD is only passed to thread-safe verbs calls.
unsafe impl Send for PdInner {}
// SAFETY: as above.
unsafe impl Sync for PdInner {}

impl Drop for PdInner {
    fn drop(&mut self) {
        // SAFETY: MRs, QPs and AHs hold an Arc<PdInner>, so they are all gone;
        // deallocated exactly once; the context (held by `ctx`) is still open.
        unsafe { ibv_dealloc_pd(self.pd) };
    }
}

/// A protection domain. Cheap to clone; MRs, QPs and AHs keep it alive.
#[derive(Clone)]
pub struct ProtectionDomain {
    pub(crate) inner: Arc<PdInner>,
    pub(crate) ctx: Context,
}

/// Memory access rights of an MR (and of a QP for incoming RDMA).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Access(pub u32);

impl Access {
    pub const NONE: Access = Access(0);
    pub const LOCAL_WRITE: Access = Access(ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0);
    pub const REMOTE_WRITE: Access = Access(ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0);
    pub const REMOTE_READ: Access = Access(ibv_access_flags::IBV_ACCESS_REMOTE_READ.0);
    pub const REMOTE_ATOMIC: Access = Access(ibv_access_flags::IBV_ACCESS_REMOTE_ATOMIC.0);
    /// Everything a local buffer used as READ/RECV destination needs.
    pub const LOCAL: Access = Access::LOCAL_WRITE;

    pub fn contains(self, o: Access) -> bool {
        self.0 & o.0 == o.0
    }
}

impl BitOr for Access {
    type Output = Access;
    fn bitor(self, o: Access) -> Access {
        Access(self.0 | o.0)
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (a, n) in [
            (Access::LOCAL_WRITE, "LOCAL_WRITE"),
            (Access::REMOTE_WRITE, "REMOTE_WRITE"),
            (Access::REMOTE_READ, "REMOTE_READ"),
            (Access::REMOTE_ATOMIC, "REMOTE_ATOMIC"),
        ] {
            if self.contains(a) {
                parts.push(n);
            }
        }
        write!(f, "Access({})", if parts.is_empty() { "NONE".to_string() } else { parts.join("|") })
    }
}

/// Memory that can back an MR.
///
/// # Safety
/// `mem_ptr()..mem_ptr()+mem_len()` must be one live, writable-or-readable
/// mapping that does not move or get unmapped while `self` exists, and the
/// implementation must never hand out Rust references into it (the NIC may
/// write it at any time); `copy_out` must stay in bounds. Writing is not part
/// of the trait: an owned [`Buffer`] is written through its MR
/// ([`MemoryRegion::write`]), a [`Region`] only through its `RegionWriter`.
pub unsafe trait RegisterableMemory {
    fn mem_ptr(&self) -> *mut u8;
    fn mem_len(&self) -> usize;
    /// Copy from offset `off` into `dst` (bounds already checked by the caller).
    fn copy_out(&self, off: usize, dst: &mut [u8]);
}

// SAFETY: the borrow keeps the Region (and so its mapping) alive and in place;
// Region hands out no references, only copies.
unsafe impl RegisterableMemory for &Region {
    fn mem_ptr(&self) -> *mut u8 {
        self.as_ptr()
    }
    fn mem_len(&self) -> usize {
        self.len()
    }
    fn copy_out(&self, off: usize, dst: &mut [u8]) {
        self.read(off, dst)
    }
}

// SAFETY: the Arc keeps the Region alive and in place; as for &Region.
unsafe impl RegisterableMemory for Arc<Region> {
    fn mem_ptr(&self) -> *mut u8 {
        self.as_ptr()
    }
    fn mem_len(&self) -> usize {
        self.len()
    }
    fn copy_out(&self, off: usize, dst: &mut [u8]) {
        self.read(off, dst)
    }
}

/// An owned, page-aligned, zeroed heap buffer for staging, send and receive
/// buffers. Like a Region it is reached only by copies. It is `Send` but not
/// `Sync` (like a `Cell`): copies in and out through `&self` all run on the
/// one thread that holds it, so they never race with each other.
pub struct Buffer {
    ptr: *mut u8,
    len: usize,
    layout: Layout,
}

// SAFETY: plain heap bytes owned by this value, reached only through
// bounds-checked copies; moving it to another thread moves all access there.
unsafe impl Send for Buffer {}

impl Buffer {
    pub fn zeroed(len: usize) -> Result<Buffer> {
        let layout =
            Layout::from_size_align(len.max(1), 4096).map_err(|e| Error::new(format!("buffer of {len} bytes: {e}")))?;
        // SAFETY: the layout has non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            bail!("out of memory allocating a {len}-byte RDMA buffer");
        }
        Ok(Buffer { ptr, len, layout })
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Copy `src` to offset `off`. Panics when out of bounds (a caller bug).
    pub fn copy_in(&self, off: usize, src: &[u8]) {
        assert!(off.checked_add(src.len()).is_some_and(|e| e <= self.len), "buffer write out of bounds");
        // SAFETY: in bounds (asserted); `src` is a distinct Rust buffer; the
        // Buffer is not Sync, so no other thread copies in or out meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(off), src.len()) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout; freed once. An MR over
        // it owns the Buffer and deregisters before dropping it.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

// SAFETY: the allocation lives as long as the Buffer and never moves; copies
// below are bounds-checked by the MR before they are called.
unsafe impl RegisterableMemory for Buffer {
    fn mem_ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn mem_len(&self) -> usize {
        self.len
    }
    fn copy_out(&self, off: usize, dst: &mut [u8]) {
        assert!(off.checked_add(dst.len()).is_some_and(|e| e <= self.len), "buffer read out of bounds");
        // SAFETY: in bounds (asserted); `dst` is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), dst.as_mut_ptr(), dst.len()) }
    }
}

/// Bytes this process has registered (to check RLIMIT_MEMLOCK before asking).
static REGISTERED: AtomicU64 = AtomicU64::new(0);

/// What to do about RLIMIT_MEMLOCK before registering `need` more bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum MemlockPlan {
    /// The limit is not in the way.
    Fine,
    /// Raise the soft limit to this value (allowed: it is <= the hard limit).
    RaiseSoft(u64),
    /// Try to raise both limits to infinity (needs CAP_SYS_RESOURCE).
    RaiseHard,
}

/// Pure decision, unit-tested: `need` = bytes locked after this registration.
pub fn memlock_plan(need: u64, soft: u64, hard: u64, privileged: bool) -> MemlockPlan {
    let inf = libc::RLIM_INFINITY;
    if privileged || soft == inf || need <= soft {
        MemlockPlan::Fine
    } else if hard == inf || need <= hard {
        MemlockPlan::RaiseSoft(hard)
    } else {
        MemlockPlan::RaiseHard
    }
}

fn memlock_fix_hint(need: u64) -> String {
    format!(
        "registering RDMA memory pins it: {} MiB must fit under RLIMIT_MEMLOCK. Fix: run with \
         `ulimit -l unlimited` (shell), `LimitMEMLOCK=infinity` (systemd unit), a `memlock` line in \
         /etc/security/limits.conf, `--ulimit memlock=-1` (docker), or as root / with CAP_IPC_LOCK",
        need.div_ceil(1 << 20)
    )
}

fn ensure_memlock(len: usize) -> Result<()> {
    let need = REGISTERED.load(Ordering::Relaxed).saturating_add(len as u64);
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(()); // cannot tell; let ibv_reg_mr decide
    }
    // SAFETY: geteuid has no preconditions. Root normally has CAP_IPC_LOCK, which
    // lifts the limit for pinning.
    let privileged = unsafe { libc::geteuid() } == 0;
    let set = |cur: u64, max: u64| {
        let l = libc::rlimit { rlim_cur: cur, rlim_max: max };
        // SAFETY: valid pointer to an initialized rlimit.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &l) == 0 }
    };
    match memlock_plan(need, lim.rlim_cur, lim.rlim_max, privileged) {
        MemlockPlan::Fine => Ok(()),
        MemlockPlan::RaiseSoft(to) => {
            if set(to, lim.rlim_max) {
                Ok(())
            } else {
                Err(Error::new(memlock_fix_hint(need)))
            }
        }
        MemlockPlan::RaiseHard => {
            if set(libc::RLIM_INFINITY, libc::RLIM_INFINITY) {
                Ok(())
            } else {
                Err(Error::new(format!(
                    "{} (soft limit {} KiB, hard {} KiB, and raising it was refused)",
                    memlock_fix_hint(need),
                    lim.rlim_cur / 1024,
                    lim.rlim_max / 1024
                )))
            }
        }
    }
}

impl ProtectionDomain {
    pub(crate) fn alloc(ctx: &Context) -> Result<ProtectionDomain> {
        // SAFETY: live context.
        let pd = unsafe { ibv_alloc_pd(ctx.inner.ctx) };
        if pd.is_null() {
            bail!("ibv_alloc_pd({}): {}", ctx.name(), std::io::Error::last_os_error());
        }
        Ok(ProtectionDomain { inner: Arc::new(PdInner { pd, _ctx: ctx.inner.clone() }), ctx: ctx.clone() })
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Register `mem` with `access`. `mem` may be an owned [`Buffer`], an
    /// `Arc<Region>`, or `&Region` (then the MR borrows the region). Raises
    /// RLIMIT_MEMLOCK when needed and allowed, else says how to fix it.
    pub fn register<M: RegisterableMemory>(&self, mem: M, access: Access) -> Result<MemoryRegion<M>> {
        let len = mem.mem_len();
        if len == 0 {
            bail!("cannot register an empty buffer");
        }
        ensure_memlock(len)?;
        // SAFETY: the trait guarantees ptr..ptr+len is a live mapping that stays
        // put while `mem` lives, and the MemoryRegion below owns `mem` (or its
        // borrow) and deregisters before releasing it.
        let mr = unsafe { ibv_reg_mr(self.inner.pd, mem.mem_ptr().cast(), len, access.0 as libc::c_int) };
        if mr.is_null() {
            let e = std::io::Error::last_os_error();
            let hint = match e.raw_os_error() {
                Some(libc::ENOMEM) | Some(libc::EPERM) | Some(libc::EAGAIN) => {
                    format!("; {}", memlock_fix_hint(REGISTERED.load(Ordering::Relaxed) + len as u64))
                }
                _ => String::new(),
            };
            bail!("ibv_reg_mr({} bytes, {access:?}): {e}{hint}", len);
        }
        REGISTERED.fetch_add(len as u64, Ordering::Relaxed);
        // SAFETY: ibv_reg_mr returned a valid MR; lkey/rkey are plain fields.
        let (lkey, rkey) = unsafe { ((*mr).lkey, (*mr).rkey) };
        Ok(MemoryRegion { mr, lkey, rkey, access, mem, _pd: self.inner.clone() })
    }

    /// Convenience: a fresh zeroed buffer registered for local use (READ
    /// destination, RECV, SEND source).
    pub fn register_buffer(&self, len: usize, access: Access) -> Result<MemoryRegion<Buffer>> {
        self.register(Buffer::zeroed(len)?, access)
    }
}

/// A registered memory region over `M`. Deregistered on drop, before `M` is
/// released; keeps its PD alive.
pub struct MemoryRegion<M: RegisterableMemory> {
    mr: *mut ibv_mr,
    lkey: u32,
    rkey: u32,
    access: Access,
    mem: M,
    _pd: Arc<PdInner>,
}

// SAFETY: the MR handle is used only by deregistration; the memory is Send if M is.
unsafe impl<M: RegisterableMemory + Send> Send for MemoryRegion<M> {}
// SAFETY: shared access only reads keys or copies through M (Sync required).
unsafe impl<M: RegisterableMemory + Sync> Sync for MemoryRegion<M> {}

impl<M: RegisterableMemory> Drop for MemoryRegion<M> {
    fn drop(&mut self) {
        // SAFETY: `mr` is valid and deregistered exactly once, before `mem` (a
        // field) is dropped, while the PD is still alive (`_pd`).
        unsafe { ibv_dereg_mr(self.mr) };
        REGISTERED.fetch_sub(self.mem.mem_len() as u64, Ordering::Relaxed);
    }
}

impl<M: RegisterableMemory> MemoryRegion<M> {
    pub fn lkey(&self) -> u32 {
        self.lkey
    }
    pub fn rkey(&self) -> u32 {
        self.rkey
    }
    pub fn access(&self) -> Access {
        self.access
    }
    pub fn addr(&self) -> u64 {
        self.mem.mem_ptr() as u64
    }
    pub fn len(&self) -> usize {
        self.mem.mem_len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The memory behind the MR (e.g. the `&Region`).
    pub fn memory(&self) -> &M {
        &self.mem
    }
    /// What a peer needs to READ/WRITE this MR: address, rkey, length.
    pub fn remote(&self) -> RemoteMemory {
        RemoteMemory { addr: self.addr(), rkey: self.rkey, len: self.len() as u64 }
    }
    /// A bounds-checked piece of this MR for a work request.
    pub fn slice(&self, off: usize, len: usize) -> Result<LocalSlice<'_>> {
        match off.checked_add(len) {
            Some(end) if end <= self.len() && len <= u32::MAX as usize => {}
            _ => bail!("local slice {off}+{len} outside the {}-byte MR", self.len()),
        }
        Ok(LocalSlice { addr: self.addr() + off as u64, len: len as u32, lkey: self.lkey, _mr: PhantomData })
    }
    /// The whole MR as one slice.
    pub fn all(&self) -> Result<LocalSlice<'_>> {
        self.slice(0, self.len())
    }
    /// Copy bytes out. Panics when out of bounds (a caller bug, like Region).
    pub fn read(&self, off: usize, dst: &mut [u8]) {
        assert!(off.checked_add(dst.len()).is_some_and(|e| e <= self.len()), "MR read out of bounds");
        self.mem.copy_out(off, dst)
    }
}

impl MemoryRegion<Buffer> {
    /// Copy bytes in. Panics when out of bounds (a caller bug, like Region).
    /// Only owned buffers are written through their MR; a registered
    /// [`Region`] is written only by the holder of its `RegionWriter`.
    pub fn write(&self, off: usize, src: &[u8]) {
        assert!(off.checked_add(src.len()).is_some_and(|e| e <= self.len()), "MR write out of bounds");
        self.mem.copy_in(off, src)
    }
}

/// A piece of a local MR named in a work request. Borrowing the MR during the
/// post makes sure the keys are live when the work request is created.
#[derive(Clone, Copy, Debug)]
pub struct LocalSlice<'a> {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) lkey: u32,
    _mr: PhantomData<&'a ()>,
}

impl LocalSlice<'_> {
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub(crate) fn sge(&self) -> ibv_sge {
        ibv_sge { addr: self.addr, length: self.len, lkey: self.lkey }
    }
}

/// Remote memory a peer advertised (address in ITS address space, rkey, length).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteMemory {
    pub addr: u64,
    pub rkey: u32,
    pub len: u64,
}

impl RemoteMemory {
    /// A bounds-checked piece (against the advertised length). The remote NIC
    /// checks again: a lying peer gets REM_ACCESS_ERR, not our memory.
    pub fn slice(&self, off: u64, len: usize) -> Result<RemoteSlice> {
        match off.checked_add(len as u64) {
            Some(end) if end <= self.len && len <= u32::MAX as usize => {}
            _ => bail!("remote slice {off}+{len} outside the peer's {}-byte region", self.len),
        }
        Ok(RemoteSlice { addr: self.addr + off, rkey: self.rkey, len: len as u32 })
    }
}

/// A piece of remote memory for one READ or WRITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteSlice {
    pub addr: u64,
    pub rkey: u32,
    pub len: u32,
}

/// A sub-range of a shared [`Region`], registered on its own: the primary's
/// progress slots, the only part of its log region a replica may WRITE.
pub struct RegionRange {
    region: Arc<Region>,
    off: usize,
    len: usize,
}

impl RegionRange {
    pub fn new(region: Arc<Region>, off: usize, len: usize) -> Result<RegionRange> {
        match off.checked_add(len) {
            Some(end) if end <= region.len() && len > 0 => Ok(RegionRange { region, off, len }),
            _ => bail!("range {off}+{len} outside the {}-byte region", region.len()),
        }
    }
}

// SAFETY: the Arc keeps the Region alive and in place; the range was checked
// against its length at construction; bytes move only by bounds-checked copies.
unsafe impl RegisterableMemory for RegionRange {
    fn mem_ptr(&self) -> *mut u8 {
        self.region.as_ptr().wrapping_add(self.off)
    }
    fn mem_len(&self) -> usize {
        self.len
    }
    fn copy_out(&self, off: usize, dst: &mut [u8]) {
        self.region.read(self.off + off, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_plan_decides() {
        let inf = libc::RLIM_INFINITY;
        assert_eq!(memlock_plan(1 << 30, 8 << 20, 8 << 20, true), MemlockPlan::Fine);
        assert_eq!(memlock_plan(1 << 30, inf, inf, false), MemlockPlan::Fine);
        assert_eq!(memlock_plan(4 << 20, 8 << 20, 8 << 20, false), MemlockPlan::Fine);
        assert_eq!(memlock_plan(1 << 30, 8 << 20, inf, false), MemlockPlan::RaiseSoft(inf));
        assert_eq!(memlock_plan(16 << 20, 8 << 20, 32 << 20, false), MemlockPlan::RaiseSoft(32 << 20));
        assert_eq!(memlock_plan(1 << 30, 8 << 20, 8 << 20, false), MemlockPlan::RaiseHard);
        let hint = memlock_fix_hint(1 << 30);
        assert!(hint.contains("LimitMEMLOCK=infinity") && hint.contains("ulimit -l"), "{hint}");
    }

    #[test]
    fn remote_slices_are_bounds_checked() {
        let r = RemoteMemory { addr: 0x1000, rkey: 7, len: 4096 };
        assert_eq!(r.slice(4000, 96).unwrap(), RemoteSlice { addr: 0x1000 + 4000, rkey: 7, len: 96 });
        assert!(r.slice(4000, 97).is_err());
        assert!(r.slice(u64::MAX, 2).is_err());
    }

    #[test]
    fn buffer_copies_and_access_debug() {
        let b = Buffer::zeroed(8192).unwrap();
        assert_eq!(b.mem_ptr() as usize % 4096, 0);
        b.copy_in(8190, b"hi");
        let mut o = [0u8; 2];
        b.copy_out(8190, &mut o);
        assert_eq!(&o, b"hi");
        assert_eq!(format!("{:?}", Access::REMOTE_READ | Access::LOCAL_WRITE), "Access(LOCAL_WRITE|REMOTE_READ)");
    }
}
