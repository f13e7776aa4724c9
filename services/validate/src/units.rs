//! Unit standardisation: every metric has one canonical unit, and each known
//! spelling of another unit has a conversion to it.
//!
//! Unknown units are an error rather than a guess: a value in an unexpected
//! unit is exactly the kind of data that silently corrupts dashboards.

use gale_model::Metric;

/// What happened to a value on its way to the canonical unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Conversion {
    /// Already canonical (or a different spelling of it).
    None,
    /// Converted from the named unit.
    Converted,
}

/// Converts `value` in `unit` to the canonical unit of `metric`.
pub fn to_canonical(metric: Metric, value: f64, unit: &str) -> Result<(f64, Conversion), String> {
    let u = unit.trim();
    let lower = u.to_ascii_lowercase();
    let lower = lower.as_str();
    use Conversion::*;
    let same = |v: f64| Ok((v, None));
    let conv = |v: f64| Ok((v, Converted));
    match metric {
        Metric::WindSpeed => match lower {
            "m/s" | "ms" | "mps" | "m s-1" | "m/sec" => same(value),
            "km/h" | "kmh" | "kph" | "km/hr" => conv(value / 3.6),
            "mph" => conv(value * 0.447_04),
            "kn" | "kt" | "kts" | "knot" | "knots" => conv(value * 0.514_444),
            _ => unknown(metric, u),
        },
        Metric::WindDirection
        | Metric::PitchAngle
        | Metric::YawAngle
        | Metric::TowerLean
        | Metric::Latitude
        | Metric::Longitude => match lower {
            "deg" | "degree" | "degrees" | "°" => same(value),
            "rad" | "radian" | "radians" => conv(value.to_degrees()),
            _ => unknown(metric, u),
        },
        Metric::RotorSpeed => match lower {
            "rpm" | "r/min" | "1/min" | "rev/min" => same(value),
            "rad/s" => conv(value * 60.0 / std::f64::consts::TAU),
            "hz" | "rev/s" | "rps" => conv(value * 60.0),
            _ => unknown(metric, u),
        },
        Metric::Power => match u {
            // Case matters for the SI prefix: MW is mega, mW is milli.
            "MW" => conv(value * 1000.0),
            "mW" => conv(value / 1_000_000.0),
            _ => match lower {
                "kw" => same(value),
                "w" | "watt" | "watts" => conv(value / 1000.0),
                // Hourly interval readings in kWh are average kW over the hour.
                "kwh" => conv(value),
                _ => unknown(metric, u),
            },
        },
        Metric::Energy => match u {
            "MWh" => conv(value * 1000.0),
            _ => match lower {
                "kwh" => same(value),
                "wh" => conv(value / 1000.0),
                "j" => conv(value / 3_600_000.0),
                "mj" => conv(value / 3.6),
                _ => unknown(metric, u),
            },
        },
        Metric::NacelleTemperature | Metric::GearboxTemperature | Metric::GeneratorTemperature => {
            match lower {
                "c" | "degc" | "°c" | "celsius" | "deg c" | "deg_c" => same(value),
                "f" | "degf" | "°f" | "fahrenheit" | "deg f" | "deg_f" => {
                    conv((value - 32.0) * 5.0 / 9.0)
                }
                "k" | "kelvin" => conv(value - 273.15),
                _ => unknown(metric, u),
            }
        }
        Metric::Vibration => match lower {
            "m/s2" | "m/s^2" | "m/s²" | "mps2" => same(value),
            "g" => conv(value * 9.806_65),
            "mm/s2" | "mm/s^2" | "mm/s²" => conv(value / 1000.0),
            _ => unknown(metric, u),
        },
        Metric::OilPressure | Metric::BrakePressure => match lower {
            "bar" => same(value),
            "psi" => conv(value * 0.068_947_6),
            "kpa" => conv(value / 100.0),
            "mpa" => conv(value * 10.0),
            "pa" => conv(value / 100_000.0),
            "mbar" => conv(value / 1000.0),
            "atm" => conv(value * 1.013_25),
            _ => unknown(metric, u),
        },
    }
}

fn unknown(metric: Metric, unit: &str) -> Result<(f64, Conversion), String> {
    Err(format!(
        "unit {unit:?} is not a unit of {metric} (canonical unit {})",
        metric.canonical_unit()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn watts_become_kilowatts() {
        let (v, c) = to_canonical(Metric::Power, 1250.0, "W").unwrap();
        assert!(close(v, 1.25));
        assert_eq!(c, Conversion::Converted);
        assert_eq!(to_canonical(Metric::Power, 2.0, "watts").unwrap().0, 0.002);
        assert_eq!(
            to_canonical(Metric::Power, 3.0, "kW").unwrap(),
            (3.0, Conversion::None)
        );
        assert_eq!(to_canonical(Metric::Power, 2.0, "MW").unwrap().0, 2000.0);
        assert_eq!(
            to_canonical(Metric::Power, 2.0, "kWh").unwrap(),
            (2.0, Conversion::Converted)
        );
    }

    #[test]
    fn temperatures_and_pressures() {
        assert!(close(
            to_canonical(Metric::GearboxTemperature, 212.0, "degF")
                .unwrap()
                .0,
            100.0
        ));
        assert!(close(
            to_canonical(Metric::GearboxTemperature, 300.0, "K")
                .unwrap()
                .0,
            26.85
        ));
        assert!(close(
            to_canonical(Metric::OilPressure, 100.0, "psi").unwrap().0,
            6.89476
        ));
        assert!(close(
            to_canonical(Metric::WindSpeed, 36.0, "km/h").unwrap().0,
            10.0
        ));
        assert!(close(
            to_canonical(Metric::Vibration, 1.0, "g").unwrap().0,
            9.80665
        ));
    }

    #[test]
    fn wrong_units_are_named() {
        let err = to_canonical(Metric::Power, 1.0, "degC").unwrap_err();
        assert!(
            err.contains("\"degC\"") && err.contains("power") && err.contains("kW"),
            "{err}"
        );
        assert!(to_canonical(Metric::WindSpeed, 1.0, "furlongs/fortnight").is_err());
    }
}
