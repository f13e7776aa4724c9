//! The operators' repair tools against the real pipeline.
//!
//! * `gale replay` is refused while a group has members, changes nothing
//!   with `--dry-run`, and moves stopped groups back; pg-sink, detect-faults
//!   and aggregate then reprocess a simulated day and nothing stored changes:
//!   no new row, no new fault id, the same aggregates.
//! * `gale dlq list/show/redrive`: readings validate rejected for an unknown
//!   turbine go back to the raw topic after the turbine is imported and come
//!   out validated, once; a second redrive sends nothing; a record that
//!   fails again returns with its redrive count and stops at the limit.

use std::collections::BTreeSet;
use std::time::Duration;

use gale_tests::*;
use rdkafka::message::Message;

/// Runs `gale` with `args`; returns (success, stdout + stderr).
fn gale(db: &str, args: &[&str]) -> (bool, String) {
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

fn gale_ok(db: &str, args: &[&str]) -> String {
    let (ok, text) = gale(db, args);
    assert!(ok, "gale {args:?} failed:\n{text}");
    text
}

/// Imports the simulator's fleet of `turbines` and `meters` (seed 11).
fn import_fleet(db: &str, dir: &std::path::Path, turbines: usize, meters: usize) {
    let reg = dir.join(format!("registry-{turbines}-{meters}"));
    let reg = reg.to_str().unwrap();
    gale_ok(
        db,
        &[
            "fleet",
            "--turbines",
            &turbines.to_string(),
            "--meters",
            &meters.to_string(),
            "--seed",
            "11",
            "--registry-dir",
            reg,
        ],
    );
    let files: Vec<String> = ["sites", "models", "curves", "assets"]
        .iter()
        .map(|f| format!("{reg}/{f}.csv"))
        .collect();
    let mut args = vec!["assets", "import"];
    args.extend(files.iter().map(String::as_str));
    gale_ok(db, &args);
}

/// Sends `count` simulated ten-minute readings of the fleet to `topic`.
fn simulate(stack: &Stack, topic: &str, turbines: usize, meters: usize, count: usize) {
    gale_ok(
        "",
        &[
            "simulate",
            "--bootstrap",
            &stack.bootstrap,
            "--registry-url",
            &stack.registry_url,
            "--topic",
            topic,
            "--turbines",
            &turbines.to_string(),
            "--meters",
            &meters.to_string(),
            "--seed",
            "11",
            "--start",
            "2025-03-01T00:00:00Z",
            "--interval",
            "10m",
            "--count",
            &count.to_string(),
            "--faults",
            "episodes",
            "--interval-declared",
            "--quiet",
        ],
    );
}

/// What the database holds that a replay must not change.
#[derive(Debug, PartialEq)]
struct Stored {
    readings: i64,
    distinct_events: i64,
    fault_ids: BTreeSet<(String, i32)>,
    aggregates: BTreeSet<(String, i32, i64, String)>,
    aggregate_revisions: i64,
}

async fn stored(pool: &sqlx::PgPool) -> Stored {
    let (readings, distinct_events): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM readings")
            .fetch_one(pool)
            .await
            .unwrap();
    let fault_ids = sqlx::query_as::<_, (String, i32)>("SELECT fault_id, revision FROM faults")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let aggregates = sqlx::query_as::<_, (String, i32, i64, String)>(
        "SELECT aggregate_id, revision, readings::bigint, coalesce(energy_kwh::text, '') FROM agg_asset_1h",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let (aggregate_revisions,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM agg_asset_1h_revisions")
            .fetch_one(pool)
            .await
            .unwrap();
    Stored {
        readings,
        distinct_events,
        fault_ids,
        aggregates,
        aggregate_revisions,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_sinks_and_stages_changes_nothing_stored() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    gale_ok(&db.url, &["db", "migrate"]);
    import_fleet(&db.url, dir.path(), 3, 3);

    let [raw, validated, quarantine, enriched, checked, faults, a10m, a1h, a1d, late] = [
        "raw",
        "validated",
        "quarantine",
        "enriched",
        "checked",
        "faults",
        "a10m",
        "a1h",
        "a1d",
        "late",
    ]
    .map(unique);
    create_topics(
        &stack.bootstrap,
        &[
            &raw,
            &validated,
            &quarantine,
            &enriched,
            &checked,
            &faults,
            &a10m,
            &a1h,
            &a1d,
            &late,
        ],
        2,
    )
    .await;
    let quick = |env: &mut Vec<(&'static str, String)>, group: &str| {
        env.extend([
            ("GALE_KAFKA__GROUP_ID", group.to_string()),
            ("GALE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000".into()),
            (
                "GALE_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS",
                "1000".into(),
            ),
        ]);
    };
    let mut validate_env = service_env(&stack, None);
    quick(&mut validate_env, &unique("validate"));
    validate_env.extend([
        ("GALE_TOPICS__INPUT", raw.clone()),
        ("GALE_TOPICS__VALIDATED", validated.clone()),
        ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
        ("GALE_TOPICS__DEAD_LETTER", unique("dlq-validate")),
        ("GALE_VALIDATE__MODE", "backfill".into()),
        ("GALE_VALIDATE__ASSETS__SOURCE", "postgres".into()),
        ("GALE_VALIDATE__ASSETS__URL", db.url.clone()),
    ]);
    let mut enrich_env = service_env(&stack, None);
    quick(&mut enrich_env, &unique("enrich"));
    enrich_env.extend([
        ("GALE_TOPICS__INPUT", validated.clone()),
        ("GALE_TOPICS__OUTPUT", enriched.clone()),
        ("GALE_TOPICS__DEAD_LETTER", unique("dlq-enrich")),
        ("GALE_ASSETS__URL", db.url.clone()),
    ]);
    let detect_group = unique("detect");
    let mut detect_env = service_env(&stack, None);
    quick(&mut detect_env, &detect_group);
    detect_env.extend([
        ("GALE_TOPICS__INPUT", enriched.clone()),
        ("GALE_TOPICS__CHECKED", checked.clone()),
        ("GALE_TOPICS__FAULTS", faults.clone()),
        ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
        ("GALE_TOPICS__DEAD_LETTER", unique("dlq-detect")),
        ("GALE_STATE__COMMIT_INTERVAL", "200ms".into()),
    ]);
    let aggregate_group = unique("aggregate");
    let mut aggregate_env = service_env(&stack, None);
    quick(&mut aggregate_env, &aggregate_group);
    aggregate_env.extend([
        ("GALE_TOPICS__INPUT", checked.clone()),
        ("GALE_TOPICS__ASSET_10M", a10m.clone()),
        ("GALE_TOPICS__ASSET_1H", a1h.clone()),
        ("GALE_TOPICS__ASSET_1D", a1d.clone()),
        ("GALE_TOPICS__LATE", late.clone()),
        ("GALE_TOPICS__DEAD_LETTER", unique("dlq-aggregate")),
        ("GALE_STATE__COMMIT_INTERVAL", "200ms".into()),
    ]);
    let config = pg_sink_config(
        dir.path(),
        &db.url,
        &[(&validated, "readings", true)],
        &unique("dlq-pg"),
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[sink.tables]]\ntopic = \"{faults}\"\ntable = \"fault_events\"\ntime_column = \"updated_time\"\nlatest = {{ table = \"faults\", key = \"fault_id\", order_by = \"revision\" }}\n\
         \n[[sink.tables]]\ntopic = \"{a1h}\"\ntable = \"agg_asset_1h_revisions\"\ntime_column = \"window_start\"\nlatest = {{ table = \"agg_asset_1h\", key = \"aggregate_id\", order_by = \"revision\" }}\n"
    ));
    std::fs::write(&config, text).unwrap();
    let pg_group = unique("pg");
    let mut pg_env = service_env(&stack, None);
    quick(&mut pg_env, &pg_group);
    let pg_args = ["--config", config.to_str().unwrap()];

    let _validate = ServiceProcess::start("gale-validate", &validate_env, &[], "ops-validate");
    let _enrich = ServiceProcess::start("gale-enrich", &enrich_env, &[], "ops-enrich");
    let mut detect = ServiceProcess::start("gale-detect-faults", &detect_env, &[], "ops-detect");
    let mut aggregate =
        ServiceProcess::start("gale-aggregate", &aggregate_env, &[], "ops-aggregate");
    let mut pg = ServiceProcess::start("gale-pg-sink", &pg_env, &pg_args, "ops-pg");
    for s in [&_validate, &_enrich, &detect, &aggregate, &pg] {
        s.wait_ready(Duration::from_secs(90)).await;
    }

    // A day of six assets.
    simulate(&stack, &raw, 3, 3, 6 * 144);
    for (group, topic) in [
        (&detect_group, &enriched),
        (&aggregate_group, &checked),
        (&pg_group, &validated),
        (&pg_group, &faults),
        (&pg_group, &a1h),
    ] {
        wait_caught_up(&stack, group, topic).await;
    }
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let before = stored(&pool).await;
    assert!(before.readings > 800, "{before:?}");
    assert!(!before.aggregates.is_empty(), "{before:?}");

    // Refused while the group is live, naming its members.
    let (ok, text) = gale(
        &db.url,
        &[
            "replay",
            "--bootstrap",
            &stack.bootstrap,
            "--group",
            &pg_group,
            "--earliest",
        ],
    );
    assert!(!ok, "replay of a live group must be refused:\n{text}");
    assert!(text.contains("active member"), "{text}");
    assert!(text.contains("rdkafka") || text.contains('@'), "{text}");

    for s in [&mut pg, &mut detect, &mut aggregate] {
        s.terminate(Duration::from_secs(30));
    }
    let lag_of = |group: &str, topic: &str| committed_lag(&stack.bootstrap, group, topic).unwrap();
    let held = |topic: &str| record_count(&stack.bootstrap, topic);

    // A dry run plans the whole topic and moves nothing.
    let plan = gale_ok(
        &db.url,
        &[
            "replay",
            "--bootstrap",
            &stack.bootstrap,
            "--group",
            &pg_group,
            "--topic",
            &validated,
            "--from-time",
            "2000-01-01",
            "--dry-run",
        ],
    );
    assert!(
        plan.contains(&format!("{} record(s) to reprocess", held(&validated))),
        "{plan}"
    );
    assert!(plan.contains("dry run: nothing changed"), "{plan}");
    assert_eq!(lag_of(&pg_group, &validated), 0);

    // Move the three groups back (waiting out a member that has not left yet).
    let replay = |group: &str, extra: &[&str]| {
        let mut args = vec!["replay", "--bootstrap", &stack.bootstrap, "--group", group];
        args.extend(extra);
        gale(&db.url, &args)
    };
    for (group, extra) in [
        (&pg_group, vec!["--from-time", "2000-01-01"]),
        (&detect_group, vec!["--earliest"]),
        (&aggregate_group, vec!["--earliest"]),
    ] {
        let text = wait_for(
            &format!("replay of {group}"),
            Duration::from_secs(30),
            || {
                let (ok, text) = replay(group, &extra);
                async move { ok.then_some(text) }
            },
        )
        .await;
        assert!(text.contains(&format!("moved group {group}")), "{text}");
    }
    assert_eq!(lag_of(&pg_group, &validated), held(&validated));
    assert_eq!(lag_of(&pg_group, &faults), held(&faults));
    assert_eq!(lag_of(&detect_group, &enriched), held(&enriched));
    assert_eq!(lag_of(&aggregate_group, &checked), held(&checked));

    // Reprocess: pg-sink takes every record again; nothing stored changes.
    let pg = ServiceProcess::start("gale-pg-sink", &pg_env, &pg_args, "ops-pg-replay");
    let detect = ServiceProcess::start("gale-detect-faults", &detect_env, &[], "ops-detect-replay");
    let aggregate = ServiceProcess::start(
        "gale-aggregate",
        &aggregate_env,
        &[],
        "ops-aggregate-replay",
    );
    for s in [&pg, &detect, &aggregate] {
        s.wait_ready(Duration::from_secs(90)).await;
    }
    for (group, topic) in [
        (&detect_group, &enriched),
        (&aggregate_group, &checked),
        (&pg_group, &validated),
        (&pg_group, &faults),
        (&pg_group, &a1h),
    ] {
        wait_caught_up(&stack, group, topic).await;
    }
    // Every group read its topics again (stateful stages skip, by their
    // restored state, what it covers: that is what keeps replays harmless).
    for (s, topics) in [
        (&pg, vec![&validated, &faults, &a1h]),
        (&detect, vec![&enriched]),
        (&aggregate, vec![&checked]),
    ] {
        let reread = s.records_in().await;
        let total: i64 = topics.iter().map(|t| held(t)).sum();
        assert!(
            reread >= total as f64,
            "{} read {reread} of {total} records after the replay",
            s.name
        );
    }
    let after = stored(&pool).await;
    assert_eq!(before, after, "a replay changed what is stored");

    // The other recipe: a sink rebuilt with a fresh group. Setting a new
    // group's start is refused without --fresh-group.
    let rebuild = unique("pg-rebuild");
    let (ok, text) = replay(
        &rebuild,
        &["--topic", &validated, "--from-time", "2000-01-01"],
    );
    assert!(!ok && text.contains("--fresh-group"), "{text}");
    for topic in [&validated, &faults, &a1h] {
        let (ok, text) = replay(
            &rebuild,
            &[
                "--topic",
                topic,
                "--from-time",
                "2000-01-01",
                "--fresh-group",
            ],
        );
        assert!(ok, "{text}");
    }
    let mut rebuild_env = service_env(&stack, None);
    quick(&mut rebuild_env, &rebuild);
    let rebuilt = ServiceProcess::start("gale-pg-sink", &rebuild_env, &pg_args, "ops-pg-rebuild");
    rebuilt.wait_ready(Duration::from_secs(90)).await;
    for topic in [&validated, &faults, &a1h] {
        wait_caught_up(&stack, &rebuild, topic).await;
    }
    assert!(rebuilt.records_in().await >= held(&validated) as f64);
    assert_eq!(
        before,
        stored(&pool).await,
        "a rebuild changed what is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_sends_dead_letters_back_once() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    gale_ok(&db.url, &["db", "migrate"]);
    // The registry knows two of the three turbines.
    import_fleet(&db.url, dir.path(), 2, 1);

    let [raw, validated, quarantine, dlq, markers] =
        ["raw", "validated", "quarantine", "dlq-validate", "redrives"].map(unique);
    create_topics(&stack.bootstrap, &[&raw, &validated, &quarantine, &dlq], 2).await;
    let mut env = service_env(&stack, None);
    env.extend([
        ("GALE_KAFKA__GROUP_ID", unique("validate")),
        ("GALE_TOPICS__INPUT", raw.clone()),
        ("GALE_TOPICS__VALIDATED", validated.clone()),
        ("GALE_TOPICS__QUARANTINE", quarantine.clone()),
        ("GALE_TOPICS__DEAD_LETTER", dlq.clone()),
        ("GALE_VALIDATE__MODE", "backfill".into()),
        ("GALE_VALIDATE__ASSETS__SOURCE", "postgres".into()),
        ("GALE_VALIDATE__ASSETS__URL", db.url.clone()),
        ("GALE_VALIDATE__ASSETS__UNKNOWN_TTL", "1s".into()),
        ("GALE_VALIDATE__ASSETS__REFRESH", "2s".into()),
    ]);
    let validate = ServiceProcess::start("gale-validate", &env, &[], "redrive-validate");
    // Another consumer of the raw topic: redriven records are not for it.
    let config = pg_sink_config(
        dir.path(),
        &db.url,
        &[(&raw, "raw_readings", false)],
        &unique("dlq-pg"),
    );
    let mut pg_env = service_env(&stack, None);
    pg_env.push(("GALE_KAFKA__GROUP_ID", unique("pg")));
    let pg = ServiceProcess::start(
        "gale-pg-sink",
        &pg_env,
        &["--config", config.to_str().unwrap()],
        "redrive-pg",
    );
    validate.wait_ready(Duration::from_secs(90)).await;
    pg.wait_ready(Duration::from_secs(90)).await;

    // Six ticks of three turbines and a meter, and one record that is not Avro.
    let producer = producer(&stack.bootstrap);
    send(&producer, &raw, "junk", b"not avro at all").await;
    simulate(&stack, &raw, 3, 1, 4 * 6);
    let outputs = |t: &str| record_count(&stack.bootstrap, t);
    wait_for("validate's outputs", Duration::from_secs(60), || {
        let n = outputs(&validated) + outputs(&quarantine) + outputs(&dlq);
        async move { (n == 25).then_some(()) }
    })
    .await;
    let passed = outputs(&validated) + outputs(&quarantine);
    assert_eq!(
        outputs(&dlq),
        7,
        "six unknown-turbine readings and the junk"
    );

    let b = ["--bootstrap", stack.bootstrap.as_str()];
    let with = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(b.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: &[&str]| {
        let v = with(args);
        gale_ok(&db.url, &v.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let list = run(&["dlq", "list", "--topic", &dlq]);
    let line = list
        .lines()
        .find(|l| l.contains("unknown_asset"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.split_whitespace().any(|w| w == "6"), "{list}");
    assert!(list.contains("7 dead letter(s)"), "{list}");

    let shown = run(&[
        "dlq",
        "show",
        "--topic",
        &dlq,
        "--class",
        "unknown_asset",
        "--limit",
        "1",
        "--registry-url",
        &stack.registry_url,
    ]);
    let record: serde_json::Value = serde_json::from_str(shown.lines().next().unwrap()).unwrap();
    assert_eq!(record["class"], "unknown_asset", "{shown}");
    assert!(
        record["value"]["avro"]["asset_id"].is_string(),
        "decoded: {shown}"
    );
    assert_eq!(record["headers"]["gale.dlq.original.topic"], raw.as_str());
    let junk = run(&["dlq", "show", "--topic", &dlq, "--limit", "10"]);
    assert!(junk.contains("not avro at all"), "{junk}");

    // Import the third turbine, then redrive that class: dry run first.
    import_fleet(&db.url, dir.path(), 3, 1);
    let redrive = |extra: &[&str]| {
        let mut args = vec![
            "dlq",
            "redrive",
            "--topic",
            dlq.as_str(),
            "--marker-topic",
            markers.as_str(),
            "--quiet",
        ];
        args.extend(extra);
        run(&args)
    };
    let dry = redrive(&["--class", "unknown_asset", "--dry-run"]);
    assert!(dry.contains("would redrive: 6"), "{dry}");
    // Past the unknown-id cache of validate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = redrive(&["--class", "unknown_asset"]);
    assert!(first.contains("redriven: 6"), "{first}");
    wait_for("the redriven readings", Duration::from_secs(60), || {
        let n = outputs(&validated) + outputs(&quarantine);
        async move { (n == passed + 6).then_some(()) }
    })
    .await;
    let reader = TopicReader::new(&stack.bootstrap, &validated);
    let all = reader.read(outputs(&validated) as usize, Duration::from_secs(30));
    let redriven: Vec<_> = all
        .iter()
        .filter(|m| header(m, "gale.redrive.count").as_deref() == Some("1"))
        .collect();
    assert!(!redriven.is_empty(), "redriven readings carry their count");
    assert!(redriven
        .iter()
        .all(|m| header(m, "gale.redrive.source").is_some_and(|s| s.starts_with(&dlq))));
    assert!(
        redriven
            .iter()
            .all(|m| header(m, "gale.redrive.stage").is_none()),
        "the target stage is for one hop only"
    );
    let skipped = wait_for(
        "pg-sink to pass over the redriven records",
        Duration::from_secs(30),
        || {
            let pg = &pg;
            async move {
                let n = metric_value(
                    &pg.metrics().await,
                    "gale_redrive_skipped_total{stage=\"pg-sink\"}",
                )?;
                (n >= 6.0).then_some(n)
            }
        },
    )
    .await;
    assert_eq!(skipped, 6.0);

    // Twice: nothing more goes back.
    let second = redrive(&["--class", "unknown_asset"]);
    assert!(second.contains("redriven: 0"), "{second}");
    assert!(second.contains("already redriven"), "{second}");

    // The junk fails again and returns with its count; the limit stops it.
    let third = redrive(&["--max-redrives", "1"]);
    assert!(third.contains("redriven: 1"), "{third}");
    wait_for(
        "the junk back in the dead letters",
        Duration::from_secs(60),
        || {
            let n = outputs(&dlq);
            async move { (n == 8).then_some(()) }
        },
    )
    .await;
    let back = TopicReader::new(&stack.bootstrap, &dlq).read(8, Duration::from_secs(30));
    let junk_again: Vec<_> = back
        .iter()
        .filter(|m| m.payload() == Some(&b"not avro at all"[..]))
        .collect();
    assert_eq!(junk_again.len(), 2);
    assert!(junk_again
        .iter()
        .any(|m| header(m, "gale.redrive.count").as_deref() == Some("1")));
    let fourth = redrive(&["--max-redrives", "1"]);
    assert!(fourth.contains("redriven: 0"), "{fourth}");
    assert!(fourth.contains("redrive limit reached"), "{fourth}");
    assert_eq!(outputs(&validated) + outputs(&quarantine), passed + 6);
}
