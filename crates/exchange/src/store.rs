//! The exchange's durable state: an ordered log, the seen-set, the content window, the link
//! indexes and the named consumers, in one fjall database at `<data_dir>/exchange`.
//!
//! ## Write path
//! [`ExchangeStore::append`] takes the messages of one request, already parsed and checked
//! for access ([`Prepared`]), and under one writer mutex: looks each uuid up in `seen` (and
//! each uuid-less message's content key in `content`), assigns the next sequence numbers,
//! checks the organisation of the messages that updates and withdrawals point at, and
//! commits **one fjall batch** for the whole request (log records, seen, content, links,
//! alternates, the high-water mark). A refusal anywhere aborts the batch: nothing is written.
//! It then issues a [`GroupCommit`] ticket; the caller answers only once the ticket is synced.
//!
//! ## Visibility
//! Readers see the log only up to the **durable** sequence number ([`ExchangeStore::durable`]),
//! which moves when a ticket is synced ([`ExchangeStore::mark_durable`]). A message that could
//! still be lost by a crash is therefore never delivered, so a sequence number once delivered
//! never changes meaning and a cursor never skips anything. Long-polling readers watch the
//! same number.
//!
//! ## Retention
//! [`ExchangeStore::sweep`] drops the oldest log records by age and by total size (and their
//! link index entries); uuids stay in `seen` for `seen_max_age` (default forever). Expired
//! `seen` and `content` entries are ignored on lookup and removed by a compaction filter, so
//! neither grows without bound nor needs a scan.

use fjall::compaction::filter::{CompactionFilter, Context, Factory, ItemAccessor, Verdict};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Slice};
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
use crate::record::{
    self, alternate_prefix, consumer_key, decode_link_key, decode_link_value, decode_log,
    encode_log, key_seq, le_u64, link_key, link_value, secs32, seq_key, set_accepted_at, EntryKind,
    LinkRel, LogEntry, Seen,
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

/// The result of [`ExchangeStore::append`].
#[derive(Debug)]
pub struct Appended {
    /// One outcome per prepared message, in order.
    pub outcomes: Vec<Outcome>,
    /// Wait for it before answering.
    pub ticket: Ticket,
    /// Highest sequence number committed when the ticket was issued: durable once it is.
    pub high: u64,
}

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

/// A named consumer's server-side cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerState {
    /// Last sequence number acknowledged (0 = nothing yet).
    pub acked: u64,
    /// Unix seconds of the last acknowledgement.
    pub updated_at: u64,
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

struct WriterState {
    /// Next sequence number to hand out (1-based: 0 means "before the first").
    next_seq: u64,
    /// Total bytes of the records in the log.
    log_bytes: u64,
    /// "Certainly new" answers for content keys, without touching the keyspace.
    filter: Option<ContentFilter>,
}

/// The exchange database; see the module docs.
pub struct ExchangeStore {
    // Declared first so its thread is joined before the database is dropped.
    commit: GroupCommit,
    db: Database,
    log: Keyspace,
    seen: Keyspace,
    content: Keyspace,
    links: Keyspace,
    alternates: Keyspace,
    consumers: Keyspace,
    meta: Keyspace,
    /// Scratch space of [`ExchangeStore::close`]; always empty between uses.
    pad: Keyspace,
    dir: std::path::PathBuf,
    /// Serialises de-duplication + sequence assignment + batch commit; never held across an
    /// await (the write path runs on a blocking thread).
    writer: Mutex<WriterState>,
    /// Serialises read-modify-write of consumer cursors.
    consumer_lock: Mutex<()>,
    /// Highest sequence number known durable: what readers may see.
    durable: watch::Sender<u64>,
    /// Lowest sequence number that may still be in the log (retention moves it up), so that
    /// scans never wade through the tombstones of dropped records.
    first_seq: AtomicU64,
    epoch: u64,
    org: Uuid,
    instance: Uuid,
    opts: StoreOptions,
}

/// Memtable size of the `seen` and `content` keyspaces.
const SMALL_MEMTABLE: u64 = 8 * 1024 * 1024;

const META_EPOCH: &str = "epoch";
const META_SEQ: &str = "seq";
const META_LOG_BYTES: &str = "log_bytes";
const META_ORG: &str = "org";
const META_INSTANCE: &str = "instance";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

impl ExchangeStore {
    /// Opens (or creates) the exchange database in `dir`. Start-up reads a few `meta` keys and
    /// the first and last log keys, and the live `content` keys into the filter (bounded by
    /// the content window); the log is never scanned, whatever its size.
    ///
    /// `org` / `instance`: the configured identity; when absent, the stored one (generated
    /// on the first start) is used.
    pub fn open(
        dir: &Path,
        opts: StoreOptions,
        org: Option<Uuid>,
        instance: Option<Uuid>,
    ) -> Result<Self> {
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
        let get_u64 = |k: &str| -> Result<Option<u64>> {
            match meta.get(k)? {
                Some(v) => Ok(Some(
                    le_u64(&v).ok_or_else(|| Error::corrupt("meta value"))?,
                )),
                None => Ok(None),
            }
        };
        let epoch = match get_u64(META_EPOCH)? {
            Some(e) => e,
            None => {
                let e = Uuid::new_v4().as_u64_pair().0;
                meta.insert(META_EPOCH, e.to_le_bytes().to_vec())?;
                e
            }
        };
        let identity = |key: &str, configured: Option<Uuid>| -> Result<Uuid> {
            let stored = meta
                .get(key)?
                .map(|v| Uuid::from_slice(&v).map_err(|_| Error::corrupt("meta uuid")))
                .transpose()?;
            let id = configured.or(stored).unwrap_or_else(Uuid::new_v4);
            if stored != Some(id) {
                meta.insert(key, id.as_bytes().to_vec())?;
            }
            Ok(id)
        };
        let org = identity(META_ORG, org)?;
        let instance = identity(META_INSTANCE, instance)?;
        let last_in_log = match log.last_key_value() {
            Some(g) => key_seq(&g.key()?).ok_or_else(|| Error::corrupt("log key"))?,
            None => 0,
        };
        let last = last_in_log.max(get_u64(META_SEQ)?.unwrap_or(0));
        let first = match log.first_key_value() {
            Some(g) => key_seq(&g.key()?).ok_or_else(|| Error::corrupt("log key"))?,
            None => last + 1,
        };
        let log_bytes = get_u64(META_LOG_BYTES)?.unwrap_or(0);
        let filter = match opts.content_filter_bytes {
            0 => None,
            bytes => {
                // The live entries only: bounded by the content window.
                let now = now_secs();
                let mut f = ContentFilter::new(bytes, opts.content_window, now);
                for kv in content.iter() {
                    let (k, v) = kv.into_inner()?;
                    let alive = Seen::decode(&v).is_some_and(|s| s.alive(opts.content_window, now));
                    if let (true, Ok(key)) = (alive, <[u8; 16]>::try_from(&k[..])) {
                        f.insert(&key, now);
                    }
                }
                Some(f)
            }
        };
        // What recovery replayed from the journal may only be in the page cache: make it
        // durable before any of it is delivered.
        db.persist(PersistMode::SyncAll)?;
        let pad = sighthub_storage::journal::pad_keyspace(&db)?;
        // The same fsync as the sighting store's: outside fjall's journal lock, so publishers
        // keep appending while the group commit syncs.
        let mut syncer =
            sighthub_storage::journal::JournalSyncer::new(db.clone(), dir.to_path_buf());
        let commit = GroupCommit::start(Box::new(move || syncer.sync()))?;
        let (durable, _) = watch::channel(last);
        Ok(Self {
            commit,
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
            writer: Mutex::new(WriterState {
                next_seq: last + 1,
                log_bytes,
                filter,
            }),
            consumer_lock: Mutex::new(()),
            durable,
            first_seq: AtomicU64::new(first),
            epoch,
            org,
            instance,
            opts,
        })
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

    fn seen_lookup(&self, uuid: &Uuid, now: u64) -> Result<Option<u64>> {
        Ok(self
            .seen
            .get(uuid.as_bytes())?
            .and_then(|v| Seen::decode(&v))
            .filter(|s| s.alive(self.opts.seen_max_age, now))
            .map(|s| s.seq))
    }

    fn content_lookup(&self, key: &[u8; 16], now: u64) -> Result<Option<u64>> {
        Ok(self
            .content
            .get(key)?
            .and_then(|v| Seen::decode(&v))
            .filter(|s| s.alive(self.opts.content_window, now))
            .map(|s| s.seq))
    }

    /// Appends one request's messages; see the module docs. `Err(Refused)` writes nothing.
    pub fn append(&self, items: Vec<Prepared>, now: u64) -> Result<Appended> {
        let mut st = lock(&self.writer);
        if self.commit.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let at = secs32(now);
        let mut batch = self.db.batch();
        let mut new_uuids: HashMap<Uuid, u64> = HashMap::new();
        let mut new_content: HashMap<[u8; 16], u64> = HashMap::new();
        // Records written by this batch, for updates and marks that refer to them.
        let mut pending: HashMap<u64, Slice> = HashMap::new();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut refused = Vec::new();
        let mut next = st.next_seq;
        let mut bytes = i128::from(st.log_bytes);
        let mut wrote = false;
        let durable = self.durable();
        let mut refers_to_pending = false;

        for (index, mut item) in items.into_iter().enumerate() {
            if let Some(ck) = item.content_key {
                let dup = match new_content.get(&ck) {
                    Some(&seq) => Some(seq),
                    None if st.filter.as_mut().is_some_and(|f| !f.maybe(&ck, now)) => None,
                    None => self.content_lookup(&ck, now)?,
                };
                if let Some(seq) = dup {
                    refers_to_pending |= seq > durable;
                    outcomes.push(Outcome::Duplicate {
                        seq,
                        by_content: true,
                    });
                    continue;
                }
            }
            // A message with a content key got its uuid here, just now: it cannot be known.
            let known = match new_uuids.get(&item.uuid) {
                Some(&seq) => Some(seq),
                None if item.content_key.is_some() => None,
                None => self.seen_lookup(&item.uuid, now)?,
            };
            if let Some(target) = known {
                if !item.empty_payload {
                    refers_to_pending |= target > durable;
                    outcomes.push(Outcome::Duplicate {
                        seq: target,
                        by_content: false,
                    });
                    continue;
                }
                // A tag update (AIL stream rule): empty payload, known uuid.
                let old = match pending.get(&target) {
                    Some(v) => Some(v.clone()),
                    None => self.log.get(seq_key(target))?,
                };
                let Some(old) = old else {
                    outcomes.push(Outcome::Gone { seq: target });
                    continue;
                };
                let old_entry = decode_log(&old).ok_or_else(|| Error::corrupt("log record"))?;
                if !takes_effect(item.org, old_entry.org) {
                    refused.push(Refusal {
                        index,
                        reason: "may not update the tags of another organisation's message".into(),
                    });
                    continue;
                }
                let rewritten = match retag(&old_entry, &item.tags)? {
                    Retag::Rewritten(r) => r,
                    Retag::Unchanged => {
                        refers_to_pending |= target > durable;
                        outcomes.push(Outcome::Duplicate {
                            seq: target,
                            by_content: false,
                        });
                        continue;
                    }
                    Retag::TooMany => {
                        refused.push(Refusal {
                            index,
                            reason: format!(
                                "a message holds at most {MAX_TAGS_PER_MESSAGE} tags \
                                 (limit MAX_TAGS_PER_MESSAGE)"
                            ),
                        });
                        continue;
                    }
                };
                bytes += rewritten.len() as i128 - old.len() as i128;
                let rewritten = Slice::from(rewritten);
                batch.insert(&self.log, seq_key(target), rewritten.clone());
                pending.insert(target, rewritten);
                let seq = next;
                next += 1;
                set_kind_update(&mut item.record);
                set_accepted_at(&mut item.record, now);
                bytes += item.record.len() as i128;
                batch.insert(&self.log, seq_key(seq), item.record);
                wrote = true;
                outcomes.push(Outcome::Updated { seq, target });
                continue;
            }
            if item.empty_payload && item.links.is_empty() && item.alternates.is_empty() {
                outcomes.push(Outcome::UnknownTarget);
                continue;
            }
            // Withdrawals and replacements: only of the same organisation's messages
            // (sighthub_iep04::authority). A claim on a message this hub does not have is
            // kept as data and does nothing.
            let mut ok = true;
            for claim in &item.marks {
                let tseq = match new_uuids.get(&claim.target) {
                    Some(&s) => Some(s),
                    None => self.seen_lookup(&claim.target, now)?,
                };
                let Some(tseq) = tseq else { continue };
                let rec = match pending.get(&tseq) {
                    Some(v) => Some(v.clone()),
                    None => self.log.get(seq_key(tseq))?,
                };
                if let Some(rec) = rec {
                    let e = decode_log(&rec).ok_or_else(|| Error::corrupt("log record"))?;
                    if !takes_effect(item.org, e.org) {
                        ok = false;
                    }
                }
            }
            if !ok {
                refused.push(Refusal {
                    index,
                    reason: "may not withdraw or replace another organisation's message".into(),
                });
                continue;
            }
            let seq = next;
            next += 1;
            set_accepted_at(&mut item.record, now);
            bytes += item.record.len() as i128;
            let record = Slice::from(item.record);
            batch.insert(&self.log, seq_key(seq), record.clone());
            pending.insert(seq, record);
            let seen = Seen { seq, at }.encode();
            batch.insert(&self.seen, item.uuid.as_bytes().to_vec(), seen.to_vec());
            new_uuids.insert(item.uuid, seq);
            if let Some(ck) = item.content_key {
                batch.insert(&self.content, ck.to_vec(), seen.to_vec());
                new_content.insert(ck, seq);
                if let Some(f) = st.filter.as_mut() {
                    f.insert(&ck, now);
                }
            }
            let lv = link_value(seq, item.org);
            for (target, rel) in &item.links {
                batch.insert(&self.links, link_key(*target, item.uuid, rel), lv.to_vec());
            }
            for alt in &item.alternates {
                if let Some(mut k) = alternate_prefix(alt) {
                    k.extend_from_slice(item.uuid.as_bytes());
                    batch.insert(&self.alternates, k, seq.to_le_bytes().to_vec());
                }
            }
            wrote = true;
            outcomes.push(Outcome::Accepted { seq });
        }
        if !refused.is_empty() {
            return Err(Error::Refused(refused));
        }
        if wrote {
            let log_bytes = u64::try_from(bytes.max(0)).unwrap_or(u64::MAX);
            batch.insert(&self.meta, META_SEQ, (next - 1).to_le_bytes().to_vec());
            batch.insert(&self.meta, META_LOG_BYTES, log_bytes.to_le_bytes().to_vec());
            batch.commit()?;
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
            ticket,
            high,
        })
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
        for kv in self.log.range(seq_key(start)..=seq_key(end)) {
            let (k, v) = kv.into_inner()?;
            let seq = key_seq(&k).ok_or_else(|| Error::corrupt("log key"))?;
            let entry = decode_log(&v).ok_or_else(|| Error::corrupt("log record"))?;
            examined += 1;
            if f(seq, &entry).is_break() || examined >= max_scan {
                return Ok(ScanEnd {
                    last: seq,
                    at_end: seq >= end,
                    truncated,
                });
            }
        }
        Ok(ScanEnd {
            last: end,
            at_end: true,
            truncated,
        })
    }

    /// The record at `seq`, if still in the log.
    pub fn get_seq(&self, seq: u64) -> Result<Option<Slice>> {
        if seq > self.durable() {
            return Ok(None);
        }
        Ok(self.log.get(seq_key(seq))?)
    }

    /// Where a uuid was accepted (if it is known and durable), and its record if still in
    /// the log.
    pub fn lookup(&self, uuid: &Uuid) -> Result<Option<(u64, Option<Slice>)>> {
        let Some(seq) = self.seen_lookup(uuid, now_secs())? else {
            return Ok(None);
        };
        if seq > self.durable() {
            return Ok(None);
        }
        Ok(Some((seq, self.log.get(seq_key(seq))?)))
    }

    /// The organisation of the durable message `uuid`, if this hub has it (still in the log)
    /// and it names one.
    pub fn org_of(&self, uuid: &Uuid) -> Result<Option<Uuid>> {
        Ok(match self.lookup(uuid)? {
            Some((_, Some(rec))) => decode_log(&rec).and_then(|e| e.org),
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
        for kv in self.links.prefix(target.as_bytes()) {
            let (k, v) = kv.into_inner()?;
            let (_, source, rel) = decode_link_key(&k).ok_or_else(|| Error::corrupt("link key"))?;
            let (seq, org) = decode_link_value(&v).ok_or_else(|| Error::corrupt("link value"))?;
            if seq > durable {
                continue;
            }
            out.push(IncomingLink {
                source,
                rel,
                seq,
                org,
            });
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Messages carrying the opaque alternate id `alt`: (uuid, seq), at most `max`.
    pub fn by_alternate(&self, alt: &str, max: usize) -> Result<Vec<(Uuid, u64)>> {
        let Some(prefix) = alternate_prefix(alt) else {
            return Ok(Vec::new());
        };
        let durable = self.durable();
        let mut out = Vec::new();
        for kv in self.alternates.prefix(&prefix) {
            let (k, v) = kv.into_inner()?;
            let uuid = k
                .get(prefix.len()..)
                .and_then(|b| Uuid::from_slice(b).ok())
                .ok_or_else(|| Error::corrupt("alternate key"))?;
            let seq = le_u64(&v).ok_or_else(|| Error::corrupt("alternate value"))?;
            if seq <= durable {
                out.push((uuid, seq));
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// A named consumer's state.
    pub fn consumer(&self, org: Uuid, name: &str) -> Result<Option<ConsumerState>> {
        Ok(self
            .consumers
            .get(consumer_key(org, name))?
            .map(|v| ConsumerState {
                acked: le_u64(&v).unwrap_or(0),
                updated_at: v.get(8..16).and_then(le_u64).unwrap_or(0),
            }))
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
        let cur = self.consumer(org, name)?;
        match cur {
            Some(c) if c.acked >= seq => return Ok((c, Ticket::NONE)),
            Some(_) => {}
            None => {
                // A new name: each is kept until deleted, so an organisation's key could
                // otherwise fill the disk with names.
                let held = self
                    .consumers
                    .prefix(org.as_bytes())
                    .take(MAX_CONSUMERS_PER_ORG + 1)
                    .count();
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
        let mut v = seq.to_le_bytes().to_vec();
        v.extend_from_slice(&now.to_le_bytes());
        self.consumers.insert(consumer_key(org, name), v)?;
        Ok((state, self.commit.issue()?))
    }

    /// Forgets a named consumer; `true` when it existed.
    pub fn consumer_delete(&self, org: Uuid, name: &str) -> Result<(bool, Ticket)> {
        let _guard = lock(&self.consumer_lock);
        let key = consumer_key(org, name);
        if self.consumers.get(&key)?.is_none() {
            return Ok((false, Ticket::NONE));
        }
        self.consumers.remove(key)?;
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
            let mut batch = self.db.batch();
            let mut removed = 0u64;
            let mut bytes = 0u64;
            let mut new_first = None;
            for kv in self.log.range(seq_key(start)..=seq_key(durable)) {
                let (k, v) = kv.into_inner()?;
                let seq = key_seq(&k).ok_or_else(|| Error::corrupt("log key"))?;
                let entry = decode_log(&v).ok_or_else(|| Error::corrupt("log record"))?;
                let too_old = max_age > 0 && entry.accepted_at.saturating_add(max_age) <= now;
                let too_big = max_bytes > 0 && st.log_bytes.saturating_sub(bytes) > max_bytes;
                if !(too_old || too_big) || removed >= 1000 {
                    new_first = Some(seq);
                    break;
                }
                batch.remove(&self.log, k);
                if entry.kind == EntryKind::Message && entry.flags & record::FLAG_LINKED != 0 {
                    self.unindex(&mut batch, &entry)?;
                }
                removed += 1;
                bytes += v.len() as u64;
            }
            if removed == 0 {
                return Ok(total);
            }
            let first = new_first.unwrap_or(durable + 1);
            st.log_bytes = st.log_bytes.saturating_sub(bytes);
            batch.insert(
                &self.meta,
                META_LOG_BYTES,
                st.log_bytes.to_le_bytes().to_vec(),
            );
            // Losing this batch in a crash only keeps the records longer: no fsync wait.
            batch.commit()?;
            self.first_seq.store(first, Ordering::Release);
            drop(st);
            total.removed += removed;
            total.bytes += bytes;
            if new_first.is_some_and(|f| f <= durable) && removed < 1000 {
                return Ok(total);
            }
        }
    }

    /// Removes the link and alternate index entries of a dropped message.
    fn unindex(&self, batch: &mut fjall::OwnedWriteBatch, entry: &LogEntry<'_>) -> Result<()> {
        let Ok(msg) = Message::from_slice(entry.json) else {
            return Ok(());
        };
        let (links, alternates) = index_entries(&msg);
        for (target, rel) in links {
            batch.remove(&self.links, link_key(target, entry.uuid, &rel));
        }
        for alt in alternates {
            if let Some(mut k) = alternate_prefix(&alt) {
                k.extend_from_slice(entry.uuid.as_bytes());
                batch.remove(&self.alternates, k);
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn persist(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Makes everything durable, flushes every memtable and seals the journal, so the next
    /// start has nothing to replay (`sighthub_storage::journal::seal`). Clean shutdown only.
    pub fn close(&self) -> Result<()> {
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

    /// Approximate numbers for the status route: (log records, known uuids).
    pub fn approximate_counts(&self) -> (usize, usize) {
        (self.log.approximate_len(), self.seen.approximate_len())
    }

    /// Bytes on disk of the `seen` keyspace (tests and the status route).
    pub fn seen_disk_space(&self) -> u64 {
        self.seen.disk_space()
    }

    #[cfg(test)]
    fn compact_seen(&self) -> Result<()> {
        self.seen.rotate_memtable_and_wait()?;
        self.seen.major_compact()?;
        Ok(())
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
