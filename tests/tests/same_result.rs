//! Same input, same result: validate's score and tier of every reading is a
//! function of the input stream alone. Three validate deployments read one
//! raw topic while it is fed: one runs undisturbed, one is killed with
//! SIGKILL three times, one sees a second instance join its group and leave
//! again. Every event id must come out of the disturbed ones with exactly
//! one (tier, score), equal to the undisturbed run's; readings the
//! rate-of-change rules flag (they depend on the asset's history, which is
//! durable state) are among them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use gale_model::{
    IngestChannel, Measurement, Metric, QualityTier, RawReading, ScoredReading,
    QUARANTINED_READING, RAW_READING, VALIDATED_READING,
};
use gale_tests::*;
use rdkafka::message::Message;

const ASSETS: usize = 30;
const TOTAL: usize = 6000;

/// Reading `i`: per asset a value pattern with spikes and drops, some
/// readings out of event-time order, a repeat of an earlier reading and a
/// second reading at an earlier one's time.
fn reading(i: usize, t0: i64) -> RawReading {
    let asset = i % ASSETS;
    let n = i / ASSETS;
    let power = [1.0, 1.1, 8.0, 1.0, 0.05, 1.2, 1.3, 30.0][n % 8];
    // Every 7th reading of an asset arrives 2.5 intervals late.
    let slot = if n % 7 == 3 { n as i64 - 3 } else { n as i64 };
    let mut r = RawReading {
        event_id: format!("evt-{i:06}"),
        asset_id: format!("MTR-{asset:03}"),
        asset_kind: None,
        event_time: t0 + slot * 60_000 + 7,
        received_time: t0 + n as i64 * 60_000 + 30_000,
        source: "same-result".into(),
        channel: IngestChannel::Unknown,
        measurements: vec![Measurement {
            metric: Metric::Power,
            value: power,
            unit: Some("kW".into()),
        }],
        attributes: Default::default(),
        interval_ms: None,
    };
    if n % 11 == 5 {
        // The asset's reading two intervals back, sent again.
        let earlier = reading(i - 2 * ASSETS, t0);
        r = earlier;
    } else if n % 13 == 6 {
        // Another reading at the time of the previous one.
        r.event_time = t0 + (n as i64 - 1) * 60_000 + 7;
    }
    r
}

type Results = HashMap<String, BTreeSet<(bool, i32)>>;

/// The validate environment for one deployment reading `raw`.
fn deployment(
    stack: &Stack,
    raw: &str,
    assets: &std::path::Path,
    group: &str,
    outputs: &[String; 3],
) -> Vec<(&'static str, String)> {
    let mut env = service_env(stack, None);
    env.push(("GALE_TOPICS__INPUT", raw.into()));
    env.push(("GALE_TOPICS__VALIDATED", outputs[0].clone()));
    env.push(("GALE_TOPICS__QUARANTINE", outputs[1].clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", outputs[2].clone()));
    env.push(("GALE_KAFKA__GROUP_ID", group.into()));
    env.push(("GALE_PROCESSING__BATCH_SIZE", "40".into()));
    env.push(("GALE_STATE__COMMIT_INTERVAL", "150ms".into()));
    env.push(("GALE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000".into()));
    env.push((
        "GALE_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS",
        "1000".into(),
    ));
    env.push(("GALE_VALIDATE__MODE", "backfill".into()));
    env.push(("GALE_VALIDATE__ASSETS__SOURCE", "file".into()));
    env.push(("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()));
    env
}

/// Every (tier, score) each event id came out with, once all `expected`
/// ids are accounted for (dead letters count with score -1).
async fn results(stack: &Stack, outputs: &[String; 3], expected: usize) -> Results {
    let registry = registry(stack);
    let mut validated = registry
        .decoder::<ScoredReading>(VALIDATED_READING)
        .unwrap();
    let mut quarantined = registry
        .decoder::<ScoredReading>(QUARANTINED_READING)
        .unwrap();
    let mut raw = registry.decoder::<RawReading>(RAW_READING).unwrap();
    let readers: Vec<TopicReader> = outputs
        .iter()
        .map(|t| TopicReader::new(&stack.bootstrap, t))
        .collect();
    let mut out: Results = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while out.len() < expected {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} event ids came out",
            out.len()
        );
        for (k, reader) in readers.iter().enumerate() {
            for m in reader.poll_for(Duration::from_millis(200)) {
                let payload = m.payload().unwrap();
                let (id, result) = match k {
                    0 | 1 => {
                        let d = if k == 0 {
                            &mut validated
                        } else {
                            &mut quarantined
                        };
                        let s = d.decode(payload).await.unwrap();
                        let quarantined = s.quality_tier == QualityTier::Quarantine;
                        assert_eq!(quarantined, k == 1, "tier and topic agree");
                        (s.event_id, (quarantined, s.quality_score))
                    }
                    _ => (raw.decode(payload).await.unwrap().event_id, (true, -1)),
                };
                out.entry(id).or_default().insert(result);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_input_same_result_through_kills_and_rebalances() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets.csv");
    let mut csv = String::from("asset_id,kind,site_id\n");
    for a in 0..ASSETS {
        csv.push_str(&format!("MTR-{a:03},meter,grid\n"));
    }
    std::fs::write(&assets, csv).unwrap();
    let raw = unique("raw");
    create_topics(&stack.bootstrap, &[&raw], 3).await;
    let outputs = |tag: &str| -> [String; 3] {
        [
            unique(&format!("validated-{tag}")),
            unique(&format!("quarantine-{tag}")),
            unique(&format!("dlq-{tag}")),
        ]
    };
    let (steady_out, killed_out, moved_out) = (outputs("a"), outputs("b"), outputs("c"));
    for o in [&steady_out, &killed_out, &moved_out] {
        create_topics(&stack.bootstrap, &[&o[0], &o[1], &o[2]], 3).await;
    }
    let steady_env = deployment(&stack, &raw, &assets, &unique("steady"), &steady_out);
    let killed_env = deployment(&stack, &raw, &assets, &unique("killed"), &killed_out);
    let moved_env = deployment(&stack, &raw, &assets, &unique("moved"), &moved_out);
    let mut steady = ServiceProcess::start("gale-validate", &steady_env, &[], "same-steady");
    let mut killed = ServiceProcess::start("gale-validate", &killed_env, &[], "same-killed");
    let mut moved = ServiceProcess::start("gale-validate", &moved_env, &[], "same-moved-1");
    for p in [&steady, &killed, &moved] {
        p.wait_ready(Duration::from_secs(60)).await;
    }

    // Feed the raw topic over about 40 s, so the disturbances fall in the
    // middle of it.
    let registry = registry(&stack);
    let encoder = registry.register(&raw, RAW_READING).await.unwrap();
    let producer = producer(&stack.bootstrap);
    let t0 = 1_700_000_000_000;
    let readings: Vec<RawReading> = (0..TOTAL).map(|i| reading(i, t0)).collect();
    let distinct: BTreeSet<String> = readings.iter().map(|r| r.event_id.clone()).collect();
    let feeder = {
        let raw = raw.clone();
        tokio::spawn(async move {
            for chunk in readings.chunks(100) {
                let sends = chunk.iter().map(|r| {
                    let payload = encoder.encode(r).unwrap();
                    let producer = producer.clone();
                    let topic = raw.clone();
                    let key = r.asset_id.clone();
                    async move { send(&producer, &topic, &key, &payload).await }
                });
                futures::future::join_all(sends).await;
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
        })
    };

    // Disturb two of them while the feed runs.
    let progress = |outs: &[String; 3]| {
        outs.iter()
            .map(|t| record_count(&stack.bootstrap, t))
            .sum::<i64>()
    };
    let mut second = None;
    for round in 0..3 {
        let target = (round as i64 + 1) * TOTAL as i64 / 4;
        wait_for("validate to make progress", Duration::from_secs(90), || {
            let done = progress(&killed_out) >= target && progress(&moved_out) >= target;
            async move { done.then_some(()) }
        })
        .await;
        killed.kill9();
        match round {
            0 => {
                // A second instance joins the group: partitions move to it.
                let p = ServiceProcess::start("gale-validate", &moved_env, &[], "same-moved-2");
                p.wait_ready(Duration::from_secs(60)).await;
                second = Some(p);
            }
            2 => {
                // ...and leaves again: they move back.
                if let Some(mut p) = second.take() {
                    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0));
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200 * (round as u64 + 1))).await;
        killed.restart();
        killed.wait_ready(Duration::from_secs(60)).await;
    }
    feeder.await.unwrap();

    let expected = results(&stack, &steady_out, distinct.len()).await;
    let after_kills = results(&stack, &killed_out, distinct.len()).await;
    let after_moves = results(&stack, &moved_out, distinct.len()).await;
    let flagged = expected
        .values()
        .filter(|r| r.iter().any(|(q, s)| !q && *s < 100))
        .count();
    assert!(
        flagged > 100,
        "the input exercises the stateful rules ({flagged} flagged but validated)"
    );
    for (name, got) in [("killed", &after_kills), ("rebalanced", &after_moves)] {
        let mut differ = BTreeMap::new();
        for id in &distinct {
            let want = &expected[id];
            assert_eq!(want.len(), 1, "the undisturbed run gives {id} one result");
            if got.get(id) != Some(want) {
                differ.insert(id.clone(), (want.clone(), got.get(id).cloned()));
            }
        }
        assert!(
            differ.is_empty(),
            "{name}: {} of {} readings got another or a second result, e.g. {:?}",
            differ.len(),
            distinct.len(),
            differ.iter().take(5).collect::<Vec<_>>()
        );
    }
    for p in [&mut steady, &mut killed, &mut moved] {
        p.terminate(Duration::from_secs(30));
    }
}
