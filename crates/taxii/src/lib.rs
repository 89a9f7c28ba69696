//! # sighthub-taxii
//!
//! TAXII 2.1 over the exchange's log, read-only: what the `/taxii2/` routes of the edge
//! (`api::cmd::taxii`) serve, without HTTP.
//!
//! - **Collections** ([`collections`]): one per feed a key may read (its exchange grant's
//!   `read` list), each with a stable id (UUIDv5 of the feed), reading what that feed selects
//!   up to the key's TLP ceiling, through the exchange's one reader of the log.
//! - **Objects** ([`event_objects`]): an IntelMQ event becomes STIX 2.1 objects — the cyber
//!   observables it names (IPv4/IPv6 addresses, domain names, URLs, file hashes) with their
//!   deterministic ids (STIX 2.1 §2.9, UUIDv5 of the id-contributing properties), an
//!   `observed-data` over them, an `indicator` whose pattern matches any of them, a
//!   `sighting` of the indicator by the publishing organisation, and that organisation's
//!   `identity`. The ids of the SDOs and SROs are UUIDv5 of the message uuid, so the same
//!   message always gives the same objects (on every hub, after every restart).
//! - **Withdrawals** ([`revoked_indicator`]): a message withdrawing another one (the IEP04
//!   authority rule, `ExchangeStore::effects`) gives, at its own position in the log, a new
//!   version of the withdrawn message's indicator with `revoked: true`.
//! - **Paging**: `next` is the exchange's log cursor, never a timestamp, so objects sharing a
//!   `date_added` (every object of a message, and messages accepted in the same second) are
//!   never skipped; `added_after` only chooses where a first request starts.

use serde_json::{json, Map, Value};
use sighthub_exchange::{Feed, Grants};
use sighthub_iep04::{Message, Tlp};
use uuid::Uuid;

/// The TAXII media type.
pub const TAXII_MEDIA_TYPE: &str = "application/taxii+json;version=2.1";
/// The STIX media type of the objects.
pub const STIX_MEDIA_TYPE: &str = "application/stix+json;version=2.1";
/// Default and largest `limit` (objects per page).
pub const LIMITS: (usize, usize) = (100, 1000);

/// STIX 2.1's namespace for deterministic cyber-observable ids (§2.9).
const STIX_SCO_NAMESPACE: Uuid = Uuid::from_u128(0x00ab_edb4_aa42_466c_9c01_fed2_3315_a9b7);
/// sighthub's namespace for the ids of the objects it derives from a message.
const SIGHTHUB_NAMESPACE: Uuid = Uuid::from_u128(0x6d2f_1c8e_43a7_4b5e_9f0d_2a61_c7b3_e915);

/// One collection a key may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// Stable id (UUIDv5 of the feed's text).
    pub id: Uuid,
    /// The feed, as written in the key's grant.
    pub feed: String,
    /// What it reads, as the exchange's read grants: that one feed, up to the key's TLP.
    pub grants: Grants,
}

fn feed_text(f: &Feed) -> String {
    match f {
        Feed::All => "*".to_owned(),
        Feed::Type(t) => t.clone(),
        Feed::Tag(t) => format!("tag:{t}"),
    }
}

/// The collections of a key: one per feed it may read (an admin key reads everything: one
/// collection, `*`).
pub fn collections(g: &Grants) -> Vec<Collection> {
    let (feeds, tlp) = if g.admin {
        (vec![Feed::All], Tlp::Red)
    } else {
        (g.read.clone(), g.tlp_max)
    };
    feeds
        .into_iter()
        .map(|f| {
            let text = feed_text(&f);
            Collection {
                id: Uuid::new_v5(&SIGHTHUB_NAMESPACE, format!("collection/{text}").as_bytes()),
                grants: Grants::reader(g.org, vec![f], tlp),
                feed: text,
            }
        })
        .collect()
}

/// The collection resource (`GET …/collections/{id}/`).
pub fn collection_json(c: &Collection) -> Value {
    json!({
        "id": c.id.to_string(),
        "title": format!("IEP04 feed {}", c.feed),
        "description": format!(
            "IntelMQ events of the exchange log in the feed `{}` readable by this key, as STIX 2.1",
            c.feed
        ),
        "can_read": true,
        "can_write": false,
        "media_types": [STIX_MEDIA_TYPE],
    })
}

/// A STIX/TAXII timestamp (RFC 3339, UTC, milliseconds) of unix seconds: the STIX crate's
/// one writer of STIX timestamps.
pub fn timestamp(secs: u64) -> String {
    sighthub_stix::vocab::rfc3339(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Reads an `added_after` timestamp (RFC 3339) as unix seconds (fractions are dropped:
/// `date_added` has whole seconds).
pub fn parse_timestamp(s: &str) -> Option<u64> {
    sighthub_stix::vocab::parse_rfc3339(s).and_then(|t| u64::try_from(t).ok())
}

fn derived(kind: &str, uuid: &Uuid) -> String {
    format!(
        "{kind}--{}",
        Uuid::new_v5(&SIGHTHUB_NAMESPACE, format!("{kind}/{uuid}").as_bytes())
    )
}

fn identity_id(org: &Uuid) -> String {
    derived("identity", org)
}

/// The `identity` of an organisation: one version only (its timestamps are fixed), so that
/// every message of an organisation carries the same object.
pub fn identity(org: &Uuid) -> Value {
    let ts = timestamp(0);
    json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id(org),
        "created": ts,
        "modified": ts,
        "name": format!("organisation {org}"),
        "identity_class": "organization",
    })
}

/// One observable of an event: its SCO and the pattern comparison that matches it.
struct Observable {
    sco: Value,
    comparison: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\'', "\\'")
}

fn sco(kind: &str, contributing: Value, mut body: Map<String, Value>) -> Value {
    // STIX 2.1 §2.9: UUIDv5 of the canonical JSON of the id-contributing properties.
    let id = Uuid::new_v5(&STIX_SCO_NAMESPACE, contributing.to_string().as_bytes());
    body.insert("type".into(), json!(kind));
    body.insert("spec_version".into(), json!("2.1"));
    body.insert("id".into(), json!(format!("{kind}--{id}")));
    Value::Object(body)
}

fn value_sco(kind: &str, value: &str) -> Observable {
    let mut body = Map::new();
    body.insert("value".into(), json!(value));
    Observable {
        sco: sco(kind, json!({ "value": value }), body),
        comparison: format!("{kind}:value = '{}'", escape(value)),
    }
}

fn observables(payload: &Map<String, Value>) -> Vec<Observable> {
    let text = |k: &str| {
        payload
            .get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let mut out = Vec::new();
    for side in ["source", "destination"] {
        if let Some(ip) = text(&format!("{side}.ip")) {
            if let Ok(addr) = ip.parse::<std::net::IpAddr>() {
                let kind = if addr.is_ipv4() {
                    "ipv4-addr"
                } else {
                    "ipv6-addr"
                };
                out.push(value_sco(kind, &addr.to_string()));
            }
        }
        if let Some(fqdn) = text(&format!("{side}.fqdn")) {
            out.push(value_sco("domain-name", fqdn));
        }
        if let Some(url) = text(&format!("{side}.url")) {
            out.push(value_sco("url", url));
        }
    }
    let mut hashes = Map::new();
    for (field, name) in [
        ("malware.hash.md5", "MD5"),
        ("malware.hash.sha1", "SHA-1"),
        ("malware.hash.sha256", "SHA-256"),
    ] {
        if let Some(h) = text(field).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit())) {
            hashes.insert(name.into(), json!(h.to_ascii_lowercase()));
        }
    }
    if !hashes.is_empty() {
        let comparison = hashes
            .iter()
            .map(|(k, v)| format!("file:hashes.'{k}' = '{}'", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" OR ");
        // The id contributes one hash, the strongest (§2.9: hashes in a fixed preference).
        let best = ["SHA-256", "SHA-1", "MD5"]
            .iter()
            .find_map(|k| hashes.get(*k).map(|v| (*k, v.clone())));
        let contributing = best.map_or(json!({}), |(k, v)| json!({ "hashes": { k: v } }));
        let mut body = Map::new();
        body.insert("hashes".into(), Value::Object(hashes));
        out.push(Observable {
            sco: sco("file", contributing, body),
            comparison,
        });
    }
    // The same observable named twice (source and destination) is one object.
    let mut seen = std::collections::HashSet::new();
    out.retain(|o| seen.insert(o.sco["id"].to_string()));
    out
}

fn indicator(
    msg_uuid: &Uuid,
    org: &Uuid,
    obs: &[Observable],
    payload: &Map<String, Value>,
    at: u64,
) -> Value {
    let ts = timestamp(at);
    let pattern = obs
        .iter()
        .map(|o| format!("[{}]", o.comparison))
        .collect::<Vec<_>>()
        .join(" OR ");
    let name = payload
        .get("classification.type")
        .and_then(Value::as_str)
        .unwrap_or("IntelMQ event");
    let mut v = json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": derived("indicator", msg_uuid),
        "created_by_ref": identity_id(org),
        "created": ts,
        "modified": ts,
        "name": name,
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": ts,
        "indicator_types": ["malicious-activity"],
    });
    if let Some(feed) = payload.get("feed.name").and_then(Value::as_str) {
        v["description"] = json!(format!("IntelMQ feed {feed}"));
    }
    v
}

/// The STIX objects of one exchanged IntelMQ event (see the crate docs), `accepted_at` being
/// when the hub accepted it; empty when it names no observable (or is no IntelMQ event).
pub fn event_objects(msg: &Message, accepted_at: u64) -> Vec<Value> {
    let (Some(meta), Some(payload)) = (&msg.meta, &msg.payload) else {
        return Vec::new();
    };
    if msg.format != "intelmq" || msg.kind != "event" {
        return Vec::new();
    }
    let obs = observables(payload);
    if obs.is_empty() {
        return Vec::new();
    }
    let org = meta.uuid_org.unwrap_or(Uuid::nil());
    let ts = timestamp(accepted_at);
    let ind = indicator(&meta.uuid, &org, &obs, payload, accepted_at);
    let observed = json!({
        "type": "observed-data",
        "spec_version": "2.1",
        "id": derived("observed-data", &meta.uuid),
        "created_by_ref": identity_id(&org),
        "created": ts,
        "modified": ts,
        "first_observed": ts,
        "last_observed": ts,
        "number_observed": 1,
        "object_refs": obs.iter().map(|o| o.sco["id"].clone()).collect::<Vec<_>>(),
    });
    let sighting = json!({
        "type": "sighting",
        "spec_version": "2.1",
        "id": derived("sighting", &meta.uuid),
        "created_by_ref": identity_id(&org),
        "created": ts,
        "modified": ts,
        "first_seen": ts,
        "last_seen": ts,
        "count": 1,
        "sighting_of_ref": ind["id"].clone(),
        "observed_data_refs": [observed["id"].clone()],
        "where_sighted_refs": [identity_id(&org)],
    });
    let mut out = vec![identity(&org)];
    out.extend(obs.into_iter().map(|o| o.sco));
    out.push(observed);
    out.push(ind);
    out.push(sighting);
    out
}

/// The indicator of a withdrawn event, revoked as of `revoked_at` (a new version: same id,
/// later `modified`); `None` when the event gave no indicator.
pub fn revoked_indicator(target: &Message, accepted_at: u64, revoked_at: u64) -> Option<Value> {
    let mut ind = event_objects(target, accepted_at)
        .into_iter()
        .find(|o| o["type"] == "indicator")?;
    ind["modified"] = json!(timestamp(revoked_at.max(accepted_at)));
    ind["revoked"] = json!(true);
    Some(ind)
}

/// The version of an object (its `modified`, or `created`), for the manifest.
pub fn version_of(obj: &Value) -> Value {
    obj.get("modified")
        .or_else(|| obj.get("created"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod test {
    use super::*;

    fn event(uuid: Uuid, payload: Value) -> Message {
        let v = json!({"format": "intelmq", "version": 1, "type": "event",
            "meta": {"uuid": uuid, "uuid_org": "6f0a3a1e-8a51-4c43-9d8a-2b8f6a4c2a11"},
            "payload": payload});
        Message::from_slice(v.to_string().as_bytes()).expect("message")
    }

    #[test]
    fn an_event_gives_deterministic_objects_linked_together() {
        let u = Uuid::from_u128(7);
        let m = event(
            u,
            json!({"source.ip": "198.51.100.7", "destination.ip": "198.51.100.7",
                   "source.fqdn": "evil.example", "malware.hash.sha256": "AB12",
                   "classification.type": "c2-server"}),
        );
        let objs = event_objects(&m, 1_700_000_000);
        let types: Vec<&str> = objs.iter().filter_map(|o| o["type"].as_str()).collect();
        assert_eq!(
            types,
            [
                "identity",
                "ipv4-addr",
                "domain-name",
                "file",
                "observed-data",
                "indicator",
                "sighting"
            ]
        );
        assert_eq!(objs, event_objects(&m, 1_700_000_000), "deterministic");
        let ind = &objs[5];
        assert_eq!(
            ind["pattern"],
            "[ipv4-addr:value = '198.51.100.7'] OR [domain-name:value = 'evil.example'] OR [file:hashes.'SHA-256' = 'ab12']"
        );
        assert_eq!(objs[6]["sighting_of_ref"], ind["id"]);
        assert_eq!(objs[6]["observed_data_refs"][0], objs[4]["id"]);
        assert_eq!(objs[4]["object_refs"].as_array().map(Vec::len), Some(3));
        // STIX 2.1's own example id of an ipv4-addr with this value's form of contributing
        // properties is a UUIDv5 in the SCO namespace.
        let id = objs[1]["id"].as_str().unwrap_or_default();
        let uuid = Uuid::parse_str(id.trim_start_matches("ipv4-addr--")).expect("uuid");
        assert_eq!(uuid.get_version_num(), 5);
        assert_eq!(timestamp(1_700_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20.500Z"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn without_observables_or_not_an_event_there_is_nothing() {
        let m = event(
            Uuid::from_u128(8),
            json!({"raw": "eA==", "source.ip": "not an ip"}),
        );
        assert!(event_objects(&m, 1).is_empty());
        assert!(revoked_indicator(&m, 1, 2).is_none());
    }

    #[test]
    fn a_withdrawn_event_gives_a_revoked_later_version_of_its_indicator() {
        let m = event(
            Uuid::from_u128(9),
            json!({"source.url": "http://x.example/a'b"}),
        );
        let r = revoked_indicator(&m, 100, 200).expect("indicator");
        assert_eq!(r["revoked"], true);
        assert_eq!(r["modified"], timestamp(200));
        assert_eq!(r["created"], timestamp(100));
        assert_eq!(r["pattern"], "[url:value = 'http://x.example/a\\'b']");
    }

    #[test]
    fn collections_follow_the_read_grants() {
        let org = Uuid::from_u128(1);
        let g = Grants::reader(
            org,
            vec![
                Feed::Type("intelmq/event".into()),
                Feed::Tag("feed:x".into()),
            ],
            Tlp::Green,
        );
        let cs = collections(&g);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[1].feed, "tag:feed:x");
        assert_eq!(cs[0].grants.tlp_max, Tlp::Green);
        assert_ne!(cs[0].id, cs[1].id);
        assert_eq!(collections(&g), cs, "stable ids");
        let admin = collections(&Grants::admin(org));
        assert_eq!((admin.len(), admin[0].feed.as_str()), (1, "*"));
        assert!(collections(&Grants::reader(org, vec![], Tlp::Red)).is_empty());
    }
}
