//! A loom model of the log's publish / clean / read protocol (invariant 2
//! of `src/log/mod.rs`): the cleaner advances `tail` and only then
//! overwrites the space it freed; a reader copies a record, then re-checks
//! `tail`, and keeps the copy only if the tail is still at or below the
//! record (a replica over shm: `ShmTransport::read_ahead_checked`).
//!
//! A Release store of the tail does not order the stores after it, and
//! loads before an Acquire load are not ordered by it either: the writer
//! needs a fence between its tail store and its overwrite, the reader one
//! between its copy and its re-check (`LogWriter::publish_tail` and the
//! shm transport have them). The model is the protocol on a log of four
//! words (two records of [position, payload] each) with loom's atomics; the
//! variants without either fence must fail (loom finds the torn copy that
//! is accepted), the one with both must pass.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --test loom_log`
//! (tests/run-all.sh does)
//! (without `--cfg loom` this file is empty).
#![cfg(loom)]

use loom::sync::atomic::{fence, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Log capacity in words; a record is two words: [position, payload].
const CAP: u64 = 4;
const REC: u64 = 2;

/// What the record at `pos` carries: a reader can tell whose bytes it has.
fn payload(pos: u64) -> u64 {
    pos * 1000 + 7
}

struct Log {
    head: AtomicU64,
    tail: AtomicU64,
    words: [AtomicU64; CAP as usize],
}

#[derive(Clone, Copy)]
struct Fences {
    writer: bool,
    reader: bool,
}

impl Log {
    fn word(&self, pos: u64) -> &AtomicU64 {
        &self.words[(pos % CAP) as usize]
    }

    /// The single writer: append a record at `pos` (= head), reclaiming
    /// from the tail first when the log is full.
    fn append(&self, pos: u64, f: Fences) {
        let tail = self.tail.load(Ordering::Relaxed);
        if pos + REC - tail > CAP {
            // Reclaim the oldest record: publish the new tail, then reuse.
            self.tail.store(tail + REC, Ordering::Release);
            if f.writer {
                fence(Ordering::SeqCst);
            }
        }
        self.word(pos).store(pos, Ordering::Relaxed);
        self.word(pos + 1).store(payload(pos), Ordering::Relaxed);
        // Invariant 1: the record is complete before head moves past it.
        self.head.store(pos + REC, Ordering::Release);
    }

    /// A reader copying the record at `pos` (below the head it saw);
    /// returns the payload it accepted, if any.
    fn read(&self, pos: u64, f: Fences) -> Option<u64> {
        if self.head.load(Ordering::Acquire) < pos + REC {
            return None;
        }
        let stamped = self.word(pos).load(Ordering::Relaxed);
        let value = self.word(pos + 1).load(Ordering::Relaxed);
        if f.reader {
            fence(Ordering::Acquire);
        }
        // The re-check: space at or above the tail was not reused.
        if self.tail.load(Ordering::Relaxed) > pos {
            return None;
        }
        // Validation: the record says it is at `pos`.
        (stamped == pos).then_some(value)
    }
}

fn model(f: Fences) {
    loom::model(move || {
        let log = Arc::new(Log {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            words: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        });
        // Two records fill the log before the reader starts.
        log.append(0, f);
        log.append(REC, f);
        let w = log.clone();
        let writer = thread::spawn(move || {
            // The third record reclaims the first and overwrites its words.
            w.append(2 * REC, f);
        });
        // A lagging reader copies the oldest record while that happens.
        if let Some(v) = log.read(0, f) {
            assert_eq!(v, payload(0), "torn read accepted: the record at 0 carried the payload of another");
        }
        writer.join().unwrap();
    });
}

#[test]
fn with_both_fences_no_torn_read_is_accepted() {
    model(Fences { writer: true, reader: true });
}

#[test]
#[should_panic(expected = "torn read accepted")]
fn without_fences_a_torn_read_is_accepted() {
    model(Fences { writer: false, reader: false });
}

#[test]
#[should_panic(expected = "torn read accepted")]
fn the_writers_fence_alone_is_not_enough() {
    model(Fences { writer: true, reader: false });
}

#[test]
#[should_panic(expected = "torn read accepted")]
fn the_readers_fence_alone_is_not_enough() {
    model(Fences { writer: false, reader: true });
}
