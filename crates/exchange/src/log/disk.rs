//! [`FjallLog`]: the exchange's storage in one fjall database at `<data_dir>/exchange`.
//!
//! Keyspaces (the layout of every earlier version, unchanged):
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `log` | seq, u64 big-endian | the record ([`crate::record::encode_log`]) |
//! | `seen` | uuid (16 bytes) | [`Seen`] (12 bytes) |
//! | `content` | content key (16 bytes) | [`Seen`] |
//! | `links` | [`link_key`] | [`link_value`] |
//! | `alternates` | [`alternate_prefix`] ‖ uuid | seq, u64 little-endian |
//! | `consumers` | [`consumer_key`] | acked ‖ updated_at, u64 little-endian each |
//! | `meta` | name | u64 little-endian or uuid |
//!
//! A batch is one fjall batch: atomic. Expired `seen` and `content` entries are removed by a
//! compaction filter (the store ignores them on lookup before that). Durability: the shared
//! journal syncer of `sighthub_storage` (fsync outside fjall's journal lock).

use fjall::compaction::filter::{CompactionFilter, Context, Factory, ItemAccessor, Verdict};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode, Slice};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

use super::{alternate_uuid, ConsumerState, ExchangeLog, IncomingLink, LogBatch};
use crate::error::{Error, Result};
use crate::record::{
    alternate_key, alternate_prefix, consumer_key, key_seq, le_u64, link_key, link_value, seq_key,
    LinkRel, Seen,
};
use crate::store::{now_secs, StoreOptions};

/// Memtable size of the `seen` and `content` keyspaces.
const SMALL_MEMTABLE: u64 = 8 * 1024 * 1024;

/// The fjall adapter; see the [module docs](self).
pub struct FjallLog {
    db: Database,
    log: Keyspace,
    seen: Keyspace,
    content: Keyspace,
    links: Keyspace,
    alternates: Keyspace,
    consumers: Keyspace,
    meta: Keyspace,
    /// Scratch space of [`FjallLog::close`]; always empty between uses.
    pad: Keyspace,
    dir: PathBuf,
}

/// Drops `seen`/`content` entries older than their window during compaction.
struct AgeFilterFactory {
    name: &'static str,
    max_age: u64,
}

struct AgeFilter {
    max_age: u64,
    now: u64,
}

impl Factory for AgeFilterFactory {
    fn name(&self) -> &str {
        self.name
    }

    fn make_filter(&self, _ctx: &Context) -> Box<dyn CompactionFilter> {
        Box::new(AgeFilter {
            max_age: self.max_age,
            now: now_secs(),
        })
    }
}

impl CompactionFilter for AgeFilter {
    fn filter_item(
        &mut self,
        item: ItemAccessor<'_>,
        _ctx: &Context,
    ) -> std::result::Result<Verdict, fjall::LsmError> {
        let value = item.value()?;
        Ok(match Seen::decode(&value) {
            Some(s) if !s.alive(self.max_age, self.now) => Verdict::Remove,
            _ => Verdict::Keep,
        })
    }
}

impl FjallLog {
    /// Opens (or creates) the database in `dir`; `opts` gives the cache size and the ages
    /// of the compaction filters. What the journal replayed is made durable before this
    /// returns, so none of it is delivered before it is on disk.
    pub fn open(dir: &Path, opts: &StoreOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (seen_age, content_age) = (opts.seen_max_age, opts.content_window.max(1));
        let db = Database::builder(dir)
            .cache_size(opts.cache_bytes)
            .manual_journal_persist(true)
            .with_compaction_filter_factories(Arc::new(move |keyspace: &str| {
                let (name, max_age) = match keyspace {
                    "seen" if seen_age > 0 => ("seen-max-age", seen_age),
                    "content" => ("content-window", content_age),
                    _ => return None,
                };
                Some(Arc::new(AgeFilterFactory { name, max_age }) as Arc<dyn Factory>)
            }))
            .open()?;
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        // Small entries, looked up once per message: a smaller memtable keeps those point
        // reads (a skiplist search) short; the tables behind it have bloom filters.
        let small = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(SMALL_MEMTABLE)
            })
        };
        let (log, seen, content) = (ks("log")?, small("seen")?, small("content")?);
        let (links, alternates, consumers, meta) = (
            ks("links")?,
            ks("alternates")?,
            ks("consumers")?,
            ks("meta")?,
        );
        // What recovery replayed from the journal may only be in the page cache: make it
        // durable before any of it is delivered.
        db.persist(PersistMode::SyncAll)?;
        let pad = sighthub_storage::journal::pad_keyspace(&db)?;
        Ok(FjallLog {
            db,
            log,
            seen,
            content,
            links,
            alternates,
            consumers,
            meta,
            pad,
            dir: dir.to_path_buf(),
        })
    }

    /// Calls `f` on every entry of the seen-set (the copy into another engine).
    pub fn each_seen(&self, mut f: impl FnMut(Uuid, Seen)) -> Result<()> {
        for kv in self.seen.iter() {
            let (k, v) = kv.into_inner()?;
            if let (Some(s), Ok(u)) = (Seen::decode(&v), Uuid::from_slice(&k)) {
                f(u, s);
            }
        }
        Ok(())
    }

    /// Bytes on disk of the `seen` keyspace (tests and the status route).
    pub fn seen_disk_space(&self) -> u64 {
        self.seen.disk_space()
    }

    /// Flushes and compacts `seen` (tests of the compaction filter).
    #[cfg(test)]
    pub(crate) fn compact_seen(&self) -> Result<()> {
        self.seen.rotate_memtable_and_wait()?;
        self.seen.major_compact()?;
        Ok(())
    }
}

/// One fjall batch with the keyspaces it writes to.
pub struct FjallBatch {
    batch: OwnedWriteBatch,
    log: Keyspace,
    seen: Keyspace,
    content: Keyspace,
    links: Keyspace,
    alternates: Keyspace,
    meta: Keyspace,
}

impl LogBatch for FjallBatch {
    type Record = Slice;

    fn put_record(&mut self, seq: u64, record: Slice) {
        self.batch.insert(&self.log, seq_key(seq), record);
    }

    fn remove_record(&mut self, seq: u64) {
        self.batch.remove(&self.log, seq_key(seq));
    }

    fn put_seen(&mut self, uuid: &Uuid, seen: Seen) {
        self.batch
            .insert(&self.seen, uuid.as_bytes().to_vec(), seen.encode().to_vec());
    }

    fn put_content(&mut self, key: &[u8; 16], seen: Seen) {
        self.batch
            .insert(&self.content, key.to_vec(), seen.encode().to_vec());
    }

    fn put_link(&mut self, target: Uuid, source: Uuid, rel: &LinkRel, seq: u64, org: Option<Uuid>) {
        self.batch.insert(
            &self.links,
            link_key(target, source, rel),
            link_value(seq, org).to_vec(),
        );
    }

    fn remove_link(&mut self, target: Uuid, source: Uuid, rel: &LinkRel) {
        self.batch
            .remove(&self.links, link_key(target, source, rel));
    }

    fn put_alternate(&mut self, alt: &str, uuid: Uuid, seq: u64) {
        if let Some(k) = alternate_key(alt, uuid) {
            self.batch
                .insert(&self.alternates, k, seq.to_le_bytes().to_vec());
        }
    }

    fn remove_alternate(&mut self, alt: &str, uuid: Uuid) {
        if let Some(k) = alternate_key(alt, uuid) {
            self.batch.remove(&self.alternates, k);
        }
    }

    fn put_meta(&mut self, key: &'static str, value: u64) {
        self.batch
            .insert(&self.meta, key, value.to_le_bytes().to_vec());
    }
}

fn seen_value(v: Option<Slice>) -> Option<Seen> {
    v.and_then(|v| Seen::decode(&v))
}

impl ExchangeLog for FjallLog {
    type Record = Slice;
    type Batch = FjallBatch;

    fn record(bytes: Vec<u8>) -> Slice {
        Slice::from(bytes)
    }

    fn bounds(&self) -> Result<Option<(u64, u64)>> {
        let first = match self.log.first_key_value() {
            Some(g) => key_seq(&g.key()?).ok_or_else(|| Error::corrupt("log key"))?,
            None => return Ok(None),
        };
        let last = match self.log.last_key_value() {
            Some(g) => key_seq(&g.key()?).ok_or_else(|| Error::corrupt("log key"))?,
            None => first,
        };
        Ok(Some((first, last)))
    }

    fn record_at(&self, seq: u64) -> Result<Option<Slice>> {
        Ok(self.log.get(seq_key(seq))?)
    }

    fn range(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &Slice) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        for kv in self.log.range(seq_key(from)..=seq_key(to)) {
            let (k, v) = kv.into_inner()?;
            let seq = key_seq(&k).ok_or_else(|| Error::corrupt("log key"))?;
            if f(seq, &v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn seen(&self, uuid: &Uuid) -> Result<Option<Seen>> {
        Ok(seen_value(self.seen.get(uuid.as_bytes())?))
    }

    fn content(&self, key: &[u8; 16]) -> Result<Option<Seen>> {
        Ok(seen_value(self.content.get(key)?))
    }

    fn each_content(&self, mut f: impl FnMut(&[u8; 16], Seen)) -> Result<()> {
        for kv in self.content.iter() {
            let (k, v) = kv.into_inner()?;
            if let (Some(s), Ok(key)) = (Seen::decode(&v), <[u8; 16]>::try_from(&k[..])) {
                f(&key, s);
            }
        }
        Ok(())
    }

    fn links_to(
        &self,
        target: &Uuid,
        mut f: impl FnMut(IncomingLink) -> ControlFlow<()>,
    ) -> Result<()> {
        for kv in self.links.prefix(target.as_bytes()) {
            let (k, v) = kv.into_inner()?;
            if f(IncomingLink::decode(&k, &v)?).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn alternates(&self, alt: &str, mut f: impl FnMut(Uuid, u64) -> ControlFlow<()>) -> Result<()> {
        let Some(prefix) = alternate_prefix(alt) else {
            return Ok(());
        };
        for kv in self.alternates.prefix(&prefix) {
            let (k, v) = kv.into_inner()?;
            let uuid = alternate_uuid(&k, &prefix)?;
            let seq = le_u64(&v).ok_or_else(|| Error::corrupt("alternate value"))?;
            if f(uuid, seq).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn consumer(&self, org: Uuid, name: &str) -> Result<Option<ConsumerState>> {
        Ok(self
            .consumers
            .get(consumer_key(org, name))?
            .map(|v| ConsumerState {
                acked: le_u64(&v).unwrap_or(0),
                updated_at: v.get(8..16).and_then(le_u64).unwrap_or(0),
            }))
    }

    fn consumer_count(&self, org: Uuid, max: usize) -> Result<usize> {
        Ok(self.consumers.prefix(org.as_bytes()).take(max).count())
    }

    fn consumers(&self, max: usize) -> Result<Vec<(Uuid, String, ConsumerState)>> {
        let mut out = Vec::new();
        for kv in self.consumers.iter().take(max) {
            let (k, v) = kv.into_inner()?;
            let (Some(org), Ok(name)) = (
                k.get(..16).and_then(|b| Uuid::from_slice(b).ok()),
                std::str::from_utf8(k.get(16..).unwrap_or_default()),
            ) else {
                continue;
            };
            out.push((
                org,
                name.to_owned(),
                ConsumerState {
                    acked: le_u64(&v).unwrap_or(0),
                    updated_at: v.get(8..16).and_then(le_u64).unwrap_or(0),
                },
            ));
        }
        Ok(out)
    }

    fn consumer_put(&self, org: Uuid, name: &str, state: ConsumerState) -> Result<()> {
        let mut v = state.acked.to_le_bytes().to_vec();
        v.extend_from_slice(&state.updated_at.to_le_bytes());
        self.consumers.insert(consumer_key(org, name), v)?;
        Ok(())
    }

    fn consumer_delete(&self, org: Uuid, name: &str) -> Result<bool> {
        let key = consumer_key(org, name);
        if self.consumers.get(&key)?.is_none() {
            return Ok(false);
        }
        self.consumers.remove(key)?;
        Ok(true)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn meta_put(&self, key: &'static str, value: Vec<u8>) -> Result<()> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    fn batch(&self) -> FjallBatch {
        FjallBatch {
            batch: self.db.batch(),
            log: self.log.clone(),
            seen: self.seen.clone(),
            content: self.content.clone(),
            links: self.links.clone(),
            alternates: self.alternates.clone(),
            meta: self.meta.clone(),
        }
    }

    fn commit(&self, batch: FjallBatch) -> Result<()> {
        batch.batch.commit()?;
        Ok(())
    }

    fn syncer(&self) -> sighthub_storage::commit::PersistFn {
        // The same fsync as the sighting store's: outside fjall's journal lock, so publishers
        // keep appending while the group commit syncs.
        let mut syncer =
            sighthub_storage::journal::JournalSyncer::new(self.db.clone(), self.dir.clone());
        Box::new(move || syncer.sync())
    }

    fn persist(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Makes everything durable, flushes every memtable and seals the journal, so the next
    /// start has nothing to replay (`sighthub_storage::journal::seal`).
    fn close(&self) -> Result<()> {
        sighthub_storage::journal::seal(
            &self.db,
            &self.dir,
            &self.pad,
            &[
                &self.log,
                &self.seen,
                &self.content,
                &self.links,
                &self.alternates,
                &self.consumers,
                &self.meta,
            ],
        )?;
        Ok(())
    }

    fn engine_stats(&self) -> Option<sighthub_storage::EngineStats> {
        Some(sighthub_storage::stats::of(&self.db))
    }

    fn approximate_counts(&self) -> (usize, usize) {
        (self.log.approximate_len(), self.seen.approximate_len())
    }
}
