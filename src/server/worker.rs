//! A worker: one thread, one epoll set, its own connections.
//!
//! The loop busy-polls (`epoll_wait` with a zero timeout) while there is
//! work. In adaptive mode, after `idle_spins` empty polls it blocks in
//! `epoll_wait` until a socket or its eventfd (shutdown) is ready; in busy
//! mode it never blocks. Every worker has its own listening socket on the
//! shared port (SO_REUSEPORT) and accepts for itself.
//!
//! When accept runs out of file descriptors (EMFILE, ENFILE), the worker
//! takes its listener out of the epoll set for `ACCEPT_BACKOFF` (the epoll
//! timeout brings it back) rather than spin on a listener that stays
//! readable; connections wait in the backlog meanwhile, as in memcached.
//!
//! Under `--sync-replicas` connections hold write replies (see conn.rs):
//! every iteration reads the replicas' progress once and settles each
//! holding connection against it, so one replica round trip releases every
//! write waiting on the worker (src/server/waiters.rs, shared with the
//! io_uring loop, says how long the worker polls before it blocks).

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::accept::{accept_round, admission, AcceptEnd, ACCEPT_BACKOFF};
use super::conn::{Conn, Next, Scratch};
use super::listen::{Listener, Stream};
use super::waiters::{Visits, Waiters};
use super::{Shared, TokenMap};
use crate::error::{Context, Result};
use crate::protocol::Ctx;
use crate::runtime::PollMode;
use crate::stats::conns::ConnInfo;
use crate::stats::watch::CONNEVENTS;
use crate::store::Store;
use std::os::fd::AsRawFd;

const WAKER: u64 = u64::MAX - 1;
/// The RDMA endpoint's completion channel (see rdma/mod.rs).
const RDMA: u64 = u64::MAX - 2;
/// Listener `i` (one per `-l` address, or the `-s` socket) is `LISTENER - i`;
/// connection tokens count up from 0 and never get near.
const LISTENER: u64 = u64::MAX - 16;
const MAX_LISTENERS: usize = 1 << 20;

pub struct Worker {
    id: usize,
    epoll: Epoll,
    /// This worker's listeners: its own SO_REUSEPORT socket per address, or
    /// its descriptor of the UNIX socket.
    listeners: Vec<Listener>,
    store: Arc<Store>,
    shared: Arc<Shared>,
    /// Each connection with the epoll interest currently registered for it.
    conns: TokenMap<(Conn, EpollFlags)>,
    /// Each connection's entry in the runtime's `stats conns` table.
    conn_info: TokenMap<Arc<ConnInfo>>,
    next_token: u64,
    /// Read and reply buffers lent to the connection being served.
    scratch: Scratch,
    /// While accept is backing off: when to watch the listener again.
    accept_paused_until: Option<Instant>,
    /// Accept has run out of descriptors since it last succeeded (the
    /// warning is logged once per such stretch, not every backoff).
    accept_failing: bool,
    /// This worker's UD QP and RC connections (`--rdma-listen`).
    rdma: Option<super::rdma::WorkerRdma>,
    /// Held replies, watchers and the idle check (see waiters.rs).
    waiters: Waiters,
}

impl Worker {
    pub fn new(id: usize, listeners: Vec<Listener>, store: Arc<Store>, shared: Arc<Shared>) -> Result<Worker> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("creating epoll")?;
        if listeners.len() > MAX_LISTENERS {
            crate::bail!("{} listen addresses: at most {MAX_LISTENERS}", listeners.len());
        }
        // This worker's own SO_REUSEPORT sockets: only its connections wake it.
        for (i, l) in listeners.iter().enumerate() {
            epoll
                .add(l.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, LISTENER - i as u64))
                .context("watching the listener")?;
            shared.rt.conn_table.add_listener(l.as_fd().as_raw_fd(), l.stats_addr());
        }
        epoll
            .add(shared.wakers[id].as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKER))
            .context("watching the shutdown eventfd")?;
        Ok(Worker {
            id,
            epoll,
            listeners,
            store,
            shared,
            conns: TokenMap::default(),
            conn_info: TokenMap::default(),
            next_token: 0,
            scratch: Scratch::default(),
            accept_paused_until: None,
            accept_failing: false,
            rdma: None,
            waiters: Waiters::new(),
        })
    }

    /// Poll this RDMA endpoint too: its CQ on every iteration, its completion
    /// channel in the epoll set for when the worker blocks.
    pub fn with_rdma(mut self, rdma: Option<super::rdma::WorkerRdma>) -> Result<Worker> {
        if let Some(r) = &rdma {
            if let Some(fd) = r.channel_fd() {
                // The fd lives as long as `rdma`, which the worker owns.
                self.epoll
                    .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, RDMA))
                    .context("watching the RDMA completion channel")?;
            }
        }
        self.rdma = rdma;
        Ok(self)
    }

    pub fn run(mut self) -> Result<()> {
        let mut events = vec![EpollEvent::empty(); 256];
        let mut idle = 0u32;
        let (mode, budget) = (self.shared.rt.settings.poll, self.shared.rt.settings.idle_spins);
        while !self.shared.is_shutting_down() {
            if self.settle() {
                idle = 0;
            }
            self.feed_watchers();
            self.kick_idle();
            let mut block = mode == PollMode::Adaptive && idle >= budget;
            if let Some(r) = self.rdma.as_mut() {
                let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
                if r.poll(&ctx, block) {
                    idle = 0;
                    block = false;
                }
            }
            let poll = self.waiters.poll_within(self.shared.rt.settings.idle_timeout, !self.conns.is_empty());
            let wake = match (self.accept_paused_until, poll) {
                (t, None) => t,
                (Some(t), Some(p)) => Some(t.min(Instant::now() + p)),
                (None, Some(p)) => Some(Instant::now() + p),
            };
            let timeout = match (block, wake) {
                (false, _) => EpollTimeout::ZERO,
                (true, None) => EpollTimeout::NONE,
                // Round up: waking early would only wait again.
                (true, Some(t)) => {
                    let ms = t.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
                    EpollTimeout::from(ms.min(u16::MAX as u128) as u16)
                }
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => return Err(crate::error::Error::from(e).context("epoll_wait")),
            };
            self.resume_accepting()?;
            if n == 0 {
                idle = idle.saturating_add(1);
                continue;
            }
            idle = 0;
            for ev in &events[..n] {
                match ev.data() {
                    t if t <= LISTENER && t > LISTENER - self.listeners.len() as u64 => {
                        self.accept_all((LISTENER - t) as usize)
                    }
                    // Shutdown, or the RDMA side channel (a closed RC
                    // connection): the loop looks at both. Reset the counter,
                    // or the level-triggered eventfd would keep waking us.
                    WAKER => {
                        let _ = self.shared.wakers[self.id].read();
                    }
                    RDMA => {
                        if let Some(r) = &self.rdma {
                            r.drain_events();
                        }
                    }
                    token => self.serve(token),
                }
            }
        }
        let open = self.conns.len() as u64;
        self.shared.rt.connections.curr.fetch_sub(open, Ordering::Relaxed);
        let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
        for (conn, _) in self.conns.values_mut() {
            conn.release(&ctx);
        }
        Ok(())
    }

    /// Accept what the listener has, up to `ACCEPTS_PER_EVENT`: the
    /// listener is level-triggered, so the rest come next poll. Out of
    /// descriptors, stop watching the listeners for `ACCEPT_BACKOFF`.
    fn accept_all(&mut self, which: usize) {
        let mut accepted = Vec::new();
        let end = accept_round(&self.listeners[which], &self.shared, self.id, &mut self.accept_failing, &mut accepted);
        for stream in accepted {
            self.admit(stream);
        }
        if end == AcceptEnd::OutOfFds && self.accept_paused_until.is_none() {
            for l in &self.listeners {
                let _ = self.epoll.delete(l.as_fd());
            }
            self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
        }
    }

    /// After an accept backoff has run its time, watch the listener again.
    fn resume_accepting(&mut self) -> Result<()> {
        match self.accept_paused_until {
            Some(t) if Instant::now() >= t => {
                for (i, l) in self.listeners.iter().enumerate() {
                    self.epoll
                        .add(l.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, LISTENER - i as u64))
                        .context("watching the listener again")?;
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
        let conn = Conn::new(stream);
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        if self.epoll.add(conn.stream.as_fd(), EpollEvent::new(interest, token)).is_err() {
            self.shared.rt.connections.curr.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        if self.shared.rt.watch.wants(CONNEVENTS) {
            let (rip, transport) = conn.stream.watch_peer();
            self.shared.rt.watch.conn_new(rip, transport, conn.stream.as_fd().as_raw_fd());
        }
        let (peer, local) = conn.stream.stats_addrs();
        self.conn_info.insert(token, self.shared.rt.conn_table.register(conn.stream.as_fd().as_raw_fd(), peer, local));
        self.conns.insert(token, (conn, interest));
        // Clients often send their first request with the connect; serve it now.
        self.serve(token);
    }

    /// Forget connection `token` and close it (`reason` for `watch connevents`).
    fn close(&mut self, token: u64, reason: &str) {
        let Some((mut conn, _)) = self.conns.remove(&token) else { return };
        let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
        if ctx.rt.watch.wants(CONNEVENTS) {
            let (rip, transport) = conn.stream.watch_peer();
            ctx.rt.watch.conn_close(rip, transport, reason, conn.stream.as_fd().as_raw_fd());
        }
        conn.release(&ctx);
        let _ = self.epoll.delete(conn.stream.as_fd());
        self.shared.rt.conn_table.unregister(conn.stream.as_fd().as_raw_fd());
        self.conn_info.remove(&token);
        self.waiters.forget(token);
        self.shared.rt.connections.curr.fetch_sub(1, Ordering::AcqRel);
    }

    fn serve(&mut self, token: u64) {
        let Some((conn, registered)) = self.conns.get_mut(&token) else { return };
        let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
        let info = self.conn_info.get(&token);
        info.inspect(|i| i.serving(true));
        let next = conn.on_ready(&ctx, &mut self.scratch);
        info.inspect(|i| i.serving(false));
        let interest = match next {
            Next::Read => EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
            // Not reading while replies are pending is the backpressure.
            Next::Write => EpollFlags::EPOLLOUT,
            Next::Close => return self.close(token, "normal"),
        };
        self.waiters.note(token, conn.holding(), conn.watching());
        // epoll_ctl only when the interest changes: it is a syscall per request otherwise.
        if interest != *registered {
            let mut ev = EpollEvent::new(interest, token);
            let _ = self.epoll.modify(conn.stream.as_fd(), &mut ev);
            *registered = interest;
        }
    }
}

impl Visits for Worker {
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
        let (conn, _) = self.conns.get_mut(&token)?;
        let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
        Some(conn.settle(confirmed, now, &ctx))
    }

    fn has_watch_lines(&self, token: u64) -> Option<bool> {
        self.conns.get(&token).map(|(c, _)| c.watch_has_lines())
    }

    fn serve(&mut self, token: u64) {
        Worker::serve(self, token)
    }

    fn close(&mut self, token: u64, reason: &str) {
        Worker::close(self, token, reason)
    }
}
