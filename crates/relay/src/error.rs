//! The relay's error type: each error knows where it came from and whether retrying can help.

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The peer or hub (network, HTTP status, answer).
    Upstream,
    /// This instance (local log, state files).
    Internal,
    /// The configuration.
    Config,
}

/// A relay error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable.
    #[error("relay configuration: {0}")]
    Config(String),
    /// The peer could not be reached or timed out.
    #[error("{peer}: {source}")]
    Network {
        /// Which peer or hub.
        peer: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// The peer answered with an unexpected HTTP status.
    #[error("{peer}: HTTP {status}: {body}")]
    Status {
        /// Which peer or hub.
        peer: String,
        /// The status.
        status: u16,
        /// The start of the answer.
        body: String,
    },
    /// The peer's answer is not what the IEP04 routes answer.
    #[error("{peer}: unexpected answer: {reason}")]
    Answer {
        /// Which peer or hub.
        peer: String,
        /// What was wrong.
        reason: String,
    },
    /// The peer's answer is longer than `max_answer_bytes`.
    #[error("{peer}: answer longer than {max} bytes (relay.max_answer_bytes)")]
    TooLong {
        /// Which peer or hub.
        peer: String,
        /// The limit.
        max: usize,
    },
    /// The local exchange failed.
    #[error("local exchange: {0}")]
    Exchange(#[from] sighthub_exchange::Error),
    /// A file the link needs (its `ca`) cannot be read yet: retried, and restarted by SIGHUP.
    #[error("{path}: {source}; put the file there (a peer's certificate exists after its first start), then send SIGHUP")]
    Unavailable {
        /// Which file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime peers' shared document could not be read or written.
    #[error("relay runtime peers: {0}")]
    Documents(#[from] sighthub_storage::docs::DocError),
    /// A state file could not be read or written.
    #[error("relay state {path}: {source}")]
    State {
        /// Which file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Where it came from.
    pub fn source_kind(&self) -> Source {
        match self {
            Error::Config(_) => Source::Config,
            Error::Network { .. }
            | Error::Status { .. }
            | Error::Answer { .. }
            | Error::TooLong { .. } => Source::Upstream,
            Error::Exchange(_) | Error::State { .. } | Error::Documents(_) => Source::Internal,
            Error::Unavailable { .. } => Source::Config,
        }
    }

    /// Can the same request succeed later? Network failures, 5xx, 408/429 and refusals
    /// (401/403: the peer's key table may be fixed) are retried with backoff; a malformed
    /// configuration is not. Nothing is ever skipped on error: the cursor stays put.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Config(_) => false,
            Error::Network { .. }
            | Error::Answer { .. }
            | Error::State { .. }
            | Error::Documents(_)
            | Error::Unavailable { .. }
            | Error::TooLong { .. } => true,
            Error::Status { status, .. } => {
                *status >= 500 || matches!(status, 401 | 403 | 404 | 408 | 413 | 429)
            }
            Error::Exchange(e) => !matches!(
                e,
                sighthub_exchange::Error::Config(_) | sighthub_exchange::Error::Poisoned
            ),
        }
    }
}

impl Error {
    /// The peer refused the *content* of a request for good: retrying the same messages
    /// cannot succeed. A 4xx other than 401/403 (the key), 404 (the route), 408 and 429
    /// (come back later), or a 403 that lists refused messages (`"refused"`: e.g. another
    /// organisation's withdrawal). A push isolates the refused message, records it and goes
    /// on; everything else stays retried.
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Status { status, body, .. } => match *status {
                403 => body.contains("\"refused\""),
                401 | 404 | 408 | 429 => false,
                s => (400..500).contains(&s),
            },
            _ => false,
        }
    }
}

/// The relay's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn classification() {
        let s = |status| Error::Status {
            peer: "p".into(),
            status,
            body: String::new(),
        };
        assert!(s(503).retryable() && s(403).retryable() && s(429).retryable());
        assert!(!s(400).retryable() && !s(422).retryable());
        assert!(s(400).is_refusal() && s(413).is_refusal() && s(422).is_refusal());
        assert!(!s(401).is_refusal() && !s(403).is_refusal() && !s(408).is_refusal());
        assert!(!s(429).is_refusal() && !s(500).is_refusal() && !s(404).is_refusal());
        let refused = Error::Status {
            peer: "p".into(),
            status: 403,
            body: r#"{"message":"Publishing refused; nothing was written.","refused":[]}"#.into(),
        };
        assert!(refused.is_refusal());
        assert_eq!(s(500).source_kind(), Source::Upstream);
        assert!(!Error::Config("x".into()).retryable());
        assert_eq!(Error::Config("x".into()).source_kind(), Source::Config);
    }
}
