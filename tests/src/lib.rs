//! Test support: the real broker, registry and Postgres of the test run, the
//! service binaries as child processes, and waits with deadlines.
//!
//! `make test` (scripts/test.sh) starts a Tansu broker, the dev registry and
//! Postgres (or uses the ones named by `GALE_KAFKA_BOOTSTRAP`,
//! `GALE_REGISTRY_URL`, `DATABASE_URL`) and runs the tests against them.
//! Every test uses its own topics, consumer groups and databases, so tests
//! are independent and can run in parallel.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gale_runtime::avro::Registry;
use gale_runtime::config::RegistryConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// The shared infrastructure of this test run.
#[derive(Clone, Debug)]
pub struct Stack {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// Schema registry URL.
    pub registry_url: String,
    /// Postgres server URL (a maintenance database; tests create their own).
    pub database_url: String,
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with `make test` (scripts/test.sh), which starts the broker, registry and Postgres")
    })
}

/// The stack named by the environment.
pub fn stack() -> Stack {
    Stack {
        bootstrap: required("GALE_KAFKA_BOOTSTRAP"),
        registry_url: required("GALE_REGISTRY_URL"),
        database_url: required("DATABASE_URL"),
    }
}

/// `prefix` plus a short random suffix: unique topic, group and database names.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `topics` with `partitions` partitions each.
pub async fn create_topics(bootstrap: &str, topics: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(new.iter(), &AdminOptions::new())
        .await
        .expect("create topics");
    for r in results {
        if let Err((t, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                panic!("creating {t}: {code:?}");
            }
        }
    }
}

/// A plain producer for test input (murmur2, as the services partition).
pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Sends one record and waits for its acknowledgement.
pub async fn send(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("send");
}

/// A registry client for the test registry.
pub fn registry(stack: &Stack) -> Registry {
    Registry::new(&RegistryConfig {
        url: stack.registry_url.clone(),
        ..RegistryConfig::default()
    })
    .expect("registry client")
}

/// Reads every partition of a topic from the beginning, outside any group.
pub struct TopicReader {
    consumer: BaseConsumer,
    topic: String,
}

impl TopicReader {
    /// A reader of `topic` (which must exist).
    pub fn new(bootstrap: &str, topic: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("consumer");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions = md.topics()[0].partitions().len();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        TopicReader {
            consumer,
            topic: topic.to_string(),
        }
    }

    /// Reads until `n` records arrived (panics after `timeout`).
    pub fn read(&self, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            if Instant::now() > deadline {
                panic!(
                    "only {} of {n} records on {} after {timeout:?}",
                    out.len(),
                    self.topic
                );
            }
            if let Some(r) = self.consumer.poll(Duration::from_millis(100)) {
                out.push(r.expect("consume").detach());
            }
        }
        out
    }

    /// Reads whatever arrives within `window`.
    pub fn poll_for(&self, window: Duration) -> Vec<OwnedMessage> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            if let Some(r) = self.consumer.poll(Duration::from_millis(50)) {
                out.push(r.expect("consume").detach());
            }
        }
        out
    }

    /// Reads whatever arrives until the topic is quiet for `quiet`.
    pub fn drain(&self, quiet: Duration) -> Vec<OwnedMessage> {
        let mut out = Vec::new();
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            if let Some(r) = self.consumer.poll(Duration::from_millis(100)) {
                out.push(r.expect("consume").detach());
                last = Instant::now();
            }
        }
        out
    }
}

/// Records currently on `topic` by watermarks (sum over partitions of high
/// minus low). Tansu 0.6 can report a high watermark behind the log end, so
/// tests that need exact counts read the records ([`TopicReader`]) instead.
pub fn record_count(bootstrap: &str, topic: &str) -> i64 {
    end_offsets(bootstrap, topic)
        .values()
        .map(|(low, end)| end - low)
        .sum()
}

/// Low watermark and true end offset per partition of `topic` (see
/// `gale_cli::inspect::end_offsets`: it also works on brokers that report
/// a short high watermark).
pub fn end_offsets(bootstrap: &str, topic: &str) -> std::collections::BTreeMap<i32, (i64, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "gale-tests-count")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    gale_cli::inspect::end_offsets(bootstrap, topic, &partitions).expect("end offsets")
}
/// A header of `msg` as text.
pub fn header(msg: &OwnedMessage, key: &str) -> Option<String> {
    msg.headers().and_then(|h| {
        h.iter()
            .find(|x| x.key == key)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// All headers of `msg`.
pub fn headers(msg: &OwnedMessage) -> HashMap<String, String> {
    msg.headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        x.value
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Directory for this run's service logs.
pub fn log_dir() -> PathBuf {
    let dir = std::env::var_os("GALE_TEST_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("gale-test-logs"));
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// Path of a workspace binary built by `cargo build` (next to the test binary).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Test binaries live in target/<profile>/deps, other binaries in target/<profile>.
    let mut dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// A service running as a child process; killed when dropped.
pub struct ServiceProcess {
    child: Option<Child>,
    /// Binary name.
    pub name: String,
    /// Its probe address (`http.listen`).
    pub http: String,
    /// Where its output goes.
    pub log: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl ServiceProcess {
    /// Starts `name` with `env` (and `GALE_HTTP__LISTEN` on a free port).
    pub fn start(name: &str, env: &[(&str, String)], args: &[&str], label: &str) -> Self {
        let http = format!("127.0.0.1:{}", free_port());
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        env.push(("GALE_HTTP__LISTEN".into(), http.clone()));
        let log = log_dir().join(format!("{label}.log"));
        let mut p = ServiceProcess {
            child: None,
            name: name.to_string(),
            http,
            log,
            env,
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(bin(&self.name));
        // A test's own `RUST_LOG` for one service wins over the default.
        cmd.args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("GALE_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", self.name)),
        );
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let url = format!("http://{}/readyz", self.http);
        let client = reqwest::Client::new();
        let log = self.log.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if Instant::now() > deadline {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: String = tail
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "{} not ready after {timeout:?}; log {}:\n{tail}",
                    self.name,
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/readyz` status code right now (0 if it does not answer).
    pub async fn readiness(&self) -> u16 {
        reqwest::get(format!("http://{}/readyz", self.http))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Input records taken so far (see [`records_in`]).
    pub async fn records_in(&self) -> f64 {
        records_in(&self.metrics().await)
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again with the same settings.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory now and at its peak, in MiB (from /proc).
    pub fn memory_mib(&self) -> (f64, f64) {
        let Some(pid) = self.pid() else {
            return (0.0, 0.0);
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Tansu broker owned by one test (for tests that stop the broker).
pub struct Broker {
    child: Option<Child>,
    /// Port it listens on.
    pub port: u16,
    dir: PathBuf,
}

impl Broker {
    /// Starts Tansu with SQLite storage in `dir`, so data survives restarts.
    pub async fn start(dir: &Path) -> Broker {
        let mut b = Broker {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        b.spawn().await;
        b
    }

    /// `host:port`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir().join(format!("tansu-{}.log", self.port)))
            .expect("log");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                // Tansu reads the path relative to its working directory.
                "sqlite://tansu.db",
            ])
            .current_dir(&self.dir)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("tansu on PATH (scripts/test.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_for("tansu to listen", Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }

    /// Stops the broker: SIGTERM, then SIGKILL if it lingers.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh database on the test Postgres server, dropped with the value.
pub struct TestDatabase {
    /// URL of the new database.
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates a uniquely named database.
    pub async fn create(stack: &Stack) -> TestDatabase {
        create_database(stack, &unique("gale_test").replace('-', "_")).await
    }
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Best effort, on a separate thread so it works inside and outside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Common `GALE_*` variables pointing a service at the stack.
pub fn service_env(stack: &Stack, bootstrap: Option<&str>) -> Vec<(&'static str, String)> {
    vec![
        (
            "GALE_KAFKA__BOOTSTRAP_SERVERS",
            bootstrap.unwrap_or(&stack.bootstrap).to_string(),
        ),
        ("GALE_REGISTRY__URL", stack.registry_url.clone()),
        ("GALE_KAFKA__TOPIC_PARTITIONS", "3".into()),
        ("GALE_PROCESSING__SHUTDOWN_TIMEOUT", "20s".into()),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            super::replace_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            super::replace_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
    }
}

/// What standard tools see in a lake table (tests/interop/lake.py).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LakeStats {
    /// Rows.
    pub rows: i64,
    /// Distinct event ids.
    pub distinct_event_ids: i64,
    /// Sum of `power_kw`, if the table has it.
    pub sum_power_kw: Option<f64>,
    /// Parquet files.
    pub files: i64,
    /// `date/hour` partitions.
    pub partitions: Vec<String>,
}

/// The Python interpreter with DuckDB, pyarrow and confluent-kafka (`make test` sets it).
pub fn python() -> String {
    std::env::var("GALE_PYTHON").unwrap_or_else(|_| {
        panic!("GALE_PYTHON is not set: run the tests with `make test`, which prepares the Python tools")
    })
}

/// Reads a lake table with DuckDB (directory) or pyarrow (s3:// with `endpoint`).
pub fn lake_stats(table: &str, endpoint: Option<&str>, env: &[(&str, &str)]) -> Option<LakeStats> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/lake.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(table);
    if let Some(e) = endpoint {
        cmd.args(["--endpoint", e]);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run python");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // An empty table has no files to glob yet.
        if err.contains("No files found")
            || err.contains("No such file")
            || err.contains("does not exist")
        {
            return None;
        }
        panic!("lake.py failed: {err}");
    }
    Some(serde_json::from_slice(&out.stdout).expect("lake.py output"))
}

/// A Postgres cluster of one test's own (for tests that stop the database).
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    /// Port it listens on.
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// initdb + start, on a free port.
    pub fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .filter(|p| p.join("initdb").exists())
                    .max()
            })
            .expect("a PostgreSQL server installation under /usr/lib/postgresql");
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let _ = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status();
        }
        let pg = PrivatePostgres {
            dir,
            port: free_port(),
            bin,
            as_postgres,
        };
        let data = pg.dir.path().join("data");
        let status = pg
            .command("initdb")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb failed");
        pg.start_again();
        pg
    }

    fn command(&self, tool: &str) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        }
    }

    /// URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (again) on the same port.
    pub fn start_again(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        let status = self
            .command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
            ])
            .arg(format!(
                "-p {} -k /tmp -c listen_addresses=127.0.0.1",
                self.port
            ))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
    }

    /// Stops it (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A pg-sink config file storing `tables` (topic, table, keep latest) in `db_url`.
pub fn pg_sink_config(
    dir: &Path,
    db_url: &str,
    tables: &[(&str, &str, bool)],
    dlq: &str,
) -> PathBuf {
    let mut text = format!("[database]\nurl = \"{db_url}\"\n\n[sink]\ndead_letter = \"{dlq}\"\n");
    for (topic, table, latest) in tables {
        text.push_str(&format!(
            "\n[[sink.tables]]\ntopic = \"{topic}\"\ntable = \"{table}\"\n"
        ));
        if *latest {
            text.push_str("latest = { table = \"latest_readings\", key = \"asset_id\" }\n");
        }
    }
    let path = dir.join("pg-sink.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// An archive config file writing `tables` (topic, table path) to `store_toml`
/// (an inline table such as `{ url = "/tmp/lake" }`), rolling files after `max_age`.
pub fn archive_config(
    dir: &Path,
    store_toml: &str,
    tables: &[(&str, &str)],
    dlq: &str,
    max_age: &str,
) -> PathBuf {
    let mut text = format!(
        "[archive]\nstore = {store_toml}\nmax_file_age = \"{max_age}\"\ndead_letter = \"{dlq}\"\n"
    );
    for (topic, path) in tables {
        text.push_str(&format!(
            "\n[[archive.tables]]\ntopic = \"{topic}\"\npath = \"{path}\"\n"
        ));
    }
    let path = dir.join("archive.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// URL of database `name` on the test Postgres server; the database need
/// not exist yet (tests of services that wait for their database).
pub fn database_url(stack: &Stack, name: &str) -> String {
    replace_database(&stack.database_url, name)
}

/// Creates database `name` on the test server, dropped with the value.
pub async fn create_database(stack: &Stack, name: &str) -> TestDatabase {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&stack.database_url)
        .await
        .expect("connect to Postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    TestDatabase {
        url: database_url(stack, name),
        name: name.to_string(),
        admin_url: stack.database_url.clone(),
    }
}

/// The value of the series `series` (name with its labels, exactly as
/// Prometheus prints them) in a `/metrics` text, if present.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Input records a service has taken, over every topic and partition:
/// the sum of its `gale_records_in_total` series in a `/metrics` text.
pub fn records_in(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("gale_records_in_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every event id in each of the local lake `tables`, duplicates kept
/// (read by DuckDB: tests/interop/lake_ids.py).
pub fn lake_ids(tables: &[&Path]) -> Vec<Vec<String>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/lake_ids.py");
    let out = Command::new(python())
        .arg(script)
        .args(tables)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "lake_ids.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_table: HashMap<String, Vec<String>> =
        serde_json::from_slice(&out.stdout).expect("lake_ids.py output");
    tables
        .iter()
        .map(|t| {
            by_table
                .remove(&t.display().to_string())
                .unwrap_or_default()
        })
        .collect()
}

/// What `tests/interop/lake_files.py` reports about one data file.
#[derive(Debug, serde::Deserialize)]
pub struct LakeFile {
    /// Path relative to the table.
    pub path: String,
    /// Rows.
    pub rows: usize,
    /// Rows per row group.
    pub row_groups: Vec<usize>,
    /// Compression codecs used (Parquet names).
    pub codecs: Vec<String>,
    /// Smallest `event_time` (ms).
    pub min_event_time_ms: Option<i64>,
    /// Largest `event_time` (ms).
    pub max_event_time_ms: Option<i64>,
    /// Arrow type of each column, as pyarrow prints it.
    pub columns: std::collections::BTreeMap<String, String>,
    /// The manifest beside the file.
    pub manifest: Option<serde_json::Value>,
}

/// What `tests/interop/lake_files.py` reports about a local table.
#[derive(Debug, serde::Deserialize)]
pub struct LakeFiles {
    /// Every data file.
    pub files: Vec<LakeFile>,
    /// Rows pyarrow.dataset reads from the directory (stray files included).
    pub dataset_rows: usize,
}

/// Describes a local lake table file by file with pyarrow.
pub fn lake_files(table: &Path) -> LakeFiles {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/lake_files.py");
    let out = Command::new(python())
        .arg(script)
        .arg(table)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "lake_files.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("lake_files.py output")
}

/// Records of `topic` not yet committed by consumer group `group`
/// (partitions the group never committed count from the low watermark).
pub fn committed_lag(bootstrap: &str, group: &str, topic: &str) -> Result<i64, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| format!("committed offsets: {e}"))?;
    let ends = gale_cli::inspect::end_offsets(
        bootstrap,
        topic,
        &md.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect::<Vec<_>>(),
    )
    .map_err(|e| format!("end offsets: {e}"))?;
    let mut lag = 0;
    for e in committed.elements() {
        let (lo, end) = ends.get(&e.partition()).copied().unwrap_or((0, 0));
        lag += match e.offset() {
            Offset::Offset(o) => end - o.max(lo),
            _ => end - lo,
        };
    }
    Ok(lag)
}

/// A moto S3 server (from the test venv) holding one fresh bucket; stopped
/// when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The bucket created for the test.
    pub bucket: String,
}

impl Moto {
    /// Starts moto and creates a bucket of a unique name.
    pub async fn start() -> Moto {
        let port = free_port();
        let server = PathBuf::from(python())
            .parent()
            .expect("venv bin")
            .join("moto_server");
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log_dir().join(format!("moto-{port}.log"))).expect("log"))
            .spawn()
            .expect("moto_server (scripts/requirements.txt)");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: unique("lake"),
        };
        let client = reqwest::Client::new();
        wait_for("moto to create the bucket", Duration::from_secs(30), || {
            let client = client.clone();
            let url = format!("{}/{}", moto.endpoint, moto.bucket);
            async move {
                client
                    .put(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Credentials moto accepts, for processes that read the `AWS_*` variables.
pub const S3_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "gale-test"),
    ("AWS_SECRET_ACCESS_KEY", "gale-test-secret"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
];

/// Waits (up to 3 minutes) until `group` has committed the end of `topic`.
pub async fn wait_caught_up(stack: &Stack, group: &str, topic: &str) {
    wait_for(
        &format!("{group} to consume {topic}"),
        Duration::from_secs(180),
        || {
            let (b, g, t) = (
                stack.bootstrap.clone(),
                group.to_string(),
                topic.to_string(),
            );
            async move { (committed_lag(&b, &g, &t) == Ok(0)).then_some(()) }
        },
    )
    .await;
}
