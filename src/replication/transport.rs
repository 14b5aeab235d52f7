//! The transport interface: the three one-sided operations a replica needs
//! from its primary. `shm` (same host) and `verbs` (RDMA RC) implement it;
//! tests wrap it to tear and corrupt what it returns.

use std::time::Duration;

use crate::error::Result;
use crate::log::control::ControlSnapshot;

/// What a replica writes into its progress slot on the primary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Everything below this position is applied.
    pub applied: u64,
    /// The epoch the replica believes in (a higher one fences a stale primary).
    pub epoch: u64,
    /// Wall-clock microseconds when the replica was last caught up with the
    /// head it had seen (the primary derives lag from it).
    pub caught_up_us: u64,
}

/// Picks the range to read ahead from the bytes just read (see `read_ahead`).
pub type NextRead<'a> = &'a mut dyn FnMut(&[u8]) -> Option<(usize, usize)>;

pub trait Transport: Send {
    /// Fetch the control block's fixed fields (head, tail, epoch, heartbeat...).
    fn control(&mut self) -> Result<ControlSnapshot>;

    /// One-sided read of `len` bytes at region offset `off`. The bytes are
    /// complete (the completion was signalled) when this returns; they may
    /// still be torn by the primary's cleaner, which the caller validates.
    fn read(&mut self, off: usize, len: usize) -> Result<&[u8]>;

    /// `read(off, len)`, and then start reading the `(off, len)` that `next`
    /// picks from those bytes, in the background, so the network works while
    /// the caller validates and applies (a later `read_ahead` or `read` of
    /// exactly that range collects it). `next` sees the bytes because the
    /// next read starts where the last whole record in them ends. Transports
    /// without asynchronous reads just read.
    fn read_ahead(&mut self, off: usize, len: usize, next: NextRead<'_>) -> Result<&[u8]> {
        let _ = next;
        self.read(off, len)
    }

    /// `read_ahead`, and the primary's tail as loaded after the copy and an
    /// Acquire fence, where the transport can order the two (shm): the
    /// fence pairs with the cleaner's between publishing its tail and
    /// overwriting (`LogWriter::publish_tail`), so bytes at positions at or
    /// above that tail were copied intact. `None` where the transport
    /// cannot order a reload after its copy (verbs: the record checksum is
    /// the guard there).
    fn read_ahead_checked(&mut self, off: usize, len: usize, next: NextRead<'_>) -> Result<(&[u8], Option<u64>)> {
        Ok((self.read_ahead(off, len, next)?, None))
    }

    /// Write this replica's progress slot on the primary. It may return
    /// before the write lands; a later `control` or `read` returning means it
    /// has (one-sided operations on one connection complete in order).
    fn report(&mut self, p: &Progress) -> Result<()>;

    /// The replica is idle, having seen the primary's head at `head`: wait
    /// up to about `d` (longer where the primary rings for every write that
    /// waits on us) for the primary to ring, or `interrupted` (checked last
    /// before sleeping) to say stop, and return true; or return false at
    /// once if this transport has no doorbell (verbs: a remote replica
    /// polls), and the caller waits on its own.
    fn idle_wait(&mut self, head: u64, d: Duration, interrupted: &dyn Fn() -> bool) -> bool {
        let _ = (head, d, interrupted);
        false
    }

    /// What ends an `idle_wait` early from another thread (control requests:
    /// promotion, follow, stop); `None` without a doorbell.
    fn waker(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        None
    }

    /// Which progress slot this replica holds.
    fn slot(&self) -> usize;

    /// Leave our slot (and the epoch in it) in place when we go: after a
    /// promotion it is what fences the old primary.
    fn keep_slot(&mut self) {}

    /// For logs and stats: where the primary is.
    fn describe(&self) -> String;
}
