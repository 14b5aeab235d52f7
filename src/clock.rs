//! Wall-clock seconds for expiry and `stats conns`, read coarsely: the
//! kernel's tick-updated clock (CLOCK_REALTIME_COARSE, a few ms behind at
//! most) costs a load where the precise one reads the TSC, and a get asks
//! twice. memcached itself keeps a once-a-second `current_time`.

use nix::time::{clock_gettime, ClockId};

/// Seconds since the Unix epoch (0 if the clock cannot be read).
pub fn unix_secs() -> u64 {
    clock_gettime(ClockId::CLOCK_REALTIME_COARSE).map_or(0, |t| t.tv_sec().max(0) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_coarse_clock_keeps_up_with_the_precise_one() {
        let precise = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let coarse = super::unix_secs();
        // A tick behind at most, so at most one second boundary apart.
        assert!(coarse + 1 >= precise && coarse <= precise + 1, "coarse {coarse}, precise {precise}");
    }
}
