//! The ingest HTTP API: `POST /v1/readings`.
//!
//! A request carries a batch as JSON (object or array), NDJSON or CSV with a
//! header row (gzip-compressed or not), authenticated by a per-source API key
//! (`Authorization: Bearer <key>` or `X-Api-Key`), checked before the body is
//! read.
//!
//! Hostile or careless clients cannot take the service's memory: a request
//! is refused with 503 and `Retry-After` when too many are in hand or their
//! bodies would exceed the in-flight byte budget, with 413 above the body
//! size or row limits (rows are read only up to the limit), and with 408
//! when its body does not arrive within `body_timeout`. Rows are mapped and
//! sent in chunks, so a request's readings are never all in memory at once. Good rows are
//! accepted even when others are bad; rows whose metric values are all
//! missing are skipped (counted, not errors). The answer is 200 when no row
//! was bad, 207 with a line-level error list when some were, 400 when no row
//! was usable. A row the broker will never take (too large) is a line error
//! like an unparseable one. A 2xx is sent only after the broker acknowledged
//! every accepted row; otherwise the answer is 503 and the client retries
//! (event ids are deterministic, so a retried batch does not create
//! duplicates downstream).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::BytesMut;
use futures::StreamExt;
use gale_model::IngestChannel;
use gale_runtime::config::Secret;
use gale_runtime::metrics::TopicMetrics;
use gale_runtime::telemetry::MessagingTracer;
use serde_json::json;

use crate::mapping::{now_ms, ReadContext, RowOutcome, SourceMapping};
use crate::parse;
use crate::parse::{Format, Position};
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

/// What one request may cost.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Largest body, after decompression (413 above it).
    pub max_body_bytes: usize,
    /// Most rows per request (413 above it).
    pub max_rows: usize,
    /// Requests in hand at once (503 beyond).
    pub max_concurrent_requests: usize,
    /// Body bytes in memory at once, counted by declared or limit size (503 beyond).
    pub max_inflight_bytes: usize,
    /// Time for the whole body to arrive (408 after it).
    pub body_timeout: Duration,
}

/// The API routes, with `limits`.
pub fn routes(state: Arc<ApiState>, limits: ApiLimits) -> Router {
    Router::new()
        .route("/v1/readings", post(post_readings))
        // The handler reads the body itself, after the key check, with its own limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(ApiRoutes {
            state,
            requests: Arc::new(tokio::sync::Semaphore::new(
                limits.max_concurrent_requests.max(1),
            )),
            kib: Arc::new(tokio::sync::Semaphore::new(
                (limits.max_inflight_bytes / 1024).clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            max_body_bytes: limits.max_body_bytes,
            limits,
        })
}

#[derive(Clone)]
struct ApiRoutes {
    state: Arc<ApiState>,
    limits: ApiLimits,
    max_body_bytes: usize,
    /// One permit per request in hand.
    requests: Arc<tokio::sync::Semaphore>,
    /// One permit per KiB of body in memory.
    kib: Arc<tokio::sync::Semaphore>,
}

/// Rows mapped and sent at a time.
const CHUNK_ROWS: usize = 5000;

/// 503 with `Retry-After`: come back shortly.
fn busy(message: &str) -> Response {
    metrics::counter!("gale_ingest_requests_refused_total", "reason" => "busy").increment(1);
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
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

/// Why a body could not be read.
enum BodyError {
    /// Larger than the limit; the part not read yet.
    TooLarge(Body),
    Broken(String),
}

/// Reads at most `max` bytes of `body`; stops reading as soon as it is larger.
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge(body));
    }
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        if buf.len() + chunk.len() > max {
            return Err(BodyError::TooLarge(Body::from_stream(stream)));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// How long a refused upload is read on and thrown away.
const LINGER: Duration = Duration::from_secs(10);

/// Reads the rest of a refused request's body in the background and throws
/// it away (for at most [`LINGER`] and twice the body limit), the way web
/// servers linger before closing: a client still uploading then reads the
/// 401 or 413 instead of a reset connection. Nothing is kept.
fn linger(body: Body, max_body_bytes: usize) {
    let budget = max_body_bytes.saturating_mul(2);
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut seen = 0usize;
        let _ = tokio::time::timeout(LINGER, async {
            while let Some(Ok(chunk)) = stream.next().await {
                seen += chunk.len();
                if seen > budget {
                    break;
                }
            }
        })
        .await;
    });
}

async fn post_readings(
    State(routes): State<ApiRoutes>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let state = &routes.state;
    // The key first: an unauthenticated caller learns nothing, not even the body limit.
    let Some(mapping) = presented_key(&headers).and_then(|key| {
        state
            .sources
            .iter()
            .find(|(keys, _)| keys.iter().any(|k| same_key(k.expose(), key)))
            .map(|(_, m)| m.clone())
    }) else {
        linger(body, routes.max_body_bytes);
        return unauthorized();
    };
    let encoding = match content_encoding(&headers) {
        Ok(e) => e,
        Err(e) => {
            linger(body, routes.max_body_bytes);
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, e);
        }
    };
    let Ok(_request) = routes.requests.clone().try_acquire_owned() else {
        linger(body, routes.max_body_bytes);
        return busy("too many requests in hand; retry shortly");
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let wire_limit = match encoding {
        Encoding::Identity => routes.max_body_bytes,
        // Compressed data is smaller; its expansion is checked as it is read.
        Encoding::Gzip => routes.max_body_bytes,
    };
    let reserve = declared.unwrap_or(wire_limit).min(wire_limit).max(1);
    let Ok(_bytes) = routes
        .kib
        .clone()
        .try_acquire_many_owned(reserve.div_ceil(1024) as u32)
    else {
        linger(body, routes.max_body_bytes);
        return busy("too many bytes in hand; retry shortly");
    };
    let read = tokio::time::timeout(
        routes.limits.body_timeout,
        read_body(&headers, body, wire_limit),
    )
    .await;
    let body = match read {
        Err(_) => {
            metrics::counter!("gale_ingest_requests_refused_total", "reason" => "slow")
                .increment(1);
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} (ingest.body_timeout)",
                    humantime::format_duration(routes.limits.body_timeout)
                ),
            );
        }
        Ok(Ok(b)) => b,
        Ok(Err(BodyError::TooLarge(rest))) => {
            linger(rest, routes.max_body_bytes);
            return too_large(routes.max_body_bytes);
        }
        Ok(Err(BodyError::Broken(e))) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        }
    };
    let body = match encoding {
        Encoding::Identity => body,
        Encoding::Gzip => {
            let max = routes.max_body_bytes;
            match tokio::task::spawn_blocking(move || gunzip(&body, max)).await {
                Ok(Ok(b)) => b,
                Ok(Err(GunzipError::TooLarge)) => return too_large(routes.max_body_bytes),
                Ok(Err(GunzipError::Broken(e))) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("the body is not valid gzip: {e}"),
                    )
                }
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
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
    let max_rows = routes.limits.max_rows;
    let rows =
        match tokio::task::spawn_blocking(move || parse::rows_limited(format, &body, max_rows))
            .await
        {
            Ok(Ok(rows)) => rows,
            Ok(Err(e @ parse::InputError::TooManyRows(_))) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("{e} (ingest.max_rows)"),
                )
            }
            Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
    if rows.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the batch holds no rows");
    }
    state.received.consumed(rows.len() as u64);
    let received_time = now_ms();
    let parent = state.tracer.extract_map(|k| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let mut errors = Vec::new();
    let mut skipped = 0usize;
    let mut accepted = 0usize;
    let mut total = 0usize;
    let mut context = ReadContext::default();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut readings = Vec::with_capacity(CHUNK_ROWS);
        let mut positions = Vec::with_capacity(CHUNK_ROWS);
        for row in rows.by_ref().take(CHUNK_ROWS) {
            match row.fields.and_then(|f| {
                mapping.read_row_in(&f, IngestChannel::Http, received_time, &mut context)
            }) {
                Ok(RowOutcome::Reading(r)) => {
                    readings.push(r);
                    positions.push(row.position);
                }
                Ok(RowOutcome::Skipped) => skipped += 1,
                Err(e) => errors.push((row.position, e)),
            }
        }
        if readings.is_empty() {
            continue;
        }
        total += readings.len();
        let deliveries = state.writer.send_each(&readings, Some(&parent)).await;
        accepted += deliveries.iter().filter(|d| d.is_ok()).count();
        if let Some(failure) = deliveries
            .iter()
            .find_map(|d| d.as_ref().err().filter(|e| !e.is_refused()))
        {
            tracing::warn!(source = mapping.name(), acknowledged = accepted, total, error = %failure, "batch not acknowledged; answering 503");
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "error": format!("the broker did not acknowledge the batch: {failure}"),
                    "acknowledged": accepted,
                    "total": total,
                    "hint": "retry the whole request; readings carry deterministic event ids, so rows stored twice are deduplicated downstream",
                })),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            return response;
        }
        for (delivery, position) in deliveries.into_iter().zip(positions) {
            if let Err(e) = delivery {
                errors.push((position, e.to_string()));
            }
        }
    }
    errors.sort_by_key(|(position, _)| *position);
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
    tracing::debug!(
        source = mapping.name(),
        accepted,
        rejected,
        skipped,
        "batch done"
    );
    let status = answer_status(accepted, rejected, skipped);
    let body = if rejected == 0 {
        json!({"accepted": accepted, "rejected": 0, "skipped": skipped})
    } else {
        json!({"accepted": accepted, "rejected": rejected, "skipped": skipped, "errors": listed, "errors_truncated": truncated})
    };
    (status, Json(body)).into_response()
}

/// 200 when no row was bad, 207 when some were but others were stored or
/// skipped, 400 when no row was usable.
fn answer_status(accepted: usize, rejected: usize, skipped: usize) -> StatusCode {
    if rejected == 0 {
        StatusCode::OK
    } else if accepted + skipped > 0 {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::BAD_REQUEST
    }
}

fn too_large(max: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {max} bytes (ingest.max_body_bytes); split the batch"),
    )
}

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

/// The body's `Content-Encoding`: none or gzip (which gateways send);
/// anything else is refused rather than read as text.
fn content_encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let value = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match value.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        other => Err(format!(
            "content encoding {other:?} is not supported; send the body uncompressed or gzip-compressed"
        )),
    }
}

enum GunzipError {
    TooLarge,
    Broken(String),
}

/// Decompresses `body`, refusing more than `max` bytes of output (a
/// small gzip bomb must not become gigabytes).
fn gunzip(body: &[u8], max: usize) -> Result<Bytes, GunzipError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max));
    let mut reader = flate2::read::MultiGzDecoder::new(body).take(max as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| GunzipError::Broken(e.to_string()))?;
    if out.len() > max {
        return Err(GunzipError::TooLarge);
    }
    Ok(Bytes::from(out))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_length(n: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(n) = n {
            h.insert(header::CONTENT_LENGTH, n.into());
        }
        h
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_the_limit() {
        let ok = read_body(&with_length(Some(3)), Body::from("abc"), 3).await;
        assert_eq!(ok.ok().as_deref(), Some(b"abc".as_slice()));
        // Declared too large: refused before reading.
        assert!(matches!(
            read_body(&with_length(Some(4)), Body::from("abcd"), 3).await,
            Err(BodyError::TooLarge(_))
        ));
        // Not declared (chunked): refused once the stream passes the limit.
        let chunks = futures::stream::iter(
            (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"xx"))),
        );
        assert!(matches!(
            read_body(&with_length(None), Body::from_stream(chunks), 7).await,
            Err(BodyError::TooLarge(_))
        ));
    }

    #[test]
    fn answers_by_outcome() {
        assert_eq!(answer_status(3, 0, 0), StatusCode::OK);
        assert_eq!(
            answer_status(0, 0, 2),
            StatusCode::OK,
            "all skipped is fine"
        );
        assert_eq!(answer_status(1, 1, 0), StatusCode::MULTI_STATUS);
        assert_eq!(answer_status(0, 1, 1), StatusCode::MULTI_STATUS);
        assert_eq!(answer_status(0, 2, 0), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn keys_compare_whole() {
        assert!(same_key("abcdefgh", "abcdefgh"));
        assert!(!same_key("abcdefgh", "abcdefg"));
        assert!(!same_key("abcdefgh", "abcdefgx"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer  k1 ".parse().unwrap());
        assert_eq!(presented_key(&h), Some("k1"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k2".parse().unwrap());
        assert_eq!(presented_key(&h), Some("k2"));
    }
}
