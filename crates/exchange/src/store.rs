//! The exchange's rules over its storage: de-duplication, sequence numbers, the authority
//! of updates and withdrawals, tag merging, retention, consumer cursors and the durable
//! watermark, in [`ExchangeStore`], generic over the engine below ([`crate::log`]: fjall on
//! disk, or memory).
//!
//! ## Durability contract (the exchange half)
//! - **Accepted means durable.** [`ExchangeStore::publish`] (the one publish pipeline) answers
//!   only after the group commit's fsync covered the request's writes
//!   ([`ExchangeStore::wait_durable`]): an outcome `accepted` (or `duplicate`, `tag_update`)
//!   that a client, a transport or a relay receives survives a crash. Append and wait run in
//!   a task of their own, so a caller that goes away does not stop what it wrote from
//!   becoming durable and visible.
//! - **Readers see only durable entries.** The log is read up to the **durable watermark**
//!   ([`ExchangeStore::durable`]), which moves only after a sync ([`ExchangeStore::mark_durable`]);
//!   lookups (`get_seq`, `lookup`, links, alternates) and scans apply the same bound. A message
//!   that a crash could still lose is never delivered, so a sequence number once delivered
//!   never changes meaning and a cursor never skips anything. Long-polling readers watch the
//!   same number ([`ExchangeStore::subscribe`]). A duplicate of a message not yet durable
//!   waits for the same fsync as its original.
//! - **Dedup horizon.** A uuid is a duplicate for `seen_max_age` seconds after it was accepted
//!   (0, the default: forever); a message without uuid is a duplicate of the same content from
//!   the same organisation within `content_window` seconds. Expired entries are ignored on
//!   lookup and removed by the engine when it can (fjall: a compaction filter).
//! - **Retention** ([`ExchangeStore::sweep`]) drops the oldest durable records by age and
//!   total size, with their link index entries; `seen` outlives the log. A cursor from before
//!   the first record left is answered with `truncated`.
//! - Consumer cursors are durable once their ticket is waited for; they never move back.
//! - The sightings half differs: a sighting write is visible to readers before its fsync
//!   (see `sighthub_storage`); the exchange never shows what is not durable.
//!
//! ## Write path
//! [`ExchangeStore::append`] takes the messages of one request, already parsed and checked
//! for access ([`Prepared`]), and under one writer mutex: looks each uuid up in `seen` (and
//! each uuid-less message's content key in `content`), assigns the next sequence numbers,
//! checks the organisation of the messages that updates and withdrawals point at, applies the
//! refusal policy ([`OnRefusal`]) and commits **one engine batch** for the request (log
//! records, seen, content, links, alternates, the high-water marks). It then issues a
//! [`GroupCommit`] ticket; [`ExchangeStore::publish`] waits for it.

use sighthub_iep04::{takes_effect, Claim, Message};
use sighthub_storage::{GroupCommit, Ticket};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Error, Refusal, Result};
use crate::filter::ContentFilter;
use crate::log::{
    AnyLog, ExchangeLog, FjallLog, LogBatch, MemoryLog, NatsLog, META_EPOCH, META_INSTANCE,
    META_LOG_BYTES, META_ORG, META_SEQ,
};
pub use crate::log::{ConsumerState, IncomingLink, Stored};
use crate::record::{
    self, encode_log, le_u64, secs32, set_accepted_at, EntryKind, LinkRel, LogEntry, Seen,
};

/// Tunables of the exchange store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Block cache in bytes.
    pub cache_bytes: u64,
    /// Seconds a content key stays a duplicate.
    pub content_window: u64,
    /// Seconds a uuid stays a duplicate (0 = forever).
    pub seen_max_age: u64,
    /// Log retention by age in seconds (0 = forever).
    pub log_max_age: u64,
    /// Log retention by size in bytes (0 = unlimited).
    pub log_max_bytes: u64,
    /// Bytes per generation of the in-memory filter in front of `content` (0 = none); see
    /// [`crate::filter`].
    pub content_filter_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 32 * 1024 * 1024,
            content_window: 3600,
            seen_max_age: 0,
            log_max_age: 0,
            log_max_bytes: 0,
            content_filter_bytes: 8 * 1024 * 1024,
        }
    }
}

/// One message of a publish request, parsed, normalised, access-checked and encoded.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `meta.uuid` (assigned by the hub for bare events).
    pub uuid: Uuid,
    /// `meta.uuid_org`.
    pub org: Option<Uuid>,
    /// For a message that arrived without a uuid: its content key (de-duplicated within the
    /// content window instead of by uuid).
    pub content_key: Option<[u8; 16]>,
    /// The encoded log record (`accepted_at` is set at commit).
    pub record: Vec<u8>,
    /// No payload (absent or `{}`): with a known uuid this is a tag update.
    pub empty_payload: bool,
    /// `meta.tags`, merged into the earlier message by a tag update.
    pub tags: Vec<String>,
    /// Link index entries: (target, how this message links to it).
    pub links: Vec<(Uuid, LinkRel)>,
    /// Opaque alternate ids, indexed too.
    pub alternates: Vec<String>,
    /// Messages this one claims to withdraw or replace ([`sighthub_iep04::claims`]); they
    /// take effect only within one organisation ([`sighthub_iep04::takes_effect`]).
    pub marks: Vec<Claim>,
}

/// What became of one prepared message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New: appended at `seq`.
    Accepted {
        /// Its sequence number.
        seq: u64,
    },
    /// A tag update of the message at `target`, logged at `seq`.
    Updated {
        /// Sequence number of the update entry.
        seq: u64,
        /// Sequence number of the message whose tags changed.
        target: u64,
    },
    /// Already accepted at `seq` (by uuid, or by content for a message without uuid).
    Duplicate {
        /// Sequence number of the first copy.
        seq: u64,
        /// Found by content hash rather than by uuid.
        by_content: bool,
    },
    /// An empty payload for a uuid the hub does not know: nothing to update.
    UnknownTarget,
    /// A tag update of a message already dropped from the log by retention.
    Gone {
        /// Where it was.
        seq: u64,
    },
}

/// What the store does with a message it refuses (an update, withdrawal or replacement of
/// another organisation's message; a tag update over [`MAX_TAGS_PER_MESSAGE`]). The policy
/// each caller gets is in [`ExchangeStore::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefusal {
    /// Refuse the whole request: nothing is written, the error lists every refusal
    /// ([`Error::Refused`], 403).
    RefuseRequest,
    /// Leave the refused messages out, store the others, and report the refusals in the
    /// outcomes.
    SkipRefused,
}

/// The result of [`ExchangeStore::append`].
#[derive(Debug)]
pub struct Appended {
    /// One per prepared message, in order: what became of it, or (only with
    /// [`OnRefusal::SkipRefused`]) why it was refused.
    pub outcomes: Vec<Result<Outcome, String>>,
    /// How many were refused (and left out).
    pub refused: usize,
    /// Wait for it before answering.
    pub ticket: Ticket,
    /// Highest sequence number committed when the ticket was issued: durable once it is.
    pub high: u64,
}

/// The result of [`ExchangeStore::publish`]: every stored outcome is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// One per prepared message, in order: what became of it, or (only with
    /// [`OnRefusal::SkipRefused`]) why it was refused and left out.
    pub outcomes: Vec<Result<Outcome, String>>,
    /// How many were refused.
    pub refused: usize,
}

/// How far a scan went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// Last sequence number examined (the next cursor); `after` when nothing was.
    pub last: u64,
    /// The scan reached the durable end of the log.
    pub at_end: bool,
    /// Messages between `after` and the first one still in the log were dropped by retention.
    pub truncated: bool,
}

/// What a retention sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Log records dropped.
    pub removed: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The seen and content entries of one request, read before it is decided
/// ([`ExchangeStore::read_known`]): where each was accepted, `None` when unknown or past its
/// horizon.
struct Known {
    seen: HashMap<Uuid, Option<u64>>,
    content: HashMap<[u8; 16], Option<u64>>,
}

struct WriterState {
    /// Next sequence number to hand out (1-based: 0 means "before the first").
    next_seq: u64,
    /// Total bytes of the records in the log.
    log_bytes: u64,
    /// "Certainly new" answers for content keys, without touching the keyspace.
    filter: Option<ContentFilter>,
}

/// The exchange's state and rules over an engine `L`; see the module docs. `L` defaults to
/// the configured engine ([`AnyLog`]: fjall, opened with [`ExchangeStore::open`], or NATS
/// JetStream, with [`ExchangeStore::open_nats`]).
pub struct ExchangeStore<L: ExchangeLog = AnyLog> {
    // Declared first so its thread is joined before the engine is dropped.
    commit: GroupCommit,
    engine: L,
    /// Serialises de-duplication + sequence assignment + batch commit; never held across an
    /// await (the write path runs on a blocking thread).
    writer: Mutex<WriterState>,
    /// Serialises read-modify-write of consumer cursors.
    consumer_lock: Mutex<()>,
    /// Highest sequence number known durable: what readers may see (shared with the engine's
    /// head follower, [`ExchangeLog::follow_head`]).
    durable: Arc<watch::Sender<u64>>,
    /// Lowest sequence number that may still be in the log (retention moves it up), so that
    /// scans never wade through the tombstones of dropped records.
    first_seq: Arc<AtomicU64>,
    epoch: u64,
    org: Uuid,
    instance: Uuid,
    opts: StoreOptions,
    /// What the publish pipeline answered, by kind (`ExchangeStore::counters`), since start.
    counters: PublishCounters,
}

/// What [`ExchangeStore::publish`] answered since start, by kind: every path that publishes
/// (HTTP, IntelMQ transports, relay pulls) is counted here, once.
#[derive(Debug, Default)]
pub struct PublishCounters {
    /// New messages appended.
    pub accepted: AtomicU64,
    /// Tag updates of known messages.
    pub updated: AtomicU64,
    /// Duplicates found by uuid.
    pub duplicate_uuid: AtomicU64,
    /// Duplicates found by content (bare events without uuid, within the window).
    pub duplicate_content: AtomicU64,
    /// Messages refused by the store's rules (another organisation's message, limits).
    pub refused: AtomicU64,
    /// Updates of unknown or dropped messages (nothing to do).
    pub ignored: AtomicU64,
}

impl PublishCounters {
    fn count(&self, outcomes: &[std::result::Result<Outcome, String>], refused: usize) {
        let add = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        for o in outcomes {
            match o {
                Ok(Outcome::Accepted { .. }) => add(&self.accepted),
                Ok(Outcome::Updated { .. }) => add(&self.updated),
                Ok(Outcome::Duplicate {
                    by_content: true, ..
                }) => add(&self.duplicate_content),
                Ok(Outcome::Duplicate { .. }) => add(&self.duplicate_uuid),
                Ok(Outcome::UnknownTarget | Outcome::Gone { .. }) => add(&self.ignored),
                Err(_) => {}
            }
        }
        self.refused.fetch_add(refused as u64, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ExchangeStore<AnyLog> {
    /// Opens (or creates) the exchange database in `dir` ([`FjallLog`]); see
    /// [`ExchangeStore::with_engine`].
    pub fn open(
        dir: &Path,
        opts: StoreOptions,
        org: Option<Uuid>,
        instance: Option<Uuid>,
    ) -> Result<Self> {
        let engine = FjallLog::open(dir, &opts)?;
        Self::with_engine(AnyLog::Fjall(engine), opts, org, instance)
    }

    /// Opens (or creates) the exchange's stream and bucket on the NATS JetStream cluster of
    /// `nats` ([`NatsLog`]); an unreachable cluster is an error naming it.
    pub fn open_nats(
        nats: &sighthub_nats::NatsConfig,
        opts: StoreOptions,
        org: Option<Uuid>,
        instance: Option<Uuid>,
    ) -> Result<Self> {
        let engine = NatsLog::open(nats, &opts)?;
        Self::with_engine(AnyLog::Nats(Box::new(engine)), opts, org, instance)
    }

    /// Bytes on disk of the `seen` keyspace (tests and the status route); 0 on JetStream.
    pub fn seen_disk_space(&self) -> u64 {
        match &self.engine {
            AnyLog::Fjall(l) => l.seen_disk_space(),
            AnyLog::Nats(_) => 0,
        }
    }
}

impl ExchangeStore<MemoryLog> {
    /// An exchange store in memory ([`MemoryLog`]): tests.
    pub fn in_memory(
        opts: StoreOptions,
        org: Option<Uuid>,
        instance: Option<Uuid>,
    ) -> Result<Self> {
        Self::with_engine(MemoryLog::new(), opts, org, instance)
    }
}

impl<L: ExchangeLog> ExchangeStore<L> {
    /// The store over `engine`. Start-up reads a few meta values and the log's bounds, and
    /// the live content keys into the filter (bounded by the content window); the log is
    /// never scanned, whatever its size.
    ///
    /// `org` / `instance`: the configured identity; when absent, the stored one (generated
    /// on the first start) is used.
    pub fn with_engine(
        engine: L,
        opts: StoreOptions,
        org: Option<Uuid>,
        instance: Option<Uuid>,
    ) -> Result<Self> {
        let get_u64 = |k: &str| -> Result<Option<u64>> {
            match engine.meta(k)? {
                Some(v) => Ok(Some(
                    le_u64(&v).ok_or_else(|| Error::corrupt("meta value"))?,
                )),
                None => Ok(None),
            }
        };
        let mut wrote_meta = false;
        let epoch = match get_u64(META_EPOCH)? {
            Some(e) => e,
            None => {
                let e = Uuid::new_v4().as_u64_pair().0;
                engine.meta_put(META_EPOCH, e.to_le_bytes().to_vec())?;
                wrote_meta = true;
                e
            }
        };
        let mut identity = |key: &'static str, configured: Option<Uuid>| -> Result<Uuid> {
            let stored = engine
                .meta(key)?
                .map(|v| Uuid::from_slice(&v).map_err(|_| Error::corrupt("meta uuid")))
                .transpose()?;
            let id = configured.or(stored).unwrap_or_else(Uuid::new_v4);
            if stored != Some(id) {
                engine.meta_put(key, id.as_bytes().to_vec())?;
                wrote_meta = true;
            }
            Ok(id)
        };
        let org = identity(META_ORG, org)?;
        let instance = identity(META_INSTANCE, instance)?;
        let bounds = engine.bounds()?;
        let last = bounds
            .map_or(0, |(_, last)| last)
            .max(get_u64(META_SEQ)?.unwrap_or(0));
        let first = bounds.map_or(last + 1, |(first, _)| first);
        let log_bytes = get_u64(META_LOG_BYTES)?.unwrap_or(0);
        let filter = match opts.content_filter_bytes {
            0 => None,
            bytes => {
                // The live entries only: bounded by the content window.
                let now = now_secs();
                let mut f = ContentFilter::new(bytes, opts.content_window, now);
                engine.each_content(|key, s| {
                    if s.alive(opts.content_window, now) {
                        f.insert(key, now);
                    }
                })?;
                Some(f)
            }
        };
        if wrote_meta {
            // The epoch is part of every cursor handed out: durable before the first one.
            engine.persist()?;
        }
        let commit = GroupCommit::start(engine.syncer())?;
        let durable = Arc::new(watch::channel(last).0);
        let first_seq = Arc::new(AtomicU64::new(first));
        {
            // Other front ends' appends (an engine shared by several processes).
            let (durable, first_seq) = (Arc::clone(&durable), Arc::clone(&first_seq));
            engine.follow_head(Box::new(move |first, last| {
                first_seq.fetch_max(first, Ordering::AcqRel);
                durable.send_if_modified(|d| {
                    if last > *d {
                        *d = last;
                        true
                    } else {
                        false
                    }
                });
            }));
        }
        Ok(Self {
            commit,
            engine,
            writer: Mutex::new(WriterState {
                next_seq: last + 1,
                log_bytes,
                filter,
            }),
            consumer_lock: Mutex::new(()),
            counters: PublishCounters::default(),
            durable,
            first_seq,
            epoch,
            org,
            instance,
            opts,
        })
    }

    /// The engine below the rules (tests: every other write goes through the rules).
    #[cfg(test)]
    pub(crate) fn engine(&self) -> &L {
        &self.engine
    }

    /// The random number fixed when the database was created (part of every cursor).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This hub's organisation.
    pub fn org(&self) -> Uuid {
        self.org
    }

    /// This hub's instance uuid.
    pub fn instance(&self) -> Uuid {
        self.instance
    }

    /// The group commit (to wait for tickets, and to report durability).
    pub fn group_commit(&self) -> &GroupCommit {
        &self.commit
    }

    /// Highest durable sequence number: readers see the log up to here.
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Lowest sequence number that may still be in the log.
    pub fn first_seq(&self) -> u64 {
        self.first_seq.load(Ordering::Acquire)
    }

    /// Watches [`Self::durable`] (long-poll).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Publishes `high` as durable (after its ticket was synced). Never moves backwards.
    pub fn mark_durable(&self, high: u64) {
        self.durable.send_if_modified(|d| {
            if high > *d {
                *d = high;
                true
            } else {
                false
            }
        });
    }

    /// Bytes of records currently in the log.
    pub fn log_bytes(&self) -> u64 {
        lock(&self.writer).log_bytes
    }

    /// The dedup horizon of uuids: where `uuid` was accepted, unless it expired.
    fn seen_lookup(&self, uuid: &Uuid, now: u64) -> Result<Option<u64>> {
        Ok(self.seen_alive(self.engine.seen(uuid)?, now))
    }

    /// The one rule of the uuid horizon, applied to an entry read from the engine.
    fn seen_alive(&self, seen: Option<Seen>, now: u64) -> Option<u64> {
        seen.filter(|s| s.alive(self.opts.seen_max_age, now))
            .map(|s| s.seq)
    }

    /// The one rule of the content window, applied to an entry read from the engine.
    fn content_alive(&self, seen: Option<Seen>, now: u64) -> Option<u64> {
        seen.filter(|s| s.alive(self.opts.content_window, now))
            .map(|s| s.seq)
    }

    /// Reads together every seen and content entry a request's decisions need (the uuids
    /// of its messages and of what they withdraw or replace; the content keys the window's
    /// filter does not rule out), so that an engine across the network answers them in one
    /// round trip rather than one per message.
    fn read_known(
        &self,
        items: &[Prepared],
        filter: &mut Option<ContentFilter>,
        now: u64,
    ) -> Result<Known> {
        let mut uuids = Vec::new();
        let mut keys = Vec::new();
        for item in items {
            match item.content_key {
                Some(ck) => {
                    if filter.as_mut().is_none_or(|f| f.maybe(&ck, now)) {
                        keys.push(ck);
                    }
                }
                None => uuids.push(item.uuid),
            }
            uuids.extend(item.marks.iter().map(|c| c.target));
        }
        uuids.sort_unstable();
        uuids.dedup();
        keys.sort_unstable();
        keys.dedup();
        let seen = self.engine.seen_many(&uuids)?;
        let content = self.engine.content_many(&keys)?;
        Ok(Known {
            seen: uuids
                .into_iter()
                .zip(seen)
                .map(|(u, s)| (u, self.seen_alive(s, now)))
                .collect(),
            content: keys
                .into_iter()
                .zip(content)
                .map(|(k, s)| (k, self.content_alive(s, now)))
                .collect(),
        })
    }

    /// Appends one request's messages; see the module docs. With
    /// [`OnRefusal::RefuseRequest`] a refusal writes nothing and returns
    /// `Err(Error::Refused)` listing every refused message; with [`OnRefusal::SkipRefused`]
    /// the refused messages are left out (as if they were not in the request) and reported in
    /// [`Appended::outcomes`]. Not durable yet: wait for the ticket (or call
    /// [`ExchangeStore::publish`], which does).
    ///
    /// On an engine shared by several front ends, a request that lost the race for its
    /// sequence numbers ([`Error::Conflict`]) is decided again on fresh state (the seen-set
    /// and the log's head re-read), up to [`MAX_CONFLICT_RETRIES`] times; then 503.
    pub fn append(
        &self,
        items: Vec<Prepared>,
        now: u64,
        on_refusal: OnRefusal,
    ) -> Result<Appended> {
        if !self.engine.shared() {
            return self.try_append(items, now, on_refusal);
        }
        let mut last = String::new();
        for attempt in 0..MAX_CONFLICT_RETRIES {
            match self.try_append(items.clone(), now, on_refusal) {
                Err(Error::Conflict(why)) => {
                    last = why;
                    // Let the other writer finish its index entries.
                    std::thread::sleep(std::time::Duration::from_millis(
                        1 + u64::from(attempt % 16) * 2,
                    ));
                }
                other => return other,
            }
        }
        Err(Error::Backend(format!(
            "{MAX_CONFLICT_RETRIES} lost races with other front ends in a row ({last})"
        )))
    }

    fn try_append(
        &self,
        items: Vec<Prepared>,
        now: u64,
        on_refusal: OnRefusal,
    ) -> Result<Appended> {
        let mut st = lock(&self.writer);
        if self.commit.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let at = secs32(now);
        let prior = self.read_known(&items, &mut st.filter, now)?;
        let mut batch = self.engine.batch();
        let mut new_uuids: HashMap<Uuid, u64> = HashMap::new();
        let mut new_content: HashMap<[u8; 16], u64> = HashMap::new();
        // Records written by this batch, for updates and marks that refer to them.
        let mut pending: HashMap<u64, L::Record> = HashMap::new();
        let mut outcomes: Vec<Result<Outcome, String>> = Vec::with_capacity(items.len());
        let mut refused = Vec::new();
        let mut next = st.next_seq;
        let mut bytes = i128::from(st.log_bytes);
        let mut wrote = false;
        let durable = self.durable();
        let mut refers_to_pending = false;
        let mut refuse = |index: usize, reason: String, outcomes: &mut Vec<_>| {
            if on_refusal == OnRefusal::SkipRefused {
                outcomes.push(Err(reason.clone()));
            }
            refused.push(Refusal { index, reason });
        };

        for (index, mut item) in items.into_iter().enumerate() {
            if let Some(ck) = item.content_key {
                let dup = match new_content.get(&ck) {
                    Some(&seq) => Some(seq),
                    None => prior.content.get(&ck).copied().flatten(),
                };
                if let Some(seq) = dup {
                    refers_to_pending |= seq > durable;
                    outcomes.push(Ok(Outcome::Duplicate {
                        seq,
                        by_content: true,
                    }));
                    continue;
                }
            }
            // A message with a content key got its uuid here, just now: it cannot be known.
            let known = match new_uuids.get(&item.uuid) {
                Some(&seq) => Some(seq),
                None if item.content_key.is_some() => None,
                None => prior.seen.get(&item.uuid).copied().flatten(),
            };
            if let Some(target) = known {
                if !item.empty_payload {
                    refers_to_pending |= target > durable;
                    outcomes.push(Ok(Outcome::Duplicate {
                        seq: target,
                        by_content: false,
                    }));
                    continue;
                }
                // A tag update (AIL stream rule): empty payload, known uuid.
                let old = match pending.get(&target) {
                    Some(v) => Some(v.clone()),
                    None => self.engine.record_at(target)?,
                };
                let Some(old) = old else {
                    outcomes.push(Ok(Outcome::Gone { seq: target }));
                    continue;
                };
                let old_entry =
                    record::decode_log(old.as_ref()).ok_or_else(|| Error::corrupt("log record"))?;
                if !takes_effect(item.org, old_entry.org) {
                    refuse(
                        index,
                        "may not update the tags of another organisation's message".into(),
                        &mut outcomes,
                    );
                    continue;
                }
                let rewritten = match retag(&old_entry, &item.tags)? {
                    Retag::Rewritten(r) => r,
                    Retag::Unchanged => {
                        refers_to_pending |= target > durable;
                        outcomes.push(Ok(Outcome::Duplicate {
                            seq: target,
                            by_content: false,
                        }));
                        continue;
                    }
                    Retag::TooMany => {
                        refuse(
                            index,
                            format!(
                                "a message holds at most {MAX_TAGS_PER_MESSAGE} tags \
                                 (limit MAX_TAGS_PER_MESSAGE)"
                            ),
                            &mut outcomes,
                        );
                        continue;
                    }
                };
                bytes += rewritten.len() as i128 - old.as_ref().len() as i128;
                let rewritten = L::record(rewritten);
                batch.rewrite_record(target, rewritten.clone());
                pending.insert(target, rewritten);
                let seq = next;
                next += 1;
                set_kind_update(&mut item.record);
                set_accepted_at(&mut item.record, now);
                bytes += item.record.len() as i128;
                batch.put_record(seq, L::record(item.record));
                wrote = true;
                outcomes.push(Ok(Outcome::Updated { seq, target }));
                continue;
            }
            if item.empty_payload && item.links.is_empty() && item.alternates.is_empty() {
                outcomes.push(Ok(Outcome::UnknownTarget));
                continue;
            }
            // Withdrawals and replacements: only of the same organisation's messages
            // (sighthub_iep04::authority). A claim on a message this hub does not have is
            // kept as data and does nothing.
            let mut ok = true;
            for claim in &item.marks {
                let tseq = match new_uuids.get(&claim.target) {
                    Some(&s) => Some(s),
                    None => prior.seen.get(&claim.target).copied().flatten(),
                };
                let Some(tseq) = tseq else { continue };
                let rec = match pending.get(&tseq) {
                    Some(v) => Some(v.clone()),
                    None => self.engine.record_at(tseq)?,
                };
                if let Some(rec) = rec {
                    let e = record::decode_log(rec.as_ref())
                        .ok_or_else(|| Error::corrupt("log record"))?;
                    if !takes_effect(item.org, e.org) {
                        ok = false;
                    }
                }
            }
            if !ok {
                refuse(
                    index,
                    "may not withdraw or replace another organisation's message".into(),
                    &mut outcomes,
                );
                continue;
            }
            let seq = next;
            next += 1;
            set_accepted_at(&mut item.record, now);
            bytes += item.record.len() as i128;
            // The record first, then what indexes it (see `crate::log`).
            let record = L::record(item.record);
            batch.put_record(seq, record.clone());
            pending.insert(seq, record);
            let seen = Seen { seq, at };
            batch.put_seen(&item.uuid, seen);
            new_uuids.insert(item.uuid, seq);
            if let Some(ck) = item.content_key {
                batch.put_content(&ck, seen);
                new_content.insert(ck, seq);
                if let Some(f) = st.filter.as_mut() {
                    f.insert(&ck, now);
                }
            }
            for (target, rel) in &item.links {
                batch.put_link(*target, item.uuid, rel, seq, item.org);
            }
            for alt in &item.alternates {
                batch.put_alternate(alt, item.uuid, seq);
            }
            wrote = true;
            outcomes.push(Ok(Outcome::Accepted { seq }));
        }
        if !refused.is_empty() && on_refusal == OnRefusal::RefuseRequest {
            return Err(Error::Refused(refused));
        }
        if wrote {
            let log_bytes = u64::try_from(bytes.max(0)).unwrap_or(u64::MAX);
            batch.put_meta(META_SEQ, next - 1);
            batch.put_meta(META_LOG_BYTES, log_bytes);
            if let Err(e) = self.engine.commit(batch) {
                if matches!(e, Error::Conflict(_)) {
                    // Another front end appended: start again from the log's head.
                    let head = self.engine.bounds()?.map_or(0, |(_, last)| last);
                    st.next_seq = st.next_seq.max(head + 1);
                    if let Some(b) = self.engine.meta(META_LOG_BYTES)?.and_then(|v| le_u64(&v)) {
                        st.log_bytes = b;
                    }
                }
                return Err(e);
            }
            st.next_seq = next;
            st.log_bytes = log_bytes;
        }
        let high = st.next_seq - 1;
        // A duplicate of a message not yet durable waits for the same fsync as its original.
        let ticket = if wrote || refers_to_pending {
            self.commit.issue()?
        } else {
            Ticket::NONE
        };
        drop(st);
        Ok(Appended {
            outcomes,
            refused: refused.len(),
            ticket,
            high,
        })
    }

    /// **The publish pipeline**, the one way into the log: appends `items` (prepared by
    /// [`crate::ingest`]) on a blocking thread, applies `on_refusal`, waits until what was
    /// written is durable, and returns one outcome per item. Nothing it reports as stored can
    /// be lost by a crash (see the module docs). Append and wait run in a task of their own:
    /// a caller that is dropped (a client hanging up) does not keep what was written from
    /// becoming durable and visible.
    ///
    /// Who calls it, with which policy:
    ///
    /// | caller | policy | a refused message |
    /// |---|---|---|
    /// | HTTP `POST /iep04/messages` | [`OnRefusal::RefuseRequest`] | the whole request is refused (403, every refusal listed), nothing is written: a client fixes its request |
    /// | IntelMQ transports (`sighthub_intelmq::Sink::accept`) | [`OnRefusal::SkipRefused`] | reported as rejected; the rest of the batch is stored and acknowledged, so one refused event never blocks the queue |
    /// | relay pull (`sighthub_relay`) | [`OnRefusal::SkipRefused`] | counted and logged; the rest of the page is stored and the page acknowledged, so one refused message never wedges the pull |
    ///
    /// A refusal is about authority (updating, withdrawing or replacing another
    /// organisation's message; a tag update over [`MAX_TAGS_PER_MESSAGE`]). With
    /// `SkipRefused` the result is what appending the request without the refused messages
    /// would give. `Err` means nothing can be said about the request (storage failure,
    /// poisoned fsync, or `Error::Refused` under `RefuseRequest`).
    pub async fn publish(
        self: &Arc<Self>,
        items: Vec<Prepared>,
        on_refusal: OnRefusal,
    ) -> Result<Published> {
        if items.is_empty() {
            return Ok(Published {
                outcomes: Vec::new(),
                refused: 0,
            });
        }
        // Append and wait in a task of their own: a caller dropped at any point (a client
        // hanging up) leaves nothing written but not yet marked durable.
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let writer = Arc::clone(&store);
            let appended =
                tokio::task::spawn_blocking(move || writer.append(items, now_secs(), on_refusal))
                    .await
                    .map_err(Error::join)??;
            store.wait_durable(appended.ticket, appended.high).await?;
            store.counters.count(&appended.outcomes, appended.refused);
            Ok(Published {
                outcomes: appended.outcomes,
                refused: appended.refused,
            })
        })
        .await
        .map_err(Error::join)?
    }

    /// Waits for `ticket` and publishes `high` as durable.
    pub async fn wait_durable(&self, ticket: Ticket, high: u64) -> Result<()> {
        self.commit.wait(ticket).await?;
        self.mark_durable(high);
        Ok(())
    }

    /// Calls `f` on each durable log record after `after`, in order, until it breaks,
    /// `max_scan` records were examined, or the durable end is reached.
    pub fn scan(
        &self,
        after: u64,
        max_scan: usize,
        mut f: impl FnMut(u64, &LogEntry<'_>) -> ControlFlow<()>,
    ) -> Result<ScanEnd> {
        let end = self.durable();
        let first = self.first_seq();
        let truncated = after.saturating_add(1) < first;
        let start = after.saturating_add(1).max(first);
        if start > end {
            // Nothing durable after `after`, or everything up to `end` was dropped.
            return Ok(ScanEnd {
                last: after.max(first.saturating_sub(1).min(end)),
                at_end: true,
                truncated,
            });
        }
        let mut examined = 0usize;
        let mut stopped = None;
        self.engine.range(start, end, |seq, rec| {
            let entry =
                record::decode_log(rec.as_ref()).ok_or_else(|| Error::corrupt("log record"))?;
            examined += 1;
            if f(seq, &entry).is_break() || examined >= max_scan {
                stopped = Some(seq);
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(match stopped {
            Some(seq) => ScanEnd {
                last: seq,
                at_end: seq >= end,
                truncated,
            },
            None => ScanEnd {
                last: end,
                at_end: true,
                truncated,
            },
        })
    }

    /// The record at `seq`, if durable and still in the log.
    pub fn get_seq(&self, seq: u64) -> Result<Option<Stored<L::Record>>> {
        if seq > self.durable() {
            return Ok(None);
        }
        self.engine.get(seq)
    }

    /// Where a uuid was accepted (if it is known and durable), and its record if still in
    /// the log.
    #[allow(clippy::type_complexity)]
    pub fn lookup(&self, uuid: &Uuid) -> Result<Option<(u64, Option<Stored<L::Record>>)>> {
        let Some(seq) = self.seen_lookup(uuid, now_secs())? else {
            return Ok(None);
        };
        if seq > self.durable() {
            return Ok(None);
        }
        Ok(Some((seq, self.engine.get(seq)?)))
    }

    /// The organisation of the durable message `uuid`, if this hub has it (still in the log)
    /// and it names one.
    pub fn org_of(&self, uuid: &Uuid) -> Result<Option<Uuid>> {
        Ok(match self.lookup(uuid)? {
            Some((_, Some(rec))) => rec.entry().ok().and_then(|e| e.org),
            _ => None,
        })
    }

    /// The withdrawals and replacements of `msg` that take effect on what this hub holds:
    /// [`sighthub_iep04::effects`] with the targets' organisations looked up here. What the
    /// bridge (and `rebuild-sightings`) apply.
    pub fn effects(&self, msg: &Message) -> Result<Vec<Claim>> {
        sighthub_iep04::effects(msg, |t| self.org_of(&t))
    }

    /// Every link pointing at `target` from a durable message, at most `max`.
    pub fn links_to(&self, target: &Uuid, max: usize) -> Result<Vec<IncomingLink>> {
        let durable = self.durable();
        let mut out = Vec::new();
        self.engine.links_to(target, |link| {
            if link.seq <= durable {
                out.push(link);
                if out.len() >= max {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Messages carrying the opaque alternate id `alt`: (uuid, seq), at most `max`.
    pub fn by_alternate(&self, alt: &str, max: usize) -> Result<Vec<(Uuid, u64)>> {
        let durable = self.durable();
        let mut out = Vec::new();
        self.engine.alternates(alt, |uuid, seq| {
            if seq <= durable {
                out.push((uuid, seq));
                if out.len() >= max {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// The storage engine's own activity (`GET /metrics`).
    pub fn engine_stats(&self) -> Option<sighthub_storage::EngineStats> {
        self.engine.engine_stats()
    }

    /// What the publish pipeline answered since start.
    pub fn counters(&self) -> &PublishCounters {
        &self.counters
    }

    /// Up to `max` named consumers of every organisation, in key order (metrics: lag).
    pub fn consumers(&self, max: usize) -> Result<Vec<(Uuid, String, ConsumerState)>> {
        self.engine.consumers(max)
    }

    /// A named consumer's state.
    pub fn consumer(&self, org: Uuid, name: &str) -> Result<Option<ConsumerState>> {
        self.engine.consumer(org, name)
    }

    /// Moves a named consumer's cursor forward to `seq` (never back: acknowledging an older
    /// position is a no-op). `seq` must be durable. Wait for the ticket before answering.
    pub fn consumer_ack(
        &self,
        org: Uuid,
        name: &str,
        seq: u64,
        now: u64,
    ) -> Result<(ConsumerState, Ticket)> {
        if seq > self.durable() {
            return Err(Error::BadRequest("That cursor is ahead of the log.".into()));
        }
        let _guard = lock(&self.consumer_lock);
        // Read, decide, write if unchanged: on an engine several front ends share, another
        // one may acknowledge the same consumer meanwhile; its write makes this one read
        // again, so a cursor never moves back whichever front end is asked.
        for _ in 0..MAX_CONFLICT_RETRIES {
            let (cur, version) = self.engine.consumer_versioned(org, name)?;
            match cur {
                Some(c) if c.acked >= seq => return Ok((c, Ticket::NONE)),
                Some(_) => {}
                None => {
                    // A new name: each is kept until deleted, so an organisation's key could
                    // otherwise fill the disk with names.
                    let held = self.engine.consumer_count(org, MAX_CONSUMERS_PER_ORG + 1)?;
                    if held >= MAX_CONSUMERS_PER_ORG {
                        return Err(Error::OverLimit {
                            limit: "MAX_CONSUMERS_PER_ORG",
                            max: MAX_CONSUMERS_PER_ORG as u64,
                            what: format!(
                                "An organisation holds at most {MAX_CONSUMERS_PER_ORG} named \
                                 consumers; delete one (DELETE /iep04/consumers/<name>) first"
                            ),
                        });
                    }
                }
            }
            let state = ConsumerState {
                acked: seq,
                updated_at: now,
            };
            if self.engine.consumer_put_if(org, name, state, version)? {
                return Ok((state, self.commit.issue()?));
            }
        }
        Err(Error::Backend(format!(
            "consumer '{name}': {MAX_CONFLICT_RETRIES} acknowledgements by other front ends in a row"
        )))
    }

    /// Takes or renews the lease `name` for `holder` (an id of this front end) for `ttl_ms`
    /// milliseconds: `true` when `holder` holds it now; `ttl_ms = 0` gives it back. The rule
    /// is the engine's ([`ExchangeLog::lease`]): every lease is granted on an exchange that
    /// one process holds, and on a shared one (NATS JetStream) one front end at a time holds
    /// it. Blocking (a round trip on a shared engine). The loop that keeps a lease is
    /// [`crate::lease::Lease`].
    pub fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        self.engine.lease(name, holder, ttl_ms)
    }

    /// Forgets a named consumer; `true` when it existed.
    pub fn consumer_delete(&self, org: Uuid, name: &str) -> Result<(bool, Ticket)> {
        let _guard = lock(&self.consumer_lock);
        if !self.engine.consumer_delete(org, name)? {
            return Ok((false, Ticket::NONE));
        }
        Ok((true, self.commit.issue()?))
    }

    /// Drops the oldest durable log records that are past `log_max_age` or beyond
    /// `log_max_bytes`, with their link index entries. Works in batches of 1,000 records under
    /// the writer lock, so writers are held up only briefly.
    pub fn sweep(&self, now: u64) -> Result<Swept> {
        let (max_age, max_bytes) = (self.opts.log_max_age, self.opts.log_max_bytes);
        let mut total = Swept::default();
        if max_age == 0 && max_bytes == 0 {
            return Ok(total);
        }
        loop {
            let mut st = lock(&self.writer);
            let durable = self.durable();
            let start = self.first_seq();
            let mut batch = self.engine.batch();
            let mut removed = 0u64;
            let mut bytes = 0u64;
            let mut new_first = None;
            let log_bytes = st.log_bytes;
            self.engine.range(start, durable, |seq, rec| {
                let rec = rec.as_ref();
                let entry = record::decode_log(rec).ok_or_else(|| Error::corrupt("log record"))?;
                let too_old = max_age > 0 && entry.accepted_at.saturating_add(max_age) <= now;
                let too_big = max_bytes > 0 && log_bytes.saturating_sub(bytes) > max_bytes;
                if !(too_old || too_big) || removed >= 1000 {
                    new_first = Some(seq);
                    return Ok(ControlFlow::Break(()));
                }
                batch.remove_record(seq);
                if entry.kind == EntryKind::Message && entry.flags & record::FLAG_LINKED != 0 {
                    unindex(&mut batch, &entry);
                }
                removed += 1;
                bytes += rec.len() as u64;
                Ok(ControlFlow::Continue(()))
            })?;
            if removed == 0 {
                return Ok(total);
            }
            let first = new_first.unwrap_or(durable + 1);
            st.log_bytes = st.log_bytes.saturating_sub(bytes);
            batch.put_meta(META_LOG_BYTES, st.log_bytes);
            // Losing this batch in a crash only keeps the records longer: no fsync wait.
            self.engine.commit(batch)?;
            self.first_seq.store(first, Ordering::Release);
            drop(st);
            total.removed += removed;
            total.bytes += bytes;
            if new_first.is_some_and(|f| f <= durable) && removed < 1000 {
                return Ok(total);
            }
        }
    }

    /// Makes everything written so far durable.
    pub fn persist(&self) -> Result<()> {
        self.engine.persist()
    }

    /// Makes everything durable and leaves the engine nothing to recover on the next start
    /// (fjall: flushes every memtable and seals the journal). Clean shutdown only.
    pub fn close(&self) -> Result<()> {
        self.engine.close()
    }

    /// Approximate numbers for the status route: (log records, known uuids).
    pub fn approximate_counts(&self) -> (usize, usize) {
        self.engine.approximate_counts()
    }
}

/// Removes the link and alternate index entries of a dropped message.
fn unindex<B: LogBatch>(batch: &mut B, entry: &LogEntry<'_>) {
    let Ok(msg) = Message::from_slice(entry.json) else {
        return;
    };
    let (links, alternates) = index_entries(&msg);
    for (target, rel) in links {
        batch.remove_link(target, entry.uuid, &rel);
    }
    for alt in alternates {
        batch.remove_alternate(&alt, entry.uuid);
    }
}

/// The link index entries and alternate ids of a message (what [`Prepared::links`] and
/// [`Prepared::alternates`] hold). A typed link with the message itself on one side is
/// indexed under the other side only, marked `from_self`; a link between two other
/// messages is indexed under both.
pub fn index_entries(msg: &Message) -> (Vec<(Uuid, LinkRel)>, Vec<String>) {
    let Some(meta) = &msg.meta else {
        return (Vec::new(), Vec::new());
    };
    let me = meta.uuid;
    let l = &meta.links;
    let mut links = Vec::with_capacity(l.related.len() + l.group.len() + 2 * l.typed.len());
    links.extend(l.related.iter().map(|u| (*u, LinkRel::Related)));
    links.extend(l.group.iter().map(|u| (*u, LinkRel::Group)));
    for t in &l.typed {
        let typed = |target_left, from_self| LinkRel::Typed {
            link_type: t.link_type.as_str().to_owned(),
            target_left,
            from_self,
        };
        match (t.left == me, t.right == me) {
            (true, true) => {}
            (true, false) => links.push((t.right, typed(false, true))),
            (false, true) => links.push((t.left, typed(true, true))),
            (false, false) => {
                links.push((t.left, typed(true, false)));
                links.push((t.right, typed(false, false)));
            }
        }
    }
    (links, l.alternate.clone())
}

fn set_kind_update(record: &mut [u8]) {
    if let Some(b) = record.get_mut(1) {
        *b = 1;
    }
}

/// How many times a request is decided again after losing the race for its sequence
/// numbers to another front end ([`ExchangeStore::append`]).
pub const MAX_CONFLICT_RETRIES: u32 = 64;

/// Most named consumers one organisation may hold (each is kept until deleted).
pub const MAX_CONSUMERS_PER_ORG: usize = 1000;

/// Most tags one message may hold after tag updates: each update re-writes the whole stored
/// message, so an unbounded series of updates would grow it (and the work of every later
/// update) without end.
pub const MAX_TAGS_PER_MESSAGE: usize = 1024;

/// Why a tag update was not applied.
enum Retag {
    /// Every tag is already there.
    Unchanged,
    /// The new stored record.
    Rewritten(Vec<u8>),
    /// The message would hold more than [`MAX_TAGS_PER_MESSAGE`] tags.
    TooMany,
}

/// The record of `old` with `add` merged into its tags (linear: one hash set of what is
/// there).
fn retag(old: &LogEntry<'_>, add: &[String]) -> Result<Retag> {
    let present: std::collections::HashSet<&str> = old.tags.iter().copied().collect();
    let mut missing: Vec<&String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in add {
        if !present.contains(t.as_str()) && seen.insert(t.as_str()) {
            missing.push(t);
        }
    }
    if missing.is_empty() {
        return Ok(Retag::Unchanged);
    }
    let mut msg = Message::from_slice(old.json).map_err(|_| Error::corrupt("stored envelope"))?;
    let Some(meta) = msg.meta.as_mut() else {
        return Err(Error::corrupt("stored envelope without meta"));
    };
    let in_meta: std::collections::HashSet<String> = meta.tags.iter().cloned().collect();
    let missing: Vec<&String> = missing
        .into_iter()
        .filter(|t| !in_meta.contains(*t))
        .collect();
    if meta.tags.len() + missing.len() > MAX_TAGS_PER_MESSAGE {
        return Ok(Retag::TooMany);
    }
    meta.tags.extend(missing.into_iter().cloned());
    let tags = meta.tags.clone();
    let json = msg.to_json();
    Ok(Retag::Rewritten(encode_log(&LogEntry {
        kind: old.kind,
        tlp: msg.tlp(),
        flags: old.flags,
        accepted_at: old.accepted_at,
        uuid: old.uuid,
        org: old.org,
        format_type: old.format_type,
        tags: tags.iter().map(String::as_str).collect(),
        json: json.as_bytes(),
    })))
}

#[cfg(test)]
mod test;
