//! One task per pulled hub: long-poll the hub's named consumer, append the page to the local
//! log (each message's path extended with the hub's instance, so it is never pushed back
//! there), wait until that is durable, then acknowledge the page's cursor at the hub.
//!
//! Messages that already crossed this instance (it is on their path) are not ingested again
//! (`own`). A crash between the local append and the acknowledgement re-reads the page: its
//! messages are then `duplicate` locally, and nothing is lost.
//!
//! **One front end at a time.** On an exchange several front ends share, the pull runs where
//! its lease (`relay/pull/<name>`, [`sighthub_exchange::lease`]) is held: renewed before each
//! page and every [`Lease::idle`] during a long poll, checked again before a page is
//! appended and acknowledged. A page fetched by a front end that lost the lease meanwhile is
//! dropped unacknowledged: the hub gives it to the next holder.

use sighthub_exchange::ingest::{Collector, Slot};
use sighthub_exchange::lease::Lease;
use sighthub_exchange::store::Outcome;
use sighthub_exchange::{Grants, OnRefusal};
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::PullConfig;
use crate::error::{Error, Result};
use crate::health::Health;
use crate::path::Routed;
use crate::state::{self, PeerState};
use crate::{sleep_or_stop, Backoff, Settings, Shared};

/// What appending one page did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ingested {
    pub(crate) accepted: u64,
    pub(crate) duplicate: u64,
    /// Invalid here (not a message, unknown update target, …).
    pub(crate) errors: u64,
    /// Refused by the local exchange (e.g. another organisation's withdrawal): dropped from
    /// the page, the rest is appended.
    pub(crate) refused: Vec<(Uuid, String)>,
}

/// Appends one page to the local log through the exchange's publish pipeline with
/// [`OnRefusal::SkipRefused`]: messages the local exchange refuses are left out (and
/// reported), never the end of the page: a refused message must not wedge the pull. The
/// page's messages are prepared from the parsed JSON, never serialised again.
pub(crate) async fn ingest(sh: &Arc<Shared>, lines: Vec<serde_json::Value>) -> Result<Ingested> {
    if lines.is_empty() {
        return Ok(Ingested::default());
    }
    let s = Arc::clone(sh);
    let (items, invalid) = tokio::task::spawn_blocking(move || {
        let store = &s.store;
        let mut col = Collector::new(Arc::new(Grants::admin(store.org())), store.instance());
        for line in lines {
            col.add_value(line, s.local.max_line_bytes);
        }
        let invalid = col
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Invalid(_)))
            .count() as u64;
        (col.items, invalid)
    })
    .await
    .map_err(|e| Error::Answer {
        peer: "local".into(),
        reason: e.to_string(),
    })?;
    let mut out = Ingested {
        errors: invalid,
        ..Ingested::default()
    };
    let uuids: Vec<Uuid> = items.iter().map(|p| p.uuid).collect();
    let published = sh.store.publish(items, OnRefusal::SkipRefused).await?;
    for (o, uuid) in published.outcomes.into_iter().zip(uuids) {
        match o {
            Ok(Outcome::Accepted { .. } | Outcome::Updated { .. }) => out.accepted += 1,
            Ok(Outcome::Duplicate { .. }) => out.duplicate += 1,
            Ok(Outcome::UnknownTarget | Outcome::Gone { .. }) => out.errors += 1,
            Err(reason) => out.refused.push((uuid, reason)),
        }
    }
    Ok(out)
}

/// One page of the hub's consumer: (cursor, messages).
async fn fetch(
    http: &reqwest::Client,
    p: &PullConfig,
    limit: usize,
    settings: &Settings,
) -> Result<(String, Vec<serde_json::Value>)> {
    let mut url = crate::endpoint(&p.url, &["iep04", "consumers", &p.consumer, "messages"])?;
    url.set_query(Some(&format!("limit={limit}&wait={}", p.wait_seconds)));
    let req = http
        .get(url)
        .header("authorization", &p.key)
        .timeout(settings.timeout + std::time::Duration::from_secs(p.wait_seconds));
    let v = crate::call(req, &p.name, false, settings.max_answer_bytes).await?;
    page_of(v).ok_or_else(|| Error::Answer {
        peer: p.name.clone(),
        reason: "a page without cursor or messages".into(),
    })
}

/// A hub's page, `{"cursor": …, "messages": […]}`: (cursor, messages), or `None` when one is
/// missing (`pub` for the fuzz targets).
pub fn page_of(mut v: serde_json::Value) -> Option<(String, Vec<serde_json::Value>)> {
    let cursor = v
        .get("cursor")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    match (cursor, v.get_mut("messages").map(serde_json::Value::take)) {
        (Some(c), Some(serde_json::Value::Array(m))) => Some((c, m)),
        _ => None,
    }
}

async fn ack(
    http: &reqwest::Client,
    p: &PullConfig,
    cursor: &str,
    settings: &Settings,
) -> Result<()> {
    let url = crate::endpoint(&p.url, &["iep04", "consumers", &p.consumer, "ack"])?;
    let req = http
        .post(url)
        .header("authorization", &p.key)
        .header("content-type", "application/json")
        .timeout(settings.timeout)
        .body(serde_json::json!({ "cursor": cursor }).to_string());
    crate::call(req, &p.name, false, 64 * 1024)
        .await
        .map(|_| ())
}

/// Splits a page into what to ingest (path extended with `hub`) and the count of messages
/// that already crossed `me`.
pub fn prepare_page(
    messages: Vec<serde_json::Value>,
    me: Uuid,
    hub: Uuid,
) -> (Vec<serde_json::Value>, u64) {
    let mut own = 0;
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        match Routed::from_value(m) {
            Some(r) if r.crossed(&me) => own += 1,
            Some(mut r) => {
                r.push(hub);
                out.push(serde_json::Value::Object(r.envelope));
            }
            // Not an object: the local exchange reports it as invalid.
            None => out.push(serde_json::Value::Null),
        }
    }
    (out, own)
}

/// The task of one pulled hub; returns when `stop` turns true, having given its lease back.
pub(crate) async fn run(
    sh: Arc<Shared>,
    settings: Arc<Settings>,
    p: PullConfig,
    health: Health,
    stop: watch::Receiver<bool>,
) {
    let mut lease = sh.lease(format!("pull:{}", p.name), format!("relay/pull/{}", p.name));
    run_leased(sh, settings, p, health, stop, &mut lease).await;
    lease.release().await;
}

/// [`run`] under `lease`.
async fn run_leased(
    sh: Arc<Shared>,
    settings: Arc<Settings>,
    p: PullConfig,
    mut health: Health,
    mut stop: watch::Receiver<bool>,
    lease: &mut Lease,
) {
    let file = state::file(&sh.dir, "pull", &p.name);
    let mut st: PeerState = match state::load(&file) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(hub = %p.name, error = %e, "relay: pull not started");
            return;
        }
    };
    let Some(http) =
        crate::client_when_ready(&settings, p.trust(), &mut health, &mut st, &file, &mut stop)
            .await
    else {
        return;
    };
    let me = sh.store.instance();
    let mut backoff = Backoff::new(settings.retry_min, settings.retry_max);
    let mut hub = p.instance;
    let mut acked: Option<String> = None;
    // Page size: halved after an answer over max_answer_bytes, back after a good page.
    let mut limit = settings.batch;
    tracing::info!(hub = %p.name, consumer = %p.consumer, "relay: pulling");
    loop {
        if *stop.borrow() {
            return;
        }
        match lease.hold(&mut stop).await {
            None => return,
            Some(true) => {}
            // Taken (again): another front end may have acknowledged pages since.
            Some(false) => acked = None,
        }
        let step = async {
            let hub_instance = match hub {
                Some(h) => h,
                None => {
                    let h = crate::fetch_instance(&http, &p.url, &p.key, &p.name, settings.timeout)
                        .await?;
                    hub = Some(h);
                    h
                }
            };
            // Interrupting the long-poll loses nothing: the hub's cursor has not moved. The
            // lease is renewed through it.
            let fetching = fetch(&http, &p, limit, &settings);
            tokio::pin!(fetching);
            let page = loop {
                tokio::select! {
                    r = &mut fetching => break r?,
                    _ = stop.changed() => return Ok(None),
                    _ = tokio::time::sleep(lease.idle()) => {
                        if !lease.renew().await {
                            return Ok(Some(None));
                        }
                    }
                }
            };
            Ok::<_, Error>(Some(Some((hub_instance, page))))
        }
        .await;
        let (hub_instance, (cursor, messages)) = match step {
            Ok(Some(Some(x))) if lease.held() => {
                health.ok(&mut st, &file);
                x
            }
            // The lease was lost during the long poll: the page is left to the next holder.
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(e) => {
                health.failed(&e, "pull failed", &mut st, &file);
                if matches!(e, Error::TooLong { .. }) && limit > 1 {
                    limit = (limit / 2).max(1);
                    continue;
                }
                if !e.retryable() {
                    backoff.give_up_soon();
                }
                if !sleep_or_stop(backoff.next(), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let received = messages.len() as u64;
        // On the wire whatever happens next: a page whose acknowledgement fails is read again
        // (unless the hub did take the acknowledgement and only its answer was lost).
        st.attempted = st.attempted.saturating_add(received);
        let (lines, own) = prepare_page(messages, me, hub_instance);
        let done = async {
            let counts = ingest(&sh, lines).await?;
            if acked.as_deref() != Some(cursor.as_str()) {
                ack(&http, &p, &cursor, &settings).await?;
            }
            Ok::<_, Error>(counts)
        }
        .await;
        match done {
            Ok(got) => {
                acked = Some(cursor);
                limit = settings.batch;
                for (uuid, reason) in &got.refused {
                    tracing::warn!(hub = %p.name, %uuid, %reason, "relay: a pulled message was refused here; skipped, the pull goes on");
                }
                if let Some((uuid, reason)) = got.refused.last() {
                    st.refused = st.refused.saturating_add(got.refused.len() as u64);
                    st.last_refused_uuid = Some(uuid.to_string());
                    st.last_refused_reason = Some(reason.chars().take(300).collect());
                }
                if received > 0 {
                    st.sent = st.sent.saturating_add(received);
                    st.own = st.own.saturating_add(own);
                    st.accepted = st.accepted.saturating_add(got.accepted);
                    st.duplicate = st.duplicate.saturating_add(got.duplicate);
                    st.errors = st.errors.saturating_add(got.errors);
                    st.batches = st.batches.saturating_add(1);
                    if let Err(e) = state::store(&file, &st) {
                        tracing::warn!(hub = %p.name, error = %e, "relay: pull counters not persisted");
                    }
                }
                backoff.reset();
            }
            Err(e) => {
                if received > 0 {
                    if let Err(e) = state::store(&file, &st) {
                        tracing::warn!(hub = %p.name, error = %e, "relay: pull counters not persisted");
                    }
                }
                health.failed(&e, "pulled page not acknowledged", &mut st, &file);
                if !sleep_or_stop(backoff.next(), &mut stop).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use serde_json::json;

    #[test]
    fn page_preparation() {
        let (me, hub, a) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let page = vec![
            json!({"format":"intelmq","version":1,"type":"event","meta":{"uuid":"03c51929-eeab-4d47-9dc0-c667f94c7d2c"}}),
            json!({"format":"intelmq","version":1,"type":"event","meta":{"uuid":"13c51929-eeab-4d47-9dc0-c667f94c7d2c","sighthub:path":[me.to_string(), a.to_string()]}}),
            json!({"format":"intelmq","version":1,"type":"event","meta":{"uuid":"23c51929-eeab-4d47-9dc0-c667f94c7d2c","sighthub:path":[a.to_string()]}}),
        ];
        let (out, own) = prepare_page(page, me, hub);
        assert_eq!(own, 1);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["meta"]["sighthub:path"], json!([hub.to_string()]));
        assert_eq!(
            out[1]["meta"]["sighthub:path"],
            json!([a.to_string(), hub.to_string()])
        );
    }
}
