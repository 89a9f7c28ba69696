//! API keys: 401 without a key, one 403 body for unknown and out-of-scope keys, scopes by
//! whole segments, bulk requests authorised as a whole before anything is applied.

use crate::common::{Fixture, Opts, ADMIN};
use serde_json::json;

const READER: &str = "reader-key";
const MISP: &str = "misp-feeder-key";

fn fixture() -> Fixture {
    Fixture::with(&Opts {
        config: Some(format!(
            "[acl]\n\"{READER}\" = \"r\"\n\"{MISP}\" = \"rw:feeds/misp\"\n"
        )),
        ..Opts::default()
    })
}

const NO_KEY: (u16, &str) = (401, "Please add the API key in the Authorization headers.");

#[tokio::test]
async fn missing_unknown_and_out_of_scope_keys() {
    let f = fixture();
    let (s, r) = f.get_as(None, "/w/feeds/misp?val=1").await;
    assert_eq!((s, r["message"].as_str().unwrap_or("")), NO_KEY);
    let write_refused = json!({"message":"API key is not permitted to write this namespace."});
    let read_refused = json!({"message":"API key is not permitted to read this namespace."});
    assert_eq!(
        f.get_as(Some("unknown"), "/w/feeds/misp?val=1").await,
        (403, write_refused.clone())
    );
    assert_eq!(
        f.get_as(Some(MISP), "/w/feeds/misp-internal?val=1").await,
        (403, write_refused.clone())
    );
    assert_eq!(
        f.get_as(Some(MISP), "/w/feeds?val=1").await,
        (403, write_refused.clone())
    );
    assert_eq!(
        f.get_as(Some(READER), "/w/feeds/misp?val=1").await,
        (403, write_refused.clone())
    );
    // `Bearer <key>` is the key, as on the exchange (issue 15).
    assert_eq!(
        f.get_as(Some(format!("Bearer {ADMIN}").as_str()), "/w/a?val=1")
            .await
            .0,
        200
    );
    assert_eq!(f.get_as(Some(MISP), "/w/feeds/misp/ips?val=1").await.0, 200);
    assert_eq!(f.get_as(Some(MISP), "/w/feeds/misp?val=1").await.0, 200);
    assert_eq!(
        f.get_as(Some(READER), "/r/feeds/misp?val=1&noshadow")
            .await
            .0,
        200
    );
    assert_eq!(
        f.get_as(Some("unknown"), "/r/feeds/misp?val=1").await,
        (403, read_refused.clone())
    );
    assert_eq!(
        f.get_as(Some(MISP), "/r/other?val=1").await,
        (403, read_refused)
    );
    assert_eq!(
        f.get_as(Some(READER), "/d/feeds/misp").await,
        (403, write_refused)
    );
    // Private namespaces follow the namespace they mirror; _all needs an unscoped read.
    assert_eq!(f.get_as(Some(MISP), "/r/_all?val=1&noshadow").await.0, 403);
    assert_eq!(
        f.get_as(Some(READER), "/r/_all?val=1&noshadow").await.0,
        200
    );
    // No key needed for these.
    for path in ["/i", "/health", "/_api/openapi.yaml", "/"] {
        let resp = f
            .http
            .get(f.server.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "{path}");
    }
    let resp = f
        .http
        .get(f.server.url("/r/a?val=1"))
        .header(
            "Authorization",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").expect("header"),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn bulk_write_is_authorised_as_a_whole() {
    let f = fixture();
    assert_eq!(f.post_as(None, "/wb", json!({"items":[]})).await.0, 401);
    let (s, r) = f
        .post_as(
            Some(MISP),
            "/wb",
            json!({"items":[{"namespace":"feeds/misp","value":"ok"},{"namespace":"elsewhere","value":"no"}]}),
        )
        .await;
    assert_eq!(
        (s, r),
        (
            403,
            json!({"message":"API key is not permitted to write this namespace."})
        )
    );
    assert_eq!(
        f.get("/r/feeds/misp?val=ok&noshadow").await.0,
        404,
        "nothing was written"
    );
    assert_eq!(
        f.post_as(
            Some(MISP),
            "/vwb",
            json!({"items":[{"namespace":"elsewhere","value":"no"}]})
        )
        .await
        .0,
        403
    );
    let (s, r) = f
        .post_as(
            Some(MISP),
            "/wb",
            json!({"items":[{"namespace":"feeds/misp","value":"ok"}]}),
        )
        .await;
    assert_eq!((s, r["written"].clone()), (200, json!(1)));
}

#[tokio::test]
async fn bulk_read_is_authorised_before_any_read_or_shadow() {
    let f = fixture();
    f.get("/w/feeds/misp?val=1").await;
    f.get("/w/secret?val=1").await;
    let (s, _) = f
        .post_as(
            Some(MISP),
            "/rb",
            json!({"items":[{"namespace":"feeds/misp","value":"1"},{"namespace":"secret","value":"1"}]}),
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(
        f.get("/r/_shadow/feeds/misp?val=1&noshadow").await.0,
        404,
        "no shadow raised"
    );
    assert_eq!(
        f.post_as(
            None,
            "/rb",
            json!({"items":[{"namespace":"feeds/misp","value":"1"}]})
        )
        .await
        .0,
        401
    );
    assert_eq!(
        f.post_as(None, "/rbs", json!({"items":[]})).await.0,
        401,
        "the key is checked before the body is read, even an empty one"
    );
    let (s, r) = f
        .post_as(
            Some(MISP),
            "/rbs",
            json!({"items":[{"namespace":"feeds/misp","value":"1"}]}),
        )
        .await;
    assert_eq!((s, r["items"][0]["count"].clone()), (200, json!(1)));
}

#[tokio::test]
async fn listings_are_filtered_by_grants() {
    let f = fixture();
    f.get("/w/feeds/misp/ips?val=1").await;
    f.get("/w/secret?val=2").await;
    assert_eq!(
        f.get_as(Some(MISP), "/_api/namespaces").await.1,
        json!({"namespaces":["feeds/misp/ips"]})
    );
    let (_, r) = f.get_as(Some(MISP), "/_api/latest").await;
    assert_eq!(r["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["items"][0]["namespace"], "feeds/misp/ips");
    assert_eq!(
        f.get_as(Some(READER), "/_api/namespaces").await.1["namespaces"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(f.get_as(Some(MISP), "/c/secret").await.0, 403);
    assert_eq!(
        f.post_as(Some(READER), "/c/secret", json!({"value_format":"RAW"}))
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn no_auth_is_explicit() {
    let f = Fixture::with(&Opts {
        no_auth: true,
        ..Opts::default()
    });
    assert_eq!(f.get_as(None, "/w/open?val=1").await.0, 200);
    assert_eq!(f.post_as(None, "/wb", json!({"items":[]})).await.0, 200);
}
