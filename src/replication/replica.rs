//! The replica loop.
//!
//! Each round: read the primary's control block; read [applied, head) (one
//! physical stretch at a time: records never straddle the end of the log)
//! into the transport's staging buffer, complete when the read returns;
//! validate every record (its own position and checksum); apply each in order
//! to our own log (same position, same bytes) and index; write our progress
//! into our slot on the primary. Repeat.
//!
//! Never waits on one record: a record that fails validation was either
//! reclaimed by the primary's cleaner under us (the tail moved past it: skip
//! to the tail), or is corrupt (count it and resynchronise). Joining late and
//! being lapped are the same path: clear, and replay the primary's live
//! window [tail, head).
//!
//! Nothing the primary sends is trusted beyond its checksum: the control
//! block's fields and every record's lengths, kind and CAS are bounded
//! (`bounds.rs`) before use, and a record out of bounds is refused, never
//! applied, with the reason in `last_error`.
//!
//! Promotion first drains what the old primary's memory still offers (up to
//! `--promote-drain-ms`), fencing it first so a live one stops writing.
//!
//! No sleeps: while records flow it spins; when idle it polls for
//! `IDLE_POLL`, a few spins and then yielding the CPU between looks (a
//! crossbeam `Backoff`'s snooze): on a CPU it shares, the writers it waits
//! for run first, and it looks again only when the CPU has nothing else to
//! do, so it neither starves them (a spin did) nor sleeps just as records
//! come (a wake on an idle CPU costs tens of microseconds). Then it waits:
//! over shm on its primary's doorbell, which a primary holding replies for
//! `--sync-replicas` rings (`shm::ShmTransport::idle_wait`); otherwise, or
//! over verbs, on its control eventfd. Either wait is timed, growing to at
//! most `MAX_IDLE_WAIT` (`shm::RUNG_WAIT` on the doorbell of a primary that
//! rings for every held write), and promotion, `replica follow` and
//! shutdown end it.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::bounds;
use super::promote::{promote, Drain, Old, DRAIN_SETTLE};
use super::shm::now_us;
use super::transport::{Progress, Transport};
use super::Url;
use crate::error::{Error, Result};
use crate::log::record::{self, Invalid};
use crate::log::LogGeometry;
use crate::store::Store;

/// How long an idle replica keeps polling before it starts to wait: a
/// time, not a count, since one poll is a memory load over shm and a network
/// round trip over verbs. Longer than a primary's turnaround from a client's
/// write to its record (tens of microseconds), so a replica a synchronous
/// write waits on is still looking when the record lands. (It was 10 us of
/// pure spinning; 200 us of that starved a load generator sharing the CPU.)
const IDLE_POLL: Duration = Duration::from_micros(200);
/// The longest idle wait: bounds the lag after a quiet spell.
const MAX_IDLE_WAIT: Duration = Duration::from_micros(100);
/// First staging read size; grows to fit the largest record seen.
const STAGING: usize = 4 << 20;

/// What the replica reports in `stats replication`; written by its thread.
#[derive(Default)]
pub struct ReplicaStatus {
    pub connected: AtomicBool,
    pub applied: AtomicU64,
    pub primary_head: AtomicU64,
    pub primary_tail: AtomicU64,
    pub primary_epoch: AtomicU64,
    pub records_applied: AtomicU64,
    pub bytes_applied: AtomicU64,
    /// Times the primary's cleaner passed us (we skipped to its tail).
    pub lapped: AtomicU64,
    /// Times we cleared and replayed from the tail (joins, laps, history changes).
    pub resyncs: AtomicU64,
    pub reconnects: AtomicU64,
    /// Records that failed validation while the primary still held them.
    pub invalid_records: AtomicU64,
    /// Wall-clock us when we were last caught up with the head we had seen.
    pub caught_up_us: AtomicU64,
    /// Wall-clock us when we first saw data we have not applied yet (0 = none).
    pub behind_since_us: AtomicU64,
    /// The last catch-up after a join or resync: bytes replayed and how long
    /// it took from the resync to the first moment we held the primary's head.
    pub catchup_bytes: AtomicU64,
    pub catchup_us: AtomicU64,
    /// The incarnation of the primary log we follow (survives reconnects).
    pub incarnation: AtomicU64,
    pub primary: Mutex<String>,
    pub last_error: Mutex<String>,
    /// Set once this replica was promoted; the drain fields describe what
    /// the promotion recovered from the old primary's memory first.
    pub promoted: AtomicBool,
    pub drain_records: AtomicU64,
    pub drain_bytes: AtomicU64,
    pub drain_us: AtomicU64,
    /// How the drain ended (caught up, deadline, unreachable, ...).
    pub drain_result: Mutex<String>,
}

impl ReplicaStatus {
    /// Lag in microseconds: how long the oldest unapplied data has waited.
    pub fn lag_us(&self) -> u64 {
        match self.behind_since_us.load(Ordering::Relaxed) {
            0 => 0,
            t => now_us().saturating_sub(t),
        }
    }
}

/// Requests to the replica thread (admin commands, shutdown).
pub struct ReplicaControl {
    stop: AtomicBool,
    promote: AtomicBool,
    follow: Mutex<Option<Url>>,
    waker: EventFd,
    /// Ends the follower's doorbell wait (`Transport::waker`) while it has one.
    bell: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// Set by the replica thread once a promotion took effect: Ok(epoch) or why not.
    promoted: Mutex<Option<std::result::Result<u64, String>>>,
    promoted_cv: Condvar,
}

impl ReplicaControl {
    pub fn new() -> Result<ReplicaControl> {
        Ok(ReplicaControl {
            stop: AtomicBool::new(false),
            promote: AtomicBool::new(false),
            follow: Mutex::new(None),
            waker: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
            bell: Mutex::new(None),
            promoted: Mutex::new(None),
            promoted_cv: Condvar::new(),
        })
    }

    fn wake(&self) {
        let _ = self.waker.write(1);
        if let Some(ring) = self.bell.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            ring();
        }
    }

    fn set_bell(&self, bell: Option<Box<dyn Fn() + Send + Sync>>) {
        *self.bell.lock().unwrap_or_else(|e| e.into_inner()) = bell;
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Ask the replica to become a primary; returns the new epoch once it
    /// accepts writes.
    pub fn promote(&self, timeout: Duration) -> std::result::Result<u64, String> {
        self.promote.store(true, Ordering::Release);
        self.wake();
        let mut g = self.promoted.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + timeout;
        while g.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("promotion did not complete in time".into());
            }
            g = self.promoted_cv.wait_timeout(g, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        g.clone().unwrap_or_else(|| Err("promotion state lost".into()))
    }

    /// Follow another primary from now on (`replica follow URL`).
    pub fn follow(&self, url: Url) {
        *self.follow.lock().unwrap_or_else(|e| e.into_inner()) = Some(url);
        self.wake();
    }

    /// Whether `pending` has something, without taking it.
    fn has_pending(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            || self.promote.load(Ordering::Acquire)
            || self.follow.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn pending(&self) -> Option<Exit> {
        if self.stop.load(Ordering::Acquire) {
            return Some(Exit::Stop);
        }
        if self.promote.load(Ordering::Acquire) {
            return Some(Exit::Promote);
        }
        self.follow.lock().unwrap_or_else(|e| e.into_inner()).take().map(Exit::Follow)
    }

    /// Wait up to `d` or until woken. A timed wait on an eventfd, not a
    /// sleep: promotion, follow and shutdown end it at once.
    fn wait(&self, d: Duration) {
        let fd = self.waker.as_fd();
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let ts = nix::sys::time::TimeSpec::from_duration(d);
        let _ = nix::poll::ppoll(&mut fds, Some(ts), None);
        let _ = self.waker.read();
    }

    pub(super) fn finish_promotion(&self, r: std::result::Result<u64, String>) {
        *self.promoted.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        self.promoted_cv.notify_all();
    }
}

pub(super) enum Exit {
    Stop,
    Promote,
    Follow(Url),
    /// A promotion's drain ended (why: `Follower::drain_end`).
    Drained,
}

/// Options from the command line.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// Promote ourselves when the primary's heartbeat stops for this long.
    pub promote_after: Option<Duration>,
    /// Identifies this replica in its slot (non-zero).
    pub id: u64,
    /// The longest a promotion spends draining the old primary's log
    /// before it takes writes (zero: no drain).
    pub promote_drain: Duration,
}

impl ReplicaOptions {
    /// The default drain bound (`--promote-drain-ms`).
    pub const DEFAULT_PROMOTE_DRAIN: Duration = Duration::from_millis(300);
}

/// Connect a transport for `url` (shared: a promotion may dial from a
/// helper thread it can abandon, see `reconnect_within`).
pub type Connector = dyn Fn(&Url, u64) -> Result<Box<dyn Transport>> + Send + Sync;

/// The default connector: shm or verbs, by the URL's scheme.
/// (No token, no `--shm-group`: see [`super::connect_with`] for those.)
pub fn connect(url: &Url, id: u64) -> Result<Box<dyn Transport>> {
    super::connect_with(url, id, &super::Trust::default())
}

/// Run a replica until stopped or promoted. Reconnects with backoff.
pub fn run(
    store: Arc<Store>,
    mut url: Url,
    status: Arc<ReplicaStatus>,
    ctl: Arc<ReplicaControl>,
    opts: ReplicaOptions,
    connector: Arc<Connector>,
) {
    store.set_read_only(true);
    let mut backoff = Duration::from_millis(10);
    let mut last_alive = Instant::now();
    let mut last_err = String::new();
    loop {
        *status.primary.lock().unwrap_or_else(|e| e.into_inner()) = url.to_string();
        let exit = match connector(&url, opts.id) {
            Ok(mut t) => {
                status.connected.store(true, Ordering::Release);
                backoff = Duration::from_millis(10);
                let mut f = Follower::new(&store, &status, &ctl, &opts);
                let r = f.follow(t.as_mut());
                last_alive = f.last_alive;
                status.connected.store(false, Ordering::Release);
                match r {
                    Ok(Exit::Promote) => {
                        promote(&store, &status, &ctl, &opts, Old::Connected(t.as_mut()));
                        return;
                    }
                    Ok(e) => Some(e),
                    Err(e) => {
                        note_error(&status, &mut last_err, &url, &e);
                        status.reconnects.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            }
            Err(e) => {
                note_error(&status, &mut last_err, &url, &e);
                None
            }
        };
        match exit.or_else(|| ctl.pending()) {
            Some(Exit::Stop) => return,
            Some(Exit::Promote) => {
                promote(&store, &status, &ctl, &opts, Old::Dial(&connector, &url));
                return;
            }
            Some(Exit::Follow(u)) => {
                url = u;
                continue;
            }
            Some(Exit::Drained) | None => {}
        }
        if let Some(limit) = opts.promote_after {
            if last_alive.elapsed() >= limit {
                crate::log_warn!("primary {url} silent for {} ms: promoting this replica", limit.as_millis());
                promote(&store, &status, &ctl, &opts, Old::Dial(&connector, &url));
                return;
            }
        }
        // Reconnect backoff: control path only (the primary is unreachable),
        // as a timed wait that promotion or shutdown interrupts.
        ctl.wait(reconnect_wait(backoff, opts.promote_after, last_alive.elapsed()));
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// The pause before the next dial: the backoff, but never past the moment
/// `--promote-after` runs out, so a dead primary's replica promotes on time
/// rather than up to a whole backoff (up to 1 s) late.
fn reconnect_wait(backoff: Duration, promote_after: Option<Duration>, silent: Duration) -> Duration {
    match promote_after {
        Some(limit) => backoff.min(limit.saturating_sub(silent)),
        None => backoff,
    }
}

fn note_error(status: &ReplicaStatus, last: &mut String, url: &Url, e: &Error) {
    let msg = e.to_string();
    if *last != msg {
        crate::log_warn!("replication from {url}: {msg}");
        last.clone_from(&msg);
    }
    *status.last_error.lock().unwrap_or_else(|e| e.into_inner()) = msg;
}

/// Follow `t` with a fresh follower (no promotion, no admin requests)
/// until the transport fails; returns that error. For the fuzzer and the
/// hostile-primary tests (`replication::fuzzing`), whose transports end.
#[doc(hidden)]
pub fn follow_until_error(store: &Store, status: &ReplicaStatus, t: &mut dyn Transport) -> Error {
    let ctl = match ReplicaControl::new() {
        Ok(c) => c,
        Err(e) => return e,
    };
    let opts = ReplicaOptions { promote_after: None, id: 1, promote_drain: Duration::ZERO };
    let mut f = Follower::new(store, status, &ctl, &opts);
    f.no_idle_wait = true;
    match f.follow(t) {
        Err(e) => e,
        Ok(_) => Error::new("the follower stopped"),
    }
}

pub(super) struct Follower<'a> {
    store: &'a Store,
    status: &'a ReplicaStatus,
    ctl: &'a ReplicaControl,
    opts: &'a ReplicaOptions,
    /// Everything below is applied; None until the first control read.
    applied: Option<u64>,
    /// The epoch and incarnation of the primary we followed last: together
    /// they say whether a primary continues the history we hold.
    epoch: u64,
    incarnation: Option<u64>,
    staging: usize,
    /// Set at a resync; cleared when the catch-up it started completes.
    catchup: Option<(Instant, u64)>,
    heartbeat: u64,
    last_alive: Instant,
    /// Set while a promotion drains the old primary.
    pub(super) drain: Option<Drain>,
    pub(super) drain_end: &'static str,
    /// Never pause while idle (`follow_until_error`: a scripted primary
    /// whose next control block is already there).
    no_idle_wait: bool,
}

impl<'a> Follower<'a> {
    pub(super) fn new(
        store: &'a Store,
        status: &'a ReplicaStatus,
        ctl: &'a ReplicaControl,
        opts: &'a ReplicaOptions,
    ) -> Self {
        // Resume from what our own log holds: after a reconnect to the same
        // history we need not start over.
        let head = store.log().head();
        let applied = if store.log().epoch() > 1 || head > 0 { Some(head) } else { None };
        Follower {
            store,
            status,
            ctl,
            opts,
            applied,
            epoch: store.log().epoch(),
            // After a restart from a memory file (`-e`), our log says whose
            // history it mirrors.
            incarnation: match status.incarnation.load(Ordering::Relaxed) {
                0 => Some(store.log().follows()).filter(|&i| i != 0),
                i => Some(i),
            },
            staging: STAGING,
            catchup: None,
            heartbeat: 0,
            last_alive: Instant::now(),
            drain: None,
            drain_end: "",
            no_idle_wait: false,
        }
    }

    /// The epoch our reports carry: the primary's, or while a promotion
    /// drains, the new one (which fences the old primary).
    fn report_epoch(&self, primary: u64) -> u64 {
        self.drain.as_ref().map_or(primary, |d| d.epoch)
    }

    /// Whether a long catch-up should end after the current stretch: an
    /// admin request, or while draining, a stop or the drain's deadline.
    fn interrupted(ctl: &ReplicaControl, drain_deadline: Option<Instant>) -> bool {
        match drain_deadline {
            Some(d) => ctl.stop_requested() || Instant::now() >= d,
            None => ctl.has_pending(),
        }
    }

    /// Whether the primary described by `c` continues the history we applied
    /// up to `applied`: the same log at the same epoch, or a replica of it
    /// promoted (one epoch up) at or after the point we reached. A replica
    /// holding no history yet (fresh or just reconnected) trusts its own log
    /// only if the epochs agree.
    fn same_history(&self, c: &crate::log::control::ControlSnapshot, applied: u64) -> bool {
        let same_log = self.incarnation == Some(c.incarnation) && c.epoch == self.epoch;
        let promoted_from_ours = self.epoch.checked_add(1) == Some(c.epoch) && applied <= c.epoch_start;
        same_log || promoted_from_ours
    }

    fn resync(&mut self, tail: u64, lapped: bool) {
        self.catchup = Some((Instant::now(), self.status.bytes_applied.load(Ordering::Relaxed)));
        self.store.resync_at(tail);
        self.applied = Some(tail);
        self.status.resyncs.fetch_add(1, Ordering::Relaxed);
        if lapped {
            self.status.lapped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn follow(&mut self, t: &mut dyn Transport) -> Result<Exit> {
        self.ctl.set_bell(t.waker());
        let r = self.follow_with(t);
        self.ctl.set_bell(None);
        r
    }

    fn follow_with(&mut self, t: &mut dyn Transport) -> Result<Exit> {
        let cap = self.store.log().capacity();
        let mut idle = 0u32;
        // Between polls while idle: a few pauses, doubling up to a bound, so
        // an idle replica does not hammer the primary's control block line,
        // then a yield of the CPU.
        let spin = Backoff::new();
        let mut idle_since = Instant::now();
        let mut wait = Duration::from_micros(5);
        loop {
            if let Some(d) = &self.drain {
                if self.ctl.stop_requested() || Instant::now() >= d.deadline {
                    self.drain_end = "the drain's time was up";
                    return Ok(Exit::Drained);
                }
            } else if let Some(e) = self.ctl.pending() {
                return Ok(e);
            }
            let c = t.control()?;
            // The primary's log, as its control block describes it, every
            // field in bounds.
            let geo = match bounds::check_control(&c, cap) {
                Ok(geo) => geo,
                Err(why) => crate::bail!("{} {why}", t.describe()),
            };
            if c.heartbeat_us != self.heartbeat {
                self.heartbeat = c.heartbeat_us;
                self.last_alive = Instant::now();
            } else if let Some(limit) = self.opts.promote_after.filter(|_| self.drain.is_none()) {
                if self.last_alive.elapsed() >= limit {
                    crate::log_warn!("primary's heartbeat stopped for {} ms: promoting", limit.as_millis());
                    return Ok(Exit::Promote);
                }
            }
            if c.epoch < self.store.epoch() && self.applied.is_some() {
                // A stale primary (a newer one exists): fence it, do not follow.
                let applied = self.applied.unwrap_or(0);
                t.report(&Progress { applied, epoch: self.store.epoch(), caught_up_us: now_us() })?;
                t.control()?;
                t.keep_slot();
                crate::bail!("{} is at epoch {}, older than ours ({})", t.describe(), c.epoch, self.store.epoch());
            }
            self.status.primary_head.store(c.head, Ordering::Relaxed);
            self.status.primary_tail.store(c.tail, Ordering::Relaxed);
            self.status.primary_epoch.store(c.epoch, Ordering::Relaxed);

            if let (Some(_), Some(a)) = (&self.drain, self.applied) {
                if !self.same_history(&c, a) || a < c.tail || a > c.head {
                    // Catching up would mean clearing what we hold.
                    self.drain_end = "the old primary's log no longer continues ours";
                    return Ok(Exit::Drained);
                }
            }
            let applied = match self.applied {
                None => {
                    self.resync(c.tail, false);
                    c.tail
                }
                Some(a) if !self.same_history(&c, a) => {
                    // A different history than the one we hold: start over.
                    self.resync(c.tail, false);
                    c.tail
                }
                Some(a) if a < c.tail => {
                    self.resync(c.tail, true);
                    c.tail
                }
                Some(a) if a > c.head => {
                    self.resync(c.tail, false);
                    c.tail
                }
                Some(a) => a,
            };
            // Published even when nothing is left to pull: after a restart
            // from a memory file we may already hold the primary's head.
            self.status.applied.store(applied, Ordering::Release);
            self.incarnation = Some(c.incarnation);
            self.status.incarnation.store(c.incarnation, Ordering::Relaxed);
            if self.store.log().follows() != c.incarnation {
                self.store.log().set_follows(c.incarnation);
            }
            // After any resync above: the delayed-flush point and highest CAS.
            self.store.observe_primary(&c);
            if c.epoch != self.epoch {
                self.epoch = c.epoch;
                self.store.adopt_epoch(c.epoch, c.epoch_start);
            }

            if applied >= c.head {
                self.status.behind_since_us.store(0, Ordering::Relaxed);
                self.status.caught_up_us.store(now_us(), Ordering::Relaxed);
                if let Some(d) = self.drain.as_mut() {
                    match d.settled {
                        Some((h, since)) if h == c.head => {
                            if since.elapsed() >= DRAIN_SETTLE {
                                self.drain_end = "caught up with the old primary's head";
                                return Ok(Exit::Drained);
                            }
                        }
                        _ => {
                            d.settled = Some((c.head, Instant::now()));
                            t.report(&Progress { applied, epoch: d.epoch, caught_up_us: now_us() })?;
                        }
                    }
                    // The promotion waits on us: poll, never block.
                    spin.snooze();
                    continue;
                }
                if idle == 0 || idle.is_multiple_of(256) {
                    t.report(&Progress { applied, epoch: c.epoch, caught_up_us: now_us() })?;
                }
                if idle == 0 {
                    idle_since = Instant::now();
                }
                idle = idle.saturating_add(1);
                if self.no_idle_wait {
                    continue;
                }
                if idle_since.elapsed() <= IDLE_POLL {
                    spin.snooze();
                    continue;
                }
                let ctl = self.ctl;
                if !t.idle_wait(c.head, wait, &|| ctl.has_pending()) {
                    self.ctl.wait(wait);
                }
                wait = (wait * 2).min(MAX_IDLE_WAIT);
                continue;
            }
            idle = 0;
            spin.reset();
            wait = Duration::from_micros(5);
            if self.status.behind_since_us.load(Ordering::Relaxed) == 0 {
                self.status.behind_since_us.store(now_us(), Ordering::Relaxed);
            }
            let done = self.pull(t, applied, c.head, geo)?;
            self.applied = Some(done);
            self.status.applied.store(done, Ordering::Release);
            let caught_up = done >= c.head;
            if caught_up {
                self.status.behind_since_us.store(0, Ordering::Relaxed);
                self.status.caught_up_us.store(now_us(), Ordering::Relaxed);
                if let Some((t0, b0)) = self.catchup.take() {
                    let bytes = self.status.bytes_applied.load(Ordering::Relaxed) - b0;
                    self.status.catchup_bytes.store(bytes, Ordering::Relaxed);
                    self.status.catchup_us.store(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
            }
            let cu = self.status.caught_up_us.load(Ordering::Relaxed);
            t.report(&Progress { applied: done, epoch: self.report_epoch(c.epoch), caught_up_us: cu })?;
        }
    }

    /// Read, validate and apply everything from `from` up to `head`, one
    /// physical stretch at a time, with the next stretch's read in flight
    /// while the current one is applied. A stretch ends where its last whole
    /// record ends, so the read-ahead begins exactly where the next stretch
    /// does (a record cut by the staging size is read again, whole, next).
    /// Returns the new applied position.
    fn pull(&mut self, t: &mut dyn Transport, from: u64, head: u64, geo: LogGeometry) -> Result<u64> {
        // A record larger than our reads: read that much from it on.
        let grown = |need: usize, staging: usize| {
            if need > staging {
                need.next_power_of_two().min(geo.capacity() as usize)
            } else {
                staging
            }
        };
        let mut pos = geo.skip_gap(from);
        let ctl = self.ctl;
        let drain_deadline = self.drain.as_ref().map(|d| d.deadline);
        while pos < head {
            let staging = self.staging;
            let s = geo.stretch(pos, head, staging);
            let (end, off, len) = (s.end, s.offset, s.len);
            // A stop, promotion or follow request ends a long catch-up after
            // this stretch, with no read left in flight: the planner sees it
            // before it plans, and a transport that never plans has none.
            let (mut asked, mut planned) = (false, false);
            // Plan the next stretch from the headers just read (unchecked:
            // a torn header only costs a read-ahead that goes unused).
            let mut plan = |b: &[u8]| {
                if Self::interrupted(ctl, drain_deadline) {
                    asked = true;
                    return None;
                }
                let (mut o, mut cut) = (0usize, 0usize);
                while let Some(n) = record::claimed_len(&b[o..], pos + o as u64) {
                    if o + n > b.len() {
                        // A claim past any record's size plans nothing.
                        cut = if bounds::plausible_len(n, geo) { n } else { 0 };
                        break;
                    }
                    o += n;
                }
                let next = geo.skip_gap(pos + o as u64);
                let ahead = (o > 0 && next < head).then(|| {
                    let s = geo.stretch(next, head, grown(cut, staging));
                    (s.offset, s.len)
                });
                planned = ahead.is_some();
                ahead
            };
            let (buf, tail_after) = t.read_ahead_checked(off, len, &mut plan)?;
            if tail_after.is_some_and(|tail| tail > pos) {
                // The cleaner freed what we read while we copied it (the
                // transport's re-check after its fence): it may be torn.
                // Lapped: the next round skips to the tail.
                return Ok(pos.max(from));
            }
            let mut p = pos;
            while p < end {
                let o = (p - pos) as usize;
                match record::validate(&buf[o..], p) {
                    Ok(rec) => {
                        if let Err(why) = bounds::check_record(&rec.header, geo) {
                            return Err(self.refuse(p, &why));
                        }
                        let n = rec.header.total_len() as usize;
                        self.store
                            .apply_raw(&buf[o..o + n], &rec)
                            .map_err(|e| Error::new(format!("applying the record at {p}: {e:?}")))?;
                        self.status.records_applied.fetch_add(1, Ordering::Relaxed);
                        self.status.bytes_applied.fetch_add(n as u64, Ordering::Relaxed);
                        p += n as u64;
                        if geo.in_gap(p) {
                            break; // the gap before the log's end: next lap
                        }
                    }
                    Err(Invalid::Truncated { need }) if !bounds::plausible_len(need, geo) => {
                        // Torn under the cleaner, or a primary's nonsense:
                        // never read that much for it.
                        let c = t.control()?;
                        if c.tail > p {
                            self.applied = Some(p);
                            return Ok(p);
                        }
                        return Err(self.refuse(p, &format!("claims {need} bytes, more than any record")));
                    }
                    Err(Invalid::Truncated { need }) => {
                        // Torn if the head says the record is complete, if it
                        // would have fitted this stretch, or if it would cross
                        // the log's end (no record does).
                        let fitted = p == pos && need <= self.staging;
                        if end == head || fitted || need as u64 > geo.room_to_end(p) {
                            self.invalid(t, p)?;
                            return Ok(p);
                        }
                        self.staging = grown(need, self.staging);
                        // The record goes on past this stretch: the next one starts here.
                        break;
                    }
                    Err(_) => {
                        self.invalid(t, p)?;
                        return Ok(self.applied.unwrap_or(p).max(p));
                    }
                }
            }
            pos = geo.skip_gap(p);
            self.applied = Some(pos.min(head));
            self.status.applied.store(pos.min(head), Ordering::Release);
            if asked || (!planned && Self::interrupted(ctl, drain_deadline)) {
                break;
            }
        }
        Ok(pos.min(head).max(from))
    }

    /// A record below the primary's head failed validation. If the cleaner
    /// took it from under us, we were lapped (the next round skips to the
    /// tail). Otherwise the bytes are corrupt: count them, never apply them,
    /// and replay the live window.
    fn invalid(&mut self, t: &mut dyn Transport, pos: u64) -> Result<()> {
        let c = t.control()?;
        if c.tail > pos {
            self.applied = Some(pos);
            return Ok(());
        }
        self.status.invalid_records.fetch_add(1, Ordering::Relaxed);
        if self.drain.is_some() {
            // A drain keeps what we hold: no replay.
            crate::bail!("record at {pos} failed validation while the old primary still holds it");
        }
        self.resync(c.tail, false);
        crate::bail!("record at {pos} failed validation while the primary still holds it; resynchronising")
    }

    /// A record the primary holds, valid by its checksum, is out of bounds:
    /// the primary is buggy or hostile. Never apply it; keep what we hold
    /// (a replay would meet it again) and say why; the caller drops the
    /// connection and retries with backoff.
    fn refuse(&mut self, pos: u64, why: &str) -> Error {
        self.status.invalid_records.fetch_add(1, Ordering::Relaxed);
        self.applied = Some(pos);
        Error::new(format!("refused the primary's record at {pos}: it {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::reconnect_wait;
    use std::time::Duration;

    #[test]
    fn the_reconnect_backoff_ends_when_promote_after_runs_out() {
        let ms = Duration::from_millis;
        assert_eq!(reconnect_wait(ms(320), Some(ms(500)), ms(450)), ms(50));
        assert_eq!(reconnect_wait(ms(20), Some(ms(500)), ms(450)), ms(20));
        assert_eq!(reconnect_wait(ms(1000), None, ms(450)), ms(1000));
    }
}
