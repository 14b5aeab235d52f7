//! Random identifiers: a log's incarnation, a replica's id, a client's
//! request ids. Unpredictable is nice; distinct is what matters (a restarted
//! primary must not reuse its incarnation, two replicas must not share an id).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// A random u64 from the operating system (getrandom(2), or what the
/// platform has instead). Fails only where the OS has no source at all
/// (or a sandbox forbids it).
pub fn try_random_u64() -> Result<u64> {
    getrandom::u64().map_err(|e| Error::new(format!("no random numbers from the OS: {e}")))
}

/// A random non-zero u64 (the low bit is always set: ids use 0 for "none").
///
/// From the OS when it can give one; otherwise (see [`try_random_u64`]) a
/// fallback that is distinct rather than unpredictable: the wall clock in
/// nanoseconds, the process id and a per-process counter, mixed. It never fails.
pub fn random_u64() -> u64 {
    match try_random_u64() {
        Ok(r) => r | 1,
        Err(_) => fallback() | 1,
    }
}

fn fallback() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    splitmix64(t ^ ((std::process::id() as u64) << 32) ^ splitmix64(n))
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_non_zero_and_distinct() {
        let a: Vec<u64> = (0..64).map(|_| random_u64()).collect();
        assert!(a.iter().all(|&x| x != 0 && x & 1 == 1));
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(b.len(), a.len(), "64 random ids collided");
        // This host has an OS source; the fallback is for those without.
        assert!(try_random_u64().is_ok());
    }

    #[test]
    fn the_fallback_is_distinct_call_to_call() {
        let a: Vec<u64> = (0..64).map(|_| fallback()).collect();
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(b.len(), a.len());
    }
}
