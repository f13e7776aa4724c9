//! `gale-validate`: wires config, the asset registry and the rules to the runtime loop.

use std::path::PathBuf;

use clap::Parser;
use gale_model::{QUARANTINED_READING, RAW_READING, VALIDATED_READING};
use gale_runtime::pipeline::PipelineBuilder;
use gale_runtime::{config, Service};
use gale_validate::assets::AssetDirectory;
use gale_validate::config::Config;
use gale_validate::processor::{ValidateProcessor, QUARANTINE, VALIDATED};
use gale_validate::ValidateError;

/// Many small allocations per record: mimalloc costs validate less CPU
/// than glibc's allocator (see `docs/performance.md`). The archive keeps
/// the system allocator: with Arrow's large buffers mimalloc doubled its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Validates raw readings and scores their quality.
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
            c.validate.memory(&c.validate.rules()?)?;
            c.kafka.check()?;
            Ok(())
        },
    )?;
    let rules = cfg.validate.rules()?;
    let memory = cfg.validate.memory(&rules)?;
    let service = Service::start("validate", cfg.runtime()).await?;
    let assets = match AssetDirectory::open(
        &cfg.validate.assets,
        &service.health,
        &service.shutdown,
    )
    .await
    {
        Ok(assets) => assets,
        Err(ValidateError::Shutdown) => {
            service.finish().await;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let pipeline = PipelineBuilder::new(&service)
        .input(&cfg.topics.input, RAW_READING)
        .output(VALIDATED, &cfg.topics.validated, VALIDATED_READING)
        .output(QUARANTINE, &cfg.topics.quarantine, QUARANTINED_READING)
        .dead_letters(&cfg.topics.dead_letter)
        .build()
        .await?;
    let result = pipeline
        .run(ValidateProcessor::new(
            rules,
            cfg.validate.mode,
            assets,
            memory,
        ))
        .await;
    service.finish().await;
    result?;
    Ok(())
}
