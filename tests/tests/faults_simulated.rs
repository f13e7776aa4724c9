//! The simulator's fault episodes through the whole pipeline: `gale
//! simulate` writes three days of ten-minute readings of 8 turbines and 8
//! meters to the raw topic, with every turbine and meter fault and a silence
//! injected at known times (`--faults-out`); validate, enrich and
//! detect-faults run as processes, pg-sink stores the faults. Every injected
//! fault must come out of `gale.faults` and Postgres `faults` once, with its
//! code and opening and closing times (within one reading interval), and no
//! fault may appear where none was injected.

use std::collections::BTreeMap;
use std::time::Duration;

use gale_model::{FaultEvent, FAULT_EVENT};
use gale_tests::*;
use rdkafka::message::Message;

const INTERVAL_MS: i64 = 600_000;

/// A `faults` row: id, code, opened, closed.
type FaultRow = (
    String,
    String,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
);

#[derive(Debug, serde::Deserialize)]
struct Injected {
    asset_id: String,
    code: String,
    expected_open_ms: i64,
    expected_close_ms: Option<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_come_out_exactly() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let gale = |args: &[&str]| {
        let out = std::process::Command::new(bin("gale"))
            .args(args)
            .env("DATABASE_URL", &db.url)
            .output()
            .expect("run gale");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "gale {args:?}: {text}");
        text
    };
    gale(&["db", "migrate"]);
    let registry_dir = dir.path().join("registry");
    let reg = registry_dir.to_str().unwrap();
    gale(&[
        "fleet",
        "--turbines",
        "8",
        "--meters",
        "8",
        "--seed",
        "7",
        "--registry-dir",
        reg,
    ]);
    let files: Vec<String> = ["sites", "models", "curves", "assets"]
        .iter()
        .map(|f| format!("{reg}/{f}.csv"))
        .collect();
    let mut args = vec!["assets", "import"];
    args.extend(files.iter().map(String::as_str));
    gale(&args);

    let raw = unique("raw");
    let validated = unique("validated");
    let quarantine = unique("quarantine");
    let enriched = unique("enriched");
    let checked = unique("checked");
    let faults = unique("faults");
    create_topics(
        &stack.bootstrap,
        &[&raw, &validated, &quarantine, &enriched, &checked, &faults],
        3,
    )
    .await;

    // Validate's meter limit is the residential 20 kW, which quarantines
    // the very readings OVERLOAD counts; this fleet's meters may draw 50.
    let rules = dir.path().join("validate-rules.toml");
    let preset = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../services/validate/rules/default.toml"),
    )
    .unwrap();
    let line = "power = { reject_below = 0.0, min = 0.0, max = 20.0 }";
    assert!(
        preset.contains(line),
        "the meter power limit moved in the preset"
    );
    std::fs::write(
        &rules,
        preset.replace(
            line,
            "power = { reject_below = 0.0, min = 0.0, max = 50.0 }",
        ),
    )
    .unwrap();

    let mut validate_env = service_env(&stack, None);
    validate_env.extend([
        ("GALE_TOPICS__INPUT", raw.clone()),
        ("GALE_TOPICS__VALIDATED", validated.clone()),
        ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
        ("GALE_TOPICS__DEAD_LETTER", unique("dlq-validate")),
        ("GALE_KAFKA__GROUP_ID", unique("validate")),
        ("GALE_VALIDATE__MODE", "backfill".into()),
        ("GALE_VALIDATE__RULES_FILE", rules.display().to_string()),
        ("GALE_VALIDATE__ASSETS__SOURCE", "postgres".into()),
        ("GALE_VALIDATE__ASSETS__URL", db.url.clone()),
    ]);
    let mut enrich_env = service_env(&stack, None);
    enrich_env.extend([
        ("GALE_TOPICS__INPUT", validated.clone()),
        ("GALE_TOPICS__OUTPUT", enriched.clone()),
        ("GALE_TOPICS__DEAD_LETTER", unique("dlq-enrich")),
        ("GALE_KAFKA__GROUP_ID", unique("enrich")),
        ("GALE_ASSETS__URL", db.url.clone()),
    ]);
    let mut detect_env = service_env(&stack, None);
    detect_env.extend([
        ("GALE_TOPICS__INPUT", enriched.clone()),
        ("GALE_TOPICS__CHECKED", checked.clone()),
        ("GALE_TOPICS__FAULTS", faults.clone()),
        ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
        ("GALE_TOPICS__DEAD_LETTER", unique("dlq-detect")),
        ("GALE_KAFKA__GROUP_ID", unique("detect")),
    ]);
    let config = pg_sink_config(dir.path(), &db.url, &[], &unique("dlq-pg"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[sink.tables]]\ntopic = \"{faults}\"\ntable = \"fault_events\"\ntime_column = \"updated_time\"\nlatest = {{ table = \"faults\", key = \"fault_id\", order_by = \"revision\" }}\n"
    ));
    std::fs::write(&config, text).unwrap();
    let mut pg_env = service_env(&stack, None);
    pg_env.push(("GALE_KAFKA__GROUP_ID", unique("pg")));

    let mut services = vec![
        ServiceProcess::start("gale-validate", &validate_env, &[], "sim-validate"),
        ServiceProcess::start("gale-enrich", &enrich_env, &[], "sim-enrich"),
        ServiceProcess::start("gale-detect-faults", &detect_env, &[], "sim-detect"),
        ServiceProcess::start(
            "gale-pg-sink",
            &pg_env,
            &["--config", config.to_str().unwrap()],
            "sim-pg",
        ),
    ];
    for s in &services {
        s.wait_ready(Duration::from_secs(90)).await;
    }

    let injected_file = dir.path().join("injected.jsonl");
    gale(&[
        "simulate",
        "--bootstrap",
        &stack.bootstrap,
        "--registry-url",
        &stack.registry_url,
        "--topic",
        &raw,
        "--turbines",
        "8",
        "--meters",
        "8",
        "--seed",
        "7",
        "--start",
        "2025-03-01T00:00:00Z",
        "--interval",
        "10m",
        "--count",
        "7000",
        "--faults",
        "episodes",
        "--interval-declared",
        "--faults-out",
        injected_file.to_str().unwrap(),
        "--quiet",
    ]);
    let injected: Vec<Injected> = std::fs::read_to_string(&injected_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let codes: std::collections::BTreeSet<&str> =
        injected.iter().map(|i| i.code.as_str()).collect();
    for code in [
        "GEARBOX_OVERHEAT",
        "GENERATOR_OVERHEAT",
        "HIGH_VIBRATION",
        "LOW_OIL_PRESSURE",
        "TOWER_LEAN",
        "UNDERPERFORMANCE",
        "MISSING_SHORT",
        "MISSING_EXTENDED",
        "STUCK_VALUE",
        "ZERO_VALUE",
        "OVERLOAD",
    ] {
        assert!(
            codes.contains(code),
            "the simulator injected no {code}: {codes:?}"
        );
    }

    // Wait until detect-faults has checked everything validate passed on.
    wait_for(
        "detect-faults to check every reading",
        Duration::from_secs(240),
        || {
            let bootstrap = stack.bootstrap.clone();
            let (validated, checked) = (validated.clone(), checked.clone());
            async move {
                let v = record_count(&bootstrap, &validated);
                (v > 6000 && record_count(&bootstrap, &checked) >= v).then_some(())
            }
        },
    )
    .await;
    let registry = registry(&stack);
    let mut decoder = registry.decoder::<FaultEvent>(FAULT_EVENT).unwrap();
    let mut folded: BTreeMap<String, FaultEvent> = BTreeMap::new();
    for m in TopicReader::new(&stack.bootstrap, &faults).drain(Duration::from_secs(3)) {
        let e = decoder.decode(m.payload().unwrap()).await.unwrap();
        if folded
            .get(&e.fault_id)
            .is_none_or(|have| have.revision < e.revision)
        {
            folded.insert(e.fault_id.clone(), e);
        }
    }
    // LOW_POWER_OUTPUT (INFO) follows from light wind, not from an episode.
    folded.retain(|_, f| f.code != "LOW_POWER_OUTPUT");

    let mut unmatched: Vec<&FaultEvent> = folded.values().collect();
    for i in &injected {
        let pos = unmatched
            .iter()
            .position(|f| f.asset_id == i.asset_id && f.code == i.code)
            .unwrap_or_else(|| panic!("injected {i:?} was not detected; detected: {folded:#?}"));
        let f = unmatched.remove(pos);
        assert!(
            (f.opened_time - i.expected_open_ms).abs() <= INTERVAL_MS,
            "{i:?} opened at {}",
            f.opened_time
        );
        match (i.expected_close_ms, f.closed_time) {
            (Some(want), Some(got)) => {
                assert!((got - want).abs() <= INTERVAL_MS, "{i:?} closed at {got}")
            }
            (None, None) => {}
            (want, got) => panic!("{i:?}: expected close {want:?}, got {got:?}"),
        }
    }
    assert!(
        unmatched.is_empty(),
        "faults nobody injected: {unmatched:#?}"
    );

    // Postgres holds the same faults, one row each.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let want: BTreeMap<String, (String, i64, Option<i64>)> = folded
        .values()
        .map(|f| {
            (
                f.fault_id.clone(),
                (f.code.clone(), f.opened_time, f.closed_time),
            )
        })
        .collect();
    wait_for("the faults in Postgres", Duration::from_secs(60), || {
        let pool = pool.clone();
        let want = want.clone();
        async move {
            let rows: Vec<FaultRow> =
                sqlx::query_as("SELECT fault_id, code, opened_time, closed_time FROM faults WHERE code <> 'LOW_POWER_OUTPUT'")
                    .fetch_all(&pool)
                    .await
                    .ok()?;
            let got: BTreeMap<String, (String, i64, Option<i64>)> = rows
                .into_iter()
                .map(|(id, code, o, c)| (id, (code, o.timestamp_millis(), c.map(|c| c.timestamp_millis()))))
                .collect();
            (got == want).then_some(())
        }
    })
    .await;
    for s in services.iter_mut() {
        s.terminate(Duration::from_secs(20));
    }
}
