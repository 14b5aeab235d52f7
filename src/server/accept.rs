//! Accepting and admitting connections, the same for both worker loops
//! (worker.rs, uring_worker.rs): what differs is only how each watches its
//! listeners and registers a connection.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::listen::{Listener, Stream};
use super::Shared;

/// Connections a worker accepts per readiness of its listener: the rest
/// come next poll, after the connections already open have had their turn.
pub const ACCEPTS_PER_EVENT: usize = 64;
/// How long a worker stops accepting after accept ran out of descriptors.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// How a round of accepts ended.
#[derive(Debug, PartialEq, Eq)]
pub enum AcceptEnd {
    /// Nothing more to accept now, or the round's share is done.
    Done,
    /// Out of descriptors (EMFILE, ENFILE): the listener stays readable,
    /// so the worker stops watching it for `ACCEPT_BACKOFF` rather than spin.
    OutOfFds,
}

/// Accept what `listener` has, up to `ACCEPTS_PER_EVENT`, into `out`.
/// `failing`: accept has run out of descriptors since it last succeeded
/// (the warning is logged once per such stretch).
pub fn accept_round(
    listener: &Listener,
    shared: &Shared,
    worker: usize,
    failing: &mut bool,
    out: &mut Vec<Stream>,
) -> AcceptEnd {
    for _ in 0..ACCEPTS_PER_EVENT {
        match listener.accept() {
            Ok((stream, peer)) => {
                *failing = false;
                // -vv, as memcached: one line per connection opened.
                if shared.rt.verbosity() > 1 {
                    crate::log_debug!("worker {worker}: new client connection from {peer}");
                }
                out.push(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return AcceptEnd::Done,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                shared.rt.workers[worker].listen_disabled_num.incr();
                if shared.rt.verbosity() > 0 && !*failing {
                    crate::log_warn!("accept failed: {e}; not accepting for {ACCEPT_BACKOFF:?} at a time");
                }
                *failing = true;
                return AcceptEnd::OutOfFds;
            }
            Err(e) => {
                // ECONNABORTED and the like: say so, keep serving the others.
                if shared.rt.verbosity() > 0 {
                    crate::log_warn!("accept failed: {e}");
                }
                return AcceptEnd::Done;
            }
        }
    }
    AcceptEnd::Done
}

/// Admit `stream` under the `-c` limit: counted in `curr_connections` and
/// made non-blocking, or refused with memcached's words (and closed when
/// dropped). A worker that then fails to register it gives the count back.
pub fn admission(shared: &Shared, stream: &mut Stream) -> bool {
    let c = &shared.rt.connections;
    if c.curr.fetch_add(1, Ordering::AcqRel) >= shared.rt.settings.conn_limit as u64 {
        c.curr.fetch_sub(1, Ordering::AcqRel);
        c.rejected.fetch_add(1, Ordering::Relaxed);
        let _ = std::io::Write::write_all(stream, b"ERROR Too many open connections\r\n");
        return false;
    }
    c.total.fetch_add(1, Ordering::Relaxed);
    if stream.prepare().is_err() {
        c.curr.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}
