//! # sighthub-dns
//!
//! The DNS blocklist front end: sightings answered the way mail servers and resolvers query
//! DNSBLs, over UDP and TCP. `4.3.2.1.ip.bl.example.org A?` answers `127.0.0.x` when
//! `1.2.3.4` is stored in the namespace the label `ip` exposes (x grows with the count's
//! order of magnitude), and NXDOMAIN when it is not; `TXT?` gives the count, first and last
//! seen and the consensus.
//!
//! It is a client of the sightings core only: every lookup is
//! [`sighthub_store::SightingStore::read`], the one read path the HTTP API uses too (value
//! formats, expiry and consensus included). It does not depend on the HTTP edge. The wire
//! format is `hickory-proto`'s; what is decoded here is the value encoding of a name
//! ([`encoding`], fuzzed).
//!
//! ## Layout
//! - [`config`]: the `[dns]` section and the validated [`config::Zones`].
//! - [`encoding`]: labels → the value looked up (IPv4, IPv6, domains, base32).
//! - [`answer`]: query packet → answer packet ([`answer::Responder`]); the answer table.
//! - [`limit`]: the per-client rate limit.
//! - [`server`]: UDP and TCP sockets, bounds, the run loop ([`DnsServer`]).
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod answer;
pub mod config;
pub mod encoding;
pub mod limit;
pub mod server;

pub use config::DnsConfig;
pub use server::{Counters, DnsServer};

/// Errors of starting the DNS server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `[dns]` section is not valid.
    #[error("{0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("binding the DNS server to {addr} (UDP and TCP): {source}; choose another [dns] listen address, or stop what holds it")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
