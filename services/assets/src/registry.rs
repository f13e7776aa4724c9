//! The registry as the stages see it: plain values, loaded whole, looked up
//! in memory. A reading needs its asset's site (time zone), model (power
//! curve) and per-asset values on every record, so they are joined here
//! once per load rather than per reading.

use std::collections::HashMap;

use chrono::NaiveDate;
use gale_model::AssetKind;
use serde::{Deserialize, Serialize};

/// A wind farm or grid area: where assets are and which clock they keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    /// Key, as in `gale_assets.site_id` and readings' `site_id`.
    pub site_id: String,
    /// Display name.
    pub name: Option<String>,
    /// IANA time zone name (`Europe/Berlin`): local days and hours of the site.
    pub time_zone: String,
    /// Degrees north, WGS84.
    pub latitude: Option<f64>,
    /// Degrees east, WGS84.
    pub longitude: Option<f64>,
}

impl Site {
    /// A site with only its id (time zone UTC).
    pub fn new(site_id: impl Into<String>) -> Self {
        Site {
            site_id: site_id.into(),
            name: None,
            time_zone: "UTC".into(),
            latitude: None,
            longitude: None,
        }
    }
}

/// One point of a power curve: the power a healthy turbine delivers at a
/// wind speed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Hub-height wind speed, m/s.
    pub wind_speed_ms: f64,
    /// Electrical power, kW.
    pub power_kw: f64,
}

/// A turbine type and its power curve, shared by every turbine of the type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurbineModel {
    /// Key, as in `gale_assets.model_id`.
    pub model_id: String,
    /// Maker, for people.
    pub manufacturer: Option<String>,
    /// Nameplate power, kW.
    pub rated_power_kw: Option<f64>,
    /// Wind speed where production starts, m/s.
    pub cut_in_wind_speed_ms: Option<f64>,
    /// Wind speed where rated power is reached, m/s.
    pub rated_wind_speed_ms: Option<f64>,
    /// Wind speed where the turbine shuts down, m/s.
    pub cut_out_wind_speed_ms: Option<f64>,
    /// Rotor diameter, m.
    pub rotor_diameter_m: Option<f64>,
    /// Hub height, m.
    pub hub_height_m: Option<f64>,
    /// Power curve, sorted by wind speed (empty when none is registered).
    pub curve: Vec<CurvePoint>,
}

impl TurbineModel {
    /// A model with only its id.
    pub fn new(model_id: impl Into<String>) -> Self {
        TurbineModel {
            model_id: model_id.into(),
            manufacturer: None,
            rated_power_kw: None,
            cut_in_wind_speed_ms: None,
            rated_wind_speed_ms: None,
            cut_out_wind_speed_ms: None,
            rotor_diameter_m: None,
            hub_height_m: None,
            curve: Vec::new(),
        }
    }
}

/// A turbine or a meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asset {
    /// Key, as readings carry it.
    pub asset_id: String,
    /// Turbine or meter (lower case in JSON, as in the table).
    #[serde(with = "kind_text")]
    pub kind: AssetKind,
    /// Wind farm or grid area ([`Site`]); may name a site not registered.
    pub site_id: Option<String>,
    /// Turbine type ([`TurbineModel`]); turbines only.
    pub model_id: Option<String>,
    /// Degrees north, WGS84.
    pub latitude: Option<f64>,
    /// Degrees east, WGS84.
    pub longitude: Option<f64>,
    /// Capacity as validate's original table has it, kW.
    pub capacity_kw: Option<f64>,
    /// Nameplate power of this turbine when it differs from (or has no) model, kW.
    pub rated_power_kw: Option<f64>,
    /// Hub height of this turbine when it differs from (or has no) model, m.
    pub hub_height_m: Option<f64>,
    /// Rotor diameter of this turbine when it differs from (or has no) model, m.
    pub rotor_diameter_m: Option<f64>,
    /// Contracted connection capacity of a meter's premises, kW.
    pub contracted_capacity_kw: Option<f64>,
    /// Day the asset went into service.
    pub commissioned_on: Option<NaiveDate>,
    /// A meter's neighbourhood or distribution feeder.
    pub feeder_id: Option<String>,
    /// A meter of a vacant property: zero consumption is expected, not a fault.
    pub vacant: bool,
}

impl Asset {
    /// An asset with only its id and kind.
    pub fn new(asset_id: impl Into<String>, kind: AssetKind) -> Self {
        Asset {
            asset_id: asset_id.into(),
            kind,
            site_id: None,
            model_id: None,
            latitude: None,
            longitude: None,
            capacity_kw: None,
            rated_power_kw: None,
            hub_height_m: None,
            rotor_diameter_m: None,
            contracted_capacity_kw: None,
            commissioned_on: None,
            feeder_id: None,
            vacant: false,
        }
    }
}

/// Everything registered, as of one consistent read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Sites by id.
    pub sites: HashMap<String, Site>,
    /// Turbine models by id.
    pub models: HashMap<String, TurbineModel>,
    /// Turbines and meters by id.
    pub assets: HashMap<String, Asset>,
}

impl Registry {
    /// The asset with this id.
    pub fn asset(&self, asset_id: &str) -> Option<&Asset> {
        self.assets.get(asset_id)
    }

    /// The asset's site, when it names one that is registered.
    pub fn site_of(&self, asset: &Asset) -> Option<&Site> {
        self.sites.get(asset.site_id.as_deref()?)
    }

    /// The asset's turbine model, when it names one that is registered.
    pub fn model_of(&self, asset: &Asset) -> Option<&TurbineModel> {
        self.models.get(asset.model_id.as_deref()?)
    }

    /// The asset's nameplate power: its own value, else its model's, else
    /// its `capacity_kw`.
    pub fn rated_power_kw(&self, asset: &Asset) -> Option<f64> {
        asset
            .rated_power_kw
            .or_else(|| self.model_of(asset).and_then(|m| m.rated_power_kw))
            .or(asset.capacity_kw)
    }

    /// The asset's hub height: its own value, else its model's.
    pub fn hub_height_m(&self, asset: &Asset) -> Option<f64> {
        asset
            .hub_height_m
            .or_else(|| self.model_of(asset).and_then(|m| m.hub_height_m))
    }

    /// The asset's rotor diameter: its own value, else its model's.
    pub fn rotor_diameter_m(&self, asset: &Asset) -> Option<f64> {
        asset
            .rotor_diameter_m
            .or_else(|| self.model_of(asset).and_then(|m| m.rotor_diameter_m))
    }

    /// Number of turbines and meters.
    pub fn len(&self) -> usize {
        self.assets.len()
    }

    /// True when no asset is registered.
    pub fn is_empty(&self) -> bool {
        self.assets.is_empty()
    }
}

/// `AssetKind` as the table spells it (`turbine`, `meter`); reading accepts
/// what `AssetKind::from_str` does.
mod kind_text {
    use gale_model::AssetKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kind: &AssetKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AssetKind, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rated_power_falls_back_to_model_then_capacity() {
        let mut registry = Registry::default();
        let mut model = TurbineModel::new("M");
        model.rated_power_kw = Some(2000.0);
        model.hub_height_m = Some(80.0);
        registry.models.insert("M".into(), model);
        let mut a = Asset::new("T1", AssetKind::Turbine);
        a.capacity_kw = Some(1500.0);
        assert_eq!(registry.rated_power_kw(&a), Some(1500.0));
        a.model_id = Some("M".into());
        assert_eq!(registry.rated_power_kw(&a), Some(2000.0));
        assert_eq!(registry.hub_height_m(&a), Some(80.0));
        a.rated_power_kw = Some(2100.0);
        assert_eq!(registry.rated_power_kw(&a), Some(2100.0));
        a.model_id = Some("unknown".into());
        assert!(registry.model_of(&a).is_none());
        assert!(registry.site_of(&a).is_none());
    }

    #[test]
    fn kind_is_lower_case_in_json() {
        let a = Asset::new("M1", AssetKind::Meter);
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains(r#""kind":"meter""#), "{json}");
        let back: Asset = serde_json::from_str(&json.replace("meter", "METER")).unwrap();
        assert_eq!(back, a);
    }
}
