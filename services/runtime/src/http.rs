//! The probe and metrics endpoints every service serves.
//!
//! `/healthz` answers while the process runs; `/readyz` answers 200 only when
//! every readiness check passes (broker and registry reachable, not paused by
//! an outage, plus service-specific checks such as the database) and 503 with
//! the failing checks otherwise; `/metrics` is the Prometheus text format,
//! or OpenMetrics with trace-id exemplars when the scraper asks for it
//! (`Accept: application/openmetrics-text`, as Prometheus does when
//! exemplar storage is on; see [`crate::metrics::render_openmetrics`]).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::Error;

#[derive(Clone)]
struct ProbeState {
    health: Health,
    metrics: PrometheusHandle,
}

/// Routes for `/healthz`, `/readyz` and `/metrics`.
pub fn probe_routes(health: Health, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(ProbeState { health, metrics })
}

async fn readyz(State(state): State<ProbeState>) -> impl IntoResponse {
    let readiness = state.health.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}

async fn render_metrics(
    State(state): State<ProbeState>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            crate::metrics::render_openmetrics(&state.metrics.render()),
        )
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            state.metrics.render(),
        )
    }
}

/// What a public listener (the ingest API) allows each client.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; beyond it a new connection is answered 503
    /// (with `Retry-After`) and closed.
    pub max_connections: usize,
    /// A request's headers must arrive within this, counted from when the
    /// connection (or the previous response) was ready for it: an idle or
    /// stalled connection is closed.
    pub header_read_timeout: std::time::Duration,
}

/// Binds `addr` and serves `router` with `limits` until `token` is
/// cancelled, then finishes the requests in hand. Returns the bound
/// address (useful with port 0).
pub async fn serve_limited(
    addr: SocketAddr,
    router: Router,
    token: CancellationToken,
    limits: ConnectionLimits,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        loop {
            let (stream, _peer) = tokio::select! {
                _ = token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics::counter!("gale_http_connections_refused_total").increment(1);
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(1),
                        stream.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        ),
                    )
                    .await;
                });
                continue;
            };
            let service = TowerToHyperService::new(router.clone());
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let wait = limits.header_read_timeout;
            tokio::spawn(async move {
                let _slot = slot;
                // A client that connects and sends nothing is let go after
                // the header timeout (protocol detection would wait forever).
                let mut first = [0u8; 1];
                match tokio::time::timeout(wait, stream.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
    });
    Ok((bound, task))
}

/// Binds `addr` and serves `router` until `token` is cancelled.
/// Returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    token: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "http server failed");
        }
    });
    Ok((bound, task))
}
