//! Fuzzes path and namespace decoding: `router::parse_endpoint` on an arbitrary method and
//! path, then `Namespace::parse` on what it decoded (and on the raw text). Never panics; a
//! refused path is a 4xx; a decoded namespace re-encodes to a path that decodes to the same
//! endpoint; a normalised namespace is non-empty, bounded, free of control characters, `/`
//! at neither end, without empty segments, and normalising it again (also with `/` around
//! it) changes nothing.
#![no_main]

use hyper::Method;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use sighthub_api::router::{parse_endpoint, Endpoint};
use sighthub_store::namespace::{Namespace, MAX_NAMESPACE_LEN};

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

/// The route prefix and namespace of an endpoint that carries one.
fn with_namespace(e: &Endpoint) -> Option<(&'static str, &str)> {
    Some(match e {
        Endpoint::Write(ns) => ("/w/", ns),
        Endpoint::Read(ns) => ("/r/", ns),
        Endpoint::ReadStats(ns) => ("/rs/", ns),
        Endpoint::Delete(ns) => ("/d/", ns),
        Endpoint::ConfigGet(ns) | Endpoint::ConfigSet(ns) => ("/c/", ns),
        _ => return None,
    })
}

fn check_namespace(raw: &str) {
    let Ok(ns) = Namespace::parse(raw) else {
        return;
    };
    let s = ns.as_str();
    assert!(!s.is_empty(), "empty namespace from {raw:?}");
    assert!(
        s.len() <= MAX_NAMESPACE_LEN,
        "{} bytes from {raw:?}",
        s.len()
    );
    assert!(!s.chars().any(char::is_control), "control char in {s:?}");
    assert!(
        !s.starts_with('/') && !s.ends_with('/'),
        "{s:?} not trimmed"
    );
    assert!(!s.split('/').any(str::is_empty), "empty segment in {s:?}");
    assert!(!s.contains('\0'), "NUL (the key separator) in {s:?}");
    assert_eq!(Namespace::parse(s).as_ref(), Ok(&ns), "not idempotent");
    assert_eq!(Namespace::parse(&format!("/{s}/")).as_ref(), Ok(&ns));
    assert!(!ns.first_segment().is_empty());
    assert!(ns.is_within(s) && ns.is_within(""));
    assert_eq!(ns.is_internal(), s.starts_with('_'));
    // The private namespaces built from it keep the format of the namespace itself.
    assert_eq!(ns.shadow().format_owner(), ns.format_owner());
    assert_eq!(ns.expired().format_owner(), ns.format_owner());
    assert!(ns.shadow().is_internal() && ns.expired().is_internal());
}

fuzz_target!(|data: &[u8]| {
    let [m, rest @ ..] = data else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let method = Method::from_bytes(METHODS[usize::from(*m) % METHODS.len()].as_bytes())
        .expect("a valid method");
    check_namespace(path);
    let endpoint = match parse_endpoint(&method, path) {
        Ok(e) => e,
        Err(e) => {
            assert!(e.status().is_client_error(), "{e:?} is not a 4xx");
            return;
        }
    };
    if let Some((prefix, ns)) = with_namespace(&endpoint) {
        assert!(path.starts_with(prefix));
        let again = format!("{prefix}{}", utf8_percent_encode(ns, NON_ALPHANUMERIC));
        assert_eq!(
            parse_endpoint(&method, &again).ok().as_ref(),
            Some(&endpoint),
            "re-encoded path {again:?}"
        );
        check_namespace(ns);
    }
});
