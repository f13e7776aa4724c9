//! JSON documents: `{ "sites": [...], "models": [...], "curves": [...],
//! "assets": [...] }`, each section an array of row objects whose keys are
//! the CSV columns; a model may carry its `curve` as `[[ws, kw], ...]` or
//! `[{"wind_speed_ms": ..., "power_kw": ...}, ...]`. A bare array of rows is
//! one table, told by its keys (or `--table`).

use std::collections::{BTreeSet, HashMap};

use serde_json::Value as Json;

use super::fields::{classify, normalize, parse_cell, unit_of, Cell, Column, CURVE_FIELDS};
use super::from_csv::describe;
use super::{accepted, add_row, detect, fields_of, undetected_message};
use super::{Collected, CurveImport, Issue, Origin, Place, TableKind, Value};
use crate::registry::CurvePoint;

const SECTIONS: &str = "sites, models, curves, assets";

pub(super) fn parse(name: &str, text: &str, table: Option<TableKind>, collected: &mut Collected) {
    let root: Json = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            collected.issue(Issue::new(
                &Origin::new(name, Place::Line(e.line() as u64)),
                None,
                format!("is not valid JSON: {e}"),
            ));
            return;
        }
    };
    let at_file = Origin::new(name, Place::File);
    match root {
        Json::Object(sections) => {
            if let Some(t) = table {
                collected.issue(Issue::new(
                    &at_file,
                    None,
                    format!(
                        "--table {t} applies to CSV files and JSON arrays of rows; this is a document with sections ({SECTIONS})"
                    ),
                ));
                return;
            }
            for (key, value) in &sections {
                let here = Origin::new(name, Place::Item(key.clone()));
                let Some(table) = section(key) else {
                    collected.issue(Issue::new(
                        &here,
                        None,
                        format!("unknown section; expected {SECTIONS}"),
                    ));
                    continue;
                };
                match value {
                    Json::Array(rows) => rows_of(name, key, table, rows, collected),
                    _ => {
                        collected.issue(Issue::new(&here, None, "expected an array of row objects"))
                    }
                }
            }
        }
        Json::Array(rows) => {
            let table = table.or_else(|| {
                let keys: BTreeSet<String> = rows
                    .iter()
                    .filter_map(Json::as_object)
                    .flat_map(|o| o.keys().map(|k| normalize(k)))
                    .collect();
                detect(&keys.into_iter().collect::<Vec<_>>())
            });
            match table {
                Some(table) => rows_of(name, "", table, &rows, collected),
                None => collected.issue(Issue::new(&at_file, None, undetected_message())),
            }
        }
        _ => collected.issue(Issue::new(
            &at_file,
            None,
            format!("expected a JSON object with sections {SECTIONS}, or an array of rows"),
        )),
    }
}

fn section(key: &str) -> Option<TableKind> {
    match normalize(key).as_str() {
        "sites" => Some(TableKind::Sites),
        "models" | "turbine_models" => Some(TableKind::Models),
        "curves" | "power_curves" => Some(TableKind::Curves),
        "assets" => Some(TableKind::Assets),
        _ => None,
    }
}

fn cell(value: &Json) -> Cell<'_> {
    match value {
        Json::Null => Cell::Empty,
        Json::String(s) => Cell::Text(s),
        Json::Number(n) => n.as_f64().map_or(Cell::Other("number"), Cell::Number),
        Json::Bool(b) => Cell::Bool(*b),
        Json::Array(_) => Cell::Other("array"),
        Json::Object(_) => Cell::Other("object"),
    }
}

fn rows_of(name: &str, section: &str, table: TableKind, rows: &[Json], collected: &mut Collected) {
    let fields = fields_of(table);
    for (i, row) in rows.iter().enumerate() {
        let path = format!("{section}[{i}]");
        let origin = Origin::new(name, Place::Item(path.clone()));
        let Json::Object(object) = row else {
            collected.issue(Issue::new(&origin, None, "expected an object (one row)"));
            continue;
        };
        let mut cells = Vec::with_capacity(object.len());
        let mut seen: HashMap<&str, &str> = HashMap::new();
        let mut curve = None;
        let mut ok = true;
        for (key, value) in object {
            let norm = normalize(key);
            if table == TableKind::Models && (norm == "curve" || norm == "power_curve") {
                curve = Some((key.as_str(), value));
                continue;
            }
            match classify(&norm, fields) {
                Column::Field(j) => {
                    let field = &fields[j];
                    if let Some(first) = seen.insert(field.name, key) {
                        collected.issue(Issue::new(
                            &origin,
                            Some(key),
                            format!("means {} too, like field {first}; keep one", field.name),
                        ));
                        ok = false;
                    }
                    cells.push((field, key.as_str(), cell(value)));
                }
                Column::WrongUnit(j, unit) => {
                    let field = &fields[j];
                    let want = unit_of(field).map_or("", |u| u.label());
                    collected.issue(Issue::new(
                        &origin,
                        Some(key),
                        format!(
                            "{} in {unit} is not accepted: convert the value to {want} and name the field {}",
                            describe(field),
                            field.name
                        ),
                    ));
                    ok = false;
                }
                Column::Unknown => {
                    collected.issue(Issue::new(
                        &origin,
                        Some(key),
                        format!(
                            "is not a field of the {table} table ({}); accepted: {}",
                            table.table_name(),
                            accepted(table)
                        ),
                    ));
                    ok = false;
                }
            }
        }
        if !ok {
            continue;
        }
        let model_id = cells
            .iter()
            .find(|(f, _, _)| f.name == fields[0].name)
            .and_then(|(f, _, c)| match parse_cell(f, *c) {
                Ok(Value::Text(t)) => Some(t),
                _ => None,
            });
        add_row(table, cells, origin, collected);
        if let (Some((key, points)), Some(model_id)) = (curve, model_id) {
            curve_of(name, &format!("{path}.{key}"), model_id, points, collected);
        }
    }
}

/// A model's `curve`: pairs or objects, increasing in wind speed.
fn curve_of(name: &str, path: &str, model_id: String, value: &Json, collected: &mut Collected) {
    let origin = Origin::new(name, Place::Item(path.to_string()));
    let Json::Array(items) = value else {
        collected.issue(Issue::new(
            &origin,
            None,
            "expected an array of [wind_speed_ms, power_kw] pairs or {\"wind_speed_ms\": ..., \"power_kw\": ...} objects",
        ));
        return;
    };
    let (speed_field, power_field) = (&CURVE_FIELDS[1], &CURVE_FIELDS[2]);
    let mut points = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let here = Origin::new(name, Place::Item(format!("{path}[{i}]")));
        let (speed, power) = match item {
            Json::Array(pair) if pair.len() == 2 => (
                ("wind_speed_ms", cell(&pair[0])),
                ("power_kw", cell(&pair[1])),
            ),
            Json::Object(object) => {
                let mut speed = None;
                let mut power = None;
                for (key, value) in object {
                    match classify(&normalize(key), CURVE_FIELDS) {
                        Column::Field(1) => speed = Some((key.as_str(), cell(value))),
                        Column::Field(2) => power = Some((key.as_str(), cell(value))),
                        _ => {
                            collected.issue(Issue::new(
                                &here,
                                Some(key),
                                "is not a field of a curve point; expected wind_speed_ms and power_kw",
                            ));
                            ok = false;
                        }
                    }
                }
                (
                    speed.unwrap_or(("wind_speed_ms", Cell::Empty)),
                    power.unwrap_or(("power_kw", Cell::Empty)),
                )
            }
            _ => {
                collected.issue(Issue::new(
                    &here,
                    None,
                    format!(
                        "expected [wind_speed_ms, power_kw] or an object, found {}",
                        cell(item)
                    ),
                ));
                ok = false;
                continue;
            }
        };
        let mut number = |(label, c): (&str, Cell<'_>), field| match parse_cell(field, c) {
            Ok(Value::Number(n)) => Some(n),
            Ok(_) => {
                collected.issue(Issue::new(&here, Some(label), "is missing"));
                None
            }
            Err(message) => {
                collected.issue(Issue::new(&here, Some(label), message));
                None
            }
        };
        let (Some(wind_speed_ms), Some(power_kw)) =
            (number(speed, speed_field), number(power, power_field))
        else {
            ok = false;
            continue;
        };
        if let Some(last) = points.last().map(|p: &CurvePoint| p.wind_speed_ms) {
            if wind_speed_ms <= last {
                collected.issue(Issue::new(
                    &here,
                    Some("wind_speed_ms"),
                    format!(
                        "power curve of model `{model_id}` is not increasing in wind speed: \
                         {wind_speed_ms} m/s after {last} m/s (sort the points by wind speed, each speed once)"
                    ),
                ));
                ok = false;
                continue;
            }
        }
        points.push(CurvePoint {
            wind_speed_ms,
            power_kw,
        });
    }
    if ok {
        collected.curve(CurveImport {
            model_id,
            points,
            origin,
        });
    }
}
