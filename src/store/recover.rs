//! A store over a memory file (`-e PATH`): the log lives in the file, so a
//! restart, after a graceful stop or a `kill -9`, serves what it held.
//!
//! Opening an existing file: `log::recover::check_file` refuses a file that
//! is not ours or was made with another `-m`, `-I` or format version (never
//! read as garbage); then the scan validates `[tail, head)` record by record
//! and the index is rebuilt as a replica's apply would build it (Set,
//! Delete, Touch, Flush; an item whose Set record is gone is gone), from the
//! control block's delayed-flush point on. The log is cut after the last
//! record that validates. The CAS floor continues above every CAS the file
//! knows; epoch, epoch start and incarnation are the file's (a cut log gets
//! a new incarnation). What was found is in `stats` (`restart_*`).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{cas_floor, Store, StoreConfig};
use crate::error::{Error, Result};
use crate::index::{Bulk, Entry, KeyHash, Records};
use crate::log::control::CONTROL_SIZE;
use crate::log::record::{Header, Kind};
use crate::log::recover::{self, Expect};
use crate::log::Log;
use crate::memory::region::{round_to_huge, Region};

/// What opening a memory file found (`stats`: `restart_*`).
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// The file held a log (false: it was created empty).
    pub from_file: bool,
    /// Records that validated and were applied, and their bytes.
    pub records: u64,
    pub bytes: u64,
    /// Items the rebuilt index holds.
    pub items: u64,
    /// Bytes cut after the last record that validated.
    pub dropped_bytes: u64,
    /// Why the scan stopped short of the file's head (None: it did not).
    pub cut: Option<String>,
    /// The scan and index rebuild alone, and the whole open (mapping included).
    pub scan_us: u64,
    pub total_us: u64,
    /// CPU time the scan's thread spent (on a shared host, what a core did).
    pub scan_cpu_us: u64,
}

/// This thread's CPU time in microseconds (0 if unknown).
fn thread_cpu_us() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => {
            let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
            us(u.user_time()) + us(u.system_time())
        }
        Err(_) => 0,
    }
}

/// Records the rebuild applies at a time.
const BATCH: usize = 64;

/// Log bytes the rebuild reads before it sizes the index.
const SAMPLE_BYTES: u64 = 8 << 20;

/// Sizing the index from the first `SAMPLE_BYTES` of the scan: its Set
/// records per byte times the log's span, reserved once, so the tables do
/// not grow (and rehash) all the way; `Index::trim` gives back what the
/// estimate overshot (keys written many times).
struct Sizing {
    span: u64,
    bytes: u64,
    sets: u64,
    done: bool,
}

impl Sizing {
    fn new(span: u64) -> Sizing {
        Sizing { span, bytes: 0, sets: 0, done: false }
    }

    /// A record of `len` bytes seen; the entries to reserve, once.
    fn saw(&mut self, len: u64, set: bool) -> Option<usize> {
        if self.done {
            return None;
        }
        self.bytes += len;
        self.sets += u64::from(set);
        if self.bytes < SAMPLE_BYTES {
            return None;
        }
        self.done = true;
        let estimate = (self.sets as u128 * self.span as u128 / self.bytes as u128) as u64;
        Some(estimate.saturating_sub(self.sets) as usize)
    }
}

/// A Set, Touch or Delete record waiting in a batch: its header, and its
/// key where it lies in the mapping (the scan validates in place).
struct Pending<'w> {
    hash: KeyHash,
    h: Header,
    key: &'w [u8],
}

impl Store {
    /// The store whose log lives in the memory file at `path`: created empty
    /// if missing (or empty), else recovered from it.
    pub fn open_memory_file(cfg: &StoreConfig, path: &Path) -> Result<Store> {
        let t0 = Instant::now();
        let len = cfg.memory_bytes + CONTROL_SIZE;
        let (region, existed) = Region::open_memory_file(path, len, cfg.hugepages)?;
        let region = Arc::new(region);
        if !existed {
            let s = Store::with_region(region, cfg)?;
            let _ = s.recovery.set(Recovery { total_us: t0.elapsed().as_micros() as u64, ..Recovery::default() });
            return Ok(s);
        }
        let expect = Expect {
            region_len: round_to_huge(len),
            memory_bytes: cfg.memory_bytes as u64,
            max_item_size: cfg.max_item_size as u64,
        };
        recover::check_file(&region, expect).map_err(|why| {
            Error::new(format!(
                "refusing memory file {}: {why}; start with the settings it was made with, or remove it to start empty",
                path.display()
            ))
        })?;
        let store = Store::over(Arc::new(Log::open_existing(region)), cfg)?;
        let mut r = store.rebuild();
        r.total_us = t0.elapsed().as_micros() as u64;
        match &r.cut {
            None => crate::log_notice!(
                "memory file {}: recovered {} records ({} bytes), {} items, in {} ms",
                path.display(),
                r.records,
                r.bytes,
                r.items,
                r.total_us / 1000
            ),
            Some(why) => crate::log_warn!(
                "memory file {}: recovered {} records ({} bytes), {} items, in {} ms; dropped {} bytes after them ({why}): \
                 a new incarnation, replicas resynchronise",
                path.display(),
                r.records,
                r.bytes,
                r.items,
                r.total_us / 1000,
                r.dropped_bytes
            ),
        }
        let _ = store.recovery.set(r);
        let by = store.log().fenced_by();
        if by != 0 {
            // A promoted replica took over before the stop: taking writes
            // now would acknowledge what the new primary never sees.
            store.fenced.store(true, Ordering::Release);
            crate::log_warn!(
                "memory file {}: this primary was fenced by a replica promoted at epoch {by}; it refuses writes \
                 (follow the new primary, or promote it through the admin socket)",
                path.display()
            );
        }
        Ok(store)
    }

    /// Rebuild the index, flush point and CAS floor from the log's records.
    fn rebuild(&self) -> Recovery {
        let t = Instant::now();
        let cpu0 = thread_cpu_us();
        let mut w = self.lock();
        // From the control block's point: the Flush record that set it may
        // be below the tail; later Flush records in the scan move it.
        self.set_flush_at(self.log.flush_at().min(u32::MAX as u64) as u32);
        let mut bulk = self.index.bulk();
        let mut batch = Vec::with_capacity(BATCH);
        let mut sizing = Sizing::new(self.log.head() - self.log.tail());
        let scan = recover::scan(&w.log, &mut |r| match r.header.kind {
            Kind::Padding => {}
            Kind::Flush => {
                self.apply_batch(&mut bulk, &mut batch);
                if self.flush_point_clears(r.header.expiry, r.header.time) {
                    bulk.clear();
                }
            }
            kind => {
                if let Some(n) = sizing.saw(r.header.total_len(), kind == Kind::Set) {
                    bulk.reserve(n);
                }
                batch.push(Pending { hash: bulk.hash(r.key), h: r.header, key: r.key });
                if batch.len() == BATCH {
                    self.apply_batch(&mut bulk, &mut batch);
                }
            }
        });
        self.apply_batch(&mut bulk, &mut batch);
        drop((bulk, batch));
        self.index.trim();
        if scan.cut.is_some() {
            w.log.cut_at(scan.end);
        }
        self.stats.records_appended.store(scan.records, Ordering::Relaxed);
        let seen = scan.max_cas.max(self.log.max_cas());
        w.next_cas = seen.saturating_add(1).max(cas_floor(w.log.epoch())).max(1);
        self.log.publish_max_cas(seen);
        // Replicas of the last run reconnect and claim their slots again.
        self.log.forget_replicas();
        Recovery {
            from_file: true,
            records: scan.records,
            bytes: scan.bytes,
            items: self.index.items(),
            dropped_bytes: scan.dropped_bytes,
            cut: scan.cut,
            scan_us: t.elapsed().as_micros() as u64,
            total_us: 0,
            scan_cpu_us: thread_cpu_us().saturating_sub(cpu0),
        }
    }

    /// Apply a batch of the rebuild's records in log order, as
    /// `apply_meaning` does, after prefetching every record's home slot and
    /// then the entry its probe ends on, so their cache misses overlap
    /// (random slots of a table of millions: the rebuild's main cost
    /// otherwise).
    fn apply_batch<R: Records>(&self, bulk: &mut Bulk<'_, R>, batch: &mut Vec<Pending<'_>>) {
        for p in batch.iter() {
            bulk.prefetch_home(p.hash);
        }
        for p in batch.iter() {
            bulk.prefetch_probe(p.hash);
        }
        let mut sets = 0;
        for p in batch.iter() {
            let (h, key) = (&p.h, p.key);
            match h.kind {
                Kind::Set => {
                    bulk.insert(p.hash, key, Entry::new(h.position, h.total_len() as u32, h.expiry, h.time));
                    sets += 1;
                }
                Kind::Touch => {
                    // As `apply_meaning`: only the item of the Touch's CAS.
                    if let Some(at) = bulk.position(p.hash, key) {
                        if self.log.read_header(at).is_some_and(|item| item.cas == h.cas) {
                            bulk.set_expiry_at(p.hash, at, h.expiry);
                        }
                    }
                }
                Kind::Delete => {
                    bulk.remove(p.hash, key);
                }
                Kind::Flush | Kind::Padding => {}
            }
        }
        // One locked add a batch: one per record would wait for its stores.
        self.stats.total_items.fetch_add(sets, Ordering::Relaxed);
        batch.clear();
    }

    /// What opening the memory file found (None without `-e`).
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.get()
    }
}

#[cfg(test)]
mod tests {
    use crate::memory::region::HugePages;
    use crate::store::tests::{get, set};
    use crate::store::*;
    use std::sync::atomic::Ordering;

    fn cfg(mb: usize, item: usize) -> StoreConfig {
        StoreConfig { memory_bytes: mb << 20, max_item_size: item, hugepages: HugePages::Off }
    }

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("lmc-recover-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_reopened_file_serves_what_it_held() {
        let d = dir("reopen");
        let f = d.join("mem");
        let (cas_a, head, inc) = {
            let s = Store::open_memory_file(&cfg(4, 64 << 10), &f).unwrap();
            assert!(!s.recovery().unwrap().from_file);
            let SetOutcome::Stored { cas } = set(&s, SetMode::Set, b"a", b"1") else { panic!() };
            set(&s, SetMode::Set, b"gone", b"x");
            s.delete(b"gone", 0).unwrap();
            set(&s, SetMode::Set, b"t", b"v");
            s.touch(b"t", 1000).unwrap();
            s.flush_all(500).unwrap();
            (cas, s.log().head(), s.log().incarnation())
        };
        let s = Store::open_memory_file(&cfg(4, 64 << 10), &f).unwrap();
        let r = s.recovery().unwrap().clone();
        assert!(r.from_file && r.cut.is_none() && r.dropped_bytes == 0, "{r:?}");
        assert_eq!((r.records, r.items), (6, 2));
        assert_eq!((s.log().head(), s.log().incarnation()), (head, inc));
        let (v, m) = get(&s, b"a").unwrap();
        assert_eq!((v.as_slice(), m.cas, m.flags), (&b"1"[..], cas_a, 7));
        assert!(get(&s, b"gone").is_none(), "a delete stays deleted");
        let t = get(&s, b"t").unwrap().1.expiry;
        assert!(t >= s.clock.now() + 990, "the touch's expiry: {t}");
        let SetOutcome::Stored { cas } = set(&s, SetMode::Set, b"b", b"2") else { panic!() };
        assert!(cas > cas_a + 2, "CAS continues above the three the file issued: {cas}");
        s.clock.advance(501);
        assert!(get(&s, b"a").is_none(), "the delayed flush still fires");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The rebuild applies records in batches: across many batch
    /// boundaries it must still leave what applying one by one leaves
    /// (overwrites, deletes and touches of keys set batches earlier, a
    /// flush in the middle, and the cleaner's reclaiming in a full log).
    #[test]
    fn a_batched_rebuild_holds_what_the_store_held() {
        let d = dir("batched");
        let f = d.join("mem");
        let entries = |s: &Store| {
            let mut v = Vec::new();
            s.index().for_each(|k, e| v.push((k.to_vec(), e.pos, e.len, e.expiry)));
            v.sort();
            v
        };
        let before = {
            let s = Store::open_memory_file(&cfg(2, 64 << 10), &f).unwrap();
            for i in 0..3000u32 {
                set(&s, SetMode::Set, format!("early:{i}").as_bytes(), b"x");
            }
            s.flush_all(0).unwrap();
            for round in 0..4u32 {
                for i in 0..20_000u32 {
                    let key = format!("key:{}", i % 7000);
                    match (i + round) % 11 {
                        3 => drop(s.delete(key.as_bytes(), 0).unwrap()),
                        5 => drop(s.touch(key.as_bytes(), 5000 + i as i64).unwrap()),
                        _ => drop(set(&s, SetMode::Set, key.as_bytes(), format!("v{round}:{i}").as_bytes())),
                    }
                }
            }
            assert!(s.snapshot().reclaimed > 0, "the log wrapped");
            entries(&s)
        };
        let s = Store::open_memory_file(&cfg(2, 64 << 10), &f).unwrap();
        assert!(before.len() > 1000, "{} items", before.len());
        assert_eq!(entries(&s), before);
        assert_eq!((s.snapshot().curr_items, s.snapshot().bytes), {
            (before.len() as u64, before.iter().map(|e| u64::from(e.2)).sum())
        });
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Records larger than the scan's chunk (256 KiB), between small ones.
    #[test]
    fn values_larger_than_the_scan_chunk_come_back() {
        let d = dir("large");
        let f = d.join("mem");
        let big = |i: u8| vec![b'a' + i; 300_000 + i as usize * 100_000];
        {
            let s = Store::open_memory_file(&cfg(4, 1 << 20), &f).unwrap();
            for i in 0..4u8 {
                set(&s, SetMode::Set, format!("small:{i}").as_bytes(), b"x");
                set(&s, SetMode::Set, format!("big:{i}").as_bytes(), &big(i));
            }
        }
        let s = Store::open_memory_file(&cfg(4, 1 << 20), &f).unwrap();
        let r = s.recovery().unwrap().clone();
        assert!(r.cut.is_none() && r.records == 8, "{r:?}");
        for i in 0..4u8 {
            assert_eq!(get(&s, format!("big:{i}").as_bytes()).map(|(v, _)| v), Some(big(i)), "big:{i}");
            assert_eq!(get(&s, format!("small:{i}").as_bytes()).map(|(v, _)| v), Some(b"x".to_vec()));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_of_other_settings_or_not_ours_is_refused() {
        let d = dir("refuse");
        let f = d.join("mem");
        drop(Store::open_memory_file(&cfg(4, 64 << 10), &f).unwrap());
        let err = |c: StoreConfig| Store::open_memory_file(&c, &f).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(cfg(6, 64 << 10)).contains("made with -m 4"), "{}", err(cfg(6, 64 << 10)));
        assert!(err(cfg(4, 32 << 10)).contains("made with -I 65536"), "{}", err(cfg(4, 32 << 10)));
        // Another format version.
        {
            let s = Store::open_memory_file(&cfg(4, 64 << 10), &f).unwrap();
            s.log().region().atomic_u64(crate::log::control::OFF_VERSION).store(1, Ordering::Release);
        }
        assert!(err(cfg(4, 64 << 10)).contains("format version 1"), "{}", err(cfg(4, 64 << 10)));
        let g = d.join("other");
        std::fs::write(&g, b"hello, not a log").unwrap();
        let e = Store::open_memory_file(&cfg(4, 64 << 10), &g).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("not a logmemcached memory file"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_in_use_is_refused() {
        let d = dir("inuse");
        let f = d.join("mem");
        let _s = Store::open_memory_file(&cfg(4, 64 << 10), &f).unwrap();
        let e = Store::open_memory_file(&cfg(4, 64 << 10), &f).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("in use by another process"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_fenced_primary_restarted_from_its_file_stays_fenced_until_promoted() {
        let d = dir("fenced");
        let f = d.join("mem");
        {
            let s = Store::open_memory_file(&cfg(4, 64 << 10), &f).unwrap();
            set(&s, SetMode::Set, b"a", b"1");
            s.fence(2);
            assert!(s.is_fenced());
        }
        {
            let s = Store::open_memory_file(&cfg(4, 64 << 10), &f).unwrap();
            assert!(s.is_fenced(), "the fence survives the restart");
            assert_eq!(s.set(&SetArgs::new(SetMode::Set, b"b", b"2", 0, 0)), Err(StoreError::Fenced));
            assert_eq!(get(&s, b"a").map(|(v, _)| v), Some(b"1".to_vec()), "and still serves what it held");
            s.promote(3);
            assert!(!s.is_fenced());
        }
        let s = Store::open_memory_file(&cfg(4, 64 << 10), &f).unwrap();
        assert!(!s.is_fenced(), "a promotion lifts it for good");
        set(&s, SetMode::Set, b"b", b"2");
        let _ = std::fs::remove_dir_all(&d);
    }
}
