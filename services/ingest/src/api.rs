//! The ingest HTTP API: `POST /v1/readings`.
//!
//! A request carries a batch as JSON (object or array), NDJSON or CSV with a
//! header row, authenticated by a per-source API key (`Authorization: Bearer
//! <key>` or `X-Api-Key`). Good rows are accepted even when others are bad;
//! the answer is 200 when all rows were accepted, 207 with a line-level
//! error list when some were, 400 when none were. A 2xx is sent only after
//! the broker acknowledged every accepted row; otherwise the answer is 503
//! and the client retries (event ids are deterministic, so a retried batch
//! does not create duplicates downstream).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use gale_runtime::config::Secret;
use gale_runtime::metrics::TopicMetrics;
use gale_runtime::schema::IngestChannel;
use gale_runtime::telemetry::MessagingTracer;
use serde_json::json;

use crate::mapping::{now_ms, SourceMapping};
use crate::parse::{self, Format, Position};
use crate::writer::RawWriter;

/// Shared state of the API handlers.
pub struct ApiState {
    /// Where accepted readings go.
    pub writer: Arc<RawWriter>,
    /// Sources with their keys.
    pub sources: Vec<(Vec<Secret>, Arc<SourceMapping>)>,
    /// For reading the caller's `traceparent`.
    pub tracer: MessagingTracer,
    /// Counts rows received per source channel.
    pub received: TopicMetrics,
    /// Most row errors listed in one answer.
    pub max_listed_errors: usize,
}

/// The API routes, with a body size limit (413 above it).
pub fn routes(state: Arc<ApiState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/readings", post(post_readings))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Constant-time comparison, so response timing does not leak key prefixes.
fn same_key(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(token.trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

async fn post_readings(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(key) = presented_key(&headers) else {
        return unauthorized();
    };
    let Some(mapping) = state
        .sources
        .iter()
        .find(|(keys, _)| keys.iter().any(|k| same_key(k.expose(), key)))
        .map(|(_, m)| m.clone())
    else {
        return unauthorized();
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(format) = Format::from_content_type(content_type, &body) else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content type {:?}; send application/json, application/x-ndjson or text/csv",
                content_type.unwrap_or("")
            ),
        );
    };
    let rows = match parse::rows(format, &body) {
        Ok(rows) => rows,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if rows.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the batch holds no rows");
    }
    state.received.consumed(rows.len() as u64);
    let received_time = now_ms();
    let mut readings = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    for row in rows {
        match row
            .fields
            .and_then(|f| mapping.to_reading(&f, IngestChannel::Http, received_time))
        {
            Ok(r) => readings.push(r),
            Err(e) => errors.push((row.position, e)),
        }
    }
    let rejected = errors.len();
    let listed: Vec<serde_json::Value> = errors
        .into_iter()
        .take(state.max_listed_errors)
        .map(|(pos, e)| match pos {
            Position::Line(n) => json!({"line": n, "error": e}),
            Position::Index(i) => json!({"index": i, "error": e}),
        })
        .collect();
    let truncated = rejected > listed.len();
    if readings.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"accepted": 0, "rejected": rejected, "errors": listed, "errors_truncated": truncated})),
        )
            .into_response();
    }
    let parent = state.tracer.extract_map(|k| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    if let Err(e) = state.writer.send(&readings, Some(&parent)).await {
        tracing::warn!(source = mapping.name(), acknowledged = e.acknowledged, total = e.total, error = %e.error, "batch not acknowledged; answering 503");
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": format!("the broker did not acknowledge the batch: {}", e.error),
                "acknowledged": e.acknowledged,
                "total": e.total,
                "hint": "retry the whole request; readings carry deterministic event ids, so rows stored twice are deduplicated downstream",
            })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return response;
    }
    let accepted = readings.len();
    tracing::debug!(
        source = mapping.name(),
        accepted,
        rejected,
        "batch accepted"
    );
    if rejected == 0 {
        (
            StatusCode::OK,
            Json(json!({"accepted": accepted, "rejected": 0})),
        )
            .into_response()
    } else {
        (
            StatusCode::MULTI_STATUS,
            Json(json!({"accepted": accepted, "rejected": rejected, "errors": listed, "errors_truncated": truncated})),
        )
            .into_response()
    }
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "missing or invalid API key; send `Authorization: Bearer <key>` or `X-Api-Key: <key>`",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}
