//! `gale-detect-faults`: wires config and the rules to the runtime loop.

use std::path::PathBuf;

use clap::Parser;
use gale_detect_faults::config::Config;
use gale_detect_faults::processor::{DetectProcessor, CHECKED, FAULTS, QUARANTINE};
use gale_detect_faults::Detector;
use gale_model::{CHECKED_READING, ENRICHED_READING, FAULT_EVENT, QUARANTINED_READING};
use gale_runtime::pipeline::PipelineBuilder;
use gale_runtime::{config, Service};

/// Detects turbine and meter faults and annotates every reading with them.
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
            c.detect.rules()?;
            c.detect.tiers().map_err(anyhow::Error::msg)?;
            c.kafka.check()?;
            Ok(())
        },
    )?;
    let rules = cfg.detect.rules()?;
    let tiers = cfg.detect.tiers().map_err(anyhow::Error::msg)?;
    let service = Service::start("detect-faults", cfg.runtime()).await?;
    let pipeline = PipelineBuilder::new(&service)
        .input(&cfg.topics.input, ENRICHED_READING)
        .output(CHECKED, &cfg.topics.checked, CHECKED_READING)
        .output(FAULTS, &cfg.topics.faults, FAULT_EVENT)
        .output(QUARANTINE, &cfg.topics.quarantine, QUARANTINED_READING)
        .dead_letters(&cfg.topics.dead_letter)
        .build()
        .await?;
    let result = pipeline
        .run(DetectProcessor::new(Detector::new(rules), tiers))
        .await;
    service.finish().await;
    result?;
    Ok(())
}
