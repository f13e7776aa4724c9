//! The Confluent Schema Registry REST API, the part that client libraries use.
//!
//! Requests and responses follow Confluent's shapes and error codes
//! (`{"error_code": 40401, "message": ...}`), so `schema_registry_converter`,
//! Confluent's Java/Python/Go clients and `curl` scripts written for Confluent
//! work against it unchanged. Every answer is JSON, failures of routing and
//! extraction included (unknown path, wrong method, malformed path parameter
//! or body), where axum alone would answer in plain text. Query flags are
//! read as Confluent reads them: `true` in any case is true, anything else
//! false, so `?deleted=False` from the Python client never fails a request;
//! listings honour `offset` and `limit`.
//!
//! The store sits behind a `tokio` mutex. Reads hold it briefly. A change
//! holds it while the new state is written and fsynced; that runs on the
//! blocking pool, so no runtime worker waits on the disk and other requests
//! wait asynchronously.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::store::{Deleted, Level, Store, SubjectVersion, VersionId};
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
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
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
        .route("/mode/{subject}", get(subject_mode))
        .method_not_allowed_fallback(|| async { RegistryError::http(405, "") })
        .fallback(|| async { RegistryError::http(404, "") })
        .with_state(shared)
}

fn reply(status: StatusCode, body: Value) -> Response {
    raw_reply(status, body.to_string())
}

fn raw_reply(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

impl RegistryError {
    /// HTTP status and Confluent error code.
    fn status_and_code(&self) -> (StatusCode, u32) {
        match self {
            RegistryError::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            RegistryError::VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            RegistryError::SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            RegistryError::SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            RegistryError::SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            RegistryError::VersionSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40406),
            RegistryError::VersionNotSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40407),
            RegistryError::SubjectConfigNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            RegistryError::SubjectModeNotFound(_) => (StatusCode::NOT_FOUND, 40409),
            RegistryError::Incompatible(_) => (StatusCode::CONFLICT, 409),
            RegistryError::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            RegistryError::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            RegistryError::InvalidCompatibility(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            RegistryError::InvalidMode(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42204),
            RegistryError::BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
            RegistryError::Http { status, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                u32::from(*status),
            ),
            RegistryError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "registry request failed");
        }
        reply(
            status,
            json!({"error_code": code, "message": self.to_string()}),
        )
    }
}

/// Runs `change` on the store, on the blocking pool because it writes and
/// fsyncs the data file. The lock is held until the change is on disk (or
/// has failed and left the store as it was), even if the client goes away.
async fn write<T, F>(store: &Shared, change: F) -> Result<T, RegistryError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, RegistryError> + Send + 'static,
{
    let mut guard = Arc::clone(store).lock_owned().await;
    tokio::task::spawn_blocking(move || change(&mut guard))
        .await
        .map_err(|e| RegistryError::Storage(format!("the change did not complete: {e}")))?
}

/// Path parameters; one that does not decode is a JSON error, not plain text.
struct Params<T>(T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Params(value))
            .map_err(|e| RegistryError::http(e.status().as_u16(), &e.body_text()))
    }
}

/// Query parameters, with booleans read the way Confluent reads them.
struct Flags(HashMap<String, String>);

impl Flags {
    /// True only when the parameter says `true` (any case).
    fn is(&self, key: &str) -> bool {
        self.0
            .get(key)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `offset` and `limit` (negative: no limit) applied to a listing.
    fn page<T>(&self, items: Vec<T>) -> Vec<T> {
        let number = |key: &str| self.get(key).and_then(|v| v.trim().parse::<i64>().ok());
        let offset = usize::try_from(number("offset").unwrap_or(0)).unwrap_or(0);
        let limit = usize::try_from(number("limit").unwrap_or(-1)).unwrap_or(usize::MAX);
        items.into_iter().skip(offset).take(limit).collect()
    }

    /// `deletedOnly` wins over `deleted`, as in Confluent.
    fn deleted(&self) -> Deleted {
        if self.is("deletedOnly") {
            Deleted::Only
        } else if self.is("deleted") {
            Deleted::Include
        } else {
            Deleted::Exclude
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Flags {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|Query(map)| Flags(map))
            .map_err(|e| RegistryError::http(e.status().as_u16(), &e.body_text()))
    }
}

/// The body of register, lookup and compatibility requests:
/// `{"schema": "...", "schemaType": "AVRO", "references": []}`.
struct SchemaBody {
    schema: String,
}

#[derive(Deserialize)]
struct SchemaRequest {
    schema: Option<String>,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    references: Option<Vec<Value>>,
}

impl<S: Send + Sync> FromRequest<S> for SchemaBody {
    type Rejection = RegistryError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = body_bytes(req, state).await?;
        let req: SchemaRequest = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::BadRequest(format!("request body is not a schema request: {e}"))
        })?;
        if let Some(t) = &req.schema_type {
            if !t.eq_ignore_ascii_case("AVRO") {
                return Err(RegistryError::InvalidSchema(format!(
                    "schemaType {t} is not supported by this registry; only AVRO"
                )));
            }
        }
        if req.references.is_some_and(|r| !r.is_empty()) {
            return Err(RegistryError::InvalidSchema(
                "schema references are not supported by this registry".into(),
            ));
        }
        match req.schema {
            Some(schema) if !schema.trim().is_empty() => Ok(SchemaBody { schema }),
            _ => Err(RegistryError::InvalidSchema("Empty schema".into())),
        }
    }
}

/// The body of `PUT /config`: `{"compatibility": "BACKWARD"}` (the Python
/// client's `ServerConfig` may send `compatibilityLevel` instead).
struct ConfigBody(Level);

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

impl<S: Send + Sync> FromRequest<S> for ConfigBody {
    type Rejection = RegistryError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = body_bytes(req, state).await?;
        let req: ConfigRequest = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::BadRequest(format!("expected {{\"compatibility\": \"BACKWARD\"}}: {e}"))
        })?;
        let level = req
            .compatibility
            .or(req.compatibility_level)
            .ok_or_else(|| {
                RegistryError::InvalidCompatibility(
                    "the request names no compatibility level (\"compatibility\")".into(),
                )
            })?;
        Ok(ConfigBody(level.parse()?))
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, RegistryError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|e| RegistryError::http(e.status().as_u16(), &e.body_text()))
}

/// A schema id as Confluent reads it: a 32-bit integer; anything else names
/// no resource at all (404, as from JAX-RS), rather than an unknown schema.
fn parse_id(raw: &str) -> Result<i64, RegistryError> {
    raw.trim()
        .parse::<i32>()
        .map(i64::from)
        .map_err(|_| RegistryError::http(404, &format!("schema id '{raw}' is not an integer")))
}

fn version_json(v: SubjectVersion) -> Value {
    json!({"subject": v.subject, "id": v.id, "version": v.version, "schema": v.schema})
}

async fn schema_by_id(
    State(store): State<Shared>,
    Params(id): Params<String>,
) -> Result<Response, RegistryError> {
    let id = parse_id(&id)?;
    let store = store.lock().await;
    let s = store.schema(id)?;
    Ok(reply(StatusCode::OK, json!({"schema": s.schema})))
}

async fn raw_schema_by_id(
    State(store): State<Shared>,
    Params(id): Params<String>,
) -> Result<Response, RegistryError> {
    let id = parse_id(&id)?;
    let store = store.lock().await;
    Ok(raw_reply(StatusCode::OK, store.schema(id)?.schema.clone()))
}

async fn subjects_by_id(
    State(store): State<Shared>,
    Params(id): Params<String>,
    flags: Flags,
) -> Result<Response, RegistryError> {
    let id = parse_id(&id)?;
    let store = store.lock().await;
    let mut subjects: Vec<String> = store
        .usages(id, flags.is("deleted"), flags.get("subject"))?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    Ok(reply(StatusCode::OK, json!(flags.page(subjects))))
}

async fn versions_by_id(
    State(store): State<Shared>,
    Params(id): Params<String>,
    flags: Flags,
) -> Result<Response, RegistryError> {
    let id = parse_id(&id)?;
    let store = store.lock().await;
    let usages: Vec<Value> = store
        .usages(id, flags.is("deleted"), flags.get("subject"))?
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    Ok(reply(StatusCode::OK, json!(flags.page(usages))))
}

async fn list_subjects(State(store): State<Shared>, flags: Flags) -> Response {
    let subjects = store
        .lock()
        .await
        .subjects(flags.deleted(), flags.get("subjectPrefix"));
    reply(StatusCode::OK, json!(flags.page(subjects)))
}

async fn list_versions(
    State(store): State<Shared>,
    Params(subject): Params<String>,
    flags: Flags,
) -> Result<Response, RegistryError> {
    let versions = store.lock().await.versions(&subject, flags.deleted())?;
    Ok(reply(StatusCode::OK, json!(flags.page(versions))))
}

async fn register(
    State(store): State<Shared>,
    Params(subject): Params<String>,
    body: SchemaBody,
) -> Result<Response, RegistryError> {
    let name = subject.clone();
    let id = write(&store, move |s| s.register(&name, &body.schema)).await?;
    tracing::info!(subject = %subject, id, "schema registered");
    Ok(reply(StatusCode::OK, json!({"id": id})))
}

async fn lookup(
    State(store): State<Shared>,
    Params(subject): Params<String>,
    flags: Flags,
    body: SchemaBody,
) -> Result<Response, RegistryError> {
    let found = store
        .lock()
        .await
        .lookup(&subject, &body.schema, flags.is("deleted"))?;
    Ok(reply(StatusCode::OK, version_json(found)))
}

async fn delete_subject(
    State(store): State<Shared>,
    Params(subject): Params<String>,
    flags: Flags,
) -> Result<Response, RegistryError> {
    let permanent = flags.is("permanent");
    let name = subject.clone();
    let versions = write(&store, move |s| s.delete_subject(&name, permanent)).await?;
    tracing::info!(subject = %subject, permanent, ?versions, "subject deleted");
    Ok(reply(StatusCode::OK, json!(versions)))
}

async fn get_version(
    State(store): State<Shared>,
    Params((subject, version)): Params<(String, String)>,
    flags: Flags,
) -> Result<Response, RegistryError> {
    let version: VersionId = version.parse()?;
    let v = store
        .lock()
        .await
        .version(&subject, version, flags.is("deleted"))?;
    Ok(reply(StatusCode::OK, version_json(v)))
}

async fn get_version_schema(
    State(store): State<Shared>,
    Params((subject, version)): Params<(String, String)>,
    flags: Flags,
) -> Result<Response, RegistryError> {
    let version: VersionId = version.parse()?;
    let v = store
        .lock()
        .await
        .version(&subject, version, flags.is("deleted"))?;
    Ok(raw_reply(StatusCode::OK, v.schema))
}

/// Schema references are not supported, so nothing refers to any version.
async fn referenced_by(
    State(store): State<Shared>,
    Params((subject, version)): Params<(String, String)>,
) -> Result<Response, RegistryError> {
    let version: VersionId = version.parse()?;
    store.lock().await.version(&subject, version, true)?;
    Ok(reply(StatusCode::OK, json!([])))
}

async fn delete_version(
    State(store): State<Shared>,
    Params((subject, version)): Params<(String, String)>,
    flags: Flags,
) -> Result<Response, RegistryError> {
    let version: VersionId = version.parse()?;
    let permanent = flags.is("permanent");
    let name = subject.clone();
    let deleted = write(&store, move |s| s.delete_version(&name, version, permanent)).await?;
    tracing::info!(subject = %subject, version = deleted, permanent, "version deleted");
    Ok(reply(StatusCode::OK, json!(deleted)))
}

async fn get_global_config(State(store): State<Shared>) -> Response {
    let level = store.lock().await.global_level();
    reply(StatusCode::OK, json!({"compatibilityLevel": level}))
}

async fn put_global_config(
    State(store): State<Shared>,
    ConfigBody(level): ConfigBody,
) -> Result<Response, RegistryError> {
    write(&store, move |s| s.set_global_level(level)).await?;
    Ok(reply(StatusCode::OK, json!({"compatibility": level})))
}

async fn delete_global_config(State(store): State<Shared>) -> Result<Response, RegistryError> {
    let previous = write(&store, Store::reset_global_level).await?;
    Ok(reply(
        StatusCode::OK,
        json!({"compatibilityLevel": previous}),
    ))
}

async fn get_subject_config(
    State(store): State<Shared>,
    Params(subject): Params<String>,
    flags: Flags,
) -> Result<Response, RegistryError> {
    let store = store.lock().await;
    let level = match store.subject_level(&subject) {
        Some(l) => l,
        None if flags.is("defaultToGlobal") => store.global_level(),
        None => return Err(RegistryError::SubjectConfigNotFound(subject)),
    };
    Ok(reply(StatusCode::OK, json!({"compatibilityLevel": level})))
}

async fn put_subject_config(
    State(store): State<Shared>,
    Params(subject): Params<String>,
    ConfigBody(level): ConfigBody,
) -> Result<Response, RegistryError> {
    write(&store, move |s| s.set_subject_level(&subject, level)).await?;
    Ok(reply(StatusCode::OK, json!({"compatibility": level})))
}

async fn delete_subject_config(
    State(store): State<Shared>,
    Params(subject): Params<String>,
) -> Result<Response, RegistryError> {
    let previous = write(&store, move |s| s.clear_subject_level(&subject)).await?;
    Ok(reply(
        StatusCode::OK,
        json!({"compatibilityLevel": previous}),
    ))
}

/// Modes are not configurable here: everything is `READWRITE`.
async fn subject_mode(
    Params(subject): Params<String>,
    flags: Flags,
) -> Result<Response, RegistryError> {
    if flags.is("defaultToGlobal") {
        Ok(reply(StatusCode::OK, json!({"mode": "READWRITE"})))
    } else {
        Err(RegistryError::SubjectModeNotFound(subject))
    }
}

async fn check_compatibility(
    State(store): State<Shared>,
    Params((subject, version)): Params<(String, String)>,
    flags: Flags,
    body: SchemaBody,
) -> Result<Response, RegistryError> {
    let version: VersionId = version.parse()?;
    let result = store
        .lock()
        .await
        .check(&subject, &body.schema, Some(version));
    compat_reply(result, flags.is("verbose"))
}

async fn check_compatibility_all(
    State(store): State<Shared>,
    Params(subject): Params<String>,
    flags: Flags,
    body: SchemaBody,
) -> Result<Response, RegistryError> {
    let result = store.lock().await.check(&subject, &body.schema, None);
    compat_reply(result, flags.is("verbose"))
}

/// `{"is_compatible": ...}`, with the reasons when `verbose`; like Confluent,
/// a verbose check reports an invalid schema as incompatible with its reason.
fn compat_reply(
    result: Result<Vec<String>, RegistryError>,
    verbose: bool,
) -> Result<Response, RegistryError> {
    let problems = match result {
        Err(RegistryError::InvalidSchema(why)) if verbose => vec![why],
        other => other?,
    };
    let mut body = json!({"is_compatible": problems.is_empty()});
    if verbose {
        body["messages"] = json!(problems);
    }
    Ok(reply(StatusCode::OK, body))
}
