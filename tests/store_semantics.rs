//! What a client (and a replica) can observe of the store's record choices,
//! over the real server: a touch is one small record whatever the value's
//! size, `bytes` never exceeds `limit_maxbytes`, incr refuses a value too
//! large to be a number, and a replica joining after a delayed flush_all's
//! record was reclaimed still applies the flush.
mod common;
use common::*;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logmemcached::memory::region::HugePages;
use logmemcached::replication::replica::{self, ReplicaControl, ReplicaOptions, ReplicaStatus};
use logmemcached::replication::shm::{region_path, ShmTransport};
use logmemcached::replication::transport::Transport;
use logmemcached::replication::Url;
use logmemcached::store::*;

fn stat(c: &mut Client, name: &str) -> u64 {
    c.stats("")[name].parse().unwrap()
}

/// `n` sets of `len`-byte values, pipelined with noreply, then a round trip.
fn fill(c: &mut Client, prefix: &str, n: usize, len: usize) {
    let v = "v".repeat(len);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut req = String::new();
        for i in chunk {
            req.push_str(&format!("set {prefix}:{i} 0 0 {len} noreply\r\n{v}\r\n"));
        }
        c.send(req.as_bytes());
    }
    assert!(c.cmd("version\r\n").starts_with("VERSION"));
}

#[test]
fn touching_a_large_item_evicts_nothing() {
    let s = Server::start(&["-m", "8", "-I", "1m"]);
    let mut c = s.connect();
    let big = "b".repeat(1 << 20);
    assert_eq!(c.cmd(&format!("set big 0 0 {}\r\n{big}\r\n", big.len())), "STORED\r\n");
    fill(&mut c, "small", 5000, 1000);
    assert_eq!((stat(&mut c, "evictions"), stat(&mut c, "curr_items")), (0, 5001));
    // 100 touches (1.3 KB of requests): memcached evicts nothing; one 1 MB
    // copy per touch would wipe the 8 MB cache many times over.
    let reqs: String = (0..100).map(|_| "touch big 0\r\n").collect();
    assert!(c.pipeline(&reqs, 100).iter().all(|r| r == "TOUCHED\r\n"));
    for i in 0..100 {
        c.send(format!("gat {} big\r\n", 1000 + i).as_bytes());
        assert_eq!(c.line(), format!("VALUE big 0 {}\r\n", big.len()));
        assert_eq!(c.bytes(big.len() + 2).len(), big.len() + 2);
        assert_eq!(c.line(), "END\r\n");
    }
    assert_eq!(stat(&mut c, "evictions"), 0, "touches evicted items");
    assert_eq!(stat(&mut c, "curr_items"), 5001);
    assert!(c.gets("small:0").is_some(), "the oldest small item is still there");
}

#[test]
fn bytes_never_exceed_limit_maxbytes() {
    let s = Server::start(&["-m", "8"]);
    let mut c = s.connect();
    let limit = stat(&mut c, "limit_maxbytes");
    assert_eq!(limit, 8 << 20);
    let mut peak = 0;
    for round in 0..6 {
        fill(&mut c, &format!("r{round}"), 4000, 1000);
        peak = peak.max(stat(&mut c, "bytes"));
    }
    assert!(stat(&mut c, "evictions") > 0, "the cache filled (three times over)");
    assert!(peak <= limit, "bytes {peak} > limit_maxbytes {limit}");
    assert!(peak > limit * 9 / 10, "the cache holds close to -m: {peak}");
}

#[test]
fn incr_refuses_a_value_too_large_to_be_a_number() {
    let s = Server::start(&["-m", "8", "-I", "1m"]);
    let mut c = s.connect();
    let zeros = "0".repeat(1 << 20);
    assert_eq!(c.cmd(&format!("set n 0 0 {}\r\n{zeros}\r\n", zeros.len())), "STORED\r\n");
    let before = stat(&mut c, "bytes");
    assert_eq!(c.cmd("incr n 1\r\n"), "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    assert_eq!(stat(&mut c, "bytes"), before, "the value was not rewritten");
    assert_eq!(c.cmd("set n 0 0 3\r\n007\r\n"), "STORED\r\n");
    assert_eq!(c.cmd("incr n 1\r\n"), "8\r\n");
}

fn cfg(mb: usize) -> StoreConfig {
    logmemcached::logging::init();
    StoreConfig { memory_bytes: mb << 20, max_item_size: 64 << 10, hugepages: HugePages::Off }
}

/// key -> value of every live item.
fn dump(s: &Store) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut keys = Vec::new();
    s.index().for_each(|k, _| keys.push(k.to_vec()));
    let mut m = HashMap::new();
    for k in keys {
        let mut out = Vec::new();
        if s.get(&k, ReadOpts { value: true, note_access: false }, &mut out, |_, _| {}).is_some() {
            m.insert(k, out);
        }
    }
    m
}

#[test]
fn a_replica_replaying_from_a_tail_past_a_delayed_flush_still_applies_it() {
    let name = format!("test-delayed-flush-{}", std::process::id());
    let path = region_path(&name, false);
    let p = Arc::new(Store::open(&cfg(4), Some(&path)).unwrap());
    let value = vec![b'v'; 1000];
    for i in 0..100 {
        p.set(&SetArgs::new(SetMode::Set, format!("old:{i}").as_bytes(), &value, 0, 0)).unwrap();
    }
    p.flush_all(100).unwrap();
    let flush_record = p.log().head();
    // Written after the flush_all, before its point: they die at it too.
    // Enough of them that the cleaner reclaims the Flush record.
    let mut i = 0;
    while p.log().tail() <= flush_record {
        p.set(&SetArgs::new(SetMode::Set, format!("new:{i}").as_bytes(), &value, 0, 0)).unwrap();
        i += 1;
    }
    // A replica joining now replays [tail, head): no Flush record in it.
    let r = Arc::new(Store::new(&cfg(4)).unwrap());
    let status = Arc::new(ReplicaStatus::default());
    let ctl = Arc::new(ReplicaControl::new().unwrap());
    let (rs, st, cl) = (r.clone(), status.clone(), ctl.clone());
    let url = Url::Shm(name.clone());
    let opts = ReplicaOptions {
        promote_after: None,
        id: logmemcached::log::random_u64(),
        promote_drain: ReplicaOptions::DEFAULT_PROMOTE_DRAIN,
    };
    let thread = std::thread::spawn(move || {
        let connector = |u: &Url, id: u64| -> logmemcached::error::Result<Box<dyn Transport>> {
            let Url::Shm(n) = u else { unreachable!() };
            Ok(Box::new(ShmTransport::connect(n, id)?))
        };
        replica::run(rs, url, st, cl, opts, Arc::new(connector))
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.log().head() != p.log().head() {
        assert!(Instant::now() < deadline, "the replica did not catch up");
        std::thread::yield_now();
    }
    assert!(status.resyncs.load(std::sync::atomic::Ordering::Relaxed) > 0, "it replayed from the tail");
    let held = dump(&r);
    assert_eq!(held, dump(&p));
    assert!(!held.is_empty());
    // Past the flush point, the primary serves none of them; neither may the replica.
    for s in [&p, &r] {
        s.clock.advance(101);
    }
    assert!(dump(&p).is_empty());
    assert!(dump(&r).is_empty(), "the replica still serves {} items its primary flushed", dump(&r).len());
    ctl.request_stop();
    thread.join().unwrap();
    let _ = std::fs::remove_file(&path);
}
