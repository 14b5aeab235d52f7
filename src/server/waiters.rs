//! What a worker visits without a socket event, whichever loop it runs
//! (epoll or io_uring): connections holding replies for `--sync-replicas`
//! (settled against the replicas' progress, which raises no event),
//! connections streaming `watch` lines, and `-o idle_timeout`'s check.
//!
//! The loops differ only in how they reach a connection and serve or close
//! it; [`Visits`] is that difference, and its provided methods are the rest.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{TokenMap, TokenSet};
use crate::runtime::Runtime;
use crate::stats::conns::ConnInfo;
use crate::store::Store;

/// The longest a worker blocks while replies are held for replicas.
const HOLD_POLL: Duration = Duration::from_millis(1);
/// How long after replies were last held or released the worker keeps
/// polling without blocking: replica progress raises no event, and a
/// blocked worker would see it only a `HOLD_POLL` later, so each replica
/// round trip would cost a millisecond (set-only under `--sync-replicas`
/// ran at 0.57x asynchronous, 32 writes per millisecond). Past it (a dead
/// or stalled replica) the worker blocks again, `HOLD_POLL` at a time.
const HOLD_SPIN: Duration = Duration::from_millis(2);
/// How often an idle worker moves queued `watch` lines to its watchers.
const WATCH_POLL: Duration = Duration::from_millis(10);
/// How often `-o idle_timeout` looks (memcached's timeout thread wakes about
/// once a second too).
pub(super) const IDLE_CHECK: Duration = Duration::from_secs(1);

pub(super) struct Waiters {
    /// Connections holding replies for `--sync-replicas`.
    holding: TokenSet,
    /// Connections streaming `watch` events: served on every poll, which
    /// wakes at least every `WATCH_POLL` while there are any.
    watching: TokenSet,
    /// The tokens being visited, a list kept for reuse.
    visiting: Vec<u64>,
    /// When `-o idle_timeout` next looks for idle connections.
    next_idle_check: Instant,
    /// When a reply was last newly held or released (see `HOLD_SPIN`).
    hold_moved: Instant,
}

impl Waiters {
    pub(super) fn new() -> Waiters {
        Waiters {
            holding: TokenSet::default(),
            watching: TokenSet::default(),
            visiting: Vec::new(),
            next_idle_check: Instant::now() + IDLE_CHECK,
            hold_moved: Instant::now(),
        }
    }

    /// After serving connection `token`: whether it now holds replies or
    /// streams `watch` lines (a watcher stays one until it closes).
    pub(super) fn note(&mut self, token: u64, holding: bool, watching: bool) {
        if watching {
            self.watching.insert(token);
        }
        if holding {
            if self.holding.insert(token) {
                self.hold_moved = Instant::now();
            }
        } else if !self.holding.is_empty() {
            self.holding.remove(&token);
        }
    }

    /// Connection `token` closed.
    pub(super) fn forget(&mut self, token: u64) {
        self.holding.remove(&token);
        self.watching.remove(&token);
    }

    /// How soon a blocked worker must look again for what it waits on
    /// (`None`: nothing, a socket event will do).
    pub(super) fn poll_within(&self, idle_timeout: u32, has_conns: bool) -> Option<Duration> {
        match (self.holding.is_empty(), self.watching.is_empty()) {
            (true, true) if idle_timeout > 0 && has_conns => {
                Some(self.next_idle_check.saturating_duration_since(Instant::now()))
            }
            (true, true) => None,
            (false, _) if self.hold_moved.elapsed() < HOLD_SPIN => Some(Duration::ZERO),
            (false, _) => Some(HOLD_POLL),
            (true, false) => Some(WATCH_POLL),
        }
    }

    fn take(&mut self, watchers: bool) -> Vec<u64> {
        let mut tokens = std::mem::take(&mut self.visiting);
        tokens.clear();
        tokens.extend(if watchers { &self.watching } else { &self.holding }.iter().copied());
        tokens
    }

    /// Whether `-o idle_timeout`'s check is due (at most once per `IDLE_CHECK`).
    fn idle_check_due(&mut self) -> bool {
        if Instant::now() < self.next_idle_check {
            return false;
        }
        self.next_idle_check = Instant::now() + IDLE_CHECK;
        true
    }

    /// Not one holding replies or streaming `watch`: they wait on us.
    fn may_kick(&self, token: u64) -> bool {
        !self.holding.contains(&token) && !self.watching.contains(&token)
    }
}

/// A worker loop, as the visits need it.
pub(super) trait Visits {
    fn waiters(&mut self) -> &mut Waiters;
    fn runtime(&self) -> &Runtime;
    /// Each connection's entry in the runtime's `stats conns` table.
    fn conn_infos(&self) -> &TokenMap<Arc<ConnInfo>>;
    /// The store the held replies wait on (its replicas' progress).
    fn store(&self) -> &Store;
    /// Settle connection `token`'s held replies against `confirmed`:
    /// whether any went (`None`: no such connection).
    fn settle_conn(&mut self, token: u64, confirmed: u64, now: Instant) -> Option<bool>;
    /// Whether connection `token` has `watch` lines queued (`None`: gone).
    fn has_watch_lines(&self, token: u64) -> Option<bool>;
    fn serve(&mut self, token: u64);
    fn close(&mut self, token: u64, reason: &str);

    /// Settle every connection holding replies against the replicas'
    /// progress, read once (one replica round trip releases every write
    /// waiting on the worker); serve those whose replies went. Returns
    /// whether any did.
    fn settle(&mut self) -> bool {
        if self.waiters().holding.is_empty() {
            return false;
        }
        let confirmed = self.store().sync_confirmed();
        let now = Instant::now();
        let tokens = self.waiters().take(false);
        let mut any = false;
        for &token in &tokens {
            match self.settle_conn(token, confirmed, now) {
                None => {
                    self.waiters().holding.remove(&token);
                }
                Some(true) => {
                    any = true;
                    self.waiters().hold_moved = now;
                    self.serve(token);
                }
                Some(false) => {}
            }
        }
        self.waiters().visiting = tokens;
        if !self.waiters().holding.is_empty() {
            // Replies still wait: wake replicas asleep on a doorbell.
            self.store().sync_nudge();
        }
        any
    }

    /// Serve every watcher with lines queued, to move them out.
    fn feed_watchers(&mut self) {
        if self.waiters().watching.is_empty() {
            return;
        }
        let tokens = self.waiters().take(true);
        for &token in &tokens {
            match self.has_watch_lines(token) {
                Some(true) => self.serve(token),
                Some(false) => {}
                None => {
                    self.waiters().watching.remove(&token);
                }
            }
        }
        self.waiters().visiting = tokens;
    }

    /// `-o idle_timeout=S`: close connections whose last request is more
    /// than S seconds old, as memcached does.
    fn kick_idle(&mut self) {
        let limit = u64::from(self.runtime().settings.idle_timeout);
        if limit == 0 || !self.waiters().idle_check_due() {
            return;
        }
        let mut idle: Vec<u64> =
            self.conn_infos().iter().filter(|(_, i)| i.idle_secs() > limit).map(|(t, _)| *t).collect();
        let w = self.waiters();
        idle.retain(|&t| w.may_kick(t));
        for token in idle {
            self.close(token, "idle_timeout");
            self.runtime().connections.idle_kicks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_holding_replies_polls_without_blocking_until_the_hold_stands_still() {
        let mut w = Waiters::new();
        assert_eq!(w.poll_within(0, true), None, "nothing to wait on: block until an event");
        w.note(7, true, false);
        assert_eq!(w.poll_within(0, true), Some(Duration::ZERO), "a reply just held: poll");
        w.hold_moved = Instant::now() - HOLD_SPIN;
        assert_eq!(w.poll_within(0, true), Some(HOLD_POLL), "held still (dead replica): block a little");
        w.note(7, true, false);
        assert_eq!(w.poll_within(0, true), Some(HOLD_POLL), "the same connection still holding is no news");
        w.note(7, false, true);
        assert_eq!(w.poll_within(0, true), Some(WATCH_POLL));
        w.forget(7);
        let d = w.poll_within(30, true).expect("-o idle_timeout: wake for the next check");
        assert!(d <= IDLE_CHECK, "{d:?}");
        assert_eq!(w.poll_within(30, false), None, "no connection to kick");
    }
}
