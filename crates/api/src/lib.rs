//! # sighthub-api
//!
//! The HTTP(S) edge of sighthub, for both APIs: the SightingDB-compatible API over the
//! sighting store and the IEP04 exchange's `/iep04/` routes over the exchange; API keys with
//! scoped grants, TLS. It does not store anything itself (it speaks to a
//! [`sighthub_store::SightingStore`] and a [`sighthub_exchange::Exchange`]) and starts
//! nothing: the composition root that opens the stores and runs the background work is
//! `sighthub-node`.
//!
//! ## Layout
//! - [`limits`]: the `[limits]` section (bounds on what one request may ask or add).
//! - [`server`]: accept loop, TLS handshake, HTTP/1.1, graceful shutdown.
//! - [`deadline`]: the request-body deadline every request is wrapped in.
//! - [`router`]: method + path → [`router::Endpoint`] (both APIs); the one route table.
//! - [`app`]: [`App`] and the dispatch of an endpoint to its handler.
//! - [`cmd`]: the handlers, one file per command family, and [`cmd::blocking`].
//! - [`body`]: the one request-body reader (size limit 413, deadline 408).
//! - [`query`]: query-string decoding (fuzzed).
//! - [`bulk`]: bulk body decoding, both item shapes (fuzzed).
//! - [`auth`]: API keys, grants, scopes.
//! - [`keyring`]: the one lookup of a request's key for both APIs, over the configuration's
//!   keys and the runtime keys of the admin API (`keys.json`).
//! - [`peering`]: the seam to the relay for peering by invitation.
//! - [`status`]: the seam through which the node reports relay links, the bridge and the
//!   IntelMQ transports (`GET /iep04/peers`, metrics).
//! - [`metrics`]: `GET /metrics`, the Prometheus exposition of both halves.
//! - [`console`]: the web console's embedded assets, sessions and the CSRF rule.
//! - [`latest`]: the in-memory ring behind `/_api/latest`.
//! - [`tls`]: rustls set-up and the self-signed certificate.
//! - [`error`]: [`error::ApiError`], the one error of the edge: status and public body, and
//!   the one mapping from the stores' and the exchange's errors.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod app;
pub mod auth;
pub mod body;
pub mod bulk;
pub mod cmd;
pub mod console;
pub mod deadline;
pub mod error;
pub mod files;
pub mod keyring;
pub mod latest;
pub mod limits;
pub mod metrics;
pub mod peering;
pub mod query;
pub mod router;
pub mod server;
pub mod status;
pub mod tls;
pub mod writer;

/// The OpenAPI 3 document served at `/_api/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

pub use app::App;
