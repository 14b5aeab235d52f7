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
//! write waiting on the worker. Replica progress raises no event, so while
//! any reply is held the worker does not block for more than `HOLD_POLL`.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::accept::{accept_round, admission, AcceptEnd, ACCEPT_BACKOFF};
use super::conn::{Conn, Next, Scratch};
use super::listen::{Listener, Stream};
use super::Shared;
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
/// The longest a worker blocks while replies are held for replicas.
const HOLD_POLL: Duration = Duration::from_millis(1);
/// How often an idle worker moves queued `watch` lines to its watchers.
const WATCH_POLL: Duration = Duration::from_millis(10);

pub struct Worker {
    id: usize,
    epoll: Epoll,
    /// This worker's listeners: its own SO_REUSEPORT socket per address, or
    /// its descriptor of the UNIX socket.
    listeners: Vec<Listener>,
    store: Arc<Store>,
    shared: Arc<Shared>,
    /// Each connection with the epoll interest currently registered for it.
    conns: HashMap<u64, (Conn, EpollFlags)>,
    /// Each connection's entry in the runtime's `stats conns` table.
    conn_info: HashMap<u64, Arc<ConnInfo>>,
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
    /// Connections holding replies for `--sync-replicas`, and a list of
    /// them kept for reuse while settling.
    holding: HashSet<u64>,
    settling: Vec<u64>,
    /// Connections streaming `watch` events: served on every poll, which
    /// wakes at least every `WATCH_POLL` while there are any.
    watching: HashSet<u64>,
    /// When `-o idle_timeout` next looks for idle connections.
    next_idle_check: Instant,
}

/// How often `-o idle_timeout` looks (memcached's timeout thread wakes about
/// once a second too).
const IDLE_CHECK: Duration = Duration::from_secs(1);

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
            conns: HashMap::new(),
            conn_info: HashMap::new(),
            next_token: 0,
            scratch: Scratch::default(),
            accept_paused_until: None,
            accept_failing: false,
            rdma: None,
            holding: HashSet::new(),
            watching: HashSet::new(),
            settling: Vec::new(),
            next_idle_check: Instant::now() + IDLE_CHECK,
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
            let poll = match (self.holding.is_empty(), self.watching.is_empty()) {
                (true, true) if self.shared.rt.settings.idle_timeout > 0 && !self.conns.is_empty() => {
                    Some(self.next_idle_check.saturating_duration_since(Instant::now()))
                }
                (true, true) => None,
                (false, _) => Some(HOLD_POLL),
                (true, false) => Some(WATCH_POLL),
            };
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

    /// Settle every connection holding replies against the replicas'
    /// progress, read once; serve those whose replies went. Returns whether
    /// any did.
    fn settle(&mut self) -> bool {
        if self.holding.is_empty() {
            return false;
        }
        let confirmed = self.store.sync_confirmed();
        let now = Instant::now();
        let mut tokens = std::mem::take(&mut self.settling);
        tokens.clear();
        tokens.extend(self.holding.iter().copied());
        let mut any = false;
        for &token in &tokens {
            let Some((conn, _)) = self.conns.get_mut(&token) else {
                self.holding.remove(&token);
                continue;
            };
            let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
            if conn.settle(confirmed, now, &ctx) {
                any = true;
                self.serve(token);
            }
        }
        self.settling = tokens;
        any
    }

    /// Serve every watcher, to move its queued lines out.
    fn feed_watchers(&mut self) {
        if self.watching.is_empty() {
            return;
        }
        let mut tokens = std::mem::take(&mut self.settling);
        tokens.clear();
        tokens.extend(self.watching.iter().copied());
        for &token in &tokens {
            match self.conns.get(&token) {
                Some((conn, _)) if conn.watch_has_lines() => self.serve(token),
                Some(_) => {}
                None => {
                    self.watching.remove(&token);
                }
            }
        }
        self.settling = tokens;
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
        self.holding.remove(&token);
        self.watching.remove(&token);
        self.shared.rt.connections.curr.fetch_sub(1, Ordering::AcqRel);
    }

    /// `-o idle_timeout=S`: close connections whose last request is more
    /// than S seconds old, as memcached does (not one holding replies for
    /// `--sync-replicas` or streaming `watch`: they are waiting on us).
    fn kick_idle(&mut self) {
        let limit = u64::from(self.shared.rt.settings.idle_timeout);
        if limit == 0 || Instant::now() < self.next_idle_check {
            return;
        }
        self.next_idle_check = Instant::now() + IDLE_CHECK;
        let idle: Vec<u64> = self
            .conn_info
            .iter()
            .filter(|(t, i)| i.idle_secs() > limit && !self.holding.contains(t) && !self.watching.contains(t))
            .map(|(t, _)| *t)
            .collect();
        for token in idle {
            self.close(token, "idle_timeout");
            self.shared.rt.connections.idle_kicks.fetch_add(1, Ordering::Relaxed);
        }
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
        if conn.watching() {
            self.watching.insert(token);
        }
        if conn.holding() {
            self.holding.insert(token);
        } else if !self.holding.is_empty() {
            self.holding.remove(&token);
        }
        // epoll_ctl only when the interest changes: it is a syscall per request otherwise.
        if interest != *registered {
            let mut ev = EpollEvent::new(interest, token);
            let _ = self.epoll.modify(conn.stream.as_fd(), &mut ev);
            *registered = interest;
        }
    }
}
