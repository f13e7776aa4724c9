//! `gale status` and `gale status-page` against a small real pipeline:
//! ingest, validate, pg-sink and archive run; a second pg-sink waits for a
//! database that is not there (not ready); enrich is named but not running
//! (unreachable). One reading for an unknown asset is dead-lettered by
//! validate. The page's `/api/status` must say all of that, `gale status`
//! must print it, and headless Chromium must render it: the screenshot is
//! decoded and the stage lamps' colours counted, and the DOM after the
//! page's script ran is checked for the stages and the dead-letter reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gale_tests::*;
use serde_json::Value;

const API_KEY: &str = "status-test-key-0001";

/// Lamp colours of the page (status_page.html) and the lamp's size in pixels.
const READY: [u8; 3] = [0x1f, 0x88, 0x3d];
const NOT_READY: [u8; 3] = [0xbf, 0x87, 0x00];
const UNREACHABLE: [u8; 3] = [0xcf, 0x22, 0x2e];
const LAMP_PIXELS: usize = 56 * 22;

async fn post_readings(api: &str, body: String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{api}/v1/readings"))
        .header("Authorization", format!("Bearer {API_KEY}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{:?}", resp.text().await);
}

fn stage<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no stage {name} in {report:#}"))
}

/// Runs `cmd` to completion within `timeout` (killed after), returning stdout.
fn run_with_deadline(mut cmd: Command, timeout: Duration) -> (bool, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let deadline = Instant::now() + timeout;
    let ok = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (ok, out.join().unwrap(), err.join().unwrap())
}

fn chromium(dir: &Path, extra: &[String], url: &str) -> (bool, String, String) {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
    ])
    .arg(format!(
        "--user-data-dir={}",
        dir.join("chromium-profile").display()
    ))
    .args(extra)
    .arg(url);
    run_with_deadline(cmd, Duration::from_secs(90))
}

/// Pixels per colour (within 2 per channel) in a PNG screenshot.
fn count_colours(png_path: &Path, colours: &[[u8; 3]]) -> (Vec<usize>, (u32, u32)) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).expect("screenshot file"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "8-bit screenshot");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let mut counts = vec![0; colours.len()];
    for px in buf[..info.buffer_size()].chunks_exact(channels) {
        for (i, c) in colours.iter().enumerate() {
            if (0..3).all(|k| px[k].abs_diff(c[k]) <= 2) {
                counts[i] += 1;
            }
        }
    }
    (counts, (info.width, info.height))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_the_status_page_show_stages_dead_letters_and_freshness() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create(&stack).await;
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    // Every topic of this test under one prefix, dead letters as <prefix>dlq.<stage>.
    let prefix = format!("{}.", unique("st"));
    let topic = |name: &str| format!("{prefix}{name}");
    let (raw, validated, quarantine) = (topic("raw"), topic("validated"), topic("quarantine"));
    let (validate_group, pg_group, archive_group) = (
        unique("st-validate"),
        unique("st-pg-sink"),
        unique("st-archive"),
    );

    let assets = dir.path().join("assets.csv");
    std::fs::write(&assets, "asset_id,kind,site_id\nMTR-1,meter,grid-north\n").unwrap();
    let ingest_cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &ingest_cfg,
        format!("[[ingest.sources]]\nname = \"meters\"\napi_keys = [\"{API_KEY}\"]\n"),
    )
    .unwrap();
    let api = format!("127.0.0.1:{}", free_port());

    let mut env = service_env(&stack, None);
    env.extend([
        ("GALE_TOPICS__RAW", raw.clone()),
        ("GALE_TOPICS__DEAD_LETTER", topic("dlq.ingest")),
        ("GALE_INGEST__LISTEN", api.clone()),
    ]);
    let ingest = ServiceProcess::start(
        "gale-ingest",
        &env,
        &["--config", ingest_cfg.to_str().unwrap()],
        "status-ingest",
    );
    let mut env = service_env(&stack, None);
    env.extend([
        ("GALE_TOPICS__INPUT", raw.clone()),
        ("GALE_TOPICS__VALIDATED", validated.clone()),
        ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
        ("GALE_TOPICS__DEAD_LETTER", topic("dlq.validate")),
        ("GALE_KAFKA__GROUP_ID", validate_group.clone()),
        ("GALE_VALIDATE__ASSETS__SOURCE", "file".into()),
        ("GALE_VALIDATE__ASSETS__PATH", assets.display().to_string()),
    ]);
    let validate = ServiceProcess::start("gale-validate", &env, &[], "status-validate");

    let pg_dir = dir.path().join("pg");
    std::fs::create_dir_all(&pg_dir).unwrap();
    let pg_cfg = pg_sink_config(
        &pg_dir,
        &db.url,
        &[
            (&raw, "raw_readings", false),
            (&validated, "readings", true),
            (&quarantine, "quarantined_readings", false),
        ],
        &topic("dlq.pg-sink"),
    );
    let mut env = service_env(&stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", pg_group.clone()));
    let pg_sink = ServiceProcess::start(
        "gale-pg-sink",
        &env,
        &["--config", pg_cfg.to_str().unwrap()],
        "status-pg-sink",
    );

    // A second sink whose database nobody serves: it runs, but is not ready.
    let standby_dir = dir.path().join("standby");
    std::fs::create_dir_all(&standby_dir).unwrap();
    let standby_cfg = pg_sink_config(
        &standby_dir,
        &format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port()),
        &[(&validated, "readings", false)],
        &topic("dlq.standby"),
    );
    let mut env = service_env(&stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", unique("st-standby")));
    let standby = ServiceProcess::start(
        "gale-pg-sink",
        &env,
        &["--config", standby_cfg.to_str().unwrap()],
        "status-pg-standby",
    );

    let archive_cfg = archive_config(
        dir.path(),
        &format!("{{ url = \"{}\" }}", lake.display()),
        &[
            (&raw, "bronze/raw_readings"),
            (&validated, "silver/validated_readings"),
        ],
        &topic("dlq.archive"),
        "1s",
    );
    let mut env = service_env(&stack, None);
    env.push(("GALE_KAFKA__GROUP_ID", archive_group.clone()));
    let archive = ServiceProcess::start(
        "gale-archive",
        &env,
        &["--config", archive_cfg.to_str().unwrap()],
        "status-archive",
    );
    for s in [&ingest, &validate, &pg_sink, &archive] {
        s.wait_ready(Duration::from_secs(90)).await;
    }

    // Ten good readings of a known meter, one of an asset nobody registered.
    let now = chrono::Utc::now();
    let good: Vec<String> = (0..10)
        .map(|i| {
            let t = (now - chrono::Duration::seconds(60 * (10 - i)))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            format!(
                r#"{{"asset_id":"MTR-1","timestamp":"{t}","power":{}.5,"power_unit":"kW"}}"#,
                i + 1
            )
        })
        .collect();
    post_readings(&api, format!("[{}]", good.join(","))).await;
    let t = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    post_readings(
        &api,
        format!(r#"{{"asset_id":"MTR-404","timestamp":"{t}","power":1.0,"power_unit":"kW"}}"#),
    )
    .await;

    // pg-sink stored them and the archive wrote a file.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    wait_for("readings in Postgres", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM readings")
                .fetch_one(&pool)
                .await
                .ok()?;
            (n >= 10).then_some(())
        }
    })
    .await;

    let dead_url = format!("http://127.0.0.1:{}", free_port());
    let services = [
        ("ingest", format!("http://{}", ingest.http)),
        ("validate", format!("http://{}", validate.http)),
        ("pg-sink", format!("http://{}", pg_sink.http)),
        ("pg-standby", format!("http://{}", standby.http)),
        ("archive", format!("http://{}", archive.http)),
        ("enrich", dead_url.clone()),
    ];
    let services_env = services
        .iter()
        .map(|(n, u)| format!("{n}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    let groups = format!("{validate_group},{pg_group},{archive_group}");
    let common_args = |args: &mut Vec<String>| {
        args.extend(
            [
                "--bootstrap",
                &stack.bootstrap,
                "--registry-url",
                &stack.registry_url,
                "--prefix",
                &prefix,
                "--groups",
                &groups,
                "--database-url",
                &db.url,
                "--lake",
                lake.to_str().unwrap(),
            ]
            .map(str::to_string),
        );
    };

    // --- the page ---------------------------------------------------------
    let listen = format!("127.0.0.1:{}", free_port());
    let mut page_args = vec![
        "status-page".to_string(),
        "--listen".into(),
        listen.clone(),
        "--interval".into(),
        "1s".into(),
    ];
    common_args(&mut page_args);
    let page_args: Vec<&str> = page_args.iter().map(String::as_str).collect();
    let page = ServiceProcess::start(
        "gale",
        &[("GALE_STATUS_SERVICES", services_env.clone())],
        &page_args,
        "status-page",
    );
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    // Poll until everything settled: processed, dead letter seen, lake
    // written (the latest answer is kept in the log directory).
    let last = log_dir().join("status-page-last.json");
    let report = wait_for("a settled /api/status", Duration::from_secs(90), || {
        let (http, base) = (http.clone(), base.clone());
        let last = last.clone();
        let validate_group = validate_group.clone();
        async move {
            let r = http.get(format!("{base}/api/status")).send().await.ok()?;
            if !r.status().is_success() {
                return None;
            }
            let report: Value = r.json().await.ok()?;
            let _ = std::fs::write(&last, format!("{report:#}"));
            let validate = report["stages"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == "validate")?;
            let validate_lag = report["kafka"]["data"]["groups"]
                .as_array()?
                .iter()
                .find(|g| g["group"] == validate_group.as_str())?["lag"]
                .as_i64()?;
            let lake_fresh = report["lake"]["data"].as_array()?.iter().any(|t| {
                t["table"] == "silver/validated_readings" && t["latest_event_time"].is_string()
            });
            let dead = report["dead_letters"]["data"]
                .as_array()?
                .iter()
                .any(|d| d["stage"] == "validate" && d["total"].as_i64() == Some(1));
            (validate["records_in"].as_f64()? >= 11.0
                && validate["in_per_second"].is_number()
                && validate_lag == 0
                && lake_fresh
                && dead)
                .then_some(report)
        }
    })
    .await;

    let states: BTreeMap<String, String> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        BTreeMap::from(
            [
                ("ingest", "ready"),
                ("validate", "ready"),
                ("pg-sink", "ready"),
                ("pg-standby", "not_ready"),
                ("archive", "ready"),
                ("enrich", "unreachable"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        ),
        "{report:#}"
    );
    let standby_problems = stage(&report, "pg-standby")["problems"].to_string();
    assert!(standby_problems.contains("database"), "{standby_problems}");
    assert!(
        stage(&report, "enrich")["problems"][0]
            .as_str()
            .unwrap()
            .contains("nothing answers"),
        "{report:#}"
    );
    // ingest counts the rows it received; validate its input.
    assert!(stage(&report, "ingest")["records_in"].as_f64().unwrap() >= 11.0);
    assert_eq!(
        stage(&report, "validate")["dead_lettered"].as_f64(),
        Some(1.0)
    );
    assert_eq!(
        stage(&report, "validate")["lag"].as_f64().unwrap_or(0.0),
        0.0
    );
    let letters = report["dead_letters"]["data"].as_array().unwrap();
    let validate_letters = letters.iter().find(|d| d["stage"] == "validate").unwrap();
    let top = &validate_letters["reasons"][0];
    assert_eq!(top["class"], "unknown_asset", "{report:#}");
    assert!(
        top["message"].as_str().unwrap().contains("MTR-404"),
        "{top}"
    );
    assert_eq!(top["count"], 1);
    // Freshness: the newest reading in Postgres is the newest good one sent.
    let pg = report["postgres"]["data"].as_array().unwrap();
    let readings = pg.iter().find(|t| t["table"] == "readings").unwrap();
    let latest: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(readings["latest"].clone()).unwrap();
    assert!(
        (latest - (now - chrono::Duration::seconds(60)))
            .num_seconds()
            .abs()
            <= 1,
        "{readings}"
    );
    let missing = pg.iter().find(|t| t["table"] == "agg_asset_1h").unwrap();
    assert!(
        missing["latest"].is_null() && missing["error"].is_null(),
        "{missing}"
    );
    assert_eq!(report["faults"]["state"], "ok");
    assert_eq!(report["faults"]["data"]["open"], 0);
    assert_eq!(report["registry"]["state"], "ok");

    // --- gale status (text) ---------------------------------------------------
    let mut args = vec!["status".to_string(), "--rate-window".into(), "300ms".into()];
    common_args(&mut args);
    let mut cmd = Command::new(bin("gale"));
    cmd.args(&args).env("GALE_STATUS_SERVICES", &services_env);
    let (ok, text, err) = run_with_deadline(cmd, Duration::from_secs(60));
    assert!(ok, "gale status failed: {err}");
    for needle in [
        &format!("{raw} "),
        "  validate       ready",
        "  pg-standby     NOT READY",
        "  enrich         UNREACHABLE",
        &format!("group {validate_group}"),
        "stage validate",
        "top reason: unknown_asset (1 of 1 read)",
        "MTR-404",
        "active faults: 0",
        "  postgres readings ",
        "  postgres agg_asset_1h           empty",
        "  lake silver/validated_readings",
        "schema registry:",
    ] {
        assert!(
            text.contains(needle),
            "gale status lacks {needle:?}:\n{text}"
        );
    }
    // The topic table stays first and parseable (scripts/demo.sh reads it).
    assert!(text.starts_with("topic "), "{text}");

    // A database and a lake that are not there are said, not fatal.
    let mut cmd = Command::new(bin("gale"));
    cmd.args([
        "status",
        "--bootstrap",
        &stack.bootstrap,
        "--prefix",
        &prefix,
        "--groups",
        &validate_group,
        "--database-url",
        &format!("postgres://postgres:hunter2@127.0.0.1:{}/x", free_port()),
        "--service",
        &format!("enrich={dead_url}"),
    ])
    .env_remove("GALE_LAKE")
    .env_remove("GALE_STATUS_SERVICES");
    let (ok, text, err) = run_with_deadline(cmd, Duration::from_secs(60));
    assert!(ok, "gale status failed: {err}");
    assert!(
        text.contains("freshness of Postgres: UNAVAILABLE: cannot reach Postgres"),
        "{text}"
    );
    assert!(
        text.contains("freshness of the lake: not shown (no lake"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "the password leaked: {text}");

    // --- the page in a browser ---------------------------------------------
    let shot = dir.path().join("status.png");
    let (ok, _, err) = chromium(
        dir.path(),
        &[format!("--screenshot={}", shot.display())],
        &format!("{base}/"),
    );
    assert!(ok && shot.exists(), "chromium screenshot failed: {err}");
    let keep = log_dir().join("status-page.png");
    let _ = std::fs::copy(&shot, &keep);
    let (counts, size) = count_colours(&shot, &[READY, NOT_READY, UNREACHABLE]);
    assert_eq!(size, (1280, 900), "screenshot size");
    eprintln!(
        "lamp pixels: ready {}, not ready {}, unreachable {} (one lamp is {LAMP_PIXELS})",
        counts[0], counts[1], counts[2]
    );
    let expect = |n: usize| (n * LAMP_PIXELS * 9 / 10)..=(n * LAMP_PIXELS * 11 / 10);
    assert!(
        expect(4).contains(&counts[0]),
        "ready-coloured pixels {} (4 lamps of {LAMP_PIXELS} expected); see {}",
        counts[0],
        keep.display()
    );
    assert!(
        expect(1).contains(&counts[1]),
        "not-ready-coloured pixels {}; see {}",
        counts[1],
        keep.display()
    );
    assert!(
        expect(1).contains(&counts[2]),
        "unreachable-coloured pixels {}; see {}",
        counts[2],
        keep.display()
    );

    // The DOM after the page's script ran: stage cards and the reason.
    let (ok, dom, err) = chromium(dir.path(), &["--dump-dom".to_string()], &format!("{base}/"));
    assert!(ok, "chromium --dump-dom failed: {err}");
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the script did not render:\n{dom}"
    );
    for needle in [
        "data-stage=\"validate\" data-state=\"ready\"",
        "data-stage=\"pg-standby\" data-state=\"not_ready\"",
        "data-stage=\"enrich\" data-state=\"unreachable\"",
        "unknown_asset",
        "MTR-404",
        "silver/validated_readings",
    ] {
        assert!(
            dom.contains(needle),
            "rendered page lacks {needle:?}:\n{dom}"
        );
    }

    drop(page);
}
