//! The crate's error: what the caller must tell apart (a lost race to retry, a cluster that
//! is not answering, a bad configuration).

/// What can go wrong talking to JetStream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `[exchange.nats]` section is unusable (start-up).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The cluster cannot be reached at start.
    #[error("NATS: {0}")]
    Connect(String),
    /// Another writer appended first (expected last sequence, or a `Nats-Msg-Id` already in
    /// the stream): re-read the state and retry.
    #[error("NATS: lost a race with another writer: {0}")]
    Conflict(String),
    /// The cluster failed or did not answer a request in time (answered 503).
    #[error("NATS JetStream unavailable: {0}")]
    Unavailable(String),
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failed call, with its context.
    pub fn unavailable(what: &str, e: impl std::fmt::Display) -> Self {
        Error::Unavailable(format!("{what}: {e}"))
    }
}
