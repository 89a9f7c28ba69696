//! The `[bridge]` configuration section: which event fields become sightings, where, and how.

use serde::Deserialize;
use std::collections::BTreeMap;

/// How exchanged events become sightings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Record sightings of accepted messages.
    pub enabled: bool,
    /// Namespace template; see the `mapping` module for placeholders. The first segment is the
    /// bridge's root: `rebuild` deletes every namespace under it before replaying the log.
    pub template: String,
    /// Event fields recorded, in order.
    pub fields: Vec<String>,
    /// TTL of the sightings in seconds (0 = none), unless the feed says otherwise.
    pub ttl: u64,
    /// Value format per field (`RAW`, `SHA256`, `BASE64URL`), applied to the namespaces the
    /// bridge creates.
    pub value_formats: BTreeMap<String, String>,
    /// Per-feed overrides, by `feed.name`.
    pub feeds: BTreeMap<String, FeedConfig>,
}

/// Overrides for one feed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Namespace template for this feed.
    pub template: Option<String>,
    /// TTL for this feed.
    pub ttl: Option<u64>,
}

/// The observables recorded by default.
pub const DEFAULT_FIELDS: &[&str] = &[
    "source.ip",
    "source.fqdn",
    "source.url",
    "destination.ip",
    "destination.fqdn",
    "destination.url",
    "malware.hash.md5",
    "malware.hash.sha1",
    "malware.hash.sha256",
    "source.asn",
    "destination.asn",
];

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            template: "iep04/{org}/{feed}/{field}".into(),
            fields: DEFAULT_FIELDS.iter().map(|s| (*s).to_owned()).collect(),
            ttl: 0,
            value_formats: BTreeMap::new(),
            feeds: BTreeMap::new(),
        }
    }
}

impl BridgeConfig {
    /// Checks templates and formats.
    pub fn validate(&self) -> Result<(), String> {
        for t in std::iter::once(&self.template)
            .chain(self.feeds.values().filter_map(|f| f.template.as_ref()))
        {
            let probe = t.replace(['{', '}'], "");
            let ns = sighthub_store::Namespace::parse(&probe)
                .map_err(|e| format!("[bridge] template '{t}': {e}"))?;
            if ns.is_internal() {
                return Err(format!("[bridge] template '{t}' makes a private namespace"));
            }
        }
        for (field, f) in &self.value_formats {
            if sighthub_store::ValueFormat::parse(f).is_none() {
                return Err(format!(
                    "[bridge.value_formats] '{field}': unknown format '{f}'"
                ));
            }
        }
        Ok(())
    }

    /// The root segment of the default template (what `rebuild` clears).
    pub fn root(&self) -> Option<&str> {
        let first = self.template.trim_matches('/').split('/').next()?;
        (!first.contains('{') && !first.is_empty()).then_some(first)
    }
}
