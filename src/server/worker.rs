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

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::conn::{Conn, Next, Scratch};
use super::Shared;
use crate::error::{Context, Result};
use crate::protocol::Ctx;
use crate::runtime::PollMode;
use crate::store::Store;

const LISTENER: u64 = u64::MAX;
const WAKER: u64 = u64::MAX - 1;
/// The RDMA endpoint's completion channel (see rdma/mod.rs).
const RDMA: u64 = u64::MAX - 2;
/// Connections a worker accepts per readiness of its listener.
const ACCEPTS_PER_EVENT: usize = 64;
/// How long a worker stops accepting after accept ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

pub struct Worker {
    id: usize,
    epoll: Epoll,
    listener: TcpListener,
    store: Arc<Store>,
    shared: Arc<Shared>,
    /// Each connection with the epoll interest currently registered for it.
    conns: HashMap<u64, (Conn, EpollFlags)>,
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
}

impl Worker {
    pub fn new(id: usize, listener: TcpListener, store: Arc<Store>, shared: Arc<Shared>) -> Result<Worker> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("creating epoll")?;
        // This worker's own SO_REUSEPORT socket: only its connections wake it.
        epoll.add(listener.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, LISTENER)).context("watching the listener")?;
        epoll
            .add(shared.wakers[id].as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKER))
            .context("watching the shutdown eventfd")?;
        Ok(Worker {
            id,
            epoll,
            listener,
            store,
            shared,
            conns: HashMap::new(),
            next_token: 0,
            scratch: Scratch::default(),
            accept_paused_until: None,
            accept_failing: false,
            rdma: None,
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
            let mut block = mode == PollMode::Adaptive && idle >= budget;
            if let Some(r) = self.rdma.as_mut() {
                let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
                if r.poll(&ctx, block) {
                    idle = 0;
                    block = false;
                }
            }
            let timeout = match (block, self.accept_paused_until) {
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
                    LISTENER => self.accept_all(),
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
    /// listener is level-triggered, so the rest come next poll, after the
    /// connections already open have had their turn.
    fn accept_all(&mut self) {
        for _ in 0..ACCEPTS_PER_EVENT {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_failing = false;
                    // -vv, as memcached: one line per connection opened.
                    if self.shared.rt.verbosity() > 1 {
                        crate::log_debug!("worker {}: new client connection from {peer}", self.id);
                    }
                    self.admit(stream)
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of descriptors: the listener stays readable, so
                    // stop watching it for a moment instead of spinning.
                    self.shared.rt.workers[self.id].listen_disabled_num.incr();
                    if self.shared.rt.verbosity() > 0 && !self.accept_failing {
                        crate::log_warn!("accept failed: {e}; not accepting for {ACCEPT_BACKOFF:?} at a time");
                    }
                    self.accept_failing = true;
                    if self.epoll.delete(self.listener.as_fd()).is_ok() {
                        self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    }
                    return;
                }
                Err(e) => {
                    // ECONNABORTED and the like: say so, keep serving the others.
                    if self.shared.rt.verbosity() > 0 {
                        crate::log_warn!("accept failed: {e}");
                    }
                    return;
                }
            }
        }
    }

    /// After an accept backoff has run its time, watch the listener again.
    fn resume_accepting(&mut self) -> Result<()> {
        match self.accept_paused_until {
            Some(t) if Instant::now() >= t => {
                self.epoll
                    .add(self.listener.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
                    .context("watching the listener again")?;
                self.accept_paused_until = None;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn admit(&mut self, mut stream: std::net::TcpStream) {
        let limit = self.shared.rt.settings.conn_limit as u64;
        if self.shared.rt.connections.curr.fetch_add(1, Ordering::AcqRel) >= limit {
            self.shared.rt.connections.curr.fetch_sub(1, Ordering::AcqRel);
            self.shared.rt.connections.rejected.fetch_add(1, Ordering::Relaxed);
            // memcached's words for it; the socket is closed when dropped.
            let _ = std::io::Write::write_all(&mut stream, b"ERROR Too many open connections\r\n");
            return;
        }
        self.shared.rt.connections.total.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        if stream.set_nonblocking(true).is_err() {
            self.shared.rt.connections.curr.fetch_sub(1, Ordering::AcqRel);
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
        self.conns.insert(token, (conn, interest));
        // Clients often send their first request with the connect; serve it now.
        self.serve(token);
    }

    fn serve(&mut self, token: u64) {
        let Some((conn, registered)) = self.conns.get_mut(&token) else { return };
        let ctx = Ctx { store: &self.store, stats: &self.shared.rt.workers[self.id], rt: &self.shared.rt };
        let interest = match conn.on_ready(&ctx, &mut self.scratch) {
            Next::Read => EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
            // Not reading while replies are pending is the backpressure.
            Next::Write => EpollFlags::EPOLLOUT,
            Next::Close => {
                conn.release(&ctx);
                let _ = self.epoll.delete(conn.stream.as_fd());
                self.conns.remove(&token);
                self.shared.rt.connections.curr.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        };
        // epoll_ctl only when the interest changes: it is a syscall per request otherwise.
        if interest != *registered {
            let mut ev = EpollEvent::new(interest, token);
            let _ = self.epoll.modify(conn.stream.as_fd(), &mut ev);
            *registered = interest;
        }
    }
}
