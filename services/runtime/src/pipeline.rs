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
//! * a stage with keyed state ([`Processor::State`]) has it restored before
//!   it sees a record of a partition, and written to its changelog after the
//!   batch's outputs are acknowledged and before its offsets are stored (see
//!   [`crate::state`]); records the restored state already reflects are
//!   skipped;
//! * records reach the processor contiguously per partition (see
//!   [`crate::frontier`]);
//! * each record is a `process <topic>` span whose context is written as
//!   `traceparent` into every output it alone causes; an output derived from
//!   many records ([`Emit::links`], a window aggregate) or from a timer gets
//!   a `create <topic>` span of its own that links to its contributors
//!   instead (see [`crate::telemetry`]);
//! * on shutdown the batch in hand is finished (or, if a wait is interrupted,
//!   cut short without storing its unfinished offsets) and offsets are
//!   committed synchronously.

use std::time::Instant;

use async_trait::async_trait;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tracing::Instrument as _;

use std::collections::BTreeMap;

use crate::avro::{DecodeError, Decoder, Encoder};
use crate::binary::AvroRecord;
use crate::frontier::{self, Frontier, Opener};
use crate::kafka::{self, Fetching};
use crate::keepalive::Keepalive;
use crate::metrics::{EventAges, TopicMetrics};
use crate::outbox::{self, Interrupted, Outbox, Outgoing};
use crate::schema::SchemaFile;
use crate::service::{LoopConsumer, Service};
use crate::sink::Outage;
use crate::state::{self, Slot, StateStore, StateValue};
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
    /// The partition's watermark before this record (ms): the largest event
    /// time seen on it, less the configured lateness. `None` for stateless
    /// stages and before the first event time.
    pub watermark: Option<i64>,
    /// The record's W3C `traceparent` header, if it has one: the trace of
    /// the reading, for outputs that name their cause (a fault event).
    pub traceparent: Option<&'a str>,
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
    /// Trace contexts of the records this output is derived from, when it
    /// stands for more than the record in hand (a window aggregate; kept
    /// only while [`crate::telemetry::spans_exported`]). Non-empty: the
    /// output's `traceparent` is a `create` span of its own, linked to
    /// these, rather than a child of the record's span, which would name
    /// one contributor (or only the record that closed the window) as the
    /// cause of all. Empty, the usual case: the output continues the
    /// record's trace.
    pub links: Vec<telemetry::TraceParent>,
}

impl<O> Emit<O> {
    /// An output that continues the trace of the record in hand.
    pub fn new(output: &'static str, key: String, value: O) -> Self {
        Emit {
            output,
            key,
            value,
            links: Vec::new(),
        }
    }
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
    type Output: AvroRecord + 'static;
    /// What the stage remembers per input key, kept durable by the runtime
    /// (see [`crate::state`]); `()` for a stateless stage.
    type State: StateValue;

    /// Handles one record. `state` holds the value of the record's key;
    /// change it only on the way to `Ok` or `Reject` (a `Retry` or `Outage`
    /// hands the same record over again).
    async fn process(
        &mut self,
        input: &Self::Input,
        meta: &RecordMeta<'_>,
        state: &mut Slot<Self::State>,
    ) -> Result<Vec<Emit<Self::Output>>, ProcessError>;

    /// This instance no longer owns `partitions` (topic, partition): state
    /// kept for their keys is someone else's now. Called before the next
    /// batch after a rebalance.
    fn partitions_revoked(&mut self, _partitions: &[(String, i32)]) {}

    /// Event time of a record in ms, for the event-time latency histogram.
    fn event_time_ms(&self, _input: &Self::Input) -> Option<i64> {
        None
    }

    /// The event time a record advances its partition's watermark to, if
    /// any; by default its [`Processor::event_time_ms`]. A stage leaves out
    /// times it does not trust (a reading from the future must not move the
    /// watermark).
    fn watermark_time_ms(&self, input: &Self::Input) -> Option<i64> {
        self.event_time_ms(input)
    }

    /// True when `state` is of no more use once the watermark has reached
    /// `watermark`: it is then handed over as absent and deleted. Must stay
    /// true as the watermark grows.
    fn expired(&self, _state: &Self::State, _watermark: i64) -> bool {
        false
    }

    /// The event time at which the key holding `state` wants
    /// [`Processor::on_timer`] called, once its partition's watermark gets
    /// there (see [`crate::state`], "Timers"). Computed from the value, so
    /// timers survive restarts with it. Each time must be later than the
    /// one that last fired for the key; an earlier one is ignored.
    fn timer(&self, _state: &Self::State) -> Option<i64> {
        None
    }

    /// The watermark of the key's partition has reached the key's
    /// [`Processor::timer`]. Like [`Processor::process`] it may change the
    /// state and emit outputs, which are delivered before any offset moves;
    /// it must depend only on the state and `watermark` (a replay fires the
    /// same timers), so it cannot fail.
    async fn on_timer(
        &mut self,
        _key: &str,
        _state: &mut Slot<Self::State>,
        _watermark: i64,
    ) -> Vec<Emit<Self::Output>> {
        Vec::new()
    }
}

struct OutputTopic {
    name: &'static str,
    encoder: Encoder,
}

/// Declares a stage's topics and registers its schemas.
pub struct PipelineBuilder<'s> {
    service: &'s Service,
    input: Option<(String, SchemaFile)>,
    more_inputs: Vec<(String, SchemaFile)>,
    outputs: Vec<(&'static str, String, SchemaFile)>,
    dead_letter: Option<String>,
}

impl<'s> PipelineBuilder<'s> {
    /// Starts a pipeline for `service`.
    pub fn new(service: &'s Service) -> Self {
        PipelineBuilder {
            service,
            input: None,
            more_inputs: Vec::new(),
            outputs: Vec::new(),
            dead_letter: None,
        }
    }

    /// The topic consumed, and the schema its records are read into.
    pub fn input(mut self, topic: impl Into<String>, reader_schema: SchemaFile) -> Self {
        self.input = Some((topic.into(), reader_schema));
        self
    }

    /// Another topic consumed into the same input type, read with its own
    /// schema (enrich reads validated and quarantined readings alike).
    /// Stateless stages only: keyed state is per input partition, and two
    /// topics' offsets cannot share one partition's changelog.
    pub fn also_input(mut self, topic: impl Into<String>, reader_schema: SchemaFile) -> Self {
        self.more_inputs.push((topic.into(), reader_schema));
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
        topics.extend(self.more_inputs.iter().map(|(t, _)| t.as_str()));
        topics.extend(self.outputs.iter().map(|(_, t, _)| t.as_str()));
        self.service.ensure_topics(&topics).await?;
        let mut outputs = Vec::new();
        let mut topics = Vec::new();
        for (name, topic, schema) in self.outputs {
            let encoder = self.service.register_schema(&topic, schema).await?;
            outputs.push(OutputTopic { name, encoder });
            topics.push(topic);
        }
        Ok(Pipeline {
            service: self.service,
            input_metrics: self.service.metrics.topic(&input_topic),
            more_inputs: self
                .more_inputs
                .iter()
                .map(|(t, schema)| (t.clone(), *schema, self.service.metrics.topic(t)))
                .collect(),
            outbox: Outbox::new(self.service, topics, dead_letter),
            ages: EventAges::default(),
            input_topic,
            input_schema,
            outputs,
        })
    }
}

/// A built pipeline; [`Pipeline::run`] drives it until shutdown.
pub struct Pipeline<'s> {
    service: &'s Service,
    input_topic: String,
    input_schema: SchemaFile,
    outputs: Vec<OutputTopic>,
    outbox: Outbox<'s>,
    input_metrics: TopicMetrics,
    /// Further input topics ([`PipelineBuilder::also_input`]), their
    /// schemas and metrics.
    more_inputs: Vec<(String, SchemaFile, TopicMetrics)>,
    /// Event-time ages of the current batch, recorded once per batch.
    ages: EventAges,
}

impl<'s> Pipeline<'s> {
    /// Consumes until shutdown is requested, then drains and commits.
    pub async fn run<P: Processor>(mut self, mut processor: P) -> Result<(), Error> {
        let service = self.service;
        let LoopConsumer {
            consumer,
            group,
            revoked,
            hold,
        } = {
            if !self.more_inputs.is_empty() && !<P::State as StateValue>::STATELESS {
                return Err(Error::Config(
                    "a stage with keyed state consumes one input topic".into(),
                ));
            }
            let mut topics = vec![self.input_topic.as_str()];
            topics.extend(self.more_inputs.iter().map(|(t, _, _)| t.as_str()));
            service.subscribe(&topics, Fetching::Latency)?
        };
        // One decoder per input topic, the main one first.
        let mut decoders: Vec<Decoder<P::Input>> =
            vec![service.registry.decoder(self.input_schema)?];
        for (_, schema, _) in &self.more_inputs {
            decoders.push(service.registry.decoder(*schema)?);
        }
        let keepalive = Keepalive::new(&consumer, hold);
        let mut state = self.open_state::<P>(&group).await?;
        service.started();
        tracing::info!(
            input = %self.input_topic,
            more_inputs = ?self.more_inputs.iter().map(|(t, _, _)| t).collect::<Vec<_>>(),
            group = %group,
            outputs = ?self.outputs.iter().map(|o| o.encoder.subject()).collect::<Vec<_>>(),
            dead_letter = %self.outbox.dead_letter_topic(),
            state = ?state.as_ref().map(|(s, _)| s.topic()),
            "pipeline running"
        );

        let mut batches = outbox::Batches::new(&consumer, service);
        let mut frontier = Frontier::new();
        // A stateful stage writes its state once per commit interval
        // (changes to a key within it are written once) and stores offsets
        // as those writes complete; a stateless one stores offsets after
        // every batch.
        let interval = service
            .config
            .state
            .commit_interval
            .max(std::time::Duration::from_millis(10));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut persisting = Persisting::new(&consumer, &keepalive, self.input_topic.clone());
        let mut last_commit = std::time::Instant::now();
        loop {
            let batch = match batches.next_or_tick(Some(&mut ticker)).await {
                outbox::Next::Stop => break,
                outbox::Next::Tick => {
                    if let Some((store, changelog)) = state.as_mut() {
                        let moved = store.advance_idle();
                        if !moved.is_empty() {
                            self.fire_idle(&moved, &mut processor, store, &keepalive)
                                .await;
                            for p in moved {
                                persisting.touch(p, store.stored_offset(p));
                            }
                        }
                        if !persisting.is_idle() {
                            if persisting.has_uncommitted() {
                                store.sweep(|s, w| processor.expired(s, w));
                            }
                            persisting.commit(store, changelog, false).await;
                            last_commit = std::time::Instant::now();
                        }
                    }
                    continue;
                }
                outbox::Next::Batch(b) => b,
            };
            let mut opener = OpenState {
                processor: &mut processor,
                state: state.as_mut().map(|(s, _)| s),
                revoked: &revoked,
            };
            let gone = opener.revoked();
            frontier.forget(&gone);
            persisting.forget(&gone);
            let admitted = frontier::admit(
                batch,
                &gone,
                &mut opener,
                &consumer,
                &self.outbox,
                &keepalive,
                &mut frontier,
            )
            .await;
            let Ok(batch) = admitted else {
                break;
            };
            let done = self
                .handle_batch(
                    &batch,
                    &mut processor,
                    &mut decoders,
                    &group,
                    &keepalive,
                    state.as_mut().map(|(s, _)| s),
                )
                .await;
            match state.as_mut() {
                Some((store, changelog)) => {
                    persisting.handled(&batch[..done]);
                    let flush = done < batch.len();
                    if flush || last_commit.elapsed() >= interval {
                        store.sweep(|s, w| processor.expired(s, w));
                        persisting.commit(store, changelog, flush).await;
                        last_commit = std::time::Instant::now();
                    }
                }
                None => outbox::store_offsets(&consumer, &batch[..done]),
            }
            if done < batch.len() {
                break;
            }
        }
        if let Some((store, changelog)) = state.as_mut() {
            if !persisting.is_idle() {
                // Forget what was revoked while the last batch ran.
                let gone = std::mem::take(&mut *revoked.lock().unwrap_or_else(|p| p.into_inner()));
                persisting.forget(&gone);
                store.revoked(&gone.iter().map(|(_, p)| *p).collect::<Vec<_>>());
                persisting.commit(store, changelog, true).await;
            }
        }
        outbox::commit_final(&consumer, "pipeline");
        Ok(())
    }

    /// The keyed state of a stateful processor and the outbox of its
    /// changelog, which is created (compacted, co-partitioned with the
    /// input) if missing.
    async fn open_state<P: Processor>(
        &self,
        group: &str,
    ) -> Result<Option<(StateStore<P::State>, Outbox<'s>)>, Error> {
        if <P::State as StateValue>::STATELESS {
            return Ok(None);
        }
        let service = self.service;
        let topic = state::changelog_topic(service.name(), group);
        let partitions = service
            .producer
            .partition_count(&self.input_topic, std::time::Duration::from_secs(10))
            .map_err(|e| {
                Error::kafka(format!("reading the partitions of {}", self.input_topic), e)
            })?;
        state::ensure_changelog(&service.config.kafka, &service.producer, &topic, partitions)
            .await?;
        let producer = kafka::state_producer(&service.config.kafka, service.kafka_context())?;
        let changelog = Outbox::with_producer(
            service,
            producer,
            vec![topic.clone()],
            self.outbox.dead_letter_topic().to_string(),
        );
        let store = StateStore::new(topic, 0, &service.config.state, &service.config.kafka);
        Ok(Some((store, changelog)))
    }

    /// The metrics of input topic `topic`.
    fn metrics_of(&self, topic: &str) -> &TopicMetrics {
        self.more_inputs
            .iter()
            .find(|(t, _, _)| t == topic)
            .map_or(&self.input_metrics, |(_, _, m)| m)
    }

    /// Handles `batch`; returns how many records (a prefix) are fully done.
    async fn handle_batch<P: Processor>(
        &mut self,
        batch: &[BorrowedMessage<'_>],
        processor: &mut P,
        decoders: &mut [Decoder<P::Input>],
        group: &str,
        keepalive: &Keepalive<'_>,
        mut state: Option<&mut StateStore<P::State>>,
    ) -> usize {
        let started = Instant::now();
        if self.more_inputs.is_empty() {
            self.input_metrics.consumed(batch.len() as u64);
        } else {
            for m in batch {
                self.metrics_of(m.topic()).consumed(1);
            }
        }
        let mut pending = Vec::with_capacity(batch.len() * 2);
        let mut done = batch.len();
        for (i, msg) in batch.iter().enumerate() {
            match self
                .handle_record(
                    i,
                    msg,
                    processor,
                    decoders,
                    group,
                    keepalive,
                    state.as_deref_mut(),
                )
                .await
            {
                Ok(records) => {
                    for record in records {
                        pending.push(self.outbox.send(record).await);
                    }
                }
                Err(Interrupted) => {
                    done = i;
                    break;
                }
            }
        }
        let mut undeliverable = self.outbox.await_acks(pending, keepalive).await;
        // Outputs the broker will never take (too large): their inputs go to
        // the dead-letter topic instead, with the broker's reason.
        while !undeliverable.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let mut letters = Vec::new();
            for u in undeliverable {
                let Some(i) = u.record.origin.filter(|i| seen.insert(*i)) else {
                    continue;
                };
                let message = format!(
                    "output to {} refused by the broker: {}",
                    self.outbox.topic_name(u.record.target),
                    u.error
                );
                letters.push(
                    self.outbox
                        .send(self.outbox.dead_letter(
                            &batch[i],
                            Some(i),
                            self.metrics_of(batch[i].topic()),
                            "produce",
                            &message,
                            1,
                            None,
                        ))
                        .await,
                );
            }
            undeliverable = self.outbox.await_acks(letters, keepalive).await;
        }
        keepalive.resume();
        // Per batch, not per record: recording into histograms costs more
        // than the rest of the bookkeeping on the hot path.
        self.service
            .metrics
            .processed(started.elapsed(), batch.len());
        self.service
            .metrics
            .event_ages(&mut self.ages, chrono::Utc::now().timestamp_millis());
        done
    }

    #[allow(clippy::too_many_arguments)]
    async fn handle_record<P: Processor>(
        &mut self,
        index: usize,
        msg: &BorrowedMessage<'_>,
        processor: &mut P,
        decoders: &mut [Decoder<P::Input>],
        group: &str,
        keepalive: &Keepalive<'_>,
        mut state: Option<&mut StateStore<P::State>>,
    ) -> Result<Vec<Outgoing>, Interrupted> {
        let service = self.service;
        let from = ConsumedFrom {
            topic: msg.topic(),
            group,
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key(),
        };
        let msg_headers = msg.headers();
        let span = service.tracer.process(&from, msg_headers);
        // Log lines of the processor name the record's trace.
        let log_span = span.log_span();
        // Every output, dead letters included, carries this hop's trace context.
        let hop_headers = || {
            span.inject(
                telemetry::copy_non_trace_headers(msg_headers),
                &service.tracer,
            )
        };
        let reject = |this: &Self, class: &'static str, message: &str, attempts: u32| {
            span.end(Some(message));
            vec![this.outbox.dead_letter(
                msg,
                Some(index),
                this.metrics_of(msg.topic()),
                class,
                message,
                attempts,
                Some(hop_headers()),
            )]
        };
        if crate::dlq::redriven_for_another_stage(msg_headers, service.name()) {
            // Sent back for the stage that failed it; this stage took the original.
            metrics::counter!("gale_redrive_skipped_total", "stage" => service.name().to_string())
                .increment(1);
            span.end(None);
            return Ok(Vec::new());
        }
        let Some(payload) = msg.payload() else {
            return Ok(reject(
                self,
                "malformed",
                "record has no value (tombstone)",
                1,
            ));
        };

        let mut outage = self.outbox.outage_backoff();
        let value = loop {
            let which = self
                .more_inputs
                .iter()
                .position(|(t, _, _)| t == msg.topic())
                .map_or(0, |i| i + 1);
            match decoders[which].decode(payload).await {
                Ok(v) => break v,
                Err(DecodeError::RegistryUnavailable(e)) => {
                    self.outbox
                        .outage_wait("registry", &e, &mut outage, keepalive)
                        .await?;
                }
                Err(e) => return Ok(reject(self, e.class(), &e.to_string(), 1)),
            }
        };
        if let Some(ts) = processor.event_time_ms(&value) {
            if service.tracer.exporting() {
                // A candidate exemplar of its latency bucket.
                self.ages.add_traced(ts, span.context().map(|c| c.trace_id));
            } else {
                self.ages.add(ts);
            }
        }
        let key = msg.key().unwrap_or_default();
        let watermark = state.as_ref().and_then(|s| s.watermark(msg.partition()));
        if let Some(store) = state.as_deref_mut() {
            let covered = store.covered(msg.partition(), msg.offset(), key);
            store.observe(msg.partition(), processor.watermark_time_ms(&value));
            if covered {
                // Reflected in the restored state; its outputs were delivered.
                metrics::counter!("gale_state_skipped_records_total").increment(1);
                span.end(None);
                return Ok(self
                    .fire_timers(Some(index), msg.partition(), processor, store)
                    .await);
            }
        }
        let mut slot = match state.as_deref_mut() {
            Some(store) => store.take(msg.partition(), key, |s, w| processor.expired(s, w)),
            None => Slot::new(None),
        };

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
                watermark,
                traceparent: msg_headers.and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "traceparent")
                        .and_then(|h| h.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                }),
            };
            let result = processor
                .process(&value, &meta, &mut slot)
                .instrument(log_span.clone())
                .await;
            if !matches!(
                result,
                Err(ProcessError::Retry { .. } | ProcessError::Outage { .. })
            ) {
                if let Some(store) = state.as_deref_mut() {
                    let due = slot
                        .changed()
                        .then(|| slot.get().and_then(|s| processor.timer(s)));
                    store.put(
                        msg.partition(),
                        key,
                        std::mem::replace(&mut slot, Slot::new(None)),
                    );
                    if let Some(due) = due {
                        store.set_timer(msg.partition(), key, due);
                    }
                }
            }
            match result {
                Ok(emits) => break emits,
                Err(ProcessError::Reject { class, message }) => {
                    return Ok(reject(self, class, &message, attempt));
                }
                Err(ProcessError::Retry { class, message }) => {
                    let Some(wait) = backoff.get(attempt as usize - 1).copied() else {
                        if let Some(store) = state.as_deref_mut() {
                            store.put(msg.partition(), key, slot);
                        }
                        return Ok(reject(self, class, &message, attempt));
                    };
                    let ids = span.context();
                    tracing::warn!(
                        attempt,
                        wait = ?wait,
                        class,
                        error = %message,
                        trace_id = ids.map(|t| t.trace_id_hex()).unwrap_or_default(),
                        span_id = ids.map(|t| t.span_id_hex()).unwrap_or_default(),
                        "record failed; retrying"
                    );
                    service.metrics.record_retry();
                    if !keepalive.wait(wait, Some(&service.shutdown)).await {
                        if let Some(store) = state.as_deref_mut() {
                            store.put(msg.partition(), key, slot);
                        }
                        return Err(Interrupted);
                    }
                    attempt += 1;
                }
                Err(ProcessError::Outage {
                    dependency,
                    message,
                }) => {
                    let waited = self
                        .outbox
                        .outage_wait(dependency, &message, &mut outage, keepalive)
                        .await;
                    if waited.is_err() {
                        if let Some(store) = state.as_deref_mut() {
                            store.put(msg.partition(), key, slot);
                        }
                        return Err(Interrupted);
                    }
                }
            }
        };
        if outage.attempts() > 0 {
            self.outbox.outage_over();
        }

        let mut out = Vec::with_capacity(emits.len());
        let last = emits.len().saturating_sub(1);
        let mut headers = Some(hop_headers());
        for (i, emit) in emits.into_iter().enumerate() {
            let Some(target) = self.outputs.iter().position(|o| o.name == emit.output) else {
                let message = format!("processor emitted to undeclared output {:?}", emit.output);
                return Ok(reject(self, "internal", &message, attempt));
            };
            match self.outputs[target].encoder.encode(&emit.value) {
                Ok(payload) => out.push(Outgoing {
                    target,
                    origin: Some(index),
                    partition: None,
                    key: Some(emit.key.into_bytes()),
                    payload: Some(payload),
                    headers: if !emit.links.is_empty() {
                        // Derived from many records: a span of its own,
                        // linked to them.
                        let created = service.tracer.create(
                            self.outbox.topic_name(target),
                            &emit.links,
                            "record",
                            span.context(),
                        );
                        let h = created.inject(
                            telemetry::copy_non_trace_headers(msg_headers),
                            &service.tracer,
                        );
                        created.end(None);
                        h
                    } else if i == last {
                        // The last output takes the headers, the others a copy.
                        headers.take().unwrap_or_default()
                    } else {
                        headers.clone().unwrap_or_default()
                    },
                }),
                Err(message) => return Ok(reject(self, "encode", &message, attempt)),
            }
        }
        span.end(None);
        if let Some(store) = state {
            out.extend(
                self.fire_timers(Some(index), msg.partition(), processor, store)
                    .await,
            );
        }
        Ok(out)
    }

    /// Calls the timers of `partition` the watermark has reached; their
    /// outputs go with record `origin` (none for an idle partition).
    async fn fire_timers<P: Processor>(
        &mut self,
        origin: Option<usize>,
        partition: i32,
        processor: &mut P,
        store: &mut StateStore<P::State>,
    ) -> Vec<Outgoing> {
        let mut out = Vec::new();
        while let Some((key, due)) = store.pop_due(partition) {
            let watermark = store.watermark(partition).unwrap_or(due);
            let mut slot = store.take(partition, &key, |s, w| processor.expired(s, w));
            let name = String::from_utf8_lossy(&key).into_owned();
            let emits = processor.on_timer(&name, &mut slot, watermark).await;
            // A timer that does not move on would fire for ever.
            let next = slot
                .get()
                .and_then(|s| processor.timer(s))
                .filter(|t| *t > due);
            store.put(partition, &key, slot);
            store.set_timer(partition, &key, next);
            metrics::counter!("gale_timers_fired_total").increment(1);
            for emit in emits {
                let Some(target) = self.outputs.iter().position(|o| o.name == emit.output) else {
                    tracing::error!(output = emit.output, key = %name, "timer emitted to an undeclared output; dropped");
                    continue;
                };
                match self.outputs[target].encoder.encode(&emit.value) {
                    Ok(payload) => {
                        // No record caused it: a trace of its own (only
                        // when spans are exported), linked to the records
                        // it stands for, if the processor names them.
                        let created = self.service.tracer.create(
                            self.outbox.topic_name(target),
                            &emit.links,
                            "timer",
                            None,
                        );
                        let headers = created
                            .inject(rdkafka::message::OwnedHeaders::new(), &self.service.tracer);
                        created.end(None);
                        out.push(Outgoing {
                            target,
                            origin,
                            partition: None,
                            key: Some(emit.key.into_bytes()),
                            payload: Some(payload),
                            headers,
                        })
                    }
                    Err(e) => {
                        tracing::error!(key = %name, error = %e, "cannot encode a timer's output; dropped");
                    }
                }
            }
        }
        out
    }

    /// Fires the timers of partitions whose event time moved because they
    /// were idle, and waits until their outputs are acknowledged.
    async fn fire_idle<P: Processor>(
        &mut self,
        partitions: &[i32],
        processor: &mut P,
        store: &mut StateStore<P::State>,
        keepalive: &Keepalive<'_>,
    ) {
        let mut pending = Vec::new();
        for &p in partitions {
            for record in self.fire_timers(None, p, processor, store).await {
                pending.push(self.outbox.send(record).await);
            }
        }
        if pending.is_empty() {
            return;
        }
        let refused = self.outbox.await_acks(pending, keepalive).await;
        for u in refused {
            tracing::error!(error = %u.error, topic = %self.outbox.topic_name(u.record.target), "the broker refused a timer's output");
        }
        keepalive.resume();
    }
}

/// Per input partition, the next offset.
type Offsets = BTreeMap<i32, i64>;

/// State writes in flight. The order [`crate::state`] needs (values
/// acknowledged, then markers, markers acknowledged, then offsets) is kept,
/// but each step waits for acknowledgements of records sent one commit
/// interval earlier, which have long arrived: the loop does not stop for a
/// broker round trip at every commit. Offsets are stored up to two commit
/// intervals after their records were handled.
struct Persisting<'c> {
    /// The input consumer, which stores the offsets.
    consumer: &'c rdkafka::consumer::StreamConsumer<kafka::GaleContext>,
    /// Keeps the consumer in its group while a write waits for an outage.
    keepalive: &'c Keepalive<'c>,
    /// The input topic.
    input_topic: String,
    /// Records handled since the last commit: per partition, the next offset.
    uncommitted: Offsets,
    /// Per owned partition, the next offset after the last record handled.
    positions: Offsets,
    /// Values sent; the markers to send once they are acknowledged, and the
    /// offsets those allow storing.
    values: Option<(Vec<outbox::Pending>, Vec<Outgoing>, Offsets)>,
    /// Markers sent; the offsets to store once they are acknowledged.
    markers: Option<(Vec<outbox::Pending>, Offsets)>,
}

impl<'c> Persisting<'c> {
    fn new(
        consumer: &'c rdkafka::consumer::StreamConsumer<kafka::GaleContext>,
        keepalive: &'c Keepalive<'c>,
        input_topic: String,
    ) -> Self {
        Persisting {
            consumer,
            keepalive,
            input_topic,
            uncommitted: Offsets::new(),
            positions: Offsets::new(),
            values: None,
            markers: None,
        }
    }

    /// Nothing handled that is not stored.
    fn is_idle(&self) -> bool {
        self.uncommitted.is_empty() && !self.in_flight()
    }

    fn in_flight(&self) -> bool {
        self.values.is_some() || self.markers.is_some()
    }

    fn has_uncommitted(&self) -> bool {
        !self.uncommitted.is_empty()
    }

    /// Notes records as handled, their outputs acknowledged.
    fn handled(&mut self, records: &[BorrowedMessage<'_>]) {
        for m in records {
            let e = self.uncommitted.entry(m.partition()).or_insert(0);
            *e = (*e).max(m.offset() + 1);
            let e = self.positions.entry(m.partition()).or_insert(0);
            *e = (*e).max(m.offset() + 1);
        }
    }

    /// State of `partition` changed without a record (an idle partition's
    /// timers): write it at the partition's current position, or `stored`
    /// (the restored marker) when nothing was handled since assignment. With
    /// neither, the change waits for the partition's next record.
    fn touch(&mut self, partition: i32, stored: Option<i64>) {
        if let Some(at) = self.positions.get(&partition).copied().or(stored) {
            self.uncommitted.entry(partition).or_insert(at);
        }
    }

    /// Sends the state changes of the records handled since the last commit
    /// and moves earlier writes on; with `flush`, waits until all of them
    /// are written and their offsets stored.
    async fn commit<S: StateValue>(
        &mut self,
        store: &mut StateStore<S>,
        changelog: &Outbox<'_>,
        flush: bool,
    ) {
        self.advance(changelog).await;
        let ends = std::mem::take(&mut self.uncommitted);
        if !ends.is_empty() {
            self.start(store, changelog, ends).await;
        }
        while flush && self.in_flight() {
            self.advance(changelog).await;
        }
        self.keepalive.resume();
    }

    /// Moves every write in flight one step on: acknowledged markers let
    /// their offsets be stored; acknowledged values let their markers go.
    async fn advance(&mut self, changelog: &Outbox<'_>) {
        if let Some((pending, ends)) = self.markers.take() {
            acknowledged(changelog, pending, self.keepalive).await;
            outbox::store_next_offsets(
                self.consumer,
                ends.into_iter()
                    .map(|(p, o)| (self.input_topic.clone(), p, o)),
            );
        }
        if let Some((pending, markers, ends)) = self.values.take() {
            acknowledged(changelog, pending, self.keepalive).await;
            let mut sent = Vec::with_capacity(markers.len());
            for r in markers {
                sent.push(changelog.send(r).await);
            }
            self.markers = Some((sent, ends));
        }
    }

    /// Sends the state changes of the records handled up to `ends`; call
    /// after [`Persisting::advance`].
    async fn start<S: StateValue>(
        &mut self,
        store: &mut StateStore<S>,
        changelog: &Outbox<'_>,
        ends: Offsets,
    ) {
        let changes = match store.changes(&ends) {
            Ok(c) => c,
            Err(e) => fatal_state(&e),
        };
        let mut sent = Vec::with_capacity(changes.values.len());
        for r in changes.values {
            sent.push(changelog.send(r).await);
        }
        self.values = Some((sent, changes.markers, ends));
    }

    /// Partitions revoked: their offsets are no longer ours to store and
    /// their markers not ours to write.
    fn forget(&mut self, gone: &[(String, i32)]) {
        if gone.is_empty() {
            return;
        }
        let is_gone = |p: &i32| gone.iter().any(|(_, g)| g == p);
        self.uncommitted.retain(|p, _| !is_gone(p));
        self.positions.retain(|p, _| !is_gone(p));
        if let Some((_, markers, ends)) = self.values.as_mut() {
            markers.retain(|m| !m.partition.as_ref().is_some_and(is_gone));
            ends.retain(|p, _| !is_gone(p));
        }
        if let Some((_, ends)) = self.markers.as_mut() {
            ends.retain(|p, _| !is_gone(p));
        }
    }
}

/// Waits until every state record is acknowledged; one the broker will
/// never take stops the service.
async fn acknowledged(
    changelog: &Outbox<'_>,
    pending: Vec<outbox::Pending>,
    keepalive: &Keepalive<'_>,
) {
    if pending.is_empty() {
        return;
    }
    let refused = changelog.await_acks(pending, keepalive).await;
    if let Some(u) = refused.first() {
        fatal_state(&format!(
            "the broker refuses a state record of {} bytes for {}: {}",
            u.record.payload.as_ref().map_or(0, Vec::len),
            changelog.topic_name(0),
            u.error
        ));
    }
}

/// State that cannot be stored must not be lost by going on: stop, with
/// the offsets of the batch not stored.
fn fatal_state(message: &str) -> ! {
    tracing::error!(
        error = message,
        "cannot store the stage's state; stopping without storing offsets"
    );
    std::process::exit(6);
}

/// Opens partitions for [`frontier::admit`]: restores their state.
struct OpenState<'a, P: Processor> {
    processor: &'a mut P,
    state: Option<&'a mut StateStore<P::State>>,
    revoked: &'a crate::kafka::Revocations,
}

#[async_trait]
impl<P: Processor> Opener for OpenState<'_, P> {
    async fn open(&mut self, _topic: &str, partition: i32) -> Result<Option<i64>, Outage> {
        match self.state.as_deref_mut() {
            Some(store) => {
                let marker = store.restore(partition).await?;
                let processor = &*self.processor;
                store.index_timers(partition, |s| processor.timer(s));
                Ok(marker)
            }
            None => Ok(None),
        }
    }

    fn revoked(&mut self) -> Vec<(String, i32)> {
        let gone = std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()));
        if !gone.is_empty() {
            self.processor.partitions_revoked(&gone);
            if let Some(store) = self.state.as_deref_mut() {
                let partitions: Vec<i32> = gone.iter().map(|(_, p)| *p).collect();
                store.revoked(&partitions);
            }
        }
        gone
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
