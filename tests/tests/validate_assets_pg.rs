//! validate with its asset registry in Postgres (`validate.assets.source =
//! "postgres"`), against the real broker, registry and a fresh database per
//! test: known assets pass, unknown ones are dead-lettered, an asset added
//! while validate runs is accepted without a reload, a failing refresh
//! keeps the cached list in service, and a database that is not there yet
//! at start makes validate wait (not ready) instead of exiting.

use std::time::{Duration, Instant};

use gale_model::{
    IngestChannel, Measurement, Metric, RawReading, ScoredReading, RAW_READING, VALIDATED_READING,
};
use gale_runtime::avro::Encoder;
use gale_tests::*;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;

struct Topics {
    raw: String,
    validated: String,
    quarantine: String,
    dlq: String,
}

async fn topics(stack: &Stack) -> Topics {
    let t = Topics {
        raw: unique("raw"),
        validated: unique("validated"),
        quarantine: unique("quarantine"),
        dlq: unique("dlq-validate"),
    };
    create_topics(
        &stack.bootstrap,
        &[&t.raw, &t.validated, &t.quarantine, &t.dlq],
        1,
    )
    .await;
    t
}

fn start_validate(
    stack: &Stack,
    t: &Topics,
    database_url: &str,
    refresh: &str,
    label: &str,
) -> ServiceProcess {
    let mut env = service_env(stack, None);
    env.push(("GALE_TOPICS__INPUT", t.raw.clone()));
    env.push(("GALE_TOPICS__VALIDATED", t.validated.clone()));
    env.push(("GALE_TOPICS__QUARANTINE", t.quarantine.clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", t.dlq.clone()));
    env.push(("GALE_KAFKA__GROUP_ID", unique("validate")));
    env.push(("GALE_VALIDATE__ASSETS__SOURCE", "postgres".into()));
    env.push(("GALE_VALIDATE__ASSETS__URL", database_url.to_string()));
    env.push(("GALE_VALIDATE__ASSETS__REFRESH", refresh.into()));
    env.push(("GALE_VALIDATE__ASSETS__UNKNOWN_TTL", "2s".into()));
    ServiceProcess::start("gale-validate", &env, &[], label)
}

struct Feed {
    producer: FutureProducer,
    encoder: Encoder,
    topic: String,
    n: usize,
}

impl Feed {
    async fn new(stack: &Stack, topic: &str) -> Feed {
        Feed {
            producer: producer(&stack.bootstrap),
            encoder: registry(stack).register(topic, RAW_READING).await.unwrap(),
            topic: topic.to_string(),
            n: 0,
        }
    }

    /// Sends a clean 1.5 kW meter reading of `asset`; returns its event id.
    async fn send(&mut self, asset: &str) -> String {
        self.n += 1;
        let now = chrono::Utc::now().timestamp_millis();
        let r = RawReading {
            event_id: format!("{}-{asset}-{}", self.topic, self.n),
            asset_id: asset.into(),
            asset_kind: None,
            event_time: now - 1_000,
            received_time: now,
            source: "assets-pg-test".into(),
            channel: IngestChannel::Unknown,
            measurements: vec![Measurement {
                metric: Metric::Power,
                value: 1.5,
                unit: Some("kW".into()),
            }],
            attributes: Default::default(),
            interval_ms: None,
        };
        let payload = self.encoder.encode(&r).unwrap();
        send(&self.producer, &self.topic, asset, &payload).await;
        r.event_id
    }
}

async fn insert_asset(pool: &sqlx::PgPool, table: &str, id: &str) {
    sqlx::query(&format!(
        "INSERT INTO {table} (asset_id, kind, site_id) VALUES ($1, 'meter', 'grid-test')"
    ))
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

/// Event ids on the validated topic, read so far by `reader`.
async fn validated_ids(
    reader: &TopicReader,
    decoder: &mut gale_runtime::avro::Decoder<ScoredReading>,
    window: Duration,
) -> Vec<String> {
    let mut ids = Vec::new();
    for m in reader.poll_for(window) {
        ids.push(decoder.decode(m.payload().unwrap()).await.unwrap().event_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_assets_pg_known_pass_unknown_dead_letter_new_ones_join_at_once() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    // pg-sink first: its migration creates the table validate then uses.
    gale_pg_sink::db::migrate(&pool).await.unwrap();
    insert_asset(&pool, "gale_assets", "MTR-KNOWN").await;
    let t = topics(&stack).await;
    // A refresh far away: only single-row lookups can find new assets.
    let validate = start_validate(&stack, &t, &db.url, "1h", "assets-pg-lookup");
    validate.wait_ready(Duration::from_secs(60)).await;

    let mut feed = Feed::new(&stack, &t.raw).await;
    let known = feed.send("MTR-KNOWN").await;
    feed.send("MTR-GHOST").await;
    let validated = TopicReader::new(&stack.bootstrap, &t.validated);
    let dlq = TopicReader::new(&stack.bootstrap, &t.dlq);
    let mut decoder = registry(&stack)
        .decoder::<ScoredReading>(VALIDATED_READING)
        .unwrap();
    let first = validated.read(1, Duration::from_secs(30));
    let first = decoder.decode(first[0].payload().unwrap()).await.unwrap();
    assert_eq!(first.event_id, known);
    assert_eq!(first.site_id.as_deref(), Some("grid-test"));
    let dead = dlq.read(1, Duration::from_secs(30));
    assert_eq!(dead[0].key(), Some(b"MTR-GHOST".as_slice()));
    assert_eq!(
        header(&dead[0], "gale.dlq.error.class").as_deref(),
        Some("unknown_asset")
    );

    // Registered while validate runs: accepted on its first reading.
    insert_asset(&pool, "gale_assets", "MTR-NEW").await;
    let new = feed.send("MTR-NEW").await;
    let got = validated.read(1, Duration::from_secs(30));
    assert_eq!(
        decoder
            .decode(got[0].payload().unwrap())
            .await
            .unwrap()
            .event_id,
        new
    );

    // The ghost was remembered as unknown; once registered, it is accepted
    // after unknown_ttl (2 s) at the latest.
    insert_asset(&pool, "gale_assets", "MTR-GHOST").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = Vec::new();
    loop {
        sent.push(feed.send("MTR-GHOST").await);
        let ids = validated_ids(&validated, &mut decoder, Duration::from_millis(700)).await;
        if ids.iter().any(|id| sent.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a registered asset is still refused"
        );
    }
    assert!(sent.len() <= 15, "accepted within about unknown_ttl");
    assert!(
        validated_ids(&validated, &mut decoder, Duration::from_secs(2))
            .await
            .iter()
            .all(|id| sent.contains(id)),
        "nothing else arrives"
    );
    let metrics = validate.metrics().await;
    assert!(
        metrics.contains("gale_asset_registry_lookups_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_assets_pg_failed_refresh_keeps_serving_the_cached_list() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let t = topics(&stack).await;
    let validate = start_validate(&stack, &t, &db.url, "1s", "assets-pg-refresh");
    validate.wait_ready(Duration::from_secs(60)).await;
    // validate created the table; an asset added now arrives with the next refresh.
    insert_asset(&pool, "gale_assets", "MTR-CACHED").await;
    wait_for(
        "the refresh to load the new asset",
        Duration::from_secs(30),
        || {
            let validate = &validate;
            async move {
                validate
                    .metrics()
                    .await
                    .lines()
                    .any(|l| l.starts_with("gale_asset_registry_assets") && l.ends_with(" 1"))
                    .then_some(())
            }
        },
    )
    .await;

    // The table goes away: refreshes fail, the cached list stays in service.
    sqlx::query("ALTER TABLE gale_assets RENAME TO gale_assets_away")
        .execute(&pool)
        .await
        .unwrap();
    wait_for(
        "a failed refresh to be counted",
        Duration::from_secs(30),
        || {
            let validate = &validate;
            async move {
                validate
                    .metrics()
                    .await
                    .lines()
                    .any(|l| {
                        l.starts_with("gale_asset_registry_refresh_failures_total")
                            && !l.ends_with(" 0")
                    })
                    .then_some(())
            }
        },
    )
    .await;
    let mut feed = Feed::new(&stack, &t.raw).await;
    let id = feed.send("MTR-CACHED").await;
    assert_validated(&stack, &t.validated, &id).await;
    assert_eq!(validate.readiness().await, 200, "not paused");
    sqlx::query("ALTER TABLE gale_assets_away RENAME TO gale_assets")
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_assets_pg_waits_for_a_database_that_is_not_there_yet() {
    let stack = stack();
    let name = unique("gale_test").replace('-', "_");
    let url = database_url(&stack, &name);
    let t = topics(&stack).await;
    let mut validate = start_validate(&stack, &t, &url, "60s", "assets-pg-wait");
    // Not ready, with the reason, and still running rather than exiting.
    let client = reqwest::Client::new();
    let body = wait_for(
        "validate to report its asset registry not ready",
        Duration::from_secs(60),
        || {
            let (client, url) = (&client, format!("http://{}/readyz", validate.http));
            async move {
                let r = client.get(url).send().await.ok()?;
                let status = r.status().as_u16();
                let body = r.text().await.ok()?;
                (status == 503 && body.contains("asset_registry")).then_some(body)
            }
        },
    )
    .await;
    assert!(body.contains("gale_assets"), "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(validate.running(), "validate gave up instead of waiting");
    assert_eq!(validate.readiness().await, 503);

    // The database appears: validate creates its table and becomes ready.
    let db = create_database(&stack, &name).await;
    validate.wait_ready(Duration::from_secs(60)).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    // pg-sink's migration runs fine after validate created the table.
    gale_pg_sink::db::migrate(&pool).await.unwrap();
    insert_asset(&pool, "gale_assets", "MTR-LATE").await;
    let mut feed = Feed::new(&stack, &t.raw).await;
    let id = feed.send("MTR-LATE").await;
    assert_validated(&stack, &t.validated, &id).await;
}

/// The next validated reading (read from the start of `topic`) is `event_id`.
async fn assert_validated(stack: &Stack, topic: &str, event_id: &str) {
    let got = TopicReader::new(&stack.bootstrap, topic).read(1, Duration::from_secs(30));
    let mut decoder = registry(stack)
        .decoder::<ScoredReading>(VALIDATED_READING)
        .unwrap();
    let reading = decoder.decode(got[0].payload().unwrap()).await.unwrap();
    assert_eq!(reading.event_id, event_id);
}
