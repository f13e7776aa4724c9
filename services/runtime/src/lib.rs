//! The plumbing every Gale service shares, written once.
//!
//! A service crate holds its domain logic (rules, detectors, windows) as plain
//! types and functions, and a `main.rs` that wires them to this crate: layered
//! configuration ([`config`]), the consume → process → produce loop with
//! offsets stored only after every output is acknowledged ([`pipeline`]), Avro
//! in the Confluent wire format against any compatible registry ([`avro`]),
//! dead-letter records ([`dlq`]), retry and outage back-off ([`retry`]),
//! logs, traces and metrics ([`telemetry`], [`metrics`]), the HTTP endpoints
//! for probes and Prometheus ([`http`]), and signal-driven shutdown
//! ([`shutdown`]).

pub mod avro;
pub mod binary;
pub mod config;
pub mod dlq;
pub mod error;
pub mod frontier;
pub mod health;
pub mod http;
pub mod kafka;
pub mod keepalive;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod retry;
pub mod schema;
pub mod service;
pub mod shutdown;
pub mod sink;
pub mod state;
pub mod storage;
pub mod telemetry;

pub use error::Error;
pub use service::Service;

/// Runs CPU-heavy work (decoding, parsing) off the async worker threads'
/// queue: in place on a multi-threaded runtime (other tasks move to other
/// workers), inline on a single-threaded one.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}
