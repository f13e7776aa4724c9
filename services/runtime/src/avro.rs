//! Avro in the Confluent wire format (magic byte 0, 4-byte schema id, datum)
//! against any Confluent-compatible schema registry.
//!
//! Registry traffic goes through `schema_registry_converter`; it happens at
//! start (registering the schemas a service produces) and the first time a
//! writer schema id is seen. Per-record encoding and decoding then works from
//! cached, pre-resolved schemas with `apache-avro`'s schema-aware serde, so
//! the hot path makes no registry calls and builds no intermediate `Value`
//! unless a writer schema differs from the reader's and must be resolved.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{post_schema, SrSettings};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{RawError, SchemaType, SuppliedSchema};

use crate::binary::{fast_path_for, AvroRecord};
use crate::config::{RegistryConfig, Secret};
use crate::schema::SchemaFile;
use crate::Error;

/// Subject of a topic's value schema under the default TopicNameStrategy.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Parses one of Gale's schema files, keeping it for the life of the process
/// (resolved schemas borrow it; there are only a handful).
pub fn parse_static(file: SchemaFile) -> Result<&'static Schema, Error> {
    let schema = Schema::parse_str(file.text).map_err(|e| Error::Schema {
        name: file.name.into(),
        message: e.to_string(),
    })?;
    Ok(Box::leak(Box::new(schema)))
}

/// A client of the schema registry.
#[derive(Clone)]
pub struct Registry {
    settings: SrSettings,
    decoder: Arc<AvroDecoder>,
    http: reqwest::Client,
    config: RegistryConfig,
    /// Base URL without credentials: safe to print, used for requests.
    base: String,
    auth: Option<(String, Option<Secret>)>,
}

impl Registry {
    /// A client for the registry in `config`; does not connect yet.
    pub fn new(config: &RegistryConfig) -> Result<Self, Error> {
        let (base, in_url) = config.split_credentials();
        let auth = match (&config.username, in_url) {
            (Some(user), _) => Some((user.clone(), config.password.clone())),
            (None, from_url) => from_url,
        };
        let mut builder = SrSettings::new_builder(base.clone());
        builder.set_timeout(config.timeout);
        if let Some((user, password)) = &auth {
            builder.set_basic_authorization(user, password.as_ref().map(|p| p.expose()));
        }
        let settings = builder.build().map_err(|e| Error::Registry {
            subject: String::new(),
            message: format!("invalid value {base:?} for key `registry.url`: {}", e.error),
            retriable: false,
        })?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::Registry {
                subject: String::new(),
                message: e.to_string(),
                retriable: false,
            })?;
        Ok(Registry {
            decoder: Arc::new(AvroDecoder::new(settings.clone())),
            settings,
            http,
            config: config.clone(),
            base,
            auth,
        })
    }

    /// The base URL, without credentials.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// "registry at … unreachable: …", without credentials.
    fn unreachable(&self, e: &reqwest::Error) -> String {
        format!(
            "registry at {} unreachable: {}",
            self.base,
            redact_reqwest(e)
        )
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, password.as_ref().map(|p| p.expose()));
        }
        request
    }

    /// Checks that the registry answers and accepts our credentials. Uses
    /// `GET /schemas/types`, which is cheap and needs no subject permissions;
    /// a registry that predates it (404) still counts as reachable.
    pub async fn ping(&self) -> Result<(), String> {
        match self
            .request(reqwest::Method::GET, "/schemas/types")
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
                    Ok(())
                } else {
                    Err(format!("registry at {} answered {status}", self.base))
                }
            }
            Err(e) => Err(self.unreachable(&e)),
        }
    }

    /// Registers `file` as the value schema of `topic` (setting the configured
    /// compatibility first if the subject has none) and returns an encoder.
    ///
    /// An incompatible schema is a permanent error naming the subject; an
    /// unreachable or failing registry is reported as retriable.
    pub async fn register(&self, topic: &str, file: SchemaFile) -> Result<Encoder, Error> {
        let subject = value_subject(topic);
        let schema = parse_static(file)?;
        if self.config.set_compatibility {
            self.ensure_compatibility(&subject).await?;
        }
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, file.text.to_string());
        let registered = post_schema(&self.settings, subject.clone(), supplied)
            .await
            .map_err(|e| {
                let failure = RegistryFailure::of(&e);
                Error::Registry {
                    subject: subject.clone(),
                    message: format!("registering {}: {}", file.name, describe_src(&e)),
                    retriable: failure == RegistryFailure::Unavailable,
                }
            })?;
        tracing::info!(subject = %subject, id = registered.id, schema = file.name, "schema registered");
        Encoder::new(registered.id, schema, subject, file)
    }

    /// Sets the configured compatibility on `subject` unless it has its own.
    async fn ensure_compatibility(&self, subject: &str) -> Result<(), Error> {
        let fail = |message: String, retriable: bool| Error::Registry {
            subject: subject.into(),
            message,
            retriable,
        };
        let path = format!("/config/{subject}");
        let current = self
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .map_err(|e| fail(self.unreachable(&e), true))?;
        match current.status().as_u16() {
            200 => {
                let body: serde_json::Value = current.json().await.unwrap_or_default();
                let level = body["compatibilityLevel"]
                    .as_str()
                    .or(body["compatibility"].as_str())
                    .unwrap_or("?");
                tracing::debug!(
                    subject,
                    level,
                    "subject has its own compatibility level; keeping it"
                );
                return Ok(());
            }
            // No subject-level config (40408 / 40401): set ours below.
            404 => {}
            401 | 403 => {
                tracing::warn!(subject, "registry does not let this service read subject config; keeping the registry's setting");
                return Ok(());
            }
            status => {
                return Err(fail(
                    format!("reading the compatibility of {subject} failed with {status}"),
                    status >= 500 || status == 429,
                ))
            }
        }
        let level = self.config.compatibility.to_string();
        let resp = self
            .request(reqwest::Method::PUT, &path)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "compatibility": level }))
            .send()
            .await;
        match resp {
            Ok(resp) if resp.status().is_success() => {
                tracing::info!(subject, level, "compatibility set");
                Ok(())
            }
            Ok(resp) if resp.status().as_u16() == 403 || resp.status().as_u16() == 401 => {
                tracing::warn!(subject, status = %resp.status(), "registry does not let this service set compatibility; keeping the registry's setting");
                Ok(())
            }
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                Err(fail(
                    format!("setting compatibility {level} failed: {status} {body}"),
                    status.is_server_error() || status.as_u16() == 429,
                ))
            }
            Err(e) => Err(fail(self.unreachable(&e), true)),
        }
    }

    /// A decoder that reads any registered writer schema into `T`, whose own
    /// (reader) schema is `reader`.
    pub fn decoder<T: AvroRecord>(&self, reader: SchemaFile) -> Result<Decoder<T>, Error> {
        let reader_schema = parse_static(reader)?;
        Ok(Decoder {
            registry: self.decoder.clone(),
            reader_canonical: reader_schema.canonical_form(),
            reader_file: reader,
            reader_schema,
            plans: HashMap::new(),
            _type: PhantomData,
        })
    }
}

fn describe_src(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{} ({cause})", e.error),
        None => e.error.clone(),
    }
}

/// What went wrong with a request, without its URL.
fn redact_reqwest(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_decode() {
        "unreadable answer"
    } else {
        "request failed"
    }
    .to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How a registry call failed, which decides whether a record is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryFailure {
    /// The registry is down, overloaded, or refuses our credentials: not the
    /// record's fault. Wait and retry.
    Unavailable,
    /// The registry answered that the schema (or subject) does not exist.
    NotFound,
    /// The registry rejected the request for its content (e.g. an incompatible
    /// or invalid schema).
    Rejected,
}

impl RegistryFailure {
    /// Classifies an error of `schema_registry_converter`, which itself only
    /// calls transport errors and 502/503 retriable.
    pub fn of(e: &SRCError) -> RegistryFailure {
        if e.retriable || transient_cause(e) {
            return RegistryFailure::Unavailable;
        }
        let code = std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<RawError>())
            .map(|raw| raw.error_code)
            .unwrap_or(0);
        let status = http_status_in(&e.error);
        match (status, code) {
            // Confluent's "schema not found" / "subject not found" / "version not found".
            (_, 40401..=40403) => RegistryFailure::NotFound,
            (Some(s), _) if s >= 500 || s == 429 || s == 408 || s == 401 || s == 403 => {
                RegistryFailure::Unavailable
            }
            // A 404 without a registry error body is a wrong URL or a proxy,
            // not an unknown schema.
            (Some(404), _) => RegistryFailure::Unavailable,
            (Some(_), _) => RegistryFailure::Rejected,
            // No HTTP status: the answer was there but unusable (a schema
            // that does not parse, say). The schema behind an id never
            // changes, so this will not pass on a retry.
            (None, _) => RegistryFailure::Rejected,
        }
    }
}

/// True when a cause further down is transient although the converter
/// wrapped it as final: a retriable error of a nested lookup (a referenced
/// schema), or a request that timed out, could not connect, or broke off
/// while its body was read.
fn transient_cause(e: &SRCError) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(inner) = s.downcast_ref::<SRCError>() {
            if inner.retriable {
                return true;
            }
        }
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            if r.is_timeout() || r.is_connect() || r.is_request() || r.is_body() || r.is_decode() {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// The status in the converter's "failed with status 404 Not Found" text.
fn http_status_in(text: &str) -> Option<u16> {
    let rest = &text[text.find("status ")? + "status ".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|digits| digits.parse().ok())
}

/// Encodes values of one registered schema.
pub struct Encoder {
    id: u32,
    writer: GenericDatumWriter<'static>,
    subject: String,
    file: SchemaFile,
    /// The type last encoded and whether it has a fast path for `file`.
    fast: OnceLock<(std::any::TypeId, bool)>,
    /// Capacity to allocate for the next record.
    size_hint: AtomicUsize,
}

impl Encoder {
    fn new(
        id: u32,
        schema: &'static Schema,
        subject: String,
        file: SchemaFile,
    ) -> Result<Self, Error> {
        let writer = GenericDatumWriter::builder(schema)
            .human_readable(false)
            .build()
            .map_err(|e| Error::Schema {
                name: subject.clone(),
                message: e.to_string(),
            })?;
        Ok(Encoder {
            id,
            writer,
            subject,
            file,
            fast: OnceLock::new(),
            size_hint: AtomicUsize::new(256),
        })
    }

    /// Registry id of the schema.
    pub fn schema_id(&self) -> u32 {
        self.id
    }

    /// The subject it was registered under.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Wire-format bytes of `value`.
    pub fn encode<T: AvroRecord + 'static>(&self, value: &T) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(self.size_hint.load(Ordering::Relaxed));
        out.push(0u8);
        out.extend_from_slice(&self.id.to_be_bytes());
        // Whether the fast path applies is decided once per type, not per
        // record (it compares the whole schema text).
        let type_id = std::any::TypeId::of::<T>();
        let fast = match self
            .fast
            .get_or_init(|| (type_id, fast_path_for::<T>(self.file)))
        {
            (t, fast) if *t == type_id => *fast,
            _ => fast_path_for::<T>(self.file),
        };
        if !(fast && value.write_fast(&mut out)) {
            out.truncate(5);
            self.writer.write_ser(&mut out, value).map_err(|e| {
                format!("cannot encode with {} (id {}): {e}", self.subject, self.id)
            })?;
        }
        // Room for the next one without growing (records of a topic are alike).
        if out.len() > self.size_hint.load(Ordering::Relaxed) {
            self.size_hint.store(
                out.len().next_power_of_two().min(1 << 20),
                Ordering::Relaxed,
            );
        }
        Ok(out)
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    /// Not in the Confluent wire format (no magic byte, too short).
    #[error("not Confluent Avro wire format: {0}")]
    Malformed(String),
    /// The registry does not know the schema id, or the schema cannot be read into ours.
    #[error("unusable writer schema: {0}")]
    Schema(String),
    /// The bytes do not match their writer schema.
    #[error("invalid Avro datum: {0}")]
    Datum(String),
    /// The registry could not be reached; retry later, do not dead-letter.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
}

impl DecodeError {
    /// Error class for dead-letter headers and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::Malformed(_) => "malformed",
            DecodeError::Schema(_) => "schema",
            DecodeError::Datum(_) => "deserialization",
            DecodeError::RegistryUnavailable(_) => "registry_unavailable",
        }
    }
}

enum Plan {
    /// Writer schema is ours and `T` has a hand-written decoder for it.
    Fast,
    /// Writer schema is ours: read straight into `T`.
    Direct(GenericDatumReader<'static>),
    /// Writer schema differs (or type names do): decode to a value, resolve
    /// to ours if needed, then convert.
    Resolve(GenericDatumReader<'static>),
    /// Writer schema cannot be read as ours; `until` is set when the reason
    /// is the registry's answer (an unknown id, an unusable schema), which
    /// is asked again after a while (a registry restored from backup, a
    /// late registration, a proxy error).
    Incompatible { why: String, until: Option<Instant> },
}

/// How long an "unknown schema id" (or unusable schema) answer is believed
/// before asking again.
const NOT_FOUND_TTL: Duration = Duration::from_secs(30);

/// What a failed schema lookup means for the record at hand.
fn lookup_failure(id: u32, e: &SRCError) -> Result<(String, Option<Instant>), DecodeError> {
    match RegistryFailure::of(e) {
        RegistryFailure::Unavailable => Err(DecodeError::RegistryUnavailable(describe_src(e))),
        RegistryFailure::NotFound => Ok((
            format!("schema id {id} is not registered: {}", describe_src(e)),
            Some(Instant::now() + NOT_FOUND_TTL),
        )),
        // A schema the registry serves but that cannot be used. Asked again
        // after a while too: the answer may have been a proxy's error page.
        RegistryFailure::Rejected => Ok((
            format!("schema id {id}: {}", describe_src(e)),
            Some(Instant::now() + NOT_FOUND_TTL),
        )),
    }
}

/// Decodes wire-format payloads into `T`.
pub struct Decoder<T> {
    registry: Arc<AvroDecoder>,
    reader_file: SchemaFile,
    reader_schema: &'static Schema,
    reader_canonical: String,
    plans: HashMap<u32, Plan>,
    _type: PhantomData<fn() -> T>,
}

impl<T: AvroRecord> Decoder<T> {
    /// Decodes one payload.
    pub async fn decode(&mut self, payload: &[u8]) -> Result<T, DecodeError> {
        let (id, datum) = split_wire(payload)?;
        let stale = match self.plans.get(&id) {
            None => true,
            Some(Plan::Incompatible {
                until: Some(until), ..
            }) => Instant::now() >= *until,
            Some(_) => false,
        };
        if stale {
            let plan = self.plan(id).await?;
            self.plans.insert(id, plan);
        }
        let mut reader = datum;
        match &self.plans[&id] {
            Plan::Fast => match T::read_fast(datum) {
                Some(r) => r.map_err(DecodeError::Datum),
                None => Err(DecodeError::Schema("no fast decoder".into())),
            },
            Plan::Direct(r) => match r.read_deser::<T>(&mut reader) {
                Ok(v) if reader.is_empty() => Ok(v),
                Ok(_) => Err(DecodeError::Datum(format!(
                    "{} bytes left after the record",
                    reader.len()
                ))),
                Err(direct) => {
                    // The schema-aware path also insists that Rust and Avro
                    // type names agree (one Rust type can serve two record
                    // names); the generic path does not. Use it from now on
                    // if it works, so only genuinely bad data is an error.
                    let mut again = datum;
                    let value = r
                        .read_value(&mut again)
                        .map_err(|_| DecodeError::Datum(direct.to_string()))?;
                    let decoded = apache_avro::from_value::<T>(&value)
                        .map_err(|_| DecodeError::Datum(direct.to_string()))?;
                    if let Some(Plan::Direct(r)) = self.plans.remove(&id) {
                        self.plans.insert(id, Plan::Resolve(r));
                    }
                    Ok(decoded)
                }
            },
            Plan::Resolve(r) => {
                let value = r
                    .read_value(&mut reader)
                    .map_err(|e| DecodeError::Datum(e.to_string()))?;
                if !reader.is_empty() {
                    return Err(DecodeError::Datum(format!(
                        "{} bytes left after the record",
                        reader.len()
                    )));
                }
                apache_avro::from_value::<T>(&value).map_err(|e| DecodeError::Datum(e.to_string()))
            }
            Plan::Incompatible { why, .. } => Err(DecodeError::Schema(why.clone())),
        }
    }

    async fn plan(&self, id: u32) -> Result<Plan, DecodeError> {
        let writer = match self.registry.get_schema(id).await {
            Ok(s) => s,
            Err(e) => {
                // The converter caches failed lookups; our plan decides when
                // to ask again.
                self.registry.remove_errors_from_cache();
                let (why, until) = lookup_failure(id, &e)?;
                return Ok(Plan::Incompatible { why, until });
            }
        };
        let writer_schema: &'static Schema = Box::leak(Box::new(writer.parsed.clone()));
        if writer_schema.canonical_form() == self.reader_canonical {
            if fast_path_for::<T>(self.reader_file) {
                return Ok(Plan::Fast);
            }
            let reader = GenericDatumReader::builder(self.reader_schema)
                .human_readable(false)
                .build()
                .map_err(|e| DecodeError::Schema(e.to_string()))?;
            return Ok(Plan::Direct(reader));
        }
        if let Err(e) = SchemaCompatibility::can_read(writer_schema, self.reader_schema) {
            return Ok(Plan::Incompatible {
                why: format!(
                    "schema id {id} cannot be read as {}: {e}",
                    self.reader_schema
                        .name()
                        .map(|n| n.fullname(None))
                        .unwrap_or_default()
                ),
                until: None,
            });
        }
        let reader = GenericDatumReader::builder(writer_schema)
            .reader_schema(self.reader_schema)
            .human_readable(false)
            .build()
            .map_err(|e| DecodeError::Schema(e.to_string()))?;
        Ok(Plan::Resolve(reader))
    }
}

/// Decodes any registered schema into generic Avro values (the sinks map
/// fields by name, so they need no Rust type per topic).
pub struct ValueDecoder {
    registry: Arc<AvroDecoder>,
    readers: HashMap<u32, Result<GenericDatumReader<'static>, (String, Option<Instant>)>>,
}

impl ValueDecoder {
    /// Decodes one payload with its writer schema.
    pub async fn decode(
        &mut self,
        payload: &[u8],
    ) -> Result<(u32, apache_avro::types::Value), DecodeError> {
        let (id, datum) = split_wire(payload)?;
        let stale = match self.readers.get(&id) {
            None => true,
            Some(Err((_, Some(until)))) => Instant::now() >= *until,
            Some(_) => false,
        };
        if stale {
            let reader = match self.registry.get_schema(id).await {
                Ok(s) => {
                    let schema: &'static Schema = Box::leak(Box::new(s.parsed.clone()));
                    GenericDatumReader::builder(schema)
                        .human_readable(false)
                        .build()
                        .map_err(|e| (format!("schema id {id}: {e}"), None))
                }
                Err(e) => {
                    self.registry.remove_errors_from_cache();
                    Err(lookup_failure(id, &e)?)
                }
            };
            self.readers.insert(id, reader);
        }
        match &self.readers[&id] {
            Ok(reader) => {
                let mut rest = datum;
                let value = reader
                    .read_value(&mut rest)
                    .map_err(|e| DecodeError::Datum(e.to_string()))?;
                if !rest.is_empty() {
                    return Err(DecodeError::Datum(format!(
                        "{} bytes left after the record",
                        rest.len()
                    )));
                }
                Ok((id, value))
            }
            Err((why, _)) => Err(DecodeError::Schema(why.clone())),
        }
    }
}

impl Registry {
    /// A decoder into generic values.
    pub fn value_decoder(&self) -> ValueDecoder {
        ValueDecoder {
            registry: self.decoder.clone(),
            readers: HashMap::new(),
        }
    }

    /// The JSON text of schema `id`.
    pub async fn schema_text(&self, id: u32) -> Result<String, DecodeError> {
        match self.decoder.get_schema(id).await {
            Ok(s) => Ok(s.raw.clone()),
            Err(e) => {
                self.decoder.remove_errors_from_cache();
                let (why, _) = lookup_failure(id, &e)?;
                Err(DecodeError::Schema(why))
            }
        }
    }

    /// The latest schema registered for `topic`'s values: id and JSON text.
    pub async fn latest_value_schema(&self, topic: &str) -> Result<(u32, String), Error> {
        let subject = value_subject(topic);
        let request = self.request(
            reqwest::Method::GET,
            &format!("/subjects/{subject}/versions/latest"),
        );
        let fail = |message: String, retriable: bool| Error::Registry {
            subject: subject.clone(),
            message,
            retriable,
        };
        let resp = request
            .send()
            .await
            .map_err(|e| fail(self.unreachable(&e), true))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let code = status.as_u16();
            return Err(fail(
                format!("{status}: {body}"),
                status.is_server_error() || matches!(code, 401 | 403 | 408 | 429),
            ));
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| fail(format!("unreadable answer: {e}"), true))?;
        match (body["id"].as_u64(), body["schema"].as_str()) {
            (Some(id), Some(schema)) => Ok((id as u32, schema.to_string())),
            _ => Err(fail(format!("answer without id and schema: {body}"), false)),
        }
    }
}

/// Splits a Confluent wire-format payload into schema id and datum.
pub fn split_wire(payload: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match payload {
        [] => Err(DecodeError::Malformed("empty payload".into())),
        [0, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [0, ..] => Err(DecodeError::Malformed(format!(
            "payload of {} bytes is shorter than the 5-byte header",
            payload.len()
        ))),
        [magic, ..] => Err(DecodeError::Malformed(format!(
            "magic byte is {magic:#04x}, expected 0x00"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_error(status: &str, body: &str) -> SRCError {
        let raw: RawError = serde_json::from_str(body).unwrap();
        SRCError::non_retryable_with_cause(
            raw,
            &format!("HTTP request to schema registry failed with status {status}"),
        )
    }

    #[test]
    fn registry_failures_blame_the_record_only_for_unknown_schemas() {
        let not_found = http_error(
            "404 Not Found",
            r#"{"error_code":40403,"message":"Schema 7 not found"}"#,
        );
        assert_eq!(RegistryFailure::of(&not_found), RegistryFailure::NotFound);
        for (status, body) in [
            (
                "500 Internal Server Error",
                r#"{"error_code":50001,"message":"x"}"#,
            ),
            ("504 Gateway Timeout", r#"{"error_code":0,"message":"x"}"#),
            (
                "429 Too Many Requests",
                r#"{"error_code":42901,"message":"x"}"#,
            ),
            ("401 Unauthorized", r#"{"error_code":40101,"message":"x"}"#),
            ("403 Forbidden", r#"{"error_code":40301,"message":"x"}"#),
            // A 404 that is not the registry's own answer: wrong URL or proxy.
            ("404 Not Found", r#"{"error_code":0,"message":"x"}"#),
        ] {
            assert_eq!(
                RegistryFailure::of(&http_error(status, body)),
                RegistryFailure::Unavailable,
                "{status}"
            );
        }
        let rejected = http_error(
            "422 Unprocessable Entity",
            r#"{"error_code":42201,"message":"Invalid schema"}"#,
        );
        assert_eq!(RegistryFailure::of(&rejected), RegistryFailure::Rejected);
        let transport = SRCError::new("connection refused", None, true);
        assert_eq!(
            RegistryFailure::of(&transport),
            RegistryFailure::Unavailable
        );
    }

    #[test]
    fn wire_header_is_checked() {
        assert_eq!(
            split_wire(&[0, 0, 0, 0, 7, 1, 2]).unwrap(),
            (7, &[1u8, 2][..])
        );
        assert!(matches!(split_wire(&[]), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            split_wire(&[0, 0, 1]),
            Err(DecodeError::Malformed(_))
        ));
        let err = split_wire(b"{\"json\":1}").unwrap_err();
        assert!(err.to_string().contains("magic byte is 0x7b"), "{err}");
    }

    /// A record of the runtime's own tests, with a hand-written encoding.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Probe {
        id: String,
        at: i64,
        value: Option<f64>,
    }

    const PROBE: SchemaFile = SchemaFile {
        name: "probe",
        text: r#"{"type":"record","name":"Probe","namespace":"gale.test","fields":[
            {"name":"id","type":"string"},{"name":"at","type":"long"},
            {"name":"value","type":["null","double"]}]}"#,
    };

    impl AvroRecord for Probe {
        fn fast_schemas() -> &'static [SchemaFile] {
            &[PROBE]
        }
        fn write_fast(&self, out: &mut Vec<u8>) -> bool {
            let mut w = crate::binary::AvroWriter(out);
            w.string(&self.id);
            w.long(self.at);
            w.opt_double(self.value);
            true
        }
        fn read_fast(datum: &[u8]) -> Option<Result<Self, String>> {
            let mut r = crate::binary::AvroReader::new(datum);
            Some((|| {
                let p = Probe {
                    id: r.string()?,
                    at: r.long()?,
                    value: r.opt_double()?,
                };
                r.done()?;
                Ok(p)
            })())
        }
    }

    #[test]
    fn encoder_writes_header_and_datum_readable_by_apache_avro() {
        let schema = parse_static(PROBE).unwrap();
        let enc = Encoder::new(42, schema, "t-value".into(), PROBE).unwrap();
        let probe = Probe {
            id: "é".into(),
            at: -5,
            value: Some(1.5),
        };
        let bytes = enc.encode(&probe).unwrap();
        let (id, datum) = split_wire(&bytes).unwrap();
        assert_eq!(id, 42);
        #[allow(deprecated)]
        let value = apache_avro::from_avro_datum(schema, &mut &datum[..], None).unwrap();
        let back: Probe = apache_avro::from_value(&value).unwrap();
        assert_eq!(back, probe);
        // The fast path reads what apache-avro's serde path writes.
        assert_eq!(Probe::read_fast(datum).unwrap().unwrap(), probe);
        let reader = GenericDatumReader::builder(schema)
            .human_readable(false)
            .build()
            .unwrap();
        let via_crate: Probe = reader.read_deser(&mut &datum[..]).unwrap();
        assert_eq!(via_crate, probe);
    }
}
