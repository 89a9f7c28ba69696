//! # sighthub-exchange
//!
//! The IEP04 exchange hub of sighthub: instances (IntelMQ, AIL, other sighthubs) publish
//! messages to it; consumers download what is new with an opaque cursor; a message whose
//! `meta.uuid` was already accepted is a duplicate whichever path it came by, and a bare
//! IntelMQ event without uuid is a duplicate of an identical one within a time window.
//! Every message answered `accepted` is in a durable, ordered log under a monotonic
//! sequence number before the answer is sent.
//!
//! It **is** the exchange core: the one publish pipeline ([`ExchangeStore::publish`]), the
//! rules over its storage (de-duplication, authority, retention, cursors; the durability
//! contract is in [`store`]), the storage seam below them ([`log::ExchangeLog`]: its own fjall
//! database at `<data_dir>/exchange`, or memory in tests), one follower of the log
//! ([`Follower`]), and the handler of every `/iep04/` route. It is **not** the HTTP server (the
//! `sighthub-api` crate forwards requests to [`Exchange::handle`]) nor the envelope library
//! (`sighthub-iep04`).
//!
//! ```
//! use sighthub_exchange::{AdminKey, Exchange, ExchangeConfig};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let ex = Exchange::open(&ExchangeConfig::default(), dir.path(), AdminKey::Key("adm".into())).unwrap();
//! let post = hyper::Request::post("/iep04/messages")
//!     .header("authorization", "adm")
//!     .header("content-type", "application/json")
//!     .body(http_body_util::Full::new(bytes::Bytes::from_static(
//!         br#"{"source.ip": "198.51.100.1", "raw": "eA=="}"#,
//!     )))
//!     .unwrap();
//! let resp = ex.handle(post).await;
//! assert_eq!(resp.status(), 200); // {"accepted":1,...,"results":[{"status":"accepted","seq":1,...}]}
//! let get = hyper::Request::get("/iep04/messages?limit=10")
//!     .header("authorization", "adm")
//!     .body(http_body_util::Empty::<bytes::Bytes>::new())
//!     .unwrap();
//! let resp = ex.handle(get).await;
//! assert_eq!(resp.status(), 200); // {"cursor":"…","count":1,"more":false,…,"messages":[{envelope}]}
//! # });
//! ```
//!
//! ## Layout
//! - [`config`]: the `[exchange]` configuration section.
//! - [`access`]: keys, organisations, feeds, TLP ceilings.
//! - [`ingest`]: request bodies (envelope, array, ND-JSON stream, bare event, form) to
//!   prepared messages.
//! - [`store`]: the rules over the storage: the publish pipeline ([`ExchangeStore::publish`]),
//!   de-duplication, authority, retention, consumers, and the durability contract.
//! - [`follow`]: one follower of the log over a named, durable cursor.
//! - [`log`]: the storage seam ([`ExchangeLog`]) and its adapters, fjall and in-memory.
//! - [`record`]: on-disk encodings and the cursor.
//! - [`emit`]: envelope JSON and content hash without copies (same bytes as the library).
//! - [`filter`]: the in-memory Bloom filter in front of the content window.
//! - [`export`]: rendering pages as envelopes or bare IntelMQ events, JSON or ND-JSON.
//! - [`http`]: the routes and their handlers.
//! - [`error`]: the error type, which knows its HTTP status.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod access;
pub mod config;
pub mod emit;
pub mod error;
pub mod export;
pub mod filter;
pub mod follow;
pub mod http;
pub mod ingest;
pub mod log;
pub mod record;
pub mod store;

pub use access::{AdminKey, Feed, Grants, Keys};
pub use config::{ExchangeConfig, KeyConfig};
pub use error::{Error, Result};
pub use follow::{Follower, StartAt};
pub use log::{ExchangeLog, FjallLog, MemoryLog};
pub use store::{ExchangeStore, OnRefusal, Published, StoreOptions};

use sighthub_iep04::Tlp;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The exchange: store, keys and limits; cheap to share (`Arc` inside). See the crate docs.
#[derive(Clone)]
pub struct Exchange {
    inner: Option<Arc<Inner>>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<ExchangeStore>,
    pub(crate) keys: Keys,
    pub(crate) cfg: ExchangeConfig,
    pub(crate) default_tlp: Tlp,
    sweeper: Mutex<Option<Sweeper>>,
}

/// The retention thread and its stop signal.
struct Sweeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Exchange {
    /// Opens the exchange database under `<data_dir>/exchange` and starts the retention
    /// thread. A disabled configuration opens nothing.
    pub fn open(cfg: &ExchangeConfig, data_dir: &Path, admin: AdminKey) -> Result<Exchange> {
        cfg.validate()?;
        if !cfg.enabled {
            return Ok(Exchange::disabled());
        }
        let default_tlp = cfg
            .default_tlp
            .parse()
            .map_err(|e| Error::Config(format!("exchange.default_tlp: {e}")))?;
        let store = Arc::new(ExchangeStore::open(
            &data_dir.join("exchange"),
            StoreOptions {
                cache_bytes: cfg.cache_mb.saturating_mul(1024 * 1024),
                content_window: cfg.content_window_seconds,
                seen_max_age: cfg.seen_max_age_seconds,
                log_max_age: cfg.log_max_age_seconds,
                log_max_bytes: cfg.log_max_bytes,
                content_filter_bytes: usize::try_from(cfg.content_filter_mb)
                    .unwrap_or(usize::MAX / 2)
                    .saturating_mul(1024 * 1024),
            },
            cfg.org,
            cfg.instance,
        )?);
        let keys = Keys::new(cfg, &admin, store.org())?;
        let sweeper = start_sweeper(
            Arc::clone(&store),
            Duration::from_secs(cfg.retention_interval_seconds),
            cfg.log_max_age_seconds > 0 || cfg.log_max_bytes > 0,
        )?;
        Ok(Exchange {
            inner: Some(Arc::new(Inner {
                store,
                keys,
                cfg: cfg.clone(),
                default_tlp,
                sweeper: Mutex::new(sweeper),
            })),
        })
    }

    /// An exchange that answers 404 to every route.
    pub fn disabled() -> Exchange {
        Exchange { inner: None }
    }

    /// The store, unless disabled.
    pub fn store(&self) -> Option<&Arc<ExchangeStore>> {
        self.inner.as_ref().map(|i| &i.store)
    }

    /// Makes everything durable (shutdown). Accepted messages already are; this covers
    /// retention deletions.
    pub fn persist(&self) -> Result<()> {
        match &self.inner {
            Some(i) => i.store.persist(),
            None => Ok(()),
        }
    }

    pub(crate) fn inner(&self) -> Result<&Arc<Inner>> {
        self.inner.as_ref().ok_or(Error::Disabled)
    }
}

fn start_sweeper(
    store: Arc<ExchangeStore>,
    every: Duration,
    needed: bool,
) -> Result<Option<Sweeper>> {
    if !needed {
        return Ok(None);
    }
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let signal = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("iep04-retention".into())
        .spawn(move || loop {
            match store.sweep(store::now_secs()) {
                Ok(s) if s.removed > 0 => {
                    tracing::debug!(removed = s.removed, bytes = s.bytes, "exchange retention")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "exchange retention sweep failed"),
            }
            let (lock, cv) = &*signal;
            let guard = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (guard, _) = cv
                .wait_timeout_while(guard, every, |stopped| !*stopped)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *guard {
                return;
            }
        })?;
    Ok(Some(Sweeper { stop, thread }))
}

impl Drop for Inner {
    fn drop(&mut self) {
        let sweeper = self
            .sweeper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(s) = sweeper {
            let (lock, cv) = &*s.stop;
            *lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
            cv.notify_all();
            if s.thread.join().is_err() {
                tracing::error!("exchange retention thread panicked");
            }
        }
        if let Err(e) = self.store.close() {
            tracing::warn!(error = %e, "exchange: final persist failed");
        }
    }
}
