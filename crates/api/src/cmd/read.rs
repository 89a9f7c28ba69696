//! `GET /r/{namespace}` and `GET /rs/{namespace}`: one value (with or without hourly stats),
//! a listing (paged with `limit=`/`after=`), or a count; and `GET /_api/who`.

use super::{blocking, found, parse_ns, to_json, view_json, Resp, ViewJson};
use crate::app::{now, App};
use crate::auth::OwnedCaller;
use crate::error::{Access, ApiError};
use crate::query::Query;
use base64::Engine as _;
use hyper::StatusCode;
use serde::Serialize;
use serde_json::json;
use sighthub_store::{ListPage, Namespace, ReadOutcome};
use std::sync::Arc;

/// Default and largest page for paged listings.
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 100_000;

/// Most hourly stats buckets a `/rs` answer renders on the async worker; a record with more
/// is rendered on a blocking thread (up to `max_stats_buckets` of them).
const INLINE_STATS: usize = 64;

/// The answer to one value's read: its JSON, or the miss as SightingDB words it.
fn answer_read(
    outcome: ReadOutcome,
    namespace: String,
    value: String,
    stats: bool,
) -> Result<Resp, ApiError> {
    let v = found(outcome, &namespace, &value)?;
    Ok(to_json(StatusCode::OK, &view_json(&v, stats)))
}

/// The answer to SightingDB's galaxy and tier routes and `?for_merge`.
pub const GALAXY: &str = "SightingDB's galaxy and tier synchronisation (for_merge, /_api/merge, /_api/tier) is not implemented by sighthub: an instance has no galaxy nodes. Read without for_merge; to share sightings between instances, peer them over IEP04 (README, \"Peering\").";

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

impl App {
    pub(crate) async fn read_get(
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
        if q.for_merge {
            return Err(ApiError::NotImplemented(GALAXY));
        }
        let now = now();
        if q.count {
            if q.val.is_some() {
                return Err(ApiError::BadRequest("count applies to a namespace, not to one value. Drop val= to count, or drop count to read the value.".into()));
            }
            let store = Arc::clone(&self.store);
            let raw_ns = raw_ns.to_owned();
            // Exact: the store moves every due TTL value to `_expired/` before it counts
            // (`Sightings::count`), so expired values are never counted. (SightingDB 0.7.8
            // answers false once a namespace has held a TTL: it counts expired values until
            // its sweep.)
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
        let raw_ns = raw_ns.to_owned();
        // A read is answered here, on the async worker, when the store says it is cheap
        // (`read_now`: a local engine and no sweep due); its shadow sighting (a write) is
        // queued to the writer thread and applied before the answer; a record with many
        // hourly stats is still rendered on a blocking thread. Otherwise the whole read goes
        // to a blocking thread.
        if !val.is_empty() {
            if let Some(outcome) = self.store.read_now(&ns, &val, now) {
                let outcome = outcome?;
                if !q.noshadow {
                    self.writer.shadow(ns.clone(), val.clone()).await?;
                }
                if matches!(&outcome, ReadOutcome::Found(v) if stats && v.record.stats.len() > INLINE_STATS)
                {
                    return blocking(move || answer_read(outcome, raw_ns, val, stats)).await;
                }
                return answer_read(outcome, raw_ns, val, stats);
            }
        }
        let store = Arc::clone(&self.store);
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
            answer_read(outcome, raw_ns, val, stats)
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

    /// `GET /_api/who?val=V`: the namespaces holding a value that the key may read.
    pub(crate) async fn who(
        self: &Arc<Self>,
        caller: OwnedCaller,
        q: Query,
    ) -> Result<Resp, ApiError> {
        let val = q.val.filter(|v| !v.is_empty()).ok_or_else(|| {
            ApiError::BadRequest("Did not receive a val= argument in the query string.".into())
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
}
