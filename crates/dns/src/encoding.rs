//! The value encodings of a DNS lookup: which value `<value labels>.<label>.<zone>` asks for.
//!
//! The labels left of the namespace label are decoded by the first rule that matches, in this
//! order (the order is what removes ambiguity):
//!
//! 1. **`_b32` + base32**: the leftmost label is `_b32` and the labels after it, concatenated,
//!    are RFC 4648 base32 (lowercase or not, no padding, split into labels of at most 63
//!    characters anywhere) of the value's UTF-8 bytes. `_b32.mfrggzdfmy.h.zone` looks up
//!    `abcdef` in the namespace of `h`. Any value can be asked this way (hashes, URLs, values
//!    with characters a DNS name cannot carry), up to what fits in a name of 255 bytes.
//!    A host name never has a `_` label (RFC 952/1123), so this never shadows a domain that
//!    can be looked up; a value that would itself start with a `_b32` label is asked in base32.
//! 2. **IPv4, reversed octets** (the DNSBL convention): exactly four labels, each a decimal
//!    number 0–255 without leading zeros. `4.3.2.1.ip.zone` looks up `1.2.3.4`. No top-level
//!    domain is all-numeric, so no domain is read as an address.
//! 3. **IPv6, reversed nibbles** (as in `ip6.arpa`): exactly 32 labels of one hex digit each.
//!    The value looked up is the address in its RFC 5952 text form (lowercase, longest run of
//!    zeros compressed: `2001:db8::1`), which is how sighthub's clients write IPv6 values.
//! 4. **Domain**: anything else made of letter/digit/hyphen/underscore labels is the domain
//!    itself, lowercased, without a trailing dot: `mail.example.com.dom.zone` looks up
//!    `mail.example.com`. DNS names are case-insensitive, so the lookup is lowercase.
//!
//! Anything else (an empty label list, a byte outside those classes, base32 that does not
//! decode to UTF-8, a value longer than the store accepts) is not a value: the server answers
//! NXDOMAIN, as for a value it does not hold.
//!
//! [`encode`] is the inverse a client uses (tests, the load script's Python twin).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The marker label of a base32-encoded value.
pub const B32_MARKER: &[u8] = b"_b32";

/// Why labels are not a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No label left of the namespace label.
    #[error("no value labels")]
    Empty,
    /// `_b32` with nothing after it, or text that is not RFC 4648 base32 without padding.
    #[error("not base32 (RFC 4648, no padding)")]
    Base32,
    /// Base32 that decodes to bytes that are not UTF-8.
    #[error("the base32 value is not UTF-8")]
    NotUtf8,
    /// A label with a byte outside letters, digits, `-` and `_`: ask in base32.
    #[error("a label has a byte a domain cannot carry; encode the value in base32")]
    BadLabel,
    /// Longer than the store accepts.
    #[error("the value is longer than the store accepts")]
    TooLong,
}

/// Which rule decoded a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `_b32` + base32 labels.
    Base32,
    /// Four reversed decimal octets.
    Ipv4,
    /// 32 reversed hex nibbles.
    Ipv6,
    /// The labels themselves.
    Domain,
}

/// Decodes the value labels (left to right, as on the wire, without the namespace label and
/// the zone) into the value to look up.
pub fn decode(labels: &[&[u8]]) -> Result<(Encoding, String), DecodeError> {
    let Some(first) = labels.first() else {
        return Err(DecodeError::Empty);
    };
    let value = if first.eq_ignore_ascii_case(B32_MARKER) {
        (Encoding::Base32, decode_b32(&labels[1..])?)
    } else if let Some(ip) = ipv4(labels) {
        (Encoding::Ipv4, ip.to_string())
    } else if let Some(ip) = ipv6(labels) {
        (Encoding::Ipv6, ip.to_string())
    } else {
        (Encoding::Domain, domain(labels)?)
    };
    if !sighthub_store::value_fits(&value.1) {
        return Err(DecodeError::TooLong);
    }
    Ok(value)
}

fn decode_b32(labels: &[&[u8]]) -> Result<String, DecodeError> {
    let mut text: Vec<u8> = labels.concat();
    if text.is_empty() {
        return Err(DecodeError::Base32);
    }
    text.make_ascii_uppercase();
    let bytes = data_encoding::BASE32_NOPAD
        .decode(&text)
        .map_err(|_| DecodeError::Base32)?;
    String::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)
}

fn ipv4(labels: &[&[u8]]) -> Option<Ipv4Addr> {
    let [d, c, b, a] = labels else { return None };
    let octet = |l: &[u8]| -> Option<u8> {
        let canonical = !l.is_empty()
            && l.len() <= 3
            && l.iter().all(u8::is_ascii_digit)
            && (l.len() == 1 || l[0] != b'0');
        if !canonical {
            return None;
        }
        std::str::from_utf8(l).ok()?.parse().ok()
    };
    Some(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?))
}

fn ipv6(labels: &[&[u8]]) -> Option<Ipv6Addr> {
    if labels.len() != 32 {
        return None;
    }
    let mut n: u128 = 0;
    // Reversed: the last label is the most significant nibble.
    for l in labels.iter().rev() {
        let [c] = l else { return None };
        let v = (*c as char).to_digit(16)?;
        n = (n << 4) | u128::from(v);
    }
    Some(Ipv6Addr::from(n))
}

fn domain(labels: &[&[u8]]) -> Result<String, DecodeError> {
    let mut out = String::new();
    for (i, l) in labels.iter().enumerate() {
        if l.is_empty()
            || !l
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(DecodeError::BadLabel);
        }
        if i > 0 {
            out.push('.');
        }
        for b in *l {
            out.push(b.to_ascii_lowercase() as char);
        }
    }
    Ok(out)
}

/// The value labels (as one dotted string, without the namespace label and zone) that ask
/// for `value` with `encoding`; `None` when `value` is not of that kind (an IPv4 encoding of
/// something that is not an address, a domain with a character a label cannot carry).
/// Base32 labels are cut at 63 characters.
pub fn encode(value: &str, encoding: Encoding) -> Option<String> {
    match encoding {
        Encoding::Ipv4 => {
            let ip: Ipv4Addr = value.parse().ok()?;
            let [a, b, c, d] = ip.octets();
            Some(format!("{d}.{c}.{b}.{a}"))
        }
        Encoding::Ipv6 => {
            let ip: Ipv6Addr = value.parse().ok()?;
            let mut out = String::with_capacity(64);
            let hex = format!("{:032x}", u128::from(ip));
            for (i, c) in hex.chars().rev().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push(c);
            }
            Some(out)
        }
        Encoding::Domain => {
            let labels: Vec<&[u8]> = value.split('.').map(str::as_bytes).collect();
            match decode(&labels) {
                Ok((Encoding::Domain, v)) if v == value => Some(v),
                _ => None,
            }
        }
        Encoding::Base32 => {
            let text = data_encoding::BASE32_NOPAD
                .encode(value.as_bytes())
                .to_ascii_lowercase();
            let mut out = String::from("_b32");
            for chunk in text.as_bytes().chunks(63) {
                let _ = write!(out, ".{}", String::from_utf8_lossy(chunk));
            }
            Some(out)
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn dec(name: &str) -> Result<(Encoding, String), DecodeError> {
        let labels: Vec<&[u8]> = if name.is_empty() {
            Vec::new()
        } else {
            name.split('.').map(str::as_bytes).collect()
        };
        decode(&labels)
    }

    #[test]
    fn ipv4_is_reversed_octets() {
        assert_eq!(dec("4.3.2.1"), Ok((Encoding::Ipv4, "1.2.3.4".into())));
        assert_eq!(dec("0.0.0.127"), Ok((Encoding::Ipv4, "127.0.0.0".into())));
        assert_eq!(
            encode("1.2.3.4", Encoding::Ipv4).as_deref(),
            Some("4.3.2.1")
        );
        // Not canonical octets: not an address, so a (numeric) domain.
        assert_eq!(dec("04.3.2.1"), Ok((Encoding::Domain, "04.3.2.1".into())));
        assert_eq!(dec("256.3.2.1"), Ok((Encoding::Domain, "256.3.2.1".into())));
        assert_eq!(dec("3.2.1"), Ok((Encoding::Domain, "3.2.1".into())));
    }

    #[test]
    fn ipv6_is_reversed_nibbles_in_rfc5952_form() {
        let q = encode("2001:db8::1", Encoding::Ipv6).expect("an address");
        assert_eq!(
            q,
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
        );
        assert_eq!(dec(&q), Ok((Encoding::Ipv6, "2001:db8::1".into())));
        assert_eq!(
            dec(&q.to_ascii_uppercase()),
            Ok((Encoding::Ipv6, "2001:db8::1".into()))
        );
        // 31 nibbles is not an address.
        assert_eq!(dec(&q[2..]).map(|v| v.0), Ok(Encoding::Domain));
    }

    #[test]
    fn domains_are_their_labels_lowercased() {
        assert_eq!(
            dec("Mail.Example.COM"),
            Ok((Encoding::Domain, "mail.example.com".into()))
        );
        assert_eq!(
            dec("_dmarc.example.com"),
            Ok((Encoding::Domain, "_dmarc.example.com".into()))
        );
        assert_eq!(dec("a b.com"), Err(DecodeError::BadLabel));
        assert_eq!(dec("a..com"), Err(DecodeError::BadLabel));
        assert_eq!(dec(""), Err(DecodeError::Empty));
        assert_eq!(encode("a/b", Encoding::Domain), None);
        assert_eq!(
            encode("A.com", Encoding::Domain),
            None,
            "not its lookup form"
        );
    }

    #[test]
    fn base32_carries_anything_and_wins_over_the_other_rules() {
        let url = "https://evil.example/path?q=1";
        let q = encode(url, Encoding::Base32).expect("always");
        assert!(q.starts_with("_b32."));
        assert_eq!(dec(&q), Ok((Encoding::Base32, url.into())));
        assert_eq!(
            dec(&q.to_ascii_uppercase()),
            Ok((Encoding::Base32, url.into()))
        );
        // A 64-hex SHA-256 digest is longer than one label: base32 splits it.
        let digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let q = encode(digest, Encoding::Base32).expect("always");
        assert_eq!(q.split('.').count(), 3);
        assert!(q.split('.').all(|l| l.len() <= 63));
        assert_eq!(dec(&q), Ok((Encoding::Base32, digest.into())));
        // Split anywhere: the labels are concatenated.
        assert_eq!(
            dec("_b32.mfrg.gzdfmy"),
            Ok((Encoding::Base32, "abcdef".into()))
        );
        assert_eq!(dec("_b32"), Err(DecodeError::Base32));
        assert_eq!(dec("_b32.m"), Err(DecodeError::Base32), "impossible length");
        assert_eq!(dec("_b32.mfrggzdfmy1"), Err(DecodeError::Base32));
        assert_eq!(dec("_b32.74"), Err(DecodeError::NotUtf8));
        // An address-looking value is still base32 after the marker.
        assert_eq!(
            dec(&encode("1.2.3.4", Encoding::Base32).expect("always")),
            Ok((Encoding::Base32, "1.2.3.4".into()))
        );
    }

    proptest::proptest! {
        #[test]
        fn any_labels_decode_to_a_value_that_encodes_back(name in proptest::collection::vec("_b32|[0-9]{1,3}|[0-9a-fA-F]|[a-zA-Z0-7_-]{0,9}|[\\x00-\\xff]{1,3}", 1..40)) {
            let labels: Vec<&[u8]> = name.iter().map(String::as_bytes).collect();
            if let Ok((how, value)) = decode(&labels) {
                let again = encode(&value, how).expect("a decoded value has its encoding");
                let relabels: Vec<&[u8]> = again.split('.').map(str::as_bytes).collect();
                proptest::prop_assert_eq!(decode(&relabels), Ok((how, value)));
            }
        }

        #[test]
        fn any_text_round_trips_in_base32(value in "\\PC{1,120}") {
            let q = encode(&value, Encoding::Base32).expect("always");
            let labels: Vec<&[u8]> = q.split('.').map(str::as_bytes).collect();
            proptest::prop_assert!(labels.iter().all(|l| l.len() <= 63));
            proptest::prop_assert_eq!(decode(&labels), Ok((Encoding::Base32, value)));
        }
    }
}
