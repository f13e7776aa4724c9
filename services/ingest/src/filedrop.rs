//! File drop: CSV/JSON files that appear under a prefix of an object store
//! (`raw/YYYY/MM/DD/HH/*.csv`, as in `smart-meter-etl-rules.md`) are read,
//! their rows sent to the raw topic, and the file moved to a done prefix.
//!
//! Each file is sent once, across restarts. Right after every row (and every
//! dead letter) of a file is acknowledged, a done marker is written under
//! `markers/` with the file's size and entity tag; only then is the file
//! moved. A file whose marker matches it is moved without being read again,
//! so a crash, or a move that fails, between acknowledgement and move
//! neither re-sends rows nor re-dead-letters bad ones. The marker is deleted
//! once the move succeeded. Only a crash between the last acknowledgement and
//! the marker write sends a file again; its readings keep their
//! deterministic event ids, so the sinks still store them once.
//!
//! Files are taken once they have not been modified for `settle_time`, so a
//! half-written upload is not read. Rows that cannot be read, or that the
//! broker refuses (too large), are dead-lettered one by one with their
//! original bytes (a JSON array element with its own bytes); a file that
//! cannot be read at all is dead-lettered whole. Files with refused rows and
//! unreadable files go to the failed prefix, the others to the done prefix.
//! Dead-letter values are capped at [`MAX_DLQ_BYTES`]; the file itself stays
//! intact. Names starting with `.` or `_`, and `.tmp`/`.part` files, are
//! ignored, so uploaders can write-then-rename.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use gale_model::{IngestChannel, RawReading};
use gale_runtime::health::Health;
use gale_runtime::retry::Backoff;
use gale_runtime::shutdown::{sleep_or_cancel, CancellationToken};
use gale_runtime::storage::{Location, StoreConfig};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::mapping::{now_ms, RowOutcome, SourceMapping};
use crate::parse::{self, Format, Position};
use crate::writer::{Delivery, DeliveryError, RawWriter};

/// Largest dead-letter value; larger files or rows are truncated there (the
/// file itself stays intact under its prefix). Below librdkafka's default
/// `message.max.bytes` of 1 000 000, with room for the headers.
pub const MAX_DLQ_BYTES: usize = 900 * 1024;

/// Rows read, mapped and sent at a time.
const CHUNK_ROWS: usize = 5000;

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
    /// Prefix unreadable files, and files with rows the broker refused, are moved to.
    #[serde(default = "default_failed")]
    pub failed: String,
    /// Prefix of the done markers that make a file's rows be sent once.
    #[serde(default = "default_markers")]
    pub markers: String,
    /// Name of the source (in `ingest.sources`) whose mapping reads these files.
    pub source: String,
    /// How often the inbox is listed.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A file is read only once it has not been modified for this long.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle_time: Duration,
    /// Largest file read; a larger one goes to the failed prefix unread,
    /// with a dead letter saying why. Files are read into memory whole and
    /// their rows a chunk at a time.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
}

fn default_max_file_bytes() -> u64 {
    256 * 1024 * 1024
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
fn default_markers() -> String {
    "_gale/done/".into()
}
fn default_poll() -> Duration {
    Duration::from_secs(2)
}
fn default_settle() -> Duration {
    Duration::from_secs(2)
}

fn parts(prefix: &str) -> Vec<&str> {
    prefix.split('/').filter(|s| !s.is_empty()).collect()
}

impl FileDropConfig {
    /// Checks that the inbox, done, failed and marker prefixes are separate
    /// (none inside another), so moved files and markers are never listed as
    /// new files. `key` is the config path for error messages.
    pub fn check(&self, key: &str) -> Result<(), String> {
        let prefixes = [
            ("inbox", &self.inbox),
            ("done", &self.done),
            ("failed", &self.failed),
            ("markers", &self.markers),
        ];
        for (i, (a, pa)) in prefixes.iter().enumerate() {
            for (b, pb) in &prefixes[i + 1..] {
                let (x, y) = (parts(pa), parts(pb));
                if x.starts_with(&y) || y.starts_with(&x) {
                    return Err(format!(
                        "key `{key}.{a}`: {pa:?} and `{key}.{b}` {pb:?} overlap; give each its own prefix"
                    ));
                }
            }
        }
        Ok(())
    }
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
    /// Waits between attempts while the broker does not acknowledge
    /// (`processing.outage_backoff_*`).
    pub backoff: Backoff,
    /// Shutdown.
    pub token: CancellationToken,
}

struct Interrupted;

/// Where a finished file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every row was stored or skipped, bad rows dead-lettered: the done prefix.
    Done,
    /// Unreadable, or rows the broker refused: the failed prefix.
    Failed,
}

/// Written once every row of a file is acknowledged, read before a file is
/// sent: a file it matches was sent already and is only moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneMarker {
    /// The file, relative to the store.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its entity tag, when the store gives one.
    pub e_tag: Option<String>,
    /// Its modification time, µs since the epoch.
    pub last_modified_us: i64,
    /// Where it goes.
    pub outcome: Outcome,
    /// Readings acknowledged.
    pub readings: usize,
    /// Rows skipped (every metric value missing).
    pub skipped: usize,
    /// Dead letters written.
    pub dead_letters: usize,
    /// When the file was finished, RFC 3339.
    pub finished_at: String,
}

impl DoneMarker {
    /// A marker for `file` (relative path `rel`).
    pub fn new(rel: &str, file: &ObjectMeta, outcome: Outcome) -> Self {
        DoneMarker {
            file: rel.to_string(),
            size: file.size,
            e_tag: file.e_tag.clone(),
            last_modified_us: file.last_modified.timestamp_micros(),
            outcome,
            readings: 0,
            skipped: 0,
            dead_letters: 0,
            finished_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }

    /// True when `file` is the file this marker was written for (a new
    /// upload under the same name does not match).
    pub fn matches(&self, file: &ObjectMeta) -> bool {
        self.size == file.size
            && match (&self.e_tag, &file.e_tag) {
                (Some(a), Some(b)) => a == b,
                _ => self.last_modified_us == file.last_modified.timestamp_micros(),
            }
    }
}

/// True once `last_modified` is at least `settle` in the past.
pub fn settled(last_modified: DateTime<Utc>, now: DateTime<Utc>, settle: Duration) -> bool {
    now.signed_duration_since(last_modified)
        .to_std()
        .is_ok_and(|age| age >= settle)
}

/// A dead-letter value and message: `payload` up to [`MAX_DLQ_BYTES`], the
/// message saying so when it was cut.
pub fn capped<'p>(payload: &'p [u8], message: &str, kept_under: &str) -> (&'p [u8], String) {
    if payload.len() > MAX_DLQ_BYTES {
        (
            &payload[..MAX_DLQ_BYTES],
            format!(
                "{message} ({} bytes truncated to {MAX_DLQ_BYTES} here; the whole file is under {kept_under})",
                payload.len()
            ),
        )
    } else {
        (payload, message.to_string())
    }
}

fn ignored(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.starts_with('.')
        || base.starts_with('_')
        || base.ends_with(".tmp")
        || base.ends_with(".part")
        || base.ends_with(".crdownload")
}

/// `path` moved from prefix `from` to prefix `to` (where a finished file goes;
/// `gale dlq redrive --stage ingest` looks for it there).
pub fn rebase(path: &str, from: &str, to: &str) -> String {
    let rest = path.strip_prefix(from).unwrap_or(path);
    format!(
        "{}/{}",
        to.trim_end_matches('/'),
        rest.trim_start_matches('/')
    )
}

/// Path of the done marker of file `rel` under `markers`.
pub fn marker_path(location: &Location, markers: &str, rel: &str) -> Path {
    location.child(&format!("{}/{rel}", markers.trim_end_matches('/')))
}

/// Reads the done marker at `path`; `None` when there is none (or it is unreadable).
pub async fn read_marker(
    location: &Location,
    path: &Path,
) -> Result<Option<DoneMarker>, object_store::Error> {
    match location.store.get(path).await {
        Ok(r) => {
            let bytes = r.bytes().await?;
            match serde_json::from_slice(&bytes) {
                Ok(m) => Ok(Some(m)),
                Err(e) => {
                    tracing::warn!(marker = %path, error = %e, "unreadable done marker; ignoring it");
                    Ok(None)
                }
            }
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `marker` at `path`.
pub async fn write_marker(
    location: &Location,
    path: &Path,
    marker: &DoneMarker,
) -> Result<(), object_store::Error> {
    let json = serde_json::to_vec_pretty(marker).expect("a marker serializes");
    location
        .store
        .put(path, PutPayload::from(json))
        .await
        .map(|_| ())
}

/// A file whose rows are all acknowledged but which is not moved yet.
struct Unmoved {
    marker: DoneMarker,
    /// The marker is in the store.
    written: bool,
    /// Moves tried.
    attempts: u32,
}

/// One row read from a file.
struct Row {
    position: Position,
    bytes: std::ops::Range<usize>,
}

impl FileDrop {
    fn check_name(&self) -> String {
        format!(
            "file_drop {}/{}",
            self.location.url.trim_end_matches('/'),
            self.config.inbox
        )
    }

    /// Polls the inbox until shutdown.
    pub async fn run(self) {
        tracing::info!(store = %self.location.url, inbox = %self.config.inbox, source = self.mapping.name(), settle_time = ?self.config.settle_time, "file drop watching");
        let inbox = self.location.child(&self.config.inbox);
        let mut unmoved: HashMap<String, Unmoved> = HashMap::new();
        loop {
            match self
                .location
                .store
                .list(Some(&inbox))
                .try_collect::<Vec<ObjectMeta>>()
                .await
            {
                Ok(mut files) => {
                    self.health.ok(&self.check_name());
                    files.sort_by(|a, b| a.location.cmp(&b.location));
                    let now = Utc::now();
                    let listed: HashSet<String> = files
                        .iter()
                        .map(|f| self.location.relative(&f.location))
                        .collect();
                    unmoved.retain(|rel, _| listed.contains(rel));
                    for file in files {
                        let rel = self.location.relative(&file.location);
                        if ignored(&rel) {
                            continue;
                        }
                        if let Some(u) = unmoved.remove(&rel) {
                            if u.marker.matches(&file) {
                                self.finish(&file, &rel, u, &mut unmoved).await;
                                continue;
                            }
                        }
                        if !settled(file.last_modified, now, self.config.settle_time) {
                            tracing::debug!(
                                file = rel,
                                "modified recently; waiting for it to settle"
                            );
                            continue;
                        }
                        if self.process(&file, &rel, &mut unmoved).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    self.health.fail(
                        &self.check_name(),
                        format!("cannot list {}: {e}", self.location.url),
                    );
                }
            }
            if !sleep_or_cancel(&self.token, self.config.poll_interval).await {
                return;
            }
        }
    }

    async fn process(
        &self,
        listed: &ObjectMeta,
        rel: &str,
        unmoved: &mut HashMap<String, Unmoved>,
    ) -> Result<(), Interrupted> {
        let marker_at = marker_path(&self.location, &self.config.markers, rel);
        match read_marker(&self.location, &marker_at).await {
            Ok(Some(marker)) if marker.matches(listed) => {
                tracing::info!(
                    file = rel,
                    "rows were sent before a restart; moving the file without sending them again"
                );
                let u = Unmoved {
                    marker,
                    written: true,
                    attempts: 0,
                };
                self.finish(listed, rel, u, unmoved).await;
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(file = rel, error = %e, "cannot read the done marker; will retry");
                return Ok(());
            }
        }
        let origin = format!("{}/{}", self.location.url.trim_end_matches('/'), rel);
        if listed.size > self.config.max_file_bytes {
            // Not read: only its start goes into the dead letter.
            let head = self
                .location
                .store
                .get_range(&listed.location, 0..listed.size.min(MAX_DLQ_BYTES as u64))
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            let why = format!(
                "the file is {} bytes, more than max_file_bytes ({}); split it (the dead letter holds its start, the file is under {})",
                listed.size, self.config.max_file_bytes, self.config.failed
            );
            return self.fail(listed, rel, &head, &origin, &why, unmoved).await;
        }
        // The marker describes the file as read, in case it changed since the listing.
        let (bytes, meta) = match self.location.store.get(&listed.location).await {
            Ok(r) => match (r.meta.clone(), r.bytes().await) {
                (meta, Ok(b)) => (b, meta),
                (_, Err(e)) => {
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
        let file = &meta;
        let Some(format) = Format::from_path(rel) else {
            return self
                .fail(
                    file,
                    rel,
                    &bytes,
                    &origin,
                    "unknown file type; expected .csv, .json, .ndjson or .jsonl",
                    unmoved,
                )
                .await;
        };
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                let why = format!("input is not UTF-8: {e}");
                return self.fail(file, rel, &bytes, &origin, &why, unmoved).await;
            }
        };
        let mut reader = match parse::RowReader::new(format, text) {
            Ok(r) => r,
            Err(e) => {
                let why = e.to_string();
                return self.fail(file, rel, &bytes, &origin, &why, unmoved).await;
            }
        };
        let received = now_ms();
        let mut context = crate::mapping::ReadContext::default();
        let (mut acknowledged, mut refused, mut skipped, mut dead) = (0, 0, 0, 0);
        let mut first_error: Option<String> = None;
        let mut outcome = Outcome::Done;
        let kept_under = format!("{} or {}", self.config.done, self.config.failed);
        // A chunk of rows at a time: mapped, sent, its bad rows dead-lettered.
        loop {
            let chunk =
                gale_runtime::blocking(|| reader.next_chunk(CHUNK_ROWS)).map_err(|e| e.to_string());
            let chunk = match chunk {
                Ok(c) if c.is_empty() => break,
                Ok(c) => c,
                Err(e) => {
                    // Rows already sent stay sent; the rest is unreadable.
                    first_error.get_or_insert(e.clone());
                    outcome = Outcome::Failed;
                    break;
                }
            };
            let mut readings = Vec::new();
            let mut sent_rows = Vec::new();
            let mut bad = Vec::new();
            for row in chunk {
                let at = Row {
                    position: row.position,
                    bytes: row.bytes,
                };
                match row.fields.and_then(|f| {
                    self.mapping
                        .read_row_in(&f, IngestChannel::File, received, &mut context)
                }) {
                    Ok(RowOutcome::Reading(r)) => {
                        readings.push(r);
                        sent_rows.push(at);
                    }
                    Ok(RowOutcome::Skipped) => skipped += 1,
                    Err(e) => {
                        first_error.get_or_insert(e.clone());
                        bad.push((at, "unparseable_row", e));
                    }
                }
            }
            let deliveries = self.send_all(rel, &readings).await?;
            for (delivery, at) in deliveries.into_iter().zip(sent_rows) {
                match delivery {
                    Ok(()) => acknowledged += 1,
                    Err(e) => {
                        refused += 1;
                        outcome = Outcome::Failed;
                        bad.push((
                            at,
                            "refused_row",
                            format!("{e}; the file is moved to the failed prefix"),
                        ));
                    }
                }
            }
            bad.sort_by_key(|(at, _, _)| at.position);
            for (at, class, error) in &bad {
                let where_ = match at.position {
                    Position::Line(n) => format!("{origin}#line={n}"),
                    Position::Index(i) => format!("{origin}#index={i}"),
                };
                let (payload, message) = capped(&bytes[at.bytes.clone()], error, &kept_under);
                if !self
                    .dead_letter(rel, payload, &where_, class, &message)
                    .await?
                {
                    outcome = Outcome::Failed;
                }
                dead += 1;
            }
        }
        if acknowledged + refused == 0 && skipped == 0 {
            let why = match first_error {
                Some(e) => format!("no readable rows; first error: {e}"),
                None => "file holds no rows".into(),
            };
            return self.fail(file, rel, &bytes, &origin, &why, unmoved).await;
        }
        let mut marker = DoneMarker::new(rel, file, outcome);
        marker.readings = acknowledged;
        marker.skipped = skipped;
        marker.dead_letters = dead;
        tracing::info!(
            file = rel,
            readings = acknowledged,
            skipped,
            bad_rows = dead,
            refused,
            "file ingested"
        );
        let u = Unmoved {
            marker,
            written: false,
            attempts: 0,
        };
        self.finish(file, rel, u, unmoved).await;
        Ok(())
    }

    /// Sends `readings` until each is acknowledged or refused; returns what
    /// became of each (never a transient failure). Only the rows not yet
    /// acknowledged are sent again.
    async fn send_all(
        &self,
        rel: &str,
        readings: &[RawReading],
    ) -> Result<Vec<Delivery>, Interrupted> {
        let mut deliveries: Vec<Delivery> = vec![Ok(()); readings.len()];
        let mut todo: Vec<usize> = (0..readings.len()).collect();
        let mut retry = self.retry(rel);
        while !todo.is_empty() {
            let batch: Vec<RawReading> = todo.iter().map(|&i| readings[i].clone()).collect();
            let results = self.writer.send_each(&batch, None).await;
            let mut again = Vec::new();
            let mut failure = None;
            for (&i, result) in todo.iter().zip(results) {
                match result {
                    Err(DeliveryError::Failed(e)) => {
                        again.push(i);
                        failure.get_or_insert(e);
                    }
                    other => deliveries[i] = other,
                }
            }
            if let Some(e) = failure {
                let e = format!(
                    "{} of {} rows not acknowledged: {e}",
                    again.len(),
                    readings.len()
                );
                retry.wait(&e).await?;
            }
            todo = again;
        }
        retry.succeeded();
        Ok(deliveries)
    }

    fn retry<'a>(&'a self, what: &'a str) -> OutageRetry<'a> {
        let mut backoff = self.backoff.clone();
        backoff.reset();
        OutageRetry {
            what,
            check: self.check_name(),
            health: &self.health,
            token: &self.token,
            backoff,
        }
    }

    /// Dead-letters a whole unreadable file and moves it to the failed prefix.
    async fn fail(
        &self,
        file: &ObjectMeta,
        rel: &str,
        bytes: &[u8],
        origin: &str,
        why: &str,
        unmoved: &mut HashMap<String, Unmoved>,
    ) -> Result<(), Interrupted> {
        tracing::warn!(
            file = rel,
            error = why,
            "file cannot be read; moving it to the failed prefix"
        );
        let (payload, message) = capped(bytes, why, &self.config.failed);
        self.dead_letter(rel, payload, origin, "unparseable_file", &message)
            .await?;
        let mut marker = DoneMarker::new(rel, file, Outcome::Failed);
        marker.dead_letters = 1;
        let u = Unmoved {
            marker,
            written: false,
            attempts: 0,
        };
        self.finish(file, rel, u, unmoved).await;
        Ok(())
    }

    /// Records that `file` is finished and moves it; a failed move is retried
    /// on later polls without sending anything again.
    async fn finish(
        &self,
        file: &ObjectMeta,
        rel: &str,
        mut u: Unmoved,
        unmoved: &mut HashMap<String, Unmoved>,
    ) {
        let marker_at = marker_path(&self.location, &self.config.markers, rel);
        if !u.written {
            match write_marker(&self.location, &marker_at, &u.marker).await {
                Ok(()) => u.written = true,
                Err(e) => {
                    tracing::warn!(file = rel, error = %e, "cannot write the done marker; a restart before the move would send the file again")
                }
            }
        }
        let prefix = match u.marker.outcome {
            Outcome::Done => &self.config.done,
            Outcome::Failed => &self.config.failed,
        };
        let target = self
            .location
            .child(&rebase(rel, &self.config.inbox, prefix));
        u.attempts += 1;
        match self.location.store.rename(&file.location, &target).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                if u.written {
                    if let Err(e) = self.location.store.delete(&marker_at).await {
                        tracing::warn!(file = rel, error = %e, "cannot delete the done marker");
                    }
                }
                tracing::debug!(file = rel, to = %target, "file moved");
            }
            Err(e) => {
                if u.attempts == 1 {
                    tracing::warn!(file = rel, error = %e, "cannot move the finished file; retrying on every poll, its rows are not sent again");
                } else {
                    tracing::debug!(file = rel, error = %e, attempts = u.attempts, "cannot move the finished file yet");
                }
                unmoved.insert(rel.to_string(), u);
            }
        }
    }

    /// Dead-letters `payload`, retrying while the broker does not
    /// acknowledge; `false` when the broker refused it for good.
    async fn dead_letter(
        &self,
        key: &str,
        payload: &[u8],
        origin: &str,
        class: &'static str,
        message: &str,
    ) -> Result<bool, Interrupted> {
        let mut retry = self.retry(key);
        loop {
            match self
                .writer
                .dead_letter(key, payload, origin, class, message)
                .await
            {
                Ok(()) => {
                    retry.succeeded();
                    return Ok(true);
                }
                Err(DeliveryError::Refused(e)) => {
                    tracing::error!(file = key, origin, error = %e, "dead letter refused by the broker; the file keeps the original bytes");
                    retry.succeeded();
                    return Ok(false);
                }
                Err(DeliveryError::Failed(e)) => retry.wait(&format!("dead letter: {e}")).await?,
            }
        }
    }
}

/// Waits between attempts at something the broker did not acknowledge:
/// capped exponential back-off, not ready meanwhile, cut short by shutdown.
struct OutageRetry<'a> {
    what: &'a str,
    check: String,
    health: &'a Health,
    token: &'a CancellationToken,
    backoff: Backoff,
}

impl OutageRetry<'_> {
    /// Reports `error` and waits for the next attempt; `Interrupted` at shutdown.
    async fn wait(&mut self, error: &str) -> Result<(), Interrupted> {
        self.health
            .fail(&self.check, format!("{}: {error}", self.what));
        tracing::warn!(file = self.what, error, "not acknowledged; retrying");
        if sleep_or_cancel(self.token, self.backoff.next_delay()).await {
            Ok(())
        } else {
            Err(Interrupted)
        }
    }

    /// Ready again after failed attempts.
    fn succeeded(&self) {
        if self.backoff.attempts() > 0 {
            self.health.ok(&self.check);
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

    fn config(inbox: &str, done: &str, failed: &str, markers: &str) -> FileDropConfig {
        let mut c: FileDropConfig =
            gale_runtime::config::load_str("source = \"s\"\nstore = { url = \"/tmp/x\" }\n")
                .unwrap();
        c.inbox = inbox.into();
        c.done = done.into();
        c.failed = failed.into();
        c.markers = markers.into();
        c
    }

    #[test]
    fn defaults_and_overlapping_prefixes() {
        let c = config("raw/", "processed/", "failed/", "_gale/done/");
        assert_eq!(c.settle_time, Duration::from_secs(2));
        let d: FileDropConfig =
            gale_runtime::config::load_str("source = \"s\"\nstore = { url = \"/tmp/x\" }\n")
                .unwrap();
        assert_eq!(
            (d.inbox.as_str(), d.done.as_str(), d.markers.as_str()),
            ("raw/", "processed/", "_gale/done/")
        );
        assert!(d.check("k").is_ok());
        let e = config("", "processed/", "failed/", "_gale/done/")
            .check("ingest.file_drops[0]")
            .unwrap_err();
        assert!(
            e.contains("ingest.file_drops[0].inbox") && e.contains("overlap"),
            "{e}"
        );
        let e = config("raw/", "raw/done/", "failed/", "_gale/")
            .check("k")
            .unwrap_err();
        assert!(e.contains("k.inbox") && e.contains("k.done"), "{e}");
        let e = config("raw", "processed", "failed", "processed/markers")
            .check("k")
            .unwrap_err();
        assert!(e.contains("k.done") && e.contains("k.markers"), "{e}");
        assert!(config("raw/", "raw2/", "raw-failed/", "_m/")
            .check("k")
            .is_ok());
    }

    fn meta(size: u64, e_tag: Option<&str>, modified_s: i64) -> ObjectMeta {
        ObjectMeta {
            location: Path::from("raw/a.csv"),
            last_modified: DateTime::from_timestamp(modified_s, 0).unwrap(),
            size,
            e_tag: e_tag.map(str::to_string),
            version: None,
        }
    }

    #[test]
    fn markers_match_only_their_file() {
        let m = DoneMarker::new("raw/a.csv", &meta(10, Some("\"x\""), 100), Outcome::Done);
        assert!(m.matches(&meta(10, Some("\"x\""), 100)));
        assert!(
            !m.matches(&meta(10, Some("\"y\""), 100)),
            "new upload, same size"
        );
        assert!(!m.matches(&meta(11, Some("\"x\""), 100)));
        let m = DoneMarker::new("raw/a.csv", &meta(10, None, 100), Outcome::Failed);
        assert!(m.matches(&meta(10, None, 100)));
        assert!(!m.matches(&meta(10, None, 101)));
    }

    #[test]
    fn files_settle_before_they_are_taken() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let two = Duration::from_secs(2);
        assert!(!settled(
            DateTime::from_timestamp(999, 0).unwrap(),
            now,
            two
        ));
        assert!(settled(DateTime::from_timestamp(998, 0).unwrap(), now, two));
        assert!(
            !settled(DateTime::from_timestamp(1_005, 0).unwrap(), now, two),
            "a clock ahead of ours is not settled"
        );
        assert!(settled(now, now, Duration::ZERO));
    }

    #[test]
    fn dead_letter_values_are_capped() {
        let small = vec![b'a'; 10];
        let (p, m) = capped(&small, "bad row", "failed/");
        assert_eq!((p.len(), m.as_str()), (10, "bad row"));
        let big = vec![b'a'; MAX_DLQ_BYTES + 5];
        let (p, m) = capped(&big, "too large", "failed/");
        assert_eq!(p.len(), MAX_DLQ_BYTES);
        assert!(
            m.starts_with("too large (")
                && m.contains(&format!("{} bytes", MAX_DLQ_BYTES + 5))
                && m.contains("failed/"),
            "{m}"
        );
    }

    #[tokio::test]
    async fn markers_round_trip_in_a_directory_store() {
        let dir = tempfile::tempdir().unwrap();
        let location = gale_runtime::storage::open(
            &StoreConfig {
                url: dir.path().display().to_string(),
                options: Default::default(),
                slow_writes: None,
            },
            "k",
        )
        .unwrap();
        let at = marker_path(&location, "_gale/done/", "raw/2024/a.csv");
        assert_eq!(location.relative(&at), "_gale/done/raw/2024/a.csv");
        assert_eq!(read_marker(&location, &at).await.unwrap(), None);
        let mut m = DoneMarker::new("raw/2024/a.csv", &meta(3, Some("e"), 5), Outcome::Done);
        m.readings = 2;
        write_marker(&location, &at, &m).await.unwrap();
        assert_eq!(read_marker(&location, &at).await.unwrap(), Some(m));
        assert!(dir.path().join("_gale/done/raw/2024/a.csv").exists());
        location
            .store
            .put(&at, PutPayload::from_static(b"not json"))
            .await
            .unwrap();
        assert_eq!(read_marker(&location, &at).await.unwrap(), None);
    }
}
