//! The sighting rules, once, over any key-value [`Engine`]: [`Sightings`] implements
//! [`SightingStore`].
//!
//! What lives here and nowhere else: the key layout, consensus (`_all`), shadow sightings
//! (`_shadow/<ns>`), TTL with its expiry index and the move of expired values to
//! `_expired/<ns>`, hourly stats and their bounds, tag merging, namespace counts, value
//! formats, bounded rounds for large deletes and sweeps, and feeders' markers. A backend only
//! implements the small [`Engine`] trait (see [`crate::engine`] for what it must keep atomic).
//!
//! ## Key layout (one ordered map per [`Space`])
//! - [`Space::Sightings`]: `<namespace> 0x00 <stored value>` → [`Record`] (binary, see
//!   `record`). Namespaces never contain control characters, so the `0x00` separator makes a
//!   namespace's values one contiguous, ordered key range (`a` and `a/b` never interleave).
//!   `_all` is stored like any namespace: its record for a value counts the non-private
//!   namespaces holding it, which is the value's consensus.
//! - [`Space::Counts`]: `<namespace>` → live value count (u64 LE). Makes `?count` O(1) and
//!   "Path not found" one point read.
//! - [`Space::Formats`]: `<namespace>` → value-format tag (only non-RAW namespaces are stored;
//!   they are loaded into memory at start, which is the only thing start-up reads).
//! - [`Space::Expiry`]: `<expires_at: i64, order-preserving BE> <namespace> 0x00 <value>` →
//!   empty. An index of values with a TTL in expiry order, so expired values are found
//!   without a scan; the earliest expiry is cached in memory, so a read checks one atomic.
//! - [`Space::Markers`]: feeders' progress markers, written in the same batch as their
//!   sightings.
//!
//! ## Write path
//! A single writer mutex serialises read-modify-write within this process. Under it, a batch
//! of sightings is applied to an in-memory overlay (so a batch sees its own writes), then
//! handed to the engine as one [`Batch`]. The lock is released and the caller waits on the
//! ticket. On an engine that several processes share ([`Engine::checks_priors`]), each
//! record write carries what was read, the engine reports the values another process changed
//! in between, and the operations on those values are run again on fresh reads (at most
//! `MAX_ATTEMPTS` times, with a short random backoff, then [`Error::Contended`]); a
//! feeder's markers go with the attempt in which nothing conflicted.
//!
//! ## In-memory state and other front ends
//! Three things are kept in memory per process. On a shared engine: the **earliest expiry**
//! only triggers sweeps early (a value another front end gave a shorter TTL is moved by the
//! periodic sweep, which reads the engine's index, so within `sweep_interval`); the **value
//! formats** are re-read from the engine by every periodic sweep (a `/c` on another front
//! end is seen here within `sweep_interval`; set formats in the configuration of every front
//! end to have them from the start); **digest lookups** come from the configuration only.
//!
//! ## Durability contract (the sightings half)
//! - **An acknowledged write is durable.** Every mutating call returns a [`Ticket`]; the HTTP
//!   layer (and every feeder) answers a client only after [`Durability::wait`] returned for
//!   it. With [`crate::fjall_store::FjallEngine`] that is the group commit: the batch is in
//!   fjall's journal buffer when `apply` returns, and one background `fdatasync` covers every
//!   ticket issued before it, so concurrent writers share fsyncs. A failed fsync poisons the
//!   store: waits and later writes fail with [`crate::Error::Poisoned`] until a restart.
//! - **Writes are visible before they are durable.** Readers see a batch as soon as the
//!   engine applied it, before its fsync. That is fine because nobody was told it succeeded
//!   yet: the writer's answer waits for the fsync, so a crash can only lose writes that were
//!   never acknowledged. (A reader may have seen such a write; it behaves as if the write
//!   had failed, which the client of the write was not told otherwise either.) Shadow
//!   sightings and sweeps are not waited for: they become durable with the next group commit.
//! - **What survives a crash** is every acknowledged write, whole: fjall applies each batch
//!   atomically and replays its journal at open. What a non-transactional engine may show
//!   after a crash is listed in [`crate::engine`].
//! - **[`MemEngine`](crate::engine::MemEngine)** promises nothing across restarts: it keeps
//!   nothing on disk, its tickets need no wait, and a new instance starts empty.

use crate::engine::{Batch, Engine, Group, RecordWrite, Space};
use crate::error::{Error, ItemError, Result};
use crate::format::ValueFormat;
use crate::namespace::Namespace;
use crate::record::Record;
use crate::store::{
    key_order, value_fits, Durability, Limits, ListPage, NamespaceInfo, ReadOutcome, SightingStore,
    View, WriteOp, WriteOutcome, MAX_VALUE_LEN,
};
use rustc_hash::FxHashMap;
use sighthub_storage::Ticket;
use std::collections::{HashMap, HashSet};
use std::ops::{Bound, ControlFlow};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};

/// Tunables of a sighting store: the rules' options, and the fjall engine's sizes.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Block cache size in bytes (the data set may be much larger). Fjall engine only.
    pub cache_bytes: u64,
    /// Size at which the `sightings` memtable is sealed and flushed to a table. Larger: fewer
    /// flushes and compactions (each briefly blocks readers of the keyspace), more memory and
    /// a longer journal replay after a crash. Fjall engine only.
    pub memtable_bytes: u64,
    /// Active journal size from which it is sealed in the background, so a restart after a
    /// crash replays at most about this much ([`sighthub_storage::journal::Rotator`]; each
    /// seal writes filler up to fjall's 64 MB rotation size); 0: never (a crash restart then
    /// replays up to 64 MB). Fjall engine only.
    pub journal_rotate_bytes: u64,
    /// Hourly stats buckets kept per value, counted back from the newest (0 = all).
    pub stats_retention_hours: u64,
    /// TTL given to shadow sightings (0 = forever).
    pub shadow_ttl: u64,
    /// Whether reads raise shadow sightings at all.
    pub shadow: bool,
    /// Bounds on tags and stats per write and per value.
    pub limits: Limits,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            memtable_bytes: 16 * 1024 * 1024,
            journal_rotate_bytes: sighthub_storage::journal::ROTATE_FROM,
            stats_retention_hours: 0,
            shadow_ttl: 0,
            shadow: true,
            limits: Limits::default(),
        }
    }
}

/// A sighting store: the rules of the module docs over the engine `E`.
pub struct Sightings<E: Engine> {
    engine: E,
    /// Serialises read-modify-write; never held across an await.
    writer: Mutex<()>,
    /// Non-RAW value formats, by namespace. Small: only configured namespaces.
    formats: RwLock<HashMap<String, ValueFormat>>,
    /// False while no namespace has a non-RAW format: skips the lock on every value.
    any_format: AtomicBool,
    /// SHA256 namespaces whose lookups take a 64-hex value as the digest itself
    /// ([`ValueFormat::encode_lookup`]); set from the configuration at each start.
    digest_lookups: RwLock<HashSet<String>>,
    /// Earliest `expires_at` in the expiry index (`i64::MAX` when empty).
    next_expiry: AtomicI64,
    opts: StoreOptions,
}

/// Most values one hold of the writer lock sweeps or deletes: larger jobs go in rounds.
const ROUND: usize = 10_000;

/// Pending changes of one batch, read back before they are committed. FxHash: these maps are
/// private to one batch and keyed by data the server already accepted.
#[derive(Default)]
struct Overlay {
    records: FxHashMap<Vec<u8>, Option<Record>>,
    /// What each record was when first read from the engine (only for an engine that
    /// checks priors, [`Engine::checks_priors`]).
    priors: FxHashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Records read ahead in one call ([`Engine::get_many`]) for a bulk write on a remote
    /// engine, taken by the first read of each.
    fetched: FxHashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Count increments: (stored value, namespace) → delta.
    counts: FxHashMap<(String, String), i64>,
    expiry: FxHashMap<Vec<u8>, bool>,
    min_expiry: Option<i64>,
    markers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Overlay {
    /// Sized for `n` sightings (each may touch its record and its `_all` record).
    fn for_ops(n: usize) -> Self {
        let mut ov = Self::default();
        ov.records.reserve(n.saturating_mul(2));
        ov
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.counts.is_empty()
            && self.expiry.is_empty()
            && self.markers.is_empty()
    }

    /// The engine batch (see [`crate::engine::Batch`]): expiry insertions, then one group per
    /// stored value with its records (and what they were when read), its count increments
    /// and its expiry removals, then markers.
    fn into_batch(mut self) -> Batch {
        let mut groups: std::collections::BTreeMap<Vec<u8>, Group> = Default::default();
        fn group<'g>(
            groups: &'g mut std::collections::BTreeMap<Vec<u8>, Group>,
            value: &[u8],
        ) -> &'g mut Group {
            groups.entry(value.to_vec()).or_insert_with(|| Group {
                value: value.to_vec(),
                ..Group::default()
            })
        }
        let mut expiry_added = Vec::new();
        for (k, present) in self.expiry {
            if present {
                expiry_added.push(k);
            } else if let Some((_, v)) = k.get(8..).and_then(split_skey_bytes) {
                group(&mut groups, v).expiry_removed.push(k);
            }
        }
        for (k, r) in self.records {
            let Some((_, v)) = split_skey_bytes(&k) else {
                continue;
            };
            let prior = self.priors.remove(&k);
            let g = group(&mut groups, v);
            g.records.push(RecordWrite {
                value: r.map(|r| r.encode()),
                prior,
                key: k,
            });
        }
        for ((stored, ns), d) in self.counts {
            if d != 0 {
                group(&mut groups, stored.as_bytes())
                    .counts
                    .push((ns.into_bytes(), d));
            }
        }
        let mut groups: Vec<Group> = groups.into_values().collect();
        for g in &mut groups {
            g.records.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        }
        Batch {
            expiry_added,
            groups,
            formats: Vec::new(),
            markers: self.markers,
        }
    }
}

/// Splits a sightings key into namespace and stored value bytes.
fn split_skey_bytes(k: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = k.iter().position(|&b| b == 0)?;
    Some((k.get(..i)?, k.get(i + 1..)?))
}

/// How many times one operation is re-run on fresh reads when another process keeps
/// changing the same value, before [`Error::Contended`].
const MAX_ATTEMPTS: usize = 32;

/// Before re-running after a conflict: a short random pause that grows with the attempts
/// (at most about 2 ms), so two front ends racing on one value stop colliding in step.
fn backoff(attempt: usize) {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(attempt);
    let cap = 50u64 << attempt.min(5);
    std::thread::sleep(std::time::Duration::from_micros(h.finish() % cap));
}

/// What [`Sightings::commit_overlay`] did: the ticket, and the stored values whose changes
/// were not written because another process changed them first.
struct Committed {
    ticket: Ticket,
    conflicts: HashSet<String>,
}

fn skey(ns: &str, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + 1 + value.len());
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k
}

/// The first key after every key of namespace `ns` in [`Space::Sightings`].
fn ns_end(ns: &str) -> Vec<u8> {
    let mut end = ns.as_bytes().to_vec();
    end.push(1);
    end
}

/// The range bound of a listing cursor: a stored value never exceeds the BASE64URL length of
/// [`MAX_VALUE_LEN`] bytes, so a longer cursor is cut to that length. This selects exactly the
/// same values (no stored value can extend the cut part) and keeps the bound under the
/// engine's key limit.
fn cursor_key(ns: &str, after: &str) -> Vec<u8> {
    let max_stored = MAX_VALUE_LEN.div_ceil(3) * 4;
    let after = after.as_bytes();
    let cut = after.get(..max_stored).unwrap_or(after);
    let mut k = Vec::with_capacity(ns.len() + 1 + cut.len());
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(cut);
    k
}

fn ekey(at: i64, skey: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + skey.len());
    k.extend_from_slice(&((at as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(skey);
    k
}

fn ekey_time(k: &[u8]) -> Option<i64> {
    let b: [u8; 8] = k.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

/// Splits a sightings key back into namespace and stored value.
fn split_skey(k: &[u8]) -> Option<(&str, &str)> {
    let i = k.iter().position(|&b| b == 0)?;
    let ns = std::str::from_utf8(k.get(..i)?).ok()?;
    let v = std::str::from_utf8(k.get(i + 1..)?).ok()?;
    Some((ns, v))
}

fn decode_count(v: &[u8]) -> u64 {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<E: Engine> Sightings<E> {
    /// The store over `engine`. Reads only the small formats space and the first key of the
    /// expiry index, so start-up time does not grow with the data set.
    pub fn new(engine: E, opts: StoreOptions) -> Result<Self> {
        let formats = Self::read_formats(&engine)?;
        let next_expiry = Self::first_expiry(&engine)?.ok_or(Error::Corrupt("expiry key"))?;
        Ok(Self {
            engine,
            writer: Mutex::new(()),
            any_format: AtomicBool::new(!formats.is_empty()),
            formats: RwLock::new(formats),
            digest_lookups: RwLock::new(HashSet::new()),
            next_expiry: AtomicI64::new(next_expiry),
            opts,
        })
    }

    /// Every non-RAW value format the engine holds.
    fn read_formats(engine: &E) -> Result<HashMap<String, ValueFormat>> {
        let mut formats = HashMap::new();
        engine.scan(
            Space::Formats,
            Bound::Unbounded,
            Bound::Unbounded,
            usize::MAX,
            |k, v| {
                let ns = String::from_utf8(k.to_vec()).map_err(|_| Error::Corrupt("config key"))?;
                let f = v
                    .first()
                    .and_then(|t| ValueFormat::from_tag(*t))
                    .ok_or(Error::Corrupt("config value"))?;
                formats.insert(ns, f);
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(formats)
    }

    /// Replaces the in-memory value formats with the engine's.
    fn reload_formats(&self) -> Result<()> {
        let fresh = Self::read_formats(&self.engine)?;
        let mut formats = self
            .formats
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.any_format.store(!fresh.is_empty(), Ordering::Release);
        *formats = fresh;
        Ok(())
    }

    /// The engine underneath.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Makes everything durable and leaves the engine ready for a fast next start
    /// ([`Engine::close`]). Used at a clean shutdown; a crash skips it and is still safe.
    pub fn close(&self) -> Result<()> {
        self.engine.close()
    }

    /// The earliest time in the expiry index (`i64::MAX` when empty); `None` when its first
    /// key does not decode.
    fn first_expiry(engine: &E) -> Result<Option<i64>> {
        let mut first = Some(i64::MAX);
        engine.scan(
            Space::Expiry,
            Bound::Unbounded,
            Bound::Unbounded,
            1,
            |k, _| {
                first = ekey_time(k);
                Ok(ControlFlow::Break(()))
            },
        )?;
        Ok(first)
    }

    fn format_of(&self, ns: &str) -> ValueFormat {
        if !self.any_format.load(Ordering::Acquire) {
            return ValueFormat::Raw;
        }
        self.formats
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(ns)
            .copied()
            .unwrap_or_default()
    }

    fn stored_value<'v>(&self, ns: &Namespace, raw: &'v str) -> std::borrow::Cow<'v, str> {
        self.format_of(ns.format_owner()).encode(raw)
    }

    /// The stored form of a value that is looked up in `ns` (or whose lookup a shadow
    /// sighting records): [`ValueFormat::encode_lookup`] with the namespace's digest setting.
    fn lookup_value<'v>(&self, ns: &Namespace, raw: &'v str) -> std::borrow::Cow<'v, str> {
        let owner = ns.format_owner();
        match self.format_of(owner) {
            ValueFormat::Raw => std::borrow::Cow::Borrowed(raw),
            f => {
                let digests = self
                    .digest_lookups
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .contains(owner);
                f.encode_lookup(raw, digests)
            }
        }
    }

    fn get_record(&self, ov: &mut Overlay, key: &[u8]) -> Result<Option<Record>> {
        if let Some(r) = ov.records.get(key) {
            return Ok(r.clone());
        }
        if let Some(raw) = ov.fetched.remove(key) {
            let rec = raw.as_deref().map(Record::decode).transpose()?;
            if self.engine.checks_priors() {
                ov.priors.entry(key.to_vec()).or_insert(raw);
            }
            return Ok(rec);
        }
        let raw = self.engine.get(Space::Sightings, key)?;
        let rec = match &raw {
            Some(v) => Some(Record::decode(v.as_ref())?),
            None => None,
        };
        if self.engine.checks_priors() {
            ov.priors
                .entry(key.to_vec())
                .or_insert_with(|| raw.map(|v| v.as_ref().to_vec()));
        }
        Ok(rec)
    }

    /// Notes what a record was when the caller read it some other way (a scan), for an
    /// engine that checks priors.
    fn saw_record(&self, ov: &mut Overlay, key: &[u8], raw: &[u8]) {
        if self.engine.checks_priors() {
            ov.priors
                .entry(key.to_vec())
                .or_insert_with(|| Some(raw.to_vec()));
        }
    }

    fn stored_count(&self, ns: &str) -> Result<Option<u64>> {
        Ok(self
            .engine
            .get(Space::Counts, ns.as_bytes())?
            .map(|v| decode_count(v.as_ref())))
    }

    fn has_namespace(&self, ns: &str) -> Result<bool> {
        self.engine.contains(Space::Counts, ns.as_bytes())
    }

    /// Counts `delta` values in or out of `ns`, with the group of the stored value that
    /// caused it (applied only if that group is).
    fn add_count(ov: &mut Overlay, ns: &str, stored: &str, delta: i64) {
        let c = ov
            .counts
            .entry((stored.to_owned(), ns.to_owned()))
            .or_insert(0);
        *c = c.saturating_add(delta);
    }

    fn consensus(&self, stored: &str) -> Result<u64> {
        Ok(self
            .engine
            .get(Space::Sightings, &skey(crate::namespace::ALL, stored))?
            .map(|v| Record::decode(v.as_ref()))
            .transpose()?
            .map_or(0, |r| r.count))
    }

    /// Sets the expiry index entry of `key` from `old` to `new`.
    fn reindex(ov: &mut Overlay, key: &[u8], old: Option<i64>, new: Option<i64>) {
        if old == new {
            return;
        }
        if let Some(at) = old {
            ov.expiry.insert(ekey(at, key), false);
        }
        if let Some(at) = new {
            ov.expiry.insert(ekey(at, key), true);
            ov.min_expiry = Some(ov.min_expiry.map_or(at, |m| m.min(at)));
        }
    }

    /// Keeps a record's stats within the retention and the bucket bound.
    fn trim(&self, rec: &mut Record) {
        rec.trim_stats(self.opts.stats_retention_hours);
        rec.cap_stats(self.opts.limits.max_stats_buckets);
    }

    /// On a remote engine, reads every record a bulk write will read (each value's record and
    /// its `_all` record) in one call, instead of one round trip per item.
    fn read_ahead(
        &self,
        ov: &mut Overlay,
        writes: &[WriteOp<'_>],
        pending: &Option<HashSet<String>>,
    ) -> Result<()> {
        if writes.len() < 2 || !self.engine.checks_priors() {
            return Ok(());
        }
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(writes.len() * 2);
        for op in writes {
            if op.check(&self.opts.limits).is_err() {
                continue;
            }
            let stored = self.op_stored(op);
            if !Self::is_pending(pending, &stored) {
                continue;
            }
            keys.push(skey(op.namespace.as_str(), &stored));
            if !op.namespace.is_internal() {
                keys.push(skey(crate::namespace::ALL, &stored));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let values = self.engine.get_many(Space::Sightings, &keys)?;
        for (k, v) in keys.into_iter().zip(values) {
            ov.fetched.insert(k, v.map(|v| v.as_ref().to_vec()));
        }
        Ok(())
    }

    /// Whether an operation on `stored` is to be (re-)run: on the first attempt every one is
    /// (`None`), then only those on the values that conflicted.
    fn is_pending(pending: &Option<HashSet<String>>, stored: &str) -> bool {
        pending.as_ref().is_none_or(|p| p.contains(stored))
    }

    /// The stored form of an operation's value: a shadow sighting records a lookup, so it
    /// keeps what was looked up; a write keeps the namespace's format of the value.
    fn op_stored<'v>(&self, op: &WriteOp<'v>) -> std::borrow::Cow<'v, str> {
        if op
            .namespace
            .as_str()
            .starts_with(crate::namespace::SHADOW_PREFIX)
        {
            self.lookup_value(op.namespace, op.value)
        } else {
            self.stored_value(op.namespace, op.value)
        }
    }

    /// Applies one sighting (the item's own checks already done) to the overlay. Refused
    /// (and nothing changed) when its tags would take the value over
    /// [`Limits::max_tags_per_value`]. Bounded work: tags and stats are bounded per item and
    /// per value, and merging is linear.
    fn apply(
        &self,
        ov: &mut Overlay,
        op: &WriteOp<'_>,
    ) -> Result<std::result::Result<WriteOutcome, ItemError>> {
        let ns = op.namespace.as_str();
        let stored = self.op_stored(op);
        let key = skey(ns, &stored);
        let existing = self.get_record(ov, &key)?;
        let new = existing.is_none();
        let mut rec = existing.unwrap_or_default();
        if let Some(tags) = op.tags {
            let merged = crate::record::merge_tags(&rec.tags, tags);
            let max = self.opts.limits.max_tags_per_value;
            if merged != rec.tags && crate::record::split_tags(&merged).count() > max {
                return Ok(Err(ItemError::TooManyTagsOnValue(max)));
            }
            rec.tags = merged;
        }
        let old_exp = rec.expires_at();
        rec.sight(op.timestamp, 1);
        if let Some(ttl) = op.ttl {
            rec.ttl = ttl;
        }
        self.trim(&mut rec);
        Self::reindex(ov, &key, old_exp, rec.expires_at());
        let outcome = WriteOutcome {
            count: rec.count,
            new,
        };
        ov.records.insert(key, Some(rec));
        if new {
            self.count_new_value(ov, op.namespace, &stored, op.timestamp)?;
        }
        Ok(Ok(outcome))
    }

    /// A value just arrived in `ns`: the namespace count, and in a public namespace the
    /// value's consensus (`_all`, seen at `ts`). The one place a new value is counted, for
    /// writes and imports alike.
    fn count_new_value(
        &self,
        ov: &mut Overlay,
        ns: &Namespace,
        stored: &str,
        ts: i64,
    ) -> Result<()> {
        Self::add_count(ov, ns.as_str(), stored, 1);
        if !ns.is_internal() {
            let all_key = skey(crate::namespace::ALL, stored);
            let all = self.get_record(ov, &all_key)?;
            if all.is_none() {
                Self::add_count(ov, crate::namespace::ALL, stored, 1);
            }
            let mut all = all.unwrap_or_default();
            all.sight(ts, 1);
            self.trim(&mut all);
            ov.records.insert(all_key, Some(all));
        }
        Ok(())
    }

    /// Removes a value from its namespace, giving back its consensus. The caller decides
    /// where the record goes (deleted, or moved to `_expired`).
    fn remove_value(&self, ov: &mut Overlay, ns: &str, stored: &str, rec: &Record) -> Result<()> {
        let key = skey(ns, stored);
        Self::reindex(ov, &key, rec.expires_at(), None);
        ov.records.insert(key, None);
        Self::add_count(ov, ns, stored, -1);
        if !ns.starts_with('_') {
            let all_key = skey(crate::namespace::ALL, stored);
            if let Some(mut all) = self.get_record(ov, &all_key)? {
                all.count = all.count.saturating_sub(1);
                if all.count == 0 {
                    ov.records.insert(all_key, None);
                    Self::add_count(ov, crate::namespace::ALL, stored, -1);
                } else {
                    ov.records.insert(all_key, Some(all));
                }
            }
        }
        Ok(())
    }

    /// Takes one sighting back out of a value (see `SightingStore::apply_marked`).
    fn retract(&self, ov: &mut Overlay, ns: &Namespace, raw: &str) -> Result<()> {
        if !value_fits(raw) {
            return Ok(()); // never stored, so nothing to take back
        }
        let stored = self.stored_value(ns, raw).into_owned();
        let key = skey(ns.as_str(), &stored);
        let Some(mut rec) = self.get_record(ov, &key)? else {
            return Ok(());
        };
        if rec.count <= 1 {
            return self.remove_value(ov, ns.as_str(), &stored, &rec);
        }
        rec.count -= 1;
        ov.records.insert(key, Some(rec));
        Ok(())
    }

    /// Hands an overlay to the engine as one batch and gives back its ticket and the stored
    /// values another process changed first (their changes were not written; the caller
    /// re-runs its operations on them).
    fn commit_overlay(&self, ov: Overlay) -> Result<Committed> {
        if ov.is_empty() {
            return Ok(Committed {
                ticket: Ticket::NONE,
                conflicts: HashSet::new(),
            });
        }
        let min_expiry = ov.min_expiry;
        let applied = self.engine.apply(ov.into_batch())?;
        if let Some(m) = min_expiry {
            self.next_expiry.fetch_min(m, Ordering::AcqRel);
        }
        let conflicts = applied
            .conflicts
            .into_iter()
            .filter_map(|v| String::from_utf8(v).ok())
            .collect();
        Ok(Committed {
            ticket: applied.ticket,
            conflicts,
        })
    }

    /// Sweeps if the earliest expiry is due. Cheap when nothing is due (one atomic load); each
    /// round takes the writer lock for at most [`ROUND`] values.
    fn sweep_if_due(&self, now: i64) -> Result<()> {
        if now >= self.next_expiry.load(Ordering::Acquire) {
            self.sweep_rounds(now)?;
        }
        Ok(())
    }

    /// Sweeps everything due, one bounded round per hold of the writer lock, so writers and
    /// readers get in between rounds.
    fn sweep_rounds(&self, now: i64) -> Result<usize> {
        let mut moved = 0;
        let mut contended = 0;
        loop {
            let _guard = lock(&self.writer);
            let (n, more, conflicts) = self.sweep_round(now)?;
            moved += n;
            // A round whose values another process changed meanwhile is run again on fresh
            // reads; a value that keeps changing is left to the next sweep.
            contended = if conflicts { contended + 1 } else { 0 };
            if !more || contended >= MAX_ATTEMPTS {
                return Ok(moved);
            }
            if conflicts {
                backoff(contended);
            }
        }
    }

    /// One round of the sweep under the writer lock (held by the caller): moves at most
    /// [`ROUND`] due values to `_expired/<ns>`. Returns how many, whether more are due, and
    /// whether another process changed some of them first (those were not moved).
    fn sweep_round(&self, now: i64) -> Result<(usize, bool, bool)> {
        let mut conflicted = false;
        let mut moved: usize = 0;
        let mut due: Vec<Vec<u8>> = Vec::new();
        self.engine.scan(
            Space::Expiry,
            Bound::Unbounded,
            Bound::Excluded(&ekey(now.saturating_add(1), &[])),
            ROUND,
            |k, _| {
                due.push(k.to_vec());
                Ok(ControlFlow::Continue(()))
            },
        )?;
        if !due.is_empty() {
            let mut ov = Overlay::default();
            for ek in &due {
                ov.expiry.insert(ek.clone(), false);
                let Some(skey_bytes) = ek.get(8..) else {
                    continue;
                };
                let Some((ns, stored)) = split_skey(skey_bytes) else {
                    continue;
                };
                let Some(rec) = self.get_record(&mut ov, skey_bytes)? else {
                    continue;
                };
                if !rec.is_expired(now) {
                    continue; // stale index entry; the live one is elsewhere in the index
                }
                let (ns, stored) = (ns.to_owned(), stored.to_owned());
                self.remove_value(&mut ov, &ns, &stored, &rec)?;
                if !ns.starts_with('_') {
                    let ns_parsed = Namespace::from_stored(ns);
                    let exp_key = skey(ns_parsed.expired().as_str(), &stored);
                    let existing = self.get_record(&mut ov, &exp_key)?;
                    if existing.is_none() {
                        Self::add_count(&mut ov, ns_parsed.expired().as_str(), &stored, 1);
                    }
                    let mut moved_rec = existing.unwrap_or_default();
                    moved_rec.absorb(&rec);
                    moved_rec.ttl = 0;
                    self.trim(&mut moved_rec);
                    ov.records.insert(exp_key, Some(moved_rec));
                }
                moved += 1;
            }
            let done = self.commit_overlay(ov)?;
            conflicted = !done.conflicts.is_empty();
            moved = moved.saturating_sub(done.conflicts.len());
        }
        let next = Self::first_expiry(&self.engine)?.unwrap_or(i64::MAX);
        self.next_expiry.store(next, Ordering::Release);
        Ok((moved, next <= now, conflicted))
    }

    fn view(&self, stored: &str, rec: Record) -> Result<View> {
        Ok(View {
            value: stored.to_owned(),
            consensus: self.consensus(stored)?,
            record: rec,
        })
    }
}

impl<E: Engine> SightingStore for Sightings<E> {
    fn write(
        &self,
        ops: &[WriteOp<'_>],
        now: i64,
    ) -> Result<(Vec<std::result::Result<WriteOutcome, ItemError>>, Ticket)> {
        self.apply_marked(ops, &[], &[], now)
    }

    fn shadow(&self, reads: &[(&Namespace, &str)], now: i64) -> Result<()> {
        if !self.opts.shadow || reads.is_empty() {
            return Ok(());
        }
        let shadows: Vec<Namespace> = reads.iter().map(|(ns, _)| ns.shadow()).collect();
        let ttl = (self.opts.shadow_ttl > 0).then_some(self.opts.shadow_ttl);
        let _guard = lock(&self.writer);
        let mut pending: Option<HashSet<String>> = None;
        for attempt in 0..MAX_ATTEMPTS {
            let mut ov = Overlay::default();
            for (shadow_ns, (_, value)) in shadows.iter().zip(reads) {
                // An over-long value was never stored, so its read records nothing either.
                if value.is_empty() || !value_fits(value) {
                    continue;
                }
                let op = WriteOp {
                    namespace: shadow_ns,
                    value,
                    timestamp: now,
                    ttl,
                    tags: None,
                };
                if !Self::is_pending(&pending, &self.op_stored(&op)) {
                    continue;
                }
                // Shadow sightings carry no tags, so they are never refused.
                let _ = self.apply(&mut ov, &op)?;
            }
            let done = self.commit_overlay(ov)?;
            if done.conflicts.is_empty() {
                return Ok(());
            }
            pending = Some(done.conflicts);
            backoff(attempt);
        }
        Err(Error::Contended)
    }

    fn read(&self, namespace: &Namespace, value: &str, now: i64) -> Result<ReadOutcome> {
        self.sweep_if_due(now)?;
        if !value_fits(value) {
            // Never stored: answer as for any absent value, without building the key.
            return Ok(if self.has_namespace(namespace.as_str())? {
                ReadOutcome::NoValue
            } else {
                ReadOutcome::NoNamespace
            });
        }
        let stored = self.lookup_value(namespace, value);
        match self
            .engine
            .get(Space::Sightings, &skey(namespace.as_str(), &stored))?
        {
            Some(v) => Ok(ReadOutcome::Found(
                self.view(&stored, Record::decode(v.as_ref())?)?,
            )),
            None if self.has_namespace(namespace.as_str())? => Ok(ReadOutcome::NoValue),
            None => Ok(ReadOutcome::NoNamespace),
        }
    }

    /// Only on an engine with [`Engine::local_reads`], and only when no sweep is due (a read
    /// sweeps first, which writes): then the read is two point gets (the record and its
    /// consensus) and a decode.
    fn read_now(
        &self,
        namespace: &Namespace,
        value: &str,
        now: i64,
    ) -> Option<Result<ReadOutcome>> {
        if !self.engine.local_reads() || now >= self.next_expiry.load(Ordering::Acquire) {
            return None;
        }
        Some(self.read(namespace, value, now))
    }

    fn list(
        &self,
        namespace: &Namespace,
        after: Option<&str>,
        limit: usize,
        max_bytes: usize,
        now: i64,
    ) -> Result<Option<ListPage>> {
        self.sweep_if_due(now)?;
        if !self.has_namespace(namespace.as_str())? {
            return Ok(None);
        }
        let ns = namespace.as_str();
        let start = match after {
            Some(a) => cursor_key(ns, a),
            None => skey(ns, ""),
        };
        let start = match after {
            Some(_) => Bound::Excluded(start.as_slice()),
            None => Bound::Included(start.as_slice()),
        };
        let end = ns_end(ns);
        let mut items = Vec::new();
        let mut more = false;
        let mut bytes = 0usize;
        // One more than the page: it tells whether more may follow.
        self.engine.scan(
            Space::Sightings,
            start,
            Bound::Excluded(&end),
            limit.saturating_add(1),
            |k, v| {
                if items.len() >= limit || (!items.is_empty() && bytes >= max_bytes) {
                    more = true;
                    return Ok(ControlFlow::Break(()));
                }
                let (_, stored) = split_skey(k).ok_or(Error::Corrupt("sightings key"))?;
                let rec = Record::decode(v)?;
                bytes = bytes.saturating_add(rec.approx_bytes(stored.len()));
                items.push(View {
                    value: stored.to_owned(),
                    consensus: 0,
                    record: rec,
                });
                Ok(ControlFlow::Continue(()))
            },
        )?;
        // The page's consensus records in one call (one round trip on a remote engine).
        let all_keys: Vec<Vec<u8>> = items
            .iter()
            .map(|v| skey(crate::namespace::ALL, &v.value))
            .collect();
        for (view, all) in items
            .iter_mut()
            .zip(self.engine.get_many(Space::Sightings, &all_keys)?)
        {
            view.consensus = all
                .map(|v| Record::decode(v.as_ref()))
                .transpose()?
                .map_or(0, |r| r.count);
        }
        let next = if more {
            items.last().map(|v| v.value.clone())
        } else {
            None
        };
        Ok(Some(ListPage { items, next }))
    }

    fn count(&self, namespace: &Namespace, now: i64) -> Result<Option<u64>> {
        self.sweep_if_due(now)?;
        self.stored_count(namespace.as_str())
    }

    fn delete(&self, namespace: &Namespace, now: i64) -> Result<(bool, Ticket)> {
        self.sweep_if_due(now)?;
        let ns = namespace.as_str();
        let end = ns_end(ns);
        let mut start = skey(ns, "");
        let mut start_included = true;
        let mut ticket = Ticket::NONE;
        let mut round = 0usize;
        let mut contended = 0;
        // In rounds of at most ROUND values, each one atomic batch under one hold of the
        // writer lock, so a large namespace never holds every other writer for long. A value
        // written behind the cursor while the delete runs is kept (it came after the delete).
        // A round in which another process changed some values is run again from the same
        // place, on fresh reads.
        loop {
            let _guard = lock(&self.writer);
            if round == 0 && !self.has_namespace(ns)? {
                return Ok((false, Ticket::NONE));
            }
            round += 1;
            let mut ov = Overlay::default();
            let mut last = None;
            let mut n = 0;
            let from = if start_included {
                Bound::Included(start.as_slice())
            } else {
                Bound::Excluded(start.as_slice())
            };
            self.engine.scan(
                Space::Sightings,
                from,
                Bound::Excluded(&end),
                ROUND,
                |k, v| {
                    let rec = Record::decode(v)?;
                    let (_, stored) = split_skey(k).ok_or(Error::Corrupt("sightings key"))?;
                    self.saw_record(&mut ov, k, v);
                    self.remove_value(&mut ov, ns, stored, &rec)?;
                    last = Some(k.to_vec());
                    n += 1;
                    Ok(ControlFlow::Continue(()))
                },
            )?;
            let done = self.commit_overlay(ov)?;
            if done.ticket != Ticket::NONE {
                ticket = done.ticket;
            }
            if !done.conflicts.is_empty() {
                contended += 1;
                if contended >= MAX_ATTEMPTS {
                    return Err(Error::Contended);
                }
                backoff(contended);
                continue;
            }
            contended = 0;
            match last {
                Some(k) if n == ROUND => {
                    start = k;
                    start_included = false;
                }
                _ => return Ok((true, ticket)),
            }
        }
    }

    fn namespaces(&self) -> Result<Vec<NamespaceInfo>> {
        let mut out = Vec::new();
        self.engine.scan(
            Space::Counts,
            Bound::Unbounded,
            Bound::Unbounded,
            usize::MAX,
            |k, v| {
                let ns =
                    String::from_utf8(k.to_vec()).map_err(|_| Error::Corrupt("namespace key"))?;
                out.push(NamespaceInfo {
                    namespace: Namespace::from_stored(ns),
                    values: decode_count(v),
                });
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(out)
    }

    fn format(&self, namespace: &Namespace) -> ValueFormat {
        self.format_of(namespace.format_owner())
    }

    fn set_format(&self, namespace: &Namespace, format: ValueFormat) -> Result<Ticket> {
        let _guard = lock(&self.writer);
        let ns = namespace.as_str();
        if self.format_of(ns) == format {
            return Ok(Ticket::NONE);
        }
        if self.stored_count(ns)?.unwrap_or(0) > 0 {
            return Err(Error::FormatConflict(ns.to_owned()));
        }
        let tag = (format != ValueFormat::Raw).then(|| vec![format.tag()]);
        let ticket = self
            .engine
            .apply(Batch {
                formats: vec![(ns.as_bytes().to_vec(), tag)],
                ..Batch::default()
            })?
            .ticket;
        let mut formats = self
            .formats
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if format == ValueFormat::Raw {
            formats.remove(ns);
        } else {
            formats.insert(ns.to_owned(), format);
        }
        self.any_format
            .store(!formats.is_empty(), Ordering::Release);
        Ok(ticket)
    }

    fn set_digest_lookups(&self, namespace: &Namespace, on: bool) {
        let mut set = self
            .digest_lookups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if on {
            set.insert(namespace.as_str().to_owned());
        } else {
            set.remove(namespace.as_str());
        }
    }

    fn sweep(&self, now: i64) -> Result<usize> {
        // The periodic sweep also re-reads the value formats, so a format another front end
        // set on a shared engine is seen here within one sweep interval.
        if self.engine.checks_priors() {
            self.reload_formats()?;
        }
        self.sweep_rounds(now)
    }

    fn apply_marked(
        &self,
        writes: &[WriteOp<'_>],
        retractions: &[(&Namespace, &str)],
        markers: &[(&[u8], &[u8])],
        now: i64,
    ) -> Result<(Vec<std::result::Result<WriteOutcome, ItemError>>, Ticket)> {
        // Expired values leave first (in rounds, the lock released in between); under the
        // lock, one more bounded round catches what fell due meanwhile.
        self.sweep_if_due(now)?;
        let _guard = lock(&self.writer);
        if now >= self.next_expiry.load(Ordering::Acquire) {
            self.sweep_round(now)?;
        }
        // Another process may change the same values between our reads and our batch (an
        // engine that checks priors says so): the operations on those values are run again
        // on fresh reads, and the markers go with the attempt in which nothing conflicted.
        let mut out: Vec<Option<std::result::Result<WriteOutcome, ItemError>>> =
            vec![None; writes.len()];
        let mut pending: Option<HashSet<String>> = None;
        let mut ticket = Ticket::NONE;
        for attempt in 0..MAX_ATTEMPTS {
            let mut ov = Overlay::for_ops(writes.len());
            self.read_ahead(&mut ov, writes, &pending)?;
            // Applied in key order (stable: repeats of one value keep their request order, so
            // every outcome is the same as in request order): neighbouring lookups then share
            // memtable nodes and table blocks in the CPU cache.
            for i in key_order(writes.len(), |i| {
                writes.get(i).map(|w| (w.namespace.as_str(), w.value))
            }) {
                let Some(op) = writes.get(i) else { continue };
                if pending.is_some() && !Self::is_pending(&pending, &self.op_stored(op)) {
                    continue;
                }
                let outcome = match op.check(&self.opts.limits) {
                    Ok(()) => self.apply(&mut ov, op)?,
                    Err(e) => Err(e),
                };
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(outcome);
                }
            }
            for (ns, value) in retractions {
                if !ns.is_internal()
                    && !value.is_empty()
                    && (pending.is_none()
                        || (value_fits(value)
                            && Self::is_pending(&pending, &self.stored_value(ns, value))))
                {
                    self.retract(&mut ov, ns, value)?;
                }
            }
            ov.markers = markers
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            let done = self.commit_overlay(ov)?;
            if done.ticket != Ticket::NONE {
                ticket = done.ticket;
            }
            if done.conflicts.is_empty() {
                let out = out
                    .into_iter()
                    .map(|o| o.unwrap_or(Err(ItemError::EmptyValue)))
                    .collect();
                return Ok((out, ticket));
            }
            pending = Some(done.conflicts);
            backoff(attempt);
        }
        Err(Error::Contended)
    }

    fn marker(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .engine
            .get(Space::Markers, key)?
            .map(|v| v.as_ref().to_vec()))
    }

    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        self.engine.lease(name, holder, ttl_ms)
    }

    fn holders(&self, value: &str, now: i64) -> Result<Vec<(Namespace, View)>> {
        self.sweep_if_due(now)?;
        let mut out = Vec::new();
        if !value_fits(value) {
            return Ok(out); // never stored anywhere
        }
        for info in self.namespaces()? {
            if info.namespace.is_internal() || info.values == 0 {
                continue;
            }
            let stored = self.lookup_value(&info.namespace, value);
            if let Some(v) = self
                .engine
                .get(Space::Sightings, &skey(info.namespace.as_str(), &stored))?
            {
                let view = self.view(&stored, Record::decode(v.as_ref())?)?;
                out.push((info.namespace, view));
            }
        }
        Ok(out)
    }

    fn limits(&self) -> &Limits {
        &self.opts.limits
    }

    fn engine_stats(&self) -> Option<sighthub_storage::EngineStats> {
        self.engine.engine_stats()
    }

    fn durability(&self) -> Durability<'_> {
        self.engine.durability()
    }
}

mod import;
pub use import::{ImportOutcome, Imported};

#[cfg(test)]
mod test;
