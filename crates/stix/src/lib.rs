//! # sighthub-stix
//!
//! Sightings as STIX 2.1, both ways, with no HTTP: the `/stix` routes of `sighthub-api` and
//! the `sighthub import-stix` command share this one mapping.
//!
//! - [`export`]: values of namespaces → one bundle of `identity`, `indicator`, `sighting` and
//!   TLP `marking-definition` objects, written object by object into one buffer (the caller
//!   streams values in from the store's ordered scan, so nothing but the answer is held).
//!   The mapping, the deterministic UUIDv5 ids, the tag vocabulary and the key order are
//!   SightingDB 0.7.8's, so a bundle exported from sighthub carries the ids the same data
//!   exported from SightingDB carries.
//! - [`import`]: a bundle → the sightings it describes (`observed-data`, `sighting`,
//!   `indicator`), bounded in bytes and objects, every object that cannot be read skipped
//!   with its reason.
//! - [`apply`]: those sightings into a [`sighthub_store::SightingStore`], idempotently: each
//!   sighting's applied count is recorded as a store marker in the same atomic batch as its
//!   writes, so a bundle imported again (or an import interrupted and run again) adds
//!   nothing twice.
//! - [`vocab`]: what the two sides share: the id namespace, TLP markings, tags, timestamps.
//!
//! Why not a STIX crate: the Rust STIX crates are young (0.1.x, one maintainer each) and
//! model all of STIX, strictly; this needs six object types, reads foreign bundles leniently
//! and must write keys and ids exactly as SightingDB does. The subset is written here, on
//! serde.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod apply;
pub mod export;
pub mod import;
pub mod vocab;

pub use apply::{apply, Applied, ApplyOptions, Marked};
pub use export::{infer_type, Exporter, Finished, Settings, Untyped};
pub use import::{decode, DecodeError, DecodeLimits, Decoded, Mapping, Observation};
