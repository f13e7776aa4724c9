//! The columns each table accepts, their aliases and units, and how one
//! cell becomes a typed [`Value`].
//!
//! Operators' exports name columns their own way (`Wind Speed (m/s)`,
//! `ws`, `Power [kW]`); headers are normalised and matched against a short
//! alias list so the common spellings load as they are. Units are part of a
//! column's name: a column in another unit (`power_w`, `hub_height_ft`) is
//! refused by name rather than silently read as kW or m.

use std::str::FromStr;

use chrono::NaiveDate;
use gale_model::AssetKind;

use super::{TableKind, Value};

/// The unit a numeric column must be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Kw,
    Ms,
    M,
}

impl Unit {
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Unit::Kw => "kw",
            Unit::Ms => "ms",
            Unit::M => "m",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Unit::Kw => "kW",
            Unit::Ms => "m/s",
            Unit::M => "m",
        }
    }

    /// Header suffixes of other units of the same quantity, with their names.
    fn others(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Unit::Kw => &[
                ("w", "W"),
                ("watt", "W"),
                ("watts", "W"),
                ("mw", "MW"),
                ("gw", "GW"),
                ("kva", "kVA"),
                ("mva", "MVA"),
                ("hp", "hp"),
            ],
            Unit::Ms => &[
                ("kmh", "km/h"),
                ("km_h", "km/h"),
                ("kph", "km/h"),
                ("mph", "mph"),
                ("kn", "knots"),
                ("kt", "knots"),
                ("kts", "knots"),
                ("knots", "knots"),
                ("fts", "ft/s"),
            ],
            Unit::M => &[
                ("ft", "ft"),
                ("feet", "ft"),
                ("cm", "cm"),
                ("mm", "mm"),
                ("km", "km"),
            ],
        }
    }
}

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// The row's key: required, non-empty text.
    Id,
    /// Free text; empty means none.
    Text,
    /// An IANA time zone name.
    TimeZone,
    /// A number above 0 in the unit.
    Positive(Unit),
    /// A number of 0 or more in the unit.
    NonNegative(Unit),
    Latitude,
    Longitude,
    Kind,
    Date,
    Bool,
}

/// One accepted column.
#[derive(Debug)]
pub(crate) struct Field {
    /// Canonical name: the table's column.
    pub name: &'static str,
    /// Other spellings accepted (after normalisation).
    pub aliases: &'static [&'static str],
    pub ty: Ty,
}

const fn f(name: &'static str, aliases: &'static [&'static str], ty: Ty) -> Field {
    Field { name, aliases, ty }
}

const LAT: &[&str] = &["lat", "latitude_deg"];
const LON: &[&str] = &["lon", "lng", "long", "longitude_deg"];
const HUB: &[&str] = &["hub_height", "hub_m"];
const ROTOR: &[&str] = &["rotor_diameter", "rotor_m", "rotor"];

pub(crate) static SITE_FIELDS: &[Field] = &[
    f("site_id", &["site"], Ty::Id),
    f("name", &["site_name"], Ty::Text),
    f("time_zone", &["timezone", "tz"], Ty::TimeZone),
    f("latitude", LAT, Ty::Latitude),
    f("longitude", LON, Ty::Longitude),
];

pub(crate) static MODEL_FIELDS: &[Field] = &[
    f(
        "model_id",
        &["model", "turbine_model", "model_name"],
        Ty::Id,
    ),
    f("manufacturer", &["make", "vendor", "oem"], Ty::Text),
    f(
        "rated_power_kw",
        &[
            "rated_power",
            "rated_kw",
            "nominal_power_kw",
            "nominal_power",
        ],
        Ty::Positive(Unit::Kw),
    ),
    f(
        "cut_in_wind_speed_ms",
        &[
            "cut_in_wind_speed",
            "cut_in_speed_ms",
            "cut_in_speed",
            "cut_in_ms",
            "cut_in",
        ],
        Ty::Positive(Unit::Ms),
    ),
    f(
        "rated_wind_speed_ms",
        &["rated_wind_speed", "rated_speed_ms", "rated_speed"],
        Ty::Positive(Unit::Ms),
    ),
    f(
        "cut_out_wind_speed_ms",
        &[
            "cut_out_wind_speed",
            "cut_out_speed_ms",
            "cut_out_speed",
            "cut_out_ms",
            "cut_out",
        ],
        Ty::Positive(Unit::Ms),
    ),
    f("rotor_diameter_m", ROTOR, Ty::Positive(Unit::M)),
    f("hub_height_m", HUB, Ty::Positive(Unit::M)),
];

pub(crate) static CURVE_FIELDS: &[Field] = &[
    f(
        "model_id",
        &["model", "turbine_model", "model_name"],
        Ty::Id,
    ),
    f(
        "wind_speed_ms",
        &["wind_speed", "ws", "speed", "windspeed", "wind_ms"],
        Ty::NonNegative(Unit::Ms),
    ),
    f(
        "power_kw",
        &["power", "kw", "output_kw", "active_power_kw"],
        Ty::NonNegative(Unit::Kw),
    ),
];

pub(crate) static ASSET_FIELDS: &[Field] = &[
    f(
        "asset_id",
        &["asset", "turbine_id", "meter_id", "turbine"],
        Ty::Id,
    ),
    f("kind", &["asset_kind", "type", "asset_type"], Ty::Kind),
    f("site_id", &["site", "wind_farm", "farm"], Ty::Text),
    f("model_id", &["model", "turbine_model"], Ty::Text),
    f("latitude", LAT, Ty::Latitude),
    f("longitude", LON, Ty::Longitude),
    f("capacity_kw", &["capacity"], Ty::Positive(Unit::Kw)),
    f(
        "rated_power_kw",
        &["rated_power", "rated_kw"],
        Ty::Positive(Unit::Kw),
    ),
    f("hub_height_m", HUB, Ty::Positive(Unit::M)),
    f("rotor_diameter_m", ROTOR, Ty::Positive(Unit::M)),
    f(
        "contracted_capacity_kw",
        &["contracted_capacity", "contracted_kw"],
        Ty::Positive(Unit::Kw),
    ),
    f(
        "commissioned_on",
        &[
            "commissioned",
            "commissioning_date",
            "commissioned_date",
            "commission_date",
        ],
        Ty::Date,
    ),
    f(
        "feeder_id",
        &["feeder", "neighbourhood", "neighborhood"],
        Ty::Text,
    ),
    f("vacant", &["is_vacant"], Ty::Bool),
];

/// The accepted columns of `table`.
pub(crate) fn fields_of(table: TableKind) -> &'static [Field] {
    match table {
        TableKind::Sites => SITE_FIELDS,
        TableKind::Models => MODEL_FIELDS,
        TableKind::Curves => CURVE_FIELDS,
        TableKind::Assets => ASSET_FIELDS,
    }
}

/// The unit a numeric field is in.
pub(crate) fn unit_of(field: &Field) -> Option<Unit> {
    match field.ty {
        Ty::Positive(u) | Ty::NonNegative(u) => Some(u),
        _ => None,
    }
}

/// `Wind Speed (m/s)` → `wind_speed_ms`, `Power [kW]` → `power_kw`.
pub(crate) fn normalize(header: &str) -> String {
    let lower = header.trim().trim_start_matches('\u{feff}').to_lowercase();
    let lower = lower
        .replace("m/s", "ms")
        .replace("km/h", "kmh")
        .replace("ft/s", "fts");
    let mut out = String::with_capacity(lower.len());
    for c in lower.chars() {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// What a (normalised) column name means for a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    /// The field at this index.
    Field(usize),
    /// The field at this index, in another unit (named).
    WrongUnit(usize, &'static str),
    Unknown,
}

/// Matches a normalised column name against `fields`.
pub(crate) fn classify(name: &str, fields: &[Field]) -> Column {
    for (i, field) in fields.iter().enumerate() {
        if field.name == name || field.aliases.contains(&name) {
            return Column::Field(i);
        }
    }
    for (i, field) in fields.iter().enumerate() {
        let Some(unit) = unit_of(field) else {
            continue;
        };
        let suffix = format!("_{}", unit.suffix());
        for accepted in std::iter::once(&field.name).chain(field.aliases) {
            let base = accepted.strip_suffix(&suffix).unwrap_or(accepted);
            for (other, label) in unit.others() {
                if name.strip_prefix(base).and_then(|r| r.strip_prefix('_')) == Some(other) {
                    return Column::WrongUnit(i, label);
                }
            }
        }
    }
    Column::Unknown
}

/// One cell as read from a file, before typing.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    Empty,
    Text(&'a str),
    Number(f64),
    Bool(bool),
    /// A JSON value that cannot be a cell (array, object); its type name.
    Other(&'static str),
}

impl std::fmt::Display for Cell<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Empty => f.write_str("nothing"),
            Cell::Text(t) => write!(f, "{t:?}"),
            Cell::Number(n) => write!(f, "{n}"),
            Cell::Bool(b) => write!(f, "{b}"),
            Cell::Other(kind) => write!(f, "a JSON {kind}"),
        }
    }
}

/// Types one cell; the error says what was expected and what was found.
pub(crate) fn parse_cell(field: &Field, cell: Cell<'_>) -> Result<Value, String> {
    if let Cell::Text(t) = cell {
        if t.trim().is_empty() {
            return parse_cell(field, Cell::Empty);
        }
    }
    if let Cell::Empty = cell {
        return match field.ty {
            Ty::Id => Err("is empty; every row needs its id".into()),
            Ty::Bool => Ok(Value::Bool(false)),
            _ => Ok(Value::Null),
        };
    }
    match field.ty {
        Ty::Id | Ty::Text => match cell {
            Cell::Text(t) => Ok(Value::Text(t.trim().to_string())),
            Cell::Number(n) => Ok(Value::Text(n.to_string())),
            _ => Err(format!("expected text, found {cell}")),
        },
        Ty::TimeZone => {
            let text =
                text_of(cell).ok_or_else(|| format!("expected a time zone name, found {cell}"))?;
            chrono_tz::Tz::from_str(text)
                .map(|tz| Value::Text(tz.name().to_string()))
                .map_err(|_| {
                    format!("{text:?} is not an IANA time zone name (such as Europe/Berlin or UTC)")
                })
        }
        Ty::Positive(unit) => {
            let n = number(cell).filter(|n| *n > 0.0).ok_or_else(|| {
                format!("expected a number above 0 ({}), found {cell}", unit.label())
            })?;
            Ok(Value::Number(n))
        }
        Ty::NonNegative(unit) => {
            let n = number(cell).filter(|n| *n >= 0.0).ok_or_else(|| {
                let what = if number(cell).is_some() {
                    "a negative value"
                } else {
                    "not a number"
                };
                format!(
                    "expected a number of 0 or more ({}), found {cell} ({what})",
                    unit.label()
                )
            })?;
            Ok(Value::Number(n))
        }
        Ty::Latitude => number(cell)
            .filter(|n| (-90.0..=90.0).contains(n))
            .map(Value::Number)
            .ok_or_else(|| format!("expected a latitude from -90 to 90 (degrees), found {cell}")),
        Ty::Longitude => number(cell)
            .filter(|n| (-180.0..=180.0).contains(n))
            .map(Value::Number)
            .ok_or_else(|| {
                format!("expected a longitude from -180 to 180 (degrees), found {cell}")
            }),
        Ty::Kind => {
            let text = text_of(cell)
                .ok_or_else(|| format!("expected `turbine` or `meter`, found {cell}"))?;
            AssetKind::from_str(text).map(Value::Kind)
        }
        Ty::Date => {
            let text =
                text_of(cell).ok_or_else(|| format!("expected a date YYYY-MM-DD, found {cell}"))?;
            NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .map(Value::Date)
                .map_err(|_| format!("expected a date YYYY-MM-DD, found {cell}"))
        }
        Ty::Bool => match cell {
            Cell::Bool(b) => Ok(Value::Bool(b)),
            Cell::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "n" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!(
                    "expected true or false (or yes/no, 1/0), found {cell}"
                )),
            },
            _ => Err(format!("expected true or false, found {cell}")),
        },
    }
}

fn text_of(cell: Cell<'_>) -> Option<&str> {
    match cell {
        Cell::Text(t) => Some(t.trim()),
        _ => None,
    }
}

fn number(cell: Cell<'_>) -> Option<f64> {
    let n = match cell {
        Cell::Number(n) => n,
        Cell::Text(t) => t.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_normalise_and_match_aliases() {
        assert_eq!(normalize("Wind Speed (m/s)"), "wind_speed_ms");
        assert_eq!(normalize("\u{feff} Power [kW] "), "power_kw");
        assert_eq!(normalize("Hub-Height_m"), "hub_height_m");
        assert_eq!(classify("ws", CURVE_FIELDS), Column::Field(1));
        assert_eq!(classify("power", CURVE_FIELDS), Column::Field(2));
        assert_eq!(classify("model", CURVE_FIELDS), Column::Field(0));
        assert_eq!(classify("colour", CURVE_FIELDS), Column::Unknown);
    }

    #[test]
    fn other_units_are_named() {
        assert_eq!(classify("power_w", CURVE_FIELDS), Column::WrongUnit(2, "W"));
        assert_eq!(
            classify(&normalize("Wind speed (km/h)"), CURVE_FIELDS),
            Column::WrongUnit(1, "km/h")
        );
        assert_eq!(
            classify("rated_power_mw", ASSET_FIELDS),
            Column::WrongUnit(7, "MW")
        );
        assert_eq!(
            classify("hub_height_ft", ASSET_FIELDS),
            Column::WrongUnit(8, "ft")
        );
    }

    #[test]
    fn cells_are_typed_with_clear_errors() {
        let power = &CURVE_FIELDS[2];
        assert_eq!(
            parse_cell(power, Cell::Text(" 12.5 ")),
            Ok(Value::Number(12.5))
        );
        let err = parse_cell(power, Cell::Text("-3")).unwrap_err();
        assert!(err.contains("negative") && err.contains("kW"), "{err}");
        let err = parse_cell(power, Cell::Text("abc")).unwrap_err();
        assert!(
            err.contains("\"abc\"") && err.contains("not a number"),
            "{err}"
        );
        let tz = &SITE_FIELDS[2];
        assert_eq!(
            parse_cell(tz, Cell::Text("Europe/Berlin")),
            Ok(Value::Text("Europe/Berlin".into()))
        );
        let err = parse_cell(tz, Cell::Text("Berlin")).unwrap_err();
        assert!(err.contains("IANA"), "{err}");
        let kind = &ASSET_FIELDS[1];
        assert!(parse_cell(kind, Cell::Text("windmill"))
            .unwrap_err()
            .contains("windmill"));
        assert_eq!(
            parse_cell(&ASSET_FIELDS[13], Cell::Text("yes")),
            Ok(Value::Bool(true))
        );
        assert!(parse_cell(&ASSET_FIELDS[0], Cell::Text(" ")).is_err());
        assert!(parse_cell(&ASSET_FIELDS[11], Cell::Text("2024-02-30")).is_err());
        assert!(parse_cell(&ASSET_FIELDS[4], Cell::Number(91.0)).is_err());
    }
}
