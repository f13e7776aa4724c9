//! Logs and traces.
//!
//! Logs go to stderr through `tracing`, human-readable or JSON. Traces use
//! OpenTelemetry: a W3C `traceparent` header travels with every record, so
//! one reading is one trace from the ingest request to the last stage that
//! handles it alone. Spans follow one pinned version of the OpenTelemetry
//! messaging semantic conventions, [`SEMCONV_VERSION`] (`send <topic>`,
//! `process <topic>`, `create <topic>`, `messaging.system=kafka`,
//! destination, consumer group, partition, offset, key); every span and
//! attribute is listed in `docs/tracing.md`.
//!
//! What one record causes is a child of its span. What many records cause
//! (a window aggregate, a sink's batch write, a timer's fault) is not made
//! a child of any one of them: its span starts a trace of its own and
//! *links* to the contributing records' contexts, at most [`MAX_LINKS`] of
//! them, as the conventions prescribe for batches.
//!
//! Spans are exported over OTLP only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! the traces-specific variable) is set; otherwise ids are only forwarded
//! through the headers, at almost no cost, and nothing that exists only for
//! exported spans (links, log span fields) is kept.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};
use crate::Error;

/// Header names of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// The version of the OpenTelemetry semantic conventions Gale's span names
/// and attributes follow (also the tracer's schema URL).
pub const SEMCONV_VERSION: &str = "1.27.0";
/// Schema URL of [`SEMCONV_VERSION`], set on every tracer.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.27.0";
/// Most links one span records; the number of records it stands for is an
/// attribute (`messaging.batch.message_count`, `gale.links.total`).
pub const MAX_LINKS: usize = 64;
/// Target of the per-record log span (`record{trace_id, span_id}`), which
/// is for log lines only and never exported as a span.
pub const RECORD_LOG_TARGET: &str = "gale::record";

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when this process exports spans. Stages keep the contexts an
/// output derived from many records links to only then: keeping them costs
/// state and allocations that propagation alone does not need.
pub fn spans_exported() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}
/// See [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// Owns the tracer provider; flush it with [`Telemetry::shutdown`] before exit.
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Telemetry {
    /// Sets up logging and tracing for `service`. Call once per process.
    pub fn init(service: &str, config: &TelemetryConfig) -> Result<Telemetry, Error> {
        let env_is = |name: &str, value: &str| {
            std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
        };
        let exporting = (std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some())
            && !env_is("OTEL_SDK_DISABLED", "true")
            && !env_is("OTEL_TRACES_EXPORTER", "none");
        let resource = Resource::builder()
            .with_service_name(service.to_string())
            .build();
        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        if exporting {
            builder = builder.with_batch_exporter(otlp_exporter()?);
        } else {
            builder = builder.with_sampler(Sampler::AlwaysOff);
        }
        let provider = builder.build();
        EXPORTING.store(exporting, std::sync::atomic::Ordering::Relaxed);
        opentelemetry::global::set_tracer_provider(provider.clone());
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&config.log_level))
            .map_err(|e| {
                Error::Config(format!(
                    "invalid value {:?} for key `telemetry.log_level`: {e}",
                    config.log_level
                ))
            })?;
        // The per-record log span only labels log lines: the record's real
        // span is made by [`MessagingTracer`], so it is not exported twice.
        let otel_layer = exporting.then(|| {
            use tracing_subscriber::Layer as _;
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service.to_string()))
                .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    m.target() != RECORD_LOG_TARGET
                }))
        });
        let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
        let result = match config.log_format {
            LogFormat::Json => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_current_span(false)
                        .with_writer(std::io::stderr),
                )
                .try_init(),
            LogFormat::Human => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                        .with_writer(std::io::stderr),
                )
                .try_init(),
        };
        if let Err(e) = result {
            // Already initialised (tests that start several components in one process).
            tracing::debug!(error = %e, "log subscriber already set");
        }
        Ok(Telemetry {
            provider,
            exporting,
        })
    }

    /// True when spans leave the process.
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// A tracer for messaging spans.
    pub fn messaging(&self, stage: &str) -> MessagingTracer {
        let scope = opentelemetry::InstrumentationScope::builder(format!("gale-{stage}"))
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url(SCHEMA_URL)
            .build();
        MessagingTracer {
            tracer: self.provider.tracer_with_scope(scope),
            propagator: TraceContextPropagator::new(),
            detailed: self.exporting,
            names: Default::default(),
        }
    }

    /// Flushes spans still buffered.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "tracer provider shutdown");
        }
    }
}

fn otlp_exporter() -> Result<opentelemetry_otlp::SpanExporter, Error> {
    use opentelemetry_otlp::WithExportConfig;
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|_| "http/protobuf".into());
    let built = match protocol.as_str() {
        "grpc" => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_protocol(opentelemetry_otlp::Protocol::Grpc)
            .build(),
        "http/protobuf" => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build(),
        other => {
            return Err(Error::Telemetry(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported; expected `grpc` or `http/protobuf`"
            )))
        }
    };
    built.map_err(|e| Error::Telemetry(e.to_string()))
}

/// Creates messaging spans and moves their context through Kafka headers.
///
/// When spans are exported, spans are real OpenTelemetry spans. When they are
/// not, the tracer forwards the incoming W3C context unchanged (starting a
/// trace only where none arrived), so spans exported by services further on
/// still hang under the last span that was exported; this costs a fraction
/// of building unsampled SDK spans on the per-record path.
#[derive(Clone)]
pub struct MessagingTracer {
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    detailed: bool,
    names:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), &'static str>>>,
}

/// Where a consumed record came from, for span attributes.
pub struct ConsumedFrom<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Record key, if any.
    pub key: Option<&'a [u8]>,
    /// Consumer group.
    pub group: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A W3C trace context: trace id, span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// Trace id (non-zero).
    pub trace_id: u128,
    /// Span id (non-zero).
    pub span_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` header value (version 00).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2
            || version == "ff"
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The `traceparent` among Kafka `headers`, if there is a valid one.
    pub fn of_headers(headers: Option<&BorrowedHeaders>) -> Option<TraceParent> {
        headers?
            .iter()
            .find(|x| x.key.eq_ignore_ascii_case(TRACEPARENT))
            .and_then(|x| x.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(TraceParent::parse)
    }

    /// The trace id as 32 lowercase hex digits (log fields, exemplars).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// This context as the remote end of a span link.
    fn link(&self) -> Link {
        Link::with_context(SpanContext::new(
            TraceId::from(self.trace_id),
            SpanId::from(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        ))
    }

    /// The context a hop that exports nothing passes on: the parent's, or
    /// a new trace where there was none.
    fn forward(parent: Option<TraceParent>) -> TraceParent {
        let mut rng = rand::rng();
        match parent {
            Some(p) => p,
            None => TraceParent {
                trace_id: loop {
                    let t: u128 = rand::Rng::random(&mut rng);
                    if t != 0 {
                        break t;
                    }
                },
                span_id: loop {
                    let s: u64 = rand::Rng::random(&mut rng);
                    if s != 0 {
                        break s;
                    }
                },
                flags: 0,
            },
        }
    }

    /// The header value, `00-<trace>-<span>-<flags>`.
    pub fn header_value(&self) -> String {
        // Written by hand: `format!` of a u128 in hex is slow, and this runs
        // once per record.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = Vec::with_capacity(55);
        out.extend_from_slice(b"00-");
        out.extend((0..32).map(|i| HEX[((self.trace_id >> (124 - 4 * i)) & 0xf) as usize]));
        out.push(b'-');
        out.extend((0..16).map(|i| HEX[((self.span_id >> (60 - 4 * i)) & 0xf) as usize]));
        out.push(b'-');
        out.push(HEX[(self.flags >> 4) as usize]);
        out.push(HEX[(self.flags & 0xf) as usize]);
        String::from_utf8(out).expect("hex digits are ASCII")
    }
}

/// Kept in state (a window's contributors) as the header value.
impl serde::Serialize for TraceParent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.header_value())
    }
}

impl<'de> serde::Deserialize<'de> for TraceParent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TraceParent::parse(&value)
            .ok_or_else(|| serde::de::Error::custom(format!("not a W3C traceparent: {value:?}")))
    }
}

/// Keeps up to [`MAX_LINKS`]… or any smaller `bound` of contexts: the
/// first ones, which is what a reader of a window's trace looks for first.
pub fn keep_link(links: &mut Vec<TraceParent>, context: Option<TraceParent>, bound: usize) {
    if let Some(c) = context {
        if links.len() < bound.min(MAX_LINKS) && !links.contains(&c) {
            links.push(c);
        }
    }
}

/// The span of one record (or the remote parent of one request).
pub enum RecordSpan {
    /// A real OpenTelemetry context (spans are exported).
    Sdk(Context),
    /// Propagation only (spans are not exported).
    Light(Option<TraceParent>),
}

impl RecordSpan {
    /// Writes this span's `traceparent` (and `tracestate`, if any) into `headers`.
    pub fn inject(&self, headers: OwnedHeaders, tracer: &MessagingTracer) -> OwnedHeaders {
        match self {
            RecordSpan::Sdk(cx) => {
                let mut pairs = HeaderPairs::default();
                tracer.propagator.inject_context(cx, &mut pairs);
                let mut out = headers;
                let has_state = out.iter().any(|h| h.key.eq_ignore_ascii_case(TRACESTATE));
                for (k, v) in pairs
                    .0
                    .iter()
                    .filter(|(k, v)| !(v.is_empty() || has_state && k == TRACESTATE))
                {
                    out = out.insert(Header {
                        key: k,
                        value: Some(v.as_bytes()),
                    });
                }
                out
            }
            RecordSpan::Light(Some(tp)) => headers.insert(Header {
                key: TRACEPARENT,
                value: Some(tp.header_value().as_bytes()),
            }),
            RecordSpan::Light(None) => headers,
        }
    }

    /// Ends the span, marking it failed if `error` is given.
    pub fn end(&self, error: Option<&str>) {
        if let RecordSpan::Sdk(cx) = self {
            end(cx, error);
        }
    }

    /// This span's ids (for an exporting hop) or the forwarded ones, for
    /// log lines and exemplars; `None` before any trace exists.
    pub fn context(&self) -> Option<TraceParent> {
        match self {
            RecordSpan::Sdk(cx) => {
                let span = cx.span();
                let sc = span.span_context();
                sc.is_valid().then(|| TraceParent {
                    trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
                    span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
                    flags: sc.trace_flags().to_u8(),
                })
            }
            RecordSpan::Light(p) => *p,
        }
    }

    /// A `tracing` span named `record` with this span's `trace_id` and
    /// `span_id`, so log lines emitted while it is entered name the record's
    /// trace. Only for an exporting hop (elsewhere it is `Span::none()` and
    /// costs nothing); never exported itself.
    pub fn log_span(&self) -> tracing::Span {
        match (self, self.context()) {
            (RecordSpan::Sdk(_), Some(tp)) => tracing::info_span!(
                target: "gale::record",
                "record",
                trace_id = %tp.trace_id_hex(),
                span_id = %tp.span_id_hex()
            ),
            _ => tracing::Span::none(),
        }
    }
}

/// What a batch span stands for (see [`MessagingTracer::batch`]).
pub struct Batch<'a> {
    /// Span name's operation and `messaging.operation.name`: `process` for
    /// a sink's write, `flush` for archive's file write.
    pub operation: &'static str,
    /// `messaging.operation.type`: `process` (consumer side).
    pub operation_type: &'static str,
    /// Topic the records came from.
    pub topic: &'a str,
    /// Partition, when all records are of one.
    pub partition: Option<i32>,
    /// Consumer group.
    pub group: Option<&'a str>,
    /// Records the span stands for (may exceed the links kept).
    pub count: usize,
}

impl MessagingTracer {
    fn name(&self, op: &str, topic: &str) -> &'static str {
        // A handful of topics: leak each span name once instead of
        // allocating it per record.
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names
            .entry((op.to_string(), topic.to_string()))
            .or_insert_with(|| Box::leak(format!("{op} {topic}").into_boxed_str()))
    }

    /// Starts a `process <topic>` consumer span, child of the record's `traceparent`.
    pub fn process(
        &self,
        from: &ConsumedFrom<'_>,
        headers: Option<&BorrowedHeaders>,
    ) -> RecordSpan {
        if !self.detailed {
            let parent = headers
                .and_then(|h| {
                    h.iter()
                        .find(|x| x.key.eq_ignore_ascii_case(TRACEPARENT))
                        .and_then(|x| x.value)
                })
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(TraceParent::parse);
            return RecordSpan::Light(Some(TraceParent::forward(parent)));
        }
        let parent = match headers {
            Some(h) => self.propagator.extract(&KafkaHeaders(h)),
            None => Context::new(),
        };
        let mut attributes = vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", from.topic.to_string()),
            KeyValue::new("messaging.consumer.group.name", from.group.to_string()),
            KeyValue::new(
                "messaging.destination.partition.id",
                from.partition.to_string(),
            ),
            KeyValue::new("messaging.kafka.offset", from.offset),
        ];
        if let Some(key) = from.key.and_then(|k| std::str::from_utf8(k).ok()) {
            attributes.push(KeyValue::new(
                "messaging.kafka.message.key",
                key.to_string(),
            ));
        }
        let span = self
            .tracer
            .span_builder(self.name("process", from.topic))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        RecordSpan::Sdk(parent.with_span(span))
    }

    /// Starts a `send <topic>` producer span under `parent` (a new trace if
    /// `parent` carries none), e.g. for a reading entering Gale at ingest.
    pub fn send(&self, topic: &str, parent: &RecordSpan) -> RecordSpan {
        match parent {
            RecordSpan::Light(p) => RecordSpan::Light(Some(TraceParent::forward(*p))),
            RecordSpan::Sdk(cx) => {
                let span = self
                    .tracer
                    .span_builder(self.name("send", topic))
                    .with_kind(SpanKind::Producer)
                    .with_attributes([
                        KeyValue::new("messaging.system", "kafka"),
                        KeyValue::new("messaging.operation.type", "send"),
                        KeyValue::new("messaging.operation.name", "send"),
                        KeyValue::new("messaging.destination.name", topic.to_string()),
                    ])
                    .start_with_context(&self.tracer, cx);
                RecordSpan::Sdk(cx.with_span(span))
            }
        }
    }

    /// True when spans are exported (links and log span fields are kept).
    pub fn exporting(&self) -> bool {
        self.detailed
    }

    /// A `create <topic>` producer span for one output record derived from
    /// many records (a window aggregate) or from none (a timer's output):
    /// the root of a trace of its own, linked to `links` (the contributors'
    /// contexts, at most [`MAX_LINKS`] of them) instead of a child of any one
    /// of them. `trigger` says what made it (`record`, `timer`). Without
    /// export there is no such span: the output carries no `traceparent`
    /// unless `fallback` gives one to forward.
    pub fn create(
        &self,
        topic: &str,
        links: &[TraceParent],
        trigger: &'static str,
        fallback: Option<TraceParent>,
    ) -> RecordSpan {
        if !self.detailed {
            return RecordSpan::Light(fallback);
        }
        let links: Vec<Link> = links
            .iter()
            .take(MAX_LINKS)
            .map(TraceParent::link)
            .collect();
        let span = self
            .tracer
            .span_builder(self.name("create", topic))
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "create"),
                KeyValue::new("messaging.operation.name", "create"),
                KeyValue::new("messaging.destination.name", topic.to_string()),
                KeyValue::new("gale.trigger", trigger),
                KeyValue::new("gale.links.total", links.len() as i64),
            ])
            .with_links(links)
            .start_with_context(&self.tracer, &Context::new());
        RecordSpan::Sdk(Context::new().with_span(span))
    }

    /// A span for records handled together (a sink's write of a batch, an
    /// archive file): its own trace, with links to each record's context
    /// (the first [`MAX_LINKS`]) as the messaging conventions prescribe
    /// for batches, and the number of records as
    /// `messaging.batch.message_count`. `None` without export. End it with
    /// [`RecordSpan::end`].
    pub fn batch(
        &self,
        batch: &Batch<'_>,
        contexts: impl IntoIterator<Item = TraceParent>,
    ) -> Option<RecordSpan> {
        if !self.detailed {
            return None;
        }
        let mut kept = Vec::new();
        let mut total = 0i64;
        for c in contexts {
            total += 1;
            if kept.len() < MAX_LINKS {
                kept.push(c.link());
            }
        }
        let mut attributes = vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", batch.operation_type),
            KeyValue::new("messaging.operation.name", batch.operation),
            KeyValue::new("messaging.destination.name", batch.topic.to_string()),
            KeyValue::new("messaging.batch.message_count", batch.count as i64),
            KeyValue::new("gale.links.total", total),
        ];
        if let Some(p) = batch.partition {
            attributes.push(KeyValue::new(
                "messaging.destination.partition.id",
                p.to_string(),
            ));
        }
        if let Some(g) = batch.group {
            attributes.push(KeyValue::new(
                "messaging.consumer.group.name",
                g.to_string(),
            ));
        }
        let span = self
            .tracer
            .span_builder(self.name(batch.operation, batch.topic))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .with_links(kept)
            .start_with_context(&self.tracer, &Context::new());
        Some(RecordSpan::Sdk(Context::new().with_span(span)))
    }

    /// No parent: the next `send` starts a new trace.
    pub fn root(&self) -> RecordSpan {
        if self.detailed {
            RecordSpan::Sdk(Context::new())
        } else {
            RecordSpan::Light(None)
        }
    }

    /// The remote parent in HTTP-style headers (e.g. an ingest request), or none.
    pub fn extract_map(&self, get: impl Fn(&str) -> Option<String>) -> RecordSpan {
        if !self.detailed {
            return RecordSpan::Light(get(TRACEPARENT).as_deref().and_then(TraceParent::parse));
        }
        struct Getter(Vec<String>);
        impl Extractor for Getter {
            fn get(&self, key: &str) -> Option<&str> {
                let idx = match key {
                    TRACEPARENT => 0,
                    TRACESTATE => 1,
                    _ => return None,
                };
                self.0
                    .get(idx)
                    .map(String::as_str)
                    .filter(|s| !s.is_empty())
            }
            fn keys(&self) -> Vec<&str> {
                vec![TRACEPARENT, TRACESTATE]
            }
        }
        let values = vec![
            get(TRACEPARENT).unwrap_or_default(),
            get(TRACESTATE).unwrap_or_default(),
        ];
        RecordSpan::Sdk(self.propagator.extract(&Getter(values)))
    }
}

/// Ends the span carried by `cx`, marking it failed if `error` is given.
pub fn end(cx: &Context, error: Option<&str>) {
    let span = cx.span();
    if let Some(e) = error {
        span.set_status(opentelemetry::trace::Status::error(e.to_string()));
    }
    span.end();
}

/// Copies `headers` except `traceparent`, which the caller replaces
/// (`tracestate` travels on unchanged), and the redrive's target stage,
/// which is for this hop only.
pub fn copy_non_trace_headers(headers: Option<&BorrowedHeaders>) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = headers {
        for header in h.iter() {
            if header.key.eq_ignore_ascii_case(TRACEPARENT)
                || header.key == crate::dlq::REDRIVE_STAGE
            {
                continue;
            }
            out = out.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    out
}

struct KafkaHeaders<'a>(&'a BorrowedHeaders);

impl Extractor for KafkaHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

#[derive(Default)]
struct HeaderPairs(Vec<(String, String)>);

impl Injector for HeaderPairs {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// The trace id in a `traceparent` header value, for tests and tools.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let _version = parts.next()?;
    let trace = parts.next()?;
    (trace.len() == 32).then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parses() {
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_of("garbage"), None);
    }

    fn header(h: &OwnedHeaders, key: &str) -> Option<String> {
        h.iter()
            .find(|x| x.key == key)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    fn tracer(detailed: bool) -> MessagingTracer {
        let provider = SdkTracerProvider::builder()
            .with_sampler(if detailed {
                Sampler::AlwaysOn
            } else {
                Sampler::AlwaysOff
            })
            .build();
        MessagingTracer {
            tracer: provider.tracer("test"),
            propagator: TraceContextPropagator::new(),
            detailed,
            names: Default::default(),
        }
    }

    #[test]
    fn both_modes_continue_the_trace() {
        for detailed in [false, true] {
            let t = tracer(detailed);
            let root = t.send("gale.raw", &t.extract_map(|_| None));
            let tp = header(&root.inject(OwnedHeaders::new(), &t), TRACEPARENT)
                .expect("traceparent written");
            let trace = trace_id_of(&tp).unwrap().to_string();
            assert_ne!(trace, "0".repeat(32));
            let child = t.send("gale.validated", &root);
            let child_tp = header(&child.inject(OwnedHeaders::new(), &t), TRACEPARENT).unwrap();
            assert_eq!(
                trace_id_of(&child_tp),
                Some(trace.as_str()),
                "detailed={detailed}"
            );
            if detailed {
                assert_ne!(child_tp, tp, "an exported hop is a span of its own");
            } else {
                assert_eq!(
                    child_tp, tp,
                    "a hop that exports nothing forwards its parent"
                );
            }
            // A remote parent from HTTP headers is continued too.
            let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string();
            let parent = t.extract_map(|k| (k == TRACEPARENT).then(|| remote.clone()));
            let hop = header(
                &t.send("gale.raw", &parent).inject(OwnedHeaders::new(), &t),
                TRACEPARENT,
            )
            .unwrap();
            assert_eq!(trace_id_of(&hop), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
            root.end(None);
            child.end(Some("x"));
        }
    }

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        for (trace_id, span_id, flags) in [
            (1u128, u64::MAX, 0xabu8),
            (u128::MAX, 1, 0),
            (0x0123_4567_89ab_cdef << 64, 42, 1),
        ] {
            let v = TraceParent {
                trace_id,
                span_id,
                flags,
            }
            .header_value();
            assert_eq!(v, format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}"));
        }

        assert_eq!(
            tp.header_value(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert!(
            TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(TraceParent::parse("00-xyz-00f067aa0ba902b7-01").is_none());
    }

    #[test]
    fn trace_parent_is_kept_in_state_as_its_header_value() {
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let json = serde_json::to_string(&vec![tp]).unwrap();
        assert_eq!(
            json,
            r#"["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]"#
        );
        assert_eq!(
            serde_json::from_str::<Vec<TraceParent>>(&json).unwrap(),
            vec![tp]
        );
        let err = serde_json::from_str::<TraceParent>(r#""garbage""#).unwrap_err();
        assert!(err.to_string().contains("not a W3C traceparent"), "{err}");
    }

    #[test]
    fn links_are_bounded_and_not_repeated() {
        let mut links = Vec::new();
        for i in 1..=20u64 {
            let c = TraceParent {
                trace_id: 7,
                span_id: i,
                flags: 1,
            };
            keep_link(&mut links, Some(c), 8);
            keep_link(&mut links, Some(c), 8);
        }
        keep_link(&mut links, None, 8);
        assert_eq!(links.len(), 8);
        assert_eq!(links[0].span_id, 1, "the first contributors are kept");
        let mut many = Vec::new();
        for i in 1..=(MAX_LINKS as u64 + 10) {
            let c = TraceParent {
                trace_id: 7,
                span_id: i,
                flags: 1,
            };
            keep_link(&mut many, Some(c), usize::MAX);
        }
        assert_eq!(many.len(), MAX_LINKS, "never more than MAX_LINKS");
    }

    #[test]
    fn many_to_one_spans_are_roots_and_free_without_export() {
        let tp = TraceParent {
            trace_id: 42,
            span_id: 7,
            flags: 1,
        };
        let batch = Batch {
            operation: "process",
            operation_type: "process",
            topic: "gale.validated",
            partition: Some(0),
            group: Some("g"),
            count: 3,
        };
        let off = tracer(false);
        assert!(off.batch(&batch, [tp]).is_none(), "no span without export");
        let forwarded = off.create("gale.agg", &[], "record", Some(tp));
        assert_eq!(forwarded.context(), Some(tp));
        assert!(off
            .create("gale.agg", &[], "timer", None)
            .context()
            .is_none());
        assert!(forwarded.log_span().is_none());

        let on = tracer(true);
        let created = on.create("gale.agg", &[tp], "record", Some(tp));
        let ctx = created.context().expect("a span of its own");
        assert_ne!(ctx.trace_id, 42, "a new trace, not the contributor's");
        assert_ne!(ctx.span_id, 7);
        let headers = created.inject(OwnedHeaders::new(), &on);
        let value = header(&headers, TRACEPARENT).unwrap();
        assert_eq!(
            TraceParent::parse(&value).map(|p| p.span_id),
            Some(ctx.span_id)
        );
        created.end(None);
        let span = on.batch(&batch, [tp, tp]).expect("exported");
        let ctx = span.context().unwrap();
        assert_ne!(ctx.trace_id, 42);
        span.end(Some("outage"));
    }
}
