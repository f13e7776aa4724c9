//! A small Confluent-compatible schema registry for Gale's local stack and tests.
//!
//! No Confluent, Karapace or Apicurio registry can be installed where Gale is
//! developed, so this crate provides the REST endpoints client libraries use
//! (register, look up, get by id, latest, versions, subjects, soft and
//! permanent deletes, config, compatibility) with BACKWARD/FORWARD/FULL (and
//! transitive) checks from `apache-avro`, persisted to a JSON file that is
//! replaced atomically and durably on every change (see `store`). Production deployments point the
//! services at Confluent Schema Registry, Karapace, Apicurio or Redpanda
//! instead; the services use only the standard API and need no change.

pub mod api;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use gale_runtime::config::TelemetryConfig;
use serde::Deserialize;

/// Errors of the registry, each mapped to Confluent's HTTP status and error
/// code (see `api`), so clients that branch on `error_code` behave as they
/// would against Confluent Schema Registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 404 / 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 404 / 40402.
    #[error("Version {version} not found for subject '{subject}'.")]
    VersionNotFound {
        /// Subject asked for.
        subject: String,
        /// Version asked for, as given (a number or `latest`).
        version: String,
    },
    /// 404 / 40403: no schema with this id, or the schema is not registered
    /// under the subject.
    #[error("{}", match .0 { Some(id) => format!("Schema {id} not found"), None => "Schema not found".into() })]
    SchemaNotFound(Option<i64>),
    /// 404 / 40404: soft-deleting a subject that is already soft-deleted.
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// 404 / 40405: permanent delete of a subject with live versions.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 404 / 40406: soft-deleting a version that is already soft-deleted.
    #[error("Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// 404 / 40407: permanent delete of a live version.
    #[error("Subject '{subject}' Version {version} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// 404 / 40408.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// 404 / 40409.
    #[error("Subject '{0}' does not have subject-level mode configured")]
    SubjectModeNotFound(String),
    /// 409 / 409.
    #[error("{0}")]
    Incompatible(String),
    /// 422 / 42201.
    #[error("{0}")]
    InvalidSchema(String),
    /// 422 / 42202.
    #[error("{0}")]
    InvalidVersion(String),
    /// 422 / 42203.
    #[error("{0}")]
    InvalidCompatibility(String),
    /// 422 / 42204.
    #[error("{0}")]
    InvalidMode(String),
    /// 400 / 400: a request body that is not the expected JSON.
    #[error("{0}")]
    BadRequest(String),
    /// Any other HTTP failure (unknown path, wrong method, body too large);
    /// like Confluent, the error code is the HTTP status.
    #[error("{message}")]
    Http {
        /// HTTP status, also used as the error code.
        status: u16,
        /// What went wrong.
        message: String,
    },
    /// 500 / 50001: the state file could not be read, written or trusted.
    #[error("storage error: {0}")]
    Storage(String),
}

impl RegistryError {
    /// An error whose code is its HTTP status, with Confluent's wording
    /// (`HTTP 404 Not Found`) followed by `detail` when there is one.
    pub fn http(status: u16, detail: &str) -> RegistryError {
        let reason = axum::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let mut message = format!("HTTP {status} {reason}");
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        RegistryError::Http { status, message }
    }
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
    /// Global compatibility level for subjects without their own, when the
    /// data file is new (and what `DELETE /config` restores). An existing
    /// data file keeps the level it holds, changed with `PUT /config`; a
    /// different setting here is then logged as ignored.
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
