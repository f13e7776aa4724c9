//! validate killed with SIGKILL mid-stream, again and again: after restarts,
//! every raw record is accounted for downstream (validated, quarantined or
//! dead-lettered). Redelivery may duplicate; nothing may be missing.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use gale_model::{
    IngestChannel, Measurement, Metric, RawReading, ScoredReading, QUARANTINED_READING,
    RAW_READING, VALIDATED_READING,
};
use gale_tests::*;
use rdkafka::message::Message;

fn reading(i: usize, now: i64) -> RawReading {
    let asset = format!("MTR-{}", i % 20);
    // Every 50th reading is for an unknown asset (dead letter), every 40th is
    // out of range (quarantine); the rest validate.
    let (asset, power) = match i {
        i if i % 50 == 0 => (format!("GHOST-{i}"), 1.0),
        i if i % 40 == 0 => (asset, 42.0),
        _ => (asset, 1.0 + (i % 7) as f64 * 0.1),
    };
    RawReading {
        event_id: format!("evt-{i:06}"),
        asset_id: asset,
        asset_kind: None,
        event_time: now - 60_000 + i as i64,
        received_time: now,
        source: "crash-test".into(),
        channel: IngestChannel::Unknown,
        measurements: vec![Measurement {
            metric: Metric::Power,
            value: power,
            unit: Some("kW".into()),
        }],
        attributes: Default::default(),
        interval_ms: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets.csv");
    let mut csv = String::from("asset_id,kind,site_id\n");
    for i in 0..20 {
        csv.push_str(&format!("MTR-{i},meter,grid\n"));
    }
    std::fs::write(&assets, csv).unwrap();
    let raw = unique("raw");
    let validated = unique("validated");
    let quarantine = unique("quarantine");
    let dlq = unique("dlq");
    create_topics(&stack.bootstrap, &[&raw, &validated, &quarantine, &dlq], 3).await;

    let mut env = service_env(&stack, None);
    env.push(("GALE_TOPICS__INPUT", raw.clone()));
    env.push(("GALE_TOPICS__VALIDATED", validated.clone()));
    env.push(("GALE_TOPICS__QUARANTINE", quarantine.clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", dlq.clone()));
    env.push(("GALE_KAFKA__GROUP_ID", unique("validate")));
    env.push(("GALE_PROCESSING__BATCH_SIZE", "50".into()));
    env.push(("GALE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000".into()));
    env.push((
        "GALE_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS",
        "1000".into(),
    ));
    env.push(("GALE_VALIDATE__ASSETS__SOURCE", "file".into()));
    env.push(("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()));
    let mut validate = ServiceProcess::start("gale-validate", &env, &[], "crash-validate");
    validate.wait_ready(Duration::from_secs(60)).await;

    // Feed 6000 readings in the background while validate is killed three times.
    let total = 6000;
    let registry = registry(&stack);
    let encoder = registry.register(&raw, RAW_READING).await.unwrap();
    let producer = producer(&stack.bootstrap);
    let now = chrono::Utc::now().timestamp_millis();
    let feeder = {
        let raw = raw.clone();
        tokio::spawn(async move {
            for chunk in (0..total).collect::<Vec<_>>().chunks(200) {
                let mut sends = Vec::new();
                for &i in chunk {
                    let r = reading(i, now);
                    let payload = encoder.encode(&r).unwrap();
                    let producer = producer.clone();
                    let topic = raw.clone();
                    sends.push(async move { send(&producer, &topic, &r.asset_id, &payload).await });
                }
                futures::future::join_all(sends).await;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    let outputs = [validated.as_str(), quarantine.as_str(), dlq.as_str()];
    let watchers: Vec<TopicReader> = outputs
        .iter()
        .map(|t| TopicReader::new(&stack.bootstrap, t))
        .collect();
    let mut downstream = 0usize;
    for round in 0..3 {
        // Let it make progress, then kill it without warning.
        let target = downstream + 300;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while downstream < target {
            assert!(
                std::time::Instant::now() < deadline,
                "validate made no progress"
            );
            for w in &watchers {
                downstream += w.poll_for(Duration::from_millis(100)).len();
            }
        }
        validate.kill9();
        tokio::time::sleep(Duration::from_millis(300 * (round + 1))).await;
        validate.restart();
        validate.wait_ready(Duration::from_secs(60)).await;
    }
    feeder.await.unwrap();

    // Every event id shows up downstream.
    let mut validated_decoder = registry
        .decoder::<ScoredReading>(VALIDATED_READING)
        .unwrap();
    let mut quarantine_decoder = registry
        .decoder::<ScoredReading>(QUARANTINED_READING)
        .unwrap();
    let mut raw_decoder = registry.decoder::<RawReading>(RAW_READING).unwrap();
    let expected: HashSet<String> = (0..total).map(|i| format!("evt-{i:06}")).collect();
    let mut seen: BTreeMap<&str, HashSet<String>> = BTreeMap::new();
    let mut copies = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let readers: Vec<_> = outputs
        .iter()
        .map(|t| (*t, TopicReader::new(&stack.bootstrap, t)))
        .collect();
    loop {
        for (topic, reader) in &readers {
            for m in reader.drain(Duration::from_millis(500)) {
                let payload = m.payload().unwrap();
                let id = if *topic == validated.as_str() {
                    validated_decoder.decode(payload).await.unwrap().event_id
                } else if *topic == quarantine.as_str() {
                    quarantine_decoder.decode(payload).await.unwrap().event_id
                } else {
                    raw_decoder.decode(payload).await.unwrap().event_id
                };
                copies += 1;
                seen.entry(topic).or_default().insert(id);
            }
        }
        let all: HashSet<&String> = seen.values().flatten().collect();
        if all.len() == expected.len() || std::time::Instant::now() > deadline {
            let missing: Vec<_> = expected
                .iter()
                .filter(|e| !all.contains(e))
                .take(10)
                .collect();
            assert!(
                missing.is_empty(),
                "{} of {total} missing, e.g. {missing:?}",
                expected.len() - all.len()
            );
            break;
        }
    }
    assert_eq!(
        seen[dlq.as_str()].len(),
        total / 50,
        "unknown assets dead-lettered once each (by id)"
    );
    assert_eq!(seen[quarantine.as_str()].len(), total / 40 - total / 200);
    let duplicates = copies - expected.len();
    eprintln!(
        "{total} readings, {copies} records downstream, {duplicates} redelivered after kills"
    );
}
