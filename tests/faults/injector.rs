//! The fault injector: under the load, one fault at a time from a seeded
//! schedule, each followed by its recovery and a checkpoint.
//!
//! Faults: kill -9 of a replica (restarted fresh, or from its memory file),
//! kill -9 of the primary (a replica promoted through its admin socket or
//! by `--promote-after`; the others re-follow it; the old primary comes
//! back as its replica, fresh or from its file), and kill -9 of the primary
//! restarted from its memory file as the primary again.
//!
//! A checkpoint pauses the load, audits every key on the primary against
//! the model (what was lost, and whether that was allowed), waits for each
//! replica to apply the primary's whole log and compares every key on both,
//! then lets the load go on against the (new) primary.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, Role};
use crate::load::{self, Load, Rng};
use crate::model::{self, KeyModel, Kind, Op, State};
use crate::net::{self, Item};

/// Which replica takes over when the primary dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Promote {
    /// The one that applied most, through its admin socket (an operator's
    /// script; what `--sync-replicas 1` needs with several replicas).
    MostAdvanced,
    /// The standby (the one replica with `--promote-after`): either its
    /// own timeout or `replica promote` at once, chosen by the schedule.
    Standby,
}

#[derive(Clone, Debug)]
pub struct Mode {
    pub name: &'static str,
    /// `--sync-replicas 1`: no acknowledged write may be lost.
    pub sync: bool,
    /// The default promotion drain (false: `--promote-drain-ms 0`).
    pub drain: bool,
    pub promote: Promote,
    /// Restarts from memory files are one of the faults (needs `-e`).
    pub restarts: bool,
    /// The checker's own test: after each promotion, behind the model's
    /// back, delete one acknowledged key and store a never-written version
    /// of another on the new primary; the run must report both.
    pub sabotage: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub secs: f64,
    pub seed: u64,
    pub workers: usize,
    pub replicas: usize,
    pub mb: usize,
    /// How much later than `lag_us` says a replica may have last been
    /// caught up (its poll interval and scheduling): see [`Window`].
    pub slack: Duration,
    pub promote_after_ms: u64,
    /// Multiplies the pauses between faults and the deadlines (the VM).
    pub scale: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillReplica,
    KillPrimary,
    RestartPrimary,
}

impl Fault {
    fn name(self, from_file: bool) -> &'static str {
        match (self, from_file) {
            (Fault::KillReplica, false) => "kill -9 replica, restart fresh",
            (Fault::KillReplica, true) => "kill -9 replica, restart from its file",
            (Fault::KillPrimary, false) => "kill -9 primary, promote, old primary back fresh",
            (Fault::KillPrimary, true) => "kill -9 primary, promote, old primary back from its file",
            (Fault::RestartPrimary, _) => "kill -9 primary, restart it from its file",
        }
    }
}

/// The loss a failover without `--sync-replicas` may cause, from the
/// promoted replica's `stats replication` just before the kill.
///
/// A replica reporting `lag_us` L at time t (our clock, before we asked)
/// had applied, at t - L, everything the primary had published when it
/// last read the primary's head, at most `slack` before. A write is
/// published before it is acknowledged, so a write lost at the promotion
/// was acknowledged after `start = t - L - slack`; any lost write
/// acknowledged earlier is a violation. In bytes: the promoted log holds at
/// least the `applied` position it reported.
#[derive(Clone, Debug)]
pub struct Window {
    pub start: Instant,
    pub sampled: Instant,
    pub lag_us: u64,
    pub lag_bytes: u64,
    pub applied: u64,
    pub primary_head: u64,
}

#[derive(Default, Debug)]
pub struct Report {
    pub faults: BTreeMap<&'static str, u64>,
    pub audits: u64,
    pub keys_audited: u64,
    pub lost: u64,
    pub lost_bytes: u64,
    pub max_lag_us: u64,
    pub max_lag_bytes: u64,
    /// Of lost writes, the oldest acknowledgement's distance after the
    /// window's start (the bound's margin), in ms.
    pub min_margin_ms: Option<f64>,
    pub restarts_verified: u64,
    /// Primary restarts slower than --promote-after: the standby took over.
    pub takeovers: u64,
    /// The longest a replica took to report the new primary after `replica follow`.
    pub max_follow_ms: f64,
    pub warm_replica_restarts: u64,
    pub log: Vec<String>,
}

impl Report {
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

pub struct Injector {
    pub mode: Mode,
    pub cfg: Config,
    pub cluster: Cluster,
    pub load: Arc<Load>,
    pub report: Report,
    rng: Rng,
    t0: Instant,
}

fn ok(r: std::io::Result<String>, what: &str) -> Result<(), String> {
    match r {
        Ok(l) if l == "OK" => Ok(()),
        Ok(l) => Err(format!("{what} answered {l:?}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

impl Injector {
    pub fn new(mode: Mode, cfg: Config, cluster: Cluster, load: Arc<Load>) -> Injector {
        let rng = Rng::new(cfg.seed ^ 0x1f2e3d4c);
        Injector { mode, cfg, cluster, load, report: Report::default(), rng, t0: Instant::now() }
    }

    fn note(&mut self, what: String) {
        let line = format!("[{:8.3}s] {what}", self.t0.elapsed().as_secs_f64());
        if std::env::var_os("LOGMEMCACHED_FAULTS_VERBOSE").is_some() {
            eprintln!("{line}");
        }
        self.report.log.push(line);
    }

    fn fail(&mut self, what: String) {
        self.note(format!("VIOLATION {what}"));
        self.load.violation(what);
    }

    fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.cfg.scale)
    }

    /// Start the primary and the replicas (the first one the standby
    /// when the mode has one).
    pub fn start_cluster(&mut self) -> Result<(), String> {
        self.cluster.start(0, Role::Primary, false, false)?;
        let url = self.cluster.nodes[0].url.clone();
        for i in 1..=self.cfg.replicas {
            let standby = self.mode.promote == Promote::Standby && i == 1;
            self.cluster.start(i, Role::ReplicaOf(url.clone()), standby, false)?;
            self.wait_following(i, &url)?;
        }
        self.converge_only();
        let (p, r) = (self.cluster.ep(0), self.cluster.replica_eps());
        self.load.set_topo(p, r);
        Ok(())
    }

    /// Run faults until the configured time is up, then a last checkpoint.
    pub fn run(&mut self) {
        // The duration counts from the first fault's schedule, not from
        // the cluster's start (which takes most of a short run in the VM),
        // and every run injects at least one round of faults.
        let deadline = Instant::now() + Duration::from_secs_f64(self.cfg.secs);
        let mut deck: Vec<Fault> = Vec::new();
        let mut first = true;
        while (first || Instant::now() < deadline) && self.load.violations.count() == 0 {
            // The load runs meanwhile: this wait is the schedule.
            let gap = Duration::from_millis(300 + self.rng.below(1200));
            std::thread::sleep(self.scaled(gap));
            if deck.is_empty() {
                deck = vec![Fault::KillReplica, Fault::KillPrimary];
                if self.mode.restarts {
                    deck.extend([Fault::RestartPrimary, Fault::KillReplica, Fault::KillPrimary]);
                }
                for i in (1..deck.len()).rev() {
                    deck.swap(i, self.rng.below(i as u64 + 1) as usize);
                }
                if first && self.mode.restarts {
                    // Even the shortest run restarts the primary from its file.
                    let at = deck.iter().position(|&f| f == Fault::RestartPrimary).unwrap_or(0);
                    let last = deck.len() - 1;
                    deck.swap(at, last);
                }
                first = false;
            }
            let f = deck.pop().unwrap_or(Fault::KillReplica);
            let from_file = f == Fault::RestartPrimary || (self.mode.restarts && self.rng.chance(50));
            *self.report.faults.entry(f.name(from_file)).or_default() += 1;
            let r = match f {
                Fault::KillReplica => self.kill_replica(from_file),
                Fault::KillPrimary => self.kill_primary(from_file),
                Fault::RestartPrimary => self.restart_primary(),
            };
            if let Err(e) = r {
                self.fail(format!("{}: {e}", f.name(from_file)));
                break;
            }
        }
    }

    /// After the load has stopped: the last audit and convergence.
    pub fn finish(&mut self) {
        self.note("time is up: the last audit".into());
        self.check_roles();
        self.audit(None);
        self.converge_only();
    }

    fn kill_replica(&mut self, from_file: bool) -> Result<(), String> {
        let reps = self.cluster.replicas();
        let r = reps[self.rng.below(reps.len() as u64) as usize];
        let delay = Duration::from_millis(self.rng.below(300));
        let applied = self.cluster.stats(r, "replication").map(|s| net::num(&s, "applied")).unwrap_or(0);
        let standby = self.cluster.nodes[r].standby;
        self.note(format!("kill -9 replica n{r} (applied {applied}); back in {} ms", delay.as_millis()));
        self.cluster.kill9(r);
        self.load.set_topo(self.cluster.ep(self.cluster.primary), self.cluster.replica_eps());
        std::thread::sleep(delay); // the schedule: how long it stays down
        let url = self.cluster.nodes[self.cluster.primary].url.clone();
        self.cluster.start(r, Role::ReplicaOf(url.clone()), standby, from_file)?;
        // Its replica thread may start after its port answers.
        self.wait_following(r, &url)?;
        self.load.set_topo(self.cluster.ep(self.cluster.primary), self.cluster.replica_eps());
        self.checkpoint(None);
        if from_file {
            self.check_warm_replica(r, applied);
        }
        Ok(())
    }

    /// A replica restarted from its file and following the same primary
    /// resumes where it was: no resync when the primary still holds it.
    fn check_warm_replica(&mut self, r: usize, applied_before: u64) {
        let Ok(st) = self.cluster.stats(r, "replication") else { return };
        let resyncs = net::num(&st, "resyncs");
        let tail = self.cluster.stats(self.cluster.primary, "replication").map(|s| net::num(&s, "tail")).unwrap_or(0);
        if resyncs == 0 {
            self.report.warm_replica_restarts += 1;
        } else if tail <= applied_before {
            self.fail(format!(
                "replica n{r} restarted from its file resynchronised although the primary still held its position \
                 {applied_before} (tail {tail}): {st:?}"
            ));
        }
    }

    /// Sample the replicas' lag, kill -9 the primary, promote, re-follow,
    /// bring the old primary back as a replica; then the checkpoint.
    fn kill_primary(&mut self, from_file: bool) -> Result<(), String> {
        let old = self.cluster.primary;
        let head = self.cluster.stats(old, "replication").map(|s| net::num(&s, "head")).unwrap_or(0);
        let mut samples = self.sample_lags(head);
        self.cluster.kill9(old);
        let killed = Instant::now();
        let lags: Vec<String> =
            samples.iter().map(|(r, w)| format!("n{r} lag {} us / {} B", w.lag_us, w.lag_bytes)).collect();
        self.note(format!("kill -9 primary n{old} (head {head}; {})", lags.join(", ")));
        self.load.set_topo(None, self.cluster.replica_eps());

        let new = match self.mode.promote {
            Promote::MostAdvanced => {
                let mut best: Option<(u64, usize)> = None;
                for r in self.cluster.replicas() {
                    let a = self.settled(r)?;
                    if best.is_none_or(|(b, _)| a > b) {
                        best = Some((a, r));
                    }
                }
                let (a, r) = best.ok_or("no replica to promote")?;
                self.note(format!("promote n{r} (applied {a}, the most) through its admin socket"));
                ok(self.cluster.admin(r, "replica promote\r\n", Duration::from_secs(60)), "replica promote")?;
                r
            }
            Promote::Standby => {
                let r = self.cluster.replicas().into_iter().find(|&r| self.cluster.nodes[r].standby);
                let r = r.ok_or("no standby replica is running")?;
                if self.rng.chance(50) {
                    self.note(format!("promote the standby n{r} through its admin socket"));
                    ok(self.cluster.admin(r, "replica promote\r\n", Duration::from_secs(60)), "replica promote")?;
                } else {
                    let limit = self.scaled(Duration::from_millis(self.cfg.promote_after_ms) + Duration::from_secs(20));
                    self.wait_role(r, "primary", limit)?;
                    self.note(format!(
                        "the standby n{r} promoted itself (--promote-after {} ms) {} ms after the kill",
                        self.cfg.promote_after_ms,
                        killed.elapsed().as_millis()
                    ));
                }
                r
            }
        };
        self.cluster.nodes[new].standby = false;
        let st = self.cluster.stats(new, "replication").map_err(|e| format!("stats on n{new}: {e}"))?;
        if st.get("role").map(String::as_str) != Some("primary") {
            return Err(format!("n{new} is not primary after its promotion: {st:?}"));
        }
        let promoted_head = net::num(&st, "head");
        self.note(format!(
            "n{new} is primary at epoch {}, head {promoted_head}; drain: {} B, {}",
            net::num(&st, "epoch"),
            net::num(&st, "promote_drain_bytes"),
            st.get("promote_drain_result").cloned().unwrap_or_default()
        ));
        self.cluster.primary = new;
        let url = self.cluster.nodes[new].url.clone();
        for r in self.cluster.replicas() {
            ok(self.cluster.admin(r, &format!("replica follow {url}\r\n"), Duration::from_secs(30)), "replica follow")?;
        }
        // `replica follow` answers once the request is queued; the replica
        // loop takes it between two polls (or ends a reconnect backoff).
        for r in self.cluster.replicas() {
            self.wait_following(r, &url)?;
        }
        let standby_left = self.cluster.replicas().iter().any(|&r| self.cluster.nodes[r].standby);
        let standby = self.mode.promote == Promote::Standby && !standby_left;
        self.cluster.start(old, Role::ReplicaOf(url.clone()), standby, from_file)?;
        self.wait_following(old, &url)?;
        let window = samples.remove(&new);
        if let Some(w) = &window {
            if promoted_head < w.applied {
                self.fail(format!(
                    "n{new} promoted with head {promoted_head}, below the {} it had applied before the kill",
                    w.applied
                ));
            }
            self.report.lost_bytes += w.primary_head.saturating_sub(promoted_head);
        }
        // With --sync-replicas 1 nothing acknowledged may be lost.
        let allowed = if self.mode.sync { None } else { window };
        if !self.mode.sync && allowed.is_none() {
            return Err(format!("no lag sample of n{new} before the kill"));
        }
        if self.mode.sabotage {
            self.sabotage()?;
        }
        self.checkpoint(allowed);
        Ok(())
    }

    /// See [`Mode::sabotage`]: two changes no client acknowledged.
    fn sabotage(&mut self) -> Result<(), String> {
        let p = self.cluster.primary;
        let mut c = self.cluster.conn(p).map_err(|e| format!("sabotage: {e}"))?;
        let names: Vec<String> =
            self.load.names.iter().filter(|(_, k)| *k == Kind::Regular).map(|(n, _)| n.clone()).collect();
        let got =
            c.gets(&names.iter().map(String::as_str).collect::<Vec<_>>()).map_err(|e| format!("sabotage: {e}"))?;
        let mut held = names.iter().filter(|n| got.contains_key(*n));
        let (Some(gone), Some(bogus)) = (held.next(), held.next()) else {
            return Err("sabotage: fewer than two keys are held".into());
        };
        let (value, flags) = model::value_of(bogus, 4_000_000_000);
        let mut req = format!("set {bogus} {flags} 0 {}\r\n", value.len()).into_bytes();
        req.extend_from_slice(&value);
        req.extend_from_slice(b"\r\n");
        let a = c.cmd(format!("delete {gone}\r\n").as_bytes()).map_err(|e| format!("sabotage: {e}"))?;
        let b = c.cmd(&req).map_err(|e| format!("sabotage: {e}"))?;
        self.note(format!("sabotage: deleted {gone} ({a}), stored a never-written version of {bogus} ({b})"));
        Ok(())
    }

    /// Kill -9 the primary and restart it from its memory file: it must
    /// serve every write it acknowledged, and its replicas follow it on.
    fn restart_primary(&mut self) -> Result<(), String> {
        let p = self.cluster.primary;
        let head = self.cluster.stats(p, "replication").map(|s| net::num(&s, "head")).unwrap_or(0);
        let mut samples = self.sample_lags(head);
        self.note(format!("kill -9 primary n{p} (head {head}); restart it from its memory file"));
        self.cluster.kill9(p);
        let killed = Instant::now();
        self.load.set_topo(None, self.cluster.replica_eps());
        self.cluster.start(p, Role::Primary, false, true)?;
        let took = killed.elapsed();
        let st = self.cluster.stats(p, "replication").map_err(|e| format!("stats on n{p}: {e}"))?;
        self.note(format!(
            "n{p} restarted in {} ms: role {:?}, epoch {}, head {}",
            took.as_millis(),
            st.get("role"),
            net::num(&st, "epoch"),
            net::num(&st, "head")
        ));
        // A restart slower than the standby's --promote-after lets it take
        // over (and fence the restarted primary): correct, and then this is
        // a failover. Once its timeout and drain have certainly passed,
        // whichever happened has happened.
        let standby = self.cluster.replicas().into_iter().find(|&r| self.cluster.nodes[r].standby);
        let timeout = Duration::from_millis(self.cfg.promote_after_ms);
        if let Some(sb) = standby.filter(|_| took + Duration::from_millis(50) >= timeout) {
            let settle =
                timeout + Duration::from_millis(if self.mode.drain { 300 } else { 0 }) + Duration::from_secs(1);
            std::thread::sleep(self.scaled(settle).saturating_sub(killed.elapsed())); // its timer, not a condition
            let role = self.cluster.stats(sb, "replication").ok().and_then(|s| s.get("role").cloned());
            if role.as_deref() == Some("primary") {
                return self.standby_took_over(p, sb, samples.remove(&sb));
            }
        }
        self.report.restarts_verified += 1;
        self.checkpoint(None);
        Ok(())
    }

    /// The standby `sb` promoted itself while the primary `old` restarted:
    /// `old` (fenced) comes back from its file as a replica of `sb`, the
    /// other replicas follow `sb`, and the loss is held to `window`.
    fn standby_took_over(&mut self, old: usize, sb: usize, window: Option<Window>) -> Result<(), String> {
        self.note(format!("the standby n{sb} took over while n{old} restarted (--promote-after); n{old} is fenced"));
        self.report.takeovers += 1;
        self.cluster.nodes[sb].standby = false;
        self.cluster.primary = sb;
        let url = self.cluster.nodes[sb].url.clone();
        self.cluster.kill9(old);
        for r in self.cluster.replicas() {
            ok(self.cluster.admin(r, &format!("replica follow {url}\r\n"), Duration::from_secs(30)), "replica follow")?;
            self.wait_following(r, &url)?;
        }
        self.cluster.start(old, Role::ReplicaOf(url.clone()), true, true)?;
        self.wait_following(old, &url)?;
        let allowed = if self.mode.sync { None } else { window };
        if !self.mode.sync && allowed.is_none() {
            return Err(format!("no lag sample of n{sb} before the kill"));
        }
        self.checkpoint(allowed);
        Ok(())
    }

    /// Each replica's lag just before a kill of the primary (its head `head`).
    fn sample_lags(&mut self, head: u64) -> BTreeMap<usize, Window> {
        let mut samples = BTreeMap::new();
        for r in self.cluster.replicas() {
            let t = Instant::now();
            if let Ok(st) = self.cluster.stats(r, "replication") {
                let (lag_us, lag_bytes) = (net::num(&st, "lag_us"), net::num(&st, "lag_bytes"));
                self.report.max_lag_us = self.report.max_lag_us.max(lag_us);
                self.report.max_lag_bytes = self.report.max_lag_bytes.max(lag_bytes);
                let back = Duration::from_micros(lag_us) + self.cfg.slack;
                let start = t.checked_sub(back).unwrap_or(self.t0);
                let applied = net::num(&st, "applied");
                samples.insert(r, Window { start, sampled: t, lag_us, lag_bytes, applied, primary_head: head });
            }
        }
        samples
    }

    /// Wait until replica `r` has applied all it will of a dead primary
    /// (over shm its log stays readable: all of it; over verbs the
    /// connection drops); its applied position.
    fn settled(&mut self, r: usize) -> Result<u64, String> {
        let deadline = Instant::now() + self.scaled(Duration::from_secs(30));
        let mut last = None;
        loop {
            let st = self.cluster.stats(r, "replication").map_err(|e| format!("stats on n{r}: {e}"))?;
            let a = net::num(&st, "applied");
            let done = a >= net::num(&st, "primary_head") || st.get("connected").map(String::as_str) == Some("0");
            if done && last == Some(a) {
                return Ok(a);
            }
            last = Some(a);
            if Instant::now() > deadline {
                return Err(format!("replica n{r} did not settle: {st:?}"));
            }
            std::thread::sleep(Duration::from_millis(50)); // polling its progress
        }
    }

    /// Until replica `r` reports it follows `url`, connected (after a
    /// start or `replica follow`); the longest wait goes into the report.
    fn wait_following(&mut self, r: usize, url: &str) -> Result<(), String> {
        let t = Instant::now();
        let limit = self.scaled(Duration::from_secs(10));
        loop {
            let st = self.cluster.stats(r, "replication").unwrap_or_default();
            let on = st.get("primary").map(String::as_str) == Some(url);
            if on && st.get("connected").map(String::as_str) == Some("1") {
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                self.report.max_follow_ms = self.report.max_follow_ms.max(ms);
                return Ok(());
            }
            if t.elapsed() > limit {
                return Err(format!(
                    "n{r} did not follow {url} within {} ms of `replica follow`: {st:?}",
                    limit.as_millis()
                ));
            }
            std::thread::sleep(Duration::from_millis(2)); // polling its status
        }
    }

    fn wait_role(&mut self, r: usize, role: &str, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let st = self.cluster.stats(r, "replication");
            if st.as_ref().is_ok_and(|s| s.get("role").map(String::as_str) == Some(role)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("n{r} did not become {role} within {} ms: {st:?}", limit.as_millis()));
            }
            std::thread::sleep(Duration::from_millis(5)); // polling its role
        }
    }

    /// Pause the load, audit the primary against the model (`window`: the
    /// loss allowed, None: none), check roles and replicas, resume.
    fn checkpoint(&mut self, window: Option<Window>) {
        self.load.pause(self.cfg.workers);
        self.check_roles();
        self.audit(window.as_ref());
        self.converge_only();
        self.load.set_topo(self.cluster.ep(self.cluster.primary), self.cluster.replica_eps());
        self.load.resume();
    }

    fn check_roles(&mut self) {
        let p = self.cluster.primary;
        let purl = self.cluster.nodes[p].url.clone();
        for i in 0..self.cluster.nodes.len() {
            if !self.cluster.running(i) {
                continue;
            }
            if !self.cluster.alive(i) {
                let tail = self.cluster.log_tail(i);
                self.fail(format!("n{i} exited by itself; its log ends:\n{tail}"));
                continue;
            }
            let st = self.cluster.stats(i, "replication").unwrap_or_default();
            let role = st.get("role").cloned().unwrap_or_default();
            let want = if i == p { "primary" } else { "replica" };
            if role != want || (i != p && st.get("primary") != Some(&purl)) {
                self.fail(format!("n{i} should be a {want} (of {purl}) but reports {st:?}"));
            }
        }
    }

    /// Every key on the primary against its history since the last audit.
    fn audit(&mut self, window: Option<&Window>) {
        self.report.audits += 1;
        let p = self.cluster.primary;
        let mut c = match self.cluster.conn(p) {
            Ok(c) => c,
            Err(e) => return self.fail(format!("audit: cannot reach the primary n{p}: {e}")),
        };
        match c.stats("") {
            Ok(st) if net::num(&st, "evictions") == 0 => {}
            Ok(st) => self.fail(format!(
                "the primary evicted {} items: the campaign's keys no longer fit its log (raise -m)",
                net::num(&st, "evictions")
            )),
            Err(e) => self.fail(format!("audit: stats on the primary: {e}")),
        }
        let load = self.load.clone();
        let (mut survivor_cas, mut lost_cas) = (0u64, u64::MAX);
        let mut lost_here = 0u64;
        for w in 0..self.cfg.workers {
            let mut models = load.models[w].lock().unwrap_or_else(|e| e.into_inner());
            for chunk in models.chunks_mut(48) {
                let keys: Vec<&str> = chunk.iter().map(|m| m.name.as_str()).collect();
                let got = match c.gets(&keys) {
                    Ok(g) => g,
                    Err(e) => return self.fail(format!("audit: gets on the primary: {e}")),
                };
                for m in chunk.iter_mut() {
                    self.report.keys_audited += 1;
                    let item = got.get(&m.name);
                    let found = match decode(m, item) {
                        Ok(s) => s,
                        Err(why) => {
                            self.fail(format!("audit: {why}"));
                            continue;
                        }
                    };
                    let v = model::judge(m, found);
                    if let Some(e) = v.error {
                        self.fail(format!("audit: {e}"));
                        continue;
                    }
                    if let Some(cas) = v.survivor_cas {
                        survivor_cas = survivor_cas.max(cas);
                    }
                    for op in &v.lost {
                        lost_here += 1;
                        if let Some(cas) = op.cas {
                            lost_cas = lost_cas.min(cas);
                        }
                        self.judge_loss(m, found, op, window);
                    }
                    rebase(&load, m, found, item);
                }
            }
        }
        self.report.lost += lost_here;
        if lost_here > 0 {
            self.note(format!("audit: {lost_here} acknowledged writes lost"));
        }
        if lost_cas < survivor_cas {
            self.fail(format!(
                "audit: a write with CAS {lost_cas} was lost while one with CAS {survivor_cas} survived: \
                 the promoted log is not a prefix of the old primary's"
            ));
        }
    }

    fn judge_loss(&mut self, m: &KeyModel, found: State, op: &Op, window: Option<&Window>) {
        let acked = op.acked.unwrap_or(op.sent);
        let at = acked.duration_since(self.t0).as_secs_f64();
        match window {
            None => self.fail(format!(
                "(no loss allowed) {}: acknowledged {} of version {} (at {at:.3}s) lost; the primary holds {found:?}",
                m.name, op.what, op.ver
            )),
            Some(w) => {
                let margin = acked.checked_duration_since(w.start).map(|d| d.as_secs_f64() * 1000.0);
                match margin {
                    Some(ms) => {
                        let min = self.report.min_margin_ms.get_or_insert(ms);
                        *min = min.min(ms);
                    }
                    None => self.fail(format!(
                        "(loss bound) {}: {} of version {} acknowledged at {at:.3}s was lost, {:.1} ms before the \
                         window the lag allowed ({} us lag, {} ms slack, sampled at {:.3}s)",
                        m.name,
                        op.what,
                        op.ver,
                        w.start.duration_since(acked).as_secs_f64() * 1000.0,
                        w.lag_us,
                        self.cfg.slack.as_millis(),
                        w.sampled.duration_since(self.t0).as_secs_f64()
                    )),
                }
            }
        }
    }

    /// Each replica applies the primary's whole log (the load is paused)
    /// and then holds exactly the primary's items.
    fn converge_only(&mut self) {
        let p = self.cluster.primary;
        let head = match self.cluster.stats(p, "replication") {
            Ok(st) => net::num(&st, "head"),
            Err(e) => return self.fail(format!("converge: stats on the primary: {e}")),
        };
        let names: Vec<String> = self.load.names.iter().map(|(n, _)| n.clone()).collect();
        for r in self.cluster.replicas() {
            let deadline = Instant::now() + self.scaled(Duration::from_secs(60));
            loop {
                let st = self.cluster.stats(r, "replication").unwrap_or_default();
                if net::num(&st, "applied") == head && st.get("role").map(String::as_str) == Some("replica") {
                    break;
                }
                if Instant::now() > deadline {
                    return self.fail(format!("replica n{r} did not apply the primary's head {head}: {st:?}"));
                }
                std::thread::sleep(Duration::from_millis(10)); // polling its progress
            }
            let (Ok(mut pc), Ok(mut rc)) = (self.cluster.conn(p), self.cluster.conn(r)) else {
                return self.fail(format!("converge: cannot reach n{p} or n{r}"));
            };
            for chunk in names.chunks(64) {
                let keys: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let (a, b) = (pc.gets(&keys), rc.gets(&keys));
                match (a, b) {
                    (Ok(a), Ok(b)) if a == b => {}
                    (Ok(a), Ok(b)) => {
                        let k = keys.iter().find(|k| a.get(**k) != b.get(**k)).copied().unwrap_or_default();
                        return self.fail(format!(
                            "replica n{r} differs from the primary n{p} at {k}: {:?} vs {:?}",
                            a.get(k).map(short),
                            b.get(k).map(short)
                        ));
                    }
                    (a, b) => return self.fail(format!("converge: gets failed: {:?} / {:?}", a.err(), b.err())),
                }
            }
        }
    }
}

fn short(it: &Item) -> String {
    format!("{:?} flags {} cas {}", String::from_utf8_lossy(&it.value[..it.value.len().min(40)]), it.flags, it.cas)
}

/// The state a retrieval shows for `m`'s key, or why no write made it.
fn decode(m: &KeyModel, item: Option<&Item>) -> Result<State, String> {
    let Some(it) = item else { return Ok(State::Missing) };
    match m.kind {
        Kind::Regular => model::decode(&m.name, &it.value, it.flags).map(State::Ver),
        Kind::Counter { .. } => std::str::from_utf8(&it.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(State::Num)
            .ok_or_else(|| format!("{}: counter value {:?}", m.name, String::from_utf8_lossy(&it.value))),
    }
}

/// After an audit the state found is the key's new certain base, for the
/// owner and for readers (`floor`).
fn rebase(load: &Load, m: &mut KeyModel, found: State, item: Option<&Item>) {
    m.base = found;
    m.base_cas = item.map(|it| it.cas);
    m.ops.clear();
    let floor = match (m.kind, found) {
        (Kind::Regular, State::Ver(v)) => (v as u64) << 1,
        (Kind::Regular, _) => (((m.next_ver - 1) as u64) << 1) | 1,
        (Kind::Counter { base }, State::Num(n)) => n - base + 1,
        (Kind::Counter { .. }, _) => 0,
    };
    load.keys[m.id].floor.store(floor, Ordering::Release);
}

/// The load's threads, stopped and joined by [`Workers::stop`].
pub struct Workers {
    handles: Vec<std::thread::JoinHandle<()>>,
    load: Arc<Load>,
}

impl Workers {
    pub fn start(load: Arc<Load>, n: usize, seed: u64) -> Workers {
        let handles = (0..n)
            .map(|w| {
                let l = load.clone();
                let s = seed ^ ((w as u64 + 1) << 32);
                std::thread::Builder::new()
                    .name(format!("load-{w}"))
                    .spawn(move || {
                        // Reports the end even when the worker panics.
                        struct Ended<'a>(&'a Load, usize);
                        impl Drop for Ended<'_> {
                            fn drop(&mut self) {
                                self.0.worker_ended(self.1, std::thread::panicking());
                            }
                        }
                        let _ended = Ended(&l, w);
                        load::worker(&l, w, s)
                    })
                    .expect("spawning a load worker")
            })
            .collect();
        Workers { handles, load }
    }

    pub fn stop(self) {
        self.load.stop.store(true, Ordering::Relaxed);
        self.load.resume();
        for h in self.handles {
            // A panic was recorded as a violation by the worker's guard.
            let _ = h.join();
        }
    }
}
