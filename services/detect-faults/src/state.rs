//! What the stage remembers per asset between readings, durable through the
//! runtime's changelog.
//!
//! The value is written as JSON after every change and 10 000 of them are
//! restored at start, so it is small and bounded: a few times, one entry per
//! rule that is in progress (none for rules at rest), and at most
//! `window + 1` day buckets for LOW_VARIANCE. Nothing grows with the number
//! of readings. Fields are private: only the [`crate::Detector`] changes
//! them, so the runs and open faults stay consistent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fault::{fault_id, ActiveFault, AssetKind, FaultCode, Severity};

/// Per-asset state of the fault rules. Start with `AssetState::default()`
/// for an asset never seen; [`crate::Detector::observe`] fills it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssetState {
    /// The asset, so timer calls can name it in events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) asset_id: String,
    /// Kind of the latest reading: selects the rules for timer calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<AssetKind>,
    /// Latest event time of any reading, trusted or quarantined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_seen: Option<i64>,
    /// Declared spacing (ms) of that reading: a silence counts from
    /// `last_seen + interval_ms`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) interval_ms: i64,
    /// Latest event time of a trusted (not quarantined) reading: value
    /// rules only take readings after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_trusted: Option<i64>,
    /// How far the current silence has been taken by timer calls.
    #[serde(default, skip_serializing_if = "Silence::is_quiet")]
    pub(crate) silence: Silence,
    /// Rules in progress: a run building up, a fault open or clearing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) tracks: BTreeMap<FaultCode, Track>,
    /// LOW_VARIANCE's sums per UTC day, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) days: Vec<DayBucket>,
}

/// How far a silence has gone; reset by the next reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Silence {
    /// Nothing noticed yet.
    #[default]
    Quiet,
    /// MISSING_SHORT's threshold was passed.
    Short,
    /// MISSING_EXTENDED's threshold was passed.
    Extended,
    /// `retire_after` was passed (never stored: retiring empties the state).
    Retired,
}

impl Silence {
    fn is_quiet(&self) -> bool {
        *self == Silence::Quiet
    }
}

/// One rule's progress on one asset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Track {
    /// Readings in a row meeting the fault condition, while not open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Run>,
    /// Readings in a row meeting the clear condition, while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearing: Option<Run>,
    /// The open fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<OpenFault>,
}

impl Track {
    pub fn is_empty(&self) -> bool {
        self.pending.is_none() && self.clearing.is_none() && self.open.is_none()
    }
}

/// Consecutive readings meeting a condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Run {
    /// Event time of the first.
    pub since: i64,
    /// Event time of the latest.
    pub last: i64,
    /// How many.
    pub count: u32,
    /// The worst value among them (for STUCK_VALUE: the stuck value).
    pub worst: f64,
}

/// A fault that is open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpenFault {
    /// Event time it opened at (part of its id).
    pub opened: i64,
    /// Severity now.
    pub severity: Severity,
    /// The maintenance flag it opened with.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maintenance: bool,
    /// Revision of its latest event.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub revision: u32,
    /// Value of the opening reading.
    pub trigger: f64,
    /// Worst value so far.
    pub peak: f64,
    /// Peak of the latest event: UPDATED needs a margin beyond it.
    pub reported: f64,
    /// Limit it opened against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// Exact sums of one UTC day's power, in units of `resolution_kw`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DayBucket {
    /// Days since the epoch.
    pub day: i64,
    /// Readings.
    pub n: u32,
    /// Sum of the quantised values.
    pub sum: i64,
    /// Sum of their squares.
    pub sum_sq: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

impl AssetState {
    /// The asset this state belongs to (empty before its first reading).
    pub fn asset_id(&self) -> &str {
        &self.asset_id
    }

    /// Kind of the asset's latest reading.
    pub fn kind(&self) -> Option<AssetKind> {
        self.kind
    }

    /// Event time of the asset's latest reading, quarantined ones included.
    pub fn last_seen(&self) -> Option<i64> {
        self.last_seen
    }

    /// Faults open on the asset now, in [`FaultCode::ALL`] order.
    pub fn active_faults(&self) -> Vec<ActiveFault> {
        self.tracks
            .iter()
            .filter_map(|(code, track)| {
                track.open.as_ref().map(|open| ActiveFault {
                    fault_id: fault_id(&self.asset_id, *code, open.opened),
                    code: *code,
                    severity: open.severity,
                })
            })
            .collect()
    }

    /// True when nothing is remembered: no reading seen (or the asset was
    /// retired) and no fault open.
    pub fn is_empty(&self) -> bool {
        *self == AssetState::default()
    }

    pub(crate) fn is_open(&self, code: FaultCode) -> bool {
        self.tracks.get(&code).is_some_and(|t| t.open.is_some())
    }
}
