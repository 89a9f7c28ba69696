//! Typed errors of the shared storage plumbing.

/// What can go wrong in the journal helpers and the group commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage engine failed (I/O, corruption the engine detected).
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    /// A previous fsync failed; writes are refused until restarted.
    #[error("store is poisoned after a failed fsync; restart required")]
    Poisoned,
    /// I/O outside the engine (data directory, journal files).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The HTTP status that fits: 503 for every variant, since each means the storage cannot
    /// take the request now (a poisoned store until restarted).
    pub fn http_status(&self) -> u16 {
        503
    }
}

/// Result with the shared storage [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
