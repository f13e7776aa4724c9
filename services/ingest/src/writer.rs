//! Writes accepted readings to the raw topic and unusable input to the
//! dead-letter topic, and reports success only once the broker has
//! acknowledged every record. A record the broker will never take as it is
//! (too large) is told apart from one that was not acknowledged this time,
//! so callers report the first with its row and retry only the second.

use std::time::Duration;

use futures::channel::oneshot::Canceled;
use gale_model::RawReading;
use gale_runtime::avro::Encoder;
use gale_runtime::dlq;
use gale_runtime::kafka::{is_retriable, Producer, SendError};
use gale_runtime::metrics::TopicMetrics;
use gale_runtime::telemetry::{MessagingTracer, RecordSpan};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use tokio::time::error::Elapsed;

/// Why a batch was not (completely) acknowledged.
#[derive(Debug, Clone)]
pub struct NotAcknowledged {
    /// Records the broker acknowledged.
    pub acknowledged: usize,
    /// Records in the batch.
    pub total: usize,
    /// The first error seen.
    pub error: String,
}

/// Sends readings and dead letters.
pub struct RawWriter {
    producer: Producer,
    encoder: Encoder,
    topic: String,
    dead_letter_topic: String,
    tracer: MessagingTracer,
    raw_metrics: TopicMetrics,
    dlq_metrics: TopicMetrics,
    /// Bound on waiting for acknowledgements (the producer's own delivery
    /// timeout normally ends the wait first).
    ack_timeout: Duration,
}

impl RawWriter {
    /// A writer to `topic` and `dead_letter_topic`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        producer: Producer,
        encoder: Encoder,
        topic: String,
        dead_letter_topic: String,
        tracer: MessagingTracer,
        raw_metrics: TopicMetrics,
        dlq_metrics: TopicMetrics,
        ack_timeout: Duration,
    ) -> Self {
        RawWriter {
            producer,
            encoder,
            topic,
            dead_letter_topic,
            tracer,
            raw_metrics,
            dlq_metrics,
            ack_timeout,
        }
    }

    /// The raw topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends `readings` (each a `send` span under `parent`, or a new trace)
    /// and waits for every acknowledgement; `Err` unless all were stored.
    pub async fn send(
        &self,
        readings: &[RawReading],
        parent: Option<&RecordSpan>,
    ) -> Result<(), NotAcknowledged> {
        let deliveries = self.send_each(readings, parent).await;
        let acknowledged = deliveries.iter().filter(|d| d.is_ok()).count();
        match deliveries.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(e) => Err(NotAcknowledged {
                acknowledged,
                total: readings.len(),
                error: e.to_string(),
            }),
        }
    }

    /// Sends `readings` like [`RawWriter::send`] and says what became of
    /// each one, in order: a refused reading will never be stored as it is, a
    /// failed one may be on a later attempt.
    pub async fn send_each(
        &self,
        readings: &[RawReading],
        parent: Option<&RecordSpan>,
    ) -> Vec<Delivery> {
        let root;
        let parent = match parent {
            Some(p) => p,
            None => {
                root = self.tracer.root();
                &root
            }
        };
        let mut out: Vec<Delivery> = Vec::with_capacity(readings.len());
        let mut pending = Vec::with_capacity(readings.len());
        for (i, reading) in readings.iter().enumerate() {
            let cx = self.tracer.send(&self.topic, parent);
            let headers = cx.inject(OwnedHeaders::new(), &self.tracer);
            let payload = match self.encoder.encode(reading) {
                Ok(p) => p,
                Err(e) => {
                    cx.end(Some(&e));
                    out.push(Err(DeliveryError::Refused(format!("cannot encode: {e}"))));
                    continue;
                }
            };
            match self
                .producer
                .send(
                    &self.topic,
                    Some(reading.asset_id.as_bytes()),
                    &payload,
                    headers,
                )
                .await
            {
                Ok(f) => {
                    out.push(Ok(()));
                    pending.push((i, f, cx));
                }
                Err(e) => {
                    let e = DeliveryError::from_send(e);
                    cx.end(Some(&e.to_string()));
                    out.push(Err(e));
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        let acks =
            futures::future::join_all(pending.into_iter().map(|(i, f, cx)| async move {
                (i, tokio::time::timeout_at(deadline, f).await, cx)
            }))
            .await;
        let mut acknowledged = 0;
        for (i, ack, cx) in acks {
            let result = self.ack_result(ack);
            match &result {
                Ok(()) => {
                    acknowledged += 1;
                    cx.end(None);
                }
                Err(e) => cx.end(Some(&e.to_string())),
            }
            out[i] = result;
        }
        self.raw_metrics.produced(acknowledged);
        out
    }

    fn ack_result(&self, ack: Ack) -> Delivery {
        match ack {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((e, _)))) if !is_retriable(&e) => Err(DeliveryError::Refused(format!(
                "refused by the broker: {e}"
            ))),
            Ok(Ok(Err((e, _)))) => Err(DeliveryError::Failed(e.to_string())),
            Ok(Err(_)) => Err(DeliveryError::Failed("delivery cancelled".into())),
            Err(_) => Err(DeliveryError::Failed(format!(
                "no acknowledgement within {:?}",
                self.ack_timeout
            ))),
        }
    }

    /// Dead-letters `payload` (original bytes) that came from `origin`.
    pub async fn dead_letter(
        &self,
        key: &str,
        payload: &[u8],
        origin: &str,
        class: &'static str,
        message: &str,
    ) -> Delivery {
        let headers = dlq::headers(
            None,
            &dlq::Origin {
                topic: origin,
                partition: None,
                offset: None,
                timestamp_ms: None,
            },
            &dlq::Failure {
                stage: "ingest",
                class,
                message,
                attempts: 1,
            },
        );
        let future = self
            .producer
            .send(
                &self.dead_letter_topic,
                Some(key.as_bytes()),
                payload,
                headers,
            )
            .await
            .map_err(DeliveryError::from_send)?;
        let result = self.ack_result(tokio::time::timeout(self.ack_timeout, future).await);
        if result.is_ok() {
            self.dlq_metrics.produced(1);
        }
        result
    }
}

/// An acknowledgement awaited with a timeout.
type Ack = Result<Result<OwnedDeliveryResult, Canceled>, Elapsed>;

/// What became of one record.
pub type Delivery = Result<(), DeliveryError>;

/// Why one record was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// It will never be stored as it is (larger than the broker takes, not
    /// encodable): a problem of the record, reported with it, not retried.
    #[error("{0}")]
    Refused(String),
    /// Not acknowledged this time (broker unreachable, timeout); a later
    /// attempt may succeed.
    #[error("{0}")]
    Failed(String),
}

impl DeliveryError {
    fn from_send(e: SendError) -> Self {
        match e {
            SendError::Permanent(e) => {
                DeliveryError::Refused(format!("refused by the client: {e}"))
            }
            SendError::Transient(e) => DeliveryError::Failed(e.to_string()),
        }
    }

    /// True for a record that will never be stored as it is.
    pub fn is_refused(&self) -> bool {
        matches!(self, DeliveryError::Refused(_))
    }
}
