//! Readings as they travel the topics: the serde mirror of the `.avsc` files
//! in `schemas/`.
//!
//! The `.avsc` files are the contract between services (and with anyone else
//! reading the topics); a unit test encodes every type against its schema,
//! so the two cannot drift apart unnoticed.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Kind of asset that produced a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssetKind {
    /// A wind turbine.
    Turbine,
    /// A smart meter.
    Meter,
}

impl AssetKind {
    /// Lower-case name used in config files and partitions.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Turbine => "turbine",
            AssetKind::Meter => "meter",
        }
    }
}

impl fmt::Display for AssetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AssetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "turbine" | "wind_turbine" | "wtg" => Ok(AssetKind::Turbine),
            "meter" | "smart_meter" => Ok(AssetKind::Meter),
            other => Err(format!(
                "unknown asset kind {other:?}; expected `turbine` or `meter`"
            )),
        }
    }
}

/// How a reading entered Gale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IngestChannel {
    /// The ingest HTTP API.
    Http,
    /// A file dropped in object storage.
    File,
    /// `gale simulate` writing straight to the raw topic.
    Simulator,
    /// Anything else (e.g. a third-party producer).
    #[default]
    Unknown,
}

/// Canonical metrics. Each has exactly one canonical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Metric {
    /// Wind speed at hub height, m/s.
    WindSpeed,
    /// Wind direction, degrees.
    WindDirection,
    /// Rotor speed, rpm.
    RotorSpeed,
    /// Active power, kW.
    Power,
    /// Energy, kWh.
    Energy,
    /// Nacelle temperature, °C.
    NacelleTemperature,
    /// Gearbox temperature, °C.
    GearboxTemperature,
    /// Generator temperature, °C.
    GeneratorTemperature,
    /// Drivetrain vibration, m/s².
    Vibration,
    /// Gearbox oil pressure, bar.
    OilPressure,
    /// Brake pressure, bar.
    BrakePressure,
    /// Blade pitch, degrees.
    PitchAngle,
    /// Nacelle yaw, degrees.
    YawAngle,
    /// Tower inclination, degrees.
    TowerLean,
    /// Latitude, decimal degrees.
    Latitude,
    /// Longitude, decimal degrees.
    Longitude,
    /// Outdoor temperature, °C.
    AmbientTemperature,
    /// Wind direction against the nacelle axis, degrees.
    RelativeWindDirection,
    /// Reactive power, kvar.
    ReactivePower,
    /// Line voltage, V.
    Voltage,
    /// Line current, A.
    Current,
    /// Grid frequency, Hz.
    Frequency,
}

impl Metric {
    /// Every metric, in schema order.
    pub const ALL: [Metric; 22] = [
        Metric::WindSpeed,
        Metric::WindDirection,
        Metric::RotorSpeed,
        Metric::Power,
        Metric::Energy,
        Metric::NacelleTemperature,
        Metric::GearboxTemperature,
        Metric::GeneratorTemperature,
        Metric::Vibration,
        Metric::OilPressure,
        Metric::BrakePressure,
        Metric::PitchAngle,
        Metric::YawAngle,
        Metric::TowerLean,
        Metric::Latitude,
        Metric::Longitude,
        Metric::AmbientTemperature,
        Metric::RelativeWindDirection,
        Metric::ReactivePower,
        Metric::Voltage,
        Metric::Current,
        Metric::Frequency,
    ];

    /// snake_case name used in config files and input columns (`power`, `gearbox_temperature`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::WindSpeed => "wind_speed",
            Metric::WindDirection => "wind_direction",
            Metric::RotorSpeed => "rotor_speed",
            Metric::Power => "power",
            Metric::Energy => "energy",
            Metric::NacelleTemperature => "nacelle_temperature",
            Metric::GearboxTemperature => "gearbox_temperature",
            Metric::GeneratorTemperature => "generator_temperature",
            Metric::Vibration => "vibration",
            Metric::OilPressure => "oil_pressure",
            Metric::BrakePressure => "brake_pressure",
            Metric::PitchAngle => "pitch_angle",
            Metric::YawAngle => "yaw_angle",
            Metric::TowerLean => "tower_lean",
            Metric::Latitude => "latitude",
            Metric::Longitude => "longitude",
            Metric::AmbientTemperature => "ambient_temperature",
            Metric::RelativeWindDirection => "relative_wind_direction",
            Metric::ReactivePower => "reactive_power",
            Metric::Voltage => "voltage",
            Metric::Current => "current",
            Metric::Frequency => "frequency",
        }
    }

    /// The canonical unit, as written in `unit` fields and docs.
    pub fn canonical_unit(self) -> &'static str {
        match self {
            Metric::WindSpeed => "m/s",
            Metric::WindDirection
            | Metric::PitchAngle
            | Metric::YawAngle
            | Metric::TowerLean
            | Metric::Latitude
            | Metric::Longitude
            | Metric::RelativeWindDirection => "deg",
            Metric::RotorSpeed => "rpm",
            Metric::Power => "kW",
            Metric::Energy => "kWh",
            Metric::NacelleTemperature
            | Metric::GearboxTemperature
            | Metric::GeneratorTemperature
            | Metric::AmbientTemperature => "degC",
            Metric::Vibration => "m/s2",
            Metric::OilPressure | Metric::BrakePressure => "bar",
            Metric::ReactivePower => "kvar",
            Metric::Voltage => "V",
            Metric::Current => "A",
            Metric::Frequency => "Hz",
        }
    }

    /// Name of the column in validated readings (`power_kw`).
    pub fn column(self) -> &'static str {
        match self {
            Metric::WindSpeed => "wind_speed_ms",
            Metric::WindDirection => "wind_direction_deg",
            Metric::RotorSpeed => "rotor_speed_rpm",
            Metric::Power => "power_kw",
            Metric::Energy => "energy_kwh",
            Metric::NacelleTemperature => "nacelle_temperature_c",
            Metric::GearboxTemperature => "gearbox_temperature_c",
            Metric::GeneratorTemperature => "generator_temperature_c",
            Metric::Vibration => "vibration_ms2",
            Metric::OilPressure => "oil_pressure_bar",
            Metric::BrakePressure => "brake_pressure_bar",
            Metric::PitchAngle => "pitch_angle_deg",
            Metric::YawAngle => "yaw_angle_deg",
            Metric::TowerLean => "tower_lean_deg",
            Metric::Latitude => "latitude_deg",
            Metric::Longitude => "longitude_deg",
            Metric::AmbientTemperature => "ambient_temperature_c",
            Metric::RelativeWindDirection => "relative_wind_direction_deg",
            Metric::ReactivePower => "reactive_power_kvar",
            Metric::Voltage => "voltage_v",
            Metric::Current => "current_a",
            Metric::Frequency => "frequency_hz",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == wanted || m.column() == wanted)
            .ok_or_else(|| {
                format!(
                    "unknown metric {s:?}; expected one of {}",
                    Metric::ALL.map(Metric::name).join(", ")
                )
            })
    }
}

impl<'de> Deserialize<'de> for MetricName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(MetricName).map_err(serde::de::Error::custom)
    }
}

/// A metric named in a config file by its snake_case name (`gearbox_temperature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricName(pub Metric);

/// One value of one metric, in the unit the source used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Which metric.
    pub metric: Metric,
    /// Value in `unit`.
    pub value: f64,
    /// Unit as given by the source, if any.
    pub unit: Option<String>,
}

/// A reading as ingest accepted it (`schemas/raw_reading.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawReading {
    /// Deterministic id.
    pub event_id: String,
    /// Asset id; also the record key.
    pub asset_id: String,
    /// Kind, if the source declared it.
    pub asset_kind: Option<AssetKind>,
    /// Measurement time, ms since the epoch (UTC).
    pub event_time: i64,
    /// Acceptance time at ingest, ms since the epoch (UTC).
    pub received_time: i64,
    /// Source name.
    pub source: String,
    /// Ingest channel.
    #[serde(default)]
    pub channel: IngestChannel,
    /// Values present in the row.
    pub measurements: Vec<Measurement>,
    /// Unmapped columns.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Spacing of the source's readings (ms), when it declares it.
    #[serde(default)]
    pub interval_ms: Option<i64>,
}

/// Quality tier derived from the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QualityTier {
    /// Score ≥ 90.
    Premium,
    /// Score 70–89.
    Standard,
    /// Score < 70, or a quarantining rule fired.
    Quarantine,
}

/// Which validation rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlagCode {
    /// A value was converted to its canonical unit.
    UnitConverted,
    /// A missing unit was inferred from the value's magnitude.
    UnitInferred,
    /// Event time is ahead of reception by more than the tolerance.
    FutureTimestamp,
    /// Event time is behind reception by more than the tolerance.
    BackdatedTimestamp,
    /// A value is outside its plausible physical range.
    OutOfRange,
    /// Increase of more than the spike threshold against the previous reading.
    Spike,
    /// Decrease of more than the drop threshold against the previous reading.
    Drop,
    /// Another reading of the asset with the same event time (and other
    /// values) was seen first: a repeated local hour, an overlapping export.
    DuplicateTime,
}

/// One validation finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityFlag {
    /// Rule.
    pub code: FlagCode,
    /// Metric concerned.
    pub metric: Option<Metric>,
    /// Points deducted.
    pub deduction: i32,
    /// Forces the quarantine tier.
    #[serde(default)]
    pub quarantine: bool,
    /// Explanation.
    pub detail: String,
}

/// A validated or quarantined reading
/// (`schemas/validated_reading.avsc`, `schemas/quarantined_reading.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredReading {
    /// Deterministic id from the raw reading.
    pub event_id: String,
    /// Asset id.
    pub asset_id: String,
    /// Kind from the asset registry.
    pub asset_kind: AssetKind,
    /// Site from the asset registry.
    pub site_id: Option<String>,
    /// Measurement time (ms, UTC).
    pub event_time: i64,
    /// Acceptance time at ingest (ms, UTC).
    pub received_time: i64,
    /// Validation time (ms, UTC).
    pub validated_time: i64,
    /// Source name.
    pub source: String,
    /// Ingest channel.
    #[serde(default)]
    pub channel: IngestChannel,
    /// Spacing of the asset's readings (ms), declared or inferred.
    #[serde(default)]
    pub interval_ms: Option<i64>,
    /// m/s.
    pub wind_speed_ms: Option<f64>,
    /// degrees.
    pub wind_direction_deg: Option<f64>,
    /// rpm.
    pub rotor_speed_rpm: Option<f64>,
    /// kW.
    pub power_kw: Option<f64>,
    /// kWh.
    pub energy_kwh: Option<f64>,
    /// °C.
    pub nacelle_temperature_c: Option<f64>,
    /// °C.
    pub gearbox_temperature_c: Option<f64>,
    /// °C.
    pub generator_temperature_c: Option<f64>,
    /// m/s².
    pub vibration_ms2: Option<f64>,
    /// bar.
    pub oil_pressure_bar: Option<f64>,
    /// bar.
    pub brake_pressure_bar: Option<f64>,
    /// degrees.
    pub pitch_angle_deg: Option<f64>,
    /// degrees.
    pub yaw_angle_deg: Option<f64>,
    /// degrees.
    pub tower_lean_deg: Option<f64>,
    /// decimal degrees.
    pub latitude_deg: Option<f64>,
    /// decimal degrees.
    pub longitude_deg: Option<f64>,
    /// °C.
    #[serde(default)]
    pub ambient_temperature_c: Option<f64>,
    /// degrees.
    #[serde(default)]
    pub relative_wind_direction_deg: Option<f64>,
    /// kvar.
    #[serde(default)]
    pub reactive_power_kvar: Option<f64>,
    /// V.
    #[serde(default)]
    pub voltage_v: Option<f64>,
    /// A.
    #[serde(default)]
    pub current_a: Option<f64>,
    /// Hz.
    #[serde(default)]
    pub frequency_hz: Option<f64>,
    /// 0–100.
    pub quality_score: i32,
    /// Tier.
    pub quality_tier: QualityTier,
    /// Findings.
    pub flags: Vec<QualityFlag>,
    /// Unmapped columns.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl ScoredReading {
    /// A reading of `asset_id` at `event_time` (ms) with no values yet, a
    /// perfect score and no flags; the caller sets what it knows.
    pub fn new(
        event_id: impl Into<String>,
        asset_id: impl Into<String>,
        asset_kind: AssetKind,
        event_time: i64,
    ) -> Self {
        ScoredReading {
            event_id: event_id.into(),
            asset_id: asset_id.into(),
            asset_kind,
            site_id: None,
            event_time,
            received_time: event_time,
            validated_time: event_time,
            source: String::new(),
            channel: IngestChannel::Unknown,
            interval_ms: None,
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
            ambient_temperature_c: None,
            relative_wind_direction_deg: None,
            reactive_power_kvar: None,
            voltage_v: None,
            current_a: None,
            frequency_hz: None,
            quality_score: 100,
            quality_tier: QualityTier::Premium,
            flags: Vec::new(),
            attributes: BTreeMap::new(),
        }
    }

    /// The canonical value of `metric`, if present.
    pub fn metric(&self, metric: Metric) -> Option<f64> {
        *self.slot(metric)
    }

    /// Sets the canonical value of `metric`.
    pub fn set_metric(&mut self, metric: Metric, value: f64) {
        *self.slot_mut(metric) = Some(value);
    }

    fn slot(&self, metric: Metric) -> &Option<f64> {
        match metric {
            Metric::WindSpeed => &self.wind_speed_ms,
            Metric::WindDirection => &self.wind_direction_deg,
            Metric::RotorSpeed => &self.rotor_speed_rpm,
            Metric::Power => &self.power_kw,
            Metric::Energy => &self.energy_kwh,
            Metric::NacelleTemperature => &self.nacelle_temperature_c,
            Metric::GearboxTemperature => &self.gearbox_temperature_c,
            Metric::GeneratorTemperature => &self.generator_temperature_c,
            Metric::Vibration => &self.vibration_ms2,
            Metric::OilPressure => &self.oil_pressure_bar,
            Metric::BrakePressure => &self.brake_pressure_bar,
            Metric::PitchAngle => &self.pitch_angle_deg,
            Metric::YawAngle => &self.yaw_angle_deg,
            Metric::TowerLean => &self.tower_lean_deg,
            Metric::Latitude => &self.latitude_deg,
            Metric::Longitude => &self.longitude_deg,
            Metric::AmbientTemperature => &self.ambient_temperature_c,
            Metric::RelativeWindDirection => &self.relative_wind_direction_deg,
            Metric::ReactivePower => &self.reactive_power_kvar,
            Metric::Voltage => &self.voltage_v,
            Metric::Current => &self.current_a,
            Metric::Frequency => &self.frequency_hz,
        }
    }

    fn slot_mut(&mut self, metric: Metric) -> &mut Option<f64> {
        match metric {
            Metric::WindSpeed => &mut self.wind_speed_ms,
            Metric::WindDirection => &mut self.wind_direction_deg,
            Metric::RotorSpeed => &mut self.rotor_speed_rpm,
            Metric::Power => &mut self.power_kw,
            Metric::Energy => &mut self.energy_kwh,
            Metric::NacelleTemperature => &mut self.nacelle_temperature_c,
            Metric::GearboxTemperature => &mut self.gearbox_temperature_c,
            Metric::GeneratorTemperature => &mut self.generator_temperature_c,
            Metric::Vibration => &mut self.vibration_ms2,
            Metric::OilPressure => &mut self.oil_pressure_bar,
            Metric::BrakePressure => &mut self.brake_pressure_bar,
            Metric::PitchAngle => &mut self.pitch_angle_deg,
            Metric::YawAngle => &mut self.yaw_angle_deg,
            Metric::TowerLean => &mut self.tower_lean_deg,
            Metric::Latitude => &mut self.latitude_deg,
            Metric::Longitude => &mut self.longitude_deg,
            Metric::AmbientTemperature => &mut self.ambient_temperature_c,
            Metric::RelativeWindDirection => &mut self.relative_wind_direction_deg,
            Metric::ReactivePower => &mut self.reactive_power_kvar,
            Metric::Voltage => &mut self.voltage_v,
            Metric::Current => &mut self.current_a,
            Metric::Frequency => &mut self.frequency_hz,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schemas::*;
    use apache_avro::Schema;

    fn sample_raw() -> RawReading {
        RawReading {
            event_id: "e1".into(),
            asset_id: "MTR-1".into(),
            asset_kind: Some(AssetKind::Meter),
            event_time: 1_700_000_000_000,
            received_time: 1_700_000_000_500,
            source: "test".into(),
            channel: IngestChannel::Http,
            measurements: vec![Measurement {
                metric: Metric::Power,
                value: 1250.0,
                unit: Some("W".into()),
            }],
            attributes: BTreeMap::from([("firmware".into(), "1.2".into())]),
            interval_ms: Some(900_000),
        }
    }

    fn sample_scored() -> ScoredReading {
        let mut r = ScoredReading {
            site_id: Some("farm-a".into()),
            received_time: 2,
            validated_time: 3,
            source: "s".into(),
            channel: IngestChannel::File,
            quality_score: 80,
            quality_tier: QualityTier::Standard,
            flags: vec![QualityFlag {
                code: FlagCode::Spike,
                metric: Some(Metric::Power),
                deduction: 20,
                quarantine: false,
                detail: "x".into(),
            }],
            attributes: BTreeMap::new(),
            ..ScoredReading::new("e1", "T1", AssetKind::Turbine, 1)
        };
        for m in Metric::ALL {
            r.set_metric(m, m as u8 as f64);
        }
        r
    }

    #[test]
    fn every_schema_parses_and_documents_every_field() {
        for file in ALL {
            let json: serde_json::Value = serde_json::from_str(file.text).unwrap();
            Schema::parse_str(file.text).unwrap_or_else(|e| panic!("{}: {e}", file.name));
            fn check(v: &serde_json::Value, path: &str) {
                if let Some(fields) = v.get("fields").and_then(|f| f.as_array()) {
                    for f in fields {
                        let name = f["name"].as_str().unwrap();
                        assert!(
                            f.get("doc")
                                .and_then(|d| d.as_str())
                                .is_some_and(|d| !d.is_empty()),
                            "{path}.{name} has no doc"
                        );
                        check(&f["type"], &format!("{path}.{name}"));
                    }
                }
                match v {
                    serde_json::Value::Array(items) => items.iter().for_each(|i| check(i, path)),
                    serde_json::Value::Object(o) => {
                        if let Some(items) = o.get("items") {
                            check(items, path)
                        }
                    }
                    _ => {}
                }
            }
            check(&json, file.name);
            assert!(
                json["namespace"].as_str().is_some(),
                "{} has a namespace",
                file.name
            );
        }
    }

    #[test]
    fn types_round_trip_through_their_schemas() {
        let raw_schema = Schema::parse_str(RAW_READING.text).unwrap();
        let raw = sample_raw();
        let value = apache_avro::to_value(&raw).unwrap();
        let value = value.resolve(&raw_schema).unwrap();
        assert_eq!(apache_avro::from_value::<RawReading>(&value).unwrap(), raw);

        for file in [VALIDATED_READING, QUARANTINED_READING] {
            let schema = Schema::parse_str(file.text).unwrap();
            let scored = sample_scored();
            let value = apache_avro::to_value(&scored)
                .unwrap()
                .resolve(&schema)
                .unwrap();
            assert_eq!(
                apache_avro::from_value::<ScoredReading>(&value).unwrap(),
                scored
            );
        }
    }

    #[test]
    fn metric_columns_match_the_validated_schema() {
        let json: serde_json::Value = serde_json::from_str(VALIDATED_READING.text).unwrap();
        let names: Vec<&str> = json["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        for m in Metric::ALL {
            assert!(names.contains(&m.column()), "{} missing", m.column());
        }
        assert_eq!(
            "gearbox-temperature".parse::<Metric>(),
            Ok(Metric::GearboxTemperature)
        );
        assert_eq!("power_kw".parse::<Metric>(), Ok(Metric::Power));
        assert!("flux"
            .parse::<Metric>()
            .unwrap_err()
            .contains("expected one of"));
    }
}
