//! The archive as a runtime [`Sink`]: Avro records decoded straight into
//! Arrow by `arrow-avro`, buffered per Kafka partition and written as
//! Parquet, one file per table partition, when a buffer is big or old
//! enough, or when all buffers together reach the memory bound (the largest
//! go first).
//!
//! The effectively-once protocol, per Kafka partition:
//!
//! 1. records below the checkpoint's `next_offset` are already in the lake
//!    and are skipped; the runtime hands records over contiguously from
//!    there (re-reading the partition if the group is further on);
//! 2. a flush first records its offset range as `pending` in the checkpoint,
//!    then writes each file (complete before it is visible: one PUT or an
//!    atomic rename), its manifest, and finally the checkpoint with the new
//!    `next_offset`; only then are Kafka offsets stored;
//! 3. after a crash, a `pending` range is rebuilt exactly (the buffer starts
//!    at its first offset and is sealed at its last even if more records
//!    arrive), so the same file names are written again and no row appears
//!    twice.
//!
//! Rows repeated upstream are written once per table partition (see
//! [`crate::dedupe`]). A buffer holds the decoded batches as they came
//! (plus each row's table partition); it is cut into files only when it is
//! written, so a backfill spanning thousands of hours costs its rows, not
//! thousands of small batches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use async_trait::async_trait;
use futures::TryStreamExt;
use gale_runtime::avro::{split_wire, DecodeError, Registry};
use gale_runtime::sink::{Outage, Refusal, Sink, SinkRecord};
use gale_runtime::storage::Location;
use gale_runtime::telemetry::{self, Batch, MessagingTracer, TraceParent, MAX_LINKS};
use object_store::ObjectStoreExt;

use crate::config::{Settings, TableConfig};
use crate::decode::{self, is_path_type};
use crate::dedupe::{self, IdKey, IdSet, Index};
use crate::fence::{self, Written};
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

/// One table partition's share of a buffer.
#[derive(Debug, Clone)]
struct Group {
    key: HiveKey,
    rows: usize,
}

/// Records of one Kafka partition waiting to be written.
#[derive(Clone)]
struct Buffer {
    first: i64,
    last: i64,
    /// Decoded rows (with their Kafka position columns), in offset order.
    batches: Vec<RecordBatch>,
    /// For each batch, the group of each of its rows.
    row_groups: Vec<Vec<u32>>,
    groups: Vec<Group>,
    group_of: HashMap<HiveKey, u32>,
    /// Avro bytes held: decides when a file is big enough.
    bytes: usize,
    /// Arrow bytes held: counts against the memory bound.
    memory: usize,
    opened: Instant,
    writer_ids: BTreeSet<u32>,
    /// Trace contexts of the first records (only while spans are exported):
    /// the file write's span links to them.
    links: Vec<TraceParent>,
}

impl Buffer {
    fn new(first: i64) -> Self {
        Buffer {
            first,
            last: first,
            batches: Vec::new(),
            row_groups: Vec::new(),
            groups: Vec::new(),
            group_of: HashMap::new(),
            bytes: 0,
            memory: 0,
            opened: Instant::now(),
            writer_ids: BTreeSet::new(),
            links: Vec::new(),
        }
    }

    /// Appends `batch`, whose rows belong to `keys`, last offset `last`.
    fn push(&mut self, batch: RecordBatch, keys: Vec<HiveKey>, last: i64, avro_bytes: usize) {
        let mut of_row = Vec::with_capacity(keys.len());
        for key in keys {
            let g = match self.group_of.get(&key) {
                Some(g) => *g,
                None => {
                    let g = self.groups.len() as u32;
                    self.group_of.insert(key.clone(), g);
                    self.groups.push(Group { key, rows: 0 });
                    g
                }
            };
            self.groups[g as usize].rows += 1;
            of_row.push(g);
        }
        self.memory += batch.get_array_memory_size() + of_row.len() * 4;
        self.bytes += avro_bytes;
        self.last = self.last.max(last);
        self.batches.push(batch);
        self.row_groups.push(of_row);
    }
}

struct PartitionState {
    checkpoint: Checkpoint,
    /// What this archive last saw of the checkpoint object (for fenced writes).
    fence: fence::Seen,
    /// Buffers that must be written as they are (a pending range), oldest first.
    sealed: Vec<Buffer>,
    open: Option<Buffer>,
    /// Highest offset handled (archived, buffered, skipped or dead-lettered).
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
    /// Ids already written, per table partition and Kafka partition.
    index: Index,
    /// Kafka partitions another archive took over (its checkpoint write
    /// fenced ours): their records are left to it until they are revoked.
    fenced: BTreeSet<(String, i32)>,
    /// This archive, as written into the checkpoints it claims.
    owner: String,
    /// The service's tracer and consumer group, for the spans of file
    /// writes (see [`Sink::use_tracer`]).
    tracer: Option<(MessagingTracer, String)>,
}

/// A buffer taken out for writing.
struct Due {
    topic: String,
    partition: i32,
    /// Taken from the sealed list (else it was the open buffer).
    sealed: bool,
    buffer: Buffer,
}

/// One table partition of a buffer, ready to be written.
struct Encoded {
    key: HiveKey,
    bytes: Vec<u8>,
    rows: usize,
    min_ts: i64,
    max_ts: i64,
    /// Ids written (for the index).
    ids: Vec<IdKey>,
    /// Rows left out as repeats.
    repeats: usize,
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
            fenced: BTreeSet::new(),
            owner: format!(
                "{}/{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "host".into()),
                std::process::id()
            ),
            index: Index::new(settings.dedupe_memory_ids),
            location,
            settings,
            registry,
            tables,
            durable: BTreeMap::new(),
            tracer: None,
        }
    }

    fn table_path(&self, table: &TableConfig, rel: &str) -> object_store::path::Path {
        self.location
            .child(&format!("{}/{rel}", table.path.trim_matches('/')))
    }

    fn checkpoint_at(&self, table: &TableConfig, partition: i32) -> object_store::path::Path {
        self.table_path(table, &layout::checkpoint_path(&table.topic, partition))
    }

    /// Writes `c` as the checkpoint of `topic`/`partition` if this archive
    /// still owns it. `Ok(false)`: another archive took it over; the
    /// partition is dropped here.
    async fn save_checkpoint(
        &mut self,
        topic: &str,
        partition: i32,
        c: &Checkpoint,
    ) -> Result<bool, Outage> {
        let Some(state) = self.tables.get(topic) else {
            return Ok(false);
        };
        let Some(part) = state.partitions.get(&partition) else {
            return Ok(false);
        };
        let path = self.checkpoint_at(&state.config, partition);
        let mut c = c.clone();
        c.owner = Some(self.owner.clone());
        match fence::store(&self.location, &path, &c, &part.fence).await {
            Written::Ok(seen) => {
                if let Some(part) = self
                    .tables
                    .get_mut(topic)
                    .and_then(|t| t.partitions.get_mut(&partition))
                {
                    part.fence = seen;
                }
                Ok(true)
            }
            Written::Failed(e) => Err(store_outage(e)),
            Written::Fenced(why) => {
                tracing::warn!(topic, partition, reason = %why, "another archive owns this partition now; dropping it here");
                metrics::counter!("gale_archive_fenced_total").increment(1);
                if let Some(t) = self.tables.get_mut(topic) {
                    t.partitions.remove(&partition);
                }
                self.index.forget(topic, partition);
                self.durable.remove(&(topic.to_string(), partition));
                self.fenced.insert((topic.to_string(), partition));
                Ok(false)
            }
        }
    }

    /// Loads the checkpoint of a Kafka partition seen for the first time.
    async fn ensure_partition(&mut self, topic: &str, partition: i32) -> Result<(), Outage> {
        let Some(state) = self.tables.get(topic) else {
            return Ok(());
        };
        if state.partitions.contains_key(&partition) {
            return Ok(());
        }
        let config = state.config.clone();
        let path = self.checkpoint_at(&config, partition);
        // Load and claim: whoever claimed last owns the partition, and an
        // owner that lost it without noticing is fenced at its next write.
        let mut attempt = 0;
        let (checkpoint, seen) = loop {
            let (mut checkpoint, seen) = fence::load(&self.location, &path)
                .await
                .map_err(store_outage)?;
            checkpoint.owner = Some(self.owner.clone());
            match fence::store(&self.location, &path, &checkpoint, &seen).await {
                Written::Ok(claimed) => break (checkpoint, claimed),
                Written::Failed(e) => return Err(store_outage(e)),
                Written::Fenced(why) if attempt < 3 => {
                    attempt += 1;
                    tracing::debug!(topic, partition, reason = %why, "checkpoint changed while claiming; reading it again");
                }
                Written::Fenced(why) => return Err(store_outage(why)),
            }
        };
        self.fenced.remove(&(topic.to_string(), partition));
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
                    fence: seen,
                    sealed: Vec::new(),
                    open: None,
                },
            );
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

    /// The ids already written to the table partition `key` from Kafka
    /// partition `partition`, from memory or, the first time, from the
    /// partition's files that the checkpoint covers (those before `before`).
    async fn known_ids(
        &mut self,
        config: &TableConfig,
        partition: i32,
        key: &HiveKey,
        before: i64,
    ) -> Result<Arc<IdSet>, Outage> {
        let slot = (config.topic.clone(), partition, key.clone());
        if let Some(set) = self.index.get(&slot) {
            return Ok(set);
        }
        let dir = self.table_path(config, &key.path());
        let objects: Vec<object_store::ObjectMeta> = self
            .location
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(store_outage)?;
        let mut set = IdSet::new();
        let own = layout::file_stem(&config.topic, partition, 0, 0);
        let own_prefix = layout::parse_stem(&own)
            .map(|(prefix, _, _)| prefix.to_string())
            .unwrap_or_default();
        for o in objects {
            let name = o.location.filename().unwrap_or_default().to_string();
            let Some(stem) = name.strip_suffix(".parquet") else {
                continue;
            };
            if name.starts_with('_') || o.location.prefix_match(&dir).map(|p| p.count()) != Some(1)
            {
                continue; // manifests; deeper partition levels
            }
            let compacted = stem.starts_with("part-compacted-");
            if !compacted {
                // Only this Kafka partition's files, and only what the
                // checkpoint says is in the lake (not a flush being rebuilt).
                match layout::parse_stem(stem) {
                    Some((prefix, _, last)) if prefix == own_prefix && last < before => {}
                    _ => continue,
                }
            }
            let bytes = self
                .location
                .store
                .get(&o.location)
                .await
                .map_err(store_outage)?
                .bytes()
                .await
                .map_err(store_outage)?;
            let column = config.dedupe_key.clone();
            let ids = tokio::task::spawn_blocking(move || {
                parquet_io::read_ids(bytes, &column, compacted.then_some(partition))
            })
            .await
            .map_err(store_outage)?;
            match ids {
                Ok(ids) => set.extend(ids),
                Err(e) => {
                    tracing::warn!(file = %o.location, error = %e, "cannot read the ids of a lake file; its rows are not deduplicated against")
                }
            }
        }
        self.index.insert(slot.clone(), set);
        Ok(self.index.get(&slot).unwrap_or_default())
    }
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

/// What encoding a buffer needs besides the buffer.
#[derive(Clone)]
struct EncodeSpec {
    drop: Vec<String>,
    time_field: String,
    dedupe_key: String,
    codec: crate::config::Codec,
    row_group_rows: usize,
}

/// Cuts `buffer` into one Parquet file per table partition, leaving out
/// rows whose id `known` (per group) already holds or that repeat within
/// the file. Partition columns are left out (Hive convention: they live in
/// the path, or readers see them twice with two types).
fn encode_buffer(
    buffer: &Buffer,
    known: &[Arc<IdSet>],
    spec: &EncodeSpec,
) -> Result<Vec<Encoded>, String> {
    let Some(first) = buffer.batches.first() else {
        return Ok(Vec::new());
    };
    let all = concat_batches(&first.schema(), &buffer.batches).map_err(|e| e.to_string())?;
    let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); buffer.groups.len()];
    let mut row = 0u32;
    for groups in &buffer.row_groups {
        for g in groups {
            rows_of[*g as usize].push(row);
            row += 1;
        }
    }
    let mut out = Vec::with_capacity(buffer.groups.len());
    for ((group, rows), known) in buffer.groups.iter().zip(rows_of).zip(known) {
        let taken = take_record_batch(&all, &UInt32Array::from(rows)).map_err(|e| e.to_string())?;
        let (kept, ids, repeats) = if spec.dedupe_key.is_empty() {
            (taken, Vec::new(), 0)
        } else {
            dedupe::drop_repeats(&taken, &spec.dedupe_key, known)?
        };
        let times: Vec<i64> = decode::event_times(&kept, &spec.time_field)
            .into_iter()
            .flatten()
            .collect();
        let rows = kept.num_rows();
        let bytes = if rows == 0 {
            Vec::new() // every row was a repeat: no file
        } else {
            let kept = without_columns(kept, &spec.drop)?;
            parquet_io::encode(kept.schema(), &[kept], spec.codec, spec.row_group_rows)?
        };
        out.push(Encoded {
            key: group.key.clone(),
            bytes,
            rows,
            min_ts: times.iter().copied().min().unwrap_or(0),
            max_ts: times.iter().copied().max().unwrap_or(0),
            ids,
            repeats,
        });
    }
    Ok(out)
}

#[async_trait]
impl Sink for Archive {
    async fn open_partition(&mut self, topic: &str, partition: i32) -> Result<Option<i64>, Outage> {
        self.ensure_partition(topic, partition).await?;
        Ok(self
            .tables
            .get(topic)
            .and_then(|t| t.partitions.get(&partition))
            .map(|p| p.checkpoint.next_offset)
            .filter(|o| *o > 0))
    }

    async fn write(&mut self, batch: &[SinkRecord<'_>]) -> Result<Vec<Refusal>, Outage> {
        let mut refused = Vec::new();
        // Group by (topic, partition), keeping offset order.
        let mut groups: BTreeMap<(&str, i32), Vec<usize>> = BTreeMap::new();
        for (i, r) in batch.iter().enumerate() {
            if self.tables.contains_key(r.topic)
                && !self.fenced.contains(&(r.topic.to_string(), r.partition))
            {
                groups.entry((r.topic, r.partition)).or_default().push(i);
            }
        }
        // First everything that needs I/O (checkpoints, schemas), so that an
        // outage leaves no trace of this batch.
        for &(topic, partition) in groups.keys() {
            self.ensure_partition(topic, partition).await?;
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
            let decoded = match &state.reader {
                Some((_, reader)) => {
                    let writers = &state.writers;
                    gale_runtime::blocking(|| decode::decode(reader, writers, &payloads))
                }
                None => decode::Decoded {
                    bad: (0..payloads.len())
                        .map(|i| (i, "no schema".to_string()))
                        .collect(),
                    ..Default::default()
                },
            };
            for (k, why) in decoded.bad {
                refused.push(Refusal {
                    index: accepted[k],
                    class: "deserialization",
                    message: why,
                });
            }
            let config = state.config.clone();
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
            let mut row_iter = decoded.rows.into_iter();
            for b in decoded.batches {
                let n = b.num_rows();
                let idx: Vec<usize> = row_iter.by_ref().take(n).map(|k| accepted[k]).collect();
                let offsets: Vec<i64> = idx.iter().map(|&i| batch[i].offset).collect();
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
                let times = decode::event_times(&b, &config.time_field);
                let extras: Vec<Vec<String>> = config
                    .partition_by
                    .iter()
                    .map(|f| decode::texts(&b, f))
                    .collect();
                let keys: Vec<HiveKey> = (0..n)
                    .map(|row| {
                        let ts = times[row].or(batch[idx[row]].timestamp_ms).unwrap_or(0);
                        let key_extras = config
                            .partition_by
                            .iter()
                            .cloned()
                            .zip(extras.iter().map(|e| e[row].clone()))
                            .collect();
                        HiveKey::at(ts, config.partitioning, key_extras)
                            .or_else(|| HiveKey::at(0, config.partitioning, Vec::new()))
                            .expect("the epoch has a partition")
                    })
                    .collect();
                let writer_ids: BTreeSet<u32> = idx
                    .iter()
                    .map(|&i| split_wire(batch[i].payload).map(|(id, _)| id).unwrap_or(0))
                    .collect();
                // Cut at a pending range's end: that range is rebuilt as
                // one buffer, exactly, so its files get their old names.
                let mut start = 0;
                while start < n {
                    let pending = part.checkpoint.pending;
                    let stop = match pending {
                        Some(p) if offsets[start] <= p.to => {
                            offsets.partition_point(|o| *o <= p.to)
                        }
                        _ => n,
                    };
                    if let Some(p) = pending {
                        if offsets[start] > p.to {
                            // The range is complete: seal it as it was.
                            let mut done = part.open.take().unwrap_or_else(|| Buffer::new(p.from));
                            done.first = p.from;
                            done.last = p.to;
                            part.sealed.push(done);
                            part.checkpoint.pending = None;
                            continue;
                        }
                    }
                    let buffer = part.open.get_or_insert_with(|| {
                        Buffer::new(pending.map_or(offsets[start], |p| p.from))
                    });
                    buffer.writer_ids.extend(writer_ids.iter().copied());
                    let slice = b.slice(start, stop - start);
                    let avro: usize = idx[start..stop]
                        .iter()
                        .map(|&i| batch[i].payload.len())
                        .sum();
                    for &i in &idx[start..stop] {
                        telemetry::keep_link(&mut buffer.links, batch[i].traceparent, MAX_LINKS);
                    }
                    buffer.push(slice, keys[start..stop].to_vec(), offsets[stop - 1], avro);
                    start = stop;
                }
            }
            // The pending range may end with records that were all refused.
            if let Some(p) = part.checkpoint.pending {
                if part.seen > p.to {
                    let mut done = part.open.take().unwrap_or_else(|| Buffer::new(p.from));
                    done.first = p.from;
                    done.last = p.to;
                    part.sealed.push(done);
                    part.checkpoint.pending = None;
                }
            }
        }
        Ok(refused)
    }

    async fn flush(&mut self, force: bool) -> Result<(), Outage> {
        let max_bytes = self.settings.max_file_bytes;
        let max_age = self.settings.max_file_age;
        // Over the memory bound: the largest open buffers go early, until
        // half the bound is free again.
        let mut early: BTreeSet<(String, i32)> = BTreeSet::new();
        let held: usize = self
            .tables
            .values()
            .flat_map(|t| t.partitions.values())
            .flat_map(|p| p.open.iter().chain(p.sealed.iter()))
            .map(|b| b.memory)
            .sum();
        if held > self.settings.max_buffer_bytes {
            let mut sizes: Vec<(usize, String, i32)> = self
                .tables
                .iter()
                .flat_map(|(topic, t)| {
                    t.partitions.iter().filter_map(move |(p, s)| {
                        s.open.as_ref().map(|b| (b.memory, topic.clone(), *p))
                    })
                })
                .collect();
            sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
            let mut freed = 0;
            for (size, topic, partition) in sizes {
                if held - freed <= self.settings.max_buffer_bytes / 2 {
                    break;
                }
                freed += size;
                early.insert((topic, partition));
            }
            metrics::counter!("gale_archive_memory_flushes_total").increment(early.len() as u64);
            tracing::debug!(
                held,
                buffers = early.len(),
                "buffers over the memory bound; writing the largest early"
            );
        }
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
                    let due = force
                        || open.bytes >= max_bytes
                        || open.opened.elapsed() >= max_age
                        || early.contains(&(topic.clone(), partition));
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
        // Encoding is the CPU-heavy part: as many buffers as there are cores
        // at once, on the blocking pool; then their writes, in order. What
        // fails stays buffered for the next attempt.
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut due = std::collections::VecDeque::from(due);
        while !due.is_empty() {
            let chunk: Vec<Due> = due.drain(..parallel.min(due.len())).collect();
            let mut tasks = Vec::with_capacity(chunk.len());
            let mut failed: Option<Outage> = None;
            let mut chunk = chunk.into_iter();
            let mut taken: Vec<Due> = Vec::new();
            for d in chunk.by_ref() {
                let config = self.tables[&d.topic].config.clone();
                let mut known = Vec::with_capacity(d.buffer.groups.len());
                if !config.dedupe_key.is_empty() {
                    for g in &d.buffer.groups {
                        match self
                            .known_ids(&config, d.partition, &g.key, d.buffer.first)
                            .await
                        {
                            Ok(set) => known.push(set),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                } else {
                    let none = Arc::new(IdSet::new());
                    known = (0..d.buffer.groups.len()).map(|_| none.clone()).collect();
                }
                if failed.is_some() {
                    taken.push(d);
                    break;
                }
                let spec = EncodeSpec {
                    drop: config.partition_by.clone(),
                    time_field: config.time_field.clone(),
                    dedupe_key: config.dedupe_key.clone(),
                    codec: self.settings.compression,
                    row_group_rows: self.settings.row_group_rows,
                };
                let buffer = Arc::new(d.buffer);
                let task_buffer = buffer.clone();
                tasks.push((
                    Due {
                        topic: d.topic,
                        partition: d.partition,
                        sealed: d.sealed,
                        buffer: Buffer::new(0),
                    },
                    buffer,
                    tokio::task::spawn_blocking(move || encode_buffer(&task_buffer, &known, &spec)),
                ));
            }
            let mut results = Vec::with_capacity(tasks.len());
            for (d, buffer, task) in tasks {
                let encoded = task
                    .await
                    .map_err(store_outage)
                    .and_then(|r| r.map_err(store_outage));
                // The task has finished, so this is normally the only handle.
                let buffer = Arc::try_unwrap(buffer).unwrap_or_else(|b| (*b).clone());
                results.push((Due { buffer, ..d }, encoded));
            }
            let mut results = results.into_iter();
            for (d, encoded) in results.by_ref() {
                let written = match (&failed, encoded) {
                    (None, Ok(files)) => {
                        self.write_files(&d.topic, d.partition, &d.buffer, files)
                            .await
                    }
                    (Some(e), _) => Err(e.clone()),
                    (None, Err(e)) => Err(e),
                };
                if let Err(e) = written {
                    let rest: Vec<Due> = std::iter::once(d)
                        .chain(results.map(|(d, _)| d))
                        .chain(taken)
                        .chain(chunk)
                        .chain(due)
                        .collect();
                    self.put_back(rest);
                    return Err(e);
                }
            }
            if let Some(e) = failed {
                let rest: Vec<Due> = taken.into_iter().chain(chunk).chain(due).collect();
                self.put_back(rest);
                return Err(e);
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
            self.index.forget(topic, *partition);
            self.durable.remove(&(topic.clone(), *partition));
            self.fenced.remove(&(topic.clone(), *partition));
        }
    }

    fn use_tracer(&mut self, tracer: &MessagingTracer, group: &str) {
        self.tracer = Some((tracer.clone(), group.to_string()));
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
            let Some(part) = self
                .tables
                .get_mut(&d.topic)
                .and_then(|t| t.partitions.get_mut(&d.partition))
            else {
                continue; // revoked meanwhile
            };
            if d.sealed {
                part.sealed.insert(0, d.buffer);
            } else {
                part.open = Some(d.buffer);
            }
        }
    }

    /// Writes one buffer's files, as one `flush <topic>` span (when spans
    /// are exported) linked to the first records' contexts.
    async fn write_files(
        &mut self,
        topic: &str,
        partition: i32,
        buffer: &Buffer,
        encoded: Vec<Encoded>,
    ) -> Result<(), Outage> {
        let span = self.tracer.as_ref().and_then(|(tracer, group)| {
            tracer.batch(
                &Batch {
                    operation: "flush",
                    operation_type: "process",
                    topic,
                    partition: Some(partition),
                    group: Some(group),
                    count: buffer.groups.iter().map(|g| g.rows).sum(),
                },
                buffer.links.iter().copied(),
            )
        });
        let result = self
            .write_buffer_files(topic, partition, buffer, encoded)
            .await;
        if let Some(span) = span {
            span.end(result.as_ref().err().map(|e| e.message.as_str()));
        }
        result
    }

    async fn write_buffer_files(
        &mut self,
        topic: &str,
        partition: i32,
        buffer: &Buffer,
        encoded: Vec<Encoded>,
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
            ..Default::default()
        };
        if !self.save_checkpoint(topic, partition, &intent).await? {
            return Ok(()); // fenced: its new owner writes this range
        }
        let stem = layout::file_stem(topic, partition, buffer.first, buffer.last);
        let mut rows = 0;
        let mut repeats = 0;
        let mut files = 0;
        let mut written_ids = Vec::new();
        for file in encoded {
            repeats += file.repeats;
            if file.bytes.is_empty() {
                continue;
            }
            let dir = file.key.path();
            let data = self.table_path(&config, &format!("{dir}/{stem}.parquet"));
            let size = file.bytes.len();
            self.location
                .store
                .put(&data, file.bytes.into())
                .await
                .map_err(store_outage)?;
            let manifest = Manifest {
                file: format!("{stem}.parquet"),
                records: file.rows,
                min_event_time: layout::rfc3339(file.min_ts),
                max_event_time: layout::rfc3339(file.max_ts),
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
            rows += file.rows;
            files += 1;
            written_ids.push((file.key, file.ids));
            metrics::counter!("gale_archive_bytes_total", "table" => config.path.clone())
                .increment(size as u64);
        }
        metrics::counter!("gale_archive_files_total", "table" => config.path.clone())
            .increment(files);
        metrics::counter!("gale_archive_rows_total", "table" => config.path.clone())
            .increment(rows as u64);
        metrics::counter!("gale_archive_repeats_total", "table" => config.path.clone())
            .increment(repeats as u64);
        let done = Checkpoint {
            next_offset: buffer.last + 1,
            pending: None,
            ..Default::default()
        };
        if !self.save_checkpoint(topic, partition, &done).await? {
            return Ok(());
        }
        for (key, ids) in written_ids {
            self.index.extend(&(topic.to_string(), partition, key), ids);
        }
        let Some(part) = self
            .tables
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(&partition))
        else {
            return Ok(()); // revoked while writing: its next owner goes on from here
        };
        part.checkpoint.next_offset = done.next_offset;
        part.checkpoint.pending = None;
        self.durable
            .insert((topic.to_string(), partition), buffer.last + 1);
        tracing::debug!(
            topic,
            partition,
            first = buffer.first,
            last = buffer.last,
            rows,
            repeats,
            files,
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
        assert_eq!(decode::texts(&batch, "kind"), ["METER", "TURBINE"]);
        assert_eq!(without_columns(batch.clone(), &[]).unwrap(), batch);
    }

    #[test]
    fn a_buffer_is_cut_into_one_file_per_table_partition_without_repeats() {
        let day = |d: u32| HiveKey {
            date: chrono::NaiveDate::from_ymd_opt(2024, 1, d).unwrap(),
            hour: 0,
            granularity: crate::layout::Granularity::Day,
            extras: vec![],
        };
        let rows = |ids: &[&str], times: &[i64]| {
            let id: ArrayRef = Arc::new(StringArray::from(ids.to_vec()));
            let t: ArrayRef = Arc::new(Int64Array::from(times.to_vec()));
            RecordBatch::try_from_iter([("event_id", id), ("event_time", t)]).unwrap()
        };
        let mut b = Buffer::new(0);
        b.push(rows(&["a", "b"], &[10, 20]), vec![day(1), day(2)], 1, 10);
        b.push(
            rows(&["a", "c", "k"], &[10, 11, 12]),
            vec![day(1), day(1), day(1)],
            4,
            10,
        );
        assert_eq!(b.groups.len(), 2);
        let known_day1: IdSet = [IdKey::of("k")].into_iter().collect();
        let spec = EncodeSpec {
            drop: vec![],
            time_field: "event_time".into(),
            dedupe_key: "event_id".into(),
            codec: crate::config::Codec::Snappy,
            row_group_rows: 100,
        };
        let out =
            encode_buffer(&b, &[Arc::new(known_day1), Arc::new(IdSet::new())], &spec).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].rows, out[0].repeats),
            (2, 2),
            "a once, c; the second a and k dropped"
        );
        assert_eq!((out[0].min_ts, out[0].max_ts), (10, 11));
        assert_eq!(out[1].rows, 1);
        let (_, batches) = parquet_io::decode(bytes::Bytes::from(out[0].bytes.clone())).unwrap();
        let ids: Vec<String> = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .iter()
            .map(|v| v.unwrap().to_string())
            .collect();
        assert_eq!(ids, ["a", "c"]);
    }
}
