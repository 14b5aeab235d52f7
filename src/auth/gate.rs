//! The server end of a side channel: accept, authenticate, then hand the
//! connection to the channel's own handler, within fixed bounds.
//!
//! * At most [`Limits::max_handshakes`] connections are in their handshake
//!   at once, each on its own thread; a connection beyond that is closed
//!   on accept. A handler marks its handshake done ([`Admitted::handshake_done`])
//!   before it settles down to hold a long-lived connection, whose number
//!   the channel bounds itself (progress slots, RC connections per worker).
//! * Every read and write is bounded by [`Limits::io_timeout`], and all of
//!   them together by [`Limits::deadline`] from accept ([`Bounded`]), so a
//!   peer trickling a byte at a time is dropped on time.
//! * A peer that fails the handshake is dropped at once; the handler never
//!   runs for it, so it claims nothing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{server_handshake, AuthToken, Channel};
use crate::error::{Context as _, Result};

/// Bounds of one side channel.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections in their handshake at once (authentication and setup).
    pub max_handshakes: usize,
    /// Bound on each read and write of the handshake.
    pub io_timeout: Duration,
    /// Bound on the whole handshake, from accept.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_handshakes: 16, io_timeout: Duration::from_secs(5), deadline: Duration::from_secs(10) }
    }
}

/// A stream whose every read and write times out at the sooner of the
/// per-operation bound and the deadline.
pub struct Bounded<'a> {
    s: &'a TcpStream,
    deadline: Instant,
    io: Duration,
}

impl<'a> Bounded<'a> {
    pub fn new(s: &'a TcpStream, deadline: Instant, io: Duration) -> Bounded<'a> {
        Bounded { s, deadline, io }
    }

    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "side-channel handshake deadline passed"));
        }
        Ok(left.min(self.io))
    }
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.s.set_read_timeout(Some(self.left()?))?;
        (&mut &*self.s).read(buf)
    }
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.s.set_write_timeout(Some(self.left()?))?;
        (&mut &*self.s).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        (&mut &*self.s).flush()
    }
}

/// Holds one of the handshake places; frees it when dropped.
struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An authenticated connection, given to the channel's handler.
pub struct Admitted {
    pub stream: TcpStream,
    /// The peer's address, for messages.
    pub peer: String,
    /// When the whole handshake must be over.
    pub deadline: Instant,
    pub io_timeout: Duration,
    permit: Option<Permit>,
}

impl Admitted {
    /// The stream under the handshake's bounds.
    pub fn bounded(&self) -> Bounded<'_> {
        Bounded::new(&self.stream, self.deadline, self.io_timeout)
    }

    /// The handshake is over: free its place (the connection may now be held
    /// for as long as the channel allows). TCP keepalive from here on, so a
    /// peer whose host died without a FIN lets go of what it holds (its QP,
    /// its thread) within about a minute.
    pub fn handshake_done(&mut self) {
        self.permit = None;
        use nix::sys::socket::{setsockopt, sockopt};
        let s = &self.stream;
        let _ = setsockopt(s, sockopt::KeepAlive, &true);
        let _ = setsockopt(s, sockopt::TcpKeepIdle, &30);
        let _ = setsockopt(s, sockopt::TcpKeepInterval, &10);
        let _ = setsockopt(s, sockopt::TcpKeepCount, &3);
    }
}

/// Accept on `listener` on a thread named `name`; run the handshake for
/// `channel` with `token` on each connection (within `limits`), then
/// `handler` on those that pass. Errors of either are logged with `verbose`.
pub fn spawn<H>(
    listener: TcpListener,
    name: &str,
    channel: Channel,
    token: Option<AuthToken>,
    limits: Limits,
    verbose: bool,
    handler: H,
) -> Result<()>
where
    H: Fn(Admitted) -> Result<()> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let busy = Arc::new(AtomicUsize::new(0));
    let conn_name = format!("{name}-conn");
    let what = name.to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || loop {
            let s = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors and the like: give the system a moment
                    // instead of spinning on the same error.
                    if verbose {
                        crate::log_warn!("{what}: accept: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if busy.fetch_add(1, Ordering::AcqRel) >= limits.max_handshakes {
                busy.fetch_sub(1, Ordering::AcqRel);
                if verbose {
                    crate::log_warn!("{what}: {} handshakes in progress; dropping a connection", limits.max_handshakes);
                }
                continue; // dropping `s` closes it
            }
            let permit = Permit(busy.clone());
            let (handler, token, tag) = (handler.clone(), token.clone(), what.clone());
            let spawned = std::thread::Builder::new().name(conn_name.clone()).spawn(move || {
                let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                let deadline = Instant::now() + limits.deadline;
                let _ = s.set_nodelay(true);
                let authed =
                    server_handshake(&mut Bounded::new(&s, deadline, limits.io_timeout), channel, token.as_ref());
                let r = authed.and_then(|()| {
                    handler(Admitted {
                        stream: s,
                        peer: peer.clone(),
                        deadline,
                        io_timeout: limits.io_timeout,
                        permit: Some(permit),
                    })
                });
                if let Err(e) = r {
                    if verbose {
                        crate::log_warn!("{tag} {peer}: {e}");
                    }
                }
            });
            // A failed spawn drops the closure, its permit and the stream.
            if let Err(e) = spawned {
                crate::log_warn!("{what}: cannot start a connection thread: {e}");
            }
        })
        .with_context(|| format!("starting the {name} thread"))?;
    Ok(())
}
