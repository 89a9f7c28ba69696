//! The web console at `/_management/` (SightingDB's path), behind the admin key.
//!
//! - **Assets** (`crates/api/console/`) are embedded in the binary at build time: no CDN, it
//!   works offline. The page is a small script over the JSON APIs the server already has.
//! - **Login**: `POST /_management/login {"key"}` with the sighting API's admin key opens a
//!   session: a random 32-byte token in a cookie marked `HttpOnly`, `Secure`,
//!   `SameSite=Strict`, `Path=/`, kept only as its SHA-256 digest, for at most
//!   [`SESSION_SECONDS`]; the answer carries the session's CSRF token, which the page keeps in
//!   memory (never in a cookie or storage).
//! - **Every request authenticated by the cookie** (any route of both APIs) must carry the
//!   CSRF token in `X-CSRF-Token`; without it (or with another one, or an expired session)
//!   it is 401, whatever its method — the SightingDB API changes data on `GET` (`/w`, `/d`), so
//!   no method is safe. A request with an `Authorization` header ignores the cookie.
//!   [`Sessions::check`] is that one rule.
//! - `POST /_management/logout` ends the session; at most [`MAX_SESSIONS`] live at once (the
//!   oldest goes first).

use crate::auth::digest;
use crate::error::ApiError;
use hyper::header;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "sighthub_session";
/// The CSRF header.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session's lifetime.
pub const SESSION_SECONDS: u64 = 8 * 3600;
/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 64;
/// Largest login body.
pub const MAX_LOGIN_BYTES: usize = 4096;

/// The embedded page.
pub const INDEX_HTML: &str = include_str!("../console/index.html");
/// The embedded script.
pub const APP_JS: &str = include_str!("../console/app.js");
/// The embedded style sheet.
pub const APP_CSS: &str = include_str!("../console/app.css");

struct Session {
    csrf: String,
    expires: Instant,
}

/// The console's sessions (in memory: a restart logs everyone out).
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
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

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session: (cookie token, CSRF token).
    pub fn open(&self) -> Result<(String, String), ApiError> {
        let token = crate::keyring::random_hex(32)?;
        let csrf = crate::keyring::random_hex(32)?;
        let mut m = self.lock();
        let now = Instant::now();
        m.retain(|_, s| s.expires > now);
        while m.len() >= MAX_SESSIONS {
            let Some(oldest) = m.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) else {
                break;
            };
            m.remove(&oldest);
        }
        m.insert(
            digest(&token),
            Session {
                csrf: csrf.clone(),
                expires: now + Duration::from_secs(SESSION_SECONDS),
            },
        );
        Ok((token, csrf))
    }

    /// The CSRF token of the request's live session (for the page after a reload).
    pub fn csrf_of(&self, headers: &hyper::HeaderMap) -> Option<String> {
        let token = cookie(headers, COOKIE)?;
        let m = self.lock();
        m.get(&digest(token))
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    /// Ends the request's session.
    pub fn close(&self, headers: &hyper::HeaderMap) {
        if let Some(token) = cookie(headers, COOKIE) {
            self.lock().remove(&digest(token));
        }
    }

    /// The one rule for a request carrying the session cookie and no `Authorization`:
    /// `Ok(false)` when it has no session cookie (authenticate it by its header as usual),
    /// `Ok(true)` when it is the admin's live session with its CSRF token, 401 otherwise.
    pub fn check(&self, headers: &hyper::HeaderMap) -> Result<bool, ApiError> {
        if headers.contains_key(header::AUTHORIZATION) {
            return Ok(false);
        }
        let Some(token) = cookie(headers, COOKIE) else {
            return Ok(false);
        };
        let m = self.lock();
        let s = m
            .get(&digest(token))
            .filter(|s| s.expires > Instant::now())
            .ok_or(ApiError::SessionExpired)?;
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Compared as digests, so the comparison does not depend on how much matches.
        if digest(sent) != digest(&s.csrf) {
            return Err(ApiError::SessionExpired);
        }
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
        let s = Sessions::default();
        let (token, csrf) = s.open().expect("open");
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
            s.check(&headers(&[("cookie", &c), (CSRF_HEADER, &csrf)])),
            Ok(true)
        ));
        // A key in the header wins: the cookie is not even looked at.
        assert!(matches!(
            s.check(&headers(&[("cookie", &c), ("authorization", "k")])),
            Ok(false)
        ));
        assert_eq!(s.csrf_of(&headers(&[("cookie", &c)])), Some(csrf.clone()));
        s.close(&headers(&[("cookie", &c)]));
        assert!(s
            .check(&headers(&[("cookie", &c), (CSRF_HEADER, &csrf)]))
            .is_err());
        assert!(set_cookie("t").contains("HttpOnly; Secure; SameSite=Strict"));
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::default();
        for _ in 0..MAX_SESSIONS + 5 {
            s.open().expect("open");
        }
        assert_eq!(s.lock().len(), MAX_SESSIONS);
    }
}
