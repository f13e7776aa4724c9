//! Gaps in an asset's hourly series, and what to do about them.
//!
//! Business rule: a gap shorter than 4 hours is filled by linear
//! interpolation at a quality cost of 10 points per interpolated hour; a gap
//! of 4 to 24 hours is marked `missing_short` and kept out of peak analysis;
//! a gap of 24 hours or more is `missing_extended` (critical). Downstream
//! aggregates must not silently treat an empty hour as zero consumption, so
//! every empty hour between two hours with data is accounted for here.
//!
//! A gap is counted in empty hours: data at 10:00 and 14:00 leaves 11, 12
//! and 13 empty, a 3-hour gap. Hours are UTC hours, their start a multiple of
//! [`HOUR_MS`]; times are milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// Largest accepted `extended_from` (one leap year of hours): it bounds how
/// many hours [`fill`] may return for one gap.
pub const MAX_EXTENDED_FROM: u32 = 24 * 366;

/// How gaps are classified and what interpolation costs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GapPolicy {
    /// Gaps of fewer empty hours than this are interpolated.
    pub interpolate_below: u32,
    /// Gaps of at least this many empty hours are `missing_extended`;
    /// those in between are `missing_short`.
    pub extended_from: u32,
    /// Quality points deducted from each interpolated hour.
    pub deduction_per_hour: i32,
}

impl Default for GapPolicy {
    fn default() -> Self {
        GapPolicy {
            interpolate_below: 4,
            extended_from: 24,
            deduction_per_hour: 10,
        }
    }
}

impl GapPolicy {
    /// Checks the policy, naming the offending key.
    pub fn check(&self) -> Result<(), String> {
        if self.interpolate_below < 1 {
            return Err(format!(
                "key `aggregate.gaps.interpolate_below`: expected at least 1 hour, got {}",
                self.interpolate_below
            ));
        }
        if self.interpolate_below > self.extended_from {
            return Err(format!(
                "key `aggregate.gaps.interpolate_below`: expected at most `aggregate.gaps.extended_from` ({}), got {}",
                self.extended_from, self.interpolate_below
            ));
        }
        if self.extended_from > MAX_EXTENDED_FROM {
            return Err(format!(
                "key `aggregate.gaps.extended_from`: expected at most {MAX_EXTENDED_FROM} hours (366 days), got {}",
                self.extended_from
            ));
        }
        if !(0..=100).contains(&self.deduction_per_hour) {
            return Err(format!(
                "key `aggregate.gaps.deduction_per_hour`: expected 0..=100 quality points, got {}",
                self.deduction_per_hour
            ));
        }
        Ok(())
    }
}

/// What a gap is, by its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapKind {
    /// Short enough to fill by linear interpolation.
    Interpolated,
    /// Left empty and kept out of peak analysis.
    MissingShort,
    /// Left empty; critical.
    MissingExtended,
}

impl GapKind {
    /// The name used in records and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            GapKind::Interpolated => "interpolated",
            GapKind::MissingShort => "missing_short",
            GapKind::MissingExtended => "missing_extended",
        }
    }
}

/// Classifies a gap of `missing_hours` empty hours.
pub fn classify(missing_hours: u32, policy: &GapPolicy) -> GapKind {
    if missing_hours < policy.interpolate_below {
        GapKind::Interpolated
    } else if missing_hours < policy.extended_from {
        GapKind::MissingShort
    } else {
        GapKind::MissingExtended
    }
}

/// An hour that has data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourValue {
    /// Start of the UTC hour.
    pub hour_start_ms: i64,
    /// Energy in the hour, when known.
    pub energy_kwh: Option<f64>,
    /// Mean power over the hour, when known.
    pub power_kw_mean: Option<f64>,
}

/// An empty hour, filled or marked.
#[derive(Debug, Clone, PartialEq)]
pub struct FilledHour {
    /// Start of the UTC hour.
    pub hour_start_ms: i64,
    /// The kind of the gap the hour belongs to.
    pub kind: GapKind,
    /// Interpolated energy; `None` for missing hours.
    pub energy_kwh: Option<f64>,
    /// Interpolated mean power; `None` for missing hours.
    pub power_kw_mean: Option<f64>,
    /// Quality points to deduct: `deduction_per_hour` when interpolated, else 0.
    pub quality_deduction: i32,
}

/// The gap between two hours with data: the start of the first empty hour
/// and the number of empty hours, or `None` when the hours are adjacent,
/// equal or misordered. Times are floored to their hour; the count
/// saturates at `u32::MAX`.
pub fn gap_between(before_ms: i64, after_ms: i64) -> Option<(i64, u32)> {
    let before = i128::from(before_ms.div_euclid(HOUR_MS));
    let after = i128::from(after_ms.div_euclid(HOUR_MS));
    let missing = after - before - 1;
    if missing < 1 {
        return None;
    }
    // `before + 1` is an hour index below `after`, so its start fits in i64.
    let first = i64::try_from((before + 1) * i128::from(HOUR_MS)).ok()?;
    Some((first, u32::try_from(missing).unwrap_or(u32::MAX)))
}

/// The empty hours strictly between `before` and `after`, in time order.
///
/// Interpolated gaps get values linear in time between the two sides (per
/// field; `None` when either side is `None` or not finite). Missing-short
/// gaps get hours without values. Missing-extended gaps get nothing: report
/// them with [`gap_between`]. An unchecked policy never yields more than
/// [`MAX_EXTENDED_FROM`] hours.
pub fn fill(before: &HourValue, after: &HourValue, policy: &GapPolicy) -> Vec<FilledHour> {
    let Some((first, missing)) = gap_between(before.hour_start_ms, after.hour_start_ms) else {
        return Vec::new();
    };
    let kind = classify(missing, policy);
    if kind == GapKind::MissingExtended || missing > MAX_EXTENDED_FROM {
        return Vec::new();
    }
    // Hour k (1-based) sits k/(missing+1) of the way from before to after.
    let steps = f64::from(missing) + 1.0;
    (0..missing)
        .map(|i| {
            let hour_start_ms = first + i64::from(i) * HOUR_MS;
            if kind == GapKind::MissingShort {
                return FilledHour {
                    hour_start_ms,
                    kind,
                    energy_kwh: None,
                    power_kw_mean: None,
                    quality_deduction: 0,
                };
            }
            let k = f64::from(i) + 1.0;
            let lerp = |b: Option<f64>, a: Option<f64>| match (b, a) {
                (Some(b), Some(a)) if b.is_finite() && a.is_finite() => {
                    Some(b + (a - b) * k / steps)
                }
                _ => None,
            };
            FilledHour {
                hour_start_ms,
                kind,
                energy_kwh: lerp(before.energy_kwh, after.energy_kwh),
                power_kw_mean: lerp(before.power_kw_mean, after.power_kw_mean),
                quality_deduction: policy.deduction_per_hour,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_261_600_000; // 2026-01-01T10:00:00Z

    fn hv(hour: i64, energy: Option<f64>, power: Option<f64>) -> HourValue {
        HourValue {
            hour_start_ms: T0 + hour * HOUR_MS,
            energy_kwh: energy,
            power_kw_mean: power,
        }
    }

    fn policy() -> GapPolicy {
        GapPolicy::default()
    }

    #[test]
    fn defaults_match_the_rule_and_pass_check() {
        let p = policy();
        assert_eq!((p.interpolate_below, p.extended_from), (4, 24));
        assert_eq!(p.deduction_per_hour, 10);
        assert_eq!(p.check(), Ok(()));
    }

    #[test]
    fn classify_boundaries() {
        let p = policy();
        assert_eq!(classify(1, &p), GapKind::Interpolated);
        assert_eq!(classify(3, &p), GapKind::Interpolated);
        assert_eq!(classify(4, &p), GapKind::MissingShort);
        assert_eq!(classify(23, &p), GapKind::MissingShort);
        assert_eq!(classify(24, &p), GapKind::MissingExtended);
        assert_eq!(classify(u32::MAX, &p), GapKind::MissingExtended);
    }

    #[test]
    fn kind_names_match_serde() {
        for kind in [
            GapKind::Interpolated,
            GapKind::MissingShort,
            GapKind::MissingExtended,
        ] {
            let v: GapKind = toml::Value::String(kind.as_str().into())
                .try_into()
                .unwrap();
            assert_eq!(v, kind);
        }
    }

    #[test]
    fn gap_between_counts_empty_hours() {
        // 10:00 and 14:00: 11, 12, 13 are empty.
        assert_eq!(gap_between(T0, T0 + 4 * HOUR_MS), Some((T0 + HOUR_MS, 3)));
        assert_eq!(gap_between(T0, T0 + HOUR_MS), None, "adjacent");
        assert_eq!(gap_between(T0, T0), None, "same hour");
        assert_eq!(gap_between(T0 + 5 * HOUR_MS, T0), None, "misordered");
        // Unaligned times are floored to their hour.
        assert_eq!(
            gap_between(T0 + 59 * 60_000, T0 + 2 * HOUR_MS + 1),
            Some((T0 + HOUR_MS, 1))
        );
        // Before the epoch too.
        assert_eq!(gap_between(-HOUR_MS, HOUR_MS), Some((0, 1)));
    }

    #[test]
    fn gap_between_extremes_saturate_without_overflow() {
        let (first, n) = gap_between(i64::MIN, i64::MAX).unwrap();
        assert_eq!(n, u32::MAX);
        assert_eq!(first, (i64::MIN.div_euclid(HOUR_MS) + 1) * HOUR_MS);
        assert_eq!(gap_between(i64::MAX, i64::MIN), None);
    }

    #[test]
    fn adjacent_or_misordered_fill_nothing() {
        let p = policy();
        let a = hv(0, Some(1.0), Some(1.0));
        assert!(fill(&a, &hv(1, Some(2.0), None), &p).is_empty());
        assert!(fill(&a, &a, &p).is_empty());
        assert!(fill(&hv(5, Some(2.0), None), &a, &p).is_empty());
    }

    #[test]
    fn three_missing_hours_are_interpolated_exactly() {
        let out = fill(
            &hv(0, Some(10.0), Some(4.0)),
            &hv(4, Some(50.0), Some(-4.0)),
            &policy(),
        );
        let starts: Vec<i64> = out.iter().map(|h| h.hour_start_ms).collect();
        assert_eq!(
            starts,
            vec![T0 + HOUR_MS, T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS]
        );
        let energy: Vec<_> = out.iter().map(|h| h.energy_kwh).collect();
        assert_eq!(energy, vec![Some(20.0), Some(30.0), Some(40.0)]);
        let power: Vec<_> = out.iter().map(|h| h.power_kw_mean).collect();
        assert_eq!(power, vec![Some(2.0), Some(0.0), Some(-2.0)]);
        assert!(out.iter().all(|h| h.kind == GapKind::Interpolated));
        assert!(out.iter().all(|h| h.quality_deduction == 10));
    }

    #[test]
    fn one_missing_hour_is_the_midpoint() {
        let out = fill(&hv(0, Some(1.0), None), &hv(2, Some(2.0), None), &policy());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].energy_kwh, Some(1.5));
    }

    #[test]
    fn none_and_non_finite_sides_propagate_per_field() {
        let out = fill(
            &hv(0, None, Some(2.0)),
            &hv(2, Some(8.0), Some(4.0)),
            &policy(),
        );
        assert_eq!(out[0].energy_kwh, None);
        assert_eq!(out[0].power_kw_mean, Some(3.0));
        assert_eq!(out[0].kind, GapKind::Interpolated);
        assert_eq!(out[0].quality_deduction, 10);
        let out = fill(
            &hv(0, Some(f64::NAN), Some(f64::INFINITY)),
            &hv(2, Some(1.0), Some(1.0)),
            &policy(),
        );
        assert_eq!((out[0].energy_kwh, out[0].power_kw_mean), (None, None));
    }

    #[test]
    fn four_and_twenty_three_missing_hours_are_missing_short() {
        let p = policy();
        for missing in [4_i64, 23] {
            let out = fill(
                &hv(0, Some(1.0), Some(1.0)),
                &hv(missing + 1, Some(9.0), Some(9.0)),
                &p,
            );
            assert_eq!(out.len() as i64, missing);
            assert_eq!(out[0].hour_start_ms, T0 + HOUR_MS);
            assert_eq!(out[out.len() - 1].hour_start_ms, T0 + missing * HOUR_MS);
            for h in &out {
                assert_eq!(h.kind, GapKind::MissingShort);
                assert_eq!((h.energy_kwh, h.power_kw_mean), (None, None));
                assert_eq!(h.quality_deduction, 0);
            }
        }
    }

    #[test]
    fn extended_gaps_fill_nothing_and_are_reported_by_gap_between() {
        let p = policy();
        let a = hv(0, Some(1.0), None);
        let b = hv(25, Some(1.0), None);
        assert!(fill(&a, &b, &p).is_empty());
        assert_eq!(
            gap_between(a.hour_start_ms, b.hour_start_ms),
            Some((T0 + HOUR_MS, 24))
        );
        // Ten years of silence: no allocation proportional to the gap.
        assert!(fill(&a, &hv(24 * 3653, Some(1.0), None), &p).is_empty());
        let raw = |ms| HourValue {
            hour_start_ms: ms,
            energy_kwh: None,
            power_kw_mean: None,
        };
        assert!(fill(&raw(i64::MIN), &raw(i64::MAX), &p).is_empty());
    }

    #[test]
    fn unchecked_huge_policy_stays_bounded() {
        let p = GapPolicy {
            interpolate_below: u32::MAX,
            extended_from: u32::MAX,
            deduction_per_hour: 10,
        };
        assert!(p.check().is_err());
        let far = hv(i64::from(MAX_EXTENDED_FROM) + 2, None, None);
        assert!(fill(&hv(0, None, None), &far, &p).is_empty());
    }

    #[test]
    fn custom_policy_and_deduction() {
        let p = GapPolicy {
            interpolate_below: 1,
            extended_from: 2,
            deduction_per_hour: 7,
        };
        assert_eq!(p.check(), Ok(()));
        assert_eq!(classify(1, &p), GapKind::MissingShort);
        let out = fill(&hv(0, None, None), &hv(2, None, None), &p);
        assert_eq!(out[0].kind, GapKind::MissingShort);
        let p = GapPolicy {
            interpolate_below: 2,
            ..p
        };
        let out = fill(&hv(0, Some(0.0), None), &hv(2, Some(2.0), None), &p);
        assert_eq!(
            (out[0].energy_kwh, out[0].quality_deduction),
            (Some(1.0), 7)
        );
    }

    #[test]
    fn check_names_the_key() {
        let bad = |p: GapPolicy| p.check().unwrap_err();
        let e = bad(GapPolicy {
            interpolate_below: 0,
            ..policy()
        });
        assert!(
            e.starts_with("key `aggregate.gaps.interpolate_below`: expected at least 1"),
            "{e}"
        );
        let e = bad(GapPolicy {
            interpolate_below: 25,
            ..policy()
        });
        assert!(e.starts_with("key `aggregate.gaps.interpolate_below`: expected at most `aggregate.gaps.extended_from` (24), got 25"), "{e}");
        let e = bad(GapPolicy {
            extended_from: MAX_EXTENDED_FROM + 1,
            ..policy()
        });
        assert!(
            e.starts_with("key `aggregate.gaps.extended_from`: expected at most 8784"),
            "{e}"
        );
        let e = bad(GapPolicy {
            deduction_per_hour: -1,
            ..policy()
        });
        assert!(
            e.starts_with("key `aggregate.gaps.deduction_per_hour`: expected 0..=100"),
            "{e}"
        );
        let equal = GapPolicy {
            interpolate_below: 24,
            ..policy()
        };
        assert_eq!(equal.check(), Ok(()));
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_keys() {
        let p: GapPolicy = toml::from_str("interpolate_below = 3").unwrap();
        assert_eq!(
            (p.interpolate_below, p.extended_from, p.deduction_per_hour),
            (3, 24, 10)
        );
        let e = toml::from_str::<GapPolicy>("interpolate_bellow = 3").unwrap_err();
        assert!(e.to_string().contains("interpolate_bellow"), "{e}");
    }
}
