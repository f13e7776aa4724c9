//! `gale-aggregate`: wires config and the windows to the runtime loop.

use std::path::PathBuf;

use clap::Parser;
use gale_aggregate::config::Config;
use gale_aggregate::processor::{AggregateProcessor, AGG_10M, AGG_1D, AGG_1H, LATE};
use gale_model::{ASSET_AGGREGATE, CHECKED_READING};
use gale_runtime::pipeline::PipelineBuilder;
use gale_runtime::{config, Service};

/// Aggregates checked readings over event-time windows per asset.
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
            c.aggregate.processor()?;
            c.kafka.check()?;
            Ok(())
        },
    )?;
    let settings = cfg.aggregate.processor()?;
    let service = Service::start("aggregate", cfg.runtime()).await?;
    let pipeline = PipelineBuilder::new(&service)
        .input(&cfg.topics.input, CHECKED_READING)
        .output(AGG_10M, &cfg.topics.asset_10m, ASSET_AGGREGATE)
        .output(AGG_1H, &cfg.topics.asset_1h, ASSET_AGGREGATE)
        .output(AGG_1D, &cfg.topics.asset_1d, ASSET_AGGREGATE)
        .output(LATE, &cfg.topics.late, CHECKED_READING)
        .dead_letters(&cfg.topics.dead_letter)
        .build()
        .await?;
    let result = pipeline.run(AggregateProcessor::new(settings)).await;
    service.finish().await;
    result?;
    Ok(())
}
