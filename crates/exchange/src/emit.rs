//! The two per-message costs of publishing, done without copying the message: the envelope
//! JSON and the content hash, **byte-for-byte the same** as `sighthub-iep04`'s
//! [`Message::to_json`] and [`sighthub_iep04::content_hash`] (property tests below compare
//! them on arbitrary messages).
//!
//! The library builds a `serde_json::Map` of the whole envelope (cloning the payload) before
//! writing it, and the canonical text of the payload as a `String` (one allocation per key
//! and scalar) before hashing it; on a 1 KB IntelMQ event those two were 45 % of the
//! server's CPU time per published message. Here both are written straight into one reused
//! buffer.

use serde::ser::{SerializeMap, Serializer as _};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sighthub_iep04::{
    ContentHash, Message, Meta, KEY_ALTERNATE, KEY_GROUP, KEY_LINKS, KEY_RELATED,
    RESERVED_META_KEYS, TYPE_KEY,
};
use uuid::Uuid;

/// Top-level keys of the envelope; an extension under one of them is not emitted (the
/// library's rule).
const ENVELOPE_KEYS: &[&str] = &["format", "version", "type", "meta", "payload"];

struct Hyphenated(Uuid);

impl serde::Serialize for Hyphenated {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Uuid::encode_buffer();
        s.serialize_str(self.0.hyphenated().encode_lower(&mut buf))
    }
}

struct UuidList<'a>(&'a [Uuid]);

impl serde::Serialize for UuidList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|u| Hyphenated(*u)))
    }
}

struct TypedLinks<'a>(&'a [sighthub_iep04::TypedLink]);

impl serde::Serialize for TypedLinks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(TypedLinkRef))
    }
}

struct TypedLinkRef<'a>(&'a sighthub_iep04::TypedLink);

impl serde::Serialize for TypedLinkRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("left_side", &Hyphenated(self.0.left))?;
        m.serialize_entry("type", self.0.link_type.as_str())?;
        m.serialize_entry("right_side", &Hyphenated(self.0.right))?;
        m.end()
    }
}

struct MetaRef<'a>(&'a Meta);

impl serde::Serialize for MetaRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let meta = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("uuid", &Hyphenated(meta.uuid))?;
        if let Some(org) = meta.uuid_org {
            m.serialize_entry("uuid_org", &Hyphenated(org))?;
        }
        if let Some(instance) = meta.uuid_instance {
            m.serialize_entry("uuid_instance", &Hyphenated(instance))?;
        }
        m.serialize_entry("tags", &meta.tags)?;
        if let Some(e) = &meta.encoding {
            m.serialize_entry("encoding", e)?;
        }
        if let Some(c) = &meta.compress {
            m.serialize_entry("compress", c)?;
        }
        let links = &meta.links;
        if !links.related.is_empty() {
            m.serialize_entry(KEY_RELATED, &UuidList(&links.related))?;
        }
        if !links.group.is_empty() {
            m.serialize_entry(KEY_GROUP, &UuidList(&links.group))?;
        }
        if !links.alternate.is_empty() {
            m.serialize_entry(KEY_ALTERNATE, &links.alternate)?;
        }
        if !links.typed.is_empty() {
            m.serialize_entry(KEY_LINKS, &TypedLinks(&links.typed))?;
        }
        for (k, v) in &meta.extensions {
            if !RESERVED_META_KEYS.contains(&k.as_str()) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

/// Appends the decided-form envelope of `msg` to `out`; the same bytes as
/// [`Message::to_json`].
pub fn envelope_json(msg: &Message, out: &mut Vec<u8>) {
    let mut ser = serde_json::Serializer::new(out);
    // Writing into a Vec cannot fail, and every key is a string.
    let _ = (|| -> Result<(), serde_json::Error> {
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("format", &msg.format)?;
        m.serialize_entry("version", &msg.version)?;
        m.serialize_entry("type", &msg.kind)?;
        if let Some(meta) = &msg.meta {
            m.serialize_entry("meta", &MetaRef(meta))?;
        }
        if let Some(p) = &msg.payload {
            m.serialize_entry("payload", p)?;
        }
        for (k, v) in &msg.extensions {
            if !ENVELOPE_KEYS.contains(&k.as_str()) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    })();
}

/// The content hash of an event (or any payload object), `__type` left out at the top
/// level; the same as [`sighthub_iep04::content_hash`]. `buf` is scratch space, reused
/// across calls.
pub fn content_hash(event: &Map<String, Value>, buf: &mut Vec<u8>) -> ContentHash {
    buf.clear();
    write_object(buf, event, true);
    ContentHash(Sha256::digest(buf.as_slice()).into())
}

/// [`content_hash`] of a message's payload (of `{}` when it has none).
pub fn message_content_hash(msg: &Message, buf: &mut Vec<u8>) -> ContentHash {
    match &msg.payload {
        Some(p) => content_hash(p, buf),
        None => content_hash(&Map::new(), buf),
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => write_object(out, map, false),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::String(s) => write_str(out, s),
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>, skip_type: bool) {
    let mut entries: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| !(skip_type && k.as_str() == TYPE_KEY))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sighthub_iep04::{LinkType, Links, TypedLink};

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\/äé😀]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("\\PC{0,6}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::vec(
            (
                prop_oneof!["\\PC{0,8}", Just("__type".to_owned())],
                json_value(),
            ),
            0..8,
        )
        .prop_map(|kv| kv.into_iter().collect())
    }

    fn uuid() -> impl Strategy<Value = Uuid> {
        any::<u128>()
            .prop_filter("nil", |n| *n != 0)
            .prop_map(Uuid::from_u128)
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            (
                "\\PC{0,8}",
                any::<u64>(),
                "\\PC{0,8}",
                proptest::option::of(object()),
                object(),
            ),
            proptest::option::of((
                uuid(),
                proptest::option::of(uuid()),
                proptest::option::of(uuid()),
                prop::collection::vec("\\PC{0,8}", 0..3),
                proptest::option::of("\\PC{0,6}"),
                proptest::option::of("\\PC{0,6}"),
                (
                    prop::collection::vec(uuid(), 0..2),
                    prop::collection::vec(uuid(), 0..2),
                    prop::collection::vec("\\PC{0,8}", 0..2),
                    prop::collection::vec((uuid(), "[a-z_]{1,9}", uuid()), 0..2),
                ),
                object(),
            )),
        )
            .prop_map(|((format, version, kind, payload, ext), meta)| Message {
                format,
                version,
                kind,
                payload,
                extensions: ext,
                meta: meta.map(
                    |(uuid, org, inst, tags, enc, comp, (rel, grp, alt, typed), ext)| Meta {
                        uuid,
                        uuid_org: org,
                        uuid_instance: inst,
                        tags,
                        encoding: enc,
                        compress: comp,
                        links: Links {
                            related: rel,
                            group: grp,
                            alternate: alt,
                            typed: typed
                                .into_iter()
                                .map(|(l, t, r)| TypedLink {
                                    left: l,
                                    link_type: LinkType::from(t.as_str()),
                                    right: r,
                                })
                                .collect(),
                        },
                        extensions: ext,
                    },
                ),
            })
    }

    proptest! {
        #[test]
        fn envelope_bytes_equal_the_library(msg in message()) {
            let mut out = Vec::new();
            envelope_json(&msg, &mut out);
            prop_assert_eq!(String::from_utf8(out).expect("utf-8"), msg.to_json());
        }

        #[test]
        fn content_hash_equals_the_library(event in object()) {
            let mut buf = Vec::new();
            prop_assert_eq!(content_hash(&event, &mut buf), sighthub_iep04::content_hash(&event));
        }
    }

    #[test]
    fn samples_match() {
        let text = include_str!("../tests/data/redis_pipeline_event.json");
        let ev: Map<String, Value> = serde_json::from_str(text).expect("sample");
        let mut buf = Vec::new();
        assert_eq!(
            content_hash(&ev, &mut buf),
            sighthub_iep04::content_hash(&ev)
        );
        let msg =
            Message::wrap_bare(ev, Uuid::from_u128(1), Some(Uuid::from_u128(2))).expect("wraps");
        let mut out = Vec::new();
        envelope_json(&msg, &mut out);
        assert_eq!(out, msg.to_json().into_bytes());
        assert_eq!(message_content_hash(&msg, &mut buf), msg.content_hash());
    }
}
