//! From a MISP attribute to the sightings it records.
//!
//! - **Type → namespace.** `<namespace_prefix>/<mapped name>` from the type map
//!   ([`crate::config::default_types`] and `[zmq.types]`); an unmapped type records nothing.
//! - **Composite types** (`domain|ip`, `ip-dst|port`, `filename|md5`): the type and the value
//!   are split at the first `|`, and each half goes by its own type (`port` is not mapped, so
//!   `ip-dst|port` records the address). A composite type mapped itself also records the whole
//!   value.
//! - **`to_ids`**: with `only_to_ids`, other attributes record nothing.
//! - **Time**: the attribute's `timestamp`, else its event's, else now.
//! - **Tags**: the attribute's, then its event's (with `tags`), cut to the store's per-write
//!   limits; a `,` or `;` inside a MISP tag (the store's separators) becomes a space.
//! - **Hashed namespace** (optional): every value recorded above, and a composite's whole
//!   value (what MISP looks up), once each, into the SHA256 namespace MISP's `/rb` queries.

use crate::config::ZmqConfig;
use crate::frame::Attribute;
use sighthub_store::{Limits, Namespace};
use std::collections::BTreeMap;

/// One sighting to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// Where.
    pub namespace: Namespace,
    /// The raw value (the store hashes it in a SHA256 namespace).
    pub value: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// Comma-joined tags that fit the store's limits.
    pub tags: String,
}

/// The checked `[zmq]` mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    types: BTreeMap<String, Namespace>,
    only_to_ids: bool,
    hashed: Option<Namespace>,
    tags: bool,
}

impl Mapping {
    /// The mapping of a (validated) configuration.
    pub fn new(cfg: &ZmqConfig) -> Result<Self, String> {
        let mut types = BTreeMap::new();
        for (t, mapped) in cfg.type_map() {
            types.insert(t, cfg.namespace_of(&mapped)?);
        }
        Ok(Self {
            types,
            only_to_ids: cfg.only_to_ids,
            hashed: cfg.hashed()?,
            tags: cfg.tags,
        })
    }

    /// The hashed namespace, if any.
    pub fn hashed(&self) -> Option<&Namespace> {
        self.hashed.as_ref()
    }

    /// The sightings of one attribute (none for a non-observable, a filtered or an unmapped
    /// one).
    pub fn sightings(&self, a: &Attribute, now: i64, limits: &Limits) -> Vec<Sighting> {
        if self.only_to_ids && !a.to_ids {
            return Vec::new();
        }
        let mut recorded: Vec<(&Namespace, &str)> = Vec::new();
        let mut whole_of_composite = None;
        if let Some(ns) = self.types.get(&a.kind) {
            recorded.push((ns, &a.value));
        }
        if let (Some((ta, tb)), Some((va, vb))) = (a.kind.split_once('|'), a.value.split_once('|'))
        {
            for (t, v) in [(ta, va.trim()), (tb, vb.trim())] {
                if let (Some(ns), false) = (self.types.get(t.trim()), v.is_empty()) {
                    recorded.push((ns, v));
                }
            }
            if !recorded.is_empty() {
                whole_of_composite = Some(a.value.as_str());
            }
        }
        let mut hashed_values: Vec<&str> = Vec::new();
        if self.hashed.is_some() {
            hashed_values.extend(whole_of_composite);
            hashed_values.extend(recorded.iter().map(|(_, v)| *v));
        }
        let tags = if self.tags {
            let cleaned: Vec<String> = a.tags.iter().map(|t| t.replace([',', ';'], " ")).collect();
            limits.fit_tags(cleaned.iter().map(String::as_str))
        } else {
            String::new()
        };
        let timestamp = a.timestamp.unwrap_or(now);
        let mut out: Vec<Sighting> = Vec::new();
        let hashed = self
            .hashed
            .iter()
            .flat_map(|h| hashed_values.iter().map(move |v| (h, *v)));
        for (ns, value) in recorded.into_iter().chain(hashed) {
            if out.iter().any(|s| &s.namespace == ns && s.value == value) {
                continue;
            }
            out.push(Sighting {
                namespace: ns.clone(),
                value: value.to_owned(),
                timestamp,
                tags: tags.clone(),
            });
        }
        out
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn mapping(edit: impl FnOnce(&mut ZmqConfig)) -> Mapping {
        let mut cfg = ZmqConfig {
            enabled: true,
            hashed_namespace: "misp/hashed".into(),
            ..ZmqConfig::default()
        };
        edit(&mut cfg);
        cfg.validate().expect("valid");
        Mapping::new(&cfg).expect("mapping")
    }

    fn attr(kind: &str, value: &str, to_ids: bool) -> Attribute {
        Attribute {
            kind: kind.into(),
            value: value.into(),
            to_ids,
            timestamp: Some(1_700_000_000),
            tags: vec![
                "tlp:amber".into(),
                "misp-galaxy:threat-actor=\"A, B\"".into(),
            ],
        }
    }

    fn places(s: &[Sighting]) -> Vec<(String, String)> {
        s.iter()
            .map(|s| (s.namespace.as_str().to_owned(), s.value.clone()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn types_go_to_their_namespace_and_the_hashed_one() {
        let m = mapping(|_| {});
        let s = m.sightings(&attr("ip-dst", "198.51.100.7", true), 5, &Limits::default());
        assert_eq!(
            places(&s),
            pairs(&[("misp/ip", "198.51.100.7"), ("misp/hashed", "198.51.100.7")])
        );
        assert_eq!(s[0].timestamp, 1_700_000_000);
        assert_eq!(s[0].tags, "tlp:amber,misp-galaxy:threat-actor=\"A  B\"");
        for non_observable in ["comment", "text", "other", "port"] {
            assert!(m
                .sightings(&attr(non_observable, "x", true), 5, &Limits::default())
                .is_empty());
        }
        let mut untimed = attr("domain", "evil.example", false);
        untimed.timestamp = None;
        assert_eq!(
            m.sightings(&untimed, 5, &Limits::default())[0].timestamp,
            5,
            "now"
        );
    }

    #[test]
    fn composite_values_record_both_halves_and_the_whole_digest() {
        let m = mapping(|_| {});
        let s = m.sightings(
            &attr("domain|ip", "evil.example|203.0.113.9", true),
            5,
            &Limits::default(),
        );
        assert_eq!(
            places(&s),
            pairs(&[
                ("misp/domain", "evil.example"),
                ("misp/ip", "203.0.113.9"),
                ("misp/hashed", "evil.example|203.0.113.9"),
                ("misp/hashed", "evil.example"),
                ("misp/hashed", "203.0.113.9"),
            ])
        );
        let s = m.sightings(
            &attr("ip-dst|port", "203.0.113.9|443", true),
            5,
            &Limits::default(),
        );
        assert_eq!(
            places(&s),
            pairs(&[
                ("misp/ip", "203.0.113.9"),
                ("misp/hashed", "203.0.113.9|443"),
                ("misp/hashed", "203.0.113.9"),
            ])
        );
        assert!(m
            .sightings(&attr("domain|ip", "no-bar", true), 5, &Limits::default())
            .is_empty());
    }

    #[test]
    fn to_ids_filter_tags_off_and_type_overrides() {
        let m = mapping(|c| {
            c.only_to_ids = true;
            c.tags = false;
            c.hashed_namespace = String::new();
            c.types.insert("comment".into(), "notes".into());
            c.types.insert("ip-src".into(), String::new());
        });
        let l = Limits::default();
        assert!(m
            .sightings(&attr("ip-dst", "1.2.3.4", false), 5, &l)
            .is_empty());
        let s = m.sightings(&attr("ip-dst", "1.2.3.4", true), 5, &l);
        assert_eq!(
            (places(&s), s[0].tags.as_str()),
            (pairs(&[("misp/ip", "1.2.3.4")]), "")
        );
        assert!(m
            .sightings(&attr("ip-src", "1.2.3.4", true), 5, &l)
            .is_empty());
        assert_eq!(
            places(&m.sightings(&attr("comment", "c", true), 5, &l)),
            pairs(&[("misp/notes", "c")])
        );
    }

    #[test]
    fn tags_fit_the_store_limits() {
        let m = mapping(|_| {});
        let limits = Limits {
            max_tags_per_item: 1,
            max_tag_len: 9,
            ..Limits::default()
        };
        let mut a = attr("md5", "d41d8cd98f00b204e9800998ecf8427e", true);
        a.tags.insert(0, "much-too-long-a-tag".into());
        assert_eq!(m.sightings(&a, 5, &limits)[0].tags, "tlp:amber");
    }
}
