//! The `/iep04/` routes and their handlers.
//!
//! | method | path | what |
//! |---|---|---|
//! | `POST` | `/iep04/messages` | publish: one envelope, a JSON array, an ND-JSON stream, or a bare IntelMQ event (what IntelMQ's REST API output bot sends) |
//! | `GET` | `/iep04/messages?after=&limit=&wait=&export=&with_type=&format=` | read the log after a cursor, long-poll with `wait` |
//! | `GET` | `/iep04/messages/{uuid}` | one message, with its withdrawal/replacement status |
//! | `GET` | `/iep04/links/{uuid}` | every message linking to `uuid` |
//! | `GET` | `/iep04/links?alternate=ID` | every message carrying an opaque alternate id |
//! | `GET` | `/iep04/consumers/{name}` | a named consumer's server-side cursor |
//! | `GET` | `/iep04/consumers/{name}/messages` | read after that cursor (does not move it) |
//! | `POST` | `/iep04/consumers/{name}/ack` | move it forward to a cursor (`{"cursor": …}` or `?cursor=`) |
//! | `DELETE` | `/iep04/consumers/{name}` | forget it |
//! | `GET` | `/iep04/status` | identity, log bounds, retention |
//!
//! Check order: route → method → key (401/403) → parameters (400) → body (413) → access of
//! each message (403 for the whole request, nothing written).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::{header, Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use sighthub_iep04::{Message, NdjsonReader};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use crate::access::Grants;
use crate::error::{bytes_response, json_response, Error, Result, StorageError};
use crate::export::{json_page, Export, Framing, Renderer};
use crate::ingest::{BodyKind, Collector, Slot};
use crate::record::{decode_cursor, encode_cursor, LinkRel};
use crate::store::{now_secs, IncomingLink, OnRefusal, Outcome, ScanEnd};
use crate::{Exchange, ExchangeConfig, Inner};

type Resp = Response<Full<Bytes>>;

/// Response header carrying the next cursor of a read.
pub const CURSOR_HEADER: &str = "iep04-cursor";
/// Response header: more messages are already available after the cursor.
pub const MORE_HEADER: &str = "iep04-more";
/// Response header: messages in this page.
pub const COUNT_HEADER: &str = "iep04-count";

/// The most links or alternates one answer lists.
const MAX_LINKS: usize = 10_000;

/// What a path asks for (`pub`, like the decoders below, for the fuzz targets).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Route {
    Messages,
    Message(String),
    Links(String),
    LinksByAlternate,
    Consumer(String),
    ConsumerMessages(String),
    ConsumerAck(String),
    Status,
}

fn decode_segment(s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Error::BadRequest("Path segment is not valid UTF-8 once decoded.".into()))
}

/// The route of a request path.
pub fn route(path: &str) -> Result<Route> {
    let rest = path.strip_prefix("/iep04/").unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').collect();
    let no_route = || Error::NotFound(format!("No such route: {path}. GET / lists the routes."));
    Ok(match parts.as_slice() {
        ["messages"] => Route::Messages,
        ["messages", id] if !id.is_empty() => Route::Message(decode_segment(id)?),
        ["links"] => Route::LinksByAlternate,
        ["links", id] if !id.is_empty() => Route::Links(decode_segment(id)?),
        ["consumers", name] if !name.is_empty() => Route::Consumer(decode_segment(name)?),
        ["consumers", name, "messages"] if !name.is_empty() => {
            Route::ConsumerMessages(decode_segment(name)?)
        }
        ["consumers", name, "ack"] if !name.is_empty() => Route::ConsumerAck(decode_segment(name)?),
        ["status"] => Route::Status,
        _ => return Err(no_route()),
    })
}

/// Strict query parsing: unknown, repeated or non-UTF-8 parameters are a 400.
pub fn query(raw: &str, allowed: &[&str]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(Error::BadRequest(format!(
                "Unknown parameter '{k}' (allowed here: {}).",
                allowed.join(", ")
            )));
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(Error::BadRequest(format!("Parameter '{k}' is repeated.")));
        }
    }
    Ok(out)
}

fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool> {
    match q.get(name).map(String::as_str) {
        None | Some("0") | Some("false") | Some("no") => Ok(false),
        Some("") | Some("1") | Some("true") | Some("yes") => Ok(true),
        Some(v) => Err(Error::BadRequest(format!(
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
) -> Result<ReadParams> {
    let limit = match q.get("limit") {
        None => cfg.default_limit,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= cfg.max_limit)
            .ok_or_else(|| Error::BadRequest(format!("limit must be 0..={}.", cfg.max_limit)))?,
    };
    let wait = match q.get("wait") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= cfg.max_wait_seconds)
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "wait must be 0..={} seconds.",
                    cfg.max_wait_seconds
                ))
            })?,
    };
    let with_type = flag(q, "with_type")?;
    let export = match q.get("export").map(String::as_str) {
        None | Some("envelope") => {
            if with_type {
                return Err(Error::BadRequest(
                    "with_type applies to export=intelmq.".into(),
                ));
            }
            Export::Envelope
        }
        Some("intelmq") => Export::IntelMq { with_type },
        Some(v) => {
            return Err(Error::BadRequest(format!(
                "export={v}: use envelope or intelmq."
            )))
        }
    };
    let framing = match q.get("format").map(String::as_str) {
        Some("json") => Framing::Json,
        Some("ndjson") => Framing::NdJson,
        Some(v) => {
            return Err(Error::BadRequest(format!(
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

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Storage(StorageError::Io(std::io::Error::other(format!(
        "task failed: {e}"
    ))))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(join_error)?
}

fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| Error::BadRequest(format!("'{s}' is not a UUID.")))
}

fn consumer_name(name: &str) -> Result<&str> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name)
    } else {
        Err(Error::BadRequest(
            "A consumer name is 1 to 128 of A-Z a-z 0-9 . _ -".into(),
        ))
    }
}

fn with_header(mut resp: Resp, name: &'static str, value: &str) -> Resp {
    if let Ok(v) = header::HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

impl Exchange {
    /// Answers one request under `/iep04/`. Never fails: every error becomes its response.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match self.dispatch(req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn dispatch<B>(&self, req: Request<B>) -> Result<Resp>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let inner = Arc::clone(self.inner()?);
        let route = route(req.uri().path())?;
        let m = req.method().clone();
        let get = m == Method::GET || m == Method::HEAD;
        let post = m == Method::POST;
        let wrong = |allow: &'static str| Err(Error::Method(m.to_string(), allow));
        let allowed = match &route {
            Route::Messages => get || post,
            Route::Consumer(_) => get || m == Method::DELETE,
            Route::ConsumerAck(_) => post,
            _ => get,
        };
        if !allowed {
            return match &route {
                Route::Messages => wrong("GET, POST"),
                Route::Consumer(_) => wrong("GET, DELETE"),
                Route::ConsumerAck(_) => wrong("POST"),
                _ => wrong("GET"),
            };
        }
        let grants = inner.keys.caller(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )?;
        let raw_query = req.uri().query().unwrap_or("").to_owned();
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match route {
            Route::Messages if post => {
                let q = query(&raw_query, &["results"])?;
                publish(&inner, grants, req, &q).await
            }
            Route::Messages => {
                let q = query(&raw_query, READ_PARAMS)?;
                let p = read_params(&inner.cfg, &q, accept.as_deref())?;
                let after = match q.get("after") {
                    Some(c) if !c.is_empty() => cursor_seq(&inner, c)?,
                    _ => 0,
                };
                read(&inner, grants, after, p).await
            }
            Route::Message(id) => {
                let q = query(&raw_query, &["export", "with_type"])?;
                get_message(&inner, grants, parse_uuid(&id)?, &q).await
            }
            Route::Links(id) => {
                query(&raw_query, &[])?;
                links(&inner, grants, parse_uuid(&id)?).await
            }
            Route::LinksByAlternate => {
                let q = query(&raw_query, &["alternate"])?;
                let alt = q.get("alternate").cloned().ok_or_else(|| {
                    Error::BadRequest(
                        "GET /iep04/links needs ?alternate=<id> (or /iep04/links/<uuid>).".into(),
                    )
                })?;
                if !crate::record::alternate_fits(&alt) {
                    return Err(Error::BadRequest(format!(
                        "alternate is {} bytes long; the limit is {} bytes.",
                        alt.len(),
                        crate::record::MAX_ALTERNATE_LEN
                    )));
                }
                by_alternate(&inner, grants, alt).await
            }
            Route::Consumer(name) => {
                query(&raw_query, &[])?;
                let name = consumer_name(&name)?;
                require_read(&grants)?;
                if m == Method::DELETE {
                    let (store, org, n) = (Arc::clone(&inner.store), grants.org, name.to_owned());
                    let (existed, ticket) =
                        blocking(move || store.consumer_delete(org, &n)).await?;
                    inner.store.group_commit().wait(ticket).await?;
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"name": name, "deleted": existed}),
                    ))
                } else {
                    consumer_state(&inner, &grants, name)
                }
            }
            Route::ConsumerMessages(name) => {
                let q = query(
                    &raw_query,
                    &["limit", "wait", "export", "with_type", "format"],
                )?;
                let name = consumer_name(&name)?;
                require_read(&grants)?;
                let p = read_params(&inner.cfg, &q, accept.as_deref())?;
                let after = inner
                    .store
                    .consumer(grants.org, name)?
                    .map_or(0, |c| c.acked);
                read(&inner, grants, after, p).await
            }
            Route::ConsumerAck(name) => {
                let q = query(&raw_query, &["cursor"])?;
                let name = consumer_name(&name)?.to_owned();
                require_read(&grants)?;
                let cursor = match q.get("cursor") {
                    Some(c) => c.clone(),
                    None => ack_cursor(&small_body(req, 64 * 1024).await?)?,
                };
                let seq = cursor_seq(&inner, &cursor)?;
                let (store, org) = (Arc::clone(&inner.store), grants.org);
                let n = name.clone();
                let (_, ticket) =
                    blocking(move || store.consumer_ack(org, &n, seq, now_secs())).await?;
                inner.store.group_commit().wait(ticket).await?;
                consumer_state(&inner, &grants, &name)
            }
            Route::Status => {
                query(&raw_query, &[])?;
                Ok(status(&inner))
            }
        }
    }
}

fn require_read(grants: &Grants) -> Result<()> {
    if grants.reads_anything() {
        Ok(())
    } else {
        Err(Error::Forbidden("This key may not read.".into()))
    }
}

/// The cursor of an acknowledgement body, `{"cursor": "..."}`.
pub fn ack_cursor(body: &[u8]) -> Result<String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "Body must be {{\"cursor\": \"...\"}} (or use ?cursor=): {e}"
        ))
    })?;
    v.get("cursor")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::BadRequest("Body must be {\"cursor\": \"...\"}.".into()))
}

/// Decodes a cursor and checks it belongs to this exchange and is not ahead of the log.
fn cursor_seq(inner: &Inner, c: &str) -> Result<u64> {
    let (seq, epoch) =
        decode_cursor(c).ok_or_else(|| Error::BadRequest("Invalid cursor.".into()))?;
    if epoch != inner.store.epoch() {
        return Err(Error::BadRequest(
            "This cursor is from another exchange (or from before its data were reset).".into(),
        ));
    }
    if seq > inner.store.durable() {
        return Err(Error::BadRequest("This cursor is ahead of the log.".into()));
    }
    Ok(seq)
}

/// Reads a small body whole (acknowledgements).
async fn small_body<B>(req: Request<B>, limit: usize) -> Result<Bytes>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::TooLarge(limit)),
        Err(_) => Err(Error::BadRequest("Truncated or unreadable body.".into())),
    }
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
    ) -> Result<()> {
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
    async fn settle(&mut self, col: &mut Collector, keep: usize) -> Result<()> {
        while self.inflight.len() > keep {
            if let Some(h) = self.inflight.pop_front() {
                col.absorb(h.await.map_err(join_error)?);
            }
        }
        Ok(())
    }

    async fn finish(&mut self, col: &mut Collector) -> Result<()> {
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
) -> Result<Resp>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if !grants.publishes_anything() {
        return Err(Error::Forbidden("This key may not publish.".into()));
    }
    let results = q.get("results").map_or("all", String::as_str).to_owned();
    if !matches!(results.as_str(), "all" | "errors" | "none") {
        return Err(Error::BadRequest(
            "results= must be all, errors or none.".into(),
        ));
    }
    let limit = inner.cfg.max_request_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::TooLarge(limit));
    }
    let kind = BodyKind::from_content_type(
        req.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let max_line = inner.cfg.max_line_bytes;
    let max_items = inner.cfg.max_items_per_request;
    let too_many = || Error::OverLimit {
        limit: "max_items_per_request",
        max: max_items as u64,
        what: format!("The request holds more than {max_items} messages"),
    };
    let mut col = Collector::new(grants, inner.store.instance()).with_max_items(max_items);
    let mut lines = 0usize;
    let mut body = std::pin::pin!(req.into_body());
    let mut total = 0usize;
    let mut reader = (kind == BodyKind::NdJson).then(|| NdjsonReader::new(max_line));
    let mut segments = Segments::default();
    let mut buffer = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Error::BadRequest("Truncated or unreadable body.".into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > limit {
            return Err(Error::TooLarge(limit));
        }
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
        if crate::ingest::is_oversized(e) {
            return Err(Error::OverLimit {
                limit: "max_line_bytes",
                max: max_line as u64,
                what: format!("The message is longer than {max_line} bytes"),
            });
        }
    }
    if !col.refused.is_empty() {
        return Err(Error::Refused(col.refused));
    }
    if col.is_empty() {
        return Err(Error::BadRequest("The body holds no message.".into()));
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

async fn read(inner: &Arc<Inner>, grants: Arc<Grants>, after: u64, p: ReadParams) -> Result<Resp> {
    require_read(&grants)?;
    let store = &inner.store;
    let epoch = store.epoch();
    if p.limit == 0 {
        // The cursor of "now": a new consumer that wants only what comes next.
        let c = encode_cursor(after.max(store.durable()), epoch);
        return Ok(page_response(p.framing, &c, 0, false, false, Vec::new()));
    }
    let deadline = tokio::time::Instant::now() + p.wait;
    let mut rx = store.subscribe();
    let mut cursor = after;
    let mut truncated = false;
    loop {
        rx.borrow_and_update();
        let (s, g) = (Arc::clone(store), Arc::clone(&grants));
        let (default_tlp, export, framing, limit) =
            (inner.default_tlp, p.export, p.framing, p.limit);
        let max_bytes = inner.cfg.max_page_bytes;
        let max_scan = limit.saturating_mul(16).clamp(10_000, 200_000);
        let (out, count, mut end, overflow): (Vec<u8>, usize, ScanEnd, bool) =
            blocking(move || {
                let mut r = Renderer::new(&g, default_tlp, export, framing, limit)
                    .with_max_bytes(max_bytes);
                let end = s.scan(cursor, max_scan, |_, e| r.visit(e))?;
                Ok((r.out, r.count, end, r.overflow))
            })
            .await?;
        if overflow {
            // The last entry examined did not fit: the next page starts with it.
            end.last = end.last.saturating_sub(1);
            end.at_end = false;
        }
        truncated |= end.truncated;
        cursor = end.last;
        let done = count > 0 || !end.at_end || p.wait.is_zero();
        if !done {
            let waited = tokio::time::timeout_at(deadline, rx.wait_for(|d| *d > cursor)).await;
            if matches!(waited, Ok(Ok(_))) {
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

fn page_response(
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

/// Withdrawals and replacements of a message of `target_org`, among the links pointing at
/// it (`target`): those that take effect by the one rule ([`sighthub_iep04::authority`]).
fn marks(
    target: Uuid,
    links: &[IncomingLink],
    target_org: Option<Uuid>,
) -> (Vec<String>, Vec<String>) {
    let (mut withdrawn, mut replaced) = (Vec::new(), Vec::new());
    for l in links {
        // The index keeps a typed link's type and sides: rebuild it as the source wrote it.
        let LinkRel::Typed {
            link_type,
            target_left,
            from_self,
        } = &l.rel
        else {
            continue;
        };
        let other = if *from_self { l.source } else { Uuid::nil() };
        let (left, right) = if *target_left {
            (target, other)
        } else {
            (other, target)
        };
        let link = sighthub_iep04::TypedLink {
            left,
            link_type: sighthub_iep04::LinkType::from(link_type.as_str()),
            right,
        };
        let Some(claim) = sighthub_iep04::claim_of_link(l.source, &link) else {
            continue;
        };
        if claim.target != target || !sighthub_iep04::takes_effect(l.org, target_org) {
            continue;
        }
        match claim.act {
            sighthub_iep04::Act::Withdraw => withdrawn.push(l.source.to_string()),
            sighthub_iep04::Act::Replace => replaced.push(l.source.to_string()),
            sighthub_iep04::Act::UpdateTags => {}
        }
    }
    (withdrawn, replaced)
}

async fn get_message(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    uuid: Uuid,
    q: &HashMap<String, String>,
) -> Result<Resp> {
    require_read(&grants)?;
    let with_type = flag(q, "with_type")?;
    let bare = match q.get("export").map(String::as_str) {
        None | Some("envelope") => false,
        Some("intelmq") => true,
        Some(v) => {
            return Err(Error::BadRequest(format!(
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
    let unknown = || Error::NotFound(format!("No message {uuid} here."));
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
        return Err(Error::Gone(format!(
            "Message {uuid} (seq {seq}) was dropped from the log by retention."
        )));
    };
    let entry = rec.entry()?;
    if !grants.may_read(entry.format_type, &entry.tags, entry.tlp, inner.default_tlp) {
        return Err(unknown());
    }
    let message: Value = if bare {
        Message::from_slice(entry.json)
            .ok()
            .and_then(|m| m.to_bare_event(with_type).ok())
            .map(Value::Object)
            .ok_or_else(|| Error::BadRequest("This message has no bare IntelMQ form.".into()))?
    } else {
        serde_json::from_slice(entry.json).map_err(|_| Error::corrupt("stored envelope"))?
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

fn rel_json(rel: &LinkRel) -> Value {
    match rel {
        LinkRel::Related => json!({"relation": "related"}),
        LinkRel::Group => json!({"relation": "group"}),
        LinkRel::Typed {
            link_type,
            target_left,
            from_self,
        } => json!({
            "relation": "typed",
            "type": link_type,
            "side": if *target_left { "left" } else { "right" },
            "from_self": from_self,
        }),
    }
}

async fn links(inner: &Arc<Inner>, grants: Arc<Grants>, uuid: Uuid) -> Result<Resp> {
    require_read(&grants)?;
    let store = Arc::clone(&inner.store);
    let default_tlp = inner.default_tlp;
    let g = Arc::clone(&grants);
    let (list, target_org) = blocking(move || {
        let mut out = Vec::new();
        for l in store.links_to(&uuid, MAX_LINKS)? {
            if let Some(rec) = store.get_seq(l.seq)? {
                let e = rec.entry()?;
                if g.may_read(e.format_type, &e.tags, e.tlp, default_tlp) {
                    out.push(l);
                }
            }
        }
        let target_org = match store.lookup(&uuid)? {
            Some((_, Some(rec))) => rec.entry().ok().and_then(|e| e.org),
            _ => None,
        };
        Ok((out, target_org))
    })
    .await?;
    let (withdrawn, replaced) = marks(uuid, &list, target_org);
    let items: Vec<Value> = list
        .iter()
        .map(|l| {
            let mut v = rel_json(&l.rel);
            v["uuid"] = Value::from(l.source.to_string());
            v["seq"] = Value::from(l.seq);
            v
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "uuid": uuid.to_string(),
            "count": items.len(),
            "links": items,
            "withdrawn_by": withdrawn,
            "replaced_by": replaced,
        }),
    ))
}

async fn by_alternate(inner: &Arc<Inner>, grants: Arc<Grants>, alt: String) -> Result<Resp> {
    require_read(&grants)?;
    let store = Arc::clone(&inner.store);
    let default_tlp = inner.default_tlp;
    let a = alt.clone();
    let list = blocking(move || {
        let mut out = Vec::new();
        for (uuid, seq) in store.by_alternate(&a, MAX_LINKS)? {
            if let Some(rec) = store.get_seq(seq)? {
                let e = rec.entry()?;
                if grants.may_read(e.format_type, &e.tags, e.tlp, default_tlp) {
                    out.push(json!({"uuid": uuid.to_string(), "seq": seq}));
                }
            }
        }
        Ok(out)
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"alternate": alt, "count": list.len(), "messages": list}),
    ))
}

fn consumer_state(inner: &Inner, grants: &Grants, name: &str) -> Result<Resp> {
    let state = inner.store.consumer(grants.org, name)?;
    let acked = state.map_or(0, |s| s.acked);
    let head = inner.store.durable();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "name": name,
            "exists": state.is_some(),
            "cursor": encode_cursor(acked, inner.store.epoch()),
            "acked_seq": acked,
            "updated_at": state.map(|s| s.updated_at),
            "head_seq": head,
            "behind": head.saturating_sub(acked),
        }),
    ))
}

fn status(inner: &Inner) -> Resp {
    let s = &inner.store;
    let (records, uuids) = s.approximate_counts();
    let head = s.durable();
    json_response(
        StatusCode::OK,
        &json!({
            "org": s.org().to_string(),
            "instance": s.instance().to_string(),
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

#[cfg(test)]
mod test;
