//! Ingest's file drop on the real broker and registry, with a directory as
//! the object store: good rows reach the raw topic exactly, bad rows and
//! unreadable files are dead-lettered with their own bytes, files move to
//! the done or failed prefix, a restart sends nothing twice, and a file that
//! is still being written is left alone until it settles.
//!
//! Waits are deterministic: to show that a poll has passed over a file
//! without taking it, a test drops a settled "probe" file that sorts after
//! it and waits for the probe to be moved (a poll takes files in path order).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use gale_ingest::mapping::event_id;
use gale_model::{IngestChannel, RawReading, RAW_READING};
use gale_tests::*;
use rdkafka::message::{Message, OwnedMessage};

const SOURCE: &str = "meters";

/// A watched directory and the ingest process watching it.
struct Landing {
    _dir: tempfile::TempDir,
    store: PathBuf,
    raw: String,
    dlq: String,
    ingest: ServiceProcess,
}

impl Landing {
    fn path(&self, rel: &str) -> PathBuf {
        self.store.join(rel)
    }

    /// Writes `rel` as a finished upload: modified a minute ago, so settled.
    fn drop_settled(&self, rel: &str, bytes: &[u8]) {
        let path = self.path(rel);
        write(&path, bytes);
        backdate(&path);
    }

    /// `origin` as dead-letter headers name it.
    fn origin(&self, rel: &str) -> String {
        format!("{}/{rel}", self.store.display())
    }

    async fn wait_exists(&self, rel: &str) {
        let path = self.path(rel);
        wait_for(rel, Duration::from_secs(60), || {
            let there = path.exists();
            async move { there.then_some(()) }
        })
        .await;
    }

    async fn wait_gone(&self, rel: &str) {
        let path = self.path(rel);
        wait_for(&format!("{rel} to go"), Duration::from_secs(60), || {
            let there = path.exists();
            async move { (!there).then_some(()) }
        })
        .await;
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn backdate(path: &Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
}

/// Every file under `dir`, relative and sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Starts ingest watching `raw/` of a fresh directory store.
async fn start(stack: &Stack, label: &str, settle_time: &str) -> Landing {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[ingest.sources]]\nname = \"{SOURCE}\"\napi_keys = [\"file-drop-key-0001\"]\n\n\
             [[ingest.file_drops]]\nsource = \"{SOURCE}\"\nstore = {{ url = \"{}\" }}\n\
             poll_interval = \"200ms\"\nsettle_time = \"{settle_time}\"\n",
            store.display()
        ),
    )
    .unwrap();
    let raw = unique("raw");
    let dlq = unique("dlq-ingest");
    let mut env = service_env(stack, None);
    env.push(("GALE_TOPICS__RAW", raw.clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", dlq.clone()));
    env.push(("GALE_INGEST__LISTEN", format!("127.0.0.1:{}", free_port())));
    env.push(("GALE_INGEST__ACK_TIMEOUT", "5s".into()));
    let ingest = ServiceProcess::start(
        "gale-ingest",
        &env,
        &["--config", cfg.to_str().unwrap()],
        label,
    );
    ingest.wait_ready(Duration::from_secs(60)).await;
    Landing {
        _dir: dir,
        store,
        raw,
        dlq,
        ingest,
    }
}

/// A raw reading as the test compares it: asset, time, (metric, value, unit).
type Row = (String, i64, Vec<(String, f64, Option<String>)>);

async fn decode_all(stack: &Stack, records: &[OwnedMessage]) -> Vec<RawReading> {
    let registry = registry(stack);
    let mut decoder = registry.decoder::<RawReading>(RAW_READING).unwrap();
    let mut out = Vec::new();
    for m in records {
        let r = decoder.decode(m.payload().unwrap()).await.unwrap();
        assert_eq!(m.key(), Some(r.asset_id.as_bytes()), "keyed by asset id");
        assert_eq!(r.source, SOURCE);
        assert_eq!(r.channel, IngestChannel::File);
        assert_eq!(
            r.event_id,
            event_id(SOURCE, &r.asset_id, r.event_time, &r.measurements),
            "deterministic event id"
        );
        out.push(r);
    }
    out
}

fn rows(readings: &[RawReading]) -> Vec<Row> {
    let mut out: Vec<Row> = readings
        .iter()
        .map(|r| {
            (
                r.asset_id.clone(),
                r.event_time,
                r.measurements
                    .iter()
                    .map(|m| (m.metric.name().to_string(), m.value, m.unit.clone()))
                    .collect(),
            )
        })
        .collect();
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

fn row(asset: &str, t: i64, metrics: &[(&str, f64, Option<&str>)]) -> Row {
    (
        asset.to_string(),
        t,
        metrics
            .iter()
            .map(|(m, v, u)| (m.to_string(), *v, u.map(str::to_string)))
            .collect(),
    )
}

/// 2024-03-15T14:00:00Z plus `s` seconds, in ms.
fn at(s: i64) -> i64 {
    1_710_511_200_000 + s * 1000
}

fn assert_no_duplicate_ids(readings: &[RawReading]) {
    let ids: HashSet<&str> = readings.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids.len(), readings.len(), "a row was produced twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_drop_sends_each_row_once_and_dead_letters_the_rest() {
    let stack = stack();
    let mut d = start(&stack, "file-drop", "30s").await;
    let raw_reader = TopicReader::new(&stack.bootstrap, &d.raw);
    let dlq_reader = TopicReader::new(&stack.bootstrap, &d.dlq);

    // A good CSV (one row with every value missing: skipped), a JSON array
    // with one bad element, a corrupt file, and a CSV with a row too large
    // for the broker.
    let good = "asset_id,timestamp,power,power_unit\n\
                MTR-1,2024-03-15T14:00:00Z,1250,W\n\
                MTR-2,1710511260,2.5,kW\n\
                MTR-3,2024-03-15T14:02:00Z,N/A,\n";
    let bad_element = r#"{"asset_id": "MTR-5", "timestamp": "inf", "power": 1}"#;
    let array = format!(
        "[\n  {{\"asset_id\": \"MTR-4\", \"timestamp\": 1710511320, \"power_kw\": 3.5}},\n  {bad_element},\n  {{\"asset_id\": \"MTR-6\", \"timestamp\": \"2024-03-15T14:04:00Z\", \"energy\": 7, \"energy_unit\": \"kWh\"}}\n]\n"
    );
    let corrupt = "{\"asset_id\": \"MTR-9\", \"timestamp\": ";
    let huge_row = format!("MTR-8,2024-03-15T14:05:00Z,1.0,{}\n", "x".repeat(1_200_000));
    let big =
        format!("asset_id,timestamp,power_kw,note\nMTR-7,2024-03-15T14:06:00Z,4.0,ok\n{huge_row}");
    d.drop_settled("raw/2024/03/15/14/a-good.csv", good.as_bytes());
    d.drop_settled("raw/2024/03/15/14/b-array.json", array.as_bytes());
    d.drop_settled("raw/2024/03/15/14/c-corrupt.json", corrupt.as_bytes());
    d.drop_settled("raw/2024/03/15/14/d-big.csv", big.as_bytes());

    d.wait_exists("processed/2024/03/15/14/a-good.csv").await;
    d.wait_exists("processed/2024/03/15/14/b-array.json").await;
    d.wait_exists("failed/2024/03/15/14/c-corrupt.json").await;
    d.wait_exists("failed/2024/03/15/14/d-big.csv").await;
    assert_eq!(
        files_under(&d.store),
        vec![
            "failed/2024/03/15/14/c-corrupt.json",
            "failed/2024/03/15/14/d-big.csv",
            "processed/2024/03/15/14/a-good.csv",
            "processed/2024/03/15/14/b-array.json",
        ],
        "inbox empty, no done marker left"
    );
    assert_eq!(
        std::fs::read(d.path("failed/2024/03/15/14/d-big.csv")).unwrap(),
        big.as_bytes(),
        "files move intact"
    );

    // Exactly these readings.
    let records = raw_reader.read(5, Duration::from_secs(30));
    let readings = decode_all(&stack, &records).await;
    assert_eq!(
        rows(&readings),
        vec![
            row("MTR-1", at(0), &[("power", 1250.0, Some("W"))]),
            row("MTR-2", at(60), &[("power", 2.5, Some("kW"))]),
            row("MTR-4", at(120), &[("power", 3.5, Some("kW"))]),
            row("MTR-6", at(240), &[("energy", 7.0, Some("kWh"))]),
            row("MTR-7", at(360), &[("power", 4.0, Some("kW"))]),
        ]
    );
    let mtr7 = readings.iter().find(|r| r.asset_id == "MTR-7").unwrap();
    assert_eq!(mtr7.attributes["note"], "ok");

    // Dead letters: the bad element's own bytes, the corrupt file whole, the
    // refused row cut at the cap; each with its story in headers.
    let dead = dlq_reader.read(3, Duration::from_secs(30));
    let by_class = |class: &str| -> &OwnedMessage {
        dead.iter()
            .find(|m| header(m, "gale.dlq.error.class").as_deref() == Some(class))
            .unwrap_or_else(|| panic!("no {class} dead letter"))
    };
    let element = by_class("unparseable_row");
    assert_eq!(element.payload(), Some(bad_element.as_bytes()));
    assert_eq!(
        element.key(),
        Some(b"raw/2024/03/15/14/b-array.json".as_slice())
    );
    let h = headers(element);
    assert_eq!(h["gale.dlq.stage"], "ingest");
    assert_eq!(
        h["gale.dlq.original.topic"],
        format!("{}#index=1", d.origin("raw/2024/03/15/14/b-array.json"))
    );
    assert!(h["gale.dlq.error.message"].contains("\"inf\""), "{h:?}");
    assert!(
        h["gale.dlq.error.message"].contains("not a finite number"),
        "{h:?}"
    );
    assert_eq!(h["gale.dlq.original.partition"], "");
    assert_eq!(h["gale.dlq.original.offset"], "");
    assert_eq!(h["gale.dlq.attempts"], "1");
    assert!(h["gale.dlq.time"].ends_with('Z'));

    let file = by_class("unparseable_file");
    assert_eq!(file.payload(), Some(corrupt.as_bytes()));
    assert_eq!(
        file.key(),
        Some(b"raw/2024/03/15/14/c-corrupt.json".as_slice())
    );
    let h = headers(file);
    assert_eq!(
        h["gale.dlq.original.topic"],
        d.origin("raw/2024/03/15/14/c-corrupt.json")
    );
    assert!(
        h["gale.dlq.error.message"].contains("not valid JSON"),
        "{h:?}"
    );

    let refused = by_class("refused_row");
    let cap = gale_ingest::filedrop::MAX_DLQ_BYTES;
    assert_eq!(refused.payload(), Some(&huge_row.as_bytes()[..cap]));
    let h = headers(refused);
    assert_eq!(
        h["gale.dlq.original.topic"],
        format!("{}#line=3", d.origin("raw/2024/03/15/14/d-big.csv"))
    );
    let message = &h["gale.dlq.error.message"];
    assert!(
        message.contains("refused") && message.contains("truncated") && message.contains("failed/"),
        "{message}"
    );

    // A finished file whose move fails: its rows are sent once, however many
    // polls and restarts pass before the move succeeds.
    let late = "raw/2024/03/15/15/e-late.json";
    let late_bad = r#"{"asset_id": "MTR-11", "timestamp": "2024-03-15T15:00:00Z", "power": "abc"}"#;
    let late_body = format!(
        "[{{\"asset_id\": \"MTR-10\", \"timestamp\": \"2024-03-15T15:00:00Z\", \"power_kw\": 1.5}}, {late_bad}]"
    );
    // A file where the done prefix needs a directory makes the move fail.
    write(&d.path("processed/2024/03/15/15"), b"in the way");
    d.drop_settled(late, late_body.as_bytes());
    d.wait_exists("_gale/done/raw/2024/03/15/15/e-late.json")
        .await;
    let marker: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.path("_gale/done/raw/2024/03/15/15/e-late.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(marker["readings"], 1);
    assert_eq!(marker["dead_letters"], 1);
    assert_eq!(marker["outcome"], "done");
    let probe = |name: &str, asset: &str, t: &str| {
        (
            format!("raw/2024/03/15/16/{name}.csv"),
            format!("asset_id,timestamp,power_kw\n{asset},{t},1.0\n"),
        )
    };
    // Later polls retry the move only.
    let (p1, body) = probe("f-probe", "MTR-12", "2024-03-15T16:00:00Z");
    d.drop_settled(&p1, body.as_bytes());
    d.wait_gone(&p1).await;
    assert!(d.path(late).exists(), "the move is still blocked");
    // A restart forgets everything in memory; the marker remembers.
    d.ingest.restart(); // SIGKILL, then start again
    d.ingest.wait_ready(Duration::from_secs(60)).await;
    let (p2, body) = probe("g-probe", "MTR-13", "2024-03-15T16:01:00Z");
    d.drop_settled(&p2, body.as_bytes());
    d.wait_gone(&p2).await;
    assert!(d.path(late).exists(), "the move is still blocked");
    // Unblocked: the file moves, its marker goes.
    std::fs::remove_file(d.path("processed/2024/03/15/15")).unwrap();
    d.wait_exists("processed/2024/03/15/15/e-late.json").await;
    d.wait_gone("_gale/done/raw/2024/03/15/15/e-late.json")
        .await;
    d.wait_gone(late).await;

    // Every reading once; every dead letter once.
    let mut all = records;
    all.extend(raw_reader.read(3, Duration::from_secs(30)));
    all.extend(raw_reader.drain(Duration::from_secs(1)));
    let readings = decode_all(&stack, &all).await;
    assert_no_duplicate_ids(&readings);
    let got = rows(&readings);
    assert_eq!(got.len(), 8, "{got:?}");
    for expected in [
        row("MTR-10", at(3600), &[("power", 1.5, Some("kW"))]),
        row("MTR-12", at(7200), &[("power", 1.0, Some("kW"))]),
        row("MTR-13", at(7260), &[("power", 1.0, Some("kW"))]),
    ] {
        assert!(got.contains(&expected), "{expected:?} missing from {got:?}");
    }
    let mut dead = dead;
    dead.extend(dlq_reader.read(1, Duration::from_secs(30)));
    dead.extend(dlq_reader.drain(Duration::from_secs(1)));
    assert_eq!(dead.len(), 4, "bad rows are dead-lettered once");
    assert_eq!(dead[3].payload(), Some(late_bad.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_drop_waits_for_uploads_to_settle() {
    let stack = stack();
    let d = start(&stack, "file-drop-settle", "30s").await;
    let raw_reader = TopicReader::new(&stack.bootstrap, &d.raw);
    let dlq_reader = TopicReader::new(&stack.bootstrap, &d.dlq);

    // Half an upload: the last row is cut in the middle of its timestamp.
    let first = "asset_id,timestamp,power_kw\nMTR-1,2024-03-15T14:00:00Z,1.0\nMTR-2,2024-03-1";
    let rest = "5T14:01:00Z,2.0\n";
    let upload = "raw/2024/03/15/14/a-upload.csv";
    write(&d.path(upload), first.as_bytes());
    // A settled file behind it: once it is taken, a poll has passed the upload.
    let probe = "raw/2024/03/15/14/b-probe.csv";
    d.drop_settled(
        probe,
        b"asset_id,timestamp,power_kw\nMTR-9,2024-03-15T14:09:00Z,9.0\n",
    );
    d.wait_exists("processed/2024/03/15/14/b-probe.csv").await;
    assert!(d.path(upload).exists(), "a fresh file is not taken");
    let records = raw_reader.read(1, Duration::from_secs(30));
    assert_eq!(
        rows(&decode_all(&stack, &records).await),
        vec![row("MTR-9", at(540), &[("power", 9.0, Some("kW"))])]
    );

    // The upload completes and settles: read whole, nothing dead-lettered.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.path(upload))
        .unwrap();
    std::io::Write::write_all(&mut f, rest.as_bytes()).unwrap();
    drop(f);
    backdate(&d.path(upload));
    d.wait_exists("processed/2024/03/15/14/a-upload.csv").await;
    let mut all = records;
    all.extend(raw_reader.read(2, Duration::from_secs(30)));
    all.extend(raw_reader.drain(Duration::from_millis(500)));
    let readings = decode_all(&stack, &all).await;
    assert_no_duplicate_ids(&readings);
    assert_eq!(
        rows(&readings),
        vec![
            row("MTR-1", at(0), &[("power", 1.0, Some("kW"))]),
            row("MTR-2", at(60), &[("power", 2.0, Some("kW"))]),
            row("MTR-9", at(540), &[("power", 9.0, Some("kW"))]),
        ]
    );
    assert!(dlq_reader.drain(Duration::from_millis(500)).is_empty());
}
