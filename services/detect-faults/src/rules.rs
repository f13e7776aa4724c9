//! The fault rules as data: thresholds, hysteresis, hold times, severities
//! and maintenance flags of `windmill-iot-fault-simulation.md` (turbines)
//! and `smart-meter-etl-rules.md` sections 2, 4 and 6 (meters, gaps,
//! scoring), loaded from TOML.
//!
//! `rules/default.toml` holds every number of the seeds; operators copy and
//! change it instead of the code. The file is checked as a whole when it
//! loads, so a bad value stops the stage at start with the key's name
//! rather than opening nonsense faults. Leaving a rule's table out disables
//! the rule; an open fault of it closes at the asset's next reading.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::fault::{AssetKind, FaultCode, Severity};
use crate::Error;

/// The built-in rules file.
pub const DEFAULT_RULES: &str = include_str!("../rules/default.toml");

/// Longest duration any key accepts: ten years, so event-time sums never overflow.
const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

const DAY: Duration = Duration::from_secs(86_400);

/// The whole rules file: one section per asset kind.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Rules for wind turbines.
    pub turbine: TurbineRules,
    /// Rules for smart meters.
    pub meter: MeterRules,
}

/// Rules for wind turbines.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurbineRules {
    /// Quality points deducted from a reading per fault active on its asset
    /// (section 6: fault detection, -30).
    pub fault_deduction: i32,
    /// A run of readings (a condition holding, or clearing) is broken by a
    /// silence this long: a condition is not known to have held across a gap.
    #[serde(with = "humantime_serde")]
    pub run_max_gap: Duration,
    /// An asset silent this long is taken as retired: its open faults close
    /// and its state is emptied, so the runtime may drop it. Absent: never.
    #[serde(default, with = "humantime_serde")]
    pub retire_after: Option<Duration>,
    /// Cut-in wind speed (m/s) when the reading's asset model does not say.
    pub cut_in_wind_speed_ms: f64,
    /// Wind at or above this (m/s) is a storm stop, not "running".
    pub cut_out_wind_speed_ms: f64,
    /// No reading for a few hours.
    pub missing_short: Option<GapRule>,
    /// No reading for a day.
    pub missing_extended: Option<GapRule>,
    /// Gearbox temperature above `threshold` (°C).
    pub gearbox_overheat: Option<LimitRule>,
    /// Generator temperature above `threshold` (°C).
    pub generator_overheat: Option<LimitRule>,
    /// Vibration above `threshold` (m/s²).
    pub high_vibration: Option<LimitRule>,
    /// Oil pressure below `threshold` (bar).
    pub low_oil_pressure: Option<LimitRule>,
    /// Tower lean above `threshold` (degrees).
    pub tower_lean: Option<LimitRule>,
    /// Running, yet output below a fixed level.
    pub low_power_output: Option<LowPowerRule>,
    /// Output below a fraction of the power curve's expectation.
    pub underperformance: Option<UnderperformanceRule>,
}

/// Rules for smart meters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterRules {
    /// Quality points deducted from a reading per fault active on its asset.
    pub fault_deduction: i32,
    /// A run of readings is broken by a silence this long.
    #[serde(with = "humantime_serde")]
    pub run_max_gap: Duration,
    /// An asset silent this long is taken as retired (see the turbine key).
    #[serde(default, with = "humantime_serde")]
    pub retire_after: Option<Duration>,
    /// No reading for a few hours.
    pub missing_short: Option<GapRule>,
    /// No reading for a day.
    pub missing_extended: Option<GapRule>,
    /// Zero for a long time, vacant properties excepted.
    pub zero_value: Option<ZeroValueRule>,
    /// The same non-zero value for a long time.
    pub stuck_value: Option<StuckValueRule>,
    /// Above capacity for several readings in a row.
    pub overload: Option<OverloadRule>,
    /// Hardly any variation over a week.
    pub low_variance: Option<LowVarianceRule>,
}

/// MISSING_SHORT or MISSING_EXTENDED: no reading for `after`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapRule {
    /// Severity of the fault.
    pub severity: Severity,
    /// The fault needs a visit or repair.
    pub maintenance_required: bool,
    /// Silence that opens the fault, counted from when the next reading was
    /// due; the fault opens at exactly that event time.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
}

/// A limit on one turbine metric, with hysteresis. Whether the fault is
/// above or below the limit is the rule's (only LOW_OIL_PRESSURE is below).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRule {
    /// Severity at opening.
    pub severity: Severity,
    /// The fault needs a visit or repair.
    pub maintenance_required: bool,
    /// The limit, strict: a value exactly at it is no fault.
    pub threshold: f64,
    /// An open fault clears only strictly beyond this (below it for an
    /// upper limit), so a value hovering at `threshold` does not flap.
    pub clear_threshold: f64,
    /// How long the limit must be exceeded (from the first reading beyond
    /// it to the current one) before the fault opens; `0s`: at once.
    #[serde(with = "humantime_serde")]
    pub open_after: Duration,
    /// How long values must be clear before the fault closes; `0s`: at the
    /// first clear reading.
    #[serde(with = "humantime_serde")]
    pub close_after: Duration,
    /// An open fault is republished (UPDATED) when its peak passes the last
    /// published one by this much; absent: no peak updates.
    #[serde(default)]
    pub update_margin: Option<f64>,
    /// A second, harder limit raising the open fault's severity.
    #[serde(default)]
    pub escalation: Option<Escalation>,
}

/// A harder limit at which an open fault's severity rises.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// Beyond this (strictly) the fault takes `severity`.
    pub threshold: f64,
    /// Severity from then on, until the fault closes.
    pub severity: Severity,
}

/// LOW_POWER_OUTPUT: running (rotor turning, or wind between cut-in and
/// cut-out) yet below `threshold_kw`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LowPowerRule {
    /// Severity of the fault.
    pub severity: Severity,
    /// The fault needs a visit or repair.
    pub maintenance_required: bool,
    /// Output below this (kW, strict) while running is the fault.
    pub threshold_kw: f64,
    /// An open fault clears when output reaches this (kW) or the turbine stops.
    pub clear_threshold_kw: f64,
    /// A rotor faster than this (rpm) is turning.
    pub rotor_turning_rpm: f64,
    /// How long the condition must hold before the fault opens.
    #[serde(with = "humantime_serde")]
    pub open_after: Duration,
    /// How long it must be clear before the fault closes.
    #[serde(with = "humantime_serde")]
    pub close_after: Duration,
    /// UPDATED when output falls this much (kW) below the last published low.
    #[serde(default)]
    pub update_margin: Option<f64>,
}

/// UNDERPERFORMANCE: output below `threshold` × expected output, with wind
/// above cut-in and an expectation of at least `min_expected_kw`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnderperformanceRule {
    /// Severity of the fault.
    pub severity: Severity,
    /// The fault needs a visit or repair.
    pub maintenance_required: bool,
    /// Performance ratio (power / expected power) below which (strict) the
    /// turbine underperforms.
    pub threshold: f64,
    /// An open fault clears at or above this ratio.
    pub clear_threshold: f64,
    /// Expected power below this (kW) is not judged: near cut-in the curve
    /// is steep and a ratio says little.
    pub min_expected_kw: f64,
    /// How long the turbine must underperform before the fault opens.
    #[serde(with = "humantime_serde")]
    pub open_after: Duration,
    /// How long it must perform before the fault closes.
    #[serde(with = "humantime_serde")]
    pub close_after: Duration,
    /// UPDATED when the ratio falls this much below the last published low.
    #[serde(default)]
    pub update_margin: Option<f64>,
}

/// ZERO_VALUE: power at or below `threshold_kw` for `open_after`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroValueRule {
    /// Severity of the fault.
    pub severity: Severity,
    /// The fault needs a visit or repair.
    pub maintenance_required: bool,
    /// Power at or below this (kW) counts as zero.
    pub threshold_kw: f64,
    /// Readings of vacant properties do not count (and clear an open fault).
    pub exclude_vacant: bool,
    /// How long power must be zero before the fault opens.
    #[serde(with = "humantime_serde")]
    pub open_after: Duration,
    /// How long it must be non-zero before the fault closes.
    #[serde(with = "humantime_serde")]
    pub close_after: Duration,
}

/// STUCK_VALUE: exactly the same power (variance 0) for `open_after`. A
/// run of zeros is not a stuck value: zeros have ZERO_VALUE, with its
/// vacancy exclusion.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StuckValueRule {
    /// Severity of the fault.
    pub severity: Severity,
    /// The fault needs a visit or repair.
    pub maintenance_required: bool,
    /// How long the value must not change before the fault opens.
    #[serde(with = "humantime_serde")]
    pub open_after: Duration,
    /// How long values must differ from the stuck one before the fault
    /// closes; `0s`: any change closes it.
    #[serde(with = "humantime_serde")]
    pub close_after: Duration,
}

/// OVERLOAD: power above the limit for `open_after_readings` readings in a row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadRule {
    /// Severity of the fault.
    pub severity: Severity,
    /// The fault needs a visit or repair.
    pub maintenance_required: bool,
    /// The limit (kW, strict) when the meter's contracted capacity is unknown.
    pub threshold_kw: f64,
    /// The meter's contracted capacity, when the reading carries it, is the limit.
    pub use_contracted_capacity: bool,
    /// An open fault clears below `limit × clear_ratio`.
    pub clear_ratio: f64,
    /// Readings in a row above the limit that open the fault.
    pub open_after_readings: u32,
    /// Readings in a row below the clear level that close it.
    pub close_after_readings: u32,
    /// Quarantined readings above the limit count towards opening.
    /// Validate quarantines every meter reading above its 20 kW plausibility
    /// limit, the very evidence of this rule; without this the fault could
    /// never open. Quarantined readings never clear the fault.
    pub count_quarantined: bool,
    /// UPDATED when the peak passes the last published one by this much (kW).
    #[serde(default)]
    pub update_margin: Option<f64>,
}

/// LOW_VARIANCE: the coefficient of variation (population standard
/// deviation / mean) of power over the last `window` of whole UTC days is
/// below `threshold`. Judged once a day, at the first reading of a day,
/// over the days before it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LowVarianceRule {
    /// Severity of the fault.
    pub severity: Severity,
    /// The fault needs a visit or repair.
    pub maintenance_required: bool,
    /// CV below this (strict) opens the fault.
    pub threshold: f64,
    /// An open fault closes at a judgement with CV at or above this.
    pub clear_threshold: f64,
    /// Whole days judged.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Days of the window that must each have `min_readings_per_day`
    /// readings; fewer and there is no judgement (the fault, if open, stays).
    pub min_covered_days: u32,
    /// Readings a day needs to count as covered.
    pub min_readings_per_day: u32,
    /// A window whose mean power is below this (kW) is not judged: near
    /// zero the CV is noise, and zeros have ZERO_VALUE.
    pub min_mean_kw: f64,
    /// Power is summed in integer multiples of this (kW), so the pooled sums
    /// are exact and a constant meter has a CV of exactly 0.
    pub resolution_kw: f64,
}

/// The keys every kind has.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Common<'a> {
    pub fault_deduction: i32,
    pub run_max_gap: Duration,
    pub retire_after: Option<Duration>,
    pub missing_short: Option<&'a GapRule>,
    pub missing_extended: Option<&'a GapRule>,
}

impl Rules {
    /// Parses and checks a rules file; errors name the key.
    pub fn from_toml_str(text: &str) -> Result<Rules, Error> {
        let rules: Rules = toml::from_str(text).map_err(|e| Error::Parse(e.to_string()))?;
        rules.check()?;
        Ok(rules)
    }

    /// Reads, parses and checks the rules file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Rules, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            Error::Parse(m) => Error::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The built-in rules (`rules/default.toml`).
    pub fn preset() -> Rules {
        Self::from_toml_str(DEFAULT_RULES).expect("built-in rules are valid")
    }

    /// Points deducted per active fault on an asset of `kind`.
    pub fn fault_deduction(&self, kind: AssetKind) -> i32 {
        self.common(kind).fault_deduction
    }

    pub(crate) fn common(&self, kind: AssetKind) -> Common<'_> {
        match kind {
            AssetKind::Turbine => Common {
                fault_deduction: self.turbine.fault_deduction,
                run_max_gap: self.turbine.run_max_gap,
                retire_after: self.turbine.retire_after,
                missing_short: self.turbine.missing_short.as_ref(),
                missing_extended: self.turbine.missing_extended.as_ref(),
            },
            AssetKind::Meter => Common {
                fault_deduction: self.meter.fault_deduction,
                run_max_gap: self.meter.run_max_gap,
                retire_after: self.meter.retire_after,
                missing_short: self.meter.missing_short.as_ref(),
                missing_extended: self.meter.missing_extended.as_ref(),
            },
        }
    }

    /// True when the rule behind `code` is configured for `kind`.
    pub fn enabled(&self, kind: AssetKind, code: FaultCode) -> bool {
        let t = &self.turbine;
        let m = &self.meter;
        match (kind, code) {
            (_, FaultCode::MissingShort) => self.common(kind).missing_short.is_some(),
            (_, FaultCode::MissingExtended) => self.common(kind).missing_extended.is_some(),
            (AssetKind::Turbine, FaultCode::GearboxOverheat) => t.gearbox_overheat.is_some(),
            (AssetKind::Turbine, FaultCode::GeneratorOverheat) => t.generator_overheat.is_some(),
            (AssetKind::Turbine, FaultCode::HighVibration) => t.high_vibration.is_some(),
            (AssetKind::Turbine, FaultCode::LowOilPressure) => t.low_oil_pressure.is_some(),
            (AssetKind::Turbine, FaultCode::TowerLean) => t.tower_lean.is_some(),
            (AssetKind::Turbine, FaultCode::LowPowerOutput) => t.low_power_output.is_some(),
            (AssetKind::Turbine, FaultCode::Underperformance) => t.underperformance.is_some(),
            (AssetKind::Meter, FaultCode::ZeroValue) => m.zero_value.is_some(),
            (AssetKind::Meter, FaultCode::StuckValue) => m.stuck_value.is_some(),
            (AssetKind::Meter, FaultCode::Overload) => m.overload.is_some(),
            (AssetKind::Meter, FaultCode::LowVariance) => m.low_variance.is_some(),
            _ => false,
        }
    }

    /// The limit rules of turbines with their codes; a code's
    /// [`FaultCode::higher_is_worse`] says whether the limit is an upper one.
    pub(crate) fn turbine_limits(&self) -> [(FaultCode, Option<&LimitRule>); 5] {
        let t = &self.turbine;
        [
            (FaultCode::GearboxOverheat, t.gearbox_overheat.as_ref()),
            (FaultCode::GeneratorOverheat, t.generator_overheat.as_ref()),
            (FaultCode::HighVibration, t.high_vibration.as_ref()),
            (FaultCode::LowOilPressure, t.low_oil_pressure.as_ref()),
            (FaultCode::TowerLean, t.tower_lean.as_ref()),
        ]
    }

    /// Checks what the types cannot: ranges and orderings.
    fn check(&self) -> Result<(), Error> {
        let t = &self.turbine;
        check_common("turbine", self.common(AssetKind::Turbine))?;
        check_common("meter", self.common(AssetKind::Meter))?;
        positive("turbine.cut_in_wind_speed_ms", t.cut_in_wind_speed_ms)?;
        if !t.cut_out_wind_speed_ms.is_finite() || t.cut_out_wind_speed_ms <= t.cut_in_wind_speed_ms
        {
            return invalid(
                "turbine.cut_out_wind_speed_ms",
                format!(
                    "{} must be above `cut_in_wind_speed_ms` ({})",
                    t.cut_out_wind_speed_ms, t.cut_in_wind_speed_ms
                ),
            );
        }
        for (code, rule) in self.turbine_limits() {
            if let Some(rule) = rule {
                let key = format!("turbine.{}", code.as_str().to_ascii_lowercase());
                rule.check(&key, code.higher_is_worse())?;
            }
        }
        if let Some(r) = &t.low_power_output {
            let key = "turbine.low_power_output";
            at_least_zero(&format!("{key}.threshold_kw"), r.threshold_kw)?;
            at_least_zero(&format!("{key}.rotor_turning_rpm"), r.rotor_turning_rpm)?;
            if !r.clear_threshold_kw.is_finite() || r.clear_threshold_kw < r.threshold_kw {
                return invalid(
                    &format!("{key}.clear_threshold_kw"),
                    format!(
                        "{} must be at or above `threshold_kw` ({})",
                        r.clear_threshold_kw, r.threshold_kw
                    ),
                );
            }
            durations(key, r.open_after, r.close_after)?;
            margin(key, r.update_margin)?;
        }
        if let Some(r) = &t.underperformance {
            let key = "turbine.underperformance";
            if !(r.threshold > 0.0 && r.threshold < 1.0) {
                return invalid(
                    &format!("{key}.threshold"),
                    format!("{} is not a fraction in (0, 1)", r.threshold),
                );
            }
            if !(r.clear_threshold >= r.threshold && r.clear_threshold <= 1.0) {
                return invalid(
                    &format!("{key}.clear_threshold"),
                    format!(
                        "{} must be between `threshold` ({}) and 1",
                        r.clear_threshold, r.threshold
                    ),
                );
            }
            positive(&format!("{key}.min_expected_kw"), r.min_expected_kw)?;
            durations(key, r.open_after, r.close_after)?;
            margin(key, r.update_margin)?;
        }
        let m = &self.meter;
        if let Some(r) = &m.zero_value {
            let key = "meter.zero_value";
            at_least_zero(&format!("{key}.threshold_kw"), r.threshold_kw)?;
            durations(key, r.open_after, r.close_after)?;
            nonzero(&format!("{key}.open_after"), r.open_after)?;
        }
        if let Some(r) = &m.stuck_value {
            let key = "meter.stuck_value";
            durations(key, r.open_after, r.close_after)?;
            nonzero(&format!("{key}.open_after"), r.open_after)?;
        }
        if let Some(r) = &m.overload {
            let key = "meter.overload";
            positive(&format!("{key}.threshold_kw"), r.threshold_kw)?;
            if !(r.clear_ratio > 0.0 && r.clear_ratio <= 1.0) {
                return invalid(
                    &format!("{key}.clear_ratio"),
                    format!("{} is not a fraction in (0, 1]", r.clear_ratio),
                );
            }
            for (field, n) in [
                ("open_after_readings", r.open_after_readings),
                ("close_after_readings", r.close_after_readings),
            ] {
                if n == 0 {
                    return invalid(&format!("{key}.{field}"), "must be 1 or more".into());
                }
            }
            margin(key, r.update_margin)?;
        }
        if let Some(r) = &m.low_variance {
            let key = "meter.low_variance";
            positive(&format!("{key}.threshold"), r.threshold)?;
            if !r.clear_threshold.is_finite() || r.clear_threshold < r.threshold {
                return invalid(
                    &format!("{key}.clear_threshold"),
                    format!(
                        "{} must be at or above `threshold` ({})",
                        r.clear_threshold, r.threshold
                    ),
                );
            }
            let days = r.window.as_secs() / DAY.as_secs();
            if r.window.is_zero() || r.window.as_nanos() % DAY.as_nanos() != 0 || days > 31 {
                return invalid(
                    &format!("{key}.window"),
                    format!(
                        "{} is not a whole number of days between 1 and 31",
                        humantime::format_duration(r.window)
                    ),
                );
            }
            if r.min_covered_days == 0 || u64::from(r.min_covered_days) > days {
                return invalid(
                    &format!("{key}.min_covered_days"),
                    format!(
                        "{} must be between 1 and the window's {days} days",
                        r.min_covered_days
                    ),
                );
            }
            if r.min_readings_per_day < 2 {
                return invalid(
                    &format!("{key}.min_readings_per_day"),
                    format!("{} must be 2 or more", r.min_readings_per_day),
                );
            }
            at_least_zero(&format!("{key}.min_mean_kw"), r.min_mean_kw)?;
            if !(r.resolution_kw >= 1e-6 && r.resolution_kw <= 1.0) {
                return invalid(
                    &format!("{key}.resolution_kw"),
                    format!("{} must be between 0.000001 and 1", r.resolution_kw),
                );
            }
        }
        Ok(())
    }

    /// The event-time window of LOW_VARIANCE in whole days.
    pub(crate) fn variance_days(rule: &LowVarianceRule) -> i64 {
        (rule.window.as_secs() / DAY.as_secs()) as i64
    }
}

impl LimitRule {
    fn check(&self, key: &str, above: bool) -> Result<(), Error> {
        finite(&format!("{key}.threshold"), self.threshold)?;
        finite(&format!("{key}.clear_threshold"), self.clear_threshold)?;
        if above && self.clear_threshold > self.threshold {
            return invalid(
                &format!("{key}.clear_threshold"),
                format!(
                    "{} is above `threshold` ({}); a fault above a limit clears below it",
                    self.clear_threshold, self.threshold
                ),
            );
        }
        if !above && self.clear_threshold < self.threshold {
            return invalid(
                &format!("{key}.clear_threshold"),
                format!(
                    "{} is below `threshold` ({}); a fault below a limit clears above it",
                    self.clear_threshold, self.threshold
                ),
            );
        }
        durations(key, self.open_after, self.close_after)?;
        margin(key, self.update_margin)?;
        if let Some(e) = &self.escalation {
            finite(&format!("{key}.escalation.threshold"), e.threshold)?;
            let beyond = if above {
                e.threshold > self.threshold
            } else {
                e.threshold < self.threshold
            };
            if !beyond {
                return invalid(
                    &format!("{key}.escalation.threshold"),
                    format!(
                        "{} is not beyond `threshold` ({})",
                        e.threshold, self.threshold
                    ),
                );
            }
            if e.severity <= self.severity {
                return invalid(
                    &format!("{key}.escalation.severity"),
                    format!("{} is not above the rule's {}", e.severity, self.severity),
                );
            }
        }
        Ok(())
    }
}

fn check_common(kind: &str, c: Common<'_>) -> Result<(), Error> {
    if !(0..=100).contains(&c.fault_deduction) {
        return invalid(
            &format!("{kind}.fault_deduction"),
            format!("{} is not a deduction between 0 and 100", c.fault_deduction),
        );
    }
    nonzero(&format!("{kind}.run_max_gap"), c.run_max_gap)?;
    bounded(&format!("{kind}.run_max_gap"), c.run_max_gap)?;
    let mut previous: Option<(&str, Duration)> = None;
    for (field, after) in [
        ("missing_short.after", c.missing_short.map(|r| r.after)),
        (
            "missing_extended.after",
            c.missing_extended.map(|r| r.after),
        ),
        ("retire_after", c.retire_after),
    ] {
        let Some(after) = after else { continue };
        let key = format!("{kind}.{field}");
        nonzero(&key, after)?;
        bounded(&key, after)?;
        if let Some((prev_field, prev)) = previous {
            if after <= prev {
                return invalid(
                    &key,
                    format!(
                        "{} must be longer than `{kind}.{prev_field}` ({})",
                        humantime::format_duration(after),
                        humantime::format_duration(prev)
                    ),
                );
            }
        }
        previous = Some((field, after));
    }
    Ok(())
}

fn invalid<T>(key: &str, message: String) -> Result<T, Error> {
    Err(Error::Invalid {
        key: key.to_string(),
        message,
    })
}

fn finite(key: &str, v: f64) -> Result<(), Error> {
    if v.is_finite() {
        Ok(())
    } else {
        invalid(key, format!("{v} is not a finite number"))
    }
}

fn positive(key: &str, v: f64) -> Result<(), Error> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        invalid(key, format!("{v} must be more than 0"))
    }
}

fn at_least_zero(key: &str, v: f64) -> Result<(), Error> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        invalid(key, format!("{v} must be 0 or more"))
    }
}

fn nonzero(key: &str, d: Duration) -> Result<(), Error> {
    if d.is_zero() {
        invalid(key, "must be more than 0s".into())
    } else {
        Ok(())
    }
}

fn bounded(key: &str, d: Duration) -> Result<(), Error> {
    if d > MAX_DURATION {
        invalid(
            key,
            format!("{} is longer than 10 years", humantime::format_duration(d)),
        )
    } else {
        Ok(())
    }
}

fn durations(key: &str, open_after: Duration, close_after: Duration) -> Result<(), Error> {
    bounded(&format!("{key}.open_after"), open_after)?;
    bounded(&format!("{key}.close_after"), close_after)
}

fn margin(key: &str, m: Option<f64>) -> Result<(), Error> {
    match m {
        Some(m) => positive(&format!("{key}.update_margin"), m),
        None => Ok(()),
    }
}

/// A checked duration in ms.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Rules::from_toml_str(text).unwrap_err().to_string()
    }

    fn bad(from: &str, to: &str) -> String {
        assert!(DEFAULT_RULES.contains(from), "preset lacks {from:?}");
        err(&DEFAULT_RULES.replacen(from, to, 1))
    }

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn the_preset_holds_every_seed_number() {
        let r = Rules::preset();
        let t = &r.turbine;
        let limit = |rule: &Option<LimitRule>| {
            let rule = rule.as_ref().unwrap();
            (rule.threshold, rule.severity, rule.maintenance_required)
        };
        // windmill-iot-fault-simulation.md: fault codes, limits, alert levels.
        assert_eq!(limit(&t.gearbox_overheat), (80.0, Severity::Critical, true));
        assert_eq!(
            limit(&t.generator_overheat),
            (75.0, Severity::Critical, true)
        );
        assert_eq!(limit(&t.high_vibration), (2.0, Severity::Warning, true));
        assert_eq!(limit(&t.low_oil_pressure), (35.0, Severity::Warning, true));
        assert_eq!(limit(&t.tower_lean), (1.5, Severity::Critical, true));
        let low = t.low_power_output.as_ref().unwrap();
        assert_eq!((low.threshold_kw, low.severity), (100.0, Severity::Info));
        assert!(!low.maintenance_required);
        // The brief's hysteresis example.
        assert_eq!(t.gearbox_overheat.as_ref().unwrap().clear_threshold, 78.0);
        let under = t.underperformance.as_ref().unwrap();
        assert_eq!(under.threshold, 0.8);
        assert_eq!(under.open_after, 30 * Duration::from_secs(60));
        // smart-meter-etl-rules.md section 4.
        let m = &r.meter;
        let zero = m.zero_value.as_ref().unwrap();
        assert_eq!((zero.open_after, zero.threshold_kw), (48 * H, 0.0));
        assert!(zero.exclude_vacant && zero.maintenance_required);
        assert_eq!(m.stuck_value.as_ref().unwrap().open_after, 24 * H);
        let over = m.overload.as_ref().unwrap();
        assert_eq!(
            (over.threshold_kw, over.open_after_readings, over.severity),
            (20.0, 6, Severity::Critical)
        );
        let lv = m.low_variance.as_ref().unwrap();
        assert_eq!((lv.threshold, lv.window), (0.01, 7 * 24 * H));
        // Section 2: gaps, for both kinds.
        for kind in [AssetKind::Turbine, AssetKind::Meter] {
            let c = r.common(kind);
            let short = c.missing_short.unwrap();
            let extended = c.missing_extended.unwrap();
            assert_eq!((short.after, short.severity), (4 * H, Severity::Warning));
            assert_eq!(
                (extended.after, extended.severity),
                (24 * H, Severity::Critical)
            );
            // Section 6: fault detection -30.
            assert_eq!(r.fault_deduction(kind), 30);
        }
        for code in FaultCode::ALL {
            let kinds = code
                .kind()
                .map_or(vec![AssetKind::Turbine, AssetKind::Meter], |k| vec![k]);
            for kind in kinds {
                assert!(r.enabled(kind, code), "{code} for {kind:?}");
            }
        }
        assert!(!r.enabled(AssetKind::Meter, FaultCode::GearboxOverheat));
    }

    #[test]
    fn the_file_loads_from_disk_and_names_it_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.toml");
        std::fs::write(&path, DEFAULT_RULES).unwrap();
        assert_eq!(Rules::load(&path).unwrap(), Rules::preset());
        std::fs::write(&path, "[turbine]\nfault_deduction = 'x'").unwrap();
        let e = Rules::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("rules.toml") && e.contains("fault_deduction"),
            "{e}"
        );
        let e = Rules::load(dir.path().join("absent.toml")).unwrap_err();
        assert!(matches!(e, Error::Read { .. }), "{e}");
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        let e = bad("clear_threshold = 78.0", "clear_treshold = 78.0");
        assert!(e.contains("clear_treshold"), "{e}");
        let e = bad("threshold = 80.0\n", "");
        assert!(
            e.contains("threshold") && e.contains("gearbox_overheat"),
            "{e}"
        );
        let e = bad("severity = \"CRITICAL\"", "severity = \"SEVERE\"");
        assert!(e.contains("SEVERE"), "{e}");
        let e = bad("after = \"4h\"", "after = \"four hours\"");
        assert!(e.contains("after"), "{e}");
    }

    #[test]
    fn inconsistent_rules_are_refused_naming_the_key() {
        for (from, to, key) in [
            (
                "fault_deduction = 30",
                "fault_deduction = 130",
                "turbine.fault_deduction",
            ),
            (
                "clear_threshold = 78.0",
                "clear_threshold = 82.0",
                "turbine.gearbox_overheat.clear_threshold",
            ),
            (
                "clear_threshold = 37.0",
                "clear_threshold = 33.0",
                "turbine.low_oil_pressure.clear_threshold",
            ),
            (
                "# escalation = { threshold = 4.0, severity = \"CRITICAL\" }",
                "escalation = { threshold = 1.0, severity = \"CRITICAL\" }",
                "turbine.high_vibration.escalation.threshold",
            ),
            (
                "# escalation = { threshold = 4.0, severity = \"CRITICAL\" }",
                "escalation = { threshold = 4.0, severity = \"INFO\" }",
                "turbine.high_vibration.escalation.severity",
            ),
            (
                "cut_out_wind_speed_ms = 25.0",
                "cut_out_wind_speed_ms = 2.0",
                "turbine.cut_out_wind_speed_ms",
            ),
            (
                "after = \"24h\"",
                "after = \"2h\"",
                "turbine.missing_extended.after",
            ),
            (
                "retire_after = \"30d\"",
                "retire_after = \"12h\"",
                "turbine.retire_after",
            ),
            (
                "run_max_gap = \"4h\"",
                "run_max_gap = \"0s\"",
                "turbine.run_max_gap",
            ),
            (
                "update_margin = 5.0",
                "update_margin = -5.0",
                "turbine.gearbox_overheat.update_margin",
            ),
            (
                "threshold = 0.8",
                "threshold = 1.8",
                "turbine.underperformance.threshold",
            ),
            (
                "open_after_readings = 6",
                "open_after_readings = 0",
                "meter.overload.open_after_readings",
            ),
            (
                "clear_ratio = 0.95",
                "clear_ratio = 1.5",
                "meter.overload.clear_ratio",
            ),
            (
                "window = \"7d\"",
                "window = \"36h\"",
                "meter.low_variance.window",
            ),
            (
                "min_covered_days = 6",
                "min_covered_days = 8",
                "meter.low_variance.min_covered_days",
            ),
            (
                "clear_threshold = 0.015",
                "clear_threshold = 0.005",
                "meter.low_variance.clear_threshold",
            ),
            (
                "resolution_kw = 0.001",
                "resolution_kw = 0.0",
                "meter.low_variance.resolution_kw",
            ),
        ] {
            let e = bad(from, to);
            assert!(e.contains(&format!("`{key}`")), "{from} -> {to}: {e}");
        }
    }

    #[test]
    fn a_rule_left_out_is_disabled() {
        let start = DEFAULT_RULES.find("[meter.stuck_value]").unwrap();
        let end = start + DEFAULT_RULES[start..].find("\n\n").unwrap();
        let text = format!("{}{}", &DEFAULT_RULES[..start], &DEFAULT_RULES[end..]);
        let r = Rules::from_toml_str(&text).unwrap();
        assert!(!r.enabled(AssetKind::Meter, FaultCode::StuckValue));
        assert!(r.enabled(AssetKind::Meter, FaultCode::ZeroValue));
    }
}
