//! Expected power from a power curve, with the air-density normalisation of
//! IEC 61400-12-1.
//!
//! A power curve is measured at standard air density (1.225 kg/m³). Cold
//! air is denser and carries more power at the same speed, so comparing a
//! reading with the curve at its raw wind speed calls a turbine
//! underperforming in summer and overperforming in winter. The standard
//! normalises the wind speed of a pitch-regulated turbine instead:
//! `V_n = V · (ρ / ρ₀)^(1/3)`, with `ρ = B / (R₀ · T)` (B air pressure in Pa,
//! R₀ = 287.05 J/(kg·K), T in K). Readings carry temperature but not
//! pressure, so B is the standard atmosphere's pressure at the hub's height
//! above sea level (site elevation is taken as sea level until the registry
//! has one): `B = 101325 · (1 − 2.25577·10⁻⁵ · h)^5.25588`.

use gale_assets::CurvePoint;

/// Standard air density of power curves, kg/m³.
pub const STANDARD_DENSITY: f64 = 1.225;
/// Gas constant of dry air, J/(kg·K).
pub const R_DRY_AIR: f64 = 287.05;

/// Air pressure of the standard atmosphere at `height_m` above sea level, Pa.
pub fn pressure_at(height_m: f64) -> f64 {
    101_325.0 * (1.0 - 2.25577e-5 * height_m).powf(5.25588)
}

/// Air density at `temperature_c` and `height_m` above sea level, kg/m³.
pub fn air_density(temperature_c: f64, height_m: f64) -> f64 {
    pressure_at(height_m) / (R_DRY_AIR * (temperature_c + 273.15))
}

/// Wind speed normalised to standard density (IEC 61400-12-1, pitch-regulated).
pub fn normalized_wind_speed(wind_speed_ms: f64, density: f64) -> f64 {
    wind_speed_ms * (density / STANDARD_DENSITY).cbrt()
}

/// What a model's curve needs: its points and, when known, cut-in and cut-out.
#[derive(Debug, Clone, Copy)]
pub struct Curve<'a> {
    /// Points sorted by wind speed.
    pub points: &'a [CurvePoint],
    /// Below it the turbine does not produce.
    pub cut_in_ms: Option<f64>,
    /// Above it the turbine is stopped.
    pub cut_out_ms: Option<f64>,
}

impl Curve<'_> {
    /// Power (kW) at `wind_speed_ms`: linear between the two points around
    /// it; 0 below cut-in (or the first point) and above cut-out (or, when
    /// no cut-out is registered, the last point); the last point's power
    /// between the last point and a registered cut-out. `None` without points.
    pub fn power_at(&self, wind_speed_ms: f64) -> Option<f64> {
        let (first, last) = (self.points.first()?, self.points.last()?);
        let v = wind_speed_ms;
        if !v.is_finite() || self.cut_in_ms.is_some_and(|c| v < c) || v < first.wind_speed_ms {
            return Some(0.0);
        }
        let cut_out = self.cut_out_ms.unwrap_or(last.wind_speed_ms);
        if v > cut_out {
            return Some(0.0);
        }
        if v >= last.wind_speed_ms {
            return Some(last.power_kw);
        }
        // First point strictly above v; v is at or above its predecessor.
        let i = self.points.partition_point(|p| p.wind_speed_ms <= v);
        let (a, b) = (self.points[i - 1], self.points[i]);
        let t = (v - a.wind_speed_ms) / (b.wind_speed_ms - a.wind_speed_ms);
        Some(a.power_kw + t * (b.power_kw - a.power_kw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(p: &[(f64, f64)]) -> Vec<CurvePoint> {
        p.iter()
            .map(|&(wind_speed_ms, power_kw)| CurvePoint {
                wind_speed_ms,
                power_kw,
            })
            .collect()
    }

    #[test]
    fn interpolates_linearly_between_points_and_is_zero_outside_cut_in_and_cut_out() {
        let p = pts(&[(3.0, 0.0), (5.0, 200.0), (8.0, 800.0), (12.0, 2000.0)]);
        let c = Curve {
            points: &p,
            cut_in_ms: Some(3.0),
            cut_out_ms: Some(25.0),
        };
        assert_eq!(c.power_at(2.99), Some(0.0));
        assert_eq!(c.power_at(3.0), Some(0.0));
        assert_eq!(c.power_at(4.0), Some(100.0));
        assert_eq!(c.power_at(5.0), Some(200.0));
        assert_eq!(c.power_at(6.5), Some(500.0));
        assert_eq!(c.power_at(12.0), Some(2000.0));
        assert_eq!(c.power_at(20.0), Some(2000.0), "rated up to cut-out");
        assert_eq!(c.power_at(25.0), Some(2000.0));
        assert_eq!(c.power_at(25.01), Some(0.0), "stopped above cut-out");
        assert_eq!(c.power_at(f64::NAN), Some(0.0));
    }

    #[test]
    fn without_cut_in_or_out_the_curve_ends_bound_it() {
        let p = pts(&[(4.0, 50.0), (10.0, 1000.0)]);
        let c = Curve {
            points: &p,
            cut_in_ms: None,
            cut_out_ms: None,
        };
        assert_eq!(c.power_at(3.9), Some(0.0));
        assert_eq!(c.power_at(4.0), Some(50.0));
        assert_eq!(c.power_at(10.0), Some(1000.0));
        assert_eq!(c.power_at(10.1), Some(0.0));
        let empty = Curve {
            points: &[],
            cut_in_ms: None,
            cut_out_ms: None,
        };
        assert_eq!(empty.power_at(8.0), None);
    }

    #[test]
    fn density_and_normalisation_follow_iec_61400_12_1() {
        // 15 °C at sea level: the standard atmosphere, 1.225 kg/m³.
        let rho = air_density(15.0, 0.0);
        assert!((rho - 1.2250).abs() < 5e-4, "{rho}");
        assert!((normalized_wind_speed(10.0, rho) - 10.0).abs() < 2e-3);
        // Cold air is denser: the same wind carries more power, so the
        // normalised speed is higher.
        let cold = air_density(-10.0, 80.0);
        assert!(cold > 1.3 && cold < 1.35, "{cold}");
        let v = normalized_wind_speed(10.0, cold);
        assert!((v - 10.0 * (cold / 1.225).cbrt()).abs() < 1e-12);
        assert!(v > 10.0);
        // Pressure falls with height: 100 m is about 1.2 % lower.
        assert!((pressure_at(100.0) / 101_325.0 - 0.98820).abs() < 1e-4);
    }
}
