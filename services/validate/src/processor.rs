//! Adapts the validation rules to the runtime's processing loop.

use std::time::Duration;

use async_trait::async_trait;
use gale_model::{AssetKind, Metric, QualityTier, RawReading, ScoredReading};
use gale_runtime::pipeline::{Emit, ProcessError, Processor, RecordMeta};
use gale_runtime::state::Slot;

use crate::assets::AssetDirectory;
use crate::history::{AssetHistory, Lookup};
use crate::rules::{self, Mode, RuleSet};

/// Output name of validated readings.
pub const VALIDATED: &str = "validated";
/// Output name of quarantined readings.
pub const QUARANTINE: &str = "quarantine";

/// How much of each asset's past validate remembers.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Readings remembered per asset.
    pub size: usize,
    /// An asset's history is dropped once the watermark is this far past
    /// its newest reading.
    pub window: Duration,
}

/// The validate stage's processor.
pub struct ValidateProcessor {
    rules: RuleSet,
    mode: Mode,
    assets: AssetDirectory,
    memory: Memory,
    /// `memory.window` in ms.
    window_ms: i64,
    /// Rate-of-change metrics per asset kind (the values a history keeps).
    turbine_metrics: Vec<Metric>,
    meter_metrics: Vec<Metric>,
}

impl ValidateProcessor {
    /// A processor applying `rules` in `mode` with `assets`.
    pub fn new(rules: RuleSet, mode: Mode, assets: AssetDirectory, memory: Memory) -> Self {
        let metrics = |kind| {
            rules
                .preset(kind)
                .rate_of_change
                .as_ref()
                .map(|r| r.metrics.iter().map(|m| m.0).collect())
                .unwrap_or_default()
        };
        ValidateProcessor {
            turbine_metrics: metrics(AssetKind::Turbine),
            meter_metrics: metrics(AssetKind::Meter),
            window_ms: i64::try_from(memory.window.as_millis()).unwrap_or(i64::MAX),
            memory,
            rules,
            mode,
            assets,
        }
    }
}

#[async_trait]
impl Processor for ValidateProcessor {
    type Input = RawReading;
    type Output = ScoredReading;
    type State = AssetHistory;

    async fn process(
        &mut self,
        raw: &RawReading,
        _meta: &RecordMeta<'_>,
        history: &mut Slot<AssetHistory>,
    ) -> Result<Vec<Emit<ScoredReading>>, ProcessError> {
        let asset = match self.assets.get(&raw.asset_id).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Err(ProcessError::Reject {
                    class: "unknown_asset",
                    message: format!("asset {:?} is not in the asset registry", raw.asset_id),
                })
            }
            Err(e) => {
                return Err(ProcessError::Outage {
                    dependency: "database",
                    message: e.0,
                })
            }
        };
        let (baseline, same_time) = match history
            .get()
            .map(|h| h.lookup(&raw.event_id, raw.event_time))
        {
            Some(Lookup::Repeat) => {
                // Emitted the first time it came; a repeat adds nothing.
                metrics::counter!("gale_validate_repeats_total").increment(1);
                return Ok(Vec::new());
            }
            Some(Lookup::Fresh {
                baseline,
                same_time,
            }) => (baseline, same_time),
            None => (None, false),
        };
        // The validation time is a record of when, not an input: no rule reads it.
        let now = chrono::Utc::now().timestamp_millis();
        let mut scored =
            rules::evaluate(raw, asset, baseline.as_ref(), &self.rules, self.mode, now).map_err(
                |r| ProcessError::Reject {
                    class: r.class,
                    message: r.message,
                },
            )?;
        if same_time {
            rules::mark_duplicate_time(&mut scored, &self.rules);
        }
        let keep = match scored.asset_kind {
            AssetKind::Turbine => &self.turbine_metrics,
            AssetKind::Meter => &self.meter_metrics,
        };
        match history.get_mut() {
            Some(h) => h.record(&scored, keep, self.memory.size),
            None => {
                let mut h = AssetHistory::default();
                h.record(&scored, keep, self.memory.size);
                history.set(h);
            }
        }
        let output = if scored.quality_tier == QualityTier::Quarantine {
            QUARANTINE
        } else {
            VALIDATED
        };
        Ok(vec![Emit {
            output,
            key: raw.asset_id.clone(),
            value: scored,
            links: Vec::new(),
        }])
    }

    fn event_time_ms(&self, input: &RawReading) -> Option<i64> {
        // Only plausible times: the runtime subtracts this from the clock.
        rules::plausible_event_time(input.event_time).then_some(input.event_time)
    }

    fn watermark_time_ms(&self, input: &RawReading) -> Option<i64> {
        // A reading from the future must not move time on for the others.
        let tolerance =
            i64::try_from(self.rules.timestamp_tolerance.as_millis()).unwrap_or(i64::MAX);
        let sound = rules::plausible_event_time(input.event_time)
            && input.event_time <= input.received_time.saturating_add(tolerance);
        sound.then_some(input.event_time)
    }

    fn expired(&self, history: &AssetHistory, watermark: i64) -> bool {
        history
            .newest()
            .is_none_or(|t| t < watermark.saturating_sub(self.window_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::Asset;
    use gale_model::{FlagCode, IngestChannel, Measurement};
    use std::collections::HashMap;

    const HOUR: i64 = 3_600_000;

    /// The processor with its per-asset state, as the runtime hands it over.
    struct Harness {
        p: ValidateProcessor,
        state: HashMap<String, AssetHistory>,
    }

    fn processor(mode: Mode) -> Harness {
        Harness {
            p: ValidateProcessor::new(
                RuleSet::default_rules(),
                mode,
                AssetDirectory::fixed([Asset {
                    id: "MTR-1".into(),
                    kind: AssetKind::Meter,
                    site_id: None,
                }]),
                Memory {
                    size: 8,
                    window: Duration::from_secs(2 * 3600),
                },
            ),
            state: HashMap::new(),
        }
    }

    fn raw(event_time: i64, received_time: i64, kw: f64) -> RawReading {
        RawReading {
            event_id: format!("e-{event_time}-{kw}"),
            asset_id: "MTR-1".into(),
            asset_kind: None,
            event_time,
            received_time,
            source: "t".into(),
            channel: IngestChannel::Http,
            measurements: vec![Measurement {
                metric: Metric::Power,
                value: kw,
                unit: Some("kW".into()),
            }],
            attributes: Default::default(),
            interval_ms: None,
        }
    }

    /// The reading's result; `Ok(None)` when nothing was emitted.
    async fn emit(h: &mut Harness, r: &RawReading) -> Result<Option<ScoredReading>, String> {
        let meta = RecordMeta {
            topic: "raw",
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            attempt: 1,
            watermark: None,
            traceparent: None,
        };
        let mut slot = Slot::new(h.state.remove(&r.asset_id));
        let out = h.p.process(r, &meta, &mut slot).await;
        if let Some(v) = slot.into_inner() {
            h.state.insert(r.asset_id.clone(), v);
        }
        out.map(|mut e| e.pop().map(|e| e.value))
            .map_err(|e| e.to_string())
    }

    async fn run(h: &mut Harness, r: &RawReading) -> Result<ScoredReading, String> {
        emit(h, r).await.map(|s| s.expect("an output"))
    }

    fn codes(s: &ScoredReading) -> Vec<FlagCode> {
        s.flags.iter().map(|f| f.code).collect()
    }

    #[tokio::test]
    async fn a_future_reading_does_not_blind_the_rate_of_change_check() {
        let now = chrono::Utc::now().timestamp_millis();
        let mut p = processor(Mode::Live);
        run(&mut p, &raw(now - 60_000, now, 1.0)).await.unwrap();
        let future = run(&mut p, &raw(now + 3 * HOUR, now, 1.0)).await.unwrap();
        assert_eq!(codes(&future), [FlagCode::FutureTimestamp]);
        // The next live reading is still compared with the last live one.
        let spike = run(&mut p, &raw(now - 30_000, now, 9.0)).await.unwrap();
        assert_eq!(codes(&spike), [FlagCode::Spike]);
    }

    #[tokio::test]
    async fn a_quarantined_glitch_does_not_cause_a_false_drop() {
        let now = chrono::Utc::now().timestamp_millis();
        let mut p = processor(Mode::Live);
        run(&mut p, &raw(now - 60_000, now, 1.0)).await.unwrap();
        let glitch = run(&mut p, &raw(now - 50_000, now, 42.0)).await.unwrap();
        assert_eq!(glitch.quality_tier, QualityTier::Quarantine);
        let next = run(&mut p, &raw(now - 40_000, now, 1.1)).await.unwrap();
        assert!(next.flags.is_empty(), "{:?}", next.flags);
    }

    #[tokio::test]
    async fn a_stale_baseline_is_not_compared() {
        let now = chrono::Utc::now().timestamp_millis();
        let mut p = processor(Mode::Backfill);
        run(&mut p, &raw(now - 10 * HOUR, now, 1.0)).await.unwrap();
        // Seven hours later in event time: a gap, not a spike.
        let later = run(&mut p, &raw(now - 3 * HOUR, now, 9.0)).await.unwrap();
        assert!(later.flags.is_empty(), "{:?}", later.flags);
        let drop = run(&mut p, &raw(now - 3 * HOUR + 60_000, now, 0.5))
            .await
            .unwrap();
        assert_eq!(codes(&drop), [FlagCode::Drop]);
    }

    #[tokio::test]
    async fn a_late_reading_is_compared_with_the_reading_before_it_in_event_time() {
        let t = 1_700_000_000_000;
        let mut p = processor(Mode::Backfill);
        run(&mut p, &raw(t, t, 1.0)).await.unwrap();
        run(&mut p, &raw(t + 20_000, t, 8.0)).await.unwrap(); // a spike, passed
                                                              // Arrives last, belongs between them: compared with 1.0, not 8.0.
        let late = run(&mut p, &raw(t + 10_000, t, 1.2)).await.unwrap();
        assert!(late.flags.is_empty(), "{:?}", late.flags);
    }

    #[tokio::test]
    async fn a_repeated_reading_is_emitted_once_and_another_at_the_same_time_is_quarantined() {
        let t = 1_700_000_000_000;
        let mut p = processor(Mode::Backfill);
        let first = raw(t, t, 1.0);
        assert!(emit(&mut p, &first).await.unwrap().is_some());
        assert_eq!(emit(&mut p, &first).await.unwrap(), None);
        let other = run(&mut p, &raw(t, t, 1.5)).await.unwrap();
        assert_eq!(codes(&other), [FlagCode::DuplicateTime]);
        assert_eq!(other.quality_tier, QualityTier::Quarantine);
        // The duplicate is no baseline: the next reading compares with 1.0.
        let next = run(&mut p, &raw(t + 10_000, t, 5.5)).await.unwrap();
        assert!(next.flags.is_empty(), "{:?}", next.flags);
    }

    #[tokio::test]
    async fn the_same_input_gives_the_same_result_whatever_the_clock_says() {
        let t = 1_700_000_000_000;
        let inputs: Vec<RawReading> = (0..50)
            .map(|i| {
                raw(
                    t + i * 60_000,
                    t + i * 60_000,
                    [1.0, 1.1, 9.0, 0.05][i as usize % 4],
                )
            })
            .collect();
        let mut a = processor(Mode::Live);
        let mut first = Vec::new();
        for r in &inputs {
            first.push(
                run(&mut a, r)
                    .await
                    .map(|s| (s.quality_score, s.quality_tier)),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut b = processor(Mode::Live);
        for (r, expected) in inputs.iter().zip(first) {
            let got = run(&mut b, r)
                .await
                .map(|s| (s.quality_score, s.quality_tier));
            assert_eq!(got, expected);
        }
    }

    #[tokio::test]
    async fn histories_expire_with_the_watermark_not_the_clock() {
        let p = processor(Mode::Live);
        let mut h = AssetHistory::default();
        let s = ScoredReading::new("e", "MTR-1", AssetKind::Meter, 10 * HOUR);
        h.record(&s, &[Metric::Power], 8);
        assert!(!p.p.expired(&h, 11 * HOUR));
        assert!(p.p.expired(&h, 12 * HOUR + 1));
        // A future reading does not move the watermark.
        let now = 1_700_000_000_000;
        assert_eq!(p.p.watermark_time_ms(&raw(now, now, 1.0)), Some(now));
        assert_eq!(p.p.watermark_time_ms(&raw(now + 2 * HOUR, now, 1.0)), None);
    }

    #[tokio::test]
    async fn extreme_timestamps_never_panic() {
        let mut p = processor(Mode::Live);
        for (event, received) in [
            (i64::MAX, i64::MIN),
            (i64::MIN, i64::MAX),
            (i64::MAX, 0),
            (0, i64::MAX),
            (i64::MIN, i64::MIN),
        ] {
            let r = raw(event, received, 1.0);
            let _ = emit(&mut p, &r).await;
            let _ = p.p.event_time_ms(&r);
            let _ = p.p.watermark_time_ms(&r);
        }
        let err = run(&mut p, &raw(i64::MAX, 0, 1.0)).await.unwrap_err();
        assert!(err.contains("invalid_timestamp"), "{err}");
        assert_eq!(p.p.event_time_ms(&raw(i64::MIN, 0, 1.0)), None);
    }

    #[tokio::test]
    async fn unknown_assets_are_rejected() {
        let mut p = processor(Mode::Live);
        let mut r = raw(0, 0, 1.0);
        r.asset_id = "GHOST".into();
        let err = run(&mut p, &r).await.unwrap_err();
        assert!(err.starts_with("unknown_asset"), "{err}");
    }
}
