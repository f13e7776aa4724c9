//! `gale-aggregate`: event-time windows over checked readings.
//!
//! Each asset's readings are summarised over ten-minute and hourly windows
//! (UTC) and the site's calendar day ([`window`]); what a reading adds is
//! plain arithmetic in [`acc`] and [`stats`], with no Kafka in sight.
//! [`processor`] keeps the open windows in the runtime's durable state and
//! closes them with its event-time timers, so a replay, a crash or a
//! rebalance yields the same aggregates; [`gaps`] fills short holes in the
//! hourly series and [`peaks`] picks a day's peak hours.

pub mod acc;
pub mod config;
pub mod gaps;
pub mod peaks;
pub mod processor;
pub mod stats;
pub mod window;

#[cfg(test)]
mod tests;

/// What can go wrong in aggregate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config value is wrong (the message names the key).
    #[error("configuration: {0}")]
    Config(String),
}
