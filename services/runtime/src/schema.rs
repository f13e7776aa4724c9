//! A schema file a service ships: the contract of a topic it writes or reads.
//!
//! The runtime registers and resolves schemas without knowing what they
//! describe; the domain crates (`gale-model`) embed the `.avsc` files of
//! `schemas/` as [`SchemaFile`] constants.

/// One Avro schema, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    /// File stem, e.g. `raw_reading`.
    pub name: &'static str,
    /// The schema JSON.
    pub text: &'static str,
}
