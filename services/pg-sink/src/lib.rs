//! Gale's pg-sink: topics into Postgres tables for dashboards and
//! operational queries.
//!
//! Each configured topic goes to a table whose columns are named like the
//! topic's Avro fields ([`rows`]). A batch is one transaction ([`db`]): its
//! rows are copied straight into the table, and if a redelivered record
//! collides with the primary key (event id, event time), the copy is rolled
//! back to a savepoint and the rows go through a staging table and
//! `INSERT … ON CONFLICT DO NOTHING` instead; a redelivered record never
//! becomes a second row.
//! A record Postgres refuses for its content is found by bisecting the batch
//! and dead-lettered alone; an unreachable database pauses the loop.

pub mod config;
pub mod db;
pub mod rows;
pub mod writer;

/// Errors of pg-sink.
#[derive(Debug, thiserror::Error)]
pub enum PgSinkError {
    /// Invalid configuration; names the key.
    #[error("configuration error: {0}")]
    Config(String),
    /// A configured table does not exist or cannot be written as configured.
    #[error("table {table}: {message}")]
    Table {
        /// Table name.
        table: String,
        /// What is wrong.
        message: String,
    },
    /// A database operation failed.
    #[error("database: {0}")]
    Database(String),
}
