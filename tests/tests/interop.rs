//! Interop with Confluent's own serde: a record written by confluent-kafka's
//! AvroSerializer is processed by validate, and validate's output is read
//! back by confluent-kafka's AvroDeserializer.

use std::process::Command;
use std::time::Duration;

use gale_tests::*;

fn python() -> String {
    std::env::var("GALE_PYTHON").unwrap_or_else(|_| {
        panic!("GALE_PYTHON is not set: run the tests with `make test`, which prepares the Python tools (confluent-kafka)")
    })
}

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/confluent_interop.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_serializer_in_confluent_deserializer_out() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets.csv");
    std::fs::write(
        &assets,
        "asset_id,kind,site_id\nMTR-1,meter,grid\nTURBINE_00001,turbine,farm-a\n",
    )
    .unwrap();
    let raw = unique("raw");
    let validated = unique("validated");
    create_topics(&stack.bootstrap, &[&raw], 3).await;

    // Confluent's serializer registers the schema and writes the records first.
    let out = Command::new(python())
        .arg(script())
        .args([
            "produce",
            "--bootstrap",
            &stack.bootstrap,
            "--registry",
            &stack.registry_url,
            "--topic",
            &raw,
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut env = service_env(&stack, None);
    env.push(("GALE_TOPICS__INPUT", raw.clone()));
    env.push(("GALE_TOPICS__VALIDATED", validated.clone()));
    env.push(("GALE_TOPICS__QUARANTINE", unique("quarantine")));
    env.push(("GALE_TOPICS__DEAD_LETTER", unique("dlq")));
    env.push(("GALE_KAFKA__GROUP_ID", unique("validate")));
    env.push(("GALE_VALIDATE__ASSETS__SOURCE", "file".into()));
    env.push(("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()));
    let validate = ServiceProcess::start("gale-validate", &env, &[], "interop-validate");
    validate.wait_ready(Duration::from_secs(60)).await;
    TopicReader::new(&stack.bootstrap, &validated).read(2, Duration::from_secs(60));

    let out = Command::new(python())
        .arg(script())
        .args([
            "consume",
            "--bootstrap",
            &stack.bootstrap,
            "--registry",
            &stack.registry_url,
            "--topic",
            &validated,
            "--count",
            "2",
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let meter = rows
        .iter()
        .find(|r| r["asset_id"] == "MTR-1")
        .expect("meter reading");
    assert_eq!(meter["event_id"], "confluent-python-1");
    assert_eq!(meter["power_kw"], 1.25);
    assert_eq!(meter["quality_score"], 95);
    assert_eq!(meter["quality_tier"], "PREMIUM");
    let turbine = rows
        .iter()
        .find(|r| r["asset_id"] == "TURBINE_00001")
        .expect("turbine reading");
    assert_eq!(turbine["power_kw"], 2100.0);
    let gearbox = turbine["gearbox_temperature_c"].as_f64().unwrap();
    assert!((gearbox - 71.111).abs() < 0.01, "{gearbox}");
    assert_eq!(turbine["site_id"], "farm-a");
}
