//! The SightingDB API: every endpoint, status code and semantic, and sighthub's deliberate
//! differences.

use crate::common::{now, Fixture};
use serde_json::json;

#[tokio::test]
async fn write_read_counts_and_view_shape() {
    let f = Fixture::new();
    assert_eq!(
        f.get("/w/my/ns?val=127.0.0.1&timestamp=1500000000").await,
        (200, json!({"message":"ok","count":1,"new":true}))
    );
    assert_eq!(
        f.get("/w/my/ns?val=127.0.0.1&timestamp=1400000000").await,
        (200, json!({"message":"ok","count":2,"new":false}))
    );
    let resp = f
        .http
        .get(f.server.url("/r/my/ns?val=127.0.0.1&noshadow"))
        .header("Authorization", crate::common::ADMIN)
        .send()
        .await
        .expect("read");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.expect("text");
    assert_eq!(
        text,
        r#"{"value":"127.0.0.1","first_seen":1400000000,"last_seen":1500000000,"count":2,"tags":"","ttl":0,"consensus":1}"#,
        "keys in SightingDB's order"
    );
    let (s, v) = f.get("/rs/my/ns?val=127.0.0.1&noshadow").await;
    assert_eq!(s, 200);
    assert_eq!(v["stats"], json!({"1399996800":1,"1499997600":1}));
}

#[tokio::test]
async fn timestamps_zero_absent_negative_and_out_of_range() {
    let f = Fixture::new();
    let before = now();
    f.get("/w/t?val=zero&timestamp=0").await;
    f.get("/w/t?val=absent").await;
    for v in ["zero", "absent"] {
        let (_, r) = f.get(&format!("/r/t?val={v}&noshadow")).await;
        let fs = r["first_seen"].as_i64().expect("first_seen");
        assert!(
            fs >= before && fs <= now() + 1,
            "{v}: timestamp 0/absent means now, got {fs}"
        );
    }
    f.get("/w/t?val=neg&timestamp=-5").await;
    let (_, r) = f.get("/rs/t?val=neg&noshadow").await;
    assert_eq!(
        (r["first_seen"].clone(), r["stats"].clone()),
        (json!(-5), json!({"-3600":1}))
    );
    assert_eq!(
        f.get("/w/t?val=x&timestamp=99999999999999999").await,
        (
            400,
            json!({"message":"Timestamp out of range: 99999999999999999"})
        )
    );
    assert_eq!(
        f.get("/w/t?val=x&timestamp=soon").await,
        (
            400,
            json!({"message":"Invalid query string: Query deserialize error: invalid digit found in string"})
        )
    );
    assert_eq!(f.get("/w/t?val=x&ttl=-1").await.0, 400);
    assert_eq!(
        f.get("/w/t?val=a&val=b").await,
        (
            400,
            json!({"message":"Invalid query string: Query deserialize error: duplicate field `val`"})
        )
    );
}

#[tokio::test]
async fn value_and_namespace_checks() {
    let f = Fixture::new();
    assert_eq!(
        f.get("/w/a").await,
        (
            400,
            json!({"message":"Did not receive a val= argument in the query string."})
        )
    );
    assert_eq!(
        f.get("/w/a?val=").await,
        (400, json!({"message":"Refusing to write an empty value."}))
    );
    for ns in [
        "_all",
        "_shadow/x",
        "_config",
        "_config/x",
        "_expired/x",
        "_stats",
        "_foo/bar",
    ] {
        let first = ns.split('/').next().unwrap_or(ns);
        assert_eq!(
            f.get(&format!("/w/{ns}?val=v")).await,
            (
                403,
                json!({"message": format!("'{first}' is an internal namespace and is not writable from outside.")})
            ),
            "{ns}"
        );
        assert_eq!(f.get(&format!("/d/{ns}")).await.0, 403, "delete {ns}");
    }
    // Normalised namespaces: /a/b = a/b = a/b/.
    f.get("/w//a/b?val=v").await;
    f.get("/w/a/b/?val=v").await;
    let (s, r) = f.get("/r/a/b?val=v&noshadow").await;
    assert_eq!((s, r["count"].clone()), (200, json!(2)));
    assert_eq!(f.get("/w/a//b?val=v").await.0, 400);
    assert_eq!(f.get("/w/?val=v").await.0, 400);
    assert_eq!(
        f.get("/w/a/_private/b?val=v").await.0,
        200,
        "only the first segment is private"
    );
    assert_eq!(f.get("/w/a%2Fb%20c?val=x+y%2Bz").await.0, 200);
    let (_, r) = f.get("/r/a/b c?val=x y%2Bz&noshadow").await;
    assert_eq!(r["value"], "x y+z");
}

#[tokio::test]
async fn tags_merge_as_a_set_with_both_separators() {
    let f = Fixture::new();
    f.get("/w/t?val=v&tags=a,b").await;
    f.get("/w/t?val=v&tags=b,,c%20,%20a").await;
    f.get("/w/t?val=v&tags=d;e").await;
    f.get("/w/t?val=v&tags=").await;
    let (_, r) = f.get("/r/t?val=v&noshadow").await;
    assert_eq!(r["tags"], "a,b,c,d,e");
}

#[tokio::test]
async fn consensus_and_delete_by_get_and_post() {
    let f = Fixture::new();
    f.get("/w/cons/a?val=V").await;
    f.get("/w/cons/b?val=V").await;
    f.get("/w/cons/b?val=V").await;
    f.get("/w/cons/c?val=V").await;
    assert_eq!(f.get("/r/cons/a?val=V&noshadow").await.1["consensus"], 3);
    assert_eq!(f.get("/r/_all?val=V&noshadow").await.1["count"], 3);
    assert_eq!(f.get("/d/cons/b").await, (200, json!({"message":"ok"})));
    assert_eq!(f.get("/r/cons/a?val=V&noshadow").await.1["consensus"], 2);
    // POST deletes too (the Python client's delete); it really deletes.
    assert_eq!(
        f.post("/d/cons/c", json!({})).await,
        (200, json!({"message":"ok"}))
    );
    assert_eq!(
        f.get("/r/cons/c?val=V&noshadow").await,
        (
            404,
            json!({"error":"Path not found","namespace":"cons/c","value":"V"})
        )
    );
    assert_eq!(f.get("/r/cons/a?val=V&noshadow").await.1["consensus"], 1);
    assert_eq!(
        f.get("/d/cons/b").await,
        (
            404,
            json!({"error":"Path not found","namespace":"cons/b","value":""})
        )
    );
    // Shadow sightings never count toward consensus.
    f.get("/r/cons/a?val=V").await;
    assert_eq!(f.get("/r/cons/a?val=V&noshadow").await.1["consensus"], 1);
}

#[tokio::test]
async fn ttl_moves_to_expired_and_a_later_write_starts_fresh() {
    let f = Fixture::new();
    let old = now() - 100;
    f.get(&format!("/w/ttl/a?val=V&timestamp={old}&ttl=10&tags=t1"))
        .await;
    f.get("/w/ttl/b?val=V").await;
    // Expired at read time: 404, consensus given back, the value is in _expired/<ns>.
    assert_eq!(f.get("/r/ttl/a?val=V&noshadow").await.0, 404);
    assert_eq!(f.get("/r/ttl/b?val=V&noshadow").await.1["consensus"], 1);
    let (s, r) = f.get("/r/_expired/ttl/a?val=V&noshadow").await;
    assert_eq!(
        (s, r["count"].clone(), r["tags"].clone()),
        (200, json!(1), json!("t1"))
    );
    assert_eq!(
        f.get("/w/ttl/a?val=V").await.1,
        json!({"message":"ok","count":1,"new":true})
    );
    assert_eq!(f.get("/r/ttl/b?val=V&noshadow").await.1["consensus"], 2);
    // ttl keeps across writes without ttl, and ttl=0 clears it.
    f.get("/w/ttl/c?val=W&ttl=3600").await;
    f.get("/w/ttl/c?val=W").await;
    assert_eq!(f.get("/r/ttl/c?val=W&noshadow").await.1["ttl"], 3600);
    f.get("/w/ttl/c?val=W&ttl=0").await;
    assert_eq!(f.get("/r/ttl/c?val=W&noshadow").await.1["ttl"], 0);
}

#[tokio::test]
async fn shadow_sightings() {
    let f = Fixture::new();
    f.get("/w/s/ns?val=V").await;
    f.get("/r/s/ns?val=V&noshadow").await;
    f.get("/r/s/ns?val=V&noshadow=false").await;
    assert_eq!(
        f.get("/r/_shadow/s/ns?val=V&noshadow").await.0,
        404,
        "noshadow suppresses"
    );
    f.get("/r/s/ns?val=V").await;
    f.get("/rs/s/ns?val=V").await;
    f.get("/r/s/ns?val=missing").await;
    f.get("/r/nope/ns?val=V").await;
    let (s, r) = f.get("/r/_shadow/s/ns?val=V&noshadow").await;
    assert_eq!(
        (s, r["count"].clone(), r["consensus"].clone()),
        (200, json!(2), json!(1))
    );
    assert_eq!(
        f.get("/r/_shadow/s/ns?val=missing&noshadow").await.0,
        200,
        "misses are shadowed"
    );
    assert_eq!(f.get("/r/_shadow/nope/ns?val=V&noshadow").await.0, 200);
    assert_eq!(
        f.get("/r/s/ns?val=V&noshadow").await.1["count"],
        1,
        "reads never count"
    );
    // Listing and ?count raise none.
    f.get("/r/s/ns").await;
    f.get("/r/s/ns?count").await;
    assert_eq!(
        f.get("/r/_shadow/s/ns?count").await.1["values"],
        2,
        "V and the miss"
    );
}

#[tokio::test]
async fn listing_whole_paged_and_count() {
    let f = Fixture::new();
    let items: Vec<_> = (0..25)
        .map(|i| json!({"namespace":"list/ns","value":format!("v{i:02}")}))
        .collect();
    assert_eq!(f.post("/wb", json!({"items": items})).await.0, 200);
    f.get("/w/list/ns/child?val=other").await;
    let (s, r) = f.get("/r/list/ns").await;
    assert_eq!(s, 200);
    assert_eq!(r["attributes"].as_array().map(Vec::len), Some(25));
    assert!(r.get("next").is_none(), "the whole list has no cursor");
    let mut seen = Vec::new();
    let mut path = "/r/list/ns?limit=10".to_owned();
    loop {
        let (s, r) = f.get(&path).await;
        assert_eq!(s, 200);
        for a in r["attributes"].as_array().expect("attributes") {
            seen.push(a["value"].as_str().expect("value").to_owned());
        }
        match r["next"].as_str() {
            Some(c) => path = format!("/r/list/ns?limit=10&after={c}"),
            None => {
                assert!(r["next"].is_null());
                break;
            }
        }
    }
    assert_eq!(
        seen,
        (0..25).map(|i| format!("v{i:02}")).collect::<Vec<_>>()
    );
    assert_eq!(
        f.get("/r/list/ns?count").await,
        (
            200,
            json!({"namespace":"list/ns","values":25,"exact":true,"paged_in":false})
        )
    );
    assert_eq!(f.get("/r/list/ns?val=v01&count").await.0, 400);
    assert_eq!(
        f.get("/r/nope?count").await,
        (
            404,
            json!({"error":"Path not found","namespace":"nope","value":""})
        )
    );
    assert_eq!(
        f.get("/r/nope").await,
        (
            404,
            json!({"error":"Path not found","namespace":"nope","value":""})
        )
    );
    assert_eq!(
        f.get("/rs/list/ns").await,
        (
            400,
            json!({"message":"Error: val= not found! Use /r/<namespace> to list a whole namespace."})
        )
    );
    assert_eq!(f.get("/r/list/ns?after=%%%").await.0, 400);
    assert_eq!(
        f.get("/r/_config/x").await,
        (
            403,
            json!({"message":"No access to _config namespace from outside!"})
        )
    );
    assert_eq!(
        f.get("/r/list/ns?val=nope&noshadow").await,
        (
            404,
            json!({"error":"Value not found","namespace":"list/ns","value":"nope"})
        )
    );
    assert_eq!(
        f.get("/r/list/ns?val=&noshadow").await,
        (
            404,
            json!({"error":"Value not found","namespace":"list/ns","value":""})
        )
    );
}

#[tokio::test]
async fn bulk_write_both_shapes_items_and_status() {
    let f = Fixture::new();
    let (s, r) = f
        .post(
            "/wb",
            json!({"items":[
                {"namespace":"bulk/ns","value":"a","timestamp":1500000000,"tags":"x;y","ttl":0,"extra":true},
                {"bulk/draft":"b","timestamp":null},
                {"namespace":"/bulk/ns/","value":"a","noshadow":true}
            ]}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        r,
        json!({"message":"ok","written":3,"items":[
            {"index":0,"namespace":"bulk/ns","value":"a","status":"ok","count":1,"new":true},
            {"index":1,"namespace":"bulk/draft","value":"b","status":"ok","count":1,"new":true},
            {"index":2,"namespace":"/bulk/ns/","value":"a","status":"ok","count":2,"new":false}
        ]})
    );
    let (s, r) = f
        .post("/wb", json!({"items":[{"namespace":"bulk/ns","value":""},{"namespace":"bulk/ns","value":"c"}]}))
        .await;
    assert_eq!(
        (s, r["message"].clone(), r["written"].clone()),
        (200, json!("partial"), json!(1))
    );
    assert_eq!(
        r["errors"],
        json!([{"namespace":"bulk/ns","value":"","error":"Refusing to write an empty value."}])
    );
    assert_eq!(r["items"][0]["status"], "error");
    let (s, r) = f
        .post(
            "/wb",
            json!({"items":[{"namespace":"_all","value":"c"},{"namespace":"a//b","value":"c"}]}),
        )
        .await;
    assert_eq!(
        (s, r["message"].clone(), r["written"].clone()),
        (400, json!("failed"), json!(0))
    );
    assert_eq!(
        f.post("/wb", json!({"items":[]})).await,
        (200, json!({"message":"ok","written":0,"items":[]}))
    );
    // Dry run: same checks, nothing written.
    let (s, r) = f
        .post(
            "/vwb",
            json!({"items":[{"namespace":"dry/ns","value":"v"},{"namespace":"dry/ns","value":""}]}),
        )
        .await;
    assert_eq!(
        (s, r["message"].clone(), r["writable"].clone()),
        (200, json!("partial"), json!(1))
    );
    assert_eq!(
        r["items"][0],
        json!({"index":0,"namespace":"dry/ns","value":"v","status":"ok"})
    );
    assert_eq!(f.get("/r/dry/ns?val=v&noshadow").await.0, 404);
    assert_eq!(
        f.post("/vwb", json!({"items":[{"namespace":"_all","value":"v"}]}))
            .await
            .0,
        400
    );
    assert_eq!(
        f.post("/vwb", json!({"items":[]})).await,
        (200, json!({"message":"ok","writable":0,"items":[]}))
    );
}

#[tokio::test]
async fn bulk_read_in_request_order_with_stats_and_shadows() {
    let f = Fixture::new();
    f.get("/w/br/a?val=1&timestamp=1500000000").await;
    f.get("/w/br/b?val=1").await;
    let (s, r) = f
        .post(
            "/rb",
            json!({"items":[
                {"namespace":"br/a","value":"1","timestamp":0},
                {"namespace":"br/a","value":"nope","noshadow":true},
                {"br/b":"1"},
                {"namespace":"none","value":"1"},
                {"namespace":"_config/x","value":"1"}
            ]}),
        )
        .await;
    assert_eq!(s, 200);
    let items = r["items"].as_array().expect("items");
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["value"], "1");
    assert_eq!(items[0]["consensus"], 2);
    assert!(items[0].get("stats").is_none());
    assert_eq!(
        items[1],
        json!({"error":"Value not found","namespace":"br/a","value":"nope"})
    );
    assert_eq!(items[2]["count"], 1);
    assert_eq!(
        items[3],
        json!({"error":"Path not found","namespace":"none","value":"1"})
    );
    assert_eq!(
        items[4],
        json!({"message":"No access to _config namespace from outside!"})
    );
    let (_, r) = f
        .post(
            "/rbs",
            json!({"items":[{"namespace":"br/a","value":"1","noshadow":true}]}),
        )
        .await;
    assert_eq!(r["items"][0]["stats"], json!({"1499997600":1}));
    // Shadows: item 0 and 2 and 3 raised one, item 1 did not.
    assert_eq!(f.get("/r/_shadow/br/a?val=1&noshadow").await.1["count"], 1);
    assert_eq!(f.get("/r/_shadow/br/a?val=nope&noshadow").await.0, 404);
    assert_eq!(f.get("/r/_shadow/none?val=1&noshadow").await.0, 200);
    assert_eq!(
        f.post_as(None, "/rb", json!({"items":[]})).await.0,
        401,
        "the key is checked before the body is read, even an empty one"
    );
    assert_eq!(
        f.post(
            "/rb",
            json!({"items":[{"namespace":"x","value":"1","noshadow":"yes"}]})
        )
        .await
        .0,
        400
    );
}

#[tokio::test]
async fn value_formats_via_c_endpoint() {
    let f = Fixture::new();
    assert_eq!(
        f.get("/c/priv/ip").await,
        (200, json!({"namespace":"priv/ip","value_format":"RAW"}))
    );
    assert_eq!(
        f.post("/c/priv/ip", json!({"value_format":"SHA256"})).await,
        (200, json!({"namespace":"priv/ip","value_format":"SHA256"}))
    );
    f.get("/w/priv/ip?val=abc").await;
    let (s, r) = f.get("/r/priv/ip?val=abc&noshadow").await;
    assert_eq!(s, 200);
    assert_eq!(
        r["value"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let (_, list) = f.get("/r/priv/ip").await;
    assert!(
        !list.to_string().contains("\"abc\""),
        "the raw value is never shown"
    );
    assert_eq!(
        f.post("/c/priv/ip", json!({"value_format":"RAW"})).await.0,
        409
    );
    assert_eq!(
        f.post("/c/priv/ip", json!({"value_format":"SHA256"}))
            .await
            .0,
        200,
        "no change"
    );
    assert_eq!(
        f.post("/c/other", json!({"value_format":"MD5"})).await.0,
        400
    );
    assert_eq!(f.post("/c/other", json!({"format":"RAW"})).await.0, 400);
    assert_eq!(
        f.post("/c/_all", json!({"value_format":"RAW"})).await.0,
        403
    );
    f.post("/c/b64", json!({"value_format":"BASE64URL"})).await;
    f.post("/wb", json!({"items":[{"namespace":"b64","value":"a?"}]}))
        .await;
    assert_eq!(f.get("/r/b64?val=a?&noshadow").await.1["value"], "YT8");
    // Deleting the namespace empties it: its format may change again.
    f.get("/d/priv/ip").await;
    assert_eq!(
        f.post("/c/priv/ip", json!({"value_format":"RAW"})).await.0,
        200
    );
}

#[tokio::test]
async fn info_health_openapi_latest_namespaces_help_and_routing() {
    let f = Fixture::new();
    let (s, r) = f.get_as(None, "/i").await;
    assert_eq!(
        (s, r["implementation"].clone(), r["server"].clone()),
        (200, json!("SightingDB"), json!("sighthub"))
    );
    let (s, r) = f.get_as(None, "/health").await;
    assert_eq!((s, r["status"].clone()), (200, json!("ok")));
    let resp = f
        .http
        .get(f.server.url("/_api/openapi.yaml"))
        .send()
        .await
        .expect("openapi");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/yaml; charset=utf-8"
    );
    assert!(resp.text().await.expect("yaml").starts_with("openapi: 3"));
    let help = f.http.get(f.server.url("/")).send().await.expect("help");
    assert_eq!(help.status(), 200);
    assert!(help.text().await.expect("text").contains("/wb"));
    f.get("/w/lat/a?val=1").await;
    f.get("/w/lat/b?val=2").await;
    f.get("/w/lat/a?val=1").await;
    let (s, r) = f.get("/_api/latest?limit=2").await;
    assert_eq!(s, 200);
    assert_eq!(r["capacity"], 10000);
    assert_eq!(r["limit"], 2);
    assert_eq!(r["items"][0]["namespace"], "lat/a");
    assert_eq!(r["items"][1]["namespace"], "lat/b");
    let (_, r) = f.get("/_api/latest?namespace=lat/b").await;
    assert_eq!(r["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(f.get_as(None, "/_api/latest").await.0, 401);
    let (_, r) = f.get("/_api/namespaces").await;
    assert_eq!(
        r,
        json!({"namespaces":["lat/a","lat/b"]}),
        "private namespaces left out"
    );
    assert_eq!(f.get_as(None, "/_api/namespaces").await.0, 401);
    // Unknown routes and wrong methods: JSON 404/405, not a help page.
    assert_eq!(f.get("/nope").await.0, 404);
    assert_eq!(f.get("/wb").await.0, 405);
    assert_eq!(f.post("/r/x", json!({})).await.0, 405);
    let resp = f
        .http
        .delete(f.server.url("/d/x"))
        .header("Authorization", crate::common::ADMIN)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 405);
    assert!(resp.headers().contains_key("allow"));
    let head = f.http.head(f.server.url("/i")).send().await.expect("head");
    assert_eq!(head.status(), 200);
}

#[tokio::test]
async fn sigterm_drains_and_data_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let opts = crate::common::Opts::default();
    let f = Fixture::on(&data, &opts);
    f.post("/c/fmt", json!({"value_format":"SHA256"})).await;
    f.get("/w/keep?val=v&ttl=100000").await;
    f.get("/w/keep?val=v").await;
    assert!(f.server.terminate(), "SIGTERM exits 0");
    let f = Fixture::on(&data, &opts);
    let (s, r) = f.get("/r/keep?val=v&noshadow").await;
    assert_eq!(
        (s, r["count"].clone(), r["ttl"].clone()),
        (200, json!(2), json!(100000))
    );
    assert_eq!(f.get("/c/fmt").await.1["value_format"], "SHA256");
}

/// Batches of 32 items or more are applied and read in key order inside the store; the
/// answers must still be in request order, with repeats counted in request order.
#[tokio::test]
async fn large_unsorted_bulk_batches_answer_in_request_order() {
    let f = Fixture::new();
    // Descending values over two namespaces, every value twice: the second copy of a value
    // comes later in the request and must see count 2, new false.
    let mut items = Vec::new();
    for round in 0..2 {
        for i in (0..40).rev() {
            let ns = if i % 2 == 0 { "big/b" } else { "big/a" };
            items.push((round, ns, format!("v{i:02}")));
        }
    }
    let body: Vec<_> = items
        .iter()
        .map(|(_, ns, v)| json!({"namespace": ns, "value": v}))
        .collect();
    let (s, r) = f.post("/wb", json!({ "items": body })).await;
    assert_eq!((s, r["written"].clone()), (200, json!(80)));
    for (idx, (round, ns, v)) in items.iter().enumerate() {
        let it = &r["items"][idx];
        assert_eq!(
            (
                it["index"].clone(),
                it["namespace"].clone(),
                it["value"].clone()
            ),
            (json!(idx), json!(ns), json!(v)),
            "item {idx} out of order"
        );
        assert_eq!(
            (it["count"].clone(), it["new"].clone()),
            (json!(round + 1), json!(*round == 0)),
            "item {idx}"
        );
    }
    // Read back in another unsorted order, with misses and a bad namespace mixed in.
    let mut reads: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            let ns = if i % 2 == 0 { "big/b" } else { "big/a" };
            json!({"namespace": ns, "value": format!("v{:02}", (i * 7) % 40), "noshadow": true})
        })
        .collect();
    reads.insert(
        5,
        json!({"namespace": "big/a", "value": "zzz", "noshadow": true}),
    );
    reads.insert(
        0,
        json!({"namespace": "a//b", "value": "v00", "noshadow": true}),
    );
    let (s, r) = f.post("/rb", json!({ "items": reads.clone() })).await;
    assert_eq!(s, 200);
    let answers = r["items"].as_array().expect("items");
    assert_eq!(answers.len(), reads.len());
    for (req, ans) in reads.iter().zip(answers) {
        let (ns, v) = (req["namespace"].as_str(), req["value"].as_str());
        let n: Option<usize> = v.and_then(|v| v.get(1..)).and_then(|d| d.parse().ok());
        let stored = n.is_some_and(|n| {
            (n % 2 == 0 && ns == Some("big/b")) || (n % 2 == 1 && ns == Some("big/a"))
        });
        if ns == Some("a//b") {
            assert!(ans.get("message").is_some(), "{ans}");
        } else if stored {
            assert_eq!((ans["value"].as_str(), ans["count"].clone()), (v, json!(2)));
        } else {
            assert_eq!(ans["error"], "Value not found", "{req} -> {ans}");
        }
    }
}

/// Issue 14 item 6: SightingDB's galaxy and tier routes and `?for_merge` are refused
/// explicitly (501, saying what to do), never answered as if they were plain reads; and
/// `?count` on a namespace holding TTL values is exact: expired values are not counted.
#[tokio::test]
async fn issue14_galaxy_routes_are_refused_and_a_count_with_ttls_is_exact() {
    let f = Fixture::new();
    assert_eq!(f.get("/w/g/ns?val=1.2.3.4").await.0, 200);
    for (status, body) in [
        f.get("/r/g/ns?val=1.2.3.4&for_merge").await,
        f.get("/r/g/ns?for_merge&offset=0&limit=10").await,
        f.post("/_api/merge", json!({})).await,
        f.post("/_api/tier", json!({})).await,
    ] {
        assert_eq!(status, 501, "{body}");
        let msg = body["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("not implemented") && msg.contains("IEP04"),
            "{body}"
        );
    }
    // Two values expired on arrival (last seen 100 s ago, TTL 10 s), one alive.
    let old = now() - 100;
    for v in ["a", "b"] {
        let (s, _) = f
            .get(&format!("/w/ttl/ns?val={v}&timestamp={old}&ttl=10"))
            .await;
        assert_eq!(s, 200);
    }
    assert_eq!(f.get("/w/ttl/ns?val=c&ttl=3600").await.0, 200);
    assert_eq!(
        f.get("/r/ttl/ns?count").await,
        (
            200,
            json!({"namespace":"ttl/ns","values":1,"exact":true,"paged_in":false})
        )
    );
}
