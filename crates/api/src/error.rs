//! HTTP errors: each knows its status code and its public JSON body.
//!
//! Bodies follow the existing SightingDB server: `{"message": …}` for refusals and bad
//! requests, `{"error": …, "namespace": …, "value": …}` for not-found. Internal details
//! (storage errors) are logged, never sent.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Response, StatusCode};
use serde_json::json;

/// Which grant a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read a namespace.
    Read,
    /// Write (or delete, or configure) a namespace.
    Write,
}

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No `Authorization` header while authentication is on.
    #[error("Please add the API key in the Authorization headers.")]
    Unauthorized,
    /// Unknown key, or key without the grant (same body for both).
    #[error("API key is not permitted to {} this namespace.", if *.0 == Access::Read { "read" } else { "write" })]
    Forbidden(Access),
    /// An admin-only route.
    #[error("That key is not an admin key.")]
    NotAdmin,
    /// Private namespace written or deleted.
    #[error("'{0}' is an internal namespace and is not writable from outside.")]
    Internal(String),
    /// `_config` read through the sighting API.
    #[error("No access to _config namespace from outside!")]
    ConfigNamespace,
    /// Malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// Value not found in an existing namespace.
    #[error("Value not found")]
    ValueNotFound {
        /// As the client named it.
        namespace: String,
        /// As the client sent it.
        value: String,
    },
    /// Namespace not found.
    #[error("Path not found")]
    PathNotFound {
        /// As the client named it.
        namespace: String,
        /// As the client sent it (empty for namespace-wide calls).
        value: String,
    },
    /// Body larger than the configured limit.
    #[error("Request body is larger than the limit of {0} bytes.")]
    TooLarge(usize),
    /// Unknown route.
    #[error("No such route: {0}. GET / lists the routes.")]
    NoRoute(String),
    /// Known route, wrong method.
    #[error("Method {0} is not allowed here.")]
    Method(String, &'static str),
    /// State conflict (value format change on a non-empty namespace).
    #[error("{0}")]
    Conflict(String),
    /// One write refused by the store's checks (value length, tags, timestamp); its status is
    /// the item error's (413 for the size limits).
    #[error("{0}")]
    Item(#[from] sighthub_store::ItemError),
    /// More bulk items than `[limits] max_bulk_items`.
    #[error("Too many items in one request; the limit is {0} (max_bulk_items). Send them in several requests.")]
    TooManyItems(usize),
    /// A bulk read whose answer would exceed `[limits] max_page_bytes`.
    #[error("The answer would be larger than {0} bytes (max_page_bytes). Ask for fewer items per request.")]
    AnswerTooLarge(usize),
    /// The request body did not arrive within `body_timeout_seconds`.
    #[error("The request body was not received within {0} seconds (body_timeout_seconds).")]
    BodyTimeout(u64),
    /// A bug: a handler panicked or broke an invariant. Logged; the client gets a 500.
    #[error("Internal server error.")]
    Server(&'static str),
    /// Storage failure; details are logged, not sent.
    #[error("Internal storage error.")]
    Store(#[from] sighthub_store::Error),
}

impl ApiError {
    /// The status code of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::NotAdmin | Self::Internal(_) | Self::ConfigNamespace => {
                StatusCode::FORBIDDEN
            }
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ValueNotFound { .. } | Self::PathNotFound { .. } | Self::NoRoute(_) => {
                StatusCode::NOT_FOUND
            }
            Self::TooLarge(_) | Self::TooManyItems(_) | Self::AnswerTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::Item(e) => {
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Method(..) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Store(sighthub_store::Error::FormatConflict(_)) => StatusCode::CONFLICT,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body of this error (also used inline in bulk answers).
    pub fn body(&self) -> serde_json::Value {
        match self {
            Self::ValueNotFound { namespace, value } | Self::PathNotFound { namespace, value } => {
                json!({"error": self.to_string(), "namespace": namespace, "value": value})
            }
            Self::Store(sighthub_store::Error::FormatConflict(ns)) => {
                json!({"message": format!("Namespace '{ns}' already holds values; its value format cannot change.")})
            }
            _ => json!({"message": self.to_string()}),
        }
    }

    /// The full HTTP response.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        if let Self::Store(e) = &self {
            if !matches!(e, sighthub_store::Error::FormatConflict(_)) {
                tracing::warn!(error = %e, "storage error answered 500");
            }
        }
        if let Self::Server(what) = &self {
            tracing::error!(what, "internal error answered 500");
        }
        let status = self.status();
        let mut resp = json_response(status, &self.body());
        if let Self::Method(_, allow) = self {
            if let Ok(v) = header::HeaderValue::from_str(allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
        }
        if let Self::BodyTimeout(_) = self {
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    json_bytes(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A JSON response from already-serialised bytes.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn statuses_and_bodies() {
        assert_eq!(ApiError::Unauthorized.status(), 401);
        assert_eq!(
            ApiError::Forbidden(Access::Read).body(),
            json!({"message": "API key is not permitted to read this namespace."})
        );
        let nf = ApiError::ValueNotFound {
            namespace: "a".into(),
            value: "v".into(),
        };
        assert_eq!(nf.status(), 404);
        assert_eq!(
            nf.body(),
            json!({"error": "Value not found", "namespace": "a", "value": "v"})
        );
        assert_eq!(ApiError::TooLarge(10).status(), 413);
        assert_eq!(ApiError::TooManyItems(10).status(), 413);
        assert_eq!(
            ApiError::Item(sighthub_store::ItemError::ValueTooLong(70_000)).status(),
            413
        );
        assert_eq!(
            ApiError::Item(sighthub_store::ItemError::EmptyValue).status(),
            400
        );
        assert_eq!(ApiError::BodyTimeout(1).status(), 408);
        assert_eq!(ApiError::Server("x").status(), 500);
        assert_eq!(
            ApiError::Store(sighthub_store::Error::FormatConflict("x".into())).status(),
            409
        );
    }
}
