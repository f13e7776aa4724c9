//! `gale lake compact`: merges the small files of closed Hive partitions.
//!
//! A partition (an hour, a day or a month, as the table is cut) is closed
//! when its period ended more than `older_than` ago and
//! none of its files belongs to a flush still pending in a checkpoint. Its
//! files are merged into one, named after its inputs (so a re-run after a
//! crash produces the same name), with a manifest listing what it replaced,
//! in Kafka order and with one row per event id (see [`crate::dedupe`]).
//!
//! The swap is atomic for readers on a local directory: the merged file is
//! prepared in a staging directory outside the table and exchanged with the
//! partition directory in one `renameat2(RENAME_EXCHANGE)`, so a reader that
//! lists the partition sees either the old files or the new one, never both.
//! Files the archive wrote into the partition meanwhile (late data) are moved
//! back. S3-compatible stores have no multi-object atomic operation: there
//! the merged file is written first and the old files deleted right after,
//! so a reader listing in between can see both; manifest-aware readers
//! (`compacted_from`) can exclude the replaced files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use chrono::Utc;
use futures::TryStreamExt;
use gale_runtime::storage::Location;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::config::Codec;
use crate::layout::{self, Checkpoint, HiveKey, Manifest};
use crate::parquet_io;
use crate::ArchiveError;

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Table prefix, e.g. `silver/validated_readings`.
    pub table: String,
    /// A partition is closed this long after its hour ended.
    pub older_than: Duration,
    /// Partitions with fewer files are left alone.
    pub min_files: usize,
    /// Compression of the merged files.
    pub codec: Codec,
    /// Rows per row group of the merged files.
    pub row_group_rows: usize,
    /// Only report what would be merged.
    pub dry_run: bool,
    /// Column whose value identifies a row: merged files keep one row per
    /// value (the lowest Kafka partition and offset). Empty: keep all rows.
    pub dedupe_key: String,
}

/// One merged partition.
#[derive(Debug, Clone)]
pub struct Merged {
    /// Partition directory relative to the table.
    pub partition: String,
    /// Files replaced.
    pub inputs: usize,
    /// Rows in the merged file.
    pub rows: usize,
    /// The merged file's name.
    pub file: String,
}

fn store_err(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Store(e.to_string())
}

/// Compacts the closed partitions of one table; atomically for readers on a
/// local directory (see the module docs).
pub async fn compact(
    location: &Location,
    options: &CompactOptions,
) -> Result<Vec<Merged>, ArchiveError> {
    let local_root = location.local_root.as_deref();
    let table = options.table.trim_matches('/').to_string();
    let table_prefix = location.child(&table);
    if let Some(root) = local_root {
        // An interrupted run may have left a staging directory: either the
        // merged file that never went in, or, after the exchange, the old
        // files plus any late file that was still to be moved back.
        recover_staging(root, &table)?;
        location
            .sweep_staging(&table)
            .map_err(|e| store_err(format!("sweeping {table}: {e}")))?;
    }
    let objects: Vec<ObjectMeta> = location
        .store
        .list(Some(&table_prefix))
        .try_collect()
        .await
        .map_err(store_err)?;
    let mut checkpoints = Vec::new();
    let mut partitions: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    for o in objects {
        let rel = location.relative(&o.location);
        let rel = rel
            .strip_prefix(&format!("{table}/"))
            .unwrap_or(&rel)
            .to_string();
        if rel.starts_with("_gale_checkpoints/") {
            checkpoints.push(o);
            continue;
        }
        if let Some((dir, _)) = rel.rsplit_once('/') {
            partitions.entry(dir.to_string()).or_default().push(o);
        }
    }
    let mut pending: BTreeSet<(i64, i64)> = BTreeSet::new();
    for c in checkpoints {
        let bytes = location
            .store
            .get(&c.location)
            .await
            .map_err(store_err)?
            .bytes()
            .await
            .map_err(store_err)?;
        if let Ok(Checkpoint {
            pending: Some(p), ..
        }) = serde_json::from_slice::<Checkpoint>(&bytes)
        {
            pending.insert((p.from, p.to));
        }
    }

    let now = Utc::now();
    let mut merged = Vec::new();
    for (dir, files) in partitions {
        let Some(key) = HiveKey::parse(&dir) else {
            continue;
        };
        if key.end() + chrono::Duration::from_std(options.older_than).unwrap_or_default() > now {
            continue; // still open
        }
        let data: Vec<&ObjectMeta> = files
            .iter()
            .filter(|f| f.location.as_ref().ends_with(".parquet"))
            .collect();
        if data.len() < options.min_files.max(2) {
            continue;
        }
        let mut manifests = Vec::new();
        for f in &files {
            if f.location.as_ref().ends_with(".json") {
                let bytes = location
                    .store
                    .get(&f.location)
                    .await
                    .map_err(store_err)?
                    .bytes()
                    .await
                    .map_err(store_err)?;
                if let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) {
                    manifests.push(m);
                }
            }
        }
        if manifests
            .iter()
            .any(|m| pending.contains(&(m.first_offset, m.last_offset)))
        {
            tracing::info!(partition = %dir, "skipping: a flush into it is still pending");
            continue;
        }
        // A data file without its manifest is a flush still being written
        // (or rebuilt after a crash): leave the partition for the next run.
        let described: BTreeSet<String> = manifests.iter().map(|m| m.file.clone()).collect();
        if data
            .iter()
            .any(|f| !described.contains(&file_name(&f.location)))
        {
            tracing::info!(partition = %dir, "skipping: a file in it has no manifest yet");
            continue;
        }
        // Files a previous (interrupted) run already merged: finish that run.
        let replaced: BTreeSet<String> = manifests
            .iter()
            .flat_map(|m| m.compacted_from.iter().cloned())
            .collect();
        let mut live = Vec::new();
        for f in &files {
            let name = file_name(&f.location);
            let stem = name
                .trim_start_matches('_')
                .trim_end_matches(".parquet")
                .trim_end_matches(".json");
            if replaced.contains(&format!("{stem}.parquet")) {
                if !options.dry_run {
                    match location.store.delete(&f.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(store_err(e)),
                    }
                }
            } else {
                live.push(f.clone());
            }
        }
        let files = live;
        let data: Vec<&ObjectMeta> = files
            .iter()
            .filter(|f| f.location.as_ref().ends_with(".parquet"))
            .collect();
        if data.len() < options.min_files.max(2) {
            continue;
        }
        let manifests: Vec<Manifest> = manifests
            .into_iter()
            .filter(|m| !replaced.contains(&m.file))
            .collect();
        let mut names: Vec<String> = data.iter().map(|f| file_name(&f.location)).collect();
        names.sort();
        let stem = format!("part-compacted-{:016x}", fnv(&names.join("\n")));
        if options.dry_run {
            merged.push(Merged {
                partition: dir.clone(),
                inputs: data.len(),
                rows: manifests.iter().map(|m| m.records).sum(),
                file: format!("{stem}.parquet"),
            });
            continue;
        }
        let mut schema = None;
        let mut batches = Vec::new();
        let mut mixed = None;
        for f in &data {
            let bytes = location
                .store
                .get(&f.location)
                .await
                .map_err(store_err)?
                .bytes()
                .await
                .map_err(store_err)?;
            let (s, b) = parquet_io::decode(bytes).map_err(|e| ArchiveError::File {
                path: f.location.to_string(),
                message: e,
            })?;
            match &schema {
                None => schema = Some(s),
                Some(existing) if existing.fields() != s.fields() => {
                    mixed = Some(f.location.to_string());
                    break;
                }
                Some(_) => {}
            }
            batches.extend(b);
        }
        if let Some(file) = mixed {
            // Files written before and after a schema change: merging them
            // would need a schema decision; leave the partition as it is.
            tracing::warn!(partition = %dir, file, "schema differs from the other files of its partition; not merging it");
            continue;
        }
        let schema = schema.expect("at least two files");
        let all = concat_batches(&schema, &batches).map_err(store_err)?;
        let (all, repeats) = one_row_per_id(all, &options.dedupe_key).map_err(store_err)?;
        if repeats > 0 {
            tracing::info!(partition = %dir, repeats, "rows repeated across files dropped");
        }
        let rows = all.num_rows();
        let bytes = parquet_io::encode(schema, &[all], options.codec, options.row_group_rows)
            .map_err(store_err)?;
        let manifest = Manifest {
            file: format!("{stem}.parquet"),
            records: rows,
            min_event_time: manifests
                .iter()
                .map(|m| m.min_event_time.clone())
                .min()
                .unwrap_or_default(),
            max_event_time: manifests
                .iter()
                .map(|m| m.max_event_time.clone())
                .max()
                .unwrap_or_default(),
            topic: manifests
                .first()
                .map(|m| m.topic.clone())
                .unwrap_or_default(),
            partition: manifests.first().map(|m| m.partition).unwrap_or_default(),
            first_offset: manifests
                .iter()
                .map(|m| m.first_offset)
                .min()
                .unwrap_or_default(),
            last_offset: manifests
                .iter()
                .map(|m| m.last_offset)
                .max()
                .unwrap_or_default(),
            writer_schema_ids: manifests
                .iter()
                .flat_map(|m| m.writer_schema_ids.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            schema_id: manifests.first().map(|m| m.schema_id).unwrap_or_default(),
            compression: options.codec.name().into(),
            written_at: layout::rfc3339(Utc::now().timestamp_millis()),
            compacted_from: names.clone(),
        };
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        match local_root {
            Some(root) => swap_local(root, &table, &dir, &stem, &bytes, &manifest_bytes, &files)?,
            None => {
                swap_remote(location, &table, &dir, &stem, bytes, manifest_bytes, &files).await?
            }
        }
        tracing::info!(partition = %dir, inputs = data.len(), rows, "partition compacted");
        merged.push(Merged {
            partition: dir,
            inputs: data.len(),
            rows,
            file: format!("{stem}.parquet"),
        });
    }
    if let Some(root) = local_root {
        // Each swap emptied its own staging directory; drop the tree.
        match std::fs::remove_dir_all(staging_root(root, &table)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(store_err(format!("removing compaction staging: {e}"))),
        }
    }
    Ok(merged)
}

/// `batch` in Kafka order (partition, offset) with one row per value of
/// `key` (the first in that order); how many rows went.
fn one_row_per_id(batch: RecordBatch, key: &str) -> Result<(RecordBatch, usize), String> {
    let sorted = match (
        batch.column_by_name("kafka_partition"),
        batch.column_by_name("kafka_offset"),
    ) {
        (Some(p), Some(o)) => {
            let order = lexsort_to_indices(
                &[
                    SortColumn {
                        values: p.clone(),
                        options: None,
                    },
                    SortColumn {
                        values: o.clone(),
                        options: None,
                    },
                ],
                None,
            )
            .map_err(|e| e.to_string())?;
            take_record_batch(&batch, &order).map_err(|e| e.to_string())?
        }
        _ => batch,
    };
    if key.is_empty() {
        return Ok((sorted, 0));
    }
    let (kept, _, dropped) = crate::dedupe::drop_repeats(&sorted, key, &Default::default())?;
    Ok((kept, dropped))
}

fn file_name(p: &ObjectPath) -> String {
    p.filename().unwrap_or_default().to_string()
}

/// FNV-1a: a stable name for a set of inputs.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn staging_root(root: &Path, table: &str) -> PathBuf {
    root.join("_gale_compaction").join(table)
}

/// Leaf directories (those holding files) under `dir`, relative to it.
fn leaf_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut has_files = false;
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => has_files = true,
                Err(_) => {}
            }
        }
        if has_files {
            if let Ok(rel) = d.strip_prefix(dir) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn manifests_in(dir: &Path) -> Vec<Manifest> {
    names_in(dir)
        .into_iter()
        .filter(|n| n.starts_with('_') && n.ends_with(".json"))
        .filter_map(|n| std::fs::read(dir.join(n)).ok())
        .filter_map(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .collect()
}

/// Finishes or undoes what an interrupted local compaction left in staging.
fn recover_staging(root: &Path, table: &str) -> Result<(), ArchiveError> {
    let io = |what: &Path, e: std::io::Error| ArchiveError::File {
        path: what.display().to_string(),
        message: e.to_string(),
    };
    let staging = staging_root(root, table);
    for rel in leaf_dirs(&staging) {
        let left = staging.join(&rel);
        let partition = root.join(table).join(&rel);
        let present = names_in(&partition);
        let left_names = names_in(&left);
        // The exchange happened only if the partition holds a merged file
        // whose inputs all sit in staging. Without that evidence staging
        // holds our own merged file (perhaps half-written): it just goes.
        let exchanged = manifests_in(&partition).iter().any(|m| {
            !m.compacted_from.is_empty()
                && present.contains(&m.file)
                && m.compacted_from.iter().all(|f| left_names.contains(f))
        });
        if exchanged {
            // Staging holds the replaced files, which go, and late files
            // written meanwhile, which go back.
            let replaced: BTreeSet<String> = manifests_in(&partition)
                .into_iter()
                .flat_map(|m| m.compacted_from)
                .collect();
            for name in left_names {
                let data_name = name
                    .strip_prefix('_')
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(|n| format!("{n}.parquet"))
                    .unwrap_or_else(|| name.clone());
                if replaced.contains(&data_name) || present.contains(&name) {
                    continue;
                }
                std::fs::create_dir_all(&partition).map_err(|e| io(&partition, e))?;
                std::fs::rename(left.join(&name), partition.join(&name))
                    .map_err(|e| io(&left.join(&name), e))?;
                tracing::info!(file = %partition.join(&name).display(), "moved a late file back after an interrupted compaction");
            }
        }
    }
    match std::fs::remove_dir_all(&staging) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&staging, e)),
    }
}

fn swap_local(
    root: &Path,
    table: &str,
    dir: &str,
    stem: &str,
    data: &[u8],
    manifest: &[u8],
    inputs: &[ObjectMeta],
) -> Result<(), ArchiveError> {
    let io = |what: &str, e: std::io::Error| ArchiveError::File {
        path: what.to_string(),
        message: e.to_string(),
    };
    let partition_dir = root.join(table).join(dir);
    let staging = staging_root(root, table).join(dir);
    std::fs::create_dir_all(&staging).map_err(|e| io(&staging.display().to_string(), e))?;
    for (name, bytes) in [
        (format!("{stem}.parquet"), data),
        (format!("_{stem}.json"), manifest),
    ] {
        let path = staging.join(&name);
        std::fs::write(&path, bytes).map_err(|e| io(&path.display().to_string(), e))?;
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&path.display().to_string(), e))?;
    }
    exchange(&staging, &partition_dir).map_err(|e| io(&partition_dir.display().to_string(), e))?;
    // `staging` now holds the old files. Anything the archive wrote into the
    // partition after we listed it goes back.
    let known: BTreeSet<String> = inputs.iter().map(|o| file_name(&o.location)).collect();
    if let Ok(entries) = std::fs::read_dir(&staging) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                std::fs::rename(e.path(), partition_dir.join(&name))
                    .map_err(|err| io(&name, err))?;
            }
        }
    }
    std::fs::remove_dir_all(&staging).map_err(|e| io(&staging.display().to_string(), e))?;
    Ok(())
}

/// Atomically exchanges two directories (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn swap_remote(
    location: &Location,
    table: &str,
    dir: &str,
    stem: &str,
    data: Vec<u8>,
    manifest: Vec<u8>,
    inputs: &[ObjectMeta],
) -> Result<(), ArchiveError> {
    let base = format!("{table}/{dir}");
    location
        .store
        .put(
            &location.child(&format!("{base}/{stem}.parquet")),
            data.into(),
        )
        .await
        .map_err(store_err)?;
    location
        .store
        .put(
            &location.child(&format!("{base}/_{stem}.json")),
            manifest.into(),
        )
        .await
        .map_err(store_err)?;
    for o in inputs {
        if file_name(&o.location).starts_with(stem) {
            continue;
        }
        match location.store.delete(&o.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_err(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_compaction_keeps_late_files() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let dir = "date=2024-01-01/hour=00/asset_kind=__HIVE_DEFAULT_PARTITION__";
        let part = root.join("t").join(dir);
        let left = staging_root(root, "t").join(dir);
        std::fs::create_dir_all(&part).unwrap();
        std::fs::create_dir_all(&left).unwrap();
        // After the exchange: the partition holds the merged file; staging
        // the two inputs and one late file written meanwhile.
        std::fs::write(part.join("m.parquet"), "m").unwrap();
        std::fs::write(
            part.join("_m.json"),
            crate::layout::test_manifest("m.parquet", 1, &["a.parquet", "b.parquet"]),
        )
        .unwrap();
        for n in [
            "a.parquet",
            "_a.json",
            "b.parquet",
            "_b.json",
            "late.parquet",
            "_late.json",
        ] {
            std::fs::write(left.join(n), n).unwrap();
        }
        recover_staging(root, "t").unwrap();
        let names = names_in(&part);
        assert!(
            names.contains("late.parquet") && names.contains("_late.json"),
            "{names:?}"
        );
        assert!(
            !names.contains("a.parquet") && !names.contains("b.parquet"),
            "{names:?}"
        );
        assert!(!staging_root(root, "t").exists());

        // Before the exchange: staging holds only the merged file; it goes.
        std::fs::create_dir_all(&left).unwrap();
        std::fs::write(left.join("n.parquet"), "n").unwrap();
        std::fs::write(
            left.join("_n.json"),
            crate::layout::test_manifest("n.parquet", 1, &["m.parquet", "late.parquet"]),
        )
        .unwrap();
        recover_staging(root, "t").unwrap();
        let after = names_in(&part);
        assert_eq!(after, names, "partition untouched");

        // Killed while writing the merged file, before its manifest: no
        // evidence of an exchange, so nothing moves into the partition.
        std::fs::create_dir_all(&left).unwrap();
        std::fs::write(left.join("half.parquet"), "par").unwrap();
        recover_staging(root, "t").unwrap();
        assert_eq!(names_in(&part), names, "partition untouched");
    }

    #[test]
    fn exchange_swaps_directories() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("new"), "1").unwrap();
        std::fs::write(b.join("old"), "2").unwrap();
        exchange(&a, &b).unwrap();
        assert!(b.join("new").exists() && a.join("old").exists());
        assert_eq!(fnv("x"), fnv("x"));
        assert_ne!(fnv("x"), fnv("y"));
    }
}
