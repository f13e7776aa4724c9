//! The alarm lifecycle every value rule shares, as in a SCADA alarm list:
//! a condition must hold for a while before the fault opens, the open fault
//! follows its peak, and it closes only after values have been clear (past
//! the hysteresis threshold) for a while.
//!
//! A rule reduces each reading to a [`Verdict`]; [`step`] moves the rule's
//! [`Track`] and reports the events. Keeping the lifecycle in one place
//! means every rule flaps, updates and closes the same way.

use crate::fault::{num, span, AssetKind, FaultChange, FaultCode, FaultStatus, Severity};
use crate::state::{OpenFault, Run, Track};

/// What one reading says about one rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// The fault condition holds, with this value.
    Fault(f64),
    /// The clear condition holds (past the hysteresis threshold).
    Clear(f64),
    /// Neither: between threshold and clear threshold, or the rule cannot
    /// judge (e.g. no wind to underperform in). Breaks both runs, closes nothing.
    Neither,
    /// The reading has nothing to say (value missing or untrusted): no effect.
    Unknown,
}

/// How long a condition must hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Hold {
    /// Event time from the run's first reading to the current one, ms.
    For(i64),
    /// Readings in the run.
    Readings(u32),
}

impl Hold {
    fn met(self, run: &Run, t: i64) -> bool {
        match self {
            Hold::For(d) => t - run.since >= d,
            Hold::Readings(n) => run.count >= n,
        }
    }

    /// ` for 48h`, ` for 6 readings in a row`, or nothing for at once.
    fn phrase(self) -> String {
        match self {
            Hold::For(0) | Hold::Readings(1) => String::new(),
            Hold::For(d) => format!(" for {}", span(d)),
            Hold::Readings(n) => format!(" for {n} readings in a row"),
        }
    }
}

/// One rule's parameters as the lifecycle needs them.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub code: FaultCode,
    pub severity: Severity,
    pub maintenance: bool,
    /// The limit reported with the fault (none for STUCK_VALUE).
    pub threshold: Option<f64>,
    pub open: Hold,
    pub close: Hold,
    pub update_margin: Option<f64>,
    /// A harder limit and the severity it raises an open fault to.
    pub escalation: Option<(f64, Severity)>,
    /// A silence this long between two readings of a run restarts it.
    pub run_break: i64,
}

impl Spec {
    /// True when `a` is a worse value than `b` for this rule.
    fn worse(&self, a: f64, b: f64) -> bool {
        if self.code.higher_is_worse() {
            a > b
        } else {
            a < b
        }
    }

    /// How much worse `a` is than `b` (negative when better).
    fn excess(&self, a: f64, b: f64) -> f64 {
        if self.code.higher_is_worse() {
            a - b
        } else {
            b - a
        }
    }
}

/// The asset events are about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asset<'a> {
    pub id: &'a str,
    pub kind: AssetKind,
}

/// Applies `verdict` of the reading at `t` to `track`, pushing any event.
pub(crate) fn step(
    asset: Asset<'_>,
    track: &mut Track,
    spec: &Spec,
    verdict: Verdict,
    t: i64,
    out: &mut Vec<FaultChange>,
) {
    match verdict {
        Verdict::Unknown => {}
        Verdict::Neither => {
            track.pending = None;
            track.clearing = None;
        }
        Verdict::Fault(v) => {
            track.clearing = None;
            if let Some(open) = track.open.as_mut() {
                if spec.worse(v, open.peak) {
                    open.peak = v;
                }
                let mut why = Vec::new();
                if let Some((limit, severity)) = spec.escalation {
                    if open.severity < severity && spec.worse(v, limit) {
                        open.severity = severity;
                        why.push(format!(
                            "escalated to {severity}: {} {}{unit} beyond {}{unit}",
                            spec.code.metric(),
                            num(v),
                            num(limit),
                            unit = spec.code.unit()
                        ));
                    }
                }
                if let Some(margin) = spec.update_margin {
                    if spec.excess(open.peak, open.reported) >= margin {
                        why.push(format!(
                            "new peak {}{unit} (last published {}{unit})",
                            num(open.peak),
                            num(open.reported),
                            unit = spec.code.unit()
                        ));
                    }
                }
                if !why.is_empty() {
                    open.reported = open.peak;
                    open.revision += 1;
                    out.push(change(
                        asset,
                        spec.code,
                        open,
                        FaultStatus::Updated,
                        t,
                        why.join("; "),
                    ));
                }
                return;
            }
            let run = extend(&mut track.pending, t, v, spec);
            if !spec.open.met(run, t) {
                return;
            }
            let peak = run.worst;
            let severity = match spec.escalation {
                Some((limit, severity)) if spec.worse(peak, limit) => severity,
                _ => spec.severity,
            };
            let detail = opened_detail(spec, v, run, t);
            let open = OpenFault {
                opened: t,
                severity,
                maintenance: spec.maintenance,
                revision: 0,
                trigger: v,
                peak,
                reported: peak,
                threshold: spec.threshold,
            };
            out.push(change(
                asset,
                spec.code,
                &open,
                FaultStatus::Opened,
                t,
                detail,
            ));
            track.pending = None;
            track.open = Some(open);
        }
        Verdict::Clear(v) => {
            track.pending = None;
            let Some(open) = track.open.as_mut() else {
                track.clearing = None;
                return;
            };
            let run = extend(&mut track.clearing, t, v, spec);
            if spec.close.met(run, t) {
                open.revision += 1;
                let detail = format!(
                    "cleared{}: {} {}{unit}; peak {}{unit}",
                    spec.close.phrase(),
                    spec.code.metric(),
                    num(v),
                    num(open.peak),
                    unit = spec.code.unit()
                );
                out.push(closed(asset, spec.code, open, t, detail));
                track.open = None;
                track.clearing = None;
            }
        }
    }
}

/// Adds the reading at `t` to `run`, restarting it after a silence of
/// `spec.run_break` or more.
fn extend<'r>(run: &'r mut Option<Run>, t: i64, v: f64, spec: &Spec) -> &'r Run {
    if run.as_ref().is_some_and(|r| t - r.last >= spec.run_break) {
        *run = None;
    }
    let r = run.get_or_insert(Run {
        since: t,
        last: t,
        count: 0,
        worst: v,
    });
    r.last = t;
    r.count = r.count.saturating_add(1);
    if spec.worse(v, r.worst) {
        r.worst = v;
    }
    r
}

fn opened_detail(spec: &Spec, v: f64, run: &Run, t: i64) -> String {
    let code = spec.code;
    let unit = code.unit();
    let held = match spec.open {
        Hold::For(0) | Hold::Readings(1) => String::new(),
        Hold::For(_) => format!(" for {}", span(t - run.since)),
        Hold::Readings(_) => format!(" for {} readings in a row", run.count),
    };
    let thr = spec.threshold.map(num).unwrap_or_default();
    match code {
        FaultCode::StuckValue => format!("power unchanged at {}{unit}{held}", num(v)),
        FaultCode::ZeroValue => format!("power at or below {thr}{unit}{held}"),
        FaultCode::Underperformance => format!(
            "power at {:.0} % of the power curve's expectation, below {:.0} %{held}",
            v * 100.0,
            spec.threshold.unwrap_or_default() * 100.0
        ),
        FaultCode::LowPowerOutput => {
            format!("running at {}{unit}, below {thr}{unit}{held}", num(v))
        }
        FaultCode::LowVariance => format!(
            "coefficient of variation of power {} over the window, below {thr}",
            num(v)
        ),
        _ => {
            let op = if code.higher_is_worse() { ">" } else { "<" };
            format!("{} {}{unit} {op} {thr}{unit}{held}", code.metric(), num(v))
        }
    }
}

/// An event about `open` (already at its new revision) of `code`.
pub(crate) fn change(
    asset: Asset<'_>,
    code: FaultCode,
    open: &OpenFault,
    status: FaultStatus,
    updated: i64,
    detail: String,
) -> FaultChange {
    FaultChange {
        fault_id: crate::fault::fault_id(asset.id, code, open.opened),
        asset_id: asset.id.to_string(),
        asset_kind: asset.kind,
        code,
        severity: open.severity,
        status,
        maintenance_required: open.maintenance,
        opened_time: open.opened,
        updated_time: updated,
        closed_time: None,
        revision: open.revision,
        metric: Some(code.metric().to_string()),
        trigger_value: Some(open.trigger),
        peak_value: Some(open.peak),
        threshold: open.threshold,
        detail,
    }
}

/// The CLOSED event of `open` (already at its new revision) at `at`.
pub(crate) fn closed(
    asset: Asset<'_>,
    code: FaultCode,
    open: &OpenFault,
    at: i64,
    detail: String,
) -> FaultChange {
    let mut c = change(asset, code, open, FaultStatus::Closed, at, detail);
    c.closed_time = Some(at);
    c
}
