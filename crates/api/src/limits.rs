//! The edge's bounds on what one request may ask for or add (`[limits]` in the
//! configuration; every default documented in docs/SECURITY.md).

use serde::Deserialize;

/// Bounds on requests and on what a write may add to a value (see docs/SECURITY.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most items in one `/wb`, `/vwb`, `/rb` or `/rbs` body (more → 413).
    pub max_bulk_items: usize,
    /// Most values in a listing without `limit=` (`GET /r/<ns>`); a larger namespace is
    /// answered in part, with a `next` cursor and a message saying how to page.
    pub max_list_values: usize,
    /// Bytes (values, tags, stats) after which a listing page ends early, with a `next` cursor.
    pub max_page_bytes: usize,
    /// Most tags one write may carry (413).
    pub max_tags_per_item: usize,
    /// Longest tag, in bytes (413).
    pub max_tag_len: usize,
    /// Most tags a value may hold; a write that would add more is refused (413).
    pub max_tags_per_value: usize,
    /// Hourly stats buckets kept per value (the newest; older ones are dropped).
    pub max_stats_buckets: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        use sighthub_store::Limits;
        Self {
            max_bulk_items: 10_000,
            max_list_values: 10_000,
            max_page_bytes: 16 * 1024 * 1024,
            max_tags_per_item: Limits::DEFAULT_TAGS_PER_ITEM,
            max_tag_len: Limits::DEFAULT_TAG_LEN,
            max_tags_per_value: Limits::DEFAULT_TAGS_PER_VALUE,
            max_stats_buckets: Limits::DEFAULT_STATS_BUCKETS,
        }
    }
}

impl LimitsConfig {
    /// The store's share of these limits.
    pub fn store(&self) -> sighthub_store::Limits {
        sighthub_store::Limits {
            max_tags_per_item: self.max_tags_per_item,
            max_tag_len: self.max_tag_len,
            max_tags_per_value: self.max_tags_per_value,
            max_stats_buckets: self.max_stats_buckets,
        }
    }
}
