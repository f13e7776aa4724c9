//! Gale's enrich stage: validated readings in, readings with asset context
//! out.
//!
//! Adds what the asset registry knows (site, time zone, location, model,
//! rated power, a meter's feeder, capacity and vacancy) and, for turbines,
//! the power the model's curve promises at the measured wind speed (after
//! air-density normalisation), the deficit against it and the capacity
//! factor. The work is in [`context`] and [`curve`], plain functions of the
//! reading and a registry snapshot; [`processor`] adapts them to the runtime
//! loop, and the registry is reloaded in the background, so imported assets
//! reach the stage within its refresh interval without a restart.

pub mod config;
pub mod context;
pub mod curve;
pub mod processor;

/// Errors of the enrich service.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// Invalid configuration; names the key.
    #[error("configuration error: {0}")]
    Config(String),
    /// The asset registry could not be opened.
    #[error("asset registry: {0}")]
    Assets(String),
}
