//! The web console at `/_management/` (SightingDB's path), behind the admin key.
//!
//! - **Assets** (`crates/api/console/`) are embedded in the binary at build time: no CDN, it
//!   works offline. The page is a small script over the JSON APIs the server already has.
//! - **Login**: `POST /_management/login {"key"}` with the sighting API's admin key opens a
//!   session: a cookie marked `HttpOnly`, `Secure`, `SameSite=Strict`, `Path=/`, valid for
//!   at most [`SESSION_SECONDS`]; the answer carries the session's CSRF token, which the page
//!   keeps in memory (never in a cookie or storage).
//! - **Sessions are signed, not stored**: the cookie is `<id>.<expires>.<mac>`, the MAC an
//!   HMAC-SHA256 under the console's secret, and the CSRF token the HMAC of the id. The
//!   secret, and the sessions closed before their end, are the shared document
//!   [`CONSOLE_DOCUMENT`] ([`sighthub_storage::docs`]): in memory on the embedded backend
//!   (a restart logs everyone out), in the cluster on the Redis backend, so a session opened
//!   through one front end is valid through every other one at once, and a logout is in
//!   force on every front end within [`sighthub_storage::docs::REFRESH`]
//!   ([`Sessions::refresh`]). Checking a session reads nothing but memory.
//! - **Every request authenticated by the cookie** (any route of both APIs) must carry the
//!   CSRF token in `X-CSRF-Token`; without it (or with another one, or an expired or closed
//!   session) it is 401, whatever its method — the SightingDB API changes data on `GET`
//!   (`/w`, `/d`), so no method is safe. A request with an `Authorization` header ignores the
//!   cookie. [`Sessions::check`] is that one rule.
//! - `POST /_management/logout` ends the session. At most [`MAX_CLOSED`] closed sessions are
//!   remembered until their end; one more renews the secret, which ends every session.

use crate::error::ApiError;
use hyper::header;
use ring::hmac;
use serde::{Deserialize, Serialize};
use sighthub_storage::docs::{DocError, Documents, MemoryDocuments, Shared};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The session cookie's name.
pub const COOKIE: &str = "sighthub_session";
/// The CSRF header.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session's lifetime.
pub const SESSION_SECONDS: u64 = 8 * 3600;
/// Sessions closed before their end that are remembered (until that end); one more renews
/// the secret, ending every session.
pub const MAX_CLOSED: usize = 1024;
/// Largest login body.
pub const MAX_LOGIN_BYTES: usize = 4096;
/// The shared document of the console's secret and closed sessions.
pub const CONSOLE_DOCUMENT: &str = "console";

/// The embedded page.
pub const INDEX_HTML: &str = include_str!("../console/index.html");
/// The embedded script.
pub const APP_JS: &str = include_str!("../console/app.js");
/// The embedded style sheet.
pub const APP_CSS: &str = include_str!("../console/app.css");

/// The console's shared document.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleFile {
    version: u32,
    /// The HMAC-SHA256 key of sessions, hex.
    secret: String,
    /// Sessions closed before their end: id → the Unix second it would have ended.
    closed: BTreeMap<String, i64>,
}

/// The console's sessions. See the module docs.
#[derive(Debug)]
pub struct Sessions {
    doc: Shared<ConsoleFile>,
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie<'a>(headers: &'a hyper::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Bytes of lowercase hex, and nothing else: a token has one spelling.
fn lower_hex(s: &str) -> Option<Vec<u8>> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(s).ok()
}

/// A session id: 32 lowercase hex digits.
fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A live session read from a cookie.
struct Live {
    id: String,
    expires: i64,
}

impl Sessions {
    /// Sessions over the shared documents `docs`: the secret is made by the first front end
    /// that finds none.
    pub fn open(docs: Arc<dyn Documents>) -> Result<Sessions, ApiError> {
        let doc = Shared::<ConsoleFile>::open(docs, CONSOLE_DOCUMENT)?;
        if doc.current().1.secret.is_empty() {
            doc.edit(|f| {
                if f.secret.is_empty() {
                    f.version = 1;
                    f.secret = crate::keyring::random_hex(32)?;
                    f.closed.clear();
                }
                Ok::<_, ApiError>(())
            })?;
        }
        Ok(Sessions { doc })
    }

    /// Sessions of this process only (a restart logs everyone out).
    pub fn in_memory() -> Result<Sessions, ApiError> {
        Self::open(Arc::new(MemoryDocuments::default()))
    }

    /// Whether other front ends share the sessions (then call [`Sessions::refresh`] every
    /// [`sighthub_storage::docs::REFRESH`]).
    pub fn is_shared(&self) -> bool {
        self.doc.is_shared()
    }

    /// Picks up the logouts (and a renewed secret) of the other front ends.
    pub fn refresh(&self) -> Result<bool, DocError> {
        self.doc.refresh()
    }

    fn key(f: &ConsoleFile) -> Option<hmac::Key> {
        let secret = hex::decode(&f.secret).ok().filter(|s| s.len() >= 32)?;
        Some(hmac::Key::new(hmac::HMAC_SHA256, &secret))
    }

    /// Opens a session: (cookie token, CSRF token).
    pub fn open_session(&self) -> Result<(String, String), ApiError> {
        let f = self.doc.current().1;
        let key = Self::key(&f).ok_or(ApiError::Internal("the console has no secret"))?;
        let id = crate::keyring::random_hex(16)?;
        let expires = now().saturating_add(SESSION_SECONDS as i64);
        let body = format!("{id}.{expires}");
        let mac = hex::encode(hmac::sign(&key, format!("session:{body}").as_bytes()).as_ref());
        let csrf = hex::encode(hmac::sign(&key, format!("csrf:{id}").as_bytes()).as_ref());
        Ok((format!("{body}.{mac}"), csrf))
    }

    /// The live session a cookie token names: signed under the current secret, not ended,
    /// not closed.
    fn live(&self, f: &ConsoleFile, key: &hmac::Key, token: &str) -> Option<Live> {
        let mut parts = token.split('.');
        let (id, expires, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !is_id(id) {
            return None;
        }
        let mac = lower_hex(mac)?;
        hmac::verify(key, format!("session:{id}.{expires}").as_bytes(), &mac).ok()?;
        let expires: i64 = expires.parse().ok()?;
        if expires <= now() || f.closed.contains_key(id) {
            return None;
        }
        Some(Live {
            id: id.to_owned(),
            expires,
        })
    }

    /// The request's live session, with the document it was checked against.
    fn session_of(&self, headers: &hyper::HeaderMap) -> Option<(Live, hmac::Key)> {
        let token = cookie(headers, COOKIE)?;
        let f = self.doc.current().1;
        let key = Self::key(&f)?;
        let live = self.live(&f, &key, token)?;
        Some((live, key))
    }

    fn csrf(key: &hmac::Key, id: &str) -> String {
        hex::encode(hmac::sign(key, format!("csrf:{id}").as_bytes()).as_ref())
    }

    /// The CSRF token of the request's live session (for the page after a reload).
    pub fn csrf_of(&self, headers: &hyper::HeaderMap) -> Option<String> {
        self.session_of(headers)
            .map(|(live, key)| Self::csrf(&key, &live.id))
    }

    /// Ends the request's session, on every front end (written to the shared document before
    /// this returns). Closing more than [`MAX_CLOSED`] live sessions renews the secret.
    pub fn close(&self, headers: &hyper::HeaderMap) -> Result<(), ApiError> {
        let Some((live, _)) = self.session_of(headers) else {
            return Ok(());
        };
        self.doc.edit(|f| {
            let t = now();
            f.closed.retain(|_, end| *end > t);
            f.closed.insert(live.id.clone(), live.expires);
            if f.closed.len() > MAX_CLOSED {
                tracing::warn!(
                    closed = f.closed.len(),
                    "console: more closed sessions than remembered; the secret is renewed and every session ends"
                );
                f.secret = crate::keyring::random_hex(32)?;
                f.closed.clear();
            }
            Ok::<_, ApiError>(())
        })
    }

    /// The one rule for a request carrying the session cookie and no `Authorization`:
    /// `Ok(false)` when it has no session cookie (authenticate it by its header as usual),
    /// `Ok(true)` when it is the admin's live session with its CSRF token, 401 otherwise.
    pub fn check(&self, headers: &hyper::HeaderMap) -> Result<bool, ApiError> {
        if headers.contains_key(header::AUTHORIZATION) || cookie(headers, COOKIE).is_none() {
            return Ok(false);
        }
        let (live, key) = self.session_of(headers).ok_or(ApiError::SessionExpired)?;
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(lower_hex)
            .unwrap_or_default();
        // Verified as a MAC: the comparison does not depend on how much matches.
        hmac::verify(&key, format!("csrf:{}", live.id).as_bytes(), &sent)
            .map_err(|_| ApiError::SessionExpired)?;
        Ok(true)
    }
}

/// The `Set-Cookie` value of a new session (`Secure` even in plain HTTP: browsers keep it on
/// `localhost`, and the console is meant to be served over TLS).
pub fn set_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}"
    )
}

/// The `Set-Cookie` value that removes it.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod test {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn a_session_needs_its_csrf_token_on_every_request() {
        let s = Sessions::in_memory().expect("sessions");
        let (token, csrf) = s.open_session().expect("open");
        let c = format!("other=1; {COOKIE}={token}");
        assert!(matches!(s.check(&headers(&[])), Ok(false)));
        assert!(matches!(
            s.check(&headers(&[("cookie", &c)])),
            Err(ApiError::SessionExpired)
        ));
        assert!(matches!(
            s.check(&headers(&[("cookie", &c), (CSRF_HEADER, "wrong")])),
            Err(ApiError::SessionExpired)
        ));
        assert!(matches!(
            s.check(&headers(&[
                ("cookie", &c),
                (CSRF_HEADER, &csrf.to_uppercase())
            ])),
            Err(ApiError::SessionExpired)
        ));
        assert!(matches!(
            s.check(&headers(&[("cookie", &c), (CSRF_HEADER, &csrf)])),
            Ok(true)
        ));
        // A key in the header wins: the cookie is not even looked at.
        assert!(matches!(
            s.check(&headers(&[("cookie", &c), ("authorization", "k")])),
            Ok(false)
        ));
        assert_eq!(s.csrf_of(&headers(&[("cookie", &c)])), Some(csrf.clone()));
        s.close(&headers(&[("cookie", &c)])).expect("close");
        assert!(s
            .check(&headers(&[("cookie", &c), (CSRF_HEADER, &csrf)]))
            .is_err());
        assert_eq!(s.csrf_of(&headers(&[("cookie", &c)])), None);
        assert!(set_cookie("t").contains("HttpOnly; Secure; SameSite=Strict"));
    }

    #[test]
    fn a_forged_or_foreign_session_is_refused() {
        let s = Sessions::in_memory().expect("sessions");
        let (token, csrf) = s.open_session().expect("open");
        let (id, rest) = token.split_once('.').expect("id");
        let (expires, mac) = rest.split_once('.').expect("expires");
        let later = expires.parse::<i64>().expect("n") + 3600;
        for forged in [
            format!("{id}.{later}.{mac}"),
            format!("{}.{expires}.{mac}", "0".repeat(32)),
            format!("{id}.{expires}.{}", "0".repeat(64)),
            // One spelling: the same MAC in capitals is not the token.
            format!("{id}.{expires}.{}", mac.to_uppercase()),
            format!("{id}.{expires}"),
            format!("{token}.x"),
            String::new(),
        ] {
            let c = format!("{COOKIE}={forged}");
            assert!(
                matches!(
                    s.check(&headers(&[("cookie", &c), (CSRF_HEADER, &csrf)])),
                    Err(ApiError::SessionExpired)
                ),
                "{forged}"
            );
        }
        // Another instance's session (another secret) is no session here.
        let other = Sessions::in_memory().expect("other");
        let c = format!("{COOKIE}={token}");
        assert!(other
            .check(&headers(&[("cookie", &c), (CSRF_HEADER, &csrf)]))
            .is_err());
    }

    #[test]
    fn front_ends_sharing_the_document_share_sessions_and_logouts() {
        let docs: Arc<dyn Documents> = Arc::new(MemoryDocuments::default());
        let a = Sessions::open(Arc::clone(&docs)).expect("a");
        let b = Sessions::open(docs).expect("b");
        let (token, csrf) = a.open_session().expect("open");
        let h = headers(&[
            ("cookie", &format!("{COOKIE}={token}")),
            (CSRF_HEADER, &csrf),
        ]);
        // Opened on a, valid on b at once: nothing to refresh.
        assert!(matches!(b.check(&h), Ok(true)));
        a.close(&h).expect("close");
        assert!(a.check(&h).is_err());
        // b keeps its cached copy until it refreshes.
        assert!(b.refresh().expect("refresh"));
        assert!(b.check(&h).is_err());
    }

    #[test]
    fn closed_sessions_are_bounded_by_renewing_the_secret() {
        let s = Sessions::in_memory().expect("sessions");
        let (keep, keep_csrf) = s.open_session().expect("open");
        let kept = headers(&[
            ("cookie", &format!("{COOKIE}={keep}")),
            (CSRF_HEADER, &keep_csrf),
        ]);
        for _ in 0..MAX_CLOSED {
            let (t, _) = s.open_session().expect("open");
            s.close(&headers(&[("cookie", &format!("{COOKIE}={t}"))]))
                .expect("close");
        }
        assert_eq!(s.doc.current().1.closed.len(), MAX_CLOSED);
        assert!(matches!(s.check(&kept), Ok(true)));
        let (t, _) = s.open_session().expect("open");
        s.close(&headers(&[("cookie", &format!("{COOKIE}={t}"))]))
            .expect("close");
        assert!(s.doc.current().1.closed.is_empty());
        // The renewed secret ended every session.
        assert!(s.check(&kept).is_err());
    }
}
