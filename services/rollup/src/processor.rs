//! The roll-up as a runtime stage. Each key (a site, or `fleet`) keeps its
//! open hours, each with the latest contribution of every member (asset or
//! site) by revision, and its open days, each with the parts of its hours.
//! An hour is emitted when the watermark (the members' window ends) passes
//! its end plus the grace, and then folded into its local day; a day is
//! emitted the same way, with its peak hours. A member's later revision
//! replaces its earlier one and re-emits what it changed, as the next
//! revision, until the allowed lateness has passed.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use async_trait::async_trait;
use chrono_tz::Tz;
use gale_aggregate::peaks::{day_peaks, HourCandidate, PeakPolicy};
use gale_aggregate::window::{window_of, zone, Grain};
use gale_model::{AssetAggregate, Peak, SiteAggregate};
use gale_runtime::binary::AvroRecord;
use gale_runtime::pipeline::{Emit, ProcessError, Processor, RecordMeta};
use gale_runtime::state::{Slot, StateValue};
use gale_runtime::telemetry::{self, TraceParent};
use serde::{Deserialize, Serialize};

use crate::part::{record, Part, Scope};

/// Output: hourly roll-ups.
pub const HOURLY: &str = "hourly";
/// Output: daily roll-ups.
pub const DAILY: &str = "daily";
/// Output: daily peak hours.
pub const PEAKS: &str = "peaks";

const HOUR: i64 = 3_600_000;

/// A record a roll-up takes in: one member's hourly aggregate.
pub trait Member: AvroRecord + Sync {
    /// Who contributes (asset or site id).
    fn member(&self) -> String;
    /// The group it rolls up into (site id; `None` for the fleet).
    fn group(&self) -> Option<String>;
    /// `1h` records only are rolled up.
    fn grain(&self) -> &str;
    /// Hour start (ms).
    fn start(&self) -> i64;
    /// Revision.
    fn revision(&self) -> i32;
    /// The site's zone, for site days.
    fn zone(&self) -> Option<&str>;
    /// Its contribution.
    fn part(&self) -> Part;
}

impl Member for AssetAggregate {
    fn member(&self) -> String {
        self.asset_id.clone()
    }
    fn group(&self) -> Option<String> {
        self.site_id.clone()
    }
    fn grain(&self) -> &str {
        &self.grain
    }
    fn start(&self) -> i64 {
        self.window_start
    }
    fn revision(&self) -> i32 {
        self.revision
    }
    fn zone(&self) -> Option<&str> {
        self.site_time_zone.as_deref()
    }
    fn part(&self) -> Part {
        Part::from(self)
    }
}

impl Member for SiteAggregate {
    fn member(&self) -> String {
        self.site_id.clone().unwrap_or_default()
    }
    fn group(&self) -> Option<String> {
        None
    }
    fn grain(&self) -> &str {
        &self.grain
    }
    fn start(&self) -> i64 {
        self.window_start
    }
    fn revision(&self) -> i32 {
        self.revision
    }
    fn zone(&self) -> Option<&str> {
        None
    }
    fn part(&self) -> Part {
        Part::from(self)
    }
}

/// An open hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hour {
    /// Start (ms).
    pub start: i64,
    /// Each member's latest revision and part.
    pub members: BTreeMap<String, (i32, Part)>,
    /// Last revision emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emitted: Option<i32>,
    /// Trace contexts of the first [`HOUR_LINKS`] member aggregates, kept
    /// only while spans are exported: the roll-up hour's `create` span
    /// links to them (see `docs/tracing.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<TraceParent>,
}

/// Member aggregates an hour's span links to at most.
pub const HOUR_LINKS: usize = 8;

/// An open day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Day {
    /// Start (ms).
    pub start: i64,
    /// End (ms).
    pub end: i64,
    /// Zone name.
    pub zone: String,
    /// Emitted hours' parts, by hour start.
    pub hours: BTreeMap<i64, Part>,
    /// Last revision emitted (provisional or final).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emitted: Option<i32>,
    /// The final record was emitted.
    #[serde(default)]
    pub closed: bool,
}

/// What a roll-up keeps per key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rolling {
    /// The site (`None` for the fleet).
    #[serde(default)]
    pub site_id: Option<String>,
    /// Zone of the days.
    #[serde(default)]
    pub zone: Option<String>,
    /// Open hours, in order.
    #[serde(default)]
    pub hours: Vec<Hour>,
    /// Open days, in order.
    #[serde(default)]
    pub days: Vec<Day>,
    /// Each member's latest hour start: the key's event time is the
    /// earliest of its active members' (see [`Settings::member_idle`]).
    #[serde(default)]
    pub members: BTreeMap<String, i64>,
    /// The partition watermark after which the timer checks again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<i64>,
}

impl StateValue for Rolling {}

/// One record of any output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Output {
    /// To [`HOURLY`] or [`DAILY`].
    Aggregate(Box<SiteAggregate>),
    /// To [`PEAKS`].
    Peak(Box<Peak>),
}

impl AvroRecord for Output {}

/// The roll-up's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `site` (members are assets) or `fleet` (members are sites).
    pub fleet: bool,
    /// Grace past a window's end (ms of watermark).
    pub grace_ms: i64,
    /// How long after that corrections are taken (ms).
    pub allowed_lateness_ms: i64,
    /// Zone of the days: the fleet's, or a site's without one.
    pub zone: Tz,
    /// Peak-hour rules.
    pub peaks: PeakPolicy,
    /// A member that has sent nothing for this long (wall clock) is not
    /// waited for: windows close without it, and its later hours revise
    /// them. Decides when a window appears, never what it finally says.
    pub member_idle: std::time::Duration,
    /// An hour whose meters' coverage is below this is left out of peaks.
    pub peak_min_coverage: f64,
    /// Emit a provisional day (and its peaks so far) each time an hour of
    /// it closes, for live dashboards.
    pub early_updates: bool,
}

/// The roll-up processor over members `M`.
pub struct RollupProcessor<M> {
    settings: Settings,
    zones: HashMap<String, Tz>,
    /// When each (key, member) was last heard from; a member restored from
    /// state counts as heard from at start.
    seen: HashMap<(String, String), Instant>,
    started: Instant,
    _member: std::marker::PhantomData<fn() -> M>,
}

impl<M: Member> RollupProcessor<M> {
    /// A processor with `settings`.
    pub fn new(settings: Settings) -> Self {
        RollupProcessor {
            settings,
            zones: HashMap::new(),
            seen: HashMap::new(),
            started: Instant::now(),
            _member: std::marker::PhantomData,
        }
    }

    fn zone_named(&mut self, name: Option<&str>) -> Tz {
        let Some(name) = name.filter(|_| !self.settings.fleet) else {
            return self.settings.zone;
        };
        if let Some(z) = self.zones.get(name) {
            return *z;
        }
        let z = zone(name).unwrap_or(self.settings.zone);
        self.zones.insert(name.to_string(), z);
        z
    }

    /// The key's event time: the earliest latest-hour of its active
    /// members, or `watermark` (the partition's) when none is active.
    fn frontier(&self, state: &Rolling, watermark: i64) -> i64 {
        let key = self.scope_key(state);
        let now = Instant::now();
        state
            .members
            .iter()
            .filter(|(m, _)| {
                let at = self
                    .seen
                    .get(&(key.clone(), (*m).clone()))
                    .copied()
                    .unwrap_or(self.started);
                now.duration_since(at) < self.settings.member_idle
            })
            .map(|(_, t)| *t)
            .min()
            .unwrap_or(watermark)
    }

    fn scope_key(&self, state: &Rolling) -> String {
        state.site_id.clone().unwrap_or_else(|| "fleet".into())
    }

    fn hour_record(&self, state: &Rolling, h: &Hour, revision: i32) -> SiteAggregate {
        let part = Part::sum(h.members.values().map(|(_, p)| p));
        let scope = Scope {
            scope: if self.settings.fleet { "fleet" } else { "site" },
            site_id: state.site_id.as_deref(),
            grain: "1h",
            start: h.start,
            end: h.start + HOUR,
            time_zone: "UTC",
            local_date: chrono::DateTime::from_timestamp_millis(h.start)
                .map(|t| t.date_naive().to_string())
                .unwrap_or_default(),
            hours: 1,
        };
        record(&scope, &part, revision)
    }

    fn emit_hour(
        &mut self,
        state: &mut Rolling,
        i: usize,
        watermark: i64,
        out: &mut Vec<Emit<Output>>,
    ) {
        let revision = state.hours[i].emitted.map_or(0, |r| r.saturating_add(1));
        state.hours[i].emitted = Some(revision);
        let rec = self.hour_record(state, &state.hours[i], revision);
        // Site hours all go to one key: the fleet roll-up reads them as one.
        out.push(Emit {
            output: HOURLY,
            key: "fleet".into(),
            value: Output::Aggregate(Box::new(rec)),
            links: state.hours[i].links.clone(),
        });
        let hour = &state.hours[i];
        let part = Part::sum(hour.members.values().map(|(_, p)| p));
        let start = hour.start;
        let zone = self.zone_named(state.zone.as_deref());
        let Some(w) = window_of(Grain::Day, start, zone) else {
            return;
        };
        let j = match state.days.iter().position(|d| d.start == w.start) {
            Some(j) => j,
            None => {
                if w.end + self.settings.grace_ms + self.settings.allowed_lateness_ms <= watermark {
                    tracing::warn!(key = %self.scope_key(state), hour = start, "hour revised after its day was final; the day keeps its last revision");
                    return;
                }
                let at = state.days.partition_point(|d| d.start < w.start);
                state.days.insert(
                    at,
                    Day {
                        start: w.start,
                        end: w.end,
                        zone: zone.name().to_string(),
                        hours: BTreeMap::new(),
                        emitted: None,
                        closed: false,
                    },
                );
                at
            }
        };
        state.days[j].hours.insert(start, part);
        if state.days[j].closed || self.settings.early_updates {
            self.emit_day(state, j, out);
        }
    }

    fn emit_day(&mut self, state: &mut Rolling, j: usize, out: &mut Vec<Emit<Output>>) {
        let revision = state.days[j].emitted.map_or(0, |r| r.saturating_add(1));
        state.days[j].emitted = Some(revision);
        let provisional = !state.days[j].closed;
        let d = &state.days[j];
        let tz: Tz = d.zone.parse().unwrap_or(Tz::UTC);
        let date = gale_aggregate::window::Window {
            grain: Grain::Day,
            start: d.start,
            end: d.end,
            zone: tz,
        }
        .local_date();
        let part = Part::sum(d.hours.values());
        let scope = Scope {
            scope: if self.settings.fleet { "fleet" } else { "site" },
            site_id: state.site_id.as_deref(),
            grain: "1d",
            start: d.start,
            end: d.end,
            time_zone: &d.zone,
            local_date: date.to_string(),
            hours: d.hours.len() as i64,
        };
        let key = self.scope_key(state);
        out.push(Emit {
            output: DAILY,
            key: key.clone(),
            value: Output::Aggregate(Box::new(SiteAggregate {
                provisional,
                ..record(&scope, &part, revision)
            })),
            links: Vec::new(),
        });
        let candidates: Vec<HourCandidate> = d
            .hours
            .iter()
            .filter_map(|(start, p)| {
                Some(HourCandidate {
                    hour_start_ms: *start,
                    consumption_kwh: p.consumption?,
                    gap: p
                        .meter_coverage()
                        .is_none_or(|c| c < self.settings.peak_min_coverage),
                    temperature_c: p.temperature(),
                })
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let result = day_peaks(
            state.site_id.as_deref(),
            date,
            &candidates,
            &self.settings.peaks,
        );
        let scope_id = match &state.site_id {
            Some(s) => format!("site:{s}"),
            None => "fleet".to_string(),
        };
        for rank in 1..=self.settings.peaks.top_n {
            let peak = result.peaks.iter().find(|p| p.rank as usize == rank);
            let peak_id = format!("{scope_id}:{date}:{rank}");
            out.push(Emit {
                output: PEAKS,
                key: key.clone(),
                value: Output::Peak(Box::new(Peak {
                    event_id: format!("{peak_id}:{revision}"),
                    peak_id,
                    scope: scope.scope.to_string(),
                    site_id: state.site_id.clone(),
                    local_date: date.to_string(),
                    time_zone: d.zone.clone(),
                    season: result.season.as_str().to_string(),
                    holiday: result.holiday,
                    revision,
                    provisional,
                    rank: i32::try_from(rank).unwrap_or(i32::MAX),
                    hour_start: peak.map(|p| p.hour_start_ms),
                    consumption_kwh: peak.map(|p| p.consumption_kwh),
                    temperature_c: peak.and_then(|p| p.temperature_c),
                    candidate_hours: i32::try_from(result.candidates).unwrap_or(i32::MAX),
                    excluded_gap: i32::try_from(result.excluded.gap + result.excluded.not_finite)
                        .unwrap_or(i32::MAX),
                    excluded_holiday: i32::try_from(result.excluded.holiday).unwrap_or(i32::MAX),
                    excluded_maintenance: i32::try_from(result.excluded.maintenance)
                        .unwrap_or(i32::MAX),
                    excluded_temperature: i32::try_from(result.excluded.temperature)
                        .unwrap_or(i32::MAX),
                })),
                links: Vec::new(),
            });
        }
    }

    fn advance(&mut self, state: &mut Rolling, watermark: i64, out: &mut Vec<Emit<Output>>) {
        let (grace, lateness) = (self.settings.grace_ms, self.settings.allowed_lateness_ms);
        let mut i = 0;
        while i < state.hours.len() {
            let end = state.hours[i].start + HOUR;
            if state.hours[i].emitted.is_none() && end + grace <= watermark {
                self.emit_hour(state, i, watermark, out);
            }
            if state.hours[i].emitted.is_some() && end + grace + lateness <= watermark {
                state.hours.remove(i);
            } else {
                i += 1;
            }
        }
        // Members gone quiet for longer than any correction is taken.
        let horizon = watermark
            .saturating_sub(grace)
            .saturating_sub(lateness)
            .saturating_sub(HOUR);
        state.members.retain(|_, t| *t >= horizon);
        let mut j = 0;
        while j < state.days.len() {
            let end = state.days[j].end;
            if !state.days[j].closed && end + grace <= watermark {
                state.days[j].closed = true;
                self.emit_day(state, j, out);
            }
            if state.days[j].closed && end + grace + lateness <= watermark {
                state.days.remove(j);
            } else {
                j += 1;
            }
        }
    }
}

#[async_trait]
impl<M: Member + 'static> Processor for RollupProcessor<M> {
    type Input = M;
    type Output = Output;
    type State = Rolling;

    async fn process(
        &mut self,
        input: &M,
        meta: &RecordMeta<'_>,
        slot: &mut Slot<Rolling>,
    ) -> Result<Vec<Emit<Output>>, ProcessError> {
        if input.grain() != "1h" {
            return Ok(Vec::new());
        }
        let watermark = meta.watermark.unwrap_or(i64::MIN);
        let mut state = slot.get_mut().map(std::mem::take).unwrap_or_default();
        if state.site_id.is_none() && !self.settings.fleet {
            state.site_id = input.group();
        }
        if let Some(z) = input.zone() {
            state.zone = Some(z.to_string());
        }
        let start = input.start();
        let member = input.member();
        let key = self.scope_key(&state);
        let before = self.frontier(&state, watermark);
        let forgets = start + HOUR + self.settings.grace_ms + self.settings.allowed_lateness_ms;
        let i = match state.hours.iter().position(|h| h.start == start) {
            Some(i) => i,
            None if forgets <= before => {
                slot.set(state);
                return Err(ProcessError::Reject {
                    class: "late",
                    message: format!(
                        "hour starting {start} ms of {member} arrived after the roll-up stopped taking corrections for it"
                    ),
                });
            }
            None => {
                let at = state.hours.partition_point(|h| h.start < start);
                state.hours.insert(
                    at,
                    Hour {
                        start,
                        members: BTreeMap::new(),
                        emitted: None,
                        links: Vec::new(),
                    },
                );
                at
            }
        };
        self.seen.insert((key, member.clone()), Instant::now());
        let latest = state.members.entry(member.clone()).or_insert(start);
        *latest = (*latest).max(start);
        if telemetry::spans_exported() {
            let context = meta.traceparent.and_then(TraceParent::parse);
            telemetry::keep_link(&mut state.hours[i].links, context, HOUR_LINKS);
        }
        let changed = match state.hours[i].members.get(&member) {
            Some((rev, _)) if *rev >= input.revision() => false,
            _ => {
                state.hours[i]
                    .members
                    .insert(member, (input.revision(), input.part()));
                true
            }
        };
        let mut out = Vec::new();
        if changed && state.hours[i].emitted.is_some() {
            self.emit_hour(&mut state, i, before, &mut out);
        }
        let now = self.frontier(&state, watermark);
        self.advance(&mut state, now, &mut out);
        slot.set(state);
        Ok(out)
    }

    /// A member hour's start: an hour closes once a member's next hour
    /// arrives (plus the grace), not when its own members do.
    fn event_time_ms(&self, input: &M) -> Option<i64> {
        Some(input.start())
    }

    fn expired(&self, state: &Rolling, _watermark: i64) -> bool {
        state.hours.is_empty() && state.days.is_empty()
    }

    fn timer(&self, state: &Rolling) -> Option<i64> {
        let (grace, lateness) = (self.settings.grace_ms, self.settings.allowed_lateness_ms);
        let hours = state
            .hours
            .iter()
            .map(|h| h.start + HOUR + grace + if h.emitted.is_some() { lateness } else { 0 });
        let days = state
            .days
            .iter()
            .map(|d| d.end + grace + if d.closed { lateness } else { 0 });
        let due = hours.chain(days).min()?;
        Some(state.next_check.map_or(due, |c| c.max(due)))
    }

    async fn on_timer(
        &mut self,
        _key: &str,
        slot: &mut Slot<Rolling>,
        watermark: i64,
    ) -> Vec<Emit<Output>> {
        let Some(mut state) = slot.get_mut().map(std::mem::take) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let now = self.frontier(&state, watermark);
        self.advance(&mut state, now, &mut out);
        // Windows a lagging member still holds open: look again once the
        // partition's time moves on.
        state.next_check = Some(watermark.saturating_add(1));
        slot.set(state);
        out
    }
}
