//! STIX 2.1: `GET /stix/<ns>` and `POST /_api/stix` on a real server (bundle shape, ids,
//! headers, limits, `recursive`, `val`, `untyped=include`, grants, hostile bodies), and
//! `sighthub import-stix` into a stopped server's data directory (same sightings back,
//! idempotent, clear errors).

use crate::common::{Fixture, Opts, ADMIN};
use serde_json::{json, Value};
use std::process::Command;

const SCOPED: &str = "stix-scoped-key-0123456789";

/// GET with the admin key: status, the `x-sightingdb-*` headers and content type, the body.
async fn stix(f: &Fixture, path: &str) -> (u16, Vec<(String, String)>, Value) {
    raw(f, f.http.get(f.server.url(path))).await
}

async fn stix_post(f: &Fixture, key: &str, body: &str) -> (u16, Vec<(String, String)>, Value) {
    let req = f
        .http
        .post(f.server.url("/_api/stix"))
        .header("content-type", "application/json")
        .header("Authorization", key)
        .body(body.to_owned());
    raw(f, req).await
}

async fn raw(_f: &Fixture, req: reqwest::RequestBuilder) -> (u16, Vec<(String, String)>, Value) {
    let resp = req
        .header("Authorization", ADMIN)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-sightingdb-") || k.as_str() == "content-type")
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    headers.sort();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn of<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["objects"]
        .as_array()
        .map(|a| a.iter().filter(|o| o["type"] == kind).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_namespace_exports_as_sightingdb_does() {
    let f = Fixture::new();
    f.get("/w/feeds/ips?val=1.2.3.4&timestamp=1600000000&tags=tlp:amber,identity:Beta")
        .await;
    f.get("/w/feeds/ips?val=1.2.3.4&timestamp=1600003600").await;
    f.get("/w/feeds/ips?val=just+text&timestamp=1600000000")
        .await;
    let (s, h, b) = stix(&f, "/stix/feeds/ips").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        header(&h, "content-type"),
        Some("application/stix+json;version=2.1")
    );
    assert_eq!(header(&h, "x-sightingdb-exported"), Some("1"));
    assert_eq!(header(&h, "x-sightingdb-skipped"), Some("1"));
    assert_eq!(header(&h, "x-sightingdb-untyped"), Some("0"));
    assert_eq!(header(&h, "x-sightingdb-namespaces"), Some("1"));
    assert_eq!(header(&h, "x-sightingdb-truncated"), Some("false"));
    assert_eq!(header(&h, "x-sightingdb-missing"), None);
    assert_eq!(b["type"], "bundle");
    let ind = of(&b, "indicator");
    assert_eq!(ind.len(), 1);
    // The id SightingDB 0.7.8 gives 1.2.3.4 (its README), whatever the namespace.
    assert_eq!(
        ind[0]["id"],
        "indicator--407cd7a8-da80-5fa3-b02a-9ae7ccc848e0"
    );
    assert_eq!(ind[0]["pattern"], "[ipv4-addr:value = '1.2.3.4']");
    let s = of(&b, "sighting")[0];
    assert_eq!(
        (&s["count"], &s["first_seen"], &s["last_seen"]),
        (
            &json!(2),
            &json!("2020-09-13T12:26:40.000Z"),
            &json!("2020-09-13T13:26:40.000Z")
        )
    );
    assert_eq!(s["x_sightingdb_namespace"], "feeds/ips");
    assert_eq!(of(&b, "marking-definition")[0]["name"], "TLP:AMBER");
    assert_eq!(of(&b, "identity").len(), 2);
    // Deterministic: the same bundle again.
    assert_eq!(stix(&f, "/stix/feeds/ips").await.2, b);

    let (_, h, b) = stix(&f, "/stix/feeds/ips?untyped=include").await;
    assert_eq!(header(&h, "x-sightingdb-exported"), Some("2"));
    assert_eq!(header(&h, "x-sightingdb-untyped"), Some("1"));
    assert!(of(&b, "indicator")
        .iter()
        .any(|i| i["pattern"] == "[x-sightingdb-value:value = 'just text']"));
}

#[tokio::test]
async fn val_recursive_and_limit() {
    let f = Fixture::new();
    for (ns, v) in [
        ("t", "10.0.0.1"),
        ("t", "10.0.0.2"),
        ("t", "10.0.0.3"),
        ("t/sub", "a.example"),
        ("t-other", "b.example"),
    ] {
        f.get(&format!("/w/{ns}?val={v}")).await;
    }
    let (s, h, b) = stix(&f, "/stix/t?val=10.0.0.2").await;
    assert_eq!((s, header(&h, "x-sightingdb-exported")), (200, Some("1")));
    assert_eq!(of(&b, "sighting").len(), 1);
    assert_eq!(
        stix(&f, "/stix/t?val=9.9.9.9").await.2,
        json!({"error":"Value not found","namespace":"t","value":"9.9.9.9"})
    );
    assert_eq!(stix(&f, "/stix/t?val=10.0.0.2&recursive").await.0, 400);
    assert_eq!(stix(&f, "/stix/t?val=").await.0, 400);

    let (_, h, b) = stix(&f, "/stix/t?recursive").await;
    assert_eq!(
        header(&h, "x-sightingdb-namespaces"),
        Some("2"),
        "whole segments: not t-other"
    );
    assert_eq!(header(&h, "x-sightingdb-exported"), Some("4"));
    assert!(of(&b, "sighting")
        .iter()
        .all(|s| s["x_sightingdb_namespace"] != "t-other"));

    let (_, h, b) = stix(&f, "/stix/t?limit=2").await;
    assert_eq!(header(&h, "x-sightingdb-exported"), Some("2"));
    assert_eq!(header(&h, "x-sightingdb-truncated"), Some("true"));
    assert_eq!(of(&b, "sighting").len(), 2);
    let (_, h, _) = stix(&f, "/stix/t?limit=3").await;
    assert_eq!(
        header(&h, "x-sightingdb-truncated"),
        Some("false"),
        "exactly the limit is not cut"
    );
    let (_, h, _) = stix(&f, "/stix/t?recursive&limit=3").await;
    assert_eq!(
        header(&h, "x-sightingdb-truncated"),
        Some("true"),
        "the limit is for the whole export"
    );
}

#[tokio::test]
async fn refusals_and_not_found() {
    let f = Fixture::with(&Opts {
        config: Some(format!("[acl]\n\"{SCOPED}\" = \"r:feeds/a\"\n")),
        ..Opts::default()
    });
    f.get("/w/feeds/a?val=1.1.1.1").await;
    f.get("/w/feeds/b?val=2.2.2.2").await;
    assert_eq!(
        stix(&f, "/stix/nope/ns").await.2,
        json!({"error":"Path not found","namespace":"nope/ns","value":""})
    );
    assert_eq!(stix(&f, "/stix/_config/x").await.0, 403);
    assert_eq!(stix(&f, "/stix/a//b").await.0, 400);
    let (s, _) = f.get_as(None, "/stix/feeds/a").await;
    assert_eq!(s, 401);
    assert_eq!(f.get_as(Some(SCOPED), "/stix/feeds/a").await.0, 200);
    assert_eq!(f.get_as(Some(SCOPED), "/stix/feeds/b").await.0, 403);
    // A scoped key's recursive export leaves out what it may not read.
    let (s, b) = f.get_as(Some(SCOPED), "/stix/feeds?recursive").await;
    assert_eq!(s, 403, "feeds itself is outside the grant: {b}");
    let (_, b) = f.get_as(Some(SCOPED), "/stix/feeds/a?recursive").await;
    assert_eq!(of(&b, "sighting").len(), 1);

    // POST: every namespace authorised before anything is read.
    let (s, _, b) = stix_post(&f, SCOPED, r#"{"namespaces":["feeds/a","feeds/b"]}"#).await;
    assert_eq!(
        (s, b),
        (
            403,
            json!({"message":"API key is not permitted to read this namespace."})
        )
    );
    let (s, h, b) = stix_post(
        &f,
        ADMIN,
        r#"{"namespaces":["feeds/a","nope"],"namespace":"feeds/b"}"#,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(header(&h, "x-sightingdb-missing"), Some("nope"));
    assert_eq!(of(&b, "sighting").len(), 2);
    let (s, _, b) = stix_post(&f, ADMIN, r#"{"namespaces":["nope","gone"]}"#).await;
    assert_eq!(
        (s, b),
        (
            404,
            json!({"error":"Path not found","namespace":"nope","value":""})
        )
    );
    let (s, _, b) = stix_post(&f, ADMIN, r#"{"namespaces":[]}"#).await;
    assert_eq!(
        (s, b),
        (
            400,
            json!({"message":"Name at least one namespace to export."})
        )
    );
    let (_, h, _) = stix_post(
        &f,
        ADMIN,
        r#"{"namespace":"feeds","recursive":true,"q":"2.2"}"#,
    )
    .await;
    assert_eq!(header(&h, "x-sightingdb-exported"), Some("1"));
}

#[tokio::test]
async fn hostile_bodies_get_a_clear_4xx() {
    let f = Fixture::with(&Opts {
        config: Some("max_body_bytes = 65536\n".into()),
        ..Opts::default()
    });
    f.get("/w/n?val=1.1.1.1").await;
    for (body, want) in [
        ("{nope", "Invalid JSON body"),
        (r#"{"namespaces":5}"#, "invalid type"),
        (r#"{"namespaces":["n"],"limit":-1}"#, "invalid value"),
        (r#"{"namespaces":["n"],"untyped":"all"}"#, "unknown variant"),
        (r#"{"namespaces":["n"],"recursive":"yes"}"#, "invalid type"),
    ] {
        let (s, _, b) = stix_post(&f, ADMIN, body).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert!(
            b["message"].as_str().unwrap_or("").contains(want),
            "{body}: {b}"
        );
    }
    // Deep nesting: skipped without recursion where it is ignored, refused where it is read.
    let deep = |field: &str| {
        format!(
            r#"{{"namespaces":["n"],"{field}":{}{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        )
    };
    assert_eq!(stix_post(&f, ADMIN, &deep("x")).await.0, 200);
    assert_eq!(stix_post(&f, ADMIN, &deep("namespace")).await.0, 400);
    let many: Vec<String> = (0..1001).map(|i| format!("n{i}")).collect();
    let (s, _, b) = stix_post(&f, ADMIN, &json!({"namespaces": many}).to_string()).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap_or("")
            .contains("limit is 1000"),
        "{b}"
    );
    let huge = format!(r#"{{"namespaces":["n"],"q":"{}"}}"#, "x".repeat(70_000));
    assert_eq!(stix_post(&f, ADMIN, &huge).await.0, 413);
    assert_eq!(stix(&f, "/stix/n?limit=1&limit=2").await.0, 400);
    assert_eq!(stix(&f, "/stix/n?recursive&recursive").await.0, 400);
    assert_eq!(f.get("/_api/stix").await.0, 405);
}

fn import(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sighthub"))
        .arg("import-stix")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("run import-stix")
}

#[tokio::test]
async fn an_exported_bundle_imported_gives_the_same_sightings_once() {
    let f = Fixture::new();
    f.get("/w/x/ips?val=10.1.1.1&timestamp=1600000000&tags=tlp:green")
        .await;
    for _ in 0..4 {
        f.get("/w/x/ips?val=10.1.1.1&timestamp=1600007200").await;
    }
    f.get("/w/x/urls?val=http://evil.example/a'b&timestamp=1600000000")
        .await;
    let (_, _, bundle) = stix_post(&f, ADMIN, r#"{"namespace":"x","recursive":true}"#).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("b.json");
    std::fs::write(&file, bundle.to_string()).expect("write");
    let data = dir.path().join("data");
    for round in 0..2 {
        let out = import(&data, &[file.to_str().expect("utf-8")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let want = if round == 0 {
            "2 values with new sightings (6 sightings)"
        } else {
            "2 already imported"
        };
        assert!(err.contains(want), "round {round}: {err}");
    }
    let g = Fixture::on(&data, &Opts::default());
    for (ns, v) in [("x/ips", "10.1.1.1"), ("x/urls", "http://evil.example/a'b")] {
        let path = format!("/r/{ns}?val={}&noshadow", urlencode(v));
        let (a, b) = (f.get(&path).await, g.get(&path).await);
        assert_eq!(a.0, 200);
        assert_eq!(b.0, 200, "{ns} {v}: {}", b.1);
        for k in ["value", "count", "first_seen", "last_seen"] {
            assert_eq!(a.1[k], b.1[k], "{ns} {v} {k}");
        }
    }
    assert!(g.get("/r/x/ips?val=10.1.1.1&noshadow").await.1["tags"]
        .as_str()
        .unwrap_or("")
        .contains("tlp:green"));
    // Exported again from the copy: the same indicators and sightings (ids and counts).
    let (_, _, again) = stix_post(&g, ADMIN, r#"{"namespace":"x","recursive":true}"#).await;
    let ids = |b: &Value| -> Vec<(Value, Value)> {
        let mut v: Vec<(Value, Value)> = of(b, "sighting")
            .iter()
            .map(|s| (s["id"].clone(), s["count"].clone()))
            .collect();
        v.sort_by_key(|p| p.0.to_string());
        v
    };
    assert_eq!(ids(&bundle), ids(&again));
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b".-_".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn import_stix_says_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let bundles = dir.path().join("in");
    std::fs::create_dir(&bundles).expect("mkdir");
    std::fs::write(bundles.join("a-bad.json"), "{nope").expect("write");
    std::fs::write(
        bundles.join("b-good.json"),
        r#"{"type":"bundle","id":"bundle--1","objects":[
          {"type":"ipv4-addr","id":"ipv4-addr--1","value":"192.0.2.1"},
          {"type":"observed-data","id":"observed-data--1","number_observed":3,
           "first_observed":"2020-09-13T12:26:40Z","last_observed":"2020-09-13T13:26:40Z","object_refs":["ipv4-addr--1"]},
          {"type":"sighting","id":"sighting--1","count":"three"}]}"#,
    )
    .expect("write");
    let out = import(
        &data,
        &[
            bundles.to_str().expect("utf-8"),
            "--type",
            "ipv4-addr=feeds/ips",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a bad bundle fails the command: {err}"
    );
    assert!(
        err.contains("a-bad.json: not imported: the bundle is not valid JSON"),
        "{err}"
    );
    assert!(
        err.contains("skipped object sighting--1: \"count\" must be a non-negative integer"),
        "{err}"
    );
    assert!(
        err.contains("1 values with new sightings (3 sightings)"),
        "the good one is imported: {err}"
    );
    assert!(
        err.contains("1 of 2 bundles could not be imported"),
        "{err}"
    );
    let out = import(
        &data,
        &[
            bundles.join("b-good.json").to_str().expect("utf-8"),
            "--max-bytes",
            "10",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than --max-bytes 10"));
    let out = import(
        &data,
        &[dir.path().join("missing.json").to_str().expect("utf-8")],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a bundle file or a directory"));
    let out = import(
        &data,
        &[bundles.to_str().expect("utf-8"), "--type", "nonsense"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("write TYPE=NAMESPACE"));
}
