//! A hint to the CPU to start loading a cache line we will read soon: a
//! restart's rebuild issues the table misses of a whole batch (and the log
//! bytes ahead of its scan) before it needs any of them, so they overlap.

/// Start fetching the cache line holding `at` into every cache level. A
/// hint only: it never faults, whatever the address, and changes nothing a
/// program can observe but time.
#[inline(always)]
pub fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 (SSE, part of x86_64's baseline) reads no memory
    // architecturally: it cannot fault or trap on any address, mapped or not.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast::<i8>())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_address_is_only_a_hint() {
        let v = vec![3u8; 4096];
        prefetch(v.as_ptr());
        prefetch(v.as_ptr().wrapping_add(1 << 40));
        prefetch(std::ptr::null::<u64>());
        assert!(v.iter().all(|&b| b == 3));
    }
}
