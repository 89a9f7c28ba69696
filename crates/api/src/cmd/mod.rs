//! The request handlers, one file per command family (as mini-redis's `cmd/` and Garage's
//! API handlers), and what they share: the JSON answer, the attribute view, the namespace
//! guards and [`blocking`], the one way a handler runs store work off the async workers.
//!
//! | file | routes |
//! |---|---|
//! | [`write`](mod@write) | `GET /w/{ns}` |
//! | [`read`] | `GET /r/{ns}`, `GET /rs/{ns}` (a value, a listing, a count), `GET /_api/who` |
//! | [`bulk`] | `POST /wb`, `/vwb`, `/rb`, `/rbs` |
//! | [`namespace`] | `/d/{ns}`, `/c/{ns}`, `GET /_api/namespaces` |
//! | [`info`] | `/`, `/i`, `/health`, `/_api/openapi.yaml`, `/_api/latest` |
//! | [`iep04`] | what the `/iep04/` routes share: strict query, read parameters, cursors |
//! | [`iep04_publish`] | `POST /iep04/messages` |
//! | [`iep04_read`] | `GET /iep04/messages` (long-poll), `GET /iep04/messages/{uuid}` |
//! | [`iep04_links`] | `GET /iep04/links/{uuid}`, `GET /iep04/links?alternate=` |
//! | [`iep04_consumers`] | `/iep04/consumers/{name}`, its `messages` and `ack` |
//! | [`iep04_status`] | `GET /iep04/status` |
//! | [`console`] | `/_management/…` (the web console) |
//! | [`taxii`] | `/taxii2/…` (TAXII 2.1 over the exchange log, read-only) |
//! | [`keys`] | `/_api/keys`, `/_api/keys/{id}` (admin: runtime keys) |
//! | [`peers`] | `/_api/peers/invite`, `/_api/peers/join` (admin), `POST /iep04/peers/redeem` |
//! | [`stix`] | `GET /stix/{ns}`, `POST /_api/stix` (STIX 2.1 bundles) |
//!
//! A handler returns `Result<Resp, ApiError>`; [`crate::App::handle`] turns the error into
//! its response.

pub mod bulk;
pub mod console;
pub mod iep04;
pub mod iep04_consumers;
pub mod iep04_links;
pub mod iep04_publish;
pub mod iep04_read;
pub mod iep04_status;
pub mod info;
pub mod keys;
pub mod namespace;
pub mod peers;
pub mod read;
pub mod stix;
pub mod taxii;
pub mod write;

use crate::error::{json_bytes, ApiError};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde::Serialize;
use sighthub_store::{Namespace, ReadOutcome, View};

/// The response every handler answers.
pub type Resp = Response<Full<Bytes>>;

/// The attribute view, keys in SightingDB's order.
#[derive(Serialize)]
pub(crate) struct ViewJson<'a> {
    value: &'a str,
    first_seen: i64,
    last_seen: i64,
    count: u64,
    tags: &'a str,
    ttl: u64,
    consensus: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<Stats<'a>>,
}

/// Hourly stats as an object with string keys, in numeric order.
struct Stats<'a>(&'a [(i64, u64)]);

impl Serialize for Stats<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (bucket, n) in self.0 {
            m.serialize_entry(&bucket.to_string(), n)?;
        }
        m.end()
    }
}

pub(crate) fn view_json(v: &View, stats: bool) -> ViewJson<'_> {
    ViewJson {
        value: &v.value,
        first_seen: v.record.first_seen,
        last_seen: v.record.last_seen,
        count: v.record.count,
        tags: &v.record.tags,
        ttl: v.record.ttl,
        consensus: v.consensus,
        stats: stats.then_some(Stats(&v.record.stats)),
    }
}

pub(crate) fn to_json<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    json_bytes(status, serde_json::to_vec(v).unwrap_or_default())
}

pub(crate) fn parse_ns(raw: &str) -> Result<Namespace, ApiError> {
    Namespace::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Private (`_`) namespaces are written, configured and deleted by the engine only (403).
pub(crate) fn guard_private(ns: &Namespace) -> Result<(), ApiError> {
    if ns.is_internal() {
        Err(ApiError::PrivateNamespace(ns.first_segment().to_owned()))
    } else {
        Ok(())
    }
}

/// The value a read found, or the one answer to a miss, as SightingDB words it: "Value not
/// found" when the namespace exists, "Path not found" when it does not. Every read handler
/// (`/r`, `/rs`, `/rb`, `/stix`) answers misses through it.
pub(crate) fn found(outcome: ReadOutcome, namespace: &str, value: &str) -> Result<View, ApiError> {
    match outcome {
        ReadOutcome::Found(v) => Ok(v),
        ReadOutcome::NoValue => Err(ApiError::ValueNotFound {
            namespace: namespace.to_owned(),
            value: value.to_owned(),
        }),
        ReadOutcome::NoNamespace => Err(ApiError::PathNotFound {
            namespace: namespace.to_owned(),
            value: value.to_owned(),
        }),
    }
}

pub(crate) fn resolve_ts(ts: Option<i64>, now: i64) -> i64 {
    match ts {
        None | Some(0) => now,
        Some(t) => t,
    }
}

/// Runs store work on a blocking thread, off the async workers, for every handler of both
/// APIs. A panic there is a bug: it is logged and answered 500, never reported as the
/// client's fault (nor is a cancelled task: 500 too).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(join_error)?
}

/// The answer to a task that did not finish: a panic (logged with its message) or a
/// cancellation, both a 500.
pub fn join_error(e: tokio::task::JoinError) -> ApiError {
    if !e.is_panic() {
        return ApiError::Internal("a request handler was cancelled");
    }
    let p = e.into_panic();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %msg, "a request handler panicked");
    ApiError::Internal("a request handler panicked")
}

#[cfg(test)]
mod test {
    use super::*;
    use serde_json::json;

    /// A panic in store work is a logged 500, never the client's fault (it was a 400
    /// "request was cancelled"; the exchange's own helper made it a storage error).
    #[tokio::test]
    async fn a_panic_in_a_blocking_task_is_a_500() {
        let r: Result<(), ApiError> = blocking(|| panic!("boom")).await;
        let e = r.expect_err("an error");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.body(), json!({"message": "Internal server error."}));
    }

    #[tokio::test]
    async fn a_panicked_task_is_a_500() {
        let h = tokio::spawn(async { panic!("in a task") });
        let e = join_error(h.await.expect_err("panicked"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
