//! Gale's validate stage: raw readings in, scored readings out.
//!
//! Applies the rules of `smart-meter-etl-rules.md` (unit standardisation,
//! asset registry verification, timestamp sanity, physical limits, rate of
//! change, quality score) to every raw reading. Readings scoring 70 or more go
//! to the validated topic, lower ones (or ones a quarantining rule caught) to
//! the quarantine topic, and rejected ones to the dead-letter topic with the
//! reason. The rules are in [`rules`] as data plus a pure function, what is
//! remembered per asset (durable state kept by the runtime) in [`history`];
//! this crate's [`processor`] only adapts them to the shared runtime loop.

pub mod assets;
pub mod config;
pub mod history;
pub mod processor;
pub mod rules;
pub mod units;

/// Errors of the validate service.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// Invalid configuration; names the key.
    #[error("configuration error: {0}")]
    Config(String),
    /// The asset registry could not be loaded.
    #[error("asset registry: {0}")]
    Assets(String),
    /// Shutdown was requested before start-up finished.
    #[error("shut down during start-up")]
    Shutdown,
    /// The rules file is invalid.
    #[error("rules file {path}: {message}")]
    Rules {
        /// Which file.
        path: String,
        /// What is wrong, with the key.
        message: String,
    },
}
