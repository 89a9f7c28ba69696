//! The key-value engine under the sighting rules: the small trait a backend implements.
//!
//! Everything that makes a sighting store - consensus (`_all`), `_shadow`, `_expired`, TTL and
//! the expiry index, hourly stats, tag merging, namespace counts, value formats - lives once,
//! above this trait, in [`crate::sightings::Sightings`]. An engine only stores bytes in a few
//! ordered key spaces ([`Space`]): point get, atomic apply of a [`Batch`] of puts and deletes,
//! an ordered range scan from a start key with a limit, a durability [`Ticket`] per applied
//! batch with an opaque way to wait for it ([`Durability`]), and close. Adapters:
//! [`crate::fjall_store::FjallEngine`] (embedded, durable), [`MemEngine`] (in memory), and
//! `sighthub_redis::RedisEngine` (a Redis Cluster shared by several front ends).
//!
//! ## Keys
//! The rules layer builds every key (see [`crate::sightings`] for the layout). A value's
//! records are `<namespace> 0x00 <stored value>` in [`Space::Sightings`], one per namespace
//! holding it plus `_all/` (its consensus), `_shadow/...` and `_expired/...` ones; namespace
//! counts are in [`Space::Counts`] and the expiry index in [`Space::Expiry`].
//!
//! ## Atomicity: what must be written together
//! The rules layer serialises its read-modify-writes with one writer lock per store, then
//! hands the engine one [`Batch`] per request (or per bounded round of a sweep or a delete).
//! An engine that applies a whole batch atomically (fjall: one write batch in the journal)
//! never shows a partial request. An engine that cannot (the Redis Cluster adapter,
//! `sighthub-redis`, where a script spans one hash slot only) must keep at least these
//! together:
//!
//! - **One value's group, atomic.** A [`Group`] holds every [`Space::Sightings`] write of a
//!   batch for one stored value (its record in every namespace, `_shadow`, `_expired`, and
//!   its `_all` consensus record), the namespace count increments they cause and the expiry
//!   entries they retire. Its records are applied all or nothing; its increments and expiry
//!   removals only if they were. This keeps a value's consensus equal to the number of
//!   public namespaces holding it, and a TTL move to `_expired` from losing or duplicating it.
//! - **Everything else, in order, each write on its own**: expiry index insertions first,
//!   then the groups, then formats, then markers — and markers only when no group
//!   conflicted.
//!
//! ## Several processes on one engine: compare-and-set
//! The writer lock protects one process only. An engine that several processes write says
//! so ([`Engine::checks_priors`]); the rules layer then gives each record write the bytes it
//! read ([`RecordWrite::prior`]), the engine applies a group only if every record is still
//! what was read, and reports the others ([`Applied::conflicts`]). The rules layer re-runs
//! its operations on those values on fresh reads (bounded, then `Error::Contended`, a 503),
//! so the sighting rules stay in one place and no rule runs inside the engine. Counts are
//! increments (`Group::counts`), never absolute values, so two processes adding values to
//! one namespace both count. Leases ([`Engine::lease`]) let one process of several run a
//! singleton job (the bridge).
//!
//! After a crash in the middle of a batch, a non-transactional engine may show:
//! - an expiry index entry whose record has another (or no) expiry: harmless, the sweep
//!   re-reads the record and skips stale entries (the index is written before the records,
//!   so a record with a TTL is never missing from it);
//! - namespace counts off by what the lost tail of the batch would have changed (`?count`
//!   and the namespace listing only; records and consensus are right);
//! - a feeder's sightings applied without its progress marker (markers come last), so that
//!   batch is applied again after the restart: at-least-once instead of exactly-once.
//!
//! ## Durability
//! The contract of the sightings half lives in one place: the module docs of
//! [`crate::sightings`].

use crate::error::{Error, Result};
use crate::store::Durability;
use sighthub_storage::Ticket;
use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};
use std::sync::RwLock;

/// The key spaces of a sighting store. Each is one ordered map from bytes to bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// `<namespace> 0x00 <stored value>` -> encoded [`crate::Record`].
    Sightings,
    /// `<namespace>` -> live value count (u64 LE).
    Counts,
    /// `<namespace>` -> value-format tag (non-RAW namespaces only).
    Formats,
    /// `<expires_at: order-preserving BE> <namespace> 0x00 <value>` -> empty.
    Expiry,
    /// Feeders' progress markers.
    Markers,
}

impl Space {
    /// Every space, in a fixed order (an index for engines that keep one map per space).
    pub const ALL: [Space; 5] = [
        Space::Sightings,
        Space::Counts,
        Space::Formats,
        Space::Expiry,
        Space::Markers,
    ];

    /// Position in [`Space::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One write of a batch outside the value groups: `Some(value)` puts, `None` deletes.
pub type Op = (Space, Vec<u8>, Option<Vec<u8>>);

/// One [`Space::Sightings`] write of a value group, with what the rules layer read of the
/// record before deciding it (compare-and-set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordWrite {
    /// `<namespace> 0x00 <stored value>`.
    pub key: Vec<u8>,
    /// The new record (`None` deletes it).
    pub value: Option<Vec<u8>>,
    /// What the record was when the rules layer read it: `Some(None)` absent, `Some(bytes)`
    /// those bytes, `None` not checked (the engine said it does not check, see
    /// [`Engine::checks_priors`]).
    pub prior: Option<Option<Vec<u8>>>,
}

/// Everything a batch does to one stored value: its records (every namespace holding it,
/// `_all`, `_shadow`, `_expired`), the namespace count changes they cause and the expiry
/// index entries they retire. An engine applies a group all or nothing, and only when every
/// record's `prior` still holds (when it checks priors); otherwise the group is reported as
/// a conflict ([`Applied::conflicts`]) and nothing of it is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// The stored value (the part of a record key after its `0x00`).
    pub value: Vec<u8>,
    /// Its record writes, in key order.
    pub records: Vec<RecordWrite>,
    /// Namespace count **increments** (`<namespace>`, delta), applied with the group.
    pub counts: Vec<(Vec<u8>, i64)>,
    /// Expiry index keys to delete once the records are written.
    pub expiry_removed: Vec<Vec<u8>>,
}

/// Puts and deletes to apply together, built by the rules layer, applied by
/// [`Engine::apply`]. A non-transactional engine applies them in this order: expiry index
/// insertions, the value groups (each atomic, with its counts and expiry removals), formats,
/// then markers — and the markers only when no group conflicted.
#[derive(Debug, Default)]
pub struct Batch {
    /// Expiry index keys to insert (before any record; harmless when a group conflicts: the
    /// sweep skips entries whose record says otherwise).
    pub expiry_added: Vec<Vec<u8>>,
    /// One group per stored value, in value order.
    pub groups: Vec<Group>,
    /// [`Space::Formats`] writes.
    pub formats: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// [`Space::Markers`] puts: written only when no group of the batch conflicted, so a
    /// feeder's marker never covers sightings that were not applied.
    pub markers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Batch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.expiry_added.is_empty()
            && self.groups.is_empty()
            && self.formats.is_empty()
            && self.markers.is_empty()
    }

    /// Every write in the order a transactional engine may apply them, with the counts
    /// summed per namespace (deltas) and the records in key order: `(space, key, value)`
    /// for puts and deletes, and `(namespace, delta)` for counts.
    pub fn flatten(self) -> Flat {
        let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut counts: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        let mut expiry_removed = Vec::new();
        for g in self.groups {
            records.extend(g.records.into_iter().map(|r| (r.key, r.value)));
            for (ns, d) in g.counts {
                let c = counts.entry(ns).or_insert(0);
                *c = c.saturating_add(d);
            }
            expiry_removed.extend(g.expiry_removed);
        }
        // In key order, so the engine's inserts walk its ordered structures forwards.
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut ops: Vec<Op> = self
            .expiry_added
            .into_iter()
            .map(|k| (Space::Expiry, k, Some(Vec::new())))
            .collect();
        ops.extend(records.into_iter().map(|(k, v)| (Space::Sightings, k, v)));
        ops.extend(expiry_removed.into_iter().map(|k| (Space::Expiry, k, None)));
        ops.extend(
            self.formats
                .into_iter()
                .map(|(k, v)| (Space::Formats, k, v)),
        );
        ops.extend(
            self.markers
                .into_iter()
                .map(|(k, v)| (Space::Markers, k, Some(v))),
        );
        Flat {
            ops,
            counts: counts.into_iter().filter(|(_, d)| *d != 0).collect(),
        }
    }
}

/// A [`Batch`] flattened for an engine that applies it whole ([`Batch::flatten`]).
#[derive(Debug, Default)]
pub struct Flat {
    /// Puts and deletes, in order.
    pub ops: Vec<Op>,
    /// Count increments per namespace: the engine adds each to the stored count (u64 LE) and
    /// removes the entry when the sum is zero or less.
    pub counts: Vec<(Vec<u8>, i64)>,
}

/// The count after adding `delta` to the stored `current` (u64 LE), `None` once it is zero:
/// how an engine that stores counts as bytes applies an increment.
pub fn add_to_count(current: Option<&[u8]>, delta: i64) -> Option<Vec<u8>> {
    let now = current
        .and_then(|v| v.get(..8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    let next = now.saturating_add_signed(delta);
    (next != 0).then(|| next.to_le_bytes().to_vec())
}

/// What [`Engine::apply`] did.
#[derive(Debug)]
pub struct Applied {
    /// Durable with this ticket.
    pub ticket: Ticket,
    /// Stored values whose group was not applied because a record changed since the rules
    /// layer read it (another process wrote it). Always empty for an engine that does not
    /// check priors. The rules layer re-runs the operations on these values.
    pub conflicts: Vec<Vec<u8>>,
}

/// An ordered key-value engine the sighting rules run on. See the module docs for what it
/// must keep atomic; implementations are shared between threads.
///
/// Methods are generic where a closure is passed (the scan visitor), so the rules layer is
/// monomorphised per engine: no dynamic dispatch per item.
pub trait Engine: Send + Sync + 'static {
    /// A value read back (borrowed from a cache or owned).
    type Value: AsRef<[u8]>;

    /// Whether a point read ([`Engine::get`]) is bounded local work (memory, or at most one
    /// block read per level of a local disk structure), cheap enough to answer on an async
    /// worker without handing it to a blocking thread ([`SightingStore::read_now`]). False
    /// (the default) for an engine that reads over the network.
    ///
    /// [`SightingStore::read_now`]: crate::store::SightingStore::read_now
    fn local_reads(&self) -> bool {
        false
    }

    /// Whether [`Engine::apply`] checks each record's [`RecordWrite::prior`] (an engine that
    /// several processes write). When false, the rules layer does not collect them (one
    /// process holds the data, and its writer lock serialises read-modify-write).
    fn checks_priors(&self) -> bool {
        false
    }

    /// The value under `key` in `space`.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Self::Value>>;

    /// The values under `keys` in `space`, in order. An engine across a network answers them
    /// in one round trip (the rules layer asks for a bulk write's records at once); the
    /// default reads them one by one.
    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Self::Value>>> {
        keys.iter().map(|k| self.get(space, k)).collect()
    }

    /// Whether `space` holds `key`.
    fn contains(&self, space: Space, key: &[u8]) -> Result<bool> {
        Ok(self.get(space, key)?.is_some())
    }

    /// Applies a batch (atomically, or as the module docs allow) and hands out the ticket that
    /// becomes durable with it, and the value groups it did not apply because they conflicted
    /// ([`Applied::conflicts`]). Refused with [`Error::Poisoned`] once durability failed.
    fn apply(&self, batch: Batch) -> Result<Applied>;

    /// Visits the entries of `space` from `start` up to `end` in key order, at most `limit`
    /// of them, until `visit` breaks. `visit` may read the engine (not write it).
    fn scan<F>(
        &self,
        space: Space,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        visit: F,
    ) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>;

    /// How this engine's tickets become durable.
    fn durability(&self) -> Durability<'_>;

    /// Takes or renews a lease (see `SightingStore::lease`). An engine that one process
    /// holds grants every lease.
    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        let _ = (name, holder, ttl_ms);
        Ok(true)
    }

    /// The engine's own activity (memtables, flushes, compactions, journals, disk); `None`
    /// for an engine without such a thing.
    fn engine_stats(&self) -> Option<sighthub_storage::EngineStats> {
        None
    }

    /// Makes everything durable and leaves the engine's files ready for a fast next start.
    /// For a clean shutdown, with no writer left.
    fn close(&self) -> Result<()>;
}

/// An engine in memory: one `BTreeMap` per space behind a lock. Nothing is durable across a
/// restart, so its tickets need no wait ([`Durability::immediate`]). For tests, and as the
/// reference of what an engine must do.
#[derive(Debug, Default)]
pub struct MemEngine {
    spaces: RwLock<[BTreeMap<Vec<u8>, Vec<u8>>; 5]>,
}

impl MemEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, [BTreeMap<Vec<u8>, Vec<u8>>; 5]> {
        self.spaces
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Engine for MemEngine {
    type Value = Vec<u8>;

    fn local_reads(&self) -> bool {
        true
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read()
            .get(space.index())
            .and_then(|m| m.get(key))
            .cloned())
    }

    fn apply(&self, batch: Batch) -> Result<Applied> {
        let mut spaces = self
            .spaces
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let flat = batch.flatten();
        for (space, k, v) in flat.ops {
            let map = spaces
                .get_mut(space.index())
                .ok_or(Error::Corrupt("key space"))?;
            match v {
                Some(v) => {
                    map.insert(k, v);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        let counts = spaces
            .get_mut(Space::Counts.index())
            .ok_or(Error::Corrupt("key space"))?;
        for (ns, delta) in flat.counts {
            match add_to_count(counts.get(&ns).map(Vec::as_slice), delta) {
                Some(v) => {
                    counts.insert(ns, v);
                }
                None => {
                    counts.remove(&ns);
                }
            }
        }
        Ok(Applied {
            ticket: Ticket::NONE,
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
        // Copied out first: `visit` may read the engine, and a read lock must not be taken
        // twice by one thread while a writer waits.
        let page: Vec<(Vec<u8>, Vec<u8>)> = match self.read().get(space.index()) {
            Some(m) => m
                .range::<[u8], _>((start, end))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => Vec::new(),
        };
        for (k, v) in &page {
            if visit(k, v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn durability(&self) -> Durability<'_> {
        Durability::immediate()
    }

    fn close(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn put(key: &[u8], v: &[u8]) -> RecordWrite {
        RecordWrite {
            key: key.to_vec(),
            value: Some(v.to_vec()),
            prior: None,
        }
    }

    #[test]
    fn flattened_batches_list_expiry_first_then_records_in_key_order_then_the_rest() {
        let b = Batch {
            expiry_added: vec![b"e1".to_vec()],
            groups: vec![
                Group {
                    value: b"v2".to_vec(),
                    records: vec![put(b"b\0v2", b"x")],
                    counts: vec![(b"a".to_vec(), 1)],
                    expiry_removed: vec![b"e0".to_vec()],
                },
                Group {
                    value: b"v1".to_vec(),
                    records: vec![put(b"_all/\0v1", b"y"), put(b"a\0v1", b"z")],
                    counts: vec![(b"a".to_vec(), 2), (b"b".to_vec(), 0)],
                    expiry_removed: Vec::new(),
                },
            ],
            formats: Vec::new(),
            markers: vec![(b"m".to_vec(), b"1".to_vec())],
        };
        let flat = b.flatten();
        let order: Vec<(Space, &[u8])> = flat.ops.iter().map(|o| (o.0, o.1.as_slice())).collect();
        assert_eq!(
            order,
            vec![
                (Space::Expiry, &b"e1"[..]),
                (Space::Sightings, &b"_all/\0v1"[..]),
                (Space::Sightings, &b"a\0v1"[..]),
                (Space::Sightings, &b"b\0v2"[..]),
                (Space::Expiry, &b"e0"[..]),
                (Space::Markers, &b"m"[..]),
            ]
        );
        // Summed per namespace; a zero sum is no write.
        assert_eq!(flat.counts, vec![(b"a".to_vec(), 3)]);
    }

    #[test]
    fn counts_are_increments_and_vanish_at_zero() {
        let e = MemEngine::new();
        let group = |d: i64| Group {
            value: b"v".to_vec(),
            counts: vec![(b"ns".to_vec(), d)],
            ..Group::default()
        };
        let apply = |d| {
            let b = Batch {
                groups: vec![group(d)],
                ..Batch::default()
            };
            e.apply(b).expect("apply")
        };
        let _ = apply(2);
        let _ = apply(1);
        assert_eq!(
            e.get(Space::Counts, b"ns").expect("get"),
            Some(3u64.to_le_bytes().to_vec())
        );
        let _ = apply(-3);
        assert!(!e.contains(Space::Counts, b"ns").expect("contains"));
    }

    #[test]
    fn mem_scan_honours_bounds_limit_and_break() {
        let e = MemEngine::new();
        let markers = (0u8..10).map(|i| (vec![i], vec![i])).collect();
        let _ = e
            .apply(Batch {
                markers,
                ..Batch::default()
            })
            .expect("apply");
        let mut seen = Vec::new();
        e.scan(
            Space::Markers,
            Bound::Excluded(&[2u8][..]),
            Bound::Excluded(&[8u8][..]),
            4,
            |k, _| {
                seen.push(k.to_vec());
                Ok(ControlFlow::Continue(()))
            },
        )
        .expect("scan");
        assert_eq!(seen, vec![vec![3], vec![4], vec![5], vec![6]]);
        seen.clear();
        e.scan(
            Space::Markers,
            Bound::Unbounded,
            Bound::Unbounded,
            100,
            |k, _| {
                seen.push(k.to_vec());
                Ok(if seen.len() == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            },
        )
        .expect("scan");
        assert_eq!(seen, vec![vec![0], vec![1]]);
        assert!(e.get(Space::Sightings, &[0]).expect("get").is_none());
    }
}
