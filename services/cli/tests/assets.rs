//! `gale assets` as operators run it: the binary against a fresh database.

use std::path::PathBuf;
use std::process::{Command, Output};

use gale_assets::testing::TestDatabase;

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../compose/assets")
        .join(name)
        .display()
        .to_string()
}

fn gale(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gale"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run gale")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "gale failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test]
async fn import_dry_run_import_again_and_list() {
    let db = TestDatabase::migrated().await;
    let (turbines, curve) = (
        example("example-turbines.csv"),
        example("example-power-curve.csv"),
    );
    let files = [turbines.as_str(), curve.as_str()];

    let dry = stdout(&gale(
        &db.url,
        &[&["assets", "import", "--dry-run"], &files[..]].concat(),
    ));
    assert!(
        dry.contains("gale_assets                   6 to insert"),
        "{dry}"
    );
    assert!(dry.contains("+ gale_power_curve_points GX2000-90"), "{dry}");
    assert!(dry.contains("dry run: nothing was written"), "{dry}");
    assert!(gale_assets::load(&db.pool).await.unwrap().is_empty());

    let done = stdout(&gale(
        &db.url,
        &[&["assets", "import"], &files[..]].concat(),
    ));
    assert!(
        done.contains("gale_assets                   6 inserted"),
        "{done}"
    );
    let again = stdout(&gale(
        &db.url,
        &[&["assets", "import"], &files[..]].concat(),
    ));
    assert!(again.contains("nothing to change"), "{again}");

    let csv = stdout(&gale(
        &db.url,
        &["assets", "list", "--format", "csv", "--kind", "turbine"],
    ));
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(
        csv.lines()
            .nth(4)
            .unwrap()
            .starts_with("NW-04,turbine,,GX2000-90,"),
        "{csv}"
    );
    let table = stdout(&gale(&db.url, &["assets", "list"]));
    assert!(table.trim_end().ends_with("(6 assets)"), "{table}");
    let none = stdout(&gale(
        &db.url,
        &["assets", "list", "--kind", "meter", "--format", "json"],
    ));
    assert_eq!(none.trim(), "[]");
}

#[tokio::test]
async fn errors_say_what_to_do_and_fail() {
    let db = TestDatabase::empty().await;
    let turbines = example("example-turbines.csv");
    let out = gale(&db.url, &["assets", "import", &turbines]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run `gale db migrate`"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("curve.csv");
    std::fs::write(
        &bad,
        "model,wind_speed_ms,power_kw\nGX,3,20\nGX,2,10\nGX,4,-1\n",
    )
    .unwrap();
    let out = gale(
        &db.url,
        &["assets", "import", "--dry-run", bad.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 problems in the import; nothing was written"),
        "{err}"
    );
    assert!(
        err.contains("curve.csv line 3, column wind_speed_ms"),
        "{err}"
    );
    assert!(err.contains("curve.csv line 4, column power_kw"), "{err}");
}
