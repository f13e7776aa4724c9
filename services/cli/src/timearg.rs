//! Points in time as operators type them on the command line: an RFC 3339
//! instant, a UTC date, or a duration meaning "that long ago". Replay,
//! dead-letter and backfill commands share the one parser so `--since 2h`
//! means the same everywhere.

use chrono::{DateTime, NaiveDate, Utc};

/// Parses `2025-03-01T12:00:00Z`, `2025-03-01` (midnight UTC) or `90m` / `2h` /
/// `3days` (that long before now).
pub fn parse(text: &str) -> Result<DateTime<Utc>, String> {
    parse_at(text, Utc::now())
}

/// [`parse`] with "now" given, for tests.
pub fn parse_at(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    let ago = t.strip_suffix(" ago").unwrap_or(t);
    if let Ok(d) = humantime::parse_duration(ago) {
        let d = chrono::Duration::from_std(d).map_err(|_| format!("{text:?} is too long ago"))?;
        return now
            .checked_sub_signed(d)
            .ok_or_else(|| format!("{text:?} is too long ago"));
    }
    Err(format!(
        "{text:?} is not a time: expected an RFC 3339 instant (2025-03-01T12:00:00Z), a UTC date (2025-03-01) or a duration ago (2h, 3days)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_dates_and_durations_ago() {
        let now = DateTime::parse_from_rfc3339("2025-03-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s| parse_at(s, now).unwrap().to_rfc3339();
        assert_eq!(at("2025-03-01T12:30:00+01:00"), "2025-03-01T11:30:00+00:00");
        assert_eq!(at("2025-03-01"), "2025-03-01T00:00:00+00:00");
        assert_eq!(at("2h"), "2025-03-02T08:00:00+00:00");
        assert_eq!(at("1day ago"), "2025-03-01T10:00:00+00:00");
        let err = parse_at("yesterday-ish", now).unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
    }
}
