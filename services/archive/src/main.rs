//! `gale-archive`: wires config, the store and the tables to the runtime's sink loop.

use std::path::PathBuf;

use clap::Parser;
use gale_archive::config::Config;
use gale_archive::writer::Archive;
use gale_runtime::sink::run_sink;
use gale_runtime::storage::StoreConfig;
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
            check_store(&c.archive.store)?;
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

/// The store as `--check-config` sees it, without I/O: S3 settings are built
/// into a client (which sends nothing), a local lake is checked for its form
/// only. Opening it would create the directory, which a read-only or
/// non-root check (a CI job, a manifest test) must not do.
fn check_store(store: &StoreConfig) -> Result<(), gale_runtime::Error> {
    let url = store.url.trim();
    if url.starts_with("s3://") || url.starts_with("s3a://") {
        return storage::open(store, "archive.store").map(|_| ());
    }
    let dir = url.strip_prefix("file://").unwrap_or(url);
    if dir.is_empty() || dir.contains("://") {
        return Err(gale_runtime::Error::Config(format!(
            "key `archive.store.url`: {url:?} is neither a directory nor an s3:// URL"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            options: Default::default(),
            slow_writes: None,
        }
    }

    #[test]
    fn checking_a_local_lake_does_not_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("not-yet").join("lake");
        check_store(&store(&format!("file://{}", lake.display()))).unwrap();
        check_store(&store(&lake.display().to_string())).unwrap();
        assert!(!lake.exists());
        assert!(!dir.path().join("not-yet").exists());
    }

    #[test]
    fn checking_refuses_an_unknown_scheme_and_an_empty_url() {
        let err = check_store(&store("gs://bucket/lake"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("archive.store.url"), "{err}");
        assert!(check_store(&store("  ")).is_err());
    }

    #[test]
    fn checking_an_s3_lake_names_a_bad_option() {
        check_store(&store("s3://bucket/lake")).unwrap();
        let mut bad = store("s3://bucket/lake");
        bad.options.insert(
            "aws_not_an_option".into(),
            gale_runtime::config::Secret::new("x".to_string()),
        );
        let err = check_store(&bad).unwrap_err().to_string();
        assert!(
            err.contains("archive.store.options.aws_not_an_option"),
            "{err}"
        );
    }
}
