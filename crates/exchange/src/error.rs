//! The crate's one error type; each variant knows its HTTP status and public JSON body.
//!
//! Storage details are logged, never sent: a client sees `Internal storage error.` (500) or,
//! once an fsync has failed, 503 until the server is restarted.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Response, StatusCode};
use serde_json::json;

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
    /// Nothing there.
    #[error("{0}")]
    NotFound(String),
    /// Known, but dropped from the log by retention.
    #[error("{0}")]
    Gone(String),
    /// Known route, wrong method; the second field is the `Allow` header.
    #[error("Method {0} is not allowed here.")]
    Method(String, &'static str),
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
    Commit(sighthub_store::Error),
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

impl From<sighthub_store::Error> for Error {
    fn from(e: sighthub_store::Error) -> Self {
        match e {
            sighthub_store::Error::Poisoned => Error::Poisoned,
            other => Error::Storage(StorageError::Commit(other)),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A corrupt stored record.
    pub(crate) fn corrupt(what: &'static str) -> Self {
        Error::Storage(StorageError::Corrupt(what))
    }

    /// A blocking or spawned task of the exchange failed (panicked or was cancelled).
    pub(crate) fn join(e: tokio::task::JoinError) -> Self {
        Error::Storage(StorageError::Io(std::io::Error::other(format!(
            "task failed: {e}"
        ))))
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Config(_) | Error::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::Refused(_) => StatusCode::FORBIDDEN,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) | Error::Disabled => StatusCode::NOT_FOUND,
            Error::Gone(_) => StatusCode::GONE,
            Error::Method(..) => StatusCode::METHOD_NOT_ALLOWED,
            Error::TooLarge(_) | Error::OverLimit { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Poisoned => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The public JSON body.
    pub fn body(&self) -> serde_json::Value {
        match self {
            Error::Refused(list) => json!({
                "message": self.to_string(),
                "refused": list.iter().map(|r| json!({"index": r.index, "error": r.reason})).collect::<Vec<_>>(),
            }),
            Error::TooLarge(max) => json!({
                "message": self.to_string(),
                "limit": "max_request_bytes",
                "max": max,
            }),
            Error::OverLimit { limit, max, .. } => json!({
                "message": self.to_string(),
                "limit": limit,
                "max": max,
            }),
            _ => json!({ "message": self.to_string() }),
        }
    }

    /// The whole response. 5xx are logged at warn, with their cause.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        if self.status().is_server_error() {
            match &self {
                Error::Storage(e) => {
                    tracing::warn!(error = %e, "exchange storage error answered 500")
                }
                other => tracing::warn!(error = %other, "exchange answered a server error"),
            }
        }
        let mut resp = json_response(self.status(), &self.body());
        if let Error::Method(_, allow) = self {
            resp.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        resp
    }
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    bytes_response(
        status,
        "application/json",
        serde_json::to_vec(body).unwrap_or_default(),
    )
}

/// A response with the given content type.
pub(crate) fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies() {
        assert_eq!(Error::Unauthorized.status(), 401);
        assert_eq!(Error::TooLarge(10).status(), 413);
        assert_eq!(Error::Poisoned.status(), 503);
        assert_eq!(Error::from(sighthub_store::Error::Poisoned).status(), 503);
        assert_eq!(Error::corrupt("x").status(), 500);
        assert_eq!(
            Error::corrupt("log record").body(),
            json!({"message": "Internal storage error."}),
            "no internal detail leaks"
        );
        let r = Error::Refused(vec![Refusal {
            index: 2,
            reason: "no".into(),
        }]);
        assert_eq!(r.status(), 403);
        assert_eq!(r.body()["refused"][0], json!({"index": 2, "error": "no"}));
        let resp = Error::Method("PUT".into(), "GET, POST").into_response();
        assert_eq!(resp.headers()[header::ALLOW], "GET, POST");
    }
}
