//! Tests of the sighting routes without a socket: an [`App`] over temporary stores, requests
//! dispatched in memory through [`App::handle`].

use super::testkit::{app, call, chunks, SIGHT_ADMIN};
use super::*;
use serde_json::json;

#[test]
fn only_static_routes_are_open() {
    for open in [
        Endpoint::Info,
        Endpoint::Health,
        Endpoint::OpenApi,
        Endpoint::Help,
    ] {
        assert_eq!(route_access(&open), Guard::Open);
    }
    assert_eq!(route_access(&Endpoint::Who), Guard::Sightings(Access::Read));
    assert_eq!(
        route_access(&Endpoint::Latest),
        Guard::Sightings(Access::Read)
    );
    assert_eq!(
        route_access(&Endpoint::Namespaces),
        Guard::Sightings(Access::Read)
    );
    assert_eq!(
        route_access(&Endpoint::BulkValidate),
        Guard::Sightings(Access::Write)
    );
    assert_eq!(route_access(&Endpoint::Iep04Status), Guard::Exchange);
}

/// Every `/iep04/` route of the table, and only those, is authorised by the exchange's keys.
#[test]
fn the_exchange_guards_exactly_the_iep04_routes() {
    for (method, path, _) in crate::router::ROUTES {
        let m = hyper::Method::from_bytes(method.as_bytes()).expect("method");
        let concrete = path
            .replace("{namespace}", "ns")
            .replace("{uuid}", "u")
            .replace("{name}", "n");
        let e = parse_endpoint(&m, &concrete).expect("a route of the table parses");
        assert_eq!(
            route_access(&e) == Guard::Exchange,
            path.starts_with("/iep04/"),
            "{method} {path}"
        );
        assert_eq!(e.is_iep04(), path.starts_with("/iep04/"), "{method} {path}");
    }
}

async fn get(app: &Arc<App>, key: Option<&str>, uri: &str) -> (u16, serde_json::Value) {
    let (s, v, _) = call(app, "GET", uri, key, None, chunks(&[])).await;
    (s, v)
}

async fn post(
    app: &Arc<App>,
    key: &str,
    uri: &str,
    ct: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (s, v, _) = call(
        app,
        "POST",
        uri,
        Some(key),
        Some(ct),
        chunks(&[body.as_bytes()]),
    )
    .await;
    (s, v)
}

fn sightings_only(dir: &std::path::Path) -> Arc<App> {
    app(
        dir,
        sighthub_exchange::Exchange::disabled(),
        &[("reader", "r"), ("feeds", "rw:feeds")],
    )
}

#[tokio::test]
async fn write_then_read_with_keys_and_grants() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = sightings_only(dir.path());
    let admin = Some(SIGHT_ADMIN);
    assert_eq!(get(&app, None, "/w/a/b?val=x").await.0, 401);
    assert_eq!(
        get(&app, Some("reader"), "/w/a/b?val=x").await,
        (
            403,
            json!({"message": "API key is not permitted to write this namespace."})
        )
    );
    assert_eq!(get(&app, Some("feeds"), "/w/a/b?val=x").await.0, 403);
    assert_eq!(
        get(&app, admin, "/w/a/b?val=x&timestamp=1500000000").await,
        (200, json!({"message": "ok", "count": 1, "new": true}))
    );
    assert_eq!(
        get(&app, Some("feeds"), "/w/feeds/x?val=x&timestamp=1500000000").await,
        (200, json!({"message": "ok", "count": 1, "new": true}))
    );
    let (s, v) = get(&app, Some("reader"), "/r/a/b?val=x&noshadow").await;
    assert_eq!(
        (s, &v["count"], &v["consensus"]),
        (200, &json!(1), &json!(2))
    );
    assert_eq!(
        get(&app, admin, "/r/a/b?val=nope&noshadow").await,
        (
            404,
            json!({"error": "Value not found", "namespace": "a/b", "value": "nope"})
        )
    );
    assert_eq!(get(&app, admin, "/r/a/b?count").await.1["values"], 1);
    assert_eq!(get(&app, admin, "/w/a/b").await.0, 400, "no val=");
    assert_eq!(get(&app, admin, "/nope").await.0, 404);
    let (s, _, h) = call(&app, "PUT", "/w/a", admin, None, chunks(&[])).await;
    assert_eq!((s, h["allow"].to_str().ok()), (405, Some("GET")));
}

/// A private namespace is a 403 that names it (the variant is no longer shared with the
/// internal-failure 500).
#[tokio::test]
async fn private_namespaces_are_refused_with_403() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = sightings_only(dir.path());
    let admin = Some(SIGHT_ADMIN);
    let refused = (
        403,
        json!({"message": "'_all' is an internal namespace and is not writable from outside."}),
    );
    assert_eq!(get(&app, admin, "/w/_all?val=x").await, refused);
    assert_eq!(get(&app, admin, "/d/_all").await, refused);
    assert_eq!(
        post(
            &app,
            SIGHT_ADMIN,
            "/c/_all",
            "application/json",
            r#"{"value_format":"RAW"}"#
        )
        .await,
        refused
    );
}

#[tokio::test]
async fn bulk_bodies_go_through_the_one_reader() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = sightings_only(dir.path());
    let body = r#"{"items":[{"namespace":"bulk/a","value":"1","timestamp":1500000000},{"namespace":"","value":"2"}]}"#;
    let (s, v) = post(&app, SIGHT_ADMIN, "/wb", "application/json", body).await;
    assert_eq!(
        (s, &v["message"], &v["written"]),
        (200, &json!("partial"), &json!(1))
    );
    let (s, v) = post(
        &app,
        SIGHT_ADMIN,
        "/rb",
        "application/json",
        r#"{"items":[{"namespace":"bulk/a","value":"1","noshadow":true},{"namespace":"bulk/a","value":"9"}]}"#,
    )
    .await;
    assert_eq!((s, &v["items"][0]["count"]), (200, &json!(1)));
    assert_eq!(v["items"][1]["error"], "Value not found");
    assert_eq!(
        post(&app, SIGHT_ADMIN, "/wb", "text/plain", body).await,
        (
            400,
            json!({"message": "Invalid JSON body: Content type error"})
        )
    );
    // Over max_body_bytes (4096 here), in two chunks and without a declared length.
    let big = format!(
        r#"{{"items":[{{"namespace":"a","value":"{}"}}]}}"#,
        "x".repeat(5000)
    );
    let (half1, half2) = big.as_bytes().split_at(2500);
    let (s, v, _) = call(
        &app,
        "POST",
        "/wb",
        Some(SIGHT_ADMIN),
        Some("application/json"),
        chunks(&[half1, half2]),
    )
    .await;
    assert_eq!(
        (s, v),
        (
            413,
            json!({"message": "Request body is larger than the limit of 4096 bytes."})
        )
    );
    assert_eq!(
        get(&app, Some(SIGHT_ADMIN), "/r/a?val=x&noshadow").await.0,
        404,
        "nothing written"
    );
}

#[tokio::test]
async fn namespaces_configure_list_and_delete() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = sightings_only(dir.path());
    let admin = Some(SIGHT_ADMIN);
    let json_ct = "application/json";
    assert_eq!(
        post(
            &app,
            SIGHT_ADMIN,
            "/c/h",
            json_ct,
            r#"{"value_format":"SHA256"}"#
        )
        .await,
        (200, json!({"namespace": "h", "value_format": "SHA256"}))
    );
    assert_eq!(get(&app, admin, "/w/h?val=abc").await.0, 200);
    assert_eq!(
        post(
            &app,
            SIGHT_ADMIN,
            "/c/h",
            json_ct,
            r#"{"value_format":"RAW"}"#
        )
        .await,
        (
            409,
            json!({"message": "Namespace 'h' already holds values; its value format cannot change."})
        )
    );
    assert_eq!(
        get(&app, admin, "/_api/namespaces").await,
        (200, json!({"namespaces": ["h"]}))
    );
    assert_eq!(
        get(&app, Some("feeds"), "/_api/namespaces").await,
        (200, json!({"namespaces": []}))
    );
    let (s, v) = get(&app, admin, "/_api/who?val=abc").await;
    assert_eq!((s, &v["consensus"]), (200, &json!(1)));
    assert_eq!(
        get(&app, admin, "/d/h").await,
        (200, json!({"message": "ok"}))
    );
    assert_eq!(get(&app, admin, "/d/h").await.0, 404);
}

/// The open routes need no key; the help page lists both APIs from the one route table; a
/// HEAD answer has no body.
#[tokio::test]
async fn open_routes_and_the_help_page() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = sightings_only(dir.path());
    let (s, v) = get(&app, None, "/health").await;
    assert_eq!(
        (s, &v["status"], &v["durable"]),
        (200, &json!("ok"), &json!(true))
    );
    let info = get(&app, None, "/i").await.1;
    assert_eq!(
        (&info["implementation"], &info["version"], &info["server"]),
        (&json!("SightingDB"), &json!("0.7.8"), &json!("sighthub"))
    );
    let (s, help) = get(&app, None, "/").await;
    let help = help.as_str().unwrap_or_default().to_owned();
    assert_eq!(s, 200);
    for route in [
        "/w/{namespace}",
        "/iep04/messages",
        "/iep04/consumers/{name}/ack",
    ] {
        assert!(help.contains(route), "{route} missing from the help page");
    }
    let (s, v, _) = call(&app, "HEAD", "/i", None, None, chunks(&[])).await;
    assert_eq!((s, v), (200, json!("")));
    let (s, v) = get(&app, Some(SIGHT_ADMIN), "/_api/latest").await;
    assert_eq!((s, &v["items"]), (200, &json!([])));
}

/// One dispatch for both APIs: the `/iep04/` routes answer through the same [`App`], with
/// the exchange's keys (a sighting key is not one), and 404 when the exchange is off.
#[tokio::test]
async fn iep04_routes_share_the_dispatch() {
    let dir = tempfile::tempdir().expect("tmp");
    let off = sightings_only(dir.path());
    assert_eq!(
        get(&off, Some(SIGHT_ADMIN), "/iep04/status").await,
        (
            404,
            json!({"message": "The IEP04 exchange is disabled on this server."})
        )
    );
    let dir = tempfile::tempdir().expect("tmp");
    let ex = sighthub_exchange::Exchange::open(
        &sighthub_exchange::ExchangeConfig::default(),
        dir.path(),
        sighthub_exchange::AdminKey::Key("ex-admin".into()),
    )
    .expect("exchange");
    let app = app(dir.path(), ex, &[]);
    assert_eq!(get(&app, Some(SIGHT_ADMIN), "/iep04/status").await.0, 403);
    assert_eq!(get(&app, Some("ex-admin"), "/iep04/status").await.0, 200);
    assert_eq!(get(&app, Some("ex-admin"), "/r/x?val=1").await.0, 403);
    let (s, v, h) = call(
        &app,
        "PUT",
        "/iep04/status",
        Some("ex-admin"),
        None,
        chunks(&[]),
    )
    .await;
    assert_eq!((s, h["allow"].to_str().ok()), (405, Some("GET")), "{v}");
}

/// A body that misses its deadline is a 408 on the routes of both APIs (the exchange's own
/// reader answered 400 "Truncated or unreadable body.").
#[tokio::test]
async fn a_body_past_its_deadline_is_a_408_on_both_apis() {
    use crate::deadline::DeadlineBody;
    use hyper::body::{Body, Frame};
    use std::pin::Pin;
    use std::task::{Context, Poll};

    struct Never;
    impl Body for Never {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<bytes::Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    let dir = tempfile::tempdir().expect("tmp");
    let ex = sighthub_exchange::Exchange::open(
        &sighthub_exchange::ExchangeConfig::default(),
        dir.path(),
        sighthub_exchange::AdminKey::Key("ex-admin".into()),
    )
    .expect("exchange");
    let app = app(dir.path(), ex, &[]);
    for (uri, key) in [
        ("/wb", SIGHT_ADMIN),
        ("/iep04/messages", "ex-admin"),
        ("/iep04/consumers/c/ack", "ex-admin"),
    ] {
        let (body, _) = DeadlineBody::new(Never, std::time::Duration::from_millis(20));
        let req = hyper::Request::post(uri)
            .header("authorization", key)
            .header("content-type", "application/json")
            .body(body)
            .expect("request");
        let resp = app.handle(req).await;
        assert_eq!(resp.status(), 408, "{uri}");
        assert_eq!(resp.headers()["connection"], "close", "{uri}");
    }
}
