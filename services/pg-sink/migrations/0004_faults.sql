-- Faults detected by detect-faults (topic gale.faults).
--
-- fault_events keeps every lifecycle event (opened, updated, closed) of every
-- fault, partitioned by the event's updated_time like the readings; faults
-- keeps one row per fault_id, the event with the highest revision (pg-sink's
-- newest-row table ordered by revision), so a redelivered or replayed older
-- event never overwrites a newer one. Acknowledgements are the operator's,
-- not the pipeline's: they live in their own table (`gale faults ack`), so
-- replaying the topic never undoes one.

CREATE TABLE fault_events (
    event_id             text             NOT NULL,
    fault_id             text             NOT NULL,
    asset_id             text             NOT NULL,
    asset_kind           text             NOT NULL,
    site_id              text,
    code                 text             NOT NULL,
    severity             text             NOT NULL,
    status               text             NOT NULL,
    maintenance_required boolean          NOT NULL,
    opened_time          timestamptz      NOT NULL,
    updated_time         timestamptz      NOT NULL,
    closed_time          timestamptz,
    revision             integer          NOT NULL,
    metric               text,
    trigger_value        double precision,
    peak_value           double precision,
    threshold            double precision,
    detail               text             NOT NULL,
    traceparent          text,
    kafka_partition      integer,
    kafka_offset         bigint,
    stored_at            timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (fault_id, revision, updated_time)
) PARTITION BY RANGE (updated_time);
CREATE INDEX fault_events_asset_time ON fault_events (asset_id, updated_time DESC);

CREATE TABLE faults (LIKE fault_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE faults ADD PRIMARY KEY (fault_id);
CREATE INDEX faults_open ON faults (asset_id) WHERE status <> 'CLOSED';
CREATE INDEX faults_opened ON faults (opened_time DESC);

CREATE TABLE fault_acks (
    fault_id        text        PRIMARY KEY,
    acknowledged_at timestamptz NOT NULL DEFAULT now(),
    acknowledged_by text        NOT NULL,
    note            text
);

-- What a dashboard's "active faults" panel shows: open faults, newest first,
-- with their acknowledgement.
CREATE VIEW active_faults AS
SELECT f.fault_id, f.asset_id, f.asset_kind, f.site_id, f.code, f.severity,
       f.maintenance_required, f.opened_time, f.updated_time, f.peak_value,
       f.threshold, f.detail, a.acknowledged_at, a.acknowledged_by, a.note
FROM faults f
LEFT JOIN fault_acks a USING (fault_id)
WHERE f.status <> 'CLOSED';
