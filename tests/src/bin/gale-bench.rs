//! `gale-bench`: throughput of Gale's stages against a baseline measured in
//! the same run, on the same broker (see docs/performance.md).
//!
//! `gale-bench validate` preloads simulated raw readings, then runs (1) a
//! plain consume → produce of the same bytes (`gale-bench passthrough`, the
//! baseline) and (2) `gale-validate`, each as its own process, and prints
//! records/s (from the first to the last output record's broker timestamp)
//! and CPU µs per record (from /proc) for both.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gale_cli::simulate::{Fleet, Generator};
use gale_ingest::mapping::{SourceConfig, SourceMapping};
use gale_ingest::parse::object_fields;
use gale_runtime::schema::{IngestChannel, RAW_READING};
use gale_tests::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

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
            eprintln!("usage: gale-bench validate [--records N] | passthrough --bootstrap B --input T --output T --group G --count N");
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
    mut child: std::process::Child,
    outputs: &[&str],
    n: usize,
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
    let _ = child.kill();
    let _ = child.wait();
    let secs = ((last - first).max(1)) as f64 / 1000.0;
    Measured {
        rec_per_s: count as f64 / secs,
        cpu_us_per_rec: cpu * 1e6 / n as f64,
    }
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
