//! The API over real HTTP: every answer is Confluent-shaped JSON, query flags
//! are read as Confluent reads them, and a write that fails leaves nothing
//! behind. The router is served on port 0 in the test's own runtime (a
//! current-thread one, so a write that blocked the runtime would hang here).

use std::path::Path;

use gale_registry::api;
use gale_registry::store::{Level, Store};
use reqwest::Method;
use serde_json::{json, Value};

const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]}"#;

async fn serve(store: Store) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, api::routes(store)).await });
    format!("http://{addr}")
}

/// Status, body as JSON (`Null` if it is not JSON) and content type.
async fn call(method: Method, url: String, body: Option<String>) -> (u16, Value, String) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json");
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        content_type,
    )
}

fn schema(s: &str) -> Option<String> {
    Some(json!({ "schema": s }).to_string())
}

/// Asserts a Confluent error: status, `error_code`, a message, JSON content type.
fn assert_error(got: (u16, Value, String), status: u16, code: u64) {
    let (s, body, content_type) = got;
    assert_eq!(
        (s, body["error_code"].as_u64()),
        (status, Some(code)),
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(content_type.contains("json"), "{content_type}");
}

#[tokio::test]
async fn malformed_requests_get_confluent_json_errors() {
    let base = serve(Store::open(None, Level::Backward).unwrap()).await;
    let (s, body, _) = call(Method::GET, format!("{base}/schemas/types"), None).await;
    assert_eq!((s, body), (200, json!(["AVRO"])));

    assert_error(
        call(Method::GET, format!("{base}/schemas/ids/abc"), None).await,
        404,
        404,
    );
    assert_error(
        call(Method::GET, format!("{base}/schemas/ids/99999999999"), None).await,
        404,
        404,
    );
    assert_error(
        call(Method::GET, format!("{base}/schemas/ids/-1"), None).await,
        404,
        40403,
    );
    assert_error(
        call(Method::GET, format!("{base}/schemas/ids/7/subjects"), None).await,
        404,
        40403,
    );
    for bad in ["abc", "0", "-2", "2147483648"] {
        assert_error(
            call(
                Method::GET,
                format!("{base}/subjects/x/versions/{bad}"),
                None,
            )
            .await,
            422,
            42202,
        );
        assert_error(
            call(
                Method::DELETE,
                format!("{base}/subjects/x/versions/{bad}"),
                None,
            )
            .await,
            422,
            42202,
        );
    }
    assert_error(
        call(Method::GET, format!("{base}/nowhere"), None).await,
        404,
        404,
    );
    assert_error(
        call(Method::PATCH, format!("{base}/subjects"), None).await,
        405,
        405,
    );
    let (s, body, _) = call(
        Method::GET,
        format!("{base}/subjects?deleted=maybe&x=%ZZ"),
        None,
    )
    .await;
    assert_eq!(
        (s, body),
        (200, json!([])),
        "unreadable flags count as false"
    );

    let register = format!("{base}/subjects/m-value/versions");
    assert_error(
        call(Method::POST, register.clone(), Some("{".into())).await,
        400,
        400,
    );
    assert_error(
        call(Method::POST, register.clone(), Some("{}".into())).await,
        422,
        42201,
    );
    assert_error(
        call(
            Method::POST,
            register.clone(),
            Some(json!({"schema": V1, "schemaType": "PROTOBUF"}).to_string()),
        )
        .await,
        422,
        42201,
    );
    let huge = json!({ "schema": "x".repeat(3 << 20) }).to_string();
    assert_error(
        call(Method::POST, register.clone(), Some(huge)).await,
        413,
        413,
    );
    // Nulls where the Python client may send them are fine.
    let (s, body, _) = call(
        Method::POST,
        format!("{register}?normalize=False"),
        Some(
            json!({"schema": V1, "schemaType": null, "references": null, "metadata": null})
                .to_string(),
        ),
    )
    .await;
    assert_eq!((s, body["id"].as_u64()), (200, Some(1)), "{body}");
    assert_error(
        call(
            Method::PUT,
            format!("{base}/config"),
            Some(json!({"compatibility": "SIDEWAYS"}).to_string()),
        )
        .await,
        422,
        42203,
    );
    let (s, body, _) = call(
        Method::PUT,
        format!("{base}/config"),
        Some(json!({"compatibilityLevel": "full"}).to_string()),
    )
    .await;
    assert_eq!((s, body), (200, json!({"compatibility": "FULL"})));
    let (_, body, _) = call(Method::DELETE, format!("{base}/config"), None).await;
    assert_eq!(body, json!({"compatibilityLevel": "FULL"}));
    let (_, body, _) = call(Method::GET, format!("{base}/config"), None).await;
    assert_eq!(
        body,
        json!({"compatibilityLevel": "BACKWARD"}),
        "DELETE /config restores the start-up level"
    );
}

#[tokio::test]
async fn verbose_compatibility_reports_invalid_schemas_and_missing_versions() {
    let base = serve(Store::open(None, Level::Backward).unwrap()).await;
    let url = |rest: &str| format!("{base}/compatibility/subjects/c-value/versions{rest}");
    let (s, body, _) = call(Method::POST, url("/latest"), schema(V1)).await;
    assert_eq!(
        (s, body),
        (200, json!({"is_compatible": true})),
        "nothing to be incompatible with"
    );
    assert_error(call(Method::POST, url("/1"), schema(V1)).await, 404, 40402);
    assert_error(
        call(Method::POST, url("/latest"), schema("{\"type\":\"nope\"}")).await,
        422,
        42201,
    );
    let (s, body, _) = call(
        Method::POST,
        url("/latest?verbose=TRUE"),
        schema("{\"type\":\"nope\"}"),
    )
    .await;
    assert_eq!(
        (s, body["is_compatible"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(1), "{body}");
}

fn blocker(data: &Path) -> std::path::PathBuf {
    data.with_file_name("reg.json.tmp")
}

#[tokio::test]
async fn a_failed_write_is_an_error_every_time_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("reg.json");
    let base = serve(Store::open(Some(&data), Level::Backward).unwrap()).await;
    let register = format!("{base}/subjects/w-value/versions");
    let (s, body, _) = call(Method::POST, register.clone(), schema(V1)).await;
    assert_eq!(s, 200, "{body}");

    std::fs::create_dir(blocker(&data)).unwrap();
    for _ in 0..2 {
        assert_error(
            call(Method::POST, register.clone(), schema(V2)).await,
            500,
            50001,
        );
    }
    let (_, body, _) = call(Method::GET, format!("{register}?deleted=true"), None).await;
    assert_eq!(body, json!([1]));
    assert_error(
        call(Method::DELETE, format!("{base}/subjects/w-value"), None).await,
        500,
        50001,
    );
    let (_, body, _) = call(Method::GET, format!("{base}/subjects"), None).await;
    assert_eq!(body, json!(["w-value"]));

    std::fs::remove_dir(blocker(&data)).unwrap();
    // Concurrent writers, each fsyncing on the blocking pool.
    let writes = (0..8).map(|i| {
        call(
            Method::POST,
            format!("{base}/subjects/w{i}-value/versions"),
            schema(V2),
        )
    });
    for (s, body, _) in futures_join_all(writes).await {
        assert_eq!((s, body["id"].as_u64()), (200, Some(2)), "{body}");
    }
    let (_, body, _) = call(
        Method::GET,
        format!("{base}/subjects?offset=1&limit=2"),
        None,
    )
    .await;
    assert_eq!(body, json!(["w0-value", "w1-value"]));
    let reopened = Store::open(Some(&data), Level::Backward).unwrap();
    assert_eq!(
        reopened
            .subjects(gale_registry::store::Deleted::Exclude, None)
            .len(),
        9
    );
}

/// Runs the futures concurrently on this (single-threaded) runtime.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
