//! One reading is one trace: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, ingest
//! and validate export their spans over OTLP/HTTP (to a receiver that
//! decodes them with the official protobuf definitions); the reading's
//! `send` span at ingest continues the client's trace, validate's `process`
//! span is its child with the messaging attributes, and the validated
//! record's `traceparent` names validate's span.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gale_tests::*;

const API_KEY: &str = "trace-test-key-0001";

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

fn spans_of(path: &Path, trace: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|s| s["trace_id"] == trace)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reading_is_one_trace_across_ingest_and_validate() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let otlp = receiver(dir.path()).await;
    let assets = dir.path().join("assets.csv");
    std::fs::write(&assets, "asset_id,kind,site_id\nMTR-1,meter,grid-north\n").unwrap();
    let ingest_cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &ingest_cfg,
        format!("[[ingest.sources]]\nname = \"meters\"\napi_keys = [\"{API_KEY}\"]\n"),
    )
    .unwrap();
    let (raw, validated) = (unique("raw"), unique("validated"));
    let group = unique("validate");
    let api = format!("127.0.0.1:{}", free_port());
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint.clone()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_string()),
    ];

    let mut env = service_env(&stack, None);
    env.extend(otel.iter().cloned());
    env.extend([
        ("GALE_TOPICS__RAW", raw.clone()),
        ("GALE_TOPICS__DEAD_LETTER", unique("dlq-ingest")),
        ("GALE_INGEST__LISTEN", api.clone()),
    ]);
    let mut ingest = ServiceProcess::start(
        "gale-ingest",
        &env,
        &["--config", ingest_cfg.to_str().unwrap()],
        "trace-ingest",
    );
    let mut env = service_env(&stack, None);
    env.extend(otel.iter().cloned());
    env.extend([
        ("GALE_TOPICS__INPUT", raw.clone()),
        ("GALE_TOPICS__VALIDATED", validated.clone()),
        ("GALE_TOPICS__QUARANTINE", unique("quarantine")),
        ("GALE_TOPICS__DEAD_LETTER", unique("dlq-validate")),
        ("GALE_KAFKA__GROUP_ID", group.clone()),
        ("GALE_VALIDATE__ASSETS__SOURCE", "file".into()),
        ("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()),
    ]);
    let mut validate = ServiceProcess::start("gale-validate", &env, &[], "trace-validate");
    ingest.wait_ready(Duration::from_secs(60)).await;
    validate.wait_ready(Duration::from_secs(60)).await;

    // The client's own trace context comes with the request.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let resp = reqwest::Client::new()
        .post(format!("http://{api}/v1/readings"))
        .header("Authorization", format!("Bearer {API_KEY}"))
        .header("Content-Type", "application/json")
        .header("traceparent", format!("00-{trace}-{client_span}-01"))
        .body(format!(
            r#"{{"asset_id":"MTR-1","timestamp":"{now}","power":1.5,"power_unit":"kW"}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);

    let out = TopicReader::new(&stack.bootstrap, &validated).read(1, Duration::from_secs(60));
    let downstream = header(&out[0], "traceparent").expect("validated traceparent");
    assert_eq!(
        gale_runtime::telemetry::trace_id_of(&downstream),
        Some(trace)
    );

    // Stopping flushes what is still batched for export.
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
    assert_eq!(validate.terminate(Duration::from_secs(30)), Some(0));
    let spans = wait_for(
        "the spans of both services",
        Duration::from_secs(30),
        || {
            let spans = spans_of(&otlp.spans, trace);
            async move {
                let services: std::collections::BTreeSet<String> = spans
                    .iter()
                    .filter_map(|s| s["service"].as_str().map(str::to_string))
                    .collect();
                (services.contains("gale-ingest") && services.contains("gale-validate"))
                    .then_some(spans)
            }
        },
    )
    .await;
    let by_name: HashMap<String, &serde_json::Value> = spans
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s))
        .collect();
    let send = by_name
        .get(&format!("send {raw}"))
        .unwrap_or_else(|| panic!("ingest's send span: {spans:#?}"));
    assert_eq!(send["service"], "gale-ingest");
    assert_eq!(
        send["parent_span_id"], client_span,
        "continues the client's trace"
    );
    assert_eq!(send["kind"], 4, "SPAN_KIND_PRODUCER");
    assert_eq!(send["attributes"]["messaging.system"], "kafka");
    assert_eq!(
        send["attributes"]["messaging.destination.name"],
        raw.as_str()
    );

    let process = by_name
        .get(&format!("process {raw}"))
        .unwrap_or_else(|| panic!("validate's process span: {spans:#?}"));
    assert_eq!(process["service"], "gale-validate");
    assert_eq!(
        process["parent_span_id"], send["span_id"],
        "child of ingest's span"
    );
    assert_eq!(process["kind"], 5, "SPAN_KIND_CONSUMER");
    let attributes = &process["attributes"];
    assert_eq!(attributes["messaging.system"], "kafka");
    assert_eq!(attributes["messaging.operation.type"], "process");
    assert_eq!(attributes["messaging.destination.name"], raw.as_str());
    assert_eq!(attributes["messaging.consumer.group.name"], group.as_str());
    assert_eq!(attributes["messaging.kafka.message.key"], "MTR-1");
    assert!(attributes["messaging.kafka.offset"].is_i64());
    assert!(attributes["messaging.destination.partition.id"].is_string());

    // The validated record carries validate's span as its parent.
    assert!(
        downstream.contains(process["span_id"].as_str().unwrap()),
        "{downstream} names validate's span"
    );
}
