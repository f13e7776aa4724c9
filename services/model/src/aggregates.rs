//! Aggregates: statistics of an asset over an event-time window
//! (`gale.agg.asset.*`, `schemas/asset_aggregate.avsc`).

use serde::{Deserialize, Serialize};

use crate::reading::AssetKind;

/// One asset's statistics over one window (`schemas/asset_aggregate.avsc`;
/// field docs there and in `docs/aggregates.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetAggregate {
    /// Id of this record: aggregate_id:revision. Sinks deduplicate on it.
    pub event_id: String,
    /// Id of the window: asset_id:grain:window_start_ms. Sinks keep the highest revision per aggregate_id.
    pub aggregate_id: String,
    /// Asset.
    pub asset_id: String,
    /// Kind of asset.
    pub asset_kind: AssetKind,
    /// Site of the asset (from its latest reading in the window).
    #[serde(default)]
    pub site_id: Option<String>,
    /// Window size: 10m or 1h (UTC-aligned) or 1d (the site's local calendar day).
    pub grain: String,
    /// Window start, inclusive (UTC).
    pub window_start: i64,
    /// Window end, exclusive (UTC); a local day is 23, 24 or 25 hours long.
    pub window_end: i64,
    /// IANA zone the window is aligned in: the site's for 1d, UTC otherwise.
    pub time_zone: String,
    /// Date (YYYY-MM-DD) of window_start in time_zone.
    pub local_date: String,
    /// 0 for the first emission of the window; each correction (a late reading) adds 1.
    pub revision: i32,
    /// Readings received for the window (distinct event times): used + fault_excluded + quarantined.
    pub readings: i64,
    /// Readings the statistics are computed from.
    pub readings_used: i64,
    /// Readings excluded because a fault of the excluding severity was open on the asset.
    pub readings_fault_excluded: i64,
    /// Quarantined readings (never counted in statistics).
    pub readings_quarantined: i64,
    /// Readings that arrived after the window was first emitted (each produced a revision).
    pub readings_late: i64,
    /// Readings ignored because the window already had one at the same event time.
    pub readings_duplicate: i64,
    /// Set on an hourly record standing for an hour without readings between two with: `interpolated` or `missing_short`.
    #[serde(default)]
    pub gap: Option<String>,
    /// Readings expected: window length over the asset's interval.
    #[serde(default)]
    pub readings_expected: Option<i64>,
    /// readings / readings_expected.
    #[serde(default)]
    pub coverage: Option<f64>,
    /// The asset's reading interval used for coverage and energy.
    #[serde(default)]
    pub interval_ms: Option<i64>,
    /// Mean quality score of the readings used.
    #[serde(default)]
    pub quality_score: Option<f64>,
    /// Event time of the earliest reading used.
    #[serde(default)]
    pub first_event_time: Option<i64>,
    /// Event time of the latest reading used.
    #[serde(default)]
    pub last_event_time: Option<i64>,
    /// Readings used that carry active power, kW.
    #[serde(default)]
    pub power_kw_count: i64,
    /// Mean of active power, kW.
    #[serde(default)]
    pub power_kw_mean: Option<f64>,
    /// Minimum of active power, kW.
    #[serde(default)]
    pub power_kw_min: Option<f64>,
    /// Maximum of active power, kW.
    #[serde(default)]
    pub power_kw_max: Option<f64>,
    /// Sample standard deviation (n - 1, as SQL stddev_samp) of active power, kW; null below two values.
    #[serde(default)]
    pub power_kw_stddev: Option<f64>,
    /// Readings used that carry wind speed, m/s.
    #[serde(default)]
    pub wind_speed_ms_count: i64,
    /// Mean of wind speed, m/s.
    #[serde(default)]
    pub wind_speed_ms_mean: Option<f64>,
    /// Minimum of wind speed, m/s.
    #[serde(default)]
    pub wind_speed_ms_min: Option<f64>,
    /// Maximum of wind speed, m/s.
    #[serde(default)]
    pub wind_speed_ms_max: Option<f64>,
    /// Sample standard deviation (n - 1, as SQL stddev_samp) of wind speed, m/s; null below two values.
    #[serde(default)]
    pub wind_speed_ms_stddev: Option<f64>,
    /// Readings used that carry outdoor temperature, °C.
    #[serde(default)]
    pub ambient_temperature_c_count: i64,
    /// Mean of outdoor temperature, °C.
    #[serde(default)]
    pub ambient_temperature_c_mean: Option<f64>,
    /// Minimum of outdoor temperature, °C.
    #[serde(default)]
    pub ambient_temperature_c_min: Option<f64>,
    /// Maximum of outdoor temperature, °C.
    #[serde(default)]
    pub ambient_temperature_c_max: Option<f64>,
    /// Sample standard deviation (n - 1, as SQL stddev_samp) of outdoor temperature, °C; null below two values.
    #[serde(default)]
    pub ambient_temperature_c_stddev: Option<f64>,
    /// Readings used that carry gearbox temperature, °C.
    #[serde(default)]
    pub gearbox_temperature_c_count: i64,
    /// Mean of gearbox temperature, °C.
    #[serde(default)]
    pub gearbox_temperature_c_mean: Option<f64>,
    /// Minimum of gearbox temperature, °C.
    #[serde(default)]
    pub gearbox_temperature_c_min: Option<f64>,
    /// Maximum of gearbox temperature, °C.
    #[serde(default)]
    pub gearbox_temperature_c_max: Option<f64>,
    /// Sample standard deviation (n - 1, as SQL stddev_samp) of gearbox temperature, °C; null below two values.
    #[serde(default)]
    pub gearbox_temperature_c_stddev: Option<f64>,
    /// Readings used that carry drivetrain vibration, m/s².
    #[serde(default)]
    pub vibration_ms2_count: i64,
    /// Mean of drivetrain vibration, m/s².
    #[serde(default)]
    pub vibration_ms2_mean: Option<f64>,
    /// Minimum of drivetrain vibration, m/s².
    #[serde(default)]
    pub vibration_ms2_min: Option<f64>,
    /// Maximum of drivetrain vibration, m/s².
    #[serde(default)]
    pub vibration_ms2_max: Option<f64>,
    /// Sample standard deviation (n - 1, as SQL stddev_samp) of drivetrain vibration, m/s²; null below two values.
    #[serde(default)]
    pub vibration_ms2_stddev: Option<f64>,
    /// Readings used that carry line voltage, V.
    #[serde(default)]
    pub voltage_v_count: i64,
    /// Mean of line voltage, V.
    #[serde(default)]
    pub voltage_v_mean: Option<f64>,
    /// Minimum of line voltage, V.
    #[serde(default)]
    pub voltage_v_min: Option<f64>,
    /// Maximum of line voltage, V.
    #[serde(default)]
    pub voltage_v_max: Option<f64>,
    /// Sample standard deviation (n - 1, as SQL stddev_samp) of line voltage, V; null below two values.
    #[serde(default)]
    pub voltage_v_stddev: Option<f64>,
    /// Energy: sum over the readings used of power_kw times the interval in hours.
    #[serde(default)]
    pub energy_kwh: Option<f64>,
    /// Meters with an energy register: the register's advance between the first and the last reading used.
    #[serde(default)]
    pub energy_register_kwh: Option<f64>,
    /// Turbines: sum of expected_power_kw (power curve) times the interval in hours.
    #[serde(default)]
    pub expected_energy_kwh: Option<f64>,
    /// Turbines: energy over expected energy, over the readings used that have an expected power.
    #[serde(default)]
    pub performance_ratio: Option<f64>,
    /// Turbines: rated power.
    #[serde(default)]
    pub rated_power_kw: Option<f64>,
    /// Turbines: energy_kwh over rated power times the window's length in hours.
    #[serde(default)]
    pub capacity_factor: Option<f64>,
    /// Turbines: hours available (docs/aggregates.md), from readings used or fault-excluded.
    #[serde(default)]
    pub available_hours: Option<f64>,
    /// Turbines: hours not available.
    #[serde(default)]
    pub unavailable_hours: Option<f64>,
    /// Turbines: available_hours / (available_hours + unavailable_hours).
    #[serde(default)]
    pub availability: Option<f64>,
}

impl gale_runtime::binary::AvroRecord for AssetAggregate {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ASSET_AGGREGATE;

    #[test]
    fn an_aggregate_round_trips_through_its_schema() {
        let schema = apache_avro::Schema::parse_str(ASSET_AGGREGATE.text).unwrap();
        let mut v = serde_json::json!({});
        for f in serde_json::from_str::<serde_json::Value>(ASSET_AGGREGATE.text).unwrap()["fields"]
            .as_array()
            .unwrap()
        {
            let name = f["name"].as_str().unwrap();
            let t = match &f["type"] {
                serde_json::Value::Array(union) => &union[1],
                other => other,
            };
            let value = match (t.as_str(), t.get("type").and_then(|x| x.as_str())) {
                (Some("string"), _) => serde_json::json!(format!("{name}-v")),
                (Some("long"), _) | (_, Some("long")) => serde_json::json!(7),
                (Some("int"), _) => serde_json::json!(2),
                (_, Some("enum")) => serde_json::json!("TURBINE"),
                _ => serde_json::json!(1.5),
            };
            v[name] = value;
        }
        let agg: AssetAggregate = serde_json::from_value(v).unwrap();
        assert_eq!(agg.power_kw_mean, Some(1.5));
        assert_eq!(agg.readings_used, 7);
        let w = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap();
        let mut bytes = Vec::new();
        w.write_ser(&mut bytes, &agg).unwrap();
        #[allow(deprecated)]
        let back = apache_avro::from_avro_datum(&schema, &mut &bytes[..], None).unwrap();
        assert_eq!(
            apache_avro::from_value::<AssetAggregate>(&back).unwrap(),
            agg
        );
    }
}
