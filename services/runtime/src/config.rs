//! Layered, typed configuration: defaults < optional TOML file < `GALE_`
//! environment variables.
//!
//! Every section is a struct with `deny_unknown_fields`, so a typo fails at
//! start with the key's name instead of being silently ignored. Environment
//! variables address nested keys with `__` (`GALE_KAFKA__BOOTSTRAP_SERVERS`);
//! variables without `__` (such as `GALE_KAFKA_BOOTSTRAP`, read by the
//! scripts) are not configuration. Secrets are wrapped in [`Secret`], whose
//! `Debug` and `Display` never show the value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::Error;

/// Environment variable that names the TOML file, when `--config` is not given.
pub const CONFIG_FILE_ENV: &str = "GALE_CONFIG";

/// Loads `T` from its defaults, then `file` (if any), then the environment.
///
/// Errors name the offending key and what was expected, e.g.
/// `invalid type: found string "abc", expected u16 for key "http.listen"`.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> Result<T, Error> {
    let mut figment = Figment::new();
    let env_file = std::env::var_os(CONFIG_FILE_ENV).map(std::path::PathBuf::from);
    if let Some(path) = file.map(Path::to_path_buf).or(env_file) {
        if !path.exists() {
            return Err(Error::Config(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    merge_env(figment)
        .extract::<T>()
        .map_err(|e| Error::Config(describe(e)))
}

/// What `--check-config` prints when the configuration is accepted.
pub const CHECK_OK: &str = "config ok";

/// Exit status of `--check-config` when the configuration is refused.
pub const CHECK_FAILED_STATUS: i32 = 2;

/// Loads `T` as [`load`] does; with `check` (`--check-config`), also runs
/// `validate` (the service's own checks that need no connection), prints
/// [`CHECK_OK`] and exits 0, or prints the error (which names the key) and
/// exits [`CHECK_FAILED_STATUS`]. Deployments run this to prove that the
/// environment a manifest gives a service is a configuration it accepts,
/// without a broker, registry or database.
pub fn load_or_check<T, E>(
    file: Option<&Path>,
    check: bool,
    validate: impl FnOnce(&T) -> Result<(), E>,
) -> Result<T, Error>
where
    T: DeserializeOwned,
    E: fmt::Display,
{
    if !check {
        return load(file);
    }
    match check_config(file, validate) {
        Ok(()) => {
            println!("{CHECK_OK}");
            std::process::exit(0)
        }
        Err(message) => {
            eprintln!("config error: {message}");
            std::process::exit(CHECK_FAILED_STATUS)
        }
    }
}

/// The check behind `--check-config`: the error text, or nothing when the
/// configuration loads and passes `validate`.
pub fn check_config<T, E>(
    file: Option<&Path>,
    validate: impl FnOnce(&T) -> Result<(), E>,
) -> Result<(), String>
where
    T: DeserializeOwned,
    E: fmt::Display,
{
    let config: T = load(file).map_err(|e| e.to_string())?;
    validate(&config).map_err(|e| e.to_string())
}

/// Loads `T` from a TOML string and the environment; used by tests and tools.
pub fn load_str<T: DeserializeOwned>(toml: &str) -> Result<T, Error> {
    merge_env(Figment::new().merge(Toml::string(toml)))
        .extract::<T>()
        .map_err(|e| Error::Config(describe(e)))
}

/// Merges the `GALE_` environment. Values are parsed (`3` is a number,
/// `true` a bool) except for secrets and librdkafka properties, which are
/// taken verbatim: a password `007` must not become `7`.
fn merge_env(figment: Figment) -> Figment {
    let env = Env::prefixed("GALE_")
        .filter(|key| key.as_str().contains("__"))
        .split("__");
    let mut figment = figment.merge(env.clone().filter(|key| !is_verbatim_key(key.as_str())));
    for (key, value) in env.iter() {
        if is_verbatim_key(key.as_str()) {
            figment = figment.merge(Serialized::global(key.as_str(), value));
        }
    }
    figment
}

/// Keys whose environment values are text even when they look like numbers.
fn is_verbatim_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    key.starts_with("kafka.properties.")
        || ["password", "secret", "api_key", "token"]
            .iter()
            .any(|word| last.contains(word))
}

fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let mut text = e.kind.to_string();
            if !e.path.is_empty() {
                text.push_str(&format!(" for key `{}`", e.path.join(".")));
            }
            if let Some(meta) = &e.metadata {
                text.push_str(&format!(" (from {}", meta.name));
                if let Some(source) = &e.metadata.as_ref().and_then(|m| m.source.clone()) {
                    text.push_str(&format!(" {source}"));
                }
                text.push(')');
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A string that must never appear in logs or error messages.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Environment values arrive typed (`1000` is a number); librdkafka
        // properties and passwords are text either way.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            Text(String),
            Int(i64),
            Float(f64),
            Bool(bool),
        }
        Ok(Secret(match Any::deserialize(d)? {
            Any::Text(s) => s,
            Any::Int(i) => i.to_string(),
            Any::Float(f) => f.to_string(),
            Any::Bool(b) => b.to_string(),
        }))
    }
}

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is handed to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Kafka connection and client settings shared by every service.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers, e.g. `kafka-0:9092,kafka-1:9092`.
    pub bootstrap_servers: String,
    /// Consumer group id; defaults to `gale-<service>`.
    pub group_id: Option<String>,
    /// Static group membership (`group.instance.id`): a stable name per
    /// replica (the pod name on Kubernetes). A member that restarts within
    /// the session timeout gets its partitions back without a rebalance.
    /// Two running replicas must never share one. Unset: dynamic membership.
    pub group_instance_id: Option<String>,
    /// Create missing topics at start. Convenient locally; in production topics are
    /// usually provisioned by the platform and this is turned off.
    pub create_topics: bool,
    /// Partitions for topics this service creates.
    pub topic_partitions: i32,
    /// Replication factor for topics this service creates.
    pub replication_factor: i32,
    /// How long the producer keeps trying to deliver one record before reporting
    /// failure (librdkafka `message.timeout.ms`). The runtime then sends it again, so
    /// this bounds how often an outage is reported, not whether data is kept.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// How long start-up keeps retrying topic creation while the broker is
    /// unreachable before the service exits with the reason.
    #[serde(with = "humantime_serde")]
    pub startup_wait: Duration,
    /// Any librdkafka property, passed through unchanged (`security.protocol`,
    /// `sasl.mechanisms`, `sasl.username`, `sasl.password`, `ssl.ca.location`, ...).
    /// From the environment, `_` in a key stands for `.`:
    /// `GALE_KAFKA__PROPERTIES__SECURITY_PROTOCOL=SASL_SSL`.
    pub properties: BTreeMap<String, Secret>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: None,
            group_instance_id: None,
            create_topics: true,
            topic_partitions: 3,
            replication_factor: 1,
            delivery_timeout: Duration::from_secs(60),
            startup_wait: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }
}

/// librdkafka properties the runtime sets itself because delivery guarantees
/// depend on them; a pass-through value for one of these is a config error.
pub const RESERVED_KAFKA_PROPERTIES: [&str; 9] = [
    "enable.auto.offset.store",
    "enable.auto.commit",
    "acks",
    "request.required.acks",
    "group.id",
    "group.instance.id",
    "bootstrap.servers",
    "partitioner",
    "partition.assignment.strategy",
];

impl KafkaConfig {
    /// Checks the pass-through properties: none may switch off what
    /// at-least-once delivery relies on.
    pub fn check(&self) -> Result<(), Error> {
        for (key, value) in self.librdkafka_properties() {
            if RESERVED_KAFKA_PROPERTIES.contains(&key.as_str()) {
                let hint = match key.as_str() {
                    "group.id" => "; use `kafka.group_id`",
                    "group.instance.id" => "; use `kafka.group_instance_id`",
                    "partitioner" => "; Gale uses murmur2 so a key lands on the partition Java clients pick",
                    "partition.assignment.strategy" => "; Gale uses cooperative-sticky so a rebalance moves only the partitions that must move",
                    "bootstrap.servers" => "; use `kafka.bootstrap_servers`",
                    _ => "; Gale stores offsets only after outputs are acknowledged and needs it",
                };
                return Err(Error::Config(format!(
                    "key `kafka.properties.{key}` cannot be overridden{hint}"
                )));
            }
            if key == "enable.idempotence" && value.trim() != "true" {
                // Still at-least-once (offsets follow acknowledgements); a
                // retried send may now store a record twice, which the
                // sinks' event ids absorb.
                tracing::warn!("kafka.properties.enable.idempotence is off: retried sends may duplicate records");
            }
        }
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::Config(
                "key `kafka.bootstrap_servers` is empty; expected `host:port[,host:port...]`"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Pass-through properties with their librdkafka names.
    pub fn librdkafka_properties(&self) -> impl Iterator<Item = (String, &str)> {
        self.properties.iter().map(|(k, v)| {
            let key = if k.contains('.') {
                k.clone()
            } else {
                k.replace('_', ".")
            };
            (key, v.expose())
        })
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Property values can hold credentials; show the keys only.
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("group_instance_id", &self.group_instance_id)
            .field("create_topics", &self.create_topics)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Subject compatibility levels of a Confluent-compatible registry.
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// New schemas read data written with the previous one.
    Backward,
    /// New schemas read data written with every earlier one.
    BackwardTransitive,
    /// The previous schema reads data written with the new one.
    Forward,
    /// Every earlier schema reads data written with the new one.
    ForwardTransitive,
    /// Backward and forward against the previous schema.
    Full,
    /// Backward and forward against every earlier schema.
    FullTransitive,
    /// No checks.
    None,
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

/// Where the Confluent-compatible schema registry is and how to talk to it.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://schema-registry:8081`. Credentials in the URL
    /// (`https://key:secret@host`) are moved to basic auth and never printed.
    pub url: String,
    /// Basic-auth user (Confluent Cloud API key), if the registry needs one.
    pub username: Option<String>,
    /// Basic-auth password (Confluent Cloud API secret).
    pub password: Option<Secret>,
    /// Timeout for one registry request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Compatibility level for the subjects this service registers when the
    /// subject has none of its own: BACKWARD, BACKWARD_TRANSITIVE, FORWARD,
    /// FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE. A level already set
    /// on the subject (by the platform team, say) is left alone.
    pub compatibility: Compatibility,
    /// Set `compatibility` on subjects that have no level of their own. Turn
    /// off where the registry is managed centrally.
    pub set_compatibility: bool,
    /// How long start-up keeps retrying an unreachable registry before the
    /// service exits with the reason.
    #[serde(with = "humantime_serde")]
    pub startup_wait: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: "http://127.0.0.1:8081".into(),
            username: None,
            password: None,
            timeout: Duration::from_secs(5),
            compatibility: Compatibility::Backward,
            set_compatibility: true,
            startup_wait: Duration::from_secs(30),
        }
    }
}

impl RegistryConfig {
    /// The URL without credentials, plus the credentials it carried (if any).
    pub fn split_credentials(&self) -> (String, Option<(String, Option<Secret>)>) {
        let trimmed = self.url.trim().trim_end_matches('/');
        match url::Url::parse(trimmed) {
            Ok(mut url) if !url.username().is_empty() => {
                let user = percent_decode(url.username());
                let password = url.password().map(|p| Secret::new(percent_decode(p)));
                let _ = url.set_username("");
                let _ = url.set_password(None);
                (
                    url.as_str().trim_end_matches('/').to_string(),
                    Some((user, password)),
                )
            }
            _ => (trimmed.to_string(), None),
        }
    }

    /// The URL safe to print.
    pub fn display_url(&self) -> String {
        self.split_credentials().0
    }
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.display_url())
            .field("username", &self.username)
            .field("password", &self.password)
            .field("timeout", &self.timeout)
            .field("compatibility", &self.compatibility)
            .field("set_compatibility", &self.set_compatibility)
            .field("startup_wait", &self.startup_wait)
            .finish()
    }
}

/// The per-service HTTP listener for probes and metrics.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free port (logged at start).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9100)),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines for terminals.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs and traces. Traces are exported over OTLP when the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` variable is set; other `OTEL_*` variables
/// (protocol, headers, sampler, resource attributes) are honoured as usual.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `human` or `json`.
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `info,gale_runtime=debug`.
    /// `RUST_LOG` overrides it.
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Human,
            log_level: "info".into(),
        }
    }
}

/// How the consume → process → produce loop batches, retries and shuts down.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessingConfig {
    /// Most records handled per batch; offsets are stored once per batch after
    /// every output of the batch is acknowledged.
    pub batch_size: usize,
    /// Back-off before each retry of a record whose processing failed in a way
    /// that may pass (e.g. a lookup timed out). After the last one the record is
    /// dead-lettered with the attempt count.
    #[serde(deserialize_with = "duration_list")]
    pub retry_backoff: Vec<Duration>,
    /// First wait when a dependency (broker, registry, database) is down.
    #[serde(with = "humantime_serde")]
    pub outage_backoff_initial: Duration,
    /// Longest wait between attempts while a dependency stays down.
    #[serde(with = "humantime_serde")]
    pub outage_backoff_max: Duration,
    /// Bound on draining in-flight work after SIGTERM/SIGINT before the process exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            batch_size: 1000,
            retry_backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(15),
            ],
            outage_backoff_initial: Duration::from_millis(500),
            outage_backoff_max: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

fn duration_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    items
        .iter()
        .map(|s| {
            humantime::parse_duration(s).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration like `1s` or `500ms`: {e}"
                ))
            })
        })
        .collect()
}

/// Keyed state and watermarks of a stateful stage (see [`crate::state`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// How far behind the largest event time seen on a partition its
    /// watermark stays, so readings that arrive a little out of order are
    /// still on time.
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// How often values of no more use (by the stage's own rule at the
    /// watermark) are deleted from memory and the changelog. Only memory
    /// depends on it, never a result.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How often changed state is written to the changelog; the input
    /// offsets it covers are stored one to two intervals later, once the
    /// writes are acknowledged (the loop does not wait for them). A key
    /// changed many times in between is written once; a crash replays at
    /// most about two intervals of input (with the same results).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// A partition that has received nothing for this long (wall clock)
    /// while its data was live has its event time moved on to the wall
    /// clock less this timeout, so timers (a silent asset) fire on a quiet
    /// partition. `0s` turns it off. Never moves backfilled (old) data.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            lateness: Duration::from_secs(0),
            sweep_interval: Duration::from_secs(60),
            commit_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The sections every service has, gathered for [`crate::Service::start`].
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// Schema registry.
    pub registry: RegistryConfig,
    /// Probe and metrics listener.
    pub http: HttpConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Loop tuning.
    pub processing: ProcessingConfig,
    /// Keyed state (stateful stages only; defaults elsewhere).
    pub state: StateConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment is shared by the tests running in parallel; those
    /// that load config (and so read it) take turns.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn locked<T: DeserializeOwned>(toml: &str) -> Result<T, Error> {
        let _turn = ENV.lock().unwrap_or_else(|p| p.into_inner());
        load_str(toml)
    }

    fn with_env<R>(vars: &[(&str, &str)], f: impl FnOnce() -> R) -> R {
        let _turn = ENV.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let out = f();
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        out
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        kafka: KafkaConfig,
        http: HttpConfig,
        processing: ProcessingConfig,
    }

    #[test]
    fn check_config_names_an_unknown_key_from_the_environment() {
        let err = with_env(&[("GALE_KAFKA__BOOTSTRAP_SERVER", "x:9092")], || {
            check_config::<Sample, Error>(None, |_| Ok(()))
        })
        .unwrap_err();
        assert!(err.contains("bootstrap_server"), "{err}");
        let ok = with_env(&[("GALE_KAFKA__BOOTSTRAP_SERVERS", "x:9092")], || {
            check_config::<Sample, Error>(None, |s| s.kafka.check())
        });
        assert_eq!(ok, Ok(()));
        let refused = with_env(&[("GALE_KAFKA__BOOTSTRAP_SERVERS", " ")], || {
            check_config::<Sample, Error>(None, |s| s.kafka.check())
        })
        .unwrap_err();
        assert!(refused.contains("kafka.bootstrap_servers"), "{refused}");
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let s: Sample = locked("").unwrap();
        assert_eq!(s.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(s.processing.retry_backoff.len(), 3);
        assert_eq!(s.processing.retry_backoff[2], Duration::from_secs(15));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = locked::<Sample>("[kafka]\nbootstrap_server = 'x'\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bootstrap_server"), "{text}");
        assert!(text.contains("kafka"), "{text}");
    }

    #[test]
    fn bad_value_names_key_and_expectation() {
        let err = locked::<Sample>("[http]\nlisten = 'not an address'\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("http.listen"), "{text}");
        assert!(text.contains("socket address"), "{text}");
    }

    #[test]
    fn durations_are_human_readable() {
        let s: Sample =
            locked("[processing]\nretry_backoff = ['10ms', '2s']\nshutdown_timeout = '5s'\n")
                .unwrap();
        assert_eq!(
            s.processing.retry_backoff,
            vec![Duration::from_millis(10), Duration::from_secs(2)]
        );
        assert_eq!(s.processing.shutdown_timeout, Duration::from_secs(5));
    }

    #[test]
    fn secrets_do_not_print() {
        let s: Sample =
            locked("[kafka.properties]\n'sasl.password' = 'hunter2'\nsasl_username = 'u'\nlinger_ms = 20\n")
                .unwrap();
        let debug = format!("{:?}", s.kafka);
        assert!(!debug.contains("hunter2"), "{debug}");
        let props: Vec<_> = s.kafka.librdkafka_properties().collect();
        assert!(props.contains(&("sasl.password".to_string(), "hunter2")));
        assert!(props.contains(&("sasl.username".to_string(), "u")));
        assert!(props.contains(&("linger.ms".to_string(), "20")));
        assert_eq!(format!("{}", Secret::new("x")), "[redacted]");
    }

    #[test]
    fn secrets_from_the_environment_stay_text() {
        #[derive(Debug, Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        struct WithRegistry {
            registry: RegistryConfig,
            kafka: KafkaConfig,
        }
        let c: WithRegistry = with_env(
            &[
                ("GALE_REGISTRY__PASSWORD", "007"),
                ("GALE_KAFKA__PROPERTIES__LINGER_MS", "010"),
            ],
            || load_str("").unwrap(),
        );
        assert_eq!(c.registry.password.unwrap().expose(), "007");
        let props: Vec<_> = c.kafka.librdkafka_properties().collect();
        assert!(
            props.contains(&("linger.ms".to_string(), "010")),
            "{props:?}"
        );
    }

    #[test]
    fn delivery_guarantees_cannot_be_overridden() {
        let s: Sample = locked(
            "[kafka.properties]
'enable.auto.offset.store' = 'true'
",
        )
        .unwrap();
        let err = s.kafka.check().unwrap_err().to_string();
        assert!(
            err.contains("kafka.properties.enable.auto.offset.store"),
            "{err}"
        );
        let s: Sample = locked(
            "[kafka.properties]
acks = '1'
",
        )
        .unwrap();
        assert!(s.kafka.check().is_err());
        let s: Sample = locked(
            "[kafka.properties]
'security.protocol' = 'SASL_SSL'
",
        )
        .unwrap();
        s.kafka.check().unwrap();
    }

    #[test]
    fn registry_credentials_in_the_url_are_split_off_and_never_printed() {
        let c = RegistryConfig {
            url: "https://key:p%40ss@sr.example.com:8081/".into(),
            ..RegistryConfig::default()
        };
        let (url, creds) = c.split_credentials();
        assert_eq!(url, "https://sr.example.com:8081");
        let (user, password) = creds.unwrap();
        assert_eq!(user, "key");
        assert_eq!(password.unwrap().expose(), "p@ss");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("p%40ss") && !debug.contains("p@ss"),
            "{debug}"
        );
        assert_eq!(
            RegistryConfig::default().split_credentials(),
            ("http://127.0.0.1:8081".to_string(), None)
        );
    }

    #[test]
    fn compatibility_is_checked_when_loading() {
        #[derive(Debug, Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        struct WithRegistry {
            registry: RegistryConfig,
        }
        let c: WithRegistry = locked(
            "[registry]
compatibility = 'FULL_TRANSITIVE'
",
        )
        .unwrap();
        assert_eq!(c.registry.compatibility, Compatibility::FullTransitive);
        assert_eq!(c.registry.compatibility.to_string(), "FULL_TRANSITIVE");
        let err = locked::<WithRegistry>(
            "[registry]
compatibility = 'BACKWARDS'
",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("registry.compatibility"), "{err}");
    }
}
