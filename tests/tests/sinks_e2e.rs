//! simulator → ingest → validate → pg-sink and archive: the validated rows
//! in Postgres, in the lake (read by DuckDB with Hive partitioning) and on
//! the validated topic are the same in number and in summed power.

use std::process::Command;
use std::time::Duration;

use gale_model::{ScoredReading, VALIDATED_READING};
use gale_tests::*;
use rdkafka::message::Message;

const API_KEY: &str = "e2e-sim-key-000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_to_postgres_and_lake_agree() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (raw, validated, quarantine) = (unique("raw"), unique("validated"), unique("quarantine"));
    let validate_group = unique("validate");
    create_topics(&stack.bootstrap, &[&raw, &validated, &quarantine], 3).await;

    let assets = dir.path().join("assets.csv");
    let status = Command::new(bin("gale"))
        .args([
            "fleet",
            "--turbines",
            "10",
            "--meters",
            "20",
            "--seed",
            "7",
            "--out",
        ])
        .arg(&assets)
        .status()
        .unwrap();
    assert!(status.success());
    let ingest_cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &ingest_cfg,
        format!("[[ingest.sources]]\nname = \"simulator\"\napi_keys = [\"{API_KEY}\"]\n"),
    )
    .unwrap();
    let api = format!("127.0.0.1:{}", free_port());

    let mut env = service_env(&stack, None);
    env.extend([
        ("GALE_TOPICS__RAW", raw.clone()),
        ("GALE_TOPICS__DEAD_LETTER", unique("dlq-ingest")),
        ("GALE_INGEST__LISTEN", api.clone()),
    ]);
    let ingest = ServiceProcess::start(
        "gale-ingest",
        &env,
        &["--config", ingest_cfg.to_str().unwrap()],
        "e2e-ingest",
    );

    let mut env = service_env(&stack, None);
    env.extend([
        ("GALE_TOPICS__INPUT", raw.clone()),
        ("GALE_TOPICS__VALIDATED", validated.clone()),
        ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
        ("GALE_TOPICS__DEAD_LETTER", unique("dlq-validate")),
        ("GALE_KAFKA__GROUP_ID", validate_group.clone()),
        ("GALE_VALIDATE__ASSETS__SOURCE", "file".into()),
        ("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()),
    ]);
    let validate = ServiceProcess::start("gale-validate", &env, &[], "e2e-validate");

    let pg_cfg = pg_sink_config(
        dir.path(),
        &db.url,
        &[
            (&raw, "raw_readings", false),
            (&validated, "readings", true),
            (&quarantine, "quarantined_readings", false),
        ],
        &unique("dlq-pg"),
    );
    let mut env = service_env(&stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", unique("pg-sink")));
    let pg_sink = ServiceProcess::start(
        "gale-pg-sink",
        &env,
        &["--config", pg_cfg.to_str().unwrap()],
        "e2e-pg-sink",
    );

    let archive_cfg = archive_config(
        dir.path(),
        &format!("{{ url = \"{}\" }}", lake.display()),
        &[
            (&raw, "bronze/raw"),
            (&validated, "silver/validated"),
            (&quarantine, "silver/quarantine"),
        ],
        &unique("dlq-archive"),
        "2s",
    );
    let mut env = service_env(&stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", unique("archive")));
    let archive = ServiceProcess::start(
        "gale-archive",
        &env,
        &["--config", archive_cfg.to_str().unwrap()],
        "e2e-archive",
    );
    for s in [&ingest, &validate, &pg_sink, &archive] {
        s.wait_ready(Duration::from_secs(90)).await;
    }

    let out = Command::new(bin("gale"))
        .args([
            "simulate",
            "--turbines",
            "10",
            "--meters",
            "20",
            "--seed",
            "7",
            "--count",
            "3000",
            "--batch",
            "250",
            "--quiet",
            "--api-key",
            API_KEY,
            "--ingest-url",
        ])
        .arg(format!("http://{api}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Validate has handled (and committed) every raw record: the validated
    // topic is complete. Then read what it holds.
    wait_for(
        "validate to commit every raw record",
        Duration::from_secs(90),
        || {
            let (bootstrap, group, raw) =
                (stack.bootstrap.clone(), validate_group.clone(), raw.clone());
            async move {
                let lag =
                    tokio::task::spawn_blocking(move || committed_lag(&bootstrap, &group, &raw))
                        .await
                        .ok()?;
                match lag {
                    Ok(0) => Some(()),
                    Ok(n) => {
                        eprintln!("validate lag {n}");
                        None
                    }
                    Err(e) => {
                        eprintln!("cannot read validate's lag: {e}");
                        None
                    }
                }
            }
        },
    )
    .await;
    let registry = registry(&stack);
    let mut decoder = registry
        .decoder::<ScoredReading>(VALIDATED_READING)
        .unwrap();
    let expected = record_count(&stack.bootstrap, &validated) as usize;
    let reader = TopicReader::new(&stack.bootstrap, &validated);
    let mut on_topic = Vec::new();
    for m in reader.read(expected, Duration::from_secs(60)) {
        on_topic.push(decoder.decode(m.payload().unwrap()).await.unwrap());
    }
    let topic_rows = on_topic.len() as i64;
    let topic_power: f64 = on_topic.iter().filter_map(|r| r.power_kw).sum();
    assert!(
        topic_rows > 2000,
        "most simulated readings validate ({topic_rows})"
    );

    // Postgres catches up to exactly that.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (pg_rows, pg_power) = wait_for(
        "Postgres to hold every validated reading",
        Duration::from_secs(90),
        || {
            let pool = pool.clone();
            async move {
                let (n, p): (i64, Option<f64>) =
                    sqlx::query_as("SELECT count(*), sum(power_kw) FROM readings")
                        .fetch_one(&pool)
                        .await
                        .ok()?;
                (n >= topic_rows).then_some((n, p.unwrap_or(0.0)))
            }
        },
    )
    .await;
    assert_eq!(pg_rows, topic_rows);
    assert!(
        (pg_power - topic_power).abs() < 1e-6 * topic_power.abs().max(1.0),
        "{pg_power} vs {topic_power}"
    );

    // The lake, read by DuckDB with Hive partitioning, agrees with Postgres.
    let table = lake.join("silver/validated");
    let stats = wait_for(
        "the lake to hold every validated reading",
        Duration::from_secs(90),
        || {
            let table = table.clone();
            async move {
                let s = lake_stats(table.to_str().unwrap(), None, &[])?;
                (s.rows >= topic_rows).then_some(s)
            }
        },
    )
    .await;
    assert_eq!(stats.rows, pg_rows);
    assert_eq!(stats.distinct_event_ids, pg_rows);
    let lake_power = stats.sum_power_kw.unwrap();
    assert!(
        (lake_power - pg_power).abs() < 1e-6 * pg_power.abs().max(1.0),
        "{lake_power} vs {pg_power}"
    );
    assert!(!stats.partitions.is_empty());

    // Manifests sit beside the data files.
    let manifests: Vec<_> = walk(&table)
        .into_iter()
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.to_string_lossy().contains("_gale_checkpoints")
        })
        .collect();
    assert_eq!(manifests.len() as i64, stats.files);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    for key in [
        "records",
        "min_event_time",
        "max_event_time",
        "first_offset",
        "last_offset",
        "schema_id",
    ] {
        assert!(m.get(key).is_some(), "manifest has {key}: {m}");
    }
    // The raw and quarantine tables are stored too.
    let raw_pg: i64 = sqlx::query_scalar("SELECT count(*) FROM raw_readings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(raw_pg >= topic_rows);
    let _ = pg_sink.metrics().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
