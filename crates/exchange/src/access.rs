//! Exchange keys: who may publish what, and read what.
//!
//! A key names its organisation and grants `publish` and `read` on **feeds**. A message
//! belongs to the feed of its `format/type` (`intelmq/event`) and to one tag feed per
//! `meta.tags` entry. A grant is one of:
//!
//! | grant | matches a message when |
//! |---|---|
//! | `*` | always |
//! | `intelmq`, `intelmq/event` | its `format/type` equals the grant or starts with it followed by `/` |
//! | `tag:<prefix>` | one of its tags equals `<prefix>`, or starts with it followed by `:` `/` `=` or `.` (or `<prefix>` itself ends with one of those) — `tag:feed` matches `feed:x` and `feed/x`, not `feedback` |
//!
//! A message may be published when one of its feeds is granted `publish`, and read when one
//! of its feeds is granted `read` **and** its TLP (most restrictive of `payload.tlp` and
//! `tlp:` tags; `default_tlp` when it has none) is at most the key's `tlp_max`.
//!
//! [`Feed::parse`] is the one parser of a feed grant: every configured list of feeds (an
//! exchange key's `publish` and `read`, a relay peer's `feeds`, an IntelMQ delivery's `read`)
//! is a `Vec<Feed>` deserialised through it, so a bad feed is refused when the configuration
//! is read, with the same message wherever it stands. A TLP ceiling is a [`Tlp`], read by its
//! own one parser. [`Grants::reader`] is the one constructor of the grants of a reader
//! configured that way (relay peers, IntelMQ deliveries).
//!
//! Keys are kept as SHA-256 digests. The credential is the raw `Authorization` header
//! value, or what follows `Bearer ` / `Token `, or the password of HTTP Basic (what
//! IntelMQ's REST API output bot sends). The server's admin key may do everything, as any
//! organisation; with authentication off, so may anyone.
//!
//! Before any key, a connection is counted against its client's share of a listener
//! ([`client_scope`]): the one rule both listeners (the HTTP(S) edge and the IntelMQ TCP
//! listener) use for their per-address connection limits.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use sighthub_iep04::Tlp;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use uuid::Uuid;

use crate::config::{ExchangeConfig, KeyConfig};
use crate::error::{Error, Result};

/// One feed grant; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// `*`: every message.
    All,
    /// A `format/type` prefix by whole segments.
    Type(String),
    /// A tag prefix (`tag:<prefix>`).
    Tag(String),
}

const TAG_SEPARATORS: &[char] = &[':', '/', '=', '.'];

impl Feed {
    /// Parses a grant string.
    pub fn parse(s: &str) -> Result<Feed, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Feed::All);
        }
        if let Some(tag) = s.strip_prefix("tag:") {
            if tag.is_empty() {
                return Err("'tag:' needs a tag prefix".into());
            }
            return Ok(Feed::Tag(tag.to_owned()));
        }
        let t = s.trim_matches('/');
        if t.is_empty() || t.split('/').any(str::is_empty) {
            return Err(format!(
                "'{s}' is not a feed (use *, format[/type] or tag:<prefix>)"
            ));
        }
        Ok(Feed::Type(t.to_owned()))
    }

    /// Does a message with this `format/type` and these tags belong to the feed?
    pub fn matches(&self, format_type: &str, tags: &[impl AsRef<str>]) -> bool {
        match self {
            Feed::All => true,
            Feed::Type(p) => {
                format_type == p
                    || (format_type.starts_with(p.as_str())
                        && format_type.as_bytes().get(p.len()) == Some(&b'/'))
            }
            Feed::Tag(p) => tags.iter().any(|t| tag_matches(p, t.as_ref())),
        }
    }
}

/// A feed in a configuration file: a string read by [`Feed::parse`].
impl<'de> serde::Deserialize<'de> for Feed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Feed::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn tag_matches(prefix: &str, tag: &str) -> bool {
    if tag == prefix {
        return true;
    }
    let Some(rest) = tag.strip_prefix(prefix) else {
        return false;
    };
    prefix.ends_with(TAG_SEPARATORS) || rest.starts_with(TAG_SEPARATORS)
}

/// Everything one caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// The organisation the caller speaks for.
    pub org: Uuid,
    /// Feeds it may publish to.
    pub publish: Vec<Feed>,
    /// Feeds it may read.
    pub read: Vec<Feed>,
    /// Most restrictive TLP it may read.
    pub tlp_max: Tlp,
    /// May publish other organisations' messages (relaying).
    pub relay: bool,
    /// The admin key (or authentication off): everything, as any organisation.
    pub admin: bool,
    /// Tags added to the bare events it publishes.
    pub bare_tags: Vec<String>,
}

impl Grants {
    /// Grants of the admin key, speaking for `org`.
    pub fn admin(org: Uuid) -> Grants {
        Grants {
            org,
            publish: vec![Feed::All],
            read: vec![Feed::All],
            tlp_max: Tlp::Red,
            relay: true,
            admin: true,
            bare_tags: Vec::new(),
        }
    }

    /// Grants that only read `read` up to `tlp_max`, for `org`: what a relay peer is sent or
    /// an IntelMQ delivery delivers.
    pub fn reader(org: Uuid, read: Vec<Feed>, tlp_max: Tlp) -> Grants {
        Grants {
            org,
            publish: Vec::new(),
            read,
            tlp_max,
            relay: false,
            admin: false,
            bare_tags: Vec::new(),
        }
    }

    /// The grants of a configured exchange key.
    pub fn of_key(kc: &KeyConfig) -> Grants {
        Grants {
            org: kc.org,
            publish: kc.publish.clone(),
            read: kc.read.clone(),
            tlp_max: kc.tlp_max,
            relay: kc.relay,
            admin: false,
            bare_tags: kc.tags.clone(),
        }
    }

    /// May it publish anything at all?
    pub fn publishes_anything(&self) -> bool {
        !self.publish.is_empty()
    }

    /// May it read anything at all?
    pub fn reads_anything(&self) -> bool {
        !self.read.is_empty()
    }

    /// May it read every message whatever its feed and TLP? Only such a key learns about a
    /// message it cannot see any more (dropped by retention: its feed and TLP are gone).
    pub fn reads_everything(&self) -> bool {
        self.admin || (self.tlp_max == Tlp::Red && self.read.contains(&Feed::All))
    }

    /// May it publish a message with this `format/type` and tags?
    pub fn may_publish(&self, format_type: &str, tags: &[impl AsRef<str>]) -> bool {
        self.publish.iter().any(|f| f.matches(format_type, tags))
    }

    /// May it read a message with this `format/type`, tags and TLP (`default_tlp` when none)?
    pub fn may_read(
        &self,
        format_type: &str,
        tags: &[impl AsRef<str>],
        tlp: Option<Tlp>,
        default_tlp: Tlp,
    ) -> bool {
        tlp.unwrap_or(default_tlp) <= self.tlp_max
            && self.read.iter().any(|f| f.matches(format_type, tags))
    }

    /// May it publish a message whose `meta.uuid_org` is `org`?
    pub fn may_speak_for(&self, org: Uuid) -> bool {
        self.relay || self.admin || org == self.org
    }
}

/// The exchange's key table.
#[derive(Debug)]
pub struct Keys {
    /// `None`: authentication off, everyone is admin.
    keys: Option<HashMap<[u8; 32], Arc<Grants>>>,
    admin: Arc<Grants>,
}

/// How the server's own admin key is handed to the exchange.
#[derive(Debug, Clone)]
pub enum AdminKey {
    /// Authentication is off: anyone may do everything.
    AuthenticationOff,
    /// The admin key in clear (it is digested at once and not kept).
    Key(String),
    /// The SHA-256 digest of the admin key.
    Digest([u8; 32]),
    /// No admin key for the exchange (only `[exchange.keys]`).
    None,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Keys {
    /// Builds the table from the configuration (validated before) and the admin key.
    pub fn new(cfg: &ExchangeConfig, admin_key: &AdminKey, hub_org: Uuid) -> Result<Keys> {
        let admin = Arc::new(Grants::admin(hub_org));
        let mut keys = HashMap::new();
        match admin_key {
            AdminKey::AuthenticationOff => return Ok(Keys { keys: None, admin }),
            AdminKey::Key(k) => {
                keys.insert(digest(k.trim()), Arc::clone(&admin));
            }
            AdminKey::Digest(d) => {
                keys.insert(*d, Arc::clone(&admin));
            }
            AdminKey::None => {}
        }
        for (key, kc) in &cfg.keys {
            let grants = Grants::of_key(kc);
            let d = digest(key);
            if keys.contains_key(&d) {
                return Err(Error::Config(
                    "an [exchange.keys] key is the admin key".into(),
                ));
            }
            keys.insert(d, Arc::new(grants));
        }
        Ok(Keys {
            keys: Some(keys),
            admin,
        })
    }

    /// Whether `key` (in clear) is one of these keys (the admin key included).
    pub fn knows(&self, key: &str) -> bool {
        self.keys
            .as_ref()
            .is_some_and(|k| k.contains_key(&digest(key.trim())))
    }

    /// Identifies the caller from the raw `Authorization` header value.
    pub fn caller(&self, header: Option<&[u8]>) -> Result<Arc<Grants>> {
        let Some(keys) = &self.keys else {
            return Ok(Arc::clone(&self.admin));
        };
        let raw = header.ok_or(Error::Unauthorized)?;
        let text = std::str::from_utf8(raw)
            .map_err(|_| Error::BadRequest("Authorization header is not valid UTF-8.".into()))?
            .trim();
        credentials(text)
            .into_iter()
            .find_map(|k| keys.get(&digest(&k)))
            .map(Arc::clone)
            .ok_or_else(|| Error::Forbidden(UNKNOWN_KEY.into()))
    }
}

/// The answer to a key this server does not know: which keys it knows, and the forms accepted.
pub const UNKNOWN_KEY: &str = "Unknown API key: send a key of [exchange.keys] or the admin key, \
     as the Authorization header itself, as `Bearer <key>`, or as the HTTP Basic password.";

/// The candidate keys in an `Authorization` value, most specific first: what follows
/// `Bearer ` or `Token `, or the password of HTTP Basic, then the whole value. The one reading
/// of the header for both APIs (the sighting API's keys are looked up the same way).
pub fn credentials(text: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(2);
    if let Some((scheme, rest)) = text.split_once(' ') {
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            if let Some(pw) = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .map(|up| match up.split_once(':') {
                    Some((_, pw)) => pw.to_owned(),
                    None => up,
                })
            {
                out.push(pw);
            }
        } else if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            out.push(rest.to_owned());
        }
    }
    out.push(text.to_owned());
    out
}

/// The client a connection from `ip` is counted as, for per-address connection limits: an
/// IPv4 address (an IPv4-mapped IPv6 address is its IPv4 address), or the /64 prefix of an
/// IPv6 address, since one IPv6 host usually holds a whole /64 and could otherwise open each
/// connection from another address.
pub fn client_scope(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn one_ipv6_host_is_one_client_and_mapped_ipv4_is_ipv4() {
        assert_eq!(client_scope(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_scope(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            client_scope(ip("2001:db8:1:2:aaaa::1")),
            client_scope(ip("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_ne!(
            client_scope(ip("2001:db8:1:2::1")),
            client_scope(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_scope(ip("::1")), ip("::"));
    }

    use super::*;
    use crate::config::KeyConfig;

    #[test]
    fn feeds_match_by_segment() {
        let t = Feed::parse("intelmq").expect("feed");
        let none: [&str; 0] = [];
        assert!(t.matches("intelmq/event", &none));
        assert!(!t.matches("intelmqx/event", &none));
        assert!(Feed::parse("/intelmq/event/")
            .expect("feed")
            .matches("intelmq/event", &none));
        assert!(!Feed::parse("intelmq/report")
            .expect("feed")
            .matches("intelmq/event", &none));
        let tag = Feed::parse("tag:feed").expect("feed");
        assert!(tag.matches("x/y", &["a", "feed:shadowserver"]));
        assert!(tag.matches("x/y", &["feed"]));
        assert!(!tag.matches("x/y", &["feedback"]));
        assert!(Feed::parse("tag:feed:")
            .expect("feed")
            .matches("x/y", &["feed:x"]));
        assert_eq!(Feed::parse("*"), Ok(Feed::All));
        assert!(Feed::parse("a//b").is_err());
        assert!(Feed::parse("tag:").is_err());
        assert!(Feed::parse("").is_err());
    }

    /// The one parser, as every configuration list reaches it: each accepted spelling, each
    /// refusal with its message.
    #[test]
    fn configured_feeds_go_through_the_one_parser() {
        let read = |json: &str| serde_json::from_str::<Vec<Feed>>(json);
        assert_eq!(
            read(r#"["*", " intelmq ", "/intelmq/event/", "tag:feed:x", "tag:a b"]"#)
                .expect("accepted"),
            vec![
                Feed::All,
                Feed::Type("intelmq".into()),
                Feed::Type("intelmq/event".into()),
                Feed::Tag("feed:x".into()),
                Feed::Tag("a b".into()),
            ]
        );
        for (bad, says) in [
            (r#"["tag:"]"#, "'tag:' needs a tag prefix"),
            (
                r#"["a//b"]"#,
                "'a//b' is not a feed (use *, format[/type] or tag:<prefix>)",
            ),
            (r#"[""]"#, "'' is not a feed"),
            (r#"["/"]"#, "'/' is not a feed"),
            (r#"["*", "x", "tag:"]"#, "'tag:' needs a tag prefix"),
        ] {
            let e = read(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(read(r#"[1]"#).is_err(), "a feed is a string");
    }

    #[test]
    fn a_reader_reads_only() {
        let g = Grants::reader(
            Uuid::from_u128(3),
            vec![Feed::Tag("feed".into())],
            Tlp::Green,
        );
        assert_eq!(g.org, Uuid::from_u128(3));
        assert!(!g.publishes_anything() && !g.relay && !g.admin);
        assert!(g.may_read("x/y", &["feed:a"], Some(Tlp::Green), Tlp::Amber));
        assert!(!g.may_read("x/y", &["feed:a"], None, Tlp::Amber));
        assert!(!g.may_read("x/y", &["other"], Some(Tlp::Clear), Tlp::Amber));
        assert!(!g.reads_everything());
    }

    fn cfg_with_key() -> ExchangeConfig {
        let mut cfg = ExchangeConfig::default();
        cfg.keys.insert(
            "pub-key".into(),
            KeyConfig {
                org: Uuid::from_u128(7),
                publish: vec![Feed::Type("intelmq/event".into())],
                read: vec![Feed::Tag("feed".into())],
                tlp_max: Tlp::Green,
                relay: false,
                tags: vec![],
            },
        );
        cfg
    }

    #[test]
    fn callers_by_header_forms() {
        let keys = Keys::new(
            &cfg_with_key(),
            &AdminKey::Key("adm".into()),
            Uuid::from_u128(1),
        )
        .expect("keys");
        assert!(matches!(keys.caller(None), Err(Error::Unauthorized)));
        match keys.caller(Some(b"nope")) {
            Err(Error::Forbidden(m)) => assert!(m.contains("`Bearer <key>`"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(keys.caller(Some(b"adm")).expect("admin").admin);
        let g = keys.caller(Some(b"pub-key")).expect("raw");
        assert_eq!(g.org, Uuid::from_u128(7));
        assert!(keys.caller(Some(b"Bearer pub-key")).is_ok());
        assert!(keys.caller(Some(b"token  pub-key ")).is_ok());
        // Basic intelmq:pub-key
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("intelmq:pub-key")
        );
        assert!(keys.caller(Some(basic.as_bytes())).is_ok());
        let basic_wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("pub-key:x")
        );
        assert!(keys.caller(Some(basic_wrong.as_bytes())).is_err());

        let open = Keys::new(
            &cfg_with_key(),
            &AdminKey::AuthenticationOff,
            Uuid::from_u128(1),
        )
        .expect("keys");
        assert!(open.caller(None).expect("anyone").admin);
    }

    #[test]
    fn read_checks_feed_and_tlp() {
        let keys = Keys::new(&cfg_with_key(), &AdminKey::None, Uuid::from_u128(1)).expect("keys");
        let g = keys.caller(Some(b"pub-key")).expect("key");
        let tags = ["feed:a"];
        assert!(g.may_read("intelmq/event", &tags, Some(Tlp::Green), Tlp::Amber));
        assert!(!g.may_read("intelmq/event", &tags, Some(Tlp::Amber), Tlp::Amber));
        assert!(
            !g.may_read("intelmq/event", &tags, None, Tlp::Amber),
            "unlabelled counts as default_tlp"
        );
        assert!(g.may_read("intelmq/event", &tags, None, Tlp::Clear));
        assert!(!g.may_read("intelmq/event", &["other"], Some(Tlp::Clear), Tlp::Clear));
        assert!(g.may_publish("intelmq/event", &["x"]));
        assert!(!g.may_publish("ail/item", &["feed:a"]));
        assert!(g.may_speak_for(Uuid::from_u128(7)));
        assert!(!g.may_speak_for(Uuid::from_u128(8)));
    }
}
