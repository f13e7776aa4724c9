//! `gale dlq redrive --stage ingest --ingest-config FILE`: rows of dropped
//! files that ingest could not read, read again through the current column
//! mapping.
//!
//! Ingest's file-drop dead letters never were on a topic: the value is the
//! row's own bytes (a CSV line, a JSON array element, an NDJSON line), the key
//! the file's path in its store, and `gale.dlq.original.topic` names
//! `<store URL>/<path>#line=N` (or `#index=I`). Sending those bytes "back"
//! means doing what ingest would do with them today: find the file drop that
//! watched the file, rebuild the row (a CSV line needs the file's header
//! row, read from the file where ingest moved it; a JSON row stands alone),
//! map it with the source's current mapping and send the reading to the raw
//! topic keyed by asset id. Event ids depend only on the source, asset, time
//! and measurements, so a redriven row gets the id ingest would have given
//! it and the sinks store it once, however often it is sent. A row the
//! mapping still cannot read goes back to ingest's dead-letter topic with the
//! headers ingest writes plus its redrive count, so `--max-redrives` ends the
//! loop.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use gale_ingest::config::Config;
use gale_ingest::filedrop::{rebase, FileDropConfig, MAX_DLQ_BYTES};
use gale_ingest::mapping::{now_ms, Row, RowOutcome, SourceMapping};
use gale_ingest::parse::{Format, RowReader};
use gale_model::{IngestChannel, RawReading, RAW_READING};
use gale_runtime::avro::Encoder;
use gale_runtime::dlq as h;
use gale_runtime::storage::Location;
use object_store::ObjectStoreExt;
use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::dlq::{DeadLetter, Skip, REDRIVE_COUNT, REDRIVE_SOURCE, REDRIVE_TIME};

/// The one ingest class whose dead letters are read again: a row the
/// mapping could not read. `refused_row` (too large for the broker) and
/// `unparseable_file` need the file fixed and dropped again.
pub const UNPARSEABLE_ROW: &str = "unparseable_row";

/// What reading a dead-lettered row again gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Reread {
    /// A reading for the raw topic.
    Reading(Box<RawReading>),
    /// The mapping still cannot read it: why.
    Failed(String),
}

/// One file drop of the ingest config, opened.
struct Drop {
    config: FileDropConfig,
    location: Location,
    mapping: Arc<SourceMapping>,
}

/// The ingest side of a redrive: the config's file drops and mappings, the
/// raw topic's encoder, and the CSV header rows read so far.
pub struct IngestRedriver {
    raw_topic: String,
    drops: Vec<Drop>,
    registry: gale_runtime::config::RegistryConfig,
    encoder: Option<Encoder>,
    /// File key → its CSV header line (`None`: the file is gone).
    headers: HashMap<String, Option<String>>,
}

impl IngestRedriver {
    /// Loads ingest's config from `file` (and `GALE_*__*` variables) as the
    /// ingest binary does, checks it and opens the file drops' stores.
    pub fn load(file: &Path) -> anyhow::Result<IngestRedriver> {
        let cfg: Config = gale_runtime::config::load(Some(file))
            .map_err(|e| anyhow::anyhow!("ingest config {}: {e}", file.display()))?;
        let mappings = cfg
            .mappings()
            .map_err(|e| anyhow::anyhow!("ingest config {}: {e}", file.display()))?;
        let mut drops = Vec::new();
        for (i, fd) in cfg.ingest.file_drops.iter().enumerate() {
            let location =
                gale_runtime::storage::open(&fd.store, &format!("ingest.file_drops[{i}].store"))?;
            let mapping = mappings
                .iter()
                .find(|m| m.name() == fd.source)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no source named {:?}", fd.source))?;
            drops.push(Drop {
                config: fd.clone(),
                location,
                mapping,
            });
        }
        Ok(IngestRedriver {
            raw_topic: cfg.topics.raw.clone(),
            drops,
            registry: cfg.registry.clone(),
            encoder: None,
            headers: HashMap::new(),
        })
    }

    /// Ingest's raw topic, where redriven readings go.
    pub fn raw_topic(&self) -> &str {
        &self.raw_topic
    }

    /// Encodes `reading` for the raw topic (registering the schema under the
    /// topic's subject on first use, as ingest does at start).
    pub async fn encode(&mut self, reading: &RawReading) -> anyhow::Result<Vec<u8>> {
        if self.encoder.is_none() {
            let registry = gale_runtime::avro::Registry::new(&self.registry)?;
            self.encoder = Some(registry.register(&self.raw_topic, RAW_READING).await?);
        }
        let encoder = self.encoder.as_ref().expect("set above");
        encoder
            .encode(reading)
            .map_err(|e| anyhow::anyhow!("encoding a reading of {}: {e}", reading.asset_id))
    }

    /// Reads the row of ingest dead letter `d` again through the current
    /// mapping; `Err` says why it is not tried at all.
    pub async fn reread(&mut self, d: &DeadLetter) -> Result<Reread, Skip> {
        if d.class() != UNPARSEABLE_ROW {
            return Err(Skip::NotARow);
        }
        // Ingest cuts a row's dead letter at MAX_DLQ_BYTES (saying so only in
        // the message): a cut row could read as a different reading.
        if d.header(h::PAYLOAD_TRUNCATED).as_deref() == Some("true")
            || d.payload.len() >= MAX_DLQ_BYTES
        {
            return Err(Skip::OriginalGone);
        }
        let key = d
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let origin = d.header(h::ORIGINAL_TOPIC).unwrap_or_default();
        let watched: Vec<(&str, &str)> = self
            .drops
            .iter()
            .map(|x| (x.location.url.as_str(), x.config.inbox.as_str()))
            .collect();
        let i = drop_for(&watched, &key, &origin).ok_or(Skip::NoFileDrop)?;
        let Some(format) = Format::from_path(&key) else {
            return Err(Skip::NoFileDrop);
        };
        let header = if format == Format::Csv {
            if !self.headers.contains_key(&key) {
                let line = self.csv_header(i, &key).await;
                self.headers.insert(key.clone(), line);
            }
            match &self.headers[&key] {
                Some(line) => Some(line.clone()),
                None => return Err(Skip::FileGone),
            }
        } else {
            None
        };
        let fields = row_fields(format, header.as_deref(), &d.payload);
        match read_again(&self.drops[i].mapping, fields, now_ms()) {
            Ok(RowOutcome::Reading(r)) => Ok(Reread::Reading(Box::new(r))),
            Ok(RowOutcome::Skipped) => Err(Skip::NothingToSend),
            Err(e) => Ok(Reread::Failed(e)),
        }
    }

    /// The header line of CSV file `key` of drop `i`, from wherever ingest
    /// left it (done, failed, or still the inbox); `None` when it is gone or
    /// has no readable header.
    async fn csv_header(&self, i: usize, key: &str) -> Option<String> {
        let drop = &self.drops[i];
        for path in candidates(key, &drop.config) {
            match drop.location.store.get(&drop.location.child(&path)).await {
                Ok(r) => {
                    let bytes = r.bytes().await.ok()?;
                    let text = std::str::from_utf8(&bytes).ok()?;
                    return csv_header_line(text).ok();
                }
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => {
                    tracing::warn!(file = path, error = %e, "cannot read the dropped file");
                    return None;
                }
            }
        }
        None
    }
}

/// Which of the file drops (`(store URL, inbox)`) a dead letter keyed `key`
/// with origin `origin` (`<URL>/<key>#line=N`) came from.
pub fn drop_for(drops: &[(&str, &str)], key: &str, origin: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    drops.iter().position(|(url, inbox)| {
        let file = format!("{}/{key}", url.trim_end_matches('/'));
        let in_store = origin
            .strip_prefix(&file)
            .is_some_and(|rest| rest.starts_with('#'));
        let inbox: Vec<&str> = inbox.split('/').filter(|s| !s.is_empty()).collect();
        let path: Vec<&str> = key.split('/').filter(|s| !s.is_empty()).collect();
        in_store && path.len() > inbox.len() && path.starts_with(&inbox)
    })
}

/// Where file `key` may be now: moved to the done prefix, to the failed
/// prefix (a file with dead letters may have gone either way), or still in
/// the inbox when the move failed.
pub fn candidates(key: &str, drop: &FileDropConfig) -> Vec<String> {
    vec![
        rebase(key, &drop.inbox, &drop.done),
        rebase(key, &drop.inbox, &drop.failed),
        key.to_string(),
    ]
}

/// The header row of a CSV file, as one CSV line (with its line end), read
/// as ingest reads it (byte order mark skipped, cells trimmed).
pub fn csv_header_line(file: &str) -> Result<String, String> {
    let text = file.strip_prefix('\u{feff}').unwrap_or(file);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("cannot read the CSV header row: {e}"))?
        .clone();
    if headers.is_empty() || headers.iter().all(str::is_empty) {
        return Err("CSV file has no header row".into());
    }
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(&headers).map_err(|e| e.to_string())?;
    let bytes = out.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// A dead-lettered row's fields: a CSV line under `header`, or a JSON
/// object (an array element or an NDJSON line) on its own.
pub fn row_fields(format: Format, header: Option<&str>, row: &[u8]) -> Result<Row, String> {
    let row = std::str::from_utf8(row).map_err(|e| format!("row is not UTF-8: {e}"))?;
    let text = match (format, header) {
        (Format::Csv, Some(header)) => format!("{header}{row}"),
        (Format::Csv, None) => return Err("a CSV row needs its file's header row".into()),
        (Format::Json | Format::Ndjson, _) => {
            if !row.trim_start().starts_with('{') {
                return Err("a row must be a JSON object".into());
            }
            row.trim().to_string()
        }
    };
    let mut reader = RowReader::new(format, &text).map_err(|e| e.to_string())?;
    let mut rows = reader.next_chunk(2).map_err(|e| e.to_string())?;
    match rows.len() {
        1 => rows.remove(0).fields,
        0 => Err("the row is empty".into()),
        n => Err(format!("the dead letter holds {n} rows, not one")),
    }
}

/// Maps `fields` with `mapping` as ingest maps a dropped file's row
/// (channel `file`, a fresh read context: the row is read on its own).
pub fn read_again(
    mapping: &SourceMapping,
    fields: Result<Row, String>,
    received_ms: i64,
) -> Result<RowOutcome, String> {
    fields.and_then(|f| mapping.read_row(&f, IngestChannel::File, received_ms))
}

/// Headers of a redriven reading: the redrive's (count, time, source) and
/// no `gale.redrive.stage`, since every consumer of the raw topic (validate,
/// archive) takes the row: none of them ever saw it.
pub fn reading_headers(d: &DeadLetter, now: DateTime<Utc>) -> Vec<(String, Vec<u8>)> {
    d.redrive_headers(now)
        .into_iter()
        .filter(|(k, _)| k != h::REDRIVE_STAGE)
        .collect()
}

/// Headers of a row that failed again, as ingest writes its dead letters
/// (same origin, stage `ingest`, class `unparseable_row`, the new message),
/// plus the redrive count, time and source.
pub fn dead_letter_headers(d: &DeadLetter, message: &str, now: DateTime<Utc>) -> OwnedHeaders {
    let origin = d.header(h::ORIGINAL_TOPIC).unwrap_or_default();
    let out = h::headers(
        None,
        &h::Origin {
            topic: &origin,
            partition: None,
            offset: None,
            timestamp_ms: None,
        },
        &h::Failure {
            stage: "ingest",
            class: UNPARSEABLE_ROW,
            message,
            attempts: 1,
        },
    );
    let mut all = OwnedHeaders::new();
    for x in out.iter() {
        all = all.insert(Header {
            key: x.key,
            value: x.value,
        });
    }
    for (k, v) in reading_headers(d, now) {
        if [REDRIVE_COUNT, REDRIVE_TIME, REDRIVE_SOURCE].contains(&k.as_str()) {
            all = all.insert(Header {
                key: &k,
                value: Some(&v),
            });
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use gale_ingest::mapping::{event_id, SourceConfig};

    fn mapping(extra: &str) -> SourceMapping {
        let cfg: SourceConfig =
            gale_runtime::config::load_str(&format!("name = \"meters\"\n{extra}")).unwrap();
        SourceMapping::new(cfg, "k").unwrap()
    }

    fn letter(class: &str, key: &str, origin: &str, payload: &[u8]) -> DeadLetter {
        DeadLetter {
            topic: "gale.dlq.ingest".into(),
            partition: 0,
            offset: 4,
            written_ms: Some(9),
            key: Some(key.as_bytes().to_vec()),
            payload: payload.to_vec(),
            headers: vec![
                (h::STAGE.into(), Some(b"ingest".to_vec())),
                (h::ERROR_CLASS.into(), Some(class.as_bytes().to_vec())),
                (h::ERROR_MESSAGE.into(), Some(b"x".to_vec())),
                (h::ORIGINAL_TOPIC.into(), Some(origin.as_bytes().to_vec())),
            ],
        }
    }

    #[test]
    fn the_file_drop_is_found_by_store_and_inbox() {
        let drops = [("/data/a", "raw/"), ("/data/b/", "in/"), ("/data/b", "raw")];
        assert_eq!(
            drop_for(&drops, "raw/2024/x.csv", "/data/a/raw/2024/x.csv#line=3"),
            Some(0)
        );
        assert_eq!(
            drop_for(&drops, "in/x.csv", "/data/b/in/x.csv#index=0"),
            Some(1)
        );
        assert_eq!(
            drop_for(&drops, "raw/x.csv", "/data/b/raw/x.csv#line=2"),
            Some(2)
        );
        assert_eq!(
            drop_for(&drops, "raw/x.csv", "/data/c/raw/x.csv#line=2"),
            None,
            "another store"
        );
        assert_eq!(
            drop_for(&drops, "raw/x.csv", "/data/a/raw/x.csvv#line=2"),
            None
        );
        assert_eq!(
            drop_for(&drops, "other/x.csv", "/data/a/other/x.csv#line=2"),
            None
        );
        assert_eq!(drop_for(&drops, "", "/data/a/#line=2"), None);
    }

    #[test]
    fn moved_files_are_looked_for_under_done_failed_and_inbox() {
        let fd: FileDropConfig =
            gale_runtime::config::load_str("source = \"s\"\nstore = { url = \"/tmp/x\" }\n")
                .unwrap();
        assert_eq!(
            candidates("raw/2024/a.csv", &fd),
            [
                "processed/2024/a.csv",
                "failed/2024/a.csv",
                "raw/2024/a.csv"
            ]
        );
    }

    #[test]
    fn csv_rows_are_rebuilt_under_their_header() {
        let header =
            csv_header_line("\u{feff} asset_id ,timestamp,\"kw, total\"\nM-1,0,1\n").unwrap();
        assert_eq!(header, "asset_id,timestamp,\"kw, total\"\n");
        let fields = row_fields(
            Format::Csv,
            Some(&header),
            b"M-2,2024-03-01T00:00:00Z,\"4.5\"\r\n",
        )
        .unwrap();
        let names: Vec<&str> = fields.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["asset_id", "timestamp", "kw, total"]);
        assert!(row_fields(Format::Csv, None, b"M-2,0,1").is_err());
        let e = row_fields(Format::Csv, Some(&header), b"M-2,0").unwrap_err();
        assert!(e.contains("expected 3 fields"), "{e}");
        assert!(csv_header_line("").is_err());
    }

    #[test]
    fn json_rows_stand_alone() {
        let f = row_fields(
            Format::Ndjson,
            None,
            b"{\"asset_id\":\"M-1\",\"power\":3}\n",
        )
        .unwrap();
        assert_eq!(f.len(), 2);
        let f = row_fields(Format::Json, None, b"{\n  \"asset_id\": \"M-1\"\n}").unwrap();
        assert_eq!(f.len(), 1);
        assert!(row_fields(Format::Json, None, b"[1]").is_err());
        assert!(row_fields(Format::Json, None, b"5").is_err());
        assert!(row_fields(Format::Ndjson, None, b"{not json").is_err());
        assert!(row_fields(Format::Json, None, &[0xff]).is_err());
    }

    #[test]
    fn the_current_mapping_reads_the_row_with_ingests_event_id() {
        let header = csv_header_line("asset_id,timestamp,kw\n").unwrap();
        let row = b"M-7,2024-03-01T00:00:00Z,2.5";
        let old = mapping("");
        let e = read_again(&old, row_fields(Format::Csv, Some(&header), row), 1).unwrap_err();
        assert!(e.contains("no metric columns"), "{e}");
        let new = mapping("[columns.kw]\nmetric = \"power\"\nunit = \"kW\"\n");
        let Ok(RowOutcome::Reading(r)) =
            read_again(&new, row_fields(Format::Csv, Some(&header), row), 1)
        else {
            panic!("not read");
        };
        assert_eq!(
            (r.asset_id.as_str(), r.event_time),
            ("M-7", 1_709_251_200_000)
        );
        assert_eq!(r.channel, IngestChannel::File);
        assert_eq!(
            r.event_id,
            event_id("meters", "M-7", r.event_time, &r.measurements)
        );
        // The id does not depend on when it was read.
        let Ok(RowOutcome::Reading(again)) =
            read_again(&new, row_fields(Format::Csv, Some(&header), row), 99)
        else {
            panic!("not read");
        };
        assert_eq!(again.event_id, r.event_id);
    }

    #[test]
    fn headers_of_redriven_rows_and_of_rows_that_fail_again() {
        let mut d = letter(
            UNPARSEABLE_ROW,
            "raw/a.csv",
            "/s/raw/a.csv#line=2",
            b"M,0,1",
        );
        d.headers.push((REDRIVE_COUNT.into(), Some(b"1".to_vec())));
        let now = Utc.timestamp_millis_opt(0).unwrap();
        let r = reading_headers(&d, now);
        let keys: Vec<&str> = r.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, [REDRIVE_COUNT, REDRIVE_TIME, REDRIVE_SOURCE]);
        assert_eq!(r[0].1, b"2");
        let hs = dead_letter_headers(&d, "still bad", now);
        let got: HashMap<String, String> = hs
            .iter()
            .map(|x| {
                (
                    x.key.to_string(),
                    String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        assert_eq!(got[h::STAGE], "ingest");
        assert_eq!(got[h::ERROR_CLASS], UNPARSEABLE_ROW);
        assert_eq!(got[h::ERROR_MESSAGE], "still bad");
        assert_eq!(got[h::ORIGINAL_TOPIC], "/s/raw/a.csv#line=2");
        assert_eq!(got[REDRIVE_COUNT], "2");
        assert_eq!(got[REDRIVE_SOURCE], "gale.dlq.ingest/0/4@9");
        assert!(!got.contains_key(h::REDRIVE_STAGE));
    }

    #[tokio::test]
    async fn rows_are_read_again_from_the_moved_file_or_skipped_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(store.join("processed/d")).unwrap();
        std::fs::write(
            store.join("processed/d/a.csv"),
            "asset_id,timestamp,kw\nM-1,0,bad\n",
        )
        .unwrap();
        let cfg = dir.path().join("ingest.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[ingest.sources]]\nname = \"meters\"\n[ingest.sources.columns.kw]\nmetric = \"power\"\nunit = \"kW\"\n\
                 [[ingest.file_drops]]\nsource = \"meters\"\nstore = {{ url = \"{}\" }}\n",
                store.display()
            ),
        )
        .unwrap();
        let mut r = IngestRedriver::load(&cfg).unwrap();
        let origin = |key: &str| format!("{}/{key}#line=2", store.display());
        let d = letter(
            UNPARSEABLE_ROW,
            "raw/d/a.csv",
            &origin("raw/d/a.csv"),
            b"M-1,60,2.5",
        );
        let Ok(Reread::Reading(reading)) = r.reread(&d).await else {
            panic!("not read");
        };
        assert_eq!(
            (reading.asset_id.as_str(), reading.event_time),
            ("M-1", 60_000)
        );
        let d = letter(
            UNPARSEABLE_ROW,
            "raw/d/a.csv",
            &origin("raw/d/a.csv"),
            b"M-1,60,x",
        );
        assert!(matches!(r.reread(&d).await, Ok(Reread::Failed(e)) if e.contains("kw")));
        let d = letter(
            UNPARSEABLE_ROW,
            "raw/d/gone.csv",
            &origin("raw/d/gone.csv"),
            b"M-1,60,2.5",
        );
        assert_eq!(r.reread(&d).await, Err(Skip::FileGone));
        let d = letter(
            "unparseable_file",
            "raw/d/a.csv",
            &origin("raw/d/a.csv"),
            b"x",
        );
        assert_eq!(r.reread(&d).await, Err(Skip::NotARow));
        let d = letter(
            UNPARSEABLE_ROW,
            "raw/d/a.csv",
            "/elsewhere/raw/d/a.csv#line=2",
            b"x",
        );
        assert_eq!(r.reread(&d).await, Err(Skip::NoFileDrop));
        let big = vec![b'a'; MAX_DLQ_BYTES];
        let d = letter(UNPARSEABLE_ROW, "raw/d/a.csv", &origin("raw/d/a.csv"), &big);
        assert_eq!(r.reread(&d).await, Err(Skip::OriginalGone));
        let d = letter(
            UNPARSEABLE_ROW,
            "raw/d/b.ndjson",
            &origin("raw/d/b.ndjson"),
            b"{\"asset_id\":\"M-2\",\"timestamp\":0,\"kw\":1}\n",
        );
        assert!(matches!(r.reread(&d).await, Ok(Reread::Reading(x)) if x.asset_id == "M-2"));
    }
}
