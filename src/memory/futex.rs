//! Futex wait and wake on a 32-bit word in shared memory: the doorbell a
//! primary rings to wake a sleeping `shm` replica (replication::shm). The
//! word lives in a file mapping both processes have (the primary's region),
//! so these are the shared (not `FUTEX_PRIVATE_FLAG`) operations; the kernel
//! keys them by the file page, and a wake needs only read access to it.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woke {
    /// A wake (or a spurious return, a signal): look again.
    Rung,
    /// The word no longer held the value expected: it moved before we slept.
    Moved,
    /// The timeout ran out.
    TimedOut,
}

/// Sleep while `word` holds `expected`, for at most `timeout`. The kernel
/// compares and sleeps atomically against [`wake`], so a waker that changes
/// the word before waking is never missed.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> Woke {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, 4-aligned u32 (an AtomicU32 reference) for
    // the call's duration; FUTEX_WAIT only reads it; `ts` is a valid timespec
    // on our stack; the unused arguments (uaddr2, val3) are ignored by
    // FUTEX_WAIT.
    let r = unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &ts as *const libc::timespec, 0, 0)
    };
    if r == 0 {
        return Woke::Rung;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Woke::Moved,
        Some(libc::ETIMEDOUT) => Woke::TimedOut,
        _ => Woke::Rung,
    }
}

/// Wake every waiter on `word` (in any process mapping the same page);
/// returns how many were woken.
pub fn wake(word: &AtomicU32) -> usize {
    // SAFETY: `word` is a live, 4-aligned u32 for the call's duration;
    // FUTEX_WAKE does not touch its contents; the remaining arguments are
    // ignored by FUTEX_WAKE.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX, 0usize, 0, 0) };
    usize::try_from(r).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn a_moved_word_does_not_sleep_and_a_wake_ends_a_wait() {
        let w = Arc::new(AtomicU32::new(7));
        assert_eq!(wait(&w, 6, Duration::from_secs(3600)), Woke::Moved);
        assert_eq!(wait(&w, 7, Duration::from_micros(1)), Woke::TimedOut);
        assert_eq!(wake(&w), 0, "nobody waits");
        // A waiter that sleeps until the word moves: the waker bumps it, then
        // wakes. Whichever comes first, the waiter returns (a wake before its
        // sleep leaves the word moved, so it does not sleep).
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            let mut rounds = 0;
            while w2.load(Ordering::Acquire) == 7 {
                wait(&w2, 7, Duration::from_secs(3600));
                rounds += 1;
            }
            rounds
        });
        w.fetch_add(1, Ordering::Release);
        wake(&w);
        let rounds = t.join().expect("the waiter");
        assert!(rounds <= 1, "woken in at most one wait, took {rounds}");
    }
}
