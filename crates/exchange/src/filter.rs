//! An in-memory Bloom filter in front of the `content` keyspace.
//!
//! Almost every content key looked up is new, and a miss in the LSM still costs a memtable
//! skiplist search plus a bloom check per table (about 13 % of the CPU time of accepting a bare
//! event). This filter answers "certainly not seen in the window" from memory; only a "maybe"
//! goes to the keyspace, which stays the only source of truth (a false positive costs one
//! lookup, never a wrong answer).
//!
//! Two generations cover the content window: keys go into the current one; when it is a
//! window old it becomes the previous one and a fresh one starts. A key inserted at `t` is
//! therefore in one of the two until at least `t + window`. At start-up the live entries of the
//! `content` keyspace (bounded by the window) are loaded into the current generation. The
//! filter lives inside the writer mutex, so it needs no locking of its own.

/// A plain Bloom filter over keys that are already uniformly random (SHA-256 bytes).
struct Bloom {
    bits: Vec<u64>,
    /// Number of bits (a multiple of 64).
    m: u64,
}

/// Probes per key: ~1 % false positives at 10 bits per key.
const K: u64 = 7;

/// Bit positions of a key (double hashing over its two random halves).
fn probes(key: &[u8; 16], m: u64) -> impl Iterator<Item = u64> {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&key[..8]);
    b.copy_from_slice(&key[8..]);
    let (h1, h2) = (u64::from_le_bytes(a), u64::from_le_bytes(b) | 1);
    (0..K).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
}

impl Bloom {
    fn new(bytes: usize) -> Bloom {
        let words = (bytes / 8).max(1);
        Bloom {
            bits: vec![0; words],
            m: words as u64 * 64,
        }
    }

    fn insert(&mut self, key: &[u8; 16]) {
        for p in probes(key, self.m) {
            if let Some(w) = self.bits.get_mut((p / 64) as usize) {
                *w |= 1 << (p % 64);
            }
        }
    }

    fn maybe(&self, key: &[u8; 16]) -> bool {
        probes(key, self.m).all(|p| {
            self.bits
                .get((p / 64) as usize)
                .is_some_and(|w| w & (1 << (p % 64)) != 0)
        })
    }

    fn clear(&mut self) {
        self.bits.iter_mut().for_each(|w| *w = 0);
    }
}

/// The two-generation filter; see the [module docs](self).
pub struct ContentFilter {
    current: Bloom,
    previous: Bloom,
    current_since: u64,
    window: u64,
}

impl ContentFilter {
    /// A filter of `bytes` per generation for a window of `window` seconds, starting at `now`.
    pub fn new(bytes: usize, window: u64, now: u64) -> ContentFilter {
        ContentFilter {
            current: Bloom::new(bytes),
            previous: Bloom::new(bytes),
            current_since: now,
            window: window.max(1),
        }
    }

    fn rotate(&mut self, now: u64) {
        if now >= self.current_since.saturating_add(self.window) {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
            self.current_since = now;
        }
    }

    /// Records a key accepted at `now`.
    pub fn insert(&mut self, key: &[u8; 16], now: u64) {
        self.rotate(now);
        self.current.insert(key);
    }

    /// `false` when the key was certainly not inserted within the last window.
    pub fn maybe(&mut self, key: &[u8; 16], now: u64) -> bool {
        self.rotate(now);
        self.current.maybe(key) || self.previous.maybe(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> [u8; 16] {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(n.to_le_bytes());
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        k
    }

    #[test]
    fn no_false_negatives_within_the_window_and_few_false_positives() {
        let mut f = ContentFilter::new(64 * 1024, 100, 1000);
        for n in 0..20_000 {
            f.insert(&key(n), 1000 + n / 400); // spread over 50 s
        }
        for n in 0..20_000 {
            assert!(f.maybe(&key(n), 1060), "lost key {n}");
        }
        let fp = (20_000..120_000)
            .filter(|n| f.maybe(&key(*n), 1060))
            .count();
        assert!(fp < 2_000, "{fp} false positives in 100k");
        // A key stays at least a window, across one rotation.
        f.insert(&key(999_999), 1099);
        assert!(f.maybe(&key(999_999), 1101), "after the rotation at 1100");
        assert!(f.maybe(&key(999_999), 1198));
        // Two windows later everything is gone.
        assert!(!f.maybe(&key(999_999), 1300));
        assert!(!f.maybe(&key(5), 1300));
    }
}
