//! Continuous log replication: read-only replicas pull the primary's log
//! one-sidedly, validate every record, and apply it to their own log at the
//! same position, so the two logs stay byte-for-byte alike.
//!
//! - `transport.rs`: the interface (read control block, read log bytes, write
//!   our progress slot); `shm.rs` (same host) and `verbs.rs` (RDMA RC).
//! - `replica.rs`: the replica loop. No sleeps: it spins while there is work
//!   and backs off to a bounded timed wait on its control eventfd when idle.
//!   `bounds.rs`: what it accepts from a primary beyond the checksum;
//!   `promote.rs`: becoming a primary (fence, drain the old log, take writes).
//! - `primary.rs`: the primary's side: a heartbeat, the replicas' progress
//!   (for `stats replication` and `--sync-replicas`), fencing of a stale
//!   primary by a higher epoch.
//!
//! The primary's CPU does no per-replica work once a replica is connected.

pub mod bounds;
#[doc(hidden)]
pub mod fuzzing;
pub mod primary;
mod promote;
pub mod replica;
pub mod shm;
pub mod transport;
pub mod verbs;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::AuthToken;
use crate::error::Result;
use crate::store::Store;
use primary::SlotTable;
use replica::{ReplicaControl, ReplicaOptions, ReplicaStatus};
use transport::Transport;

/// What a replica shows its primary, and trusts in it: the side channel's
/// token (`--auth-token-file`) and the group trusted to own shm files
/// (`--shm-group`). Never printed (the token's `Debug` is redacted).
#[derive(Clone, Debug, Default)]
pub struct Trust {
    pub token: Option<AuthToken>,
    pub shm_group: Option<u32>,
}

/// Connect a transport for `url` with `trust`: shm or verbs, by the scheme.
pub fn connect_with(url: &Url, id: u64, trust: &Trust) -> Result<Box<dyn Transport>> {
    match url {
        Url::Shm(name) => Ok(Box::new(shm::ShmTransport::connect_with(name, id, trust.shm_group)?)),
        Url::Rdma { host, port } => {
            Ok(Box::new(verbs::VerbsTransport::connect(host, *port, id, trust.token.as_ref())?))
        }
    }
}

/// Where replicas reach a primary (`--replication-listen`, `--replica-of`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    /// Same host: the region file `shm://NAME`.
    Shm(String),
    /// RDMA RC over the verbs transport, set up through a TCP side channel.
    Rdma { host: String, port: u16 },
}

impl FromStr for Url {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Url, String> {
        if let Some(name) = s.strip_prefix("shm://") {
            if !shm::valid_name(name) {
                return Err(format!("shm name {name:?} must be 1-64 characters of A-Z a-z 0-9 - _ ."));
            }
            return Ok(Url::Shm(name.to_string()));
        }
        if let Some(hp) = s.strip_prefix("rdma://") {
            let (host, port) = hp.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected rdma://HOST:PORT"))?;
            let port = port.parse().map_err(|_| format!("{s:?}: bad port {port:?}"))?;
            if host.is_empty() {
                return Err(format!("{s:?}: missing host"));
            }
            return Ok(Url::Rdma { host: host.trim_matches(['[', ']']).to_string(), port });
        }
        Err(format!("{s:?}: replication URLs are shm://NAME or rdma://HOST:PORT"))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Url::Shm(n) => write!(f, "shm://{n}"),
            Url::Rdma { host, port } => write!(f, "rdma://{host}:{port}"),
        }
    }
}

/// The process's replication role and handles, for `stats replication` and
/// the `replica` admin commands.
pub struct Replication {
    store: Arc<Store>,
    /// Where our own log is offered to replicas.
    pub listeners: Vec<Url>,
    replica: Mutex<Option<ReplicaHandle>>,
    /// Replica options for `replica follow` on a primary.
    opts: ReplicaOptions,
    trust: Trust,
    slots: Arc<SlotTable>,
    pub sync_replicas: usize,
    _ticker: Option<primary::Ticker>,
}

struct ReplicaHandle {
    status: Arc<ReplicaStatus>,
    ctl: Arc<ReplicaControl>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replication {
    /// `slots` are this server's replicas' progress slots (see
    /// [`SlotTable`]); `trust` is what we show a primary we follow.
    pub fn new(
        store: Arc<Store>,
        listeners: Vec<Url>,
        opts: ReplicaOptions,
        sync_replicas: usize,
        verbose: bool,
        trust: Trust,
        slots: Arc<SlotTable>,
    ) -> Result<Replication> {
        let ticker = Some(primary::Ticker::start(store.clone(), slots.clone(), verbose)?);
        Ok(Replication {
            store,
            listeners,
            replica: Mutex::new(None),
            opts,
            trust,
            slots,
            sync_replicas,
            _ticker: ticker,
        })
    }

    /// Start following `url` (at start-up with `--replica-of`, or `replica follow`).
    pub fn follow(&self, url: Url) -> Result<()> {
        let mut g = self.replica.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = g.as_ref() {
            if h.thread.as_ref().is_some_and(|t| !t.is_finished()) {
                h.ctl.follow(url);
                return Ok(());
            }
        }
        self.store.set_read_only(true);
        let status = Arc::new(ReplicaStatus::default());
        let ctl = Arc::new(ReplicaControl::new()?);
        let (s, st, c, o) = (self.store.clone(), status.clone(), ctl.clone(), self.opts.clone());
        let trust = self.trust.clone();
        let thread = std::thread::Builder::new()
            .name("replica".into())
            .spawn(move || replica::run(s, url, st, c, o, Arc::new(move |u: &Url, id| connect_with(u, id, &trust))))
            .map_err(|e| crate::error::Error::new(format!("starting the replica thread: {e}")))?;
        *g = Some(ReplicaHandle { status, ctl, thread: Some(thread) });
        Ok(())
    }

    pub fn is_replica(&self) -> bool {
        self.store.is_read_only()
    }

    /// `replica promote`: returns the new epoch once writes are accepted.
    pub fn promote(&self) -> std::result::Result<u64, String> {
        let g = self.replica.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_ref() {
            // The drain's bound, then the promotion itself.
            Some(h) if self.store.is_read_only() => h.ctl.promote(self.opts.promote_drain + Duration::from_secs(10)),
            _ => Err("not a replica".into()),
        }
    }

    /// Stop the replica thread (shutdown).
    pub fn shutdown(&self) {
        let mut g = self.replica.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = g.as_mut() {
            h.ctl.request_stop();
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// The lines of `stats replication`.
    pub fn stats(&self) -> Vec<(String, String)> {
        let log = self.store.log();
        let mut v: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, val: String| v.push((k.to_string(), val));
        let g = self.replica.lock().unwrap_or_else(|e| e.into_inner());
        let replica = g.as_ref().filter(|_| self.store.is_read_only());
        let role = if replica.is_some() {
            "replica"
        } else if self.store.is_fenced() {
            "stale-primary"
        } else {
            "primary"
        };
        put("role", role.into());
        put("epoch", log.epoch().to_string());
        put("head", log.head().to_string());
        put("tail", log.tail().to_string());
        put("listen", self.listeners.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(","));
        if let Some(h) = replica {
            let s = &h.status;
            let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            put("primary", s.primary.lock().unwrap_or_else(|e| e.into_inner()).clone());
            put("connected", (s.connected.load(Ordering::Relaxed) as u8).to_string());
            put("applied", l(&s.applied).to_string());
            put("primary_head", l(&s.primary_head).to_string());
            put("primary_tail", l(&s.primary_tail).to_string());
            put("primary_epoch", l(&s.primary_epoch).to_string());
            put("lag_bytes", l(&s.primary_head).saturating_sub(l(&s.applied)).to_string());
            put("lag_us", s.lag_us().to_string());
            put("records_applied", l(&s.records_applied).to_string());
            put("bytes_applied", l(&s.bytes_applied).to_string());
            put("lapped", l(&s.lapped).to_string());
            put("resyncs", l(&s.resyncs).to_string());
            put("reconnects", l(&s.reconnects).to_string());
            put("invalid_records", l(&s.invalid_records).to_string());
            put("catchup_bytes", l(&s.catchup_bytes).to_string());
            put("catchup_us", l(&s.catchup_us).to_string());
            put("last_error", s.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone());
        }
        // What the last promotion recovered from the old primary's memory.
        if let Some(h) = g.as_ref().filter(|h| h.status.promoted.load(Ordering::Acquire)) {
            let s = &h.status;
            put("promote_drain_records", s.drain_records.load(Ordering::Relaxed).to_string());
            put("promote_drain_bytes", s.drain_bytes.load(Ordering::Relaxed).to_string());
            put("promote_drain_us", s.drain_us.load(Ordering::Relaxed).to_string());
            put("promote_drain_result", s.drain_result.lock().unwrap_or_else(|e| e.into_inner()).clone());
        }
        let slots = self.slots.live();
        put("replicas", slots.len().to_string());
        put("sync_replicas", self.sync_replicas.to_string());
        put("sync_timeouts", self.store.snapshot().sync_timeouts.to_string());
        let head = log.head();
        let now = shm::now_us();
        for s in slots {
            let lag_us = if s.applied >= head { 0 } else { now.saturating_sub(s.caught_up_us) };
            put(
                &format!("replica{}", s.slot),
                format!(
                    "id={:x},applied={},lag_bytes={},lag_us={},epoch={}",
                    s.id,
                    s.applied,
                    head.saturating_sub(s.applied),
                    lag_us,
                    s.epoch
                ),
            );
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!("shm://cache-1".parse(), Ok(Url::Shm("cache-1".into())));
        assert_eq!("rdma://10.0.2.15:7000".parse(), Ok(Url::Rdma { host: "10.0.2.15".into(), port: 7000 }));
        assert!("shm://../etc".parse::<Url>().is_err());
        assert!("rdma://host".parse::<Url>().is_err());
        assert!("tcp://x:1".parse::<Url>().is_err());
        assert_eq!(Url::Shm("a".into()).to_string(), "shm://a");
    }
}
