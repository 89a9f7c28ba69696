//! The seam between the HTTP edge and the relay for peering by invitation: what the
//! `/_api/peers/*` and `/iep04/peers/redeem` handlers ([`crate::cmd::peers`]) need from
//! the links without depending on the relay crate. The composition root implements it over
//! the relay (its pinned HTTP client, its durable runtime peers); the keys stay in the
//! [`crate::keyring::KeyRing`].

use std::future::Future;
use std::pin::Pin;
use uuid::Uuid;

/// A boxed future (the trait is used as an object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an invitation token carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InvitationInfo {
    /// The inviter's base url, as the guest reaches it.
    pub url: String,
    /// The inviter's identity (`sha256:…`).
    pub fingerprint: String,
    /// The inviter's organisation.
    pub org: Uuid,
    /// The peer name the guest gives the inviter.
    pub name: String,
    /// The single-use key the guest redeems the invitation with.
    pub key: String,
}

/// One side's offer when redeeming (`POST /iep04/peers/redeem`): how the inviter reaches
/// the guest, and the key it will push with there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// The guest's base url, as the inviter reaches it.
    pub url: String,
    /// The guest's identity.
    pub fingerprint: String,
    /// The guest's organisation.
    pub org: Uuid,
    /// The peer name the inviter gives the guest.
    pub name: String,
    /// The key the inviter publishes with at the guest.
    pub key: String,
}

/// A pinned push link to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPeer {
    /// Peer name (unique among peers).
    pub name: String,
    /// Its base url.
    pub url: String,
    /// The key used there.
    pub key: String,
    /// Its identity.
    pub fingerprint: String,
}

/// What peering needs from the relay.
pub trait Peering: Send + Sync {
    /// Reads a token `sighthub peer invite` (or `/_api/peers/invite`) printed.
    fn parse_token(&self, token: &str) -> Result<InvitationInfo, String>;
    /// The token of `info`; refused when the guest could not use it (url, name).
    fn token(&self, info: &InvitationInfo) -> Result<String, String>;
    /// Whether `peer` would be accepted as a link (name, url, fingerprint, not taken).
    fn check<'a>(&'a self, peer: &'a NewPeer) -> BoxFuture<'a, Result<(), String>>;
    /// Adds the link durably and starts it.
    fn add(&self, peer: NewPeer) -> BoxFuture<'_, Result<(), String>>;
    /// Redeems `inv` at the inviter (pinned on its fingerprint): sends `offer`, answers the
    /// key the guest publishes with there.
    fn redeem<'a>(
        &'a self,
        inv: &'a InvitationInfo,
        offer: &'a Offer,
    ) -> BoxFuture<'a, Result<String, String>>;
}
