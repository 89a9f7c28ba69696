//! Property tests: parse ∘ emit is the identity on the model, unknown keys survive, and the
//! ND-JSON reader does not care how its input is chunked.

use proptest::prelude::*;
use serde_json::{Map, Value};
use sighthub_iep04::{
    content_hash, encode_ndjson, Error, LinkType, Links, Message, Meta, NdjsonReader, Receiver,
    Shape, TypedLink, RESERVED_META_KEYS,
};
use uuid::Uuid;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>()
        .prop_filter("nil", |n| *n != 0)
        .prop_map(Uuid::from_u128)
}

/// Arbitrary JSON values, any finite double included (the crate enables serde_json's
/// `float_roundtrip`, so a relay does not perturb numbers).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (prop::num::f64::NORMAL
            | prop::num::f64::SUBNORMAL
            | prop::num::f64::ZERO
            | prop::num::f64::NEGATIVE
            | prop::num::f64::POSITIVE)
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("\\PC{0,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn object(keys: impl Strategy<Value = String>) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((keys, json_value()), 0..5).prop_map(|kv| kv.into_iter().collect())
}

fn meta_extension_key() -> impl Strategy<Value = String> {
    prop_oneof!["(x-|ail:|misp:|intelmq:)[a-z_-]{1,10}", "\\PC{0,8}"]
        .prop_filter("reserved or AIL-A org key", |k| {
            !RESERVED_META_KEYS.contains(&k.as_str()) && k != "intelmq:uuid_org"
        })
}

fn link_type() -> impl Strategy<Value = LinkType> {
    prop_oneof![
        Just(LinkType::IsParentEvent),
        Just(LinkType::Replaces),
        Just(LinkType::Withdraws),
        "[a-z_]{1,12}".prop_map(|s| LinkType::from(s.as_str())),
    ]
}

fn links() -> impl Strategy<Value = Links> {
    (
        prop::collection::vec(uuid(), 0..3),
        prop::collection::vec(uuid(), 0..3),
        prop::collection::vec("\\PC{0,12}", 0..3),
        prop::collection::vec(
            (uuid(), link_type(), uuid()).prop_map(|(left, link_type, right)| TypedLink {
                left,
                link_type,
                right,
            }),
            0..3,
        ),
    )
        .prop_map(|(related, group, alternate, typed)| Links {
            related,
            group,
            alternate,
            typed,
        })
}

fn meta() -> impl Strategy<Value = Meta> {
    (
        uuid(),
        prop::option::of(uuid()),
        prop::option::of(uuid()),
        prop::collection::vec("\\PC{0,10}", 0..4),
        prop::option::of("\\PC{0,8}"),
        prop::option::of("\\PC{0,8}"),
        links(),
        object(meta_extension_key()),
    )
        .prop_map(
            |(uuid, uuid_org, uuid_instance, tags, encoding, compress, links, extensions)| Meta {
                uuid,
                uuid_org,
                uuid_instance,
                tags,
                encoding,
                compress,
                links,
                extensions,
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    let top_key = "[a-z_:-]{1,10}".prop_filter("envelope key", |k| {
        !["format", "version", "type", "meta", "payload"].contains(&k.as_str())
    });
    (
        "\\PC{1,10}",
        any::<u64>(),
        "\\PC{1,10}",
        prop::option::of(meta()),
        prop::option::of(object("\\PC{0,12}")),
        object(top_key),
    )
        .prop_map(
            |(format, version, kind, meta, payload, extensions)| Message {
                format,
                version,
                kind,
                meta,
                payload,
                extensions,
            },
        )
}

/// Stream results in a comparable form.
fn read_all(reader: &mut NdjsonReader) -> Vec<Result<(u64, String), String>> {
    std::iter::from_fn(|| reader.next_line())
        .map(|r| r.map(|l| (l.number, l.text)).map_err(|e| e.to_string()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_of_emit_is_identity(msg in message()) {
        let text = msg.to_json();
        let back = Message::from_json(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &msg);
        // Emission is deterministic.
        prop_assert_eq!(back.to_json(), text);
    }

    #[test]
    fn ndjson_stream_round_trips(msgs in prop::collection::vec(message(), 0..5), chunk in 1usize..64) {
        let text = encode_ndjson(&msgs);
        let rx = Receiver::new(Uuid::from_u128(1), None);
        let mut reader = NdjsonReader::new(1 << 20);
        let mut got = Vec::new();
        for part in text.as_bytes().chunks(chunk) {
            reader.push(part);
            while let Some(item) = reader.next_message(&rx) {
                let d = item.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(d.shape == Shape::Envelope);
                got.push(d.message);
            }
        }
        prop_assert_eq!(reader.finish().count(), 0);
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn unknown_meta_keys_keep_their_values(ext in object(meta_extension_key()), payload in object("\\PC{0,8}")) {
        let mut meta = Map::new();
        meta.insert("uuid".into(), Value::from("03c51929-eeab-4d47-9dc0-c667f94c7d2c"));
        meta.extend(ext.clone());
        let mut env = Map::new();
        env.insert("format".into(), "intelmq".into());
        env.insert("version".into(), 2.into());
        env.insert("type".into(), "event".into());
        env.insert("meta".into(), Value::Object(meta));
        env.insert("payload".into(), Value::Object(payload.clone()));
        let msg = Message::from_value(Value::Object(env)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let out = msg.to_value();
        for (k, v) in &ext {
            prop_assert_eq!(out["meta"].get(k), Some(v), "meta key {:?}", k);
        }
        prop_assert_eq!(out.get("payload"), Some(&Value::Object(payload)));
    }

    #[test]
    fn reader_is_chunking_invariant(
        input in prop::collection::vec(prop_oneof![
            4 => Just(b'a'), 2 => Just(b'\n'), 1 => Just(b'\r'), 1 => Just(b' '),
            1 => Just(b'{'), 1 => Just(b'}'), 1 => Just(0xff), 1 => Just(0xef), 1 => Just(0xbb), 1 => Just(0xbf),
        ], 0..200),
        max in 0usize..12,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut whole = NdjsonReader::new(max);
        whole.push(&input);
        let mut expected = read_all(&mut whole);
        expected.extend(whole.finish().map(|r| r.map(|l| (l.number, l.text)).map_err(|e| e.to_string())));

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut chunked = NdjsonReader::new(max);
        let mut got = Vec::new();
        let mut prev = 0;
        for p in points.into_iter().chain([input.len()]) {
            chunked.push(&input[prev..p]);
            got.extend(read_all(&mut chunked));
            prev = p;
        }
        got.extend(chunked.finish().map(|r| r.map(|l| (l.number, l.text)).map_err(|e| e.to_string())));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn bare_events_wrap_and_export_back(event in object("[a-z_]{1,6}(\\.[a-z_]{1,6}){0,2}")) {
        let rx = Receiver::new(Uuid::from_u128(7), Some(Uuid::from_u128(8)));
        prop_assume!(!event.is_empty());
        let d = rx.decode_value(Value::Object(event.clone())).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(d.shape, Shape::Bare);
        prop_assert_eq!(d.message.to_bare_event(false).map_err(|e| TestCaseError::fail(e.to_string()))?, event.clone());
        prop_assert_eq!(d.message.content_hash(), content_hash(&event));
        // Key order does not change the hash.
        let reversed: Map<String, Value> = event.clone().into_iter().rev().collect();
        prop_assert_eq!(content_hash(&reversed), content_hash(&event));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let rx = Receiver::new(Uuid::from_u128(1), None);
        if let Ok(msg) = Message::from_slice(&bytes) {
            prop_assert_eq!(Message::from_json(&msg.to_json()).ok(), Some(msg));
        }
        let _ = rx.decode(&bytes);
        let results = sighthub_iep04::decode_ndjson(&bytes, 64, &rx);
        for r in results {
            if let Err(e) = r {
                prop_assert!(e.line().is_some(), "stream errors carry a line: {}", e);
                prop_assert!(!matches!(e, Error::Json(_)));
            }
        }
    }
}
