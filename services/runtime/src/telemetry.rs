//! Logs and traces.
//!
//! Logs go to stderr through `tracing`, human-readable or JSON. Traces use
//! OpenTelemetry: a W3C `traceparent` header travels with every record, so
//! one reading is one trace from the ingest request to the last sink. Spans
//! follow the OpenTelemetry messaging conventions (`process <topic>`,
//! `send <topic>`, `messaging.system=kafka`, destination, consumer group,
//! partition, offset). Spans are exported over OTLP only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable) is set;
//! otherwise they are created unsampled, which keeps ids flowing through the
//! headers at almost no cost.

use std::borrow::Cow;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
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
        let exporting = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
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
        let otel_layer = exporting.then(|| {
            tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_string()))
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
        MessagingTracer {
            tracer: self.provider.tracer(format!("gale-{stage}")),
            propagator: TraceContextPropagator::new(),
            detailed: self.exporting,
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
#[derive(Clone)]
pub struct MessagingTracer {
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    detailed: bool,
}

/// Where a consumed record came from, for span attributes.
pub struct ConsumedFrom<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Consumer group.
    pub group: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl MessagingTracer {
    /// Starts a `process <topic>` consumer span, child of the record's `traceparent`.
    /// The returned context carries the span; end it with [`end`].
    pub fn process(&self, from: &ConsumedFrom<'_>, headers: Option<&BorrowedHeaders>) -> Context {
        let parent = match headers {
            Some(h) => self.propagator.extract(&KafkaHeaders(h)),
            None => Context::new(),
        };
        let mut builder = self
            .tracer
            .span_builder(span_name("process", from.topic))
            .with_kind(SpanKind::Consumer);
        if self.detailed {
            builder = builder.with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.destination.name", from.topic.to_string()),
                KeyValue::new("messaging.consumer.group.name", from.group.to_string()),
                KeyValue::new(
                    "messaging.destination.partition.id",
                    from.partition.to_string(),
                ),
                KeyValue::new("messaging.kafka.offset", from.offset),
            ]);
        }
        let span = builder.start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// Starts a `send <topic>` producer span under `parent` (or a new trace if
    /// `parent` has no span), e.g. for a reading entering Gale at ingest.
    pub fn send(&self, topic: &str, parent: &Context) -> Context {
        let mut builder = self
            .tracer
            .span_builder(span_name("send", topic))
            .with_kind(SpanKind::Producer);
        if self.detailed {
            builder = builder.with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.destination.name", topic.to_string()),
            ]);
        }
        let span = builder.start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    /// Reads a remote parent from HTTP-style headers (e.g. an ingest request).
    pub fn extract_map(&self, get: impl Fn(&str) -> Option<String>) -> Context {
        struct Getter<F>(F, Vec<String>);
        impl<F: Fn(&str) -> Option<String>> Extractor for Getter<F> {
            fn get(&self, key: &str) -> Option<&str> {
                let idx = match key {
                    TRACEPARENT => 0,
                    TRACESTATE => 1,
                    _ => return None,
                };
                self.1
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
        self.propagator.extract(&Getter(get, values))
    }

    /// Adds `traceparent` (and `tracestate`) of `cx` to `headers`, replacing
    /// any trace headers copied from upstream.
    pub fn inject(&self, cx: &Context, headers: OwnedHeaders) -> OwnedHeaders {
        let mut pairs = HeaderPairs::default();
        self.propagator.inject_context(cx, &mut pairs);
        let mut out = headers;
        for (k, v) in &pairs.0 {
            out = out.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        out
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

/// Copies `headers` except the trace-context ones, which the caller replaces.
pub fn copy_non_trace_headers(headers: Option<&BorrowedHeaders>) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = headers {
        for header in h.iter() {
            if header.key == TRACEPARENT || header.key == TRACESTATE {
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

fn span_name(op: &str, topic: &str) -> Cow<'static, str> {
    Cow::Owned(format!("{op} {topic}"))
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

    #[test]
    fn unsampled_spans_still_propagate_ids() {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .build();
        let tracer = MessagingTracer {
            tracer: provider.tracer("test"),
            propagator: TraceContextPropagator::new(),
            detailed: false,
        };
        let root = tracer.send("gale.raw", &Context::new());
        let headers = tracer.inject(&root, OwnedHeaders::new());
        let tp = headers
            .iter()
            .find(|h| h.key == TRACEPARENT)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .expect("traceparent written");
        let trace = trace_id_of(&tp).unwrap().to_string();
        assert_ne!(trace, "0".repeat(32));
        // A child continues the same trace.
        let child = tracer.send("gale.validated", &root);
        let child_headers = tracer.inject(&child, OwnedHeaders::new());
        let child_tp = child_headers
            .iter()
            .find(|h| h.key == TRACEPARENT)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .unwrap();
        assert_eq!(trace_id_of(&child_tp), Some(trace.as_str()));
        assert_ne!(child_tp, tp);
    }
}
