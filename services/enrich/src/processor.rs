//! Adapts [`crate::context::enrich`] to the runtime loop. Stateless: the
//! only thing it holds is the latest registry snapshot.

use std::sync::Arc;

use async_trait::async_trait;
use gale_assets::Registry;
use gale_model::{EnrichedReading, ScoredReading, QUARANTINED_BY};
use gale_runtime::pipeline::{Emit, ProcessError, Processor, RecordMeta};
use gale_runtime::state::Slot;
use tokio::sync::watch;

/// Name of the output in the pipeline.
pub const ENRICHED: &str = "enriched";

/// Enriches every reading with the newest registry snapshot.
pub struct EnrichProcessor {
    registry: watch::Receiver<Arc<Registry>>,
    current: Arc<Registry>,
}

impl EnrichProcessor {
    /// A processor reading snapshots from `registry`.
    pub fn new(mut registry: watch::Receiver<Arc<Registry>>) -> Self {
        let current = registry.borrow_and_update().clone();
        EnrichProcessor { registry, current }
    }
}

#[async_trait]
impl Processor for EnrichProcessor {
    type Input = ScoredReading;
    type Output = EnrichedReading;
    type State = ();

    async fn process(
        &mut self,
        input: &ScoredReading,
        _meta: &RecordMeta<'_>,
        _state: &mut Slot<()>,
    ) -> Result<Vec<Emit<EnrichedReading>>, ProcessError> {
        // Quarantined by detect-faults, downstream: already enriched and
        // checked once (the quarantine topic is read for validate's).
        if input.attributes.contains_key(QUARANTINED_BY) {
            return Ok(Vec::new());
        }
        if self.registry.has_changed().unwrap_or(false) {
            self.current = self.registry.borrow_and_update().clone();
        }
        let value = crate::context::enrich(input.clone(), &self.current);
        Ok(vec![Emit {
            output: ENRICHED,
            key: value.reading.asset_id.clone(),
            value,
            links: Vec::new(),
        }])
    }

    fn event_time_ms(&self, input: &ScoredReading) -> Option<i64> {
        Some(input.event_time)
    }
}
