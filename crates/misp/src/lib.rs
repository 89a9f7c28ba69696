//! # sighthub-misp
//!
//! MISP's ZeroMQ publisher as a source of sightings (`[zmq]`), the second half of the MISP
//! loop (the first is MISP's own `/rb` lookups, served by the HTTP edge with anonymous read
//! grants and digest lookups; `docs/MISP.md`). No HTTP here.
//!
//! ## Layout
//! - [`config`]: the `[zmq]` section and the default type → namespace map.
//! - [`frame`]: MISP's frames (`<topic> <json>`) → attributes with their inherited tags
//!   (untrusted input: bounded, never panics, fuzzed).
//! - [`mapping`]: an attribute → its sightings (type map, `to_ids`, composites, time, tags,
//!   the hashed namespace).
//! - [`ingest`]: the subscriber task, run as a worker by `sighthub-node`; writes through the
//!   sighting store's one write path.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod config;
pub mod frame;
pub mod ingest;
pub mod mapping;

pub use config::ZmqConfig;
pub use ingest::{Counters, Ingest, Outcome};

/// What can stop the ingest from being set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `[zmq]` section is unusable.
    #[error("{0}")]
    Config(String),
    /// The hashed namespace could not be made SHA256 (it holds values of another format),
    /// or the store failed.
    #[error(
        "[zmq] hashed_namespace must be a SHA256 namespace and could not be made one: {0}; \
         name a new namespace there, or delete that one (/d/<namespace>) if its values may go"
    )]
    Store(#[from] sighthub_store::Error),
}
