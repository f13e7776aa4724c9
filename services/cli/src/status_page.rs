//! `gale status-page`: the status of [`crate::status`] in a browser, for
//! people who do not run Grafana.
//!
//! One self-contained HTML page (no CDN: operators' machines often have no
//! internet) polls `/api/status`. The status is collected by a background
//! task on an interval and kept in memory, so a page load never waits for
//! the broker or the database, and a dependency that hangs delays only the
//! next collection, never a request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;

use crate::status::{Collector, StatusReport};

/// The page: markup, style and script in one file.
pub const PAGE: &str = include_str!("status_page.html");

/// `gale status-page` options.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusPageArgs {
    /// Address to serve the page on.
    #[arg(long, env = "GALE_STATUS_LISTEN", default_value = "127.0.0.1:9400")]
    pub listen: SocketAddr,
    /// How often the status is collected (the page refreshes every 3 s).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Where to collect from.
    #[command(flatten)]
    pub source: crate::status::SourceArgs,
}

/// Runs `gale status-page` until SIGINT or SIGTERM.
pub async fn run(args: StatusPageArgs) -> anyhow::Result<()> {
    let config = args.source.config()?;
    serve(
        args.listen,
        Collector::new(config),
        args.interval.max(Duration::from_millis(500)),
    )
    .await
}

/// The latest report (`None` until the first collection finishes).
type Latest = watch::Receiver<Option<Arc<StatusReport>>>;

/// The routes: `/` (the page), `/api/status` (the latest report as JSON;
/// 503 until the first collection finished) and `/healthz`.
pub fn routes(latest: Latest) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(api_status))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(latest)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(PAGE),
    )
        .into_response()
}

async fn api_status(State(latest): State<Latest>) -> Response {
    let current = latest.borrow().clone();
    match current {
        Some(report) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(report.as_ref().clone()),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(serde_json::json!({ "collecting": true })),
        )
            .into_response(),
    }
}

/// Collects every `interval` into `tx` until the receivers are gone.
async fn collect_forever(
    mut collector: Collector,
    interval: Duration,
    tx: watch::Sender<Option<Arc<StatusReport>>>,
) {
    // A first scrape so the first report already has rates.
    collector.prime().await;
    tokio::time::sleep(Duration::from_secs(1).min(interval)).await;
    loop {
        let report = collector.collect().await;
        tracing::debug!(collect_ms = report.collect_ms, "status collected");
        if tx.send(Some(Arc::new(report))).is_err() {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Serves the page on `listen` until SIGINT or SIGTERM, collecting every
/// `interval`.
pub async fn serve(
    listen: SocketAddr,
    collector: Collector,
    interval: Duration,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let (tx, rx) = watch::channel(None);
    let collecting = tokio::spawn(collect_forever(collector, interval, tx));
    eprintln!(
        "gale status page on http://{} (collecting every {})",
        listener.local_addr()?,
        humantime::format_duration(interval)
    );
    axum::serve(listener, routes(rx))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    collecting.abort();
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        // No external scripts, styles, fonts or images: the page must work offline.
        for needle in ["src=\"http", "href=\"http", "@import", "url(http", "//cdn"] {
            assert!(!PAGE.contains(needle), "page references {needle}");
        }
        assert!(PAGE.contains("/api/status"));
        // Data is put in with textContent only, never parsed as HTML.
        assert!(!PAGE.contains("innerHTML"));
    }
}
