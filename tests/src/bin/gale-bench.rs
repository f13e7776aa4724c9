//! `gale-bench`: throughput of Gale's stages against a baseline measured in
//! the same run, on the same broker (see docs/performance.md).
//!
//! `gale-bench validate` preloads simulated raw readings, then runs (1) a
//! plain consume → produce of the same bytes (`gale-bench passthrough`, the
//! baseline) and (2) `gale-validate`, each as its own process, and prints
//! records/s (from the first to the last output record's broker timestamp)
//! and CPU µs per record (from /proc) for both.
//!
//! `gale-bench sinks` preloads simulated validated readings and runs
//! `gale-pg-sink` (baseline: a plain `COPY` of the same rows into the same
//! table layout) and `gale-archive` (baseline: the same rows decoded and
//! encoded to Parquet in memory with arrow-rs, no Kafka, no store), then
//! times the dashboard queries on at least 1,000,000 readings.
//!
//! `gale-bench aggregate` preloads checked readings and runs the
//! pass-through, then `gale-aggregate` with durable state, and the restore
//! of that state (see `gale_bench/aggregate.rs`).
//!
//! `gale-bench pipeline` runs ingest → validate → enrich → detect-faults →
//! aggregate → pg-sink as processes, posts readings to ingest's API at
//! fixed offered rates and prints, per rate, the rate that reached Postgres,
//! the latency from ingest's acknowledgement to the row, the latency of the
//! hourly aggregates and the CPU of all Gale processes per reading (see
//! `gale_bench/pipeline.rs`).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gale_cli::simulate::{Fleet, Generator};
use gale_ingest::mapping::{SourceConfig, SourceMapping};
use gale_ingest::parse::object_fields;
use gale_model::{IngestChannel, RAW_READING};
use gale_tests::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

#[path = "gale_bench/aggregate.rs"]
mod aggregate;
#[path = "gale_bench/pipeline.rs"]
mod pipeline;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("passthrough") => {
            passthrough(
                &arg("--bootstrap").expect("--bootstrap"),
                &arg("--input").expect("--input"),
                &arg("--output").expect("--output"),
                &arg("--group").expect("--group"),
                arg("--count").expect("--count").parse()?,
            )
            .await
        }
        Some("sinks") => {
            bench_sinks(
                arg("--records")
                    .map(|n| n.parse())
                    .transpose()?
                    .unwrap_or(200_000),
            )
            .await
        }
        Some("consume") => bare_consume(
            &arg("--bootstrap").expect("--bootstrap"),
            &arg("--topic").expect("--topic"),
            &arg("--group").expect("--group"),
            arg("--count").expect("--count").parse()?,
        ),
        Some("backfill") => {
            bench_backfill(
                arg("--turbines")
                    .map(|n| n.parse())
                    .transpose()?
                    .unwrap_or(4),
                arg("--days").map(|n| n.parse()).transpose()?.unwrap_or(730),
            )
            .await
        }
        Some("enrich") => {
            bench_enrich(
                arg("--records")
                    .map(|n| n.parse())
                    .transpose()?
                    .unwrap_or(200_000),
            )
            .await
        }
        Some("detect-faults") => {
            bench_detect(
                arg("--records")
                    .map(|n| n.parse())
                    .transpose()?
                    .unwrap_or(200_000),
                arg("--assets")
                    .map(|n| n.parse())
                    .transpose()?
                    .unwrap_or(10_000),
            )
            .await
        }
        Some("aggregate") => {
            aggregate::bench_aggregate(
                arg("--records")
                    .map(|n| n.parse())
                    .transpose()?
                    .unwrap_or(200_000),
                arg("--assets")
                    .map(|n| n.parse())
                    .transpose()?
                    .unwrap_or(1_000),
            )
            .await
        }
        Some("pipeline") => pipeline::bench_pipeline(pipeline::Options::from_args()?).await,
        Some("validate") => {
            bench_validate(
                arg("--records")
                    .map(|n| n.parse())
                    .transpose()?
                    .unwrap_or(200_000),
            )
            .await
        }
        _ => {
            eprintln!("usage: gale-bench validate [--records N] | enrich [--records N] | detect-faults [--records N] [--assets N] | aggregate [--records N] [--assets N] | pipeline [--rates R,R,...] [--seconds S] [--turbines N] [--meters N] [--batch N] [--fetch-wait-ms N] | sinks [--records N] [--no-queries] | backfill [--turbines N] [--days N] | passthrough --bootstrap B --input T --output T --group G --count N | consume --bootstrap B --topic T --group G --count N");
            std::process::exit(2);
        }
    }
}

/// The baseline: consume, produce the same bytes, store offsets after the
/// acknowledgements of each batch (the same batching the runtime uses).
async fn passthrough(
    bootstrap: &str,
    input: &str,
    output: &str,
    group: &str,
    count: usize,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[input])?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut done = 0;
    while done < count {
        let mut batch = Vec::with_capacity(1000);
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            batch.push(m?);
        }
        while batch.len() < 1000 {
            match consumer.poll(Duration::ZERO) {
                Some(m) => batch.push(m?),
                None => break,
            }
        }
        let mut acks = Vec::with_capacity(batch.len());
        for m in &batch {
            let mut record = FutureRecord::to(output).payload(m.payload().unwrap_or(&[]));
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            acks.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for a in futures::future::join_all(acks).await {
            a?.map_err(|(e, _)| e)?;
        }
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        for m in &batch {
            next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in next {
            tpl.add_partition_offset(&t, p, Offset::Offset(o))?;
        }
        if !batch.is_empty() {
            consumer.store_offsets(&tpl)?;
        }
        done += batch.len();
    }
    producer.flush(Duration::from_secs(10))?;
    consumer.commit_consumer_state(CommitMode::Sync).ok();
    Ok(())
}

/// [`run_measured`], stopping the child with `stop` instead of SIGKILL.
async fn run_measured_then(
    stack: &Stack,
    mut child: std::process::Child,
    outputs: &[&str],
    n: usize,
    stop: impl FnOnce(&mut std::process::Child),
) -> Measured {
    let cpu0 = cpu_seconds(child.id());
    let readers: Vec<TopicReader> = outputs
        .iter()
        .map(|t| TopicReader::new(&stack.bootstrap, t))
        .collect();
    let started = Instant::now();
    let (mut first, mut last, mut count) = (i64::MAX, i64::MIN, 0usize);
    while count < n {
        for r in &readers {
            for m in r.poll_for(Duration::from_millis(100)) {
                if let Some(ts) = m.timestamp().to_millis() {
                    first = first.min(ts);
                    last = last.max(ts);
                }
                count += 1;
            }
        }
        if started.elapsed() > Duration::from_secs(900) {
            panic!("only {count} of {n} records after 15 minutes");
        }
    }
    let cpu = cpu_seconds(child.id()) - cpu0;
    stop(&mut child);
    let secs = ((last - first).max(1)) as f64 / 1000.0;
    Measured {
        rec_per_s: count as f64 / secs,
        cpu_us_per_rec: cpu * 1e6 / n as f64,
    }
}

/// The archive's baseline: a consumer that does nothing with the records,
/// tuned as the sinks are (fetches of up to 1 MiB, 100 ms wait). Prints the
/// seconds from its first record to its `count`-th.
fn bare_consume(bootstrap: &str, topic: &str, group: &str, count: usize) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.min.bytes", "1048576")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut seen = 0usize;
    let mut first = None;
    let mut bytes = 0usize;
    while seen < count {
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m?;
            first.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!("consume_secs={secs:.4} bytes={bytes}");
    Ok(())
}

/// Peak resident memory of a process so far, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the bare-consume baseline on `topic` in its own process; returns
/// records/s and CPU µs per record.
fn consume_baseline(stack: &Stack, topic: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let exe = std::env::current_exe()?;
    let child = Command::new(&exe)
        .args([
            "consume",
            "--bootstrap",
            &stack.bootstrap,
            "--topic",
            topic,
            "--group",
            &unique("bench-consume"),
            "--count",
            &n.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "the consume baseline failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let secs: f64 = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("consume_secs=")?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no consume_secs in {text:?}"))?;
    // CPU of the whole (short-lived) process: reading it is what it does.
    Ok((n as f64 / secs.max(1e-3), f64::NAN))
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

struct Measured {
    rec_per_s: f64,
    cpu_us_per_rec: f64,
}

/// Reads the outputs until `n` records arrived; records/s from the first to
/// the last output's broker timestamp, CPU from /proc over the whole run.
async fn run_measured(
    stack: &Stack,
    child: std::process::Child,
    outputs: &[&str],
    n: usize,
) -> Measured {
    run_measured_then(stack, child, outputs, n, |c| {
        let _ = c.kill();
        let _ = c.wait();
    })
    .await
}

async fn bench_validate(n: usize) -> anyhow::Result<()> {
    let stack = stack();
    let dir = tempfile::tempdir()?;
    let fleet = Fleet::generate(200, 800, 7);
    let assets = dir.path().join("assets.csv");
    std::fs::write(&assets, fleet.assets_csv())?;
    let raw = unique("bench-raw");
    let pt_out = unique("bench-passthrough");
    let (validated, quarantine, dlq) = (
        unique("bench-validated"),
        unique("bench-quarantine"),
        unique("bench-dlq"),
    );
    create_topics(
        &stack.bootstrap,
        &[&raw, &pt_out, &validated, &quarantine, &dlq],
        3,
    )
    .await;

    eprintln!("preloading {n} simulated readings");
    let encoder = registry(&stack).register(&raw, RAW_READING).await?;
    let mapping = SourceMapping::new(SourceConfig::canonical("bench"), "bench")
        .map_err(anyhow::Error::msg)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut generator = Generator::new(fleet, 7);
    let start = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut sent = 0;
    let mut tick = 0;
    let now = chrono::Utc::now().timestamp_millis();
    while sent < n {
        let at = start + chrono::Duration::seconds(tick);
        let mut acks = Vec::new();
        for row in generator.tick(tick as u64, at) {
            if sent >= n || row.gap {
                continue;
            }
            let fields =
                object_fields(serde_json::Value::Object(row.row)).map_err(anyhow::Error::msg)?;
            let reading = mapping
                .to_reading(&fields, IngestChannel::Simulator, now)
                .map_err(anyhow::Error::msg)?;
            let payload = encoder.encode(&reading).map_err(anyhow::Error::msg)?;
            acks.push(
                producer
                    .send_result(
                        FutureRecord::to(&raw)
                            .key(reading.asset_id.as_bytes())
                            .payload(&payload),
                    )
                    .map_err(|(e, _)| e)?,
            );
            sent += 1;
        }
        for a in futures::future::join_all(acks).await {
            a?.map_err(|(e, _)| e)?;
        }
        tick += 1;
    }

    let exe = std::env::current_exe()?;
    eprintln!("baseline: plain consume -> produce of the same bytes");
    let child = Command::new(&exe)
        .args([
            "passthrough",
            "--bootstrap",
            &stack.bootstrap,
            "--input",
            &raw,
            "--output",
            &pt_out,
            "--group",
            &unique("bench-pt"),
            "--count",
            &n.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()?;
    let baseline = run_measured(&stack, child, &[&pt_out], n).await;

    eprintln!("gale-validate");
    let log = log_dir().join("bench-validate.log");
    let child = Command::new(bin("gale-validate"))
        .envs([
            ("GALE_KAFKA__BOOTSTRAP_SERVERS", stack.bootstrap.clone()),
            ("GALE_REGISTRY__URL", stack.registry_url.clone()),
            ("GALE_HTTP__LISTEN", format!("127.0.0.1:{}", free_port())),
            ("GALE_TOPICS__INPUT", raw.clone()),
            ("GALE_TOPICS__VALIDATED", validated.clone()),
            ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
            ("GALE_TOPICS__DEAD_LETTER", dlq.clone()),
            ("GALE_KAFKA__GROUP_ID", unique("bench-validate")),
            ("GALE_VALIDATE__MODE", "backfill".into()),
            ("GALE_VALIDATE__ASSETS__SOURCE", "file".into()),
            ("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()),
            ("RUST_LOG", "warn".into()),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let validate = run_measured(&stack, child, &[&validated, &quarantine, &dlq], n).await;

    let ratio = validate.rec_per_s / baseline.rec_per_s;
    println!(
        "passthrough rec_per_s={:.0} cpu_us_per_rec={:.1}",
        baseline.rec_per_s, baseline.cpu_us_per_rec
    );
    println!(
        "validate rec_per_s={:.0} cpu_us_per_rec={:.1} passthrough_rec_per_s={:.0} ratio={:.2}",
        validate.rec_per_s, validate.cpu_us_per_rec, baseline.rec_per_s, ratio
    );
    Ok(())
}

/// Simulated readings scored by validate's rules (turbines and meters, with flags).
fn scored_readings(n: usize) -> Vec<gale_model::ScoredReading> {
    use gale_validate::assets::Asset;
    use gale_validate::rules::{evaluate, Mode, RuleSet};
    let fleet = Fleet::generate(200, 800, 11);
    let assets: HashMap<String, Asset> = fleet
        .turbines
        .iter()
        .map(|t| {
            (
                t.id.clone(),
                Asset {
                    id: t.id.clone(),
                    kind: gale_model::AssetKind::Turbine,
                    site_id: Some(t.site.clone()),
                },
            )
        })
        .chain(fleet.meters.iter().map(|m| {
            (
                m.id.clone(),
                Asset {
                    id: m.id.clone(),
                    kind: gale_model::AssetKind::Meter,
                    site_id: Some(m.site.clone()),
                },
            )
        }))
        .collect();
    let rules = RuleSet::default_rules();
    let mapping = SourceMapping::new(SourceConfig::canonical("bench"), "bench").expect("mapping");
    let mut generator = Generator::new(fleet, 11);
    let start = chrono::Utc::now() - chrono::Duration::hours(6);
    let mut out = Vec::with_capacity(n);
    let mut tick = 0i64;
    while out.len() < n {
        let at = start + chrono::Duration::seconds(tick * 10);
        for row in generator.tick(tick as u64, at) {
            if out.len() >= n || row.gap {
                continue;
            }
            let Ok(fields) = object_fields(serde_json::Value::Object(row.row)) else {
                continue;
            };
            let Ok(raw) =
                mapping.to_reading(&fields, IngestChannel::Simulator, at.timestamp_millis())
            else {
                continue;
            };
            let Some(asset) = assets.get(&raw.asset_id) else {
                continue;
            };
            if let Ok(s) = evaluate(
                &raw,
                asset,
                None,
                &rules,
                Mode::Backfill,
                at.timestamp_millis(),
            ) {
                out.push(s);
            }
        }
        tick += 1;
    }
    out
}

async fn preload(stack: &Stack, topic: &str, payloads: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random")
        .create()?;
    for chunk in payloads.chunks(5000) {
        let mut acks = Vec::new();
        for (key, p) in chunk {
            acks.push(
                producer
                    .send_result(FutureRecord::to(topic).key(key.as_bytes()).payload(p))
                    .map_err(|(e, _)| e)?,
            );
        }
        for a in futures::future::join_all(acks).await {
            a?.map_err(|(e, _)| e)?;
        }
    }
    Ok(())
}

/// Records a stage has consumed so far (0 while it does not answer).
async fn consumed(http: &str) -> f64 {
    let url = format!("http://{http}/metrics");
    match reqwest::get(&url).await {
        Ok(r) => r.text().await.map(|text| records_in(&text)).unwrap_or(0.0),
        Err(_) => 0.0,
    }
}

/// Polls `/metrics` until the stage has consumed its first record.
async fn first_consumed(http: &str) -> Instant {
    loop {
        if consumed(http).await > 0.0 {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the child's exit; returns the exit code and the CPU seconds
/// the process used in its whole life.
fn reap(child: std::process::Child) -> (i32, f64) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: a plain syscall on our own child; `usage` is written by wait4.
    unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut usage);
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        (code, secs(usage.ru_utime) + secs(usage.ru_stime))
    }
}

fn count_manifests(dir: &std::path::Path) -> usize {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += count_manifests(&p);
            } else if p
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("_part-"))
            {
                n += 1;
            }
        }
    }
    n
}

fn manifest_records(dir: &std::path::Path) -> usize {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += manifest_records(&p);
            } else if p
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("_part-"))
            {
                if let Ok(v) =
                    std::fs::read(&p).map(|b| serde_json::from_slice::<serde_json::Value>(&b))
                {
                    n += v.ok().and_then(|v| v["records"].as_u64()).unwrap_or(0) as usize;
                }
            }
        }
    }
    n
}

fn spawn_stage(
    name: &str,
    http: &str,
    config: &std::path::Path,
    stack: &Stack,
    extra: &[(&str, String)],
) -> anyhow::Result<std::process::Child> {
    let log = log_dir().join(format!("bench-{name}.log"));
    Ok(Command::new(bin(name))
        .args(["--config", config.to_str().expect("utf-8 path")])
        .env("GALE_KAFKA__BOOTSTRAP_SERVERS", &stack.bootstrap)
        .env("GALE_REGISTRY__URL", &stack.registry_url)
        .env("GALE_HTTP__LISTEN", http)
        .env("GALE_KAFKA__GROUP_ID", unique(name))
        .env(
            "RUST_LOG",
            std::env::var("GALE_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?)
}

async fn bench_sinks(n: usize) -> anyhow::Result<()> {
    use gale_model::VALIDATED_READING;
    let stack = stack();
    let dir = tempfile::tempdir()?;
    eprintln!("scoring {n} simulated readings");
    let readings = scored_readings(n);
    let topic = unique("bench-validated");
    create_topics(&stack.bootstrap, &[&topic], 3).await;
    let encoder = registry(&stack).register(&topic, VALIDATED_READING).await?;
    let payloads: Vec<(String, Vec<u8>)> = readings
        .iter()
        .map(|r| (r.asset_id.clone(), encoder.encode(r).expect("encode")))
        .collect();
    eprintln!("preloading them");
    preload(&stack, &topic, &payloads).await?;

    // ---- pg-sink
    eprintln!("gale-pg-sink");
    let db = TestDatabase::create(&stack).await;
    let cfg = pg_sink_config(
        dir.path(),
        &db.url,
        &[(&topic, "readings", true)],
        &unique("bench-dlq"),
    );
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_stage(
        "gale-pg-sink",
        &http,
        &cfg,
        &stack,
        &[("GALE_PROCESSING__BATCH_SIZE", "5000".into())],
    )?;
    let cpu0 = cpu_seconds(child.id());
    let t1 = first_consumed(&http).await;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    loop {
        let c: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        if c as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sink_secs = t1.elapsed().as_secs_f64();
    let sink_cpu = cpu_seconds(child.id()) - cpu0;
    let _ = child.kill();
    let _ = child.wait();

    // ---- COPY baseline: the same rows, same layout, plain COPY from a file.
    let base = TestDatabase::create(&stack).await;
    let base_pool = sqlx::PgPool::connect(&base.url).await?;
    gale_pg_sink::db::migrate(&base_pool).await?;
    let mapping = gale_pg_sink::config::TableMapping {
        topic: topic.clone(),
        table: "readings".into(),
        time_column: "event_time".into(),
        latest: None,
    };
    let mut table = gale_pg_sink::db::describe(&base_pool, &mapping)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let avro_schema = apache_avro::Schema::parse_str(VALIDATED_READING.text)?;
    let mut text = String::with_capacity(n * 400);
    let mut days = std::collections::BTreeSet::new();
    for (i, (_, p)) in payloads.iter().enumerate() {
        #[allow(deprecated)]
        let v = apache_avro::from_avro_datum(&avro_schema, &mut &p[5..], None)?;
        gale_pg_sink::rows::append_row(
            &table.columns,
            &v,
            gale_pg_sink::rows::Position {
                partition: 0,
                offset: i as i64,
            },
            &mut text,
        )
        .map_err(|e| anyhow::anyhow!(e.0))?;
        days.insert(
            chrono::DateTime::from_timestamp_millis(readings[i].event_time)
                .expect("time")
                .date_naive(),
        );
    }
    table
        .ensure_partitions(&base_pool, days)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let file = dir.path().join("rows.copy");
    std::fs::write(&file, &text)?;
    let cols = table
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let started = Instant::now();
    {
        let mut conn = base_pool.acquire().await?;
        let mut copy = conn
            .copy_in_raw(&format!("COPY readings ({cols}) FROM STDIN"))
            .await?;
        copy.send(std::fs::read(&file)?).await?;
        copy.finish().await?;
    }
    let copy_secs = started.elapsed().as_secs_f64();
    let sink_rate = n as f64 / sink_secs;
    let copy_rate = n as f64 / copy_secs;

    // ---- archive
    eprintln!("gale-archive");
    let lake = dir.path().join("lake");
    // Files roll on size while records stream in (the age limit is out of
    // reach); once every record is consumed, SIGTERM makes the archive write
    // what it buffers. Time runs from the first record consumed until every
    // record is in a file with its manifest (so no roll timer and no
    // consumer-group leave is measured); CPU over the process's life from
    // the first record on.
    let cfg = archive_config(
        dir.path(),
        &format!("{{ url = \"{}\" }}", lake.display()),
        &[(&topic, "silver/validated")],
        &unique("bench-dlq"),
        "10m",
    );
    let http = format!("127.0.0.1:{}", free_port());
    let child = spawn_stage(
        "gale-archive",
        &http,
        &cfg,
        &stack,
        &[("GALE_PROCESSING__BATCH_SIZE", "5000".into())],
    )?;
    let t1 = first_consumed(&http).await;
    let cpu0 = cpu_seconds(child.id());
    while consumed(&http).await < n as f64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = t1.elapsed().as_secs_f64();
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while manifest_records(&lake) < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the archive did not write everything"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let archive_secs = t1.elapsed().as_secs_f64();
    let (status, total_cpu) = reap(child);
    let archive_cpu = total_cpu - cpu0;
    anyhow::ensure!(status == 0, "gale-archive exited with {status}");
    eprintln!(
        "archive: all consumed after {drained:.2} s, all {n} in {} files after {archive_secs:.2} s",
        count_manifests(&lake)
    );
    // Baseline: a bare consume of the same topic with the same fetch
    // settings, in its own process: what the archive cannot be faster than.
    let (consume_rate, _) = consume_baseline(&stack, &topic, n)?;
    let archive_rate = n as f64 / archive_secs;

    println!(
        "pg-sink rec_per_s={:.0} cpu_us_per_rec={:.1} copy_baseline_rec_per_s={:.0} ratio={:.2}",
        sink_rate,
        sink_cpu * 1e6 / n as f64,
        copy_rate,
        sink_rate / copy_rate
    );
    println!(
        "archive rec_per_s={:.0} cpu_us_per_rec={:.1} consume_baseline_rec_per_s={:.0} ratio={:.2}",
        archive_rate,
        archive_cpu * 1e6 / n as f64,
        consume_rate,
        archive_rate / consume_rate
    );
    if std::env::args().any(|a| a == "--no-queries") {
        return Ok(());
    }

    // ---- dashboard queries on >= 1,000,000 readings (in the baseline database).
    eprintln!("loading readings for the query benchmark");
    let target = 1_000_000usize.max(n);
    let mut loaded = n;
    let mut round = 1i64;
    while loaded < target {
        // The same rows again, shifted by whole days: more history per asset.
        let mut more = String::with_capacity(text.len());
        let mut days = std::collections::BTreeSet::new();
        for (i, r) in readings.iter().enumerate() {
            let mut r = r.clone();
            r.event_id = format!("{}-{round}", r.event_id);
            r.event_time -= round * 86_400_000;
            days.insert(
                chrono::DateTime::from_timestamp_millis(r.event_time)
                    .expect("time")
                    .date_naive(),
            );
            let p = encoder.encode(&r).map_err(anyhow::Error::msg)?;
            #[allow(deprecated)]
            let v = apache_avro::from_avro_datum(&avro_schema, &mut &p[5..], None)?;
            gale_pg_sink::rows::append_row(
                &table.columns,
                &v,
                gale_pg_sink::rows::Position {
                    partition: 0,
                    offset: i as i64,
                },
                &mut more,
            )
            .map_err(|e| anyhow::anyhow!(e.0))?;
        }
        table
            .ensure_partitions(&base_pool, days)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut conn = base_pool.acquire().await?;
        let mut copy = conn
            .copy_in_raw(&format!("COPY readings ({cols}) FROM STDIN"))
            .await?;
        copy.send(more.into_bytes()).await?;
        copy.finish().await?;
        loaded += n;
        round += 1;
    }
    sqlx::query(&format!(
        "INSERT INTO latest_readings ({cols}) SELECT DISTINCT ON (asset_id) {cols} FROM readings ORDER BY asset_id, event_time DESC"
    ))
    .execute(&base_pool)
    .await?;
    sqlx::query("ANALYZE").execute(&base_pool).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&base_pool)
        .await?;
    let asset = &readings[0].asset_id;
    let newest: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(event_time) FROM readings")
            .fetch_one(&base_pool)
            .await?;
    let mut latest_ms = Vec::new();
    let mut day_ms = Vec::new();
    for _ in 0..25 {
        let t = Instant::now();
        let got: Vec<(String, Option<f64>)> =
            sqlx::query_as("SELECT asset_id, power_kw FROM latest_readings ORDER BY asset_id")
                .fetch_all(&base_pool)
                .await?;
        latest_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(!got.is_empty());
        let t = Instant::now();
        let got: Vec<(chrono::DateTime<chrono::Utc>, Option<f64>)> = sqlx::query_as(
            "SELECT event_time, power_kw FROM readings WHERE asset_id = $1 AND event_time > $2 - interval '24 hours' ORDER BY event_time",
        )
        .bind(asset)
        .bind(newest)
        .fetch_all(&base_pool)
        .await?;
        day_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(!got.is_empty());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        v[v.len() / 2]
    };

    println!(
        "pg-query rows={rows} latest_per_asset_ms={:.1} asset_24h_ms={:.1}",
        median(&mut latest_ms),
        median(&mut day_ms)
    );
    Ok(())
}

/// A wind farm's SCADA backfill: `turbines` turbines, `days` of 10-minute
/// readings (four turbines over two years: 420,480 rows), already
/// validated, into Postgres (pg-sink) and into a monthly-partitioned lake
/// table (archive, memory bounded at 64 MiB). Prints the archive's rate
/// against pg-sink's on the same topic, the files it made, its peak memory,
/// and how long DuckDB takes to read the table back.
async fn bench_backfill(turbines: usize, days: usize) -> anyhow::Result<()> {
    use gale_model::{AssetKind, IngestChannel, QualityTier, ScoredReading, VALIDATED_READING};
    let stack = stack();
    let dir = tempfile::tempdir()?;
    let slots = days * 144;
    let n = slots * turbines;
    eprintln!("backfill: {turbines} turbines x {days} days of 10-minute data = {n} readings");
    let t0 = 1_640_995_200_000i64; // 2022-01-01T00:00:00Z
    let namespace = uuid::Uuid::from_u128(0x6761_6c65_6261_636b_6669_6c6c_0000_0001);
    let topic = unique("bench-backfill");
    create_topics(&stack.bootstrap, &[&topic], 3).await;
    let encoder = registry(&stack).register(&topic, VALIDATED_READING).await?;
    let mut payloads = Vec::with_capacity(n);
    for slot in 0..slots {
        for t in 0..turbines {
            let at = t0 + slot as i64 * 600_000;
            let wind = 3.0 + ((slot * 7 + t * 13) % 120) as f64 / 10.0;
            let r = ScoredReading {
                site_id: Some("farm-a".into()),
                received_time: at + 60_000,
                validated_time: at + 61_000,
                source: "scada-export".into(),
                channel: IngestChannel::File,
                wind_speed_ms: Some(wind),
                power_kw: Some((wind * wind * 18.0).min(2000.0)),
                rotor_speed_rpm: Some(wind * 1.3),
                nacelle_temperature_c: Some(15.0 + (slot % 50) as f64 / 10.0),
                gearbox_temperature_c: Some(55.0 + (slot % 90) as f64 / 10.0),
                quality_score: 100,
                quality_tier: QualityTier::Premium,
                ..ScoredReading::new(
                    uuid::Uuid::new_v5(&namespace, format!("{t}-{slot}").as_bytes()).to_string(),
                    format!("WTG-{t:02}"),
                    AssetKind::Turbine,
                    at,
                )
            };
            payloads.push((
                r.asset_id.clone(),
                encoder.encode(&r).map_err(anyhow::Error::msg)?,
            ));
        }
    }
    eprintln!("preloading them");
    preload(&stack, &topic, &payloads).await?;

    // ---- pg-sink on the same topic
    let db = TestDatabase::create(&stack).await;
    let cfg = pg_sink_config(
        dir.path(),
        &db.url,
        &[(&topic, "readings", true)],
        &unique("bench-dlq"),
    );
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_stage(
        "gale-pg-sink",
        &http,
        &cfg,
        &stack,
        &[("GALE_PROCESSING__BATCH_SIZE", "5000".into())],
    )?;
    let t1 = first_consumed(&http).await;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    loop {
        let c: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        if c as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pg_rate = n as f64 / t1.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();

    // ---- archive
    let lake = dir.path().join("lake");
    let cfg = dir.path().join("archive-backfill.toml");
    std::fs::write(
        &cfg,
        format!(
            "[archive]\nstore = {{ url = \"{}\" }}\nmax_file_age = \"10m\"\n\
             max_file_bytes = 33554432\nmax_buffer_bytes = 67108864\ndead_letter = \"{}\"\n\n\
             [[archive.tables]]\ntopic = \"{topic}\"\npath = \"silver/backfill\"\npartitioning = \"month\"\n",
            lake.display(),
            unique("bench-dlq")
        ),
    )?;
    let http = format!("127.0.0.1:{}", free_port());
    let child = spawn_stage(
        "gale-archive",
        &http,
        &cfg,
        &stack,
        &[("GALE_PROCESSING__BATCH_SIZE", "5000".into())],
    )?;
    let pid = child.id();
    let t1 = first_consumed(&http).await;
    let cpu0 = cpu_seconds(pid);
    let mut peak = 0f64;
    while consumed(&http).await < n as f64 {
        peak = peak.max(peak_rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while manifest_records(&lake) < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the archive did not write everything"
        );
        peak = peak.max(peak_rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let archive_secs = t1.elapsed().as_secs_f64();
    peak = peak.max(peak_rss_mib(pid));
    let (status, total_cpu) = reap(child);
    anyhow::ensure!(status == 0, "gale-archive exited with {status}");
    let files = count_manifests(&lake);
    let archive_rate = n as f64 / archive_secs;

    // ---- reading it back
    let query_ms = match std::env::var("GALE_PYTHON") {
        Ok(python) => {
            let table = lake.join("silver/backfill");
            let script = format!(
                "import duckdb, time\nc = duckdb.connect()\nt = time.time()\n\
                 r = c.execute(\"SELECT count(*), count(DISTINCT event_id), avg(power_kw) FROM read_parquet('{}/**/*.parquet', hive_partitioning = true)\").fetchone()\n\
                 print(r[0], r[1], round((time.time() - t) * 1000))",
                table.display()
            );
            let out = Command::new(python).args(["-c", &script]).output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let parts: Vec<f64> = text
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            anyhow::ensure!(
                parts.len() == 3 && parts[0] as usize == n && parts[1] as usize == n,
                "DuckDB reads every reading once: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            parts[2]
        }
        Err(_) => f64::NAN,
    };
    println!(
        "archive-backfill rows={n} rec_per_s={:.0} cpu_us_per_rec={:.1} files={files} peak_rss_mib={peak:.0} pg_sink_rec_per_s={pg_rate:.0} ratio={:.2} duckdb_query_ms={query_ms:.0}",
        archive_rate,
        (total_cpu - cpu0) * 1e6 / n as f64,
        archive_rate / pg_rate
    );
    Ok(())
}

/// The baseline pass-through over `input`, measured on `output`.
async fn baseline(stack: &Stack, input: &str, n: usize) -> anyhow::Result<Measured> {
    let out = unique("bench-passthrough");
    create_topics(&stack.bootstrap, &[&out], 3).await;
    let child = Command::new(std::env::current_exe()?)
        .args([
            "passthrough",
            "--bootstrap",
            &stack.bootstrap,
            "--input",
            input,
            "--output",
            &out,
            "--group",
            &unique("bench-pt"),
            "--count",
            &n.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()?;
    Ok(run_measured(stack, child, &[&out], n).await)
}

/// Preloads `values` (key, value) encoded with `schema` into `topic`.
async fn preload_values<T: gale_runtime::binary::AvroRecord + 'static>(
    stack: &Stack,
    topic: &str,
    schema: gale_runtime::schema::SchemaFile,
    values: &[(String, T)],
) -> anyhow::Result<()> {
    let encoder = registry(stack).register(topic, schema).await?;
    let payloads: Vec<(String, Vec<u8>)> = values
        .iter()
        .map(|(k, v)| Ok((k.clone(), encoder.encode(v).map_err(anyhow::Error::msg)?)))
        .collect::<anyhow::Result<_>>()?;
    preload(stack, topic, &payloads).await
}

/// enrich against the plain pass-through, with the registry of the
/// simulated fleet (every turbine with a model and power curve) in Postgres.
async fn bench_enrich(n: usize) -> anyhow::Result<()> {
    use gale_model::VALIDATED_READING;
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let dir = tempfile::tempdir()?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    gale_pg_sink::db::migrate(&pool).await?;
    let files = gale_cli::fleet_registry::write(&Fleet::generate(200, 800, 11), dir.path())?;
    let out = Command::new(bin("gale"))
        .args(["assets", "import"])
        .args(&files)
        .env("DATABASE_URL", &db.url)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let input = unique("bench-validated");
    let (enriched, dlq) = (unique("bench-enriched"), unique("bench-dlq"));
    create_topics(&stack.bootstrap, &[&input, &enriched, &dlq], 3).await;
    eprintln!("preloading {n} validated readings");
    let readings: Vec<(String, gale_model::ScoredReading)> = scored_readings(n)
        .into_iter()
        .map(|r| (r.asset_id.clone(), r))
        .collect();
    preload_values(&stack, &input, VALIDATED_READING, &readings).await?;
    eprintln!("baseline: plain consume -> produce of the same bytes");
    let base = baseline(&stack, &input, n).await?;
    eprintln!("gale-enrich");
    let log = log_dir().join("bench-enrich.log");
    let child = Command::new(bin("gale-enrich"))
        .envs([
            ("GALE_KAFKA__BOOTSTRAP_SERVERS", stack.bootstrap.clone()),
            ("GALE_REGISTRY__URL", stack.registry_url.clone()),
            ("GALE_HTTP__LISTEN", format!("127.0.0.1:{}", free_port())),
            ("GALE_TOPICS__INPUT", input.clone()),
            ("GALE_TOPICS__OUTPUT", enriched.clone()),
            ("GALE_TOPICS__DEAD_LETTER", dlq.clone()),
            ("GALE_KAFKA__GROUP_ID", unique("bench-enrich")),
            ("GALE_ASSETS__URL", db.url.clone()),
            ("RUST_LOG", "warn".into()),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let enrich = run_measured(&stack, child, &[&enriched, &dlq], n).await;
    println!(
        "passthrough rec_per_s={:.0} cpu_us_per_rec={:.1}",
        base.rec_per_s, base.cpu_us_per_rec
    );
    println!(
        "enrich rec_per_s={:.0} cpu_us_per_rec={:.1} passthrough_rec_per_s={:.0} ratio={:.2}",
        enrich.rec_per_s,
        enrich.cpu_us_per_rec,
        base.rec_per_s,
        enrich.rec_per_s / base.rec_per_s
    );
    Ok(())
}

/// Enriched readings of `assets` assets (half turbines, half meters), ten
/// minutes apart per asset, with a gearbox episode now and then.
fn enriched_readings(n: usize, assets: usize) -> Vec<(String, gale_model::EnrichedReading)> {
    use gale_model::{AssetKind, EnrichedReading, QualityTier, ScoredReading};
    let t0 = chrono::Utc::now().timestamp_millis() - 30 * 86_400_000;
    (0..n)
        .map(|i| {
            let a = i % assets;
            let round = (i / assets) as i64;
            let t = t0 + round * 600_000;
            let turbine = a < assets / 2;
            let id = if turbine {
                format!("WT-{a:05}")
            } else {
                format!("MTR-{a:05}")
            };
            let kind = if turbine {
                AssetKind::Turbine
            } else {
                AssetKind::Meter
            };
            let mut r = ScoredReading::new(format!("{id}-{round}"), id.clone(), kind, t);
            r.interval_ms = Some(600_000);
            r.quality_score = 100;
            r.quality_tier = QualityTier::Premium;
            let wobble = ((i * 7919) % 100) as f64 / 100.0;
            if turbine {
                r.wind_speed_ms = Some(8.0 + wobble);
                r.power_kw = Some(900.0 + 100.0 * wobble);
                r.rotor_speed_rpm = Some(14.0);
                r.gearbox_temperature_c = Some(if a % 50 == 0 && round % 20 < 2 {
                    85.0
                } else {
                    60.0 + wobble
                });
                r.vibration_ms2 = Some(0.8 + wobble / 2.0);
                r.oil_pressure_bar = Some(45.0);
            } else {
                r.power_kw = Some(1.0 + 3.0 * wobble);
            }
            let mut e = EnrichedReading::bare(r);
            if turbine {
                e.expected_power_kw = Some(1_000.0);
                e.rated_power_kw = Some(2_000.0);
                e.cut_in_wind_speed_ms = Some(3.0);
            }
            (id, e)
        })
        .collect()
}

/// detect-faults (state persistence on) against the plain pass-through,
/// then the time to restore the state of `assets` assets.
async fn bench_detect(n: usize, assets: usize) -> anyhow::Result<()> {
    use gale_model::ENRICHED_READING;
    let stack = stack();
    let input = unique("bench-enriched");
    let (checked, faults, quarantine, dlq) = (
        unique("bench-checked"),
        unique("bench-faults"),
        unique("bench-quarantine"),
        unique("bench-dlq"),
    );
    create_topics(
        &stack.bootstrap,
        &[&input, &checked, &faults, &quarantine, &dlq],
        3,
    )
    .await;
    eprintln!("preloading {n} enriched readings of {assets} assets");
    preload_values(
        &stack,
        &input,
        ENRICHED_READING,
        &enriched_readings(n, assets),
    )
    .await?;
    eprintln!("baseline: plain consume -> produce of the same bytes");
    let base = baseline(&stack, &input, n).await?;
    let group = unique("bench-detect");
    let env = |http: &str| {
        vec![
            ("GALE_KAFKA__BOOTSTRAP_SERVERS", stack.bootstrap.clone()),
            ("GALE_REGISTRY__URL", stack.registry_url.clone()),
            ("GALE_HTTP__LISTEN", http.to_string()),
            ("GALE_TOPICS__INPUT", input.clone()),
            ("GALE_TOPICS__CHECKED", checked.clone()),
            ("GALE_TOPICS__FAULTS", faults.clone()),
            ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
            ("GALE_TOPICS__DEAD_LETTER", dlq.clone()),
            ("GALE_KAFKA__GROUP_ID", group.clone()),
            ("RUST_LOG", "warn".into()),
        ]
    };
    eprintln!("gale-detect-faults");
    let child = Command::new(bin("gale-detect-faults"))
        .envs(env(&format!("127.0.0.1:{}", free_port())))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            log_dir().join("bench-detect-faults.log"),
        )?)
        .spawn()?;
    // Stopped with SIGTERM once measured: it commits and leaves the group,
    // so the restore below starts at once (a SIGKILLed member would hold its
    // partitions until its session times out).
    let pid = child.id();
    let detect = run_measured_then(&stack, child, &[&checked], n, |c| {
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let _ = c.wait();
    })
    .await;

    // Partitions are restored when their first record arrives: a few new
    // readings on every partition bring all three back.
    let more: Vec<(String, gale_model::EnrichedReading)> = enriched_readings(n + 300, assets)
        .into_iter()
        .skip(n)
        .collect();
    preload_values(&stack, &input, ENRICHED_READING, &more).await?;
    eprintln!("restoring the state of {assets} assets");
    let (restore_s, keys) =
        measure_restore("gale-detect-faults", env, "bench-detect-faults-restore.log").await?;
    println!(
        "passthrough rec_per_s={:.0} cpu_us_per_rec={:.1}",
        base.rec_per_s, base.cpu_us_per_rec
    );
    println!(
        "detect-faults rec_per_s={:.0} cpu_us_per_rec={:.1} passthrough_rec_per_s={:.0} ratio={:.2} state_restore_s={:.2} state_keys={:.0}",
        detect.rec_per_s,
        detect.cpu_us_per_rec,
        base.rec_per_s,
        detect.rec_per_s / base.rec_per_s,
        restore_s,
        keys
    );
    Ok(())
}

/// Starts `binary` with the environment `env` gives for its HTTP address,
/// waits until every one of the three input partitions has restored its
/// state (from `/metrics`), and returns the summed restore seconds and
/// keys; the process is then killed.
async fn measure_restore<E>(
    binary: &str,
    env: impl Fn(&str) -> E,
    log: &str,
) -> anyhow::Result<(f64, f64)>
where
    E: IntoIterator<Item = (&'static str, String)>,
{
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(bin(binary))
        .envs(env(&http))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log_dir().join(log))?)
        .spawn()?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let result = loop {
        if started.elapsed() >= Duration::from_secs(300) {
            break Err(anyhow::anyhow!("{binary}: no restore in 5 minutes"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(r) = client.get(format!("http://{http}/metrics")).send().await else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        let per: Vec<(f64, f64)> = (0..3)
            .filter_map(|p| {
                Some((
                    metric_value(
                        &text,
                        &format!("gale_state_restore_seconds{{partition=\"{p}\"}}"),
                    )?,
                    metric_value(&text, &format!("gale_state_keys{{partition=\"{p}\"}}"))?,
                ))
            })
            .collect();
        if per.len() == 3 {
            break Ok((
                per.iter().map(|p| p.0).sum::<f64>(),
                per.iter().map(|p| p.1).sum::<f64>(),
            ));
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}
