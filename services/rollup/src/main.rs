//! `gale-rollup`: wires config to the runtime loop, for the site or the fleet scope.

use std::path::PathBuf;

use clap::Parser;
use gale_model::{AssetAggregate, SiteAggregate, ASSET_AGGREGATE, PEAK, SITE_AGGREGATE};
use gale_rollup::config::Config;
use gale_rollup::processor::{RollupProcessor, DAILY, HOURLY, PEAKS};
use gale_runtime::pipeline::PipelineBuilder;
use gale_runtime::{config, Service};

/// Rolls hourly aggregates up to sites or the fleet, with daily peak hours.
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
            c.rollup.processor()?;
            c.kafka.check()?;
            Ok(())
        },
    )?;
    let settings = cfg.rollup.processor()?;
    let fleet = settings.fleet;
    let topics = cfg.topics.resolve(fleet);
    let name = if fleet { "rollup-fleet" } else { "rollup-site" };
    let service = Service::start(name, cfg.runtime()).await?;
    let builder = PipelineBuilder::new(&service)
        .input(
            &topics.input,
            if fleet {
                SITE_AGGREGATE
            } else {
                ASSET_AGGREGATE
            },
        )
        .output(HOURLY, &topics.hourly, SITE_AGGREGATE)
        .output(DAILY, &topics.daily, SITE_AGGREGATE)
        .output(PEAKS, &topics.peaks, PEAK)
        .dead_letters(&topics.dead_letter);
    let pipeline = builder.build().await?;
    let result = if fleet {
        pipeline
            .run(RollupProcessor::<SiteAggregate>::new(settings))
            .await
    } else {
        pipeline
            .run(RollupProcessor::<AssetAggregate>::new(settings))
            .await
    };
    service.finish().await;
    result?;
    Ok(())
}
