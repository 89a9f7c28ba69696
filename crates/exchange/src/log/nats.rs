//! [`NatsLog`]: the exchange's storage on a NATS JetStream cluster (`[exchange] backend =
//! "nats"`), through `sighthub-nats`. Several sighthub front ends may share one.
//!
//! ## Layout (for `[exchange.nats] stream = "<s>"`)
//! - **the log**: the stream `<s>` (subject `<s>.log`), one message per record; **the log
//!   position is the stream sequence**. Every append carries `Nats-Expected-Last-Sequence`
//!   (the store's sequence must be the stream's: a front end that lost the race gets
//!   [`Error::Conflict`], and the store retries on fresh state) and `Nats-Msg-Id` (the
//!   message's uuid, or its content key for a bare event), so one message published through
//!   two front ends at once is stored once within the stream's duplicate window.
//! - **everything else** in the KV bucket `<s>_idx`, one key per entry:
//!   `s.<uuid>` the seen-set (written with `create`: put-if-absent), `c.<key>` the content
//!   window, `l.<target>.<h>` links (the value holds the whole index key), `a.<h>.<uuid>`
//!   alternates (`h` = SHA-256 of the alternate id), `k.<org>.<h>` named consumers (the value
//!   holds the name), `m.<name>` meta (organisation, instance), `o.<seq>` **overrides**: a
//!   re-tagged message "rewritten in place" on an append-only stream is written here and read
//!   through by [`ExchangeLog::record_at`] and [`ExchangeLog::range`]; `g.<h>` **leases**
//!   ([`ExchangeLog::lease`], `h` = SHA-256 of the lease name): the value is the expiry in
//!   unix milliseconds, a space, and the holder.
//! - **expiry of the bounded entries**: a content-window entry (`c.`) is written with a
//!   per-key TTL (`Nats-TTL`) of the content window plus [`TTL_MARGIN`], and a seen entry
//!   (`s.`) likewise when `seen_max_age` is set, so the bucket holds only what the dedup
//!   horizons can still use (on fjall, a compaction filter does the same). The store's rule
//!   ([`crate::store`]: an entry past its horizon is ignored) decides; the TTL only collects.
//! - the **epoch** of every cursor is the stream's creation time (a stream deleted and made
//!   again invalidates old cursors, as a new fjall database does).
//!
//! ## Durability and visibility
//! A publish is acknowledged by the stream leader once a quorum of replicas stored it (and,
//! with the servers' `sync_interval: always`, synced it to disk); [`ExchangeLog::commit`]
//! returns after every acknowledgement, so the group commit's sync has nothing left to do.
//! Each front end follows the stream's head ([`ExchangeLog::follow_head`]): a core
//! subscription to `<s>.log` wakes it on any front end's append, then the leader's state
//! (only what a quorum stored) moves the store's durable watermark; a poll every second
//! covers a lost wake-up. Range reads are batched direct gets answered only by a replica
//! holding the whole range (`min_last_seq`), never one record per round trip.
//!
//! ## Retention
//! The store's sweep (not stream limits): it removes the oldest records, which this adapter
//! turns into one purge below the first kept sequence, then the removed records' overrides
//! and index entries.
//!
//! ## Order of a commit
//! Appends first, as atomic batches (JetStream's atomic batch publish: the first message
//! expects the previous sequence, and the batch is stored whole or not at all, so a lost
//! race never leaves a later message of a request in the log without an earlier one); then
//! the index entries of what was appended, concurrently; then the overrides. A crash in
//! between leaves records without their indexes, never the reverse (see [`crate::log`]).

use bytes::Bytes;
use fjall::Slice;
use sha2::{Digest, Sha256};
use sighthub_nats::kv::Bucket;
use sighthub_nats::log::{Append, LogStream, READ_BATCH};
use sighthub_nats::{Nats, NatsConfig};
use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use uuid::Uuid;

use super::{ConsumerState, ExchangeLog, HeadFn, IncomingLink, LogBatch, META_EPOCH};
use crate::error::{Error, Result};
use crate::record::{alternate_prefix, link_key, link_value, LinkRel, Seen};
use crate::store::StoreOptions;

/// The JetStream adapter; see the [module docs](self).
pub struct NatsLog {
    nats: Nats,
    log: LogStream,
    idx: Bucket,
    epoch: u64,
    /// The stream's de-duplication window, in seconds.
    duplicate_window: u64,
    /// How long the bucket keeps a content-window entry, and a seen entry (`None`: forever).
    ttl: EntryTtl,
    /// Sequences with an override (`o.<seq>`): kept in memory so that a range read asks the
    /// bucket only for those. Filled at open, by this front end's writes and by a watch of
    /// the other front ends' (milliseconds behind them).
    overridden: Arc<RwLock<BTreeSet<u64>>>,
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn digest(b: &[u8]) -> String {
    hex(&Sha256::digest(b)[..16])
}

fn seen_key(uuid: &Uuid) -> String {
    format!("s.{}", uuid.simple())
}

fn content_key(key: &[u8; 16]) -> String {
    format!("c.{}", hex(key))
}

fn link_kv(target: &Uuid, full: &[u8]) -> String {
    format!("l.{}.{}", target.simple(), digest(full))
}

fn alternate_kv_prefix(alt: &str) -> Option<String> {
    alternate_prefix(alt).map(|p| format!("a.{}.", digest(&p)))
}

fn consumer_kv(org: Uuid, name: &str) -> String {
    format!("k.{}.{}", org.simple(), digest(name.as_bytes()))
}

fn override_key(seq: u64) -> String {
    format!("o.{seq}")
}

fn lease_key(name: &str) -> String {
    format!("g.{}", digest(name.as_bytes()))
}

/// A lease's value: `<expiry ms> <holder>`.
fn encode_lease(expiry_ms: u64, holder: &str) -> Bytes {
    Bytes::from(format!("{expiry_ms} {holder}"))
}

/// (expiry ms, holder) of a lease's value; a value that does not decode is a lease nobody
/// holds (expired at 0), so that it can be taken over rather than block the job for good.
fn decode_lease(v: &[u8]) -> (u64, &str) {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.split_once(' '))
        .and_then(|(e, h)| Some((e.parse().ok()?, h)))
        .unwrap_or((0, ""))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn meta_key(key: &str) -> String {
    format!("m.{key}")
}

fn encode_consumer(state: ConsumerState, name: &str) -> Bytes {
    let mut v = Vec::with_capacity(16 + name.len());
    v.extend_from_slice(&state.acked.to_le_bytes());
    v.extend_from_slice(&state.updated_at.to_le_bytes());
    v.extend_from_slice(name.as_bytes());
    Bytes::from(v)
}

fn decode_consumer(v: &[u8]) -> Result<(ConsumerState, String)> {
    let corrupt = || Error::corrupt("consumer entry");
    let acked = crate::record::le_u64(v.get(..8).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
    let updated_at =
        crate::record::le_u64(v.get(8..16).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
    let name = String::from_utf8(v[16..].to_vec()).map_err(|_| corrupt())?;
    Ok((ConsumerState { acked, updated_at }, name))
}

impl From<sighthub_nats::Error> for Error {
    fn from(e: sighthub_nats::Error) -> Self {
        match e {
            sighthub_nats::Error::Config(m) => Error::Config(m),
            sighthub_nats::Error::Conflict(m) => Error::Conflict(m),
            other => Error::Backend(other.to_string()),
        }
    }
}

/// Kept past an entry's horizon before the server removes it: covers a front end's clock a
/// little behind the servers' (front ends' clocks must agree to well under it; see
/// docs/SCALING.md).
pub const TTL_MARGIN: Duration = Duration::from_secs(5);

/// The expiry of the bucket's bounded entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntryTtl {
    content: Option<Duration>,
    seen: Option<Duration>,
}

impl EntryTtl {
    /// The store's horizons, plus [`TTL_MARGIN`]; a horizon of 0 (forever) keeps entries.
    fn of(opts: &StoreOptions) -> Self {
        let ttl = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs) + TTL_MARGIN);
        Self {
            content: ttl(opts.content_window),
            seen: ttl(opts.seen_max_age),
        }
    }
}

impl NatsLog {
    /// Connects to the cluster of `cfg` and opens (creating them when missing) the stream and
    /// the bucket, whose content-window and seen entries expire after the horizons of `opts`.
    /// An unreachable cluster is an error naming it.
    pub fn open(cfg: &NatsConfig, opts: &StoreOptions) -> Result<NatsLog> {
        let nats = Nats::connect(cfg)?;
        let (stream, bucket) = (cfg.stream_name(), cfg.bucket_name());
        let window = Duration::from_secs(cfg.duplicate_window_seconds.max(1));
        let n = nats.clone();
        let (log, idx, state) = nats.open(async move {
            let log = LogStream::open(&n, &stream, window).await?;
            let idx = Bucket::open(&n, &bucket).await?;
            let state = log.state().await?;
            Ok((log, idx, state))
        })?;
        let overridden = Arc::new(RwLock::new(BTreeSet::new()));
        let engine = NatsLog {
            nats,
            log,
            idx,
            epoch: state.created_ns,
            duplicate_window: window.as_secs(),
            ttl: EntryTtl::of(opts),
            overridden,
        };
        engine.watch_overrides()?;
        Ok(engine)
    }

    /// Loads the overridden sequences, then follows the other front ends' overrides.
    fn watch_overrides(&self) -> Result<()> {
        let idx = self.idx.clone();
        let listed = self.run(async move { idx.list("o.").await })?;
        {
            let mut set = self.overrides_mut();
            for (k, _) in listed {
                if let Some(seq) = k.strip_prefix("o.").and_then(|s| s.parse().ok()) {
                    set.insert(seq);
                }
            }
        }
        let (log, set) = (self.log.clone(), Arc::clone(&self.overridden));
        let idx = self.idx.clone();
        self.nats.spawn(async move {
            // Re-listing on a wake-up is cheap while overrides are few (tag updates only).
            let Ok(mut wake) = log.wakeups().await else {
                return;
            };
            use futures_util::StreamExt;
            while wake.next().await.is_some() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Ok(listed) = idx.list("o.").await {
                    let mut s = set
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for (k, _) in listed {
                        if let Some(seq) = k.strip_prefix("o.").and_then(|s| s.parse().ok()) {
                            s.insert(seq);
                        }
                    }
                }
            }
        });
        Ok(())
    }

    fn overrides_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeSet<u64>> {
        self.overridden
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_overridden(&self, seq: u64) -> bool {
        self.overridden
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&seq)
    }

    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = sighthub_nats::Result<T>> + Send + 'static,
    ) -> Result<T> {
        Ok(self.nats.run(fut)?)
    }

    /// Writes seen entries as they are (the copy of another engine's seen-set: no
    /// de-duplication rule applies, and a second copy rewrites the same values).
    pub fn put_seen_entries(&self, entries: Vec<(Uuid, Seen)>) -> Result<()> {
        let (idx, ttl) = (self.idx.clone(), self.ttl.seen);
        self.run(async move {
            let puts = entries.into_iter().map(|(u, s)| {
                let idx = idx.clone();
                async move {
                    idx.put_expiring(&seen_key(&u), Bytes::copy_from_slice(&s.encode()), ttl)
                        .await
                }
            });
            for r in futures_util::future::join_all(puts).await {
                r?;
            }
            Ok(())
        })
    }

    /// The bucket's keys under `prefix` (tests).
    #[cfg(test)]
    pub(crate) fn index_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let (idx, prefix) = (self.idx.clone(), prefix.to_owned());
        let listed = self.run(async move { idx.list(&prefix).await })?;
        Ok(listed.into_iter().map(|(k, _)| k).collect())
    }

    /// Opens the engine of `cfg`, creating its stream to start at `first` when it does not
    /// exist (the copy of a log whose oldest records were dropped).
    pub fn open_from(cfg: &NatsConfig, first: u64, opts: &StoreOptions) -> Result<NatsLog> {
        let nats = Nats::connect(cfg)?;
        let (stream, window) = (
            cfg.stream_name(),
            Duration::from_secs(cfg.duplicate_window_seconds.max(1)),
        );
        nats.open({
            let n = nats.clone();
            async move { LogStream::open_from(&n, &stream, window, Some(first)).await }
        })?;
        drop(nats);
        Self::open(cfg, opts)
    }

    /// The seen or content entries of `keys`, read together.
    fn get_seen_entries(&self, keys: Vec<String>, what: &'static str) -> Result<Vec<Option<Seen>>> {
        let idx = self.idx.clone();
        let got = self.run(async move { idx.get_many(keys).await })?;
        got.into_iter()
            .map(|v| {
                v.map(|v| Seen::decode(&v).ok_or_else(|| Error::corrupt(what)))
                    .transpose()
            })
            .collect()
    }

    /// The connection (the migration copies through it).
    pub fn nats(&self) -> &Nats {
        &self.nats
    }

    /// The stream's state.
    pub fn state(&self) -> Result<sighthub_nats::log::State> {
        let log = self.log.clone();
        self.run(async move { log.state().await })
    }
}

/// One write of a [`NatsBatch`].
enum Op {
    Record(u64, Slice),
    Rewrite(u64, Slice),
    RemoveRecord(u64),
    Seen(Uuid, Seen),
    Content([u8; 16], Seen),
    Link(Uuid, Vec<u8>, [u8; 24]),
    RemoveLink(Uuid, Vec<u8>),
    Alternate(String, Uuid, u64),
    RemoveAlternate(String, Uuid),
}

/// The writes of one commit, in order.
#[derive(Default)]
pub struct NatsBatch {
    ops: Vec<Op>,
}

impl LogBatch for NatsBatch {
    type Record = Slice;

    fn put_record(&mut self, seq: u64, record: Slice) {
        self.ops.push(Op::Record(seq, record));
    }

    fn rewrite_record(&mut self, seq: u64, record: Slice) {
        self.ops.push(Op::Rewrite(seq, record));
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
            target,
            link_key(target, source, rel),
            link_value(seq, org),
        ));
    }

    fn remove_link(&mut self, target: Uuid, source: Uuid, rel: &LinkRel) {
        self.ops
            .push(Op::RemoveLink(target, link_key(target, source, rel)));
    }

    fn put_alternate(&mut self, alt: &str, uuid: Uuid, seq: u64) {
        if let Some(p) = alternate_kv_prefix(alt) {
            self.ops.push(Op::Alternate(p, uuid, seq));
        }
    }

    fn remove_alternate(&mut self, alt: &str, uuid: Uuid) {
        if let Some(p) = alternate_kv_prefix(alt) {
            self.ops.push(Op::RemoveAlternate(p, uuid));
        }
    }

    fn put_meta(&mut self, _key: &'static str, _value: u64) {
        // The high-water mark and the log's bytes are the stream's own state.
    }
}

/// A key write of phase two.
enum KvWrite {
    /// A seen entry: `create` (the first acceptance), or `put` when it replaces one the
    /// store's horizon let go.
    Seen(String, Bytes),
    /// A content-window entry (expiring).
    Content(String, Bytes),
    Put(String, Bytes),
    Delete(String),
}

impl ExchangeLog for NatsLog {
    type Record = Slice;
    type Batch = NatsBatch;

    fn record(bytes: Vec<u8>) -> Slice {
        Slice::from(bytes)
    }

    fn bounds(&self) -> Result<Option<(u64, u64)>> {
        let s = self.state()?;
        // An emptied stream still reports where its sequence stands: the next append must
        // follow it.
        Ok((s.last > 0).then_some((s.first.max(1), s.last)))
    }

    fn record_at(&self, seq: u64) -> Result<Option<Slice>> {
        let (log, idx) = (self.log.clone(), self.idx.clone());
        let got = self.run(async move {
            // The write path asks the bucket every time: another front end may have
            // re-tagged it a moment ago.
            let key = override_key(seq);
            let (rec, ovr) = tokio::join!(log.get(seq), idx.get(&key));
            let rec = rec?;
            Ok(match (rec, ovr?) {
                (Some(_), Some(o)) => Some(o),
                (r, _) => r,
            })
        })?;
        Ok(got.map(|b| Slice::from(b.as_ref())))
    }

    fn range(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &Slice) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let mut next = from;
        while next <= to {
            let (log, idx) = (self.log.clone(), self.idx.clone());
            let wanted: Vec<u64> = {
                let set = self
                    .overridden
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                set.range(next..=to).take(READ_BATCH).copied().collect()
            };
            let page = self.run(async move {
                let page = log.read(next, to, READ_BATCH).await?;
                let last = page.last().map(|(s, _)| *s);
                let mut ovr = HashMap::new();
                for seq in wanted.into_iter().filter(|s| last.is_some_and(|l| *s <= l)) {
                    if let Some(v) = idx.get(&override_key(seq)).await? {
                        ovr.insert(seq, v);
                    }
                }
                Ok((page, ovr))
            })?;
            let (page, ovr) = page;
            let Some(&(last, _)) = page.last() else {
                break;
            };
            for (seq, rec) in &page {
                let rec = match ovr.get(seq) {
                    Some(o) => Slice::from(o.as_ref()),
                    None => Slice::from(rec.as_ref()),
                };
                if f(*seq, &rec)?.is_break() {
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
        let (idx, key) = (self.idx.clone(), seen_key(uuid));
        let v = self.run(async move { idx.get(&key).await })?;
        v.map(|v| Seen::decode(&v).ok_or_else(|| Error::corrupt("seen entry")))
            .transpose()
    }

    fn content(&self, key: &[u8; 16]) -> Result<Option<Seen>> {
        let (idx, key) = (self.idx.clone(), content_key(key));
        let v = self.run(async move { idx.get(&key).await })?;
        v.map(|v| Seen::decode(&v).ok_or_else(|| Error::corrupt("content entry")))
            .transpose()
    }

    fn seen_many(&self, uuids: &[Uuid]) -> Result<Vec<Option<Seen>>> {
        let keys: Vec<String> = uuids.iter().map(seen_key).collect();
        self.get_seen_entries(keys, "seen entry")
    }

    fn content_many(&self, keys: &[[u8; 16]]) -> Result<Vec<Option<Seen>>> {
        let keys: Vec<String> = keys.iter().map(content_key).collect();
        self.get_seen_entries(keys, "content entry")
    }

    fn each_content(&self, mut f: impl FnMut(&[u8; 16], Seen)) -> Result<()> {
        let idx = self.idx.clone();
        let all = self.run(async move { idx.list("c.").await })?;
        for (k, v) in all {
            let key = k
                .strip_prefix("c.")
                .and_then(unhex16)
                .ok_or_else(|| Error::corrupt("content key"))?;
            let seen = Seen::decode(&v).ok_or_else(|| Error::corrupt("content entry"))?;
            f(&key, seen);
        }
        Ok(())
    }

    fn links_to(
        &self,
        target: &Uuid,
        mut f: impl FnMut(IncomingLink) -> ControlFlow<()>,
    ) -> Result<()> {
        let (idx, prefix) = (self.idx.clone(), format!("l.{}.", target.simple()));
        let mut all = self.run(async move { idx.list(&prefix).await })?;
        // The value is the link value (24 bytes) then the whole index key: fjall's order.
        all.sort_by(|a, b| a.1.get(24..).cmp(&b.1.get(24..)));
        for (_, v) in all {
            let (val, key) = v.split_at(24.min(v.len()));
            if f(IncomingLink::decode(key, val)?).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn alternates(&self, alt: &str, mut f: impl FnMut(Uuid, u64) -> ControlFlow<()>) -> Result<()> {
        let Some(prefix) = alternate_kv_prefix(alt) else {
            return Ok(());
        };
        let idx = self.idx.clone();
        let p = prefix.clone();
        let mut all = self.run(async move { idx.list(&p).await })?;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in all {
            let uuid = k
                .strip_prefix(&prefix)
                .and_then(|u| Uuid::try_parse(u).ok())
                .ok_or_else(|| Error::corrupt("alternate key"))?;
            let seq = crate::record::le_u64(&v).ok_or_else(|| Error::corrupt("alternate"))?;
            if f(uuid, seq).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn consumer(&self, org: Uuid, name: &str) -> Result<Option<ConsumerState>> {
        let (idx, key) = (self.idx.clone(), consumer_kv(org, name));
        let v = self.run(async move { idx.get(&key).await })?;
        match v {
            Some(v) => {
                let (state, stored) = decode_consumer(&v)?;
                Ok((stored == name).then_some(state))
            }
            None => Ok(None),
        }
    }

    fn consumer_count(&self, org: Uuid, max: usize) -> Result<usize> {
        let (idx, prefix) = (self.idx.clone(), format!("k.{}.", org.simple()));
        let all = self.run(async move { idx.list(&prefix).await })?;
        Ok(all.len().min(max))
    }

    fn consumers(&self, max: usize) -> Result<Vec<(Uuid, String, ConsumerState)>> {
        let idx = self.idx.clone();
        let all = self.run(async move { idx.list("k.").await })?;
        let mut out = Vec::with_capacity(all.len());
        for (k, v) in all {
            let org = k
                .get(2..34)
                .and_then(|u| Uuid::try_parse(u).ok())
                .ok_or_else(|| Error::corrupt("consumer key"))?;
            let (state, name) = decode_consumer(&v)?;
            out.push((org, name, state));
        }
        out.sort_by(|a, b| (a.0, a.1.as_bytes()).cmp(&(b.0, b.1.as_bytes())));
        out.truncate(max);
        Ok(out)
    }

    fn consumer_put(&self, org: Uuid, name: &str, state: ConsumerState) -> Result<()> {
        let (idx, key, v) = (
            self.idx.clone(),
            consumer_kv(org, name),
            encode_consumer(state, name),
        );
        self.run(async move { idx.put(&key, v).await })
    }

    /// The version is the key's revision in the bucket (0 when absent or deleted).
    fn consumer_versioned(&self, org: Uuid, name: &str) -> Result<(Option<ConsumerState>, u64)> {
        let (idx, key) = (self.idx.clone(), consumer_kv(org, name));
        match self.run(async move { idx.entry(&key).await })? {
            Some((v, revision)) => {
                let (state, stored) = decode_consumer(&v)?;
                Ok(((stored == name).then_some(state), revision))
            }
            None => Ok((None, 0)),
        }
    }

    /// A compare-and-set on the key's revision (`create` when it had none).
    fn consumer_put_if(
        &self,
        org: Uuid,
        name: &str,
        state: ConsumerState,
        version: u64,
    ) -> Result<bool> {
        let (idx, key, v) = (
            self.idx.clone(),
            consumer_kv(org, name),
            encode_consumer(state, name),
        );
        self.run(async move {
            if version == 0 {
                idx.create(&key, v).await
            } else {
                idx.update(&key, v, version).await
            }
        })
    }

    fn consumer_delete(&self, org: Uuid, name: &str) -> Result<bool> {
        let (idx, key) = (self.idx.clone(), consumer_kv(org, name));
        self.run(async move { idx.delete(&key).await })
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if key == META_EPOCH {
            return Ok(Some(self.epoch.to_le_bytes().to_vec()));
        }
        if key == super::META_LOG_BYTES {
            return Ok(Some(self.state()?.bytes.to_le_bytes().to_vec()));
        }
        if key == super::META_SEQ {
            return Ok(Some(self.state()?.last.to_le_bytes().to_vec()));
        }
        let (idx, key) = (self.idx.clone(), meta_key(key));
        Ok(self
            .run(async move { idx.get(&key).await })?
            .map(|b| b.to_vec()))
    }

    fn meta_put(&self, key: &'static str, value: Vec<u8>) -> Result<()> {
        if key == META_EPOCH {
            return Ok(());
        }
        let (idx, key) = (self.idx.clone(), meta_key(key));
        self.run(async move { idx.put(&key, Bytes::from(value)).await })
    }

    fn batch(&self) -> NatsBatch {
        NatsBatch::default()
    }

    fn commit(&self, batch: NatsBatch) -> Result<()> {
        // Phase 0: retention (the oldest records, then what pointed at them).
        let mut purge_to: Option<u64> = None;
        let mut appends: Vec<Append> = Vec::new();
        let mut writes: Vec<(u64, KvWrite)> = Vec::new();
        let mut rewrites: Vec<(u64, Slice)> = Vec::new();
        let mut dropped_overrides = Vec::new();
        // (new entry, the seen or content key naming it, by content).
        let mut ids: Vec<(Seen, String, bool)> = Vec::new();
        for op in batch.ops {
            match op {
                Op::Record(seq, r) => appends.push(Append {
                    seq,
                    msg_id: None,
                    payload: Bytes::copy_from_slice(&r),
                }),
                Op::Rewrite(seq, r) => {
                    // A message of this very batch: rewrite it before it is sent.
                    match appends.iter_mut().find(|a| a.seq == seq) {
                        Some(a) => a.payload = Bytes::copy_from_slice(&r),
                        None => rewrites.push((seq, r)),
                    }
                }
                Op::RemoveRecord(seq) => {
                    purge_to = Some(purge_to.map_or(seq, |p| p.max(seq)));
                    if self.is_overridden(seq) {
                        dropped_overrides.push(seq);
                    }
                }
                Op::Seen(uuid, seen) => {
                    // Only a new message's entry names its de-duplication id.
                    if appends.iter().any(|a| a.seq == seen.seq) {
                        ids.push((seen, seen_key(&uuid), false));
                    }
                    writes.push((
                        seen.seq,
                        KvWrite::Seen(seen_key(&uuid), Bytes::copy_from_slice(&seen.encode())),
                    ));
                }
                Op::Content(key, seen) => {
                    // A bare event's uuid is new each time: its content is its identity.
                    if appends.iter().any(|a| a.seq == seen.seq) {
                        ids.push((seen, content_key(&key), true));
                    }
                    writes.push((
                        seen.seq,
                        KvWrite::Content(content_key(&key), Bytes::copy_from_slice(&seen.encode())),
                    ));
                }
                Op::Link(target, full, val) => {
                    let seq = crate::record::decode_link_value(&val).map_or(0, |(s, _)| s);
                    let mut v = val.to_vec();
                    v.extend_from_slice(&full);
                    writes.push((seq, KvWrite::Put(link_kv(&target, &full), Bytes::from(v))));
                }
                Op::RemoveLink(target, full) => {
                    writes.push((0, KvWrite::Delete(link_kv(&target, &full))));
                }
                Op::Alternate(prefix, uuid, seq) => writes.push((
                    seq,
                    KvWrite::Put(
                        format!("{prefix}{}", uuid.simple()),
                        Bytes::copy_from_slice(&seq.to_le_bytes()),
                    ),
                )),
                Op::RemoveAlternate(prefix, uuid) => {
                    writes.push((0, KvWrite::Delete(format!("{prefix}{}", uuid.simple()))));
                }
            }
        }
        let (log, idx) = (self.log.clone(), self.idx.clone());
        let (window, ttl) = (self.duplicate_window, self.ttl);
        let rewritten: Vec<u64> = rewrites.iter().map(|(s, _)| *s).collect();
        let outcome = self.run(async move {
            if let Some(p) = purge_to {
                log.purge_below(p + 1).await?;
                for seq in &dropped_overrides {
                    idx.delete(&override_key(*seq)).await?;
                }
            }
            // The de-duplication id of each new message: its seen (or content) key and the
            // generation it replaces (the sequence of an earlier acceptance that the store's
            // horizon let go, else 0). Two front ends accepting the same message at once
            // send the same id and the stream stores it once; a message accepted again after
            // its horizon gets a new id, so the stream's window never overrules the store.
            let previous = futures_util::future::join_all(ids.iter().map(|(_, key, _)| {
                let idx = idx.clone();
                let key = key.clone();
                async move { idx.get(&key).await }
            }))
            .await;
            let mut replaces_seen = std::collections::HashSet::new();
            for ((new, key, by_content), prev) in ids.into_iter().zip(previous) {
                let seq = new.seq;
                let prev = prev?.and_then(|v| Seen::decode(&v));
                if let Some(p) = prev {
                    if u64::from(new.at.saturating_sub(p.at)) < window {
                        // Accepted a moment ago, after the store looked: a front end racing
                        // this one. The store decides again, on what is there now.
                        return Err(sighthub_nats::Error::Conflict(format!(
                            "{key} was accepted at {} meanwhile",
                            p.seq
                        )));
                    }
                }
                let generation = prev.map_or(0, |s| s.seq);
                if generation > 0 && !by_content {
                    replaces_seen.insert(key.clone());
                }
                if let Some(a) = appends.iter_mut().find(|a| a.seq == seq) {
                    if by_content || a.msg_id.is_none() {
                        a.msg_id = Some(format!("{key}.{generation}"));
                    }
                }
            }
            let first_new = appends.first().map(|a| a.seq);
            let (done, appended) = log.append(appends).await;
            // The index entries of what was appended: all of it, or the first `done` items
            // (atomic batches: never a later item without an earlier one).
            let ok_to = match first_new {
                Some(f) => (f + done as u64).saturating_sub(1),
                None => 0,
            };
            let ok: std::collections::HashSet<u64> = first_new.map_or_else(Default::default, |f| (f..=ok_to).collect());
            let all = appended.is_ok();
            let writes = writes
                .into_iter()
                .filter(|(seq, _)| all || ok.contains(seq) || *seq == 0)
                .map(|(_, w)| {
                    let idx = idx.clone();
                    let replaces = &replaces_seen;
                    async move {
                        match w {
                            KvWrite::Seen(k, v) if replaces.contains(&k) => {
                                idx.put_expiring(&k, v, ttl.seen).await?
                            }
                            KvWrite::Seen(k, v) => {
                                if !idx.create_expiring(&k, v, ttl.seen).await? {
                                    tracing::warn!(key = %k, "a seen entry was already there (another front end)");
                                }
                            }
                            KvWrite::Content(k, v) => idx.put_expiring(&k, v, ttl.content).await?,
                            KvWrite::Put(k, v) => idx.put(&k, v).await?,
                            KvWrite::Delete(k) => {
                                idx.delete(&k).await?;
                            }
                        }
                        Ok::<(), sighthub_nats::Error>(())
                    }
                });
            // Concurrently: no order among index entries (see the module docs).
            for r in futures_util::future::join_all(writes).await {
                r?;
            }
            appended?;
            for (seq, r) in rewrites {
                idx.put(&override_key(seq), Bytes::copy_from_slice(&r))
                    .await?;
            }
            Ok(())
        });
        if outcome.is_ok() {
            let mut set = self.overrides_mut();
            set.extend(rewritten);
            if let Some(p) = purge_to {
                let keep = set.split_off(&(p + 1));
                *set = keep;
            }
        }
        outcome
    }

    fn syncer(&self) -> sighthub_storage::commit::PersistFn {
        // Every commit returned after its acknowledgements: nothing left to sync.
        Box::new(|| Ok(()))
    }

    fn persist(&self) -> Result<()> {
        Ok(())
    }

    fn close(&self) -> Result<()> {
        Ok(())
    }

    fn approximate_counts(&self) -> (usize, usize) {
        self.state()
            .map(|s| (usize::try_from(s.messages).unwrap_or(usize::MAX), 0))
            .unwrap_or((0, 0))
    }

    fn shared(&self) -> bool {
        true
    }

    /// The rule of [`ExchangeLog::lease`] by compare-and-set on the bucket: a lease nobody
    /// took is created (put-if-absent); one of `holder`, or expired, is rewritten expecting
    /// the revision read (so of two front ends taking an expired lease at once, one wins).
    /// Expiries are the writers' wall clocks: front ends keep their clocks in sync (NTP) to
    /// well under the lease's duration.
    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        let (idx, key, holder) = (self.idx.clone(), lease_key(name), holder.to_owned());
        self.run(async move {
            let now = unix_ms();
            let value = encode_lease(now.saturating_add(ttl_ms), &holder);
            match idx.entry(&key).await? {
                None => idx.create(&key, value).await,
                Some((current, revision)) => {
                    let (expiry, by) = decode_lease(&current);
                    if by == holder || expiry <= now {
                        idx.update(&key, value, revision).await
                    } else {
                        Ok(false)
                    }
                }
            }
        })
    }

    fn follow_head(&self, f: HeadFn) {
        let log = self.log.clone();
        self.nats.spawn(async move {
            use futures_util::StreamExt;
            let mut wake = log.wakeups().await.ok();
            let mut known = 0u64;
            loop {
                match wake.as_mut() {
                    Some(w) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), w.next()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(1)).await,
                }
                // Coalesce a burst of wake-ups into one state request.
                if let Some(w) = wake.as_mut() {
                    for _ in 0..4096 {
                        match tokio::time::timeout(Duration::from_millis(1), w.next()).await {
                            Ok(Some(_)) => {}
                            _ => break,
                        }
                    }
                }
                // A wake-up arrives when the leader receives a message, before a quorum
                // stored it: ask until the head moved (a few times), then wait again.
                for attempt in 0..6u64 {
                    if let Ok(s) = log.state().await {
                        f(s.first, s.last);
                        if s.last > known {
                            known = s.last;
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1 << attempt)).await;
                }
            }
        });
    }
}

fn unhex16(h: &str) -> Option<[u8; 16]> {
    if h.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
