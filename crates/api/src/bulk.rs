//! Bulk request bodies: `{"items": [ … ]}` for `/wb`, `/vwb`, `/rb` and `/rbs`.
//!
//! Two item shapes are accepted: the server's and its Python client's
//! `{"namespace": "…", "value": "…", …}` and the format draft's `{"<namespace>": "<value>", …}`.
//! Optional fields: `timestamp` (integer or null; absent, null and 0 mean now), `ttl`
//! (unsigned), `tags` (string, `,` or `;` separated), `noshadow` (boolean). Other fields are
//! ignored, except that in the draft shape exactly one field may carry a string (the
//! namespace → value pair). Strings are borrowed from the body when they need no unescaping.

//!
//! At most `max_items` items are parsed: the item after the last allowed one stops the parse
//! ([`BulkError::TooManyItems`], a 413), so a body of millions of tiny items never becomes
//! millions of parsed items.

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

/// A bulk request body.
#[derive(Debug)]
pub struct BulkBody<'a> {
    /// The items, in request order.
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

/// Why a body was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BulkError {
    /// Not a bulk body; the message is SightingDB's.
    #[error("Invalid JSON body: Json deserialize error: {0}")]
    Json(#[from] serde_json::Error),
    /// More items than allowed (the limit is given).
    #[error("Too many items in one request; the limit is {0}.")]
    TooManyItems(usize),
}

/// Parses a bulk body of at most `max_items` items.
pub fn parse(body: &[u8], max_items: usize) -> Result<BulkBody<'_>, BulkError> {
    let over = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = BodySeed {
        max_items,
        over: &over,
    }
    .deserialize(&mut de)
    .and_then(|b| de.end().map(|()| b));
    match parsed {
        Ok(b) => Ok(b),
        Err(_) if over.get() => Err(BulkError::TooManyItems(max_items)),
        Err(e) => Err(BulkError::Json(e)),
    }
}

/// The body object: `items` (capped), other fields ignored.
struct BodySeed<'c> {
    max_items: usize,
    over: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = BulkBody<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = BulkBody<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct BulkBody")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut items = None;
        while let Some(Str(key)) = m.next_key::<Str<'de>>()? {
            if key == "items" {
                let seed = ItemsSeed {
                    max_items: self.max_items,
                    over: self.over,
                };
                once(&mut items, "items", m.next_value_seed(seed)?)?;
            } else {
                m.next_value::<IgnoredAny>()?;
            }
        }
        let items = items.ok_or_else(|| de::Error::missing_field("items"))?;
        Ok(BulkBody { items })
    }
}

/// The `items` array, refused past `max_items`.
struct ItemsSeed<'c> {
    max_items: usize,
    over: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = Vec<BulkItem<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = Vec<BulkItem<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0).min(self.max_items));
        while let Some(item) = a.next_element::<BulkItem<'de>>()? {
            if items.len() >= self.max_items {
                self.over.set(true);
                return Err(de::Error::custom("too many items"));
            }
            items.push(item);
        }
        Ok(items)
    }
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
        let b = parse(body, 3).expect("parses");
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
            parse(b, 10)
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
        assert!(e(br#"{"items":[],"items":[]}"#).contains("duplicate field `items`"));
        assert!(e(br#"{"items":[]} x"#).contains("trailing characters"));
    }

    #[test]
    fn items_are_capped() {
        let body = br#"{"items":[{"a":"1"},{"a":"2"},{"a":"3"}],"other":[1,2]}"#;
        assert_eq!(parse(body, 3).map(|b| b.items.len()).ok(), Some(3));
        assert!(matches!(parse(body, 2), Err(BulkError::TooManyItems(2))));
        // A broken item past the limit is still "too many", not a parse error.
        let body = br#"{"items":[{"a":"1"},{"a":"2"},{"x"#;
        assert!(matches!(parse(body, 1), Err(BulkError::TooManyItems(1))));
    }
}
