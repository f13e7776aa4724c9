//! What validate remembers of each asset: its most recent readings, by
//! event time, kept as durable keyed state by the runtime.
//!
//! A reading's score depends on what came before it (the rate-of-change
//! baseline), so that memory must survive crashes, restarts and rebalances
//! exactly, or the same reading could be validated in one run and
//! quarantined in another. The runtime keeps an [`AssetHistory`] per asset
//! in the stage's changelog (see `gale_runtime::state`); this module says
//! what is in it and what it answers:
//!
//! * the **baseline** of a reading is the latest *clean* reading (passed,
//!   sound timestamp, in range) with an earlier event time: chosen by event
//!   time, not arrival, so readings that arrive out of order are compared
//!   with the reading that really preceded them;
//! * a reading whose **event id** is already in the history is a repeat
//!   (a client retrying a batch, a redelivery upstream): its result was
//!   emitted the first time, so nothing is emitted again;
//! * a reading with **another id at the same event time** (a repeated local
//!   hour in an export, two overlapping exports with different values) is
//!   flagged `DUPLICATE_TIME` and quarantined: the first one counts;
//! * a reading at an **event time processed long ago** (beyond the recent
//!   readings: a client resending a whole backfill, a file dropped twice)
//!   was either the same reading again or an older export's version of it;
//!   either way its time is taken, the first one counts, and it is dropped
//!   (counted in `gale_validate_repeats_total`).
//!
//! The history holds the last `history_size` readings in full and every
//! event time processed as runs of evenly spaced times (a regular series is
//! one run however long; at most [`MAX_RUNS`] runs, the oldest forgotten
//! first). A whole history is dropped once the partition's watermark is
//! `history_window` past its newest reading. All of it is a function of the
//! input, so results are too.

use gale_model::{Metric, ScoredReading};
use gale_runtime::state::StateValue;
use serde::{Deserialize, Serialize};

use crate::rules::{self, Previous};

/// Runs of event times remembered per asset at most.
pub const MAX_RUNS: usize = 256;

/// The most recent readings of one asset, and the event times processed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssetHistory {
    /// Oldest event time first.
    #[serde(rename = "r")]
    recent: Vec<Seen>,
    /// Event times processed, as runs `(first, step, count)` sorted by
    /// `first`: a regular series is one run.
    #[serde(rename = "t", default)]
    times: Vec<(i64, i64, u32)>,
}

impl StateValue for AssetHistory {}

/// One remembered reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    /// Event time, ms.
    t: i64,
    /// Stable hash of the event id.
    id: u64,
    /// Values of the rate-of-change metrics (metric index, canonical value)
    /// when the reading may serve as a baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<Vec<(u8, f64)>>,
}

/// What the history says about a reading about to be scored.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a return value, never stored
pub enum Lookup {
    /// Its event id was seen, or its event time was processed long ago:
    /// the first result is out already.
    Repeat,
    /// Not seen before.
    Fresh {
        /// The latest clean reading before it, if remembered.
        baseline: Option<Previous>,
        /// Another reading of the asset has the same event time.
        same_time: bool,
    },
}

impl AssetHistory {
    /// What the history says about the reading `event_id` at `event_time`.
    pub fn lookup(&self, event_id: &str, event_time: i64) -> Lookup {
        let id = event_hash(event_id);
        if self.recent.iter().any(|s| s.id == id && s.t == event_time) {
            return Lookup::Repeat;
        }
        let same_time = self.recent.iter().any(|s| s.t == event_time);
        if !same_time && self.processed(event_time) {
            return Lookup::Repeat;
        }
        let baseline = self
            .recent
            .iter()
            .rev()
            .filter(|s| s.t < event_time)
            .find_map(|s| {
                s.b.as_ref().map(|values| {
                    let mut p = Previous {
                        event_time: s.t,
                        ..Previous::default()
                    };
                    for (m, v) in values {
                        if let Some(slot) = p.values.get_mut(*m as usize) {
                            *slot = Some(*v);
                        }
                    }
                    p
                })
            });
        Lookup::Fresh {
            baseline,
            same_time,
        }
    }

    /// Remembers `scored`, keeping the values of `metrics` when it may be a
    /// baseline, and at most `size` readings (the oldest go first).
    pub fn record(&mut self, scored: &ScoredReading, metrics: &[Metric], size: usize) {
        let b = rules::baseline(scored).map(|p| {
            metrics
                .iter()
                .filter_map(|m| p.get(*m).map(|v| (*m as u8, v)))
                .collect()
        });
        let seen = Seen {
            t: scored.event_time,
            id: event_hash(&scored.event_id),
            b,
        };
        let at = self.recent.partition_point(|s| s.t <= seen.t);
        self.recent.insert(at, seen);
        let excess = self.recent.len().saturating_sub(size.max(1));
        self.recent.drain(..excess);
        self.add_time(scored.event_time);
    }

    /// True when a reading at `t` was processed (as far as the runs reach).
    fn processed(&self, t: i64) -> bool {
        self.times
            .iter()
            .any(|&(first, step, count)| run_holds(first, step, count, t))
    }

    fn add_time(&mut self, t: i64) {
        if self.processed(t) {
            return;
        }
        // Extends the run it follows on from, if any.
        let at = self.times.partition_point(|(first, _, _)| *first <= t);
        let next_starts_after = self.times.get(at).is_none_or(|n| n.0 > t);
        if at > 0 {
            let (first, step, count) = &mut self.times[at - 1];
            let last = *first + *step * (*count as i64 - 1);
            if next_starts_after && *count == 1 && t > *first {
                *step = t - *first;
                *count = 2;
                return;
            }
            if next_starts_after && *count > 1 && t == last + *step && *count < u32::MAX {
                *count += 1;
                return;
            }
        }
        self.times.insert(at, (t, 1, 1));
        if self.times.len() > MAX_RUNS {
            self.times.remove(0);
        }
    }

    /// The asset's reading interval as its recent readings show it: the
    /// smallest spacing between them and a reading at `event_time` (one
    /// missing reading doubles a spacing, never the smallest).
    pub fn spacing(&self, event_time: i64) -> Option<i64> {
        let mut times: Vec<i64> = self.recent.iter().map(|s| s.t).collect();
        times.push(event_time);
        times.sort_unstable();
        times.dedup();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|d| *d > 0)
            .min()
    }

    /// Event time of the newest reading remembered.
    pub fn newest(&self) -> Option<i64> {
        self.recent.last().map(|s| s.t)
    }

    /// Readings remembered.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

fn run_holds(first: i64, step: i64, count: u32, t: i64) -> bool {
    if t < first || step <= 0 {
        return t == first;
    }
    let k = (t - first) / step;
    k < count as i64 && (t - first) % step == 0
}

/// FNV-1a: a hash that is the same on every machine and in every version,
/// as stored state needs.
pub fn event_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_model::{AssetKind, FlagCode, QualityFlag, QualityTier};

    fn scored(id: &str, t: i64, kw: f64) -> ScoredReading {
        let mut s = ScoredReading::new(id, "M", AssetKind::Meter, t);
        s.received_time = t + 1_000;
        s.power_kw = Some(kw);
        s
    }

    fn quarantined(id: &str, t: i64, kw: f64) -> ScoredReading {
        let mut s = scored(id, t, kw);
        s.quality_tier = QualityTier::Quarantine;
        s.flags.push(QualityFlag {
            code: FlagCode::OutOfRange,
            metric: Some(Metric::Power),
            deduction: 15,
            quarantine: true,
            detail: String::new(),
        });
        s
    }

    fn baseline(l: Lookup) -> Option<(i64, Option<f64>)> {
        match l {
            Lookup::Fresh { baseline, .. } => {
                baseline.map(|b| (b.event_time, b.get(Metric::Power)))
            }
            Lookup::Repeat => panic!("not a repeat"),
        }
    }

    #[test]
    fn the_baseline_is_the_latest_clean_reading_before_by_event_time() {
        let mut h = AssetHistory::default();
        let power = [Metric::Power];
        h.record(&scored("a", 1_000, 1.0), &power, 8);
        h.record(&scored("c", 3_000, 3.0), &power, 8);
        h.record(&quarantined("b", 2_000, 99.0), &power, 8);
        // A reading at 2500 arriving late compares with 1000, not 3000,
        // and not with the quarantined glitch at 2000.
        assert_eq!(baseline(h.lookup("x", 2_500)), Some((1_000, Some(1.0))));
        assert_eq!(baseline(h.lookup("y", 4_000)), Some((3_000, Some(3.0))));
        assert_eq!(baseline(h.lookup("z", 500)), None);
    }

    #[test]
    fn repeats_and_same_time_readings_are_told_apart() {
        let mut h = AssetHistory::default();
        h.record(&scored("a", 1_000, 1.0), &[Metric::Power], 8);
        assert_eq!(h.lookup("a", 1_000), Lookup::Repeat);
        assert!(matches!(
            h.lookup("other", 1_000),
            Lookup::Fresh {
                same_time: true,
                ..
            }
        ));
        assert!(matches!(
            h.lookup("other", 1_001),
            Lookup::Fresh {
                same_time: false,
                ..
            }
        ));
    }

    #[test]
    fn the_history_keeps_the_newest_readings_and_survives_a_round_trip() {
        let mut h = AssetHistory::default();
        for i in 0..20 {
            h.record(
                &scored(&format!("e{i}"), i * 1_000, 1.0),
                &[Metric::Power],
                8,
            );
        }
        assert_eq!(h.len(), 8);
        assert_eq!(h.newest(), Some(19_000));
        // A late reading older than all of them is remembered only briefly.
        h.record(&scored("old", 0, 1.0), &[Metric::Power], 8);
        assert_eq!(h.len(), 8);
        assert_eq!(h.recent[0].t, 12_000);
        let json = serde_json::to_vec(&h).unwrap();
        let back: AssetHistory = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn readings_processed_long_ago_are_repeats() {
        let mut h = AssetHistory::default();
        for i in 0..1000 {
            h.record(
                &scored(&format!("e{i}"), i * 600_000, 1.0),
                &[Metric::Power],
                8,
            );
        }
        // A regular series is one run.
        assert_eq!(h.times, vec![(0, 600_000, 1000)]);
        assert_eq!(h.lookup("e3", 3 * 600_000), Lookup::Repeat);
        assert_eq!(h.lookup("other", 5 * 600_000), Lookup::Repeat);
        assert!(matches!(
            h.lookup("gap", 5 * 600_000 + 1),
            Lookup::Fresh { .. }
        ));
        assert!(matches!(
            h.lookup("next", 1000 * 600_000),
            Lookup::Fresh { .. }
        ));
        // Out-of-order times make more runs, never more than the limit.
        for i in 0..2000 {
            h.record(
                &scored(&format!("x{i}"), 1 + i * 7_919 % 100_003, 1.0),
                &[Metric::Power],
                8,
            );
        }
        assert!(h.times.len() <= MAX_RUNS);
        assert!(h.times.windows(2).all(|w| w[0].0 <= w[1].0));
        let json = serde_json::to_vec(&h).unwrap();
        assert!(json.len() < 20_000, "{} bytes", json.len());
    }

    #[test]
    fn the_interval_is_the_smallest_spacing() {
        let mut h = AssetHistory::default();
        assert_eq!(h.spacing(0), None);
        for t in [0, 900_000, 2_700_000] {
            h.record(&scored(&format!("e{t}"), t, 1.0), &[Metric::Power], 8);
        }
        // A missing reading (1.8 M) does not double it.
        assert_eq!(h.spacing(3_600_000), Some(900_000));
    }

    #[test]
    fn event_hashes_are_stable() {
        assert_eq!(event_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(event_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
