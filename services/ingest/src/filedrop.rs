//! File drop: CSV/JSON files that appear under a prefix of an object store
//! (`raw/YYYY/MM/DD/HH/*.csv`, as in `smart-meter-etl-rules.md`) are read,
//! their rows sent to the raw topic, and the file moved to a done prefix.
//!
//! A file is moved only after every row was acknowledged, so a crash in
//! between makes the next run read it again; its readings carry the same
//! deterministic event ids, so the sinks store them once. Rows that cannot
//! be read are dead-lettered one by one with their original bytes; a file
//! that cannot be read at all is moved to the failed prefix and
//! dead-lettered whole. Names starting with `.` or `_`, and `.tmp`/`.part`
//! files, are ignored, so uploaders can write-then-rename on local disks.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use gale_runtime::health::Health;
use gale_runtime::retry::Backoff;
use gale_runtime::schema::IngestChannel;
use gale_runtime::shutdown::{sleep_or_cancel, CancellationToken};
use gale_runtime::storage::{Location, StoreConfig};
use object_store::{ObjectMeta, ObjectStoreExt};
use serde::Deserialize;

use crate::mapping::{now_ms, SourceMapping};
use crate::parse::{self, Format, Position};
use crate::writer::RawWriter;

/// Largest dead-letter value for a whole failed file; larger files are truncated there
/// (the file itself stays intact under the failed prefix).
const MAX_DLQ_BYTES: usize = 900 * 1024;

/// One watched object-store prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDropConfig {
    /// The store (directory or `s3://bucket/prefix`).
    pub store: StoreConfig,
    /// Prefix watched for new files.
    #[serde(default = "default_inbox")]
    pub inbox: String,
    /// Prefix processed files are moved to (same relative path).
    #[serde(default = "default_done")]
    pub done: String,
    /// Prefix unreadable files are moved to.
    #[serde(default = "default_failed")]
    pub failed: String,
    /// Name of the source (in `ingest.sources`) whose mapping reads these files.
    pub source: String,
    /// How often the inbox is listed.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
}

fn default_inbox() -> String {
    "raw/".into()
}
fn default_done() -> String {
    "processed/".into()
}
fn default_failed() -> String {
    "failed/".into()
}
fn default_poll() -> Duration {
    Duration::from_secs(2)
}

/// A running file drop.
pub struct FileDrop {
    /// Opened store.
    pub location: Location,
    /// Its configuration.
    pub config: FileDropConfig,
    /// Mapping of its source.
    pub mapping: Arc<SourceMapping>,
    /// Where readings and dead letters go.
    pub writer: Arc<RawWriter>,
    /// Readiness.
    pub health: Health,
    /// Shutdown.
    pub token: CancellationToken,
}

struct Interrupted;

fn ignored(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.starts_with('.')
        || base.starts_with('_')
        || base.ends_with(".tmp")
        || base.ends_with(".part")
        || base.ends_with(".crdownload")
}

fn rebase(path: &str, from: &str, to: &str) -> String {
    let rest = path.strip_prefix(from).unwrap_or(path);
    format!(
        "{}/{}",
        to.trim_end_matches('/'),
        rest.trim_start_matches('/')
    )
}

impl FileDrop {
    /// Polls the inbox until shutdown.
    pub async fn run(self) {
        tracing::info!(store = %self.location.url, inbox = %self.config.inbox, source = self.mapping.name(), "file drop watching");
        let inbox = self.location.child(&self.config.inbox);
        loop {
            match self
                .location
                .store
                .list(Some(&inbox))
                .try_collect::<Vec<ObjectMeta>>()
                .await
            {
                Ok(mut files) => {
                    self.health.ok("file_drop");
                    files.sort_by(|a, b| a.location.cmp(&b.location));
                    for file in files {
                        let rel = self.location.relative(&file.location);
                        if ignored(&rel) {
                            continue;
                        }
                        if self.process(&file, &rel).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    self.health.fail(
                        "file_drop",
                        format!("cannot list {}: {e}", self.location.url),
                    );
                }
            }
            if !sleep_or_cancel(&self.token, self.config.poll_interval).await {
                return;
            }
        }
    }

    async fn process(&self, file: &ObjectMeta, rel: &str) -> Result<(), Interrupted> {
        let bytes = match self.location.store.get(&file.location).await {
            Ok(r) => match r.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(file = rel, error = %e, "cannot read file; will retry");
                    return Ok(());
                }
            },
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => {
                tracing::warn!(file = rel, error = %e, "cannot read file; will retry");
                return Ok(());
            }
        };
        let origin = format!("{}/{}", self.location.url.trim_end_matches('/'), rel);
        let Some(format) = Format::from_path(rel) else {
            return self
                .fail(
                    file,
                    rel,
                    &bytes,
                    &origin,
                    "unknown file type; expected .csv, .json, .ndjson or .jsonl",
                )
                .await;
        };
        let rows = match parse::rows(format, &bytes) {
            Ok(rows) => rows,
            Err(e) => return self.fail(file, rel, &bytes, &origin, &e).await,
        };
        let received = now_ms();
        let mut readings = Vec::new();
        let mut bad = Vec::new();
        for row in rows {
            match row
                .fields
                .and_then(|f| self.mapping.to_reading(&f, IngestChannel::File, received))
            {
                Ok(r) => readings.push(r),
                Err(e) => bad.push((row.position, row.bytes, e)),
            }
        }
        if readings.is_empty() {
            let why = match bad.first() {
                Some((_, _, e)) => format!("no readable rows; first error: {e}"),
                None => "file holds no rows".into(),
            };
            return self.fail(file, rel, &bytes, &origin, &why).await;
        }
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match self.writer.send(&readings, None).await {
                Ok(()) => break,
                Err(e) => {
                    self.health.fail("file_drop", format!("{rel}: {}", e.error));
                    tracing::warn!(file = rel, error = %e.error, "rows not acknowledged; retrying the file");
                    if !sleep_or_cancel(&self.token, backoff.next_delay()).await {
                        return Err(Interrupted);
                    }
                }
            }
        }
        for (position, range, error) in &bad {
            let where_ = match position {
                Position::Line(n) => format!("{origin}#line={n}"),
                Position::Index(i) => format!("{origin}#index={i}"),
            };
            let payload = &bytes[range.clone()];
            self.dead_letter(rel, payload, &where_, "unparseable_row", error)
                .await?;
        }
        let target = self
            .location
            .child(&rebase(rel, &self.config.inbox, &self.config.done));
        if let Err(e) = self.location.store.rename(&file.location, &target).await {
            tracing::warn!(file = rel, error = %e, "could not move processed file; it will be read again (same event ids)");
            return Ok(());
        }
        self.health.ok("file_drop");
        tracing::info!(
            file = rel,
            readings = readings.len(),
            bad_rows = bad.len(),
            "file ingested"
        );
        Ok(())
    }

    async fn fail(
        &self,
        file: &ObjectMeta,
        rel: &str,
        bytes: &[u8],
        origin: &str,
        why: &str,
    ) -> Result<(), Interrupted> {
        tracing::warn!(
            file = rel,
            error = why,
            "file cannot be read; moving it to the failed prefix"
        );
        let (payload, message) = if bytes.len() > MAX_DLQ_BYTES {
            (
                &bytes[..MAX_DLQ_BYTES],
                format!(
                    "{why} (file of {} bytes truncated here; whole file under the failed prefix)",
                    bytes.len()
                ),
            )
        } else {
            (bytes, why.to_string())
        };
        self.dead_letter(rel, payload, origin, "unparseable_file", &message)
            .await?;
        let target = self
            .location
            .child(&rebase(rel, &self.config.inbox, &self.config.failed));
        if let Err(e) = self.location.store.rename(&file.location, &target).await {
            tracing::warn!(file = rel, error = %e, "could not move failed file");
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        key: &str,
        payload: &[u8],
        origin: &str,
        class: &'static str,
        message: &str,
    ) -> Result<(), Interrupted> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match self
                .writer
                .dead_letter(key, payload, origin, class, message)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "dead letter not acknowledged; retrying");
                    if !sleep_or_cancel(&self.token, backoff.next_delay()).await {
                        return Err(Interrupted);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_ignores() {
        assert_eq!(
            rebase("raw/2024/03/15/14/a.csv", "raw/", "processed/"),
            "processed/2024/03/15/14/a.csv"
        );
        assert!(ignored("raw/.a.csv"));
        assert!(ignored("raw/a.csv.tmp"));
        assert!(!ignored("raw/2024/a.csv"));
    }
}
