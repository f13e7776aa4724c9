//! One reading is one trace: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, every
//! service exports its spans over OTLP/HTTP to a receiver that decodes them
//! with the official protobuf definitions (tests/interop/otlp_receiver.py).
//!
//! A reading posted to ingest with the client's `traceparent` yields one
//! trace with a span from every stage, each the child of the one before:
//! ingest's `send`, then `process` at validate, enrich, detect-faults and
//! aggregate, with the messaging attributes of the pinned semantic
//! conventions (docs/tracing.md). What stands for many records is not a
//! child of any of them but links to them: the 10-minute aggregate's
//! `create` span links to the reading, and so do pg-sink's batch `process`
//! span and archive's `flush` span of the validated reading.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gale_tests::*;
use serde_json::Value;

const API_KEY: &str = "trace-test-key-0001";
const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.27.0";

struct Receiver {
    child: Child,
    spans: std::path::PathBuf,
    endpoint: String,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn receiver(dir: &Path) -> Receiver {
    let port = free_port();
    let spans = dir.join("spans.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/otlp_receiver.py");
    let child = Command::new(python())
        .arg(script)
        .arg(port.to_string())
        .arg(&spans)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log_dir().join(format!("otlp-{port}.log"))).unwrap())
        .spawn()
        .expect("python with opentelemetry-proto (scripts/requirements.txt)");
    wait_for(
        "the OTLP receiver",
        Duration::from_secs(30),
        || async move {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        },
    )
    .await;
    Receiver {
        child,
        spans,
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

fn all_spans(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn links_to(span: &Value, trace: &str, span_id: &str) -> bool {
    span["links"].as_array().is_some_and(|ls| {
        ls.iter()
            .any(|l| l["trace_id"] == trace && l["span_id"] == span_id)
    })
}

fn gale(args: &[&str], db: &str) {
    let out = Command::new(bin("gale"))
        .args(args)
        .env("DATABASE_URL", db)
        .output()
        .expect("run gale");
    assert!(
        out.status.success(),
        "gale {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn post(
    api: &str,
    asset: &str,
    trace: &str,
    parent: &str,
    at: chrono::DateTime<chrono::Utc>,
) {
    let ts = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let resp = reqwest::Client::new()
        .post(format!("http://{api}/v1/readings"))
        .header("Authorization", format!("Bearer {API_KEY}"))
        .header("Content-Type", "application/json")
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .body(format!(
            r#"{{"asset_id":"{asset}","timestamp":"{ts}","power":1.5,"power_unit":"kW"}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reading_is_one_trace_through_every_stage_and_the_sinks_link_to_it() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let otlp = receiver(dir.path()).await;
    let db = TestDatabase::create(&stack).await;
    gale(&["db", "migrate"], &db.url);
    let meters = dir.path().join("meters.csv");
    std::fs::write(&meters, "asset_id,kind,site_id\nMTR-1,meter,S1\n").unwrap();
    gale(&["assets", "import", meters.to_str().unwrap()], &db.url);
    let ingest_cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &ingest_cfg,
        format!("[[ingest.sources]]\nname = \"meters\"\napi_keys = [\"{API_KEY}\"]\n"),
    )
    .unwrap();
    let raw = unique("raw");
    let validated = unique("validated");
    let enriched = unique("enriched");
    let checked = unique("checked");
    let agg = [unique("agg10m"), unique("agg1h"), unique("agg1d")];
    let groups = [
        unique("validate"),
        unique("enrich"),
        unique("detect"),
        unique("aggregate"),
        unique("pg-sink"),
        unique("archive"),
    ];
    let api = format!("127.0.0.1:{}", free_port());
    let env_for = |extra: &[(&'static str, String)]| {
        let mut env = service_env(&stack, None);
        env.extend([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_string()),
        ]);
        env.extend(extra.iter().cloned());
        env
    };

    let mut services = vec![ServiceProcess::start(
        "gale-ingest",
        &env_for(&[
            ("GALE_TOPICS__RAW", raw.clone()),
            ("GALE_TOPICS__DEAD_LETTER", unique("dlq-ingest")),
            ("GALE_INGEST__LISTEN", api.clone()),
        ]),
        &["--config", ingest_cfg.to_str().unwrap()],
        "trace-ingest",
    )];
    services.push(ServiceProcess::start(
        "gale-validate",
        &env_for(&[
            ("GALE_TOPICS__INPUT", raw.clone()),
            ("GALE_TOPICS__VALIDATED", validated.clone()),
            ("GALE_TOPICS__QUARANTINE", unique("quarantine")),
            ("GALE_TOPICS__DEAD_LETTER", unique("dlq-validate")),
            ("GALE_KAFKA__GROUP_ID", groups[0].clone()),
            ("GALE_VALIDATE__MODE", "backfill".into()),
            ("GALE_TELEMETRY__LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info,gale_runtime::outbox=debug".into()),
            ("GALE_VALIDATE__ASSETS__SOURCE", "file".into()),
            ("GALE_VALIDATE__ASSETS__PATH", meters.display().to_string()),
        ]),
        &[],
        "trace-validate",
    ));
    services.push(ServiceProcess::start(
        "gale-enrich",
        &env_for(&[
            ("GALE_TOPICS__INPUT", validated.clone()),
            ("GALE_TOPICS__OUTPUT", enriched.clone()),
            ("GALE_TOPICS__DEAD_LETTER", unique("dlq-enrich")),
            ("GALE_KAFKA__GROUP_ID", groups[1].clone()),
            ("GALE_ASSETS__URL", db.url.clone()),
        ]),
        &[],
        "trace-enrich",
    ));
    services.push(ServiceProcess::start(
        "gale-detect-faults",
        &env_for(&[
            ("GALE_TOPICS__INPUT", enriched.clone()),
            ("GALE_TOPICS__CHECKED", checked.clone()),
            ("GALE_TOPICS__FAULTS", unique("faults")),
            ("GALE_TOPICS__QUARANTINE", unique("quarantine-df")),
            ("GALE_TOPICS__DEAD_LETTER", unique("dlq-detect")),
            ("GALE_KAFKA__GROUP_ID", groups[2].clone()),
        ]),
        &[],
        "trace-detect",
    ));
    services.push(ServiceProcess::start(
        "gale-aggregate",
        &env_for(&[
            ("GALE_TOPICS__INPUT", checked.clone()),
            ("GALE_TOPICS__ASSET_10M", agg[0].clone()),
            ("GALE_TOPICS__ASSET_1H", agg[1].clone()),
            ("GALE_TOPICS__ASSET_1D", agg[2].clone()),
            ("GALE_TOPICS__LATE", unique("late")),
            ("GALE_TOPICS__DEAD_LETTER", unique("dlq-aggregate")),
            ("GALE_KAFKA__GROUP_ID", groups[3].clone()),
            ("GALE_AGGREGATE__GRACE", "0s".into()),
        ]),
        &[],
        "trace-aggregate",
    ));
    let pg_cfg = pg_sink_config(
        dir.path(),
        &db.url,
        &[(&validated, "readings", false)],
        &unique("dlq-pg"),
    );
    services.push(ServiceProcess::start(
        "gale-pg-sink",
        &env_for(&[("GALE_KAFKA__GROUP_ID", groups[4].clone())]),
        &["--config", pg_cfg.to_str().unwrap()],
        "trace-pg-sink",
    ));
    let lake = dir.path().join("lake");
    let archive_cfg = archive_config(
        dir.path(),
        &format!("{{ url = \"{}\" }}", lake.display()),
        &[(&validated, "silver/validated")],
        &unique("dlq-archive"),
        "1s",
    );
    services.push(ServiceProcess::start(
        "gale-archive",
        &env_for(&[("GALE_KAFKA__GROUP_ID", groups[5].clone())]),
        &["--config", archive_cfg.to_str().unwrap()],
        "trace-archive",
    ));
    for s in &services {
        s.wait_ready(Duration::from_secs(90)).await;
    }

    // The client's own trace context comes with the request. A second
    // reading of the same asset, eleven minutes on, closes the first
    // reading's ten-minute window (grace 0). Their ages (20 and 9 minutes)
    // fall into different latency buckets, so each leaves an exemplar.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let first_at = chrono::Utc::now() - chrono::Duration::minutes(20);
    post(&api, "MTR-1", trace, client_span, first_at).await;
    post(
        &api,
        "MTR-1",
        "5ce0e9a56015fec5aadfa328ae398115",
        "ab2c0fb1e1b6a3b0",
        first_at + chrono::Duration::minutes(11),
    )
    .await;

    let aggregates = TopicReader::new(&stack.bootstrap, &agg[0]).read(1, Duration::from_secs(90));
    let agg_tp = header(&aggregates[0], "traceparent").expect("the aggregate's traceparent");
    assert_ne!(
        gale_runtime::telemetry::trace_id_of(&agg_tp),
        Some(trace),
        "a window aggregate is a trace of its own, not a child of one reading"
    );
    // pg-sink has stored both readings, archive written its file.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    wait_for(
        "pg-sink to store both readings",
        Duration::from_secs(60),
        || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                (n == 2).then_some(())
            }
        },
    )
    .await;

    // A dead letter's log line names the trace it carries on.
    let lost = "0af7651916cd43dd8448eb211c80319c";
    // Two minutes old: another latency bucket than the reading's.
    let now = chrono::Utc::now() - chrono::Duration::minutes(2);
    post(&api, "NOT-REGISTERED", lost, "b7ad6b7169203331", now).await;
    let log = services[1].log.clone();
    let line = wait_for(
        "validate to log the dead letter",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move {
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|l| {
                        l["fields"]["message"] == "dead-lettering record"
                            && l["fields"]["trace_id"] == lost
                    })
            }
        },
    )
    .await;
    let span_id = line["fields"]["span_id"].as_str().unwrap_or_default();
    assert_eq!(span_id.len(), 16, "{line}");
    assert_ne!(span_id, "b7ad6b7169203331", "validate's own span: {line}");

    // OpenMetrics on request: the latency bucket of the reading (900 s to
    // 3600 s old) carries its trace id as an exemplar; the default text
    // format stays exemplar-free.
    let validate = &services[1];
    let om = reqwest::Client::new()
        .get(format!("http://{}/metrics", validate.http))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(om.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om = om.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    let exemplar = om
        .lines()
        .find(|l| {
            l.starts_with("gale_event_latency_seconds_bucket{")
                && l.contains("le=\"3600\"")
                && l.contains(&format!("# {{trace_id=\"{trace}\"}}"))
        })
        .unwrap_or_else(|| panic!("an exemplar with the reading's trace id: {om}"));
    let value: f64 = exemplar
        .split("} ")
        .last()
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("exemplar value in {exemplar}"));
    assert!((900.0..=3600.0).contains(&value), "{exemplar}");
    let text = validate.metrics().await;
    assert!(
        text.contains("gale_event_latency_seconds_bucket{"),
        "{text}"
    );
    assert!(!text.contains("trace_id"), "the text format is unchanged");

    // Stopping flushes what is still batched for export (and archive's buffer).
    for s in services.iter_mut() {
        assert_eq!(s.terminate(Duration::from_secs(30)), Some(0));
    }
    let expected = [
        ("gale-ingest", format!("send {raw}")),
        ("gale-validate", format!("process {raw}")),
        ("gale-enrich", format!("process {validated}")),
        ("gale-detect-faults", format!("process {enriched}")),
        ("gale-aggregate", format!("process {checked}")),
    ];
    let spans = wait_for(
        "the spans of every stage and sink",
        Duration::from_secs(30),
        || {
            let spans = all_spans(&otlp.spans);
            let names: Vec<String> = spans
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect();
            let complete = expected.iter().all(|(_, n)| names.contains(n))
                && names.contains(&format!("create {}", agg[0]))
                && names.contains(&format!("process {validated}"))
                && names.contains(&format!("flush {validated}"));
            async move { complete.then_some(spans) }
        },
    )
    .await;
    let of_trace: Vec<&Value> = spans.iter().filter(|s| s["trace_id"] == trace).collect();
    let by_name: HashMap<&str, &Value> = of_trace
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), *s))
        .collect();

    // A span from every stage, each the child of the one before.
    let mut parent = client_span.to_string();
    let mut chain = Vec::new();
    for (service, name) in &expected {
        let span = by_name
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} in the reading's trace: {of_trace:#?}"));
        assert_eq!(span["service"], *service, "{name}");
        assert_eq!(
            span["parent_span_id"],
            parent.as_str(),
            "{name} continues the trace"
        );
        assert_eq!(span["schema_url"], SCHEMA_URL, "{name}");
        let a = &span["attributes"];
        assert_eq!(a["messaging.system"], "kafka", "{name}");
        if name.starts_with("send ") {
            assert_eq!(span["kind"], 4, "SPAN_KIND_PRODUCER");
            assert_eq!(a["messaging.operation.type"], "send");
            assert_eq!(a["messaging.destination.name"], raw.as_str());
        } else {
            let topic = name.trim_start_matches("process ");
            assert_eq!(span["kind"], 5, "{name}: SPAN_KIND_CONSUMER");
            assert_eq!(a["messaging.operation.type"], "process", "{name}");
            assert_eq!(a["messaging.operation.name"], "process", "{name}");
            assert_eq!(a["messaging.destination.name"], topic, "{name}");
            assert_eq!(a["messaging.kafka.message.key"], "MTR-1", "{name}");
            assert!(a["messaging.kafka.offset"].is_i64(), "{name}");
            assert!(
                a["messaging.destination.partition.id"].is_string(),
                "{name}"
            );
            assert!(a["messaging.consumer.group.name"].is_string(), "{name}");
        }
        parent = span["span_id"].as_str().unwrap().to_string();
        chain.push(span["span_id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        by_name[format!("process {raw}").as_str()]["attributes"]["messaging.consumer.group.name"],
        groups[0].as_str()
    );
    let [_, validate_span, _, detect_span, _] = &chain[..] else {
        unreachable!()
    };

    // The aggregate links to the reading (detect-faults' span, the context
    // the checked record carried) instead of naming a parent.
    let create = spans
        .iter()
        .find(|s| s["name"] == format!("create {}", agg[0]) && links_to(s, trace, detect_span))
        .unwrap_or_else(|| panic!("an aggregate linked to the reading: {spans:#?}"));
    assert_eq!(create["service"], "gale-aggregate");
    assert_eq!(create["parent_span_id"], "", "a root, not a child");
    assert_eq!(create["kind"], 4, "SPAN_KIND_PRODUCER");
    assert_eq!(create["attributes"]["messaging.operation.type"], "create");
    assert_eq!(
        create["attributes"]["messaging.destination.name"],
        agg[0].as_str()
    );
    // It is the context the aggregate record carries.
    assert_eq!(
        agg_tp,
        format!(
            "00-{}-{}-01",
            create["trace_id"].as_str().unwrap(),
            create["span_id"].as_str().unwrap()
        )
    );

    // The sinks' batch spans link to validate's span of the reading.
    for (service, name) in [
        ("gale-pg-sink", format!("process {validated}")),
        ("gale-archive", format!("flush {validated}")),
    ] {
        let batch = spans
            .iter()
            .find(|s| {
                s["service"] == service && s["name"] == name && links_to(s, trace, validate_span)
            })
            .unwrap_or_else(|| panic!("{service}'s {name} linked to the reading: {spans:#?}"));
        assert_eq!(
            batch["parent_span_id"], "",
            "{service}: links, not a parent"
        );
        assert_ne!(batch["trace_id"], trace, "{service}: a trace of its own");
        assert_eq!(batch["kind"], 5, "{service}: SPAN_KIND_CONSUMER");
        assert_eq!(batch["status"], 0, "{service}: not failed");
        let a = &batch["attributes"];
        assert_eq!(a["messaging.system"], "kafka");
        assert_eq!(a["messaging.operation.type"], "process");
        assert_eq!(a["messaging.destination.name"], validated.as_str());
        let count = a["messaging.batch.message_count"].as_i64().unwrap();
        let linked = batch["links"].as_array().unwrap().len() as i64;
        assert!((1..=2).contains(&count), "{service}: {count} records");
        assert_eq!(
            a["gale.links.total"], linked,
            "{service}: every record linked"
        );
        assert!(a["messaging.consumer.group.name"].is_string());
    }
}
