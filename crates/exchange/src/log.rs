//! The storage seam of the exchange: [`ExchangeLog`], what an engine must keep (the log,
//! the seen-set, the content window, the link and alternate indexes, the named consumers and
//! a few meta values), and nothing of the exchange's rules.
//!
//! The rules — de-duplication by uuid and by content, which organisation's message may be
//! updated, withdrawn or replaced, tag merging, retention, the durable watermark, the
//! consumer limits — live once, above this trait, in [`crate::store::ExchangeStore`], which
//! is generic over it (`ExchangeStore<L: ExchangeLog = FjallLog>`, monomorphised: no `dyn`
//! on the per-message path).
//!
//! Adapters:
//! - [`disk::FjallLog`]: the fjall database at `<data_dir>/exchange` (the on-disk layout of
//!   every earlier version, opened unchanged);
//! - [`memory::MemoryLog`]: maps in memory, for tests; nothing survives a drop.
//!
//! ## Reads return decoded values
//! [`Seen`], [`IncomingLink`], [`ConsumerState`] and, for log records, [`Stored`] (whose
//! [`Stored::entry`] is the decoded [`LogEntry`]). The record's bytes stay in
//! the engine's own buffer type ([`ExchangeLog::Record`]): no copy per read.
//!
//! ## Writes and atomicity
//! The store writes through a [`LogBatch`] and hands it to [`ExchangeLog::commit`]. fjall
//! commits a batch atomically; the trait does not require it. What it requires of an engine
//! where only one key's update is atomic (a NATS JetStream stream and KV buckets):
//! - a batch is applied **in the order it was written**: the store writes each message's log
//!   record first, then its `seen` / `content` entries, then its link and alternate index
//!   entries, and the meta high-water marks last. A crash in the middle leaves log records
//!   whose indexes are missing, never an index entry pointing at a record that was never
//!   written; the records after the stored high-water mark ([`META_SEQ`]) are the ones to
//!   re-index on open.
//! - retention removes a record first, then its index entries: an index entry whose record
//!   is gone is skipped by every reader (`get_seq` answers `None`).
//! - readers never see past the durable watermark, which the store moves only after
//!   [`ExchangeLog::syncer`] returned for a commit (see [`crate::store`]), so a half-applied
//!   batch is never delivered.
//! - a consumer cursor is one key ([`ExchangeLog::consumer_put`]): one atomic write.
//!
//! Within one process the store serialises writers with its own mutex; an engine shared by
//! several processes ([`nats::NatsLog`]) makes the `seen` write a create-if-absent
//! (JetStream KV `create`) and the log append an expected-last-sequence publish, answers
//! [`Error::Conflict`] when another process appended first (the store retries on fresh
//! state), and reports the other processes' appends through [`ExchangeLog::follow_head`].

pub mod any;
pub mod disk;
pub mod memory;
pub mod nats;

use std::ops::ControlFlow;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::record::{decode_link_key, decode_link_value, decode_log, LinkRel, LogEntry, Seen};

pub use any::AnyLog;
pub use disk::FjallLog;
pub use memory::MemoryLog;
pub use nats::NatsLog;

/// What [`ExchangeLog::follow_head`] calls: (first, last) sequence numbers the engine holds
/// durably, written by any process.
pub type HeadFn = Box<dyn Fn(u64, u64) + Send + Sync + 'static>;

/// Meta key: the random epoch fixed when the store was created (part of every cursor).
pub const META_EPOCH: &str = "epoch";
/// Meta key: the highest sequence number ever assigned.
pub const META_SEQ: &str = "seq";
/// Meta key: bytes of the records in the log.
pub const META_LOG_BYTES: &str = "log_bytes";
/// Meta key: this hub's organisation (16 bytes).
pub const META_ORG: &str = "org";
/// Meta key: this hub's instance (16 bytes).
pub const META_INSTANCE: &str = "instance";

/// One link pointing at a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingLink {
    /// The linking message.
    pub source: Uuid,
    /// How it links.
    pub rel: LinkRel,
    /// The linking message's sequence number.
    pub seq: u64,
    /// The linking message's organisation.
    pub org: Option<Uuid>,
}

impl IncomingLink {
    /// Decodes one entry of the `links` index (a key of [`crate::record::link_key`], a value
    /// of [`crate::record::link_value`]); a corrupt one is an error. Every adapter reads the
    /// index through it.
    pub(crate) fn decode(k: &[u8], v: &[u8]) -> Result<IncomingLink> {
        let (_, source, rel) = decode_link_key(k).ok_or_else(|| Error::corrupt("link key"))?;
        let (seq, org) = decode_link_value(v).ok_or_else(|| Error::corrupt("link value"))?;
        Ok(IncomingLink {
            source,
            rel,
            seq,
            org,
        })
    }
}

/// The message uuid of an `alternates` key that starts with `prefix` (of
/// [`crate::record::alternate_prefix`]); a corrupt key is an error. Every adapter reads the
/// index through it.
pub(crate) fn alternate_uuid(k: &[u8], prefix: &[u8]) -> Result<Uuid> {
    k.get(prefix.len()..)
        .and_then(|b| Uuid::from_slice(b).ok())
        .ok_or_else(|| Error::corrupt("alternate key"))
}

/// A named consumer's server-side cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerState {
    /// Last sequence number acknowledged (0 = nothing yet).
    pub acked: u64,
    /// Unix seconds of the last acknowledgement.
    pub updated_at: u64,
}

/// A log record read from the engine: [`Stored::entry`] is its decoded view. `R` is the
/// engine's buffer ([`ExchangeLog::Record`]), so reading it copies nothing.
#[derive(Debug, Clone)]
pub struct Stored<R> {
    seq: u64,
    record: R,
}

impl<R: AsRef<[u8]>> Stored<R> {
    /// The record `record` at `seq`.
    pub fn new(seq: u64, record: R) -> Self {
        Stored { seq, record }
    }

    /// Its sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The decoded record (a view into the engine's buffer); a record that does not decode
    /// is a storage error.
    pub fn entry(&self) -> Result<LogEntry<'_>> {
        decode_log(self.record.as_ref()).ok_or_else(|| Error::corrupt("log record"))
    }

    /// Bytes of the stored record.
    pub fn len(&self) -> usize {
        self.record.as_ref().len()
    }

    /// Whether the stored record is empty (never, for a record the store wrote).
    pub fn is_empty(&self) -> bool {
        self.record.as_ref().is_empty()
    }
}

/// The writes of one request (or one retention step); see the [module docs](self) for the
/// order and what an engine must guarantee.
pub trait LogBatch {
    /// The engine's record buffer.
    type Record;
    /// Writes the log record at `seq` (new, or a re-tagged message rewritten in place).
    fn put_record(&mut self, seq: u64, record: Self::Record);
    /// Rewrites the record at `seq`, already written (a re-tagged message "rewritten in
    /// place"; an append-only engine keeps it beside the log and reads it through).
    fn rewrite_record(&mut self, seq: u64, record: Self::Record) {
        self.put_record(seq, record);
    }
    /// Removes the log record at `seq` (retention).
    fn remove_record(&mut self, seq: u64);
    /// Marks `uuid` as seen at `seen.seq`.
    fn put_seen(&mut self, uuid: &Uuid, seen: Seen);
    /// Marks a content key as seen at `seen.seq`.
    fn put_content(&mut self, key: &[u8; 16], seen: Seen);
    /// Indexes a link from `source` (at `seq`, of `org`) to `target`.
    fn put_link(&mut self, target: Uuid, source: Uuid, rel: &LinkRel, seq: u64, org: Option<Uuid>);
    /// Removes a link index entry.
    fn remove_link(&mut self, target: Uuid, source: Uuid, rel: &LinkRel);
    /// Indexes the alternate id `alt` of `uuid` (at `seq`); `alt` fits
    /// ([`crate::record::alternate_fits`]).
    fn put_alternate(&mut self, alt: &str, uuid: Uuid, seq: u64);
    /// Removes an alternate index entry.
    fn remove_alternate(&mut self, alt: &str, uuid: Uuid);
    /// Sets a numeric meta value ([`META_SEQ`], [`META_LOG_BYTES`]).
    fn put_meta(&mut self, key: &'static str, value: u64);
}

/// The engine below the exchange's rules; see the [module docs](self).
pub trait ExchangeLog: Send + Sync + 'static {
    /// Bytes of one log record as the engine holds them; cheap to clone.
    type Record: AsRef<[u8]> + Clone + Send + Sync + 'static;
    /// The writes of one commit.
    type Batch: LogBatch<Record = Self::Record>;

    /// A record buffer from the encoded bytes (no copy where the engine allows).
    fn record(bytes: Vec<u8>) -> Self::Record;

    /// Lowest and highest sequence numbers in the log, `None` when it is empty.
    fn bounds(&self) -> Result<Option<(u64, u64)>>;
    /// The raw record at `seq`, if in the log (the store's write path, which decodes it
    /// once itself).
    fn record_at(&self, seq: u64) -> Result<Option<Self::Record>>;
    /// The record at `seq`, if in the log.
    fn get(&self, seq: u64) -> Result<Option<Stored<Self::Record>>> {
        Ok(self.record_at(seq)?.map(|r| Stored::new(seq, r)))
    }
    /// Calls `f` on the records from `from` to `to` (inclusive), in order, until it breaks.
    fn range(
        &self,
        from: u64,
        to: u64,
        f: impl FnMut(u64, &Self::Record) -> Result<ControlFlow<()>>,
    ) -> Result<()>;

    /// Where `uuid` was first accepted, whatever its age (the store applies the horizon).
    fn seen(&self, uuid: &Uuid) -> Result<Option<Seen>>;
    /// Where a content key was first accepted, whatever its age.
    fn content(&self, key: &[u8; 16]) -> Result<Option<Seen>>;
    /// [`ExchangeLog::seen`] of several uuids, in order. An engine across the network asks
    /// them together (one round trip per request, not per message); a local one needs no
    /// more than the loop.
    fn seen_many(&self, uuids: &[Uuid]) -> Result<Vec<Option<Seen>>> {
        uuids.iter().map(|u| self.seen(u)).collect()
    }
    /// [`ExchangeLog::content`] of several keys, in order (as [`ExchangeLog::seen_many`]).
    fn content_many(&self, keys: &[[u8; 16]]) -> Result<Vec<Option<Seen>>> {
        keys.iter().map(|k| self.content(k)).collect()
    }
    /// Calls `f` on every content entry (start-up: the filter in front of the window).
    fn each_content(&self, f: impl FnMut(&[u8; 16], Seen)) -> Result<()>;

    /// Calls `f` on the links pointing at `target`, until it breaks.
    fn links_to(&self, target: &Uuid, f: impl FnMut(IncomingLink) -> ControlFlow<()>)
        -> Result<()>;
    /// Calls `f` on the (uuid, seq) carrying the alternate id `alt`, until it breaks.
    fn alternates(&self, alt: &str, f: impl FnMut(Uuid, u64) -> ControlFlow<()>) -> Result<()>;

    /// A named consumer's cursor.
    fn consumer(&self, org: Uuid, name: &str) -> Result<Option<ConsumerState>>;
    /// How many consumers `org` holds, counting at most to `max`.
    fn consumer_count(&self, org: Uuid, max: usize) -> Result<usize>;
    /// Up to `max` consumers of every organisation, in key order.
    fn consumers(&self, max: usize) -> Result<Vec<(Uuid, String, ConsumerState)>>;
    /// Writes a consumer's cursor (one key).
    fn consumer_put(&self, org: Uuid, name: &str, state: ConsumerState) -> Result<()>;
    /// A named consumer's cursor with the engine's version of it, for
    /// [`ExchangeLog::consumer_put_if`]. An engine one process owns answers 0: the store's
    /// lock already orders its writers.
    fn consumer_versioned(&self, org: Uuid, name: &str) -> Result<(Option<ConsumerState>, u64)> {
        Ok((self.consumer(org, name)?, 0))
    }
    /// Writes a consumer's cursor when its version is still `version` (as
    /// [`ExchangeLog::consumer_versioned`] answered it): `false` when another front end wrote
    /// it since. An engine one process owns simply writes it.
    fn consumer_put_if(
        &self,
        org: Uuid,
        name: &str,
        state: ConsumerState,
        version: u64,
    ) -> Result<bool> {
        let _ = version;
        self.consumer_put(org, name, state)?;
        Ok(true)
    }
    /// Removes a consumer; `true` when it existed.
    fn consumer_delete(&self, org: Uuid, name: &str) -> Result<bool>;

    /// A meta value.
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Writes a meta value at once.
    fn meta_put(&self, key: &'static str, value: Vec<u8>) -> Result<()>;

    /// An empty batch.
    fn batch(&self) -> Self::Batch;
    /// Applies a batch (see the [module docs](self) for the order). An engine shared by
    /// several processes answers [`Error::Conflict`] when another one appended first: the
    /// store then retries the request on fresh state.
    fn commit(&self, batch: Self::Batch) -> Result<()>;

    /// The function the group commit calls to make every commit so far durable.
    fn syncer(&self) -> sighthub_storage::commit::PersistFn;
    /// Makes everything written so far durable.
    fn persist(&self) -> Result<()>;
    /// Makes everything durable and leaves nothing to recover (clean shutdown).
    fn close(&self) -> Result<()>;

    /// Approximate numbers: (log records, known uuids).
    fn approximate_counts(&self) -> (usize, usize);

    /// Whether several processes may write to this engine at once (then a commit may answer
    /// [`Error::Conflict`], and the store keeps each request to retry it).
    fn shared(&self) -> bool {
        false
    }

    /// For an engine shared by several processes (front ends): calls `f` whenever the
    /// durable head moves, whoever wrote, so the store's durable watermark (what readers see,
    /// what long polls wait for) follows every writer. Default: never (one process).
    fn follow_head(&self, f: HeadFn) {
        drop(f);
    }

    /// The engine's own activity (memtables, flushes, compactions, journals, disk); `None`
    /// for an engine without such a thing.
    fn engine_stats(&self) -> Option<sighthub_storage::EngineStats> {
        None
    }

    /// Takes or renews the lease `name` for `holder` for `ttl_ms` milliseconds: `true` when
    /// `holder` holds it now. The one rule ([`crate::lease`]): it is granted when nobody holds
    /// it, when `holder` already does, or when its holder let it expire; else it is refused
    /// and nothing changes. `ttl_ms = 0` gives a held lease back (it expires at once).
    /// Default: granted (an engine that one process holds, the embedded one).
    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        let _ = (name, holder, ttl_ms);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{alternate_key, alternate_prefix, link_key, link_value};

    #[test]
    fn index_entries_decode_once_for_every_adapter() {
        let (target, source, org) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let k = link_key(target, source, &LinkRel::Group);
        let link = IncomingLink::decode(&k, &link_value(7, Some(org))).expect("a link");
        assert_eq!(
            link,
            IncomingLink {
                source,
                rel: LinkRel::Group,
                seq: 7,
                org: Some(org),
            }
        );
        assert!(IncomingLink::decode(&k[..20], &link_value(7, None)).is_err());
        assert!(IncomingLink::decode(&k, &[0; 8]).is_err());

        let prefix = alternate_prefix("alt-1").expect("fits");
        let key = alternate_key("alt-1", source).expect("fits");
        assert_eq!(alternate_uuid(&key, &prefix).expect("uuid"), source);
        assert!(alternate_uuid(&key[..key.len() - 1], &prefix).is_err());
        assert!(alternate_key(&"x".repeat(crate::record::MAX_ALTERNATE_LEN + 1), source).is_none());
    }
}
