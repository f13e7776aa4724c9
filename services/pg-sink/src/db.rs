//! Postgres: connection, migrations, table descriptions, daily partitions,
//! and the copy-then-upsert transaction.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{Days, NaiveDate};
use gale_runtime::config::Secret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::config::{DatabaseConfig, TableMapping};
use crate::rows::{Column, ColumnType, Source};
use crate::PgSinkError;

/// The migrations in `services/pg-sink/migrations`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pool that connects lazily (so a down database is an outage, not a start failure).
pub fn pool(config: &DatabaseConfig, url: &Secret) -> Result<PgPool, PgSinkError> {
    let options: PgConnectOptions = url.expose().parse().map_err(|e: sqlx::Error| {
        PgSinkError::Config(format!(
            "key `database.url`: {}",
            redact(&e.to_string(), url)
        ))
    })?;
    // Routine notices ("relation ... already exists, skipping" for the
    // staging table of every batch) stay out of the log.
    let options = options.options([("client_min_messages", "warning")]);
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(config.acquire_timeout)
        .connect_lazy_with(options))
}

/// `text` with the URL's password removed, for messages.
pub fn redact(text: &str, url: &Secret) -> String {
    match url
        .expose()
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
    {
        Some((userinfo, _)) => match userinfo.split_once(':') {
            Some((_, password)) if !password.is_empty() => text.replace(password, "[redacted]"),
            _ => text.to_string(),
        },
        None => text.to_string(),
    }
}

/// Applies the migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), PgSinkError> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| PgSinkError::Database(format!("migrations failed: {e}")))
}

/// What went wrong with a write.
#[derive(Debug)]
pub enum WriteFailure {
    /// Postgres refused the data (SQLSTATE classes 22 and 23).
    Data(String),
    /// A row's day has no partition (dropped behind pg-sink's back, say):
    /// create it and try again rather than refuse good rows.
    MissingPartition(String),
    /// The database is unreachable or failing; retry later.
    Outage(String),
}

impl From<sqlx::Error> for WriteFailure {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if let Some(code) = db.code() {
                if code == "23514" && db.message().contains("no partition of relation") {
                    return WriteFailure::MissingPartition(db.message().to_string());
                }
                if code.starts_with("22") || code.starts_with("23") {
                    return WriteFailure::Data(format!("{} (SQLSTATE {code})", db.message()));
                }
            }
        }
        WriteFailure::Outage(e.to_string())
    }
}

/// A table as pg-sink writes it.
#[derive(Debug, Clone)]
pub struct Table {
    /// Table name.
    pub name: String,
    /// Columns written by `COPY`, in order.
    pub columns: Vec<Column>,
    /// Partitioned by `time_column` (daily), or plain.
    pub partitioned: bool,
    /// The time column.
    pub time_column: String,
    /// The newest-row table, if any.
    pub latest: Option<Latest>,
    /// Primary-key columns: the conflict target that makes a redelivered
    /// record a no-op.
    pub key: Vec<String>,
    known_days: HashSet<NaiveDate>,
    /// Days with a partition of their own: from this day...
    pub partitions_from: NaiveDate,
    /// ...to this many days ahead of today; the rest go to the default partition.
    pub partitions_ahead_days: u32,
    /// The default partition exists.
    default_ready: bool,
}

/// A "newest row per key" table beside a table.
#[derive(Debug, Clone)]
pub struct Latest {
    /// Its name.
    pub table: String,
    /// Its primary key.
    pub key: String,
    /// Rows stamped further ahead of the clock never become the newest.
    pub max_ahead: Duration,
    /// The column that orders rows of a key (the time column by default).
    pub order_by: String,
}

/// Reads a table's columns and decides how each is filled.
pub async fn describe(pool: &PgPool, mapping: &TableMapping) -> Result<Table, WriteFailure> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, column_default::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(&mapping.table)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Err(WriteFailure::Data(format!(
            "table {} does not exist (run the migrations, or create it before mapping topic {} to it)",
            mapping.table, mapping.topic
        )));
    }
    let mut columns = Vec::new();
    for (name, data_type, default) in rows {
        let Some(kind) = ColumnType::from_pg(&data_type) else {
            return Err(WriteFailure::Data(format!(
                "column {}.{name} has type {data_type}, which pg-sink cannot fill",
                mapping.table
            )));
        };
        let source = match name.as_str() {
            "kafka_partition" => Source::KafkaPartition,
            "kafka_offset" => Source::KafkaOffset,
            // Left to the database's default (e.g. stored_at).
            _ if default.as_deref().is_some_and(|d| d.contains("now()")) => continue,
            _ => Source::Field(name.clone()),
        };
        columns.push(Column { name, kind, source });
    }
    let kind: Option<(String,)> = sqlx::query_as(
        "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relname = $1",
    )
    .bind(&mapping.table)
    .fetch_optional(pool)
    .await?;
    let key: Vec<(String,)> = sqlx::query_as(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(&mapping.table)
    .fetch_all(pool)
    .await?;
    if key.is_empty() {
        return Err(WriteFailure::Data(format!(
            "table {} has no primary key; pg-sink needs one (e.g. event_id, event_time) so that a redelivered record is not stored twice",
            mapping.table
        )));
    }
    if !columns.iter().any(|c| c.name == mapping.time_column) {
        return Err(WriteFailure::Data(format!(
            "table {} has no column {} (sink.tables time_column)",
            mapping.table, mapping.time_column
        )));
    }
    Ok(Table {
        name: mapping.table.clone(),
        columns,
        partitioned: kind.is_some_and(|(k,)| k == "p"),
        time_column: mapping.time_column.clone(),
        latest: mapping.latest.as_ref().map(|l| Latest {
            table: l.table.clone(),
            key: l.key.clone(),
            max_ahead: l.max_ahead,
            order_by: l
                .order_by
                .clone()
                .unwrap_or_else(|| mapping.time_column.clone()),
        }),
        key: key.into_iter().map(|(k,)| k).collect(),
        known_days: HashSet::new(),
        partitions_from: NaiveDate::from_ymd_opt(1990, 1, 1).expect("a date"),
        partitions_ahead_days: 3,
        default_ready: false,
    })
}

impl Table {
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Forgets which partitions exist, so the next `ensure_partitions` checks again.
    pub fn forget_partitions(&mut self) {
        self.known_days.clear();
        self.default_ready = false;
    }

    /// Creates the default partition, which holds rows of days without a
    /// partition of their own.
    async fn ensure_default(&mut self, pool: &PgPool) -> Result<(), WriteFailure> {
        if self.default_ready {
            return Ok(());
        }
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {t}_default PARTITION OF {t} DEFAULT",
            t = self.name
        );
        match sqlx::query(&sql).execute(pool).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P07") | Some("42P17")) => {}
            Err(e) => return Err(e.into()),
        }
        self.default_ready = true;
        Ok(())
    }

    /// Creates the partition of `day` while the default partition holds rows
    /// of that day: they move into it, in one transaction.
    async fn attach_from_default(
        &self,
        pool: &PgPool,
        day: NaiveDate,
        next: NaiveDate,
    ) -> Result<(), WriteFailure> {
        let part = format!("{}_p{}", self.name, day.format("%Y%m%d"));
        let mut tx = pool.begin().await?;
        for sql in [
            format!(
                "CREATE TABLE {part} (LIKE {t} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
                t = self.name
            ),
            format!(
                "WITH moved AS (DELETE FROM {t}_default WHERE {c} >= '{day} 00:00:00+00' AND {c} < '{next} 00:00:00+00' RETURNING *) \
                 INSERT INTO {part} SELECT * FROM moved",
                t = self.name,
                c = self.time_column
            ),
            format!(
                "ALTER TABLE {t} ATTACH PARTITION {part} FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
                t = self.name
            ),
        ] {
            match sqlx::query(&sql).execute(&mut *tx).await {
                Ok(_) => {}
                // Another instance did it at the same moment.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P07") => {
                    return Ok(())
                }
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        tracing::info!(table = %self.name, %day, "partition created; its rows moved out of the default partition");
        Ok(())
    }

    /// Creates the daily partitions `days` that are not known to exist yet.
    pub async fn ensure_partitions(
        &mut self,
        pool: &PgPool,
        days: impl IntoIterator<Item = NaiveDate>,
    ) -> Result<(), WriteFailure> {
        if !self.partitioned {
            return Ok(());
        }
        let today = chrono::Utc::now().date_naive();
        let last = today
            .checked_add_days(Days::new(u64::from(self.partitions_ahead_days)))
            .unwrap_or(today);
        for day in days {
            if self.known_days.contains(&day) {
                continue;
            }
            if day < self.partitions_from || day > last {
                self.ensure_default(pool).await?;
                continue;
            }
            let next = day.checked_add_days(Days::new(1)).unwrap_or(day);
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {t}_p{d} PARTITION OF {t} FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
                t = self.name,
                d = day.format("%Y%m%d"),
            );
            match sqlx::query(&sql).execute(pool).await {
                Ok(_) => {}
                // Another instance created it at the same moment.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P07") => {}
                // The default partition holds rows of the day.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23514") => {
                    self.attach_from_default(pool, day, next).await?;
                }
                Err(e) => return Err(e.into()),
            }
            self.known_days.insert(day);
        }
        Ok(())
    }

    /// Stores `rows` (COPY text) in one transaction, skipping event ids
    /// already stored, and returns how many rows were new. `latest` holds the
    /// newest row per key among them (COPY text), for the newest-row table.
    ///
    /// New rows, the usual case, are copied straight into the table. A
    /// redelivered batch makes that copy fail on the primary key; it is then
    /// rolled back to a savepoint and the rows go through a staging table
    /// and `INSERT … ON CONFLICT DO NOTHING`, which skips the stored ones.
    pub async fn write(
        &self,
        pool: &PgPool,
        rows: &str,
        latest: &str,
    ) -> Result<u64, WriteFailure> {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let cols = self.column_list();
        sqlx::query("SAVEPOINT gale_direct")
            .execute(&mut *tx)
            .await?;
        let direct = async {
            let mut copy = tx
                .copy_in_raw(&format!("COPY {} ({cols}) FROM STDIN", self.name))
                .await?;
            copy.send(rows.as_bytes()).await?;
            copy.finish().await
        }
        .await;
        let stage = format!("gale_stage_{}", self.name);
        let create_stage = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
            self.name
        );
        let inserted = match direct {
            Ok(n) => {
                sqlx::query("RELEASE SAVEPOINT gale_direct")
                    .execute(&mut *tx)
                    .await?;
                n
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                sqlx::query("ROLLBACK TO SAVEPOINT gale_direct")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&create_stage).execute(&mut *tx).await?;
                let mut copy = tx
                    .copy_in_raw(&format!("COPY {stage} ({cols}) FROM STDIN"))
                    .await?;
                copy.send(rows.as_bytes()).await?;
                copy.finish().await?;
                let inserted = sqlx::query(&format!(
                    "INSERT INTO {} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({}) DO NOTHING",
                    self.name,
                    self.key.join(", ")
                ))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(&format!("TRUNCATE {stage}"))
                    .execute(&mut *tx)
                    .await?;
                inserted
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(Latest {
            table: latest_table,
            key,
            max_ahead,
            order_by,
        }) = &self.latest
        {
            sqlx::query(&create_stage).execute(&mut *tx).await?;
            let mut copy = tx
                .copy_in_raw(&format!("COPY {stage} ({cols}) FROM STDIN"))
                .await?;
            copy.send(latest.as_bytes()).await?;
            copy.finish().await?;
            let updates = self
                .columns
                .iter()
                .filter(|c| &c.name != key)
                .map(|c| format!("{0} = EXCLUDED.{0}", c.name))
                .collect::<Vec<_>>()
                .join(", ");
            sqlx::query(&format!(
                "INSERT INTO {latest_table} ({cols}) SELECT DISTINCT ON ({key}) {cols} FROM {stage} \
                 WHERE {time} <= now() + interval '{ahead} seconds' \
                 ORDER BY {key}, {order_by} DESC \
                 ON CONFLICT ({key}) DO UPDATE SET {updates} WHERE {latest_table}.{order_by} < EXCLUDED.{order_by}",
                time = self.time_column,
                ahead = max_ahead.as_secs()
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }
}

/// Days from `today` to `today + ahead`.
pub fn days_ahead(today: NaiveDate, ahead: u32) -> Vec<NaiveDate> {
    (0..=ahead as u64)
        .filter_map(|d| today.checked_add_days(Days::new(d)))
        .collect()
}

/// Waits until the database answers, for start-up.
pub async fn wait_for(pool: &PgPool, timeout: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match sqlx::query("SELECT 1").execute(pool).await {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not reachable yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let url = Secret::new("postgres://gale:s3cr3t@db:5432/gale");
        assert_eq!(
            redact(
                "cannot connect to postgres://gale:s3cr3t@db:5432/gale",
                &url
            ),
            "cannot connect to postgres://gale:[redacted]@db:5432/gale"
        );
        assert_eq!(
            days_ahead(NaiveDate::from_ymd_opt(2024, 2, 28).unwrap(), 2).len(),
            3
        );
    }
}
