//! Everything a consuming loop sends, and the rule that it is acknowledged
//! before the input's offset moves.
//!
//! The transform loop ([`crate::pipeline`]) sends outputs and dead letters
//! through an [`Outbox`]; the sink loop ([`crate::sink`]) sends dead letters.
//! Both wait for every acknowledgement with [`Outbox::await_acks`], which
//! re-sends failures with capped back-off until the broker takes them: an
//! outage pauses the loop, it never drops a record.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message, OwnedHeaders};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};

use crate::dlq;
use crate::kafka::{self, GaleContext, SendError};
use crate::keepalive::Keepalive;
use crate::metrics::TopicMetrics;
use crate::retry::Backoff;
use crate::service::Service;
use crate::shutdown::{sleep_or_cancel, CancellationToken};

/// Index of the dead-letter topic among an outbox's targets.
pub const DEAD_LETTER: usize = usize::MAX;

/// Longest error message kept in a dead letter that the broker refused as
/// too large with its full headers.
const SHORT_MESSAGE: usize = 200;

/// How much of a value a dead letter keeps when the whole record is more
/// than the broker takes.
pub const TRUNCATED_VALUE: usize = 64 * 1024;

/// A record ready to send, kept until acknowledged so it can be re-sent.
pub struct Outgoing {
    /// Index into the outbox's output topics, or [`DEAD_LETTER`].
    pub target: usize,
    /// Position of the input record it was made from, within the batch.
    pub origin: Option<usize>,
    /// Partition to write to; `None`: by key (murmur2).
    pub partition: Option<i32>,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value; `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
    /// Record headers.
    pub headers: OwnedHeaders,
}

/// What became of handing a record to the producer.
pub enum Queued {
    /// Queued; the future resolves with the broker's answer.
    Sent(DeliveryFuture),
    /// Not queued for a reason that may pass (the client is failing).
    NotYet(String),
    /// Can never be sent as it is (larger than the broker allows).
    Refused(String),
}

/// A record handed to the producer (or not, if it could not even be queued).
pub type Pending = (Outgoing, Queued);

/// An output the broker will never take, e.g. because it is too large.
pub struct Undeliverable {
    /// The record.
    pub record: Outgoing,
    /// Why.
    pub error: String,
}

/// A wait was interrupted by shutdown.
#[derive(Debug)]
pub struct Interrupted;

/// The output topics and dead-letter topic of one loop.
pub struct Outbox<'s> {
    service: &'s Service,
    producer: crate::kafka::Producer,
    outputs: Vec<(String, TopicMetrics)>,
    dead_letter: String,
    dlq_metrics: TopicMetrics,
}

impl<'s> Outbox<'s> {
    /// Name of the stage this outbox sends for.
    pub fn stage(&self) -> &str {
        self.service.name()
    }

    /// An outbox sending to `outputs` (by index) and `dead_letter`.
    pub fn new(service: &'s Service, outputs: Vec<String>, dead_letter: String) -> Self {
        Self::with_producer(service, service.producer.clone(), outputs, dead_letter)
    }

    /// An outbox sending through `producer` instead of the service's own.
    pub fn with_producer(
        service: &'s Service,
        producer: crate::kafka::Producer,
        outputs: Vec<String>,
        dead_letter: String,
    ) -> Self {
        Outbox {
            producer,
            outputs: outputs
                .into_iter()
                .map(|t| {
                    let m = service.metrics.topic(&t);
                    (t, m)
                })
                .collect(),
            dlq_metrics: service.metrics.topic(&dead_letter),
            dead_letter,
            service,
        }
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter
    }

    /// A dead letter for `msg`: its original key, value and headers plus
    /// the `gale.dlq.*` headers. `headers` replaces the original headers when
    /// given (the pipeline passes them with this hop's `traceparent`).
    #[allow(clippy::too_many_arguments)]
    pub fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        origin: Option<usize>,
        input_metrics: &TopicMetrics,
        class: &'static str,
        message: &str,
        attempts: u32,
        headers: Option<OwnedHeaders>,
    ) -> Outgoing {
        if tracing::enabled!(tracing::Level::DEBUG) {
            // The trace the dead letter carries on: this hop's, else the record's.
            let trace = headers
                .as_ref()
                .and_then(|h| {
                    h.iter()
                        .find(|x| x.key == crate::telemetry::TRACEPARENT)
                        .and_then(|x| x.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(crate::telemetry::TraceParent::parse)
                })
                .or_else(|| crate::telemetry::TraceParent::of_headers(msg.headers()));
            tracing::debug!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                class,
                error = message,
                trace_id = trace.map(|t| t.trace_id_hex()).unwrap_or_default(),
                span_id = trace.map(|t| t.span_id_hex()).unwrap_or_default(),
                "dead-lettering record"
            );
        }
        input_metrics.dead_lettered(class);
        let origin_info = dlq::Origin {
            topic: msg.topic(),
            partition: Some(msg.partition()),
            offset: Some(msg.offset()),
            timestamp_ms: msg.timestamp().to_millis(),
        };
        let failure = dlq::Failure {
            stage: self.service.name(),
            class,
            message,
            attempts,
        };
        let headers = match headers {
            Some(h) => dlq::append(h, &origin_info, &failure),
            None => dlq::headers(msg.headers(), &origin_info, &failure),
        };
        Outgoing {
            target: DEAD_LETTER,
            origin,
            partition: None,
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The topic of output `target` (or the dead-letter topic).
    pub fn topic_name(&self, target: usize) -> &str {
        if target == DEAD_LETTER {
            &self.dead_letter
        } else {
            &self.outputs[target].0
        }
    }

    /// Queues `record` with the producer.
    pub async fn send(&self, record: Outgoing) -> Pending {
        let topic = self.topic_name(record.target);
        match self
            .producer
            .send_to(
                topic,
                record.partition,
                record.key.as_deref(),
                record.payload.as_deref(),
                record.headers.clone(),
            )
            .await
        {
            Ok(future) => (record, Queued::Sent(future)),
            Err(SendError::Permanent(e)) => (record, Queued::Refused(e.to_string())),
            Err(SendError::Transient(e)) => {
                tracing::warn!(topic, error = %e, "could not queue record; will retry");
                (record, Queued::NotYet(e.to_string()))
            }
        }
    }

    /// Waits until every record is acknowledged, re-sending failures with
    /// outage back-off (the consumer kept alive by `keepalive`). Returns the
    /// outputs the broker will never take; their inputs must be dead-lettered.
    /// A dead letter the broker will never take stops the service: going on
    /// would lose it.
    pub async fn await_acks(
        &self,
        pending: Vec<Pending>,
        keepalive: &Keepalive<'_>,
    ) -> Vec<Undeliverable> {
        let mut pending = pending;
        let mut backoff = self.outage_backoff();
        let mut undeliverable = Vec::new();
        loop {
            let (records, queued): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
            let results = futures::future::join_all(queued.into_iter().map(|q| async move {
                match q {
                    Queued::Sent(f) => match f.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) if !kafka::is_retriable(&e) => Err((e.to_string(), true)),
                        Ok(Err((e, _))) => Err((e.to_string(), false)),
                        Err(_) => Err(("producer dropped the delivery".to_string(), false)),
                    },
                    Queued::NotYet(e) => Err((e, false)),
                    Queued::Refused(e) => Err((e, true)),
                }
            }))
            .await;
            let mut failed = Vec::new();
            let mut acked: HashMap<usize, u64> = HashMap::new();
            let mut last_error = String::new();
            for (record, result) in records.into_iter().zip(results) {
                match result {
                    Ok(()) => *acked.entry(record.target).or_default() += 1,
                    Err((error, true)) if record.target == DEAD_LETTER => {
                        failed.push(self.shrink_dead_letter(record, &error));
                        last_error = error;
                    }
                    Err((error, true)) => undeliverable.push(Undeliverable { record, error }),
                    Err((error, false)) => {
                        last_error = error;
                        failed.push(record);
                    }
                }
            }
            for (target, n) in acked {
                if target == DEAD_LETTER {
                    self.dlq_metrics.produced(n);
                } else {
                    self.outputs[target].1.produced(n);
                }
            }
            if failed.is_empty() {
                if backoff.attempts() > 0 {
                    self.service.health.ok("delivery");
                    self.outage_over();
                }
                return undeliverable;
            }
            let wait = backoff.next_delay();
            self.service.health.fail(
                "delivery",
                format!("{} records not acknowledged: {last_error}", failed.len()),
            );
            self.service.metrics.set_paused(true);
            self.service.metrics.outage_retry();
            tracing::warn!(records = failed.len(), wait = ?wait, error = %last_error, "delivery failed; re-sending");
            // Keep trying through shutdown: the watchdog bounds how long.
            keepalive.wait(wait, None).await;
            pending = Vec::with_capacity(failed.len());
            for record in failed {
                pending.push(self.send(record).await);
            }
        }
    }

    /// A dead letter the broker refused for its size, made smaller step by
    /// step so that it can always be stored: first the error message is
    /// shortened; then the value is cut to its first [`TRUNCATED_VALUE`]
    /// bytes with headers saying so (the original is still at the topic,
    /// partition and offset the headers name); then the record's own
    /// headers are dropped, keeping Gale's. Only a dead letter refused even
    /// then (a broker limit below a few kilobytes) stops the service:
    /// going on would lose it.
    fn shrink_dead_letter(&self, mut record: Outgoing, error: &str) -> Outgoing {
        let find = |r: &Outgoing, key: &str| {
            r.headers
                .iter()
                .find(|h| h.key == key)
                .and_then(|h| h.value.map(<[u8]>::len))
        };
        let message_long = find(&record, dlq::ERROR_MESSAGE).is_some_and(|n| n > SHORT_MESSAGE);
        let truncated = find(&record, dlq::PAYLOAD_TRUNCATED).is_some();
        let foreign = record.headers.iter().any(|h| {
            !h.key.starts_with("gale.dlq.") && h.key != "traceparent" && h.key != "tracestate"
        });
        let mut headers = OwnedHeaders::new();
        if message_long {
            for h in record.headers.iter() {
                let value = if h.key == dlq::ERROR_MESSAGE {
                    h.value.map(|v| &v[..v.len().min(SHORT_MESSAGE)])
                } else {
                    h.value
                };
                headers = headers.insert(rdkafka::message::Header { key: h.key, value });
            }
        } else if !truncated {
            let size = record.payload.as_ref().map_or(0, Vec::len);
            if let Some(p) = record.payload.as_mut() {
                p.truncate(TRUNCATED_VALUE);
            }
            for h in record.headers.iter() {
                headers = headers.insert(rdkafka::message::Header {
                    key: h.key,
                    value: h.value,
                });
            }
            let size = size.to_string();
            headers = headers
                .insert(rdkafka::message::Header {
                    key: dlq::PAYLOAD_TRUNCATED,
                    value: Some("true".as_bytes()),
                })
                .insert(rdkafka::message::Header {
                    key: dlq::PAYLOAD_SIZE,
                    value: Some(size.as_bytes()),
                });
            tracing::warn!(topic = %self.dead_letter, bytes = size, "dead letter too large for the broker; storing the start of its value (the original stays at its offset)");
        } else if foreign {
            for h in record.headers.iter() {
                if h.key.starts_with("gale.dlq.") || h.key == "traceparent" || h.key == "tracestate"
                {
                    headers = headers.insert(rdkafka::message::Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
        } else {
            let reason = format!(
                "the dead-letter topic {} refuses even a {}-byte dead letter ({error}); raise its max.message.bytes",
                self.dead_letter,
                record.payload.as_ref().map_or(0, Vec::len)
            );
            self.service.health.fail("delivery", reason.clone());
            tracing::error!(error = %reason, "cannot store a dead letter; stopping without storing offsets");
            self.producer.flush(std::time::Duration::from_secs(5));
            std::process::exit(4);
        }
        record.headers = headers;
        record
    }

    /// A fresh back-off for a dependency outage.
    pub fn outage_backoff(&self) -> Backoff {
        let p = &self.service.config.processing;
        Backoff::new(p.outage_backoff_initial, p.outage_backoff_max)
    }

    /// Reports `dependency` down (not ready, paused) and waits the next
    /// back-off step with the consumer kept in its group.
    pub async fn outage_wait(
        &self,
        dependency: &str,
        message: &str,
        backoff: &mut Backoff,
        keepalive: &Keepalive<'_>,
    ) -> Result<(), Interrupted> {
        let wait = backoff.next_delay();
        self.service
            .health
            .fail("paused", format!("{dependency} unavailable: {message}"));
        self.service.metrics.set_paused(true);
        self.service.metrics.outage_retry();
        tracing::warn!(dependency, wait = ?wait, error = message, "dependency unavailable; pausing");
        if keepalive.wait(wait, Some(&self.service.shutdown)).await {
            Ok(())
        } else {
            Err(Interrupted)
        }
    }

    /// The outage is over: ready again.
    pub fn outage_over(&self) {
        self.service.health.ok("paused");
        self.service.metrics.set_paused(false);
    }
}

/// Stores the offsets after `done` (the next offset of each partition).
pub fn store_offsets(consumer: &StreamConsumer<GaleContext>, done: &[BorrowedMessage<'_>]) {
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for m in done {
        let e = next.entry((m.topic(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    store_next_offsets(
        consumer,
        next.into_iter().map(|((t, p), o)| (t.to_string(), p, o)),
    );
}

/// Stores explicit next offsets per partition.
pub fn store_next_offsets(
    consumer: &StreamConsumer<GaleContext>,
    next: impl IntoIterator<Item = (String, i32, i64)>,
) {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in next {
        if let Err(e) = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset)) {
            tracing::warn!(error = %e, "cannot record offset");
        }
    }
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Happens when the partition was revoked meanwhile; its new owner
        // re-reads from the last commit (at-least-once).
        tracing::warn!(error = %e, "storing offsets failed");
    }
}

/// Commits stored offsets synchronously before the loop returns.
pub fn commit_final(consumer: &StreamConsumer<GaleContext>, what: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("offsets committed; {what} stopped"),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
            tracing::info!("nothing to commit; {what} stopped")
        }
        Err(e) => tracing::warn!(error = %e, "final commit failed"),
    }
}

/// What the consuming loop is to do next.
pub enum Next<'c> {
    /// Handle these records (in offset order per partition).
    Batch(Vec<BorrowedMessage<'c>>),
    /// The flush timer fired.
    Tick,
    /// Shutdown was requested.
    Stop,
}

/// Takes records in batches of up to `processing.batch_size`: the first one
/// as it arrives, then whatever else is ready, so a busy topic gives full
/// batches and a quiet one gives small batches without waiting.
pub struct Batches<'c> {
    consumer: &'c StreamConsumer<GaleContext>,
    token: CancellationToken,
    max: usize,
}

impl<'c> Batches<'c> {
    /// Batches from `consumer` for `service`.
    pub fn new(consumer: &'c StreamConsumer<GaleContext>, service: &Service) -> Self {
        Batches {
            consumer,
            token: service.shutdown.clone(),
            max: service.config.processing.batch_size.max(1),
        }
    }

    /// The next batch, or `None` on shutdown.
    pub async fn next(&mut self) -> Option<Vec<BorrowedMessage<'c>>> {
        loop {
            match self.next_or_tick(None).await {
                Next::Batch(b) => return Some(b),
                Next::Tick => continue,
                Next::Stop => return None,
            }
        }
    }

    /// The next batch, a tick of `ticker`, or shutdown.
    pub async fn next_or_tick(
        &mut self,
        mut ticker: Option<&mut tokio::time::Interval>,
    ) -> Next<'c> {
        loop {
            let first = tokio::select! {
                biased;
                _ = self.token.cancelled() => return Next::Stop,
                _ = async {
                    match ticker.as_mut() {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => return Next::Tick,
                m = self.consumer.recv() => m,
            };
            match first {
                Ok(m) => return Next::Batch(self.fill(m)),
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    if !sleep_or_cancel(&self.token, Duration::from_millis(200)).await {
                        return Next::Stop;
                    }
                }
            }
        }
    }

    fn fill(&self, first: BorrowedMessage<'c>) -> Vec<BorrowedMessage<'c>> {
        use futures::FutureExt;
        let mut batch = vec![first];
        while batch.len() < self.max {
            match self.consumer.recv().now_or_never() {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consume error");
                    break;
                }
                None => break,
            }
        }
        batch
    }
}
