//! The registry's tables in Postgres: one consistent read of all of them,
//! and an import written in one transaction.
//!
//! The schema belongs to pg-sink's migrations (`0003_asset_registry.sql`,
//! applied by pg-sink at start and by `gale db migrate`); this crate never
//! creates tables, and says which migration to run when they are missing.

use sqlx::{PgConnection, PgPool};

use crate::import::ImportSet;
use crate::plan::{diff, Plan, Writes};
use crate::registry::{Asset, CurvePoint, Registry, Site, TurbineModel};
use crate::AssetsError;

/// Advisory lock key serialising imports (`'gale-asset-import'` as bytes),
/// so two concurrent imports cannot interleave their compare and write.
const IMPORT_LOCK: i64 = 0x6761_6c65_6173_7365;

/// Turns a database failure into the crate's error: missing tables or
/// columns mean the migration has not run, constraint violations are the
/// data's fault, everything else is an outage.
pub(crate) fn db_error(e: sqlx::Error) -> AssetsError {
    if let sqlx::Error::Database(db) = &e {
        if let Some(code) = db.code() {
            if code == "42P01" || code == "42703" {
                return AssetsError::NotMigrated(db.message().to_string());
            }
            if code.starts_with("22") || code.starts_with("23") {
                return AssetsError::Rejected(format!("{} (SQLSTATE {code})", db.message()));
            }
        }
    }
    AssetsError::Database(e)
}

type SiteRow = (String, Option<String>, String, Option<f64>, Option<f64>);

#[derive(sqlx::FromRow)]
struct ModelRow {
    model_id: String,
    manufacturer: Option<String>,
    rated_power_kw: Option<f64>,
    cut_in_wind_speed_ms: Option<f64>,
    rated_wind_speed_ms: Option<f64>,
    cut_out_wind_speed_ms: Option<f64>,
    rotor_diameter_m: Option<f64>,
    hub_height_m: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct AssetRow {
    asset_id: String,
    kind: String,
    site_id: Option<String>,
    model_id: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    capacity_kw: Option<f64>,
    rated_power_kw: Option<f64>,
    hub_height_m: Option<f64>,
    rotor_diameter_m: Option<f64>,
    contracted_capacity_kw: Option<f64>,
    commissioned_on: Option<chrono::NaiveDate>,
    feeder_id: Option<String>,
    vacant: bool,
}

/// Loads the whole registry in one read-only snapshot (sites, models with
/// their curves sorted by wind speed, assets).
///
/// Fails with [`AssetsError::NotMigrated`] on a database without migration
/// `0003_asset_registry` (for instance one where only validate created its
/// six-column `gale_assets`).
pub async fn load(pool: &PgPool) -> Result<Registry, AssetsError> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let registry = load_in(&mut tx).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(registry)
}

pub(crate) async fn load_in(conn: &mut PgConnection) -> Result<Registry, AssetsError> {
    let sites: Vec<SiteRow> =
        sqlx::query_as("SELECT site_id, name, time_zone, latitude, longitude FROM gale_sites")
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
    let models: Vec<ModelRow> = sqlx::query_as(
        "SELECT model_id, manufacturer, rated_power_kw, cut_in_wind_speed_ms, rated_wind_speed_ms, \
         cut_out_wind_speed_ms, rotor_diameter_m, hub_height_m FROM gale_turbine_models",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    let points: Vec<(String, f64, f64)> = sqlx::query_as(
        "SELECT model_id, wind_speed_ms, power_kw FROM gale_power_curve_points \
         ORDER BY model_id, wind_speed_ms",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    let assets: Vec<AssetRow> = sqlx::query_as(
        "SELECT asset_id, kind, site_id, model_id, latitude, longitude, capacity_kw, rated_power_kw, \
         hub_height_m, rotor_diameter_m, contracted_capacity_kw, commissioned_on, feeder_id, vacant \
         FROM gale_assets",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;

    let mut registry = Registry::default();
    for (site_id, name, time_zone, latitude, longitude) in sites {
        registry.sites.insert(
            site_id.clone(),
            Site {
                site_id,
                name,
                time_zone,
                latitude,
                longitude,
            },
        );
    }
    for m in models {
        registry.models.insert(
            m.model_id.clone(),
            TurbineModel {
                model_id: m.model_id,
                manufacturer: m.manufacturer,
                rated_power_kw: m.rated_power_kw,
                cut_in_wind_speed_ms: m.cut_in_wind_speed_ms,
                rated_wind_speed_ms: m.rated_wind_speed_ms,
                cut_out_wind_speed_ms: m.cut_out_wind_speed_ms,
                rotor_diameter_m: m.rotor_diameter_m,
                hub_height_m: m.hub_height_m,
                curve: Vec::new(),
            },
        );
    }
    for (model_id, wind_speed_ms, power_kw) in points {
        if let Some(model) = registry.models.get_mut(&model_id) {
            model.curve.push(CurvePoint {
                wind_speed_ms,
                power_kw,
            });
        }
    }
    for row in assets {
        let kind = match row.kind.parse() {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(asset = %row.asset_id, error = %e, "skipping asset with unknown kind");
                continue;
            }
        };
        registry.assets.insert(
            row.asset_id.clone(),
            Asset {
                asset_id: row.asset_id,
                kind,
                site_id: row.site_id,
                model_id: row.model_id,
                latitude: row.latitude,
                longitude: row.longitude,
                capacity_kw: row.capacity_kw,
                rated_power_kw: row.rated_power_kw,
                hub_height_m: row.hub_height_m,
                rotor_diameter_m: row.rotor_diameter_m,
                contracted_capacity_kw: row.contracted_capacity_kw,
                commissioned_on: row.commissioned_on,
                feeder_id: row.feeder_id,
                vacant: row.vacant,
            },
        );
    }
    Ok(registry)
}

/// What importing `set` would change, without writing anything (a dry run).
pub async fn plan(pool: &PgPool, set: &ImportSet) -> Result<Plan, AssetsError> {
    let current = load(pool).await?;
    Ok(diff(&current, set)?)
}

/// Imports `set` in one transaction and returns what it changed: rows are
/// inserted or updated (only the fields the files have), and a model's
/// curve in the files replaces its stored curve. Nothing is written when
/// any row is invalid against what is stored.
pub async fn apply(pool: &PgPool, set: &ImportSet) -> Result<Plan, AssetsError> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(IMPORT_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let current = load_in(&mut tx).await?;
    let mut plan = diff(&current, set)?;
    write(&mut tx, &plan.writes).await?;
    tx.commit().await.map_err(db_error)?;
    plan.applied = true;
    Ok(plan)
}

async fn write(conn: &mut PgConnection, w: &Writes) -> Result<(), AssetsError> {
    if !w.sites.is_empty() {
        sqlx::query(
            "INSERT INTO gale_sites (site_id, name, time_zone, latitude, longitude) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[]) \
             ON CONFLICT (site_id) DO UPDATE SET name = EXCLUDED.name, time_zone = EXCLUDED.time_zone, \
             latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, updated_at = now()",
        )
        .bind(w.sites.iter().map(|s| s.site_id.clone()).collect::<Vec<_>>())
        .bind(w.sites.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
        .bind(w.sites.iter().map(|s| s.time_zone.clone()).collect::<Vec<_>>())
        .bind(w.sites.iter().map(|s| s.latitude).collect::<Vec<_>>())
        .bind(w.sites.iter().map(|s| s.longitude).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    if !w.models.is_empty() {
        let m = &w.models;
        let col = |f: fn(&TurbineModel) -> Option<f64>| m.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO gale_turbine_models (model_id, manufacturer, rated_power_kw, cut_in_wind_speed_ms, \
             rated_wind_speed_ms, cut_out_wind_speed_ms, rotor_diameter_m, hub_height_m) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::float8[], $4::float8[], $5::float8[], \
             $6::float8[], $7::float8[], $8::float8[]) \
             ON CONFLICT (model_id) DO UPDATE SET manufacturer = EXCLUDED.manufacturer, \
             rated_power_kw = EXCLUDED.rated_power_kw, cut_in_wind_speed_ms = EXCLUDED.cut_in_wind_speed_ms, \
             rated_wind_speed_ms = EXCLUDED.rated_wind_speed_ms, cut_out_wind_speed_ms = EXCLUDED.cut_out_wind_speed_ms, \
             rotor_diameter_m = EXCLUDED.rotor_diameter_m, hub_height_m = EXCLUDED.hub_height_m, updated_at = now()",
        )
        .bind(m.iter().map(|m| m.model_id.clone()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.manufacturer.clone()).collect::<Vec<_>>())
        .bind(col(|m| m.rated_power_kw))
        .bind(col(|m| m.cut_in_wind_speed_ms))
        .bind(col(|m| m.rated_wind_speed_ms))
        .bind(col(|m| m.cut_out_wind_speed_ms))
        .bind(col(|m| m.rotor_diameter_m))
        .bind(col(|m| m.hub_height_m))
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    if !w.curves.is_empty() {
        let models: Vec<String> = w.curves.iter().map(|(id, _)| id.clone()).collect();
        sqlx::query("DELETE FROM gale_power_curve_points WHERE model_id = ANY($1)")
            .bind(&models)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        let mut ids = Vec::new();
        let mut speeds = Vec::new();
        let mut powers = Vec::new();
        for (id, points) in &w.curves {
            for p in points {
                ids.push(id.clone());
                speeds.push(p.wind_speed_ms);
                powers.push(p.power_kw);
            }
        }
        sqlx::query(
            "INSERT INTO gale_power_curve_points (model_id, wind_speed_ms, power_kw) \
             SELECT * FROM UNNEST($1::text[], $2::float8[], $3::float8[])",
        )
        .bind(ids)
        .bind(speeds)
        .bind(powers)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        sqlx::query("UPDATE gale_turbine_models SET updated_at = now() WHERE model_id = ANY($1)")
            .bind(&models)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    if !w.assets.is_empty() {
        let a = &w.assets;
        let num = |f: fn(&Asset) -> Option<f64>| a.iter().map(f).collect::<Vec<_>>();
        let txt =
            |f: fn(&Asset) -> &Option<String>| a.iter().map(|x| f(x).clone()).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO gale_assets (asset_id, kind, site_id, model_id, latitude, longitude, capacity_kw, \
             rated_power_kw, hub_height_m, rotor_diameter_m, contracted_capacity_kw, commissioned_on, \
             feeder_id, vacant) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[], \
             $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::date[], $13::text[], \
             $14::bool[]) \
             ON CONFLICT (asset_id) DO UPDATE SET kind = EXCLUDED.kind, site_id = EXCLUDED.site_id, \
             model_id = EXCLUDED.model_id, latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, \
             capacity_kw = EXCLUDED.capacity_kw, rated_power_kw = EXCLUDED.rated_power_kw, \
             hub_height_m = EXCLUDED.hub_height_m, rotor_diameter_m = EXCLUDED.rotor_diameter_m, \
             contracted_capacity_kw = EXCLUDED.contracted_capacity_kw, commissioned_on = EXCLUDED.commissioned_on, \
             feeder_id = EXCLUDED.feeder_id, vacant = EXCLUDED.vacant, updated_at = now()",
        )
        .bind(a.iter().map(|x| x.asset_id.clone()).collect::<Vec<_>>())
        .bind(a.iter().map(|x| x.kind.as_str().to_string()).collect::<Vec<_>>())
        .bind(txt(|x| &x.site_id))
        .bind(txt(|x| &x.model_id))
        .bind(num(|x| x.latitude))
        .bind(num(|x| x.longitude))
        .bind(num(|x| x.capacity_kw))
        .bind(num(|x| x.rated_power_kw))
        .bind(num(|x| x.hub_height_m))
        .bind(num(|x| x.rotor_diameter_m))
        .bind(num(|x| x.contracted_capacity_kw))
        .bind(a.iter().map(|x| x.commissioned_on).collect::<Vec<_>>())
        .bind(txt(|x| &x.feeder_id))
        .bind(a.iter().map(|x| x.vacant).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    Ok(())
}
