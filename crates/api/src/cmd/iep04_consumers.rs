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
use sighthub_exchange::{ExchangeStore, Grants, Inner, Ticket};
use std::collections::HashMap;
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
    let (_, name) = consumer_request(raw_query, &[], name, &grants)?;
    consumer_state(inner, &grants, name)
}

/// `DELETE /iep04/consumers/{name}`.
pub(crate) async fn delete_route(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    name: &str,
    raw_query: &str,
) -> Result<Resp, ApiError> {
    let (_, name) = consumer_request(raw_query, &[], name, &grants)?;
    let (org, n) = (grants.org, name.to_owned());
    let existed = durably(inner, move |store| store.consumer_delete(org, &n)).await?;
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
    let allowed = ["limit", "wait", "export", "with_type", "format"];
    let (q, name) = consumer_request(raw_query, &allowed, name, &grants)?;
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
    let (q, name) = consumer_request(raw_query, &["cursor"], name, &grants)?;
    let cursor = match q.get("cursor") {
        Some(c) => c.clone(),
        None => {
            let (parts, body) = req.into_parts();
            let body = BodyReader::new(&parts.headers, body, Limit::Exchange(MAX_ACK_BYTES))?;
            ack_cursor(&body.collect().await?)?
        }
    };
    let seq = cursor_seq(inner, &cursor)?;
    let (org, n) = (grants.org, name.to_owned());
    durably(inner, move |store| {
        store.consumer_ack(org, &n, seq, now_secs())
    })
    .await?;
    consumer_state(inner, &grants, name)
}

/// What every consumer route checks first, in this order: the query's parameters
/// (`allowed`), the consumer's name, a key that may read.
fn consumer_request<'n>(
    raw_query: &str,
    allowed: &[&str],
    name: &'n str,
    grants: &Grants,
) -> Result<(HashMap<String, String>, &'n str), ApiError> {
    let q = query(raw_query, allowed)?;
    let name = consumer_name(name)?;
    require_read(grants)?;
    Ok((q, name))
}

/// Runs a change of a consumer on a blocking thread and returns once it is durable.
async fn durably<T: Send + 'static>(
    inner: &Inner,
    change: impl FnOnce(&ExchangeStore) -> sighthub_exchange::Result<(T, Ticket)> + Send + 'static,
) -> Result<T, ApiError> {
    let store = Arc::clone(&inner.store);
    let (out, ticket) = blocking(move || Ok(change(&store)?)).await?;
    inner
        .store
        .group_commit()
        .wait(ticket)
        .await
        .map_err(sighthub_exchange::Error::from)?;
    Ok(out)
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
