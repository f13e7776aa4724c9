//! `gale-bench aggregate`: gale-aggregate (state persistence on) against
//! the plain pass-through, then the time to restore its state.
//!
//! The input is `n` checked readings of `assets` assets, ten minutes apart
//! per asset and in event-time order, thirty days old (a backfill: windows
//! close on each asset's own time). Each asset's reading closes that
//! asset's windows that ended (plus the grace) by its event time, so the
//! stage emits an aggregate for nearly every reading, the last ones while
//! it processes the last reading of each partition; each asset's newest
//! windows (ten minutes, hour, day) stay open in state, which the restore
//! then rebuilds.

use super::*;
use gale_model::{
    ActiveFault, AssetKind, CheckedReading, EnrichedReading, QualityTier, ScoredReading,
    CHECKED_READING,
};

/// Event-time spacing of an asset's readings.
const INTERVAL_MS: i64 = 600_000;

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Reading `i` of the bench's stream: asset `i % assets` (the first half
/// turbines at four farms in Europe/Berlin, the rest meters on four grid
/// areas, half of them in Europe/Berlin and half without a zone, so UTC),
/// round `i / assets`, ten minutes after the round before. Values wander
/// deterministically; every 50th turbine has a gearbox fault (WARNING,
/// which excludes its readings) open for two rounds in twenty.
fn checked_reading(i: usize, assets: usize, t0: i64) -> (String, CheckedReading) {
    let a = i % assets;
    let round = (i / assets) as i64;
    let t = t0 + round * INTERVAL_MS;
    let turbine = a < assets / 2;
    let (id, kind) = if turbine {
        (format!("WT-{a:05}"), AssetKind::Turbine)
    } else {
        (format!("MTR-{a:05}"), AssetKind::Meter)
    };
    // A cheap deterministic wobble in [0, 1).
    let h = (i as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let wobble = (h >> 11) as f64 / (1u64 << 53) as f64;
    let mut r = ScoredReading::new(format!("{id}-{round}"), id.clone(), kind, t);
    r.received_time = t + 60_000;
    r.validated_time = t + 61_000;
    r.source = "bench".into();
    r.channel = gale_model::IngestChannel::Simulator;
    r.interval_ms = Some(INTERVAL_MS);
    r.quality_score = 100 - (h % 7) as i32;
    r.quality_tier = QualityTier::Premium;
    let site = a % 4;
    let faulty = turbine && a % 50 == 0 && round % 20 < 2;
    let mut e;
    if turbine {
        let wind = 3.0 + 12.0 * wobble;
        let rated = 2_000.0;
        let expected = (rated * ((wind - 3.0) / 9.0).powi(3)).min(rated);
        let power = if faulty { 0.0 } else { expected * 0.97 };
        r.site_id = Some(format!("farm-{site}"));
        r.wind_speed_ms = Some(wind);
        r.power_kw = Some(power);
        r.rotor_speed_rpm = Some((6.0 + 10.0 * (wind - 3.0) / 9.0).min(16.0));
        r.ambient_temperature_c = Some(5.0 + 10.0 * wobble);
        r.nacelle_temperature_c = Some(20.0 + 8.0 * wobble);
        r.gearbox_temperature_c = Some(if faulty { 88.0 } else { 58.0 + 8.0 * wobble });
        r.generator_temperature_c = Some(55.0 + 6.0 * wobble);
        r.vibration_ms2 = Some(0.5 + 0.6 * wobble);
        r.oil_pressure_bar = Some(45.0 + 5.0 * wobble);
        e = EnrichedReading::bare(r);
        e.site_name = Some(format!("Farm {site}"));
        e.site_time_zone = Some("Europe/Berlin".into());
        e.model_id = Some("SIM-2000".into());
        e.rated_power_kw = Some(rated);
        e.cut_in_wind_speed_ms = Some(3.0);
        e.rated_wind_speed_ms = Some(12.0);
        e.cut_out_wind_speed_ms = Some(25.0);
        e.air_density_kg_m3 = Some(1.225);
        e.normalized_wind_speed_ms = Some(wind);
        e.expected_power_kw = Some(expected);
        e.power_deficit_kw = Some(expected - power);
        e.capacity_factor = Some(power / rated);
    } else {
        let kw = 0.3 + 5.0 * wobble;
        r.site_id = Some(format!("grid-{site}"));
        r.power_kw = Some(kw);
        // A register that only grows: what was consumed in earlier rounds.
        r.energy_kwh = Some(10_000.0 + a as f64 + round as f64 * 0.5);
        r.voltage_v = Some(228.0 + 4.0 * wobble);
        e = EnrichedReading::bare(r);
        e.site_name = Some(format!("Grid {site}"));
        e.site_time_zone = (a % 2 == 0).then(|| "Europe/Berlin".to_string());
        e.contracted_capacity_kw = Some(10.0);
        e.feeder_id = Some(format!("feeder-{}", a % 16));
    }
    let faults = if faulty {
        vec![ActiveFault {
            fault_id: format!("{id}:GEARBOX_OVERHEAT:{}", round / 20),
            code: "GEARBOX_OVERHEAT".into(),
            severity: "WARNING".into(),
        }]
    } else {
        Vec::new()
    };
    let fault_deduction = if faulty { 10 } else { 0 };
    (
        id,
        CheckedReading {
            enriched: e,
            faults,
            fault_deduction,
        },
    )
}

/// Readings `range` of the bench's stream (see [`checked_reading`]).
fn checked_readings(
    range: std::ops::Range<usize>,
    assets: usize,
    t0: i64,
) -> Vec<(String, CheckedReading)> {
    range.map(|i| checked_reading(i, assets, t0)).collect()
}

/// Polls a stage's `/metrics` until it has consumed a record; returns the
/// wall clock (ms) at that moment.
pub(crate) async fn first_consumed_ms(http: &str, timeout: Duration) -> anyhow::Result<i64> {
    let deadline = Instant::now() + timeout;
    loop {
        if consumed(http).await > 0.0 {
            return Ok(now_ms());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{http} consumed nothing in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// gale-aggregate (state persistence on) against the plain pass-through,
/// then the time to restore the state of `assets` assets.
pub(crate) async fn bench_aggregate(n: usize, assets: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        assets > 0 && n >= 3 * assets,
        "--records must be at least three rounds of --assets"
    );
    let stack = stack();
    let input = unique("bench-checked");
    let (agg_10m, agg_1h, agg_1d, late, dlq) = (
        unique("bench-agg-10m"),
        unique("bench-agg-1h"),
        unique("bench-agg-1d"),
        unique("bench-agg-late"),
        unique("bench-dlq"),
    );
    create_topics(
        &stack.bootstrap,
        &[&input, &agg_10m, &agg_1h, &agg_1d, &late, &dlq],
        3,
    )
    .await;
    // Thirty days back, on a whole hour: the ten-minute readings start windows.
    let t0 = (now_ms() - 30 * 86_400_000) / 3_600_000 * 3_600_000;
    eprintln!(
        "preloading {n} checked readings of {assets} assets ({} rounds of 10 minutes)",
        n.div_ceil(assets)
    );
    preload_values(
        &stack,
        &input,
        CHECKED_READING,
        &checked_readings(0..n, assets, t0),
    )
    .await?;

    eprintln!("baseline: plain consume -> produce of the same bytes");
    let base = baseline(&stack, &input, n).await?;

    let group = unique("bench-aggregate");
    let env = |http: &str| {
        vec![
            ("GALE_KAFKA__BOOTSTRAP_SERVERS", stack.bootstrap.clone()),
            ("GALE_REGISTRY__URL", stack.registry_url.clone()),
            ("GALE_HTTP__LISTEN", http.to_string()),
            ("GALE_TOPICS__INPUT", input.clone()),
            ("GALE_TOPICS__ASSET_10M", agg_10m.clone()),
            ("GALE_TOPICS__ASSET_1H", agg_1h.clone()),
            ("GALE_TOPICS__ASSET_1D", agg_1d.clone()),
            ("GALE_TOPICS__LATE", late.clone()),
            ("GALE_TOPICS__DEAD_LETTER", dlq.clone()),
            ("GALE_KAFKA__GROUP_ID", group.clone()),
            ("RUST_LOG", "warn".into()),
        ]
    };
    eprintln!("gale-aggregate");
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(bin("gale-aggregate"))
        .envs(env(&http))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            log_dir().join("bench-aggregate.log"),
        )?)
        .spawn()?;
    let pid = child.id();
    let cpu0 = cpu_seconds(pid);
    let outputs = [&agg_10m, &agg_1h, &agg_1d, &late, &dlq];
    let readers: Vec<TopicReader> = outputs
        .iter()
        .map(|t| TopicReader::new(&stack.bootstrap, t))
        .collect();
    // From the first record taken (the pass-through is timed from its
    // first output, so this is the stricter of the two) ...
    let start_ms = first_consumed_ms(&http, Duration::from_secs(120)).await?;
    // ... to the last aggregate (emitted while the last reading of its
    // partition is processed), once the stage has taken every reading
    // (its /metrics, every half second) and the outputs have been quiet
    // for two seconds.
    let mut counts = [0usize; 5];
    let mut last_ts = i64::MIN;
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let (mut took_all, mut checked) = (false, Instant::now());
    loop {
        let mut got = 0;
        for (k, r) in readers.iter().enumerate() {
            for m in r.poll_for(Duration::from_millis(50)) {
                if let Some(ts) = m.timestamp().to_millis() {
                    last_ts = last_ts.max(ts);
                }
                counts[k] += 1;
                got += 1;
            }
        }
        if !took_all && checked.elapsed() > Duration::from_millis(500) {
            took_all = consumed(&http).await >= n as f64;
            checked = Instant::now();
        }
        if took_all {
            if got > 0 {
                quiet_since = None;
            } else if quiet_since.get_or_insert_with(Instant::now).elapsed()
                > Duration::from_secs(2)
            {
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("gale-aggregate exited with {status}; see bench-aggregate.log");
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "not done after 15 minutes ({} ten-minute aggregates)",
            counts[0]
        );
    }
    let cpu = cpu_seconds(pid) - cpu0;
    eprintln!(
        "aggregates: {} 10m, {} 1h, {} 1d; {} late, {} dead-lettered",
        counts[0], counts[1], counts[2], counts[3], counts[4]
    );
    if counts[3] + counts[4] > 0 {
        eprintln!("warning: late or dead-lettered readings in an in-order stream");
    }
    let secs = ((last_ts - start_ms).max(1)) as f64 / 1000.0;
    let agg = Measured {
        rec_per_s: n as f64 / secs,
        cpu_us_per_rec: cpu * 1e6 / n as f64,
    };
    // SIGTERM: it commits and leaves the group, so the restore below
    // starts at once.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();

    // Partitions are restored when their first record arrives: the next
    // round's first 300 readings bring all three back.
    preload_values(
        &stack,
        &input,
        CHECKED_READING,
        &checked_readings(n..n + 300, assets, t0),
    )
    .await?;
    eprintln!("restoring the state of {assets} assets");
    let (restore_s, keys) =
        measure_restore("gale-aggregate", env, "bench-aggregate-restore.log").await?;

    println!(
        "passthrough rec_per_s={:.0} cpu_us_per_rec={:.1}",
        base.rec_per_s, base.cpu_us_per_rec
    );
    println!("aggregate-restore state_restore_s={restore_s:.2} state_keys={keys:.0}");
    println!(
        "aggregate rec_per_s={:.0} cpu_us_per_rec={:.1} passthrough_rec_per_s={:.0} ratio={:.2}",
        agg.rec_per_s,
        agg.cpu_us_per_rec,
        base.rec_per_s,
        agg.rec_per_s / base.rec_per_s
    );
    Ok(())
}
