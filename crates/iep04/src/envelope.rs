//! Parsing (with normalisation of the older shapes) and emission of the envelope.
//!
//! Accepted on input, all normalised into [`Message`]:
//!
//! | shape | what is read | becomes |
//! |---|---|---|
//! | decided | `format`, `version`, `type`, `meta{uuid, uuid_org, uuid_instance, tags, encoding, compress, …}`, `payload` | the same fields |
//! | seed | `meta{version, type, format, uuid{current, parent}}` | top-level `format`/`version`/`type` (when absent there); `current` → `meta.uuid`; `parent` P ≠ current → typed link `P is_parent_event current` |
//! | variant A | `meta.uuid{id, origin, related[], group[], alternate[]}` | `id` → `meta.uuid`, `origin` → `meta.uuid_org`, the lists → [`Links`] |
//! | AIL-A | `meta{intelmq:uuid, intelmq:uuid_org, intelmq:related[], intelmq:group[], intelmq:alternate[]}` | `intelmq:uuid`/`intelmq:uuid_org` fill `uuid`/`uuid_org` when those are absent (otherwise they stay extensions); the lists → [`Links`] |
//! | B / AIL-B | `meta.links[]` or `meta.intelmq:links[]` of `{left_side, type, right_side}` | [`Links::typed`] |
//!
//! Emitted: the decided form only, known fields first (`tags` always, as a list), links under [`KEY_RELATED`],
//! [`KEY_GROUP`], [`KEY_ALTERNATE`] and [`KEY_LINKS`] (omitted when empty), then the
//! extensions in their order. `parse(emit(m)) == m` for every model `m` whose extensions avoid
//! [`RESERVED_META_KEYS`], whose top-level extensions avoid the
//! five envelope keys, whose `meta.uuid` is not nil, and which has no `intelmq:uuid_org`
//! extension while `uuid_org` is `None` (parsing would take it as the AIL-A org). Parsed
//! messages always satisfy this, so `parse ∘ emit ∘ parse = parse`.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{
    LinkType, Links, Message, Meta, TypedLink, KEY_ALTERNATE, KEY_GROUP, KEY_LINKS, KEY_RELATED,
};

/// Top-level keys whose presence marks a JSON object as an envelope (not a bare event).
pub(crate) const ENVELOPE_KEYS: &[&str] = &["format", "version", "type", "meta", "payload"];

impl Message {
    /// Parses one message from JSON text (decided envelope or an older shape).
    /// A bare IntelMQ event is refused (`format: missing`); use
    /// [`Receiver::decode`](crate::Receiver::decode) to accept and wrap those too.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_slice(text.as_bytes())
    }

    /// Parses one message from JSON bytes; see [`Message::from_json`].
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes).map_err(Error::Json)?;
        Self::from_value(value)
    }

    /// Parses one message from an already-decoded JSON value; see [`Message::from_json`].
    pub fn from_value(value: Value) -> Result<Self> {
        match value {
            Value::Object(obj) => parse_envelope(obj).map(|(msg, _legacy)| msg),
            _ => Err(Error::wrong_type("$", "a JSON object")),
        }
    }

    /// The decided-form JSON value of this message.
    pub fn to_value(&self) -> Value {
        // Cannot fail: every key is a string and every number is already a JSON number.
        serde_json::to_value(crate::emit::Envelope(self)).unwrap_or(Value::Null)
    }

    /// The decided-form JSON text of this message, on one line.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        self.write_json(&mut out);
        // serde_json writes UTF-8; the fallback is never taken and loses nothing.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Appends the decided-form JSON text of this message to `out` (no allocation of its own).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        crate::emit::envelope_json(self, out);
    }

    /// The decided-form JSON text followed by `\n`, ready for an ND-JSON stream.
    pub fn to_ndjson_line(&self) -> String {
        let mut line = self.to_json();
        line.push('\n');
        line
    }
}

/// Parses an envelope object; the flag tells whether an older shape had to be normalised.
pub(crate) fn parse_envelope(mut obj: Map<String, Value>) -> Result<(Message, bool)> {
    let mut legacy = false;
    let mut meta_obj = match obj.shift_remove("meta") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(Error::wrong_type("meta", "an object")),
    };

    // Seed form: format/version/type lived inside meta.
    if let Some(meta) = meta_obj.as_mut() {
        for key in ["format", "version", "type"] {
            if is_absent(obj.get(key)) {
                if let Some(v) = meta.shift_remove(key) {
                    obj.insert(key.into(), v);
                    legacy = true;
                }
            }
        }
    }

    let format = required_string(obj.shift_remove("format"), "format")?;
    let version = match obj.shift_remove("version") {
        None | Some(Value::Null) => return Err(Error::missing("version")),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| Error::wrong_type("version", "a non-negative integer"))?,
    };
    let kind = required_string(obj.shift_remove("type"), "type")?;
    let payload = match obj.shift_remove("payload") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(Error::wrong_type("payload", "an object")),
    };
    let meta = match meta_obj {
        None => None,
        Some(m) => {
            let (meta, meta_legacy) = parse_meta(m)?;
            legacy |= meta_legacy;
            Some(meta)
        }
    };
    let msg = Message {
        format,
        version,
        kind,
        meta,
        payload,
        extensions: obj,
    };
    Ok((msg, legacy))
}

fn is_absent(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

fn required_string(v: Option<Value>, field: &str) -> Result<String> {
    match v {
        None | Some(Value::Null) => Err(Error::missing(field)),
        Some(Value::String(s)) if s.is_empty() => Err(Error::invalid(field, "empty")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::wrong_type(field, "a string")),
    }
}

fn optional_string(v: Option<Value>, field: &str) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::wrong_type(field, "a string")),
    }
}

pub(crate) fn parse_uuid(v: &Value, field: &str) -> Result<Uuid> {
    match v {
        Value::String(s) => Uuid::try_parse(s).map_err(|_| Error::not_uuid(field)),
        _ => Err(Error::wrong_type(field, "a UUID string")),
    }
}

fn optional_uuid(v: Option<Value>, field: &str) -> Result<Option<Uuid>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_uuid(&v, field).map(Some),
    }
}

fn array(v: Option<Value>, field: &str) -> Result<Vec<Value>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(Error::wrong_type(field, "an array")),
    }
}

fn uuid_array(v: Option<Value>, field: &str, out: &mut Vec<Uuid>) -> Result<()> {
    for (i, item) in array(v, field)?.iter().enumerate() {
        out.push(parse_uuid(item, &format!("{field}[{i}]"))?);
    }
    Ok(())
}

fn string_array(v: Option<Value>, field: &str, out: &mut Vec<String>) -> Result<()> {
    for (i, item) in array(v, field)?.into_iter().enumerate() {
        match item {
            Value::String(s) => out.push(s),
            _ => return Err(Error::wrong_type(format!("{field}[{i}]"), "a string")),
        }
    }
    Ok(())
}

fn typed_links(v: Option<Value>, field: &str, out: &mut Vec<TypedLink>) -> Result<()> {
    for (i, item) in array(v, field)?.into_iter().enumerate() {
        let path = format!("{field}[{i}]");
        let Value::Object(mut obj) = item else {
            return Err(Error::wrong_type(path, "an object"));
        };
        let left = match obj.shift_remove("left_side") {
            Some(v) => parse_uuid(&v, &format!("{path}.left_side"))?,
            None => return Err(Error::missing(format!("{path}.left_side"))),
        };
        let link_type = required_string(obj.shift_remove("type"), &format!("{path}.type"))?;
        let right = match obj.shift_remove("right_side") {
            Some(v) => parse_uuid(&v, &format!("{path}.right_side"))?,
            None => return Err(Error::missing(format!("{path}.right_side"))),
        };
        if let Some(key) = obj.keys().next() {
            return Err(Error::invalid(
                format!("{path}.{key}"),
                "unknown key in a link",
            ));
        }
        out.push(TypedLink {
            left,
            link_type: LinkType::from(link_type.as_str()),
            right,
        });
    }
    Ok(())
}

/// The pieces of a seed / variant A `meta.uuid` object.
struct LegacyUuid {
    uuid: Uuid,
    origin: Option<Uuid>,
    parent: Option<Uuid>,
    related: Vec<Uuid>,
    group: Vec<Uuid>,
    alternate: Vec<String>,
}

fn parse_legacy_uuid(mut obj: Map<String, Value>) -> Result<LegacyUuid> {
    const KNOWN: &[&str] = &[
        "current",
        "parent",
        "id",
        "origin",
        "related",
        "group",
        "alternate",
    ];
    if let Some(key) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Error::invalid(
            format!("meta.uuid.{key}"),
            "unknown key in a uuid object",
        ));
    }
    let current = optional_uuid(obj.shift_remove("current"), "meta.uuid.current")?;
    let id = optional_uuid(obj.shift_remove("id"), "meta.uuid.id")?;
    let uuid = match (current, id) {
        (Some(u), None) | (None, Some(u)) => u,
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "meta.uuid",
                "has both \"current\" and \"id\"",
            ))
        }
        (None, None) => return Err(Error::missing("meta.uuid.id")),
    };
    let mut legacy = LegacyUuid {
        uuid,
        origin: optional_uuid(obj.shift_remove("origin"), "meta.uuid.origin")?,
        parent: optional_uuid(obj.shift_remove("parent"), "meta.uuid.parent")?,
        related: Vec::new(),
        group: Vec::new(),
        alternate: Vec::new(),
    };
    uuid_array(
        obj.shift_remove("related"),
        "meta.uuid.related",
        &mut legacy.related,
    )?;
    uuid_array(
        obj.shift_remove("group"),
        "meta.uuid.group",
        &mut legacy.group,
    )?;
    string_array(
        obj.shift_remove("alternate"),
        "meta.uuid.alternate",
        &mut legacy.alternate,
    )?;
    Ok(legacy)
}

fn parse_meta(mut obj: Map<String, Value>) -> Result<(Meta, bool)> {
    let mut legacy = false;
    let mut links = Links::default();
    let mut origin = None;

    let uuid = match obj.shift_remove("uuid") {
        Some(Value::Object(u)) => {
            legacy = true;
            let l = parse_legacy_uuid(u)?;
            if let Some(parent) = l.parent.filter(|p| *p != l.uuid) {
                links.typed.push(TypedLink {
                    left: parent,
                    link_type: LinkType::IsParentEvent,
                    right: l.uuid,
                });
            }
            origin = l.origin;
            links.related = l.related;
            links.group = l.group;
            links.alternate = l.alternate;
            l.uuid
        }
        Some(v @ Value::String(_)) => parse_uuid(&v, "meta.uuid")?,
        None | Some(Value::Null) => match obj.shift_remove("intelmq:uuid") {
            Some(v) => {
                legacy = true;
                parse_uuid(&v, "meta.intelmq:uuid")?
            }
            None => return Err(Error::missing("meta.uuid")),
        },
        Some(_) => {
            return Err(Error::wrong_type(
                "meta.uuid",
                "a UUID string or a uuid object",
            ))
        }
    };
    if uuid.is_nil() {
        return Err(Error::invalid("meta.uuid", "nil UUID"));
    }

    let mut uuid_org = optional_uuid(obj.shift_remove("uuid_org"), "meta.uuid_org")?;
    if let Some(origin) = origin {
        match uuid_org {
            None => uuid_org = Some(origin),
            Some(org) if org == origin => {}
            Some(_) => {
                return Err(Error::invalid(
                    "meta.uuid.origin",
                    "conflicts with meta.uuid_org",
                ))
            }
        }
    }
    if uuid_org.is_none() {
        if let Some(v) = obj.shift_remove("intelmq:uuid_org") {
            legacy = true;
            uuid_org = optional_uuid(Some(v), "meta.intelmq:uuid_org")?;
        }
    }
    let uuid_instance = optional_uuid(obj.shift_remove("uuid_instance"), "meta.uuid_instance")?;
    let mut tags = Vec::new();
    string_array(obj.shift_remove("tags"), "meta.tags", &mut tags)?;
    let encoding = optional_string(obj.shift_remove("encoding"), "meta.encoding")?;
    let compress = optional_string(obj.shift_remove("compress"), "meta.compress")?;

    uuid_array(
        obj.shift_remove(KEY_RELATED),
        "meta.intelmq:related",
        &mut links.related,
    )?;
    uuid_array(
        obj.shift_remove(KEY_GROUP),
        "meta.intelmq:group",
        &mut links.group,
    )?;
    string_array(
        obj.shift_remove(KEY_ALTERNATE),
        "meta.intelmq:alternate",
        &mut links.alternate,
    )?;
    if let Some(v) = obj.shift_remove("links") {
        legacy = true;
        typed_links(Some(v), "meta.links", &mut links.typed)?;
    }
    typed_links(
        obj.shift_remove(KEY_LINKS),
        "meta.intelmq:links",
        &mut links.typed,
    )?;

    let meta = Meta {
        uuid,
        uuid_org,
        uuid_instance,
        tags,
        encoding,
        compress,
        links,
        extensions: obj,
    };
    Ok((meta, legacy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "03c51929-eeab-4d47-9dc0-c667f94c7d2c";
    const B: &str = "28bc3db3-16da-461c-b20b-b944f4058708";
    const C: &str = "6f1c2f5e-8a7b-4c3d-9e0f-1a2b3c4d5e6f";
    const D: &str = "9b2e7c1a-3d4f-4e5a-8b6c-7d8e9f0a1b2c";

    fn u(s: &str) -> Uuid {
        Uuid::parse_str(s).expect("test uuid")
    }

    fn parse(v: Value) -> Result<Message> {
        Message::from_value(v)
    }

    fn err(v: Value) -> String {
        parse(v).expect_err("must be refused").to_string()
    }

    #[test]
    fn decided_form_round_trips_with_unknown_keys() {
        let input = json!({
            "format": "ail", "version": 1, "type": "item",
            "meta": {
                "uuid": A, "uuid_org": B, "tags": ["mails", "custom_tag"],
                "encoding": "base64", "compress": "gzip",
                "ail:id": "object_id", "ail:mime-type": "text/plain",
                "x-ticket": {"rt": [1, 2.5, null, true]}
            },
            "payload": {"raw": "MjhiYzNk"},
            "x-top": "kept"
        });
        let msg = parse(input.clone()).expect("valid");
        assert_eq!(msg.kind, "item");
        let meta = msg.meta.as_ref().expect("meta");
        assert_eq!(meta.uuid, u(A));
        assert_eq!(meta.uuid_org, Some(u(B)));
        assert_eq!(
            meta.extensions["x-ticket"],
            json!({"rt": [1, 2.5, null, true]})
        );
        assert_eq!(msg.to_value(), input, "decided form is emitted unchanged");
        assert_eq!(Message::from_json(&msg.to_json()).expect("reparse"), msg);
    }

    #[test]
    fn meta_and_payload_are_optional() {
        let msg = parse(json!({"format": "intelmq", "version": 2, "type": "event"})).unwrap();
        assert_eq!(msg.meta, None);
        assert_eq!(msg.payload, None);
        assert_eq!(msg.uuid(), None);
        let msg = parse(json!({"format": "intelmq", "version": 2, "type": "event",
            "meta": null, "payload": {}}))
        .unwrap();
        assert_eq!(msg.payload, Some(Map::new()));
    }

    #[test]
    fn precise_errors_name_the_field() {
        let base =
            || json!({"format": "intelmq", "version": 1, "type": "event", "meta": {"uuid": A}});
        let with = |path: &[&str], v: Value| {
            let mut m = base();
            let mut cur = &mut m;
            for p in &path[..path.len() - 1] {
                cur = &mut cur[*p];
            }
            cur[path[path.len() - 1]] = v;
            m
        };
        assert_eq!(
            err(json!({"version": 1, "type": "event"})),
            "format: missing"
        );
        assert_eq!(err(json!([1])), "$: expected a JSON object");
        assert_eq!(err(with(&["format"], json!(""))), "format: empty");
        assert_eq!(
            err(with(&["format"], json!(3))),
            "format: expected a string"
        );
        assert_eq!(
            err(with(&["version"], json!(-1))),
            "version: expected a non-negative integer"
        );
        assert_eq!(
            err(with(&["version"], json!("1"))),
            "version: expected a non-negative integer"
        );
        assert_eq!(err(with(&["type"], Value::Null)), "type: missing");
        assert_eq!(
            err(with(&["payload"], json!("x"))),
            "payload: expected an object"
        );
        assert_eq!(err(with(&["meta"], json!([]))), "meta: expected an object");
        assert_eq!(err(with(&["meta"], json!({}))), "meta.uuid: missing");
        assert_eq!(
            err(with(&["meta", "uuid"], json!("nope"))),
            "meta.uuid: not a UUID"
        );
        assert_eq!(
            err(with(&["meta", "uuid"], json!(Uuid::nil().to_string()))),
            "meta.uuid: nil UUID"
        );
        assert_eq!(
            err(with(&["meta", "uuid_org"], json!("cert.at"))),
            "meta.uuid_org: not a UUID"
        );
        assert_eq!(
            err(with(&["meta", "tags"], json!(["a", 1]))),
            "meta.tags[1]: expected a string"
        );
        assert_eq!(
            err(with(&["meta", "intelmq:related"], json!([B, "x"]))),
            "meta.intelmq:related[1]: not a UUID"
        );
        assert_eq!(
            err(with(
                &["meta", "links"],
                json!([{"left_side": A, "type": "replaces"}])
            )),
            "meta.links[0].right_side: missing"
        );
        assert_eq!(
            err(with(
                &["meta", "intelmq:links"],
                json!([{"left_side": A, "type": "replaces", "right_side": B, "why": 1}])
            )),
            "meta.intelmq:links[0].why: unknown key in a link"
        );
        let e = parse(with(
            &["meta", "uuid"],
            json!({"current": "cert_at:aaaa-bbbb"}),
        ))
        .unwrap_err();
        assert_eq!(e.field(), Some("meta.uuid.current"));
        assert_eq!(
            err(with(&["meta", "uuid"], json!({"parent": A}))),
            "meta.uuid.id: missing"
        );
        assert_eq!(
            err(with(&["meta", "uuid"], json!({"id": A, "current": A}))),
            "meta.uuid: has both \"current\" and \"id\""
        );
        assert_eq!(
            err(with(&["meta", "uuid"], json!({"id": A, "foo": 1}))),
            "meta.uuid.foo: unknown key in a uuid object"
        );
        assert!(matches!(
            Message::from_json("{\"format\":"),
            Err(Error::Json(_))
        ));
    }

    #[test]
    fn seed_form_is_normalised() {
        let msg = parse(json!({
            "meta": {"version": 1, "uuid": {"current": A, "parent": B},
                     "type": "event", "format": "intelmq"},
            "payload": {"source.ip": "127.0.0.1", "source.fqdn": "example.com", "raw": "eA=="}
        }))
        .expect("seed form");
        assert_eq!(
            (msg.format.as_str(), msg.version, msg.kind.as_str()),
            ("intelmq", 1, "event")
        );
        let meta = msg.meta.as_ref().unwrap();
        assert_eq!(meta.uuid, u(A));
        assert_eq!(
            meta.links.typed,
            vec![TypedLink {
                left: u(B),
                link_type: LinkType::IsParentEvent,
                right: u(A)
            }]
        );
        assert!(meta.extensions.is_empty());
        let out = msg.to_value();
        assert_eq!(out["meta"]["uuid"], json!(A));
        assert_eq!(
            out["meta"]["intelmq:links"],
            json!([{"left_side": B, "type": "is_parent_event", "right_side": A}])
        );
        assert_eq!(Message::from_value(out).unwrap(), msg);

        // parent unset, or equal to current: current is its own parent, no link.
        for uuid in [json!({"current": A}), json!({"current": A, "parent": A})] {
            let msg = parse(json!({"meta": {"version": 1, "uuid": uuid, "type": "event",
                "format": "intelmq"}}))
            .unwrap();
            assert!(msg.meta.unwrap().links.is_empty());
        }
    }

    #[test]
    fn variant_a_is_normalised() {
        let msg = parse(json!({
            "format": "intelmq", "version": 1, "type": "event",
            "meta": {"uuid": {"origin": B, "id": A, "related": [C], "group": [D],
                              "alternate": ["RT#1234", format!("cesnet-certs:{C}")]}}
        }))
        .unwrap();
        let meta = msg.meta.as_ref().unwrap();
        assert_eq!(meta.uuid, u(A));
        assert_eq!(meta.uuid_org, Some(u(B)));
        assert_eq!(meta.links.related, vec![u(C)]);
        assert_eq!(meta.links.group, vec![u(D)]);
        assert_eq!(
            meta.links.alternate,
            vec!["RT#1234".to_string(), format!("cesnet-certs:{C}")]
        );

        let conflict = json!({"format": "intelmq", "version": 1, "type": "event",
            "meta": {"uuid": {"origin": B, "id": A}, "uuid_org": C}});
        assert_eq!(
            err(conflict),
            "meta.uuid.origin: conflicts with meta.uuid_org"
        );
    }

    #[test]
    fn ail_a_is_normalised() {
        let msg = parse(json!({
            "format": "intelmq", "version": 1, "type": "event",
            "meta": {"intelmq:uuid": A, "intelmq:uuid_org": B, "intelmq:related": [C],
                     "intelmq:group": [D], "intelmq:alternate": ["RT#1234"], "ail:x": 1}
        }))
        .unwrap();
        let meta = msg.meta.as_ref().unwrap();
        assert_eq!((meta.uuid, meta.uuid_org), (u(A), Some(u(B))));
        assert_eq!(meta.links.related, vec![u(C)]);
        assert_eq!(meta.links.group, vec![u(D)]);
        assert_eq!(meta.links.alternate, vec!["RT#1234".to_string()]);
        assert_eq!(meta.extensions.len(), 1);

        // With a decided uuid present, intelmq:uuid is someone else's id: kept verbatim.
        let msg = parse(json!({"format": "ail", "version": 1, "type": "item",
            "meta": {"uuid": A, "intelmq:uuid": B, "uuid_org": C, "intelmq:uuid_org": D}}))
        .unwrap();
        let meta = msg.meta.as_ref().unwrap();
        assert_eq!(meta.uuid, u(A));
        assert_eq!(meta.extensions["intelmq:uuid"], json!(B));
        assert_eq!(meta.extensions["intelmq:uuid_org"], json!(D));
        assert_eq!(Message::from_value(msg.to_value()).unwrap(), msg);
    }

    #[test]
    fn typed_links_from_variant_b_and_ail_b() {
        let msg = parse(json!({
            "format": "intelmq", "version": 1, "type": "event",
            "meta": {"uuid": A,
                     "links": [{"left_side": A, "type": "is_parent_event", "right_side": B}],
                     "intelmq:links": [{"left_side": A, "type": "withdraws", "right_side": C},
                                       {"right_side": D, "type": "mirrors", "left_side": A}]}
        }))
        .unwrap();
        let typed = &msg.meta.as_ref().unwrap().links.typed;
        assert_eq!(typed.len(), 3);
        assert_eq!(typed[1].link_type, LinkType::Withdraws);
        assert_eq!(typed[2].link_type, LinkType::Other("mirrors".into()));
        let out = msg.to_value();
        assert!(out["meta"].get("links").is_none());
        assert_eq!(
            out["meta"]["intelmq:links"].as_array().map(Vec::len),
            Some(3)
        );
        assert_eq!(Message::from_value(out).unwrap(), msg);
    }

    #[test]
    fn uuids_are_emitted_canonically() {
        let upper = A.to_uppercase();
        let msg = parse(json!({"format": "intelmq", "version": 1, "type": "event",
            "meta": {"uuid": upper}}))
        .unwrap();
        assert_eq!(msg.to_value()["meta"]["uuid"], json!(A));
    }

    #[test]
    fn reserved_extension_keys_are_not_emitted_twice() {
        let mut meta = Meta::new(u(A));
        meta.extensions.insert("uuid".into(), json!("shadow"));
        meta.extensions.insert("x-a".into(), json!(1));
        let mut msg = Message::new("intelmq", "event");
        msg.meta = Some(meta);
        msg.extensions.insert("format".into(), json!("shadow"));
        let out = msg.to_value();
        assert_eq!(out["meta"]["uuid"], json!(A));
        assert_eq!(out["format"], json!("intelmq"));
        assert_eq!(out["meta"]["x-a"], json!(1));
        assert!(msg.to_ndjson_line().ends_with("}\n"));
    }
}
