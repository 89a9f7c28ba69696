//! Migration from SightingDB into sighthub.
//!
//! - [`snapshot`]: SightingDB's data files (zstd-compressed JSON shards of 0.5.0 to 0.7.8,
//!   the single `sightingdb.json` of earlier versions), decoded as a stream into typed
//!   records.
//! - [`import`]: those records applied to a sighting store through its one import operation
//!   ([`sighthub_store::Sightings::import`]), resumable, with a progress marker committed with
//!   the data, and a summary.
//! - [`config`]: SightingDB's `sightingdb.toml` turned into an equivalent `sighthub.toml`,
//!   with what has no equivalent listed.
//! - [`synthetic`]: snapshots in SightingDB's format generated for tests and measurements.
//!
//! Used by `sighthub import-sightingdb` and `sighthub import-sightingdb-config`.

pub mod config;
pub mod import;
pub mod snapshot;
pub mod synthetic;
