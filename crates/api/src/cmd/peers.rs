//! Peering by invitation, with single-use keys:
//!
//! - `POST /_api/peers/invite` (admin, inviter): makes a single-use invitation key
//!   ([`crate::keyring::KeyRing::create_invitation`]) and answers the token: this instance's
//!   url (as the guest reaches it), identity, organisation, the name the guest gives it, and
//!   the key.
//! - `POST /_api/peers/join` (admin, guest): reads the token, makes a runtime exchange key for
//!   the inviter (it pushes with it here), redeems the invitation at the inviter pinned on its
//!   identity ([`crate::peering::Peering::redeem`]) and adds the inviter as a pinned push link
//!   with the key the inviter answered. On failure the key made here is revoked again.
//! - `POST /iep04/peers/redeem` (the invitation key, inviter): the key is consumed (durably:
//!   a second use is refused), a permanent exchange key is made for the guest, the guest is
//!   added as a pinned push link, and the permanent key is answered.
//!
//! Nothing needs a restart: keys and links take effect at once.

use super::{blocking, Resp};
use crate::app::{now, App};
use crate::error::{json_response, ApiError};
use crate::keyring::KeyRequest;
use crate::peering::{InvitationInfo, NewPeer, Offer, Peering};
use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    /// This instance's url as the guest reaches it.
    url: String,
    /// The name the guest gives this instance.
    name: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    token: String,
    /// This instance's url as the inviter reaches it.
    url: String,
    /// The name the inviter gives this instance.
    name: String,
}

fn body<'a, T: Deserialize<'a>>(b: &'a [u8], expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(b)
        .map_err(|e| ApiError::BadRequest(format!("Body: {e}. Expected {expected}.")))
}

/// The grants a peer's key holds here: it publishes every feed, relaying other
/// organisations' messages, and reads nothing (as a `[exchange.keys]` entry the offline
/// `peer join` prints).
fn peer_grant(org: Uuid) -> serde_json::Value {
    json!({"org": org, "publish": ["*"], "read": [], "relay": true})
}

impl App {
    fn peering(&self) -> Result<&Arc<dyn Peering>, ApiError> {
        self.peering.as_ref().ok_or_else(|| {
            ApiError::Conflict(
                "Peering needs the exchange and the relay, which are off here.".into(),
            )
        })
    }

    fn own_identity(&self) -> Result<(String, Uuid), ApiError> {
        let identity = self.identity.clone().ok_or_else(|| {
            ApiError::Conflict(
                "This server runs plain HTTP: it has no identity to pin; peering by invitation needs TLS."
                    .into(),
            )
        })?;
        let org = self.exchange.inner()?.store.org();
        Ok((identity, org))
    }

    /// `POST /_api/peers/invite`.
    pub(crate) async fn peers_invite(self: &Arc<Self>, raw: Bytes) -> Result<Resp, ApiError> {
        let req: InviteRequest = body(
            &raw,
            "{\"url\": \"https://this-host:9999\", \"name\": \"what the guest calls us\", \"expires_in\"?: seconds}",
        )?;
        let peering = Arc::clone(self.peering()?);
        let (fingerprint, org) = self.own_identity()?;
        // The token must name a link the guest will accept (https url, a valid name):
        // checked on a probe before a key is made.
        peering
            .token(&InvitationInfo {
                url: req.url.clone(),
                fingerprint: fingerprint.clone(),
                org,
                name: req.name.clone(),
                key: "probe".into(),
            })
            .map_err(ApiError::BadRequest)?;
        let app = Arc::clone(self);
        let name = req.name.clone();
        let (record, key) =
            blocking(move || app.keys.create_invitation(&name, req.expires_in, now())).await?;
        let token = peering
            .token(&InvitationInfo {
                url: req.url,
                fingerprint,
                org,
                name: req.name,
                key,
            })
            .map_err(ApiError::BadRequest)?;
        Ok(json_response(
            StatusCode::CREATED,
            &json!({
                "token": token,
                "id": record.id,
                "expires": record.invitation.map(|i| i.expires),
                "message": "Give the token to the other organisation (it is a secret, valid once): they run `sighthub peer join <token>`.",
            }),
        ))
    }

    /// `POST /_api/peers/join`.
    pub(crate) async fn peers_join(self: &Arc<Self>, raw: Bytes) -> Result<Resp, ApiError> {
        let req: JoinRequest = body(
            &raw,
            "{\"token\": \"sighthub-invite-1.…\", \"url\": \"https://this-host:9999\", \"name\": \"what the inviter calls us\"}",
        )?;
        let peering = Arc::clone(self.peering()?);
        let inv = peering
            .parse_token(&req.token)
            .map_err(ApiError::BadRequest)?;
        let (fingerprint, org) = self.own_identity()?;
        let link = NewPeer {
            name: inv.name.clone(),
            url: inv.url.clone(),
            key: "k".into(),
            fingerprint: inv.fingerprint.clone(),
        };
        peering.check(&link).await.map_err(ApiError::Conflict)?;
        // The key the inviter pushes with here.
        let app = Arc::clone(self);
        let grant = KeyRequest {
            name: Some(format!("peer:{}", inv.name)),
            exchange: Some(peer_grant(inv.org)),
            ..KeyRequest::default()
        };
        let (back, back_key) = blocking(move || {
            let ex = app.exchange.inner().ok().map(|i| i.keys());
            app.keys.create(grant, ex.as_deref(), now())
        })
        .await?;
        let offer = Offer {
            url: req.url,
            fingerprint,
            org,
            name: req.name,
            key: back_key,
        };
        let undo = |app: Arc<App>, id: String| async move {
            let _ = blocking(move || app.keys.revoke(&id)).await;
        };
        let key_there = match peering.redeem(&inv, &offer).await {
            Ok(k) => k,
            Err(e) => {
                undo(Arc::clone(self), back.id.clone()).await;
                return Err(ApiError::Conflict(format!(
                    "The inviter did not accept the invitation: {e}"
                )));
            }
        };
        if let Err(e) = peering
            .add(NewPeer {
                key: key_there,
                ..link
            })
            .await
        {
            undo(Arc::clone(self), back.id.clone()).await;
            return Err(ApiError::Conflict(format!("The link was not added: {e}")));
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "peer": inv.name,
                "url": inv.url,
                "fingerprint": inv.fingerprint,
                "org": inv.org,
                "key_id": back.id,
                "message": "Joined: both sides now push to each other; no restart needed.",
            }),
        ))
    }

    /// `GET /iep04/peers[/{name}]` (the exchange's admin key): each relay link with its
    /// counters, cursor and last error, as `/metrics` and the console show them.
    pub(crate) fn peers_status(
        &self,
        grants: &sighthub_exchange::Grants,
        name: Option<&str>,
    ) -> Result<Resp, ApiError> {
        if !grants.admin {
            return Err(ApiError::Denied(
                "Only the admin key sees the relay links.".into(),
            ));
        }
        let links = self.status.as_ref().map(|s| s.links()).unwrap_or_default();
        match name {
            None => Ok(json_response(StatusCode::OK, &json!({ "links": links }))),
            Some(n) => links
                .into_iter()
                .find(|l| l.name == n)
                .map(|l| json_response(StatusCode::OK, &json!(l)))
                .ok_or_else(|| ApiError::NotFound(format!("No relay link named '{n}'."))),
        }
    }

    /// `POST /iep04/peers/redeem`, authenticated by the invitation key itself.
    pub(crate) async fn peers_redeem(
        self: &Arc<Self>,
        header: Option<Vec<u8>>,
        raw: Bytes,
    ) -> Result<Resp, ApiError> {
        let offer: Offer = body(
            &raw,
            "{\"url\", \"fingerprint\", \"org\", \"name\", \"key\"}",
        )?;
        let peering = Arc::clone(self.peering()?);
        let link = NewPeer {
            name: offer.name.clone(),
            url: offer.url.clone(),
            key: offer.key.clone(),
            fingerprint: offer.fingerprint.clone(),
        };
        // Checked before the invitation is spent, so a bad offer can be sent again.
        peering.check(&link).await.map_err(ApiError::BadRequest)?;
        let app = Arc::clone(self);
        let org = offer.org;
        let name = offer.name.clone();
        let (key, made) = blocking(move || {
            app.keys.redeem(header.as_deref(), now())?;
            let ex = app.exchange.inner().ok().map(|i| i.keys());
            let grant = KeyRequest {
                name: Some(format!("peer:{name}")),
                exchange: Some(peer_grant(org)),
                ..KeyRequest::default()
            };
            let (r, k) = app.keys.create(grant, ex.as_deref(), now())?;
            Ok((k, r))
        })
        .await?;
        if let Err(e) = peering.add(link).await {
            let app = Arc::clone(self);
            let id = made.id.clone();
            let _ = blocking(move || app.keys.revoke(&id)).await;
            return Err(ApiError::Conflict(format!("The link was not added: {e}")));
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({ "key": key, "key_id": made.id }),
        ))
    }
}
