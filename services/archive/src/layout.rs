//! Where things go in the lake, and the small JSON documents beside the data.
//!
//! ```text
//! <table>/date=2024-03-15/hour=14[/asset_kind=METER]/part-<topic>-<partition>-<first>-<last>.parquet
//!         (or date=2024-03-15/ for daily tables, year=2024/month=03/ for monthly ones)
//! <table>/date=2024-03-15/hour=14[/asset_kind=METER]/_part-<topic>-<partition>-<first>-<last>.json  (manifest)
//! <table>/_gale_checkpoints/<topic>-<partition>.json                                              (checkpoint)
//! ```
//!
//! Manifests start with `_`, which Spark, Hive and pyarrow skip when they
//! read a directory as a dataset. A data file's name is a function of the topic, the Kafka partition and
//! the offset range of the flush that wrote it, so rebuilding the same range
//! after a crash rewrites the same files instead of adding new ones. The
//! checkpoint records, per Kafka partition, the first offset not yet in the
//! lake and, while a flush is under way, the range it is writing.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// How finely a table is cut by event time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// `date=YYYY-MM-DD/hour=HH`: live tables queried by the hour.
    #[default]
    Hour,
    /// `date=YYYY-MM-DD`: history and backfills (24 times fewer files).
    Day,
    /// `year=YYYY/month=MM`: long histories queried by the month.
    Month,
}

/// The Hive partition of a row: its event-time period plus configured columns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HiveKey {
    /// UTC day of the event time (the first of the month for monthly tables).
    pub date: NaiveDate,
    /// UTC hour of the event time (0 unless hourly).
    pub hour: u32,
    /// How finely the table is cut.
    pub granularity: Granularity,
    /// Extra `name=value` levels, in configured order.
    pub extras: Vec<(String, String)>,
}

impl HiveKey {
    /// The hourly key of an event time (ms) with `extras`.
    pub fn of(event_time_ms: i64, extras: Vec<(String, String)>) -> Option<HiveKey> {
        Self::at(event_time_ms, Granularity::Hour, extras)
    }

    /// The key of an event time (ms) at `granularity` with `extras`.
    pub fn at(
        event_time_ms: i64,
        granularity: Granularity,
        extras: Vec<(String, String)>,
    ) -> Option<HiveKey> {
        let t = DateTime::<Utc>::from_timestamp_millis(event_time_ms)?;
        let (date, hour) = match granularity {
            Granularity::Hour => (t.date_naive(), t.hour()),
            Granularity::Day => (t.date_naive(), 0),
            Granularity::Month => (t.date_naive().with_day(1)?, 0),
        };
        Some(HiveKey {
            date,
            hour,
            granularity,
            extras,
        })
    }

    /// The directory, e.g. `date=2024-03-15/hour=14/asset_kind=METER`.
    pub fn path(&self) -> String {
        let mut p = match self.granularity {
            Granularity::Hour => format!(
                "date={}/hour={:02}",
                self.date.format("%Y-%m-%d"),
                self.hour
            ),
            Granularity::Day => format!("date={}", self.date.format("%Y-%m-%d")),
            Granularity::Month => format!(
                "year={:04}/month={:02}",
                self.date.year(),
                self.date.month()
            ),
        };
        for (k, v) in &self.extras {
            p.push('/');
            p.push_str(&escape(k));
            p.push('=');
            p.push_str(&escape(v));
        }
        p
    }

    /// Parses a directory written by [`HiveKey::path`], at any granularity.
    pub fn parse(path: &str) -> Option<HiveKey> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let first = *parts.first()?;
        let (date, hour, granularity, rest) = if let Some(d) = first.strip_prefix("date=") {
            let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?;
            match parts.get(1).and_then(|p| p.strip_prefix("hour=")) {
                Some(h) => (
                    date,
                    h.parse().ok().filter(|h: &u32| *h < 24)?,
                    Granularity::Hour,
                    &parts[2..],
                ),
                None => (date, 0, Granularity::Day, &parts[1..]),
            }
        } else {
            let year: i32 = first.strip_prefix("year=")?.parse().ok()?;
            let month: u32 = parts.get(1)?.strip_prefix("month=")?.parse().ok()?;
            (
                NaiveDate::from_ymd_opt(year, month, 1)?,
                0,
                Granularity::Month,
                &parts[2..],
            )
        };
        let extras = rest
            .iter()
            .map(|p| p.split_once('=').map(|(k, v)| (unescape(k), unescape(v))))
            .collect::<Option<Vec<_>>>()?;
        Some(HiveKey {
            date,
            hour,
            granularity,
            extras,
        })
    }

    /// The first instant after this partition's period.
    pub fn end(&self) -> DateTime<Utc> {
        let start = self
            .date
            .and_hms_opt(self.hour, 0, 0)
            .expect("valid hour")
            .and_utc();
        match self.granularity {
            Granularity::Hour => start + chrono::Duration::hours(1),
            Granularity::Day => start + chrono::Duration::days(1),
            Granularity::Month => {
                let next = self
                    .date
                    .checked_add_months(chrono::Months::new(1))
                    .unwrap_or(self.date);
                next.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
            }
        }
    }
}

/// Hive-style escaping: keep `[A-Za-z0-9_.-]`, percent-encode the rest.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("__HIVE_DEFAULT_PARTITION__");
    }
    out
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Topic names as they appear in file names (`.` is fine, `/` is not).
fn safe(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The stem of a data file: `part-<topic>-<partition>-<first>-<last>`.
pub fn file_stem(topic: &str, partition: i32, first: i64, last: i64) -> String {
    format!("part-{}-{partition}-{first:020}-{last:020}", safe(topic))
}

/// Parses a data file stem written by [`file_stem`] into the part naming
/// the topic and Kafka partition (`part-<topic>-<partition>`) and its first
/// and last offsets.
pub fn parse_stem(stem: &str) -> Option<(&str, i64, i64)> {
    let mut parts = stem.rsplitn(3, '-');
    let last = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let prefix = parts.next()?;
    prefix.starts_with("part-").then_some((prefix, first, last))
}

/// The checkpoint object of a Kafka partition, relative to the table.
pub fn checkpoint_path(topic: &str, partition: i32) -> String {
    format!("_gale_checkpoints/{}-{partition}.json", safe(topic))
}

/// Per Kafka partition: what is already in the lake.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// First offset not yet in the lake; earlier records are skipped.
    pub next_offset: i64,
    /// A flush in progress: the range it writes. After a crash exactly this
    /// range is written again, so the same file names come out.
    pub pending: Option<PendingRange>,
    /// Bumped by every write: what a conditional write compares on a local
    /// store (see [`crate::fence`]).
    #[serde(default)]
    pub seq: u64,
    /// The archive that wrote it last (host and process), for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// An offset range being flushed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PendingRange {
    /// First offset of the range.
    pub from: i64,
    /// Last offset of the range.
    pub to: i64,
}

/// The JSON manifest written beside each data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Data file name.
    pub file: String,
    /// Rows in the file.
    pub records: usize,
    /// Earliest event time (RFC 3339).
    pub min_event_time: String,
    /// Latest event time (RFC 3339).
    pub max_event_time: String,
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// First offset of the flush range.
    pub first_offset: i64,
    /// Last offset of the flush range.
    pub last_offset: i64,
    /// Registry ids of the writer schemas of the rows.
    pub writer_schema_ids: Vec<u32>,
    /// Registry id of the schema the rows were read into (the file's schema).
    pub schema_id: u32,
    /// Parquet compression.
    pub compression: String,
    /// When the file was written.
    pub written_at: String,
    /// Files this one replaced, when written by compaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compacted_from: Vec<String>,
}

/// A manifest for tests: `file` with `records` rows, replacing `from`.
#[cfg(test)]
pub(crate) fn test_manifest(file: &str, records: usize, from: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&Manifest {
        file: file.into(),
        records,
        min_event_time: String::new(),
        max_event_time: String::new(),
        topic: "t".into(),
        partition: 0,
        first_offset: 0,
        last_offset: 0,
        writer_schema_ids: vec![],
        schema_id: 1,
        compression: "snappy".into(),
        written_at: String::new(),
        compacted_from: from.iter().map(|s| s.to_string()).collect(),
    })
    .expect("manifest serialises")
}

/// RFC 3339 of a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_paths_round_trip() {
        let k = HiveKey::of(
            1_710_511_200_000,
            vec![("asset_kind".into(), "METER".into())],
        )
        .unwrap();
        assert_eq!(k.path(), "date=2024-03-15/hour=14/asset_kind=METER");
        assert_eq!(HiveKey::parse(&k.path()), Some(k.clone()));
        let odd = HiveKey::of(0, vec![("site".into(), "a/b=c d".into())]).unwrap();
        assert_eq!(odd.path(), "date=1970-01-01/hour=00/site=a%2Fb%3Dc%20d");
        assert_eq!(HiveKey::parse(&odd.path()), Some(odd));
        assert_eq!(k.end().to_rfc3339(), "2024-03-15T15:00:00+00:00");
        let day = HiveKey::at(1_710_511_200_000, Granularity::Day, vec![]).unwrap();
        assert_eq!(day.path(), "date=2024-03-15");
        assert_eq!(HiveKey::parse(&day.path()), Some(day.clone()));
        assert_eq!(day.end().to_rfc3339(), "2024-03-16T00:00:00+00:00");
        let month = HiveKey::at(
            1_710_511_200_000,
            Granularity::Month,
            vec![("site".into(), "x".into())],
        )
        .unwrap();
        assert_eq!(month.path(), "year=2024/month=03/site=x");
        assert_eq!(HiveKey::parse(&month.path()), Some(month.clone()));
        assert_eq!(month.end().to_rfc3339(), "2024-04-01T00:00:00+00:00");
        // A directory someone else made is not a partition (and no panic).
        assert_eq!(HiveKey::parse("date=2024-03-15/hour=24"), None);
        assert_eq!(HiveKey::parse("date=2024-13-01"), None);
    }

    #[test]
    fn names_are_deterministic_and_sortable() {
        assert_eq!(
            file_stem("gale.validated", 2, 41, 1000),
            "part-gale.validated-2-00000000000000000041-00000000000000001000"
        );
        assert_eq!(
            parse_stem(&file_stem("gale.validated", 2, 41, 1000)),
            Some(("part-gale.validated-2", 41, 1000))
        );
        assert_eq!(parse_stem("part-compacted-00ff"), None);
        assert_eq!(
            checkpoint_path("gale.raw", 0),
            "_gale_checkpoints/gale.raw-0.json"
        );
        let c = Checkpoint {
            next_offset: 5,
            pending: Some(PendingRange { from: 5, to: 9 }),
            ..Default::default()
        };
        let back: Checkpoint = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
