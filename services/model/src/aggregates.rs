//! Aggregates: statistics of an asset over an event-time window
//! (`gale.agg.asset.*`, `schemas/asset_aggregate.avsc`), their site and
//! fleet roll-ups (`schemas/site_aggregate.avsc`) and daily peak hours
//! (`schemas/peak.avsc`).

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
    /// The site's IANA zone (from enrich), whatever the grain.
    #[serde(default)]
    pub site_time_zone: Option<String>,
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

/// A site's or the fleet's roll-up over one window (`schemas/site_aggregate.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteAggregate {
    /// Id of this record: aggregate_id:revision.
    pub event_id: String,
    /// Id of the window: site:<site_id>:<grain>:<window_start_ms> or fleet:<grain>:<window_start_ms>.
    pub aggregate_id: String,
    /// site or fleet.
    pub scope: String,
    /// The site (null for the fleet).
    #[serde(default)]
    pub site_id: Option<String>,
    /// 1h (UTC-aligned) or 1d (the site's local day; the fleet's configured zone).
    pub grain: String,
    /// Window start, inclusive.
    pub window_start: i64,
    /// Window end, exclusive.
    pub window_end: i64,
    /// Zone the window is aligned in.
    pub time_zone: String,
    /// Date (YYYY-MM-DD) of window_start in time_zone.
    pub local_date: String,
    /// 0 for the first emission; each correction adds 1.
    pub revision: i32,
    /// True on an early update of a day still open: the totals so far.
    #[serde(default)]
    pub provisional: bool,
    /// Asset-hours combined (for 1h: assets with an hourly aggregate).
    pub assets: i64,
    /// Of which turbine asset-hours.
    pub turbines: i64,
    /// Of which meter asset-hours.
    pub meters: i64,
    /// Hourly windows combined (1 for 1h).
    pub hours: i64,
    /// Readings received.
    pub readings: i64,
    /// Readings used.
    pub readings_used: i64,
    /// Readings excluded for an open fault.
    pub readings_fault_excluded: i64,
    /// Quarantined readings.
    pub readings_quarantined: i64,
    /// Readings expected, over assets with a known interval.
    #[serde(default)]
    pub readings_expected: Option<i64>,
    /// Readings received over readings expected (assets with a known interval).
    #[serde(default)]
    pub coverage: Option<f64>,
    /// Mean quality score of the readings used.
    #[serde(default)]
    pub quality_score: Option<f64>,
    /// Turbines' energy.
    #[serde(default)]
    pub production_kwh: Option<f64>,
    /// Meters' energy.
    #[serde(default)]
    pub consumption_kwh: Option<f64>,
    /// Turbines' expected energy (power curve).
    #[serde(default)]
    pub expected_energy_kwh: Option<f64>,
    /// Production over expected energy, over the turbine readings with an expected power.
    #[serde(default)]
    pub performance_ratio: Option<f64>,
    /// Sum of the turbines' rated power.
    #[serde(default)]
    pub rated_power_kw: Option<f64>,
    /// Production over Σ(rated power × hours) of the turbine asset-hours combined.
    #[serde(default)]
    pub capacity_factor: Option<f64>,
    /// Turbine hours available.
    #[serde(default)]
    pub available_hours: Option<f64>,
    /// Turbine hours unavailable.
    #[serde(default)]
    pub unavailable_hours: Option<f64>,
    /// available_hours / (available_hours + unavailable_hours).
    #[serde(default)]
    pub availability: Option<f64>,
    /// Readings with an outdoor temperature.
    #[serde(default)]
    pub ambient_temperature_c_count: i64,
    /// Mean outdoor temperature.
    #[serde(default)]
    pub ambient_temperature_c_mean: Option<f64>,
    /// Asset-hours that were gap fills (interpolated or missing_short).
    #[serde(default)]
    pub gap_hours: i64,
    /// Of which meter asset-hours (their hours are left out of peak analysis).
    #[serde(default)]
    pub meter_gap_hours: i64,
    /// Meters' readings expected (meters with a known interval).
    #[serde(default)]
    pub meter_readings_expected: Option<i64>,
    /// Meters' readings received over expected.
    #[serde(default)]
    pub meter_coverage: Option<f64>,
}

/// One of a day's peak consumption hours (`schemas/peak.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Id of this record: peak_id:revision.
    pub event_id: String,
    /// <scope id>:<local_date>:<rank>, scope id site:<site_id> or fleet.
    pub peak_id: String,
    /// site or fleet.
    pub scope: String,
    /// The site (null for the fleet).
    #[serde(default)]
    pub site_id: Option<String>,
    /// The day (YYYY-MM-DD) in time_zone.
    pub local_date: String,
    /// Zone of the day.
    pub time_zone: String,
    /// summer, winter or shoulder (configured months): compare peaks of like seasons.
    pub season: String,
    /// A configured public holiday: no peaks.
    pub holiday: bool,
    /// Revision of the day's aggregate the peaks were picked from.
    pub revision: i32,
    /// True while the day is still open: the peaks so far.
    #[serde(default)]
    pub provisional: bool,
    /// 1 for the highest consumption hour.
    pub rank: i32,
    /// Start of the hour (null when fewer eligible hours than ranks).
    #[serde(default)]
    pub hour_start: Option<i64>,
    /// Meters' energy in that hour.
    #[serde(default)]
    pub consumption_kwh: Option<f64>,
    /// Mean outdoor temperature in that hour, when known.
    #[serde(default)]
    pub temperature_c: Option<f64>,
    /// Hours of the day considered.
    pub candidate_hours: i32,
    /// Hours left out for a gap in a meter's series or incomplete coverage.
    pub excluded_gap: i32,
    /// Hours left out for a holiday.
    pub excluded_holiday: i32,
    /// Hours left out for a grid-maintenance period.
    pub excluded_maintenance: i32,
    /// Hours left out for extreme temperature.
    pub excluded_temperature: i32,
}

impl gale_runtime::binary::AvroRecord for AssetAggregate {}
impl gale_runtime::binary::AvroRecord for SiteAggregate {}
impl gale_runtime::binary::AvroRecord for Peak {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ASSET_AGGREGATE, PEAK, SITE_AGGREGATE};
    use gale_runtime::schema::SchemaFile;

    /// Fills every field of `file` with a value of its type, decodes that
    /// into `T`, and round-trips it through the schema.
    fn round_trip<T>(file: SchemaFile) -> T
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let schema = apache_avro::Schema::parse_str(file.text).unwrap();
        let mut v = serde_json::json!({});
        for f in serde_json::from_str::<serde_json::Value>(file.text).unwrap()["fields"]
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
                (Some("boolean"), _) => serde_json::json!(true),
                (_, Some("enum")) => serde_json::json!("TURBINE"),
                _ => serde_json::json!(1.5),
            };
            v[name] = value;
        }
        let value: T = serde_json::from_value(v).unwrap();
        let w = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap();
        let mut bytes = Vec::new();
        w.write_ser(&mut bytes, &value).unwrap();
        #[allow(deprecated)]
        let back = apache_avro::from_avro_datum(&schema, &mut &bytes[..], None).unwrap();
        assert_eq!(apache_avro::from_value::<T>(&back).unwrap(), value);
        value
    }

    #[test]
    fn aggregates_and_peaks_round_trip_through_their_schemas() {
        let a: AssetAggregate = round_trip(ASSET_AGGREGATE);
        assert_eq!((a.power_kw_mean, a.readings_used), (Some(1.5), 7));
        let s: SiteAggregate = round_trip(SITE_AGGREGATE);
        assert_eq!(s.production_kwh, Some(1.5));
        let p: Peak = round_trip(PEAK);
        assert!(p.holiday);
    }
}
