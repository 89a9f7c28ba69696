//! Fuzzes the console's session check (`api::console::Sessions::check`, `csrf_of`): the
//! cookie and the CSRF header are whatever a browser, or an attacker, sends. Never panics;
//! a request is the admin's session only with the very token and CSRF token a login gave
//! (one spelling each), and any change to either is refused.
#![no_main]

use hyper::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sighthub_api::console::{Sessions, COOKIE, CSRF_HEADER};
use std::sync::OnceLock;

fn sessions() -> &'static (Sessions, String, String) {
    static S: OnceLock<(Sessions, String, String)> = OnceLock::new();
    S.get_or_init(|| {
        let s = Sessions::in_memory().expect("sessions");
        let (token, csrf) = s.open_session().expect("a session");
        (s, token, csrf)
    })
}

/// `base` with the fuzzer's bytes: as they are (mode 0), one byte replaced (1), appended (2).
fn mutate(base: &str, mode: u8, pos: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = base.as_bytes().to_vec();
    match mode % 3 {
        0 => out = bytes.to_vec(),
        1 => {
            if let (Some(b), false) = (bytes.first(), out.is_empty()) {
                let i = usize::from(pos) % out.len();
                out[i] = *b;
            }
        }
        _ => out.extend_from_slice(bytes),
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [mode, pos, split, rest @ ..] = data else {
        return;
    };
    let (s, token, csrf) = sessions();
    let at = usize::from(*split).min(rest.len());
    let (a, b) = rest.split_at(at);
    let cookie = mutate(token, *mode, *pos, a);
    let sent_csrf = mutate(csrf, *mode / 3, *pos, b);
    let mut h = HeaderMap::new();
    let Ok(c) = HeaderValue::from_bytes(&[format!("{COOKIE}=").as_bytes(), &cookie].concat())
    else {
        return;
    };
    h.insert(hyper::header::COOKIE, c);
    if let Ok(v) = HeaderValue::from_bytes(&sent_csrf) {
        h.insert(CSRF_HEADER, v);
    }
    // The value as a `Cookie` header is read: up to the next `;`, trimmed.
    let value = std::str::from_utf8(&cookie)
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if matches!(s.check(&h), Ok(true)) {
        assert_eq!(value, token, "only the login's token is a session");
        assert_eq!(sent_csrf, csrf.as_bytes(), "only its CSRF token");
    }
    if s.csrf_of(&h).is_some() {
        assert_eq!(value, token);
    }
});
