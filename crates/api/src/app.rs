//! The composition root ([`App`]) and the request handlers.
//!
//! [`App::handle`] is the one place where a request becomes a response: parse the endpoint,
//! identify the caller, run the handler, turn any [`ApiError`] into its status and body.
//! Handlers follow SightingDB's check order: authentication → arguments → private-namespace
//! guard → value checks.

use crate::auth::{Auth, Caller};
use crate::bulk::{self, BulkItem};
use crate::error::{json_bytes, Access, ApiError};
use crate::latest::Latest;
use crate::query::Query;
use crate::router::{help_text, parse_endpoint, Endpoint};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::{header, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::json;
use sighthub_store::{
    ItemError, ListPage, Namespace, ReadOutcome, SightingStore, ValueFormat, View, WriteOp,
    WriteOutcome,
};
use std::sync::Arc;
use std::time::Instant;

/// Version reported by `/i`, `/health` and the OpenAPI document.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default and largest page for paged listings.
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 100_000;

/// Everything a request handler needs.
pub struct App {
    /// The storage backend.
    pub store: Arc<dyn SightingStore>,
    /// API keys.
    pub auth: Auth,
    /// Recent writes.
    pub latest: Latest,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Bounds on bulk items and listings (the store holds the tag and stats bounds).
    pub limits: crate::config::LimitsConfig,
    /// Start time, for `/health`.
    pub started: Instant,
    /// The IEP04 exchange: every path under `/iep04/` is handed to it.
    pub exchange: sighthub_exchange::Exchange,
}

type Resp = Response<Full<Bytes>>;

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The attribute view, keys in SightingDB's order.
#[derive(Serialize)]
struct ViewJson<'a> {
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

fn view_json(v: &View, stats: bool) -> ViewJson<'_> {
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

fn to_json<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    json_bytes(status, serde_json::to_vec(v).unwrap_or_default())
}

fn parse_ns(raw: &str) -> Result<Namespace, ApiError> {
    Namespace::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn guard_internal(ns: &Namespace) -> Result<(), ApiError> {
    if ns.is_internal() {
        Err(ApiError::Internal(ns.first_segment().to_owned()))
    } else {
        Ok(())
    }
}

fn resolve_ts(ts: Option<i64>, now: i64) -> i64 {
    match ts {
        None | Some(0) => now,
        Some(t) => t,
    }
}

/// The `after=` cursor of a listing page: base64url of the last stored value (`pub` for the
/// fuzz targets).
pub fn encode_cursor(stored: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(stored)
}

/// Decodes an `after=` cursor made by [`encode_cursor`] (`pub` for the fuzz targets).
pub fn decode_cursor(c: &str) -> Result<String, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::BadRequest("Invalid after= cursor.".into()))
}

/// Runs store work on a blocking thread, off the async workers. A panic there is a bug: it
/// is logged and answered 500, never reported as the client's fault.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %msg, "a request handler panicked");
            Err(ApiError::Server("a request handler panicked"))
        }
        Err(_) => Err(ApiError::Server("a request handler was cancelled")),
    }
}

/// The grant a route needs somewhere, checked on the headers before anything else; `None`
/// for the routes open to anyone (no key, no stored data).
fn route_access(endpoint: &Endpoint) -> Option<Access> {
    match endpoint {
        Endpoint::Info | Endpoint::Health | Endpoint::OpenApi | Endpoint::Help => None,
        Endpoint::Write(_)
        | Endpoint::Delete(_)
        | Endpoint::ConfigSet(_)
        | Endpoint::BulkWrite
        | Endpoint::BulkValidate => Some(Access::Write),
        Endpoint::Read(_)
        | Endpoint::ReadStats(_)
        | Endpoint::ConfigGet(_)
        | Endpoint::BulkRead(_)
        | Endpoint::Latest
        | Endpoint::Namespaces
        | Endpoint::Who => Some(Access::Read),
    }
}

impl App {
    /// Answers one request. Never fails: every error becomes its response.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Resp
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let is_head = req.method() == hyper::Method::HEAD;
        let mut resp = match self.dispatch(req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        if is_head {
            *resp.body_mut() = Full::new(Bytes::new());
        }
        resp
    }

    /// The routes open to anyone.
    fn public(&self, endpoint: &Endpoint) -> Resp {
        match endpoint {
            Endpoint::Health => to_json(
                StatusCode::OK,
                &json!({"status": "ok", "version": VERSION,
                        "uptime_seconds": self.started.elapsed().as_secs(),
                        "durable": !self.store.durability().is_poisoned()}),
            ),
            Endpoint::OpenApi => {
                let mut r = Response::new(Full::new(Bytes::from_static(
                    crate::OPENAPI_YAML.as_bytes(),
                )));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/yaml; charset=utf-8"),
                );
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("public, max-age=86400"),
                );
                r
            }
            Endpoint::Help => {
                let mut r = Response::new(Full::new(Bytes::from(help_text())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            _ => to_json(
                StatusCode::OK,
                &json!({"implementation": "sighthub", "version": VERSION,
                        "compatible_with": "SightingDB 0.7.8",
                        "vendor": "sighthub", "author": "sighthub developers"}),
            ),
        }
    }

    async fn dispatch<B>(self: &Arc<Self>, req: Request<B>) -> Result<Resp, ApiError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if req.uri().path().starts_with("/iep04/") {
            return Ok(self.exchange.handle(req).await);
        }
        let endpoint = parse_endpoint(req.method(), req.uri().path())?;
        let Some(access) = route_access(&endpoint) else {
            return Ok(self.public(&endpoint));
        };
        // Authenticate before anything is read or looked up: a missing key is 401, an unknown
        // key (or one without this kind of grant anywhere) 403, on the headers alone.
        let caller = self
            .auth
            .caller(
                req.headers()
                    .get(header::AUTHORIZATION)
                    .map(hyper::header::HeaderValue::as_bytes),
            )?
            .clone_owned(&self.auth);
        caller.as_caller().check_any(access)?;
        let raw_query = req.uri().query().unwrap_or("").to_owned();
        let query = || Query::parse(&raw_query).map_err(|e| ApiError::BadRequest(e.to_string()));
        match endpoint {
            Endpoint::Info | Endpoint::Health | Endpoint::OpenApi | Endpoint::Help => {
                Ok(self.public(&endpoint))
            }
            Endpoint::Write(ns) => self.write_one(&caller, &ns, query()?).await,
            Endpoint::Read(ns) => self.read_get(&caller, &ns, query()?, false).await,
            Endpoint::ReadStats(ns) => self.read_get(&caller, &ns, query()?, true).await,
            Endpoint::Delete(ns) => self.delete(&caller.as_caller(), &ns).await,
            Endpoint::ConfigGet(ns) => {
                let ns = parse_ns(&ns)?;
                caller.as_caller().check(Access::Read, &ns)?;
                Ok(self.config_answer(&ns))
            }
            Endpoint::ConfigSet(raw_ns) => {
                let ns = parse_ns(&raw_ns)?;
                caller.as_caller().check(Access::Write, &ns)?;
                guard_internal(&ns)?;
                let body = self.read_json_body(req).await?;
                self.config_set(ns, body).await
            }
            Endpoint::BulkWrite | Endpoint::BulkValidate => {
                let body = self.read_json_body(req).await?;
                let app = Arc::clone(self);
                if endpoint == Endpoint::BulkValidate {
                    blocking(move || app.bulk_validate(&caller, &body)).await
                } else {
                    app.bulk_write(caller, body).await
                }
            }
            Endpoint::BulkRead(stats) => {
                let body = self.read_json_body(req).await?;
                let app = Arc::clone(self);
                blocking(move || {
                    let parsed = app.parse_bulk(&body)?;
                    app.bulk_read(&caller, &parsed.items, stats)
                })
                .await
            }
            Endpoint::Latest => self.latest_answer(&caller.as_caller(), &query()?),
            Endpoint::Who => {
                let q = query()?;
                let val = q.val.filter(|v| !v.is_empty()).ok_or_else(|| {
                    ApiError::BadRequest(
                        "Did not receive a val= argument in the query string.".into(),
                    )
                })?;
                let app = Arc::clone(self);
                blocking(move || {
                    let holders = app.store.holders(&val, now())?;
                    let consensus = holders.len();
                    let visible: Vec<serde_json::Value> = holders
                        .iter()
                        .filter(|(ns, _)| caller.as_caller().allows(Access::Read, ns))
                        .map(|(ns, v)| {
                            json!({"namespace": ns.as_str(), "value": v.value, "count": v.record.count,
                                   "first_seen": v.record.first_seen, "last_seen": v.record.last_seen,
                                   "tags": v.record.tags})
                        })
                        .collect();
                    Ok(to_json(
                        StatusCode::OK,
                        &json!({"value": val, "consensus": consensus, "visible": visible.len(),
                                "namespaces": visible}),
                    ))
                })
                .await
            }
            Endpoint::Namespaces => {
                let app = Arc::clone(self);
                blocking(move || {
                    // At most max_list_values names (in order); past that the answer says so.
                    let max = app.limits.max_list_values;
                    let mut names: Vec<String> = app
                        .store
                        .namespaces()?
                        .into_iter()
                        .filter(|i| !i.namespace.is_internal() && i.values > 0)
                        .filter(|i| caller.as_caller().allows(Access::Read, &i.namespace))
                        .map(|i| i.namespace.as_str().to_owned())
                        .take(max.saturating_add(1))
                        .collect();
                    if names.len() > max {
                        names.truncate(max);
                        let message = format!(
                            "Only the first {max} namespaces are listed (max_list_values)."
                        );
                        return Ok(to_json(
                            StatusCode::OK,
                            &json!({ "namespaces": names, "truncated": true, "message": message }),
                        ));
                    }
                    Ok(to_json(StatusCode::OK, &json!({ "namespaces": names })))
                })
                .await
            }
        }
    }

    /// Parses a bulk body within `[limits] max_bulk_items`.
    fn parse_bulk<'b>(&self, body: &'b [u8]) -> Result<bulk::BulkBody<'b>, ApiError> {
        bulk::parse(body, self.limits.max_bulk_items).map_err(|e| match e {
            bulk::BulkError::TooManyItems(n) => ApiError::TooManyItems(n),
            e => ApiError::BadRequest(e.to_string()),
        })
    }

    /// Reads a JSON body within the size limit, checking its content type.
    async fn read_json_body<B>(&self, req: Request<B>) -> Result<Bytes, ApiError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let ct_ok = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !ct_ok {
            return Err(ApiError::BadRequest(
                "Invalid JSON body: Content type error".into(),
            ));
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(ApiError::TooLarge(self.max_body_bytes));
        }
        match Limited::new(req.into_body(), self.max_body_bytes)
            .collect()
            .await
        {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(ApiError::TooLarge(self.max_body_bytes))
            }
            Err(e) => match e.downcast_ref::<crate::deadline::BodyError>() {
                Some(crate::deadline::BodyError::Deadline(secs)) => {
                    Err(ApiError::BodyTimeout(*secs))
                }
                _ => Err(ApiError::BadRequest(
                    "Invalid JSON body: truncated or unreadable body".into(),
                )),
            },
        }
    }

    async fn write_one(
        &self,
        caller: &OwnedCaller,
        raw_ns: &str,
        q: Query,
    ) -> Result<Resp, ApiError> {
        let ns = parse_ns(raw_ns)?;
        caller.as_caller().check(Access::Write, &ns)?;
        let val = q.val.ok_or_else(|| {
            ApiError::BadRequest("Did not receive a val= argument in the query string.".into())
        })?;
        guard_internal(&ns)?;
        let now = now();
        let ts = resolve_ts(q.timestamp, now);
        WriteOp {
            namespace: &ns,
            value: &val,
            timestamp: ts,
            ttl: q.ttl,
            tags: q.tags.as_deref(),
        }
        .check(self.store.limits())?;
        let store = Arc::clone(&self.store);
        let (outcome, ticket, ns, stored) = blocking(move || {
            let op = WriteOp {
                namespace: &ns,
                value: &val,
                timestamp: ts,
                ttl: q.ttl,
                tags: q.tags.as_deref(),
            };
            let (mut out, ticket) = store.write(&[op], now)?;
            let outcome = out
                .pop()
                .ok_or(ApiError::Server("a write gave no outcome"))?;
            let stored = store.format(&ns).encode(&val).into_owned();
            Ok((outcome, ticket, ns, stored))
        })
        .await?;
        self.store.durability().wait(ticket).await?;
        let outcome = outcome?;
        self.latest.record([(ns.as_str(), stored)], now);
        Ok(to_json(
            StatusCode::OK,
            &json!({"message": "ok", "count": outcome.count, "new": outcome.new}),
        ))
    }

    async fn read_get(
        self: &Arc<Self>,
        caller: &OwnedCaller,
        raw_ns: &str,
        q: Query,
        stats: bool,
    ) -> Result<Resp, ApiError> {
        let ns = parse_ns(raw_ns)?;
        caller.as_caller().check(Access::Read, &ns)?;
        if ns.is_config() {
            return Err(ApiError::ConfigNamespace);
        }
        let now = now();
        if q.count {
            if q.val.is_some() {
                return Err(ApiError::BadRequest("count applies to a namespace, not to one value. Drop val= to count, or drop count to read the value.".into()));
            }
            let store = Arc::clone(&self.store);
            let raw_ns = raw_ns.to_owned();
            return blocking(move || match store.count(&ns, now)? {
                Some(n) => Ok(to_json(
                    StatusCode::OK,
                    &json!({"namespace": ns.as_str(), "values": n, "exact": true, "paged_in": false}),
                )),
                None => Err(ApiError::PathNotFound {
                    namespace: raw_ns,
                    value: String::new(),
                }),
            })
            .await;
        }
        let Some(val) = q.val else {
            if stats {
                return Err(ApiError::BadRequest(
                    "Error: val= not found! Use /r/<namespace> to list a whole namespace.".into(),
                ));
            }
            return self.list(ns, raw_ns.to_owned(), q.limit, q.after).await;
        };
        let store = Arc::clone(&self.store);
        let raw_ns = raw_ns.to_owned();
        blocking(move || {
            let outcome = if val.is_empty() {
                match store.count(&ns, now)? {
                    Some(_) => ReadOutcome::NoValue,
                    None => ReadOutcome::NoNamespace,
                }
            } else {
                store.read(&ns, &val, now)?
            };
            if !q.noshadow && !val.is_empty() {
                store.shadow(&[(&ns, &val)], now)?;
            }
            match outcome {
                ReadOutcome::Found(v) => Ok(to_json(StatusCode::OK, &view_json(&v, stats))),
                ReadOutcome::NoValue => Err(ApiError::ValueNotFound {
                    namespace: raw_ns,
                    value: val,
                }),
                ReadOutcome::NoNamespace => Err(ApiError::PathNotFound {
                    namespace: raw_ns,
                    value: val,
                }),
            }
        })
        .await
    }

    /// Lists a namespace. Paged (`limit=` or `after=`): at most `limit` values. Unpaged: at
    /// most `[limits] max_list_values`; a larger namespace gets the first ones, a `next`
    /// cursor and a message saying how to page. Either way a page ends early, with a `next`
    /// cursor, once it holds `[limits] max_page_bytes`.
    async fn list(
        self: &Arc<Self>,
        ns: Namespace,
        raw_ns: String,
        limit: Option<u64>,
        after: Option<String>,
    ) -> Result<Resp, ApiError> {
        let paged = limit.is_some() || after.is_some();
        let after = after.map(|c| decode_cursor(&c)).transpose()?;
        let limit = if paged {
            limit.map_or(DEFAULT_PAGE, |l| {
                usize::try_from(l).unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE)
            })
        } else {
            self.limits.max_list_values
        };
        let max_bytes = self.limits.max_page_bytes;
        let app = Arc::clone(self);
        blocking(move || {
            let page: Option<ListPage> =
                app.store
                    .list(&ns, after.as_deref(), limit, max_bytes, now())?;
            let page = page.ok_or(ApiError::PathNotFound {
                namespace: raw_ns,
                value: String::new(),
            })?;
            #[derive(Serialize)]
            struct Listing<'a> {
                attributes: Vec<ViewJson<'a>>,
                #[serde(skip_serializing_if = "Option::is_none")]
                next: Option<Option<String>>,
                #[serde(skip_serializing_if = "Option::is_none")]
                message: Option<String>,
            }
            // An unpaged listing that did not fit says so, and how to read the rest.
            let cut = !paged && page.next.is_some();
            let listing = Listing {
                attributes: page.items.iter().map(|v| view_json(v, false)).collect(),
                next: (paged || cut).then(|| page.next.as_deref().map(encode_cursor)),
                message: cut.then(|| {
                    format!(
                        "Listing cut at {} values (max_list_values, max_page_bytes): \
                         pass next as after= (with limit=N) to read the rest.",
                        page.items.len()
                    )
                }),
            };
            Ok(to_json(StatusCode::OK, &listing))
        })
        .await
    }

    async fn delete(&self, caller: &Caller<'_>, raw_ns: &str) -> Result<Resp, ApiError> {
        let ns = parse_ns(raw_ns)?;
        caller.check(Access::Write, &ns)?;
        guard_internal(&ns)?;
        let store = Arc::clone(&self.store);
        let ns2 = ns.clone();
        let (deleted, ticket) = blocking(move || Ok(store.delete(&ns2, now())?)).await?;
        self.store.durability().wait(ticket).await?;
        if deleted {
            Ok(to_json(StatusCode::OK, &json!({"message": "ok"})))
        } else {
            Err(ApiError::PathNotFound {
                namespace: raw_ns.to_owned(),
                value: String::new(),
            })
        }
    }

    fn config_answer(&self, ns: &Namespace) -> Resp {
        to_json(
            StatusCode::OK,
            &json!({"namespace": ns.as_str(), "value_format": self.store.format(ns).name()}),
        )
    }

    async fn config_set(&self, ns: Namespace, body: Bytes) -> Result<Resp, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SetConfig {
            value_format: String,
        }
        let set: SetConfig = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("Invalid JSON body: Json deserialize error: {e}"))
        })?;
        let format = ValueFormat::parse(&set.value_format).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Unknown value_format '{}': use RAW, SHA256 or BASE64URL.",
                set.value_format
            ))
        })?;
        let store = Arc::clone(&self.store);
        let (ticket, ns) = blocking(move || Ok((store.set_format(&ns, format)?, ns))).await?;
        self.store.durability().wait(ticket).await?;
        Ok(self.config_answer(&ns))
    }

    /// Parses bulk items into (namespace, op input) or the item's error message.
    fn bulk_items<'b>(items: &'b [BulkItem<'b>]) -> Vec<Result<Namespace, String>> {
        items
            .iter()
            .map(|i| Namespace::parse(&i.namespace).map_err(|e| e.to_string()))
            .collect()
    }

    fn authorize_all(
        caller: &Caller<'_>,
        access: Access,
        namespaces: &[Result<Namespace, String>],
    ) -> Result<(), ApiError> {
        for ns in namespaces.iter().flatten() {
            caller.check(access, ns)?;
        }
        Ok(())
    }

    fn bulk_validate(&self, caller: &OwnedCaller, body: &[u8]) -> Result<Resp, ApiError> {
        let parsed = self.parse_bulk(body)?;
        let nss = Self::bulk_items(&parsed.items);
        Self::authorize_all(&caller.as_caller(), Access::Write, &nss)?;
        let now = now();
        let mut answer = BulkAnswer::with_capacity(parsed.items.len());
        for (idx, (item, ns)) in parsed.items.iter().zip(&nss).enumerate() {
            let check = ns.as_ref().map_err(Clone::clone).and_then(|ns| {
                WriteOp {
                    namespace: ns,
                    value: &item.value,
                    timestamp: resolve_ts(item.timestamp, now),
                    ttl: item.ttl,
                    tags: item.tags.as_deref(),
                }
                .check(self.store.limits())
                .map_err(|e| e.to_string())
            });
            answer.push(idx, item, check.map(|()| None));
        }
        Ok(answer.into_response(true))
    }

    async fn bulk_write(
        self: Arc<Self>,
        caller: OwnedCaller,
        body: Bytes,
    ) -> Result<Resp, ApiError> {
        let app = Arc::clone(&self);
        let (resp, ticket) = blocking(move || {
            let parsed = app.parse_bulk(&body)?;
            let nss = Self::bulk_items(&parsed.items);
            Self::authorize_all(&caller.as_caller(), Access::Write, &nss)?;
            let now = now();
            // Items with a bad namespace never reach the store; the rest go in one batch.
            let ops: Vec<WriteOp<'_>> = parsed
                .items
                .iter()
                .zip(&nss)
                .filter_map(|(item, ns)| {
                    ns.as_ref().ok().map(|ns| WriteOp {
                        namespace: ns,
                        value: &item.value,
                        timestamp: resolve_ts(item.timestamp, now),
                        ttl: item.ttl,
                        tags: item.tags.as_deref(),
                    })
                })
                .collect();
            let (outcomes, ticket) = app.store.write(&ops, now)?;
            let mut outcomes = outcomes.into_iter();
            let mut answer = BulkAnswer::with_capacity(parsed.items.len());
            let mut recent = Vec::new();
            let skip_recent = parsed.items.len().saturating_sub(app.latest.capacity());
            for (idx, (item, ns)) in parsed.items.iter().zip(&nss).enumerate() {
                let result: Result<Option<WriteOutcome>, String> = match ns {
                    Ok(ns) => match outcomes.next() {
                        Some(Ok(o)) => {
                            if idx >= skip_recent {
                                recent.push((
                                    ns.as_str(),
                                    app.store.format(ns).encode(&item.value).into_owned(),
                                ));
                            }
                            Ok(Some(o))
                        }
                        Some(Err(e)) => Err(e.to_string()),
                        None => Err(ItemError::EmptyValue.to_string()),
                    },
                    Err(e) => Err(e.clone()),
                };
                answer.push(idx, item, result);
            }
            app.latest.record(recent, now);
            Ok((answer.into_response(false), ticket))
        })
        .await?;
        self.store.durability().wait(ticket).await?;
        Ok(resp)
    }

    fn bulk_read(
        &self,
        caller: &OwnedCaller,
        items: &[BulkItem<'_>],
        stats: bool,
    ) -> Result<Resp, ApiError> {
        if items.is_empty() {
            return Ok(to_json(StatusCode::OK, &json!({"items": []})));
        }
        let nss = Self::bulk_items(items);
        Self::authorize_all(&caller.as_caller(), Access::Read, &nss)?;
        let now = now();
        let mut out: Vec<Option<ReadEntry>> = Vec::new();
        out.resize_with(items.len(), || None);
        let mut shadows: Vec<(&Namespace, &str)> = Vec::new();
        let mut answer_bytes = 0usize;
        // Read in key order (neighbouring lookups share cached blocks), answer in request order.
        let order = sighthub_store::key_order(items.len(), |i| {
            let ns = nss.get(i)?.as_ref().ok()?;
            Some((ns.as_str(), &*items.get(i)?.value))
        });
        for i in order {
            let (Some(item), Some(ns), Some(slot)) = (items.get(i), nss.get(i), out.get_mut(i))
            else {
                continue;
            };
            let entry = match ns {
                Err(e) => json!({"message": e}),
                Ok(ns) if ns.is_config() => ApiError::ConfigNamespace.body(),
                Ok(ns) => {
                    let outcome = if item.value.is_empty() {
                        match self.store.count(ns, now)? {
                            Some(_) => ReadOutcome::NoValue,
                            None => ReadOutcome::NoNamespace,
                        }
                    } else {
                        self.store.read(ns, &item.value, now)?
                    };
                    if !item.noshadow && !item.value.is_empty() {
                        shadows.push((ns, &item.value));
                    }
                    match outcome {
                        ReadOutcome::Found(v) => {
                            answer_bytes =
                                answer_bytes.saturating_add(v.record.approx_bytes(v.value.len()));
                            if answer_bytes > self.limits.max_page_bytes {
                                return Err(ApiError::AnswerTooLarge(self.limits.max_page_bytes));
                            }
                            *slot = Some(ReadEntry::View(v));
                            continue;
                        }
                        ReadOutcome::NoValue => ApiError::ValueNotFound {
                            namespace: item.namespace.to_string(),
                            value: item.value.to_string(),
                        }
                        .body(),
                        ReadOutcome::NoNamespace => ApiError::PathNotFound {
                            namespace: item.namespace.to_string(),
                            value: item.value.to_string(),
                        }
                        .body(),
                    }
                }
            };
            *slot = Some(ReadEntry::Other(entry));
        }
        self.store.shadow(&shadows, now)?;
        #[derive(Serialize)]
        struct Items<'a> {
            items: Vec<ReadEntryJson<'a>>,
        }
        // Every slot was filled above (the order is a permutation); an answer must never be
        // shorter than the request.
        let out: Vec<ReadEntry> = out
            .into_iter()
            .collect::<Option<_>>()
            .ok_or(ApiError::Server("bulk read left an item unanswered"))?;
        let items = out
            .iter()
            .map(|e| match e {
                ReadEntry::View(v) => ReadEntryJson::View(view_json(v, stats)),
                ReadEntry::Other(o) => ReadEntryJson::Other(o),
            })
            .collect();
        Ok(to_json(StatusCode::OK, &Items { items }))
    }

    fn latest_answer(&self, caller: &Caller<'_>, q: &Query) -> Result<Resp, ApiError> {
        let limit = q
            .limit
            .map_or(100, |l| usize::try_from(l).unwrap_or(1000).min(1000));
        let prefix = q
            .namespace
            .as_deref()
            .map(|p| p.trim_matches('/').to_owned());
        let items = self.latest.newest(limit, |i| {
            let Ok(ns) = Namespace::parse(&i.namespace) else {
                return false;
            };
            q.since.is_none_or(|s| i.written >= s)
                && prefix.as_deref().is_none_or(|p| ns.is_within(p))
                && caller.allows(Access::Read, &ns)
        });
        Ok(to_json(
            StatusCode::OK,
            &json!({"capacity": self.latest.capacity(), "items": items, "limit": limit}),
        ))
    }
}

/// One item of a `/wb` or `/vwb` answer.
#[derive(Serialize)]
struct BulkItemAnswer<'a> {
    index: usize,
    namespace: &'a str,
    value: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One entry of `errors` in a `/wb` or `/vwb` answer.
#[derive(Serialize)]
struct BulkItemError<'a> {
    namespace: &'a str,
    value: &'a str,
    error: String,
}

/// The answer of `/wb` (`written`) or `/vwb` (`writable`), keys in SightingDB's order.
#[derive(Serialize)]
struct BulkAnswer<'a> {
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    written: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    writable: Option<usize>,
    items: Vec<BulkItemAnswer<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<BulkItemError<'a>>,
}

impl<'a> BulkAnswer<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            message: "",
            written: None,
            writable: None,
            items: Vec::with_capacity(n),
            errors: Vec::new(),
        }
    }

    /// Adds one item: `Ok(Some(outcome))` written, `Ok(None)` writable (dry run), `Err` refused.
    fn push(
        &mut self,
        index: usize,
        item: &'a BulkItem<'a>,
        result: Result<Option<WriteOutcome>, String>,
    ) {
        let (namespace, value) = (item.namespace.as_ref(), item.value.as_ref());
        match result {
            Ok(o) => self.items.push(BulkItemAnswer {
                index,
                namespace,
                value,
                status: "ok",
                count: o.map(|o| o.count),
                new: o.map(|o| o.new),
                error: None,
            }),
            Err(e) => {
                self.errors.push(BulkItemError {
                    namespace,
                    value,
                    error: e.clone(),
                });
                self.items.push(BulkItemAnswer {
                    index,
                    namespace,
                    value,
                    status: "error",
                    count: None,
                    new: None,
                    error: Some(e),
                });
            }
        }
    }

    fn into_response(mut self, dry_run: bool) -> Resp {
        let done = self.items.len() - self.errors.len();
        let (status, message) = bulk_status(self.items.len(), done);
        self.message = message;
        if dry_run {
            self.writable = Some(done);
        } else {
            self.written = Some(done);
        }
        to_json(status, &self)
    }
}

/// One answer of a bulk read.
enum ReadEntry {
    View(View),
    Other(serde_json::Value),
}

#[derive(Serialize)]
#[serde(untagged)]
enum ReadEntryJson<'a> {
    View(ViewJson<'a>),
    Other(&'a serde_json::Value),
}

fn bulk_status(n: usize, done: usize) -> (StatusCode, &'static str) {
    if done == n {
        (StatusCode::OK, "ok")
    } else if done > 0 {
        (StatusCode::OK, "partial")
    } else {
        (StatusCode::BAD_REQUEST, "failed")
    }
}

/// A caller detached from the request, to move into a blocking task.
#[derive(Clone)]
pub struct OwnedCaller {
    anyone: bool,
    grants: Option<crate::auth::KeyGrants>,
}

impl Caller<'_> {
    /// Detaches the caller.
    pub fn clone_owned(&self, _auth: &Auth) -> OwnedCaller {
        match self {
            Caller::Anyone => OwnedCaller {
                anyone: true,
                grants: None,
            },
            Caller::Key(g) => OwnedCaller {
                anyone: false,
                grants: g.cloned(),
            },
        }
    }
}

impl OwnedCaller {
    /// Borrows it back as a [`Caller`].
    pub fn as_caller(&self) -> Caller<'_> {
        if self.anyone {
            Caller::Anyone
        } else {
            Caller::Key(self.grants.as_ref())
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// A panic in store work is a logged 500, never the client's fault (it was a 400
    /// "request was cancelled").
    #[tokio::test]
    async fn a_panic_in_a_blocking_task_is_a_500() {
        let r: Result<(), ApiError> = blocking(|| panic!("boom")).await;
        let e = r.expect_err("an error");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.body(), json!({"message": "Internal server error."}));
    }

    #[test]
    fn only_static_routes_are_open() {
        for open in [
            Endpoint::Info,
            Endpoint::Health,
            Endpoint::OpenApi,
            Endpoint::Help,
        ] {
            assert_eq!(route_access(&open), None);
        }
        assert_eq!(route_access(&Endpoint::Who), Some(Access::Read));
        assert_eq!(route_access(&Endpoint::Latest), Some(Access::Read));
        assert_eq!(route_access(&Endpoint::Namespaces), Some(Access::Read));
        assert_eq!(route_access(&Endpoint::BulkValidate), Some(Access::Write));
    }
}
