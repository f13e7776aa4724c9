//! Daily peak consumption hours, for time-of-use pricing and demand response.
//!
//! Business rule: aggregate hourly consumption across all meters, take the
//! top 3 hours of each day, consider the season (summer AC load, winter
//! heating load), and leave out hours that do not describe normal demand:
//! public holidays, extreme weather (> 35 °C or < −10 °C) and grid
//! maintenance. Hours with gaps (interpolated or missing data) are left out
//! too, so a filled-in value never becomes a peak.
//!
//! The seasonal consideration is a label, not a scaling: each day carries its
//! [`Season`] so that peaks are compared only with days of the same season.
//! Aggregation and the choice of a day's hours (local calendar day, 23 to 25
//! hours around DST changes) are the caller's; this module ranks what it is
//! given, one candidate per hour.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

const HOUR_MS: i64 = 3_600_000;

/// A grid maintenance window, half-open: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenancePeriod {
    /// First instant of the window (quoted RFC 3339, "2026-07-24T17:00:00Z").
    pub start: DateTime<Utc>,
    /// First instant after the window (RFC 3339 string).
    pub end: DateTime<Utc>,
    /// The site under maintenance; absent for the whole fleet.
    #[serde(default)]
    pub site_id: Option<String>,
}

impl MaintenancePeriod {
    /// Whether the window applies to `scope_id` (a site, or `None` for the
    /// fleet). Fleet consumption includes every site, so every window applies
    /// to the fleet; a site sees fleet-wide windows and its own.
    pub fn applies_to(&self, scope_id: Option<&str>) -> bool {
        match (&self.site_id, scope_id) {
            (None, _) | (Some(_), None) => true,
            (Some(site), Some(scope)) => site == scope,
        }
    }

    /// Whether the window overlaps the hour starting at `hour_start_ms`.
    pub fn overlaps_hour(&self, hour_start_ms: i64) -> bool {
        let hour_end_ms = hour_start_ms.saturating_add(HOUR_MS);
        self.start.timestamp_millis() < hour_end_ms && self.end.timestamp_millis() > hour_start_ms
    }
}

/// Which hours count and how seasons are named.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeakPolicy {
    /// How many peak hours to report per day.
    pub top_n: usize,
    /// Public holidays as quoted local dates ("2026-12-25"; bare TOML dates
    /// are rejected); no peaks on those days.
    pub holidays: Vec<NaiveDate>,
    /// Grid maintenance windows (`[[rollup.peaks.maintenance]]` tables);
    /// overlapping hours are excluded.
    pub maintenance: Vec<MaintenancePeriod>,
    /// Hours with a known temperature above this (°C) are excluded.
    pub max_temperature_c: f64,
    /// Hours with a known temperature below this (°C) are excluded.
    pub min_temperature_c: f64,
    /// Months (1-12) labelled summer.
    pub summer_months: Vec<u32>,
    /// Months (1-12) labelled winter; the rest are shoulder months.
    pub winter_months: Vec<u32>,
}

impl Default for PeakPolicy {
    fn default() -> Self {
        PeakPolicy {
            top_n: 3,
            holidays: Vec::new(),
            maintenance: Vec::new(),
            max_temperature_c: 35.0,
            min_temperature_c: -10.0,
            summer_months: vec![6, 7, 8],
            winter_months: vec![12, 1, 2],
        }
    }
}

/// A day's season.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Season {
    /// Air-conditioning load expected.
    Summer,
    /// Heating load expected.
    Winter,
    /// Neither.
    Shoulder,
}

impl Season {
    /// The name used in records and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Season::Summer => "summer",
            Season::Winter => "winter",
            Season::Shoulder => "shoulder",
        }
    }
}

impl PeakPolicy {
    /// Checks the policy, naming the offending key.
    pub fn check(&self) -> Result<(), String> {
        if self.top_n < 1 {
            return Err("key `rollup.peaks.top_n`: expected at least 1, got 0".into());
        }
        let (min, max) = (self.min_temperature_c, self.max_temperature_c);
        if !(min.is_finite() && max.is_finite() && min < max) {
            return Err(format!(
                "key `rollup.peaks.min_temperature_c`/`rollup.peaks.max_temperature_c`: expected finite °C with min < max, got {min} and {max}"
            ));
        }
        for (key, months) in [
            ("summer_months", &self.summer_months),
            ("winter_months", &self.winter_months),
        ] {
            if let Some(m) = months.iter().find(|m| !(1..=12).contains(*m)) {
                return Err(format!(
                    "key `rollup.peaks.{key}`: expected months 1..=12, got {m}"
                ));
            }
        }
        if let Some(m) = self
            .winter_months
            .iter()
            .find(|m| self.summer_months.contains(m))
        {
            return Err(format!(
                "key `rollup.peaks.winter_months`: month {m} is also in `rollup.peaks.summer_months`; expected each month in one season at most"
            ));
        }
        for (i, p) in self.maintenance.iter().enumerate() {
            if p.end <= p.start {
                return Err(format!(
                    "key `rollup.peaks.maintenance[{i}]`: expected end after start, got start {} and end {}",
                    p.start.to_rfc3339(),
                    p.end.to_rfc3339()
                ));
            }
            if p.site_id.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err(format!(
                    "key `rollup.peaks.maintenance[{i}].site_id`: expected a site id, or no key for the whole fleet, got an empty string"
                ));
            }
        }
        Ok(())
    }

    /// The season of a local date, by its month.
    pub fn season(&self, date: NaiveDate) -> Season {
        let month = date.month();
        if self.summer_months.contains(&month) {
            Season::Summer
        } else if self.winter_months.contains(&month) {
            Season::Winter
        } else {
            Season::Shoulder
        }
    }
}

/// One hour's consumption, offered as a peak candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct HourCandidate {
    /// Start of the hour (UTC).
    pub hour_start_ms: i64,
    /// Consumption in the hour, summed over the scope's meters.
    pub consumption_kwh: f64,
    /// The hour has missing or interpolated data.
    pub gap: bool,
    /// Mean outdoor temperature when known (°C); NaN counts as unknown.
    pub temperature_c: Option<f64>,
}

/// One of a day's peak hours.
#[derive(Debug, Clone, PartialEq)]
pub struct Peak {
    /// 1 for the highest consumption.
    pub rank: u32,
    /// Start of the hour (UTC).
    pub hour_start_ms: i64,
    /// Consumption in the hour.
    pub consumption_kwh: f64,
    /// Mean outdoor temperature when known (°C).
    pub temperature_c: Option<f64>,
}

/// Hours left out, per reason; each hour counts once, under the first
/// reason in the order holiday, maintenance, gap, temperature, not finite.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exclusions {
    /// The hour has missing or interpolated data.
    pub gap: u32,
    /// The day is a public holiday.
    pub holiday: u32,
    /// The hour overlaps a maintenance window of the scope.
    pub maintenance: u32,
    /// The hour's temperature is out of bounds.
    pub temperature: u32,
    /// The hour's consumption is NaN or infinite.
    pub not_finite: u32,
}

impl Exclusions {
    /// All hours left out.
    pub fn total(&self) -> u32 {
        self.gap
            .saturating_add(self.holiday)
            .saturating_add(self.maintenance)
            .saturating_add(self.temperature)
            .saturating_add(self.not_finite)
    }
}

/// A day's peak hours for one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct DayPeaks {
    /// The local calendar day.
    pub local_date: NaiveDate,
    /// The day's season.
    pub season: Season,
    /// The day is a public holiday (then there are no peaks).
    pub holiday: bool,
    /// Hours given.
    pub candidates: u32,
    /// At most `top_n` hours, highest consumption first.
    pub peaks: Vec<Peak>,
    /// Hours left out.
    pub excluded: Exclusions,
}

/// The peak hours of `local_date` for `scope_id` (a site, or `None` for the
/// fleet) among `hours`, one candidate per hour.
///
/// Eligible hours are ranked by consumption, highest first; ties go to the
/// earlier hour. The result does not depend on the order of `hours`.
/// Duplicate hours are not merged: each is ranked on its own.
pub fn day_peaks(
    scope_id: Option<&str>,
    local_date: NaiveDate,
    hours: &[HourCandidate],
    policy: &PeakPolicy,
) -> DayPeaks {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let holiday = policy.holidays.contains(&local_date);
    let mut excluded = Exclusions::default();
    let mut eligible: Vec<Peak> = Vec::new();
    if holiday {
        excluded.holiday = count(hours.len());
    } else {
        let windows: Vec<&MaintenancePeriod> = policy
            .maintenance
            .iter()
            .filter(|p| p.applies_to(scope_id))
            .collect();
        for h in hours {
            let temperature_c = h.temperature_c.filter(|t| !t.is_nan());
            let reason = if windows.iter().any(|p| p.overlaps_hour(h.hour_start_ms)) {
                Some(&mut excluded.maintenance)
            } else if h.gap {
                Some(&mut excluded.gap)
            } else if temperature_c
                .is_some_and(|t| t > policy.max_temperature_c || t < policy.min_temperature_c)
            {
                Some(&mut excluded.temperature)
            } else if !h.consumption_kwh.is_finite() {
                Some(&mut excluded.not_finite)
            } else {
                None
            };
            match reason {
                Some(n) => *n = n.saturating_add(1),
                None => eligible.push(Peak {
                    rank: 0,
                    hour_start_ms: h.hour_start_ms,
                    consumption_kwh: h.consumption_kwh,
                    temperature_c,
                }),
            }
        }
    }
    // Total order over every field, so input order cannot matter.
    eligible.sort_by(|a, b| {
        b.consumption_kwh
            .total_cmp(&a.consumption_kwh)
            .then(a.hour_start_ms.cmp(&b.hour_start_ms))
            .then_with(|| match (a.temperature_c, b.temperature_c) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (x, y) => x.is_some().cmp(&y.is_some()),
            })
    });
    eligible.truncate(policy.top_n);
    for (i, p) in eligible.iter_mut().enumerate() {
        p.rank = count(i + 1);
    }
    DayPeaks {
        local_date,
        season: policy.season(local_date),
        holiday,
        candidates: count(hours.len()),
        peaks: eligible,
        excluded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 1_784_851_200_000; // 2026-07-24T00:00:00Z

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn at(hour: i64, minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(DAY + hour * HOUR_MS + minute * 60_000).unwrap()
    }

    fn win(start: DateTime<Utc>, end: DateTime<Utc>, site: Option<&str>) -> MaintenancePeriod {
        let site_id = site.map(String::from);
        MaintenancePeriod {
            start,
            end,
            site_id,
        }
    }

    fn policy(edit: impl FnOnce(&mut PeakPolicy)) -> PeakPolicy {
        let mut p = PeakPolicy::default();
        edit(&mut p);
        p
    }

    /// 24 hours: 10 + h kWh up to 16:00, 80 at 17 and 19 (tied), 90 at 18,
    /// then 4, 3, 2, 1.
    fn day() -> Vec<HourCandidate> {
        let kwh = |h: i64| match h {
            18 => 90.0,
            17 | 19 => 80.0,
            20.. => 24.0 - h as f64,
            _ => 10.0 + h as f64,
        };
        let cand = |h| HourCandidate {
            hour_start_ms: DAY + h * HOUR_MS,
            consumption_kwh: kwh(h),
            gap: false,
            temperature_c: None,
        };
        (0..24).map(cand).collect()
    }

    fn run(hours: &[HourCandidate], policy: &PeakPolicy) -> DayPeaks {
        day_peaks(Some("site-a"), date("2026-07-24"), hours, policy)
    }

    /// (rank, hour of day, kWh) of each peak.
    fn ranked(d: &DayPeaks) -> Vec<(u32, i64, f64)> {
        let row = |p: &Peak| (p.rank, (p.hour_start_ms - DAY) / HOUR_MS, p.consumption_kwh);
        d.peaks.iter().map(row).collect()
    }

    #[test]
    fn top_three_of_twenty_four_with_ties_to_the_earlier_hour() {
        let d = run(&day(), &PeakPolicy::default());
        assert_eq!(ranked(&d), [(1, 18, 90.0), (2, 17, 80.0), (3, 19, 80.0)]);
        assert_eq!((d.candidates, d.excluded.total()), (24, 0));
        assert_eq!((d.season, d.holiday), (Season::Summer, false));
    }

    #[test]
    fn input_order_does_not_matter_and_duplicates_are_ranked_as_given() {
        let mut hours = day();
        hours.push(hours[18].clone());
        hours[24].temperature_c = Some(20.0);
        let p = policy(|p| p.top_n = 30);
        let expected = run(&hours, &p);
        assert_eq!(ranked(&expected)[..2], [(1, 18, 90.0), (2, 18, 90.0)]);
        assert_eq!(expected.peaks.len(), 25);
        for seed in 1..30 {
            let n = hours.len();
            hours.rotate_left(seed * 7 % n);
            hours.swap(seed % n, (seed * 11) % n);
            assert_eq!(run(&hours, &p), expected, "seed {seed}");
        }
    }

    #[test]
    fn holiday_excludes_the_whole_day() {
        let d = run(&day(), &policy(|p| p.holidays = vec![date("2026-07-24")]));
        assert!(d.holiday && d.peaks.is_empty());
        assert_eq!((d.excluded.holiday, d.excluded.total()), (24, 24));
        assert!(!run(&day(), &policy(|p| p.holidays = vec![date("2026-07-25")])).holiday);
    }

    #[test]
    fn maintenance_overlap_is_half_open() {
        // 17:00-18:00 excludes 17 but not 18; 19:59-20:00 excludes 19 only.
        let windows = vec![
            win(at(17, 0), at(18, 0), None),
            win(at(19, 59), at(20, 0), None),
        ];
        let d = run(&day(), &policy(|p| p.maintenance = windows));
        assert_eq!(ranked(&d), [(1, 18, 90.0), (2, 16, 26.0), (3, 15, 25.0)]);
        assert_eq!(d.excluded.maintenance, 2);
        // Starting exactly at 19:00 leaves 18 alone.
        let d = run(
            &day(),
            &policy(|p| p.maintenance = vec![win(at(19, 0), at(19, 1), None)]),
        );
        assert_eq!(ranked(&d)[..2], [(1, 18, 90.0), (2, 17, 80.0)]);
    }

    #[test]
    fn maintenance_scoping_site_and_fleet() {
        let hours = day();
        // (window's site, scope, hours excluded): the fleet includes every site.
        let (a, b) = (Some("site-a"), Some("site-b"));
        for (site, scope, n) in [
            (b, a, 0),
            (b, b, 1),
            (b, None, 1),
            (None, a, 1),
            (None, None, 1),
        ] {
            let p = policy(|p| p.maintenance = vec![win(at(18, 0), at(18, 30), site)]);
            let d = day_peaks(scope, date("2026-07-24"), &hours, &p);
            assert_eq!(
                d.excluded.maintenance, n,
                "window {site:?}, scope {scope:?}"
            );
        }
    }

    #[test]
    fn temperature_bounds_are_strict_and_nan_is_unknown() {
        let mut hours = day();
        for (h, t) in [
            (18, 35.0),
            (17, 35.1),
            (19, -10.1),
            (16, -10.0),
            (15, f64::NAN),
        ] {
            hours[h].temperature_c = Some(t);
        }
        let d = run(&hours, &PeakPolicy::default());
        assert_eq!(ranked(&d), [(1, 18, 90.0), (2, 16, 26.0), (3, 15, 25.0)]);
        let temps: Vec<_> = d.peaks.iter().map(|p| p.temperature_c).collect();
        assert_eq!(temps, [Some(35.0), Some(-10.0), None]);
        assert_eq!(d.excluded.temperature, 2);
    }

    #[test]
    fn gap_and_not_finite_hours_are_excluded_once_in_order() {
        let p = policy(|p| p.maintenance = vec![win(at(18, 0), at(19, 0), None)]);
        let mut hours = day();
        hours[18].gap = true; // maintenance wins
        (hours[17].gap, hours[17].temperature_c) = (true, Some(40.0)); // gap wins
        (hours[19].consumption_kwh, hours[19].temperature_c) = (f64::NAN, Some(-20.0));
        hours[16].consumption_kwh = f64::INFINITY;
        hours[15].consumption_kwh = f64::NEG_INFINITY;
        let d = run(&hours, &p);
        let e = &d.excluded;
        let counts = (e.holiday, e.maintenance, e.gap, e.temperature, e.not_finite);
        assert_eq!(counts, (0, 1, 1, 1, 2));
        assert_eq!(ranked(&d), [(1, 14, 24.0), (2, 13, 23.0), (3, 12, 22.0)]);
    }

    #[test]
    fn fewer_eligible_hours_than_top_n() {
        let mut hours = day()[3..6].to_vec();
        hours[0].gap = true;
        hours[1].consumption_kwh = -2.0; // net export ranks like any value
        assert_eq!(
            ranked(&run(&hours, &PeakPolicy::default())),
            [(1, 5, 15.0), (2, 4, -2.0)]
        );
        let d = run(&[], &PeakPolicy::default());
        assert!(d.peaks.is_empty() && d.candidates == 0);
    }

    #[test]
    fn default_seasons_by_month() {
        use Season::*;
        let p = PeakPolicy::default();
        // January to December: W = winter, S = summer, - = shoulder.
        for (m, c) in (1..=12).zip("WW---SSS---W".chars()) {
            let s = p.season(NaiveDate::from_ymd_opt(2026, m, 15).unwrap());
            assert_eq!(
                s,
                [Shoulder, Summer, Winter]["-SW".find(c).unwrap()],
                "month {m}"
            );
        }
        assert_eq!(
            [Summer, Winter, Shoulder].map(Season::as_str),
            ["summer", "winter", "shoulder"]
        );
    }

    #[test]
    fn check_names_the_key() {
        type Edit = fn(&mut PeakPolicy);
        assert_eq!(PeakPolicy::default().check(), Ok(()));
        let cases: [(Edit, &str); 8] = [
            (|p| p.top_n = 0, "top_n`: expected at least 1"),
            (|p| p.summer_months.push(13), "summer_months`: expected months 1..=12, got 13"),
            (|p| p.winter_months = vec![0], "winter_months`: expected months 1..=12, got 0"),
            (|p| p.winter_months.push(8), "winter_months`: month 8 is also in `rollup.peaks.summer_months`"),
            (|p| p.min_temperature_c = 35.0, "min_temperature_c`/`rollup.peaks.max_temperature_c`: expected finite °C with min < max, got 35 and 35"),
            (|p| p.max_temperature_c = f64::NAN, "min_temperature_c`/`rollup.peaks.max_temperature_c`: expected finite °C with min < max, got -10 and NaN"),
            (
                |p| p.maintenance = vec![win(at(1, 0), at(2, 0), None), win(at(2, 0), at(2, 0), None)],
                "maintenance[1]`: expected end after start, got start 2026-07-24T02:00:00+00:00",
            ),
            (|p| p.maintenance = vec![win(at(1, 0), at(2, 0), Some(" "))], "maintenance[0].site_id`: expected a site id"),
        ];
        for (edit, want) in cases {
            let e = policy(edit).check().unwrap_err();
            assert!(e.starts_with(&format!("key `rollup.peaks.{want}")), "{e}");
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Aggregate {
        peaks: PeakPolicy,
    }

    #[test]
    fn deserializes_a_full_table() {
        let text = r#"
            [peaks]
            top_n = 2
            holidays = ["2026-12-25", "2026-01-01"]
            max_temperature_c = 38.5
            min_temperature_c = -15
            summer_months = [12, 1, 2]
            winter_months = [6, 7, 8]

            [[peaks.maintenance]]
            start = "2026-07-24T17:00:00Z"
            end = "2026-07-24T21:00:00+02:00"

            [[peaks.maintenance]]
            start = "2026-08-01T00:00:00Z"
            end = "2026-08-02T00:00:00Z"
            site_id = "site-b"
        "#;
        let p = toml::from_str::<Aggregate>(text).unwrap().peaks;
        assert_eq!(p.check(), Ok(()));
        assert_eq!(p.top_n, 2);
        assert_eq!(p.holidays, [date("2026-12-25"), date("2026-01-01")]);
        assert_eq!((p.max_temperature_c, p.min_temperature_c), (38.5, -15.0));
        assert_eq!(p.season(date("2026-01-10")), Season::Summer);
        assert_eq!(p.maintenance[0], win(at(17, 0), at(19, 0), None));
        assert_eq!(p.maintenance[1].site_id.as_deref(), Some("site-b"));
        let d: PeakPolicy = toml::from_str("").unwrap();
        assert_eq!(
            (d.top_n, d.summer_months, d.winter_months),
            (3, vec![6, 7, 8], vec![12, 1, 2])
        );
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let err = |text: &str| toml::from_str::<Aggregate>(text).unwrap_err().to_string();
        assert!(err("[peaks]\ntop_m = 3").contains("top_m"));
        let e = err("[[peaks.maintenance]]\nstart = \"2026-07-24T17:00:00Z\"\nend = \"2026-07-24T18:00:00Z\"\nsite = \"a\"");
        assert!(e.contains("unknown field `site`"), "{e}");
        assert!(err("[peaks]\nholidays = [\"2026-13-01\"]").contains("holidays"));
        // Bare TOML dates are not accepted: quote them.
        assert!(err("[peaks]\nholidays = [2026-12-25]").contains("holidays"));
    }
}
