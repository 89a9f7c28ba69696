//! Whole namespaces: `/d/{namespace}` (delete), `/c/{namespace}` (read or set the value
//! format), `GET /_api/namespaces` (the list).

use super::{blocking, to_json, Resp};
use crate::app::{now, App};
use crate::auth::{Caller, OwnedCaller};
use crate::error::{Access, ApiError};
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;
use sighthub_store::{Namespace, ValueFormat};
use std::sync::Arc;

impl App {
    pub(crate) async fn delete(&self, caller: &Caller<'_>, raw_ns: &str) -> Result<Resp, ApiError> {
        let ns = super::parse_ns(raw_ns)?;
        caller.check(Access::Write, &ns)?;
        super::guard_private(&ns)?;
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

    pub(crate) fn config_answer(&self, ns: &Namespace) -> Resp {
        to_json(
            StatusCode::OK,
            &json!({"namespace": ns.as_str(), "value_format": self.store.format(ns).name()}),
        )
    }

    pub(crate) async fn config_set(&self, ns: Namespace, body: Bytes) -> Result<Resp, ApiError> {
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

    /// `GET /_api/namespaces`: the stored public namespaces the key may read.
    pub(crate) async fn namespaces(
        self: &Arc<Self>,
        caller: OwnedCaller,
    ) -> Result<Resp, ApiError> {
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
                let message =
                    format!("Only the first {max} namespaces are listed (max_list_values).");
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
