//! [`AnyLog`]: the engine the configuration chose (`[exchange] backend`), as one type, so that
//! [`crate::ExchangeStore`] and every client of it stay monomorphic: one `match` per call,
//! no `dyn` and no generic parameter above the exchange crate. The embedded engine is
//! [`FjallLog`]; the distributed one [`NatsLog`].

use fjall::Slice;
use std::ops::ControlFlow;
use uuid::Uuid;

use super::disk::FjallBatch;
use super::nats::NatsBatch;
use super::{ConsumerState, ExchangeLog, FjallLog, HeadFn, IncomingLink, LogBatch, NatsLog};
use crate::error::Result;
use crate::record::{LinkRel, Seen};

/// The configured engine; see the [module docs](self).
pub enum AnyLog {
    /// The embedded fjall database (`backend = "embedded"`, the default).
    Fjall(FjallLog),
    /// A NATS JetStream cluster (`backend = "nats"`), boxed: every call of it is a network
    /// round trip, and the embedded variant stays small.
    Nats(Box<NatsLog>),
}

/// The batch of the configured engine.
pub enum AnyBatch {
    /// fjall's.
    Fjall(FjallBatch),
    /// JetStream's.
    Nats(NatsBatch),
}

impl LogBatch for AnyBatch {
    type Record = Slice;

    fn put_record(&mut self, seq: u64, record: Slice) {
        match self {
            AnyBatch::Fjall(b) => b.put_record(seq, record),
            AnyBatch::Nats(b) => b.put_record(seq, record),
        }
    }

    fn rewrite_record(&mut self, seq: u64, record: Slice) {
        match self {
            AnyBatch::Fjall(b) => b.rewrite_record(seq, record),
            AnyBatch::Nats(b) => b.rewrite_record(seq, record),
        }
    }

    fn remove_record(&mut self, seq: u64) {
        match self {
            AnyBatch::Fjall(b) => b.remove_record(seq),
            AnyBatch::Nats(b) => b.remove_record(seq),
        }
    }

    fn put_seen(&mut self, uuid: &Uuid, seen: Seen) {
        match self {
            AnyBatch::Fjall(b) => b.put_seen(uuid, seen),
            AnyBatch::Nats(b) => b.put_seen(uuid, seen),
        }
    }

    fn put_content(&mut self, key: &[u8; 16], seen: Seen) {
        match self {
            AnyBatch::Fjall(b) => b.put_content(key, seen),
            AnyBatch::Nats(b) => b.put_content(key, seen),
        }
    }

    fn put_link(&mut self, target: Uuid, source: Uuid, rel: &LinkRel, seq: u64, org: Option<Uuid>) {
        match self {
            AnyBatch::Fjall(b) => b.put_link(target, source, rel, seq, org),
            AnyBatch::Nats(b) => b.put_link(target, source, rel, seq, org),
        }
    }

    fn remove_link(&mut self, target: Uuid, source: Uuid, rel: &LinkRel) {
        match self {
            AnyBatch::Fjall(b) => b.remove_link(target, source, rel),
            AnyBatch::Nats(b) => b.remove_link(target, source, rel),
        }
    }

    fn put_alternate(&mut self, alt: &str, uuid: Uuid, seq: u64) {
        match self {
            AnyBatch::Fjall(b) => b.put_alternate(alt, uuid, seq),
            AnyBatch::Nats(b) => b.put_alternate(alt, uuid, seq),
        }
    }

    fn remove_alternate(&mut self, alt: &str, uuid: Uuid) {
        match self {
            AnyBatch::Fjall(b) => b.remove_alternate(alt, uuid),
            AnyBatch::Nats(b) => b.remove_alternate(alt, uuid),
        }
    }

    fn put_meta(&mut self, key: &'static str, value: u64) {
        match self {
            AnyBatch::Fjall(b) => b.put_meta(key, value),
            AnyBatch::Nats(b) => b.put_meta(key, value),
        }
    }
}

impl ExchangeLog for AnyLog {
    type Record = Slice;
    type Batch = AnyBatch;

    fn record(bytes: Vec<u8>) -> Slice {
        Slice::from(bytes)
    }

    fn range(
        &self,
        from: u64,
        to: u64,
        f: impl FnMut(u64, &Slice) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        match self {
            AnyLog::Fjall(l) => l.range(from, to, f),
            AnyLog::Nats(l) => l.range(from, to, f),
        }
    }

    fn batch(&self) -> AnyBatch {
        match self {
            AnyLog::Fjall(l) => AnyBatch::Fjall(l.batch()),
            AnyLog::Nats(l) => AnyBatch::Nats(l.batch()),
        }
    }

    fn commit(&self, batch: AnyBatch) -> Result<()> {
        match (self, batch) {
            (AnyLog::Fjall(l), AnyBatch::Fjall(b)) => l.commit(b),
            (AnyLog::Nats(l), AnyBatch::Nats(b)) => l.commit(b),
            _ => Err(crate::error::Error::corrupt("a batch of another engine")),
        }
    }

    fn bounds(&self) -> Result<Option<(u64, u64)>> {
        match self {
            AnyLog::Fjall(l) => l.bounds(),
            AnyLog::Nats(l) => l.bounds(),
        }
    }

    fn record_at(&self, seq: u64) -> Result<Option<Slice>> {
        match self {
            AnyLog::Fjall(l) => l.record_at(seq),
            AnyLog::Nats(l) => l.record_at(seq),
        }
    }

    fn seen(&self, uuid: &Uuid) -> Result<Option<Seen>> {
        match self {
            AnyLog::Fjall(l) => l.seen(uuid),
            AnyLog::Nats(l) => l.seen(uuid),
        }
    }

    fn content(&self, key: &[u8; 16]) -> Result<Option<Seen>> {
        match self {
            AnyLog::Fjall(l) => l.content(key),
            AnyLog::Nats(l) => l.content(key),
        }
    }

    fn seen_many(&self, uuids: &[Uuid]) -> Result<Vec<Option<Seen>>> {
        match self {
            AnyLog::Fjall(l) => l.seen_many(uuids),
            AnyLog::Nats(l) => l.seen_many(uuids),
        }
    }

    fn content_many(&self, keys: &[[u8; 16]]) -> Result<Vec<Option<Seen>>> {
        match self {
            AnyLog::Fjall(l) => l.content_many(keys),
            AnyLog::Nats(l) => l.content_many(keys),
        }
    }

    fn each_content(&self, f: impl FnMut(&[u8; 16], Seen)) -> Result<()> {
        match self {
            AnyLog::Fjall(l) => l.each_content(f),
            AnyLog::Nats(l) => l.each_content(f),
        }
    }

    fn links_to(
        &self,
        target: &Uuid,
        f: impl FnMut(IncomingLink) -> ControlFlow<()>,
    ) -> Result<()> {
        match self {
            AnyLog::Fjall(l) => l.links_to(target, f),
            AnyLog::Nats(l) => l.links_to(target, f),
        }
    }

    fn alternates(&self, alt: &str, f: impl FnMut(Uuid, u64) -> ControlFlow<()>) -> Result<()> {
        match self {
            AnyLog::Fjall(l) => l.alternates(alt, f),
            AnyLog::Nats(l) => l.alternates(alt, f),
        }
    }

    fn consumer(&self, org: Uuid, name: &str) -> Result<Option<ConsumerState>> {
        match self {
            AnyLog::Fjall(l) => l.consumer(org, name),
            AnyLog::Nats(l) => l.consumer(org, name),
        }
    }

    fn consumer_count(&self, org: Uuid, max: usize) -> Result<usize> {
        match self {
            AnyLog::Fjall(l) => l.consumer_count(org, max),
            AnyLog::Nats(l) => l.consumer_count(org, max),
        }
    }

    fn consumers(&self, max: usize) -> Result<Vec<(Uuid, String, ConsumerState)>> {
        match self {
            AnyLog::Fjall(l) => l.consumers(max),
            AnyLog::Nats(l) => l.consumers(max),
        }
    }

    fn consumer_put(&self, org: Uuid, name: &str, state: ConsumerState) -> Result<()> {
        match self {
            AnyLog::Fjall(l) => l.consumer_put(org, name, state),
            AnyLog::Nats(l) => l.consumer_put(org, name, state),
        }
    }

    fn consumer_versioned(&self, org: Uuid, name: &str) -> Result<(Option<ConsumerState>, u64)> {
        match self {
            AnyLog::Fjall(l) => l.consumer_versioned(org, name),
            AnyLog::Nats(l) => l.consumer_versioned(org, name),
        }
    }

    fn consumer_put_if(
        &self,
        org: Uuid,
        name: &str,
        state: ConsumerState,
        version: u64,
    ) -> Result<bool> {
        match self {
            AnyLog::Fjall(l) => l.consumer_put_if(org, name, state, version),
            AnyLog::Nats(l) => l.consumer_put_if(org, name, state, version),
        }
    }

    fn consumer_delete(&self, org: Uuid, name: &str) -> Result<bool> {
        match self {
            AnyLog::Fjall(l) => l.consumer_delete(org, name),
            AnyLog::Nats(l) => l.consumer_delete(org, name),
        }
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            AnyLog::Fjall(l) => l.meta(key),
            AnyLog::Nats(l) => l.meta(key),
        }
    }

    fn meta_put(&self, key: &'static str, value: Vec<u8>) -> Result<()> {
        match self {
            AnyLog::Fjall(l) => l.meta_put(key, value),
            AnyLog::Nats(l) => l.meta_put(key, value),
        }
    }

    fn syncer(&self) -> sighthub_storage::commit::PersistFn {
        match self {
            AnyLog::Fjall(l) => l.syncer(),
            AnyLog::Nats(l) => l.syncer(),
        }
    }

    fn persist(&self) -> Result<()> {
        match self {
            AnyLog::Fjall(l) => l.persist(),
            AnyLog::Nats(l) => l.persist(),
        }
    }

    fn close(&self) -> Result<()> {
        match self {
            AnyLog::Fjall(l) => l.close(),
            AnyLog::Nats(l) => l.close(),
        }
    }

    fn approximate_counts(&self) -> (usize, usize) {
        match self {
            AnyLog::Fjall(l) => l.approximate_counts(),
            AnyLog::Nats(l) => l.approximate_counts(),
        }
    }

    fn engine_stats(&self) -> Option<sighthub_storage::EngineStats> {
        match self {
            AnyLog::Fjall(l) => l.engine_stats(),
            AnyLog::Nats(l) => l.engine_stats(),
        }
    }

    fn shared(&self) -> bool {
        matches!(self, AnyLog::Nats(_))
    }

    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        match self {
            AnyLog::Fjall(l) => l.lease(name, holder, ttl_ms),
            AnyLog::Nats(l) => l.lease(name, holder, ttl_ms),
        }
    }

    fn follow_head(&self, f: HeadFn) {
        match self {
            AnyLog::Fjall(l) => l.follow_head(f),
            AnyLog::Nats(l) => l.follow_head(f),
        }
    }
}
