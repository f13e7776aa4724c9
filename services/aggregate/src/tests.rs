//! The processor driven the way the runtime drives it: records in order,
//! the watermark at the largest event time, timers fired after each record.

use gale_model::{
    ActiveFault, AssetAggregate, AssetKind, CheckedReading, EnrichedReading, QualityTier,
    ScoredReading, Severity,
};
use gale_runtime::pipeline::{Emit, Processor, RecordMeta};
use gale_runtime::state::Slot;

use crate::acc::Rules;
use crate::gaps::GapPolicy;
use crate::processor::{AggregateProcessor, AssetWindows, Output, Settings, LATE, LATE_FOR};
use crate::window::Grain;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
/// 2026-03-29T00:00:00Z: the night Europe/Berlin springs forward.
const T0: i64 = 1_774_742_400_000;

fn settings() -> Settings {
    Settings {
        grains: Grain::ALL.to_vec(),
        grace_ms: MIN,
        allowed_lateness_ms: HOUR,
        default_zone: chrono_tz::Tz::UTC,
        rules: Rules {
            exclude_from: Severity::Warning,
            stopping: Severity::Critical,
        },
        gaps: GapPolicy::default(),
        silence_ms: 30 * MIN,
    }
}

fn turbine(t: i64, power: f64, wind: f64) -> CheckedReading {
    let mut r = ScoredReading::new(format!("T1@{t}"), "T1", AssetKind::Turbine, t);
    r.site_id = Some("S1".into());
    r.interval_ms = Some(10 * MIN);
    r.power_kw = Some(power);
    r.wind_speed_ms = Some(wind);
    r.quality_score = 100;
    let mut e = EnrichedReading::bare(r);
    e.rated_power_kw = Some(2000.0);
    e.cut_in_wind_speed_ms = Some(3.0);
    e.cut_out_wind_speed_ms = Some(25.0);
    e.expected_power_kw = Some(power + 100.0);
    CheckedReading {
        enriched: e,
        faults: Vec::new(),
        fault_deduction: 0,
    }
}

/// Runs records through the processor as the runtime would.
struct Harness {
    p: AggregateProcessor,
    state: Option<AssetWindows>,
    watermark: Option<i64>,
    last_fired: Option<i64>,
    out: Vec<Emit<Output>>,
}

impl Harness {
    fn new(s: Settings) -> Self {
        Harness {
            p: AggregateProcessor::new(s),
            state: None,
            watermark: None,
            last_fired: None,
            out: Vec::new(),
        }
    }

    async fn feed(&mut self, r: &CheckedReading) {
        let meta = RecordMeta {
            topic: "gale.checked",
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            attempt: 1,
            watermark: self.watermark,
            traceparent: None,
        };
        let mut slot = Slot::new(self.state.take());
        let out = self.p.process(r, &meta, &mut slot).await.unwrap();
        self.out.extend(out);
        self.state = slot.into_inner();
        let t = r.enriched.reading.event_time;
        self.watermark = Some(self.watermark.map_or(t, |w| w.max(t)));
        self.fire().await;
    }

    async fn advance_to(&mut self, w: i64) {
        self.watermark = Some(w);
        self.fire().await;
    }

    async fn fire(&mut self) {
        let w = self.watermark.unwrap();
        loop {
            let Some(due) = self.state.as_ref().and_then(|s| self.p.timer(s)) else {
                return;
            };
            if due > w || self.last_fired.is_some_and(|l| due <= l) {
                return;
            }
            self.last_fired = Some(due);
            let mut slot = Slot::new(self.state.take());
            let out = self.p.on_timer("T1", &mut slot, w).await;
            self.out.extend(out);
            self.state = slot.into_inner();
        }
    }

    fn aggs(&self, grain: &str) -> Vec<AssetAggregate> {
        self.out
            .iter()
            .filter_map(|e| match &e.value {
                Output::Aggregate(a) if a.grain == grain => Some((**a).clone()),
                _ => None,
            })
            .collect()
    }

    fn late(&self) -> Vec<CheckedReading> {
        self.out
            .iter()
            .filter(|e| e.output == LATE)
            .filter_map(|e| match &e.value {
                Output::Late(r) => Some((**r).clone()),
                _ => None,
            })
            .collect()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test]
async fn a_window_is_emitted_once_when_the_watermark_passes_its_end_plus_grace() {
    let mut h = Harness::new(settings());
    for i in 0..6 {
        h.feed(&turbine(T0 + i * 10 * MIN, 1000.0 + i as f64, 8.0))
            .await;
    }
    // 00:50 seen: the 00:40 window closes at 00:51 + nothing yet.
    assert_eq!(h.aggs("10m").len(), 4);
    h.feed(&turbine(T0 + 60 * MIN, 500.0, 8.0)).await;
    assert_eq!(h.aggs("10m").len(), 5, "00:50-01:00 closes at 01:01");
    assert_eq!(h.aggs("1h").len(), 0, "00:00-01:00 closes at 01:01");
    h.feed(&turbine(T0 + 70 * MIN, 500.0, 8.0)).await;
    let tens = h.aggs("10m");
    assert_eq!(tens.len(), 6);
    assert!(tens.iter().all(|a| a.revision == 0 && a.readings_used == 1));
    assert_eq!(tens[0].window_start, T0);
    assert_eq!(tens[0].window_end, T0 + 10 * MIN);
    let hour = &h.aggs("1h")[0];
    assert_eq!(hour.readings, 6);
    assert_eq!(hour.readings_expected, Some(6));
    assert_eq!(hour.coverage, Some(1.0));
    assert_eq!(hour.power_kw_count, 6);
    assert!(close(hour.power_kw_mean.unwrap(), 1002.5));
    assert_eq!(hour.power_kw_min, Some(1000.0));
    assert_eq!(hour.power_kw_max, Some(1005.0));
    // Σ p × 1/6 h.
    assert!(close(hour.energy_kwh.unwrap(), 6015.0 / 6.0));
    assert!(close(hour.expected_energy_kwh.unwrap(), 6615.0 / 6.0));
    assert!(close(hour.performance_ratio.unwrap(), 6015.0 / 6615.0));
    assert!(close(hour.capacity_factor.unwrap(), 6015.0 / 6.0 / 2000.0));
    assert_eq!(hour.availability, Some(1.0));
    assert_eq!(hour.event_id, format!("T1:1h:{T0}:0"));
    assert_eq!(hour.aggregate_id, format!("T1:1h:{T0}"));
}

#[tokio::test]
async fn a_late_reading_revises_the_window_and_a_too_late_one_goes_to_the_late_topic() {
    let mut h = Harness::new(settings());
    h.feed(&turbine(T0, 1000.0, 8.0)).await;
    h.feed(&turbine(T0 + 20 * MIN, 1000.0, 8.0)).await;
    h.feed(&turbine(T0 + 75 * MIN, 1000.0, 8.0)).await;
    let first = h.aggs("1h");
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].revision, first[0].readings), (0, 2));
    // 00:10 arrives late but within the allowed lateness: revision 1.
    h.feed(&turbine(T0 + 10 * MIN, 1000.0, 8.0)).await;
    let hours = h.aggs("1h");
    assert_eq!(hours.len(), 2);
    assert_eq!(
        (hours[1].revision, hours[1].readings, hours[1].readings_late),
        (1, 3, 1)
    );
    assert_eq!(hours[1].event_id, format!("T1:1h:{T0}:1"));
    // Its 10-minute window had no reading: it is emitted at once, as late.
    let ten = h.aggs("10m");
    let ten = ten
        .iter()
        .find(|a| a.window_start == T0 + 10 * MIN)
        .unwrap();
    assert_eq!((ten.revision, ten.readings_late), (0, 1));
    assert!(h.late().is_empty());
    // Past 02:01 the hour is forgotten: a reading for it is too late for every grain
    // except the day, and says so.
    h.feed(&turbine(T0 + 130 * MIN, 1000.0, 8.0)).await;
    h.feed(&turbine(T0 + 30 * MIN, 1000.0, 8.0)).await;
    let late = h.late();
    let last = late.last().unwrap();
    assert_eq!(last.enriched.reading.event_time, T0 + 30 * MIN);
    assert_eq!(last.enriched.reading.attributes[LATE_FOR], "10m,1h");
    let first_hour = h
        .aggs("1h")
        .into_iter()
        .filter(|a| a.window_start == T0)
        .count();
    assert_eq!(first_hour, 2, "no revision for a forgotten hour");
}

#[tokio::test]
async fn duplicates_count_once_and_are_reported() {
    let mut h = Harness::new(settings());
    h.feed(&turbine(T0, 1000.0, 8.0)).await;
    h.feed(&turbine(T0, 1000.0, 8.0)).await;
    h.feed(&turbine(T0 + 10 * MIN, 1000.0, 8.0)).await;
    // The partition's time alone does not close an asset's backfilled windows.
    h.advance_to(T0 + 25 * HOUR).await;
    assert!(h.aggs("1d").is_empty());
    h.feed(&turbine(T0 + 25 * HOUR, 1000.0, 8.0)).await;
    let day = &h.aggs("1d")[0];
    assert_eq!((day.readings, day.readings_duplicate), (2, 1));
    assert_eq!(h.aggs("10m")[0].readings, 1);
}

#[tokio::test]
async fn faults_exclude_readings_quarantine_never_counts_and_availability_follows_iec() {
    let mut h = Harness::new(settings());
    let mut warn = turbine(T0, 1500.0, 9.0);
    warn.faults.push(ActiveFault {
        fault_id: "f".into(),
        code: "GEARBOX_OVERHEAT".into(),
        severity: "WARNING".into(),
    });
    let mut crit = turbine(T0 + 10 * MIN, 0.0, 9.0);
    crit.faults.push(ActiveFault {
        fault_id: "g".into(),
        code: "TOWER_LEAN".into(),
        severity: "CRITICAL".into(),
    });
    let mut info = turbine(T0 + 20 * MIN, 100.0, 9.0);
    info.faults.push(ActiveFault {
        fault_id: "h".into(),
        code: "LOW_POWER_OUTPUT".into(),
        severity: "INFO".into(),
    });
    let mut q = turbine(T0 + 30 * MIN, 1500.0, 9.0);
    q.enriched.reading.quality_tier = QualityTier::Quarantine;
    let calm = turbine(T0 + 40 * MIN, 0.0, 2.0); // below cut-in: standby
    let stopped = turbine(T0 + 50 * MIN, 0.0, 9.0); // wind in range, nothing: unavailable
    for r in [warn, crit, info, q, calm, stopped] {
        h.feed(&r).await;
    }
    h.feed(&turbine(T0 + 2 * HOUR, 0.0, 2.0)).await;
    let a = &h.aggs("1h")[0];
    assert_eq!(a.readings, 6);
    assert_eq!(a.readings_used, 3);
    assert_eq!(a.readings_fault_excluded, 2);
    assert_eq!(a.readings_quarantined, 1);
    assert!(close(a.power_kw_mean.unwrap(), 100.0 / 3.0));
    // Available: warn (producing), info (producing), calm; unavailable: crit, stopped.
    assert!(close(a.available_hours.unwrap(), 0.5));
    assert!(close(a.unavailable_hours.unwrap(), 2.0 / 6.0));
    assert!(close(a.availability.unwrap(), 0.6));
}

#[tokio::test]
async fn daily_windows_follow_the_site_zone_across_daylight_saving() {
    let mut h = Harness::new(settings());
    let mut t = T0 - HOUR; // 2026-03-29 00:00 Berlin (CET, +1)
    while t < T0 + 23 * HOUR {
        let mut r = turbine(t, 100.0, 8.0);
        r.enriched.site_time_zone = Some("Europe/Berlin".into());
        h.feed(&r).await;
        t += 10 * MIN;
    }
    let mut r = turbine(T0 + 30 * HOUR, 100.0, 8.0);
    r.enriched.site_time_zone = Some("Europe/Berlin".into());
    h.feed(&r).await;
    let days = h.aggs("1d");
    let day = days.iter().find(|d| d.local_date == "2026-03-29").unwrap();
    assert_eq!(day.time_zone, "Europe/Berlin");
    assert_eq!(day.window_end - day.window_start, 23 * HOUR);
    assert_eq!(day.readings, 138);
    assert_eq!(day.readings_expected, Some(138));
    assert_eq!(day.coverage, Some(1.0));
    assert!(close(day.capacity_factor.unwrap(), 100.0 / 2000.0));
}

#[tokio::test]
async fn a_short_gap_in_the_hourly_series_is_interpolated_and_a_longer_one_marked() {
    let mut h = Harness::new(Settings {
        allowed_lateness_ms: 6 * HOUR,
        ..settings()
    });
    h.feed(&turbine(T0, 600.0, 8.0)).await; // hour 0: 100 kWh
    h.feed(&turbine(T0 + 3 * HOUR, 1200.0, 8.0)).await; // hour 3: 200 kWh
    h.feed(&turbine(T0 + 9 * HOUR, 600.0, 8.0)).await; // 5 hours missing
    h.feed(&turbine(T0 + 10 * HOUR + 2 * MIN, 600.0, 8.0)).await; // closes hour 9
    let hours = h.aggs("1h");
    let filled: Vec<_> = hours.iter().filter(|a| a.gap.is_some()).collect();
    let interpolated: Vec<_> = filled
        .iter()
        .filter(|a| a.gap.as_deref() == Some("interpolated"))
        .collect();
    assert_eq!(interpolated.len(), 2);
    assert_eq!(interpolated[0].window_start, T0 + HOUR);
    assert!(close(
        interpolated[0].energy_kwh.unwrap(),
        100.0 + 100.0 / 3.0
    ));
    assert!(close(interpolated[1].power_kw_mean.unwrap(), 600.0 + 400.0));
    assert_eq!(interpolated[0].quality_score, Some(90.0));
    let short: Vec<_> = filled
        .iter()
        .filter(|a| a.gap.as_deref() == Some("missing_short"))
        .collect();
    assert_eq!(short.len(), 5);
    assert!(short
        .iter()
        .all(|a| a.energy_kwh.is_none() && a.readings == 0));
    // A real reading in a filled hour replaces the fill with revision 1.
    h.feed(&turbine(T0 + 8 * HOUR + 5 * MIN, 300.0, 8.0)).await;
    let revised: Vec<_> = h
        .aggs("1h")
        .into_iter()
        .filter(|a| a.window_start == T0 + 8 * HOUR)
        .collect();
    assert_eq!(revised.len(), 2);
    assert_eq!(
        (
            revised[1].revision,
            revised[1].gap.as_deref(),
            revised[1].readings
        ),
        (1, None, 1)
    );
}

#[tokio::test]
async fn a_live_asset_gone_silent_has_its_windows_closed_by_the_partition() {
    let now = chrono::Utc::now().timestamp_millis();
    let t = now - now.rem_euclid(HOUR) - HOUR; // the start of the last full hour
    let mut h = Harness::new(settings());
    h.feed(&turbine(t, 1000.0, 8.0)).await;
    h.feed(&turbine(t + 10 * MIN, 1000.0, 8.0)).await;
    assert!(
        h.aggs("10m").is_empty(),
        "with a minute's grace nothing closes yet"
    );
    // Other assets move the partition 30 minutes past T1's last reading.
    h.advance_to(t + 40 * MIN).await;
    assert_eq!(h.aggs("10m").len(), 2, "T1's open ten minutes close");
    assert!(h.aggs("1h").is_empty());
    h.advance_to(t + HOUR + MIN).await;
    assert_eq!(h.aggs("1h").len(), 1);
    // T1 speaks again: its closed hour is revised, not lost.
    h.feed(&turbine(t + 20 * MIN, 500.0, 8.0)).await;
    let hours = h.aggs("1h");
    assert_eq!(
        (hours.len(), hours[1].revision, hours[1].readings),
        (2, 1, 3)
    );
}

#[tokio::test]
async fn the_same_records_give_the_same_outputs_whatever_the_state_round_trips() {
    // State serialised and read back between every record (a restart each
    // time) changes nothing.
    let readings: Vec<_> = (0..200)
        .map(|i| {
            turbine(
                T0 + i * 10 * MIN + (i % 3) * MIN,
                (i * 37 % 2000) as f64,
                (i % 20) as f64,
            )
        })
        .collect();
    let mut a = Harness::new(settings());
    let mut b = Harness::new(settings());
    for r in &readings {
        a.feed(r).await;
        b.feed(r).await;
        b.state = b
            .state
            .as_ref()
            .map(|s| serde_json::from_slice(&serde_json::to_vec(s).unwrap()).unwrap());
    }
    let ids = |h: &Harness| {
        h.out
            .iter()
            .map(|e| match &e.value {
                Output::Aggregate(x) => format!("{x:?}"),
                Output::Late(r) => format!("{r:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    assert!(!a.aggs("1d").is_empty());
}

#[tokio::test]
async fn a_window_aggregate_links_to_the_readings_kept_in_its_state_not_to_the_closing_one() {
    let mut h = Harness::new(settings());
    h.feed(&turbine(T0, 900.0, 9.0)).await;
    // What the stage keeps while spans are exported: the first readings'
    // trace contexts, per window.
    let contributor = gale_runtime::telemetry::TraceParent {
        trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
        span_id: 0x00f0_67aa_0ba9_02b7,
        flags: 1,
    };
    for w in &mut h.state.as_mut().unwrap().windows {
        w.links = vec![contributor];
    }
    let kept = serde_json::to_string(h.state.as_ref().unwrap()).unwrap();
    assert!(kept.contains("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    let restored: AssetWindows = serde_json::from_str(&kept).unwrap();
    assert_eq!(
        &restored,
        h.state.as_ref().unwrap(),
        "links survive a restore"
    );

    // The next window's reading closes the first ten minutes.
    h.feed(&turbine(T0 + 11 * MIN, 950.0, 9.5)).await;
    let closed: Vec<&Emit<Output>> = h
        .out
        .iter()
        .filter(|e| e.output == crate::processor::AGG_10M)
        .collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].links, vec![contributor]);
    // Without links in state (spans not exported) the state is as before.
    let mut plain = Harness::new(settings());
    plain.feed(&turbine(T0, 900.0, 9.0)).await;
    let json = serde_json::to_string(plain.state.as_ref().unwrap()).unwrap();
    assert!(!json.contains("links"), "{json}");
}
