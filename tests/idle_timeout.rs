//! `-o idle_timeout=S`: connections idle longer than S seconds are closed,
//! as memcached closes them, and counted in `idle_kicks`; busy ones stay.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Whether the server closes an idle connection within `within` (EOF), and
/// how long it took.
fn closed_within(port: u16, within: Duration) -> Option<Duration> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(within)).unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 16];
    match c.read(&mut b) {
        Ok(0) => Some(t0.elapsed()),
        _ => None,
    }
}

#[test]
fn idle_connections_are_closed_and_counted_busy_ones_stay() {
    let s = Server::start(&["-o", "idle_timeout=1"]);
    // A client that sends a request every 300 ms for 4 s is never idle 1 s.
    let mut busy = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let idle = std::thread::spawn({
        let port = s.port;
        move || closed_within(port, Duration::from_secs(10))
    });
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        busy.write_all(b"version\r\n").unwrap();
        let mut b = [0u8; 64];
        let n = busy.read(&mut b).unwrap();
        assert!(b[..n].starts_with(b"VERSION "), "the busy connection stays open and answered");
        std::thread::sleep(Duration::from_millis(300)); // the client's own pace, not a wait for the server
    }
    let took = idle.join().unwrap().expect("the idle connection was closed");
    // Idle more than 1 s, found by a check once a second.
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "closed after {took:?}");
    let mut c = s.connect();
    assert_eq!(c.stats("").get("idle_kicks").map(String::as_str), Some("1"));
    assert_eq!(c.stats("settings").get("idle_timeout").map(String::as_str), Some("1"));
}

#[test]
fn memcached_closes_an_idle_connection_too() {
    if !peer(MEMCACHED_BIN, std::path::Path::new(MEMCACHED_BIN).exists()) {
        return;
    }
    let mc = Memcached::start_with(&["-o", "idle_timeout=1"]);
    let took = closed_within(mc.port, Duration::from_secs(10)).expect("memcached closed the idle connection");
    assert!(took >= Duration::from_secs(1), "memcached closed after {took:?}");
    let s = Server::start(&["-o", "idle_timeout=1"]);
    assert!(closed_within(s.port, Duration::from_secs(10)).is_some(), "and so do we");
}

#[test]
fn without_the_option_nothing_is_closed() {
    let s = Server::start(&[]);
    assert_eq!(closed_within(s.port, Duration::from_millis(2500)), None);
    assert_eq!(s.connect().stats("").get("idle_kicks").map(String::as_str), Some("0"));
}
