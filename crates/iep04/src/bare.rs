//! Bare IntelMQ events: wrapping them on input, exporting them on output.
//!
//! IntelMQ 3.x has no envelope: its bots send a flat event object, with `"__type": "Event"`
//! on its pipeline and without it from the TCP and REST outputs. A receiver wraps such an
//! event into a message with a fresh UUIDv4 and its own organisation ([`Message::wrap_bare`],
//! [`Receiver`]); exporting goes the other way ([`Message::to_bare_event`], the behaviour of
//! IntelMQ's `message_with_type`).

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::envelope::{parse_envelope, ENVELOPE_KEYS};
use crate::error::{Error, Result};
use crate::model::{Message, Meta, DEFAULT_VERSION, FORMAT_INTELMQ};

/// The key IntelMQ uses for the message type inside a bare event.
pub const TYPE_KEY: &str = "__type";

/// How a decoded message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The decided envelope form.
    Envelope,
    /// An older envelope shape (seed, variant A, AIL-A, variant B), normalised.
    Legacy,
    /// A bare IntelMQ event, wrapped here with a fresh uuid. Such events have no stable id:
    /// de-duplicate them by [`content_hash`](crate::content_hash) instead.
    Bare,
}

/// A decoded message and the shape it arrived in.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The message, in the one model.
    pub message: Message,
    /// How it arrived.
    pub shape: Shape,
}

/// The receiving side's identity, used to wrap bare events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receiver {
    /// This organisation's uuid, set as `meta.uuid_org` of wrapped events.
    pub uuid_org: Uuid,
    /// This instance's uuid, set as `meta.uuid_instance` of wrapped events.
    pub uuid_instance: Option<Uuid>,
}

impl Receiver {
    /// A receiver for the given organisation and instance.
    pub fn new(uuid_org: Uuid, uuid_instance: Option<Uuid>) -> Self {
        Receiver {
            uuid_org,
            uuid_instance,
        }
    }

    /// Decodes one message from JSON bytes: an envelope (any accepted shape) or a bare IntelMQ
    /// event, which is wrapped.
    pub fn decode(&self, bytes: &[u8]) -> Result<Decoded> {
        let value: Value = serde_json::from_slice(bytes).map_err(Error::Json)?;
        self.decode_value(value)
    }

    /// Decodes one message from a JSON value; see [`Receiver::decode`].
    ///
    /// An object is taken as an envelope when it has any of `format`, `version`, `type`,
    /// `meta`, `payload` (none of which is an IntelMQ field name) or is empty; otherwise it is
    /// a bare event.
    pub fn decode_value(&self, value: Value) -> Result<Decoded> {
        let Value::Object(obj) = value else {
            return Err(Error::wrong_type("$", "a JSON object"));
        };
        if obj.is_empty() || ENVELOPE_KEYS.iter().any(|k| obj.contains_key(*k)) {
            let (message, legacy) = parse_envelope(obj)?;
            let shape = if legacy {
                Shape::Legacy
            } else {
                Shape::Envelope
            };
            Ok(Decoded { message, shape })
        } else {
            let message = Message::wrap_bare(obj, self.uuid_org, self.uuid_instance)?;
            Ok(Decoded {
                message,
                shape: Shape::Bare,
            })
        }
    }
}

impl Message {
    /// Wraps a bare IntelMQ event in an envelope with a fresh UUIDv4, the given organisation
    /// and instance, format `intelmq`, version [`DEFAULT_VERSION`], and type taken from
    /// `__type` (`Event` → `event`, `Report` → `report`; `event` when absent). `__type` is
    /// removed from the payload.
    ///
    /// ```
    /// use sighthub_iep04::Message;
    /// use serde_json::json;
    /// let org = uuid::Uuid::from_u128(1);
    /// let ev = json!({"source.ip": "198.51.100.1", "__type": "Event"});
    /// let msg = Message::wrap_bare(ev.as_object().unwrap().clone(), org, None).unwrap();
    /// assert_eq!(msg.kind, "event");
    /// assert_eq!(msg.meta.as_ref().unwrap().uuid_org, Some(org));
    /// assert!(!msg.payload.as_ref().unwrap().contains_key("__type"));
    /// ```
    pub fn wrap_bare(
        event: Map<String, Value>,
        uuid_org: Uuid,
        uuid_instance: Option<Uuid>,
    ) -> Result<Self> {
        Self::wrap_bare_with_uuid(event, Uuid::new_v4(), uuid_org, uuid_instance)
    }

    /// [`Message::wrap_bare`] with a caller-chosen message uuid (for tests, or a uuid derived
    /// elsewhere). A nil uuid is refused (`meta.uuid: nil UUID`), as on parsing.
    pub fn wrap_bare_with_uuid(
        mut event: Map<String, Value>,
        uuid: Uuid,
        uuid_org: Uuid,
        uuid_instance: Option<Uuid>,
    ) -> Result<Self> {
        if uuid.is_nil() {
            return Err(Error::invalid("meta.uuid", "nil UUID"));
        }
        let kind = match event.shift_remove(TYPE_KEY) {
            None | Some(Value::Null) => "event".to_owned(),
            Some(Value::String(t)) if t.eq_ignore_ascii_case("event") => "event".to_owned(),
            Some(Value::String(t)) if t.eq_ignore_ascii_case("report") => "report".to_owned(),
            Some(Value::String(_)) => {
                return Err(Error::invalid(TYPE_KEY, "expected \"Event\" or \"Report\""))
            }
            Some(_) => return Err(Error::wrong_type(TYPE_KEY, "a string")),
        };
        let mut meta = Meta::new(uuid);
        meta.uuid_org = Some(uuid_org);
        meta.uuid_instance = uuid_instance;
        Ok(Message {
            format: FORMAT_INTELMQ.to_owned(),
            version: DEFAULT_VERSION,
            kind,
            meta: Some(meta),
            payload: Some(event),
            extensions: Map::new(),
        })
    }

    /// Exports the payload as a bare IntelMQ event (the backward-compatible, meta-less form).
    /// With `with_type`, appends `__type` (`event` → `Event`) last, as IntelMQ's
    /// `message_with_type` does. Refused for a format other than `intelmq`
    /// (`format: …`) and for a message without payload (`payload: missing`).
    pub fn to_bare_event(&self, with_type: bool) -> Result<Map<String, Value>> {
        if self.format != FORMAT_INTELMQ {
            return Err(Error::invalid(
                "format",
                format!(
                    "{:?} cannot be exported as a bare IntelMQ event",
                    self.format
                ),
            ));
        }
        let Some(payload) = &self.payload else {
            return Err(Error::missing("payload"));
        };
        let mut event = payload.clone();
        event.shift_remove(TYPE_KEY);
        if with_type {
            event.insert(
                TYPE_KEY.into(),
                Value::String(intelmq_type_name(&self.kind)),
            );
        }
        Ok(event)
    }
}

/// `event` → `Event`: IntelMQ's class-name spelling of a type.
fn intelmq_type_name(kind: &str) -> String {
    let mut chars = kind.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    const ORG: Uuid = Uuid::from_u128(0x28bc3db3_16da_461c_b20b_b944f4058708);
    const INST: Uuid = Uuid::from_u128(0x03c51929_eeab_4d47_9dc0_c667f94c7d2c);

    #[test]
    fn bare_event_is_wrapped_with_v4_and_receiver_org() {
        let rx = Receiver::new(ORG, Some(INST));
        let d = rx
            .decode(br#"{"source.ip": "198.51.100.1", "raw": "eA==", "__type": "Event"}"#)
            .unwrap();
        assert_eq!(d.shape, Shape::Bare);
        let meta = d.message.meta.as_ref().unwrap();
        assert_eq!(meta.uuid.get_version_num(), 4);
        assert_eq!(meta.uuid_org, Some(ORG));
        assert_eq!(meta.uuid_instance, Some(INST));
        assert_eq!(d.message.format, "intelmq");
        assert_eq!(
            d.message.payload,
            Some(obj(json!({"source.ip": "198.51.100.1", "raw": "eA=="})))
        );
        let again = rx.decode(br#"{"source.ip": "198.51.100.1"}"#).unwrap();
        assert_ne!(
            again.message.uuid(),
            d.message.uuid(),
            "fresh uuid each time"
        );
    }

    #[test]
    fn report_type_and_bad_type() {
        let m =
            Message::wrap_bare(obj(json!({"raw": "eA==", "__type": "Report"})), ORG, None).unwrap();
        assert_eq!(m.kind, "report");
        let e =
            Message::wrap_bare(obj(json!({"__type": "Foo", "raw": ""})), ORG, None).unwrap_err();
        assert_eq!(e.to_string(), "__type: expected \"Event\" or \"Report\"");
        let e = Message::wrap_bare(obj(json!({"__type": 1})), ORG, None).unwrap_err();
        assert_eq!(e.field(), Some("__type"));
        let e = Message::wrap_bare_with_uuid(Map::new(), Uuid::nil(), ORG, None).unwrap_err();
        assert_eq!(e.to_string(), "meta.uuid: nil UUID");
        let id = Uuid::from_u128(42);
        let m = Message::wrap_bare_with_uuid(Map::new(), id, ORG, None).unwrap();
        assert_eq!(m.uuid(), Some(id));
    }

    #[test]
    fn decode_tells_envelope_from_legacy_and_refuses_non_objects() {
        let rx = Receiver::new(ORG, None);
        let d = rx
            .decode(br#"{"format":"intelmq","version":1,"type":"event"}"#)
            .unwrap();
        assert_eq!(d.shape, Shape::Envelope);
        let d = rx
            .decode(
                br#"{"meta":{"version":1,"type":"event","format":"intelmq",
                    "uuid":{"current":"03c51929-eeab-4d47-9dc0-c667f94c7d2c"}}}"#,
            )
            .unwrap();
        assert_eq!(d.shape, Shape::Legacy);
        assert_eq!(rx.decode(b"{}").unwrap_err().to_string(), "format: missing");
        assert_eq!(rx.decode(b"[]").unwrap_err().field(), Some("$"));
        assert!(matches!(rx.decode(b"\xff"), Err(Error::Json(_))));
    }

    #[test]
    fn export_bare_with_and_without_type() {
        let ev = obj(json!({"source.ip": "198.51.100.1", "__type": "Event", "tlp": "AMBER"}));
        let msg = Message::wrap_bare(ev, ORG, None).unwrap();
        let plain = msg.to_bare_event(false).unwrap();
        assert_eq!(
            Value::Object(plain),
            json!({"source.ip": "198.51.100.1", "tlp": "AMBER"})
        );
        let typed = msg.to_bare_event(true).unwrap();
        assert_eq!(typed.keys().next_back().map(String::as_str), Some("__type"));
        assert_eq!(typed["__type"], json!("Event"));

        let mut no_payload = msg.clone();
        no_payload.payload = None;
        assert_eq!(
            no_payload.to_bare_event(false).unwrap_err().to_string(),
            "payload: missing"
        );
        let mut ail = msg;
        ail.format = "ail".into();
        assert_eq!(
            ail.to_bare_event(false).unwrap_err().field(),
            Some("format")
        );
    }
}
