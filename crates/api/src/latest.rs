//! The `/_api/latest` ring: the most recent writes, one entry per (namespace, value), newest
//! first; a rewrite moves the entry to the front. Kept in memory only (it is a convenience
//! view, not data): it starts empty after a restart.

use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One recent write.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LatestItem {
    /// Namespace.
    pub namespace: String,
    /// Stored form of the value.
    pub value: String,
    /// When it was written (server time, unix seconds).
    pub written: i64,
}

#[derive(Default)]
struct Ring {
    seq: u64,
    by_key: FxHashMap<(String, String), u64>,
    order: BTreeMap<u64, LatestItem>,
}

/// The ring of recent writes.
pub struct Latest {
    capacity: usize,
    ring: Mutex<Ring>,
}

impl Latest {
    /// A ring holding at most `capacity` entries (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ring: Mutex::new(Ring::default()),
        }
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records writes.
    pub fn record<'a>(&self, items: impl IntoIterator<Item = (&'a str, String)>, written: i64) {
        if self.capacity == 0 {
            return;
        }
        let mut r = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (ns, value) in items {
            r.seq += 1;
            let seq = r.seq;
            let key = (ns.to_owned(), value);
            if let Some(old) = r.by_key.insert(key.clone(), seq) {
                r.order.remove(&old);
            }
            r.order.insert(
                seq,
                LatestItem {
                    namespace: key.0,
                    value: key.1,
                    written,
                },
            );
            while r.order.len() > self.capacity {
                if let Some((_, gone)) = r.order.pop_first() {
                    r.by_key.remove(&(gone.namespace, gone.value));
                }
            }
        }
    }

    /// Newest first, filtered, at most `limit`.
    pub fn newest(&self, limit: usize, keep: impl Fn(&LatestItem) -> bool) -> Vec<LatestItem> {
        let r = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.order
            .values()
            .rev()
            .filter(|i| keep(i))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn newest_first_deduplicated_bounded() {
        let l = Latest::new(3);
        l.record([("a", "1".to_owned()), ("a", "2".to_owned())], 10);
        l.record([("a", "1".to_owned())], 11);
        let got: Vec<_> = l
            .newest(10, |_| true)
            .into_iter()
            .map(|i| i.value)
            .collect();
        assert_eq!(got, ["1", "2"]);
        l.record([("b", "3".to_owned()), ("b", "4".to_owned())], 12);
        let got: Vec<_> = l
            .newest(10, |_| true)
            .into_iter()
            .map(|i| i.value)
            .collect();
        assert_eq!(got, ["4", "3", "1"]);
        assert_eq!(l.newest(1, |i| i.namespace == "a").len(), 1);
    }
}
