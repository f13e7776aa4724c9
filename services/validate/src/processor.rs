//! Adapts the validation rules to the runtime's processing loop.

use async_trait::async_trait;
use gale_runtime::pipeline::{Emit, ProcessError, Processor, RecordMeta};
use gale_runtime::schema::{QualityTier, RawReading, ScoredReading};
use rustc_hash::FxHashMap;

use crate::assets::AssetDirectory;
use crate::rules::{self, Mode, Previous, RuleSet};

/// Output name of validated readings.
pub const VALIDATED: &str = "validated";
/// Output name of quarantined readings.
pub const QUARANTINE: &str = "quarantine";

/// The validate stage's processor.
pub struct ValidateProcessor {
    rules: RuleSet,
    mode: Mode,
    assets: AssetDirectory,
    /// Last values per asset for rate-of-change checks. In memory: after a
    /// restart the first reading of each asset has no base to compare with.
    previous: FxHashMap<String, Previous>,
}

impl ValidateProcessor {
    /// A processor applying `rules` in `mode` with `assets`.
    pub fn new(rules: RuleSet, mode: Mode, assets: AssetDirectory) -> Self {
        ValidateProcessor {
            rules,
            mode,
            assets,
            previous: FxHashMap::default(),
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
        _meta: &RecordMeta<'_>,
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
        let previous = self.previous.get_mut(&raw.asset_id);
        let scored = rules::evaluate(raw, asset, previous.as_deref(), &self.rules, self.mode, now)
            .map_err(|r| ProcessError::Reject {
                class: r.class,
                message: r.message,
            })?;
        match previous {
            Some(p) if p.event_time < scored.event_time => *p = rules::remember(&scored),
            Some(_) => {}
            None => {
                self.previous
                    .insert(raw.asset_id.clone(), rules::remember(&scored));
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
        }])
    }

    fn event_time_ms(&self, input: &RawReading) -> Option<i64> {
        Some(input.event_time)
    }
}
