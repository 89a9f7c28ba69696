//! Per-transport counters since start, for the metrics (`GET /metrics`) and the status:
//! what each input received and what became of it, what each output delivered.

use sighthub_exchange::lease::LeaseWatch;
use std::sync::atomic::{AtomicU64, Ordering};

/// One transport's counters (shared by its task and the metrics; relaxed atomics).
#[derive(Debug)]
pub struct TransportStats {
    /// `tcp_in`, `redis_in`, `out` or `redis_out`.
    pub kind: &'static str,
    /// Its configured name.
    pub name: String,
    /// Inputs: messages received (frames, queue entries).
    pub received: AtomicU64,
    /// Inputs: stored as new messages (or tag updates).
    pub stored: AtomicU64,
    /// Inputs: already in the log (by uuid or content).
    pub duplicates: AtomicU64,
    /// Inputs: invalid or refused, never stored.
    pub rejected: AtomicU64,
    /// Outputs: events delivered (acknowledged by the collector or queued).
    pub delivered: AtomicU64,
    /// Outputs: events skipped for good (refused by the collector, no bare form).
    pub skipped: AtomicU64,
    /// Outputs: failed deliveries (retried).
    pub failures: AtomicU64,
    /// Outputs: where this front end stands with the output's lease (on an exchange several
    /// front ends share, one of them delivers).
    pub lease: LeaseWatch,
}

/// A copy of [`TransportStats`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TransportSnapshot {
    /// Kind of transport.
    pub kind: &'static str,
    /// Name.
    pub name: String,
    /// See [`TransportStats`].
    pub received: u64,
    /// See [`TransportStats`].
    pub stored: u64,
    /// See [`TransportStats`].
    pub duplicates: u64,
    /// See [`TransportStats`].
    pub rejected: u64,
    /// See [`TransportStats`].
    pub delivered: u64,
    /// See [`TransportStats`].
    pub skipped: u64,
    /// See [`TransportStats`].
    pub failures: u64,
    /// Outputs: `held` (this front end delivers), `standby` (another one does), `asking`
    /// or `released`; `None` for inputs.
    pub lease: Option<&'static str>,
    /// Outputs: another front end holds the lease and delivers.
    pub held_elsewhere: bool,
}

impl TransportStats {
    /// Zeroed counters of a transport.
    pub fn new(kind: &'static str, name: &str) -> TransportStats {
        TransportStats {
            kind,
            name: name.to_owned(),
            received: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            lease: LeaseWatch::default(),
        }
    }

    /// Whether it is an output (`out`, `redis_out`), which runs under a lease.
    pub fn is_output(&self) -> bool {
        matches!(self.kind, "out" | "redis_out")
    }

    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// A copy.
    pub fn snapshot(&self) -> TransportSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportSnapshot {
            kind: self.kind,
            name: self.name.clone(),
            received: g(&self.received),
            stored: g(&self.stored),
            duplicates: g(&self.duplicates),
            rejected: g(&self.rejected),
            delivered: g(&self.delivered),
            skipped: g(&self.skipped),
            failures: g(&self.failures),
            lease: self.is_output().then(|| self.lease.state().as_str()),
            held_elsewhere: self.is_output() && self.lease.held_elsewhere(),
        }
    }
}
