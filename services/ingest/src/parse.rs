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

/// Why an input as a whole cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// It is not what its format says (not UTF-8, not JSON, no CSV header).
    Unreadable(String),
    /// It holds more rows than one input may.
    TooManyRows(usize),
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputError::Unreadable(e) => f.write_str(e),
            InputError::TooManyRows(max) => {
                write!(f, "the input holds more than {max} rows; split it")
            }
        }
    }
}

impl From<String> for InputError {
    fn from(e: String) -> Self {
        InputError::Unreadable(e)
    }
}

/// The UTF-8 byte order mark some tools write first.
const BOM: &str = "\u{feff}";

/// Splits `body` into at most `max_rows` rows. `Err` means the input as a
/// whole is unreadable or too long; reading stops at the first row too many,
/// so memory stays bounded by `max_rows` whatever the input. A UTF-8 byte
/// order mark is skipped.
pub fn rows_limited(
    format: Format,
    body: &[u8],
    max_rows: usize,
) -> Result<Vec<ParsedRow>, InputError> {
    let text = std::str::from_utf8(body).map_err(|e| format!("input is not UTF-8: {e}"))?;
    let mut reader = RowReader::limited(format, text, max_rows)?;
    let mut out = Vec::new();
    loop {
        let chunk = reader.next_chunk(CHUNK.min(max_rows.saturating_add(1) - out.len()))?;
        if chunk.is_empty() {
            return Ok(out);
        }
        out.extend(chunk);
        if out.len() > max_rows {
            return Err(InputError::TooManyRows(max_rows));
        }
    }
}

/// The elements of a JSON array, at most `max` of them.
struct Elements {
    max: usize,
}

const TOO_MANY: &str = "gale: too many rows";

impl<'de> serde::de::DeserializeSeed<'de> for Elements {
    type Value = Vec<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Elements {
    type Value = Vec<&'de RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<&RawValue>()? {
            if out.len() == self.max {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            out.push(item);
        }
        Ok(out)
    }
}

/// Rows read at a time by [`rows_limited`].
const CHUNK: usize = 5000;

/// Reads an input's rows a chunk at a time, so a large file is never all in
/// memory as rows (only as bytes).
pub struct RowReader<'a> {
    /// The input, without a byte order mark.
    text: &'a str,
    /// Bytes skipped at the start (the byte order mark).
    offset: usize,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Csv {
        reader: csv::Reader<&'a [u8]>,
        headers: Vec<String>,
        /// (byte, line at that byte), for counting lines from bytes.
        counted: (usize, usize),
        done: bool,
    },
    Ndjson {
        /// Byte where the next line starts.
        at: usize,
        /// Its 1-based line number.
        line: usize,
    },
    Json {
        items: std::vec::IntoIter<&'a RawValue>,
        index: usize,
    },
    Object(Option<&'a str>),
}

impl<'a> RowReader<'a> {
    /// A reader of `full` in `format`. `Err` when the input as a whole
    /// cannot be read (no CSV header, JSON that does not parse).
    pub fn new(format: Format, full: &'a str) -> Result<Self, InputError> {
        Self::limited(format, full, usize::MAX)
    }

    /// Like [`RowReader::new`]; a JSON array of more than `max_rows`
    /// elements is refused before its elements are even collected.
    pub fn limited(format: Format, full: &'a str, max_rows: usize) -> Result<Self, InputError> {
        let text = full.strip_prefix(BOM).unwrap_or(full);
        let offset = full.len() - text.len();
        let kind = match format {
            Format::Csv => {
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
                    return Err(InputError::Unreadable("CSV input has no header row".into()));
                }
                Kind::Csv {
                    reader,
                    headers,
                    counted: (0, 1),
                    done: false,
                }
            }
            Format::Ndjson => Kind::Ndjson { at: 0, line: 1 },
            Format::Json if looks_like_ndjson(text) => Kind::Ndjson { at: 0, line: 1 },
            Format::Json => {
                let value: &RawValue = serde_json::from_str(text)
                    .map_err(|e| format!("body is not valid JSON: {e}"))?;
                let trimmed = value.get();
                if trimmed.starts_with('[') {
                    let mut d = serde_json::Deserializer::from_str(trimmed);
                    let items =
                        serde::de::DeserializeSeed::deserialize(Elements { max: max_rows }, &mut d)
                            .map_err(|e| {
                                if e.to_string().starts_with(TOO_MANY) {
                                    InputError::TooManyRows(max_rows)
                                } else {
                                    InputError::Unreadable(format!("body is not valid JSON: {e}"))
                                }
                            })?;
                    Kind::Json {
                        items: items.into_iter(),
                        index: 0,
                    }
                } else {
                    match serde_json::from_str::<Value>(trimmed) {
                        Ok(Value::Object(_)) => Kind::Object(Some(trimmed)),
                        Ok(other) => {
                            return Err(format!(
                                "expected a JSON object or array, found {}",
                                kind(&other)
                            )
                            .into())
                        }
                        Err(e) => return Err(format!("body is not valid JSON: {e}").into()),
                    }
                }
            }
        };
        Ok(RowReader { text, offset, kind })
    }

    /// Up to `n` more rows; empty when the input is read to its end.
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<ParsedRow>, InputError> {
        let text = self.text;
        let mut out = Vec::with_capacity(n.min(CHUNK));
        match &mut self.kind {
            Kind::Csv {
                reader,
                headers,
                counted,
                done,
            } => {
                let mut record = csv::StringRecord::new();
                while out.len() < n && !*done {
                    let at = reader.position().byte() as usize;
                    // The record starts after the line end the reader
                    // stopped in; lines are counted here, from the bytes
                    // (the csv reader's count lags by one with CRLF).
                    let start = at
                        + text.as_bytes()[at.min(text.len())..]
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                    let start = start.min(text.len());
                    if start >= counted.0 {
                        counted.1 += text.as_bytes()[counted.0..start]
                            .iter()
                            .filter(|b| **b == b'\n')
                            .count();
                        counted.0 = start;
                    }
                    let line = counted.1;
                    match reader.read_record(&mut record) {
                        Ok(false) => *done = true,
                        Ok(true) => {
                            let end = reader.position().byte() as usize;
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
                            if end <= at {
                                *done = true;
                            }
                        }
                    }
                }
            }
            Kind::Ndjson { at, line } => {
                while out.len() < n && *at < text.len() {
                    let rest = &text[*at..];
                    let len = rest.find('\n').map_or(rest.len(), |i| i + 1);
                    let range = *at..*at + len;
                    let this = *line;
                    *at += len;
                    *line += 1;
                    let trimmed = text[range.clone()].trim();
                    if trimmed.is_empty() {
                        continue;
                    }
                    let fields = serde_json::from_str::<Value>(trimmed)
                        .map_err(|e| format!("not valid JSON: {e}"))
                        .and_then(object_fields);
                    out.push(ParsedRow {
                        position: Position::Line(this),
                        bytes: range,
                        fields,
                    });
                }
            }
            Kind::Json { items, index } => {
                for item in items.by_ref().take(n) {
                    out.push(ParsedRow {
                        position: Position::Index(*index),
                        bytes: span(text, item.get()),
                        fields: serde_json::from_str::<Value>(item.get())
                            .map_err(|e| format!("not valid JSON: {e}"))
                            .and_then(object_fields),
                    });
                    *index += 1;
                }
            }
            Kind::Object(object) => {
                if let Some(o) = object.take() {
                    out.push(ParsedRow {
                        position: Position::Index(0),
                        bytes: span(text, o),
                        fields: serde_json::from_str::<Value>(o)
                            .map_err(|e| format!("not valid JSON: {e}"))
                            .and_then(object_fields),
                    });
                }
            }
        }
        if self.offset > 0 {
            for r in &mut out {
                r.bytes = r.bytes.start + self.offset..r.bytes.end + self.offset;
            }
        }
        Ok(out)
    }
}

/// Splits `body` into rows (at most a million). `Err` means the input as a
/// whole is unreadable.
pub fn rows(format: Format, body: &[u8]) -> Result<Vec<ParsedRow>, String> {
    rows_limited(format, body, 1_000_000).map_err(|e| e.to_string())
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

    #[test]
    fn line_numbers_with_crlf_and_a_bom() {
        for nl in ["\n", "\r\n"] {
            let body = format!("\u{feff}asset_id,timestamp,power{nl}A,1,2{nl}B,3{nl}\"C,5,6{nl}");
            let r = rows(Format::Csv, body.as_bytes()).unwrap();
            let lines: Vec<Position> = r.iter().map(|r| r.position).collect();
            assert_eq!(lines[..2], [Position::Line(2), Position::Line(3)], "{nl:?}");
            if let Some(bad) = r.get(2) {
                assert_eq!(bad.position, Position::Line(4), "{nl:?}: {:?}", bad.fields);
            }
            assert_eq!(&body[r[0].bytes.clone()].trim_end(), &"A,1,2");
        }
        let json = "\u{feff}[{\"a\": 1}]";
        assert_eq!(rows(Format::Json, json.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn row_limits_stop_reading_early() {
        let csv = format!("a\n{}", "x\n".repeat(11));
        assert_eq!(
            rows_limited(Format::Csv, csv.as_bytes(), 10).unwrap_err(),
            InputError::TooManyRows(10)
        );
        assert_eq!(
            rows_limited(Format::Csv, csv.as_bytes(), 11).unwrap().len(),
            11
        );
        let json = format!("[{}1]", "1,".repeat(10));
        assert_eq!(
            rows_limited(Format::Json, json.as_bytes(), 10).unwrap_err(),
            InputError::TooManyRows(10)
        );
        assert_eq!(
            rows_limited(Format::Json, json.as_bytes(), 11)
                .unwrap()
                .len(),
            11
        );
        let nd = "{}\n".repeat(11);
        assert_eq!(
            rows_limited(Format::Ndjson, nd.as_bytes(), 10).unwrap_err(),
            InputError::TooManyRows(10)
        );
    }
}
