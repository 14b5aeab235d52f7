//! The steady mixed load and its online checks: several workers, one
//! connection to the primary each (and one to each replica for reads), every
//! request sent alone and its reply recorded. Writes (set, ms, ms with CAS,
//! delete, md, incr, ma) go to the worker's own keys; reads (mg, gets
//! multi-gets) to any key, on the primary or a replica, each checked by
//! [`model::check_read`] as it arrives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::model::{self, Before, KeyModel, KeyShared, Kind, Op, Outcome, Source, State, Violations};
use crate::net::{Conn, Item};

/// xorshift64*: the campaign's only source of randomness, seeded.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545f4914f6cdd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A server the load may talk to: its port and pid (a reply from another
/// process on a reused port is never taken for this one's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub port: u16,
    pub pid: u32,
}

/// Where the load goes; `gen` changes whenever the primary does.
#[derive(Clone, Debug, Default)]
pub struct Topo {
    pub gen: u64,
    pub primary: Option<Endpoint>,
    pub replicas: Vec<Endpoint>,
}

#[derive(Default)]
pub struct Tally {
    pub writes_sent: AtomicU64,
    pub writes_acked: AtomicU64,
    pub writes_unknown: AtomicU64,
    pub writes_refused: AtomicU64,
    pub reads_checked: AtomicU64,
    pub replica_reads: AtomicU64,
}

#[derive(Default)]
struct Pause {
    requested: bool,
    parked: usize,
    /// Workers that ended (a panic in one is a violation, not a hang).
    ended: usize,
}

/// Everything the workers and the injector share.
pub struct Load {
    pub keys: Vec<KeyShared>,
    pub names: Vec<(String, Kind)>,
    pub models: Vec<Mutex<Vec<KeyModel>>>,
    topo: Mutex<Topo>,
    topo_cv: Condvar,
    pause: Mutex<Pause>,
    pause_cv: Condvar,
    pausing: AtomicBool,
    pub stop: AtomicBool,
    pub violations: Violations,
    pub tally: Tally,
    pub t0: Instant,
}

pub const REGULAR_PER_WORKER: usize = 96;
pub const COUNTERS_PER_WORKER: usize = 16;

impl Load {
    pub fn new(workers: usize) -> Load {
        let mut names = Vec::new();
        let mut models = Vec::new();
        for w in 0..workers {
            let mut mine = Vec::new();
            for i in 0..REGULAR_PER_WORKER + COUNTERS_PER_WORKER {
                let id = names.len();
                let (name, kind) = if i < REGULAR_PER_WORKER {
                    (format!("k{w}:{i}"), Kind::Regular)
                } else {
                    let c = w * COUNTERS_PER_WORKER + i - REGULAR_PER_WORKER;
                    (format!("c{w}:{i}"), Kind::Counter { base: model::counter_base(c) })
                };
                names.push((name.clone(), kind));
                mine.push(KeyModel::new(id, name, kind));
            }
            models.push(Mutex::new(mine));
        }
        Load {
            keys: (0..names.len()).map(|_| KeyShared::default()).collect(),
            names,
            models,
            topo: Mutex::new(Topo::default()),
            topo_cv: Condvar::new(),
            pause: Mutex::new(Pause::default()),
            pause_cv: Condvar::new(),
            pausing: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            violations: Violations::default(),
            tally: Tally::default(),
            t0: Instant::now(),
        }
    }

    pub fn topo(&self) -> Topo {
        self.topo.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Publish a new topology (a new primary: a new generation).
    pub fn set_topo(&self, primary: Option<Endpoint>, replicas: Vec<Endpoint>) {
        let mut t = self.topo.lock().unwrap_or_else(|e| e.into_inner());
        if t.primary != primary {
            t.gen += 1;
        }
        t.primary = primary;
        t.replicas = replicas;
        self.topo_cv.notify_all();
    }

    /// Wait until the generation moves past `gen`, at most `d` (a worker
    /// whose primary went away waits for the injector's next one).
    fn wait_topo(&self, gen: u64, d: Duration) {
        let g = self.topo.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.topo_cv.wait_timeout_while(g, d, |t| t.gen == gen && !self.pausing.load(Ordering::Acquire));
    }

    /// Stop every worker between two requests; returns once all have.
    pub fn pause(&self, workers: usize) {
        let mut p = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        p.requested = true;
        self.pausing.store(true, Ordering::Release);
        // Under the topology lock: a worker about to wait sees the flag or the wake-up.
        drop(self.topo.lock().unwrap_or_else(|e| e.into_inner()));
        self.topo_cv.notify_all();
        let deadline = Instant::now() + Duration::from_secs(60);
        while p.parked + p.ended < workers {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "workers did not pause within 60 s ({} of {workers})", p.parked);
            p = self.pause_cv.wait_timeout(p, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    pub fn resume(&self) {
        let mut p = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        p.requested = false;
        self.pausing.store(false, Ordering::Release);
        self.pause_cv.notify_all();
    }

    /// Park here while a pause is requested.
    fn park(&self) {
        let mut p = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        if !p.requested {
            return;
        }
        p.parked += 1;
        self.pause_cv.notify_all();
        while p.requested {
            p = self.pause_cv.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        p.parked -= 1;
    }

    /// A worker's thread ends (normally or by a panic).
    pub fn worker_ended(&self, w: usize, panicked: bool) {
        if panicked {
            self.violation(format!("load worker {w} panicked (the checker itself failed)"));
        }
        let mut p = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        p.ended += 1;
        self.pause_cv.notify_all();
    }

    pub fn violation(&self, what: String) {
        let t = self.t0.elapsed().as_secs_f64();
        self.violations.add(format!("[{t:.3}s] {what}"));
    }
}

/// Connect to `ep` and make sure it is that process.
pub fn connect(ep: Endpoint) -> Option<Conn> {
    let mut c = Conn::connect(ep.port).ok()?;
    let pid = c.stats("").ok()?.get("pid")?.parse::<u32>().ok()?;
    (pid == ep.pid).then_some(c)
}

/// One worker's loop until `load.stop`.
pub fn worker(load: &Load, w: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut prim: Option<(u64, Conn)> = None;
    let mut reps: HashMap<Endpoint, Conn> = HashMap::new();
    let mut seen_missing = [false; REGULAR_PER_WORKER + COUNTERS_PER_WORKER];
    while !load.stop.load(Ordering::Relaxed) {
        load.park();
        let topo = load.topo();
        if prim.as_ref().is_some_and(|(g, _)| *g != topo.gen) {
            prim = None;
        }
        reps.retain(|ep, _| topo.replicas.contains(ep));
        let Some(ep) = topo.primary else {
            load.wait_topo(topo.gen, Duration::from_millis(50));
            continue;
        };
        if prim.is_none() {
            match connect(ep) {
                Some(c) => prim = Some((topo.gen, c)),
                None => {
                    load.wait_topo(topo.gen, Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some((_, conn)) = prim.as_mut() else { continue };
        let roll = rng.below(100);
        let ok = if roll < 12 && !topo.replicas.is_empty() {
            let ep = topo.replicas[rng.below(topo.replicas.len() as u64) as usize];
            if let std::collections::hash_map::Entry::Vacant(e) = reps.entry(ep) {
                if let Some(c) = connect(ep) {
                    e.insert(c);
                }
            }
            if let Some(c) = reps.get_mut(&ep) {
                if read(load, &mut rng, w, c, Source::Replica).is_err() {
                    reps.remove(&ep);
                }
            }
            true
        } else if roll < 30 {
            read(load, &mut rng, w, conn, Source::Primary).is_ok()
        } else {
            let mut models = load.models[w].lock().unwrap_or_else(|e| e.into_inner());
            let i = rng.below(models.len() as u64) as usize;
            write(load, &mut rng, conn, &mut models[i], &mut seen_missing[i]).is_ok()
        };
        if !ok {
            prim = None;
            load.wait_topo(topo.gen, Duration::from_millis(20));
        }
    }
}

/// A read of 1 to 16 keys (mg for one of the worker's own, gets for any),
/// every answer checked. Err: the connection failed.
fn read(load: &Load, rng: &mut Rng, w: usize, c: &mut Conn, src: Source) -> std::io::Result<()> {
    let n = load.names.len() as u64;
    let own = w * (REGULAR_PER_WORKER + COUNTERS_PER_WORKER);
    let ids: Vec<usize> = if rng.chance(40) {
        vec![own + rng.below((REGULAR_PER_WORKER + COUNTERS_PER_WORKER) as u64) as usize]
    } else {
        let mut v: Vec<usize> = (0..1 + rng.below(16)).map(|_| rng.below(n) as usize).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let before: Vec<Before> = ids.iter().map(|&i| model::before(&load.keys[i])).collect();
    let got: HashMap<String, Item> = if ids.len() == 1 && rng.chance(50) {
        let name = &load.names[ids[0]].0;
        match c.mg(name)? {
            Ok(hit) => hit.into_iter().map(|it| (name.clone(), it)).collect(),
            Err(line) => {
                load.violation(format!("mg {name} on the {src:?} answered {line:?}"));
                return Ok(());
            }
        }
    } else {
        let keys: Vec<&str> = ids.iter().map(|&i| load.names[i].0.as_str()).collect();
        c.gets(&keys)?
    };
    for (j, &i) in ids.iter().enumerate() {
        let (name, kind) = &load.names[i];
        let hit = got.get(name);
        let r = model::check_read(name, *kind, &load.keys[i], before[j], hit.map(|it| (&it.value[..], it.flags)), src);
        if let Err(why) = r {
            load.violation(format!("read on the {src:?}: {why}"));
        }
        load.tally.reads_checked.fetch_add(1, Ordering::Relaxed);
        if src == Source::Replica {
            load.tally.replica_reads.fetch_add(1, Ordering::Relaxed);
        }
    }
    if got.len() > ids.len() || got.keys().any(|k| !ids.iter().any(|&i| &load.names[i].0 == k)) {
        load.violation(format!("the {src:?} answered keys not asked for: {:?}", got.keys().collect::<Vec<_>>()));
    }
    // The owner knows its own key's CAS when the state is certain.
    if src == Source::Primary
        && ids.len() == 1
        && (own..own + REGULAR_PER_WORKER + COUNTERS_PER_WORKER).contains(&ids[0])
    {
        let models = load.models[w].lock().unwrap_or_else(|e| e.into_inner());
        let m = &models[ids[0] - own];
        if let (Some((_, Some(cas))), Some(it)) = (m.certain(), got.get(&m.name)) {
            if it.cas != cas {
                load.violation(format!(
                    "{}: the primary serves CAS {} for a state written with CAS {cas}",
                    m.name, it.cas
                ));
            }
        }
    }
    Ok(())
}

/// What a write's reply said.
enum Reply {
    /// Done, with its CAS when the command gives one.
    Done(Option<u64>),
    /// Answered but changed nothing (NF, NS, EX, NOT_FOUND): what it saw.
    Saw(&'static str),
    Refused,
    Unknown,
}

fn classify(line: &str) -> Option<Reply> {
    Some(match line {
        "STORED" | "DELETED" | "HD" => Reply::Done(None),
        "NOT_FOUND" | "NF" => Reply::Saw("missing"),
        "EX" | "EXISTS" => Reply::Saw("another CAS"),
        "NS" | "NOT_STORED" => Reply::Saw("not stored"),
        l if l.starts_with("HD c") => Reply::Done(l[4..].parse().ok()),
        "SERVER_ERROR read-only replica" => Reply::Refused,
        l if l.starts_with("SERVER_ERROR stale primary") => Reply::Refused,
        l if l.starts_with("SERVER_ERROR stored, but not confirmed") => Reply::Unknown,
        l if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => Reply::Done(None),
        _ => return None,
    })
}

/// One write to the worker's own key `m`, recorded in its model with its
/// outcome. Err: the connection failed (the write's outcome is unknown).
fn write(load: &Load, rng: &mut Rng, c: &mut Conn, m: &mut KeyModel, seen_missing: &mut bool) -> std::io::Result<()> {
    let shared = &load.keys[m.id];
    let certain = m.certain();
    let ver = m.next_ver;
    m.next_ver += 1;
    let name = m.name.clone();
    let (what, state, req): (&'static str, Option<State>, Vec<u8>) = match m.kind {
        Kind::Regular => {
            let (value, flags) = model::value_of(&name, ver);
            let roll = rng.below(100);
            let set = |cmd: &str| {
                let mut r = match cmd {
                    "set" => format!("set {name} {flags} 0 {}\r\n", value.len()).into_bytes(),
                    "cas" => {
                        let cas = match certain {
                            Some((_, Some(c))) => c,
                            _ => 0,
                        };
                        format!("ms {name} {} F{flags} C{cas} c\r\n", value.len()).into_bytes()
                    }
                    _ => format!("ms {name} {} F{flags} c\r\n", value.len()).into_bytes(),
                };
                r.extend_from_slice(&value);
                r.extend_from_slice(b"\r\n");
                r
            };
            let cas_known = matches!(certain, Some((State::Ver(_), Some(_))));
            match roll {
                0..=44 => ("ms", Some(State::Ver(ver)), set("ms")),
                45..=59 => ("set", Some(State::Ver(ver)), set("set")),
                60..=74 if cas_known => ("ms C", Some(State::Ver(ver)), set("cas")),
                60..=74 => ("ms", Some(State::Ver(ver)), set("ms")),
                75..=89 => ("md", Some(State::Missing), format!("md {name}\r\n").into_bytes()),
                _ => ("delete", Some(State::Missing), format!("delete {name}\r\n").into_bytes()),
            }
        }
        Kind::Counter { base } => {
            if *seen_missing || certain.is_some_and(|(s, _)| s == State::Missing) {
                let v = base.to_string();
                ("ms init", Some(State::Num(base)), format!("ms {name} {} c\r\n{v}\r\n", v.len()).into_bytes())
            } else if rng.chance(70) {
                ("ma", None, Vec::new())
            } else {
                ("incr", None, format!("incr {name} 1\r\n").into_bytes())
            }
        }
    };
    *seen_missing = false;
    // Published before the request goes: a reader that sees this version
    // was told it may exist.
    if matches!(m.kind, Kind::Counter { .. }) && state.is_none() {
        shared.sent.fetch_add(1, Ordering::AcqRel);
    } else if m.kind == Kind::Regular {
        shared.sent.fetch_max(ver as u64, Ordering::AcqRel);
        if state == Some(State::Missing) {
            shared.del_sent.fetch_max(ver as u64, Ordering::AcqRel);
        }
    }
    load.tally.writes_sent.fetch_add(1, Ordering::Relaxed);
    let sent = Instant::now();
    let mut op = Op { state, ver, what, outcome: Outcome::Unknown, sent, acked: None, cas: None };
    let reply = if what == "ma" {
        c.ma(&name).map(|r| match r {
            Ok((n, cas)) => {
                op.state = Some(State::Num(n));
                Ok(Reply::Done(Some(cas)))
            }
            Err(l) => Err(l),
        })
    } else {
        c.cmd(&req).map(|l| {
            if what == "incr" {
                if let Ok(n) = l.parse::<u64>() {
                    op.state = Some(State::Num(n));
                }
            }
            Err(l)
        })
    };
    let reply = match reply {
        Err(e) => {
            record(load, m, op, Reply::Unknown);
            return Err(e);
        }
        Ok(Ok(r)) => r,
        Ok(Err(line)) => match classify(&line) {
            Some(r) => r,
            None => {
                load.violation(format!("{what} {name} answered {line:?}"));
                Reply::Unknown
            }
        },
    };
    if let Reply::Saw(what_seen) = reply {
        // Nothing changed; what it saw must match the state we know.
        let expected = match (what, certain) {
            (_, None) => None,
            ("ms C", Some((State::Ver(_), Some(_)))) => Some("a CAS match"),
            (_, Some((State::Missing, _))) => None,
            (_, Some((s, _))) => Some(if matches!(s, State::Num(_)) { "the counter" } else { "the key" }),
        };
        if let Some(exp) = expected {
            load.violation(format!(
                "{what} {name}: the primary saw {what_seen} where the acknowledged state gives {exp}"
            ));
        }
        if what_seen == "missing" {
            *seen_missing = true;
        }
        return Ok(());
    }
    record(load, m, op, reply);
    Ok(())
}

/// Record a write's outcome in the model and, when acknowledged, in the
/// key's floor for other readers.
fn record(load: &Load, m: &mut KeyModel, mut op: Op, reply: Reply) {
    let t = &load.tally;
    match reply {
        Reply::Done(cas) => {
            op.outcome = Outcome::Acked;
            op.acked = Some(Instant::now());
            op.cas = cas;
            t.writes_acked.fetch_add(1, Ordering::Relaxed);
            let floor = match (m.kind, op.state) {
                (Kind::Counter { base }, Some(State::Num(n))) => n.saturating_sub(base) + 1,
                (_, Some(State::Missing)) => ((op.ver as u64) << 1) | 1,
                (_, _) => (op.ver as u64) << 1,
            };
            load.keys[m.id].floor.store(floor, Ordering::Release);
        }
        Reply::Refused => {
            op.outcome = Outcome::Refused;
            t.writes_refused.fetch_add(1, Ordering::Relaxed);
        }
        Reply::Unknown | Reply::Saw(_) => {
            t.writes_unknown.fetch_add(1, Ordering::Relaxed);
        }
    }
    m.ops.push(op);
}
