//! API keys and their grants.
//!
//! A key has grants `r`, `w` or `rw`, each optionally scoped to a namespace prefix by whole
//! segments (`rw:feeds/misp` allows `feeds/misp` and `feeds/misp/ips`, not `feeds/misp-x`),
//! and may be `admin` (every right). The grant syntax is SightingDB's: `"rw, admin"`, `"r"`,
//! `"rw:feeds/misp, r:shared"`.
//!
//! The key is the `Authorization` header read as the exchange reads it
//! ([`sighthub_exchange::access::credentials`]): the raw key, `Bearer <key>`, `Token <key>`
//! or HTTP Basic with the key as password.
//!
//! Keys are kept only as SHA-256 digests, so a key never sits in memory or logs in clear
//! after start-up and lookups do not compare secrets byte by byte.
//!
//! Private namespaces are authorised through the namespace they mirror: `_shadow/x` and
//! `_expired/x` need the grant on `x`; `_all` and other private namespaces need an
//! unscoped grant.

use crate::error::{Access, ApiError};
use sha2::{Digest, Sha256};
use sighthub_store::Namespace;
use std::collections::HashMap;

/// One grant of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// May read.
    pub read: bool,
    /// May write, delete and configure.
    pub write: bool,
    /// Namespace prefix (whole segments); `None` = everything.
    pub scope: Option<String>,
}

/// Everything a key may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyGrants {
    /// Every right, on every namespace, and admin routes.
    pub admin: bool,
    /// Scoped grants.
    pub grants: Vec<Grant>,
}

impl KeyGrants {
    /// Parses SightingDB's grant syntax.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.eq_ignore_ascii_case("admin") {
                out.admin = true;
                continue;
            }
            let (rights, scope) = match part.split_once(':') {
                Some((r, s)) => {
                    let s = s.trim().trim_matches('/');
                    (r.trim(), (!s.is_empty()).then(|| s.to_owned()))
                }
                None => (part, None),
            };
            let (read, write) = match rights {
                "r" => (true, false),
                "w" => (false, true),
                "rw" | "wr" => (true, true),
                other => return Err(format!("unknown grant '{other}' (use r, w, rw or admin)")),
            };
            out.grants.push(Grant { read, write, scope });
        }
        Ok(out)
    }

    /// May this key do `access` on `ns`?
    pub fn allows(&self, access: Access, ns: &Namespace) -> bool {
        if self.admin {
            return true;
        }
        let target = acl_target(ns);
        self.grants.iter().any(|g| {
            let right = match access {
                Access::Read => g.read,
                Access::Write => g.write,
            };
            right
                && match (&g.scope, &target) {
                    (None, _) => true,
                    (Some(scope), Some(t)) => t.is_within(scope),
                    (Some(_), None) => false,
                }
        })
    }

    /// Does this key hold `access` on some namespace at all?
    pub fn has_any(&self, access: Access) -> bool {
        self.admin
            || self.grants.iter().any(|g| match access {
                Access::Read => g.read,
                Access::Write => g.write,
            })
    }

    /// May this key read anything under `prefix`-free listings (unscoped read)?
    pub fn reads_everything(&self) -> bool {
        self.admin || self.grants.iter().any(|g| g.read && g.scope.is_none())
    }
}

/// An `[acl]` entry of the configuration file (`"rw:feeds/misp, r"`): read by
/// [`KeyGrants::parse`] when the file is read, so a bad grant is refused there, once.
impl<'de> serde::Deserialize<'de> for KeyGrants {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = <String as serde::Deserialize>::deserialize(d)?;
        KeyGrants::parse(&spec).map_err(serde::de::Error::custom)
    }
}

/// The namespace whose grant decides access: `_shadow/x`, `_expired/x` → `x`; other private
/// namespaces → `None` (only unscoped grants reach them).
fn acl_target(ns: &Namespace) -> Option<Namespace> {
    if !ns.is_internal() {
        return Some(ns.clone());
    }
    let owner = ns.format_owner();
    if owner.starts_with('_') {
        None
    } else {
        Namespace::parse(owner).ok()
    }
}

/// The `[acl]` entry that is not a key: the read grants of a request without an
/// `Authorization` header (`anonymous = "r:misp"`), see [`Auth::set_anonymous`].
pub const ANONYMOUS: &str = "anonymous";

/// The key table, or "authentication off".
#[derive(Debug, Default)]
pub struct Auth {
    enabled: bool,
    keys: HashMap<[u8; 32], KeyGrants>,
    /// What a request without credentials may do (read grants only); `None`: nothing (401).
    anonymous: Option<KeyGrants>,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller<'a> {
    /// Authentication is off: everything is allowed.
    Anyone,
    /// A key was presented; `None` when it is unknown.
    Key(Option<&'a KeyGrants>),
}

impl Caller<'_> {
    /// Checks one access; unknown keys get the same refusal as out-of-scope keys.
    pub fn check(&self, access: Access, ns: &Namespace) -> Result<(), ApiError> {
        if self.allows(access, ns) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(access))
        }
    }

    /// The check made on the headers alone, before any body is read or any data looked at:
    /// an unknown key, or a key without `access` anywhere, is refused (403, the same body as
    /// an out-of-scope key).
    pub fn check_any(&self, access: Access) -> Result<(), ApiError> {
        let ok = match self {
            Caller::Anyone => true,
            Caller::Key(Some(g)) => g.has_any(access),
            Caller::Key(None) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::Forbidden(access))
        }
    }

    /// True when allowed.
    pub fn allows(&self, access: Access, ns: &Namespace) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Key(Some(g)) => g.allows(access, ns),
            Caller::Key(None) => false,
        }
    }

    /// True for admin keys and when authentication is off.
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Key(g) => g.is_some_and(|g| g.admin),
        }
    }
}

/// The SHA-256 digest a key is kept as.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Auth {
    /// Authentication off: every request is allowed.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Authentication on, with no key yet.
    pub fn enabled() -> Self {
        Self {
            enabled: true,
            ..Self::default()
        }
    }

    /// Adds (or replaces) a key.
    pub fn add_key(&mut self, key: &str, grants: KeyGrants) {
        self.keys.insert(digest(key), grants);
    }

    /// Adds (or replaces) a key known by its digest ([`digest`]).
    pub fn add_digest(&mut self, digest: [u8; 32], grants: KeyGrants) {
        self.keys.insert(digest, grants);
    }

    /// Whether `key` (in clear, as configured) is one of these keys.
    pub fn knows(&self, key: &str) -> bool {
        self.keys.contains_key(&digest(key))
    }

    /// Gives requests without an `Authorization` header these grants (`[acl] anonymous`, so
    /// MISP can look values up without a key). Read grants only: `w`, `rw` and `admin` are
    /// refused, with what to write instead. A request that presents a key, even a wrong one,
    /// never gets them.
    pub fn set_anonymous(&mut self, grants: KeyGrants) -> Result<(), String> {
        if grants.admin || grants.grants.iter().any(|g| g.write) {
            return Err(format!(
                "[acl] {ANONYMOUS} may only hold read grants (r, or r:<namespace prefix> such \
                 as \"r:misp\"): requests without a key must not write or administer"
            ));
        }
        self.anonymous = (!grants.grants.is_empty()).then_some(grants);
        Ok(())
    }

    /// The caller of a request without credentials: the anonymous grants when configured,
    /// else 401.
    fn without_credentials(&self) -> Result<Caller<'_>, ApiError> {
        match &self.anonymous {
            Some(grants) => Ok(Caller::Key(Some(grants))),
            None => Err(ApiError::Unauthorized),
        }
    }

    /// Whether keys are checked.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Identifies the caller from the raw `Authorization` header value.
    /// `Err(Unauthorized)` without a header, `Err(BadRequest)` for non-UTF-8.
    pub fn caller(&self, header: Option<&[u8]>) -> Result<Caller<'_>, ApiError> {
        if !self.enabled {
            return Ok(Caller::Anyone);
        }
        let Some(raw) = header else {
            return self.without_credentials();
        };
        let text = std::str::from_utf8(raw)
            .map_err(|_| ApiError::BadRequest("Authorization header is not valid UTF-8.".into()))?;
        let grants = sighthub_exchange::access::credentials(text.trim())
            .iter()
            .find_map(|k| self.keys.get(&digest(k)));
        Ok(Caller::Key(grants))
    }
}

/// A caller detached from the request, to move into a blocking task.
#[derive(Clone)]
pub struct OwnedCaller {
    anyone: bool,
    grants: Option<crate::auth::KeyGrants>,
}

impl Caller<'_> {
    /// Detaches the caller.
    pub fn clone_owned(&self, _auth: &Auth) -> OwnedCaller {
        match self {
            Caller::Anyone => OwnedCaller {
                anyone: true,
                grants: None,
            },
            Caller::Key(g) => OwnedCaller {
                anyone: false,
                grants: g.cloned(),
            },
        }
    }
}

impl OwnedCaller {
    /// A key's caller (`None`: an unknown key).
    pub fn key(grants: Option<KeyGrants>) -> OwnedCaller {
        OwnedCaller {
            anyone: false,
            grants,
        }
    }

    /// A key this server does not know (authentication on).
    pub fn is_unknown(&self) -> bool {
        !self.anyone && self.grants.is_none()
    }

    /// Borrows it back as a [`Caller`].
    pub fn as_caller(&self) -> Caller<'_> {
        if self.anyone {
            Caller::Anyone
        } else {
            Caller::Key(self.grants.as_ref())
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn ns(s: &str) -> Namespace {
        Namespace::parse(s).expect("namespace")
    }

    #[test]
    fn grant_syntax() {
        let g = KeyGrants::parse("rw:feeds/misp, r").expect("parses");
        assert!(!g.admin);
        assert!(g.allows(Access::Write, &ns("feeds/misp/ips")));
        assert!(!g.allows(Access::Write, &ns("feeds/misp-internal")));
        assert!(!g.allows(Access::Write, &ns("feeds")));
        assert!(g.allows(Access::Read, &ns("anything")));
        assert!(KeyGrants::parse("rw, admin").expect("parses").admin);
        assert!(KeyGrants::parse("x").is_err());
    }

    /// A configured `[acl]` entry goes through the same parser.
    #[test]
    fn configured_grants_are_parsed_once_when_read() {
        let g: KeyGrants = serde_json::from_str(r#"" rw:feeds/misp/ , r ""#).expect("grants");
        assert_eq!(g, KeyGrants::parse("rw:feeds/misp, r").expect("parses"));
        let e = serde_json::from_str::<KeyGrants>(r#""rwx""#).expect_err("not a grant");
        assert!(
            e.to_string()
                .contains("unknown grant 'rwx' (use r, w, rw or admin)"),
            "{e}"
        );
    }

    #[test]
    fn private_namespaces_follow_their_origin() {
        let g = KeyGrants::parse("r:feeds").expect("parses");
        assert!(g.allows(Access::Read, &ns("_shadow/feeds/x")));
        assert!(g.allows(Access::Read, &ns("_expired/feeds")));
        assert!(!g.allows(Access::Read, &ns("_all")));
        assert!(!g.allows(Access::Read, &ns("_shadow/other")));
        assert!(KeyGrants::parse("r")
            .expect("parses")
            .allows(Access::Read, &ns("_all")));
    }

    #[test]
    fn callers() {
        let mut auth = Auth::enabled();
        auth.add_key("k1", KeyGrants::parse("r").expect("parses"));
        assert!(matches!(auth.caller(None), Err(ApiError::Unauthorized)));
        assert!(matches!(
            auth.caller(Some(b"\xff")),
            Err(ApiError::BadRequest(_))
        ));
        let unknown = auth.caller(Some(b"nope")).expect("caller");
        let known = auth.caller(Some(b"k1")).expect("caller");
        assert!(!unknown.allows(Access::Read, &ns("a")));
        assert!(known.allows(Access::Read, &ns("a")));
        assert!(!known.allows(Access::Write, &ns("a")));
        assert!(known.check_any(Access::Read).is_ok());
        assert!(matches!(
            known.check_any(Access::Write),
            Err(ApiError::Forbidden(Access::Write))
        ));
        assert!(unknown.check_any(Access::Read).is_err());
        assert!(Auth::disabled().caller(None).expect("anyone").is_admin());
    }

    #[test]
    fn a_bearer_key_is_the_key() {
        let mut auth = Auth::enabled();
        auth.add_key("k1", KeyGrants::parse("r").expect("parses"));
        for header in [
            &b"k1"[..],
            b"Bearer k1",
            b"bearer  k1 ",
            b"Token k1",
            b"Basic Omsx",
        ] {
            let caller = auth.caller(Some(header)).expect("caller");
            let shown = String::from_utf8_lossy(header);
            assert!(caller.allows(Access::Read, &ns("a")), "{shown}");
        }
        let other = auth.caller(Some(b"Bearer k2")).expect("caller");
        assert!(!other.allows(Access::Read, &ns("a")));
    }
}
