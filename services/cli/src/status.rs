//! What state the pipeline is in, collected once for `gale status` and for
//! the browser status page (`gale status-page`).
//!
//! An operator asking "is Gale healthy?" needs one answer drawn from every
//! place that knows part of it: each stage's `/readyz` and `/metrics`, the
//! broker (records, consumer lag, dead letters with their headers), Postgres
//! (active faults, the newest data stored) and the lake (the newest
//! partition written). Each of those is a [`Section`] that is either there
//! or says why not, so a database that is down or a lake that was not given
//! never hides the rest. Collection ([`Collector`]) is kept apart from
//! rendering ([`render_text`] here, the HTML page in `status_page`), and
//! the arithmetic (metrics text, rates, reason ranking, lake paths) is in
//! plain functions with unit tests.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use futures::TryStreamExt;
use gale_runtime::config::Secret;
use gale_runtime::storage::Location;
use object_store::ObjectStoreExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::inspect::{self, TopicStatus};

/// Why part of the status could not be collected, or a bad option.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// A `--service` / `GALE_STATUS_SERVICES` entry is not `NAME=URL`.
    #[error("service {0:?} is not NAME=URL (e.g. validate=http://127.0.0.1:9101)")]
    ServiceSpec(String),
    /// The broker could not be asked.
    #[error("{0}")]
    Kafka(String),
    /// Postgres could not be asked (the URL's password is never in the text).
    #[error("{0}")]
    Database(String),
    /// The lake could not be listed.
    #[error("{0}")]
    Lake(String),
}

/// A service to watch: its name and the base URL where `/readyz` and
/// `/metrics` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceTarget {
    /// Stage name, e.g. `validate` or `rollup-site`.
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:9100`.
    pub url: String,
}

/// Parses `NAME=URL` (a URL without a scheme gets `http://`).
pub fn parse_service(spec: &str) -> Result<ServiceTarget, StatusError> {
    let (name, url) = spec
        .split_once('=')
        .map(|(n, u)| (n.trim(), u.trim()))
        .filter(|(n, u)| !n.is_empty() && !u.is_empty())
        .ok_or_else(|| StatusError::ServiceSpec(spec.to_string()))?;
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    Ok(ServiceTarget {
        name: name.to_string(),
        url: url.trim_end_matches('/').to_string(),
    })
}

/// Parses a comma-separated list of `NAME=URL` (`GALE_STATUS_SERVICES`).
pub fn parse_services(list: &str) -> Result<Vec<ServiceTarget>, StatusError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_service)
        .collect()
}

/// The lake to look at.
#[derive(Debug, Clone)]
pub struct LakeTarget {
    /// A directory or `s3://bucket/prefix`.
    pub url: String,
    /// S3 options (`aws_endpoint=...`), as `gale lake` takes them.
    pub options: Vec<(String, String)>,
}

/// Where to collect the status from.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// Schema registry URL (checked for reachability).
    pub registry_url: String,
    /// Topics whose names start with this are reported; dead-letter topics
    /// are `<prefix>dlq.<stage>`.
    pub prefix: String,
    /// Consumer groups whose lag is reported.
    pub groups: Vec<String>,
    /// Services whose readiness and metrics are read.
    pub services: Vec<ServiceTarget>,
    /// Postgres of pg-sink, for faults and freshness.
    pub database_url: Option<Secret>,
    /// The archive's lake, for its freshness.
    pub lake: Option<LakeTarget>,
    /// At most this many dead letters are read per dead-letter topic (the
    /// newest ones), so a topic of millions costs no more than a sample.
    pub dead_letter_sample: usize,
    /// How long a service may take to answer `/readyz` or `/metrics`.
    pub probe_timeout: Duration,
}

/// A part of the status: there, or why not.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Section<T> {
    /// Collected.
    Ok {
        /// What was collected.
        data: T,
    },
    /// Not asked for (no database URL, no lake given).
    NotConfigured {
        /// What to give to get it.
        reason: String,
    },
    /// Asked for, but the source did not answer.
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl<T> Section<T> {
    fn from_result(r: Result<T, StatusError>) -> Self {
        match r {
            Ok(data) => Section::Ok { data },
            Err(e) => Section::Unavailable {
                reason: e.to_string(),
            },
        }
    }

    /// The data, when collected.
    pub fn data(&self) -> Option<&T> {
        match self {
            Section::Ok { data } => Some(data),
            _ => None,
        }
    }
}

/// Readiness of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    /// `/readyz` answered 200.
    Ready,
    /// `/readyz` answered, but not 200 (a dependency is down, paused...).
    NotReady,
    /// Nothing answered at its URL.
    Unreachable,
}

impl StageState {
    /// Upper-case word for the text report.
    pub fn word(self) -> &'static str {
        match self {
            StageState::Ready => "ready",
            StageState::NotReady => "NOT READY",
            StageState::Unreachable => "UNREACHABLE",
        }
    }
}

/// One stage: readiness, throughput and lag from its own endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    /// Stage name as given.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Readiness.
    pub state: StageState,
    /// Why it is not ready: the failing checks (`check: reason`), or the
    /// connection error.
    pub problems: Vec<String>,
    /// Records taken per second since the previous scrape (`gale_records_in_total`).
    pub in_per_second: Option<f64>,
    /// Records produced per second since the previous scrape (`gale_records_out_total`).
    pub out_per_second: Option<f64>,
    /// Records taken since the service started.
    pub records_in: Option<f64>,
    /// Records dead-lettered since the service started.
    pub dead_lettered: Option<f64>,
    /// Consumer lag the service reports (`gale_consumer_lag`, summed over
    /// its partitions); `None` for services that consume nothing (ingest).
    pub lag: Option<f64>,
}

/// A consumer group's total lag over the reported topics.
#[derive(Debug, Clone, Serialize)]
pub struct GroupLag {
    /// Group id.
    pub group: String,
    /// Records not yet committed, over all its topics.
    pub lag: i64,
    /// The topics it has offsets on.
    pub topics: Vec<String>,
}

/// Topics and consumer groups, from the broker.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaStatus {
    /// Each topic with its records and lag per group.
    pub topics: Vec<TopicRow>,
    /// Lag per group.
    pub groups: Vec<GroupLag>,
}

/// [`TopicStatus`] in serialisable form.
#[derive(Debug, Clone, Serialize)]
pub struct TopicRow {
    /// Topic.
    pub topic: String,
    /// Partitions.
    pub partitions: usize,
    /// Records held.
    pub records: i64,
    /// Lag per group.
    pub lag: BTreeMap<String, i64>,
}

/// Dead letters of one error class at one stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// `gale.dlq.error.class`.
    pub class: String,
    /// Dead letters of this class among those read.
    pub count: usize,
    /// The most frequent message of the class (messages often name the
    /// record, so the class is what is counted).
    pub message: String,
    /// The newest `gale.dlq.time` of the class.
    pub last_time: Option<String>,
}

/// One dead-letter topic.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterStage {
    /// The stage that dead-lettered (header `gale.dlq.stage`, else the topic's suffix).
    pub stage: String,
    /// The topic.
    pub topic: String,
    /// Records held on the topic.
    pub total: i64,
    /// How many of the newest were read for the reasons.
    pub sampled: usize,
    /// Reasons, most frequent first.
    pub reasons: Vec<Reason>,
}

/// A dead letter's headers, as far as the status uses them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadLetterHeaders {
    /// `gale.dlq.stage`.
    pub stage: Option<String>,
    /// `gale.dlq.error.class`.
    pub class: Option<String>,
    /// `gale.dlq.error.message`.
    pub message: Option<String>,
    /// `gale.dlq.time`.
    pub time: Option<String>,
}

/// Open faults, from pg-sink's `faults` table.
#[derive(Debug, Clone, Serialize)]
pub struct FaultSummary {
    /// Faults not closed.
    pub open: i64,
    /// Open faults per severity.
    pub by_severity: BTreeMap<String, i64>,
    /// The newest open faults (at most ten).
    pub newest: Vec<OpenFault>,
}

/// One open fault.
#[derive(Debug, Clone, Serialize)]
pub struct OpenFault {
    /// Fault id.
    pub fault_id: String,
    /// Asset.
    pub asset_id: String,
    /// Fault code.
    pub code: String,
    /// Severity.
    pub severity: String,
    /// Status (OPEN, ACTIVE...).
    pub status: String,
    /// When it opened.
    pub opened_time: DateTime<Utc>,
}

/// The newest data in one Postgres table.
#[derive(Debug, Clone, Serialize)]
pub struct TableFreshness {
    /// Table (what an operator queries).
    pub table: String,
    /// The time column read.
    pub column: String,
    /// The latest value not in the future; `None` when the table is empty.
    pub latest: Option<DateTime<Utc>>,
    /// Seconds from `latest` to now.
    pub age_seconds: Option<i64>,
    /// Why the table could not be read (missing: pg-sink never migrated it).
    pub error: Option<String>,
}

/// The newest data in one lake table.
#[derive(Debug, Clone, Serialize)]
pub struct LakeFreshness {
    /// Table path, e.g. `silver/validated_readings`.
    pub table: String,
    /// Live and replaced Parquet files listed.
    pub files: usize,
    /// The newest Hive partition not in the future, e.g. `date=2024-03-15/hour=14`.
    pub latest_partition: Option<String>,
    /// The latest event time in that partition (from the manifests).
    pub latest_event_time: Option<DateTime<Utc>>,
    /// Seconds from `latest_event_time` to now.
    pub age_seconds: Option<i64>,
    /// When a file of the table was last written.
    pub last_written: Option<DateTime<Utc>>,
}

/// The schema registry's answer.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryStatus {
    /// Subjects registered.
    pub subjects: usize,
}

/// Everything `gale status` and the status page show.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// When the collection finished.
    pub generated_at: DateTime<Utc>,
    /// How long it took, in milliseconds.
    pub collect_ms: u64,
    /// Seconds between the two metric scrapes the rates come from.
    pub rate_window_seconds: Option<f64>,
    /// Each watched service, in the order given.
    pub stages: Vec<StageStatus>,
    /// Topics and consumer lag.
    pub kafka: Section<KafkaStatus>,
    /// The schema registry.
    pub registry: Section<RegistryStatus>,
    /// Dead letters per stage with their reasons.
    pub dead_letters: Section<Vec<DeadLetterStage>>,
    /// Open faults.
    pub faults: Section<FaultSummary>,
    /// Newest data per Postgres table.
    pub postgres: Section<Vec<TableFreshness>>,
    /// Newest data per lake table.
    pub lake: Section<Vec<LakeFreshness>>,
}

// ---------------------------------------------------------------- options

/// Where `gale status` and `gale status-page` collect from.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "GALE_KAFKA_BOOTSTRAP",
        hide_env_values = true,
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// Schema registry URL.
    #[arg(
        long,
        env = "GALE_REGISTRY_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8081"
    )]
    pub registry_url: String,
    /// Only topics starting with this; dead letters are read from `<prefix>dlq.*`.
    #[arg(long, default_value = "gale.")]
    pub prefix: String,
    /// Consumer groups to report lag for.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gale-validate,gale-enrich,gale-detect-faults,gale-aggregate,gale-rollup-site,gale-rollup-fleet,gale-pg-sink,gale-archive"
    )]
    pub groups: Vec<String>,
    /// A service to watch, NAME=BASE_URL where its /readyz and /metrics
    /// answer (repeatable), e.g. validate=http://127.0.0.1:9100.
    #[arg(long = "service", value_name = "NAME=URL")]
    pub service: Vec<String>,
    /// More services, comma-separated NAME=URL pairs (added to --service).
    #[arg(
        long = "services",
        env = "GALE_STATUS_SERVICES",
        hide_env_values = true,
        value_name = "NAME=URL,..."
    )]
    pub services: Option<String>,
    /// pg-sink's database, for active faults and freshness (its password is
    /// never printed, `--help` included).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The archive's lake, for its freshness: a directory or s3://bucket/prefix.
    #[arg(long, env = "GALE_LAKE", hide_env_values = true)]
    pub lake: Option<String>,
    /// S3 options of the lake as key=value (aws_endpoint=http://..., aws_allow_http=true).
    #[arg(long = "lake-option", value_name = "KEY=VALUE")]
    pub lake_option: Vec<String>,
    /// Read at most this many of the newest dead letters per dead-letter topic.
    #[arg(long, default_value_t = 1000)]
    pub dead_letter_sample: usize,
    /// How long a service may take to answer /readyz or /metrics.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
}

impl SourceArgs {
    /// The collection settings these options name.
    pub fn config(&self) -> anyhow::Result<StatusConfig> {
        let mut services = self
            .service
            .iter()
            .map(|s| parse_service(s))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(list) = &self.services {
            services.extend(parse_services(list)?);
        }
        let options = self
            .lake_option
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("--lake-option {kv:?} is not key=value"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(StatusConfig {
            bootstrap: self.bootstrap.clone(),
            registry_url: self.registry_url.clone(),
            prefix: self.prefix.clone(),
            groups: self.groups.clone(),
            services,
            database_url: self
                .database_url
                .as_ref()
                .filter(|u| !u.is_empty())
                .map(|u| Secret::new(u.clone())),
            lake: self
                .lake
                .as_ref()
                .filter(|l| !l.is_empty())
                .map(|url| LakeTarget {
                    url: url.clone(),
                    options,
                }),
            dead_letter_sample: self.dead_letter_sample,
            probe_timeout: self.probe_timeout,
        })
    }
}

/// `gale status` options.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Where to collect from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Only the topic table (records and lag per topic), as quick as before.
    #[arg(long)]
    pub brief: bool,
    /// Print the whole report as JSON (what the status page's /api/status serves).
    #[arg(long, conflicts_with = "brief")]
    pub json: bool,
    /// Time between the two /metrics scrapes the rates come from.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub rate_window: Duration,
}

/// Runs `gale status` and returns what to print.
pub async fn run(args: StatusArgs) -> anyhow::Result<String> {
    let config = args.source.config()?;
    if args.brief {
        let rows = tokio::task::spawn_blocking(move || {
            inspect::status(&config.bootstrap, &config.prefix, &config.groups)
        })
        .await??;
        return Ok(inspect::render_topics(&rows));
    }
    let mut collector = Collector::new(config);
    if !collector.config().services.is_empty() {
        collector.prime().await;
        tokio::time::sleep(args.rate_window).await;
    }
    let report = collector.collect().await;
    if args.json {
        Ok(serde_json::to_string_pretty(&report)? + "\n")
    } else {
        Ok(render_text(&report))
    }
}

// ---------------------------------------------------------------- metrics

/// One sample of a Prometheus / OpenMetrics text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// The samples of a `/metrics` text (Prometheus 0.0.4 or OpenMetrics:
/// comments, timestamps and exemplars are skipped; a malformed line is
/// ignored rather than failing the whole scrape).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    end = Some(i + 1);
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next().map(|(_, q)| q) != Some('"') {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
        rest = &body[end?..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The sum of every series of `name` (`None` when the service exports none).
pub fn metric_sum(samples: &[Sample], name: &str) -> Option<f64> {
    let mut found = false;
    let total = samples
        .iter()
        .filter(|s| s.name == name)
        .inspect(|_| found = true)
        .map(|s| s.value)
        .filter(|v| v.is_finite())
        .sum();
    found.then_some(total)
}

/// Per-second rate of a counter between two readings `seconds` apart. A
/// counter that went down was reset (the service restarted): as Prometheus
/// does, its new value is taken as the increase.
pub fn counter_rate(previous: f64, current: f64, seconds: f64) -> Option<f64> {
    if seconds.is_nan() || seconds <= 0.0 || !previous.is_finite() || !current.is_finite() {
        return None;
    }
    let increase = if current >= previous {
        current - previous
    } else {
        current
    };
    Some(increase / seconds)
}

// ----------------------------------------------------------- dead letters

/// Groups dead letters by error class, most frequent first (ties: the one
/// seen last first, then by name), each with its most frequent message.
pub fn rank_reasons(letters: &[DeadLetterHeaders]) -> Vec<Reason> {
    struct Acc {
        count: usize,
        messages: HashMap<String, usize>,
        last_time: Option<String>,
    }
    let mut by_class: BTreeMap<String, Acc> = BTreeMap::new();
    for l in letters {
        let class = l
            .class
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "unknown".to_string());
        let acc = by_class.entry(class).or_insert_with(|| Acc {
            count: 0,
            messages: HashMap::new(),
            last_time: None,
        });
        acc.count += 1;
        *acc.messages
            .entry(l.message.clone().unwrap_or_default())
            .or_default() += 1;
        // RFC 3339 UTC times of one format compare as text.
        if l.time > acc.last_time {
            acc.last_time.clone_from(&l.time);
        }
    }
    let mut out: Vec<Reason> = by_class
        .into_iter()
        .map(|(class, acc)| {
            let message = acc
                .messages
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
                .map(|(m, _)| m)
                .unwrap_or_default();
            Reason {
                class,
                count: acc.count,
                message,
                last_time: acc.last_time,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| b.last_time.cmp(&a.last_time))
            .then_with(|| a.class.cmp(&b.class))
    });
    out
}

/// Where to start reading each partition so that at most `budget` of the
/// newest records are read in all, shared evenly over the partitions that
/// hold records.
pub fn sample_starts(ends: &BTreeMap<i32, (i64, i64)>, budget: usize) -> BTreeMap<i32, i64> {
    let busy = ends.values().filter(|(low, end)| end > low).count().max(1);
    let per = (budget / busy).max(1) as i64;
    ends.iter()
        .filter(|(_, (low, end))| end > low)
        .map(|(p, (low, end))| (*p, (*end - per).max(*low)))
        .collect()
}

// ------------------------------------------------------------------ lake

/// Where a lake object sits: its table, the Hive partition of event time
/// (`date=…/hour=…` or `year=…/month=…`, without other partition fields)
/// and its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeObject {
    /// Table path, e.g. `gold/asset_aggregates/grain=1h`.
    pub table: String,
    /// Time partition, e.g. `date=2024-03-15/hour=14`.
    pub partition: String,
    /// Directory relative to the lake, for finding its manifests.
    pub dir: String,
    /// Parquet data file (else a manifest).
    pub data: bool,
}

/// Classifies a path relative to the lake; `None` for checkpoints, staging
/// files and anything that is not a data file or manifest in a partition.
pub fn lake_object(path: &str) -> Option<LakeObject> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (file, dirs) = parts.split_last()?;
    let first_time = dirs
        .iter()
        .position(|d| d.starts_with("date=") || d.starts_with("year="))?;
    if first_time == 0 || dirs.iter().any(|d| d.starts_with('_')) {
        return None;
    }
    let data = file.ends_with(".parquet") && !file.starts_with('_');
    let manifest = file.starts_with("_part-") && file.ends_with(".json");
    if !data && !manifest {
        return None;
    }
    let time: Vec<&str> = dirs[first_time..]
        .iter()
        .copied()
        .filter(|d| {
            ["date=", "hour=", "year=", "month="]
                .iter()
                .any(|k| d.starts_with(k))
        })
        .collect();
    Some(LakeObject {
        table: dirs[..first_time].join("/"),
        partition: time.join("/"),
        dir: dirs.join("/"),
        data,
    })
}

/// When a time partition starts (`date=2024-03-15/hour=14`, `date=…`,
/// `year=2024/month=03`).
pub fn partition_start(partition: &str) -> Option<DateTime<Utc>> {
    let mut date = None;
    let mut hour = 0;
    let (mut year, mut month) = (None, None);
    for part in partition.split('/') {
        let (key, value) = part.split_once('=')?;
        match key {
            "date" => date = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok(),
            "hour" => hour = value.parse().ok().filter(|h| *h < 24)?,
            "year" => year = value.parse::<i32>().ok(),
            "month" => month = value.parse::<u32>().ok(),
            _ => {}
        }
    }
    let date = match (date, year, month) {
        (Some(d), _, _) => d,
        (None, Some(y), Some(m)) => NaiveDate::from_ymd_opt(y, m, 1)?,
        (None, Some(y), None) => NaiveDate::from_ymd_opt(y, 1, 1)?,
        _ => return None,
    };
    Utc.from_local_datetime(&date.and_hms_opt(hour, 0, 0)?)
        .single()
}

// ------------------------------------------------------------- collection

/// One scrape of a service's `/metrics`.
#[derive(Debug, Clone)]
struct Scrape {
    at: Instant,
    records_in: Option<f64>,
    records_out: Option<f64>,
}

/// A stage's readiness and, when `/metrics` answered, its samples and scrape.
type Probe = (StageStatus, Option<(Vec<Sample>, Scrape)>);

/// Collects [`StatusReport`]s, remembering the previous metric scrape of
/// each service so rates come from two scrapes.
pub struct Collector {
    config: StatusConfig,
    http: reqwest::Client,
    previous: HashMap<String, Scrape>,
    pool: Option<Result<sqlx::PgPool, String>>,
    lake: Option<Result<Location, String>>,
}

impl Collector {
    /// A collector for `config`; connects to nothing yet.
    pub fn new(config: StatusConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.probe_timeout)
            .connect_timeout(config.probe_timeout)
            .build()
            .unwrap_or_default();
        let pool = config.database_url.as_ref().map(|url| {
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(3))
                .connect_lazy(url.expose())
                .map_err(|e| gale_pg_sink::db::redact(&e.to_string(), url))
        });
        let lake = config.lake.as_ref().map(|l| {
            // Opening a directory creates it; looking must not.
            let dir = l.url.strip_prefix("file://").unwrap_or(&l.url);
            if !dir.contains("://") && !std::path::Path::new(dir).is_dir() {
                return Err(format!("no lake directory at {dir}"));
            }
            gale_runtime::storage::open(
                &gale_runtime::storage::StoreConfig {
                    url: l.url.clone(),
                    options: l
                        .options
                        .iter()
                        .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                        .collect(),
                    slow_writes: None,
                },
                "--lake",
            )
            .map_err(|e| e.to_string())
        });
        Collector {
            config,
            http,
            previous: HashMap::new(),
            pool,
            lake,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StatusConfig {
        &self.config
    }

    /// Scrapes every service's metrics once, so the next [`collect`]
    /// has rates.
    ///
    /// [`collect`]: Collector::collect
    pub async fn prime(&mut self) {
        let scrapes = futures::future::join_all(
            self.config
                .services
                .iter()
                .map(|s| scrape(&self.http, &s.url)),
        )
        .await;
        for (s, scrape) in self.config.services.iter().zip(scrapes) {
            if let Ok((_, scrape)) = scrape {
                self.previous.insert(s.name.clone(), scrape);
            }
        }
    }

    /// Collects every section; each one fails on its own.
    pub async fn collect(&mut self) -> StatusReport {
        let started = Instant::now();
        let kafka_config = self.config.clone();
        let kafka = tokio::task::spawn_blocking(move || match kafka_status(&kafka_config) {
            Ok((topics, ends)) => (Ok(topics), dead_letters(&kafka_config, &ends)),
            Err(e) => {
                let again = StatusError::Kafka(e.to_string());
                (Err(e), Err(again))
            }
        });
        let (probes, registry, faults, postgres, lake) = tokio::join!(
            self.probes(),
            self.registry(),
            self.faults(),
            self.postgres(),
            self.lake()
        );
        let (stages, rate_window) = self.stages(probes);
        let (topics, letters) = match kafka.await {
            Ok(pair) => pair,
            Err(e) => (
                Err(StatusError::Kafka(format!("broker query failed: {e}"))),
                Err(StatusError::Kafka(format!("broker query failed: {e}"))),
            ),
        };
        StatusReport {
            generated_at: Utc::now(),
            collect_ms: started.elapsed().as_millis() as u64,
            rate_window_seconds: rate_window,
            stages,
            kafka: Section::from_result(topics),
            registry,
            dead_letters: Section::from_result(letters),
            faults,
            postgres,
            lake,
        }
    }

    async fn probes(&self) -> Vec<Probe> {
        futures::future::join_all(
            self.config
                .services
                .iter()
                .map(|s| probe(&self.http, s.clone())),
        )
        .await
    }

    /// Fills in rates, lag and dead letters from the scrapes, and keeps the
    /// scrapes for the next rates.
    fn stages(&mut self, probes: Vec<Probe>) -> (Vec<StageStatus>, Option<f64>) {
        let mut window = None;
        let mut out = Vec::new();
        for (mut stage, scrape) in probes {
            if let Some((samples, now)) = scrape {
                if let Some(before) = self.previous.get(&stage.name) {
                    let seconds = now.at.duration_since(before.at).as_secs_f64();
                    let rate = |a: Option<f64>, b: Option<f64>| counter_rate(a?, b?, seconds);
                    stage.in_per_second = rate(before.records_in, now.records_in);
                    stage.out_per_second = rate(before.records_out, now.records_out);
                    window = Some(seconds);
                }
                stage.records_in = now.records_in;
                stage.dead_lettered = metric_sum(&samples, "gale_records_dead_lettered_total");
                stage.lag = metric_sum(&samples, "gale_consumer_lag");
                self.previous.insert(stage.name.clone(), now);
            }
            out.push(stage);
        }
        (out, window)
    }

    async fn registry(&self) -> Section<RegistryStatus> {
        let url = format!(
            "{}/subjects",
            self.config.registry_url.trim_end_matches('/')
        );
        let display = gale_runtime::config::RegistryConfig {
            url: self.config.registry_url.clone(),
            ..Default::default()
        }
        .display_url();
        let answer = async {
            let r = self.http.get(&url).send().await?.error_for_status()?;
            r.json::<Vec<String>>().await
        }
        .await;
        match answer {
            Ok(subjects) => Section::Ok {
                data: RegistryStatus {
                    subjects: subjects.len(),
                },
            },
            Err(e) => Section::Unavailable {
                reason: format!(
                    "schema registry at {display} does not answer: {}",
                    connection_problem(&e.without_url())
                ),
            },
        }
    }

    fn pool(&self) -> Result<&sqlx::PgPool, Section<()>> {
        match &self.pool {
            None => Err(Section::NotConfigured {
                reason: "no database: give --database-url or DATABASE_URL".into(),
            }),
            Some(Err(e)) => Err(Section::Unavailable { reason: e.clone() }),
            Some(Ok(pool)) => Ok(pool),
        }
    }

    fn redact(&self, e: &dyn std::fmt::Display) -> StatusError {
        let text = e.to_string();
        StatusError::Database(match &self.config.database_url {
            Some(url) => gale_pg_sink::db::redact(&text, url),
            None => text,
        })
    }

    async fn faults(&self) -> Section<FaultSummary> {
        let pool = match self.pool() {
            Ok(p) => p,
            Err(s) => return retype(s),
        };
        let query = async {
            let rows: Vec<(String, String, String, String, String, DateTime<Utc>)> =
                sqlx::query_as(
                    "SELECT fault_id, asset_id, code, severity, status, opened_time \
                     FROM faults WHERE status <> 'CLOSED' ORDER BY opened_time DESC",
                )
                .fetch_all(pool)
                .await?;
            Ok::<_, sqlx::Error>(rows)
        };
        let rows = match tokio::time::timeout(Duration::from_secs(10), query).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                return Section::from_result(Err(self.redact(&missing_table_hint(&e))));
            }
            Err(_) => {
                return Section::Unavailable {
                    reason: "Postgres did not answer within 10 s".into(),
                }
            }
        };
        let mut by_severity = BTreeMap::new();
        for r in &rows {
            *by_severity.entry(r.3.clone()).or_insert(0) += 1;
        }
        Section::Ok {
            data: FaultSummary {
                open: rows.len() as i64,
                by_severity,
                newest: rows
                    .into_iter()
                    .take(10)
                    .map(
                        |(fault_id, asset_id, code, severity, status, opened_time)| OpenFault {
                            fault_id,
                            asset_id,
                            code,
                            severity,
                            status,
                            opened_time,
                        },
                    )
                    .collect(),
            },
        }
    }

    async fn postgres(&self) -> Section<Vec<TableFreshness>> {
        let pool = match self.pool() {
            Ok(p) => p,
            Err(s) => return retype(s),
        };
        // Connect once first: a server that is down is one message, not one per table.
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), pool.acquire())
            .await
            .map_err(|_| "Postgres did not answer within 5 s".to_string())
            .and_then(|r| r.map(drop).map_err(|e| missing_table_hint(&e)))
        {
            return Section::from_result(Err(self.redact(&format!("cannot reach Postgres: {e}"))));
        }
        let now = Utc::now();
        let mut out = Vec::new();
        for (table, source, column) in FRESHNESS_TABLES {
            // Readings from the future (bad clocks) are quarantined, not fresh.
            let sql = format!(
                "SELECT max({column}) FROM {source} WHERE {column} <= now() + interval '5 minutes'"
            );
            let answer = tokio::time::timeout(
                Duration::from_secs(10),
                sqlx::query_as::<_, (Option<DateTime<Utc>>,)>(&sql).fetch_one(pool),
            )
            .await;
            let (latest, error) = match answer {
                Ok(Ok((latest,))) => (latest, None),
                Ok(Err(e)) => (None, Some(self.redact(&missing_table_hint(&e)).to_string())),
                Err(_) => (None, Some("no answer within 10 s".to_string())),
            };
            out.push(TableFreshness {
                table: table.to_string(),
                column: column.to_string(),
                age_seconds: latest.map(|t| (now - t).num_seconds()),
                latest,
                error,
            });
        }
        Section::Ok { data: out }
    }

    async fn lake(&self) -> Section<Vec<LakeFreshness>> {
        let location = match &self.lake {
            None => {
                return Section::NotConfigured {
                    reason: "no lake: give --lake or GALE_LAKE".into(),
                }
            }
            Some(Err(e)) => return Section::Unavailable { reason: e.clone() },
            Some(Ok(l)) => l,
        };
        match tokio::time::timeout(Duration::from_secs(20), lake_freshness(location)).await {
            Ok(r) => Section::from_result(r),
            Err(_) => Section::Unavailable {
                reason: format!("listing the lake at {} took over 20 s", location.url),
            },
        }
    }
}

fn retype<T>(s: Section<()>) -> Section<T> {
    match s {
        // Only the errors of `pool()` are retyped; an `Ok` never comes here.
        Section::Ok { .. } => Section::Unavailable {
            reason: "no data".into(),
        },
        Section::NotConfigured { reason } => Section::NotConfigured { reason },
        Section::Unavailable { reason } => Section::Unavailable { reason },
    }
}

fn missing_table_hint(e: &sqlx::Error) -> String {
    if matches!(e, sqlx::Error::PoolTimedOut) {
        return "no connection to Postgres within 3 s (is it running? check --database-url)".into();
    }
    let text = e.to_string();
    if text.contains("does not exist") {
        format!("{text} (pg-sink creates it; or run `gale db migrate`)")
    } else {
        text
    }
}

/// (shown name, table read, time column) of the tables whose newest data
/// says how fresh Postgres is. `latest_readings` holds each asset's newest
/// reading, so its maximum is the readings table's without scanning it.
const FRESHNESS_TABLES: [(&str, &str, &str); 9] = [
    ("raw_readings", "raw_readings", "event_time"),
    ("readings", "latest_readings", "event_time"),
    ("quarantined_readings", "quarantined_readings", "event_time"),
    ("faults", "faults", "updated_time"),
    ("agg_asset_10m", "agg_asset_10m", "window_start"),
    ("agg_asset_1h", "agg_asset_1h", "window_start"),
    ("agg_asset_1d", "agg_asset_1d", "window_start"),
    ("agg_site_1h", "agg_site_1h", "window_start"),
    ("agg_fleet_1h", "agg_fleet_1h", "window_start"),
];

/// GETs `/readyz` and `/metrics` of one service.
async fn probe(http: &reqwest::Client, target: ServiceTarget) -> Probe {
    let mut stage = StageStatus {
        name: target.name.clone(),
        url: target.url.clone(),
        state: StageState::Unreachable,
        problems: Vec::new(),
        in_per_second: None,
        out_per_second: None,
        records_in: None,
        dead_lettered: None,
        lag: None,
    };
    let (ready, scraped) = tokio::join!(
        http.get(format!("{}/readyz", target.url)).send(),
        scrape(http, &target.url)
    );
    match ready {
        Ok(r) if r.status().is_success() => stage.state = StageState::Ready,
        Ok(r) => {
            stage.state = StageState::NotReady;
            let code = r.status();
            let body: Option<serde_json::Value> = r.json().await.ok();
            let failing: Vec<String> = body
                .as_ref()
                .and_then(|b| b.get("checks"))
                .and_then(|c| c.as_object())
                .map(|checks| {
                    checks
                        .iter()
                        .filter(|(_, v)| v.as_str() != Some("ok"))
                        .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("failing")))
                        .collect()
                })
                .unwrap_or_default();
            stage.problems = if failing.is_empty() {
                vec![format!("/readyz answered {code}")]
            } else {
                failing
            };
        }
        Err(e) => stage.problems = vec![connection_problem(&e)],
    }
    (stage, scraped.ok())
}

fn connection_problem(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "nothing answers (connection refused)".into()
    } else {
        e.to_string()
    }
}

async fn scrape(http: &reqwest::Client, base: &str) -> Result<(Vec<Sample>, Scrape), String> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| connection_problem(&e))?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let samples = parse_metrics(&text);
    let scrape = Scrape {
        at: Instant::now(),
        records_in: metric_sum(&samples, "gale_records_in_total"),
        records_out: metric_sum(&samples, "gale_records_out_total"),
    };
    Ok((samples, scrape))
}

fn kafka_status(config: &StatusConfig) -> Result<(KafkaStatus, inspect::EndOffsets), StatusError> {
    let (topics, ends) =
        inspect::status_with_ends(&config.bootstrap, &config.prefix, &config.groups)
            .map_err(|e| StatusError::Kafka(e.to_string()))?;
    let mut groups: BTreeMap<String, GroupLag> = BTreeMap::new();
    for t in &topics {
        for (g, lag) in &t.lag {
            let entry = groups.entry(g.clone()).or_insert_with(|| GroupLag {
                group: g.clone(),
                lag: 0,
                topics: Vec::new(),
            });
            entry.lag += lag;
            entry.topics.push(t.topic.clone());
        }
    }
    Ok((
        KafkaStatus {
            topics: topics
                .into_iter()
                .map(|t| TopicRow {
                    topic: t.topic,
                    partitions: t.partitions,
                    records: t.records,
                    lag: t.lag,
                })
                .collect(),
            groups: groups.into_values().collect(),
        },
        ends,
    ))
}

/// Reads up to `dead_letter_sample` of the newest records of each
/// `<prefix>dlq.*` topic and ranks their reasons.
fn dead_letters(
    config: &StatusConfig,
    all_ends: &inspect::EndOffsets,
) -> Result<Vec<DeadLetterStage>, StatusError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap)
        .set("group.id", "gale-cli-status-dlq")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| StatusError::Kafka(e.to_string()))?;
    // The dead-letter topics are among the topics just counted (they share
    // the prefix), so their end offsets are known already.
    let dlq_prefix = format!("{}dlq.", config.prefix);
    let ends: inspect::EndOffsets = all_ends
        .iter()
        .filter(|((t, _), _)| t.starts_with(&dlq_prefix))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let mut topics: Vec<String> = ends.keys().map(|(t, _)| t.clone()).collect();
    topics.dedup();
    let mut starts = BTreeMap::new();
    for topic in &topics {
        let of_topic: BTreeMap<i32, (i64, i64)> = ends
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, p), v)| (*p, *v))
            .collect();
        for (p, start) in sample_starts(&of_topic, config.dead_letter_sample) {
            starts.insert((topic.clone(), p), start);
        }
    }
    let mut letters = read_headers(&consumer, &starts, &ends)?;
    Ok(topics
        .into_iter()
        .map(|topic| {
            let total = ends
                .iter()
                .filter(|((t, _), _)| *t == topic)
                .map(|(_, (low, end))| end - low)
                .sum();
            let letters = letters.remove(&topic).unwrap_or_default();
            let stage = letters
                .iter()
                .find_map(|l| l.stage.clone())
                .unwrap_or_else(|| topic[dlq_prefix.len()..].to_string());
            DeadLetterStage {
                stage,
                topic,
                total,
                sampled: letters.len(),
                reasons: rank_reasons(&letters),
            }
        })
        .collect())
}

/// The dead-letter headers of the records from `starts` to the end of each
/// partition (`ends`), per topic; reading stops after 5 s whatever is left.
fn read_headers(
    consumer: &BaseConsumer,
    starts: &BTreeMap<(String, i32), i64>,
    ends: &BTreeMap<(String, i32), (i64, i64)>,
) -> Result<BTreeMap<String, Vec<DeadLetterHeaders>>, StatusError> {
    let kafka = |e: rdkafka::error::KafkaError| StatusError::Kafka(e.to_string());
    let mut out: BTreeMap<String, Vec<DeadLetterHeaders>> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    // Partitions still to read, with their end offset.
    let mut open: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for ((topic, p), start) in starts {
        let end = ends.get(&(topic.clone(), *p)).map_or(0, |(_, end)| *end);
        if *start < end {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*start))
                .map_err(kafka)?;
            open.insert((topic.clone(), *p), end);
        }
    }
    if open.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(kafka)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !open.is_empty() && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = match m {
            Ok(m) => m,
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => continue,
            Err(e) => return Err(kafka(e)),
        };
        let key = (m.topic().to_string(), m.partition());
        match open.get(&key) {
            Some(end) if m.offset() + 1 >= *end => {
                open.remove(&key);
            }
            Some(_) => {}
            None => continue, // past the end read when the collection began
        }
        let header = |key: &str| {
            m.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == key)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        out.entry(key.0).or_default().push(DeadLetterHeaders {
            stage: header(gale_runtime::dlq::STAGE),
            class: header(gale_runtime::dlq::ERROR_CLASS),
            message: header(gale_runtime::dlq::ERROR_MESSAGE),
            time: header(gale_runtime::dlq::TIME),
        });
    }
    consumer.unassign().map_err(kafka)?;
    Ok(out)
}

/// Lists the lake once and reports, per table, its newest time partition
/// (not in the future) with the latest event time its manifests record.
async fn lake_freshness(location: &Location) -> Result<Vec<LakeFreshness>, StatusError> {
    let objects: Vec<object_store::ObjectMeta> = location
        .store
        .list(Some(&location.prefix))
        .try_collect()
        .await
        .map_err(|e| StatusError::Lake(format!("cannot list the lake at {}: {e}", location.url)))?;
    struct Table {
        files: usize,
        last_written: Option<DateTime<Utc>>,
        partitions: BTreeMap<String, Vec<(String, object_store::path::Path)>>,
    }
    let now = Utc::now();
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for o in &objects {
        let Some(obj) = lake_object(&location.relative(&o.location)) else {
            continue;
        };
        let t = tables.entry(obj.table.clone()).or_insert(Table {
            files: 0,
            last_written: None,
            partitions: BTreeMap::new(),
        });
        if obj.data {
            t.files += 1;
            t.last_written = t.last_written.max(Some(o.last_modified));
        } else if partition_start(&obj.partition).is_some_and(|s| s <= now) {
            t.partitions
                .entry(obj.partition.clone())
                .or_default()
                .push((obj.dir.clone(), o.location.clone()));
        }
    }
    let mut out = Vec::new();
    for (table, t) in tables {
        let latest = t.partitions.iter().next_back();
        let mut latest_event: Option<DateTime<Utc>> = None;
        if let Some((_, manifests)) = latest {
            // The manifests of the newest partition (bounded: compaction
            // leaves one per partition, a busy hour has a few dozen).
            for (_, path) in manifests.iter().rev().take(50) {
                let Ok(got) = location.store.get(path).await else {
                    continue; // compacted away meanwhile
                };
                let Ok(bytes) = got.bytes().await else {
                    continue;
                };
                let Ok(m) = serde_json::from_slice::<gale_archive::layout::Manifest>(&bytes) else {
                    continue;
                };
                if let Ok(t) = DateTime::parse_from_rfc3339(&m.max_event_time) {
                    latest_event = latest_event.max(Some(t.with_timezone(&Utc)));
                }
            }
        }
        out.push(LakeFreshness {
            table,
            files: t.files,
            latest_partition: latest.map(|(p, _)| p.clone()),
            age_seconds: latest_event.map(|t| (now - t).num_seconds()),
            latest_event_time: latest_event,
            last_written: t.last_written,
        });
    }
    Ok(out)
}

// -------------------------------------------------------------- rendering

fn age(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    let text = if s < 120 {
        format!("{s}s")
    } else if s < 2 * 3600 {
        format!("{}m", s / 60)
    } else if s < 2 * 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    };
    if seconds < 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn rate(r: Option<f64>) -> String {
    r.map_or("-".to_string(), |r| format!("{r:.1}/s"))
}

fn section_note<T>(title: &str, s: &Section<T>, out: &mut String) -> bool {
    match s {
        Section::Ok { .. } => false,
        Section::NotConfigured { reason } => {
            let _ = writeln!(out, "{title}: not shown ({reason})");
            true
        }
        Section::Unavailable { reason } => {
            let _ = writeln!(out, "{title}: UNAVAILABLE: {reason}");
            true
        }
    }
}

/// The report as text: the topic table first (as `gale status` always
/// printed it, so scripts reading it keep working), then the sections.
/// Rows of the later sections never start with a topic name.
pub fn render_text(r: &StatusReport) -> String {
    let mut out = String::new();
    if !section_note("topics", &r.kafka, &mut out) {
        if let Some(k) = r.kafka.data() {
            out.push_str(&inspect::render_topics(
                &k.topics
                    .iter()
                    .map(|t| TopicStatus {
                        topic: t.topic.clone(),
                        partitions: t.partitions,
                        records: t.records,
                        lag: t.lag.clone(),
                    })
                    .collect::<Vec<_>>(),
            ));
        }
    }

    out.push('\n');
    if r.stages.is_empty() {
        out.push_str(
            "stages: not shown (give --service NAME=URL or GALE_STATUS_SERVICES=name=url,...)\n",
        );
    } else {
        let window = r
            .rate_window_seconds
            .map_or(String::new(), |w| format!(", rates over {w:.1} s"));
        let _ = writeln!(out, "stages (readiness{window}):");
        let _ = writeln!(
            out,
            "  {:<14} {:<11} {:>10} {:>10} {:>8} {:>6}  problems",
            "stage", "state", "in", "out", "lag", "dead"
        );
        for s in &r.stages {
            let _ = writeln!(
                out,
                "  {:<14} {:<11} {:>10} {:>10} {:>8} {:>6}  {}",
                s.name,
                s.state.word(),
                rate(s.in_per_second),
                rate(s.out_per_second),
                s.lag.map_or("-".into(), |l| format!("{l:.0}")),
                s.dead_lettered.map_or("-".into(), |l| format!("{l:.0}")),
                s.problems.join("; ")
            );
        }
    }

    if let Some(k) = r.kafka.data() {
        if !k.groups.is_empty() {
            out.push_str("consumer lag per group:\n");
            for g in &k.groups {
                let _ = writeln!(out, "  group {:<28} {:>10}", g.group, g.lag);
            }
        }
    }

    out.push('\n');
    if !section_note("dead letters", &r.dead_letters, &mut out) {
        let stages = r.dead_letters.data().map(Vec::as_slice).unwrap_or_default();
        if stages.iter().all(|d| d.total == 0) {
            out.push_str("dead letters: none\n");
        } else {
            out.push_str("dead letters (per stage; reasons from the newest read):\n");
            for d in stages.iter().filter(|d| d.total > 0) {
                let top = d.reasons.first();
                let _ = writeln!(
                    out,
                    "  stage {:<14} {:>8}  top reason: {}",
                    d.stage,
                    d.total,
                    top.map_or("-".to_string(), |t| format!(
                        "{} ({} of {} read): {}",
                        t.class, t.count, d.sampled, t.message
                    ))
                );
                for other in d.reasons.iter().skip(1).take(4) {
                    let _ = writeln!(
                        out,
                        "  {:<20} {:>8}  also:       {}: {}",
                        "", other.count, other.class, other.message
                    );
                }
            }
        }
    }

    if !section_note("faults", &r.faults, &mut out) {
        if let Some(f) = r.faults.data() {
            let sev: Vec<String> = f
                .by_severity
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            let _ = writeln!(
                out,
                "active faults: {}{}",
                f.open,
                if sev.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", sev.join(", "))
                }
            );
            for x in f.newest.iter().take(5) {
                let _ = writeln!(
                    out,
                    "  fault {} {} {} {} since {}",
                    x.asset_id,
                    x.code,
                    x.severity,
                    x.status,
                    x.opened_time.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
    }

    out.push('\n');
    if !section_note("freshness of Postgres", &r.postgres, &mut out) {
        out.push_str("freshness of Postgres (latest time stored):\n");
        for t in r.postgres.data().map(Vec::as_slice).unwrap_or_default() {
            let what = match (&t.latest, &t.error) {
                (_, Some(e)) => format!("unreadable: {e}"),
                (None, None) => "empty".into(),
                (Some(l), None) => format!(
                    "{} ({})",
                    l.format("%Y-%m-%d %H:%M:%S UTC"),
                    age(t.age_seconds.unwrap_or(0))
                ),
            };
            let _ = writeln!(out, "  postgres {:<22} {what}", t.table);
        }
    }
    if !section_note("freshness of the lake", &r.lake, &mut out) {
        let tables = r.lake.data().map(Vec::as_slice).unwrap_or_default();
        if tables.is_empty() {
            out.push_str("freshness of the lake: no tables written yet\n");
        } else {
            out.push_str("freshness of the lake (newest partition, latest event time):\n");
        }
        for t in tables {
            let _ = writeln!(
                out,
                "  lake {:<34} {:>5} files  {:<24} {}",
                t.table,
                t.files,
                t.latest_partition.as_deref().unwrap_or("-"),
                match (&t.latest_event_time, t.age_seconds) {
                    (Some(e), Some(a)) =>
                        format!("{} ({})", e.format("%Y-%m-%d %H:%M:%S UTC"), age(a)),
                    _ => "-".into(),
                }
            );
        }
    }
    match &r.registry {
        Section::Ok { data } => {
            let _ = writeln!(out, "schema registry: {} subjects", data.subjects);
        }
        other => {
            section_note("schema registry", other, &mut out);
        }
    }
    let _ = writeln!(
        out,
        "collected at {} in {} ms",
        r.generated_at.format("%Y-%m-%d %H:%M:%S UTC"),
        r.collect_ms
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_is_parsed_with_labels_timestamps_and_exemplars() {
        let text = "# HELP gale_records_in_total records\n\
            # TYPE gale_records_in_total counter\n\
            gale_records_in_total{stage=\"validate\",topic=\"gale.raw\"} 120\n\
            gale_records_in_total{stage=\"validate\",topic=\"odd \\\"q\\\", x\"} 30 1700000000000\n\
            gale_consumer_lag{stage=\"validate\",topic=\"gale.raw\",partition=\"0\"} 7\n\
            gale_event_latency_seconds_bucket{stage=\"v\",le=\"+Inf\"} 5 # {trace_id=\"abc\"} 0.3 1700000000.1\n\
            gale_paused 0\n\
            garbage{unterminated=\"x\n\
            # EOF\n";
        let s = parse_metrics(text);
        assert_eq!(s.len(), 5, "{s:?}");
        assert_eq!(s[1].labels["topic"], "odd \"q\", x");
        assert_eq!(s[1].value, 30.0);
        assert_eq!(s[3].labels["le"], "+Inf");
        assert_eq!(s[3].value, 5.0);
        assert_eq!(metric_sum(&s, "gale_records_in_total"), Some(150.0));
        assert_eq!(metric_sum(&s, "gale_consumer_lag"), Some(7.0));
        assert_eq!(metric_sum(&s, "gale_records_out_total"), None);
    }

    #[test]
    fn rates_handle_resets_and_empty_windows() {
        assert_eq!(counter_rate(100.0, 150.0, 2.0), Some(25.0));
        assert_eq!(counter_rate(100.0, 100.0, 1.0), Some(0.0));
        // Restarted: the counter began again from zero.
        assert_eq!(counter_rate(100.0, 20.0, 2.0), Some(10.0));
        assert_eq!(counter_rate(1.0, 2.0, 0.0), None);
        assert_eq!(counter_rate(1.0, f64::NAN, 1.0), None);
    }

    fn letter(class: Option<&str>, message: &str, time: &str) -> DeadLetterHeaders {
        DeadLetterHeaders {
            stage: Some("validate".into()),
            class: class.map(str::to_string),
            message: Some(message.into()),
            time: Some(time.into()),
        }
    }

    #[test]
    fn reasons_are_ranked_by_count_then_recency() {
        let letters = [
            letter(
                Some("physical_limit"),
                "power 9e9 kW",
                "2024-03-15T10:00:00.000Z",
            ),
            letter(
                Some("unknown_asset"),
                "unknown asset MTR-9",
                "2024-03-15T10:00:01.000Z",
            ),
            letter(
                Some("unknown_asset"),
                "unknown asset MTR-8",
                "2024-03-15T10:00:03.000Z",
            ),
            letter(
                Some("unknown_asset"),
                "unknown asset MTR-9",
                "2024-03-15T10:00:02.000Z",
            ),
            letter(
                Some("deserialization"),
                "bad bytes",
                "2024-03-15T11:00:00.000Z",
            ),
            letter(None, "no headers", "2024-03-15T09:00:00.000Z"),
        ];
        let r = rank_reasons(&letters);
        assert_eq!(r[0].class, "unknown_asset");
        assert_eq!(r[0].count, 3);
        assert_eq!(r[0].message, "unknown asset MTR-9");
        assert_eq!(r[0].last_time.as_deref(), Some("2024-03-15T10:00:03.000Z"));
        // One each: the newest first.
        let rest: Vec<&str> = r[1..].iter().map(|x| x.class.as_str()).collect();
        assert_eq!(rest, ["deserialization", "physical_limit", "unknown"]);
        assert!(rank_reasons(&[]).is_empty());
    }

    #[test]
    fn samples_take_the_newest_records_of_each_partition() {
        let ends = BTreeMap::from([(0, (0, 1000)), (1, (990, 1000)), (2, (5, 5))]);
        let starts = sample_starts(&ends, 100);
        assert_eq!(starts, BTreeMap::from([(0, 950), (1, 990)]));
        assert_eq!(sample_starts(&ends, 0)[&0], 999);
    }

    #[test]
    fn services_are_name_equals_url() {
        let s = parse_services(" ingest=http://h:9100/, validate=127.0.0.1:9101 ,").unwrap();
        assert_eq!(s[0].name, "ingest");
        assert_eq!(s[0].url, "http://h:9100");
        assert_eq!(s[1].url, "http://127.0.0.1:9101");
        assert!(parse_service("validate").is_err());
        assert!(parse_service("=http://x").is_err());
        assert!(parse_services("").unwrap().is_empty());
    }

    #[test]
    fn lake_paths_name_table_and_time_partition() {
        let o = lake_object(
            "gold/asset_aggregates/grain=1h/date=2024-03-15/hour=14/asset_kind=METER/part-t-0-1-9.parquet",
        )
        .unwrap();
        assert_eq!(o.table, "gold/asset_aggregates/grain=1h");
        assert_eq!(o.partition, "date=2024-03-15/hour=14");
        assert!(o.data);
        let m =
            lake_object("silver/validated_readings/date=2024-03-15/_part-t-0-1-9.json").unwrap();
        assert!(!m.data);
        assert_eq!(m.dir, "silver/validated_readings/date=2024-03-15");
        assert!(lake_object("silver/validated_readings/_gale_checkpoints/t-0.json").is_none());
        assert!(lake_object("date=2024-03-15/part.parquet").is_none());
        assert!(lake_object("bronze/raw/date=2024-03-15/part.parquet#3").is_none());

        let at = |s: &str| partition_start(s).map(|t| t.to_rfc3339());
        assert_eq!(
            at("date=2024-03-15/hour=14").as_deref(),
            Some("2024-03-15T14:00:00+00:00")
        );
        assert_eq!(
            at("year=2024/month=03").as_deref(),
            Some("2024-03-01T00:00:00+00:00")
        );
        assert_eq!(at("date=2024-03-15/hour=24"), None);
        assert_eq!(at("hour=3"), None);
    }

    #[test]
    fn the_text_report_says_what_is_missing() {
        let report = StatusReport {
            generated_at: Utc::now(),
            collect_ms: 5,
            rate_window_seconds: Some(1.0),
            stages: vec![StageStatus {
                name: "enrich".into(),
                url: "http://127.0.0.1:9".into(),
                state: StageState::Unreachable,
                problems: vec!["nothing answers (connection refused)".into()],
                in_per_second: None,
                out_per_second: None,
                records_in: None,
                dead_lettered: None,
                lag: None,
            }],
            kafka: Section::Unavailable {
                reason: "cannot reach the Kafka broker".into(),
            },
            registry: Section::Ok {
                data: RegistryStatus { subjects: 3 },
            },
            dead_letters: Section::Ok {
                data: vec![DeadLetterStage {
                    stage: "validate".into(),
                    topic: "gale.dlq.validate".into(),
                    total: 4,
                    sampled: 4,
                    reasons: rank_reasons(&[letter(Some("unknown_asset"), "MTR-9", "t")]),
                }],
            },
            faults: Section::NotConfigured {
                reason: "no database".into(),
            },
            postgres: Section::NotConfigured {
                reason: "no database".into(),
            },
            lake: Section::Ok { data: vec![] },
        };
        let text = render_text(&report);
        assert!(text.contains("topics: UNAVAILABLE: cannot reach"), "{text}");
        assert!(text.contains("enrich         UNREACHABLE"), "{text}");
        assert!(
            text.contains("top reason: unknown_asset (1 of 4 read): MTR-9"),
            "{text}"
        );
        assert!(text.contains("faults: not shown (no database)"), "{text}");
        assert!(
            text.contains("freshness of the lake: no tables written yet"),
            "{text}"
        );
        // No later line starts with a topic name (scripts read the topic table).
        assert!(
            text.lines().all(|l| !l.trim_start().starts_with("gale.")),
            "{text}"
        );
        assert_eq!(age(90), "90s ago");
        assert_eq!(age(-7200), "in 2h00m");
    }
}
