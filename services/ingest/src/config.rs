//! Configuration of `gale-ingest`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gale_runtime::config::{
    HttpConfig, KafkaConfig, ProcessingConfig, RegistryConfig, RuntimeConfig, TelemetryConfig,
};
use serde::Deserialize;

use crate::filedrop::FileDropConfig;
use crate::mapping::{SourceConfig, SourceMapping};
use crate::IngestError;

/// Everything `gale-ingest` reads from its TOML file and `GALE_*` variables.
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
    /// Retry and shutdown settings.
    pub processing: ProcessingConfig,
    /// Topic names.
    pub topics: Topics,
    /// Ingest settings.
    pub ingest: Settings,
}

/// Topics ingest writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Raw readings.
    pub raw: String,
    /// Unreadable files and rows from file drops.
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            raw: "gale.raw".into(),
            dead_letter: "gale.dlq.ingest".into(),
        }
    }
}

/// The API, sources and file drops.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address of the readings API (probes and metrics stay on `http.listen`).
    pub listen: SocketAddr,
    /// Largest request body (after decompression); larger ones get 413.
    pub max_body_bytes: usize,
    /// Most rows in one request or dropped file; more get 413 (split it).
    pub max_rows: usize,
    /// Requests handled at once; beyond it 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Request bodies held in memory at once (declared or limit sizes);
    /// beyond it 503 with `Retry-After`.
    pub max_inflight_bytes: usize,
    /// A request's body must arrive within this (408 otherwise), so a
    /// stalled upload cannot hold a slot.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A request's headers must arrive within this; an idle or stalled
    /// connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Open connections at most; beyond it new ones get 503 and are closed.
    pub max_connections: usize,
    /// How long a request waits for the broker to acknowledge its rows before
    /// answering 503 (also the producer's delivery timeout).
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Most row errors listed in one answer.
    pub max_listed_errors: usize,
    /// Sources: API keys and column mappings.
    pub sources: Vec<SourceConfig>,
    /// Watched object-store prefixes.
    pub file_drops: Vec<FileDropConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_body_bytes: 16 * 1024 * 1024,
            max_rows: 100_000,
            max_concurrent_requests: 16,
            max_inflight_bytes: 64 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            ack_timeout: Duration::from_secs(10),
            max_listed_errors: 1000,
            sources: Vec::new(),
            file_drops: Vec::new(),
        }
    }
}

impl Config {
    /// The sections the shared runtime needs; the producer's delivery timeout
    /// is the API's acknowledgement timeout.
    pub fn runtime(&self) -> RuntimeConfig {
        let mut kafka = self.kafka.clone();
        kafka.delivery_timeout = self.ingest.ack_timeout;
        RuntimeConfig {
            kafka,
            registry: self.registry.clone(),
            http: self.http.clone(),
            telemetry: self.telemetry.clone(),
            processing: self.processing.clone(),
            state: Default::default(),
        }
    }

    /// Checks the sources and file drops and builds their mappings.
    pub fn mappings(&self) -> Result<Vec<Arc<SourceMapping>>, IngestError> {
        let i = &self.ingest;
        for (key, v) in [
            ("max_body_bytes", i.max_body_bytes),
            ("max_rows", i.max_rows),
            ("max_concurrent_requests", i.max_concurrent_requests),
            ("max_connections", i.max_connections),
        ] {
            if v == 0 {
                return Err(IngestError::Config(format!(
                    "key `ingest.{key}`: must be more than 0"
                )));
            }
        }
        if i.max_inflight_bytes < i.max_body_bytes {
            return Err(IngestError::Config(format!(
                "key `ingest.max_inflight_bytes`: {} is below `ingest.max_body_bytes` ({}); no request of the largest size could be taken",
                i.max_inflight_bytes, i.max_body_bytes
            )));
        }
        if self.ingest.sources.is_empty() {
            return Err(IngestError::Config(
                "key `ingest.sources`: no sources configured; add at least one [[ingest.sources]] with a name and api_keys".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        let mut out = Vec::new();
        for (i, source) in self.ingest.sources.iter().enumerate() {
            let key = format!("ingest.sources[{i}]");
            if !names.insert(source.name.clone()) {
                return Err(IngestError::Config(format!(
                    "key `{key}.name`: source {:?} is defined twice",
                    source.name
                )));
            }
            for k in &source.api_keys {
                if k.expose().len() < 8 {
                    return Err(IngestError::Config(format!(
                        "key `{key}.api_keys`: keys must be at least 8 characters"
                    )));
                }
                if !keys.insert(k.expose().to_string()) {
                    return Err(IngestError::Config(format!(
                        "key `{key}.api_keys`: a key is used by two sources"
                    )));
                }
            }
            out.push(Arc::new(
                SourceMapping::new(source.clone(), &key).map_err(IngestError::Config)?,
            ));
        }
        for (i, drop) in self.ingest.file_drops.iter().enumerate() {
            drop.check(&format!("ingest.file_drops[{i}]"))
                .map_err(IngestError::Config)?;
            if !names.contains(&drop.source) {
                return Err(IngestError::Config(format!(
                    "key `ingest.file_drops[{i}].source`: no source named {:?} in ingest.sources",
                    drop.source
                )));
            }
        }
        Ok(out)
    }
}
