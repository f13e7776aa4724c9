//! A small Confluent-compatible schema registry for Gale's local stack and tests.
//!
//! No Confluent, Karapace or Apicurio registry can be installed where Gale is
//! developed, so this crate provides the REST endpoints client libraries use
//! (register, look up, get by id, latest, versions, subjects, config,
//! compatibility) with BACKWARD/FORWARD/FULL (and transitive) checks from
//! `apache-avro`, persisted to a JSON file. Production deployments point the
//! services at Confluent Schema Registry, Karapace, Apicurio or Redpanda
//! instead; the services use only the standard API and need no change.

pub mod api;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use gale_runtime::config::TelemetryConfig;
use serde::Deserialize;

/// Errors of the registry, each mapped to a Confluent error code.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402.
    #[error("Version not found for subject '{0}'.")]
    VersionNotFound(String),
    /// 40403.
    #[error("Schema not found")]
    SchemaNotFound,
    /// 40408.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// 409.
    #[error("{0}")]
    Incompatible(String),
    /// 42201.
    #[error("{0}")]
    InvalidSchema(String),
    /// 42202.
    #[error("{0}")]
    InvalidVersion(String),
    /// 42203.
    #[error("{0}")]
    InvalidCompatibility(String),
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 50001: the state file could not be read or written.
    #[error("storage error: {0}")]
    Storage(String),
}

/// Configuration of `gale-registry`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The registry's own settings.
    pub server: ServerConfig,
    /// Logs.
    pub telemetry: TelemetryConfig,
}

/// Where the registry listens and keeps its state.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for the API and the `/healthz`, `/readyz`, `/metrics` probes.
    pub listen: SocketAddr,
    /// JSON file holding subjects and schemas across restarts; unset keeps
    /// everything in memory.
    pub data_file: Option<PathBuf>,
    /// Global compatibility level for subjects without their own.
    pub compatibility: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            data_file: None,
            compatibility: "BACKWARD".into(),
        }
    }
}
