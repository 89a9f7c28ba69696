//! The node's report of its background work to the edge ([`NodeStatus`]): relay links from
//! the relay's persisted state, the bridge's position and counters, the IntelMQ transports'
//! counters.

use sighthub_api::status::{BridgeStatus, LinkStatus, NodeStatus, TransportStatus};
use std::sync::Arc;

/// Reads the running subsystems.
pub struct Report {
    /// The relay, whenever the exchange is on.
    pub relay: Option<Arc<sighthub_relay::Relay>>,
    /// The bridge, when it runs.
    pub bridge: Option<Arc<sighthub_bridge::Feeder>>,
    /// The IntelMQ transports, when on.
    pub intelmq: Option<Arc<sighthub_intelmq::Intelmq>>,
}

impl NodeStatus for Report {
    fn links(&self) -> Vec<LinkStatus> {
        let Some(relay) = &self.relay else {
            return Vec::new();
        };
        match relay.status() {
            Ok(all) => {
                let mut out: Vec<LinkStatus> = all
                    .into_iter()
                    .map(|(label, st)| {
                        let (kind, name) = match label.split_once(':') {
                            Some(("pull", n)) => ("pull", n.to_owned()),
                            Some((_, n)) => ("push", n.to_owned()),
                            None => ("push", label.clone()),
                        };
                        LinkStatus {
                            kind,
                            name,
                            last_error: st.last_error.clone(),
                            state: serde_json::to_value(&st).unwrap_or_default(),
                        }
                    })
                    .collect();
                out.sort_by(|a, b| (a.name.as_str(), a.kind).cmp(&(b.name.as_str(), b.kind)));
                out
            }
            Err(e) => {
                tracing::warn!(error = %e, "relay status unreadable");
                Vec::new()
            }
        }
    }

    fn bridge(&self) -> Option<BridgeStatus> {
        let b = self.bridge.as_ref()?;
        let counters = b.counters().ok()?;
        Some(BridgeStatus {
            position: b.position().ok()?,
            log_end: b.log_end(),
            skipped: counters.skipped,
            refused: counters.refused,
        })
    }

    fn transports(&self) -> Vec<TransportStatus> {
        let Some(i) = &self.intelmq else {
            return Vec::new();
        };
        i.stats()
            .into_iter()
            .map(|t| TransportStatus {
                kind: t.kind,
                name: t.name.clone(),
                counters: vec![
                    ("received", t.received),
                    ("stored", t.stored),
                    ("duplicates", t.duplicates),
                    ("rejected", t.rejected),
                    ("delivered", t.delivered),
                    ("skipped", t.skipped),
                    ("failures", t.failures),
                ],
            })
            .collect()
    }
}
