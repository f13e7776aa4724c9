//! The consume → process → produce loop every transforming service runs.
//!
//! A service supplies a [`Processor`]: a plain async function from one decoded
//! input record to zero or more outputs, or a [`ProcessError`] that says which
//! kind of failure it was. Everything else happens here, once:
//!
//! * records are taken in batches of up to `processing.batch_size`; outputs are
//!   queued to the producer as they are made and awaited once per batch, so
//!   throughput does not depend on one broker round trip per record;
//! * an input offset is stored only after every output of the batch, dead
//!   letters included, is acknowledged; failed deliveries are re-sent until they
//!   succeed (an outage pauses the loop, it never drops records);
//! * undecodable records and records the processor rejects go to the dead-letter
//!   topic with their original bytes; records that fail in a way that may pass
//!   are retried on the `processing.retry_backoff` schedule first;
//! * a dependency outage (registry, database) makes the loop wait with capped
//!   back-off, report not-ready and retry the same record;
//! * each record is a `process <topic>` span whose context is written as
//!   `traceparent` into every output;
//! * on shutdown the batch in hand is finished (or, if a wait is interrupted,
//!   cut short without storing its unfinished offsets) and offsets are
//!   committed synchronously.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::binary::AvroRecord;
use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};

use crate::avro::{DecodeError, Decoder, Encoder};
use crate::dlq;
use crate::kafka::{self, GaleContext, SendError};
use crate::metrics::TopicMetrics;
use crate::retry::Backoff;
use crate::schema::SchemaFile;
use crate::service::Service;
use crate::shutdown::sleep_or_cancel;
use crate::telemetry::{self, ConsumedFrom};
use crate::Error;

/// Where a record came from, handed to the processor with the decoded value.
#[derive(Debug, Clone, Copy)]
pub struct RecordMeta<'a> {
    /// Input topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Kafka timestamp (ms), if set.
    pub timestamp_ms: Option<i64>,
    /// Record key bytes.
    pub key: Option<&'a [u8]>,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
}

/// One output record: which declared output, its key, its value.
#[derive(Debug, Clone)]
pub struct Emit<O> {
    /// Name the output was declared with in [`PipelineBuilder::output`].
    pub output: &'static str,
    /// Record key (the asset id for readings).
    pub key: String,
    /// Value, encoded with the output's schema.
    pub value: O,
}

/// How processing one record failed, which decides what happens next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProcessError {
    /// The record itself is bad (violates a hard rule): dead-letter it now.
    #[error("{class}: {message}")]
    Reject {
        /// Short class for headers and metrics, e.g. `unknown_asset`.
        class: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Processing failed in a way another attempt may not: retry on the
    /// configured schedule, then dead-letter.
    #[error("{class}: {message}")]
    Retry {
        /// Short class for headers and metrics.
        class: &'static str,
        /// What failed.
        message: String,
    },
    /// A dependency is down: wait and retry the same record, never dead-letter.
    #[error("{dependency} unavailable: {message}")]
    Outage {
        /// Which dependency (`database`, `registry`, ...); also the readiness check name.
        dependency: &'static str,
        /// The error seen.
        message: String,
    },
}

/// A stage's domain logic, free of Kafka.
#[async_trait]
pub trait Processor: Send {
    /// Decoded input type.
    type Input: AvroRecord;
    /// Output value type (an enum with `#[serde(untagged)]` if outputs differ).
    type Output: AvroRecord;

    /// Handles one record.
    async fn process(
        &mut self,
        input: &Self::Input,
        meta: &RecordMeta<'_>,
    ) -> Result<Vec<Emit<Self::Output>>, ProcessError>;

    /// Event time of a record in ms, for the event-time latency histogram.
    fn event_time_ms(&self, _input: &Self::Input) -> Option<i64> {
        None
    }
}

struct OutputTopic {
    name: &'static str,
    topic: String,
    encoder: Encoder,
    metrics: TopicMetrics,
}

/// Declares a stage's topics and registers its schemas.
pub struct PipelineBuilder<'s> {
    service: &'s Service,
    input: Option<(String, SchemaFile)>,
    outputs: Vec<(&'static str, String, SchemaFile)>,
    dead_letter: Option<String>,
}

impl<'s> PipelineBuilder<'s> {
    /// Starts a pipeline for `service`.
    pub fn new(service: &'s Service) -> Self {
        PipelineBuilder {
            service,
            input: None,
            outputs: Vec::new(),
            dead_letter: None,
        }
    }

    /// The topic consumed, and the schema its records are read into.
    pub fn input(mut self, topic: impl Into<String>, reader_schema: SchemaFile) -> Self {
        self.input = Some((topic.into(), reader_schema));
        self
    }

    /// A topic produced, under `name` for [`Emit::output`].
    pub fn output(
        mut self,
        name: &'static str,
        topic: impl Into<String>,
        schema: SchemaFile,
    ) -> Self {
        self.outputs.push((name, topic.into(), schema));
        self
    }

    /// The stage's dead-letter topic.
    pub fn dead_letters(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter = Some(topic.into());
        self
    }

    /// Creates missing topics (if configured) and registers output schemas.
    pub async fn build(self) -> Result<Pipeline<'s>, Error> {
        let (input_topic, input_schema) = self
            .input
            .ok_or_else(|| Error::Config("pipeline has no input topic".into()))?;
        let dead_letter = self
            .dead_letter
            .ok_or_else(|| Error::Config("pipeline has no dead-letter topic".into()))?;
        let mut topics: Vec<&str> = vec![input_topic.as_str(), dead_letter.as_str()];
        topics.extend(self.outputs.iter().map(|(_, t, _)| t.as_str()));
        self.service.ensure_topics(&topics).await?;
        let mut outputs = Vec::new();
        for (name, topic, schema) in self.outputs {
            let encoder = self.service.register_schema(&topic, schema).await?;
            outputs.push(OutputTopic {
                name,
                metrics: self.service.metrics.topic(&topic),
                topic,
                encoder,
            });
        }
        Ok(Pipeline {
            service: self.service,
            input_metrics: self.service.metrics.topic(&input_topic),
            dlq_metrics: self.service.metrics.topic(&dead_letter),
            newest_event: i64::MIN,
            input_topic,
            input_schema,
            dead_letter,
            outputs,
        })
    }
}

/// A built pipeline; [`Pipeline::run`] drives it until shutdown.
pub struct Pipeline<'s> {
    service: &'s Service,
    input_topic: String,
    input_schema: SchemaFile,
    dead_letter: String,
    outputs: Vec<OutputTopic>,
    input_metrics: TopicMetrics,
    dlq_metrics: TopicMetrics,
    /// Newest event time seen in the current batch (ms), for the latency histogram.
    newest_event: i64,
}

/// A record ready to send, kept until acknowledged so it can be re-sent.
struct Outgoing {
    /// Index into outputs; `usize::MAX` for the dead-letter topic.
    target: usize,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
}

/// The loop was interrupted by shutdown while waiting.
struct Interrupted;

impl<'s> Pipeline<'s> {
    /// Consumes until shutdown is requested, then drains and commits.
    pub async fn run<P: Processor>(mut self, mut processor: P) -> Result<(), Error> {
        let service = self.service;
        let group = kafka::group_id(&service.config.kafka, service.name());
        let consumer: StreamConsumer<GaleContext> =
            kafka::consumer(&service.config.kafka, &group, service.kafka_context())?;
        consumer
            .subscribe(&[&self.input_topic])
            .map_err(|e| Error::kafka("subscribing", e))?;
        let mut decoder: Decoder<P::Input> = service.registry.decoder(self.input_schema)?;
        let batch_size = service.config.processing.batch_size.max(1);
        let token = service.shutdown.clone();
        service.started();
        tracing::info!(
            input = %self.input_topic,
            group = %group,
            outputs = ?self.outputs.iter().map(|o| o.topic.as_str()).collect::<Vec<_>>(),
            dead_letter = %self.dead_letter,
            "pipeline running"
        );

        loop {
            let first = tokio::select! {
                biased;
                _ = token.cancelled() => break,
                m = consumer.recv() => m,
            };
            let first = match first {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    if !sleep_or_cancel(&token, Duration::from_millis(200)).await {
                        break;
                    }
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < batch_size {
                match consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(m),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consume error");
                        break;
                    }
                    None => break,
                }
            }
            let done = self
                .handle_batch(&batch, &mut processor, &mut decoder, &group)
                .await;
            store_offsets(&consumer, &batch[..done]);
            if done < batch.len() {
                break;
            }
        }

        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("offsets committed; pipeline stopped"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                tracing::info!("nothing to commit; pipeline stopped")
            }
            Err(e) => tracing::warn!(error = %e, "final commit failed"),
        }
        Ok(())
    }

    /// Handles `batch`; returns how many records (a prefix) are fully done.
    async fn handle_batch<P: Processor>(
        &mut self,
        batch: &[BorrowedMessage<'_>],
        processor: &mut P,
        decoder: &mut Decoder<P::Input>,
        group: &str,
    ) -> usize {
        let started = Instant::now();
        self.newest_event = i64::MIN;
        self.input_metrics.consumed(batch.len() as u64);
        let mut pending = Vec::with_capacity(batch.len() * 2);
        let mut done = batch.len();
        for (i, msg) in batch.iter().enumerate() {
            match self.handle_record(msg, processor, decoder, group).await {
                Ok(records) => {
                    for record in records {
                        pending.push(self.send(record).await);
                    }
                }
                Err(Interrupted) => {
                    done = i;
                    break;
                }
            }
        }
        self.await_acks(pending).await;
        // Per batch, not per record: recording into histograms costs more
        // than the rest of the bookkeeping on the hot path.
        self.service
            .metrics
            .processed(started.elapsed(), batch.len());
        if self.newest_event != i64::MIN {
            let age = chrono::Utc::now().timestamp_millis() - self.newest_event;
            self.service
                .metrics
                .event_age(Duration::from_millis(age.max(0) as u64));
        }
        done
    }

    async fn handle_record<P: Processor>(
        &mut self,
        msg: &BorrowedMessage<'_>,
        processor: &mut P,
        decoder: &mut Decoder<P::Input>,
        group: &str,
    ) -> Result<Vec<Outgoing>, Interrupted> {
        let service = self.service;
        let from = ConsumedFrom {
            topic: msg.topic(),
            group,
            partition: msg.partition(),
            offset: msg.offset(),
        };
        let msg_headers = msg.headers();
        let span = service.tracer.process(&from, msg_headers);
        let payload = msg.payload().unwrap_or(&[]);

        let mut outage = self.outage_backoff();
        let value = loop {
            match decoder.decode(payload).await {
                Ok(v) => break v,
                Err(DecodeError::RegistryUnavailable(e)) => {
                    self.outage_wait("registry", &e, &mut outage).await?;
                }
                Err(e) => {
                    span.end(Some(&e.to_string()));
                    return Ok(vec![self.dead_letter(msg, e.class(), &e.to_string(), 1)]);
                }
            }
        };
        if let Some(ts) = processor.event_time_ms(&value) {
            self.newest_event = self.newest_event.max(ts);
        }

        let backoff = &service.config.processing.retry_backoff;
        let mut attempt = 1u32;
        let emits = loop {
            let meta = RecordMeta {
                topic: msg.topic(),
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp_ms: msg.timestamp().to_millis(),
                key: msg.key(),
                attempt,
            };
            match processor.process(&value, &meta).await {
                Ok(emits) => break emits,
                Err(ProcessError::Reject { class, message }) => {
                    span.end(Some(&message));
                    return Ok(vec![self.dead_letter(msg, class, &message, attempt)]);
                }
                Err(ProcessError::Retry { class, message }) => {
                    let Some(wait) = backoff.get(attempt as usize - 1).copied() else {
                        span.end(Some(&message));
                        return Ok(vec![self.dead_letter(msg, class, &message, attempt)]);
                    };
                    tracing::warn!(attempt, wait = ?wait, class, error = %message, "record failed; retrying");
                    service.metrics.record_retry();
                    if !sleep_or_cancel(&service.shutdown, wait).await {
                        return Err(Interrupted);
                    }
                    attempt += 1;
                }
                Err(ProcessError::Outage {
                    dependency,
                    message,
                }) => {
                    self.outage_wait(dependency, &message, &mut outage).await?;
                }
            }
        };
        if outage.attempts() > 0 {
            self.outage_over();
        }

        let mut out = Vec::with_capacity(emits.len());
        let headers = span.inject(
            telemetry::copy_non_trace_headers(msg_headers),
            &service.tracer,
        );
        let last = emits.len().saturating_sub(1);
        let mut headers = Some(headers);
        for (i, emit) in emits.into_iter().enumerate() {
            let Some(target) = self.outputs.iter().position(|o| o.name == emit.output) else {
                let message = format!("processor emitted to undeclared output {:?}", emit.output);
                span.end(Some(&message));
                return Ok(vec![self.dead_letter(msg, "internal", &message, attempt)]);
            };
            match self.outputs[target].encoder.encode(&emit.value) {
                Ok(payload) => out.push(Outgoing {
                    target,
                    key: Some(emit.key.into_bytes()),
                    payload,
                    // The last output takes the headers, the others a copy.
                    headers: if i == last {
                        headers.take().unwrap_or_default()
                    } else {
                        headers.clone().unwrap_or_default()
                    },
                }),
                Err(message) => {
                    span.end(Some(&message));
                    return Ok(vec![self.dead_letter(msg, "encode", &message, attempt)]);
                }
            }
        }
        span.end(None);
        Ok(out)
    }

    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        class: &'static str,
        message: &str,
        attempts: u32,
    ) -> Outgoing {
        tracing::debug!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            class,
            error = message,
            "dead-lettering record"
        );
        self.input_metrics.dead_lettered(class);
        let headers = dlq::headers(
            msg.headers(),
            &dlq::Origin {
                topic: msg.topic(),
                partition: Some(msg.partition()),
                offset: Some(msg.offset()),
                timestamp_ms: msg.timestamp().to_millis(),
            },
            &dlq::Failure {
                stage: self.service.name(),
                class,
                message,
                attempts,
            },
        );
        Outgoing {
            target: usize::MAX,
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().unwrap_or(&[]).to_vec(),
            headers,
        }
    }

    fn topic_of(&self, target: usize) -> &str {
        if target == usize::MAX {
            &self.dead_letter
        } else {
            &self.outputs[target].topic
        }
    }

    async fn send(
        &self,
        record: Outgoing,
    ) -> (Outgoing, Option<rdkafka::producer::DeliveryFuture>) {
        let topic = self.topic_of(record.target);
        match self
            .service
            .producer
            .send(
                topic,
                record.key.as_deref(),
                &record.payload,
                record.headers.clone(),
            )
            .await
        {
            Ok(future) => (record, Some(future)),
            Err(SendError::Permanent(e)) | Err(SendError::Transient(e)) => {
                tracing::warn!(topic, error = %e, "could not queue record; will retry");
                (record, None)
            }
        }
    }

    /// Waits until every record is acknowledged, re-sending failures with
    /// outage back-off. Returns only when all are stored by the broker.
    async fn await_acks(
        &mut self,
        pending: Vec<(Outgoing, Option<rdkafka::producer::DeliveryFuture>)>,
    ) {
        let mut pending = pending;
        let mut backoff = self.outage_backoff();
        loop {
            let (records, futures): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
            let results = futures::future::join_all(futures.into_iter().map(|f| async move {
                match f {
                    Some(f) => match f.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(e.to_string()),
                        Err(_) => Err("producer dropped the delivery".to_string()),
                    },
                    None => Err("not queued".to_string()),
                }
            }))
            .await;
            let mut failed = Vec::new();
            let mut acked: HashMap<usize, u64> = HashMap::new();
            let mut last_error = String::new();
            for (record, result) in records.into_iter().zip(results) {
                match result {
                    Ok(()) => *acked.entry(record.target).or_default() += 1,
                    Err(e) => {
                        last_error = e;
                        failed.push(record);
                    }
                }
            }
            for (target, n) in acked {
                if target == usize::MAX {
                    self.dlq_metrics.produced(n);
                } else {
                    self.outputs[target].metrics.produced(n);
                }
            }
            if failed.is_empty() {
                if backoff.attempts() > 0 {
                    self.service.health.ok("broker");
                    self.outage_over();
                }
                return;
            }
            let wait = backoff.next_delay();
            self.service.health.fail(
                "broker",
                format!("{} records not acknowledged: {last_error}", failed.len()),
            );
            self.service.metrics.set_paused(true);
            self.service.metrics.outage_retry();
            tracing::warn!(records = failed.len(), wait = ?wait, error = %last_error, "delivery failed; re-sending");
            // Keep trying through shutdown: the watchdog bounds how long.
            tokio::time::sleep(wait).await;
            pending = Vec::with_capacity(failed.len());
            for record in failed {
                pending.push(self.send(record).await);
            }
        }
    }

    fn outage_backoff(&self) -> Backoff {
        let p = &self.service.config.processing;
        Backoff::new(p.outage_backoff_initial, p.outage_backoff_max)
    }

    async fn outage_wait(
        &self,
        dependency: &'static str,
        message: &str,
        backoff: &mut Backoff,
    ) -> Result<(), Interrupted> {
        let wait = backoff.next_delay();
        self.service
            .health
            .fail("paused", format!("{dependency} unavailable: {message}"));
        self.service.metrics.set_paused(true);
        self.service.metrics.outage_retry();
        tracing::warn!(dependency, wait = ?wait, error = message, "dependency unavailable; pausing");
        if sleep_or_cancel(&self.service.shutdown, wait).await {
            Ok(())
        } else {
            Err(Interrupted)
        }
    }

    fn outage_over(&self) {
        self.service.health.ok("paused");
        self.service.metrics.set_paused(false);
    }
}

fn store_offsets(consumer: &StreamConsumer<GaleContext>, done: &[BorrowedMessage<'_>]) {
    if done.is_empty() {
        return;
    }
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for m in done {
        let e = next.entry((m.topic(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    let mut tpl = TopicPartitionList::with_capacity(next.len());
    for ((topic, partition), offset) in next {
        if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::warn!(error = %e, "cannot record offset");
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Happens when the partition was revoked meanwhile; its new owner
        // re-reads from the last commit (at-least-once).
        tracing::warn!(error = %e, "storing offsets failed");
    }
}

/// Header value as UTF-8, for tests and tools.
pub fn header_str<'a>(
    headers: &'a rdkafka::message::BorrowedHeaders,
    key: &str,
) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}
