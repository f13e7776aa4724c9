//! The rules applied to one asset's readings and silences.
//!
//! The runtime calls [`Detector::observe`] for each reading of an asset in
//! offset order, and [`Detector::advance`] when its partition's watermark
//! passes [`Detector::next_due`]. Both are pure functions of the rules, the
//! state and their arguments: the same calls give the same events, which is
//! what makes a replay after a crash harmless.

use crate::alarm::{self, step, Asset, Hold, Spec, Verdict};
use crate::fault::{span, ActiveFault, AssetKind, FaultChange, FaultCode, FaultStatus};
use crate::rules::{ms, GapRule, Rules};
use crate::sample::{finite, Sample};
use crate::state::{AssetState, OpenFault, Run, Silence};
use crate::variance::{self, day_of};

/// Longest `interval_ms` honoured: a silence starts at most a day after a reading.
const MAX_INTERVAL_MS: i64 = 86_400_000;

const HOUR_MS: f64 = 3_600_000.0;

/// Applies [`Rules`] to per-asset state.
#[derive(Debug, Clone)]
pub struct Detector {
    rules: Rules,
}

/// What one reading did.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Fault events, oldest first: gaps the reading ended, then the rules
    /// in [`FaultCode::ALL`] order.
    pub changes: Vec<FaultChange>,
    /// Faults open on the asset after the reading, to annotate it with.
    pub active: Vec<ActiveFault>,
    /// Quality points to deduct from the reading: the kind's
    /// `fault_deduction` per active fault.
    pub deduction: i32,
}

impl Detector {
    /// A detector applying `rules`.
    pub fn new(rules: Rules) -> Self {
        Detector { rules }
    }

    /// The rules applied.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Applies one reading of the asset whose state is `state`.
    ///
    /// A reading later (in event time) than every earlier one of the asset
    /// first settles the silence before it exactly as [`Detector::advance`]
    /// would have, then ends it: whether or not a timer got there first,
    /// the same gap faults open and close at the same times, with the same
    /// ids and revisions. A trusted reading later than the latest trusted
    /// one then goes through the value rules.
    ///
    /// A reading at or before a time already taken (out of order, or a
    /// repeat) changes nothing: runs never move backwards and no fault
    /// opens or closes in the past. It is annotated with the faults open
    /// now. A quarantined reading ends a silence but its values go through
    /// no rule (except OVERLOAD with `count_quarantined`).
    pub fn observe(&self, state: &mut AssetState, sample: &Sample) -> Observation {
        let t = sample.event_time;
        let mut changes = Vec::new();
        if state.last_seen.is_none_or(|last| t > last) {
            self.advance_silence(state, t, &mut changes);
            self.end_gap(state, t, &mut changes);
            if state.asset_id != sample.asset_id {
                state.asset_id.clone_from(&sample.asset_id);
            }
            state.kind = Some(sample.kind);
            state.last_seen = Some(t);
            state.interval_ms = interval(sample);
            state.silence = Silence::Quiet;
        }
        let asset = Asset {
            id: &sample.asset_id,
            kind: sample.kind,
        };
        if !sample.quarantined {
            if state.last_trusted.is_none_or(|last| t > last) {
                let previous = state.last_trusted.replace(t);
                let run_break =
                    ms(self.rules.common(sample.kind).run_max_gap).saturating_add(interval(sample));
                match sample.kind {
                    AssetKind::Turbine => {
                        self.turbine(state, sample, asset, run_break, &mut changes)
                    }
                    AssetKind::Meter => {
                        self.meter(state, sample, asset, previous, run_break, &mut changes)
                    }
                }
                self.close_unconfigured(state, asset, t, &mut changes);
            }
        } else if sample.kind == AssetKind::Meter {
            self.quarantined_overload(state, sample, asset, &mut changes);
        }
        let active = state.active_faults();
        let deduction = self
            .rules
            .fault_deduction(sample.kind)
            .saturating_mul(i32::try_from(active.len()).unwrap_or(i32::MAX));
        Observation {
            changes,
            active,
            deduction,
        }
    }

    /// The event time at which the asset next wants [`Detector::advance`]:
    /// when its silence reaches the next gap threshold or `retire_after`.
    /// `None`: nothing is due until the next reading.
    pub fn next_due(&self, state: &AssetState) -> Option<i64> {
        let (Some(last), Some(kind)) = (state.last_seen, state.kind) else {
            return None;
        };
        let from = last.saturating_add(state.interval_ms);
        self.stages(kind)
            .into_iter()
            .filter_map(|(stage, offset)| Some((stage, offset?)))
            .find(|(stage, _)| *stage > state.silence)
            .map(|(_, offset)| from.saturating_add(offset))
    }

    /// Settles the asset's silence up to `watermark`: opens MISSING_SHORT at
    /// exactly the event time its threshold was reached (not the
    /// watermark's), escalates to MISSING_EXTENDED, or retires the asset.
    /// Calling it early, late or twice is harmless.
    pub fn advance(&self, state: &mut AssetState, watermark: i64) -> Vec<FaultChange> {
        let mut changes = Vec::new();
        self.advance_silence(state, watermark, &mut changes);
        changes
    }

    /// True when the state holds nothing: the runtime may delete it. That
    /// is the case once [`Detector::advance`] has retired a silent asset
    /// (`retire_after`), and stays so until the asset's next reading. The
    /// state is never idle before `advance` has closed its faults, so
    /// dropping it loses no event.
    pub fn is_idle(&self, state: &AssetState) -> bool {
        state.is_empty()
    }

    /// The silence thresholds of `kind`, in order, as offsets in ms from
    /// when the next reading was due; `None` where the rule is off.
    fn stages(&self, kind: AssetKind) -> [(Silence, Option<i64>); 3] {
        let c = self.rules.common(kind);
        [
            (Silence::Short, c.missing_short.map(|r| ms(r.after))),
            (Silence::Extended, c.missing_extended.map(|r| ms(r.after))),
            (Silence::Retired, c.retire_after.map(ms)),
        ]
    }

    fn advance_silence(&self, state: &mut AssetState, upto: i64, out: &mut Vec<FaultChange>) {
        let (Some(last), Some(kind)) = (state.last_seen, state.kind) else {
            return;
        };
        let from = last.saturating_add(state.interval_ms);
        let c = self.rules.common(kind);
        let id = state.asset_id.clone();
        let asset = Asset { id: &id, kind };
        for (stage, offset) in self.stages(kind) {
            let Some(offset) = offset else { continue };
            if stage <= state.silence {
                continue;
            }
            let at = from.saturating_add(offset);
            if upto < at {
                break;
            }
            match stage {
                Silence::Short => {
                    if let Some(rule) = c.missing_short {
                        open_gap(state, asset, FaultCode::MissingShort, rule, at, out);
                    }
                }
                Silence::Extended => {
                    if let Some(mut open) = take_open(state, FaultCode::MissingShort) {
                        open.revision += 1;
                        open.peak = (at - from) as f64 / HOUR_MS;
                        let detail = format!(
                            "escalated to MISSING_EXTENDED: no reading for {}",
                            span(at - from)
                        );
                        out.push(alarm::closed(
                            asset,
                            FaultCode::MissingShort,
                            &open,
                            at,
                            detail,
                        ));
                    }
                    if let Some(rule) = c.missing_extended {
                        open_gap(state, asset, FaultCode::MissingExtended, rule, at, out);
                    }
                }
                Silence::Retired => {
                    for code in FaultCode::ALL {
                        if let Some(mut open) = take_open(state, code) {
                            open.revision += 1;
                            let detail = format!(
                                "no reading for {}: the asset is taken as retired",
                                span(at - from)
                            );
                            out.push(alarm::closed(asset, code, &open, at, detail));
                        }
                    }
                    *state = AssetState::default();
                    return;
                }
                Silence::Quiet => {}
            }
            state.silence = stage;
        }
    }

    /// Closes the gap fault open before a reading at `t`.
    fn end_gap(&self, state: &mut AssetState, t: i64, out: &mut Vec<FaultChange>) {
        let (Some(last), Some(kind)) = (state.last_seen, state.kind) else {
            return;
        };
        let from = last.saturating_add(state.interval_ms);
        let id = state.asset_id.clone();
        let asset = Asset { id: &id, kind };
        for code in [FaultCode::MissingShort, FaultCode::MissingExtended] {
            let Some(mut open) = take_open(state, code) else {
                continue;
            };
            open.revision += 1;
            open.peak = (t - from) as f64 / HOUR_MS;
            // A reading behind the watermark, from inside a silence a timer
            // already took for a gap: the gap was shorter, but a fault
            // cannot close before it opened.
            let at = t.max(open.opened);
            let detail = if t >= open.opened {
                format!("a reading ended {} of silence", span(t - from))
            } else {
                format!(
                    "a late reading (behind the watermark) showed the silence lasted only {}",
                    span(t - from)
                )
            };
            out.push(alarm::closed(asset, code, &open, at, detail));
        }
    }

    fn turbine(
        &self,
        state: &mut AssetState,
        s: &Sample,
        asset: Asset<'_>,
        run_break: i64,
        out: &mut Vec<FaultChange>,
    ) {
        let r = &self.rules.turbine;
        let t = s.event_time;
        // Day sums of a meter this asset was registered as before.
        state.days.clear();
        for (code, rule) in self.rules.turbine_limits() {
            let Some(rule) = rule else { continue };
            let value = finite(match code {
                FaultCode::GearboxOverheat => s.gearbox_temperature_c,
                FaultCode::GeneratorOverheat => s.generator_temperature_c,
                FaultCode::HighVibration => s.vibration_ms2,
                FaultCode::LowOilPressure => s.oil_pressure_bar,
                _ => s.tower_lean_deg,
            });
            let above = code.higher_is_worse();
            let verdict = match value {
                None => Verdict::Unknown,
                Some(v) if (above && v > rule.threshold) || (!above && v < rule.threshold) => {
                    Verdict::Fault(v)
                }
                Some(v)
                    if (above && v < rule.clear_threshold)
                        || (!above && v > rule.clear_threshold) =>
                {
                    Verdict::Clear(v)
                }
                Some(_) => Verdict::Neither,
            };
            let spec = Spec {
                code,
                severity: rule.severity,
                maintenance: rule.maintenance_required,
                threshold: Some(rule.threshold),
                open: Hold::For(ms(rule.open_after)),
                close: Hold::For(ms(rule.close_after)),
                update_margin: rule.update_margin,
                escalation: rule.escalation.as_ref().map(|e| (e.threshold, e.severity)),
                run_break,
            };
            apply(state, asset, &spec, verdict, t, out);
        }

        let power = finite(s.power_kw);
        let wind = finite(s.wind_speed_ms);
        let cut_in = finite(s.cut_in_wind_speed_ms)
            .filter(|c| *c > 0.0)
            .unwrap_or(r.cut_in_wind_speed_ms);
        if let Some(rule) = &r.low_power_output {
            let rotor = finite(s.rotor_speed_rpm);
            let verdict = match power {
                None => Verdict::Unknown,
                Some(p)
                    if finite(s.rated_power_kw).is_some_and(|rated| rated <= rule.threshold_kw) =>
                {
                    Verdict::Clear(p)
                }
                Some(_) if rotor.is_none() && wind.is_none() => Verdict::Unknown,
                Some(p) => {
                    let running = rotor.is_some_and(|rpm| rpm > rule.rotor_turning_rpm)
                        || wind.is_some_and(|w| w >= cut_in && w < r.cut_out_wind_speed_ms);
                    if !running || p >= rule.clear_threshold_kw {
                        Verdict::Clear(p)
                    } else if p < rule.threshold_kw {
                        Verdict::Fault(p)
                    } else {
                        Verdict::Neither
                    }
                }
            };
            let spec = Spec {
                code: FaultCode::LowPowerOutput,
                severity: rule.severity,
                maintenance: rule.maintenance_required,
                threshold: Some(rule.threshold_kw),
                open: Hold::For(ms(rule.open_after)),
                close: Hold::For(ms(rule.close_after)),
                update_margin: rule.update_margin,
                escalation: None,
                run_break,
            };
            apply(state, asset, &spec, verdict, t, out);
        }
        if let Some(rule) = &r.underperformance {
            let verdict = match (power, finite(s.expected_power_kw), wind) {
                (Some(p), Some(expected), Some(w)) => {
                    if w > cut_in && expected >= rule.min_expected_kw && expected > 0.0 {
                        let ratio = p / expected;
                        if ratio < rule.threshold {
                            Verdict::Fault(ratio)
                        } else if ratio >= rule.clear_threshold {
                            Verdict::Clear(ratio)
                        } else {
                            Verdict::Neither
                        }
                    } else {
                        // Calm or near cut-in: no judgement, and no run
                        // of underperformance spans it.
                        Verdict::Neither
                    }
                }
                _ => Verdict::Unknown,
            };
            let spec = Spec {
                code: FaultCode::Underperformance,
                severity: rule.severity,
                maintenance: rule.maintenance_required,
                threshold: Some(rule.threshold),
                open: Hold::For(ms(rule.open_after)),
                close: Hold::For(ms(rule.close_after)),
                update_margin: rule.update_margin,
                escalation: None,
                run_break,
            };
            apply(state, asset, &spec, verdict, t, out);
        }
    }

    fn meter(
        &self,
        state: &mut AssetState,
        s: &Sample,
        asset: Asset<'_>,
        previous: Option<i64>,
        run_break: i64,
        out: &mut Vec<FaultChange>,
    ) {
        let m = &self.rules.meter;
        let t = s.event_time;
        let power = finite(s.power_kw);
        let zero_kw = m.zero_value.as_ref().map_or(0.0, |z| z.threshold_kw);

        if let Some(rule) = &m.zero_value {
            let verdict = match power {
                None => Verdict::Unknown,
                Some(p) if rule.exclude_vacant && s.vacant => Verdict::Clear(p),
                Some(p) if p <= rule.threshold_kw => Verdict::Fault(p),
                Some(p) => Verdict::Clear(p),
            };
            let spec = Spec {
                code: FaultCode::ZeroValue,
                severity: rule.severity,
                maintenance: rule.maintenance_required,
                threshold: Some(rule.threshold_kw),
                open: Hold::For(ms(rule.open_after)),
                close: Hold::For(ms(rule.close_after)),
                update_margin: None,
                escalation: None,
                run_break,
            };
            apply(state, asset, &spec, verdict, t, out);
        }

        if let (Some(rule), Some(p)) = (&m.stuck_value, power) {
            let code = FaultCode::StuckValue;
            let track = state.tracks.get(&code);
            let stuck_at = track.and_then(|tr| tr.open.as_ref()).map(|o| o.trigger);
            let candidate = track.and_then(|tr| tr.pending.as_ref()).map(|r| r.worst);
            let zero = p <= zero_kw;
            let verdict = match stuck_at {
                Some(v) if p == v => Verdict::Fault(p),
                Some(_) => Verdict::Clear(p),
                None if !zero && candidate == Some(p) => Verdict::Fault(p),
                None => Verdict::Neither,
            };
            let spec = Spec {
                code,
                severity: rule.severity,
                maintenance: rule.maintenance_required,
                threshold: None,
                open: Hold::For(ms(rule.open_after)),
                close: Hold::For(ms(rule.close_after)),
                update_margin: None,
                escalation: None,
                run_break,
            };
            apply(state, asset, &spec, verdict, t, out);
            // A new non-zero value starts the next candidate run.
            if !zero && !state.is_open(code) {
                let track = state.tracks.entry(code).or_default();
                track.pending.get_or_insert(Run {
                    since: t,
                    last: t,
                    count: 1,
                    worst: p,
                });
            }
        }

        if let Some(rule) = &m.overload {
            let limit = overload_limit(rule, s);
            let verdict = match power {
                None => Verdict::Unknown,
                Some(p) if p > limit => Verdict::Fault(p),
                Some(p) if p < limit * rule.clear_ratio => Verdict::Clear(p),
                Some(_) => Verdict::Neither,
            };
            apply(
                state,
                asset,
                &overload_spec(rule, limit, run_break),
                verdict,
                t,
                out,
            );
        }

        if let Some(rule) = &m.low_variance {
            let today = day_of(t);
            if previous.is_none_or(|p| day_of(p) < today) {
                let verdict = match variance::judge(&state.days, rule, today) {
                    // One cause, one fault: a stuck meter's CV is 0.
                    _ if state.is_open(FaultCode::StuckValue) => Verdict::Unknown,
                    None => Verdict::Unknown,
                    Some(j) if j.cv < rule.threshold => Verdict::Fault(j.cv),
                    Some(j) if j.cv >= rule.clear_threshold => Verdict::Clear(j.cv),
                    Some(_) => Verdict::Neither,
                };
                let spec = Spec {
                    code: FaultCode::LowVariance,
                    severity: rule.severity,
                    maintenance: rule.maintenance_required,
                    threshold: Some(rule.threshold),
                    open: Hold::For(0),
                    close: Hold::For(0),
                    update_margin: None,
                    escalation: None,
                    run_break,
                };
                apply(state, asset, &spec, verdict, t, out);
            }
            if let Some(p) = power {
                variance::add(&mut state.days, rule, t, p);
            }
        } else {
            state.days.clear();
        }
    }

    /// A quarantined meter reading above the overload limit counts towards
    /// OVERLOAD when `count_quarantined` is on; nothing else of it is used.
    fn quarantined_overload(
        &self,
        state: &mut AssetState,
        s: &Sample,
        asset: Asset<'_>,
        out: &mut Vec<FaultChange>,
    ) {
        let Some(rule) = self
            .rules
            .meter
            .overload
            .as_ref()
            .filter(|r| r.count_quarantined)
        else {
            return;
        };
        let t = s.event_time;
        let limit = overload_limit(rule, s);
        let Some(p) = finite(s.power_kw).filter(|p| *p > limit) else {
            return;
        };
        let behind_run = state
            .tracks
            .get(&FaultCode::Overload)
            .and_then(|tr| tr.pending.as_ref())
            .is_some_and(|r| t <= r.last);
        if behind_run || state.last_trusted.is_some_and(|last| t <= last) {
            return;
        }
        let run_break = ms(self.rules.meter.run_max_gap).saturating_add(interval(s));
        apply(
            state,
            asset,
            &overload_spec(rule, limit, run_break),
            Verdict::Fault(p),
            t,
            out,
        );
    }

    /// Closes faults whose rule is gone from the rules file (or does not
    /// apply to the asset's kind any more) and forgets their runs.
    fn close_unconfigured(
        &self,
        state: &mut AssetState,
        asset: Asset<'_>,
        t: i64,
        out: &mut Vec<FaultChange>,
    ) {
        let configured = |code: &FaultCode| self.rules.enabled(asset.kind, *code);
        if state.tracks.keys().all(configured) {
            return;
        }
        let gone: Vec<FaultCode> = state
            .tracks
            .keys()
            .copied()
            .filter(|code| !configured(code))
            .collect();
        for code in gone {
            if let Some(mut open) = take_open(state, code) {
                open.revision += 1;
                let detail = format!("the rules no longer check {code} for this asset");
                out.push(alarm::closed(asset, code, &open, t, detail));
            }
            state.tracks.remove(&code);
        }
    }
}

/// Runs `verdict` through the rule's track, keeping no empty track.
fn apply(
    state: &mut AssetState,
    asset: Asset<'_>,
    spec: &Spec,
    verdict: Verdict,
    t: i64,
    out: &mut Vec<FaultChange>,
) {
    let at_rest = !state.tracks.contains_key(&spec.code);
    match verdict {
        Verdict::Unknown => return,
        // Nothing building up, nothing open: nothing to clear.
        Verdict::Neither | Verdict::Clear(_) if at_rest => return,
        _ => {}
    }
    let track = state.tracks.entry(spec.code).or_default();
    step(asset, track, spec, verdict, t, out);
    if track.is_empty() {
        state.tracks.remove(&spec.code);
    }
}

fn open_gap(
    state: &mut AssetState,
    asset: Asset<'_>,
    code: FaultCode,
    rule: &GapRule,
    at: i64,
    out: &mut Vec<FaultChange>,
) {
    let hours = ms(rule.after) as f64 / HOUR_MS;
    let open = OpenFault {
        opened: at,
        severity: rule.severity,
        maintenance: rule.maintenance_required,
        revision: 0,
        trigger: hours,
        peak: hours,
        reported: hours,
        threshold: Some(hours),
    };
    let detail = format!("no reading for {}", span(ms(rule.after)));
    out.push(alarm::change(
        asset,
        code,
        &open,
        FaultStatus::Opened,
        at,
        detail,
    ));
    state.tracks.entry(code).or_default().open = Some(open);
}

/// Removes and returns the open fault of `code`, dropping its track.
fn take_open(state: &mut AssetState, code: FaultCode) -> Option<OpenFault> {
    let open = state.tracks.get_mut(&code)?.open.take();
    if open.is_some() {
        state.tracks.remove(&code);
    }
    open
}

fn overload_limit(rule: &crate::rules::OverloadRule, s: &Sample) -> f64 {
    finite(s.contracted_capacity_kw)
        .filter(|c| rule.use_contracted_capacity && *c > 0.0)
        .unwrap_or(rule.threshold_kw)
}

fn overload_spec(rule: &crate::rules::OverloadRule, limit: f64, run_break: i64) -> Spec {
    Spec {
        code: FaultCode::Overload,
        severity: rule.severity,
        maintenance: rule.maintenance_required,
        threshold: Some(limit),
        open: Hold::Readings(rule.open_after_readings),
        close: Hold::Readings(rule.close_after_readings),
        update_margin: rule.update_margin,
        escalation: None,
        run_break,
    }
}

/// The sample's declared spacing in ms, within 0 and a day.
fn interval(s: &Sample) -> i64 {
    s.interval_ms
        .filter(|i| *i > 0)
        .map_or(0, |i| i.min(MAX_INTERVAL_MS))
}
