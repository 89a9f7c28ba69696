//! `GET /iep04/status`: identity (organisation, instance, TLS key fingerprint), log bounds,
//! retention.

use super::iep04::query;
use super::Resp;
use crate::error::{json_response, ApiError};
use hyper::StatusCode;
use serde_json::json;
use sighthub_exchange::record::encode_cursor;
use sighthub_exchange::Inner;

/// `GET /iep04/status`.
pub(crate) fn status_route(
    inner: &Inner,
    identity: Option<&str>,
    raw_query: &str,
) -> Result<Resp, ApiError> {
    query(raw_query, &[])?;
    Ok(status(inner, identity))
}

fn status(inner: &Inner, identity: Option<&str>) -> Resp {
    let s = &inner.store;
    let (records, uuids) = s.approximate_counts();
    let head = s.durable();
    json_response(
        StatusCode::OK,
        &json!({
            "org": s.org().to_string(),
            "instance": s.instance().to_string(),
            // The TLS key's fingerprint, what peers pin (`fingerprint`); null in plain HTTP.
            "identity": identity,
            "head_seq": head,
            "first_seq": s.first_seq().min(head + 1),
            "head_cursor": encode_cursor(head, s.epoch()),
            "log_bytes": s.log_bytes(),
            "log_records_approx": records,
            "uuids_approx": uuids,
            "durable": !s.group_commit().is_poisoned(),
            "retention": {
                "log_max_age_seconds": inner.cfg.log_max_age_seconds,
                "log_max_bytes": inner.cfg.log_max_bytes,
                "seen_max_age_seconds": inner.cfg.seen_max_age_seconds,
                "content_window_seconds": inner.cfg.content_window_seconds,
            },
        }),
    )
}
