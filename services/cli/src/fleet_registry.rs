//! The simulated fleet as asset-registry files for `gale assets import`:
//! sites, one turbine model per rated power with the simulator's own power
//! curve, and the assets with their model. `make demo` imports them, so
//! enrich finds a curve for every simulated turbine and detect-faults can
//! judge underperformance against it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::simulate::{power_curve, Fleet};

/// Model id of simulated turbines rated `kw`.
pub fn model_id(kw: f64) -> String {
    format!("SIM-{kw:.0}")
}

/// Writes `sites.csv`, `models.csv`, `curves.csv` and `assets.csv` into
/// `dir`; returns their paths in import order.
pub fn write(fleet: &Fleet, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut sites: BTreeMap<&str, (f64, f64, usize)> = BTreeMap::new();
    for t in &fleet.turbines {
        let e = sites.entry(t.site.as_str()).or_default();
        e.0 += t.lat;
        e.1 += t.lon;
        e.2 += 1;
    }
    for m in &fleet.meters {
        sites.entry(m.site.as_str()).or_default();
    }
    let mut text = String::from("site_id,name,time_zone,latitude,longitude\n");
    for (id, (lat, lon, n)) in &sites {
        let (lat, lon) = if *n > 0 {
            (
                format!("{:.4}", lat / *n as f64),
                format!("{:.4}", lon / *n as f64),
            )
        } else {
            (String::new(), String::new())
        };
        let _ = writeln!(text, "{id},Simulated {id},Europe/Copenhagen,{lat},{lon}");
    }
    let mut ratings: Vec<f64> = fleet.turbines.iter().map(|t| t.rated_kw).collect();
    ratings.sort_by(f64::total_cmp);
    ratings.dedup();
    let mut models = String::from(
        "model_id,manufacturer,rated_power_kw,cut_in_wind_speed_ms,rated_wind_speed_ms,cut_out_wind_speed_ms\n",
    );
    let mut curves = String::from("model_id,wind_speed_ms,power_kw\n");
    for kw in &ratings {
        let id = model_id(*kw);
        let _ = writeln!(models, "{id},Gale simulator,{kw},3,12,25");
        // Quarter-metre steps keep linear interpolation of the cubic within
        // 0.5 % of the simulator's curve.
        for i in 12..=48 {
            let ws = f64::from(i) * 0.25;
            let _ = writeln!(curves, "{id},{ws},{:.3}", power_curve(ws, *kw));
        }
    }
    let mut assets =
        String::from("asset_id,kind,site_id,model_id,rated_power_kw,latitude,longitude,vacant\n");
    for t in &fleet.turbines {
        let _ = writeln!(
            assets,
            "{},turbine,{},{},{},{:.5},{:.5},",
            t.id,
            t.site,
            model_id(t.rated_kw),
            t.rated_kw,
            t.lat,
            t.lon
        );
    }
    for m in &fleet.meters {
        // Vacant properties report 0 kW by design: not a ZERO_VALUE fault.
        let _ = writeln!(assets, "{},meter,{},,,,,{}", m.id, m.site, m.is_vacant());
    }
    let mut paths = Vec::new();
    for (name, body) in [
        ("sites.csv", text),
        ("models.csv", models),
        ("curves.csv", curves),
        ("assets.csv", assets),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body)?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_turbine_has_a_model_with_the_simulators_curve() {
        let fleet = Fleet::generate(6, 4, 42);
        let dir = tempfile::tempdir().unwrap();
        let paths = write(&fleet, dir.path()).unwrap();
        let set = gale_assets::parse_files(&paths, None).expect("the files import");
        assert_eq!(set.assets.len(), 10);
        let curves = std::fs::read_to_string(dir.path().join("curves.csv")).unwrap();
        for t in &fleet.turbines {
            let line = format!("{},12,{:.3}", model_id(t.rated_kw), t.rated_kw);
            assert!(curves.contains(&line), "{line}");
        }
    }
}
