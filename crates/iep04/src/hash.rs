//! Content hash for de-duplicating bare events that carry no uuid (IEP04 use case 5).
//!
//! IntelMQ's TCP output resends an event until it gets `Ok`, so the same event can arrive
//! several times, each wrapped with a different fresh uuid. The hash is SHA-256 over the
//! event's canonical JSON: object keys sorted by code point at every depth, no whitespace,
//! strings as serde_json writes them (UTF-8, minimal escapes), numbers as serde_json writes
//! them. `__type` is left out at the top level, so the pipeline form (with `__type`, keys in
//! insertion order, ASCII-escaped) and the TCP output form (sorted, UTF-8, no `__type`) of
//! one event hash alike. Numbers keep their JSON type: `80` and `80.0` differ.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::bare::TYPE_KEY;
use crate::model::Message;

/// A SHA-256 content hash. Displays as 64 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Hash of a bare event (or any payload object), ignoring a top-level `__type`.
pub fn content_hash(event: &Map<String, Value>) -> ContentHash {
    content_hash_with(event, &mut Vec::new())
}

/// [`content_hash`] with `buf` as scratch space for the canonical text, reused across calls
/// (the exchange hashes every published event).
pub fn content_hash_with(event: &Map<String, Value>, buf: &mut Vec<u8>) -> ContentHash {
    buf.clear();
    write_object(buf, event, true);
    ContentHash(Sha256::digest(buf.as_slice()).into())
}

/// Canonical JSON text of a value: keys sorted at every depth, no whitespace.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::new();
    write_value(&mut out, value);
    // serde_json writes UTF-8; the fallback is never taken and loses nothing.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl Message {
    /// [`content_hash`] of the payload (of an empty object when there is none). Envelope and
    /// meta are not included, so a bare event and the same event wrapped hash alike.
    pub fn content_hash(&self) -> ContentHash {
        self.content_hash_with(&mut Vec::new())
    }

    /// [`Message::content_hash`] with reused scratch space ([`content_hash_with`]).
    pub fn content_hash_with(&self, buf: &mut Vec<u8>) -> ContentHash {
        match &self.payload {
            Some(p) => content_hash_with(p, buf),
            None => content_hash_with(&Map::new(), buf),
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
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
        // Scalars: serde_json's own writer is the canonical form.
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
    use serde_json::json;

    fn obj(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).expect("test JSON object")
    }

    #[test]
    fn order_escaping_and_type_do_not_matter() {
        let pipeline = obj(
            r#"{"b": 1, "comment": "\u00e4", "a": {"y": [1, {"d": 2, "c": 3}], "x": null}, "__type": "Event"}"#,
        );
        let tcp = obj(r#"{"a": {"x": null, "y": [1, {"c": 3, "d": 2}]}, "b": 1, "comment": "ä"}"#);
        assert_eq!(content_hash(&pipeline), content_hash(&tcp));
        assert_eq!(
            canonical_json(&Value::Object(tcp)),
            r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1,"comment":"ä"}"#
        );
    }

    #[test]
    fn content_differences_matter() {
        assert_ne!(
            content_hash(&obj(r#"{"p": 80}"#)),
            content_hash(&obj(r#"{"p": 80.0}"#))
        );
        assert_ne!(
            content_hash(&obj(r#"{"p": 80}"#)),
            content_hash(&obj(r#"{"p": "80"}"#))
        );
        // __type is only ignored at the top level.
        assert_ne!(
            content_hash(&obj(r#"{"x": {"__type": 1}}"#)),
            content_hash(&obj(r#"{"x": {}}"#))
        );
    }

    #[test]
    fn stable_value_and_hex() {
        let h = content_hash(&Map::new());
        // SHA-256 of "{}".
        assert_eq!(
            h.to_hex(),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(h.as_bytes().len(), 32);
        let msg = crate::Message::new("intelmq", "event");
        assert_eq!(msg.content_hash(), h);
        assert_eq!(canonical_json(&json!("é\n")), "\"é\\n\"");
    }
}
