-- Readings for dashboards and operational queries.
--
-- Reading tables are partitioned by event time, one partition per UTC day;
-- pg-sink creates partitions ahead of time and for any day a batch needs.
-- The primary key (event_id, event_time) makes a redelivered reading a no-op:
-- event ids are deterministic and include the event time, so the pair is as
-- unique as the id alone, and Postgres requires the partition key in it.
-- Column names match the Avro field names of the topic stored; pg-sink maps
-- fields to columns by name, so a new topic needs a migration and a config
-- entry, not code.

CREATE TABLE readings (
    event_id                text             NOT NULL,
    asset_id                text             NOT NULL,
    asset_kind              text             NOT NULL,
    site_id                 text,
    event_time              timestamptz      NOT NULL,
    received_time           timestamptz      NOT NULL,
    validated_time          timestamptz      NOT NULL,
    source                  text             NOT NULL,
    channel                 text             NOT NULL,
    wind_speed_ms           double precision,
    wind_direction_deg      double precision,
    rotor_speed_rpm         double precision,
    power_kw                double precision,
    energy_kwh              double precision,
    nacelle_temperature_c   double precision,
    gearbox_temperature_c   double precision,
    generator_temperature_c double precision,
    vibration_ms2           double precision,
    oil_pressure_bar        double precision,
    brake_pressure_bar      double precision,
    pitch_angle_deg         double precision,
    yaw_angle_deg           double precision,
    tower_lean_deg          double precision,
    latitude_deg            double precision,
    longitude_deg           double precision,
    quality_score           integer          NOT NULL CHECK (quality_score BETWEEN 0 AND 100),
    quality_tier            text             NOT NULL,
    flags                   jsonb            NOT NULL DEFAULT '[]',
    attributes              jsonb            NOT NULL DEFAULT '{}',
    kafka_partition         integer,
    kafka_offset            bigint,
    stored_at               timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, event_time)
) PARTITION BY RANGE (event_time);

-- One asset's recent history (and, through latest_readings, its newest reading).
CREATE INDEX readings_asset_time ON readings (asset_id, event_time DESC);
-- All assets of a site in a time range.
CREATE INDEX readings_site_time ON readings (site_id, event_time);

-- Newest validated reading per asset, kept by pg-sink in the same transaction
-- as the reading itself: the dashboard's "current state" query is a primary-key
-- scan instead of a DISTINCT ON over millions of rows.
CREATE TABLE latest_readings (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE latest_readings ADD PRIMARY KEY (asset_id);
CREATE INDEX latest_readings_site ON latest_readings (site_id);

-- Readings below the standard tier, kept for review (smart-meter-etl-rules.md:
-- "Available in quarantine DB, manual override possible").
CREATE TABLE quarantined_readings (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (event_time);
ALTER TABLE quarantined_readings ADD PRIMARY KEY (event_id, event_time);
CREATE INDEX quarantined_readings_asset_time ON quarantined_readings (asset_id, event_time DESC);

-- Raw readings as ingest accepted them (values in source units).
CREATE TABLE raw_readings (
    event_id        text        NOT NULL,
    asset_id        text        NOT NULL,
    asset_kind      text,
    event_time      timestamptz NOT NULL,
    received_time   timestamptz NOT NULL,
    source          text        NOT NULL,
    channel         text        NOT NULL,
    measurements    jsonb       NOT NULL,
    attributes      jsonb       NOT NULL DEFAULT '{}',
    kafka_partition integer,
    kafka_offset    bigint,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, event_time)
) PARTITION BY RANGE (event_time);
CREATE INDEX raw_readings_asset_time ON raw_readings (asset_id, event_time DESC);

-- The asset registry validate can read (validate.assets.source = "postgres").
CREATE TABLE IF NOT EXISTS gale_assets (
    asset_id    text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('turbine', 'meter')),
    site_id     text,
    capacity_kw double precision,
    latitude    double precision,
    longitude   double precision
);
