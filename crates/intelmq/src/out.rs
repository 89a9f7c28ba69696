//! Delivering the exchange log to IntelMQ: a feed is a persisted cursor into the local log
//! (a named consumer of the exchange, `intelmq-out/<name>`), advanced only after the
//! receiver confirmed what was sent, so a crash redelivers (at least once) and never skips.
//!
//! Events go out **bare** (no envelope): IntelMQ 3.5 rejects the envelope's keys. Targets:
//! - [`Target::Tcp`]: IntelMQ's TCP collector, one connection, a length-prefixed frame per
//!   event and its `Ok` before the next; a failure reconnects and resends from the first
//!   unconfirmed event.
//! - [`Target::Api`]: IntelMQ's API collector, one `POST` per batch with an ND-JSON body
//!   (its JSON parser with `splitlines: true` makes one event per line); 2xx confirms all.
//! - [`Target::Redis`]: `LPUSH` into an IntelMQ pipeline queue, each event with `__type`
//!   and only harmonization keys (anything else would stop the reading bot).

use serde_json::{Map, Value};
use sighthub_exchange::record::EntryKind;
use sighthub_exchange::{ExchangeStore, Feed, Grants};
use sighthub_iep04::{Message, Tlp, FORMAT_INTELMQ};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::Start;
use crate::error::{Error, Result};
use crate::frame::encode_length_prefixed;

/// The IntelMQ 3.5 event fields (`etc/harmonization.conf`, section `event`); `extra.*`
/// keys are allowed too.
pub const HARMONIZATION_EVENT_KEYS: &[&str] = &[
    "classification.identifier",
    "classification.taxonomy",
    "classification.type",
    "comment",
    "constituency",
    "destination.abuse_contact",
    "destination.account",
    "destination.allocated",
    "destination.as_name",
    "destination.asn",
    "destination.domain_suffix",
    "destination.fqdn",
    "destination.geolocation.cc",
    "destination.geolocation.city",
    "destination.geolocation.country",
    "destination.geolocation.latitude",
    "destination.geolocation.longitude",
    "destination.geolocation.region",
    "destination.geolocation.state",
    "destination.ip",
    "destination.local_hostname",
    "destination.local_ip",
    "destination.network",
    "destination.port",
    "destination.registry",
    "destination.reverse_dns",
    "destination.tor_node",
    "destination.url",
    "destination.urlpath",
    "event_description.target",
    "event_description.text",
    "event_description.url",
    "event_hash",
    "extra",
    "feed.accuracy",
    "feed.code",
    "feed.documentation",
    "feed.name",
    "feed.provider",
    "feed.url",
    "malware.hash.md5",
    "malware.hash.sha1",
    "malware.hash.sha256",
    "malware.name",
    "malware.version",
    "misp.attribute_uuid",
    "misp.event_uuid",
    "output",
    "product.full_name",
    "product.name",
    "product.vendor",
    "product.version",
    "product.vulnerabilities",
    "protocol.application",
    "protocol.transport",
    "raw",
    "rtir_id",
    "screenshot_url",
    "severity",
    "source.abuse_contact",
    "source.account",
    "source.allocated",
    "source.as_name",
    "source.asn",
    "source.domain_suffix",
    "source.fqdn",
    "source.geolocation.cc",
    "source.geolocation.city",
    "source.geolocation.country",
    "source.geolocation.cymru_cc",
    "source.geolocation.geoip_cc",
    "source.geolocation.latitude",
    "source.geolocation.longitude",
    "source.geolocation.region",
    "source.geolocation.state",
    "source.ip",
    "source.local_hostname",
    "source.local_ip",
    "source.network",
    "source.port",
    "source.registry",
    "source.reverse_dns",
    "source.tor_node",
    "source.url",
    "source.urlpath",
    "status",
    "time.observation",
    "time.source",
    "tlp",
];

/// Is `key` an IntelMQ event field?
pub fn is_harmonization_key(key: &str) -> bool {
    key.starts_with("extra.") || HARMONIZATION_EVENT_KEYS.binary_search(&key).is_ok()
}

/// An event as IntelMQ's pipeline holds it: only harmonization keys, `__type` last.
pub fn pipeline_event(mut event: Map<String, Value>) -> (Map<String, Value>, Vec<String>) {
    let dropped: Vec<String> = event
        .keys()
        .filter(|k| !is_harmonization_key(k))
        .cloned()
        .collect();
    for k in &dropped {
        event.shift_remove(k);
    }
    event.insert("__type".into(), Value::String("Event".into()));
    (event, dropped)
}

/// Where a feed goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// IntelMQ's TCP collector at `host:port`.
    Tcp(String),
    /// IntelMQ's API collector at this URL.
    Api(String),
    /// An IntelMQ Redis queue: (url, queue).
    Redis(String, String),
}

/// A feed's persisted position in the log.
#[derive(Clone)]
pub struct Cursor {
    store: Arc<ExchangeStore>,
    name: String,
}

impl Cursor {
    /// The cursor named `intelmq-out/<name>` (created at `start` when new).
    pub async fn open(store: Arc<ExchangeStore>, name: &str, start: Start) -> Result<Cursor> {
        let c = Cursor {
            store,
            name: format!("intelmq-out/{name}"),
        };
        if c.store.consumer(c.store.org(), &c.name)?.is_none() && start == Start::End {
            let end = c.store.durable();
            c.advance(end).await?;
        }
        Ok(c)
    }

    /// Last delivered sequence number (0: nothing yet).
    pub fn position(&self) -> Result<u64> {
        Ok(self
            .store
            .consumer(self.store.org(), &self.name)?
            .map_or(0, |c| c.acked))
    }

    /// Durably moves the cursor to `seq` (never back).
    pub async fn advance(&self, seq: u64) -> Result<()> {
        let (store, name) = (Arc::clone(&self.store), self.name.clone());
        let (_, ticket) = tokio::task::spawn_blocking(move || {
            store.consumer_ack(
                store.org(),
                &name,
                seq,
                sighthub_exchange::store::now_secs(),
            )
        })
        .await??;
        self.store.group_commit().wait(ticket).await?;
        Ok(())
    }
}

/// One page of the feed: events with their sequence numbers, and where the scan ended.
#[derive(Debug, Default)]
pub struct Page {
    /// (seq, bare event), in log order.
    pub events: Vec<(u64, Map<String, Value>)>,
    /// Last sequence number examined: the cursor after this page is delivered.
    pub last: u64,
    /// Reached the durable end of the log.
    pub at_end: bool,
}

/// Reads up to `batch` deliverable events after `after` (blocking).
pub fn read_page(
    store: &ExchangeStore,
    grants: &Grants,
    default_tlp: Tlp,
    after: u64,
    batch: usize,
) -> Result<Page> {
    let mut events = Vec::new();
    let end = store.scan(after, batch.saturating_mul(4).max(64), |seq, e| {
        if e.kind != EntryKind::Message
            || !e.has_payload()
            || !e
                .format_type
                .strip_prefix(FORMAT_INTELMQ)
                .is_some_and(|r| r.starts_with('/'))
            || !grants.may_read(e.format_type, &e.tags, e.tlp, default_tlp)
        {
            return ControlFlow::Continue(());
        }
        if let Ok(ev) = Message::from_slice(e.json).and_then(|m| m.to_bare_event(false)) {
            events.push((seq, ev));
        }
        if events.len() >= batch {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(Page {
        events,
        last: end.last,
        at_end: end.at_end,
    })
}

/// Grants that read the configured feeds up to `tlp_max`.
pub fn reader_grants(org: uuid::Uuid, read: Vec<Feed>, tlp_max: Tlp) -> Grants {
    Grants {
        org,
        publish: Vec::new(),
        read,
        tlp_max,
        relay: false,
        admin: false,
        bare_tags: Vec::new(),
    }
}

/// A running delivery: cursor, selection and target.
pub struct Delivery {
    /// Name, for logs.
    pub name: String,
    /// The exchange.
    pub store: Arc<ExchangeStore>,
    /// What may be delivered.
    pub grants: Grants,
    /// TLP of messages without one.
    pub default_tlp: Tlp,
    /// Where a new cursor starts.
    pub start: Start,
    /// Events per batch.
    pub batch: usize,
    /// Answer timeout.
    pub timeout: Duration,
    /// Where to.
    pub target: Target,
}

/// A sender's state (the open connection).
enum Conn {
    None,
    Tcp(TcpStream),
    Http(reqwest::Client),
    Redis(redis::aio::MultiplexedConnection),
}

impl Delivery {
    /// Delivers until `shutdown` flips to true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let cursor = loop {
            match Cursor::open(Arc::clone(&self.store), &self.name, self.start).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(out = %self.name, error = %e, "intelmq out: cursor unavailable; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        let mut durable = self.store.subscribe();
        let mut conn = Conn::None;
        let mut backoff = Duration::from_millis(200);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let step = self.step(&cursor, &mut conn).await;
            match step {
                Ok(true) => {
                    backoff = Duration::from_millis(200);
                    tokio::select! {
                        r = durable.changed() => if r.is_err() { return },
                        _ = shutdown.changed() => return,
                    }
                }
                Ok(false) => backoff = Duration::from_millis(200),
                Err(e) => {
                    conn = Conn::None;
                    tracing::warn!(out = %self.name, error = %e, "intelmq out: delivery failed; retrying in {:?}", backoff);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {},
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Delivers one page; `Ok(true)` when the log end was reached.
    async fn step(&self, cursor: &Cursor, conn: &mut Conn) -> Result<bool> {
        let pos = cursor.position()?;
        let (store, grants, tlp, batch) = (
            Arc::clone(&self.store),
            self.grants.clone(),
            self.default_tlp,
            self.batch,
        );
        let page = tokio::task::spawn_blocking(move || read_page(&store, &grants, tlp, pos, batch))
            .await??;
        if !page.events.is_empty() {
            let sent = self.send(conn, &page.events).await;
            if let Err((confirmed, e)) = sent {
                // Keep what was confirmed before the failure.
                if let Some(seq) = confirmed {
                    cursor.advance(seq).await?;
                }
                return Err(e);
            }
        }
        if page.last > pos {
            cursor.advance(page.last).await?;
        }
        Ok(page.at_end)
    }

    /// Sends events; on failure, the last confirmed sequence number and the error.
    async fn send(
        &self,
        conn: &mut Conn,
        events: &[(u64, Map<String, Value>)],
    ) -> Result<(), (Option<u64>, Error)> {
        match &self.target {
            Target::Tcp(addr) => {
                if !matches!(conn, Conn::Tcp(_)) {
                    let s = tokio::time::timeout(self.timeout, TcpStream::connect(addr.as_str()))
                        .await
                        .map_err(|_| {
                            (
                                None,
                                Error::Protocol(format!("connecting {addr} timed out")),
                            )
                        })?
                        .map_err(|e| (None, e.into()))?;
                    s.set_nodelay(true).map_err(|e| (None, e.into()))?;
                    *conn = Conn::Tcp(s);
                }
                let Conn::Tcp(stream) = conn else {
                    return Err((None, Error::Protocol("no connection".into())));
                };
                let mut confirmed = None;
                let mut frame = Vec::new();
                for (seq, ev) in events {
                    frame.clear();
                    let json = serde_json::to_vec(ev)
                        .map_err(|e| (confirmed, Error::Protocol(e.to_string())))?;
                    encode_length_prefixed(&json, &mut frame);
                    let r = tokio::time::timeout(self.timeout, async {
                        stream.write_all(&frame).await?;
                        let mut ok = [0u8; 2];
                        stream.read_exact(&mut ok).await?;
                        Ok::<_, std::io::Error>(ok)
                    })
                    .await;
                    match r {
                        Ok(Ok(ok)) if &ok == b"Ok" => confirmed = Some(*seq),
                        Ok(Ok(other)) => {
                            return Err((
                                confirmed,
                                Error::Protocol(format!(
                                    "collector answered {:?}",
                                    String::from_utf8_lossy(&other)
                                )),
                            ))
                        }
                        Ok(Err(e)) => return Err((confirmed, e.into())),
                        Err(_) => {
                            return Err((
                                confirmed,
                                Error::Protocol("no answer from the collector".into()),
                            ))
                        }
                    }
                }
                Ok(())
            }
            Target::Api(url) => {
                if !matches!(conn, Conn::Http(_)) {
                    let c = reqwest::Client::builder()
                        .timeout(self.timeout)
                        .build()
                        .map_err(|e| (None, e.into()))?;
                    *conn = Conn::Http(c);
                }
                let Conn::Http(client) = conn else {
                    return Err((None, Error::Protocol("no client".into())));
                };
                let mut body = Vec::new();
                for (_, ev) in events {
                    serde_json::to_writer(&mut body, ev)
                        .map_err(|e| (None, Error::Protocol(e.to_string())))?;
                    body.push(b'\n');
                }
                let resp = client
                    .post(url)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| (None, e.into()))?;
                if !resp.status().is_success() {
                    return Err((
                        None,
                        Error::Protocol(format!("API collector answered {}", resp.status())),
                    ));
                }
                Ok(())
            }
            Target::Redis(url, queue) => {
                if !matches!(conn, Conn::Redis(_)) {
                    let client = redis::Client::open(url.as_str()).map_err(|e| (None, e.into()))?;
                    let c = client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| (None, e.into()))?;
                    *conn = Conn::Redis(c);
                }
                let Conn::Redis(c) = conn else {
                    return Err((None, Error::Protocol("no connection".into())));
                };
                let mut items = Vec::with_capacity(events.len());
                for (seq, ev) in events {
                    let (ev, dropped) = pipeline_event(ev.clone());
                    if !dropped.is_empty() {
                        tracing::debug!(out = %self.name, seq, ?dropped, "intelmq redis out: non-harmonization keys dropped");
                    }
                    items.push(
                        serde_json::to_string(&ev)
                            .map_err(|e| (None, Error::Protocol(e.to_string())))?,
                    );
                }
                // One LPUSH of the whole batch: atomic, in log order (IntelMQ pops from the right).
                let _: i64 = redis::cmd("LPUSH")
                    .arg(queue)
                    .arg(&items)
                    .query_async(c)
                    .await
                    .map_err(|e| (None, e.into()))?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmonization_list_is_sorted_and_filters() {
        assert!(HARMONIZATION_EVENT_KEYS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(HARMONIZATION_EVENT_KEYS.len(), 89);
        let ev: Map<String, Value> = serde_json::from_str(
            r#"{"source.ip":"198.51.100.1","extra.x":{"a":1},"meta":1,"__type":"Report","raw":"eA=="}"#,
        )
        .expect("json");
        let (out, dropped) = pipeline_event(ev);
        assert_eq!(dropped, vec!["meta".to_owned(), "__type".to_owned()]);
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["source.ip", "extra.x", "raw", "__type"]);
        assert_eq!(out["__type"], "Event");
    }
}
