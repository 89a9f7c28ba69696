//! The one in-memory model every accepted shape is normalised into.
//!
//! [`Message`] mirrors the decided envelope (`format`, `version`, `type`, `meta`, `payload`);
//! [`Meta`] holds the well-known meta fields, the [`Links`] gathered from whichever shape the
//! message arrived in, and every other meta key untouched in [`Meta::extensions`].

use serde_json::{Map, Value};
use uuid::Uuid;

/// The envelope version written by this crate when it creates a message (the schema's default).
pub const DEFAULT_VERSION: u64 = 1;

/// `format` of IntelMQ payloads.
pub const FORMAT_INTELMQ: &str = "intelmq";

/// Meta keys that the model interprets; an entry of [`Meta::extensions`] under one of these keys
/// is not emitted (the model's own field wins).
pub const RESERVED_META_KEYS: &[&str] = &[
    "uuid",
    "uuid_org",
    "uuid_instance",
    "tags",
    "encoding",
    "compress",
    "links",
    KEY_RELATED,
    KEY_GROUP,
    KEY_ALTERNATE,
    KEY_LINKS,
];

/// Meta key under which [`Links::related`] is emitted (AIL-A naming, kept by the decided form).
pub const KEY_RELATED: &str = "intelmq:related";
/// Meta key under which [`Links::group`] is emitted.
pub const KEY_GROUP: &str = "intelmq:group";
/// Meta key under which [`Links::alternate`] is emitted.
pub const KEY_ALTERNATE: &str = "intelmq:alternate";
/// Meta key under which [`Links::typed`] is emitted, as `{left_side, type, right_side}` objects.
pub const KEY_LINKS: &str = "intelmq:links";

/// One IEP04 message: the envelope plus its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Payload format (`intelmq`, `ail`, …), so a receiver knows how to decode the payload.
    pub format: String,
    /// Envelope/protocol version.
    pub version: u64,
    /// Payload type (JSON key `type`); for IntelMQ only `event` is defined.
    pub kind: String,
    /// Meta information; optional in the envelope, but it is what carries the uuid that
    /// de-duplication and loop breaking rely on.
    pub meta: Option<Meta>,
    /// The payload object. `None` (absent) and an empty object both mean "no payload",
    /// which with a known uuid is a tag update; they are kept apart so a round trip is exact.
    pub payload: Option<Map<String, Value>>,
    /// Top-level keys other than the five above, kept so relays do not lose them.
    pub extensions: Map<String, Value>,
}

/// The `meta` dictionary.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// Id of this message: assigned once at creation and never changed by relays, so it is
    /// the de-duplication and loop-breaking key.
    pub uuid: Uuid,
    /// The emitting organisation (its MISP org UUID where it has one).
    pub uuid_org: Option<Uuid>,
    /// The sending instance or sensor.
    pub uuid_instance: Option<Uuid>,
    /// Free tags (`tlp:amber`, `mails`, …). Always emitted (possibly empty), as in the
    /// decided example; an absent or `null` list reads as empty.
    pub tags: Vec<String>,
    /// Encoding of payload fields, e.g. `base64`.
    pub encoding: Option<String>,
    /// Compression applied before encoding, e.g. `gzip`.
    pub compress: Option<String>,
    /// Links to other messages, from whichever shape the message came in.
    pub links: Links,
    /// Every other meta key (`prefix:key`, `x-*`, unknown), in arrival order, values untouched.
    pub extensions: Map<String, Value>,
}

impl Meta {
    /// A meta block with only a uuid.
    pub fn new(uuid: Uuid) -> Self {
        Meta {
            uuid,
            uuid_org: None,
            uuid_instance: None,
            tags: Vec::new(),
            encoding: None,
            compress: None,
            links: Links::default(),
            extensions: Map::new(),
        }
    }
}

/// Links from one message to others (IEP04 use cases 1–4 and 6–9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// Correlated or otherwise related messages (variant A `related`, `intelmq:related`).
    pub related: Vec<Uuid>,
    /// Meta-events / incidents this message belongs to (`group`, `intelmq:group`).
    pub group: Vec<Uuid>,
    /// Opaque external ids of the same thing, e.g. `RT#1234` or `cesnet-certs:<uuid>`.
    pub alternate: Vec<String>,
    /// Typed links `{left_side, type, right_side}` (variants B / AIL-B, the seed's `parent`).
    pub typed: Vec<TypedLink>,
}

impl Links {
    /// True when there is no link at all.
    pub fn is_empty(&self) -> bool {
        self.related.is_empty()
            && self.group.is_empty()
            && self.alternate.is_empty()
            && self.typed.is_empty()
    }
}

/// A typed link, read as "`left` *link_type* `right`", e.g. "A replaces B".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedLink {
    /// JSON `left_side`.
    pub left: Uuid,
    /// JSON `type`.
    pub link_type: LinkType,
    /// JSON `right_side`.
    pub right: Uuid,
}

/// Vocabulary of typed links. Each reads "`left_side` *type* `right_side`".
///
/// | JSON `type` | meaning |
/// |---|---|
/// | `is_parent_event` | left is the parent of right (variant B; the seed's `parent` P of message C becomes `P is_parent_event C`) |
/// | `replaces` | left is a corrected version of right: a receiver should supersede right with left (use case 9) |
/// | `withdraws` | left retracts right ("that was wrong, forget it"); left usually has no payload (use case 9) |
/// | anything else | kept verbatim as [`LinkType::Other`] |
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// `is_parent_event`.
    IsParentEvent,
    /// `replaces`.
    Replaces,
    /// `withdraws`.
    Withdraws,
    /// Any other type string. Never holds one of the names above when built by
    /// [`LinkType::from`] or by parsing.
    Other(String),
}

impl LinkType {
    /// The JSON spelling.
    pub fn as_str(&self) -> &str {
        match self {
            LinkType::IsParentEvent => "is_parent_event",
            LinkType::Replaces => "replaces",
            LinkType::Withdraws => "withdraws",
            LinkType::Other(s) => s,
        }
    }
}

impl From<&str> for LinkType {
    fn from(s: &str) -> Self {
        match s {
            "is_parent_event" => LinkType::IsParentEvent,
            "replaces" => LinkType::Replaces,
            "withdraws" => LinkType::Withdraws,
            other => LinkType::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for LinkType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which side of a typed link a uuid stands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// `left_side`.
    Left,
    /// `right_side`.
    Right,
}

/// How a message relates to a linked uuid; see [`Message::linked_uuids`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relation {
    /// Listed in `related`.
    Related,
    /// Listed in `group`.
    Group,
    /// Part of a typed link; `side` is where the *linked* uuid stands. For a link sent by
    /// message A, `{left: A, replaces, right: B}` lists B as `Typed { Replaces, Right }`:
    /// A replaces B.
    Typed {
        /// The link's type.
        link_type: LinkType,
        /// The side the linked uuid occupies.
        side: Side,
    },
}

/// One linked uuid and how it is linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedUuid {
    /// The other message.
    pub uuid: Uuid,
    /// The relation.
    pub relation: Relation,
}

impl Message {
    /// A new message with the given format and type, version [`DEFAULT_VERSION`], no meta,
    /// no payload.
    pub fn new(format: impl Into<String>, kind: impl Into<String>) -> Self {
        Message {
            format: format.into(),
            version: DEFAULT_VERSION,
            kind: kind.into(),
            meta: None,
            payload: None,
            extensions: Map::new(),
        }
    }

    /// The message's uuid, if it has meta.
    pub fn uuid(&self) -> Option<Uuid> {
        self.meta.as_ref().map(|m| m.uuid)
    }

    /// Makes sure the message has meta with a uuid: if meta is absent, creates it with a fresh
    /// UUIDv4 and the given organisation and instance. Returns the uuid.
    pub fn ensure_uuid(&mut self, uuid_org: Uuid, uuid_instance: Option<Uuid>) -> Uuid {
        let meta = self.meta.get_or_insert_with(|| {
            let mut meta = Meta::new(Uuid::new_v4());
            meta.uuid_org = Some(uuid_org);
            meta.uuid_instance = uuid_instance;
            meta
        });
        meta.uuid
    }

    /// Every uuid this message links to, with its relation, in the order
    /// related, group, typed links. Opaque [`Links::alternate`] ids are not uuids and are not
    /// listed. A typed-link side equal to this message's own uuid is skipped (it is "self");
    /// a link between two other messages lists both sides.
    pub fn linked_uuids(&self) -> Vec<LinkedUuid> {
        let Some(meta) = &self.meta else {
            return Vec::new();
        };
        let links = &meta.links;
        let mut out =
            Vec::with_capacity(links.related.len() + links.group.len() + 2 * links.typed.len());
        out.extend(links.related.iter().map(|&uuid| LinkedUuid {
            uuid,
            relation: Relation::Related,
        }));
        out.extend(links.group.iter().map(|&uuid| LinkedUuid {
            uuid,
            relation: Relation::Group,
        }));
        for link in &links.typed {
            for (uuid, side) in [(link.left, Side::Left), (link.right, Side::Right)] {
                if uuid != meta.uuid {
                    out.push(LinkedUuid {
                        uuid,
                        relation: Relation::Typed {
                            link_type: link.link_type.clone(),
                            side,
                        },
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn link_type_vocabulary_round_trips() {
        for name in ["is_parent_event", "replaces", "withdraws", "x_custom"] {
            assert_eq!(LinkType::from(name).as_str(), name);
        }
        assert_eq!(LinkType::from("replaces"), LinkType::Replaces);
        assert_eq!(
            LinkType::from("Replaces"),
            LinkType::Other("Replaces".into())
        );
    }

    #[test]
    fn linked_uuids_lists_relations_and_skips_self() {
        let mut meta = Meta::new(u(1));
        meta.links.related = vec![u(2)];
        meta.links.group = vec![u(3)];
        meta.links.alternate = vec!["RT#1234".into()];
        meta.links.typed = vec![
            TypedLink {
                left: u(1),
                link_type: LinkType::Withdraws,
                right: u(4),
            },
            TypedLink {
                left: u(5),
                link_type: LinkType::IsParentEvent,
                right: u(6),
            },
        ];
        let msg = Message {
            meta: Some(meta),
            ..Message::new("intelmq", "event")
        };
        let got = msg.linked_uuids();
        assert_eq!(
            got,
            vec![
                LinkedUuid {
                    uuid: u(2),
                    relation: Relation::Related
                },
                LinkedUuid {
                    uuid: u(3),
                    relation: Relation::Group
                },
                LinkedUuid {
                    uuid: u(4),
                    relation: Relation::Typed {
                        link_type: LinkType::Withdraws,
                        side: Side::Right
                    }
                },
                LinkedUuid {
                    uuid: u(5),
                    relation: Relation::Typed {
                        link_type: LinkType::IsParentEvent,
                        side: Side::Left
                    }
                },
                LinkedUuid {
                    uuid: u(6),
                    relation: Relation::Typed {
                        link_type: LinkType::IsParentEvent,
                        side: Side::Right
                    }
                },
            ]
        );
    }

    #[test]
    fn ensure_uuid_keeps_existing_meta() {
        let mut msg = Message::new("intelmq", "event");
        assert_eq!(msg.uuid(), None);
        let first = msg.ensure_uuid(u(9), Some(u(10)));
        assert_eq!(first.get_version_num(), 4);
        let meta = msg.meta.as_ref().expect("meta created");
        assert_eq!(meta.uuid_org, Some(u(9)));
        assert_eq!(meta.uuid_instance, Some(u(10)));
        assert_eq!(msg.ensure_uuid(u(11), None), first);
        assert!(msg.linked_uuids().is_empty());
    }
}
