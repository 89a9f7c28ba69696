//! Bulk request bodies: `{"items": [ … ]}` for `/wb`, `/vwb`, `/rb` and `/rbs`.
//!
//! Two item shapes are accepted: the server's and its Python client's
//! `{"namespace": "…", "value": "…", …}` and the format draft's `{"<namespace>": "<value>", …}`.
//! Optional fields: `timestamp` (integer or null; absent, null and 0 mean now), `ttl`
//! (unsigned), `tags` (string, `,` or `;` separated), `noshadow` (boolean). Other fields are
//! ignored, except that in the draft shape exactly one field may carry a string (the
//! namespace → value pair). Strings are borrowed from the body when they need no unescaping.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A bulk request body.
#[derive(Debug, serde::Deserialize)]
pub struct BulkBody<'a> {
    /// The items, in request order.
    #[serde(borrow)]
    pub items: Vec<BulkItem<'a>>,
}

/// One bulk item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkItem<'a> {
    /// The namespace as sent.
    pub namespace: Cow<'a, str>,
    /// The value as sent.
    pub value: Cow<'a, str>,
    /// `None` when absent, null or 0 (now).
    pub timestamp: Option<i64>,
    /// TTL in seconds.
    pub ttl: Option<u64>,
    /// Tags.
    pub tags: Option<Cow<'a, str>>,
    /// Skip the shadow sighting.
    pub noshadow: bool,
}

/// Why a body was refused; the message is SightingDB's.
#[derive(Debug, thiserror::Error)]
#[error("Invalid JSON body: Json deserialize error: {0}")]
pub struct BulkError(#[from] pub serde_json::Error);

/// Parses a bulk body.
pub fn parse(body: &[u8]) -> Result<BulkBody<'_>, BulkError> {
    Ok(serde_json::from_slice(body)?)
}

/// A string borrowed from the input when possible.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Any JSON value, keeping it only when it is a string.
struct MaybeStr<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MaybeStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Owned(v))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                MaybeStr::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeStr(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for BulkItem<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = BulkItem<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an item object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let (mut namespace, mut value, mut tags) = (None, None, None);
                let (mut timestamp, mut ttl, mut noshadow) = (None, None, None);
                let mut draft: Option<(Cow<'a, str>, Cow<'a, str>)> = None;
                let mut draft_ambiguous = false;
                while let Some(Str(key)) = m.next_key::<Str<'a>>()? {
                    match key.as_ref() {
                        "namespace" => {
                            once(&mut namespace, "namespace", m.next_value::<Str<'a>>()?.0)?
                        }
                        "value" => once(&mut value, "value", m.next_value::<Str<'a>>()?.0)?,
                        "tags" => {
                            let t: Option<Str<'a>> = m.next_value()?;
                            once(&mut tags, "tags", t.map(|s| s.0))?;
                        }
                        "timestamp" => {
                            once(&mut timestamp, "timestamp", m.next_value::<Option<i64>>()?)?
                        }
                        "ttl" => once(&mut ttl, "ttl", m.next_value::<Option<u64>>()?)?,
                        "noshadow" => once(&mut noshadow, "noshadow", m.next_value::<bool>()?)?,
                        _ => {
                            if let MaybeStr(Some(v)) = m.next_value::<MaybeStr<'a>>()? {
                                if draft.is_some() {
                                    draft_ambiguous = true;
                                }
                                draft = Some((key, v));
                            }
                        }
                    }
                }
                let (namespace, value) = match (namespace, value) {
                    (Some(n), Some(v)) => (n, v),
                    (None, None) if draft.is_some() && !draft_ambiguous => {
                        draft.unwrap_or_default()
                    }
                    (None, None) if draft_ambiguous => return Err(de::Error::custom(
                        "item has several \"<namespace>\": \"<value>\" pairs; send one per item",
                    )),
                    (None, _) => return Err(de::Error::missing_field("namespace")),
                    (Some(_), None) => return Err(de::Error::missing_field("value")),
                };
                Ok(BulkItem {
                    namespace,
                    value,
                    timestamp: timestamp.flatten().filter(|t| *t != 0),
                    ttl: ttl.flatten(),
                    tags: tags.flatten(),
                    noshadow: noshadow.unwrap_or(false),
                })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(v);
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn both_shapes() {
        let body = br#"{"items":[
            {"namespace":"a/b","value":"1.2.3.4","timestamp":0,"extra":1},
            {"/draft/ns":"v2","timestamp":1500000000,"ttl":60,"tags":"x;y","noshadow":true},
            {"namespace":"n","value":"esc\"aped","timestamp":null}
        ]}"#;
        let b = parse(body).expect("parses");
        assert_eq!(b.items.len(), 3);
        assert_eq!(b.items[0].namespace, "a/b");
        assert_eq!(b.items[0].timestamp, None, "0 means now");
        assert!(matches!(b.items[0].value, Cow::Borrowed(_)));
        assert_eq!(b.items[1].namespace, "/draft/ns");
        assert_eq!(b.items[1].value, "v2");
        assert_eq!(b.items[1].timestamp, Some(1_500_000_000));
        assert_eq!((b.items[1].ttl, b.items[1].noshadow), (Some(60), true));
        assert_eq!(b.items[1].tags.as_deref(), Some("x;y"));
        assert_eq!(b.items[2].value, "esc\"aped");
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = |b: &[u8]| {
            parse(b)
                .map(|_| ())
                .map_err(|e| e.to_string())
                .err()
                .unwrap_or_default()
        };
        assert!(e(br#"{"items":[{"namespace":"a"}]}"#).contains("missing field `value`"));
        assert!(e(br#"{"items":[{"value":"a"}]}"#).contains("missing field `namespace`"));
        assert!(e(br#"{}"#).contains("missing field `items`"));
        assert!(e(b"").starts_with("Invalid JSON body: Json deserialize error:"));
        assert!(
            e(br#"{"items":[{"namespace":"a","value":"v","noshadow":"yes"}]}"#)
                .contains("invalid type")
        );
        assert!(e(br#"{"items":[{"a":"1","b":"2"}]}"#).contains("several"));
        assert!(e(b"{\"items\":[{\"namespace\":\"a\",\"value\":\"\xff\"}]}")
            .contains("invalid unicode"));
        assert!(
            e(br#"{"items":[{"namespace":"a","value":"v","timestamp":1.5}]}"#)
                .contains("invalid type")
        );
    }
}
