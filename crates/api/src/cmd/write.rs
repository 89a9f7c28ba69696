//! `GET /w/{namespace}`: one sighting, queued to the writer thread ([`crate::writer`]) and
//! answered once it is durable.

use super::{guard_private, parse_ns, resolve_ts, to_json, Resp};
use crate::app::{now, App};
use crate::auth::OwnedCaller;
use crate::error::{Access, ApiError};
use crate::query::Query;
use hyper::StatusCode;
use serde_json::json;
use sighthub_store::WriteOp;

impl App {
    pub(crate) async fn write_one(
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
        guard_private(&ns)?;
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
        let stored = self.store.format(&ns).encode(&val).into_owned();
        let (outcome, ticket) = self
            .writer
            .write(ns.clone(), val, ts, q.ttl, q.tags)
            .await?;
        self.store.durability().wait(ticket).await?;
        let outcome = outcome?;
        self.latest.record([(ns.as_str(), stored)], now);
        Ok(to_json(
            StatusCode::OK,
            &json!({"message": "ok", "count": outcome.count, "new": outcome.new}),
        ))
    }
}
