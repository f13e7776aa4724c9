//! enrich and detect-faults end to end: an asset registry onboarded from
//! CSV with `gale assets import`, validated readings with known faults in
//! them, the fault events on `gale.faults` and in Postgres `faults`, a
//! silent asset noticed by a timer, an asset imported while the services
//! run, and SIGKILLs of detect-faults that change no fault.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use gale_model::{
    AssetKind, CheckedReading, EnrichedReading, FaultEvent, FaultStatus, QualityTier,
    ScoredReading, CHECKED_READING, ENRICHED_READING, FAULT_EVENT, VALIDATED_READING,
};
use gale_tests::*;
use rdkafka::message::Message;

/// A `faults` row: id, code, status, opened, closed, revision.
type FaultRow = (
    String,
    String,
    String,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
    i32,
);

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
/// 2025-01-06T00:00:00Z: old data, as a backfill (the idle timeout never
/// moves its time, so the run is fully determined by the records).
const T0: i64 = 1_736_121_600_000;
const STEP: i64 = 10 * MIN;

/// The readings of the scenario, in event-time order, with what they inject.
/// T1 runs 40 h with its gearbox at 85 °C for three readings at 10:00;
/// T2 reports for 2 h and then falls silent until 38 h; M1 is a meter that
/// overloads (> 20 kW) for seven readings from 20:00.
fn scenario() -> Vec<ScoredReading> {
    let mut out = Vec::new();
    for i in 0..(40 * 6) {
        let t = T0 + i * STEP;
        let mut r = ScoredReading::new(format!("T1-{i}"), "T1", AssetKind::Turbine, t);
        r.site_id = Some("S1".into());
        r.interval_ms = Some(STEP);
        r.wind_speed_ms = Some(9.0);
        r.power_kw = Some(1_000.0);
        r.rotor_speed_rpm = Some(14.0);
        r.gearbox_temperature_c = Some(if (60..63).contains(&i) { 85.0 } else { 60.0 });
        r.quality_score = 100;
        r.quality_tier = QualityTier::Premium;
        out.push(r);
        if !(12..38 * 6).contains(&i) {
            let mut r = ScoredReading::new(format!("T2-{i}"), "T2", AssetKind::Turbine, t);
            r.site_id = Some("S1".into());
            r.interval_ms = Some(STEP);
            r.wind_speed_ms = Some(9.0);
            r.power_kw = Some(1_000.0);
            r.rotor_speed_rpm = Some(14.0);
            r.gearbox_temperature_c = Some(60.0);
            r.quality_score = 95;
            r.quality_tier = QualityTier::Premium;
            out.push(r);
        }
        if i < 6 {
            // T4 reports for an hour and never again: only a timer can
            // notice it.
            let mut r = ScoredReading::new(format!("T4-{i}"), "T4", AssetKind::Turbine, t);
            r.interval_ms = Some(STEP);
            r.wind_speed_ms = Some(9.0);
            r.power_kw = Some(1_000.0);
            r.quality_score = 100;
            r.quality_tier = QualityTier::Premium;
            out.push(r);
        }
        let mut m = ScoredReading::new(format!("M1-{i}"), "M1", AssetKind::Meter, t);
        m.site_id = Some("S1".into());
        m.interval_ms = Some(STEP);
        m.power_kw = Some(if (120..127).contains(&i) {
            25.0
        } else {
            2.0 + (i % 5) as f64 * 0.3
        });
        m.quality_score = 100;
        m.quality_tier = QualityTier::Premium;
        out.push(m);
    }
    out
}

fn write_registry_files(dir: &Path) -> Vec<String> {
    let sites = dir.join("sites.csv");
    std::fs::write(
        &sites,
        "site_id,name,time_zone,latitude,longitude\nS1,North Farm,Europe/Berlin,54.1,8.2\n",
    )
    .unwrap();
    let turbines = dir.join("turbines.csv");
    std::fs::write(
        &turbines,
        "asset_id,site_id,latitude,longitude,rated_power_kw,hub_height_m,rotor_diameter_m,model\n\
         T1,S1,54.10,8.20,2000,80,90,GW2000\n\
         T2,S1,54.11,8.21,2000,80,90,GW2000\n",
    )
    .unwrap();
    let curve = dir.join("curve.csv");
    let mut text = String::from("model,wind_speed_ms,power_kw\n");
    for (v, p) in [
        (3.0, 0.0),
        (5.0, 150.0),
        (8.0, 700.0),
        (10.0, 1300.0),
        (12.0, 2000.0),
        (25.0, 2000.0),
    ] {
        text.push_str(&format!("GW2000,{v},{p}\n"));
    }
    std::fs::write(&curve, text).unwrap();
    let meters = dir.join("meters.csv");
    std::fs::write(&meters, "asset_id,kind,site_id,feeder_id\nM1,meter,S1,F1\n").unwrap();
    [sites, turbines, curve, meters]
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

fn gale(args: &[&str], db: &str) -> (bool, String) {
    let out = std::process::Command::new(bin("gale"))
        .args(args)
        .env("DATABASE_URL", db)
        .output()
        .expect("run gale");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

struct Topics {
    validated: String,
    enriched: String,
    checked: String,
    faults: String,
    quarantine: String,
}

impl Topics {
    fn new() -> Topics {
        Topics {
            validated: unique("validated"),
            enriched: unique("enriched"),
            checked: unique("checked"),
            faults: unique("faults"),
            quarantine: unique("quarantine"),
        }
    }
}

fn enrich_env(stack: &Stack, t: &Topics, db: &str) -> Vec<(&'static str, String)> {
    let mut env = service_env(stack, None);
    env.push(("GALE_TOPICS__INPUT", t.validated.clone()));
    env.push(("GALE_TOPICS__OUTPUT", t.enriched.clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", unique("dlq-enrich")));
    env.push(("GALE_KAFKA__GROUP_ID", unique("enrich")));
    env.push(("GALE_ASSETS__URL", db.to_string()));
    env.push(("GALE_ASSETS__REFRESH", "1s".into()));
    env
}

fn detect_env(stack: &Stack, t: &Topics, group: &str) -> Vec<(&'static str, String)> {
    let mut env = service_env(stack, None);
    env.push(("GALE_TOPICS__INPUT", t.enriched.clone()));
    env.push(("GALE_TOPICS__CHECKED", t.checked.clone()));
    env.push(("GALE_TOPICS__FAULTS", t.faults.clone()));
    env.push(("GALE_TOPICS__QUARANTINE", t.quarantine.clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", unique("dlq-detect")));
    env.push(("GALE_KAFKA__GROUP_ID", group.to_string()));
    env.push(("GALE_PROCESSING__BATCH_SIZE", "50".into()));
    env.push(("GALE_STATE__COMMIT_INTERVAL", "200ms".into()));
    env.push(("GALE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000".into()));
    env.push((
        "GALE_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS",
        "1000".into(),
    ));
    env
}

async fn produce(stack: &Stack, topic: &str, readings: &[ScoredReading]) {
    let registry = registry(stack);
    let encoder = registry.register(topic, VALIDATED_READING).await.unwrap();
    let producer = producer(&stack.bootstrap);
    for chunk in readings.chunks(200) {
        let sends = chunk.iter().map(|r| {
            let payload = encoder.encode(r).unwrap();
            let producer = producer.clone();
            async move { send(&producer, topic, &r.asset_id, &payload).await }
        });
        futures::future::join_all(sends).await;
    }
}

/// Sends `readings` to `topic` in small paced chunks in the background
/// (about 15 s for the scenario), so a test can disturb the stage mid-run.
async fn feed(
    stack: &Stack,
    topic: &str,
    readings: Vec<EnrichedReading>,
) -> tokio::task::JoinHandle<()> {
    let encoder = registry(stack)
        .register(topic, ENRICHED_READING)
        .await
        .unwrap();
    let producer = producer(&stack.bootstrap);
    let topic = topic.to_string();
    tokio::spawn(async move {
        for chunk in readings.chunks(10) {
            let sends = chunk.iter().map(|r| {
                let payload = encoder.encode(r).unwrap();
                let (producer, topic) = (producer.clone(), topic.clone());
                async move { send(&producer, &topic, &r.reading.asset_id, &payload).await }
            });
            futures::future::join_all(sends).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Final state per fault id (the event with the highest revision) and
/// every (fault id, revision) seen.
fn fold(events: &[FaultEvent]) -> BTreeMap<String, FaultEvent> {
    let mut out: BTreeMap<String, FaultEvent> = BTreeMap::new();
    for e in events {
        match out.get(&e.fault_id) {
            Some(have) if have.revision >= e.revision => {}
            _ => {
                out.insert(e.fault_id.clone(), e.clone());
            }
        }
    }
    out
}

async fn read_faults(stack: &Stack, topic: &str, quiet: Duration) -> Vec<FaultEvent> {
    let registry = registry(stack);
    let mut decoder = registry.decoder::<FaultEvent>(FAULT_EVENT).unwrap();
    let mut out = Vec::new();
    for m in TopicReader::new(&stack.bootstrap, topic).drain(quiet) {
        out.push(decoder.decode(m.payload().unwrap()).await.unwrap());
    }
    out
}

/// What the scenario must yield: (code, opened, closed) per asset. T4's
/// MISSING_EXTENDED stays open: no reading of T4 ever arrives again, so it
/// was opened by a timer as T1's and M1's readings moved the watermark.
fn expected() -> Vec<(String, String, i64, Option<i64>)> {
    let t2_last = T0 + 11 * STEP;
    let due = t2_last + STEP;
    let t4_due = T0 + 6 * STEP;
    vec![
        (
            "M1".into(),
            "OVERLOAD".into(),
            T0 + 125 * STEP,
            Some(T0 + 129 * STEP),
        ),
        (
            "T1".into(),
            "GEARBOX_OVERHEAT".into(),
            T0 + 60 * STEP,
            Some(T0 + 64 * STEP),
        ),
        (
            "T2".into(),
            "MISSING_EXTENDED".into(),
            due + 24 * HOUR,
            Some(T0 + 228 * STEP),
        ),
        (
            "T2".into(),
            "MISSING_SHORT".into(),
            due + 4 * HOUR,
            Some(due + 24 * HOUR),
        ),
        (
            "T4".into(),
            "MISSING_EXTENDED".into(),
            t4_due + 24 * HOUR,
            None,
        ),
        (
            "T4".into(),
            "MISSING_SHORT".into(),
            t4_due + 4 * HOUR,
            Some(t4_due + 24 * HOUR),
        ),
    ]
}

/// Compares the folded faults with [`expected`]: codes and opening times
/// exactly, closing times within one reading interval.
fn check(faults: &BTreeMap<String, FaultEvent>) {
    let mut got: Vec<(String, String, i64, Option<i64>)> = faults
        .values()
        .map(|f| {
            (
                f.asset_id.clone(),
                f.code.clone(),
                f.opened_time,
                f.closed_time,
            )
        })
        .collect();
    got.sort();
    let want = expected();
    assert_eq!(
        got.len(),
        want.len(),
        "faults: {got:#?}\nexpected: {want:#?}"
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((&g.0, &g.1, g.2), (&w.0, &w.1, w.2), "{got:#?}");
        match (g.3, w.3) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= STEP, "{g:?} closes near {b}"),
            (a, b) => assert_eq!(a, b, "{g:?}"),
        }
    }
    for f in faults.values() {
        let want = if f.closed_time.is_some() {
            FaultStatus::Closed
        } else {
            FaultStatus::Opened
        };
        assert_eq!(f.status, want, "{f:?}");
        assert_eq!(
            f.fault_id,
            format!("{}:{}:{}", f.asset_id, f.code, f.opened_time)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_come_out_of_the_topic_and_postgres_exactly_once() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = gale(&["db", "migrate"], &db.url);
    assert!(ok, "{out}");
    let files = write_registry_files(dir.path());
    let mut args = vec!["assets", "import"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = gale(&args, &db.url);
    assert!(ok, "import failed: {out}");

    let t = Topics::new();
    create_topics(
        &stack.bootstrap,
        &[
            &t.validated,
            &t.enriched,
            &t.checked,
            &t.faults,
            &t.quarantine,
        ],
        1,
    )
    .await;
    let mut enrich = ServiceProcess::start(
        "gale-enrich",
        &enrich_env(&stack, &t, &db.url),
        &[],
        "faults-enrich",
    );
    let mut detect = ServiceProcess::start(
        "gale-detect-faults",
        &detect_env(&stack, &t, &unique("detect")),
        &[],
        "faults-detect",
    );
    let pg_dlq = unique("dlq-pg");
    let config = pg_sink_config(dir.path(), &db.url, &[], &pg_dlq);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[sink.tables]]\ntopic = \"{}\"\ntable = \"fault_events\"\ntime_column = \"updated_time\"\nlatest = {{ table = \"faults\", key = \"fault_id\", order_by = \"revision\" }}\n",
        t.faults
    ));
    std::fs::write(&config, text).unwrap();
    let mut pg_env = service_env(&stack, None);
    pg_env.push(("GALE_KAFKA__GROUP_ID", unique("pg")));
    let mut pg = ServiceProcess::start(
        "gale-pg-sink",
        &pg_env,
        &["--config", config.to_str().unwrap()],
        "faults-pg",
    );
    enrich.wait_ready(Duration::from_secs(60)).await;
    detect.wait_ready(Duration::from_secs(60)).await;
    pg.wait_ready(Duration::from_secs(60)).await;

    let readings = scenario();
    produce(&stack, &t.validated, &readings).await;

    // Every reading is checked once, enriched with its model's curve.
    let registry = registry(&stack);
    let mut checked_decoder = registry.decoder::<CheckedReading>(CHECKED_READING).unwrap();
    let checked_reader = TopicReader::new(&stack.bootstrap, &t.checked);
    let mut checked = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while checked.len() < readings.len() && std::time::Instant::now() < deadline {
        for m in checked_reader.poll_for(Duration::from_millis(500)) {
            checked.push(checked_decoder.decode(m.payload().unwrap()).await.unwrap());
        }
    }
    assert_eq!(checked.len(), readings.len());
    let ids: HashSet<&str> = checked
        .iter()
        .map(|c| c.enriched.reading.event_id.as_str())
        .collect();
    assert_eq!(ids.len(), readings.len(), "every reading checked once");
    let t1 = checked
        .iter()
        .find(|c| c.enriched.reading.event_id == "T1-0")
        .unwrap();
    assert_eq!(t1.enriched.model_id.as_deref(), Some("GW2000"));
    assert_eq!(t1.enriched.site_time_zone.as_deref(), Some("Europe/Berlin"));
    // 9 m/s on the curve: halfway between 700 kW at 8 and 1300 kW at 10.
    assert_eq!(t1.enriched.expected_power_kw, Some(1000.0));
    let hot = checked
        .iter()
        .find(|c| c.enriched.reading.event_id == "T1-61")
        .unwrap();
    assert_eq!(hot.faults.len(), 1, "{:?}", hot.faults);
    assert_eq!(hot.faults[0].code, "GEARBOX_OVERHEAT");
    assert_eq!(hot.fault_deduction, 30);
    assert_eq!(hot.enriched.reading.quality_score, 70);
    assert_eq!(hot.enriched.reading.quality_tier, QualityTier::Standard);

    // T4's gap faults can only have come from timers.
    let fired = metric_value(&detect.metrics().await, "gale_timers_fired_total").unwrap_or(0.0);
    assert!(fired >= 2.0, "timers fired: {fired}");
    // The fault events on the topic and the rows in Postgres.
    let events = read_faults(&stack, &t.faults, Duration::from_secs(3)).await;
    let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "no event twice: {events:#?}");
    let folded = fold(&events);
    check(&folded);

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows: Vec<FaultRow> =
        wait_for("fault rows in Postgres", Duration::from_secs(60), || {
            let pool = pool.clone();
            let n = folded.len();
            async move {
                let rows: Vec<FaultRow> = sqlx::query_as(
                    "SELECT fault_id, code, status, opened_time, closed_time, revision FROM faults ORDER BY fault_id",
                )
                .fetch_all(&pool)
                .await
                .ok()?;
                let settled = rows
                    .iter()
                    .all(|r| r.2 == if r.4.is_some() { "CLOSED" } else { "OPENED" });
                (rows.len() == n && settled).then_some(rows)
            }
        })
        .await;
    for (id, code, _, opened, closed, revision) in &rows {
        let f = &folded[id];
        assert_eq!(
            (code, opened.timestamp_millis(), revision),
            (&f.code, f.opened_time, &f.revision)
        );
        assert_eq!(closed.map(|c| c.timestamp_millis()), f.closed_time);
    }
    let (ok, out) = gale(&["faults", "list", "--all"], &db.url);
    assert!(ok && out.contains("GEARBOX_OVERHEAT"), "{out}");

    // An asset imported while the services run is enriched without a restart.
    let t3 = dir.path().join("t3.csv");
    std::fs::write(
        &t3,
        "asset_id,site_id,rated_power_kw,model\nT3,S1,2000,GW2000\n",
    )
    .unwrap();
    let (ok, out) = gale(&["assets", "import", t3.to_str().unwrap()], &db.url);
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut r = ScoredReading::new("T3-0", "T3", AssetKind::Turbine, T0 + 40 * HOUR);
    r.wind_speed_ms = Some(12.0);
    r.power_kw = Some(1_900.0);
    produce(&stack, &t.validated, &[r]).await;
    let mut enriched_decoder = registry
        .decoder::<EnrichedReading>(ENRICHED_READING)
        .unwrap();
    let enriched_reader = TopicReader::new(&stack.bootstrap, &t.enriched);
    let mut found = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while found.is_none() && std::time::Instant::now() < deadline {
        for m in enriched_reader.poll_for(Duration::from_millis(500)) {
            let e = enriched_decoder.decode(m.payload().unwrap()).await.unwrap();
            if e.reading.asset_id == "T3" {
                found = Some(e);
            }
        }
    }
    let e = found.expect("T3's reading enriched");
    assert_eq!(
        e.model_id.as_deref(),
        Some("GW2000"),
        "{:?}",
        e.context_flags
    );
    assert_eq!(e.expected_power_kw, Some(2000.0));
    assert_eq!(e.context_flags, vec!["NO_TEMPERATURE".to_string()]);
    enrich.terminate(Duration::from_secs(20));
    detect.terminate(Duration::from_secs(20));
    pg.terminate(Duration::from_secs(20));
}

/// detect-faults killed three times (once right after a restart, while it
/// restores) yields the same faults as an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_detect_faults_changes_no_fault() {
    let stack = stack();
    let t = Topics::new();
    create_topics(
        &stack.bootstrap,
        &[&t.enriched, &t.checked, &t.faults, &t.quarantine],
        2,
    )
    .await;
    // The scenario, enriched by hand (enrich is not under test here), fed
    // slowly so the kills land while faults are in progress.
    let readings: Vec<EnrichedReading> =
        scenario().into_iter().map(EnrichedReading::bare).collect();
    let feeder = feed(&stack, &t.enriched, readings.clone()).await;

    // Killed: three SIGKILLs while it works through the input.
    let group = unique("detect-killed");
    let mut detect = ServiceProcess::start(
        "gale-detect-faults",
        &detect_env(&stack, &t, &group),
        &[],
        "kill-detect",
    );
    detect.wait_ready(Duration::from_secs(60)).await;
    let checked = TopicReader::new(&stack.bootstrap, &t.checked);
    let mut seen = 0;
    for round in 0..3 {
        let target = seen + 100;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen < target && std::time::Instant::now() < deadline {
            seen += checked.poll_for(Duration::from_millis(50)).len();
        }
        detect.kill9();
        detect.restart();
        if round == 1 {
            // Again while it restores its state.
            tokio::time::sleep(Duration::from_millis(300)).await;
            detect.kill9();
            detect.restart();
        }
    }
    detect.wait_ready(Duration::from_secs(60)).await;
    feeder.await.unwrap();
    wait_for("the killed run to finish", Duration::from_secs(120), || {
        let bootstrap = stack.bootstrap.clone();
        let topic = t.checked.clone();
        let n = readings.len() as i64;
        async move { (record_count(&bootstrap, &topic) >= n).then_some(()) }
    })
    .await;
    let killed = read_faults(&stack, &t.faults, Duration::from_secs(3)).await;
    detect.terminate(Duration::from_secs(20));

    // Uninterrupted: a fresh group (and so fresh state) into fresh outputs.
    let clean = Topics {
        validated: t.validated.clone(),
        enriched: t.enriched.clone(),
        checked: unique("checked-clean"),
        faults: unique("faults-clean"),
        quarantine: unique("quarantine-clean"),
    };
    create_topics(
        &stack.bootstrap,
        &[&clean.checked, &clean.faults, &clean.quarantine],
        2,
    )
    .await;
    let mut detect = ServiceProcess::start(
        "gale-detect-faults",
        &detect_env(&stack, &clean, &unique("detect-clean")),
        &[],
        "clean-detect",
    );
    detect.wait_ready(Duration::from_secs(60)).await;
    wait_for("the clean run to finish", Duration::from_secs(120), || {
        let bootstrap = stack.bootstrap.clone();
        let topic = clean.checked.clone();
        let n = readings.len() as i64;
        async move { (record_count(&bootstrap, &topic) >= n).then_some(()) }
    })
    .await;
    let uninterrupted = read_faults(&stack, &clean.faults, Duration::from_secs(3)).await;
    detect.terminate(Duration::from_secs(20));

    let a = fold(&killed);
    let b = fold(&uninterrupted);
    check(&b);
    assert_eq!(
        a, b,
        "the killed run's faults differ from the uninterrupted run's"
    );
    // Redelivery may repeat an event, never invent one: the same (id, revision) set.
    let ids = |v: &[FaultEvent]| v.iter().map(|e| e.event_id.clone()).collect::<HashSet<_>>();
    assert_eq!(ids(&killed), ids(&uninterrupted));
}

/// A second instance joins mid-run and leaves again: partitions (and their
/// state) move to it and back, and the faults are still exactly those of
/// the scenario, with no event id missing or invented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_changes_no_fault() {
    let stack = stack();
    let t = Topics::new();
    create_topics(
        &stack.bootstrap,
        &[&t.enriched, &t.checked, &t.faults, &t.quarantine],
        2,
    )
    .await;
    let readings: Vec<EnrichedReading> =
        scenario().into_iter().map(EnrichedReading::bare).collect();
    let feeder = feed(&stack, &t.enriched, readings.clone()).await;
    let group = unique("detect-rebalance");
    let env = detect_env(&stack, &t, &group);
    let mut first = ServiceProcess::start("gale-detect-faults", &env, &[], "rebalance-a");
    first.wait_ready(Duration::from_secs(60)).await;
    let checked = TopicReader::new(&stack.bootstrap, &t.checked);
    let mut seen = 0;
    let progress = |seen: &mut usize, by: usize| {
        let target = *seen + by;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while *seen < target && std::time::Instant::now() < deadline {
            *seen += checked.poll_for(Duration::from_millis(50)).len();
        }
    };
    progress(&mut seen, 100);
    let mut second = ServiceProcess::start("gale-detect-faults", &env, &[], "rebalance-b");
    second.wait_ready(Duration::from_secs(60)).await;
    progress(&mut seen, 200);
    second.terminate(Duration::from_secs(20));
    feeder.await.unwrap();
    wait_for("the run to finish", Duration::from_secs(120), || {
        let bootstrap = stack.bootstrap.clone();
        let topic = t.checked.clone();
        let n = readings.len() as i64;
        async move { (record_count(&bootstrap, &topic) >= n).then_some(()) }
    })
    .await;
    let events = read_faults(&stack, &t.faults, Duration::from_secs(3)).await;
    first.terminate(Duration::from_secs(20));
    let folded = fold(&events);
    check(&folded);
    // Every revision of every fault is there (redelivery may repeat one).
    for f in folded.values() {
        for rev in 0..=f.revision {
            let id = format!("{}:{rev}", f.fault_id);
            assert!(events.iter().any(|e| e.event_id == id), "{id} missing");
        }
    }
}
