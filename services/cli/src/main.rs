//! `gale`: the operator CLI.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gale_cli::send::{self, Run, Target};

/// Operate a Gale pipeline.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send simulated turbine and meter readings, with the fault scenarios of the
    /// simulation spec, through the ingest API or straight to the raw topic.
    Simulate(SimulateArgs),
    /// Write the asset registry CSV of the fleet `simulate` generates for a seed.
    Fleet {
        /// Number of wind turbines.
        #[arg(long, default_value_t = 20)]
        turbines: usize,
        /// Number of smart meters.
        #[arg(long, default_value_t = 40)]
        meters: usize,
        /// Seed, as given to `simulate`.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output file; standard output when omitted.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the fleet as registry files for `gale assets import`
        /// (sites, models with the simulator's power curve, curves, assets)
        /// into this directory.
        #[arg(long)]
        registry_dir: Option<PathBuf>,
    },
    /// The pipeline's state: records and lag per topic, each stage's
    /// readiness, throughput and lag, dead letters with their top reason,
    /// active faults, and how fresh Postgres and the lake are.
    Status(gale_cli::status::StatusArgs),
    /// Serve the status as a page that refreshes itself (/, /api/status, /healthz).
    StatusPage(gale_cli::status_page::StatusPageArgs),
    /// Lake maintenance.
    #[command(subcommand)]
    Lake(LakeCommand),
    /// Database maintenance.
    #[command(subcommand)]
    Db(DbCommand),
    /// The asset registry: sites, turbine models and power curves, turbines and meters.
    #[command(subcommand)]
    Assets(AssetsCommand),
    /// Faults detected by detect-faults, and their acknowledgement.
    #[command(subcommand)]
    Faults(FaultsCommand),
    /// The fleet's recent hours (energy, availability) and a day's peak
    /// consumption hours, from Postgres.
    Energy {
        /// How many recent fleet hours.
        #[arg(long, default_value_t = 6)]
        hours: i64,
        /// Day of the peak hours (YYYY-MM-DD); the latest with peaks by default.
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
        /// Database URL (its password is never printed, `--help` included).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Move a consumer group back so its service reprocesses (refused while the group is active).
    Replay(gale_cli::replay::ReplayArgs),
    /// Dead letters: count them, look at them, send them back.
    #[command(subcommand)]
    Dlq(gale_cli::dlq::DlqCommand),
    /// Re-publish a time range of the lake (bronze or silver readings) into its topic, keeping event ids.
    Backfill {
        /// The lake: a directory or s3://bucket/prefix (AWS_* variables and --option apply).
        #[arg(long, env = "GALE_LAKE", hide_env_values = true)]
        store: String,
        /// S3 options as key=value (aws_endpoint=http://..., aws_allow_http=true, ...).
        #[arg(long = "option", value_parser = parse_kv)]
        options: Vec<(String, String)>,
        #[command(flatten)]
        args: gale_cli::backfill::BackfillArgs,
    },
    /// Print the first records of a topic, decoded, with their headers (JSON lines).
    Peek {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Topic to read.
        topic: String,
        /// How many records.
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
}

#[derive(Subcommand)]
enum LakeCommand {
    /// Merge the small files of closed Hive partitions of a table into one per partition.
    Compact {
        /// The lake: a directory or s3://bucket/prefix (AWS_* variables and --option apply).
        #[arg(long, env = "GALE_LAKE", hide_env_values = true)]
        store: String,
        /// S3 options as key=value (aws_endpoint=http://..., aws_allow_http=true, ...).
        #[arg(long = "option", value_parser = parse_kv)]
        options: Vec<(String, String)>,
        /// Table prefix, e.g. silver/validated_readings.
        #[arg(long)]
        table: String,
        /// A partition is closed this long after its hour ended.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Only merge partitions with at least this many files.
        #[arg(long, default_value_t = 2)]
        min_files: usize,
        /// Compression of merged files: snappy, zstd or none.
        #[arg(long, default_value = "snappy")]
        codec: String,
        /// Only print what would be merged.
        #[arg(long)]
        dry_run: bool,
        /// Column identifying a row: merged files keep one row per value
        /// (the lowest Kafka partition and offset); "" keeps every row.
        #[arg(long, default_value = "event_id")]
        dedupe_key: String,
    },
    /// Print the live data files of a table, one URL per line: a consistent
    /// view (from the manifests) even while compaction runs on S3.
    Files {
        /// The lake: a directory or s3://bucket/prefix (AWS_* variables and --option apply).
        #[arg(long, env = "GALE_LAKE", hide_env_values = true)]
        store: String,
        /// S3 options as key=value (aws_endpoint=http://..., aws_allow_http=true, ...).
        #[arg(long = "option", value_parser = parse_kv)]
        options: Vec<(String, String)>,
        /// Table prefix, e.g. silver/validated_readings.
        #[arg(long)]
        table: String,
    },
}

#[derive(Subcommand)]
enum AssetsCommand {
    /// Import CSV or JSON files into the registry in one transaction, all or
    /// nothing, and print what changed (see docs/assets.md).
    Import {
        /// CSV tables (sites, models, curves or assets, told by the header)
        /// or JSON documents with sections sites, models, curves, assets.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
        /// Read every CSV file (and JSON array) as this table: sites, models,
        /// curves or assets.
        #[arg(long, value_parser = parse_table)]
        table: Option<gale_assets::TableKind>,
        /// Database URL (its password is never printed, `--help` included).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// List the registered turbines and meters.
    List {
        /// Only this kind: turbine or meter.
        #[arg(long, value_parser = parse_kind)]
        kind: Option<gale_model::AssetKind>,
        /// Only assets of this site.
        #[arg(long)]
        site: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = gale_cli::assets::ListFormat::Table)]
        format: gale_cli::assets::ListFormat,
        /// Database URL (its password is never printed, `--help` included).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

#[derive(Subcommand)]
enum FaultsCommand {
    /// Faults from Postgres, newest first: open ones, or all with --all.
    List {
        /// Closed faults too.
        #[arg(long)]
        all: bool,
        /// Only this asset.
        #[arg(long)]
        asset: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Database URL (its password is never printed, `--help` included).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Acknowledge a fault (open or closed); stored in fault_acks.
    Ack {
        /// The fault id, as `gale faults list` prints it.
        id: String,
        /// Who acknowledges (defaults to $USER).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
        /// A note for the log.
        #[arg(long)]
        note: Option<String>,
        /// Database URL (its password is never printed, `--help` included).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

fn parse_table(s: &str) -> Result<gale_assets::TableKind, String> {
    s.parse()
}

fn parse_kind(s: &str) -> Result<gale_model::AssetKind, String> {
    s.parse()
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply pg-sink's migrations (the sink does this at start too).
    Migrate {
        /// Database URL (its password is never printed, `--help` included).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

/// The lake named by `--store` and `--option`s.
fn open_lake(
    store: &str,
    options: Vec<(String, String)>,
) -> anyhow::Result<gale_runtime::storage::Location> {
    let config = gale_runtime::storage::StoreConfig {
        url: store.to_string(),
        options: options
            .into_iter()
            .map(|(k, v)| (k, gale_runtime::config::Secret::new(v)))
            .collect(),
        slow_writes: None,
    };
    Ok(gale_runtime::storage::open(&config, "--store")?)
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

#[derive(clap::Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "GALE_KAFKA_BOOTSTRAP",
        hide_env_values = true,
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    /// Schema registry URL.
    #[arg(
        long,
        env = "GALE_REGISTRY_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8081"
    )]
    registry_url: String,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Number of wind turbines.
    #[arg(long, default_value_t = 20)]
    turbines: usize,
    /// Number of smart meters.
    #[arg(long, default_value_t = 40)]
    meters: usize,
    /// Readings per second over the whole fleet (more than 0); omit to send as fast as possible.
    #[arg(long, value_parser = send::parse_rate, allow_negative_numbers = true)]
    rate: Option<f64>,
    /// Stop after this long (e.g. `60s`, `5m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many readings.
    #[arg(long)]
    count: Option<u64>,
    /// Seed: the same seed gives the same values and faults.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Event time of the first tick (RFC 3339); default: the wall clock.
    #[arg(long)]
    start: Option<chrono::DateTime<chrono::Utc>>,
    /// Event-time spacing of ticks with --start, or live without --rate
    /// (live with --rate, ticks keep pace with the clock); at least 1ms.
    #[arg(long, default_value = "10s", value_parser = send::parse_interval)]
    interval: Duration,
    /// Rows per request or batch.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Ingest API base URL (sends through ingest).
    #[arg(long, env = "GALE_INGEST_URL", hide_env_values = true)]
    ingest_url: Option<String>,
    /// API key of the ingest source.
    #[arg(long, env = "GALE_INGEST_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Kafka bootstrap servers (sends straight to the raw topic when no --ingest-url is given).
    #[arg(long, env = "GALE_KAFKA_BOOTSTRAP", hide_env_values = true)]
    bootstrap: Option<String>,
    /// Raw topic, with --bootstrap.
    #[arg(long, default_value = "gale.raw")]
    topic: String,
    /// Schema registry URL, with --bootstrap.
    #[arg(
        long,
        env = "GALE_REGISTRY_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8081"
    )]
    registry_url: String,
    /// Write the fleet's asset registry CSV here (for validate's asset source).
    #[arg(long)]
    write_assets: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    /// Boxed: the options are large and `Command` holds this inline.
    #[command(flatten)]
    faults: Box<send::FaultOptions>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Simulate(a) => simulate(a).await,
        Command::Fleet {
            turbines,
            meters,
            seed,
            out,
            registry_dir,
        } => {
            let fleet = gale_cli::simulate::Fleet::generate(turbines, meters, seed);
            if let Some(dir) = registry_dir {
                for path in gale_cli::fleet_registry::write(&fleet, &dir)? {
                    eprintln!("wrote {}", path.display());
                }
            }
            let csv = fleet.assets_csv();
            match out {
                Some(path) => std::fs::write(&path, csv)?,
                None => print!("{csv}"),
            }
            Ok(())
        }
        Command::Status(args) => {
            print!("{}", gale_cli::status::run(args).await?);
            Ok(())
        }
        Command::StatusPage(args) => gale_cli::status_page::run(args).await,
        Command::Lake(LakeCommand::Files {
            store,
            options,
            table,
        }) => {
            let location = open_lake(&store, options)?;
            let files = gale_archive::snapshot::live_files(&location, &table).await?;
            let base = format!(
                "{}/{}",
                location.url.trim_end_matches('/'),
                table.trim_matches('/')
            );
            for f in &files {
                println!("{base}/{}", f.path);
            }
            eprintln!(
                "{} file(s), {} row(s)",
                files.len(),
                files.iter().map(|f| f.records).sum::<usize>()
            );
            Ok(())
        }
        Command::Lake(LakeCommand::Compact {
            store,
            options,
            table,
            older_than,
            min_files,
            codec,
            dry_run,
            dedupe_key,
        }) => {
            let codec: gale_archive::config::Codec =
                serde_json::from_value(serde_json::Value::String(codec.clone())).map_err(|_| {
                    anyhow::anyhow!("--codec {codec:?}: expected snappy, zstd or none")
                })?;
            let location = open_lake(&store, options)?;
            let merged = gale_archive::compact::compact(
                &location,
                &gale_archive::compact::CompactOptions {
                    table,
                    older_than,
                    min_files,
                    codec,
                    row_group_rows: 128 * 1024,
                    dry_run,
                    dedupe_key,
                },
            )
            .await?;
            for m in &merged {
                println!(
                    "{}{}: {} files -> {} ({} rows)",
                    if dry_run { "would merge " } else { "" },
                    m.partition,
                    m.inputs,
                    m.file,
                    m.rows
                );
            }
            println!(
                "{} partition(s) {}",
                merged.len(),
                if dry_run { "to compact" } else { "compacted" }
            );
            Ok(())
        }
        Command::Db(DbCommand::Migrate { database_url }) => {
            let url = gale_runtime::config::Secret::new(database_url);
            let redact = |e: &dyn std::fmt::Display| {
                anyhow::anyhow!(gale_pg_sink::db::redact(&e.to_string(), &url))
            };
            let pool = sqlx::PgPool::connect(url.expose())
                .await
                .map_err(|e| redact(&e))?;
            gale_pg_sink::db::migrate(&pool)
                .await
                .map_err(|e| redact(&e))?;
            println!("migrations applied");
            Ok(())
        }
        Command::Assets(AssetsCommand::Import {
            files,
            dry_run,
            table,
            database_url,
        }) => {
            let url = gale_runtime::config::Secret::new(database_url);
            print!(
                "{}",
                gale_cli::assets::import(&url, &files, table, dry_run).await?
            );
            Ok(())
        }
        Command::Assets(AssetsCommand::List {
            kind,
            site,
            format,
            database_url,
        }) => {
            let url = gale_runtime::config::Secret::new(database_url);
            print!(
                "{}",
                gale_cli::assets::list(&url, kind, site.as_deref(), format).await?
            );
            Ok(())
        }
        Command::Faults(FaultsCommand::List {
            all,
            asset,
            limit,
            database_url,
        }) => {
            let url = gale_runtime::config::Secret::new(database_url);
            print!(
                "{}",
                gale_cli::faults::list(&url, all, asset.as_deref(), limit).await?
            );
            Ok(())
        }
        Command::Energy {
            hours,
            date,
            database_url,
        } => {
            let url = gale_runtime::config::Secret::new(database_url);
            print!("{}", gale_cli::energy::report(&url, hours, date).await?);
            Ok(())
        }
        Command::Faults(FaultsCommand::Ack {
            id,
            by,
            note,
            database_url,
        }) => {
            let url = gale_runtime::config::Secret::new(database_url);
            print!(
                "{}",
                gale_cli::faults::ack(&url, &id, &by, note.as_deref()).await?
            );
            Ok(())
        }
        Command::Replay(args) => {
            let out = tokio::task::spawn_blocking(move || gale_cli::replay::run(&args)).await??;
            print!("{out}");
            Ok(())
        }
        Command::Backfill {
            store,
            options,
            args,
        } => {
            let location = open_lake(&store, options)?;
            let r = gale_cli::backfill::run(&args, &location).await?;
            let verb = if args.dry_run {
                "would publish"
            } else {
                "published"
            };
            println!(
                "{verb} {} record(s) from {} file(s); {} file(s) done by an earlier run; {} row(s) outside the range",
                r.published, r.files, r.already_done, r.out_of_range
            );
            println!("checkpoint: {}", r.checkpoint);
            Ok(())
        }
        Command::Dlq(gale_cli::dlq::DlqCommand::List(args)) => {
            let out = tokio::task::spawn_blocking(move || gale_cli::dlq::list(&args)).await??;
            print!("{out}");
            Ok(())
        }
        Command::Dlq(gale_cli::dlq::DlqCommand::Show(args)) => {
            for record in gale_cli::dlq::show(&args).await? {
                println!("{record}");
            }
            Ok(())
        }
        Command::Dlq(gale_cli::dlq::DlqCommand::Redrive(args)) => {
            let report = gale_cli::dlq::redrive(&args).await?;
            print!("{}", report.render(args.dry_run));
            Ok(())
        }
        Command::Peek {
            kafka,
            topic,
            count,
        } => {
            for record in
                gale_cli::inspect::peek(&kafka.bootstrap, &kafka.registry_url, &topic, count)
                    .await?
            {
                println!("{record}");
            }
            Ok(())
        }
    }
}

async fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    let target = match (a.ingest_url, a.bootstrap) {
        (Some(url), _) => Target::Http {
            url,
            api_key: a.api_key.ok_or_else(|| {
                anyhow::anyhow!("--api-key (or GALE_INGEST_API_KEY) is required with --ingest-url")
            })?,
        },
        (None, Some(bootstrap)) => Target::Kafka {
            bootstrap,
            topic: a.topic,
            registry: a.registry_url,
        },
        (None, None) => anyhow::bail!(
            "give --ingest-url (through ingest) or --bootstrap (straight to the raw topic)"
        ),
    };
    if a.count.is_none() && a.duration.is_none() {
        anyhow::bail!("give --count or --duration so the run ends");
    }
    let run = Run {
        turbines: a.turbines,
        meters: a.meters,
        seed: a.seed,
        rate: a.rate,
        duration: a.duration,
        count: a.count,
        start: a.start,
        interval: a.interval,
        batch: a.batch.max(1),
        write_assets: a.write_assets,
        progress: !a.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        faults: *a.faults,
    };
    let summary = send::run(run, target).await?;
    println!(
        "sent {} readings: {} accepted, {} rejected by ingest, {} retried batches, {} meter gaps",
        summary.sent, summary.accepted, summary.rejected, summary.retries, summary.gaps
    );
    for (scenario, n) in &summary.scenarios {
        println!("  {scenario:<20} {n}");
    }
    Ok(())
}
