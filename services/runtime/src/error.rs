//! The runtime's one error type. Variants separate what an operator must fix
//! (configuration, an incompatible schema) from what the service waits out
//! (a broker or registry outage).

use std::time::Duration;

/// Errors raised by the shared runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration could not be loaded; the message names the key and what was expected.
    #[error("configuration error: {0}")]
    Config(String),

    /// A Kafka client could not be created or an admin operation failed.
    #[error("kafka error during {context}: {source}")]
    Kafka {
        /// What the runtime was doing.
        context: String,
        /// The underlying client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },

    /// The schema registry refused or could not be reached.
    #[error("schema registry error for subject {subject}: {message}")]
    Registry {
        /// Subject being registered or looked up.
        subject: String,
        /// What the registry said, or why it could not be reached.
        message: String,
        /// True when retrying later may succeed (network failure, 5xx).
        retriable: bool,
    },

    /// A schema file shipped with Gale does not parse.
    #[error("invalid Avro schema {name}: {message}")]
    Schema {
        /// Which schema.
        name: String,
        /// The parser's complaint.
        message: String,
    },

    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address that was asked for.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Telemetry (OTLP exporter, log subscriber) could not be set up.
    #[error("telemetry setup failed: {0}")]
    Telemetry(String),

    /// A dependency stayed unavailable for longer than the caller allowed.
    #[error("{what} still unavailable after {waited:?}: {last_error}")]
    Unavailable {
        /// Which dependency.
        what: String,
        /// How long the service kept retrying.
        waited: Duration,
        /// The last error seen.
        last_error: String,
    },

    /// Shutdown was requested while the operation was in progress.
    #[error("shutdown requested")]
    Shutdown,
}

impl Error {
    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }
}
