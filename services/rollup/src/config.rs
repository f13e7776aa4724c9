//! Configuration of `gale-rollup`.

use std::time::Duration;

use gale_aggregate::peaks::PeakPolicy;
use gale_aggregate::window::zone;
use gale_runtime::config::{
    HttpConfig, KafkaConfig, ProcessingConfig, RegistryConfig, RuntimeConfig, StateConfig,
    TelemetryConfig,
};
use serde::Deserialize;

use crate::processor::Settings as ProcessorSettings;
use crate::Error;

/// Everything `gale-rollup` reads from its TOML file and `GALE_*` variables.
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
    /// Durable open windows and timers.
    pub state: StateConfig,
    /// Topic names; unset ones follow `rollup.scope`.
    pub topics: Topics,
    /// Scope, lateness, zone and peak rules.
    pub rollup: Settings,
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

/// Topics a roll-up reads and writes; each defaults by scope.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Hourly records consumed: `gale.agg.asset.1h` (site) or `gale.agg.site.1h` (fleet).
    pub input: Option<String>,
    /// Hourly roll-ups: `gale.agg.site.1h` or `gale.agg.fleet.1h`.
    pub hourly: Option<String>,
    /// Daily roll-ups: `gale.agg.site.1d` or `gale.agg.fleet.1d`.
    pub daily: Option<String>,
    /// Daily peak hours (both scopes): `gale.peaks`.
    pub peaks: Option<String>,
    /// Undecodable and too-late records: `gale.dlq.rollup-site` or `gale.dlq.rollup-fleet`.
    pub dead_letter: Option<String>,
}

/// The topics with the scope's defaults filled in.
#[derive(Debug, Clone)]
pub struct ResolvedTopics {
    /// See [`Topics::input`].
    pub input: String,
    /// See [`Topics::hourly`].
    pub hourly: String,
    /// See [`Topics::daily`].
    pub daily: String,
    /// See [`Topics::peaks`].
    pub peaks: String,
    /// See [`Topics::dead_letter`].
    pub dead_letter: String,
}

impl Topics {
    /// Fills unset names for `fleet` (or site) scope.
    pub fn resolve(&self, fleet: bool) -> ResolvedTopics {
        let pick = |v: &Option<String>, site: &str, fleet_name: &str| {
            v.clone()
                .unwrap_or_else(|| if fleet { fleet_name } else { site }.to_string())
        };
        ResolvedTopics {
            input: pick(&self.input, "gale.agg.asset.1h", "gale.agg.site.1h"),
            hourly: pick(&self.hourly, "gale.agg.site.1h", "gale.agg.fleet.1h"),
            daily: pick(&self.daily, "gale.agg.site.1d", "gale.agg.fleet.1d"),
            peaks: pick(&self.peaks, "gale.peaks", "gale.peaks"),
            dead_letter: pick(
                &self.dead_letter,
                "gale.dlq.rollup-site",
                "gale.dlq.rollup-fleet",
            ),
        }
    }
}

/// What is rolled up and when windows close.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `site`: asset hours into site hours and days; `fleet`: site hours
    /// into fleet hours and days.
    pub scope: String,
    /// How long past a window's end (in the members' event time) it waits
    /// for members before its final record.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How long after that a member's correction still revises it.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// IANA zone of the fleet's days, and of a site's days when its asset
    /// aggregates carry no site zone.
    pub time_zone: String,
    /// A member (asset or site) silent this long by the wall clock is no
    /// longer waited for; its later hours revise what closed without it.
    #[serde(with = "humantime_serde")]
    pub member_idle: Duration,
    /// An hour whose meters received fewer than this share of their
    /// expected readings (a gap in a meter's series, filled or not) is left
    /// out of peak analysis (smart-meter-etl-rules §2).
    pub peak_min_coverage: f64,
    /// Emit a provisional record of a day still open (and its peak hours
    /// so far) each time one of its hours closes, so dashboards show
    /// today's totals; the final record follows as a later revision.
    pub early_updates: bool,
    /// Peak-hour rules (smart-meter-etl-rules §5).
    pub peaks: PeakPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            scope: "site".into(),
            grace: Duration::from_secs(0),
            allowed_lateness: Duration::from_secs(6 * 3600),
            time_zone: "UTC".into(),
            member_idle: Duration::from_secs(120),
            peak_min_coverage: 0.75,
            early_updates: true,
            peaks: PeakPolicy::default(),
        }
    }
}

fn ms(d: Duration, key: &str) -> Result<i64, Error> {
    i64::try_from(d.as_millis()).map_err(|_| Error::Config(format!("key `rollup.{key}`: too long")))
}

impl Settings {
    /// True for the fleet scope; an error naming the key otherwise.
    pub fn fleet(&self) -> Result<bool, Error> {
        match self.scope.as_str() {
            "site" => Ok(false),
            "fleet" => Ok(true),
            other => Err(Error::Config(format!(
                "key `rollup.scope`: expected \"site\" or \"fleet\", got {other:?}"
            ))),
        }
    }

    /// The processor's settings, checked.
    pub fn processor(&self) -> Result<ProcessorSettings, Error> {
        self.peaks.check().map_err(Error::Config)?;
        if !(0.0..=1.0).contains(&self.peak_min_coverage) {
            return Err(Error::Config(format!(
                "key `rollup.peak_min_coverage`: expected a share between 0 and 1, got {}",
                self.peak_min_coverage
            )));
        }
        Ok(ProcessorSettings {
            fleet: self.fleet()?,
            grace_ms: ms(self.grace, "grace")?,
            allowed_lateness_ms: ms(self.allowed_lateness, "allowed_lateness")?,
            zone: zone(&self.time_zone)
                .map_err(|e| Error::Config(format!("key `rollup.time_zone`: {e}")))?,
            peaks: self.peaks.clone(),
            member_idle: self.member_idle,
            peak_min_coverage: self.peak_min_coverage,
            early_updates: self.early_updates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_scope_and_bad_values_name_their_key() {
        let c: Config = toml::from_str("[rollup]\nscope = \"fleet\"\ntime_zone = \"Europe/Berlin\"\n[rollup.peaks]\nholidays = [\"2026-12-25\"]\n").unwrap();
        let s = c.rollup.processor().unwrap();
        assert!(s.fleet);
        assert_eq!(c.topics.resolve(true).input, "gale.agg.site.1h");
        assert_eq!(
            Config::default().topics.resolve(false).hourly,
            "gale.agg.site.1h"
        );
        let mut bad = c.rollup.clone();
        bad.scope = "region".into();
        assert!(bad
            .processor()
            .unwrap_err()
            .to_string()
            .contains("rollup.scope"));
        let e = toml::from_str::<Config>("[rollup]\ngrace_time = \"1m\"\n").unwrap_err();
        assert!(e.to_string().contains("grace_time"), "{e}");
    }
}
