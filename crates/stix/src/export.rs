//! Values → one STIX 2.1 bundle, SightingDB 0.7.8's mapping.
//!
//! Each value becomes an `indicator` (its pattern, from the `stix-type:` tag or the value's
//! shape) and a `sighting` of it (count, first and last seen, who saw it, the namespace in
//! `x_sightingdb_namespace`), after the OASIS "Sighting of an Indicator" example. The bundle
//! starts with the publishing `identity` and ends with the identities named by `identity:`
//! tags and the TLP markings used. Keys are in alphabetical order, as SightingDB writes them.
//!
//! **Ids are deterministic** UUIDv5s ([`crate::vocab::uuid_for`]): the bundle's over the
//! namespaces asked for, an indicator's over its observable type and value (so the same
//! value in two namespaces is *one* indicator with a sighting each), a sighting's over its
//! namespace, type and value, an identity's over its name. A `stix-id:indicator--<uuid>` tag
//! (written by the importer) is used instead of a minted indicator id — for the first value
//! carrying it; a later value with the same tag and another pattern (the importer tags every
//! value of an `[a] OR [b]` pattern with that indicator's id) gets its minted id, where
//! SightingDB would point its sighting at the first value's pattern.
//!
//! [`Exporter`] writes objects into one buffer as values are pushed, keeping only the ids
//! needed to drop repeats (bounded by the values pushed), so an export of `limit` values
//! holds its answer and nothing of the namespace beyond it.

use crate::vocab::{rfc3339, tag_value, tag_values, tlp_index, uuid_for, TLP, TLP_CREATED};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use uuid::Uuid;

/// Who the bundle is published as (`created_by_ref` of everything in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The identity's name.
    pub identity: String,
    /// A STIX identity class: `system`, `organization`, …
    pub identity_class: String,
}

impl Default for Settings {
    /// `SightingDB`, class `system`: SightingDB's default, so that its bundles and
    /// sighthub's carry the same identity id.
    fn default() -> Self {
        Self {
            identity: "SightingDB".into(),
            identity_class: "system".into(),
        }
    }
}

/// What to do with a value whose observable type cannot be worked out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Untyped {
    /// Leave it out, counted in [`Finished::skipped`] (the default).
    #[default]
    Skip,
    /// Export it as [`UNTYPED_TYPE`], its indicator flagged `x_sightingdb_untyped`.
    Include,
}

/// The custom observable type of values nothing identified (`untyped=include`).
pub const UNTYPED_TYPE: &str = "x-sightingdb-value";

/// One value as the export reads it (the store's view).
#[derive(Debug, Clone, Copy)]
pub struct Value<'a> {
    /// The value as stored and shown.
    pub value: &'a str,
    /// Unix seconds.
    pub first_seen: i64,
    /// Unix seconds.
    pub last_seen: i64,
    /// Sightings in the namespace.
    pub count: u64,
    /// Tag list.
    pub tags: &'a str,
    /// Seconds after `last_seen` at which it expires; 0 = never.
    pub ttl: u64,
}

/// A finished bundle and what went into it (the `X-SightingDB-*` headers).
#[derive(Debug, Clone)]
pub struct Finished {
    /// The bundle, JSON.
    pub body: Vec<u8>,
    /// Values exported.
    pub exported: usize,
    /// Values left out: no observable type could be worked out.
    pub skipped: usize,
    /// Values exported as [`UNTYPED_TYPE`].
    pub untyped: usize,
}

/// Builds one bundle; see the module docs.
#[derive(Debug)]
pub struct Exporter {
    buf: Vec<u8>,
    untyped: Untyped,
    author_id: String,
    /// Ids already written (indicators, sightings, the author).
    written: FxHashSet<String>,
    /// The pattern of each indicator written under a `stix-id:` tag's id.
    given_ids: FxHashMap<String, String>,
    /// Identities named by tags, in the order met (written at the end).
    identities: Vec<(String, String)>,
    identity_ids: FxHashSet<String>,
    /// TLP levels used.
    markings: [bool; 4],
    exported: usize,
    skipped: usize,
    untyped_count: usize,
}

#[derive(Serialize)]
struct Identity<'a> {
    created: &'a str,
    id: &'a str,
    identity_class: &'a str,
    modified: &'a str,
    name: &'a str,
    spec_version: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct Indicator<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<u64>,
    created: &'a str,
    created_by_ref: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    id: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    indicator_types: Vec<&'a str>,
    modified: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    object_marking_refs: Vec<&'a str>,
    pattern: &'a str,
    pattern_type: &'a str,
    spec_version: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    valid_from: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_until: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    x_sightingdb_untyped: bool,
}

#[derive(Serialize)]
struct Sighting<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<u64>,
    count: u64,
    created: &'a str,
    created_by_ref: &'a str,
    first_seen: &'a str,
    id: &'a str,
    last_seen: &'a str,
    modified: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    object_marking_refs: Vec<&'a str>,
    sighting_of_ref: &'a str,
    spec_version: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    where_sighted_refs: Vec<&'a str>,
    x_sightingdb_namespace: &'a str,
}

#[derive(Serialize)]
struct Tlp<'a> {
    tlp: &'a str,
}

#[derive(Serialize)]
struct Marking<'a> {
    created: &'a str,
    definition: Tlp<'a>,
    definition_type: &'a str,
    id: &'a str,
    name: String,
    spec_version: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

fn identity_id(name: &str) -> String {
    format!("identity--{}", uuid_for(&format!("identity:{name}")))
}

impl Exporter {
    /// Starts the bundle whose id is minted from `bundle_key`: `bundle:<ns>,<ns>…` for
    /// namespaces ([`Exporter::namespaces_key`]), `bundle:<ns>:<value>` for one value.
    pub fn new(settings: &Settings, untyped: Untyped, bundle_key: &str) -> Self {
        let mut e = Self {
            buf: Vec::with_capacity(4096),
            untyped,
            author_id: identity_id(&settings.identity),
            written: FxHashSet::default(),
            given_ids: FxHashMap::default(),
            identities: Vec::new(),
            identity_ids: FxHashSet::default(),
            markings: [false; 4],
            exported: 0,
            skipped: 0,
            untyped_count: 0,
        };
        e.buf.extend_from_slice(b"{\"id\":");
        e.json(&format!("bundle--{}", uuid_for(bundle_key)));
        e.buf.extend_from_slice(b",\"objects\":[");
        let author = Identity {
            created: TLP_CREATED,
            id: &e.author_id.clone(),
            identity_class: &settings.identity_class,
            modified: TLP_CREATED,
            name: &settings.identity,
            spec_version: "2.1",
            kind: "identity",
        };
        e.object(&author);
        e.written.insert(e.author_id.clone());
        e
    }

    /// The bundle key of an export of these namespaces.
    pub fn namespaces_key<'a>(namespaces: impl IntoIterator<Item = &'a str>) -> String {
        let names: Vec<&str> = namespaces.into_iter().collect();
        format!("bundle:{}", names.join(","))
    }

    /// The bundle key of an export of one value.
    pub fn value_key(namespace: &str, value: &str) -> String {
        format!("bundle:{namespace}:{value}")
    }

    /// Bytes written so far (for a byte budget).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True before anything but the bundle's head is written (never, after [`Exporter::new`]).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn json<T: Serialize + ?Sized>(&mut self, v: &T) {
        // Serializing these structs of strings and integers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, v);
    }

    fn object<T: Serialize>(&mut self, v: &T) {
        if !self.buf.ends_with(b"[") {
            self.buf.push(b',');
        }
        self.json(v);
    }

    /// Adds one value of `namespace`: its indicator (unless already written) and its
    /// sighting, or counts it skipped when its type cannot be worked out.
    pub fn push(&mut self, namespace: &str, v: &Value<'_>) {
        let (observable, fallback) = match observable_type(v, self.untyped) {
            Some(t) => t,
            None => {
                self.skipped += 1;
                return;
            }
        };
        let Some(pattern) = pattern_for(&observable, v.value) else {
            self.skipped += 1;
            return;
        };
        let mut marking_refs: Vec<&str> = Vec::new();
        for level in tag_values(v.tags, "tlp") {
            if let Some(i) = tlp_index(level) {
                self.markings[i] = true;
                if !marking_refs.contains(&TLP[i].1) {
                    marking_refs.push(TLP[i].1);
                }
            }
        }
        let mut sighted_by: Vec<String> = Vec::new();
        for name in tag_values(v.tags, "identity") {
            let id = identity_id(name);
            if self.identity_ids.insert(id.clone()) {
                self.identities.push((id.clone(), name.to_owned()));
            }
            if !sighted_by.contains(&id) {
                sighted_by.push(id);
            }
        }
        if sighted_by.is_empty() {
            sighted_by.push(self.author_id.clone());
        }
        let first = rfc3339(v.first_seen);
        let last = rfc3339(v.last_seen);
        let confidence = tag_value(v.tags, "confidence")
            .and_then(|c| c.parse::<u64>().ok())
            .filter(|c| *c <= 100);
        let indicator_id = match given_id(v) {
            // An imported indicator whose pattern named several values is written once, for
            // the first; the others get their minted id, so that no sighting points at a
            // pattern that is not its value's (SightingDB points them all at the first).
            Some(given) => match self.given_ids.get(given) {
                Some(p) if *p != pattern => minted_id(v, &observable),
                Some(_) => given.to_owned(),
                None => {
                    self.given_ids.insert(given.to_owned(), pattern.clone());
                    given.to_owned()
                }
            },
            None => minted_id(v, &observable),
        };
        let author = self.author_id.clone();
        if self.written.insert(indicator_id.clone()) {
            let indicator = Indicator {
                confidence,
                created: &first,
                created_by_ref: &author,
                description: tag_value(v.tags, "description"),
                id: &indicator_id,
                indicator_types: tag_values(v.tags, "indicator-type").collect(),
                modified: &last,
                name: tag_value(v.tags, "name"),
                object_marking_refs: marking_refs.clone(),
                pattern: &pattern,
                pattern_type: "stix",
                spec_version: "2.1",
                kind: "indicator",
                valid_from: &first,
                valid_until: valid_until(v),
                x_sightingdb_untyped: fallback,
            };
            self.object(&indicator);
        }
        let sighting_id = format!(
            "sighting--{}",
            uuid_for(&format!("sighting:{namespace}:{observable}:{}", v.value))
        );
        if self.written.insert(sighting_id.clone()) {
            let sighting = Sighting {
                confidence,
                count: v.count.clamp(1, 999_999_999),
                created: &first,
                created_by_ref: &author,
                first_seen: &first,
                id: &sighting_id,
                last_seen: &last,
                modified: &last,
                object_marking_refs: marking_refs,
                sighting_of_ref: &indicator_id,
                spec_version: "2.1",
                kind: "sighting",
                where_sighted_refs: sighted_by.iter().map(String::as_str).collect(),
                x_sightingdb_namespace: namespace,
            };
            self.object(&sighting);
        }
        self.exported += 1;
        if fallback {
            self.untyped_count += 1;
        }
    }

    /// Appends the identities and markings and closes the bundle.
    pub fn finish(mut self) -> Finished {
        for (id, name) in std::mem::take(&mut self.identities) {
            if id == self.author_id {
                continue;
            }
            self.object(&Identity {
                created: TLP_CREATED,
                id: &id,
                identity_class: "organization",
                modified: TLP_CREATED,
                name: &name,
                spec_version: "2.1",
                kind: "identity",
            });
        }
        for (i, (level, id)) in TLP.iter().enumerate() {
            if self.markings[i] {
                self.object(&Marking {
                    created: TLP_CREATED,
                    definition: Tlp { tlp: level },
                    definition_type: "tlp",
                    id,
                    name: format!("TLP:{}", level.to_ascii_uppercase()),
                    spec_version: "2.1",
                    kind: "marking-definition",
                });
            }
        }
        self.buf.extend_from_slice(b"],\"type\":\"bundle\"}");
        Finished {
            body: self.buf,
            exported: self.exported,
            skipped: self.skipped,
            untyped: self.untyped_count,
        }
    }
}

/// The observable type of a value, and whether it is the untyped fallback: the `stix-type:`
/// tag, else the value's shape, else (with [`Untyped::Include`]) [`UNTYPED_TYPE`].
fn observable_type(v: &Value<'_>, untyped: Untyped) -> Option<(String, bool)> {
    if let Some(tagged) = tag_value(v.tags, "stix-type") {
        return Some((tagged.to_owned(), false));
    }
    if let Some(inferred) = infer_type(v.value) {
        return Some((inferred.to_owned(), false));
    }
    match untyped {
        Untyped::Skip => None,
        Untyped::Include => Some((UNTYPED_TYPE.to_owned(), true)),
    }
}

/// The observable type a value's shape suggests (SightingDB's rules): a URL, an IPv4 or IPv6
/// address (or CIDR), an e-mail address, an MD5/SHA-1/SHA-256/SHA-512 hex digest
/// (`file.<ALGORITHM>`), a domain name; `None` otherwise.
pub fn infer_type(value: &str) -> Option<&'static str> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.contains("://") {
        return Some("url");
    }
    if value.parse::<Ipv4Addr>().is_ok() {
        return Some("ipv4-addr");
    }
    if value.parse::<Ipv6Addr>().is_ok() {
        return Some("ipv6-addr");
    }
    if let Some((address, prefix)) = value.split_once('/') {
        if prefix.parse::<u8>().is_ok() {
            if address.parse::<Ipv4Addr>().is_ok() {
                return Some("ipv4-addr");
            }
            if address.parse::<Ipv6Addr>().is_ok() {
                return Some("ipv6-addr");
            }
        }
    }
    if value.contains('@') && value.split('@').count() == 2 && !value.starts_with('@') {
        return Some("email-addr");
    }
    if value.chars().all(|c| c.is_ascii_hexdigit()) {
        match value.len() {
            32 => return Some("file.MD5"),
            40 => return Some("file.SHA-1"),
            64 => return Some("file.SHA-256"),
            128 => return Some("file.SHA-512"),
            _ => {}
        }
    }
    let domain = value.contains('.')
        && !value.contains(' ')
        && value
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    domain.then_some("domain-name")
}

/// The STIX pattern matching `value` as an observable of this type.
pub fn pattern_for(observable: &str, value: &str) -> Option<String> {
    let literal = value.replace('\\', "\\\\").replace('\'', "\\'");
    if let Some(algorithm) = observable.strip_prefix("file.") {
        return Some(format!("[file:hashes.'{algorithm}' = '{literal}']"));
    }
    let property = match observable {
        "file" | "mutex" => "name",
        "windows-registry-key" => "key",
        "process" => "command_line",
        "user-account" => "user_id",
        "autonomous-system" => "number",
        "" => return None,
        _ => "value",
    };
    Some(format!("[{observable}:{property} = '{literal}']"))
}

/// The indicator id of a `stix-id:indicator--<uuid>` tag, when it holds a valid one.
fn given_id<'a>(v: &Value<'a>) -> Option<&'a str> {
    let given = tag_value(v.tags, "stix-id")?;
    let uuid = given.strip_prefix("indicator--")?;
    Uuid::parse_str(uuid).is_ok().then_some(given)
}

fn minted_id(v: &Value<'_>, observable: &str) -> String {
    format!(
        "indicator--{}",
        uuid_for(&format!("indicator:{observable}:{}", v.value))
    )
}

fn valid_until(v: &Value<'_>) -> Option<String> {
    if let Some(tagged) = tag_value(v.tags, "valid-until") {
        if let Some(t) = crate::vocab::parse_rfc3339(tagged) {
            return Some(rfc3339(t));
        }
        return tagged.parse::<i64>().ok().map(rfc3339);
    }
    (v.ttl > 0).then(|| {
        rfc3339(
            v.last_seen
                .saturating_add(i64::try_from(v.ttl).unwrap_or(i64::MAX)),
        )
    })
}

#[cfg(test)]
mod tests;
