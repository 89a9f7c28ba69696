//! The subscriber: MISP's publisher → [`crate::frame::decode`] → [`crate::mapping`] → the
//! sightings core's write path ([`SightingStore::write`], then its group commit).
//!
//! One task ([`Ingest::run`]) connects a SUB socket to `[zmq] endpoint`, subscribes to the two
//! topics it records (`misp_json `, `misp_json_attribute `: ZeroMQ filters by prefix, so the
//! other `misp_json_*` topics are not even sent), and takes one frame at a time: decode, map,
//! write the frame's sightings in one batch and wait until they are durable. A frame that does
//! not decode, is too large or is not one part is skipped and counted ([`Counters`]), and
//! logged at most once a minute with how many were not logged since; an attribute the store
//! refuses (value too long, timestamp out of range) is counted, the rest of the frame is
//! recorded; a failed write is logged and counted, and the next frame is taken. Nothing stops
//! the worker but its stop signal.
//!
//! Reconnecting: the `zeromq` crate re-establishes the connection of a SUB socket after the
//! publisher restarts (backoff from 100 ms to 30 s) and subscribes again; the first connection
//! is retried here until it succeeds (1 s doubling to 30 s). ZeroMQ's PUB/SUB drops what is
//! published while no subscriber is connected: frames MISP sent while sighthub or the
//! connection was down are not recorded (MISP does not resend them).

use crate::config::ZmqConfig;
use crate::frame::{decode, Decoded, FrameError};
use crate::mapping::Mapping;
use sighthub_store::{SightingStore, WriteOp};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use zeromq::{Socket, SocketRecv};

/// The first connection's retry delays.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// At most one log line per kind of problem in this interval.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What the ingest did since it started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames of the two topics decoded.
    pub frames: AtomicU64,
    /// Sightings recorded (durable).
    pub sightings: AtomicU64,
    /// Frames of other topics, deletions.
    pub ignored: AtomicU64,
    /// Frames skipped: not `<topic> <json>`, not JSON, not MISP's shape, too large, several
    /// parts.
    pub malformed: AtomicU64,
    /// Attribute entries without `type` or `value`, and sightings the store refused.
    pub refused: AtomicU64,
    /// Frames whose write failed (the store refused the batch or could not make it durable).
    pub failed: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The counters as `(name, value)` pairs, for logs.
    pub fn snapshot(&self) -> [(&'static str, u64); 6] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("frames", g(&self.frames)),
            ("sightings", g(&self.sightings)),
            ("ignored", g(&self.ignored)),
            ("malformed", g(&self.malformed)),
            ("refused", g(&self.refused)),
            ("failed", g(&self.failed)),
        ]
    }
}

/// What became of one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its sightings are durable.
    Recorded {
        /// Sightings written.
        sightings: usize,
        /// Attribute entries and sightings not recorded.
        refused: usize,
    },
    /// Another topic or a deletion.
    Ignored,
    /// Skipped: the frame is not what MISP publishes.
    Malformed(FrameError),
    /// The store failed; the frame's sightings are not recorded.
    Failed(String),
}

/// One log line per `LOG_EVERY`, saying how many were held back.
#[derive(Default)]
struct RateLog {
    last: Option<Instant>,
    held: u64,
}

impl RateLog {
    /// `Some(held back since the last line)` when a line may be written now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// MISP's ZeroMQ ingest: the mapping, the store it writes to, its counters.
pub struct Ingest {
    endpoint: String,
    max_frame_bytes: usize,
    mapping: Mapping,
    store: Arc<dyn SightingStore>,
    counters: Counters,
    malformed_log: Mutex<RateLog>,
    failed_log: Mutex<RateLog>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn lock(m: &Mutex<RateLog>) -> std::sync::MutexGuard<'_, RateLog> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ingest {
    /// The ingest of a `[zmq]` section over `store`. The hashed namespace is made SHA256 with
    /// digest lookups here (refused when it already holds values of another format).
    pub fn new(cfg: &ZmqConfig, store: Arc<dyn SightingStore>) -> Result<Self, crate::Error> {
        cfg.validate().map_err(crate::Error::Config)?;
        let mapping = Mapping::new(cfg).map_err(crate::Error::Config)?;
        if let Some(h) = mapping.hashed() {
            let ticket = store.set_format(h, sighthub_store::ValueFormat::Sha256)?;
            store.durability().wait_blocking(ticket)?;
            store.set_digest_lookups(h, true);
        }
        Ok(Self {
            endpoint: cfg.endpoint.clone(),
            max_frame_bytes: cfg.max_frame_bytes,
            mapping,
            store,
            counters: Counters::default(),
            malformed_log: Mutex::default(),
            failed_log: Mutex::default(),
        })
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Takes one frame (its parts, as received): decode, map, write, wait until durable.
    /// Blocking (the store's write and fsync wait). Counts and logs what it skips.
    pub fn apply(&self, parts: &[&[u8]], now: i64) -> Outcome {
        let outcome = self.apply_uncounted(parts, now);
        let c = &self.counters;
        match &outcome {
            Outcome::Recorded { sightings, refused } => {
                Counters::add(&c.frames, 1);
                Counters::add(&c.sightings, *sightings);
                Counters::add(&c.refused, *refused);
            }
            Outcome::Ignored => Counters::add(&c.ignored, 1),
            Outcome::Malformed(error) => {
                Counters::add(&c.malformed, 1);
                if let Some(held) = lock(&self.malformed_log).allow() {
                    tracing::warn!(%error, not_logged_since = held,
                        skipped_in_all = c.malformed.load(Ordering::Relaxed),
                        "[zmq] frame skipped: MISP's publisher sent something that is not a MISP frame");
                }
            }
            Outcome::Failed(error) => {
                Counters::add(&c.failed, 1);
                if let Some(held) = lock(&self.failed_log).allow() {
                    tracing::error!(%error, not_logged_since = held,
                        "[zmq] the sightings of a MISP frame could not be recorded; the next frames are taken");
                }
            }
        }
        outcome
    }

    fn apply_uncounted(&self, parts: &[&[u8]], now: i64) -> Outcome {
        let [frame] = parts else {
            return Outcome::Malformed(FrameError::NoTopic);
        };
        let (attributes, mut refused) = match decode(frame, self.max_frame_bytes) {
            Ok(Decoded::Attributes {
                attributes,
                skipped,
                ..
            }) => (attributes, skipped),
            Ok(Decoded::Ignored) => return Outcome::Ignored,
            Err(e) => return Outcome::Malformed(e),
        };
        let limits = *self.store.limits();
        let sightings: Vec<_> = attributes
            .iter()
            .flat_map(|a| self.mapping.sightings(a, now, &limits))
            .collect();
        let ops: Vec<WriteOp<'_>> = sightings
            .iter()
            .map(|s| WriteOp {
                namespace: &s.namespace,
                value: &s.value,
                timestamp: s.timestamp,
                ttl: None,
                tags: (!s.tags.is_empty()).then_some(s.tags.as_str()),
            })
            .collect();
        if ops.is_empty() {
            return Outcome::Recorded {
                sightings: 0,
                refused,
            };
        }
        let (outcomes, ticket) = match self.store.write(&ops, now) {
            Ok(w) => w,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if let Err(e) = self.store.durability().wait_blocking(ticket) {
            return Outcome::Failed(e.to_string());
        }
        let written = outcomes.iter().filter(|o| o.is_ok()).count();
        refused += outcomes.len() - written;
        Outcome::Recorded {
            sightings: written,
            refused,
        }
    }

    /// Subscribes and records frames until `stop` turns true (or its sender is gone).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut delay = RETRY_MIN;
        'connect: while !*stop.borrow() {
            let mut socket = zeromq::SubSocket::new();
            let connected = tokio::select! {
                r = socket.connect(&self.endpoint) => r,
                () = stopped(&mut stop) => break 'connect,
            };
            let subscribed = match connected {
                Ok(()) => subscribe(&mut socket).await,
                Err(e) => Err(e),
            };
            if let Err(error) = subscribed {
                tracing::warn!(endpoint = %self.endpoint, %error, retry_in = ?delay,
                    "[zmq] cannot subscribe to MISP's publisher (is MISP's ZeroMQ plugin started, Plugin.ZeroMQ_enable?)");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stopped(&mut stop) => break 'connect,
                }
                delay = (delay * 2).min(RETRY_MAX);
                continue;
            }
            delay = RETRY_MIN;
            tracing::info!(endpoint = %self.endpoint, "[zmq] subscribed to MISP's publisher (misp_json, misp_json_attribute)");
            loop {
                let received = tokio::select! {
                    m = socket.recv() => m,
                    () = stopped(&mut stop) => break 'connect,
                };
                match received {
                    Ok(message) => {
                        let this = Arc::clone(&self);
                        let parts = message.into_vec();
                        let job = tokio::task::spawn_blocking(move || {
                            let parts: Vec<&[u8]> = parts.iter().map(|b| b.as_ref()).collect();
                            this.apply(&parts, unix_now())
                        });
                        if let Err(e) = job.await {
                            tracing::error!(error = %e, "[zmq] recording a frame panicked; the next frames are taken");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(endpoint = %self.endpoint, %error,
                            "[zmq] the subscription failed; connecting again");
                        continue 'connect;
                    }
                }
            }
        }
        let counters = self.counters.snapshot();
        tracing::info!(?counters, "[zmq] MISP ingest stopped");
    }
}

async fn subscribe(socket: &mut zeromq::SubSocket) -> zeromq::ZmqResult<()> {
    for topic in [crate::frame::TOPIC_EVENT, crate::frame::TOPIC_ATTRIBUTE] {
        socket.subscribe(&format!("{topic} ")).await?;
    }
    Ok(())
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use sighthub_store::{MemEngine, Namespace, ReadOutcome, Sightings, StoreOptions};

    fn ingest() -> (Ingest, Arc<dyn SightingStore>) {
        let store: Arc<dyn SightingStore> =
            Arc::new(Sightings::new(MemEngine::default(), StoreOptions::default()).expect("store"));
        let cfg = ZmqConfig {
            enabled: true,
            hashed_namespace: "misp/hashed".into(),
            ..ZmqConfig::default()
        };
        (
            Ingest::new(&cfg, Arc::clone(&store)).expect("ingest"),
            store,
        )
    }

    fn count(store: &Arc<dyn SightingStore>, ns: &str, value: &str) -> u64 {
        let ns = Namespace::parse(ns).expect("ns");
        match store.read(&ns, value, 1_700_000_000).expect("read") {
            ReadOutcome::Found(v) => v.record.count,
            _ => 0,
        }
    }

    #[test]
    fn a_hashed_namespace_holding_raw_values_is_refused_with_what_to_do() {
        let store: Arc<dyn SightingStore> =
            Arc::new(Sightings::new(MemEngine::default(), StoreOptions::default()).expect("store"));
        let ns = Namespace::parse("misp/hashed").expect("ns");
        let (_, _) = store
            .write(&[WriteOp::new(&ns, "raw", 1_700_000_000)], 1_700_000_000)
            .expect("write");
        let cfg = ZmqConfig {
            enabled: true,
            hashed_namespace: "misp/hashed".into(),
            ..ZmqConfig::default()
        };
        let e = Ingest::new(&cfg, store).err().expect("refused").to_string();
        assert!(
            e.contains("already holds values") && e.contains("name a new namespace"),
            "{e}"
        );
    }

    #[test]
    fn frames_become_durable_sightings_and_bad_ones_are_counted() {
        let (ingest, store) = ingest();
        let event = br#"misp_json {"Event": {"Tag": [{"name": "tlp:green"}], "Attribute": [
            {"type": "ip-dst", "value": "198.51.100.7", "to_ids": true, "timestamp": "1700000000"},
            {"type": "comment", "value": "not a sighting"},
            {"type": "domain", "value": ""}]}}"#;
        assert_eq!(
            ingest.apply(&[event], 1_700_000_500),
            Outcome::Recorded {
                sightings: 2,
                refused: 1
            }
        );
        assert_eq!(count(&store, "misp/ip", "198.51.100.7"), 1);
        assert_eq!(count(&store, "misp/hashed", "198.51.100.7"), 1);
        // What MISP sends: the digest, found as it is (digest lookups are on).
        let digest = "e183220b699c10a83ca7be3433d228ed0860a5ecf9480f83e9655f16bad58908";
        assert_eq!(count(&store, "misp/hashed", digest), 1);
        assert!(matches!(
            ingest.apply(&[b"misp_json {oops"], 0),
            Outcome::Malformed(_)
        ));
        assert!(matches!(
            ingest.apply(&[b"a", b"b"], 0),
            Outcome::Malformed(_)
        ));
        assert_eq!(ingest.apply(&[b"misp_json_self {}"], 0), Outcome::Ignored);
        let too_long = format!(
            r#"misp_json_attribute {{"Attribute": {{"type": "url", "value": "{}"}}}}"#,
            "u".repeat(sighthub_store::MAX_VALUE_LEN + 1)
        );
        assert_eq!(
            ingest.apply(&[too_long.as_bytes()], 0),
            Outcome::Recorded {
                sightings: 0,
                refused: 2
            }
        );
        let snap = ingest.counters().snapshot();
        assert_eq!(
            snap,
            [
                ("frames", 2),
                ("sightings", 2),
                ("ignored", 1),
                ("malformed", 2),
                ("refused", 3),
                ("failed", 0)
            ]
        );
    }
}
