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
//! | `gale_event_latency_seconds` | histogram of now − event time, per record | stage |
//! | `gale_consumer_lag` | gauge | stage, topic, partition |
//! | `gale_paused` | gauge | stage |

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Bucket bounds (seconds) of the event-latency histogram.
const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Event times of one batch, recorded into the latency histogram together.
///
/// Recording into a shared histogram once per record costs more than the
/// rest of a record's bookkeeping; grouping a batch's ages by bucket first
/// gives the same bucket counts (and a sum exact to the bucket means) with
/// one recording per non-empty bucket.
#[derive(Default)]
pub struct EventAges {
    times_ms: Vec<i64>,
}

impl EventAges {
    /// Adds one record's event time (ms since the epoch).
    pub fn add(&mut self, event_time_ms: i64) {
        self.times_ms.push(event_time_ms);
    }

    /// Empties the batch into (mean age in seconds, count) per non-empty
    /// histogram bucket.
    fn by_bucket(&mut self, now_ms: i64) -> Vec<(f64, usize)> {
        let mut count = [0usize; LATENCY_BUCKETS.len() + 1];
        let mut sum = [0f64; LATENCY_BUCKETS.len() + 1];
        for t in self.times_ms.drain(..) {
            let age = now_ms.saturating_sub(t).max(0) as f64 / 1000.0;
            let b = LATENCY_BUCKETS.partition_point(|bound| *bound < age);
            count[b] += 1;
            sum[b] += age;
        }
        count
            .into_iter()
            .zip(sum)
            .filter(|(n, _)| *n > 0)
            .map(|(n, total)| (total / n as f64, n))
            .collect()
    }
}

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
                        &LATENCY_BUCKETS,
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

    /// Records the ages of `ages` relative to `now_ms` and empties it.
    pub fn event_ages(&self, ages: &mut EventAges, now_ms: i64) {
        for (mean, n) in ages.by_bucket(now_ms) {
            self.event_latency.record_many(mean, n);
        }
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

    /// The partition is no longer this instance's: its lag is someone else's.
    pub fn clear_consumer_lag(&self, topic: &str, partition: i32) {
        self.consumer_lag(topic, partition, 0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ages_keep_bucket_counts_and_sums() {
        let mut ages = EventAges::default();
        let now = 1_000_000;
        // 0.2 s and 0.24 s share the 0.25 bucket; 2 s is in 2.5; a future
        // event counts as age 0; an absurd one lands in +Inf, not a panic.
        for t in [now - 200, now - 240, now - 2_000, now + 5_000, i64::MIN] {
            ages.add(t);
        }
        let buckets = ages.by_bucket(now);
        let total: usize = buckets.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 5);
        assert!(buckets.contains(&(0.22, 2)), "{buckets:?}");
        assert!(buckets.contains(&(2.0, 1)), "{buckets:?}");
        assert!(buckets.contains(&(0.0, 1)), "{buckets:?}");
        assert!(ages.by_bucket(now).is_empty(), "drained");
    }
}
