//! Delivering the exchange log to IntelMQ: a feed is a persisted cursor into the local log
//! (a named consumer of the exchange, `intelmq-out/<name>`), advanced only after the
//! receiver confirmed what was sent, so a crash redelivers (at least once) and never skips.
//! Reading, filtering by the feed's grants and waiting are the exchange's [`Follower`]'s;
//! this module renders, sends and confirms.
//!
//! Events go out **bare** (no envelope): IntelMQ 3.5 rejects the envelope's keys. Targets:
//! - [`Target::Tcp`]: IntelMQ's TCP collector, one connection, a length-prefixed frame per
//!   event and its `Ok` before the next; a failure reconnects and resends from the first
//!   unconfirmed event.
//! - [`Target::Api`]: IntelMQ's API collector, one `POST` per batch with an ND-JSON body
//!   (its JSON parser with `splitlines: true` makes one event per line); 2xx confirms all.
//! - [`Target::Redis`]: `LPUSH` into an IntelMQ pipeline queue, each event with `__type`
//!   and only harmonization keys (anything else would stop the reading bot).
//!
//! **One front end at a time.** On an exchange several front ends share, an output delivers
//! where its lease (named as its consumer, `intelmq-out/<name>`,
//! [`sighthub_exchange::lease`]) is held: renewed before each page, checked again right
//! before the page is sent; the others stand by (`held_elsewhere` in its status). A takeover
//! re-delivers at most the one page the previous holder sent without moving the cursor.

use serde_json::{Map, Value};
use sighthub_exchange::lease::Lease;
use sighthub_exchange::record::EntryKind;
use sighthub_exchange::{Cut, ExchangeStore, Follower, Grants, StartAt};
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

/// A feed's persisted position in the log: the exchange's follower over the named consumer
/// `intelmq-out/<name>` ([`Delivery::cursor`]).
pub type Cursor = Follower;

/// One page of the feed: events with their sequence numbers, and where the scan ended.
#[derive(Debug, Default)]
pub struct Page {
    /// (seq, bare event), in log order.
    pub events: Vec<(u64, Map<String, Value>)>,
    /// The uuids of `events`, in the same order (for logs).
    pub uuids: Vec<uuid::Uuid>,
    /// Records of the feed that have no bare IntelMQ form (an envelope that does not
    /// decode): skipped, (seq, uuid).
    pub unrenderable: Vec<(u64, uuid::Uuid)>,
    /// Last sequence number examined: the cursor after this page is delivered.
    pub last: u64,
    /// Reached the durable end of the log.
    pub at_end: bool,
}

/// Reads up to `batch` deliverable events after `after` (blocking): what the cursor's grants
/// may read, in the IntelMQ format, with a payload.
pub fn read_page(cursor: &Cursor, after: u64, batch: usize) -> Result<Page> {
    let mut events = Vec::new();
    let mut uuids = Vec::new();
    let mut unrenderable = Vec::new();
    let end = cursor.page(after, batch.saturating_mul(4).max(64), |seq, e| {
        if e.kind != EntryKind::Message
            || !e.has_payload()
            || !e
                .format_type
                .strip_prefix(FORMAT_INTELMQ)
                .is_some_and(|r| r.starts_with('/'))
        {
            return ControlFlow::Continue(());
        }
        match Message::from_slice(e.json).and_then(|m| m.to_bare_event(false)) {
            Ok(ev) => {
                events.push((seq, ev));
                uuids.push(e.uuid);
            }
            Err(_) => unrenderable.push((seq, e.uuid)),
        }
        if events.len() >= batch {
            ControlFlow::Break(Cut::After)
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(Page {
        events,
        uuids,
        unrenderable,
        last: end.last,
        at_end: end.at_end,
    })
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
    /// Its counters (and its lease's state).
    pub stats: Arc<crate::stats::TransportStats>,
    /// This front end's id, the holder of the output's lease.
    pub holder: String,
}

/// The page size of a delivery, smaller while a refused event is searched for, and the count
/// of what was skipped (in the log lines).
struct Pace {
    full: usize,
    batch: usize,
    /// The end of the refused page being searched.
    until: Option<u64>,
    skipped: u64,
}

impl Pace {
    fn new(full: usize) -> Self {
        Pace {
            full,
            batch: full,
            until: None,
            skipped: 0,
        }
    }

    /// A page ending at `last` was refused: halve, until the cursor is past it.
    fn isolate(&mut self, last: u64) {
        self.until = Some(self.until.map_or(last, |u| u.max(last)));
        self.batch = (self.batch / 2).max(1);
    }

    /// The cursor moved to `pos`: past the refused page, back to full pages.
    fn passed(&mut self, pos: u64) {
        if self.until.is_none_or(|u| pos >= u) {
            self.until = None;
            self.batch = self.full;
        }
    }
}

/// A sender's state (the open connection).
enum Conn {
    None,
    Tcp(TcpStream),
    Http(reqwest::Client),
    Redis(redis::aio::MultiplexedConnection),
}

impl Delivery {
    /// The delivery's cursor, `intelmq-out/<name>` of the exchange's organisation, reading
    /// what the delivery's grants may read (created at `start` when new).
    pub async fn cursor(&self) -> Result<Cursor> {
        let start = match self.start {
            Start::Beginning => StartAt::Beginning,
            Start::End => StartAt::End,
        };
        Ok(Follower::open(
            Arc::clone(&self.store),
            self.store.org(),
            self.consumer_name(),
            self.grants.clone(),
            self.default_tlp,
            start,
        )
        .await?)
    }

    /// The named consumer of its cursor, and the name of its lease: `intelmq-out/<name>`.
    pub fn consumer_name(&self) -> String {
        format!("intelmq-out/{}", self.name)
    }

    /// Delivers until `shutdown` flips to true, then gives the output's lease back.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut lease = Lease::new(
            Arc::clone(&self.store) as Arc<dyn sighthub_exchange::lease::LeaseEngine>,
            self.consumer_name(),
            self.holder.clone(),
        )
        .with_watch(self.stats.lease.clone());
        self.run_leased(shutdown, &mut lease).await;
        lease.release().await;
    }

    /// [`Delivery::run`] under `lease`.
    async fn run_leased(&self, mut shutdown: watch::Receiver<bool>, lease: &mut Lease) {
        let mut cursor = loop {
            match self.cursor().await {
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
        let mut conn = Conn::None;
        let mut backoff = Duration::from_millis(200);
        let mut pace = Pace::new(self.batch);
        loop {
            if *shutdown.borrow() {
                return;
            }
            // The cursor is read from the exchange at each step: a front end that takes the
            // lease over goes on where the previous holder left it.
            if lease.hold(&mut shutdown).await.is_none() {
                return;
            }
            let step = self.step(&cursor, &mut conn, &mut pace, lease).await;
            match step {
                Ok(true) => {
                    backoff = Duration::from_millis(200);
                    // At the end of the log: until something new is durable (renewing the
                    // lease meanwhile).
                    let pos = cursor.position().unwrap_or(0);
                    tokio::select! {
                        more = cursor.wait_past(pos) => if !more { return },
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(lease.idle()) => {},
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

    /// Delivers one page; `Ok(true)` when the log end was reached. Events the collector
    /// refuses for good are isolated (the page halves down to one event), then skipped,
    /// counted and logged once with their seq and uuid; records without a bare form too.
    async fn step(
        &self,
        cursor: &Cursor,
        conn: &mut Conn,
        pace: &mut Pace,
        lease: &Lease,
    ) -> Result<bool> {
        let pos = cursor.position()?;
        let (reader, batch) = (cursor.clone(), pace.batch);
        let page = tokio::task::spawn_blocking(move || read_page(&reader, pos, batch)).await??;
        use crate::stats::TransportStats as S;
        for (seq, uuid) in &page.unrenderable {
            S::add(&self.stats.skipped, 1);
            pace.skipped = pace.skipped.saturating_add(1);
            tracing::warn!(out = %self.name, seq, %uuid, skipped_total = pace.skipped, "intelmq out: a record without a bare IntelMQ form is skipped");
        }
        if !page.events.is_empty() {
            if !lease.held() {
                // Not renewed in time (a slow read): ask again before anything is sent.
                return Ok(false);
            }
            let sent = self.send(conn, &page.events).await;
            match sent {
                Err((_, Error::Refused(reason))) if page.events.len() > 1 => {
                    pace.isolate(page.last);
                    tracing::info!(out = %self.name, %reason, batch = pace.batch, "intelmq out: the collector refused a batch; retrying in smaller batches");
                    return Ok(false);
                }
                Err((_, Error::Refused(reason))) => {
                    let seq = page.events.first().map_or(page.last, |(s, _)| *s);
                    let uuid = page.uuids.first().copied().unwrap_or_default();
                    S::add(&self.stats.skipped, 1);
                    pace.skipped = pace.skipped.saturating_add(1);
                    tracing::warn!(out = %self.name, seq, %uuid, %reason, skipped_total = pace.skipped, "intelmq out: the collector refused this event for good; skipped");
                }
                Err((confirmed, e)) => {
                    S::add(&self.stats.failures, 1);
                    // Keep what was confirmed before the failure.
                    if let Some(seq) = confirmed {
                        cursor.advance(seq).await?;
                    }
                    return Err(e);
                }
                Ok(()) => S::add(&self.stats.delivered, page.events.len() as u64),
            }
        }
        if page.last > pos {
            cursor.advance(page.last).await?;
        }
        pace.passed(page.last);
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
                let status = resp.status();
                if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) {
                    return Err((
                        None,
                        Error::Refused(format!("API collector answered {status}")),
                    ));
                }
                if !status.is_success() {
                    return Err((
                        None,
                        Error::Protocol(format!("API collector answered {status}")),
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

    /// A one-connection-at-a-time HTTP collector: 400 for a body holding `refuse-me`, else
    /// 200; the accepted bodies are kept.
    async fn collector(accepted: Arc<std::sync::Mutex<Vec<String>>>) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let accepted = Arc::clone(&accepted);
                tokio::spawn(async move {
                    loop {
                        let mut head = Vec::new();
                        let mut b = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if s.read_exact(&mut b).await.is_err() {
                                return;
                            }
                            head.push(b[0]);
                        }
                        let text = String::from_utf8_lossy(&head).to_lowercase();
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0u8; len];
                        if s.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let body = String::from_utf8_lossy(&body).into_owned();
                        let status = if body.contains("refuse-me") {
                            "400 Bad Request"
                        } else {
                            accepted.lock().expect("lock").push(body);
                            "200 OK"
                        };
                        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}/intelmq/push")
    }

    #[tokio::test]
    async fn an_event_the_collector_refuses_is_skipped_and_the_rest_delivered() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(
            ExchangeStore::open(
                dir.path(),
                sighthub_exchange::StoreOptions::default(),
                None,
                None,
            )
            .expect("open"),
        );
        let sink = crate::sink::Sink::new(Arc::clone(&store), None, &[]);
        let frames: Vec<Vec<u8>> = ["a.example", "refuse-me.example", "b.example", "c.example"]
            .iter()
            .map(|f| format!(r#"{{"source.fqdn":"{f}","feed.name":"x"}}"#).into_bytes())
            .collect();
        sink.accept(frames).await.expect("stored");
        let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let url = collector(Arc::clone(&accepted)).await;
        let d = Delivery {
            name: "t".into(),
            store: Arc::clone(&store),
            grants: Grants::reader(store.org(), vec![sighthub_exchange::Feed::All], Tlp::Red),
            default_tlp: Tlp::Amber,
            start: Start::Beginning,
            batch: 10,
            timeout: Duration::from_secs(5),
            target: Target::Api(url),
            stats: Arc::new(crate::stats::TransportStats::new("out", "t")),
            holder: "front-end".into(),
        };
        let stats = Arc::clone(&d.stats);
        let cursor = d.cursor().await.expect("cursor");
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(d.run(rx));
        for _ in 0..200 {
            if cursor.position().expect("pos") == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            cursor.position().expect("pos"),
            4,
            "went past the refused event"
        );
        let _ = stop.send(true);
        let _ = task.await;
        let all = accepted.lock().expect("lock").join("");
        for f in ["a.example", "b.example", "c.example"] {
            assert_eq!(all.matches(f).count(), 1, "{f} delivered once: {all}");
        }
        assert!(!all.contains("refuse-me"));
        let st = stats.snapshot();
        assert_eq!((st.delivered, st.skipped), (3, 1), "{st:?}");
    }

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
