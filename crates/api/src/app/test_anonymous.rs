//! Requests without a key under `[acl] anonymous` (MISP's lookups): read grants of a prefix,
//! nothing else, and a wrong key never falls back to them.

use super::testkit::{app, call, chunks, SIGHT_ADMIN};
use super::*;
use crate::auth::KeyGrants;
use serde_json::json;

fn with_anonymous(dir: &std::path::Path, grants: &str) -> Arc<App> {
    let app = app(
        dir,
        sighthub_exchange::Exchange::disabled(),
        &[("reader", "r")],
    );
    // The same keys as the test kit's, plus the anonymous grants.
    let mut auth = crate::auth::Auth::enabled();
    auth.add_key(SIGHT_ADMIN, KeyGrants::parse("rw, admin").expect("grants"));
    auth.add_key("reader", KeyGrants::parse("r").expect("grants"));
    auth.set_anonymous(KeyGrants::parse(grants).expect("grants"))
        .expect("read grants");
    app.keys.set_config(auth);
    app
}

async fn get(app: &Arc<App>, key: Option<&str>, uri: &str) -> (u16, serde_json::Value) {
    let (s, v, _) = call(app, "GET", uri, key, None, chunks(&[])).await;
    (s, v)
}

async fn rb(
    app: &Arc<App>,
    key: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let text = body.to_string();
    let (s, v, _) = call(
        app,
        "POST",
        "/rb",
        key,
        Some("application/json"),
        chunks(&[text.as_bytes()]),
    )
    .await;
    (s, v)
}

#[tokio::test]
async fn anonymous_reads_its_prefix_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = with_anonymous(dir.path(), "r:misp");
    let admin = Some(SIGHT_ADMIN);
    for uri in [
        "/w/misp/ip?val=x&timestamp=1500000000",
        "/w/other?val=x&timestamp=1500000000",
    ] {
        assert_eq!(get(&app, admin, uri).await.0, 200);
    }
    let (s, v) = get(&app, None, "/r/misp/ip?val=x&noshadow").await;
    assert_eq!((s, &v["count"]), (200, &json!(1)));
    let body = json!({"items": [{"namespace": "misp/ip", "value": "x"}]});
    let (s, v) = rb(&app, None, &body).await;
    assert_eq!((s, &v["items"][0]["count"]), (200, &json!(1)));
    // Outside the prefix, writes and everything else: bring a key.
    let bring_a_key = json!({"message": "Please add the API key in the Authorization headers."});
    assert_eq!(
        get(&app, None, "/r/other?val=x").await,
        (401, bring_a_key.clone())
    );
    assert_eq!(get(&app, None, "/r/misp-x?val=x").await.0, 401);
    assert_eq!(
        get(&app, None, "/w/misp/ip?val=y").await,
        (401, bring_a_key.clone())
    );
    let mixed = json!({"items": [{"namespace": "misp/ip", "value": "x"}, {"namespace": "other", "value": "x"}]});
    assert_eq!(rb(&app, None, &mixed).await.0, 401);
    // A key, even a wrong one, is never anonymous: refused as before (403).
    assert_eq!(get(&app, Some("wrong"), "/r/misp/ip?val=x").await.0, 403);
    assert_eq!(rb(&app, Some("wrong"), &body).await.0, 403);
    assert_eq!(
        get(&app, Some("reader"), "/r/other?val=x&noshadow").await.0,
        200
    );
}

#[tokio::test]
async fn without_anonymous_grants_no_key_is_401() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = app(dir.path(), sighthub_exchange::Exchange::disabled(), &[]);
    assert_eq!(get(&app, None, "/r/misp/ip?val=x").await.0, 401);
}

#[test]
fn anonymous_may_only_read() {
    let mut auth = crate::auth::Auth::enabled();
    for spec in ["w:misp", "rw:misp", "admin", "r, admin"] {
        let e = auth
            .set_anonymous(KeyGrants::parse(spec).expect("grants"))
            .expect_err(spec);
        assert!(e.contains("may only hold read grants"), "{e}");
    }
    auth.set_anonymous(KeyGrants::parse("r:misp, r:shared").expect("grants"))
        .expect("read grants");
}
