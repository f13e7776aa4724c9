//! Unit standardisation: every metric has one canonical unit, and each known
//! spelling of another unit has a conversion to it.
//!
//! Unknown units are an error rather than a guess: a value in an unexpected
//! unit is exactly the kind of data that silently corrupts dashboards. SI
//! symbols are case-sensitive where SI is (`MJ` is mega, `mJ` milli; `MPa`
//! and `mPa`), so a unit is first matched exactly; only spellings whose case
//! cannot change their meaning (`kw`, `KW`, `watts`, `psi`) are also taken in
//! any case, and an all-lower-case spelling that could be either prefix
//! (`mw`, `mj`, `mpa`) is refused with both readings named.
//!
//! Power given as energy per interval (`kWh` from an interval meter) is
//! average power over the interval: 0.5 kWh in 15 minutes is 2 kW. It needs
//! the reading's interval; without one it is taken as hourly (the rules'
//! "treat as kW for hourly readings") and said so.

use gale_model::Metric;

/// What happened to a value on its way to the canonical unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Conversion {
    /// Already canonical (or a different spelling of it).
    None,
    /// Converted from the named unit.
    Converted,
    /// Converted with an assumption (an energy per interval without a known
    /// interval, taken as hourly): flagged as inferred.
    Assumed,
}

/// A unit as a factor to the canonical one (or an affine conversion).
#[derive(Debug, Clone, Copy)]
enum Unit {
    Factor(f64),
    /// Degrees Fahrenheit.
    Fahrenheit,
    /// Kelvin.
    Kelvin,
    /// Energy per interval to average power: factor to kWh.
    PerInterval(f64),
}

/// Exact (case-sensitive) spellings, then spellings in any case.
struct Table {
    exact: &'static [(&'static str, Unit)],
    any_case: &'static [(&'static str, Unit)],
    /// All-lower-case spellings that are ambiguous, with their two readings.
    ambiguous: &'static [(&'static str, &'static str)],
}

const ONE: Unit = Unit::Factor(1.0);

const POWER: Table = Table {
    exact: &[
        ("W", Unit::Factor(1e-3)),
        ("kW", ONE),
        ("MW", Unit::Factor(1e3)),
        ("GW", Unit::Factor(1e6)),
        ("mW", Unit::Factor(1e-6)),
        ("Wh", Unit::PerInterval(1e-3)),
        ("kWh", Unit::PerInterval(1.0)),
        ("MWh", Unit::PerInterval(1e3)),
    ],
    any_case: &[
        ("w", Unit::Factor(1e-3)),
        ("watt", Unit::Factor(1e-3)),
        ("watts", Unit::Factor(1e-3)),
        ("kw", ONE),
        ("kilowatt", ONE),
        ("kilowatts", ONE),
        ("megawatt", Unit::Factor(1e3)),
        ("megawatts", Unit::Factor(1e3)),
        ("wh", Unit::PerInterval(1e-3)),
        ("kwh", Unit::PerInterval(1.0)),
    ],
    ambiguous: &[
        ("mw", "MW (megawatt) or mW (milliwatt)"),
        ("mwh", "MWh or mWh"),
    ],
};

const ENERGY: Table = Table {
    exact: &[
        ("Wh", Unit::Factor(1e-3)),
        ("kWh", ONE),
        ("MWh", Unit::Factor(1e3)),
        ("GWh", Unit::Factor(1e6)),
        ("mWh", Unit::Factor(1e-6)),
        ("J", Unit::Factor(1.0 / 3.6e6)),
        ("kJ", Unit::Factor(1.0 / 3.6e3)),
        ("MJ", Unit::Factor(1.0 / 3.6)),
        ("GJ", Unit::Factor(1e3 / 3.6)),
        ("mJ", Unit::Factor(1.0 / 3.6e9)),
    ],
    any_case: &[
        ("wh", Unit::Factor(1e-3)),
        ("kwh", ONE),
        ("kj", Unit::Factor(1.0 / 3.6e3)),
        ("j", Unit::Factor(1.0 / 3.6e6)),
    ],
    ambiguous: &[
        ("mwh", "MWh (megawatt hours) or mWh (milliwatt hours)"),
        ("mj", "MJ (megajoules) or mJ (millijoules)"),
    ],
};

const PRESSURE: Table = Table {
    exact: &[
        ("bar", ONE),
        ("mbar", Unit::Factor(1e-3)),
        ("Pa", Unit::Factor(1e-5)),
        ("hPa", Unit::Factor(1e-3)),
        ("kPa", Unit::Factor(1e-2)),
        ("MPa", Unit::Factor(10.0)),
        ("mPa", Unit::Factor(1e-8)),
    ],
    any_case: &[
        ("bar", ONE),
        ("psi", Unit::Factor(0.068_947_6)),
        ("atm", Unit::Factor(1.013_25)),
        ("pa", Unit::Factor(1e-5)),
        ("hpa", Unit::Factor(1e-3)),
        ("kpa", Unit::Factor(1e-2)),
    ],
    ambiguous: &[("mpa", "MPa (megapascal) or mPa (millipascal)")],
};

const TEMPERATURE: Table = Table {
    exact: &[],
    any_case: &[
        ("c", ONE),
        ("degc", ONE),
        ("°c", ONE),
        ("celsius", ONE),
        ("deg c", ONE),
        ("deg_c", ONE),
        ("f", Unit::Fahrenheit),
        ("degf", Unit::Fahrenheit),
        ("°f", Unit::Fahrenheit),
        ("fahrenheit", Unit::Fahrenheit),
        ("deg f", Unit::Fahrenheit),
        ("deg_f", Unit::Fahrenheit),
        ("k", Unit::Kelvin),
        ("kelvin", Unit::Kelvin),
    ],
    ambiguous: &[],
};

const ANGLE: Table = Table {
    exact: &[],
    any_case: &[
        ("deg", ONE),
        ("degree", ONE),
        ("degrees", ONE),
        ("°", ONE),
        ("rad", Unit::Factor(180.0 / std::f64::consts::PI)),
        ("radian", Unit::Factor(180.0 / std::f64::consts::PI)),
        ("radians", Unit::Factor(180.0 / std::f64::consts::PI)),
    ],
    ambiguous: &[],
};

const WIND_SPEED: Table = Table {
    exact: &[],
    any_case: &[
        ("m/s", ONE),
        ("ms", ONE),
        ("mps", ONE),
        ("m s-1", ONE),
        ("m/sec", ONE),
        ("km/h", Unit::Factor(1.0 / 3.6)),
        ("kmh", Unit::Factor(1.0 / 3.6)),
        ("kph", Unit::Factor(1.0 / 3.6)),
        ("km/hr", Unit::Factor(1.0 / 3.6)),
        ("mph", Unit::Factor(0.447_04)),
        ("kn", Unit::Factor(0.514_444)),
        ("kt", Unit::Factor(0.514_444)),
        ("kts", Unit::Factor(0.514_444)),
        ("knot", Unit::Factor(0.514_444)),
        ("knots", Unit::Factor(0.514_444)),
    ],
    ambiguous: &[],
};

const ROTOR_SPEED: Table = Table {
    exact: &[],
    any_case: &[
        ("rpm", ONE),
        ("r/min", ONE),
        ("1/min", ONE),
        ("rev/min", ONE),
        ("rad/s", Unit::Factor(60.0 / std::f64::consts::TAU)),
        ("hz", Unit::Factor(60.0)),
        ("rev/s", Unit::Factor(60.0)),
        ("rps", Unit::Factor(60.0)),
    ],
    ambiguous: &[],
};

const VIBRATION: Table = Table {
    exact: &[],
    any_case: &[
        ("m/s2", ONE),
        ("m/s^2", ONE),
        ("m/s²", ONE),
        ("mps2", ONE),
        ("g", Unit::Factor(9.806_65)),
        ("mm/s2", Unit::Factor(1e-3)),
        ("mm/s^2", Unit::Factor(1e-3)),
        ("mm/s²", Unit::Factor(1e-3)),
    ],
    ambiguous: &[],
};

const REACTIVE_POWER: Table = Table {
    exact: &[
        ("var", Unit::Factor(1e-3)),
        ("VAr", Unit::Factor(1e-3)),
        ("VAR", Unit::Factor(1e-3)),
        ("kvar", ONE),
        ("kVAr", ONE),
        ("kVAR", ONE),
        ("Mvar", Unit::Factor(1e3)),
        ("MVAr", Unit::Factor(1e3)),
        ("MVAR", Unit::Factor(1e3)),
    ],
    any_case: &[("kvar", ONE), ("var", Unit::Factor(1e-3))],
    ambiguous: &[("mvar", "Mvar (megavar) or mvar (millivar)")],
};

const VOLTAGE: Table = Table {
    exact: &[
        ("V", ONE),
        ("kV", Unit::Factor(1e3)),
        ("MV", Unit::Factor(1e6)),
        ("mV", Unit::Factor(1e-3)),
    ],
    any_case: &[
        ("v", ONE),
        ("volt", ONE),
        ("volts", ONE),
        ("kv", Unit::Factor(1e3)),
    ],
    ambiguous: &[("mv", "MV (megavolt) or mV (millivolt)")],
};

const CURRENT: Table = Table {
    exact: &[
        ("A", ONE),
        ("kA", Unit::Factor(1e3)),
        ("mA", Unit::Factor(1e-3)),
    ],
    any_case: &[
        ("a", ONE),
        ("amp", ONE),
        ("amps", ONE),
        ("ampere", ONE),
        ("ka", Unit::Factor(1e3)),
    ],
    ambiguous: &[("ma", "MA (megaampere) or mA (milliampere)")],
};

const FREQUENCY: Table = Table {
    exact: &[
        ("Hz", ONE),
        ("kHz", Unit::Factor(1e3)),
        ("MHz", Unit::Factor(1e6)),
        ("mHz", Unit::Factor(1e-3)),
    ],
    any_case: &[("hz", ONE), ("khz", Unit::Factor(1e3))],
    ambiguous: &[("mhz", "MHz (megahertz) or mHz (millihertz)")],
};

fn table(metric: Metric) -> &'static Table {
    match metric {
        Metric::WindSpeed => &WIND_SPEED,
        Metric::WindDirection
        | Metric::RelativeWindDirection
        | Metric::PitchAngle
        | Metric::YawAngle
        | Metric::TowerLean
        | Metric::Latitude
        | Metric::Longitude => &ANGLE,
        Metric::RotorSpeed => &ROTOR_SPEED,
        Metric::Power => &POWER,
        Metric::Energy => &ENERGY,
        Metric::NacelleTemperature
        | Metric::GearboxTemperature
        | Metric::GeneratorTemperature
        | Metric::AmbientTemperature => &TEMPERATURE,
        Metric::Vibration => &VIBRATION,
        Metric::OilPressure | Metric::BrakePressure => &PRESSURE,
        Metric::ReactivePower => &REACTIVE_POWER,
        Metric::Voltage => &VOLTAGE,
        Metric::Current => &CURRENT,
        Metric::Frequency => &FREQUENCY,
    }
}

/// One hour in ms: the interval assumed for an energy per interval without one.
pub const HOUR_MS: i64 = 3_600_000;

/// Converts `value` in `unit` to the canonical unit of `metric`. An energy
/// per interval given for power needs `interval_ms`, the reading's
/// interval; without it the interval is taken as one hour ([`Conversion::Assumed`]).
pub fn to_canonical(
    metric: Metric,
    value: f64,
    unit: &str,
    interval_ms: Option<i64>,
) -> Result<(f64, Conversion), String> {
    let u = unit.trim();
    let t = table(metric);
    let lower = u.to_lowercase();
    let found = t
        .exact
        .iter()
        .find(|(s, _)| *s == u)
        .or_else(|| t.any_case.iter().find(|(s, _)| *s == lower))
        .map(|(_, unit)| *unit);
    let Some(found) = found else {
        if let Some((_, readings)) = t.ambiguous.iter().find(|(s, _)| *s == lower) {
            return Err(format!(
                "unit {u:?} of {metric} is ambiguous: write {readings}; SI prefixes are case-sensitive"
            ));
        }
        return Err(format!(
            "unit {unit:?} is not a unit of {metric} (canonical unit {})",
            metric.canonical_unit()
        ));
    };
    let canonical = metric.canonical_unit();
    let (v, c) = match found {
        Unit::Factor(1.0) => (value, Conversion::None),
        Unit::Factor(f) => (value * f, Conversion::Converted),
        Unit::Fahrenheit => ((value - 32.0) * 5.0 / 9.0, Conversion::Converted),
        Unit::Kelvin => (value - 273.15, Conversion::Converted),
        Unit::PerInterval(f) => match interval_ms.filter(|i| *i > 0) {
            Some(i) => (value * f * HOUR_MS as f64 / i as f64, Conversion::Converted),
            None => (value * f, Conversion::Assumed),
        },
    };
    if !v.is_finite() {
        return Err(format!(
            "{metric} {value} {u} is {v} in {canonical}: not a finite value"
        ));
    }
    Ok((v, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    fn to(metric: Metric, v: f64, u: &str) -> f64 {
        to_canonical(metric, v, u, None).unwrap().0
    }

    #[test]
    fn watts_become_kilowatts() {
        let (v, c) = to_canonical(Metric::Power, 1250.0, "W", None).unwrap();
        assert!(close(v, 1.25));
        assert_eq!(c, Conversion::Converted);
        assert_eq!(to(Metric::Power, 2.0, "watts"), 0.002);
        assert_eq!(
            to_canonical(Metric::Power, 3.0, "kW", None).unwrap(),
            (3.0, Conversion::None)
        );
        assert_eq!(to(Metric::Power, 3.0, "KW"), 3.0);
        assert_eq!(to(Metric::Power, 2.0, "MW"), 2000.0);
        assert!(close(to(Metric::Power, 2.0, "mW"), 2e-6));
    }

    #[test]
    fn energy_per_interval_is_average_power_over_the_interval() {
        // A 15-minute meter's 0.5 kWh is 2 kW.
        let (v, c) = to_canonical(Metric::Power, 0.5, "kWh", Some(900_000)).unwrap();
        assert!(close(v, 2.0));
        assert_eq!(c, Conversion::Converted);
        // Hourly: kWh is kW.
        assert!(close(
            to_canonical(Metric::Power, 0.5, "kWh", Some(HOUR_MS))
                .unwrap()
                .0,
            0.5
        ));
        // Unknown interval: taken as hourly, and said so.
        assert_eq!(
            to_canonical(Metric::Power, 0.5, "kWh", None).unwrap(),
            (0.5, Conversion::Assumed)
        );
        assert!(close(
            to_canonical(Metric::Power, 250.0, "Wh", Some(300_000))
                .unwrap()
                .0,
            3.0
        ));
    }

    #[test]
    fn si_prefixes_are_case_sensitive() {
        assert!(close(to(Metric::Energy, 3.6, "MJ"), 1.0));
        assert!(close(to(Metric::Energy, 3.6e9, "mJ"), 1.0));
        assert!(close(to(Metric::OilPressure, 1.0, "MPa"), 10.0));
        assert!(close(to(Metric::OilPressure, 1e8, "mPa"), 1.0));
        assert!(close(to(Metric::ReactivePower, 2.0, "MVAr"), 2000.0));
        assert!(close(to(Metric::Voltage, 20.0, "kV"), 20_000.0));
        for (metric, u) in [
            (Metric::Energy, "mj"),
            (Metric::OilPressure, "mpa"),
            (Metric::Power, "mw"),
            (Metric::Voltage, "mv"),
        ] {
            let err = to_canonical(metric, 1.0, u, None).unwrap_err();
            assert!(
                err.contains("ambiguous") && err.contains("case-sensitive"),
                "{err}"
            );
        }
    }

    #[test]
    fn temperatures_and_pressures() {
        assert!(close(to(Metric::GearboxTemperature, 212.0, "degF"), 100.0));
        assert!(close(to(Metric::GearboxTemperature, 300.0, "K"), 26.85));
        assert!(close(to(Metric::AmbientTemperature, 0.0, "K"), -273.15));
        assert!(close(to(Metric::OilPressure, 100.0, "psi"), 6.89476));
        assert!(close(to(Metric::OilPressure, 1013.25, "hPa"), 1.01325));
        assert!(close(to(Metric::WindSpeed, 36.0, "km/h"), 10.0));
        assert!(close(to(Metric::Vibration, 1.0, "g"), 9.80665));
        assert!(close(
            to(Metric::RelativeWindDirection, 1.0, "rad"),
            57.29577951308232
        ));
        assert!(close(to(Metric::Frequency, 50.0, "Hz"), 50.0));
        assert!(close(to(Metric::Current, 1500.0, "mA"), 1.5));
    }

    #[test]
    fn values_that_become_infinite_are_refused() {
        let err = to_canonical(Metric::WindDirection, 1e308, "rad", None).unwrap_err();
        assert!(err.contains("not a finite value"), "{err}");
        assert!(to_canonical(Metric::Power, 1e308, "MW", None).is_err());
        assert!(to_canonical(Metric::Power, 1e308, "kWh", Some(1)).is_err());
    }

    #[test]
    fn wrong_units_are_named() {
        let err = to_canonical(Metric::Power, 1.0, "degC", None).unwrap_err();
        assert!(
            err.contains("\"degC\"") && err.contains("power") && err.contains("kW"),
            "{err}"
        );
        assert!(to_canonical(Metric::WindSpeed, 1.0, "furlongs/fortnight", None).is_err());
    }
}
