//! The roll-up driven as the runtime drives it.

use gale_aggregate::peaks::PeakPolicy;
use gale_model::{AssetAggregate, AssetKind, SiteAggregate, ASSET_AGGREGATE};
use gale_runtime::pipeline::{Emit, ProcessError, Processor, RecordMeta};
use gale_runtime::state::Slot;

use crate::processor::{Member, Output, Rolling, RollupProcessor, Settings, DAILY, HOURLY, PEAKS};

const HOUR: i64 = 3_600_000;
/// 2026-03-28T23:00:00Z: midnight of Berlin's 23-hour 29 March.
const DAY: i64 = 1_774_738_800_000;

/// An asset's hourly aggregate, every field of its type filled.
fn asset(id: &str, kind: AssetKind, start: i64, energy: f64, revision: i32) -> AssetAggregate {
    let mut v = serde_json::json!({});
    for f in serde_json::from_str::<serde_json::Value>(ASSET_AGGREGATE.text).unwrap()["fields"]
        .as_array()
        .unwrap()
    {
        v[f["name"].as_str().unwrap()] = match &f["type"] {
            serde_json::Value::String(s) if s == "string" => serde_json::json!(""),
            serde_json::Value::String(s) if s == "long" || s == "int" => serde_json::json!(0),
            serde_json::Value::Object(o) if o["type"] == "enum" => serde_json::json!("TURBINE"),
            serde_json::Value::Object(_) => serde_json::json!(0),
            _ => serde_json::Value::Null,
        };
    }
    let mut a: AssetAggregate = serde_json::from_value(v).unwrap();
    a.asset_id = id.into();
    a.asset_kind = kind;
    a.site_id = Some("S1".into());
    a.site_time_zone = Some("Europe/Berlin".into());
    a.grain = "1h".into();
    a.window_start = start;
    a.window_end = start + HOUR;
    a.revision = revision;
    a.readings = 6;
    a.readings_used = 6;
    a.readings_expected = Some(6);
    a.coverage = Some(1.0);
    a.quality_score = Some(if kind == AssetKind::Turbine {
        100.0
    } else {
        90.0
    });
    a.energy_kwh = Some(energy);
    a.ambient_temperature_c_count = 6;
    a.ambient_temperature_c_mean = Some(10.0);
    if kind == AssetKind::Turbine {
        a.expected_energy_kwh = Some(energy * 2.0);
        a.performance_ratio = Some(0.5);
        a.rated_power_kw = Some(2000.0);
        a.available_hours = Some(0.5);
        a.unavailable_hours = Some(0.5);
    }
    a
}

struct Harness<M: Member + 'static> {
    p: RollupProcessor<M>,
    state: Option<Rolling>,
    watermark: Option<i64>,
    out: Vec<Emit<Output>>,
}

impl<M: Member + 'static> Harness<M> {
    fn new(fleet: bool) -> Self {
        Harness {
            p: RollupProcessor::new(Settings {
                fleet,
                grace_ms: 0,
                allowed_lateness_ms: 6 * HOUR,
                zone: chrono_tz::Tz::UTC,
                peaks: PeakPolicy::default(),
                member_idle: std::time::Duration::from_secs(3600),
                peak_min_coverage: 0.9,
                early_updates: false,
            }),
            state: None,
            watermark: None,
            out: Vec::new(),
        }
    }

    async fn feed(&mut self, m: &M) -> Result<(), ProcessError> {
        let meta = RecordMeta {
            topic: "in",
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            attempt: 1,
            watermark: self.watermark,
            traceparent: None,
        };
        let mut slot = Slot::new(self.state.take());
        let r = self.p.process(m, &meta, &mut slot).await;
        self.state = slot.into_inner();
        self.out.extend(r?);
        let t = m.start();
        self.watermark = Some(self.watermark.map_or(t, |w| w.max(t)));
        let w = self.watermark.unwrap();
        while let Some(due) = self.state.as_ref().and_then(|s| self.p.timer(s)) {
            if due > w {
                break;
            }
            let mut slot = Slot::new(self.state.take());
            self.out.extend(self.p.on_timer("S1", &mut slot, w).await);
            self.state = slot.into_inner();
        }
        Ok(())
    }

    fn records(&self, output: &str) -> Vec<SiteAggregate> {
        self.out
            .iter()
            .filter(|e| e.output == output)
            .filter_map(|e| match &e.value {
                Output::Aggregate(a) => Some((**a).clone()),
                Output::Peak(_) => None,
            })
            .collect()
    }
}

#[tokio::test]
async fn site_hours_and_days_sum_their_assets_and_peaks_pick_the_top_hours() {
    let mut h = Harness::<AssetAggregate>::new(false);
    for k in 0..24 {
        let t = DAY + k * HOUR;
        h.feed(&asset("T1", AssetKind::Turbine, t, 1000.0, 0))
            .await
            .unwrap();
        // Consumption peaks at hours 18, 19, 7 (local 20:00, 21:00, 09:00).
        let c = match k {
            18 => 9.0,
            19 => 8.0,
            7 => 7.0,
            _ => 1.0 + k as f64 * 0.1,
        };
        h.feed(&asset("M1", AssetKind::Meter, t, c, 0))
            .await
            .unwrap();
    }
    let hours = h.records(HOURLY);
    assert_eq!(hours.len(), 23, "hour 23 is still open");
    let first = &hours[0];
    assert_eq!((first.assets, first.turbines, first.meters), (2, 1, 1));
    assert_eq!(first.production_kwh, Some(1000.0));
    assert_eq!(first.consumption_kwh, Some(1.0));
    assert_eq!(first.performance_ratio, Some(0.5));
    assert_eq!(first.capacity_factor, Some(0.5));
    assert_eq!(first.availability, Some(0.5));
    assert_eq!(first.quality_score, Some(95.0));
    assert_eq!(first.aggregate_id, format!("site:S1:1h:{DAY}"));
    let days = h.records(DAILY);
    assert_eq!(days.len(), 1);
    let d = &days[0];
    assert_eq!(
        (d.local_date.as_str(), d.hours, d.time_zone.as_str()),
        ("2026-03-29", 23, "Europe/Berlin")
    );
    assert_eq!(d.production_kwh, Some(23_000.0));
    assert_eq!(d.capacity_factor, Some(0.5));
    let peaks: Vec<_> = h
        .out
        .iter()
        .filter(|e| e.output == PEAKS)
        .filter_map(|e| match &e.value {
            Output::Peak(p) => Some((p.rank, p.hour_start, p.consumption_kwh)),
            Output::Aggregate(_) => None,
        })
        .collect();
    assert_eq!(
        peaks,
        vec![
            (1, Some(DAY + 18 * HOUR), Some(9.0)),
            (2, Some(DAY + 19 * HOUR), Some(8.0)),
            (3, Some(DAY + 7 * HOUR), Some(7.0)),
        ]
    );
}

#[tokio::test]
async fn a_revised_asset_hour_replaces_its_earlier_revision_in_the_hour_and_the_day() {
    let mut h = Harness::<AssetAggregate>::new(false);
    for k in 0..25 {
        h.feed(&asset("T1", AssetKind::Turbine, DAY + k * HOUR, 100.0, 0))
            .await
            .unwrap();
    }
    assert_eq!(h.records(DAILY).len(), 1);
    h.feed(&asset("T1", AssetKind::Turbine, DAY + 22 * HOUR, 300.0, 1))
        .await
        .unwrap();
    let hours: Vec<_> = h
        .records(HOURLY)
        .into_iter()
        .filter(|a| a.window_start == DAY + 22 * HOUR)
        .collect();
    assert_eq!(hours.len(), 2);
    assert_eq!(
        (hours[1].revision, hours[1].production_kwh),
        (1, Some(300.0))
    );
    let days = h.records(DAILY);
    assert_eq!(days.len(), 2);
    assert_eq!(
        (days[1].revision, days[1].production_kwh),
        (1, Some(2500.0))
    );
    // A redelivered older revision changes nothing.
    let before = h.out.len();
    h.feed(&asset("T1", AssetKind::Turbine, DAY + 22 * HOUR, 100.0, 0))
        .await
        .unwrap();
    assert_eq!(h.out.len(), before);
    // Past the allowed lateness an hour is refused as late (dead-lettered).
    h.feed(&asset("T1", AssetKind::Turbine, DAY + 40 * HOUR, 100.0, 0))
        .await
        .unwrap();
    let e = h
        .feed(&asset("T1", AssetKind::Turbine, DAY + 2 * HOUR, 1.0, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProcessError::Reject { class: "late", .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_fleet_sums_its_sites() {
    let mut site = Harness::<AssetAggregate>::new(false);
    for k in 0..3 {
        site.feed(&asset("T1", AssetKind::Turbine, DAY + k * HOUR, 100.0, 0))
            .await
            .unwrap();
    }
    let mut s2 = Harness::<AssetAggregate>::new(false);
    for k in 0..3 {
        let mut a = asset("T9", AssetKind::Turbine, DAY + k * HOUR, 50.0, 0);
        a.site_id = Some("S2".into());
        s2.feed(&a).await.unwrap();
    }
    let mut fleet = Harness::<SiteAggregate>::new(true);
    for (a, b) in site.records(HOURLY).iter().zip(s2.records(HOURLY)) {
        fleet.feed(a).await.unwrap();
        fleet.feed(&b).await.unwrap();
    }
    let f = fleet.records(HOURLY);
    assert_eq!(f.len(), 1, "the second hour closes when the third arrives");
    assert_eq!((f[0].assets, f[0].production_kwh), (2, Some(150.0)));
    assert_eq!(f[0].aggregate_id, format!("fleet:1h:{DAY}"));
    assert_eq!(f[0].scope, "fleet");
    assert_eq!(f[0].site_id, None);
}

#[tokio::test]
async fn a_member_far_behind_is_waited_for_so_a_backfill_adds_up() {
    // One asset's aggregates arrive ten hours ahead of the other's, as
    // when the aggregate stage's partitions drift apart in a backfill.
    let mut h = Harness::<AssetAggregate>::new(false);
    h.feed(&asset("M1", AssetKind::Meter, DAY, 1.0, 0))
        .await
        .unwrap();
    h.feed(&asset("T1", AssetKind::Turbine, DAY, 10.0, 0))
        .await
        .unwrap();
    for k in 1..12 {
        h.feed(&asset("T1", AssetKind::Turbine, DAY + k * HOUR, 10.0, 0))
            .await
            .unwrap();
    }
    assert!(h.records(HOURLY).is_empty(), "M1 is behind: nothing closes");
    for k in 1..12 {
        h.feed(&asset("M1", AssetKind::Meter, DAY + k * HOUR, 1.0, 0))
            .await
            .unwrap();
    }
    let hours = h.records(HOURLY);
    assert_eq!(hours.len(), 11);
    assert!(hours
        .iter()
        .all(|a| a.revision == 0 && a.assets == 2 && a.consumption_kwh == Some(1.0)));
}

#[tokio::test]
async fn a_silent_member_is_not_waited_for() {
    let mut h = Harness::<AssetAggregate>::new(false);
    h.p = RollupProcessor::new(Settings {
        fleet: false,
        grace_ms: 0,
        allowed_lateness_ms: 6 * HOUR,
        zone: chrono_tz::Tz::UTC,
        peaks: PeakPolicy::default(),
        member_idle: std::time::Duration::ZERO,
        peak_min_coverage: 0.9,
        early_updates: false,
    });
    h.feed(&asset("M1", AssetKind::Meter, DAY, 1.0, 0))
        .await
        .unwrap();
    for k in 0..3 {
        h.feed(&asset("T1", AssetKind::Turbine, DAY + k * HOUR, 10.0, 0))
            .await
            .unwrap();
    }
    let hours = h.records(HOURLY);
    assert_eq!(hours.len(), 2, "the partition's time closes hours 0 and 1");
    assert_eq!(hours[0].assets, 2);
    assert_eq!(hours[1].assets, 1);
}

#[tokio::test]
async fn early_updates_show_the_day_so_far_and_the_final_record_follows() {
    let mut h = Harness::<AssetAggregate>::new(false);
    h.p = RollupProcessor::new(Settings {
        fleet: false,
        grace_ms: 0,
        allowed_lateness_ms: 6 * HOUR,
        zone: chrono_tz::Tz::UTC,
        peaks: PeakPolicy::default(),
        member_idle: std::time::Duration::from_secs(3600),
        peak_min_coverage: 0.9,
        early_updates: true,
    });
    // Berlin's 23-hour 29 March.
    for k in 0..23 {
        h.feed(&asset(
            "M1",
            AssetKind::Meter,
            DAY + k * HOUR,
            1.0 + k as f64,
            0,
        ))
        .await
        .unwrap();
    }
    let days = h.records(DAILY);
    assert_eq!(
        days.len(),
        22,
        "one provisional record per closed hour, day still open"
    );
    assert!(days.iter().all(|d| d.provisional));
    assert_eq!((days[21].hours, days[21].revision), (22, 21));
    let peaks_so_far = h.out.iter().filter(|e| e.output == PEAKS).count();
    assert_eq!(peaks_so_far, 22 * 3);
    h.feed(&asset("M1", AssetKind::Meter, DAY + 23 * HOUR, 1.0, 0))
        .await
        .unwrap();
    let days = h.records(DAILY);
    let last = days.last().unwrap();
    assert_eq!(
        (last.provisional, last.revision, last.hours),
        (false, 23, 23)
    );
    assert!(days[22].provisional);
}
