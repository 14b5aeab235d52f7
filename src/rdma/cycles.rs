//! A cycle counter for timing single verbs operations, as perftest does
//! (`get_cycles`). `Instant::now()` is a system call wherever the kernel's
//! clocksource has no vDSO path (HPET, as in the QEMU/TCG test VM), and two
//! of them per operation would be timed along with the operation.

use std::time::Instant;

/// The CPU's time-stamp counter, or the monotonic clock in nanoseconds
/// where there is none.
#[inline]
pub fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC reads a counter; it touches no memory and every
        // x86_64 CPU has it.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Converts counter ticks to microseconds, from a wall-clock interval that
/// brackets the measured ones (start with `Calibration::start`, finish with
/// `per_us` after the work).
pub struct Calibration {
    wall: Instant,
    ticks: u64,
}

impl Calibration {
    pub fn start() -> Calibration {
        Calibration { wall: Instant::now(), ticks: now() }
    }

    /// Counter ticks per microsecond over the interval since `start`.
    pub fn per_us(&self) -> f64 {
        let us = self.wall.elapsed().as_secs_f64() * 1e6;
        (now().wrapping_sub(self.ticks)) as f64 / us.max(1e-3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_to_the_wall_clock() {
        let cal = Calibration::start();
        let t0 = now();
        let w0 = Instant::now();
        while w0.elapsed().as_millis() < 20 {
            std::hint::spin_loop();
        }
        let ticks = now() - t0;
        let us = ticks as f64 / cal.per_us();
        // The units, not the precision: an emulated TSC (the Soft-RoCE VM's
        // TCG) runs unevenly against the wall clock under load (12.4 ms seen
        // for 20), while a unit slip (ns for us, a missed scale) is 1000x.
        assert!((2_000.0..200_000.0).contains(&us), "20 ms measured as {us} us");
    }
}
