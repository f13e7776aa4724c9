//! Checkpoints only their owner can write.
//!
//! A Kafka partition's checkpoint says what of it is in the lake. An archive
//! that lost the partition without noticing (partitioned away from the
//! group during a slow flush, a long pause) must not overwrite the new
//! owner's checkpoint with an older offset: the new owner would then skip
//! nothing it should, but the old owner's later flushes would go on from its
//! stale view and move the checkpoint where the new owner did not put it.
//!
//! Every checkpoint write is therefore conditional on the version the writer
//! last saw, and taking a partition over is itself a write (a claim, with the
//! owner's name): whoever claimed last owns it, and the previous owner's next
//! write fails as [`Written::Fenced`]. On S3-compatible stores the condition
//! is the object's ETag (`If-Match`, `If-None-Match` for the first write);
//! on a local directory it is the checkpoint's sequence number, compared
//! and written under an exclusive lock on a lock file beside it.

use gale_runtime::storage::Location;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};

use crate::layout::Checkpoint;

/// What a writer last saw of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// The object's version on a remote store, if it existed.
    version: Option<UpdateVersion>,
    /// Its sequence number.
    seq: u64,
    /// Whether it existed.
    exists: bool,
}

/// How a conditional write went.
#[derive(Debug)]
pub enum Written {
    /// Written; this is what the writer now knows of it.
    Ok(Seen),
    /// Someone else wrote it since: the partition belongs to them now.
    Fenced(String),
    /// The store failed (an outage: try again).
    Failed(String),
}

/// Reads the checkpoint at `path` with what is needed to write it back.
pub async fn load(location: &Location, path: &Path) -> Result<(Checkpoint, Seen), String> {
    match location.store.get(path).await {
        Ok(r) => {
            let version = UpdateVersion {
                e_tag: r.meta.e_tag.clone(),
                version: r.meta.version.clone(),
            };
            let bytes = r.bytes().await.map_err(|e| e.to_string())?;
            let c: Checkpoint = serde_json::from_slice(&bytes)
                .map_err(|e| format!("checkpoint {path} is unreadable: {e}"))?;
            let seq = c.seq;
            Ok((
                c,
                Seen {
                    version: Some(version),
                    seq,
                    exists: true,
                },
            ))
        }
        Err(object_store::Error::NotFound { .. }) => Ok((Checkpoint::default(), Seen::default())),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes `checkpoint` at `path` if it is still what `seen` says.
pub async fn store(
    location: &Location,
    path: &Path,
    checkpoint: &Checkpoint,
    seen: &Seen,
) -> Written {
    let mut c = checkpoint.clone();
    c.seq = seen.seq + 1;
    let body = serde_json::to_vec_pretty(&c).expect("checkpoint serialises");
    match &location.local_root {
        Some(root) => store_local(location, root, path, body, seen, c.seq).await,
        None => store_remote(location, path, body, seen, c.seq).await,
    }
}

async fn store_remote(
    location: &Location,
    path: &Path,
    body: Vec<u8>,
    seen: &Seen,
    seq: u64,
) -> Written {
    let mode = match (&seen.version, seen.exists) {
        (Some(v), true) if v.e_tag.is_some() || v.version.is_some() => PutMode::Update(v.clone()),
        (_, true) => PutMode::Overwrite,
        (_, false) => PutMode::Create,
    };
    let opts = PutOptions {
        mode,
        ..Default::default()
    };
    match location
        .store
        .put_opts(path, body.clone().into(), opts)
        .await
    {
        Ok(r) => Written::Ok(Seen {
            version: Some(UpdateVersion {
                e_tag: r.e_tag,
                version: r.version,
            }),
            seq,
            exists: true,
        }),
        Err(object_store::Error::Precondition { .. })
        | Err(object_store::Error::AlreadyExists { .. }) => {
            Written::Fenced(format!("checkpoint {path} was written by another archive"))
        }
        Err(object_store::Error::NotImplemented { .. }) => {
            // A store without conditional writes: unfenced, said once.
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!("the store has no conditional writes (set aws_conditional_put = \"etag\" where it has them); checkpoints are written unfenced");
            });
            match location.store.put(path, body.into()).await {
                Ok(r) => Written::Ok(Seen {
                    version: Some(UpdateVersion {
                        e_tag: r.e_tag,
                        version: r.version,
                    }),
                    seq,
                    exists: true,
                }),
                Err(e) => Written::Failed(e.to_string()),
            }
        }
        Err(e) => Written::Failed(e.to_string()),
    }
}

async fn store_local(
    location: &Location,
    root: &std::path::Path,
    path: &Path,
    body: Vec<u8>,
    seen: &Seen,
    seq: u64,
) -> Written {
    let rel = location.relative(path);
    let lock_path = root.join(format!("{rel}.lock"));
    let file_path = root.join(&rel);
    let expected = seen.seq;
    let exists = seen.exists;
    let result = tokio::task::spawn_blocking(move || -> Result<Option<String>, String> {
        use std::os::fd::AsRawFd;
        if let Some(dir) = lock_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        // SAFETY: flock on a file descriptor we own; released when it closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("cannot lock {}", lock_path.display()));
        }
        let current = match std::fs::read(&file_path) {
            Ok(b) => Some(
                serde_json::from_slice::<Checkpoint>(&b)
                    .map(|c| c.seq)
                    .map_err(|e| format!("{}: {e}", file_path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.to_string()),
        };
        let ours = match current {
            None => !exists,
            Some(seq) => exists && seq == expected,
        };
        if !ours {
            return Ok(Some(format!(
                "checkpoint {} was written by another archive (sequence {:?}, this one saw {})",
                file_path.display(),
                current,
                expected
            )));
        }
        // Written while the lock is held, as a synced file renamed into
        // place: readers see the old or the new checkpoint whole.
        put_synced(&file_path, &body).map_err(|e| e.to_string())?;
        drop(lock);
        Ok(None)
    })
    .await;
    match result {
        Ok(Ok(None)) => Written::Ok(Seen {
            version: None,
            seq,
            exists: true,
        }),
        Ok(Ok(Some(why))) => Written::Fenced(why),
        Ok(Err(e)) => Written::Failed(e),
        Err(e) => Written::Failed(e.to_string()),
    }
}

/// Writes `body` at `file` as the local store does: a synced temporary file
/// renamed into place, then the directory synced.
fn put_synced(file: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_runtime::storage::{open, StoreConfig};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_claim_wins_on_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let loc = open(
            &StoreConfig {
                url: dir.path().display().to_string(),
                options: Default::default(),
                slow_writes: None,
            },
            "t",
        )
        .unwrap();
        let path = loc.child("t/_gale_checkpoints/x-0.json");
        // Two owners read the same (missing) checkpoint...
        let (_, old) = load(&loc, &path).await.unwrap();
        let (_, new) = load(&loc, &path).await.unwrap();
        // ...the new one claims it...
        let claim = Checkpoint::default();
        let Written::Ok(new) = store(&loc, &path, &claim, &new).await else {
            panic!("the claim is written")
        };
        // ...and the old one's write is refused.
        let stale = Checkpoint {
            next_offset: 5,
            ..Default::default()
        };
        assert!(matches!(
            store(&loc, &path, &stale, &old).await,
            Written::Fenced(_)
        ));
        let ahead = Checkpoint {
            next_offset: 9,
            ..Default::default()
        };
        let Written::Ok(after) = store(&loc, &path, &ahead, &new).await else {
            panic!("the owner writes on")
        };
        let (c, seen) = load(&loc, &path).await.unwrap();
        assert_eq!(c.next_offset, 9);
        assert_eq!(seen.seq, after.seq);
        // The old owner, reading again, sees it is someone else's.
        assert!(matches!(
            store(&loc, &path, &stale, &old).await,
            Written::Fenced(_)
        ));
    }
}
