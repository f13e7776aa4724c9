//! The consume → persist loop of the sinks (pg-sink, archive).
//!
//! A [`Sink`] receives batches of raw records and either writes them durably
//! right away (pg-sink: one transaction per batch) or buffers them and makes
//! them durable in [`Sink::flush`] (archive: a Parquet file per partition
//! when it is big or old enough). Either way the runtime stores a partition's
//! offset only up to what [`Sink::durable_offsets`] reports, so a crash
//! re-delivers exactly what was not yet persisted; the sinks make that
//! harmless (upserts on the event id, deterministic file names).
//!
//! Records reach the sink contiguously per partition (see
//! [`crate::frontier`]): a gap makes the loop read the partition again from
//! the sink's own checkpoint or the committed offset, and no offset is
//! stored beyond the records handed over. Writes and flushes run with the
//! consumer paused and polled ([`Keepalive::hold`]), so a flush that writes
//! for longer than `max.poll.interval.ms` keeps the group membership.
//!
//! Records a sink refuses for their own content are dead-lettered with their
//! original bytes; an outage of the destination pauses the loop and retries
//! the same batch.
//!
//! When spans are exported, each [`Sink::write`] attempt is one
//! `process <topic>` span per topic of the batch, linked to the records'
//! trace contexts (not a child of any of them: see [`crate::telemetry`]);
//! a sink that makes records durable later (archive) adds spans of its own
//! for that from [`SinkRecord::traceparent`] and the tracer handed to
//! [`Sink::use_tracer`].

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::message::{BorrowedMessage, Message};

use crate::frontier::{self, Frontier, Opener};
use crate::kafka;
use crate::keepalive::Keepalive;
use crate::metrics::TopicMetrics;
use crate::outbox::{self, Next, Outbox};
use crate::service::{LoopConsumer, Service};
use crate::telemetry::{Batch, MessagingTracer, RecordSpan, TraceParent};
use crate::Error;

/// One consumed record, as the sink sees it.
#[derive(Debug, Clone, Copy)]
pub struct SinkRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Kafka timestamp (ms).
    pub timestamp_ms: Option<i64>,
    /// Key bytes.
    pub key: Option<&'a [u8]>,
    /// Value bytes (Confluent Avro wire format for Gale topics).
    pub payload: &'a [u8],
    /// The record's trace context, only while spans are exported (reading
    /// it costs a header scan per record that nothing else needs).
    pub traceparent: Option<TraceParent>,
}

/// A record the destination will not take, for its own content.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Position in the batch handed to [`Sink::write`].
    pub index: usize,
    /// Short class for headers and metrics.
    pub class: &'static str,
    /// Why.
    pub message: String,
}

/// The destination (or a dependency) is unavailable: retry later, drop nothing.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{dependency} unavailable: {message}")]
pub struct Outage {
    /// Which dependency; also shown on `/readyz`.
    pub dependency: &'static str,
    /// The error seen.
    pub message: String,
}

/// A destination for records.
#[async_trait]
pub trait Sink: Send {
    /// Takes a batch (in offset order per partition). Returns the records it
    /// refuses; everything else is either durable or buffered for `flush`.
    /// On `Err` nothing of the batch may have been kept: the same batch is
    /// offered again after a back-off.
    async fn write(&mut self, batch: &[SinkRecord<'_>]) -> Result<Vec<Refusal>, Outage>;

    /// Makes buffered records durable: those that are due, or all with `force`
    /// (shutdown). Called after every write and every `flush_interval`.
    async fn flush(&mut self, _force: bool) -> Result<(), Outage> {
        Ok(())
    }

    /// Next offsets that are durable now, per topic and partition.
    fn durable_offsets(&mut self) -> Vec<(String, i32, i64)>;

    /// Partitions were taken away: drop what is buffered for them (their new
    /// owner reads them again from the last committed offset).
    fn revoked(&mut self, _partitions: &[(String, i32)]) {}

    /// A partition is about to be handed to the sink for the first time since
    /// it was assigned. A sink with its own checkpoint returns the first
    /// offset it still needs; the runtime then starts the partition there
    /// (re-reading it if the group's committed offset is further on), so no
    /// record between the checkpoint and the first record handed is missed.
    /// `None`: the group's committed offset decides.
    async fn open_partition(
        &mut self,
        _topic: &str,
        _partition: i32,
    ) -> Result<Option<i64>, Outage> {
        Ok(None)
    }

    /// The tracer of the service, handed over once before the first batch,
    /// for spans of the sink's own durable writes (see
    /// [`MessagingTracer::batch`]).
    fn use_tracer(&mut self, _tracer: &MessagingTracer, _group: &str) {}

    /// How often `flush(false)` runs when no records arrive.
    fn flush_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// Runs `sink` on `topics` until shutdown, then flushes, stores and commits.
pub async fn run_sink<S: Sink>(
    service: &Service,
    topics: &[String],
    dead_letter: &str,
    mut sink: S,
) -> Result<(), Error> {
    let mut all: Vec<&str> = topics.iter().map(String::as_str).collect();
    all.push(dead_letter);
    service.ensure_topics(&all).await?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let LoopConsumer {
        consumer,
        group,
        revoked,
        hold,
    } = service.subscribe(&names, kafka::Fetching::Throughput)?;
    let outbox = Outbox::new(service, Vec::new(), dead_letter.to_string());
    let inputs: HashMap<String, TopicMetrics> = topics
        .iter()
        .map(|t| (t.clone(), service.metrics.topic(t)))
        .collect();
    let keepalive = Keepalive::new(&consumer, hold);
    sink.use_tracer(&service.tracer, &group);
    service.started();
    tracing::info!(topics = ?topics, group = %group, dead_letter, "sink running");

    let mut ticker = tokio::time::interval(sink.flush_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batches = outbox::Batches::new(&consumer, service);
    let mut frontier = Frontier::new();
    loop {
        let batch = match batches.next_or_tick(Some(&mut ticker)).await {
            Next::Stop => break,
            Next::Tick => {
                frontier.forget(&drain_revoked(&mut sink, &revoked));
                if flush(
                    &mut sink,
                    &outbox,
                    false,
                    &keepalive,
                    &revoked,
                    &mut frontier,
                )
                .await
                .is_err()
                {
                    break;
                }
                keepalive.resume();
                outbox::store_next_offsets(&consumer, frontier.clamp(sink.durable_offsets()));
                continue;
            }
            Next::Batch(batch) => batch,
        };
        let gone = drain_revoked(&mut sink, &revoked);
        frontier.forget(&gone);
        let started = std::time::Instant::now();
        let admitted = frontier::admit(
            batch,
            &gone,
            &mut OpenSink(&mut sink, &revoked),
            &consumer,
            &outbox,
            &keepalive,
            &mut frontier,
        )
        .await;
        let Ok(batch) = admitted else {
            break;
        };
        if write(
            &mut sink,
            &batch,
            &outbox,
            &inputs,
            &keepalive,
            &revoked,
            &mut frontier,
            (&service.tracer, &group),
        )
        .await
        .is_err()
        {
            break;
        }
        if flush(
            &mut sink,
            &outbox,
            false,
            &keepalive,
            &revoked,
            &mut frontier,
        )
        .await
        .is_err()
        {
            break;
        }
        keepalive.resume();
        outbox::store_next_offsets(&consumer, frontier.clamp(sink.durable_offsets()));
        service.metrics.processed(started.elapsed(), batch.len());
    }
    // Shutdown: persist what is buffered (the watchdog bounds how long).
    frontier.forget(&drain_revoked(&mut sink, &revoked));
    if flush(
        &mut sink,
        &outbox,
        true,
        &keepalive,
        &revoked,
        &mut frontier,
    )
    .await
    .is_ok()
    {
        outbox::store_next_offsets(&consumer, frontier.clamp(sink.durable_offsets()));
    }
    outbox::commit_final(&consumer, "sink");
    Ok(())
}

/// A sink as the frontier's [`Opener`].
struct OpenSink<'a, S>(&'a mut S, &'a kafka::Revocations);

#[async_trait]
impl<S: Sink> Opener for OpenSink<'_, S> {
    async fn open(&mut self, topic: &str, partition: i32) -> Result<Option<i64>, Outage> {
        self.0.open_partition(topic, partition).await
    }

    fn revoked(&mut self) -> Vec<(String, i32)> {
        drain_revoked(self.0, self.1)
    }
}

/// Drops what the sink buffers for partitions taken away since the last
/// look, so it never persists records it no longer owns (their new owner
/// reads them again from the last commit). Returns those partitions.
fn drain_revoked<S: Sink>(sink: &mut S, revoked: &kafka::Revocations) -> Vec<(String, i32)> {
    let gone: Vec<(String, i32)> =
        std::mem::take(&mut *revoked.lock().unwrap_or_else(|p| p.into_inner()));
    if !gone.is_empty() {
        sink.revoked(&gone);
    }
    gone
}

#[allow(clippy::too_many_arguments)]
async fn write<S: Sink>(
    sink: &mut S,
    batch: &[BorrowedMessage<'_>],
    outbox: &Outbox<'_>,
    inputs: &HashMap<String, TopicMetrics>,
    keepalive: &Keepalive<'_>,
    revoked: &kafka::Revocations,
    frontier: &mut Frontier,
    (tracer, group): (&MessagingTracer, &str),
) -> Result<(), outbox::Interrupted> {
    let mut gone: Vec<(String, i32)> = Vec::new();
    let exporting = tracer.exporting();
    for m in batch {
        if let Some(metrics) = inputs.get(m.topic()) {
            metrics.consumed(1);
        }
    }
    // Positions in `batch` of the records still to write: all of them,
    // less those of partitions revoked meanwhile (a rebalance can happen
    // while an outage wait keeps the consumer polling).
    // Records redriven for another stage were written when they first came.
    let mut positions: Vec<usize> = (0..batch.len())
        .filter(|&i| !crate::dlq::redriven_for_another_stage(batch[i].headers(), outbox.stage()))
        .collect();
    if positions.len() < batch.len() {
        metrics::counter!("gale_redrive_skipped_total", "stage" => outbox.stage().to_string())
            .increment((batch.len() - positions.len()) as u64);
    }
    let mut backoff = outbox.outage_backoff();
    let refused = loop {
        if !gone.is_empty() {
            positions.retain(|&i| {
                !gone
                    .iter()
                    .any(|(t, p)| batch[i].topic() == t && batch[i].partition() == *p)
            });
        }
        let records: Vec<SinkRecord<'_>> = positions
            .iter()
            .map(|&i| {
                let m = &batch[i];
                SinkRecord {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp_ms: m.timestamp().to_millis(),
                    key: m.key(),
                    payload: m.payload().unwrap_or(&[]),
                    traceparent: if exporting {
                        TraceParent::of_headers(m.headers())
                    } else {
                        None
                    },
                }
            })
            .collect();
        let spans = if exporting {
            batch_spans(tracer, group, &records)
        } else {
            Vec::new()
        };
        let written = keepalive.hold(sink.write(&records)).await;
        for span in &spans {
            span.end(written.as_ref().err().map(|e| e.message.as_str()));
        }
        match written {
            Ok(refused) => break refused,
            Err(Outage {
                dependency,
                message,
            }) => {
                outbox
                    .outage_wait(dependency, &message, &mut backoff, keepalive)
                    .await?;
                gone = drain_revoked(sink, revoked);
                frontier.forget(&gone);
            }
        }
    };
    if backoff.attempts() > 0 {
        outbox.outage_over();
    }
    if !refused.is_empty() {
        let mut pending = Vec::with_capacity(refused.len());
        for r in refused {
            let index = positions[r.index];
            let msg = &batch[index];
            let metrics = &inputs[msg.topic()];
            pending.push(
                outbox
                    .send(outbox.dead_letter(
                        msg,
                        Some(index),
                        metrics,
                        r.class,
                        &r.message,
                        1,
                        None,
                    ))
                    .await,
            );
        }
        // Only dead letters here, and a refused dead letter stops the
        // service inside `await_acks`: nothing comes back undelivered.
        let undelivered = outbox.await_acks(pending, keepalive).await;
        debug_assert!(undelivered.is_empty());
    }
    Ok(())
}

/// One `process <topic>` span per topic of `records`, linked to their
/// records' contexts.
fn batch_spans(
    tracer: &MessagingTracer,
    group: &str,
    records: &[SinkRecord<'_>],
) -> Vec<RecordSpan> {
    let mut topics: Vec<&str> = records.iter().map(|r| r.topic).collect();
    topics.sort_unstable();
    topics.dedup();
    topics
        .into_iter()
        .filter_map(|topic| {
            let of_topic = || records.iter().filter(move |r| r.topic == topic);
            let mut partitions = of_topic().map(|r| r.partition);
            let first = partitions.next();
            let one_partition = first.filter(|p| partitions.all(|q| q == *p));
            tracer.batch(
                &Batch {
                    operation: "process",
                    operation_type: "process",
                    topic,
                    partition: one_partition,
                    group: Some(group),
                    count: of_topic().count(),
                },
                of_topic().filter_map(|r| r.traceparent),
            )
        })
        .collect()
}

async fn flush<S: Sink>(
    sink: &mut S,
    outbox: &Outbox<'_>,
    force: bool,
    keepalive: &Keepalive<'_>,
    revoked: &kafka::Revocations,
    frontier: &mut Frontier,
) -> Result<(), outbox::Interrupted> {
    let mut backoff = outbox.outage_backoff();
    loop {
        match keepalive.hold(sink.flush(force)).await {
            Ok(()) => {
                if backoff.attempts() > 0 {
                    outbox.outage_over();
                }
                return Ok(());
            }
            Err(Outage {
                dependency,
                message,
            }) => {
                // On shutdown (`force`) the wait still ends with the signal's
                // token; unflushed records are simply not committed.
                outbox
                    .outage_wait(dependency, &message, &mut backoff, keepalive)
                    .await?;
                frontier.forget(&drain_revoked(sink, revoked));
            }
        }
    }
}
