//! A consistent view of a table on any store: the live data files.
//!
//! A directory lake is swapped atomically by compaction, so a plain listing
//! is consistent there. An S3-compatible store has no multi-object atomic
//! operation: compaction writes the merged file, then its manifest, then
//! deletes the files it replaced, and a reader that just lists `*.parquet`
//! in between sees both. Readers that need a consistent view on such a
//! store take it from the manifests instead:
//!
//! * a data file is live once its manifest exists (the archive and
//!   compaction write the file first, the manifest second);
//! * a file named in another manifest's `compacted_from` is not live (the
//!   merged file's manifest is written before the replaced files go).
//!
//! If a manifest vanishes while the view is being read, the listing is
//! taken again: the view is always one the table actually had. A reader
//! that then opens the files can still find one deleted by a compaction
//! that finished meanwhile; it takes the view again, as with any listing.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use gale_runtime::storage::Location;
use object_store::ObjectStoreExt;

use crate::layout::Manifest;
use crate::ArchiveError;

/// One live data file of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFile {
    /// Path relative to the table, e.g. `date=2024-03-15/hour=14/part-….parquet`.
    pub path: String,
    /// Rows in it, from its manifest.
    pub records: usize,
}

/// How often a listing is retried when objects vanish under it.
const ATTEMPTS: usize = 10;

/// The live data files of `table` (a prefix such as `silver/validated_readings`).
pub async fn live_files(location: &Location, table: &str) -> Result<Vec<LiveFile>, ArchiveError> {
    let table = table.trim_matches('/');
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match read_view(location, table).await {
            Ok(files) => return Ok(files),
            Err(View::Changed(path)) => last = path,
            Err(View::Failed(e)) => return Err(e),
        }
    }
    Err(ArchiveError::Store(format!(
        "table {table} kept changing while it was read (last: {last}); try again"
    )))
}

enum View {
    /// An object listed a moment ago is gone: take the listing again.
    Changed(String),
    Failed(ArchiveError),
}

async fn read_view(location: &Location, table: &str) -> Result<Vec<LiveFile>, View> {
    let prefix = location.child(table);
    let objects: Vec<_> = location
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| View::Failed(ArchiveError::Store(e.to_string())))?;
    let mut data = BTreeSet::new();
    let mut manifests = Vec::new();
    for o in &objects {
        let rel = location.relative(&o.location);
        let rel = rel
            .strip_prefix(&format!("{table}/"))
            .unwrap_or(&rel)
            .to_string();
        if rel.starts_with('_') {
            continue; // checkpoints, compaction staging
        }
        let Some((dir, name)) = rel.rsplit_once('/') else {
            continue;
        };
        if name.ends_with(".parquet") && !name.starts_with('_') {
            data.insert(rel.clone());
        } else if name.starts_with('_') && name.ends_with(".json") {
            manifests.push((dir.to_string(), o.location.clone()));
        }
    }
    let mut live: BTreeMap<String, usize> = BTreeMap::new();
    let mut replaced = BTreeSet::new();
    for (dir, path) in manifests {
        let bytes = match location.store.get(&path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(View::Changed(path.to_string()))
            }
            Err(e) => return Err(View::Failed(ArchiveError::Store(e.to_string()))),
        };
        let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
            continue; // not one of ours
        };
        for f in &m.compacted_from {
            replaced.insert(format!("{dir}/{f}"));
        }
        let file = format!("{dir}/{}", m.file);
        if data.contains(&file) {
            live.insert(file, m.records);
        }
    }
    Ok(live
        .into_iter()
        .filter(|(path, _)| !replaced.contains(path))
        .map(|(path, records)| LiveFile { path, records })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_runtime::storage::{open, StoreConfig};

    #[tokio::test]
    async fn every_stage_of_a_remote_compaction_is_a_consistent_view() {
        let dir = tempfile::tempdir().unwrap();
        let loc = open(
            &StoreConfig {
                url: dir.path().display().to_string(),
                options: Default::default(),
                slow_writes: None,
            },
            "test",
        )
        .unwrap();
        let put = |rel: &str, body: Vec<u8>| {
            let loc = loc.clone();
            let path = loc.child(&format!("t/date=2024-01-01/hour=00/{rel}"));
            async move { loc.store.put(&path, body.into()).await.unwrap() }
        };
        let del = |rel: &str| {
            let loc = loc.clone();
            let path = loc.child(&format!("t/date=2024-01-01/hour=00/{rel}"));
            async move { loc.store.delete(&path).await.unwrap() }
        };
        let total = |files: Vec<LiveFile>| files.iter().map(|f| f.records).sum::<usize>();

        put("a.parquet", b"a".to_vec()).await;
        put("_a.json", crate::layout::test_manifest("a.parquet", 3, &[])).await;
        put("b.parquet", b"b".to_vec()).await;
        // b has no manifest yet: not live.
        assert_eq!(total(live_files(&loc, "t").await.unwrap()), 3);
        put("_b.json", crate::layout::test_manifest("b.parquet", 4, &[])).await;
        assert_eq!(total(live_files(&loc, "t").await.unwrap()), 7);

        // Compaction as on S3: merged file, its manifest, then deletes.
        put("m.parquet", b"m".to_vec()).await;
        assert_eq!(total(live_files(&loc, "t").await.unwrap()), 7);
        put(
            "_m.json",
            crate::layout::test_manifest("m.parquet", 7, &["a.parquet", "b.parquet"]),
        )
        .await;
        let view = live_files(&loc, "t").await.unwrap();
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].path, "date=2024-01-01/hour=00/m.parquet");
        assert_eq!(total(view), 7);
        del("a.parquet").await;
        assert_eq!(total(live_files(&loc, "t").await.unwrap()), 7);
        del("_a.json").await;
        del("b.parquet").await;
        del("_b.json").await;
        assert_eq!(total(live_files(&loc, "t").await.unwrap()), 7);
    }
}
