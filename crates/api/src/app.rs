//! The composition of the edge ([`App`]) and the dispatch of a request to its handler.
//!
//! [`App::handle`] is the one place where a request becomes a response, for both APIs:
//! parse the [`Endpoint`] (one route table), identify the caller (the sighting keys, or the
//! exchange's keys for `/iep04/` routes), run the handler of its command family
//! ([`crate::cmd`]), turn any [`ApiError`] into its status and body. Handlers follow
//! SightingDB's check order: authentication → arguments → private-namespace guard → value
//! checks.

use crate::body::read_json;
use crate::cmd::{self, blocking, Resp};
use crate::error::{Access, ApiError};
use crate::keyring::KeyRing;
use crate::latest::Latest;
use crate::peering::Peering;
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
    /// API keys of both APIs: the configuration's and the runtime ones.
    pub keys: KeyRing,
    /// The queue of single writes (`GET /w`) in front of the store's writer thread.
    pub writer: crate::writer::Writer,
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
    /// The relay's side of peering by invitation; `None` when the exchange is off.
    pub peering: Option<Arc<dyn Peering>>,
    /// Relay links, bridge and IntelMQ transports, as the node reports them.
    pub status: Option<Arc<dyn crate::status::NodeStatus>>,
    /// Live request counts and latencies (`GET /metrics`).
    pub metrics: crate::metrics::HttpMetrics,
    /// The web console's sessions.
    pub sessions: crate::console::Sessions,
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
    /// The admin key (runtime keys, peering).
    Admin,
    /// An exchange key, answered in TAXII's media type and errors.
    Taxii,
    /// The web console (its own login; the data it shows needs the admin).
    Console,
}

/// The guard of a route.
fn route_access(endpoint: &Endpoint) -> Guard {
    match endpoint {
        Endpoint::Info
        | Endpoint::Health
        | Endpoint::OpenApi
        | Endpoint::Help
        | Endpoint::Galaxy(_) => Guard::Open,
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
        Endpoint::KeysList
        | Endpoint::KeysCreate
        | Endpoint::KeysUpdate(_)
        | Endpoint::KeysRevoke(_)
        | Endpoint::PeersInvite
        | Endpoint::PeersJoin
        | Endpoint::Metrics => Guard::Admin,
        Endpoint::Taxii(_) => Guard::Taxii,
        Endpoint::Console(_) => Guard::Console,
        Endpoint::Iep04Publish
        | Endpoint::Iep04Redeem
        | Endpoint::Iep04Peers
        | Endpoint::Iep04Peer(_)
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

/// A request without a key that the anonymous grants (`[acl] anonymous`) do not cover is told
/// to bring a key (401), not that "the key" lacks a grant (403).
fn refusal_without_key(e: ApiError, without_key: bool) -> ApiError {
    match e {
        ApiError::Forbidden(_) | ApiError::NotAdmin if without_key => ApiError::Unauthorized,
        e => e,
    }
}

impl App {
    /// Answers one request. Never fails: every error becomes its response.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Resp
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let is_head = req.method() == hyper::Method::HEAD;
        let without_key = authorization(&req).is_none();
        let endpoint = parse_endpoint(req.method(), req.uri().path());
        let route = endpoint
            .as_ref()
            .map_or(("", "unmatched"), Endpoint::pattern);
        let mut resp = match async { self.dispatch(endpoint?, req).await }.await {
            Ok(r) => r,
            Err(e) => refusal_without_key(e, without_key).into_response(),
        };
        if is_head {
            *resp.body_mut() = Full::new(Bytes::new());
        }
        self.metrics
            .observe(route, resp.status().as_u16(), started.elapsed());
        resp
    }

    async fn dispatch<B>(
        self: &Arc<Self>,
        endpoint: Endpoint,
        req: Request<B>,
    ) -> Result<Resp, ApiError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let access = match route_access(&endpoint) {
            Guard::Open if matches!(endpoint, Endpoint::Galaxy(_)) => {
                return Err(ApiError::NotImplemented(cmd::read::GALAXY))
            }
            Guard::Open => return Ok(self.public(&endpoint)),
            Guard::Exchange => return self.dispatch_iep04(endpoint, req).await,
            Guard::Admin => return self.dispatch_admin(endpoint, req).await,
            Guard::Console => {
                let crate::router::Endpoint::Console(route) = endpoint else {
                    return Err(ApiError::Internal("a route without a handler"));
                };
                return self.console(route, req).await;
            }
            Guard::Taxii => {
                return Ok(match self.dispatch_taxii(endpoint, req).await {
                    Ok(r) => r,
                    Err(e) => cmd::taxii::error_response(&e),
                })
            }
            Guard::Sightings(access) => access,
        };
        // Authenticate before anything is read or looked up: a missing key is 401, an unknown
        // key (or one without this kind of grant anywhere) 403, on the headers alone.
        let caller = self.sightings_caller(&req)?;
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

    /// The caller of a sighting or admin route: the console's session (the admin, with its
    /// CSRF token: [`crate::console::Sessions::check`]), else the `Authorization` key.
    pub(crate) fn sightings_caller<B>(
        &self,
        req: &Request<B>,
    ) -> Result<crate::auth::OwnedCaller, ApiError> {
        if self.sessions.check(req.headers())? {
            return Ok(crate::auth::OwnedCaller::key(Some(
                crate::auth::KeyGrants {
                    admin: true,
                    grants: Vec::new(),
                },
            )));
        }
        self.keys.sightings_caller(authorization(req))
    }

    /// The caller of an exchange route: the console's session (the exchange's admin), else
    /// the `Authorization` key.
    pub(crate) fn exchange_caller<B>(
        &self,
        inner: &sighthub_exchange::Inner,
        req: &Request<B>,
    ) -> Result<Arc<sighthub_exchange::Grants>, ApiError> {
        if self.sessions.check(req.headers())? {
            return Ok(Arc::new(sighthub_exchange::Grants::admin(
                inner.store.org(),
            )));
        }
        self.keys.exchange_caller(&inner.keys(), authorization(req))
    }

    /// The admin routes: the admin key (401/403 on the headers alone), then the handler.
    async fn dispatch_admin<B>(
        self: &Arc<Self>,
        endpoint: Endpoint,
        req: Request<B>,
    ) -> Result<Resp, ApiError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let caller = self.sightings_caller(&req)?;
        if !caller.as_caller().is_admin() {
            return Err(ApiError::NotAdmin);
        }
        match endpoint {
            Endpoint::KeysList => self.keys_list().await,
            Endpoint::Metrics => {
                let app = Arc::clone(self);
                let text = blocking(move || Ok(crate::metrics::render(&app))).await?;
                Ok(crate::error::bytes_response(
                    hyper::StatusCode::OK,
                    crate::metrics::CONTENT_TYPE,
                    text.into_bytes(),
                ))
            }
            Endpoint::KeysCreate => {
                let body = read_json(req, self.max_body_bytes).await?;
                self.keys_create(body).await
            }
            Endpoint::KeysUpdate(id) => {
                let body = read_json(req, self.max_body_bytes).await?;
                self.keys_update(id, body).await
            }
            Endpoint::KeysRevoke(id) => self.keys_revoke(id).await,
            Endpoint::PeersInvite => {
                let body = read_json(req, self.max_body_bytes).await?;
                self.peers_invite(body).await
            }
            Endpoint::PeersJoin => {
                let body = read_json(req, self.max_body_bytes).await?;
                self.peers_join(body).await
            }
            _ => Err(ApiError::Internal("a route without a handler")),
        }
    }

    /// The `/taxii2/` routes: the exchange must be on (404), an acceptable `Accept` (406),
    /// an exchange key (401/403), then the route.
    async fn dispatch_taxii<B>(
        &self,
        endpoint: Endpoint,
        req: Request<B>,
    ) -> Result<Resp, ApiError> {
        let Endpoint::Taxii(route) = endpoint else {
            return Err(ApiError::Internal("a route without a handler"));
        };
        let inner = Arc::clone(self.exchange.inner()?);
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        if !cmd::taxii::acceptable(accept) {
            return Err(ApiError::NotAcceptable(
                "Accept application/taxii+json;version=2.1 (or application/json).",
            ));
        }
        let grants = self.exchange_caller(&inner, &req)?;
        let raw_query = req.uri().query().unwrap_or("").to_owned();
        cmd::taxii::route(&inner, grants, route, &raw_query).await
    }

    /// The `/iep04/` routes: the exchange must be on (404), then the caller is one of its
    /// keys (401/403 on the headers alone), then the handler checks its rights.
    async fn dispatch_iep04<B>(
        self: &Arc<Self>,
        endpoint: Endpoint,
        req: Request<B>,
    ) -> Result<Resp, ApiError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let inner = Arc::clone(self.exchange.inner()?);
        if endpoint == Endpoint::Iep04Redeem {
            // Authenticated by the invitation key itself, which is no exchange key.
            let header = authorization(&req).map(<[u8]>::to_vec);
            if header.is_none() {
                return Err(ApiError::Unauthorized);
            }
            let body = read_json(req, self.max_body_bytes).await?;
            return self.peers_redeem(header, body).await;
        }
        let grants = self.exchange_caller(&inner, &req)?;
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
            Endpoint::Iep04Peers => self.peers_status(&grants, None),
            Endpoint::Iep04Peer(name) => self.peers_status(&grants, Some(&name)),
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
mod test_anonymous;
#[cfg(test)]
mod test_iep04;
#[cfg(test)]
pub(crate) mod testkit;
