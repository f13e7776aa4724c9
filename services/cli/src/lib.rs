//! The `gale` operator CLI: traffic simulation now; topic, lake and
//! database operations join it as the pipeline grows.

pub mod assets;
pub mod energy;
pub mod faults;
pub mod fleet_registry;
pub mod inspect;
pub mod send;
pub mod simulate;
