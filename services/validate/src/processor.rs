//! Adapts the validation rules to the runtime's processing loop.

use std::time::Instant;

use async_trait::async_trait;
use gale_runtime::pipeline::{Emit, ProcessError, Processor, RecordMeta};
use gale_runtime::schema::{QualityTier, RawReading, ScoredReading};

use crate::assets::AssetDirectory;
use crate::baselines::Baselines;
use crate::rules::{self, Mode, RuleSet};

/// Output name of validated readings.
pub const VALIDATED: &str = "validated";
/// Output name of quarantined readings.
pub const QUARANTINE: &str = "quarantine";

/// The validate stage's processor.
pub struct ValidateProcessor {
    rules: RuleSet,
    mode: Mode,
    assets: AssetDirectory,
    /// Rate-of-change baselines per asset. In memory: after a restart the
    /// first reading of each asset has nothing to compare with.
    baselines: Baselines,
}

impl ValidateProcessor {
    /// A processor applying `rules` in `mode` with `assets`.
    pub fn new(rules: RuleSet, mode: Mode, assets: AssetDirectory) -> Self {
        ValidateProcessor {
            baselines: Baselines::new(rules.longest_baseline_age()),
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

    async fn process(
        &mut self,
        raw: &RawReading,
        meta: &RecordMeta<'_>,
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
        let now = chrono::Utc::now().timestamp_millis();
        let baseline = self.baselines.get(&raw.asset_id);
        let scored =
            rules::evaluate(raw, asset, baseline, &self.rules, self.mode, now).map_err(|r| {
                ProcessError::Reject {
                    class: r.class,
                    message: r.message,
                }
            })?;
        self.baselines
            .offer(&scored, meta.partition, Instant::now());
        let output = if scored.quality_tier == QualityTier::Quarantine {
            QUARANTINE
        } else {
            VALIDATED
        };
        Ok(vec![Emit {
            output,
            key: raw.asset_id.clone(),
            value: scored,
        }])
    }

    fn partitions_revoked(&mut self, partitions: &[(String, i32)]) {
        let lost: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
        self.baselines.forget_partitions(&lost);
    }

    fn event_time_ms(&self, input: &RawReading) -> Option<i64> {
        // Only plausible times: the runtime subtracts this from the clock.
        rules::plausible_event_time(input.event_time).then_some(input.event_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::Asset;
    use gale_runtime::schema::{AssetKind, FlagCode, IngestChannel, Measurement, Metric};

    const HOUR: i64 = 3_600_000;

    fn processor(mode: Mode) -> ValidateProcessor {
        ValidateProcessor::new(
            RuleSet::default_rules(),
            mode,
            AssetDirectory::fixed([Asset {
                id: "MTR-1".into(),
                kind: AssetKind::Meter,
                site_id: None,
            }]),
        )
    }

    fn raw(event_time: i64, received_time: i64, kw: f64) -> RawReading {
        RawReading {
            event_id: format!("e-{event_time}"),
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
        }
    }

    async fn run(p: &mut ValidateProcessor, r: &RawReading) -> Result<ScoredReading, String> {
        let meta = RecordMeta {
            topic: "raw",
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            attempt: 1,
        };
        p.process(r, &meta)
            .await
            .map(|mut e| e.remove(0).value)
            .map_err(|e| e.to_string())
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
            let _ = run(&mut p, &r).await;
            let _ = p.event_time_ms(&r);
        }
        let err = run(&mut p, &raw(i64::MAX, 0, 1.0)).await.unwrap_err();
        assert!(err.contains("invalid_timestamp"), "{err}");
        assert_eq!(p.event_time_ms(&raw(i64::MIN, 0, 1.0)), None);
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
