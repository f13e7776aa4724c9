//! Per-asset rate-of-change baselines, kept in memory and bounded.
//!
//! A baseline is the last clean reading of an asset (see
//! [`rules::baseline`]): a reading from the future, a backdated one or a
//! quarantined glitch never becomes one, because each would either hide the
//! asset's later readings from the check or flag them falsely.
//!
//! The state is an optimisation, not a record: after a restart or a
//! rebalance the first reading of an asset simply has nothing to compare
//! with. Entries of partitions this instance loses are dropped (their assets
//! are another instance's now, and a baseline kept here would be stale if
//! the partition came back), and entries not updated for the longest
//! `baseline_max_age` of the rules are swept away: by then the rules would
//! ignore them anyway, and memory stays bounded by the assets seen in that
//! window.

use std::time::{Duration, Instant};

use gale_runtime::schema::ScoredReading;
use rustc_hash::FxHashMap;

use crate::rules::{self, Previous};

/// Baselines of the assets this instance has seen recently.
pub struct Baselines {
    entries: FxHashMap<String, Entry>,
    /// Entries not updated for this long are dropped.
    idle_limit: Duration,
    /// When the next sweep is due.
    next_sweep: Option<Instant>,
}

struct Entry {
    previous: Previous,
    /// Input partition the asset's readings arrive on.
    partition: i32,
    /// Wall-clock time of the last update, for the sweep.
    updated: Instant,
}

/// Upper bound of the time between sweeps.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Baselines {
    /// An empty store whose entries live `idle_limit` after their last update.
    pub fn new(idle_limit: Duration) -> Self {
        Baselines {
            entries: FxHashMap::default(),
            idle_limit,
            next_sweep: None,
        }
    }

    /// The baseline of `asset_id`, if any.
    pub fn get(&self, asset_id: &str) -> Option<&Previous> {
        self.entries.get(asset_id).map(|e| &e.previous)
    }

    /// Offers `scored` as its asset's next baseline, at wall-clock `now`.
    /// It is taken when it is clean and newer than the current baseline, or
    /// when the current one lies ahead of this reading's reception (a
    /// baseline from the future must not outlive the clock error).
    pub fn offer(&mut self, scored: &ScoredReading, partition: i32, now: Instant) {
        self.sweep(now);
        let Some(candidate) = rules::baseline(scored) else {
            return;
        };
        match self.entries.get_mut(&scored.asset_id) {
            Some(entry)
                if entry.previous.event_time >= candidate.event_time
                    && entry.previous.event_time <= scored.received_time => {}
            Some(entry) => {
                entry.previous = candidate;
                entry.partition = partition;
                entry.updated = now;
            }
            None => {
                self.entries.insert(
                    scored.asset_id.clone(),
                    Entry {
                        previous: candidate,
                        partition,
                        updated: now,
                    },
                );
            }
        }
    }

    /// Drops entries idle for longer than the limit, at most every minute
    /// (or every idle limit, if shorter).
    pub fn sweep(&mut self, now: Instant) {
        let every = self.idle_limit.min(SWEEP_EVERY);
        match self.next_sweep {
            None => {
                self.next_sweep = Some(now + every);
                return;
            }
            Some(due) if now < due => return,
            Some(_) => {}
        }
        let limit = self.idle_limit;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.updated) <= limit);
        self.next_sweep = Some(now + every);
    }

    /// Drops the baselines of assets that arrive on `partitions`.
    pub fn forget_partitions(&mut self, partitions: &[i32]) {
        self.entries
            .retain(|_, e| !partitions.contains(&e.partition));
    }

    /// Number of assets with a baseline.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no asset has a baseline.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_runtime::schema::{
        AssetKind, FlagCode, IngestChannel, QualityFlag, QualityTier, ScoredReading,
    };

    fn scored(asset: &str, event_time: i64, power: f64) -> ScoredReading {
        ScoredReading {
            site_id: None,
            received_time: event_time + 1_000,
            validated_time: event_time + 2_000,
            source: "t".into(),
            channel: IngestChannel::Http,
            power_kw: Some(power),
            quality_score: 100,
            quality_tier: QualityTier::Premium,
            flags: Vec::new(),
            attributes: Default::default(),
            ..ScoredReading::new(
                format!("{asset}-{event_time}"),
                asset,
                AssetKind::Meter,
                event_time,
            )
        }
    }

    fn flagged(mut s: ScoredReading, code: FlagCode, tier: QualityTier) -> ScoredReading {
        s.flags.push(QualityFlag {
            code,
            metric: None,
            deduction: 15,
            quarantine: tier == QualityTier::Quarantine,
            detail: String::new(),
        });
        s.quality_tier = tier;
        s
    }

    #[test]
    fn only_clean_readings_become_baselines() {
        let now = Instant::now();
        let mut b = Baselines::new(Duration::from_secs(3600));
        b.offer(
            &flagged(
                scored("M", 1_000, 1.0),
                FlagCode::FutureTimestamp,
                QualityTier::Standard,
            ),
            0,
            now,
        );
        b.offer(
            &flagged(
                scored("M", 1_000, 1.0),
                FlagCode::BackdatedTimestamp,
                QualityTier::Standard,
            ),
            0,
            now,
        );
        b.offer(
            &flagged(
                scored("M", 1_000, 42.0),
                FlagCode::OutOfRange,
                QualityTier::Quarantine,
            ),
            0,
            now,
        );
        let mut low = scored("M", 1_000, 1.0);
        low.quality_tier = QualityTier::Quarantine;
        b.offer(&low, 0, now);
        assert!(b.get("M").is_none());
        // A flagged spike that still passed is the asset's new level.
        b.offer(
            &flagged(
                scored("M", 2_000, 8.0),
                FlagCode::Spike,
                QualityTier::Standard,
            ),
            0,
            now,
        );
        assert_eq!(b.get("M").unwrap().event_time, 2_000);
    }

    #[test]
    fn newer_readings_replace_older_ones_but_late_arrivals_do_not() {
        let now = Instant::now();
        let mut b = Baselines::new(Duration::from_secs(3600));
        b.offer(&scored("M", 10_000, 1.0), 0, now);
        let mut late = scored("M", 5_000, 2.0);
        late.received_time = 12_000;
        b.offer(&late, 0, now);
        assert_eq!(b.get("M").unwrap().event_time, 10_000);
        b.offer(&scored("M", 20_000, 3.0), 0, now);
        assert_eq!(b.get("M").unwrap().event_time, 20_000);
    }

    #[test]
    fn a_baseline_ahead_of_reception_is_replaced_by_the_next_clean_reading() {
        let now = Instant::now();
        let mut b = Baselines::new(Duration::from_secs(3600));
        // Within the timestamp tolerance, so clean, but 30 min ahead.
        b.offer(&scored("M", 1_800_000 + 60_000, 1.0), 0, now);
        let live = scored("M", 60_000, 1.1);
        assert!(live.received_time < b.get("M").unwrap().event_time);
        b.offer(&live, 0, now);
        assert_eq!(b.get("M").unwrap().event_time, 60_000);
    }

    #[test]
    fn idle_entries_are_swept() {
        let start = Instant::now();
        let mut b = Baselines::new(Duration::from_secs(600));
        b.offer(&scored("OLD", 1_000, 1.0), 0, start);
        b.offer(
            &scored("NEW", 1_000, 1.0),
            0,
            start + Duration::from_secs(590),
        );
        assert_eq!(b.len(), 2);
        b.sweep(start + Duration::from_secs(650));
        assert!(b.get("OLD").is_none());
        assert!(b.get("NEW").is_some());
        b.sweep(start + Duration::from_secs(1300));
        assert!(b.is_empty());
    }

    #[test]
    fn baselines_of_lost_partitions_are_dropped() {
        let now = Instant::now();
        let mut b = Baselines::new(Duration::from_secs(3600));
        b.offer(&scored("A", 1_000, 1.0), 0, now);
        b.offer(&scored("B", 1_000, 1.0), 1, now);
        b.forget_partitions(&[1]);
        assert!(b.get("A").is_some());
        assert!(b.get("B").is_none());
    }
}
