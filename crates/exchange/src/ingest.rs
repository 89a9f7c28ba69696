//! From a publish request's body to [`Prepared`] messages.
//!
//! Bodies, by `Content-Type`:
//!
//! | content type | read as |
//! |---|---|
//! | `application/x-ndjson`, `application/ndjson`, `application/jsonl`, `application/x-jsonlines`, `application/jsonlines` | ND-JSON, **parsed as it streams in** (one line at a time, never the whole body) |
//! | `application/x-www-form-urlencoded` | one bare event from form fields (values stay strings) |
//! | anything else (`application/json`, none…) | buffered (within the limit), then: a JSON array of messages, one JSON object, or — when the body is not one JSON value — ND-JSON; a body that is not JSON at all but form-encoded is a bare event (IntelMQ's REST output with `use_json: false` sends that, labelled JSON) |
//!
//! Each message may be an IEP04 envelope (any accepted shape) or a bare IntelMQ event,
//! which is wrapped with a fresh UUIDv4, the key's organisation and this hub's instance.
//! [`prepare`] then fills a missing `meta.uuid_org` with the key's organisation, checks
//! that the key may speak for the message's organisation and publish to one of its feeds,
//! and encodes the log record.

use sha2::{Digest, Sha256};
use sighthub_iep04::{Decoded, Message, NdjsonReader, Receiver, Shape};
use uuid::Uuid;

use crate::access::Grants;
use crate::error::Refusal;
use crate::record::{
    alternate_fits, encode_log, EntryKind, LogEntry, FLAG_LINKED, FLAG_PAYLOAD, FLAG_WRAPPED,
    MAX_ALTERNATE_LEN,
};
use crate::store::{index_entries, Prepared};

/// Most link and alternate index entries one message may create (related, group, typed
/// links counted once per side indexed, alternate ids): each is a key in the exchange's
/// indexes written in the request's batch. A message with more is refused.
pub const MAX_INDEX_ENTRIES: usize = 1024;

/// How a body is read; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Streamed ND-JSON.
    NdJson,
    /// Form fields: one bare event.
    Form,
    /// Buffered, then sniffed.
    Json,
}

impl BodyKind {
    /// From a `Content-Type` header value.
    pub fn from_content_type(ct: Option<&str>) -> BodyKind {
        let mime = ct
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match mime.as_str() {
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => BodyKind::NdJson,
            "application/x-www-form-urlencoded" => BodyKind::Form,
            _ => BodyKind::Json,
        }
    }
}

/// Why one message was not taken.
#[derive(Debug)]
pub enum ItemError {
    /// Not a valid message.
    Invalid(sighthub_iep04::Error),
    /// The key may not publish it.
    Refused(String),
}

/// The messages of one request as they are read: prepared ones, errors and refusals, in
/// request order.
#[derive(Debug)]
pub struct Collector {
    grants: std::sync::Arc<Grants>,
    receiver: Receiver,
    instance: Uuid,
    /// The prepared messages, in order.
    pub items: Vec<Prepared>,
    /// One slot per message of the request.
    pub slots: Vec<Slot>,
    /// Messages the key may not publish.
    pub refused: Vec<Refusal>,
    /// Scratch space for content hashes.
    scratch: Vec<u8>,
    /// Most messages taken ([`Collector::with_max_items`]); more set [`Collector::too_many`].
    max_items: usize,
    /// More messages arrived than `max_items`: the request must be refused whole.
    pub too_many: bool,
}

/// What happened to the n-th message of a request.
#[derive(Debug)]
pub enum Slot {
    /// Prepared: index into [`Collector::items`].
    Prepared(usize),
    /// Invalid: the error (with its ND-JSON line when there is one).
    Invalid(sighthub_iep04::Error),
}

impl Collector {
    /// A collector for one request by `grants`, on the hub instance `instance`.
    pub fn new(grants: std::sync::Arc<Grants>, instance: Uuid) -> Self {
        let receiver = Receiver::new(grants.org, Some(instance));
        Collector {
            grants,
            receiver,
            instance,
            items: Vec::new(),
            slots: Vec::new(),
            refused: Vec::new(),
            scratch: Vec::with_capacity(4096),
            max_items: usize::MAX,
            too_many: false,
        }
    }

    /// Takes at most `n` messages: one more sets [`Collector::too_many`] and the rest of a
    /// buffered body is not parsed.
    pub fn with_max_items(mut self, n: usize) -> Self {
        self.max_items = n;
        self
    }

    /// Number of messages seen so far.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No message seen yet.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Takes one decoded message (or its decoding error).
    pub fn add(&mut self, decoded: sighthub_iep04::Result<Decoded>) {
        let index = self.slots.len();
        if index >= self.max_items {
            self.too_many = true;
            return;
        }
        let scratch = &mut self.scratch;
        match decoded
            .map_err(ItemError::Invalid)
            .and_then(|d| prepare_with(d, &self.grants, self.instance, scratch))
        {
            Ok(p) => {
                self.slots.push(Slot::Prepared(self.items.len()));
                self.items.push(p);
            }
            Err(ItemError::Invalid(e)) => self.slots.push(Slot::Invalid(e)),
            Err(ItemError::Refused(reason)) => {
                // Kept as a slot so indexes stay aligned; the request will be refused whole.
                self.slots
                    .push(Slot::Invalid(sighthub_iep04::Error::Invalid {
                        field: "$".into(),
                        reason: reason.clone(),
                    }));
                self.refused.push(Refusal { index, reason });
            }
        }
    }

    /// Takes one message that is already parsed JSON (a page a relay pulled from another
    /// hub): never turned back into bytes, and bounded by `max_line` as an element of a
    /// JSON array body is (its compact JSON length is counted, not written).
    pub fn add_value(&mut self, value: serde_json::Value, max_line: usize) {
        let len = json_len(&value);
        let decoded = if len > max_line {
            Err(oversized(len, max_line))
        } else {
            self.receiver.decode_value(value)
        };
        self.add(decoded);
    }

    /// Takes one ND-JSON line (or its reading error).
    pub fn add_line(&mut self, line: sighthub_iep04::Result<sighthub_iep04::Line>) {
        let decoded = line.and_then(|l| l.decode(&self.receiver));
        self.add(decoded);
    }

    /// Appends what `other` collected (the messages that followed in the same request).
    pub fn absorb(&mut self, other: Collector) {
        let (slot_base, item_base) = (self.slots.len(), self.items.len());
        self.slots.extend(other.slots.into_iter().map(|s| match s {
            Slot::Prepared(i) => Slot::Prepared(i + item_base),
            invalid => invalid,
        }));
        self.items.extend(other.items);
        self.refused
            .extend(other.refused.into_iter().map(|r| Refusal {
                index: r.index + slot_base,
                reason: r.reason,
            }));
    }

    /// An empty collector for the same caller (to prepare a segment of the request on
    /// another thread).
    pub fn sibling(&self) -> Collector {
        Collector::new(std::sync::Arc::clone(&self.grants), self.instance)
    }

    /// Drains the complete lines of an ND-JSON reader.
    pub fn drain(&mut self, reader: &mut NdjsonReader) {
        while !self.too_many {
            let Some(item) = reader.next_message(&self.receiver) else {
                break;
            };
            self.add(item);
        }
    }

    /// Ends an ND-JSON stream: takes the last lines and the unterminated tail.
    pub fn finish(&mut self, reader: NdjsonReader) {
        let mut rest = reader.finish();
        while !self.too_many {
            let Some(item) = rest.next_message(&self.receiver) else {
                break;
            };
            self.add(item);
        }
    }

    /// Decodes a buffered body of kind `Json` or `Form`. Returns `true` when the body was a
    /// single object (so a failure answers 400 rather than a per-item list).
    ///
    /// `max_line` (the exchange's `max_line_bytes`) bounds every message whatever the shape:
    /// an ND-JSON line, an element of a JSON array, a single JSON object or form body. A
    /// longer message is an error for that message ([`is_oversized`]). An array is read one
    /// element at a time and stops past [`Collector::with_max_items`].
    pub fn decode_buffered(&mut self, kind: BodyKind, body: &[u8], max_line: usize) -> bool {
        if kind == BodyKind::Form {
            let decoded = if body.len() > max_line {
                Err(oversized(body.len(), max_line))
            } else {
                form_event(body).and_then(|m| self.receiver.decode_value(m))
            };
            self.add(decoded);
            return true;
        }
        let start = body
            .strip_prefix(b"\xEF\xBB\xBF")
            .unwrap_or(body)
            .iter()
            .position(|b| !b.is_ascii_whitespace());
        let text = start.and_then(|s| body.get(s..)).unwrap_or_default();
        match text.first() {
            Some(b'[') => {
                let mut de = serde_json::Deserializer::from_slice(text);
                let seen = serde::Deserializer::deserialize_seq(
                    &mut de,
                    ArrayVisitor {
                        col: self,
                        max_line,
                    },
                )
                .and_then(|()| de.end());
                match seen {
                    Ok(()) => false,
                    // Stopped on purpose: too many items.
                    Err(_) if self.too_many => false,
                    // Not one JSON array after all: one error for the body, nothing taken.
                    Err(e) => {
                        self.slots.clear();
                        self.items.clear();
                        self.refused.clear();
                        self.add(Err(sighthub_iep04::Error::Json(e)));
                        true
                    }
                }
            }
            // One message: within the limit, parsed whole; a longer body can only be ND-JSON,
            // whose reader bounds each line.
            Some(b'{') => {
                if text.len() <= max_line {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(text) {
                        let decoded = self.receiver.decode_value(v);
                        self.add(decoded);
                        return true;
                    }
                }
                let mut reader = NdjsonReader::new(max_line);
                reader.push(text);
                self.drain(&mut reader);
                self.finish(reader);
                false
            }
            None => false,
            Some(_) => {
                let decoded = if text.len() > max_line {
                    Err(oversized(text.len(), max_line))
                } else {
                    form_event(text)
                        .or_else(|_| {
                            serde_json::from_slice::<serde_json::Value>(text)
                                .map_err(sighthub_iep04::Error::Json)
                        })
                        .and_then(|v| self.receiver.decode_value(v))
                };
                self.add(decoded);
                true
            }
        }
    }
}

/// The error of a message longer than `max_line_bytes` (outside ND-JSON, whose reader has
/// its own, [`sighthub_iep04::Error::LineTooLong`]).
fn oversized(len: usize, max: usize) -> sighthub_iep04::Error {
    sighthub_iep04::Error::Invalid {
        field: "$".into(),
        reason: format!(
            "the message is {len} bytes long; the limit is {max} bytes (max_line_bytes)"
        ),
    }
}

/// Bytes of the compact JSON text of `value`, counted without writing it.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a `Value` to a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

/// Whether an item error is a message over `max_line_bytes`, in any body shape.
pub fn is_oversized(e: &sighthub_iep04::Error) -> bool {
    match e {
        sighthub_iep04::Error::LineTooLong { .. } => true,
        sighthub_iep04::Error::Invalid { reason, .. } => reason.ends_with("(max_line_bytes)"),
        _ => false,
    }
}

/// Reads a JSON array element by element: each one is bounded by `max_line` before it is
/// parsed into a value, and reading stops at the collector's item limit.
struct ArrayVisitor<'c> {
    col: &'c mut Collector,
    max_line: usize,
}

impl<'de> serde::de::Visitor<'de> for ArrayVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of messages")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'de serde_json::value::RawValue>()? {
            let text = raw.get();
            let decoded = if text.len() > self.max_line {
                Err(oversized(text.len(), self.max_line))
            } else {
                serde_json::from_str::<serde_json::Value>(text)
                    .map_err(sighthub_iep04::Error::Json)
                    .and_then(|v| self.col.receiver.decode_value(v))
            };
            self.col.add(decoded);
            if self.col.too_many {
                return Err(serde::de::Error::custom("too many messages"));
            }
        }
        Ok(())
    }
}

/// A form-encoded body as a flat JSON object of strings (IntelMQ's `use_json: false`).
fn form_event(body: &[u8]) -> sighthub_iep04::Result<serde_json::Value> {
    let invalid = |reason: &str| sighthub_iep04::Error::Invalid {
        field: "$".into(),
        reason: reason.into(),
    };
    let body = body.trim_ascii();
    if body.is_empty() || !body.contains(&b'=') || body.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(invalid("neither JSON nor a form-encoded event"));
    }
    let mut obj = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(body) {
        if k.is_empty() || obj.insert(k.into_owned(), v.into_owned().into()).is_some() {
            return Err(invalid("form field empty or repeated"));
        }
    }
    Ok(serde_json::Value::Object(obj))
}

/// Content key of a message without uuid: 16 bytes of SHA-256(org ‖ content hash), so the
/// same event from two organisations is two messages, and a resend by one is a duplicate.
pub fn content_key(org: Uuid, msg: &Message) -> [u8; 16] {
    content_key_with(org, msg, &mut Vec::new())
}

fn content_key_with(org: Uuid, msg: &Message, scratch: &mut Vec<u8>) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(org.as_bytes());
    h.update(msg.content_hash_with(scratch).as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(d.get(..16).unwrap_or(&[0u8; 16]));
    out
}

/// Checks one decoded message against the key and encodes it; see the [module docs](self).
pub fn prepare(decoded: Decoded, grants: &Grants, instance: Uuid) -> Result<Prepared, ItemError> {
    prepare_with(decoded, grants, instance, &mut Vec::new())
}

fn prepare_with(
    decoded: Decoded,
    grants: &Grants,
    instance: Uuid,
    scratch: &mut Vec<u8>,
) -> Result<Prepared, ItemError> {
    let Decoded { mut message, shape } = decoded;
    let wrapped = shape == Shape::Bare || message.meta.is_none();
    message.ensure_uuid(grants.org, Some(instance));
    let Some(meta) = message.meta.as_mut() else {
        return Err(ItemError::Invalid(sighthub_iep04::Error::Missing {
            field: "meta".into(),
        }));
    };
    if shape == Shape::Bare {
        for t in &grants.bare_tags {
            if !meta.tags.contains(t) {
                meta.tags.push(t.clone());
            }
        }
    }
    let org = *meta.uuid_org.get_or_insert(grants.org);
    if !grants.may_speak_for(org) {
        return Err(ItemError::Refused(format!(
            "meta.uuid_org {org} is not the organisation of this key"
        )));
    }
    let uuid = meta.uuid;
    let tags = meta.tags.clone();
    let format_type = format!("{}/{}", message.format, message.kind);
    if !grants.may_publish(&format_type, &tags) {
        return Err(ItemError::Refused(format!(
            "this key may not publish to feed {format_type} or to the message's tags"
        )));
    }
    let empty_payload = message.payload.as_ref().is_none_or(|p| p.is_empty());
    let content_key = wrapped.then(|| content_key_with(org, &message, scratch));
    let (links, alternates) = index_entries(&message);
    if links.len() + alternates.len() > MAX_INDEX_ENTRIES {
        return Err(ItemError::Invalid(sighthub_iep04::Error::Invalid {
            field: format!("meta.{}", sighthub_iep04::KEY_LINKS),
            reason: format!(
                "{} links and alternate ids; the limit is {MAX_INDEX_ENTRIES} per message",
                links.len() + alternates.len()
            ),
        }));
    }
    if let Some(long) = alternates.iter().find(|a| !alternate_fits(a)) {
        return Err(ItemError::Invalid(sighthub_iep04::Error::Invalid {
            field: format!("meta.{}", sighthub_iep04::KEY_ALTERNATE),
            reason: format!(
                "an alternate id is {} bytes long; the limit is {MAX_ALTERNATE_LEN} bytes",
                long.len()
            ),
        }));
    }
    let marks = sighthub_iep04::claims(&message);
    let mut flags = 0;
    if !empty_payload {
        flags |= FLAG_PAYLOAD;
    }
    if wrapped {
        flags |= FLAG_WRAPPED;
    }
    if !links.is_empty() || !alternates.is_empty() {
        flags |= FLAG_LINKED;
    }
    // The header, then the envelope written straight after it (it is the record's tail).
    let mut record = encode_log(&LogEntry {
        kind: EntryKind::Message,
        tlp: message.tlp(),
        flags,
        accepted_at: 0,
        uuid,
        org: Some(org),
        format_type: &format_type,
        tags: tags.iter().map(String::as_str).collect(),
        json: b"",
    });
    record.reserve(scratch.len().max(1024) + 256);
    message.write_json(&mut record);
    Ok(Prepared {
        uuid,
        org: Some(org),
        content_key,
        record,
        empty_payload,
        tags,
        links,
        alternates,
        marks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::decode_log;
    use sighthub_iep04::Tlp;
    use std::sync::Arc;

    const ORG: Uuid = Uuid::from_u128(0x28bc3db3_16da_461c_b20b_b944f4058708);
    const INST: Uuid = Uuid::from_u128(0xabc);

    fn publisher(tags: &[&str]) -> Arc<Grants> {
        let mut g = Grants::admin(ORG);
        g.admin = false;
        g.relay = false;
        g.publish = vec![crate::access::Feed::Type("intelmq".into())];
        g.bare_tags = tags.iter().map(|t| (*t).to_owned()).collect();
        Arc::new(g)
    }

    fn bare(ip: &str, pad: usize) -> String {
        format!(r#"{{"source.ip":"{ip}","comment":"{}"}}"#, "x".repeat(pad))
    }

    #[test]
    fn max_line_bytes_bounds_every_body_shape() {
        let small = bare("198.51.100.1", 10);
        let big = bare("198.51.100.2", 1000);
        // Array: the long element is an error of its own, the others are taken.
        let mut c = Collector::new(publisher(&[]), INST);
        let single = c.decode_buffered(BodyKind::Json, format!("[{small},{big}]").as_bytes(), 512);
        assert!(!single);
        assert!(matches!(c.slots[0], Slot::Prepared(_)));
        assert!(matches!(&c.slots[1], Slot::Invalid(e) if is_oversized(e)));
        // A single object, a form body, an ND-JSON line.
        for (kind, body) in [
            (BodyKind::Json, big.clone()),
            (
                BodyKind::Form,
                format!("source.ip=198.51.100.3&c={}", "x".repeat(1000)),
            ),
            (BodyKind::Json, format!("{small}\n{big}\n")),
        ] {
            let mut c = Collector::new(publisher(&[]), INST);
            c.decode_buffered(kind, body.as_bytes(), 512);
            let last = c.slots.last().expect("a slot");
            assert!(
                matches!(last, Slot::Invalid(e) if is_oversized(e)),
                "{body:.40}"
            );
        }
    }

    /// A parsed page (relay pull) is taken as the same body serialised would be: the same
    /// records, the same bound on each message, and a non-object is an error of its own.
    #[test]
    fn parsed_values_are_taken_like_a_json_array() {
        let env = r#"{"format":"intelmq","version":1,"type":"event","meta":{"uuid":"03c51929-eeab-4d47-9dc0-c667f94c7d2c"},"payload":{"raw":"eA=="}}"#;
        let values: Vec<serde_json::Value> = [env.to_owned(), bare("198.51.100.9", 1000)]
            .iter()
            .map(|t| serde_json::from_str(t).expect("json"))
            .chain([serde_json::Value::Null])
            .collect();
        let body = serde_json::to_vec(&values).expect("body");
        let max = serde_json::to_vec(&values[0]).expect("len").len();
        let mut buffered = Collector::new(publisher(&[]), INST);
        buffered.decode_buffered(BodyKind::Json, &body, max);
        let mut parsed = Collector::new(publisher(&[]), INST);
        for v in values {
            parsed.add_value(v, max);
        }
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed.items.len(), 1, "{:?}", parsed.slots);
        assert_eq!(parsed.items[0].record, buffered.items[0].record);
        assert!(matches!(&parsed.slots[1], Slot::Invalid(e) if is_oversized(e)));
        assert!(matches!(&buffered.slots[1], Slot::Invalid(e) if is_oversized(e)));
        assert!(matches!(parsed.slots[2], Slot::Invalid(_)));
        assert!(matches!(buffered.slots[2], Slot::Invalid(_)));
    }

    #[test]
    fn index_entries_per_message_are_bounded() {
        let related = |n: usize| {
            let list: Vec<String> = (0..n)
                .map(|i| Uuid::from_u128(i as u128 + 1).to_string())
                .collect();
            serde_json::json!({"format":"intelmq","version":1,"type":"event",
                "meta":{"uuid":"03c51929-eeab-4d47-9dc0-c667f94c7d2c","intelmq:related":list},
                "payload":{"source.ip":"198.51.100.1"}})
            .to_string()
        };
        for (n, ok) in [(MAX_INDEX_ENTRIES, true), (MAX_INDEX_ENTRIES + 1, false)] {
            let mut c = Collector::new(publisher(&[]), INST);
            c.decode_buffered(BodyKind::Json, related(n).as_bytes(), 1 << 20);
            assert_eq!(matches!(c.slots[0], Slot::Prepared(_)), ok, "{n}");
        }
    }

    #[test]
    fn the_item_limit_stops_reading_a_body() {
        let array = format!("[{}1]", "1,".repeat(100_000));
        let ndjson = "{}\n".repeat(100_000);
        for body in [array, ndjson] {
            let mut c = Collector::new(publisher(&[]), INST).with_max_items(10);
            c.decode_buffered(BodyKind::Json, body.as_bytes(), 1 << 20);
            assert!(c.too_many);
            assert_eq!(c.slots.len(), 10, "nothing past the limit is kept");
        }
        let mut c = Collector::new(publisher(&[]), INST).with_max_items(2);
        let two = format!("[{},{}]", bare("198.51.100.1", 0), bare("198.51.100.2", 0));
        c.decode_buffered(BodyKind::Json, two.as_bytes(), 1 << 20);
        assert!(!c.too_many);
        assert_eq!(c.items.len(), 2);
        // A broken array is one error for the body, nothing taken.
        let mut c = Collector::new(publisher(&[]), INST);
        let broken = format!("[{},", bare("198.51.100.1", 0));
        assert!(c.decode_buffered(BodyKind::Json, broken.as_bytes(), 1 << 20));
        assert!(c.items.is_empty());
        assert_eq!(c.slots.len(), 1);
    }

    #[test]
    fn content_types() {
        use BodyKind::*;
        assert_eq!(
            BodyKind::from_content_type(Some("application/x-ndjson; charset=utf-8")),
            NdJson
        );
        assert_eq!(
            BodyKind::from_content_type(Some("application/json; charset=utf-8")),
            Json
        );
        assert_eq!(BodyKind::from_content_type(None), Json);
        assert_eq!(
            BodyKind::from_content_type(Some("application/x-www-form-urlencoded")),
            Form
        );
    }

    #[test]
    fn bare_event_is_wrapped_tagged_and_content_keyed() {
        let mut c = Collector::new(publisher(&["feed:rest"]), INST);
        let single = c.decode_buffered(
            BodyKind::Json,
            br#"{"source.ip": "198.51.100.1", "tlp": "GREEN", "raw": "eA=="}"#,
            1024,
        );
        assert!(single);
        assert_eq!(c.items.len(), 1);
        let p = &c.items[0];
        assert!(p.content_key.is_some());
        assert_eq!(p.org, Some(ORG));
        assert_eq!(p.tags, vec!["feed:rest".to_owned()]);
        let e = decode_log(&p.record).expect("record");
        assert_eq!(e.tlp, Some(Tlp::Green));
        assert_eq!(e.format_type, "intelmq/event");
        assert!(e.has_payload() && e.flags & FLAG_WRAPPED != 0);
        let m = Message::from_slice(e.json).expect("stored envelope parses");
        assert_eq!(m.meta.as_ref().map(|m| m.uuid_instance), Some(Some(INST)));

        // The same content keys alike; another org's copy does not.
        let mut c2 = Collector::new(publisher(&[]), INST);
        c2.decode_buffered(
            BodyKind::Json,
            br#"{"raw": "eA==", "tlp": "GREEN", "source.ip": "198.51.100.1", "__type": "Event"}"#,
            1024,
        );
        assert_eq!(c2.items[0].content_key, p.content_key);
        let msg = Message::from_slice(e.json).expect("parses");
        assert_ne!(
            content_key(Uuid::from_u128(1), &msg),
            content_key(ORG, &msg)
        );
    }

    #[test]
    fn arrays_ndjson_fallback_and_forms() {
        let mut c = Collector::new(publisher(&[]), INST);
        let single = c.decode_buffered(
            BodyKind::Json,
            b"[{\"source.ip\":\"198.51.100.1\"}, 5, {\"source.ip\":\"198.51.100.2\"}]",
            1024,
        );
        assert!(!single);
        assert_eq!((c.len(), c.items.len()), (3, 2));
        assert!(matches!(c.slots[1], Slot::Invalid(_)));

        let mut c = Collector::new(publisher(&[]), INST);
        c.decode_buffered(
            BodyKind::Json,
            b"{\"source.ip\":\"198.51.100.1\"}\n{\"source.ip\":\"198.51.100.2\"}\n",
            1024,
        );
        assert_eq!(c.items.len(), 2, "ND-JSON labelled application/json");

        let mut c = Collector::new(publisher(&[]), INST);
        let body =
            include_bytes!("../tests/data/restapi_output_request_basic_auth_use_json_false.http");
        let form = body
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| &body[p + 4..])
            .or_else(|| {
                body.windows(2)
                    .position(|w| w == b"\n\n")
                    .map(|p| &body[p + 2..])
            })
            .expect("sample has a body");
        c.decode_buffered(BodyKind::Json, form, 1 << 20);
        assert_eq!(c.items.len(), 1, "{:?}", c.slots);
        let e = decode_log(&c.items[0].record).expect("record");
        let m = Message::from_slice(e.json).expect("parses");
        let payload = m.payload.expect("payload");
        assert_eq!(payload["source.ip"], "198.51.100.1");
        assert_eq!(
            payload["comment"].as_str().map(|s| s.contains('ä')),
            Some(true)
        );

        let mut c = Collector::new(publisher(&[]), INST);
        assert!(c.decode_buffered(BodyKind::Json, b"not json at all", 1024));
        assert!(matches!(c.slots[0], Slot::Invalid(_)));
    }

    #[test]
    fn foreign_org_and_unpublished_feed_are_refused() {
        let mut c = Collector::new(publisher(&[]), INST);
        let other = Uuid::from_u128(99);
        let body = format!(
            "{{\"format\":\"intelmq\",\"version\":1,\"type\":\"event\",\"meta\":{{\"uuid\":\"{}\",\"uuid_org\":\"{other}\"}},\"payload\":{{\"raw\":\"\"}}}}\n{{\"format\":\"ail\",\"version\":1,\"type\":\"item\",\"meta\":{{\"uuid\":\"{}\"}},\"payload\":{{\"raw\":\"\"}}}}\n",
            Uuid::new_v4(),
            Uuid::new_v4()
        );
        let mut r = NdjsonReader::new(4096);
        r.push(body.as_bytes());
        c.drain(&mut r);
        c.finish(r);
        assert_eq!(c.refused.len(), 2, "{:?}", c.refused);
        assert!(c.refused[0].reason.contains("uuid_org"));
        assert!(c.refused[1].reason.contains("ail/item"));
        assert!(c.items.is_empty());
    }

    #[test]
    fn envelope_without_meta_gets_uuid_and_content_key() {
        let mut c = Collector::new(publisher(&[]), INST);
        c.decode_buffered(
            BodyKind::Json,
            br#"{"format":"intelmq","version":2,"type":"event","payload":{"raw":"eA=="}}"#,
            1024,
        );
        let p = &c.items[0];
        assert!(p.content_key.is_some());
        assert_eq!(p.uuid.get_version_num(), 4);
    }
}
