-- The asset registry the enrich and detect-faults stages read (crate
-- gale-assets, `gale assets import`, docs/assets.md).
--
-- Expected power needs a turbine's power curve, local days need a site's
-- time zone, and the zero-consumption fault needs to know which meters are
-- vacant properties; none of that fits validate's six columns. Sites and
-- turbine models become tables of their own, and gale_assets gains the
-- per-asset columns. gale_assets keeps its original columns and meaning, so
-- validate (which reads asset_id, kind and site_id, and may have created the
-- table itself before this migration ran) works unchanged.

CREATE TABLE gale_sites (
    site_id    text PRIMARY KEY,
    name       text,
    -- IANA name (Europe/Berlin); gale-assets checks it on import.
    time_zone  text             NOT NULL DEFAULT 'UTC',
    latitude   double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude  double precision CHECK (longitude BETWEEN -180 AND 180),
    updated_at timestamptz      NOT NULL DEFAULT now()
);

CREATE TABLE gale_turbine_models (
    model_id              text PRIMARY KEY,
    manufacturer          text,
    rated_power_kw        double precision CHECK (rated_power_kw > 0),
    cut_in_wind_speed_ms  double precision CHECK (cut_in_wind_speed_ms > 0),
    rated_wind_speed_ms   double precision CHECK (rated_wind_speed_ms > 0),
    cut_out_wind_speed_ms double precision CHECK (cut_out_wind_speed_ms > 0),
    rotor_diameter_m      double precision CHECK (rotor_diameter_m > 0),
    hub_height_m          double precision CHECK (hub_height_m > 0),
    updated_at            timestamptz      NOT NULL DEFAULT now(),
    -- A NULL speed passes (unknown), so each pair is checked on its own.
    CHECK (cut_in_wind_speed_ms < rated_wind_speed_ms),
    CHECK (rated_wind_speed_ms < cut_out_wind_speed_ms),
    CHECK (cut_in_wind_speed_ms < cut_out_wind_speed_ms)
);

-- A model's power curve, one row per point; an import replaces all points
-- of a model at once.
CREATE TABLE gale_power_curve_points (
    model_id      text             NOT NULL REFERENCES gale_turbine_models ON DELETE CASCADE,
    wind_speed_ms double precision NOT NULL CHECK (wind_speed_ms >= 0),
    power_kw      double precision NOT NULL CHECK (power_kw >= 0),
    PRIMARY KEY (model_id, wind_speed_ms)
);

-- site_id deliberately has no foreign key: assets may name a site that is
-- not registered (validate's rows did before gale_sites existed).
ALTER TABLE gale_assets
    ADD COLUMN IF NOT EXISTS model_id               text REFERENCES gale_turbine_models,
    ADD COLUMN IF NOT EXISTS commissioned_on        date,
    -- A meter's neighbourhood or distribution feeder.
    ADD COLUMN IF NOT EXISTS feeder_id              text,
    ADD COLUMN IF NOT EXISTS contracted_capacity_kw double precision CHECK (contracted_capacity_kw > 0),
    -- Vacant-property whitelist: zero consumption is expected, not a fault.
    ADD COLUMN IF NOT EXISTS vacant                 boolean          NOT NULL DEFAULT false,
    -- Per-asset values, when they differ from the model or there is none.
    ADD COLUMN IF NOT EXISTS rated_power_kw         double precision CHECK (rated_power_kw > 0),
    ADD COLUMN IF NOT EXISTS hub_height_m           double precision CHECK (hub_height_m > 0),
    ADD COLUMN IF NOT EXISTS rotor_diameter_m       double precision CHECK (rotor_diameter_m > 0),
    ADD COLUMN IF NOT EXISTS updated_at             timestamptz      NOT NULL DEFAULT now();

CREATE INDEX IF NOT EXISTS gale_assets_site ON gale_assets (site_id);
CREATE INDEX IF NOT EXISTS gale_assets_model ON gale_assets (model_id);

-- For people who query with SQL: each turbine with its site and the
-- effective values (its own, else its model's), and each meter with its site.
CREATE VIEW gale_turbines AS
SELECT a.asset_id,
       a.site_id,
       s.name                                                AS site_name,
       coalesce(s.time_zone, 'UTC')                          AS time_zone,
       a.model_id,
       m.manufacturer,
       coalesce(a.rated_power_kw, m.rated_power_kw, a.capacity_kw) AS rated_power_kw,
       coalesce(a.hub_height_m, m.hub_height_m)              AS hub_height_m,
       coalesce(a.rotor_diameter_m, m.rotor_diameter_m)      AS rotor_diameter_m,
       m.cut_in_wind_speed_ms,
       m.rated_wind_speed_ms,
       m.cut_out_wind_speed_ms,
       coalesce(a.latitude, s.latitude)                      AS latitude,
       coalesce(a.longitude, s.longitude)                    AS longitude,
       a.commissioned_on,
       a.updated_at
  FROM gale_assets a
  LEFT JOIN gale_sites s ON s.site_id = a.site_id
  LEFT JOIN gale_turbine_models m ON m.model_id = a.model_id
 WHERE a.kind = 'turbine';

CREATE VIEW gale_meters AS
SELECT a.asset_id,
       a.site_id,
       s.name                             AS site_name,
       coalesce(s.time_zone, 'UTC')       AS time_zone,
       a.feeder_id,
       a.contracted_capacity_kw,
       a.capacity_kw,
       a.vacant,
       coalesce(a.latitude, s.latitude)   AS latitude,
       coalesce(a.longitude, s.longitude) AS longitude,
       a.commissioned_on,
       a.updated_at
  FROM gale_assets a
  LEFT JOIN gale_sites s ON s.site_id = a.site_id
 WHERE a.kind = 'meter';
