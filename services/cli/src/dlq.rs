//! `gale dlq`: look at dead letters and send them back.
//!
//! Every consuming stage writes what it cannot process to `gale.dlq.<stage>`
//! with the original bytes and `gale.dlq.*` headers (services/runtime
//! `dlq`). `list` counts them by stage, class and message; `show` prints
//! them decoded; `redrive` sends the original bytes back to the original
//! topic once the cause is fixed (an asset imported, a rule corrected).
//!
//! Redrive writes a marker per dead letter to a compacted topic
//! (`gale.redrives`, key `<dlq topic>/<partition>/<offset>@<written ms>`) after the
//! redriven record is acknowledged, so a second run skips it; a crash
//! between the two can send one record twice, which the stages absorb
//! (deterministic, idempotent by event id). A redriven record carries
//! `gale.redrive.count`; when it fails again the runtime keeps that header on
//! the new dead letter, and redrive stops at `--max-redrives`. It also
//! carries `gale.redrive.stage`: only the stage that failed it processes it
//! again (the topic's other consumers took the original), and the header
//! does not travel on to that stage's outputs. Records get the broker's
//! time, not the original's, so the topic's retention does not drop them
//! before they are read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use gale_runtime::dlq as h;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::dlq_ingest::Reread;
use crate::inspect::{broker_unreachable, end_offsets_of};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Times a record has been redriven (on the redriven record and on any dead letter it becomes).
pub const REDRIVE_COUNT: &str = "gale.redrive.count";
/// When it was redriven (RFC 3339).
pub const REDRIVE_TIME: &str = "gale.redrive.time";
/// The dead letter it came from: `<topic>/<partition>/<offset>`.
pub const REDRIVE_SOURCE: &str = "gale.redrive.source";
/// The default marker topic.
pub const MARKERS: &str = "gale.redrives";
/// How long markers are kept: 90 days, longer than dead letters (30).
const MARKER_RETENTION_MS: &str = "7776000000";

/// `gale dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Dead letters per stage and error class, with the top messages and first/last time.
    List(ListArgs),
    /// Dead letters with their headers and payload (Avro decoded, text, or hex).
    Show(ShowArgs),
    /// Send dead letters back to the topic they came from.
    Redrive(RedriveArgs),
}

/// Which dead-letter topics.
#[derive(Debug, Clone, clap::Args)]
pub struct Source {
    /// Stage(s) whose dead letters to read (`gale.dlq.<stage>`); all `gale.dlq.*` topics by default.
    #[arg(long, value_delimiter = ',')]
    pub stage: Vec<String>,
    /// Dead-letter topic(s) by name, instead of --stage.
    #[arg(long, value_delimiter = ',', conflicts_with = "stage")]
    pub topic: Vec<String>,
    /// Only dead letters written at or after this time (RFC 3339, a UTC date, or a duration ago).
    #[arg(long, value_parser = crate::timearg::parse)]
    pub since: Option<DateTime<Utc>>,
    /// Only dead letters written before this time.
    #[arg(long, value_parser = crate::timearg::parse)]
    pub until: Option<DateTime<Utc>>,
    /// Only this error class (e.g. unknown_asset).
    #[arg(long)]
    pub class: Option<String>,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "GALE_KAFKA_BOOTSTRAP",
        hide_env_values = true,
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
}

/// `gale dlq list` options.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub source: Source,
    /// Messages shown per error class.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
}

/// `gale dlq show` options.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub source: Source,
    /// At most this many dead letters.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Schema registry URL, to decode Avro payloads.
    #[arg(
        long,
        env = "GALE_REGISTRY_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8081"
    )]
    pub registry_url: String,
}

/// `gale dlq redrive` options.
#[derive(Debug, clap::Args)]
pub struct RedriveArgs {
    #[command(flatten)]
    pub source: Source,
    /// Count what would be redriven and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Dead letters already redriven this many times stay where they are.
    #[arg(long, default_value_t = 3)]
    pub max_redrives: u32,
    /// Compacted topic remembering which dead letters were redriven.
    #[arg(long, default_value = MARKERS)]
    pub marker_topic: String,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Ingest's config file (TOML; `GALE_*__*` variables apply as for the
    /// service): ingest's own dead letters (rows of dropped files) are read
    /// again through its current column mapping and sent to its raw topic.
    #[arg(long)]
    pub ingest_config: Option<std::path::PathBuf>,
}

/// One dead letter as read from its topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Dead-letter topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// When it was written (ms), from the record's timestamp.
    pub written_ms: Option<i64>,
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original value (or its start, when `truncated`).
    pub payload: Vec<u8>,
    /// Every header, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    fn from_message(m: &BorrowedMessage<'_>) -> DeadLetter {
        DeadLetter {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            written_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or(&[]).to_vec(),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// A header's value as text (the last one wins).
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Error class (`unknown` when the header is missing).
    pub fn class(&self) -> String {
        self.header(h::ERROR_CLASS)
            .unwrap_or_else(|| "unknown".into())
    }

    /// Stage that dead-lettered it.
    pub fn stage(&self) -> String {
        self.header(h::STAGE)
            .unwrap_or_else(|| self.topic.trim_start_matches("gale.dlq.").to_string())
    }

    /// Times it has been redriven already.
    pub fn redrives(&self) -> u32 {
        self.header(REDRIVE_COUNT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Its marker key: topic, partition and offset, plus when it was
    /// written, since offsets start again if the topic is recreated.
    pub fn marker(&self) -> String {
        format!(
            "{}/{}/{}@{}",
            self.topic,
            self.partition,
            self.offset,
            self.written_ms.unwrap_or(-1)
        )
    }

    /// Where the original record was: topic, partition, offset, timestamp (ms).
    pub fn origin(&self) -> (Option<String>, Option<i32>, Option<i64>, Option<i64>) {
        let topic = self.header(h::ORIGINAL_TOPIC).filter(|t| !t.is_empty());
        let partition = self
            .header(h::ORIGINAL_PARTITION)
            .and_then(|p| p.parse().ok());
        let offset = self.header(h::ORIGINAL_OFFSET).and_then(|p| p.parse().ok());
        let ts = self
            .header(h::ORIGINAL_TIMESTAMP)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.timestamp_millis());
        (topic, partition, offset, ts)
    }

    /// The headers a redriven record carries: the original ones (without
    /// `gale.dlq.*` and earlier `gale.redrive.*`) and the redrive's own.
    pub fn redrive_headers(&self, now: DateTime<Utc>) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("gale.dlq.") && !k.starts_with("gale.redrive."))
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
            .collect();
        out.push((
            REDRIVE_COUNT.into(),
            (self.redrives() + 1).to_string().into_bytes(),
        ));
        out.push((
            REDRIVE_TIME.into(),
            now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into_bytes(),
        ));
        out.push((REDRIVE_SOURCE.into(), self.marker().into_bytes()));
        out.push((h::REDRIVE_STAGE.into(), self.stage().into_bytes()));
        out
    }
}

/// Counts per topic and class, with first/last time and the top messages.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ClassSummary {
    /// Dead letters.
    pub count: u64,
    /// Earliest written (ms).
    pub first_ms: Option<i64>,
    /// Latest written (ms).
    pub last_ms: Option<i64>,
    /// Count per message.
    pub messages: HashMap<String, u64>,
}

impl ClassSummary {
    fn add(&mut self, d: &DeadLetter) {
        self.count += 1;
        if let Some(t) = d.written_ms {
            self.first_ms = Some(self.first_ms.map_or(t, |f| f.min(t)));
            self.last_ms = Some(self.last_ms.map_or(t, |l| l.max(t)));
        }
        *self
            .messages
            .entry(d.header(h::ERROR_MESSAGE).unwrap_or_default())
            .or_default() += 1;
    }

    /// The `n` most frequent messages, most frequent first (ties by text).
    pub fn top(&self, n: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self
            .messages
            .iter()
            .map(|(m, c)| (m.as_str(), *c))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
}

/// Summaries keyed by (dead-letter topic, stage, class).
pub type Summary = BTreeMap<(String, String, String), ClassSummary>;

/// Adds `d` to `summary`.
pub fn summarize(summary: &mut Summary, d: &DeadLetter) {
    summary
        .entry((d.topic.clone(), d.stage(), d.class()))
        .or_default()
        .add(d);
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `gale dlq list` output.
pub fn render_summary(summary: &Summary, top: usize) -> String {
    if summary.is_empty() {
        return "no dead letters\n".into();
    }
    let mut s = format!(
        "{:<24} {:<14} {:<24} {:>8}  {:<19}  {:<19}\n",
        "topic", "stage", "class", "count", "first", "last"
    );
    for ((topic, stage, class), c) in summary {
        s.push_str(&format!(
            "{:<24} {:<14} {:<24} {:>8}  {:<19}  {:<19}\n",
            topic,
            stage,
            class,
            c.count,
            time(c.first_ms),
            time(c.last_ms)
        ));
        for (m, n) in c.top(top) {
            let m: String = m.chars().take(140).collect();
            s.push_str(&format!("    {n:>8}  {m}\n"));
        }
    }
    let total: u64 = summary.values().map(|c| c.count).sum();
    s.push_str(&format!("{total} dead letter(s)\n"));
    s
}

fn consumer(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "gale-cli-dlq")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?)
}

/// The dead-letter topics `source` names that exist, with their partitions.
pub fn topics(source: &Source) -> anyhow::Result<Vec<(String, Vec<i32>)>> {
    let c = consumer(&source.bootstrap)?;
    let md = c
        .fetch_metadata(None, TIMEOUT)
        .map_err(|e| broker_unreachable(&source.bootstrap, &e))?;
    let wanted: Vec<String> = if !source.topic.is_empty() {
        source.topic.clone()
    } else {
        source
            .stage
            .iter()
            .map(|s| format!("gale.dlq.{s}"))
            .collect()
    };
    let mut out: Vec<(String, Vec<i32>)> = md
        .topics()
        .iter()
        .filter(|t| {
            if wanted.is_empty() {
                t.name().starts_with("gale.dlq.")
            } else {
                wanted.iter().any(|w| w == t.name())
            }
        })
        .map(|t| {
            (
                t.name().to_string(),
                t.partitions().iter().map(|p| p.id()).collect(),
            )
        })
        .collect();
    out.sort();
    for w in &wanted {
        if !out.iter().any(|(t, _)| t == w) {
            eprintln!("note: {w} does not exist (no dead letters yet)");
        }
    }
    Ok(out)
}

/// Reads every record of `topics` from `since` (by timestamp) up to the end
/// offsets of when it started, calling `f` on each; returns how many records
/// the range held.
pub fn scan(
    bootstrap: &str,
    topics: &[(String, Vec<i32>)],
    since: Option<DateTime<Utc>>,
    mut total: impl FnMut(u64),
    mut f: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if topics.is_empty() {
        total(0);
        return Ok(());
    }
    let c = consumer(bootstrap)?;
    let marks = end_offsets_of(bootstrap, topics)?;
    let mut starts: BTreeMap<(String, i32), i64> = marks
        .iter()
        .map(|(k, (low, _))| (k.clone(), *low))
        .collect();
    if let Some(since) = since {
        let mut tpl = TopicPartitionList::new();
        for (t, ps) in topics {
            for p in ps {
                tpl.add_partition_offset(t, *p, Offset::Offset(since.timestamp_millis()))?;
            }
        }
        for e in c.offsets_for_times(tpl, TIMEOUT)?.elements() {
            let key = (e.topic().to_string(), e.partition());
            let end = marks.get(&key).map_or(0, |m| m.1);
            let at = match e.offset() {
                Offset::Offset(o) if o >= 0 => o,
                _ => end,
            };
            starts.insert(key, at);
        }
    }
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<(String, i32), i64> = HashMap::new();
    let mut count = 0u64;
    for (key, start) in &starts {
        let end = marks.get(key).map_or(0, |m| m.1);
        if end > *start {
            tpl.add_partition_offset(&key.0, key.1, Offset::Offset(*start))?;
            remaining.insert(key.clone(), end);
            count += (end - start) as u64;
        }
    }
    total(count);
    if remaining.is_empty() {
        return Ok(());
    }
    c.assign(&tpl)?;
    let mut idle_since = Instant::now();
    while !remaining.is_empty() {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                let key = (m.topic().to_string(), m.partition());
                let Some(end) = remaining.get(&key).copied() else {
                    continue;
                };
                if m.offset() < end {
                    f(&m)?;
                }
                if m.offset() + 1 >= end {
                    remaining.remove(&key);
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                // An EOF names only the partition: ask where each topic's
                // partition p stands (offset gaps end a partition early).
                let position = c.position()?;
                remaining.retain(|(topic, part), end| {
                    *part != p
                        || !matches!(
                            position.find_partition(topic, p).map(|e| e.offset()),
                            Some(Offset::Offset(at)) if at >= *end
                        )
                });
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                if idle_since.elapsed() > TIMEOUT {
                    anyhow::bail!(
                        "no records for {TIMEOUT:?} while reading dead letters; {} partition(s) unfinished",
                        remaining.len()
                    );
                }
            }
        }
    }
    Ok(())
}

fn wanted(source: &Source, d: &DeadLetter) -> bool {
    let class_ok = source.class.as_ref().is_none_or(|c| *c == d.class());
    let since_ok = match (source.since, d.written_ms) {
        (Some(s), Some(t)) => t >= s.timestamp_millis(),
        _ => true,
    };
    let until_ok = match (source.until, d.written_ms) {
        (Some(u), Some(t)) => t < u.timestamp_millis(),
        _ => true,
    };
    class_ok && since_ok && until_ok
}

/// `gale dlq list`.
pub fn list(args: &ListArgs) -> anyhow::Result<String> {
    let topics = topics(&args.source)?;
    let mut summary = Summary::new();
    scan(
        &args.source.bootstrap,
        &topics,
        args.source.since,
        |_| {},
        |m| {
            let d = DeadLetter::from_message(m);
            if wanted(&args.source, &d) {
                summarize(&mut summary, &d);
            }
            Ok(())
        },
    )?;
    Ok(render_summary(&summary, args.top))
}

/// A payload shown safely: text when it is UTF-8 without control
/// characters, hex otherwise.
pub fn safe_text(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => json!(s),
        _ => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            json!({ "hex": hex })
        }
    }
}

/// `gale dlq show`: JSON lines.
pub async fn show(args: &ShowArgs) -> anyhow::Result<Vec<serde_json::Value>> {
    let source = args.source.clone();
    let limit = args.limit;
    let letters = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<DeadLetter>> {
        let topics = topics(&source)?;
        let mut out = Vec::new();
        scan(
            &source.bootstrap,
            &topics,
            source.since,
            |_| {},
            |m| {
                let d = DeadLetter::from_message(m);
                if out.len() < limit && wanted(&source, &d) {
                    out.push(d);
                }
                Ok(())
            },
        )?;
        Ok(out)
    })
    .await??;
    let decoder = schema_registry_converter::async_impl::avro::AvroDecoder::new(
        schema_registry_converter::async_impl::schema_registry::SrSettings::new(
            args.registry_url.clone(),
        ),
    );
    let mut out = Vec::new();
    for d in letters {
        let value = if gale_runtime::avro::split_wire(&d.payload).is_ok() {
            match decoder.decode(Some(&d.payload)).await {
                Ok(v) => serde_json::Value::try_from(v.value)
                    .map(|v| json!({ "avro": v }))
                    .unwrap_or_else(|_| safe_text(&d.payload)),
                Err(_) => safe_text(&d.payload),
            }
        } else {
            safe_text(&d.payload)
        };
        let headers: BTreeMap<String, serde_json::Value> = d
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_deref().map_or(serde_json::Value::Null, safe_text),
                )
            })
            .collect();
        out.push(json!({
            "topic": d.topic,
            "partition": d.partition,
            "offset": d.offset,
            "written": time(d.written_ms),
            "stage": d.stage(),
            "class": d.class(),
            "message": d.header(h::ERROR_MESSAGE),
            "key": d.key.as_deref().map(safe_text),
            "headers": headers,
            "value": value,
        }));
    }
    Ok(out)
}

/// Why a dead letter was not redriven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    /// A marker says it was redriven already.
    AlreadyRedriven,
    /// It has been redriven `--max-redrives` times.
    LimitReached,
    /// Its class, time or stage is outside the filters.
    Filtered,
    /// No original topic header, or the topic is gone (ingest's rows of a
    /// dropped file need `--ingest-config`).
    NoOriginalTopic,
    /// The payload was truncated and the original record is no longer on its topic.
    OriginalGone,
    /// An ingest dead letter that is not a row (a whole file, a row the broker refused).
    NotARow,
    /// No file drop of the ingest config watches the file it came from.
    NoFileDrop,
    /// The dropped CSV file is gone, and with it the header row to read the row with.
    FileGone,
    /// The current mapping reads the row, but every metric value is missing.
    NothingToSend,
}

impl Skip {
    /// Text for the summary.
    pub fn text(self) -> &'static str {
        match self {
            Skip::AlreadyRedriven => "already redriven",
            Skip::LimitReached => "redrive limit reached",
            Skip::Filtered => "outside the filters",
            Skip::NoOriginalTopic => {
                "no original topic to send back to (ingest's rows need --ingest-config)"
            }
            Skip::OriginalGone => "truncated and the original is gone",
            Skip::NotARow => {
                "not a row (only unparseable_row is read again; drop the fixed file again)"
            }
            Skip::NoFileDrop => "no file drop of the ingest config watches its file",
            Skip::FileGone => "file gone (its CSV header row is needed)",
            Skip::NothingToSend => "every metric value missing; nothing to send",
        }
    }
}

/// What a redrive did.
#[derive(Debug, Default)]
pub struct RedriveReport {
    /// Redriven per (original topic, class).
    pub redriven: BTreeMap<(String, String), u64>,
    /// Skipped per reason and class.
    pub skipped: BTreeMap<(Skip, String), u64>,
    /// Ingest rows the current mapping still cannot read, per dead-letter
    /// topic they went back to.
    pub failed_again: BTreeMap<String, u64>,
}

impl RedriveReport {
    /// Records redriven.
    pub fn redriven_total(&self) -> u64 {
        self.redriven.values().sum()
    }

    /// The closing summary.
    pub fn render(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would redrive" } else { "redriven" };
        let mut s = format!("{verb}: {}\n", self.redriven_total());
        for ((topic, class), n) in &self.redriven {
            s.push_str(&format!("    {n:>8}  {class} -> {topic}\n"));
        }
        let failed: u64 = self.failed_again.values().sum();
        if failed > 0 {
            let verb = if dry_run {
                "would fail again"
            } else {
                "failed again, back to the dead letters"
            };
            s.push_str(&format!("{verb}: {failed}\n"));
            for (topic, n) in &self.failed_again {
                s.push_str(&format!("    {n:>8}  unparseable_row -> {topic}\n"));
            }
        }
        let skipped: u64 = self.skipped.values().sum();
        if skipped > 0 {
            s.push_str(&format!("skipped: {skipped}\n"));
            for ((why, class), n) in &self.skipped {
                s.push_str(&format!("    {n:>8}  {class}: {}\n", why.text()));
            }
        }
        s
    }
}

/// The checks every dead letter passes before it goes back: the filters,
/// no marker, below the redrive limit.
pub fn checks(
    d: &DeadLetter,
    source: &Source,
    max_redrives: u32,
    markers: &HashSet<String>,
) -> Result<(), Skip> {
    if !wanted(source, d) {
        return Err(Skip::Filtered);
    }
    if markers.contains(&d.marker()) {
        return Err(Skip::AlreadyRedriven);
    }
    if d.redrives() >= max_redrives {
        return Err(Skip::LimitReached);
    }
    Ok(())
}

/// Decides whether `d` goes back, given the markers and the topics that exist.
pub fn decide(
    d: &DeadLetter,
    source: &Source,
    max_redrives: u32,
    markers: &HashSet<String>,
    existing: &HashSet<String>,
) -> Result<String, Skip> {
    checks(d, source, max_redrives, markers)?;
    match d.origin().0 {
        Some(t) if existing.contains(&t) => Ok(t),
        _ => Err(Skip::NoOriginalTopic),
    }
}

fn producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        // The partitioner Gale's services and Java clients use, so a
        // redriven record lands where its key's records are.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()?)
}

/// Reads the original record of a truncated dead letter from its topic.
fn original_value(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> Option<Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "gale-cli-dlq-original")
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .ok()?;
    c.assign(&tpl).ok()?;
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
            return (m.offset() == offset).then(|| m.payload().unwrap_or(&[]).to_vec());
        }
    }
    None
}

/// One record a redrive sends: a dead letter's original bytes to its topic,
/// an ingest row's reading to the raw topic, or a row that failed again back
/// to the dead-letter topic.
struct Outgoing<'a> {
    d: &'a DeadLetter,
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
    failed_again: bool,
}

fn owned(headers: Vec<(String, Vec<u8>)>) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    for (k, v) in headers {
        out = out.insert(Header {
            key: &k,
            value: Some(&v),
        });
    }
    out
}

/// `gale dlq redrive`.
pub async fn redrive(args: &RedriveArgs) -> anyhow::Result<RedriveReport> {
    let bootstrap = args.source.bootstrap.clone();
    let mut ingest = match &args.ingest_config {
        Some(file) => Some(crate::dlq_ingest::IngestRedriver::load(file)?),
        None => None,
    };
    let marker_topic = args.marker_topic.clone();
    // Markers and existing topics first (blocking reads).
    let (topics, existing, markers) = {
        let source = args.source.clone();
        let marker_topic = marker_topic.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let topics = topics(&source)?;
            let c = consumer(&source.bootstrap)?;
            let md = c
                .fetch_metadata(None, TIMEOUT)
                .map_err(|e| broker_unreachable(&source.bootstrap, &e))?;
            let existing: HashSet<String> =
                md.topics().iter().map(|t| t.name().to_string()).collect();
            let mut markers = HashSet::new();
            if let Some(t) = md.topics().iter().find(|t| t.name() == marker_topic) {
                let parts = vec![(
                    marker_topic.clone(),
                    t.partitions().iter().map(|p| p.id()).collect(),
                )];
                scan(
                    &source.bootstrap,
                    &parts,
                    None,
                    |_| {},
                    |m| {
                        if let Some(k) = m.key() {
                            markers.insert(String::from_utf8_lossy(k).into_owned());
                        }
                        Ok(())
                    },
                )?;
            }
            Ok((topics, existing, markers))
        })
        .await??
    };
    if let Some(i) = &ingest {
        if !existing.contains(i.raw_topic()) {
            anyhow::bail!(
                "ingest's raw topic {} does not exist; start ingest once, or check topics.raw in --ingest-config",
                i.raw_topic()
            );
        }
    }
    if !args.dry_run && !existing.contains(&marker_topic) {
        let config = gale_runtime::config::KafkaConfig {
            bootstrap_servers: bootstrap.clone(),
            ..Default::default()
        };
        // Compacted, and deleted after longer than dead letters are kept
        // (30 days), so markers do not pile up for ever.
        gale_runtime::kafka::ensure_topic_with(
            &config,
            &marker_topic,
            1,
            &[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", MARKER_RETENTION_MS),
            ],
        )
        .await?;
    }
    // The scan runs on a blocking thread and hands batches over.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<DeadLetter>>(4);
    let (total_tx, total_rx) = tokio::sync::oneshot::channel::<u64>();
    let scan_source = args.source.clone();
    let scanner = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut batch = Vec::new();
        let mut total_tx = Some(total_tx);
        scan(
            &scan_source.bootstrap,
            &topics,
            scan_source.since,
            |n| {
                if let Some(t) = total_tx.take() {
                    let _ = t.send(n);
                }
            },
            |m| {
                batch.push(DeadLetter::from_message(m));
                if batch.len() >= 500 {
                    tx.blocking_send(std::mem::take(&mut batch))
                        .map_err(|_| anyhow::anyhow!("redrive stopped"))?;
                }
                Ok(())
            },
        )?;
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        Ok(())
    });
    let total = total_rx.await.unwrap_or(0);
    let bar = if args.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} dead letters, {per_sec}, eta {eta}",
            )
            .expect("template"),
        )
    };
    let producer = producer(&bootstrap)?;
    let mut report = RedriveReport::default();
    while let Some(batch) = rx.recv().await {
        let now = Utc::now();
        let mut sends: Vec<Outgoing<'_>> = Vec::new();
        for d in &batch {
            if let (Some(ingest), "ingest") = (ingest.as_mut(), d.stage().as_str()) {
                if let Err(why) = checks(d, &args.source, args.max_redrives, &markers) {
                    *report.skipped.entry((why, d.class())).or_default() += 1;
                    continue;
                }
                let reread = match ingest.reread(d).await {
                    Ok(r) => r,
                    Err(why) => {
                        *report.skipped.entry((why, d.class())).or_default() += 1;
                        continue;
                    }
                };
                match reread {
                    Reread::Reading(_) if args.dry_run => {
                        let key = (ingest.raw_topic().to_string(), d.class());
                        *report.redriven.entry(key).or_default() += 1;
                    }
                    Reread::Failed(_) if args.dry_run => {
                        *report.failed_again.entry(d.topic.clone()).or_default() += 1;
                    }
                    Reread::Reading(r) => sends.push(Outgoing {
                        d,
                        topic: ingest.raw_topic().to_string(),
                        key: Some(r.asset_id.clone().into_bytes()),
                        payload: ingest.encode(&r).await?,
                        headers: owned(crate::dlq_ingest::reading_headers(d, now)),
                        failed_again: false,
                    }),
                    Reread::Failed(why) => sends.push(Outgoing {
                        d,
                        topic: d.topic.clone(),
                        key: d.key.clone(),
                        payload: d.payload.clone(),
                        headers: crate::dlq_ingest::dead_letter_headers(d, &why, now),
                        failed_again: true,
                    }),
                }
                continue;
            }
            match decide(d, &args.source, args.max_redrives, &markers, &existing) {
                Err(why) => *report.skipped.entry((why, d.class())).or_default() += 1,
                Ok(topic) => {
                    let (_, partition, offset, _) = d.origin();
                    let truncated = d.header(h::PAYLOAD_TRUNCATED).as_deref() == Some("true");
                    let payload = if truncated {
                        let (b, t) = (bootstrap.clone(), topic.clone());
                        let original = match (partition, offset) {
                            (Some(p), Some(o)) => {
                                tokio::task::spawn_blocking(move || original_value(&b, &t, p, o))
                                    .await?
                                    .filter(|v| v.len() > d.payload.len())
                            }
                            _ => None,
                        };
                        match original {
                            Some(v) => v,
                            None => {
                                *report
                                    .skipped
                                    .entry((Skip::OriginalGone, d.class()))
                                    .or_default() += 1;
                                continue;
                            }
                        }
                    } else {
                        d.payload.clone()
                    };
                    if args.dry_run {
                        *report.redriven.entry((topic, d.class())).or_default() += 1;
                        continue;
                    }
                    sends.push(Outgoing {
                        d,
                        topic,
                        key: d.key.clone(),
                        payload,
                        headers: owned(d.redrive_headers(now)),
                        failed_again: false,
                    });
                }
            }
        }
        // Send the batch, wait for every acknowledgement, then the markers.
        let mut acks = Vec::new();
        for o in &sends {
            let mut record = FutureRecord::<[u8], [u8]>::to(&o.topic)
                .payload(&o.payload)
                .headers(o.headers.clone());
            if let Some(k) = &o.key {
                record = record.key(k);
            }
            acks.push(producer.send(record, Duration::from_secs(60)));
        }
        let mut markers_out = Vec::new();
        for (o, ack) in sends.iter().zip(futures::future::join_all(acks).await) {
            let (d, topic) = (o.d, &o.topic);
            let delivered =
                ack.map_err(|(e, _)| anyhow::anyhow!("redriving {} to {topic}: {e}", d.marker()))?;
            let (partition, offset) = (delivered.partition, delivered.offset);
            if o.failed_again {
                *report.failed_again.entry(topic.clone()).or_default() += 1;
            } else {
                *report
                    .redriven
                    .entry((topic.clone(), d.class()))
                    .or_default() += 1;
            }
            markers_out.push((
                d.marker(),
                json!({
                    "redriven_at": now.to_rfc3339(),
                    "to_topic": topic,
                    "to_partition": partition,
                    "to_offset": offset,
                    "class": d.class(),
                })
                .to_string(),
            ));
        }
        let marks = markers_out.iter().map(|(k, v)| {
            producer.send(
                FutureRecord::<str, str>::to(&marker_topic)
                    .key(k)
                    .payload(v),
                Duration::from_secs(60),
            )
        });
        for r in futures::future::join_all(marks).await {
            r.map_err(|(e, _)| anyhow::anyhow!("writing a redrive marker: {e}"))?;
        }
        bar.inc(batch.len() as u64);
    }
    scanner.await??;
    bar.finish_and_clear();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(offset: i64, class: &str, message: &str, extra: &[(&str, &str)]) -> DeadLetter {
        let mut headers = vec![
            ("traceparent".to_string(), Some(b"00-abc".to_vec())),
            (h::STAGE.to_string(), Some(b"validate".to_vec())),
            (h::ERROR_CLASS.to_string(), Some(class.as_bytes().to_vec())),
            (
                h::ERROR_MESSAGE.to_string(),
                Some(message.as_bytes().to_vec()),
            ),
            (h::ORIGINAL_TOPIC.to_string(), Some(b"gale.raw".to_vec())),
            (h::ORIGINAL_PARTITION.to_string(), Some(b"2".to_vec())),
            (h::ORIGINAL_OFFSET.to_string(), Some(b"41".to_vec())),
            (
                h::ORIGINAL_TIMESTAMP.to_string(),
                Some(b"2025-03-01T00:00:00.000Z".to_vec()),
            ),
        ];
        headers.extend(
            extra
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec()))),
        );
        DeadLetter {
            topic: "gale.dlq.validate".into(),
            partition: 0,
            offset,
            written_ms: Some(1_000 * offset),
            key: Some(b"T-1".to_vec()),
            payload: vec![0, 1, 2],
            headers,
        }
    }

    fn source() -> Source {
        Source {
            stage: vec![],
            topic: vec![],
            since: None,
            until: None,
            class: None,
            bootstrap: String::new(),
        }
    }

    #[test]
    fn summaries_count_by_class_with_top_messages_and_times() {
        let mut s = Summary::new();
        for (o, c, m) in [
            (3, "unknown_asset", "unknown asset T-9"),
            (1, "unknown_asset", "unknown asset T-9"),
            (2, "unknown_asset", "unknown asset T-8"),
            (5, "malformed", "not Avro"),
        ] {
            summarize(&mut s, &letter(o, c, m, &[]));
        }
        let u = &s[&(
            "gale.dlq.validate".into(),
            "validate".into(),
            "unknown_asset".into(),
        )];
        assert_eq!(
            (u.count, u.first_ms, u.last_ms),
            (3, Some(1000), Some(3000))
        );
        assert_eq!(
            u.top(1),
            vec![("unknown asset T-9", 2)],
            "the most frequent message first"
        );
        let text = render_summary(&s, 3);
        assert!(text.contains("4 dead letter(s)"), "{text}");
        assert!(text.contains("malformed"), "{text}");
    }

    #[test]
    fn redrive_headers_keep_the_originals_and_count() {
        let d = letter(7, "unknown_asset", "x", &[(REDRIVE_COUNT, "1")]);
        let now = Utc.timestamp_millis_opt(0).unwrap();
        let hs = d.redrive_headers(now);
        let keys: Vec<&str> = hs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "traceparent",
                REDRIVE_COUNT,
                REDRIVE_TIME,
                REDRIVE_SOURCE,
                h::REDRIVE_STAGE
            ]
        );
        assert_eq!(hs[1].1, b"2");
        assert_eq!(hs[3].1, b"gale.dlq.validate/0/7@7000");
        assert_eq!(hs[4].1, b"validate");
        assert_eq!(d.origin().3, Some(1_740_787_200_000));
    }

    #[test]
    fn decide_skips_marked_limited_filtered_and_orphaned() {
        let existing: HashSet<String> = ["gale.raw".to_string()].into();
        let mut markers = HashSet::new();
        let d = letter(1, "unknown_asset", "x", &[]);
        assert_eq!(
            decide(&d, &source(), 3, &markers, &existing),
            Ok("gale.raw".into())
        );
        markers.insert(d.marker());
        assert_eq!(
            decide(&d, &source(), 3, &markers, &existing),
            Err(Skip::AlreadyRedriven)
        );
        let d = letter(2, "unknown_asset", "x", &[(REDRIVE_COUNT, "3")]);
        assert_eq!(
            decide(&d, &source(), 3, &markers, &existing),
            Err(Skip::LimitReached)
        );
        let mut s = source();
        s.class = Some("malformed".into());
        assert_eq!(decide(&d, &s, 3, &markers, &existing), Err(Skip::Filtered));
        let d = letter(3, "c", "x", &[]);
        assert_eq!(
            decide(&d, &source(), 3, &markers, &HashSet::new()),
            Err(Skip::NoOriginalTopic)
        );
    }

    #[test]
    fn payloads_show_as_text_or_hex() {
        assert_eq!(safe_text(b"a,b\n"), json!("a,b\n"));
        assert_eq!(safe_text(&[0, 0xff]), json!({"hex": "00ff"}));
    }
}
