//! `--sync-replicas` group commit on one connection: held replies keep
//! their order, go on one progress report, turn into their error when the
//! wait runs out, and never hold up another connection.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::memory::region::HugePages;
use crate::protocol::binary::header::test_request;
use crate::protocol::binary::opcode;
use crate::runtime::{Runtime, Settings};
use crate::store::{Store, StoreConfig, SyncReplicas};

const NOT_CONFIRMED: &[u8] = b"SERVER_ERROR stored, but not confirmed by the required replicas in time\r\n";

/// Replicas whose progress the test moves by hand.
struct Progress(Arc<AtomicU64>);

impl SyncReplicas for Progress {
    fn confirmed(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
}

fn fixture() -> (Store, Runtime, Arc<AtomicU64>) {
    let store = Store::new(&StoreConfig { memory_bytes: 4 << 20, max_item_size: 64 << 10, hugepages: HugePages::Off })
        .expect("store");
    let at = Arc::new(AtomicU64::new(0));
    store.set_sync_wait(Box::new(Progress(at.clone())));
    (store, Runtime::new(Settings { threads: 1, ..Settings::default() }, 0), at)
}

fn pair() -> (Conn, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (server, _) = l.accept().expect("accept");
    server.set_nonblocking(true).expect("nonblocking");
    client.set_nonblocking(true).expect("nonblocking");
    (Conn::new(crate::server::listen::Stream::Tcp(server)), client)
}

/// What the client has received (loopback delivers as the server sends).
fn received(client: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(k @ 1..) = client.read(&mut buf) {
        got.extend_from_slice(&buf[..k]);
    }
    got
}

/// Send `bytes` and serve them as the worker does on readiness.
fn request(conn: &mut Conn, client: &mut TcpStream, bytes: &[u8], ctx: &Ctx, scratch: &mut Scratch) -> Next {
    std::io::Write::write_all(client, bytes).expect("sending");
    conn.on_ready(ctx, scratch)
}

#[test]
fn a_read_after_a_held_write_waits_behind_it_and_one_report_releases_all() {
    let (store, rt, at) = fixture();
    let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
    let (mut conn, mut client) = pair();
    let mut scratch = Scratch::default();
    let reqs = b"set a 0 0 1\r\n1\r\nset b 0 0 1 noreply\r\n2\r\nget a b\r\nset c 0 0 1\r\n3\r\n";
    let next = request(&mut conn, &mut client, reqs, &ctx, &mut scratch);
    assert_eq!(next, Next::Read, "held output does not wait for the socket");
    assert!(conn.holding());
    assert_eq!(received(&mut client), b"", "the get's reply waits behind the held set");
    // Progress short of the first write's end releases nothing.
    let head = store.log().head();
    at.store(1, Ordering::Release);
    assert!(!conn.settle(store.sync_confirmed(), Instant::now(), &ctx));
    // One report past every write releases every reply, in order.
    at.store(head, Ordering::Release);
    assert!(conn.settle(store.sync_confirmed(), Instant::now(), &ctx));
    assert!(!conn.holding());
    conn.on_ready(&ctx, &mut scratch);
    let want: &[u8] = b"STORED\r\nVALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nEND\r\nSTORED\r\n";
    assert_eq!(received(&mut client), want);
    assert_eq!(store.snapshot().sync_timeouts, 0);
}

#[test]
fn a_held_write_whose_wait_runs_out_gets_the_error_in_its_place() {
    let (store, rt, _at) = fixture();
    let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
    let (mut conn, mut client) = pair();
    let mut scratch = Scratch::default();
    let reqs = b"set a 0 0 1\r\n1\r\nset b 0 0 1 noreply\r\n2\r\nms c 1 q\r\n3\r\nget a\r\n";
    request(&mut conn, &mut client, reqs, &ctx, &mut scratch);
    assert!(!conn.settle(0, Instant::now(), &ctx), "not yet");
    assert!(conn.settle(0, Instant::now() + Duration::from_secs(61), &ctx));
    conn.on_ready(&ctx, &mut scratch);
    // The text set's error, nothing for noreply, meta's error despite q;
    // the write itself stands (as when the wait was in the request).
    let want = [NOT_CONFIRMED, NOT_CONFIRMED, b"VALUE a 0 1\r\n1\r\nEND\r\n"].concat();
    assert_eq!(received(&mut client), want);
    assert_eq!(store.snapshot().sync_timeouts, 3, "every write counts, the silent one too");
}

#[test]
fn a_quiet_binary_write_holds_the_noop_after_it_and_still_gets_its_error() {
    let (store, rt, at) = fixture();
    let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
    let (mut conn, mut client) = pair();
    let mut scratch = Scratch::default();
    let setq = test_request(opcode::SETQ, b"k", &[0; 8], b"v");
    let noop = test_request(opcode::NOOP, b"", &[], b"");
    request(&mut conn, &mut client, &[setq.clone(), noop.clone()].concat(), &ctx, &mut scratch);
    assert_eq!(received(&mut client), b"", "the NOOP waits for the SETQ");
    at.store(store.log().head(), Ordering::Release);
    assert!(conn.settle(store.sync_confirmed(), Instant::now(), &ctx));
    conn.on_ready(&ctx, &mut scratch);
    let got = received(&mut client);
    assert_eq!((got.len(), got[1], got[7]), (24, opcode::NOOP, 0), "only the NOOP's reply");
    // Now one that times out: its error, then the NOOP's reply.
    request(&mut conn, &mut client, &[setq, noop].concat(), &ctx, &mut scratch);
    assert!(conn.settle(0, Instant::now() + Duration::from_secs(61), &ctx));
    conn.on_ready(&ctx, &mut scratch);
    let got = received(&mut client);
    assert_eq!((got[1], u16::from_be_bytes([got[6], got[7]])), (opcode::SETQ, 0x86));
    let error_len = 24 + u32::from_be_bytes([got[8], got[9], got[10], got[11]]) as usize;
    assert_eq!((got.len() - error_len, got[error_len + 1]), (24, opcode::NOOP));
}

#[test]
fn a_held_write_does_not_hold_up_another_connection() {
    let (store, rt, _at) = fixture();
    let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
    let (mut writer, mut w) = pair();
    let (mut reader, mut r) = pair();
    let mut scratch = Scratch::default();
    request(&mut writer, &mut w, b"set k 0 0 1\r\nx\r\n", &ctx, &mut scratch);
    assert!(writer.holding());
    request(&mut reader, &mut r, b"get k\r\n", &ctx, &mut scratch);
    assert_eq!(received(&mut r), b"VALUE k 0 1\r\nx\r\nEND\r\n", "served at once");
    assert_eq!(received(&mut w), b"");
}

#[test]
fn held_replies_are_bounded_in_number() {
    let (store, rt, _at) = fixture();
    let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
    let (mut conn, mut client) = pair();
    let mut scratch = Scratch::default();
    let many = b"set k 0 0 1 noreply\r\nx\r\n".repeat(MAX_HELD + 10);
    let mut next = request(&mut conn, &mut client, &many, &ctx, &mut scratch);
    for _ in 0..100 {
        next = conn.on_ready(&ctx, &mut scratch);
    }
    assert_eq!(conn.held.len(), MAX_HELD);
    assert_eq!(next, Next::Write, "stalled, and comes back");
    assert!(conn.settle(u64::MAX, Instant::now(), &ctx));
    conn.on_ready(&ctx, &mut scratch);
    assert_eq!(conn.held.len(), 10, "the rest ran once the first went");
}
