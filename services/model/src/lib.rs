//! Gale's domain records, kept out of the runtime so that the plumbing in
//! `gale-runtime` stays generic and a new stage adds types here, not there.
//!
//! [`reading`] holds the readings as they travel the topics (raw, scored) and
//! their vocabulary (asset kinds, canonical metrics, quality flags);
//! [`schemas`] embeds the `.avsc` files of `schemas/` they mirror. The two
//! readings on the hot path also have hand-written Avro encodings, checked
//! byte for byte against `apache-avro`.

pub mod aggregates;
mod fast;
pub mod reading;
pub mod schemas;
pub mod stages;

pub use aggregates::*;
pub use reading::*;
pub use schemas::*;
pub use stages::*;
