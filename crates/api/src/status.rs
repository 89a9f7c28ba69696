//! What the node runs beside the two cores — relay links, the bridge, the IntelMQ
//! transports — seen by the edge without depending on their crates: the [`NodeStatus`] seam,
//! implemented by the composition root. `GET /iep04/peers` answers it as JSON and
//! `GET /metrics` ([`crate::metrics`]) exposes it as metric families.

use serde::Serialize;

/// One relay link (a push to a peer, or a pull from a hub).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkStatus {
    /// `push` or `pull`.
    pub kind: &'static str,
    /// The link's name.
    pub name: String,
    /// Its persisted counters and health (the relay's state file, cursor from its consumer).
    pub state: serde_json::Value,
    /// Why it fails now; `None` while it works.
    pub last_error: Option<String>,
    /// Where this front end stands with the link's lease: `held` (it runs the link here),
    /// `standby` (another front end of a shared exchange runs it), `asking`, `released`;
    /// `None` when the link's task is not running.
    pub lease: Option<&'static str>,
    /// Another front end runs the link (this one is on standby).
    pub held_elsewhere: bool,
}

/// The bridge from exchanged events to sightings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BridgeStatus {
    /// The last log position applied.
    pub position: u64,
    /// The durable end of the log.
    pub log_end: u64,
    /// Log records skipped because they could not be applied.
    pub skipped: u64,
    /// Sightings the store refused.
    pub refused: u64,
}

/// One IntelMQ transport's counters since start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransportStatus {
    /// `tcp_in`, `redis_in`, `out`, `redis_out`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// `(counter name, value)`: `received`, `stored`, `duplicates`, `rejected`,
    /// `delivered`, `skipped`, `failures`.
    pub counters: Vec<(&'static str, u64)>,
    /// Outputs: where this front end stands with the output's lease (as
    /// [`LinkStatus::lease`]); `None` for inputs.
    pub lease: Option<&'static str>,
    /// Outputs: another front end delivers it (this one is on standby).
    pub held_elsewhere: bool,
}

/// What the node reports about its background work.
pub trait NodeStatus: Send + Sync {
    /// Every relay link, in name order.
    fn links(&self) -> Vec<LinkStatus>;
    /// The bridge, when it runs.
    fn bridge(&self) -> Option<BridgeStatus>;
    /// Every IntelMQ transport.
    fn transports(&self) -> Vec<TransportStatus>;
    /// Other background workers' counters since start, as `(worker, [(outcome, count)])`
    /// (MISP's ZeroMQ ingest: frames, sightings, malformed…).
    fn worker_counters(&self) -> Vec<(&'static str, Vec<(&'static str, u64)>)> {
        Vec::new()
    }
    /// The running configuration with every secret masked, and the TLS certificate's
    /// expiry (the console shows it).
    fn settings(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}
