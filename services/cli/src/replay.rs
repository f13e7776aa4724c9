//! `gale replay`: moves a consumer group back so its service reprocesses.
//!
//! This is `kafka-consumer-groups --reset-offsets` with what operators
//! asked of it: a plan per partition first (committed → new offset, records
//! to reprocess), a refusal while the group has live members (their offsets
//! would overwrite ours at their next commit), and never a move *forward*,
//! which would skip records nobody processed. Reprocessing is safe because
//! Gale's stages are deterministic and its sinks idempotent by event id.
//!
//! A group cannot stop at a point in time: `--to-time` only narrows which
//! partitions move (those with records in the range) and how the plan counts.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::inspect::{broker_unreachable, end_offsets_of};

const TIMEOUT: Duration = Duration::from_secs(10);

/// `gale replay` options.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("start").required(true).args(["from_time", "from_offset", "earliest"])))]
pub struct ReplayArgs {
    /// Consumer group to move back (e.g. gale-pg-sink).
    #[arg(long)]
    pub group: String,
    /// Reprocess from this time (RFC 3339, a UTC date, or a duration ago such as 6h).
    #[arg(long, value_parser = crate::timearg::parse)]
    pub from_time: Option<DateTime<Utc>>,
    /// Reprocess from this offset in every partition (clamped to what the topic holds).
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// Reprocess everything the topics still hold.
    #[arg(long)]
    pub earliest: bool,
    /// Only partitions with records before this time move; counts the records in range.
    #[arg(long, value_parser = crate::timearg::parse)]
    pub to_time: Option<DateTime<Utc>>,
    /// Topics to move (repeat or comma-separate); default: every topic the group has committed offsets on.
    #[arg(long, value_delimiter = ',')]
    pub topic: Vec<String>,
    /// The group has no committed offsets yet: set where it starts (it
    /// would otherwise start at the earliest record), skipping what comes before.
    #[arg(long)]
    pub fresh_group: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "GALE_KAFKA_BOOTSTRAP",
        hide_env_values = true,
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
}

/// Where the replay starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// The first offset at or after this time (ms).
    Time(i64),
    /// This offset.
    Offset(i64),
    /// The low watermark.
    Earliest,
}

/// One partition's move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMove {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset, if it has one.
    pub committed: Option<i64>,
    /// The offset the group will resume at.
    pub new: i64,
    /// Low watermark.
    pub low: i64,
    /// End offset.
    pub end: i64,
    /// Records between `new` and `--to-time`, when given.
    pub in_range: Option<i64>,
    /// Why the partition stays where it is, if it does.
    pub unchanged: Option<&'static str>,
}

impl PartitionMove {
    /// Records the group will read again (for a fresh group: will read).
    pub fn reprocess(&self) -> i64 {
        if self.unchanged.is_some() {
            return 0;
        }
        (self.committed.unwrap_or(self.end).min(self.end) - self.new).max(0)
    }
}

/// Decides one partition's move from its watermarks, the committed offset,
/// the start's offset in this partition (`None` for a time after the last
/// record) and, with `--to-time`, the first offset at or after that time.
/// A partition without a committed offset would be read from its low
/// watermark, so it counts as being there, unless `fresh` (a new group
/// whose start is being set).
pub fn plan_partition(
    topic: &str,
    partition: i32,
    (low, end): (i64, i64),
    committed: Option<i64>,
    start: Option<i64>,
    to: Option<Option<i64>>,
    fresh: bool,
) -> PartitionMove {
    let new = start.unwrap_or(end).clamp(low, end);
    let in_range = to.map(|to| (to.unwrap_or(end).clamp(low, end) - new).max(0));
    let reads_from = committed.or((!fresh).then_some(low));
    let unchanged = match reads_from {
        Some(c) if c <= new => Some("already at or before the start"),
        _ if in_range == Some(0) => Some("no records in the range"),
        _ => None,
    };
    PartitionMove {
        topic: topic.to_string(),
        partition,
        committed,
        new,
        low,
        end,
        in_range,
        unchanged,
    }
}

fn client(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?)
}

/// The live members of `group`, as `client-id@host (member-id)`.
pub fn live_members(consumer: &BaseConsumer, group: &str) -> anyhow::Result<Vec<String>> {
    let list = consumer.fetch_group_list(Some(group), TIMEOUT)?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members())
        .map(|m| member(m.client_id(), m.client_host(), m.id()))
        .collect())
}

/// A member as `client-id@host (member-id)`, leaving out what the broker
/// did not report.
fn member(client: &str, host: &str, id: &str) -> String {
    match (client.is_empty(), host.trim_start_matches('/').is_empty()) {
        (false, false) => format!("{client}@{} ({id})", host.trim_start_matches('/')),
        (false, true) => format!("{client} ({id})"),
        (true, false) => format!("{} ({id})", host.trim_start_matches('/')),
        (true, true) => id.to_string(),
    }
}

/// Computes the plan for `args` (blocking).
pub fn plan(args: &ReplayArgs) -> anyhow::Result<Vec<PartitionMove>> {
    let consumer = client(&args.bootstrap, &args.group)?;
    let md = consumer
        .fetch_metadata(None, TIMEOUT)
        .map_err(|e| broker_unreachable(&args.bootstrap, &e))?;
    let mut partitions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for t in md.topics() {
        if args.topic.is_empty() || args.topic.iter().any(|x| x == t.name()) {
            partitions.insert(
                t.name().to_string(),
                t.partitions().iter().map(|p| p.id()).collect(),
            );
        }
    }
    for t in &args.topic {
        if !partitions.contains_key(t) {
            anyhow::bail!("topic {t} does not exist");
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (t, ps) in &partitions {
        for p in ps {
            tpl.add_partition(t, *p);
        }
    }
    let committed: BTreeMap<(String, i32), Option<i64>> = consumer
        .committed_offsets(tpl, TIMEOUT)?
        .elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            ((e.topic().to_string(), e.partition()), o)
        })
        .collect();
    let has_commits = committed.values().any(Option::is_some);
    if has_commits && args.fresh_group {
        anyhow::bail!(
            "--fresh-group: group {} has committed offsets already; leave the flag out",
            args.group
        );
    }
    if !has_commits && !args.topic.is_empty() && !args.fresh_group {
        anyhow::bail!(
            "group {} has no committed offsets on {}: it starts at the earliest record already. To start it at the given point instead, skipping what comes before, add --fresh-group",
            args.group,
            args.topic.join(", ")
        );
    }
    if args
        .to_time
        .is_some_and(|to| args.from_time.is_some_and(|from| to <= from))
    {
        anyhow::bail!("--to-time must be after --from-time");
    }
    if args.topic.is_empty() {
        // Only the topics the group has consumed.
        partitions.retain(|t, ps| {
            ps.iter()
                .any(|p| matches!(committed.get(&(t.clone(), *p)), Some(Some(_))))
        });
        if partitions.is_empty() {
            anyhow::bail!(
                "group {} has no committed offsets: name the topics with --topic",
                args.group
            );
        }
    }
    let listed: Vec<(String, Vec<i32>)> = partitions
        .iter()
        .map(|(t, p)| (t.clone(), p.clone()))
        .collect();
    let marks = end_offsets_of(&args.bootstrap, &listed)?;
    let start = match (args.from_time, args.from_offset, args.earliest) {
        (Some(t), _, _) => Start::Time(t.timestamp_millis()),
        (_, Some(o), _) => Start::Offset(o),
        _ => Start::Earliest,
    };
    let starts = match start {
        Start::Time(ms) => Some(offsets_at(&consumer, &partitions, ms)?),
        _ => None,
    };
    let ends = match args.to_time {
        Some(t) => Some(offsets_at(&consumer, &partitions, t.timestamp_millis())?),
        None => None,
    };
    let mut out = Vec::new();
    for (t, ps) in &partitions {
        for &p in ps {
            let key = (t.clone(), p);
            let (low, end) = marks.get(&key).copied().unwrap_or((0, 0));
            let start_offset = match start {
                Start::Earliest => Some(low),
                Start::Offset(o) => Some(o),
                Start::Time(_) => starts.as_ref().and_then(|s| s.get(&key).copied().flatten()),
            };
            let to = ends.as_ref().map(|e| e.get(&key).copied().flatten());
            out.push(plan_partition(
                t,
                p,
                (low, end),
                committed.get(&key).copied().flatten(),
                start_offset,
                to,
                args.fresh_group,
            ));
        }
    }
    Ok(out)
}

/// The first offset at or after `ms` per partition (`None`: no such record).
fn offsets_at(
    consumer: &BaseConsumer,
    partitions: &BTreeMap<String, Vec<i32>>,
    ms: i64,
) -> anyhow::Result<BTreeMap<(String, i32), Option<i64>>> {
    let mut tpl = TopicPartitionList::new();
    for (t, ps) in partitions {
        for p in ps {
            tpl.add_partition_offset(t, *p, Offset::Offset(ms))?;
        }
    }
    Ok(consumer
        .offsets_for_times(tpl, TIMEOUT)?
        .elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            ((e.topic().to_string(), e.partition()), o)
        })
        .collect())
}

/// The plan as a table.
pub fn render(group: &str, moves: &[PartitionMove]) -> String {
    let mut s = format!(
        "{:<32} {:>4} {:>12} {:>12} {:>12} {:>11} {:>9}\n",
        "topic", "part", "committed", "new", "end", "reprocess", "in range"
    );
    for m in moves {
        let committed = m.committed.map_or("none".to_string(), |c| c.to_string());
        let new = if m.unchanged.is_some() {
            "-".to_string()
        } else {
            m.new.to_string()
        };
        let in_range = m.in_range.map_or(String::new(), |r| r.to_string());
        s.push_str(&format!(
            "{:<32} {:>4} {:>12} {:>12} {:>12} {:>11} {:>9}{}\n",
            m.topic,
            m.partition,
            committed,
            new,
            m.end,
            m.reprocess(),
            in_range,
            m.unchanged.map_or(String::new(), |u| format!("  ({u})"))
        ));
    }
    let total: i64 = moves.iter().map(PartitionMove::reprocess).sum();
    let moving = moves.iter().filter(|m| m.unchanged.is_none()).count();
    s.push_str(&format!(
        "group {group}: {moving} of {} partition(s) move back, {total} record(s) to reprocess\n",
        moves.len()
    ));
    s
}

/// Plans, checks the group is idle and commits the new offsets (blocking).
/// Returns what to print.
pub fn run(args: &ReplayArgs) -> anyhow::Result<String> {
    let moves = plan(args)?;
    let mut out = render(&args.group, &moves);
    let consumer = client(&args.bootstrap, &args.group)?;
    let members = live_members(&consumer, &args.group)?;
    if !members.is_empty() {
        let msg = format!(
            "group {} has {} active member(s): {}. Stop its service first (locally: stop its process, or `make stop`; on Kubernetes: kubectl scale deployment/<release>-gale-<stage> --replicas=0), wait until the group is empty (at once after a clean stop, the session timeout after a crash), then run this again",
            args.group,
            members.len(),
            members.join(", ")
        );
        if args.dry_run {
            out.push_str(&format!("warning: {msg}\n"));
        } else {
            anyhow::bail!("{out}refused: {msg}");
        }
    }
    if args.dry_run {
        out.push_str("dry run: nothing changed\n");
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    for m in moves.iter().filter(|m| m.unchanged.is_none()) {
        tpl.add_partition_offset(&m.topic, m.partition, Offset::Offset(m.new))?;
    }
    if tpl.count() == 0 {
        out.push_str("nothing to move\n");
        return Ok(out);
    }
    consumer.commit(&tpl, CommitMode::Sync)?;
    // Read back: a commit that raced a member joining would not stick.
    let back = consumer.committed_offsets(tpl.clone(), TIMEOUT)?;
    for (want, got) in tpl.elements().iter().zip(back.elements()) {
        if want.offset() != got.offset() {
            anyhow::bail!(
                "{}/{}: committed {:?} but the group reads {:?}; did a member join? Run again with the service stopped",
                want.topic(),
                want.partition(),
                want.offset(),
                got.offset()
            );
        }
    }
    out.push_str(&format!(
        "moved group {}: start its service again to reprocess\n",
        args.group
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_back_never_forward() {
        // Committed 80, start 50: reprocess 30.
        let m = plan_partition("t", 0, (10, 100), Some(80), Some(50), None, false);
        assert_eq!((m.new, m.reprocess(), m.unchanged), (50, 30, None));
        // Start after the committed offset: left alone (moving would skip 80..90).
        let m = plan_partition("t", 0, (10, 100), Some(80), Some(90), None, false);
        assert_eq!(m.reprocess(), 0);
        assert!(m.unchanged.is_some());
        // Offsets clamp to what the topic holds; no time match means the end.
        let m = plan_partition("t", 0, (10, 100), Some(100), Some(3), None, false);
        assert_eq!((m.new, m.reprocess()), (10, 90));
        let m = plan_partition("t", 0, (10, 100), Some(100), None, None, false);
        assert_eq!(m.reprocess(), 0);
        // No committed offset: the group reads from the low watermark, so a
        // later start would skip records and the partition stays.
        let m = plan_partition("t", 0, (5, 40), None, Some(20), None, false);
        assert!(m.unchanged.is_some());
        // A fresh group's start is set on purpose: it reads from there.
        let m = plan_partition("t", 0, (5, 40), None, Some(20), None, true);
        assert_eq!((m.new, m.reprocess(), m.unchanged), (20, 20, None));
    }

    #[test]
    fn to_time_counts_the_range_and_skips_empty_partitions() {
        let m = plan_partition("t", 0, (0, 100), Some(100), Some(20), Some(Some(50)), false);
        assert_eq!((m.in_range, m.reprocess()), (Some(30), 80));
        let m = plan_partition("t", 1, (0, 100), Some(100), Some(60), Some(Some(60)), false);
        assert_eq!((m.in_range, m.unchanged.is_some()), (Some(0), true));
        // A range past the last record runs to the end.
        let m = plan_partition("t", 2, (0, 100), Some(100), Some(90), Some(None), false);
        assert_eq!(m.in_range, Some(10));
    }

    #[test]
    fn members_are_named_with_what_the_broker_reports() {
        assert_eq!(
            member("rdkafka", "/10.0.0.7", "m-1"),
            "rdkafka@10.0.0.7 (m-1)"
        );
        assert_eq!(member("", "", "rdkafka-42"), "rdkafka-42");
        assert_eq!(member("gale-pg-sink", "", "m-2"), "gale-pg-sink (m-2)");
    }

    #[test]
    fn the_table_says_what_moves() {
        let moves = vec![
            plan_partition(
                "gale.validated",
                0,
                (0, 100),
                Some(100),
                Some(0),
                None,
                false,
            ),
            plan_partition(
                "gale.validated",
                1,
                (0, 100),
                Some(5),
                Some(10),
                None,
                false,
            ),
        ];
        let text = render("gale-pg-sink", &moves);
        assert!(
            text.contains("1 of 2 partition(s) move back, 100 record(s)"),
            "{text}"
        );
        assert!(text.contains("already at or before the start"), "{text}");
    }
}
