//! The default backend: the sighting rules ([`Sightings`]) over [`FjallEngine`], an embedded
//! fjall LSM database with a journal and group commit.
//!
//! ## Layout on disk (`<data-dir>/db`)
//! Six fjall keyspaces, one per [`Space`] plus a scratch one (the key layout is the rules'
//! business, see [`crate::sightings`]):
//! - `sightings`: [`Space::Sightings`], the records.
//! - `namespaces`: [`Space::Counts`], live value count per namespace.
//! - `config`: [`Space::Formats`], non-RAW value formats.
//! - `expiry`: [`Space::Expiry`], the expiry index.
//! - `markers`: [`Space::Markers`], feeders' progress markers.
//! - `pad`: always empty; scratch space of [`sighthub_storage::journal::seal`] at a clean
//!   shutdown and of the [`sighthub_storage::journal::Rotator`] that keeps the active journal
//!   short while the store is open (a restart after a crash replays at most about
//!   [`sighthub_storage::journal::ROTATE_FROM`] bytes of journal).
//!
//! ## Writes and durability
//! [`Engine::apply`] turns a [`Batch`] into one fjall write batch (atomic, appended to the
//! journal buffer) and takes a ticket from the [`GroupCommit`], which fsyncs the journal for
//! many writers at once ([`sighthub_storage::journal::JournalSyncer`]). The durability
//! contract is in [`crate::sightings`].

use crate::engine::{add_to_count, Applied, Batch, Engine, Space};
use crate::error::{Error, Result};
use crate::sightings::Sightings;
use crate::store::Durability;
use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use sighthub_storage::GroupCommit;
use std::ops::{Bound, ControlFlow};
use std::path::Path;

pub use crate::sightings::StoreOptions;

/// The embedded fjall backend: the sighting rules over [`FjallEngine`].
pub type FjallStore = Sightings<FjallEngine>;

/// The fjall key-value engine: one keyspace per [`Space`], a journal made durable by a group
/// commit. See the module docs.
pub struct FjallEngine {
    // `commit` and `rotator` are declared first so they are dropped (their threads joined)
    // before the database.
    commit: GroupCommit,
    /// Keeps the active journal short, so a restart after a crash replays little.
    rotator: Option<sighthub_storage::journal::Rotator>,
    db: Database,
    sightings: Keyspace,
    namespaces: Keyspace,
    config: Keyspace,
    expiry: Keyspace,
    /// Progress markers of feeders.
    markers: Keyspace,
    /// Scratch space of [`FjallEngine::close`] and of `rotator`; always empty between uses.
    pad: Keyspace,
    dir: std::path::PathBuf,
}

impl FjallEngine {
    /// Opens (or creates) the database in `<dir>/db` with the sizes of `opts`.
    pub fn open(dir: &Path, opts: &StoreOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        // A journal capped at 64 MiB (fjall's minimum; default 512 MiB) and 16 MiB memtables
        // (default 64 MiB) bound what a restart after `kill -9` replays, and the memory that
        // unflushed writes hold.
        let db = Database::builder(dir.join("db"))
            .cache_size(opts.cache_bytes)
            .manual_journal_persist(true)
            .max_journaling_size(64 * 1024 * 1024)
            .open()?;
        let small = || KeyspaceCreateOptions::default().max_memtable_size(16 * 1024 * 1024);
        // Filter and index blocks of every level stay in memory (about 1.3 bytes per key for
        // the Bloom filters), outside the block cache: a point read past the cache then costs
        // one data block from disk, not the re-read of a table's whole filter (fjall pins them
        // only for the first levels by default, which made a read ~200 µs with a 4 MiB cache).
        let sightings = db.keyspace("sightings", || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(opts.memtable_bytes)
                .filter_block_pinning_policy(PinningPolicy::all(true))
                .index_block_pinning_policy(PinningPolicy::all(true))
        })?;
        let namespaces = db.keyspace("namespaces", small)?;
        let config = db.keyspace("config", small)?;
        let expiry = db.keyspace("expiry", small)?;
        let markers = db.keyspace("markers", small)?;
        let pad = sighthub_storage::journal::pad_keyspace(&db)?;
        let mut syncer = sighthub_storage::journal::JournalSyncer::new(db.clone(), dir.join("db"));
        let commit = GroupCommit::start(Box::new(move || syncer.sync()))?;
        let rotator = match opts.journal_rotate_bytes {
            0 => None,
            from => Some(sighthub_storage::journal::Rotator::start(
                db.clone(),
                dir.join("db"),
                pad.clone(),
                vec![
                    sightings.clone(),
                    namespaces.clone(),
                    config.clone(),
                    expiry.clone(),
                    markers.clone(),
                ],
                from,
            )?),
        };
        Ok(Self {
            commit,
            rotator,
            db,
            sightings,
            namespaces,
            config,
            expiry,
            markers,
            pad,
            dir: dir.to_path_buf(),
        })
    }

    /// Makes everything written so far durable.
    pub fn persist(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    fn keyspace(&self, space: Space) -> &Keyspace {
        match space {
            Space::Sightings => &self.sightings,
            Space::Counts => &self.namespaces,
            Space::Formats => &self.config,
            Space::Expiry => &self.expiry,
            Space::Markers => &self.markers,
        }
    }
}

impl Engine for FjallEngine {
    type Value = fjall::Slice;

    /// A get is the memtables, then at most one block per level, from the block cache or the
    /// page cache (a disk read only for a cold block).
    fn local_reads(&self) -> bool {
        true
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<fjall::Slice>> {
        Ok(self.keyspace(space).get(key)?)
    }

    fn contains(&self, space: Space, key: &[u8]) -> Result<bool> {
        Ok(self.keyspace(space).contains_key(key)?)
    }

    /// The whole batch is one fjall write batch: atomic, stronger than the trait asks. Count
    /// increments are read and added here: the rules layer's writer lock serialises every
    /// batch of the one process that opens the database.
    fn apply(&self, batch: Batch) -> Result<Applied> {
        if self.commit.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let flat = batch.flatten();
        let mut wb = self.db.batch();
        for (space, k, v) in flat.ops {
            let ks = self.keyspace(space);
            match v {
                Some(v) => wb.insert(ks, k, v),
                None => wb.remove(ks, k),
            }
        }
        for (ns, delta) in flat.counts {
            let current = self.namespaces.get(&ns)?;
            match add_to_count(current.as_deref(), delta) {
                Some(v) => wb.insert(&self.namespaces, ns, v),
                None => wb.remove(&self.namespaces, ns),
            }
        }
        wb.commit()?;
        Ok(Applied {
            ticket: self.commit.issue()?,
            conflicts: Vec::new(),
        })
    }

    fn scan<F>(
        &self,
        space: Space,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        mut visit: F,
    ) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    {
        for kv in self
            .keyspace(space)
            .range::<&[u8], _>((start, end))
            .take(limit)
        {
            let (k, v) = kv.into_inner()?;
            if visit(&k, &v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn engine_stats(&self) -> Option<sighthub_storage::EngineStats> {
        Some(sighthub_storage::stats::of(&self.db))
    }

    fn durability(&self) -> Durability<'_> {
        Durability::group(&self.commit)
    }

    /// Makes everything durable, flushes every memtable and seals the journal, so the next
    /// start has nothing to replay ([`sighthub_storage::journal::seal`]).
    fn close(&self) -> Result<()> {
        if let Some(r) = &self.rotator {
            r.stop();
        }
        Ok(sighthub_storage::journal::seal(
            &self.db,
            &self.dir.join("db"),
            &self.pad,
            &[
                &self.sightings,
                &self.namespaces,
                &self.config,
                &self.expiry,
                &self.markers,
            ],
        )?)
    }
}

impl Sightings<FjallEngine> {
    /// Opens (or creates) the store in `dir`. Reads only the small `config` keyspace and the
    /// first key of the expiry index, so start-up time does not grow with the data set.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Self> {
        let engine = FjallEngine::open(dir, &opts)?;
        Sightings::new(engine, opts)
    }

    /// Makes everything written so far durable.
    pub fn persist(&self) -> Result<()> {
        self.engine().persist()
    }
}
