//! What the `/iep04/` routes share: the strict query string, the read parameters, the
//! consumer name, the cursor checks, the response headers of a page. `pub` for the fuzz
//! targets, which decode requests without a store.

use super::Resp;
use crate::error::ApiError;
use hyper::header;
use serde_json::Value;
use sighthub_exchange::export::{Export, Framing};
use sighthub_exchange::record::decode_cursor;
use sighthub_exchange::{ExchangeConfig, Grants, Inner};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// Response header carrying the next cursor of a read.
pub const CURSOR_HEADER: &str = "iep04-cursor";
/// Response header: more messages are already available after the cursor.
pub const MORE_HEADER: &str = "iep04-more";
/// Response header: messages in this page.
pub const COUNT_HEADER: &str = "iep04-count";

/// The most links or alternates one answer lists.
pub(crate) const MAX_LINKS: usize = 10_000;

/// Strict query parsing: unknown, repeated or non-UTF-8 parameters are a 400.
pub fn query(raw: &str, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(ApiError::BadRequest(format!(
                "Unknown parameter '{k}' (allowed here: {}).",
                allowed.join(", ")
            )));
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(ApiError::BadRequest(format!(
                "Parameter '{k}' is repeated."
            )));
        }
    }
    Ok(out)
}

pub(crate) fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("0") | Some("false") | Some("no") => Ok(false),
        Some("") | Some("1") | Some("true") | Some("yes") => Ok(true),
        Some(v) => Err(ApiError::BadRequest(format!(
            "{name}={v}: use 1/true or 0/false."
        ))),
    }
}

/// Parameters of a read.
#[derive(Debug)]
#[allow(missing_docs)]
pub struct ReadParams {
    pub limit: usize,
    pub wait: Duration,
    pub export: Export,
    pub framing: Framing,
}

/// The query parameters of `GET /iep04/messages`.
pub const READ_PARAMS: &[&str] = &["after", "limit", "wait", "export", "with_type", "format"];

/// The parameters of a read from its query and `Accept` header.
pub fn read_params(
    cfg: &ExchangeConfig,
    q: &HashMap<String, String>,
    accept: Option<&str>,
) -> Result<ReadParams, ApiError> {
    let limit = match q.get("limit") {
        None => cfg.default_limit,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= cfg.max_limit)
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be 0..={}.", cfg.max_limit)))?,
    };
    let wait = match q.get("wait") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= cfg.max_wait_seconds)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "wait must be 0..={} seconds.",
                    cfg.max_wait_seconds
                ))
            })?,
    };
    let with_type = flag(q, "with_type")?;
    let export = match q.get("export").map(String::as_str) {
        None | Some("envelope") => {
            if with_type {
                return Err(ApiError::BadRequest(
                    "with_type applies to export=intelmq.".into(),
                ));
            }
            Export::Envelope
        }
        Some("intelmq") => Export::IntelMq { with_type },
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "export={v}: use envelope or intelmq."
            )))
        }
    };
    let framing = match q.get("format").map(String::as_str) {
        Some("json") => Framing::Json,
        Some("ndjson") => Framing::NdJson,
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "format={v}: use json or ndjson."
            )))
        }
        None if accept.is_some_and(|a| a.contains("ndjson") || a.contains("jsonl")) => {
            Framing::NdJson
        }
        None => Framing::Json,
    };
    Ok(ReadParams {
        limit,
        wait: Duration::from_secs(wait),
        export,
        framing,
    })
}

pub(crate) fn parse_uuid(s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| ApiError::BadRequest(format!("'{s}' is not a UUID.")))
}

pub(crate) fn consumer_name(name: &str) -> Result<&str, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name)
    } else {
        Err(ApiError::BadRequest(
            "A consumer name is 1 to 128 of A-Z a-z 0-9 . _ -".into(),
        ))
    }
}

pub(crate) fn with_header(mut resp: Resp, name: &'static str, value: &str) -> Resp {
    if let Ok(v) = header::HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

pub(crate) fn require_read(grants: &Grants) -> Result<(), ApiError> {
    if grants.reads_anything() {
        Ok(())
    } else {
        Err(ApiError::Denied("This key may not read.".into()))
    }
}

/// The cursor of an acknowledgement body, `{"cursor": "..."}`.
pub fn ack_cursor(body: &[u8]) -> Result<String, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "Body must be {{\"cursor\": \"...\"}} (or use ?cursor=): {e}"
        ))
    })?;
    v.get("cursor")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::BadRequest("Body must be {\"cursor\": \"...\"}.".into()))
}

/// Decodes a cursor and checks it belongs to this exchange and is not ahead of the log.
pub(crate) fn cursor_seq(inner: &Inner, c: &str) -> Result<u64, ApiError> {
    let (seq, epoch) =
        decode_cursor(c).ok_or_else(|| ApiError::BadRequest("Invalid cursor.".into()))?;
    if epoch != inner.store.epoch() {
        return Err(ApiError::BadRequest(
            "This cursor is from another exchange (or from before its data were reset).".into(),
        ));
    }
    if seq > inner.store.durable() {
        return Err(ApiError::BadRequest(
            "This cursor is ahead of the log.".into(),
        ));
    }
    Ok(seq)
}
