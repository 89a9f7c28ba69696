//! Peers added at runtime, by invitation (`/_api/peers/join` on the guest,
//! `/iep04/peers/redeem` on the inviter), kept in `<data_dir>/relay/peers.json` (mode 0600:
//! it holds the keys used at the peers) and replaced durably
//! ([`sighthub_storage::file::replace_durably`]) before a link starts.
//!
//! They join the `[relay]` section's peers ([`crate::Relay::effective`]): a SIGHUP reload
//! keeps them, and a peer of the file wins over a runtime peer of the same name (so an
//! operator can always take a link over in the file).

use crate::config::PeerConfig;
use crate::error::{Error, Result};
use crate::identity::Fingerprint;
use serde::{Deserialize, Serialize};
use sighthub_exchange::Feed;
use sighthub_iep04::Tlp;
use std::path::Path;

/// The file, under the relay's directory.
pub const FILE: &str = "peers.json";

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

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersFile {
    version: u32,
    peers: Vec<RuntimePeer>,
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

/// Reads the runtime peers; a missing file is none.
pub fn load(path: &Path) -> Result<Vec<RuntimePeer>> {
    crate::state::read_json::<PeersFile>(path).map(|f| f.peers)
}

/// Replaces the runtime peers durably.
pub fn store(path: &Path, peers: &[RuntimePeer]) -> Result<()> {
    let body = serde_json::to_vec_pretty(&PeersFile {
        version: 1,
        peers: peers.to_vec(),
    })
    .map_err(|e| Error::Config(e.to_string()))?;
    sighthub_storage::file::replace_durably(path, &body, 0o600).map_err(|source| Error::State {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join(FILE);
        assert!(load(&p).expect("missing").is_empty());
        let peer = RuntimePeer {
            name: "org-a".into(),
            url: "https://a.example:9999".into(),
            key: "k".into(),
            fingerprint: Fingerprint::of_spki(b"a").to_string(),
        };
        store(&p, std::slice::from_ref(&peer)).expect("store");
        assert_eq!(load(&p).expect("load"), vec![peer.clone()]);
        let c = peer.config().expect("config");
        assert_eq!(c.fingerprint, Some(Fingerprint::of_spki(b"a")));
        let bad = RuntimePeer {
            fingerprint: "nope".into(),
            ..peer
        };
        assert!(bad.config().is_err());
    }
}
