//! ingest → validate end to end on the real broker and registry: one batch
//! with a valid reading, a low-quality one, an unknown asset, an unparseable
//! row, a value in W and a future timestamp lands exactly where the rules say.

use std::time::Duration;

use gale_model::{
    FlagCode, QualityTier, RawReading, ScoredReading, QUARANTINED_READING, RAW_READING,
    VALIDATED_READING,
};
use gale_runtime::telemetry::trace_id_of;
use gale_tests::*;
use rdkafka::message::Message;

const API_KEY: &str = "test-meter-key-0001";

pub struct Pipeline {
    pub raw: String,
    pub validated: String,
    pub quarantine: String,
    pub dlq_validate: String,
    pub dlq_ingest: String,
    pub ingest: ServiceProcess,
    pub validate: ServiceProcess,
    pub api: String,
    _dir: tempfile::TempDir,
}

fn assets_csv() -> &'static str {
    "asset_id,kind,site_id\nMTR-1,meter,grid-north\nMTR-2,meter,grid-north\nMTR-3,meter,grid-south\nMTR-4,meter,grid-south\nMTR-5,meter,grid-south\nTURBINE_00001,turbine,farm-a\n"
}

async fn start_pipeline(stack: &Stack, label: &str) -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets.csv");
    std::fs::write(&assets, assets_csv()).unwrap();
    let ingest_cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &ingest_cfg,
        format!("[[ingest.sources]]\nname = \"meters\"\napi_keys = [\"{API_KEY}\"]\n"),
    )
    .unwrap();
    let raw = unique("raw");
    let validated = unique("validated");
    let quarantine = unique("quarantine");
    let dlq_validate = unique("dlq-validate");
    let dlq_ingest = unique("dlq-ingest");
    let api = format!("127.0.0.1:{}", free_port());

    let mut env = service_env(stack, None);
    env.push(("GALE_TOPICS__RAW", raw.clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", dlq_ingest.clone()));
    env.push(("GALE_INGEST__LISTEN", api.clone()));
    env.push(("GALE_INGEST__ACK_TIMEOUT", "5s".into()));
    let ingest = ServiceProcess::start(
        "gale-ingest",
        &env,
        &["--config", ingest_cfg.to_str().unwrap()],
        &format!("{label}-ingest"),
    );

    let mut env = service_env(stack, None);
    env.push(("GALE_TOPICS__INPUT", raw.clone()));
    env.push(("GALE_TOPICS__VALIDATED", validated.clone()));
    env.push(("GALE_TOPICS__QUARANTINE", quarantine.clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", dlq_validate.clone()));
    env.push(("GALE_KAFKA__GROUP_ID", unique("validate")));
    env.push(("GALE_VALIDATE__ASSETS__SOURCE", "file".into()));
    env.push(("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()));
    let validate = ServiceProcess::start("gale-validate", &env, &[], &format!("{label}-validate"));

    ingest.wait_ready(Duration::from_secs(60)).await;
    validate.wait_ready(Duration::from_secs(60)).await;
    Pipeline {
        raw,
        validated,
        quarantine,
        dlq_validate,
        dlq_ingest,
        ingest,
        validate,
        api,
        _dir: dir,
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_lands_exactly_where_the_rules_say() {
    let stack = stack();
    let p = start_pipeline(&stack, "rules").await;
    let now = chrono::Utc::now().timestamp_millis();
    let t = iso(now - 60_000);
    let future = iso(now + 3 * 3_600_000);
    let body = format!(
        "asset_id,timestamp,power,power_unit\n\
         MTR-1,{t},3.2,kW\n\
         MTR-2,{t},25,kW\n\
         UNKNOWN-9,{t},1.0,kW\n\
         MTR-3,not-a-time,1.0,kW\n\
         MTR-4,{t},1250,W\n\
         MTR-5,{future},2.0,kW\n"
    );
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{}/v1/readings", p.api))
        .header("Authorization", format!("Bearer {API_KEY}"))
        .header("Content-Type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 207);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["accepted"], 5);
    assert_eq!(answer["rejected"], 1);
    assert_eq!(answer["errors"][0]["line"], 5);
    assert!(
        answer["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not-a-time"),
        "{answer}"
    );

    let registry = registry(&stack);
    let raw_records = TopicReader::new(&stack.bootstrap, &p.raw).read(5, Duration::from_secs(30));
    let mut raw_decoder = registry.decoder::<RawReading>(RAW_READING).unwrap();
    let mut raws = Vec::new();
    for m in &raw_records {
        raws.push(raw_decoder.decode(m.payload().unwrap()).await.unwrap());
    }

    let validated_reader = TopicReader::new(&stack.bootstrap, &p.validated);
    let quarantine_reader = TopicReader::new(&stack.bootstrap, &p.quarantine);
    let dlq_reader = TopicReader::new(&stack.bootstrap, &p.dlq_validate);
    let mut validated = validated_reader.read(2, Duration::from_secs(30));
    let quarantined = quarantine_reader.read(2, Duration::from_secs(30));
    let dead = dlq_reader.read(1, Duration::from_secs(30));
    // Nothing more arrives.
    validated.extend(validated_reader.drain(Duration::from_secs(2)));
    assert_eq!(validated.len(), 2, "exactly two validated readings");
    assert!(quarantine_reader
        .drain(Duration::from_millis(500))
        .is_empty());
    assert!(dlq_reader.drain(Duration::from_millis(500)).is_empty());

    let mut decoder = registry
        .decoder::<ScoredReading>(VALIDATED_READING)
        .unwrap();
    let mut by_asset = std::collections::BTreeMap::new();
    for m in &validated {
        let r = decoder.decode(m.payload().unwrap()).await.unwrap();
        assert_eq!(m.key(), Some(r.asset_id.as_bytes()), "keyed by asset id");
        by_asset.insert(r.asset_id.clone(), (r, m));
    }
    let (clean, _) = &by_asset["MTR-1"];
    assert_eq!(
        (clean.quality_score, clean.quality_tier),
        (100, QualityTier::Premium)
    );
    assert_eq!(clean.power_kw, Some(3.2));
    assert_eq!(clean.site_id.as_deref(), Some("grid-north"));
    let (watts, _) = &by_asset["MTR-4"];
    assert_eq!(watts.power_kw, Some(1.25));
    assert_eq!(
        (watts.quality_score, watts.quality_tier),
        (95, QualityTier::Premium)
    );
    assert_eq!(watts.flags[0].code, FlagCode::UnitConverted);
    let mut qdecoder = registry
        .decoder::<ScoredReading>(QUARANTINED_READING)
        .unwrap();
    let mut held = std::collections::BTreeMap::new();
    for m in &quarantined {
        let r = qdecoder.decode(m.payload().unwrap()).await.unwrap();
        held.insert(r.asset_id.clone(), r);
    }
    // Three hours ahead of reception: out of the +-1 h tolerance, held back.
    let fut = &held["MTR-5"];
    assert_eq!(
        (fut.quality_score, fut.quality_tier),
        (85, QualityTier::Quarantine)
    );
    assert_eq!(fut.flags[0].code, FlagCode::FutureTimestamp);
    let low = &held["MTR-2"];
    assert_eq!(low.asset_id, "MTR-2");
    assert_eq!(low.quality_tier, QualityTier::Quarantine);
    assert_eq!(low.flags[0].code, FlagCode::OutOfRange);
    assert!(low.flags[0].quarantine);

    // The dead letter is the raw record, byte for byte, with its story in headers.
    let dl = &dead[0];
    let original = raw_records
        .iter()
        .find(|m| m.key() == Some(b"UNKNOWN-9".as_slice()))
        .expect("raw record of the unknown asset");
    assert_eq!(dl.payload(), original.payload(), "original bytes unchanged");
    assert_eq!(dl.key(), original.key());
    let h = headers(dl);
    assert_eq!(h["gale.dlq.stage"], "validate");
    assert_eq!(h["gale.dlq.error.class"], "unknown_asset");
    assert!(h["gale.dlq.error.message"].contains("UNKNOWN-9"), "{h:?}");
    assert_eq!(h["gale.dlq.original.topic"], p.raw);
    assert_eq!(
        h["gale.dlq.original.partition"],
        original.partition().to_string()
    );
    assert_eq!(h["gale.dlq.original.offset"], original.offset().to_string());
    assert!(!h["gale.dlq.original.timestamp"].is_empty());
    assert_eq!(h["gale.dlq.attempts"], "1");
    assert!(h["gale.dlq.time"].ends_with('Z'));

    // One reading is one trace: ingest's traceparent continues in validate's output.
    for (r, m) in by_asset.values() {
        let raw = raw_records
            .iter()
            .zip(&raws)
            .find(|(_, d)| d.event_id == r.event_id)
            .map(|(m, _)| m)
            .expect("raw record for every validated one");
        let up = header(raw, "traceparent").expect("raw traceparent");
        let down = header(m, "traceparent").expect("validated traceparent");
        assert_eq!(trace_id_of(&up), trace_id_of(&down));
        // Spans are not exported in tests, so validate forwards the context
        // as it came (an exporting hop writes its own span id instead).
        assert_eq!(up, down, "validate forwards the trace context");
    }

    // Metrics count what happened.
    let metrics = p.validate.metrics().await;
    assert!(
        metrics.contains("gale_records_dead_lettered_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("error_class=\"unknown_asset\""),
        "{metrics}"
    );
    let _ = &p.dlq_ingest;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_rejects_bad_keys_bodies_and_sizes_clearly() {
    let stack = stack();
    let p = start_pipeline(&stack, "api").await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/readings", p.api);
    let no_key = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(no_key.status().as_u16(), 401);
    let wrong = client
        .post(&url)
        .header("X-Api-Key", "wrong-key-123456")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let broken = client
        .post(&url)
        .header("X-Api-Key", API_KEY)
        .header("Content-Type", "application/json")
        .body("{\"asset_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status().as_u16(), 400);
    let text = broken.text().await.unwrap();
    assert!(text.contains("not valid JSON"), "{text}");
    // Its own connection: the server answers 413 and closes it mid-upload.
    let huge = reqwest::Client::new()
        .post(&url)
        .header("X-Api-Key", API_KEY)
        .header("Content-Type", "text/csv")
        .body(vec![b'a'; 17 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status().as_u16(), 413);
    // JSON array with NaN-like and empty values: missing, not errors.
    let ok = client
        .post(&url)
        .header("X-Api-Key", API_KEY)
        .json(&serde_json::json!([
            {"asset_id": "TURBINE_00001", "timestamp": chrono::Utc::now().timestamp(), "wind_speed": 9.5, "power_kw": 1800.0, "gearbox_temperature": "NaN", "tower_lean": ""}
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let v: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(v["accepted"], 1);
    let validated =
        TopicReader::new(&stack.bootstrap, &p.validated).read(1, Duration::from_secs(30));
    let registry = registry(&stack);
    let mut decoder = registry
        .decoder::<ScoredReading>(VALIDATED_READING)
        .unwrap();
    let r = decoder
        .decode(validated[0].payload().unwrap())
        .await
        .unwrap();
    assert_eq!(r.wind_speed_ms, Some(9.5));
    assert_eq!(r.gearbox_temperature_c, None);
    assert_eq!(r.tower_lean_deg, None);
}

/// Ingest alone, writing to fresh topics; returns the process, the API
/// address and the raw topic.
async fn start_ingest(
    stack: &Stack,
    label: &str,
) -> (ServiceProcess, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &cfg,
        format!("[[ingest.sources]]\nname = \"meters\"\napi_keys = [\"{API_KEY}\"]\n"),
    )
    .unwrap();
    let raw = unique("raw");
    let api = format!("127.0.0.1:{}", free_port());
    let mut env = service_env(stack, None);
    env.push(("GALE_TOPICS__RAW", raw.clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", unique("dlq-ingest")));
    env.push(("GALE_INGEST__LISTEN", api.clone()));
    env.push(("GALE_INGEST__ACK_TIMEOUT", "5s".into()));
    let ingest = ServiceProcess::start(
        "gale-ingest",
        &env,
        &["--config", cfg.to_str().unwrap()],
        label,
    );
    ingest.wait_ready(Duration::from_secs(60)).await;
    (ingest, api, raw, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_api_checks_the_key_first_and_reports_rows_by_line() {
    let stack = stack();
    let (_ingest, api, raw, _dir) = start_ingest(&stack, "api-rows").await;
    let url = format!("http://{api}/v1/readings");
    let client = reqwest::Client::new();

    // No key, huge body: 401, not 413 (each on its own connection: the
    // server answers without reading the body and closes it).
    let huge = || vec![b'a'; 17 * 1024 * 1024];
    let anonymous = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", "text/csv")
        .body(huge())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let too_large = reqwest::Client::new()
        .post(&url)
        .header("X-Api-Key", API_KEY)
        .header("Content-Type", "text/csv")
        .body(huge())
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status().as_u16(), 413);
    let answer: serde_json::Value = too_large.json().await.expect("413 answers JSON");
    assert!(
        answer["error"].as_str().unwrap().contains("max_body_bytes"),
        "{answer}"
    );

    // NDJSON sent as application/json is read as NDJSON.
    let t = chrono::Utc::now().timestamp() - 60;
    let ndjson = format!(
        "{{\"asset_id\": \"MTR-1\", \"timestamp\": {t}, \"power_kw\": 1.5}}\n{{\"asset_id\": \"MTR-2\", \"timestamp\": {t}, \"power_kw\": 2.5}}\n"
    );
    let resp = client
        .post(&url)
        .header("X-Api-Key", API_KEY)
        .header("Content-Type", "application/json")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["accepted"], 2, "{answer}");

    // One CSV batch: a good row, one metric in two columns, a non-finite
    // timestamp, a row with every value missing (skipped, not an error) and a
    // row too large for the broker (a line error, not a 503).
    let body = format!(
        "asset_id,timestamp,power,power_unit,power_kw,note\n\
         MTR-3,{t},3,kW,,\n\
         MTR-4,{t},1250,W,1.25,\n\
         MTR-5,inf,1,kW,,\n\
         MTR-6,{t},N/A,,NaN,\n\
         MTR-7,{t},7,kW,,{}\n",
        "x".repeat(1_200_000)
    );
    let resp = client
        .post(&url)
        .header("X-Api-Key", API_KEY)
        .header("Content-Type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 207);
    assert!(resp.headers().get("retry-after").is_none());
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (&answer["accepted"], &answer["rejected"], &answer["skipped"]),
        (&1.into(), &3.into(), &1.into()),
        "{answer}"
    );
    let errors = answer["errors"].as_array().unwrap();
    let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, vec![3, 4, 6], "{answer}");
    let text = |i: usize| errors[i]["error"].as_str().unwrap().to_string();
    assert!(
        text(0).contains("`power`") && text(0).contains("`power_kw`"),
        "{answer}"
    );
    assert!(text(1).contains("not a finite number"), "{answer}");
    assert!(text(2).contains("refused"), "{answer}");

    // Exactly the accepted rows are on the raw topic.
    let reader = TopicReader::new(&stack.bootstrap, &raw);
    let mut records = reader.read(3, Duration::from_secs(30));
    records.extend(reader.drain(Duration::from_millis(500)));
    let registry = registry(&stack);
    let mut decoder = registry.decoder::<RawReading>(RAW_READING).unwrap();
    let mut assets = Vec::new();
    for m in &records {
        assets.push(decoder.decode(m.payload().unwrap()).await.unwrap().asset_id);
    }
    assets.sort();
    assert_eq!(assets, vec!["MTR-1", "MTR-2", "MTR-3"]);
}
