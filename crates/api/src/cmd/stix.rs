//! `GET /stix/{namespace}` and `POST /_api/stix`: namespaces (or one value) as one STIX 2.1
//! bundle, as SightingDB 0.7.8 serves them; the mapping is `sighthub-stix`'s.
//!
//! - `GET /stix/<ns>[?limit=N][&val=V][&recursive][&untyped=include]`: read grant on `<ns>`;
//!   `_config` is 403; an unknown namespace 404 `Path not found`, an unknown value 404
//!   `Value not found`; `val=` with `recursive` is 400.
//! - `POST /_api/stix {"namespaces":[..],"namespace"?,"q"?,"limit"?,"untyped"?,"recursive"?}`:
//!   a read grant on every namespace named, checked before anything is read (one refused →
//!   403); absent ones are named in `X-SightingDB-Missing`, all absent → 404; none named →
//!   400.
//! - `recursive` adds every stored public namespace below the one named that the key may
//!   read (whole segments); `limit` (default 10,000, at most 100,000) is the budget of values
//!   for the whole export; `untyped=include` exports values of no known type as
//!   `x-sightingdb-value`.
//!
//! The answer is `application/stix+json;version=2.1` with `X-SightingDB-Exported`,
//! `-Skipped`, `-Untyped`, `-Namespaces`, `-Truncated` (and `-Missing`). Values are streamed
//! from the store's ordered scan, a page at a time, into the bundle: the work is linear in
//! the values read, and nothing but the answer (at most [`MAX_BUNDLE_BYTES`]) is held.

use super::{blocking, parse_ns, Resp};
use crate::app::{now, App};
use crate::auth::OwnedCaller;
use crate::error::{bytes_response, Access, ApiError};
use crate::query::{decode_component, Query};
use hyper::header::HeaderValue;
use hyper::StatusCode;
use serde::Deserialize;
use sighthub_stix::export::Value as StixValue;
use sighthub_stix::{Exporter, Settings, Untyped};
use sighthub_store::{ItemError, Namespace, SightingStore, View};
use std::sync::Arc;

/// Values exported when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 10_000;
/// Most values one export may read.
pub const MAX_LIMIT: usize = 100_000;
/// Most bytes of one bundle: an export stops there (`X-SightingDB-Truncated: true`).
pub const MAX_BUNDLE_BYTES: usize = 128 * 1024 * 1024;
/// Most namespaces one `POST /_api/stix` may name.
pub const MAX_NAMESPACES: usize = 1000;
/// Values read from the store per page.
const PAGE: usize = 1000;
const CONTENT_TYPE: &str = "application/stix+json;version=2.1";

/// The body of `POST /_api/stix`.
#[derive(Debug, Deserialize)]
struct ExportRequest {
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    q: String,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    untyped: Untyped,
    #[serde(default)]
    recursive: bool,
}

/// What one export is to read.
struct Plan {
    namespaces: Vec<Namespace>,
    filter: String,
    limit: usize,
    untyped: Untyped,
    bundle_key: String,
}

/// A finished export and what the headers say of it.
struct Outcome {
    done: sighthub_stix::Finished,
    namespaces: usize,
    truncated: bool,
    missing: Vec<String>,
}

fn limit_of(limit: Option<u64>) -> usize {
    limit.map_or(DEFAULT_LIMIT, |l| {
        usize::try_from(l).unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT)
    })
}

/// `recursive` (a presence flag) and `untyped` (`include`, anything else skips): the two
/// parameters only `/stix` reads, decoded and refused twice as [`Query`] does.
fn stix_params(raw: &str) -> Result<(bool, Untyped), ApiError> {
    let (mut recursive, mut untyped) = (false, None::<String>);
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |e: crate::query::QueryError| ApiError::BadRequest(e.to_string());
        let k = decode_component(k).map_err(bad)?;
        let twice = |name: &str| {
            ApiError::BadRequest(format!(
                "Invalid query string: Query deserialize error: duplicate field `{name}`"
            ))
        };
        match k.as_ref() {
            "recursive" if recursive => return Err(twice("recursive")),
            "recursive" => recursive = true,
            "untyped" if untyped.is_some() => return Err(twice("untyped")),
            "untyped" => untyped = Some(decode_component(v).map_err(bad)?.into_owned()),
            _ => {}
        }
    }
    let untyped = match untyped.as_deref() {
        Some("include") => Untyped::Include,
        _ => Untyped::Skip,
    };
    Ok((recursive, untyped))
}

fn stix_value(v: &View) -> StixValue<'_> {
    StixValue {
        value: &v.value,
        first_seen: v.record.first_seen,
        last_seen: v.record.last_seen,
        count: v.record.count,
        tags: &v.record.tags,
        ttl: v.record.ttl,
    }
}

/// The stored public namespaces within each of `named` that the caller may read, in order.
fn subtrees(
    store: &dyn SightingStore,
    caller: &OwnedCaller,
    named: &[Namespace],
) -> Result<Vec<Namespace>, ApiError> {
    Ok(store
        .namespaces()?
        .into_iter()
        .map(|info| info.namespace)
        .filter(|ns| {
            !ns.is_internal()
                && named.iter().any(|n| ns.is_within(n.as_str()))
                && caller.as_caller().allows(Access::Read, ns)
        })
        .collect())
}

/// Streams the plan's namespaces through the exporter (see the module docs).
fn export(
    store: &dyn SightingStore,
    plan: &Plan,
    max_page_bytes: usize,
) -> Result<Outcome, ApiError> {
    let now = now();
    let mut ex = Exporter::new(&Settings::default(), plan.untyped, &plan.bundle_key);
    let mut budget = plan.limit;
    let (mut truncated, mut found, mut missing) = (false, 0usize, Vec::new());
    'namespaces: for ns in &plan.namespaces {
        if budget == 0 {
            truncated = true;
            break;
        }
        let mut after: Option<String> = None;
        let mut first = true;
        loop {
            // With the budget spent, one more matching value is all that is looked for.
            let want = if budget == 0 && plan.filter.is_empty() {
                1
            } else {
                budget.clamp(1, PAGE)
            };
            let Some(page) = store.list(ns, after.as_deref(), want, max_page_bytes, now)? else {
                missing.push(ns.as_str().to_owned());
                break;
            };
            if first {
                found += 1;
                first = false;
            }
            for v in &page.items {
                if !plan.filter.is_empty() && !v.value.contains(plan.filter.as_str()) {
                    continue;
                }
                if budget == 0 || ex.len() >= MAX_BUNDLE_BYTES {
                    truncated = true;
                    break 'namespaces;
                }
                ex.push(ns.as_str(), &stix_value(v));
                budget -= 1;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    Ok(Outcome {
        done: ex.finish(),
        namespaces: found,
        truncated,
        missing,
    })
}

fn answer(out: Outcome) -> Resp {
    let mut resp = bytes_response(StatusCode::OK, CONTENT_TYPE, out.done.body);
    let h = resp.headers_mut();
    for (name, value) in [
        ("x-sightingdb-exported", out.done.exported.to_string()),
        ("x-sightingdb-skipped", out.done.skipped.to_string()),
        ("x-sightingdb-untyped", out.done.untyped.to_string()),
        ("x-sightingdb-namespaces", out.namespaces.to_string()),
        ("x-sightingdb-truncated", out.truncated.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if !out.missing.is_empty() {
        // A namespace is UTF-8 and may not be a valid header value; those are
        // percent-encoded.
        let joined = out.missing.join(",");
        let value = HeaderValue::from_str(&joined).unwrap_or_else(|_| {
            let enc = percent_encoding::utf8_percent_encode(&joined, percent_encoding::CONTROLS)
                .to_string();
            HeaderValue::from_str(&enc).unwrap_or(HeaderValue::from_static(""))
        });
        h.insert("x-sightingdb-missing", value);
    }
    resp
}

impl App {
    /// `GET /stix/{namespace}`.
    pub(crate) async fn stix_get(
        self: &Arc<Self>,
        caller: OwnedCaller,
        raw_ns: &str,
        raw_query: &str,
    ) -> Result<Resp, ApiError> {
        let ns = parse_ns(raw_ns)?;
        caller.as_caller().check(Access::Read, &ns)?;
        if ns.is_config() {
            return Err(ApiError::ConfigNamespace);
        }
        let q = Query::parse(raw_query).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let (recursive, untyped) = stix_params(raw_query)?;
        let limit = limit_of(q.limit);
        let raw_ns = raw_ns.to_owned();
        let app = Arc::clone(self);
        let max_page_bytes = self.limits.max_page_bytes;
        if let Some(val) = q.val {
            if recursive {
                return Err(ApiError::BadRequest(
                    "val= names one value in one namespace, so it cannot be combined with recursive.".into(),
                ));
            }
            if val.is_empty() {
                return Err(ApiError::Item(ItemError::EmptyValue));
            }
            return blocking(move || {
                let v = super::found(app.store.read(&ns, &val, now())?, &raw_ns, &val)?;
                let key = Exporter::value_key(ns.as_str(), &val);
                let mut ex = Exporter::new(&Settings::default(), untyped, &key);
                ex.push(ns.as_str(), &stix_value(&v));
                Ok(answer(Outcome {
                    done: ex.finish(),
                    namespaces: 1,
                    truncated: false,
                    missing: Vec::new(),
                }))
            })
            .await;
        }
        blocking(move || {
            let not_found = || ApiError::PathNotFound {
                namespace: raw_ns.clone(),
                value: String::new(),
            };
            let namespaces = if recursive {
                subtrees(app.store.as_ref(), &caller, std::slice::from_ref(&ns))?
            } else {
                vec![ns]
            };
            if namespaces.is_empty() {
                return Err(not_found());
            }
            let plan = Plan {
                bundle_key: Exporter::namespaces_key(namespaces.iter().map(Namespace::as_str)),
                namespaces,
                filter: String::new(),
                limit,
                untyped,
            };
            let out = export(app.store.as_ref(), &plan, max_page_bytes)?;
            if out.namespaces == 0 {
                return Err(not_found());
            }
            Ok(answer(out))
        })
        .await
    }

    /// `POST /_api/stix`.
    pub(crate) async fn stix_post(
        self: &Arc<Self>,
        caller: OwnedCaller,
        body: bytes::Bytes,
    ) -> Result<Resp, ApiError> {
        let req: ExportRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("Invalid JSON body: Json deserialize error: {e}"))
        })?;
        let mut raw: Vec<String> = Vec::new();
        for name in req.namespace.iter().chain(&req.namespaces) {
            let name = name.trim().trim_matches('/');
            if !name.is_empty() && !raw.iter().any(|n| n == name) {
                raw.push(name.to_owned());
            }
        }
        if raw.is_empty() {
            return Err(ApiError::BadRequest(
                "Name at least one namespace to export.".into(),
            ));
        }
        if raw.len() > MAX_NAMESPACES {
            return Err(ApiError::BadRequest(format!(
                "Too many namespaces in one export; the limit is {MAX_NAMESPACES}. Export them in several requests, or name their parent with \"recursive\": true."
            )));
        }
        // Every namespace is authorised before anything is read.
        let mut named = Vec::with_capacity(raw.len());
        for name in &raw {
            let ns = parse_ns(name)?;
            if ns.is_config() {
                return Err(ApiError::ConfigNamespace);
            }
            caller.as_caller().check(Access::Read, &ns)?;
            named.push(ns);
        }
        let app = Arc::clone(self);
        let max_page_bytes = self.limits.max_page_bytes;
        blocking(move || {
            let not_found = || ApiError::PathNotFound {
                namespace: raw[0].clone(),
                value: String::new(),
            };
            let namespaces = if req.recursive {
                subtrees(app.store.as_ref(), &caller, &named)?
            } else {
                named
            };
            if namespaces.is_empty() {
                return Err(not_found());
            }
            let plan = Plan {
                bundle_key: Exporter::namespaces_key(namespaces.iter().map(Namespace::as_str)),
                filter: req.q,
                limit: limit_of(req.limit),
                untyped: req.untyped,
                namespaces,
            };
            let out = export(app.store.as_ref(), &plan, max_page_bytes)?;
            if out.namespaces == 0 {
                return Err(not_found());
            }
            Ok(answer(out))
        })
        .await
    }
}
