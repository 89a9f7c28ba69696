//! The key-value engine under the sighting rules: the small trait a backend implements.
//!
//! Everything that makes a sighting store - consensus (`_all`), `_shadow`, `_expired`, TTL and
//! the expiry index, hourly stats, tag merging, namespace counts, value formats - lives once,
//! above this trait, in [`crate::sightings::Sightings`]. An engine only stores bytes in a few
//! ordered key spaces ([`Space`]): point get, atomic apply of a [`Batch`] of puts and deletes,
//! an ordered range scan from a start key with a limit, a durability [`Ticket`] per applied
//! batch with an opaque way to wait for it ([`Durability`]), and close. Adapters:
//! [`crate::fjall_store::FjallEngine`] (embedded, durable) and [`MemEngine`] (in memory).
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
//! never shows a partial request. An engine that cannot (the planned Redis Cluster adapter,
//! where a transaction spans one hash slot only) must keep at least these together:
//!
//! - **One value's records, atomic.** All [`Space::Sightings`] entries of a batch for the same
//!   stored value (its record in every namespace, `_shadow`, `_expired`, and its `_all`
//!   consensus record) are applied all or nothing. [`Batch::value_groups`] gives them grouped;
//!   with a hash tag on the stored value they share one slot. This keeps a value's consensus
//!   equal to the number of public namespaces holding it, and a TTL move to `_expired` from
//!   losing or duplicating the value.
//! - **Everything else, in order, each write on its own.** A non-transactional engine applies
//!   a batch in the order [`Batch::ops`] lists it: expiry index insertions first, then the
//!   value groups, then namespace counts, expiry index removals, formats and feeder markers.
//!
//! After a crash in the middle of a batch, such an engine may show:
//! - an expiry index entry whose record has another (or no) expiry: harmless, the sweep
//!   re-reads the record and skips stale entries (the index is written before the records,
//!   so a record with a TTL is never missing from it);
//! - namespace counts off by what the lost tail of the batch would have changed (`?count`
//!   and the namespace listing only; records and consensus are right);
//! - a feeder's sightings applied without its progress marker (markers come last), so that
//!   batch is applied again after the restart: at-least-once instead of exactly-once.
//!
//! Counts are absolute values computed under the rules layer's writer lock, which is enough
//! for one process per data set; an engine shared by several processes needs an increment
//! operation here (a follow-up of the Redis adapter).
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

/// One write of a batch: `Some(value)` puts, `None` deletes.
pub type Op = (Space, Vec<u8>, Option<Vec<u8>>);

/// Puts and deletes to apply together, in the order of the module docs: built by the rules
/// layer, applied by [`Engine::apply`].
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<Op>,
    /// `ops[..groups_end]` are the expiry insertions and value records; the records are
    /// sorted by key from `groups_start`.
    groups_start: usize,
    groups_end: usize,
}

impl Batch {
    /// Builds a batch from its parts, in the order a non-transactional engine must apply them
    /// (see the module docs). `records` are sorted here by key.
    pub fn new(
        expiry_added: impl IntoIterator<Item = Vec<u8>>,
        mut records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        rest: impl IntoIterator<Item = Op>,
    ) -> Self {
        // In key order, so the engine's inserts walk its ordered structures forwards.
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut ops: Vec<Op> = expiry_added
            .into_iter()
            .map(|k| (Space::Expiry, k, Some(Vec::new())))
            .collect();
        ops.reserve(records.len());
        let groups_start = ops.len();
        ops.extend(records.into_iter().map(|(k, v)| (Space::Sightings, k, v)));
        let groups_end = ops.len();
        ops.extend(rest);
        Self {
            ops,
            groups_start,
            groups_end,
        }
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Every write, in the order to apply them.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Consumes the batch into its writes, in order.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// The [`Space::Sightings`] writes grouped by stored value (the part of a key after its
    /// `0x00` separator): each group must be applied atomically by an engine that cannot
    /// apply the whole batch atomically. Groups come in no particular order.
    pub fn value_groups(&self) -> Vec<Vec<&Op>> {
        let records = self
            .ops
            .get(self.groups_start..self.groups_end)
            .unwrap_or_default();
        let mut groups: BTreeMap<&[u8], Vec<&Op>> = BTreeMap::new();
        for op in records {
            let value =
                op.1.iter()
                    .position(|&b| b == 0)
                    .and_then(|i| op.1.get(i + 1..))
                    .unwrap_or(&op.1);
            groups.entry(value).or_default().push(op);
        }
        groups.into_values().collect()
    }
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
    const LOCAL_READS: bool = false;

    /// The value under `key` in `space`.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Self::Value>>;

    /// Whether `space` holds `key`.
    fn contains(&self, space: Space, key: &[u8]) -> Result<bool> {
        Ok(self.get(space, key)?.is_some())
    }

    /// Applies a batch (atomically, or as the module docs allow) and hands out the ticket that
    /// becomes durable with it. Refused with [`Error::Poisoned`] once durability failed.
    fn apply(&self, batch: Batch) -> Result<Ticket>;

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
    const LOCAL_READS: bool = true;

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read()
            .get(space.index())
            .and_then(|m| m.get(key))
            .cloned())
    }

    fn apply(&self, batch: Batch) -> Result<Ticket> {
        let mut spaces = self
            .spaces
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (space, k, v) in batch.into_ops() {
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
        Ok(Ticket::NONE)
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

    #[test]
    fn batches_list_expiry_first_then_records_in_key_order_then_the_rest() {
        let b = Batch::new(
            [b"e1".to_vec()],
            vec![
                (b"b\0v2".to_vec(), Some(b"x".to_vec())),
                (b"a\0v1".to_vec(), None),
                (b"_all/\0v1".to_vec(), Some(b"y".to_vec())),
            ],
            [(Space::Counts, b"a".to_vec(), Some(b"1".to_vec()))],
        );
        let order: Vec<(Space, &[u8])> = b.ops().iter().map(|o| (o.0, o.1.as_slice())).collect();
        assert_eq!(
            order,
            vec![
                (Space::Expiry, &b"e1"[..]),
                (Space::Sightings, &b"_all/\0v1"[..]),
                (Space::Sightings, &b"a\0v1"[..]),
                (Space::Sightings, &b"b\0v2"[..]),
                (Space::Counts, &b"a"[..]),
            ]
        );
        let groups: Vec<Vec<&[u8]>> = b
            .value_groups()
            .iter()
            .map(|g| g.iter().map(|o| o.1.as_slice()).collect())
            .collect();
        assert_eq!(
            groups,
            vec![vec![&b"_all/\0v1"[..], &b"a\0v1"[..]], vec![&b"b\0v2"[..]]]
        );
    }

    #[test]
    fn mem_scan_honours_bounds_limit_and_break() {
        let e = MemEngine::new();
        let ops = (0u8..10).map(|i| (Space::Markers, vec![i], Some(vec![i])));
        let _ = e.apply(Batch::new([], Vec::new(), ops)).expect("apply");
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
