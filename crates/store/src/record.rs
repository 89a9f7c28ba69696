//! The stored sighting record and its binary encoding.
//!
//! On disk a record is:
//!
//! ```text
//! version:u8 (=1) | first_seen:zigzag varint | last_seen:zigzag varint | count:varint
//! | ttl:varint | tags_len:varint | tags:utf8 | n_stats:varint
//! | n × (bucket delta from previous bucket:zigzag varint, count:varint)
//! ```
//!
//! Stats buckets are hour starts (`floor(ts/3600)*3600`) kept sorted, so deltas are small.
//! Decoding never panics: anything malformed is [`Error::Corrupt`].

use crate::error::{Error, Result};

/// Seconds per stats bucket.
pub const BUCKET: i64 = 3600;

/// One value in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Earliest sighting time (unix seconds).
    pub first_seen: i64,
    /// Latest sighting time (unix seconds).
    pub last_seen: i64,
    /// Number of sightings in this namespace.
    pub count: u64,
    /// Seconds after `last_seen` at which the value expires; 0 = never.
    pub ttl: u64,
    /// Comma-joined tag set, in insertion order.
    pub tags: String,
    /// Hourly sighting counts, sorted by bucket start.
    pub stats: Vec<(i64, u64)>,
}

impl Record {
    /// A record for a first sighting at `ts`.
    pub fn first(ts: i64) -> Self {
        Self {
            first_seen: ts,
            last_seen: ts,
            count: 0,
            ..Self::default()
        }
    }

    /// Adds `n` sightings at `ts`, keeping first/last seen and the hourly stats.
    pub fn sight(&mut self, ts: i64, n: u64) {
        if self.count == 0 {
            self.first_seen = ts;
            self.last_seen = ts;
        } else {
            self.first_seen = self.first_seen.min(ts);
            self.last_seen = self.last_seen.max(ts);
        }
        self.count = self.count.saturating_add(n);
        self.add_stat(ts.div_euclid(BUCKET) * BUCKET, n);
    }

    fn add_stat(&mut self, bucket: i64, n: u64) {
        match self.stats.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(i) => {
                if let Some(s) = self.stats.get_mut(i) {
                    s.1 = s.1.saturating_add(n);
                }
            }
            Err(i) => self.stats.insert(i, (bucket, n)),
        }
    }

    /// Drops stats buckets more than `hours` before the newest one (0 keeps all).
    pub fn trim_stats(&mut self, hours: u64) {
        if hours == 0 {
            return;
        }
        if let Some(&(newest, _)) = self.stats.last() {
            let keep_from = newest.saturating_sub((hours as i64).saturating_mul(BUCKET));
            self.stats.retain(|(b, _)| *b > keep_from);
        }
    }

    /// Keeps at most `max` stats buckets, the newest (0 keeps all).
    pub fn cap_stats(&mut self, max: usize) {
        if max > 0 && self.stats.len() > max {
            let drop = self.stats.len() - max;
            self.stats.drain(..drop);
        }
    }

    /// Merges another record into this one (used when moving a value to `_expired`).
    pub fn absorb(&mut self, other: &Record) {
        if self.count == 0 {
            self.first_seen = other.first_seen;
            self.last_seen = other.last_seen;
        } else {
            self.first_seen = self.first_seen.min(other.first_seen);
            self.last_seen = self.last_seen.max(other.last_seen);
        }
        self.count = self.count.saturating_add(other.count);
        self.tags = merge_tags(&self.tags, &other.tags);
        for &(b, n) in &other.stats {
            self.add_stat(b, n);
        }
    }

    /// About how many bytes this record, with a value of `value_len` bytes, takes in memory
    /// and in a JSON answer (stats included). A bound for page and answer budgets, not an
    /// exact size.
    pub fn approx_bytes(&self, value_len: usize) -> usize {
        128usize
            .saturating_add(value_len)
            .saturating_add(self.tags.len())
            .saturating_add(self.stats.len().saturating_mul(24))
    }

    /// When the value expires (unix seconds), if it has a TTL.
    pub fn expires_at(&self) -> Option<i64> {
        (self.ttl > 0).then(|| {
            self.last_seen
                .saturating_add(i64::try_from(self.ttl).unwrap_or(i64::MAX))
        })
    }

    /// True when the TTL has run out at `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at().is_some_and(|at| now >= at)
    }

    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.tags.len() + self.stats.len() * 4);
        out.push(1);
        put_i64(&mut out, self.first_seen);
        put_i64(&mut out, self.last_seen);
        put_u64(&mut out, self.count);
        put_u64(&mut out, self.ttl);
        put_u64(&mut out, self.tags.len() as u64);
        out.extend_from_slice(self.tags.as_bytes());
        put_u64(&mut out, self.stats.len() as u64);
        let mut prev = 0i64;
        for &(b, n) in &self.stats {
            put_i64(&mut out, b.wrapping_sub(prev));
            put_u64(&mut out, n);
            prev = b;
        }
        out
    }

    /// Decodes a record; never panics.
    pub fn decode(mut buf: &[u8]) -> Result<Self> {
        let b = &mut buf;
        if take_byte(b)? != 1 {
            return Err(Error::Corrupt("unknown record version"));
        }
        let first_seen = get_i64(b)?;
        let last_seen = get_i64(b)?;
        let count = get_u64(b)?;
        let ttl = get_u64(b)?;
        let tags_len = usize::try_from(get_u64(b)?).map_err(|_| Error::Corrupt("tags length"))?;
        if tags_len > b.len() {
            return Err(Error::Corrupt("tags length"));
        }
        let (tags, rest) = b.split_at(tags_len);
        let tags = std::str::from_utf8(tags)
            .map_err(|_| Error::Corrupt("tags not utf-8"))?
            .to_owned();
        *b = rest;
        let n = usize::try_from(get_u64(b)?).map_err(|_| Error::Corrupt("stats length"))?;
        if n > b.len() / 2 {
            return Err(Error::Corrupt("stats length"));
        }
        let mut stats = Vec::with_capacity(n);
        let mut prev = 0i64;
        for _ in 0..n {
            let bucket = prev.wrapping_add(get_i64(b)?);
            stats.push((bucket, get_u64(b)?));
            prev = bucket;
        }
        if !b.is_empty() {
            return Err(Error::Corrupt("trailing bytes"));
        }
        Ok(Self {
            first_seen,
            last_seen,
            count,
            ttl,
            tags,
            stats,
        })
    }
}

/// Merges tag lists as a set, keeping insertion order. Both `,` and `;` separate tags on
/// input; tags are trimmed and empty ones dropped. The result is comma-joined. Linear in the
/// number of tags (a hash set decides what is already there).
pub fn merge_tags(existing: &str, new: &str) -> String {
    let mut seen: rustc_hash::FxHashSet<&str> = rustc_hash::FxHashSet::default();
    let mut tags: Vec<&str> = Vec::new();
    for t in split_tags(existing).chain(split_tags(new)) {
        if seen.insert(t) {
            tags.push(t);
        }
    }
    tags.join(",")
}

/// The tags of a tag list (`,` or `;` separated), trimmed, empty ones dropped, repeats kept.
pub fn split_tags(list: &str) -> impl Iterator<Item = &str> {
    list.split([',', ';'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn take_byte(b: &mut &[u8]) -> Result<u8> {
    let (&first, rest) = b.split_first().ok_or(Error::Corrupt("truncated"))?;
    *b = rest;
    Ok(first)
}

fn get_u64(b: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take_byte(b)?;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(Error::Corrupt("varint overflow"));
        }
        v |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Error::Corrupt("varint too long"))
}

fn get_i64(b: &mut &[u8]) -> Result<i64> {
    let u = get_u64(b)?;
    Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip() {
        let mut r = Record::first(-5);
        r.sight(-5, 1);
        r.sight(1_999_998_000, 2);
        r.sight(999_997_200, 1);
        r.ttl = 60;
        r.tags = merge_tags("", "a;b");
        let back = Record::decode(&r.encode()).expect("decodes");
        assert_eq!(back, r);
        assert_eq!(back.first_seen, -5);
        assert_eq!(back.last_seen, 1_999_998_000);
        assert_eq!(back.count, 4);
        assert_eq!(
            back.stats,
            vec![(-3600, 1), (999_997_200, 1), (1_999_998_000, 2)]
        );
    }

    #[test]
    fn extremes_round_trip() {
        let r = Record {
            first_seen: i64::MIN,
            last_seen: i64::MAX,
            count: u64::MAX,
            ttl: u64::MAX,
            tags: "é,x".into(),
            stats: vec![(i64::MIN, u64::MAX), (i64::MAX, 1)],
        };
        assert_eq!(Record::decode(&r.encode()).ok(), Some(r));
    }

    #[test]
    fn garbage_never_panics() {
        let good = Record::first(7).encode();
        for cut in 0..good.len() {
            let _ = Record::decode(&good[..cut]);
        }
        assert!(Record::decode(&[]).is_err());
        assert!(Record::decode(&[2, 0, 0]).is_err());
        assert!(Record::decode(&[
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
        ])
        .is_err());
        assert!(Record::decode(&[1, 0, 0, 0, 0, 0xff, 0x01]).is_err());
    }

    #[test]
    fn tags_merge_as_a_set() {
        assert_eq!(merge_tags("a,b", "b,,c , a"), "a,b,c");
        assert_eq!(merge_tags("", ""), "");
        assert_eq!(merge_tags("x", "d;e"), "x,d,e");
    }

    #[test]
    fn tag_merging_is_linear() {
        // 100,000 distinct tags merge in well under a second (the quadratic merge took
        // minutes); a debug build is slow, so the bound is generous.
        let many: Vec<String> = (0..100_000).map(|i| format!("t{i}")).collect();
        let start = std::time::Instant::now();
        let merged = merge_tags(&many.join(","), &many.join(";"));
        assert_eq!(merged.split(',').count(), 100_000);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn stats_cap_keeps_the_newest() {
        let mut r = Record::first(0);
        for h in 0..10 {
            r.sight(h * BUCKET, 1);
        }
        r.cap_stats(4);
        assert_eq!(r.stats.len(), 4);
        assert_eq!(r.stats.first().map(|s| s.0), Some(6 * BUCKET));
        r.cap_stats(0);
        assert_eq!(r.stats.len(), 4);
    }

    #[test]
    fn ttl_expiry() {
        let mut r = Record::first(100);
        r.sight(100, 1);
        assert!(!r.is_expired(10_000));
        r.ttl = 60;
        assert!(!r.is_expired(159));
        assert!(r.is_expired(160));
    }

    #[test]
    fn stats_retention() {
        let mut r = Record::first(0);
        for h in 0..10 {
            r.sight(h * BUCKET, 1);
        }
        r.trim_stats(3);
        assert_eq!(r.stats.len(), 3);
        assert_eq!(r.stats.first().map(|s| s.0), Some(7 * BUCKET));
    }
}
