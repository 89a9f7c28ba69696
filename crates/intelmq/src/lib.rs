//! # sighthub-intelmq
//!
//! IntelMQ transports of sighthub, so stock IntelMQ 3.5 bots exchange events with the hub
//! without any change to IntelMQ:
//!
//! - **in, TCP** ([`tcp_in`]): a listener for IntelMQ's TCP output bot (4-byte length + JSON,
//!   or separator-ended JSON); `Ok` only once the event is durably in the exchange log.
//! - **in, Redis** ([`redis_in`]): reads an IntelMQ pipeline queue with IntelMQ's own
//!   in-flight discipline (`BLMOVE` to `-internal`, remove only after durable acceptance).
//! - **out** ([`out`]): delivers the log (a persisted cursor, advanced after success) as bare
//!   events to IntelMQ's TCP collector, API collector, or a Redis pipeline queue.
//!
//! Incoming bare events are wrapped as IEP04 messages (fresh UUIDv4, the configured
//! organisation) and de-duplicated by content within the exchange's window, so the TCP
//! output's resends cost nothing. It is **not** the exchange (`sighthub-exchange`): it only
//! uses its public API (`prepare`, `publish`, `scan`, `subscribe`, named
//! consumers).
//!
//! ```
//! use sighthub_intelmq::frame::{encode_length_prefixed, Decoder, Framing};
//! let mut wire = Vec::new();
//! encode_length_prefixed(br#"{"source.ip": "198.51.100.1"}"#, &mut wire);
//! let mut d = Decoder::new(Framing::LengthPrefixed, 1 << 20);
//! d.push(&wire);
//! assert_eq!(d.next_frame().unwrap().unwrap(), br#"{"source.ip": "198.51.100.1"}"#);
//! ```
//!
//! ## Layout
//! - [`config`]: the `[intelmq]` configuration section.
//! - [`frame`]: the TCP frame decoder and encoder (fuzzed).
//! - [`sink`]: into the exchange: decode, prepare, publish (answers once durable).
//! - [`tcp_in`]: the TCP listener.
//! - [`redis_in`]: the Redis queue reader.
//! - [`out`]: cursors and deliveries (TCP collector, API collector, Redis queue).
//! - [`error`]: the error type.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod config;
pub mod error;
pub mod frame;
pub mod out;
pub mod redis_in;
pub mod sink;
pub mod stats;
pub mod tcp_in;

pub use config::IntelmqConfig;
pub use error::{Error, Result};

use sighthub_exchange::{ExchangeStore, Feed, Grants};
use sighthub_iep04::Tlp;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The configured transports, ready to [`start`](Intelmq::start).
#[derive(Clone)]
pub struct Intelmq {
    cfg: IntelmqConfig,
    store: Arc<ExchangeStore>,
    default_tlp: Tlp,
    /// Every transport's counters, in configuration order.
    stats: Vec<Arc<stats::TransportStats>>,
    /// This front end's id, the holder of the outputs' leases.
    holder: String,
}

/// Started transports.
pub struct Running {
    tasks: tokio::task::JoinSet<()>,
    /// Bound address of each TCP listener, by name.
    pub tcp_in: Vec<(String, SocketAddr)>,
}

impl Running {
    /// Waits for every transport to stop (after shutdown was signalled).
    pub async fn join(self) {
        self.tasks.join_all().await;
    }
}

impl Intelmq {
    /// Checks `cfg` against the exchange `store`; `default_tlp` is the exchange's
    /// (`ExchangeConfig::default_tlp`).
    pub fn new(cfg: &IntelmqConfig, store: Arc<ExchangeStore>, default_tlp: Tlp) -> Result<Self> {
        cfg.validate().map_err(Error::Config)?;
        let mut all = Vec::new();
        for l in &cfg.tcp_in {
            all.push(Arc::new(stats::TransportStats::new("tcp_in", &l.name)));
        }
        for r in &cfg.redis_in {
            all.push(Arc::new(stats::TransportStats::new("redis_in", &r.name)));
        }
        for o in &cfg.out {
            all.push(Arc::new(stats::TransportStats::new("out", &o.name)));
        }
        for r in &cfg.redis_out {
            all.push(Arc::new(stats::TransportStats::new("redis_out", &r.name)));
        }
        Ok(Intelmq {
            cfg: cfg.clone(),
            store,
            default_tlp,
            stats: all,
            holder: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// This front end's id for the outputs' leases ([`out`]: one front end of a shared
    /// exchange delivers each output); a new random one by default. The node gives its own,
    /// the same across restarts.
    pub fn with_holder(mut self, holder: String) -> Self {
        self.holder = holder;
        self
    }

    /// Every transport's counters since start.
    pub fn stats(&self) -> Vec<stats::TransportSnapshot> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    fn stats_of(&self, kind: &str, name: &str) -> Arc<stats::TransportStats> {
        self.stats
            .iter()
            .find(|s| s.kind == kind && s.name == name)
            .cloned()
            .unwrap_or_else(|| Arc::new(stats::TransportStats::new("unknown", name)))
    }

    /// Binds the listeners (an address in use fails here) and starts every transport;
    /// they stop when `shutdown` flips to true.
    pub async fn start(&self, shutdown: watch::Receiver<bool>) -> Result<Running> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut bound = Vec::new();
        for l in &self.cfg.tcp_in {
            let sink = sink::Sink::new(Arc::clone(&self.store), l.org, &l.tags)
                .with_stats(self.stats_of("tcp_in", &l.name));
            let t = tcp_in::TcpIn::bind(l.clone(), sink).await?;
            let addr = t.local_addr()?;
            tracing::info!(tcp_in = %l.name, %addr, "intelmq tcp_in bound");
            bound.push((l.name.clone(), addr));
            tasks.spawn(t.run(shutdown.clone()));
        }
        for r in &self.cfg.redis_in {
            let sink = sink::Sink::new(Arc::clone(&self.store), r.org, &r.tags)
                .with_max_bytes(r.max_message_bytes)
                .with_stats(self.stats_of("redis_in", &r.name));
            tasks.spawn(redis_in::RedisIn::new(r.clone(), sink).run(shutdown.clone()));
        }
        for o in &self.cfg.out {
            let target = match o.kind {
                config::OutKind::Tcp => out::Target::Tcp(o.address.clone().unwrap_or_default()),
                config::OutKind::Api => out::Target::Api(o.url.clone().unwrap_or_default()),
            };
            let d = self.delivery(
                self.stats_of("out", &o.name),
                &o.name,
                &o.read,
                o.tlp_max,
                o.start,
                o.batch,
                o.timeout_seconds,
                target,
            );
            tasks.spawn(d.run(shutdown.clone()));
        }
        for r in &self.cfg.redis_out {
            let target = out::Target::Redis(r.url.clone(), r.queue.clone());
            let d = self.delivery(
                self.stats_of("redis_out", &r.name),
                &format!("redis/{}", r.name),
                &r.read,
                r.tlp_max,
                r.start,
                r.batch,
                15,
                target,
            );
            tasks.spawn(d.run(shutdown.clone()));
        }
        Ok(Running {
            tasks,
            tcp_in: bound,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn delivery(
        &self,
        stats: Arc<stats::TransportStats>,
        name: &str,
        read: &[Feed],
        tlp_max: Tlp,
        start: config::Start,
        batch: usize,
        timeout: u64,
        target: out::Target,
    ) -> out::Delivery {
        out::Delivery {
            name: name.to_owned(),
            store: Arc::clone(&self.store),
            grants: Grants::reader(self.store.org(), read.to_vec(), tlp_max),
            default_tlp: self.default_tlp,
            start,
            batch,
            timeout: Duration::from_secs(timeout),
            target,
            stats,
            holder: self.holder.clone(),
        }
    }
}
