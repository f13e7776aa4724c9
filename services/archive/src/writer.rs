//! The archive as a runtime [`Sink`]: Avro records decoded straight into
//! Arrow by `arrow-avro`, split by Hive partition, buffered per Kafka
//! partition and written as Parquet when a buffer is big or old enough.
//!
//! The effectively-once protocol, per Kafka partition:
//!
//! 1. records below the checkpoint's `next_offset` are already in the lake
//!    and are skipped;
//! 2. a flush first records its offset range as `pending` in the checkpoint,
//!    then writes each file (complete before it is visible: one PUT or an
//!    atomic rename), its manifest, and finally the checkpoint with the new
//!    `next_offset`; only then are Kafka offsets stored;
//! 3. after a crash, a `pending` range is rebuilt exactly (the buffer is
//!    sealed at its end even if more records arrive), so the same file names
//!    are written again and no row appears twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use async_trait::async_trait;
use gale_runtime::avro::{split_wire, DecodeError, Registry};
use gale_runtime::sink::{Outage, Refusal, Sink, SinkRecord};
use gale_runtime::storage::Location;
use object_store::ObjectStoreExt;

use crate::config::{Settings, TableConfig};
use crate::layout::{self, Checkpoint, HiveKey, Manifest, PendingRange};
use crate::parquet_io;

fn store_outage(e: impl std::fmt::Display) -> Outage {
    Outage {
        dependency: "object_store",
        message: e.to_string(),
    }
}

fn registry_outage(e: impl std::fmt::Display) -> Outage {
    Outage {
        dependency: "registry",
        message: e.to_string(),
    }
}

struct Group {
    batches: Vec<RecordBatch>,
    rows: usize,
    min_ts: i64,
    max_ts: i64,
}

struct Buffer {
    first: i64,
    last: i64,
    groups: BTreeMap<HiveKey, Group>,
    bytes: usize,
    opened: Instant,
    writer_ids: BTreeSet<u32>,
}

impl Buffer {
    fn new(first: i64) -> Self {
        Buffer {
            first,
            last: first,
            groups: BTreeMap::new(),
            bytes: 0,
            opened: Instant::now(),
            writer_ids: BTreeSet::new(),
        }
    }
}

struct PartitionState {
    checkpoint: Checkpoint,
    /// Buffers that must be written as they are (a pending range), oldest first.
    sealed: Vec<Buffer>,
    open: Option<Buffer>,
    /// Highest offset handled (archived, buffered or dead-lettered).
    seen: i64,
}

struct TableState {
    config: TableConfig,
    /// Schema the rows are read into, and so the files' schema.
    reader: Option<(u32, String)>,
    writers: SchemaStore,
    known: BTreeSet<u32>,
    partitions: HashMap<i32, PartitionState>,
}

/// Writes topics into the lake.
pub struct Archive {
    location: Location,
    settings: Settings,
    registry: Registry,
    tables: HashMap<String, TableState>,
    durable: BTreeMap<(String, i32), i64>,
}

impl Archive {
    /// An archive writing `settings.tables` to `location`.
    pub fn new(location: Location, settings: Settings, registry: Registry) -> Self {
        let tables = settings
            .tables
            .iter()
            .map(|t| {
                (
                    t.topic.clone(),
                    TableState {
                        config: t.clone(),
                        reader: None,
                        writers: SchemaStore::new_with_type(FingerprintAlgorithm::Id),
                        known: BTreeSet::new(),
                        partitions: HashMap::new(),
                    },
                )
            })
            .collect();
        Archive {
            location,
            settings,
            registry,
            tables,
            durable: BTreeMap::new(),
        }
    }

    fn table_path(&self, table: &TableConfig, rel: &str) -> object_store::path::Path {
        self.location
            .child(&format!("{}/{rel}", table.path.trim_matches('/')))
    }

    async fn load_checkpoint(
        &self,
        table: &TableConfig,
        partition: i32,
    ) -> Result<Checkpoint, Outage> {
        let path = self.table_path(table, &layout::checkpoint_path(&table.topic, partition));
        match self.location.store.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(store_outage)?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| store_outage(format!("checkpoint {path} is unreadable: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Checkpoint::default()),
            Err(e) => Err(store_outage(e)),
        }
    }

    async fn save_checkpoint(
        &self,
        table: &TableConfig,
        partition: i32,
        c: &Checkpoint,
    ) -> Result<(), Outage> {
        let path = self.table_path(table, &layout::checkpoint_path(&table.topic, partition));
        let body = serde_json::to_vec_pretty(c).expect("checkpoint serialises");
        self.location
            .store
            .put(&path, body.into())
            .await
            .map_err(store_outage)?;
        Ok(())
    }

    /// Makes sure `table` knows its reader schema and every writer schema in `ids`.
    async fn learn_schemas(
        &mut self,
        topic: &str,
        ids: &BTreeSet<u32>,
    ) -> Result<BTreeMap<u32, String>, Outage> {
        let mut unusable = BTreeMap::new();
        let registry = self.registry.clone();
        let state = self.tables.get_mut(topic).expect("known topic");
        if state.reader.is_none() {
            match registry.latest_value_schema(topic).await {
                Ok(latest) => state.reader = Some(latest),
                Err(gale_runtime::Error::Registry {
                    retriable: true,
                    message,
                    ..
                }) => return Err(registry_outage(message)),
                Err(e) => {
                    // No subject for the topic (e.g. written under another
                    // naming strategy): read records as the first writer wrote them.
                    tracing::warn!(topic, error = %e, "no latest schema for the topic; using the first writer schema");
                }
            }
        }
        for id in ids {
            if state.known.contains(id) {
                continue;
            }
            match registry.schema_text(*id).await {
                Ok(text) => {
                    state
                        .writers
                        .set(Fingerprint::Id(*id), AvroSchema::new(text.clone()))
                        .map_err(|e| registry_outage(format!("schema {id}: {e}")))?;
                    state.known.insert(*id);
                    if state.reader.is_none() {
                        state.reader = Some((*id, text));
                    }
                }
                Err(DecodeError::RegistryUnavailable(e)) => return Err(registry_outage(e)),
                Err(e) => {
                    unusable.insert(*id, e.to_string());
                }
            }
        }
        Ok(unusable)
    }
}

/// Decodes Confluent-framed `payloads` into batches; the indices of the
/// payloads that could not be decoded come back with the reason.
fn decode(
    state: &TableState,
    payloads: &[&[u8]],
) -> (Vec<RecordBatch>, Vec<usize>, Vec<(usize, String)>) {
    let mut bad: Vec<(usize, String)> = Vec::new();
    'attempt: loop {
        let Some((_, reader_text)) = &state.reader else {
            return (
                Vec::new(),
                Vec::new(),
                (0..payloads.len())
                    .map(|i| (i, "no schema".to_string()))
                    .collect(),
            );
        };
        let builder = ReaderBuilder::new()
            .with_reader_schema(AvroSchema::new(reader_text.clone()))
            .with_writer_schema_store(state.writers.clone())
            .with_batch_size(payloads.len().max(1));
        let mut decoder = match builder.build_decoder() {
            Ok(d) => d,
            Err(e) => {
                return (
                    Vec::new(),
                    Vec::new(),
                    (0..payloads.len())
                        .map(|i| (i, format!("cannot read as the table schema: {e}")))
                        .collect(),
                );
            }
        };
        let mut batches = Vec::new();
        let mut rows = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            if bad.iter().any(|(b, _)| *b == i) {
                continue;
            }
            let mut result = decoder.decode(p);
            if matches!(result, Ok(0)) && decoder.capacity() == 0 {
                match decoder.flush() {
                    Ok(Some(b)) => batches.push(b),
                    Ok(None) => {}
                    Err(e) => {
                        bad.push((i, e.to_string()));
                        continue 'attempt;
                    }
                }
                result = decoder.decode(p);
            }
            match result {
                Ok(n) if n == p.len() => rows.push(i),
                Ok(n) => {
                    bad.push((
                        i,
                        format!(
                            "record has {} bytes the schema does not account for",
                            p.len() - n
                        ),
                    ));
                    continue 'attempt;
                }
                Err(e) => {
                    bad.push((i, e.to_string()));
                    continue 'attempt;
                }
            }
        }
        match decoder.flush() {
            Ok(Some(b)) => batches.push(b),
            Ok(None) => {}
            Err(e) => {
                // Cannot tell which row; refuse the last one and retry.
                let last = *rows.last().unwrap_or(&0);
                bad.push((last, e.to_string()));
                continue 'attempt;
            }
        }
        return (batches, rows, bad);
    }
}

/// Event times (ms) of `field` in `batch`, if it is a timestamp or long column.
fn event_times(batch: &RecordBatch, field: &str) -> Vec<Option<i64>> {
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

/// Values of `field` as text, for extra partition levels.
fn texts(batch: &RecordBatch, field: &str) -> Vec<String> {
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

/// A buffer taken out for writing.
struct Due {
    topic: String,
    partition: i32,
    /// Taken from the sealed list (else it was the open buffer).
    sealed: bool,
    buffer: Buffer,
}

/// One Hive partition's rows of a buffer as a Parquet file. Partition
/// columns are left out (Hive convention: they live in the path, or readers
/// see them twice with two types).
fn encode_group(
    batches: &[RecordBatch],
    drop: &[String],
    codec: crate::config::Codec,
    row_group_rows: usize,
) -> Result<Vec<u8>, String> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new()); // no rows, no file
    };
    let merged = concat_batches(&first.schema(), batches).map_err(|e| e.to_string())?;
    let merged = without_columns(merged, drop)?;
    parquet_io::encode(merged.schema(), &[merged], codec, row_group_rows)
}

/// Types whose values a Hive path segment holds without loss: text, enums
/// (dictionaries of text), integers and booleans.
fn is_path_type(t: &DataType) -> bool {
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

/// `batch` without the columns named in `drop`.
fn without_columns(batch: RecordBatch, drop: &[String]) -> Result<RecordBatch, String> {
    if drop.is_empty() {
        return Ok(batch);
    }
    let keep: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        // Only columns whose values made the path (text, enums, numbers); a
        // field that cannot be a path segment stays in the file.
        .filter(|(_, f)| !(drop.iter().any(|d| d == f.name()) && is_path_type(f.data_type())))
        .map(|(i, _)| i)
        .collect();
    batch.project(&keep).map_err(|e| e.to_string())
}

/// Appends the Kafka partition and offset of each row as columns.
fn with_position(
    batch: RecordBatch,
    partition: i32,
    offsets: &[i64],
) -> Result<RecordBatch, String> {
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        "kafka_partition",
        DataType::Int32,
        false,
    )));
    fields.push(Arc::new(Field::new("kafka_offset", DataType::Int64, false)));
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        batch.schema().metadata().clone(),
    ));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(Int32Array::from(vec![partition; offsets.len()])));
    columns.push(Arc::new(Int64Array::from(offsets.to_vec())));
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

#[async_trait]
impl Sink for Archive {
    async fn write(&mut self, batch: &[SinkRecord<'_>]) -> Result<Vec<Refusal>, Outage> {
        let mut refused = Vec::new();
        // Group by (topic, partition), keeping offset order.
        let mut groups: BTreeMap<(&str, i32), Vec<usize>> = BTreeMap::new();
        for (i, r) in batch.iter().enumerate() {
            if self.tables.contains_key(r.topic) {
                groups.entry((r.topic, r.partition)).or_default().push(i);
            }
        }
        // First everything that needs I/O (checkpoints, schemas), so that an
        // outage leaves no trace of this batch.
        for &(topic, partition) in groups.keys() {
            let needs = !self.tables[topic].partitions.contains_key(&partition);
            if needs {
                let config = self.tables[topic].config.clone();
                let checkpoint = self.load_checkpoint(&config, partition).await?;
                if let Some(p) = checkpoint.pending {
                    tracing::info!(
                        topic,
                        partition,
                        from = p.from,
                        to = p.to,
                        "rebuilding an interrupted flush"
                    );
                }
                self.tables
                    .get_mut(topic)
                    .expect("known")
                    .partitions
                    .insert(
                        partition,
                        PartitionState {
                            seen: checkpoint.next_offset - 1,
                            checkpoint,
                            sealed: Vec::new(),
                            open: None,
                        },
                    );
            }
        }
        let mut unusable: HashMap<&str, BTreeMap<u32, String>> = HashMap::new();
        for (&(topic, _), indices) in &groups {
            let ids: BTreeSet<u32> = indices
                .iter()
                .filter_map(|&i| split_wire(batch[i].payload).ok().map(|(id, _)| id))
                .collect();
            let bad = self.learn_schemas(topic, &ids).await?;
            unusable.entry(topic).or_default().extend(bad);
        }

        for ((topic, partition), indices) in groups {
            let state = self.tables.get_mut(topic).expect("known topic");
            let skip_below = state.partitions[&partition].checkpoint.next_offset;
            let mut accepted: Vec<usize> = Vec::new();
            for i in indices {
                let r = &batch[i];
                if r.offset < skip_below {
                    continue; // already in the lake
                }
                match split_wire(r.payload) {
                    Err(e) => refused.push(Refusal {
                        index: i,
                        class: e.class(),
                        message: e.to_string(),
                    }),
                    Ok((id, _)) => match unusable.get(topic).and_then(|u| u.get(&id)) {
                        Some(why) => refused.push(Refusal {
                            index: i,
                            class: "schema",
                            message: why.clone(),
                        }),
                        None => accepted.push(i),
                    },
                }
            }
            let payloads: Vec<&[u8]> = accepted.iter().map(|&i| batch[i].payload).collect();
            let (batches, rows, bad) = decode(state, &payloads);
            for (k, why) in bad {
                refused.push(Refusal {
                    index: accepted[k],
                    class: "deserialization",
                    message: why,
                });
            }
            let part = state.partitions.get_mut(&partition).expect("loaded above");
            if let Some(last) = batch
                .iter()
                .filter(|r| r.topic == topic && r.partition == partition)
                .map(|r| r.offset)
                .max()
            {
                part.seen = part.seen.max(last);
            }
            // Rows come back in payload order, batch after batch.
            let mut row_iter = rows.into_iter();
            for b in batches {
                let n = b.num_rows();
                let idx: Vec<usize> = row_iter.by_ref().take(n).map(|k| accepted[k]).collect();
                let offsets: Vec<i64> = idx.iter().map(|&i| batch[i].offset).collect();
                // A buffer's size is the Avro bytes it holds: Arrow's own
                // accounting of many small batches is dominated by per-array
                // allocations and would roll tiny files under light traffic.
                let sizes: Vec<usize> = idx.iter().map(|&i| batch[i].payload.len()).collect();
                let b = match with_position(b, partition, &offsets) {
                    Ok(b) => b,
                    Err(e) => {
                        // Refused rather than retried: a retry would meet
                        // the same rows again and buffer what went before twice.
                        refused.extend(idx.iter().map(|&i| Refusal {
                            index: i,
                            class: "internal",
                            message: format!("cannot add the Kafka position columns: {e}"),
                        }));
                        continue;
                    }
                };
                let times = event_times(&b, &state.config.time_field);
                let extras: Vec<Vec<String>> = state
                    .config
                    .partition_by
                    .iter()
                    .map(|f| texts(&b, f))
                    .collect();
                let writer_ids: Vec<u32> = idx
                    .iter()
                    .map(|&i| split_wire(batch[i].payload).map(|(id, _)| id).unwrap_or(0))
                    .collect();
                // Walk rows in offset order, sealing at a pending range's end.
                let mut run: BTreeMap<HiveKey, Vec<u32>> = BTreeMap::new();
                let mut run_bounds: Option<(i64, i64)> = None;
                let flush_run = |part: &mut PartitionState,
                                 run: &mut BTreeMap<HiveKey, Vec<u32>>,
                                 bounds: &mut Option<(i64, i64)>,
                                 ids: &BTreeSet<u32>|
                 -> Result<(), String> {
                    let Some((first, last)) = bounds.take() else {
                        return Ok(());
                    };
                    let buffer = part.open.get_or_insert_with(|| Buffer::new(first));
                    buffer.last = buffer.last.max(last);
                    buffer.writer_ids.extend(ids.iter().copied());
                    for (key, rows) in std::mem::take(run) {
                        let taken = take_record_batch(&b, &UInt32Array::from(rows.clone()))
                            .map_err(|e| e.to_string())?;
                        let ts: Vec<i64> = rows.iter().filter_map(|&r| times[r as usize]).collect();
                        let g = buffer.groups.entry(key).or_insert(Group {
                            batches: Vec::new(),
                            rows: 0,
                            min_ts: i64::MAX,
                            max_ts: i64::MIN,
                        });
                        g.rows += taken.num_rows();
                        g.min_ts = ts.iter().copied().min().unwrap_or(g.min_ts).min(g.min_ts);
                        g.max_ts = ts.iter().copied().max().unwrap_or(g.max_ts).max(g.max_ts);
                        buffer.bytes += rows.iter().map(|&r| sizes[r as usize]).sum::<usize>();
                        g.batches.push(taken);
                    }
                    Ok(())
                };
                let ids: BTreeSet<u32> = writer_ids.iter().copied().collect();
                for (row, &offset) in offsets.iter().enumerate() {
                    let pending_end = part.checkpoint.pending.map(|p| p.to);
                    if let Some(end) = pending_end {
                        let open_last = run_bounds
                            .map(|(_, l)| l)
                            .or(part.open.as_ref().map(|o| o.last));
                        if offset > end && open_last.is_some_and(|l| l <= end) {
                            flush_run(part, &mut run, &mut run_bounds, &ids)
                                .map_err(store_outage)?;
                            if let Some(done) = part.open.take() {
                                part.sealed.push(done);
                            }
                            part.checkpoint.pending = None;
                        }
                    }
                    let ts = times[row].or(batch[idx[row]].timestamp_ms).unwrap_or(0);
                    let key_extras = state
                        .config
                        .partition_by
                        .iter()
                        .cloned()
                        .zip(extras.iter().map(|e| e[row].clone()))
                        .collect();
                    let key = HiveKey::of(ts, key_extras)
                        .unwrap_or_else(|| HiveKey::of(0, Vec::new()).expect("epoch"));
                    run.entry(key).or_default().push(row as u32);
                    run_bounds = Some(match run_bounds {
                        None => (offset, offset),
                        Some((f, _)) => (f, offset),
                    });
                }
                flush_run(part, &mut run, &mut run_bounds, &ids).map_err(store_outage)?;
            }
        }
        Ok(refused)
    }

    async fn flush(&mut self, force: bool) -> Result<(), Outage> {
        let max_bytes = self.settings.max_file_bytes;
        let max_age = self.settings.max_file_age;
        // Take every buffer that is due, oldest first per partition.
        let mut due: Vec<Due> = Vec::new();
        for (topic, state) in self.tables.iter_mut() {
            for (&partition, part) in state.partitions.iter_mut() {
                for buffer in part.sealed.drain(..) {
                    due.push(Due {
                        topic: topic.clone(),
                        partition,
                        sealed: true,
                        buffer,
                    });
                }
                let open_due = part.open.as_ref().is_some_and(|open| {
                    let replaying = part.checkpoint.pending.is_some_and(|p| open.last < p.to);
                    let due = force || open.bytes >= max_bytes || open.opened.elapsed() >= max_age;
                    due && !replaying
                });
                if open_due {
                    due.push(Due {
                        topic: topic.clone(),
                        partition,
                        sealed: false,
                        buffer: part.open.take().expect("checked"),
                    });
                }
            }
        }
        // Encoding is the CPU-heavy part: the files of as many buffers as
        // there are cores at once, on the blocking pool; then their writes,
        // in order. What fails stays buffered for the next attempt.
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut due = std::collections::VecDeque::from(due);
        while !due.is_empty() {
            let chunk: Vec<Due> = due.drain(..parallel.min(due.len())).collect();
            let encodings: Vec<Vec<_>> = chunk
                .iter()
                .map(|d| {
                    let config = &self.tables[&d.topic].config;
                    d.buffer
                        .groups
                        .values()
                        .map(|group| {
                            let batches = group.batches.clone();
                            let drop = config.partition_by.clone();
                            let (codec, rows) =
                                (self.settings.compression, self.settings.row_group_rows);
                            tokio::task::spawn_blocking(move || {
                                encode_group(&batches, &drop, codec, rows)
                            })
                        })
                        .collect()
                })
                .collect();
            let mut chunk = chunk.into_iter();
            for files in encodings {
                let d = chunk.next().expect("one encoding per buffer");
                let mut encoded = Vec::with_capacity(files.len());
                let mut failed = None;
                for f in files {
                    match f
                        .await
                        .map_err(store_outage)
                        .and_then(|r| r.map_err(store_outage))
                    {
                        Ok(bytes) => encoded.push(bytes),
                        Err(e) => failed = failed.or(Some(e)),
                    }
                }
                let result = match failed {
                    None => {
                        self.write_files(&d.topic, d.partition, &d.buffer, encoded)
                            .await
                    }
                    Some(e) => Err(e),
                };
                if let Err(e) = result {
                    let rest: Vec<Due> = std::iter::once(d).chain(chunk).chain(due).collect();
                    self.put_back(rest);
                    return Err(e);
                }
            }
        }
        // Nothing buffered: everything seen so far is handled.
        for (topic, state) in &self.tables {
            for (&partition, part) in &state.partitions {
                if part.open.is_none() && part.sealed.is_empty() {
                    let next = (part.seen + 1).max(part.checkpoint.next_offset);
                    if next > 0 {
                        self.durable.insert((topic.clone(), partition), next);
                    }
                }
            }
        }
        Ok(())
    }

    fn durable_offsets(&mut self) -> Vec<(String, i32, i64)> {
        std::mem::take(&mut self.durable)
            .into_iter()
            .map(|((t, p), o)| (t, p, o))
            .collect()
    }

    fn revoked(&mut self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            if let Some(t) = self.tables.get_mut(topic) {
                if t.partitions.remove(partition).is_some() {
                    tracing::info!(topic, partition, "partition revoked; dropping its buffer");
                }
            }
        }
    }

    fn flush_interval(&self) -> std::time::Duration {
        (self.settings.max_file_age / 4).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(5),
        )
    }
}

impl Archive {
    /// Returns buffers taken for writing to their partitions, in order.
    fn put_back(&mut self, buffers: Vec<Due>) {
        for d in buffers.into_iter().rev() {
            let part = self
                .tables
                .get_mut(&d.topic)
                .expect("known")
                .partitions
                .get_mut(&d.partition)
                .expect("known");
            if d.sealed {
                part.sealed.insert(0, d.buffer);
            } else {
                part.open = Some(d.buffer);
            }
        }
    }

    async fn write_files(
        &mut self,
        topic: &str,
        partition: i32,
        buffer: &Buffer,
        encoded: Vec<Vec<u8>>,
    ) -> Result<(), Outage> {
        let state = &self.tables[topic];
        let config = state.config.clone();
        let schema_id = state.reader.as_ref().map(|(id, _)| *id).unwrap_or(0);
        let intent = Checkpoint {
            next_offset: buffer.first,
            pending: Some(PendingRange {
                from: buffer.first,
                to: buffer.last,
            }),
        };
        self.save_checkpoint(&config, partition, &intent).await?;
        let stem = layout::file_stem(topic, partition, buffer.first, buffer.last);
        let mut rows = 0;
        for ((key, group), bytes) in buffer.groups.iter().zip(encoded) {
            if bytes.is_empty() {
                continue;
            }
            let dir = key.path();
            let data = self.table_path(&config, &format!("{dir}/{stem}.parquet"));
            let size = bytes.len();
            self.location
                .store
                .put(&data, bytes.into())
                .await
                .map_err(store_outage)?;
            let manifest = Manifest {
                file: format!("{stem}.parquet"),
                records: group.rows,
                min_event_time: layout::rfc3339(group.min_ts),
                max_event_time: layout::rfc3339(group.max_ts),
                topic: topic.to_string(),
                partition,
                first_offset: buffer.first,
                last_offset: buffer.last,
                writer_schema_ids: buffer.writer_ids.iter().copied().collect(),
                schema_id,
                compression: self.settings.compression.name().into(),
                written_at: layout::rfc3339(chrono::Utc::now().timestamp_millis()),
                compacted_from: Vec::new(),
            };
            let body = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
            self.location
                .store
                .put(
                    &self.table_path(&config, &format!("{dir}/_{stem}.json")),
                    body.into(),
                )
                .await
                .map_err(store_outage)?;
            rows += group.rows;
            metrics::counter!("gale_archive_files_total", "table" => config.path.clone())
                .increment(1);
            metrics::counter!("gale_archive_bytes_total", "table" => config.path.clone())
                .increment(size as u64);
        }
        metrics::counter!("gale_archive_rows_total", "table" => config.path.clone())
            .increment(rows as u64);
        let done = Checkpoint {
            next_offset: buffer.last + 1,
            pending: None,
        };
        self.save_checkpoint(&config, partition, &done).await?;
        let part = self
            .tables
            .get_mut(topic)
            .expect("known")
            .partitions
            .get_mut(&partition)
            .expect("known");
        part.checkpoint = done;
        self.durable
            .insert((topic.to_string(), partition), buffer.last + 1);
        tracing::debug!(
            topic,
            partition,
            first = buffer.first,
            last = buffer.last,
            rows,
            files = buffer.groups.len(),
            "flushed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ListArray, StringArray};
    use arrow::datatypes::Int32Type;

    #[test]
    fn partition_columns_leave_the_file_only_when_they_made_the_path() {
        let kind: ArrayRef = Arc::new(StringArray::from(vec!["METER", "TURBINE"]));
        let tags: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1)]),
            None,
        ]));
        let power: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let batch =
            RecordBatch::try_from_iter([("kind", kind), ("tags", tags), ("power", power)]).unwrap();
        let out = without_columns(batch.clone(), &["kind".into(), "tags".into()]).unwrap();
        let names: Vec<String> = out
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        // A list cannot be a path segment: it stays.
        assert_eq!(names, ["tags", "power"]);
        assert_eq!(texts(&batch, "kind"), ["METER", "TURBINE"]);
        assert_eq!(without_columns(batch.clone(), &[]).unwrap(), batch);
    }
}
