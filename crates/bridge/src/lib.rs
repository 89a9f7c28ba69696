//! # sighthub-bridge
//!
//! Where the two halves of sighthub meet: every IntelMQ event the exchange accepts (from a
//! publisher, a peer, a hub or an IntelMQ bot) records sightings of its observables in the
//! sighting store, so `consensus` tells how many organisations or feeds reported a value.
//!
//! It is a consumer of the exchange log (not a hook inside the exchange): the exchange stays
//! unaware of sightings, and the feeder can be rebuilt from the log at any time.
//!
//! ## Layout
//! - [`config`]: the `[bridge]` section (fields, namespace template, TTLs, value formats).
//! - [`mapping`]: event → sightings (namespace, value, time, tags).
//! - [`feeder`]: the exactly-once consumer, withdrawals, rebuild.
//! - [`time`]: RFC 3339 timestamps.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod config;
pub mod feeder;
pub mod mapping;
pub mod time;

pub use config::BridgeConfig;
pub use feeder::{Feeder, Step};
