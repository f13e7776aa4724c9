//! Adapts the [`crate::Detector`] to the runtime loop: builds a
//! [`Sample`] from each enriched reading, turns [`FaultChange`]s into
//! fault events, annotates and re-scores the reading, and keeps the asset's
//! state durable through the runtime's changelog and timers.

use async_trait::async_trait;
use gale_model::{
    ActiveFault as ModelFault, AssetKind as ModelKind, CheckedReading, EnrichedReading, FaultEvent,
    FaultStatus as ModelStatus, QualityTier, ScoredReading, Severity as ModelSeverity,
    QUARANTINED_BY,
};
use gale_runtime::binary::AvroRecord;
use gale_runtime::pipeline::{Emit, ProcessError, Processor, RecordMeta};
use gale_runtime::state::{Slot, StateValue};
use serde::{Deserialize, Serialize};

use crate::{AssetKind, AssetState, Detector, FaultChange, FaultStatus, Sample, Severity};

/// Output: every reading, annotated.
pub const CHECKED: &str = "checked";
/// Output: fault events.
pub const FAULTS: &str = "faults";
/// Output: readings the fault deduction pushed below the standard tier.
pub const QUARANTINE: &str = "quarantine";

/// What the stage keeps per asset: the rules' state and the asset's site,
/// so events a timer emits (no reading in hand) still name it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// Site of the asset's latest reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_id: Option<String>,
    /// The rules' state.
    #[serde(default)]
    pub rules: AssetState,
    /// Trace context of the asset's latest reading, kept only while spans
    /// are exported: a fault a timer raises (a silence) links to it, the
    /// last thing the asset said, instead of starting an unrelated trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trace: Option<gale_runtime::telemetry::TraceParent>,
}

impl StateValue for Persisted {}

/// One record of any of the three outputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Output {
    /// To [`CHECKED`].
    Checked(Box<CheckedReading>),
    /// To [`FAULTS`].
    Fault(Box<FaultEvent>),
    /// To [`QUARANTINE`].
    Quarantine(Box<ScoredReading>),
}

/// The checked readings (every record) take the hand-written encoding of
/// `gale-model`; fault events and quarantined copies are rare and take the
/// general one.
impl AvroRecord for Output {
    fn fast_schemas() -> &'static [gale_runtime::schema::SchemaFile] {
        &[gale_model::CHECKED_READING]
    }

    fn write_fast(&self, out: &mut Vec<u8>) -> bool {
        match self {
            Output::Checked(c) => c.write_fast(out),
            // Not a checked reading: the general encoder says what is wrong.
            Output::Fault(_) | Output::Quarantine(_) => false,
        }
    }
}

/// Score thresholds of the tiers (validate's `scoring` section).
#[derive(Debug, Clone, Copy)]
pub struct Tiers {
    /// At or above: premium.
    pub premium_min: i32,
    /// At or above: standard; below: quarantine.
    pub standard_min: i32,
}

/// The stage's processor.
pub struct DetectProcessor {
    detector: Detector,
    tiers: Tiers,
}

impl DetectProcessor {
    /// A processor applying `detector`.
    pub fn new(detector: Detector, tiers: Tiers) -> Self {
        DetectProcessor { detector, tiers }
    }
}

fn sample_kind(e: &EnrichedReading) -> AssetKind {
    match e.reading.asset_kind {
        ModelKind::Turbine => AssetKind::Turbine,
        ModelKind::Meter => AssetKind::Meter,
    }
}

/// The rules' view of a reading.
pub fn sample(e: &EnrichedReading) -> Sample {
    let r = &e.reading;
    let kind = sample_kind(e);
    let mut s = Sample::new(r.asset_id.clone(), kind, r.event_time);
    s.interval_ms = r.interval_ms;
    s.power_kw = r.power_kw;
    s.wind_speed_ms = r.wind_speed_ms;
    s.rotor_speed_rpm = r.rotor_speed_rpm;
    s.gearbox_temperature_c = r.gearbox_temperature_c;
    s.generator_temperature_c = r.generator_temperature_c;
    s.vibration_ms2 = r.vibration_ms2;
    s.oil_pressure_bar = r.oil_pressure_bar;
    s.tower_lean_deg = r.tower_lean_deg;
    s.ambient_temperature_c = r.ambient_temperature_c;
    s.expected_power_kw = e.expected_power_kw;
    s.cut_in_wind_speed_ms = e.cut_in_wind_speed_ms;
    s.rated_power_kw = e.rated_power_kw;
    s.contracted_capacity_kw = e.contracted_capacity_kw;
    s.vacant = e.vacant;
    s.quarantined = r.quality_tier == QualityTier::Quarantine;
    s
}

fn severity(s: Severity) -> ModelSeverity {
    match s {
        Severity::Info => ModelSeverity::Info,
        Severity::Warning => ModelSeverity::Warning,
        Severity::Critical => ModelSeverity::Critical,
    }
}

/// The fault event of `change`, counted in `gale_fault_events_total`
/// (status, severity, code: a bounded set) for dashboards and alerts.
pub fn event(
    change: FaultChange,
    site_id: Option<String>,
    traceparent: Option<&str>,
) -> FaultEvent {
    let status = match change.status {
        FaultStatus::Opened => "opened",
        FaultStatus::Updated => "updated",
        FaultStatus::Closed => "closed",
    };
    metrics::counter!(
        "gale_fault_events_total",
        "stage" => "detect-faults",
        "status" => status,
        "severity" => severity(change.severity).as_str(),
        "code" => change.code.as_str()
    )
    .increment(1);
    FaultEvent {
        event_id: format!("{}:{}", change.fault_id, change.revision),
        fault_id: change.fault_id,
        asset_id: change.asset_id,
        asset_kind: match change.asset_kind {
            AssetKind::Turbine => ModelKind::Turbine,
            AssetKind::Meter => ModelKind::Meter,
        },
        site_id,
        code: change.code.as_str().to_string(),
        severity: severity(change.severity),
        status: match change.status {
            FaultStatus::Opened => ModelStatus::Opened,
            FaultStatus::Updated => ModelStatus::Updated,
            FaultStatus::Closed => ModelStatus::Closed,
        },
        maintenance_required: change.maintenance_required,
        opened_time: change.opened_time,
        updated_time: change.updated_time,
        closed_time: change.closed_time,
        revision: i32::try_from(change.revision).unwrap_or(i32::MAX),
        metric: change.metric,
        trigger_value: change.trigger_value,
        peak_value: change.peak_value,
        threshold: change.threshold,
        detail: change.detail,
        traceparent: traceparent.map(str::to_string),
    }
}

impl Tiers {
    /// The tier of `score`.
    pub fn of(&self, score: i32) -> QualityTier {
        if score >= self.premium_min {
            QualityTier::Premium
        } else if score >= self.standard_min {
            QualityTier::Standard
        } else {
            QualityTier::Quarantine
        }
    }
}

#[async_trait]
impl Processor for DetectProcessor {
    type Input = EnrichedReading;
    type Output = Output;
    type State = Persisted;

    async fn process(
        &mut self,
        input: &EnrichedReading,
        meta: &RecordMeta<'_>,
        state: &mut Slot<Persisted>,
    ) -> Result<Vec<Emit<Output>>, ProcessError> {
        let mut persisted = match state.get_mut() {
            Some(p) => std::mem::take(p),
            None => Persisted::default(),
        };
        if input.reading.site_id.is_some() {
            persisted.site_id.clone_from(&input.reading.site_id);
        }
        if gale_runtime::telemetry::spans_exported() {
            persisted.last_trace = meta
                .traceparent
                .and_then(gale_runtime::telemetry::TraceParent::parse);
        }
        let observation = self.detector.observe(&mut persisted.rules, &sample(input));
        let key = &input.reading.asset_id;
        let mut out = Vec::with_capacity(observation.changes.len() + 2);
        for change in observation.changes {
            out.push(Emit {
                output: FAULTS,
                key: key.clone(),
                value: Output::Fault(Box::new(event(
                    change,
                    persisted.site_id.clone(),
                    meta.traceparent,
                ))),
                links: Vec::new(),
            });
        }
        // INFO faults (LOW_POWER_OUTPUT) say something about the asset,
        // not about the reading's quality: they deduct nothing.
        let deducting = observation
            .active
            .iter()
            .filter(|f| f.severity > Severity::Info)
            .count();
        let kind = sample_kind(input);
        let deduction = self
            .detector
            .rules()
            .fault_deduction(kind)
            .saturating_mul(i32::try_from(deducting).unwrap_or(i32::MAX));
        let mut checked = CheckedReading {
            enriched: input.clone(),
            faults: observation
                .active
                .iter()
                .map(|f| ModelFault {
                    fault_id: f.fault_id.clone(),
                    code: f.code.as_str().to_string(),
                    severity: severity(f.severity).as_str().to_string(),
                })
                .collect(),
            fault_deduction: deduction,
        };
        let r = &mut checked.enriched.reading;
        let was_quarantined = r.quality_tier == QualityTier::Quarantine;
        r.quality_score = (r.quality_score - deduction).max(0);
        if !was_quarantined {
            r.quality_tier = self.tiers.of(r.quality_score);
        }
        if r.quality_tier == QualityTier::Quarantine && !was_quarantined {
            let mut q = r.clone();
            q.attributes
                .insert(QUARANTINED_BY.into(), "detect-faults".into());
            q.attributes.insert(
                "gale.faults".into(),
                checked
                    .faults
                    .iter()
                    .map(|f| f.code.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push(Emit {
                output: QUARANTINE,
                key: key.clone(),
                value: Output::Quarantine(Box::new(q)),
                links: Vec::new(),
            });
        }
        out.push(Emit {
            output: CHECKED,
            key: key.clone(),
            value: Output::Checked(Box::new(checked)),
            links: Vec::new(),
        });
        state.set(persisted);
        Ok(out)
    }

    fn event_time_ms(&self, input: &EnrichedReading) -> Option<i64> {
        Some(input.reading.event_time)
    }

    fn expired(&self, state: &Persisted, _watermark: i64) -> bool {
        self.detector.is_idle(&state.rules)
    }

    fn timer(&self, state: &Persisted) -> Option<i64> {
        self.detector.next_due(&state.rules)
    }

    async fn on_timer(
        &mut self,
        key: &str,
        state: &mut Slot<Persisted>,
        watermark: i64,
    ) -> Vec<Emit<Output>> {
        let Some(persisted) = state.get_mut() else {
            return Vec::new();
        };
        let changes = self.detector.advance(&mut persisted.rules, watermark);
        let site = persisted.site_id.clone();
        let last = persisted.last_trace;
        changes
            .into_iter()
            .map(|c| Emit {
                output: FAULTS,
                key: key.to_string(),
                value: Output::Fault(Box::new(event(c, site.clone(), None))),
                links: last.into_iter().collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rules;
    use gale_model::AssetKind as Kind;

    const STEP: i64 = 600_000;

    fn reading(i: i64, gearbox: f64) -> EnrichedReading {
        let mut r = ScoredReading::new(format!("e{i}"), "T1", Kind::Turbine, i * STEP);
        r.site_id = Some("S1".into());
        r.interval_ms = Some(STEP);
        r.wind_speed_ms = Some(9.0);
        r.power_kw = Some(900.0);
        r.gearbox_temperature_c = Some(gearbox);
        r.quality_score = 95;
        r.quality_tier = QualityTier::Premium;
        EnrichedReading::bare(r)
    }

    fn meta() -> RecordMeta<'static> {
        RecordMeta {
            topic: "t",
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            attempt: 1,
            watermark: None,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        }
    }

    fn processor(standard_min: i32) -> DetectProcessor {
        DetectProcessor::new(
            Detector::new(Rules::preset()),
            Tiers {
                premium_min: 90,
                standard_min,
            },
        )
    }

    #[tokio::test]
    async fn a_fault_is_an_event_an_annotation_and_a_deduction() {
        let mut p = processor(70);
        let mut slot = Slot::new(None);
        let out = p
            .process(&reading(0, 60.0), &meta(), &mut slot)
            .await
            .unwrap();
        assert_eq!(out.len(), 1);
        let out = p
            .process(&reading(1, 85.0), &meta(), &mut slot)
            .await
            .unwrap();
        let names: Vec<&str> = out.iter().map(|e| e.output).collect();
        assert_eq!(names, vec![FAULTS, QUARANTINE, CHECKED]);
        let Output::Fault(f) = &out[0].value else {
            panic!()
        };
        assert_eq!(f.code, "GEARBOX_OVERHEAT");
        assert_eq!(f.status, ModelStatus::Opened);
        assert_eq!(f.site_id.as_deref(), Some("S1"));
        assert_eq!(f.event_id, format!("{}:0", f.fault_id));
        assert!(f.traceparent.is_some());
        let Output::Checked(c) = &out[2].value else {
            panic!()
        };
        assert_eq!(c.faults.len(), 1);
        assert_eq!(c.fault_deduction, 30);
        assert_eq!(c.enriched.reading.quality_score, 65);
        assert_eq!(c.enriched.reading.quality_tier, QualityTier::Quarantine);
        // The state survives a round trip through the changelog's JSON.
        let stored = serde_json::to_vec(slot.get().unwrap()).unwrap();
        let back: Persisted = serde_json::from_slice(&stored).unwrap();
        assert_eq!(&back, slot.get().unwrap());
    }

    #[tokio::test]
    async fn a_reading_pushed_below_standard_also_goes_to_quarantine() {
        let mut p = processor(70);
        let mut slot = Slot::new(None);
        p.process(&reading(0, 60.0), &meta(), &mut slot)
            .await
            .unwrap();
        let out = p
            .process(&reading(1, 85.0), &meta(), &mut slot)
            .await
            .unwrap();
        // 95 - 30 = 65 < 70: quarantined as well as checked.
        let q = out.iter().find(|e| e.output == QUARANTINE).unwrap();
        let Output::Quarantine(q) = &q.value else {
            panic!()
        };
        assert_eq!(
            q.attributes.get(QUARANTINED_BY).map(String::as_str),
            Some("detect-faults")
        );
        assert_eq!(
            q.attributes.get("gale.faults").map(String::as_str),
            Some("GEARBOX_OVERHEAT")
        );
        let mut p = processor(60);
        let mut slot = Slot::new(None);
        p.process(&reading(0, 60.0), &meta(), &mut slot)
            .await
            .unwrap();
        let out = p
            .process(&reading(1, 85.0), &meta(), &mut slot)
            .await
            .unwrap();
        assert!(!out.iter().any(|e| e.output == QUARANTINE));
    }

    #[tokio::test]
    async fn a_silent_asset_is_noticed_by_its_timer() {
        let mut p = processor(70);
        let mut slot = Slot::new(None);
        p.process(&reading(0, 60.0), &meta(), &mut slot)
            .await
            .unwrap();
        let due = p.timer(slot.get().unwrap()).expect("a timer is set");
        assert_eq!(due, STEP + 4 * 3_600_000);
        assert!(p.on_timer("T1", &mut slot, due - 1).await.is_empty());
        let out = p.on_timer("T1", &mut slot, due).await;
        assert_eq!(out.len(), 1);
        let Output::Fault(f) = &out[0].value else {
            panic!()
        };
        assert_eq!((f.code.as_str(), f.opened_time), ("MISSING_SHORT", due));
        assert_eq!(f.site_id.as_deref(), Some("S1"), "the site is remembered");
        assert!(p.timer(slot.get().unwrap()).unwrap() > due);
    }
}
