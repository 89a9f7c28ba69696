//! The sighting store's engine the configuration chose (`[storage] backend`): the embedded
//! fjall engine in the data directory, or a Redis Cluster shared by several front ends.
//! [`Backend`] is one [`Engine`] over either, so the node, the importers and every client
//! hold one store type, [`NodeStore`], whatever the backend.

use sighthub_redis::RedisEngine;
use sighthub_storage::docs::{Documents, FileDocuments, MemoryDocuments};
use sighthub_store::engine::{Applied, Batch, Engine, Space};
use sighthub_store::{Durability, FjallEngine, Result, Sightings};
use std::ops::{Bound, ControlFlow};
use std::path::Path;
use std::sync::Arc;

/// The sighting store of a node: the rules over the configured engine.
pub type NodeStore = Sightings<Backend>;

/// The configured engine.
pub enum Backend {
    /// fjall in `<data_dir>/db` (`backend = "embedded"`).
    Embedded(Box<FjallEngine>),
    /// A Redis Cluster (`backend = "redis"`).
    Redis(Box<RedisEngine>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded(_) => f.write_str("Backend::Embedded"),
            Self::Redis(e) => write!(f, "Backend::Redis({e:?})"),
        }
    }
}

/// The shared documents of the node ([`sighthub_storage::docs`]).
#[derive(Debug, Clone)]
pub struct NodeDocuments {
    /// Runtime API keys and runtime peers: files in the data directory (embedded), or the
    /// cluster every front end shares (Redis).
    pub durable: Arc<dyn Documents>,
    /// The console's secret and closed sessions: in memory (embedded: a restart logs
    /// everyone out, as it always did), or the cluster (Redis: a session is valid through
    /// every front end).
    pub sessions: Arc<dyn Documents>,
}

/// The shared documents of the backend `store` runs on.
pub fn documents(
    store: &NodeStore,
    data_dir: &Path,
) -> std::result::Result<NodeDocuments, crate::boot::BootError> {
    Ok(match store.engine() {
        Backend::Embedded(_) => NodeDocuments {
            durable: Arc::new(FileDocuments::new(data_dir)),
            sessions: Arc::new(MemoryDocuments::default()),
        },
        Backend::Redis(e) => {
            let d: Arc<dyn Documents> = Arc::new(e.documents()?);
            // Files an embedded start left: not read here; say how to bring them.
            let files = FileDocuments::new(data_dir);
            for name in crate::migrate::DOCUMENTS {
                if files.version(name).unwrap_or(0) > 0 && d.version(name).unwrap_or(1) == 0 {
                    tracing::warn!(
                        file = %files.path(name).display(),
                        "this file is not used on the redis backend, and the cluster has none: copy it with `sighthub migrate --to <this config>` (server stopped)"
                    );
                }
            }
            NodeDocuments {
                durable: Arc::clone(&d),
                sessions: d,
            }
        }
    })
}

/// A value read from either engine.
pub enum BackendValue {
    /// From fjall (shared, not copied).
    Embedded(<FjallEngine as Engine>::Value),
    /// From Redis.
    Redis(Vec<u8>),
}

impl AsRef<[u8]> for BackendValue {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Embedded(v) => v.as_ref(),
            Self::Redis(v) => v,
        }
    }
}

impl Engine for Backend {
    type Value = BackendValue;

    fn checks_priors(&self) -> bool {
        match self {
            Self::Embedded(e) => e.checks_priors(),
            Self::Redis(e) => e.checks_priors(),
        }
    }

    fn local_reads(&self) -> bool {
        match self {
            Self::Embedded(e) => e.local_reads(),
            Self::Redis(e) => e.local_reads(),
        }
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<BackendValue>> {
        Ok(match self {
            Self::Embedded(e) => e.get(space, key)?.map(BackendValue::Embedded),
            Self::Redis(e) => e.get(space, key)?.map(BackendValue::Redis),
        })
    }

    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<BackendValue>>> {
        Ok(match self {
            Self::Embedded(e) => e
                .get_many(space, keys)?
                .into_iter()
                .map(|v| v.map(BackendValue::Embedded))
                .collect(),
            Self::Redis(e) => e
                .get_many(space, keys)?
                .into_iter()
                .map(|v| v.map(BackendValue::Redis))
                .collect(),
        })
    }

    fn contains(&self, space: Space, key: &[u8]) -> Result<bool> {
        match self {
            Self::Embedded(e) => e.contains(space, key),
            Self::Redis(e) => e.contains(space, key),
        }
    }

    fn apply(&self, batch: Batch) -> Result<Applied> {
        match self {
            Self::Embedded(e) => e.apply(batch),
            Self::Redis(e) => e.apply(batch),
        }
    }

    fn scan<F>(
        &self,
        space: Space,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        visit: F,
    ) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    {
        match self {
            Self::Embedded(e) => e.scan(space, start, end, limit, visit),
            Self::Redis(e) => e.scan(space, start, end, limit, visit),
        }
    }

    fn durability(&self) -> Durability<'_> {
        match self {
            Self::Embedded(e) => e.durability(),
            Self::Redis(e) => e.durability(),
        }
    }

    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        match self {
            Self::Embedded(e) => e.lease(name, holder, ttl_ms),
            Self::Redis(e) => e.lease(name, holder, ttl_ms),
        }
    }

    fn engine_stats(&self) -> Option<sighthub_storage::EngineStats> {
        match self {
            Self::Embedded(e) => e.engine_stats(),
            Self::Redis(e) => e.engine_stats(),
        }
    }

    fn close(&self) -> Result<()> {
        match self {
            Self::Embedded(e) => e.close(),
            Self::Redis(e) => e.close(),
        }
    }
}
