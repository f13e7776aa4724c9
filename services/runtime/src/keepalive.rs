//! Waiting and working without leaving the consumer group.
//!
//! librdkafka expels a consumer from its group when the application does not
//! poll for `max.poll.interval.ms` (5 minutes by default). A loop that waits
//! out a long database or registry outage, a record on its retry schedule, a
//! sink flush that writes thousands of files or a state restore would then
//! lose its partitions, trigger a rebalance and replay work (or, worse, go on
//! past a gap). [`Keepalive::wait`] and [`Keepalive::hold`] therefore pause
//! every assigned partition and keep polling while they wait or while the
//! work runs: the group sees a live member, and no new records are taken.
//!
//! Partitions assigned during the wait start paused as well (the client
//! context pauses them in the rebalance callback). Should a record arrive
//! anyway, it is not processed: its offset is remembered and
//! [`Keepalive::resume`] seeks the partition back to it before consumption
//! resumes, so nothing is skipped; if that seek keeps failing the process
//! exits rather than go on past the record (offsets of unfinished work were
//! never stored, so a restart reads it again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::GaleContext;
use crate::shutdown::CancellationToken;

/// How long work runs before the consumer is paused and polled beside it:
/// far below any sensible `max.poll.interval.ms`.
const POLL_GRACE: Duration = Duration::from_secs(1);

/// Waits on behalf of a consuming loop; see the module docs.
pub struct Keepalive<'c> {
    consumer: Option<&'c StreamConsumer<GaleContext>>,
    state: Mutex<State>,
    /// Shared with the consumer's context (see [`GaleContext::with_hold`]).
    hold: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    /// Partitions this keepalive paused, to resume later.
    paused: Vec<(String, i32)>,
    /// First offset per partition that arrived while paused and was put back.
    rewind: HashMap<(String, i32), i64>,
}

impl<'c> Keepalive<'c> {
    /// A keepalive for `consumer`, whose context was built with
    /// [`GaleContext::with_hold`]`(hold)`.
    pub fn new(consumer: &'c StreamConsumer<GaleContext>, hold: Arc<AtomicBool>) -> Self {
        Keepalive {
            consumer: Some(consumer),
            state: Mutex::default(),
            hold,
        }
    }

    /// A keepalive with no consumer behind it: waits are plain sleeps.
    pub fn detached() -> Keepalive<'static> {
        Keepalive {
            consumer: None,
            state: Mutex::default(),
            hold: Arc::default(),
        }
    }

    /// Waits `duration` with the consumer paused and polled. Returns false
    /// if `cancel` fired first.
    pub async fn wait(&self, duration: Duration, cancel: Option<&CancellationToken>) -> bool {
        let never = CancellationToken::new();
        let cancel = cancel.unwrap_or(&never);
        if self.consumer.is_none() {
            return crate::shutdown::sleep_or_cancel(cancel, duration).await;
        }
        self.hold(async {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => false,
                _ = tokio::time::sleep(duration) => true,
            }
        })
        .await
    }

    /// Runs `work` to completion with the consumer paused and polled, so a
    /// long flush or restore does not cost the group membership. Call
    /// [`Keepalive::resume`] when the loop goes on.
    pub async fn hold<F: std::future::Future>(&self, work: F) -> F::Output {
        let Some(consumer) = self.consumer else {
            return work.await;
        };
        tokio::pin!(work);
        // Most work is done long before the group could notice; pausing and
        // resuming every partition for it would cost more than it saves.
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = tokio::time::sleep(POLL_GRACE) => {}
        }
        self.hold.store(true, Ordering::SeqCst);
        self.pause_assigned(consumer);
        tracing::info!(
            "consumption paused while waiting; the consumer keeps polling to stay in its group"
        );
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                m = consumer.recv() => match m {
                    Ok(m) => {
                        let key = (m.topic().to_string(), m.partition());
                        let offset = m.offset();
                        drop(m);
                        let mut state = self.lock();
                        let first = state.rewind.entry(key.clone()).or_insert(offset);
                        *first = (*first).min(offset);
                        if !state.paused.contains(&key) {
                            pause(consumer, std::slice::from_ref(&key));
                            state.paused.push(key);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "consumer error while paused"),
                },
            }
        }
    }

    /// Resumes what [`Keepalive::wait`] paused and puts back records that
    /// arrived meanwhile. Call when the wait is over and the loop goes on.
    pub fn resume(&self) {
        let Some(consumer) = self.consumer else {
            return;
        };
        if !self.hold.swap(false, Ordering::SeqCst) {
            return;
        }
        let state = std::mem::take(&mut *self.lock());
        for ((topic, partition), offset) in state.rewind {
            seek_or_exit(consumer, &topic, partition, offset);
        }
        // Everything assigned now: what was paused here, and what the
        // context paused on assignment during the wait.
        match consumer.assignment() {
            Ok(tpl) => {
                if let Err(e) = consumer.resume(&tpl) {
                    tracing::warn!(error = %e, "resuming partitions failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read assignment to resume it"),
        }
        tracing::debug!(partitions = state.paused.len(), "consumption resumed");
    }

    fn pause_assigned(&self, consumer: &StreamConsumer<GaleContext>) {
        let mut state = self.lock();
        let assigned = match consumer.assignment() {
            Ok(tpl) => tpl,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read assignment");
                return;
            }
        };
        let new: Vec<(String, i32)> = assigned
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .filter(|k| !state.paused.contains(k))
            .collect();
        if new.is_empty() {
            return;
        }
        pause(consumer, &new);
        tracing::debug!(partitions = new.len(), "consumption paused while waiting");
        state.paused.extend(new);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Puts `partition` back to `offset`, a record fetched but not processed.
/// A partition no longer assigned needs nothing (its new owner starts from
/// the last commit); any other failure ends the process rather than let the
/// consumer go on past the record.
pub(crate) fn seek_or_exit(
    consumer: &StreamConsumer<GaleContext>,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    let assigned = |c: &StreamConsumer<GaleContext>| {
        c.assignment().is_ok_and(|tpl| {
            tpl.elements()
                .iter()
                .any(|e| e.topic() == topic && e.partition() == partition)
        })
    };
    for attempt in 1..=3 {
        if !assigned(consumer) {
            return;
        }
        match consumer.seek(
            topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(5),
        ) {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(topic, partition, offset, attempt, error = %e, "cannot seek back after a pause")
            }
        }
    }
    tracing::error!(
        topic,
        partition,
        offset,
        "cannot put back a record fetched during a pause; exiting so that a restart reads it again"
    );
    std::process::exit(5);
}

fn pause(consumer: &StreamConsumer<GaleContext>, partitions: &[(String, i32)]) {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    if let Err(e) = consumer.pause(&tpl) {
        tracing::warn!(error = %e, "pausing partitions failed");
    }
}
