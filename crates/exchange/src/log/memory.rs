//! [`MemoryLog`]: the exchange's storage in maps, for tests and for proving the seam.
//!
//! Everything sits behind one `RwLock`; a batch is applied under the write lock (so it is
//! atomic here, which the trait does not require). Durability is immediate: the group
//! commit's sync does nothing. Nothing survives a drop. Expired `seen` and `content` entries
//! are kept (the store ignores them on lookup); link and alternate entries are keyed by the
//! same byte encodings as the fjall adapter, so both list them in the same order.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use uuid::Uuid;

use super::{alternate_uuid, ConsumerState, ExchangeLog, IncomingLink, LogBatch};
use crate::error::Result;
use crate::record::{alternate_key, alternate_prefix, link_key, link_value, LinkRel, Seen};

#[derive(Default)]
struct Maps {
    log: BTreeMap<u64, Bytes>,
    seen: HashMap<Uuid, Seen>,
    content: HashMap<[u8; 16], Seen>,
    links: BTreeMap<Vec<u8>, [u8; 24]>,
    alternates: BTreeMap<Vec<u8>, u64>,
    consumers: BTreeMap<(Uuid, String), ConsumerState>,
    meta: HashMap<String, Vec<u8>>,
}

/// The in-memory adapter; see the [module docs](self).
#[derive(Default)]
pub struct MemoryLog {
    maps: RwLock<Maps>,
}

impl MemoryLog {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        self.maps
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Maps> {
        self.maps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One write of a [`MemoryBatch`].
enum Op {
    Record(u64, Bytes),
    RemoveRecord(u64),
    Seen(Uuid, Seen),
    Content([u8; 16], Seen),
    Link(Vec<u8>, [u8; 24]),
    RemoveLink(Vec<u8>),
    Alternate(Vec<u8>, u64),
    RemoveAlternate(Vec<u8>),
    Meta(&'static str, u64),
}

/// The writes of one commit, in order.
#[derive(Default)]
pub struct MemoryBatch {
    ops: Vec<Op>,
}

impl LogBatch for MemoryBatch {
    type Record = Bytes;

    fn put_record(&mut self, seq: u64, record: Bytes) {
        self.ops.push(Op::Record(seq, record));
    }

    fn remove_record(&mut self, seq: u64) {
        self.ops.push(Op::RemoveRecord(seq));
    }

    fn put_seen(&mut self, uuid: &Uuid, seen: Seen) {
        self.ops.push(Op::Seen(*uuid, seen));
    }

    fn put_content(&mut self, key: &[u8; 16], seen: Seen) {
        self.ops.push(Op::Content(*key, seen));
    }

    fn put_link(&mut self, target: Uuid, source: Uuid, rel: &LinkRel, seq: u64, org: Option<Uuid>) {
        self.ops.push(Op::Link(
            link_key(target, source, rel),
            link_value(seq, org),
        ));
    }

    fn remove_link(&mut self, target: Uuid, source: Uuid, rel: &LinkRel) {
        self.ops.push(Op::RemoveLink(link_key(target, source, rel)));
    }

    fn put_alternate(&mut self, alt: &str, uuid: Uuid, seq: u64) {
        if let Some(k) = alternate_key(alt, uuid) {
            self.ops.push(Op::Alternate(k, seq));
        }
    }

    fn remove_alternate(&mut self, alt: &str, uuid: Uuid) {
        if let Some(k) = alternate_key(alt, uuid) {
            self.ops.push(Op::RemoveAlternate(k));
        }
    }

    fn put_meta(&mut self, key: &'static str, value: u64) {
        self.ops.push(Op::Meta(key, value));
    }
}

impl ExchangeLog for MemoryLog {
    type Record = Bytes;
    type Batch = MemoryBatch;

    fn record(bytes: Vec<u8>) -> Bytes {
        Bytes::from(bytes)
    }

    fn bounds(&self) -> Result<Option<(u64, u64)>> {
        let m = self.read();
        Ok(match (m.log.keys().next(), m.log.keys().next_back()) {
            (Some(&first), Some(&last)) => Some((first, last)),
            _ => None,
        })
    }

    fn record_at(&self, seq: u64) -> Result<Option<Bytes>> {
        Ok(self.read().log.get(&seq).cloned())
    }

    fn range(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &Bytes) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        // `f` runs outside the lock, on pages of (cheap, refcounted) record handles.
        let mut next = from;
        while next <= to {
            let page: Vec<(u64, Bytes)> = self
                .read()
                .log
                .range(next..=to)
                .take(256)
                .map(|(s, r)| (*s, r.clone()))
                .collect();
            let Some(&(last, _)) = page.last() else {
                break;
            };
            for (seq, r) in &page {
                if f(*seq, r)?.is_break() {
                    return Ok(());
                }
            }
            match last.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
        }
        Ok(())
    }

    fn seen(&self, uuid: &Uuid) -> Result<Option<Seen>> {
        Ok(self.read().seen.get(uuid).copied())
    }

    fn content(&self, key: &[u8; 16]) -> Result<Option<Seen>> {
        Ok(self.read().content.get(key).copied())
    }

    fn each_content(&self, mut f: impl FnMut(&[u8; 16], Seen)) -> Result<()> {
        for (k, s) in &self.read().content {
            f(k, *s);
        }
        Ok(())
    }

    fn links_to(
        &self,
        target: &Uuid,
        mut f: impl FnMut(IncomingLink) -> ControlFlow<()>,
    ) -> Result<()> {
        let m = self.read();
        let prefix = target.as_bytes();
        for (k, v) in m.links.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            if f(IncomingLink::decode(k, v)?).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn alternates(&self, alt: &str, mut f: impl FnMut(Uuid, u64) -> ControlFlow<()>) -> Result<()> {
        let Some(prefix) = alternate_prefix(alt) else {
            return Ok(());
        };
        let m = self.read();
        for (k, seq) in m.alternates.range(prefix.clone()..) {
            if !k.starts_with(&prefix) {
                break;
            }
            let uuid = alternate_uuid(k, &prefix)?;
            if f(uuid, *seq).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn consumer(&self, org: Uuid, name: &str) -> Result<Option<ConsumerState>> {
        Ok(self.read().consumers.get(&(org, name.to_owned())).copied())
    }

    fn consumer_count(&self, org: Uuid, max: usize) -> Result<usize> {
        Ok(self
            .read()
            .consumers
            .range((org, String::new())..)
            .take_while(|((o, _), _)| *o == org)
            .take(max)
            .count())
    }

    fn consumers(&self, max: usize) -> Result<Vec<(Uuid, String, ConsumerState)>> {
        Ok(self
            .read()
            .consumers
            .iter()
            .take(max)
            .map(|((o, n), s)| (*o, n.clone(), *s))
            .collect())
    }

    fn consumer_put(&self, org: Uuid, name: &str, state: ConsumerState) -> Result<()> {
        self.write().consumers.insert((org, name.to_owned()), state);
        Ok(())
    }

    fn consumer_delete(&self, org: Uuid, name: &str) -> Result<bool> {
        Ok(self
            .write()
            .consumers
            .remove(&(org, name.to_owned()))
            .is_some())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read().meta.get(key).cloned())
    }

    fn meta_put(&self, key: &'static str, value: Vec<u8>) -> Result<()> {
        self.write().meta.insert(key.to_owned(), value);
        Ok(())
    }

    fn batch(&self) -> MemoryBatch {
        MemoryBatch::default()
    }

    fn commit(&self, batch: MemoryBatch) -> Result<()> {
        let mut m = self.write();
        for op in batch.ops {
            match op {
                Op::Record(seq, r) => {
                    m.log.insert(seq, r);
                }
                Op::RemoveRecord(seq) => {
                    m.log.remove(&seq);
                }
                Op::Seen(u, s) => {
                    m.seen.insert(u, s);
                }
                Op::Content(k, s) => {
                    m.content.insert(k, s);
                }
                Op::Link(k, v) => {
                    m.links.insert(k, v);
                }
                Op::RemoveLink(k) => {
                    m.links.remove(&k);
                }
                Op::Alternate(k, seq) => {
                    m.alternates.insert(k, seq);
                }
                Op::RemoveAlternate(k) => {
                    m.alternates.remove(&k);
                }
                Op::Meta(k, v) => {
                    m.meta.insert(k.to_owned(), v.to_le_bytes().to_vec());
                }
            }
        }
        Ok(())
    }

    fn syncer(&self) -> sighthub_storage::commit::PersistFn {
        Box::new(|| Ok(()))
    }

    fn persist(&self) -> Result<()> {
        Ok(())
    }

    fn close(&self) -> Result<()> {
        Ok(())
    }

    fn approximate_counts(&self) -> (usize, usize) {
        let m = self.read();
        (m.log.len(), m.seen.len())
    }
}
