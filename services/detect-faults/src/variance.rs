//! LOW_VARIANCE's bounded memory: exact sums of power per UTC day.
//!
//! A 7-day coefficient of variation needs a week of readings, but the state
//! may not hold a week of readings. Count, sum and sum of squares per day
//! pool exactly into the window's variance, so the state holds at most
//! `window + 1` small buckets. Values are summed as integer multiples of
//! `resolution_kw`: float sums of squares lose exactly the digits a CV below
//! 0.01 lives in (the variance is the small difference of two large sums),
//! integers lose none, and a constant meter has a CV of exactly 0.

use crate::rules::{LowVarianceRule, Rules};
use crate::state::DayBucket;

/// One day in ms.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Largest quantised magnitude summed: with it, a day's sums fit `i64` up
/// to 9 million readings (1 000 kW at 1 W resolution is 10^6).
const MAX_QUANTUM: f64 = 1e6;

/// Days since the epoch of event time `t`.
pub(crate) fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY_MS)
}

/// Adds power `kw` read at `t` to its day, dropping days outside the window.
/// A value beyond the summable range (or a day whose sums would overflow)
/// is left out rather than wrapping around.
pub(crate) fn add(days: &mut Vec<DayBucket>, rule: &LowVarianceRule, t: i64, kw: f64) {
    let day = day_of(t);
    let window = Rules::variance_days(rule);
    days.retain(|b| b.day >= day - window && b.day <= day);
    let q = (kw / rule.resolution_kw).round();
    if q.is_nan() || q.abs() > MAX_QUANTUM {
        return;
    }
    let q = q as i64;
    let i = match days.iter().position(|b| b.day == day) {
        Some(i) => i,
        None => {
            days.push(DayBucket {
                day,
                n: 0,
                sum: 0,
                sum_sq: 0,
            });
            days.sort_by_key(|b| b.day);
            days.iter().position(|b| b.day == day).expect("just added")
        }
    };
    let b = &mut days[i];
    if let (Some(n), Some(sum), Some(sum_sq)) = (
        b.n.checked_add(1),
        b.sum.checked_add(q),
        b.sum_sq.checked_add(q * q),
    ) {
        (b.n, b.sum, b.sum_sq) = (n, sum, sum_sq);
    }
}

/// The verdict material of one judgement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Judgement {
    /// Population standard deviation / mean of the window's power.
    pub cv: f64,
}

/// The CV of the whole days before `today` in the window, or `None` when
/// the window is not covered well enough or its mean is too low to judge.
pub(crate) fn judge(days: &[DayBucket], rule: &LowVarianceRule, today: i64) -> Option<Judgement> {
    let window = Rules::variance_days(rule);
    let (mut n, mut s, mut q, mut covered) = (0i128, 0i128, 0i128, 0u32);
    for b in days
        .iter()
        .filter(|b| b.day >= today - window && b.day < today)
    {
        n += i128::from(b.n);
        s += i128::from(b.sum);
        q += i128::from(b.sum_sq);
        if b.n >= rule.min_readings_per_day {
            covered += 1;
        }
    }
    if covered < rule.min_covered_days || n == 0 || s <= 0 {
        return None;
    }
    let mean_kw = s as f64 / n as f64 * rule.resolution_kw;
    if mean_kw < rule.min_mean_kw {
        return None;
    }
    // n·Σx² − (Σx)² = n²·variance, exact in integers.
    let spread = n.checked_mul(q)?.checked_sub(s.checked_mul(s)?)?;
    Some(Judgement {
        cv: (spread.max(0) as f64).sqrt() / s as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> LowVarianceRule {
        Rules::preset().meter.low_variance.unwrap()
    }

    fn fill(values: impl Fn(i64) -> f64, days: i64, per_day: i64) -> Vec<DayBucket> {
        let r = rule();
        let mut buckets = Vec::new();
        for i in 0..days * per_day {
            let t = i * DAY_MS / per_day;
            add(&mut buckets, &r, t, values(i));
        }
        buckets
    }

    #[test]
    fn pooled_sums_give_the_exact_cv() {
        // 1.0 and 3.0 alternating: mean 2, population sd 1, CV 0.5.
        let b = fill(|i| if i % 2 == 0 { 1.0 } else { 3.0 }, 7, 24);
        let j = judge(&b, &rule(), 7).unwrap();
        assert_eq!(j.cv, 0.5);
        // A constant meter: exactly 0, however large the sums.
        let b = fill(|_| 987.654, 7, 1440);
        assert_eq!(judge(&b, &rule(), 7).unwrap().cv, 0.0);
    }

    #[test]
    fn state_holds_at_most_the_window_and_today() {
        let b = fill(|i| i as f64 % 5.0, 30, 144);
        assert_eq!(b.len(), 8);
        assert_eq!(b.first().unwrap().day, 22);
    }

    #[test]
    fn thin_or_near_zero_windows_are_not_judged() {
        let r = rule();
        // Five covered days of seven.
        let b = fill(|_| 2.0, 5, 24);
        assert_eq!(judge(&b, &r, 7), None);
        assert!(judge(&fill(|_| 2.0, 6, 24), &r, 6).is_some());
        // Eleven readings a day are not a covered day.
        assert_eq!(judge(&fill(|_| 2.0, 7, 11), &r, 7), None);
        // Mean below min_mean_kw.
        assert_eq!(judge(&fill(|_| 0.01, 7, 24), &r, 7), None);
        // Absurd values are left out instead of overflowing.
        let mut b = fill(|_| 2.0, 7, 24);
        add(&mut b, &r, 7 * DAY_MS - 1, 1e12);
        assert_eq!(judge(&b, &r, 7).unwrap().cv, 0.0);
    }
}
