//! What an import changes: each file row compared with the stored row,
//! field by field, before anything is written.
//!
//! The comparison is a pure function of the stored [`Registry`] and the
//! [`ImportSet`], so a dry run and the real import decide the same way, and
//! the real import recomputes it inside its transaction (under a lock) so
//! that what it writes is what it reports. Rows that end up equal to the
//! stored ones are reported as unchanged and not written, so re-importing
//! the same files is a no-op.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use gale_model::AssetKind;
use serde::Serialize;

use crate::import::{CurveImport, ImportErrors, ImportSet, Issue, Origin, Patch, TableKind, Value};
use crate::registry::{Asset, CurvePoint, Registry, Site, TurbineModel};

/// What an import does to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The row is new.
    Insert,
    /// The row exists and some fields change.
    Update,
    /// The row exists and the files change nothing in it.
    Unchanged,
}

/// One field's change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// Column (for curves: `power_kw at 7.5 m/s`, or `curve` for a new or much changed curve).
    pub field: String,
    /// Stored value ([`Value::Null`] for a new row).
    pub old: Value,
    /// Value after the import.
    pub new: Value,
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} → {}", self.field, self.old, self.new)
    }
}

/// One row of the files and what the import does with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowChange {
    /// The row's key (site, model or asset id; the model for a curve).
    pub key: String,
    /// Insert, update or unchanged.
    pub action: Action,
    /// For an insert, the fields set; for an update, the fields that change.
    pub changes: Vec<FieldChange>,
    /// Where the row came from.
    pub origin: Origin,
}

/// One table's part of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TablePlan {
    /// The table.
    pub table: TableKind,
    /// Every row of the files for this table, in file order.
    pub rows: Vec<RowChange>,
}

impl TablePlan {
    /// Rows with this action.
    pub fn count(&self, action: Action) -> usize {
        self.rows.iter().filter(|r| r.action == action).count()
    }
}

/// What an import does (or, once applied, did), table by table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Sites, models, curves and assets, in the order they are written.
    pub tables: Vec<TablePlan>,
    /// Doubts that did not stop the import (an asset naming an unregistered site).
    pub warnings: Vec<Issue>,
    /// True once written (by [`apply`](crate::apply)); false for a dry run.
    pub applied: bool,
    #[serde(skip)]
    pub(crate) writes: Writes,
}

impl Plan {
    /// The part of one table.
    pub fn table(&self, table: TableKind) -> &TablePlan {
        self.tables
            .iter()
            .find(|t| t.table == table)
            .expect("a plan has every table")
    }

    /// True when the import changes nothing.
    pub fn is_noop(&self) -> bool {
        self.tables
            .iter()
            .all(|t| t.rows.iter().all(|r| r.action == Action::Unchanged))
    }
}

/// The full rows to write (inserts and updates only).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Writes {
    pub sites: Vec<Site>,
    pub models: Vec<TurbineModel>,
    pub curves: Vec<(String, Vec<CurvePoint>)>,
    pub assets: Vec<Asset>,
}

/// A row type whose fields an import sets by column name.
trait Record {
    const FIELDS: &'static [&'static str];
    fn get(&self, field: &str) -> Value;
    fn set(&mut self, field: &str, value: Value);
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::Text(t) => Some(t),
        _ => None,
    }
}

fn number(v: Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(n),
        _ => None,
    }
}

fn opt_text(v: &Option<String>) -> Value {
    v.clone().map_or(Value::Null, Value::Text)
}

fn opt_number(v: Option<f64>) -> Value {
    v.map_or(Value::Null, Value::Number)
}

impl Record for Site {
    const FIELDS: &'static [&'static str] = &["name", "time_zone", "latitude", "longitude"];
    fn get(&self, field: &str) -> Value {
        match field {
            "name" => opt_text(&self.name),
            "time_zone" => Value::Text(self.time_zone.clone()),
            "latitude" => opt_number(self.latitude),
            "longitude" => opt_number(self.longitude),
            _ => Value::Null,
        }
    }
    fn set(&mut self, field: &str, value: Value) {
        match field {
            "name" => self.name = text(value),
            "time_zone" => self.time_zone = text(value).unwrap_or_else(|| "UTC".into()),
            "latitude" => self.latitude = number(value),
            "longitude" => self.longitude = number(value),
            _ => {}
        }
    }
}

impl Record for TurbineModel {
    const FIELDS: &'static [&'static str] = &[
        "manufacturer",
        "rated_power_kw",
        "cut_in_wind_speed_ms",
        "rated_wind_speed_ms",
        "cut_out_wind_speed_ms",
        "rotor_diameter_m",
        "hub_height_m",
    ];
    fn get(&self, field: &str) -> Value {
        match field {
            "manufacturer" => opt_text(&self.manufacturer),
            "rated_power_kw" => opt_number(self.rated_power_kw),
            "cut_in_wind_speed_ms" => opt_number(self.cut_in_wind_speed_ms),
            "rated_wind_speed_ms" => opt_number(self.rated_wind_speed_ms),
            "cut_out_wind_speed_ms" => opt_number(self.cut_out_wind_speed_ms),
            "rotor_diameter_m" => opt_number(self.rotor_diameter_m),
            "hub_height_m" => opt_number(self.hub_height_m),
            _ => Value::Null,
        }
    }
    fn set(&mut self, field: &str, value: Value) {
        match field {
            "manufacturer" => self.manufacturer = text(value),
            "rated_power_kw" => self.rated_power_kw = number(value),
            "cut_in_wind_speed_ms" => self.cut_in_wind_speed_ms = number(value),
            "rated_wind_speed_ms" => self.rated_wind_speed_ms = number(value),
            "cut_out_wind_speed_ms" => self.cut_out_wind_speed_ms = number(value),
            "rotor_diameter_m" => self.rotor_diameter_m = number(value),
            "hub_height_m" => self.hub_height_m = number(value),
            _ => {}
        }
    }
}

impl Record for Asset {
    const FIELDS: &'static [&'static str] = &[
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
    fn get(&self, field: &str) -> Value {
        match field {
            "kind" => Value::Kind(self.kind),
            "site_id" => opt_text(&self.site_id),
            "model_id" => opt_text(&self.model_id),
            "latitude" => opt_number(self.latitude),
            "longitude" => opt_number(self.longitude),
            "capacity_kw" => opt_number(self.capacity_kw),
            "rated_power_kw" => opt_number(self.rated_power_kw),
            "hub_height_m" => opt_number(self.hub_height_m),
            "rotor_diameter_m" => opt_number(self.rotor_diameter_m),
            "contracted_capacity_kw" => opt_number(self.contracted_capacity_kw),
            "commissioned_on" => self.commissioned_on.map_or(Value::Null, Value::Date),
            "feeder_id" => opt_text(&self.feeder_id),
            "vacant" => Value::Bool(self.vacant),
            _ => Value::Null,
        }
    }
    fn set(&mut self, field: &str, value: Value) {
        match field {
            "kind" => {
                if let Value::Kind(k) = value {
                    self.kind = k;
                }
            }
            "site_id" => self.site_id = text(value),
            "model_id" => self.model_id = text(value),
            "latitude" => self.latitude = number(value),
            "longitude" => self.longitude = number(value),
            "capacity_kw" => self.capacity_kw = number(value),
            "rated_power_kw" => self.rated_power_kw = number(value),
            "hub_height_m" => self.hub_height_m = number(value),
            "rotor_diameter_m" => self.rotor_diameter_m = number(value),
            "contracted_capacity_kw" => self.contracted_capacity_kw = number(value),
            "commissioned_on" => {
                self.commissioned_on = match value {
                    Value::Date(d) => Some(d),
                    _ => None,
                }
            }
            "feeder_id" => self.feeder_id = text(value),
            "vacant" => self.vacant = matches!(value, Value::Bool(true)),
            _ => {}
        }
    }
}

/// Applies a patch to the stored row (or to `new_row` when there is none)
/// and says what changed.
fn merge<R: Record + Clone>(
    stored: Option<&R>,
    patch: &Patch,
    new_row: impl FnOnce() -> R,
) -> (R, RowChange) {
    let (mut row, action) = match stored {
        Some(r) => (r.clone(), Action::Update),
        None => {
            let mut r = new_row();
            for (f, v) in &patch.defaults {
                r.set(f, v.clone());
            }
            (r, Action::Insert)
        }
    };
    for (f, v) in &patch.values {
        row.set(f, v.clone());
    }
    let changes: Vec<FieldChange> = R::FIELDS
        .iter()
        .filter_map(|f| {
            let new = row.get(f);
            let old = match stored {
                Some(s) => s.get(f),
                None if new == Value::Null || new == Value::Bool(false) => return None,
                None => Value::Null,
            };
            (old != new).then(|| FieldChange {
                field: (*f).to_string(),
                old,
                new,
            })
        })
        .collect();
    let action = if action == Action::Update && changes.is_empty() {
        Action::Unchanged
    } else {
        action
    };
    let change = RowChange {
        key: patch.key.clone(),
        action,
        changes,
        origin: patch.origin.clone(),
    };
    (row, change)
}

/// Compares an import with the stored registry: the plan, or every row that
/// would break a rule once merged with what is stored (a new asset of
/// unknown kind, a meter with a turbine model, a model whose cut-in speed
/// is not below its rated speed).
pub fn diff(current: &Registry, set: &ImportSet) -> Result<Plan, ImportErrors> {
    let mut errors = Vec::new();
    let mut warnings = set.warnings.clone();
    let mut writes = Writes::default();

    let mut sites = Vec::new();
    for patch in &set.sites {
        let (site, change) = merge(current.sites.get(&patch.key), patch, || {
            Site::new(&patch.key)
        });
        if change.action != Action::Unchanged {
            writes.sites.push(site);
        }
        sites.push(change);
    }

    let mut models = Vec::new();
    let mut merged_models: BTreeMap<&str, TurbineModel> = BTreeMap::new();
    for patch in &set.models {
        let (model, change) = merge(current.models.get(&patch.key), patch, || {
            TurbineModel::new(&patch.key)
        });
        check_model(&model, &patch.origin, &mut errors);
        if change.action != Action::Unchanged {
            writes.models.push(model.clone());
        }
        merged_models.insert(&patch.key, model);
        models.push(change);
    }

    let mut curves = Vec::new();
    for curve in &set.curves {
        let stored = current
            .models
            .get(&curve.model_id)
            .map(|m| m.curve.as_slice());
        let change = curve_change(stored.unwrap_or_default(), curve);
        if let Some(rated) = merged_models
            .get(curve.model_id.as_str())
            .or_else(|| current.models.get(&curve.model_id))
            .and_then(|m| m.rated_power_kw)
        {
            let peak = curve.points.iter().map(|p| p.power_kw).fold(0.0, f64::max);
            if peak > rated * 1.05 {
                warnings.push(Issue::new(
                    &curve.origin,
                    Some("power_kw"),
                    format!(
                        "power curve of model `{}` peaks at {peak} kW, above the model's rated power {rated} kW",
                        curve.model_id
                    ),
                ));
            }
        }
        if change.action != Action::Unchanged {
            writes
                .curves
                .push((curve.model_id.clone(), curve.points.clone()));
        }
        curves.push(change);
    }

    let known_sites: HashSet<&str> = current
        .sites
        .keys()
        .map(String::as_str)
        .chain(set.sites.iter().map(|p| p.key.as_str()))
        .collect();
    let mut unknown_sites: BTreeMap<String, (usize, Origin)> = BTreeMap::new();
    let mut assets = Vec::new();
    for patch in &set.assets {
        let stored = current.assets.get(&patch.key);
        let kind = patch.value("kind").or_else(|| {
            patch
                .defaults
                .iter()
                .find(|(f, _)| *f == "kind")
                .map(|(_, v)| v)
        });
        let kind = match (stored, kind) {
            (Some(a), _) => a.kind,
            (None, Some(Value::Kind(k))) => *k,
            (None, _) => {
                errors.push(Issue::new(
                    &patch.origin,
                    Some("kind"),
                    format!(
                        "asset `{}` is new and nothing tells whether it is a turbine or a meter: \
                         add a kind column (turbine or meter)",
                        patch.key
                    ),
                ));
                continue;
            }
        };
        let (asset, change) = merge(stored, patch, || Asset::new(&patch.key, kind));
        check_asset(&asset, &patch.origin, &mut errors);
        if let Some(model) = &asset.model_id {
            if !merged_models.contains_key(model.as_str()) && !current.models.contains_key(model) {
                errors.push(Issue::new(
                    &patch.origin,
                    Some("model_id"),
                    format!("turbine model `{model}` is neither registered nor in the import"),
                ));
            }
        }
        if let Some(site) = &asset.site_id {
            if !known_sites.contains(site.as_str()) {
                unknown_sites
                    .entry(site.clone())
                    .or_insert_with(|| (0, patch.origin.clone()))
                    .0 += 1;
            }
        }
        if change.action != Action::Unchanged {
            writes.assets.push(asset);
        }
        assets.push(change);
    }
    for (site, (n, first)) in unknown_sites {
        warnings.push(Issue::new(
            &first,
            Some("site_id"),
            format!(
                "site `{site}` ({n} asset{}) is not registered; import it in a sites file to give it a time zone and position",
                if n == 1 { "" } else { "s" }
            ),
        ));
    }

    if !errors.is_empty() {
        return Err(ImportErrors { errors });
    }
    Ok(Plan {
        tables: vec![
            TablePlan {
                table: TableKind::Sites,
                rows: sites,
            },
            TablePlan {
                table: TableKind::Models,
                rows: models,
            },
            TablePlan {
                table: TableKind::Curves,
                rows: curves,
            },
            TablePlan {
                table: TableKind::Assets,
                rows: assets,
            },
        ],
        warnings,
        applied: false,
        writes,
    })
}

/// Cut-in below rated below cut-out, for the speeds that are known (the
/// table's CHECKs, reported with the row instead of as a refused write).
fn check_model(model: &TurbineModel, origin: &Origin, errors: &mut Vec<Issue>) {
    let speeds = [
        ("cut-in", model.cut_in_wind_speed_ms),
        ("rated", model.rated_wind_speed_ms),
        ("cut-out", model.cut_out_wind_speed_ms),
    ];
    for (i, (lower, a)) in speeds.iter().enumerate() {
        for (upper, b) in &speeds[i + 1..] {
            if let (Some(a), Some(b)) = (a, b) {
                if a >= b {
                    errors.push(Issue::new(
                        origin,
                        None,
                        format!(
                            "model `{}`: {lower} wind speed {a} m/s must be below {upper} wind speed {b} m/s",
                            model.model_id
                        ),
                    ));
                }
            }
        }
    }
}

/// Turbine fields on turbines, meter fields on meters.
fn check_asset(asset: &Asset, origin: &Origin, errors: &mut Vec<Issue>) {
    match asset.kind {
        AssetKind::Meter => {
            let turbine_only = [
                ("model_id", asset.model_id.is_some()),
                ("hub_height_m", asset.hub_height_m.is_some()),
                ("rotor_diameter_m", asset.rotor_diameter_m.is_some()),
            ];
            for (field, set) in turbine_only {
                if set {
                    errors.push(Issue::new(
                        origin,
                        Some(field),
                        format!(
                            "`{}` is a meter; {field} applies to turbines only",
                            asset.asset_id
                        ),
                    ));
                }
            }
        }
        AssetKind::Turbine => {
            if asset.vacant {
                errors.push(Issue::new(
                    origin,
                    Some("vacant"),
                    format!(
                        "`{}` is a turbine; vacant applies to meters only",
                        asset.asset_id
                    ),
                ));
            }
        }
    }
}

/// Beyond this many changed points a curve's change is summarised.
const MAX_POINT_CHANGES: usize = 8;

/// A curve's change: the points whose power differs, appear or disappear
/// (or, when many do, the old and new curve in brief).
fn curve_change(stored: &[CurvePoint], curve: &CurveImport) -> RowChange {
    let summary = |points: &[CurvePoint]| match (points.first(), points.last()) {
        (Some(a), Some(b)) => Value::Text(format!(
            "{} points, {}–{} m/s",
            points.len(),
            a.wind_speed_ms,
            b.wind_speed_ms
        )),
        _ => Value::Text("no points".into()),
    };
    let (action, changes) = if stored.is_empty() {
        if curve.points.is_empty() {
            (Action::Unchanged, Vec::new())
        } else {
            (
                Action::Insert,
                vec![FieldChange {
                    field: "curve".into(),
                    old: Value::Null,
                    new: summary(&curve.points),
                }],
            )
        }
    } else if stored == curve.points.as_slice() {
        (Action::Unchanged, Vec::new())
    } else {
        let mut speeds: Vec<f64> = stored
            .iter()
            .chain(&curve.points)
            .map(|p| p.wind_speed_ms)
            .collect();
        speeds.sort_by(f64::total_cmp);
        speeds.dedup();
        let at = |points: &[CurvePoint], ws: f64| {
            points
                .iter()
                .find(|p| p.wind_speed_ms == ws)
                .map_or(Value::Null, |p| Value::Number(p.power_kw))
        };
        let mut changes: Vec<FieldChange> = speeds
            .into_iter()
            .filter_map(|ws| {
                let (old, new) = (at(stored, ws), at(&curve.points, ws));
                (old != new).then(|| FieldChange {
                    field: format!("power_kw at {ws} m/s"),
                    old,
                    new,
                })
            })
            .collect();
        if changes.len() > MAX_POINT_CHANGES {
            let differ = changes.len();
            changes = vec![FieldChange {
                field: "curve".into(),
                old: summary(stored),
                new: match summary(&curve.points) {
                    Value::Text(t) => Value::Text(format!("{t} ({differ} points differ)")),
                    other => other,
                },
            }];
        }
        (Action::Update, changes)
    };
    RowChange {
        key: curve.model_id.clone(),
        action,
        changes,
        origin: curve.origin.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::parse_texts;

    const TURBINES: &str =
        "asset_id,latitude,longitude,rated_power_kw,hub_height_m,rotor_diameter_m,model\n\
        T1,55.1,8.1,2000,80,90,GX\n\
        T2,55.2,8.2,2000,95,90,GX\n";
    const CURVE: &str = "model,wind_speed_ms,power_kw\nGX,3,20\nGX,12,1980\nGX,25,2000\n";

    fn set(sources: &[(&str, &str)]) -> ImportSet {
        parse_texts(sources, None).unwrap()
    }

    /// The registry after writing `plan` (what `apply` stores).
    fn stored(mut registry: Registry, plan: &Plan) -> Registry {
        for s in &plan.writes.sites {
            registry.sites.insert(s.site_id.clone(), s.clone());
        }
        for m in &plan.writes.models {
            let curve = registry
                .models
                .get(&m.model_id)
                .map(|m| m.curve.clone())
                .unwrap_or_default();
            let mut m = m.clone();
            m.curve = curve;
            registry.models.insert(m.model_id.clone(), m);
        }
        for (id, points) in &plan.writes.curves {
            registry.models.get_mut(id).unwrap().curve = points.clone();
        }
        for a in &plan.writes.assets {
            registry.assets.insert(a.asset_id.clone(), a.clone());
        }
        registry
    }

    #[test]
    fn operator_files_insert_then_reimport_is_unchanged() {
        let import = set(&[("turbines.csv", TURBINES), ("curve.csv", CURVE)]);
        let plan = diff(&Registry::default(), &import).unwrap();
        assert_eq!(plan.table(TableKind::Assets).count(Action::Insert), 2);
        assert_eq!(plan.table(TableKind::Models).count(Action::Insert), 1);
        assert_eq!(plan.table(TableKind::Curves).count(Action::Insert), 1);
        let model = &plan.writes.models[0];
        assert_eq!(model.rated_power_kw, Some(2000.0));
        assert_eq!(model.hub_height_m, Some(80.0), "the first turbine's values");
        let t1 = &plan.writes.assets[0];
        assert_eq!(t1.kind, AssetKind::Turbine);
        assert_eq!(t1.model_id.as_deref(), Some("GX"));

        let registry = stored(Registry::default(), &plan);
        let again = diff(&registry, &import).unwrap();
        assert!(again.is_noop(), "{again:#?}");
        assert!(again.writes == Writes::default());
    }

    #[test]
    fn changed_fields_are_listed_old_to_new() {
        let registry = stored(
            Registry::default(),
            &diff(
                &Registry::default(),
                &set(&[("t.csv", TURBINES), ("c.csv", CURVE)]),
            )
            .unwrap(),
        );
        let changed = TURBINES.replace("T2,55.2,8.2,2000,95", "T2,55.2,8.2,2000,100");
        let curve = CURVE.replace("GX,12,1980", "GX,12,1990");
        let plan = diff(&registry, &set(&[("t.csv", &changed), ("c.csv", &curve)])).unwrap();
        let assets = plan.table(TableKind::Assets);
        assert_eq!(assets.count(Action::Unchanged), 1);
        let t2 = assets.rows.iter().find(|r| r.key == "T2").unwrap();
        assert_eq!(t2.action, Action::Update);
        assert_eq!(
            t2.changes,
            vec![FieldChange {
                field: "hub_height_m".into(),
                old: Value::Number(95.0),
                new: Value::Number(100.0)
            }]
        );
        assert_eq!(t2.origin.to_string(), "t.csv line 3");
        let models = plan.table(TableKind::Models);
        assert_eq!(
            models.count(Action::Unchanged),
            1,
            "an existing model is not overwritten by asset values"
        );
        let c = &plan.table(TableKind::Curves).rows[0];
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.changes[0].to_string(), "power_kw at 12 m/s: 1980 → 1990");

        let many: String = std::iter::once("model,ws,power\n".to_string())
            .chain((0..20).map(|i| format!("GX,{},{}\n", 3 + i, 100 * i)))
            .collect();
        let plan = diff(&registry, &set(&[("c.csv", &many)])).unwrap();
        let c = &plan.table(TableKind::Curves).rows[0];
        assert_eq!(
            c.changes[0].to_string(),
            "curve: 3 points, 3–25 m/s → 20 points, 3–22 m/s (21 points differ)"
        );
    }

    #[test]
    fn a_file_sets_only_its_columns() {
        let registry = stored(
            Registry::default(),
            &diff(&Registry::default(), &set(&[("t.csv", TURBINES)])).unwrap(),
        );
        let plan = diff(
            &registry,
            &set(&[("s.csv", "asset_id,site_id\nT1,farm-a\n")]),
        )
        .unwrap();
        let row = &plan.table(TableKind::Assets).rows[0];
        assert_eq!(row.action, Action::Update);
        assert_eq!(row.changes.len(), 1);
        let t1 = &plan.writes.assets[0];
        assert_eq!(t1.hub_height_m, Some(80.0));
        assert_eq!(t1.site_id.as_deref(), Some("farm-a"));
        assert_eq!(plan.warnings.len(), 1);
        assert!(
            plan.warnings[0].message.contains("farm-a"),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn merged_rows_are_checked() {
        let err = diff(
            &Registry::default(),
            &set(&[("a.csv", "asset_id,site_id\nX1,farm-a\n")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("add a kind column"), "{err}");

        let err = diff(
            &Registry::default(),
            &set(&[(
                "m.csv",
                "model_id,cut_in_wind_speed_ms,rated_wind_speed_ms,cut_out_wind_speed_ms\nM,4,3.5,25\n",
            )]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("cut-in wind speed 4 m/s must be below rated"),
            "{err}"
        );

        let err = diff(
            &Registry::default(),
            &set(&[(
                "a.csv",
                "asset_id,kind,model,vacant\nM1,meter,GX,\nT1,turbine,,true\n",
            )]),
        )
        .unwrap_err();
        assert_eq!(err.errors.len(), 2, "{err}");
    }

    #[test]
    fn an_existing_assets_kind_is_kept_when_the_file_has_none() {
        let registry = stored(
            Registry::default(),
            &diff(
                &Registry::default(),
                &set(&[("m.csv", "asset_id,kind\nM1,meter\n")]),
            )
            .unwrap(),
        );
        let plan = diff(&registry, &set(&[("v.csv", "asset_id,vacant\nM1,yes\n")])).unwrap();
        let m1 = &plan.writes.assets[0];
        assert_eq!(m1.kind, AssetKind::Meter);
        assert!(m1.vacant);
    }
}
