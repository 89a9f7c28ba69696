//! Traffic Light Protocol level of a message.
//!
//! Sources: the IntelMQ payload field `tlp` (`WHITE`, `GREEN`, `AMBER`, `RED`) and MISP-style
//! tags in `meta.tags` (`tlp:amber`, `tlp:clear`, `tlp:amber+strict`, …). TLP 1.0 `WHITE` and
//! TLP 2.0 `CLEAR` are the same level. When several sources disagree the most restrictive level
//! wins, since sharing less than allowed is the safe mistake.

use std::fmt;
use std::str::FromStr;

use crate::model::Message;

/// A TLP level, ordered from least to most restrictive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tlp {
    /// `CLEAR` (TLP 2.0) / `WHITE` (TLP 1.0): no restriction.
    Clear,
    /// `GREEN`: community-wide.
    Green,
    /// `AMBER`: recipients' organisations and their clients.
    Amber,
    /// `AMBER+STRICT`: recipients' organisations only.
    AmberStrict,
    /// `RED`: named recipients only.
    Red,
}

impl Tlp {
    /// Upper-case TLP 2.0 name (`CLEAR`, `GREEN`, `AMBER`, `AMBER+STRICT`, `RED`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tlp::Clear => "CLEAR",
            Tlp::Green => "GREEN",
            Tlp::Amber => "AMBER",
            Tlp::AmberStrict => "AMBER+STRICT",
            Tlp::Red => "RED",
        }
    }
}

impl fmt::Display for Tlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string is not a TLP level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a TLP level: {0:?}")]
pub struct UnknownTlp(pub String);

impl FromStr for Tlp {
    type Err = UnknownTlp;

    /// Case-insensitive, surrounding whitespace and an optional `tlp:` prefix ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = match t.get(..4) {
            Some(p) if p.eq_ignore_ascii_case("tlp:") => t.get(4..).unwrap_or_default().trim(),
            _ => t,
        };
        match t.to_ascii_lowercase().as_str() {
            "clear" | "white" => Ok(Tlp::Clear),
            "green" => Ok(Tlp::Green),
            "amber" => Ok(Tlp::Amber),
            "amber+strict" => Ok(Tlp::AmberStrict),
            "red" => Ok(Tlp::Red),
            _ => Err(UnknownTlp(s.to_owned())),
        }
    }
}

/// A TLP level in a configuration file: the same parser as [`Tlp::from_str`], so every
/// `tlp_max` and `default_tlp` accepts the same spellings and is checked when the file is read.
impl<'de> serde::Deserialize<'de> for Tlp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Message {
    /// The message's TLP: the most restrictive of `payload.tlp` and every `tlp:` tag in
    /// `meta.tags`; `None` when neither is there. A value that is there but not a
    /// recognisable level (`"purple"`, `tlp:bogus`, a number) is [`Tlp::Red`], the most
    /// restrictive: a label nobody understands must not make a message more widely readable
    /// than one without a label (which readers take as their configured default).
    pub fn tlp(&self) -> Option<Tlp> {
        let from_payload = self
            .payload
            .as_ref()
            .and_then(|p| p.get("tlp"))
            .filter(|v| !v.is_null())
            .map(|v| v.as_str().and_then(|s| s.parse().ok()).unwrap_or(Tlp::Red));
        let from_tags = self.meta.iter().flat_map(|m| &m.tags).filter_map(|tag| {
            let prefix = tag.get(..4)?;
            if prefix.eq_ignore_ascii_case("tlp:") {
                Some(tag.parse().unwrap_or(Tlp::Red))
            } else {
                None
            }
        });
        from_payload.into_iter().chain(from_tags).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(payload_tlp: Option<&str>, tags: &[&str]) -> Message {
        let mut v = json!({"format": "intelmq", "version": 1, "type": "event",
            "meta": {"uuid": "03c51929-eeab-4d47-9dc0-c667f94c7d2c", "tags": tags},
            "payload": {}});
        if let Some(t) = payload_tlp {
            v["payload"]["tlp"] = json!(t);
        }
        Message::from_value(v).expect("valid test message")
    }

    #[test]
    fn parses_names_and_aliases() {
        assert_eq!("WHITE".parse(), Ok(Tlp::Clear));
        assert_eq!("tlp:clear".parse(), Ok(Tlp::Clear));
        assert_eq!(" TLP:Amber+Strict ".parse(), Ok(Tlp::AmberStrict));
        assert_eq!("red".parse(), Ok(Tlp::Red));
        assert!("tlp:".parse::<Tlp>().is_err());
        assert!("purple".parse::<Tlp>().is_err());
        assert!(
            "é".parse::<Tlp>().is_err(),
            "non-ASCII must not panic on slicing"
        );
        assert_eq!(Tlp::AmberStrict.to_string(), "AMBER+STRICT");
        assert_eq!(
            serde_json::from_str::<Tlp>(r#"" tlp:white""#).ok(),
            Some(Tlp::Clear),
            "a configured level goes through the same parser"
        );
        let e = serde_json::from_str::<Tlp>(r#""purple""#).expect_err("not a level");
        assert!(e.to_string().contains("not a TLP level"), "{e}");
        assert!(
            Tlp::Clear < Tlp::Green && Tlp::Amber < Tlp::AmberStrict && Tlp::AmberStrict < Tlp::Red
        );
    }

    #[test]
    fn from_payload_or_tags_most_restrictive_wins() {
        assert_eq!(msg(Some("AMBER"), &[]).tlp(), Some(Tlp::Amber));
        assert_eq!(msg(None, &["mails", "tlp:green"]).tlp(), Some(Tlp::Green));
        assert_eq!(msg(Some("GREEN"), &["tlp:red"]).tlp(), Some(Tlp::Red));
        assert_eq!(msg(Some("RED"), &["tlp:white"]).tlp(), Some(Tlp::Red));
        assert_eq!(msg(None, &["green", "ñññ", "tlpx"]).tlp(), None);
        assert_eq!(Message::new("intelmq", "event").tlp(), None);
    }

    #[test]
    fn an_unrecognised_label_is_the_most_restrictive() {
        assert_eq!(
            msg(None, &["green", "tlp:bogus", "ñññ"]).tlp(),
            Some(Tlp::Red)
        );
        assert_eq!(msg(None, &["tlp:"]).tlp(), Some(Tlp::Red));
        assert_eq!(msg(Some("purple"), &["tlp:clear"]).tlp(), Some(Tlp::Red));
        assert_eq!(msg(Some(""), &[]).tlp(), Some(Tlp::Red));
        let mut m = msg(None, &[]);
        if let Some(p) = m.payload.as_mut() {
            p.insert("tlp".into(), json!(3));
        }
        assert_eq!(m.tlp(), Some(Tlp::Red));
        if let Some(p) = m.payload.as_mut() {
            p.insert("tlp".into(), json!(null));
        }
        assert_eq!(m.tlp(), None);
        assert_eq!(Message::new("intelmq", "event").tlp(), None);
    }
}
