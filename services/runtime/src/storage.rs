//! Object storage locations: a local directory by default, any S3-compatible
//! store by configuration.
//!
//! Ingest's file drop and the archive's lake both name a location the same
//! way, so the credentials and endpoint options are documented once.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
use serde::Deserialize;

use crate::config::Secret;
use crate::Error;

/// Where objects live.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A directory (`./.gale/lake`, `file:///var/lib/gale/lake`) or an
    /// S3-compatible URL (`s3://bucket/prefix`).
    pub url: String,
    /// Options for S3-compatible stores, as `object_store` names them:
    /// `aws_access_key_id`, `aws_secret_access_key`, `aws_region`,
    /// `aws_endpoint` (MinIO, moto, Ceph...), `aws_allow_http`,
    /// `aws_virtual_hosted_style_request`. Standard `AWS_*` variables are
    /// read too. Values are treated as secrets.
    #[serde(default)]
    pub options: BTreeMap<String, Secret>,
    /// Waits this long before every write: rehearses a slow or distant
    /// store (flushes longer than the consumer's poll interval, say). Not
    /// for production.
    #[serde(default, with = "humantime_serde")]
    pub slow_writes: Option<std::time::Duration>,
}

/// An opened location: a store and the prefix inside it.
#[derive(Clone, Debug)]
pub struct Location {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix every path of this location lives under.
    pub prefix: Path,
    /// The configured URL, for logs (never holds credentials).
    pub url: String,
    /// The directory, when the store is a local one.
    pub local_root: Option<std::path::PathBuf>,
}

impl Location {
    /// The path of `relative` (slash-separated) inside this location.
    pub fn child(&self, relative: &str) -> Path {
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.extend(
            relative
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        Path::from_iter(parts)
    }

    /// `path` relative to this location's prefix.
    pub fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }
}

/// Opens `config`, creating a local directory if needed.
pub fn open(config: &StoreConfig, key: &str) -> Result<Location, Error> {
    let url = config.url.trim();
    if url.starts_with("s3://") || url.starts_with("s3a://") {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::Config(format!("key `{key}.url`: {url:?} is not a URL: {e}")))?;
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(parsed.as_str());
        for (k, v) in &config.options {
            let option = k
                .parse::<object_store::aws::AmazonS3ConfigKey>()
                .map_err(|e| {
                    Error::Config(format!("key `{key}.options.{k}`: not an S3 option: {e}"))
                })?;
            builder = builder.with_config(option, v.expose());
        }
        let store = builder
            .build()
            .map_err(|e| Error::Config(format!("key `{key}`: cannot configure S3 store: {e}")))?;
        let prefix = Path::from(parsed.path().trim_start_matches('/'));
        return Ok(Location {
            store: slowed(Arc::new(store), config.slow_writes),
            prefix,
            url: url.to_string(),
            local_root: None,
        });
    }
    let dir = url.strip_prefix("file://").unwrap_or(url);
    if dir.contains("://") {
        return Err(Error::Config(format!(
            "key `{key}.url`: {url:?} is neither a directory nor an s3:// URL"
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Config(format!("key `{key}.url`: cannot create {dir}: {e}")))?;
    // Writes are synced before they return: callers commit Kafka offsets
    // right after, so "written" must survive a power loss, not just a crash.
    let store = LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| Error::Config(format!("key `{key}.url`: {e}")))?
        .with_automatic_cleanup(true)
        .with_fsync(true);
    Ok(Location {
        store: slowed(Arc::new(store), config.slow_writes),
        prefix: Path::default(),
        url: url.to_string(),
        local_root: Some(std::path::PathBuf::from(dir)),
    })
}

/// `store`, slowed down by `delay` per write when given.
fn slowed(store: Arc<dyn ObjectStore>, delay: Option<std::time::Duration>) -> Arc<dyn ObjectStore> {
    match delay {
        Some(wait) => Arc::new(object_store::throttle::ThrottledStore::new(
            store,
            object_store::throttle::ThrottleConfig {
                wait_put_per_call: wait,
                ..Default::default()
            },
        )),
        None => store,
    }
}

impl Location {
    /// Removes the half-written staging files (`name#N`) a killed process
    /// can leave beside its objects in a local directory under `relative`.
    /// The store itself never lists them, but tools that read the directory
    /// directly (pyarrow, Spark) would. Returns how many were removed.
    pub fn sweep_staging(&self, relative: &str) -> std::io::Result<usize> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let mut removed = 0;
        let mut dirs = vec![root.join(relative.trim_matches('/'))];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    dirs.push(path);
                } else if is_staging_name(&entry.file_name().to_string_lossy()) {
                    std::fs::remove_file(&path)?;
                    tracing::info!(file = %path.display(), "removed a half-written staging file");
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// `object_store`'s local staging names: `<name>#<digits>`.
fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(stem, n)| {
        !stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn local_directory_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("lake");
        let loc = open(
            &StoreConfig {
                url: root.display().to_string(),
                options: Default::default(),
                slow_writes: None,
            },
            "archive.store",
        )
        .unwrap();
        let p = loc.child("date=2024-01-01/a.parquet");
        loc.store.put(&p, b"x".to_vec().into()).await.unwrap();
        assert!(root.join("date=2024-01-01/a.parquet").exists());
        assert_eq!(loc.relative(&p), "date=2024-01-01/a.parquet");
    }

    #[tokio::test]
    async fn staging_leftovers_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let loc = open(
            &StoreConfig {
                url: dir.path().display().to_string(),
                options: Default::default(),
                slow_writes: None,
            },
            "archive.store",
        )
        .unwrap();
        let part = dir.path().join("t/date=2024-01-01/hour=00");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(part.join("part-a.parquet#3"), b"half").unwrap();
        std::fs::write(part.join("part-a.parquet"), b"whole").unwrap();
        std::fs::write(part.join("odd#name.parquet"), b"kept").unwrap();
        assert_eq!(loc.sweep_staging("t").unwrap(), 1);
        assert!(!part.join("part-a.parquet#3").exists());
        assert!(part.join("part-a.parquet").exists());
        assert!(part.join("odd#name.parquet").exists());
        assert_eq!(loc.sweep_staging("missing").unwrap(), 0);
    }

    #[test]
    fn bad_urls_name_the_key() {
        let err = open(
            &StoreConfig {
                url: "gs://bucket".into(),
                options: Default::default(),
                slow_writes: None,
            },
            "archive.store",
        )
        .unwrap_err();
        assert!(err.to_string().contains("archive.store.url"), "{err}");
    }
}
