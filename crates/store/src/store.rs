//! The storage seam: the [`SightingStore`] trait and the types that cross it.
//!
//! Every backend (the embedded fjall one today, a distributed one later) implements this
//! trait; the HTTP layer only ever talks to it. Values cross the seam raw, as clients send
//! them; the backend applies the namespace's value format.

use crate::error::{ItemError, Result};
use crate::format::ValueFormat;
use crate::namespace::Namespace;
use crate::record::Record;
use sighthub_storage::{GroupCommit, Ticket};

/// Earliest accepted timestamp: 0001-01-01T00:00:00Z.
pub const MIN_TIMESTAMP: i64 = -62_135_596_800;
/// Latest accepted timestamp: 9999-12-31T23:59:59Z.
pub const MAX_TIMESTAMP: i64 = 253_402_300_799;

/// Longest value accepted, in bytes of its raw form (16 KiB).
///
/// The storage engine refuses (panics on) keys longer than 65,535 bytes. A stored key is at
/// most 8 bytes of expiry time, a namespace with its private prefixes, one separator byte and
/// the stored value, which a BASE64URL namespace makes 4/3 as long as the raw one: 16 KiB
/// keeps every key well under the engine's limit (see [`MAX_KEY_LEN`]). Every store path that
/// builds a key from a value checks it first ([`value_fits`]): a write refuses the item with
/// [`ItemError::ValueTooLong`], a read answers "not found".
pub const MAX_VALUE_LEN: usize = 16 * 1024;

/// The longest key the store can build from a namespace and a value within the limits:
/// expiry time, `_shadow/` and `_expired/` prefixes (with room to spare), the namespace, the
/// separator and a BASE64URL-encoded value of [`MAX_VALUE_LEN`] bytes.
pub const MAX_KEY_LEN: usize =
    8 + 64 + crate::namespace::MAX_NAMESPACE_LEN + 1 + MAX_VALUE_LEN.div_ceil(3) * 4;

const _: () = assert!(
    MAX_KEY_LEN < 65_535,
    "keys must stay under fjall's key limit"
);

/// True when `value` (raw form) is short enough to be stored or looked up
/// ([`MAX_VALUE_LEN`]). The one check every key-building path asks.
pub fn value_fits(value: &str) -> bool {
    value.len() <= MAX_VALUE_LEN
}

/// What one write may add to a value: bounds on tags and hourly stats. Checked by
/// [`WriteOp::check`] (per item) and by the store when it merges tags into a value, so a
/// client can neither grow a record without bound nor make the store's work under its writer
/// lock unbounded. Each field is configurable (`[limits]` in the server's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most tags one write may carry, repeats included ([`Limits::DEFAULT_TAGS_PER_ITEM`]).
    pub max_tags_per_item: usize,
    /// Longest tag in bytes ([`Limits::DEFAULT_TAG_LEN`]).
    pub max_tag_len: usize,
    /// Most distinct tags a value may hold; a write that would go over is refused
    /// ([`Limits::DEFAULT_TAGS_PER_VALUE`]).
    pub max_tags_per_value: usize,
    /// Hourly stats buckets kept per value, the newest; older ones are dropped
    /// ([`Limits::DEFAULT_STATS_BUCKETS`]).
    pub max_stats_buckets: usize,
}

impl Limits {
    /// Default of [`Limits::max_tags_per_item`].
    pub const DEFAULT_TAGS_PER_ITEM: usize = 64;
    /// Default of [`Limits::max_tag_len`].
    pub const DEFAULT_TAG_LEN: usize = 256;
    /// Default of [`Limits::max_tags_per_value`].
    pub const DEFAULT_TAGS_PER_VALUE: usize = 256;
    /// Default of [`Limits::max_stats_buckets`]: a leap year of hours.
    pub const DEFAULT_STATS_BUCKETS: usize = 366 * 24;
}

impl Limits {
    /// Joins `tags` into the list one write carries, keeping what fits these limits: an
    /// over-long tag is dropped, and at most [`Limits::max_tags_per_item`] are kept, so a
    /// feeder's sighting (IntelMQ events, MISP attributes) is counted, never refused for its
    /// tags. Each tag must not contain a separator (`,` `;`).
    pub fn fit_tags<'t>(&self, tags: impl IntoIterator<Item = &'t str>) -> String {
        tags.into_iter()
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= self.max_tag_len)
            .take(self.max_tags_per_item)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tags_per_item: Self::DEFAULT_TAGS_PER_ITEM,
            max_tag_len: Self::DEFAULT_TAG_LEN,
            max_tags_per_value: Self::DEFAULT_TAGS_PER_VALUE,
            max_stats_buckets: Self::DEFAULT_STATS_BUCKETS,
        }
    }
}

/// One sighting to record.
#[derive(Debug, Clone, Copy)]
pub struct WriteOp<'a> {
    /// Where.
    pub namespace: &'a Namespace,
    /// The raw value, as the client sent it.
    pub value: &'a str,
    /// When it was seen (unix seconds), already resolved ("now" when the client sent none).
    pub timestamp: i64,
    /// `Some(0)` clears the TTL, `Some(n)` sets it, `None` keeps what the value has.
    pub ttl: Option<u64>,
    /// Tags to merge in (`,` or `;` separated).
    pub tags: Option<&'a str>,
}

impl<'a> WriteOp<'a> {
    /// A plain sighting of `value` in `namespace` at `timestamp`.
    pub fn new(namespace: &'a Namespace, value: &'a str, timestamp: i64) -> Self {
        Self {
            namespace,
            value,
            timestamp,
            ttl: None,
            tags: None,
        }
    }

    /// The checks a client write must pass on its own (shared by writes and dry runs); the
    /// store adds one that needs the stored value ([`Limits::max_tags_per_value`]).
    pub fn check(&self, limits: &Limits) -> std::result::Result<(), ItemError> {
        if self.namespace.is_internal() {
            return Err(ItemError::Internal(
                self.namespace.first_segment().to_owned(),
            ));
        }
        if self.value.is_empty() {
            return Err(ItemError::EmptyValue);
        }
        if !value_fits(self.value) {
            return Err(ItemError::ValueTooLong(self.value.len()));
        }
        if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&self.timestamp) {
            return Err(ItemError::TimestampOutOfRange(self.timestamp));
        }
        if let Some(tags) = self.tags {
            let mut n = 0usize;
            for t in crate::record::split_tags(tags) {
                n += 1;
                if n > limits.max_tags_per_item {
                    return Err(ItemError::TooManyTags(limits.max_tags_per_item));
                }
                if t.len() > limits.max_tag_len {
                    return Err(ItemError::TagTooLong(limits.max_tag_len));
                }
            }
        }
        Ok(())
    }
}

/// What a write did to the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Running count in the namespace.
    pub count: u64,
    /// True when this write created the value in the namespace.
    pub new: bool,
}

/// A value as read: its stored form, record and consensus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The value as stored and shown (hex hash in a SHA256 namespace).
    pub value: String,
    /// The record.
    pub record: Record,
    /// In how many non-private namespaces the value is stored.
    pub consensus: u64,
}

/// The answer to a single-value read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The value is there.
    Found(View),
    /// The namespace exists but not this value.
    NoValue,
    /// The namespace does not exist.
    NoNamespace,
}

/// One page of a namespace listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Values in key order.
    pub items: Vec<View>,
    /// Stored form of the last value when more may follow (the cursor), else `None`.
    pub next: Option<String>,
}

/// A stored namespace and how many values it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// The namespace.
    pub namespace: Namespace,
    /// Live values in it.
    pub values: u64,
}

/// The storage seam. Implementations are shared between request handlers (`Send + Sync`) and
/// may block briefly; callers on an async runtime run bulk calls on a blocking thread.
///
/// Durability: mutating calls return a [`Ticket`]; the write is durable once
/// [`Durability::wait`] (or [`Durability::wait_blocking`]) on [`SightingStore::durability`]
/// returns for it. Only then may a client be told it succeeded.
pub trait SightingStore: Send + Sync + 'static {
    /// Records sightings in order. Each item is checked with [`WriteOp::check`]; refused items
    /// get their [`ItemError`] and the others are applied, all in one atomic batch.
    #[allow(clippy::type_complexity)]
    fn write(
        &self,
        ops: &[WriteOp<'_>],
        now: i64,
    ) -> Result<(Vec<std::result::Result<WriteOutcome, ItemError>>, Ticket)>;

    /// Records shadow sightings (reads of values) in `_shadow/<ns>`, stamped `now`. Not
    /// waited for: a shadow sighting becomes durable with the next group commit.
    fn shadow(&self, reads: &[(&Namespace, &str)], now: i64) -> Result<()>;

    /// Reads one value (raw form) of a namespace.
    fn read(&self, namespace: &Namespace, value: &str, now: i64) -> Result<ReadOutcome>;

    /// [`SightingStore::read`], when it is cheap enough to answer on an async worker: `None`
    /// when it is not (the backend reads over the network, or a TTL sweep is due and the read
    /// would do it), and the caller then runs [`SightingStore::read`] on a blocking thread.
    /// The one place that decides whether a read may skip that hand-off.
    fn read_now(
        &self,
        namespace: &Namespace,
        value: &str,
        now: i64,
    ) -> Option<Result<ReadOutcome>> {
        let _ = (namespace, value, now);
        None
    }

    /// Lists a namespace in key order, from after the cursor `after` (a stored value),
    /// at most `limit` values, and no more once the page holds about `max_bytes` of values,
    /// tags and stats (at least one value). `next` is set whenever more may follow. `None`
    /// when the namespace does not exist.
    fn list(
        &self,
        namespace: &Namespace,
        after: Option<&str>,
        limit: usize,
        max_bytes: usize,
        now: i64,
    ) -> Result<Option<ListPage>>;

    /// Number of live values in a namespace, `None` when it does not exist. O(1).
    fn count(&self, namespace: &Namespace, now: i64) -> Result<Option<u64>>;

    /// Deletes a namespace and gives back the consensus of its values. False when absent.
    fn delete(&self, namespace: &Namespace, now: i64) -> Result<(bool, Ticket)>;

    /// Every stored namespace, private ones included, in order.
    fn namespaces(&self) -> Result<Vec<NamespaceInfo>>;

    /// The value format of a namespace (RAW unless configured).
    fn format(&self, namespace: &Namespace) -> ValueFormat;

    /// Sets the value format; refused with `FormatConflict` when the namespace holds values
    /// and the format would change.
    fn set_format(&self, namespace: &Namespace, format: ValueFormat) -> Result<Ticket>;

    /// Turns digest lookups of a SHA256 namespace on or off: a looked-up value of 64 hex
    /// digits is then the digest itself ([`ValueFormat::encode_lookup`]). Not stored: the
    /// configuration (`[namespaces."x"] digest_lookups = true`) sets it at each start. No
    /// effect on other formats.
    fn set_digest_lookups(&self, namespace: &Namespace, on: bool);

    /// Moves every value whose TTL ran out by `now` to `_expired/<ns>`; returns how many.
    fn sweep(&self, now: i64) -> Result<usize>;

    /// Applies sightings and retractions in one atomic batch together with markers
    /// (`key` → `value` in the store's own metadata), so a feeder that records how far it got
    /// can never apply the same input twice nor skip one, even across a crash. Writes are
    /// checked like [`SightingStore::write`]; a retraction takes one sighting back out of a
    /// value (its count drops by one; at zero the value is removed and its consensus given
    /// back) and is ignored when the value is absent.
    #[allow(clippy::type_complexity)]
    fn apply_marked(
        &self,
        writes: &[WriteOp<'_>],
        retractions: &[(&Namespace, &str)],
        markers: &[(&[u8], &[u8])],
        now: i64,
    ) -> Result<(Vec<std::result::Result<WriteOutcome, ItemError>>, Ticket)>;

    /// The value of a marker written by [`SightingStore::apply_marked`].
    fn marker(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Takes or renews the lease `name` for `holder` (an id of this process) for `ttl_ms`
    /// milliseconds: true when `holder` holds it now. Several front ends on one shared
    /// store run a singleton job (the bridge) only while they hold its lease; another takes
    /// it over once it expired unrenewed. A store that one process holds leases to anyone.
    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        let _ = (name, holder, ttl_ms);
        Ok(true)
    }

    /// Every public namespace holding `value` (raw form, encoded per namespace format), with
    /// its view. Cost: one point read per stored namespace.
    fn holders(&self, value: &str, now: i64) -> Result<Vec<(Namespace, View)>>;

    /// The bounds writes are checked against.
    fn limits(&self) -> &Limits;

    /// The handle that turns this store's tickets into durability.
    fn durability(&self) -> Durability<'_>;

    /// The storage engine's own activity, when it reports one (`GET /metrics`).
    fn engine_stats(&self) -> Option<sighthub_storage::EngineStats> {
        None
    }
}

/// How a store turns its [`Ticket`]s into durability. Opaque: callers only wait on it and ask
/// whether it still works; which mechanism stands behind it (a group commit of fsyncs, or
/// nothing at all for a store that keeps nothing across restarts) is the backend's business.
/// Cheap to copy; no allocation, no dynamic dispatch.
#[derive(Clone, Copy)]
pub struct Durability<'a>(Mechanism<'a>);

#[derive(Clone, Copy)]
enum Mechanism<'a> {
    /// Nothing to wait for: every ticket counts as durable (in-memory stores).
    Immediate,
    /// Tickets are durable once the group commit has fsynced past them.
    Group(&'a GroupCommit),
}

impl std::fmt::Debug for Durability<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Mechanism::Immediate => "Durability::Immediate",
            Mechanism::Group(_) => "Durability::Group",
        })
    }
}

impl<'a> Durability<'a> {
    /// Every ticket is durable as soon as it is handed out (nothing survives a restart anyway).
    pub fn immediate() -> Self {
        Self(Mechanism::Immediate)
    }

    /// Tickets issued by `commit` are durable once it has synced past them.
    pub fn group(commit: &'a GroupCommit) -> Self {
        Self(Mechanism::Group(commit))
    }

    /// What the group commit did since start (fsync latencies, writes per fsync); `None` for
    /// a store without fsyncs.
    pub fn stats(&self) -> Option<sighthub_storage::CommitStats> {
        match self.0 {
            Mechanism::Immediate => None,
            Mechanism::Group(g) => Some(g.stats()),
        }
    }

    /// Waits until `ticket` is durable; [`crate::Error::Poisoned`] when it never will be.
    pub async fn wait(self, ticket: Ticket) -> Result<()> {
        match self.0 {
            Mechanism::Immediate => Ok(()),
            Mechanism::Group(c) => Ok(c.wait(ticket).await?),
        }
    }

    /// Blocking form of [`Durability::wait`], for threads outside an async runtime.
    pub fn wait_blocking(self, ticket: Ticket) -> Result<()> {
        match self.0 {
            Mechanism::Immediate => Ok(()),
            Mechanism::Group(c) => Ok(c.wait_blocking(ticket)?),
        }
    }

    /// True once the store can no longer make writes durable (a failed fsync): it refuses
    /// writes until restarted.
    pub fn is_poisoned(self) -> bool {
        match self.0 {
            Mechanism::Immediate => false,
            Mechanism::Group(c) => c.is_poisoned(),
        }
    }
}

/// Indices `0..n` ordered by the `(namespace, value)` that `key` gives for each (stable, so
/// equal keys keep their order). Small batches keep their order: sorting would not pay.
pub fn key_order<'a>(n: usize, key: impl Fn(usize) -> Option<(&'a str, &'a str)>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if n >= 32 {
        order.sort_by_key(|&i| key(i));
    }
    order
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn durability_is_immediate_or_follows_the_group_commit() {
        let mem = Durability::immediate();
        assert!(!mem.is_poisoned());
        assert!(mem.wait_blocking(Ticket::NONE).is_ok());
        let failing = GroupCommit::start(Box::new(|| Err(sighthub_storage::Error::Poisoned)))
            .expect("starts");
        let ticket = failing.issue().expect("first issue works");
        let group = Durability::group(&failing);
        assert!(matches!(
            group.wait_blocking(ticket),
            Err(crate::Error::Poisoned)
        ));
        assert!(group.is_poisoned());
    }
}
