//! Peering by invitation over the relay: the [`Peering`] seam of the HTTP edge, implemented
//! with the relay's token format ([`sighthub_relay::invite`]), its pinned HTTP client and its
//! durable runtime peers ([`sighthub_relay::runtime`]).

use sighthub_api::peering::{BoxFuture, InvitationInfo, NewPeer, Offer, Peering};
use sighthub_relay::invite::Invitation;
use sighthub_relay::runtime::RuntimePeer;
use sighthub_relay::Relay;
use std::sync::Arc;
use std::time::Duration;

/// The relay, seen by the edge.
pub struct RelayPeering {
    relay: Arc<Relay>,
    timeout: Duration,
}

impl RelayPeering {
    /// Over `relay`; a redemption waits at most `timeout` for the inviter.
    pub fn new(relay: Arc<Relay>, timeout: Duration) -> RelayPeering {
        RelayPeering { relay, timeout }
    }
}

fn runtime_peer(p: &NewPeer) -> RuntimePeer {
    RuntimePeer {
        name: p.name.clone(),
        url: p.url.clone(),
        key: p.key.clone(),
        fingerprint: p.fingerprint.clone(),
    }
}

impl Peering for RelayPeering {
    fn parse_token(&self, token: &str) -> Result<InvitationInfo, String> {
        let inv = Invitation::parse(token).map_err(|e| e.to_string())?;
        Ok(InvitationInfo {
            url: inv.url,
            fingerprint: inv.fingerprint,
            org: inv.org,
            name: inv.name,
            key: inv.key,
        })
    }

    fn token(&self, info: &InvitationInfo) -> Result<String, String> {
        let token = Invitation {
            url: info.url.clone(),
            fingerprint: info.fingerprint.clone(),
            org: info.org,
            name: info.name.clone(),
            key: info.key.clone(),
        }
        .token();
        // What the guest's `join` will check, checked here first.
        Invitation::parse(&token).map_err(|e| e.to_string())?;
        Ok(token)
    }

    fn check<'a>(&'a self, peer: &'a NewPeer) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let rp = runtime_peer(peer);
            if !rp.url.starts_with("https://") {
                return Err(format!(
                    "url '{}' is not https: a pinned identity is a TLS key",
                    rp.url
                ));
            }
            self.relay.check_peer(&rp).await.map_err(|e| e.to_string())
        })
    }

    fn add(&self, peer: NewPeer) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.relay
                .add_peer(runtime_peer(&peer))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn redeem<'a>(
        &'a self,
        inv: &'a InvitationInfo,
        offer: &'a Offer,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let inv = Invitation {
                url: inv.url.clone(),
                fingerprint: inv.fingerprint.clone(),
                org: inv.org,
                name: inv.name.clone(),
                key: inv.key.clone(),
            };
            let offer = serde_json::to_value(offer).map_err(|e| e.to_string())?;
            sighthub_relay::invite::redeem(&inv, &offer, self.timeout).await
        })
    }
}
