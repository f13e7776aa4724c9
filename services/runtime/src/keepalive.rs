//! Waiting without leaving the consumer group.
//!
//! librdkafka expels a consumer from its group when the application does not
//! poll for `max.poll.interval.ms` (5 minutes by default). A loop that waits
//! out a long database or registry outage, or a record on its retry
//! schedule, would then lose its partitions, trigger a rebalance and replay
//! work. [`Keepalive::wait`] therefore pauses every assigned partition and
//! keeps polling while it waits: the group sees a live member, and no new
//! records are taken.
//!
//! Should a record arrive anyway (a partition assigned during the wait, or
//! one fetched before the pause took effect), it is not processed: its
//! offset is remembered and [`Keepalive::resume`] seeks the partition back
//! to it, so nothing is skipped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::GaleContext;
use crate::shutdown::CancellationToken;

/// Waits on behalf of a consuming loop; see the module docs.
pub struct Keepalive<'c> {
    consumer: Option<&'c StreamConsumer<GaleContext>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Partitions this keepalive paused, to resume later.
    paused: Vec<(String, i32)>,
    /// First offset per partition that arrived while paused and was put back.
    rewind: HashMap<(String, i32), i64>,
}

impl<'c> Keepalive<'c> {
    /// A keepalive for `consumer`.
    pub fn new(consumer: &'c StreamConsumer<GaleContext>) -> Self {
        Keepalive {
            consumer: Some(consumer),
            state: Mutex::default(),
        }
    }

    /// A keepalive with no consumer behind it: waits are plain sleeps.
    pub fn detached() -> Keepalive<'static> {
        Keepalive {
            consumer: None,
            state: Mutex::default(),
        }
    }

    /// Waits `duration` with the consumer paused and polled. Returns false
    /// if `cancel` fired first.
    pub async fn wait(&self, duration: Duration, cancel: Option<&CancellationToken>) -> bool {
        let never = CancellationToken::new();
        let cancel = cancel.unwrap_or(&never);
        let Some(consumer) = self.consumer else {
            return crate::shutdown::sleep_or_cancel(cancel, duration).await;
        };
        self.pause_assigned(consumer);
        let deadline = tokio::time::sleep(duration);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return false,
                _ = &mut deadline => return true,
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
        let state = std::mem::take(&mut *self.lock());
        if state.paused.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &state.paused {
            tpl.add_partition(topic, *partition);
        }
        if let Err(e) = consumer.resume(&tpl) {
            tracing::warn!(error = %e, "resuming partitions failed");
        }
        for ((topic, partition), offset) in state.rewind {
            // Fails for a partition revoked meanwhile; its new owner reads
            // it from the last commit.
            if let Err(e) = consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(5),
            ) {
                tracing::warn!(topic, partition, offset, error = %e, "cannot seek back after a pause");
            }
        }
        tracing::info!(partitions = state.paused.len(), "consumption resumed");
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
        tracing::info!(partitions = new.len(), "consumption paused while waiting");
        state.paused.extend(new);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
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
