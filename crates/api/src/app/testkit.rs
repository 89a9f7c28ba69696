//! What the handler tests share: an [`App`] over temporary stores, and requests dispatched
//! to it in memory (no socket, no server).

use crate::app::App;
use crate::auth::{Auth, KeyGrants};
use crate::latest::Latest;
use crate::limits::LimitsConfig;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::Request;
use serde_json::Value;
use sighthub_exchange::Exchange;
use sighthub_store::{FjallStore, SightingStore, StoreOptions};
use std::collections::VecDeque;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The sighting API's admin key in these tests.
pub const SIGHT_ADMIN: &str = "sight-admin";

/// A request body delivered in the given chunks.
pub struct Chunks(pub VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// A body of these chunks.
pub fn chunks(parts: &[&[u8]]) -> Chunks {
    Chunks(parts.iter().map(|p| Bytes::copy_from_slice(p)).collect())
}

/// An [`App`] over a sighting store in `dir/db` and the given exchange; the sighting keys
/// are [`SIGHT_ADMIN`] plus `keys` (key, grants).
pub fn app(dir: &Path, exchange: Exchange, keys: &[(&str, &str)]) -> Arc<App> {
    let store = FjallStore::open(&dir.join("db"), StoreOptions::default()).expect("store opens");
    let mut auth = Auth::enabled();
    auth.add_key(SIGHT_ADMIN, KeyGrants::parse("rw, admin").expect("grants"));
    for (key, grants) in keys {
        auth.add_key(key, KeyGrants::parse(grants).expect("grants"));
    }
    let store = Arc::new(store) as Arc<dyn SightingStore>;
    Arc::new(App {
        writer: crate::writer::Writer::start(Arc::clone(&store)).expect("writer thread"),
        store,
        keys: crate::keyring::KeyRing::open(
            auth,
            Some(Arc::new(sighthub_storage::docs::FileDocuments::new(dir))),
        )
        .expect("key ring"),
        latest: Latest::new(100),
        max_body_bytes: 4096,
        limits: LimitsConfig::default(),
        started: Instant::now(),
        exchange,
        identity: None,
        peering: None,
        status: None,
        metrics: Default::default(),
        sessions: crate::console::Sessions::in_memory().expect("sessions"),
    })
}

/// Dispatches one request in memory: status, JSON body (or the text as a JSON string),
/// headers.
pub async fn call(
    app: &Arc<App>,
    method: &str,
    uri: &str,
    key: Option<&str>,
    ct: Option<&str>,
    body: Chunks,
) -> (u16, Value, hyper::HeaderMap) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        b = b.header("authorization", k);
    }
    if let Some(c) = ct {
        b = b.header("content-type", c);
    }
    let resp = app.handle(b.body(body).expect("request")).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v, headers)
}
