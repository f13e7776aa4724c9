//! `gale dlq redrive --ingest-config`: rows of a dropped CSV file that
//! ingest's mapping could not read are dead-lettered; after the mapping is
//! fixed, redrive reads them again (with the file's header row, from where
//! ingest moved the file) and sends the readings to the raw topic with the
//! event ids ingest itself gives those rows; a row still unreadable goes back
//! to the dead-letter topic with its redrive count; a second run sends
//! nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use gale_model::{RawReading, RAW_READING};
use gale_tests::*;
use rdkafka::message::{Message, OwnedMessage};

const SOURCE: &str = "meters";

/// T-2's power is `n/a`, which the first mapping does not take as missing;
/// T-3's is not a number for any mapping.
const FILE: &str = "asset_id,timestamp,power_kw,wind_speed\n\
                    T-1,2024-03-01T00:00:00Z,1.5,7.0\n\
                    T-2,2024-03-01T00:00:00Z,n/a,6.5\n\
                    T-3,2024-03-01T00:00:00Z,oops,5.0\n\
                    T-4,2024-03-01T00:10:00Z,2.0,8.0\n";

/// Ingest's config for a file drop on `store`; `fixed` adds `n/a` to the
/// missing values.
fn config(store: &Path, fixed: bool) -> String {
    let missing = if fixed {
        "missing_values = [\"\", \"N/A\", \"n/a\"]\n"
    } else {
        "missing_values = [\"\", \"N/A\"]\n"
    };
    format!(
        "[[ingest.sources]]\nname = \"{SOURCE}\"\napi_keys = [\"redrive-key-0001\"]\n{missing}\n\
         [[ingest.file_drops]]\nsource = \"{SOURCE}\"\nstore = {{ url = \"{}\" }}\n\
         poll_interval = \"200ms\"\nsettle_time = \"1s\"\n",
        store.display()
    )
}

/// Starts ingest with `cfg` writing to `raw` and `dlq`.
async fn ingest(stack: &Stack, cfg: &Path, raw: &str, dlq: &str, label: &str) -> ServiceProcess {
    let mut env = service_env(stack, None);
    env.push(("GALE_TOPICS__RAW", raw.to_string()));
    env.push(("GALE_TOPICS__DEAD_LETTER", dlq.to_string()));
    env.push(("GALE_INGEST__LISTEN", format!("127.0.0.1:{}", free_port())));
    let p = ServiceProcess::start(
        "gale-ingest",
        &env,
        &["--config", cfg.to_str().unwrap()],
        label,
    );
    p.wait_ready(Duration::from_secs(60)).await;
    p
}

/// Drops `FILE` as a finished upload at `store/raw/2024/a.csv` and waits
/// until ingest moved it to the done prefix.
async fn drop_file(store: &Path) -> PathBuf {
    let path = store.join("raw/2024/a.csv");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, FILE).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    let done = store.join("processed/2024/a.csv");
    wait_for("the file to be processed", Duration::from_secs(60), || {
        let there = done.exists();
        async move { there.then_some(()) }
    })
    .await;
    done
}

async fn decode(stack: &Stack, records: &[OwnedMessage]) -> Vec<RawReading> {
    let mut decoder = registry(stack).decoder::<RawReading>(RAW_READING).unwrap();
    let mut out = Vec::new();
    for m in records {
        let r = decoder.decode(m.payload().unwrap()).await.unwrap();
        assert_eq!(m.key(), Some(r.asset_id.as_bytes()), "keyed by asset id");
        out.push(r);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_rows_are_redriven_through_the_current_mapping() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let (store, store_b) = (dir.path().join("store"), dir.path().join("store-b"));
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&store_b).unwrap();
    let [raw, dlq, raw_b, dlq_b, markers] =
        ["raw", "dlq-ingest", "raw-b", "dlq-ingest-b", "redrives"].map(unique);
    let broken = dir.path().join("broken.toml");
    let fixed = dir.path().join("fixed.toml");
    std::fs::write(&broken, config(&store, false)).unwrap();
    std::fs::write(&fixed, config(&store, true)).unwrap();

    // The first mapping reads T-1 and T-4 and dead-letters T-2 and T-3.
    let mut first = ingest(&stack, &broken, &raw, &dlq, "ingest-redrive-a").await;
    let raw_reader = TopicReader::new(&stack.bootstrap, &raw);
    let dlq_reader = TopicReader::new(&stack.bootstrap, &dlq);
    drop_file(&store).await;
    let sent = decode(&stack, &raw_reader.read(2, Duration::from_secs(30))).await;
    let mut assets: Vec<&str> = sent.iter().map(|r| r.asset_id.as_str()).collect();
    assets.sort();
    assert_eq!(assets, ["T-1", "T-4"]);
    let letters = dlq_reader.read(2, Duration::from_secs(30));
    let mut lines: Vec<(String, String)> = letters
        .iter()
        .map(|m| {
            assert_eq!(m.key(), Some(&b"raw/2024/a.csv"[..]));
            assert_eq!(
                header(m, "gale.dlq.error.class").as_deref(),
                Some("unparseable_row")
            );
            (
                header(m, "gale.dlq.original.topic").unwrap(),
                String::from_utf8_lossy(m.payload().unwrap()).into_owned(),
            )
        })
        .collect();
    lines.sort();
    let origin = format!("{}/raw/2024/a.csv", store.display());
    assert_eq!(
        lines.iter().map(|(o, _)| o.clone()).collect::<Vec<_>>(),
        [format!("{origin}#line=3"), format!("{origin}#line=4")]
    );
    assert!(lines[0].1.starts_with("T-2,"), "{lines:?}");
    first.terminate(Duration::from_secs(20));

    // What ingest with the fixed mapping makes of the same file: the ids to match.
    let fixed_b = dir.path().join("fixed-b.toml");
    std::fs::write(&fixed_b, config(&store_b, true)).unwrap();
    let mut second = ingest(&stack, &fixed_b, &raw_b, &dlq_b, "ingest-redrive-b").await;
    drop_file(&store_b).await;
    let reference = decode(
        &stack,
        &TopicReader::new(&stack.bootstrap, &raw_b).read(3, Duration::from_secs(30)),
    )
    .await;
    second.terminate(Duration::from_secs(20));
    let t2 = reference
        .iter()
        .find(|r| r.asset_id == "T-2")
        .expect("the fixed mapping reads T-2");

    // Dry run, then the redrive: T-2 goes to the raw topic, T-3 back.
    let args = [
        "--topic",
        dlq.as_str(),
        "--ingest-config",
        fixed.to_str().unwrap(),
        "--marker-topic",
        markers.as_str(),
    ];
    let dry = redrive(&stack, &[&args[..], &["--dry-run"]].concat(), &raw);
    assert!(dry.contains("would redrive: 1"), "{dry}");
    assert!(dry.contains("would fail again: 1"), "{dry}");
    let out = redrive(&stack, &args, &raw);
    assert!(out.contains("redriven: 1"), "{out}");
    assert!(
        out.contains("failed again, back to the dead letters: 1"),
        "{out}"
    );

    let records = raw_reader.read(1, Duration::from_secs(30));
    let again = decode(&stack, &records).await;
    assert_eq!(again.len(), 1);
    let r = &again[0];
    assert_eq!(r.asset_id, "T-2");
    assert_eq!(r.event_time, t2.event_time);
    assert_eq!(r.measurements, t2.measurements, "wind speed only");
    assert_eq!(r.source, SOURCE);
    assert_eq!(
        r.event_id, t2.event_id,
        "the event id ingest gives the same row"
    );
    let m = &records[0];
    assert_eq!(header(m, "gale.redrive.count").as_deref(), Some("1"));
    assert!(header(m, "gale.redrive.source").is_some_and(|s| s.starts_with(&dlq)));
    assert_eq!(
        header(m, "gale.redrive.stage"),
        None,
        "every consumer of the raw topic takes it"
    );

    let back = dlq_reader.read(1, Duration::from_secs(30));
    let m = &back[0];
    assert_eq!(String::from_utf8_lossy(m.payload().unwrap()), lines[1].1);
    assert_eq!(m.key(), Some(&b"raw/2024/a.csv"[..]));
    let h = headers(m);
    assert_eq!(h["gale.redrive.count"], "1");
    assert_eq!(h["gale.dlq.stage"], "ingest");
    assert_eq!(h["gale.dlq.error.class"], "unparseable_row");
    assert_eq!(h["gale.dlq.original.topic"], format!("{origin}#line=4"));
    assert!(
        h["gale.dlq.error.message"].contains("oops"),
        "{:?}",
        h["gale.dlq.error.message"]
    );

    // A second run sends nothing: the first two are marked, the returned
    // one is at the limit.
    let out = redrive(
        &stack,
        &[&args[..], &["--max-redrives", "1"]].concat(),
        &raw,
    );
    assert!(out.contains("redriven: 0"), "{out}");
    assert!(out.contains("already redriven"), "{out}");
    assert!(out.contains("redrive limit reached"), "{out}");
    assert!(!out.contains("failed again"), "{out}");
    assert!(raw_reader.poll_for(Duration::from_secs(2)).is_empty());
    assert!(dlq_reader.poll_for(Duration::from_millis(500)).is_empty());
}

/// Runs `gale dlq redrive` with `args`; its output. The raw topic and the
/// registry come from `GALE_*__*` variables over the ingest config, as in
/// ingest's deployment.
fn redrive(stack: &Stack, args: &[&str], raw: &str) -> String {
    let out = std::process::Command::new(bin("gale"))
        .args(["dlq", "redrive", "--quiet"])
        .args(args)
        .env("GALE_KAFKA_BOOTSTRAP", &stack.bootstrap)
        .env("GALE_REGISTRY__URL", &stack.registry_url)
        .env("GALE_TOPICS__RAW", raw)
        .output()
        .expect("run gale");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "gale dlq redrive {args:?}:\n{text}");
    text
}
