//! What one reading contributes to a window, and the aggregate a window's
//! accumulator becomes. Definitions are in `docs/aggregates.md`; the
//! reference test recomputes every field with SQL from the stored readings.

use chrono_tz::Tz;
use gale_model::{AssetAggregate, AssetKind, CheckedReading, QualityTier, Severity};
use serde::{Deserialize, Serialize};

use crate::stats::Stat;
use crate::window::Window;

const HOUR_MS: f64 = 3_600_000.0;

/// How a reading counts in its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// In the statistics.
    Used,
    /// Its asset had a fault of the excluding severity open: counted as
    /// excluded (smart-meter-etl-rules: "excluded until resolved").
    FaultExcluded,
    /// Quarantined: never counts.
    Quarantined,
}

/// How `r` counts, with faults of `exclude_from` severity or above excluding.
pub fn classify(r: &CheckedReading, exclude_from: Severity) -> Use {
    if r.enriched.reading.quality_tier == QualityTier::Quarantine {
        Use::Quarantined
    } else if r
        .faults
        .iter()
        .any(|f| severity(&f.severity) >= exclude_from)
    {
        Use::FaultExcluded
    } else {
        Use::Used
    }
}

fn severity(s: &str) -> Severity {
    match s {
        "CRITICAL" => Severity::Critical,
        "WARNING" => Severity::Warning,
        _ => Severity::Info,
    }
}

/// A turbine's state during a reading's interval, after IEC 61400-26-1's
/// time categories (see `docs/aggregates.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// In service (producing), or ready with the wind outside its operating
    /// range (below cut-in or above cut-out).
    Available,
    /// A stopping fault is open, or the wind is in range and nothing is produced.
    Unavailable,
    /// No power value: "information unavailable", left out of the ratio.
    Unknown,
}

/// The availability of turbine reading `r`; faults of `stopping` severity
/// or above stop the turbine.
pub fn availability(r: &CheckedReading, stopping: Severity) -> Availability {
    let s = &r.enriched.reading;
    let Some(power) = s.power_kw else {
        return Availability::Unknown;
    };
    if r.faults.iter().any(|f| severity(&f.severity) >= stopping) {
        return Availability::Unavailable;
    }
    if power > 0.0 {
        return Availability::Available;
    }
    let e = &r.enriched;
    match (s.wind_speed_ms, e.cut_in_wind_speed_ms) {
        (Some(w), Some(cut_in)) if w < cut_in => Availability::Available,
        (Some(w), _) if e.cut_out_wind_speed_ms.is_some_and(|c| w >= c) => Availability::Available,
        (Some(_), _) => Availability::Unavailable,
        // Wind unknown and nothing produced: no way to tell standby from a stop.
        (None, _) => Availability::Unknown,
    }
}

/// Settings the accumulation depends on.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Faults at or above this severity exclude a reading.
    pub exclude_from: Severity,
    /// Faults at or above this severity make a turbine unavailable.
    pub stopping: Severity,
}

/// Everything a window remembers: its counts and running statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Acc {
    /// Readings received (distinct event times).
    #[serde(default)]
    pub readings: u64,
    /// Used.
    #[serde(default)]
    pub used: u64,
    /// Excluded for a fault.
    #[serde(default)]
    pub fault_excluded: u64,
    /// Quarantined.
    #[serde(default)]
    pub quarantined: u64,
    /// Arrived after the window's first emission.
    #[serde(default)]
    pub late: u64,
    /// Same event time as one already counted.
    #[serde(default)]
    pub duplicate: u64,
    /// Event-time offsets from the window start already counted (daily
    /// windows only: a reading's other windows lie inside its day).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<u32>,
    /// Largest reading interval seen (ms).
    #[serde(default)]
    pub interval_ms: Option<i64>,
    /// Site of the latest reading.
    #[serde(default)]
    pub site_id: Option<String>,
    /// Asset kind.
    #[serde(default)]
    pub kind: Option<AssetKind>,
    /// Site zone of the latest reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_zone: Option<String>,
    /// Quality scores of the readings used.
    #[serde(default)]
    pub quality: Stat,
    /// Earliest and latest event time used.
    #[serde(default)]
    pub first: Option<i64>,
    /// See `first`.
    #[serde(default)]
    pub last: Option<i64>,
    /// Per-metric statistics, in [`METRICS`] order.
    #[serde(default)]
    pub stats: [Stat; 6],
    /// Σ power × interval (kWh) and how many readings gave it.
    #[serde(default)]
    pub energy: f64,
    /// See `energy`.
    #[serde(default)]
    pub energy_n: u64,
    /// Energy register at the earliest and latest reading used (time, kWh).
    #[serde(default)]
    pub reg_first: Option<(i64, f64)>,
    /// See `reg_first`.
    #[serde(default)]
    pub reg_last: Option<(i64, f64)>,
    /// Σ expected power × interval, and Σ power × interval over the same readings.
    #[serde(default)]
    pub expected: f64,
    /// See `expected`.
    #[serde(default)]
    pub expected_n: u64,
    /// See `expected`.
    #[serde(default)]
    pub energy_with_expected: f64,
    /// Largest rated power seen.
    #[serde(default)]
    pub rated: Option<f64>,
    /// Hours available / unavailable.
    #[serde(default)]
    pub available_h: f64,
    /// See `available_h`.
    #[serde(default)]
    pub unavailable_h: f64,
    /// Readings that had an availability.
    #[serde(default)]
    pub avail_n: u64,
}

/// The metrics with statistics, as named in the aggregate's fields.
pub const METRICS: [&str; 6] = [
    "power_kw",
    "wind_speed_ms",
    "ambient_temperature_c",
    "gearbox_temperature_c",
    "vibration_ms2",
    "voltage_v",
];

fn values(r: &CheckedReading) -> [Option<f64>; 6] {
    let s = &r.enriched.reading;
    [
        s.power_kw,
        s.wind_speed_ms,
        s.ambient_temperature_c,
        s.gearbox_temperature_c,
        s.vibration_ms2,
        s.voltage_v,
    ]
}

fn earlier(a: Option<(i64, f64)>, t: i64) -> bool {
    a.is_none_or(|(at, _)| t < at)
}

impl Acc {
    /// Whether the daily window already counted a reading at `offset` ms
    /// from its start; records it if not.
    pub fn first_time(&mut self, offset: u32) -> bool {
        match self.seen.binary_search(&offset) {
            Ok(_) => false,
            Err(i) => {
                self.seen.insert(i, offset);
                true
            }
        }
    }

    /// Takes in reading `r`, counted as `how`.
    pub fn add(&mut self, r: &CheckedReading, how: Use, rules: &Rules) {
        let s = &r.enriched.reading;
        self.readings += 1;
        if s.site_id.is_some() {
            self.site_id.clone_from(&s.site_id);
        }
        self.kind = Some(s.asset_kind);
        if r.enriched.site_time_zone.is_some() {
            self.site_zone.clone_from(&r.enriched.site_time_zone);
        }
        if let Some(i) = s.interval_ms.filter(|i| *i > 0) {
            self.interval_ms = Some(self.interval_ms.map_or(i, |m| m.max(i)));
        }
        match how {
            Use::Quarantined => {
                self.quarantined += 1;
                return;
            }
            Use::FaultExcluded => self.fault_excluded += 1,
            Use::Used => self.used += 1,
        }
        let hours = s.interval_ms.filter(|i| *i > 0).map(|i| i as f64 / HOUR_MS);
        if s.asset_kind == AssetKind::Turbine {
            if let Some(h) = hours {
                match availability(r, rules.stopping) {
                    Availability::Available => {
                        self.available_h += h;
                        self.avail_n += 1;
                    }
                    Availability::Unavailable => {
                        self.unavailable_h += h;
                        self.avail_n += 1;
                    }
                    Availability::Unknown => {}
                }
            }
        }
        if how != Use::Used {
            return;
        }
        self.quality.add(f64::from(s.quality_score));
        let t = s.event_time;
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
        for (stat, v) in self.stats.iter_mut().zip(values(r)) {
            if let Some(v) = v {
                stat.add(v);
            }
        }
        if let (Some(p), Some(h)) = (s.power_kw, hours) {
            self.energy += p * h;
            self.energy_n += 1;
            if let Some(x) = r.enriched.expected_power_kw {
                self.expected += x * h;
                self.energy_with_expected += p * h;
                self.expected_n += 1;
            }
        }
        if let Some(reg) = s.energy_kwh.filter(|v| v.is_finite()) {
            if earlier(self.reg_first, t) {
                self.reg_first = Some((t, reg));
            }
            if self.reg_last.is_none_or(|(at, _)| t > at) {
                self.reg_last = Some((t, reg));
            }
        }
        if let Some(rated) = r.enriched.rated_power_kw {
            self.rated = Some(self.rated.map_or(rated, |m| m.max(rated)));
        }
    }
}

/// The identity of a window's aggregate.
pub fn aggregate_id(asset_id: &str, w: &Window) -> String {
    format!("{asset_id}:{}:{}", w.grain, w.start)
}

/// The aggregate record of `acc` for `asset_id` over `w`, as revision `revision`.
pub fn aggregate(asset_id: &str, w: &Window, acc: &Acc, revision: i32) -> AssetAggregate {
    let aggregate_id = aggregate_id(asset_id, w);
    let hours = w.hours();
    let expected = acc
        .interval_ms
        .map(|i| (w.end - w.start) / i)
        .filter(|n| *n > 0);
    let turbine = acc.kind == Some(AssetKind::Turbine);
    let energy = (acc.energy_n > 0).then_some(acc.energy);
    let st = |i: usize| &acc.stats[i];
    let avail_total = acc.available_h + acc.unavailable_h;
    AssetAggregate {
        event_id: format!("{aggregate_id}:{revision}"),
        aggregate_id,
        asset_id: asset_id.to_string(),
        asset_kind: acc.kind.unwrap_or(AssetKind::Meter),
        site_id: acc.site_id.clone(),
        grain: w.grain.as_str().to_string(),
        window_start: w.start,
        window_end: w.end,
        time_zone: zone_name(w.zone),
        local_date: w.local_date().to_string(),
        site_time_zone: acc.site_zone.clone(),
        revision,
        readings: count(acc.readings),
        readings_used: count(acc.used),
        readings_fault_excluded: count(acc.fault_excluded),
        readings_quarantined: count(acc.quarantined),
        readings_late: count(acc.late),
        readings_duplicate: count(acc.duplicate),
        gap: None,
        readings_expected: expected,
        coverage: expected.map(|n| acc.readings as f64 / n as f64),
        interval_ms: acc.interval_ms,
        quality_score: acc.quality.mean(),
        first_event_time: acc.first,
        last_event_time: acc.last,
        power_kw_count: count(st(0).count),
        power_kw_mean: st(0).mean(),
        power_kw_min: st(0).min(),
        power_kw_max: st(0).max(),
        power_kw_stddev: st(0).stddev_samp(),
        wind_speed_ms_count: count(st(1).count),
        wind_speed_ms_mean: st(1).mean(),
        wind_speed_ms_min: st(1).min(),
        wind_speed_ms_max: st(1).max(),
        wind_speed_ms_stddev: st(1).stddev_samp(),
        ambient_temperature_c_count: count(st(2).count),
        ambient_temperature_c_mean: st(2).mean(),
        ambient_temperature_c_min: st(2).min(),
        ambient_temperature_c_max: st(2).max(),
        ambient_temperature_c_stddev: st(2).stddev_samp(),
        gearbox_temperature_c_count: count(st(3).count),
        gearbox_temperature_c_mean: st(3).mean(),
        gearbox_temperature_c_min: st(3).min(),
        gearbox_temperature_c_max: st(3).max(),
        gearbox_temperature_c_stddev: st(3).stddev_samp(),
        vibration_ms2_count: count(st(4).count),
        vibration_ms2_mean: st(4).mean(),
        vibration_ms2_min: st(4).min(),
        vibration_ms2_max: st(4).max(),
        vibration_ms2_stddev: st(4).stddev_samp(),
        voltage_v_count: count(st(5).count),
        voltage_v_mean: st(5).mean(),
        voltage_v_min: st(5).min(),
        voltage_v_max: st(5).max(),
        voltage_v_stddev: st(5).stddev_samp(),
        energy_kwh: energy,
        energy_register_kwh: match (acc.reg_first, acc.reg_last) {
            (Some((a, first)), Some((b, last))) if b > a && last >= first => Some(last - first),
            _ => None,
        },
        expected_energy_kwh: (turbine && acc.expected_n > 0).then_some(acc.expected),
        performance_ratio: (turbine && acc.expected > 0.0)
            .then(|| acc.energy_with_expected / acc.expected),
        rated_power_kw: acc.rated.filter(|_| turbine),
        capacity_factor: match (turbine, energy, acc.rated) {
            (true, Some(e), Some(r)) if r > 0.0 => Some(e / (r * hours)),
            _ => None,
        },
        available_hours: (turbine && acc.avail_n > 0).then_some(acc.available_h),
        unavailable_hours: (turbine && acc.avail_n > 0).then_some(acc.unavailable_h),
        availability: (turbine && avail_total > 0.0).then(|| acc.available_h / avail_total),
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The zone's IANA name.
pub fn zone_name(z: Tz) -> String {
    z.name().to_string()
}
