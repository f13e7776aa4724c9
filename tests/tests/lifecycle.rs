//! SIGTERM drains and commits: the service exits cleanly within its bound,
//! and a restart in the same group re-processes nothing.

use std::time::Duration;

use gale_model::{IngestChannel, Measurement, Metric, RawReading, RAW_READING};
use gale_tests::*;

fn reading(i: usize, now: i64) -> RawReading {
    RawReading {
        event_id: format!("life-{i}"),
        asset_id: format!("MTR-{}", i % 5),
        asset_kind: None,
        event_time: now - 10_000 + i as i64,
        received_time: now,
        source: "lifecycle".into(),
        channel: IngestChannel::Unknown,
        measurements: vec![Measurement {
            metric: Metric::Power,
            value: 2.0,
            unit: Some("kW".into()),
        }],
        attributes: Default::default(),
        interval_ms: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_commits_and_exits_cleanly() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets.csv");
    std::fs::write(
        &assets,
        "asset_id,kind\nMTR-0,meter\nMTR-1,meter\nMTR-2,meter\nMTR-3,meter\nMTR-4,meter\n",
    )
    .unwrap();
    let raw = unique("raw");
    let validated = unique("validated");
    create_topics(&stack.bootstrap, &[&raw, &validated], 3).await;
    let mut env = service_env(&stack, None);
    env.push(("GALE_TOPICS__INPUT", raw.clone()));
    env.push(("GALE_TOPICS__VALIDATED", validated.clone()));
    env.push(("GALE_TOPICS__QUARANTINE", unique("q")));
    env.push(("GALE_TOPICS__DEAD_LETTER", unique("dlq")));
    env.push(("GALE_KAFKA__GROUP_ID", unique("validate")));
    env.push(("GALE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000".into()));
    env.push(("GALE_VALIDATE__ASSETS__SOURCE", "file".into()));
    env.push(("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()));
    let mut validate = ServiceProcess::start("gale-validate", &env, &[], "lifecycle-validate");
    validate.wait_ready(Duration::from_secs(60)).await;

    let encoder = registry(&stack).register(&raw, RAW_READING).await.unwrap();
    let producer = producer(&stack.bootstrap);
    let now = chrono::Utc::now().timestamp_millis();
    for i in 0..500 {
        let r = reading(i, now);
        send(&producer, &raw, &r.asset_id, &encoder.encode(&r).unwrap()).await;
    }
    let reader = TopicReader::new(&stack.bootstrap, &validated);
    reader.read(500, Duration::from_secs(60));

    let started = std::time::Instant::now();
    let code = validate.terminate(Duration::from_secs(25));
    assert_eq!(code, Some(0), "clean exit on SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(20));
    let log = std::fs::read_to_string(&validate.log).unwrap();
    assert!(
        log.contains("pipeline stopped"),
        "drained and stopped, not killed"
    );

    // Same group again: only new records are processed.
    validate.restart();
    validate.wait_ready(Duration::from_secs(60)).await;
    for i in 500..600 {
        let r = reading(i, now);
        send(&producer, &raw, &r.asset_id, &encoder.encode(&r).unwrap()).await;
    }
    reader.read(100, Duration::from_secs(60));
    let extra = reader.drain(Duration::from_secs(3));
    assert!(
        extra.is_empty(),
        "{} records re-processed after a clean stop",
        extra.len()
    );
}
