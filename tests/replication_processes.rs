//! Replication between real server processes: the scenarios 1, 4
//! and 5 and the read-only, fencing, sync and auto-promotion rules. On the
//! host they run over the shm transport; in the Soft-RoCE VM the harness sets
//! LOGMEMCACHED_REPL_TRANSPORT=rdma and the same tests run over verbs
//! (RC QPs on rxe0, side channel on the VM's address).

mod common;
use common::*;
use std::time::{Duration, Instant};

/// A replication endpoint URL for this test: shm://NAME on the host,
/// rdma://ADDR:PORT in the VM (a fresh port per endpoint).
fn shm_name(tag: &str) -> String {
    match std::env::var("LOGMEMCACHED_REPL_TRANSPORT").as_deref() {
        Ok("rdma") => {
            let addr = std::env::var("LOGMEMCACHED_RDMA_ADDR").unwrap_or_else(|_| "10.0.2.15".into());
            format!("rdma://{addr}:{}", free_port())
        }
        _ => format!("shm://t{}-{tag}", std::process::id()),
    }
}

/// Operation counts scale down under the VM's emulated CPU (~20x slower).
fn ops(n: usize) -> usize {
    let div: usize = std::env::var("LOGMEMCACHED_REPL_OPS_DIV").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    (n / div.max(1)).max(1000)
}

/// Over rdma the side channels are on the VM's address, beyond loopback,
/// so every server holds the test token (and proves it to its peers).
fn start(args: Vec<&str>) -> Server {
    let token = token_file();
    let mut args = args;
    if std::env::var("LOGMEMCACHED_REPL_TRANSPORT").as_deref() == Ok("rdma") {
        args.extend_from_slice(&["--auth-token-file", token.as_str()]);
    }
    Server::start(&args)
}

fn primary(url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["-m", "16", "--replication-listen", url];
    args.extend_from_slice(extra);
    start(args)
}

fn replica(of: &str, extra: &[&str]) -> Server {
    let mut args = vec!["-m", "16", "--replica-of", of];
    args.extend_from_slice(extra);
    start(args)
}

/// The keys' (value, flags, cas) on both sides are identical.
fn same_items(p: &mut Client, r: &mut Client, keys: &[String]) {
    for k in keys {
        assert_eq!(p.gets(k), r.gets(k), "key {k}");
    }
    assert_eq!(p.stats("")["curr_items"], r.stats("")["curr_items"]);
}

/// A deterministic mixed load: set, add, replace, append, prepend, cas,
/// incr, decr, touch, delete, an occasional flush_all, and expiring items.
fn mixed_load(c: &mut Client, ops: usize, seed: u64, keys: &[String]) {
    let mut x = seed;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut batch = String::new();
    let mut pending = 0;
    for i in 0..ops {
        let k = &keys[rnd(keys.len() as u64) as usize];
        let v = format!("v{i}");
        let req = match rnd(100) {
            0..=34 => format!("set {k} {} 0 {}\r\n{v}\r\n", rnd(7), v.len()),
            35..=39 => format!("add {k} 1 0 {}\r\n{v}\r\n", v.len()),
            40..=44 => format!("replace {k} 2 0 {}\r\n{v}\r\n", v.len()),
            45..=49 => format!("append {k} 0 0 2\r\n+a\r\n"),
            50..=54 => format!("prepend {k} 0 0 2\r\np+\r\n"),
            55..=59 => format!("cas {k} 3 0 {} {}\r\n{v}\r\n", v.len(), rnd(1000)),
            60..=69 => format!("set n{} 0 0 2\r\n10\r\nincr n{} {}\r\n", i % 30, i % 30, rnd(100)),
            70..=74 => format!("decr n{} {}\r\n", i % 30, rnd(100)),
            75..=79 => format!("touch {k} {}\r\n", 1000 + rnd(1000)),
            80..=84 => format!("set {k} 0 3600 {}\r\n{v}\r\n", v.len()),
            85..=98 => format!("delete {k}\r\n"),
            _ if rnd(50) == 0 => "flush_all\r\n".to_string(),
            _ => format!("get {k}\r\n"),
        };
        batch.push_str(&req);
        pending += 1;
        if pending == 200 {
            flush_batch(c, &mut batch, &mut pending);
        }
    }
    flush_batch(c, &mut batch, &mut pending);
}

/// Send the batch and read until the server answered it all (a trailing
/// `version` marks the end, since replies vary in shape).
fn flush_batch(c: &mut Client, batch: &mut String, pending: &mut usize) {
    batch.push_str("version\r\n");
    c.send(batch.as_bytes());
    loop {
        let l = c.line();
        // Appends can make a counter non-numeric; that reply is legitimate.
        let benign = l.starts_with("CLIENT_ERROR cannot increment or decrement non-numeric value");
        assert!(benign || !(l.starts_with("SERVER_ERROR") || l.starts_with("CLIENT_ERROR")), "{l}");
        if l.starts_with("VERSION ") {
            break;
        }
    }
    batch.clear();
    *pending = 0;
}

fn keyset() -> Vec<String> {
    (0..300).map(|i| format!("key:{i}")).chain((0..30).map(|i| format!("n{i}"))).collect()
}

#[test]
fn scenario_1_three_replicas_match_the_primary_after_100k_operations() {
    let name = shm_name("s1");
    let p = primary(&name, &[]);
    let rs: Vec<Server> = (0..3).map(|_| replica(&name, &[])).collect();
    let keys = keyset();
    let mut pc = p.connect();
    mixed_load(&mut pc, ops(100_000), 42, &keys);
    for r in &rs {
        let mut rc = r.connect();
        converge(&mut pc, &mut rc);
        same_items(&mut pc, &mut rc, &keys);
    }
    let st = pc.stats("replication");
    assert_eq!(st["replicas"], "3", "{st:?}");
}

#[test]
fn replicas_are_read_only_and_serve_reads() {
    let name = shm_name("ro");
    let p = primary(&name, &[]);
    let r = replica(&name, &[]);
    let mut pc = p.connect();
    assert_eq!(pc.cmd("set k 5 0 2\r\nhi\r\n"), "STORED\r\n");
    let mut rc = r.connect();
    converge(&mut pc, &mut rc);
    assert_eq!(rc.gets("k").map(|x| x.0), Some(b"hi".to_vec()));
    for req in [
        "set k 0 0 1\r\nx\r\n",
        "add z 0 0 1\r\nx\r\n",
        "append k 0 0 1\r\nx\r\n",
        "delete k\r\n",
        "incr k 1\r\n",
        "touch k 10\r\n",
        "flush_all\r\n",
    ] {
        assert_eq!(rc.cmd(req), "SERVER_ERROR read-only replica\r\n", "{req:?}");
    }
    assert_eq!(rc.gets("k").map(|x| x.0), Some(b"hi".to_vec()), "refused writes changed nothing");
    let st = rc.stats("replication");
    assert_eq!(st["role"], "replica");
    assert_eq!(st["connected"], "1");
}

#[test]
fn scenario_4_a_killed_replica_restarts_and_converges_while_the_primary_serves() {
    let name = shm_name("s4");
    let p = primary(&name, &[]);
    let mut r = replica(&name, &[]);
    let keys = keyset();
    let mut pc = p.connect();
    mixed_load(&mut pc, ops(20_000), 1, &keys);
    r.kill9();
    // The primary's clients never notice: keep writing while it is gone.
    mixed_load(&mut pc, ops(20_000), 2, &keys);
    let r2 = replica(&name, &[]);
    mixed_load(&mut pc, ops(20_000), 3, &keys);
    let mut rc = r2.connect();
    converge(&mut pc, &mut rc);
    same_items(&mut pc, &mut rc, &keys);
}

#[test]
fn scenario_5_primary_killed_promote_follow_and_no_acknowledged_write_lost() {
    let pname = shm_name("s5p");
    let (an, bn) = (shm_name("s5a"), shm_name("s5b"));
    let mut p = primary(&pname, &["--sync-replicas", "1", "--sync-timeout", "2000"]);
    // Promote and follow are admin commands: sent to each replica's admin socket.
    let (aa, ba) = (admin_socket_path("s5a"), admin_socket_path("s5b"));
    let a = replica(&pname, &["--replication-listen", &an, "--admin-socket", &aa]);
    let b = replica(&pname, &["--replication-listen", &bn, "--admin-socket", &ba]);
    let mut pc = p.connect();
    // Every STORED under --sync-replicas 1 is on at least one replica.
    let mut acked = Vec::new();
    for i in 0..ops(2000) {
        let k = format!("acked:{i}");
        let v = format!("value-{i}");
        assert_eq!(pc.cmd(&format!("set {k} 0 0 {}\r\n{v}\r\n", v.len())), "STORED\r\n");
        acked.push((k, v));
    }
    // Nothing is written after this: the primary's head when it dies.
    let head: u64 = pc.stats("replication")["head"].parse().unwrap();
    p.kill9();
    // Promote the replica that got furthest: it holds every acknowledged write.
    // A replica's applied position is final once it holds the dead primary's
    // head (over shm the log file stays readable), or once it has seen the
    // primary go (over verbs the QP fails: `connected` drops to 0 and stays,
    // since nothing answers a reconnect).
    let mut ac = a.connect();
    let mut bc = b.connect();
    let settled = |c: &mut Client| -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = c.stats("replication");
            let applied: u64 = st["applied"].parse().unwrap();
            if applied >= head || st["connected"] == "0" {
                return applied;
            }
            assert!(Instant::now() < deadline, "replica neither reached {head} nor lost its primary: {st:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (pa, pb) = (settled(&mut ac), settled(&mut bc));
    let (mut nc, mut fc, new_url, (n_admin, f_admin)) =
        if pa >= pb { (ac, bc, an.clone(), (&aa, &ba)) } else { (bc, ac, bn.clone(), (&ba, &aa)) };
    assert_eq!(Admin::connect(n_admin).cmd("replica promote\r\n"), "OK\r\n");
    assert_eq!(Admin::connect(f_admin).cmd(&format!("replica follow {new_url}\r\n")), "OK\r\n");
    // Writes go on through the new primary.
    for i in 0..500 {
        assert_eq!(nc.cmd(&format!("set after:{i} 0 0 1\r\nx\r\n")), "STORED\r\n");
    }
    converge(&mut nc, &mut fc);
    let st = nc.stats("replication");
    assert_eq!(st["role"], "primary");
    assert_eq!(st["epoch"], "2");
    for (k, v) in &acked {
        assert_eq!(nc.gets(k).map(|x| x.0).as_deref(), Some(v.as_bytes()), "acknowledged {k} lost");
    }
    let keys: Vec<String> = acked.iter().map(|x| x.0.clone()).collect();
    same_items(&mut nc, &mut fc, &keys);
    // The old primary comes back as a replica of the new one and converges.
    let old = replica(&new_url, &[]);
    let mut oc = old.connect();
    converge(&mut nc, &mut oc);
    same_items(&mut nc, &mut oc, &keys);
}

#[test]
fn a_stale_primary_is_fenced_once_a_replica_is_promoted() {
    let name = shm_name("fence");
    let p = primary(&name, &[]);
    let admin = admin_socket_path("fence");
    let r = replica(&name, &["--admin-socket", &admin]);
    let mut pc = p.connect();
    assert_eq!(pc.cmd("set a 0 0 1\r\n1\r\n"), "STORED\r\n");
    let mut rc = r.connect();
    converge(&mut pc, &mut rc);
    assert_eq!(Admin::connect(&admin).cmd("replica promote\r\n"), "OK\r\n");
    assert_eq!(rc.cmd("set b 0 0 1\r\n2\r\n"), "STORED\r\n");
    // The old primary sees the higher epoch in the slot and refuses writes.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = pc.cmd("set c 0 0 1\r\n3\r\n");
        if reply.starts_with("SERVER_ERROR stale primary") {
            break;
        }
        assert!(Instant::now() < deadline, "old primary still accepts writes: {reply:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pc.stats("replication")["role"], "stale-primary");
    assert!(pc.gets("a").is_some(), "a fenced primary still serves reads");
}

#[test]
fn sync_replicas_times_out_without_replicas_and_says_so() {
    let name = shm_name("sync");
    let p = primary(&name, &["--sync-replicas", "1", "--sync-timeout", "50"]);
    let mut pc = p.connect();
    let reply = pc.cmd("set k 0 0 1\r\nx\r\n");
    assert!(reply.starts_with("SERVER_ERROR stored, but not confirmed"), "{reply:?}");
    assert_eq!(pc.stats("replication")["sync_timeouts"], "1");
    let r = replica(&name, &[]);
    let mut rc = r.connect();
    converge(&mut pc, &mut rc);
    assert_eq!(pc.cmd("set k 0 0 1\r\ny\r\n"), "STORED\r\n");
}

#[test]
fn promote_after_turns_a_replica_into_a_primary_when_the_primary_dies() {
    let name = shm_name("auto");
    let mut p = primary(&name, &[]);
    let r = replica(&name, &["--promote-after", "300"]);
    let mut pc = p.connect();
    assert_eq!(pc.cmd("set k 0 0 1\r\nx\r\n"), "STORED\r\n");
    let mut rc = r.connect();
    converge(&mut pc, &mut rc);
    p.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if rc.cmd("set k2 0 0 1\r\ny\r\n") == "STORED\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "replica never promoted itself");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rc.gets("k").map(|x| x.0), Some(b"x".to_vec()), "warm data survived");
}

#[test]
fn a_replica_with_another_memory_size_is_told_why_and_keeps_serving() {
    let name = shm_name("msize");
    let p = primary(&name, &[]);
    let mut pc = p.connect();
    assert_eq!(pc.cmd("set k 0 0 1\r\nx\r\n"), "STORED\r\n");
    let mut r = start(vec!["-m", "8", "--replica-of", &name]);
    let mut rc = r.connect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = rc.stats("replication");
        if st.get("last_error").is_some_and(|e| e.contains("same -m")) {
            break;
        }
        assert!(Instant::now() < deadline, "no explanation: {st:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(r.alive(), "a size mismatch must not crash the replica");
    assert_eq!(rc.cmd("set z 0 0 1\r\nx\r\n"), "SERVER_ERROR read-only replica\r\n");
}

/// Send SIGSTOP or SIGCONT to a server (by its pid only).
fn signal(s: &Server, sig: &str) {
    let st = std::process::Command::new("kill").args([sig, &s.pid().to_string()]).status().expect("running kill");
    assert!(st.success(), "kill {sig} {}", s.pid());
}

/// The lost writes: a replica far behind its primary (paused with
/// SIGSTOP, so the lag is certain) is promoted after the primary's kill -9.
/// The dead primary's shm region still holds every write it acknowledged;
/// the promotion must drain it before taking writes, and say what it got.
/// Over shm in every run (a killed verbs primary's memory is gone with it;
/// tests/vm/failover-pair.sh covers failover over verbs).
#[test]
fn promotion_drains_what_the_dead_primarys_memory_still_holds() {
    let name = format!("shm://t{}-drain", std::process::id());
    let mut p = Server::start(&["-m", "64", "--replication-listen", &name]);
    // A generous bound: under the VM's emulated CPU the drain runs at ~2.5 MB/s.
    let admin_path = admin_socket_path("drain");
    let r = Server::start(&[
        "-m",
        "64",
        "--replica-of",
        &name,
        "--promote-drain-ms",
        "30000",
        "--admin-socket",
        &admin_path,
    ]);
    let mut pc = p.connect();
    assert_eq!(pc.cmd("set before 0 0 1\r\nb\r\n"), "STORED\r\n");
    let mut rc = r.connect();
    converge(&mut pc, &mut rc);
    let seen: u64 = pc.stats("replication")["head"].parse().unwrap();
    // ~20 MB the replica has not seen (less than the log: nothing is
    // evicted); fewer under the VM's emulated CPU, but always several of
    // the replica's 4 MiB stretches.
    signal(&r, "-STOP");
    let value = "x".repeat(1000);
    let n = ops(20_000).max(12_000) / 500 * 500;
    for batch in 0..n / 500 {
        let mut req = String::new();
        for i in batch * 500..(batch + 1) * 500 {
            req.push_str(&format!("set lag:{i} 0 0 {}\r\n{i}{value}\r\n", value.len() + i.to_string().len()));
        }
        for reply in pc.pipeline(&req, 500) {
            assert_eq!(reply, "STORED\r\n");
        }
    }
    let head: u64 = pc.stats("replication")["head"].parse().unwrap();
    p.kill9();
    // The request waits in the stopped replica's socket: it is read before
    // the replica's loop can catch up on its own.
    // (The kernel queues the connection on the stopped server's socket.)
    let mut admin = std::os::unix::net::UnixStream::connect(&admin_path).unwrap();
    admin.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    std::io::Write::write_all(&mut admin, b"replica promote\r\n").unwrap();
    signal(&r, "-CONT");
    let mut ok = [0u8; 4];
    std::io::Read::read_exact(&mut admin, &mut ok).unwrap();
    assert_eq!(&ok, b"OK\r\n");
    let mut admin = r.connect();
    let st = admin.stats("replication");
    assert_eq!(st["role"], "primary", "{st:?}");
    assert_eq!(st["head"], head.to_string(), "the promoted replica holds the dead primary's whole log: {st:?}");
    let drained: u64 = st["promote_drain_bytes"].parse().unwrap();
    // The replica's loop may finish the stretch it was in and one more
    // before it sees the request; the drain applies the rest.
    let lag = head - seen;
    assert!(drained >= lag.saturating_sub(8 << 20), "drained only {drained} of {lag} bytes: {st:?}");
    assert!(st["promote_drain_records"].parse::<u64>().unwrap() > 0, "{st:?}");
    assert!(st["promote_drain_result"].contains("caught up"), "{st:?}");
    // Every acknowledged write is served, then the new primary takes writes.
    for batch in 0..n / 200 {
        let keys: Vec<String> = (batch * 200..(batch + 1) * 200).map(|i| format!("lag:{i}")).collect();
        admin.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
        let lines = admin.until("END\r\n");
        assert_eq!(lines.len(), 2 * keys.len() + 1, "acknowledged writes lost in batch {batch}");
        for (j, k) in keys.iter().enumerate() {
            assert!(lines[2 * j].starts_with(&format!("VALUE {k} ")), "{k}: {}", lines[2 * j]);
            let i = batch * 200 + j;
            assert_eq!(lines[2 * j + 1], format!("{i}{value}\r\n"), "{k}");
        }
    }
    assert_eq!(admin.cmd("set after 0 0 1\r\na\r\n"), "STORED\r\n");
}
