//! The routes open to anyone (`/`, `/i`, `/health`, `/_api/openapi.yaml`) and
//! `GET /_api/latest`, the recent writes the key may read.

use super::{to_json, Resp};
use crate::app::{App, VERSION};
use crate::auth::Caller;
use crate::error::{Access, ApiError};
use crate::query::Query;
use crate::router::{help_text, Endpoint};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Response, StatusCode};
use serde_json::json;
use sighthub_store::Namespace;

impl App {
    /// The routes open to anyone.
    pub(crate) fn public(&self, endpoint: &Endpoint) -> Resp {
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
                // The API this server implements, as SightingDB names it, so that clients
                // identifying their server by `implementation`/`version` work unchanged; the
                // server itself is named by `server`/`server_version`.
                &json!({"implementation": "SightingDB", "version": "0.7.8",
                        "vendor": "sighthub", "author": "sighthub developers",
                        "server": "sighthub", "server_version": VERSION}),
            ),
        }
    }

    pub(crate) fn latest_answer(&self, caller: &Caller<'_>, q: &Query) -> Result<Resp, ApiError> {
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
