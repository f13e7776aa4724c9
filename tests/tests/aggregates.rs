//! aggregate end to end: a simulated run of checked readings with a
//! daylight-saving day, faults, quarantined readings, duplicates, gaps and
//! late readings goes through gale-aggregate and pg-sink, and every stored
//! aggregate is recomputed by SQL in Postgres from the stored readings
//! (code that shares nothing with Gale's); a run killed three times and a
//! replay with a fresh group give the same records; and two years of
//! four turbines' 10-minute data come out as every daily window, in order,
//! in bounded memory.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use gale_model::{
    ActiveFault, AssetAggregate, AssetKind, CheckedReading, EnrichedReading, QualityTier,
    ScoredReading, ASSET_AGGREGATE, CHECKED_READING,
};
use gale_tests::*;
use rdkafka::message::Message;
use sqlx::Row;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
/// 2026-03-27T23:00:00Z: midnight of 28 March in Berlin; the next night
/// Berlin springs forward, so its 29 March has 23 hours.
const START: i64 = 1_774_652_400_000;
/// Midnight of 30 March in Berlin (CEST): 47 hours of data.
const END: i64 = START + 47 * HOUR;

struct Topics {
    checked: String,
    agg: [String; 3],
    late: String,
}

impl Topics {
    fn new(tag: &str) -> Topics {
        Topics {
            checked: unique(&format!("checked-{tag}")),
            agg: [
                unique(&format!("agg10m-{tag}")),
                unique(&format!("agg1h-{tag}")),
                unique(&format!("agg1d-{tag}")),
            ],
            late: unique(&format!("late-{tag}")),
        }
    }

    fn outputs(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.agg.iter().map(String::as_str).collect();
        v.push(&self.late);
        v
    }
}

fn aggregate_env(
    stack: &Stack,
    input: &str,
    out: &Topics,
    group: &str,
) -> Vec<(&'static str, String)> {
    let mut env = service_env(stack, None);
    env.push(("GALE_TOPICS__INPUT", input.to_string()));
    env.push(("GALE_TOPICS__ASSET_10M", out.agg[0].clone()));
    env.push(("GALE_TOPICS__ASSET_1H", out.agg[1].clone()));
    env.push(("GALE_TOPICS__ASSET_1D", out.agg[2].clone()));
    env.push(("GALE_TOPICS__LATE", out.late.clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", unique("dlq-aggregate")));
    env.push(("GALE_KAFKA__GROUP_ID", group.to_string()));
    env.push(("GALE_PROCESSING__BATCH_SIZE", "50".into()));
    env.push(("GALE_STATE__COMMIT_INTERVAL", "200ms".into()));
    env.push(("GALE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000".into()));
    env.push((
        "GALE_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS",
        "1000".into(),
    ));
    env
}

/// Topics of the two roll-up deployments.
struct Rollups {
    site_1h: String,
    site_1d: String,
    fleet_1h: String,
    fleet_1d: String,
    peaks: String,
    site_group: String,
    fleet_group: String,
}

impl Rollups {
    fn new() -> Rollups {
        Rollups {
            site_1h: unique("site1h"),
            site_1d: unique("site1d"),
            fleet_1h: unique("fleet1h"),
            fleet_1d: unique("fleet1d"),
            peaks: unique("peaks"),
            site_group: unique("rollup-site"),
            fleet_group: unique("rollup-fleet"),
        }
    }
}

fn rollup_env(stack: &Stack, fleet: bool, input: &str, r: &Rollups) -> Vec<(&'static str, String)> {
    let mut env = service_env(stack, None);
    env.push((
        "GALE_ROLLUP__SCOPE",
        if fleet { "fleet" } else { "site" }.into(),
    ));
    env.push(("GALE_TOPICS__INPUT", input.to_string()));
    let (h, d) = if fleet {
        (&r.fleet_1h, &r.fleet_1d)
    } else {
        (&r.site_1h, &r.site_1d)
    };
    env.push(("GALE_TOPICS__HOURLY", h.clone()));
    env.push(("GALE_TOPICS__DAILY", d.clone()));
    env.push(("GALE_TOPICS__PEAKS", r.peaks.clone()));
    env.push(("GALE_TOPICS__DEAD_LETTER", unique("dlq-rollup")));
    let group = if fleet { &r.fleet_group } else { &r.site_group };
    env.push(("GALE_KAFKA__GROUP_ID", group.clone()));
    env.push(("GALE_STATE__COMMIT_INTERVAL", "200ms".into()));
    env
}

fn fault(code: &str, severity: &str) -> ActiveFault {
    ActiveFault {
        fault_id: format!("X:{code}:1"),
        code: code.into(),
        severity: severity.into(),
    }
}

fn turbine(id: &str, i: i64, t: i64) -> CheckedReading {
    let mut r = ScoredReading::new(format!("{id}-{i}"), id, AssetKind::Turbine, t);
    r.site_id = Some("S1".into());
    r.interval_ms = Some(10 * MIN);
    let wind = 2.0 + ((i * 7) % 13) as f64 * 0.9 + if id == "T2" { 0.35 } else { 0.0 };
    r.wind_speed_ms = Some(wind);
    r.power_kw = Some(if wind < 3.0 {
        0.0
    } else {
        (wind * wind * 21.5 + (i % 11) as f64 * 0.37).min(2000.0)
    });
    r.ambient_temperature_c = Some(4.0 + (i % 37) as f64 * 0.21);
    r.gearbox_temperature_c = Some(55.0 + (i % 29) as f64 * 0.13);
    r.vibration_ms2 = Some(1.1 + (i % 17) as f64 * 0.011);
    r.quality_score = 100 - (i % 3) as i32 * 5;
    r.quality_tier = QualityTier::Premium;
    let mut e = EnrichedReading::bare(r);
    e.site_time_zone = Some("Europe/Berlin".into());
    e.rated_power_kw = Some(2000.0);
    e.cut_in_wind_speed_ms = Some(3.0);
    e.cut_out_wind_speed_ms = Some(25.0);
    e.expected_power_kw = Some((wind * wind * 22.0).min(2000.0));
    let mut c = CheckedReading {
        enriched: e,
        faults: Vec::new(),
        fault_deduction: 0,
    };
    if id == "T1" && (40..50).contains(&i) {
        c.faults.push(fault("GEARBOX_OVERHEAT", "WARNING"));
    }
    if id == "T1" && (60..66).contains(&i) {
        c.faults.push(fault("TOWER_LEAN", "CRITICAL"));
        c.enriched.reading.power_kw = Some(0.0);
    }
    if id == "T2" && (80..84).contains(&i) {
        c.faults.push(fault("LOW_POWER_OUTPUT", "INFO"));
    }
    c
}

fn meter(i: i64, t: i64) -> CheckedReading {
    let mut r = ScoredReading::new(format!("M1-{i}"), "M1", AssetKind::Meter, t);
    r.site_id = Some("S2".into());
    r.interval_ms = Some(30 * MIN);
    let power = 1.5 + ((i * 5) % 9) as f64 * 0.27;
    r.power_kw = Some(power);
    r.voltage_v = Some(229.0 + (i % 7) as f64 * 0.4);
    r.energy_kwh = Some(1000.0 + i as f64 * 0.61);
    r.quality_score = 92;
    r.quality_tier = if i % 17 == 0 {
        QualityTier::Quarantine
    } else {
        QualityTier::Premium
    };
    CheckedReading {
        enriched: EnrichedReading::bare(r),
        faults: Vec::new(),
        fault_deduction: 0,
    }
}

/// The run, in the order it is sent, and the event ids expected on the
/// late topic (with the grains they missed). T2 is silent for 3 hours
/// (interpolated) and for 6 (missing); some of T1's readings are sent 40
/// minutes late (revisions), one of T2's 5 hours late (too late for its
/// 10-minute and hourly windows, in time for its day); some are sent twice.
fn scenario() -> (Vec<CheckedReading>, BTreeMap<String, String>) {
    let mut ordered: Vec<(i64, CheckedReading)> = Vec::new();
    let mut t = START;
    let mut i = 0;
    while t < END {
        let skip_t2 = (12..15).contains(&(i / 6)) || (20..26).contains(&(i / 6));
        ordered.push((t, turbine("T1", i, t)));
        if !skip_t2 {
            ordered.push((t, turbine("T2", i, t)));
        }
        // The meter reports every 30 minutes, and not at all from 09:00
        // to 10:00 UTC on 28 March (an interpolated hour, no peak).
        if (t - START) % (30 * MIN) == 0 && !(10 * HOUR..11 * HOUR).contains(&(t - START)) {
            ordered.push((t, meter((t - START) / (30 * MIN), t)));
        }
        t += 10 * MIN;
        i += 1;
    }
    let mut late = BTreeMap::new();
    let mut out = Vec::new();
    let mut held: Vec<(i64, CheckedReading)> = Vec::new();
    for (send_at, r) in ordered {
        let id = r.enriched.reading.event_id.clone();
        let n: i64 = id.rsplit('-').next().unwrap().parse().unwrap();
        let asset = r.enriched.reading.asset_id.clone();
        if asset == "T1" && (100..104).contains(&n) {
            held.push((send_at + 40 * MIN, r));
            continue;
        }
        if asset == "T2" && n == 170 {
            late.insert(id, "10m,1h".to_string());
            held.push((send_at + 5 * HOUR, r));
            continue;
        }
        held.sort_by_key(|(at, _)| *at);
        while held.first().is_some_and(|(at, _)| *at <= send_at) {
            out.push(held.remove(0).1);
        }
        if asset != "M1" && n % 50 == 7 {
            out.push(r.clone());
        }
        out.push(r);
    }
    out.extend(held.into_iter().map(|(_, r)| r));
    // Readings three days on close every window of the run; two more hours
    // of them close its site and then its fleet roll-ups.
    for (k, id) in ["T1", "T2"].iter().enumerate() {
        out.push(turbine(id, 10_000 + k as i64, END + 72 * HOUR));
        out.push(turbine(id, 10_010 + k as i64, END + 73 * HOUR + 10 * MIN));
        out.push(turbine(id, 10_020 + k as i64, END + 74 * HOUR + 10 * MIN));
    }
    out.push(meter(10_000, END + 72 * HOUR));
    out.push(meter(10_010, END + 73 * HOUR + 30 * MIN));
    out.push(meter(10_020, END + 74 * HOUR + 30 * MIN));
    (out, late)
}

async fn produce(stack: &Stack, topic: &str, readings: &[CheckedReading], pace: Option<Duration>) {
    let encoder = registry(stack)
        .register(topic, CHECKED_READING)
        .await
        .unwrap();
    let producer = producer(&stack.bootstrap);
    // One at a time per asset keeps the order of each key.
    for chunk in readings.chunks(20) {
        for r in chunk {
            let payload = encoder.encode(r).unwrap();
            send(&producer, topic, &r.enriched.reading.asset_id, &payload).await;
        }
        if let Some(p) = pace {
            tokio::time::sleep(p).await;
        }
    }
}

async fn read_aggregates(stack: &Stack, topic: &str) -> Vec<AssetAggregate> {
    let mut decoder = registry(stack)
        .decoder::<AssetAggregate>(ASSET_AGGREGATE)
        .unwrap();
    let mut out = Vec::new();
    for m in TopicReader::new(&stack.bootstrap, topic).drain(Duration::from_secs(3)) {
        out.push(decoder.decode(m.payload().unwrap()).await.unwrap());
    }
    out
}

/// Every record of the three grains by event id; a record seen twice (a
/// redelivery after a crash) must be identical.
async fn records(stack: &Stack, t: &Topics) -> BTreeMap<String, AssetAggregate> {
    let mut out: BTreeMap<String, AssetAggregate> = BTreeMap::new();
    for topic in &t.agg {
        for a in read_aggregates(stack, topic).await {
            if let Some(have) = out.get(&a.event_id) {
                assert_eq!(have, &a, "two different records share an event id");
            }
            out.insert(a.event_id.clone(), a);
        }
    }
    out
}

/// The fields compared, in order, as SQL over an aggregate table.
const STORED: &str = "readings, readings_used, readings_fault_excluded, readings_quarantined, \
    readings_expected, coverage, quality_score, \
    extract(epoch from first_event_time), extract(epoch from last_event_time), \
    power_kw_count, power_kw_mean, power_kw_min, power_kw_max, power_kw_stddev, \
    wind_speed_ms_count, wind_speed_ms_mean, wind_speed_ms_min, wind_speed_ms_max, wind_speed_ms_stddev, \
    ambient_temperature_c_count, ambient_temperature_c_mean, ambient_temperature_c_min, ambient_temperature_c_max, ambient_temperature_c_stddev, \
    gearbox_temperature_c_count, gearbox_temperature_c_mean, gearbox_temperature_c_min, gearbox_temperature_c_max, gearbox_temperature_c_stddev, \
    vibration_ms2_count, vibration_ms2_mean, vibration_ms2_min, vibration_ms2_max, vibration_ms2_stddev, \
    voltage_v_count, voltage_v_mean, voltage_v_min, voltage_v_max, voltage_v_stddev, \
    energy_kwh, energy_register_kwh, expected_energy_kwh, performance_ratio, rated_power_kw, \
    capacity_factor, available_hours, unavailable_hours, availability, extract(epoch from window_end)";

fn stat_sql(m: &str) -> String {
    format!(
        "count({m}) FILTER (WHERE how = 'u'), avg({m}) FILTER (WHERE how = 'u'), \
         min({m}) FILTER (WHERE how = 'u'), max({m}) FILTER (WHERE how = 'u'), \
         stddev_samp({m}) FILTER (WHERE how = 'u')"
    )
}

/// The reference: the same fields computed by SQL from `checked_readings`
/// for `grain`, leaving out readings that went to the late topic for it.
fn reference_sql(grain: &str) -> String {
    let (start, end) = match grain {
        "10m" => (
            "to_timestamp(floor(extract(epoch from event_time) / 600) * 600)".to_string(),
            "to_timestamp(floor(extract(epoch from event_time) / 600) * 600 + 600)".to_string(),
        ),
        "1h" => (
            "date_trunc('hour', event_time, 'UTC')".to_string(),
            "date_trunc('hour', event_time, 'UTC') + interval '1 hour'".to_string(),
        ),
        _ => (
            "date_trunc('day', event_time, tz)".to_string(),
            "((date_trunc('day', event_time, tz) AT TIME ZONE tz) + interval '1 day') AT TIME ZONE tz"
                .to_string(),
        ),
    };
    let turbine =
        |expr: &str| format!("CASE WHEN bool_and(asset_kind = 'TURBINE') THEN {expr} END");
    let p_h = "power_kw * h";
    let energy_filter = "how = 'u' AND power_kw IS NOT NULL AND h IS NOT NULL";
    let expected_filter = format!("{energy_filter} AND expected_power_kw IS NOT NULL");
    let avail_filter = "how <> 'q' AND h IS NOT NULL AND cat IS NOT NULL";
    let energy = format!("sum({p_h}) FILTER (WHERE {energy_filter})");
    let expected = format!("sum(expected_power_kw * h) FILTER (WHERE {expected_filter})");
    let avail = format!("sum(h) FILTER (WHERE {avail_filter} AND cat = 'A')");
    let unavail = format!("sum(h) FILTER (WHERE {avail_filter} AND cat = 'U')");
    let n_avail = format!("count(*) FILTER (WHERE {avail_filter})");
    let reg = "how = 'u' AND energy_kwh IS NOT NULL";
    format!(
        "WITH r AS (
           SELECT c.*,
             CASE WHEN quality_tier = 'QUARANTINE' THEN 'q'
                  WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(faults) f
                               WHERE f->>'severity' IN ('WARNING', 'CRITICAL')) THEN 'f'
                  ELSE 'u' END AS how,
             interval_ms::float8 / 3600000.0::float8 AS h,
             coalesce(site_time_zone, 'UTC') AS tz,
             CASE WHEN power_kw IS NULL THEN NULL
                  WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(faults) f
                               WHERE f->>'severity' = 'CRITICAL') THEN 'U'
                  WHEN power_kw > 0 THEN 'A'
                  WHEN wind_speed_ms IS NULL THEN NULL
                  WHEN wind_speed_ms < cut_in_wind_speed_ms THEN 'A'
                  WHEN wind_speed_ms >= cut_out_wind_speed_ms THEN 'A'
                  ELSE 'U' END AS cat
           FROM checked_readings c
           WHERE event_time < to_timestamp({end_s}) AND NOT (event_id = ANY($1))
         ), w AS (
           SELECT r.*, {start} AS ws, {end} AS we FROM r
         ), g AS (
           SELECT asset_id, ws, we, count(*) AS readings,
             count(*) FILTER (WHERE how = 'u') AS used,
             count(*) FILTER (WHERE how = 'f') AS excluded,
             count(*) FILTER (WHERE how = 'q') AS quarantined,
             nullif(floor(extract(epoch from (we - ws)) * 1000 / max(interval_ms))::bigint, 0) AS expected,
             avg(quality_score) FILTER (WHERE how = 'u') AS quality,
             min(event_time) FILTER (WHERE how = 'u') AS first_t,
             max(event_time) FILTER (WHERE how = 'u') AS last_t,
             {power}, {wind}, {ambient}, {gearbox}, {vibration}, {voltage},
             {energy} AS energy,
             CASE WHEN count(DISTINCT event_time) FILTER (WHERE {reg}) >= 2
                   AND (array_agg(energy_kwh ORDER BY event_time DESC) FILTER (WHERE {reg}))[1]
                       >= (array_agg(energy_kwh ORDER BY event_time) FILTER (WHERE {reg}))[1]
                  THEN (array_agg(energy_kwh ORDER BY event_time DESC) FILTER (WHERE {reg}))[1]
                       - (array_agg(energy_kwh ORDER BY event_time) FILTER (WHERE {reg}))[1]
             END AS register,
             {expected_t} AS expected_energy,
             {ratio} AS ratio,
             {rated} AS rated,
             {cf} AS cf,
             {avail_t} AS avail,
             {unavail_t} AS unavail,
             {availability} AS availability
           FROM w GROUP BY asset_id, ws, we
         )
         SELECT asset_id, extract(epoch from ws)::bigint AS ws, ARRAY[
           readings, used, excluded, quarantined, expected,
           readings::float8 / nullif(expected, 0), quality,
           extract(epoch from first_t), extract(epoch from last_t),
           power_kw_count, power_kw_mean, power_kw_min, power_kw_max, power_kw_stddev,
           wind_speed_ms_count, wind_speed_ms_mean, wind_speed_ms_min, wind_speed_ms_max, wind_speed_ms_stddev,
           ambient_temperature_c_count, ambient_temperature_c_mean, ambient_temperature_c_min, ambient_temperature_c_max, ambient_temperature_c_stddev,
           gearbox_temperature_c_count, gearbox_temperature_c_mean, gearbox_temperature_c_min, gearbox_temperature_c_max, gearbox_temperature_c_stddev,
           vibration_ms2_count, vibration_ms2_mean, vibration_ms2_min, vibration_ms2_max, vibration_ms2_stddev,
           voltage_v_count, voltage_v_mean, voltage_v_min, voltage_v_max, voltage_v_stddev,
           energy, register, expected_energy, ratio, rated, cf, avail, unavail, availability,
           extract(epoch from we)]::float8[] AS v
         FROM g",
        end_s = END / 1000,
        power = named_stats("power_kw"),
        wind = named_stats("wind_speed_ms"),
        ambient = named_stats("ambient_temperature_c"),
        gearbox = named_stats("gearbox_temperature_c"),
        vibration = named_stats("vibration_ms2"),
        voltage = named_stats("voltage_v"),
        expected_t = turbine(&expected),
        ratio = turbine(&format!(
            "sum({p_h}) FILTER (WHERE {expected_filter}) / nullif({expected}, 0)"
        )),
        rated = turbine("max(rated_power_kw) FILTER (WHERE how = 'u')"),
        cf = turbine(&format!(
            "{energy} / nullif(max(rated_power_kw) FILTER (WHERE how = 'u') * extract(epoch from (we - ws)) / 3600.0, 0)"
        )),
        avail_t = turbine(&format!(
            "CASE WHEN {n_avail} > 0 THEN coalesce({avail}, 0) END"
        )),
        unavail_t = turbine(&format!(
            "CASE WHEN {n_avail} > 0 THEN coalesce({unavail}, 0) END"
        )),
        availability = turbine(&format!(
            "coalesce({avail}, 0) / nullif(coalesce({avail}, 0) + coalesce({unavail}, 0), 0)"
        )),
    )
}

fn named_stats(m: &str) -> String {
    let parts: Vec<String> = stat_sql(m)
        .split(", ")
        .zip(["count", "mean", "min", "max", "stddev"])
        .map(|(e, n)| format!("{e} AS {m}_{n}"))
        .collect();
    parts.join(", ")
}

type Rows = BTreeMap<(String, i64), Vec<Option<f64>>>;

async fn rows(pool: &sqlx::PgPool, sql: &str, late: &[String]) -> Rows {
    let mut out = BTreeMap::new();
    for row in sqlx::query(sql).bind(late).fetch_all(pool).await.unwrap() {
        let asset: String = row.get(0);
        let ws: i64 = row.get(1);
        let v: Vec<Option<f64>> = row.get(2);
        out.insert((asset, ws), v);
    }
    out
}

fn same(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        (None, None) => true,
        _ => false,
    }
}

const CHECKED_TABLE: &str = "CREATE TABLE checked_readings (
    event_id text PRIMARY KEY, asset_id text NOT NULL, asset_kind text NOT NULL,
    site_id text, event_time timestamptz NOT NULL, interval_ms bigint,
    power_kw double precision, wind_speed_ms double precision,
    ambient_temperature_c double precision, gearbox_temperature_c double precision,
    vibration_ms2 double precision, voltage_v double precision, energy_kwh double precision,
    quality_score integer NOT NULL, quality_tier text NOT NULL, site_time_zone text,
    expected_power_kw double precision, rated_power_kw double precision,
    cut_in_wind_speed_ms double precision, cut_out_wind_speed_ms double precision,
    faults jsonb NOT NULL)";

/// The simulated run through aggregate and pg-sink; every stored aggregate
/// equals the SQL reference; late and duplicate readings are accounted for;
/// a run killed three times and a replay give identical records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_match_a_sql_reference_and_survive_kills_and_replays() {
    let stack = stack();
    let db = TestDatabase::create(&stack).await;
    let out = std::process::Command::new(bin("gale"))
        .args(["db", "migrate"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query(CHECKED_TABLE).execute(&pool).await.unwrap();

    let clean = Topics::new("clean");
    let killed = Topics::new("killed");
    let replay = Topics::new("replay");
    let mut all: Vec<&str> = vec![&clean.checked];
    for t in [&clean, &killed, &replay] {
        all.extend(t.outputs());
    }
    create_topics(&stack.bootstrap, &all, 2).await;
    let input = clean.checked.clone();

    let clean_group = unique("agg-clean");
    let mut a = ServiceProcess::start(
        "gale-aggregate",
        &aggregate_env(&stack, &input, &clean, &clean_group),
        &[],
        "agg-clean",
    );
    let killed_group = unique("agg-killed");
    let mut b = ServiceProcess::start(
        "gale-aggregate",
        &aggregate_env(&stack, &input, &killed, &killed_group),
        &[],
        "agg-killed",
    );
    let rollups = Rollups::new();
    create_topics(
        &stack.bootstrap,
        &[
            &rollups.site_1h,
            &rollups.site_1d,
            &rollups.fleet_1h,
            &rollups.fleet_1d,
            &rollups.peaks,
        ],
        2,
    )
    .await;
    let mut site = ServiceProcess::start(
        "gale-rollup",
        &rollup_env(&stack, false, &clean.agg[1], &rollups),
        &[],
        "rollup-site",
    );
    let mut fleet = ServiceProcess::start(
        "gale-rollup",
        &rollup_env(&stack, true, &rollups.site_1h, &rollups),
        &[],
        "rollup-fleet",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = pg_sink_config(
        dir.path(),
        &db.url,
        &[(&input, "checked_readings", false)],
        &unique("dlq-pg"),
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    for (topic, grain) in clean.agg.iter().zip(["10m", "1h", "1d"]) {
        text.push_str(&format!(
            "\n[[sink.tables]]\ntopic = \"{topic}\"\ntable = \"agg_asset_{grain}_revisions\"\ntime_column = \"window_start\"\nlatest = {{ table = \"agg_asset_{grain}\", key = \"aggregate_id\", order_by = \"revision\" }}\n"
        ));
    }
    for (topic, table) in [
        (&rollups.site_1h, "agg_site_1h"),
        (&rollups.site_1d, "agg_site_1d"),
        (&rollups.fleet_1h, "agg_fleet_1h"),
        (&rollups.fleet_1d, "agg_fleet_1d"),
    ] {
        text.push_str(&format!(
            "\n[[sink.tables]]\ntopic = \"{topic}\"\ntable = \"{table}_revisions\"\ntime_column = \"window_start\"\nlatest = {{ table = \"{table}\", key = \"aggregate_id\", order_by = \"revision\" }}\n"
        ));
    }
    text.push_str(&format!(
        "\n[[sink.tables]]\ntopic = \"{}\"\ntable = \"peaks_revisions\"\ntime_column = \"local_date\"\nlatest = {{ table = \"peaks\", key = \"peak_id\", order_by = \"revision\" }}\n",
        rollups.peaks
    ));
    std::fs::write(&config, text).unwrap();
    let pg_group = unique("pg");
    let mut pg_env = service_env(&stack, None);
    pg_env.push(("GALE_KAFKA__GROUP_ID", pg_group.clone()));
    let mut pg = ServiceProcess::start(
        "gale-pg-sink",
        &pg_env,
        &["--config", config.to_str().unwrap()],
        "agg-pg",
    );
    a.wait_ready(Duration::from_secs(60)).await;
    b.wait_ready(Duration::from_secs(60)).await;
    pg.wait_ready(Duration::from_secs(60)).await;
    site.wait_ready(Duration::from_secs(60)).await;
    fleet.wait_ready(Duration::from_secs(60)).await;

    let (readings, late_expected) = scenario();
    let feeder = {
        let stack2 = stack.clone();
        let (input, readings) = (input.clone(), readings.clone());
        tokio::spawn(async move {
            produce(&stack2, &input, &readings, Some(Duration::from_millis(300))).await
        })
    };
    // Three SIGKILLs of one of the two while the run is fed, each once it
    // has taken in records since its last start (and once more while it
    // restores its state).
    for round in 0..3 {
        wait_for(
            "the killed run to make progress",
            Duration::from_secs(120),
            || {
                let b = &b;
                async move { (b.records_in().await >= 20.0).then_some(()) }
            },
        )
        .await;
        b.kill9();
        b.restart();
        if round == 1 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            b.kill9();
            b.restart();
        }
        b.wait_ready(Duration::from_secs(60)).await;
    }
    feeder.await.unwrap();
    b.wait_ready(Duration::from_secs(60)).await;
    wait_caught_up(&stack, &clean_group, &input).await;
    wait_caught_up(&stack, &killed_group, &input).await;

    let clean_records = records(&stack, &clean).await;
    let killed_records = records(&stack, &killed).await;
    assert!(clean_records.len() > 500, "{} records", clean_records.len());
    assert_eq!(
        clean_records.keys().collect::<Vec<_>>(),
        killed_records.keys().collect::<Vec<_>>(),
        "the killed run emitted other records"
    );
    assert_eq!(clean_records, killed_records);

    // Too-late readings are on the late topic, marked with what they missed.
    let mut decoder = registry(&stack)
        .decoder::<CheckedReading>(CHECKED_READING)
        .unwrap();
    let mut late_got = BTreeMap::new();
    for m in TopicReader::new(&stack.bootstrap, &clean.late).drain(Duration::from_secs(3)) {
        let r = decoder.decode(m.payload().unwrap()).await.unwrap();
        late_got.insert(
            r.enriched.reading.event_id.clone(),
            r.enriched.reading.attributes["gale.late_for"].clone(),
        );
    }
    assert_eq!(late_got, late_expected);
    // Corrections: T1's held-back readings revised their windows.
    let revised: BTreeSet<&str> = clean_records
        .values()
        .filter(|a| a.revision > 0)
        .map(|a| a.grain.as_str())
        .collect();
    assert!(revised.contains("1h"), "{revised:?}");
    assert!(
        clean_records
            .values()
            .any(|a| a.grain == "10m" && a.readings_late == 1 && a.revision == 0),
        "a ten-minute window first seen late is emitted at once"
    );
    let late_counted: i64 = clean_records
        .values()
        .filter(|a| a.grain == "1d" && a.asset_id == "T1")
        .map(|a| a.readings_late)
        .max()
        .unwrap();
    assert_eq!(late_counted, 0, "the day was still open when they came");
    let dups: i64 = clean_records
        .values()
        .filter(|a| a.grain == "1d")
        .fold(BTreeMap::new(), |mut m, a| {
            let e = m.entry(a.aggregate_id.clone()).or_insert((0, 0));
            if a.revision >= e.0 {
                *e = (a.revision, a.readings_duplicate);
            }
            m
        })
        .values()
        .map(|(_, d)| d)
        .sum();
    let sent_twice = readings.len()
        - readings
            .iter()
            .map(|r| &r.enriched.reading.event_id)
            .collect::<BTreeSet<_>>()
            .len();
    assert_eq!(dups, sent_twice as i64);

    // Postgres holds the newest revision of every window; SQL over the
    // stored readings gives the same numbers.
    wait_caught_up(&stack, &pg_group, &input).await;
    for topic in &clean.agg {
        wait_caught_up(&stack, &pg_group, topic).await;
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM checked_readings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored as usize, readings.len() - sent_twice);
    for (grain, ten) in [("10m", true), ("1h", false), ("1d", false)] {
        let late: Vec<String> = late_expected
            .iter()
            .filter(|(_, g)| g.split(',').any(|x| x == grain))
            .map(|(id, _)| id.clone())
            .collect();
        let want = rows(&pool, &reference_sql(grain), &late).await;
        let got = rows(
            &pool,
            &format!(
                "SELECT asset_id, extract(epoch from window_start)::bigint, ARRAY[{STORED}]::float8[] \
                 FROM agg_asset_{grain} WHERE gap IS NULL AND window_start < to_timestamp({})",
                END / 1000
            ),
            &[],
        )
        .await;
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>(),
            "{grain}: windows differ"
        );
        for (k, w) in &want {
            let g = &got[k];
            for (i, (x, y)) in w.iter().zip(g).enumerate() {
                assert!(
                    same(*x, *y),
                    "{grain} {k:?} field {i}: reference {x:?}, stored {y:?}"
                );
            }
        }
        if ten {
            assert!(want.len() > 600, "{} ten-minute windows", want.len());
        }
    }
    // The daylight-saving day is 23 hours long; the meter's days are UTC.
    let days: Vec<(String, String, f64, String)> = sqlx::query_as(
        "SELECT asset_id, local_date::text, (extract(epoch from window_end - window_start) / 3600)::float8, time_zone \
         FROM agg_asset_1d WHERE window_start < to_timestamp($1) ORDER BY asset_id, window_start",
    )
    .bind((END / 1000) as f64)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        days.contains(&(
            "T1".into(),
            "2026-03-29".into(),
            23.0,
            "Europe/Berlin".into()
        )),
        "{days:?}"
    );
    assert!(
        days.contains(&("M1".into(), "2026-03-29".into(), 24.0, "UTC".into())),
        "{days:?}"
    );

    // T2's silences: three hours interpolated between their neighbours, six marked.
    let gaps: Vec<(i64, String, Option<f64>, Option<f64>)> = sqlx::query_as(
        "SELECT extract(epoch from window_start)::bigint, gap, energy_kwh, quality_score \
         FROM agg_asset_1h WHERE asset_id = 'T2' AND gap IS NOT NULL ORDER BY window_start",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let kinds: Vec<&str> = gaps.iter().map(|g| g.1.as_str()).collect();
    assert_eq!(
        kinds,
        [vec!["interpolated"; 3], vec!["missing_short"; 6]].concat()
    );
    let hour = |s: i64| -> (Option<f64>, Option<f64>) {
        let w = &clean_records
            .values()
            .filter(|a| {
                a.asset_id == "T2" && a.grain == "1h" && a.window_start == s && a.gap.is_none()
            })
            .max_by_key(|a| a.revision)
            .unwrap();
        (w.energy_kwh, w.quality_score)
    };
    let (e0, q0) = hour(START + 11 * HOUR);
    let (e1, q1) = hour(START + 15 * HOUR);
    for (k, g) in gaps.iter().take(3).enumerate() {
        let want = e0.unwrap() + (e1.unwrap() - e0.unwrap()) * (k + 1) as f64 / 4.0;
        assert!(same(g.2, Some(want)), "{g:?} vs {want}");
        assert_eq!(g.3, Some(q0.unwrap().min(q1.unwrap()) - 10.0));
        assert_eq!(g.0 * 1000, START + (12 + k as i64) * HOUR);
    }
    assert!(gaps[3..].iter().all(|g| g.2.is_none()));

    check_rollups(&stack, &pool, &pg_group, &clean.agg[1], &rollups).await;

    pg.terminate(Duration::from_secs(20));
    a.terminate(Duration::from_secs(20));
    b.terminate(Duration::from_secs(20));
    site.terminate(Duration::from_secs(20));
    fleet.terminate(Duration::from_secs(20));

    // A replay: a fresh group over the same input emits the same records.
    let replay_group = unique("agg-replay");
    let mut c = ServiceProcess::start(
        "gale-aggregate",
        &aggregate_env(&stack, &input, &replay, &replay_group),
        &[],
        "agg-replay",
    );
    c.wait_ready(Duration::from_secs(60)).await;
    wait_caught_up(&stack, &replay_group, &input).await;
    let replayed = records(&stack, &replay).await;
    assert_eq!(replayed, clean_records);
    c.terminate(Duration::from_secs(20));
}

/// Site and fleet roll-ups in Postgres against SQL over the stored asset
/// hours; each day's peak hours against SQL over the site hours.
async fn check_rollups(
    stack: &Stack,
    pool: &sqlx::PgPool,
    pg_group: &str,
    asset_1h: &str,
    r: &Rollups,
) {
    // The site roll-up has taken in every asset hour, the fleet roll-up
    // every site hour, and pg-sink everything both wrote.
    wait_caught_up(stack, &r.site_group, asset_1h).await;
    wait_caught_up(stack, &r.fleet_group, &r.site_1h).await;
    for topic in [&r.site_1h, &r.site_1d, &r.fleet_1h, &r.fleet_1d, &r.peaks] {
        wait_caught_up(stack, pg_group, topic).await;
    }
    let sums = "count(*)::float8, sum(readings)::float8, sum(readings_used)::float8, \
        sum(energy_kwh) FILTER (WHERE asset_kind = 'TURBINE'), \
        sum(energy_kwh) FILTER (WHERE asset_kind = 'METER'), sum(expected_energy_kwh), \
        sum(available_hours) / nullif(sum(available_hours) + sum(unavailable_hours), 0), \
        count(*) FILTER (WHERE gap IS NOT NULL)::float8";
    let stored = "assets::float8, readings::float8, readings_used::float8, production_kwh, \
        consumption_kwh, expected_energy_kwh, availability, gap_hours::float8";
    let cases = [
        (
            format!(
                "SELECT site_id, extract(epoch from window_start)::bigint, ARRAY[{sums}] \
                     FROM agg_asset_1h WHERE window_start < to_timestamp({end}) GROUP BY 1, 2",
                end = END / 1000
            ),
            format!(
                "SELECT site_id, extract(epoch from window_start)::bigint, ARRAY[{stored}] \
                     FROM agg_site_1h WHERE window_start < to_timestamp({end})",
                end = END / 1000
            ),
        ),
        (
            format!(
                "SELECT 'fleet', extract(epoch from window_start)::bigint, ARRAY[{sums}] \
                     FROM agg_asset_1h WHERE window_start < to_timestamp({end}) GROUP BY 1, 2",
                end = END / 1000
            ),
            format!(
                "SELECT 'fleet', extract(epoch from window_start)::bigint, ARRAY[{stored}] \
                     FROM agg_fleet_1h WHERE window_start < to_timestamp({end})",
                end = END / 1000
            ),
        ),
        (
            // Site days: S1 in Berlin (its assets carry the zone), S2 in UTC.
            format!(
                "SELECT site_id, extract(epoch from date_trunc('day', window_start, \
                       CASE site_id WHEN 'S1' THEN 'Europe/Berlin' ELSE 'UTC' END))::bigint, \
                       ARRAY[{sums}] FROM agg_asset_1h WHERE window_start < to_timestamp({end}) \
                     GROUP BY 1, 2",
                end = END / 1000
            ),
            format!(
                "SELECT site_id, extract(epoch from window_start)::bigint, ARRAY[{stored}] \
                     FROM agg_site_1d WHERE window_start < to_timestamp({end})",
                end = END / 1000
            ),
        ),
    ];
    for (reference, stored) in cases {
        let want = rows(pool, &reference, &[]).await;
        let mut got = rows(pool, &stored, &[]).await;
        // Days at the run's edges are partial on one side: compare what both have.
        got.retain(|k, _| want.contains_key(k));
        assert!(!got.is_empty(), "{stored}");
        for (k, g) in &got {
            let w = &want[k];
            for (i, (x, y)) in w.iter().zip(g).enumerate() {
                assert!(
                    same(*x, *y),
                    "{stored}\n{k:?} field {i}: reference {x:?}, stored {y:?}"
                );
            }
        }
        if !stored.contains("agg_site_1d") {
            assert_eq!(got.len(), want.len(), "{stored}");
        }
    }
    // S2's peaks: the top three hours of each full UTC day by its meters'
    // consumption, ties to the earlier hour, leaving out hours whose meters
    // received under 75 % of their readings.
    let want: Vec<(String, i32, Option<i64>)> = sqlx::query_as(
        "SELECT local_date::text, rank::int, extract(epoch from window_start)::bigint FROM ( \
           SELECT (window_start AT TIME ZONE 'UTC')::date AS local_date, window_start, \
             row_number() OVER (PARTITION BY (window_start AT TIME ZONE 'UTC')::date \
                                ORDER BY consumption DESC, window_start) AS rank \
           FROM (SELECT window_start, sum(energy_kwh) AS consumption, \
                        sum(readings)::float8 / nullif(sum(readings_expected), 0) AS coverage \
                 FROM agg_asset_1h WHERE site_id = 'S2' AND asset_kind = 'METER' \
                 GROUP BY window_start) h \
           WHERE coverage >= 0.75 AND consumption IS NOT NULL) s \
         WHERE rank <= 3 AND local_date IN \
           (SELECT local_date FROM agg_site_1d WHERE site_id = 'S2' AND hours = 24) \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let got: Vec<(String, i32, Option<i64>)> = sqlx::query_as(
        "SELECT local_date::text, rank, extract(epoch from hour_start)::bigint FROM peaks \
         WHERE site_id = 'S2' AND local_date IN \
           (SELECT local_date FROM agg_site_1d WHERE site_id = 'S2' AND hours = 24) \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let gap_hour: Option<i64> = sqlx::query_scalar(
        "SELECT extract(epoch from window_start)::bigint FROM agg_asset_1h \
         WHERE asset_id = 'M1' AND gap = 'interpolated'",
    )
    .fetch_optional(pool)
    .await
    .unwrap();
    assert_eq!(
        gap_hour,
        Some((START + 10 * HOUR) / 1000),
        "M1's silent hour is filled"
    );
    if want.is_empty() || got != want {
        let dbg: Vec<(String, String, Option<f64>)> = sqlx::query_as(
            "SELECT site_id, local_date::text, meter_coverage FROM agg_site_1h ORDER BY 1, 2",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        panic!("peaks {got:?}\nreference {want:?}\ndays {dbg:?}");
    }
    // The fleet's only consumer is S2, and the fleet's days are UTC too.
    let fleet: Vec<(String, i32, Option<i64>)> = sqlx::query_as(
        "SELECT local_date::text, rank, extract(epoch from hour_start)::bigint FROM peaks \
         WHERE scope = 'fleet' AND local_date IN \
           (SELECT local_date FROM agg_site_1d WHERE site_id = 'S2' AND hours = 24) \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    if fleet != want {
        let dbg: Vec<(i64, Option<f64>, Option<f64>)> = sqlx::query_as(
            "SELECT extract(epoch from window_start)::bigint, consumption_kwh, meter_coverage \
             FROM agg_fleet_1h ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        panic!("fleet peaks {fleet:?}\nreference {want:?}\nfleet hours {dbg:?}");
    }
}

/// Two years of 10-minute readings from four turbines, sent as SCADA
/// backfills are: one turbine's file after another, through one partition.
/// Every daily window comes out once, in order, complete, while the process
/// holds only each turbine's open windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_year_backfill_yields_every_day_in_order_in_bounded_memory() {
    let stack = stack();
    let t = Topics::new("backfill");
    create_topics(&stack.bootstrap, &[&t.checked], 1).await;
    create_topics(&stack.bootstrap, &t.outputs(), 1).await;
    // 2024-01-01T00:00Z, two years (2024 is a leap year: 731 days).
    let start: i64 = 1_704_067_200_000;
    let days = 731;
    let per_day = 144;
    let encoder = registry(&stack)
        .register(&t.checked, CHECKED_READING)
        .await
        .unwrap();
    let producer = producer(&stack.bootstrap);
    let started = Instant::now();
    let mut sent = 0usize;
    for k in 1..=4 {
        let id = format!("BF{k}");
        let mut pending = Vec::new();
        for i in 0..(days * per_day) {
            let mut r = turbine(&id, i, start + i * 10 * MIN);
            r.enriched.reading.event_id = format!("{id}-{i}");
            r.faults.clear();
            r.enriched.site_time_zone = None;
            let payload = encoder.encode(&r).unwrap();
            let (producer, topic, key) = (producer.clone(), t.checked.clone(), id.clone());
            pending.push(async move { send(&producer, &topic, &key, &payload).await });
            sent += 1;
            if pending.len() >= 2000 {
                futures::future::join_all(std::mem::take(&mut pending)).await;
            }
        }
        futures::future::join_all(pending).await;
        // One more reading closes the turbine's last day.
        let r = turbine(&id, 999_999, start + (days + 2) * 24 * HOUR);
        send(&producer, &t.checked, &id, &encoder.encode(&r).unwrap()).await;
    }
    eprintln!("sent {sent} readings in {:?}", started.elapsed());

    let group = unique("agg-backfill");
    let mut env = aggregate_env(&stack, &t.checked, &t, &group);
    env.retain(|(k, _)| *k != "GALE_PROCESSING__BATCH_SIZE" && *k != "GALE_STATE__COMMIT_INTERVAL");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aggregate.toml");
    std::fs::write(&config, "[aggregate]\ngrains = [\"1d\"]\n").unwrap();
    let mut agg = ServiceProcess::start(
        "gale-aggregate",
        &env,
        &["--config", config.to_str().unwrap()],
        "agg-backfill",
    );
    agg.wait_ready(Duration::from_secs(60)).await;
    let began = Instant::now();
    wait_for(
        "the backfill to be aggregated",
        Duration::from_secs(600),
        || {
            let (b, g, topic) = (stack.bootstrap.clone(), group.clone(), t.checked.clone());
            async move { (committed_lag(&b, &g, &topic) == Ok(0)).then_some(()) }
        },
    )
    .await;
    let (_, peak) = agg.memory_mib();
    eprintln!(
        "aggregated {sent} readings in {:?}, peak RSS {peak:.0} MiB",
        began.elapsed()
    );
    agg.terminate(Duration::from_secs(20));

    let daily = read_aggregates(&stack, &t.agg[2]).await;
    let mut per_asset: BTreeMap<String, Vec<&AssetAggregate>> = BTreeMap::new();
    for a in &daily {
        per_asset.entry(a.asset_id.clone()).or_default().push(a);
    }
    assert_eq!(per_asset.len(), 4);
    for (asset, list) in per_asset {
        assert_eq!(list.len(), days as usize, "{asset}: one record per day");
        for (d, a) in list.iter().enumerate() {
            assert_eq!(
                a.window_start,
                start + d as i64 * 24 * HOUR,
                "{asset}: in order"
            );
            assert_eq!((a.readings, a.revision), (per_day, 0), "{asset} day {d}");
            assert_eq!(a.coverage, Some(1.0));
        }
    }
    // Every open window is one day per turbine: memory stays far below
    // what holding the run (300,000 readings) would take.
    assert!(peak > 0.0 && peak < 400.0, "peak RSS {peak:.0} MiB");
}
