//! The crate's one error type. It knows no HTTP: the edge (`sighthub-api`'s `ApiError`) maps
//! each variant to its status and public body, in one place.

/// One message of a publish request that the key may not publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 0-based position of the message in the request.
    pub index: usize,
    /// Why, in words.
    pub reason: String,
}

/// What can go wrong in the exchange.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (start-up only).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No `Authorization` header.
    #[error("Please add the API key in the Authorization headers.")]
    Unauthorized,
    /// Unknown key, or a key without the right (same answer for both when the key is unknown).
    #[error("{0}")]
    Forbidden(String),
    /// A publish request holding messages the key may not publish: nothing was written.
    #[error("Publishing refused; nothing was written.")]
    Refused(Vec<Refusal>),
    /// Malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// Body larger than `max_request_bytes`.
    #[error("Request body is larger than the limit of {0} bytes; nothing was written.")]
    TooLarge(usize),
    /// A request exceeded a configured limit (413); the body names it.
    #[error("{what}; nothing was written.")]
    OverLimit {
        /// The configuration field of the limit (`max_items_per_request`…).
        limit: &'static str,
        /// Its value.
        max: u64,
        /// What went over it.
        what: String,
    },
    /// The exchange is switched off in the configuration.
    #[error("The IEP04 exchange is disabled on this server.")]
    Disabled,
    /// An fsync failed earlier: nothing more is accepted until restart.
    #[error("The exchange cannot make writes durable (an fsync failed); restart the server.")]
    Poisoned,
    /// The distributed engine (NATS JetStream) failed or did not answer: 503, saying what.
    #[error("The exchange's storage is unavailable: {0}")]
    Backend(String),
    /// Another front end appended first; the store retries on fresh state (internal: it
    /// reaches a client only as [`Error::Backend`] after too many lost races).
    #[error("lost a race with another front end: {0}")]
    Conflict(String),
    /// The storage engine failed; details are logged.
    #[error("Internal storage error.")]
    Storage(#[source] StorageError),
}

/// Storage-level failures (not shown to clients).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The embedded engine.
    #[error("fjall: {0}")]
    Fjall(#[from] fjall::Error),
    /// File system.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record does not decode.
    #[error("corrupt {0}")]
    Corrupt(&'static str),
    /// Group commit.
    #[error("group commit: {0}")]
    Commit(sighthub_storage::Error),
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        Error::Storage(StorageError::Fjall(e))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(StorageError::Io(e))
    }
}

impl From<sighthub_storage::Error> for Error {
    fn from(e: sighthub_storage::Error) -> Self {
        match e {
            sighthub_storage::Error::Poisoned => Error::Poisoned,
            other => Error::Storage(StorageError::Commit(other)),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A corrupt stored record.
    pub fn corrupt(what: &'static str) -> Self {
        Error::Storage(StorageError::Corrupt(what))
    }

    /// A blocking or spawned task of the exchange failed (panicked or was cancelled).
    pub(crate) fn join(e: tokio::task::JoinError) -> Self {
        Error::Storage(StorageError::Io(std::io::Error::other(format!(
            "task failed: {e}"
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fsync_is_its_own_variant() {
        assert!(matches!(
            Error::from(sighthub_storage::Error::Poisoned),
            Error::Poisoned
        ));
        assert!(matches!(
            Error::from(sighthub_storage::Error::Io(std::io::Error::other("x"))),
            Error::Storage(StorageError::Commit(_))
        ));
        assert!(matches!(
            Error::corrupt("log record"),
            Error::Storage(StorageError::Corrupt("log record"))
        ));
    }
}
