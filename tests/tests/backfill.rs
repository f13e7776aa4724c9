//! `gale backfill` brings a time range of the lake back onto a topic.
//!
//! The archive writes two simulated days of raw readings (with the
//! simulator's gaps and duplicates) to the bronze table
//! of a directory lake and of an S3 lake (moto). From each, a backfill of a
//! 24-hour range that cuts across partitions publishes exactly the readings
//! of that range, each equal to the original record (same event id, same
//! fields), keyed by asset; run again it publishes nothing. A backfill
//! killed half-way resumes from its checkpoint and ends with every reading.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gale_model::{RawReading, RAW_READING};
use gale_tests::*;
use rdkafka::message::Message;

const FROM: &str = "2025-03-01T06:00:00Z";
const TO: &str = "2025-03-02T06:00:00Z";
const ASSETS: i64 = 6;

/// The lake arguments and environment of `gale` for a store.
struct Lake {
    store: String,
    options: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
}

impl Lake {
    fn location(&self) -> gale_runtime::storage::Location {
        gale_runtime::storage::open(
            &gale_runtime::storage::StoreConfig {
                url: self.store.clone(),
                options: self
                    .options
                    .iter()
                    .map(|o| o.split_once('=').unwrap())
                    .chain(if self.env.is_empty() {
                        vec![]
                    } else {
                        vec![
                            ("aws_access_key_id", "gale-test"),
                            ("aws_secret_access_key", "gale-test-secret"),
                        ]
                    })
                    .map(|(k, v)| (k.to_string(), gale_runtime::config::Secret::new(v)))
                    .collect(),
                slow_writes: None,
            },
            "test",
        )
        .unwrap()
    }

    fn backfill(&self, stack: &Stack, topic: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin("gale"));
        cmd.args(["backfill", "--store", &self.store])
            .args(self.options.iter().flat_map(|o| ["--option", o.as_str()]))
            .args([
                "--table",
                "bronze/raw_readings",
                "--topic",
                topic,
                "--from",
                FROM,
                "--to",
                TO,
                "--bootstrap",
                &stack.bootstrap,
                "--registry-url",
                &stack.registry_url,
                "--quiet",
            ])
            .args(extra)
            .envs(self.env.iter().copied());
        cmd
    }

    fn run(&self, stack: &Stack, topic: &str, extra: &[&str]) -> String {
        let out = self.backfill(stack, topic, extra).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "gale backfill: {text}");
        text
    }
}

async fn start_archive(
    stack: &Stack,
    dir: &Path,
    store: &str,
    raw: &str,
    label: &str,
) -> ServiceProcess {
    let sub = dir.join(label);
    std::fs::create_dir_all(&sub).unwrap();
    let cfg = archive_config(
        &sub,
        store,
        &[(raw, "bronze/raw_readings")],
        &unique("dlq"),
        "1s",
    );
    // Daily files: a few objects per lake instead of one per hour and partition.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}partitioning = \"day\"\n")).unwrap();
    let mut env = service_env(stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", unique("archive")));
    let env: Vec<(&str, String)> = env
        .into_iter()
        .chain(S3_ENV.iter().map(|(k, v)| (*k, v.to_string())))
        .collect();
    let archive = ServiceProcess::start(
        "gale-archive",
        &env,
        &["--config", cfg.to_str().unwrap()],
        label,
    );
    archive.wait_ready(Duration::from_secs(60)).await;
    archive
}

async fn decoded(stack: &Stack, topic: &str, n: usize) -> Vec<(String, RawReading)> {
    let mut decoder = registry(stack).decoder::<RawReading>(RAW_READING).unwrap();
    let mut out = Vec::new();
    let reader = TopicReader::new(&stack.bootstrap, topic);
    for m in reader.read(n, Duration::from_secs(60)) {
        let key = String::from_utf8_lossy(m.key().unwrap()).into_owned();
        out.push((key, decoder.decode(m.payload().unwrap()).await.unwrap()));
    }
    // Nothing beyond `n`.
    assert!(reader.poll_for(Duration::from_millis(500)).is_empty());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_publishes_a_range_once_from_a_directory_and_s3() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start().await;
    let bucket = moto.bucket.clone();
    let raw = unique("raw");
    create_topics(&stack.bootstrap, &[&raw], 2).await;

    // Two days of three turbines and three meters, no faults, no gaps.
    let out = Command::new(bin("gale"))
        .args([
            "simulate",
            "--bootstrap",
            &stack.bootstrap,
            "--registry-url",
            &stack.registry_url,
            "--topic",
            &raw,
            "--turbines",
            "3",
            "--meters",
            "3",
            "--start",
            "2025-03-01T00:00:00Z",
            "--interval",
            "10m",
            "--count",
            &(ASSETS * 288).to_string(),
            "--faults",
            "none",
            "--interval-declared",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The data-quality scenarios leave some readings out and send some twice.
    let sent = record_count(&stack.bootstrap, &raw) as usize;
    let originals: BTreeMap<String, RawReading> = decoded(&stack, &raw, sent)
        .await
        .into_iter()
        .map(|(_, r)| (r.event_id.clone(), r))
        .collect();
    let (from, to) = (
        chrono::DateTime::parse_from_rfc3339(FROM)
            .unwrap()
            .timestamp_millis(),
        chrono::DateTime::parse_from_rfc3339(TO)
            .unwrap()
            .timestamp_millis(),
    );
    let in_range: BTreeMap<&String, &RawReading> = originals
        .iter()
        .filter(|(_, r)| r.event_time >= from && r.event_time < to)
        .collect();
    assert!(in_range.len() as i64 > ASSETS * 130, "{}", in_range.len());

    let lake_dir = dir.path().join("lake");
    let lakes = [
        Lake {
            store: lake_dir.display().to_string(),
            options: vec![],
            env: vec![],
        },
        Lake {
            store: format!("s3://{bucket}/lake"),
            options: vec![
                format!("aws_endpoint={}", moto.endpoint),
                "aws_allow_http=true".into(),
                "aws_region=us-east-1".into(),
            ],
            env: S3_ENV.to_vec(),
        },
    ];
    let stores = [
        format!("{{ url = \"{}\" }}", lake_dir.display()),
        format!(
            "{{ url = \"s3://{bucket}/lake\", options = {{ aws_endpoint = \"{}\", aws_allow_http = \"true\", aws_region = \"us-east-1\" }} }}",
            moto.endpoint
        ),
    ];
    let mut archives = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        archives.push(
            start_archive(
                &stack,
                dir.path(),
                store,
                &raw,
                &format!("backfill-archive-{i}"),
            )
            .await,
        );
    }
    let distinct = originals.len();
    for lake in &lakes {
        let location = lake.location();
        wait_for("every reading in the lake", Duration::from_secs(90), || {
            let location = &location;
            async move {
                let files = gale_archive::snapshot::live_files(location, "bronze/raw_readings")
                    .await
                    .ok()?;
                let rows: usize = files.iter().map(|f| f.records).sum();
                (rows == distinct).then_some(())
            }
        })
        .await;
    }
    for mut a in archives {
        a.terminate(Duration::from_secs(30));
    }

    for (i, lake) in lakes.iter().enumerate() {
        let target = unique("raw-backfilled");
        create_topics(&stack.bootstrap, &[&target], 2).await;
        let first = lake.run(&stack, &target, &["--rate", "0"]);
        assert!(
            first.contains(&format!("published {} record(s)", in_range.len())),
            "lake {i}: {first}"
        );
        let back = decoded(&stack, &target, in_range.len()).await;
        let mut seen = BTreeMap::new();
        for (key, r) in &back {
            assert_eq!(key, &r.asset_id, "keyed by asset");
            let original = in_range
                .get(&r.event_id)
                .unwrap_or_else(|| panic!("lake {i}: {} was not in the range", r.event_id));
            assert_eq!(*original, r, "lake {i}: a backfilled reading differs");
            *seen.entry(r.event_id.clone()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), in_range.len(), "lake {i}: every reading once");
        // Twice: nothing more.
        let second = lake.run(&stack, &target, &["--rate", "0"]);
        assert!(
            second.contains("published 0 record(s)"),
            "lake {i}: {second}"
        );
        assert_eq!(
            record_count(&stack.bootstrap, &target),
            in_range.len() as i64
        );
    }

    // Killed half-way, then resumed from the checkpoint.
    let lake = &lakes[0];
    let target = unique("raw-resumed");
    create_topics(&stack.bootstrap, &[&target], 2).await;
    let mut child = lake
        .backfill(&stack, &target, &["--rate", "150"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let third = in_range.len() as i64 / 3;
    wait_for("part of the backfill", Duration::from_secs(60), || {
        let n = record_count(&stack.bootstrap, &target);
        async move { (n >= third).then_some(()) }
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let before = record_count(&stack.bootstrap, &target);
    assert!(before < in_range.len() as i64, "killed before the end");
    let resumed = lake.run(&stack, &target, &["--rate", "0"]);
    let done_earlier: usize = resumed
        .split("; ")
        .find_map(|p| p.strip_suffix(" file(s) done by an earlier run"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{resumed}"));
    assert!(
        done_earlier > 0,
        "the resumed run skipped finished files: {resumed}"
    );
    let total = record_count(&stack.bootstrap, &target) as usize;
    let back = decoded(&stack, &target, total).await;
    let distinct: std::collections::BTreeSet<&String> =
        back.iter().map(|(_, r)| &r.event_id).collect();
    assert_eq!(
        distinct.len(),
        in_range.len(),
        "every reading after the resume"
    );
    // At most what was sent since the last checkpoint (a second, or 1,000 records) goes again.
    assert!(
        total - in_range.len() <= 300,
        "{} records sent twice",
        total - in_range.len()
    );
}

/// A validated reading with a flag list and attributes (lists of records and
/// maps in the Parquet files).
fn scored(i: usize, t0: i64) -> gale_model::ScoredReading {
    use gale_model::{AssetKind, FlagCode, IngestChannel, QualityFlag, QualityTier, ScoredReading};
    ScoredReading {
        site_id: Some("farm-a".into()),
        received_time: t0,
        validated_time: t0 + 5,
        source: "backfill-test".into(),
        channel: IngestChannel::Unknown,
        wind_speed_ms: Some(9.0 + i as f64 / 10.0),
        power_kw: Some(i as f64),
        quality_score: 95,
        quality_tier: QualityTier::Premium,
        flags: vec![QualityFlag {
            code: FlagCode::UnitConverted,
            metric: None,
            deduction: 5,
            quarantine: false,
            detail: format!("kW from W ({i})"),
        }],
        attributes: [("feeder".to_string(), format!("F{}", i % 3))].into(),
        ..ScoredReading::new(
            format!("silver-{i:06}"),
            format!("T-{}", i % 5),
            AssetKind::Turbine,
            t0 + i as i64 * 600_000,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_silver_validated_readings_gives_the_same_records() {
    use gale_model::{ScoredReading, VALIDATED_READING};
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let validated = unique("validated");
    create_topics(&stack.bootstrap, &[&validated], 2).await;
    let t0 = chrono::DateTime::parse_from_rfc3339("2025-03-01T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    let encoder = registry(&stack)
        .register(&validated, VALIDATED_READING)
        .await
        .unwrap();
    let producer = producer(&stack.bootstrap);
    let originals: Vec<ScoredReading> = (0..300).map(|i| scored(i, t0)).collect();
    for r in &originals {
        send(
            &producer,
            &validated,
            &r.asset_id,
            &encoder.encode(r).unwrap(),
        )
        .await;
    }
    let lake_dir = dir.path().join("lake");
    let store = format!("{{ url = \"{}\" }}", lake_dir.display());
    let sub = dir.path().join("archive");
    std::fs::create_dir_all(&sub).unwrap();
    let cfg = archive_config(
        &sub,
        &store,
        &[(&validated, "silver/validated_readings")],
        &unique("dlq"),
        "1s",
    );
    let mut env = service_env(&stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", unique("archive")));
    let mut archive = ServiceProcess::start(
        "gale-archive",
        &env,
        &["--config", cfg.to_str().unwrap()],
        "backfill-silver-archive",
    );
    archive.wait_ready(Duration::from_secs(60)).await;
    let lake = Lake {
        store: lake_dir.display().to_string(),
        options: vec![],
        env: vec![],
    };
    let location = lake.location();
    wait_for("the readings in the lake", Duration::from_secs(60), || {
        let location = &location;
        async move {
            let files = gale_archive::snapshot::live_files(location, "silver/validated_readings")
                .await
                .ok()?;
            (files.iter().map(|f| f.records).sum::<usize>() == 300).then_some(())
        }
    })
    .await;
    archive.terminate(Duration::from_secs(30));

    let target = unique("validated-backfilled");
    create_topics(&stack.bootstrap, &[&target], 2).await;
    let out = Command::new(bin("gale"))
        .args(["backfill", "--store", &lake.store])
        .args([
            "--table",
            "silver/validated_readings",
            "--topic",
            &target,
            "--from",
            "2025-03-01",
            "--to",
            "2025-03-04",
            "--rate",
            "0",
            "--bootstrap",
            &stack.bootstrap,
            "--registry-url",
            &stack.registry_url,
            "--quiet",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("published 300 record(s)"), "{text}");
    let mut decoder = registry(&stack)
        .decoder::<ScoredReading>(VALIDATED_READING)
        .unwrap();
    let mut back = BTreeMap::new();
    for m in TopicReader::new(&stack.bootstrap, &target).read(300, Duration::from_secs(30)) {
        let r = decoder.decode(m.payload().unwrap()).await.unwrap();
        assert_eq!(m.key(), Some(r.asset_id.as_bytes()));
        back.insert(r.event_id.clone(), r);
    }
    for r in &originals {
        assert_eq!(
            back.get(&r.event_id),
            Some(r),
            "a backfilled reading differs"
        );
    }
}
