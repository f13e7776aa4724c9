//! What a running Gale service is made of, started in one call.
//!
//! [`Service::start`] sets up telemetry and metrics, installs the signal
//! handler, serves the probe endpoints, creates the producer and the registry
//! client, and keeps the broker and registry readiness checks fresh. The
//! service's `main.rs` then builds its loop on top and calls
//! [`Service::finish`] when the loop returns.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};

use crate::avro::{Encoder, Registry};
use crate::config::RuntimeConfig;
use crate::health::Health;
use crate::http;
use crate::kafka::{self, Fetching, GaleContext, Producer};
use crate::metrics::{self, StageMetrics};
use crate::retry::Backoff;
use crate::schema::SchemaFile;
use crate::shutdown::{self, sleep_or_cancel, CancellationToken};
use crate::telemetry::{MessagingTracer, Telemetry};
use crate::Error;

/// The consumer of a consuming loop and what it shares with its context.
pub struct LoopConsumer {
    /// The consumer, subscribed.
    pub consumer: StreamConsumer<GaleContext>,
    /// Its consumer group.
    pub group: String,
    /// Partitions revoked since the loop last looked.
    pub revoked: kafka::Revocations,
    /// Set while the loop waits with partitions paused (for [`crate::keepalive::Keepalive`]).
    pub hold: Arc<AtomicBool>,
}

/// A started service.
pub struct Service {
    name: String,
    /// The shared configuration sections.
    pub config: RuntimeConfig,
    /// Readiness checks.
    pub health: Health,
    /// Metric handles of this stage.
    pub metrics: StageMetrics,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Schema registry client.
    pub registry: Registry,
    /// The service's producer.
    pub producer: Producer,
    /// Messaging spans and trace propagation.
    pub tracer: MessagingTracer,
    telemetry: Telemetry,
    http_addr: SocketAddr,
    http_task: tokio::task::JoinHandle<()>,
    http_stop: CancellationToken,
    checks_task: tokio::task::JoinHandle<()>,
}

impl Service {
    /// Starts the shared parts of service `name`.
    pub async fn start(name: &str, config: RuntimeConfig) -> Result<Service, Error> {
        let telemetry = Telemetry::init(&format!("gale-{name}"), &config.telemetry)?;
        config.kafka.check()?;
        let prometheus = metrics::install();
        let metrics = StageMetrics::new(name);
        let health = Health::for_stage(name);
        // Not ready until start-up completes and the dependencies answered.
        health.fail("startup", "starting");
        health.fail("broker", "not checked yet");
        health.fail("registry", "not checked yet");
        let shutdown = shutdown::install(config.processing.shutdown_timeout);
        // The probes outlive the drain: `/readyz` turns 503 at the signal,
        // `/healthz` and `/metrics` keep answering until `finish`.
        let http_stop = CancellationToken::new();
        let (http_addr, http_task) = http::serve(
            config.http.listen,
            http::probe_routes(health.clone(), prometheus),
            http_stop.clone(),
        )
        .await?;
        tracing::info!(service = name, addr = %http_addr, "probes and metrics listening");
        let producer = kafka::producer(
            &config.kafka,
            GaleContext::new(metrics.clone(), health.clone()),
        )?;
        let registry = Registry::new(&config.registry)?;
        let checks_task = tokio::spawn(watch_dependencies(
            producer.clone(),
            registry.clone(),
            health.clone(),
            shutdown.clone(),
        ));
        Ok(Service {
            name: name.to_string(),
            tracer: telemetry.messaging(name),
            config,
            health,
            metrics,
            shutdown,
            registry,
            producer,
            telemetry,
            http_addr,
            http_task,
            http_stop,
            checks_task,
        })
    }

    /// Marks start-up as complete; `/readyz` can pass from now on.
    pub fn started(&self) {
        self.health.ok("startup");
    }

    /// Service (stage) name, e.g. `validate`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Address the probe listener is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// A consumer of `topics` in this service's group, for a consuming loop:
    /// offsets stored only when told, synchronous commit on revocation,
    /// revocations and waits shared with its context.
    pub fn subscribe(&self, topics: &[&str], fetching: Fetching) -> Result<LoopConsumer, Error> {
        let group = kafka::group_id(&self.config.kafka, self.name());
        let revoked = kafka::Revocations::default();
        let hold = Arc::<AtomicBool>::default();
        let consumer = kafka::consumer_for(
            &self.config.kafka,
            &group,
            self.kafka_context()
                .with_revocations(revoked.clone())
                .with_hold(hold.clone()),
            fetching,
        )?;
        consumer
            .subscribe(topics)
            .map_err(|e| Error::kafka("subscribing", e))?;
        Ok(LoopConsumer {
            consumer,
            group,
            revoked,
            hold,
        })
    }

    /// A fresh client context for another Kafka client of this service.
    pub fn kafka_context(&self) -> GaleContext {
        GaleContext::new(self.metrics.clone(), self.health.clone())
    }

    /// Creates `topics` when `kafka.create_topics` is on.
    pub async fn ensure_topics(&self, topics: &[&str]) -> Result<(), Error> {
        if !self.config.kafka.create_topics {
            return Ok(());
        }
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match kafka::ensure_topics(&self.config.kafka, topics).await {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() < self.config.kafka.startup_wait => {
                    tracing::warn!(error = %e, "cannot create topics yet; retrying");
                    if !sleep_or_cancel(&self.shutdown, backoff.next_delay()).await {
                        return Err(Error::Shutdown);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Registers `schema` as the value schema of `topic`, retrying an
    /// unreachable registry for a while; a rejection fails at once.
    pub async fn register_schema(&self, topic: &str, schema: SchemaFile) -> Result<Encoder, Error> {
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match self.registry.register(topic, schema).await {
                Ok(encoder) => return Ok(encoder),
                Err(Error::Registry {
                    retriable: true,
                    message,
                    subject,
                }) => {
                    if started.elapsed() >= self.config.registry.startup_wait {
                        return Err(Error::Unavailable {
                            what: format!(
                                "schema registry at {} (subject {subject})",
                                self.registry.url()
                            ),
                            waited: started.elapsed(),
                            last_error: message,
                        });
                    }
                    tracing::warn!(subject, error = %message, "registry unreachable; retrying");
                    if !sleep_or_cancel(&self.shutdown, backoff.next_delay()).await {
                        return Err(Error::Shutdown);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Flushes the producer and telemetry and stops the HTTP listener.
    pub async fn finish(self) {
        self.shutdown.cancel();
        let bound = self
            .config
            .processing
            .shutdown_timeout
            .min(Duration::from_secs(10));
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(bound)).await;
        self.checks_task.abort();
        self.http_stop.cancel();
        let _ = self.http_task.await;
        self.telemetry.shutdown();
        tracing::info!(service = %self.name, "stopped");
    }
}

async fn watch_dependencies(
    producer: Producer,
    registry: Registry,
    health: Health,
    token: CancellationToken,
) {
    loop {
        if let Some(fatal) = producer.fatal_error() {
            // librdkafka cannot recover a producer from a fatal error; exit so
            // the supervisor restarts the service with a fresh one. Offsets of
            // unfinished work were never stored, so nothing is lost.
            health.fail("broker", format!("fatal producer error: {fatal}"));
            tracing::error!(error = %fatal, "fatal producer error; exiting for a restart");
            token.cancel();
            tokio::time::sleep(Duration::from_secs(5)).await;
            std::process::exit(3);
        }
        match producer.ping(Duration::from_secs(3)).await {
            Ok(()) => health.ok("broker"),
            Err(e) => health.fail("broker", format!("metadata request failed: {e}")),
        }
        match registry.ping().await {
            Ok(()) => health.ok("registry"),
            Err(e) => health.fail("registry", e),
        }
        if !sleep_or_cancel(&token, Duration::from_secs(5)).await {
            health.fail("shutdown", "draining before exit");
            return;
        }
    }
}
