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
use gale_runtime::sink::{Outage, Refusal, Sink, SinkRecord};
use sqlx::PgPool;

use crate::db::{self, Table, WriteFailure};
use crate::rows::{self, Position};

/// Writes topics into their tables.
pub struct PgWriter {
    pool: PgPool,
    tables: HashMap<String, Table>,
    decoder: ValueDecoder,
    durable: BTreeMap<(String, i32), i64>,
    partitions_ahead: u32,
    ahead_done_for: Option<NaiveDate>,
}

struct Row {
    index: usize,
    line: String,
}

impl PgWriter {
    /// A writer for `tables` (keyed by topic).
    pub fn new(
        pool: PgPool,
        tables: HashMap<String, Table>,
        decoder: ValueDecoder,
        partitions_ahead: u32,
    ) -> Self {
        PgWriter {
            pool,
            tables,
            decoder,
            durable: BTreeMap::new(),
            partitions_ahead,
            ahead_done_for: None,
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

fn outage(message: String) -> Outage {
    Outage {
        dependency: "database",
        message,
    }
}

fn time_of(record: &Value, column: &str) -> Option<NaiveDate> {
    let Value::Record(fields) = record else {
        return None;
    };
    let v = fields.iter().find(|(n, _)| n == column).map(|(_, v)| v)?;
    let v = match v {
        Value::Union(_, inner) => inner.as_ref(),
        v => v,
    };
    let micros = match v {
        Value::TimestampMillis(ms) | Value::Long(ms) => ms.checked_mul(1000)?,
        Value::TimestampMicros(us) => *us,
        _ => return None,
    };
    DateTime::from_timestamp_micros(micros).map(|t| t.date_naive())
}

/// Writes `rows` into `table`; on a data error splits the rows in halves
/// until the refused ones stand alone. Returns the refused rows.
fn write_rows<'a>(
    pool: &'a PgPool,
    table: &'a Table,
    rows: &'a [Row],
) -> Pin<Box<dyn Future<Output = Result<Vec<Refusal>, Outage>> + Send + 'a>> {
    Box::pin(async move {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let text: String = rows.iter().map(|r| r.line.as_str()).collect();
        match table.write(pool, &text).await {
            Ok(inserted) => {
                metrics::counter!("gale_pg_rows_total", "table" => table.name.clone(), "outcome" => "inserted")
                    .increment(inserted);
                metrics::counter!("gale_pg_rows_total", "table" => table.name.clone(), "outcome" => "duplicate")
                    .increment(rows.len() as u64 - inserted);
                Ok(Vec::new())
            }
            Err(WriteFailure::Outage(e)) => Err(outage(e)),
            Err(WriteFailure::Data(e)) if rows.len() == 1 => Ok(vec![Refusal {
                index: rows[0].index,
                class: "rejected_by_database",
                message: format!("table {}: {e}", table.name),
            }]),
            Err(WriteFailure::Data(_)) => {
                let (left, right) = rows.split_at(rows.len() / 2);
                let mut refused = write_rows(pool, table, left).await?;
                refused.extend(write_rows(pool, table, right).await?);
                Ok(refused)
            }
        }
    })
}

#[async_trait]
impl Sink for PgWriter {
    async fn write(&mut self, batch: &[SinkRecord<'_>]) -> Result<Vec<Refusal>, Outage> {
        self.ensure_ahead().await.map_err(|e| match e {
            WriteFailure::Outage(m) | WriteFailure::Data(m) => outage(m),
        })?;
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
                    if let Some(day) = time_of(&value, &table.time_column) {
                        entry.1.insert(day);
                    }
                    entry.0.push(Row { index, line });
                }
                Err(e) => refused.push(Refusal {
                    index,
                    class: "unmappable",
                    message: format!("table {}: {}", table.name, e.0),
                }),
            }
        }
        for (topic, (rows, days)) in per_table {
            let table = self.tables.get_mut(topic).expect("grouped by known topics");
            table
                .ensure_partitions(&self.pool, days)
                .await
                .map_err(|e| match e {
                    WriteFailure::Outage(m) | WriteFailure::Data(m) => outage(m),
                })?;
            let table = &self.tables[topic];
            refused.extend(write_rows(&self.pool, table, &rows).await?);
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

    fn durable_offsets(&mut self) -> Vec<(String, i32, i64)> {
        std::mem::take(&mut self.durable)
            .into_iter()
            .map(|((t, p), o)| (t, p, o))
            .collect()
    }
}
