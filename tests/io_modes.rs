//! `--io auto|uring|epoll`: which worker loop the server runs, that it says
//! so, and that each mode really is the loop it names (the TCP suites run
//! under both through LOGMEMCACHED_TEST_IO, see tests/run-all.sh).
mod common;
use common::*;

/// The anon-inode kinds among the server's open descriptors
/// (`[eventpoll]`, `[io_uring]`, `[eventfd]`...).
fn anon_inodes(pid: u32) -> Vec<String> {
    let mut kinds = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("reading the server's /proc fd table") {
        if let Ok(target) = std::fs::read_link(e.unwrap().path()) {
            let t = target.to_string_lossy().to_string();
            if let Some(k) = t.strip_prefix("anon_inode:") {
                kinds.push(k.to_string());
            }
        }
    }
    kinds
}

fn round_trip(s: &Server) {
    let mut c = s.connect();
    assert_eq!(c.cmd("set k 0 0 5\r\nhello\r\n"), "STORED\r\n");
    c.send(b"get k\r\n");
    assert_eq!(c.until("END\r\n"), ["VALUE k 0 5\r\n", "hello\r\n", "END\r\n"]);
}

#[test]
fn epoll_mode_uses_epoll_and_no_ring() {
    let s = Server::start(&["--io", "epoll", "-t", "2"]);
    round_trip(&s);
    let kinds = anon_inodes(s.pid());
    assert_eq!(kinds.iter().filter(|k| *k == "[eventpoll]").count(), 2, "one epoll set per worker: {kinds:?}");
    assert!(!kinds.iter().any(|k| k == "[io_uring]"), "no io_uring under --io epoll: {kinds:?}");
    assert_eq!(s.connect().stats("settings")["io_mode"], "epoll");
}

#[test]
fn uring_mode_uses_a_ring_per_worker_and_no_epoll() {
    let s = Server::start(&["--io", "uring", "-t", "2"]);
    round_trip(&s);
    let kinds = anon_inodes(s.pid());
    assert_eq!(kinds.iter().filter(|k| *k == "[io_uring]").count(), 2, "one ring per worker: {kinds:?}");
    assert!(!kinds.iter().any(|k| k == "[eventpoll]"), "no epoll set under --io uring: {kinds:?}");
    let mut c = s.connect();
    assert_eq!(c.stats("settings")["io_mode"], "uring");
    assert_eq!(c.stats("")["io_mode"], "uring");
}

#[test]
fn auto_says_which_loop_it_chose_and_stats_agree() {
    let log = std::env::temp_dir().join(format!("lm-io-auto-{}.err", std::process::id()));
    let s = Server::start_after(&format!("exec 2>{}", log.display()), &["--io", "auto"]);
    round_trip(&s);
    let chosen = s.connect().stats("settings")["io_mode"].clone();
    let text = std::fs::read_to_string(&log).expect("reading the server's stderr");
    let _ = std::fs::remove_file(&log);
    assert!(chosen == "uring" || chosen == "epoll", "io_mode {chosen}");
    assert!(text.contains(&format!("--io auto: {chosen}")), "the log says the choice ({chosen}): {text}");
    // This kernel has io_uring, and nothing here forbids it: auto takes it.
    if uring_usable() {
        assert_eq!(chosen, "uring");
    }
}

/// Whether io_uring is usable from this process (the server's probe does
/// the same).
fn uring_usable() -> bool {
    logmemcached::memory::uring::probe().is_ok()
}

#[test]
fn a_reply_before_quit_is_delivered_before_the_close() {
    // The uring loop closes a socket only after its staged sends have gone.
    let s = Server::start(&["--io", "uring"]);
    let mut c = s.connect();
    let value = "v".repeat(300_000);
    assert_eq!(c.cmd(&format!("set big 0 0 {}\r\n{value}\r\n", value.len())), "STORED\r\n");
    c.send(b"get big\r\nquit\r\n");
    assert_eq!(c.line(), format!("VALUE big 0 {}\r\n", value.len()));
    let got = c.bytes(value.len() + 2);
    assert!(got == format!("{value}\r\n").into_bytes(), "the value arrives whole");
    assert_eq!(c.line(), "END\r\n");
    assert!(c.closed(), "then the server closes");
}

#[test]
fn a_bad_io_mode_is_a_usage_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logmemcached"))
        .args(["serve", "--io", "kqueue", "-p", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--io takes auto, uring or epoll"));
}

#[test]
fn uring_with_busy_polling_takes_submissions_through_sqpoll() {
    let s = Server::start(&["--io", "uring", "--poll", "busy", "-t", "1"]);
    round_trip(&s);
    // SQPOLL's kernel thread is one of the server's threads (iou-sqp-PID).
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", s.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    assert!(threads.iter().any(|t| t.starts_with("iou-sqp")), "an SQPOLL thread: {threads:?}");
    let mut c = s.connect();
    let replies = c.pipeline(&"get k\r\n".repeat(500), 1500);
    assert!(replies.chunks(3).all(|r| r == ["VALUE k 0 5\r\n", "hello\r\n", "END\r\n"]));
    assert_eq!(c.stats("settings")["poll_mode"], "busy");
}
