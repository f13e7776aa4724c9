//! pg-sink against the real Postgres: each event id stored once, the newest
//! reading per asset kept, refused records dead-lettered alone.

use std::time::Duration;

use gale_model::{AssetKind, IngestChannel, QualityTier, ScoredReading, VALIDATED_READING};
use gale_tests::*;
use rdkafka::message::Message;
use sqlx::Row;

fn scored(id: &str, asset: &str, t: i64, power: f64, score: i32) -> ScoredReading {
    ScoredReading {
        site_id: Some("grid-north".into()),
        received_time: t + 1000,
        validated_time: t + 2000,
        source: "test".into(),
        channel: IngestChannel::Http,
        power_kw: Some(power),
        quality_score: score,
        quality_tier: QualityTier::Premium,
        flags: vec![],
        attributes: Default::default(),
        ..ScoredReading::new(id, asset, AssetKind::Meter, t)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_once_latest_kept_refusals_dead_lettered() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let validated = unique("validated");
    let dlq = unique("dlq-pg");
    create_topics(&stack.bootstrap, &[&validated], 3).await;
    let cfg = pg_sink_config(dir.path(), &db.url, &[(&validated, "readings", true)], &dlq);

    let encoder = registry(&stack)
        .register(&validated, VALIDATED_READING)
        .await
        .unwrap();
    let producer = producer(&stack.bootstrap);
    let t0 = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let day = 86_400_000;
    let mut sent = Vec::new();
    for i in 0..40 {
        // Two assets, across three days (three partitions).
        let r = scored(
            &format!("e{i}"),
            &format!("MTR-{}", i % 2),
            t0 - (i % 3) * day + i,
            i as f64,
            95,
        );
        sent.push(r);
    }
    // Redeliveries of the same event ids.
    let dupes: Vec<ScoredReading> = sent[..10].to_vec();
    // Postgres refuses a score above 100 (CHECK constraint), and bytes that are not Avro.
    let refused = scored("bad-score", "MTR-0", t0, 1.0, 150);
    for r in sent.iter().chain(&dupes).chain(std::iter::once(&refused)) {
        send(
            &producer,
            &validated,
            &r.asset_id,
            &encoder.encode(r).unwrap(),
        )
        .await;
    }
    send(&producer, &validated, "MTR-0", b"not avro").await;

    let mut env = service_env(&stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", unique("pg-sink")));
    let sink = ServiceProcess::start(
        "gale-pg-sink",
        &env,
        &["--config", cfg.to_str().unwrap()],
        "pg-sink-once",
    );
    sink.wait_ready(Duration::from_secs(60)).await;

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    wait_for("40 rows", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
                .fetch_one(&pool)
                .await
                .ok()?;
            (n >= 40).then_some(())
        }
    })
    .await;
    let dead = TopicReader::new(&stack.bootstrap, &dlq).read(2, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&pool)
        .await
        .unwrap();
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT event_id) FROM readings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((n, distinct), (40, 40), "each event id once");
    let partitions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'readings'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        partitions >= 3,
        "daily partitions created for the data ({partitions})"
    );
    let sum: f64 = sqlx::query_scalar("SELECT sum(power_kw) FROM readings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sum, (0..40).sum::<i32>() as f64);

    // Newest reading per asset.
    let latest =
        sqlx::query("SELECT asset_id, event_id, event_time FROM latest_readings ORDER BY asset_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(latest.len(), 2);
    for row in &latest {
        let asset: String = row.get("asset_id");
        let newest: String = sqlx::query_scalar(
            "SELECT event_id FROM readings WHERE asset_id = $1 ORDER BY event_time DESC LIMIT 1",
        )
        .bind(&asset)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(row.get::<String, _>("event_id"), newest);
    }

    // Dead letters: the refused record and the garbage, byte for byte.
    let mut classes: Vec<String> = dead
        .iter()
        .map(|m| header(m, "gale.dlq.error.class").unwrap())
        .collect();
    classes.sort();
    assert_eq!(classes, vec!["malformed", "rejected_by_database"]);
    let bad = dead
        .iter()
        .find(|m| header(m, "gale.dlq.error.class").as_deref() == Some("rejected_by_database"))
        .unwrap();
    assert_eq!(
        bad.payload().unwrap(),
        encoder.encode(&refused).unwrap().as_slice()
    );
    assert!(header(bad, "gale.dlq.error.message")
        .unwrap()
        .contains("quality_score"));
    assert_eq!(header(bad, "gale.dlq.stage").as_deref(), Some("pg-sink"));
    let stored_bad: i64 =
        sqlx::query_scalar("SELECT count(*) FROM readings WHERE event_id = 'bad-score'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored_bad, 0);

    // Partitions exist ahead of today, before any reading needs them.
    let today = chrono::Utc::now().date_naive();
    for ahead in 0..=3u64 {
        let day = today + chrono::Days::new(ahead);
        let name = format!("readings_p{}", day.format("%Y%m%d"));
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&name)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(exists, "partition {name} created ahead");
    }

    // A partition dropped behind pg-sink's back is created again for the
    // next reading of its day; the reading is stored, not dead-lettered.
    let day = today + chrono::Days::new(2);
    sqlx::query(&format!("DROP TABLE readings_p{}", day.format("%Y%m%d")))
        .execute(&pool)
        .await
        .unwrap();
    let later = scored(
        "after-drop",
        "MTR-9",
        day.and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis(),
        7.0,
        95,
    );
    send(
        &producer,
        &validated,
        &later.asset_id,
        &encoder.encode(&later).unwrap(),
    )
    .await;
    wait_for(
        "the reading of the dropped partition's day",
        Duration::from_secs(60),
        || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM readings WHERE event_id = 'after-drop'",
                )
                .fetch_one(&pool)
                .await
                .ok()?;
                (n == 1).then_some(())
            }
        },
    )
    .await;
    let all_dead = TopicReader::new(&stack.bootstrap, &dlq).drain(Duration::from_secs(2));
    assert_eq!(all_dead.len(), 2, "nothing else was dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gale_db_migrate_applies_the_schema_and_hides_the_password() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    // Trust authentication ignores the password; it must still never show.
    let secret = "s3cr3t-Pa55word";
    let mut with_password = url::Url::parse(&db.url).unwrap();
    if with_password.username().is_empty() {
        with_password.set_username("postgres").unwrap();
    }
    with_password.set_password(Some(secret)).unwrap();
    let url = with_password.to_string();
    let run = |args: &[&str], url: &str| {
        let out = std::process::Command::new(bin("gale"))
            .args(args)
            .env("DATABASE_URL", url)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = run(&["db", "migrate"], &url);
    assert!(ok, "{out}");
    assert!(out.contains("migrations applied"), "{out}");
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let kind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'readings'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(kind, "p", "readings is partitioned");
    // Again: nothing to do, still fine.
    let (ok, out) = run(&["db", "migrate"], &url);
    assert!(ok, "{out}");

    let (_, help) = run(&["db", "migrate", "--help"], &url);
    assert!(!help.contains(secret), "{help}");
    // An unreachable database: a clear error without the password.
    let port = free_port();
    let (ok, out) = run(
        &["db", "migrate"],
        &format!("postgres://postgres:{secret}@127.0.0.1:{port}/none"),
    );
    assert!(!ok);
    assert!(!out.contains(secret), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_times_create_no_partitions_and_never_become_the_newest_reading() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let validated = unique("validated");
    create_topics(&stack.bootstrap, &[&validated], 1).await;
    let cfg = pg_sink_config(
        dir.path(),
        &db.url,
        &[(&validated, "readings", true)],
        &unique("dlq-pg"),
    );
    let encoder = registry(&stack)
        .register(&validated, VALIDATED_READING)
        .await
        .unwrap();
    let producer = producer(&stack.bootstrap);
    let at = |y: i32, m: u32, d: u32| {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    };
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000;
    let readings = [
        scored("now", "MTR-1", now - 60_000, 1.0, 100),
        scored("y2199", "MTR-1", at(2199, 1, 1), 2.0, 100),
        scored("y1970", "MTR-1", at(1970, 1, 1), 3.0, 100),
        // Five days ahead: beyond the partitions kept ready (three days).
        scored("ahead", "MTR-1", now + 5 * day, 4.0, 100),
        // Three hours ahead: it has a partition, but it is from the future.
        scored("soon", "MTR-1", now + 3 * 3_600_000, 5.0, 100),
    ];
    for r in &readings {
        send(
            &producer,
            &validated,
            &r.asset_id,
            &encoder.encode(r).unwrap(),
        )
        .await;
    }
    let mut env = service_env(&stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", unique("pg-sink")));
    let mut sink = ServiceProcess::start(
        "gale-pg-sink",
        &env,
        &["--config", cfg.to_str().unwrap()],
        "pg-sink-absurd",
    );
    sink.wait_ready(Duration::from_secs(60)).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    wait_for("all five stored", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
                .fetch_one(&pool)
                .await
                .ok()?;
            (n == 5).then_some(())
        }
    })
    .await;
    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'readings'::regclass ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        partitions
            .iter()
            .all(|p| !p.contains("2199") && !p.contains("1970")),
        "{partitions:?}"
    );
    assert!(
        partitions.contains(&"readings_default".to_string()),
        "{partitions:?}"
    );
    let in_default: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM readings_default ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(in_default, ["ahead", "y1970", "y2199"]);
    let newest: String =
        sqlx::query_scalar("SELECT event_id FROM latest_readings WHERE asset_id = 'MTR-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(newest, "now", "no reading from the future is the newest");

    // When the day five days ahead gets its partition, its row moves there.
    sink.terminate(Duration::from_secs(30));
    let mut env = service_env(&stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", unique("pg-sink")));
    env.push(("GALE_DATABASE__PARTITIONS_AHEAD_DAYS", "7".into()));
    let again = ServiceProcess::start(
        "gale-pg-sink",
        &env,
        &["--config", cfg.to_str().unwrap()],
        "pg-sink-absurd-2",
    );
    again.wait_ready(Duration::from_secs(60)).await;
    wait_for(
        "the row to leave the default partition",
        Duration::from_secs(60),
        || {
            let pool = pool.clone();
            async move {
                let left: Vec<String> =
                    sqlx::query_scalar("SELECT event_id FROM readings_default ORDER BY 1")
                        .fetch_all(&pool)
                        .await
                        .ok()?;
                (left == ["y1970", "y2199"]).then_some(())
            }
        },
    )
    .await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 5, "moved, not lost or doubled");
}
