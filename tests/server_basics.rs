//! The server process itself: start, serve, pipeline, shut down cleanly.
mod common;
use common::*;

#[test]
fn serves_and_stops_cleanly_on_sigterm() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_eq!(c.cmd("set k 1 0 1\r\nv\r\n"), "STORED\r\n");
    assert!(c.cmd("version\r\n").starts_with("VERSION 1.6."));
    let st = s.stop();
    assert!(st.success(), "exit status {st}");
}

#[test]
fn pipelined_requests_in_one_write_all_answered_in_order() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    let mut req = String::new();
    for i in 0..200 {
        req.push_str(&format!("set k{i} 0 0 {}\r\nv{i}\r\n", format!("v{i}").len()));
    }
    for i in 0..200 {
        req.push_str(&format!("get k{i}\r\n"));
    }
    c.send(req.as_bytes());
    for _ in 0..200 {
        assert_eq!(c.line(), "STORED\r\n");
    }
    for i in 0..200 {
        assert_eq!(c.line(), format!("VALUE k{i} 0 {}\r\n", format!("v{i}").len()));
        assert_eq!(c.line(), format!("v{i}\r\n"));
        assert_eq!(c.line(), "END\r\n");
    }
}

#[test]
fn byte_at_a_time_requests_are_reassembled() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    for b in b"set slow 0 0 5\r\nhello\r\nget slow\r\n" {
        c.send(&[*b]);
    }
    assert_eq!(c.line(), "STORED\r\n");
    assert_eq!(c.until("END\r\n"), ["VALUE slow 0 5\r\n", "hello\r\n", "END\r\n"]);
}

#[test]
fn connection_limit_refuses_with_memcached_error() {
    let s = Server::start(&["-c", "2"]);
    // The readiness probe's connection may not be reaped yet: retry until
    // two connections are admitted.
    let admitted = || loop {
        let mut c = s.connect();
        if c.cmd("version\r\n").starts_with("VERSION") {
            return c;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let a = admitted();
    let _b = admitted();
    let mut c = s.connect();
    assert_eq!(c.line(), "ERROR Too many open connections\r\n");
    assert!(c.closed());
    drop(a);
    // The slot frees once the server notices the close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut d = s.connect();
        d.send(b"version\r\n");
        let l = d.line();
        if l.starts_with("VERSION") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed: {l:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_client_that_never_reads_cannot_grow_server_memory() {
    let s = Server::start(&["-m", "8"]);
    let mut w = s.connect();
    assert_eq!(w.cmd(&format!("set big 0 0 {}\r\n{}\r\n", 100_000, "x".repeat(100_000))), "STORED\r\n");
    // Ask for ~200 MB of replies and never read them.
    let mut hog = s.connect();
    let req = "get big\r\n".repeat(2000);
    hog.stream.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while sent < req.len() && std::time::Instant::now() < deadline {
        match std::io::Write::write(&mut hog.stream, &req.as_bytes()[sent..]) {
            Ok(n) => sent += n,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    // Others are still served while the hog's replies pile up.
    let mut other = s.connect();
    assert_eq!(other.cmd("set o 0 0 1\r\n1\r\n"), "STORED\r\n");
    assert_eq!(other.cmd("get o\r\n"), "VALUE o 0 1\r\n");
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(rss_kb < 64 * 1024, "server RSS grew to {rss_kb} kB with an unread 200 MB of replies");
}

#[test]
fn a_second_server_on_the_same_port_is_refused() {
    let first = Server::start(&[]);
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_logmemcached"))
        .args(["serve", "-p", &first.port.to_string(), "-l", "127.0.0.1", "--hugepages", "off", "-t", "2"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running a second server");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(st) = second.try_wait().expect("waiting for the second server") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second server started on port {} and kept running", first.port);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut err).expect("reading stderr");
    assert!(!status.success(), "a second server on port {} exited with success", first.port);
    assert!(err.contains("EADDRINUSE") && err.contains("another server"), "{err}");
    // The first one still answers, alone on its port.
    let mut c = first.connect();
    c.send(b"set k 0 0 1\r\nv\r\nget k\r\n");
    assert_eq!(c.line(), "STORED\r\n");
    assert_eq!(c.line(), "VALUE k 0 1\r\n");
}
