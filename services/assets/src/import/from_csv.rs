//! CSV tables: one table per file, told by the header (or `--table`);
//! comma, semicolon or tab separated, as spreadsheets save them.

use std::collections::HashMap;

use super::fields::{classify, normalize, unit_of, Cell, Column, Field};
use super::{accepted, add_row, detect, fields_of, undetected_message};
use super::{Collected, Issue, Origin, Place, TableKind};

pub(super) fn parse(name: &str, text: &str, table: Option<TableKind>, collected: &mut Collected) {
    let text = text.trim_start_matches('\u{feff}');
    let delimiter = sniff(text.lines().next().unwrap_or(""));
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header_at = Origin::new(name, Place::Line(1));
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            collected.issue(Issue::new(
                &header_at,
                None,
                format!("cannot read the header: {e}"),
            ));
            return;
        }
    };
    let normalized: Vec<String> = headers.iter().map(normalize).collect();
    let Some(table) = table.or_else(|| detect(&normalized)) else {
        collected.issue(Issue::new(&header_at, None, undetected_message()));
        return;
    };
    let fields = fields_of(table);
    let mut columns: Vec<Option<&'static Field>> = Vec::with_capacity(headers.len());
    let mut header_ok = true;
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (label, norm) in headers.iter().zip(&normalized) {
        if norm.is_empty() {
            // Spreadsheets add unnamed columns; values under them are refused per row.
            columns.push(None);
            continue;
        }
        match classify(norm, fields) {
            Column::Field(i) => {
                let field = &fields[i];
                if let Some(first) = seen.insert(field.name, label) {
                    collected.issue(Issue::new(
                        &header_at,
                        Some(label),
                        format!("means {} too, like column {first}; keep one", field.name),
                    ));
                    header_ok = false;
                }
                columns.push(Some(field));
            }
            Column::WrongUnit(i, unit) => {
                let field = &fields[i];
                let want = unit_of(field).map_or("", |u| u.label());
                collected.issue(Issue::new(
                    &header_at,
                    Some(label),
                    format!(
                        "{} in {unit} is not accepted: convert the values to {want} and name the column {}",
                        describe(field),
                        field.name
                    ),
                ));
                header_ok = false;
                columns.push(None);
            }
            Column::Unknown => {
                collected.issue(Issue::new(
                    &header_at,
                    Some(label),
                    format!(
                        "is not a column of the {table} table ({}); accepted: {}",
                        table.table_name(),
                        accepted(table)
                    ),
                ));
                header_ok = false;
                columns.push(None);
            }
        }
    }
    let required: &[usize] = match table {
        TableKind::Curves => &[0, 1, 2],
        _ => &[0],
    };
    for &i in required {
        if !seen.contains_key(fields[i].name) {
            collected.issue(Issue::new(
                &header_at,
                None,
                format!(
                    "has no {} column, which the {table} table needs",
                    fields[i].name
                ),
            ));
            header_ok = false;
        }
    }
    if !header_ok {
        return;
    }
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                collected.issue(Issue::new(
                    &Origin::new(name, Place::Line(line)),
                    None,
                    format!("cannot read the row: {e}"),
                ));
                continue;
            }
        };
        let origin = Origin::new(name, Place::Line(record.position().map_or(0, |p| p.line())));
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != headers.len() {
            collected.issue(Issue::new(
                &origin,
                None,
                format!(
                    "has {} fields, the header has {}",
                    record.len(),
                    headers.len()
                ),
            ));
            continue;
        }
        let mut stray = false;
        for ((column, norm), cell) in columns.iter().zip(&normalized).zip(record.iter()) {
            if column.is_none() && norm.is_empty() && !cell.is_empty() {
                collected.issue(Issue::new(
                    &origin,
                    None,
                    format!("value {cell:?} is under a column with no name"),
                ));
                stray = true;
            }
        }
        if stray {
            continue;
        }
        let cells = columns
            .iter()
            .zip(headers.iter())
            .zip(record.iter())
            .filter_map(|((field, label), cell)| {
                let cell = if cell.is_empty() {
                    Cell::Empty
                } else {
                    Cell::Text(cell)
                };
                field.map(|f| (f, label, cell))
            });
        add_row(table, cells, origin, collected);
    }
}

/// `rated_power_kw` → `rated power`.
pub(super) fn describe(field: &Field) -> String {
    let base = match unit_of(field) {
        Some(u) => field
            .name
            .strip_suffix(&format!("_{}", u.suffix()))
            .unwrap_or(field.name),
        None => field.name,
    };
    base.replace('_', " ")
}

/// The separator of the header line: the most frequent of `,`, `;` and tab.
fn sniff(header: &str) -> u8 {
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| (header.bytes().filter(|b| b == d).count(), *d == b','))
        .unwrap_or(b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_are_sniffed() {
        assert_eq!(sniff("a,b,c"), b',');
        assert_eq!(sniff("a;b;c"), b';');
        assert_eq!(sniff("a\tb"), b'\t');
        assert_eq!(sniff("a"), b',');
    }
}
