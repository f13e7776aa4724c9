//! Durable keyed state: what a stage remembers survives crashes, restarts
//! and rebalances, and always matches the input offsets it goes on from.
//!
//! # The model
//!
//! A stage keeps one value per input record key (the asset id, for
//! readings) and per input partition: a processor handling a record sees
//! the value of that record's key in a [`Slot`] and may change or delete
//! it. Each input partition also has a watermark: the largest event time
//! seen on it, less the configured lateness.
//!
//! # Durability without transactions
//!
//! Every change is written to a changelog topic (`gale.state.<service>`,
//! `cleanup.policy=compact`, as many partitions as the input, changelog
//! partition = input partition, record key = state key), the way Kafka
//! Streams does. The local broker has no transactions, so outputs, state
//! and offsets cannot commit atomically; consistency comes from the order
//! of the writes and from what each changelog record carries:
//!
//! 1. a batch's outputs are acknowledged;
//! 2. then the values of the keys it changed, each with a `gale.state.covers`
//!    header: the input offset after the batch's last record of that
//!    partition (tombstones for deleted keys carry it too);
//! 3. once those are acknowledged, a marker per partition (key
//!    `\0gale.partition`): the same offset and the watermark;
//! 4. then the input offsets are stored.
//!
//! A key's value in the changelog therefore reflects every record of that
//! key below its `covers` offset, and every record below the last marker is
//! reflected in the whole partition's state. When a partition is assigned,
//! its changelog partition is read to the end (the last write per key wins,
//! so a broker that does not compact is slower to restore, not wrong) before
//! any of its records is processed. Records below the marker are skipped;
//! records of a key below that key's `covers` (a crash between steps 2 and
//! 4 left some keys ahead) are skipped for that key only, their outputs
//! having been acknowledged in step 1. Records that are not skipped are
//! processed against exactly the state they were first processed against,
//! so a replay after a crash emits the same outputs (which carry the same
//! ids) and the state never counts a record twice or leaves one out.
//!
//! A zombie (an instance that lost its partitions without noticing) could
//! still write to a changelog partition; only transactions fence it. The
//! runtime stops writing for a partition as soon as it is revoked.
//!
//! # Timers
//!
//! A processor asks to be called again for a key when its partition's
//! watermark reaches an event time ([`crate::pipeline::Processor::timer`],
//! computed from the key's value, so it is restored with the state and not
//! stored separately). The store keeps an index of those times; after each
//! record the runtime calls [`crate::pipeline::Processor::on_timer`] for every
//! key whose time the watermark has reached, in (time, key) order. Its
//! outputs travel with the record's outputs (acknowledged before any offset
//! moves) and its changes with the record's state changes. Since the
//! watermark follows the records, a replay fires the same timers at the same
//! records: backfilled data from 2014 behaves as live data does.
//!
//! A partition that receives nothing holds its watermark still, which would
//! keep a silent asset on a quiet partition from ever being noticed. With
//! `state.idle_timeout` set, a partition that has been quiet that long (by the
//! wall clock) while its data was live (its last record's event time was
//! within the timeout of the wall clock) has its event time moved to the
//! wall clock less the timeout, and its timers fire without a record. This
//! changes only when a timer's output appears, never what it says: outputs
//! are computed from state, and the same timer fires with the same content
//! when records move the watermark there in a replay. A backfill (event
//! times far behind the wall clock) is never live, so its time never jumps.
//!
//! # Expiry
//!
//! [`crate::pipeline::Processor::expired`] says when a value is of no more
//! use at a given watermark. An expired value is handed to the processor as
//! absent and deleted, and a periodic sweep deletes expired values of keys
//! that see no records; since the watermark only grows, when the sweep runs
//! does not change any result.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{KafkaConfig, StateConfig};
use crate::outbox::Outgoing;
use crate::sink::Outage;
use crate::Error;

/// Header: the input offset a changelog record covers.
pub const COVERS: &str = "gale.state.covers";
/// Key of a partition's marker record.
pub const MARKER_KEY: &[u8] = b"\x00gale.partition";

/// A value a stage keeps per key. Implement it (no methods needed) for the
/// processor's state type; `()` means the stage keeps no state.
pub trait StateValue: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// True only for `()`: no changelog, nothing restored.
    const STATELESS: bool = false;
}

impl StateValue for () {
    const STATELESS: bool = true;
}

/// The value of one key while a record of that key is processed.
#[derive(Debug)]
pub struct Slot<S> {
    value: Option<S>,
    changed: bool,
    /// The covers offset of the value taken out of the store.
    covers: i64,
    /// The store's own copy of the key, reused when the value goes back.
    key: Option<Vec<u8>>,
    /// The key is already among the changes to write.
    dirty: bool,
}

impl<S> Slot<S> {
    /// A slot holding `value` (tests, tools).
    pub fn new(value: Option<S>) -> Self {
        Slot {
            value,
            changed: false,
            covers: 0,
            key: None,
            dirty: false,
        }
    }

    /// The current value, if any.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// The current value to change in place. Change state only on the way to
    /// returning `Ok` (or `Reject`): a `Retry` or `Outage` hands the same
    /// record over again, and it must meet the same state.
    pub fn get_mut(&mut self) -> Option<&mut S> {
        self.changed = true;
        self.value.as_mut()
    }

    /// Replaces the value.
    pub fn set(&mut self, value: S) {
        self.value = Some(value);
        self.changed = true;
    }

    /// Deletes the value (a tombstone in the changelog).
    pub fn remove(&mut self) {
        if self.value.is_some() {
            self.value = None;
            self.changed = true;
        }
    }

    /// True when the value was set, changed or removed.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The value, consumed.
    pub fn into_inner(self) -> Option<S> {
        self.value
    }
}

struct Entry<S> {
    value: S,
    /// Records of this key below this offset are reflected in `value`.
    covers: i64,
    /// The key is in its partition's `dirty` set.
    dirty: bool,
}

/// What a partition's marker says.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
struct Marker {
    /// Every record below this offset is reflected in the partition's state.
    next_offset: i64,
    /// Largest event time (ms) seen below `next_offset`.
    max_event_time: Option<i64>,
}

/// The state of one input partition.
struct Partition<S> {
    entries: FxHashMap<Vec<u8>, Entry<S>>,
    /// Keys deleted by a batch whose marker was not written, with the
    /// offset the deletion covers.
    deleted_ahead: FxHashMap<Vec<u8>, i64>,
    marker: Marker,
    /// The largest `covers` restored: below it, records of some keys may be
    /// reflected in the state already; at and above it, none is.
    ahead_until: i64,
    /// Largest event time seen so far (including this batch).
    max_event_time: Option<i64>,
    /// Keys changed by the batch in hand.
    dirty: FxHashSet<Vec<u8>>,
    /// Whether the batch in hand moved the watermark or changed a key.
    touched: bool,
    /// Timers: (event time, key), and each key's time.
    timers: BTreeSet<(i64, Vec<u8>)>,
    due: FxHashMap<Vec<u8>, i64>,
    /// When the partition last saw a record (wall clock).
    last_record: Option<Instant>,
    /// Whether its last record's event time was close to the wall clock.
    live: bool,
}

impl<S> Default for Partition<S> {
    fn default() -> Self {
        Partition {
            entries: FxHashMap::default(),
            deleted_ahead: FxHashMap::default(),
            marker: Marker::default(),
            ahead_until: 0,
            max_event_time: None,
            dirty: FxHashSet::default(),
            touched: false,
            timers: BTreeSet::new(),
            due: FxHashMap::default(),
            last_record: None,
            live: false,
        }
    }
}

impl<S> Partition<S> {
    fn set_due(&mut self, key: &[u8], due: Option<i64>) {
        match (self.due.get(key).copied(), due) {
            (Some(old), Some(new)) if old == new => {}
            (old, new) => {
                if let Some(old) = old {
                    let k = self.due.remove_entry(key).map(|(k, _)| k);
                    let k = k.unwrap_or_else(|| key.to_vec());
                    self.timers.remove(&(old, k));
                }
                if let Some(new) = new {
                    self.timers.insert((new, key.to_vec()));
                    self.due.insert(key.to_vec(), new);
                }
            }
        }
    }
}

/// The changelog records of one batch: the values first, markers after
/// their acknowledgement.
pub struct Changes {
    /// Values and tombstones of the changed keys.
    pub values: Vec<Outgoing>,
    /// One marker per partition the batch touched.
    pub markers: Vec<Outgoing>,
}

/// The keyed state of every input partition a stage owns.
pub struct StateStore<S> {
    /// The changelog topic.
    topic: String,
    /// Index of the changelog among the loop's state outbox targets.
    target: usize,
    lateness: i64,
    idle_timeout: Option<Duration>,
    kafka: KafkaConfig,
    parts: FxHashMap<i32, Partition<S>>,
    last_sweep: Instant,
    sweep_every: Duration,
}

/// Name of the changelog topic of `service` consuming as `group`: its own
/// when the group is the default `gale-<service>`, else one per group, so a
/// stage rebuilt under a fresh group starts from empty state.
pub fn changelog_topic(service: &str, group: &str) -> String {
    if group == format!("gale-{service}") {
        format!("gale.state.{service}")
    } else {
        format!("gale.state.{group}")
    }
}

impl<S: StateValue> StateStore<S> {
    /// A store writing to `topic` (target `target` of the state outbox).
    pub fn new(topic: String, target: usize, config: &StateConfig, kafka: &KafkaConfig) -> Self {
        StateStore {
            topic,
            target,
            lateness: i64::try_from(config.lateness.as_millis()).unwrap_or(i64::MAX),
            idle_timeout: (!config.idle_timeout.is_zero()).then_some(config.idle_timeout),
            kafka: kafka.clone(),
            parts: FxHashMap::default(),
            last_sweep: Instant::now(),
            sweep_every: config.sweep_interval,
        }
    }

    /// The changelog topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// True when `partition` was restored since it was assigned.
    pub fn is_open(&self, partition: i32) -> bool {
        self.parts.contains_key(&partition)
    }

    /// Forgets the state of partitions this instance no longer owns.
    pub fn revoked(&mut self, partitions: &[i32]) {
        for p in partitions {
            if self.parts.remove(p).is_some() {
                metrics::gauge!("gale_state_keys", "partition" => p.to_string()).set(0.0);
            }
        }
    }

    /// Reads changelog partition `partition` to its end and makes it the
    /// state of input partition `partition`. Returns the marker's offset
    /// (every record below it is already reflected), if there is one.
    pub async fn restore(&mut self, partition: i32) -> Result<Option<i64>, Outage> {
        let started = Instant::now();
        let kafka = self.kafka.clone();
        let topic = self.topic.clone();
        let records =
            tokio::task::spawn_blocking(move || read_partition(&kafka, &topic, partition))
                .await
                .map_err(|e| Outage {
                    dependency: "broker",
                    message: format!("state restore task failed: {e}"),
                })??;
        let count = records.len();
        let part = build_partition::<S>(records).map_err(|e| {
            // Not an outage: the stored state cannot be read as the state
            // this version keeps. Going on would lose it silently.
            tracing::error!(topic = %self.topic, partition, error = %e, "cannot read the stage's stored state; stopping (reset the state to start from empty)");
            std::process::exit(6);
        })?;
        let marker = (part.marker.next_offset > 0).then_some(part.marker.next_offset);
        let keys = part.entries.len();
        self.parts.insert(partition, part);
        let seconds = started.elapsed().as_secs_f64();
        metrics::gauge!("gale_state_restore_seconds", "partition" => partition.to_string())
            .set(seconds);
        metrics::counter!("gale_state_restored_records_total").increment(count as u64);
        metrics::gauge!("gale_state_keys", "partition" => partition.to_string()).set(keys as f64);
        tracing::info!(
            topic = %self.topic,
            partition,
            records = count,
            keys,
            marker = ?marker,
            seconds,
            "state restored"
        );
        Ok(marker)
    }

    /// The watermark of `partition` before the record in hand: the largest
    /// event time seen, less the lateness.
    pub fn watermark(&self, partition: i32) -> Option<i64> {
        self.parts
            .get(&partition)
            .and_then(|p| p.max_event_time)
            .map(|t| t.saturating_sub(self.lateness))
    }

    /// True when the record at `offset` with `key` is already reflected in
    /// the state (and its outputs were delivered): skip it.
    pub fn covered(&self, partition: i32, offset: i64, key: &[u8]) -> bool {
        let Some(part) = self.parts.get(&partition) else {
            return false;
        };
        offset < part.marker.next_offset
            || (offset < part.ahead_until
                && (part.entries.get(key).is_some_and(|e| offset < e.covers)
                    || part.deleted_ahead.get(key).is_some_and(|c| offset < *c)))
    }

    /// Takes in an event time seen on `partition`.
    pub fn observe(&mut self, partition: i32, event_time: Option<i64>) {
        let part = self.parts.entry(partition).or_default();
        if let Some(timeout) = self.idle_timeout {
            part.last_record = Some(Instant::now());
            part.live = event_time.is_some_and(|t| {
                let now = chrono::Utc::now().timestamp_millis();
                t >= now - i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)
            });
        }
        let Some(t) = event_time else { return };
        if part.max_event_time.is_none_or(|m| t > m) {
            part.max_event_time = Some(t);
            part.touched = true;
        }
    }

    /// The slot of `key` on `partition`; a value `expired` at the current
    /// watermark is handed over as absent (and deleted).
    pub fn take(
        &mut self,
        partition: i32,
        key: &[u8],
        expired: impl Fn(&S, i64) -> bool,
    ) -> Slot<S> {
        let watermark = self.watermark(partition);
        let part = self.parts.entry(partition).or_default();
        let Some((stored_key, entry)) = part.entries.remove_entry(key) else {
            return Slot::new(None);
        };
        if watermark.is_some_and(|w| expired(&entry.value, w)) {
            part.set_due(&stored_key, None);
            part.dirty.insert(stored_key);
            part.touched = true;
            return Slot {
                value: None,
                changed: false,
                covers: entry.covers,
                key: None,
                dirty: true,
            };
        }
        Slot {
            value: Some(entry.value),
            changed: false,
            covers: entry.covers,
            key: Some(stored_key),
            dirty: entry.dirty,
        }
    }

    /// Puts `slot` back after the record of `key` was handled.
    pub fn put(&mut self, partition: i32, key: &[u8], slot: Slot<S>) {
        let part = self.parts.entry(partition).or_default();
        if slot.changed {
            if !slot.dirty {
                part.dirty.insert(key.to_vec());
            }
            part.touched = true;
        }
        if let Some(value) = slot.value {
            part.entries.insert(
                slot.key.unwrap_or_else(|| key.to_vec()),
                Entry {
                    value,
                    covers: slot.covers,
                    dirty: slot.dirty || slot.changed,
                },
            );
        }
    }

    /// Builds the timer index of a restored partition from its values.
    pub fn index_timers(&mut self, partition: i32, timer: impl Fn(&S) -> Option<i64>) {
        let Some(part) = self.parts.get_mut(&partition) else {
            return;
        };
        let dues: Vec<(Vec<u8>, i64)> = part
            .entries
            .iter()
            .filter_map(|(k, e)| timer(&e.value).map(|t| (k.clone(), t)))
            .collect();
        for (k, t) in dues {
            part.set_due(&k, Some(t));
        }
    }

    /// Sets when `key` wants its timer called (`None`: never).
    pub fn set_timer(&mut self, partition: i32, key: &[u8], due: Option<i64>) {
        if let Some(part) = self.parts.get_mut(&partition) {
            part.set_due(key, due);
        } else if due.is_some() {
            self.parts.entry(partition).or_default().set_due(key, due);
        }
    }

    /// The next key of `partition` whose timer the watermark has reached,
    /// removed from the index (the caller sets its next time).
    pub fn pop_due(&mut self, partition: i32) -> Option<(Vec<u8>, i64)> {
        let watermark = self.watermark(partition)?;
        let part = self.parts.get_mut(&partition)?;
        let first = part.timers.first()?;
        if first.0 > watermark {
            return None;
        }
        let (due, key) = part.timers.pop_first()?;
        part.due.remove(&key);
        Some((key, due))
    }

    /// Timers waiting on all partitions (a metric).
    pub fn timers(&self) -> usize {
        self.parts.values().map(|p| p.timers.len()).sum()
    }

    /// Moves the event time of partitions that have been quiet for the idle
    /// timeout while their data was live to the wall clock less the timeout
    /// (see the module docs); returns those whose watermark moved.
    pub fn advance_idle(&mut self) -> Vec<i32> {
        let Some(timeout) = self.idle_timeout else {
            return Vec::new();
        };
        let now = chrono::Utc::now().timestamp_millis();
        let to = now - i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let mut moved = Vec::new();
        for (&p, part) in self.parts.iter_mut() {
            let quiet = part.last_record.is_some_and(|at| at.elapsed() >= timeout);
            if quiet && part.live && part.max_event_time.is_some_and(|m| m < to) {
                part.max_event_time = Some(to);
                part.touched = true;
                moved.push(p);
            }
        }
        moved.sort_unstable();
        moved
    }

    /// The offset below which every record of `partition` is reflected in
    /// the stored state.
    pub fn stored_offset(&self, partition: i32) -> Option<i64> {
        self.parts
            .get(&partition)
            .map(|p| p.marker.next_offset)
            .filter(|o| *o > 0)
    }

    /// Deletes the values that `expired` says are of no more use, at most
    /// every sweep interval. Returns how many.
    pub fn sweep(&mut self, expired: impl Fn(&S, i64) -> bool) -> usize {
        if self.last_sweep.elapsed() < self.sweep_every {
            return 0;
        }
        self.last_sweep = Instant::now();
        let lateness = self.lateness;
        let mut n = 0;
        for (partition, part) in self.parts.iter_mut() {
            let Some(w) = part.max_event_time.map(|t| t.saturating_sub(lateness)) else {
                continue;
            };
            let gone: Vec<Vec<u8>> = part
                .entries
                .iter()
                .filter(|(_, e)| expired(&e.value, w))
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                part.entries.remove(&k);
                part.set_due(&k, None);
                part.dirty.insert(k);
                part.touched = true;
                n += 1;
            }
            metrics::gauge!("gale_state_keys", "partition" => partition.to_string())
                .set(part.entries.len() as f64);
        }
        n
    }

    /// The changelog records of a finished batch, whose last record of each
    /// partition is in `ends` (partition → next offset). Resets the batch
    /// bookkeeping; the covers of the changed keys move to the batch end.
    pub fn changes(&mut self, ends: &BTreeMap<i32, i64>) -> Result<Changes, String> {
        let mut values = Vec::new();
        let mut markers = Vec::new();
        for (&partition, &end) in ends {
            let Some(part) = self.parts.get_mut(&partition) else {
                continue;
            };
            if !part.touched && part.dirty.is_empty() {
                continue;
            }
            let covers = end.to_string();
            let headers = || {
                OwnedHeaders::new().insert(Header {
                    key: COVERS,
                    value: Some(covers.as_bytes()),
                })
            };
            for key in std::mem::take(&mut part.dirty) {
                let payload = match part.entries.get_mut(&key) {
                    Some(entry) => {
                        entry.covers = end;
                        entry.dirty = false;
                        Some(serde_json::to_vec(&entry.value).map_err(|e| {
                            format!(
                                "state of key {:?} cannot be stored: {e}",
                                String::from_utf8_lossy(&key)
                            )
                        })?)
                    }
                    None => None,
                };
                values.push(Outgoing {
                    target: self.target,
                    origin: None,
                    partition: Some(partition),
                    key: Some(key),
                    payload,
                    headers: headers(),
                });
            }
            part.marker = Marker {
                next_offset: end,
                max_event_time: part.max_event_time,
            };
            part.touched = false;
            markers.push(Outgoing {
                target: self.target,
                origin: None,
                partition: Some(partition),
                key: Some(MARKER_KEY.to_vec()),
                payload: Some(serde_json::to_vec(&part.marker).expect("marker serialises")),
                headers: headers(),
            });
            if let Some(t) = part.max_event_time {
                metrics::gauge!("gale_watermark_seconds", "partition" => partition.to_string())
                    .set(t.saturating_sub(self.lateness) as f64 / 1000.0);
            }
        }
        metrics::counter!("gale_state_writes_total").increment(values.len() as u64);
        // Once per commit, not per record: the sum walks every partition.
        metrics::gauge!("gale_state_timers").set(self.timers() as f64);
        Ok(Changes { values, markers })
    }
}

/// One changelog record, as read back.
struct Stored {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    covers: i64,
}

/// Reads changelog partition `partition` of `topic` from the beginning to
/// its end.
fn read_partition(kafka: &KafkaConfig, topic: &str, partition: i32) -> Result<Vec<Stored>, Outage> {
    let outage = |message: String| Outage {
        dependency: "broker",
        message,
    };
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", "gale-state-restore")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", "10")
        .set("log.connection.close", "false");
    for (key, value) in kafka.librdkafka_properties() {
        // Connection settings (TLS, SASL) apply; consumer tuning need not.
        if key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.") {
            c.set(key, value);
        }
    }
    let consumer: BaseConsumer<Quiet> = c
        .create_with_context(Quiet)
        .map_err(|e| outage(format!("state restore consumer: {e}")))?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(|e| outage(format!("reading the end of {topic}[{partition}]: {e}")))?;
    if high <= low {
        return Ok(Vec::new()); // nothing stored yet
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(|e| outage(e.to_string()))?;
    consumer
        .assign(&tpl)
        .map_err(|e| outage(format!("assigning {topic}[{partition}]: {e}")))?;
    let mut out = Vec::new();
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let covers = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == COVERS))
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0);
                out.push(Stored {
                    key: m.key().unwrap_or_default().to_vec(),
                    value: m.payload().map(<[u8]>::to_vec),
                    covers,
                });
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(out),
            Some(Err(e)) => {
                if last_progress.elapsed() > Duration::from_secs(30) {
                    return Err(outage(format!("reading {topic}[{partition}]: {e}")));
                }
            }
            None => {
                if last_progress.elapsed() > Duration::from_secs(30) {
                    return Err(outage(format!(
                        "reading {topic}[{partition}]: no answer for 30 s"
                    )));
                }
            }
        }
    }
}

/// A client context that does not report reaching the end of a partition
/// (the restore's own stop signal) as an error.
struct Quiet;

impl rdkafka::client::ClientContext for Quiet {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if !matches!(error, rdkafka::error::KafkaError::PartitionEOF(_)) {
            tracing::warn!(error = %error, reason, "state restore client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// A partition's state from its changelog records, in log order.
fn build_partition<S: StateValue>(records: Vec<Stored>) -> Result<Partition<S>, String> {
    let mut values: FxHashMap<Vec<u8>, (Vec<u8>, i64)> = FxHashMap::default();
    let mut tombstones: FxHashMap<Vec<u8>, i64> = FxHashMap::default();
    let mut marker = Marker::default();
    for r in records {
        if r.key == MARKER_KEY {
            if let Some(v) = &r.value {
                marker = serde_json::from_slice(v)
                    .map_err(|e| format!("a partition marker is unreadable: {e}"))?;
            }
            continue;
        }
        match r.value {
            Some(v) => {
                tombstones.remove(&r.key);
                values.insert(r.key, (v, r.covers));
            }
            None => {
                values.remove(&r.key);
                tombstones.insert(r.key, r.covers);
            }
        }
    }
    let mut entries = FxHashMap::default();
    for (key, (bytes, covers)) in values {
        let value: S = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "the state of key {:?} is unreadable: {e}",
                String::from_utf8_lossy(&key)
            )
        })?;
        entries.insert(
            key,
            Entry {
                value,
                covers,
                dirty: false,
            },
        );
    }
    tombstones.retain(|_, covers| *covers > marker.next_offset);
    let ahead_until = entries
        .values()
        .map(|e| e.covers)
        .chain(tombstones.values().copied())
        .max()
        .unwrap_or(0);
    Ok(Partition {
        entries,
        deleted_ahead: tombstones,
        ahead_until,
        max_event_time: marker.max_event_time,
        marker,
        dirty: FxHashSet::default(),
        touched: false,
        timers: BTreeSet::new(),
        due: FxHashMap::default(),
        last_record: None,
        live: false,
    })
}

/// Creates the changelog `topic` with `partitions` partitions (compacted)
/// when topic creation is on, and checks that it has that many.
pub async fn ensure_changelog(
    kafka: &KafkaConfig,
    producer: &crate::kafka::Producer,
    topic: &str,
    partitions: usize,
) -> Result<(), Error> {
    if kafka.create_topics {
        crate::kafka::ensure_topic_with(
            kafka,
            topic,
            partitions as i32,
            &[("cleanup.policy", "compact")],
        )
        .await?;
    }
    let have = producer
        .partition_count(topic, Duration::from_secs(10))
        .map_err(|e| Error::Kafka {
            context: format!("reading the partitions of {topic}"),
            source: e,
        })?;
    if have != partitions {
        return Err(Error::Config(format!(
            "state changelog {topic} has {have} partitions but the input has {partitions}: changelog partition n holds the state of input partition n, so they must match (create it with {partitions} partitions and cleanup.policy=compact)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Count(u32);
    impl StateValue for Count {}

    fn stored(key: &str, value: Option<u32>, covers: i64) -> Stored {
        Stored {
            key: key.as_bytes().to_vec(),
            value: value.map(|v| serde_json::to_vec(&Count(v)).unwrap()),
            covers,
        }
    }

    fn marker(next_offset: i64, max_event_time: Option<i64>) -> Stored {
        Stored {
            key: MARKER_KEY.to_vec(),
            value: Some(
                serde_json::to_vec(&Marker {
                    next_offset,
                    max_event_time,
                })
                .unwrap(),
            ),
            covers: next_offset,
        }
    }

    fn store() -> StateStore<Count> {
        StateStore::new(
            "gale.state.t".into(),
            0,
            &StateConfig::default(),
            &KafkaConfig::default(),
        )
    }

    #[test]
    fn the_last_write_per_key_wins_and_keys_ahead_of_the_marker_skip_only_their_records() {
        // Batch ending at 10 committed; batch ending at 20 wrote key a but
        // crashed before b and the marker.
        let records = vec![
            stored("a", Some(1), 10),
            stored("b", Some(1), 10),
            stored("gone", Some(7), 10),
            marker(10, Some(1_000)),
            stored("a", Some(2), 20),
            stored("gone", None, 20),
        ];
        let part = build_partition::<Count>(records).unwrap();
        let mut s = store();
        s.parts.insert(0, part);
        assert!(s.covered(0, 9, b"b"), "below the marker");
        assert!(s.covered(0, 15, b"a"), "a's value covers up to 20");
        assert!(!s.covered(0, 15, b"b"), "b's change in 10..20 did not land");
        assert!(s.covered(0, 15, b"gone"), "its deletion covers up to 20");
        assert!(!s.covered(0, 20, b"a"));
        assert_eq!(s.watermark(0), Some(1_000));
        let slot = s.take(0, b"a", |_, _| false);
        assert_eq!(slot.get(), Some(&Count(2)));
        s.put(0, b"a", slot);
        assert!(s.take(0, b"gone", |_, _| false).get().is_none());
    }

    #[test]
    fn a_batch_writes_changed_keys_then_a_marker() {
        let mut s = store();
        s.observe(0, Some(5_000));
        let mut slot = s.take(0, b"a", |_, _| false);
        slot.set(Count(1));
        s.put(0, b"a", slot);
        let slot = s.take(0, b"b", |_, _| false);
        s.put(0, b"b", slot); // read, unchanged
        let changes = s.changes(&BTreeMap::from([(0, 42)])).unwrap();
        assert_eq!(changes.values.len(), 1);
        assert_eq!(changes.values[0].key.as_deref(), Some(&b"a"[..]));
        assert_eq!(changes.values[0].partition, Some(0));
        assert_eq!(changes.markers.len(), 1);
        let m: Marker =
            serde_json::from_slice(changes.markers[0].payload.as_ref().unwrap()).unwrap();
        assert_eq!(
            m,
            Marker {
                next_offset: 42,
                max_event_time: Some(5_000)
            }
        );
        // Nothing new: nothing to write.
        let again = s.changes(&BTreeMap::from([(0, 50)])).unwrap();
        assert!(again.values.is_empty() && again.markers.is_empty());
        // The key now covers its batch.
        assert!(s.covered(0, 41, b"a"));
    }

    #[test]
    fn expired_values_are_absent_and_deleted() {
        let mut s = store();
        s.observe(0, Some(100));
        let mut slot = s.take(0, b"a", |_, _| false);
        slot.set(Count(1));
        s.put(0, b"a", slot);
        s.changes(&BTreeMap::from([(0, 1)])).unwrap();
        s.observe(0, Some(10_000));
        // Expired when the watermark is 1000 past the value (any rule will do).
        let expired = |_: &Count, w: i64| w > 1_000;
        let slot = s.take(0, b"a", expired);
        assert!(slot.get().is_none());
        s.put(0, b"a", slot);
        let changes = s.changes(&BTreeMap::from([(0, 2)])).unwrap();
        assert_eq!(changes.values.len(), 1);
        assert!(changes.values[0].payload.is_none(), "a tombstone");
    }

    #[test]
    fn changelog_names_follow_the_group() {
        assert_eq!(
            changelog_topic("validate", "gale-validate"),
            "gale.state.validate"
        );
        assert_eq!(
            changelog_topic("validate", "rebuild-2026"),
            "gale.state.rebuild-2026"
        );
    }

    #[test]
    fn timers_fire_in_time_then_key_order_once_the_watermark_reaches_them() {
        let mut s = store();
        s.observe(0, Some(1_000));
        s.set_timer(0, b"b", Some(1_500));
        s.set_timer(0, b"a", Some(1_500));
        s.set_timer(0, b"c", Some(1_200));
        s.set_timer(0, b"d", Some(9_000));
        assert_eq!(s.pop_due(0), None, "watermark 1000 is before every timer");
        s.observe(0, Some(1_500));
        let fired: Vec<(Vec<u8>, i64)> = std::iter::from_fn(|| s.pop_due(0)).collect();
        assert_eq!(
            fired,
            vec![
                (b"c".to_vec(), 1_200),
                (b"a".to_vec(), 1_500),
                (b"b".to_vec(), 1_500)
            ]
        );
        assert_eq!(s.timers(), 1);
        // Moving a timer replaces it; clearing removes it.
        s.set_timer(0, b"d", Some(1_100));
        assert_eq!(s.pop_due(0), Some((b"d".to_vec(), 1_100)));
        s.set_timer(0, b"e", Some(1_000));
        s.set_timer(0, b"e", None);
        assert_eq!(s.pop_due(0), None);
        assert_eq!(s.timers(), 0);
    }

    #[test]
    fn restored_values_rebuild_their_timers_and_expired_values_drop_theirs() {
        let records = vec![
            stored("a", Some(5), 10),
            stored("b", Some(50), 10),
            marker(10, Some(10)),
        ];
        let mut s = store();
        s.parts
            .insert(0, build_partition::<Count>(records).unwrap());
        s.index_timers(0, |c| Some(i64::from(c.0)));
        assert_eq!(s.timers(), 2);
        assert_eq!(s.pop_due(0), Some((b"a".to_vec(), 5)));
        assert_eq!(
            s.pop_due(0),
            None,
            "b's timer is at 50, the watermark at 10"
        );
        // b expires: taking it hands it over as absent and forgets its timer.
        let slot = s.take(0, b"b", |_, _| true);
        assert!(slot.get().is_none());
        assert_eq!(s.timers(), 0);
    }

    #[test]
    fn only_a_live_quiet_partition_has_its_time_moved_by_the_idle_timeout() {
        let config = StateConfig {
            idle_timeout: Duration::from_millis(1),
            ..StateConfig::default()
        };
        let mut s: StateStore<Count> =
            StateStore::new("t".into(), 0, &config, &KafkaConfig::default());
        let now = chrono::Utc::now().timestamp_millis();
        s.observe(0, Some(now));
        s.observe(1, Some(now - 365 * 86_400_000)); // a backfill
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.advance_idle(), vec![0]);
        assert!(s.watermark(0).unwrap() > now);
        assert_eq!(s.watermark(1), Some(now - 365 * 86_400_000));
    }
}
