//! The broker stops under ingest: requests get 503, and every row that was
//! answered 2xx is on the raw topic once the broker is back.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use gale_model::{RawReading, RAW_READING};
use gale_tests::*;
use rdkafka::message::Message;

const API_KEY: &str = "outage-test-key-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_gives_503_and_loses_no_acknowledged_row() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path()).await;
    let raw = unique("raw");
    let cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &cfg,
        format!("[[ingest.sources]]\nname = \"meters\"\napi_keys = [\"{API_KEY}\"]\n"),
    )
    .unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let mut env = service_env(&stack, Some(&broker.bootstrap()));
    env.push(("GALE_TOPICS__RAW", raw.clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", unique("dlq")));
    env.push(("GALE_INGEST__LISTEN", api.clone()));
    env.push(("GALE_INGEST__ACK_TIMEOUT", "3s".into()));
    // Tansu 0.6's SQLite engine panics on an idempotent producer's state after
    // a restart ("more or less than one row"), so this test turns idempotence
    // off through the pass-through properties. Readings carry deterministic
    // event ids, so retried sends stay harmless downstream either way.
    env.push(("GALE_KAFKA__PROPERTIES__ENABLE_IDEMPOTENCE", "false".into()));
    let ingest = ServiceProcess::start(
        "gale-ingest",
        &env,
        &["--config", cfg.to_str().unwrap()],
        "outage-ingest",
    );
    ingest.wait_ready(Duration::from_secs(60)).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = format!("http://{api}/v1/readings");
    let base = chrono::Utc::now().timestamp_millis() - 600_000;
    let mut acknowledged: HashSet<(String, i64)> = HashSet::new();
    let mut statuses = Vec::new();
    let mut seq = 0i64;
    let mut post = |client: reqwest::Client| {
        seq += 1;
        let rows: Vec<(String, i64)> = (0..20)
            .map(|i| (format!("MTR-{i}"), base + seq * 1000 + i))
            .collect();
        let body: String = std::iter::once("asset_id,timestamp,power,power_unit".to_string())
            .chain(rows.iter().map(|(a, t)| format!("{a},{t},1.5,kW")))
            .collect::<Vec<_>>()
            .join("\n");
        let url = url.clone();
        async move {
            let status = client
                .post(&url)
                .header("X-Api-Key", API_KEY)
                .header("Content-Type", "text/csv")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or_else(|e| {
                    eprintln!("request failed: {e}");
                    0
                });
            (status, rows)
        }
    };

    // Healthy: everything is accepted.
    for _ in 0..5 {
        let (status, rows) = post(client.clone()).await;
        assert_eq!(status, 200);
        acknowledged.extend(rows);
    }
    // Broker down: requests must not be answered 2xx for rows that are not stored.
    broker.stop();
    let down_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < down_until {
        let (status, rows) = post(client.clone()).await;
        statuses.push(status);
        if (200..300).contains(&status) {
            acknowledged.extend(rows);
        }
    }
    assert!(
        statuses.contains(&503),
        "no 503 while the broker was down: {statuses:?}"
    );
    wait_for(
        "ingest to report not ready",
        Duration::from_secs(30),
        || async { (ingest.readiness().await == 503).then_some(()) },
    )
    .await;
    // Broker back: acceptance resumes by itself.
    broker.start_again().await;
    let recovered = Instant::now() + Duration::from_secs(60);
    let mut after = 0;
    while after < 5 {
        assert!(
            Instant::now() < recovered,
            "ingest did not recover: {statuses:?}"
        );
        let (status, rows) = post(client.clone()).await;
        statuses.push(status);
        if status == 200 {
            acknowledged.extend(rows);
            after += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Every acknowledged row is on the raw topic.
    let registry = registry(&stack);
    let mut decoder = registry.decoder::<RawReading>(RAW_READING).unwrap();
    let reader = TopicReader::new(&broker.bootstrap(), &raw);
    let mut stored: HashSet<(String, i64)> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !acknowledged.is_subset(&stored) && Instant::now() < deadline {
        for m in reader.drain(Duration::from_secs(1)) {
            let r = decoder.decode(m.payload().unwrap()).await.unwrap();
            stored.insert((r.asset_id, r.event_time));
        }
    }
    let missing = acknowledged.difference(&stored).count();
    assert_eq!(
        missing, 0,
        "{missing} acknowledged rows missing; statuses {statuses:?}"
    );
    eprintln!(
        "statuses during the test: {statuses:?}; {} rows acknowledged, {} stored",
        acknowledged.len(),
        stored.len()
    );
}
