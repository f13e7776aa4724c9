//! From Avro records to rows of Postgres `COPY` text, by column name.
//!
//! A table's columns are read from the database at start; each column is
//! filled from the Avro field of the same name, converted by the column's
//! type (timestamps from `timestamp-millis`, enums as text, records, arrays
//! and maps as JSON for `jsonb`). `kafka_partition` and `kafka_offset` are
//! filled from the record's position. Columns with a default that no field
//! feeds (`stored_at`) are left to the database. This is what lets a new
//! topic be stored with a migration and a config entry instead of code.

use std::fmt::Write as _;

use apache_avro::types::Value;
use chrono::{DateTime, SecondsFormat};

/// How a column's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// text, varchar.
    Text,
    /// smallint, integer, bigint.
    Integer,
    /// real, double precision, numeric.
    Float,
    /// boolean.
    Boolean,
    /// timestamptz, timestamp.
    Timestamp,
    /// json, jsonb.
    Json,
}

impl ColumnType {
    /// From `information_schema.columns.data_type`.
    pub fn from_pg(data_type: &str) -> Option<ColumnType> {
        Some(match data_type {
            // A date arrives as ISO text (`2026-03-29`), which COPY parses.
            "text" | "character varying" | "character" | "uuid" | "date" => ColumnType::Text,
            "smallint" | "integer" | "bigint" => ColumnType::Integer,
            "real" | "double precision" | "numeric" => ColumnType::Float,
            "boolean" => ColumnType::Boolean,
            "timestamp with time zone" | "timestamp without time zone" => ColumnType::Timestamp,
            "json" | "jsonb" => ColumnType::Json,
            _ => return None,
        })
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The Avro field of this name.
    Field(String),
    /// The record's Kafka partition.
    KafkaPartition,
    /// The record's Kafka offset.
    KafkaOffset,
}

/// One column written by `COPY`.
#[derive(Debug, Clone)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// How values are written.
    pub kind: ColumnType,
    /// Where values come from.
    pub source: Source,
}

/// The position of a record, for the Kafka columns.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Why a record cannot become a row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError(pub String);

/// Appends one `COPY` text line for `record` to `out`.
pub fn append_row(
    columns: &[Column],
    record: &Value,
    pos: Position,
    out: &mut String,
) -> Result<(), RowError> {
    let Value::Record(fields) = record else {
        return Err(RowError("value is not an Avro record".into()));
    };
    let start = out.len();
    for (i, col) in columns.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        let result = match &col.source {
            Source::KafkaPartition => {
                let _ = write!(out, "{}", pos.partition);
                Ok(())
            }
            Source::KafkaOffset => {
                let _ = write!(out, "{}", pos.offset);
                Ok(())
            }
            Source::Field(name) => match fields.iter().find(|(n, _)| n == name) {
                Some((_, v)) => write_value(col, v, out),
                None => {
                    out.push_str("\\N");
                    Ok(())
                }
            },
        };
        if let Err(e) = result {
            out.truncate(start);
            return Err(e);
        }
    }
    out.push('\n');
    Ok(())
}

fn write_value(col: &Column, value: &Value, out: &mut String) -> Result<(), RowError> {
    let v = match value {
        Value::Union(_, inner) => inner.as_ref(),
        other => other,
    };
    if matches!(v, Value::Null) {
        out.push_str("\\N");
        return Ok(());
    }
    let mismatch = || {
        RowError(format!(
            "field {} holds {v:?}, which does not fit a {:?} column",
            col.name, col.kind
        ))
    };
    match col.kind {
        ColumnType::Text => match v {
            Value::String(s) | Value::Enum(_, s) => escape(s, out),
            Value::Uuid(u) => escape(&u.to_string(), out),
            other => escape(&to_json(other)?.to_string(), out),
        },
        ColumnType::Integer => match v {
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Long(l) | Value::TimestampMillis(l) | Value::TimestampMicros(l) => {
                let _ = write!(out, "{l}");
            }
            _ => return Err(mismatch()),
        },
        ColumnType::Float => match v {
            Value::Double(d) => finite(*d, col, out)?,
            Value::Float(f) => finite(*f as f64, col, out)?,
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Long(l) => {
                let _ = write!(out, "{l}");
            }
            _ => return Err(mismatch()),
        },
        ColumnType::Boolean => match v {
            Value::Boolean(b) => out.push_str(if *b { "t" } else { "f" }),
            _ => return Err(mismatch()),
        },
        ColumnType::Timestamp => {
            let micros = match v {
                Value::TimestampMillis(ms) | Value::Long(ms) => ms.checked_mul(1000),
                Value::TimestampMicros(us) => Some(*us),
                Value::LocalTimestampMillis(ms) => ms.checked_mul(1000),
                Value::LocalTimestampMicros(us) => Some(*us),
                _ => return Err(mismatch()),
            };
            let t = micros
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(|| {
                    RowError(format!("field {} is not a representable time", col.name))
                })?;
            out.push_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true));
        }
        ColumnType::Json => escape(&to_json(v)?.to_string(), out),
    }
    Ok(())
}

fn finite(v: f64, col: &Column, out: &mut String) -> Result<(), RowError> {
    if v.is_finite() {
        let _ = write!(out, "{v}");
        Ok(())
    } else {
        // Postgres would take NaN, but no dashboard wants it.
        Err(RowError(format!("field {} is {v}", col.name)))
    }
}

fn to_json(v: &Value) -> Result<serde_json::Value, RowError> {
    Ok(match v {
        Value::Null => serde_json::Value::Null,
        Value::Boolean(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Long(l) | Value::TimestampMillis(l) | Value::TimestampMicros(l) => (*l).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f as f64)
            .map(Into::into)
            .unwrap_or_default(),
        Value::Double(d) => serde_json::Number::from_f64(*d)
            .map(Into::into)
            .unwrap_or_default(),
        Value::String(s) | Value::Enum(_, s) => s.clone().into(),
        Value::Union(_, inner) => to_json(inner)?,
        Value::Array(items) => items
            .iter()
            .map(to_json)
            .collect::<Result<Vec<_>, _>>()?
            .into(),
        Value::Map(m) => m
            .iter()
            .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
            .collect::<Result<serde_json::Map<_, _>, RowError>>()?
            .into(),
        Value::Record(fields) => fields
            .iter()
            .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
            .collect::<Result<serde_json::Map<_, _>, RowError>>()?
            .into(),
        other => serde_json::Value::try_from(other.clone()).map_err(|e| RowError(e.to_string()))?,
    })
}

/// `COPY` text escaping.
fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, kind: ColumnType) -> Column {
        Column {
            name: name.into(),
            kind,
            source: Source::Field(name.into()),
        }
    }

    #[test]
    fn record_to_copy_line() {
        let columns = vec![
            col("event_id", ColumnType::Text),
            col("event_time", ColumnType::Timestamp),
            col("power_kw", ColumnType::Float),
            col("quality_score", ColumnType::Integer),
            col("quality_tier", ColumnType::Text),
            col("flags", ColumnType::Json),
            col("site_id", ColumnType::Text),
            col("missing", ColumnType::Text),
            Column {
                name: "kafka_offset".into(),
                kind: ColumnType::Integer,
                source: Source::KafkaOffset,
            },
        ];
        let record = Value::Record(vec![
            ("event_id".into(), Value::String("a\tb\\c\nd".into())),
            (
                "event_time".into(),
                Value::TimestampMillis(1_710_511_200_123),
            ),
            (
                "power_kw".into(),
                Value::Union(1, Box::new(Value::Double(1.25))),
            ),
            ("quality_score".into(), Value::Int(95)),
            ("quality_tier".into(), Value::Enum(0, "PREMIUM".into())),
            (
                "flags".into(),
                Value::Array(vec![Value::Record(vec![(
                    "code".into(),
                    Value::Enum(0, "UNIT_CONVERTED".into()),
                )])]),
            ),
            ("site_id".into(), Value::Union(0, Box::new(Value::Null))),
        ]);
        let mut out = String::new();
        append_row(
            &columns,
            &record,
            Position {
                partition: 2,
                offset: 41,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            "a\\tb\\\\c\\nd\t2024-03-15T14:00:00.123000Z\t1.25\t95\tPREMIUM\t[{\"code\":\"UNIT_CONVERTED\"}]\t\\N\t\\N\t41\n"
        );
    }

    #[test]
    fn mismatches_and_non_finite_values_are_row_errors() {
        let columns = vec![col("n", ColumnType::Integer)];
        let mut out = String::from("keep\n");
        let bad = Value::Record(vec![("n".into(), Value::String("x".into()))]);
        assert!(append_row(
            &columns,
            &bad,
            Position {
                partition: 0,
                offset: 0
            },
            &mut out
        )
        .is_err());
        assert_eq!(out, "keep\n", "a failed row leaves nothing behind");
        let columns = vec![col("f", ColumnType::Float)];
        let nan = Value::Record(vec![("f".into(), Value::Double(f64::NAN))]);
        assert!(append_row(
            &columns,
            &nan,
            Position {
                partition: 0,
                offset: 0
            },
            &mut out
        )
        .is_err());
    }

    #[test]
    fn pg_types_are_recognised() {
        assert_eq!(
            ColumnType::from_pg("timestamp with time zone"),
            Some(ColumnType::Timestamp)
        );
        assert_eq!(ColumnType::from_pg("jsonb"), Some(ColumnType::Json));
        assert_eq!(ColumnType::from_pg("tsvector"), None);
    }
}
