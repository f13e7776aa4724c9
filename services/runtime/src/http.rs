//! The probe and metrics endpoints every service serves.
//!
//! `/healthz` answers while the process runs; `/readyz` answers 200 only when
//! every readiness check passes (broker and registry reachable, not paused by
//! an outage, plus service-specific checks such as the database) and 503 with
//! the failing checks otherwise; `/metrics` is the Prometheus text format.

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

async fn render_metrics(State(state): State<ProbeState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
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
