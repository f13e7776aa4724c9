//! Configuration of `gale-detect-faults`.

use std::path::PathBuf;

use gale_runtime::config::{
    HttpConfig, KafkaConfig, ProcessingConfig, RegistryConfig, RuntimeConfig, StateConfig,
    TelemetryConfig,
};
use serde::Deserialize;

use crate::processor::Tiers;
use crate::{Error, Rules};

/// Everything `gale-detect-faults` reads from its TOML file and `GALE_*` variables.
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
    /// Durable per-asset fault state, watermarks and timers.
    pub state: StateConfig,
    /// Topic names.
    pub topics: Topics,
    /// Rules and scoring.
    pub detect: Settings,
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

/// Topics detect-faults reads and writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Enriched readings consumed.
    pub input: String,
    /// Every reading, annotated with its asset's open faults and re-scored.
    pub checked: String,
    /// Fault events.
    pub faults: String,
    /// Readings the fault deduction pushed below the standard tier.
    pub quarantine: String,
    /// Undecodable records.
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            input: "gale.enriched".into(),
            checked: "gale.checked".into(),
            faults: "gale.faults".into(),
            quarantine: "gale.quarantine".into(),
            dead_letter: "gale.dlq.detect-faults".into(),
        }
    }
}

/// Which rules and tier thresholds apply.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Rules file (TOML, like `services/detect-faults/rules/default.toml`);
    /// the shipped preset when unset.
    pub rules_file: Option<PathBuf>,
    /// Score at or above which a reading is premium (validate's `scoring.premium_min`).
    pub premium_min: i32,
    /// Score at or above which a reading is standard; below, quarantined.
    pub standard_min: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rules_file: None,
            premium_min: 90,
            standard_min: 70,
        }
    }
}

impl Settings {
    /// The rules to apply.
    pub fn rules(&self) -> Result<Rules, Error> {
        match &self.rules_file {
            Some(path) => Rules::load(path),
            None => Ok(Rules::preset()),
        }
    }

    /// The tier thresholds, checked.
    pub fn tiers(&self) -> Result<Tiers, String> {
        if !(0..=100).contains(&self.standard_min) || self.premium_min <= self.standard_min {
            return Err(format!(
                "key `detect.premium_min`/`detect.standard_min`: expected 0 <= standard_min < premium_min <= 100, got {} and {}",
                self.standard_min, self.premium_min
            ));
        }
        Ok(Tiers {
            premium_min: self.premium_min,
            standard_min: self.standard_min,
        })
    }
}
