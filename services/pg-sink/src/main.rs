//! `gale-pg-sink`: wires config, the database and the tables to the runtime's sink loop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use gale_pg_sink::config::Config;
use gale_pg_sink::db::{self, WriteFailure};
use gale_pg_sink::writer::PgWriter;
use gale_pg_sink::PgSinkError;
use gale_runtime::retry::Backoff;
use gale_runtime::shutdown::sleep_or_cancel;
use gale_runtime::sink::run_sink;
use gale_runtime::{config, Service};

/// Stores topics in Postgres.
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
            c.sink.check()?;
            c.database.url()?;
            c.kafka.check()?;
            Ok(())
        },
    )?;
    cfg.sink.check()?;
    let url = cfg.database.url()?;
    let service = Service::start("pg-sink", cfg.runtime()).await?;
    let pool = db::pool(&cfg.database, &url)?;
    service.health.fail("database", "not checked yet");

    // The database may be down at start: wait for it (not ready meanwhile).
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
    let tables = loop {
        let attempt = async {
            if cfg.database.migrate {
                db::migrate(&pool)
                    .await
                    .map_err(|e| WriteFailure::Outage(e.to_string()))?;
            }
            let mut tables = HashMap::new();
            for mapping in &cfg.sink.tables {
                let mut table = db::describe(&pool, mapping).await?;
                table.partitions_from = cfg.database.partitions_from;
                table.partitions_ahead_days = cfg.database.partitions_ahead_days;
                tables.insert(mapping.topic.clone(), table);
            }
            Ok::<_, WriteFailure>(tables)
        };
        match attempt.await {
            Ok(t) => break t,
            Err(WriteFailure::Data(e) | WriteFailure::MissingPartition(e)) => {
                return Err(PgSinkError::Table {
                    table: "sink.tables".into(),
                    message: e,
                }
                .into())
            }
            Err(WriteFailure::Outage(e)) => {
                let e = db::redact(&e, &url);
                service.health.fail("database", e.clone());
                tracing::warn!(error = %e, "database not ready; retrying");
                if !sleep_or_cancel(&service.shutdown, backoff.next_delay()).await {
                    service.finish().await;
                    return Ok(());
                }
            }
        }
    };
    service.health.ok("database");
    tokio::spawn(watch_database(
        pool.clone(),
        service.health.clone(),
        url.clone(),
    ));

    let topics: Vec<String> = cfg.sink.tables.iter().map(|t| t.topic.clone()).collect();
    let writer = PgWriter::new(
        pool,
        url.clone(),
        tables,
        service.registry.value_decoder(),
        cfg.database.partitions_ahead_days,
    );
    let result = run_sink(&service, &topics, &cfg.sink.dead_letter, writer).await;
    service.finish().await;
    result?;
    Ok(())
}

async fn watch_database(
    pool: sqlx::PgPool,
    health: gale_runtime::health::Health,
    url: gale_runtime::config::Secret,
) {
    loop {
        match sqlx::query("SELECT 1").execute(&pool).await {
            Ok(_) => health.ok("database"),
            Err(e) => health.fail("database", db::redact(&e.to_string(), &url)),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
