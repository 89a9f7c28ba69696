//! Peers added at runtime, by invitation (`/_api/peers/join` on the guest,
//! `/iep04/peers/redeem` on the inviter), kept in the shared document [`DOCUMENT`]
//! ([`sighthub_storage::docs`]): `<data_dir>/relay/peers.json` on one front end (mode 0600:
//! it holds the keys used at the peers), the cluster when front ends share one. It is
//! written durably before a link starts.
//!
//! They join the `[relay]` section's peers ([`crate::Relay::effective`]): a SIGHUP reload
//! keeps them, and a peer of the file wins over a runtime peer of the same name (so an
//! operator can always take a link over in the file).

use crate::config::PeerConfig;
use crate::error::Result;
use crate::identity::Fingerprint;
use serde::{Deserialize, Serialize};
use sighthub_exchange::Feed;
use sighthub_iep04::Tlp;
use sighthub_storage::docs::{Documents, Shared};
use std::sync::Arc;

/// The shared document of the runtime peers (`<data_dir>/relay/peers.json` on the embedded
/// backend).
pub const DOCUMENT: &str = "relay/peers";

/// One runtime peer: a pinned push link sending every feed up to TLP:AMBER (as the block
/// `sighthub peer join --offline` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimePeer {
    /// Peer name.
    pub name: String,
    /// Its base url.
    pub url: String,
    /// The key used there.
    pub key: String,
    /// Its identity, pinned.
    pub fingerprint: String,
}

/// The document: its format's version (1) and the peers.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersFile {
    pub(crate) version: u32,
    /// The peers, in the order they were added.
    pub peers: Vec<RuntimePeer>,
}

impl RuntimePeer {
    /// The link's configuration; refused when the fingerprint does not parse.
    pub fn config(&self) -> std::result::Result<PeerConfig, String> {
        let fingerprint: Fingerprint = self
            .fingerprint
            .parse()
            .map_err(|e| format!("peer '{}': fingerprint: {e}", self.name))?;
        Ok(PeerConfig {
            name: self.name.clone(),
            url: self.url.clone(),
            key: self.key.clone(),
            feeds: vec![Feed::All],
            tlp_max: Tlp::Amber,
            forward_received: true,
            instance: None,
            fingerprint: Some(fingerprint),
            ca: None,
            accept_invalid_certs: false,
        })
    }
}

/// The runtime peers of `docs` (a missing document is none).
pub fn open(docs: Arc<dyn Documents>) -> Result<Shared<PeersFile>> {
    Ok(Shared::open(docs, DOCUMENT)?)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let docs: Arc<dyn Documents> =
            Arc::new(sighthub_storage::docs::FileDocuments::new(dir.path()));
        assert!(open(Arc::clone(&docs))
            .expect("missing")
            .current()
            .1
            .peers
            .is_empty());
        let peer = RuntimePeer {
            name: "org-a".into(),
            url: "https://a.example:9999".into(),
            key: "k".into(),
            fingerprint: Fingerprint::of_spki(b"a").to_string(),
        };
        open(Arc::clone(&docs))
            .expect("open")
            .edit(|f| {
                f.version = 1;
                f.peers.push(peer.clone());
                Ok::<_, crate::Error>(())
            })
            .expect("store");
        // The file the embedded backend has always used.
        assert!(dir.path().join("relay/peers.json").exists());
        let again = open(Arc::new(sighthub_storage::docs::FileDocuments::new(
            dir.path(),
        )))
        .expect("load");
        assert_eq!(again.current().1.peers, vec![peer.clone()]);
        let c = peer.config().expect("config");
        assert_eq!(c.fingerprint, Some(Fingerprint::of_spki(b"a")));
        let bad = RuntimePeer {
            fingerprint: "nope".into(),
            ..peer
        };
        assert!(bad.config().is_err());
    }
}
