//! Configuration of `gale-validate`.

use std::path::PathBuf;

use gale_runtime::config::{
    HttpConfig, KafkaConfig, ProcessingConfig, RegistryConfig, RuntimeConfig, TelemetryConfig,
};
use serde::Deserialize;

use crate::assets::AssetSourceConfig;
use crate::rules::{Mode, RuleSet};
use crate::ValidateError;

/// Everything `gale-validate` reads from its TOML file and `GALE_*` variables.
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
    /// Validation settings.
    pub validate: Settings,
}

impl Config {
    /// The sections the shared runtime needs.
    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            kafka: self.kafka.clone(),
            registry: self.registry.clone(),
            http: self.http.clone(),
            telemetry: self.telemetry.clone(),
            processing: self.processing.clone(),
        }
    }
}

/// Topics validate reads and writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Raw readings consumed.
    pub input: String,
    /// Readings scoring at least the standard tier.
    pub validated: String,
    /// Readings below the standard tier or caught by a quarantining rule.
    pub quarantine: String,
    /// Rejected and undecodable records.
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            input: "gale.raw".into(),
            validated: "gale.validated".into(),
            quarantine: "gale.quarantine".into(),
            dead_letter: "gale.dlq.validate".into(),
        }
    }
}

/// How validate judges readings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `live` flags future and backdated readings; `backfill` accepts
    /// historical data (future readings are still flagged).
    pub mode: Mode,
    /// Rules file (see `services/validate/rules/default.toml`); the built-in
    /// presets when unset.
    pub rules_file: Option<PathBuf>,
    /// Where the asset registry comes from.
    pub assets: AssetSourceConfig,
}

impl Settings {
    /// Loads the rules file, or the built-in rules.
    pub fn rules(&self) -> Result<RuleSet, ValidateError> {
        match &self.rules_file {
            None => Ok(RuleSet::default_rules()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ValidateError::Rules {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                RuleSet::from_toml(&text).map_err(|message| ValidateError::Rules {
                    path: path.display().to_string(),
                    message,
                })
            }
        }
    }
}
