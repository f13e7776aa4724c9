//! `gale backfill`: re-publishes a time range of the lake into its topic.
//!
//! Topics keep days; the lake keeps years. When a sink must be rebuilt or a
//! stage rerun on data the topic no longer holds, the readings come back
//! from the bronze (raw) or silver (validated, quarantined) tables with
//! their original `event_id`s, so sinks that upsert by event id do not
//! duplicate. Records get the broker's time, not their event time: a
//! record older than the topic's retention would otherwise be deleted
//! before the stages read it (event time is in the value, where Gale reads it).
//!
//! Files are read in a fixed order (partition, Kafka partition, first
//! offset; only the live files of the manifests, so compaction never shows
//! a row twice). Progress is a checkpoint object in the lake itself
//! (`<table>/_gale_backfill/<name>.json`, skipped by lake readers like every
//! `_` name), written after the records it covers are acknowledged: an
//! interrupted run resumes where it stopped, a finished one sends only
//! files archived into the range since (late data), and on S3 the
//! checkpoint survives the machine that ran it. A file compaction merged
//! from files all published already counts as published.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use gale_archive::layout::{parse_stem, HiveKey};
use gale_model::{RawReading, ScoredReading, QUARANTINED_READING, RAW_READING, VALIDATED_READING};
use gale_runtime::avro::{Encoder, Registry};
use gale_runtime::config::RegistryConfig;
use gale_runtime::schema::SchemaFile;
use gale_runtime::storage::Location;
use object_store::{ObjectStoreExt, PutPayload};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

/// Records published between checkpoints at most.
const CHECKPOINT_RECORDS: u64 = 1000;
/// Time between checkpoints at most.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Header naming the lake file a backfilled record came from.
pub const BACKFILL_SOURCE: &str = "gale.backfill.source";

/// `gale backfill` options (the lake itself is `--store`/`--option`, see main).
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// Table: bronze/raw_readings, silver/validated_readings or silver/quarantined_readings.
    #[arg(long, default_value = "bronze/raw_readings")]
    pub table: String,
    /// Topic to publish to; default: the table's (gale.raw, gale.validated, gale.quarantine).
    #[arg(long)]
    pub topic: Option<String>,
    /// First event time (RFC 3339, a UTC date, or a duration ago).
    #[arg(long, value_parser = crate::timearg::parse)]
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    #[arg(long, value_parser = crate::timearg::parse)]
    pub to: DateTime<Utc>,
    /// At most this many records per second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Ignore an earlier run's checkpoint and publish the whole range again.
    #[arg(long)]
    pub restart: bool,
    /// Count what would be published and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "GALE_KAFKA_BOOTSTRAP",
        hide_env_values = true,
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// Schema registry URL.
    #[arg(
        long,
        env = "GALE_REGISTRY_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8081"
    )]
    pub registry_url: String,
}

/// What a table holds, and so how its rows become records again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Bronze raw readings (`RawReading`).
    Raw,
    /// Silver validated readings (`ScoredReading`).
    Validated,
    /// Silver quarantined readings (`ScoredReading`).
    Quarantined,
}

impl TableKind {
    /// The kind of table `path` names (its last segment).
    pub fn of(table: &str) -> Result<TableKind, String> {
        match table.trim_matches('/').rsplit('/').next().unwrap_or_default() {
            "raw_readings" => Ok(TableKind::Raw),
            "validated_readings" => Ok(TableKind::Validated),
            "quarantined_readings" => Ok(TableKind::Quarantined),
            _ => Err(format!(
                "--table {table:?}: backfill reads bronze/raw_readings, silver/validated_readings or silver/quarantined_readings (tables of readings with event ids)"
            )),
        }
    }

    fn topic(self) -> &'static str {
        match self {
            TableKind::Raw => "gale.raw",
            TableKind::Validated => "gale.validated",
            TableKind::Quarantined => "gale.quarantine",
        }
    }

    fn schema(self) -> SchemaFile {
        match self {
            TableKind::Raw => RAW_READING,
            TableKind::Validated => VALIDATED_READING,
            TableKind::Quarantined => QUARANTINED_READING,
        }
    }
}

/// Progress of one backfill, stored in the lake.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Files published completely.
    pub done: BTreeSet<String>,
    /// The file being published and how many of its rows in range were sent.
    pub current: Option<(String, u64)>,
    /// Set when every file was published.
    pub complete: bool,
    /// Records published so far.
    pub published: u64,
}

/// The checkpoint's path for a backfill of `table` into `topic` over [from, to).
pub fn checkpoint_path(table: &str, topic: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!(
        "{}/_gale_backfill/{}-{}-{}.json",
        table.trim_matches('/'),
        topic,
        from.format("%Y%m%dT%H%M%SZ"),
        to.format("%Y%m%dT%H%M%SZ")
    )
}

/// Whether a file in Hive partition `path` can hold rows of [from, to).
pub fn overlaps(path: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    let Some(dir) = path.rsplit_once('/').map(|(d, _)| d) else {
        return true;
    };
    match HiveKey::parse(dir) {
        Some(key) => {
            let start = key
                .date
                .and_hms_opt(key.hour, 0, 0)
                .expect("hour")
                .and_utc();
            start < to && key.end() > from
        }
        None => true,
    }
}

/// Sort key of a live file: partition directory, Kafka partition, first offset.
pub fn order_key(path: &str) -> (String, i64, i64, String) {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let stem = name.strip_suffix(".parquet").unwrap_or(name);
    // The stem is part-<topic>-<partition>-<first>-<last>; parse_stem reads from the end.
    let (partition, first) = parse_stem(stem)
        .map(|(rest, first, _)| {
            let partition = rest
                .rsplit_once('-')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(0);
            (partition, first)
        })
        .unwrap_or((0, 0));
    (dir.to_string(), partition, first, path.to_string())
}

/// Arrow rows back into JSON objects a reading type deserializes from:
/// timestamps as epoch milliseconds (as the Avro schema has them), Hive
/// partition fields from the path put back, Kafka position columns dropped.
pub fn rows(
    batch: &RecordBatch,
    extras: &[(String, String)],
) -> Result<Vec<serde_json::Value>, String> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(f.name().as_str(), "kafka_partition" | "kafka_offset") {
            continue;
        }
        match f.data_type() {
            DataType::Timestamp(_, _) => {
                let ms = cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))
                    .and_then(|c| cast(&c, &DataType::Int64))
                    .map_err(|e| format!("column {}: {e}", f.name()))?;
                fields.push(Field::new(f.name(), DataType::Int64, true));
                columns.push(ms);
            }
            _ => {
                fields.push(f.as_ref().clone());
                columns.push(c.clone());
            }
        }
    }
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())?;
    let mut writer = arrow_json::ArrayWriter::new(Vec::new());
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    let bytes = writer.into_inner();
    let mut out: Vec<serde_json::Value> = if bytes.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?
    };
    for row in &mut out {
        if let Some(map) = row.as_object_mut() {
            for (k, v) in extras {
                if !map.contains_key(k) && v != "__HIVE_DEFAULT_PARTITION__" {
                    map.insert(k.clone(), serde_json::Value::String(v.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// One row as a record: key and the encoded value.
pub fn record(
    kind: TableKind,
    row: serde_json::Value,
    encoder: &Encoder,
) -> Result<(String, Vec<u8>), String> {
    match kind {
        TableKind::Raw => {
            let r: RawReading = serde_json::from_value(row).map_err(|e| e.to_string())?;
            Ok((r.asset_id.clone(), encoder.encode(&r)?))
        }
        TableKind::Validated | TableKind::Quarantined => {
            let r: ScoredReading = serde_json::from_value(row).map_err(|e| e.to_string())?;
            Ok((r.asset_id.clone(), encoder.encode(&r)?))
        }
    }
}

/// The files a compacted file replaced (paths relative to the table), from
/// its manifest; empty for a file written by the archive itself.
async fn compacted_from(
    location: &Location,
    table: &str,
    path: &str,
) -> anyhow::Result<Vec<String>> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let stem = name.strip_suffix(".parquet").unwrap_or(name);
    let manifest = if dir.is_empty() {
        format!("{table}/_{stem}.json")
    } else {
        format!("{table}/{dir}/_{stem}.json")
    };
    let bytes = match location.store.get(&location.child(&manifest)).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let m: gale_archive::layout::Manifest =
        serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{manifest}: {e}"))?;
    Ok(m.compacted_from
        .iter()
        .map(|f| {
            if dir.is_empty() {
                f.clone()
            } else {
                format!("{dir}/{f}")
            }
        })
        .collect())
}

async fn load_checkpoint(location: &Location, path: &str) -> anyhow::Result<Checkpoint> {
    match location.store.get(&location.child(path)).await {
        Ok(got) => Ok(serde_json::from_slice(&got.bytes().await?)?),
        Err(object_store::Error::NotFound { .. }) => Ok(Checkpoint::default()),
        Err(e) => Err(e.into()),
    }
}

async fn save_checkpoint(location: &Location, path: &str, c: &Checkpoint) -> anyhow::Result<()> {
    location
        .store
        .put(
            &location.child(path),
            PutPayload::from(serde_json::to_vec(c)?),
        )
        .await?;
    Ok(())
}

/// What a backfill did.
#[derive(Debug, Default)]
pub struct BackfillReport {
    /// Records published by this run.
    pub published: u64,
    /// Files read by this run.
    pub files: usize,
    /// Files skipped because an earlier run published them.
    pub already_done: usize,
    /// Rows of the files read that lie outside the range.
    pub out_of_range: u64,
    /// Where the checkpoint is.
    pub checkpoint: String,
}

/// Sends `pending` and waits for every acknowledgement.
async fn flush(
    producer: &FutureProducer,
    pending: &mut Vec<rdkafka::producer::DeliveryFuture>,
) -> anyhow::Result<()> {
    for ack in futures::future::join_all(pending.drain(..)).await {
        match ack {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("the broker refused a record: {e}"),
            Err(_) => anyhow::bail!("a delivery was cancelled"),
        }
    }
    let _ = producer;
    Ok(())
}

/// `gale backfill`.
pub async fn run(args: &BackfillArgs, location: &Location) -> anyhow::Result<BackfillReport> {
    if args.from >= args.to {
        anyhow::bail!("--from must be before --to");
    }
    let kind = TableKind::of(&args.table).map_err(|e| anyhow::anyhow!(e))?;
    let table = args.table.trim_matches('/').to_string();
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| kind.topic().to_string());
    let checkpoint_at = checkpoint_path(&table, &topic, args.from, args.to);
    let mut checkpoint = if args.restart {
        Checkpoint::default()
    } else {
        load_checkpoint(location, &checkpoint_at).await?
    };
    let mut report = BackfillReport {
        checkpoint: format!("{}/{}", location.url.trim_end_matches('/'), checkpoint_at),
        ..Default::default()
    };
    let mut files = gale_archive::snapshot::live_files(location, &table).await?;
    files.retain(|f| overlaps(&f.path, args.from, args.to));
    files.sort_by_cached_key(|f| order_key(&f.path));
    let total: u64 = files
        .iter()
        .filter(|f| !checkpoint.done.contains(&f.path))
        .map(|f| f.records as u64)
        .sum();
    let bar = if args.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} rows read, {per_sec}, eta {eta}",
            )
            .expect("template"),
        )
    };
    let encoder = if args.dry_run {
        None
    } else {
        let registry = Registry::new(&RegistryConfig {
            url: args.registry_url.clone(),
            ..RegistryConfig::default()
        })?;
        Some(registry.register(&topic, kind.schema()).await?)
    };
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .create()?;
    let (from_ms, to_ms) = (args.from.timestamp_millis(), args.to.timestamp_millis());
    let started = Instant::now();
    let mut sent_this_run: u64 = 0;
    let mut last_save = Instant::now();
    for file in &files {
        if checkpoint.done.contains(&file.path) {
            report.already_done += 1;
            continue;
        }
        if !checkpoint.done.is_empty() {
            let from = compacted_from(location, &table, &file.path).await?;
            if !from.is_empty() && from.iter().all(|f| checkpoint.done.contains(f)) {
                // Merged by compaction from files published already.
                checkpoint.done.insert(file.path.clone());
                report.already_done += 1;
                continue;
            }
        }
        let skip = match &checkpoint.current {
            Some((path, n)) if *path == file.path => *n,
            _ => 0,
        };
        let full = format!("{table}/{}", file.path);
        let bytes = location
            .store
            .get(&location.child(&full))
            .await?
            .bytes()
            .await?;
        let (_, batches) =
            gale_archive::parquet_io::decode(bytes).map_err(|e| anyhow::anyhow!("{full}: {e}"))?;
        let extras = file
            .path
            .rsplit_once('/')
            .and_then(|(d, _)| HiveKey::parse(d))
            .map(|k| k.extras)
            .unwrap_or_default();
        let mut in_range: u64 = 0;
        let mut saved_at = skip;
        let mut pending = Vec::new();
        let mut headers = OwnedHeaders::new();
        headers = headers.insert(Header {
            key: BACKFILL_SOURCE,
            value: Some(full.as_bytes()),
        });
        for batch in &batches {
            for row in rows(batch, &extras).map_err(|e| anyhow::anyhow!("{full}: {e}"))? {
                bar.inc(1);
                let Some(t) = row.get("event_time").and_then(|v| v.as_i64()) else {
                    anyhow::bail!("{full}: a row without event_time");
                };
                if t < from_ms || t >= to_ms {
                    report.out_of_range += 1;
                    continue;
                }
                in_range += 1;
                if in_range <= skip {
                    continue;
                }
                if let Some(encoder) = &encoder {
                    let (key, value) = record(kind, row, encoder).map_err(|e| {
                        anyhow::anyhow!("{full}: a row does not make a record: {e}")
                    })?;
                    loop {
                        let r = FutureRecord::to(&topic)
                            .key(&key)
                            .payload(&value)
                            .headers(headers.clone());
                        match producer.send_result(r) {
                            Ok(f) => {
                                pending.push(f);
                                break;
                            }
                            Err((e, _)) => {
                                // Queue full: wait for what is in flight.
                                if pending.is_empty() {
                                    anyhow::bail!("producing to {topic}: {e}");
                                }
                                flush(&producer, &mut pending).await?;
                            }
                        }
                    }
                }
                sent_this_run += 1;
                report.published += 1;
                checkpoint.published += 1;
                // After a kill, at most what was sent since the last
                // checkpoint goes again: a second or CHECKPOINT_RECORDS.
                if in_range - saved_at >= CHECKPOINT_RECORDS
                    || last_save.elapsed() >= CHECKPOINT_EVERY
                {
                    flush(&producer, &mut pending).await?;
                    checkpoint.current = Some((file.path.clone(), in_range));
                    if !args.dry_run {
                        save_checkpoint(location, &checkpoint_at, &checkpoint).await?;
                    }
                    saved_at = in_range;
                    last_save = Instant::now();
                }
                if args.rate > 0 {
                    let due = Duration::from_secs_f64(sent_this_run as f64 / args.rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        if wait > Duration::from_millis(5) {
                            flush(&producer, &mut pending).await?;
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
        }
        flush(&producer, &mut pending).await?;
        report.files += 1;
        checkpoint.done.insert(file.path.clone());
        checkpoint.current = None;
        if !args.dry_run {
            save_checkpoint(location, &checkpoint_at, &checkpoint).await?;
        }
    }
    checkpoint.complete = true;
    if !args.dry_run {
        save_checkpoint(location, &checkpoint_at, &checkpoint).await?;
    }
    bar.finish_and_clear();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};

    #[test]
    fn tables_name_their_kind_and_topic() {
        assert_eq!(TableKind::of("bronze/raw_readings"), Ok(TableKind::Raw));
        assert_eq!(
            TableKind::of("/lake/silver/validated_readings/").map(TableKind::topic),
            Ok("gale.validated")
        );
        let err = TableKind::of("gold/fault_events").unwrap_err();
        assert!(err.contains("bronze/raw_readings"), "{err}");
    }

    #[test]
    fn partitions_outside_the_range_are_not_read() {
        let t = |s| crate::timearg::parse(s).unwrap();
        let (from, to) = (t("2025-03-01T10:00:00Z"), t("2025-03-02T00:00:00Z"));
        assert!(overlaps("date=2025-03-01/part-x-0-0-9.parquet", from, to));
        assert!(!overlaps("date=2025-02-28/part-x-0-0-9.parquet", from, to));
        assert!(!overlaps("date=2025-03-01/hour=09/a.parquet", from, to));
        assert!(overlaps(
            "date=2025-03-01/hour=23/asset_kind=METER/a.parquet",
            from,
            to
        ));
        assert!(!overlaps("date=2025-03-02/hour=00/a.parquet", from, to));
    }

    #[test]
    fn files_sort_by_partition_then_offset_numerically() {
        let mut v = vec![
            "date=2025-03-01/part-gale.raw-1-100-199.parquet",
            "date=2025-03-01/part-gale.raw-0-1000-1099.parquet",
            "date=2025-03-01/part-gale.raw-0-900-999.parquet",
        ];
        v.sort_by_key(|p| order_key(p));
        assert_eq!(
            v,
            [
                "date=2025-03-01/part-gale.raw-0-900-999.parquet",
                "date=2025-03-01/part-gale.raw-0-1000-1099.parquet",
                "date=2025-03-01/part-gale.raw-1-100-199.parquet",
            ]
        );
    }

    #[test]
    fn rows_get_millis_and_partition_fields_back_without_kafka_columns() {
        let schema = Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
                false,
            ),
            Field::new("kafka_offset", DataType::Int64, false),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec!["e1"])) as ArrayRef,
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_740_787_200_123])
                        .with_timezone("+00:00"),
                ),
                Arc::new(Int64Array::from(vec![7])),
            ],
        )
        .unwrap();
        let out = rows(&batch, &[("asset_kind".into(), "METER".into())]).unwrap();
        assert_eq!(
            out,
            vec![
                serde_json::json!({"event_id": "e1", "event_time": 1_740_787_200_123i64, "asset_kind": "METER"})
            ]
        );
    }
}
