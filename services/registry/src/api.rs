//! The Confluent Schema Registry REST API, the part that client libraries use.
//!
//! Requests and responses follow Confluent's shapes and error codes
//! (`{"error_code": 40401, "message": ...}`), so `schema_registry_converter`,
//! Confluent's Java/Python/Go clients and `curl` scripts written for Confluent
//! work against it unchanged.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::store::{Level, Store, SubjectVersion};
use crate::RegistryError;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Shared = Arc<Mutex<Store>>;

/// The API routes over `store`.
pub fn routes(store: Store) -> Router {
    let shared: Shared = Arc::new(Mutex::new(store));
    Router::new()
        .route("/", get(|| async { reply(StatusCode::OK, json!({})) }))
        .route(
            "/schemas/types",
            get(|| async { reply(StatusCode::OK, json!(["AVRO"])) }),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_compatibility),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_compatibility_all),
        )
        .route(
            "/mode",
            get(|| async { reply(StatusCode::OK, json!({"mode": "READWRITE"})) }),
        )
        .with_state(shared)
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            RegistryError::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            RegistryError::VersionNotFound(_) => (StatusCode::NOT_FOUND, 40402),
            RegistryError::SchemaNotFound => (StatusCode::NOT_FOUND, 40403),
            RegistryError::SubjectConfigNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            RegistryError::Incompatible(_) => (StatusCode::CONFLICT, 409),
            RegistryError::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            RegistryError::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            RegistryError::InvalidCompatibility(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            RegistryError::BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
            RegistryError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "registry storage failure");
        }
        reply(
            status,
            json!({"error_code": code, "message": self.to_string()}),
        )
    }
}

fn lock(store: &Shared) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

fn parse_request(body: &Bytes) -> Result<SchemaRequest, RegistryError> {
    let req: SchemaRequest = serde_json::from_slice(body).map_err(|e| {
        RegistryError::BadRequest(format!("request body is not a schema request: {e}"))
    })?;
    if let Some(t) = &req.schema_type {
        if !t.eq_ignore_ascii_case("AVRO") {
            return Err(RegistryError::InvalidSchema(format!(
                "schemaType {t} is not supported by this registry; only AVRO"
            )));
        }
    }
    if !req.references.is_empty() {
        return Err(RegistryError::InvalidSchema(
            "schema references are not supported by this registry".into(),
        ));
    }
    Ok(req)
}

fn parse_version(v: &str) -> Result<Option<u32>, RegistryError> {
    match v {
        "latest" | "-1" => Ok(None),
        n => n
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| {
                RegistryError::InvalidVersion(format!(
                    "The specified version '{v}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
                ))
            }),
    }
}

fn version_json(v: SubjectVersion) -> Value {
    json!({"subject": v.subject, "id": v.id, "version": v.version, "schema": v.schema})
}

async fn schema_by_id(
    State(store): State<Shared>,
    Path(id): Path<u32>,
) -> Result<Response, RegistryError> {
    let store = lock(&store);
    let s = store.schema(id).ok_or(RegistryError::SchemaNotFound)?;
    Ok(reply(StatusCode::OK, json!({"schema": s.schema})))
}

async fn raw_schema_by_id(
    State(store): State<Shared>,
    Path(id): Path<u32>,
) -> Result<Response, RegistryError> {
    let store = lock(&store);
    let s = store.schema(id).ok_or(RegistryError::SchemaNotFound)?;
    Ok(reply(
        StatusCode::OK,
        serde_json::from_str(&s.schema).unwrap_or(Value::Null),
    ))
}

async fn subjects_by_id(
    State(store): State<Shared>,
    Path(id): Path<u32>,
) -> Result<Response, RegistryError> {
    let store = lock(&store);
    store.schema(id).ok_or(RegistryError::SchemaNotFound)?;
    let mut subjects: Vec<String> = store.usages(id).into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    Ok(reply(StatusCode::OK, json!(subjects)))
}

async fn versions_by_id(
    State(store): State<Shared>,
    Path(id): Path<u32>,
) -> Result<Response, RegistryError> {
    let store = lock(&store);
    store.schema(id).ok_or(RegistryError::SchemaNotFound)?;
    let usages: Vec<Value> = store
        .usages(id)
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    Ok(reply(StatusCode::OK, json!(usages)))
}

async fn list_subjects(State(store): State<Shared>) -> Response {
    reply(StatusCode::OK, json!(lock(&store).subjects()))
}

async fn list_versions(
    State(store): State<Shared>,
    Path(subject): Path<String>,
) -> Result<Response, RegistryError> {
    let store = lock(&store);
    if !store.has_subject(&subject) {
        return Err(RegistryError::SubjectNotFound(subject));
    }
    Ok(reply(StatusCode::OK, json!(store.versions(&subject))))
}

async fn register(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let req = parse_request(&body)?;
    let id = lock(&store).register(&subject, &req.schema)?;
    tracing::info!(subject = %subject, id, "schema registered");
    Ok(reply(StatusCode::OK, json!({"id": id})))
}

async fn lookup(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let req = parse_request(&body)?;
    let store = lock(&store);
    if !store.has_subject(&subject) {
        return Err(RegistryError::SubjectNotFound(subject));
    }
    let found = store
        .lookup(&subject, &req.schema)?
        .ok_or(RegistryError::SchemaNotFound)?;
    Ok(reply(StatusCode::OK, version_json(found)))
}

#[derive(Deserialize)]
struct DeleteParams {
    #[serde(default)]
    permanent: bool,
}

async fn delete_subject(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Query(params): Query<DeleteParams>,
) -> Result<Response, RegistryError> {
    let versions = lock(&store).delete_subject(&subject, params.permanent)?;
    Ok(reply(StatusCode::OK, json!(versions)))
}

async fn get_version(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let version = parse_version(&version)?;
    let store = lock(&store);
    if !store.has_subject(&subject) {
        return Err(RegistryError::SubjectNotFound(subject));
    }
    let v = store
        .version(&subject, version)
        .ok_or(RegistryError::VersionNotFound(subject))?;
    Ok(reply(StatusCode::OK, version_json(v)))
}

async fn get_version_schema(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let version = parse_version(&version)?;
    let store = lock(&store);
    if !store.has_subject(&subject) {
        return Err(RegistryError::SubjectNotFound(subject));
    }
    let v = store
        .version(&subject, version)
        .ok_or(RegistryError::VersionNotFound(subject))?;
    Ok(reply(
        StatusCode::OK,
        serde_json::from_str(&v.schema).unwrap_or(Value::Null),
    ))
}

async fn delete_version(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let version = parse_version(&version)?;
    let deleted = lock(&store).delete_version(&subject, version)?;
    Ok(reply(StatusCode::OK, json!(deleted)))
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn parse_config(body: &Bytes) -> Result<Level, RegistryError> {
    let req: ConfigRequest = serde_json::from_slice(body).map_err(|e| {
        RegistryError::BadRequest(format!("expected {{\"compatibility\": \"BACKWARD\"}}: {e}"))
    })?;
    req.compatibility.parse()
}

async fn get_global_config(State(store): State<Shared>) -> Response {
    reply(
        StatusCode::OK,
        json!({"compatibilityLevel": lock(&store).global_level()}),
    )
}

async fn put_global_config(
    State(store): State<Shared>,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let level = parse_config(&body)?;
    lock(&store).set_global_level(level)?;
    Ok(reply(StatusCode::OK, json!({"compatibility": level})))
}

#[derive(Deserialize)]
struct ConfigParams {
    #[serde(rename = "defaultToGlobal", default)]
    default_to_global: bool,
}

async fn get_subject_config(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Query(params): Query<ConfigParams>,
) -> Result<Response, RegistryError> {
    let store = lock(&store);
    let level = match store.subject_level(&subject) {
        Some(l) => l,
        None if params.default_to_global => store.global_level(),
        None => return Err(RegistryError::SubjectConfigNotFound(subject)),
    };
    Ok(reply(StatusCode::OK, json!({"compatibilityLevel": level})))
}

async fn put_subject_config(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let level = parse_config(&body)?;
    lock(&store).set_subject_level(&subject, Some(level))?;
    Ok(reply(StatusCode::OK, json!({"compatibility": level})))
}

async fn delete_subject_config(
    State(store): State<Shared>,
    Path(subject): Path<String>,
) -> Result<Response, RegistryError> {
    let mut store = lock(&store);
    let previous = store
        .subject_level(&subject)
        .ok_or_else(|| RegistryError::SubjectConfigNotFound(subject.clone()))?;
    store.set_subject_level(&subject, None)?;
    Ok(reply(
        StatusCode::OK,
        json!({"compatibilityLevel": previous}),
    ))
}

#[derive(Deserialize)]
struct VerboseParams {
    #[serde(default)]
    verbose: bool,
}

async fn check_compatibility(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Query<VerboseParams>,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let req = parse_request(&body)?;
    let version = parse_version(&version)?;
    let store = lock(&store);
    if !store.has_subject(&subject) {
        return Err(RegistryError::SubjectNotFound(subject));
    }
    let target = store
        .version(&subject, version)
        .ok_or_else(|| RegistryError::VersionNotFound(subject.clone()))?;
    let problems = store.check(&subject, &req.schema, Some(target.version))?;
    Ok(compat_reply(problems, params.verbose))
}

async fn check_compatibility_all(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Query(params): Query<VerboseParams>,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let req = parse_request(&body)?;
    let problems = lock(&store).check(&subject, &req.schema, None)?;
    Ok(compat_reply(problems, params.verbose))
}

fn compat_reply(problems: Vec<String>, verbose: bool) -> Response {
    let mut body = json!({"is_compatible": problems.is_empty()});
    if verbose {
        body["messages"] = json!(problems);
    }
    reply(StatusCode::OK, body)
}
