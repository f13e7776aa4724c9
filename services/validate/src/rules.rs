//! The validation rules of `smart-meter-etl-rules.md` (sections 1, 3 and 6),
//! as data plus one pure function.
//!
//! A [`RuleSet`] is loaded from a TOML file with one preset per asset kind
//! (`rules/default.toml` ships turbine and meter presets); [`evaluate`] turns a
//! raw reading, its asset and the asset's previous values into a scored
//! reading or a rejection. Nothing here knows about Kafka, so every rule is
//! unit-tested directly.

use std::collections::BTreeMap;
use std::time::Duration;

use gale_runtime::schema::{
    AssetKind, FlagCode, Metric, MetricName, QualityFlag, QualityTier, RawReading, ScoredReading,
};
use serde::Deserialize;

use crate::assets::Asset;
use crate::units::{self, Conversion};

/// The built-in rules file.
pub const DEFAULT_RULES: &str = include_str!("../rules/default.toml");

/// Points and tiers of the quality score.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scoring {
    /// Deducted once when any value was converted or its unit inferred.
    pub unit_conversion: i32,
    /// Deducted per validation warning (timestamp, out of range).
    pub validation_warning: i32,
    /// Deducted per rate-of-change flag.
    pub rate_of_change: i32,
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

/// How to read a value that came without a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitInference {
    /// Values below this are taken as canonical without a flag.
    pub canonical_below: f64,
    /// Values above this are taken to be in `large_unit` and converted.
    pub large_above: f64,
    /// The unit assumed for large values, e.g. `W`.
    pub large_unit: String,
}

/// Spike and drop detection against the asset's previous value.
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
}

/// Rules for one asset kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Unit inference per metric, for values without a unit.
    #[serde(default)]
    pub infer_units: BTreeMap<MetricName, UnitInference>,
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
    /// reading is flagged as future or backdated.
    #[serde(with = "humantime_serde")]
    pub timestamp_tolerance: Duration,
    /// Rules for turbines.
    pub turbine: Preset,
    /// Rules for meters.
    pub meter: Preset,
}

impl RuleSet {
    /// Parses a rules file; errors name the key.
    pub fn from_toml(text: &str) -> Result<RuleSet, String> {
        toml::from_str(text).map_err(|e| e.to_string())
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
}

/// Whether timestamps are checked against reception time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Live data: future and backdated readings are flagged.
    #[default]
    Live,
    /// Replay or backfill of historical data: timestamp checks are skipped.
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

/// The last accepted values of an asset, for rate-of-change checks.
#[derive(Debug, Clone, Default)]
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
}

/// Scores `raw` for `asset`, or says why it must be rejected.
pub fn evaluate(
    raw: &RawReading,
    asset: &Asset,
    previous: Option<&Previous>,
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
    let preset = rules.preset(asset.kind);
    let scoring = &rules.scoring;
    let mut scored = empty_scored(raw, asset, validated_time);
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
                let (v, c) = units::to_canonical(m.metric, m.value, unit)
                    .map_err(|e| reject("unit", format!("{}: {e}", raw.asset_id)))?;
                if c == Conversion::Converted {
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
            None => match preset.infer_units.get(&MetricName(m.metric)) {
                Some(inf) if m.value.abs() < inf.canonical_below => m.value,
                Some(inf) if m.value.abs() > inf.large_above => {
                    let (v, _) = units::to_canonical(m.metric, m.value, &inf.large_unit)
                        .map_err(|e| reject("unit", format!("rules file: {e}")))?;
                    inferred.push(format!(
                        "{} {} without unit taken as {} -> {} {}",
                        m.metric,
                        m.value,
                        inf.large_unit,
                        round(v),
                        m.metric.canonical_unit()
                    ));
                    v
                }
                Some(_) => {
                    inferred.push(format!(
                        "{} {} without unit is ambiguous; taken as {}",
                        m.metric,
                        m.value,
                        m.metric.canonical_unit()
                    ));
                    m.value
                }
                None => m.value,
            },
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

    // 2. Timestamp sanity against reception time.
    if mode == Mode::Live {
        let tolerance = rules.timestamp_tolerance.as_millis() as i64;
        let skew = raw.event_time - raw.received_time;
        if skew > tolerance {
            flags.push(QualityFlag {
                code: FlagCode::FutureTimestamp,
                metric: None,
                deduction: scoring.validation_warning,
                quarantine: false,
                detail: format!(
                    "event time is {} ahead of reception (tolerance {})",
                    human_ms(skew),
                    human_ms(tolerance)
                ),
            });
        } else if -skew > tolerance {
            flags.push(QualityFlag {
                code: FlagCode::BackdatedTimestamp,
                metric: None,
                deduction: scoring.validation_warning,
                quarantine: false,
                detail: format!(
                    "event time is {} behind reception (tolerance {})",
                    human_ms(-skew),
                    human_ms(tolerance)
                ),
            });
        }
    }

    // 4. Rate of change against the previous reading.
    if let (Some(roc), Some(prev)) = (&preset.rate_of_change, previous) {
        if prev.event_time < raw.event_time {
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
    let deducted: i32 = flags.iter().map(|f| f.deduction).sum();
    let score = (100 - deducted).clamp(0, 100);
    let tier = if flags.iter().any(|f| f.quarantine) || score < scoring.standard_min {
        QualityTier::Quarantine
    } else if score >= scoring.premium_min {
        QualityTier::Premium
    } else {
        QualityTier::Standard
    };
    scored.quality_score = score;
    scored.quality_tier = tier;
    scored.flags = flags;
    Ok(scored)
}

/// The values of `scored` that rate-of-change rules compare next time.
pub fn remember(scored: &ScoredReading) -> Previous {
    Previous {
        event_time: scored.event_time,
        values: Metric::ALL.map(|m| scored.metric(m)),
    }
}

fn empty_scored(raw: &RawReading, asset: &Asset, validated_time: i64) -> ScoredReading {
    ScoredReading {
        event_id: raw.event_id.clone(),
        asset_id: raw.asset_id.clone(),
        asset_kind: asset.kind,
        site_id: asset.site_id.clone(),
        event_time: raw.event_time,
        received_time: raw.received_time,
        validated_time,
        source: raw.source.clone(),
        channel: raw.channel,
        wind_speed_ms: None,
        wind_direction_deg: None,
        rotor_speed_rpm: None,
        power_kw: None,
        energy_kwh: None,
        nacelle_temperature_c: None,
        gearbox_temperature_c: None,
        generator_temperature_c: None,
        vibration_ms2: None,
        oil_pressure_bar: None,
        brake_pressure_bar: None,
        pitch_angle_deg: None,
        yaw_angle_deg: None,
        tower_lean_deg: None,
        latitude_deg: None,
        longitude_deg: None,
        quality_score: 100,
        quality_tier: QualityTier::Premium,
        flags: Vec::new(),
        attributes: raw.attributes.clone(),
    }
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
    use gale_runtime::schema::{IngestChannel, Measurement};

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
    fn future_and_backdated_timestamps_are_flagged_unless_backfilling() {
        let mut r = reading("M", &[(Metric::Power, 1.0, Some("kW"))]);
        r.event_time = r.received_time + 2 * 3_600_000;
        let s = eval(&r, &meter(), None).unwrap();
        assert_eq!(s.flags[0].code, FlagCode::FutureTimestamp);
        assert_eq!(
            (s.quality_score, s.quality_tier),
            (85, QualityTier::Standard)
        );
        r.event_time = r.received_time - 3 * 3_600_000;
        assert_eq!(
            eval(&r, &meter(), None).unwrap().flags[0].code,
            FlagCode::BackdatedTimestamp
        );
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
        r.event_time = r.received_time + 2 * 3_600_000;
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
        assert_eq!(s.power_kw, Some(2100.0), "no W inference for turbines");
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
    }
}
