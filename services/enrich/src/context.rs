//! What enrich adds to a reading, as one pure function of the reading and a
//! registry snapshot: no Kafka, no database, easy to test and to replay.
//!
//! Missing context never drops a reading: an asset validate accepted but
//! this registry lacks (or a turbine without model, curve or wind speed) is
//! passed on with what is known and a `context_flags` entry saying what is
//! not, so a fleet can be onboarded piece by piece.

use gale_assets::Registry;
use gale_model::{context, AssetKind, EnrichedReading, ScoredReading};

use crate::curve::{air_density, normalized_wind_speed, Curve};

/// The enriched form of `reading` under `registry`.
pub fn enrich(reading: ScoredReading, registry: &Registry) -> EnrichedReading {
    let mut out = EnrichedReading::bare(reading);
    let flag = |out: &mut EnrichedReading, f: &str| out.context_flags.push(f.to_string());
    let Some(asset) = registry.asset(&out.reading.asset_id) else {
        flag(&mut out, context::NOT_IN_REGISTRY);
        return out;
    };
    let site = asset
        .site_id
        .as_ref()
        .or(out.reading.site_id.as_ref())
        .and_then(|s| registry.sites.get(s));
    match site {
        Some(site) => {
            out.site_name = site.name.clone();
            out.site_time_zone = Some(site.time_zone.clone());
            out.site_latitude_deg = site.latitude;
            out.site_longitude_deg = site.longitude;
        }
        None => flag(&mut out, context::NO_SITE),
    }
    let power = out.reading.power_kw;
    match out.reading.asset_kind {
        AssetKind::Meter => {
            out.contracted_capacity_kw = asset.contracted_capacity_kw;
            out.feeder_id = asset.feeder_id.clone();
            out.vacant = asset.vacant;
            out.rated_power_kw = asset.contracted_capacity_kw.or(asset.capacity_kw);
        }
        AssetKind::Turbine => {
            out.rated_power_kw = registry.rated_power_kw(asset);
            let model = registry.model_of(asset);
            if let Some(m) = model {
                out.model_id = Some(m.model_id.clone());
                out.cut_in_wind_speed_ms = m.cut_in_wind_speed_ms;
                out.rated_wind_speed_ms = m.rated_wind_speed_ms;
                out.cut_out_wind_speed_ms = m.cut_out_wind_speed_ms;
            } else {
                flag(&mut out, context::NO_MODEL);
            }
            let wind = out.reading.wind_speed_ms;
            if let Some(t) = out.reading.ambient_temperature_c {
                let height = registry.hub_height_m(asset).unwrap_or(0.0);
                out.air_density_kg_m3 = Some(air_density(t, height));
            } else {
                flag(&mut out, context::NO_TEMPERATURE);
            }
            out.normalized_wind_speed_ms = wind.map(|v| match out.air_density_kg_m3 {
                Some(rho) => normalized_wind_speed(v, rho),
                None => v,
            });
            match model.filter(|m| !m.curve.is_empty()) {
                None if model.is_some() => flag(&mut out, context::NO_POWER_CURVE),
                None => {}
                Some(m) => match out.normalized_wind_speed_ms {
                    None => flag(&mut out, context::NO_WIND_SPEED),
                    Some(v) => {
                        let curve = Curve {
                            points: &m.curve,
                            cut_in_ms: m.cut_in_wind_speed_ms,
                            cut_out_ms: m.cut_out_wind_speed_ms,
                        };
                        out.expected_power_kw = curve.power_at(v);
                        out.power_deficit_kw = out.expected_power_kw.zip(power).map(|(e, p)| e - p);
                    }
                },
            }
        }
    }
    match out.rated_power_kw.filter(|r| *r > 0.0) {
        Some(rated) => out.capacity_factor = power.map(|p| p / rated),
        None => flag(&mut out, context::NO_RATED_POWER),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_assets::{Asset, CurvePoint, Site, TurbineModel};

    fn registry() -> Registry {
        let mut r = Registry::default();
        let mut site = Site::new("S1");
        site.name = Some("North Farm".into());
        site.time_zone = "Europe/Berlin".into();
        site.latitude = Some(54.1);
        r.sites.insert("S1".into(), site);
        let mut m = TurbineModel::new("M2");
        m.rated_power_kw = Some(2000.0);
        m.cut_in_wind_speed_ms = Some(3.0);
        m.cut_out_wind_speed_ms = Some(25.0);
        m.hub_height_m = Some(80.0);
        m.curve = [(3.0, 0.0), (8.0, 800.0), (12.0, 2000.0)]
            .iter()
            .map(|&(wind_speed_ms, power_kw)| CurvePoint {
                wind_speed_ms,
                power_kw,
            })
            .collect();
        r.models.insert("M2".into(), m);
        let mut t = Asset::new("T1", AssetKind::Turbine);
        t.site_id = Some("S1".into());
        t.model_id = Some("M2".into());
        r.assets.insert("T1".into(), t);
        let mut bare = Asset::new("T2", AssetKind::Turbine);
        bare.model_id = Some("UNKNOWN".into());
        r.assets.insert("T2".into(), bare);
        let mut meter = Asset::new("M1", AssetKind::Meter);
        meter.site_id = Some("S1".into());
        meter.contracted_capacity_kw = Some(10.0);
        meter.feeder_id = Some("F7".into());
        meter.vacant = true;
        r.assets.insert("M1".into(), meter);
        r
    }

    fn turbine(id: &str, wind: Option<f64>, power: f64, temp: Option<f64>) -> ScoredReading {
        let mut r = ScoredReading::new("e", id, AssetKind::Turbine, 0);
        r.wind_speed_ms = wind;
        r.power_kw = Some(power);
        r.ambient_temperature_c = temp;
        r
    }

    #[test]
    fn a_turbine_gets_site_model_expected_power_deficit_and_capacity_factor() {
        let e = enrich(turbine("T1", Some(10.0), 1000.0, None), &registry());
        assert_eq!(e.site_name.as_deref(), Some("North Farm"));
        assert_eq!(e.site_time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(e.model_id.as_deref(), Some("M2"));
        assert_eq!(e.rated_power_kw, Some(2000.0));
        assert_eq!(e.expected_power_kw, Some(1400.0));
        assert_eq!(e.power_deficit_kw, Some(400.0));
        assert_eq!(e.capacity_factor, Some(0.5));
        assert_eq!(e.normalized_wind_speed_ms, Some(10.0));
        assert_eq!(e.context_flags, vec![context::NO_TEMPERATURE.to_string()]);
    }

    #[test]
    fn known_temperature_normalises_the_wind_speed_before_the_curve() {
        let e = enrich(turbine("T1", Some(10.0), 1000.0, Some(-10.0)), &registry());
        let rho = e.air_density_kg_m3.unwrap();
        assert!(rho > 1.225);
        let v = e.normalized_wind_speed_ms.unwrap();
        assert!((v - 10.0 * (rho / 1.225).cbrt()).abs() < 1e-12);
        assert!(e.expected_power_kw.unwrap() > 1400.0);
        assert!(e.context_flags.is_empty(), "{:?}", e.context_flags);
    }

    #[test]
    fn missing_context_is_flagged_never_fatal() {
        let r = registry();
        let e = enrich(turbine("T2", Some(10.0), 500.0, None), &r);
        assert_eq!(e.expected_power_kw, None);
        assert!(e.context_flags.contains(&context::NO_MODEL.to_string()));
        assert!(e.context_flags.contains(&context::NO_SITE.to_string()));
        assert!(e
            .context_flags
            .contains(&context::NO_RATED_POWER.to_string()));
        let e = enrich(turbine("NEW", Some(10.0), 500.0, None), &r);
        assert_eq!(e.context_flags, vec![context::NOT_IN_REGISTRY.to_string()]);
        assert_eq!(e.reading.power_kw, Some(500.0), "the reading is unchanged");
        let e = enrich(turbine("T1", None, 500.0, None), &r);
        assert!(e
            .context_flags
            .contains(&context::NO_WIND_SPEED.to_string()));
        assert_eq!(e.capacity_factor, Some(0.25));
    }

    #[test]
    fn a_meter_gets_its_feeder_capacity_and_vacancy() {
        let mut m = ScoredReading::new("e", "M1", AssetKind::Meter, 0);
        m.power_kw = Some(2.5);
        let e = enrich(m, &registry());
        assert_eq!(e.feeder_id.as_deref(), Some("F7"));
        assert_eq!(e.contracted_capacity_kw, Some(10.0));
        assert!(e.vacant);
        assert_eq!(e.capacity_factor, Some(0.25));
        assert_eq!(e.expected_power_kw, None);
    }
}
