//! From a source's rows to raw readings.
//!
//! A source (a SCADA export, a meter head-end, the simulator) names its
//! columns, units and timestamps its own way. A [`SourceMapping`] says which
//! column holds the asset id and the timestamp (and in which format), and
//! which columns are which canonical metric in which unit, so an export can be
//! ingested as it is. Columns named like the canonical metrics (`power`,
//! `power_unit`, `power_kw`, ...) are understood without any mapping.
//!
//! Missing values (empty cells, JSON null, `NaN` and the source's
//! `missing_values` tokens) are not errors: the metric is left out, and a row
//! whose metrics are all missing is skipped ([`RowOutcome::Skipped`]). Event
//! times must be finite and between 1970 and 2200, so `inf` or a number in the
//! wrong unit is a line error rather than a reading at the end of time.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, SecondsFormat, TimeZone, Utc};
use gale_model::{AssetKind, IngestChannel, Measurement, Metric, MetricName, RawReading};
use gale_runtime::config::Secret;
use serde::{Deserialize, Deserializer};

/// One field of an input row.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// Text (CSV cells, JSON strings).
    Text(String),
    /// A JSON number.
    Number(f64),
    /// JSON null.
    Null,
}

/// An input row: column name and field, in input order.
pub type Row = Vec<(String, Field)>;

/// How timestamps are written.
#[derive(Debug, Clone, PartialEq)]
pub enum TimestampFormat {
    /// RFC 3339 / ISO 8601 with an offset, or epoch seconds / milliseconds by magnitude.
    Auto,
    /// RFC 3339 / ISO 8601 with an offset (`2024-03-15T14:00:00+01:00`).
    Rfc3339,
    /// Seconds since the epoch (fractions allowed).
    EpochSeconds,
    /// Milliseconds since the epoch.
    EpochMillis,
    /// A `chrono` pattern without offset (`%d/%m/%Y %H:%M:%S`), read in
    /// `timezone` (or `utc_offset`).
    Pattern(String),
}

impl<'de> Deserialize<'de> for TimestampFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "auto" => TimestampFormat::Auto,
            "rfc3339" | "iso8601" => TimestampFormat::Rfc3339,
            "epoch_s" | "epoch_seconds" => TimestampFormat::EpochSeconds,
            "epoch_ms" | "epoch_millis" => TimestampFormat::EpochMillis,
            p if p.contains('%') => TimestampFormat::Pattern(p.to_string()),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "{other:?} is not a timestamp format; expected auto, rfc3339, epoch_s, epoch_ms or a chrono pattern such as \"%Y-%m-%d %H:%M:%S\""
                )))
            }
        })
    }
}

/// What one source column holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Canonical metric, e.g. `power` or `gearbox_temperature`.
    pub metric: MetricName,
    /// Unit of the column's values, e.g. `W`, `degF`; omit to leave it to validate.
    pub unit: Option<String>,
    /// Column holding the unit row by row, instead of a fixed `unit`.
    pub unit_column: Option<String>,
}

/// One configured source: who may send, and how to read what they send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Source name, recorded on every reading.
    pub name: String,
    /// API keys that authenticate this source on the HTTP API.
    #[serde(default)]
    pub api_keys: Vec<Secret>,
    /// Asset kind to declare on readings, if the source only sends one kind.
    pub asset_kind: Option<String>,
    /// Column holding the asset id.
    #[serde(default = "default_asset_column")]
    pub asset_column: String,
    /// Column that may declare each row's asset kind (`turbine`/`meter`) when
    /// `asset_kind` is not set.
    #[serde(default = "default_kind_column")]
    pub asset_kind_column: String,
    /// Column holding the event time.
    #[serde(default = "default_timestamp_column")]
    pub timestamp_column: String,
    /// `auto`, `rfc3339`, `epoch_s`, `epoch_ms` or a chrono pattern.
    #[serde(default = "default_timestamp_format")]
    pub timestamp_format: TimestampFormat,
    /// Fixed offset for local timestamps (a pattern, or ISO 8601 without an
    /// offset), e.g. `+01:00`; for civil time with daylight saving use
    /// `timezone` instead.
    #[serde(default = "default_offset")]
    pub utc_offset: String,
    /// IANA time zone of local timestamps, e.g. `Europe/Paris`: daylight
    /// saving time is applied as the zone had it on the day.
    pub timezone: Option<String>,
    /// A local time that happens twice (the hour repeated when clocks go
    /// back): `in_order` (default: in a sorted export the first occurrence
    /// of an asset's time is the earlier instant, the second the later),
    /// `earliest`, `latest`, or `reject` (a line error).
    #[serde(default)]
    pub ambiguous_times: AmbiguousTimes,
    /// A local time that never happens (the hour skipped when clocks go
    /// forward): `reject` (default: a line error) or `shift_forward` (read
    /// as the same time after the jump, as if the clock had not changed).
    #[serde(default)]
    pub skipped_times: SkippedTimes,
    /// Spacing of the source's readings, e.g. `15m`: an energy per interval
    /// (`kWh` given for power) is average power over it.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<std::time::Duration>,
    /// Source columns mapped onto canonical metrics.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnSpec>,
    /// Also accept columns named like canonical metrics (`power`, `power_unit`, `power_kw`).
    #[serde(default = "yes")]
    pub canonical_columns: bool,
    /// Keep columns that map to no metric as reading attributes.
    #[serde(default = "yes")]
    pub keep_unmapped: bool,
    /// Cell values that mean "no value", compared with the trimmed cell
    /// (case-sensitive). Empty cells, JSON null and values that read as NaN
    /// are always missing.
    #[serde(default = "default_missing_values")]
    pub missing_values: Vec<String>,
}

/// What to do with a local time that happens twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AmbiguousTimes {
    /// First occurrence (per asset, in one request or file) the earlier
    /// instant, a repeat the later one: right for sorted exports.
    #[default]
    InOrder,
    /// Always the earlier instant (daylight saving time).
    Earliest,
    /// Always the later instant (standard time).
    Latest,
    /// A line error.
    Reject,
}

/// What to do with a local time that never happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SkippedTimes {
    /// A line error.
    #[default]
    Reject,
    /// The same wall-clock time after the jump (02:30 becomes 03:30).
    ShiftForward,
}

/// The zone local timestamps are read in.
#[derive(Debug, Clone, Copy)]
pub enum Zone {
    /// A fixed offset from UTC.
    Fixed(FixedOffset),
    /// An IANA time zone with its daylight saving rules.
    Iana(chrono_tz::Tz),
}

/// What reading one input (a request, a file) remembers between its rows:
/// the ambiguous local times each asset has had, for `in_order`.
#[derive(Debug, Default)]
pub struct ReadContext {
    seen_ambiguous: std::collections::HashSet<(String, NaiveDateTime)>,
}

fn default_asset_column() -> String {
    "asset_id".into()
}
fn default_kind_column() -> String {
    "asset_kind".into()
}
fn default_timestamp_column() -> String {
    "timestamp".into()
}
fn default_timestamp_format() -> TimestampFormat {
    TimestampFormat::Auto
}
fn default_offset() -> String {
    "+00:00".into()
}
fn yes() -> bool {
    true
}
/// The default `missing_values`.
pub fn default_missing_values() -> Vec<String> {
    ["", "NaN", "nan", "NULL", "null", "N/A", "#N/A", "NA", "-"]
        .map(String::from)
        .to_vec()
}

impl SourceConfig {
    /// A source with canonical columns only.
    pub fn canonical(name: &str) -> Self {
        SourceConfig {
            name: name.into(),
            api_keys: Vec::new(),
            asset_kind: None,
            asset_column: default_asset_column(),
            asset_kind_column: default_kind_column(),
            timestamp_column: default_timestamp_column(),
            timestamp_format: TimestampFormat::Auto,
            utc_offset: default_offset(),
            timezone: None,
            ambiguous_times: AmbiguousTimes::default(),
            skipped_times: SkippedTimes::default(),
            interval: None,
            columns: BTreeMap::new(),
            canonical_columns: true,
            keep_unmapped: true,
            missing_values: default_missing_values(),
        }
    }
}

/// A validated, ready-to-use mapping of one source.
#[derive(Debug, Clone)]
pub struct SourceMapping {
    config: SourceConfig,
    kind: Option<AssetKind>,
    zone: Zone,
    /// Column name → (metric, fixed unit, unit column).
    metric_columns: BTreeMap<String, (Metric, Option<String>, Option<String>)>,
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    /// A reading to send.
    Reading(RawReading),
    /// The row names metrics, but every one of their values is missing: there
    /// is nothing to send, and nothing wrong with the row either.
    Skipped,
}

impl SourceMapping {
    /// Checks `config` (`key` is its config path for error messages).
    pub fn new(config: SourceConfig, key: &str) -> Result<Self, String> {
        let kind = match &config.asset_kind {
            Some(k) => Some(
                k.parse::<AssetKind>()
                    .map_err(|e| format!("key `{key}.asset_kind`: {e}"))?,
            ),
            None => None,
        };
        let offset: FixedOffset = config.utc_offset.parse().map_err(|_| {
            format!(
                "key `{key}.utc_offset`: {:?} is not an offset like +01:00",
                config.utc_offset
            )
        })?;
        let zone = match &config.timezone {
            None => Zone::Fixed(offset),
            Some(_) if config.utc_offset != default_offset() => {
                return Err(format!(
                    "key `{key}.timezone`: give `timezone` or `utc_offset`, not both"
                ))
            }
            Some(name) => Zone::Iana(name.parse::<chrono_tz::Tz>().map_err(|_| {
                format!(
                    "key `{key}.timezone`: {name:?} is not an IANA time zone such as Europe/Paris or America/Chicago"
                )
            })?),
        };
        if config.interval.is_some_and(|i| i.as_millis() == 0) {
            return Err(format!("key `{key}.interval`: must be more than 0s"));
        }
        let mut metric_columns = BTreeMap::new();
        if config.canonical_columns {
            for m in Metric::ALL {
                metric_columns.insert(
                    m.name().to_string(),
                    (m, None, Some(format!("{}_unit", m.name()))),
                );
                metric_columns.insert(
                    m.column().to_string(),
                    (m, Some(m.canonical_unit().to_string()), None),
                );
            }
        }
        for (column, spec) in &config.columns {
            if spec.unit.is_some() && spec.unit_column.is_some() {
                return Err(format!(
                    "key `{key}.columns.{column}`: give `unit` or `unit_column`, not both"
                ));
            }
            metric_columns.insert(
                column.clone(),
                (spec.metric.0, spec.unit.clone(), spec.unit_column.clone()),
            );
        }
        Ok(SourceMapping {
            config,
            kind,
            zone,
            metric_columns,
        })
    }

    /// Source name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The source's config.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// True when `text` is a missing value for this source.
    pub fn is_missing(&self, text: &str) -> bool {
        let t = text.trim();
        t.is_empty() || self.config.missing_values.iter().any(|m| m.trim() == t)
    }

    /// A text field that holds a value, trimmed; `None` when absent or missing.
    fn text<'r>(&self, field: Option<&'r Field>) -> Option<&'r str> {
        match field {
            Some(Field::Text(s)) if !self.is_missing(s) => Some(s.trim()),
            _ => None,
        }
    }

    /// Turns one row into a raw reading, or says what is wrong with it. A row
    /// whose metric values are all missing is an error here; see
    /// [`SourceMapping::read_row`] to tell it apart.
    pub fn to_reading(
        &self,
        row: &Row,
        channel: IngestChannel,
        received_time: i64,
    ) -> Result<RawReading, String> {
        match self.read_row(row, channel, received_time)? {
            RowOutcome::Reading(r) => Ok(r),
            RowOutcome::Skipped => Err("every metric value of the row is missing".into()),
        }
    }

    /// Turns one row into a raw reading, skips it when all its metric values
    /// are missing, or says what is wrong with it.
    pub fn read_row(
        &self,
        row: &Row,
        channel: IngestChannel,
        received_time: i64,
    ) -> Result<RowOutcome, String> {
        self.read_row_in(row, channel, received_time, &mut ReadContext::default())
    }

    /// [`SourceMapping::read_row`] for a row of a longer input (a request, a
    /// file), with what the rows before it left in `context`.
    pub fn read_row_in(
        &self,
        row: &Row,
        channel: IngestChannel,
        received_time: i64,
        context: &mut ReadContext,
    ) -> Result<RowOutcome, String> {
        let get = |name: &str| row.iter().find(|(c, _)| c == name).map(|(_, f)| f);
        let asset_id = match get(&self.config.asset_column) {
            Some(Field::Number(n)) => n.to_string(),
            f => match self.text(f) {
                Some(s) => s.to_string(),
                None => {
                    return Err(format!(
                        "missing asset id (column `{}`)",
                        self.config.asset_column
                    ))
                }
            },
        };
        let event_time = match get(&self.config.timestamp_column) {
            Some(Field::Number(n)) => Some(Field::Number(*n)),
            f => self.text(f).map(|s| Field::Text(s.to_string())),
        };
        let event_time = match event_time {
            None => {
                return Err(format!(
                    "missing timestamp (column `{}`)",
                    self.config.timestamp_column
                ))
            }
            Some(f) => {
                let local = Local {
                    zone: self.zone,
                    ambiguous: self.config.ambiguous_times,
                    skipped: self.config.skipped_times,
                    asset: &asset_id,
                    context,
                };
                parse_local_timestamp(&f, &self.config.timestamp_format, local)
                    .map_err(|e| format!("column `{}`: {e}", self.config.timestamp_column))?
            }
        };
        let asset_kind = match (self.kind, self.text(get(&self.config.asset_kind_column))) {
            (Some(k), _) => Some(k),
            (None, Some(s)) => Some(
                s.parse::<AssetKind>()
                    .map_err(|e| format!("column `{}`: {e}", self.config.asset_kind_column))?,
            ),
            (None, None) => None,
        };
        let unit_columns: Vec<&str> = self
            .metric_columns
            .values()
            .filter_map(|(_, _, uc)| uc.as_deref())
            .collect();
        let mut measurements = Vec::new();
        // Which column gave each measurement, to name both of a duplicate.
        let mut given_by: Vec<&str> = Vec::new();
        let mut metric_columns = 0;
        let mut attributes = BTreeMap::new();
        for (column, field) in row {
            if column == &self.config.asset_column
                || column == &self.config.timestamp_column
                || column == &self.config.asset_kind_column
            {
                continue;
            }
            if let Some((metric, unit, unit_column)) = self.metric_columns.get(column) {
                metric_columns += 1;
                let Some(value) = self
                    .parse_value(field)
                    .map_err(|e| format!("column `{column}`: {e}"))?
                else {
                    continue;
                };
                if let Some(i) = measurements
                    .iter()
                    .position(|m: &Measurement| m.metric == *metric)
                {
                    return Err(format!(
                        "columns `{}` and `{column}` both hold {}; send each metric once per row",
                        given_by[i],
                        metric.name()
                    ));
                }
                let unit = match (unit, unit_column) {
                    (Some(u), _) => Some(u.clone()),
                    (None, Some(uc)) => self.text(get(uc)).map(str::to_string),
                    (None, None) => None,
                };
                measurements.push(Measurement {
                    metric: *metric,
                    value,
                    unit,
                });
                given_by.push(column);
            } else if unit_columns.contains(&column.as_str()) {
                continue;
            } else if self.config.keep_unmapped {
                match field {
                    Field::Text(s) if !self.is_missing(s) => {
                        attributes.insert(column.clone(), s.clone());
                    }
                    Field::Number(n) => {
                        attributes.insert(column.clone(), n.to_string());
                    }
                    _ => {}
                }
            }
        }
        if measurements.is_empty() {
            if metric_columns > 0 {
                return Ok(RowOutcome::Skipped);
            }
            return Err(format!(
                "no metric columns in row for {asset_id}; known columns are canonical metric names ({}) or the source's mapped columns",
                Metric::ALL.map(Metric::name).join(", ")
            ));
        }
        let event_id = event_id(&self.config.name, &asset_id, event_time, &measurements);
        Ok(RowOutcome::Reading(RawReading {
            event_id,
            asset_id,
            asset_kind,
            event_time,
            received_time,
            source: self.config.name.clone(),
            channel,
            measurements,
            attributes,
            interval_ms: self
                .config
                .interval
                .map(|i| i64::try_from(i.as_millis()).unwrap_or(i64::MAX)),
        }))
    }

    /// A metric value: `None` when missing, an error when not a finite number.
    fn parse_value(&self, field: &Field) -> Result<Option<f64>, String> {
        let v = match field {
            Field::Null => return Ok(None),
            Field::Number(n) => *n,
            Field::Text(s) => {
                if self.is_missing(s) {
                    return Ok(None);
                }
                let t = s.trim();
                t.parse::<f64>()
                    .map_err(|_| format!("{t:?} is not a number"))?
            }
        };
        if v.is_nan() {
            return Ok(None);
        }
        if !v.is_finite() {
            return Err(format!("{v} is not a finite number"));
        }
        Ok(Some(v))
    }
}

/// Deterministic id: the same reading from the same source always gets the same id.
pub fn event_id(
    source: &str,
    asset_id: &str,
    event_time: i64,
    measurements: &[Measurement],
) -> String {
    let mut parts: Vec<String> = measurements
        .iter()
        .map(|m| {
            format!(
                "{}={}{}",
                m.metric.name(),
                m.value,
                m.unit.as_deref().unwrap_or("")
            )
        })
        .collect();
    parts.sort();
    let key = format!("{source}\n{asset_id}\n{event_time}\n{}", parts.join(";"));
    uuid::Uuid::new_v5(&EVENT_NAMESPACE, key.as_bytes()).to_string()
}

/// Namespace of Gale's event ids.
const EVENT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6761_6c65_2d72_6561_6469_6e67_2d76_3101);

/// Earliest event time accepted, ms: 1970-01-01T00:00:00Z.
pub const EARLIEST_EVENT_MS: i64 = 0;
/// First event time no longer accepted, ms: 2200-01-01T00:00:00Z.
pub const LATEST_EVENT_MS: i64 = 7_258_118_400_000;

/// How a number in a timestamp column counts time.
#[derive(Debug, Clone, Copy)]
enum Epoch {
    Seconds,
    Millis,
    /// Seconds below 1e11 (the year 5138), milliseconds above.
    ByMagnitude,
}

/// Parses a timestamp field into ms since the epoch, reading local times at
/// a fixed `offset`; rejects times that are not finite or not between
/// [`EARLIEST_EVENT_MS`] and [`LATEST_EVENT_MS`].
pub fn parse_timestamp(
    field: &Field,
    format: &TimestampFormat,
    offset: FixedOffset,
) -> Result<i64, String> {
    let mut context = ReadContext::default();
    parse_local_timestamp(
        field,
        format,
        Local {
            zone: Zone::Fixed(offset),
            ambiguous: AmbiguousTimes::Reject,
            skipped: SkippedTimes::Reject,
            asset: "",
            context: &mut context,
        },
    )
}

/// How local times are read into instants.
pub struct Local<'a> {
    /// Their zone.
    pub zone: Zone,
    /// What a time that happens twice becomes.
    pub ambiguous: AmbiguousTimes,
    /// What a time that never happens becomes.
    pub skipped: SkippedTimes,
    /// The row's asset (for `in_order`).
    pub asset: &'a str,
    /// What earlier rows of the input saw.
    pub context: &'a mut ReadContext,
}

impl Local<'_> {
    /// The instant (ms) of local time `naive`.
    fn resolve(self, naive: NaiveDateTime, text: &str) -> Result<i64, String> {
        use chrono::LocalResult;
        let zone_name = match self.zone {
            Zone::Fixed(o) => o.to_string(),
            Zone::Iana(tz) => tz.name().to_string(),
        };
        let result: LocalResult<i64> = match self.zone {
            Zone::Fixed(o) => o.from_local_datetime(&naive).map(|t| t.timestamp_millis()),
            Zone::Iana(tz) => tz.from_local_datetime(&naive).map(|t| t.timestamp_millis()),
        };
        match result {
            LocalResult::Single(ms) => Ok(ms),
            LocalResult::Ambiguous(earlier, later) => match self.ambiguous {
                AmbiguousTimes::Earliest => Ok(earlier),
                AmbiguousTimes::Latest => Ok(later),
                AmbiguousTimes::InOrder => {
                    let first = self
                        .context
                        .seen_ambiguous
                        .insert((self.asset.to_string(), naive));
                    Ok(if first { earlier } else { later })
                }
                AmbiguousTimes::Reject => Err(format!(
                    "{text:?} happens twice in {zone_name} (clocks go back); set `ambiguous_times` to in_order, earliest or latest"
                )),
            },
            LocalResult::None => match self.skipped {
                SkippedTimes::Reject => Err(format!(
                    "{text:?} does not exist in {zone_name} (clocks go forward); fix the export or set `skipped_times = \"shift_forward\"`"
                )),
                SkippedTimes::ShiftForward => {
                    // Read with the offset in force before the jump: 02:30
                    // on the spring-forward night is 03:30 after it.
                    let before = naive - chrono::Duration::hours(6);
                    let offset_s = match self.zone {
                        Zone::Fixed(o) => Some(o.local_minus_utc()),
                        Zone::Iana(tz) => tz
                            .offset_from_local_datetime(&before)
                            .earliest()
                            .map(|o| o.fix().local_minus_utc()),
                    };
                    offset_s
                        .map(|o| naive.and_utc().timestamp_millis() - i64::from(o) * 1000)
                        .ok_or_else(|| format!("{text:?} does not exist in {zone_name}"))
                }
            },
        }
    }
}

/// Parses a timestamp field into ms since the epoch, reading local times as
/// `local` says; rejects times that are not finite or not between
/// [`EARLIEST_EVENT_MS`] and [`LATEST_EVENT_MS`].
pub fn parse_local_timestamp(
    field: &Field,
    format: &TimestampFormat,
    local: Local<'_>,
) -> Result<i64, String> {
    let text = match field {
        Field::Text(s) => s.trim().to_string(),
        Field::Number(n) => {
            let epoch = match format {
                TimestampFormat::EpochMillis => Epoch::Millis,
                TimestampFormat::EpochSeconds => Epoch::Seconds,
                TimestampFormat::Auto => Epoch::ByMagnitude,
                _ => return Err(format!("{n} is a number, expected a {format:?} timestamp")),
            };
            return epoch_ms(*n, epoch, &n.to_string());
        }
        Field::Null => return Err("missing".into()),
    };
    let numeric = text.parse::<f64>().ok();
    let ms = match format {
        TimestampFormat::EpochMillis => match numeric {
            Some(n) => return epoch_ms(n, Epoch::Millis, &text),
            None => return Err(format!("{text:?} is not epoch milliseconds")),
        },
        TimestampFormat::EpochSeconds => match numeric {
            Some(n) => return epoch_ms(n, Epoch::Seconds, &text),
            None => return Err(format!("{text:?} is not epoch seconds")),
        },
        TimestampFormat::Rfc3339 => iso_8601(&text, local)?,
        TimestampFormat::Auto => match numeric {
            Some(n) => return epoch_ms(n, Epoch::ByMagnitude, &text),
            None => iso_8601(&text, local)?,
        },
        TimestampFormat::Pattern(p) => {
            let naive = NaiveDateTime::parse_from_str(&text, p)
                .map_err(|e| format!("{text:?} does not match {p:?}: {e}"))?;
            local.resolve(naive, &text)?
        }
    };
    plausible(ms, &text)
}

fn epoch_ms(n: f64, epoch: Epoch, text: &str) -> Result<i64, String> {
    if !n.is_finite() {
        return Err(format!(
            "{text:?} is not a finite number of epoch seconds or milliseconds"
        ));
    }
    let ms = match epoch {
        Epoch::Seconds => n * 1000.0,
        Epoch::Millis => n,
        Epoch::ByMagnitude if n.abs() < 1e11 => n * 1000.0,
        Epoch::ByMagnitude => n,
    }
    .round();
    // Compared as floats first: casting an out-of-range float saturates.
    if !(EARLIEST_EVENT_MS as f64..LATEST_EVENT_MS as f64).contains(&ms) {
        return Err(implausible(text, None));
    }
    plausible(ms as i64, text)
}

fn plausible(ms: i64, text: &str) -> Result<i64, String> {
    if (EARLIEST_EVENT_MS..LATEST_EVENT_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(implausible(text, Some(ms)))
    }
}

fn implausible(text: &str, ms: Option<i64>) -> String {
    let when = ms
        .and_then(DateTime::from_timestamp_millis)
        .map(|t| format!(" ({})", t.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .unwrap_or_default();
    format!("{text:?}{when} is not a plausible event time; accepted are 1970-01-01T00:00:00Z up to 2200-01-01T00:00:00Z")
}

/// ISO 8601 with an offset; without one, a local time when a time zone or
/// an offset other than UTC is configured.
fn iso_8601(text: &str, local: Local<'_>) -> Result<i64, String> {
    match rfc3339(text) {
        Ok(ms) => Ok(ms),
        Err(e) => {
            let configured = match local.zone {
                Zone::Iana(_) => true,
                Zone::Fixed(o) => o.local_minus_utc() != 0,
            };
            if !configured {
                return Err(e);
            }
            let naive = [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%d %H:%M",
            ]
            .iter()
            .find_map(|p| NaiveDateTime::parse_from_str(text, p).ok())
            .ok_or(e)?;
            local.resolve(naive, text)
        }
    }
}

fn rfc3339(text: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    // ISO 8601 with a space instead of `T`, or with a `+hhmm` offset.
    for pattern in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, pattern) {
            return Ok(t.timestamp_millis());
        }
    }
    if text.ends_with('Z') || text.contains('+') {
        return Err(format!("{text:?} is not an ISO 8601 timestamp"));
    }
    Err(format!(
        "{text:?} is not an ISO 8601 timestamp with an offset (e.g. 2024-03-15T14:00:00Z); configure `timezone` (or `utc_offset`) for local times"
    ))
}

/// Milliseconds now, UTC.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Field::Text(v.to_string())))
            .collect()
    }

    #[test]
    fn canonical_columns_need_no_mapping() {
        let m = SourceMapping::new(SourceConfig::canonical("s"), "ingest.sources[0]").unwrap();
        let r = m
            .to_reading(
                &row(&[
                    ("asset_id", "MTR-1"),
                    ("timestamp", "2024-03-15T14:00:00Z"),
                    ("power", "1250"),
                    ("power_unit", "W"),
                    ("gearbox_temperature_c", "71.5"),
                    ("firmware", "2.1"),
                    ("energy", ""),
                ]),
                IngestChannel::Http,
                0,
            )
            .unwrap();
        assert_eq!(r.event_time, 1_710_511_200_000);
        assert_eq!(r.measurements.len(), 2);
        assert_eq!(r.measurements[0].unit.as_deref(), Some("W"));
        assert_eq!(r.measurements[1].unit.as_deref(), Some("degC"));
        assert_eq!(r.attributes["firmware"], "2.1");
    }

    #[test]
    fn scada_export_maps_columns_units_and_local_time() {
        let cfg: SourceConfig = toml_from(
            r#"
            name = "scada"
            asset_kind = "turbine"
            asset_column = "WTG"
            timestamp_column = "Time"
            timestamp_format = "%d/%m/%Y %H:%M"
            utc_offset = "+01:00"
            canonical_columns = false
            keep_unmapped = false
            [columns]
            "WindSpeed_kmh" = { metric = "wind_speed", unit = "km/h" }
            "ActivePower" = { metric = "power", unit_column = "PowerUnit" }
            "GbxTemp" = { metric = "gearbox_temperature", unit = "degF" }
            "#,
        );
        let m = SourceMapping::new(cfg, "s").unwrap();
        let r = m
            .to_reading(
                &row(&[
                    ("WTG", "TURBINE_00007"),
                    ("Time", "15/03/2024 15:00"),
                    ("WindSpeed_kmh", "43.2"),
                    ("ActivePower", "1.8"),
                    ("PowerUnit", "MW"),
                    ("GbxTemp", "NaN"),
                    ("Comment", "x"),
                ]),
                IngestChannel::File,
                0,
            )
            .unwrap();
        assert_eq!(r.event_time, 1_710_511_200_000, "15:00 at +01:00 is 14:00Z");
        assert_eq!(r.asset_kind, Some(AssetKind::Turbine));
        assert_eq!(r.measurements.len(), 2, "NaN is missing");
        assert_eq!(r.measurements[1].unit.as_deref(), Some("MW"));
        assert!(r.attributes.is_empty());
    }

    #[test]
    fn epochs_by_format_and_magnitude() {
        let utc = FixedOffset::east_opt(0).unwrap();
        let f = |s: &str, fmt: TimestampFormat| parse_timestamp(&Field::Text(s.into()), &fmt, utc);
        assert_eq!(
            f("1710511200", TimestampFormat::Auto).unwrap(),
            1_710_511_200_000
        );
        assert_eq!(
            f("1710511200000", TimestampFormat::Auto).unwrap(),
            1_710_511_200_000
        );
        assert_eq!(
            f("1710511200.5", TimestampFormat::EpochSeconds).unwrap(),
            1_710_511_200_500
        );
        assert_eq!(
            f("2024-03-15T15:00:00+01:00", TimestampFormat::Rfc3339).unwrap(),
            1_710_511_200_000
        );
        assert_eq!(
            f("2024-03-15 14:00:00+00:00", TimestampFormat::Auto).unwrap(),
            1_710_511_200_000
        );
        let err = f("2024-03-15 14:00", TimestampFormat::Auto).unwrap_err();
        assert!(err.contains("offset"), "{err}");
        assert!(f("yesterday", TimestampFormat::EpochMillis).is_err());
    }

    #[test]
    fn bad_rows_say_what_is_wrong() {
        let m = SourceMapping::new(SourceConfig::canonical("s"), "k").unwrap();
        let e = m
            .to_reading(
                &row(&[("timestamp", "1710511200"), ("power", "1")]),
                IngestChannel::Http,
                0,
            )
            .unwrap_err();
        assert!(e.contains("asset id"), "{e}");
        let e = m
            .to_reading(
                &row(&[
                    ("asset_id", "A"),
                    ("timestamp", "1710511200"),
                    ("power", "abc"),
                ]),
                IngestChannel::Http,
                0,
            )
            .unwrap_err();
        assert!(e.contains("`power`") && e.contains("abc"), "{e}");
        let e = m
            .to_reading(
                &row(&[("asset_id", "A"), ("timestamp", "1710511200"), ("pwr", "1")]),
                IngestChannel::Http,
                0,
            )
            .unwrap_err();
        assert!(e.contains("no metric columns"), "{e}");
        let e = m
            .to_reading(
                &row(&[("asset_id", "A"), ("timestamp", "-"), ("power", "1")]),
                IngestChannel::Http,
                0,
            )
            .unwrap_err();
        assert!(e.contains("missing timestamp"), "{e}");
    }

    #[test]
    fn non_finite_and_implausible_timestamps_are_line_errors() {
        let utc = FixedOffset::east_opt(0).unwrap();
        let text = |s: &str, fmt: TimestampFormat| {
            parse_timestamp(&Field::Text(s.into()), &fmt, utc).unwrap_err()
        };
        for t in ["inf", "-inf", "nan", "NaN", "infinity"] {
            for fmt in [
                TimestampFormat::Auto,
                TimestampFormat::EpochSeconds,
                TimestampFormat::EpochMillis,
            ] {
                let e = text(t, fmt);
                assert!(e.contains("not a finite number"), "{t}: {e}");
            }
        }
        for n in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            let e = parse_timestamp(&Field::Number(n), &TimestampFormat::Auto, utc).unwrap_err();
            assert!(e.contains("not a finite number"), "{n}: {e}");
        }
        // Far out of range in every unit, including values a cast would saturate.
        for (t, fmt) in [
            ("1e300", TimestampFormat::Auto),
            ("-1", TimestampFormat::Auto),
            ("-1", TimestampFormat::EpochMillis),
            ("9e18", TimestampFormat::EpochMillis),
            ("1e12", TimestampFormat::EpochSeconds),
            ("9999999999999", TimestampFormat::Auto),
            ("1969-12-31T23:59:59Z", TimestampFormat::Auto),
            ("2200-01-01T00:00:00Z", TimestampFormat::Rfc3339),
            ("0001-01-01T00:00:00+00:00", TimestampFormat::Auto),
        ] {
            let e = text(t, fmt.clone());
            assert!(e.contains("not a plausible event time"), "{t} {fmt:?}: {e}");
            assert!(e.contains("1970") && e.contains("2200"), "{e}");
        }
        let e = text(
            "01/01/2500 00:00",
            TimestampFormat::Pattern("%d/%m/%Y %H:%M".into()),
        );
        assert!(e.contains("2500-01-01T00:00:00Z"), "says when: {e}");
        let ok = |s: &str, fmt: TimestampFormat| {
            parse_timestamp(&Field::Text(s.into()), &fmt, utc).unwrap()
        };
        assert_eq!(ok("0", TimestampFormat::Auto), 0);
        assert_eq!(
            ok("2199-12-31T23:59:59.999Z", TimestampFormat::Auto),
            LATEST_EVENT_MS - 1
        );
        assert_eq!(
            DateTime::from_timestamp_millis(LATEST_EVENT_MS)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Secs, true),
            "2200-01-01T00:00:00Z"
        );
        // And the row says which column.
        let m = SourceMapping::new(SourceConfig::canonical("s"), "k").unwrap();
        let e = m
            .to_reading(
                &row(&[("asset_id", "A"), ("timestamp", "inf"), ("power", "1")]),
                IngestChannel::Http,
                0,
            )
            .unwrap_err();
        assert!(e.starts_with("column `timestamp`"), "{e}");
    }

    #[test]
    fn rows_with_only_missing_values_are_skipped() {
        let m = SourceMapping::new(SourceConfig::canonical("s"), "k").unwrap();
        for token in default_missing_values() {
            let r = row(&[
                ("asset_id", "A"),
                ("timestamp", "1710511200"),
                ("power", &token),
                ("energy", " NaN "),
            ]);
            assert_eq!(
                m.read_row(&r, IngestChannel::File, 0),
                Ok(RowOutcome::Skipped),
                "{token:?}"
            );
            assert!(m.to_reading(&r, IngestChannel::File, 0).is_err());
        }
        let json_null = vec![
            ("asset_id".to_string(), Field::Text("A".into())),
            ("timestamp".to_string(), Field::Number(1_710_511_200.0)),
            ("power".to_string(), Field::Null),
        ];
        assert_eq!(
            m.read_row(&json_null, IngestChannel::Http, 0),
            Ok(RowOutcome::Skipped)
        );
        // A missing unit or attribute is left out, not recorded as "N/A".
        let Ok(RowOutcome::Reading(r)) = m.read_row(
            &row(&[
                ("asset_id", "A"),
                ("timestamp", "1710511200"),
                ("power", "2"),
                ("power_unit", "N/A"),
                ("site", "#N/A"),
            ]),
            IngestChannel::Http,
            0,
        ) else {
            panic!("a reading")
        };
        assert_eq!(r.measurements[0].unit, None);
        assert!(r.attributes.is_empty());
    }

    #[test]
    fn missing_value_tokens_are_configurable() {
        let mut cfg = SourceConfig::canonical("s");
        cfg.missing_values = vec!["-999".into(), "?".into()];
        let m = SourceMapping::new(cfg, "k").unwrap();
        let r = |v: &str| {
            m.read_row(
                &row(&[("asset_id", "A"), ("timestamp", "1710511200"), ("power", v)]),
                IngestChannel::Http,
                0,
            )
        };
        assert_eq!(r("-999"), Ok(RowOutcome::Skipped));
        assert_eq!(r(" ? "), Ok(RowOutcome::Skipped));
        assert_eq!(r(""), Ok(RowOutcome::Skipped), "empty is always missing");
        assert_eq!(r("nan"), Ok(RowOutcome::Skipped), "NaN is always missing");
        let e = r("N/A").unwrap_err();
        assert!(e.contains("\"N/A\" is not a number"), "{e}");
        let cfg: SourceConfig = toml_from(
            r#"
            name = "s"
            missing_values = ["--"]
            "#,
        );
        assert_eq!(cfg.missing_values, vec!["--".to_string()]);
        let cfg: SourceConfig = toml_from("name = \"s\"");
        assert_eq!(cfg.missing_values, default_missing_values());
    }

    #[test]
    fn one_metric_from_two_columns_is_a_line_error() {
        let m = SourceMapping::new(SourceConfig::canonical("s"), "k").unwrap();
        let e = m
            .to_reading(
                &row(&[
                    ("asset_id", "A"),
                    ("timestamp", "1710511200"),
                    ("power", "1250"),
                    ("power_unit", "W"),
                    ("power_kw", "1.25"),
                ]),
                IngestChannel::Http,
                0,
            )
            .unwrap_err();
        assert!(
            e.contains("`power`") && e.contains("`power_kw`") && e.contains("once"),
            "{e}"
        );
        // One of the two empty: no conflict.
        let r = m
            .to_reading(
                &row(&[
                    ("asset_id", "A"),
                    ("timestamp", "1710511200"),
                    ("power", ""),
                    ("power_kw", "1.25"),
                ]),
                IngestChannel::Http,
                0,
            )
            .unwrap();
        assert_eq!(r.measurements.len(), 1);
        // A mapped column and a canonical one.
        let mut cfg = SourceConfig::canonical("s");
        cfg.columns
            .insert("ActivePower".into(), toml_from_spec(r#"metric = "power""#));
        let m = SourceMapping::new(cfg, "k").unwrap();
        let e = m
            .to_reading(
                &row(&[
                    ("asset_id", "A"),
                    ("timestamp", "1710511200"),
                    ("ActivePower", "3"),
                    ("power", "3"),
                ]),
                IngestChannel::Http,
                0,
            )
            .unwrap_err();
        assert!(e.contains("`ActivePower`") && e.contains("`power`"), "{e}");
    }

    fn toml_from_spec(text: &str) -> ColumnSpec {
        gale_runtime::config::load_str::<ColumnSpec>(text).unwrap()
    }

    #[test]
    fn event_ids_are_deterministic() {
        let m = SourceMapping::new(SourceConfig::canonical("s"), "k").unwrap();
        let r = row(&[
            ("asset_id", "A"),
            ("timestamp", "1710511200"),
            ("power", "1"),
            ("energy", "2"),
        ]);
        let a = m.to_reading(&r, IngestChannel::Http, 1).unwrap();
        let b = m.to_reading(&r, IngestChannel::Http, 2).unwrap();
        assert_eq!(a.event_id, b.event_id);
        let mut other = r.clone();
        other[2].1 = Field::Text("1.5".into());
        assert_ne!(
            m.to_reading(&other, IngestChannel::Http, 1)
                .unwrap()
                .event_id,
            a.event_id
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut cfg = SourceConfig::canonical("s");
        cfg.asset_kind = Some("windmill".into());
        let e = SourceMapping::new(cfg, "ingest.sources[0]").unwrap_err();
        assert!(e.contains("ingest.sources[0].asset_kind"), "{e}");
    }

    fn toml_from(text: &str) -> SourceConfig {
        gale_runtime::config::load_str::<SourceConfig>(text).unwrap()
    }

    fn paris(ambiguous: AmbiguousTimes, skipped: SkippedTimes) -> SourceMapping {
        let mut c = SourceConfig::canonical("scada");
        c.timestamp_format = TimestampFormat::Pattern("%Y-%m-%d %H:%M".into());
        c.timezone = Some("Europe/Paris".into());
        c.ambiguous_times = ambiguous;
        c.skipped_times = skipped;
        SourceMapping::new(c, "ingest.sources[0]").unwrap()
    }

    fn utc(m: &SourceMapping, rows: &[&str]) -> Vec<Result<String, String>> {
        let mut context = ReadContext::default();
        rows.iter()
            .map(|t| {
                m.read_row_in(
                    &row(&[("asset_id", "WTG-1"), ("timestamp", t), ("power", "1")]),
                    IngestChannel::File,
                    0,
                    &mut context,
                )
                .map(|o| match o {
                    RowOutcome::Reading(r) => DateTime::from_timestamp_millis(r.event_time)
                        .unwrap()
                        .format("%Y-%m-%dT%H:%MZ")
                        .to_string(),
                    RowOutcome::Skipped => "skipped".into(),
                })
            })
            .collect()
    }

    #[test]
    fn a_paris_export_is_right_on_both_sides_of_both_changes() {
        let m = paris(AmbiguousTimes::InOrder, SkippedTimes::Reject);
        // Winter (+01:00) and summer (+02:00).
        assert_eq!(
            utc(&m, &["2024-01-15 12:00", "2024-07-15 12:00"]),
            [
                Ok("2024-01-15T11:00Z".into()),
                Ok("2024-07-15T10:00Z".into())
            ]
        );
        // 31 March 2024: 02:00-03:00 does not exist.
        let spring = utc(
            &m,
            &["2024-03-31 01:50", "2024-03-31 02:10", "2024-03-31 03:00"],
        );
        assert_eq!(spring[0], Ok("2024-03-31T00:50Z".into()));
        assert!(
            spring[1].as_ref().unwrap_err().contains("does not exist"),
            "{:?}",
            spring[1]
        );
        assert_eq!(spring[2], Ok("2024-03-31T01:00Z".into()));
        let shifted = paris(AmbiguousTimes::InOrder, SkippedTimes::ShiftForward);
        assert_eq!(
            utc(&shifted, &["2024-03-31 02:10"]),
            [Ok("2024-03-31T01:10Z".into())]
        );
        // 27 October 2024: 02:00-03:00 happens twice; a sorted export lists
        // the summer pass first.
        let autumn = [
            "2024-10-27 01:50",
            "2024-10-27 02:00",
            "2024-10-27 02:50",
            "2024-10-27 02:00",
            "2024-10-27 02:50",
            "2024-10-27 03:00",
        ];
        assert_eq!(
            utc(&m, &autumn),
            [
                Ok("2024-10-26T23:50Z".into()),
                Ok("2024-10-27T00:00Z".into()),
                Ok("2024-10-27T00:50Z".into()),
                Ok("2024-10-27T01:00Z".into()),
                Ok("2024-10-27T01:50Z".into()),
                Ok("2024-10-27T02:00Z".into()),
            ]
        );
        let earliest = paris(AmbiguousTimes::Earliest, SkippedTimes::Reject);
        assert_eq!(utc(&earliest, &autumn)[3], Ok("2024-10-27T00:00Z".into()));
        let latest = paris(AmbiguousTimes::Latest, SkippedTimes::Reject);
        assert_eq!(utc(&latest, &autumn)[1], Ok("2024-10-27T01:00Z".into()));
        let reject = paris(AmbiguousTimes::Reject, SkippedTimes::Reject);
        assert!(utc(&reject, &autumn)[1]
            .as_ref()
            .unwrap_err()
            .contains("happens twice"));
        // ISO 8601 without an offset is local time in the zone too; with an
        // offset, the offset wins.
        let mut c = SourceConfig::canonical("scada");
        c.timezone = Some("Europe/Paris".into());
        let auto = SourceMapping::new(c, "k").unwrap();
        assert_eq!(
            utc(&auto, &["2024-07-15T12:00:00", "2024-07-15T12:00:00Z"]),
            [
                Ok("2024-07-15T10:00Z".into()),
                Ok("2024-07-15T12:00Z".into())
            ]
        );
    }

    #[test]
    fn zones_and_intervals_are_checked() {
        let mut c = SourceConfig::canonical("s");
        c.timezone = Some("Europe/Pariss".into());
        let e = SourceMapping::new(c.clone(), "ingest.sources[0]").unwrap_err();
        assert!(
            e.contains("ingest.sources[0].timezone") && e.contains("IANA"),
            "{e}"
        );
        c.timezone = Some("Europe/Paris".into());
        c.utc_offset = "+01:00".into();
        assert!(SourceMapping::new(c, "k").unwrap_err().contains("not both"));
        let mut c = SourceConfig::canonical("s");
        c.interval = Some(std::time::Duration::from_secs(900));
        let m = SourceMapping::new(c, "k").unwrap();
        let r = m
            .to_reading(
                &row(&[
                    ("asset_id", "M"),
                    ("timestamp", "2024-01-01T00:00:00Z"),
                    ("power", "0.5"),
                    ("power_unit", "kWh"),
                ]),
                IngestChannel::Http,
                0,
            )
            .unwrap();
        assert_eq!(r.interval_ms, Some(900_000));
    }
}
