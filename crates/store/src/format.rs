//! Per-namespace value formats: RAW, SHA256, BASE64URL.
//!
//! Clients always send the raw value; the namespace's format decides what is stored and shown.
//! SHA256 shows the lowercase hex of the hash (the raw value is never stored); BASE64URL is
//! RFC 4648 §5 without padding.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// How values of a namespace are stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueFormat {
    /// As given.
    #[default]
    Raw,
    /// Lowercase hex of the SHA-256 of the value.
    Sha256,
    /// Base64url without padding.
    Base64Url,
}

impl ValueFormat {
    /// Parses `RAW`, `SHA256` or `BASE64URL` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "RAW" => Some(Self::Raw),
            "SHA256" => Some(Self::Sha256),
            "BASE64URL" => Some(Self::Base64Url),
            _ => None,
        }
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "RAW",
            Self::Sha256 => "SHA256",
            Self::Base64Url => "BASE64URL",
        }
    }

    /// The stored form of a raw value.
    pub fn encode(self, raw: &str) -> Cow<'_, str> {
        match self {
            Self::Raw => Cow::Borrowed(raw),
            Self::Sha256 => Cow::Owned(hex::encode(Sha256::digest(raw.as_bytes()))),
            Self::Base64Url => {
                Cow::Owned(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
            }
        }
    }

    /// The stored form of a value that is looked up (read, bulk read, the shadow sighting of a
    /// read, `/_api/who`). Equal to [`Self::encode`], except in a SHA256 namespace with digest
    /// lookups (`digests`): there a value of exactly 64 hex digits is taken as the digest
    /// itself (lowercased), not hashed again, which is what MISP sends. No ambiguity arises:
    /// writes always hash, and a lookup of a raw value that happens to be 64 hex digits must
    /// send its digest, as every lookup of that namespace does.
    pub fn encode_lookup(self, raw: &str, digests: bool) -> Cow<'_, str> {
        match self {
            Self::Sha256 if digests && is_sha256_hex(raw) => {
                if raw.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(raw.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(raw)
                }
            }
            other => other.encode(raw),
        }
    }

    /// One-byte tag for storage.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Self::Raw => 0,
            Self::Sha256 => 1,
            Self::Base64Url => 2,
        }
    }

    /// Inverse of [`Self::tag`].
    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(Self::Raw),
            1 => Some(Self::Sha256),
            2 => Some(Self::Base64Url),
            _ => None,
        }
    }
}

/// True for exactly 64 hex digits (either case): the text form of a SHA-256 digest.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn encodes() {
        assert_eq!(ValueFormat::Raw.encode("1.2.3.4"), "1.2.3.4");
        assert_eq!(
            ValueFormat::Sha256.encode("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ValueFormat::Base64Url.encode("\u{fb}\u{ff}"), "w7vDvw");
        assert_eq!(ValueFormat::Base64Url.encode("a?"), "YT8");
    }

    #[test]
    fn parses_names() {
        for f in [
            ValueFormat::Raw,
            ValueFormat::Sha256,
            ValueFormat::Base64Url,
        ] {
            assert_eq!(ValueFormat::parse(f.name()), Some(f));
            assert_eq!(ValueFormat::from_tag(f.tag()), Some(f));
        }
        assert_eq!(ValueFormat::parse("sha256"), Some(ValueFormat::Sha256));
        assert_eq!(ValueFormat::parse("MD5"), None);
    }

    #[test]
    fn digest_lookups_take_a_digest_as_it_is() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let f = ValueFormat::Sha256;
        assert_eq!(f.encode_lookup("abc", true), abc, "a raw value is hashed");
        assert_eq!(
            f.encode_lookup(abc, true),
            abc,
            "a digest is not hashed again"
        );
        assert_eq!(f.encode_lookup(&abc.to_uppercase(), true), abc);
        assert_ne!(f.encode_lookup(abc, false), abc, "off: hashed like a write");
        assert_eq!(
            f.encode_lookup(&abc[1..], true),
            f.encode(&abc[1..]),
            "63 digits"
        );
        let not_hex = format!("{}g", &abc[1..]);
        assert_eq!(f.encode_lookup(&not_hex, true), f.encode(&not_hex));
        assert_eq!(ValueFormat::Raw.encode_lookup(abc, true), abc);
        assert_eq!(
            ValueFormat::Base64Url.encode_lookup(abc, true),
            ValueFormat::Base64Url.encode(abc)
        );
    }
}
