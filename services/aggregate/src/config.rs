//! Configuration of `gale-aggregate`.

use std::time::Duration;

use gale_model::Severity;
use gale_runtime::config::{
    HttpConfig, KafkaConfig, ProcessingConfig, RegistryConfig, RuntimeConfig, StateConfig,
    TelemetryConfig,
};
use serde::Deserialize;

use crate::acc::Rules;
use crate::gaps::GapPolicy;
use crate::processor::Settings as ProcessorSettings;
use crate::window::{zone, Grain};
use crate::Error;

/// Everything `gale-aggregate` reads from its TOML file and `GALE_*` variables.
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
    /// Durable open windows, watermarks (`state.lateness` is the bounded
    /// out-of-orderness the watermark allows) and timers.
    pub state: StateConfig,
    /// Topic names.
    pub topics: Topics,
    /// Windows, lateness and rules.
    pub aggregate: Settings,
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

/// Topics aggregate reads and writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Checked readings consumed.
    pub input: String,
    /// Ten-minute aggregates.
    pub asset_10m: String,
    /// Hourly aggregates.
    pub asset_1h: String,
    /// Daily aggregates.
    pub asset_1d: String,
    /// Readings too late for their windows (with attribute `gale.late_for`).
    pub late: String,
    /// Undecodable records.
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            input: "gale.checked".into(),
            asset_10m: "gale.agg.asset.10m".into(),
            asset_1h: "gale.agg.asset.1h".into(),
            asset_1d: "gale.agg.asset.1d".into(),
            late: "gale.agg.late".into(),
            dead_letter: "gale.dlq.aggregate".into(),
        }
    }
}

/// Windows, lateness and the rules deciding what counts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Window sizes computed: any of `10m`, `1h`, `1d`.
    pub grains: Vec<Grain>,
    /// How long past a window's end (in the asset's event time: its latest
    /// reading) its final aggregate waits for out-of-order readings.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How long after that a late reading still produces a corrected
    /// aggregate (the next revision); later ones go to `topics.late`.
    /// Emitted windows are held in state this long.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// IANA zone of daily windows for readings without a site zone.
    pub default_time_zone: String,
    /// Readings of an asset with a fault of this severity or above open
    /// are excluded (and counted as excluded): `INFO`, `WARNING` or `CRITICAL`.
    pub exclude_fault_severity: Severity,
    /// Faults of this severity or above make a turbine unavailable.
    pub stopping_fault_severity: Severity,
    /// A live asset whose last reading is this far behind its partition's
    /// time is silent: its open windows close on the partition's time
    /// (later readings revise them). Backfilled (day-old) data waits for
    /// the asset's own next reading instead.
    #[serde(with = "humantime_serde")]
    pub silence: Duration,
    /// Gaps in hourly series.
    pub gaps: GapPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            grains: Grain::ALL.to_vec(),
            grace: Duration::from_secs(0),
            allowed_lateness: Duration::from_secs(3600),
            default_time_zone: "UTC".into(),
            exclude_fault_severity: Severity::Warning,
            stopping_fault_severity: Severity::Critical,
            silence: Duration::from_secs(30 * 60),
            gaps: GapPolicy::default(),
        }
    }
}

fn ms(d: Duration, key: &str) -> Result<i64, Error> {
    i64::try_from(d.as_millis())
        .map_err(|_| Error::Config(format!("key `aggregate.{key}`: too long")))
}

impl Settings {
    /// The processor's settings, checked.
    pub fn processor(&self) -> Result<ProcessorSettings, Error> {
        if self.grains.is_empty() {
            return Err(Error::Config(
                "key `aggregate.grains`: expected at least one of \"10m\", \"1h\", \"1d\"".into(),
            ));
        }
        let default_zone = zone(&self.default_time_zone)
            .map_err(|e| Error::Config(format!("key `aggregate.default_time_zone`: {e}")))?;
        self.gaps.check().map_err(Error::Config)?;
        let mut grains = self.grains.clone();
        grains.sort();
        grains.dedup();
        Ok(ProcessorSettings {
            grains,
            grace_ms: ms(self.grace, "grace")?,
            allowed_lateness_ms: ms(self.allowed_lateness, "allowed_lateness")?,
            default_zone,
            rules: Rules {
                exclude_from: self.exclude_fault_severity,
                stopping: self.stopping_fault_severity,
            },
            gaps: self.gaps.clone(),
            silence_ms: ms(self.silence, "silence")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_are_valid_and_documented_values_parse() {
        let s = Config::default().aggregate.processor().unwrap();
        assert_eq!(s.grains, Grain::ALL.to_vec());
        assert_eq!(s.grace_ms, 0);
        let c = parse(
            "[aggregate]\ngrains = [\"1d\", \"1h\"]\ngrace = \"5m\"\nallowed_lateness = \"2h\"\ndefault_time_zone = \"Europe/Berlin\"\nexclude_fault_severity = \"CRITICAL\"\n",
        )
        .unwrap();
        let s = c.aggregate.processor().unwrap();
        assert_eq!(s.grains, vec![Grain::Hour, Grain::Day]);
        assert_eq!(s.allowed_lateness_ms, 7_200_000);
        assert_eq!(s.rules.exclude_from, Severity::Critical);
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("[aggregate]\ngrains = [\"1w\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("1w"), "{e}");
        let e = parse("[aggregate]\ngrace_period = \"1m\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("grace_period"), "{e}");
        let mut c = Config::default();
        c.aggregate.default_time_zone = "Europe/Atlantis".into();
        let e = c.aggregate.processor().unwrap_err().to_string();
        assert!(e.contains("aggregate.default_time_zone"), "{e}");
        c.aggregate.default_time_zone = "UTC".into();
        c.aggregate.grains.clear();
        let e = c.aggregate.processor().unwrap_err().to_string();
        assert!(e.contains("aggregate.grains"), "{e}");
    }
}
