//! A connection driven by hand over loopback sockets whose kernel buffers
//! are made small, so what the client leaves unread stays in the
//! connection's own buffers, where the bounds apply.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;

use nix::sys::socket::{connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

use super::*;
use crate::memory::region::HugePages;
use crate::runtime::{Runtime, Settings};
use crate::stats::counter;
use crate::store::{SetArgs, SetMode, Store, StoreConfig};

const VALUE: usize = 20_000;
/// Socket buffer sizes: small against the replies here, but not below the
/// loopback MSS, where TCP's window updates (and so these tests) crawl.
const KERNEL_BUF: usize = 128 << 10;

fn fixture(output_budget: usize) -> (Store, Runtime) {
    let store = Store::new(&StoreConfig { memory_bytes: 4 << 20, max_item_size: 64 << 10, hugepages: HugePages::Off })
        .expect("store");
    store.set(&SetArgs::new(SetMode::Set, b"v", &[b'v'; VALUE], 0, 0)).expect("set");
    (store, Runtime::new(Settings { threads: 1, output_budget, ..Settings::default() }, 0))
}

/// A served connection and its client, with small socket buffers.
fn pair() -> (Conn, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    setsockopt(&fd, sockopt::RcvBuf, &KERNEL_BUF).expect("SO_RCVBUF");
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::new(127, 0, 0, 1, port)).expect("connect");
    let (server, _) = l.accept().expect("accept");
    setsockopt(&server, sockopt::SndBuf, &KERNEL_BUF).expect("SO_SNDBUF");
    server.set_nonblocking(true).expect("nonblocking");
    let client = TcpStream::from(fd);
    client.set_nonblocking(true).expect("nonblocking");
    (Conn::new(server), client)
}

fn send(client: &mut TcpStream, bytes: &[u8]) {
    std::io::Write::write_all(client, bytes).expect("sending");
}

/// Everything the client can read now.
fn read_some(client: &mut TcpStream, into: &mut Vec<u8>) -> usize {
    let mut buf = [0u8; 64 << 10];
    let mut n = 0;
    while let Ok(k @ 1..) = client.read(&mut buf) {
        into.extend_from_slice(&buf[..k]);
        n += k;
    }
    n
}

/// The reply to `get` naming `v` `hits` times.
fn expected(hits: usize) -> Vec<u8> {
    let one = [format!("VALUE v 0 {VALUE}\r\n").into_bytes(), vec![b'v'; VALUE], b"\r\n".to_vec()].concat();
    [one.repeat(hits), b"END\r\n".to_vec()].concat()
}

/// Whether the worker would call `on_ready` now: the socket is ready for
/// what the connection last asked to wait for (its epoll interest).
fn ready(conn: &Conn, next: &Next) -> bool {
    use nix::poll::{poll, PollFd, PollFlags};
    use std::os::fd::AsFd;
    let want = if *next == Next::Write { PollFlags::POLLOUT } else { PollFlags::POLLIN };
    let mut fds = [PollFd::new(conn.stream.as_fd(), want)];
    poll(&mut fds, 0u16).expect("poll") > 0
}

/// Serve `conn` as a worker would (on each readiness event, starting from
/// what it last asked to wait for) while the client reads all it can,
/// until `want` bytes arrived.
fn serve_until(
    conn: &mut Conn,
    mut next: Next,
    client: &mut TcpStream,
    ctx: &Ctx,
    scratch: &mut Scratch,
    want: usize,
) -> Vec<u8> {
    let mut got = Vec::new();
    let mut rounds = 0;
    while got.len() < want {
        if ready(conn, &next) {
            next = conn.on_ready(ctx, scratch);
            assert_ne!(next, Next::Close);
        }
        assert!(conn.out.len() <= CONN_OUTPUT_CAP + EVENT_QUANTUM + VALUE + 100, "held {}", conn.out.len());
        read_some(client, &mut got);
        rounds += 1;
        assert!(
            rounds < 1_000_000,
            "no progress: {} of {want} bytes; {next:?} pending {} stalled {} in {}/{}",
            got.len(),
            conn.pending_out(),
            conn.stalled,
            conn.in_pos,
            conn.input.len()
        );
    }
    got
}

#[test]
fn an_idle_connection_holds_no_buffer() {
    let (store, rt) = fixture(usize::MAX);
    let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
    let (mut conn, mut client) = pair();
    let mut scratch = Scratch::default();
    assert_eq!((conn.input.capacity(), conn.out.capacity()), (0, 0), "nothing at accept");
    send(&mut client, b"set k 0 0 1\r\nx\r\nget k\r\nget v\r\nget");
    let want = b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n".len() + expected(1).len();
    let got = serve_until(&mut conn, Next::Read, &mut client, &ctx, &mut scratch, want);
    assert!(got.ends_with(&expected(1)));
    assert_eq!(conn.input, b"get", "only the partial request is kept");
    send(&mut client, b" k\r\n");
    serve_until(&mut conn, Next::Read, &mut client, &ctx, &mut scratch, b"VALUE k 0 1\r\nx\r\nEND\r\n".len());
    assert_eq!((conn.input.capacity(), conn.out.capacity()), (0, 0), "given back after the burst");
    assert!(scratch.out.capacity() > 0, "the reply buffer went back to the worker");
    assert_eq!((rt.buffers.output.load(Ordering::Relaxed), rt.buffers.input.load(Ordering::Relaxed)), (0, 0));
}

#[test]
fn a_multiget_nobody_reads_stops_at_one_share_and_finishes_as_it_is_read() {
    let (store, rt) = fixture(usize::MAX);
    let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
    let (mut conn, mut client) = pair();
    let mut scratch = Scratch::default();
    // 20 MB of reply to 2 KB of request.
    let hits = 1000;
    send(&mut client, &[b"get".to_vec(), b" v".repeat(hits), b"\r\n".to_vec()].concat());
    let mut next = Next::Read;
    for _ in 0..100 {
        if ready(&conn, &next) {
            next = conn.on_ready(&ctx, &mut scratch);
        }
    }
    assert_eq!(next, Next::Write);
    let held = conn.out.len();
    assert!(held <= EVENT_QUANTUM + VALUE + 100, "held {held} with nobody reading");
    assert_eq!(rt.buffers.output.load(Ordering::Relaxed) as usize, held, "counted");
    let got = serve_until(&mut conn, next, &mut client, &ctx, &mut scratch, expected(hits).len());
    assert!(got == expected(hits), "every byte, in order");
    assert!(counter(&rt.workers, "conn_yields") > 0);
}

#[test]
fn with_the_budget_spent_by_others_a_connection_still_progresses_one_reply_at_a_time() {
    let (store, rt) = fixture(1 << 20);
    // Other connections hold the whole budget and never read.
    rt.buffers.output.store(1 << 20, Ordering::Relaxed);
    let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
    let (mut conn, mut client) = pair();
    let mut scratch = Scratch::default();
    send(&mut client, &[b"get v v v v v\r\n".repeat(20), b"get v v\r\n".to_vec()].concat());
    let mut next = Next::Read;
    for _ in 0..10 {
        if ready(&conn, &next) {
            next = conn.on_ready(&ctx, &mut scratch);
        }
    }
    assert!(conn.out.len() <= VALUE + 100, "one hit at a time: held {}", conn.out.len());
    assert!(counter(&rt.workers, "output_budget_waits") > 0);
    let want = expected(5).len() * 20 + expected(2).len();
    let got = serve_until(&mut conn, next, &mut client, &ctx, &mut scratch, want);
    assert!(got == [expected(5).repeat(20), expected(2)].concat());
    conn.release(&ctx);
    assert_eq!(rt.buffers.output.load(Ordering::Relaxed), 1 << 20, "its share is back out");
}

#[test]
fn a_client_that_reads_slowly_does_not_grow_the_buffer_by_what_it_took() {
    let (store, rt) = fixture(usize::MAX);
    let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
    let (mut conn, mut client) = pair();
    let mut scratch = Scratch::default();
    let n = 2000;
    send(&mut client, &b"get v\r\n".repeat(n));
    let (mut got, mut most, mut next) = (Vec::new(), 0, Next::Read);
    while got.len() < expected(1).len() * n {
        if ready(&conn, &next) {
            next = conn.on_ready(&ctx, &mut scratch);
        }
        most = most.max(conn.out.len());
        // A few KiB a round: always behind.
        let mut buf = [0u8; 3000];
        if let Ok(k) = client.read(&mut buf) {
            got.extend_from_slice(&buf[..k]);
        }
    }
    assert!(got == expected(1).repeat(n));
    assert!(most <= 2 * (CONN_OUTPUT_CAP + EVENT_QUANTUM), "the buffer reached {most}");
}
