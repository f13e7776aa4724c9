//! Messy and hostile input at the edges: requests built to take memory,
//! idle and stalled connections, encodings, records too large for a dead
//! letter, a gibibyte dropped file, secrets in the environment, and a
//! bounded fuzz run of generated hostile bodies and records. Nothing may
//! crash, answer 5xx other than 503, grow without bound, or lose a record
//! without a reason.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use gale_model::{RawReading, ScoredReading, QUARANTINED_READING, RAW_READING, VALIDATED_READING};
use gale_tests::*;
use rand::{Rng, SeedableRng};
use rdkafka::message::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "hostile-key-000001";

struct Ingest {
    process: ServiceProcess,
    api: String,
    raw: String,
    _dir: tempfile::TempDir,
}

async fn ingest(stack: &Stack, label: &str, extra: &[(&'static str, String)]) -> Ingest {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &cfg,
        format!("[[ingest.sources]]\nname = \"meters\"\napi_keys = [\"{KEY}\"]\n"),
    )
    .unwrap();
    let (raw, dlq) = (unique("raw"), unique("dlq-ingest"));
    let api = format!("127.0.0.1:{}", free_port());
    let mut env = service_env(stack, None);
    env.extend([
        ("GALE_TOPICS__RAW", raw.clone()),
        ("GALE_TOPICS__DEAD_LETTER", dlq.clone()),
        ("GALE_INGEST__LISTEN", api.clone()),
    ]);
    env.extend(extra.iter().cloned());
    let process = ServiceProcess::start(
        "gale-ingest",
        &env,
        &["--config", cfg.to_str().unwrap()],
        label,
    );
    process.wait_ready(Duration::from_secs(60)).await;
    Ingest {
        process,
        api,
        raw,
        _dir: dir,
    }
}

async fn post(
    client: &reqwest::Client,
    api: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    match client
        .post(format!("http://{api}/v1/readings"))
        .header("Authorization", format!("Bearer {KEY}"))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_built_to_take_memory_are_refused_in_bounded_memory() {
    let stack = stack();
    let ing = ingest(&stack, "hostile-memory", &[]).await;
    let client = reqwest::Client::new();
    // 16 MiB of one-character rows: eight million of them.
    let tiny: bytes::Bytes = format!("asset_id\n{}", "x\n".repeat(8 * 1024 * 1024 - 5)).into();
    assert!(tiny.len() <= 16 * 1024 * 1024);
    let (status, body) = post(&client, &ing.api, "text/csv", tiny.clone()).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("max_rows"), "{body}");
    // A JSON array of eight million numbers.
    let mut numbers = String::with_capacity(16 * 1024 * 1024);
    numbers.push('[');
    while numbers.len() < 16 * 1024 * 1024 - 4 {
        numbers.push_str("1,");
    }
    numbers.push_str("1]");
    let (status, body) = post(&client, &ing.api, "application/json", numbers.clone()).await;
    assert_eq!(status, 413, "{body}");
    // Fifty at once: refused (413) or turned away (503), nothing else.
    let answers = futures::future::join_all((0..50).map(|i| {
        let client = client.clone();
        let api = ing.api.clone();
        let body = if i % 2 == 0 {
            tiny.clone()
        } else {
            bytes::Bytes::from(numbers.clone())
        };
        let ct = if i % 2 == 0 {
            "text/csv"
        } else {
            "application/json"
        };
        async move { post(&client, &api, ct, body).await.0 }
    }))
    .await;
    for s in &answers {
        assert!(matches!(s, 413 | 503), "answers {answers:?}");
    }
    let (now, peak) = ing.process.memory_mib();
    eprintln!("ingest memory after 52 hostile requests: {now:.0} MiB now, {peak:.0} MiB at peak");
    assert!(peak < 600.0, "peak RSS {peak:.0} MiB");
    // And it still works.
    let t = chrono::Utc::now().to_rfc3339();
    let (status, body) = post(
        &client,
        &ing.api,
        "text/csv",
        format!("asset_id,timestamp,power\nMTR-1,{t},1.0\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stalled_and_surplus_connections_are_let_go() {
    let stack = stack();
    let ing = ingest(
        &stack,
        "hostile-connections",
        &[
            ("GALE_INGEST__HEADER_TIMEOUT", "2s".into()),
            ("GALE_INGEST__BODY_TIMEOUT", "2s".into()),
            ("GALE_INGEST__MAX_CONNECTIONS", "40".into()),
        ],
    )
    .await;
    // Idle connections that never send a request are closed.
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(tokio::net::TcpStream::connect(&ing.api).await.unwrap());
    }
    let started = Instant::now();
    for mut s in idle {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an idle connection is closed within the header timeout")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    // A stalled upload gets 408 once the body timeout passes.
    let mut s = tokio::net::TcpStream::connect(&ing.api).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/readings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: text/csv\r\nContent-Length: 1000\r\n\r\nasset_id,"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Beyond the connection limit, new connections get 503 and are closed.
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(&ing.api).await.unwrap();
        s.write_all(b"POST /v1/readings HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(&ing.api).await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After"), "{answer}");
    drop(held);
    // Once they are gone, requests are served again.
    let client = reqwest::Client::new();
    let t = chrono::Utc::now().to_rfc3339();
    wait_for("the API to serve again", Duration::from_secs(20), || {
        let client = client.clone();
        let api = ing.api.clone();
        let body = format!("asset_id,timestamp,power\nMTR-1,{t},1.0\n");
        async move { (post(&client, &api, "text/csv", body).await.0 == 200).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encodings_byte_order_marks_and_crlf_are_read_right() {
    let stack = stack();
    let ing = ingest(&stack, "hostile-encodings", &[]).await;
    let client = reqwest::Client::new();
    let t = chrono::Utc::now().to_rfc3339();
    let csv = format!("asset_id,timestamp,power\r\nMTR-1,{t},1.0\r\nMTR-2,{t},oops\r\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(csv.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let send = |encoding: &'static str, body: Vec<u8>, ct: &'static str| {
        let client = client.clone();
        let api = ing.api.clone();
        async move {
            let r = client
                .post(format!("http://{api}/v1/readings"))
                .header("Authorization", format!("Bearer {KEY}"))
                .header("Content-Type", ct)
                .header("Content-Encoding", encoding)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    // gzip, as gateways send it; the CRLF error is on line 3.
    let (status, answer) = send("gzip", gz.clone(), "text/csv").await;
    assert_eq!(status, 207, "{answer}");
    assert_eq!(answer["accepted"], 1);
    assert_eq!(answer["errors"][0]["line"], 3, "{answer}");
    // Anything else is refused, not read as text.
    let (status, _) = send("br", gz.clone(), "text/csv").await;
    assert_eq!(status, 415);
    // A gzip bomb: 100 MiB of zeros compress to ~100 KiB.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b'0'; 100 * 1024 * 1024]).unwrap();
    let (status, _) = send("gzip", bomb.finish().unwrap(), "text/csv").await;
    assert_eq!(status, 413);
    // A byte order mark before JSON is fine too.
    let json =
        format!("\u{feff}[{{\"asset_id\": \"MTR-1\", \"timestamp\": \"{t}\", \"power\": 2.0}}]");
    let (status, answer) = send("identity", json.into_bytes(), "application/json").await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_never_prints_secrets_from_the_environment() {
    let secrets = [
        ("GALE_INGEST_API_KEY", "sk-very-secret-api-key"),
        (
            "GALE_REGISTRY_URL",
            "https://user:hunter2pass@registry:8081",
        ),
        ("GALE_KAFKA_BOOTSTRAP", "broker-secret-host:9092"),
        ("GALE_INGEST_URL", "http://ingest-secret-host:8080"),
    ];
    for command in ["simulate", "status", "peek"] {
        let out = Command::new(bin("gale"))
            .args([command, "--help"])
            .envs(secrets)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command} --help");
        for (_, secret) in secrets {
            assert!(!text.contains(secret), "{command} --help shows {secret}");
        }
        assert!(
            text.contains("GALE_REGISTRY_URL") || command == "simulate" || text.contains("env")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_dropped_file_is_refused_unread() {
    let stack = stack();
    let landing = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[ingest.sources]]\nname = \"meters\"\napi_keys = [\"{KEY}\"]\n\n\
             [[ingest.file_drops]]\nsource = \"meters\"\nstore = {{ url = \"{}\" }}\npoll_interval = \"200ms\"\nsettle_time = \"0s\"\n",
            landing.path().display()
        ),
    )
    .unwrap();
    let (raw, dlq) = (unique("raw"), unique("dlq-ingest"));
    let mut env = service_env(&stack, None);
    env.extend([
        ("GALE_TOPICS__RAW", raw.clone()),
        ("GALE_TOPICS__DEAD_LETTER", dlq.clone()),
        ("GALE_INGEST__LISTEN", format!("127.0.0.1:{}", free_port())),
    ]);
    let process = ServiceProcess::start(
        "gale-ingest",
        &env,
        &["--config", cfg.to_str().unwrap()],
        "hostile-big-file",
    );
    process.wait_ready(Duration::from_secs(60)).await;
    let inbox = landing.path().join("raw");
    std::fs::create_dir_all(&inbox).unwrap();
    let big = inbox.join("huge.csv");
    {
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(b"asset_id,timestamp,power\n").unwrap();
        f.set_len(1 << 30).unwrap();
    }
    let failed = landing.path().join("failed/huge.csv");
    wait_for("the file to be set aside", Duration::from_secs(60), || {
        let exists = failed.exists();
        async move { exists.then_some(()) }
    })
    .await;
    let dead = TopicReader::new(&stack.bootstrap, &dlq).read(1, Duration::from_secs(30));
    let message = header(&dead[0], "gale.dlq.error.message").unwrap();
    assert!(message.contains("max_file_bytes"), "{message}");
    let (_, peak) = process.memory_mib();
    assert!(peak < 300.0, "peak RSS {peak:.0} MiB for a file never read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_a_dead_letter_does_not_stop_validate() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets.csv");
    std::fs::write(&assets, "asset_id,kind,site_id\nMTR-1,meter,g\n").unwrap();
    let (raw, validated, quarantine, dlq) = (
        unique("raw"),
        unique("validated"),
        unique("quarantine"),
        unique("dlq"),
    );
    create_topics(&stack.bootstrap, &[&raw, &validated, &quarantine, &dlq], 1).await;
    let mut env = service_env(&stack, None);
    env.extend([
        ("GALE_TOPICS__INPUT", raw.clone()),
        ("GALE_TOPICS__VALIDATED", validated.clone()),
        ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
        ("GALE_TOPICS__DEAD_LETTER", dlq.clone()),
        ("GALE_KAFKA__GROUP_ID", unique("validate")),
        ("GALE_VALIDATE__ASSETS__SOURCE", "file".into()),
        ("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()),
    ]);
    let mut validate = ServiceProcess::start("gale-validate", &env, &[], "hostile-huge-record");
    validate.wait_ready(Duration::from_secs(60)).await;
    // 1,048,000 bytes: a stock broker takes it, a dead letter of it with
    // headers is more than the client sends.
    let big_producer: rdkafka::producer::FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let mut huge = vec![0u8; 1_048_000];
    huge[0] = 0;
    huge[4] = 1; // schema id 1 (whatever it is): undecodable either way
    for (i, b) in huge.iter_mut().enumerate().skip(5) {
        *b = (i % 251) as u8;
    }
    send(&big_producer, &raw, "MTR-1", &huge).await;
    // A good reading after it.
    let encoder = registry(&stack).register(&raw, RAW_READING).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let r = RawReading {
        event_id: "after-the-huge-one".into(),
        asset_id: "MTR-1".into(),
        asset_kind: None,
        event_time: now,
        received_time: now,
        source: "t".into(),
        channel: gale_model::IngestChannel::Unknown,
        measurements: vec![gale_model::Measurement {
            metric: gale_model::Metric::Power,
            value: 1.0,
            unit: Some("kW".into()),
        }],
        attributes: Default::default(),
        interval_ms: None,
    };
    send(
        &producer(&stack.bootstrap),
        &raw,
        "MTR-1",
        &encoder.encode(&r).unwrap(),
    )
    .await;
    let out = TopicReader::new(&stack.bootstrap, &validated).read(1, Duration::from_secs(60));
    let mut decoder = registry(&stack)
        .decoder::<ScoredReading>(VALIDATED_READING)
        .unwrap();
    assert_eq!(
        decoder
            .decode(out[0].payload().unwrap())
            .await
            .unwrap()
            .event_id,
        "after-the-huge-one"
    );
    let dead = TopicReader::new(&stack.bootstrap, &dlq).read(1, Duration::from_secs(30));
    assert_eq!(
        header(&dead[0], "gale.dlq.payload.truncated").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&dead[0], "gale.dlq.payload.size").as_deref(),
        Some("1048000")
    );
    assert_eq!(
        header(&dead[0], "gale.dlq.original.offset").as_deref(),
        Some("0")
    );
    assert_eq!(dead[0].payload().unwrap(), &huge[..64 * 1024]);
    assert!(validate.running(), "validate keeps running");
}

/// A hostile body: random bytes, broken JSON and CSV, absurd numbers and
/// times, odd units and encodings.
fn hostile_body(rng: &mut impl Rng, now: i64) -> (String, Vec<u8>) {
    let times = [
        "2199-01-01T00:00:00Z".to_string(),
        "1970-01-01T00:00:00Z".to_string(),
        "0".into(),
        "-1".into(),
        "1e308".into(),
        "inf".into(),
        "NaN".into(),
        "9999-12-31T23:59:59Z".into(),
        chrono::DateTime::from_timestamp_millis(now)
            .unwrap()
            .to_rfc3339(),
        "2024-03-31 02:30:00".into(),
        "".into(),
    ];
    let values = [
        "1e308",
        "-1e308",
        "nan",
        "inf",
        "-0",
        "0",
        "1",
        "25",
        "-5",
        "1e-320",
        "",
        "x",
        "99999999999999999999999999",
    ];
    let units = [
        "W", "kW", "MW", "mW", "kWh", "rad", "degF", "K", "mJ", "MJ", "furlongs", "", "\u{0}",
    ];
    let assets = [
        "MTR-1",
        "MTR-2",
        "GHOST",
        "",
        "MTR-1\u{202e}",
        &"A".repeat(300),
    ];
    let row = |rng: &mut dyn rand::RngCore| {
        format!(
            "{},{},{},{}",
            assets[rng.random_range(0..assets.len())],
            times[rng.random_range(0..times.len())],
            values[rng.random_range(0..values.len())],
            units[rng.random_range(0..units.len())]
        )
    };
    match rng.random_range(0..8) {
        0 => (
            "text/csv".into(),
            (0..rng.random_range(0..2000))
                .map(|_| rng.random())
                .collect(),
        ),
        1 => {
            let mut s = String::from("asset_id,timestamp,power,power_unit\n");
            for _ in 0..rng.random_range(1..200) {
                s.push_str(&row(rng));
                s.push_str(if rng.random_bool(0.5) { "\n" } else { "\r\n" });
            }
            ("text/csv".into(), s.into_bytes())
        }
        2 => {
            let depth = rng.random_range(1..5000);
            (
                "application/json".into(),
                format!("{}{}", "[".repeat(depth), "]".repeat(depth / 2)).into_bytes(),
            )
        }
        3 => {
            let items: Vec<String> = (0..rng.random_range(1..100))
                .map(|_| {
                    format!(
                        "{{\"asset_id\": \"{}\", \"timestamp\": \"{}\", \"wind_direction\": {}, \"wind_direction_unit\": \"{}\", \"power\": \"{}\"}}",
                        assets[rng.random_range(0..3)],
                        times[rng.random_range(0..times.len())],
                        ["1e308", "3.2", "-7", "null", "true", "[1]"][rng.random_range(0..6)],
                        ["rad", "deg", ""][rng.random_range(0..3)],
                        values[rng.random_range(0..values.len())],
                    )
                })
                .collect();
            (
                "application/json".into(),
                format!("[{}]", items.join(",")).into_bytes(),
            )
        }
        4 => (
            "application/x-ndjson".into(),
            "{\"asset_id\": 1}\n{\n}\n\u{feff}{}\n"
                .repeat(rng.random_range(1..50))
                .into_bytes(),
        ),
        5 => ("image/png".into(), vec![0x89, b'P', b'N', b'G']),
        6 => (
            "text/csv".into(),
            format!(
                "{}\n{}\n",
                "c,".repeat(rng.random_range(1..3000)),
                "1,".repeat(10)
            )
            .into_bytes(),
        ),
        _ => (
            "application/json".into(),
            format!(
                "{{\"asset_id\": \"MTR-1\", \"timestamp\": {}, \"power\": 1}}",
                ["1e400", "-1e30", "17e9", "\"2024-02-30T00:00:00Z\""][rng.random_range(0..4)]
            )
            .into_bytes(),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_bodies_and_records_are_stored_or_dead_lettered_never_crash() {
    let stack = stack();
    let mut ing = ingest(&stack, "fuzz-ingest", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets.csv");
    std::fs::write(
        &assets,
        "asset_id,kind,site_id\nMTR-1,meter,g\nMTR-2,meter,g\n",
    )
    .unwrap();
    let (validated, quarantine, dlq) = (unique("validated"), unique("quarantine"), unique("dlq"));
    create_topics(
        &stack.bootstrap,
        &[&ing.raw, &validated, &quarantine, &dlq],
        3,
    )
    .await;
    let mut env = service_env(&stack, None);
    env.extend([
        ("GALE_TOPICS__INPUT", ing.raw.clone()),
        ("GALE_TOPICS__VALIDATED", validated.clone()),
        ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
        ("GALE_TOPICS__DEAD_LETTER", dlq.clone()),
        ("GALE_KAFKA__GROUP_ID", unique("validate")),
        ("GALE_VALIDATE__ASSETS__SOURCE", "file".into()),
        ("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()),
    ]);
    let mut validate = ServiceProcess::start("gale-validate", &env, &[], "fuzz-validate");
    validate.wait_ready(Duration::from_secs(60)).await;

    let seed = std::env::var("GALE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6a1e_2026);
    eprintln!("fuzz seed {seed} (GALE_FUZZ_SEED reproduces a run)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp_millis();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for _ in 0..300 {
        if Instant::now() > deadline {
            break;
        }
        let (ct, body) = hostile_body(&mut rng, now);
        let (status, answer) = post(&client, &ing.api, &ct, body).await;
        assert!(
            status != 0 && (status < 500 || status == 503),
            "ingest answered {status}: {answer}"
        );
        *statuses.entry(status).or_default() += 1;
    }
    // Hostile records straight onto the raw topic: garbage, truncated Avro,
    // Avro with absurd values.
    let producer = producer(&stack.bootstrap);
    let encoder = registry(&stack)
        .register(&ing.raw, RAW_READING)
        .await
        .unwrap();
    let mut sent_direct = 0;
    for i in 0..200 {
        let payload: Vec<u8> = match i % 4 {
            0 => (0..rng.random_range(0..300))
                .map(|_| rng.random())
                .collect(),
            1 => {
                let r = fuzz_reading(&mut rng, now, i);
                let mut p = encoder.encode(&r).unwrap();
                p.truncate(rng.random_range(0..p.len()));
                p
            }
            _ => encoder.encode(&fuzz_reading(&mut rng, now, i)).unwrap(),
        };
        send(
            &producer,
            &ing.raw,
            ["MTR-1", "MTR-2", "X"][i % 3],
            &payload,
        )
        .await;
        sent_direct += 1;
    }
    eprintln!("ingest answers {statuses:?}; {sent_direct} records sent straight to the raw topic");
    assert!(ing.process.running(), "ingest survived");

    // Every raw record is accounted for: its event id came out (validated or
    // quarantined), or its offset was dead-lettered, or it repeats an id
    // that came out.
    let raw_records = {
        let reader = TopicReader::new(&stack.bootstrap, &ing.raw);
        reader.drain(Duration::from_secs(3))
    };
    let mut raw_decoder = registry(&stack).decoder::<RawReading>(RAW_READING).unwrap();
    let readers = [
        TopicReader::new(&stack.bootstrap, &validated),
        TopicReader::new(&stack.bootstrap, &quarantine),
        TopicReader::new(&stack.bootstrap, &dlq),
    ];
    let mut out_ids: HashSet<String> = HashSet::new();
    let mut dead: HashSet<(i32, i64)> = HashSet::new();
    let mut v = registry(&stack)
        .decoder::<ScoredReading>(VALIDATED_READING)
        .unwrap();
    let mut q = registry(&stack)
        .decoder::<ScoredReading>(QUARANTINED_READING)
        .unwrap();
    let wanted: Vec<(i32, i64, Option<String>)> = {
        let mut w = Vec::new();
        for m in &raw_records {
            let id = raw_decoder
                .decode(m.payload().unwrap_or_default())
                .await
                .ok()
                .map(|r| r.event_id);
            w.push((m.partition(), m.offset(), id));
        }
        w
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        for (k, reader) in readers.iter().enumerate() {
            for m in reader.poll_for(Duration::from_millis(300)) {
                match k {
                    0 => {
                        out_ids.insert(v.decode(m.payload().unwrap()).await.unwrap().event_id);
                    }
                    1 => {
                        out_ids.insert(q.decode(m.payload().unwrap()).await.unwrap().event_id);
                    }
                    _ => {
                        let p =
                            header(&m, "gale.dlq.original.partition").and_then(|p| p.parse().ok());
                        let o = header(&m, "gale.dlq.original.offset").and_then(|o| o.parse().ok());
                        if let (Some(p), Some(o)) = (p, o) {
                            dead.insert((p, o));
                        }
                    }
                }
            }
        }
        let missing: Vec<&(i32, i64, Option<String>)> = wanted
            .iter()
            .filter(|(p, o, id)| {
                !dead.contains(&(*p, *o)) && !id.as_ref().is_some_and(|id| out_ids.contains(id))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} raw records neither stored nor dead-lettered, e.g. {:?}",
            missing.len(),
            wanted.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
    }
    assert!(validate.running(), "validate survived");
    let (_, ingest_peak) = ing.process.memory_mib();
    let (_, validate_peak) = validate.memory_mib();
    eprintln!("peak RSS: ingest {ingest_peak:.0} MiB, validate {validate_peak:.0} MiB");
    assert!(ingest_peak < 600.0 && validate_peak < 600.0);
    let distinct: BTreeSet<_> = wanted.iter().filter_map(|(_, _, id)| id.clone()).collect();
    eprintln!(
        "{} raw records, {} distinct decodable ids, {} stored, {} dead-lettered",
        wanted.len(),
        distinct.len(),
        out_ids.len(),
        dead.len()
    );
}

fn fuzz_reading(rng: &mut impl Rng, now: i64, i: usize) -> RawReading {
    let metrics = gale_model::Metric::ALL;
    RawReading {
        event_id: if rng.random_bool(0.05) {
            String::new()
        } else {
            format!("fuzz-{i}")
        },
        asset_id: ["MTR-1", "MTR-2", "GHOST", ""][rng.random_range(0..4)].into(),
        asset_kind: None,
        event_time: [
            now,
            i64::MAX,
            i64::MIN,
            0,
            now + 86_400_000 * 365 * 100,
            now - 3_600_000,
        ][rng.random_range(0..6)],
        received_time: [now, i64::MAX, 0][rng.random_range(0..3)],
        source: "fuzz".into(),
        channel: gale_model::IngestChannel::Unknown,
        measurements: (0..rng.random_range(0..4))
            .map(|_| gale_model::Measurement {
                metric: metrics[rng.random_range(0..metrics.len())],
                value: [1.0, 1e308, -1e308, f64::NAN, f64::INFINITY, 0.0, 25.0]
                    [rng.random_range(0..7)],
                unit: [
                    None,
                    Some("kW".to_string()),
                    Some("rad".into()),
                    Some("MJ".into()),
                    Some("mpa".into()),
                ][rng.random_range(0..5)]
                .clone(),
            })
            .collect(),
        attributes: Default::default(),
        interval_ms: [None, Some(0), Some(-5), Some(900_000)][rng.random_range(0..4)],
    }
}
