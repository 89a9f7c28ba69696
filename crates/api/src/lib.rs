//! # sighthub-api
//!
//! The HTTP(S) edge of sighthub: the SightingDB-compatible API over the store, API keys with
//! scoped grants, TLS. It does not store anything itself (it speaks to a
//! [`sighthub_store::SightingStore`]) and starts nothing: the composition root that opens
//! the stores and runs the background work is `sighthub-node`.
//!
//! ## Layout
//! - [`limits`]: the `[limits]` section (bounds on what one request may ask or add).
//! - [`server`]: accept loop, TLS handshake, HTTP/1.1, graceful shutdown.
//! - [`deadline`]: the request-body deadline every request is wrapped in.
//! - [`router`]: method + path → [`router::Endpoint`]; the route table.
//! - [`app`]: the composition root and the handlers.
//! - [`query`]: query-string decoding (fuzzed).
//! - [`bulk`]: bulk body decoding, both item shapes (fuzzed).
//! - [`auth`]: API keys, grants, scopes.
//! - [`latest`]: the in-memory ring behind `/_api/latest`.
//! - [`tls`]: rustls set-up and the self-signed certificate.
//! - [`error`]: errors that know their HTTP status and body.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod app;
pub mod auth;
pub mod bulk;
pub mod deadline;
pub mod error;
pub mod files;
pub mod latest;
pub mod limits;
pub mod query;
pub mod router;
pub mod server;
pub mod tls;

/// The OpenAPI 3 document served at `/_api/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

pub use app::App;
