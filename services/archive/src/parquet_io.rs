//! Parquet encoding and decoding in memory, shared by the archive, compaction
//! and the benchmark baseline.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::config::Codec;

/// Writer properties for `codec` and `row_group_rows`.
pub fn properties(codec: Codec, row_group_rows: usize) -> WriterProperties {
    let compression = match codec {
        Codec::Snappy => Compression::SNAPPY,
        Codec::Zstd => Compression::ZSTD(ZstdLevel::default()),
        Codec::None => Compression::UNCOMPRESSED,
    };
    WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build()
}

/// A complete Parquet file holding `batches` (all of `schema`).
pub fn encode(
    schema: SchemaRef,
    batches: &[RecordBatch],
    codec: Codec,
    row_group_rows: usize,
) -> Result<Vec<u8>, String> {
    let mut writer = ArrowWriter::try_new(
        Vec::with_capacity(1 << 20),
        schema,
        Some(properties(codec, row_group_rows)),
    )
    .map_err(|e| e.to_string())?;
    for b in batches {
        writer.write(b).map_err(|e| e.to_string())?;
    }
    writer.into_inner().map_err(|e| e.to_string())
}

/// Every batch of a Parquet file.
pub fn decode(bytes: Bytes) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| e.to_string())?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok((schema, batches))
}

/// The values of text column `column` of a Parquet file as ids, reading
/// only that column (and `kafka_partition`, when `of_partition` keeps only
/// the rows of one Kafka partition, as in compacted files).
pub fn read_ids(
    bytes: Bytes,
    column: &str,
    of_partition: Option<i32>,
) -> Result<Vec<crate::dedupe::IdKey>, String> {
    use arrow::array::{Array, AsArray};
    use parquet::arrow::ProjectionMask;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    let fields = builder.parquet_schema().columns();
    let wanted: Vec<usize> = fields
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let name = c.path().string();
            name == column || (of_partition.is_some() && name == "kafka_partition")
        })
        .map(|(i, _)| i)
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mask = ProjectionMask::leaves(builder.parquet_schema(), wanted);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let Some(ids) = batch.column_by_name(column) else {
            continue;
        };
        let Some(ids) = ids.as_string_opt::<i32>() else {
            return Err(format!("column {column} is not text"));
        };
        let partitions = batch
            .column_by_name("kafka_partition")
            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int32Type>().cloned());
        for i in 0..ids.len() {
            if ids.is_null(i) {
                continue;
            }
            if let (Some(want), Some(p)) = (of_partition, &partitions) {
                if p.value(i) != want {
                    continue;
                }
            }
            out.push(crate::dedupe::IdKey::of(ids.value(i)));
        }
    }
    Ok(out)
}
