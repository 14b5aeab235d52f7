//! A multi-get that stops between hits at `Session::out_limit` and carries
//! on from the next key: the same reply bytes as one that never stops, and
//! never more than one hit past the limit per step.

use crate::memory::region::HugePages;
use crate::protocol::{step, Ctx, Session, Step};
use crate::runtime::{Runtime, Settings};
use crate::store::{SetArgs, SetMode, Store, StoreConfig};

fn fixture() -> (Store, Runtime) {
    let store =
        Store::new(&StoreConfig { memory_bytes: 4 << 20, max_item_size: 64 << 10, hugepages: HugePages::Off }).unwrap();
    store.set(&SetArgs::new(SetMode::Set, b"big", &[b'b'; 10_000], 7, 0)).unwrap();
    store.set(&SetArgs::new(SetMode::Set, b"s", b"v", 0, 0)).unwrap();
    (store, Runtime::new(Settings { threads: 1, ..Settings::default() }, 0))
}

/// Run `input` to the end with `limit` reply bytes allowed per step (the
/// connection's part); returns the output, the steps that paused, and the
/// most a step wrote.
fn run(store: &Store, rt: &Runtime, input: &[u8], limit: usize) -> (Vec<u8>, usize, usize) {
    let ctx = Ctx { store, stats: &rt.workers[0], rt };
    let (mut session, mut out, mut pos, mut paused, mut most) = (Session::default(), Vec::new(), 0, 0, 0);
    while pos < input.len() {
        session.out_limit = out.len().saturating_add(limit);
        let before = out.len();
        let s = step(&mut session, &input[pos..], &mut out, &ctx);
        most = most.max(out.len() - before);
        match s {
            Step::Consumed { len, .. } | Step::Discarded(len) => pos += len,
            Step::Paused => paused += 1,
            Step::NeedMore | Step::Close => break,
        }
    }
    assert!(session.resume.is_none(), "nothing left paused");
    (out, paused, most)
}

#[test]
fn a_paused_multiget_gives_the_same_bytes_one_hit_per_step_at_most() {
    let (store, rt) = fixture();
    let mut line = b"get".to_vec();
    for _ in 0..50 {
        line.extend_from_slice(b" big  nope s");
    }
    line.extend_from_slice(b"\r\nget s\r\n");
    let (whole, paused, _) = run(&store, &rt, &line, usize::MAX);
    assert_eq!(paused, 0);
    let hit = b"VALUE big 7 10000\r\n".len() + 10_002;
    assert_eq!(whole.len(), 50 * (hit + b"VALUE s 0 1\r\nv\r\n".len()) + 5 + 21);
    for limit in [0, 1, hit, 3 * hit] {
        let (out, paused, most) = run(&store, &rt, &line, limit);
        assert_eq!(out, whole, "limit {limit}");
        assert!(paused >= 50 * hit / (limit + hit + 30) - 1, "limit {limit}: {paused} pauses");
        assert!(most <= limit + hit + 30, "limit {limit}: a step wrote {most}");
    }
    for cmd in ["gets", "gat 100", "gats 100"] {
        let req = format!("{cmd} big s big big\r\n");
        assert_eq!(run(&store, &rt, req.as_bytes(), 0).0, run(&store, &rt, req.as_bytes(), usize::MAX).0, "{cmd}");
        assert_eq!(run(&store, &rt, req.as_bytes(), 0).1, 3, "{cmd}: a pause after each hit but the last");
    }
}

#[test]
fn a_bad_key_anywhere_answers_the_error_alone_before_any_hit() {
    let (store, rt) = fixture();
    let long = "k".repeat(251);
    for req in [format!("get big big {long}\r\n"), format!("gat 10 big {long} big\r\n")] {
        let (out, paused, _) = run(&store, &rt, req.as_bytes(), 0);
        assert_eq!(String::from_utf8_lossy(&out), "CLIENT_ERROR bad command line format\r\n");
        assert_eq!(paused, 0, "no hit was written, so nothing paused");
    }
    assert_eq!(run(&store, &rt, b"gat x big big\r\n", 0).0, b"CLIENT_ERROR invalid exptime argument\r\n");
    // Misses write nothing until END: no pause however many.
    let misses = format!("get{}\r\n", " nope".repeat(1000));
    assert_eq!(run(&store, &rt, misses.as_bytes(), 0), (b"END\r\n".to_vec(), 0, 5));
}
