//! Gets against the cleaner, in plain `cargo test`: reader threads get keys
//! whose values encode their key and version (every byte of the value is a
//! function of both) while a writer floods a small log, so the cleaner
//! reuses space all the time. Every value a reader gets must be whole and
//! one that was written for that key. Bounded: until the writer has lapped
//! the log `LAPS` times, or `RUN` has passed (a busy machine).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logmemcached::memory::region::HugePages;
use logmemcached::store::*;

/// More live data than the log holds (~6.5 KiB a value, a 2 MiB log), and
/// keys written in random order: the oldest live items sit at the tail the
/// cleaner is reclaiming, which is where readers race it.
const KEYS: u64 = 400;
const READERS: usize = 3;
const LAPS: u64 = 30;
const RUN: Duration = Duration::from_secs(15);

fn key(k: u64) -> String {
    format!("key:{k}")
}

/// The value of version `v` of key `k`: a header naming both, then a
/// 16-byte block derived from both, repeated to 1-12 KiB.
fn value(k: u64, v: u64) -> Vec<u8> {
    let mut out = format!("{k}:{v}:").into_bytes();
    let block: Vec<u8> = (0..16u64).map(|i| (k.wrapping_mul(31) ^ v.wrapping_mul(7) ^ i) as u8).collect();
    out.extend_from_slice(&block.repeat(64 + (v * 2654435761 % (11 * 64)) as usize));
    out
}

/// Which version of key `k` these bytes are, if they are a whole one.
fn version_of(k: u64, bytes: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
    let mut parts = text.splitn(3, ':');
    let (Some(kk), Some(vv)) = (parts.next(), parts.next()) else { return Err(format!("no header: {text:?}")) };
    if kk != k.to_string() {
        return Err(format!("the value of key {kk} under key {k}"));
    }
    let v: u64 = vv.parse().map_err(|_| format!("bad version in {text:?}"))?;
    if bytes != value(k, v).as_slice() {
        return Err(format!("version {v} of key {k} is torn ({} bytes)", bytes.len()));
    }
    Ok(v)
}

#[test]
fn gets_racing_the_cleaner_only_ever_see_whole_written_values() {
    logmemcached::logging::init();
    let cfg = StoreConfig { memory_bytes: 1 << 20, max_item_size: 64 << 10, hugepages: HugePages::Off };
    let store = Arc::new(Store::new(&cfg).unwrap());
    // The newest version written (or about to be) of each key: a reader may
    // see it or an older one, never a newer one.
    let latest: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (store, latest, stop) = (store.clone(), latest.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ r as u64;
                let (mut hits, mut misses) = (0u64, 0u64);
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = x % KEYS;
                    out.clear();
                    let opts = ReadOpts { value: true, note_access: false };
                    if store.get(key(k).as_bytes(), opts, &mut out, |_, _| {}).is_some() {
                        let v = version_of(k, &out).unwrap_or_else(|e| panic!("reader {r}: {e}"));
                        let newest = latest[k as usize].load(Ordering::SeqCst);
                        assert!(v <= newest, "reader {r}: version {v} of key {k}, newest written {newest}");
                        hits += 1;
                    } else {
                        misses += 1;
                    }
                }
                (hits, misses)
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut v = 0u64;
    let cap = store.log().capacity();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    while store.log().head() / cap < LAPS && t0.elapsed() < RUN {
        v += 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = x % KEYS;
        latest[k as usize].store(v, Ordering::SeqCst);
        store.set(&SetArgs::new(SetMode::Set, key(k).as_bytes(), &value(k, v), 0, 0)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (mut hits, mut misses) = (0, 0);
    for r in readers {
        let (h, m) = r.join().expect("a reader failed");
        hits += h;
        misses += m;
    }
    let snap = store.snapshot();
    let laps = snap.log_head / snap.log_capacity;
    eprintln!(
        "{v} writes, {laps} laps of the log, {} records reclaimed; readers: {hits} hits, {misses} misses",
        snap.reclaimed
    );
    assert!(laps >= 10, "the writer lapped the log only {laps} times");
    assert!(hits >= 1_000 && misses >= 1_000, "readers got {hits} values and {misses} misses");
    assert!(snap.evictions > 1_000, "only {} live items were evicted", snap.evictions);
}
