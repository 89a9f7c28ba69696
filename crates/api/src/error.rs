//! HTTP errors: each knows its status code and its public JSON body.
//!
//! One type for both APIs: the sightings routes and the `/iep04/` routes. Bodies follow the
//! existing SightingDB server: `{"message": …}` for refusals and bad requests,
//! `{"error": …, "namespace": …, "value": …}` for not-found; the exchange's refusals keep
//! their `refused` list and its limits their `limit`/`max` fields. The errors of the two
//! stores and of the exchange become an `ApiError` through one `From` each. Internal details
//! (storage errors, panics) are logged, never sent.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Response, StatusCode};
use serde_json::json;
use sighthub_exchange::error::Refusal;
use sighthub_exchange::Error as ExchangeError;

/// Which grant a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read a namespace.
    Read,
    /// Write (or delete, or configure) a namespace.
    Write,
}

/// An error answered to the client, by either API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No `Authorization` header while authentication is on.
    #[error("Please add the API key in the Authorization headers.")]
    Unauthorized,
    /// A request with the console's session cookie but no live session or no (or another)
    /// CSRF token.
    #[error("The console session has ended, or the request lacks its X-CSRF-Token; log in again at /_management/.")]
    SessionExpired,
    /// Unknown key, or key without the grant (same body for both).
    #[error("API key is not permitted to {} this namespace.", if *.0 == Access::Read { "read" } else { "write" })]
    Forbidden(Access),
    /// A refusal that says why in its own words (the `/iep04/` routes: key, feed, TLP).
    #[error("{0}")]
    Denied(String),
    /// An admin-only route.
    #[error("That key is not an admin key.")]
    NotAdmin,
    /// A private (`_`) namespace written, configured or deleted from outside (403).
    #[error("'{0}' is an internal namespace and is not writable from outside.")]
    PrivateNamespace(String),
    /// `_config` read through the sighting API.
    #[error("No access to _config namespace from outside!")]
    ConfigNamespace,
    /// A publish request holding messages the key may not publish: nothing was written.
    #[error("Publishing refused; nothing was written.")]
    Refused(Vec<Refusal>),
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
    /// Nothing there (the `/iep04/` routes: a message, a consumer).
    #[error("{0}")]
    NotFound(String),
    /// Known, but dropped from the exchange log by retention.
    #[error("{0}")]
    Gone(String),
    /// The IEP04 exchange is switched off in the configuration (its routes are 404).
    #[error("The IEP04 exchange is disabled on this server.")]
    Disabled,
    /// Body larger than `max_body_bytes` (the sighting API).
    #[error("Request body is larger than the limit of {0} bytes.")]
    TooLarge(usize),
    /// A request over a configured limit of the exchange (413); the body names the limit.
    #[error("{what}; nothing was written.")]
    OverLimit {
        /// The configuration field of the limit (`max_request_bytes`, `max_items_per_request`…).
        limit: &'static str,
        /// Its value.
        max: u64,
        /// What went over it.
        what: String,
    },
    /// Unknown route.
    #[error("No such route: {0}. GET / lists the routes.")]
    NoRoute(String),
    /// Known route, wrong method; the second field is the `Allow` header.
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
    /// A store cannot make writes durable any more (an fsync failed): 503 until restart.
    #[error("The server cannot make writes durable (an fsync failed); restart the server.")]
    Unavailable,
    /// A distributed storage engine (the sightings' Redis Cluster, the exchange's NATS
    /// JetStream) failed or is unreachable, or writers kept conflicting: 503 with what is wrong
    /// (retryable; the server keeps serving what does not need it). One variant for both
    /// halves, as a failed fsync is [`ApiError::Unavailable`] for both.
    #[error("Storage backend unavailable: {0}")]
    Backend(String),
    /// The `Accept` header admits nothing this route answers (406).
    #[error("{0}")]
    NotAcceptable(&'static str),
    /// A SightingDB feature sighthub deliberately does not implement (its galaxy and tier
    /// synchronisation): 501, with what to do instead.
    #[error("{0}")]
    NotImplemented(&'static str),
    /// A bug: a handler panicked, was cancelled or broke an invariant. Logged; 500.
    #[error("Internal server error.")]
    Internal(&'static str),
    /// A storage failure of either store; details are logged, not sent (500).
    #[error("Internal storage error.")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The one mapping from the sighting store's errors: a failed fsync is
/// [`ApiError::Unavailable`], a format change on a non-empty namespace a 409, the rest a 500.
impl From<sighthub_store::Error> for ApiError {
    fn from(e: sighthub_store::Error) -> Self {
        match e {
            sighthub_store::Error::Poisoned => ApiError::Unavailable,
            e @ (sighthub_store::Error::Contended | sighthub_store::Error::Unavailable(_)) => {
                ApiError::Backend(e.to_string())
            }
            sighthub_store::Error::FormatConflict(ns) => ApiError::Conflict(format!(
                "Namespace '{ns}' already holds values; its value format cannot change."
            )),
            other => ApiError::Storage(Box::new(other)),
        }
    }
}

/// The one mapping from the shared documents' errors (runtime keys, console sessions,
/// runtime peers): the store out of reach or contended is a 503, a full document a 409.
impl From<sighthub_storage::docs::DocError> for ApiError {
    fn from(e: sighthub_storage::docs::DocError) -> Self {
        use sighthub_storage::docs::DocError;
        match e {
            e @ (DocError::Unavailable { .. } | DocError::Contended { .. }) => {
                ApiError::Backend(e.to_string())
            }
            e @ DocError::TooLarge { .. } => ApiError::Conflict(e.to_string()),
            other => ApiError::Storage(Box::new(other)),
        }
    }
}

/// The one mapping from the exchange's typed errors.
impl From<ExchangeError> for ApiError {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::Unauthorized => ApiError::Unauthorized,
            ExchangeError::Forbidden(why) => ApiError::Denied(why),
            ExchangeError::Refused(list) => ApiError::Refused(list),
            ExchangeError::BadRequest(why) => ApiError::BadRequest(why),
            ExchangeError::TooLarge(max) => ApiError::request_too_large(max),
            ExchangeError::OverLimit { limit, max, what } => {
                ApiError::OverLimit { limit, max, what }
            }
            ExchangeError::Disabled => ApiError::Disabled,
            ExchangeError::Poisoned => ApiError::Unavailable,
            e @ (ExchangeError::Backend(_) | ExchangeError::Conflict(_)) => {
                ApiError::Backend(e.to_string())
            }
            other => ApiError::Storage(Box::new(other)),
        }
    }
}

impl ApiError {
    /// An exchange request body over `max` bytes (`max_request_bytes`).
    pub fn request_too_large(max: usize) -> Self {
        ApiError::OverLimit {
            limit: "max_request_bytes",
            max: max as u64,
            what: format!("Request body is larger than the limit of {max} bytes"),
        }
    }

    /// The status code of this error.
    ///
    /// A store that can no longer make writes durable is 503 in both APIs: the server is
    /// up but cannot honour a write until it is restarted, which is a state of the service
    /// (retryable elsewhere or later, as relays and IntelMQ's bots do on 503), not a bug of
    /// the request (500). A panicked or cancelled handler is a 500, never the client's fault.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::SessionExpired => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_)
            | Self::Denied(_)
            | Self::NotAdmin
            | Self::PrivateNamespace(_)
            | Self::ConfigNamespace
            | Self::Refused(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ValueNotFound { .. }
            | Self::PathNotFound { .. }
            | Self::NotFound(_)
            | Self::Disabled
            | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::Gone(_) => StatusCode::GONE,
            Self::TooLarge(_)
            | Self::OverLimit { .. }
            | Self::TooManyItems(_)
            | Self::AnswerTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Item(e) => {
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Method(..) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable | Self::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::Internal(_) | Self::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body of this error (also used inline in bulk answers).
    pub fn body(&self) -> serde_json::Value {
        match self {
            Self::ValueNotFound { namespace, value } | Self::PathNotFound { namespace, value } => {
                json!({"error": self.to_string(), "namespace": namespace, "value": value})
            }
            Self::Refused(list) => json!({
                "message": self.to_string(),
                "refused": list.iter().map(|r| json!({"index": r.index, "error": r.reason})).collect::<Vec<_>>(),
            }),
            Self::OverLimit { limit, max, .. } => json!({
                "message": self.to_string(),
                "limit": limit,
                "max": max,
            }),
            _ => json!({"message": self.to_string()}),
        }
    }

    /// The full HTTP response. Server errors are logged with their cause.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        match &self {
            Self::Storage(e) => tracing::warn!(error = %e, "storage error answered 500"),
            Self::Unavailable => tracing::warn!("a store cannot make writes durable: 503"),
            Self::Backend(why) => tracing::warn!(error = %why, "storage backend: 503"),
            Self::Internal(what) => tracing::error!(what, "internal error answered 500"),
            _ => {}
        }
        let status = self.status();
        let mut resp = json_response(status, &self.body());
        if let Self::Method(_, allow) = self {
            resp.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
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
    bytes_response(status, "application/json", body)
}

/// A response with the given content type.
pub fn bytes_response(
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
        assert_eq!(ApiError::Internal("x").status(), 500);
        assert_eq!(
            ApiError::from(sighthub_store::Error::FormatConflict("x".into())).status(),
            409
        );
        assert_eq!(ApiError::PrivateNamespace("_all".into()).status(), 403);
    }

    /// A failed fsync is 503 in both APIs (it was a 500 from the sighting store and a 503
    /// from the exchange); other storage failures are a 500 that says nothing more.
    #[test]
    fn storage_failures_answer_the_same_in_both_apis() {
        assert_eq!(
            ApiError::from(sighthub_store::Error::Poisoned).status(),
            503
        );
        assert_eq!(ApiError::from(ExchangeError::Poisoned).status(), 503);
        // The distributed engine failing: 503, saying what.
        let e = ApiError::from(ExchangeError::Backend("no answer within 30 s".into()));
        assert_eq!(e.status(), 503);
        assert!(e.body()["message"]
            .as_str()
            .is_some_and(|m| m.contains("no answer within 30 s")));
        assert_eq!(
            ApiError::from(ExchangeError::from(sighthub_storage::Error::Poisoned)).status(),
            503
        );
        let corrupt = ApiError::from(sighthub_store::Error::Corrupt("record"));
        assert_eq!(corrupt.status(), 500);
        assert_eq!(
            corrupt.body(),
            json!({"message": "Internal storage error."})
        );
        let corrupt = ApiError::from(ExchangeError::corrupt("log record"));
        assert_eq!(corrupt.status(), 500);
        assert_eq!(
            corrupt.body(),
            json!({"message": "Internal storage error."}),
            "no internal detail leaks"
        );
    }

    /// The exchange's errors keep their statuses and bodies (moved from the exchange crate).
    #[test]
    fn exchange_errors_keep_their_statuses_and_bodies() {
        assert_eq!(ApiError::from(ExchangeError::Unauthorized).status(), 401);
        let big = ApiError::from(ExchangeError::TooLarge(10));
        assert_eq!(big.status(), 413);
        assert_eq!(
            big.body(),
            json!({"message": "Request body is larger than the limit of 10 bytes; nothing was written.",
                   "limit": "max_request_bytes", "max": 10})
        );
        let r = ApiError::from(ExchangeError::Refused(vec![Refusal {
            index: 2,
            reason: "no".into(),
        }]));
        assert_eq!(r.status(), 403);
        assert_eq!(r.body()["refused"][0], json!({"index": 2, "error": "no"}));
        assert_eq!(
            r.body()["message"],
            json!("Publishing refused; nothing was written.")
        );
        assert_eq!(
            ApiError::from(ExchangeError::Forbidden("This key may not read.".into())).body(),
            json!({"message": "This key may not read."})
        );
        assert_eq!(ApiError::Gone("x".into()).status(), 410);
        assert_eq!(ApiError::from(ExchangeError::Disabled).status(), 404);
        assert_eq!(
            ApiError::from(ExchangeError::Config("x".into())).status(),
            500
        );
        let resp = ApiError::Method("PUT".into(), "GET, POST").into_response();
        assert_eq!(resp.headers()[header::ALLOW], "GET, POST");
    }
}
