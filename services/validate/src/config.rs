//! Configuration of `gale-validate`.

use std::path::PathBuf;
use std::time::Duration;

use gale_runtime::config::{
    HttpConfig, KafkaConfig, ProcessingConfig, RegistryConfig, RuntimeConfig, StateConfig,
    TelemetryConfig,
};
use serde::Deserialize;

use crate::assets::AssetSourceConfig;
use crate::processor::Memory;
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
    /// Durable per-asset state (rate-of-change history) and watermarks.
    pub state: StateConfig,
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
            state: self.state.clone(),
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
#[derive(Debug, Clone, Deserialize)]
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
    /// Readings remembered per asset (for rate-of-change baselines, repeats
    /// and readings at the same event time).
    pub history_size: usize,
    /// An asset's remembered readings are dropped once the input's event
    /// time (its watermark) is this far past the newest of them; at least
    /// the longest `baseline_max_age` of the rules.
    #[serde(with = "humantime_serde")]
    pub history_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::default(),
            rules_file: None,
            assets: AssetSourceConfig::default(),
            history_size: 8,
            history_window: Duration::from_secs(6 * 3600),
        }
    }
}

impl Settings {
    /// How much of each asset's past to remember, checked against `rules`.
    pub fn memory(&self, rules: &RuleSet) -> Result<Memory, ValidateError> {
        if self.history_size < 2 {
            return Err(ValidateError::Config(format!(
                "key `validate.history_size`: {} is too small; at least 2 readings are needed",
                self.history_size
            )));
        }
        let longest = rules.longest_baseline_age();
        if self.history_window < longest {
            return Err(ValidateError::Config(format!(
                "key `validate.history_window`: {} is shorter than the longest baseline_max_age of the rules ({}); baselines would be forgotten before they expire",
                humantime::format_duration(self.history_window),
                humantime::format_duration(longest)
            )));
        }
        Ok(Memory {
            size: self.history_size,
            window: self.history_window,
        })
    }

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
