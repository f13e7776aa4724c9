//! Dead-letter records.
//!
//! A record a service cannot process goes to that service's dead-letter topic
//! (`gale.dlq.<stage>`) with its original key and value bytes unchanged, its
//! original headers, and `gale.dlq.*` headers that say what went wrong and
//! where it came from, so an operator can inspect it and redrive it to the
//! original topic byte for byte. The header names are part of Gale's public
//! interface and are listed in `docs/dead-letters.md`.

use chrono::{SecondsFormat, TimeZone, Utc};
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};

/// Stage (service) that dead-lettered the record, e.g. `validate`.
pub const STAGE: &str = "gale.dlq.stage";
/// Short error class, e.g. `deserialization`, `unknown_asset`, `physical_limit`.
pub const ERROR_CLASS: &str = "gale.dlq.error.class";
/// Human-readable error message.
pub const ERROR_MESSAGE: &str = "gale.dlq.error.message";
/// Topic the record was read from (or, at ingest, the source it arrived from).
pub const ORIGINAL_TOPIC: &str = "gale.dlq.original.topic";
/// Partition it was read from (decimal).
pub const ORIGINAL_PARTITION: &str = "gale.dlq.original.partition";
/// Offset it was read from (decimal).
pub const ORIGINAL_OFFSET: &str = "gale.dlq.original.offset";
/// Kafka timestamp of the original record, RFC 3339 UTC.
pub const ORIGINAL_TIMESTAMP: &str = "gale.dlq.original.timestamp";
/// How many times processing was attempted (decimal).
pub const ATTEMPTS: &str = "gale.dlq.attempts";
/// When the record was dead-lettered, RFC 3339 UTC.
pub const TIME: &str = "gale.dlq.time";

/// Set (`true`) when the dead letter holds only the start of the original
/// value: the whole record was larger than the broker takes. The original
/// is still at its topic, partition and offset (the headers above).
pub const PAYLOAD_TRUNCATED: &str = "gale.dlq.payload.truncated";
/// The original value's size in bytes, when it was truncated.
pub const PAYLOAD_SIZE: &str = "gale.dlq.payload.size";

/// Set by `gale dlq redrive` on a record it sends back: the stage that
/// dead-lettered it. Other consumers of the topic have processed the
/// original already, so only that stage takes the record again; the header
/// never travels on to a stage's outputs.
pub const REDRIVE_STAGE: &str = "gale.redrive.stage";

/// True when `headers` say the record was redriven for a stage other than `stage`.
pub fn redriven_for_another_stage(headers: Option<&BorrowedHeaders>, stage: &str) -> bool {
    headers.is_some_and(|h| {
        h.iter()
            .any(|x| x.key == REDRIVE_STAGE && x.value.is_some_and(|v| v != stage.as_bytes()))
    })
}

/// Every dead-letter header name, in the order they are written.
pub const ALL_HEADERS: [&str; 9] = [
    STAGE,
    ERROR_CLASS,
    ERROR_MESSAGE,
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP,
    ATTEMPTS,
    TIME,
];

/// Where a dead-lettered record came from.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// Source topic (or ingest source name).
    pub topic: &'a str,
    /// Source partition; `None` for records that never were on a topic.
    pub partition: Option<i32>,
    /// Source offset; `None` for records that never were on a topic.
    pub offset: Option<i64>,
    /// Kafka timestamp in ms, if any.
    pub timestamp_ms: Option<i64>,
}

/// Why a record was dead-lettered.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    /// Stage name.
    pub stage: &'a str,
    /// Error class.
    pub class: &'a str,
    /// Message.
    pub message: &'a str,
    /// Attempts made.
    pub attempts: u32,
}

/// Headers for a dead-letter record: the original headers followed by the
/// `gale.dlq.*` ones (any stale `gale.dlq.*` from an earlier trip are dropped).
pub fn headers(
    original: Option<&BorrowedHeaders>,
    origin: &Origin<'_>,
    failure: &Failure<'_>,
) -> OwnedHeaders {
    use rdkafka::message::Headers;
    let mut out = OwnedHeaders::new();
    if let Some(h) = original {
        for header in h.iter() {
            out = out.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    append(out, origin, failure)
}

/// `headers` (minus any stale `gale.dlq.*`) followed by the `gale.dlq.*` ones.
pub fn append(headers: OwnedHeaders, origin: &Origin<'_>, failure: &Failure<'_>) -> OwnedHeaders {
    use rdkafka::message::Headers;
    let mut out = OwnedHeaders::new_with_capacity(headers.count() + ALL_HEADERS.len());
    for header in headers.iter() {
        if header.key.starts_with("gale.dlq.") {
            continue;
        }
        out = out.insert(Header {
            key: header.key,
            value: header.value,
        });
    }
    let partition = origin.partition.map(|p| p.to_string()).unwrap_or_default();
    let offset = origin.offset.map(|o| o.to_string()).unwrap_or_default();
    let timestamp = origin
        .timestamp_ms
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default();
    let attempts = failure.attempts.to_string();
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let pairs: [(&str, &str); 9] = [
        (STAGE, failure.stage),
        (ERROR_CLASS, failure.class),
        (ERROR_MESSAGE, failure.message),
        (ORIGINAL_TOPIC, origin.topic),
        (ORIGINAL_PARTITION, &partition),
        (ORIGINAL_OFFSET, &offset),
        (ORIGINAL_TIMESTAMP, &timestamp),
        (ATTEMPTS, &attempts),
        (TIME, &now),
    ];
    for (key, value) in pairs {
        out = out.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn writes_every_header() {
        let h = headers(
            None,
            &Origin {
                topic: "gale.raw",
                partition: Some(2),
                offset: Some(41),
                timestamp_ms: Some(0),
            },
            &Failure {
                stage: "validate",
                class: "unknown_asset",
                message: "asset X is not registered",
                attempts: 1,
            },
        );
        let get = |k: &str| {
            h.iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        for name in ALL_HEADERS {
            assert!(get(name).is_some(), "{name} missing");
        }
        assert_eq!(get(ORIGINAL_OFFSET).as_deref(), Some("41"));
        assert_eq!(
            get(ORIGINAL_TIMESTAMP).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
    }
}
