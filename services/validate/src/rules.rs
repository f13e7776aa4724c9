//! The validation rules of `smart-meter-etl-rules.md` (sections 1, 3 and 6),
//! as data plus one pure function.
//!
//! A [`RuleSet`] is loaded from a TOML file with one preset per asset kind
//! (`rules/default.toml` ships turbine and meter presets) and checked as a
//! whole when it loads, so a bad file stops the service at start with the
//! key's name instead of scoring readings with nonsense. [`evaluate`] turns a
//! raw reading, its asset and the asset's rate-of-change baseline into a
//! scored reading or a rejection; [`baseline`] says whether a scored reading
//! may serve as the next baseline. Nothing here knows about Kafka, so every
//! rule is unit-tested directly.

use std::collections::BTreeMap;
use std::time::Duration;

use gale_model::{
    AssetKind, FlagCode, Metric, MetricName, QualityFlag, QualityTier, RawReading, ScoredReading,
};
use serde::Deserialize;

use crate::assets::Asset;
use crate::units::{self, Conversion};

/// The built-in rules file.
pub const DEFAULT_RULES: &str = include_str!("../rules/default.toml");

/// Points and tiers of the quality score: every deduction of section 6 of
/// the rules, including those later stages apply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scoring {
    /// Deducted once when any value was converted or its unit inferred.
    pub unit_conversion: i32,
    /// Deducted per hour of interpolated data (applied by the gap-filling stage).
    pub interpolation_per_hour: i32,
    /// Deducted per validation warning (timestamp, out of range).
    pub validation_warning: i32,
    /// Deducted per rate-of-change flag.
    pub rate_of_change: i32,
    /// Deducted per detected fault (applied by detect-faults).
    pub fault: i32,
    /// Lowest score of the PREMIUM tier.
    pub premium_min: i32,
    /// Lowest score of the STANDARD tier; below it a reading is quarantined.
    pub standard_min: i32,
}

/// Plausible and hard limits of one metric, in canonical units.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Below this the reading is rejected (dead-lettered), e.g. negative meter power.
    pub reject_below: Option<f64>,
    /// Above this the reading is rejected.
    pub reject_above: Option<f64>,
    /// Below this the reading is flagged and quarantined.
    pub min: Option<f64>,
    /// Above this the reading is flagged and quarantined.
    pub max: Option<f64>,
}

/// How to read a value of one metric that came without a unit, by magnitude.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitInference {
    /// Magnitudes below this are taken as canonical without a flag. Unset:
    /// no magnitude is unambiguous, every unitless value is flagged.
    pub canonical_below: Option<f64>,
    /// Magnitudes above this are taken to be in `large_unit` and converted.
    pub large_above: Option<f64>,
    /// The unit assumed above `large_above`, e.g. `W`.
    pub large_unit: Option<String>,
}

/// What happens to a value without a unit when its metric has no
/// [`UnitInference`] in the preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unitless {
    /// Taken as canonical and flagged `UNIT_INFERRED` (the unit-conversion deduction).
    #[default]
    Flag,
    /// Taken as canonical without a flag.
    Accept,
    /// The reading is rejected.
    Reject,
}

/// Spike and drop detection against the asset's baseline (its last clean reading).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateOfChange {
    /// Metrics checked.
    pub metrics: Vec<MetricName>,
    /// Increase above which a SPIKE is flagged, as a fraction (5.0 = 500 %).
    pub spike_increase: f64,
    /// Decrease above which a DROP is flagged, as a fraction (0.9 = 90 %).
    pub drop_decrease: f64,
    /// Previous values at or below this magnitude are not a usable base.
    pub min_base: f64,
    /// A baseline more than this far (in event time) before the reading is
    /// not compared with: the change spans a gap, not one interval.
    #[serde(with = "humantime_serde")]
    pub baseline_max_age: Duration,
}

/// Rules for one asset kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Unit inference per metric, for values without a unit.
    #[serde(default)]
    pub infer_units: BTreeMap<MetricName, UnitInference>,
    /// Values without a unit of metrics missing from `infer_units`.
    #[serde(default)]
    pub unitless: Unitless,
    /// Physical limits per metric.
    #[serde(default)]
    pub limits: BTreeMap<MetricName, Limit>,
    /// Rate-of-change detection; absent disables it.
    pub rate_of_change: Option<RateOfChange>,
}

/// The whole rules file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// Score deductions and tiers.
    pub scoring: Scoring,
    /// Largest distance between event time and reception time before a
    /// reading is flagged as future or backdated (and, in live mode,
    /// quarantined; a reading from the future is quarantined in any mode).
    #[serde(with = "humantime_serde")]
    pub timestamp_tolerance: Duration,
    /// Event times accepted at all; a reading outside is rejected
    /// (dead-lettered, class `event_time_range`) so one absurd timestamp
    /// cannot pin a dashboard or create a database partition for its year.
    #[serde(default)]
    pub event_time_range: EventTimeRange,
    /// Rules for turbines.
    pub turbine: Preset,
    /// Rules for meters.
    pub meter: Preset,
}

impl RuleSet {
    /// Parses and checks a rules file; errors name the key.
    pub fn from_toml(text: &str) -> Result<RuleSet, String> {
        let rules: RuleSet = toml::from_str(text).map_err(|e| e.to_string())?;
        rules.check()?;
        Ok(rules)
    }

    /// The built-in presets.
    pub fn default_rules() -> RuleSet {
        Self::from_toml(DEFAULT_RULES).expect("built-in rules parse")
    }

    /// Preset for `kind`.
    pub fn preset(&self, kind: AssetKind) -> &Preset {
        match kind {
            AssetKind::Turbine => &self.turbine,
            AssetKind::Meter => &self.meter,
        }
    }

    /// The longest baseline age of any preset: per-asset state older than
    /// this (in wall-clock time since it was last updated) can be dropped.
    pub fn longest_baseline_age(&self) -> Duration {
        [&self.turbine, &self.meter]
            .iter()
            .filter_map(|p| p.rate_of_change.as_ref().map(|r| r.baseline_max_age))
            .max()
            .unwrap_or_default()
    }

    /// Checks what the types cannot: ranges, orderings and units.
    fn check(&self) -> Result<(), String> {
        let s = &self.scoring;
        for (key, v) in [
            ("unit_conversion", s.unit_conversion),
            ("interpolation_per_hour", s.interpolation_per_hour),
            ("validation_warning", s.validation_warning),
            ("rate_of_change", s.rate_of_change),
            ("fault", s.fault),
        ] {
            if !(0..=100).contains(&v) {
                return Err(format!(
                    "key `scoring.{key}`: {v} is not a deduction between 0 and 100"
                ));
            }
        }
        for (key, v) in [
            ("premium_min", s.premium_min),
            ("standard_min", s.standard_min),
        ] {
            if !(1..=100).contains(&v) {
                return Err(format!(
                    "key `scoring.{key}`: {v} is not a score between 1 and 100"
                ));
            }
        }
        if s.premium_min <= s.standard_min {
            return Err(format!(
                "key `scoring.premium_min`: {} must be greater than `scoring.standard_min` ({})",
                s.premium_min, s.standard_min
            ));
        }
        if self.timestamp_tolerance.is_zero() {
            return Err("key `timestamp_tolerance`: must be more than 0s".into());
        }
        if self.event_time_range.max_ahead < self.timestamp_tolerance {
            return Err(format!(
                "key `event_time_range.max_ahead`: {} is shorter than `timestamp_tolerance` ({})",
                humantime::format_duration(self.event_time_range.max_ahead),
                humantime::format_duration(self.timestamp_tolerance)
            ));
        }
        self.turbine.check("turbine")?;
        self.meter.check("meter")
    }
}

impl Preset {
    fn check(&self, kind: &str) -> Result<(), String> {
        for (name, inf) in &self.infer_units {
            let key = format!("{kind}.infer_units.{}", name.0);
            match (&inf.large_above, &inf.large_unit) {
                (Some(_), None) | (None, Some(_)) => {
                    return Err(format!(
                        "key `{key}`: give both `large_above` and `large_unit`, or neither"
                    ))
                }
                (Some(above), Some(unit)) => {
                    units::to_canonical(name.0, 1.0, unit, None)
                        .map_err(|e| format!("key `{key}.large_unit`: {e}"))?;
                    if let Some(below) = inf.canonical_below {
                        if below > *above {
                            return Err(format!(
                                "key `{key}.canonical_below`: {below} is above `large_above` ({above})"
                            ));
                        }
                    }
                }
                (None, None) => {}
            }
            for (field, v) in [
                ("canonical_below", inf.canonical_below),
                ("large_above", inf.large_above),
            ] {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    return Err(format!(
                        "key `{key}.{field}`: must be a magnitude (finite, 0 or more)"
                    ));
                }
            }
        }
        for (name, limit) in &self.limits {
            let key = format!("{kind}.limits.{}", name.0);
            let ordered = [
                ("reject_below", limit.reject_below),
                ("min", limit.min),
                ("max", limit.max),
                ("reject_above", limit.reject_above),
            ];
            let mut lower: Option<(&str, f64)> = None;
            for (field, v) in ordered {
                let Some(v) = v else { continue };
                if v.is_nan() {
                    return Err(format!("key `{key}.{field}`: is not a number"));
                }
                if let Some((lower_field, lower_v)) = lower {
                    if v < lower_v {
                        return Err(format!(
                            "key `{key}.{field}`: {v} is below `{lower_field}` ({lower_v})"
                        ));
                    }
                }
                lower = Some((field, v));
            }
        }
        if let Some(roc) = &self.rate_of_change {
            let key = format!("{kind}.rate_of_change");
            if !(roc.spike_increase.is_finite() && roc.spike_increase > 0.0) {
                return Err(format!(
                    "key `{key}.spike_increase`: {} is not a positive fraction (5.0 = 500 %)",
                    roc.spike_increase
                ));
            }
            if !(roc.drop_decrease > 0.0 && roc.drop_decrease <= 1.0) {
                return Err(format!(
                    "key `{key}.drop_decrease`: {} is not a fraction in (0, 1] (0.9 = 90 %)",
                    roc.drop_decrease
                ));
            }
            if !(roc.min_base.is_finite() && roc.min_base >= 0.0) {
                return Err(format!(
                    "key `{key}.min_base`: {} must be 0 or more",
                    roc.min_base
                ));
            }
            if roc.baseline_max_age.is_zero() {
                return Err(format!(
                    "key `{key}.baseline_max_age`: must be more than 0s"
                ));
            }
        }
        Ok(())
    }
}

/// The event times validate accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTimeRange {
    /// Earliest event time (RFC 3339): older readings are rejected, in
    /// backfill mode too.
    pub earliest: chrono::DateTime<chrono::Utc>,
    /// How far ahead of its reception a reading may be stamped before it is
    /// rejected rather than quarantined as from the future.
    #[serde(with = "humantime_serde")]
    pub max_ahead: Duration,
}

impl Default for EventTimeRange {
    fn default() -> Self {
        EventTimeRange {
            earliest: chrono::DateTime::from_timestamp(631_152_000, 0).expect("1990-01-01"),
            max_ahead: Duration::from_secs(24 * 3600),
        }
    }
}

/// Whether timestamps are checked against reception time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Live data: readings outside the timestamp tolerance of their
    /// reception (future or backdated) are flagged and quarantined.
    #[default]
    Live,
    /// Replay or backfill of historical data: backdated readings are
    /// expected and not flagged; future ones are still quarantined.
    Backfill,
}

/// A reading that must not go on: the class and reason go to the dead-letter headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Short class, e.g. `physical_limit`.
    pub class: &'static str,
    /// What is wrong.
    pub message: String,
}

fn reject(class: &'static str, message: String) -> Rejection {
    Rejection { class, message }
}

/// An asset's rate-of-change baseline: the values of its last clean reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Previous {
    /// Event time of the reading the values came from.
    pub event_time: i64,
    /// Canonical values, indexed by `Metric as usize`.
    pub values: [Option<f64>; Metric::ALL.len()],
}

impl Previous {
    /// The previous value of `metric`.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.values[metric as usize]
    }

    /// A previous reading with just these values (tests, tools).
    pub fn with(event_time: i64, values: &[(Metric, f64)]) -> Previous {
        let mut p = Previous {
            event_time,
            ..Previous::default()
        };
        for (m, v) in values {
            p.values[*m as usize] = Some(*v);
        }
        p
    }

    /// Whether this baseline may be compared with `raw`: it is older than
    /// the reading, not newer than the reading's reception (a clock ahead
    /// must not hide every later reading), and at most `max_age` before it.
    pub fn usable_for(&self, raw: &RawReading, max_age: Duration) -> bool {
        let max_age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        self.event_time < raw.event_time
            && self.event_time <= raw.received_time
            && raw.event_time.saturating_sub(self.event_time) <= max_age
    }
}

/// Earliest event time accepted: 0001-01-01T00:00:00Z.
const MIN_EVENT_TIME: i64 = -62_135_596_800_000;
/// Latest event time accepted: 9999-12-31T23:59:59.999Z.
const MAX_EVENT_TIME: i64 = 253_402_300_799_999;

/// True for event times between the years 1 and 9999: what downstream
/// stores and the runtime's clock arithmetic can hold.
pub fn plausible_event_time(event_time: i64) -> bool {
    (MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&event_time)
}

/// Scores `raw` for `asset`, or says why it must be rejected. `previous` is
/// the asset's baseline; it is only compared with when
/// [`Previous::usable_for`] says so.
pub fn evaluate(
    raw: &RawReading,
    asset: &Asset,
    previous: Option<&Previous>,
    rules: &RuleSet,
    mode: Mode,
    validated_time: i64,
) -> Result<ScoredReading, Rejection> {
    evaluate_at(
        raw,
        asset,
        previous,
        raw.interval_ms,
        rules,
        mode,
        validated_time,
    )
}

/// [`evaluate`] with the reading's interval known (declared by the source,
/// or inferred from the asset's previous reading), for energy per interval.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_at(
    raw: &RawReading,
    asset: &Asset,
    previous: Option<&Previous>,
    interval_ms: Option<i64>,
    rules: &RuleSet,
    mode: Mode,
    validated_time: i64,
) -> Result<ScoredReading, Rejection> {
    if let Some(declared) = raw.asset_kind {
        if declared != asset.kind {
            return Err(reject(
                "asset_kind_mismatch",
                format!(
                    "reading declares {} {} but the asset registry has it as a {}",
                    declared, raw.asset_id, asset.kind
                ),
            ));
        }
    }
    if raw.measurements.is_empty() {
        return Err(reject(
            "no_measurements",
            format!("reading {} of {} has no values", raw.event_id, raw.asset_id),
        ));
    }
    if raw.event_id.trim().is_empty() {
        return Err(reject(
            "missing_field",
            format!("a reading of {} has no event id", raw.asset_id),
        ));
    }
    if raw.asset_id.trim().is_empty() {
        return Err(reject(
            "missing_field",
            format!("reading {} has no asset id", raw.event_id),
        ));
    }
    if !plausible_event_time(raw.event_time) {
        return Err(reject(
            "invalid_timestamp",
            format!(
                "event time {} ms of reading {} is outside the years 1 to 9999",
                raw.event_time, raw.event_id
            ),
        ));
    }
    if !plausible_event_time(raw.received_time) {
        return Err(reject(
            "invalid_timestamp",
            format!(
                "reception time {} ms of reading {} is outside the years 1 to 9999",
                raw.received_time, raw.event_id
            ),
        ));
    }
    let range = &rules.event_time_range;
    let max_ahead = i64::try_from(range.max_ahead.as_millis()).unwrap_or(i64::MAX);
    if raw.event_time < range.earliest.timestamp_millis()
        || raw.event_time > raw.received_time.saturating_add(max_ahead)
    {
        return Err(reject(
            "event_time_range",
            format!(
                "event time {} of reading {} is outside the accepted range ({} up to {} after reception)",
                layout_time(raw.event_time),
                raw.event_id,
                range.earliest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                humantime::format_duration(range.max_ahead)
            ),
        ));
    }
    if raw.interval_ms.is_some_and(|i| i <= 0) {
        return Err(reject(
            "invalid_value",
            format!(
                "reading {} declares an interval of {} ms",
                raw.event_id,
                raw.interval_ms.unwrap_or_default()
            ),
        ));
    }
    let preset = rules.preset(asset.kind);
    let scoring = &rules.scoring;
    let mut scored = empty_scored(raw, asset, validated_time);
    scored.interval_ms = interval_ms;
    let mut flags = Vec::new();

    // 1. Unit standardisation.
    let mut converted = Vec::new();
    let mut inferred = Vec::new();
    for m in &raw.measurements {
        if !m.value.is_finite() {
            return Err(reject(
                "invalid_value",
                format!("{} of {} is {}", m.metric, raw.asset_id, m.value),
            ));
        }
        if scored.metric(m.metric).is_some() {
            return Err(reject(
                "duplicate_metric",
                format!("{} appears twice in reading {}", m.metric, raw.event_id),
            ));
        }
        let value = match m.unit.as_deref().filter(|u| !u.trim().is_empty()) {
            Some(unit) => {
                let (v, c) = units::to_canonical(m.metric, m.value, unit, interval_ms)
                    .map_err(|e| reject("unit", format!("{}: {e}", raw.asset_id)))?;
                if c == Conversion::Assumed {
                    inferred.push(format!(
                        "{} {} {unit} with no interval known taken as hourly -> {} {}",
                        m.metric,
                        m.value,
                        round(v),
                        m.metric.canonical_unit()
                    ));
                } else if c == Conversion::Converted {
                    converted.push(format!(
                        "{} {} {} -> {} {}",
                        m.metric,
                        m.value,
                        unit,
                        round(v),
                        m.metric.canonical_unit()
                    ));
                }
                v
            }
            None => infer_unit(m.metric, m.value, preset, &mut inferred)
                .map_err(|e| reject("unit", format!("{}: {e}", raw.asset_id)))?,
        };
        scored.set_metric(m.metric, value);
    }
    if !converted.is_empty() || !inferred.is_empty() {
        let code = if inferred.is_empty() {
            FlagCode::UnitConverted
        } else {
            FlagCode::UnitInferred
        };
        flags.push(QualityFlag {
            code,
            metric: None,
            deduction: scoring.unit_conversion,
            quarantine: false,
            detail: inferred
                .into_iter()
                .chain(converted)
                .collect::<Vec<_>>()
                .join("; "),
        });
    }

    // 3. Physical limits.
    for (name, limit) in &preset.limits {
        let Some(v) = scored.metric(name.0) else {
            continue;
        };
        let unit = name.0.canonical_unit();
        if let Some(lo) = limit.reject_below.filter(|lo| v < *lo) {
            return Err(reject(
                "physical_limit",
                format!(
                    "{} {} is {} {unit}, below the hard limit {lo} {unit}",
                    asset.kind,
                    raw.asset_id,
                    round(v)
                ),
            ));
        }
        if let Some(hi) = limit.reject_above.filter(|hi| v > *hi) {
            return Err(reject(
                "physical_limit",
                format!(
                    "{} {} is {} {unit}, above the hard limit {hi} {unit}",
                    asset.kind,
                    raw.asset_id,
                    round(v)
                ),
            ));
        }
        let below = limit.min.filter(|lo| v < *lo);
        let above = limit.max.filter(|hi| v > *hi);
        if below.is_some() || above.is_some() {
            flags.push(QualityFlag {
                code: FlagCode::OutOfRange,
                metric: Some(name.0),
                deduction: scoring.validation_warning,
                quarantine: true,
                detail: format!(
                    "{} {} {unit} outside [{}, {}] {unit}",
                    name.0,
                    round(v),
                    limit.min.map_or("-inf".into(), |x| x.to_string()),
                    limit.max.map_or("inf".into(), |x| x.to_string()),
                ),
            });
        }
    }

    // 2. Timestamp sanity against reception time. Saturating: an absurd
    // timestamp is a flag, never an overflow. Backfill expects old data, so
    // only the backdated check is relaxed; a reading from the future is
    // wrong in any mode.
    let tolerance = i64::try_from(rules.timestamp_tolerance.as_millis()).unwrap_or(i64::MAX);
    let ahead = raw.event_time.saturating_sub(raw.received_time);
    let behind = raw.received_time.saturating_sub(raw.event_time);
    if ahead > tolerance {
        flags.push(QualityFlag {
            code: FlagCode::FutureTimestamp,
            metric: None,
            deduction: scoring.validation_warning,
            quarantine: true,
            detail: format!(
                "event time is {} ahead of reception (tolerance {})",
                human_ms(ahead),
                human_ms(tolerance)
            ),
        });
    } else if mode == Mode::Live && behind > tolerance {
        flags.push(QualityFlag {
            code: FlagCode::BackdatedTimestamp,
            metric: None,
            deduction: scoring.validation_warning,
            quarantine: true,
            detail: format!(
                "event time is {} behind reception (tolerance {})",
                human_ms(behind),
                human_ms(tolerance)
            ),
        });
    }

    // 4. Rate of change against the baseline.
    if let (Some(roc), Some(prev)) = (&preset.rate_of_change, previous) {
        if prev.usable_for(raw, roc.baseline_max_age) {
            for name in &roc.metrics {
                let (Some(now), Some(before)) = (scored.metric(name.0), prev.get(name.0)) else {
                    continue;
                };
                if before.abs() <= roc.min_base {
                    continue;
                }
                let change = (now - before) / before.abs();
                let code = if change > roc.spike_increase {
                    Some(FlagCode::Spike)
                } else if change < -roc.drop_decrease {
                    Some(FlagCode::Drop)
                } else {
                    None
                };
                if let Some(code) = code {
                    flags.push(QualityFlag {
                        code,
                        metric: Some(name.0),
                        deduction: scoring.rate_of_change,
                        quarantine: false,
                        detail: format!(
                            "{} went from {} to {} {} ({:+.0} %)",
                            name.0,
                            round(before),
                            round(now),
                            name.0.canonical_unit(),
                            change * 100.0
                        ),
                    });
                }
            }
        }
    }

    // 6. Score and tier.
    scored.flags = flags;
    grade(&mut scored, scoring);
    Ok(scored)
}

/// Sets the score and tier of `scored` from its flags.
fn grade(scored: &mut ScoredReading, scoring: &Scoring) {
    let deducted: i32 = scored.flags.iter().map(|f| f.deduction).sum();
    let score = (100 - deducted).clamp(0, 100);
    scored.quality_tier =
        if scored.flags.iter().any(|f| f.quarantine) || score < scoring.standard_min {
            QualityTier::Quarantine
        } else if score >= scoring.premium_min {
            QualityTier::Premium
        } else {
            QualityTier::Standard
        };
    scored.quality_score = score;
}

/// Flags `scored` as a second reading of its asset at the same event time
/// (with other values: a repeated local hour, overlapping exports) and
/// quarantines it: the first one seen counts.
pub fn mark_duplicate_time(scored: &mut ScoredReading, rules: &RuleSet) {
    scored.flags.push(QualityFlag {
        code: FlagCode::DuplicateTime,
        metric: None,
        deduction: rules.scoring.validation_warning,
        quarantine: true,
        detail: "another reading of this asset at the same event time was seen first".into(),
    });
    grade(scored, &rules.scoring);
}

/// The canonical value of `value` of `metric` that came without a unit;
/// notes what was assumed in `inferred` when the result is flagged.
fn infer_unit(
    metric: Metric,
    value: f64,
    preset: &Preset,
    inferred: &mut Vec<String>,
) -> Result<f64, String> {
    let canonical = metric.canonical_unit();
    let Some(inf) = preset.infer_units.get(&MetricName(metric)) else {
        return match preset.unitless {
            Unitless::Accept => Ok(value),
            Unitless::Flag => {
                inferred.push(format!(
                    "{metric} {value} without unit taken as {canonical}"
                ));
                Ok(value)
            }
            Unitless::Reject => Err(format!(
                "{metric} {value} has no unit and the rules infer none for it"
            )),
        };
    };
    let magnitude = value.abs();
    if inf.canonical_below.is_some_and(|below| magnitude < below) {
        return Ok(value);
    }
    if let (Some(above), Some(unit)) = (inf.large_above, &inf.large_unit) {
        if magnitude > above {
            let (v, _) = units::to_canonical(metric, value, unit, None)?;
            inferred.push(format!(
                "{metric} {value} without unit taken as {unit} -> {} {canonical}",
                round(v)
            ));
            return Ok(v);
        }
    }
    inferred.push(format!(
        "{metric} {value} without unit is ambiguous; taken as {canonical}"
    ));
    Ok(value)
}

/// The values of `scored` that rate-of-change rules compare next time.
pub fn remember(scored: &ScoredReading) -> Previous {
    Previous {
        event_time: scored.event_time,
        values: Metric::ALL.map(|m| scored.metric(m)),
    }
}

/// The baseline `scored` makes for its asset's next readings, if it may
/// make one: only readings that passed (not quarantined) with a sound
/// timestamp and every value in range. A reading from the future or a
/// sensor glitch would otherwise hide or falsely flag the readings after it.
pub fn baseline(scored: &ScoredReading) -> Option<Previous> {
    let clean = scored.quality_tier != QualityTier::Quarantine
        && !scored.flags.iter().any(|f| {
            matches!(
                f.code,
                FlagCode::FutureTimestamp | FlagCode::BackdatedTimestamp | FlagCode::OutOfRange
            )
        });
    clean.then(|| remember(scored))
}

fn empty_scored(raw: &RawReading, asset: &Asset, validated_time: i64) -> ScoredReading {
    ScoredReading {
        site_id: asset.site_id.clone(),
        received_time: raw.received_time,
        validated_time,
        source: raw.source.clone(),
        channel: raw.channel,
        attributes: raw.attributes.clone(),
        ..ScoredReading::new(
            raw.event_id.clone(),
            raw.asset_id.clone(),
            asset.kind,
            raw.event_time,
        )
    }
}

fn layout_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn human_ms(ms: i64) -> String {
    humantime::format_duration(Duration::from_secs((ms / 1000).max(0) as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_model::{IngestChannel, Measurement};

    const T0: i64 = 1_710_511_200_000; // 2024-03-15 14:00:00 UTC

    fn meter() -> Asset {
        Asset {
            id: "MTR-78910".into(),
            kind: AssetKind::Meter,
            site_id: Some("grid-north".into()),
        }
    }

    fn turbine() -> Asset {
        Asset {
            id: "TURBINE_00001".into(),
            kind: AssetKind::Turbine,
            site_id: Some("farm-a".into()),
        }
    }

    fn reading(asset: &str, values: &[(Metric, f64, Option<&str>)]) -> RawReading {
        RawReading {
            event_id: "e".into(),
            asset_id: asset.into(),
            asset_kind: None,
            event_time: T0,
            received_time: T0 + 60_000,
            source: "test".into(),
            channel: IngestChannel::Http,
            measurements: values
                .iter()
                .map(|(m, v, u)| Measurement {
                    metric: *m,
                    value: *v,
                    unit: u.map(str::to_string),
                })
                .collect(),
            attributes: Default::default(),
            interval_ms: None,
        }
    }

    fn eval(
        raw: &RawReading,
        asset: &Asset,
        prev: Option<&Previous>,
    ) -> Result<ScoredReading, Rejection> {
        evaluate(
            raw,
            asset,
            prev,
            &RuleSet::default_rules(),
            Mode::Live,
            T0 + 120_000,
        )
    }

    #[test]
    fn the_documented_journey_scores_95() {
        // MTR-78910 records 1250 W: 1.25 kW, -5 for the conversion.
        let s = eval(
            &reading("MTR-78910", &[(Metric::Power, 1250.0, Some("W"))]),
            &meter(),
            None,
        )
        .unwrap();
        assert_eq!(s.power_kw, Some(1.25));
        assert_eq!(s.quality_score, 95);
        assert_eq!(s.quality_tier, QualityTier::Premium);
        assert_eq!(s.flags[0].code, FlagCode::UnitConverted);
        assert_eq!(s.site_id.as_deref(), Some("grid-north"));
    }

    #[test]
    fn clean_reading_is_premium_100() {
        let s = eval(
            &reading("MTR-78910", &[(Metric::Power, 3.2, Some("kW"))]),
            &meter(),
            None,
        )
        .unwrap();
        assert_eq!(
            (s.quality_score, s.quality_tier),
            (100, QualityTier::Premium)
        );
        assert!(s.flags.is_empty());
    }

    #[test]
    fn missing_unit_is_inferred_by_magnitude() {
        let small = eval(&reading("M", &[(Metric::Power, 4.0, None)]), &meter(), None).unwrap();
        assert_eq!((small.power_kw, small.quality_score), (Some(4.0), 100));
        let large = eval(
            &reading("M", &[(Metric::Power, 2500.0, None)]),
            &meter(),
            None,
        )
        .unwrap();
        assert_eq!(large.power_kw, Some(2.5));
        assert_eq!(large.quality_score, 95);
        assert_eq!(large.flags[0].code, FlagCode::UnitInferred);
        let middle = eval(
            &reading("M", &[(Metric::Power, 15.0, None)]),
            &meter(),
            None,
        )
        .unwrap();
        assert_eq!(middle.flags[0].code, FlagCode::UnitInferred);
    }

    #[test]
    fn negative_meter_power_is_rejected() {
        let r = eval(
            &reading("M", &[(Metric::Power, -0.5, Some("kW"))]),
            &meter(),
            None,
        )
        .unwrap_err();
        assert_eq!(r.class, "physical_limit");
        assert!(r.message.contains("below the hard limit"), "{}", r.message);
    }

    #[test]
    fn out_of_range_is_quarantined_whatever_the_score() {
        let s = eval(
            &reading("M", &[(Metric::Power, 25.0, Some("kW"))]),
            &meter(),
            None,
        )
        .unwrap();
        assert_eq!(s.quality_score, 85);
        assert_eq!(s.quality_tier, QualityTier::Quarantine);
        assert!(s.flags[0].quarantine);
    }

    #[test]
    fn out_of_tolerance_timestamps_are_quarantined_backfill_only_relaxes_backdated() {
        let mut r = reading("M", &[(Metric::Power, 1.0, Some("kW"))]);
        r.event_time = r.received_time + 2 * 3_600_000;
        let s = eval(&r, &meter(), None).unwrap();
        assert_eq!(s.flags[0].code, FlagCode::FutureTimestamp);
        assert_eq!(
            (s.quality_score, s.quality_tier),
            (85, QualityTier::Quarantine)
        );
        let backfill = |r: &RawReading| {
            evaluate(
                r,
                &meter(),
                None,
                &RuleSet::default_rules(),
                Mode::Backfill,
                0,
            )
        };
        // Backfill still quarantines a reading from the future.
        let s = backfill(&r).unwrap();
        assert_eq!(s.flags[0].code, FlagCode::FutureTimestamp);
        assert_eq!(s.quality_tier, QualityTier::Quarantine);
        r.event_time = r.received_time - 3 * 3_600_000;
        let s = eval(&r, &meter(), None).unwrap();
        assert_eq!(s.flags[0].code, FlagCode::BackdatedTimestamp);
        assert_eq!(s.quality_tier, QualityTier::Quarantine);
        assert!(backfill(&r).unwrap().flags.is_empty());
    }

    #[test]
    fn event_times_outside_the_range_are_rejected_in_both_modes() {
        let mut r = reading("M", &[(Metric::Power, 1.0, Some("kW"))]);
        let at = |y: i32| {
            chrono::NaiveDate::from_ymd_opt(y, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_millis()
        };
        for mode in [Mode::Live, Mode::Backfill] {
            for event in [at(2199), at(1970), r.received_time + 25 * 3_600_000] {
                r.event_time = event;
                let err =
                    evaluate(&r, &meter(), None, &RuleSet::default_rules(), mode, 0).unwrap_err();
                assert_eq!(err.class, "event_time_range", "{}", err.message);
            }
        }
        // 20 hours ahead: accepted, quarantined.
        r.event_time = r.received_time + 20 * 3_600_000;
        assert_eq!(
            eval(&r, &meter(), None).unwrap().quality_tier,
            QualityTier::Quarantine
        );
        // A backfill of 1995 data goes through.
        r.event_time = at(1995);
        let s = evaluate(
            &r,
            &meter(),
            None,
            &RuleSet::default_rules(),
            Mode::Backfill,
            0,
        )
        .unwrap();
        assert!(s.flags.is_empty());
    }

    #[test]
    fn required_fields_must_be_there() {
        let mut r = reading("M", &[(Metric::Power, 1.0, Some("kW"))]);
        r.event_id = " ".into();
        assert_eq!(eval(&r, &meter(), None).unwrap_err().class, "missing_field");
        let mut r = reading("M", &[(Metric::Power, 1.0, Some("kW"))]);
        r.received_time = i64::MAX;
        assert_eq!(
            eval(&r, &meter(), None).unwrap_err().class,
            "invalid_timestamp"
        );
        let mut r = reading("M", &[(Metric::Power, 1.0, Some("kW"))]);
        r.interval_ms = Some(0);
        assert_eq!(eval(&r, &meter(), None).unwrap_err().class, "invalid_value");
    }

    #[test]
    fn values_are_finite_after_conversion() {
        let r = reading("T", &[(Metric::WindDirection, 1e308, Some("rad"))]);
        let err = eval(&r, &turbine(), None).unwrap_err();
        assert_eq!(err.class, "unit");
        assert!(
            err.message.contains("not a finite value"),
            "{}",
            err.message
        );
        let r = reading("T", &[(Metric::Power, 1e308, Some("MW"))]);
        assert_eq!(eval(&r, &turbine(), None).unwrap_err().class, "unit");
    }

    #[test]
    fn a_15_minute_meters_kwh_is_four_times_the_power() {
        let r = reading("M", &[(Metric::Power, 0.5, Some("kWh"))]);
        let s = evaluate_at(
            &r,
            &meter(),
            None,
            Some(900_000),
            &RuleSet::default_rules(),
            Mode::Live,
            0,
        )
        .unwrap();
        assert_eq!(s.power_kw, Some(2.0));
        assert_eq!(s.interval_ms, Some(900_000));
        assert_eq!(s.flags[0].code, FlagCode::UnitConverted);
        // No interval known: hourly, flagged as inferred.
        let s = eval(&r, &meter(), None).unwrap();
        assert_eq!(s.power_kw, Some(0.5));
        assert_eq!(s.flags[0].code, FlagCode::UnitInferred);
        assert!(
            s.flags[0].detail.contains("taken as hourly"),
            "{}",
            s.flags[0].detail
        );
    }

    #[test]
    fn extreme_timestamps_saturate_instead_of_overflowing() {
        let mut r = reading("M", &[(Metric::Power, 1.0, Some("kW"))]);
        for t in [i64::MAX, i64::MIN, MAX_EVENT_TIME + 1, MIN_EVENT_TIME - 1] {
            r.event_time = t;
            for received in [i64::MIN, 0, i64::MAX] {
                r.received_time = received;
                let err = eval(&r, &meter(), None).unwrap_err();
                assert_eq!(err.class, "invalid_timestamp");
            }
        }
        // Both plausible, far apart: a range rejection, not an overflow.
        r.event_time = MAX_EVENT_TIME;
        r.received_time = MIN_EVENT_TIME;
        assert_eq!(
            eval(&r, &meter(), None).unwrap_err().class,
            "event_time_range"
        );
        // A huge tolerance and range do not overflow either.
        let mut rules = RuleSet::default_rules();
        rules.timestamp_tolerance = Duration::MAX;
        rules.event_time_range.max_ahead = Duration::MAX;
        rules.event_time_range.earliest =
            chrono::DateTime::from_timestamp_millis(MIN_EVENT_TIME).unwrap();
        r.event_time = T0;
        r.received_time = MIN_EVENT_TIME;
        let s = evaluate(&r, &meter(), None, &rules, Mode::Live, 0).unwrap();
        assert!(s.flags.is_empty());
        // Nor does an ancient baseline.
        let prev = Previous::with(MIN_EVENT_TIME, &[(Metric::Power, 1.0)]);
        r.event_time = MAX_EVENT_TIME;
        r.received_time = MAX_EVENT_TIME;
        assert!(evaluate(&r, &meter(), Some(&prev), &rules, Mode::Live, 0)
            .unwrap()
            .flags
            .is_empty());
    }

    #[test]
    fn spikes_and_drops_against_previous() {
        let prev = Previous::with(T0 - 60_000, &[(Metric::Power, 1.0)]);
        let spike = eval(
            &reading("M", &[(Metric::Power, 7.0, Some("kW"))]),
            &meter(),
            Some(&prev),
        )
        .unwrap();
        assert_eq!(spike.flags[0].code, FlagCode::Spike);
        assert_eq!(spike.quality_score, 80);
        let ok = eval(
            &reading("M", &[(Metric::Power, 5.9, Some("kW"))]),
            &meter(),
            Some(&prev),
        )
        .unwrap();
        assert!(ok.flags.is_empty());
        let drop = eval(
            &reading("M", &[(Metric::Power, 0.05, Some("kW"))]),
            &meter(),
            Some(&prev),
        )
        .unwrap();
        assert_eq!(drop.flags[0].code, FlagCode::Drop);
        // An older reading arriving late is not compared.
        let mut late = reading("M", &[(Metric::Power, 9.0, Some("kW"))]);
        late.event_time = T0 - 120_000;
        assert!(eval(&late, &meter(), Some(&prev)).unwrap().flags.is_empty());
    }

    #[test]
    fn several_warnings_push_below_70() {
        let prev = Previous::with(T0 - 60_000, &[(Metric::Power, 0.5)]);
        let mut r = reading("M", &[(Metric::Power, 9000.0, Some("W"))]);
        r.event_time = r.received_time + 90 * 60_000;
        let s = eval(&r, &meter(), Some(&prev)).unwrap();
        // -5 unit, -15 future, -20 spike = 60.
        assert_eq!(s.quality_score, 60);
        assert_eq!(s.quality_tier, QualityTier::Quarantine);
    }

    #[test]
    fn turbine_preset_checks_turbine_sensors() {
        let r = reading(
            "TURBINE_00001",
            &[
                (Metric::WindSpeed, 12.0, Some("m/s")),
                (Metric::Power, 2100.0, Some("kW")),
                (Metric::GearboxTemperature, 85.0, Some("degC")),
                (Metric::OilPressure, 40.0, Some("bar")),
            ],
        );
        let s = eval(&r, &turbine(), None).unwrap();
        assert_eq!(s.power_kw, Some(2100.0), "kW given, nothing inferred");
        assert_eq!(s.quality_score, 100);
        let mut bad = r.clone();
        bad.measurements.push(Measurement {
            metric: Metric::TowerLean,
            value: 25.0,
            unit: Some("deg".into()),
        });
        assert_eq!(
            eval(&bad, &turbine(), None).unwrap().quality_tier,
            QualityTier::Quarantine
        );
    }

    #[test]
    fn wrong_unit_kind_mismatch_and_empty_readings_are_rejected() {
        let r = eval(
            &reading("M", &[(Metric::Power, 1.0, Some("degC"))]),
            &meter(),
            None,
        )
        .unwrap_err();
        assert_eq!(r.class, "unit");
        let mut k = reading("M", &[(Metric::Power, 1.0, Some("kW"))]);
        k.asset_kind = Some(AssetKind::Turbine);
        assert_eq!(
            eval(&k, &meter(), None).unwrap_err().class,
            "asset_kind_mismatch"
        );
        assert_eq!(
            eval(&reading("M", &[]), &meter(), None).unwrap_err().class,
            "no_measurements"
        );
    }

    #[test]
    fn rules_file_errors_name_the_key() {
        let text = DEFAULT_RULES.replace("spike_increase", "spike_increse");
        let err = RuleSet::from_toml(&text).unwrap_err();
        assert!(err.contains("spike_increse"), "{err}");
        let err = RuleSet::from_toml("[scoring]\nunit_conversion = 'x'").unwrap_err();
        assert!(err.contains("unit_conversion"), "{err}");
        let without_fault: String = DEFAULT_RULES
            .lines()
            .filter(|l| !l.starts_with("fault ="))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = RuleSet::from_toml(&without_fault).unwrap_err();
        assert!(err.contains("fault"), "{err}");
    }

    #[test]
    fn every_deduction_of_the_rules_is_in_the_file() {
        let s = RuleSet::default_rules().scoring;
        assert_eq!(
            (
                s.unit_conversion,
                s.interpolation_per_hour,
                s.validation_warning,
                s.rate_of_change,
                s.fault
            ),
            (5, 10, 15, 20, 30)
        );
        assert_eq!((s.premium_min, s.standard_min), (90, 70));
    }

    fn bad(from: &str, to: &str) -> String {
        assert!(DEFAULT_RULES.contains(from), "{from}");
        RuleSet::from_toml(&DEFAULT_RULES.replacen(from, to, 1)).unwrap_err()
    }

    #[test]
    fn inconsistent_rules_are_refused_naming_the_key() {
        for (from, to, key) in [
            (
                "premium_min = 90",
                "premium_min = 70",
                "scoring.premium_min",
            ),
            (
                "premium_min = 90",
                "premium_min = 60",
                "scoring.premium_min",
            ),
            (
                "standard_min = 70",
                "standard_min = 0",
                "scoring.standard_min",
            ),
            ("fault = 30", "fault = -30", "scoring.fault"),
            (
                "interpolation_per_hour = 10",
                "interpolation_per_hour = 101",
                "scoring.interpolation_per_hour",
            ),
            (
                "timestamp_tolerance = \"1h\"",
                "timestamp_tolerance = \"0s\"",
                "timestamp_tolerance",
            ),
            (
                "large_unit = \"W\"",
                "large_unit = \"degC\"",
                "meter.infer_units.power.large_unit",
            ),
            (
                "canonical_below = 10.0",
                "canonical_below = 5000.0",
                "meter.infer_units.power.canonical_below",
            ),
            (
                "large_above = 10000.0\nlarge_unit = \"W\"",
                "large_above = 10000.0",
                "turbine.infer_units.power",
            ),
            (
                "power = { min = -200.0, max = 4000.0 }",
                "power = { min = 200.0, max = 40.0 }",
                "turbine.limits.power.max",
            ),
            (
                "power = { reject_below = 0.0, min = 0.0, max = 20.0 }",
                "power = { reject_below = 1.0, min = 0.0, max = 20.0 }",
                "meter.limits.power.min",
            ),
            (
                "drop_decrease = 0.9 ",
                "drop_decrease = 1.5 ",
                "meter.rate_of_change.drop_decrease",
            ),
            (
                "spike_increase = 5.0\ndrop_decrease = 0.9\nmin_base = 50.0",
                "spike_increase = 0.0\ndrop_decrease = 0.9\nmin_base = 50.0",
                "turbine.rate_of_change.spike_increase",
            ),
            (
                "baseline_max_age = \"1h\"",
                "baseline_max_age = \"0s\"",
                "turbine.rate_of_change.baseline_max_age",
            ),
            ("unitless = \"flag\"", "unitless = \"guess\"", "unitless"),
        ] {
            let err = bad(from, to);
            assert!(err.contains(key), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn turbine_power_without_unit_is_inferred_from_rated_power() {
        // 2.1 MW sent in W without a unit.
        let w = eval(
            &reading("T", &[(Metric::Power, 2_100_000.0, None)]),
            &turbine(),
            None,
        )
        .unwrap();
        assert_eq!(w.power_kw, Some(2100.0));
        assert_eq!(w.flags[0].code, FlagCode::UnitInferred);
        assert_eq!(w.quality_score, 95);
        assert!(
            w.flags[0].detail.contains("taken as W"),
            "{}",
            w.flags[0].detail
        );
        // Any other magnitude is kW, but flagged: it might have been MW.
        for v in [2.1, 1500.0, 0.0] {
            let s = eval(&reading("T", &[(Metric::Power, v, None)]), &turbine(), None).unwrap();
            assert_eq!(s.power_kw, Some(v));
            assert_eq!(s.flags[0].code, FlagCode::UnitInferred, "{v}");
            assert!(
                s.flags[0].detail.contains("ambiguous"),
                "{}",
                s.flags[0].detail
            );
        }
    }

    #[test]
    fn other_metrics_without_unit_are_flagged_once() {
        let s = eval(
            &reading(
                "T",
                &[
                    (Metric::WindSpeed, 8.0, None),
                    (Metric::GearboxTemperature, 60.0, None),
                    (Metric::Power, 1500.0, Some("kW")),
                ],
            ),
            &turbine(),
            None,
        )
        .unwrap();
        assert_eq!(s.wind_speed_ms, Some(8.0));
        assert_eq!(s.flags.len(), 1);
        assert_eq!(s.flags[0].code, FlagCode::UnitInferred);
        assert_eq!(s.quality_score, 95);
        assert!(
            s.flags[0].detail.contains("wind_speed") && s.flags[0].detail.contains("gearbox"),
            "{}",
            s.flags[0].detail
        );
        let energy = eval(
            &reading("M", &[(Metric::Energy, 1234.5, None)]),
            &meter(),
            None,
        )
        .unwrap();
        assert_eq!(energy.flags[0].code, FlagCode::UnitInferred);
        // The policy is data.
        let accept = RuleSet::from_toml(&DEFAULT_RULES.replacen(
            "[turbine]\nunitless = \"flag\"",
            "[turbine]\nunitless = \"accept\"",
            1,
        ))
        .unwrap();
        let r = reading("T", &[(Metric::WindSpeed, 8.0, None)]);
        let s = evaluate(&r, &turbine(), None, &accept, Mode::Live, 0).unwrap();
        assert!(s.flags.is_empty());
        let refuse = RuleSet::from_toml(&DEFAULT_RULES.replacen(
            "[turbine]\nunitless = \"flag\"",
            "[turbine]\nunitless = \"reject\"",
            1,
        ))
        .unwrap();
        assert_eq!(
            evaluate(&r, &turbine(), None, &refuse, Mode::Live, 0)
                .unwrap_err()
                .class,
            "unit"
        );
    }

    #[test]
    fn baselines_are_used_only_when_usable() {
        let spike = reading("M", &[(Metric::Power, 9.0, Some("kW"))]);
        let flagged = |prev: &Previous| {
            eval(&spike, &meter(), Some(prev))
                .unwrap()
                .flags
                .iter()
                .any(|f| f.code == FlagCode::Spike)
        };
        assert!(flagged(&Previous::with(
            T0 - 60_000,
            &[(Metric::Power, 1.0)]
        )));
        // Newer than the reading's reception: a clock ahead, ignored.
        assert!(!flagged(&Previous::with(
            spike.received_time + 1,
            &[(Metric::Power, 1.0)]
        )));
        // Older than baseline_max_age (2 h for meters).
        assert!(!flagged(&Previous::with(
            T0 - 2 * 3_600_000 - 1,
            &[(Metric::Power, 1.0)]
        )));
        assert!(flagged(&Previous::with(
            T0 - 2 * 3_600_000,
            &[(Metric::Power, 1.0)]
        )));
    }

    #[test]
    fn only_clean_readings_make_a_baseline() {
        let ok = eval(
            &reading("M", &[(Metric::Power, 1.0, Some("kW"))]),
            &meter(),
            None,
        )
        .unwrap();
        assert_eq!(baseline(&ok).unwrap().get(Metric::Power), Some(1.0));
        let mut future = reading("M", &[(Metric::Power, 1.0, Some("kW"))]);
        future.event_time = future.received_time + 2 * 3_600_000;
        assert!(baseline(&eval(&future, &meter(), None).unwrap()).is_none());
        let mut old = reading("M", &[(Metric::Power, 1.0, Some("kW"))]);
        old.event_time = old.received_time - 2 * 3_600_000;
        assert!(baseline(&eval(&old, &meter(), None).unwrap()).is_none());
        let glitch = eval(
            &reading("M", &[(Metric::Power, 42.0, Some("kW"))]),
            &meter(),
            None,
        )
        .unwrap();
        assert!(baseline(&glitch).is_none());
    }
}
