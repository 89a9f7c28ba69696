//! What one message may do to another: **the one rule**, asked by every part of sighthub
//! that acts on a message because of another (the exchange's publish path, whatever
//! transport the message came by, the display of `withdrawn_by` / `replaced_by`, the bridge
//! that takes sightings back out, and `rebuild-sightings`).
//!
//! A message acts on another in three ways: it **withdraws** it, it **replaces** it (typed
//! links `W withdraws X` / `W replaces X`) or it **updates its tags** (an empty payload under
//! a uuid already known: the target is the message's own uuid). Such a claim takes effect
//! only when
//! - for a link: its `left_side` is the linking message itself and its `right_side` is
//!   another message (a link between two other messages is kept as data and does nothing,
//!   and so is every other link type), and
//! - both messages carry an organisation (`meta.uuid_org`) and it is the same one.
//!
//! The organisation of the target is known only to whoever stores it (the exchange), so the
//! rule is split into what a message *claims* ([`claims`], [`claim_of_link`]: decided by the
//! message alone) and whether a claim *takes effect* ([`takes_effect`]: decided with the
//! target's organisation); [`effects`] combines both for a caller that can look the target
//! up.

use crate::model::{LinkType, Message, TypedLink};
use uuid::Uuid;

/// What a message does to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Act {
    /// `W withdraws X`: X was wrong, forget it.
    Withdraw,
    /// `W replaces X`: W is the corrected version of X.
    Replace,
    /// An empty payload under X's uuid: merge W's tags into X.
    UpdateTags,
}

/// One act a message claims on another, before the organisations are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The message acted upon.
    pub target: Uuid,
    /// What is done to it.
    pub act: Act,
}

/// The claim a typed link of message `source` makes, if any: only `source withdraws X` and
/// `source replaces X` with `X ≠ source`. Every other link (another left side, another type,
/// a link to itself) claims nothing.
pub fn claim_of_link(source: Uuid, link: &TypedLink) -> Option<Claim> {
    if link.left != source || link.right == source {
        return None;
    }
    let act = match link.link_type {
        LinkType::Withdraws => Act::Withdraw,
        LinkType::Replaces => Act::Replace,
        _ => return None,
    };
    Some(Claim {
        target: link.right,
        act,
    })
}

/// The withdrawals and replacements `msg` claims (in link order, each target and act once).
/// A tag update is not listed: whether an empty payload is a tag update depends on the
/// target being known, which only the store can tell; it asks [`takes_effect`] directly.
pub fn claims(msg: &Message) -> Vec<Claim> {
    let Some(meta) = &msg.meta else {
        return Vec::new();
    };
    let mut out: Vec<Claim> = Vec::new();
    for link in &meta.links.typed {
        if let Some(c) = claim_of_link(meta.uuid, link) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// Whether a claim by a message of `source_org` on a message of `target_org` takes effect:
/// only when both are known and equal. `None` for the target means it is unknown (not
/// stored here, or stored without an organisation): nothing happens to it.
pub fn takes_effect(source_org: Option<Uuid>, target_org: Option<Uuid>) -> bool {
    matches!((source_org, target_org), (Some(s), Some(t)) if s == t)
}

/// The claims of `msg` that take effect, given a way to find a target's organisation
/// (`None` when the target is unknown).
pub fn effects<E>(
    msg: &Message,
    mut target_org: impl FnMut(Uuid) -> Result<Option<Uuid>, E>,
) -> Result<Vec<Claim>, E> {
    let source_org = msg.meta.as_ref().and_then(|m| m.uuid_org);
    let mut out = Vec::new();
    for c in claims(msg) {
        if takes_effect(source_org, target_org(c.target)?) {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Meta;

    const A: Uuid = Uuid::from_u128(0xA);
    const B: Uuid = Uuid::from_u128(0xB);
    const ME: Uuid = Uuid::from_u128(1);
    const X: Uuid = Uuid::from_u128(2);
    const Y: Uuid = Uuid::from_u128(3);

    fn link(left: Uuid, t: &str, right: Uuid) -> TypedLink {
        TypedLink {
            left,
            link_type: LinkType::from(t),
            right,
        }
    }

    fn msg(org: Option<Uuid>, links: Vec<TypedLink>) -> Message {
        let mut m = Message::new("intelmq", "event");
        let mut meta = Meta::new(ME);
        meta.uuid_org = org;
        meta.links.typed = links;
        m.meta = Some(meta);
        m
    }

    #[test]
    fn only_links_from_the_message_itself_claim() {
        let w = |target| Claim {
            target,
            act: Act::Withdraw,
        };
        assert_eq!(claim_of_link(ME, &link(ME, "withdraws", X)), Some(w(X)));
        assert_eq!(
            claim_of_link(ME, &link(ME, "replaces", X)),
            Some(Claim {
                target: X,
                act: Act::Replace
            })
        );
        // Someone else's link, carried as data.
        assert_eq!(claim_of_link(ME, &link(Y, "withdraws", X)), None);
        // Inverted: "X withdraws me" is not my claim on X.
        assert_eq!(claim_of_link(ME, &link(X, "withdraws", ME)), None);
        // Itself.
        assert_eq!(claim_of_link(ME, &link(ME, "withdraws", ME)), None);
        // Other types.
        assert_eq!(claim_of_link(ME, &link(ME, "is_parent_event", X)), None);
        assert_eq!(claim_of_link(ME, &link(ME, "x_withdraws", X)), None);
    }

    #[test]
    fn claims_are_listed_once_in_link_order() {
        let m = msg(
            Some(A),
            vec![
                link(Y, "withdraws", X),
                link(ME, "replaces", Y),
                link(ME, "withdraws", X),
                link(ME, "withdraws", X),
            ],
        );
        let got: Vec<(Uuid, Act)> = claims(&m).iter().map(|c| (c.target, c.act)).collect();
        assert_eq!(got, vec![(Y, Act::Replace), (X, Act::Withdraw)]);
        assert!(claims(&Message::new("intelmq", "event")).is_empty());
    }

    #[test]
    fn only_the_same_known_organisation_takes_effect() {
        assert!(takes_effect(Some(A), Some(A)));
        assert!(!takes_effect(Some(B), Some(A)));
        assert!(!takes_effect(None, Some(A)));
        assert!(!takes_effect(Some(A), None));
        assert!(!takes_effect(None, None));
    }

    #[test]
    fn effects_ask_the_target_organisation() {
        let m = msg(
            Some(B),
            vec![
                link(ME, "withdraws", X),
                link(ME, "replaces", Y),
                link(Y, "withdraws", X),
            ],
        );
        // X belongs to A, Y to B.
        let org = |u: Uuid| -> Result<Option<Uuid>, ()> {
            Ok(match u {
                u if u == X => Some(A),
                u if u == Y => Some(B),
                _ => None,
            })
        };
        let got = effects(&m, org).unwrap();
        assert_eq!(
            got,
            vec![Claim {
                target: Y,
                act: Act::Replace
            }]
        );
        // A message without organisation does nothing.
        let anon = msg(None, vec![link(ME, "withdraws", Y)]);
        assert!(effects(&anon, org).unwrap().is_empty());
    }
}
