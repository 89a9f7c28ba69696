//! Bulk routes: `POST /wb` (write, one batch and one fsync), `POST /vwb` (dry run),
//! `POST /rb` and `/rbs` (read, with hourly stats). The request is authorised as a whole
//! before anything is written; answers are in request order.

use super::{resolve_ts, to_json, view_json, Resp, ViewJson};
use crate::app::{now, App};
use crate::auth::{Caller, OwnedCaller};
use crate::bulk::{self, BulkItem};
use crate::error::{Access, ApiError};
use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;
use serde_json::json;
use sighthub_store::{ItemError, Namespace, ReadOutcome, View, WriteOp, WriteOutcome};
use std::sync::Arc;

impl App {
    /// Parses a bulk body within `[limits] max_bulk_items`.
    pub(crate) fn parse_bulk<'b>(&self, body: &'b [u8]) -> Result<bulk::BulkBody<'b>, ApiError> {
        bulk::parse(body, self.limits.max_bulk_items).map_err(|e| match e {
            bulk::BulkError::TooManyItems(n) => ApiError::TooManyItems(n),
            e => ApiError::BadRequest(e.to_string()),
        })
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

    pub(crate) fn bulk_validate(
        &self,
        caller: &OwnedCaller,
        body: &[u8],
    ) -> Result<Resp, ApiError> {
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

    pub(crate) async fn bulk_write(
        self: Arc<Self>,
        caller: OwnedCaller,
        body: Bytes,
    ) -> Result<Resp, ApiError> {
        let app = Arc::clone(&self);
        let (resp, ticket) = super::blocking(move || {
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

    pub(crate) fn bulk_read(
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
                    match super::found(outcome, &item.namespace, &item.value) {
                        Ok(v) => {
                            answer_bytes =
                                answer_bytes.saturating_add(v.record.approx_bytes(v.value.len()));
                            if answer_bytes > self.limits.max_page_bytes {
                                return Err(ApiError::AnswerTooLarge(self.limits.max_page_bytes));
                            }
                            *slot = Some(ReadEntry::View(v));
                            continue;
                        }
                        Err(miss) => miss.body(),
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
            .ok_or(ApiError::Internal("bulk read left an item unanswered"))?;
        let items = out
            .iter()
            .map(|e| match e {
                ReadEntry::View(v) => ReadEntryJson::View(view_json(v, stats)),
                ReadEntry::Other(o) => ReadEntryJson::Other(o),
            })
            .collect();
        Ok(to_json(StatusCode::OK, &Items { items }))
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
