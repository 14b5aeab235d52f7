//! Zipf-distributed key ranks: P(rank k) ~ 1 / k^s over 1..=n, sampled by
//! binary search in a precomputed CDF (8 bytes per key: fine for the key
//! counts a benchmark uses, and exact).

use crate::bail;
use crate::error::Result;

pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Result<Zipf> {
        if n == 0 || n > 100_000_000 {
            bail!("zipf over {n} keys: use 1..=100000000");
        }
        if !(s.is_finite() && s >= 0.0) {
            bail!("zipf exponent {s} must be a finite number >= 0");
        }
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Ok(Zipf { cdf })
    }

    /// The key index (0 = most popular) for a uniform `u` in [0, 1).
    pub fn sample(&self, u: f64) -> u64 {
        let i = self.cdf.partition_point(|&c| c < u);
        i.min(self.cdf.len() - 1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_towards_the_first_keys() {
        let z = Zipf::new(1000, 0.99).unwrap();
        let mut counts = vec![0u32; 1000];
        for i in 0..100_000u32 {
            counts[z.sample((i as f64 + 0.5) / 100_000.0) as usize] += 1;
        }
        assert!(counts[0] > 10 * counts[99], "{} vs {}", counts[0], counts[99]);
        // Evenly spaced quantiles: each rank gets its probability's share of
        // the samples, to within one, and the rarest rank is still drawn.
        let norm: f64 = (1..=1000).map(|k| 1.0 / (k as f64).powf(0.99)).sum();
        for (i, &c) in counts.iter().enumerate() {
            let want = 100_000.0 / ((i + 1) as f64).powf(0.99) / norm;
            assert!((c as f64 - want).abs() <= 1.0, "rank {i}: {c} samples, expected {want:.1}");
        }
        assert!(counts[999] > 0);
        assert_eq!(z.sample(0.0), 0);
        assert_eq!(z.sample(0.999_999_999), 999);
        let u = Zipf::new(10, 0.0).unwrap();
        assert_eq!(u.sample(0.55), 5, "s = 0 is uniform");
        assert!(Zipf::new(0, 1.0).is_err() && Zipf::new(10, f64::NAN).is_err());
    }
}
