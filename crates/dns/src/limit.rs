//! The per-client rate limit of the DNS front end.
//!
//! A fixed one-second window: each client may send [`RateLimit::new`]'s `per_second` queries
//! per window; the counts are forgotten when the next window starts, so memory is bounded by
//! the clients of one second, and at most [`MAX_CLIENTS`] of them: past that, new clients are
//! over the limit until the window ends (the clients already counted go on).
//!
//! A client is an IPv4 address or an IPv6 /64 (one host usually holds a whole /64, so
//! counting per address would let it multiply its limit at will). IPv4-mapped IPv6 addresses
//! count as their IPv4 address.
//!
//! What happens over the limit is the front end's choice: UDP queries are dropped (a UDP source
//! can be spoofed, and an answer, even REFUSED, would be sent to the victim: dropping gives an
//! attacker no reflection), TCP queries are answered REFUSED (the handshake proved the source,
//! and the client learns why).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most distinct clients counted in one window.
pub const MAX_CLIENTS: usize = 65_536;

/// Queries per second per client.
pub struct RateLimit {
    per_second: u32,
    window: Mutex<Window>,
}

struct Window {
    start: Instant,
    counts: HashMap<u128, u32>,
}

/// The key a client is counted under.
fn client_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        // The /64 prefix, marked so it never equals an IPv4 key.
        IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 127),
    }
}

impl RateLimit {
    /// At most `per_second` queries per client and second.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: Mutex::new(Window {
                start: Instant::now(),
                counts: HashMap::new(),
            }),
        }
    }

    /// Counts one query of `ip` at `now`; false when it is over the limit.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut w = match self.window.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if now.saturating_duration_since(w.start) >= Duration::from_secs(1) {
            w.start = now;
            w.counts.clear();
        }
        let full = w.counts.len() >= MAX_CLIENTS;
        let key = client_key(ip);
        match w.counts.get_mut(&key) {
            Some(n) if *n >= self.per_second => false,
            Some(n) => {
                *n += 1;
                true
            }
            None if full => false,
            None => {
                w.counts.insert(key, 1);
                true
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_client_gets_its_share_per_second_and_others_are_not_affected() {
        let l = RateLimit::new(3);
        let t = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!((0..3).all(|_| l.allow(a, t)));
        assert!(!l.allow(a, t), "the fourth in the same second");
        assert!(l.allow(b, t), "another client");
        assert!(l.allow(a, t + Duration::from_secs(1)), "the next window");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = RateLimit::new(1);
        let t = Instant::now();
        assert!(l.allow("2001:db8::1".parse().expect("ip"), t));
        assert!(!l.allow("2001:db8::2".parse().expect("ip"), t), "same /64");
        assert!(
            l.allow("2001:db8:0:1::1".parse().expect("ip"), t),
            "another /64"
        );
        assert!(l.allow("192.0.2.1".parse().expect("ip"), t));
        assert!(!l.allow("::ffff:192.0.2.1".parse().expect("ip"), t));
    }
}
