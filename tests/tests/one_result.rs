//! One reading, one result, whatever crashes happen: the whole pipeline
//! (ingest, validate, pg-sink, archive) takes a simulated backfill while the
//! client is killed mid-run and sends everything again (as a client that
//! lost its answers retries), and validate and the archive are killed with
//! SIGKILL. Afterwards every event id that was not dead-lettered is stored
//! exactly once: in one of Postgres' two tables and in the matching lake
//! table, the same ids in both stores.

use std::collections::{BTreeSet, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use gale_model::{RawReading, RAW_READING};
use gale_tests::*;
use rdkafka::message::Message;

const API_KEY: &str = "one-result-key-0001";

fn simulate(api: &str) -> Command {
    let mut c = Command::new(bin("gale"));
    c.args([
        "simulate",
        "--turbines",
        "6",
        "--meters",
        "14",
        "--seed",
        "11",
        "--count",
        "6000",
        "--start",
        "2024-01-01T00:00:00Z",
        "--interval",
        "10m",
        "--rate",
        "500",
        "--batch",
        "100",
        "--quiet",
        "--api-key",
        API_KEY,
        "--ingest-url",
    ])
    .arg(format!("http://{api}"))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

async fn pg_ids(pool: &sqlx::PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(&format!("SELECT event_id FROM {table}"))
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

fn distinct(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_is_stored_once_through_kills_and_client_retries() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (raw, validated, quarantine, dlq) = (
        unique("raw"),
        unique("validated"),
        unique("quarantine"),
        unique("dlq-validate"),
    );
    create_topics(&stack.bootstrap, &[&raw, &validated, &quarantine, &dlq], 3).await;
    let assets = dir.path().join("assets.csv");
    let status = Command::new(bin("gale"))
        .args([
            "fleet",
            "--turbines",
            "6",
            "--meters",
            "14",
            "--seed",
            "11",
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
    let quick = [
        ("GALE_PROCESSING__BATCH_SIZE", "100".to_string()),
        (
            "GALE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS",
            "6000".to_string(),
        ),
        (
            "GALE_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS",
            "1000".to_string(),
        ),
    ];

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
        "one-ingest",
    );

    let validate_group = unique("validate");
    let mut env = service_env(&stack, None);
    env.extend(quick.clone());
    env.extend([
        ("GALE_TOPICS__INPUT", raw.clone()),
        ("GALE_TOPICS__VALIDATED", validated.clone()),
        ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
        ("GALE_TOPICS__DEAD_LETTER", dlq.clone()),
        ("GALE_KAFKA__GROUP_ID", validate_group.clone()),
        ("GALE_STATE__COMMIT_INTERVAL", "200ms".into()),
        ("GALE_VALIDATE__MODE", "backfill".into()),
        ("GALE_VALIDATE__ASSETS__SOURCE", "file".into()),
        ("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()),
    ]);
    let mut validate = ServiceProcess::start("gale-validate", &env, &[], "one-validate");

    let pg_cfg = pg_sink_config(
        dir.path(),
        &db.url,
        &[
            (&validated, "readings", true),
            (&quarantine, "quarantined_readings", false),
        ],
        &unique("dlq-pg"),
    );
    let mut env = service_env(&stack, None);
    env.extend(quick.clone());
    env.push(("GALE_KAFKA__GROUP_ID", unique("pg-sink")));
    let pg_sink = ServiceProcess::start(
        "gale-pg-sink",
        &env,
        &["--config", pg_cfg.to_str().unwrap()],
        "one-pg-sink",
    );

    let archive_cfg = archive_config(
        dir.path(),
        &format!("{{ url = \"{}\" }}", lake.display()),
        &[
            (&validated, "silver/validated"),
            (&quarantine, "silver/quarantined"),
        ],
        &unique("dlq-archive"),
        "1s",
    );
    let mut env = service_env(&stack, None);
    env.extend(quick);
    env.push(("GALE_KAFKA__GROUP_ID", unique("archive")));
    let mut archive = ServiceProcess::start(
        "gale-archive",
        &env,
        &["--config", archive_cfg.to_str().unwrap()],
        "one-archive",
    );
    for s in [&ingest, &validate, &pg_sink, &archive] {
        s.wait_ready(Duration::from_secs(90)).await;
    }

    // The client dies mid-run; validate and the archive die too.
    let mut client = simulate(&api).spawn().unwrap();
    let raw_count = |stack: &Stack| record_count(&stack.bootstrap, &raw);
    wait_for("part of the backfill", Duration::from_secs(60), || {
        let n = raw_count(&stack);
        async move { (n >= 1500).then_some(()) }
    })
    .await;
    validate.kill9();
    client.kill().unwrap();
    client.wait().unwrap();
    archive.kill9();
    assert!(raw_count(&stack) < 6000, "the client died mid-run");
    tokio::time::sleep(Duration::from_millis(500)).await;
    validate.restart();
    archive.restart();
    // It sends everything again: what it sent before is repeated.
    let before = raw_count(&stack);
    let mut again = simulate(&api).spawn().unwrap();
    wait_for("the resend to get going", Duration::from_secs(60), || {
        let n = raw_count(&stack);
        async move { (n >= before + 2500).then_some(()) }
    })
    .await;
    validate.kill9();
    archive.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    validate.restart();
    archive.restart();
    assert!(again.wait().unwrap().success(), "the resend completes");
    validate.wait_ready(Duration::from_secs(60)).await;
    archive.wait_ready(Duration::from_secs(60)).await;

    // What entered, and what validate refused.
    wait_for("validate to catch up", Duration::from_secs(120), || {
        let lag = committed_lag(&stack.bootstrap, &validate_group, &raw);
        async move { (lag == Ok(0)).then_some(()) }
    })
    .await;
    let registry = registry(&stack);
    let mut decoder = registry.decoder::<RawReading>(RAW_READING).unwrap();
    let mut entered = HashSet::new();
    let mut copies = 0;
    for m in TopicReader::new(&stack.bootstrap, &raw).drain(Duration::from_secs(2)) {
        entered.insert(decoder.decode(m.payload().unwrap()).await.unwrap().event_id);
        copies += 1;
    }
    let mut refused = HashSet::new();
    for m in TopicReader::new(&stack.bootstrap, &dlq).drain(Duration::from_secs(2)) {
        refused.insert(decoder.decode(m.payload().unwrap()).await.unwrap().event_id);
    }
    assert!(
        copies > entered.len() + 1000,
        "readings were sent twice ({copies} records, {} ids)",
        entered.len()
    );
    let expected: BTreeSet<String> = entered.difference(&refused).cloned().collect();
    assert!(
        expected.len() > 5000,
        "{} readings to store",
        expected.len()
    );

    // Postgres: every expected id once, in one of the two tables.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (good, bad) = wait_for("Postgres to hold them", Duration::from_secs(120), || {
        let pool = pool.clone();
        let want = expected.len();
        async move {
            let good = pg_ids(&pool, "readings").await;
            let bad = pg_ids(&pool, "quarantined_readings").await;
            (good.len() + bad.len() >= want).then_some((good, bad))
        }
    })
    .await;
    let (pg_good, pg_bad) = (distinct(&good), distinct(&bad));
    assert_eq!(pg_good.len(), good.len(), "no id twice in readings");
    assert_eq!(
        pg_bad.len(),
        bad.len(),
        "no id twice in quarantined_readings"
    );
    assert!(pg_good.is_disjoint(&pg_bad), "no id in both tables");
    let stored: BTreeSet<String> = pg_good.union(&pg_bad).cloned().collect();
    assert_eq!(
        stored, expected,
        "Postgres holds exactly the readings that entered"
    );

    // The lake: the same ids in the same tables, once each.
    let tables = [
        lake.join("silver/validated"),
        lake.join("silver/quarantined"),
    ];
    let want = stored.len();
    wait_for("the lake to hold them", Duration::from_secs(120), || {
        let ids = lake_ids(&[&tables[0], &tables[1]]);
        let n: usize = ids.iter().map(|t| distinct(t).len()).sum();
        async move { (n >= want).then_some(()) }
    })
    .await;
    assert_eq!(archive.terminate(Duration::from_secs(60)), Some(0));
    let ids = lake_ids(&[&tables[0], &tables[1]]);
    let (lake_good, lake_bad) = (distinct(&ids[0]), distinct(&ids[1]));
    assert_eq!(
        lake_good.len(),
        ids[0].len(),
        "no id twice in the validated table"
    );
    assert_eq!(
        lake_bad.len(),
        ids[1].len(),
        "no id twice in the quarantined table"
    );
    assert_eq!(
        lake_good, pg_good,
        "the lake's validated readings are Postgres'"
    );
    assert_eq!(
        lake_bad, pg_bad,
        "the lake's quarantined readings are Postgres'"
    );
}
