//! Against the real Postgres: one fresh database per test (see [`crate::testing`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gale_model::AssetKind;
use gale_runtime::health::Health;
use gale_runtime::shutdown::CancellationToken;

use crate::import::Value;
use crate::testing::{TestDatabase, MIGRATOR};
use crate::{apply, load, parse_files, plan, spawn_refresh, Action, AssetsError, TableKind};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../compose/assets")
        .join(name)
}

fn operator_files() -> Vec<PathBuf> {
    vec![
        example("example-turbines.csv"),
        example("example-power-curve.csv"),
    ]
}

#[tokio::test]
async fn operator_files_import_then_reimport_is_unchanged_and_a_change_is_a_diff() {
    let db = TestDatabase::migrated().await;
    let set = parse_files(&operator_files(), None).unwrap();

    let dry = plan(&db.pool, &set).await.unwrap();
    assert!(!dry.applied);
    assert_eq!(dry.table(TableKind::Assets).count(Action::Insert), 6);
    assert_eq!(dry.table(TableKind::Models).count(Action::Insert), 1);
    assert_eq!(dry.table(TableKind::Curves).count(Action::Insert), 1);
    assert!(
        load(&db.pool).await.unwrap().is_empty(),
        "a dry run writes nothing"
    );

    let applied = apply(&db.pool, &set).await.unwrap();
    assert!(applied.applied);
    assert_eq!(
        applied.tables, dry.tables,
        "the import does what the dry run said"
    );

    let registry = load(&db.pool).await.unwrap();
    assert_eq!(registry.len(), 6);
    let nw4 = registry.asset("NW-04").unwrap();
    assert_eq!(nw4.kind, AssetKind::Turbine);
    assert_eq!(nw4.hub_height_m, Some(95.0));
    let model = registry.model_of(nw4).unwrap();
    assert_eq!(model.model_id, "GX2000-90");
    assert_eq!(model.rated_power_kw, Some(2000.0));
    assert_eq!(
        model.hub_height_m,
        Some(80.0),
        "from the first turbine naming it"
    );
    assert_eq!(model.curve.len(), 33);
    assert_eq!(model.curve[0].wind_speed_ms, 3.0);
    assert_eq!(model.curve.last().unwrap().wind_speed_ms, 25.0);
    assert_eq!(registry.rated_power_kw(nw4), Some(2000.0));

    let again = apply(&db.pool, &set).await.unwrap();
    assert!(again.is_noop(), "{:#?}", again.tables);
    assert_eq!(again.table(TableKind::Assets).count(Action::Unchanged), 6);

    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("turbines.csv");
    let text = std::fs::read_to_string(example("example-turbines.csv")).unwrap();
    std::fs::write(
        &changed,
        text.replace(
            "NW-04,54.9681,8.3254,2000,95",
            "NW-04,54.9681,8.3254,2000,100",
        ),
    )
    .unwrap();
    let set = parse_files(&[changed], None).unwrap();
    let update = apply(&db.pool, &set).await.unwrap();
    let assets = update.table(TableKind::Assets);
    assert_eq!(assets.count(Action::Unchanged), 5);
    let row = assets.rows.iter().find(|r| r.key == "NW-04").unwrap();
    assert_eq!(row.action, Action::Update);
    assert_eq!(row.changes.len(), 1);
    assert_eq!(row.changes[0].field, "hub_height_m");
    assert_eq!(row.changes[0].old, Value::Number(95.0));
    assert_eq!(row.changes[0].new, Value::Number(100.0));
    assert!(
        row.origin.to_string().ends_with("turbines.csv line 5"),
        "{}",
        row.origin
    );
    let registry = load(&db.pool).await.unwrap();
    assert_eq!(registry.asset("NW-04").unwrap().hub_height_m, Some(100.0));
}

#[tokio::test]
async fn invalid_rows_are_all_reported_and_nothing_is_written() {
    let db = TestDatabase::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("assets.csv");
    std::fs::write(
        &bad,
        "asset_id,kind,capacity_kw\nT1,turbine,3000\nT2,windmill,3000\nT3,turbine,-1\n",
    )
    .unwrap();
    let err = parse_files(&[&bad], None).unwrap_err();
    assert_eq!(err.errors.len(), 2, "{err}");
    let text = err.to_string();
    assert!(text.contains("assets.csv line 3, column kind"), "{text}");
    assert!(
        text.contains("assets.csv line 4, column capacity_kw"),
        "{text}"
    );

    // Valid files, but invalid against what is stored: a new asset of unknown kind.
    std::fs::write(&bad, "asset_id,kind\nT1,turbine\n").unwrap();
    let more = dir.path().join("more.csv");
    std::fs::write(&more, "asset_id,site_id\nT1,farm-a\nX9,farm-a\n").unwrap();
    let set = parse_files(&[bad, more], None);
    assert!(set.is_err(), "T1 twice across files");
    let set = parse_files(&[dir.path().join("more.csv")], None).unwrap();
    match apply(&db.pool, &set).await {
        Err(AssetsError::Invalid(e)) => {
            assert_eq!(e.errors.len(), 2, "{e}");
            assert!(e.to_string().contains("more.csv line 3"), "{e}");
        }
        other => panic!("expected invalid rows, got {other:?}"),
    }
    assert!(load(&db.pool).await.unwrap().is_empty());
}

#[tokio::test]
async fn curves_load_sorted_and_an_import_replaces_them() {
    let db = TestDatabase::migrated().await;
    sqlx::query("INSERT INTO gale_turbine_models (model_id, rated_power_kw) VALUES ('M', 2000)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO gale_power_curve_points VALUES ('M', 12, 1980), ('M', 3, 20), ('M', 25, 2000), ('M', 7, 560)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let registry = load(&db.pool).await.unwrap();
    let speeds: Vec<f64> = registry.models["M"]
        .curve
        .iter()
        .map(|p| p.wind_speed_ms)
        .collect();
    assert_eq!(speeds, vec![3.0, 7.0, 12.0, 25.0]);

    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("m.json");
    std::fs::write(
        &json,
        r#"{"models": [{"model_id": "M", "manufacturer": "Gale", "curve": [[4, 80], [12, 1990]]}]}"#,
    )
    .unwrap();
    let plan = apply(&db.pool, &parse_files(&[json], None).unwrap())
        .await
        .unwrap();
    let curve = &plan.table(TableKind::Curves).rows[0];
    assert_eq!(curve.action, Action::Update);
    assert_eq!(curve.changes.len(), 5, "{:#?}", curve.changes);
    let model = &plan.table(TableKind::Models).rows[0];
    assert_eq!(
        model.changes.len(),
        1,
        "only the manufacturer: {:#?}",
        model.changes
    );
    let registry = load(&db.pool).await.unwrap();
    assert_eq!(registry.models["M"].curve.len(), 2);
    assert_eq!(registry.models["M"].rated_power_kw, Some(2000.0));
}

#[tokio::test]
async fn a_database_without_the_migration_is_named() {
    let db = TestDatabase::empty().await;
    // What validate creates on its own.
    sqlx::query(
        "CREATE TABLE gale_assets (asset_id text PRIMARY KEY, kind text NOT NULL, site_id text, \
         capacity_kw double precision, latitude double precision, longitude double precision)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let err = load(&db.pool).await.unwrap_err();
    assert!(matches!(err, AssetsError::NotMigrated(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("gale db migrate") && text.contains("0003_asset_registry"),
        "{text}"
    );

    // validate's rows survive the migration and load as assets.
    sqlx::query("INSERT INTO gale_assets VALUES ('T1', 'turbine', 'farm-a', 3000, 55, 8)")
        .execute(&db.pool)
        .await
        .unwrap();
    MIGRATOR.run(&db.pool).await.unwrap();
    let registry = load(&db.pool).await.unwrap();
    let t1 = registry.asset("T1").unwrap();
    assert_eq!(t1.capacity_kw, Some(3000.0));
    assert!(!t1.vacant);
    assert_eq!(registry.rated_power_kw(t1), Some(3000.0));
    let views: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM gale_turbines), (SELECT count(*) FROM gale_meters)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(views, (1, 0));
}

/// Polls `condition` until it holds or `within` has passed.
async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if condition() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn refresh_sees_an_import_within_its_interval_and_survives_failures() {
    let db = TestDatabase::migrated().await;
    let every = Duration::from_millis(300);
    let health = Health::new();
    let shutdown = CancellationToken::new();
    let live = spawn_refresh(db.pool.clone(), every, "test", &health, &shutdown)
        .await
        .unwrap();
    assert!(health.readiness().ready);
    assert!(live.current().is_empty());

    apply(&db.pool, &parse_files(&operator_files(), None).unwrap())
        .await
        .unwrap();
    let seen = eventually(every * 2 + Duration::from_secs(2), || {
        live.current().len() == 6
    })
    .await;
    let seen = seen.expect("the import never reached the live registry");
    assert!(seen <= every * 2 + Duration::from_secs(1), "took {seen:?}");

    // A failing reload keeps the last snapshot.
    sqlx::query("ALTER TABLE gale_sites RENAME TO gale_sites_away")
        .execute(&db.pool)
        .await
        .unwrap();
    tokio::time::sleep(every * 3).await;
    assert_eq!(live.current().len(), 6);
    assert!(!live.task.is_finished());
    sqlx::query("ALTER TABLE gale_sites_away RENAME TO gale_sites")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE gale_assets SET vacant = false, site_id = 'farm-x' WHERE asset_id = 'NW-01'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let seen = eventually(Duration::from_secs(5), || {
        live.current()
            .asset("NW-01")
            .is_some_and(|a| a.site_id.as_deref() == Some("farm-x"))
    })
    .await;
    assert!(seen.is_some(), "reloads did not resume after the failure");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), live.task)
        .await
        .expect("the refresh task ends at shutdown")
        .unwrap();
}

#[tokio::test]
async fn the_first_load_waits_not_ready_until_the_tables_exist() {
    let db = TestDatabase::empty().await;
    let health = Health::new();
    let shutdown = CancellationToken::new();
    let starting = {
        let (pool, health, shutdown) = (db.pool.clone(), health.clone(), shutdown.clone());
        tokio::spawn(async move {
            spawn_refresh(pool, Duration::from_secs(60), "test", &health, &shutdown).await
        })
    };
    let failing = eventually(Duration::from_secs(10), || !health.readiness().ready).await;
    assert!(failing.is_some(), "readiness never failed");
    let reason = health.readiness().checks[crate::READINESS_CHECK].clone();
    assert!(reason.contains("gale db migrate"), "{reason}");
    assert!(!starting.is_finished());

    MIGRATOR.run(&db.pool).await.unwrap();
    let live = tokio::time::timeout(Duration::from_secs(20), starting)
        .await
        .expect("the first load never succeeded")
        .unwrap()
        .unwrap();
    assert!(health.readiness().ready);
    assert!(live.current().is_empty());
    shutdown.cancel();
}

#[tokio::test]
async fn shutdown_ends_the_wait_for_an_unreachable_database() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy("postgres://gale@127.0.0.1:1/gale")
        .unwrap();
    let health = Health::new();
    let shutdown = CancellationToken::new();
    let starting = {
        let (health, shutdown) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            spawn_refresh(pool, Duration::from_secs(1), "test", &health, &shutdown).await
        })
    };
    let failing = eventually(Duration::from_secs(10), || !health.readiness().ready).await;
    assert!(failing.is_some(), "readiness never failed");
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), starting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(AssetsError::Shutdown)), "{result:?}");
}
