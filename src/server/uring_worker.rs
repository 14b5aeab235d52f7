//! A worker over io_uring (`--io uring`): the same connections, bounds and
//! limits as the epoll worker (worker.rs), with far fewer system calls.
//!
//! Each connection has one multishot receive into the ring's provided
//! buffers, armed once and re-armed only when it ends (EOF, ENOBUFS, a
//! cancel). What it receives is copied into the connection's `RingStream`
//! and the buffer goes straight back to the kernel; `Conn` then reads and
//! writes the `RingStream` exactly as it does a socket (conn.rs). Writes
//! are staged per connection and go out as one send each, and every
//! iteration submits all its sends and re-arms in one `io_uring_enter` (none
//! when there is nothing to submit; with SQPOLL under `--poll busy`, none
//! while the kernel's poller is awake). An adaptive worker that has been
//! idle for its spin budget waits in that same call.
//!
//! Listeners and the shutdown eventfd are watched with one-shot polls,
//! re-armed after each: accept itself is the listener's `accept(2)`, so
//! out-of-descriptors handling is the epoll worker's (stop watching for
//! `ACCEPT_BACKOFF`). A closed connection's socket stays open until its
//! receive is cancelled and its last send (a reply before `quit`, an error
//! before the close) has gone, then closes.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::accept::{accept_round, admission, AcceptEnd, ACCEPT_BACKOFF};
use super::conn::{Conn, Next, Scratch};
use super::listen::{Listener, Stream};
use super::uring_stream::{RingStream, SendDone};
use super::waiters::{Visits, Waiters, IDLE_CHECK};
use super::{Shared, TokenMap};
use crate::error::{Context, Result};
use crate::memory::uring::{Completion, Ring, RingConfig};
use crate::protocol::Ctx;
use crate::runtime::PollMode;
use crate::stats::conns::ConnInfo;
use crate::stats::watch::CONNEVENTS;
use crate::store::Store;

/// User data: an id (a connection's token, a listener, the waker) shifted
/// past the operation kind.
const KIND_BITS: u32 = 2;
const RECV: u64 = 0;
const SEND: u64 = 1;
const CANCEL: u64 = 2;
const POLL: u64 = 3;
const WAKER: u64 = u64::MAX >> KIND_BITS;
/// Listener `i` is `LISTENER - i`; connection tokens count up from 0.
const LISTENER: u64 = WAKER - 16;
const MAX_LISTENERS: usize = 1 << 20;

/// Send buffers a worker keeps for its connections' next replies: a large
/// reply then reuses one instead of growing (and faulting in) a new one.
const SEND_POOL: usize = 16;
/// Larger ones are not kept (a batch is at most 256 KiB; Vec growth may double it).
const SEND_POOL_MAX: usize = 512 << 10;

fn pool_send_buffer(pool: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    if pool.len() < SEND_POOL && buf.capacity() <= SEND_POOL_MAX {
        buf.clear();
        pool.push(buf);
    }
}

fn ud(id: u64, kind: u64) -> u64 {
    (id << KIND_BITS) | kind
}

/// The longest a closed connection's last output may take to go.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Ring size, and the provided receive buffers (4 MiB a worker).
const RING_ENTRIES: u32 = 1024;
const RECV_BUFFERS: u16 = 256;
const RECV_BUFFER_SIZE: u32 = 16 << 10;
/// SQPOLL's kernel thread sleeps after this long without submissions.
const SQPOLL_IDLE_MS: u32 = 50;

pub struct UringWorker {
    id: usize,
    ring: Ring,
    listeners: Vec<Listener>,
    store: Arc<Store>,
    shared: Arc<Shared>,
    conns: TokenMap<Conn<RingStream>>,
    conn_info: TokenMap<Arc<ConnInfo>>,
    /// Closed connections whose sockets wait for their operations to end.
    /// With when each began: one that has not finished in `DRAIN_LIMIT`
    /// (a client that stopped reading) is shut down, so closed connections
    /// cannot hold descriptors past the `-c` limit.
    draining: TokenMap<(RingStream, Instant)>,
    next_drain_check: Instant,
    next_token: u64,
    scratch: Scratch,
    /// Connections to serve this iteration (each once: `RingStream::queued`).
    ready: Vec<u64>,
    completions: Vec<Completion>,
    /// Send buffers between uses (see `pool_send_buffer`).
    send_pool: Vec<Vec<u8>>,
    accept_paused_until: Option<Instant>,
    accept_failing: bool,
    /// Each listener's poll is in the kernel (so a resume arms only the
    /// ones that are not: one poll per listener, never two).
    listener_armed: Vec<bool>,
    /// Held replies, watchers and the idle check (see waiters.rs).
    waiters: Waiters,
}

/// The ring a worker gets (SQPOLL under `--poll busy`).
pub fn ring_config(poll: PollMode) -> RingConfig {
    RingConfig {
        entries: RING_ENTRIES,
        sqpoll_idle_ms: (poll == PollMode::Busy).then_some(SQPOLL_IDLE_MS),
        recv_buffers: RECV_BUFFERS,
        recv_buffer_size: RECV_BUFFER_SIZE,
    }
}

impl UringWorker {
    pub fn new(id: usize, listeners: Vec<Listener>, store: Arc<Store>, shared: Arc<Shared>) -> Result<UringWorker> {
        if listeners.len() > MAX_LISTENERS {
            crate::bail!("{} listen addresses: at most {MAX_LISTENERS}", listeners.len());
        }
        let mut ring = Ring::new(ring_config(shared.rt.settings.poll)).context("setting up the worker's io_uring")?;
        for (i, l) in listeners.iter().enumerate() {
            ring.poll_readable(l.as_fd(), ud(LISTENER - i as u64, POLL)).context("watching the listener")?;
            shared.rt.conn_table.add_listener(l.as_fd().as_raw_fd(), l.stats_addr());
        }
        ring.poll_readable(shared.wakers[id].as_fd(), ud(WAKER, POLL)).context("watching the shutdown eventfd")?;
        let listener_armed = vec![true; listeners.len()];
        Ok(UringWorker {
            id,
            ring,
            listeners,
            store,
            shared,
            conns: TokenMap::default(),
            conn_info: TokenMap::default(),
            draining: TokenMap::default(),
            next_drain_check: Instant::now() + IDLE_CHECK,
            next_token: 0,
            scratch: Scratch::default(),
            ready: Vec::new(),
            completions: Vec::with_capacity(256),
            send_pool: Vec::new(),
            accept_paused_until: None,
            accept_failing: false,
            listener_armed,
            waiters: Waiters::new(),
        })
    }

    pub fn run(mut self) -> Result<()> {
        let mut idle = 0u32;
        let (mode, budget) = (self.shared.rt.settings.poll, self.shared.rt.settings.idle_spins);
        while !self.shared.is_shutting_down() {
            let mut worked = self.settle();
            self.feed_watchers();
            self.kick_idle();
            self.end_draining();
            self.resume_accepting()?;
            let mut batch = std::mem::take(&mut self.completions);
            self.ring.completions(&mut batch);
            worked |= !batch.is_empty();
            for c in batch.drain(..) {
                self.complete(c)?;
            }
            self.completions = batch;
            let ready = std::mem::take(&mut self.ready);
            worked |= !ready.is_empty();
            for &token in &ready {
                self.serve(token);
            }
            if self.ready.is_empty() {
                self.ready = ready;
                self.ready.clear();
            }
            idle = if worked { 0 } else { idle.saturating_add(1) };
            let block = mode == PollMode::Adaptive && idle >= budget && self.ready.is_empty();
            // A wait of nothing (replies held a moment ago: see waiters.rs)
            // is a poll, which needs no kernel entry when nothing is queued.
            let wait = block.then(|| self.wake_in()).filter(|w| *w != Some(Duration::ZERO));
            self.ring.submit(wait).context("io_uring_enter")?;
        }
        let open = self.conns.len() as u64;
        self.shared.rt.connections.curr.fetch_sub(open, Ordering::Relaxed);
        let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
        for conn in self.conns.values_mut() {
            conn.release(&ctx);
            conn.stream.account(&ctx.rt.buffers, true);
        }
        Ok(())
    }

    /// How long a blocking wait may last: until the next timer this worker
    /// keeps (idle check, held replies, watchers, accept backoff), or
    /// without limit.
    fn wake_in(&self) -> Option<Duration> {
        let poll = match self.waiters.poll_within(self.shared.rt.settings.idle_timeout, !self.conns.is_empty()) {
            None if !self.draining.is_empty() => Some(self.next_drain_check.saturating_duration_since(Instant::now())),
            p => p,
        };
        let wake = match (self.accept_paused_until, poll) {
            (t, None) => t,
            (Some(t), Some(p)) => Some(t.min(Instant::now() + p)),
            (None, Some(p)) => Some(Instant::now() + p),
        };
        wake.map(|t| t.saturating_duration_since(Instant::now()))
    }

    fn complete(&mut self, c: Completion) -> Result<()> {
        let (id, kind) = (c.user_data >> KIND_BITS, c.user_data & ((1 << KIND_BITS) - 1));
        match kind {
            POLL if id == WAKER => {
                let _ = self.shared.wakers[self.id].read();
                self.ring
                    .poll_readable(self.shared.wakers[self.id].as_fd(), ud(WAKER, POLL))
                    .context("watching the shutdown eventfd")?;
            }
            POLL if id <= LISTENER && id > LISTENER - self.listeners.len() as u64 => {
                let which = (LISTENER - id) as usize;
                self.listener_armed[which] = false;
                self.accept_all(which);
                if self.accept_paused_until.is_none() {
                    self.ring
                        .poll_readable(self.listeners[which].as_fd(), ud(id, POLL))
                        .context("watching the listener")?;
                    self.listener_armed[which] = true;
                }
            }
            RECV | SEND => self.socket_done(id, kind, c),
            _ => {} // a cancel's own completion
        }
        Ok(())
    }

    /// A receive or send of connection `token` completed.
    fn socket_done(&mut self, token: u64, kind: u64, c: Completion) {
        let live = self.conns.get_mut(&token).map(|conn| &mut conn.stream);
        let closed = live.is_none();
        let Some(s) = live.or_else(|| self.draining.get_mut(&token).map(|(s, _)| s)) else {
            // Neither live nor draining: the socket is gone; give the buffer back.
            if let Some(b) = c.received {
                self.ring.recycle(b);
            }
            return;
        };
        if kind == RECV {
            if let Some(b) = c.received {
                s.received(self.ring.buffer(&b));
                self.ring.recycle(b);
            } else if c.result == 0 {
                s.eof = true;
            } else if c.result < 0 && !matches!(-c.result, libc::ENOBUFS | libc::ECANCELED) {
                s.failed = true;
            }
            if !c.more {
                s.recv_armed = false;
                s.cancelling = false;
            }
        } else if let Some(buf) = c.sent {
            match s.sent(buf, c.result) {
                SendDone::Again(buf, from) => {
                    if self.ring.send(s.as_fd(), buf, from, ud(token, SEND)).is_err() {
                        s.failed = true;
                    }
                }
                SendDone::Free(buf) => pool_send_buffer(&mut self.send_pool, buf),
                SendDone::Failed => {}
            }
        }
        let serve = kind == RECV || s.failed || std::mem::take(&mut s.awaits_send);
        if closed {
            // What was staged behind the last send goes before the close.
            if let Some(buf) = s.take_send() {
                if self.ring.send(s.as_fd(), buf, 0, ud(token, SEND)).is_err() {
                    s.failed = true;
                }
            }
            if s.quiet() {
                self.draining.remove(&token);
            }
        } else if serve && !s.queued {
            s.queued = true;
            self.ready.push(token);
        }
    }

    /// Accept what the listener has, up to `ACCEPTS_PER_EVENT` (its poll is
    /// re-armed after, so the rest come next iteration). Out of
    /// descriptors, its poll is not re-armed for `ACCEPT_BACKOFF`.
    fn accept_all(&mut self, which: usize) {
        let mut accepted = Vec::new();
        let end = accept_round(&self.listeners[which], &self.shared, self.id, &mut self.accept_failing, &mut accepted);
        for stream in accepted {
            self.admit(stream);
        }
        if end == AcceptEnd::OutOfFds {
            self.accept_paused_until.get_or_insert(Instant::now() + ACCEPT_BACKOFF);
        }
    }

    fn resume_accepting(&mut self) -> Result<()> {
        match self.accept_paused_until {
            Some(t) if Instant::now() >= t => {
                for (i, l) in self.listeners.iter().enumerate() {
                    if !self.listener_armed[i] {
                        self.ring
                            .poll_readable(l.as_fd(), ud(LISTENER - i as u64, POLL))
                            .context("watching the listener again")?;
                        self.listener_armed[i] = true;
                    }
                }
                self.accept_paused_until = None;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn admit(&mut self, mut stream: Stream) {
        if !admission(&self.shared, &mut stream) {
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        let mut conn = Conn::new(RingStream::new(stream));
        if self.ring.recv_multishot(conn.stream.as_fd(), ud(token, RECV)).is_err() {
            self.shared.rt.connections.curr.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        conn.stream.recv_armed = true;
        let fd = conn.stream.as_fd().as_raw_fd();
        if self.shared.rt.watch.wants(CONNEVENTS) {
            let (rip, transport) = conn.stream.socket.watch_peer();
            self.shared.rt.watch.conn_new(rip, transport, fd);
        }
        let (peer, local) = conn.stream.socket.stats_addrs();
        self.conn_info.insert(token, self.shared.rt.conn_table.register(fd, peer, local));
        self.conns.insert(token, conn);
    }

    /// Forget connection `token`; its socket closes once the kernel is done
    /// with it (its receive cancelled, its last output sent).
    fn close(&mut self, token: u64, reason: &str) {
        let Some(mut conn) = self.conns.remove(&token) else { return };
        let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
        let fd = conn.stream.as_fd().as_raw_fd();
        if ctx.rt.watch.wants(CONNEVENTS) {
            let (rip, transport) = conn.stream.socket.watch_peer();
            ctx.rt.watch.conn_close(rip, transport, reason, fd);
        }
        conn.release(&ctx);
        let mut s = conn.stream;
        s.account(&ctx.rt.buffers, true);
        if reason != "normal" {
            // Kicked (idle_timeout): nothing more is owed to this client.
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
        self.shared.rt.conn_table.unregister(fd);
        self.conn_info.remove(&token);
        self.waiters.forget(token);
        self.shared.rt.connections.curr.fetch_sub(1, Ordering::AcqRel);
        if let Some(buf) = s.take_send() {
            if self.ring.send(s.as_fd(), buf, 0, ud(token, SEND)).is_err() {
                s.failed = true;
            }
        }
        if s.recv_armed && !s.cancelling {
            s.cancelling = self.ring.cancel(ud(token, RECV), ud(token, CANCEL)).is_ok();
        }
        if !s.quiet() {
            self.draining.insert(token, (s, Instant::now()));
        }
    }

    /// Shut down the sockets of closed connections whose last output has
    /// not gone within `DRAIN_LIMIT`: their operations then fail, and the
    /// socket closes with their completions.
    fn end_draining(&mut self) {
        if self.draining.is_empty() || Instant::now() < self.next_drain_check {
            return;
        }
        self.next_drain_check = Instant::now() + IDLE_CHECK;
        for (s, since) in self.draining.values_mut() {
            if since.elapsed() >= DRAIN_LIMIT && !s.failed {
                s.failed = true;
                let _ = nix::sys::socket::shutdown(s.as_fd().as_raw_fd(), nix::sys::socket::Shutdown::Both);
            }
        }
    }

    fn serve(&mut self, token: u64) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        conn.stream.queued = false;
        if let Some(buf) = self.send_pool.pop() {
            if let Some(buf) = conn.stream.lend(buf) {
                self.send_pool.push(buf);
            }
        }
        let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
        let info = self.conn_info.get(&token);
        info.inspect(|i| i.serving(true));
        let next = conn.on_ready(&ctx, &mut self.scratch);
        info.inspect(|i| i.serving(false));
        if next == Next::Close {
            return self.close(token, "normal");
        }
        let s = &mut conn.stream;
        if let Some(buf) = s.take_send() {
            if self.ring.send(s.as_fd(), buf, 0, ud(token, SEND)).is_err() {
                s.failed = true;
            }
        }
        if s.wants_recv() {
            s.recv_armed = self.ring.recv_multishot(s.as_fd(), ud(token, RECV)).is_ok();
        } else if s.wants_cancel() {
            s.cancelling = self.ring.cancel(ud(token, RECV), ud(token, CANCEL)).is_ok();
        }
        // Output waiting for the send in flight: its completion serves the
        // connection again. Otherwise output or requests wait for room or
        // their turn: come back next iteration, as a writable socket would;
        // and so does input left over from one read.
        if let Some(buf) = s.spare() {
            pool_send_buffer(&mut self.send_pool, buf);
        }
        s.awaits_send = next == Next::Write && s.sending();
        let again = match next {
            Next::Write => !s.sending(),
            _ => s.unread() > 0,
        };
        s.account(&ctx.rt.buffers, false);
        if (again || s.failed) && !s.queued {
            s.queued = true;
            self.ready.push(token);
        }
        self.waiters.note(token, conn.holding(), conn.watching());
    }
}

impl Visits for UringWorker {
    fn waiters(&mut self) -> &mut Waiters {
        &mut self.waiters
    }

    fn runtime(&self) -> &crate::runtime::Runtime {
        &self.shared.rt
    }

    fn conn_infos(&self) -> &TokenMap<Arc<ConnInfo>> {
        &self.conn_info
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn settle_conn(&mut self, token: u64, confirmed: u64, now: Instant) -> Option<bool> {
        let conn = self.conns.get_mut(&token)?;
        let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
        Some(conn.settle(confirmed, now, &ctx))
    }

    fn has_watch_lines(&self, token: u64) -> Option<bool> {
        self.conns.get(&token).map(|c| c.watch_has_lines())
    }

    fn serve(&mut self, token: u64) {
        UringWorker::serve(self, token)
    }

    fn close(&mut self, token: u64, reason: &str) {
        UringWorker::close(self, token, reason)
    }
}
