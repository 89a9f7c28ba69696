//! The one writer of the decided-form envelope: a `Serialize` view of a [`Message`] that
//! `serde_json` writes straight into a buffer, without building a `serde_json::Map` of the
//! envelope or cloning the payload first. [`Message::to_json`], [`Message::to_value`] and
//! [`Message::write_json`] (the exchange's log records) all go through it, so there is one
//! definition of the envelope's shape and key order.

use serde::ser::SerializeMap;
use uuid::Uuid;

use crate::envelope::ENVELOPE_KEYS;
use crate::model::{
    Message, Meta, KEY_ALTERNATE, KEY_GROUP, KEY_LINKS, KEY_RELATED, RESERVED_META_KEYS,
};

/// A message as the decided-form envelope (`format`, `version`, `type`, `meta`, `payload`,
/// then extensions that are not envelope keys).
pub struct Envelope<'a>(pub &'a Message);

impl serde::Serialize for Envelope<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let msg = self.0;
        let mut m = s.serialize_map(None)?;
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
    }
}

/// Appends the decided-form envelope of `msg` to `out`.
pub fn envelope_json(msg: &Message, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail, and every key is a string.
    let _ = serde_json::to_writer(out, &Envelope(msg));
}

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

struct TypedLinks<'a>(&'a [crate::model::TypedLink]);

impl serde::Serialize for TypedLinks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(TypedLinkRef))
    }
}

struct TypedLinkRef<'a>(&'a crate::model::TypedLink);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LinkType, Links, TypedLink};
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// The previous writers, kept as test oracles: the envelope built as a `serde_json::Map`,
    /// and the canonical text built as a `String`. The one writer must give the same bytes.
    mod oracle {
        use crate::envelope::ENVELOPE_KEYS;
        use crate::model::{
            Message, Meta, KEY_ALTERNATE, KEY_GROUP, KEY_LINKS, KEY_RELATED, RESERVED_META_KEYS,
        };
        use crate::TYPE_KEY;
        use serde_json::{Map, Value};
        use uuid::Uuid;

        pub fn to_json(msg: &Message) -> String {
            Value::Object(to_map(msg)).to_string()
        }

        pub fn content_hash_text(event: &Map<String, Value>) -> String {
            let mut text = String::new();
            write_object(&mut text, event, true);
            text
        }

        fn to_map(msg: &Message) -> Map<String, Value> {
            let mut out = Map::new();
            out.insert("format".into(), Value::String(msg.format.clone()));
            out.insert("version".into(), Value::from(msg.version));
            out.insert("type".into(), Value::String(msg.kind.clone()));
            if let Some(meta) = &msg.meta {
                out.insert("meta".into(), Value::Object(meta_to_map(meta)));
            }
            if let Some(payload) = &msg.payload {
                out.insert("payload".into(), Value::Object(payload.clone()));
            }
            for (k, v) in &msg.extensions {
                if !ENVELOPE_KEYS.contains(&k.as_str()) {
                    out.insert(k.clone(), v.clone());
                }
            }
            out
        }

        fn meta_to_map(meta: &Meta) -> Map<String, Value> {
            let mut out = Map::new();
            out.insert("uuid".into(), uuid_value(meta.uuid));
            if let Some(org) = meta.uuid_org {
                out.insert("uuid_org".into(), uuid_value(org));
            }
            if let Some(instance) = meta.uuid_instance {
                out.insert("uuid_instance".into(), uuid_value(instance));
            }
            out.insert("tags".into(), Value::from(meta.tags.clone()));
            if let Some(encoding) = &meta.encoding {
                out.insert("encoding".into(), Value::String(encoding.clone()));
            }
            if let Some(compress) = &meta.compress {
                out.insert("compress".into(), Value::String(compress.clone()));
            }
            let links = &meta.links;
            if !links.related.is_empty() {
                out.insert(KEY_RELATED.into(), uuid_list(&links.related));
            }
            if !links.group.is_empty() {
                out.insert(KEY_GROUP.into(), uuid_list(&links.group));
            }
            if !links.alternate.is_empty() {
                out.insert(KEY_ALTERNATE.into(), Value::from(links.alternate.clone()));
            }
            if !links.typed.is_empty() {
                let typed = links
                    .typed
                    .iter()
                    .map(|l| {
                        let mut obj = Map::new();
                        obj.insert("left_side".into(), uuid_value(l.left));
                        obj.insert("type".into(), Value::String(l.link_type.as_str().into()));
                        obj.insert("right_side".into(), uuid_value(l.right));
                        Value::Object(obj)
                    })
                    .collect();
                out.insert(KEY_LINKS.into(), Value::Array(typed));
            }
            for (k, v) in &meta.extensions {
                if !RESERVED_META_KEYS.contains(&k.as_str()) {
                    out.insert(k.clone(), v.clone());
                }
            }
            out
        }

        fn uuid_value(uuid: Uuid) -> Value {
            Value::String(uuid.hyphenated().to_string())
        }

        fn uuid_list(uuids: &[Uuid]) -> Value {
            Value::Array(uuids.iter().map(|&u| uuid_value(u)).collect())
        }

        fn write_value(out: &mut String, value: &Value) {
            match value {
                Value::Object(map) => write_object(out, map, false),
                Value::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        write_value(out, item);
                    }
                    out.push(']');
                }
                scalar => out.push_str(&scalar.to_string()),
            }
        }

        fn write_object(out: &mut String, map: &Map<String, Value>, skip_type: bool) {
            let mut entries: Vec<(&String, &Value)> = map
                .iter()
                .filter(|(k, _)| !(skip_type && k.as_str() == TYPE_KEY))
                .collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_value(out, value);
            }
            out.push('}');
        }
    }

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
        fn the_envelope_is_the_oracle_s(msg in message()) {
            prop_assert_eq!(msg.to_json(), oracle::to_json(&msg));
            let mut out = Vec::new();
            msg.write_json(&mut out);
            prop_assert_eq!(String::from_utf8(out).expect("utf-8"), oracle::to_json(&msg));
            prop_assert_eq!(msg.to_value().to_string(), oracle::to_json(&msg));
        }

        #[test]
        fn the_canonical_text_is_the_oracle_s(event in object()) {
            use sha2::{Digest, Sha256};
            let text = oracle::content_hash_text(&event);
            let want = crate::ContentHash(Sha256::digest(text.as_bytes()).into());
            let mut buf = Vec::new();
            prop_assert_eq!(crate::content_hash_with(&event, &mut buf), want);
            prop_assert_eq!(crate::content_hash(&event), want);
        }
    }

    #[test]
    fn a_sample_event() {
        let text = include_str!("../tests/data/redis_pipeline_event.json");
        let ev: Map<String, Value> = serde_json::from_str(text).expect("sample");
        let msg = Message::wrap_bare(ev.clone(), Uuid::from_u128(1), Some(Uuid::from_u128(2)))
            .expect("wraps");
        assert_eq!(msg.to_json(), oracle::to_json(&msg));
        let mut buf = Vec::new();
        assert_eq!(msg.content_hash_with(&mut buf), crate::content_hash(&ev));
    }
}
