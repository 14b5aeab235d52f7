//! Regression tests for bugs the campaign found, each reduced to the few
//! steps that show it.

use std::time::{Duration, Instant};

use crate::cluster::{Cluster, Role, Spec, Transport};
use crate::net;

/// Until node `i`'s `stats replication` shows `applied` at least `head`,
/// at most 10 s; the last stats seen otherwise.
fn applied_reaches(c: &Cluster, i: usize, head: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = c.stats(i, "replication").map_err(|e| e.to_string())?;
        if net::num(&st, "applied") >= head {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("applied never reached the primary's head {head}: {st:?}"));
        }
        std::thread::sleep(Duration::from_millis(10)); // polling its progress
    }
}

/// A replica restarted from its memory file that already holds its
/// primary's whole log has nothing to pull; it used to report `applied 0`
/// (and so a lag of the whole log) until the primary wrote again.
#[test]
fn a_replica_restarted_from_its_file_at_the_primary_head_reports_it_applied() {
    let _one = crate::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !crate::common::peer(
        "the memory file (-e) in this logmemcached",
        crate::cluster::memfile_supported(env!("CARGO_BIN_EXE_logmemcached")),
    ) {
        return;
    }
    let spec = Spec { mb: 16, sync: None, promote_after_ms: 1000, drain_ms: None, memfile: true };
    let mut c = Cluster::new("warm", 2, spec, Transport::Shm);
    c.start(0, Role::Primary, false, false).expect("the primary starts");
    let url = c.nodes[0].url.clone();
    c.start(1, Role::ReplicaOf(url.clone()), false, false).expect("the replica starts");
    let mut p = c.conn(0).expect("a connection to the primary");
    for i in 0..100 {
        assert_eq!(p.cmd(format!("set k{i} 0 0 5\r\nv{i:04}\r\n").as_bytes()).expect("a set"), "STORED");
    }
    let head = net::num(&c.stats(0, "replication").expect("stats"), "head");
    applied_reaches(&c, 1, head).expect("the replica catches up");
    c.kill9(1);
    c.start(1, Role::ReplicaOf(url), false, true).expect("the replica restarts from its file");
    // No write after the restart: the replica must say it holds the head.
    applied_reaches(&c, 1, head).expect("the restarted replica reports what it holds");
    let mut r = c.conn(1).expect("a connection to the replica");
    assert_eq!(r.gets(&["k7"]).expect("a get").get("k7").map(|it| it.value.clone()), Some(b"v0007".to_vec()));
}
