//! Records of the stages after validate: enriched and checked readings
//! (`gale.enriched`, `gale.checked`) and fault events (`gale.faults`).
//!
//! Each reading record embeds the one before it (`#[serde(flatten)]`), as
//! its schema lists the earlier record's fields first, unchanged (names,
//! types, order), and adds optional ones after: code that maps a validated
//! reading's fields by name (pg-sink, the lake, SQL) handles the later
//! records too.

use serde::{Deserialize, Serialize};

use crate::reading::{AssetKind, ScoredReading};

/// Attribute on the readings detect-faults quarantines: enrich, which may
/// also read the quarantine topic, passes them by (they were checked already).
pub const QUARANTINED_BY: &str = "gale.quarantined_by";

/// What enrich could not add to a reading (`context_flags`).
pub mod context {
    /// The asset is not in the registry enrich reads (validate's may differ).
    pub const NOT_IN_REGISTRY: &str = "NOT_IN_REGISTRY";
    /// The asset has no site, or its site is not registered.
    pub const NO_SITE: &str = "NO_SITE";
    /// A turbine without a registered model.
    pub const NO_MODEL: &str = "NO_MODEL";
    /// A turbine whose model has no power curve.
    pub const NO_POWER_CURVE: &str = "NO_POWER_CURVE";
    /// A turbine reading without wind speed: no expected power.
    pub const NO_WIND_SPEED: &str = "NO_WIND_SPEED";
    /// No ambient temperature: the wind speed is not density-corrected.
    pub const NO_TEMPERATURE: &str = "NO_TEMPERATURE";
    /// No rated power: no capacity factor.
    pub const NO_RATED_POWER: &str = "NO_RATED_POWER";
}

/// A validated reading with asset context (`schemas/enriched_reading.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedReading {
    /// The validated reading, unchanged.
    #[serde(flatten)]
    pub reading: ScoredReading,
    /// Site name.
    #[serde(default)]
    pub site_name: Option<String>,
    /// Site IANA time zone.
    #[serde(default)]
    pub site_time_zone: Option<String>,
    /// Site latitude.
    #[serde(default)]
    pub site_latitude_deg: Option<f64>,
    /// Site longitude.
    #[serde(default)]
    pub site_longitude_deg: Option<f64>,
    /// Turbine model.
    #[serde(default)]
    pub model_id: Option<String>,
    /// Rated power (kW).
    #[serde(default)]
    pub rated_power_kw: Option<f64>,
    /// Cut-in wind speed (m/s).
    #[serde(default)]
    pub cut_in_wind_speed_ms: Option<f64>,
    /// Rated wind speed (m/s).
    #[serde(default)]
    pub rated_wind_speed_ms: Option<f64>,
    /// Cut-out wind speed (m/s).
    #[serde(default)]
    pub cut_out_wind_speed_ms: Option<f64>,
    /// Air density (kg/m³), when temperature is known.
    #[serde(default)]
    pub air_density_kg_m3: Option<f64>,
    /// Wind speed normalised to standard air density (m/s).
    #[serde(default)]
    pub normalized_wind_speed_ms: Option<f64>,
    /// Power from the model's curve at the normalised wind speed (kW).
    #[serde(default)]
    pub expected_power_kw: Option<f64>,
    /// Expected minus measured power (kW).
    #[serde(default)]
    pub power_deficit_kw: Option<f64>,
    /// Measured power over rated power.
    #[serde(default)]
    pub capacity_factor: Option<f64>,
    /// Meter's contracted capacity (kW).
    #[serde(default)]
    pub contracted_capacity_kw: Option<f64>,
    /// Meter's feeder or neighbourhood.
    #[serde(default)]
    pub feeder_id: Option<String>,
    /// Vacant property.
    #[serde(default)]
    pub vacant: bool,
    /// What could not be added ([`context`]).
    #[serde(default)]
    pub context_flags: Vec<String>,
}

impl EnrichedReading {
    /// `reading` with no context yet.
    pub fn bare(reading: ScoredReading) -> Self {
        EnrichedReading {
            reading,
            site_name: None,
            site_time_zone: None,
            site_latitude_deg: None,
            site_longitude_deg: None,
            model_id: None,
            rated_power_kw: None,
            cut_in_wind_speed_ms: None,
            rated_wind_speed_ms: None,
            cut_out_wind_speed_ms: None,
            air_density_kg_m3: None,
            normalized_wind_speed_ms: None,
            expected_power_kw: None,
            power_deficit_kw: None,
            capacity_factor: None,
            contracted_capacity_kw: None,
            feeder_id: None,
            vacant: false,
            context_flags: Vec::new(),
        }
    }
}

/// A fault open on an asset, as carried by a checked reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveFault {
    /// Fault id.
    pub fault_id: String,
    /// Fault code.
    pub code: String,
    /// `INFO`, `WARNING` or `CRITICAL`.
    pub severity: String,
}

/// An enriched reading with its asset's open faults
/// (`schemas/checked_reading.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckedReading {
    /// The enriched reading; its score and tier include the fault deduction.
    #[serde(flatten)]
    pub enriched: EnrichedReading,
    /// Faults open on the asset after this reading.
    #[serde(default)]
    pub faults: Vec<ActiveFault>,
    /// Points deducted for them.
    #[serde(default)]
    pub fault_deduction: i32,
}

/// Fault severity, as SCADA alarm classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// Which lifecycle step a fault event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FaultStatus {
    /// The condition held long enough: the fault is open.
    Opened,
    /// Still open; a new peak or a higher severity.
    Updated,
    /// The condition has been clear long enough (or the data resumed).
    Closed,
}

/// One step of a fault's lifecycle (`schemas/fault_event.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// `fault_id:revision`: this event's id.
    pub event_id: String,
    /// `asset_id:CODE:opened_time_ms`.
    pub fault_id: String,
    /// Asset.
    pub asset_id: String,
    /// Asset kind.
    pub asset_kind: AssetKind,
    /// Site.
    #[serde(default)]
    pub site_id: Option<String>,
    /// Fault code.
    pub code: String,
    /// Severity now.
    pub severity: Severity,
    /// Lifecycle step.
    pub status: FaultStatus,
    /// The rule's maintenance flag.
    pub maintenance_required: bool,
    /// Opening event time (ms).
    pub opened_time: i64,
    /// Latest evidence (ms).
    pub updated_time: i64,
    /// Closing event time (ms).
    #[serde(default)]
    pub closed_time: Option<i64>,
    /// 0 at opening, +1 per event.
    pub revision: i32,
    /// Metric watched.
    #[serde(default)]
    pub metric: Option<String>,
    /// Value that opened it.
    #[serde(default)]
    pub trigger_value: Option<f64>,
    /// Worst value while open.
    #[serde(default)]
    pub peak_value: Option<f64>,
    /// The rule's threshold.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Explanation.
    pub detail: String,
    /// Trace context of the reading that caused the event.
    #[serde(default)]
    pub traceparent: Option<String>,
}

impl gale_runtime::binary::AvroRecord for FaultEvent {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schemas::{CHECKED_READING, ENRICHED_READING, FAULT_EVENT, VALIDATED_READING};
    use apache_avro::Schema;

    fn scored() -> ScoredReading {
        let mut r = ScoredReading::new("e1", "T1", AssetKind::Turbine, 1_700_000_000_000);
        r.site_id = Some("S".into());
        r.wind_speed_ms = Some(8.5);
        r.power_kw = Some(900.0);
        r
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        text: &str,
        v: &T,
    ) {
        let schema = Schema::parse_str(text).unwrap();
        let w = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap();
        let mut out = Vec::new();
        w.write_ser(&mut out, v).unwrap();
        #[allow(deprecated)]
        let value = apache_avro::from_avro_datum(&schema, &mut &out[..], None).unwrap();
        assert_eq!(&apache_avro::from_value::<T>(&value).unwrap(), v);
    }

    fn enriched() -> EnrichedReading {
        let mut e = EnrichedReading::bare(scored());
        e.model_id = Some("V90".into());
        e.expected_power_kw = Some(1_000.0);
        e.power_deficit_kw = Some(100.0);
        e.context_flags = vec![context::NO_TEMPERATURE.into()];
        e
    }

    #[test]
    fn stage_records_round_trip_through_their_schemas() {
        round_trip(ENRICHED_READING.text, &enriched());
        round_trip(
            CHECKED_READING.text,
            &CheckedReading {
                enriched: enriched(),
                faults: vec![ActiveFault {
                    fault_id: "T1:GEARBOX_OVERHEAT:1".into(),
                    code: "GEARBOX_OVERHEAT".into(),
                    severity: "CRITICAL".into(),
                }],
                fault_deduction: 30,
            },
        );
        round_trip(
            FAULT_EVENT.text,
            &FaultEvent {
                event_id: "T1:GEARBOX_OVERHEAT:1:2".into(),
                fault_id: "T1:GEARBOX_OVERHEAT:1".into(),
                asset_id: "T1".into(),
                asset_kind: AssetKind::Turbine,
                site_id: None,
                code: "GEARBOX_OVERHEAT".into(),
                severity: Severity::Critical,
                status: FaultStatus::Closed,
                maintenance_required: true,
                opened_time: 1,
                updated_time: 2,
                closed_time: Some(3),
                revision: 2,
                metric: Some("gearbox_temperature".into()),
                trigger_value: Some(81.0),
                peak_value: Some(85.0),
                threshold: Some(80.0),
                detail: "d".into(),
                traceparent: None,
            },
        );
    }

    #[test]
    fn enriched_and_checked_records_start_with_the_fields_before_them_unchanged() {
        let fields = |text: &str| -> Vec<serde_json::Value> {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            v["fields"].as_array().unwrap().clone()
        };
        let validated = fields(VALIDATED_READING.text);
        let enriched = fields(ENRICHED_READING.text);
        let checked = fields(CHECKED_READING.text);
        assert_eq!(enriched[..validated.len()], validated[..]);
        assert_eq!(checked[..enriched.len()], enriched[..]);
    }
}
