-- The extra channels real SCADA exports carry, first-class (typed, limits in
-- validate's rules), and each reading's interval.
-- Adding a column to a partitioned table adds it to every partition.

ALTER TABLE readings
    ADD COLUMN interval_ms                 bigint,
    ADD COLUMN ambient_temperature_c       double precision,
    ADD COLUMN relative_wind_direction_deg double precision,
    ADD COLUMN reactive_power_kvar         double precision,
    ADD COLUMN voltage_v                   double precision,
    ADD COLUMN current_a                   double precision,
    ADD COLUMN frequency_hz                double precision;

ALTER TABLE latest_readings
    ADD COLUMN interval_ms                 bigint,
    ADD COLUMN ambient_temperature_c       double precision,
    ADD COLUMN relative_wind_direction_deg double precision,
    ADD COLUMN reactive_power_kvar         double precision,
    ADD COLUMN voltage_v                   double precision,
    ADD COLUMN current_a                   double precision,
    ADD COLUMN frequency_hz                double precision;

ALTER TABLE quarantined_readings
    ADD COLUMN interval_ms                 bigint,
    ADD COLUMN ambient_temperature_c       double precision,
    ADD COLUMN relative_wind_direction_deg double precision,
    ADD COLUMN reactive_power_kvar         double precision,
    ADD COLUMN voltage_v                   double precision,
    ADD COLUMN current_a                   double precision,
    ADD COLUMN frequency_hz                double precision;

ALTER TABLE raw_readings
    ADD COLUMN interval_ms bigint;
