//! What one member (an asset's hour, or a site's hour) adds to a roll-up,
//! as sums that combine in any order: means travel as (sum, count) and
//! ratios as numerator and denominator, so a site's day is exactly the sum
//! of its hours and the fleet's hour exactly the sum of its sites.

use gale_model::{AssetAggregate, AssetKind, SiteAggregate};
use serde::{Deserialize, Serialize};

/// A member's contribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Asset-hours.
    pub assets: i64,
    /// Turbine asset-hours.
    pub turbines: i64,
    /// Meter asset-hours.
    pub meters: i64,
    /// Readings received.
    pub readings: i64,
    /// Used.
    pub used: i64,
    /// Excluded for a fault.
    pub fault_excluded: i64,
    /// Quarantined.
    pub quarantined: i64,
    /// Readings expected (members with a known interval).
    pub expected_readings: i64,
    /// Readings received by those members.
    pub readings_with_expected: f64,
    /// Σ quality score × readings used.
    pub quality_sum: f64,
    /// Readings used with a quality score.
    pub quality_n: i64,
    /// Turbines' energy.
    pub production: Option<f64>,
    /// Meters' energy.
    pub consumption: Option<f64>,
    /// Turbines' expected energy.
    pub expected: Option<f64>,
    /// Turbines' energy over the readings with an expected power.
    pub production_with_expected: f64,
    /// Σ rated power × hours.
    pub rated_hours: f64,
    /// Turbine hours available.
    pub available_h: Option<f64>,
    /// Turbine hours unavailable.
    pub unavailable_h: Option<f64>,
    /// Σ outdoor temperature mean × count.
    pub temp_sum: f64,
    /// Readings with an outdoor temperature.
    pub temp_n: i64,
    /// Asset-hours that were gap fills.
    pub gap_hours: i64,
    /// Of which meters'.
    pub meter_gap_hours: i64,
    /// Meters' readings expected (meters with a known interval).
    #[serde(default)]
    pub meter_expected: i64,
    /// Readings received by those meters.
    #[serde(default)]
    pub meter_readings: f64,
}

fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    }
}

impl Part {
    /// `self + other`.
    pub fn plus(&self, o: &Part) -> Part {
        Part {
            assets: self.assets + o.assets,
            turbines: self.turbines + o.turbines,
            meters: self.meters + o.meters,
            readings: self.readings + o.readings,
            used: self.used + o.used,
            fault_excluded: self.fault_excluded + o.fault_excluded,
            quarantined: self.quarantined + o.quarantined,
            expected_readings: self.expected_readings + o.expected_readings,
            readings_with_expected: self.readings_with_expected + o.readings_with_expected,
            quality_sum: self.quality_sum + o.quality_sum,
            quality_n: self.quality_n + o.quality_n,
            production: add(self.production, o.production),
            consumption: add(self.consumption, o.consumption),
            expected: add(self.expected, o.expected),
            production_with_expected: self.production_with_expected + o.production_with_expected,
            rated_hours: self.rated_hours + o.rated_hours,
            available_h: add(self.available_h, o.available_h),
            unavailable_h: add(self.unavailable_h, o.unavailable_h),
            temp_sum: self.temp_sum + o.temp_sum,
            temp_n: self.temp_n + o.temp_n,
            gap_hours: self.gap_hours + o.gap_hours,
            meter_gap_hours: self.meter_gap_hours + o.meter_gap_hours,
            meter_expected: self.meter_expected + o.meter_expected,
            meter_readings: self.meter_readings + o.meter_readings,
        }
    }

    /// The sum of `parts`.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Part>) -> Part {
        parts
            .into_iter()
            .fold(Part::default(), |acc, p| acc.plus(p))
    }

    /// Coverage: readings over readings expected.
    pub fn coverage(&self) -> Option<f64> {
        (self.expected_readings > 0)
            .then(|| self.readings_with_expected / self.expected_readings as f64)
    }

    /// Meters' coverage.
    pub fn meter_coverage(&self) -> Option<f64> {
        (self.meter_expected > 0).then(|| self.meter_readings / self.meter_expected as f64)
    }

    /// Mean outdoor temperature.
    pub fn temperature(&self) -> Option<f64> {
        (self.temp_n > 0).then(|| self.temp_sum / self.temp_n as f64)
    }
}

impl From<&AssetAggregate> for Part {
    fn from(a: &AssetAggregate) -> Part {
        let turbine = a.asset_kind == AssetKind::Turbine;
        let hours = (a.window_end - a.window_start) as f64 / 3_600_000.0;
        let gap = i64::from(a.gap.is_some());
        Part {
            assets: 1,
            turbines: i64::from(turbine),
            meters: i64::from(!turbine),
            readings: a.readings,
            used: a.readings_used,
            fault_excluded: a.readings_fault_excluded,
            quarantined: a.readings_quarantined,
            expected_readings: a.readings_expected.unwrap_or(0),
            readings_with_expected: if a.readings_expected.is_some() {
                a.readings as f64
            } else {
                0.0
            },
            quality_sum: a.quality_score.map_or(0.0, |q| q * a.readings_used as f64),
            quality_n: if a.quality_score.is_some() {
                a.readings_used
            } else {
                0
            },
            production: a.energy_kwh.filter(|_| turbine),
            consumption: a.energy_kwh.filter(|_| !turbine),
            expected: a.expected_energy_kwh,
            production_with_expected: match (a.performance_ratio, a.expected_energy_kwh) {
                (Some(r), Some(e)) => r * e,
                _ => 0.0,
            },
            rated_hours: a.rated_power_kw.map_or(0.0, |r| r * hours),
            available_h: a.available_hours,
            unavailable_h: a.unavailable_hours,
            temp_sum: a
                .ambient_temperature_c_mean
                .map_or(0.0, |m| m * a.ambient_temperature_c_count as f64),
            temp_n: a.ambient_temperature_c_count,
            gap_hours: gap,
            meter_gap_hours: gap * i64::from(!turbine),
            meter_expected: a.readings_expected.filter(|_| !turbine).unwrap_or(0),
            meter_readings: match a.readings_expected {
                Some(_) if !turbine => a.readings as f64,
                _ => 0.0,
            },
        }
    }
}

impl From<&SiteAggregate> for Part {
    fn from(s: &SiteAggregate) -> Part {
        let hours = (s.window_end - s.window_start) as f64 / 3_600_000.0;
        Part {
            assets: s.assets,
            turbines: s.turbines,
            meters: s.meters,
            readings: s.readings,
            used: s.readings_used,
            fault_excluded: s.readings_fault_excluded,
            quarantined: s.readings_quarantined,
            expected_readings: s.readings_expected.unwrap_or(0),
            readings_with_expected: match (s.coverage, s.readings_expected) {
                (Some(c), Some(e)) => c * e as f64,
                _ => 0.0,
            },
            quality_sum: s.quality_score.map_or(0.0, |q| q * s.readings_used as f64),
            quality_n: if s.quality_score.is_some() {
                s.readings_used
            } else {
                0
            },
            production: s.production_kwh,
            consumption: s.consumption_kwh,
            expected: s.expected_energy_kwh,
            production_with_expected: match (s.performance_ratio, s.expected_energy_kwh) {
                (Some(r), Some(e)) => r * e,
                _ => 0.0,
            },
            rated_hours: s.rated_power_kw.map_or(0.0, |r| r * hours),
            available_h: s.available_hours,
            unavailable_h: s.unavailable_hours,
            temp_sum: s
                .ambient_temperature_c_mean
                .map_or(0.0, |m| m * s.ambient_temperature_c_count as f64),
            temp_n: s.ambient_temperature_c_count,
            gap_hours: s.gap_hours,
            meter_gap_hours: s.meter_gap_hours,
            meter_expected: s.meter_readings_expected.unwrap_or(0),
            meter_readings: match (s.meter_coverage, s.meter_readings_expected) {
                (Some(c), Some(e)) => c * e as f64,
                _ => 0.0,
            },
        }
    }
}

/// Where and when a roll-up window is.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    /// `site` or `fleet`.
    pub scope: &'a str,
    /// The site, for `site`.
    pub site_id: Option<&'a str>,
    /// `1h` or `1d`.
    pub grain: &'a str,
    /// Start (ms).
    pub start: i64,
    /// End (ms).
    pub end: i64,
    /// Zone name.
    pub time_zone: &'a str,
    /// Local date.
    pub local_date: String,
    /// Hourly windows combined.
    pub hours: i64,
}

/// Identity of a roll-up window.
pub fn aggregate_id(s: &Scope<'_>) -> String {
    match s.site_id {
        Some(site) => format!("site:{site}:{}:{}", s.grain, s.start),
        None => format!("fleet:{}:{}", s.grain, s.start),
    }
}

/// The record of `part` over `s`, as revision `revision`.
pub fn record(s: &Scope<'_>, p: &Part, revision: i32) -> SiteAggregate {
    let id = aggregate_id(s);
    let window_hours = (s.end - s.start) as f64 / 3_600_000.0;
    let avail_total = p.available_h.unwrap_or(0.0) + p.unavailable_h.unwrap_or(0.0);
    SiteAggregate {
        event_id: format!("{id}:{revision}"),
        aggregate_id: id,
        scope: s.scope.to_string(),
        site_id: s.site_id.map(str::to_string),
        grain: s.grain.to_string(),
        window_start: s.start,
        window_end: s.end,
        time_zone: s.time_zone.to_string(),
        local_date: s.local_date.clone(),
        revision,
        provisional: false,
        assets: p.assets,
        turbines: p.turbines,
        meters: p.meters,
        hours: s.hours,
        readings: p.readings,
        readings_used: p.used,
        readings_fault_excluded: p.fault_excluded,
        readings_quarantined: p.quarantined,
        readings_expected: (p.expected_readings > 0).then_some(p.expected_readings),
        coverage: p.coverage(),
        quality_score: (p.quality_n > 0).then(|| p.quality_sum / p.quality_n as f64),
        production_kwh: p.production,
        consumption_kwh: p.consumption,
        expected_energy_kwh: p.expected,
        performance_ratio: p
            .expected
            .filter(|e| *e > 0.0)
            .map(|e| p.production_with_expected / e),
        rated_power_kw: (p.rated_hours > 0.0).then(|| p.rated_hours / window_hours),
        capacity_factor: match p.production {
            Some(e) if p.rated_hours > 0.0 => Some(e / p.rated_hours),
            _ => None,
        },
        available_hours: p.available_h,
        unavailable_hours: p.unavailable_h,
        availability: (avail_total > 0.0).then(|| p.available_h.unwrap_or(0.0) / avail_total),
        ambient_temperature_c_count: p.temp_n,
        ambient_temperature_c_mean: p.temperature(),
        gap_hours: p.gap_hours,
        meter_gap_hours: p.meter_gap_hours,
        meter_readings_expected: (p.meter_expected > 0).then_some(p.meter_expected),
        meter_coverage: p.meter_coverage(),
    }
}
