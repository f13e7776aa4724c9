//! Request bodies and dropped files to rows: JSON (an object or an array of
//! objects), NDJSON, and CSV with a header row. A JSON body or `.json` file
//! that is really NDJSON is read as NDJSON.
//!
//! Every row keeps where it came from (line or array index) and its original
//! bytes, so a bad row can be reported to the sender by line, or
//! dead-lettered byte for byte, while the good rows go on.

use std::ops::Range;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::mapping::{Field, Row};

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object or an array of objects (NDJSON sent as JSON is
    /// read as NDJSON).
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated values with a header row.
    Csv,
}

impl Format {
    /// From an HTTP content type; sniffs the body when absent or generic.
    pub fn from_content_type(content_type: Option<&str>, body: &[u8]) -> Option<Format> {
        let ct = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        match ct.as_str() {
            "application/json" => Some(Format::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Some(Format::Ndjson),
            "text/csv" | "application/csv" => Some(Format::Csv),
            "" | "text/plain" | "application/octet-stream" => sniff(body),
            _ => None,
        }
    }

    /// From a file name's extension.
    pub fn from_path(path: &str) -> Option<Format> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(Format::Csv)
        } else if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
            Some(Format::Ndjson)
        } else if lower.ends_with(".json") {
            Some(Format::Json)
        } else {
            None
        }
    }
}

fn sniff(body: &[u8]) -> Option<Format> {
    let text = std::str::from_utf8(body).ok()?.trim_start();
    if text.starts_with('[') {
        return Some(Format::Json);
    }
    if text.starts_with('{') {
        return Some(if looks_like_ndjson(text) {
            Format::Ndjson
        } else {
            Format::Json
        });
    }
    Some(Format::Csv)
}

/// Where a row was in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Position {
    /// 1-based line (CSV, NDJSON).
    #[serde(rename = "line")]
    Line(usize),
    /// 0-based index in a JSON array.
    #[serde(rename = "index")]
    Index(usize),
}

/// One row, parsed or not.
#[derive(Debug, Clone)]
pub struct ParsedRow {
    /// Where it was.
    pub position: Position,
    /// Byte range of the row in the input.
    pub bytes: Range<usize>,
    /// Its fields, or why they could not be read.
    pub fields: Result<Row, String>,
}

/// Splits `body` into rows. `Err` means the input as a whole is unreadable.
pub fn rows(format: Format, body: &[u8]) -> Result<Vec<ParsedRow>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("input is not UTF-8: {e}"))?;
    match format {
        Format::Json => json_rows(text),
        Format::Ndjson => Ok(ndjson_rows(text)),
        Format::Csv => csv_rows(text),
    }
}

/// The fields of one JSON object.
pub fn object_fields(value: Value) -> Result<Row, String> {
    match value {
        Value::Object(map) => Ok(map
            .into_iter()
            .map(|(k, v)| {
                let f = match v {
                    Value::Null => Field::Null,
                    Value::Number(n) => n.as_f64().map(Field::Number).unwrap_or(Field::Null),
                    Value::String(s) => Field::Text(s),
                    Value::Bool(b) => Field::Text(b.to_string()),
                    other => Field::Text(other.to_string()),
                };
                (k, f)
            })
            .collect()),
        other => Err(format!("expected a JSON object, found {}", kind(&other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn json_rows(text: &str) -> Result<Vec<ParsedRow>, String> {
    if looks_like_ndjson(text) {
        return Ok(ndjson_rows(text));
    }
    let value: &RawValue =
        serde_json::from_str(text).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let trimmed = value.get();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(trimmed).map_err(|e| format!("body is not valid JSON: {e}"))?;
        return Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, item)| ParsedRow {
                position: Position::Index(i),
                bytes: span(text, item.get()),
                fields: serde_json::from_str::<Value>(item.get())
                    .map_err(|e| format!("not valid JSON: {e}"))
                    .and_then(object_fields),
            })
            .collect());
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(value @ Value::Object(_)) => Ok(vec![ParsedRow {
            position: Position::Index(0),
            bytes: span(text, trimmed),
            fields: object_fields(value),
        }]),
        Ok(other) => Err(format!(
            "expected a JSON object or array, found {}",
            kind(&other)
        )),
        Err(e) => Err(format!("body is not valid JSON: {e}")),
    }
}

/// Where `part` (a slice of `text`) lies in `text`.
fn span(text: &str, part: &str) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    let start = start.min(text.len());
    start..(start + part.len()).min(text.len())
}

/// NDJSON sent as JSON: the first non-empty line is a whole JSON object and
/// more follows it. A pretty-printed object's first line (`{`) is not whole.
fn looks_like_ndjson(text: &str) -> bool {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(first) = lines.next() else {
        return false;
    };
    first.starts_with('{')
        && lines.next().is_some()
        && serde_json::from_str::<&RawValue>(first).is_ok()
}

fn ndjson_rows(text: &str) -> Vec<ParsedRow> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let range = start..start + line.len();
        start += line.len();
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let fields = serde_json::from_str::<Value>(trimmed)
            .map_err(|e| format!("not valid JSON: {e}"))
            .and_then(object_fields);
        out.push(ParsedRow {
            position: Position::Line(i + 1),
            bytes: range,
            fields,
        });
    }
    out
}

fn csv_rows(text: &str) -> Result<Vec<ParsedRow>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("cannot read the CSV header row: {e}"))?
        .iter()
        .map(str::to_string)
        .collect();
    if headers.is_empty() || headers.iter().all(String::is_empty) {
        return Err("CSV input has no header row".into());
    }
    let mut out = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let start = reader.position().byte() as usize;
        let line = reader.position().line() as usize;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let end = reader.position().byte() as usize;
                let line = record.position().map(|p| p.line() as usize).unwrap_or(line);
                let fields = if record.len() != headers.len() {
                    Err(format!(
                        "expected {} fields, found {}",
                        headers.len(),
                        record.len()
                    ))
                } else {
                    Ok(headers
                        .iter()
                        .zip(record.iter())
                        .map(|(h, v)| (h.clone(), Field::Text(v.to_string())))
                        .collect())
                };
                out.push(ParsedRow {
                    position: Position::Line(line),
                    bytes: start..end.min(text.len()),
                    fields,
                });
            }
            Err(e) => {
                let end = reader.position().byte() as usize;
                out.push(ParsedRow {
                    position: Position::Line(line),
                    bytes: start..end.min(text.len()),
                    fields: Err(format!("unreadable CSV row: {e}")),
                });
                if end <= start {
                    break;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_keep_lines_and_bytes() {
        let body = "asset_id,timestamp,power\nA,1,2\nB,3\nC,5,6\n";
        let rows = rows(Format::Csv, body.as_bytes()).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].position, Position::Line(2));
        assert_eq!(&body[rows[0].bytes.clone()], "A,1,2\n");
        assert!(rows[1]
            .fields
            .as_ref()
            .unwrap_err()
            .contains("expected 3 fields"));
        assert_eq!(&body[rows[1].bytes.clone()], "B,3\n");
        assert_eq!(rows[2].position, Position::Line(4));
    }

    #[test]
    fn json_object_array_and_ndjson() {
        assert_eq!(rows(Format::Json, br#"{"a":1}"#).unwrap().len(), 1);
        let arr = rows(Format::Json, br#"[{"a":1}, 5]"#).unwrap();
        assert!(arr[1].fields.as_ref().unwrap_err().contains("a number"));
        let nd = "{\"a\":1}\n\n{oops\n{\"b\":null}\n";
        let r = rows(Format::Ndjson, nd.as_bytes()).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].position, Position::Line(3));
        assert_eq!(&nd[r[1].bytes.clone()], "{oops\n");
        assert!(rows(Format::Json, b"{not json").is_err());
        assert!(rows(Format::Csv, &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn json_array_elements_keep_their_own_bytes() {
        let body =
            "[\n  {\"asset_id\": \"A\", \"power\": 1},\n  5 ,{\"b\": [1, {\"c\": 2}]},\"x\"\n]\n";
        let r = rows(Format::Json, body.as_bytes()).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(
            &body[r[0].bytes.clone()],
            "{\"asset_id\": \"A\", \"power\": 1}"
        );
        assert_eq!(&body[r[1].bytes.clone()], "5");
        assert_eq!(&body[r[2].bytes.clone()], "{\"b\": [1, {\"c\": 2}]}");
        assert_eq!(&body[r[3].bytes.clone()], "\"x\"");
        assert_eq!(r[2].position, Position::Index(2));
        assert!(r[1].fields.is_err() && r[3].fields.is_err());
        let single = " {\"a\": 1}\n";
        let r = rows(Format::Json, single.as_bytes()).unwrap();
        assert_eq!(&single[r[0].bytes.clone()], "{\"a\": 1}");
        let e = rows(Format::Json, b"[{\"a\":1},").unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = rows(Format::Json, b"42").unwrap_err();
        assert!(e.contains("a number"), "{e}");
    }

    #[test]
    fn ndjson_sent_as_json_is_read_as_ndjson() {
        let body = "{\"a\": 1}\n{\"a\": 2}\n\n{broken\n";
        let r = rows(Format::Json, body.as_bytes()).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].position, Position::Line(2));
        assert!(r[1].fields.is_ok());
        assert_eq!(&body[r[2].bytes.clone()], "{broken\n");
        // A pretty-printed object is one JSON object.
        let pretty = "{\n  \"a\": 1\n}\n";
        let r = rows(Format::Json, pretty.as_bytes()).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].position, Position::Index(0));
        // One object on one line is JSON too.
        assert_eq!(
            rows(Format::Json, b"{\"a\": 1}\n").unwrap()[0].position,
            Position::Index(0)
        );
        assert_eq!(
            Format::from_content_type(Some("application/json"), body.as_bytes()),
            Some(Format::Json)
        );
    }

    #[test]
    fn formats_from_content_type_and_path() {
        assert_eq!(
            Format::from_content_type(Some("text/csv; charset=utf-8"), b""),
            Some(Format::Csv)
        );
        assert_eq!(
            Format::from_content_type(None, b"  [{}]"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_content_type(None, b"{}\n{}\n"),
            Some(Format::Ndjson)
        );
        assert_eq!(Format::from_content_type(Some("image/png"), b""), None);
        assert_eq!(
            Format::from_path("raw/2024/03/15/14/meters.CSV"),
            Some(Format::Csv)
        );
        assert_eq!(Format::from_path("x.parquet"), None);
    }
}
