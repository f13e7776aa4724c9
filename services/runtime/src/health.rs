//! Readiness as a set of named checks.
//!
//! Each dependency (broker, registry, database) and each loop state (paused
//! during an outage) sets its own check; `/readyz` is ready only when all of
//! them pass, and lists the failing ones otherwise.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Shared readiness state of one service.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<String, Option<String>>>>,
    /// Stage name for the `gale_ready{stage}` gauge (none: no gauge).
    stage: Option<Arc<str>>,
}

/// A snapshot for `/readyz`.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// True when every check passes.
    pub ready: bool,
    /// Each check and its failure, if any.
    pub checks: BTreeMap<String, String>,
}

impl Health {
    /// A fresh state with no checks (ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh state that also mirrors readiness into the `gale_ready{stage}`
    /// gauge (1 ready, 0 not), so alerts see what `/readyz` says, start-up
    /// and state restore included.
    pub fn for_stage(stage: &str) -> Self {
        let h = Health {
            stage: Some(stage.into()),
            ..Self::default()
        };
        h.publish(true);
        h
    }

    fn publish(&self, ready: bool) {
        if let Some(stage) = &self.stage {
            metrics::gauge!("gale_ready", "stage" => stage.to_string()).set(if ready {
                1.0
            } else {
                0.0
            });
        }
    }

    /// Marks `check` as passing.
    pub fn ok(&self, check: &str) {
        self.set(check, None);
    }

    /// Marks `check` as failing with `reason`.
    pub fn fail(&self, check: &str, reason: impl Into<String>) {
        self.set(check, Some(reason.into()));
    }

    fn set(&self, check: &str, state: Option<String>) {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        match checks.get_mut(check) {
            Some(existing) => {
                if *existing != state {
                    match &state {
                        Some(reason) => tracing::warn!(check, reason = %reason, "not ready"),
                        None => tracing::info!(check, "ready again"),
                    }
                    *existing = state;
                }
            }
            None => {
                checks.insert(check.to_string(), state);
            }
        }
        let ready = checks.values().all(Option::is_none);
        drop(checks);
        self.publish(ready);
    }

    /// Current readiness.
    pub fn readiness(&self) -> Readiness {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        Readiness {
            ready: checks.values().all(Option::is_none),
            checks: checks
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().unwrap_or_else(|| "ok".into())))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_all_pass() {
        let h = Health::new();
        assert!(h.readiness().ready);
        h.fail("broker", "down");
        h.ok("registry");
        let r = h.readiness();
        assert!(!r.ready);
        assert_eq!(r.checks["broker"], "down");
        h.ok("broker");
        assert!(h.readiness().ready);
    }
}
