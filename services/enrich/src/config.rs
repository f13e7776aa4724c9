//! Configuration of `gale-enrich`.

use std::time::Duration;

use gale_runtime::config::{
    HttpConfig, KafkaConfig, ProcessingConfig, RegistryConfig, RuntimeConfig, Secret, StateConfig,
    TelemetryConfig,
};
use serde::Deserialize;

use crate::EnrichError;

/// Everything `gale-enrich` reads from its TOML file and `GALE_*` variables.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// Schema registry.
    pub registry: RegistryConfig,
    /// Probe and metrics listener.
    pub http: HttpConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Batching, retries, shutdown.
    pub processing: ProcessingConfig,
    /// Topic names.
    pub topics: Topics,
    /// The asset registry.
    pub assets: Assets,
}

impl Config {
    /// The sections the shared runtime needs (enrich keeps no state).
    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            kafka: self.kafka.clone(),
            registry: self.registry.clone(),
            http: self.http.clone(),
            telemetry: self.telemetry.clone(),
            processing: self.processing.clone(),
            state: StateConfig::default(),
        }
    }
}

/// Topics enrich reads and writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Validated readings consumed.
    pub input: String,
    /// Quarantined readings consumed too (empty, the default: none), so
    /// detect-faults sees them: they end gaps, and a meter's overload is
    /// quarantined by validate but is what OVERLOAD counts. Records of the
    /// two topics reach detect-faults in arrival order, not event-time
    /// order, so a run counted across both can come out shorter.
    pub quarantine: String,
    /// Enriched readings produced.
    pub output: String,
    /// Undecodable records.
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            input: "gale.validated".into(),
            quarantine: String::new(),
            output: "gale.enriched".into(),
            dead_letter: "gale.dlq.enrich".into(),
        }
    }
}

/// Where the asset registry is and how often it is reloaded.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Assets {
    /// Postgres URL of the registry; `DATABASE_URL` when unset. Never logged.
    pub url: Option<Secret>,
    /// Full reload interval: an import reaches the stage within it.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

impl Default for Assets {
    fn default() -> Self {
        Assets {
            url: None,
            refresh: Duration::from_secs(30),
        }
    }
}

impl Assets {
    /// The connection URL, from the key or `DATABASE_URL`.
    pub fn url(&self) -> Result<String, EnrichError> {
        match &self.url {
            Some(u) => Ok(u.expose().to_string()),
            None => std::env::var("DATABASE_URL").map_err(|_| {
                EnrichError::Config(
                    "key `assets.url`: not set, and DATABASE_URL is not set either (expected a postgres:// URL)".into(),
                )
            }),
        }
        .and_then(|u| {
            if self.refresh.is_zero() {
                Err(EnrichError::Config(
                    "key `assets.refresh`: must be longer than 0s (e.g. \"30s\")".into(),
                ))
            } else {
                Ok(u)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e =
            gale_runtime::config::load_str::<Config>("[assets]\nrefresh = \"10s\"\nrefrsh = 1\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("refrsh"), "{e}");
        let ok: Config = gale_runtime::config::load_str("[assets]\nrefresh = \"10s\"\n").unwrap();
        assert_eq!(ok.assets.refresh, Duration::from_secs(10));
        assert_eq!(ok.topics.input, "gale.validated");
    }
}
