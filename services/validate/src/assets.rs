//! The asset registry validate checks readings against: which turbines and
//! meters exist, what kind each is and which site it belongs to.
//!
//! Two sources: a CSV file (local stacks, tests) or a Postgres table that
//! the enrich stage's asset registry will own. The table is cached in memory
//! and reloaded periodically, and also on a miss (rate-limited), so a newly
//! registered asset is accepted within seconds without a lookup per record.

use rustc_hash::FxHashMap as HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gale_runtime::schema::AssetKind;
use serde::Deserialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

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
        /// Table name.
        #[serde(default = "default_table")]
        table: String,
        /// Full reload interval.
        #[serde(default = "default_refresh", with = "humantime_serde")]
        refresh: Duration,
    },
}

fn default_table() -> String {
    "gale_assets".into()
}

fn default_refresh() -> Duration {
    Duration::from_secs(60)
}

impl Default for AssetSourceConfig {
    fn default() -> Self {
        AssetSourceConfig::File {
            path: PathBuf::from("assets.csv"),
        }
    }
}

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

/// Why a lookup could not be answered.
#[derive(Debug, Clone)]
pub struct LookupError(pub String);

/// The assets validate knows.
pub struct AssetDirectory {
    assets: HashMap<String, Asset>,
    postgres: Option<PgSource>,
}

struct PgSource {
    pool: PgPool,
    table: String,
    refresh: Duration,
    loaded_at: Instant,
}

const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

impl AssetDirectory {
    /// A fixed directory (tests, files).
    pub fn fixed(assets: impl IntoIterator<Item = Asset>) -> Self {
        AssetDirectory {
            assets: assets.into_iter().map(|a| (a.id.clone(), a)).collect(),
            postgres: None,
        }
    }

    /// Opens the configured source and loads it.
    pub async fn open(config: &AssetSourceConfig) -> Result<Self, ValidateError> {
        match config {
            AssetSourceConfig::File { path } => {
                let assets = read_csv(path)?;
                tracing::info!(path = %path.display(), assets = assets.len(), "asset registry loaded");
                Ok(AssetDirectory {
                    assets,
                    postgres: None,
                })
            }
            AssetSourceConfig::Postgres {
                url,
                table,
                refresh,
            } => {
                if !table
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    return Err(ValidateError::Config(format!(
                        "key `validate.assets.table`: {table:?} is not a plain table name"
                    )));
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
                let mut dir = AssetDirectory {
                    assets: HashMap::default(),
                    postgres: Some(PgSource {
                        pool,
                        table: table.clone(),
                        refresh: *refresh,
                        loaded_at: Instant::now(),
                    }),
                };
                dir.reload()
                    .await
                    .map_err(|e| ValidateError::Assets(format!("loading {table}: {}", e.0)))?;
                Ok(dir)
            }
        }
    }

    async fn reload(&mut self) -> Result<(), LookupError> {
        let Some(pg) = &mut self.postgres else {
            return Ok(());
        };
        let sql = format!("SELECT asset_id, kind, site_id FROM {}", pg.table);
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(&sql)
            .fetch_all(&pg.pool)
            .await
            .map_err(|e| LookupError(e.to_string()))?;
        let mut assets = HashMap::with_capacity_and_hasher(rows.len(), Default::default());
        for (id, kind, site_id) in rows {
            match kind.parse::<AssetKind>() {
                Ok(kind) => {
                    assets.insert(id.clone(), Asset { id, kind, site_id });
                }
                Err(e) => {
                    tracing::warn!(asset = %id, error = %e, "skipping asset with unknown kind")
                }
            }
        }
        pg.loaded_at = Instant::now();
        tracing::debug!(assets = assets.len(), "asset registry reloaded");
        self.assets = assets;
        Ok(())
    }

    /// Looks `id` up; `Ok(None)` means it is not registered.
    pub async fn get(&mut self, id: &str) -> Result<Option<&Asset>, LookupError> {
        if let Some(pg) = &self.postgres {
            let age = pg.loaded_at.elapsed();
            let stale = age >= pg.refresh;
            let miss = !self.assets.contains_key(id) && age >= MISS_RELOAD_INTERVAL;
            if stale || miss {
                self.reload().await?;
            }
        }
        Ok(self.assets.get(id))
    }

    /// Number of known assets.
    pub fn len(&self) -> usize {
        self.assets.len()
    }

    /// True when no asset is known.
    pub fn is_empty(&self) -> bool {
        self.assets.is_empty()
    }
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
}
