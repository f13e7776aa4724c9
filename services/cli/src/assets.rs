//! `gale assets import` and `gale assets list`: the asset registry for
//! people with spreadsheets.
//!
//! Import reads every file first and refuses the whole import on any bad
//! row, before connecting; then it prints what changes, table by table and
//! row by row, so a dry run and the real import read the same. The schema
//! is never created here: a database without it gets the hint to run
//! `gale db migrate`.

use std::fmt::Write as _;
use std::path::PathBuf;

use gale_assets::{Action, Asset, Plan, Registry, TableKind};
use gale_model::AssetKind;
use gale_runtime::config::Secret;
use sqlx::PgPool;

/// Output format of `gale assets list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// Aligned columns with effective values (the asset's own, else its model's).
    Table,
    /// A JSON array of assets as stored (importable again).
    Json,
    /// CSV with the import's column names, values as stored (importable again).
    Csv,
}

/// Connects to the registry's database; the password never appears in errors.
pub async fn connect(url: &Secret) -> anyhow::Result<PgPool> {
    PgPool::connect(url.expose())
        .await
        .map_err(|e| anyhow::anyhow!(gale_pg_sink::db::redact(&e.to_string(), url)))
}

fn redacted(e: gale_assets::AssetsError, url: &Secret) -> anyhow::Error {
    anyhow::anyhow!(gale_pg_sink::db::redact(&e.to_string(), url))
}

/// Reads `files`, then plans (`dry_run`) or applies the import, and renders
/// the plan.
pub async fn import(
    url: &Secret,
    files: &[PathBuf],
    table: Option<TableKind>,
    dry_run: bool,
) -> anyhow::Result<String> {
    let set = gale_assets::parse_files(files, table)?;
    let pool = connect(url).await?;
    let plan = if dry_run {
        gale_assets::plan(&pool, &set).await
    } else {
        gale_assets::apply(&pool, &set).await
    }
    .map_err(|e| redacted(e, url))?;
    Ok(render_plan(&plan))
}

/// Loads the registry and renders its assets.
pub async fn list(
    url: &Secret,
    kind: Option<AssetKind>,
    site: Option<&str>,
    format: ListFormat,
) -> anyhow::Result<String> {
    let pool = connect(url).await?;
    let registry = gale_assets::load(&pool)
        .await
        .map_err(|e| redacted(e, url))?;
    render_assets(&registry, kind, site, format)
}

/// Counts per table, then every inserted (`+`) and updated (`~`) row with
/// its fields, the warnings, and whether anything was written.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    let (new, changed) = if plan.applied {
        ("inserted", "updated")
    } else {
        ("to insert", "to update")
    };
    for t in &plan.tables {
        let _ = writeln!(
            out,
            "{:<25} {:>5} {new}  {:>5} {changed}  {:>5} unchanged",
            t.table.table_name(),
            t.count(Action::Insert),
            t.count(Action::Update),
            t.count(Action::Unchanged)
        );
    }
    let mut rows = String::new();
    for t in &plan.tables {
        for row in &t.rows {
            let (mark, fields) = match row.action {
                Action::Unchanged => continue,
                Action::Insert => (
                    '+',
                    row.changes
                        .iter()
                        .map(|c| format!("{}={}", c.field, c.new))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                Action::Update => (
                    '~',
                    row.changes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            };
            let _ = writeln!(
                rows,
                "{mark} {} {} ({}): {fields}",
                t.table.table_name(),
                row.key,
                row.origin
            );
        }
    }
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&rows);
    }
    if !plan.warnings.is_empty() {
        out.push('\n');
        for w in &plan.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
    }
    out.push('\n');
    out.push_str(match (plan.is_noop(), plan.applied) {
        (true, _) => "nothing to change: the registry already matches the files",
        (false, false) => "dry run: nothing was written (run without --dry-run to import)",
        (false, true) => {
            "imported in one transaction; running stages pick it up at their next refresh"
        }
    });
    out.push('\n');
    out
}

/// The registry's assets of `kind` at `site`, sorted by id, in `format`.
pub fn render_assets(
    registry: &Registry,
    kind: Option<AssetKind>,
    site: Option<&str>,
    format: ListFormat,
) -> anyhow::Result<String> {
    let mut assets: Vec<&Asset> = registry
        .assets
        .values()
        .filter(|a| kind.is_none_or(|k| a.kind == k))
        .filter(|a| site.is_none_or(|s| a.site_id.as_deref() == Some(s)))
        .collect();
    assets.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    match format {
        ListFormat::Json => Ok(serde_json::to_string_pretty(&assets)? + "\n"),
        ListFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(CSV_COLUMNS)?;
            for a in &assets {
                w.write_record(csv_row(a))?;
            }
            Ok(String::from_utf8(w.into_inner()?)?)
        }
        ListFormat::Table => Ok(table(registry, &assets)),
    }
}

/// The asset columns of an import, in the order of `gale_assets`.
const CSV_COLUMNS: [&str; 14] = [
    "asset_id",
    "kind",
    "site_id",
    "model_id",
    "latitude",
    "longitude",
    "capacity_kw",
    "rated_power_kw",
    "hub_height_m",
    "rotor_diameter_m",
    "contracted_capacity_kw",
    "commissioned_on",
    "feeder_id",
    "vacant",
];

fn num(v: Option<f64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_default()
}

fn csv_row(a: &Asset) -> [String; 14] {
    [
        a.asset_id.clone(),
        a.kind.as_str().to_string(),
        a.site_id.clone().unwrap_or_default(),
        a.model_id.clone().unwrap_or_default(),
        num(a.latitude),
        num(a.longitude),
        num(a.capacity_kw),
        num(a.rated_power_kw),
        num(a.hub_height_m),
        num(a.rotor_diameter_m),
        num(a.contracted_capacity_kw),
        a.commissioned_on.map(|d| d.to_string()).unwrap_or_default(),
        a.feeder_id.clone().unwrap_or_default(),
        a.vacant.to_string(),
    ]
}

fn table(registry: &Registry, assets: &[&Asset]) -> String {
    let dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    let header = [
        "asset_id",
        "kind",
        "site",
        "model",
        "rated_kw",
        "hub_m",
        "rotor_m",
        "latitude",
        "longitude",
        "feeder",
        "vacant",
    ];
    let rows: Vec<[String; 11]> = assets
        .iter()
        .map(|a| {
            [
                a.asset_id.clone(),
                a.kind.as_str().to_string(),
                dash(a.site_id.clone().unwrap_or_default()),
                dash(a.model_id.clone().unwrap_or_default()),
                dash(num(registry.rated_power_kw(a))),
                dash(num(registry.hub_height_m(a))),
                dash(num(registry.rotor_diameter_m(a))),
                dash(num(a.latitude)),
                dash(num(a.longitude)),
                dash(a.feeder_id.clone().unwrap_or_default()),
                if a.kind == AssetKind::Meter {
                    a.vacant.to_string()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells.zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    let _ = writeln!(
        out,
        "({} asset{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let set = gale_assets::parse_texts(
            &[
                (
                    "t.csv",
                    "asset_id,site_id,rated_power_kw,hub_height_m,model\nT1,farm-a,2000,80,GX\n",
                ),
                (
                    "m.csv",
                    "asset_id,kind,site_id,vacant\nM1,meter,grid-n,true\n",
                ),
            ],
            None,
        )
        .unwrap();
        let plan = gale_assets::diff(&Registry::default(), &set).unwrap();
        assert!(!plan.applied);
        let text = render_plan(&plan);
        assert!(
            text.contains("gale_assets                   2 to insert"),
            "{text}"
        );
        assert!(
            text.contains("+ gale_assets T1 (t.csv line 2): kind=turbine, site_id=farm-a"),
            "{text}"
        );
        assert!(
            text.contains("warning: t.csv line 2, column site_id: site `farm-a`"),
            "{text}"
        );
        assert!(
            text.ends_with("dry run: nothing was written (run without --dry-run to import)\n"),
            "{text}"
        );
        let mut registry = Registry::default();
        let mut t1 = Asset::new("T1", AssetKind::Turbine);
        t1.site_id = Some("farm-a".into());
        t1.model_id = Some("GX".into());
        t1.rated_power_kw = Some(2000.0);
        let mut model = gale_assets::TurbineModel::new("GX");
        model.hub_height_m = Some(80.0);
        registry.models.insert("GX".into(), model);
        let mut m1 = Asset::new("M1", AssetKind::Meter);
        m1.vacant = true;
        m1.site_id = Some("grid-n".into());
        registry.assets.insert("T1".into(), t1);
        registry.assets.insert("M1".into(), m1);
        registry
    }

    #[test]
    fn list_formats() {
        let r = registry();
        let table = render_assets(&r, None, None, ListFormat::Table).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("asset_id  kind     site    model  rated_kw  hub_m"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("M1        meter    grid-n  -"),
            "{table}"
        );
        assert!(lines[2].contains("GX     2000      80"), "{table}");
        assert_eq!(lines[3], "(2 assets)");

        let csv = render_assets(&r, Some(AssetKind::Turbine), None, ListFormat::Csv).unwrap();
        assert_eq!(csv.lines().count(), 2);
        // What list prints, import reads back.
        let set = gale_assets::parse_texts(&[("list.csv", &csv)], None).unwrap();
        assert_eq!(set.assets[0].key, "T1");
        let plan = gale_assets::diff(&r, &set).unwrap();
        assert!(plan.is_noop(), "{}", render_plan(&plan));

        let json = render_assets(&r, None, Some("grid-n"), ListFormat::Json).unwrap();
        let back: Vec<Asset> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 1);
        assert!(back[0].vacant);
        let set = gale_assets::parse_texts(&[("list.json", &json)], None).unwrap();
        assert!(gale_assets::diff(&r, &set).unwrap().is_noop());
    }
}
