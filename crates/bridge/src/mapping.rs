//! From an IntelMQ event to the sightings it records.
//!
//! Each configured field present in the payload (`source.ip`, `malware.hash.sha256`, …) gives
//! one sighting, in the namespace made from the feed's template. Placeholders:
//! `{org}` (the message's `meta.uuid_org`, else `unknown-org`), `{feed}` (`feed.name`, else
//! `classification.taxonomy`, else `unclassified`), `{taxonomy}`, `{field}`.
//! Substituted text never adds a segment: `/` becomes `-`, control characters are dropped, and
//! a leading `_` (a private namespace) becomes `x_`.
//!
//! The timestamp is `time.source`, else `time.observation`, else the hub's arrival time.
//! `classification.taxonomy|type|identifier` become tags `taxonomy:…`, `type:…`,
//! `identifier:…`, and `tlp` becomes `tlp:<level>` (lower case).

use crate::config::BridgeConfig;
use serde_json::{Map, Value};
use sighthub_iep04::Message;

/// One sighting to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// Namespace (text; normalised by the store).
    pub namespace: String,
    /// Raw value.
    pub value: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// Comma-joined tags.
    pub tags: String,
    /// TTL in seconds (0 = none).
    pub ttl: u64,
    /// The event field it came from (for the per-field value format).
    pub field: String,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Makes substituted text safe as (part of) one namespace segment.
pub fn segment(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '/' { '-' } else { c })
        .collect::<String>()
        .trim()
        .to_owned();
    if out.is_empty() {
        out = "unknown".into();
    }
    if out.starts_with('_') {
        out.insert(0, 'x');
    }
    out
}

fn tag_safe(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ',' && *c != ';' && !c.is_control())
        .collect()
}

/// The sightings of one message (none unless it is an IntelMQ event with a payload).
pub fn sightings(msg: &Message, arrived: i64, cfg: &BridgeConfig) -> Vec<Sighting> {
    let Some(payload) = msg.payload.as_ref() else {
        return Vec::new();
    };
    if !msg.format.eq_ignore_ascii_case("intelmq") || !msg.kind.eq_ignore_ascii_case("event") {
        return Vec::new();
    }
    of_event(
        payload,
        msg.meta.as_ref().and_then(|m| m.uuid_org),
        arrived,
        cfg,
    )
}

/// The sightings of one bare IntelMQ event.
pub fn of_event(
    payload: &Map<String, Value>,
    org: Option<uuid::Uuid>,
    arrived: i64,
    cfg: &BridgeConfig,
) -> Vec<Sighting> {
    let get = |k: &str| payload.get(k).and_then(text);
    let feed_name = get("feed.name");
    let taxonomy = get("classification.taxonomy");
    let feed = feed_name
        .clone()
        .or_else(|| taxonomy.clone())
        .unwrap_or_else(|| "unclassified".into());
    let per_feed = feed_name.as_deref().and_then(|f| cfg.feeds.get(f));
    let template = per_feed
        .and_then(|f| f.template.as_deref())
        .unwrap_or(&cfg.template);
    let ttl = per_feed.and_then(|f| f.ttl).unwrap_or(cfg.ttl);
    let timestamp = ["time.source", "time.observation"]
        .iter()
        .find_map(|k| get(k).and_then(|t| crate::time::parse_rfc3339(&t)))
        .unwrap_or(arrived);
    let mut tags = Vec::new();
    for (key, prefix) in [
        ("classification.taxonomy", "taxonomy"),
        ("classification.type", "type"),
        ("classification.identifier", "identifier"),
    ] {
        if let Some(v) = get(key) {
            tags.push(format!("{prefix}:{}", tag_safe(&v)));
        }
    }
    if let Some(t) = get("tlp") {
        tags.push(format!("tlp:{}", tag_safe(&t).to_ascii_lowercase()));
    }
    let tags = tags.join(",");
    let org = org.map_or_else(|| "unknown-org".to_owned(), |u| u.to_string());
    cfg.fields
        .iter()
        .filter_map(|field| {
            let value = get(field)?;
            let namespace = template
                .replace("{org}", &segment(&org))
                .replace("{feed}", &segment(&feed))
                .replace(
                    "{taxonomy}",
                    &segment(taxonomy.as_deref().unwrap_or("unclassified")),
                )
                .replace("{field}", &segment(field));
            Some(Sighting {
                namespace,
                value,
                timestamp,
                tags: tags.clone(),
                ttl,
                field: field.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod test {
    use super::*;
    use serde_json::json;

    fn event(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn default_mapping() {
        let cfg = BridgeConfig::default();
        let org = uuid::Uuid::parse_str("11111111-2222-4333-8444-555555555555").ok();
        let e = event(json!({
            "source.ip": "192.0.2.1", "source.asn": 64496, "destination.fqdn": "example.org",
            "malware.hash.sha256": "ab", "feed.name": "My/Feed", "classification.taxonomy": "malicious-code",
            "classification.type": "malware-distribution", "tlp": "AMBER",
            "time.source": "2021-03-01T12:00:00+00:00", "time.observation": "2022-01-01T00:00:00+00:00",
            "extra.x": "not a field"
        }));
        let s = of_event(&e, org, 99, &cfg);
        let got: Vec<(&str, &str)> = s
            .iter()
            .map(|s| (s.namespace.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "iep04/11111111-2222-4333-8444-555555555555/My-Feed/source.ip",
                    "192.0.2.1"
                ),
                (
                    "iep04/11111111-2222-4333-8444-555555555555/My-Feed/destination.fqdn",
                    "example.org"
                ),
                (
                    "iep04/11111111-2222-4333-8444-555555555555/My-Feed/malware.hash.sha256",
                    "ab"
                ),
                (
                    "iep04/11111111-2222-4333-8444-555555555555/My-Feed/source.asn",
                    "64496"
                ),
            ]
        );
        assert!(s.iter().all(|s| s.timestamp == 1_614_600_000));
        assert_eq!(
            s[0].tags,
            "taxonomy:malicious-code,type:malware-distribution,tlp:amber"
        );
    }

    #[test]
    fn fallbacks_and_per_feed_overrides() {
        let mut cfg = BridgeConfig::default();
        cfg.feeds.insert(
            "special".into(),
            crate::config::FeedConfig {
                template: Some("special/{field}".into()),
                ttl: Some(60),
            },
        );
        let s = of_event(
            &event(json!({"source.ip": "1", "time.observation": "bad"})),
            None,
            42,
            &cfg,
        );
        assert_eq!(s[0].namespace, "iep04/unknown-org/unclassified/source.ip");
        assert_eq!((s[0].timestamp, s[0].ttl), (42, 0));
        let s = of_event(
            &event(json!({"source.ip": "1", "feed.name": "special"})),
            None,
            42,
            &cfg,
        );
        assert_eq!(
            (s[0].namespace.as_str(), s[0].ttl),
            ("special/source.ip", 60)
        );
        let s = of_event(
            &event(json!({"source.ip": "1", "feed.name": "_x"})),
            None,
            42,
            &cfg,
        );
        assert_eq!(s[0].namespace, "iep04/unknown-org/x_x/source.ip");
        assert!(of_event(&event(json!({"source.ip": ""})), None, 0, &cfg).is_empty());
    }
}
