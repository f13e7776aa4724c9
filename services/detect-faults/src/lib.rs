//! The fault-detection domain of Gale's detect-faults stage: turbine and
//! meter fault rules with a SCADA-like alarm lifecycle, kept in durable
//! per-asset state. Plain types and functions, no I/O and no clock, so
//! every rule is unit-tested without a broker.
//!
//! # How the stage uses it
//!
//! The stage consumes enriched readings keyed by asset id and keeps one
//! [`AssetState`] per asset in the runtime's changelog. For each reading it
//! builds a [`Sample`] and calls [`Detector::observe`], which returns the
//! [`FaultChange`] events to publish and the faults to annotate the reading
//! with ([`Observation`]). When the partition's watermark passes
//! [`Detector::next_due`] it calls [`Detector::advance`], which is how a
//! silent asset gets its MISSING_SHORT and MISSING_EXTENDED faults.
//!
//! # Why it is built this way
//!
//! * **Event time only.** Every decision uses the readings' event times and
//!   the watermark, never the clock, so a replay after a crash meets the
//!   same state with the same readings and emits the same events with the
//!   same ids (`{asset}:{CODE}:{opened_time}`) and revisions.
//! * **Gaps the same with or without a timer.** A gap fault opens at the
//!   time its threshold was reached, never at the time somebody noticed; a
//!   reading that ends a silence no timer saw settles it first exactly as
//!   the timer would have. The stored result does not depend on when the
//!   watermark moved.
//! * **Bounded state.** Runs are a start, an end, a count and a worst value;
//!   LOW_VARIANCE keeps exact integer sums per day, not readings. The state
//!   never grows with the number of readings.
//! * **Hysteresis and hold times** ([`rules`]) stop a value hovering at a
//!   threshold from opening and closing a fault on every reading, and
//!   UPDATED is sent only for a new peak beyond a margin or an escalation.
//! * **Rules are data.** Thresholds, holds, severities and maintenance
//!   flags live in `rules/default.toml`; a bad file stops the stage at start
//!   with the key's name.
//!
//! # Not here: neighbourhood correlation
//!
//! Section 4.5 of the meter rules flags a meter whose load correlates
//! poorly (< 0.3) with its neighbours'. That needs the other meters of the
//! feeder at the same times, while this stage sees one asset's readings at
//! a time (partitioned by asset id, state per asset). It belongs in the
//! aggregate stage, which groups a feeder's meters into common windows and
//! can correlate each against the rest.

#![deny(missing_docs)]

mod alarm;
pub mod config;
mod detector;
mod fault;
pub mod processor;
pub mod rules;
mod sample;
mod state;
mod variance;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use detector::{Detector, Observation};
pub use fault::{fault_id, ActiveFault, AssetKind, FaultChange, FaultCode, FaultStatus, Severity};
pub use rules::{Rules, DEFAULT_RULES};
pub use sample::Sample;
pub use state::AssetState;

/// What can go wrong. Only loading the rules can fail: applying them to
/// readings cannot. Every variant is permanent (fix the file and restart).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rules file could not be read.
    #[error("cannot read rules file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The rules file is not valid TOML of the expected shape; the message
    /// names the key and its line.
    #[error("rules file: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent with another.
    #[error("rules file: key `{key}`: {message}")]
    Invalid {
        /// Dotted path of the key, e.g. `turbine.gearbox_overheat.clear_threshold`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}
