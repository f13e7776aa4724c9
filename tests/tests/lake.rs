//! The lake on both kinds of store: the archive writes to a real
//! S3-compatible server (moto) and to a directory; pyarrow and DuckDB read
//! the tables with Hive partitioning; `gale lake compact` merges closed
//! partitions on both, and on a directory no reader ever sees the old files
//! and the merged one together.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gale_runtime::schema::{
    AssetKind, IngestChannel, QualityTier, ScoredReading, VALIDATED_READING,
};
use gale_tests::*;

fn reading(i: usize, t0: i64) -> ScoredReading {
    ScoredReading {
        event_id: format!("lake-{i:06}"),
        asset_id: format!("T-{}", i % 7),
        asset_kind: AssetKind::Turbine,
        site_id: Some("farm-a".into()),
        event_time: t0 + (i as i64 % 3) * 3_600_000 + i as i64,
        received_time: t0,
        validated_time: t0,
        source: "lake-test".into(),
        channel: IngestChannel::Unknown,
        wind_speed_ms: Some(9.0),
        wind_direction_deg: None,
        rotor_speed_rpm: None,
        power_kw: Some(i as f64),
        energy_kwh: None,
        nacelle_temperature_c: None,
        gearbox_temperature_c: None,
        generator_temperature_c: None,
        vibration_ms2: None,
        oil_pressure_bar: None,
        brake_pressure_bar: None,
        pitch_angle_deg: None,
        yaw_angle_deg: None,
        tower_lean_deg: None,
        latitude_deg: None,
        longitude_deg: None,
        quality_score: 100,
        quality_tier: QualityTier::Premium,
        flags: vec![],
        attributes: Default::default(),
    }
}

/// Writes `waves` waves of `per_wave` readings, pausing longer than the
/// archive's max file age between waves so each partition gets several files.
async fn feed_waves(stack: &Stack, topic: &str, waves: usize, per_wave: usize, t0: i64) {
    let encoder = registry(stack)
        .register(topic, VALIDATED_READING)
        .await
        .unwrap();
    let producer = producer(&stack.bootstrap);
    for w in 0..waves {
        for i in w * per_wave..(w + 1) * per_wave {
            let r = reading(i, t0);
            send(&producer, topic, &r.asset_id, &encoder.encode(&r).unwrap()).await;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
}

struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let python = PathBuf::from(python());
        let server = python.parent().unwrap().join("moto_server");
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log_dir().join(format!("moto-{port}.log"))).unwrap())
            .spawn()
            .expect("moto_server (scripts/requirements.txt)");
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const S3_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "gale-test"),
    ("AWS_SECRET_ACCESS_KEY", "gale-test-secret"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
];

fn gale(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(bin("gale"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gale {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_to_s3_read_by_pyarrow_and_compacted() {
    let stack = stack();
    let moto = Moto::start();
    let bucket = unique("lake");
    let client = reqwest::Client::new();
    wait_for("moto to create the bucket", Duration::from_secs(30), || {
        let client = client.clone();
        let url = format!("{}/{bucket}", moto.endpoint);
        async move {
            client
                .put(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let validated = unique("validated");
    create_topics(&stack.bootstrap, &[&validated], 3).await;
    let store = format!(
        "{{ url = \"s3://{bucket}/lake\", options = {{ aws_endpoint = \"{}\", aws_allow_http = \"true\", aws_region = \"us-east-1\", aws_access_key_id = \"gale-test\", aws_secret_access_key = \"gale-test-secret\" }} }}",
        moto.endpoint
    );
    let cfg = archive_config(
        dir.path(),
        &store,
        &[(&validated, "silver/validated")],
        &unique("dlq"),
        "1s",
    );
    let mut env = service_env(&stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", unique("archive")));
    let mut archive = ServiceProcess::start(
        "gale-archive",
        &env,
        &["--config", cfg.to_str().unwrap()],
        "s3-archive",
    );
    archive.wait_ready(Duration::from_secs(60)).await;

    let (waves, per_wave) = (3, 300);
    let total = (waves * per_wave) as i64;
    let t0 = chrono::Utc::now().timestamp_millis() - 8 * 3_600_000;
    feed_waves(&stack, &validated, waves, per_wave, t0).await;
    let table = format!("s3://{bucket}/lake/silver/validated");
    let before = wait_for("every reading in S3", Duration::from_secs(60), || {
        let table = table.clone();
        let endpoint = moto.endpoint.clone();
        async move {
            let s = lake_stats(&table, Some(&endpoint), &S3_ENV)?;
            (s.rows >= total).then_some(s)
        }
    })
    .await;
    assert_eq!((before.rows, before.distinct_event_ids), (total, total));
    let expected_power: f64 = (0..total).map(|i| i as f64).sum();
    assert_eq!(before.sum_power_kw, Some(expected_power));
    assert!(
        before.files > before.partitions.len() as i64,
        "several files per partition before compaction ({} files, {} partitions)",
        before.files,
        before.partitions.len()
    );
    assert_eq!(archive.terminate(Duration::from_secs(30)), Some(0));

    let output = gale(
        &[
            "lake",
            "compact",
            "--store",
            &format!("s3://{bucket}/lake"),
            "--option",
            &format!("aws_endpoint={}", moto.endpoint),
            "--option",
            "aws_allow_http=true",
            "--table",
            "silver/validated",
            "--older-than",
            "0s",
        ],
        &S3_ENV,
    );
    assert!(output.contains("compacted"), "{output}");
    let after = lake_stats(&table, Some(&moto.endpoint), &S3_ENV).unwrap();
    assert_eq!(
        (after.rows, after.distinct_event_ids, after.sum_power_kw),
        (total, total, Some(expected_power))
    );
    assert_eq!(
        after.files,
        after.partitions.len() as i64,
        "one file per partition after compaction"
    );
    // Running it again finds nothing to do.
    let again = gale(
        &[
            "lake",
            "compact",
            "--store",
            &format!("s3://{bucket}/lake"),
            "--option",
            &format!("aws_endpoint={}", moto.endpoint),
            "--option",
            "aws_allow_http=true",
            "--table",
            "silver/validated",
            "--older-than",
            "0s",
        ],
        &S3_ENV,
    );
    assert!(again.contains("0 partition(s)"), "{again}");
}

fn parquet_rows(dir: &Path) -> Option<usize> {
    // One observation of a partition directory: list, then read every file.
    let mut rows = 0;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "parquet") {
            let bytes = std::fs::read(&p).ok()?;
            let (_, batches) = gale_archive::parquet_io::decode(bytes.into()).ok()?;
            rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
        }
    }
    Some(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_compaction_is_atomic_for_readers() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let validated = unique("validated");
    create_topics(&stack.bootstrap, &[&validated], 3).await;
    let cfg = archive_config(
        dir.path(),
        &format!("{{ url = \"{}\" }}", lake.display()),
        &[(&validated, "silver/validated")],
        &unique("dlq"),
        "1s",
    );
    let mut env = service_env(&stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", unique("archive")));
    let mut archive = ServiceProcess::start(
        "gale-archive",
        &env,
        &["--config", cfg.to_str().unwrap()],
        "local-archive",
    );
    archive.wait_ready(Duration::from_secs(60)).await;
    let (waves, per_wave) = (4, 300);
    let total = (waves * per_wave) as i64;
    let t0 = chrono::Utc::now().timestamp_millis() - 8 * 3_600_000;
    feed_waves(&stack, &validated, waves, per_wave, t0).await;
    let table = lake.join("silver/validated");
    let before = wait_for("every reading in the lake", Duration::from_secs(60), || {
        let table = table.clone();
        async move {
            let s = lake_stats(table.to_str().unwrap(), None, &[])?;
            (s.rows >= total).then_some(s)
        }
    })
    .await;
    assert_eq!(archive.terminate(Duration::from_secs(30)), Some(0));
    assert!(before.files > before.partitions.len() as i64);

    // Readers hammer every partition directory while compaction runs: each
    // look must see the partition's full row count, not double, not less.
    let mut expected = std::collections::BTreeMap::new();
    let mut dirs = Vec::new();
    for date in std::fs::read_dir(&table)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("date="))
    {
        for hour in std::fs::read_dir(date.path()).unwrap().flatten() {
            expected.insert(hour.path(), parquet_rows(&hour.path()).unwrap());
            dirs.push(hour.path());
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                let mut looks = 0;
                while !stop.load(Ordering::Relaxed) {
                    for (dir, want) in &expected {
                        if let Some(rows) = parquet_rows(dir) {
                            assert_eq!(
                                rows,
                                *want,
                                "a reader saw {rows} rows in {} (expected {want})",
                                dir.display()
                            );
                            looks += 1;
                        }
                    }
                }
                looks
            })
        })
        .collect();
    let output = gale(
        &[
            "lake",
            "compact",
            "--store",
            lake.to_str().unwrap(),
            "--table",
            "silver/validated",
            "--older-than",
            "0s",
        ],
        &[],
    );
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader saw a torn state") > 0);
    }
    assert!(output.contains("compacted"), "{output}");
    let after = lake_stats(table.to_str().unwrap(), None, &[]).unwrap();
    assert_eq!((after.rows, after.distinct_event_ids), (total, total));
    assert_eq!(after.files, after.partitions.len() as i64);
    assert!(
        !lake.join("_gale_compaction/silver__validated").exists()
            || std::fs::read_dir(lake.join("_gale_compaction/silver__validated"))
                .unwrap()
                .next()
                .is_none()
    );
    let _ = dirs;
}
