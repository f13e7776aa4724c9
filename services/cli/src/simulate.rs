//! Simulated fleets: wind turbines with the sensor behaviour of
//! `windmill-iot-fault-simulation.md`, and smart meters with the unit
//! variety, gaps, stuck and zero values of real head-end exports.
//!
//! Faults come in one of three [`FaultMode`]s. `episodes` (the default)
//! gives a few assets one fault episode each, with a start and an end in
//! event time, during which every reading meets the fault's condition and
//! outside of which the asset's values are clearly normal: detect-faults
//! must then open and close exactly the faults of the [`FaultPlan`], which
//! is what the end-to-end fault test compares (see `docs/simulator.md`).
//! `random` keeps the spec's per-reading fault rates (a share of readings
//! spike, some meters stay stuck), which exercise validate but make faults
//! flap; `none` injects no fault. The data-quality scenarios (unit
//! variety, spikes, future timestamps, unknown assets, negative power)
//! happen in every mode, but never on an asset within an hour of its
//! episode.
//!
//! Everything here is a function of the seed and the ticks (called in
//! order, with their event times), so two runs with the same seed and
//! schedule produce the same readings; the schedule and the sending side
//! (HTTP or Kafka) are in `send.rs`.

use chrono::{DateTime, SecondsFormat, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Fault and data-quality scenarios a reading can carry (its `sim_scenario`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Turbine gearbox above 80 °C (random: 5 % of readings).
    GearboxOverheat,
    /// Turbine generator above 75 °C (random: 3 %).
    GeneratorOverheat,
    /// Vibration above 2 m/s² (random: 8 %).
    HighVibration,
    /// Oil pressure below 35 bar (random: 6 %).
    LowOilPressure,
    /// Tower lean above 1.5° (random: 2 %).
    TowerLean,
    /// Turbine at about half its power curve's output in a steady wind
    /// (episodes only).
    Underperformance,
    /// A tower-lean sensor glitch far outside the physical range (0.5 %): quarantined.
    LeanSensorGlitch,
    /// Meter above the 20 kW residential limit (random: 1 %): quarantined.
    MeterOverload,
    /// Meter repeating one value (episodes only; random: whole runs).
    StuckValue,
    /// Meter reporting 0 kW on an occupied property (episodes only).
    ZeroValue,
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
            Scenario::Underperformance => "UNDERPERFORMANCE",
            Scenario::LeanSensorGlitch => "LEAN_SENSOR_GLITCH",
            Scenario::MeterOverload => "METER_OVERLOAD",
            Scenario::StuckValue => "STUCK_VALUE",
            Scenario::ZeroValue => "ZERO_VALUE",
            Scenario::NegativePower => "NEGATIVE_POWER",
            Scenario::Spike => "SPIKE",
            Scenario::FutureTimestamp => "FUTURE_TIMESTAMP",
            Scenario::UnknownAsset => "UNKNOWN_ASSET",
            Scenario::LowPowerOutput => "LOW_POWER_OUTPUT",
        }
    }
}

/// How faults are injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FaultMode {
    /// One fault episode on each of a few assets, with a known start and
    /// end (a `FaultPlan`); no random fault values.
    #[default]
    Episodes,
    /// Fault values on random readings at the spec's rates, and meters
    /// stuck for the whole run.
    Random,
    /// No faults: only the data-quality scenarios.
    None,
}

/// The defaults of `services/detect-faults/rules/default.toml` that the
/// expected open and close times of a [`FaultPlan`] are computed from. A
/// test running detect-faults with other rules must recompute them.
pub mod rule_defaults {
    /// One minute, ms.
    pub const MINUTE_MS: i64 = 60_000;
    /// One hour, ms.
    pub const HOUR_MS: i64 = 60 * MINUTE_MS;
    /// `close_after` of the turbine limits (gearbox, generator, vibration,
    /// oil pressure, tower lean).
    pub const LIMIT_CLOSE_AFTER_MS: i64 = 10 * MINUTE_MS;
    /// Gearbox: opens above, clears below.
    pub const GEARBOX_C: (f64, f64) = (80.0, 78.0);
    /// Generator: opens above, clears below.
    pub const GENERATOR_C: (f64, f64) = (75.0, 73.0);
    /// Vibration: opens above, clears below.
    pub const VIBRATION_MS2: (f64, f64) = (2.0, 1.8);
    /// Oil pressure: opens *below*, clears *above*.
    pub const OIL_BAR: (f64, f64) = (35.0, 37.0);
    /// Tower lean: opens above, clears below.
    pub const LEAN_DEG: (f64, f64) = (1.5, 1.4);
    /// UNDERPERFORMANCE: power / expected below this, for `open_after`.
    pub const UNDERPERFORMANCE_RATIO: (f64, f64) = (0.8, 0.9);
    /// UNDERPERFORMANCE `open_after`.
    pub const UNDERPERFORMANCE_OPEN_AFTER_MS: i64 = 30 * MINUTE_MS;
    /// UNDERPERFORMANCE `close_after`.
    pub const UNDERPERFORMANCE_CLOSE_AFTER_MS: i64 = 30 * MINUTE_MS;
    /// UNDERPERFORMANCE judges only where the curve expects at least this.
    pub const UNDERPERFORMANCE_MIN_EXPECTED_KW: f64 = 100.0;
    /// STUCK_VALUE `open_after` (the same value for this long).
    pub const STUCK_OPEN_AFTER_MS: i64 = 24 * HOUR_MS;
    /// ZERO_VALUE `open_after` (0 kW for this long).
    pub const ZERO_OPEN_AFTER_MS: i64 = 48 * HOUR_MS;
    /// ZERO_VALUE `close_after`.
    pub const ZERO_CLOSE_AFTER_MS: i64 = HOUR_MS;
    /// OVERLOAD: above this many kW...
    pub const OVERLOAD_KW: f64 = 20.0;
    /// ...for this many readings in a row.
    pub const OVERLOAD_OPEN_AFTER_READINGS: u64 = 6;
    /// OVERLOAD closes after this many readings below 95 % of the limit.
    pub const OVERLOAD_CLOSE_AFTER_READINGS: u64 = 3;
    /// MISSING_SHORT `after`, from when the next reading was due.
    pub const MISSING_SHORT_AFTER_MS: i64 = 4 * HOUR_MS;
    /// MISSING_EXTENDED `after`, from when the next reading was due.
    pub const MISSING_EXTENDED_AFTER_MS: i64 = 24 * HOUR_MS;
}

use rule_defaults::{HOUR_MS, MINUTE_MS};

/// Turbine or meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssetKind {
    /// A wind turbine.
    Turbine,
    /// A smart meter.
    Meter,
}

impl AssetKind {
    /// `turbine` or `meter`, as the registry and the fault events spell it.
    pub fn name(self) -> &'static str {
        match self {
            AssetKind::Turbine => "turbine",
            AssetKind::Meter => "meter",
        }
    }
}

/// What happens to an asset during a fault episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EpisodeKind {
    /// Gearbox at 84-95 °C every reading.
    GearboxOverheat,
    /// Generator at 79-92 °C.
    GeneratorOverheat,
    /// Vibration at 2.5-5 m/s².
    HighVibration,
    /// Oil pressure at 20-31 bar.
    LowOilPressure,
    /// Tower lean at 1.8-3°.
    TowerLean,
    /// Power at 45-55 % of the power curve, the wind held at 8-11 m/s
    /// from the start until the fault is expected to close.
    Underperformance,
    /// No turbine reading at all: MISSING_SHORT, then MISSING_EXTENDED.
    TurbineSilent,
    /// The meter repeats one non-zero value (its register stands still).
    StuckValue,
    /// The meter reports 0 kW (never given to a vacant meter).
    ZeroValue,
    /// The meter reports 22-30 kW.
    Overload,
    /// No meter reading at all: MISSING_SHORT, then MISSING_EXTENDED.
    MeterSilent,
}

impl EpisodeKind {
    /// Turbine episodes, in the order a small fleet receives them.
    pub const TURBINE: [EpisodeKind; 7] = [
        EpisodeKind::GearboxOverheat,
        EpisodeKind::GeneratorOverheat,
        EpisodeKind::HighVibration,
        EpisodeKind::LowOilPressure,
        EpisodeKind::TowerLean,
        EpisodeKind::Underperformance,
        EpisodeKind::TurbineSilent,
    ];
    /// Meter episodes, in the order a small fleet receives them.
    pub const METER: [EpisodeKind; 4] = [
        EpisodeKind::Overload,
        EpisodeKind::StuckValue,
        EpisodeKind::ZeroValue,
        EpisodeKind::MeterSilent,
    ];

    /// The fault code the episode produces (`SILENT` for the two gaps).
    pub fn name(self) -> &'static str {
        match self {
            EpisodeKind::GearboxOverheat => "GEARBOX_OVERHEAT",
            EpisodeKind::GeneratorOverheat => "GENERATOR_OVERHEAT",
            EpisodeKind::HighVibration => "HIGH_VIBRATION",
            EpisodeKind::LowOilPressure => "LOW_OIL_PRESSURE",
            EpisodeKind::TowerLean => "TOWER_LEAN",
            EpisodeKind::Underperformance => "UNDERPERFORMANCE",
            EpisodeKind::StuckValue => "STUCK_VALUE",
            EpisodeKind::ZeroValue => "ZERO_VALUE",
            EpisodeKind::Overload => "OVERLOAD",
            EpisodeKind::TurbineSilent | EpisodeKind::MeterSilent => "SILENT",
        }
    }

    /// The kind of asset it happens to.
    pub fn asset_kind(self) -> AssetKind {
        if EpisodeKind::TURBINE.contains(&self) {
            AssetKind::Turbine
        } else {
            AssetKind::Meter
        }
    }

    /// True for the episodes without readings.
    pub fn is_silent(self) -> bool {
        matches!(self, EpisodeKind::TurbineSilent | EpisodeKind::MeterSilent)
    }

    /// The `sim_scenario` of the episode's readings.
    fn scenario(self) -> Option<Scenario> {
        Some(match self {
            EpisodeKind::GearboxOverheat => Scenario::GearboxOverheat,
            EpisodeKind::GeneratorOverheat => Scenario::GeneratorOverheat,
            EpisodeKind::HighVibration => Scenario::HighVibration,
            EpisodeKind::LowOilPressure => Scenario::LowOilPressure,
            EpisodeKind::TowerLean => Scenario::TowerLean,
            EpisodeKind::Underperformance => Scenario::Underperformance,
            EpisodeKind::StuckValue => Scenario::StuckValue,
            EpisodeKind::ZeroValue => Scenario::ZeroValue,
            EpisodeKind::Overload => Scenario::MeterOverload,
            EpisodeKind::TurbineSilent | EpisodeKind::MeterSilent => return None,
        })
    }

    /// Readings of the episode needed for its fault to open (for SILENT,
    /// silent ticks needed for MISSING_EXTENDED to open before the next
    /// reading), for ticks `interval_ms` apart.
    fn min_ticks(self, interval_ms: i64) -> u64 {
        use rule_defaults as r;
        match self {
            EpisodeKind::Underperformance => {
                ticks_for(r::UNDERPERFORMANCE_OPEN_AFTER_MS, interval_ms) + 1
            }
            EpisodeKind::StuckValue => ticks_for(r::STUCK_OPEN_AFTER_MS, interval_ms) + 1,
            EpisodeKind::ZeroValue => ticks_for(r::ZERO_OPEN_AFTER_MS, interval_ms) + 1,
            EpisodeKind::Overload => r::OVERLOAD_OPEN_AFTER_READINGS,
            // The first reading after the silence must come strictly after
            // MISSING_EXTENDED opened: n × interval > 24 h.
            EpisodeKind::TurbineSilent | EpisodeKind::MeterSilent => {
                (r::MISSING_EXTENDED_AFTER_MS / interval_ms.max(1)) as u64 + 1
            }
            _ => 2,
        }
    }

    /// Ticks from the first tick after the episode to the reading its
    /// fault is expected to close at.
    fn close_ticks(self, interval_ms: i64) -> u64 {
        use rule_defaults as r;
        match self {
            EpisodeKind::Underperformance => {
                ticks_for(r::UNDERPERFORMANCE_CLOSE_AFTER_MS, interval_ms)
            }
            EpisodeKind::ZeroValue => ticks_for(r::ZERO_CLOSE_AFTER_MS, interval_ms),
            EpisodeKind::Overload => r::OVERLOAD_CLOSE_AFTER_READINGS - 1,
            // Any other value closes a stuck fault; a reading ends a silence.
            EpisodeKind::StuckValue | EpisodeKind::TurbineSilent | EpisodeKind::MeterSilent => 0,
            _ => ticks_for(r::LIMIT_CLOSE_AFTER_MS, interval_ms),
        }
    }

    /// Readings from the episode's first to the one its fault opens at.
    fn open_ticks(self, interval_ms: i64) -> u64 {
        use rule_defaults as r;
        match self {
            EpisodeKind::Underperformance => {
                ticks_for(r::UNDERPERFORMANCE_OPEN_AFTER_MS, interval_ms)
            }
            EpisodeKind::StuckValue => ticks_for(r::STUCK_OPEN_AFTER_MS, interval_ms),
            EpisodeKind::ZeroValue => ticks_for(r::ZERO_OPEN_AFTER_MS, interval_ms),
            EpisodeKind::Overload => r::OVERLOAD_OPEN_AFTER_READINGS - 1,
            _ => 0,
        }
    }
}

/// Ticks `interval_ms` apart needed to cover `span_ms`: the first reading
/// at or after `span_ms` from a reading is this many ticks later.
fn ticks_for(span_ms: i64, interval_ms: i64) -> u64 {
    let interval_ms = interval_ms.max(1);
    (span_ms.max(0) + interval_ms - 1).div_euclid(interval_ms) as u64
}

/// How long episodes last, before they are shortened to fit the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeDurations {
    /// Turbine limit faults (gearbox, generator, vibration, oil, lean), ms.
    pub limit_ms: i64,
    /// UNDERPERFORMANCE, ms (at least its 30 min `open_after`).
    pub underperformance_ms: i64,
    /// SILENT, ms (more than 24 h gives both gap faults).
    pub silence_ms: i64,
    /// STUCK_VALUE, ms (at least its 24 h `open_after`).
    pub stuck_ms: i64,
    /// ZERO_VALUE, ms (at least its 48 h `open_after`).
    pub zero_ms: i64,
    /// OVERLOAD, in readings (at least its 6).
    pub overload_readings: u64,
}

impl Default for EpisodeDurations {
    fn default() -> Self {
        EpisodeDurations {
            limit_ms: 20 * MINUTE_MS,
            underperformance_ms: 2 * HOUR_MS,
            silence_ms: 26 * HOUR_MS,
            stuck_ms: 30 * HOUR_MS,
            zero_ms: 50 * HOUR_MS,
            overload_readings: 8,
        }
    }
}

impl EpisodeDurations {
    /// Ticks `kind` asks for, at `interval_ms` (never fewer than it needs).
    fn ticks(&self, kind: EpisodeKind, interval_ms: i64) -> u64 {
        let wanted = match kind {
            EpisodeKind::Overload => self.overload_readings,
            EpisodeKind::Underperformance => ticks_for(self.underperformance_ms, interval_ms),
            EpisodeKind::TurbineSilent | EpisodeKind::MeterSilent => {
                ticks_for(self.silence_ms, interval_ms)
            }
            EpisodeKind::StuckValue => ticks_for(self.stuck_ms, interval_ms),
            EpisodeKind::ZeroValue => ticks_for(self.zero_ms, interval_ms),
            _ => ticks_for(self.limit_ms, interval_ms),
        };
        wanted.max(kind.min_ticks(interval_ms))
    }
}

/// The event times of a run's ticks: tick `k` at `start_ms + k ×
/// interval_ms`, for `ticks` ticks (the run may go on longer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// Event time of tick 0, ms since the epoch.
    pub start_ms: i64,
    /// Event-time spacing of ticks, ms (at least 1).
    pub interval_ms: i64,
    /// Ticks the run is sure to complete: episodes end, and their faults
    /// close, before this.
    pub ticks: u64,
    /// The readings arrive with `interval_ms` as their declared interval
    /// (the ingest source's `interval`): detect-faults then dates a silence
    /// from when the next reading was due, and validate reads `kWh` as
    /// consumption over it. Undeclared, a silence counts from the last
    /// reading and `kWh` is taken as hourly.
    pub interval_declared: bool,
}

impl Timeline {
    /// Event time of `tick`, ms.
    pub fn at_ms(&self, tick: u64) -> i64 {
        let offset = i64::try_from(tick)
            .unwrap_or(i64::MAX)
            .saturating_mul(self.interval_ms);
        self.start_ms.saturating_add(offset)
    }
}

/// One fault episode: `asset` behaves as `kind` says for ticks
/// `first_tick..end_tick`, i.e. event times `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// What happens.
    pub kind: EpisodeKind,
    /// Index of the asset among the fleet's turbines or meters (by `kind`).
    pub asset: usize,
    /// The asset's id.
    pub asset_id: String,
    /// First tick of the episode.
    pub first_tick: u64,
    /// First tick after it.
    pub end_tick: u64,
    /// Tick of the reading its fault is expected to close at.
    pub close_tick: u64,
}

impl Episode {
    /// True while the episode lasts at `tick`.
    pub fn covers(&self, tick: u64) -> bool {
        (self.first_tick..self.end_tick).contains(&tick)
    }

    /// Event times around the episode no data-quality scenario or random
    /// gap may touch: an hour before its start (before its last reading,
    /// for a silence) to an hour after its fault closes.
    pub fn guard_ms(&self, tl: &Timeline) -> (i64, i64) {
        (
            tl.at_ms(self.first_tick.saturating_sub(1)) - HOUR_MS,
            tl.at_ms(self.close_tick) + HOUR_MS,
        )
    }

    /// The faults detect-faults is expected to raise for this episode,
    /// with the rules of [`rule_defaults`].
    pub fn expected_faults(&self, tl: &Timeline) -> Vec<ExpectedFault> {
        use rule_defaults as r;
        let interval_ms = tl.interval_ms;
        let declared_ms = if tl.interval_declared { interval_ms } else { 0 };
        let line = |code: &str, start_ms, end_ms, open, close, readings| ExpectedFault {
            asset_id: self.asset_id.clone(),
            kind: self.kind.asset_kind().name().into(),
            code: code.into(),
            episode: self.kind.name().into(),
            start_ms,
            end_ms,
            expected_open_ms: open,
            expected_close_ms: close,
            declared_interval_ms: declared_ms,
            readings,
        };
        let start_ms = tl.at_ms(self.first_tick);
        let end_ms = tl.at_ms(self.end_tick);
        if self.kind.is_silent() {
            // A silence counts from when the next reading was due.
            let due = tl.at_ms(self.first_tick - 1) + declared_ms;
            let short = due + r::MISSING_SHORT_AFTER_MS;
            let extended = due + r::MISSING_EXTENDED_AFTER_MS;
            return vec![
                line("MISSING_SHORT", short, extended, short, extended, 0),
                line("MISSING_EXTENDED", extended, end_ms, extended, end_ms, 0),
            ];
        }
        let open = tl.at_ms(self.first_tick + self.kind.open_ticks(interval_ms));
        let close = tl.at_ms(self.close_tick);
        vec![line(
            self.kind.name(),
            start_ms,
            end_ms,
            open,
            close,
            self.end_tick - self.first_tick,
        )]
    }
}

/// One line of `--faults-out`: a fault detect-faults must raise, when the
/// condition holds and when the fault should open and close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedFault {
    /// The asset.
    pub asset_id: String,
    /// `turbine` or `meter`.
    pub kind: String,
    /// The fault code, as detect-faults names it.
    pub code: String,
    /// The episode it comes from (`SILENT` for the two gap faults).
    pub episode: String,
    /// Start of the condition (inclusive), ms: the episode's first reading;
    /// for a gap fault, when its threshold is reached.
    pub start_ms: i64,
    /// End of the condition (exclusive), ms: the first reading after the
    /// episode; for MISSING_SHORT, when it escalates.
    pub end_ms: i64,
    /// Event time of the fault's OPENED event, with the default rules.
    pub expected_open_ms: i64,
    /// Event time of its CLOSED event, with the default rules.
    pub expected_close_ms: i64,
    /// The readings' declared interval the expectations assume, ms (0: none;
    /// gap faults then count from the last reading, not from when the next
    /// was due).
    pub declared_interval_ms: i64,
    /// Readings in the condition (0 for a gap).
    pub readings: u64,
}

/// Which assets get which episode, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// The ticks planned over.
    pub timeline: Timeline,
    /// The episodes, at most one per asset.
    pub episodes: Vec<Episode>,
    /// Episodes left out: the run is too short for them.
    pub skipped: Vec<EpisodeKind>,
}

impl FaultPlan {
    /// No episodes.
    pub fn empty(timeline: Timeline) -> Self {
        FaultPlan {
            timeline,
            episodes: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// The plan for `fleet` over `timeline`, deterministic in `seed`.
    ///
    /// `share` of the turbines, and of the meters that are not vacant, get
    /// one episode each, but while `share` is above 0 at least one of each
    /// kind ([`EpisodeKind::TURBINE`], [`EpisodeKind::METER`], in order)
    /// as far as the fleet has assets for them. Episodes start at random
    /// ticks, so they spread over the run, and are shortened (not below
    /// what their fault needs) or left out to end, with their fault closed,
    /// within the timeline.
    pub fn new(
        fleet: &Fleet,
        seed: u64,
        timeline: Timeline,
        share: f64,
        durations: &EpisodeDurations,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6570_6973_6f64_6573);
        let mut plan = FaultPlan::empty(timeline);
        let mut turbines: Vec<usize> = (0..fleet.turbines.len()).collect();
        let mut meters: Vec<usize> = (0..fleet.meters.len())
            .filter(|&i| !fleet.meters[i].is_vacant())
            .collect();
        turbines.shuffle(&mut rng);
        meters.shuffle(&mut rng);
        let wanted = |n: usize, kinds: usize| {
            if share <= 0.0 || n == 0 {
                0
            } else {
                ((share.min(1.0) * n as f64).ceil() as usize).max(kinds.min(n))
            }
        };
        let turbine_count = wanted(turbines.len(), EpisodeKind::TURBINE.len());
        let meter_count = wanted(meters.len(), EpisodeKind::METER.len());
        let assignments = turbines
            .iter()
            .take(turbine_count)
            .enumerate()
            .map(|(n, &i)| {
                let kind = EpisodeKind::TURBINE[n % EpisodeKind::TURBINE.len()];
                (kind, i, fleet.turbines[i].id.clone())
            })
            .chain(meters.iter().take(meter_count).enumerate().map(|(n, &i)| {
                let kind = EpisodeKind::METER[n % EpisodeKind::METER.len()];
                (kind, i, fleet.meters[i].id.clone())
            }))
            .collect::<Vec<_>>();
        for (kind, asset, asset_id) in assignments {
            let interval_ms = timeline.interval_ms;
            let tail = kind.close_ticks(interval_ms);
            // The episode needs a reading before it (tick 0 at least) and
            // its closing reading inside the timeline.
            let room = timeline.ticks.saturating_sub(1 + tail + 1);
            let length = durations.ticks(kind, interval_ms).min(room);
            if length < kind.min_ticks(interval_ms) || length == 0 {
                plan.skipped.push(kind);
                continue;
            }
            let last_first = timeline.ticks - 1 - tail - length;
            let first_tick = rng.random_range(1..=last_first);
            let end_tick = first_tick + length;
            plan.episodes.push(Episode {
                kind,
                asset,
                asset_id,
                first_tick,
                end_tick,
                close_tick: end_tick + tail,
            });
        }
        plan.episodes
            .sort_by_key(|e| (e.first_tick, e.asset_id.clone()));
        plan
    }

    /// The faults the plan's episodes must raise, by expected opening.
    pub fn expected_faults(&self) -> Vec<ExpectedFault> {
        let mut out: Vec<ExpectedFault> = self
            .episodes
            .iter()
            .flat_map(|e| e.expected_faults(&self.timeline))
            .collect();
        out.sort_by(|a, b| {
            (a.expected_open_ms, &a.asset_id, &a.code).cmp(&(
                b.expected_open_ms,
                &b.asset_id,
                &b.code,
            ))
        });
        out
    }

    /// [`FaultPlan::expected_faults`] as JSON lines (`--faults-out`).
    pub fn json_lines(&self) -> String {
        self.expected_faults()
            .iter()
            .map(|f| serde_json::to_string(f).unwrap_or_default() + "\n")
            .collect()
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
    /// A vacant property: reports 0 kW throughout, and the registry CSV
    /// says so, so ZERO_VALUE must not open for it. Never given an episode.
    pub vacant: bool,
    /// The power unit its head-end uses (`kW`, `W`, `watts`, `kWh` for
    /// consumption over the interval, or none).
    pub unit: Option<&'static str>,
}

impl Meter {
    /// Vacant by the fleet's flag, or by an id that says so.
    pub fn is_vacant(&self) -> bool {
        self.vacant || self.id.to_ascii_uppercase().contains("VACANT")
    }
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
                    vacant: (0.05..0.10).contains(&roll),
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

    /// The asset registry CSV for this fleet
    /// (`asset_id,kind,site_id,capacity_kw,latitude,longitude,vacant`).
    pub fn assets_csv(&self) -> String {
        let mut out = String::from("asset_id,kind,site_id,capacity_kw,latitude,longitude,vacant\n");
        for t in &self.turbines {
            out.push_str(&format!(
                "{},turbine,{},{},{:.5},{:.5},\n",
                t.id, t.site, t.rated_kw, t.lat, t.lon
            ));
        }
        for m in &self.meters {
            out.push_str(&format!("{},meter,{},,,,{}\n", m.id, m.site, m.is_vacant()));
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

/// Share of meters stuck for the whole run in [`FaultMode::Random`].
pub const STUCK_METER_SHARE: f64 = 0.05;

/// Turbines below this output while running meet the spec's LOW_POWER_OUTPUT condition.
pub const LOW_POWER_KW: f64 = 100.0;

/// How far ahead a FUTURE_TIMESTAMP reading is dated.
const FUTURE_SHIFT_MS: i64 = 2 * HOUR_MS;

/// One generated row plus what the simulator meant by it.
#[derive(Debug, Clone)]
pub struct SimRow {
    /// Canonical-column JSON object, as the ingest API takes it.
    pub row: Map<String, Value>,
    /// Injected scenario, if any (an episode's readings carry its fault's).
    pub scenario: Option<Scenario>,
    /// The fault episode the asset is in, if any.
    pub episode: Option<EpisodeKind>,
    /// The turbine was running below [`LOW_POWER_KW`] (the spec's
    /// LOW_POWER_OUTPUT); independent of any injected scenario.
    pub low_power_output: bool,
    /// Nothing is sent for this asset this tick: a missing meter interval,
    /// or a SILENT episode.
    pub gap: bool,
}

/// The id a reading of `real_id` carries in the UNKNOWN_ASSET scenario.
/// Real ids start with `TURBINE_` or `MTR-`, so however large the fleet,
/// this never names a registered asset.
pub fn unknown_id(real_id: &str) -> String {
    format!("GHOST-{real_id}")
}

/// Where an asset stands towards its episode at one tick.
#[derive(Debug, Clone, Copy, Default)]
struct Phase {
    /// The episode under way.
    active: Option<EpisodeKind>,
    /// Within the episode's guard: no data-quality scenario, no random gap.
    guarded: bool,
    /// A reading dated [`FUTURE_SHIFT_MS`] ahead would land in the guard.
    future_guarded: bool,
    /// Hold the wind at 8-11 m/s (UNDERPERFORMANCE, until its fault closes).
    steady_wind: bool,
}

/// Produces readings tick by tick.
pub struct Generator {
    fleet: Fleet,
    seed: u64,
    mode: FaultMode,
    plan: Option<FaultPlan>,
    /// Index into the plan's episodes, per turbine and per meter.
    turbine_episode: Vec<Option<usize>>,
    meter_episode: Vec<Option<usize>>,
    /// Meters repeating their base load all run ([`FaultMode::Random`]).
    stuck: Vec<bool>,
    /// Event-time spacing of ticks, hours, when known.
    tick_h: Option<f64>,
    /// The declared interval, hours: a `kWh` meter reports what it consumed
    /// over it. `None`: it reports kW as kWh (validate takes it as hourly).
    kwh_h: Option<f64>,
    wind: Vec<f64>,
    direction: Vec<f64>,
    /// Each meter's energy register, kWh.
    registers: Vec<f64>,
    /// Each meter's last sent power, kW: the next differs from it.
    last_kw: Vec<Option<f64>>,
    /// The value a meter in a STUCK_VALUE episode repeats.
    stuck_kw: Vec<Option<f64>>,
    /// Event time of the previous tick: the register advances by the
    /// consumption between ticks, so it follows the tick interval.
    last_tick: Option<DateTime<Utc>>,
}

impl Generator {
    /// A generator over `fleet` with random faults ([`FaultMode::Random`]);
    /// `kWh` meters report kW (as hourly consumption).
    pub fn new(fleet: Fleet, seed: u64) -> Self {
        Generator::with_faults(fleet, seed, FaultMode::Random, None)
    }

    /// A generator over `fleet` injecting faults as `mode` says: with
    /// [`FaultMode::Episodes`], the episodes of `plan`, whose timeline the
    /// ticks must follow. When the plan's interval is declared (in any
    /// mode), `kWh` meters report their consumption over it.
    pub fn with_faults(fleet: Fleet, seed: u64, mode: FaultMode, plan: Option<FaultPlan>) -> Self {
        let n = fleet.turbines.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x656e_6572_6779);
        let registers = fleet
            .meters
            .iter()
            .map(|_| rng.random_range(1_000.0..40_000.0))
            .collect();
        let stuck = fleet
            .meters
            .iter()
            .map(|m| {
                let roll: f64 = rng.random();
                mode == FaultMode::Random && !m.is_vacant() && roll < STUCK_METER_SHARE
            })
            .collect();
        let mut turbine_episode = vec![None; n];
        let mut meter_episode = vec![None; fleet.meters.len()];
        if mode == FaultMode::Episodes {
            for (k, e) in plan.iter().flat_map(|p| p.episodes.iter()).enumerate() {
                let slot = match e.kind.asset_kind() {
                    AssetKind::Turbine => turbine_episode.get_mut(e.asset),
                    AssetKind::Meter => meter_episode.get_mut(e.asset),
                };
                if let Some(slot) = slot {
                    *slot = Some(k);
                }
            }
        }
        Generator {
            wind: vec![9.0; n],
            direction: (0..n).map(|i| (i as f64 * 37.0) % 360.0).collect(),
            registers,
            last_kw: vec![None; fleet.meters.len()],
            stuck_kw: vec![None; fleet.meters.len()],
            stuck,
            tick_h: plan
                .as_ref()
                .map(|p| p.timeline.interval_ms as f64 / HOUR_MS as f64),
            kwh_h: plan
                .as_ref()
                .filter(|p| p.timeline.interval_declared)
                .map(|p| p.timeline.interval_ms as f64 / HOUR_MS as f64),
            turbine_episode,
            meter_episode,
            plan,
            mode,
            last_tick: None,
            fleet,
            seed,
        }
    }

    /// The fleet.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The plan the episodes come from.
    pub fn plan(&self) -> Option<&FaultPlan> {
        self.plan.as_ref()
    }

    /// True when meter `i` repeats one value all run ([`FaultMode::Random`]).
    pub fn stuck_all_run(&self, i: usize) -> bool {
        self.stuck[i]
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
            let phase = self.phase(self.turbine_episode[i], tick, at);
            let row = self.turbine(i, phase, &mut rng, at);
            out.push(row);
        }
        for i in 0..self.fleet.meters.len() {
            let phase = self.phase(self.meter_episode[i], tick, at);
            let row = self.meter(i, phase, hours, &mut rng, at);
            out.push(row);
        }
        out
    }

    fn phase(&self, episode: Option<usize>, tick: u64, at: DateTime<Utc>) -> Phase {
        let (Some(plan), Some(k)) = (&self.plan, episode) else {
            return Phase::default();
        };
        let e = &plan.episodes[k];
        let (from, to) = e.guard_ms(&plan.timeline);
        let t = at.timestamp_millis();
        Phase {
            active: e.covers(tick).then_some(e.kind),
            guarded: (from..=to).contains(&t),
            future_guarded: t <= to && t + FUTURE_SHIFT_MS >= from,
            steady_wind: e.kind == EpisodeKind::Underperformance
                && (e.first_tick..=e.close_tick).contains(&tick),
        }
    }

    fn turbine(
        &mut self,
        i: usize,
        phase: Phase,
        rng: &mut ChaCha8Rng,
        at: DateTime<Utc>,
    ) -> SimRow {
        let t = &self.fleet.turbines[i];
        self.wind[i] = (self.wind[i] + rng.random_range(-1.2..1.2)).clamp(0.5, 27.0);
        if phase.steady_wind {
            self.wind[i] = self.wind[i].clamp(8.0, 11.0);
        }
        self.direction[i] = (self.direction[i] + rng.random_range(-8.0..8.0)).rem_euclid(360.0);
        let ws = self.wind[i];
        let mut power = power_curve(ws, t.rated_kw) * rng.random_range(0.95..1.02);
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
        // Normal values stay well inside the clear thresholds of detect-faults.
        let mut gearbox = rng.random_range(55.0..70.0);
        let mut generator = rng.random_range(50.0..65.0);
        let mut vibration = rng.random_range(0.4..1.2);
        let mut oil = rng.random_range(40.0..60.0);
        let mut lean = rng.random_range(0.1..0.8);
        let roll: f64 = rng.random();
        // Cumulative rates of the simulation spec; the fault values only
        // in random mode, the data-quality glitches in every mode.
        let random = self.mode == FaultMode::Random;
        let mut scenario = match roll {
            r if r < 0.05 && random => Some(Scenario::GearboxOverheat),
            r if (0.05..0.08).contains(&r) && random => Some(Scenario::GeneratorOverheat),
            r if (0.08..0.16).contains(&r) && random => Some(Scenario::HighVibration),
            r if (0.16..0.22).contains(&r) && random => Some(Scenario::LowOilPressure),
            r if (0.22..0.24).contains(&r) && random => Some(Scenario::TowerLean),
            r if (0.24..0.245).contains(&r) => Some(Scenario::LeanSensorGlitch),
            r if (0.245..0.255).contains(&r) => Some(Scenario::UnknownAsset),
            _ => None,
        };
        if phase.guarded {
            scenario = None;
        }
        let mut gap = false;
        match phase.active {
            Some(EpisodeKind::GearboxOverheat) => gearbox = rng.random_range(84.0..95.0),
            Some(EpisodeKind::GeneratorOverheat) => generator = rng.random_range(79.0..92.0),
            Some(EpisodeKind::HighVibration) => vibration = rng.random_range(2.5..5.0),
            Some(EpisodeKind::LowOilPressure) => oil = rng.random_range(20.0..31.0),
            Some(EpisodeKind::TowerLean) => lean = rng.random_range(1.8..3.0),
            Some(EpisodeKind::Underperformance) => {
                power = power_curve(ws, t.rated_kw) * rng.random_range(0.45..0.55)
            }
            Some(EpisodeKind::TurbineSilent) => gap = true,
            _ => {}
        }
        if let Some(kind) = phase.active {
            scenario = kind.scenario();
        }
        match scenario {
            Some(Scenario::GearboxOverheat) if random => gearbox = rng.random_range(81.0..95.0),
            Some(Scenario::GeneratorOverheat) if random => generator = rng.random_range(76.0..92.0),
            Some(Scenario::HighVibration) if random => vibration = rng.random_range(2.1..5.0),
            Some(Scenario::LowOilPressure) if random => oil = rng.random_range(20.0..34.0),
            Some(Scenario::TowerLean) if random => lean = rng.random_range(1.6..3.0),
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
            episode: phase.active,
            low_power_output,
            gap,
        }
    }

    /// One meter reading; `hours` since the previous tick advance its register.
    fn meter(
        &mut self,
        i: usize,
        phase: Phase,
        hours: f64,
        rng: &mut ChaCha8Rng,
        at: DateTime<Utc>,
    ) -> SimRow {
        let m = &self.fleet.meters[i];
        let random = self.mode == FaultMode::Random;
        // A single missing interval must not look like a MISSING fault
        // (4 h) where faults are compared.
        let gaps_allowed = random || self.tick_h.is_none_or(|h| h < 2.0);
        let mut gap = rng.random::<f64>() < METER_GAP_RATE && gaps_allowed && !phase.guarded;
        // Daily demand profile around the meter's base load.
        let hour = (at.timestamp() / 3600 % 24) as f64;
        let profile = 1.0 + 0.6 * ((hour - 7.0) / 24.0 * std::f64::consts::TAU).sin();
        let mut kw = if m.is_vacant() {
            0.0
        } else if self.stuck[i] {
            m.base_kw
        } else {
            // Varying, and never the same twice in a row: a repeat is the
            // start of a stuck meter.
            let kw = r2((m.base_kw * profile * rng.random_range(0.85..1.15)).max(0.05));
            if self.last_kw[i] == Some(kw) {
                r2(kw + 0.01)
            } else {
                kw
            }
        };
        let mut register_stuck = self.stuck[i];
        match phase.active {
            Some(EpisodeKind::ZeroValue) => kw = 0.0,
            Some(EpisodeKind::StuckValue) => {
                kw = *self.stuck_kw[i].get_or_insert(kw);
                register_stuck = true;
            }
            Some(EpisodeKind::Overload) => kw = r2(rng.random_range(22.0..30.0)),
            Some(EpisodeKind::MeterSilent) => gap = true,
            _ => {}
        }
        // The register counts what was consumed, glitches aside; a stuck
        // meter's register is stuck too.
        if !register_stuck {
            self.registers[i] += kw * hours;
        }
        let register_kwh = self.registers[i];
        let roll: f64 = rng.random();
        let mut scenario = match roll {
            r if r < 0.01 && random => Some(Scenario::MeterOverload),
            r if (0.01..0.015).contains(&r) => Some(Scenario::NegativePower),
            // Outside random mode a spike stays below 15 kW: a jump for the
            // rate-of-change check, not a value near the overload limit.
            r if (0.015..0.035).contains(&r) && (random || kw * 8.0 < 15.0) => {
                Some(Scenario::Spike)
            }
            r if (0.035..0.045).contains(&r) && !phase.future_guarded => {
                Some(Scenario::FutureTimestamp)
            }
            r if (0.045..0.055).contains(&r) => Some(Scenario::UnknownAsset),
            _ => None,
        };
        if phase.guarded {
            scenario = None;
        }
        if let Some(kind) = phase.active {
            scenario = kind.scenario();
        }
        let mut at = at;
        match scenario {
            Some(Scenario::MeterOverload) if random => kw = rng.random_range(21.0..35.0),
            Some(Scenario::NegativePower) => kw = -rng.random_range(0.1..2.0),
            Some(Scenario::Spike) => kw *= 8.0,
            Some(Scenario::FutureTimestamp) => {
                at += chrono::Duration::milliseconds(FUTURE_SHIFT_MS)
            }
            _ => {}
        }
        let id = if scenario == Some(Scenario::UnknownAsset) {
            unknown_id(&m.id)
        } else {
            m.id.clone()
        };
        // What the asset's next reading must differ from: the last one that
        // reaches the fault rules under its own id and time.
        let reaches_rules = !matches!(
            scenario,
            Some(Scenario::UnknownAsset | Scenario::NegativePower | Scenario::FutureTimestamp)
        );
        if !gap && reaches_rules {
            self.last_kw[i] = Some(kw);
        }
        let (value, unit) = match m.unit {
            Some("W") => (r2(kw * 1000.0), Some("W")),
            Some("watts") => (r2(kw * 1000.0), Some("watts")),
            // Consumption over the interval, unrounded: short intervals
            // consume little.
            Some("kWh") => (kw * self.kwh_h.unwrap_or(1.0), Some("kWh")),
            Some(u) => (r2(kw), Some(u)),
            // Head-ends without units send W for big values, kW for small ones.
            None => (r2(if kw > 10.0 { kw * 1000.0 } else { kw }), None),
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
        row.insert("power".into(), json!(value));
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
            episode: phase.active,
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
    use std::collections::{BTreeMap, BTreeSet};

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
        let stuck: Vec<bool> = {
            let g = Generator::new(fleet.clone(), 9);
            (0..fleet.meters.len())
                .map(|i| g.stuck_all_run(i))
                .collect()
        };
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
            if stuck[i] || m.vacant {
                assert!(hour[i].abs() < 0.01, "{} is stuck or empty", m.id);
            } else {
                // An hour at 0.3-10 kW is hundreds of times ten seconds.
                assert!(hour[i] > 0.1 && hour[i] > ten[i] * 50.0, "{}", m.id);
            }
        }
        assert!(stuck.iter().any(|s| *s));
        assert!(fleet.meters.iter().any(|m| m.vacant));
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
    fn assets_csv_lists_the_fleet_and_its_vacant_meters() {
        let f = Fleet::generate(2, 3, 1);
        let csv = f.assets_csv();
        assert_eq!(csv.lines().count(), 6);
        assert!(csv.starts_with("asset_id,kind,site_id,capacity_kw,latitude,longitude,vacant\n"));
        assert!(csv.contains("TURBINE_00002,turbine,farm-b"));
        assert!(csv.contains("MTR-00003,meter,grid-east"));
        let f = Fleet::generate(0, 200, 1);
        let csv = f.assets_csv();
        for m in &f.meters {
            assert!(csv.contains(&format!("{},meter,{},,,,{}\n", m.id, m.site, m.vacant)));
        }
        assert!(csv.contains(",true\n") && csv.contains(",false\n"));
    }

    // ------------------------------------------------------------ episodes

    const TEN_MINUTES: i64 = 10 * MINUTE_MS;
    /// Three days at ten minutes.
    const THREE_DAYS: u64 = 432;

    fn t0_ms() -> i64 {
        DateTime::parse_from_rfc3339("2024-03-15T00:00:00Z")
            .unwrap()
            .timestamp_millis()
    }

    /// A run in episodes mode: the plan, and each tick's rows.
    struct EpisodeRun {
        fleet: Fleet,
        plan: FaultPlan,
        ticks: Vec<Vec<SimRow>>,
    }

    fn episode_run(
        turbines: usize,
        meters: usize,
        seed: u64,
        ticks: u64,
        interval_ms: i64,
        interval_declared: bool,
    ) -> EpisodeRun {
        let fleet = Fleet::generate(turbines, meters, seed);
        let timeline = Timeline {
            start_ms: t0_ms(),
            interval_ms,
            ticks,
            interval_declared,
        };
        let plan = FaultPlan::new(&fleet, seed, timeline, 0.2, &EpisodeDurations::default());
        let mut g =
            Generator::with_faults(fleet.clone(), seed, FaultMode::Episodes, Some(plan.clone()));
        let ticks = (0..ticks)
            .map(|k| {
                g.tick(
                    k,
                    DateTime::from_timestamp_millis(timeline.at_ms(k)).unwrap(),
                )
            })
            .collect();
        EpisodeRun { fleet, plan, ticks }
    }

    impl EpisodeRun {
        /// Hours a `kWh` value is consumption over, as validate reads it.
        fn kwh_h(&self) -> f64 {
            let tl = self.plan.timeline;
            if tl.interval_declared {
                tl.interval_ms as f64 / HOUR_MS as f64
            } else {
                1.0
            }
        }

        /// The rows of asset `n` (turbines first, then meters) that reach
        /// the fault rules: sent, under its own id, not rejected, and at
        /// their tick's time.
        fn series(&self, n: usize) -> Vec<(u64, i64, &SimRow)> {
            self.ticks
                .iter()
                .enumerate()
                .map(|(k, rows)| (k as u64, &rows[n]))
                .filter(|(_, r)| {
                    !r.gap
                        && !matches!(
                            r.scenario,
                            Some(
                                Scenario::UnknownAsset
                                    | Scenario::NegativePower
                                    | Scenario::FutureTimestamp
                            )
                        )
                })
                .map(|(k, r)| (k, self.plan.timeline.at_ms(k), r))
                .collect()
        }

        fn episode_of(&self, kind: AssetKind, index: usize) -> Option<&Episode> {
            self.plan
                .episodes
                .iter()
                .find(|e| e.kind.asset_kind() == kind && e.asset == index)
        }
    }

    /// A meter reading's power in kW, as validate converts it.
    fn meter_kw(row: &Map<String, Value>, interval_h: f64) -> f64 {
        let v = row["power"].as_f64().unwrap();
        match row.get("power_unit").and_then(Value::as_str) {
            Some("W" | "watts") => v / 1000.0,
            Some("kWh") => v / interval_h,
            Some(_) => v,
            None if v > 1000.0 => v / 1000.0,
            None => v,
        }
    }

    fn num(row: &Map<String, Value>, key: &str) -> f64 {
        row[key].as_f64().unwrap()
    }

    /// A reading's verdict for one rule.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Verdict {
        Fault,
        Clear,
        Neither,
    }

    #[derive(Debug, Clone, Copy)]
    enum Hold {
        Ms(i64),
        Readings(u64),
    }

    /// The alarm lifecycle of detect-faults, reduced to what the
    /// simulator's readings need: hold times and hysteresis.
    #[derive(Debug, Default)]
    struct Lifecycle {
        open: Option<i64>,
        fault: Option<(i64, u64)>,
        clear: Option<(i64, u64)>,
        raised: Vec<(i64, i64)>,
    }

    impl Lifecycle {
        fn step(&mut self, v: Verdict, t: i64, open: Hold, close: Hold) {
            let met = |run: (i64, u64), hold: Hold| match hold {
                Hold::Ms(d) => t - run.0 >= d,
                Hold::Readings(n) => run.1 >= n,
            };
            match v {
                Verdict::Neither => {
                    self.fault = None;
                    self.clear = None;
                }
                Verdict::Fault => {
                    self.clear = None;
                    if self.open.is_none() {
                        let run = self.fault.get_or_insert((t, 0));
                        run.1 += 1;
                        if met(*run, open) {
                            self.open = Some(t);
                            self.fault = None;
                        }
                    }
                }
                Verdict::Clear => {
                    self.fault = None;
                    match self.open {
                        None => self.clear = None,
                        Some(opened) => {
                            let run = self.clear.get_or_insert((t, 0));
                            run.1 += 1;
                            if met(*run, close) {
                                self.raised.push((opened, t));
                                self.open = None;
                                self.clear = None;
                            }
                        }
                    }
                }
            }
        }

        /// Raised faults; one still open counts as closing never.
        fn faults(&self) -> Vec<(i64, i64)> {
            let mut out = self.raised.clone();
            out.extend(self.open.map(|o| (o, i64::MAX)));
            out
        }
    }

    fn limit(v: f64, (threshold, clear): (f64, f64)) -> Verdict {
        let above = clear < threshold;
        if (above && v > threshold) || (!above && v < threshold) {
            Verdict::Fault
        } else if (above && v < clear) || (!above && v > clear) {
            Verdict::Clear
        } else {
            Verdict::Neither
        }
    }

    /// The faults detect-faults with its default rules would raise from
    /// asset `n`'s readings: (code, opened, closed).
    fn detected(run: &EpisodeRun, n: usize) -> BTreeSet<(String, i64, i64)> {
        use rule_defaults as r;
        let series = run.series(n);
        let tl = run.plan.timeline;
        let declared_ms = if tl.interval_declared {
            tl.interval_ms
        } else {
            0
        };
        let mut out = BTreeSet::new();
        // Gaps, from when the next reading was due.
        for pair in series.windows(2) {
            let (t1, t2) = (pair[0].1, pair[1].1);
            let due = t1 + declared_ms;
            let (short, extended) = (
                due + r::MISSING_SHORT_AFTER_MS,
                due + r::MISSING_EXTENDED_AFTER_MS,
            );
            if t2 >= extended {
                out.insert(("MISSING_SHORT".into(), short, extended));
                out.insert(("MISSING_EXTENDED".into(), extended, t2));
            } else if t2 >= short {
                out.insert(("MISSING_SHORT".into(), short, t2));
            }
        }
        let values = series
            .iter()
            .filter(|(_, _, row)| row.scenario != Some(Scenario::LeanSensorGlitch));
        let mut tracks: BTreeMap<&str, Lifecycle> = BTreeMap::new();
        let mut step = |code: &'static str, v: Verdict, t: i64, open: Hold, close: Hold| {
            tracks.entry(code).or_default().step(v, t, open, close)
        };
        let turbines = run.fleet.turbines.len();
        if n < turbines {
            let rated = run.fleet.turbines[n].rated_kw;
            let limits = Hold::Ms(0);
            let close = Hold::Ms(r::LIMIT_CLOSE_AFTER_MS);
            for (_, t, sim) in values {
                let row = &sim.row;
                let t = *t;
                step(
                    "GEARBOX_OVERHEAT",
                    limit(num(row, "gearbox_temperature_c"), r::GEARBOX_C),
                    t,
                    limits,
                    close,
                );
                step(
                    "GENERATOR_OVERHEAT",
                    limit(num(row, "generator_temperature_c"), r::GENERATOR_C),
                    t,
                    limits,
                    close,
                );
                step(
                    "HIGH_VIBRATION",
                    limit(num(row, "vibration_ms2"), r::VIBRATION_MS2),
                    t,
                    limits,
                    close,
                );
                step(
                    "LOW_OIL_PRESSURE",
                    limit(num(row, "oil_pressure_bar"), r::OIL_BAR),
                    t,
                    limits,
                    close,
                );
                step(
                    "TOWER_LEAN",
                    limit(num(row, "tower_lean_deg"), r::LEAN_DEG),
                    t,
                    limits,
                    close,
                );
                let ws = num(row, "wind_speed");
                let expected = power_curve(ws, rated);
                let verdict = if ws > 3.0 && expected >= r::UNDERPERFORMANCE_MIN_EXPECTED_KW {
                    let ratio = num(row, "power_kw") / expected;
                    if ratio < r::UNDERPERFORMANCE_RATIO.0 {
                        Verdict::Fault
                    } else if ratio >= r::UNDERPERFORMANCE_RATIO.1 {
                        Verdict::Clear
                    } else {
                        Verdict::Neither
                    }
                } else {
                    Verdict::Neither
                };
                step(
                    "UNDERPERFORMANCE",
                    verdict,
                    t,
                    Hold::Ms(r::UNDERPERFORMANCE_OPEN_AFTER_MS),
                    Hold::Ms(r::UNDERPERFORMANCE_CLOSE_AFTER_MS),
                );
            }
        } else {
            let meter = &run.fleet.meters[n - turbines];
            let mut stuck: Option<(i64, f64)> = None;
            let mut stuck_open: Option<(i64, f64)> = None;
            for (_, t, sim) in values {
                let t = *t;
                let p = meter_kw(&sim.row, run.kwh_h());
                if !meter.is_vacant() {
                    let v = if p <= 0.0 {
                        Verdict::Fault
                    } else {
                        Verdict::Clear
                    };
                    step(
                        "ZERO_VALUE",
                        v,
                        t,
                        Hold::Ms(r::ZERO_OPEN_AFTER_MS),
                        Hold::Ms(r::ZERO_CLOSE_AFTER_MS),
                    );
                }
                let v = if p > r::OVERLOAD_KW {
                    Verdict::Fault
                } else if p < r::OVERLOAD_KW * 0.95 {
                    Verdict::Clear
                } else {
                    Verdict::Neither
                };
                step(
                    "OVERLOAD",
                    v,
                    t,
                    Hold::Readings(r::OVERLOAD_OPEN_AFTER_READINGS),
                    Hold::Readings(r::OVERLOAD_CLOSE_AFTER_READINGS),
                );
                // STUCK_VALUE: a run of one non-zero value.
                match stuck_open {
                    Some((opened, v)) if p != v => {
                        out.insert(("STUCK_VALUE".into(), opened, t));
                        stuck_open = None;
                        stuck = (p > 0.0).then_some((t, p));
                    }
                    Some(_) => {}
                    None => match stuck {
                        Some((since, v)) if v == p => {
                            if t - since >= r::STUCK_OPEN_AFTER_MS {
                                stuck_open = Some((t, p));
                                stuck = None;
                            }
                        }
                        _ => stuck = (p > 0.0).then_some((t, p)),
                    },
                }
            }
            if let Some((opened, _)) = stuck_open {
                out.insert(("STUCK_VALUE".into(), opened, i64::MAX));
            }
        }
        for (code, track) in tracks {
            for (opened, closed) in track.faults() {
                out.insert((code.to_string(), opened, closed));
            }
        }
        out
    }

    /// Every asset's expected faults, from the plan: (code, open, close).
    fn expected(run: &EpisodeRun, n: usize) -> BTreeSet<(String, i64, i64)> {
        let turbines = run.fleet.turbines.len();
        let id = if n < turbines {
            &run.fleet.turbines[n].id
        } else {
            &run.fleet.meters[n - turbines].id
        };
        run.plan
            .expected_faults()
            .into_iter()
            .filter(|f| &f.asset_id == id)
            .map(|f| (f.code, f.expected_open_ms, f.expected_close_ms))
            .collect()
    }

    const ALL_CODES: [&str; 13] = [
        "GEARBOX_OVERHEAT",
        "GENERATOR_OVERHEAT",
        "HIGH_VIBRATION",
        "LOW_OIL_PRESSURE",
        "TOWER_LEAN",
        "UNDERPERFORMANCE",
        "MISSING_SHORT",
        "MISSING_EXTENDED",
        "STUCK_VALUE",
        "ZERO_VALUE",
        "OVERLOAD",
        "MISSING_SHORT",
        "MISSING_EXTENDED",
    ];

    #[test]
    fn every_code_appears_with_eight_turbines_and_eight_meters_over_three_days() {
        for seed in 0..10 {
            let fleet = Fleet::generate(8, 8, seed);
            let timeline = Timeline {
                start_ms: t0_ms(),
                interval_ms: TEN_MINUTES,
                ticks: THREE_DAYS,
                interval_declared: true,
            };
            let plan = FaultPlan::new(&fleet, seed, timeline, 0.2, &EpisodeDurations::default());
            assert!(plan.skipped.is_empty(), "seed {seed}: {:?}", plan.skipped);
            let faults = plan.expected_faults();
            for (kind, codes) in [("turbine", &ALL_CODES[..8]), ("meter", &ALL_CODES[6..])] {
                let seen: BTreeSet<&str> = faults
                    .iter()
                    .filter(|f| f.kind == kind)
                    .map(|f| f.code.as_str())
                    .collect();
                for code in codes {
                    assert!(seen.contains(code), "seed {seed}: no {kind} {code}");
                }
            }
            // One episode per asset, none on a vacant meter, each with its
            // fault closed inside the run.
            let assets: BTreeSet<&str> =
                plan.episodes.iter().map(|e| e.asset_id.as_str()).collect();
            assert_eq!(assets.len(), plan.episodes.len());
            for e in &plan.episodes {
                assert!(e.first_tick >= 1 && e.first_tick < e.end_tick);
                assert!(e.close_tick < THREE_DAYS);
                if e.kind.asset_kind() == AssetKind::Meter {
                    assert!(!fleet.meters[e.asset].is_vacant());
                }
            }
        }
    }

    #[test]
    fn the_faults_out_lines_are_what_the_readings_raise_and_nothing_else() {
        for seed in [1, 2, 3] {
            // Seed 2 without a declared interval: gaps count from the last reading.
            let run = episode_run(8, 8, seed, THREE_DAYS, TEN_MINUTES, seed != 2);
            let mut raised = 0;
            for n in 0..run.fleet.len() {
                let want = expected(&run, n);
                assert_eq!(detected(&run, n), want, "seed {seed}, asset {n}");
                raised += want.len();
            }
            assert_eq!(raised, run.plan.expected_faults().len());
            // And the lines say so, one JSON object each.
            let lines: Vec<ExpectedFault> = run
                .plan
                .json_lines()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines, run.plan.expected_faults());
        }
        // Readings every ten seconds, in a run too short for the long episodes.
        let run = episode_run(10, 20, 7, 800, 10_000, false);
        assert!(!run.plan.episodes.is_empty());
        for n in 0..run.fleet.len() {
            assert_eq!(detected(&run, n), expected(&run, n), "asset {n}");
        }
    }

    #[test]
    fn episodes_hold_their_condition_every_reading_and_values_are_normal_outside() {
        let run = episode_run(8, 8, 5, THREE_DAYS, TEN_MINUTES, true);
        let turbines = run.fleet.turbines.len();
        for n in 0..run.fleet.len() {
            let kind = if n < turbines {
                AssetKind::Turbine
            } else {
                AssetKind::Meter
            };
            let index = if n < turbines { n } else { n - turbines };
            let episode = run.episode_of(kind, index);
            let mut previous: Option<f64> = None;
            for (tick, _, sim) in run.series(n) {
                let row = &sim.row;
                let during = episode.filter(|e| e.covers(tick)).map(|e| e.kind);
                assert_eq!(sim.episode, during);
                if kind == AssetKind::Turbine {
                    let f = |k| num(row, k);
                    let rated = run.fleet.turbines[index].rated_kw;
                    let ratio = f("power_kw") / power_curve(f("wind_speed"), rated).max(1e-9);
                    match during {
                        Some(EpisodeKind::GearboxOverheat) => {
                            assert!(f("gearbox_temperature_c") > 80.0)
                        }
                        Some(EpisodeKind::GeneratorOverheat) => {
                            assert!(f("generator_temperature_c") > 75.0)
                        }
                        Some(EpisodeKind::HighVibration) => assert!(f("vibration_ms2") > 2.0),
                        Some(EpisodeKind::LowOilPressure) => assert!(f("oil_pressure_bar") < 35.0),
                        Some(EpisodeKind::TowerLean) => assert!(f("tower_lean_deg") > 1.5),
                        Some(EpisodeKind::Underperformance) => {
                            assert!((8.0..=11.0).contains(&f("wind_speed")));
                            assert!((0.4..0.6).contains(&ratio), "{ratio}");
                        }
                        Some(other) => panic!("{other:?} has readings"),
                        None => {}
                    }
                    if during != Some(EpisodeKind::GearboxOverheat) {
                        assert!(f("gearbox_temperature_c") <= 70.0);
                    }
                    if during != Some(EpisodeKind::GeneratorOverheat) {
                        assert!(f("generator_temperature_c") <= 65.0);
                    }
                    if during != Some(EpisodeKind::HighVibration) {
                        assert!(f("vibration_ms2") <= 1.2);
                    }
                    if during != Some(EpisodeKind::LowOilPressure) {
                        assert!(f("oil_pressure_bar") >= 40.0);
                    }
                    if during != Some(EpisodeKind::TowerLean)
                        && sim.scenario != Some(Scenario::LeanSensorGlitch)
                    {
                        assert!(f("tower_lean_deg") <= 1.0);
                    }
                    if during != Some(EpisodeKind::Underperformance) && f("power_kw") >= 100.0 {
                        assert!(ratio >= 0.9, "{ratio}");
                    }
                } else {
                    let p = meter_kw(row, run.kwh_h());
                    let vacant = run.fleet.meters[index].is_vacant();
                    match during {
                        Some(EpisodeKind::ZeroValue) => assert_eq!(p, 0.0),
                        Some(EpisodeKind::Overload) => assert!(p > 20.0),
                        Some(EpisodeKind::StuckValue) => {
                            let first = episode.unwrap().first_tick;
                            if tick > first {
                                assert_eq!(Some(p), previous);
                            } else {
                                assert_ne!(Some(p), previous);
                            }
                        }
                        Some(other) => panic!("{other:?} has readings"),
                        None if vacant => assert_eq!(p, 0.0),
                        None => {
                            assert!(p > 0.0 && p < 15.0, "{p}");
                            assert_ne!(Some(p), previous, "a repeat at tick {tick}");
                        }
                    }
                }
                previous = (kind == AssetKind::Meter).then(|| meter_kw(row, run.kwh_h()));
            }
        }
    }

    #[test]
    fn silent_episodes_send_nothing_for_their_duration() {
        let run = episode_run(8, 8, 11, THREE_DAYS, TEN_MINUTES, true);
        let turbines = run.fleet.turbines.len();
        let silent: Vec<&Episode> = run
            .plan
            .episodes
            .iter()
            .filter(|e| e.kind.is_silent())
            .collect();
        assert_eq!(silent.len(), 2);
        for e in silent {
            let n = match e.kind.asset_kind() {
                AssetKind::Turbine => e.asset,
                AssetKind::Meter => turbines + e.asset,
            };
            // Within an hour of the silence, a meter skips no interval
            // either: the silence has a sharp start and end.
            let (from, to) = e.guard_ms(&run.plan.timeline);
            for (k, rows) in run.ticks.iter().enumerate() {
                let k = k as u64;
                let t = run.plan.timeline.at_ms(k);
                if e.covers(k) || (from..=to).contains(&t) {
                    assert_eq!(rows[n].gap, e.covers(k), "{} at tick {k}", e.asset_id);
                }
                assert_eq!(rows[n].episode.is_some(), e.covers(k));
            }
            let span = run.plan.timeline.at_ms(e.end_tick) - run.plan.timeline.at_ms(e.first_tick);
            assert!(span >= 26 * HOUR_MS);
        }
    }

    #[test]
    fn same_seed_same_episodes_and_readings() {
        let a = episode_run(8, 8, 21, THREE_DAYS, TEN_MINUTES, true);
        let b = episode_run(8, 8, 21, THREE_DAYS, TEN_MINUTES, true);
        assert_eq!(a.plan, b.plan);
        for (ra, rb) in a.ticks.iter().zip(&b.ticks) {
            let ra: Vec<_> = ra.iter().map(|r| (&r.row, r.gap)).collect();
            let rb: Vec<_> = rb.iter().map(|r| (&r.row, r.gap)).collect();
            assert_eq!(ra, rb);
        }
        let c = episode_run(8, 8, 22, THREE_DAYS, TEN_MINUTES, true);
        assert_ne!(a.plan.expected_faults(), c.plan.expected_faults());
    }

    #[test]
    fn data_quality_scenarios_keep_an_hour_away_from_episodes() {
        let run = episode_run(30, 60, 4, THREE_DAYS, TEN_MINUTES, true);
        let turbines = run.fleet.turbines.len();
        let tl = run.plan.timeline;
        let mut near = 0;
        for e in &run.plan.episodes {
            let n = match e.kind.asset_kind() {
                AssetKind::Turbine => e.asset,
                AssetKind::Meter => turbines + e.asset,
            };
            let (from, to) = e.guard_ms(&tl);
            assert!(from <= tl.at_ms(e.first_tick) - HOUR_MS);
            assert!(to >= tl.at_ms(e.close_tick) + HOUR_MS);
            for (k, rows) in run.ticks.iter().enumerate() {
                let t = tl.at_ms(k as u64);
                let r = &rows[n];
                let dq = r.scenario.is_some() && r.episode.is_none();
                if (from..=to).contains(&t) {
                    near += 1;
                    assert!(!dq, "{:?} on {} at tick {k}", r.scenario, e.asset_id);
                    assert!(r.gap == r.episode.is_some_and(EpisodeKind::is_silent));
                }
                if r.scenario == Some(Scenario::FutureTimestamp) {
                    assert!(t + 2 * HOUR_MS < from || t > to);
                }
            }
        }
        assert!(near > 0);
        // Elsewhere they happen.
        let dq: BTreeSet<Scenario> = run
            .ticks
            .iter()
            .flatten()
            .filter(|r| r.episode.is_none())
            .filter_map(|r| r.scenario)
            .collect();
        for s in [
            Scenario::NegativePower,
            Scenario::Spike,
            Scenario::FutureTimestamp,
            Scenario::UnknownAsset,
            Scenario::LeanSensorGlitch,
        ] {
            assert!(dq.contains(&s), "{s:?}");
        }
        for s in [
            Scenario::GearboxOverheat,
            Scenario::MeterOverload,
            Scenario::TowerLean,
        ] {
            assert!(!dq.contains(&s), "random {s:?} with episodes on");
        }
    }

    #[test]
    fn short_runs_keep_the_episodes_that_fit_and_big_fleets_a_share() {
        // 100 ticks of 10 s: the limit faults and OVERLOAD fit, nothing long.
        let fleet = Fleet::generate(10, 20, 7);
        let timeline = Timeline {
            start_ms: t0_ms(),
            interval_ms: 10_000,
            ticks: 100,
            interval_declared: true,
        };
        let plan = FaultPlan::new(&fleet, 7, timeline, 0.2, &EpisodeDurations::default());
        let kinds: BTreeSet<EpisodeKind> = plan.episodes.iter().map(|e| e.kind).collect();
        assert!(
            kinds.contains(&EpisodeKind::GearboxOverheat) && kinds.contains(&EpisodeKind::Overload)
        );
        for long in [
            EpisodeKind::Underperformance,
            EpisodeKind::TurbineSilent,
            EpisodeKind::StuckValue,
            EpisodeKind::ZeroValue,
            EpisodeKind::MeterSilent,
        ] {
            assert!(plan.skipped.contains(&long), "{long:?}");
        }
        for e in &plan.episodes {
            assert!(e.close_tick < 100);
        }
        // A share of a big fleet, spread over the run.
        let fleet = Fleet::generate(100, 100, 3);
        let timeline = Timeline {
            start_ms: t0_ms(),
            interval_ms: TEN_MINUTES,
            ticks: 7 * 144,
            interval_declared: true,
        };
        let plan = FaultPlan::new(&fleet, 3, timeline, 0.2, &EpisodeDurations::default());
        let on = |kind| {
            plan.episodes
                .iter()
                .filter(|e| e.kind.asset_kind() == kind)
                .count()
        };
        assert_eq!(on(AssetKind::Turbine), 20);
        let occupied = fleet.meters.iter().filter(|m| !m.is_vacant()).count();
        assert_eq!(
            on(AssetKind::Meter),
            (occupied as f64 * 0.2).ceil() as usize
        );
        let starts: Vec<u64> = plan.episodes.iter().map(|e| e.first_tick).collect();
        assert!(starts.iter().max().unwrap() - starts.iter().min().unwrap() > 144 * 3);
        // No share, no episode.
        assert!(
            FaultPlan::new(&fleet, 3, timeline, 0.0, &EpisodeDurations::default())
                .episodes
                .is_empty()
        );
    }

    #[test]
    fn only_random_mode_spikes_fault_values_and_sticks_meters() {
        let fleet = Fleet::generate(50, 100, 6);
        let timeline = Timeline {
            start_ms: t0_ms(),
            interval_ms: TEN_MINUTES,
            ticks: 100,
            interval_declared: true,
        };
        for mode in [FaultMode::None, FaultMode::Random] {
            let mut g =
                Generator::with_faults(fleet.clone(), 6, mode, Some(FaultPlan::empty(timeline)));
            let mut faults = 0;
            for k in 0..100 {
                for r in g.tick(
                    k,
                    DateTime::from_timestamp_millis(timeline.at_ms(k)).unwrap(),
                ) {
                    if matches!(
                        r.scenario,
                        Some(
                            Scenario::GearboxOverheat
                                | Scenario::HighVibration
                                | Scenario::MeterOverload
                        )
                    ) {
                        faults += 1;
                    }
                }
            }
            let stuck = (0..100).filter(|&i| g.stuck_all_run(i)).count();
            assert_eq!(faults > 0, mode == FaultMode::Random, "{mode:?}");
            assert_eq!(stuck > 0, mode == FaultMode::Random, "{mode:?}");
        }
    }

    #[test]
    fn kwh_meters_report_their_consumption_over_the_interval() {
        let fleet = Fleet::generate(0, 300, 8);
        let timeline = Timeline {
            start_ms: t0_ms(),
            interval_ms: 15 * MINUTE_MS,
            ticks: 10,
            interval_declared: true,
        };
        let at = DateTime::from_timestamp_millis(t0_ms()).unwrap();
        let mut hourly = Generator::with_faults(fleet.clone(), 8, FaultMode::None, None);
        let mut quarter = Generator::with_faults(
            fleet.clone(),
            8,
            FaultMode::None,
            Some(FaultPlan::empty(timeline)),
        );
        for ((m, a), b) in fleet
            .meters
            .iter()
            .zip(hourly.tick(0, at))
            .zip(quarter.tick(0, at))
        {
            if m.unit == Some("kWh") && !a.gap && a.scenario.is_none() {
                let (a, b) = (num(&a.row, "power"), num(&b.row, "power"));
                assert!((b - a / 4.0).abs() < 1e-9, "{} {a} {b}", m.id);
            }
        }
    }
}
