//! Configuration of `gale-pg-sink`.

use std::time::Duration;

use gale_runtime::config::{
    HttpConfig, KafkaConfig, ProcessingConfig, RegistryConfig, RuntimeConfig, Secret,
    TelemetryConfig,
};
use serde::Deserialize;

use crate::PgSinkError;

/// Everything `gale-pg-sink` reads from its TOML file and `GALE_*` variables.
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
    /// Batching, retries, shutdown (`batch_size` is rows per transaction).
    pub processing: ProcessingConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Topics and tables.
    pub sink: Settings,
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
            state: Default::default(),
        }
    }
}

/// Where Postgres is.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db`; defaults to `DATABASE_URL`.
    /// The password never appears in logs.
    pub url: Option<Secret>,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a connection before treating the database as down.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Daily partitions created ahead of today; rows further ahead go to
    /// the table's default partition (and move to their day's partition
    /// when it is created).
    pub partitions_ahead_days: u32,
    /// Earliest day that gets a partition of its own; older rows go to the
    /// default partition, so one absurd timestamp cannot create a partition
    /// for its year.
    pub partitions_from: chrono::NaiveDate,
    /// Apply the migrations in `services/pg-sink/migrations` at start.
    pub migrate: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
            partitions_ahead_days: 3,
            partitions_from: chrono::NaiveDate::from_ymd_opt(1990, 1, 1).expect("a date"),
            migrate: true,
        }
    }
}

impl DatabaseConfig {
    /// The connection URL.
    pub fn url(&self) -> Result<Secret, PgSinkError> {
        match &self.url {
            Some(u) => Ok(u.clone()),
            None => std::env::var("DATABASE_URL").map(Secret::new).map_err(|_| {
                PgSinkError::Config(
                    "key `database.url`: not set, and DATABASE_URL is not set either".into(),
                )
            }),
        }
    }
}

/// Which topic goes to which table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Dead-letter topic for records Postgres refuses.
    pub dead_letter: String,
    /// Topic → table mappings.
    pub tables: Vec<TableMapping>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dead_letter: "gale.dlq.pg-sink".into(),
            tables: vec![
                TableMapping::new("gale.raw", "raw_readings", None),
                TableMapping::new(
                    "gale.validated",
                    "readings",
                    Some(LatestTable {
                        table: "latest_readings".into(),
                        key: "asset_id".into(),
                        max_ahead: default_max_ahead(),
                        order_by: None,
                    }),
                ),
                TableMapping::new("gale.quarantine", "quarantined_readings", None),
                TableMapping {
                    topic: "gale.faults".into(),
                    table: "fault_events".into(),
                    time_column: "updated_time".into(),
                    latest: Some(LatestTable {
                        table: "faults".into(),
                        key: "fault_id".into(),
                        max_ahead: default_max_ahead(),
                        order_by: Some("revision".into()),
                    }),
                },
                aggregates("10m"),
                aggregates("1h"),
                aggregates("1d"),
                rollup("gale.agg.site.1h", "agg_site_1h"),
                rollup("gale.agg.site.1d", "agg_site_1d"),
                rollup("gale.agg.fleet.1h", "agg_fleet_1h"),
                rollup("gale.agg.fleet.1d", "agg_fleet_1d"),
                TableMapping {
                    topic: "gale.peaks".into(),
                    table: "peaks_revisions".into(),
                    time_column: "local_date".into(),
                    latest: Some(LatestTable {
                        table: "peaks".into(),
                        key: "peak_id".into(),
                        max_ahead: default_max_ahead(),
                        order_by: Some("revision".into()),
                    }),
                },
            ],
        }
    }
}

/// An aggregate grain: every revision, and the newest per window.
fn aggregates(grain: &str) -> TableMapping {
    TableMapping {
        topic: format!("gale.agg.asset.{grain}"),
        table: format!("agg_asset_{grain}_revisions"),
        time_column: "window_start".into(),
        latest: Some(LatestTable {
            table: format!("agg_asset_{grain}"),
            key: "aggregate_id".into(),
            max_ahead: default_max_ahead(),
            order_by: Some("revision".into()),
        }),
    }
}

/// A roll-up topic: every revision, and the newest per window.
fn rollup(topic: &str, table: &str) -> TableMapping {
    TableMapping {
        topic: topic.into(),
        table: format!("{table}_revisions"),
        time_column: "window_start".into(),
        latest: Some(LatestTable {
            table: table.into(),
            key: "aggregate_id".into(),
            max_ahead: default_max_ahead(),
            order_by: Some("revision".into()),
        }),
    }
}

/// One topic stored in one table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMapping {
    /// Topic consumed.
    pub topic: String,
    /// Table written; columns are matched to Avro fields by name.
    pub table: String,
    /// Column the table is partitioned by (daily partitions are created for it).
    #[serde(default = "default_time_column")]
    pub time_column: String,
    /// Also keep the newest row per key in this table.
    pub latest: Option<LatestTable>,
}

/// A "newest row per key" table kept beside the main one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatestTable {
    /// Table name (same columns as the main table).
    pub table: String,
    /// Its primary-key column.
    pub key: String,
    /// A row stamped further ahead of the clock than this never becomes
    /// the newest row (a reading from the future must not pin the
    /// dashboard until its date).
    #[serde(default = "default_max_ahead", with = "humantime_serde")]
    pub max_ahead: Duration,
    /// Column deciding which row is newer; the mapping's `time_column` when
    /// unset (a fault's `revision`, say, where two events share a time).
    #[serde(default)]
    pub order_by: Option<String>,
}

fn default_max_ahead() -> Duration {
    Duration::from_secs(3600)
}

fn default_time_column() -> String {
    "event_time".into()
}

impl TableMapping {
    fn new(topic: &str, table: &str, latest: Option<LatestTable>) -> Self {
        TableMapping {
            topic: topic.into(),
            table: table.into(),
            time_column: default_time_column(),
            latest,
        }
    }
}

/// True for a plain SQL identifier (what table and column names may be).
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 50
}

impl Settings {
    /// Checks names before they go near SQL.
    pub fn check(&self) -> Result<(), PgSinkError> {
        if self.tables.is_empty() {
            return Err(PgSinkError::Config(
                "key `sink.tables`: no tables configured".into(),
            ));
        }
        for (i, t) in self.tables.iter().enumerate() {
            for (key, name) in [("table", &t.table), ("time_column", &t.time_column)] {
                if !is_identifier(name) {
                    return Err(PgSinkError::Config(format!(
                        "key `sink.tables[{i}].{key}`: {name:?} is not a plain lower-case SQL identifier"
                    )));
                }
            }
            if let Some(l) = &t.latest {
                let order = l.order_by.as_ref().unwrap_or(&t.time_column);
                for (key, name) in [
                    ("latest.table", &l.table),
                    ("latest.key", &l.key),
                    ("latest.order_by", order),
                ] {
                    if !is_identifier(name) {
                        return Err(PgSinkError::Config(format!(
                            "key `sink.tables[{i}].{key}`: {name:?} is not a plain lower-case SQL identifier"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        assert!(is_identifier("readings"));
        assert!(is_identifier("_x1"));
        assert!(!is_identifier("Readings"));
        assert!(!is_identifier("r; drop table x"));
        let mut s = Settings::default();
        s.tables[0].table = "bad name".into();
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("sink.tables[0].table"), "{e}");
    }
}
