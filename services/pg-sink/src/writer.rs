//! pg-sink as a runtime [`Sink`]: decode, build rows, write each table's
//! rows in one transaction; on a data error, bisect to find the records
//! Postgres refuses and dead-letter only those.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;

use apache_avro::types::Value;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use gale_runtime::avro::{DecodeError, ValueDecoder};
use gale_runtime::config::Secret;
use gale_runtime::sink::{Outage, Refusal, Sink, SinkRecord};
use sqlx::PgPool;

use crate::db::{self, Table, WriteFailure};
use crate::rows::{self, Position};

/// Writes topics into their tables.
pub struct PgWriter {
    pool: PgPool,
    /// The connection URL, only to remove its password from messages.
    url: Secret,
    tables: HashMap<String, Table>,
    decoder: ValueDecoder,
    durable: BTreeMap<(String, i32), i64>,
    partitions_ahead: u32,
    ahead_done_for: Option<NaiveDate>,
}

struct Row {
    index: usize,
    line: String,
    /// For a table with a newest-row table: the row's key and event time (µs).
    latest: Option<(String, i64)>,
}

/// The newest row per key among `rows`, as COPY text; all of them when a
/// row's key or time is of a type read here only by Postgres (the upsert's
/// `DISTINCT ON` then picks).
fn newest_per_key(rows: &[Row], latest_allowed: i64) -> String {
    let mut newest: HashMap<&str, (i64, &str)> = HashMap::new();
    for r in rows {
        let Some((key, time)) = &r.latest else {
            return rows.iter().map(|r| r.line.as_str()).collect();
        };
        if *time > latest_allowed {
            continue; // from the future: never the newest (Postgres checks too)
        }
        let e = newest.entry(key.as_str()).or_insert((*time, &r.line));
        if *time > e.0 {
            *e = (*time, &r.line);
        }
    }
    newest.values().map(|(_, line)| *line).collect()
}

impl PgWriter {
    /// A writer for `tables` (keyed by topic).
    pub fn new(
        pool: PgPool,
        url: Secret,
        tables: HashMap<String, Table>,
        decoder: ValueDecoder,
        partitions_ahead: u32,
    ) -> Self {
        PgWriter {
            pool,
            url,
            tables,
            decoder,
            durable: BTreeMap::new(),
            partitions_ahead,
            ahead_done_for: None,
        }
    }

    fn outage(&self, failure: WriteFailure) -> Outage {
        let message = match failure {
            WriteFailure::Outage(m) | WriteFailure::Data(m) | WriteFailure::MissingPartition(m) => {
                m
            }
        };
        Outage {
            dependency: "database",
            message: db::redact(&message, &self.url),
        }
    }

    async fn ensure_ahead(&mut self) -> Result<(), WriteFailure> {
        let today = Utc::now().date_naive();
        if self.ahead_done_for == Some(today) {
            return Ok(());
        }
        for table in self.tables.values_mut() {
            let yesterday = today.pred_opt().unwrap_or(today);
            let mut days = db::days_ahead(today, self.partitions_ahead);
            days.push(yesterday);
            table.ensure_partitions(&self.pool, days).await?;
        }
        self.ahead_done_for = Some(today);
        Ok(())
    }
}

fn date_of(record: &Value, column: &str) -> Option<NaiveDate> {
    micros_of(record, column)
        .and_then(DateTime::from_timestamp_micros)
        .map(|t| t.date_naive())
}

/// The value of field `column` of `record`, through a union.
fn field<'a>(record: &'a Value, column: &str) -> Option<&'a Value> {
    let Value::Record(fields) = record else {
        return None;
    };
    match fields.iter().find(|(n, _)| n == column).map(|(_, v)| v)? {
        Value::Union(_, inner) => Some(inner.as_ref()),
        v => Some(v),
    }
}

/// The value of `column` as text (for a newest-row key).
fn text_of(record: &Value, column: &str) -> Option<String> {
    match field(record, column)? {
        Value::String(s) | Value::Enum(_, s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Long(l) => Some(l.to_string()),
        _ => None,
    }
}

/// The value of a time column in µs since the epoch.
fn micros_of(record: &Value, column: &str) -> Option<i64> {
    match field(record, column)? {
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) | Value::Long(ms) => {
            ms.checked_mul(1000)
        }
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => Some(*us),
        Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => Some(ns / 1000),
        Value::Date(days) => i64::from(*days).checked_mul(86_400_000_000),
        _ => None,
    }
}

/// Why rows could not be written as a whole.
enum RowsFailure {
    /// The database is down; retry the batch.
    Outage(WriteFailure),
    /// A day's partition is missing; create it and retry.
    MissingPartition,
}

/// Writes `rows` into `table`; on a data error splits the rows in halves
/// until the refused ones stand alone. Returns the refused rows. A missing
/// partition is reported (to be created) unless `missing_is_data`, when the
/// rows that still have none are refused like bad data.
fn write_rows<'a>(
    pool: &'a PgPool,
    table: &'a Table,
    rows: &'a [Row],
    missing_is_data: bool,
) -> Pin<Box<dyn Future<Output = Result<Vec<Refusal>, RowsFailure>> + Send + 'a>> {
    Box::pin(async move {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let text: String = rows.iter().map(|r| r.line.as_str()).collect();
        let latest = match &table.latest {
            Some(l) => {
                let allowed = chrono::Utc::now().timestamp_micros()
                    + i64::try_from(l.max_ahead.as_micros()).unwrap_or(i64::MAX / 2);
                newest_per_key(rows, allowed)
            }
            None => String::new(),
        };
        match table.write(pool, &text, &latest).await {
            Ok(inserted) => {
                metrics::counter!("gale_pg_rows_total", "table" => table.name.clone(), "outcome" => "inserted")
                    .increment(inserted);
                metrics::counter!("gale_pg_rows_total", "table" => table.name.clone(), "outcome" => "duplicate")
                    .increment(rows.len() as u64 - inserted);
                Ok(Vec::new())
            }
            Err(e @ WriteFailure::Outage(_)) => Err(RowsFailure::Outage(e)),
            Err(WriteFailure::MissingPartition(_)) if !missing_is_data => {
                Err(RowsFailure::MissingPartition)
            }
            Err(WriteFailure::Data(e) | WriteFailure::MissingPartition(e)) if rows.len() == 1 => {
                Ok(vec![Refusal {
                    index: rows[0].index,
                    class: "rejected_by_database",
                    message: format!("table {}: {e}", table.name),
                }])
            }
            Err(WriteFailure::Data(_) | WriteFailure::MissingPartition(_)) => {
                let (left, right) = rows.split_at(rows.len() / 2);
                let mut refused = write_rows(pool, table, left, missing_is_data).await?;
                refused.extend(write_rows(pool, table, right, missing_is_data).await?);
                Ok(refused)
            }
        }
    })
}

#[async_trait]
impl Sink for PgWriter {
    async fn write(&mut self, batch: &[SinkRecord<'_>]) -> Result<Vec<Refusal>, Outage> {
        self.ensure_ahead().await.map_err(|e| self.outage(e))?;
        let mut refused = Vec::new();
        let mut per_table: BTreeMap<&str, (Vec<Row>, BTreeSet<NaiveDate>)> = BTreeMap::new();
        for (index, record) in batch.iter().enumerate() {
            let Some(table) = self.tables.get(record.topic) else {
                continue;
            };
            let value = match self.decoder.decode(record.payload).await {
                Ok((_, v)) => v,
                Err(DecodeError::RegistryUnavailable(e)) => {
                    return Err(Outage {
                        dependency: "registry",
                        message: e,
                    })
                }
                Err(e) => {
                    refused.push(Refusal {
                        index,
                        class: e.class(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let mut line = String::with_capacity(512);
            let pos = Position {
                partition: record.partition,
                offset: record.offset,
            };
            match rows::append_row(&table.columns, &value, pos, &mut line) {
                Ok(()) => {
                    let entry = per_table.entry(record.topic).or_default();
                    if let Some(day) = date_of(&value, &table.time_column) {
                        entry.1.insert(day);
                    }
                    // Picked here only when time orders the rows; otherwise
                    // every row goes and Postgres picks by the order column.
                    let latest = table
                        .latest
                        .as_ref()
                        .filter(|l| l.order_by == table.time_column)
                        .and_then(|l| {
                            Some((
                                text_of(&value, &l.key)?,
                                micros_of(&value, &table.time_column)?,
                            ))
                        });
                    entry.0.push(Row {
                        index,
                        line,
                        latest,
                    });
                }
                Err(e) => refused.push(Refusal {
                    index,
                    class: "unmappable",
                    message: format!("table {}: {}", table.name, e.0),
                }),
            }
        }
        for (topic, (rows, days)) in per_table {
            let mut missing_is_data = false;
            loop {
                let table = self.tables.get_mut(topic).expect("grouped by known topics");
                if let Err(e) = table.ensure_partitions(&self.pool, days.clone()).await {
                    return Err(self.outage(e));
                }
                let table = &self.tables[topic];
                match write_rows(&self.pool, table, &rows, missing_is_data).await {
                    Ok(r) => {
                        refused.extend(r);
                        break;
                    }
                    Err(RowsFailure::Outage(e)) => return Err(self.outage(e)),
                    Err(RowsFailure::MissingPartition) => {
                        tracing::warn!(table = %table.name, "a partition is missing; creating it again");
                        self.tables
                            .get_mut(topic)
                            .expect("known")
                            .forget_partitions();
                        missing_is_data = true;
                    }
                }
            }
        }
        for r in batch {
            let next = self
                .durable
                .entry((r.topic.to_string(), r.partition))
                .or_insert(0);
            *next = (*next).max(r.offset + 1);
        }
        Ok(refused)
    }

    /// Nothing is buffered; keeps the partitions ahead of today even while
    /// no records arrive.
    async fn flush(&mut self, _force: bool) -> Result<(), Outage> {
        self.ensure_ahead().await.map_err(|e| self.outage(e))
    }

    fn durable_offsets(&mut self) -> Vec<(String, i32, i64)> {
        std::mem::take(&mut self.durable)
            .into_iter()
            .map(|((t, p), o)| (t, p, o))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: &str, latest: Option<(&str, i64)>) -> Row {
        Row {
            index: 0,
            line: format!("{line}\n"),
            latest: latest.map(|(k, t)| (k.to_string(), t)),
        }
    }

    #[test]
    fn newest_row_per_key_is_picked() {
        let rows = [
            row("a1", Some(("A", 1))),
            row("b5", Some(("B", 5))),
            row("a3", Some(("A", 3))),
            row("a2", Some(("A", 2))),
        ];
        let mut lines: Vec<&str> = Vec::new();
        let text = newest_per_key(&rows, i64::MAX);
        lines.extend(text.lines());
        lines.sort();
        assert_eq!(lines, ["a3", "b5"]);
        // A row from beyond the allowed time is never the newest.
        assert_eq!(newest_per_key(&rows[..3], 2), "a1\n");
        // A row whose key could not be read: every row, Postgres picks.
        let rows = [row("a1", Some(("A", 1))), row("x", None)];
        assert_eq!(newest_per_key(&rows, i64::MAX), "a1\nx\n");
    }
}
