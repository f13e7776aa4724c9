//! `gale-bench pipeline`: the whole pipeline, end to end, at fixed offered
//! rates.
//!
//! For each rate a fresh instance of the pipeline runs on the bench's
//! broker and Postgres server: its own topics (one prefix per run), its own
//! consumer groups (so its own state changelogs) and its own database
//! (migrated with `gale db migrate`, the simulated fleet's registry imported
//! with `gale assets import`). The release binaries of gale-ingest,
//! gale-validate, gale-enrich, gale-detect-faults, gale-aggregate and
//! gale-pg-sink run as processes; pg-sink stores the validated readings in
//! `readings` and the three aggregate topics in `agg_asset_*`.
//!
//! Load: the simulator's fleet and generator (`gale simulate`'s values,
//! without fault values and without its data-quality glitches, so every
//! reading posted should reach `readings`), one reading per asset per tick,
//! ticks ten minutes apart in event time (the ingest source declares
//! `interval = "10m"`). Event time therefore runs much faster than the wall
//! clock (at 5,000 readings/s and 1,000 assets, about 50 minutes per
//! second), so hours and days close during the run; the readings end in the
//! past, which is why validate runs in `backfill` mode. The request bodies
//! (JSON arrays of at most `--batch` rows, never spanning two ticks) are
//! built before the clock starts and posted open-loop: batch k leaves at
//! the moment its first row is due at the offered rate, whatever earlier
//! requests are doing.
//!
//! Measured, over the readings of the measured window (a few warm-up ticks
//! first, so group joins and first fetches are not counted):
//!
//! * `sustained_rec_per_s`: rows in `readings` over the time from the first
//!   to the last of them stored (`stored_at`);
//! * `p50_ms`, `p99_ms`: each row's `stored_at` minus the wall-clock time
//!   ingest acknowledged the request that carried it (same machine clock;
//!   `stored_at` is Postgres' `now()`, the start of pg-sink's transaction);
//! * `agg_p50_ms`, `agg_p99_ms`: an asset's hour (revision 0 in
//!   `agg_asset_1h_revisions`) against the acknowledgement of the request
//!   that carried the reading closing it: aggregate closes a window when
//!   the asset's own event time reaches its end plus the grace (0 s, the
//!   default, set explicitly), so the asset's first reading from then on:
//!   the one at the next hour's start (the last reading of an hour cannot
//!   close it). In live operation the hour also waits for that reading in
//!   wall-clock time; that wait is not the pipeline's.
//! * `cpu_us_per_reading`: user + system CPU of the six Gale processes
//!   (from /proc, from the first request to the end of the drain) per
//!   reading posted;
//! * `post_p99_ms`: from the moment a request was due to its
//!   acknowledgement (ingest's own delay, queueing in the client included),
//!   `retries` the requests answered 503 or failed and sent again, and
//!   `host_cpu_busy` the share of all cores busy over the window (from
//!   /proc/stat: broker, Postgres and the bench itself included).
//!
//! The last line names the highest offered rate whose `p99_ms` and
//! `post_p99_ms` both stayed under 1 s and whose readings all landed (at
//! least 99 %). Each stage's share of the CPU goes to stderr.
//!
//! `--fetch-wait-ms N` sets `fetch.wait.max.ms` for every consumer. Tansu
//! answers a fetch that found nothing only when that wait is over, even if
//! records arrive meanwhile, so with librdkafka's default (500 ms) each
//! consumer hop can cost up to half a second on the bench's broker; Kafka
//! answers as soon as records arrive. `GALE_BENCH_KEEP_TOPICS=1` keeps a
//! run's topics (for per-hop timestamps) instead of deleting them.

use std::sync::Arc;

use super::aggregate::now_ms;
use super::*;
use gale_cli::simulate::{FaultMode, FaultPlan, Generator, Timeline};

const API_KEY: &str = "gale-bench-key-00001";
/// Event-time spacing of ticks, declared by the ingest source.
const INTERVAL_MS: i64 = 600_000;
/// gale-aggregate's `aggregate.grace`, set explicitly (the default) so the
/// reading that closes an hour is known.
const GRACE_MS: i64 = 0;
/// Ticks posted (and waited for) before the measured window.
const WARMUP_TICKS: u64 = 3;

/// What `gale-bench pipeline` is asked for.
pub(crate) struct Options {
    /// Offered rates, readings per second.
    pub rates: Vec<f64>,
    /// Length of each measured window.
    pub seconds: f64,
    /// Simulated turbines.
    pub turbines: usize,
    /// Simulated meters.
    pub meters: usize,
    /// Rows per request at most.
    pub batch: usize,
    /// `fetch.wait.max.ms` for every consumer, if given (the services'
    /// own settings otherwise).
    pub fetch_wait_ms: Option<u32>,
}

impl Options {
    /// From the command line: `--rates 2000,5000,8000 --seconds 60
    /// --turbines 200 --meters 800 --batch 200 [--fetch-wait-ms N]`.
    pub fn from_args() -> anyhow::Result<Options> {
        let rates = arg("--rates")
            .unwrap_or_else(|| "2000,5000,8000".into())
            .split(',')
            .map(|r| r.trim().parse::<f64>())
            .collect::<Result<Vec<_>, _>>()?;
        anyhow::ensure!(
            !rates.is_empty() && rates.iter().all(|r| r.is_finite() && *r > 0.0),
            "--rates: readings per second, more than 0, comma-separated"
        );
        let num = |name: &str, default: usize| -> anyhow::Result<usize> {
            Ok(arg(name).map(|n| n.parse()).transpose()?.unwrap_or(default))
        };
        Ok(Options {
            rates,
            seconds: arg("--seconds")
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(60.0),
            turbines: num("--turbines", 200)?,
            meters: num("--meters", 800)?,
            batch: num("--batch", 200)?.max(1),
            fetch_wait_ms: arg("--fetch-wait-ms").map(|n| n.parse()).transpose()?,
        })
    }
}

/// One request body.
struct Batch {
    /// Its tick.
    tick: u64,
    /// JSON array of rows.
    body: bytes::Bytes,
    /// Rows in it.
    rows: usize,
}

/// A Gale service run by the bench; killed if still running when dropped.
struct Service {
    name: &'static str,
    child: std::process::Child,
    /// Probe and metrics address.
    http: String,
}

impl Service {
    fn start(
        name: &'static str,
        label: &str,
        env: &[(&str, String)],
        args: &[&str],
    ) -> anyhow::Result<Service> {
        let http = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(log_dir().join(format!("bench-{label}-{name}.log")))?;
        let child = Command::new(bin(name))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("GALE_HTTP__LISTEN", &http)
            .env(
                "RUST_LOG",
                std::env::var("GALE_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Service { name, child, http })
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.http);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                anyhow::bail!("{} exited with {status} before it was ready", self.name);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} not ready after {timeout:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn cpu(&self) -> f64 {
        cpu_seconds(self.child.id())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGTERM to all, then up to 30 s each to exit (SIGKILL after).
fn stop_all(services: &mut [Service]) {
    for s in services.iter() {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(s.child.id() as libc::pid_t, libc::SIGTERM) };
    }
    for s in services.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(s.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Busy and total jiffies of all cores (the first line of /proc/stat).
fn host_jiffies() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    // idle and iowait
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What one offered rate gave.
struct Outcome {
    offered: f64,
    sustained: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_reading: f64,
    agg_p50_ms: f64,
    agg_p99_ms: f64,
    post_p99_ms: f64,
    posted: usize,
    landed: usize,
    retries: u64,
    host_busy: f64,
}

impl Outcome {
    fn kept_up(&self) -> bool {
        self.p99_ms < 1000.0 && self.post_p99_ms < 1000.0 && self.landed * 100 >= self.posted * 99
    }
}

/// Runs the pipeline at each offered rate in turn and prints a line per rate,
/// then the highest rate it kept up with.
pub(crate) async fn bench_pipeline(opts: Options) -> anyhow::Result<()> {
    let stack = stack();
    let mut best = 0f64;
    for &rate in &opts.rates {
        let o = run_rate(&stack, &opts, rate).await?;
        println!(
            "pipeline offered_rec_per_s={:.0} sustained_rec_per_s={:.0} p50_ms={:.0} p99_ms={:.0} cpu_us_per_reading={:.1} agg_p50_ms={:.0} agg_p99_ms={:.0} post_p99_ms={:.0} posted={} landed={} retries={} host_cpu_busy={:.2}{}",
            o.offered,
            o.sustained,
            o.p50_ms,
            o.p99_ms,
            o.cpu_us_per_reading,
            o.agg_p50_ms,
            o.agg_p99_ms,
            o.post_p99_ms,
            o.posted,
            o.landed,
            o.retries,
            o.host_busy,
            opts.fetch_wait_ms
                .map(|ms| format!(" fetch_wait_ms={ms}"))
                .unwrap_or_default()
        );
        if o.kept_up() {
            best = best.max(o.offered);
        }
    }
    println!("pipeline max_offered_rec_per_s_p99_under_1s={best:.0}");
    Ok(())
}

/// Posts `body` until ingest acknowledges it; returns the wall-clock time
/// of the acknowledgement (ms), the rows accepted and the retries.
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: bytes::Bytes,
) -> anyhow::Result<(i64, u64, u64)> {
    let mut retries = 0u64;
    loop {
        let resp = client
            .post(url)
            .header("Authorization", format!("Bearer {API_KEY}"))
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match resp {
            Ok(r) if matches!(r.status().as_u16(), 200 | 207) => {
                let at = now_ms();
                let answer: serde_json::Value = r.json().await.unwrap_or_default();
                return Ok((at, answer["accepted"].as_u64().unwrap_or(0), retries));
            }
            Ok(r) if r.status().as_u16() == 503 || r.status().is_server_error() => {}
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                anyhow::bail!("ingest answered {status}: {text}");
            }
            Err(e) if retries >= 50 => return Err(e.into()),
            Err(_) => {}
        }
        retries += 1;
        anyhow::ensure!(retries < 1000, "ingest refused a batch 1000 times");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_rate(stack: &Stack, opts: &Options, rate: f64) -> anyhow::Result<Outcome> {
    let label = format!("pipeline-{rate:.0}");
    eprintln!("pipeline at {rate:.0} readings/s for {} s", opts.seconds);
    let dir = tempfile::tempdir()?;
    let run = unique("bench-pipe");
    let t = |name: &str| format!("{run}.{name}");
    let (raw, validated, quarantine, enriched, checked, faults) = (
        t("raw"),
        t("validated"),
        t("quarantine"),
        t("enriched"),
        t("checked"),
        t("faults"),
    );
    let (agg_10m, agg_1h, agg_1d, late) = (t("agg-10m"), t("agg-1h"), t("agg-1d"), t("agg-late"));
    let dlqs: Vec<String> = [
        "ingest",
        "validate",
        "enrich",
        "detect-faults",
        "aggregate",
        "pg-sink",
    ]
    .iter()
    .map(|s| t(&format!("dlq-{s}")))
    .collect();
    let mut topics: Vec<&str> = vec![
        &raw,
        &validated,
        &quarantine,
        &enriched,
        &checked,
        &faults,
        &agg_10m,
        &agg_1h,
        &agg_1d,
        &late,
    ];
    topics.extend(dlqs.iter().map(String::as_str));
    create_topics(&stack.bootstrap, &topics, 3).await;

    // ---- the database: schema and the fleet's registry
    let db = TestDatabase::create(stack).await;
    let fleet = gale_cli::simulate::Fleet::generate(opts.turbines, opts.meters, 42);
    anyhow::ensure!(!fleet.is_empty(), "an empty fleet");
    let files = gale_cli::fleet_registry::write(&fleet, &dir.path().join("registry"))?;
    for args in [
        vec!["db".to_string(), "migrate".into()],
        std::iter::once("assets".to_string())
            .chain(std::iter::once("import".to_string()))
            .chain(files.iter().map(|f| f.display().to_string()))
            .collect(),
    ] {
        let out = Command::new(bin("gale"))
            .args(&args)
            .args(["--database-url", &db.url])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "gale {}: {}",
            args[..2].join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // ---- the services
    let api = format!("127.0.0.1:{}", free_port());
    let ingest_cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &ingest_cfg,
        format!(
            "[ingest]\nlisten = \"{api}\"\n\n[[ingest.sources]]\nname = \"bench\"\napi_keys = [\"{API_KEY}\"]\ninterval = \"10m\"\n"
        ),
    )?;
    let mut sink = format!(
        "[database]\nurl = \"{}\"\n\n[sink]\ndead_letter = \"{}\"\n\n[[sink.tables]]\ntopic = \"{validated}\"\ntable = \"readings\"\nlatest = {{ table = \"latest_readings\", key = \"asset_id\" }}\n",
        db.url, dlqs[5]
    );
    for (topic, grain) in [(&agg_10m, "10m"), (&agg_1h, "1h"), (&agg_1d, "1d")] {
        sink.push_str(&format!(
            "\n[[sink.tables]]\ntopic = \"{topic}\"\ntable = \"agg_asset_{grain}_revisions\"\ntime_column = \"window_start\"\nlatest = {{ table = \"agg_asset_{grain}\", key = \"aggregate_id\", order_by = \"revision\" }}\n"
        ));
    }
    let sink_cfg = dir.path().join("pg-sink.toml");
    std::fs::write(&sink_cfg, sink)?;

    let common = |group: &str| -> Vec<(&str, String)> {
        let mut env = vec![
            ("GALE_KAFKA__BOOTSTRAP_SERVERS", stack.bootstrap.clone()),
            ("GALE_REGISTRY__URL", stack.registry_url.clone()),
            ("GALE_KAFKA__TOPIC_PARTITIONS", "3".into()),
            ("GALE_KAFKA__GROUP_ID", format!("{run}-{group}")),
        ];
        if let Some(ms) = opts.fetch_wait_ms {
            env.push(("GALE_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS", ms.to_string()));
        }
        env
    };
    let with = |group: &str, more: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        let mut env = common(group);
        env.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
        env
    };
    let sink_args = ["--config", sink_cfg.to_str().expect("utf-8 path")];
    let ingest_args = ["--config", ingest_cfg.to_str().expect("utf-8 path")];
    let mut services = vec![
        Service::start("gale-pg-sink", &label, &with("pg-sink", &[]), &sink_args)?,
        Service::start(
            "gale-aggregate",
            &label,
            &with(
                "aggregate",
                &[
                    ("GALE_TOPICS__INPUT", &checked),
                    ("GALE_TOPICS__ASSET_10M", &agg_10m),
                    ("GALE_TOPICS__ASSET_1H", &agg_1h),
                    ("GALE_TOPICS__ASSET_1D", &agg_1d),
                    ("GALE_TOPICS__LATE", &late),
                    ("GALE_TOPICS__DEAD_LETTER", &dlqs[4]),
                    ("GALE_AGGREGATE__GRACE", &format!("{GRACE_MS}ms")),
                ],
            ),
            &[],
        )?,
        Service::start(
            "gale-detect-faults",
            &label,
            &with(
                "detect-faults",
                &[
                    ("GALE_TOPICS__INPUT", &enriched),
                    ("GALE_TOPICS__CHECKED", &checked),
                    ("GALE_TOPICS__FAULTS", &faults),
                    ("GALE_TOPICS__QUARANTINE", &quarantine),
                    ("GALE_TOPICS__DEAD_LETTER", &dlqs[3]),
                ],
            ),
            &[],
        )?,
        Service::start(
            "gale-enrich",
            &label,
            &with(
                "enrich",
                &[
                    ("GALE_TOPICS__INPUT", &validated),
                    ("GALE_TOPICS__OUTPUT", &enriched),
                    ("GALE_TOPICS__DEAD_LETTER", &dlqs[2]),
                    ("GALE_ASSETS__URL", &db.url),
                ],
            ),
            &[],
        )?,
        Service::start(
            "gale-validate",
            &label,
            &with(
                "validate",
                &[
                    ("GALE_TOPICS__INPUT", &raw),
                    ("GALE_TOPICS__VALIDATED", &validated),
                    ("GALE_TOPICS__QUARANTINE", &quarantine),
                    ("GALE_TOPICS__DEAD_LETTER", &dlqs[1]),
                    ("GALE_VALIDATE__MODE", "backfill"),
                    ("GALE_VALIDATE__ASSETS__SOURCE", "postgres"),
                    ("GALE_VALIDATE__ASSETS__URL", &db.url),
                ],
            ),
            &[],
        )?,
        Service::start(
            "gale-ingest",
            &label,
            &with(
                "ingest",
                &[
                    ("GALE_TOPICS__RAW", &raw),
                    ("GALE_TOPICS__DEAD_LETTER", &dlqs[0]),
                ],
            ),
            &ingest_args,
        )?,
    ];
    for s in services.iter_mut() {
        s.wait_ready(Duration::from_secs(120)).await?;
    }

    // ---- the load, built before the clock starts
    let rows_per_tick = fleet.len();
    let wanted = (rate * opts.seconds).ceil() as usize;
    // Event times end in the past: span at least twice the ticks needed
    // (meters skip some intervals; glitch rows are left out).
    let span_ticks = WARMUP_TICKS + 2 * (wanted.div_ceil(rows_per_tick) as u64) + 2;
    let start_ms = now_ms() / INTERVAL_MS * INTERVAL_MS - span_ticks as i64 * INTERVAL_MS;
    let plan = FaultPlan::empty(Timeline {
        start_ms,
        interval_ms: INTERVAL_MS,
        ticks: 0,
        interval_declared: true,
    });
    let mut generator = Generator::with_faults(fleet, 42, FaultMode::None, Some(plan));
    let mut tick = 0u64;
    let next_tick = |generator: &mut Generator, tick: &mut u64| -> anyhow::Result<Vec<Batch>> {
        let at = chrono::DateTime::from_timestamp_millis(start_ms + *tick as i64 * INTERVAL_MS)
            .ok_or_else(|| anyhow::anyhow!("event time out of range"))?;
        anyhow::ensure!(
            at.timestamp_millis() <= now_ms(),
            "event time {at} in the future"
        );
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = generator
            .tick(*tick, at)
            .into_iter()
            .filter(|r| !r.gap && r.scenario.is_none())
            .map(|r| r.row)
            .collect();
        let batches = rows
            .chunks(opts.batch)
            .map(|c| {
                Ok(Batch {
                    tick: *tick,
                    body: serde_json::to_vec(c)?.into(),
                    rows: c.len(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>();
        *tick += 1;
        batches
    };

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = format!("http://{api}/v1/readings");

    // ---- warm-up: a few ticks, sent one request at a time, until they
    // are in Postgres and every stage has taken records.
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let mut warm = 0u64;
    while tick < WARMUP_TICKS {
        for b in next_tick(&mut generator, &mut tick)? {
            warm += post(&client, &url, b.body).await?.1;
        }
    }
    let measured_from =
        chrono::DateTime::from_timestamp_millis(start_ms + WARMUP_TICKS as i64 * INTERVAL_MS)
            .expect("time");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
            .fetch_one(&pool)
            .await?;
        let mut all_took = true;
        for s in &services[..5] {
            all_took &= consumed(&s.http).await > 0.0;
        }
        // A reading or two may be quarantined by validate's rules.
        if n as u64 * 100 >= warm * 95 && all_took {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "warm-up: {n} of {warm} readings in Postgres after 3 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    eprintln!("building {wanted} readings of {rows_per_tick} assets");
    let mut batches: Vec<Batch> = Vec::new();
    let mut rows = 0usize;
    while rows < wanted {
        for b in next_tick(&mut generator, &mut tick)? {
            if rows >= wanted {
                break;
            }
            rows += b.rows;
            batches.push(b);
        }
    }
    // Each batch is due when its first row is, at the offered rate.
    let mut due_ms = Vec::with_capacity(batches.len());
    let mut before = 0usize;
    for b in &batches {
        due_ms.push(before as f64 * 1000.0 / rate);
        before += b.rows;
    }
    // Which request carried each row: asset and event time.
    let mut batch_of: HashMap<(String, i64), u32> = HashMap::with_capacity(rows);
    for (i, b) in batches.iter().enumerate() {
        let arr: Vec<serde_json::Value> = serde_json::from_slice(&b.body)?;
        let at = start_ms + b.tick as i64 * INTERVAL_MS;
        for row in arr {
            if let Some(id) = row["asset_id"].as_str() {
                batch_of.insert((id.to_string(), at), i as u32);
            }
        }
    }

    // ---- the measured window
    eprintln!(
        "posting {rows} readings in {} requests at {rate:.0}/s",
        batches.len()
    );
    let cpu0: Vec<f64> = services.iter().map(Service::cpu).collect();
    let host0 = host_jiffies();
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    let clock = tokio::time::Instant::now();
    let wall0 = now_ms() as f64;
    let mut tasks = Vec::with_capacity(batches.len());
    for (i, b) in batches.iter().enumerate() {
        tokio::time::sleep_until(clock + Duration::from_secs_f64(due_ms[i] / 1000.0)).await;
        let permit = permits.clone().acquire_owned().await?;
        let (client, url, body) = (client.clone(), url.clone(), b.body.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            post(&client, &url, body).await
        }));
    }
    let mut ack_ms = Vec::with_capacity(tasks.len());
    let mut post_lat = Vec::with_capacity(tasks.len());
    let (mut posted, mut retries) = (0usize, 0u64);
    for (i, task) in tasks.into_iter().enumerate() {
        let (at, accepted, r) = task.await??;
        ack_ms.push(at as f64);
        post_lat.push(at as f64 - (wall0 + due_ms[i]));
        posted += accepted as usize;
        retries += r;
    }
    let posting_secs = (now_ms() as f64 - wall0) / 1000.0;
    eprintln!("posted in {posting_secs:.1} s; waiting for Postgres");

    // ---- drain: until every reading is in `readings` (or nothing more
    // lands for 15 s), then until the aggregates stop coming.
    let count_from = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(measured_from)
                .fetch_one(&pool)
                .await
        }
    };
    let mut landed = 0i64;
    let mut moved = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    while (landed as usize) < posted && moved.elapsed() < Duration::from_secs(15) {
        anyhow::ensure!(Instant::now() < deadline, "still draining after 10 minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = count_from("SELECT count(*) FROM readings WHERE event_time >= $1").await?;
        if n != landed {
            landed = n;
            moved = Instant::now();
        }
    }
    let mut aggs = -1i64;
    loop {
        let n = count_from("SELECT count(*) FROM agg_asset_10m_revisions WHERE window_start >= $1")
            .await?;
        if n == aggs {
            break;
        }
        aggs = n;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let per: Vec<(&str, f64)> = services
        .iter()
        .zip(&cpu0)
        .map(|(s, c0)| (s.name, s.cpu() - c0))
        .collect();
    let cpu: f64 = per.iter().map(|p| p.1).sum();
    let window = (now_ms() as f64 - wall0) / 1000.0;
    eprintln!(
        "CPU µs per reading (cores busy over {window:.1} s): {}",
        per.iter()
            .map(|(name, c)| format!(
                "{name} {:.1} ({:.2})",
                c * 1e6 / posted.max(1) as f64,
                c / window
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let host1 = host_jiffies();
    let host_busy = (host1.0 - host0.0) / (host1.1 - host0.1).max(1.0);

    // ---- latencies
    let stored: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT asset_id, (extract(epoch FROM event_time) * 1000)::bigint, \
         (extract(epoch FROM stored_at) * 1000)::float8 FROM readings WHERE event_time >= $1",
    )
    .bind(measured_from)
    .fetch_all(&pool)
    .await?;
    let mut lat = Vec::with_capacity(stored.len());
    let (mut first_stored, mut last_stored) = (f64::MAX, f64::MIN);
    for (asset, at, stored_at) in &stored {
        first_stored = first_stored.min(*stored_at);
        last_stored = last_stored.max(*stored_at);
        if let Some(&i) = batch_of.get(&(asset.clone(), *at)) {
            lat.push(stored_at - ack_ms[i as usize]);
        }
    }
    lat.sort_by(f64::total_cmp);
    let hours: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT asset_id, (extract(epoch FROM window_start) * 1000)::bigint, \
         (extract(epoch FROM stored_at) * 1000)::float8 FROM agg_asset_1h_revisions \
         WHERE revision = 0 AND gap IS NULL AND window_start >= $1",
    )
    .bind(measured_from)
    .fetch_all(&pool)
    .await?;
    // An hour closes when its asset's own time passes its end plus the
    // grace: at the asset's first reading from then on.
    let mut agg_lat: Vec<f64> = hours
        .iter()
        .filter_map(|(asset, start, stored_at)| {
            let closes = start + 3_600_000 + GRACE_MS;
            let first = (closes - start_ms + INTERVAL_MS - 1).div_euclid(INTERVAL_MS);
            (first..first + 6).find_map(|k| {
                let i = *batch_of.get(&(asset.clone(), start_ms + k * INTERVAL_MS))?;
                Some(stored_at - ack_ms[i as usize])
            })
        })
        .collect();
    agg_lat.sort_by(f64::total_cmp);
    post_lat.sort_by(f64::total_cmp);
    eprintln!(
        "{} of {posted} readings in Postgres, {} hourly aggregates timed, {aggs} ten-minute aggregates",
        stored.len(),
        agg_lat.len()
    );

    stop_all(&mut services);
    drop(services);
    pool.close().await;
    if std::env::var_os("GALE_BENCH_KEEP_TOPICS").is_none() {
        delete_topics(stack, &run, &topics).await;
    } else {
        eprintln!("kept the topics {run}.*");
    }

    let span = ((last_stored - first_stored) / 1000.0).max(1e-3);
    Ok(Outcome {
        offered: rate,
        sustained: stored.len() as f64 / span,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        cpu_us_per_reading: cpu * 1e6 / posted.max(1) as f64,
        agg_p50_ms: percentile(&agg_lat, 0.5),
        agg_p99_ms: percentile(&agg_lat, 0.99),
        post_p99_ms: percentile(&post_lat, 0.99),
        posted,
        landed: stored.len(),
        retries,
        host_busy,
    })
}

/// Deletes a run's topics and its stages' changelogs, so the broker's
/// memory does not fill up over several rates (best effort).
async fn delete_topics(stack: &Stack, run: &str, topics: &[&str]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let mut names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    for stage in ["validate", "detect-faults", "aggregate"] {
        names.push(gale_runtime::state::changelog_topic(
            stage,
            &format!("{run}-{stage}"),
        ));
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
}
