//! MISP's ZeroMQ frames: `<topic> <json>`, one frame per message (MISP's `mispzmq`).
//!
//! [`decode`] takes the frame's bytes (untrusted: whatever the publisher sends) and gives the
//! attributes of a `misp_json` event (its own and those of its objects) or of a
//! `misp_json_attribute` message, each with the tags it inherits from its event. Other topics
//! are [`Decoded::Ignored`], as are attributes whose message says they were deleted. Anything
//! else is a [`FrameError`]: the caller skips the frame and counts it. The decoder never
//! panics (`fuzz/fuzz_targets/misp_frame.rs`) and allocates at most in proportion to the
//! frame, which the caller bounds first.

use serde_json::{Map, Value};

/// The event topic.
pub const TOPIC_EVENT: &str = "misp_json";
/// The attribute topic.
pub const TOPIC_ATTRIBUTE: &str = "misp_json_attribute";

/// One attribute, as far as sightings need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// MISP's `type` (`ip-dst`, `domain|ip`, …).
    pub kind: String,
    /// The value (`a|b` for composite types).
    pub value: String,
    /// MISP's `to_ids` flag.
    pub to_ids: bool,
    /// The attribute's `timestamp` (unix seconds), else its event's.
    pub timestamp: Option<i64>,
    /// The attribute's tag names, then its event's, each once.
    pub tags: Vec<String>,
}

/// What a frame holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Attributes to record (possibly none: an event without attributes).
    Attributes {
        /// Which topic.
        topic: &'static str,
        /// The attributes, in frame order.
        attributes: Vec<Attribute>,
        /// Entries of the `Attribute` lists that are not attributes (no `type` or `value`).
        skipped: usize,
    },
    /// Another topic, or an attribute message whose `action` is not an addition or edit.
    Ignored,
}

/// Why a frame was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Larger than `[zmq] max_frame_bytes`.
    #[error("frame of {0} bytes is larger than [zmq] max_frame_bytes ({1})")]
    TooLarge(usize, usize),
    /// No space between topic and body.
    #[error("frame is not `<topic> <json>` (no space after the topic)")]
    NoTopic,
    /// The body is not JSON.
    #[error("{topic} body is not JSON: {error}")]
    Json {
        /// The frame's topic.
        topic: &'static str,
        /// serde_json's message (line and column).
        error: String,
    },
    /// The JSON is not the shape MISP publishes.
    #[error("{topic} body has no {expected} object")]
    Shape {
        /// The frame's topic.
        topic: &'static str,
        /// What was missing.
        expected: &'static str,
    },
}

/// Decodes one frame of at most `max_bytes`.
pub fn decode(frame: &[u8], max_bytes: usize) -> Result<Decoded, FrameError> {
    if frame.len() > max_bytes {
        return Err(FrameError::TooLarge(frame.len(), max_bytes));
    }
    let space = frame
        .iter()
        .position(|&b| b == b' ')
        .ok_or(FrameError::NoTopic)?;
    let (topic, body) = (&frame[..space], &frame[space + 1..]);
    let topic = match topic {
        b"misp_json" => TOPIC_EVENT,
        b"misp_json_attribute" => TOPIC_ATTRIBUTE,
        _ => return Ok(Decoded::Ignored),
    };
    let json: Value = serde_json::from_slice(body).map_err(|e| FrameError::Json {
        topic,
        error: e.to_string(),
    })?;
    let shape = |expected| FrameError::Shape { topic, expected };
    let mut out = Vec::new();
    let mut skipped = 0;
    if topic == TOPIC_EVENT {
        let event = json
            .get("Event")
            .and_then(Value::as_object)
            .ok_or(shape("Event"))?;
        let inherited = Inherited::of(Some(event));
        collect(event.get("Attribute"), &inherited, &mut out, &mut skipped);
        for object in list(event.get("Object")) {
            collect(object.get("Attribute"), &inherited, &mut out, &mut skipped);
        }
    } else {
        let attribute = json.get("Attribute").ok_or(shape("Attribute"))?;
        if !attribute.is_object() {
            return Err(shape("Attribute"));
        }
        let action = json.get("action").and_then(Value::as_str).unwrap_or("add");
        if !matches!(action, "add" | "edit") {
            return Ok(Decoded::Ignored);
        }
        let inherited = Inherited::of(json.get("Event").and_then(Value::as_object));
        collect(Some(attribute), &inherited, &mut out, &mut skipped);
    }
    Ok(Decoded::Attributes {
        topic,
        attributes: out,
        skipped,
    })
}

/// What an attribute takes from its event.
struct Inherited {
    tags: Vec<String>,
    timestamp: Option<i64>,
}

impl Inherited {
    fn of(event: Option<&Map<String, Value>>) -> Self {
        Self {
            tags: event.map(|e| tag_names(e.get("Tag"))).unwrap_or_default(),
            timestamp: event
                .and_then(|e| e.get("timestamp"))
                .and_then(unix_seconds),
        }
    }
}

/// The elements of a JSON array (or the one object MISP sometimes sends instead).
fn list(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    let items: &[Value] = match v {
        Some(Value::Array(a)) => a,
        Some(one @ Value::Object(_)) => std::slice::from_ref(one),
        _ => &[],
    };
    items.iter()
}

fn collect(
    attrs: Option<&Value>,
    inherited: &Inherited,
    out: &mut Vec<Attribute>,
    skipped: &mut usize,
) {
    for a in list(attrs) {
        match attribute(a, inherited) {
            Some(a) => out.push(a),
            None => *skipped += 1,
        }
    }
}

fn attribute(a: &Value, inherited: &Inherited) -> Option<Attribute> {
    let kind = a.get("type")?.as_str()?.trim();
    let value = match a.get("value")? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if kind.is_empty() || value.is_empty() {
        return None;
    }
    if a.get("deleted").is_some_and(truthy) {
        return None;
    }
    let mut tags = tag_names(a.get("Tag"));
    for t in &inherited.tags {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    Some(Attribute {
        kind: kind.to_owned(),
        value,
        to_ids: a.get("to_ids").is_some_and(truthy),
        timestamp: a
            .get("timestamp")
            .and_then(unix_seconds)
            .or(inherited.timestamp),
        tags,
    })
}

/// MISP's booleans: `true`, `1`, `"1"`, `"true"`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64().is_some_and(|n| n != 0),
        Value::String(s) => matches!(s.trim(), "1" | "true" | "True"),
        _ => false,
    }
}

/// `"1700000000"` or `1700000000`.
fn unix_seconds(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `[{"name": "tlp:amber"}, …]` → the names, each once.
fn tag_names(v: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in list(v) {
        if let Some(name) = t.get("name").and_then(Value::as_str).map(str::trim) {
            if !name.is_empty() && !out.iter().any(|o| o == name) {
                out.push(name.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;

    const MAX: usize = 1 << 20;

    fn attrs(frame: &str) -> Vec<Attribute> {
        match decode(frame.as_bytes(), MAX).expect("decodes") {
            Decoded::Attributes { attributes, .. } => attributes,
            Decoded::Ignored => panic!("ignored: {frame}"),
        }
    }

    #[test]
    fn an_event_with_objects_and_tags() {
        let frame = r#"misp_json {"Event": {"uuid": "e", "info": "x", "timestamp": "1700000100",
            "Orgc": {"name": "CIRCL", "uuid": "o"}, "Tag": [{"name": "tlp:amber"}, {"name": "apt"}],
            "Attribute": [
              {"uuid": "a1", "type": "ip-dst", "category": "Network activity", "value": "198.51.100.7",
               "to_ids": true, "timestamp": "1700000000", "Tag": [{"name": "c2"}, {"name": "apt"}]},
              {"uuid": "a2", "type": "comment", "value": "hello", "to_ids": false},
              {"uuid": "a3", "type": "domain"}
            ],
            "Object": [{"name": "file", "Attribute": [
              {"type": "sha256", "value": "E3B0", "to_ids": "1", "timestamp": 1700000050}]}]}}"#;
        let got = decode(frame.as_bytes(), MAX).expect("decodes");
        let Decoded::Attributes {
            topic,
            attributes,
            skipped,
        } = got
        else {
            panic!("{got:?}");
        };
        assert_eq!((topic, skipped), (TOPIC_EVENT, 1));
        assert_eq!(attributes.len(), 3);
        assert_eq!(
            attributes[0],
            Attribute {
                kind: "ip-dst".into(),
                value: "198.51.100.7".into(),
                to_ids: true,
                timestamp: Some(1_700_000_000),
                tags: vec!["c2".into(), "apt".into(), "tlp:amber".into()],
            }
        );
        assert!(!attributes[1].to_ids);
        assert_eq!(attributes[1].timestamp, Some(1_700_000_100), "the event's");
        assert_eq!(
            (attributes[2].to_ids, attributes[2].timestamp),
            (true, Some(1_700_000_050))
        );
    }

    #[test]
    fn an_attribute_message() {
        let frame = r#"misp_json_attribute {"Attribute": {"type": "domain|ip", "value": "evil.example|203.0.113.9",
            "to_ids": false, "timestamp": "1700000000"}, "Event": {"Tag": [{"name": "tlp:green"}]}, "action": "add"}"#;
        let a = attrs(frame);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].tags, vec!["tlp:green".to_owned()]);
        let deleted = frame.replace(r#""action": "add""#, r#""action": "delete""#);
        assert_eq!(decode(deleted.as_bytes(), MAX), Ok(Decoded::Ignored));
        let no_action = r#"misp_json_attribute {"Attribute": {"type": "md5", "value": "d41d8cd98f00b204e9800998ecf8427e"}}"#;
        assert_eq!(attrs(no_action)[0].timestamp, None);
    }

    #[test]
    fn other_topics_are_ignored_and_bad_frames_are_errors() {
        for ignored in [
            "misp_json_self {\"uptime\": 1}",
            "misp_json_sighting {}",
            "misp_json_tag x",
        ] {
            assert_eq!(
                decode(ignored.as_bytes(), MAX),
                Ok(Decoded::Ignored),
                "{ignored}"
            );
        }
        assert_eq!(decode(b"misp_json", MAX), Err(FrameError::NoTopic));
        assert!(matches!(
            decode(b"misp_json {not json", MAX),
            Err(FrameError::Json { .. })
        ));
        assert!(matches!(
            decode(b"misp_json []", MAX),
            Err(FrameError::Shape { .. })
        ));
        assert!(matches!(
            decode(b"misp_json_attribute {\"Attribute\": 3}", MAX),
            Err(FrameError::Shape { .. })
        ));
        assert_eq!(
            decode(&[b'x'; 2000], 1024),
            Err(FrameError::TooLarge(2000, 1024))
        );
        let e = decode(b"misp_json {not json", MAX)
            .expect_err("json")
            .to_string();
        assert!(e.starts_with("misp_json body is not JSON"), "{e}");
    }
}
