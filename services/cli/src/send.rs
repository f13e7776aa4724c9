//! Sends simulated rows through the ingest HTTP API or straight to the raw
//! topic, paced to a rate or as fast as possible, with a progress bar.
//!
//! Event times come from the schedule, never from the clock at generation:
//! tick `k` happens at `start + k × interval`, so every asset's readings are
//! exactly one interval apart and no two share a millisecond, however fast
//! they are sent. See [`Schedule`] for how start and interval are chosen.
//!
//! The schedule also bounds the fault episodes ([`FaultOptions`]): a run
//! whose size is known (`--count`, or `--duration` with `--rate`) surely
//! completes its first `count / fleet size` ticks, and the episodes are
//! planned, and their faults expected to close, within those.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use gale_ingest::mapping::{SourceConfig, SourceMapping};
use gale_ingest::parse::object_fields;
use gale_ingest::writer::RawWriter;
use gale_model::{IngestChannel, RAW_READING};
use gale_runtime::avro::Registry;
use gale_runtime::config::{KafkaConfig, RegistryConfig};
use gale_runtime::health::Health;
use gale_runtime::kafka::{self, GaleContext};
use gale_runtime::metrics::StageMetrics;
use gale_runtime::telemetry::Telemetry;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::simulate::{
    EpisodeDurations, FaultMode, FaultPlan, Fleet, Generator, Scenario, SimRow, Timeline,
    METER_GAP_RATE,
};

/// `--rate`: readings per second, a positive finite number.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of readings per second"))?;
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err(format!(
            "{text:?}: the rate must be more than 0 readings per second (omit --rate to send as fast as possible)"
        ))
    }
}

/// `--interval`: a duration of at least one millisecond (event times have
/// millisecond precision, so a shorter spacing would collide).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < Duration::from_millis(1) {
        return Err(format!("{text:?}: the interval must be at least 1ms"));
    }
    Ok(d)
}

/// `--fault-share`: a share of the fleet, from 0 to 1.
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{text:?}: give a share from 0 to 1, e.g. 0.2")),
    }
}

/// `--overload-readings`: at least the 6 readings OVERLOAD needs.
fn parse_overload_readings(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 6 => Ok(n),
        _ => Err(format!(
            "{text:?}: OVERLOAD opens after 6 readings above 20 kW; give 6 or more"
        )),
    }
}

/// How `simulate` injects faults (see `docs/simulator.md`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Faults")]
pub struct FaultOptions {
    /// `episodes`: a share of the assets get one fault episode each, with a
    /// known start and end (see --faults-out); `random`: fault values on
    /// random readings at the spec's rates and meters stuck all run;
    /// `none`: data-quality scenarios only.
    #[arg(long = "faults", value_enum, default_value_t = FaultMode::Episodes)]
    pub mode: FaultMode,
    /// Write the faults the episodes must raise (JSON lines, with their
    /// expected open and close times) to this file. Needs --faults
    /// episodes and a known run size (--count, or --duration with --rate).
    #[arg(long, value_name = "FILE")]
    pub faults_out: Option<PathBuf>,
    /// Share of the turbines, and of the occupied meters, given an episode
    /// each; while above 0, at least one of each fault as far as the fleet
    /// allows.
    #[arg(long, default_value_t = 0.2, value_parser = parse_share)]
    pub fault_share: f64,
    /// Length of gearbox, generator, vibration, oil pressure and tower lean
    /// episodes.
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    pub limit_fault_duration: Duration,
    /// Length of UNDERPERFORMANCE episodes (it opens after 30m).
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    pub underperformance_duration: Duration,
    /// Length of SILENT episodes (over 24h gives MISSING_SHORT and MISSING_EXTENDED).
    #[arg(long, default_value = "26h", value_parser = humantime::parse_duration)]
    pub silence_duration: Duration,
    /// Length of STUCK_VALUE episodes (it opens after 24h).
    #[arg(long, default_value = "30h", value_parser = humantime::parse_duration)]
    pub stuck_duration: Duration,
    /// Length of ZERO_VALUE episodes (it opens after 48h).
    #[arg(long, default_value = "50h", value_parser = humantime::parse_duration)]
    pub zero_duration: Duration,
    /// Readings above 20 kW in an OVERLOAD episode (it opens at the 6th).
    #[arg(long, default_value_t = 8, value_parser = parse_overload_readings)]
    pub overload_readings: u64,
    /// The receiving source declares the tick interval as its readings'
    /// interval (ingest: `interval` of the source, equal to --interval; the
    /// raw-topic path then declares it too). `kWh` meters then report their
    /// consumption per interval, and --faults-out dates silences from when
    /// the next reading was due, as detect-faults does with a declared
    /// interval. Without it, `kWh` values are kW (taken as hourly) and
    /// silences count from the last reading.
    #[arg(long)]
    pub interval_declared: bool,
}

impl Default for FaultOptions {
    fn default() -> Self {
        let d = EpisodeDurations::default();
        let ms = |ms: i64| Duration::from_millis(ms.unsigned_abs());
        FaultOptions {
            mode: FaultMode::Episodes,
            faults_out: None,
            fault_share: 0.2,
            limit_fault_duration: ms(d.limit_ms),
            underperformance_duration: ms(d.underperformance_ms),
            silence_duration: ms(d.silence_ms),
            stuck_duration: ms(d.stuck_ms),
            zero_duration: ms(d.zero_ms),
            overload_readings: d.overload_readings,
            interval_declared: false,
        }
    }
}

impl FaultOptions {
    /// The episode lengths asked for.
    pub fn durations(&self) -> EpisodeDurations {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        EpisodeDurations {
            limit_ms: ms(self.limit_fault_duration),
            underperformance_ms: ms(self.underperformance_duration),
            silence_ms: ms(self.silence_duration),
            stuck_ms: ms(self.stuck_duration),
            zero_ms: ms(self.zero_duration),
            overload_readings: self.overload_readings,
        }
    }
}

/// When ticks happen in event time.
///
/// * `--start` given: from there, every `--interval` (replays, backfills).
/// * live with `--rate`: from now, one tick per fleet-worth of readings at
///   that rate, so event times keep pace with the clock as the rows are sent.
/// * live as fast as possible: every `--interval`, ending about now when the
///   run's size is known (`--count`), so the burst is recent history rather
///   than readings from the future; starting now otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Event time of tick 0.
    pub start: DateTime<Utc>,
    /// Event-time distance between ticks, in whole milliseconds (at least 1).
    pub interval_ms: i64,
}

impl Schedule {
    /// The schedule of `run` over `fleet`, with `now` as the clock.
    pub fn new(run: &Run, fleet: &Fleet, now: DateTime<Utc>) -> Schedule {
        let interval_ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1);
        // Expected rows per tick: meters skip some intervals.
        let per_tick = (fleet.turbines.len() as f64
            + fleet.meters.len() as f64 * (1.0 - METER_GAP_RATE))
            .max(1.0);
        match (run.start, run.rate) {
            (Some(start), _) => Schedule {
                start,
                interval_ms: interval_ms(run.interval),
            },
            (None, Some(rate)) => Schedule {
                start: now,
                interval_ms: ((per_tick / rate * 1000.0).round() as i64).max(1),
            },
            (None, None) => {
                let interval_ms = interval_ms(run.interval);
                let ticks = run.count.map_or(0, |n| (n as f64 / per_tick).ceil() as i64);
                let span = chrono::Duration::milliseconds(interval_ms.saturating_mul(ticks));
                Schedule {
                    start: now.checked_sub_signed(span).unwrap_or(now),
                    interval_ms,
                }
            }
        }
    }

    /// The first `ticks` ticks, as the fault plan sees them.
    pub fn timeline(&self, ticks: u64, interval_declared: bool) -> Timeline {
        Timeline {
            start_ms: self.start.timestamp_millis(),
            interval_ms: self.interval_ms,
            ticks,
            interval_declared,
        }
    }

    /// Event time of tick `tick`, if it is representable.
    pub fn at(&self, tick: u64) -> Option<DateTime<Utc>> {
        let offset = i64::try_from(tick).ok()?.checked_mul(self.interval_ms)?;
        self.start
            .checked_add_signed(chrono::TimeDelta::try_milliseconds(offset)?)
    }
}

/// Why a batch was not accepted.
#[derive(Debug)]
struct SendError {
    /// Another attempt may succeed (broker or server busy, connection lost).
    retryable: bool,
    error: anyhow::Error,
}

impl SendError {
    fn retry(error: anyhow::Error) -> Self {
        SendError {
            retryable: true,
            error,
        }
    }
}

/// Whether an HTTP status may go away by itself: timeouts, throttling and
/// server errors. A refused key (401), a body too large (413), a wrong
/// content type (415) or a batch without a usable row (400) come back the
/// same on every attempt.
fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429) || status >= 500
}

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
    /// Event time of the first tick; `None` = live (see [`Schedule`]).
    pub start: Option<DateTime<Utc>>,
    /// Event-time spacing of ticks when `start` is given, or when sending
    /// live as fast as possible; with a rate, live ticks follow the rate.
    pub interval: Duration,
    /// Rows per request / batch.
    pub batch: usize,
    /// Where the fleet's asset CSV is written.
    pub write_assets: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
    /// Fault injection.
    pub faults: FaultOptions,
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
    /// Injected scenarios, and the LOW_POWER_OUTPUT condition of the spec.
    pub scenarios: BTreeMap<&'static str, u64>,
    /// Intervals a meter skipped.
    pub gaps: u64,
    /// Readings withheld by SILENT episodes.
    pub silenced: u64,
    /// Fault episodes planned.
    pub episodes: usize,
    /// Faults the episodes must raise (the lines of `--faults-out`).
    pub expected_faults: usize,
}

enum Sink {
    Http {
        client: reqwest::Client,
        url: String,
        api_key: String,
    },
    Kafka {
        writer: Arc<RawWriter>,
        /// Boxed: a mapping is much larger than the HTTP variant.
        mapping: Box<SourceMapping>,
    },
}

impl Sink {
    /// A sink; `interval_ms` is the interval the Kafka path declares for
    /// the readings, if any (ingest sources declare theirs in their config).
    async fn open(target: Target, interval_ms: Option<i64>) -> anyhow::Result<Sink> {
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
                // With --interval-declared, as an ingest source declaring
                // it: detect-faults dates silences from it and validate
                // turns kWh per interval into kW.
                let mut source = SourceConfig::canonical("simulator");
                source.interval =
                    interval_ms.map(|ms| Duration::from_millis(ms.unsigned_abs().max(1)));
                Sink::Kafka {
                    writer: Arc::new(writer),
                    mapping: Box::new(
                        SourceMapping::new(source, "simulate").map_err(anyhow::Error::msg)?,
                    ),
                }
            }
        })
    }

    /// Sends one batch; retries what may pass (503, broker errors), fails
    /// at once on what will not.
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
                Err(e) if e.retryable && attempt < 20 => {
                    summary.retries += 1;
                    tracing::warn!(error = %e.error, attempt, "batch not accepted; retrying");
                    tokio::time::sleep(Duration::from_millis(500 * attempt.min(10))).await;
                }
                Err(e) => return Err(e.error),
            }
        }
    }

    async fn try_send(&self, rows: &[SimRow]) -> Result<(u64, u64), SendError> {
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
                    .with_context(|| format!("POST {url}"))
                    .map_err(SendError::retry)?;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let code = status.as_u16();
                if matches!(code, 200 | 207) && answer.get("accepted").is_some() {
                    return Ok((
                        answer["accepted"].as_u64().unwrap_or(0),
                        answer["rejected"].as_u64().unwrap_or(0),
                    ));
                }
                let message = if answer.is_null() {
                    text.trim().to_string()
                } else {
                    answer.to_string()
                };
                let hint = match code {
                    401 => "; pass the source's key with --api-key",
                    413 => "; send smaller batches with --batch",
                    _ => "",
                };
                Err(SendError {
                    retryable: retryable_status(code),
                    error: anyhow::anyhow!("ingest answered {status}: {message}{hint}"),
                })
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
                    SendError::retry(anyhow::anyhow!(
                        "{} of {} acknowledged: {}",
                        e.acknowledged,
                        e.total,
                        e.error
                    ))
                })?;
                Ok((readings.len() as u64, rejected))
            }
        }
    }
}

/// The episodes of `run`: planned over the ticks it surely completes
/// (`total` readings, at most a fleet's worth per tick).
fn plan_faults(
    run: &Run,
    fleet: &Fleet,
    schedule: &Schedule,
    total: Option<u64>,
) -> anyhow::Result<FaultPlan> {
    let ticks = total.map(|n| n / fleet.len() as u64);
    let faults = &run.faults;
    if faults.faults_out.is_some() {
        if faults.mode != FaultMode::Episodes {
            bail!("--faults-out lists fault episodes: use it with --faults episodes");
        }
        if ticks.is_none() {
            bail!("--faults-out needs a known run size: give --count, or --duration with --rate");
        }
    }
    if faults.mode != FaultMode::Episodes {
        return Ok(FaultPlan::empty(
            schedule.timeline(0, faults.interval_declared),
        ));
    }
    let Some(ticks) = ticks else {
        eprintln!(
            "note: no fault episodes: they need a known run size (--count, or --duration with --rate)"
        );
        return Ok(FaultPlan::empty(
            schedule.timeline(0, faults.interval_declared),
        ));
    };
    let timeline = schedule.timeline(ticks, faults.interval_declared);
    let plan = FaultPlan::new(
        fleet,
        run.seed,
        timeline,
        faults.fault_share,
        &faults.durations(),
    );
    if !plan.skipped.is_empty() {
        let mut kinds: Vec<&str> = plan.skipped.iter().map(|k| k.name()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let span =
            Duration::from_millis((timeline.interval_ms.unsigned_abs()).saturating_mul(ticks));
        eprintln!(
            "note: {} fault episode(s) ({}) do not fit in {} of event time and were left out",
            plan.skipped.len(),
            kinds.join(", "),
            humantime::format_duration(span)
        );
    }
    Ok(plan)
}

fn write_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Runs the simulation.
pub async fn run(run: Run, target: Target) -> anyhow::Result<Summary> {
    if let Some(rate) = run.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        bail!("--rate must be more than 0 readings per second, not {rate}");
    }
    if run.interval < Duration::from_millis(1) {
        bail!("--interval must be at least 1ms");
    }
    let fleet = Fleet::generate(run.turbines, run.meters, run.seed);
    if fleet.is_empty() {
        bail!("the fleet is empty: give --turbines and/or --meters");
    }
    let schedule = Schedule::new(&run, &fleet, Utc::now());
    let total = run.count.or_else(|| {
        run.duration
            .zip(run.rate)
            .map(|(d, r)| (d.as_secs_f64() * r) as u64)
    });
    let plan = plan_faults(&run, &fleet, &schedule, total)?;
    if let Some(path) = &run.write_assets {
        write_file(path, &fleet.assets_csv())?;
    }
    if let Some(path) = &run.faults.faults_out {
        write_file(path, &plan.json_lines())?;
    }
    let declared = run.faults.interval_declared.then_some(schedule.interval_ms);
    let sink = Sink::open(target, declared).await?;
    let mut summary = Summary {
        episodes: plan.episodes.len(),
        expected_faults: plan.expected_faults().len(),
        ..Summary::default()
    };
    let mut generator = Generator::with_faults(fleet, run.seed, run.faults.mode, Some(plan));
    let started = Instant::now();
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
    // Paced runs send about a second's worth at a time, so a low rate does
    // not hold rows back for long.
    let batch_size = match run.rate {
        Some(rate) => run.batch.min((rate.ceil() as usize).max(1)),
        None => run.batch,
    }
    .max(1);
    let mut pending: Vec<SimRow> = Vec::new();
    let mut tick = 0u64;
    loop {
        let remaining = total
            .map(|t| t.saturating_sub(summary.sent))
            .unwrap_or(u64::MAX);
        if remaining == 0 || run.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let want = batch_size.min(remaining as usize);
        while pending.len() < want {
            let Some(at) = schedule.at(tick) else {
                bail!("tick {tick} lies beyond the last representable event time");
            };
            for row in generator.tick(tick, at) {
                if row.gap && row.episode.is_some() {
                    summary.silenced += 1;
                } else if row.gap {
                    summary.gaps += 1;
                } else {
                    pending.push(row);
                }
            }
            tick += 1;
        }
        let batch: Vec<SimRow> = pending.drain(..want).collect();
        // Paced before sending, so a row never leaves before the rate allows
        // (and, live, before its event time).
        if let Some(rate) = run.rate {
            let due =
                Duration::try_from_secs_f64((summary.sent + batch.len() as u64) as f64 / rate)
                    .unwrap_or(Duration::MAX);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        sink.send(&batch, &mut summary).await?;
        for r in &batch {
            if let Some(s) = r.scenario {
                *summary.scenarios.entry(s.name()).or_default() += 1;
            }
            if r.low_power_output {
                *summary
                    .scenarios
                    .entry(Scenario::LowPowerOutput.name())
                    .or_default() += 1;
            }
        }
        summary.sent += batch.len() as u64;
        bar.set_position(summary.sent);
    }
    bar.finish_and_clear();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn run_of(count: u64) -> Run {
        Run {
            turbines: 4,
            meters: 6,
            seed: 3,
            rate: None,
            duration: None,
            count: Some(count),
            start: None,
            interval: Duration::from_secs(10),
            batch: 25,
            write_assets: None,
            progress: false,
            faults: FaultOptions::default(),
        }
    }

    #[test]
    fn rates_must_be_positive_numbers() {
        for bad in ["0", "-1", "-0.5", "NaN", "inf", "fast", ""] {
            let err = parse_rate(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("500us").is_err());
        assert_eq!(parse_interval("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn the_schedule_decides_event_times() {
        let now = Utc::now();
        let fleet = Fleet::generate(4, 6, 3);
        // A given start: start + k x interval.
        let start = DateTime::parse_from_rfc3339("2024-03-15T14:00:00Z")
            .unwrap()
            .to_utc();
        let mut run = run_of(100);
        run.start = Some(start);
        let s = Schedule::new(&run, &fleet, now);
        assert_eq!(s.at(0), Some(start));
        assert_eq!(s.at(6), Some(start + chrono::Duration::seconds(60)));
        // Live at a rate: ticks keep pace with the clock (9.7 rows per tick at 97/s).
        run.start = None;
        run.rate = Some(97.0);
        let s = Schedule::new(&run, &fleet, now);
        assert_eq!((s.start, s.interval_ms), (now, 100));
        // However high the rate, an asset's readings are a millisecond apart.
        run.rate = Some(1e12);
        assert_eq!(Schedule::new(&run, &fleet, now).interval_ms, 1);
        // Live as fast as possible: a burst of recent history ending about now.
        run.rate = None;
        let s = Schedule::new(&run, &fleet, now);
        let ticks = (100.0f64 / 9.7).ceil() as u64;
        assert_eq!(s.interval_ms, 10_000);
        assert_eq!(s.at(ticks), Some(now));
        // Far ticks do not overflow.
        assert_eq!(s.at(u64::MAX), None);
    }

    /// A stand-in for ingest: answers every request with `status` and
    /// `answer` (or counts the rows as accepted when `answer` is empty),
    /// keeping the rows it was sent.
    async fn fake_ingest(
        status: u16,
        answer: &'static str,
    ) -> (
        String,
        Arc<Mutex<Vec<serde_json::Map<String, Value>>>>,
        Arc<Mutex<u32>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let rows = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0u32));
        let (rows_seen, requests_seen) = (rows.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let body = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break Some(buf[end + 4..end + 4 + length].to_vec());
                    }
                };
                let Some(body) = body else { continue };
                *requests_seen.lock().unwrap() += 1;
                let batch: Vec<serde_json::Map<String, Value>> =
                    serde_json::from_slice(&body).unwrap_or_default();
                let reply = if answer.is_empty() {
                    format!("{{\"accepted\":{},\"rejected\":0}}", batch.len())
                } else {
                    answer.to_string()
                };
                rows_seen.lock().unwrap().extend(batch);
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        (url, rows, requests)
    }

    #[tokio::test]
    async fn event_times_follow_the_schedule_not_the_clock() {
        let (url, rows, _) = fake_ingest(200, "").await;
        let before = Utc::now();
        let summary = run(
            run_of(400),
            Target::Http {
                url,
                api_key: "k".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!((summary.sent, summary.accepted), (400, 400));
        let rows = rows.lock().unwrap();
        let mut per_asset: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        for r in rows.iter() {
            if r.get("sim_scenario").and_then(Value::as_str) == Some("FUTURE_TIMESTAMP") {
                continue;
            }
            let at = DateTime::parse_from_rfc3339(r["timestamp"].as_str().unwrap())
                .unwrap()
                .to_utc();
            assert!(
                at <= Utc::now(),
                "a burst is recent history, not the future"
            );
            assert!(at > before - chrono::Duration::hours(1));
            per_asset
                .entry(r["asset_id"].as_str().unwrap().to_string())
                .or_default()
                .push(at);
        }
        for (asset, times) in per_asset {
            for pair in times.windows(2) {
                let step = (pair[1] - pair[0]).num_milliseconds();
                assert!(
                    step >= 10_000 && step % 10_000 == 0,
                    "{asset}: readings {step} ms apart"
                );
            }
        }
    }

    #[tokio::test]
    async fn faults_out_lists_what_the_sent_readings_hold() {
        let (url, rows, _) = fake_ingest(200, "").await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("faults.jsonl");
        let start = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let mut run_3_days = run_of(432 * 16);
        run_3_days.turbines = 8;
        run_3_days.meters = 8;
        run_3_days.start = Some(start);
        run_3_days.interval = Duration::from_secs(600);
        run_3_days.batch = 1000;
        run_3_days.faults.faults_out = Some(out.clone());
        run_3_days.faults.interval_declared = true;
        let target = |url: &str| Target::Http {
            url: url.into(),
            api_key: "k".into(),
        };
        let summary = run(run_3_days, target(&url)).await.unwrap();
        let lines: Vec<crate::simulate::ExpectedFault> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), summary.expected_faults);
        assert!(summary.silenced > 0 && summary.episodes >= 11);
        let codes: std::collections::BTreeSet<(&str, &str)> = lines
            .iter()
            .map(|f| (f.kind.as_str(), f.code.as_str()))
            .collect();
        assert_eq!(codes.len(), 13, "{codes:?}");
        let rows = rows.lock().unwrap().clone();
        let at = |r: &serde_json::Map<String, Value>| {
            DateTime::parse_from_rfc3339(r["timestamp"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        };
        for f in &lines {
            let readings: Vec<i64> = rows
                .iter()
                .filter(|r| r["asset_id"] == f.asset_id.as_str())
                .filter(|r| {
                    r.get("sim_scenario").and_then(Value::as_str) != Some("FUTURE_TIMESTAMP")
                })
                .map(at)
                .collect();
            let inside = readings
                .iter()
                .filter(|t| (f.start_ms..f.end_ms).contains(t))
                .count() as u64;
            assert_eq!(inside, f.readings, "{f:?}");
            // Faults open and close at readings; MISSING_SHORT closes when
            // it escalates, in the silence.
            if f.code != "MISSING_SHORT" {
                assert!(readings.contains(&f.expected_close_ms), "{f:?}");
            }
            if f.readings > 0 {
                assert!(readings.contains(&f.expected_open_ms), "{f:?}");
            }
        }
        // The file lists episodes, of a run whose size is known.
        let mut random = run_of(100);
        random.faults.mode = FaultMode::Random;
        random.faults.faults_out = Some(out.clone());
        let err = run(random, target(&url)).await.unwrap_err().to_string();
        assert!(err.contains("--faults episodes"), "{err}");
        let mut endless = run_of(100);
        endless.count = None;
        endless.duration = Some(Duration::from_secs(1));
        endless.faults.faults_out = Some(out);
        let err = run(endless, target(&url)).await.unwrap_err().to_string();
        assert!(err.contains("--count"), "{err}");
    }

    #[test]
    fn fault_shares_and_overload_lengths_are_checked() {
        assert_eq!(parse_share("0.2"), Ok(0.2));
        for bad in ["-0.1", "1.5", "NaN", "a"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
        assert!(parse_overload_readings("5").is_err());
        assert_eq!(parse_overload_readings("6"), Ok(6));
        let d = FaultOptions::default().durations();
        assert_eq!(d, EpisodeDurations::default());
    }

    #[tokio::test]
    async fn permanent_http_errors_fail_at_once_with_the_servers_message() {
        for (status, answer) in [
            (401, r#"{"error":"missing or unknown API key"}"#),
            (413, r#"{"error":"body larger than 1048576 bytes"}"#),
            (415, r#"{"error":"unsupported content type"}"#),
            (
                400,
                r#"{"accepted":0,"rejected":25,"errors":[{"line":1,"error":"no metric values"}]}"#,
            ),
        ] {
            let (url, _, requests) = fake_ingest(status, answer).await;
            let started = Instant::now();
            let err = run(
                run_of(50),
                Target::Http {
                    url,
                    api_key: "k".into(),
                },
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(err.contains(&status.to_string()), "{err}");
            let quoted = serde_json::from_str::<Value>(answer).unwrap();
            let first = quoted
                .get("error")
                .or_else(|| quoted["errors"][0].get("error"))
                .and_then(Value::as_str)
                .unwrap();
            assert!(err.contains(first), "{err}");
            assert_eq!(*requests.lock().unwrap(), 1, "{status} is not retried");
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        assert!(retryable_status(503) && retryable_status(429) && retryable_status(500));
        assert!(!retryable_status(404));
    }
}
