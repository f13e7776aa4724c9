//! `gale-registry`: serves the schema registry API and probes.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use gale_registry::store::{Level, Store};
use gale_registry::{api, Config};
use gale_runtime::health::Health;
use gale_runtime::telemetry::Telemetry;
use gale_runtime::{config, http, metrics, shutdown};

/// A Confluent-compatible schema registry for local Gale stacks.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file (also `GALE_CONFIG`); `GALE_SERVER__LISTEN` etc. override it.
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
            c.server
                .compatibility
                .parse::<Level>()
                .map_err(|e| anyhow::anyhow!("key `server.compatibility`: {e}"))?;
            Ok(())
        },
    )?;
    let telemetry = Telemetry::init("gale-registry", &cfg.telemetry)?;
    let level: Level = cfg
        .server
        .compatibility
        .parse()
        .map_err(|e| anyhow::anyhow!("key `server.compatibility`: {e}"))?;
    let store =
        Store::open(cfg.server.data_file.as_deref(), level).context("opening registry state")?;
    let compatibility = store.global_level();
    let token = shutdown::install(std::time::Duration::from_secs(5));
    let router = api::routes(store).merge(http::probe_routes(Health::new(), metrics::install()));
    let (addr, task) = http::serve(cfg.server.listen, router, token).await?;
    tracing::info!(%addr, data_file = ?cfg.server.data_file, %compatibility, "schema registry listening");
    task.await.context("server task")?;
    telemetry.shutdown();
    Ok(())
}
