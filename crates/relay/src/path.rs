//! The `sighthub:path` meta field: the instances a relayed message has crossed.
//!
//! Wire format: `meta["sighthub:path"]` is a JSON array of instance uuids (strings, hyphenated
//! lowercase), oldest first; the last element is the instance the message came from. The
//! originating instance does not add itself until it sends: a message published locally has
//! no path, and the sender appends its own instance uuid to each copy it sends.
//!
//! ```json
//! {"format":"intelmq","version":1,"type":"event",
//!  "meta":{"uuid":"…","uuid_org":"…","sighthub:path":["<instance A>","<instance B>"]},
//!  "payload":{…}}
//! ```
//!
//! An instance never sends a message to an instance on its path (that includes where it came
//! from); `meta.uuid` is never changed, so a receiver that already has it answers `duplicate`.
//! Entries that are not uuids are kept on the wire but ignored.
//!
//! `meta["sighthub:covered"]` (same format, optional) lists instances that the senders so far
//! deliver the message to themselves (each sender adds the peers its own cursors will send it
//! to): a receiver does not send it there either. It only saves copies; the path alone breaks
//! loops. Turned off with `[relay] covered = false`.

use serde_json::{Map, Value};
use uuid::Uuid;

/// The meta key of the path.
pub const PATH_KEY: &str = "sighthub:path";

/// The meta key of the instances the senders deliver to themselves.
pub const COVERED_KEY: &str = "sighthub:covered";

/// A parsed envelope with its path.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The envelope.
    pub envelope: Map<String, Value>,
    /// The instances it crossed, oldest first.
    pub path: Vec<Uuid>,
    /// Instances earlier senders deliver it to.
    pub covered: Vec<Uuid>,
}

impl Routed {
    /// Parses an envelope (one JSON object). `None` when it is not an object.
    pub fn parse(json: &[u8]) -> Option<Routed> {
        serde_json::from_slice(json)
            .ok()
            .and_then(Routed::from_value)
    }

    /// From an already parsed envelope.
    pub fn from_value(v: Value) -> Option<Routed> {
        match v {
            Value::Object(envelope) => {
                let (path, covered) = (
                    list_of(&envelope, PATH_KEY),
                    list_of(&envelope, COVERED_KEY),
                );
                Some(Routed {
                    envelope,
                    path,
                    covered,
                })
            }
            _ => None,
        }
    }

    /// Has it crossed `instance`?
    pub fn crossed(&self, instance: &Uuid) -> bool {
        self.path.contains(instance)
    }

    /// The instance it came from (last on the path).
    pub fn came_from(&self) -> Option<Uuid> {
        self.path.last().copied()
    }

    /// The envelope with `hop` appended to its path, serialised (one line, no newline).
    /// Idempotent when `hop` is already last.
    pub fn with_hop(&self, hop: Uuid) -> Vec<u8> {
        let mut env = self.envelope.clone();
        push_hop(&mut env, hop);
        serde_json::to_vec(&env).unwrap_or_default()
    }

    /// Will an earlier sender deliver it to `instance`?
    pub fn covers(&self, instance: &Uuid) -> bool {
        self.covered.contains(instance)
    }

    /// Like [`Routed::with_hop`], and `meta["sighthub:covered"]` set to `covered` (removed
    /// when empty).
    pub fn with_hop_covering(&self, hop: Uuid, covered: &[Uuid]) -> Vec<u8> {
        let mut env = self.envelope.clone();
        push_hop(&mut env, hop);
        if let Some(Value::Object(meta)) = env.get_mut("meta") {
            if covered.is_empty() {
                meta.remove(COVERED_KEY);
            } else {
                let list = covered.iter().map(|u| Value::String(u.to_string()));
                meta.insert(COVERED_KEY.into(), Value::Array(list.collect()));
            }
        }
        serde_json::to_vec(&env).unwrap_or_default()
    }

    /// Appends `hop` in place (to the envelope and the parsed path).
    pub fn push(&mut self, hop: Uuid) {
        if self.path.last() != Some(&hop) {
            self.path.push(hop);
        }
        push_hop(&mut self.envelope, hop);
    }
}

fn list_of(env: &Map<String, Value>, key: &str) -> Vec<Uuid> {
    env.get("meta")
        .and_then(|m| m.get(key))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn push_hop(env: &mut Map<String, Value>, hop: Uuid) {
    let meta = env
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else { return };
    let path = meta
        .entry(PATH_KEY)
        .or_insert_with(|| Value::Array(Vec::new()));
    if !path.is_array() {
        *path = Value::Array(Vec::new());
    }
    if let Value::Array(a) = path {
        let s = hop.to_string();
        if a.last().and_then(Value::as_str) != Some(s.as_str()) {
            a.push(Value::String(s));
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn path_round_trip() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let json = br#"{"format":"intelmq","version":1,"type":"event","meta":{"uuid":"03c51929-eeab-4d47-9dc0-c667f94c7d2c"},"payload":{"raw":"eA=="}}"#;
        let r = Routed::parse(json).expect("object");
        assert!(r.path.is_empty() && r.came_from().is_none());
        let sent = r.with_hop(a);
        let r2 = Routed::parse(&sent).expect("object");
        assert_eq!(r2.path, vec![a]);
        assert_eq!(r2.came_from(), Some(a));
        assert_eq!(
            r2.envelope["meta"]["uuid"],
            "03c51929-eeab-4d47-9dc0-c667f94c7d2c"
        );
        let r3 = Routed::parse(&r2.with_hop(b)).expect("object");
        assert_eq!(r3.path, vec![a, b]);
        assert!(r3.crossed(&a) && r3.crossed(&b) && !r3.crossed(&Uuid::new_v4()));
        // Idempotent for the last hop; survives a garbage path; keeps key order of meta.
        assert_eq!(
            Routed::parse(&r3.with_hop(b)).expect("obj").path,
            vec![a, b]
        );
        let odd = br#"{"meta":{"uuid":"x","sighthub:path":"nope"}}"#;
        let r4 = Routed::parse(odd).expect("object");
        assert!(r4.path.is_empty());
        assert_eq!(Routed::parse(&r4.with_hop(a)).expect("obj").path, vec![a]);
        assert!(Routed::parse(b"[1]").is_none());
        let mut m = Routed::parse(br#"{"format":"x"}"#).expect("object");
        m.push(a);
        m.push(a);
        assert_eq!(m.path, vec![a]);
        let c = Routed::parse(&m.with_hop_covering(b, &[a, b])).expect("obj");
        assert_eq!(
            (c.path.clone(), c.covered.clone()),
            (vec![a, b], vec![a, b])
        );
        assert!(c.covers(&a) && !c.covers(&Uuid::new_v4()));
        let c = Routed::parse(&c.with_hop_covering(a, &[])).expect("obj");
        assert!(c.covered.is_empty() && c.envelope["meta"].get(COVERED_KEY).is_none());
        assert_eq!(
            m.envelope["meta"][PATH_KEY].as_array().map(Vec::len),
            Some(1)
        );
    }
}
