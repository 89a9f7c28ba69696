//! TAXII 2.1, read-only, over the exchange's log (`/taxii2/…`): discovery, one API root,
//! the collections of the caller's exchange key, their objects and manifest. The mapping to
//! STIX and the collections are `sighthub_taxii`'s; the read goes through the exchange's one
//! reader of the log ([`sighthub_exchange::Reader`]) with the collection's grants; `next` is
//! the exchange's log cursor.
//!
//! Every answer is `application/taxii+json;version=2.1`; a request whose `Accept` admits
//! neither it nor any JSON is 406; errors are TAXII error messages
//! (`{"title", "description", "http_status"}`).

use super::iep04::{cursor_seq, query};
use super::{blocking, Resp};
use crate::error::{bytes_response, ApiError};
use hyper::StatusCode;
use serde_json::{json, Value};
use sighthub_exchange::record::{encode_cursor, EntryKind};
use sighthub_exchange::{Cut, Grants, Inner, Reader};
use sighthub_iep04::Message;
use sighthub_taxii::{Collection, LIMITS, TAXII_MEDIA_TYPE};
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

/// The API root's path.
pub const API_ROOT: &str = "/taxii2/api/";
/// Log records examined per request at most (records the collection does not show count).
const MAX_SCAN: usize = 100_000;

/// What a `/taxii2/` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaxiiRoute {
    /// `GET /taxii2/`.
    Discovery,
    /// `GET /taxii2/api/`.
    ApiRoot,
    /// `GET /taxii2/api/collections/`.
    Collections,
    /// `GET /taxii2/api/collections/{id}/`.
    Collection(String),
    /// `GET /taxii2/api/collections/{id}/objects/`.
    Objects(String),
    /// `GET /taxii2/api/collections/{id}/manifest/`.
    Manifest(String),
}

fn taxii(status: StatusCode, body: &Value) -> Resp {
    bytes_response(
        status,
        TAXII_MEDIA_TYPE,
        serde_json::to_vec(body).unwrap_or_default(),
    )
}

/// An error as a TAXII error message, with its status.
pub fn error_response(e: &ApiError) -> Resp {
    let status = e.status();
    let mut resp = taxii(
        status,
        &json!({
            "title": status.canonical_reason().unwrap_or("error"),
            "description": e.to_string(),
            "http_status": status.as_u16().to_string(),
        }),
    );
    if let ApiError::Method(_, allow) = e {
        if let Ok(v) = hyper::header::HeaderValue::from_str(allow) {
            resp.headers_mut().insert(hyper::header::ALLOW, v);
        }
    }
    resp
}

/// Whether `accept` admits a TAXII answer (absent, `*/*`, `application/*`, the TAXII media
/// type or plain JSON).
pub fn acceptable(accept: Option<&str>) -> bool {
    let Some(a) = accept else { return true };
    a.split(',').any(|part| {
        let t = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let params = part.to_ascii_lowercase().replace(' ', "");
        match t.as_str() {
            "*/*" | "application/*" | "application/json" => true,
            "application/taxii+json" => {
                !params.contains("version=") || params.contains("version=2.1")
            }
            _ => false,
        }
    })
}

fn find(grants: &Grants, id: &str) -> Result<Collection, ApiError> {
    sighthub_taxii::collections(grants)
        .into_iter()
        .find(|c| c.id.to_string() == id)
        .ok_or_else(|| ApiError::NotFound(format!("No collection '{id}' readable by this key.")))
}

/// Answers one TAXII route for the caller `grants`.
pub(crate) async fn route(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    route: TaxiiRoute,
    raw_query: &str,
) -> Result<Resp, ApiError> {
    let manifest = matches!(route, TaxiiRoute::Manifest(_));
    match route {
        TaxiiRoute::Discovery => {
            query(raw_query, &[])?;
            Ok(taxii(
                StatusCode::OK,
                &json!({
                    "title": "sighthub TAXII 2.1",
                    "description": "The IEP04 exchange log of this sighthub, as STIX 2.1 (read-only).",
                    "default": API_ROOT,
                    "api_roots": [API_ROOT],
                }),
            ))
        }
        TaxiiRoute::ApiRoot => {
            query(raw_query, &[])?;
            Ok(taxii(
                StatusCode::OK,
                &json!({
                    "title": "sighthub exchange",
                    "versions": [TAXII_MEDIA_TYPE],
                    "max_content_length": inner.cfg.max_request_bytes,
                }),
            ))
        }
        TaxiiRoute::Collections => {
            query(raw_query, &[])?;
            let list: Vec<Value> = sighthub_taxii::collections(&grants)
                .iter()
                .map(sighthub_taxii::collection_json)
                .collect();
            Ok(taxii(StatusCode::OK, &json!({ "collections": list })))
        }
        TaxiiRoute::Collection(id) => {
            query(raw_query, &[])?;
            Ok(taxii(
                StatusCode::OK,
                &sighthub_taxii::collection_json(&find(&grants, &id)?),
            ))
        }
        TaxiiRoute::Objects(id) | TaxiiRoute::Manifest(id) => {
            let q = query(
                raw_query,
                &["added_after", "limit", "next", "match[type]", "match[id]"],
            )?;
            let c = find(&grants, &id)?;
            let limit = match q.get("limit") {
                Some(l) => l
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        ApiError::BadRequest("limit must be a positive integer.".into())
                    })?
                    .min(LIMITS.1),
                None => LIMITS.0,
            };
            let after = match q.get("next") {
                Some(n) => cursor_seq(inner, n)?,
                None => 0,
            };
            let added_after = match q.get("added_after") {
                Some(t) => Some(sighthub_taxii::parse_timestamp(t).ok_or_else(|| {
                    ApiError::BadRequest("added_after must be an RFC 3339 timestamp.".into())
                })?),
                None => None,
            };
            let list = |k: &str| -> Option<HashSet<String>> {
                q.get(k)
                    .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            };
            let filter = Filter {
                types: list("match[type]"),
                ids: list("match[id]"),
            };
            let inner = Arc::clone(inner);
            blocking(move || page(&inner, c, after, added_after, limit, &filter, manifest)).await
        }
    }
}

struct Filter {
    types: Option<HashSet<String>>,
    ids: Option<HashSet<String>>,
}

impl Filter {
    fn keeps(&self, o: &Value) -> bool {
        let s = |k: &str| {
            o.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        self.types.as_ref().is_none_or(|t| t.contains(&s("type")))
            && self.ids.as_ref().is_none_or(|i| i.contains(&s("id")))
    }
}

/// One page of objects (or of their manifest), whole messages at a time: a page holds at
/// least one message's objects and stops before the one that would take it past `limit`.
fn page(
    inner: &Inner,
    c: Collection,
    after: u64,
    added_after: Option<u64>,
    limit: usize,
    filter: &Filter,
    manifest: bool,
) -> Result<Resp, ApiError> {
    let store = &inner.store;
    let default_tlp = inner.cfg.default_tlp;
    let reader = Reader::new(Arc::clone(store), Arc::new(c.grants.clone()), default_tlp);
    let mut objects: Vec<(u64, Value)> = Vec::new();
    let mut failure = None;
    let end = reader.page(after, MAX_SCAN, |_, e| {
        if e.kind != EntryKind::Message || added_after.is_some_and(|t| e.accepted_at <= t) {
            return ControlFlow::Continue(());
        }
        let Ok(msg) = Message::from_slice(e.json) else {
            return ControlFlow::Continue(());
        };
        let mut these = sighthub_taxii::event_objects(&msg, e.accepted_at);
        // Withdrawals and replacements that take effect: a revoked version of each target's
        // indicator, when this collection shows the target.
        match store.effects(&msg) {
            Ok(claims) => {
                for claim in &claims {
                    if let Some(v) = revoked(&reader, claim.target, e.accepted_at, default_tlp) {
                        these.push(v);
                    }
                }
            }
            Err(err) => {
                failure = Some(err);
                return ControlFlow::Break(Cut::Before);
            }
        }
        these.retain(|o| filter.keeps(o));
        if !objects.is_empty() && objects.len() + these.len() > limit {
            return ControlFlow::Break(Cut::Before);
        }
        objects.extend(these.into_iter().map(|o| (e.accepted_at, o)));
        if objects.len() >= limit {
            ControlFlow::Break(Cut::After)
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if let Some(err) = failure {
        return Err(err.into());
    }
    let more = !end.at_end;
    let first = objects.first().map(|(t, _)| sighthub_taxii::timestamp(*t));
    let last = objects.last().map(|(t, _)| sighthub_taxii::timestamp(*t));
    let items: Vec<Value> = if manifest {
        objects
            .into_iter()
            .map(|(t, o)| {
                json!({
                    "id": o["id"],
                    "date_added": sighthub_taxii::timestamp(t),
                    "version": sighthub_taxii::version_of(&o),
                    "media_type": sighthub_taxii::STIX_MEDIA_TYPE,
                })
            })
            .collect()
    } else {
        objects.into_iter().map(|(_, o)| o).collect()
    };
    let mut body = json!({ "more": more, "objects": items });
    if more {
        body["next"] = json!(encode_cursor(end.last, store.epoch()));
    }
    if body["objects"].as_array().is_some_and(Vec::is_empty) {
        body.as_object_mut().map(|m| m.remove("objects"));
    }
    let mut resp = taxii(StatusCode::OK, &body);
    for (h, v) in [
        ("x-taxii-date-added-first", first),
        ("x-taxii-date-added-last", last),
    ] {
        if let Some(v) = v.and_then(|v| hyper::header::HeaderValue::from_str(&v).ok()) {
            resp.headers_mut().insert(h, v);
        }
    }
    Ok(resp)
}

/// The revoked indicator of the withdrawn or replaced `target`, if the reader may see it.
fn revoked(
    reader: &Reader,
    target: uuid::Uuid,
    at: u64,
    default_tlp: sighthub_iep04::Tlp,
) -> Option<Value> {
    let (_, stored) = reader.store().lookup(&target).ok()??;
    let stored = stored?;
    let entry = stored.entry().ok()?;
    let g = reader.grants()?;
    if !g.may_read(entry.format_type, &entry.tags, entry.tlp, default_tlp) {
        return None;
    }
    let msg = Message::from_slice(entry.json).ok()?;
    sighthub_taxii::revoked_indicator(&msg, entry.accepted_at, at)
}
