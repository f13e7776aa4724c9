//! `gale-enrich`: wires config and the asset registry to the runtime loop.

use std::path::PathBuf;

use clap::Parser;
use gale_enrich::config::Config;
use gale_enrich::processor::{EnrichProcessor, ENRICHED};
use gale_model::{ENRICHED_READING, QUARANTINED_READING, VALIDATED_READING};
use gale_runtime::pipeline::PipelineBuilder;
use gale_runtime::{config, Service};

/// Adds asset context and expected power to validated readings.
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
            c.assets.url()?;
            c.kafka.check()?;
            Ok(())
        },
    )?;
    let url = cfg.assets.url()?;
    let service = Service::start("enrich", cfg.runtime()).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_lazy(&url)
        .map_err(|e| anyhow::anyhow!("key `assets.url`: {e}"))?;
    let registry = match gale_assets::spawn_refresh(
        pool,
        cfg.assets.refresh,
        "enrich",
        &service.health,
        &service.shutdown,
    )
    .await
    {
        Ok(live) => live,
        Err(gale_assets::AssetsError::Shutdown) => {
            service.finish().await;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let mut builder = PipelineBuilder::new(&service).input(&cfg.topics.input, VALIDATED_READING);
    if !cfg.topics.quarantine.is_empty() {
        builder = builder.also_input(&cfg.topics.quarantine, QUARANTINED_READING);
    }
    let pipeline = builder
        .output(ENRICHED, &cfg.topics.output, ENRICHED_READING)
        .dead_letters(&cfg.topics.dead_letter)
        .build()
        .await?;
    let result = pipeline.run(EnrichProcessor::new(registry.snapshots)).await;
    service.finish().await;
    result?;
    Ok(())
}
