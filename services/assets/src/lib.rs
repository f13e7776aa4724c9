//! Gale's asset registry: sites, turbine models with their power curves,
//! and the turbines and meters themselves, kept in Postgres.
//!
//! Validate only needs to know that an asset exists and what kind it is;
//! the later stages need much more: enrich computes expected power from a
//! turbine's power curve and a site's local time, detect-faults must know
//! which meters belong to vacant properties. This crate owns that data:
//!
//! - [`registry`]: the plain types the stages look things up in;
//! - [`load`] and [`spawn_refresh`]: one consistent read of the tables, and
//!   a background reload so an import reaches running stages within one
//!   interval, without restarts;
//! - [`import`]: CSV and JSON files (the operator's asset list and power
//!   curve as exported, no SQL), every row checked and every problem
//!   reported together;
//! - [`plan()`] and [`apply`]: what an import would change, field by field,
//!   and the import itself in one transaction.
//!
//! The tables are created by pg-sink's migration `0003_asset_registry.sql`
//! (`gale db migrate`); see `docs/assets.md`.

#![deny(missing_docs)]

pub mod import;
#[cfg(test)]
mod pg_tests;
pub mod plan;
pub mod refresh;
pub mod registry;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use import::{parse, parse_files, parse_texts, ImportErrors, ImportSet, Issue, TableKind};
pub use plan::{diff, Action, FieldChange, Plan, RowChange, TablePlan};
pub use refresh::{spawn_refresh, LiveRegistry, READINESS_CHECK};
pub use registry::{Asset, CurvePoint, Registry, Site, TurbineModel};
pub use store::{apply, load, plan};

/// Errors of the asset registry.
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    /// The registry's tables or columns are missing: the database has not
    /// been migrated. Permanent until someone runs the migrations.
    #[error(
        "the asset registry tables are missing or incomplete ({0}); run `gale db migrate` \
         (pg-sink migration 0003_asset_registry) or start pg-sink with database.migrate = true"
    )]
    NotMigrated(String),
    /// Postgres refused the import's data (a constraint); permanent for
    /// this import, nothing was written.
    #[error("Postgres refused the import, nothing was written: {0}")]
    Rejected(String),
    /// Postgres is unreachable or failing: transient, try again later.
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    /// Rows of the import are invalid (against the files or against what is
    /// stored); permanent until the files are fixed, nothing was written.
    #[error(transparent)]
    Invalid(#[from] ImportErrors),
    /// Shutdown was requested before the first load succeeded.
    #[error("shut down before the asset registry was loaded")]
    Shutdown,
}

impl AssetsError {
    /// True for failures that may pass by waiting (the database is down).
    pub fn is_transient(&self) -> bool {
        matches!(self, AssetsError::Database(_))
    }
}
