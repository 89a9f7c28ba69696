//! SightingDB's snapshot format, decoded as a stream into typed records ([`SdbRecord`]).
//!
//! What SightingDB writes (read from its source, `persistence.rs`, `db.rs`, `attribute.rs`):
//! one JSON document per file, `{"version": V, "namespaces": {NS: {VALUE: ATTRIBUTE}}}`,
//! compressed with zstd in 0.5.0 and later (one `*.json.zst` shard per first namespace
//! segment, `sightingdb.json.zst` for the internal ones), and uncompressed in the single
//! `sightingdb.json` of the versions before (which 0.5 to 0.7.8 still read). An attribute is
//! `{"value", "first_seen", "last_seen" (unix seconds), "tags", "ttl", ...}` with, in version
//! 2 (0.7.x), per-node counts `"counts": {NODE: N}` and hourly buckets
//! `"node_stats": {NODE: {HOUR: N}}`, and in version 1 (0.5.x and the single file) one
//! `"count"` and one `"stats": {HOUR: N}`. A value's count is the sum over nodes (as
//! SightingDB reports it), its buckets the per-hour sums.
//!
//! **Bounded.** The document is never held in memory: records are handed to the caller one
//! by one as they are parsed, so a shard decompressing to gigabytes costs one record of
//! memory. One record (with its namespace and value) may take at most
//! [`MAX_RECORD_BYTES`] of input; past that the decoder stops with
//! [`DecodeError::RecordTooLarge`] instead of allocating. Unknown fields are skipped (newer
//! 0.7.x fields such as `tags_at`); a version newer than 2 is refused, as SightingDB itself
//! refuses it. Malformed input of any kind is an error, never a panic (fuzzed:
//! `fuzz/fuzz_targets/sightingdb_snapshot.rs`).

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Read;

/// Most input bytes one record may take (namespace key, value key and attribute): 4 MiB.
/// The largest record SightingDB can hold within sighthub's limits (a 16 KiB value, 256 tags
/// of 256 bytes, a leap year of hourly buckets) is well under 1 MiB.
pub const MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;

/// The newest snapshot version understood (SightingDB 0.7.x writes 2, 0.5.x wrote 1).
pub const NEWEST_VERSION: u32 = 2;

/// One value of one namespace, as SightingDB stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdbRecord {
    /// The namespace, as SightingDB spelled it.
    pub namespace: String,
    /// The value.
    pub value: String,
    /// First seen (unix seconds).
    pub first_seen: i64,
    /// Last seen (unix seconds).
    pub last_seen: i64,
    /// Sightings: the sum over SightingDB's nodes (its reported count).
    pub count: u64,
    /// Comma-separated tags.
    pub tags: String,
    /// Seconds after last seen at which the value expires; 0 = never.
    pub ttl: u64,
    /// Hourly buckets (hour start, sightings), summed over nodes, sorted.
    pub stats: Vec<(i64, u64)>,
}

/// Why a snapshot could not be decoded (further).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON of the expected shape, or cut short (a truncated file ends mid-document).
    #[error("not a valid SightingDB snapshot (truncated or corrupt?): {0}")]
    Json(serde_json::Error),
    /// Reading or decompressing failed (a truncated or corrupt zstd stream lands here).
    #[error("cannot read or decompress it (truncated or corrupt?): {0}")]
    Io(std::io::Error),
    /// A version this decoder does not know.
    #[error("snapshot version {0} is not one this importer understands (1: SightingDB 0.5.x, 2: 0.7.x); upgrade sighthub")]
    Version(u64),
    /// The document has no `version` field.
    #[error("no \"version\" field: not a SightingDB snapshot")]
    NoVersion,
    /// One record took more than [`MAX_RECORD_BYTES`] of input.
    #[error("one record is larger than {0} bytes: not a SightingDB snapshot, or a corrupt one")]
    RecordTooLarge(u64),
    /// The caller asked to stop.
    #[error("stopped by the caller")]
    Stopped,
}

/// What a decoded document said about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Its `version`.
    pub version: u64,
    /// Records handed to the caller.
    pub records: u64,
}

/// Decodes one snapshot document (already decompressed) from `reader`, calling `on_record`
/// for each value in document order; `on_record` returns `false` to stop
/// ([`DecodeError::Stopped`]). See the module docs for the bounds.
pub fn decode<R: Read>(
    reader: R,
    mut on_record: impl FnMut(SdbRecord) -> bool,
) -> Result<Decoded, DecodeError> {
    let ctx = Ctx::default();
    let budget = Budget {
        inner: std::io::BufReader::with_capacity(64 * 1024, reader),
        ctx: &ctx,
    };
    let mut de = serde_json::Deserializer::from_reader(budget);
    let top = Top {
        ctx: &ctx,
        cb: &mut on_record,
    };
    let result = top.deserialize(&mut de).and_then(|()| de.end());
    match result {
        Ok(()) => match ctx.version.get() {
            Some(version) => Ok(Decoded {
                version,
                records: ctx.records.get(),
            }),
            None => Err(DecodeError::NoVersion),
        },
        Err(e) => Err(ctx.failure.take().unwrap_or_else(|| {
            if e.is_io() {
                DecodeError::Io(std::io::Error::from(e))
            } else {
                DecodeError::Json(e)
            }
        })),
    }
}

#[derive(Default)]
struct Ctx {
    used: Cell<u64>,
    records: Cell<u64>,
    version: Cell<Option<u64>>,
    failure: RefCell<Option<DecodeError>>,
}

impl Ctx {
    fn fail<E: serde::de::Error>(&self, why: DecodeError) -> E {
        let text = why.to_string();
        *self.failure.borrow_mut() = Some(why);
        E::custom(text)
    }
}

/// Counts the bytes read since the last record and refuses to read past the budget.
struct Budget<'c, R> {
    inner: R,
    ctx: &'c Ctx,
}

impl<R: Read> Read for Budget<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let used = self.ctx.used.get().saturating_add(n as u64);
        self.ctx.used.set(used);
        if used > MAX_RECORD_BYTES {
            *self.ctx.failure.borrow_mut() = Some(DecodeError::RecordTooLarge(MAX_RECORD_BYTES));
            return Err(std::io::Error::other("record too large"));
        }
        Ok(n)
    }
}

/// One attribute, either version.
#[derive(Deserialize)]
struct RawAttribute {
    first_seen: i64,
    last_seen: i64,
    #[serde(default)]
    counts: BTreeMap<String, u64>,
    #[serde(default)]
    count: u64,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    node_stats: BTreeMap<String, BTreeMap<i64, u64>>,
    #[serde(default)]
    stats: BTreeMap<i64, u64>,
}

impl RawAttribute {
    fn into_record(self, namespace: &str, value: String) -> SdbRecord {
        let count = self
            .counts
            .values()
            .fold(self.count, |a, b| a.saturating_add(*b));
        let mut stats = self.stats;
        for node in self.node_stats.into_values() {
            for (hour, n) in node {
                let e = stats.entry(hour).or_insert(0);
                *e = e.saturating_add(n);
            }
        }
        SdbRecord {
            namespace: namespace.to_owned(),
            value,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            count,
            tags: self.tags,
            ttl: self.ttl,
            stats: stats.into_iter().collect(),
        }
    }
}

struct Top<'a, F> {
    ctx: &'a Ctx,
    cb: &'a mut F,
}

impl<'de, F: FnMut(SdbRecord) -> bool> DeserializeSeed<'de> for Top<'_, F> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(SdbRecord) -> bool> Visitor<'de> for Top<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a SightingDB snapshot object {\"version\", \"namespaces\"}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => {
                    let v: u64 = map.next_value()?;
                    if v == 0 || v > u64::from(NEWEST_VERSION) {
                        return Err(self.ctx.fail(DecodeError::Version(v)));
                    }
                    self.ctx.version.set(Some(v));
                }
                "namespaces" => map.next_value_seed(Namespaces {
                    ctx: self.ctx,
                    cb: &mut *self.cb,
                })?,
                _ => {
                    let IgnoredAny = map.next_value()?;
                }
            }
            self.ctx.used.set(0);
        }
        Ok(())
    }
}

struct Namespaces<'a, F> {
    ctx: &'a Ctx,
    cb: &'a mut F,
}

impl<'de, F: FnMut(SdbRecord) -> bool> DeserializeSeed<'de> for Namespaces<'_, F> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(SdbRecord) -> bool> Visitor<'de> for Namespaces<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of namespaces")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(ns) = map.next_key::<String>()? {
            map.next_value_seed(Values {
                ctx: self.ctx,
                cb: &mut *self.cb,
                namespace: &ns,
            })?;
        }
        Ok(())
    }
}

struct Values<'a, F> {
    ctx: &'a Ctx,
    cb: &'a mut F,
    namespace: &'a str,
}

impl<'de, F: FnMut(SdbRecord) -> bool> DeserializeSeed<'de> for Values<'_, F> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(SdbRecord) -> bool> Visitor<'de> for Values<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(value) = map.next_key::<String>()? {
            let raw: RawAttribute = map.next_value()?;
            self.ctx.used.set(0);
            self.ctx.records.set(self.ctx.records.get() + 1);
            if !(self.cb)(raw.into_record(self.namespace, value)) {
                return Err(self.ctx.fail(DecodeError::Stopped));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(json: &str) -> Result<(Decoded, Vec<SdbRecord>), DecodeError> {
        let mut out = Vec::new();
        let d = decode(json.as_bytes(), |r| {
            out.push(r);
            true
        })?;
        Ok((d, out))
    }

    #[test]
    fn version_2_sums_nodes_and_version_1_reads_the_single_totals() {
        let v2 = r#"{"version":2,"namespaces":{"a/b":{"1.2.3.4":{"value":"1.2.3.4","first_seen":3600,"last_seen":7300,"counts":{"local":3,"peer":2},"tags":"x,y","tags_at":0,"ttl":60,"node_stats":{"local":{"3600":1,"7200":2},"peer":{"7200":2}}}}}}"#;
        let (d, r) = all(v2).expect("decodes");
        assert_eq!(
            d,
            Decoded {
                version: 2,
                records: 1
            }
        );
        assert_eq!(r[0].count, 5);
        assert_eq!(r[0].stats, vec![(3600, 1), (7200, 4)]);
        assert_eq!(
            (r[0].namespace.as_str(), r[0].value.as_str(), r[0].ttl),
            ("a/b", "1.2.3.4", 60)
        );
        // As 0.5.x's `Attribute` serialises (serde derive, field order): one count, one stats.
        let v1 = r#"{"version":1,"namespaces":{"n":{"v":{"value":"v","first_seen":10,"last_seen":20,"count":4,"tags":"","ttl":0,"stats":{"0":4}}}}}"#;
        let (d, r) = all(v1).expect("decodes");
        assert_eq!(d.version, 1);
        assert_eq!((r[0].count, r[0].stats.clone()), (4, vec![(0, 4)]));
    }

    #[test]
    fn bad_input_is_an_error_that_says_why() {
        assert!(matches!(
            all(r#"{"version":3,"namespaces":{}}"#),
            Err(DecodeError::Version(3))
        ));
        assert!(matches!(
            all(r#"{"namespaces":{}}"#),
            Err(DecodeError::NoVersion)
        ));
        assert!(matches!(
            all(r#"{"version":2,"namespaces":{"n":{"v":{"first_"#),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(all("[1,2]"), Err(DecodeError::Json(_))));
        let huge = format!(
            r#"{{"version":2,"namespaces":{{"n":{{"{}":{{}}}}}}}}"#,
            "x".repeat(MAX_RECORD_BYTES as usize + 10)
        );
        assert!(matches!(all(&huge), Err(DecodeError::RecordTooLarge(_))));
    }

    #[test]
    fn stopping_stops() {
        let json = r#"{"version":2,"namespaces":{"n":{"a":{"first_seen":1,"last_seen":1},"b":{"first_seen":1,"last_seen":1}}}}"#;
        let mut seen = 0;
        let r = decode(json.as_bytes(), |_| {
            seen += 1;
            false
        });
        assert!(matches!(r, Err(DecodeError::Stopped)));
        assert_eq!(seen, 1);
    }
}
