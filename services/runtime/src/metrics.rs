//! Prometheus metrics with fixed names and label sets.
//!
//! Dashboards and alerts depend on these names, so they are defined here once
//! and emitted through small typed handles rather than ad-hoc `counter!` calls
//! scattered across services. Every series carries `stage` (the service).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `gale_records_in_total` | counter | stage, topic |
//! | `gale_records_out_total` | counter | stage, topic |
//! | `gale_records_dead_lettered_total` | counter | stage, topic, error_class |
//! | `gale_record_retries_total` | counter | stage, kind (`record` or `outage`) |
//! | `gale_processing_seconds` | histogram of batch processing time (first record taken → last output acknowledged) | stage |
//! | `gale_batch_records` | histogram of records per batch | stage |
//! | `gale_event_latency_seconds` | histogram of now − newest event time, per batch | stage |
//! | `gale_consumer_lag` | gauge | stage, topic, partition |
//! | `gale_paused` | gauge | stage |

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("gale_processing_seconds".into()),
                    &[
                        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5, 5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_latency_seconds".into()),
                        &[
                            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                            900.0, 3600.0,
                        ],
                    )
                })
                .and_then(|b| b.set_buckets(&[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]))
                .expect("bucket lists are non-empty constants");
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // A recorder is already installed (e.g. two services in one test process):
                // keep a detached one so rendering still works.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok();
            handle
        })
        .clone()
}

/// Per-stage metric handles; cheap to clone, no lookups on the hot path.
#[derive(Clone)]
pub struct StageMetrics {
    stage: String,
    processing: Histogram,
    batch_size: Histogram,
    event_latency: Histogram,
    paused: Gauge,
    record_retries: Counter,
    outage_retries: Counter,
}

impl StageMetrics {
    /// Handles for `stage`.
    pub fn new(stage: &str) -> Self {
        let s = stage.to_string();
        StageMetrics {
            processing: histogram!("gale_processing_seconds", "stage" => s.clone()),
            batch_size: histogram!("gale_batch_records", "stage" => s.clone()),
            event_latency: histogram!("gale_event_latency_seconds", "stage" => s.clone()),
            paused: gauge!("gale_paused", "stage" => s.clone()),
            record_retries: counter!("gale_record_retries_total", "stage" => s.clone(), "kind" => "record"),
            outage_retries: counter!("gale_record_retries_total", "stage" => s.clone(), "kind" => "outage"),
            stage: s,
        }
    }

    /// The stage name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// Counters for one topic.
    pub fn topic(&self, topic: &str) -> TopicMetrics {
        TopicMetrics {
            stage: self.stage.clone(),
            topic: topic.to_string(),
            records_in: counter!("gale_records_in_total", "stage" => self.stage.clone(), "topic" => topic.to_string()),
            records_out: counter!("gale_records_out_total", "stage" => self.stage.clone(), "topic" => topic.to_string()),
        }
    }

    /// A batch of `records` took `elapsed`, from taking its first record to
    /// the last acknowledgement.
    pub fn processed(&self, elapsed: Duration, records: usize) {
        self.processing.record(elapsed.as_secs_f64());
        self.batch_size.record(records as f64);
    }

    /// The newest event time of a batch is `age` behind now.
    pub fn event_age(&self, age: Duration) {
        self.event_latency.record(age.as_secs_f64());
    }

    /// Outage state changed.
    pub fn set_paused(&self, paused: bool) {
        self.paused.set(if paused { 1.0 } else { 0.0 });
    }

    /// A failing record is being retried.
    pub fn record_retry(&self) {
        self.record_retries.increment(1);
    }

    /// Work is being retried because a dependency is down.
    pub fn outage_retry(&self) {
        self.outage_retries.increment(1);
    }

    /// Consumer lag of one partition (from librdkafka statistics).
    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        gauge!(
            "gale_consumer_lag",
            "stage" => self.stage.clone(),
            "topic" => topic.to_string(),
            "partition" => partition.to_string()
        )
        .set(lag as f64);
    }
}

/// Counters for one topic of one stage.
#[derive(Clone)]
pub struct TopicMetrics {
    stage: String,
    topic: String,
    records_in: Counter,
    records_out: Counter,
}

impl TopicMetrics {
    /// `n` records consumed from this topic.
    pub fn consumed(&self, n: u64) {
        self.records_in.increment(n);
    }

    /// `n` records produced to this topic and acknowledged.
    pub fn produced(&self, n: u64) {
        self.records_out.increment(n);
    }

    /// A record of this (input) topic went to the dead-letter topic.
    pub fn dead_lettered(&self, error_class: &'static str) {
        counter!(
            "gale_records_dead_lettered_total",
            "stage" => self.stage.clone(),
            "topic" => self.topic.clone(),
            "error_class" => error_class
        )
        .increment(1);
    }
}
