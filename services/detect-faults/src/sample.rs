//! The input of the rules: one enriched reading, reduced to what they read.
//!
//! The stage builds a [`Sample`] from an enriched reading, so the rules do
//! not depend on the Avro record's shape (or on `gale-model` at all) and
//! tests can write one in a line.

use crate::fault::AssetKind;

/// One reading of one asset, as the rules see it. Values are in canonical
/// units; `None` means not reported. A value that is not finite is taken as
/// not reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Asset id (the state key).
    pub asset_id: String,
    /// Turbine or meter: selects the rules.
    pub kind: AssetKind,
    /// Measurement time, ms since the epoch (UTC). Every rule works in this
    /// time, never in the clock's.
    pub event_time: i64,
    /// Spacing of the asset's readings (ms), declared or inferred. A silence
    /// counts from when the next reading was due (`event_time +
    /// interval_ms`), so an hourly meter is not "missing" between readings.
    /// Values of 0 or less are ignored; longer than a day counts as a day.
    pub interval_ms: Option<i64>,
    /// Active power, kW.
    pub power_kw: Option<f64>,
    /// Wind speed, m/s.
    pub wind_speed_ms: Option<f64>,
    /// Rotor speed, rpm.
    pub rotor_speed_rpm: Option<f64>,
    /// Gearbox temperature, °C.
    pub gearbox_temperature_c: Option<f64>,
    /// Generator temperature, °C.
    pub generator_temperature_c: Option<f64>,
    /// Vibration, m/s².
    pub vibration_ms2: Option<f64>,
    /// Oil pressure, bar.
    pub oil_pressure_bar: Option<f64>,
    /// Tower lean, degrees.
    pub tower_lean_deg: Option<f64>,
    /// Ambient temperature, °C. No rule reads it yet; it is here for
    /// ambient-corrected limits, which need it in the state-free input.
    pub ambient_temperature_c: Option<f64>,
    /// Output the turbine's power curve gives for this wind, kW (enrich).
    pub expected_power_kw: Option<f64>,
    /// The turbine model's cut-in wind speed, m/s; the rules file's
    /// `turbine.cut_in_wind_speed_ms` when unknown.
    pub cut_in_wind_speed_ms: Option<f64>,
    /// The turbine's rated power, kW. A turbine rated at or below
    /// LOW_POWER_OUTPUT's threshold is never "low".
    pub rated_power_kw: Option<f64>,
    /// The meter's contracted capacity, kW: OVERLOAD's limit when known.
    pub contracted_capacity_kw: Option<f64>,
    /// The property is on the vacancy list: ZERO_VALUE does not apply.
    pub vacant: bool,
    /// Validate quarantined the reading: its values are not trusted, so it
    /// opens or closes no value fault (OVERLOAD may count it, see
    /// `meter.overload.count_quarantined`), but it is data: it ends a gap.
    /// A reading whose *event time* is untrusted (FUTURE_TIMESTAMP) should
    /// not be handed over at all: it would move the asset's clock.
    pub quarantined: bool,
}

impl Sample {
    /// A reading of `asset_id` at `event_time` with no values yet.
    pub fn new(asset_id: impl Into<String>, kind: AssetKind, event_time: i64) -> Self {
        Sample {
            asset_id: asset_id.into(),
            kind,
            event_time,
            interval_ms: None,
            power_kw: None,
            wind_speed_ms: None,
            rotor_speed_rpm: None,
            gearbox_temperature_c: None,
            generator_temperature_c: None,
            vibration_ms2: None,
            oil_pressure_bar: None,
            tower_lean_deg: None,
            ambient_temperature_c: None,
            expected_power_kw: None,
            cut_in_wind_speed_ms: None,
            rated_power_kw: None,
            contracted_capacity_kw: None,
            vacant: false,
            quarantined: false,
        }
    }
}

/// `v` if it is a usable number.
pub(crate) fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}
