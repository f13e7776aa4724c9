//! Per-partition contiguity: a loop hands its work only records that follow
//! on from what it already handled, and never stores an offset past a gap.
//!
//! A consumer can be handed records beyond a gap: a loop expelled from its
//! group during a long flush gets its partitions back, and records fetched
//! for the old assignment or from a stale position may follow; a sink that
//! dropped its buffer on revocation would then carry on after the gap and
//! the next checkpoint would move past readings that are nowhere. The
//! [`Frontier`] knows, per partition, the next offset the loop needs (the
//! group's committed offset when the partition was assigned, or the sink's
//! own checkpoint) and judges every record against it:
//!
//! * the expected offset: handed on;
//! * below it: already handled (a re-delivery after a seek); skipped;
//! * above it: a gap. The partition is sought back to the expected offset
//!   and its records of this batch are dropped. If, after that, the first
//!   record is still beyond the expected offset, the partition is sought
//!   further back (16, 256, ... records) until a record before the expected
//!   one arrives: then the offsets between hold nothing (a compacted topic,
//!   transaction markers), or they were removed by retention when even the
//!   start of the partition comes after them; either is logged as a warning
//!   and the record is handed on. Seeking further back is needed because
//!   some brokers (Tansu 0.6) answer a fetch from an offset inside a record
//!   batch with the batch after it.
//!
//! Offsets are stored no further than the frontier: a bug or a surprise
//! elsewhere cannot move a committed offset past unhandled records.

use std::collections::HashMap;

use async_trait::async_trait;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{BorrowedMessage, Message};

use crate::kafka::{self, GaleContext};
use crate::keepalive::{self, Keepalive};
use crate::outbox::{Interrupted, Outbox};
use crate::sink::Outage;

/// What to do with one consumed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next record of its partition: handle it.
    Take,
    /// Already handled (arrived again after a seek): skip it.
    Skip,
    /// Records are missing before it: seek the partition back to this
    /// offset and drop its records of this batch.
    Rewind(i64),
}

#[derive(Debug, Clone, Default)]
struct Part {
    /// The next offset needed; `None` until the first record when nothing
    /// was committed.
    expected: Option<i64>,
    /// A rewind under way.
    rewind: Option<Rewind>,
}

#[derive(Debug, Clone, Copy)]
struct Rewind {
    /// Where the partition was sought to.
    target: i64,
    /// A record before the expected offset arrived since: the fetch went
    /// back far enough.
    seen_below: bool,
}

/// The contiguity of every partition a loop owns.
#[derive(Debug, Default)]
pub struct Frontier {
    parts: HashMap<(String, i32), Part>,
}

impl Frontier {
    /// An empty frontier.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// True once [`Frontier::start`] was called for the partition (since its
    /// last revocation).
    pub fn knows(&self, topic: &str, partition: i32) -> bool {
        self.parts.contains_key(&(topic.to_string(), partition))
    }

    /// A partition was assigned: it must go on from `next` (the committed
    /// offset, or the sink's own checkpoint), or from its first record when
    /// `None` (nothing committed yet).
    pub fn start(&mut self, topic: &str, partition: i32, next: Option<i64>) {
        self.parts.insert(
            (topic.to_string(), partition),
            Part {
                expected: next.filter(|o| *o >= 0),
                rewind: None,
            },
        );
    }

    /// Partitions revoked: their next owner goes on from the committed offset.
    pub fn forget(&mut self, partitions: &[(String, i32)]) {
        for key in partitions {
            self.parts.remove(key);
        }
    }

    /// Judges the record at `offset` of `partition` (which must be known).
    pub fn check(&mut self, topic: &str, partition: i32, offset: i64) -> Verdict {
        let part = self
            .parts
            .entry((topic.to_string(), partition))
            .or_default();
        let Some(expected) = part.expected else {
            part.expected = Some(offset + 1);
            return Verdict::Take;
        };
        if offset == expected {
            part.expected = Some(offset + 1);
            part.rewind = None;
            return Verdict::Take;
        }
        if offset < expected {
            if let Some(r) = &mut part.rewind {
                r.seen_below = true;
            }
            return Verdict::Skip;
        }
        match part.rewind {
            Some(r) if r.seen_below || r.target == 0 => {
                // Read from before the expected offset straight to this one
                // (or from the very start): nothing lies between.
                tracing::warn!(
                    topic,
                    partition,
                    from = expected,
                    to = offset - 1,
                    "offsets missing from the topic (retention, compaction or transaction markers); going on after them"
                );
                part.expected = Some(offset + 1);
                part.rewind = None;
                Verdict::Take
            }
            Some(r) => {
                // The fetch did not reach back to the expected offset: go
                // further back.
                let back = (expected - r.target).max(1).saturating_mul(16);
                let target = expected.saturating_sub(back).max(0);
                part.rewind = Some(Rewind {
                    target,
                    seen_below: false,
                });
                Verdict::Rewind(target)
            }
            None => {
                tracing::warn!(
                    topic,
                    partition,
                    expected,
                    got = offset,
                    "gap in the records received; reading the partition again from the expected offset"
                );
                part.rewind = Some(Rewind {
                    target: expected,
                    seen_below: false,
                });
                Verdict::Rewind(expected)
            }
        }
    }

    /// The next offset after the last record handed on, if any: the furthest
    /// an offset of this partition may be stored.
    pub fn handed(&self, topic: &str, partition: i32) -> Option<i64> {
        self.parts
            .get(&(topic.to_string(), partition))
            .and_then(|p| p.expected)
    }

    /// `offsets` limited to what was handed on; an offset beyond is a bug
    /// somewhere, reported and not stored.
    pub fn clamp(&self, offsets: Vec<(String, i32, i64)>) -> Vec<(String, i32, i64)> {
        offsets
            .into_iter()
            .filter_map(
                |(topic, partition, offset)| match self.handed(&topic, partition) {
                    Some(limit) if offset > limit => {
                        tracing::error!(
                            topic,
                            partition,
                            offset,
                            limit,
                            "refusing to store an offset beyond the records handled"
                        );
                        Some((topic, partition, limit))
                    }
                    Some(_) => Some((topic, partition, offset)),
                    // Revoked, or nothing handed yet: nothing of ours to store.
                    None => None,
                },
            )
            .collect()
    }
}

/// What a loop does when a partition is handed to it for the first time
/// since its assignment: a sink loads its checkpoint, a stateful stage
/// restores its state.
#[async_trait]
pub trait Opener: Send {
    /// Prepares `partition`; returns the first offset needed when the loop
    /// knows it better than the group's committed offset.
    async fn open(&mut self, topic: &str, partition: i32) -> Result<Option<i64>, Outage>;

    /// Partitions revoked since the last look (drained; the loop forgets them).
    fn revoked(&mut self) -> Vec<(String, i32)>;
}

/// The records of `batch` that follow on from what the loop has, in order.
/// Partitions seen for the first time since their assignment are opened
/// and start at the opener's offset or the committed offset; a partition
/// with a gap is sought back and its records of this batch are left out, as
/// are records of partitions revoked since they were fetched (`gone`).
#[allow(clippy::too_many_arguments)]
pub async fn admit<'c, O: Opener>(
    batch: Vec<BorrowedMessage<'c>>,
    gone: &[(String, i32)],
    opener: &mut O,
    consumer: &StreamConsumer<GaleContext>,
    outbox: &Outbox<'_>,
    keepalive: &Keepalive<'_>,
    frontier: &mut Frontier,
) -> Result<Vec<BorrowedMessage<'c>>, Interrupted> {
    // Records fetched for partitions revoked since: their next owner reads
    // them from the committed offset.
    let mut gone: Vec<(String, i32)> = gone.to_vec();
    let mut batch: Vec<BorrowedMessage<'c>> = batch;
    let is_gone = |gone: &[(String, i32)], m: &BorrowedMessage<'_>| {
        gone.iter()
            .any(|(t, p)| t == m.topic() && *p == m.partition())
    };
    batch.retain(|m| !is_gone(&gone, m));
    let mut new: Vec<(String, i32)> = Vec::new();
    for m in &batch {
        let key = (m.topic().to_string(), m.partition());
        if !frontier.knows(&key.0, key.1) && !new.contains(&key) {
            new.push(key);
        }
    }
    if !new.is_empty() {
        let committed = kafka::committed_offsets(consumer, &new);
        for (topic, partition) in &new {
            if gone.contains(&(topic.clone(), *partition)) {
                continue;
            }
            let mut backoff = outbox.outage_backoff();
            let own = loop {
                match keepalive.hold(opener.open(topic, *partition)).await {
                    Ok(o) => break o,
                    Err(Outage {
                        dependency,
                        message,
                    }) => {
                        outbox
                            .outage_wait(dependency, &message, &mut backoff, keepalive)
                            .await?;
                        let lost = opener.revoked();
                        frontier.forget(&lost);
                        gone.extend(lost);
                    }
                }
            };
            if backoff.attempts() > 0 {
                outbox.outage_over();
            }
            let group = committed.get(&(topic.clone(), *partition)).copied();
            // The loop's own position wins when it is behind the group (a
            // sink's store lost files, say): read again from there. Ahead of
            // the group is normal (the loop skips what it already has).
            let start = match (own, group) {
                (Some(own), Some(group)) if own < group => {
                    tracing::warn!(topic, partition, own, committed = group, "the stage's own checkpoint is behind the committed offset; reading again from the checkpoint");
                    keepalive::seek_or_exit(consumer, topic, *partition, own);
                    Some(own)
                }
                (Some(own), None) => Some(own),
                (_, group) => group,
            };
            frontier.start(topic, *partition, start);
        }
    }
    batch.retain(|m| !is_gone(&gone, m));
    let mut rewound: Vec<(String, i32)> = Vec::new();
    let mut out = Vec::with_capacity(batch.len());
    for m in batch {
        let key = (m.topic().to_string(), m.partition());
        if rewound.contains(&key) {
            continue;
        }
        match frontier.check(&key.0, key.1, m.offset()) {
            Verdict::Take => out.push(m),
            Verdict::Skip => {}
            Verdict::Rewind(offset) => {
                keepalive::seek_or_exit(consumer, &key.0, key.1, offset);
                rewound.push(key);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_records_pass_and_gaps_rewind_once() {
        let mut f = Frontier::new();
        f.start("t", 0, Some(10));
        assert_eq!(f.check("t", 0, 10), Verdict::Take);
        assert_eq!(f.check("t", 0, 11), Verdict::Take);
        assert_eq!(f.check("t", 0, 9), Verdict::Skip);
        // A gap: seek back to 12.
        assert_eq!(f.check("t", 0, 20), Verdict::Rewind(12));
        // The missing records arrive.
        assert_eq!(f.check("t", 0, 12), Verdict::Take);
        assert_eq!(f.handed("t", 0), Some(13));
        // A second gap, and after the seek the same record comes first
        // again: the broker skipped from inside a batch, so further back...
        assert_eq!(f.check("t", 0, 30), Verdict::Rewind(13));
        assert_eq!(f.check("t", 0, 30), Verdict::Rewind(0));
        // ...until records before the expected one arrive, and then the
        // expected one.
        assert_eq!(f.check("t", 0, 4), Verdict::Skip);
        assert_eq!(f.check("t", 0, 13), Verdict::Take);
        // A real hole: read from before it straight past it.
        assert_eq!(f.check("t", 0, 40), Verdict::Rewind(14));
        assert_eq!(f.check("t", 0, 40), Verdict::Rewind(0));
        assert_eq!(f.check("t", 0, 13), Verdict::Skip);
        assert_eq!(f.check("t", 0, 40), Verdict::Take);
        assert_eq!(f.handed("t", 0), Some(41));
    }

    #[test]
    fn rewinds_go_back_in_growing_steps() {
        let mut f = Frontier::new();
        f.start("t", 0, Some(10_000));
        assert_eq!(f.check("t", 0, 10_050), Verdict::Rewind(10_000));
        assert_eq!(f.check("t", 0, 10_050), Verdict::Rewind(9_984));
        assert_eq!(f.check("t", 0, 10_050), Verdict::Rewind(9_744));
        assert_eq!(f.check("t", 0, 9_800), Verdict::Skip);
        assert_eq!(f.check("t", 0, 10_000), Verdict::Take);
    }

    #[test]
    fn nothing_committed_starts_at_the_first_record() {
        let mut f = Frontier::new();
        f.start("t", 1, None);
        assert_eq!(f.check("t", 1, 500), Verdict::Take);
        assert_eq!(f.check("t", 1, 502), Verdict::Rewind(501));
    }

    #[test]
    fn stored_offsets_never_pass_the_frontier() {
        let mut f = Frontier::new();
        f.start("t", 0, Some(0));
        for o in 0..5 {
            f.check("t", 0, o);
        }
        let out = f.clamp(vec![("t".into(), 0, 3), ("t".into(), 0, 9)]);
        assert_eq!(out, vec![("t".into(), 0, 3), ("t".into(), 0, 5)]);
        f.forget(&[("t".into(), 0)]);
        assert!(!f.knows("t", 0));
        assert!(f.clamp(vec![("t".into(), 0, 3)]).is_empty());
    }
}
