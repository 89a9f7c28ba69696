//! The crate's error type.

/// What can go wrong in a transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable.
    #[error("[intelmq] {0}")]
    Config(String),
    /// The exchange refused or failed to store (or to make durable) a batch.
    #[error("exchange: {0}")]
    Exchange(#[from] sighthub_exchange::Error),
    /// A socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be taken.
    #[error("framing: {0}")]
    Frame(#[from] crate::frame::FrameError),
    /// The counterpart answered something other than what the protocol says.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The collector refused the delivered events for good (an HTTP 4xx other than 408 and
    /// 429): retrying the same events cannot succeed.
    #[error("refused: {0}")]
    Refused(String),
    /// An HTTP delivery failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// A Redis command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
