//! The replica loop over the shm transport, in-process: convergence under a
//! mixed load, a replica lapped by a write flood, and torn or corrupted reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logmemcached::error::Result;
use logmemcached::log::control::ControlSnapshot;
use logmemcached::log::record::{self, Kind};
use logmemcached::memory::region::HugePages;
use logmemcached::replication::fuzzing::{check_replica, sealed, sealed_header, FakePrimary};
use logmemcached::replication::replica::{self, ReplicaControl, ReplicaOptions, ReplicaStatus};
use logmemcached::replication::shm::{region_path, ShmTransport};
use logmemcached::replication::transport::{NextRead, Progress, Transport};
use logmemcached::replication::Url;
use logmemcached::store::*;

fn cfg(mb: usize, max_item: usize) -> StoreConfig {
    // The replica's warnings (torn reads, resyncs) go to stderr as the server's do.
    logmemcached::logging::init();
    StoreConfig { memory_bytes: mb << 20, max_item_size: max_item, hugepages: HugePages::Off }
}

struct Primary {
    store: Arc<Store>,
    name: String,
}

impl Primary {
    fn new(tag: &str, mb: usize, max_item: usize) -> Primary {
        let name = format!("test-{tag}-{}", std::process::id());
        let store = Arc::new(Store::open(&cfg(mb, max_item), Some(&region_path(&name, false))).unwrap());
        Primary { store, name }
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(region_path(&self.name, false));
    }
}

struct Replica {
    store: Arc<Store>,
    status: Arc<ReplicaStatus>,
    ctl: Arc<ReplicaControl>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Wrap = Arc<dyn Fn(Box<dyn Transport>) -> Box<dyn Transport> + Send + Sync>;

impl Replica {
    fn start(p: &Primary, mb: usize, max_item: usize, wrap: Option<Wrap>) -> Replica {
        let store = Arc::new(Store::new(&cfg(mb, max_item)).unwrap());
        let status = Arc::new(ReplicaStatus::default());
        let ctl = Arc::new(ReplicaControl::new().unwrap());
        let url = Url::Shm(p.name.clone());
        let (s, st, c) = (store.clone(), status.clone(), ctl.clone());
        let opts = ReplicaOptions {
            promote_after: None,
            id: logmemcached::log::random_u64(),
            promote_drain: ReplicaOptions::DEFAULT_PROMOTE_DRAIN,
        };
        let thread = std::thread::spawn(move || {
            let connector = move |u: &Url, id: u64| -> Result<Box<dyn Transport>> {
                let Url::Shm(n) = u else { unreachable!() };
                let t: Box<dyn Transport> = Box::new(ShmTransport::connect(n, id)?);
                Ok(match &wrap {
                    Some(w) => w(t),
                    None => t,
                })
            };
            replica::run(s, url, st, c, opts, Arc::new(connector))
        });
        Replica { store, status, ctl, thread: Some(thread) }
    }

    /// Wait until we have applied the primary's whole log: our log's head at
    /// the primary's, and the replica loop done applying it (the log's head
    /// moves before the index follows the last record).
    fn catch_up(&self, p: &Primary, limit: Duration) {
        let deadline = Instant::now() + limit;
        let done = || {
            let head = p.store.log().head();
            self.store.log().head() == head && self.status.applied.load(Ordering::Acquire) == head
        };
        while !done() {
            assert!(
                Instant::now() < deadline,
                "replica stuck at {} of {} (last error: {})",
                self.store.log().head(),
                p.store.log().head(),
                self.status.last_error.lock().unwrap()
            );
            std::thread::yield_now();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.ctl.request_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// key -> (value, flags, cas, expiry) of every live item.
fn dump(s: &Store) -> HashMap<Vec<u8>, (Vec<u8>, u32, u64, u32)> {
    let mut keys = Vec::new();
    s.index().for_each(|k, _| keys.push(k.to_vec()));
    let mut m = HashMap::new();
    for k in keys {
        let mut out = Vec::new();
        if let Some(meta) = s.get(&k, ReadOpts { value: true, note_access: false }, &mut out, |_, _| {}) {
            m.insert(k, (out, meta.flags, meta.cas, meta.expiry));
        }
    }
    m
}

/// A small deterministic generator (xorshift), so failures replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mixed_op(s: &Store, rng: &mut Rng, i: u64) {
    let key = format!("key:{}", rng.below(500));
    let k = key.as_bytes();
    let val = format!("v{i}-{}", "x".repeat(rng.below(200) as usize));
    let r = match rng.below(100) {
        0..=39 => s.set(&SetArgs::new(SetMode::Set, k, val.as_bytes(), rng.below(5) as u32, 0)).map(|_| ()),
        40..=44 => s.set(&SetArgs::new(SetMode::Add, k, val.as_bytes(), 1, 0)).map(|_| ()),
        45..=49 => s.set(&SetArgs::new(SetMode::Replace, k, val.as_bytes(), 2, 0)).map(|_| ()),
        50..=54 => s.set(&SetArgs::new(SetMode::Append, k, b"+a", 0, 0)).map(|_| ()),
        55..=59 => s.set(&SetArgs::new(SetMode::Prepend, k, b"p+", 0, 0)).map(|_| ()),
        60..=64 => {
            let mut out = Vec::new();
            let cas = s.get(k, ReadOpts::default(), &mut out, |_, _| {}).map(|m| m.cas).unwrap_or(1);
            let mut a = SetArgs::new(SetMode::Set, k, val.as_bytes(), 3, 0);
            a.cas = if rng.below(2) == 0 { cas } else { cas + 1 };
            s.set(&a).map(|_| ())
        }
        65..=74 => {
            let nk = format!("n:{}", rng.below(50));
            let incr = rng.below(2) == 0;
            let a = ArithArgs {
                key: nk.as_bytes(),
                incr,
                delta: rng.below(1000),
                cas: 0,
                initial: Some((5, 0)),
                new_exptime: None,
            };
            s.arith(&a).map(|_| ())
        }
        75..=79 => s.touch(k, 1000 + rng.below(1000) as i64).map(|_| ()),
        80..=84 => s.set(&SetArgs::new(SetMode::Set, k, val.as_bytes(), 0, 3600)).map(|_| ()),
        85..=97 => s.delete(k, 0).map(|_| ()),
        _ => {
            if rng.below(200) == 0 {
                s.flush_all(0)
            } else {
                Ok(())
            }
        }
    };
    r.unwrap();
}

#[test]
fn three_replicas_converge_after_100k_mixed_operations() {
    let p = Primary::new("mixed", 8, 64 << 10);
    let replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&p, 8, 64 << 10, None)).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..100_000 {
        mixed_op(&p.store, &mut rng, i);
    }
    let want = dump(&p.store);
    assert!(want.len() > 100, "the load should leave items behind");
    for (n, r) in replicas.iter().enumerate() {
        r.catch_up(&p, Duration::from_secs(30));
        let got = dump(&r.store);
        assert_eq!(got.len(), want.len(), "replica {n} key count");
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "replica {n} differs at {}", String::from_utf8_lossy(k));
        }
        assert_eq!(r.status.invalid_records.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn eight_replicas_follow_one_primary_independently() {
    let p = Primary::new("eight", 4, 16 << 10);
    let mut replicas: Vec<Replica> = (0..8).map(|_| Replica::start(&p, 4, 16 << 10, None)).collect();
    let mut rng = Rng(0xfeed);
    for i in 0..10_000 {
        mixed_op(&p.store, &mut rng, i);
    }
    // One replica stops; the others are not affected by it.
    drop(replicas.remove(3));
    for i in 10_000..20_000 {
        mixed_op(&p.store, &mut rng, i);
    }
    let want = dump(&p.store);
    for r in &replicas {
        r.catch_up(&p, Duration::from_secs(30));
        assert_eq!(dump(&r.store), want);
    }
}

#[test]
fn a_replica_joining_under_load_converges() {
    let p = Primary::new("late", 8, 64 << 10);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (ps, st, dn) = (p.store.clone(), stop.clone(), done.clone());
    let writer = std::thread::spawn(move || {
        let mut rng = Rng(7);
        let mut i = 0;
        while !st.load(Ordering::Relaxed) {
            mixed_op(&ps, &mut rng, i);
            i += 1;
            dn.store(i, Ordering::Relaxed);
        }
        i
    });
    // Conditions, not durations: the primary has history when the replica
    // joins, and keeps writing until the replica has applied part of it.
    let wait_until = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::yield_now();
        }
    };
    wait_until("the primary has written 5000 operations", &|| done.load(Ordering::Relaxed) >= 5000);
    let r = Replica::start(&p, 8, 64 << 10, None);
    let joined_at = done.load(Ordering::Relaxed);
    wait_until("the replica applies records while 5000 more operations run", &|| {
        r.status.records_applied.load(Ordering::Relaxed) >= 1000 && done.load(Ordering::Relaxed) >= joined_at + 5000
    });
    stop.store(true, Ordering::Relaxed);
    let ops = writer.join().unwrap();
    assert!(ops > 10_000);
    r.catch_up(&p, Duration::from_secs(30));
    assert_eq!(dump(&r.store), dump(&p.store));
}

/// A transport that lets a test tamper with every read: `hook` gets the
/// bytes read (a copy it may change) before the replica sees them.
struct Tap<F: FnMut(&mut Vec<u8>) + Send> {
    inner: Box<dyn Transport>,
    hook: F,
    buf: Vec<u8>,
}

impl<F: FnMut(&mut Vec<u8>) + Send> Tap<F> {
    fn wrap(inner: Box<dyn Transport>, hook: F) -> Box<dyn Transport>
    where
        F: 'static,
    {
        Box::new(Tap { inner, hook, buf: Vec::new() })
    }
}

impl<F: FnMut(&mut Vec<u8>) + Send> Transport for Tap<F> {
    fn control(&mut self) -> Result<ControlSnapshot> {
        self.inner.control()
    }
    fn read(&mut self, off: usize, len: usize) -> Result<&[u8]> {
        let b = self.inner.read(off, len)?;
        self.buf.clear();
        self.buf.extend_from_slice(b);
        (self.hook)(&mut self.buf);
        Ok(&self.buf)
    }
    fn report(&mut self, p: &Progress) -> Result<()> {
        self.inner.report(p)
    }
    fn slot(&self) -> usize {
        self.inner.slot()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Slows every read down, like a replica on a busy host.
fn slow(t: Box<dyn Transport>, d: Duration) -> Box<dyn Transport> {
    Tap::wrap(t, move |_| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    })
}

#[test]
fn a_lapped_replica_never_serves_a_wrong_value_and_converges() {
    let p = Primary::new("lap", 2, 16 << 10);
    // Versions written per key: a replica may serve only one of them.
    let versions: Arc<Vec<AtomicU64>> = Arc::new((0..64).map(|_| AtomicU64::new(0)).collect());
    let wrap: Wrap = Arc::new(|t| slow(t, Duration::from_millis(3)));
    let r = Replica::start(&p, 2, 16 << 10, Some(wrap));
    let stop = Arc::new(AtomicBool::new(false));
    let (rs, vs, st) = (r.store.clone(), versions.clone(), stop.clone());
    let checker = std::thread::spawn(move || {
        let mut rng = Rng(99);
        let mut checked = 0u64;
        while !st.load(Ordering::Relaxed) {
            let k = rng.below(64);
            let key = format!("k{k}");
            let mut out = Vec::new();
            if rs.get(key.as_bytes(), ReadOpts { value: true, note_access: false }, &mut out, |_, _| {}).is_some() {
                let text = String::from_utf8(out[..32.min(out.len())].to_vec()).unwrap();
                let mut parts = text.split(':');
                assert_eq!(parts.next(), Some(key.as_str()), "value of another key: {text}");
                let v: u64 = parts.next().unwrap().parse().unwrap();
                assert!(v <= vs[k as usize].load(Ordering::SeqCst), "version {v} of {key} never written");
                checked += 1;
            }
        }
        checked
    });
    let pad = "z".repeat(1000);
    for i in 1..=30_000u64 {
        let k = i % 64;
        versions[k as usize].store(i, Ordering::SeqCst);
        let v = format!("k{k}:{i}:{pad}");
        p.store.set(&SetArgs::new(SetMode::Set, format!("k{k}").as_bytes(), v.as_bytes(), 0, 0)).unwrap();
    }
    r.catch_up(&p, Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    let checked = checker.join().unwrap();
    assert!(r.status.lapped.load(Ordering::Relaxed) > 0, "the flood should lap the slowed replica");
    assert!(checked > 0, "the checker should have read values");
    assert_eq!(dump(&r.store), dump(&p.store));
}

/// Corrupts the first 40 reads, counted across reconnects: a flipped byte,
/// then a zeroed second half (as a torn read would leave), then behaves.
fn tearing(t: Box<dyn Transport>, reads: Arc<std::sync::atomic::AtomicU32>) -> Box<dyn Transport> {
    Tap::wrap(t, move |b| {
        let n = reads.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 40 && !b.is_empty() {
            let l = b.len();
            if n.is_multiple_of(2) {
                // Flip a byte inside the first record's header or body.
                b[(n as usize * 7) % l.min(64)] ^= 0x40;
            } else {
                for x in &mut b[l / 2..] {
                    *x = 0;
                }
            }
        }
    })
}

#[test]
fn torn_or_corrupted_records_are_never_applied() {
    let p = Primary::new("torn", 4, 16 << 10);
    let reads = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let wrap: Wrap = Arc::new(move |t| tearing(t, reads.clone()));
    let r = Replica::start(&p, 4, 16 << 10, Some(wrap));
    for round in 0..60u64 {
        for k in 0..20u64 {
            let v = format!("key{k}:{round}:{}", "q".repeat(300));
            p.store.set(&SetArgs::new(SetMode::Set, format!("key{k}").as_bytes(), v.as_bytes(), k as u32, 0)).unwrap();
        }
        // Let the replica read between rounds so every read is a small stretch.
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.store.log().head() < p.store.log().head() && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    r.catch_up(&p, Duration::from_secs(30));
    assert!(r.status.invalid_records.load(Ordering::Relaxed) > 0, "corruption should have been detected");
    assert_eq!(dump(&r.store), dump(&p.store));
}

/// Counts how a replica uses read-ahead: each planned read should be the
/// very next read it asks for (a plan that goes unused is a wasted round
/// trip over verbs, where reads are slow).
#[derive(Default)]
struct PlanStats {
    planned: AtomicU64,
    used: AtomicU64,
    wasted: AtomicU64,
}

struct Planner {
    inner: Box<dyn Transport>,
    stats: Arc<PlanStats>,
    pending: Option<(usize, usize)>,
    /// Called with each read's length before it is made.
    before: Box<dyn FnMut(usize) + Send>,
    /// false: never call the planner, as shm (the trait's default) does.
    plans: bool,
}

impl Planner {
    fn wrap(stats: Arc<PlanStats>, plans: bool, before: impl FnMut(usize) + Send + Sync + Clone + 'static) -> Wrap {
        Arc::new(move |t| {
            Box::new(Planner { inner: t, stats: stats.clone(), pending: None, before: Box::new(before.clone()), plans })
        })
    }
}

impl Planner {
    fn settle(&mut self, off: usize, len: usize) {
        if let Some(want) = self.pending.take() {
            let c = if want == (off, len) { &self.stats.used } else { &self.stats.wasted };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Transport for Planner {
    fn control(&mut self) -> Result<ControlSnapshot> {
        self.inner.control()
    }
    fn read(&mut self, off: usize, len: usize) -> Result<&[u8]> {
        self.settle(off, len);
        self.inner.read(off, len)
    }
    fn read_ahead(&mut self, off: usize, len: usize, next: NextRead<'_>) -> Result<&[u8]> {
        self.settle(off, len);
        (self.before)(len);
        let b = self.inner.read(off, len)?;
        if !self.plans {
            return Ok(b);
        }
        self.pending = next(b);
        if self.pending.is_some() {
            self.stats.planned.fetch_add(1, Ordering::Relaxed);
        }
        Ok(b)
    }
    fn report(&mut self, p: &Progress) -> Result<()> {
        self.inner.report(p)
    }
    fn slot(&self) -> usize {
        self.inner.slot()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[test]
fn a_late_replica_uses_every_read_ahead_it_plans() {
    // ~12 MB of records of uneven sizes, so the 4 MiB stretches cut records.
    let p = Primary::new("ahead", 32, 64 << 10);
    let mut rng = Rng(11);
    for i in 0..3000u64 {
        let v = "y".repeat(1000 + rng.below(6000) as usize);
        p.store.set(&SetArgs::new(SetMode::Set, format!("big:{i}").as_bytes(), v.as_bytes(), 0, 0)).unwrap();
    }
    let stats = Arc::new(PlanStats::default());
    let r = Replica::start(&p, 32, 64 << 10, Some(Planner::wrap(stats.clone(), true, |_| {})));
    r.catch_up(&p, Duration::from_secs(30));
    assert_eq!(dump(&r.store), dump(&p.store));
    let (planned, used, wasted) = (
        stats.planned.load(Ordering::Relaxed),
        stats.used.load(Ordering::Relaxed),
        stats.wasted.load(Ordering::Relaxed),
    );
    assert!(planned >= 2, "a 12 MB catch-up planned only {planned} read-aheads");
    assert_eq!(wasted, 0, "{wasted} of {planned} read-aheads went unused ({used} used)");
    assert_eq!(used, planned);
}

#[test]
fn a_stop_request_ends_a_long_catch_up_after_the_current_stretch() {
    let p = Primary::new("stopmid", 32, 64 << 10);
    for i in 0..6000u64 {
        let v = "z".repeat(4000);
        p.store.set(&SetArgs::new(SetMode::Set, format!("big:{i}").as_bytes(), v.as_bytes(), 0, 0)).unwrap();
    }
    // With a transport that reads ahead (verbs) and one that does not (shm).
    for plans in [true, false] {
        let ctl: Arc<std::sync::OnceLock<Arc<ReplicaControl>>> = Arc::new(std::sync::OnceLock::new());
        let big_reads = Arc::new(AtomicU64::new(0));
        let (c, b) = (ctl.clone(), big_reads.clone());
        // Stop the replica from inside its second big read (a catch-up stretch).
        let before = move |len: usize| {
            if len >= 1 << 20 && b.fetch_add(1, Ordering::Relaxed) + 1 == 2 {
                // The test publishes the control right after starting the replica.
                while c.get().is_none() {
                    std::thread::yield_now();
                }
                if let Some(c) = c.get() {
                    c.request_stop();
                }
            }
        };
        let wrap = Planner::wrap(Arc::new(PlanStats::default()), plans, before);
        let mut r = Replica::start(&p, 32, 64 << 10, Some(wrap));
        let _ = ctl.set(r.ctl.clone());
        if let Some(t) = r.thread.take() {
            t.join().unwrap();
        }
        // ~24 MB is six 4 MiB stretches; the stop came during the second.
        assert_eq!(big_reads.load(Ordering::Relaxed), 2, "stretches read after the stop request (read-ahead: {plans})");
        assert!(r.store.log().head() < p.store.log().head());
    }
}

/// The padding record that ends a lap, cut by a stretch's end: its body is
/// not checksummed, so only its length says whether it is whole (a replica
/// once sliced past its read there and died).
#[test]
fn a_padding_record_cut_by_a_stretch_is_read_whole() {
    for trial in 0..12u64 {
        let p = Primary::new(&format!("padcut{trial}"), 32, 8 << 20);
        let cap = p.store.log().capacity();
        // ~1 MiB records until the head is `short` bytes from the end, then
        // one 3.5 MiB record: the rest of the lap becomes padding, and its
        // place relative to the replica's 4 MiB stretches moves per trial.
        let short = (1 << 19) + trial * 200_000;
        let mut i = 0u64;
        while p.store.log().head() + (1 << 20) + 4096 < cap - short {
            let v = vec![b'a'; (1 << 20) + (i as usize % 7) * 4096];
            p.store.set(&SetArgs::new(SetMode::Set, format!("k{i}").as_bytes(), &v, 0, 0)).unwrap();
            i += 1;
        }
        p.store.set(&SetArgs::new(SetMode::Set, b"bigger", &vec![b'b'; 7 << 19], 0, 0)).unwrap();
        let r = Replica::start(&p, 32, 8 << 20, None);
        r.catch_up(&p, Duration::from_secs(30));
        assert!(!r.thread.as_ref().is_some_and(|t| t.is_finished()), "trial {trial}: the replica thread ended");
        assert_eq!(dump(&r.store), dump(&p.store), "trial {trial}");
    }
}

/// A replica following an in-memory primary (whatever its bytes say).
fn follow_fake(primary: &FakePrimary, mb: usize) -> Replica {
    let store = Arc::new(Store::new(&cfg(mb, 16 << 10)).unwrap());
    let status = Arc::new(ReplicaStatus::default());
    let ctl = Arc::new(ReplicaControl::new().unwrap());
    let (s, st, c, p) = (store.clone(), status.clone(), ctl.clone(), primary.clone());
    let opts = ReplicaOptions { promote_after: None, id: 7, promote_drain: Duration::ZERO };
    let thread = std::thread::spawn(move || {
        let connector = move |_: &Url, _: u64| -> Result<Box<dyn Transport>> { Ok(p.transport()) };
        replica::run(s, Url::Shm("fake".into()), st, c, opts, Arc::new(connector))
    });
    Replica { store, status, ctl, thread: Some(thread) }
}

fn wait_for(what: &str, cond: &dyn Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

/// Three good records from position 0; returns where they end.
fn good_history(p: &FakePrimary) -> u64 {
    let mut pos = 0;
    for (i, k) in ["a", "b", "c"].iter().enumerate() {
        let rec = sealed(pos, Kind::Set, k.as_bytes(), format!("value {i}").as_bytes(), i as u64 + 1);
        p.put(pos, &rec);
        pos += rec.len() as u64;
    }
    p.control(|c| c.head = pos);
    pos
}

/// A primary that serves checksum-valid nonsense: a record larger than half
/// the log, a CAS at `u64::MAX`, an epoch at `u64::MAX`, a head at the end
/// of the position space, a header claiming more than the log. The replica
/// must not panic, must not apply any of it, must keep what it had and
/// must say why in `last_error`.
#[test]
fn a_hostile_primary_cannot_crash_or_corrupt_a_replica() {
    type Spoil = fn(&FakePrimary, u64, u64);
    let cases: [(&str, Spoil, &str); 5] = [
        (
            "a record larger than half the log",
            |p, end, cap| {
                let big = vec![0u8; (cap / 2) as usize];
                p.put(end, &sealed(end, Kind::Set, b"big", &big, 9));
                p.control(|c| c.head = end + record::record_len(3, big.len()));
            },
            "largest record",
        ),
        (
            "a CAS that cannot be counted past",
            |p, end, _| {
                let rec = sealed(end, Kind::Set, b"d", b"x", u64::MAX);
                p.put(end, &rec);
                p.control(|c| c.head = end + rec.len() as u64);
            },
            "CAS",
        ),
        ("an epoch that cannot be raised", |p, _, _| p.control(|c| c.epoch = u64::MAX), "epoch"),
        (
            "a head at the end of the position space",
            |p, _, _| {
                p.control(|c| {
                    c.head = u64::MAX - 7;
                    c.tail = c.head - 4096;
                })
            },
            "beyond any log",
        ),
        (
            "a header claiming more than the log",
            |p, end, cap| {
                p.put(end, &sealed_header(end, Kind::Set, b"huge", cap as u32, &[]));
                p.control(|c| c.head = end + cap / 4);
            },
            "more than any record",
        ),
    ];
    for (what, spoil, why) in cases {
        let p = FakePrimary::new(Store::new(&cfg(4, 16 << 10)).unwrap().log().capacity());
        let end = good_history(&p);
        let r = follow_fake(&p, 4);
        wait_for("the good records are applied", &|| r.store.log().head() == end);
        let cap = r.store.log().capacity();
        spoil(&p, end, cap);
        wait_for(&format!("the replica refuses {what}"), &|| {
            r.status.last_error.lock().unwrap().contains(why) || r.thread.as_ref().is_some_and(|t| t.is_finished())
        });
        assert!(!r.thread.as_ref().unwrap().is_finished(), "{what}: the replica thread died");
        assert_eq!(r.store.log().head(), end, "{what}: applied");
        assert_eq!(r.store.index().len(), 3, "{what}: kept what it had");
        check_replica(&r.store).unwrap_or_else(|e| panic!("{what}: {e}"));
        let e = r.status.last_error.lock().unwrap().clone();
        eprintln!("{what}: {e}");
        assert!(r.status.reconnects.load(Ordering::Relaxed) > 0, "{what}: the primary was not dropped");
    }
}

/// A primary under `--sync-replicas 1` whose shm replica sleeps on the
/// doorbell: a write that waits in the request rings it, once, and is
/// confirmed; the replica then holds the write.
#[test]
fn a_sync_write_rings_a_sleeping_replica_awake_and_is_confirmed() {
    use logmemcached::log::control::OFF_DOORBELL;
    use logmemcached::replication::primary::{sync_waiter, SlotTable};
    let p = Primary::new("doorbell", 8, 1 << 10);
    logmemcached::replication::shm::prepare_slot_dir(&p.name, None).unwrap();
    let slots = Arc::new(SlotTable::new(p.store.log().clone(), Some((p.name.clone(), None))));
    slots.set_ringing(true);
    // A timeout no test sits through: the write must be confirmed, not time out.
    p.store.set_sync_wait(sync_waiter(slots.clone(), 1, Duration::from_secs(3600)));
    let r = Replica::start(&p, 8, 1 << 10, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Attached, caught up with the empty log, and asleep on the doorbell.
    while slots.sleepers() == 0 {
        assert!(Instant::now() < deadline, "the replica never slept: {}", r.status.last_error.lock().unwrap());
        slots.rescan();
        std::thread::yield_now();
    }
    let bell = || p.store.log().region().atomic_u32(OFF_DOORBELL).load(Ordering::Acquire);
    let rung = bell();
    let out = p.store.set(&SetArgs::new(SetMode::Set, b"k", b"woken", 0, 0));
    assert!(matches!(out, Ok(SetOutcome::Stored { .. })), "{out:?}");
    assert!(bell() > rung, "the primary rang the doorbell for the sleeping replica");
    assert!(r.status.applied.load(Ordering::Acquire) >= p.store.log().head(), "confirmed means applied");
    assert_eq!(p.store.snapshot().sync_timeouts, 0);
    r.catch_up(&p, Duration::from_secs(60));
    assert_eq!(dump(&r.store).get(b"k".as_slice()).map(|v| v.0.clone()), Some(b"woken".to_vec()));
    let _ = std::fs::remove_dir_all(logmemcached::replication::shm::slot_dir(&p.name));
}
