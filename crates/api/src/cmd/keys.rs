//! `/_api/keys`: the admin API of the runtime keys ([`crate::keyring`]): list (never a
//! secret), create (generated or given), change the grants, revoke. Admin key only; each
//! change is durable before it is answered and applies to the next request.

use super::{blocking, Resp};
use crate::app::{now, App};
use crate::error::{json_response, ApiError};
use crate::keyring::{KeyRecord, KeyRequest};
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;
use std::sync::Arc;

fn parse(body: &Bytes) -> Result<KeyRequest, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "Body: {e}. Expected {{\"name\": …, \"sightings\"?: \"rw:feeds/x\", \"exchange\"?: {{\"org\": …, \"publish\": […], \"read\": […], \"tlp_max\": …}}, \"key\"?: …}}."
        ))
    })
}

fn record(r: &KeyRecord) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_default()
}

impl App {
    /// `GET /_api/keys`: the latest list (read from the cluster when front ends share it).
    pub(crate) async fn keys_list(self: &Arc<Self>) -> Result<Resp, ApiError> {
        let app = Arc::clone(self);
        let list = blocking(move || app.keys.list()).await?;
        let keys: Vec<_> = list.iter().map(record).collect();
        Ok(json_response(StatusCode::OK, &json!({ "keys": keys })))
    }

    /// `POST /_api/keys`: 201 with the key in clear, shown this once.
    pub(crate) async fn keys_create(self: &Arc<Self>, body: Bytes) -> Result<Resp, ApiError> {
        let req = parse(&body)?;
        let app = Arc::clone(self);
        let (r, key) = blocking(move || {
            let ex = app.exchange.inner().ok().map(|i| i.keys());
            app.keys.create(req, ex.as_deref(), now())
        })
        .await?;
        let mut v = record(&r);
        v["key"] = json!(key);
        v["message"] = json!("Key created; it is shown only this once.");
        Ok(json_response(StatusCode::CREATED, &v))
    }

    /// `PATCH /_api/keys/{id}`.
    pub(crate) async fn keys_update(
        self: &Arc<Self>,
        id: String,
        body: Bytes,
    ) -> Result<Resp, ApiError> {
        let req = parse(&body)?;
        let app = Arc::clone(self);
        let r = blocking(move || app.keys.update(&id, req)).await?;
        Ok(json_response(StatusCode::OK, &record(&r)))
    }

    /// `DELETE /_api/keys/{id}`.
    pub(crate) async fn keys_revoke(self: &Arc<Self>, id: String) -> Result<Resp, ApiError> {
        let app = Arc::clone(self);
        let r = blocking(move || app.keys.revoke(&id)).await?;
        let mut v = record(&r);
        v["message"] = json!("Key revoked.");
        Ok(json_response(StatusCode::OK, &v))
    }
}
