//! The composition of the edge ([`App`]) and the dispatch of a request to its handler.
//!
//! [`App::handle`] is the one place where a request becomes a response, for both APIs:
//! parse the [`Endpoint`] (one route table), identify the caller (the sighting keys, or the
//! exchange's keys for `/iep04/` routes), run the handler of its command family
//! ([`crate::cmd`]), turn any [`ApiError`] into its status and body. Handlers follow
//! SightingDB's check order: authentication → arguments → private-namespace guard → value
//! checks.

use crate::auth::Auth;
use crate::body::read_json;
use crate::cmd::{self, blocking, Resp};
use crate::error::{Access, ApiError};
use crate::latest::Latest;
use crate::query::Query;
use crate::router::{parse_endpoint, Endpoint};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::{header, Request};
use sighthub_store::SightingStore;
use std::sync::Arc;
use std::time::Instant;

/// The listing cursor, here for the fuzz targets that name it by this path.
pub use crate::cmd::read::{decode_cursor, encode_cursor};

/// Version reported by `/i`, `/health` and the OpenAPI document.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

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
    pub limits: crate::limits::LimitsConfig,
    /// Start time, for `/health`.
    pub started: Instant,
    /// The IEP04 exchange, which the `/iep04/` handlers ([`crate::cmd`]) work on.
    pub exchange: sighthub_exchange::Exchange,
    /// This instance's identity (`sha256:…`, its TLS key's fingerprint); `None` in plain HTTP.
    pub identity: Option<String>,
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Who may call a route, decided on the headers before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// Open to anyone (no key, no stored data).
    Open,
    /// A sighting key with this grant somewhere.
    Sightings(Access),
    /// An exchange key (its rights are checked by each `/iep04/` handler).
    Exchange,
}

/// The guard of a route.
fn route_access(endpoint: &Endpoint) -> Guard {
    match endpoint {
        Endpoint::Info | Endpoint::Health | Endpoint::OpenApi | Endpoint::Help => Guard::Open,
        Endpoint::Write(_)
        | Endpoint::Delete(_)
        | Endpoint::ConfigSet(_)
        | Endpoint::BulkWrite
        | Endpoint::BulkValidate => Guard::Sightings(Access::Write),
        Endpoint::Read(_)
        | Endpoint::ReadStats(_)
        | Endpoint::ConfigGet(_)
        | Endpoint::BulkRead(_)
        | Endpoint::Latest
        | Endpoint::Namespaces
        | Endpoint::Who
        | Endpoint::Stix(_)
        | Endpoint::StixApi => Guard::Sightings(Access::Read),
        Endpoint::Iep04Publish
        | Endpoint::Iep04Read
        | Endpoint::Iep04Message(_)
        | Endpoint::Iep04Links(_)
        | Endpoint::Iep04LinksByAlternate
        | Endpoint::Iep04Consumer(_)
        | Endpoint::Iep04ConsumerDelete(_)
        | Endpoint::Iep04ConsumerMessages(_)
        | Endpoint::Iep04ConsumerAck(_)
        | Endpoint::Iep04Status => Guard::Exchange,
    }
}

/// The `Authorization` header's bytes.
fn authorization<B>(req: &Request<B>) -> Option<&[u8]> {
    req.headers()
        .get(header::AUTHORIZATION)
        .map(header::HeaderValue::as_bytes)
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

    async fn dispatch<B>(self: &Arc<Self>, req: Request<B>) -> Result<Resp, ApiError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let endpoint = parse_endpoint(req.method(), req.uri().path())?;
        let access = match route_access(&endpoint) {
            Guard::Open => return Ok(self.public(&endpoint)),
            Guard::Exchange => return self.dispatch_iep04(endpoint, req).await,
            Guard::Sightings(access) => access,
        };
        // Authenticate before anything is read or looked up: a missing key is 401, an unknown
        // key (or one without this kind of grant anywhere) 403, on the headers alone.
        let caller = self
            .auth
            .caller(authorization(&req))?
            .clone_owned(&self.auth);
        caller.as_caller().check_any(access)?;
        let raw_query = req.uri().query().unwrap_or("").to_owned();
        let query = || Query::parse(&raw_query).map_err(|e| ApiError::BadRequest(e.to_string()));
        match endpoint {
            Endpoint::Write(ns) => self.write_one(&caller, &ns, query()?).await,
            Endpoint::Read(ns) => self.read_get(&caller, &ns, query()?, false).await,
            Endpoint::ReadStats(ns) => self.read_get(&caller, &ns, query()?, true).await,
            Endpoint::Delete(ns) => self.delete(&caller.as_caller(), &ns).await,
            Endpoint::ConfigGet(ns) => {
                let ns = cmd::parse_ns(&ns)?;
                caller.as_caller().check(Access::Read, &ns)?;
                Ok(self.config_answer(&ns))
            }
            Endpoint::ConfigSet(raw_ns) => {
                let ns = cmd::parse_ns(&raw_ns)?;
                caller.as_caller().check(Access::Write, &ns)?;
                cmd::guard_private(&ns)?;
                let body = read_json(req, self.max_body_bytes).await?;
                self.config_set(ns, body).await
            }
            Endpoint::BulkWrite | Endpoint::BulkValidate => {
                let body = read_json(req, self.max_body_bytes).await?;
                let app = Arc::clone(self);
                if endpoint == Endpoint::BulkValidate {
                    blocking(move || app.bulk_validate(&caller, &body)).await
                } else {
                    app.bulk_write(caller, body).await
                }
            }
            Endpoint::BulkRead(stats) => {
                let body = read_json(req, self.max_body_bytes).await?;
                let app = Arc::clone(self);
                blocking(move || {
                    let parsed = app.parse_bulk(&body)?;
                    app.bulk_read(&caller, &parsed.items, stats)
                })
                .await
            }
            Endpoint::Latest => self.latest_answer(&caller.as_caller(), &query()?),
            Endpoint::Who => self.who(caller, query()?).await,
            Endpoint::Namespaces => self.namespaces(caller).await,
            Endpoint::Stix(ns) => self.stix_get(caller, &ns, &raw_query).await,
            Endpoint::StixApi => {
                let body = read_json(req, self.max_body_bytes).await?;
                self.stix_post(caller, body).await
            }
            _ => Err(ApiError::Internal("a route without a handler")),
        }
    }

    /// The `/iep04/` routes: the exchange must be on (404), then the caller is one of its
    /// keys (401/403 on the headers alone), then the handler checks its rights.
    async fn dispatch_iep04<B>(&self, endpoint: Endpoint, req: Request<B>) -> Result<Resp, ApiError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let inner = Arc::clone(self.exchange.inner()?);
        let grants = inner.keys.caller(authorization(&req))?;
        let raw_query = req.uri().query().unwrap_or("").to_owned();
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (q, accept) = (raw_query.as_str(), accept.as_deref());
        match endpoint {
            Endpoint::Iep04Publish => {
                cmd::iep04_publish::publish_route(&inner, grants, req, q).await
            }
            Endpoint::Iep04Read => cmd::iep04_read::read_route(&inner, grants, q, accept).await,
            Endpoint::Iep04Message(id) => {
                cmd::iep04_read::message_route(&inner, grants, &id, q).await
            }
            Endpoint::Iep04Links(id) => cmd::iep04_links::links_route(&inner, grants, &id, q).await,
            Endpoint::Iep04LinksByAlternate => {
                cmd::iep04_links::alternate_route(&inner, grants, q).await
            }
            Endpoint::Iep04Consumer(name) => {
                cmd::iep04_consumers::get_route(&inner, grants, &name, q).await
            }
            Endpoint::Iep04ConsumerDelete(name) => {
                cmd::iep04_consumers::delete_route(&inner, grants, &name, q).await
            }
            Endpoint::Iep04ConsumerMessages(name) => {
                cmd::iep04_consumers::messages_route(&inner, grants, &name, q, accept).await
            }
            Endpoint::Iep04ConsumerAck(name) => {
                cmd::iep04_consumers::ack_route(&inner, grants, &name, req, q).await
            }
            Endpoint::Iep04Status => {
                cmd::iep04_status::status_route(&inner, self.identity.as_deref(), q)
            }
            _ => Err(ApiError::Internal("a route without a handler")),
        }
    }
}

#[cfg(test)]
mod test;
#[cfg(test)]
mod test_iep04;
#[cfg(test)]
pub(crate) mod testkit;
