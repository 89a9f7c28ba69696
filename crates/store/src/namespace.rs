//! Namespaces: `/`-separated paths, normalised, with private `_` namespaces.
//!
//! Leading and trailing `/` are ignored (`/a/b` = `a/b` = `a/b/`); an empty namespace or an
//! empty segment (`a//b`) is refused. A namespace whose first segment starts with `_` is
//! private to the engine (`_all`, `_shadow/…`, `_expired/…`, `_config…`, `_stats`): clients
//! may read most of them but never write them, and they never count toward consensus.

use std::fmt;

/// Longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 1024;

/// Why a namespace was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceError {
    /// Nothing left after removing leading and trailing `/`.
    #[error("Namespace is empty.")]
    Empty,
    /// Two `/` in a row.
    #[error("Namespace '{0}' has an empty segment.")]
    EmptySegment(String),
    /// Control characters (including NUL) are not allowed.
    #[error("Namespace contains a control character.")]
    ControlChar,
    /// Longer than [`MAX_NAMESPACE_LEN`].
    #[error("Namespace is longer than {MAX_NAMESPACE_LEN} bytes.")]
    TooLong,
}

/// A normalised, validated namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace(String);

/// The namespace backing consensus: every value once, counted per namespace holding it.
pub const ALL: &str = "_all";
/// Prefix of shadow namespaces (reads of values).
pub const SHADOW_PREFIX: &str = "_shadow/";
/// Prefix of expired-value namespaces.
pub const EXPIRED_PREFIX: &str = "_expired/";

impl Namespace {
    /// Parses and normalises a namespace.
    pub fn parse(raw: &str) -> Result<Self, NamespaceError> {
        let trimmed = raw.trim_matches('/');
        if trimmed.is_empty() {
            return Err(NamespaceError::Empty);
        }
        if trimmed.len() > MAX_NAMESPACE_LEN {
            return Err(NamespaceError::TooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(NamespaceError::ControlChar);
        }
        if trimmed.split('/').any(str::is_empty) {
            return Err(NamespaceError::EmptySegment(trimmed.to_owned()));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// Builds the namespace from bytes the store wrote itself (already normalised).
    pub(crate) fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first segment.
    pub fn first_segment(&self) -> &str {
        self.0.split('/').next().unwrap_or("")
    }

    /// True for private namespaces (first segment starts with `_`).
    pub fn is_internal(&self) -> bool {
        self.0.starts_with('_')
    }

    /// True for `_config` and below, which are never readable through the sighting API.
    pub fn is_config(&self) -> bool {
        self.first_segment() == "_config"
    }

    /// The `_shadow/<ns>` namespace for this one.
    pub fn shadow(&self) -> Self {
        Self(format!("{SHADOW_PREFIX}{}", self.0))
    }

    /// The `_expired/<ns>` namespace for this one.
    pub fn expired(&self) -> Self {
        Self(format!("{EXPIRED_PREFIX}{}", self.0))
    }

    /// The `_all` namespace.
    pub fn all() -> Self {
        Self(ALL.to_owned())
    }

    /// The namespace whose value format applies here: `_shadow/x` and `_expired/x` use the
    /// format of `x`, so a SHA256 namespace never leaks a raw value into its shadow.
    pub fn format_owner(&self) -> &str {
        let mut s = self.0.as_str();
        loop {
            if let Some(rest) = s.strip_prefix(SHADOW_PREFIX) {
                s = rest;
            } else if let Some(rest) = s.strip_prefix(EXPIRED_PREFIX) {
                s = rest;
            } else {
                return s;
            }
        }
    }

    /// True when `self` equals `prefix` or lies below it, by whole segments.
    pub fn is_within(&self, prefix: &str) -> bool {
        let prefix = prefix.trim_matches('/');
        prefix.is_empty()
            || self.0 == prefix
            || (self.0.starts_with(prefix) && self.0.as_bytes().get(prefix.len()) == Some(&b'/'))
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn normalises_slashes() {
        for raw in ["a/b", "/a/b", "a/b/", "//a/b//"] {
            assert_eq!(Namespace::parse(raw).map(|n| n.0), Ok("a/b".to_owned()));
        }
    }

    #[test]
    fn refuses_empty_and_empty_segments() {
        assert_eq!(Namespace::parse(""), Err(NamespaceError::Empty));
        assert_eq!(Namespace::parse("///"), Err(NamespaceError::Empty));
        assert!(matches!(
            Namespace::parse("a//b"),
            Err(NamespaceError::EmptySegment(_))
        ));
        assert_eq!(Namespace::parse("a\0b"), Err(NamespaceError::ControlChar));
        assert_eq!(
            Namespace::parse(&"x".repeat(MAX_NAMESPACE_LEN + 1)),
            Err(NamespaceError::TooLong)
        );
    }

    #[test]
    fn internal_is_first_segment_only() {
        assert!(Namespace::parse("_all")
            .map(|n| n.is_internal())
            .unwrap_or(false));
        assert!(Namespace::parse("/_shadow/x")
            .map(|n| n.is_internal())
            .unwrap_or(false));
        assert!(!Namespace::parse("a/_x/b")
            .map(|n| n.is_internal())
            .unwrap_or(true));
        assert!(Namespace::parse("_config/a")
            .map(|n| n.is_config())
            .unwrap_or(false));
        assert!(!Namespace::parse("_configx")
            .map(|n| n.is_config())
            .unwrap_or(true));
    }

    #[test]
    fn scope_by_whole_segments() {
        let ns = Namespace::parse("feeds/misp/ips").unwrap_or_else(|_| Namespace::all());
        assert!(ns.is_within("feeds/misp"));
        assert!(ns.is_within("feeds"));
        assert!(ns.is_within("/feeds/misp/"));
        assert!(!ns.is_within("feeds/mi"));
        let other = Namespace::parse("feeds/misp-internal").unwrap_or_else(|_| Namespace::all());
        assert!(!other.is_within("feeds/misp"));
    }

    #[test]
    fn format_owner_strips_private_prefixes() {
        let ns = Namespace::parse("_shadow/_expired/a/b").unwrap_or_else(|_| Namespace::all());
        assert_eq!(ns.format_owner(), "a/b");
        assert_eq!(Namespace::all().format_owner(), "_all");
    }
}
