//! The web console's routes (`/_management/…`, [`crate::console`]): the embedded page,
//! login and logout, the session's CSRF token, and the overview the page shows beside what
//! it reads from the other APIs.

use super::{blocking, Resp};
use crate::app::App;
use crate::body::read_json;
use crate::console::{self, APP_CSS, APP_JS, INDEX_HTML};
use crate::error::{bytes_response, json_response, ApiError};
use crate::router::ConsoleRoute;
use bytes::Bytes;
use hyper::body::Body;
use hyper::{header, Request, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

fn asset(ct: &'static str, body: &'static str) -> Resp {
    let mut r = bytes_response(StatusCode::OK, ct, body.as_bytes().to_vec());
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    h.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

impl App {
    /// Answers a console route.
    pub(crate) async fn console<B>(
        self: &Arc<Self>,
        route: ConsoleRoute,
        req: Request<B>,
    ) -> Result<Resp, ApiError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match route {
            ConsoleRoute::Page => {
                let mut r = asset("text/html; charset=utf-8", INDEX_HTML);
                let h = r.headers_mut();
                // Only this server's own script and style; no frames, no other origin.
                h.insert(
                    "content-security-policy",
                    header::HeaderValue::from_static(
                        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
                    ),
                );
                h.insert("x-frame-options", header::HeaderValue::from_static("DENY"));
                h.insert(
                    "referrer-policy",
                    header::HeaderValue::from_static("no-referrer"),
                );
                Ok(r)
            }
            ConsoleRoute::Script => Ok(asset("text/javascript; charset=utf-8", APP_JS)),
            ConsoleRoute::Style => Ok(asset("text/css; charset=utf-8", APP_CSS)),
            ConsoleRoute::Login => {
                let body = read_json(req, console::MAX_LOGIN_BYTES).await?;
                let v: Value = serde_json::from_slice(&body).map_err(|_| {
                    ApiError::BadRequest("Body: {\"key\": \"<admin key>\"}.".into())
                })?;
                let key = v["key"].as_str().unwrap_or("").trim().to_owned();
                let caller = self.keys.sightings_caller(Some(key.as_bytes()))?;
                if key.is_empty() || !caller.as_caller().is_admin() {
                    return Err(ApiError::NotAdmin);
                }
                let (token, csrf) = self.sessions.open_session()?;
                let mut r = json_response(StatusCode::OK, &json!({ "csrf": csrf }));
                if let Ok(v) = header::HeaderValue::from_str(&console::set_cookie(&token)) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                Ok(r)
            }
            ConsoleRoute::Logout => {
                if !self.sessions.check(req.headers())? {
                    return Err(ApiError::SessionExpired);
                }
                // Written to the shared document: on a cluster, a round trip.
                let (app, h) = (Arc::clone(self), req.headers().clone());
                blocking(move || app.sessions.close(&h)).await?;
                let mut r = json_response(StatusCode::OK, &json!({ "message": "Logged out." }));
                if let Ok(v) = header::HeaderValue::from_str(&console::clear_cookie()) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                Ok(r)
            }
            ConsoleRoute::Session => match self.sessions.csrf_of(req.headers()) {
                Some(csrf) => Ok(json_response(StatusCode::OK, &json!({ "csrf": csrf }))),
                None => Err(ApiError::SessionExpired),
            },
            ConsoleRoute::Overview => {
                if !self.sightings_caller(&req)?.as_caller().is_admin() {
                    return Err(ApiError::NotAdmin);
                }
                let app = Arc::clone(self);
                let v = blocking(move || Ok(app.overview())).await?;
                Ok(json_response(StatusCode::OK, &v))
            }
        }
    }

    /// What the console's exchange, peers and configuration pages show.
    fn overview(&self) -> Value {
        let mut out = json!({ "identity": self.identity, "version": crate::app::VERSION });
        if let Ok(all) = self.store.namespaces() {
            let public: Vec<&sighthub_store::NamespaceInfo> =
                all.iter().filter(|n| !n.namespace.is_internal()).collect();
            out["sightings"] = json!({
                "namespaces": public.len(),
                "values": public.iter().map(|n| n.values).sum::<u64>(),
                "distinct": all.iter().find(|n| n.namespace.as_str() == "_all").map_or(0, |n| n.values),
            });
        }
        if let Ok(inner) = self.exchange.inner() {
            let ex = &inner.store;
            let head = ex.durable();
            use std::sync::atomic::Ordering::Relaxed;
            let c = ex.counters();
            out["exchange"] = json!({
                "org": ex.org().to_string(),
                "instance": ex.instance().to_string(),
                "head_seq": head,
                "log_bytes": ex.log_bytes(),
                "accepted": c.accepted.load(Relaxed),
                "duplicates": c.duplicate_uuid.load(Relaxed) + c.duplicate_content.load(Relaxed),
                "refused": c.refused.load(Relaxed),
            });
            out["consumers"] = json!(ex
                .consumers(crate::metrics::MAX_CONSUMERS)
                .unwrap_or_default()
                .into_iter()
                .map(|(org, name, st)| json!({
                    "org": org.to_string(), "name": name, "acked": st.acked,
                    "lag": head.saturating_sub(st.acked), "updated_at": st.updated_at,
                }))
                .collect::<Vec<_>>());
        }
        if let Some(node) = &self.status {
            out["links"] = json!(node.links());
            out["bridge"] = json!(node.bridge());
            out["transports"] = json!(node
                .transports()
                .into_iter()
                .map(|t| {
                    let mut v = json!({"kind": t.kind, "name": t.name});
                    for (k, n) in t.counters {
                        v[k] = json!(n);
                    }
                    if t.lease.is_some() {
                        v["lease"] = json!(t.lease);
                        v["held_elsewhere"] = json!(t.held_elsewhere);
                    }
                    v
                })
                .collect::<Vec<_>>());
            out["settings"] = node.settings();
        }
        out
    }
}
