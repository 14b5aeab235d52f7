//! io_uring for the TCP workers (`--io uring`): the ring, its ring of
//! provided receive buffers, and the few operations the worker loop submits,
//! behind a safe API. This is kernel-shared memory, hence here.
//!
//! What the kernel may touch is owned here until it is done with it:
//! - receive buffers live in one mapping the ring owns; a completion hands
//!   out a [`RecvBuf`] token, the bytes are read through the ring while the
//!   token is held, and [`Ring::recycle`] gives the buffer back to the
//!   kernel (the token is consumed, so no slice of it can outlive that);
//! - a send moves its `Vec` into the ring, which returns it with the send's
//!   completion, so no buffer can be freed while the kernel reads it;
//! - when the ring is dropped with operations still in the kernel, the
//!   memory they may touch is leaked rather than freed (workers drop their
//!   ring only when the server stops).
//!
//! File descriptors are not owned here: the kernel takes its own reference
//! to the file when it issues an operation, so closing one early is no
//! memory hazard; the worker still keeps each socket open until its
//! operations complete, so a reused descriptor number is never the target.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

/// The provided-buffer group the receives use.
const BGID: u16 = 0;

/// How a worker's ring is made.
#[derive(Clone, Copy, Debug)]
pub struct RingConfig {
    /// Submission queue entries (the completion queue has twice as many).
    pub entries: u32,
    /// `Some(ms)`: a kernel thread polls the submission queue (SQPOLL),
    /// sleeping after `ms` idle; submitting then needs no system call.
    pub sqpoll_idle_ms: Option<u32>,
    /// Provided receive buffers: how many (a power of two) and how large.
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
}

/// Whether this kernel and this process's seccomp profile give us what the
/// uring worker needs: a ring, the operations it submits, and a provided
/// buffer ring (5.19; multishot receive is 6.0). The error says why not.
pub fn probe() -> io::Result<()> {
    let cfg = RingConfig { entries: 8, sqpoll_idle_ms: None, recv_buffers: 2, recv_buffer_size: 4096 };
    let ring = Ring::new(cfg)?;
    let mut p = Probe::new();
    ring.ring.submitter().register_probe(&mut p)?;
    for (code, name) in [
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::PollAdd::CODE, "poll_add"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
    ] {
        if !p.is_supported(code) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("io_uring has no {name} operation here")));
        }
    }
    Ok(())
}

/// A received buffer, held by the worker until it calls [`Ring::recycle`].
#[derive(Debug)]
pub struct RecvBuf {
    bid: u16,
    len: u32,
}

/// One completion, with what the ring held for it.
#[derive(Debug)]
pub struct Completion {
    pub user_data: u64,
    /// The operation's result: bytes, or a negated errno.
    pub result: i32,
    /// A multishot operation goes on producing completions.
    pub more: bool,
    /// A receive's data.
    pub received: Option<RecvBuf>,
    /// A send's buffer, back from the kernel.
    pub sent: Option<Vec<u8>>,
}

/// The receive buffers: `count` buffers of `size` bytes in one mapping, and
/// the ring of entries through which the kernel is given them.
struct BufRing {
    /// `count` `io_uring_buf` entries; the tail is in the first one.
    _entries: ManuallyDrop<memmap2::MmapMut>,
    _data: ManuallyDrop<memmap2::MmapMut>,
    entries_ptr: *mut types::BufRingEntry,
    data_ptr: *mut u8,
    count: u16,
    size: u32,
    /// The tail we publish: entries before it are the kernel's.
    tail: u16,
}

/// A worker's io_uring.
pub struct Ring {
    ring: IoUring,
    bufs: BufRing,
    /// Sends the kernel holds, by user data (the worker's own numbers, so
    /// an unkeyed hash).
    sends: rustc_hash::FxHashMap<u64, Vec<u8>>,
}

impl Ring {
    /// Set up the ring and register its receive buffers. Fails with the
    /// kernel's error where io_uring is missing or forbidden (ENOSYS, EPERM).
    pub fn new(cfg: RingConfig) -> io::Result<Ring> {
        if !cfg.recv_buffers.is_power_of_two() || cfg.recv_buffers > 1 << 15 || cfg.recv_buffer_size == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "receive buffers: a power of two, at most 32768"));
        }
        let ring = match cfg.sqpoll_idle_ms {
            Some(ms) => IoUring::builder().setup_sqpoll(ms).build(cfg.entries)?,
            // Completions wait for our next io_uring_enter (which the
            // TASKRUN flag asks for) instead of interrupting the worker for
            // each arrival: one kernel entry per loop iteration, not one per
            // receive. 6.1; older kernels get the default.
            None => IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag()
                .build(cfg.entries)
                .or_else(|_| IoUring::new(cfg.entries))?,
        };
        let entry_bytes = std::mem::size_of::<types::BufRingEntry>() * cfg.recv_buffers as usize;
        let mut entries = ManuallyDrop::new(memmap2::MmapMut::map_anon(entry_bytes)?);
        let mut data =
            ManuallyDrop::new(memmap2::MmapMut::map_anon(cfg.recv_buffers as usize * cfg.recv_buffer_size as usize)?);
        let entries_ptr = entries.as_mut_ptr().cast::<types::BufRingEntry>();
        let data_ptr = data.as_mut_ptr();
        let mut bufs = BufRing {
            _entries: entries,
            _data: data,
            entries_ptr,
            data_ptr,
            count: cfg.recv_buffers,
            size: cfg.recv_buffer_size,
            tail: 0,
        };
        // SAFETY: the entries mapping is page aligned, holds `count` entries,
        // and lives as long as the ring (it is leaked, never unmapped, so it
        // outlives the registration even when the ring is dropped).
        unsafe { ring.submitter().register_buf_ring_with_flags(entries_ptr as u64, cfg.recv_buffers, BGID, 0)? };
        for bid in 0..cfg.recv_buffers {
            bufs.push(bid);
        }
        bufs.publish();
        Ok(Ring { ring, bufs, sends: Default::default() })
    }

    /// Queue an entry, submitting first when the queue is full.
    fn push(&mut self, e: squeue::Entry) -> io::Result<()> {
        for _ in 0..2 {
            // SAFETY: every entry built in this file points only at memory
            // the ring keeps alive until its completion: the receive buffers
            // (leaked, never freed while registered) or a send's Vec, which
            // `sends` owns until the send completes.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
        Err(io::Error::other("the io_uring submission queue stays full"))
    }

    /// A multishot receive into the provided buffers: one completion per
    /// arrival until it ends (no `more`), at EOF, on error, when buffers run
    /// out (ENOBUFS) or when cancelled.
    pub fn recv_multishot(&mut self, fd: BorrowedFd<'_>, user_data: u64) -> io::Result<()> {
        let e = opcode::RecvMulti::new(types::Fd(fd.as_raw_fd()), BGID).build().user_data(user_data);
        self.push(e)
    }

    /// Send `buf[from..]`; the ring holds `buf` until the completion hands it
    /// back. One send per `user_data` at a time.
    pub fn send(&mut self, fd: BorrowedFd<'_>, buf: Vec<u8>, from: usize, user_data: u64) -> io::Result<()> {
        if from >= buf.len() || self.sends.contains_key(&user_data) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an empty send, or one already in flight"));
        }
        let len = (buf.len() - from).min(u32::MAX as usize) as u32;
        let ptr = buf[from..].as_ptr();
        let e = opcode::Send::new(types::Fd(fd.as_raw_fd()), ptr, len)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build()
            .user_data(user_data);
        // The Vec's heap buffer does not move when the Vec does.
        self.sends.insert(user_data, buf);
        let pushed = self.push(e);
        if pushed.is_err() {
            self.sends.remove(&user_data);
        }
        pushed
    }

    /// One readiness completion when `fd` is readable.
    pub fn poll_readable(&mut self, fd: BorrowedFd<'_>, user_data: u64) -> io::Result<()> {
        let e = opcode::PollAdd::new(types::Fd(fd.as_raw_fd()), libc::POLLIN as u32).build().user_data(user_data);
        self.push(e)
    }

    /// Ask the kernel to cancel the operation with user data `target`.
    pub fn cancel(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        self.push(opcode::AsyncCancel::new(target).build().user_data(user_data))
    }

    /// Submit what is queued, in one system call, or none when nothing is
    /// queued (or the SQPOLL thread is awake). `wait`: then also wait for a
    /// completion, at most this long (`Some(None)`: without limit).
    pub fn submit(&mut self, wait: Option<Option<Duration>>) -> io::Result<()> {
        let r = match wait {
            None => {
                let mut sq = self.ring.submission();
                sq.sync();
                if sq.is_empty() && !sq.cq_overflow() && !sq.taskrun() {
                    return Ok(());
                }
                drop(sq);
                self.ring.submit()
            }
            Some(None) => self.ring.submit_and_wait(1),
            Some(Some(d)) => {
                let ts = types::Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Move every completion there is into `out`.
    pub fn completions(&mut self, out: &mut Vec<Completion>) {
        let (count, size) = (self.bufs.count, self.bufs.size);
        for cqe in self.ring.completion() {
            let (user_data, result, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            let received = match cqueue::buffer_select(flags) {
                // Bounded: a buffer id and length the kernel could not have
                // given us are not trusted.
                Some(bid) if bid < count && result > 0 && result as u32 <= size => {
                    Some(RecvBuf { bid, len: result as u32 })
                }
                _ => None,
            };
            let sent = if received.is_none() { self.sends.remove(&user_data) } else { None };
            out.push(Completion { user_data, result, more: cqueue::more(flags), received, sent });
        }
    }

    /// A received buffer's bytes.
    pub fn buffer(&self, b: &RecvBuf) -> &[u8] {
        // SAFETY: `bid < count` and `len <= size` (checked in completions),
        // so the range is inside the data mapping; the kernel writes a
        // buffer only while it is in the ring, and this one left the ring
        // with its completion and goes back only in `recycle`, which takes
        // the token (and `&mut self`) so this slice is gone by then.
        unsafe {
            std::slice::from_raw_parts(self.bufs.data_ptr.add(b.bid as usize * self.bufs.size as usize), b.len as usize)
        }
    }

    /// Give a received buffer back to the kernel.
    pub fn recycle(&mut self, b: RecvBuf) {
        self.bufs.push(b.bid);
        self.bufs.publish();
    }

    /// Whether a kernel thread polls this ring's submissions.
    pub fn sqpoll(&self) -> bool {
        self.ring.params().is_setup_sqpoll()
    }
}

impl BufRing {
    /// Put buffer `bid` in the ring (seen by the kernel once published).
    fn push(&mut self, bid: u16) {
        let slot = (self.tail & (self.count - 1)) as usize;
        let addr = self.data_ptr as u64 + bid as u64 * self.size as u64;
        // SAFETY: `slot < count`, inside the entries mapping; the kernel
        // reads entries only below the published tail, and this slot is at
        // or past it.
        let e = unsafe { &mut *self.entries_ptr.add(slot) };
        e.set_addr(addr);
        e.set_len(self.size);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publish the tail: the kernel may use every entry before it.
    fn publish(&mut self) {
        // SAFETY: the tail is a u16 inside the first entry, aligned, shared
        // with the kernel, which only reads it: an atomic store with Release
        // makes the entries written before it visible first.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries_ptr).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Operations may still be in the kernel (it tears the ring down
        // after the fd closes): leak what they may touch. The buffer
        // mappings are ManuallyDrop for the same reason.
        for (_, buf) in self.sends.drain() {
            std::mem::forget(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    /// Where io_uring is forbidden this fails (and says why) rather than
    /// pass silently: the uring worker's tests need it.
    fn ring() -> Ring {
        probe().unwrap_or_else(|e| panic!("io_uring unavailable here: {e}"));
        Ring::new(RingConfig { entries: 16, sqpoll_idle_ms: None, recv_buffers: 4, recv_buffer_size: 64 }).unwrap()
    }

    fn wait(r: &mut Ring, out: &mut Vec<Completion>) {
        out.clear();
        while out.is_empty() {
            r.submit(Some(Some(Duration::from_secs(5)))).unwrap();
            r.completions(out);
        }
    }

    #[test]
    fn receives_into_provided_buffers_and_sends_owned_ones() {
        let mut r = ring();
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        r.recv_multishot(b.as_fd(), 1).unwrap();
        a.write_all(b"hello").unwrap();
        let mut out = Vec::new();
        wait(&mut r, &mut out);
        let c = out.pop().unwrap();
        assert_eq!((c.user_data, c.result, c.more), (1, 5, true));
        let buf = c.received.unwrap();
        assert_eq!(r.buffer(&buf), b"hello");
        r.recycle(buf);
        r.send(b.as_fd(), b"xxworld".to_vec(), 2, 2).unwrap();
        wait(&mut r, &mut out);
        let c = out.pop().unwrap();
        assert_eq!((c.user_data, c.result), (2, 5));
        assert_eq!(c.sent.as_deref(), Some(&b"xxworld"[..]), "the send's buffer comes back");
        let mut got = [0u8; 5];
        a.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"world");
        // More than the buffers hold in total: the receive runs out (ENOBUFS)
        // or carries on once they are recycled; every byte arrives in order.
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        a.write_all(&data).unwrap();
        let mut seen = Vec::new();
        let mut armed = true;
        while seen.len() < data.len() {
            if !armed {
                r.recv_multishot(b.as_fd(), 1).unwrap();
                armed = true;
            }
            wait(&mut r, &mut out);
            for c in out.drain(..) {
                if let Some(buf) = c.received {
                    seen.extend_from_slice(r.buffer(&buf));
                    r.recycle(buf);
                }
                if !c.more {
                    assert!(c.result == -libc::ENOBUFS || c.result > 0, "ended with {}", c.result);
                    armed = false;
                }
            }
        }
        assert_eq!(seen, data);
        r.cancel(1, 3).unwrap();
        drop(a);
    }
}
