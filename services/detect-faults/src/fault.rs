//! What detect-faults tells the world: fault codes, severities, and the
//! change events of one fault's life (opened, updated, closed).
//!
//! A fault is identified by its asset, code and opening time, so the id is
//! the same however often the stage replays the readings that opened it,
//! and a sink keeps the event with the highest `revision` per id.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether an asset is a wind turbine or a smart meter: each kind has its
/// own rules. The stage maps the registry's kind onto this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetKind {
    /// A wind turbine reporting SCADA samples.
    Turbine,
    /// A smart meter reporting power per interval.
    Meter,
}

/// The rule a fault comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FaultCode {
    /// Turbine gearbox temperature above its limit.
    GearboxOverheat,
    /// Turbine generator temperature above its limit.
    GeneratorOverheat,
    /// Turbine vibration above its limit (bearing issues).
    HighVibration,
    /// Turbine oil pressure below its limit.
    LowOilPressure,
    /// Turbine tower lean above its limit.
    TowerLean,
    /// Turbine running but producing less than a fixed output.
    LowPowerOutput,
    /// Turbine producing less than a fraction of its power curve's expectation.
    Underperformance,
    /// Meter reporting zero for a long time (property not vacant).
    ZeroValue,
    /// Meter reporting the same non-zero value for a long time.
    StuckValue,
    /// Meter above its capacity for several readings in a row.
    Overload,
    /// Meter whose power hardly varies over a week (a sensor to calibrate).
    LowVariance,
    /// No reading for a few hours.
    MissingShort,
    /// No reading for a day or more.
    MissingExtended,
}

impl FaultCode {
    /// Every code, in the order faults are listed on a reading.
    pub const ALL: [FaultCode; 13] = [
        FaultCode::GearboxOverheat,
        FaultCode::GeneratorOverheat,
        FaultCode::HighVibration,
        FaultCode::LowOilPressure,
        FaultCode::TowerLean,
        FaultCode::LowPowerOutput,
        FaultCode::Underperformance,
        FaultCode::ZeroValue,
        FaultCode::StuckValue,
        FaultCode::Overload,
        FaultCode::LowVariance,
        FaultCode::MissingShort,
        FaultCode::MissingExtended,
    ];

    /// The code as published, e.g. `GEARBOX_OVERHEAT`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultCode::GearboxOverheat => "GEARBOX_OVERHEAT",
            FaultCode::GeneratorOverheat => "GENERATOR_OVERHEAT",
            FaultCode::HighVibration => "HIGH_VIBRATION",
            FaultCode::LowOilPressure => "LOW_OIL_PRESSURE",
            FaultCode::TowerLean => "TOWER_LEAN",
            FaultCode::LowPowerOutput => "LOW_POWER_OUTPUT",
            FaultCode::Underperformance => "UNDERPERFORMANCE",
            FaultCode::ZeroValue => "ZERO_VALUE",
            FaultCode::StuckValue => "STUCK_VALUE",
            FaultCode::Overload => "OVERLOAD",
            FaultCode::LowVariance => "LOW_VARIANCE",
            FaultCode::MissingShort => "MISSING_SHORT",
            FaultCode::MissingExtended => "MISSING_EXTENDED",
        }
    }

    /// The quantity the fault's trigger, peak and threshold are in: a
    /// canonical metric name, or a derived one (`performance_ratio`,
    /// `power_cv`, `gap_hours`).
    pub fn metric(self) -> &'static str {
        match self {
            FaultCode::GearboxOverheat => "gearbox_temperature",
            FaultCode::GeneratorOverheat => "generator_temperature",
            FaultCode::HighVibration => "vibration",
            FaultCode::LowOilPressure => "oil_pressure",
            FaultCode::TowerLean => "tower_lean",
            FaultCode::LowPowerOutput
            | FaultCode::ZeroValue
            | FaultCode::StuckValue
            | FaultCode::Overload => "power",
            FaultCode::Underperformance => "performance_ratio",
            FaultCode::LowVariance => "power_cv",
            FaultCode::MissingShort | FaultCode::MissingExtended => "gap_hours",
        }
    }

    /// Unit of [`FaultCode::metric`], for details (empty for ratios).
    pub(crate) fn unit(self) -> &'static str {
        match self {
            FaultCode::GearboxOverheat | FaultCode::GeneratorOverheat => " °C",
            FaultCode::HighVibration => " m/s²",
            FaultCode::LowOilPressure => " bar",
            FaultCode::TowerLean => "°",
            FaultCode::LowPowerOutput
            | FaultCode::ZeroValue
            | FaultCode::StuckValue
            | FaultCode::Overload => " kW",
            FaultCode::Underperformance | FaultCode::LowVariance => "",
            FaultCode::MissingShort | FaultCode::MissingExtended => " h",
        }
    }

    /// True when a higher value of the metric is a worse fault (the peak is
    /// the maximum); false when lower is worse (oil pressure, low power,
    /// performance ratio, variance).
    pub(crate) fn higher_is_worse(self) -> bool {
        !matches!(
            self,
            FaultCode::LowOilPressure
                | FaultCode::LowPowerOutput
                | FaultCode::Underperformance
                | FaultCode::LowVariance
                | FaultCode::ZeroValue
        )
    }

    /// The kind of asset the rule applies to; `None` for gaps (both kinds).
    pub fn kind(self) -> Option<AssetKind> {
        match self {
            FaultCode::GearboxOverheat
            | FaultCode::GeneratorOverheat
            | FaultCode::HighVibration
            | FaultCode::LowOilPressure
            | FaultCode::TowerLean
            | FaultCode::LowPowerOutput
            | FaultCode::Underperformance => Some(AssetKind::Turbine),
            FaultCode::ZeroValue
            | FaultCode::StuckValue
            | FaultCode::Overload
            | FaultCode::LowVariance => Some(AssetKind::Meter),
            FaultCode::MissingShort | FaultCode::MissingExtended => None,
        }
    }
}

impl fmt::Display for FaultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent a fault is, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Worth knowing, no action needed.
    Info,
    /// Needs attention within hours.
    Warning,
    /// Needs attention now.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        })
    }
}

/// Which step of its life a [`FaultChange`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FaultStatus {
    /// The fault's condition has held long enough: it is active from `opened_time`.
    Opened,
    /// Still active, and something an operator cares about changed: a new
    /// peak beyond the last published one by the rule's margin, or a
    /// severity escalation. Never sent once per reading.
    Updated,
    /// The condition has been clear long enough (or the rule was removed,
    /// or the asset retired): inactive from `closed_time`.
    Closed,
}

/// One event of a fault's life. Events of one fault share `fault_id`;
/// `revision` counts them (0 for OPENED), so a sink that keeps the highest
/// revision per id holds the fault's latest state whatever order or how
/// many times the events arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultChange {
    /// `{asset_id}:{CODE}:{opened_time}`: the same for every replay.
    pub fault_id: String,
    /// Asset the fault is on.
    pub asset_id: String,
    /// Kind of that asset.
    pub asset_kind: AssetKind,
    /// Rule.
    pub code: FaultCode,
    /// Severity now (an escalation raises it; it never drops while open).
    pub severity: Severity,
    /// What this event reports.
    pub status: FaultStatus,
    /// The "maintenance flag": the fault needs a visit or a repair.
    pub maintenance_required: bool,
    /// Event time (ms) from which the fault is active.
    pub opened_time: i64,
    /// Event time (ms) of the evidence this event reports: the opening
    /// time, the reading that updated it, or the closing time.
    pub updated_time: i64,
    /// Event time (ms) from which the fault is inactive; set on CLOSED only.
    pub closed_time: Option<i64>,
    /// 0 at OPENED, one more per later event of the fault.
    pub revision: u32,
    /// Quantity of the values below (see [`FaultCode::metric`]).
    pub metric: Option<String>,
    /// Value of the reading that opened the fault.
    pub trigger_value: Option<f64>,
    /// Worst value seen since the condition began.
    pub peak_value: Option<f64>,
    /// The limit the fault opened against (for OVERLOAD, the meter's
    /// contracted capacity when known).
    pub threshold: Option<f64>,
    /// What happened, for people.
    pub detail: String,
}

/// A fault open on an asset, as listed on each of its readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveFault {
    /// Id of the fault (see [`fault_id`]).
    pub fault_id: String,
    /// Rule.
    pub code: FaultCode,
    /// Severity now.
    pub severity: Severity,
}

/// The id of the fault `code` of `asset_id` opened at `opened_time` (ms).
pub fn fault_id(asset_id: &str, code: FaultCode, opened_time: i64) -> String {
    format!("{asset_id}:{code}:{opened_time}")
}

/// A number for a detail text: at most three decimals, no trailing zeros.
pub(crate) fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// A duration in ms for a detail text, e.g. `48h` or `10m`.
pub(crate) fn span(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_published() {
        for code in FaultCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(
                serde_json::from_str::<FaultCode>(&json).unwrap(),
                code,
                "{json}"
            );
        }
        assert_eq!(
            serde_json::to_string(&Severity::Critical).unwrap(),
            "\"CRITICAL\""
        );
        assert_eq!(
            serde_json::to_string(&FaultStatus::Opened).unwrap(),
            "\"OPENED\""
        );
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    }

    #[test]
    fn ids_are_deterministic() {
        assert_eq!(
            fault_id(
                "TURBINE_00001",
                FaultCode::GearboxOverheat,
                1_700_000_000_000
            ),
            "TURBINE_00001:GEARBOX_OVERHEAT:1700000000000"
        );
    }

    #[test]
    fn numbers_and_spans_read_well() {
        assert_eq!(num(80.0), "80");
        assert_eq!(num(0.30000000000000004), "0.3");
        assert_eq!(num(-0.0001), "0");
        assert_eq!(num(2.125), "2.125");
        assert_eq!(span(48 * 3_600_000), "2days");
        assert_eq!(span(600_000), "10m");
    }
}
