//! `gale-archive`: wires config, the store and the tables to the runtime's sink loop.

use std::path::PathBuf;

use clap::Parser;
use gale_archive::config::Config;
use gale_archive::writer::Archive;
use gale_runtime::sink::run_sink;
use gale_runtime::{config, storage, Service};

/// Archives topics as Parquet on object storage.
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
            c.archive.check()?;
            storage::open(&c.archive.store, "archive.store")?;
            c.kafka.check()?;
            Ok(())
        },
    )?;
    cfg.archive.check()?;
    let location = storage::open(&cfg.archive.store, "archive.store")?;
    // A killed predecessor may have left half-written files in a local lake;
    // they are not the lake's (no manifest, no checkpoint), so remove them
    // before directory readers trip over them.
    for table in &cfg.archive.tables {
        location.sweep_staging(&table.path)?;
    }
    let service = Service::start("archive", cfg.runtime()).await?;
    tracing::info!(store = %location.url, tables = cfg.archive.tables.len(), "archiving");
    let topics: Vec<String> = cfg.archive.tables.iter().map(|t| t.topic.clone()).collect();
    let archive = Archive::new(location, cfg.archive.clone(), service.registry.clone());
    let result = run_sink(&service, &topics, &cfg.archive.dead_letter, archive).await;
    service.finish().await;
    result?;
    Ok(())
}
