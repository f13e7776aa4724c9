//! Everything a consuming loop sends, and the rule that it is acknowledged
//! before the input's offset moves.
//!
//! The transform loop ([`crate::pipeline`]) sends outputs and dead letters
//! through an [`Outbox`]; the sink loop ([`crate::sink`]) sends dead letters.
//! Both wait for every acknowledgement with [`Outbox::await_acks`], which
//! re-sends failures with capped back-off until the broker takes them: an
//! outage pauses the loop, it never drops a record.

use std::collections::HashMap;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};

use crate::dlq;
use crate::kafka::{GaleContext, SendError};
use crate::metrics::TopicMetrics;
use crate::retry::Backoff;
use crate::service::Service;
use crate::shutdown::sleep_or_cancel;

/// Index of the dead-letter topic among an outbox's targets.
pub const DEAD_LETTER: usize = usize::MAX;

/// A record ready to send, kept until acknowledged so it can be re-sent.
pub struct Outgoing {
    /// Index into the outbox's output topics, or [`DEAD_LETTER`].
    pub target: usize,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub payload: Vec<u8>,
    /// Record headers.
    pub headers: OwnedHeaders,
}

/// A record handed to the producer (or not, if it could not even be queued).
pub type Pending = (Outgoing, Option<DeliveryFuture>);

/// A wait was interrupted by shutdown.
#[derive(Debug)]
pub struct Interrupted;

/// The output topics and dead-letter topic of one loop.
pub struct Outbox<'s> {
    service: &'s Service,
    outputs: Vec<(String, TopicMetrics)>,
    dead_letter: String,
    dlq_metrics: TopicMetrics,
}

impl<'s> Outbox<'s> {
    /// An outbox sending to `outputs` (by index) and `dead_letter`.
    pub fn new(service: &'s Service, outputs: Vec<String>, dead_letter: String) -> Self {
        Outbox {
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
    /// the `gale.dlq.*` headers.
    pub fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        input_metrics: &TopicMetrics,
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
        input_metrics.dead_lettered(class);
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
            target: DEAD_LETTER,
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().unwrap_or(&[]).to_vec(),
            headers,
        }
    }

    fn topic_of(&self, target: usize) -> &str {
        if target == DEAD_LETTER {
            &self.dead_letter
        } else {
            &self.outputs[target].0
        }
    }

    /// Queues `record` with the producer.
    pub async fn send(&self, record: Outgoing) -> Pending {
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
    pub async fn await_acks(&self, pending: Vec<Pending>) {
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
                if target == DEAD_LETTER {
                    self.dlq_metrics.produced(n);
                } else {
                    self.outputs[target].1.produced(n);
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

    /// A fresh back-off for a dependency outage.
    pub fn outage_backoff(&self) -> Backoff {
        let p = &self.service.config.processing;
        Backoff::new(p.outage_backoff_initial, p.outage_backoff_max)
    }

    /// Reports `dependency` down (not ready, paused) and waits the next back-off step.
    pub async fn outage_wait(
        &self,
        dependency: &str,
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

/// Takes `first` and whatever else is ready, up to `max` records.
pub fn fill_batch<'c>(
    consumer: &'c StreamConsumer<GaleContext>,
    first: BorrowedMessage<'c>,
    max: usize,
) -> Vec<BorrowedMessage<'c>> {
    use futures::FutureExt;
    let mut batch = vec![first];
    while batch.len() < max {
        match consumer.recv().now_or_never() {
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
