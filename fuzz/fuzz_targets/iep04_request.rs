//! Fuzzes the decoders of a `/iep04` request that need no store (`api::router` and
//! `api::cmd::iep04`): the route, the strict query string (with a fuzzer-chosen set of allowed parameters), the read
//! parameters and the acknowledgement body. The input is `path NUL query NUL accept NUL body`.
//! Never panics; every refusal is a 4xx; a decoded route segment, query and ack cursor
//! re-encode to what decodes the same; read parameters stay within the configured limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use sighthub_api::cmd::iep04::{ack_cursor, query, read_params, READ_PARAMS};
use sighthub_api::error::ApiError;
use sighthub_api::router::{parse_endpoint, Endpoint};
use sighthub_exchange::export::Export;
use sighthub_exchange::ExchangeConfig;

/// Every parameter any `/iep04` route allows.
const PARAMS: &[&str] = &[
    "after",
    "limit",
    "wait",
    "export",
    "with_type",
    "format",
    "results",
    "cursor",
    "alternate",
];

fn is_4xx(e: &ApiError) -> bool {
    e.status().is_client_error()
}

fn check_route(method: &hyper::Method, path: &str) {
    let r = match parse_endpoint(method, path) {
        Ok(r) => r,
        Err(e) => {
            assert!(is_4xx(&e), "{e:?}");
            return;
        }
    };
    assert_eq!(r.is_iep04(), path.starts_with("/iep04/"), "{path:?}");
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let again = match &r {
        Endpoint::Iep04Message(id) => format!("/iep04/messages/{}", enc(id)),
        Endpoint::Iep04Links(id) => format!("/iep04/links/{}", enc(id)),
        Endpoint::Iep04Consumer(n) | Endpoint::Iep04ConsumerDelete(n) => {
            format!("/iep04/consumers/{}", enc(n))
        }
        Endpoint::Iep04ConsumerMessages(n) => format!("/iep04/consumers/{}/messages", enc(n)),
        Endpoint::Iep04ConsumerAck(n) => format!("/iep04/consumers/{}/ack", enc(n)),
        _ => return,
    };
    assert_eq!(
        parse_endpoint(method, &again).ok().as_ref(),
        Some(&r),
        "re-encoded {again:?}"
    );
}

fn check_query(raw: &str, allowed: &[&str], accept: Option<&str>, cfg: &ExchangeConfig) {
    let q = match query(raw, allowed) {
        Ok(q) => q,
        Err(e) => {
            assert!(is_4xx(&e), "{e:?}");
            return;
        }
    };
    assert!(q.keys().all(|k| allowed.contains(&k.as_str())));
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &q {
        ser.append_pair(k, v);
    }
    let again = ser.finish();
    assert_eq!(query(&again, allowed).ok().as_ref(), Some(&q), "{again:?}");
    if q.keys().all(|k| READ_PARAMS.contains(&k.as_str())) {
        match read_params(cfg, &q, accept) {
            Ok(p) => {
                assert!(p.limit <= cfg.max_limit, "limit {}", p.limit);
                assert!(
                    p.wait.as_secs() <= cfg.max_wait_seconds,
                    "wait {:?}",
                    p.wait
                );
                if matches!(p.export, Export::Envelope) {
                    assert!(matches!(
                        q.get("with_type").map(String::as_str),
                        None | Some("0" | "false" | "no")
                    ));
                }
            }
            Err(e) => assert!(is_4xx(&e), "{e:?}"),
        }
    }
}

fn check_ack(body: &[u8]) {
    match ack_cursor(body) {
        Ok(c) => {
            let again = serde_json::json!({ "cursor": c }).to_string();
            assert_eq!(ack_cursor(again.as_bytes()).ok(), Some(c));
        }
        Err(e) => assert!(is_4xx(&e), "{e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let [mask_lo, mask_hi, rest @ ..] = data else {
        return;
    };
    let mask = u16::from_le_bytes([*mask_lo, *mask_hi]);
    let allowed: Vec<&str> = PARAMS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, p)| *p)
        .collect();
    let mut parts = rest.splitn(4, |b| *b == 0);
    let path = parts.next().unwrap_or_default();
    let raw_query = parts.next().unwrap_or_default();
    let accept = parts.next().and_then(|a| std::str::from_utf8(a).ok());
    let body = parts.next().unwrap_or_default();
    let cfg = ExchangeConfig::default();
    if let Ok(path) = std::str::from_utf8(path) {
        for method in [hyper::Method::GET, hyper::Method::POST, hyper::Method::DELETE] {
            check_route(&method, path);
        }
    }
    if let Ok(raw_query) = std::str::from_utf8(raw_query) {
        check_query(raw_query, &allowed, accept, &cfg);
        check_query(raw_query, READ_PARAMS, accept, &cfg);
    }
    check_ack(body);
});
