//! `gale-rollup`: site and fleet roll-ups of the hourly asset aggregates.
//!
//! Re-keying readings per site would mean a repartition topic carrying
//! every reading again; the roll-up is instead a second stage over the
//! hourly asset aggregates (already keyed by site), which are a few per
//! asset-hour. One deployment (`rollup.scope = "site"`) sums asset hours
//! into site hours and the site's local days, with each day's peak hours;
//! a second (`fleet`) sums the site hours, which the first writes under one
//! key, into fleet hours, days and peaks. [`part`] holds the sums;
//! [`processor`] the windows.

pub mod config;
pub mod part;
pub mod processor;

#[cfg(test)]
mod tests;

/// What can go wrong in rollup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config value is wrong (the message names the key).
    #[error("configuration: {0}")]
    Config(String),
}
