//! The Avro schemas in `schemas/`, embedded: what each topic carries.

use gale_runtime::schema::SchemaFile;

/// `schemas/raw_reading.avsc`: topic `gale.raw`.
pub const RAW_READING: SchemaFile = SchemaFile {
    name: "raw_reading",
    text: include_str!("../../../schemas/raw_reading.avsc"),
};

/// `schemas/validated_reading.avsc`: topic `gale.validated`.
pub const VALIDATED_READING: SchemaFile = SchemaFile {
    name: "validated_reading",
    text: include_str!("../../../schemas/validated_reading.avsc"),
};

/// `schemas/quarantined_reading.avsc`: topic `gale.quarantine`.
pub const QUARANTINED_READING: SchemaFile = SchemaFile {
    name: "quarantined_reading",
    text: include_str!("../../../schemas/quarantined_reading.avsc"),
};

/// `schemas/enriched_reading.avsc`: topic `gale.enriched`.
pub const ENRICHED_READING: SchemaFile = SchemaFile {
    name: "enriched_reading",
    text: include_str!("../../../schemas/enriched_reading.avsc"),
};

/// `schemas/checked_reading.avsc`: topic `gale.checked`.
pub const CHECKED_READING: SchemaFile = SchemaFile {
    name: "checked_reading",
    text: include_str!("../../../schemas/checked_reading.avsc"),
};

/// `schemas/fault_event.avsc`: topic `gale.faults`.
pub const FAULT_EVENT: SchemaFile = SchemaFile {
    name: "fault_event",
    text: include_str!("../../../schemas/fault_event.avsc"),
};

/// `schemas/asset_aggregate.avsc`: topics `gale.agg.asset.10m`, `.1h`, `.1d`.
pub const ASSET_AGGREGATE: SchemaFile = SchemaFile {
    name: "asset_aggregate",
    text: include_str!("../../../schemas/asset_aggregate.avsc"),
};

/// `schemas/site_aggregate.avsc`: topics `gale.agg.site.*`, `gale.agg.fleet.*`.
pub const SITE_AGGREGATE: SchemaFile = SchemaFile {
    name: "site_aggregate",
    text: include_str!("../../../schemas/site_aggregate.avsc"),
};

/// `schemas/peak.avsc`: topic `gale.peaks`.
pub const PEAK: SchemaFile = SchemaFile {
    name: "peak",
    text: include_str!("../../../schemas/peak.avsc"),
};

/// Every schema Gale ships.
pub const ALL: &[SchemaFile] = &[
    RAW_READING,
    VALIDATED_READING,
    QUARANTINED_READING,
    ENRICHED_READING,
    CHECKED_READING,
    FAULT_EVENT,
    ASSET_AGGREGATE,
    SITE_AGGREGATE,
    PEAK,
];
