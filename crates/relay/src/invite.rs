//! Peering by invitation: `sighthub peer invite` prints a one-line token, `sighthub peer join
//! <token>` on the other side prints the configuration of **both** sides.
//!
//! The token is `sighthub-invite-1.` followed by the unpadded base64url of a JSON object
//! ([`Invitation`]): the inviter's url, identity (`fingerprint`), organisation and name, and
//! a fresh random key, the one the guest publishes with at the inviter. `join` makes the
//! guest's own fresh key for the other direction and prints two blocks: what the guest adds
//! (the inviter as a pinned peer, and the inviter's key), and what it sends back to the
//! inviter (its key and the guest as a pinned peer). Both sides then restart (keys are read
//! at start; `[relay]` alone would be applied by SIGHUP).
//!
//! Nothing is contacted and no file is changed: the operator sees every line that enters
//! each configuration. The key in the token is not single-use: it is a fresh key that grants
//! nothing until the inviter adds the block `join` prints; treat the token as a secret.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
pub use uuid::Uuid;

use crate::identity::Fingerprint;

const PREFIX: &str = "sighthub-invite-1.";

/// What an invitation token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invitation {
    /// The inviter's base url, as the guest reaches it (`https://host:9999`).
    pub url: String,
    /// The inviter's identity (`sighthub identity`).
    pub fingerprint: String,
    /// The inviter's organisation.
    pub org: Uuid,
    /// The peer name the guest gives the inviter.
    pub name: String,
    /// The key the guest publishes with at the inviter.
    pub key: String,
}

/// An unusable token or argument.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// Not a token `sighthub peer invite` printed (or a damaged copy of one).
    #[error("not an invitation token: {0}; copy the whole line `sighthub peer invite` printed (it starts with {PREFIX})")]
    Token(String),
    /// A url or name that a peer entry would refuse.
    #[error("{0}")]
    Invalid(String),
    /// No randomness for the key.
    #[error("generating a key: {0}")]
    Random(String),
}

/// A fresh key: 32 random bytes, hex.
pub fn fresh_key() -> Result<String, InviteError> {
    sighthub_storage::secret::fresh_key().map_err(|e| InviteError::Random(e.to_string()))
}

/// Checks a url and a peer name as `[relay]` would.
fn check(url: &str, name: &str) -> Result<(), InviteError> {
    let probe = crate::RelayConfig {
        peers: vec![crate::PeerConfig {
            name: name.to_owned(),
            url: url.to_owned(),
            key: "k".into(),
            feeds: vec![sighthub_exchange::Feed::All],
            tlp_max: sighthub_iep04::Tlp::Amber,
            forward_received: true,
            instance: None,
            fingerprint: None,
            ca: None,
            accept_invalid_certs: false,
        }],
        ..crate::RelayConfig::default()
    };
    probe.validate().map_err(InviteError::Invalid)?;
    if !url.starts_with("https://") {
        return Err(InviteError::Invalid(format!(
            "url '{url}' is not https: a pinned identity is a TLS key"
        )));
    }
    Ok(())
}

impl Invitation {
    /// A new invitation from the inviter (`url` as the guest reaches it, `name` the guest's
    /// name for it), with a fresh key.
    pub fn new(
        url: &str,
        fingerprint: Fingerprint,
        org: Uuid,
        name: &str,
    ) -> Result<Invitation, InviteError> {
        check(url, name)?;
        Ok(Invitation {
            url: url.to_owned(),
            fingerprint: fingerprint.to_string(),
            org,
            name: name.to_owned(),
            key: fresh_key()?,
        })
    }

    /// The one-line token.
    pub fn token(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    }

    /// Reads a token.
    pub fn parse(token: &str) -> Result<Invitation, InviteError> {
        let body = token
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| InviteError::Token("wrong beginning".into()))?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| InviteError::Token(e.to_string()))?;
        let inv: Invitation =
            serde_json::from_slice(&json).map_err(|e| InviteError::Token(e.to_string()))?;
        inv.fingerprint
            .parse::<Fingerprint>()
            .map_err(|e| InviteError::Token(e.to_string()))?;
        check(&inv.url, &inv.name)?;
        Ok(inv)
    }
}

/// The guest's side of a join: its url, identity, organisation and name for itself.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The guest's base url, as the inviter reaches it.
    pub url: String,
    /// The guest's identity.
    pub fingerprint: Fingerprint,
    /// The guest's organisation.
    pub org: Uuid,
    /// The peer name the inviter gives the guest.
    pub name: String,
}

/// What `join` prints: the block for the guest's configuration, and the one for the
/// inviter's.
#[derive(Debug, Clone)]
pub struct Joined {
    /// To add to the guest's configuration.
    pub here: String,
    /// To send to the inviter, for its configuration.
    pub there: String,
}

fn block(key_for: Uuid, key: &str, peer: (&str, &str, &str, &str)) -> String {
    let (name, url, peer_key, fingerprint) = peer;
    format!(
        "[exchange.keys.\"{key}\"]\norg = \"{key_for}\"\npublish = [\"*\"]\nread = []\nrelay = true\n\n\
         [[relay.peers]]\nname = \"{name}\"\nurl = \"{url}\"\nkey = \"{peer_key}\"\nfingerprint = \"{fingerprint}\"\n"
    )
}

/// Accepts `inv` as `guest`: a fresh key for the inviter, and both blocks.
pub fn join(inv: &Invitation, guest: &Guest) -> Result<Joined, InviteError> {
    check(&guest.url, &guest.name)?;
    let back = fresh_key()?;
    Ok(Joined {
        here: block(
            inv.org,
            &back,
            (&inv.name, &inv.url, &inv.key, &inv.fingerprint),
        ),
        there: block(
            guest.org,
            &inv.key,
            (
                &guest.name,
                &guest.url,
                &back,
                &guest.fingerprint.to_string(),
            ),
        ),
    })
}

/// Redeems an invitation at the inviter (`POST {url}/iep04/peers/redeem` with the
/// invitation's key, pinned on its fingerprint): sends `offer` (the guest's url, identity,
/// organisation, name and the key the inviter will push with), answers the key the guest
/// publishes with at the inviter. The error says why, as a failing link's status does.
pub async fn redeem(
    inv: &Invitation,
    offer: &serde_json::Value,
    timeout: std::time::Duration,
) -> Result<String, String> {
    let fp: Fingerprint = inv.fingerprint.parse().map_err(|e| format!("{e}"))?;
    let http = crate::client(timeout, crate::Trust::Pinned(fp)).map_err(|e| e.to_string())?;
    let url =
        crate::endpoint(&inv.url, &["iep04", "peers", "redeem"]).map_err(|e| e.to_string())?;
    let req = http
        .post(url)
        .header("authorization", format!("Bearer {}", inv.key))
        .json(offer)
        .timeout(timeout);
    let answer = crate::call(req, &inv.name, false, 64 * 1024)
        .await
        .map_err(|e| match e {
            // The inviter's own words (an invitation used, expired or unknown; a bad offer).
            crate::Error::Status { status, body, .. } => format!("HTTP {status}: {body}"),
            e => crate::health::cause(&e),
        })?;
    answer
        .get("key")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "the inviter's answer holds no key".to_owned())
}

/// Calls this instance's own admin API (`sighthub peer invite|join` while the server runs):
/// `POST {base}{path}` with the admin key, pinned on this instance's own identity when it
/// has one (plain HTTP otherwise). Answers the JSON body, or the server's message.
pub async fn local_call(
    base: &str,
    identity: Option<Fingerprint>,
    admin_key: &str,
    path: &[&str],
    body: &serde_json::Value,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, String> {
    let trust = match identity {
        Some(fp) => crate::Trust::Pinned(fp),
        None => crate::Trust::SystemRoots,
    };
    let http = crate::client(timeout, trust).map_err(|e| e.to_string())?;
    let url = crate::endpoint(base, path).map_err(|e| e.to_string())?;
    let req = http
        .post(url)
        .header("authorization", format!("Bearer {admin_key}"))
        .json(body)
        .timeout(timeout);
    crate::call(req, "this instance", false, 1024 * 1024)
        .await
        .map_err(|e| match e {
            crate::Error::Status { status, body, .. } => {
                let msg = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                    .unwrap_or(body);
                format!("HTTP {status}: {msg}")
            }
            e => format!(
                "{}; is the server running at {base}? (`--offline` prints the configuration blocks instead)",
                crate::health::cause(&e)
            ),
        })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_token_round_trips_and_both_blocks_are_valid_configuration() {
        let fp = Fingerprint::of_spki(b"a");
        let inv =
            Invitation::new("https://a.example:9999", fp, Uuid::new_v4(), "org-a").expect("invite");
        let token = inv.token();
        assert!(!token.contains(char::is_whitespace), "{token}");
        assert_eq!(Invitation::parse(&token).expect("parses"), inv);
        for bad in [
            "",
            "sighthub-invite-1.",
            "sighthub-invite-1.e30",
            &token[1..],
        ] {
            let e = Invitation::parse(bad).expect_err(bad).to_string();
            assert!(e.contains("copy the whole line"), "{e}");
        }
        assert!(Invitation::new("http://a.example", fp, Uuid::new_v4(), "a").is_err());
        let guest = Guest {
            url: "https://b.example:9999".into(),
            fingerprint: Fingerprint::of_spki(b"b"),
            org: Uuid::new_v4(),
            name: "org-b".into(),
        };
        let j = join(&inv, &guest).expect("join");
        assert!(j.here.contains(&inv.key) && j.there.contains(&inv.key));
        assert!(j.here.contains(&inv.fingerprint));
        assert!(j.there.contains(&guest.fingerprint.to_string()));
    }
}
