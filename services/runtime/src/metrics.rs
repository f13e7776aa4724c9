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
//!
//! `/metrics` answers in the Prometheus text format (0.0.4), unchanged for
//! existing scrapers. Asked for OpenMetrics (`Accept:
//! application/openmetrics-text`), it answers the same series in OpenMetrics
//! 1.0 with trace-id exemplars on the buckets of `gale_event_latency_seconds`
//! (see [`render_openmetrics`]), so a slow bucket in Grafana opens a trace of
//! a record that fell into it. The exporter behind the text format has no
//! exemplars, so they are kept here: the latest record of each stage and
//! bucket whose trace was exported (only while spans are exported; at most
//! one per bucket and batch is looked at).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
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
    /// Trace ids of the records, parallel to `times_ms` (0: none) while
    /// spans are exported; empty otherwise.
    traces: Vec<u128>,
}

/// A record's trace id and its value in a histogram bucket, shown next to
/// the bucket in OpenMetrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    /// Trace id (non-zero).
    pub trace_id: u128,
    /// The record's event age (s).
    pub value: f64,
    /// When it was recorded (s since the epoch).
    pub timestamp: f64,
}

/// Per stage, the latest exemplar of each latency bucket (`+Inf` last).
type Exemplars = BTreeMap<String, [Option<Exemplar>; LATENCY_BUCKETS.len() + 1]>;

static EXEMPLARS: Mutex<Exemplars> = Mutex::new(BTreeMap::new());

/// What one batch adds to a histogram: (mean age in seconds, count) per
/// non-empty bucket, and the last traced record of each bucket.
type BucketedAges = (
    Vec<(f64, usize)>,
    [Option<(u128, f64)>; LATENCY_BUCKETS.len() + 1],
);

impl EventAges {
    /// Adds one record's event time (ms since the epoch).
    pub fn add(&mut self, event_time_ms: i64) {
        self.times_ms.push(event_time_ms);
    }

    /// Adds one record's event time with the trace id its span exported
    /// (0 or `None`: none), a candidate exemplar of its bucket.
    pub fn add_traced(&mut self, event_time_ms: i64, trace_id: Option<u128>) {
        if self.traces.len() != self.times_ms.len() {
            // Untraced records came first in this batch: keep them aligned.
            self.traces.resize(self.times_ms.len(), 0);
        }
        self.times_ms.push(event_time_ms);
        self.traces.push(trace_id.unwrap_or(0));
    }

    /// Empties the batch into (mean age in seconds, count) per non-empty
    /// histogram bucket, and per bucket the last traced record's (trace
    /// id, age).
    fn by_bucket(&mut self, now_ms: i64) -> BucketedAges {
        let mut count = [0usize; LATENCY_BUCKETS.len() + 1];
        let mut sum = [0f64; LATENCY_BUCKETS.len() + 1];
        let mut last = [None; LATENCY_BUCKETS.len() + 1];
        let traced = self.traces.len() == self.times_ms.len();
        for (i, t) in self.times_ms.drain(..).enumerate() {
            let age = now_ms.saturating_sub(t).max(0) as f64 / 1000.0;
            let b = LATENCY_BUCKETS.partition_point(|bound| *bound < age);
            count[b] += 1;
            sum[b] += age;
            if traced && self.traces[i] != 0 {
                last[b] = Some((self.traces[i], age));
            }
        }
        self.traces.clear();
        let means = count
            .into_iter()
            .zip(sum)
            .filter(|(n, _)| *n > 0)
            .map(|(n, total)| (total / n as f64, n))
            .collect();
        (means, last)
    }
}

/// The exemplars of `stage`'s latency buckets now (tests and rendering).
pub fn latency_exemplars(stage: &str) -> [Option<Exemplar>; LATENCY_BUCKETS.len() + 1] {
    EXEMPLARS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(stage)
        .copied()
        .unwrap_or_default()
}

/// The bucket index of an `le` label value of the latency histogram.
fn latency_bucket(le: &str) -> Option<usize> {
    if le == "+Inf" {
        return Some(LATENCY_BUCKETS.len());
    }
    let bound: f64 = le.parse().ok()?;
    LATENCY_BUCKETS
        .iter()
        .position(|b| (*b - bound).abs() < 1e-9)
}

/// The value of label `name` in a sample line's label set.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let open = line.find('{')?;
    let close = line.rfind('}')?;
    let labels = line.get(open + 1..close)?;
    let key = format!("{name}=\"");
    let start = labels
        .match_indices(&key)
        .find(|(i, _)| *i == 0 || labels.as_bytes()[i - 1] == b',')?
        .0
        + key.len();
    let rest = &labels[start..];
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(&rest[..i]),
            _ => escaped = false,
        }
    }
    None
}

/// Turns the exporter's Prometheus text into OpenMetrics 1.0: counter
/// families are named without `_total` (their samples keep it; a counter
/// whose name lacks it is declared `unknown`), blank lines go, `# EOF`
/// ends it, and the latency buckets carry their exemplars.
pub fn render_openmetrics(prometheus_text: &str) -> String {
    let exemplars = EXEMPLARS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut out = String::with_capacity(prometheus_text.len() + 1024);
    for line in prometheus_text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.splitn(2, ' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if kind.trim() == "counter" {
                match name.strip_suffix("_total") {
                    Some(family) => out.push_str(&format!("# TYPE {family} counter\n")),
                    None => out.push_str(&format!("# TYPE {name} unknown\n")),
                }
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let mut parts = rest.splitn(2, ' ');
            let (name, help) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let family = name.strip_suffix("_total").unwrap_or(name);
            out.push_str(&format!("# HELP {family} {help}\n"));
            continue;
        }
        out.push_str(line);
        if line.starts_with("gale_event_latency_seconds_bucket{") {
            let found = label(line, "stage")
                .zip(label(line, "le").and_then(latency_bucket))
                .and_then(|(stage, b)| exemplars.get(stage).and_then(|e| e[b]));
            if let Some(e) = found {
                out.push_str(&format!(
                    " # {{trace_id=\"{:032x}\"}} {} {:.3}",
                    e.trace_id, e.value, e.timestamp
                ));
            }
        }
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
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
        let (means, last) = ages.by_bucket(now_ms);
        for (mean, n) in means {
            self.event_latency.record_many(mean, n);
        }
        if last.iter().any(Option::is_some) {
            let mut all = EXEMPLARS.lock().unwrap_or_else(|p| p.into_inner());
            let kept = all.entry(self.stage.clone()).or_default();
            for (slot, new) in kept.iter_mut().zip(last) {
                if let Some((trace_id, value)) = new {
                    *slot = Some(Exemplar {
                        trace_id,
                        value,
                        timestamp: now_ms as f64 / 1000.0,
                    });
                }
            }
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
        let (buckets, last) = ages.by_bucket(now);
        assert!(last.iter().all(Option::is_none), "no traces, no exemplars");
        let total: usize = buckets.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 5);
        assert!(buckets.contains(&(0.22, 2)), "{buckets:?}");
        assert!(buckets.contains(&(2.0, 1)), "{buckets:?}");
        assert!(buckets.contains(&(0.0, 1)), "{buckets:?}");
        assert!(ages.by_bucket(now).0.is_empty(), "drained");
    }

    #[test]
    fn traced_ages_leave_the_last_trace_of_each_bucket() {
        let mut ages = EventAges::default();
        let now = 1_000_000;
        ages.add(now - 200); // untraced, before the traced ones
        ages.add_traced(now - 210, Some(0xa));
        ages.add_traced(now - 220, Some(0xb));
        ages.add_traced(now - 2_000, None);
        let (_, last) = ages.by_bucket(now);
        assert_eq!(
            last[3],
            Some((0xb, 0.22)),
            "0.25 bucket: the last traced record"
        );
        assert_eq!(last[6], None, "2.5 bucket: its record had no trace");
    }

    #[test]
    fn openmetrics_renames_counters_ends_with_eof_and_shows_exemplars() {
        let stage = "exemplar-test";
        let metrics = StageMetrics::new(stage);
        let mut ages = EventAges::default();
        let now = 1_700_000_000_000;
        ages.add_traced(now - 400, Some(0x4bf92f3577b34da6a3ce929d0e0e4736));
        metrics.event_ages(&mut ages, now);
        assert_eq!(latency_exemplars(stage)[4].map(|e| e.value), Some(0.4));
        let text = format!(
            "# TYPE gale_records_in_total counter\n\
             gale_records_in_total{{stage=\"{stage}\",topic=\"t\"}} 3\n\
             \n\
             # TYPE odd counter\n\
             odd 1\n\
             # TYPE gale_event_latency_seconds histogram\n\
             gale_event_latency_seconds_bucket{{stage=\"{stage}\",le=\"0.25\"}} 0\n\
             gale_event_latency_seconds_bucket{{stage=\"{stage}\",le=\"0.5\"}} 1\n\
             gale_event_latency_seconds_bucket{{stage=\"other\",le=\"0.5\"}} 1\n\
             gale_event_latency_seconds_sum{{stage=\"{stage}\"}} 0.4\n"
        );
        let om = render_openmetrics(&text);
        let lines: Vec<&str> = om.lines().collect();
        assert_eq!(lines[0], "# TYPE gale_records_in counter");
        assert!(lines.contains(&"# TYPE odd unknown"), "{om}");
        assert!(!om.contains("\n\n"), "{om}");
        assert_eq!(lines.last(), Some(&"# EOF"));
        assert!(
            om.contains(&format!(
                "gale_event_latency_seconds_bucket{{stage=\"{stage}\",le=\"0.5\"}} 1 # {{trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"}} 0.4 1700000000.000\n"
            )),
            "{om}"
        );
        assert!(
            om.contains(&format!(
                "gale_event_latency_seconds_bucket{{stage=\"{stage}\",le=\"0.25\"}} 0\n"
            )),
            "no exemplar where none was recorded: {om}"
        );
        assert!(om.contains("{stage=\"other\",le=\"0.5\"} 1\n"), "{om}");
    }
}
