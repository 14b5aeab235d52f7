//! The RDMA client against the real server: UD datagrams for every operation,
//! RC for a 512 KiB value, 64 endpoints at once, a datagram lost on purpose,
//! a read-only replica refusing writes, a malformed datagram, a request that
//! names another address (the reply still goes to its sender), RC
//! connections past the memory budget.
//!
//! The `vm_*` tests need an RDMA device and are `#[ignore]`d, so a plain
//! `cargo test` lists them as ignored instead of silently passing;
//! tests/run-vm-suite.sh runs them in the Soft-RoCE VM with
//! `--include-ignored` and LOGMEMCACHED_IN_VM=1. The `tcp_*` tests drive the
//! same client over TCP on any host.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, test_token, token_file, Server};
use logmemcached::client::{wire, Client, ClientOptions, End, ShardSpec};
use logmemcached::rdma::connect::{UdEndpointInfo, WireInfo};
use logmemcached::rdma::{Access, QpCaps, UdEndpoint, UdOptions, GRH_SIZE};

fn require_vm() {
    if std::env::var("LOGMEMCACHED_IN_VM").as_deref() != Ok("1") {
        panic!("VM-only RDMA client test: run tests/run-vm-suite.sh (it is #[ignore]d so plain `cargo test` skips it)");
    }
}

fn rdma_addr() -> String {
    std::env::var("LOGMEMCACHED_RDMA_ADDR").unwrap_or_else(|_| "10.0.2.15".into())
}

/// Client options with the test token (the servers here require it: their
/// side channels are on the VM's address, beyond loopback).
fn opts() -> ClientOptions {
    ClientOptions { auth_token: Some(test_token()), ..Default::default() }
}

/// A client of `url` that holds the token.
fn connect(url: &str) -> Client {
    Client::with_options(&[url], opts()).unwrap()
}

/// A server with an RDMA endpoint; returns it and its rdma:// URL.
fn rdma_server(extra: &[&str]) -> (Server, String) {
    let side = format!("{}:{}", rdma_addr(), free_port());
    let token = token_file();
    let mut args = vec!["--rdma-listen", side.as_str(), "--auth-token-file", token.as_str()];
    if !extra.contains(&"-m") {
        args.extend_from_slice(&["-m", "8"]); // a small log starts fast under TCG
    }
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    // The TCP port answers first; the RDMA side channel is bound right after.
    let t0 = Instant::now();
    while let Err(e) = logmemcached::client::ud::fetch_endpoints(&side, Duration::from_secs(10), Some(&test_token())) {
        assert!(t0.elapsed() < Duration::from_secs(20), "RDMA endpoint {side} never came up: {e}");
        std::thread::sleep(Duration::from_millis(20)); // test-side start-up wait only
    }
    (s, format!("rdma://{side}"))
}

fn stat(s: &Server, name: &str) -> u64 {
    s.connect().stats("").get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Every client operation and its edge cases; `c` is over UD or TCP.
fn every_operation(c: &mut Client) {
    assert_eq!(c.get(b"nokey").unwrap(), None);
    let cas = c.set(b"k1", b"hello", 42, 0).unwrap();
    let it = c.get(b"k1").unwrap().expect("k1 stored");
    assert_eq!((&it.value[..], it.flags, it.cas), (&b"hello"[..], 42, cas));
    assert!(!c.add(b"k1", b"x", 0, 0).unwrap(), "add of an existing key");
    assert!(c.add(b"k2", b"two", 1, 0).unwrap());
    assert!(c.replace(b"k2", b"TWO", 2, 0).unwrap());
    assert!(!c.replace(b"nokey", b"x", 0, 0).unwrap(), "replace of a missing key");
    assert_eq!(c.get(b"k2").unwrap().map(|i| (i.value, i.flags)), Some((b"TWO".to_vec(), 2)));
    assert!(c.append(b"k1", b" world").unwrap());
    assert!(c.prepend(b"k1", b">> ").unwrap());
    assert_eq!(c.get(b"k1").unwrap().map(|i| i.value), Some(b">> hello world".to_vec()));
    assert!(!c.append(b"nokey", b"x").unwrap());
    let cas = c.get(b"k2").unwrap().map(|i| i.cas).unwrap_or(0);
    assert!(!c.cas(b"k2", b"stale", 0, 0, cas + 1000).unwrap(), "cas mismatch");
    assert!(c.cas(b"k2", b"fresh", 0, 0, cas).unwrap());
    assert!(c.delete(b"k2").unwrap());
    assert!(!c.delete(b"k2").unwrap());
    assert_eq!(c.incr(b"n", 1, None, 0).unwrap(), None, "incr of a missing key without initial");
    assert_eq!(c.incr(b"n", 5, Some(10), 0).unwrap(), Some(10), "created with the initial value");
    assert_eq!(c.incr(b"n", 5, None, 0).unwrap(), Some(15));
    assert_eq!(c.decr(b"n", 20, None, 0).unwrap(), Some(0), "decr stops at 0");
    c.set(b"s", b"text", 0, 0).unwrap();
    assert!(c.incr(b"s", 1, None, 0).is_err(), "incr of a non-number is an error");
    assert!(c.touch(b"k1", 3600).unwrap());
    assert!(!c.touch(b"nokey", 3600).unwrap());
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("multi:{i}").into_bytes()).collect();
    for (i, k) in keys.iter().enumerate().step_by(2) {
        c.set(k, format!("v{i}").as_bytes(), i as u32, 0).unwrap();
    }
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    let got = c.get_multi(&refs).unwrap();
    assert_eq!(got.len(), 20, "every other key is set");
    for (i, k) in keys.iter().enumerate() {
        match got.get(k) {
            Some(it) => {
                assert_eq!(i % 2, 0);
                assert_eq!((it.value.clone(), it.flags), (format!("v{i}").into_bytes(), i as u32));
            }
            None => assert_eq!(i % 2, 1, "key {i} missing"),
        }
    }
    // Values near the datagram size and binary bytes survive.
    let v: Vec<u8> = (0..900u32).map(|i| (i * 7) as u8).collect();
    c.set(b"bin", &v, 0, 0).unwrap();
    assert_eq!(c.get(b"bin").unwrap().map(|i| i.value), Some(v));
}

// ---------------------------------------------------------------- any host

#[test]
fn tcp_every_operation() {
    let s = Server::start(&[]);
    let mut c = Client::connect(&format!("tcp://127.0.0.1:{}", s.port)).unwrap();
    every_operation(&mut c);
}

#[test]
fn tcp_ketama_shards_spread_keys() {
    let servers = [Server::start(&[]), Server::start(&[]), Server::start(&[])];
    let urls: Vec<String> = servers.iter().map(|s| format!("tcp://127.0.0.1:{}", s.port)).collect();
    let refs: Vec<&str> = urls.iter().map(|s| s.as_str()).collect();
    let mut c = Client::with_options(&refs, ClientOptions::default()).unwrap();
    for i in 0..300 {
        c.set(format!("key:{i}").as_bytes(), b"v", 0, 0).unwrap();
    }
    for (n, s) in servers.iter().enumerate() {
        let items = s.connect().stats("").get("curr_items").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let want = (0..300).filter(|i| c.shard_for(format!("key:{i}").as_bytes()) == n).count() as u64;
        assert_eq!(items, want, "server {n} holds exactly the keys ketama assigns it");
        assert!(items > 50, "server {n} got {items} of 300");
    }
    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    assert_eq!(c.get_multi(&refs).unwrap().len(), 300);
}

// ---------------------------------------------------------------- VM tests

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_every_operation_over_ud() {
    require_vm();
    let (s, url) = rdma_server(&[]);
    let mut c = connect(&url);
    every_operation(&mut c);
    let st = c.stats();
    assert_eq!(st.rc_calls, 0, "everything fits a datagram: {st:?}");
    assert_eq!(st.retries, 0, "nothing lost on a quiet link: {st:?}");
    let (req, rep) = (stat(&s, "rdma_requests"), stat(&s, "rdma_replies"));
    eprintln!("client {st:?}; server rdma_requests {req} rdma_replies {rep}");
    assert!(req >= st.requests && rep >= st.requests, "server counted {req} requests, {rep} replies");
    assert_eq!(stat(&s, "rdma_drops"), 0);
}

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_512k_value_over_rc() {
    require_vm();
    let (_s, url) = rdma_server(&["-m", "16"]);
    let mut c = connect(&url);
    let v: Vec<u8> = (0..512 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    c.set(b"big", &v, 7, 0).unwrap();
    assert_eq!(c.stats().rc_calls, 1, "the set went over RC");
    let it = c.get(b"big").unwrap().expect("big stored");
    assert_eq!(it.flags, 7);
    assert!(it.value == v, "512 KiB value round-trips byte for byte");
    assert_eq!(c.stats().rc_calls, 2, "the get was flagged NEEDS_RC and repeated over RC");
    // A multi-get mixing a big value with small ones.
    c.set(b"small", b"s", 0, 0).unwrap();
    let got = c.get_multi(&[b"big", b"small", b"none"]).unwrap();
    assert_eq!(got.len(), 2);
    assert!(got[&b"big".to_vec()].value == v);
    assert_eq!(got[&b"small".to_vec()].value, b"s");
}

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_64_concurrent_endpoints() {
    require_vm();
    let (s, url) = rdma_server(&[]);
    const THREADS: usize = 8;
    const PER_THREAD: usize = 8;
    const ROUNDS: usize = 10;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut clients: Vec<Client> = (0..PER_THREAD).map(|_| connect(&url)).collect();
                for r in 0..ROUNDS {
                    for (i, c) in clients.iter_mut().enumerate() {
                        let key = format!("ep:{t}:{i}");
                        c.set(key.as_bytes(), format!("{r}").as_bytes(), 0, 0).unwrap();
                        assert_eq!(c.get(key.as_bytes()).unwrap().map(|x| x.value), Some(format!("{r}").into_bytes()));
                        c.incr(b"shared-counter", 1, Some(1), 0).unwrap();
                    }
                }
                clients.iter().map(|c| c.stats().retries).sum::<u64>()
            })
        })
        .collect();
    let retries: u64 = handles.into_iter().map(|h| h.join().expect("client thread")).sum();
    let mut c = connect(&url);
    let total = (THREADS * PER_THREAD * ROUNDS) as u64;
    // The first incr creates the counter with 1; every other adds 1: exactly once each.
    assert_eq!(c.incr(b"shared-counter", 0, None, 0).unwrap(), Some(total), "retries: {retries}");
    eprintln!(
        "64 endpoints: {total} rounds, {retries} client retries, server rdma_retries {}",
        stat(&s, "rdma_retries")
    );
}

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_lost_datagrams_are_retried_and_apply_once() {
    require_vm();
    let (s, url) = rdma_server(&[]);
    let mut c = connect(&url);
    c.set(b"n", b"10", 0, 0).unwrap();
    c.set(b"a", b"x", 0, 0).unwrap();

    // The reply is lost after the server ran the incr: the retry must be
    // answered from the server's reply cache, not run again.
    let o = ClientOptions { drop_replies: 1, timeout: Duration::from_millis(300), ..opts() };
    let mut lossy = Client::with_options(&[&url], o).unwrap();
    assert_eq!(lossy.incr(b"n", 1, None, 0).unwrap(), Some(11));
    assert_eq!(lossy.stats().retries, 1);
    assert_eq!(c.get(b"n").unwrap().map(|i| i.value), Some(b"11".to_vec()), "incr applied once");
    assert_eq!(stat(&s, "rdma_retries"), 1, "the server answered the retry from its cache");

    let o = ClientOptions { drop_replies: 1, timeout: Duration::from_millis(300), ..opts() };
    let mut lossy = Client::with_options(&[&url], o).unwrap();
    assert!(lossy.append(b"a", b"y").unwrap());
    assert_eq!(c.get(b"a").unwrap().map(|i| i.value), Some(b"xy".to_vec()), "append applied once");
    let o = ClientOptions { drop_replies: 1, timeout: Duration::from_millis(300), ..opts() };
    let mut lossy = Client::with_options(&[&url], o).unwrap();
    assert!(lossy.add(b"fresh", b"1", 0, 0).unwrap(), "a retried add reports its own success");

    // The request is lost: the retry is the first the server sees.
    let o = ClientOptions { drop_requests: 1, timeout: Duration::from_millis(300), ..opts() };
    let mut lossy = Client::with_options(&[&url], o).unwrap();
    assert_eq!(lossy.incr(b"n", 1, None, 0).unwrap(), Some(12));
    assert_eq!(lossy.stats().retries, 1);
    // A lost get reply: retried (reads simply run again).
    let o = ClientOptions { drop_replies: 1, timeout: Duration::from_millis(300), ..opts() };
    let mut lossy = Client::with_options(&[&url], o).unwrap();
    assert_eq!(lossy.get(b"n").unwrap().map(|i| i.value), Some(b"12".to_vec()));
    assert_eq!(lossy.stats().retries, 1);
    assert_eq!(stat(&s, "rdma_retries"), 3, "incr, append, add retries came from the cache");
}

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_read_only_replica_refuses_writes_and_serves_reads() {
    require_vm();
    let repl = format!("rdma://{}:{}", rdma_addr(), free_port());
    let (primary, purl) = rdma_server(&["-m", "8", "--replication-listen", &repl]);
    let (_replica, rurl) = rdma_server(&["-m", "8", "--replica-of", &repl]);
    let mut p = connect(&purl);
    p.set(b"r", b"from-primary", 3, 0).unwrap();
    let mut r = connect(&rurl);
    let t0 = Instant::now();
    loop {
        if r.get(b"r").unwrap().is_some() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "replica never caught up");
        std::thread::sleep(Duration::from_millis(20)); // test-side polling only
    }
    let e = r.set(b"r", b"x", 0, 0).unwrap_err().to_string();
    assert!(e.contains("read-only"), "{e}");
    assert!(r.incr(b"n", 1, Some(1), 0).unwrap_err().to_string().contains("read-only"));
    assert!(r.delete(b"r").unwrap_err().to_string().contains("read-only"));
    // A sharded client told to read from the replica.
    let spec = ShardSpec { name: None, primary: purl.clone(), replicas: vec![rurl.clone()] };
    let o = ClientOptions { read_from_replicas: true, ..opts() };
    let mut c = Client::with_shards(&[spec], o).unwrap();
    assert_eq!(c.get(b"r").unwrap().map(|i| i.value), Some(b"from-primary".to_vec()));
    c.set(b"w", b"to-primary", 0, 0).unwrap();
    assert_eq!(p.get(b"w").unwrap().map(|i| i.value), Some(b"to-primary".to_vec()));
    drop(primary);
}

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_malformed_datagram_is_dropped_and_counted() {
    require_vm();
    let (s, url) = rdma_server(&[]);
    let side = url.trim_start_matches("rdma://");
    let eps: Vec<UdEndpointInfo> =
        logmemcached::client::ud::fetch_endpoints(side, Duration::from_secs(10), Some(&test_token())).unwrap();
    let (ctx, pd) = logmemcached::client::verbs().unwrap();
    let cq = ctx.create_cq(16, false).unwrap();
    let qp = pd.create_ud_qp(&cq, &cq, &QpCaps::default(), &UdOptions::default()).unwrap();
    let dest = qp.dest(&eps[0]).unwrap();
    let buf = pd.register_buffer(256, Access::LOCAL_WRITE).unwrap();
    let mut good = Vec::new();
    wire::request(&mut good, wire::opcode::SET, 0, &wire::store_extras(0, 0), b"bad", b"applied");
    let garbage: [&[u8]; 4] = [
        b"get foo\r\n",                          // text, not binary
        &good[..good.len() - 3],                 // truncated frame
        &[good.clone(), vec![0x80, 1]].concat(), // trailing bytes
        &[0x80u8; 24],                           // lengths that disagree
    ];
    for (i, g) in garbage.iter().enumerate() {
        buf.write(0, g);
        qp.post_send(i as u64, buf.slice(0, g.len()).unwrap(), &dest, true).unwrap();
        cq.wait_one(Duration::from_secs(10)).unwrap().ok().unwrap();
    }
    // The server goes on: a real client works, and nothing of the bad ones applied.
    let mut c = connect(&url);
    c.set(b"after", b"ok", 0, 0).unwrap();
    assert_eq!(c.get(b"after").unwrap().map(|i| i.value), Some(b"ok".to_vec()));
    assert_eq!(c.get(b"bad").unwrap(), None, "a malformed datagram has no effect");
    assert_eq!(stat(&s, "rdma_drops"), garbage.len() as u64);
    // Raw multi-request datagram: quiet set + get + noop in one.
    let mut req = Vec::new();
    wire::request(&mut req, wire::opcode::SETQ, 0, &wire::store_extras(0, 0), b"q", b"1");
    wire::request(&mut req, wire::opcode::GETK, 0, &[], b"q", &[]);
    let r = c.raw(b"q", &mut req, End::First).unwrap();
    assert_eq!(r[0].value, b"1");
}

/// The replies to datagrams `ep` sent, until one with opaque `last` (or
/// the timeout).
fn replies_until(ep: &UdEndpoint, last: u32, timeout: Duration) -> Vec<wire::Response> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = Vec::new();
    while !got.iter().any(|r: &wire::Response| r.opaque == last) {
        let left = deadline.saturating_duration_since(Instant::now());
        let wc =
            ep.recv_cq().wait_one(left).unwrap_or_else(|e| panic!("no reply with opaque {last}: {e}; got {got:?}"));
        let slot = wc.wr_id() as usize;
        ep.read_payload(slot, wc.byte_len() as usize - GRH_SIZE, &mut buf).unwrap();
        ep.repost(slot).unwrap();
        got.extend(wire::parse_all(&buf).unwrap());
    }
    got
}

/// Send one datagram from `ep`'s send slot 0 and wait for it to go.
fn send(ep: &UdEndpoint, payload: &[u8], dest: &logmemcached::rdma::UdDest) {
    ep.post_send(0, payload, dest).unwrap();
    ep.send_cq().wait_one(Duration::from_secs(10)).unwrap().ok().unwrap();
}

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_a_request_naming_another_address_is_answered_to_its_sender_only() {
    require_vm();
    let (s, url) = rdma_server(&[]);
    let side = url.trim_start_matches("rdma://");
    let eps = logmemcached::client::ud::fetch_endpoints(side, Duration::from_secs(10), Some(&test_token())).unwrap();
    let (ctx, pd) = logmemcached::client::verbs().unwrap();
    // A sends; B listens at the address A's requests name. Both hold the
    // server's Q_Key, as an authenticated client does.
    let o = UdOptions { qkey: eps[0].qkey, ..UdOptions::default() };
    let a = UdEndpoint::builder(&ctx, &pd).recv_slots(32).options(o.clone()).build().unwrap();
    let b = UdEndpoint::builder(&ctx, &pd).recv_slots(32).options(o).build().unwrap();
    let (b_info, to_server) = (b.info(), a.dest(&eps[0]).unwrap());
    let named = b_info.encode();
    // Everywhere a client writes: opaque and flags carry B's QPN, the key
    // B's GID and QPN, the value B's endpoint record.
    let key = format!("reply-to:{}:{}", b_info.gid, b_info.qpn).into_bytes();
    let mut set = Vec::new();
    wire::request(&mut set, wire::opcode::SET, 0, &wire::store_extras(b_info.qpn, 0), &key, &named);
    wire::set_opaque(&mut set, b_info.qpn);
    send(&a, &set, &to_server);
    // A datagram that starts with a forged GRH area naming B (an IPv4
    // header from B's address) before a request: not a request, dropped.
    let mut forged = vec![0u8; GRH_SIZE];
    forged[20] = 0x45;
    forged[32..36].copy_from_slice(&b_info.gid.0[12..]);
    let mut get = Vec::new();
    wire::request(&mut get, wire::opcode::GETK, 0, &[], &key, &[]);
    wire::set_opaque(&mut get, b_info.qpn.wrapping_add(1));
    send(&a, &[forged, get.clone()].concat(), &to_server);
    send(&a, &get, &to_server);
    let got = replies_until(&a, b_info.qpn.wrapping_add(1), Duration::from_secs(10));
    assert!(got.iter().any(|r| r.opaque == b_info.qpn && r.status == 0), "the set's reply came to A: {got:?}");
    let g = got.iter().find(|r| r.opaque == b_info.qpn.wrapping_add(1)).unwrap();
    assert_eq!((g.status, &g.value[..]), (0, &named[..]), "the get's reply came to A");
    // Nothing reached B: the server answered in order and A has the last
    // reply, so anything sent to B went before it; give the link a moment.
    let mut w = logmemcached::rdma::Wc::batch(4);
    assert_eq!(b.recv_cq().wait(&mut w, Some(Duration::from_millis(300))).unwrap(), 0, "B received a reply");
    assert_eq!(stat(&s, "rdma_drops"), 1, "the forged-GRH datagram was dropped");
    // B does listen: its own request is answered to it.
    let mut noop = Vec::new();
    wire::request(&mut noop, wire::opcode::NOOP, 0, &[], &[], &[]);
    wire::set_opaque(&mut noop, 77);
    send(&b, &noop, &b.dest(&eps[0]).unwrap());
    assert_eq!(replies_until(&b, 77, Duration::from_secs(10)).len(), 1);
}

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_rc_connections_past_the_memory_budget_are_refused_until_one_closes() {
    require_vm();
    // Room for one RC connection of -I 1m (two buffers of 1 MiB + 4 KiB), not two.
    let (s, url) = rdma_server(&["-m", "16", "--rdma-rc-memory", "3"]);
    let per: u64 = s.connect().stats("settings")["rdma_rc_connection_bytes"].parse().unwrap();
    assert_eq!(s.connect().stats("settings")["rdma_rc_memory"], (3u64 << 20).to_string());
    let v = vec![7u8; 300 << 10];
    let mut c1 = connect(&url);
    c1.set(b"big1", &v, 0, 0).unwrap();
    assert_eq!(c1.stats().rc_calls, 1, "the set went over RC");
    assert_eq!((stat(&s, "rdma_rc_open"), stat(&s, "rdma_rc_pinned_bytes")), (1, per));
    let mut c2 = connect(&url);
    let e = c2.set(b"big2", &v, 0, 0).unwrap_err().to_string();
    assert!(e.contains("capacity of 0"), "refused with the protocol's refusal: {e}");
    assert_eq!(stat(&s, "rdma_rc_refused"), 1);
    assert_eq!(stat(&s, "rdma_rc_pinned_bytes"), per, "a refusal pins nothing");
    c2.set(b"small", b"x", 0, 0).unwrap();
    assert_eq!(c2.get(b"small").unwrap().map(|i| i.value), Some(b"x".to_vec()), "UD goes on");
    // The first client leaves: its worker drops the QP and the budget has room again.
    drop(c1);
    let t0 = Instant::now();
    while stat(&s, "rdma_rc_pinned_bytes") != 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the closed connection's buffers were never given back");
        std::thread::sleep(Duration::from_millis(20)); // polling a condition
    }
    c2.set(b"big2", &v, 0, 0).unwrap();
    assert_eq!(c2.get(b"big2").unwrap().map(|i| i.value.len()), Some(v.len()));
    assert_eq!(stat(&s, "rdma_rc_open"), 1);
}

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_the_side_channel_tells_nothing_to_a_client_without_the_token() {
    require_vm();
    let (_s, url) = rdma_server(&[]);
    let side = url.trim_start_matches("rdma://");
    let t = Duration::from_secs(10);
    let e = logmemcached::client::ud::fetch_endpoints(side, t, None).unwrap_err().to_string();
    assert!(e.contains("requires a token"), "{e}");
    let wrong = logmemcached::auth::AuthToken::new(&[0x42; 32]).unwrap();
    let e = logmemcached::client::ud::fetch_endpoints(side, t, Some(&wrong)).unwrap_err().to_string();
    assert!(e.contains("proof is wrong"), "{e}");
    let o = ClientOptions { auth_token: Some(wrong), ..opts() };
    assert!(Client::with_options(&[&url], o).is_err(), "a client with a wrong token connected");
    // The right token still gets in, and the server serves.
    let mut c = connect(&url);
    c.set(b"t", b"ok", 0, 0).unwrap();
    assert_eq!(c.get(b"t").unwrap().map(|i| i.value), Some(b"ok".to_vec()));
    // A stranger who guessed a worker's QPN but not the Q_Key the side
    // channel hands out: the NIC drops its datagrams, nothing applies.
    let eps = logmemcached::client::ud::fetch_endpoints(side, t, Some(&test_token())).unwrap();
    assert!(eps.iter().all(|e| e.qkey != UdOptions::default().qkey), "the Q_Key is the well-known default");
    let (ctx, pd) = logmemcached::client::verbs().unwrap();
    let cq = ctx.create_cq(16, false).unwrap();
    let qp = pd.create_ud_qp(&cq, &cq, &QpCaps::default(), &UdOptions::default()).unwrap();
    let buf = pd.register_buffer(256, Access::LOCAL_WRITE).unwrap();
    let mut req = Vec::new();
    wire::request(&mut req, wire::opcode::SET, 0, &wire::store_extras(0, 0), b"stolen", b"x");
    buf.write(0, &req);
    for (i, e) in eps.iter().enumerate() {
        let mut dest = qp.dest(e).unwrap();
        dest.qkey = UdOptions::default().qkey;
        qp.post_send(i as u64, buf.slice(0, req.len()).unwrap(), &dest, true).unwrap();
        cq.wait_one(Duration::from_secs(10)).unwrap().ok().unwrap();
    }
    // Sent before this get on the same workers' QPs: had any applied, it would show.
    for _ in &eps {
        assert_eq!(c.get(b"stolen").unwrap(), None, "a datagram without the Q_Key was served");
    }
}

/// A get whose RC reply comes after its call gave up (the test hook ends
/// the first RC call's wait at once): that late reply must never be taken
/// for the next get's answer (another key's value). The client drops the
/// RC connection after a timeout and matches replies by request id.
#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_a_late_rc_reply_is_not_taken_for_the_next_get() {
    require_vm();
    let (_s, url) = rdma_server(&["-m", "16"]);
    let mut c = connect(&url);
    let a: Vec<u8> = vec![b'a'; 200 * 1024];
    let b: Vec<u8> = vec![b'b'; 200 * 1024];
    c.set(b"big-a", &a, 1, 0).unwrap();
    c.set(b"big-b", &b, 2, 0).unwrap();
    let o = ClientOptions { expire_rc_calls: 1, timeout: Duration::from_millis(300), ..opts() };
    let mut late = Client::with_options(&[&url], o).unwrap();
    // The UD get is flagged NEEDS_RC; the RC call gives up at once: an
    // error, and its reply comes late.
    assert!(late.get(b"big-a").is_err(), "the first RC call gives up at once");
    let it = late.get(b"big-b").unwrap().expect("big-b stored");
    assert_eq!(it.flags, 2, "the late reply to big-a answered the get of big-b");
    assert!(it.value == b, "big-b's own value");
    assert!(late.get(b"big-a").unwrap().is_some_and(|i| i.value == a));
    let st = late.stats();
    assert_eq!(st.timeouts, 1, "{st:?}");
    assert_eq!(st.rc_calls, 3, "{st:?}");
}

/// Over UD without retries: a get that gave up, then another key's get,
/// which must answer with its own key's value (the late reply is stale).
#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_a_late_ud_reply_is_not_taken_for_the_next_get() {
    require_vm();
    let (_s, url) = rdma_server(&[]);
    let mut c = connect(&url);
    c.set(b"x", b"value-x", 0, 0).unwrap();
    c.set(b"y", b"value-y", 0, 0).unwrap();
    let o = ClientOptions { expire_attempts: 1, retries: 0, timeout: Duration::from_millis(300), ..opts() };
    let mut late = Client::with_options(&[&url], o).unwrap();
    assert!(late.get(b"x").is_err(), "the only attempt gives up at once");
    assert_eq!(late.get(b"y").unwrap().map(|i| i.value), Some(b"value-y".to_vec()));
    assert_eq!(late.get(b"x").unwrap().map(|i| i.value), Some(b"value-x".to_vec()));
    assert!(late.stats().stale >= 1, "{:?}", late.stats());
}

/// A multi-get whose reply spans several datagrams loses the last one (with
/// the NOOP) on its first attempt: the retry's answer alone is the result,
/// so every hit comes back exactly once.
#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn vm_a_retried_multi_get_returns_each_hit_once() {
    require_vm();
    let (_s, url) = rdma_server(&[]);
    let mut c = connect(&url);
    let keys: Vec<Vec<u8>> = (0..20).map(|i| format!("mg:{i}").into_bytes()).collect();
    for k in &keys {
        c.set(k, &[b'v'; 150], 0, 0).unwrap();
    }
    let o = ClientOptions { drop_noop_replies: 1, timeout: Duration::from_millis(300), ..opts() };
    let mut lossy = Client::with_options(&[&url], o).unwrap();
    let mut req = Vec::new();
    for k in &keys {
        wire::request(&mut req, wire::opcode::GETKQ, 0, &[], k, &[]);
    }
    wire::request(&mut req, wire::opcode::NOOP, 0, &[], &[], &[]);
    assert!(req.len() < 1000, "the request fits one datagram");
    let r = lossy.raw(&keys[0], &mut req, End::Noop).unwrap();
    assert_eq!(lossy.stats().retries, 1, "the lost NOOP datagram was retried");
    let mut got: Vec<Vec<u8>> = r.iter().map(|x| x.key.clone()).collect();
    assert_eq!(got.len(), keys.len(), "hits of the failed attempt kept: {got:?}");
    got.sort();
    got.dedup();
    assert_eq!(got.len(), keys.len());
}
