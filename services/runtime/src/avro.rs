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
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{
    get_all_subjects, post_schema, SrSettings,
};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::binary::{fast_path_for, AvroRecord};
use crate::config::RegistryConfig;
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
}

impl Registry {
    /// A client for the registry in `config`; does not connect yet.
    pub fn new(config: &RegistryConfig) -> Result<Self, Error> {
        let mut builder = SrSettings::new_builder(config.url.trim_end_matches('/').to_string());
        builder.set_timeout(config.timeout);
        if let (Some(user), password) = (&config.username, &config.password) {
            builder.set_basic_authorization(user, password.as_ref().map(|p| p.expose()));
        }
        let settings = builder.build().map_err(|e| Error::Registry {
            subject: String::new(),
            message: format!("invalid registry settings for `registry.url`: {}", e.error),
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
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// Checks that the registry answers.
    pub async fn ping(&self) -> Result<(), String> {
        get_all_subjects(&self.settings)
            .await
            .map(|_| ())
            .map_err(|e| describe_src(&e))
    }

    /// Registers `file` as the value schema of `topic` (setting the configured
    /// compatibility level first) and returns an encoder for it.
    ///
    /// An incompatible schema is a permanent error naming the subject; an
    /// unreachable registry is reported as retriable.
    pub async fn register(&self, topic: &str, file: SchemaFile) -> Result<Encoder, Error> {
        let subject = value_subject(topic);
        let schema = parse_static(file)?;
        if self.config.set_compatibility {
            self.set_compatibility(&subject).await?;
        }
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, file.text.to_string());
        let registered = post_schema(&self.settings, subject.clone(), supplied)
            .await
            .map_err(|e| Error::Registry {
                subject: subject.clone(),
                message: format!("registering {}: {}", file.name, describe_src(&e)),
                retriable: e.retriable,
            })?;
        tracing::info!(subject = %subject, id = registered.id, schema = file.name, "schema registered");
        Encoder::new(registered.id, schema, subject, file)
    }

    async fn set_compatibility(&self, subject: &str) -> Result<(), Error> {
        let url = format!(
            "{}/config/{}",
            self.config.url.trim_end_matches('/'),
            subject
        );
        let mut request = self
            .http
            .put(url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "compatibility": self.config.compatibility }));
        if let Some(user) = &self.config.username {
            request = request.basic_auth(user, self.config.password.as_ref().map(|p| p.expose()));
        }
        match request.send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) if resp.status().as_u16() == 403 || resp.status().as_u16() == 401 => {
                tracing::warn!(subject, status = %resp.status(), "registry does not let this service set compatibility; keeping the registry's setting");
                Ok(())
            }
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                Err(Error::Registry {
                    subject: subject.into(),
                    message: format!(
                        "setting compatibility {} failed: {status} {body}",
                        self.config.compatibility
                    ),
                    retriable: status.is_server_error(),
                })
            }
            Err(e) => Err(Error::Registry {
                subject: subject.into(),
                message: format!("registry at {} unreachable: {e}", self.config.url),
                retriable: true,
            }),
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

fn describe_src(e: &schema_registry_converter::error::SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{} ({cause})", e.error),
        None => e.error.clone(),
    }
}

/// Encodes values of one registered schema.
pub struct Encoder {
    id: u32,
    writer: GenericDatumWriter<'static>,
    subject: String,
    file: SchemaFile,
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
    pub fn encode<T: AvroRecord>(&self, value: &T) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(256);
        out.push(0u8);
        out.extend_from_slice(&self.id.to_be_bytes());
        if fast_path_for::<T>(self.file) && value.write_fast(&mut out) {
            return Ok(out);
        }
        self.writer
            .write_ser(&mut out, value)
            .map_err(|e| format!("cannot encode with {} (id {}): {e}", self.subject, self.id))?;
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
    /// Writer schema cannot be read as ours.
    Incompatible(String),
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
        if !self.plans.contains_key(&id) {
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
                Ok(v) => Ok(v),
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
                apache_avro::from_value::<T>(&value).map_err(|e| DecodeError::Datum(e.to_string()))
            }
            Plan::Incompatible(why) => Err(DecodeError::Schema(format!("schema id {id}: {why}"))),
        }
    }

    async fn plan(&self, id: u32) -> Result<Plan, DecodeError> {
        let writer = match self.registry.get_schema(id).await {
            Ok(s) => s,
            Err(e) if e.retriable => {
                return Err(DecodeError::RegistryUnavailable(describe_src(&e)))
            }
            Err(e) => {
                // Not-found answers are cached by the converter; let a later
                // registration of the same id be seen.
                self.registry.remove_errors_from_cache();
                return Ok(Plan::Incompatible(describe_src(&e)));
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
            return Ok(Plan::Incompatible(format!(
                "cannot be read as {}: {e}",
                self.reader_schema
                    .name()
                    .map(|n| n.fullname(None))
                    .unwrap_or_default()
            )));
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
    readers: HashMap<u32, Result<GenericDatumReader<'static>, String>>,
}

impl ValueDecoder {
    /// Decodes one payload with its writer schema.
    pub async fn decode(
        &mut self,
        payload: &[u8],
    ) -> Result<(u32, apache_avro::types::Value), DecodeError> {
        let (id, datum) = split_wire(payload)?;
        if !self.readers.contains_key(&id) {
            let reader = match self.registry.get_schema(id).await {
                Ok(s) => {
                    let schema: &'static Schema = Box::leak(Box::new(s.parsed.clone()));
                    GenericDatumReader::builder(schema)
                        .human_readable(false)
                        .build()
                        .map_err(|e| e.to_string())
                }
                Err(e) if e.retriable => {
                    return Err(DecodeError::RegistryUnavailable(describe_src(&e)))
                }
                Err(e) => {
                    self.registry.remove_errors_from_cache();
                    Err(describe_src(&e))
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
            Err(e) => Err(DecodeError::Schema(format!("schema id {id}: {e}"))),
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
            Err(e) if e.retriable => Err(DecodeError::RegistryUnavailable(describe_src(&e))),
            Err(e) => Err(DecodeError::Schema(format!(
                "schema id {id}: {}",
                describe_src(&e)
            ))),
        }
    }

    /// The latest schema registered for `topic`'s values: id and JSON text.
    pub async fn latest_value_schema(&self, topic: &str) -> Result<(u32, String), Error> {
        let subject = value_subject(topic);
        let url = format!(
            "{}/subjects/{}/versions/latest",
            self.config.url.trim_end_matches('/'),
            subject
        );
        let mut request = self.http.get(url);
        if let Some(user) = &self.config.username {
            request = request.basic_auth(user, self.config.password.as_ref().map(|p| p.expose()));
        }
        let fail = |message: String, retriable: bool| Error::Registry {
            subject: subject.clone(),
            message,
            retriable,
        };
        let resp = request.send().await.map_err(|e| {
            fail(
                format!("registry at {} unreachable: {e}", self.config.url),
                true,
            )
        })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(fail(format!("{status}: {body}"), status.is_server_error()));
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

    #[test]
    fn encoder_writes_header_and_datum_readable_by_apache_avro() {
        use crate::schema::*;
        let schema = parse_static(RAW_READING).unwrap();
        let enc = Encoder::new(42, schema, "t-value".into(), RAW_READING).unwrap();
        let raw = RawReading {
            event_id: "e".into(),
            asset_id: "a".into(),
            asset_kind: None,
            event_time: 5,
            received_time: 6,
            source: "s".into(),
            channel: IngestChannel::Http,
            measurements: vec![Measurement {
                metric: Metric::Power,
                value: 1.5,
                unit: None,
            }],
            attributes: Default::default(),
        };
        let bytes = enc.encode(&raw).unwrap();
        let (id, datum) = split_wire(&bytes).unwrap();
        assert_eq!(id, 42);
        #[allow(deprecated)]
        let value = apache_avro::from_avro_datum(schema, &mut &datum[..], None).unwrap();
        let back: RawReading = apache_avro::from_value(&value).unwrap();
        assert_eq!(back, raw);
        // And the fast path reads it too.
        let reader = GenericDatumReader::builder(schema)
            .human_readable(false)
            .build()
            .unwrap();
        let fast: RawReading = reader.read_deser(&mut &datum[..]).unwrap();
        assert_eq!(fast, raw);
    }
}
