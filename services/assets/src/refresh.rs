//! The registry kept current in a running stage: loaded before the first
//! record, reloaded in the background, shared as an `Arc` snapshot.
//!
//! An import (`gale assets import`) reaches every stage within one refresh
//! interval, without restarts. The database being down never stops a stage
//! that has loaded once: a failed reload keeps the last good snapshot in
//! service (a warning and a counter) and is retried sooner, with back-off.
//! Only the first load waits, not ready, until the database answers.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `gale_asset_registry_assets` | gauge: assets in the last successful load | `stage` |
//! | `gale_asset_registry_refresh_failures_total` | counter: failed loads, the first load's retries included | `stage` |
//!
//! The names and the `stage` label are the ones validate's own registry
//! cache reports, so one dashboard panel covers every stage.

use std::sync::Arc;
use std::time::Duration;

use gale_runtime::health::Health;
use gale_runtime::retry::Backoff;
use gale_runtime::shutdown::{sleep_or_cancel, CancellationToken};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::registry::Registry;
use crate::store::load;
use crate::AssetsError;

/// Name of the readiness check that fails while the first load has not succeeded.
pub const READINESS_CHECK: &str = "asset_registry";

/// The live registry of a stage.
#[derive(Debug)]
pub struct LiveRegistry {
    /// The newest snapshot; it changes (and `changed()` fires) only when a
    /// reload finds different contents.
    pub snapshots: watch::Receiver<Arc<Registry>>,
    /// The reload task; it ends at shutdown or when every receiver is dropped.
    pub task: JoinHandle<()>,
}

impl LiveRegistry {
    /// The newest snapshot.
    pub fn current(&self) -> Arc<Registry> {
        self.snapshots.borrow().clone()
    }
}

/// Loads the registry, retrying with back-off (readiness check
/// [`READINESS_CHECK`] failing meanwhile) until it loads or `shutdown` is
/// cancelled, then reloads it every `every` in a background task.
///
/// `stage` is the value of the metrics' `stage` label (`enrich`,
/// `detect-faults`). `every` below 100 ms is taken as 100 ms. Fails only
/// with [`AssetsError::Shutdown`].
pub async fn spawn_refresh(
    pool: PgPool,
    every: Duration,
    stage: &str,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<LiveRegistry, AssetsError> {
    let failures = metrics::counter!("gale_asset_registry_refresh_failures_total", "stage" => stage.to_string());
    let size = metrics::gauge!("gale_asset_registry_assets", "stage" => stage.to_string());
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    let first = loop {
        match load(&pool).await {
            Ok(registry) => break registry,
            Err(e) => {
                failures.increment(1);
                let wait = backoff.next_delay();
                health.fail(
                    READINESS_CHECK,
                    format!("cannot load the asset registry: {e}"),
                );
                tracing::warn!(stage, error = %e, retry_in = ?wait, "asset registry not loadable yet; retrying");
                if !sleep_or_cancel(shutdown, wait).await {
                    return Err(AssetsError::Shutdown);
                }
            }
        }
    };
    health.ok(READINESS_CHECK);
    size.set(first.len() as f64);
    tracing::info!(
        stage,
        assets = first.len(),
        sites = first.sites.len(),
        models = first.models.len(),
        "asset registry loaded"
    );
    let (tx, snapshots) = watch::channel(Arc::new(first));
    let shutdown = shutdown.clone();
    let stage = stage.to_string();
    let every = every.max(Duration::from_millis(100));
    let task = tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_secs(1), every);
        let mut wait = every;
        loop {
            if !sleep_or_cancel(&shutdown, wait).await || tx.is_closed() {
                return;
            }
            match load(&pool).await {
                Ok(registry) => {
                    size.set(registry.len() as f64);
                    let changed = tx.send_if_modified(|current| {
                        if **current == registry {
                            false
                        } else {
                            *current = Arc::new(registry);
                            true
                        }
                    });
                    if changed {
                        tracing::info!(stage, assets = tx.borrow().len(), "asset registry changed");
                    }
                    backoff.reset();
                    wait = every;
                }
                Err(e) => {
                    failures.increment(1);
                    wait = backoff.next_delay();
                    tracing::warn!(
                        stage,
                        error = %e,
                        retry_in = ?wait,
                        "asset registry reload failed; serving the last snapshot"
                    );
                }
            }
        }
    });
    Ok(LiveRegistry { snapshots, task })
}
