//! A flush slower than the consumer's poll interval: the archive writes
//! hundreds of files to a store that takes 25 ms per write while
//! `max.poll.interval.ms` is 7 s, and readings keep arriving meanwhile. The
//! consumer must stay in its group and nothing may be lost or stored twice:
//! every event id once in the lake, the group caught up, no rebalance.

use std::time::Duration;

use gale_model::{AssetKind, IngestChannel, QualityTier, ScoredReading, VALIDATED_READING};
use gale_tests::*;

const HOUR: i64 = 3_600_000;

fn reading(i: usize, t0: i64) -> ScoredReading {
    ScoredReading {
        received_time: t0,
        validated_time: t0,
        source: "slow-flush".into(),
        channel: IngestChannel::Unknown,
        power_kw: Some(1.0),
        quality_score: 100,
        quality_tier: QualityTier::Premium,
        ..ScoredReading::new(
            format!("slow-{i:06}"),
            format!("TURBINE_{:05}", i % 4),
            AssetKind::Turbine,
            // A backfill: every reading in another hour.
            t0 + i as i64 * HOUR,
        )
    }
}

async fn feed(stack: &Stack, topic: &str, range: std::ops::Range<usize>, t0: i64) {
    let encoder = registry(stack)
        .register(topic, VALIDATED_READING)
        .await
        .unwrap();
    let producer = producer(&stack.bootstrap);
    let sends = range.map(|i| {
        let r = reading(i, t0);
        let payload = encoder.encode(&r).unwrap();
        let producer = producer.clone();
        let topic = topic.to_string();
        async move { send(&producer, &topic, &r.asset_id, &payload).await }
    });
    futures::future::join_all(sends).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_longer_than_the_poll_interval_loses_nothing() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let validated = unique("validated");
    let group = unique("archive");
    create_topics(&stack.bootstrap, &[&validated], 3).await;
    let cfg = dir.path().join("archive.toml");
    std::fs::write(
        &cfg,
        format!(
            "[archive]\nstore = {{ url = \"{}\", slow_writes = \"25ms\" }}\n\
             max_file_age = \"2s\"\ndead_letter = \"{}\"\n\n\
             [[archive.tables]]\ntopic = \"{validated}\"\npath = \"silver/validated\"\n",
            lake.display(),
            unique("dlq-archive")
        ),
    )
    .unwrap();
    let mut env = service_env(&stack, None);
    env.extend([
        ("GALE_KAFKA__GROUP_ID", group.clone()),
        (
            "GALE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS",
            "6000".to_string(),
        ),
        (
            "GALE_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS",
            "1000".to_string(),
        ),
        (
            "GALE_KAFKA__PROPERTIES__MAX_POLL_INTERVAL_MS",
            "7000".to_string(),
        ),
    ]);
    let mut archive = ServiceProcess::start(
        "gale-archive",
        &env,
        &["--config", cfg.to_str().unwrap()],
        "slow-flush-archive",
    );
    archive.wait_ready(Duration::from_secs(60)).await;

    // 600 hours: the first flush writes 600 files and 600 manifests at
    // 25 ms each, half a minute against a 7 s poll interval.
    let t0 = 1_600_000_000_000;
    let first = 600;
    let total = 900;
    feed(&stack, &validated, 0..first, t0).await;
    // More readings while that flush runs.
    tokio::time::sleep(Duration::from_secs(6)).await;
    feed(&stack, &validated, first..total, t0).await;

    let table = lake.join("silver/validated");
    wait_for(
        "every reading in the lake",
        Duration::from_secs(240),
        || {
            let table = table.clone();
            async move {
                let s = lake_stats(table.to_str().unwrap(), None, &[])?;
                (s.distinct_event_ids >= total as i64).then_some(())
            }
        },
    )
    .await;
    wait_for("the group to catch up", Duration::from_secs(60), || {
        let lag = committed_lag(&stack.bootstrap, &group, &validated);
        async move { (lag == Ok(0)).then_some(()) }
    })
    .await;
    assert_eq!(archive.terminate(Duration::from_secs(60)), Some(0));
    let stats = lake_stats(table.to_str().unwrap(), None, &[]).unwrap();
    assert_eq!(
        (stats.rows, stats.distinct_event_ids),
        (total as i64, total as i64),
        "every reading once"
    );
    let log = std::fs::read_to_string(&archive.log).unwrap();
    assert!(
        log.contains("consumption paused while waiting"),
        "the consumer was paused and polled during the long flush"
    );
    assert!(
        !log.contains("maximum poll interval") && !log.contains("MAXPOLL"),
        "the archive left its group during the flush; see {}",
        archive.log.display()
    );
    assert!(
        !log.contains("partition revoked; dropping its buffer"),
        "no partition was taken away; see {}",
        archive.log.display()
    );
}
