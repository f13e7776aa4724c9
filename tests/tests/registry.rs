//! The dev registry speaks Confluent's API, and services fail at start with a
//! clear message when the registry rejects their schema or cannot be reached.

use std::process::Command;
use std::time::Duration;

use gale_tests::*;
use serde_json::{json, Value};

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json");
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn confluent_api_shapes_and_error_codes() {
    let stack = stack();
    let base = &stack.registry_url;
    let subject = format!("{}-value", unique("api"));
    let v1 = json!({"type": "record", "name": "R", "namespace": "t", "fields": [{"name": "a", "type": "int"}]}).to_string();
    let v2 = json!({"type": "record", "name": "R", "namespace": "t", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": ""}]}).to_string();
    let bad = json!({"type": "record", "name": "R", "namespace": "t", "fields": [{"name": "a", "type": "int"}, {"name": "c", "type": "long"}]}).to_string();

    let (s, _) = call(
        reqwest::Method::GET,
        format!("{base}/subjects/{subject}/versions"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, r) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/{subject}/versions"),
        Some(json!({"schema": v1})),
    )
    .await;
    assert_eq!(s, 200);
    let id1 = r["id"].as_u64().unwrap();
    let (_, r) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/{subject}/versions"),
        Some(json!({"schema": v1})),
    )
    .await;
    assert_eq!(
        r["id"].as_u64().unwrap(),
        id1,
        "re-registering returns the same id"
    );
    let (s, r) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/{subject}/versions"),
        Some(json!({"schema": v2, "schemaType": "AVRO"})),
    )
    .await;
    assert_eq!(s, 200);
    let id2 = r["id"].as_u64().unwrap();
    let (s, r) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/{subject}/versions"),
        Some(json!({"schema": bad})),
    )
    .await;
    assert_eq!((s, r["error_code"].as_u64()), (409, Some(409)), "{r}");
    let (s, r) = call(
        reqwest::Method::POST,
        format!("{base}/compatibility/subjects/{subject}/versions/latest?verbose=true"),
        Some(json!({"schema": bad})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(r["is_compatible"], false);
    assert!(!r["messages"].as_array().unwrap().is_empty());
    let (_, r) = call(
        reqwest::Method::GET,
        format!("{base}/subjects/{subject}/versions"),
        None,
    )
    .await;
    assert_eq!(r, json!([1, 2]));
    let (_, r) = call(
        reqwest::Method::GET,
        format!("{base}/subjects/{subject}/versions/latest"),
        None,
    )
    .await;
    assert_eq!(
        (r["version"].as_u64(), r["id"].as_u64()),
        (Some(2), Some(id2))
    );
    let (_, r) = call(
        reqwest::Method::GET,
        format!("{base}/schemas/ids/{id1}"),
        None,
    )
    .await;
    assert_eq!(r["schema"].as_str().unwrap(), v1);
    let (s, r) = call(
        reqwest::Method::GET,
        format!("{base}/schemas/ids/999999"),
        None,
    )
    .await;
    assert_eq!((s, r["error_code"].as_u64()), (404, Some(40403)));
    let (s, r) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/{subject}"),
        Some(json!({"schema": v1})),
    )
    .await;
    assert_eq!((s, r["version"].as_u64()), (200, Some(1)));
    let (s, _) = call(
        reqwest::Method::PUT,
        format!("{base}/config/{subject}"),
        Some(json!({"compatibility": "NONE"})),
    )
    .await;
    assert_eq!(s, 200);
    let (_, r) = call(
        reqwest::Method::GET,
        format!("{base}/config/{subject}"),
        None,
    )
    .await;
    assert_eq!(r["compatibilityLevel"], "NONE");
    let (s, _) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/{subject}/versions"),
        Some(json!({"schema": bad})),
    )
    .await;
    assert_eq!(s, 200, "NONE accepts anything valid");
    let (s, r) = call(
        reqwest::Method::PUT,
        format!("{base}/config/{subject}"),
        Some(json!({"compatibility": "SIDEWAYS"})),
    )
    .await;
    assert_eq!((s, r["error_code"].as_u64()), (422, Some(42203)));
    let (s, r) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/{subject}/versions"),
        Some(json!({"schema": "{\"type\": \"nope\"}"})),
    )
    .await;
    assert_eq!((s, r["error_code"].as_u64()), (422, Some(42201)));
}

fn validate_output(stack: &Stack, registry_url: &str, validated: &str) -> std::process::Output {
    Command::new(bin("gale-validate"))
        .envs([
            ("GALE_KAFKA__BOOTSTRAP_SERVERS", stack.bootstrap.as_str()),
            ("GALE_REGISTRY__URL", registry_url),
            ("GALE_REGISTRY__STARTUP_WAIT", "2s"),
            ("GALE_HTTP__LISTEN", &format!("127.0.0.1:{}", free_port())),
            ("GALE_TOPICS__INPUT", &unique("raw")),
            ("GALE_TOPICS__VALIDATED", validated),
            ("GALE_TOPICS__QUARANTINE", &unique("q")),
            ("GALE_TOPICS__DEAD_LETTER", &unique("dlq")),
            ("GALE_VALIDATE__ASSETS__SOURCE", "file"),
            ("GALE_VALIDATE__ASSETS__PATH", "/dev/null"),
        ])
        .output()
        .expect("run gale-validate")
}

#[tokio::test]
async fn incompatible_schema_stops_start_up_with_the_subject_and_reason() {
    let stack = stack();
    let validated = unique("validated");
    // An earlier version of the subject that ours cannot read (no defaults for our fields).
    let old = json!({"type": "record", "name": "ValidatedReading", "namespace": "io.gale.telemetry.v1", "fields": [{"name": "event_id", "type": "string"}]}).to_string();
    let (s, _) = call(
        reqwest::Method::POST,
        format!("{}/subjects/{validated}-value/versions", stack.registry_url),
        Some(json!({"schema": old})),
    )
    .await;
    assert_eq!(s, 200);
    let out = validate_output(&stack, &stack.registry_url, &validated);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{validated}-value")), "{err}");
    assert!(err.contains("incompatible"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn unreachable_registry_stops_start_up_with_the_address() {
    let stack = stack();
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    let out = validate_output(&stack, &nowhere, &unique("validated"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&nowhere) && err.contains("unavailable"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
