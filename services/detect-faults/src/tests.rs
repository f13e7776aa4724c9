//! The rules at their boundaries, the gap timers, and the properties the
//! runtime relies on: replays give the same events, state survives a
//! round trip through JSON and stays small.

use std::collections::BTreeMap;

use crate::*;

const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;
const DAY: i64 = 24 * H;
/// 2024-03-15T00:00:00Z, a UTC midnight.
const T0: i64 = 1_710_460_800_000;

fn detector() -> Detector {
    Detector::new(Rules::preset())
}

fn with_rules(edit: impl Fn(&mut Rules)) -> Detector {
    let mut rules = Rules::preset();
    edit(&mut rules);
    Detector::new(rules)
}

/// A healthy turbine in a fresh breeze.
fn turbine(t: i64) -> Sample {
    let mut s = Sample::new("TURBINE_00001", AssetKind::Turbine, t);
    s.power_kw = Some(1500.0);
    s.expected_power_kw = Some(1600.0);
    s.wind_speed_ms = Some(10.0);
    s.rotor_speed_rpm = Some(12.0);
    s.gearbox_temperature_c = Some(60.0);
    s.generator_temperature_c = Some(55.0);
    s.vibration_ms2 = Some(1.0);
    s.oil_pressure_bar = Some(50.0);
    s.tower_lean_deg = Some(0.5);
    s.rated_power_kw = Some(2000.0);
    s
}

fn gearbox(t: i64, c: f64) -> Sample {
    let mut s = turbine(t);
    s.gearbox_temperature_c = Some(c);
    s
}

fn meter(t: i64, kw: f64) -> Sample {
    let mut s = Sample::new("MTR-00001", AssetKind::Meter, t);
    s.power_kw = Some(kw);
    s
}

/// A meter with a daily profile, never stuck or flat.
fn lively(t: i64) -> Sample {
    let hour = (t / H) % 24;
    meter(
        t,
        1.0 + hour as f64 * 0.25 + ((t / (10 * MIN)) % 3) as f64 * 0.1,
    )
}

/// Feeds `samples` in order, returning every event.
fn feed(
    d: &Detector,
    state: &mut AssetState,
    samples: impl IntoIterator<Item = Sample>,
) -> Vec<FaultChange> {
    samples
        .into_iter()
        .flat_map(|s| d.observe(state, &s).changes)
        .collect()
}

/// Every ten minutes from `from` (inclusive) to `to` (exclusive).
fn every_10m(from: i64, to: i64) -> impl Iterator<Item = i64> {
    (from..to).step_by(10 * MIN as usize)
}

fn of(events: &[FaultChange], code: FaultCode) -> Vec<&FaultChange> {
    events.iter().filter(|e| e.code == code).collect()
}

fn statuses(events: &[FaultChange], code: FaultCode) -> Vec<(FaultStatus, i64)> {
    of(events, code)
        .iter()
        .map(|e| (e.status, e.updated_time))
        .collect()
}

// ---------------------------------------------------------------- meters

#[test]
fn zero_value_needs_48_hours() {
    let d = detector();
    let mut state = AssetState::default();
    let mut samples: Vec<Sample> = every_10m(T0, T0 + 48 * H).map(|t| meter(t, 0.0)).collect();
    samples.push(meter(T0 + 47 * H + 59 * MIN, 0.0));
    let events = feed(&d, &mut state, samples);
    assert!(events.is_empty(), "{events:#?}");
    let obs = d.observe(&mut state, &meter(T0 + 48 * H, 0.0));
    assert_eq!(obs.changes.len(), 1, "{:#?}", obs.changes);
    let e = &obs.changes[0];
    assert_eq!(
        (e.code, e.status),
        (FaultCode::ZeroValue, FaultStatus::Opened)
    );
    assert_eq!((e.opened_time, e.updated_time), (T0 + 48 * H, T0 + 48 * H));
    assert_eq!(e.fault_id, format!("MTR-00001:ZERO_VALUE:{}", T0 + 48 * H));
    assert_eq!(
        (e.severity, e.maintenance_required),
        (Severity::Warning, true)
    );
    assert_eq!((e.trigger_value, e.threshold), (Some(0.0), Some(0.0)));
    assert_eq!(e.metric.as_deref(), Some("power"));
    assert!(e.detail.contains("2days"), "{}", e.detail);
    assert_eq!(obs.active.len(), 1);
    assert_eq!(obs.deduction, 30);
    // A zero run is not a stuck value.
    assert!(!state.is_open(FaultCode::StuckValue));
    // Non-zero for close_after (1h) closes it.
    let events = feed(
        &d,
        &mut state,
        every_10m(T0 + 48 * H + 10 * MIN, T0 + 49 * H + 20 * MIN).map(|t| meter(t, 1.5)),
    );
    assert_eq!(
        statuses(&events, FaultCode::ZeroValue),
        vec![(FaultStatus::Closed, T0 + 49 * H + 10 * MIN)]
    );
}

#[test]
fn zero_value_spares_vacant_properties() {
    let d = detector();
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        every_10m(T0, T0 + 72 * H).map(|t| {
            let mut s = meter(t, 0.0);
            s.vacant = true;
            s
        }),
    );
    assert!(of(&events, FaultCode::ZeroValue).is_empty(), "{events:#?}");
    // Without the exclusion the same readings are a fault.
    let d = with_rules(|r| r.meter.zero_value.as_mut().unwrap().exclude_vacant = false);
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        every_10m(T0, T0 + 72 * H).map(|t| {
            let mut s = meter(t, 0.0);
            s.vacant = true;
            s
        }),
    );
    assert_eq!(
        of(&events, FaultCode::ZeroValue)[0].opened_time,
        T0 + 48 * H
    );
}

#[test]
fn a_silence_breaks_a_run() {
    let d = detector();
    let mut state = AssetState::default();
    // 40 h of zeros, 5 h without readings (a MISSING_SHORT gap), 20 h of zeros.
    let mut samples: Vec<Sample> = every_10m(T0, T0 + 40 * H).map(|t| meter(t, 0.0)).collect();
    samples.extend(every_10m(T0 + 45 * H, T0 + 65 * H).map(|t| meter(t, 0.0)));
    let events = feed(&d, &mut state, samples);
    assert!(of(&events, FaultCode::ZeroValue).is_empty(), "{events:#?}");
    assert_eq!(of(&events, FaultCode::MissingShort).len(), 2);
    let events = feed(
        &d,
        &mut state,
        every_10m(T0 + 65 * H, T0 + 94 * H).map(|t| meter(t, 0.0)),
    );
    assert_eq!(
        of(&events, FaultCode::ZeroValue)[0].opened_time,
        T0 + 93 * H
    );
}

#[test]
fn stuck_value_opens_after_24_hours_and_any_change_closes_it() {
    let d = detector();
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        every_10m(T0, T0 + 24 * H).map(|t| meter(t, 3.2)),
    );
    assert!(events.is_empty(), "{events:#?}");
    let events = feed(
        &d,
        &mut state,
        [meter(T0 + 24 * H, 3.2), meter(T0 + 24 * H + 10 * MIN, 3.2)],
    );
    let opened = of(&events, FaultCode::StuckValue);
    assert_eq!(opened.len(), 1, "{events:#?}");
    assert_eq!(opened[0].opened_time, T0 + 24 * H);
    assert_eq!(opened[0].threshold, None);
    assert!(
        opened[0].detail.contains("unchanged at 3.2 kW"),
        "{}",
        opened[0].detail
    );
    let obs = d.observe(&mut state, &meter(T0 + 24 * H + 20 * MIN, 3.21));
    assert_eq!(
        statuses(&obs.changes, FaultCode::StuckValue),
        vec![(FaultStatus::Closed, T0 + 24 * H + 20 * MIN)]
    );
    // The new value starts a new run: 24 h of it is stuck again.
    let events = feed(
        &d,
        &mut state,
        every_10m(T0 + 24 * H + 30 * MIN, T0 + 48 * H + 30 * MIN).map(|t| meter(t, 3.21)),
    );
    assert_eq!(
        statuses(&events, FaultCode::StuckValue),
        vec![(FaultStatus::Opened, T0 + 48 * H + 20 * MIN)]
    );
}

#[test]
fn zeros_are_never_stuck() {
    let d = detector();
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        every_10m(T0, T0 + 47 * H).map(|t| meter(t, 0.0)),
    );
    assert!(events.is_empty(), "{events:#?}");
    let events = feed(
        &d,
        &mut state,
        every_10m(T0, T0 + 30 * H).map(|t| {
            let mut s = meter(t + 47 * H, 0.0);
            s.vacant = true;
            s
        }),
    );
    assert!(events.is_empty(), "{events:#?}");
}

#[test]
fn overload_needs_six_readings_in_a_row() {
    let d = detector();
    let mut state = AssetState::default();
    let mut samples: Vec<Sample> = (0..5).map(|i| meter(T0 + i * 10 * MIN, 25.0)).collect();
    samples.push(meter(T0 + 50 * MIN, 15.0));
    samples.extend((6..11).map(|i| meter(T0 + i * 10 * MIN, 25.0)));
    let events = feed(&d, &mut state, samples);
    assert!(events.is_empty(), "{events:#?}");
    let obs = d.observe(&mut state, &meter(T0 + 110 * MIN, 26.0));
    let e = &obs.changes[0];
    assert_eq!(
        (e.code, e.status, e.opened_time),
        (FaultCode::Overload, FaultStatus::Opened, T0 + 110 * MIN)
    );
    assert_eq!(
        (e.severity, e.trigger_value, e.peak_value, e.threshold),
        (Severity::Critical, Some(26.0), Some(26.0), Some(20.0))
    );
    assert!(e.detail.contains("6 readings in a row"), "{}", e.detail);
    // Between 19 kW (clear) and 20 kW neither clears nor re-arms; three
    // readings below 19 kW close it.
    let events = feed(
        &d,
        &mut state,
        [19.5, 18.0, 18.0, 19.5, 18.0, 18.0, 18.0]
            .iter()
            .enumerate()
            .map(|(i, kw)| meter(T0 + (12 + i as i64) * 10 * MIN, *kw)),
    );
    assert_eq!(
        statuses(&events, FaultCode::Overload),
        vec![(FaultStatus::Closed, T0 + 18 * 10 * MIN)]
    );
}

#[test]
fn overload_uses_the_contracted_capacity() {
    let d = detector();
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        (0..10).map(|i| {
            let mut s = meter(T0 + i * 10 * MIN, 25.0);
            s.contracted_capacity_kw = Some(40.0);
            s
        }),
    );
    assert!(events.is_empty(), "{events:#?}");
    let events = feed(
        &d,
        &mut state,
        (10..16).map(|i| {
            let mut s = meter(T0 + i * 10 * MIN, 41.0);
            s.contracted_capacity_kw = Some(40.0);
            s
        }),
    );
    assert_eq!(of(&events, FaultCode::Overload)[0].threshold, Some(40.0));
}

#[test]
fn quarantined_overload_readings_count_but_clear_nothing() {
    // Validate quarantines every meter reading above 20 kW.
    let quarantined = |t: i64, kw: f64| {
        let mut s = meter(t, kw);
        s.quarantined = true;
        s
    };
    let d = detector();
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        (0..6).map(|i| quarantined(T0 + i * 10 * MIN, 30.0)),
    );
    assert_eq!(
        statuses(&events, FaultCode::Overload),
        vec![(FaultStatus::Opened, T0 + 50 * MIN)]
    );
    let events = feed(
        &d,
        &mut state,
        (6..20).map(|i| quarantined(T0 + i * 10 * MIN, 5.0)),
    );
    assert!(events.is_empty(), "{events:#?}");
    // Switched off, quarantined readings are not evidence.
    let d = with_rules(|r| r.meter.overload.as_mut().unwrap().count_quarantined = false);
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        (0..10).map(|i| quarantined(T0 + i * 10 * MIN, 30.0)),
    );
    assert!(events.is_empty(), "{events:#?}");
}

#[test]
fn low_variance_over_seven_days() {
    let d = detector();
    let mut state = AssetState::default();
    // 5.00 / 5.01 kW alternating: CV 0.001, never stuck, never zero.
    let flat = |t: i64| meter(t, if (t / (10 * MIN)) % 2 == 0 { 5.0 } else { 5.01 });
    let events = feed(&d, &mut state, every_10m(T0, T0 + 6 * DAY).map(flat));
    assert!(events.is_empty(), "{events:#?}");
    // The first reading of a day judges the seven whole days before it;
    // six covered days are enough (min_covered_days), so day 7 is the first.
    let obs = d.observe(&mut state, &flat(T0 + 6 * DAY));
    let e = &obs.changes[0];
    assert_eq!(
        (e.code, e.status, e.opened_time),
        (FaultCode::LowVariance, FaultStatus::Opened, T0 + 6 * DAY)
    );
    let cv = e.trigger_value.unwrap();
    assert!(cv > 0.0009 && cv < 0.0011, "{cv}");
    assert_eq!(e.metric.as_deref(), Some("power_cv"));
    // No further judgement that day; the next one, over 7 flat days, keeps it open.
    let events = feed(
        &d,
        &mut state,
        every_10m(T0 + 6 * DAY + 10 * MIN, T0 + 7 * DAY + MIN).map(flat),
    );
    assert!(events.is_empty(), "{events:#?}");
    // A lively day lifts the week's CV above 0.015: closed at the next judgement.
    let events = feed(
        &d,
        &mut state,
        every_10m(T0 + 7 * DAY + 10 * MIN, T0 + 8 * DAY).map(lively),
    );
    assert!(events.is_empty(), "{events:#?}");
    let obs = d.observe(&mut state, &lively(T0 + 8 * DAY));
    assert_eq!(
        statuses(&obs.changes, FaultCode::LowVariance),
        vec![(FaultStatus::Closed, T0 + 8 * DAY)]
    );
    // A normal meter: never.
    let mut state = AssetState::default();
    let events = feed(&d, &mut state, every_10m(T0, T0 + 15 * DAY).map(lively));
    assert!(events.is_empty(), "{events:#?}");
}

#[test]
fn low_variance_needs_coverage() {
    let d = detector();
    let flat = |t: i64| meter(t, if (t / (10 * MIN)) % 2 == 0 { 5.0 } else { 5.01 });
    // Five days of a flat meter: not enough to judge a week.
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        every_10m(T0 + 2 * DAY, T0 + 7 * DAY + MIN).map(flat),
    );
    assert!(events.is_empty(), "{events:#?}");
    // Six days are (min_covered_days = 6).
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        every_10m(T0 + DAY, T0 + 7 * DAY + MIN).map(flat),
    );
    assert_eq!(
        statuses(&events, FaultCode::LowVariance),
        vec![(FaultStatus::Opened, T0 + 7 * DAY)]
    );
    // Hourly readings with half of each day missing: 12 a day still count.
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        (0..7 * 24 + 1)
            .map(|h| T0 + h * H)
            .filter(|t| (t - T0) % DAY < 12 * H || (t - T0) % DAY == 0)
            .map(flat),
    );
    assert_eq!(
        statuses(&events, FaultCode::LowVariance),
        vec![(FaultStatus::Opened, T0 + 6 * DAY)]
    );
}

#[test]
fn a_stuck_meter_is_not_also_low_variance() {
    let d = detector();
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        every_10m(T0, T0 + 9 * DAY).map(|t| meter(t, 4.2)),
    );
    let codes: Vec<_> = events.iter().map(|e| (e.code, e.status)).collect();
    assert_eq!(codes, vec![(FaultCode::StuckValue, FaultStatus::Opened)]);
}

// ---------------------------------------------------------------- turbines

#[test]
fn exactly_at_the_threshold_is_no_fault() {
    let d = detector();
    let mut state = AssetState::default();
    let obs = d.observe(&mut state, &gearbox(T0, 80.0));
    assert!(obs.changes.is_empty() && obs.active.is_empty());
    assert_eq!(obs.deduction, 0);
    let obs = d.observe(&mut state, &gearbox(T0 + 10 * MIN, 80.1));
    let e = &obs.changes[0];
    assert_eq!(
        (e.code, e.status, e.severity),
        (
            FaultCode::GearboxOverheat,
            FaultStatus::Opened,
            Severity::Critical
        )
    );
    assert_eq!((e.trigger_value, e.threshold), (Some(80.1), Some(80.0)));
    assert_eq!(e.detail, "gearbox_temperature 80.1 °C > 80 °C");
    assert_eq!(
        obs.active,
        vec![ActiveFault {
            fault_id: format!("TURBINE_00001:GEARBOX_OVERHEAT:{}", T0 + 10 * MIN),
            code: FaultCode::GearboxOverheat,
            severity: Severity::Critical,
        }]
    );
    assert_eq!(obs.deduction, 30);
}

/// Sets one value of a sample.
type Setter = fn(&mut Sample, f64);

#[test]
fn every_turbine_limit_of_the_seed() {
    let d = detector();
    let cases: [(FaultCode, Setter, f64, f64); 5] = [
        (
            FaultCode::GearboxOverheat,
            |s, v| s.gearbox_temperature_c = Some(v),
            80.0,
            80.5,
        ),
        (
            FaultCode::GeneratorOverheat,
            |s, v| s.generator_temperature_c = Some(v),
            75.0,
            75.5,
        ),
        (
            FaultCode::HighVibration,
            |s, v| s.vibration_ms2 = Some(v),
            2.0,
            2.1,
        ),
        (
            FaultCode::LowOilPressure,
            |s, v| s.oil_pressure_bar = Some(v),
            35.0,
            34.9,
        ),
        (
            FaultCode::TowerLean,
            |s, v| s.tower_lean_deg = Some(v),
            1.5,
            1.6,
        ),
    ];
    for (code, set, at, beyond) in cases {
        let mut state = AssetState::default();
        let mut s = turbine(T0);
        set(&mut s, at);
        assert!(
            d.observe(&mut state, &s).changes.is_empty(),
            "{code} at {at}"
        );
        let mut s = turbine(T0 + 10 * MIN);
        set(&mut s, beyond);
        let changes = d.observe(&mut state, &s).changes;
        assert_eq!(changes.len(), 1, "{code}: {changes:#?}");
        assert_eq!(
            (changes[0].code, changes[0].status),
            (code, FaultStatus::Opened)
        );
    }
}

#[test]
fn hysteresis_stops_flapping() {
    let d = detector();
    let mut state = AssetState::default();
    let temps = [79.0, 81.0, 79.5, 81.0, 79.0, 78.0, 80.5];
    let events = feed(
        &d,
        &mut state,
        temps
            .iter()
            .enumerate()
            .map(|(i, c)| gearbox(T0 + i as i64 * 10 * MIN, *c)),
    );
    assert_eq!(
        statuses(&events, FaultCode::GearboxOverheat),
        vec![(FaultStatus::Opened, T0 + 10 * MIN)]
    );
    // Below 78 for 10 minutes closes it: 77 at +70m, 77.5 at +75m (5 min:
    // not yet), 78.5 at +78m (re-arms), 77 at +80m, 76 at +90m (10 min).
    let tail = [
        (70, 77.0),
        (75, 77.5),
        (78, 78.5),
        (80, 77.0),
        (85, 77.0),
        (90, 76.0),
    ];
    let events = feed(
        &d,
        &mut state,
        tail.iter().map(|(m, c)| gearbox(T0 + m * MIN, *c)),
    );
    let closed = of(&events, FaultCode::GearboxOverheat);
    assert_eq!(closed.len(), 1, "{events:#?}");
    assert_eq!(
        (closed[0].status, closed[0].closed_time),
        (FaultStatus::Closed, Some(T0 + 90 * MIN))
    );
    assert_eq!(closed[0].peak_value, Some(81.0));
    assert_eq!(closed[0].revision, 1);
}

#[test]
fn oil_pressure_is_a_limit_below() {
    let d = detector();
    let mut state = AssetState::default();
    let bars = [
        (0, 36.0),
        (10, 34.0),
        (20, 36.0),
        (30, 34.5),
        (40, 37.5),
        (50, 38.0),
    ];
    let events = feed(
        &d,
        &mut state,
        bars.iter().map(|(m, b)| {
            let mut s = turbine(T0 + m * MIN);
            s.oil_pressure_bar = Some(*b);
            s
        }),
    );
    assert_eq!(
        statuses(&events, FaultCode::LowOilPressure),
        vec![
            (FaultStatus::Opened, T0 + 10 * MIN),
            (FaultStatus::Closed, T0 + 50 * MIN)
        ]
    );
    assert_eq!(
        of(&events, FaultCode::LowOilPressure)[1].peak_value,
        Some(34.0)
    );
}

#[test]
fn open_after_holds_a_limit_for_a_while() {
    let d = with_rules(|r| {
        r.turbine.gearbox_overheat.as_mut().unwrap().open_after =
            std::time::Duration::from_secs(1200)
    });
    let mut state = AssetState::default();
    let events = feed(
        &d,
        &mut state,
        [
            gearbox(T0, 85.0),
            gearbox(T0 + 10 * MIN, 85.0),
            gearbox(T0 + 15 * MIN, 79.0),
            gearbox(T0 + 20 * MIN, 85.0),
            gearbox(T0 + 30 * MIN, 85.0),
        ],
    );
    assert!(events.is_empty(), "{events:#?}");
    let obs = d.observe(&mut state, &gearbox(T0 + 40 * MIN, 84.0));
    assert_eq!(obs.changes[0].opened_time, T0 + 40 * MIN);
    assert_eq!(obs.changes[0].trigger_value, Some(84.0));
    assert_eq!(obs.changes[0].peak_value, Some(85.0));
    assert!(
        obs.changes[0].detail.ends_with("for 20m"),
        "{}",
        obs.changes[0].detail
    );
}

#[test]
fn updates_only_for_a_new_peak_beyond_the_margin_and_revisions_count_up() {
    let d = detector();
    let mut state = AssetState::default();
    // Margin 5 degC: 81 opens; 82, 85.9 are not news; 86 is; 90 is not; 91 is.
    let temps = [81.0, 82.0, 85.9, 86.0, 84.0, 90.0, 91.0, 91.0, 70.0, 70.0];
    let events = feed(
        &d,
        &mut state,
        temps
            .iter()
            .enumerate()
            .map(|(i, c)| gearbox(T0 + i as i64 * 10 * MIN, *c)),
    );
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.status, e.revision, e.peak_value.unwrap(), e.updated_time))
        .collect();
    assert_eq!(
        got,
        vec![
            (FaultStatus::Opened, 0, 81.0, T0),
            (FaultStatus::Updated, 1, 86.0, T0 + 30 * MIN),
            (FaultStatus::Updated, 2, 91.0, T0 + 60 * MIN),
            (FaultStatus::Closed, 3, 91.0, T0 + 90 * MIN),
        ]
    );
    assert!(events
        .iter()
        .all(|e| e.fault_id == events[0].fault_id && e.trigger_value == Some(81.0)));
    assert!(
        events[1].detail.contains("new peak 86 °C"),
        "{}",
        events[1].detail
    );
}

#[test]
fn escalation_raises_the_severity_once() {
    let d = with_rules(|r| {
        r.turbine.high_vibration.as_mut().unwrap().escalation = Some(rules::Escalation {
            threshold: 4.0,
            severity: Severity::Critical,
        });
        r.turbine.high_vibration.as_mut().unwrap().update_margin = None;
    });
    let mut state = AssetState::default();
    let vib = [2.5, 3.9, 4.5, 4.8, 2.5];
    let events = feed(
        &d,
        &mut state,
        vib.iter().enumerate().map(|(i, v)| {
            let mut s = turbine(T0 + i as i64 * 10 * MIN);
            s.vibration_ms2 = Some(*v);
            s
        }),
    );
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.status, e.severity, e.revision))
        .collect();
    assert_eq!(
        got,
        vec![
            (FaultStatus::Opened, Severity::Warning, 0),
            (FaultStatus::Updated, Severity::Critical, 1)
        ]
    );
    assert!(
        events[1].detail.contains("escalated to CRITICAL"),
        "{}",
        events[1].detail
    );
    assert_eq!(state.active_faults()[0].severity, Severity::Critical);
    // Opening beyond the escalation limit opens at the higher severity.
    let mut state = AssetState::default();
    let mut s = turbine(T0);
    s.vibration_ms2 = Some(5.0);
    assert_eq!(
        d.observe(&mut state, &s).changes[0].severity,
        Severity::Critical
    );
}

#[test]
fn low_power_output_only_while_running() {
    let d = detector();
    let run = |wind: f64, rpm: f64, kw: f64| {
        let mut state = AssetState::default();
        let mut s = turbine(T0);
        (
            s.wind_speed_ms,
            s.rotor_speed_rpm,
            s.power_kw,
            s.expected_power_kw,
        ) = (Some(wind), Some(rpm), Some(kw), Some(0.0));
        d.observe(&mut state, &s).changes
    };
    let c = run(4.0, 7.0, 40.0);
    assert_eq!(
        (c[0].code, c[0].severity, c[0].maintenance_required),
        (FaultCode::LowPowerOutput, Severity::Info, false)
    );
    assert_eq!(run(4.0, 7.0, 100.0), vec![]);
    // Rotor turning in calm wind counts as running; a stopped rotor with
    // wind at cut-in does too (the seed's "running": rotor or wind).
    assert_eq!(run(2.0, 3.0, 10.0).len(), 1);
    assert_eq!(run(3.0, 0.0, 10.0).len(), 1);
    // Calm and still, or a storm stop: not running.
    assert_eq!(run(2.9, 0.0, 0.0), vec![]);
    assert_eq!(run(26.0, 0.0, 0.0), vec![]);
    // The model's own cut-in wins over the file's.
    let mut state = AssetState::default();
    let mut s = turbine(T0);
    (
        s.wind_speed_ms,
        s.rotor_speed_rpm,
        s.power_kw,
        s.cut_in_wind_speed_ms,
    ) = (Some(3.5), Some(0.0), Some(0.0), Some(4.0));
    assert!(d.observe(&mut state, &s).changes.is_empty());
    // A small turbine can never reach 100 kW: never "low".
    let mut state = AssetState::default();
    let mut s = turbine(T0);
    (s.power_kw, s.rated_power_kw) = (Some(50.0), Some(80.0));
    assert!(d.observe(&mut state, &s).changes.is_empty());
}

fn under(t: i64, wind: f64, expected: f64, kw: f64) -> Sample {
    let mut s = turbine(t);
    (s.wind_speed_ms, s.expected_power_kw, s.power_kw) = (Some(wind), Some(expected), Some(kw));
    s
}

#[test]
fn underperformance_for_30_minutes_above_cut_in() {
    let d = detector();
    let mut state = AssetState::default();
    // 20 minutes at half the curve, one calm reading, 20 minutes again: the
    // calm breaks the run.
    let samples = [
        under(T0, 8.0, 1000.0, 500.0),
        under(T0 + 10 * MIN, 8.0, 1000.0, 500.0),
        under(T0 + 20 * MIN, 8.0, 1000.0, 500.0),
        under(T0 + 25 * MIN, 2.5, 0.0, 0.0),
        under(T0 + 30 * MIN, 8.0, 1000.0, 500.0),
        under(T0 + 40 * MIN, 8.0, 1000.0, 500.0),
        under(T0 + 50 * MIN, 8.0, 1000.0, 500.0),
    ];
    let events = feed(&d, &mut state, samples);
    assert!(
        of(&events, FaultCode::Underperformance).is_empty(),
        "{events:#?}"
    );
    let obs = d.observe(&mut state, &under(T0 + 60 * MIN, 8.0, 1000.0, 450.0));
    let e = &obs.changes[0];
    assert_eq!(
        (e.code, e.status, e.opened_time),
        (
            FaultCode::Underperformance,
            FaultStatus::Opened,
            T0 + 60 * MIN
        )
    );
    assert_eq!(
        (e.trigger_value, e.peak_value, e.threshold),
        (Some(0.45), Some(0.45), Some(0.8))
    );
    assert_eq!(e.metric.as_deref(), Some("performance_ratio"));
    assert!(e.detail.contains("45 %"), "{}", e.detail);
    // Calm does not close it; 30 minutes at 0.9 or better does.
    let events = feed(
        &d,
        &mut state,
        [
            under(T0 + 70 * MIN, 2.0, 0.0, 0.0),
            under(T0 + 80 * MIN, 8.0, 1000.0, 950.0),
            under(T0 + 90 * MIN, 8.0, 1000.0, 850.0),
            under(T0 + 100 * MIN, 8.0, 1000.0, 950.0),
            under(T0 + 120 * MIN, 8.0, 1000.0, 950.0),
            under(T0 + 130 * MIN, 8.0, 1000.0, 920.0),
        ],
    );
    assert_eq!(
        statuses(&events, FaultCode::Underperformance),
        vec![(FaultStatus::Closed, T0 + 130 * MIN)]
    );
}

#[test]
fn underperformance_is_not_judged_below_cut_in_or_a_small_expectation() {
    let d = detector();
    for (wind, expected) in [(3.0, 400.0), (2.0, 400.0), (6.0, 99.0)] {
        let mut state = AssetState::default();
        let events = feed(
            &d,
            &mut state,
            every_10m(T0, T0 + 2 * H).map(|t| under(t, wind, expected, 10.0)),
        );
        assert!(
            of(&events, FaultCode::Underperformance).is_empty(),
            "{wind} m/s: {events:#?}"
        );
    }
}

#[test]
fn quarantined_values_open_and_close_nothing() {
    let d = detector();
    let mut state = AssetState::default();
    let mut s = gearbox(T0, 95.0);
    s.quarantined = true;
    let obs = d.observe(&mut state, &s);
    assert!(obs.changes.is_empty());
    d.observe(&mut state, &gearbox(T0 + 10 * MIN, 95.0));
    let mut s = gearbox(T0 + 20 * MIN, 20.0);
    s.quarantined = true;
    let obs = d.observe(&mut state, &s);
    assert!(obs.changes.is_empty());
    assert_eq!(obs.active.len(), 1);
}

#[test]
fn out_of_order_readings_change_nothing() {
    let d = detector();
    let mut state = AssetState::default();
    feed(
        &d,
        &mut state,
        every_10m(T0, T0 + 47 * H).map(|t| meter(t, 0.0)),
    );
    let before = state.clone();
    // A late reading of 5 kW from hour 1, and a repeat of the latest time.
    for late in [meter(T0 + H, 5.0), meter(T0 + 47 * H - 10 * MIN, 5.0)] {
        let obs = d.observe(&mut state, &late);
        assert!(obs.changes.is_empty());
        assert_eq!(state, before);
    }
    let events = feed(
        &d,
        &mut state,
        every_10m(T0 + 47 * H, T0 + 48 * H + MIN).map(|t| meter(t, 0.0)),
    );
    assert_eq!(
        statuses(&events, FaultCode::ZeroValue),
        vec![(FaultStatus::Opened, T0 + 48 * H)]
    );
    // Annotated with what is open now.
    let obs = d.observe(&mut state, &meter(T0 + 2 * H, 3.0));
    assert_eq!(obs.active[0].code, FaultCode::ZeroValue);
    assert_eq!(obs.deduction, 30);
}

#[test]
fn deduction_counts_every_active_fault() {
    let d = detector();
    let mut state = AssetState::default();
    let mut s = gearbox(T0, 85.0);
    s.vibration_ms2 = Some(3.0);
    s.tower_lean_deg = Some(2.0);
    let obs = d.observe(&mut state, &s);
    let codes: Vec<_> = obs.active.iter().map(|a| a.code).collect();
    assert_eq!(
        codes,
        vec![
            FaultCode::GearboxOverheat,
            FaultCode::HighVibration,
            FaultCode::TowerLean
        ]
    );
    assert_eq!(obs.deduction, 90);
}

#[test]
fn a_rule_removed_from_the_file_closes_its_fault() {
    let mut state = AssetState::default();
    detector().observe(&mut state, &gearbox(T0, 85.0));
    let d = with_rules(|r| r.turbine.gearbox_overheat = None);
    let obs = d.observe(&mut state, &gearbox(T0 + 10 * MIN, 85.0));
    let e = &obs.changes[0];
    assert_eq!(
        (e.status, e.closed_time, e.revision),
        (FaultStatus::Closed, Some(T0 + 10 * MIN), 1)
    );
    assert!(obs.active.is_empty());
    assert!(state.tracks.is_empty());
}

// ---------------------------------------------------------------- gaps

#[test]
fn gaps_by_timer_at_exactly_4h_and_24h() {
    let d = detector();
    let mut state = AssetState::default();
    d.observe(&mut state, &meter(T0, 1.0));
    assert_eq!(d.next_due(&state), Some(T0 + 4 * H));
    assert!(d.advance(&mut state, T0 + 4 * H - 1).is_empty());
    let opened = d.advance(&mut state, T0 + 4 * H);
    assert_eq!(opened.len(), 1);
    let e = &opened[0];
    assert_eq!(
        (e.code, e.status, e.severity),
        (
            FaultCode::MissingShort,
            FaultStatus::Opened,
            Severity::Warning
        )
    );
    assert_eq!(
        (e.opened_time, e.updated_time, e.revision),
        (T0 + 4 * H, T0 + 4 * H, 0)
    );
    assert_eq!(e.asset_id, "MTR-00001");
    assert!(!e.maintenance_required);
    assert_eq!(d.next_due(&state), Some(T0 + 24 * H));
    assert!(
        d.advance(&mut state, T0 + 10 * H).is_empty(),
        "advance is idempotent"
    );
    // The watermark jumps well past 24 h: times are still the thresholds'.
    let escalated = d.advance(&mut state, T0 + 30 * H);
    let got: Vec<_> = escalated
        .iter()
        .map(|e| (e.code, e.status, e.opened_time, e.updated_time, e.revision))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                FaultCode::MissingShort,
                FaultStatus::Closed,
                T0 + 4 * H,
                T0 + 24 * H,
                1
            ),
            (
                FaultCode::MissingExtended,
                FaultStatus::Opened,
                T0 + 24 * H,
                T0 + 24 * H,
                0
            ),
        ]
    );
    assert!(
        escalated[0].detail.contains("escalated"),
        "{}",
        escalated[0].detail
    );
    assert_eq!(escalated[0].closed_time, Some(T0 + 24 * H));
    assert_eq!(
        (escalated[1].severity, escalated[1].maintenance_required),
        (Severity::Critical, true)
    );
    assert_eq!(d.next_due(&state), Some(T0 + 30 * DAY));
    // The next reading closes it at its own event time.
    let obs = d.observe(&mut state, &meter(T0 + 31 * H, 1.0));
    let e = &obs.changes[0];
    assert_eq!(
        (e.code, e.status, e.closed_time, e.revision),
        (
            FaultCode::MissingExtended,
            FaultStatus::Closed,
            Some(T0 + 31 * H),
            1
        )
    );
    assert_eq!(e.peak_value, Some(31.0));
    assert!(obs.active.is_empty());
    assert_eq!(d.next_due(&state), Some(T0 + 35 * H));
}

#[test]
fn turbines_have_gaps_too() {
    let d = detector();
    let mut state = AssetState::default();
    d.observe(&mut state, &turbine(T0));
    let e = d.advance(&mut state, T0 + 5 * H);
    assert_eq!(
        (e[0].code, e[0].asset_kind, e[0].opened_time),
        (FaultCode::MissingShort, AssetKind::Turbine, T0 + 4 * H)
    );
}

/// Readings of a meter with silences of `gaps` (hours) between them.
fn gappy(gaps: &[i64]) -> Vec<Sample> {
    let mut t = T0;
    let mut out = vec![meter(t, 1.0)];
    for g in gaps {
        t += g * H;
        out.push(meter(t, 1.0));
    }
    out
}

#[test]
fn a_gap_ends_the_same_with_or_without_the_timer() {
    let d = detector();
    for gaps in [
        vec![3],
        vec![4],
        vec![5],
        vec![23],
        vec![24],
        vec![30],
        vec![5, 26, 2, 24],
    ] {
        let samples = gappy(&gaps);
        // Without any timer.
        let mut quiet = AssetState::default();
        let without = feed(&d, &mut quiet, samples.clone());
        // With a timer firing whenever the watermark passes next_due, the
        // watermark walking in 10-minute steps.
        let mut timed = AssetState::default();
        let mut with = Vec::new();
        let mut watermark = T0;
        for s in samples {
            while watermark < s.event_time {
                if d.next_due(&timed).is_some_and(|due| due <= watermark) {
                    with.extend(d.advance(&mut timed, watermark));
                }
                watermark += 10 * MIN;
            }
            with.extend(d.observe(&mut timed, &s).changes);
        }
        assert_eq!(with, without, "gaps {gaps:?}");
        assert_eq!(timed, quiet, "gaps {gaps:?}");
        let short = gaps.iter().filter(|g| **g >= 4).count();
        let extended = gaps.iter().filter(|g| **g >= 24).count();
        assert_eq!(
            of(&without, FaultCode::MissingShort).len(),
            2 * short,
            "{gaps:?}"
        );
        assert_eq!(
            of(&without, FaultCode::MissingExtended).len(),
            2 * extended,
            "{gaps:?}"
        );
    }
    // A 30 h gap ended by a reading alone.
    let events = feed(&d, &mut AssetState::default(), gappy(&[30]));
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.code, e.status, e.opened_time, e.closed_time))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                FaultCode::MissingShort,
                FaultStatus::Opened,
                T0 + 4 * H,
                None
            ),
            (
                FaultCode::MissingShort,
                FaultStatus::Closed,
                T0 + 4 * H,
                Some(T0 + 24 * H)
            ),
            (
                FaultCode::MissingExtended,
                FaultStatus::Opened,
                T0 + 24 * H,
                None
            ),
            (
                FaultCode::MissingExtended,
                FaultStatus::Closed,
                T0 + 24 * H,
                Some(T0 + 30 * H)
            ),
        ]
    );
}

#[test]
fn a_quarantined_reading_ends_a_gap() {
    let d = detector();
    let mut state = AssetState::default();
    d.observe(&mut state, &meter(T0, 1.0));
    d.advance(&mut state, T0 + 6 * H);
    let mut s = meter(T0 + 5 * H, 99.0);
    s.quarantined = true;
    let obs = d.observe(&mut state, &s);
    assert_eq!(
        statuses(&obs.changes, FaultCode::MissingShort),
        vec![(FaultStatus::Closed, T0 + 5 * H)]
    );
}

#[test]
fn silence_counts_from_when_the_next_reading_was_due() {
    let d = detector();
    let mut state = AssetState::default();
    let mut s = meter(T0, 1.0);
    s.interval_ms = Some(H);
    d.observe(&mut state, &s);
    assert_eq!(d.next_due(&state), Some(T0 + 5 * H));
    // A daily meter is not missing between its readings (capped at a day).
    let mut s = meter(T0 + H, 1.0);
    s.interval_ms = Some(7 * DAY);
    d.observe(&mut state, &s);
    assert_eq!(d.next_due(&state), Some(T0 + 25 * H + 4 * H));
}

#[test]
fn a_reading_behind_the_watermark_closes_the_gap_it_disproves() {
    let d = detector();
    let mut state = AssetState::default();
    d.observe(&mut state, &meter(T0, 1.0));
    assert_eq!(d.advance(&mut state, T0 + 5 * H).len(), 1);
    // It was only 3 hours after all.
    let obs = d.observe(&mut state, &meter(T0 + 3 * H, 1.0));
    let e = &obs.changes[0];
    assert_eq!(
        (e.code, e.status, e.closed_time),
        (
            FaultCode::MissingShort,
            FaultStatus::Closed,
            Some(T0 + 4 * H)
        )
    );
    assert!(e.detail.contains("late reading"), "{}", e.detail);
    assert_eq!(d.next_due(&state), Some(T0 + 7 * H));
}

#[test]
fn a_long_silent_asset_retires() {
    let d = detector();
    let mut state = AssetState::default();
    feed(&d, &mut state, [gearbox(T0, 85.0)]);
    assert!(!d.is_idle(&state));
    let mut timed = state.clone();
    let mut events = d.advance(&mut timed, T0 + 2 * DAY);
    assert_eq!(d.next_due(&timed), Some(T0 + 30 * DAY));
    events.extend(d.advance(&mut timed, T0 + 40 * DAY));
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.code, e.status, e.updated_time))
        .collect();
    assert_eq!(
        got,
        vec![
            (FaultCode::MissingShort, FaultStatus::Opened, T0 + 4 * H),
            (FaultCode::MissingShort, FaultStatus::Closed, T0 + 24 * H),
            (FaultCode::MissingExtended, FaultStatus::Opened, T0 + 24 * H),
            (
                FaultCode::GearboxOverheat,
                FaultStatus::Closed,
                T0 + 30 * DAY
            ),
            (
                FaultCode::MissingExtended,
                FaultStatus::Closed,
                T0 + 30 * DAY
            ),
        ]
    );
    assert!(events[4].detail.contains("retired"), "{}", events[4].detail);
    assert!(d.is_idle(&timed));
    assert_eq!(d.next_due(&timed), None);
    assert!(d.advance(&mut timed, T0 + 90 * DAY).is_empty());
    // A reading after the retirement, without any timer: the same events,
    // then a fresh start.
    let back = gearbox(T0 + 41 * DAY, 60.0);
    let mut quiet = state.clone();
    let obs = d.observe(&mut quiet, &back);
    assert_eq!(obs.changes, events);
    let obs_timed = d.observe(&mut timed, &back);
    assert!(obs_timed.changes.is_empty());
    assert_eq!(quiet, timed);
    // Without retire_after an asset is never idle.
    let d = with_rules(|r| r.turbine.retire_after = None);
    let mut state = AssetState::default();
    d.observe(&mut state, &turbine(T0));
    d.advance(&mut state, T0 + 400 * DAY);
    assert_eq!(d.next_due(&state), None);
    assert!(!d.is_idle(&state));
    assert!(state.is_open(FaultCode::MissingExtended));
}

// ---------------------------------------------------------------- properties

/// A month of a turbine and a meter with every kind of trouble.
fn eventful() -> Vec<Sample> {
    let mut out = Vec::new();
    for (i, t) in every_10m(T0, T0 + 30 * DAY).enumerate() {
        let i = i as i64;
        let day = (t - T0) / DAY;
        // Turbine: overheats in bursts, underperforms, goes silent on day 9.
        if day != 9 {
            let mut s = turbine(t);
            let phase = i % 97;
            if phase < 7 {
                s.gearbox_temperature_c = Some(79.0 + phase as f64 * 2.0);
            }
            if (i / 50) % 5 == 0 {
                s.power_kw = Some(600.0);
            }
            s.vibration_ms2 = Some(if i % 13 == 0 { 2.4 } else { 1.2 });
            if i % 211 < 3 {
                s.generator_temperature_c = Some(76.0 + (i % 211) as f64);
            }
            if i % 157 < 2 {
                s.oil_pressure_bar = Some(30.0);
            }
            if i % 401 == 0 {
                s.tower_lean_deg = Some(1.7);
            }
            if i % 89 == 0 {
                (s.wind_speed_ms, s.rotor_speed_rpm, s.power_kw) =
                    (Some(4.0), Some(7.0), Some(50.0));
                s.expected_power_kw = Some(150.0);
            }
            if i % 31 == 0 {
                s.quarantined = true;
            }
            out.push(s);
        }
        // Meter: zeros on days 2-4, stuck on days 6-7, overload bursts,
        // a 30 h gap from day 12, flat from day 15.
        let silent = (T0 + 12 * DAY..T0 + 12 * DAY + 30 * H).contains(&t);
        if !silent {
            let mut s = lively(t);
            match day {
                2..=4 => s.power_kw = Some(0.0),
                6..=7 => s.power_kw = Some(2.75),
                15.. => s.power_kw = Some(if i % 2 == 0 { 3.0 } else { 3.01 }),
                _ => {}
            }
            // Eight readings above 20 kW on day 11, half of them quarantined.
            if (1600..1608).contains(&i) {
                s.power_kw = Some(24.0 + (i - 1600) as f64);
                s.quarantined = i % 2 == 0;
            }
            out.push(s);
        }
    }
    out
}

/// Runs `samples` with a timer per asset, as the runtime would: the
/// watermark is the latest event time seen, minus 30 minutes.
fn run_with_timers(
    d: &Detector,
    states: &mut BTreeMap<String, AssetState>,
    samples: &[Sample],
) -> Vec<FaultChange> {
    let mut out = Vec::new();
    let mut watermark = i64::MIN;
    for s in samples {
        let state = states.entry(s.asset_id.clone()).or_default();
        out.extend(d.observe(state, s).changes);
        watermark = watermark.max(s.event_time - 30 * MIN);
        for state in states.values_mut() {
            if d.next_due(state).is_some_and(|due| due <= watermark) {
                out.extend(d.advance(state, watermark));
            }
        }
    }
    out
}

#[test]
fn the_month_opens_every_kind_of_fault() {
    let events = run_with_timers(&detector(), &mut BTreeMap::new(), &eventful());
    for code in FaultCode::ALL {
        assert!(
            events
                .iter()
                .any(|e| e.code == code && e.status == FaultStatus::Opened),
            "{code} never opened"
        );
    }
}

#[test]
fn replays_give_the_same_events() {
    let d = detector();
    let samples = eventful();
    let first = run_with_timers(&d, &mut BTreeMap::new(), &samples);
    let second = run_with_timers(&d, &mut BTreeMap::new(), &samples);
    assert!(first.len() > 50, "{}", first.len());
    assert_eq!(first, second);
    // A crash half way: state restored from its JSON, the rest replayed.
    let (head, tail) = samples.split_at(samples.len() / 2);
    let mut states = BTreeMap::new();
    let mut resumed = run_with_timers(&d, &mut states, head);
    let mut restored: BTreeMap<String, AssetState> = states
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_slice(&serde_json::to_vec(v).unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(restored, states);
    resumed.extend(run_with_timers(&d, &mut restored, tail));
    assert_eq!(resumed, first);
}

#[test]
fn revisions_count_up_per_fault_and_end_closed() {
    let events = run_with_timers(&detector(), &mut BTreeMap::new(), &eventful());
    let mut by_id: BTreeMap<&str, Vec<&FaultChange>> = BTreeMap::new();
    for e in &events {
        by_id.entry(&e.fault_id).or_default().push(e);
    }
    assert!(by_id.len() > 20, "{}", by_id.len());
    for (id, life) in by_id {
        let revisions: Vec<u32> = life.iter().map(|e| e.revision).collect();
        assert_eq!(
            revisions,
            (0..life.len() as u32).collect::<Vec<_>>(),
            "{id}"
        );
        assert_eq!(life[0].status, FaultStatus::Opened, "{id}");
        if life.len() > 2 {
            assert!(
                life[1..life.len() - 1]
                    .iter()
                    .all(|e| e.status == FaultStatus::Updated),
                "{id}"
            );
        }
        for pair in life.windows(2) {
            assert!(pair[0].updated_time <= pair[1].updated_time, "{id}");
        }
        let closed = life
            .iter()
            .filter(|e| e.status == FaultStatus::Closed)
            .count();
        assert!(closed <= 1, "{id}");
        assert!(
            life.iter().all(|e| e.opened_time == life[0].opened_time),
            "{id}"
        );
    }
}

#[test]
fn state_round_trips_and_stays_small() {
    let d = detector();
    let mut states = BTreeMap::new();
    run_with_timers(&d, &mut states, &eventful());
    for (id, state) in &states {
        let json = serde_json::to_string(state).unwrap();
        let back: AssetState = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, state, "{id}");
        assert!(json.len() < 1200, "{id}: {} bytes: {json}", json.len());
        assert!(state.days.len() <= 8, "{id}");
    }
    // A meter at its largest: every rule in progress at once, a full window.
    let mut state = AssetState::default();
    feed(&d, &mut state, every_10m(T0, T0 + 30 * DAY).map(lively));
    let mut s = meter(T0 + 30 * DAY, 25.0);
    s.vacant = false;
    d.observe(&mut state, &s);
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.len() < 1000, "{} bytes: {json}", json.len());
    assert_eq!(serde_json::from_str::<AssetState>(&json).unwrap(), state);
    // A state never seen is nothing at all.
    assert_eq!(serde_json::to_string(&AssetState::default()).unwrap(), "{}");
}

#[test]
fn stuck_values_survive_the_round_trip_exactly() {
    let d = detector();
    let v = 0.1 + 0.2; // not exactly 0.3
    let mut state = AssetState::default();
    feed(
        &d,
        &mut state,
        every_10m(T0, T0 + 12 * H).map(|t| meter(t, v)),
    );
    let mut state: AssetState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    let events = feed(
        &d,
        &mut state,
        every_10m(T0 + 12 * H, T0 + 24 * H + MIN).map(|t| meter(t, v)),
    );
    assert_eq!(
        statuses(&events, FaultCode::StuckValue),
        vec![(FaultStatus::Opened, T0 + 24 * H)]
    );
}

#[test]
fn fault_changes_serialise_for_the_sink() {
    let d = detector();
    let mut state = AssetState::default();
    let e = d.observe(&mut state, &gearbox(T0, 85.0)).changes.remove(0);
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["code"], "GEARBOX_OVERHEAT");
    assert_eq!(json["severity"], "CRITICAL");
    assert_eq!(json["status"], "OPENED");
    assert_eq!(json["asset_kind"], "turbine");
    assert_eq!(json["closed_time"], serde_json::Value::Null);
    assert_eq!(serde_json::from_value::<FaultChange>(json).unwrap(), e);
}
