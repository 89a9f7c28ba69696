//! The storage seam: the [`SightingStore`] trait and the types that cross it.
//!
//! Every backend (the embedded fjall one today, a distributed one later) implements this
//! trait; the HTTP layer only ever talks to it. Values cross the seam raw, as clients send
//! them; the backend applies the namespace's value format.

use crate::commit::{GroupCommit, Ticket};
use crate::error::{ItemError, Result};
use crate::format::ValueFormat;
use crate::namespace::Namespace;
use crate::record::Record;

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

    /// The checks a client write must pass (shared by writes and dry runs).
    pub fn check(&self) -> std::result::Result<(), ItemError> {
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
/// [`GroupCommit::wait`] on [`SightingStore::group_commit`] returns for it. Only then may a
/// client be told it succeeded.
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

    /// Lists a namespace in key order, from after the cursor `after` (a stored value),
    /// at most `limit` values (all when `None`). `None` when the namespace does not exist.
    fn list(
        &self,
        namespace: &Namespace,
        after: Option<&str>,
        limit: Option<usize>,
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

    /// Every public namespace holding `value` (raw form, encoded per namespace format), with
    /// its view. Cost: one point read per stored namespace.
    fn holders(&self, value: &str, now: i64) -> Result<Vec<(Namespace, View)>>;

    /// The group commit that turns tickets into durability.
    fn group_commit(&self) -> &GroupCommit;
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
