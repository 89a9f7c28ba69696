//! A STIX bundle → the sightings it describes (SightingDB 0.7.8's importer, made strict about
//! what it cannot read).
//!
//! Three kinds of object are understood:
//! - `observed-data`: `number_observed` sightings between `first_observed` and
//!   `last_observed` of each observable in `object_refs` (and the deprecated embedded
//!   `objects`);
//! - `sighting`: `count` sightings between `first_seen` and `last_seen` of what
//!   `sighting_of_ref` names (the literal values of an indicator's pattern, or an observable)
//!   and of the observables of `observed_data_refs`;
//! - `indicator` that no sighting of the bundle refers to: one sighting at `valid_from` of
//!   each literal value of its pattern.
//!
//! A file object yields one value per hash (`file.<ALGORITHM>`). What the bundle says about a
//! value is kept as tags (see [`crate::vocab`]), so that the export puts it back on the wire.
//!
//! Where each value goes ([`Mapping`]): the namespace mapped to its observable type, else the
//! `x_sightingdb_namespace` of the sighting (what an export wrote), else the default.
//!
//! Hostile input: the bundle is bounded in bytes and objects ([`DecodeLimits`]) and in
//! nesting (serde_json's recursion limit, 128), and a root that is not a bundle, an object
//! list or one object is refused ([`DecodeError`]). An object with a field of the wrong type
//! (a `count` that is not an integer, a timestamp that is not RFC 3339, no `id`) is skipped
//! with its reason ([`Decoded::skipped`]) and the rest is read.

use crate::vocab::{parse_rfc3339, sanitize_tag, tlp_of_id};
use regex::Regex;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Bounds on one bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest bundle, in bytes.
    pub max_bytes: usize,
    /// Most objects in one bundle.
    pub max_objects: usize,
}

impl DecodeLimits {
    /// Default [`DecodeLimits::max_bytes`]: 128 MiB (a 100,000-value export is about 100 MB).
    pub const DEFAULT_MAX_BYTES: usize = 128 * 1024 * 1024;
    /// Default [`DecodeLimits::max_objects`]: 1,000,000.
    pub const DEFAULT_MAX_OBJECTS: usize = 1_000_000;
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_objects: Self::DEFAULT_MAX_OBJECTS,
        }
    }
}

/// Why a whole bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Over [`DecodeLimits::max_bytes`].
    #[error("the bundle is {size} bytes, more than the limit of {max} bytes; split it, or raise the limit (--max-bytes)")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON, or nested deeper than 128 levels.
    #[error("the bundle is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not a bundle.
    #[error("not a STIX bundle: {0}")]
    NotABundle(&'static str),
    /// Over [`DecodeLimits::max_objects`].
    #[error("the bundle holds {n} objects, more than the limit of {max}; split it, or raise the limit (--max-objects)")]
    TooManyObjects {
        /// Its objects.
        n: usize,
        /// The limit.
        max: usize,
    },
}

/// Where values go, by observable type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Observable type (`ipv4-addr`, `file.SHA-256`, …) → namespace.
    pub types: HashMap<String, String>,
    /// Where everything else goes.
    pub default_namespace: String,
}

impl Default for Mapping {
    /// Everything into `stix` unless a sighting names its namespace.
    fn default() -> Self {
        Self {
            types: HashMap::new(),
            default_namespace: "stix".into(),
        }
    }
}

/// One value seen, as the bundle says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Identifies this observation across imports: the STIX object's id, the namespace and
    /// the value (`\0`-separated).
    pub key: String,
    /// Where it goes (not yet parsed: the store refuses a bad one).
    pub namespace: String,
    /// The value.
    pub value: String,
    /// How many times it was seen (at least 1).
    pub count: u64,
    /// Unix seconds, when the bundle says.
    pub first_seen: Option<i64>,
    /// Unix seconds, when the bundle says.
    pub last_seen: Option<i64>,
    /// Tags: `stix-type:` first, then what the bundle says about it.
    pub tags: Vec<String>,
}

/// What a bundle yielded.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Objects in the bundle.
    pub objects: usize,
    /// The sightings it describes, one per value and object, repeats dropped.
    pub observations: Vec<Observation>,
    /// Objects left out: their id (or `#index`) and why.
    pub skipped: Vec<(String, String)>,
}

struct Found {
    stix_type: String,
    value: String,
}

/// Reads one bundle; see the module docs.
pub fn decode(
    bytes: &[u8],
    mapping: &Mapping,
    limits: &DecodeLimits,
) -> Result<Decoded, DecodeError> {
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let root: Value = serde_json::from_slice(bytes)?;
    let objects: Vec<Value> = match root {
        Value::Object(mut map) => match map.remove("objects") {
            Some(Value::Array(objects)) => objects,
            Some(_) => return Err(DecodeError::NotABundle("\"objects\" is not a list")),
            None if map.contains_key("type") => vec![Value::Object(map)],
            None => {
                return Err(DecodeError::NotABundle(
                    "an object with neither \"objects\" nor \"type\"",
                ))
            }
        },
        Value::Array(objects) => objects,
        _ => {
            return Err(DecodeError::NotABundle(
                "expected a bundle, a list of objects or one object",
            ))
        }
    };
    if objects.len() > limits.max_objects {
        return Err(DecodeError::TooManyObjects {
            n: objects.len(),
            max: limits.max_objects,
        });
    }
    let by_id: FxHashMap<&str, &Value> = objects
        .iter()
        .filter_map(|o| Some((o.get("id")?.as_str()?, o)))
        .collect();
    let sighted: FxHashSet<&str> = objects
        .iter()
        .filter(|o| kind(o) == Some("sighting"))
        .filter_map(|o| o.get("sighting_of_ref").and_then(Value::as_str))
        .collect();
    let ctx = Ctx {
        by_id: &by_id,
        mapping,
    };
    let mut out = Decoded {
        objects: objects.len(),
        ..Decoded::default()
    };
    let mut keys: FxHashSet<String> = FxHashSet::default();
    for (i, o) in objects.iter().enumerate() {
        let k = kind(o);
        if !matches!(k, Some("sighting" | "observed-data" | "indicator")) {
            continue;
        }
        let Some(id) = o
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            out.skipped.push((
                format!("#{i}"),
                "a STIX object needs a string \"id\"".into(),
            ));
            continue;
        };
        let got = match k {
            Some("sighting") => ctx.sighting(o),
            Some("observed-data") => ctx.observed(o),
            _ if sighted.contains(id) => continue,
            _ => ctx.indicator(o),
        };
        match got {
            Ok(list) => {
                for mut obs in list {
                    obs.key = format!("{id}\0{}\0{}", obs.namespace, obs.value);
                    if keys.insert(obs.key.clone()) {
                        out.observations.push(obs);
                    }
                }
            }
            Err(why) => out.skipped.push((id.to_owned(), why)),
        }
    }
    Ok(out)
}

fn kind(o: &Value) -> Option<&str> {
    o.get("type").and_then(Value::as_str)
}

struct Ctx<'a> {
    by_id: &'a FxHashMap<&'a str, &'a Value>,
    mapping: &'a Mapping,
}

/// A count field: absent → 1; an integer → at least 1; anything else → the reason.
fn count_of(o: &Value, field: &str) -> Result<u64, String> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(1),
        Some(v) => v
            .as_u64()
            .map(|n| n.max(1))
            .ok_or_else(|| format!("\"{field}\" must be a non-negative integer")),
    }
}

/// A timestamp field: absent → None; an RFC 3339 string → its seconds; else the reason.
fn time_of(o: &Value, field: &str) -> Result<Option<i64>, String> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_rfc3339(s)
            .map(Some)
            .ok_or_else(|| format!("\"{field}\" is not an RFC 3339 timestamp")),
        Some(_) => Err(format!("\"{field}\" must be a timestamp string")),
    }
}

fn str_refs<'v>(o: &'v Value, field: &str) -> Result<Vec<&'v str>, String> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| format!("\"{field}\" must be a list of ids"))
            })
            .collect(),
        Some(_) => Err(format!("\"{field}\" must be a list of ids")),
    }
}

impl Ctx<'_> {
    fn sighting(&self, o: &Value) -> Result<Vec<Observation>, String> {
        let count = count_of(o, "count")?;
        let first = time_of(o, "first_seen")?;
        let last = time_of(o, "last_seen")?;
        let mut tags = self.describe(o)?;
        for id in str_refs(o, "where_sighted_refs")? {
            if let Some(name) = self.identity_name(id) {
                tags.push(format!("identity:{name}"));
            }
        }
        let mut found = Vec::new();
        match o.get("sighting_of_ref") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) => {
                if let Some(target) = self.by_id.get(id.as_str()) {
                    if kind(target) == Some("indicator") {
                        if let Some(p) = target.get("pattern").and_then(Value::as_str) {
                            found.extend(from_pattern(p));
                        }
                        tags.extend(self.describe_indicator(target)?);
                    } else {
                        collect(target, &mut found);
                    }
                }
            }
            Some(_) => return Err("\"sighting_of_ref\" must be an id".into()),
        }
        for id in str_refs(o, "observed_data_refs")? {
            if let Some(observed) = self.by_id.get(id) {
                found.extend(self.observables_of(observed)?);
            }
        }
        let exported_ns = o.get("x_sightingdb_namespace").and_then(Value::as_str);
        Ok(self.emit(found, exported_ns, first, last, count, tags))
    }

    fn observed(&self, o: &Value) -> Result<Vec<Observation>, String> {
        let count = count_of(o, "number_observed")?;
        let first = time_of(o, "first_observed")?;
        let last = time_of(o, "last_observed")?;
        let tags = self.describe(o)?;
        let found = self.observables_of(o)?;
        Ok(self.emit(found, None, first, last, count, tags))
    }

    fn indicator(&self, o: &Value) -> Result<Vec<Observation>, String> {
        let pattern = match o.get("pattern") {
            Some(Value::String(p)) => p,
            _ => return Err("an indicator needs a \"pattern\" string".into()),
        };
        let seen = time_of(o, "valid_from")?;
        let mut tags = self.describe(o)?;
        tags.extend(self.describe_indicator(o)?);
        Ok(self.emit(from_pattern(pattern), None, seen, None, 1, tags))
    }

    fn identity_name(&self, id: &str) -> Option<String> {
        let o = self.by_id.get(id)?;
        (kind(o) == Some("identity"))
            .then(|| o.get("name").and_then(Value::as_str))
            .flatten()
            .map(sanitize_tag)
            .filter(|n| !n.is_empty())
    }

    fn describe(&self, o: &Value) -> Result<Vec<String>, String> {
        let mut tags = Vec::new();
        if let Some(name) = o
            .get("created_by_ref")
            .and_then(Value::as_str)
            .and_then(|id| self.identity_name(id))
        {
            tags.push(format!("identity:{name}"));
        }
        if let Some(c) = o.get("confidence").and_then(Value::as_u64) {
            tags.push(format!("confidence:{c}"));
        }
        for id in str_refs(o, "object_marking_refs")? {
            if let Some(level) = self.tlp_level(id) {
                tags.push(format!("tlp:{level}"));
            }
        }
        Ok(tags)
    }

    fn describe_indicator(&self, o: &Value) -> Result<Vec<String>, String> {
        let mut tags = self.describe(o)?;
        if let Some(id) = o.get("id").and_then(Value::as_str) {
            tags.push(format!("stix-id:{}", sanitize_tag(id)));
        }
        if let Some(Value::Array(kinds)) = o.get("indicator_types") {
            for k in kinds.iter().filter_map(Value::as_str) {
                tags.push(format!("indicator-type:{}", sanitize_tag(k)));
            }
        }
        if let Some(name) = o.get("name").and_then(Value::as_str).map(sanitize_tag) {
            if !name.is_empty() {
                tags.push(format!("name:{name}"));
            }
        }
        if let Some(until) = o.get("valid_until").and_then(Value::as_str) {
            tags.push(format!("valid-until:{}", sanitize_tag(until)));
        }
        Ok(tags)
    }

    fn tlp_level(&self, id: &str) -> Option<String> {
        if let Some(level) = tlp_of_id(id) {
            return Some(level.to_owned());
        }
        let m = self.by_id.get(id)?;
        if m.get("definition_type").and_then(Value::as_str) != Some("tlp") {
            return None;
        }
        let level = m.get("definition")?.get("tlp")?.as_str()?;
        crate::vocab::tlp_index(level).map(|i| crate::vocab::TLP[i].0.to_owned())
    }

    fn observables_of(&self, o: &Value) -> Result<Vec<Found>, String> {
        let mut found = Vec::new();
        for id in str_refs(o, "object_refs")? {
            if let Some(obj) = self.by_id.get(id) {
                collect(obj, &mut found);
            }
        }
        if let Some(Value::Object(embedded)) = o.get("objects") {
            for obj in embedded.values() {
                collect(obj, &mut found);
            }
        }
        Ok(found)
    }

    fn emit(
        &self,
        found: Vec<Found>,
        exported_ns: Option<&str>,
        first: Option<i64>,
        last: Option<i64>,
        count: u64,
        tags: Vec<String>,
    ) -> Vec<Observation> {
        found
            .into_iter()
            .map(|f| {
                let namespace = self
                    .mapping
                    .types
                    .get(&f.stix_type)
                    .map(String::as_str)
                    .or(exported_ns)
                    .unwrap_or(&self.mapping.default_namespace)
                    .to_owned();
                let mut all = vec![format!("stix-type:{}", sanitize_tag(&f.stix_type))];
                for t in &tags {
                    if !all.contains(t) {
                        all.push(t.clone());
                    }
                }
                Observation {
                    key: String::new(),
                    namespace,
                    value: f.value,
                    count,
                    first_seen: first,
                    last_seen: last,
                    tags: all,
                }
            })
            .collect()
    }
}

fn collect(o: &Value, out: &mut Vec<Found>) {
    let Some(t) = kind(o) else { return };
    if t == "file" {
        if let Some(Value::Object(hashes)) = o.get("hashes") {
            for (algorithm, digest) in hashes {
                if let Some(d) = digest.as_str().filter(|d| !d.is_empty()) {
                    out.push(Found {
                        stix_type: format!("file.{algorithm}"),
                        value: d.to_owned(),
                    });
                }
            }
        }
        return;
    }
    let value = match t {
        "mutex" | "windows-registry-key" => o.get("key").or_else(|| o.get("name")),
        _ => o.get("value"),
    };
    if let Some(v) = value.and_then(Value::as_str).filter(|v| !v.is_empty()) {
        out.push(Found {
            stix_type: t.to_owned(),
            value: v.to_owned(),
        });
    }
}

/// The literal values compared for equality in a STIX pattern, with their observable types.
fn from_pattern(pattern: &str) -> Vec<Found> {
    static COMPARISON: OnceLock<Option<Regex>> = OnceLock::new();
    let Some(re) = COMPARISON
        .get_or_init(|| {
            Regex::new(r"([a-z0-9_-]+):([a-zA-Z0-9_.\[\]'-]+)\s*=\s*'((?:[^'\\]|\\.)*)'").ok()
        })
        .as_ref()
    else {
        return Vec::new();
    };
    re.captures_iter(pattern)
        .filter_map(|c| {
            let t = c.get(1)?.as_str();
            let path = c.get(2)?.as_str();
            let value = unescape(c.get(3)?.as_str());
            if value.is_empty() {
                return None;
            }
            let stix_type = if t == "file" && path.starts_with("hashes") {
                let algorithm = path
                    .trim_start_matches("hashes")
                    .trim_matches(|c| c == '.' || c == '\'' || c == '[' || c == ']');
                format!("file.{algorithm}")
            } else {
                t.to_owned()
            };
            Some(Found { stix_type, value })
        })
        .collect()
}

/// A pattern's string literal: `\\` and `\'` stand for `\` and `'`.
fn unescape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    let mut chars = literal.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
