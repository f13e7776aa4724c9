//! Looking at topics: record counts and consumer lag (`gale status`) and
//! decoded samples with their headers (`gale peek`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gale_runtime::avro::split_wire;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A broker that does not answer, said in a sentence with what to do.
pub fn broker_unreachable(bootstrap: &str, error: &rdkafka::error::KafkaError) -> anyhow::Error {
    use rdkafka::error::RDKafkaErrorCode as Code;
    let why = match error.rdkafka_error_code() {
        Some(Code::BrokerTransportFailure | Code::AllBrokersDown) => {
            "nothing answers there (connection refused or closed)".to_string()
        }
        Some(Code::OperationTimedOut) => "it did not answer within 10 s".to_string(),
        Some(Code::Resolve) => "the host name does not resolve".to_string(),
        Some(Code::Authentication) => "it refused the credentials".to_string(),
        _ => error.to_string(),
    };
    anyhow::anyhow!(
        "cannot reach the Kafka broker at {bootstrap}: {why}. Is it running? Point gale at it with --bootstrap or GALE_KAFKA_BOOTSTRAP (after `make demo`: source .gale/demo/env; `make demo` starts the local one again)"
    )
}

fn client(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?)
}

/// Records on one topic and how far each group is behind.
#[derive(Debug, Clone)]
pub struct TopicStatus {
    /// Topic name.
    pub topic: String,
    /// Partitions.
    pub partitions: usize,
    /// Records currently held (high minus low watermark, summed).
    pub records: i64,
    /// Lag per consumer group that has committed offsets on the topic.
    pub lag: BTreeMap<String, i64>,
}

/// Counts and lag for every topic whose name starts with `prefix`.
pub fn status(
    bootstrap: &str,
    prefix: &str,
    groups: &[String],
) -> anyhow::Result<Vec<TopicStatus>> {
    Ok(status_with_ends(bootstrap, prefix, groups)?.0)
}

/// Low watermark and end offset per (topic, partition), as [`end_offsets_of`] gives them.
pub type EndOffsets = BTreeMap<(String, i32), (i64, i64)>;

/// [`status`], plus the end offsets it read (so a caller that also reads
/// the topics need not ask the broker again).
pub fn status_with_ends(
    bootstrap: &str,
    prefix: &str,
    groups: &[String],
) -> anyhow::Result<(Vec<TopicStatus>, EndOffsets)> {
    let admin = client(bootstrap, "gale-cli-status")?;
    let md = admin
        .fetch_metadata(None, TIMEOUT)
        .map_err(|e| broker_unreachable(bootstrap, &e))?;
    // The topics each group's live members subscribe to.
    let mut subscribers: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for g in groups {
        if let Ok(list) = admin.fetch_group_list(Some(g), TIMEOUT) {
            for group in list.groups() {
                for m in group.members() {
                    if let Some(meta) = m.metadata() {
                        subscribers
                            .entry(g.clone())
                            .or_default()
                            .extend(subscription_topics(meta));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut topics: Vec<_> = md
        .topics()
        .iter()
        .filter(|t| t.name().starts_with(prefix))
        .collect();
    topics.sort_by_key(|t| t.name().to_string());
    // One committed-offsets request per group for every partition listed
    // (a client and a round trip per group and topic made `gale status`
    // take seconds per group).
    let mut all = TopicPartitionList::new();
    for t in &topics {
        for p in t.partitions() {
            all.add_partition(t.name(), p.id());
        }
    }
    let mut committed_by_group: BTreeMap<String, BTreeMap<(String, i32), Offset>> = BTreeMap::new();
    for g in groups {
        let c = client(bootstrap, g)?;
        if let Ok(committed) = c.committed_offsets(all.clone(), TIMEOUT) {
            committed_by_group.insert(
                g.clone(),
                committed
                    .elements()
                    .iter()
                    .map(|e| ((e.topic().to_string(), e.partition()), e.offset()))
                    .collect(),
            );
        }
    }
    let listed: Vec<(String, Vec<i32>)> = topics
        .iter()
        .map(|t| {
            (
                t.name().to_string(),
                t.partitions().iter().map(|p| p.id()).collect(),
            )
        })
        .collect();
    let all_ends = end_offsets_of(bootstrap, &listed)?;
    for t in topics {
        let ends: BTreeMap<i32, (i64, i64)> = all_ends
            .iter()
            .filter(|((topic, _), _)| topic == t.name())
            .map(|((_, p), v)| (*p, *v))
            .collect();
        let mut records = 0;
        for (low, end) in ends.values() {
            records += end - low;
        }
        let mut lag = BTreeMap::new();
        for g in groups {
            let Some(committed) = committed_by_group.get(g) else {
                continue;
            };
            // A group that consumes the topic but has not committed on a
            // partition yet starts there from the beginning (Gale's groups
            // read from the earliest offset): all of it is lag.
            let subscribed = subscribers
                .get(g)
                .is_some_and(|topics| topics.contains(t.name()));
            let mut total = 0;
            let mut any = subscribed;
            for p in t.partitions() {
                let Some(offset) = committed.get(&(t.name().to_string(), p.id())) else {
                    continue;
                };
                let (low, end) = ends.get(&p.id()).copied().unwrap_or((0, 0));
                match *offset {
                    Offset::Offset(o) => {
                        any = true;
                        total += end - o.max(low);
                    }
                    _ => total += end - low,
                }
            }
            if any {
                lag.insert(g.clone(), total.max(0));
            }
        }
        out.push(TopicStatus {
            topic: t.name().to_string(),
            partitions: t.partitions().len(),
            records,
            lag,
        });
    }
    Ok((out, all_ends))
}

/// The topic table `gale status` prints first: one line per topic with its
/// partitions, records and lag per group (`group=lag`). Scripts read it
/// (scripts/demo.sh), so its columns stay as they are.
pub fn render_topics(rows: &[TopicStatus]) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{:<32} {:>5} {:>10}  lag\n", "topic", "parts", "records");
    for r in rows {
        let lag: Vec<String> = r.lag.iter().map(|(g, l)| format!("{g}={l}")).collect();
        let _ = writeln!(
            out,
            "{:<32} {:>5} {:>10}  {}",
            r.topic,
            r.partitions,
            r.records,
            lag.join(" ")
        );
    }
    out
}

/// The topics in a consumer's subscription (the `consumer` protocol's
/// member metadata: version, then an array of topic names); empty when the
/// bytes are something else.
pub fn subscription_topics(meta: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let read_i16 =
        |b: &[u8], at: usize| b.get(at..at + 2).map(|x| i16::from_be_bytes([x[0], x[1]]));
    let Some(count) = meta
        .get(2..6)
        .map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
    else {
        return out;
    };
    let mut at = 6;
    for _ in 0..count.clamp(0, 10_000) {
        let Some(len) = read_i16(meta, at).filter(|l| *l >= 0) else {
            return out;
        };
        at += 2;
        let Some(name) = meta.get(at..at + len as usize) else {
            return out;
        };
        out.push(String::from_utf8_lossy(name).into_owned());
        at += len as usize;
    }
    out
}

/// Low watermark and end offset (one past the last record) of each of
/// `partitions` of `topic`.
///
/// The end offset is the high watermark, checked by reading the record
/// before it: some Kafka-compatible brokers (Tansu 0.6) report the base
/// offset of the last batch plus one as the high watermark, which
/// undercounts by the rest of that batch. Reading from there to the end
/// gives the true end on any broker.
pub fn end_offsets(
    bootstrap: &str,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let all = end_offsets_of(bootstrap, &[(topic.to_string(), partitions.to_vec())])?;
    Ok(all.into_iter().map(|((_, p), v)| (p, v)).collect())
}

/// [`end_offsets`] of many topics at once, with one client: per (topic,
/// partition), the low watermark and the end offset.
pub fn end_offsets_of(
    bootstrap: &str,
    topics: &[(String, Vec<i32>)],
) -> anyhow::Result<BTreeMap<(String, i32), (i64, i64)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "gale-cli-end-offsets")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut out = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in topics {
        for &p in partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
            out.insert((topic.clone(), p), (low, high));
            if high > low {
                tpl.add_partition_offset(topic, p, Offset::Offset(high - 1))?;
            }
        }
    }
    if tpl.count() == 0 {
        return Ok(out);
    }
    let mut open = tpl.count();
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + TIMEOUT;
    while open > 0 && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Some((_, end)) = out.get_mut(&(m.topic().to_string(), m.partition())) {
                    *end = (*end).max(m.offset() + 1);
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(out)
}

/// `url` without credentials, for messages.
fn display_url(url: &str) -> String {
    gale_runtime::config::RegistryConfig {
        url: url.to_string(),
        ..Default::default()
    }
    .display_url()
}

/// Up to `count` records of `topic` from the beginning, as JSON: key,
/// partition, offset, headers and the value decoded through the registry
/// (or as text when it is not Avro in the Confluent wire format).
pub async fn peek(
    bootstrap: &str,
    registry_url: &str,
    topic: &str,
    count: usize,
) -> anyhow::Result<Vec<Value>> {
    let consumer = client(bootstrap, "gale-cli-peek")?;
    let md = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| broker_unreachable(bootstrap, &e))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        anyhow::bail!("topic {topic} does not exist");
    };
    let mut tpl = TopicPartitionList::new();
    let partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    let remaining: i64 = end_offsets(bootstrap, topic, &partitions)?
        .values()
        .map(|(low, end)| end - low)
        .sum();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    if let Err(e) = reqwest::Client::new()
        .get(format!("{}/subjects", registry_url.trim_end_matches('/')))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(|r| r.error_for_status())
    {
        eprintln!(
            "warning: cannot reach the schema registry at {}: {}; values are shown undecoded (set --registry-url or GALE_REGISTRY_URL)",
            display_url(registry_url),
            e.without_url()
        );
    }
    let decoder = AvroDecoder::new(SrSettings::new(registry_url.to_string()));
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while out.len() < count && (out.len() as i64) < remaining && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg?;
        let headers: BTreeMap<String, String> = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_string(),
                            x.value
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let payload = msg.payload().unwrap_or(&[]);
        // Avro when it decodes; otherwise the bytes as text (a dead letter's
        // value is whatever arrived, and may only look like the wire format).
        let as_text = || json!(String::from_utf8_lossy(payload));
        let value = match split_wire(payload) {
            Ok(_) => match decoder.decode(Some(payload)).await {
                Ok(d) => serde_json::Value::try_from(d.value).unwrap_or_else(|_| as_text()),
                Err(_) => as_text(),
            },
            Err(_) => as_text(),
        };
        out.push(json!({
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            "headers": headers,
            "value": value,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_read_from_member_metadata() {
        // version 1, two topics, then user data we do not read.
        let mut meta = vec![0, 1, 0, 0, 0, 2];
        for t in ["gale.raw", "gale.validated"] {
            meta.extend((t.len() as i16).to_be_bytes());
            meta.extend(t.as_bytes());
        }
        meta.extend([0, 0, 0, 0]);
        assert_eq!(subscription_topics(&meta), ["gale.raw", "gale.validated"]);
        assert!(subscription_topics(&[1, 2]).is_empty());
        assert_eq!(subscription_topics(&[0, 1, 0, 0, 0, 3, 0, 1, b'a']), ["a"]);
    }
}
