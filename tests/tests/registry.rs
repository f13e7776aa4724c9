//! The dev registry speaks Confluent's API (error codes, soft and permanent
//! deletes, JSON errors for malformed requests), keeps nothing it could not
//! write, survives a real restart and refuses to start on a corrupt data
//! file; services fail at start with a clear message when the registry
//! rejects their schema or cannot be reached.
//!
//! Every test name contains "registry", so `scripts/test.sh registry` runs
//! them all.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
async fn registry_confluent_api_shapes_and_error_codes() {
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
async fn registry_incompatible_schema_stops_start_up_with_the_subject_and_reason() {
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

/// Asserts a Confluent error answer: HTTP status and `error_code`.
fn assert_error((status, body): (u16, Value), want_status: u16, want_code: u64, what: &str) {
    assert_eq!(
        (status, body["error_code"].as_u64()),
        (want_status, Some(want_code)),
        "{what}: {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

fn record(fields: &[&str]) -> String {
    let fields: Vec<Value> = fields
        .iter()
        .map(|f| json!({"name": f, "type": "string", "default": ""}))
        .collect();
    json!({"type": "record", "name": "D", "namespace": "t", "fields": fields}).to_string()
}

#[tokio::test]
async fn registry_soft_and_permanent_deletes_follow_confluent() {
    use reqwest::Method;
    let stack = stack();
    let base = &stack.registry_url;
    let subject = format!("{}-value", unique("del"));
    let versions = format!("{base}/subjects/{subject}/versions");
    let (v1, v2, v3) = (
        record(&["a"]),
        record(&["a", "b"]),
        record(&["a", "b", "c"]),
    );

    let (s, r) = call(Method::GET, format!("{base}/schemas/types"), None).await;
    assert_eq!((s, r), (200, json!(["AVRO"])));
    assert_error(
        call(Method::DELETE, format!("{base}/subjects/{subject}"), None).await,
        404,
        40401,
        "soft delete of an unknown subject",
    );
    assert_error(
        call(Method::DELETE, format!("{versions}/1"), None).await,
        404,
        40401,
        "version delete on an unknown subject",
    );
    let mut ids = Vec::new();
    for schema in [&v1, &v2, &v3] {
        let (s, r) = call(
            Method::POST,
            versions.clone(),
            Some(json!({"schema": schema})),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        ids.push(r["id"].as_u64().unwrap());
    }

    // Versions: soft first, then permanent; the codes Confluent uses.
    assert_error(
        call(Method::DELETE, format!("{versions}/9"), None).await,
        404,
        40402,
        "unknown version",
    );
    assert_error(
        call(Method::DELETE, format!("{versions}/2?permanent=true"), None).await,
        404,
        40407,
        "permanent delete of a live version",
    );
    let (s, r) = call(Method::DELETE, format!("{versions}/2"), None).await;
    assert_eq!((s, r), (200, json!(2)));
    assert_error(
        call(Method::DELETE, format!("{versions}/2"), None).await,
        404,
        40406,
        "soft delete of a soft-deleted version",
    );
    let (_, r) = call(Method::GET, versions.clone(), None).await;
    assert_eq!(r, json!([1, 3]));
    let (_, r) = call(Method::GET, format!("{versions}?deleted=true"), None).await;
    assert_eq!(r, json!([1, 2, 3]));
    let (_, r) = call(Method::GET, format!("{versions}?deletedOnly=true"), None).await;
    assert_eq!(r, json!([2]));
    assert_error(
        call(Method::GET, format!("{versions}/2"), None).await,
        404,
        40402,
        "a soft-deleted version is hidden",
    );
    let (s, r) = call(Method::GET, format!("{versions}/2?deleted=true"), None).await;
    assert_eq!((s, r["id"].as_u64()), (200, Some(ids[1])), "{r}");
    let (s, r) = call(
        Method::GET,
        format!("{base}/schemas/ids/{}/versions?deleted=true", ids[1]),
        None,
    )
    .await;
    assert_eq!((s, r), (200, json!([{"subject": subject, "version": 2}])));
    let (s, r) = call(Method::DELETE, format!("{versions}/2?permanent=true"), None).await;
    assert_eq!((s, r), (200, json!(2)));
    let (_, r) = call(Method::GET, format!("{versions}?deleted=true"), None).await;
    assert_eq!(r, json!([1, 3]));
    let (s, r) = call(Method::GET, format!("{base}/schemas/ids/{}", ids[1]), None).await;
    assert_eq!(
        (s, r["schema"].as_str()),
        (200, Some(v2.as_str())),
        "ids outlive deletes"
    );

    // The subject: permanent only after soft, soft only once.
    assert_error(
        call(
            Method::DELETE,
            format!("{base}/subjects/{subject}?permanent=true"),
            None,
        )
        .await,
        404,
        40405,
        "permanent delete of a live subject",
    );
    let (s, r) = call(Method::DELETE, format!("{base}/subjects/{subject}"), None).await;
    assert_eq!((s, r), (200, json!([1, 3])));
    assert_error(
        call(Method::DELETE, format!("{base}/subjects/{subject}"), None).await,
        404,
        40404,
        "soft delete of a soft-deleted subject",
    );
    let (_, r) = call(Method::GET, format!("{base}/subjects"), None).await;
    assert!(!r.as_array().unwrap().contains(&json!(subject)), "{r}");
    let (_, r) = call(Method::GET, format!("{base}/subjects?deleted=true"), None).await;
    assert!(r.as_array().unwrap().contains(&json!(subject)), "{r}");
    let (_, r) = call(
        Method::GET,
        format!("{base}/subjects?deletedOnly=true&subjectPrefix={subject}"),
        None,
    )
    .await;
    assert_eq!(r, json!([subject]));
    assert_error(
        call(Method::GET, versions.clone(), None).await,
        404,
        40401,
        "a soft-deleted subject is hidden",
    );
    let (s, r) = call(
        Method::POST,
        format!("{base}/subjects/{subject}?deleted=true"),
        Some(json!({"schema": v3})),
    )
    .await;
    assert_eq!((s, r["version"].as_u64()), (200, Some(3)), "{r}");
    let (s, r) = call(
        Method::DELETE,
        format!("{base}/subjects/{subject}?permanent=true"),
        None,
    )
    .await;
    assert_eq!((s, r), (200, json!([1, 3])));
    assert_error(
        call(Method::GET, format!("{versions}?deleted=true"), None).await,
        404,
        40401,
        "a permanently deleted subject is gone",
    );
    assert_error(
        call(
            Method::DELETE,
            format!("{base}/subjects/{subject}?permanent=true"),
            None,
        )
        .await,
        404,
        40401,
        "permanent delete of a removed subject",
    );
}

#[tokio::test]
async fn registry_malformed_requests_get_confluent_json_errors() {
    use reqwest::Method;
    let stack = stack();
    let base = &stack.registry_url;
    let subject = format!("{}-value", unique("bad"));
    assert_error(
        call(Method::GET, format!("{base}/schemas/ids/abc"), None).await,
        404,
        404,
        "non-numeric id",
    );
    assert_error(
        call(
            Method::GET,
            format!("{base}/schemas/ids/abc/versions"),
            None,
        )
        .await,
        404,
        404,
        "non-numeric id",
    );
    for bad in ["abc", "0", "-3", "1.5"] {
        for method in [Method::GET, Method::DELETE] {
            assert_error(
                call(
                    method,
                    format!("{base}/subjects/{subject}/versions/{bad}"),
                    None,
                )
                .await,
                422,
                42202,
                bad,
            );
        }
    }
    assert_error(
        call(Method::GET, format!("{base}/no/such/path"), None).await,
        404,
        404,
        "unknown path",
    );
    assert_error(
        call(
            Method::PUT,
            format!("{base}/subjects/{subject}/versions"),
            None,
        )
        .await,
        405,
        405,
        "wrong method",
    );
    // Confluent's `latest` and `-1` on a subject that does not exist.
    for latest in ["latest", "-1"] {
        assert_error(
            call(
                Method::GET,
                format!("{base}/subjects/{subject}/versions/{latest}"),
                None,
            )
            .await,
            404,
            40401,
            latest,
        );
    }
    let (s, r) = call(
        Method::GET,
        format!("{base}/subjects?deleted=False&deletedOnly=nope"),
        None,
    )
    .await;
    assert!(s == 200 && r.is_array(), "{r}");
}

/// A gale-registry process of one test, with its own data file, so the test
/// can break its disk, kill it and start it again.
struct PrivateRegistry {
    child: Option<Child>,
    url: String,
    data: PathBuf,
    log: PathBuf,
}

impl PrivateRegistry {
    fn spawn(data: &Path, log: &Path, env: &[(&str, &str)]) -> (Child, String) {
        let listen = format!("127.0.0.1:{}", free_port());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(bin("gale-registry"));
        // Only our settings: a stray GALE_X__Y in the environment would be
        // an unknown config key.
        for (key, _) in std::env::vars() {
            if key.starts_with("GALE_") && key.contains("__") {
                cmd.env_remove(key);
            }
        }
        cmd.env("GALE_SERVER__LISTEN", &listen)
            .env("GALE_SERVER__DATA_FILE", data)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().expect("start gale-registry");
        (child, format!("http://{listen}"))
    }

    async fn start(data: &Path, env: &[(&str, &str)]) -> PrivateRegistry {
        let log = log_dir().join(format!("{}.log", unique("registry")));
        let (child, url) = Self::spawn(data, &log, env);
        let mut registry = PrivateRegistry {
            child: Some(child),
            url,
            data: data.to_path_buf(),
            log,
        };
        registry.wait_ready().await;
        registry
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            let ping = client
                .get(format!("{}/schemas/types", self.url))
                .send()
                .await;
            if ping.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "gale-registry did not start ({exited:?}); log {}:\n{}",
                    self.log.display(),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything that was not already on disk.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn restart(&mut self, env: &[(&str, &str)]) {
        self.kill9();
        let (child, url) = Self::spawn(&self.data, &self.log, env);
        self.child = Some(child);
        self.url = url;
        self.wait_ready().await;
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test]
async fn registry_failed_write_is_not_acknowledged_and_state_survives_restart() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state").join("registry.json");
    let mut registry =
        PrivateRegistry::start(&data, &[("GALE_SERVER__COMPATIBILITY", "BACKWARD")]).await;
    let base = registry.url.clone();
    let subject = "restart-value";
    let versions = format!("{base}/subjects/{subject}/versions");
    let (v1, v2, v3) = (
        record(&["a"]),
        record(&["a", "b"]),
        record(&["a", "b", "c"]),
    );

    let (s, r) = call(Method::POST, versions.clone(), Some(json!({"schema": v1}))).await;
    assert_eq!(s, 200, "{r}");
    let id1 = r["id"].as_u64().unwrap();

    // The data file cannot be replaced: a directory where the temporary file goes.
    // (The test may run as root, which ignores permissions.)
    let blocker = data.with_file_name("registry.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    for attempt in 1..=2 {
        let (s, r) = call(Method::POST, versions.clone(), Some(json!({"schema": v2}))).await;
        assert_eq!(
            (s, r["error_code"].as_u64()),
            (500, Some(50001)),
            "attempt {attempt} must fail, not acknowledge an unsaved change: {r}"
        );
    }
    let (_, r) = call(Method::GET, format!("{versions}?deleted=true"), None).await;
    assert_eq!(
        r,
        json!([1]),
        "the failed registration is not in memory either"
    );
    assert_error(
        call(
            Method::POST,
            format!("{base}/subjects/{subject}"),
            Some(json!({"schema": v2})),
        )
        .await,
        404,
        40403,
        "lookup of the schema whose registration failed",
    );
    let (s, _) = call(
        Method::PUT,
        format!("{base}/config/{subject}"),
        Some(json!({"compatibility": "FULL"})),
    )
    .await;
    assert_eq!(s, 500);
    assert_error(
        call(Method::GET, format!("{base}/config/{subject}"), None).await,
        404,
        40408,
        "the failed config change is not in memory",
    );

    std::fs::remove_dir(&blocker).unwrap();
    let (s, r) = call(Method::POST, versions.clone(), Some(json!({"schema": v2}))).await;
    assert_eq!(s, 200, "{r}");
    let id2 = r["id"].as_u64().unwrap();
    assert_eq!(id2, id1 + 1, "failed attempts used up no id");
    let (s, r) = call(Method::POST, versions.clone(), Some(json!({"schema": v3}))).await;
    assert_eq!(s, 200, "{r}");
    let id3 = r["id"].as_u64().unwrap();
    let (s, _) = call(Method::DELETE, format!("{versions}/3"), None).await;
    assert_eq!(s, 200);
    let (s, _) = call(
        Method::PUT,
        format!("{base}/config/{subject}"),
        Some(json!({"compatibility": "FULL"})),
    )
    .await;
    assert_eq!(s, 200);

    // SIGKILL and start again, now configured with another global level.
    registry
        .restart(&[("GALE_SERVER__COMPATIBILITY", "NONE")])
        .await;
    let base = registry.url.clone();
    let versions = format!("{base}/subjects/{subject}/versions");
    for (id, schema) in [(id1, &v1), (id2, &v2), (id3, &v3)] {
        let (s, r) = call(Method::GET, format!("{base}/schemas/ids/{id}"), None).await;
        assert_eq!(
            (s, r["schema"].as_str()),
            (200, Some(schema.as_str())),
            "id {id}: {r}"
        );
    }
    let (_, r) = call(Method::GET, versions.clone(), None).await;
    assert_eq!(r, json!([1, 2]));
    let (_, r) = call(Method::GET, format!("{versions}?deletedOnly=true"), None).await;
    assert_eq!(r, json!([3]), "the soft delete survived");
    let (_, r) = call(Method::GET, format!("{base}/config/{subject}"), None).await;
    assert_eq!(r, json!({"compatibilityLevel": "FULL"}));
    let (_, r) = call(Method::GET, format!("{base}/config"), None).await;
    assert_eq!(
        r,
        json!({"compatibilityLevel": "BACKWARD"}),
        "an existing data file keeps its global level"
    );
    let log = registry.log_text();
    assert!(
        log.contains("server.compatibility is ignored"),
        "the ignored setting is logged:\n{log}"
    );
    let (s, r) = call(
        Method::POST,
        format!("{base}/subjects/other-value/versions"),
        Some(json!({"schema": record(&["z"])})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        r["id"].as_u64().unwrap() > id3,
        "ids are not reused after a restart: {r}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// Runs gale-registry on `data` and returns its exit status and output; it
/// must stop on its own.
fn run_to_exit(data: &Path) -> (std::process::ExitStatus, String) {
    let log = log_dir().join(format!("{}.log", unique("registry-corrupt")));
    let (mut child, _) = PrivateRegistry::spawn(data, &log, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gale-registry started on a corrupt data file:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

#[tokio::test]
async fn registry_corrupt_state_file_stops_start_up_naming_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("registry.json");
    let schema = json!(record(&["a"]));
    let dangling = json!({
        "next_id": 2,
        "schemas": {"1": {"schema": schema, "normalized": ""}},
        "subjects": {"t-value": {"versions": [
            {"version": 1, "id": 1, "deleted": false},
            {"version": 2, "id": 7, "deleted": false}
        ], "compatibility": null}},
        "compatibility": "BACKWARD"
    });
    let reused_ids = json!({
        "next_id": 1,
        "schemas": {"1": {"schema": schema, "normalized": ""}},
        "subjects": {},
        "compatibility": "BACKWARD"
    });
    let cases = [
        (dangling.to_string(), "version 2 refers to schema id 7"),
        (
            reused_ids.to_string(),
            "next_id is 1 but schema id 1 exists",
        ),
        ("{\"next_id\": 3, \"schem".to_string(), "EOF"),
    ];
    for (text, problem) in cases {
        std::fs::write(&data, &text).unwrap();
        let (status, output) = run_to_exit(&data);
        assert!(!status.success(), "{output}");
        assert!(
            output.contains(&data.display().to_string()) && output.contains(problem),
            "the error names the file and {problem:?}:\n{output}"
        );
        assert!(!output.contains("panicked"), "{output}");
        assert_eq!(
            std::fs::read_to_string(&data).unwrap(),
            text,
            "a corrupt file is left as it was"
        );
    }
}

/// Drives the registry with Confluent's own Python client (confluent-kafka),
/// which parses every answer and raises on any error code it does not expect.
const PYTHON_CLIENT: &str = r#"
import json, sys
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

url, subject = sys.argv[1], sys.argv[2]
def record(*fields):
    return json.dumps({"type": "record", "name": "P", "namespace": "t",
                       "fields": [{"name": f, "type": "string", "default": ""} for f in fields]})
def code(call):
    try:
        call()
    except SchemaRegistryError as e:
        return e.error_code
    return None

client = SchemaRegistryClient({"url": url})
out = {"types": client.get_schema_types()}
v1, v2 = Schema(record("a"), "AVRO"), Schema(record("a", "b"), "AVRO")
id1 = client.register_schema(subject, v1)
out["latest"] = [client.get_latest_version(subject).schema_id == id1, client.get_latest_version(subject).version]
out["lookup"] = client.lookup_schema(subject, v1).version
out["compatible"] = client.test_compatibility(subject, v2)
out["set_level"] = client.set_compatibility(subject, "FULL")
out["level"] = client.get_compatibility(subject)
client.register_schema(subject, v2)
out["versions"] = client.get_versions(subject)
out["by_id"] = client.get_schema(id1).schema_str == v1.schema_str
out["subjects_by_id"] = client.get_subjects_by_schema_id(id1)
out["delete_version"] = client.delete_version(subject, 2)
out["versions_after"] = client.get_versions(subject)
out["deleted_version"] = client.get_version(subject, 2, deleted=True).version
out["delete_subject"] = client.delete_subject(subject)
out["delete_again"] = code(lambda: client.delete_subject(subject))
out["listed"] = subject in client.get_subjects()
out["listed_deleted"] = subject in client.get_subjects(deleted=True)
out["permanent"] = client.delete_subject(subject, permanent=True)
out["gone"] = code(lambda: client.get_versions(subject, deleted=True))
out["schema_kept"] = client.get_schema(id1).schema_str == v1.schema_str
print(json.dumps(out))
"#;

#[tokio::test]
async fn registry_serves_confluents_python_client() {
    let stack = stack();
    let python = std::env::var("GALE_PYTHON").unwrap_or_else(|_| {
        panic!("GALE_PYTHON is not set: run the tests with `make test`, which prepares confluent-kafka")
    });
    let subject = format!("{}-value", unique("py"));
    let out = Command::new(python)
        .args(["-c", PYTHON_CLIENT, &stack.registry_url, &subject])
        .output()
        .expect("run python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON from the script");
    assert_eq!(
        got,
        json!({
            "types": ["AVRO"],
            "latest": [true, 1],
            "lookup": 1,
            "compatible": true,
            "set_level": {"compatibility": "FULL"},
            "level": "FULL",
            "versions": [1, 2],
            "by_id": true,
            "subjects_by_id": [subject],
            "delete_version": 2,
            "versions_after": [1],
            "deleted_version": 2,
            "delete_subject": [1],
            "delete_again": 40404,
            "listed": false,
            "listed_deleted": true,
            "permanent": [1, 2],
            "gone": 40401,
            "schema_kept": true,
        })
    );
}
