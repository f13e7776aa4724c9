-- Site and fleet roll-ups of the hourly asset aggregates and the daily
-- peak hours (gale-rollup; topics gale.agg.site.*, gale.agg.fleet.*,
-- gale.peaks; docs/aggregates.md). As for the asset aggregates, each has a
-- table of every revision and one of the newest per window (or per peak
-- rank), which pg-sink upserts keeping the highest revision.

CREATE TABLE agg_site_1h_revisions (
    event_id                    text NOT NULL,
    aggregate_id                text NOT NULL,
    scope                       text NOT NULL,
    site_id                     text,
    grain                       text NOT NULL,
    window_start                timestamptz NOT NULL,
    window_end                  timestamptz NOT NULL,
    time_zone                   text NOT NULL,
    local_date                  date NOT NULL,
    revision                    integer NOT NULL,
    provisional                 boolean NOT NULL,
    assets                      bigint NOT NULL,
    turbines                    bigint NOT NULL,
    meters                      bigint NOT NULL,
    hours                       bigint NOT NULL,
    readings                    bigint NOT NULL,
    readings_used               bigint NOT NULL,
    readings_fault_excluded     bigint NOT NULL,
    readings_quarantined        bigint NOT NULL,
    readings_expected           bigint,
    coverage                    double precision,
    quality_score               double precision,
    production_kwh              double precision,
    consumption_kwh             double precision,
    expected_energy_kwh         double precision,
    performance_ratio           double precision,
    rated_power_kw              double precision,
    capacity_factor             double precision,
    available_hours             double precision,
    unavailable_hours           double precision,
    availability                double precision,
    ambient_temperature_c_count bigint NOT NULL,
    ambient_temperature_c_mean  double precision,
    gap_hours                   bigint NOT NULL,
    meter_gap_hours             bigint NOT NULL,
    meter_readings_expected     bigint,
    meter_coverage              double precision,
    kafka_partition integer,
    kafka_offset    bigint,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id)
);

CREATE TABLE agg_site_1h (LIKE agg_site_1h_revisions INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE agg_site_1h ADD PRIMARY KEY (aggregate_id);
CREATE INDEX agg_site_1h_time ON agg_site_1h (window_start DESC, site_id);

CREATE TABLE agg_site_1d_revisions (
    event_id                    text NOT NULL,
    aggregate_id                text NOT NULL,
    scope                       text NOT NULL,
    site_id                     text,
    grain                       text NOT NULL,
    window_start                timestamptz NOT NULL,
    window_end                  timestamptz NOT NULL,
    time_zone                   text NOT NULL,
    local_date                  date NOT NULL,
    revision                    integer NOT NULL,
    provisional                 boolean NOT NULL,
    assets                      bigint NOT NULL,
    turbines                    bigint NOT NULL,
    meters                      bigint NOT NULL,
    hours                       bigint NOT NULL,
    readings                    bigint NOT NULL,
    readings_used               bigint NOT NULL,
    readings_fault_excluded     bigint NOT NULL,
    readings_quarantined        bigint NOT NULL,
    readings_expected           bigint,
    coverage                    double precision,
    quality_score               double precision,
    production_kwh              double precision,
    consumption_kwh             double precision,
    expected_energy_kwh         double precision,
    performance_ratio           double precision,
    rated_power_kw              double precision,
    capacity_factor             double precision,
    available_hours             double precision,
    unavailable_hours           double precision,
    availability                double precision,
    ambient_temperature_c_count bigint NOT NULL,
    ambient_temperature_c_mean  double precision,
    gap_hours                   bigint NOT NULL,
    meter_gap_hours             bigint NOT NULL,
    meter_readings_expected     bigint,
    meter_coverage              double precision,
    kafka_partition integer,
    kafka_offset    bigint,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id)
);

CREATE TABLE agg_site_1d (LIKE agg_site_1d_revisions INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE agg_site_1d ADD PRIMARY KEY (aggregate_id);
CREATE INDEX agg_site_1d_time ON agg_site_1d (window_start DESC, site_id);
CREATE INDEX agg_site_1d_date ON agg_site_1d (local_date, site_id);

CREATE TABLE agg_fleet_1h_revisions (
    event_id                    text NOT NULL,
    aggregate_id                text NOT NULL,
    scope                       text NOT NULL,
    site_id                     text,
    grain                       text NOT NULL,
    window_start                timestamptz NOT NULL,
    window_end                  timestamptz NOT NULL,
    time_zone                   text NOT NULL,
    local_date                  date NOT NULL,
    revision                    integer NOT NULL,
    provisional                 boolean NOT NULL,
    assets                      bigint NOT NULL,
    turbines                    bigint NOT NULL,
    meters                      bigint NOT NULL,
    hours                       bigint NOT NULL,
    readings                    bigint NOT NULL,
    readings_used               bigint NOT NULL,
    readings_fault_excluded     bigint NOT NULL,
    readings_quarantined        bigint NOT NULL,
    readings_expected           bigint,
    coverage                    double precision,
    quality_score               double precision,
    production_kwh              double precision,
    consumption_kwh             double precision,
    expected_energy_kwh         double precision,
    performance_ratio           double precision,
    rated_power_kw              double precision,
    capacity_factor             double precision,
    available_hours             double precision,
    unavailable_hours           double precision,
    availability                double precision,
    ambient_temperature_c_count bigint NOT NULL,
    ambient_temperature_c_mean  double precision,
    gap_hours                   bigint NOT NULL,
    meter_gap_hours             bigint NOT NULL,
    meter_readings_expected     bigint,
    meter_coverage              double precision,
    kafka_partition integer,
    kafka_offset    bigint,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id)
);

CREATE TABLE agg_fleet_1h (LIKE agg_fleet_1h_revisions INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE agg_fleet_1h ADD PRIMARY KEY (aggregate_id);
CREATE INDEX agg_fleet_1h_time ON agg_fleet_1h (window_start DESC, site_id);

CREATE TABLE agg_fleet_1d_revisions (
    event_id                    text NOT NULL,
    aggregate_id                text NOT NULL,
    scope                       text NOT NULL,
    site_id                     text,
    grain                       text NOT NULL,
    window_start                timestamptz NOT NULL,
    window_end                  timestamptz NOT NULL,
    time_zone                   text NOT NULL,
    local_date                  date NOT NULL,
    revision                    integer NOT NULL,
    provisional                 boolean NOT NULL,
    assets                      bigint NOT NULL,
    turbines                    bigint NOT NULL,
    meters                      bigint NOT NULL,
    hours                       bigint NOT NULL,
    readings                    bigint NOT NULL,
    readings_used               bigint NOT NULL,
    readings_fault_excluded     bigint NOT NULL,
    readings_quarantined        bigint NOT NULL,
    readings_expected           bigint,
    coverage                    double precision,
    quality_score               double precision,
    production_kwh              double precision,
    consumption_kwh             double precision,
    expected_energy_kwh         double precision,
    performance_ratio           double precision,
    rated_power_kw              double precision,
    capacity_factor             double precision,
    available_hours             double precision,
    unavailable_hours           double precision,
    availability                double precision,
    ambient_temperature_c_count bigint NOT NULL,
    ambient_temperature_c_mean  double precision,
    gap_hours                   bigint NOT NULL,
    meter_gap_hours             bigint NOT NULL,
    meter_readings_expected     bigint,
    meter_coverage              double precision,
    kafka_partition integer,
    kafka_offset    bigint,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id)
);

CREATE TABLE agg_fleet_1d (LIKE agg_fleet_1d_revisions INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE agg_fleet_1d ADD PRIMARY KEY (aggregate_id);
CREATE INDEX agg_fleet_1d_time ON agg_fleet_1d (window_start DESC, site_id);
CREATE INDEX agg_fleet_1d_date ON agg_fleet_1d (local_date, site_id);

CREATE TABLE peaks_revisions (
    event_id             text NOT NULL,
    peak_id              text NOT NULL,
    scope                text NOT NULL,
    site_id              text,
    local_date           date NOT NULL,
    time_zone            text NOT NULL,
    season               text NOT NULL,
    holiday              boolean NOT NULL,
    revision             integer NOT NULL,
    provisional                 boolean NOT NULL,
    rank                 integer NOT NULL,
    hour_start           timestamptz,
    consumption_kwh      double precision,
    temperature_c        double precision,
    candidate_hours      integer NOT NULL,
    excluded_gap         integer NOT NULL,
    excluded_holiday     integer NOT NULL,
    excluded_maintenance integer NOT NULL,
    excluded_temperature integer NOT NULL,
    kafka_partition integer,
    kafka_offset    bigint,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id)
);

CREATE TABLE peaks (LIKE peaks_revisions INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE peaks ADD PRIMARY KEY (peak_id);
CREATE INDEX peaks_date ON peaks (local_date, scope, site_id);

-- Today's peak hours, site by site and for the fleet, in rank order.
CREATE VIEW peak_hours AS
SELECT scope, site_id, local_date, rank, hour_start, consumption_kwh,
       temperature_c, season, holiday, provisional, revision
FROM peaks
WHERE hour_start IS NOT NULL
ORDER BY local_date DESC, scope, site_id, rank;
