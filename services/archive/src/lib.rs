//! Gale's archive: topics into a Parquet lake on object storage.
//!
//! Each configured topic becomes a table under a prefix of the store
//! (bronze/raw, silver/validated, ...), Hive-partitioned by event time
//! (`date=YYYY-MM-DD/hour=HH`, plus configured columns). The Arrow schema
//! comes from the topic's Avro schema through `arrow-avro`, so a new topic
//! needs a config entry, not code. Files are written effectively once:
//! see [`writer`] for the protocol, [`layout`] for the names,
//! [`compact`] for merging the small files of closed partitions, and
//! [`snapshot`] for a consistent list of a table's files on any store.

pub mod compact;
pub mod config;
pub mod decode;
pub mod dedupe;
pub mod fence;
pub mod layout;
pub mod parquet_io;
pub mod snapshot;
pub mod writer;

/// Errors of the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Invalid configuration; names the key.
    #[error("configuration error: {0}")]
    Config(String),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(String),
    /// A lake file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// Object path.
        path: String,
        /// What went wrong.
        message: String,
    },
}
