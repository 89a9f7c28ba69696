//! `POST /iep04/messages`: publish one envelope, a JSON array, an ND-JSON stream, or a bare
//! IntelMQ event (what IntelMQ's REST API output bot sends). The body is read through the
//! one [`BodyReader`]; streamed lines are prepared in segments on blocking threads; the
//! answer is sent once what was accepted is durable. Check order: key (401/403) →
//! parameters (400) → body (413) → access of each message (403 for the whole request,
//! nothing written).

use super::iep04::query;
use super::{blocking, join_error, Resp};
use crate::body::{BodyReader, Limit};
use crate::error::{json_response, ApiError};
use bytes::Bytes;
use hyper::body::Body;
use hyper::{header, Request, StatusCode};
use serde_json::{json, Value};
use sighthub_exchange::ingest::{BodyKind, Collector, Slot};
use sighthub_exchange::store::{OnRefusal, Outcome};
use sighthub_exchange::{Grants, Inner};
use sighthub_iep04::NdjsonReader;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// `POST /iep04/messages?results=all|errors|none`.
pub(crate) async fn publish_route<B>(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    req: Request<B>,
    raw_query: &str,
) -> Result<Resp, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let q = query(raw_query, &["results"])?;
    publish(inner, grants, req, &q).await
}

/// Lines of a streamed body per segment.
const SEGMENT_LINES: usize = 256;
/// Segments being prepared at once for one request.
const SEGMENTS_IN_FLIGHT: usize = 2;

/// The lines of a streamed body are decoded and prepared (the costly part: JSON parsing,
/// content hash, envelope) in segments on blocking threads, while the rest of the body is
/// read and in parallel with each other; the results are merged in request order.
#[derive(Default)]
struct Segments {
    lines: Vec<sighthub_iep04::Result<sighthub_iep04::Line>>,
    inflight: std::collections::VecDeque<tokio::task::JoinHandle<Collector>>,
}

impl Segments {
    async fn push(
        &mut self,
        line: sighthub_iep04::Result<sighthub_iep04::Line>,
        col: &mut Collector,
    ) -> Result<(), ApiError> {
        self.lines.push(line);
        if self.lines.len() >= SEGMENT_LINES {
            self.dispatch(col);
            self.settle(col, SEGMENTS_IN_FLIGHT).await?;
        }
        Ok(())
    }

    fn dispatch(&mut self, col: &Collector) {
        let lines = std::mem::take(&mut self.lines);
        let mut seg = col.sibling();
        self.inflight
            .push_back(tokio::task::spawn_blocking(move || {
                for l in lines {
                    seg.add_line(l);
                }
                seg
            }));
    }

    /// Merges finished segments, in order, until at most `keep` are in flight.
    async fn settle(&mut self, col: &mut Collector, keep: usize) -> Result<(), ApiError> {
        while self.inflight.len() > keep {
            if let Some(h) = self.inflight.pop_front() {
                col.absorb(h.await.map_err(join_error)?);
            }
        }
        Ok(())
    }

    async fn finish(&mut self, col: &mut Collector) -> Result<(), ApiError> {
        if self.inflight.is_empty() && self.lines.len() < 16 {
            // A small body: not worth a thread.
            for l in std::mem::take(&mut self.lines) {
                col.add_line(l);
            }
            return Ok(());
        }
        self.dispatch(col);
        self.settle(col, 0).await
    }
}

async fn publish<B>(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    req: Request<B>,
    q: &HashMap<String, String>,
) -> Result<Resp, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if !grants.publishes_anything() {
        return Err(ApiError::Denied("This key may not publish.".into()));
    }
    let results = q.get("results").map_or("all", String::as_str).to_owned();
    if !matches!(results.as_str(), "all" | "errors" | "none") {
        return Err(ApiError::BadRequest(
            "results= must be all, errors or none.".into(),
        ));
    }
    let kind = BodyKind::from_content_type(
        req.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let max_line = inner.cfg.max_line_bytes;
    let max_items = inner.cfg.max_items_per_request;
    let too_many = || ApiError::OverLimit {
        limit: "max_items_per_request",
        max: max_items as u64,
        what: format!("The request holds more than {max_items} messages"),
    };
    let mut col = Collector::new(grants, inner.store.instance()).with_max_items(max_items);
    let mut lines = 0usize;
    let (parts, body) = req.into_parts();
    let mut body = BodyReader::new(
        &parts.headers,
        body,
        Limit::Exchange(inner.cfg.max_request_bytes),
    )?;
    let mut reader = (kind == BodyKind::NdJson).then(|| NdjsonReader::new(max_line));
    let mut segments = Segments::default();
    let mut buffer = Vec::new();
    while let Some(data) = body.chunk().await? {
        match reader.as_mut() {
            // Streamed: lines are parsed and prepared as they arrive.
            // Past the item limit the rest of the body is read (within max_request_bytes)
            // but not parsed, so that the client gets the 413 rather than a reset
            // connection.
            Some(_) if lines > max_items => {}
            Some(r) => {
                r.push(&data);
                while let Some(line) = r.next_line() {
                    lines += 1;
                    if lines > max_items {
                        break;
                    }
                    segments.push(line, &mut col).await?;
                }
            }
            None => buffer.extend_from_slice(&data),
        }
    }
    if lines > max_items {
        return Err(too_many());
    }
    let single = match reader {
        Some(r) => {
            for line in r.finish() {
                lines += 1;
                if lines > max_items {
                    return Err(too_many());
                }
                segments.push(line, &mut col).await?;
            }
            segments.finish(&mut col).await?;
            false
        }
        None => {
            let (c, single) = blocking(move || {
                let single = col.decode_buffered(kind, &buffer, max_line);
                Ok((col, single))
            })
            .await?;
            col = c;
            single
        }
    };
    if col.too_many {
        return Err(too_many());
    }
    // The whole request is one message over max_line_bytes, in whatever shape it came.
    if let [Slot::Invalid(e)] = col.slots.as_slice() {
        if sighthub_exchange::ingest::is_oversized(e) {
            return Err(ApiError::OverLimit {
                limit: "max_line_bytes",
                max: max_line as u64,
                what: format!("The message is longer than {max_line} bytes"),
            });
        }
    }
    if !col.refused.is_empty() {
        return Err(ApiError::Refused(col.refused));
    }
    if col.is_empty() {
        return Err(ApiError::BadRequest("The body holds no message.".into()));
    }
    let uuids: Vec<Uuid> = col.items.iter().map(|p| p.uuid).collect();
    let Collector { items, slots, .. } = col;
    let outcomes = inner
        .store
        .publish(items, OnRefusal::RefuseRequest)
        .await?
        .outcomes;
    let (mut accepted, mut duplicate, mut errors) = (0u64, 0u64, 0u64);
    let mut list = Vec::new();
    for (index, slot) in slots.iter().enumerate() {
        let item = match slot {
            Slot::Prepared(i) => {
                let uuid = uuids.get(*i).map(Uuid::to_string);
                match outcomes.get(*i).and_then(|o| o.as_ref().ok()) {
                    Some(Outcome::Accepted { seq }) => {
                        accepted += 1;
                        json!({"index": index, "status": "accepted", "uuid": uuid, "seq": seq})
                    }
                    Some(Outcome::Updated { seq, target }) => {
                        accepted += 1;
                        json!({"index": index, "status": "accepted", "kind": "tag_update",
                               "uuid": uuid, "seq": seq, "target_seq": target})
                    }
                    Some(Outcome::Duplicate { seq, by_content }) => {
                        duplicate += 1;
                        if *by_content {
                            json!({"index": index, "status": "duplicate", "by": "content", "seq": seq})
                        } else {
                            json!({"index": index, "status": "duplicate", "by": "uuid", "uuid": uuid, "seq": seq})
                        }
                    }
                    Some(Outcome::UnknownTarget) => {
                        errors += 1;
                        json!({"index": index, "status": "error", "uuid": uuid, "field": "payload",
                               "error": "payload: empty, and meta.uuid is not a message this hub has (an empty payload updates the tags of a known message)"})
                    }
                    Some(Outcome::Gone { seq }) => {
                        errors += 1;
                        json!({"index": index, "status": "error", "uuid": uuid, "seq": seq,
                               "error": "the message to update was dropped from the log by retention"})
                    }
                    None => {
                        errors += 1;
                        json!({"index": index, "status": "error", "error": "not processed"})
                    }
                }
            }
            Slot::Invalid(e) => {
                errors += 1;
                json!({"index": index, "status": "error", "error": e.to_string(),
                       "line": e.line(), "field": e.field()})
            }
        };
        let keep = match results.as_str() {
            "all" => true,
            "errors" => item["status"] == "error",
            _ => false,
        };
        if keep {
            list.push(item);
        }
    }
    let status = if errors == slots.len() as u64 || (single && errors > 0) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut body = json!({"accepted": accepted, "duplicate": duplicate, "errors": errors});
    if results != "none" {
        body["results"] = Value::Array(list);
    }
    Ok(json_response(status, &body))
}
