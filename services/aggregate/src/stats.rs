//! Running statistics of one metric over one window, small enough to keep
//! in durable state and exact enough to match SQL's `avg`, `min`, `max` and
//! `stddev_samp` to 1e-9 relative.
//!
//! The variance uses Welford's update (as Postgres's float8 aggregates use
//! the Youngs–Cramer form of it) rather than the sum of squares, which loses
//! every significant digit on values like 1,500 kW ± 0.1.

use serde::{Deserialize, Serialize};

/// Count, mean, spread and extremes of the values seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Values seen.
    #[serde(rename = "n")]
    pub count: u64,
    /// Running mean.
    #[serde(rename = "m")]
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    #[serde(rename = "q")]
    pub m2: f64,
    /// Smallest value.
    #[serde(rename = "lo")]
    pub min: f64,
    /// Largest value.
    #[serde(rename = "hi")]
    pub max: f64,
}

impl Stat {
    /// Takes in one value; non-finite values are ignored (validate rejects
    /// them, so one here is a bug upstream, not data).
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if self.count == 0 {
            *self = Stat {
                count: 1,
                mean: x,
                m2: 0.0,
                min: x,
                max: x,
            };
            return;
        }
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// Mean, if any value was seen.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// Minimum, if any value was seen.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Maximum, if any value was seen.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Sample standard deviation (n − 1), as SQL's `stddev_samp`: none below
    /// two values.
    pub fn stddev_samp(&self) -> Option<f64> {
        (self.count > 1).then(|| (self.m2.max(0.0) / (self.count - 1) as f64).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var.sqrt())
    }

    #[test]
    fn matches_the_two_pass_formulas() {
        let xs = [1500.1, 1499.9, 1500.05, 1500.0, 1499.95, 1500.2];
        let mut s = Stat::default();
        for x in xs {
            s.add(x);
        }
        let (mean, sd) = naive(&xs);
        assert!((s.mean().unwrap() - mean).abs() / mean < 1e-12);
        assert!((s.stddev_samp().unwrap() - sd).abs() / sd < 1e-9);
        assert_eq!(s.min(), Some(1499.9));
        assert_eq!(s.max(), Some(1500.2));
        assert_eq!(s.count, 6);
    }

    #[test]
    fn no_spread_below_two_values_and_nothing_from_nothing() {
        let mut s = Stat::default();
        assert_eq!((s.mean(), s.min(), s.stddev_samp()), (None, None, None));
        s.add(3.0);
        assert_eq!((s.mean(), s.stddev_samp()), (Some(3.0), None));
        s.add(f64::NAN);
        assert_eq!(s.count, 1);
        s.add(5.0);
        assert_eq!(s.stddev_samp(), Some(2f64.sqrt()));
    }

    #[test]
    fn constant_values_have_zero_spread() {
        let mut s = Stat::default();
        for _ in 0..1000 {
            s.add(0.1);
        }
        assert_eq!(s.stddev_samp(), Some(0.0));
    }
}
