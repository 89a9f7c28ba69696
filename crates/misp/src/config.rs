//! The `[zmq]` section: where MISP publishes, which attributes become sightings, and where.

use serde::Deserialize;
use std::collections::BTreeMap;

/// MISP's ZeroMQ ingest (`[zmq]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZmqConfig {
    /// Subscribe at start.
    pub enabled: bool,
    /// MISP's publisher (`Plugin.ZeroMQ_host` / `Plugin.ZeroMQ_port`): `tcp://host:port`.
    pub endpoint: String,
    /// Namespaces are `<namespace_prefix>/<the type's namespace>` (`misp/ip`).
    pub namespace_prefix: String,
    /// Attribute type → namespace under the prefix, over the defaults
    /// ([`default_types`]); `""` drops a type. Composite types (`domain|ip`) are split and
    /// each half goes by its own type.
    pub types: BTreeMap<String, String>,
    /// Only attributes marked `to_ids`.
    pub only_to_ids: bool,
    /// Also record every value (composites whole and halves) in this namespace, as SHA-256
    /// digests: the namespace MISP's `/rb` lookups query. Made SHA256 with digest lookups at
    /// start. Empty: off.
    pub hashed_namespace: String,
    /// Tag each sighting with the attribute's and its event's tags.
    pub tags: bool,
    /// Largest frame taken, in bytes; a larger one is skipped and counted.
    pub max_frame_bytes: usize,
}

impl Default for ZmqConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "tcp://127.0.0.1:50000".into(),
            namespace_prefix: "misp".into(),
            types: BTreeMap::new(),
            only_to_ids: false,
            hashed_namespace: String::new(),
            tags: true,
            max_frame_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Observable MISP attribute types and their namespace under the prefix. Other types
/// (`comment`, `text`, `other`, `port`, …) are not sightings.
pub fn default_types() -> BTreeMap<String, String> {
    [
        ("ip-src", "ip"),
        ("ip-dst", "ip"),
        ("ip", "ip"),
        ("domain", "domain"),
        ("hostname", "hostname"),
        ("url", "url"),
        ("uri", "url"),
        ("md5", "md5"),
        ("sha1", "sha1"),
        ("sha256", "sha256"),
        ("sha512", "sha512"),
        ("email", "email"),
        ("email-src", "email"),
        ("email-dst", "email"),
        ("filename", "filename"),
        ("ja3-fingerprint-md5", "ja3"),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_owned(), n.to_owned()))
    .collect()
}

impl ZmqConfig {
    /// The effective type map: the defaults, then `types` (an empty namespace drops a type).
    pub fn type_map(&self) -> BTreeMap<String, String> {
        let mut map = default_types();
        for (t, ns) in &self.types {
            if ns.trim().is_empty() {
                map.remove(t);
            } else {
                map.insert(t.clone(), ns.trim().trim_matches('/').to_owned());
            }
        }
        map
    }

    /// Checks the section; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let Some(rest) = self.endpoint.strip_prefix("tcp://") else {
            return Err(format!(
                "[zmq] endpoint '{}' is not tcp://host:port (MISP's Plugin.ZeroMQ_host and \
                 Plugin.ZeroMQ_port, e.g. tcp://misp.example:50000)",
                self.endpoint
            ));
        };
        if rest
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!(
                "[zmq] endpoint '{}' needs a host and a port: tcp://host:port",
                self.endpoint
            ));
        }
        if self.max_frame_bytes < 1024 {
            return Err("[zmq] max_frame_bytes must be at least 1024".into());
        }
        for ns in self.type_map().values() {
            self.namespace_of(ns)?;
        }
        if !self.hashed_namespace.trim().is_empty() {
            public_namespace("hashed_namespace", &self.hashed_namespace)?;
        }
        Ok(())
    }

    /// The namespace of a type's mapped name, checked.
    pub(crate) fn namespace_of(&self, mapped: &str) -> Result<sighthub_store::Namespace, String> {
        let full = format!("{}/{}", self.namespace_prefix.trim_matches('/'), mapped);
        public_namespace("namespace_prefix/types", &full)
    }

    /// The hashed namespace, when configured.
    pub fn hashed(&self) -> Result<Option<sighthub_store::Namespace>, String> {
        if self.hashed_namespace.trim().is_empty() {
            return Ok(None);
        }
        public_namespace("hashed_namespace", &self.hashed_namespace).map(Some)
    }
}

fn public_namespace(what: &str, raw: &str) -> Result<sighthub_store::Namespace, String> {
    let ns = sighthub_store::Namespace::parse(raw)
        .map_err(|e| format!("[zmq] {what}: '{raw}' is not a namespace: {e}"))?;
    if ns.is_internal() {
        return Err(format!(
            "[zmq] {what}: '{raw}' is a private namespace (its first segment starts with _)"
        ));
    }
    Ok(ns)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn defaults_are_valid_and_mistakes_are_named() {
        let mut cfg = ZmqConfig {
            enabled: true,
            ..ZmqConfig::default()
        };
        cfg.validate().expect("defaults");
        cfg.endpoint = "127.0.0.1:50000".into();
        assert!(cfg
            .validate()
            .expect_err("scheme")
            .contains("tcp://host:port"));
        cfg.endpoint = "tcp://127.0.0.1".into();
        assert!(cfg.validate().is_err());
        cfg.endpoint = "tcp://127.0.0.1:50000".into();
        cfg.hashed_namespace = "_all".into();
        assert!(cfg.validate().expect_err("private").contains("private"));
        cfg.hashed_namespace = "misp/hashed".into();
        cfg.types.insert("comment".into(), "comments".into());
        cfg.types.insert("ip-src".into(), String::new());
        cfg.validate().expect("valid");
        let map = cfg.type_map();
        assert_eq!(map.get("comment").map(String::as_str), Some("comments"));
        assert!(!map.contains_key("ip-src"));
        assert_eq!(map.get("ip-dst").map(String::as_str), Some("ip"));
    }
}
