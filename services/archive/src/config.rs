//! Configuration of `gale-archive`.

use std::time::Duration;

use gale_runtime::config::{
    HttpConfig, KafkaConfig, ProcessingConfig, RegistryConfig, RuntimeConfig, TelemetryConfig,
};
use gale_runtime::storage::StoreConfig;
use serde::Deserialize;

use crate::layout::Granularity;
use crate::ArchiveError;

/// Everything `gale-archive` reads from its TOML file and `GALE_*` variables.
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
    /// The lake.
    pub archive: Settings,
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

/// Parquet compression codec.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Snappy: fast, the default.
    #[default]
    Snappy,
    /// Zstandard: smaller files, more CPU.
    Zstd,
    /// No compression.
    None,
}

impl Codec {
    /// Name for manifests.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Snappy => "snappy",
            Codec::Zstd => "zstd",
            Codec::None => "none",
        }
    }
}

/// Where and how the lake is written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The store: a directory (`./.gale/lake`) or `s3://bucket/prefix` with options.
    pub store: StoreConfig,
    /// Parquet compression: `snappy` (default), `zstd` or `none`.
    pub compression: Codec,
    /// Most rows per Parquet row group.
    pub row_group_rows: usize,
    /// A Kafka partition's buffer is written once the records it holds
    /// reach this many bytes (their Avro size; the Parquet files are
    /// usually smaller, being columnar and compressed).
    pub max_file_bytes: usize,
    /// ...or once its oldest row waited this long, whichever comes first.
    #[serde(with = "humantime_serde")]
    pub max_file_age: Duration,
    /// Memory all buffers together may hold (their Arrow size). Above it the
    /// largest buffers are written early, so a backfill cannot exhaust
    /// memory however many partitions and hours it spans.
    pub max_buffer_bytes: usize,
    /// Most event ids remembered per archive for deduplication across files
    /// (see docs/lake.md); beyond it the least recently written Hive
    /// partitions are forgotten and read back from their files when written
    /// again.
    pub dedupe_memory_ids: usize,
    /// Dead-letter topic for records that cannot be read.
    pub dead_letter: String,
    /// Topic → table mappings.
    pub tables: Vec<TableConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            store: StoreConfig {
                url: "./.gale/lake".into(),
                options: Default::default(),
                slow_writes: None,
            },
            compression: Codec::Snappy,
            row_group_rows: 128 * 1024,
            max_file_bytes: 64 * 1024 * 1024,
            max_file_age: Duration::from_secs(60),
            max_buffer_bytes: 512 * 1024 * 1024,
            dedupe_memory_ids: 2_000_000,
            dead_letter: "gale.dlq.archive".into(),
            tables: vec![
                TableConfig::new("gale.raw", "bronze/raw_readings"),
                TableConfig::new("gale.validated", "silver/validated_readings"),
                TableConfig::new("gale.quarantine", "silver/quarantined_readings"),
                TableConfig::new("gale.checked", "gold/checked_readings"),
                TableConfig {
                    time_field: "updated_time".into(),
                    partitioning: Granularity::Day,
                    ..TableConfig::new("gale.faults", "gold/fault_events")
                },
                aggregates("10m"),
                aggregates("1h"),
                aggregates("1d"),
                rollup("gale.agg.site.1h", "site", "1h"),
                rollup("gale.agg.site.1d", "site", "1d"),
                rollup("gale.agg.fleet.1h", "fleet", "1h"),
                rollup("gale.agg.fleet.1d", "fleet", "1d"),
            ],
        }
    }
}

/// An aggregate grain under `gold/asset_aggregates/grain=<grain>`, so the
/// three read as one table Hive-partitioned by grain and date. Every
/// revision is kept (its `event_id` names it); readers take the highest per
/// `aggregate_id`.
fn aggregates(grain: &str) -> TableConfig {
    TableConfig {
        time_field: "window_start".into(),
        partitioning: Granularity::Day,
        ..TableConfig::new(
            &format!("gale.agg.asset.{grain}"),
            &format!("gold/asset_aggregates/grain={grain}"),
        )
    }
}

/// A roll-up grain under `gold/<scope>_aggregates/grain=<grain>`.
fn rollup(topic: &str, scope: &str, grain: &str) -> TableConfig {
    TableConfig {
        time_field: "window_start".into(),
        partitioning: Granularity::Day,
        ..TableConfig::new(topic, &format!("gold/{scope}_aggregates/grain={grain}"))
    }
}

/// One topic archived as one table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Topic consumed.
    pub topic: String,
    /// Table prefix in the store, e.g. `silver/validated_readings`.
    pub path: String,
    /// Field with the event time (a timestamp or epoch-millisecond long) the
    /// `date=`/`hour=` partitions come from.
    #[serde(default = "default_time_field")]
    pub time_field: String,
    /// More Hive partition levels from record fields, e.g. `["asset_kind"]`.
    /// As Hive does, such a field is kept out of the files: readers with Hive
    /// partitioning get it back from the path.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// How finely event time cuts the table: `hour` (`date=…/hour=…`, the
    /// default: live tables), `day` (`date=…`: history, backfills) or
    /// `month` (`year=…/month=…`).
    #[serde(default)]
    pub partitioning: Granularity,
    /// Field whose value identifies a row: a row whose value is already in
    /// the table partition is not written again. Empty: no deduplication.
    #[serde(default = "default_dedupe_key")]
    pub dedupe_key: String,
}

fn default_dedupe_key() -> String {
    "event_id".into()
}

fn default_time_field() -> String {
    "event_time".into()
}

impl TableConfig {
    fn new(topic: &str, path: &str) -> Self {
        TableConfig {
            topic: topic.into(),
            path: path.into(),
            time_field: default_time_field(),
            partition_by: Vec::new(),
            partitioning: Granularity::Hour,
            dedupe_key: default_dedupe_key(),
        }
    }
}

impl Settings {
    /// Checks the tables.
    pub fn check(&self) -> Result<(), ArchiveError> {
        if self.tables.is_empty() {
            return Err(ArchiveError::Config(
                "key `archive.tables`: no tables configured".into(),
            ));
        }
        for (i, t) in self.tables.iter().enumerate() {
            if t.path.trim_matches('/').is_empty() || t.path.contains("..") {
                return Err(ArchiveError::Config(format!(
                    "key `archive.tables[{i}].path`: {:?} is not a table path like silver/readings",
                    t.path
                )));
            }
        }
        if self.row_group_rows == 0 || self.max_file_bytes == 0 {
            return Err(ArchiveError::Config(
                "keys `archive.row_group_rows` and `archive.max_file_bytes` must be positive"
                    .into(),
            ));
        }
        if self.max_buffer_bytes < self.max_file_bytes {
            return Err(ArchiveError::Config(format!(
                "key `archive.max_buffer_bytes`: {} is below `archive.max_file_bytes` ({}); one buffer alone may hold that much",
                self.max_buffer_bytes, self.max_file_bytes
            )));
        }
        let mut topics = std::collections::BTreeSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            if !topics.insert(&t.topic) {
                return Err(ArchiveError::Config(format!(
                    "key `archive.tables[{i}].topic`: topic {:?} is archived twice; one table per topic",
                    t.topic
                )));
            }
        }
        Ok(())
    }
}
