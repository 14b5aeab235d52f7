//! `--sync-replicas` as group commit, through a real server process (shm):
//! a write's reply waits in its own connection's output, in order with the
//! replies after it, and never holds up another connection.

mod common;
use common::*;

fn primary(tag: &str, timeout_ms: &str) -> (Server, String) {
    let url = format!("shm://t{}-{tag}", std::process::id());
    let args =
        ["-t", "1", "-m", "16", "--replication-listen", &url, "--sync-replicas", "1", "--sync-timeout", timeout_ms];
    (Server::start(&args), url)
}

/// Whether the server has sent this client anything it has not read.
fn has_input(c: &mut Client) -> bool {
    c.stream.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    let r = c.stream.peek(&mut b);
    c.stream.set_nonblocking(false).expect("blocking");
    match r {
        Ok(n) => n > 0,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("peek: {e}"),
    }
}

#[test]
fn with_the_replica_dead_only_the_writers_connection_waits() {
    // One worker: before group commit the held write stalled it, and the
    // other connection's gets came only after the 5 s timeout.
    let (p, _) = primary("dead", "5000");
    let mut writer = p.connect();
    let mut reader = p.connect();
    writer.send(b"set a 0 0 1\r\nx\r\nget a\r\n");
    // The write is applied at once; only its reply waits. Nothing orders
    // the writer's set before the reader's first get (two sockets), so
    // wait for it to land, well inside the 5 s timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        reader.send(b"get a\r\n");
        if reader.until("END\r\n").len() == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the held write was never applied");
    }
    for _ in 0..50 {
        reader.send(b"get a\r\n");
        assert_eq!(reader.until("END\r\n"), ["VALUE a 0 1\r\n", "x\r\n", "END\r\n"]);
    }
    assert!(!has_input(&mut writer), "the writer's replies wait for the replica (or the 5 s timeout)");
    assert_eq!(reader.stats("")["sync_timeouts"], "0");
    // Then the error in the set's place, and the get's reply after it.
    assert_eq!(writer.line(), "SERVER_ERROR stored, but not confirmed by the required replicas in time\r\n");
    assert_eq!(writer.until("END\r\n"), ["VALUE a 0 1\r\n", "x\r\n", "END\r\n"]);
    assert_eq!(reader.stats("")["sync_timeouts"], "1");
}

#[test]
fn with_a_live_replica_pipelined_writes_and_reads_come_back_in_order() {
    let (p, url) = primary("live", "20000");
    let r = Server::start(&["-m", "16", "--replica-of", &url]);
    let mut c = p.connect();
    let n = 200;
    let reqs: String = (0..n).map(|i| format!("set k{i} 0 0 {}\r\n{i}\r\nget k{i}\r\n", i.to_string().len())).collect();
    c.send(reqs.as_bytes());
    for i in 0..n {
        assert_eq!(c.line(), "STORED\r\n", "reply {i}");
        assert_eq!(
            c.until("END\r\n"),
            [format!("VALUE k{i} 0 {}\r\n", i.to_string().len()), format!("{i}\r\n"), "END\r\n".into()]
        );
    }
    // A held write's reply still goes out before a quit closes.
    let mut q = p.connect();
    q.send(b"set q 0 0 1\r\nx\r\nquit\r\n");
    assert_eq!(q.line(), "STORED\r\n");
    assert!(q.closed());
    assert_eq!(c.stats("")["sync_timeouts"], "0");
    let mut rc = r.connect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rc.stats("")["curr_items"] != (n + 1).to_string() {
        assert!(std::time::Instant::now() < deadline, "the replica never held every item");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
