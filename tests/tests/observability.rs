//! Dashboards and alert rules hold only what the services really export.
//!
//! Grafana and Prometheus say nothing when a panel or a rule names a metric
//! or label that does not exist: the panel stays empty, the alert never
//! fires. So this test runs the whole pipeline (ingest → validate → enrich
//! → detect-faults → aggregate → both roll-ups → pg-sink and archive) on a
//! few readings, one of them bad, scrapes every `/metrics`, and checks every
//! PromQL expression of `helm/gale/files/dashboards/*.json` and
//! `helm/gale/files/prometheus/gale-alerts.yml` against what was scraped:
//! each metric must exist and carry every label a matcher or a `by`/`on`
//! clause names. Every Postgres panel's SQL, Grafana macros replaced, runs
//! against the database pg-sink migrated and filled. The alert rules also
//! pass `promtool check rules` and their unit tests (`promtool test rules`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gale_tests::*;
use serde_json::Value;

/// Datasource UIDs the dashboards may use (the compose stack and the chart
/// provision exactly these).
const DATASOURCES: [&str; 3] = ["prometheus", "postgres", "tempo"];

/// Labels Prometheus adds to every scraped series (target labels).
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn files() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/gale/files")
}

fn promtool() -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("promtool").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "promtool is not on PATH: install Debian's `prometheus` package (make test does, via scripts/lib.sh ensure_ops_tools)"
    );
    Command::new("promtool")
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = files().join("prometheus");
    for args in [
        ["check", "rules", "gale-alerts.yml"],
        ["test", "rules", "gale-alerts.test.yml"],
    ] {
        let out = promtool().args(args).current_dir(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One dashboard file, parsed.
struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let dir = files().join("dashboards");
    let mut out = Vec::new();
    for name in [
        "gale-pipeline.json",
        "gale-fleet.json",
        "gale-data-quality.json",
    ] {
        let text = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()));
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        out.push(Dashboard {
            file: name.to_string(),
            json,
        });
    }
    out
}

/// Every panel of a dashboard, rows' nested panels included (rows themselves left out).
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

fn uid(ds: &Value) -> Option<&str> {
    ds["uid"].as_str()
}

/// A query of a dashboard: where it is, which datasource, and its text.
#[derive(Debug)]
struct Query {
    place: String,
    datasource: String,
    text: String,
}

/// Every PromQL, SQL and TraceQL query of a dashboard, variables' included.
fn queries(d: &Dashboard) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(&d.json) {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            let ds = uid(&t["datasource"])
                .or(uid(&p["datasource"]))
                .unwrap_or("");
            let text = ["expr", "rawSql", "query"]
                .iter()
                .find_map(|k| t[*k].as_str())
                .unwrap_or("");
            out.push(Query {
                place: format!("{} panel \"{title}\" ({})", d.file, t["refId"]),
                datasource: ds.to_string(),
                text: text.to_string(),
            });
        }
    }
    for v in d.json["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let text = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        out.push(Query {
            place: format!("{} variable ${}", d.file, v["name"].as_str().unwrap_or("?")),
            datasource: uid(&v["datasource"]).unwrap_or("").to_string(),
            text: text.to_string(),
        });
    }
    out
}

#[test]
fn dashboards_parse_and_name_known_datasources() {
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    for d in dashboards() {
        let j = &d.json;
        assert!(
            uids.insert(j["uid"].as_str().unwrap_or("").to_string()),
            "{}: missing or repeated dashboard uid",
            d.file
        );
        let version = j["schemaVersion"].as_i64().unwrap_or(0);
        if !(36..=41).contains(&version) {
            problems.push(format!("{}: schemaVersion {version}", d.file));
        }
        let mut ids = BTreeSet::new();
        let all = panels(j);
        if all.is_empty() {
            problems.push(format!("{}: no panels", d.file));
        }
        for p in all {
            let title = p["title"].as_str().unwrap_or("?");
            if !ids.insert(p["id"].as_i64().unwrap_or(-1)) {
                problems.push(format!("{}: panel \"{title}\" repeats an id", d.file));
            }
            match uid(&p["datasource"]) {
                Some(u) if DATASOURCES.contains(&u) => {}
                other => problems.push(format!(
                    "{}: panel \"{title}\" has datasource {other:?}, not one of {DATASOURCES:?}",
                    d.file
                )),
            }
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{}: panel \"{title}\" has no query", d.file));
            }
            for t in &targets {
                if let Some(u) = uid(&t["datasource"]) {
                    if !DATASOURCES.contains(&u) {
                        problems.push(format!(
                            "{}: panel \"{title}\" query {} has datasource {u}",
                            d.file, t["refId"]
                        ));
                    }
                }
            }
            if p["description"].as_str().unwrap_or("").is_empty() {
                problems.push(format!(
                    "{}: panel \"{title}\" says nothing about what it shows",
                    d.file
                ));
            }
        }
        for q in queries(&d) {
            if q.text.trim().is_empty() || !DATASOURCES.contains(&q.datasource.as_str()) {
                problems.push(format!(
                    "{}: empty query or unknown datasource {:?}",
                    q.place, q.datasource
                ));
            }
            if q.datasource == "prometheus" {
                if let Err(e) = promql::refs(&q.text) {
                    problems.push(format!("{}: {e}", q.place));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `expr` of every alert rule, by alert name (PyYAML reads the file).
fn alert_exprs() -> Vec<(String, String)> {
    let python = std::env::var("GALE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import json, sys, yaml\n\
        d = yaml.safe_load(open(sys.argv[1]))\n\
        print(json.dumps([[r.get('alert') or r.get('record'), r['expr']] for g in d['groups'] for r in g['rules']]))";
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(files().join("prometheus/gale-alerts.yml"))
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(
        out.status.success(),
        "reading the rules with {python} (PyYAML, scripts/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rules as JSON")
}

/// Metric names and label names in PromQL expressions.
mod promql {
    /// What one expression refers to.
    #[derive(Debug, Default, PartialEq)]
    pub struct Refs {
        /// Each selector: the metric name and the label names its matchers use.
        pub selectors: Vec<(String, Vec<String>)>,
        /// Labels named by `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
        pub grouping: Vec<String>,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Str,
        Num,
        Var,
        Punct(char),
    }

    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: [&str; 8] = [
        "and", "or", "unless", "offset", "bool", "atan2", "inf", "nan",
    ];
    const AGGREGATORS: [&str; 13] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
    ];

    fn tokens(expr: &str) -> Result<Vec<Tok>, String> {
        let chars: Vec<char> = expr.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '#' {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            } else if c == '"' || c == '\'' || c == '`' {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(format!("unterminated string in `{expr}`"));
                }
                i += 1;
                out.push(Tok::Str);
            } else if c == '$' {
                // A Grafana variable: $name, ${name}, ${name:format}.
                i += 1;
                if i < chars.len() && chars[i] == '{' {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && ident(chars[i]) {
                        i += 1;
                    }
                }
                out.push(Tok::Var);
            } else if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
            {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Num);
            } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
                let start = i;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            } else {
                out.push(Tok::Punct(c));
                i += 1;
            }
        }
        Ok(out)
    }

    /// The metric names and labels `expr` refers to.
    pub fn refs(expr: &str) -> Result<Refs, String> {
        let toks = tokens(expr)?;
        let mut refs = Refs::default();
        let mut i = 0;
        let next_is = |i: usize, c: char| toks.get(i) == Some(&Tok::Punct(c));
        while i < toks.len() {
            match &toks[i] {
                Tok::Ident(name) if GROUPING.contains(&name.as_str()) => {
                    i += 1;
                    if next_is(i, '(') {
                        i += 1;
                        while i < toks.len() && !next_is(i, ')') {
                            if let Tok::Ident(l) = &toks[i] {
                                refs.grouping.push(l.clone());
                            }
                            i += 1;
                        }
                        i += 1;
                    }
                }
                Tok::Ident(name) if KEYWORDS.contains(&name.as_str()) => i += 1,
                Tok::Ident(name)
                    if next_is(i + 1, '(')
                        || (AGGREGATORS.contains(&name.as_str())
                            && matches!(toks.get(i + 1), Some(Tok::Ident(n)) if n == "by" || n == "without")) =>
                {
                    i += 1
                }
                Tok::Ident(name) => {
                    let name = name.clone();
                    i += 1;
                    let labels = if next_is(i, '{') {
                        let (labels, after) = matchers(&toks, i)?;
                        i = after;
                        labels
                    } else {
                        Vec::new()
                    };
                    refs.selectors.push((name, labels));
                }
                Tok::Punct('{') => {
                    matchers(&toks, i)?;
                    return Err(format!("a selector without a metric name in `{expr}`"));
                }
                Tok::Punct('[') => {
                    while i < toks.len() && !next_is(i, ']') {
                        i += 1;
                    }
                    i += 1;
                }
                _ => i += 1,
            }
        }
        Ok(refs)
    }

    /// Reads `{l="v", ...}` from `toks[i]`: the label names and the index
    /// after `}` (a `__name__` matcher is an error: the metric is not checked).
    fn matchers(toks: &[Tok], mut i: usize) -> Result<(Vec<String>, usize), String> {
        let mut labels = Vec::new();
        i += 1;
        while i < toks.len() && toks[i] != Tok::Punct('}') {
            if let Tok::Ident(l) = &toks[i] {
                if l == "__name__" {
                    return Err("__name__ matchers are not checked: name the metric".into());
                }
                labels.push(l.clone());
            }
            i += 1;
        }
        if i >= toks.len() {
            return Err("unterminated label matchers".into());
        }
        Ok((labels, i + 1))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn names(r: &Refs) -> Vec<String> {
            r.selectors.iter().map(|(n, _)| n.clone()).collect()
        }

        #[test]
        fn selectors_labels_and_grouping() {
            let r = refs(
                r#"histogram_quantile(0.99, sum by (le, stage) (rate(gale_event_latency_seconds_bucket{stage=~"$stage"}[$__rate_interval])))"#,
            )
            .unwrap();
            assert_eq!(
                r.selectors,
                vec![(
                    "gale_event_latency_seconds_bucket".to_string(),
                    vec!["stage".to_string()]
                )]
            );
            assert_eq!(r.grouping, vec!["le", "stage"]);
        }

        #[test]
        fn operators_offsets_and_aggregations_after_their_argument() {
            let r = refs(
                "sum(a_total{x=\"1\", y!~'b,c}'}) without (z) / on (stage) group_left(w) b:rate5m offset 10m \
                 and count(c) > 0 unless d @ 1609746000 or max by(k)(e) > bool 1",
            )
            .unwrap();
            assert_eq!(names(&r), vec!["a_total", "b:rate5m", "c", "d", "e"]);
            assert_eq!(r.selectors[0].1, vec!["x", "y"]);
            assert_eq!(r.grouping, vec!["z", "stage", "w", "k"]);
        }

        #[test]
        fn strings_and_variables_are_not_names() {
            let r =
                refs(r#"label_replace(up{job="gale"}, "dst", "$1", "src", "(.*)") * ${factor}"#)
                    .unwrap();
            assert_eq!(names(&r), vec!["up"]);
        }

        #[test]
        fn malformed_expressions_are_errors() {
            assert!(refs("sum(rate(x{a=\"1\"[5m]))").is_err());
            assert!(refs("x{a=\"1}").is_err());
            assert!(refs("{__name__=\"x\"}").is_err());
        }
    }
}

/// Label names per metric name (sample names: a histogram's `_bucket`,
/// `_sum`, `_count` each) in Prometheus or OpenMetrics text.
fn exported(text: &str, into: &mut BTreeMap<String, BTreeSet<String>>) {
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = into.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            // name="value" pairs; values may hold commas, braces and escaped quotes.
            let mut rest = &line[end + 1..];
            while let Some(eq) = rest.find('=') {
                let name = rest[..eq].trim().trim_start_matches(',').trim();
                if name.starts_with('}') || name.is_empty() {
                    break;
                }
                labels.insert(name.to_string());
                let value = &rest[eq + 1..];
                let mut chars = value.char_indices().skip(1);
                let mut close = value.len();
                while let Some((k, c)) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        close = k;
                        break;
                    }
                }
                rest = &value[(close + 1).min(value.len())..];
                if rest.trim_start().starts_with('}') {
                    break;
                }
            }
        }
    }
}

/// What is wrong with `expr` against the exported metrics (empty: nothing).
fn check_expr(expr: &str, metrics: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let refs = match promql::refs(expr) {
        Ok(r) => r,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    let mut known: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    for (name, labels) in &refs.selectors {
        // `up` is made by Prometheus for every target, with the target labels only.
        let have = if name == "up" {
            Some(BTreeSet::new())
        } else {
            metrics.get(name).cloned()
        };
        let Some(have) = have else {
            problems.push(format!("metric {name} is not exported by any service"));
            continue;
        };
        for l in labels {
            if !have.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                problems.push(format!(
                    "metric {name} has no label {l} (it has {:?})",
                    have
                ));
            }
        }
        known.extend(have);
    }
    for l in &refs.grouping {
        if !known.contains(l) {
            problems.push(format!(
                "label {l} (by/on/without) is on none of the metrics of the expression"
            ));
        }
    }
    problems
}

/// `label_values(selector, label)`: the selector's metrics and the label.
fn check_variable(query: &str, metrics: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let q = query.trim();
    let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
    else {
        return vec![format!(
            "variable query `{q}` is not label_values(metric, label)"
        )];
    };
    let Some((selector, label)) = inner.rsplit_once(',') else {
        return vec![format!("variable query `{q}` names no metric")];
    };
    check_expr(&format!("sum by ({}) ({selector})", label.trim()), metrics)
}

/// `sql` with Grafana's PostgreSQL macros and the dashboard's variables
/// replaced by literals, ready for Postgres.
fn expand_sql(sql: &str, variables: &BTreeMap<String, String>) -> Result<String, String> {
    let from = "now() - interval '2 days'";
    let to = "now() + interval '1 day'";
    let mut out = sql.to_string();
    // $__macro(args) → text; args split at top-level commas.
    while let Some(start) = out.find("$__") {
        let name_end = out[start + 3..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map(|k| start + 3 + k)
            .unwrap_or(out.len());
        let name = out[start + 3..name_end].to_string();
        if !out[name_end..].starts_with('(') {
            return Err(format!("macro $__{name} without arguments"));
        }
        let mut depth = 0;
        let mut close = None;
        for (k, c) in out[name_end..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(name_end + k);
                        break;
                    }
                }
                _ => {}
            }
        }
        let close = close.ok_or_else(|| format!("unclosed $__{name}("))?;
        let args: Vec<String> = out[name_end + 1..close]
            .split(',')
            .map(|a| a.trim().to_string())
            .collect();
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        let seconds = |a: &str| match a.trim_matches('\'') {
            "1m" => 60,
            "5m" => 300,
            "10m" => 600,
            "1h" => 3600,
            "1d" => 86_400,
            _ => 3600,
        };
        let replacement = match name.as_str() {
            "timeFilter" => format!("{} BETWEEN {from} AND {to}", arg(0)),
            "timeFrom" => format!("({from})"),
            "timeTo" => format!("({to})"),
            "time" => format!("{} AS \"time\"", arg(0)),
            "timeEpoch" => format!("extract(epoch from {}) AS \"time\"", arg(0)),
            "timeGroup" | "timeGroupAlias" => {
                let s = seconds(&arg(1));
                let group = format!(
                    "to_timestamp(floor(extract(epoch from {}) / {s}) * {s})",
                    arg(0)
                );
                if name == "timeGroupAlias" {
                    format!("{group} AS \"time\"")
                } else {
                    group
                }
            }
            "unixEpochFilter" => format!(
                "{} BETWEEN extract(epoch from {from}) AND extract(epoch from {to})",
                arg(0)
            ),
            other => return Err(format!("unknown macro $__{other}")),
        };
        out.replace_range(start..=close, &replacement);
    }
    for (name, value) in variables {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    if let Some(k) = out.find('$') {
        // $1-style parameters are not Grafana's; anything else is an unknown variable.
        return Err(format!("unreplaced `{}`", &out[k..(k + 20).min(out.len())]));
    }
    Ok(out)
}

const API_KEY: &str = "observability-test-key-01";

/// A service to start: binary, label, extra environment, arguments.
type Spec = (
    &'static str,
    &'static str,
    Vec<(&'static str, String)>,
    Vec<String>,
);

/// Every service of the pipeline as a process, on topics of its own.
struct Pipeline {
    services: Vec<ServiceProcess>,
    api: String,
    db: TestDatabase,
    _dir: tempfile::TempDir,
}

fn sink_tables(t: &BTreeMap<&str, String>) -> String {
    let mut text = String::new();
    let mut table = |topic: &str, table: &str, time: &str, latest: &str| {
        text.push_str(&format!(
            "\n[[sink.tables]]\ntopic = \"{topic}\"\ntable = \"{table}\"\n"
        ));
        if !time.is_empty() {
            text.push_str(&format!("time_column = \"{time}\"\n"));
        }
        if !latest.is_empty() {
            text.push_str(&format!("latest = {latest}\n"));
        }
    };
    table(
        &t["validated"],
        "readings",
        "",
        "{ table = \"latest_readings\", key = \"asset_id\" }",
    );
    table(&t["raw"], "raw_readings", "", "");
    table(&t["quarantine"], "quarantined_readings", "", "");
    table(
        &t["faults"],
        "fault_events",
        "updated_time",
        "{ table = \"faults\", key = \"fault_id\", order_by = \"revision\" }",
    );
    for (topic, name) in [
        ("agg10m", "agg_asset_10m"),
        ("agg1h", "agg_asset_1h"),
        ("agg1d", "agg_asset_1d"),
        ("site1h", "agg_site_1h"),
        ("site1d", "agg_site_1d"),
        ("fleet1h", "agg_fleet_1h"),
        ("fleet1d", "agg_fleet_1d"),
    ] {
        table(
            &t[topic],
            &format!("{name}_revisions"),
            "window_start",
            &format!("{{ table = \"{name}\", key = \"aggregate_id\", order_by = \"revision\" }}"),
        );
    }
    table(
        &t["peaks"],
        "peaks_revisions",
        "local_date",
        "{ table = \"peaks\", key = \"peak_id\", order_by = \"revision\" }",
    );
    text
}

impl Pipeline {
    async fn start(stack: &Stack) -> Pipeline {
        let db = TestDatabase::create(stack).await;
        let out = Command::new(bin("gale"))
            .args(["db", "migrate"])
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gale db migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        for sql in [
            "INSERT INTO gale_sites (site_id, name, time_zone) VALUES ('S1', 'North', 'Europe/Berlin')",
            "INSERT INTO gale_assets (asset_id, kind, site_id, capacity_kw) VALUES \
             ('T1', 'turbine', 'S1', 2000), ('M1', 'meter', 'S1', 20)",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let t: BTreeMap<&str, String> = [
            "raw",
            "validated",
            "quarantine",
            "enriched",
            "checked",
            "faults",
            "agg10m",
            "agg1h",
            "agg1d",
            "late",
            "site1h",
            "site1d",
            "fleet1h",
            "fleet1d",
            "peaks",
        ]
        .into_iter()
        .map(|k| (k, unique(&format!("obs-{k}"))))
        .collect();
        let dir = tempfile::tempdir().unwrap();
        let api = format!("127.0.0.1:{}", free_port());
        let ingest_cfg = dir.path().join("ingest.toml");
        std::fs::write(
            &ingest_cfg,
            format!("[[ingest.sources]]\nname = \"scada\"\napi_keys = [\"{API_KEY}\"]\n"),
        )
        .unwrap();
        let pg_cfg = pg_sink_config(dir.path(), &db.url, &[], &unique("obs-dlq-pg"));
        let mut text = std::fs::read_to_string(&pg_cfg).unwrap();
        text.push_str(&sink_tables(&t));
        std::fs::write(&pg_cfg, text).unwrap();
        let lake = dir.path().join("lake");
        let archive_cfg = archive_config(
            dir.path(),
            &format!("{{ url = \"{}\" }}", lake.display()),
            &[(&t["validated"], "silver/validated_readings")],
            &unique("obs-dlq-archive"),
            "1s",
        );

        let env = |extra: &[(&'static str, String)]| {
            let mut env = service_env(stack, None);
            env.extend(extra.iter().cloned());
            env
        };
        let dlq = |s: &str| unique(&format!("obs-dlq-{s}"));
        let group = |s: &str| ("GALE_KAFKA__GROUP_ID", unique(&format!("obs-{s}")));
        let assets = ("GALE_ASSETS__URL", db.url.clone());
        // Stateful stages write their state (and store offsets) more often.
        let state = ("GALE_STATE__COMMIT_INTERVAL", "200ms".to_string());
        let specs: Vec<Spec> = vec![
            (
                "gale-ingest",
                "ingest",
                vec![
                    ("GALE_TOPICS__RAW", t["raw"].clone()),
                    ("GALE_TOPICS__DEAD_LETTER", dlq("ingest")),
                    ("GALE_INGEST__LISTEN", api.clone()),
                ],
                vec!["--config".into(), ingest_cfg.display().to_string()],
            ),
            (
                "gale-validate",
                "validate",
                vec![
                    ("GALE_TOPICS__INPUT", t["raw"].clone()),
                    ("GALE_TOPICS__VALIDATED", t["validated"].clone()),
                    ("GALE_TOPICS__QUARANTINE", t["quarantine"].clone()),
                    ("GALE_TOPICS__DEAD_LETTER", dlq("validate")),
                    ("GALE_VALIDATE__MODE", "backfill".into()),
                    ("GALE_VALIDATE__ASSETS__SOURCE", "postgres".into()),
                    ("GALE_VALIDATE__ASSETS__URL", db.url.clone()),
                    group("validate"),
                    state.clone(),
                ],
                vec![],
            ),
            (
                "gale-enrich",
                "enrich",
                vec![
                    ("GALE_TOPICS__INPUT", t["validated"].clone()),
                    ("GALE_TOPICS__OUTPUT", t["enriched"].clone()),
                    ("GALE_TOPICS__DEAD_LETTER", dlq("enrich")),
                    assets.clone(),
                    group("enrich"),
                ],
                vec![],
            ),
            (
                "gale-detect-faults",
                "detect-faults",
                vec![
                    ("GALE_TOPICS__INPUT", t["enriched"].clone()),
                    ("GALE_TOPICS__CHECKED", t["checked"].clone()),
                    ("GALE_TOPICS__FAULTS", t["faults"].clone()),
                    ("GALE_TOPICS__QUARANTINE", t["quarantine"].clone()),
                    ("GALE_TOPICS__DEAD_LETTER", dlq("detect-faults")),
                    group("detect-faults"),
                    state.clone(),
                ],
                vec![],
            ),
            (
                "gale-aggregate",
                "aggregate",
                vec![
                    ("GALE_TOPICS__INPUT", t["checked"].clone()),
                    ("GALE_TOPICS__ASSET_10M", t["agg10m"].clone()),
                    ("GALE_TOPICS__ASSET_1H", t["agg1h"].clone()),
                    ("GALE_TOPICS__ASSET_1D", t["agg1d"].clone()),
                    ("GALE_TOPICS__LATE", t["late"].clone()),
                    ("GALE_TOPICS__DEAD_LETTER", dlq("aggregate")),
                    group("aggregate"),
                    state.clone(),
                ],
                vec![],
            ),
            (
                "gale-rollup",
                "rollup-site",
                vec![
                    ("GALE_ROLLUP__SCOPE", "site".into()),
                    ("GALE_TOPICS__INPUT", t["agg1h"].clone()),
                    ("GALE_TOPICS__HOURLY", t["site1h"].clone()),
                    ("GALE_TOPICS__DAILY", t["site1d"].clone()),
                    ("GALE_TOPICS__PEAKS", t["peaks"].clone()),
                    ("GALE_TOPICS__DEAD_LETTER", dlq("rollup-site")),
                    group("rollup-site"),
                    state.clone(),
                ],
                vec![],
            ),
            (
                "gale-rollup",
                "rollup-fleet",
                vec![
                    ("GALE_ROLLUP__SCOPE", "fleet".into()),
                    ("GALE_TOPICS__INPUT", t["site1h"].clone()),
                    ("GALE_TOPICS__HOURLY", t["fleet1h"].clone()),
                    ("GALE_TOPICS__DAILY", t["fleet1d"].clone()),
                    ("GALE_TOPICS__PEAKS", t["peaks"].clone()),
                    ("GALE_TOPICS__DEAD_LETTER", dlq("rollup-fleet")),
                    group("rollup-fleet"),
                    state.clone(),
                ],
                vec![],
            ),
            (
                "gale-pg-sink",
                "pg-sink",
                vec![group("pg-sink")],
                vec!["--config".into(), pg_cfg.display().to_string()],
            ),
            (
                "gale-archive",
                "archive",
                vec![group("archive")],
                vec!["--config".into(), archive_cfg.display().to_string()],
            ),
        ];
        let services: Vec<ServiceProcess> = specs
            .into_iter()
            .map(|(bin_name, label, extra, args)| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                ServiceProcess::start(bin_name, &env(&extra), &args, &format!("obs-{label}"))
            })
            .collect();
        for s in &services {
            s.wait_ready(Duration::from_secs(90)).await;
        }
        Pipeline {
            services,
            api,
            db,
            _dir: dir,
        }
    }

    /// Posts a CSV body to ingest; panics unless it is accepted.
    async fn post(&self, csv: &str) {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/v1/readings", self.api))
            .header("X-Api-Key", API_KEY)
            .header("Content-Type", "text/csv")
            .body(csv.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!(
            status == 200,
            "ingest answered {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// Sample names and their labels over every service's `/metrics`.
    async fn scrape(&self, registry_url: &str) -> BTreeMap<String, BTreeSet<String>> {
        let mut all = BTreeMap::new();
        for s in &self.services {
            exported(&s.metrics().await, &mut all);
        }
        if let Ok(r) = reqwest::get(format!("{}/metrics", registry_url.trim_end_matches('/'))).await
        {
            exported(&r.text().await.unwrap_or_default(), &mut all);
        }
        all
    }
}

/// A turbine with a day-long silence (an extended gap), a meter, a reading
/// from the future (quarantined) and one from an asset nobody registered
/// (dead-lettered), as a head-end CSV export.
fn readings() -> String {
    let now = chrono::Utc::now().timestamp() / 600 * 600;
    let mut rows =
        vec!["asset_id,timestamp,power,power_unit,wind_speed,wind_speed_unit".to_string()];
    let mut turbine = |t: i64, i: i64| {
        rows.push(format!(
            "T1,{t},{},kW,{},m/s",
            600 + (i * 37) % 900,
            6.0 + (i % 7) as f64 * 0.8
        ))
    };
    turbine(now - 30 * 3600, 0);
    for i in 0..18 {
        turbine(now - 3 * 3600 + i * 600, i + 1);
    }
    for i in 0..18 {
        let t = now - 3 * 3600 + i * 600;
        rows.push(format!("M1,{t},{},kW,,", 2.0 + (i % 5) as f64 * 0.3));
    }
    rows.push(format!("T1,{},900,kW,8.0,m/s", now + 3 * 3600));
    rows.push(format!("GHOST-1,{},1.5,kW,,", now - 600));
    rows.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_use_only_exported_metrics_and_valid_sql() {
    let started = Instant::now();
    let stack = stack();
    let pipeline = Pipeline::start(&stack).await;
    let body = readings();
    pipeline.post(&body).await;
    // The same export again: validate sees repeats, pg-sink duplicates.
    pipeline.post(&body).await;

    let mut targets: Vec<(String, String)> = Vec::new();
    for (rule, expr) in alert_exprs() {
        targets.push((format!("gale-alerts.yml rule {rule}"), expr));
    }
    let boards = dashboards();
    let mut variables_checks: Vec<(String, String)> = Vec::new();
    let mut sql: Vec<(String, String, BTreeMap<String, String>)> = Vec::new();
    for d in &boards {
        let variables: BTreeMap<String, String> = d.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| {
                v["name"]
                    .as_str()
                    .map(|n| (n.to_string(), "'S1'".to_string()))
            })
            .collect();
        for q in queries(d) {
            match q.datasource.as_str() {
                "prometheus" if q.place.contains(" variable ") => {
                    variables_checks.push((q.place, q.text))
                }
                "prometheus" => targets.push((q.place, q.text)),
                "postgres" => sql.push((q.place, q.text, variables.clone())),
                _ => {}
            }
        }
    }

    // Series appear as the readings flow; wait until every reference
    // resolves, or report what is still missing at the deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (problems, metrics) = loop {
        let metrics = pipeline.scrape(&stack.registry_url).await;
        let mut problems: Vec<String> = Vec::new();
        for (place, expr) in &targets {
            for p in check_expr(expr, &metrics) {
                problems.push(format!("{place}: {p}\n    in `{}`", expr.trim()));
            }
        }
        for (place, query) in &variables_checks {
            for p in check_variable(query, &metrics) {
                problems.push(format!("{place}: {p}"));
            }
        }
        if problems.is_empty() || Instant::now() > deadline {
            break (problems, metrics);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(
        problems.is_empty(),
        "dashboards and alert rules name metrics or labels no service exports (logs in {}):\n{}",
        log_dir().display(),
        problems.join("\n")
    );

    // Rows reached Postgres, so the panels' SQL runs over real data.
    let pool = sqlx::PgPool::connect(&pipeline.db.url).await.unwrap();
    wait_for("readings in Postgres", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
                .fetch_one(&pool)
                .await
                .ok()?;
            (n > 0).then_some(())
        }
    })
    .await;
    let mut failures = Vec::new();
    for (place, text, variables) in &sql {
        match expand_sql(text, variables) {
            Err(e) => failures.push(format!("{place}: {e}")),
            Ok(q) => {
                if let Err(e) = sqlx::query(&q).fetch_all(&pool).await {
                    failures.push(format!("{place}: {e}\n    in `{q}`"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "Postgres panels fail:\n{}",
        failures.join("\n")
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM quarantined_readings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(stored > 0, "the reading from the future was quarantined");
    eprintln!(
        "checked {} PromQL expressions, {} variables and {} SQL queries in {:?} against {} exported series names: {:?}",
        targets.len(),
        variables_checks.len(),
        sql.len(),
        started.elapsed(),
        metrics.len(),
        metrics.keys().collect::<Vec<_>>()
    );
}

#[test]
fn exposition_parsing_keeps_labels_with_awkward_values() {
    let mut m = BTreeMap::new();
    exported(
        "# TYPE a histogram\n\
         a_bucket{stage=\"x,y\",le=\"0.5\"} 3 # {trace_id=\"abc\"} 0.4 1700000000\n\
         b{msg=\"say \\\"hi\\\" {x}\",kind=\"k\"} 1\n\
         c 2\n",
        &mut m,
    );
    assert_eq!(
        m["a_bucket"],
        BTreeSet::from(["stage".to_string(), "le".to_string()])
    );
    assert_eq!(
        m["b"],
        BTreeSet::from(["msg".to_string(), "kind".to_string()])
    );
    assert!(m["c"].is_empty());
    let problems = check_expr(
        "sum by (stage) (rate(a_bucket{le=\"1\"}[5m])) + c{job=\"x\"} + d",
        &m,
    );
    assert_eq!(problems, vec!["metric d is not exported by any service"]);
    let problems = check_expr("sum by (zone) (c{stage=\"x\"})", &m);
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn sql_macros_expand_to_plain_postgres() {
    let vars = BTreeMap::from([("site".to_string(), "'S1'".to_string())]);
    let q = expand_sql(
        "SELECT $__timeGroupAlias(t, '10m'), x FROM y WHERE $__timeFilter(t) AND s IN ($site) AND d > $__timeFrom()",
        &vars,
    )
    .unwrap();
    assert_eq!(
        q,
        "SELECT to_timestamp(floor(extract(epoch from t) / 600) * 600) AS \"time\", x FROM y \
         WHERE t BETWEEN now() - interval '2 days' AND now() + interval '1 day' AND s IN ('S1') \
         AND d > (now() - interval '2 days')"
    );
    assert!(expand_sql("SELECT $__nope(x)", &vars).is_err());
    assert!(expand_sql("SELECT $other", &vars).is_err());
}
