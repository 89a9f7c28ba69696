//! `GET /iep04/messages` (read the log after a cursor, long-poll with `wait`) and
//! `GET /iep04/messages/{uuid}` (one message, with its withdrawal/replacement status).
//!
//! The read goes through the exchange's one reader of the log
//! ([`sighthub_exchange::Reader`]: scan, filter by the key's grants, page, wait); only the
//! rendering and the cursor in the request are this handler's.

use super::iep04::{
    cursor_seq, flag, parse_uuid, query, read_params, require_read, with_header, ReadParams,
    COUNT_HEADER, CURSOR_HEADER, MAX_LINKS, MORE_HEADER, READ_PARAMS,
};
use super::iep04_links::marks;
use super::{blocking, Resp};
use crate::error::{bytes_response, json_response, ApiError};
use hyper::StatusCode;
use serde_json::{json, Value};
use sighthub_exchange::export::{json_page, Framing, Renderer};
use sighthub_exchange::record::encode_cursor;
use sighthub_exchange::{Cut, Error as ExError, Grants, Inner, PageEnd, Reader};
use sighthub_iep04::Message;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use uuid::Uuid;

/// `GET /iep04/messages?after=&limit=&wait=&export=&with_type=&format=`.
pub(crate) async fn read_route(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    raw_query: &str,
    accept: Option<&str>,
) -> Result<Resp, ApiError> {
    let q = query(raw_query, READ_PARAMS)?;
    let p = read_params(&inner.cfg, &q, accept)?;
    let after = match q.get("after") {
        Some(c) if !c.is_empty() => cursor_seq(inner, c)?,
        _ => 0,
    };
    read(inner, grants, after, p).await
}

/// `GET /iep04/messages/{uuid}?export=&with_type=`.
pub(crate) async fn message_route(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    id: &str,
    raw_query: &str,
) -> Result<Resp, ApiError> {
    let q = query(raw_query, &["export", "with_type"])?;
    get_message(inner, grants, parse_uuid(id)?, &q).await
}

pub(crate) async fn read(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    after: u64,
    p: ReadParams,
) -> Result<Resp, ApiError> {
    require_read(&grants)?;
    let store = &inner.store;
    let epoch = store.epoch();
    if p.limit == 0 {
        // The cursor of "now": a new consumer that wants only what comes next.
        let c = encode_cursor(after.max(store.durable()), epoch);
        return Ok(page_response(p.framing, &c, 0, false, false, Vec::new()));
    }
    let deadline = tokio::time::Instant::now() + p.wait;
    // The one reader of the log (scan, filter by these grants, page, wait); the cursor
    // comes with the request.
    let mut reader = Reader::new(
        Arc::clone(store),
        Arc::clone(&grants),
        inner.cfg.default_tlp,
    );
    let mut cursor = after;
    let mut truncated = false;
    loop {
        let (r, g) = (reader.clone(), Arc::clone(&grants));
        let (default_tlp, export, framing, limit) =
            (inner.cfg.default_tlp, p.export, p.framing, p.limit);
        let max_bytes = inner.cfg.max_page_bytes;
        let max_scan = limit.saturating_mul(16).clamp(10_000, 200_000);
        let (out, count, end): (Vec<u8>, usize, PageEnd) = blocking(move || {
            let mut page =
                Renderer::new(&g, default_tlp, export, framing, limit).with_max_bytes(max_bytes);
            let end = r.page(cursor, max_scan, |_, e| match page.render(e) {
                ControlFlow::Continue(()) => ControlFlow::Continue(()),
                // The last entry examined did not fit: the next page starts with it.
                ControlFlow::Break(()) if page.overflow => ControlFlow::Break(Cut::Before),
                ControlFlow::Break(()) => ControlFlow::Break(Cut::After),
            })?;
            Ok((page.out, page.count, end))
        })
        .await?;
        truncated |= end.truncated;
        cursor = end.last;
        let done = count > 0 || !end.at_end || p.wait.is_zero();
        if !done {
            let waited = tokio::time::timeout_at(deadline, reader.wait_past(cursor)).await;
            if matches!(waited, Ok(true)) {
                continue;
            }
        }
        let c = encode_cursor(cursor, epoch);
        return Ok(page_response(
            p.framing,
            &c,
            count,
            !end.at_end,
            truncated,
            out,
        ));
    }
}

pub(crate) fn page_response(
    framing: Framing,
    cursor: &str,
    count: usize,
    more: bool,
    truncated: bool,
    out: Vec<u8>,
) -> Resp {
    let resp = match framing {
        Framing::Json => bytes_response(
            StatusCode::OK,
            "application/json",
            json_page(cursor, count, more, truncated, &out),
        ),
        Framing::NdJson => bytes_response(StatusCode::OK, "application/x-ndjson", out),
    };
    let resp = with_header(resp, CURSOR_HEADER, cursor);
    let resp = with_header(resp, MORE_HEADER, if more { "true" } else { "false" });
    let resp = with_header(resp, COUNT_HEADER, &count.to_string());
    with_header(
        resp,
        "iep04-truncated",
        if truncated { "true" } else { "false" },
    )
}

async fn get_message(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    uuid: Uuid,
    q: &HashMap<String, String>,
) -> Result<Resp, ApiError> {
    require_read(&grants)?;
    let with_type = flag(q, "with_type")?;
    let bare = match q.get("export").map(String::as_str) {
        None | Some("envelope") => false,
        Some("intelmq") => true,
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "export={v}: use envelope or intelmq."
            )))
        }
    };
    let store = Arc::clone(&inner.store);
    let found = blocking(move || {
        let Some((seq, rec)) = store.lookup(&uuid)? else {
            return Ok(None);
        };
        let links = store.links_to(&uuid, MAX_LINKS)?;
        Ok(Some((seq, rec, links)))
    })
    .await?;
    let unknown = || ApiError::NotFound(format!("No message {uuid} here."));
    let Some((seq, rec, links)) = found else {
        return Err(unknown());
    };
    // Access first: a key that may not read the message learns nothing, not even that it
    // exists or existed (a dropped message's feed and TLP are gone with it, so only a key
    // that reads everything is told it was dropped).
    let Some(rec) = rec else {
        if !grants.reads_everything() {
            return Err(unknown());
        }
        return Err(ApiError::Gone(format!(
            "Message {uuid} (seq {seq}) was dropped from the log by retention."
        )));
    };
    let entry = rec.entry()?;
    if !grants.may_read(
        entry.format_type,
        &entry.tags,
        entry.tlp,
        inner.cfg.default_tlp,
    ) {
        return Err(unknown());
    }
    let message: Value = if bare {
        Message::from_slice(entry.json)
            .ok()
            .and_then(|m| m.to_bare_event(with_type).ok())
            .map(Value::Object)
            .ok_or_else(|| ApiError::BadRequest("This message has no bare IntelMQ form.".into()))?
    } else {
        serde_json::from_slice(entry.json).map_err(|_| ExError::corrupt("stored envelope"))?
    };
    let (withdrawn, replaced) = marks(uuid, &links, entry.org);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "uuid": uuid.to_string(),
            "seq": seq,
            "accepted_at": entry.accepted_at,
            "withdrawn_by": withdrawn,
            "replaced_by": replaced,
            "message": message,
        }),
    ))
}
