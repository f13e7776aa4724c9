//! Which windows a reading falls in. Ten-minute and hourly windows are
//! aligned to UTC (they tile every time zone's hours the same way, so site
//! and fleet roll-ups add up); daily windows are the site's calendar day,
//! so a day with a daylight-saving change is 23 or 25 hours long and
//! "today's energy" means what the operator on site means.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// A window size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Grain {
    /// Ten minutes, UTC-aligned (the SCADA interval).
    #[serde(rename = "10m")]
    TenMinutes,
    /// One hour, UTC-aligned.
    #[serde(rename = "1h")]
    Hour,
    /// The site's local calendar day.
    #[serde(rename = "1d")]
    Day,
}

impl Grain {
    /// Every grain, finest first.
    pub const ALL: [Grain; 3] = [Grain::TenMinutes, Grain::Hour, Grain::Day];

    /// `10m`, `1h` or `1d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Grain::TenMinutes => "10m",
            Grain::Hour => "1h",
            Grain::Day => "1d",
        }
    }
}

impl fmt::Display for Grain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Grain {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "10m" => Ok(Grain::TenMinutes),
            "1h" => Ok(Grain::Hour),
            "1d" => Ok(Grain::Day),
            other => Err(format!("unknown grain {other:?}; expected 10m, 1h or 1d")),
        }
    }
}

/// One window: `[start, end)` in ms (UTC), with the zone it is aligned in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Size.
    pub grain: Grain,
    /// Start, inclusive.
    pub start: i64,
    /// End, exclusive.
    pub end: i64,
    /// Zone (UTC for 10m and 1h).
    pub zone: Tz,
}

impl Window {
    /// Length in hours (23, 24 or 25 for a day).
    pub fn hours(&self) -> f64 {
        (self.end - self.start) as f64 / HOUR as f64
    }

    /// The date of `start` in the window's zone.
    pub fn local_date(&self) -> NaiveDate {
        self.zone
            .timestamp_millis_opt(self.start)
            .single()
            .map_or_else(
                || DateTime::<Utc>::UNIX_EPOCH.date_naive(),
                |t| t.date_naive(),
            )
    }
}

fn floor(t: i64, size: i64) -> i64 {
    t.div_euclid(size) * size
}

/// The first instant of `date` in `zone`: local midnight, or the first
/// local time after it where midnight does not exist (a spring-forward at
/// 00:00, as in Santiago).
pub fn day_start(zone: Tz, date: NaiveDate) -> Option<i64> {
    let mut local = date.and_time(NaiveTime::MIN);
    // A gap lasts at most a few hours; step through it a quarter-hour at a time.
    for _ in 0..=12 {
        if let Some(t) = zone.from_local_datetime(&local).earliest() {
            return Some(t.timestamp_millis());
        }
        local += chrono::Duration::minutes(15);
    }
    None
}

/// The window of `grain` holding event time `t` (ms, UTC); `zone` aligns
/// daily windows. `None` only for times chrono cannot represent.
pub fn window_of(grain: Grain, t: i64, zone: Tz) -> Option<Window> {
    let utc = |size: i64| {
        let start = floor(t, size);
        Some(Window {
            grain,
            start,
            end: start + size,
            zone: Tz::UTC,
        })
    };
    match grain {
        Grain::TenMinutes => utc(10 * MINUTE),
        Grain::Hour => utc(HOUR),
        Grain::Day => {
            let date = zone.timestamp_millis_opt(t).single()?.date_naive();
            let start = day_start(zone, date)?;
            let end = day_start(zone, date.checked_add_days(Days::new(1))?)?;
            // A reading in a gap-skipped midnight belongs to the day it shows.
            Some(Window {
                grain,
                start,
                end,
                zone,
            })
        }
    }
}

/// Parses an IANA zone name.
pub fn zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("unknown time zone {name:?}; expected an IANA name such as Europe/Berlin")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn utc_windows_start_at_their_edge_and_end_before_the_next() {
        let w = window_of(Grain::TenMinutes, ms("2026-03-29T00:10:00Z"), Tz::UTC).unwrap();
        assert_eq!(
            (w.start, w.end),
            (ms("2026-03-29T00:10:00Z"), ms("2026-03-29T00:20:00Z"))
        );
        let w = window_of(Grain::TenMinutes, ms("2026-03-29T00:19:59.999Z"), Tz::UTC).unwrap();
        assert_eq!(w.start, ms("2026-03-29T00:10:00Z"));
        let w = window_of(Grain::Hour, ms("2026-03-29T00:59:59.999Z"), Tz::UTC).unwrap();
        assert_eq!(
            (w.start, w.end),
            (ms("2026-03-29T00:00:00Z"), ms("2026-03-29T01:00:00Z"))
        );
        // Before 1970 too.
        let w = window_of(Grain::Hour, -1, Tz::UTC).unwrap();
        assert_eq!((w.start, w.end), (-HOUR, 0));
    }

    #[test]
    fn hourly_windows_stay_utc_whatever_the_site_zone() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let w = window_of(Grain::Hour, ms("2026-03-29T01:30:00Z"), berlin).unwrap();
        assert_eq!(w.start, ms("2026-03-29T01:00:00Z"));
        assert_eq!(w.zone, Tz::UTC);
    }

    #[test]
    fn a_spring_forward_day_has_23_hours_and_a_fall_back_day_25() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let spring = window_of(Grain::Day, ms("2026-03-29T12:00:00Z"), berlin).unwrap();
        assert_eq!(spring.start, ms("2026-03-28T23:00:00Z"));
        assert_eq!(spring.end, ms("2026-03-29T22:00:00Z"));
        assert_eq!(spring.hours(), 23.0);
        assert_eq!(spring.local_date().to_string(), "2026-03-29");
        let autumn = window_of(Grain::Day, ms("2026-10-25T12:00:00Z"), berlin).unwrap();
        assert_eq!(autumn.start, ms("2026-10-24T22:00:00Z"));
        assert_eq!(autumn.end, ms("2026-10-25T23:00:00Z"));
        assert_eq!(autumn.hours(), 25.0);
        let normal = window_of(Grain::Day, ms("2026-07-01T00:00:00Z"), berlin).unwrap();
        assert_eq!(normal.hours(), 24.0);
        assert_eq!(normal.local_date().to_string(), "2026-07-01");
    }

    #[test]
    fn local_midnight_edges_belong_to_the_day_they_start() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 2026-11-01 00:00 EDT = 04:00Z.
        let w = window_of(Grain::Day, ms("2026-11-01T04:00:00Z"), ny).unwrap();
        assert_eq!(w.local_date().to_string(), "2026-11-01");
        assert_eq!(w.hours(), 25.0);
        let before = window_of(Grain::Day, ms("2026-11-01T03:59:59.999Z"), ny).unwrap();
        assert_eq!(before.local_date().to_string(), "2026-10-31");
        assert_eq!(before.end, w.start);
    }

    #[test]
    fn a_day_whose_midnight_does_not_exist_starts_at_the_first_local_time() {
        // Santiago springs forward at 24:00 on the first Saturday of September:
        // 2026-09-06 00:00 does not exist; the day starts at 01:00 (-03).
        let scl: Tz = "America/Santiago".parse().unwrap();
        let w = window_of(Grain::Day, ms("2026-09-06T12:00:00Z"), scl).unwrap();
        assert_eq!(w.start, ms("2026-09-06T04:00:00Z"));
        assert_eq!(w.hours(), 23.0);
        let prev = window_of(Grain::Day, ms("2026-09-06T03:59:00Z"), scl).unwrap();
        assert_eq!(prev.end, w.start);
    }

    #[test]
    fn half_hour_zones_get_their_own_midnight() {
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        let w = window_of(Grain::Day, ms("2026-06-01T18:29:59Z"), kolkata).unwrap();
        assert_eq!(w.start, ms("2026-05-31T18:30:00Z"));
        assert_eq!(w.local_date().to_string(), "2026-06-01");
    }

    #[test]
    fn grains_and_zones_parse_with_clear_errors() {
        assert_eq!("1d".parse::<Grain>().unwrap(), Grain::Day);
        assert!("1w"
            .parse::<Grain>()
            .unwrap_err()
            .contains("expected 10m, 1h or 1d"));
        assert!(zone("Mars/Olympus").unwrap_err().contains("IANA"));
    }
}
