//! Sends simulated rows through the ingest HTTP API or straight to the raw
//! topic, paced to a rate or as fast as possible, with a progress bar.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use gale_ingest::mapping::{SourceConfig, SourceMapping};
use gale_ingest::parse::object_fields;
use gale_ingest::writer::RawWriter;
use gale_runtime::avro::Registry;
use gale_runtime::config::{KafkaConfig, RegistryConfig};
use gale_runtime::health::Health;
use gale_runtime::kafka::{self, GaleContext};
use gale_runtime::metrics::StageMetrics;
use gale_runtime::schema::{IngestChannel, RAW_READING};
use gale_runtime::telemetry::Telemetry;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::simulate::{Fleet, Generator, SimRow};

/// Where rows go.
pub enum Target {
    /// The ingest API.
    Http {
        /// Base URL, e.g. `http://127.0.0.1:8080`.
        url: String,
        /// Source API key.
        api_key: String,
    },
    /// The raw topic directly (Avro, Confluent wire format).
    Kafka {
        /// Bootstrap servers.
        bootstrap: String,
        /// Raw topic.
        topic: String,
        /// Registry URL.
        registry: String,
    },
}

/// A simulation run.
pub struct Run {
    /// Turbines in the fleet.
    pub turbines: usize,
    /// Meters in the fleet.
    pub meters: usize,
    /// Seed of values and faults.
    pub seed: u64,
    /// Readings per second over the whole fleet; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many readings.
    pub count: Option<u64>,
    /// Event time of the first tick; `None` = wall clock.
    pub start: Option<DateTime<Utc>>,
    /// Event-time spacing of ticks when `start` is given.
    pub interval: Duration,
    /// Rows per request / batch.
    pub batch: usize,
    /// Where the fleet's asset CSV is written.
    pub write_assets: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Rows sent.
    pub sent: u64,
    /// Rows ingest accepted.
    pub accepted: u64,
    /// Rows ingest rejected (bad rows).
    pub rejected: u64,
    /// Batches retried after a 503 or a broker error.
    pub retries: u64,
    /// Injected scenarios.
    pub scenarios: BTreeMap<&'static str, u64>,
    /// Intervals a meter skipped.
    pub gaps: u64,
}

enum Sink {
    Http {
        client: reqwest::Client,
        url: String,
        api_key: String,
    },
    Kafka {
        writer: Arc<RawWriter>,
        mapping: SourceMapping,
    },
}

impl Sink {
    async fn open(target: Target) -> anyhow::Result<Sink> {
        Ok(match target {
            Target::Http { url, api_key } => Sink::Http {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()?,
                url: format!("{}/v1/readings", url.trim_end_matches('/')),
                api_key,
            },
            Target::Kafka {
                bootstrap,
                topic,
                registry,
            } => {
                let telemetry = Telemetry::init("gale-simulate", &Default::default())?;
                let metrics = StageMetrics::new("simulate");
                let kafka_cfg = KafkaConfig {
                    bootstrap_servers: bootstrap,
                    ..KafkaConfig::default()
                };
                kafka::ensure_topics(&kafka_cfg, &[&topic]).await?;
                let producer =
                    kafka::producer(&kafka_cfg, GaleContext::new(metrics.clone(), Health::new()))?;
                let registry = Registry::new(&RegistryConfig {
                    url: registry,
                    ..RegistryConfig::default()
                })?;
                let encoder = registry.register(&topic, RAW_READING).await?;
                let writer = RawWriter::new(
                    producer,
                    encoder,
                    topic.clone(),
                    format!("{topic}.dlq"),
                    telemetry.messaging("simulate"),
                    metrics.topic(&topic),
                    metrics.topic("unused"),
                    Duration::from_secs(30),
                );
                Sink::Kafka {
                    writer: Arc::new(writer),
                    mapping: SourceMapping::new(SourceConfig::canonical("simulator"), "simulate")
                        .map_err(anyhow::Error::msg)?,
                }
            }
        })
    }

    /// Sends one batch; retries on 503 / broker errors.
    async fn send(&self, rows: &[SimRow], summary: &mut Summary) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_send(rows).await {
                Ok((accepted, rejected)) => {
                    summary.accepted += accepted;
                    summary.rejected += rejected;
                    return Ok(());
                }
                Err(e) if attempt < 20 => {
                    summary.retries += 1;
                    tracing::warn!(error = %e, attempt, "batch not accepted; retrying");
                    tokio::time::sleep(Duration::from_millis(500 * attempt.min(10))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_send(&self, rows: &[SimRow]) -> anyhow::Result<(u64, u64)> {
        match self {
            Sink::Http {
                client,
                url,
                api_key,
            } => {
                let body: Vec<&serde_json::Map<String, Value>> =
                    rows.iter().map(|r| &r.row).collect();
                let resp = client
                    .post(url)
                    .header("Authorization", format!("Bearer {api_key}"))
                    .json(&body)
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = resp.status();
                let answer: Value = resp.json().await.unwrap_or(Value::Null);
                match status.as_u16() {
                    200 | 207 | 400 if answer.get("accepted").is_some() => Ok((
                        answer["accepted"].as_u64().unwrap_or(0),
                        answer["rejected"].as_u64().unwrap_or(0),
                    )),
                    401 => bail!(
                        "ingest refused the API key (401); pass the source's key with --api-key"
                    ),
                    _ => bail!("ingest answered {status}: {answer}"),
                }
            }
            Sink::Kafka { writer, mapping } => {
                let now = Utc::now().timestamp_millis();
                let mut readings = Vec::with_capacity(rows.len());
                let mut rejected = 0;
                for r in rows {
                    match object_fields(Value::Object(r.row.clone()))
                        .and_then(|f| mapping.to_reading(&f, IngestChannel::Simulator, now))
                    {
                        Ok(reading) => readings.push(reading),
                        Err(_) => rejected += 1,
                    }
                }
                writer.send(&readings, None).await.map_err(|e| {
                    anyhow::anyhow!(
                        "{} of {} acknowledged: {}",
                        e.acknowledged,
                        e.total,
                        e.error
                    )
                })?;
                Ok((readings.len() as u64, rejected))
            }
        }
    }
}

/// Runs the simulation.
pub async fn run(run: Run, target: Target) -> anyhow::Result<Summary> {
    let fleet = Fleet::generate(run.turbines, run.meters, run.seed);
    if fleet.is_empty() {
        bail!("the fleet is empty: give --turbines and/or --meters");
    }
    if let Some(path) = &run.write_assets {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        std::fs::write(path, fleet.assets_csv())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let sink = Sink::open(target).await?;
    let mut generator = Generator::new(fleet, run.seed);
    let mut summary = Summary::default();
    let started = Instant::now();
    let total = run.count.or_else(|| {
        run.duration
            .zip(run.rate)
            .map(|(d, r)| (d.as_secs_f64() * r) as u64)
    });
    let bar = if run.progress {
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} readings ({per_sec}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut pending: Vec<SimRow> = Vec::new();
    let mut tick = 0u64;
    loop {
        let remaining = total
            .map(|t| t.saturating_sub(summary.sent))
            .unwrap_or(u64::MAX);
        if remaining == 0 || run.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let want = run.batch.min(remaining as usize);
        while pending.len() < want {
            let at = match run.start {
                Some(s) => {
                    s + chrono::Duration::from_std(run.interval * tick as u32).unwrap_or_default()
                }
                None => Utc::now(),
            };
            for row in generator.tick(tick, at) {
                if row.gap {
                    summary.gaps += 1;
                } else {
                    pending.push(row);
                }
            }
            tick += 1;
        }
        let batch: Vec<SimRow> = pending.drain(..want).collect();
        sink.send(&batch, &mut summary).await?;
        for r in &batch {
            if let Some(s) = r.scenario {
                *summary.scenarios.entry(s.name()).or_default() += 1;
            }
        }
        summary.sent += batch.len() as u64;
        bar.set_position(summary.sent);
        if let Some(rate) = run.rate {
            let due = Duration::from_secs_f64(summary.sent as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}
