//! Confluent-framed Avro payloads into Arrow, and the row values the lake
//! layout needs (event times, partition columns).
//!
//! `arrow-avro` decodes records into one batch at a time; one undecodable
//! record would poison the rows decoded with it. The decoder is rebuilt
//! after a bad record and only the rows of the current chunk are decoded
//! again, so a batch full of poison costs what a clean one does, not the
//! square of its length.

use arrow::array::{
    Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, SchemaStore};

/// Rows decoded into one Arrow batch before it is flushed.
const CHUNK: usize = 1024;

/// What became of a slice of payloads.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The rows, in payload order.
    pub batches: Vec<RecordBatch>,
    /// For each row (across `batches`), the index of its payload.
    pub rows: Vec<usize>,
    /// Payloads that could not be decoded, with the reason.
    pub bad: Vec<(usize, String)>,
}

/// Decodes `payloads` (Confluent wire format) into `reader` schema rows,
/// resolving each against its writer schema in `writers`.
pub fn decode(reader: &str, writers: &SchemaStore, payloads: &[&[u8]]) -> Decoded {
    let build = || {
        ReaderBuilder::new()
            .with_reader_schema(AvroSchema::new(reader.to_string()))
            .with_writer_schema_store(writers.clone())
            .with_batch_size(CHUNK)
            .build_decoder()
    };
    let mut out = Decoded::default();
    let mut decoder = match build() {
        Ok(d) => d,
        Err(e) => {
            out.bad = (0..payloads.len())
                .map(|i| (i, format!("cannot read as the table schema: {e}")))
                .collect();
            return out;
        }
    };
    // Payload indices decoded into `decoder` and not flushed yet.
    let mut chunk: Vec<usize> = Vec::with_capacity(CHUNK);
    for (i, payload) in payloads.iter().enumerate() {
        if chunk.len() == CHUNK {
            flush(&mut decoder, &mut chunk, payloads, &build, &mut out);
        }
        match one(&mut decoder, payload) {
            Ok(()) => chunk.push(i),
            Err(why) => {
                out.bad.push((i, why));
                // The decoder may hold half of the bad record: start afresh
                // and decode the chunk's good records again.
                let Ok(fresh) = build() else {
                    let rest = chunk.iter().copied().chain(i + 1..payloads.len());
                    out.bad
                        .extend(rest.map(|j| (j, "the decoder cannot be rebuilt".to_string())));
                    out.bad.sort_by_key(|(i, _)| *i);
                    return out;
                };
                decoder = fresh;
                let again = std::mem::take(&mut chunk);
                for j in again {
                    match one(&mut decoder, payloads[j]) {
                        Ok(()) => chunk.push(j),
                        Err(why) => out.bad.push((j, why)),
                    }
                }
            }
        }
    }
    flush(&mut decoder, &mut chunk, payloads, &build, &mut out);
    out.bad.sort_by_key(|(i, _)| *i);
    out
}

/// Decodes one payload, all of it.
fn one(decoder: &mut Decoder, payload: &[u8]) -> Result<(), String> {
    match decoder.decode(payload) {
        Ok(n) if n == payload.len() => Ok(()),
        Ok(n) => Err(format!(
            "record has {} bytes the schema does not account for",
            payload.len() - n
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Flushes the chunk into a batch; if that fails, finds the culprit by
/// decoding the chunk's records one batch each.
fn flush<B>(
    decoder: &mut Decoder,
    chunk: &mut Vec<usize>,
    payloads: &[&[u8]],
    build: &B,
    out: &mut Decoded,
) where
    B: Fn() -> Result<Decoder, arrow::error::ArrowError>,
{
    if chunk.is_empty() {
        return;
    }
    match decoder.flush() {
        Ok(Some(b)) => {
            out.batches.push(b);
            out.rows.append(chunk);
            return;
        }
        Ok(None) => {
            chunk.clear();
            return;
        }
        Err(_) => {}
    }
    for j in std::mem::take(chunk) {
        let Ok(mut single) = build() else {
            out.bad.push((j, "decoder unavailable".into()));
            continue;
        };
        let result = one(&mut single, payloads[j]).and_then(|()| {
            single
                .flush()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "no row decoded".to_string())
        });
        match result {
            Ok(b) => {
                out.batches.push(b);
                out.rows.push(j);
            }
            Err(why) => out.bad.push((j, why)),
        }
    }
    if let Ok(d) = build() {
        *decoder = d;
    }
}

/// Event times (ms) of `field` in `batch`, if it is a timestamp or long column.
pub fn event_times(batch: &RecordBatch, field: &str) -> Vec<Option<i64>> {
    let Some(col) = batch.column_by_name(field) else {
        return vec![None; batch.num_rows()];
    };
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let a = col
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .expect("type checked");
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i)))
                .collect()
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let a = col
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .expect("type checked");
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i) / 1000))
                .collect()
        }
        DataType::Int64 => {
            let a = col
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("type checked");
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i)))
                .collect()
        }
        _ => vec![None; batch.num_rows()],
    }
}

/// Types whose values a Hive path segment holds without loss: text, enums
/// (dictionaries of text), integers and booleans.
pub fn is_path_type(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(_, values) => is_path_type(values),
        t => {
            t.is_integer()
                || matches!(
                    t,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean
                )
        }
    }
}

/// Values of `field` as text, for extra partition levels.
pub fn texts(batch: &RecordBatch, field: &str) -> Vec<String> {
    let Some(col) = batch.column_by_name(field) else {
        return vec![String::new(); batch.num_rows()];
    };
    if !is_path_type(col.data_type()) {
        tracing::warn!(field, data_type = %col.data_type(), "a partition_by field of this type cannot be a path segment; its rows go to the default partition and the field stays in the files");
        return vec![String::new(); batch.num_rows()];
    }
    match cast(col, &DataType::Utf8) {
        Ok(a) => {
            let a = a
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8")
                .clone();
            (0..a.len())
                .map(|i| {
                    if a.is_valid(i) {
                        a.value(i).to_string()
                    } else {
                        String::new()
                    }
                })
                .collect()
        }
        Err(e) => {
            tracing::warn!(field, error = %e, "a partition_by field cannot be a path segment; its rows go to the default partition and the field stays in the files");
            vec![String::new(); batch.num_rows()]
        }
    }
}
