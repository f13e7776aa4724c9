//! `gale-ingest`: wires config, the raw writer, the HTTP API and file drops.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use gale_ingest::api::{self, ApiState};
use gale_ingest::config::Config;
use gale_ingest::filedrop::FileDrop;
use gale_ingest::writer::RawWriter;
use gale_model::RAW_READING;
use gale_runtime::retry::Backoff;
use gale_runtime::{config, http, storage, Service};

/// Accepts readings over HTTP and from object-store file drops.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file (also `GALE_CONFIG`); `GALE_<SECTION>__<KEY>` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Load the configuration as at start, print `config ok` (exit 0) or the error (exit 2), and exit; connects to nothing.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg: Config = config::load_or_check(
        args.config.as_deref(),
        args.check_config,
        |c: &Config| -> anyhow::Result<()> {
            c.mappings()?;
            c.kafka.check()?;
            Ok(())
        },
    )?;
    let mappings = cfg.mappings()?;
    let service = Service::start("ingest", cfg.runtime()).await?;
    service
        .ensure_topics(&[&cfg.topics.raw, &cfg.topics.dead_letter])
        .await?;
    let encoder = service
        .register_schema(&cfg.topics.raw, RAW_READING)
        .await?;
    let writer = Arc::new(RawWriter::new(
        service.producer.clone(),
        encoder,
        cfg.topics.raw.clone(),
        cfg.topics.dead_letter.clone(),
        service.tracer.clone(),
        service.metrics.topic(&cfg.topics.raw),
        service.metrics.topic(&cfg.topics.dead_letter),
        cfg.ingest.ack_timeout + std::time::Duration::from_secs(2),
    ));
    let state = Arc::new(ApiState {
        writer: writer.clone(),
        sources: cfg
            .ingest
            .sources
            .iter()
            .zip(&mappings)
            .map(|(s, m)| (s.api_keys.clone(), m.clone()))
            .collect(),
        tracer: service.tracer.clone(),
        received: service.metrics.topic("http"),
        max_listed_errors: cfg.ingest.max_listed_errors,
    });
    let limits = api::ApiLimits {
        max_body_bytes: cfg.ingest.max_body_bytes,
        max_rows: cfg.ingest.max_rows,
        max_concurrent_requests: cfg.ingest.max_concurrent_requests,
        max_inflight_bytes: cfg.ingest.max_inflight_bytes,
        body_timeout: cfg.ingest.body_timeout,
    };
    let (addr, api_task) = http::serve_limited(
        cfg.ingest.listen,
        api::routes(state, limits),
        service.shutdown.clone(),
        http::ConnectionLimits {
            max_connections: cfg.ingest.max_connections,
            header_read_timeout: cfg.ingest.header_timeout,
        },
    )
    .await?;
    tracing::info!(%addr, sources = mappings.len(), "readings API listening");
    service.started();

    let mut drops = Vec::new();
    for (i, fd) in cfg.ingest.file_drops.iter().enumerate() {
        let location = storage::open(&fd.store, &format!("ingest.file_drops[{i}].store"))?;
        let mapping = mappings
            .iter()
            .find(|m| m.name() == fd.source)
            .cloned()
            .expect("checked by Config::mappings");
        drops.push(tokio::spawn(
            FileDrop {
                location,
                config: fd.clone(),
                mapping,
                writer: writer.clone(),
                health: service.health.clone(),
                backoff: Backoff::new(
                    cfg.processing.outage_backoff_initial,
                    cfg.processing.outage_backoff_max,
                ),
                token: service.shutdown.clone(),
            }
            .run(),
        ));
    }

    service.shutdown.cancelled().await;
    let _ = api_task.await;
    for d in drops {
        let _ = d.await;
    }
    service.finish().await;
    Ok(())
}
