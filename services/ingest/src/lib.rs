//! Gale's ingest stage: readings enter the pipeline here.
//!
//! Two ways in, one way out: HTTP batches ([`api`]) and files dropped in
//! object storage ([`filedrop`]) are read by a per-source column mapping
//! ([`mapping`]) into raw readings with deterministic event ids, which
//! [`writer`] sends to the raw topic keyed by asset id. Nothing is reported
//! accepted before the broker acknowledged it.

pub mod api;
pub mod config;
pub mod filedrop;
pub mod mapping;
pub mod parse;
pub mod writer;

/// Errors of the ingest service.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Invalid configuration; names the key.
    #[error("configuration error: {0}")]
    Config(String),
}
