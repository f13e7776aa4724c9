//! The `gale` operator CLI: traffic simulation now; topic, lake and
//! database operations join it as the pipeline grows.

pub mod assets;
pub mod backfill;
pub mod dlq;
pub mod dlq_ingest;
pub mod energy;
pub mod faults;
pub mod fleet_registry;
pub mod inspect;
pub mod replay;
pub mod send;
pub mod simulate;
pub mod status;
pub mod status_page;
pub mod timearg;
