//! The lake on both kinds of store: the archive writes to a real
//! S3-compatible server (moto) and to a directory; pyarrow and DuckDB read
//! the tables with Hive partitioning; `gale lake compact` merges closed
//! partitions on both, and on a directory no reader ever sees the old files
//! and the merged one together.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gale_model::{AssetKind, IngestChannel, QualityTier, ScoredReading, VALIDATED_READING};
use gale_tests::*;

fn reading(i: usize, t0: i64) -> ScoredReading {
    ScoredReading {
        site_id: Some("farm-a".into()),
        received_time: t0,
        validated_time: t0,
        source: "lake-test".into(),
        channel: IngestChannel::Unknown,
        wind_speed_ms: Some(9.0),
        power_kw: Some(i as f64),
        quality_score: 100,
        quality_tier: QualityTier::Premium,
        flags: vec![],
        attributes: Default::default(),
        ..ScoredReading::new(
            format!("lake-{i:06}"),
            format!("T-{}", i % 7),
            AssetKind::Turbine,
            t0 + (i as i64 % 3) * 3_600_000 + i as i64,
        )
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

/// gale-archive with `cfg` in a group of its own, ready.
async fn start_archive(stack: &Stack, cfg: &Path, label: &str) -> ServiceProcess {
    let mut env = service_env(stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", unique("archive")));
    let archive = ServiceProcess::start(
        "gale-archive",
        &env,
        &["--config", cfg.to_str().unwrap()],
        label,
    );
    archive.wait_ready(Duration::from_secs(60)).await;
    archive
}

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
    let moto = Moto::start().await;
    let bucket = moto.bucket.clone();
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
    let mut archive = start_archive(&stack, &cfg, "s3-archive").await;

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

    // S3 has no atomic multi-object swap: readers that need a consistent view
    // while compaction runs take it from the manifests. One such reader
    // looks again and again during the compaction; every look has every row
    // exactly once.
    let location = gale_runtime::storage::open(
        &gale_runtime::storage::StoreConfig {
            url: format!("s3://{bucket}/lake"),
            options: [
                ("aws_endpoint", moto.endpoint.as_str()),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
                ("aws_access_key_id", "gale-test"),
                ("aws_secret_access_key", "gale-test-secret"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), gale_runtime::config::Secret::new(v)))
            .collect(),
            slow_writes: None,
        },
        "test",
    )
    .unwrap();
    let phase = Arc::new(AtomicU8::new(1));
    let reader = {
        let phase = phase.clone();
        tokio::spawn(async move {
            let mut during = 0;
            while phase.load(Ordering::SeqCst) == 1 {
                let files = gale_archive::snapshot::live_files(&location, "silver/validated")
                    .await
                    .unwrap();
                let rows: usize = files.iter().map(|f| f.records).sum();
                assert_eq!(rows as i64, total, "a manifest reader saw a torn view");
                if phase.load(Ordering::SeqCst) == 1 {
                    during += 1;
                }
            }
            during
        })
    };
    let store_url = format!("s3://{bucket}/lake");
    let endpoint = format!("aws_endpoint={}", moto.endpoint);
    let output = tokio::task::spawn_blocking(move || {
        gale(
            &[
                "lake",
                "compact",
                "--store",
                &store_url,
                "--option",
                &endpoint,
                "--option",
                "aws_allow_http=true",
                "--table",
                "silver/validated",
                "--older-than",
                "0s",
            ],
            &S3_ENV,
        )
    })
    .await
    .unwrap();
    phase.store(2, Ordering::SeqCst);
    let looks = reader.await.expect("the manifest reader saw a torn view");
    assert!(looks > 0, "the reader looked while compaction ran");
    assert!(output.contains("compacted"), "{output}");
    // The CLI lists the same live files.
    let listed = gale(
        &[
            "lake",
            "files",
            "--store",
            &format!("s3://{bucket}/lake"),
            "--option",
            &format!("aws_endpoint={}", moto.endpoint),
            "--option",
            "aws_allow_http=true",
            "--table",
            "silver/validated",
        ],
        &S3_ENV,
    );
    assert!(
        listed.lines().all(|l| l
            .starts_with(&format!("s3://{bucket}/lake/silver/validated/date="))
            && l.ends_with(".parquet")),
        "{listed}"
    );
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
    let mut archive = start_archive(&stack, &cfg, "local-archive").await;
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
    // 0: not started, 1: compaction running, 2: done.
    let phase = Arc::new(AtomicU8::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let phase = phase.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                // Complete looks made while the compaction ran, and looks cut
                // short because a file vanished between listing and reading
                // (the directory was exchanged under the reader: no torn view).
                let (mut during, mut vanished) = (0, 0);
                loop {
                    let started_in = phase.load(Ordering::SeqCst);
                    if started_in == 2 {
                        break;
                    }
                    for (dir, want) in &expected {
                        match parquet_rows(dir) {
                            Some(rows) => {
                                assert_eq!(
                                    rows,
                                    *want,
                                    "a reader saw {rows} rows in {} (expected {want})",
                                    dir.display()
                                );
                                if started_in == 1 && phase.load(Ordering::SeqCst) == 1 {
                                    during += 1;
                                }
                            }
                            None => vanished += 1,
                        }
                    }
                }
                (during, vanished)
            })
        })
        .collect();
    phase.store(1, Ordering::SeqCst);
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
    phase.store(2, Ordering::SeqCst);
    let mut during = 0;
    for r in readers {
        let (d, vanished) = r.join().expect("reader saw a torn state");
        during += d;
        eprintln!("reader: {d} complete looks during compaction, {vanished} cut short");
    }
    assert!(during > 0, "readers looked while the compaction ran");
    assert!(output.contains("compacted"), "{output}");
    let after = lake_stats(table.to_str().unwrap(), None, &[]).unwrap();
    assert_eq!((after.rows, after.distinct_event_ids), (total, total));
    assert_eq!(after.files, after.partitions.len() as i64);
    assert!(
        !lake.join("_gale_compaction/silver/validated").exists(),
        "no staging left behind"
    );
    let _ = dirs;
}

fn rfc3339_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_layout_follows_its_settings() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let topic = unique("validated");
    create_topics(&stack.bootstrap, &[&topic], 3).await;
    // Size is the only roll that can fire while the archive runs (the age
    // is an hour); ZSTD, small row groups and an extra partition level.
    let cfg = dir.path().join("archive.toml");
    std::fs::write(
        &cfg,
        format!(
            "[archive]\nstore = {{ url = \"{}\" }}\ncompression = \"zstd\"\nrow_group_rows = 10\n\
             max_file_bytes = 150000\nmax_file_age = \"1h\"\ndead_letter = \"{}\"\n\n\
             [[archive.tables]]\ntopic = \"{topic}\"\npath = \"silver/v\"\npartition_by = [\"asset_kind\"]\n",
            lake.display(),
            unique("dlq")
        ),
    )
    .unwrap();
    let mut archive = start_archive(&stack, &cfg, "layout-archive").await;

    let encoder = registry(&stack)
        .register(&topic, VALIDATED_READING)
        .await
        .unwrap();
    let producer = producer(&stack.bootstrap);
    let total = 3000usize;
    let t0 = chrono::Utc::now().timestamp_millis() - 5 * 3_600_000;
    for i in 0..total {
        let mut r = reading(i, t0);
        if i % 2 == 1 {
            r.asset_kind = AssetKind::Meter;
            r.asset_id = format!("M-{}", i % 5);
        }
        r.attributes
            .insert("firmware".into(), format!("v{}", i % 3));
        r.flags = vec![gale_model::QualityFlag {
            code: gale_model::FlagCode::UnitConverted,
            metric: Some(gale_model::Metric::Power),
            deduction: 5,
            quarantine: false,
            detail: "W to kW".into(),
        }];
        send(&producer, &topic, &r.asset_id, &encoder.encode(&r).unwrap()).await;
    }
    let table = lake.join("silver/v");
    // Files appear while the archive still runs: rolled on size alone.
    let early = wait_for("files rolled on size", Duration::from_secs(60), || {
        let table = table.clone();
        async move {
            if !table.exists() {
                return None;
            }
            let files = lake_files(&table).files;
            (!files.is_empty()).then_some(files.len())
        }
    })
    .await;
    assert!(early > 0);
    // Stopped once it has taken every record (on a busy machine the first
    // roll can come before that): the final flush writes the rest.
    wait_for("every record consumed", Duration::from_secs(60), || {
        let archive = &archive;
        async move { (archive.records_in().await >= total as f64).then_some(()) }
    })
    .await;
    assert_eq!(archive.terminate(Duration::from_secs(30)), Some(0));

    let lake = lake_files(&table);
    for f in &lake.files {
        eprintln!("{} rows={} row_groups={:?}", f.path, f.rows, f.row_groups);
    }
    let rows: usize = lake.files.iter().map(|f| f.rows).sum();
    assert_eq!(rows, total, "every reading once, after the final flush");
    assert_eq!(lake.dataset_rows, total, "pyarrow sees no stray files");
    let mut kinds = std::collections::BTreeSet::new();
    for f in &lake.files {
        let parts: Vec<&str> = f.path.split('/').collect();
        assert_eq!(parts.len(), 4, "date/hour/asset_kind/file: {}", f.path);
        assert!(
            parts[0].starts_with("date=") && parts[1].starts_with("hour="),
            "{}",
            f.path
        );
        let kind = parts[2]
            .strip_prefix("asset_kind=")
            .expect("asset_kind level");
        kinds.insert(kind.to_string());
        assert_eq!(f.codecs, vec!["ZSTD".to_string()], "{}", f.path);
        assert!(
            f.row_groups.iter().all(|&n| n <= 10),
            "{}: {:?}",
            f.path,
            f.row_groups
        );
        let m = f
            .manifest
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no manifest", f.path));
        assert_eq!(m["records"].as_u64(), Some(f.rows as u64), "{}", f.path);
        assert_eq!(m["compression"], "zstd");
        assert_eq!(
            rfc3339_ms(m["min_event_time"].as_str().unwrap()),
            f.min_event_time_ms.unwrap(),
            "{}",
            f.path
        );
        assert_eq!(
            rfc3339_ms(m["max_event_time"].as_str().unwrap()),
            f.max_event_time_ms.unwrap(),
            "{}",
            f.path
        );
        assert!(m["first_offset"].as_i64() <= m["last_offset"].as_i64());
        assert!(m["schema_id"].as_u64().is_some_and(|id| id > 0));
    }
    assert_eq!(
        kinds,
        ["METER".to_string(), "TURBINE".to_string()]
            .into_iter()
            .collect()
    );
    assert!(
        lake.files.iter().any(|f| f.row_groups.len() > 1),
        "row groups are capped at 10 rows"
    );
    // The Arrow schema follows the Avro one: timestamps in UTC, optionals
    // nullable, enums as dictionaries, arrays as lists, maps as maps.
    let columns = &lake.files[0].columns;
    assert!(
        columns["event_time"].starts_with("timestamp[ms, tz="),
        "{columns:?}"
    );
    assert!(
        columns["quality_tier"].starts_with("dictionary<"),
        "{columns:?}"
    );
    assert!(columns["flags"].starts_with("list<"), "{columns:?}");
    assert!(columns["attributes"].starts_with("map<"), "{columns:?}");
    assert_eq!(columns["site_id"], "string");
    assert_eq!(columns["kafka_offset"], "int64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_cannot_overwrite_the_new_owners_checkpoint_on_s3() {
    use gale_archive::fence::{self, Written};
    use gale_archive::layout::Checkpoint;
    let moto = Moto::start().await;
    let bucket = moto.bucket.clone();
    let location = gale_runtime::storage::open(
        &gale_runtime::storage::StoreConfig {
            url: format!("s3://{bucket}/lake"),
            options: [
                ("aws_endpoint", moto.endpoint.as_str()),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
                ("aws_access_key_id", "gale-test"),
                ("aws_secret_access_key", "gale-test-secret"),
                ("aws_conditional_put", "etag"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), gale_runtime::config::Secret::new(v)))
            .collect(),
            slow_writes: None,
        },
        "test",
    )
    .unwrap();
    let path = location.child("silver/t/_gale_checkpoints/t-0.json");
    let at = |n: i64| Checkpoint {
        next_offset: n,
        ..Default::default()
    };
    // The first owner claims the partition and writes a checkpoint...
    let (_, seen) = fence::load(&location, &path).await.unwrap();
    let Written::Ok(old) = fence::store(&location, &path, &at(0), &seen).await else {
        panic!("first claim")
    };
    let Written::Ok(old) = fence::store(&location, &path, &at(100), &old).await else {
        panic!("first owner's checkpoint")
    };
    // ...is partitioned away; the new owner claims it and moves on...
    let (c, seen) = fence::load(&location, &path).await.unwrap();
    assert_eq!(c.next_offset, 100);
    let Written::Ok(new) = fence::store(&location, &path, &c, &seen).await else {
        panic!("second claim")
    };
    let Written::Ok(_) = fence::store(&location, &path, &at(250), &new).await else {
        panic!("new owner's checkpoint")
    };
    // ...and the old owner, back from a slow flush, is fenced.
    assert!(matches!(
        fence::store(&location, &path, &at(180), &old).await,
        Written::Fenced(_)
    ));
    let (c, _) = fence::load(&location, &path).await.unwrap();
    assert_eq!(c.next_offset, 250, "the new owner's checkpoint stands");
}
