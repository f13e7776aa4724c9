//! Simulated fleets: wind turbines with the sensor behaviour and fault rates
//! of `windmill-iot-fault-simulation.md`, and smart meters with the unit
//! variety, gaps, stuck and zero values of real head-end exports.
//!
//! Everything here is a function of the seed and the ticks (called in
//! order, with their event times), so two runs with the same seed and
//! schedule produce the same readings; the schedule and the sending side
//! (HTTP or Kafka) are in `send.rs`.

use chrono::{DateTime, SecondsFormat, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

/// Fault and data-quality scenarios, with the rate they occur at (per reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Turbine gearbox above 80 °C (5 %).
    GearboxOverheat,
    /// Turbine generator above 75 °C (3 %).
    GeneratorOverheat,
    /// Vibration above 2 m/s² (8 %).
    HighVibration,
    /// Oil pressure below 35 bar (6 %).
    LowOilPressure,
    /// Tower lean above 1.5° (2 %).
    TowerLean,
    /// A tower-lean sensor glitch far outside the physical range (0.5 %): quarantined.
    LeanSensorGlitch,
    /// Meter above the 20 kW residential limit (1 %): quarantined.
    MeterOverload,
    /// Meter reporting negative power (0.5 %): rejected.
    NegativePower,
    /// Sudden ×8 jump (2 %): rate-of-change flag.
    Spike,
    /// Event time two hours ahead (1 %): timestamp flag.
    FutureTimestamp,
    /// An id missing from the asset registry (1 %): rejected.
    UnknownAsset,
    /// Turbine running (wind between cut-in and cut-out) but below 100 kW:
    /// the spec's INFO condition. Not injected; it follows from the wind.
    LowPowerOutput,
}

impl Scenario {
    /// Name recorded in the reading's `sim_scenario` attribute.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::GearboxOverheat => "GEARBOX_OVERHEAT",
            Scenario::GeneratorOverheat => "GENERATOR_OVERHEAT",
            Scenario::HighVibration => "HIGH_VIBRATION",
            Scenario::LowOilPressure => "LOW_OIL_PRESSURE",
            Scenario::TowerLean => "TOWER_LEAN",
            Scenario::LeanSensorGlitch => "LEAN_SENSOR_GLITCH",
            Scenario::MeterOverload => "METER_OVERLOAD",
            Scenario::NegativePower => "NEGATIVE_POWER",
            Scenario::Spike => "SPIKE",
            Scenario::FutureTimestamp => "FUTURE_TIMESTAMP",
            Scenario::UnknownAsset => "UNKNOWN_ASSET",
            Scenario::LowPowerOutput => "LOW_POWER_OUTPUT",
        }
    }
}

/// One simulated turbine.
#[derive(Debug, Clone)]
pub struct Turbine {
    /// `TURBINE_00001`...
    pub id: String,
    /// Wind farm.
    pub site: String,
    /// Rated power, kW.
    pub rated_kw: f64,
    /// Position.
    pub lat: f64,
    /// Position.
    pub lon: f64,
}

/// One simulated meter.
#[derive(Debug, Clone)]
pub struct Meter {
    /// `MTR-00001`...
    pub id: String,
    /// Grid area.
    pub site: String,
    /// Typical demand, kW.
    pub base_kw: f64,
    /// Reports the same value forever.
    pub stuck: bool,
    /// Reports zero (vacant property or dead sensor).
    pub zero: bool,
    /// The power unit its head-end uses (`kW`, `W`, `watts`, `kWh` for
    /// interval consumption, or none).
    pub unit: Option<&'static str>,
}

/// A fleet, generated from a seed.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Turbines.
    pub turbines: Vec<Turbine>,
    /// Meters.
    pub meters: Vec<Meter>,
}

const FARMS: [(&str, f64, f64); 4] = [
    ("farm-a", 55.2, 8.1),
    ("farm-b", 54.9, 7.6),
    ("farm-c", 53.6, 6.9),
    ("farm-d", 57.1, 9.4),
];

impl Fleet {
    /// `turbines` turbines and `meters` meters, deterministic in `seed`.
    pub fn generate(turbines: usize, meters: usize, seed: u64) -> Fleet {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let turbines = (0..turbines)
            .map(|i| {
                let (site, lat, lon) = FARMS[i % FARMS.len()];
                Turbine {
                    id: format!("TURBINE_{:05}", i + 1),
                    site: site.into(),
                    rated_kw: [2000.0, 3000.0, 3600.0][rng.random_range(0..3)],
                    lat: lat + rng.random_range(-0.05..0.05),
                    lon: lon + rng.random_range(-0.05..0.05),
                }
            })
            .collect();
        let meters = (0..meters)
            .map(|i| {
                let roll: f64 = rng.random();
                Meter {
                    id: format!("MTR-{:05}", i + 1),
                    site: format!("grid-{}", ["north", "south", "east", "west"][i % 4]),
                    base_kw: rng.random_range(0.3..6.0),
                    stuck: roll < 0.05,
                    zero: (0.05..0.10).contains(&roll),
                    unit: [
                        Some("kW"),
                        Some("kW"),
                        Some("W"),
                        Some("watts"),
                        Some("kWh"),
                        None,
                    ][rng.random_range(0..6)],
                }
            })
            .collect();
        Fleet { turbines, meters }
    }

    /// The asset registry CSV for this fleet (`asset_id,kind,site_id,...`).
    pub fn assets_csv(&self) -> String {
        let mut out = String::from("asset_id,kind,site_id,capacity_kw,latitude,longitude\n");
        for t in &self.turbines {
            out.push_str(&format!(
                "{},turbine,{},{},{:.5},{:.5}\n",
                t.id, t.site, t.rated_kw, t.lat, t.lon
            ));
        }
        for m in &self.meters {
            out.push_str(&format!("{},meter,{},,,\n", m.id, m.site));
        }
        out
    }

    /// Number of assets.
    pub fn len(&self) -> usize {
        self.turbines.len() + self.meters.len()
    }

    /// True when the fleet is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Share of meter intervals with no reading.
pub const METER_GAP_RATE: f64 = 0.05;

/// Turbines below this output while running meet the spec's LOW_POWER_OUTPUT condition.
pub const LOW_POWER_KW: f64 = 100.0;

/// One generated row plus what the simulator meant by it.
#[derive(Debug, Clone)]
pub struct SimRow {
    /// Canonical-column JSON object, as the ingest API takes it.
    pub row: Map<String, Value>,
    /// Injected scenario, if any.
    pub scenario: Option<Scenario>,
    /// The turbine was running below [`LOW_POWER_KW`] (the spec's
    /// LOW_POWER_OUTPUT); independent of any injected scenario.
    pub low_power_output: bool,
    /// Missing interval: nothing is sent for this asset this tick.
    pub gap: bool,
}

/// The id a reading of `real_id` carries in the UNKNOWN_ASSET scenario.
/// Real ids start with `TURBINE_` or `MTR-`, so however large the fleet,
/// this never names a registered asset.
pub fn unknown_id(real_id: &str) -> String {
    format!("GHOST-{real_id}")
}

/// Produces readings tick by tick.
pub struct Generator {
    fleet: Fleet,
    seed: u64,
    wind: Vec<f64>,
    direction: Vec<f64>,
    /// Each meter's energy register, kWh.
    registers: Vec<f64>,
    /// Event time of the previous tick: the register advances by the
    /// consumption between ticks, so it follows the tick interval.
    last_tick: Option<DateTime<Utc>>,
}

impl Generator {
    /// A generator over `fleet`.
    pub fn new(fleet: Fleet, seed: u64) -> Self {
        let n = fleet.turbines.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x656e_6572_6779);
        Generator {
            wind: vec![9.0; n],
            direction: (0..n).map(|i| (i as f64 * 37.0) % 360.0).collect(),
            registers: fleet
                .meters
                .iter()
                .map(|_| rng.random_range(1_000.0..40_000.0))
                .collect(),
            last_tick: None,
            fleet,
            seed,
        }
    }

    /// The fleet.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Readings of every asset at `tick` (event time `at`). Call ticks in
    /// order, with increasing event times.
    pub fn tick(&mut self, tick: u64, at: DateTime<Utc>) -> Vec<SimRow> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ tick.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let hours = self.last_tick.map_or(0.0, |last| {
            (at - last).num_milliseconds().max(0) as f64 / 3_600_000.0
        });
        self.last_tick = Some(at);
        let mut out = Vec::with_capacity(self.fleet.len());
        for i in 0..self.fleet.turbines.len() {
            let row = self.turbine(i, &mut rng, at);
            out.push(row);
        }
        for i in 0..self.fleet.meters.len() {
            let row = self.meter(i, hours, &mut rng, at);
            out.push(row);
        }
        out
    }

    fn turbine(&mut self, i: usize, rng: &mut ChaCha8Rng, at: DateTime<Utc>) -> SimRow {
        let t = &self.fleet.turbines[i];
        self.wind[i] = (self.wind[i] + rng.random_range(-1.2..1.2)).clamp(0.5, 27.0);
        self.direction[i] = (self.direction[i] + rng.random_range(-8.0..8.0)).rem_euclid(360.0);
        let ws = self.wind[i];
        let power = power_curve(ws, t.rated_kw) * rng.random_range(0.95..1.02);
        let running = (3.0..25.0).contains(&ws);
        let rpm = if running {
            (6.0 + 10.0 * (ws - 3.0) / 9.0).min(16.0)
        } else {
            0.0
        };
        let pitch = if ws > 12.0 {
            ((ws - 12.0) * 2.2).min(30.0)
        } else if running {
            1.0
        } else {
            88.0
        };
        let mut gearbox = rng.random_range(55.0..74.0);
        let mut generator = rng.random_range(50.0..70.0);
        let mut vibration = rng.random_range(0.4..1.6);
        let mut oil = rng.random_range(40.0..60.0);
        let mut lean = rng.random_range(0.1..0.8);
        let roll: f64 = rng.random();
        // Cumulative fault rates of the simulation spec.
        let scenario = match roll {
            r if r < 0.05 => Some(Scenario::GearboxOverheat),
            r if r < 0.08 => Some(Scenario::GeneratorOverheat),
            r if r < 0.16 => Some(Scenario::HighVibration),
            r if r < 0.22 => Some(Scenario::LowOilPressure),
            r if r < 0.24 => Some(Scenario::TowerLean),
            r if r < 0.245 => Some(Scenario::LeanSensorGlitch),
            r if r < 0.255 => Some(Scenario::UnknownAsset),
            _ => None,
        };
        match scenario {
            Some(Scenario::GearboxOverheat) => gearbox = rng.random_range(81.0..95.0),
            Some(Scenario::GeneratorOverheat) => generator = rng.random_range(76.0..92.0),
            Some(Scenario::HighVibration) => vibration = rng.random_range(2.1..5.0),
            Some(Scenario::LowOilPressure) => oil = rng.random_range(20.0..34.0),
            Some(Scenario::TowerLean) => lean = rng.random_range(1.6..3.0),
            Some(Scenario::LeanSensorGlitch) => lean = rng.random_range(12.0..40.0),
            _ => {}
        }
        let id = if scenario == Some(Scenario::UnknownAsset) {
            unknown_id(&t.id)
        } else {
            t.id.clone()
        };
        let low_power_output = running && power < LOW_POWER_KW;
        let mut row = Map::new();
        row.insert("asset_id".into(), json!(id));
        row.insert("asset_kind".into(), json!("turbine"));
        row.insert(
            "timestamp".into(),
            json!(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        row.insert("wind_speed".into(), json!(r2(ws)));
        row.insert("wind_speed_unit".into(), json!("m/s"));
        row.insert("wind_direction_deg".into(), json!(r2(self.direction[i])));
        row.insert("rotor_speed_rpm".into(), json!(r2(rpm)));
        row.insert("power_kw".into(), json!(r2(power)));
        row.insert(
            "nacelle_temperature_c".into(),
            json!(r2(rng.random_range(12.0..34.0))),
        );
        row.insert("gearbox_temperature_c".into(), json!(r2(gearbox)));
        row.insert("generator_temperature_c".into(), json!(r2(generator)));
        row.insert("vibration_ms2".into(), json!(r2(vibration)));
        row.insert("oil_pressure_bar".into(), json!(r2(oil)));
        row.insert(
            "brake_pressure_bar".into(),
            json!(r2(rng.random_range(150.0..180.0))),
        );
        row.insert("pitch_angle_deg".into(), json!(r2(pitch)));
        row.insert(
            "yaw_angle_deg".into(),
            json!(r2(
                (self.direction[i] + rng.random_range(-4.0..4.0)).rem_euclid(360.0)
            )),
        );
        row.insert("tower_lean_deg".into(), json!(r2(lean)));
        row.insert("latitude_deg".into(), json!(t.lat));
        row.insert("longitude_deg".into(), json!(t.lon));
        if let Some(s) = scenario {
            row.insert("sim_scenario".into(), json!(s.name()));
        }
        if low_power_output {
            row.insert(
                "sim_condition".into(),
                json!(Scenario::LowPowerOutput.name()),
            );
        }
        SimRow {
            row,
            scenario,
            low_power_output,
            gap: false,
        }
    }

    /// One meter reading; `hours` since the previous tick advance its register.
    fn meter(&mut self, i: usize, hours: f64, rng: &mut ChaCha8Rng, at: DateTime<Utc>) -> SimRow {
        let m = &self.fleet.meters[i];
        let gap = rng.random::<f64>() < METER_GAP_RATE;
        // Daily demand profile around the meter's base load.
        let hour = (at.timestamp() / 3600 % 24) as f64;
        let profile = 1.0 + 0.6 * ((hour - 7.0) / 24.0 * std::f64::consts::TAU).sin();
        let mut kw = if m.zero {
            0.0
        } else if m.stuck {
            m.base_kw
        } else {
            (m.base_kw * profile * rng.random_range(0.85..1.15)).max(0.05)
        };
        // The register counts what was consumed, glitches aside; a stuck
        // meter's register is stuck too.
        if !m.stuck {
            self.registers[i] += kw * hours;
        }
        let register_kwh = self.registers[i];
        let roll: f64 = rng.random();
        let scenario = match roll {
            r if r < 0.01 => Some(Scenario::MeterOverload),
            r if r < 0.015 => Some(Scenario::NegativePower),
            r if r < 0.035 => Some(Scenario::Spike),
            r if r < 0.045 => Some(Scenario::FutureTimestamp),
            r if r < 0.055 => Some(Scenario::UnknownAsset),
            _ => None,
        };
        let mut at = at;
        match scenario {
            Some(Scenario::MeterOverload) => kw = rng.random_range(21.0..35.0),
            Some(Scenario::NegativePower) => kw = -rng.random_range(0.1..2.0),
            Some(Scenario::Spike) => kw *= 8.0,
            Some(Scenario::FutureTimestamp) => at += chrono::Duration::hours(2),
            _ => {}
        }
        let id = if scenario == Some(Scenario::UnknownAsset) {
            unknown_id(&m.id)
        } else {
            m.id.clone()
        };
        let (value, unit) = match m.unit {
            Some("W") => (kw * 1000.0, Some("W")),
            Some("watts") => (kw * 1000.0, Some("watts")),
            Some(u) => (kw, Some(u)),
            // Head-ends without units send W for big values, kW for small ones.
            None => (if kw > 10.0 { kw * 1000.0 } else { kw }, None),
        };
        // Head-ends that speak W report the register in Wh, the rest in kWh.
        let (energy, energy_unit) = match m.unit {
            Some("W") | Some("watts") => (register_kwh * 1000.0, "Wh"),
            _ => (register_kwh, "kWh"),
        };
        let mut row = Map::new();
        row.insert("asset_id".into(), json!(id));
        row.insert(
            "timestamp".into(),
            json!(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        row.insert("power".into(), json!(r2(value)));
        if let Some(u) = unit {
            row.insert("power_unit".into(), json!(u));
        }
        row.insert("energy".into(), json!(r2(energy)));
        row.insert("energy_unit".into(), json!(energy_unit));
        if let Some(s) = scenario {
            row.insert("sim_scenario".into(), json!(s.name()));
        }
        SimRow {
            row,
            scenario,
            low_power_output: false,
            gap,
        }
    }
}

/// Turbine output for wind speed `ws` (m/s): cut-in 3, rated 12, cut-out 25.
pub fn power_curve(ws: f64, rated_kw: f64) -> f64 {
    if !(3.0..25.0).contains(&ws) {
        0.0
    } else if ws >= 12.0 {
        rated_kw
    } else {
        rated_kw * ((ws - 3.0) / 9.0).powi(3)
    }
}

fn r2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn same_seed_same_readings() {
        let at = Utc::now();
        let mut a = Generator::new(Fleet::generate(5, 5, 7), 7);
        let mut b = Generator::new(Fleet::generate(5, 5, 7), 7);
        for tick in 0..5 {
            let ra: Vec<_> = a.tick(tick, at).into_iter().map(|r| r.row).collect();
            let rb: Vec<_> = b.tick(tick, at).into_iter().map(|r| r.row).collect();
            assert_eq!(ra, rb);
        }
        let mut c = Generator::new(Fleet::generate(5, 5, 8), 8);
        assert_ne!(
            c.tick(0, at).into_iter().map(|r| r.row).collect::<Vec<_>>(),
            Generator::new(Fleet::generate(5, 5, 7), 7)
                .tick(0, at)
                .into_iter()
                .map(|r| r.row)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn fault_rates_follow_the_spec() {
        let mut g = Generator::new(Fleet::generate(100, 0, 1), 1);
        let mut counts: BTreeMap<Scenario, usize> = BTreeMap::new();
        let ticks = 200;
        for t in 0..ticks {
            for r in g.tick(t, Utc::now()) {
                if let Some(s) = r.scenario {
                    *counts.entry(s).or_default() += 1;
                }
            }
        }
        let n = (ticks * 100) as f64;
        let rate = |s| *counts.get(&s).unwrap_or(&0) as f64 / n;
        assert!(
            (rate(Scenario::GearboxOverheat) - 0.05).abs() < 0.01,
            "{counts:?}"
        );
        assert!((rate(Scenario::GeneratorOverheat) - 0.03).abs() < 0.01);
        assert!((rate(Scenario::HighVibration) - 0.08).abs() < 0.01);
        assert!((rate(Scenario::LowOilPressure) - 0.06).abs() < 0.01);
        assert!((rate(Scenario::TowerLean) - 0.02).abs() < 0.005);
    }

    #[test]
    fn injected_faults_have_their_values() {
        let mut g = Generator::new(Fleet::generate(50, 50, 3), 3);
        for t in 0..50 {
            for r in g.tick(t, Utc::now()) {
                let f = |k: &str| r.row.get(k).and_then(Value::as_f64).unwrap();
                match r.scenario {
                    Some(Scenario::GearboxOverheat) => assert!(f("gearbox_temperature_c") > 80.0),
                    Some(Scenario::LowOilPressure) => assert!(f("oil_pressure_bar") < 35.0),
                    Some(Scenario::NegativePower) => assert!(f("power") < 0.0),
                    Some(Scenario::UnknownAsset) => {
                        assert!(r.row["asset_id"].as_str().unwrap().starts_with("GHOST-"))
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn unknown_ids_never_name_a_real_asset_however_large_the_fleet() {
        let fleet = Fleet::generate(100_000, 100_000, 5);
        let ids: std::collections::HashSet<&str> = fleet
            .turbines
            .iter()
            .map(|t| t.id.as_str())
            .chain(fleet.meters.iter().map(|m| m.id.as_str()))
            .collect();
        assert_eq!(ids.len(), 200_000);
        for id in &ids {
            assert!(!ids.contains(unknown_id(id).as_str()), "{id}");
        }
        let mut g = Generator::new(Fleet::generate(30, 30, 5), 5);
        let mut unknown = 0;
        for t in 0..100 {
            for r in g.tick(t, Utc::now()) {
                if r.scenario == Some(Scenario::UnknownAsset) {
                    unknown += 1;
                    let id = r.row["asset_id"].as_str().unwrap();
                    assert!(!g.fleet().assets_csv().contains(&format!("\n{id},")));
                }
            }
        }
        assert!(unknown > 0);
    }

    fn energy_of(r: &SimRow) -> f64 {
        let v = r.row["energy"].as_f64().unwrap();
        match r.row["energy_unit"].as_str().unwrap() {
            "kWh" => v,
            "Wh" => v / 1000.0,
            u => panic!("energy unit {u}"),
        }
    }

    fn meter_rows(g: &mut Generator, tick: u64, at: DateTime<Utc>) -> Vec<SimRow> {
        let turbines = g.fleet().turbines.len();
        g.tick(tick, at).into_iter().skip(turbines).collect()
    }

    #[test]
    fn energy_registers_follow_the_interval_and_stick_with_stuck_meters() {
        let fleet = Fleet::generate(0, 200, 9);
        let t0 = DateTime::parse_from_rfc3339("2024-03-15T14:00:00Z")
            .unwrap()
            .to_utc();
        let advance = |interval_s: i64| {
            let mut g = Generator::new(fleet.clone(), 9);
            let first = meter_rows(&mut g, 0, t0);
            let second = meter_rows(&mut g, 1, t0 + chrono::Duration::seconds(interval_s));
            first
                .iter()
                .zip(&second)
                .map(|(a, b)| energy_of(b) - energy_of(a))
                .collect::<Vec<_>>()
        };
        let ten = advance(10);
        let hour = advance(3600);
        for (i, m) in fleet.meters.iter().enumerate() {
            assert!(
                ten[i] >= -0.01 && hour[i] >= -0.01,
                "registers never run back"
            );
            if m.stuck || m.zero {
                assert!(hour[i].abs() < 0.01, "{} is stuck or empty", m.id);
            } else {
                // An hour at 0.3-10 kW is hundreds of times ten seconds.
                assert!(hour[i] > 0.1 && hour[i] > ten[i] * 50.0, "{}", m.id);
            }
        }
        assert!(fleet.meters.iter().any(|m| m.stuck));
    }

    #[test]
    fn meters_use_the_units_of_real_head_ends() {
        let fleet = Fleet::generate(0, 300, 4);
        let units: std::collections::BTreeSet<_> = fleet.meters.iter().map(|m| m.unit).collect();
        for u in [Some("kW"), Some("W"), Some("watts"), Some("kWh"), None] {
            assert!(units.contains(&u), "{u:?}");
        }
        let mut g = Generator::new(fleet, 4);
        let rows = meter_rows(&mut g, 0, Utc::now());
        let energy_units: std::collections::BTreeSet<&str> = rows
            .iter()
            .map(|r| r.row["energy_unit"].as_str().unwrap())
            .collect();
        assert_eq!(energy_units, ["Wh", "kWh"].into());
    }

    #[test]
    fn low_power_output_is_counted_where_the_spec_defines_it() {
        let mut g = Generator::new(Fleet::generate(100, 0, 2), 2);
        let mut low = 0;
        for t in 0..200 {
            for r in g.tick(t, Utc::now()) {
                let power = r.row["power_kw"].as_f64().unwrap();
                let rpm = r.row["rotor_speed_rpm"].as_f64().unwrap();
                assert_eq!(r.low_power_output, rpm > 0.0 && power < LOW_POWER_KW);
                if r.low_power_output {
                    low += 1;
                    assert_eq!(r.row["sim_condition"], "LOW_POWER_OUTPUT");
                }
            }
        }
        assert!(low > 0, "light winds happen");
    }

    #[test]
    fn power_curve_shape() {
        assert_eq!(power_curve(2.0, 3000.0), 0.0);
        assert_eq!(power_curve(13.0, 3000.0), 3000.0);
        assert_eq!(power_curve(26.0, 3000.0), 0.0);
        assert!(power_curve(7.5, 3000.0) > 0.0 && power_curve(7.5, 3000.0) < 3000.0);
    }

    #[test]
    fn assets_csv_lists_the_fleet() {
        let f = Fleet::generate(2, 3, 1);
        let csv = f.assets_csv();
        assert_eq!(csv.lines().count(), 6);
        assert!(csv.contains("TURBINE_00002,turbine,farm-b"));
        assert!(csv.contains("MTR-00003,meter,grid-east"));
    }
}
