//! The node's report of its background work to the edge ([`NodeStatus`]): relay links from
//! the relay's persisted state, the bridge's position and counters, the IntelMQ transports'
//! counters.

use sighthub_api::status::{BridgeStatus, LinkStatus, NodeStatus, TransportStatus};
use sighthub_exchange::lease::LeaseState;
use std::sync::Arc;

/// Reads the running subsystems.
pub struct Report {
    /// The relay, whenever the exchange is on.
    pub relay: Option<Arc<sighthub_relay::Relay>>,
    /// The bridge, when it runs.
    pub bridge: Option<Arc<sighthub_bridge::Feeder>>,
    /// The IntelMQ transports, when on.
    pub intelmq: Option<Arc<sighthub_intelmq::Intelmq>>,
    /// The DNS server's counters, once it is bound (`Node::serve`).
    pub dns: Arc<std::sync::OnceLock<Arc<sighthub_dns::Counters>>>,
    /// MISP's ZeroMQ ingest, when on.
    pub misp: Option<Arc<sighthub_misp::Ingest>>,
    /// The configuration it started with.
    pub cfg: crate::config::Config,
    /// The TLS certificate file (TLS on).
    pub cert: Option<std::path::PathBuf>,
}

/// A secret as the console shows it: its first 4 characters and its length.
fn mask(secret: &str) -> String {
    let head: String = secret.chars().take(4).collect();
    format!("{head}… ({} characters)", secret.chars().count())
}

impl NodeStatus for Report {
    fn links(&self) -> Vec<LinkStatus> {
        let Some(relay) = &self.relay else {
            return Vec::new();
        };
        let leases = relay.leases();
        match relay.status() {
            Ok(all) => {
                let mut out: Vec<LinkStatus> = all
                    .into_iter()
                    .map(|(label, st)| {
                        let lease = leases.get(&label).copied();
                        let (kind, name) = match label.split_once(':') {
                            Some(("pull", n)) => ("pull", n.to_owned()),
                            Some((_, n)) => ("push", n.to_owned()),
                            None => ("push", label.clone()),
                        };
                        let held_elsewhere = lease == Some(LeaseState::Standby);
                        let mut state = serde_json::to_value(&st).unwrap_or_default();
                        if let Some(obj) = state.as_object_mut() {
                            obj.insert("held_elsewhere".into(), held_elsewhere.into());
                            obj.insert("lease".into(), lease.map(LeaseState::as_str).into());
                        }
                        LinkStatus {
                            kind,
                            name,
                            last_error: st.last_error.clone(),
                            state,
                            lease: lease.map(LeaseState::as_str),
                            held_elsewhere,
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

    fn worker_counters(&self) -> Vec<(&'static str, Vec<(&'static str, u64)>)> {
        let mut out: Vec<(&'static str, Vec<(&'static str, u64)>)> = self
            .misp
            .iter()
            .map(|m| ("misp-zmq", m.counters().snapshot().to_vec()))
            .collect();
        if let Some(d) = self.dns.get() {
            out.push(("dns", d.snapshot().to_vec()));
        }
        out
    }

    fn settings(&self) -> serde_json::Value {
        let c = &self.cfg;
        let not_after = self
            .cert
            .as_deref()
            .and_then(sighthub_api::tls::cert_not_after);
        serde_json::json!({
            "listen": c.listen.to_string(),
            "data_dir": c.data_dir.display().to_string(),
            "tls": {
                "on": !c.plain_http,
                "cert": self.cert.as_ref().map(|p| p.display().to_string()),
                "names": c.tls.names,
                "not_after": not_after,
            },
            "authenticate": c.authenticate,
            "acl": c.acl.iter().map(|(k, g)| serde_json::json!({
                "key": mask(k),
                "admin": g.admin,
                "grants": g.grants.iter().map(|g| format!(
                    "{}{}{}",
                    if g.read { "r" } else { "" },
                    if g.write { "w" } else { "" },
                    g.scope.as_deref().map(|s| format!(":{s}")).unwrap_or_default()
                )).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "exchange": {
                "enabled": c.exchange.enabled,
                "keys": c.exchange.keys.iter().map(|(k, kc)| serde_json::json!({
                    "key": mask(k), "org": kc.org.to_string(), "relay": kc.relay,
                    "tlp_max": format!("{:?}", kc.tlp_max),
                })).collect::<Vec<_>>(),
            },
            "relay": {
                "enabled": c.relay.enabled,
                "peers": c.relay.peers.iter().map(|p| serde_json::json!({
                    "name": p.name, "url": p.url, "key": mask(&p.key),
                    "fingerprint": p.fingerprint.as_ref().map(|f| f.to_string()),
                })).collect::<Vec<_>>(),
                "pulls": c.relay.pulls.iter().map(|p| serde_json::json!({
                    "name": p.name, "url": p.url, "key": mask(&p.key), "consumer": p.consumer,
                })).collect::<Vec<_>>(),
            },
            "bridge": { "enabled": c.bridge.enabled },
            "intelmq": { "enabled": c.intelmq.enabled },
            "metrics": { "listen": c.metrics.listen.map(|a| a.to_string()) },
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
                lease: t.lease,
                held_elsewhere: t.held_elsewhere,
            })
            .collect()
    }
}
