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
//! ([`Follower`]), its keys and its limits. It is **not** HTTP: the `/iep04/` routes are
//! handlers of the `sighthub-api` edge (`api::cmd::iep04_*`), which reach the parts of an open
//! exchange through [`Exchange::inner`]. Nor is it the envelope library (`sighthub-iep04`).
//!
//! ```
//! use sighthub_exchange::{AdminKey, Exchange, ExchangeConfig};
//! let dir = tempfile::tempdir().unwrap();
//! let ex = Exchange::open(&ExchangeConfig::default(), dir.path(), AdminKey::Key("adm".into())).unwrap();
//! let hub = ex.inner().unwrap();
//! assert_eq!(hub.store.durable(), 0); // an empty log
//! assert!(hub.keys().caller(Some(b"adm")).is_ok());
//! assert!(Exchange::disabled().inner().is_err());
//! ```
//!
//! ## Layout
//! - [`config`]: the `[exchange]` configuration section.
//! - [`copy`]: an embedded exchange copied into NATS JetStream (`sighthub migrate --to`).
//! - [`access`]: keys, organisations, feeds, TLP ceilings.
//! - [`ingest`]: request bodies (envelope, array, ND-JSON stream, bare event, form) to
//!   prepared messages.
//! - [`store`]: the rules over the storage: the publish pipeline ([`ExchangeStore::publish`]),
//!   de-duplication, authority, retention, consumers, and the durability contract.
//! - [`follow`]: the one reader of the log (scan, filter by read grants, page, wait) and
//!   the follower over a named, durable cursor.
//! - [`lease`]: one front end at a time runs a singleton job (a relay link, an IntelMQ
//!   output, the bridge) on a shared exchange: the lease rule's loop.
//! - [`log`]: the storage seam ([`ExchangeLog`]) and its adapters, fjall and in-memory.
//! - [`record`]: on-disk encodings and the cursor.
//! - [`filter`]: the in-memory Bloom filter in front of the content window.
//! - [`export`]: rendering pages as envelopes or bare IntelMQ events, JSON or ND-JSON.
//! - [`error`]: the typed error (the HTTP edge maps it to a status and a body).
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod access;
pub mod config;
pub mod copy;
pub mod error;
pub mod export;
pub mod filter;
pub mod follow;
pub mod ingest;
pub mod lease;
pub mod log;
pub mod record;
pub mod store;

pub use access::{AdminKey, Feed, Grants, Keys};
pub use config::{Backend, ExchangeConfig, KeyConfig};
pub use error::{Error, Result};
pub use follow::{Cut, Follower, PageEnd, Reader, StartAt};
pub use log::{AnyLog, ExchangeLog, FjallLog, MemoryLog, NatsLog};
/// What a write of the store hands out: durable once its group commit has synced it.
pub use sighthub_storage::Ticket;
pub use store::{ExchangeStore, OnRefusal, Published, StoreOptions};

use std::path::Path;
use std::sync::Arc;

/// The exchange: store, keys and limits; cheap to share (`Arc` inside). See the crate docs.
#[derive(Clone)]
pub struct Exchange {
    inner: Option<Arc<Inner>>,
}

/// The parts of an open exchange, for its clients (the `/iep04/` handlers of the HTTP edge).
pub struct Inner {
    /// The log, seen-set, links and consumers.
    pub store: Arc<ExchangeStore>,
    /// The exchange's configuration keys (replaced by [`Exchange::reload_keys`]).
    keys: std::sync::RwLock<Arc<Keys>>,
    /// The admin key it was opened with, for reloads.
    admin: AdminKey,
    /// The `[exchange]` configuration it was opened with (`cfg.default_tlp`: the TLP of a
    /// message without one).
    pub cfg: ExchangeConfig,
}

impl Inner {
    /// The configuration keys now in force.
    pub fn keys(&self) -> Arc<Keys> {
        Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Exchange {
    /// Opens the exchange database under `<data_dir>/exchange`, or on the NATS JetStream
    /// cluster of `[exchange.nats]` with `backend = "nats"`. A disabled configuration
    /// opens nothing. Retention ([`ExchangeStore::sweep`]) is background work, run by the
    /// composition root every `retention_interval_seconds` when [`ExchangeConfig::retains`].
    pub fn open(cfg: &ExchangeConfig, data_dir: &Path, admin: AdminKey) -> Result<Exchange> {
        cfg.validate()?;
        if !cfg.enabled {
            return Ok(Exchange::disabled());
        }
        let opts = cfg.store_options();
        let store = Arc::new(match cfg.backend {
            config::Backend::Embedded => {
                ExchangeStore::open(&data_dir.join("exchange"), opts, cfg.org, cfg.instance)?
            }
            config::Backend::Nats => {
                ExchangeStore::open_nats(&cfg.nats, opts, cfg.org, cfg.instance)?
            }
        });
        let keys = Keys::new(cfg, &admin, store.org())?;
        Ok(Exchange {
            inner: Some(Arc::new(Inner {
                store,
                keys: std::sync::RwLock::new(Arc::new(keys)),
                admin,
                cfg: cfg.clone(),
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

    /// Makes everything durable and seals the journal, so the next start replays nothing
    /// (clean shutdown, after every client of the store has stopped). Without it (a crash)
    /// the next start replays the journal: nothing acknowledged is lost either way.
    pub fn close(&self) -> Result<()> {
        match &self.inner {
            Some(i) => i.store.close(),
            None => Ok(()),
        }
    }

    /// Replaces the configuration keys (`[exchange.keys]`) with those of `cfg` (SIGHUP);
    /// the admin key stays. Refused, changing nothing, when `cfg` is not valid.
    pub fn reload_keys(&self, cfg: &ExchangeConfig) -> Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        cfg.validate()?;
        let keys = Keys::new(cfg, &inner.admin, inner.store.org())?;
        *inner.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// The open exchange's parts; [`Error::Disabled`] when it is switched off.
    pub fn inner(&self) -> Result<&Arc<Inner>> {
        self.inner.as_ref().ok_or(Error::Disabled)
    }
}
