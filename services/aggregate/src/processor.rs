//! Adapts the windows to the runtime loop: each asset's open windows live
//! in its durable state; a window is emitted when the asset's own event
//! time passes its end plus the grace, corrected by a late reading until
//! the allowed lateness has passed too, then forgotten. Readings later than
//! that go to the late topic, marked with the grains they missed.
//!
//! Time is the asset's, not the partition's: a SCADA backfill sent one
//! turbine after another through one partition would otherwise find every
//! window of the second turbine closed years ago. An asset that falls
//! silent while its data is live has its windows closed by the partition's
//! time instead, once that is `silence` past the asset's last reading (a
//! timer); a reading that comes after that revises them.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono_tz::Tz;
use gale_model::{AssetAggregate, CheckedReading};
use gale_runtime::binary::AvroRecord;
use gale_runtime::pipeline::{Emit, ProcessError, Processor, RecordMeta};
use gale_runtime::state::{Slot, StateValue};
use gale_runtime::telemetry::{self, TraceParent};
use serde::{Deserialize, Serialize};

use crate::acc::{aggregate, classify, zone_name, Acc, Rules};
use crate::gaps::{self, GapKind, GapPolicy, HourValue};
use crate::window::{window_of, zone, Grain, Window};

/// Output: ten-minute aggregates.
pub const AGG_10M: &str = "agg-10m";
/// Output: hourly aggregates.
pub const AGG_1H: &str = "agg-1h";
/// Output: daily aggregates.
pub const AGG_1D: &str = "agg-1d";
/// Output: readings too late for at least one of their windows.
pub const LATE: &str = "late";

/// Attribute on a reading sent to the late topic: the grains it missed.
pub const LATE_FOR: &str = "gale.late_for";

/// The output name of `grain`.
pub fn output_of(grain: Grain) -> &'static str {
    match grain {
        Grain::TenMinutes => AGG_10M,
        Grain::Hour => AGG_1H,
        Grain::Day => AGG_1D,
    }
}

/// One window held in state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Open {
    /// Size.
    pub grain: Grain,
    /// Start (ms).
    pub start: i64,
    /// End (ms).
    pub end: i64,
    /// Zone name (daily windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Last revision emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emitted: Option<i32>,
    /// Set on an hour emitted as a gap fill (no readings yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filled: Option<GapKind>,
    /// Counts and statistics.
    pub acc: Acc,
    /// Trace contexts of the first [`WINDOW_LINKS`] readings in the
    /// window, kept only while spans are exported: the aggregate's
    /// `create` span links to them (see `docs/tracing.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<TraceParent>,
}

/// Readings a window's span links to at most: enough to open a few of its
/// readings' traces from the aggregate, bounded so the state stays small.
pub const WINDOW_LINKS: usize = 8;

impl Open {
    fn window(&self) -> Window {
        Window {
            grain: self.grain,
            start: self.start,
            end: self.end,
            zone: self
                .zone
                .as_deref()
                .and_then(|z| z.parse().ok())
                .unwrap_or(Tz::UTC),
        }
    }
}

/// The latest hour with readings emitted for an asset: where the next gap
/// is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastHour {
    /// Hour start (ms).
    pub start: i64,
    /// Its energy (kWh).
    pub energy_kwh: Option<f64>,
    /// Its mean power (kW).
    pub power_kw_mean: Option<f64>,
    /// Its quality score.
    pub quality: Option<f64>,
}

/// What aggregate keeps per asset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssetWindows {
    /// The asset's event time: the latest event time of its readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
    /// Windows not yet forgotten, by (end, grain).
    #[serde(default)]
    pub windows: Vec<Open>,
    /// See [`LastHour`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hour: Option<LastHour>,
}

impl StateValue for AssetWindows {}

/// One record of any output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Output {
    /// To one of the aggregate outputs.
    Aggregate(Box<AssetAggregate>),
    /// To [`LATE`].
    Late(Box<CheckedReading>),
}

impl AvroRecord for Output {}

/// Timing and rules of the stage.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Grains computed.
    pub grains: Vec<Grain>,
    /// How long after a window's end its final aggregate waits (ms).
    pub grace_ms: i64,
    /// How long after that a late reading still corrects it (ms).
    pub allowed_lateness_ms: i64,
    /// Zone of daily windows for readings without a site zone.
    pub default_zone: Tz,
    /// Exclusion and availability rules.
    pub rules: Rules,
    /// Gap handling of hourly series.
    pub gaps: GapPolicy,
    /// How far the partition's time must pass a live asset's last reading
    /// before the asset's open windows close without it (ms).
    pub silence_ms: i64,
}

/// Data this close to the wall clock is live: a silent asset's windows
/// close on the partition's time. Older data (a backfill) waits for the
/// asset's own next reading.
const LIVE_MS: i64 = 24 * 3_600_000;

/// The stage's processor.
pub struct AggregateProcessor {
    settings: Settings,
    zones: HashMap<String, Tz>,
}

impl AggregateProcessor {
    /// A processor with `settings`.
    pub fn new(settings: Settings) -> Self {
        AggregateProcessor {
            settings,
            zones: HashMap::new(),
        }
    }

    fn zone_of(&mut self, r: &CheckedReading) -> Tz {
        let Some(name) = r.enriched.site_time_zone.as_deref() else {
            return self.settings.default_zone;
        };
        if let Some(z) = self.zones.get(name) {
            return *z;
        }
        let z = zone(name).unwrap_or_else(|e| {
            tracing::warn!(asset = %r.enriched.reading.asset_id, error = %e, "site time zone not understood; daily windows use the default zone");
            self.settings.default_zone
        });
        self.zones.insert(name.to_string(), z);
        z
    }

    fn closes(&self, w: &Open) -> i64 {
        w.end.saturating_add(self.settings.grace_ms)
    }

    fn forgets(&self, w: &Open) -> i64 {
        self.closes(w)
            .saturating_add(self.settings.allowed_lateness_ms)
    }

    fn emit(&self, asset_id: &str, w: &mut Open) -> Emit<Output> {
        let revision = w.emitted.map_or(0, |r| r.saturating_add(1));
        w.emitted = Some(revision);
        let agg = aggregate(asset_id, &w.window(), &w.acc, revision);
        Emit {
            output: output_of(w.grain),
            key: agg.site_id.clone().unwrap_or_else(|| asset_id.to_string()),
            value: Output::Aggregate(Box::new(agg)),
            links: w.links.clone(),
        }
    }

    /// Gap fills between the asset's last hour with readings and `hour`
    /// (just emitted), per the gap policy; fills still correctable stay in
    /// state so a late reading revises them.
    fn fill_gap(
        &self,
        asset_id: &str,
        state: &mut AssetWindows,
        hour: &Open,
        watermark: i64,
        out: &mut Vec<Emit<Output>>,
    ) {
        let agg = aggregate(asset_id, &hour.window(), &hour.acc, 0);
        let now = LastHour {
            start: hour.start,
            energy_kwh: agg.energy_kwh,
            power_kw_mean: agg.power_kw_mean,
            quality: agg.quality_score,
        };
        let Some(prev) = state.last_hour else {
            state.last_hour = Some(now);
            return;
        };
        if hour.start <= prev.start {
            // A late hour: the series around it was already reported.
            return;
        }
        state.last_hour = Some(now);
        let Some((_, missing)) = gaps::gap_between(prev.start, hour.start) else {
            return;
        };
        let kind = gaps::classify(missing, &self.settings.gaps);
        if kind == GapKind::MissingExtended {
            metrics::counter!("gale_aggregate_gaps_total", "kind" => kind.as_str()).increment(1);
            tracing::info!(
                asset = asset_id,
                hours = missing,
                "extended gap in the hourly series"
            );
            return;
        }
        metrics::counter!("gale_aggregate_gaps_total", "kind" => kind.as_str()).increment(1);
        let before = HourValue {
            hour_start_ms: prev.start,
            energy_kwh: prev.energy_kwh,
            power_kw_mean: prev.power_kw_mean,
        };
        let after = HourValue {
            hour_start_ms: hour.start,
            energy_kwh: now.energy_kwh,
            power_kw_mean: now.power_kw_mean,
        };
        let quality = match (prev.quality, now.quality) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for f in gaps::fill(&before, &after, &self.settings.gaps) {
            let w = Open {
                grain: Grain::Hour,
                start: f.hour_start_ms,
                end: f.hour_start_ms + 3_600_000,
                zone: None,
                emitted: Some(0),
                filled: Some(f.kind),
                links: Vec::new(),
                acc: Acc {
                    kind: hour.acc.kind,
                    site_id: hour.acc.site_id.clone(),
                    site_zone: hour.acc.site_zone.clone(),
                    interval_ms: hour.acc.interval_ms,
                    ..Acc::default()
                },
            };
            let mut agg = aggregate(asset_id, &w.window(), &w.acc, 0);
            agg.gap = Some(f.kind.as_str().to_string());
            agg.power_kw_mean = f.power_kw_mean;
            agg.energy_kwh = f.energy_kwh;
            agg.quality_score = match f.kind {
                GapKind::Interpolated => quality.map(|q| q - f64::from(f.quality_deduction)),
                _ => None,
            };
            // A fill stands for the hours around it: it links to the
            // readings of the hour that ended the gap.
            out.push(Emit {
                output: AGG_1H,
                key: agg.site_id.clone().unwrap_or_else(|| asset_id.to_string()),
                value: Output::Aggregate(Box::new(agg)),
                links: hour.links.clone(),
            });
            if self.forgets(&w) > watermark {
                insert(&mut state.windows, w);
            }
        }
    }

    /// Emits every window of `state` due at time `watermark` and forgets
    /// the ones past correction.
    fn advance(
        &self,
        asset_id: &str,
        state: &mut AssetWindows,
        watermark: i64,
        out: &mut Vec<Emit<Output>>,
    ) {
        let mut i = 0;
        while i < state.windows.len() {
            let w = &state.windows[i];
            if w.emitted.is_none() && self.closes(w) <= watermark {
                let mut w = state.windows[i].clone();
                out.push(self.emit(asset_id, &mut w));
                if w.grain == Grain::Hour && self.settings.grains.contains(&Grain::Hour) {
                    self.fill_gap(asset_id, state, &w, watermark, out);
                }
                // fill_gap may insert earlier hours: find the window again.
                if let Some(j) = state
                    .windows
                    .iter()
                    .position(|o| o.grain == w.grain && o.start == w.start)
                {
                    state.windows[j] = w;
                }
                i = 0;
                continue;
            }
            if w.emitted.is_some() && self.forgets(w) <= watermark {
                state.windows.remove(i);
                continue;
            }
            i += 1;
        }
    }
}

fn insert(windows: &mut Vec<Open>, w: Open) {
    let at = windows.partition_point(|o| (o.end, o.grain) < (w.end, w.grain));
    windows.insert(at, w);
}

#[async_trait]
impl Processor for AggregateProcessor {
    type Input = CheckedReading;
    type Output = Output;
    type State = AssetWindows;

    async fn process(
        &mut self,
        input: &CheckedReading,
        meta: &RecordMeta<'_>,
        slot: &mut Slot<AssetWindows>,
    ) -> Result<Vec<Emit<Output>>, ProcessError> {
        let r = &input.enriched.reading;
        // Contributors' contexts are kept only for exported spans.
        let linking = telemetry::spans_exported();
        let context = if linking {
            meta.traceparent.and_then(TraceParent::parse)
        } else {
            None
        };
        let zone = self.zone_of(input);
        let how = classify(input, self.settings.rules.exclude_from);
        let mut state = slot.get_mut().map(std::mem::take).unwrap_or_default();
        let watermark = state.time.unwrap_or(i64::MIN);
        let mut out = Vec::new();

        // A duplicate event time is decided by the daily window, which
        // holds the reading's other windows.
        let day =
            window_of(Grain::Day, r.event_time, zone).ok_or_else(|| ProcessError::Reject {
                class: "event_time_out_of_range",
                message: format!(
                    "event time {} ms cannot be placed in a window",
                    r.event_time
                ),
            })?;
        let mut missed = Vec::new();
        let mut duplicate = false;
        let day_open = state
            .windows
            .iter()
            .position(|o| o.grain == Grain::Day && o.start == day.start);
        if let Some(j) = day_open {
            let offset = u32::try_from(r.event_time - day.start).unwrap_or(u32::MAX);
            duplicate = !state.windows[j].acc.first_time(offset);
            if duplicate {
                state.windows[j].acc.duplicate += 1;
            }
        }
        if !duplicate {
            for &grain in &self.settings.grains {
                let Some(w) = window_of(grain, r.event_time, zone) else {
                    continue;
                };
                let found = state
                    .windows
                    .iter()
                    .position(|o| o.grain == grain && o.start == w.start);
                let j = match found {
                    Some(j) => j,
                    None => {
                        let open = Open {
                            grain,
                            start: w.start,
                            end: w.end,
                            zone: (grain == Grain::Day).then(|| zone_name(w.zone)),
                            emitted: None,
                            filled: None,
                            acc: Acc::default(),
                            links: Vec::new(),
                        };
                        if self.forgets(&open) <= watermark {
                            missed.push(grain.as_str());
                            continue;
                        }
                        insert(&mut state.windows, open);
                        state
                            .windows
                            .iter()
                            .position(|o| o.grain == grain && o.start == w.start)
                            .expect("just inserted")
                    }
                };
                let rules = self.settings.rules;
                let o = &mut state.windows[j];
                if grain == Grain::Day && day_open.is_none() {
                    let offset = u32::try_from(r.event_time - o.start).unwrap_or(u32::MAX);
                    o.acc.first_time(offset);
                }
                // A real reading in an hour emitted as a gap fill (whose
                // counts are empty): it is an hour with readings from now on.
                o.filled = None;
                o.acc.add(input, how, &rules);
                if linking {
                    telemetry::keep_link(&mut o.links, context, WINDOW_LINKS);
                }
                if o.emitted.is_some() || self.closes(o) <= watermark {
                    o.acc.late += 1;
                    let mut w = o.clone();
                    out.push(self.emit(&r.asset_id, &mut w));
                    state.windows[j] = w;
                }
            }
        }
        if !missed.is_empty() {
            metrics::counter!("gale_aggregate_too_late_total").increment(1);
            tracing::warn!(asset = %r.asset_id, event_id = %r.event_id, grains = %missed.join(","), "reading too late for its windows; sent to the late topic");
            let mut late = input.clone();
            late.enriched
                .reading
                .attributes
                .insert(LATE_FOR.into(), missed.join(","));
            out.push(Emit {
                output: LATE,
                key: r.asset_id.clone(),
                value: Output::Late(Box::new(late)),
                links: Vec::new(),
            });
        }
        state.time = Some(watermark.max(r.event_time));
        let now = state.time.unwrap_or(r.event_time);
        self.advance(&r.asset_id, &mut state, now, &mut out);
        slot.set(state);
        Ok(out)
    }

    fn event_time_ms(&self, input: &CheckedReading) -> Option<i64> {
        Some(input.enriched.reading.event_time)
    }

    fn expired(&self, state: &AssetWindows, _watermark: i64) -> bool {
        // Decided on the asset's own time, so a lagging asset (a backfill
        // behind the partition) keeps its state; kept a day past the last
        // hour so a gap of under a day is measured.
        state.windows.is_empty()
            && state.last_hour.is_none_or(|h| {
                state
                    .time
                    .is_some_and(|t| h.start.saturating_add(25 * 3_600_000) < t)
            })
    }

    fn timer(&self, state: &AssetWindows) -> Option<i64> {
        // Only for an asset gone silent (its own readings close its
        // windows): the next close or purge, once the partition's time is
        // `silence` past the asset's last reading.
        let time = state.time?;
        let due = state
            .windows
            .iter()
            .map(|w| match w.emitted {
                None => self.closes(w),
                Some(_) => self.forgets(w),
            })
            .min()?;
        Some(due.max(time.saturating_add(self.settings.silence_ms)))
    }

    async fn on_timer(
        &mut self,
        key: &str,
        slot: &mut Slot<AssetWindows>,
        watermark: i64,
    ) -> Vec<Emit<Output>> {
        let Some(mut state) = slot.get_mut().map(std::mem::take) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let live = state
            .time
            .is_some_and(|t| t >= chrono::Utc::now().timestamp_millis() - LIVE_MS);
        if live {
            // The partition's time is `silence` past the asset's last
            // reading: it closes the asset's windows.
            self.advance(key, &mut state, watermark, &mut out);
        }
        slot.set(state);
        out
    }
}
