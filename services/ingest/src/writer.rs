//! Writes accepted readings to the raw topic and unusable input to the
//! dead-letter topic, and reports success only once the broker has
//! acknowledged every record.

use std::time::Duration;

use gale_runtime::avro::Encoder;
use gale_runtime::dlq;
use gale_runtime::kafka::{Producer, SendError};
use gale_runtime::metrics::TopicMetrics;
use gale_runtime::schema::RawReading;
use gale_runtime::telemetry::{MessagingTracer, RecordSpan};
use rdkafka::message::OwnedHeaders;

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
    /// and waits for every acknowledgement.
    pub async fn send(
        &self,
        readings: &[RawReading],
        parent: Option<&RecordSpan>,
    ) -> Result<(), NotAcknowledged> {
        let root;
        let parent = match parent {
            Some(p) => p,
            None => {
                root = self.tracer.root();
                &root
            }
        };
        let total = readings.len();
        let mut futures = Vec::with_capacity(total);
        let mut spans = Vec::with_capacity(total);
        let mut first_error: Option<String> = None;
        for reading in readings {
            let cx = self.tracer.send(&self.topic, parent);
            let headers = cx.inject(OwnedHeaders::new(), &self.tracer);
            let payload = match self.encoder.encode(reading) {
                Ok(p) => p,
                Err(e) => {
                    cx.end(Some(&e));
                    first_error.get_or_insert(e);
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
                    futures.push(f);
                    spans.push(cx);
                }
                Err(SendError::Permanent(e)) | Err(SendError::Transient(e)) => {
                    cx.end(Some(&e.to_string()));
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        let results =
            tokio::time::timeout(self.ack_timeout, futures::future::join_all(futures)).await;
        let mut acknowledged = 0;
        match results {
            Ok(results) => {
                for (result, cx) in results.into_iter().zip(spans) {
                    match result {
                        Ok(Ok(_)) => {
                            acknowledged += 1;
                            cx.end(None);
                        }
                        Ok(Err((e, _))) => {
                            cx.end(Some(&e.to_string()));
                            first_error.get_or_insert(e.to_string());
                        }
                        Err(_) => {
                            cx.end(Some("delivery cancelled"));
                            first_error.get_or_insert("delivery cancelled".into());
                        }
                    }
                }
            }
            Err(_) => {
                first_error
                    .get_or_insert(format!("no acknowledgement within {:?}", self.ack_timeout));
            }
        }
        self.raw_metrics.produced(acknowledged as u64);
        match first_error {
            None if acknowledged == total => Ok(()),
            error => Err(NotAcknowledged {
                acknowledged,
                total,
                error: error.unwrap_or_else(|| "not all records acknowledged".into()),
            }),
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
    ) -> Result<(), String> {
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
            .map_err(|e| format!("{e:?}"))?;
        match tokio::time::timeout(self.ack_timeout, future).await {
            Ok(Ok(Ok(_))) => {
                self.dlq_metrics.produced(1);
                Ok(())
            }
            Ok(Ok(Err((e, _)))) => Err(e.to_string()),
            Ok(Err(_)) => Err("delivery cancelled".into()),
            Err(_) => Err(format!("no acknowledgement within {:?}", self.ack_timeout)),
        }
    }
}
