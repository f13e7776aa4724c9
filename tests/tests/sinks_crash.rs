//! Sinks under hostile conditions: pg-sink and archive killed with SIGKILL
//! again and again mid-stream (still equal counts, no duplicate event id in
//! Postgres or the lake), and Postgres stopped for ~20 s under pg-sink
//! (not ready, recovers by itself, nothing lost, nothing dead-lettered).

use std::time::{Duration, Instant};

use gale_model::{AssetKind, IngestChannel, QualityTier, ScoredReading, VALIDATED_READING};
use gale_tests::*;

fn reading(i: usize, t0: i64) -> ScoredReading {
    ScoredReading {
        site_id: Some(format!("grid-{}", i % 4)),
        // Spread over three hours so several Hive partitions and files roll.
        received_time: t0,
        validated_time: t0,
        source: "crash-test".into(),
        channel: IngestChannel::Unknown,
        power_kw: Some((i % 97) as f64 * 0.5),
        quality_score: 100,
        quality_tier: QualityTier::Premium,
        flags: vec![],
        attributes: Default::default(),
        ..ScoredReading::new(
            format!("crash-{i:06}"),
            format!("MTR-{}", i % 50),
            AssetKind::Meter,
            t0 + (i as i64 % 3) * 3_600_000 + i as i64,
        )
    }
}

fn expected_power(total: usize) -> f64 {
    (0..total).map(|i| (i % 97) as f64 * 0.5).sum()
}

async fn feed(stack: &Stack, topic: &str, range: std::ops::Range<usize>, t0: i64) {
    let encoder = registry(stack)
        .register(topic, VALIDATED_READING)
        .await
        .unwrap();
    let producer = producer(&stack.bootstrap);
    for chunk in range.collect::<Vec<_>>().chunks(250) {
        let sends: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let r = reading(i, t0);
                let payload = encoder.encode(&r).unwrap();
                let producer = producer.clone();
                let topic = topic.to_string();
                async move { send(&producer, &topic, &r.asset_id, &payload).await }
            })
            .collect();
        futures::future::join_all(sends).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn pg_totals(pool: &sqlx::PgPool) -> (i64, i64, f64) {
    sqlx::query_as::<_, (i64, i64, Option<f64>)>(
        "SELECT count(*), count(DISTINCT event_id), sum(power_kw) FROM readings",
    )
    .fetch_one(pool)
    .await
    .map(|(a, b, c)| (a, b, c.unwrap_or(0.0)))
    .unwrap_or((0, 0, 0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_sinks_repeatedly_no_loss_no_duplicates() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let validated = unique("validated");
    create_topics(&stack.bootstrap, &[&validated], 3).await;
    let pg_cfg = pg_sink_config(
        dir.path(),
        &db.url,
        &[(&validated, "readings", true)],
        &unique("dlq-pg"),
    );
    let archive_cfg = archive_config(
        dir.path(),
        &format!("{{ url = \"{}\" }}", lake.display()),
        &[(&validated, "silver/validated")],
        &unique("dlq-archive"),
        "1s",
    );
    let mut env = service_env(&stack, None);
    env.extend([
        ("GALE_PROCESSING__BATCH_SIZE", "200".to_string()),
        (
            "GALE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS",
            "6000".to_string(),
        ),
        (
            "GALE_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS",
            "1000".to_string(),
        ),
    ]);
    let mut pg_env = env.clone();
    pg_env.push(("GALE_KAFKA__GROUP_ID", unique("pg-sink")));
    let mut ar_env = env.clone();
    ar_env.push(("GALE_KAFKA__GROUP_ID", unique("archive")));
    let mut pg_sink = ServiceProcess::start(
        "gale-pg-sink",
        &pg_env,
        &["--config", pg_cfg.to_str().unwrap()],
        "crash-pg-sink",
    );
    let mut archive = ServiceProcess::start(
        "gale-archive",
        &ar_env,
        &["--config", archive_cfg.to_str().unwrap()],
        "crash-archive",
    );
    pg_sink.wait_ready(Duration::from_secs(60)).await;
    archive.wait_ready(Duration::from_secs(60)).await;

    let total = 12_000;
    let t0 = chrono::Utc::now().timestamp_millis() - 6 * 3_600_000;
    let feeder = {
        let stack = stack.clone();
        let validated = validated.clone();
        tokio::spawn(async move { feed(&stack, &validated, 0..total, t0).await })
    };
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let table = lake.join("silver/validated");
    let mut archived_at_kills = Vec::new();
    for round in 0..3 {
        let target = (round + 1) * 2_000;
        wait_for("pg-sink to make progress", Duration::from_secs(90), || {
            let pool = pool.clone();
            async move { (pg_totals(&pool).await.0 >= target as i64).then_some(()) }
        })
        .await;
        pg_sink.kill9();
        archive.kill9();
        // Mid-stream: pg-sink never had everything when it died, and the
        // archive did not either at least once.
        let stored = pg_totals(&pool).await.0;
        let archived = lake_stats(table.to_str().unwrap(), None, &[]).map_or(0, |s| s.rows);
        eprintln!("round {round}: killed with {stored} rows in Postgres, {archived} in the lake");
        assert!(stored < total as i64);
        archived_at_kills.push(archived);
        tokio::time::sleep(Duration::from_millis(200 + 300 * round as u64)).await;
        pg_sink.restart();
        archive.restart();
        pg_sink.wait_ready(Duration::from_secs(60)).await;
        archive.wait_ready(Duration::from_secs(60)).await;
    }
    feeder.await.unwrap();
    assert!(
        archived_at_kills.iter().any(|&n| n < total as i64),
        "the archive was killed mid-stream at least once: {archived_at_kills:?}"
    );

    let (rows, distinct, power) = wait_for(
        "every reading in Postgres",
        Duration::from_secs(120),
        || {
            let pool = pool.clone();
            async move {
                let t = pg_totals(&pool).await;
                (t.1 >= total as i64).then_some(t)
            }
        },
    )
    .await;
    assert_eq!(
        (rows, distinct),
        (total as i64, total as i64),
        "no duplicate event id in Postgres"
    );
    assert!((power - expected_power(total)).abs() < 1e-6);

    wait_for(
        "every reading in the lake",
        Duration::from_secs(120),
        || {
            let table = table.clone();
            async move {
                let s = lake_stats(table.to_str().unwrap(), None, &[])?;
                (s.distinct_event_ids >= total as i64).then_some(())
            }
        },
    )
    .await;
    // Every offset is archived once the archive has committed to the end of
    // each partition; then look again: still no duplicates.
    assert_eq!(archive.terminate(Duration::from_secs(30)), Some(0));
    let stats = lake_stats(table.to_str().unwrap(), None, &[]).expect("lake readable");
    assert_eq!(
        (stats.rows, stats.distinct_event_ids),
        (total as i64, total as i64),
        "no duplicate event id in the lake"
    );
    assert!((stats.sum_power_kw.unwrap() - expected_power(total)).abs() < 1e-6);
    assert!(stats.partitions.len() >= 3);
    // Directory readers (pyarrow) see the same rows: no half-written file
    // from a killed upload is left in the table.
    assert_eq!(lake_files(&table).dataset_rows, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_pauses_and_recovers_without_dead_letters() {
    let stack = stack();
    let pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let validated = unique("validated");
    let dlq = unique("dlq-pg");
    create_topics(&stack.bootstrap, &[&validated, &dlq], 3).await;
    let cfg = pg_sink_config(
        dir.path(),
        &pg.url(),
        &[(&validated, "readings", true)],
        &dlq,
    );
    let mut env = service_env(&stack, None);
    env.extend([
        ("GALE_KAFKA__GROUP_ID", unique("pg-sink")),
        ("GALE_PROCESSING__BATCH_SIZE", "100".to_string()),
        ("GALE_PROCESSING__OUTAGE_BACKOFF_MAX", "2s".to_string()),
        ("GALE_DATABASE__ACQUIRE_TIMEOUT", "1s".to_string()),
        // Shorter than the outage: a consumer that stopped polling while it
        // waits would be expelled from its group.
        (
            "GALE_KAFKA__PROPERTIES__MAX_POLL_INTERVAL_MS",
            "10000".to_string(),
        ),
    ]);
    let pg_sink = ServiceProcess::start(
        "gale-pg-sink",
        &env,
        &["--config", cfg.to_str().unwrap()],
        "outage-pg-sink",
    );
    pg_sink.wait_ready(Duration::from_secs(60)).await;

    let total = 6_000;
    let before_outage = 3_000;
    let t0 = chrono::Utc::now().timestamp_millis() - 3_600_000;
    feed(&stack, &validated, 0..before_outage, t0).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect(&pg.url())
        .await
        .unwrap();
    wait_for("some rows", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { (pg_totals(&pool).await.0 > 500).then_some(()) }
    })
    .await;
    pool.close().await;

    pg.stop();
    let down = Instant::now();
    // Half the readings arrive only while the database is down: they can
    // only be stored if pg-sink holds them through the outage.
    feed(&stack, &validated, before_outage..total, t0).await;
    wait_for(
        "pg-sink to report not ready",
        Duration::from_secs(20),
        || async { (pg_sink.readiness().await == 503).then_some(()) },
    )
    .await;
    let remaining = Duration::from_secs(20).saturating_sub(down.elapsed());
    tokio::time::sleep(remaining).await;
    assert_eq!(
        pg_sink.readiness().await,
        503,
        "still not ready while Postgres is down"
    );
    pg.start_again();
    wait_for(
        "pg-sink to be ready again",
        Duration::from_secs(60),
        || async { (pg_sink.readiness().await == 200).then_some(()) },
    )
    .await;

    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let (rows, distinct, power) = wait_for("every reading stored", Duration::from_secs(90), || {
        let pool = pool.clone();
        async move {
            let t = pg_totals(&pool).await;
            (t.0 >= total as i64).then_some(t)
        }
    })
    .await;
    assert_eq!((rows, distinct), (total as i64, total as i64));
    assert!((power - expected_power(total)).abs() < 1e-6);
    let dead = TopicReader::new(&stack.bootstrap, &dlq).drain(Duration::from_secs(2));
    assert!(
        dead.is_empty(),
        "{} records dead-lettered during an outage",
        dead.len()
    );
    let metrics = pg_sink.metrics().await;
    let retries = metric_value(
        &metrics,
        "gale_record_retries_total{stage=\"pg-sink\",kind=\"outage\"}",
    );
    assert!(
        retries.is_some_and(|n| n > 0.0),
        "outage retries counted: {retries:?}"
    );
    let log = std::fs::read_to_string(&pg_sink.log).unwrap();
    assert!(
        !log.contains("maximum poll interval") && !log.contains("MAXPOLL"),
        "pg-sink left its consumer group during the outage; see {}",
        pg_sink.log.display()
    );
    assert!(
        log.contains("consumption paused while waiting"),
        "the consumer was paused during the outage"
    );
}
