//! The asset registry validate checks readings against: which turbines and
//! meters exist, what kind each is and which site it belongs to.
//!
//! Two sources: a CSV file (local stacks, tests) or a Postgres table that
//! the enrich stage's asset registry will own. The table is held in memory
//! and reloaded in the background every `refresh`; a reading for an id the
//! cache does not know looks up that one row, so a newly registered asset is
//! accepted at once, and an id the table does not have either is remembered
//! as unknown for `unknown_ttl`, so a stream of unknown ids costs one query
//! per id and period, never a reload.
//!
//! The database being down never loses or dead-letters a good reading: at
//! start validate waits (not ready) until the table can be loaded; later a
//! failed refresh keeps serving the cached list (a warning and
//! `gale_asset_registry_refresh_failures_total`), and only a lookup the cache
//! cannot answer reports an outage, which pauses the loop on that record.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `gale_asset_registry_assets` | gauge: assets in the last full load | stage |
//! | `gale_asset_registry_refresh_failures_total` | counter | stage |
//! | `gale_asset_registry_lookups_total` | counter of single-row lookups | stage, result (`found`, `unknown`) |

use rustc_hash::FxHashMap as HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gale_model::AssetKind;
use gale_runtime::health::Health;
use gale_runtime::retry::Backoff;
use gale_runtime::shutdown::{sleep_or_cancel, CancellationToken};
use serde::Deserialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::ValidateError;

/// One registered asset.
#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    /// Asset id as it appears in readings.
    pub id: String,
    /// Turbine or meter.
    pub kind: AssetKind,
    /// Wind farm or grid area.
    pub site_id: Option<String>,
}

/// Where assets come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum AssetSourceConfig {
    /// A CSV file with header `asset_id,kind,site_id` (more columns are ignored).
    File {
        /// Path of the CSV file.
        path: PathBuf,
    },
    /// A Postgres table with columns `asset_id`, `kind`, `site_id`.
    Postgres {
        /// Connection URL; defaults to `DATABASE_URL`. The password is never logged.
        url: Option<gale_runtime::config::Secret>,
        /// Table name (`name` or `schema.name`).
        #[serde(default = "default_table")]
        table: String,
        /// Full reload interval.
        #[serde(default = "default_refresh", with = "humantime_serde")]
        refresh: Duration,
        /// How long an id the table does not have is answered as unknown
        /// before the table is asked again.
        #[serde(default = "default_unknown_ttl", with = "humantime_serde")]
        unknown_ttl: Duration,
        /// Create the table (with pg-sink's definition) at start when it is missing.
        #[serde(default = "default_create_table")]
        create_table: bool,
    },
}

fn default_table() -> String {
    "gale_assets".into()
}

fn default_refresh() -> Duration {
    Duration::from_secs(60)
}

fn default_unknown_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_create_table() -> bool {
    true
}

impl Default for AssetSourceConfig {
    fn default() -> Self {
        AssetSourceConfig::File {
            path: PathBuf::from("assets.csv"),
        }
    }
}

/// Name of the readiness check that fails while the registry cannot be loaded at start.
pub const READINESS_CHECK: &str = "asset_registry";

/// Unknown ids remembered at most; beyond this expired entries are dropped
/// and, if that is not enough, all of them (they are only a cache).
const MAX_UNKNOWN: usize = 100_000;

#[derive(Deserialize)]
struct AssetRow {
    asset_id: String,
    kind: String,
    #[serde(default)]
    site_id: Option<String>,
}

/// Reads an asset CSV file.
pub fn read_csv(path: &Path) -> Result<HashMap<String, Asset>, ValidateError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| ValidateError::Assets(format!("cannot read {}: {e}", path.display())))?;
    let mut out = HashMap::default();
    for (i, row) in reader.deserialize::<AssetRow>().enumerate() {
        let row = row.map_err(|e| {
            ValidateError::Assets(format!("{} line {}: {e}", path.display(), i + 2))
        })?;
        let kind: AssetKind = row.kind.parse().map_err(|e| {
            ValidateError::Assets(format!("{} line {}: {e}", path.display(), i + 2))
        })?;
        out.insert(
            row.asset_id.clone(),
            Asset {
                id: row.asset_id,
                kind,
                site_id: row.site_id.filter(|s| !s.is_empty()),
            },
        );
    }
    Ok(out)
}

/// The `CREATE TABLE IF NOT EXISTS` statement of the asset table, identical
/// to the one in pg-sink's migration `0001_readings.sql`, so whichever of
/// the two services starts first creates it and the other finds it.
pub fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
    asset_id    text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('turbine', 'meter')),
    site_id     text,
    capacity_kw double precision,
    latitude    double precision,
    longitude   double precision
);"
    )
}

/// Checks that `table` is a plain (optionally schema-qualified) identifier,
/// since it is spliced into SQL.
pub fn check_table_name(table: &str) -> Result<(), ValidateError> {
    let plain = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() <= 2 && parts.iter().all(|p| plain(p)) {
        Ok(())
    } else {
        Err(ValidateError::Config(format!(
            "key `validate.assets.table`: {table:?} is not a plain table name (name or schema.name)"
        )))
    }
}

/// Why a lookup could not be answered.
#[derive(Debug, Clone)]
pub struct LookupError(pub String);

/// The assets validate knows.
pub struct AssetDirectory {
    /// The whole registry: the file, or the table's last full load.
    assets: Arc<HashMap<String, Asset>>,
    postgres: Option<PgRegistry>,
}

/// What a Postgres-backed directory needs beyond the snapshot.
struct PgRegistry {
    pool: PgPool,
    table: String,
    /// Full loads from the refresh task.
    loads: watch::Receiver<Arc<HashMap<String, Asset>>>,
    /// Assets found by single-row lookups since the last full load.
    found: HashMap<String, Asset>,
    /// Ids the table did not have, and until when that answer stands.
    unknown: HashMap<String, Instant>,
    unknown_ttl: Duration,
    refresher: tokio::task::JoinHandle<()>,
}

impl Drop for PgRegistry {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl AssetDirectory {
    /// A fixed directory (tests, files).
    pub fn fixed(assets: impl IntoIterator<Item = Asset>) -> Self {
        AssetDirectory {
            assets: Arc::new(assets.into_iter().map(|a| (a.id.clone(), a)).collect()),
            postgres: None,
        }
    }

    /// Opens the configured source and loads it. A Postgres source that
    /// cannot be reached or read yet is retried, with the readiness check
    /// [`READINESS_CHECK`] failing, until it loads or `shutdown` fires.
    pub async fn open(
        config: &AssetSourceConfig,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<Self, ValidateError> {
        match config {
            AssetSourceConfig::File { path } => {
                let assets = read_csv(path)?;
                tracing::info!(path = %path.display(), assets = assets.len(), "asset registry loaded");
                Ok(AssetDirectory::fixed(assets.into_values()))
            }
            AssetSourceConfig::Postgres {
                url,
                table,
                refresh,
                unknown_ttl,
                create_table,
            } => {
                check_table_name(table)?;
                if refresh.is_zero() {
                    return Err(ValidateError::Config(
                        "key `validate.assets.refresh`: must be more than 0s".into(),
                    ));
                }
                let url = match url {
                    Some(u) => u.expose().to_string(),
                    None => std::env::var("DATABASE_URL").map_err(|_| {
                        ValidateError::Config(
                            "key `validate.assets.url`: not set and DATABASE_URL is empty".into(),
                        )
                    })?,
                };
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_lazy(&url)
                    .map_err(|e| {
                        ValidateError::Config(format!("key `validate.assets.url`: {e}"))
                    })?;
                let assets = load_at_start(&pool, table, *create_table, health, shutdown).await?;
                tracing::info!(table = %table, assets = assets.len(), "asset registry loaded");
                Ok(AssetDirectory::postgres(
                    pool,
                    table.clone(),
                    assets,
                    *refresh,
                    *unknown_ttl,
                ))
            }
        }
    }

    /// A directory over a loaded Postgres table, refreshed in the background.
    fn postgres(
        pool: PgPool,
        table: String,
        assets: HashMap<String, Asset>,
        refresh: Duration,
        unknown_ttl: Duration,
    ) -> Self {
        let assets = Arc::new(assets);
        metrics::gauge!("gale_asset_registry_assets", "stage" => "validate")
            .set(assets.len() as f64);
        let (tx, rx) = watch::channel(assets.clone());
        let refresher = tokio::spawn(refresh_loop(pool.clone(), table.clone(), refresh, tx));
        AssetDirectory {
            assets,
            postgres: Some(PgRegistry {
                pool,
                table,
                loads: rx,
                found: HashMap::default(),
                unknown: HashMap::default(),
                unknown_ttl,
                refresher,
            }),
        }
    }

    /// Looks `id` up; `Ok(None)` means it is not registered, an error that
    /// the database could not be asked.
    pub async fn get(&mut self, id: &str) -> Result<Option<&Asset>, LookupError> {
        let Some(pg) = &mut self.postgres else {
            return Ok(self.assets.get(id));
        };
        if pg.loads.has_changed().unwrap_or(false) {
            self.assets = pg.loads.borrow_and_update().clone();
            pg.found.clear();
            let now = Instant::now();
            pg.unknown.retain(|_, until| *until > now);
        }
        if self.assets.contains_key(id) {
            return Ok(self.assets.get(id));
        }
        if !pg.found.contains_key(id) {
            let now = Instant::now();
            if pg.unknown.get(id).is_some_and(|until| *until > now) {
                return Ok(None);
            }
            match lookup_one(&pg.pool, &pg.table, id).await? {
                Some(asset) => {
                    lookup_counter("found").increment(1);
                    pg.unknown.remove(id);
                    pg.found.insert(id.to_string(), asset);
                }
                None => {
                    lookup_counter("unknown").increment(1);
                    if pg.unknown.len() >= MAX_UNKNOWN {
                        pg.unknown.retain(|_, until| *until > now);
                        if pg.unknown.len() >= MAX_UNKNOWN {
                            pg.unknown.clear();
                        }
                    }
                    pg.unknown.insert(id.to_string(), now + pg.unknown_ttl);
                    return Ok(None);
                }
            }
        }
        Ok(pg.found.get(id))
    }

    /// Number of assets in the snapshot (the file, or the last full load).
    pub fn len(&self) -> usize {
        self.assets.len()
    }

    /// True when the snapshot is empty.
    pub fn is_empty(&self) -> bool {
        self.assets.is_empty()
    }
}

fn lookup_counter(result: &'static str) -> metrics::Counter {
    metrics::counter!("gale_asset_registry_lookups_total", "stage" => "validate", "result" => result)
}

/// Creates the table if asked to and loads it, retrying until it works.
async fn load_at_start(
    pool: &PgPool,
    table: &str,
    create_table: bool,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<HashMap<String, Asset>, ValidateError> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let attempt = async {
            // A role that may read but not create still works when the
            // table exists, so a failed CREATE only matters if the load fails.
            let create_error = if create_table {
                let ddl = create_table_sql(table);
                sqlx::query(&ddl).execute(pool).await.err()
            } else {
                None
            };
            load_all(pool, table)
                .await
                .map_err(|LookupError(e)| match create_error {
                    Some(c) => LookupError(format!("{e} (creating it failed: {c})")),
                    None => LookupError(e),
                })
        };
        match attempt.await {
            Ok(assets) => {
                health.ok(READINESS_CHECK);
                return Ok(assets);
            }
            Err(LookupError(e)) => {
                let wait = backoff.next_delay();
                health.fail(READINESS_CHECK, format!("cannot load {table}: {e}"));
                tracing::warn!(table, error = %e, retry_in = ?wait, "asset registry not loadable yet; retrying");
                if !sleep_or_cancel(shutdown, wait).await {
                    return Err(ValidateError::Shutdown);
                }
            }
        }
    }
}

/// Reloads the whole table every `refresh`; a failure keeps the last load
/// in service and is retried sooner, with back-off.
async fn refresh_loop(
    pool: PgPool,
    table: String,
    refresh: Duration,
    tx: watch::Sender<Arc<HashMap<String, Asset>>>,
) {
    let failures =
        metrics::counter!("gale_asset_registry_refresh_failures_total", "stage" => "validate");
    let size = metrics::gauge!("gale_asset_registry_assets", "stage" => "validate");
    let mut backoff = Backoff::new(Duration::from_secs(1), refresh);
    let mut wait = refresh;
    loop {
        tokio::time::sleep(wait).await;
        if tx.is_closed() {
            return;
        }
        match load_all(&pool, &table).await {
            Ok(assets) => {
                tracing::debug!(table, assets = assets.len(), "asset registry reloaded");
                size.set(assets.len() as f64);
                tx.send_replace(Arc::new(assets));
                backoff.reset();
                wait = refresh;
            }
            Err(LookupError(e)) => {
                failures.increment(1);
                wait = backoff.next_delay();
                tracing::warn!(
                    table,
                    error = %e,
                    retry_in = ?wait,
                    "asset registry refresh failed; serving the cached list"
                );
            }
        }
    }
}

fn parse_row(id: String, kind: String, site_id: Option<String>) -> Option<Asset> {
    match kind.parse::<AssetKind>() {
        Ok(kind) => Some(Asset { id, kind, site_id }),
        Err(e) => {
            tracing::warn!(asset = %id, error = %e, "skipping asset with unknown kind");
            None
        }
    }
}

async fn load_all(pool: &PgPool, table: &str) -> Result<HashMap<String, Asset>, LookupError> {
    let sql = format!("SELECT asset_id, kind, site_id FROM {table}");
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(&sql)
        .fetch_all(pool)
        .await
        .map_err(|e| LookupError(e.to_string()))?;
    let mut assets = HashMap::with_capacity_and_hasher(rows.len(), Default::default());
    for (id, kind, site_id) in rows {
        if let Some(asset) = parse_row(id, kind, site_id) {
            assets.insert(asset.id.clone(), asset);
        }
    }
    Ok(assets)
}

async fn lookup_one(pool: &PgPool, table: &str, id: &str) -> Result<Option<Asset>, LookupError> {
    let sql = format!("SELECT asset_id, kind, site_id FROM {table} WHERE asset_id = $1");
    let row: Option<(String, String, Option<String>)> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(|e| LookupError(e.to_string()))?;
    Ok(row.and_then(|(id, kind, site_id)| parse_row(id, kind, site_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_loads_and_rejects_bad_kinds_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.csv");
        std::fs::write(
            &good,
            "asset_id,kind,site_id,capacity_kw\nT1,turbine,farm-a,3000\nM1,meter,,\n",
        )
        .unwrap();
        let assets = read_csv(&good).unwrap();
        assert_eq!(assets["T1"].kind, AssetKind::Turbine);
        assert_eq!(assets["M1"].site_id, None);
        let bad = dir.path().join("b.csv");
        std::fs::write(&bad, "asset_id,kind\nT1,windmill\n").unwrap();
        let err = read_csv(&bad).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("windmill"), "{err}");
    }

    fn words(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn table_definition_is_pg_sinks() {
        let migration = include_str!("../../pg-sink/migrations/0001_readings.sql");
        let ours = words(&create_table_sql("gale_assets"));
        assert!(
            words(migration).contains(&ours),
            "validate's asset table DDL differs from pg-sink's migration:\n{ours}"
        );
    }

    #[test]
    fn table_names_must_be_plain() {
        for good in ["gale_assets", "registry.assets", "_a1"] {
            check_table_name(good).unwrap();
        }
        for bad in ["", "1abc", "a..b", "a.b.c", "assets; DROP TABLE x", "a-b"] {
            let err = check_table_name(bad).unwrap_err().to_string();
            assert!(err.contains("validate.assets.table"), "{err}");
        }
    }

    #[tokio::test]
    async fn unreachable_database_at_start_waits_not_ready_until_shutdown() {
        // Nothing listens on port 1: start-up must keep retrying, not fail.
        let config = AssetSourceConfig::Postgres {
            url: Some(gale_runtime::config::Secret::new(
                "postgres://gale@127.0.0.1:1/gale",
            )),
            table: default_table(),
            refresh: default_refresh(),
            unknown_ttl: default_unknown_ttl(),
            create_table: true,
        };
        let health = Health::new();
        let shutdown = CancellationToken::new();
        let opening = {
            let (health, shutdown) = (health.clone(), shutdown.clone());
            tokio::spawn(async move { AssetDirectory::open(&config, &health, &shutdown).await })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !health.readiness().checks.contains_key(READINESS_CHECK) {
            assert!(Instant::now() < deadline, "readiness never reported");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let readiness = health.readiness();
        assert!(!readiness.ready);
        assert!(
            readiness.checks[READINESS_CHECK].contains("gale_assets"),
            "{:?}",
            readiness.checks
        );
        assert!(!opening.is_finished(), "start-up gave up");
        shutdown.cancel();
        let result = opening.await.unwrap();
        assert!(matches!(result, Err(ValidateError::Shutdown)));
    }

    #[test]
    fn postgres_source_config_defaults() {
        let c: AssetSourceConfig = toml::from_str("source = \"postgres\"").unwrap();
        match c {
            AssetSourceConfig::Postgres {
                table,
                refresh,
                unknown_ttl,
                create_table,
                ..
            } => {
                assert_eq!(table, "gale_assets");
                assert_eq!(refresh, Duration::from_secs(60));
                assert_eq!(unknown_ttl, Duration::from_secs(60));
                assert!(create_table);
            }
            other => panic!("{other:?}"),
        }
        let err = toml::from_str::<AssetSourceConfig>("source = \"postgres\"\nrefesh = \"1s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("refesh"), "{err}");
    }
}
