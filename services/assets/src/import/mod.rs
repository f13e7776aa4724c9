//! Reading registry files: CSV tables and JSON documents into an
//! [`ImportSet`], every row checked before anything touches the database.
//!
//! The people who know the fleet have spreadsheets, not SQL: an asset list
//! with positions and nameplate values, the manufacturer's power curve as
//! two columns. Each file is read as it is (its table told by its header,
//! common column spellings accepted), every problem of every file is
//! collected with its file, line and column, and an import with any problem
//! is refused whole, so a half-applied fleet never reaches the stages.
//!
//! A file only sets the columns it has: a CSV of `asset_id,vacant` changes
//! vacancy and nothing else. An empty cell clears a value.

mod fields;
mod from_csv;
mod from_json;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use chrono::NaiveDate;
use gale_model::AssetKind;
use serde::Serialize;

use crate::registry::CurvePoint;
pub(crate) use fields::{fields_of, Field};

/// A table of the registry, as files and `--table` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// `gale_sites`.
    Sites,
    /// `gale_turbine_models`.
    Models,
    /// `gale_power_curve_points`.
    Curves,
    /// `gale_assets`.
    Assets,
}

impl TableKind {
    /// Every table, in the order an import writes them.
    pub const ALL: [TableKind; 4] = [
        TableKind::Sites,
        TableKind::Models,
        TableKind::Curves,
        TableKind::Assets,
    ];

    /// The short name (`sites`, `models`, `curves`, `assets`).
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Sites => "sites",
            TableKind::Models => "models",
            TableKind::Curves => "curves",
            TableKind::Assets => "assets",
        }
    }

    /// The Postgres table.
    pub fn table_name(self) -> &'static str {
        match self {
            TableKind::Sites => "gale_sites",
            TableKind::Models => "gale_turbine_models",
            TableKind::Curves => "gale_power_curve_points",
            TableKind::Assets => "gale_assets",
        }
    }
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TableKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match fields::normalize(s).as_str() {
            "sites" | "site" | "gale_sites" => Ok(TableKind::Sites),
            "models" | "model" | "turbine_models" | "gale_turbine_models" => Ok(TableKind::Models),
            "curves" | "curve" | "power_curves" | "power_curve" | "gale_power_curve_points" => {
                Ok(TableKind::Curves)
            }
            "assets" | "asset" | "gale_assets" => Ok(TableKind::Assets),
            _ => Err(format!(
                "unknown table {s:?}; expected sites, models, curves or assets"
            )),
        }
    }
}

/// A typed value of one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value (an empty cell, JSON `null`).
    Null,
    /// Text: ids, names, time zones.
    Text(String),
    /// A number in the column's unit.
    Number(f64),
    /// A flag.
    Bool(bool),
    /// A calendar day.
    Date(NaiveDate),
    /// Turbine or meter.
    Kind(AssetKind),
}

/// As JSON would hold the cell: `null`, a string, a number, a boolean;
/// dates as `YYYY-MM-DD` and kinds in lower case.
impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Text(t) => s.serialize_str(t),
            Value::Number(n) => s.serialize_f64(*n),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Date(d) => s.collect_str(d),
            Value::Kind(k) => s.serialize_str(k.as_str()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("(none)"),
            Value::Text(t) => f.write_str(t),
            Value::Number(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Date(d) => write!(f, "{d}"),
            Value::Kind(k) => f.write_str(k.as_str()),
        }
    }
}

/// Where in a file something was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// The file as a whole.
    File,
    /// A line of a CSV file (1 is the header), or of a JSON file for syntax errors.
    Line(u64),
    /// An element of a JSON document (`assets[3]`, `models[0].curve[2]`).
    Item(String),
}

/// A file and a place in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The file as named on the command line.
    pub file: String,
    /// Where in it.
    pub place: Place,
}

impl Origin {
    pub(crate) fn new(file: &str, place: Place) -> Self {
        Origin {
            file: file.to_string(),
            place,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.place {
            Place::File => f.write_str(&self.file),
            Place::Line(n) => write!(f, "{} line {n}", self.file),
            Place::Item(path) => write!(f, "{} {path}", self.file),
        }
    }
}

/// One problem (or, in warnings, one doubt) about an imported row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    /// File and line (or JSON element).
    pub origin: Origin,
    /// The column (CSV) or field (JSON) concerned, as the file names it.
    pub column: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Issue {
    pub(crate) fn new(origin: &Origin, column: Option<&str>, message: impl Into<String>) -> Self {
        Issue {
            origin: origin.clone(),
            column: column.map(str::to_string),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(c) = &self.column {
            let what = match self.origin.place {
                Place::Item(_) => "field",
                _ => "column",
            };
            write!(f, ", {what} {c}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in an import, reported together; nothing was written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ImportErrors {
    /// The problems, in file and line order.
    pub errors: Vec<Issue>,
}

impl fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{n} problem{} in the import; nothing was written:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// The fields one row sets, by table column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Patch {
    /// The row's key (`site_id`, `model_id` or `asset_id`).
    pub key: String,
    /// Fields set whether the row is new or not, as the file gives them.
    pub values: Vec<(&'static str, Value)>,
    /// Fields set only when the row is new: an asset's inferred kind, the
    /// values of a model created because an asset names it.
    pub defaults: Vec<(&'static str, Value)>,
    /// Where the row came from.
    pub origin: Origin,
}

impl Patch {
    /// The value the file gives for `field`, if it has the field.
    pub fn value(&self, field: &str) -> Option<&Value> {
        self.values
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v)
    }
}

/// A model's complete power curve from the files; it replaces the stored one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurveImport {
    /// The model.
    pub model_id: String,
    /// Points, in increasing wind speed.
    pub points: Vec<CurvePoint>,
    /// Where the curve (its first point) came from.
    pub origin: Origin,
}

/// Everything read from the files of one import, checked row by row.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportSet {
    /// Sites.
    pub sites: Vec<Patch>,
    /// Turbine models, including those created because an asset or curve
    /// names a model no file defines.
    pub models: Vec<Patch>,
    /// Power curves.
    pub curves: Vec<CurveImport>,
    /// Turbines and meters.
    pub assets: Vec<Patch>,
    /// Doubts that do not stop the import.
    pub warnings: Vec<Issue>,
}

impl ImportSet {
    /// True when the files held no rows.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
            && self.models.is_empty()
            && self.curves.is_empty()
            && self.assets.is_empty()
    }
}

/// Reads one file, its table told by its header (or its sections, for JSON).
pub fn parse(path: &Path) -> Result<ImportSet, ImportErrors> {
    parse_files(&[path], None)
}

/// Reads files as one import: ids must be unique across them, and a model
/// one file names may be defined in another. `table` forces the table of
/// every CSV file and JSON array instead of telling it from the header.
pub fn parse_files<P: AsRef<Path>>(
    paths: &[P],
    table: Option<TableKind>,
) -> Result<ImportSet, ImportErrors> {
    let mut collected = Collected::default();
    for path in paths {
        let path = path.as_ref();
        let name = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => parse_source(&name, &text, table, &mut collected),
                Err(_) => collected.issue(Issue::new(
                    &Origin::new(&name, Place::File),
                    None,
                    "is not UTF-8 text; save it as UTF-8 CSV or JSON",
                )),
            },
            Err(e) => collected.issue(Issue::new(
                &Origin::new(&name, Place::File),
                None,
                format!("cannot read: {e}"),
            )),
        }
    }
    collected.finish()
}

/// Reads in-memory sources, `(name, text)`, as [`parse_files`] reads files.
pub fn parse_texts(
    sources: &[(&str, &str)],
    table: Option<TableKind>,
) -> Result<ImportSet, ImportErrors> {
    let mut collected = Collected::default();
    for (name, text) in sources {
        parse_source(name, text, table, &mut collected);
    }
    collected.finish()
}

fn parse_source(name: &str, text: &str, table: Option<TableKind>, collected: &mut Collected) {
    let body = text.trim_start_matches('\u{feff}').trim_start();
    if body.starts_with('{') || body.starts_with('[') {
        from_json::parse(name, body, table, collected);
    } else if body.is_empty() {
        collected.issue(Issue::new(
            &Origin::new(name, Place::File),
            None,
            "is empty",
        ));
    } else {
        from_csv::parse(name, text, table, collected);
    }
}

/// Which table a header (normalised column names) belongs to: the key
/// column tells, also when it is in the wrong unit.
pub(crate) fn detect(columns: &[String]) -> Option<TableKind> {
    let has = |table: TableKind, field: usize| {
        columns.iter().any(|c| {
            matches!(
                fields::classify(c, fields_of(table)),
                fields::Column::Field(i) | fields::Column::WrongUnit(i, _) if i == field
            )
        })
    };
    if has(TableKind::Assets, 0) {
        Some(TableKind::Assets)
    } else if has(TableKind::Curves, 1) {
        Some(TableKind::Curves)
    } else if has(TableKind::Models, 0) {
        Some(TableKind::Models)
    } else if has(TableKind::Sites, 0) {
        Some(TableKind::Sites)
    } else {
        None
    }
}

/// The message for a header that tells no table.
pub(crate) fn undetected_message() -> String {
    "cannot tell which table this is for: it has none of the key columns asset_id (assets), \
     wind_speed_ms (curves), model_id (models), site_id (sites); rename a column or pass --table"
        .into()
}

/// The accepted columns of a table, for messages.
pub(crate) fn accepted(table: TableKind) -> String {
    let mut names: Vec<&str> = fields_of(table).iter().map(|f| f.name).collect();
    if table == TableKind::Models {
        names.push("curve (JSON)");
    }
    names.join(", ")
}

/// Rows of all files so far, with the checks that span rows and files.
#[derive(Default)]
pub(crate) struct Collected {
    set: ImportSet,
    errors: Vec<Issue>,
    /// First origin of each key, per table, for duplicate messages.
    seen: HashMap<(TableKind, String), Origin>,
    /// Index in `set.curves` of each model's curve, and the file it is read from.
    curves: HashMap<String, (usize, String)>,
    /// Curves refused as duplicates, by model and file: their further points
    /// are not reported again.
    refused_curves: std::collections::HashSet<(String, String)>,
}

impl Collected {
    pub(crate) fn issue(&mut self, issue: Issue) {
        self.errors.push(issue);
    }

    fn first_time(&mut self, table: TableKind, key: &str, origin: &Origin) -> bool {
        match self.seen.get(&(table, key.to_string())) {
            Some(first) => {
                let what = match table {
                    TableKind::Curves => format!("power curve of model `{key}` is given twice"),
                    _ => format!("duplicate {} `{key}`", fields_of(table)[0].name),
                };
                self.errors.push(Issue::new(
                    origin,
                    None,
                    format!("{what} (first at {first})"),
                ));
                false
            }
            None => {
                self.seen.insert((table, key.to_string()), origin.clone());
                true
            }
        }
    }

    /// Adds a typed row of `table`; `values` are the fields the row has.
    pub(crate) fn row(
        &mut self,
        table: TableKind,
        mut values: Vec<(&'static str, Value)>,
        origin: Origin,
    ) {
        let key_field = fields_of(table)[0].name;
        let key = match values.iter().position(|(f, _)| *f == key_field) {
            Some(i) => match values.remove(i).1 {
                Value::Text(t) => t,
                _ => return,
            },
            None => {
                self.issue(Issue::new(
                    &origin,
                    Some(key_field),
                    format!("is missing; every row needs its {key_field}"),
                ));
                return;
            }
        };
        match table {
            TableKind::Curves => self.curve_row(key, values, origin),
            TableKind::Assets => {
                if !self.first_time(table, &key, &origin) {
                    return;
                }
                let mut defaults = Vec::new();
                if let Some(i) = values.iter().position(|(f, _)| *f == "kind") {
                    if values[i].1 == Value::Null {
                        values.remove(i);
                    }
                }
                if !values.iter().any(|(f, _)| *f == "kind") {
                    if let Some(kind) = infer_kind(&values) {
                        defaults.push(("kind", Value::Kind(kind)));
                    }
                }
                self.set.assets.push(Patch {
                    key,
                    values,
                    defaults,
                    origin,
                });
            }
            TableKind::Sites | TableKind::Models => {
                if !self.first_time(table, &key, &origin) {
                    return;
                }
                let patch = Patch {
                    key,
                    values,
                    defaults: Vec::new(),
                    origin,
                };
                match table {
                    TableKind::Sites => self.set.sites.push(patch),
                    _ => self.set.models.push(patch),
                }
            }
        }
    }

    /// One point of a curves table: points of a model accumulate within a
    /// file, in increasing wind speed.
    fn curve_row(&mut self, model: String, values: Vec<(&'static str, Value)>, origin: Origin) {
        let number = |name: &str| {
            values.iter().find_map(|(f, v)| match v {
                Value::Number(n) if *f == name => Some(*n),
                _ => None,
            })
        };
        let (Some(wind_speed_ms), Some(power_kw)) = (number("wind_speed_ms"), number("power_kw"))
        else {
            for field in ["wind_speed_ms", "power_kw"] {
                if number(field).is_none() {
                    self.issue(Issue::new(
                        &origin,
                        Some(field),
                        "is empty; every curve point needs a wind speed and a power",
                    ));
                }
            }
            return;
        };
        let point = CurvePoint {
            wind_speed_ms,
            power_kw,
        };
        match self.curves.get(&model) {
            Some((i, file)) if *file == origin.file => {
                let curve = &mut self.set.curves[*i];
                if let Some(last) = curve.points.last() {
                    if wind_speed_ms <= last.wind_speed_ms {
                        let message = format!(
                            "power curve of model `{model}` is not increasing in wind speed: \
                             {wind_speed_ms} m/s after {} m/s (sort the points by wind speed, each speed once)",
                            last.wind_speed_ms
                        );
                        self.issue(Issue::new(&origin, Some("wind_speed_ms"), message));
                        return;
                    }
                }
                curve.points.push(point);
            }
            _ => {
                if self
                    .refused_curves
                    .contains(&(model.clone(), origin.file.clone()))
                {
                    return;
                }
                let curve = CurveImport {
                    model_id: model,
                    points: vec![point],
                    origin,
                };
                self.curve(curve);
            }
        }
    }

    /// A whole curve (a JSON model's `curve`, or the first point of a model
    /// in a curves table).
    pub(crate) fn curve(&mut self, curve: CurveImport) {
        if !self.first_time(TableKind::Curves, &curve.model_id, &curve.origin) {
            self.refused_curves
                .insert((curve.model_id, curve.origin.file));
            return;
        }
        self.curves.insert(
            curve.model_id.clone(),
            (self.set.curves.len(), curve.origin.file.clone()),
        );
        self.set.curves.push(curve);
    }

    /// Models named by assets and curves but defined by no file are created:
    /// with the first naming asset's rated power, rotor and hub values, and
    /// only if the database does not have them already.
    fn finish(mut self) -> Result<ImportSet, ImportErrors> {
        if !self.errors.is_empty() {
            return Err(ImportErrors {
                errors: self.errors,
            });
        }
        let defined: std::collections::HashSet<String> =
            self.set.models.iter().map(|m| m.key.clone()).collect();
        let mut implied: Vec<Patch> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for asset in &self.set.assets {
            let Some(Value::Text(model)) = asset.value("model_id") else {
                continue;
            };
            if defined.contains(model) || index.contains_key(model) {
                continue;
            }
            let defaults = ["rated_power_kw", "rotor_diameter_m", "hub_height_m"]
                .into_iter()
                .filter_map(|f| match asset.value(f) {
                    Some(v @ Value::Number(_)) => Some((f, v.clone())),
                    _ => None,
                })
                .collect();
            index.insert(model.clone(), implied.len());
            implied.push(Patch {
                key: model.clone(),
                values: Vec::new(),
                defaults,
                origin: asset.origin.clone(),
            });
        }
        for curve in &self.set.curves {
            if !defined.contains(&curve.model_id) && !index.contains_key(&curve.model_id) {
                index.insert(curve.model_id.clone(), implied.len());
                implied.push(Patch {
                    key: curve.model_id.clone(),
                    values: Vec::new(),
                    defaults: Vec::new(),
                    origin: curve.origin.clone(),
                });
            }
        }
        self.set.models.extend(implied);
        Ok(self.set)
    }
}

/// An asset's kind from the fields it has, when no `kind` is given: turbine
/// fields make a turbine, meter fields a meter, both or neither nothing.
fn infer_kind(values: &[(&'static str, Value)]) -> Option<AssetKind> {
    let set = |field: &str| {
        values
            .iter()
            .any(|(f, v)| *f == field && !matches!(v, Value::Null | Value::Bool(false)))
    };
    let turbine = [
        "model_id",
        "rated_power_kw",
        "hub_height_m",
        "rotor_diameter_m",
    ]
    .iter()
    .any(|f| set(f));
    let meter = ["feeder_id", "contracted_capacity_kw", "vacant"]
        .iter()
        .any(|f| set(f));
    match (turbine, meter) {
        (true, false) => Some(AssetKind::Turbine),
        (false, true) => Some(AssetKind::Meter),
        _ => None,
    }
}

/// Types the cells of one row of `table` and adds it; a bad cell is
/// reported (with its column as the file names it) and the row dropped.
pub(crate) fn add_row<'a>(
    table: TableKind,
    cells: impl IntoIterator<Item = (&'static Field, &'a str, fields::Cell<'a>)>,
    origin: Origin,
    collected: &mut Collected,
) {
    let mut values = Vec::new();
    let mut ok = true;
    for (field, label, cell) in cells {
        match fields::parse_cell(field, cell) {
            Ok(v) => values.push((field.name, v)),
            Err(message) => {
                collected.issue(Issue::new(&origin, Some(label), message));
                ok = false;
            }
        }
    }
    if ok {
        collected.row(table, values, origin);
    }
}

#[cfg(test)]
mod tests;
