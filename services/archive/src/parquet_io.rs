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
