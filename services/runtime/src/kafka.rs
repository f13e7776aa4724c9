//! Kafka clients configured the Gale way.
//!
//! Consumers never auto-store offsets (`enable.auto.offset.store=false`): the
//! loop stores an offset only after everything the record produced is
//! acknowledged, and librdkafka's periodic auto-commit then commits what was
//! stored. On partition revocation the context commits synchronously, so a
//! rebalance does not replay finished work. Groups use the cooperative-sticky
//! assignor (a rebalance moves only the partitions that change owner, the
//! others keep being processed) and, when `kafka.group_instance_id` is set,
//! static membership. Producers are idempotent with `acks=all` and partition
//! keyed records with murmur2, as the Java client and Kafka Connect do, so a
//! key lands on the same partition whoever produced it. Pass-through
//! properties from config override the tuning defaults, not these.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;

use crate::config::KafkaConfig;
use crate::health::Health;
use crate::metrics::StageMetrics;
use crate::Error;

/// Partitions revoked since a loop last looked, shared with the context.
pub type Revocations = Arc<Mutex<Vec<(String, i32)>>>;

/// Client context: lag metrics from statistics, broker health from errors,
/// synchronous commit on revocation.
pub struct GaleContext {
    metrics: StageMetrics,
    health: Health,
    revocations: Option<Revocations>,
    /// Set while a loop waits with its partitions paused (see
    /// [`crate::keepalive`]): partitions assigned meanwhile start paused too.
    hold: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl GaleContext {
    /// A context reporting to `metrics` and `health`.
    pub fn new(metrics: StageMetrics, health: Health) -> Self {
        GaleContext {
            metrics,
            health,
            revocations: None,
            hold: None,
        }
    }

    /// Pauses partitions assigned while `hold` is set.
    pub fn with_hold(mut self, hold: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.hold = Some(hold);
        self
    }

    /// Also records revoked partitions in `list`, for loops that buffer per partition.
    pub fn with_revocations(mut self, list: Revocations) -> Self {
        self.revocations = Some(list);
        self
    }
}

impl ClientContext for GaleContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics.consumer_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.health
                .fail("broker", format!("all brokers down: {reason}"));
        }
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for GaleContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if let Some(list) = &self.revocations {
                let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
                list.extend(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition())),
                );
            }
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::info!(partitions = tpl.count(), "committed before revocation"),
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(error = %e, "commit before revocation failed"),
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let holding = self
                    .hold
                    .as_ref()
                    .is_some_and(|h| h.load(std::sync::atomic::Ordering::SeqCst));
                if holding {
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::warn!(error = %e, "cannot pause partitions assigned during a wait");
                    }
                }
                let parts: Vec<String> = tpl
                    .elements()
                    .iter()
                    .map(|e| format!("{}[{}]", e.topic(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?parts, "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    self.metrics.clear_consumer_lag(e.topic(), e.partition());
                }
                tracing::info!(partitions = tpl.count(), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

fn base_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        .set("statistics.interval.ms", "5000")
        .set("log.connection.close", "false");
    c
}

fn apply_overrides(c: &mut ClientConfig, config: &KafkaConfig) {
    for (key, value) in config.librdkafka_properties() {
        c.set(key, value);
    }
}

/// The consumer group for `stage`: configured, or `gale-<stage>`.
pub fn group_id(config: &KafkaConfig, stage: &str) -> String {
    config
        .group_id
        .clone()
        .unwrap_or_else(|| format!("gale-{stage}"))
}

/// What a consumer is tuned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetching {
    /// A stage in the chain: each record is fetched as soon as it is there.
    Latency,
    /// A sink: fetches of up to 1 MiB, waiting at most 100 ms for them to
    /// fill, so the broker answers fewer, larger requests. Pass-through
    /// properties override both.
    Throughput,
}

/// A consumer in `group` that stores offsets only when told to.
pub fn consumer(
    config: &KafkaConfig,
    group: &str,
    context: GaleContext,
) -> Result<StreamConsumer<GaleContext>, Error> {
    consumer_for(config, group, context, Fetching::Latency)
}

/// Like [`consumer`], tuned for `fetching`.
pub fn consumer_for(
    config: &KafkaConfig,
    group: &str,
    context: GaleContext,
    fetching: Fetching,
) -> Result<StreamConsumer<GaleContext>, Error> {
    let mut c = base_config(config);
    if fetching == Fetching::Throughput {
        c.set("fetch.min.bytes", "1048576")
            .set("fetch.wait.max.ms", "100");
    }
    c.set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A crashed member's partitions move on after 10 s rather than
        // librdkafka's 45 s; set `group.instance.id` for static membership.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        .set("enable.partition.eof", "false");
    apply_overrides(&mut c, config);
    c.set("partition.assignment.strategy", "cooperative-sticky");
    if let Some(id) = &config.group_instance_id {
        c.set("group.instance.id", id);
    }
    c.create_with_context(context)
        .map_err(|e| Error::kafka("creating consumer", e))
}

/// An idempotent producer with `acks=all`.
pub fn producer(config: &KafkaConfig, context: GaleContext) -> Result<Producer, Error> {
    let mut c = base_config(config);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set(
            "message.timeout.ms",
            config.delivery_timeout.as_millis().to_string(),
        );
    apply_overrides(&mut c, config);
    // Java's partitioner: murmur2 of the key, random for records without one.
    c.set("partitioner", "murmur2_random");
    let inner = c
        .create_with_context(context)
        .map_err(|e| Error::kafka("creating producer", e))?;
    Ok(Producer { inner })
}

/// A producer for state changelogs: like [`producer`], but it sends at once
/// (`linger.ms=0`): the loop waits for these acknowledgements before it
/// stores offsets, and a changelog write is never joined by later records.
pub fn state_producer(config: &KafkaConfig, context: GaleContext) -> Result<Producer, Error> {
    let mut tuned = config.clone();
    tuned
        .properties
        .insert("linger.ms".into(), crate::config::Secret::new("0"));
    producer(&tuned, context)
}

/// Creates `topic` with `partitions` partitions and topic `configs` unless
/// it exists.
pub async fn ensure_topic_with(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), Error> {
    let mut c = base_config(config);
    apply_overrides(&mut c, config);
    let admin: AdminClient<_> = c
        .create()
        .map_err(|e| Error::kafka("creating admin client", e))?;
    let mut new = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(config.replication_factor),
    );
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| Error::kafka(format!("creating topic {topic}"), e))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::kafka(
                    format!("creating topic {topic}"),
                    KafkaError::AdminOp(code),
                ))
            }
        }
    }
    Ok(())
}

/// Creates `topics` if they do not exist.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[&str]) -> Result<(), Error> {
    let mut c = base_config(config);
    apply_overrides(&mut c, config);
    let admin: AdminClient<_> = c
        .create()
        .map_err(|e| Error::kafka("creating admin client", e))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                config.topic_partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| Error::kafka("creating topics", e))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::kafka(
                    format!("creating topic {topic}"),
                    KafkaError::AdminOp(code),
                ))
            }
        }
    }
    Ok(())
}

/// Producer used by every service.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<GaleContext>,
}

/// Why a record could not even be queued.
#[derive(Debug)]
pub enum SendError {
    /// The record can never be sent as it is (e.g. larger than the broker allows).
    Permanent(KafkaError),
    /// The client is failing for now.
    Transient(KafkaError),
}

impl Producer {
    /// Queues one record and returns the future of its acknowledgement. Waits
    /// (without dropping anything) while the local queue is full.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<DeliveryFuture, SendError> {
        self.send_value(topic, key, Some(payload), headers).await
    }

    /// Like [`Producer::send`], for a value that may be absent (a tombstone).
    pub async fn send_value(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<DeliveryFuture, SendError> {
        self.send_to(topic, None, key, payload, headers).await
    }

    /// Like [`Producer::send_value`], to an explicit partition when given.
    pub async fn send_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<DeliveryFuture, SendError> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        loop {
            match self.inner.send_result(record) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) if !is_retriable(&e) => return Err(SendError::Permanent(e)),
                Err((e, _)) => return Err(SendError::Transient(e)),
            }
        }
    }

    /// Checks the broker answers a metadata request within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.inner.flush(timeout) {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
    }

    /// A fatal client error (e.g. an idempotent producer that lost its
    /// sequence), after which the producer must be recreated.
    pub fn fatal_error(&self) -> Option<String> {
        self.inner
            .client()
            .fatal_error()
            .map(|(code, text)| format!("{code:?}: {text}"))
    }

    /// Number of partitions of `topic`, fetched from the broker.
    pub fn partition_count(&self, topic: &str, timeout: Duration) -> Result<usize, KafkaError> {
        let md = self.inner.client().fetch_metadata(Some(topic), timeout)?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0))
    }
}

/// True for errors that a later attempt may not hit (broker down, timeouts);
/// false for a record the broker will never take as it is.
pub fn is_retriable(error: &KafkaError) -> bool {
    !matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// The group's committed offsets of `partitions`, as far as the broker
/// answers within 10 s; partitions without a commit are left out.
pub fn committed_offsets(
    consumer: &StreamConsumer<GaleContext>,
    partitions: &[(String, i32)],
) -> std::collections::HashMap<(String, i32), i64> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    // A blocking request, made only when partitions are assigned.
    let answer = crate::blocking(|| consumer.committed_offsets(tpl, Duration::from_secs(10)));
    match answer {
        Ok(tpl) => tpl
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                _ => None,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read committed offsets; starting from the first record received");
            Default::default()
        }
    }
}
