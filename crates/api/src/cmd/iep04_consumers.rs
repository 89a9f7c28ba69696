//! Named consumers: `GET /iep04/consumers/{name}` (its server-side cursor),
//! `DELETE /iep04/consumers/{name}` (forget it), `GET /iep04/consumers/{name}/messages`
//! (read after it, without moving it), `POST /iep04/consumers/{name}/ack` (move it forward,
//! `{"cursor": …}` or `?cursor=`).

use super::iep04::{ack_cursor, consumer_name, cursor_seq, query, read_params, require_read};
use super::iep04_read::read;
use super::{blocking, Resp};
use crate::body::{BodyReader, Limit};
use crate::error::{json_response, ApiError};
use bytes::Bytes;
use hyper::body::Body;
use hyper::{Request, StatusCode};
use serde_json::json;
use sighthub_exchange::record::encode_cursor;
use sighthub_exchange::store::now_secs;
use sighthub_exchange::{Grants, Inner};
use std::sync::Arc;

/// The largest acknowledgement body.
const MAX_ACK_BYTES: usize = 64 * 1024;

/// `GET /iep04/consumers/{name}`.
pub(crate) async fn get_route(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    name: &str,
    raw_query: &str,
) -> Result<Resp, ApiError> {
    query(raw_query, &[])?;
    let name = consumer_name(name)?;
    require_read(&grants)?;
    consumer_state(inner, &grants, name)
}

/// `DELETE /iep04/consumers/{name}`.
pub(crate) async fn delete_route(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    name: &str,
    raw_query: &str,
) -> Result<Resp, ApiError> {
    query(raw_query, &[])?;
    let name = consumer_name(name)?;
    require_read(&grants)?;
    let (store, org, n) = (Arc::clone(&inner.store), grants.org, name.to_owned());
    let (existed, ticket) = blocking(move || Ok(store.consumer_delete(org, &n)?)).await?;
    inner
        .store
        .group_commit()
        .wait(ticket)
        .await
        .map_err(sighthub_exchange::Error::from)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "deleted": existed}),
    ))
}

/// `GET /iep04/consumers/{name}/messages?limit=&wait=&export=&with_type=&format=`.
pub(crate) async fn messages_route(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    name: &str,
    raw_query: &str,
    accept: Option<&str>,
) -> Result<Resp, ApiError> {
    let q = query(
        raw_query,
        &["limit", "wait", "export", "with_type", "format"],
    )?;
    let name = consumer_name(name)?;
    require_read(&grants)?;
    let p = read_params(&inner.cfg, &q, accept)?;
    let after = inner
        .store
        .consumer(grants.org, name)?
        .map_or(0, |c| c.acked);
    read(inner, grants, after, p).await
}

/// `POST /iep04/consumers/{name}/ack` with `{"cursor": …}` or `?cursor=`.
pub(crate) async fn ack_route<B>(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    name: &str,
    req: Request<B>,
    raw_query: &str,
) -> Result<Resp, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let q = query(raw_query, &["cursor"])?;
    let name = consumer_name(name)?.to_owned();
    require_read(&grants)?;
    let cursor = match q.get("cursor") {
        Some(c) => c.clone(),
        None => {
            let (parts, body) = req.into_parts();
            let body = BodyReader::new(&parts.headers, body, Limit::Exchange(MAX_ACK_BYTES))?;
            ack_cursor(&body.collect().await?)?
        }
    };
    let seq = cursor_seq(inner, &cursor)?;
    let (store, org) = (Arc::clone(&inner.store), grants.org);
    let n = name.clone();
    let (_, ticket) = blocking(move || Ok(store.consumer_ack(org, &n, seq, now_secs())?)).await?;
    inner
        .store
        .group_commit()
        .wait(ticket)
        .await
        .map_err(sighthub_exchange::Error::from)?;
    consumer_state(inner, &grants, &name)
}

fn consumer_state(inner: &Inner, grants: &Grants, name: &str) -> Result<Resp, ApiError> {
    let state = inner.store.consumer(grants.org, name)?;
    let acked = state.map_or(0, |s| s.acked);
    let head = inner.store.durable();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "name": name,
            "exists": state.is_some(),
            "cursor": encode_cursor(acked, inner.store.epoch()),
            "acked_seq": acked,
            "updated_at": state.map(|s| s.updated_at),
            "head_seq": head,
            "behind": head.saturating_sub(acked),
        }),
    ))
}
