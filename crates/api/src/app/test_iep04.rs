//! Tests of the `/iep04/` routes without a socket, through [`App::handle`] (moved from the
//! exchange crate, where they called `Exchange::handle`): publish forms, answers, reads,
//! long-poll, access, links, consumers.

use super::testkit::{app, call, chunks};
use crate::app::App;
use crate::cmd::iep04::{COUNT_HEADER, CURSOR_HEADER};
use serde_json::Value;
use sighthub_exchange::{AdminKey, Exchange, ExchangeConfig, KeyConfig};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const ADMIN: &str = "admin-key";
const HUB: Uuid = Uuid::from_u128(0x1111);
const ORG_A: Uuid = Uuid::from_u128(0xa);
const ORG_B: Uuid = Uuid::from_u128(0xb);

fn feed(s: &str) -> sighthub_exchange::Feed {
    sighthub_exchange::Feed::parse(s).expect("a feed")
}

fn key(org: Uuid, publish: &[&str], read: &[&str], tlp: &str) -> KeyConfig {
    KeyConfig {
        org,
        publish: publish.iter().map(|s| feed(s)).collect(),
        read: read.iter().map(|s| feed(s)).collect(),
        tlp_max: tlp.parse().expect("a TLP level"),
        relay: false,
        tags: vec![],
    }
}

fn exchange(dir: &std::path::Path, tweak: impl FnOnce(&mut ExchangeConfig)) -> Arc<App> {
    let mut cfg = ExchangeConfig {
        org: Some(HUB),
        ..ExchangeConfig::default()
    };
    cfg.keys
        .insert("a-pub".into(), key(ORG_A, &["intelmq"], &[], "AMBER"));
    cfg.keys
        .insert("a-read".into(), key(ORG_A, &[], &["*"], "AMBER"));
    cfg.keys.insert(
        "b-green".into(),
        key(ORG_B, &["*"], &["intelmq/event"], "GREEN"),
    );
    cfg.keys
        .insert("b-tags".into(), key(ORG_B, &[], &["tag:feed:x"], "RED"));
    tweak(&mut cfg);
    let ex = Exchange::open(&cfg, dir, AdminKey::Key(ADMIN.into())).expect("open");
    app(dir, ex, &[])
}

async fn post(ex: &Arc<App>, key: &str, ct: &str, body: &str) -> (u16, Value) {
    let (s, v, _) = call(
        ex,
        "POST",
        "/iep04/messages",
        Some(key),
        Some(ct),
        chunks(&[body.as_bytes()]),
    )
    .await;
    (s, v)
}

async fn get(ex: &Arc<App>, key: &str, uri: &str) -> (u16, Value, hyper::HeaderMap) {
    call(ex, "GET", uri, Some(key), None, chunks(&[])).await
}

fn env(uuid: Uuid, org: Option<Uuid>, payload: &str, extra: &str) -> String {
    let org = org.map_or(String::new(), |o| format!(r#","uuid_org":"{o}""#));
    format!(
        r#"{{"format":"intelmq","version":1,"type":"event","meta":{{"uuid":"{uuid}"{org}{extra}}},"payload":{payload}}}"#
    )
}

#[tokio::test]
async fn routes_methods_and_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let ex = exchange(dir.path(), |_| {});
    assert_eq!(get(&ex, ADMIN, "/iep04/nope").await.0, 404);
    let (s, _, h) = call(
        &ex,
        "PUT",
        "/iep04/messages",
        Some(ADMIN),
        None,
        chunks(&[]),
    )
    .await;
    assert_eq!((s, h["allow"].to_str().ok()), (405, Some("GET, POST")));
    assert_eq!(
        call(&ex, "GET", "/iep04/messages", None, None, chunks(&[]))
            .await
            .0,
        401
    );
    assert_eq!(get(&ex, "wrong", "/iep04/messages").await.0, 403);
    assert_eq!(
        get(&ex, "a-pub", "/iep04/messages").await.0,
        403,
        "publish-only key"
    );
    assert_eq!(post(&ex, "a-read", "application/json", "{}").await.0, 403);
    assert_eq!(get(&ex, ADMIN, "/iep04/messages?bogus=1").await.0, 400);
    assert_eq!(
        get(&ex, ADMIN, "/iep04/messages?limit=1&limit=2").await.0,
        400
    );
    assert_eq!(get(&ex, ADMIN, "/iep04/messages?after=zzz").await.0, 400);
    assert_eq!(get(&ex, ADMIN, "/iep04/messages/not-a-uuid").await.0, 400);
    let (s, v, _) = get(&ex, ADMIN, "/iep04/status").await;
    assert_eq!(
        (s, v["org"].as_str()),
        (200, Some(HUB.to_string().as_str()))
    );

    let off_dir = tempfile::tempdir().expect("tmp");
    let off = app(off_dir.path(), Exchange::disabled(), &[]);
    assert_eq!(get(&off, ADMIN, "/iep04/messages").await.0, 404);
}

#[tokio::test]
async fn publish_forms_and_per_message_answers() {
    let dir = tempfile::tempdir().expect("tmp");
    let ex = exchange(dir.path(), |_| {});
    let u = Uuid::new_v4();
    // One envelope.
    let (s, v) = post(
        &ex,
        "a-pub",
        "application/json",
        &env(u, None, r#"{"raw":""}"#, ""),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["results"][0]["status"], "accepted");
    assert_eq!(v["results"][0]["uuid"], u.to_string());
    // A JSON array with a duplicate, a bare event and an invalid item.
    let arr = format!(
        "[{}, {{\"source.ip\":\"198.51.100.1\"}}, {{\"format\":\"intelmq\"}}]",
        env(u, None, r#"{"raw":""}"#, "")
    );
    let (s, v) = post(&ex, "a-pub", "application/json", &arr).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["accepted"].as_u64(),
            v["duplicate"].as_u64(),
            v["errors"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(v["results"][0]["by"], "uuid");
    assert_eq!(v["results"][2]["status"], "error");
    assert_eq!(v["results"][2]["field"], "version");
    // ND-JSON, streamed in chunks that split lines; the bare event again is a duplicate by
    // content, a bad line is an error with its line number.
    let (s, v, _) = call(
        &ex,
        "POST",
        "/iep04/messages",
        Some("a-pub"),
        Some("application/x-ndjson"),
        chunks(&[
            b"{\"source.ip\":\"198.5",
            b"1.100.1\"}\n\nnot json\n{\"source.ip\":",
            b"\"198.51.100.2\"}",
        ]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "duplicate");
    assert_eq!(v["results"][0]["by"], "content");
    assert_eq!(v["results"][1]["line"], 3);
    assert_eq!(v["results"][2]["status"], "accepted");
    // One invalid object: 400. An empty body: 400.
    let (s, v) = post(
        &ex,
        "a-pub",
        "application/json",
        r#"{"format":"intelmq","version":"x","type":"event"}"#,
    )
    .await;
    assert_eq!((s, v["errors"].as_u64()), (400, Some(1)));
    assert_eq!(post(&ex, "a-pub", "application/json", "  ").await.0, 400);
    // results=none / errors.
    let (s, v, _) = call(
        &ex,
        "POST",
        "/iep04/messages?results=none",
        Some("a-pub"),
        Some("application/json"),
        chunks(&[b"{\"source.ip\":\"198.51.100.9\"}"]),
    )
    .await;
    assert_eq!(s, 200);
    assert!(v.get("results").is_none());
    assert_eq!(v["accepted"], 1);
}

#[tokio::test]
async fn size_limit_refuses_streams_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let ex = exchange(dir.path(), |c| c.max_request_bytes = 2048);
    let line = format!("{}\n", env(Uuid::new_v4(), None, r#"{"raw":""}"#, ""));
    let parts: Vec<Vec<u8>> = (0..20).map(|_| line.clone().into_bytes()).collect();
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let (s, _, _) = call(
        &ex,
        "POST",
        "/iep04/messages",
        Some(ADMIN),
        Some("application/x-ndjson"),
        chunks(&refs),
    )
    .await;
    assert_eq!(s, 413);
    let (_, v, _) = get(&ex, ADMIN, "/iep04/status").await;
    assert_eq!(v["head_seq"], 0, "nothing written");
}

#[tokio::test]
async fn foreign_org_and_feed_refusals_write_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let ex = exchange(dir.path(), |_| {});
    let body = format!(
        "{}\n{}\n",
        env(Uuid::new_v4(), None, r#"{"raw":""}"#, ""),
        env(Uuid::new_v4(), Some(ORG_B), r#"{"raw":""}"#, "")
    );
    let (s, v) = post(&ex, "a-pub", "application/x-ndjson", &body).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["refused"][0]["index"], 1);
    let ail = r#"{"format":"ail","version":1,"type":"item","meta":{"uuid":"03c51929-eeab-4d47-9dc0-c667f94c7d2c"},"payload":{"raw":""}}"#;
    assert_eq!(post(&ex, "a-pub", "application/json", ail).await.0, 403);
    let (_, v, _) = get(&ex, ADMIN, "/iep04/status").await;
    assert_eq!(v["head_seq"], 0);
    // The admin may publish as any organisation.
    assert_eq!(post(&ex, ADMIN, "application/x-ndjson", &body).await.0, 200);
}

#[tokio::test]
async fn reads_page_with_cursors_exports_and_filters() {
    let dir = tempfile::tempdir().expect("tmp");
    let ex = exchange(dir.path(), |_| {});
    let mut body = String::new();
    for (i, tlp) in ["GREEN", "AMBER", "RED", "GREEN"].iter().enumerate() {
        body.push_str(&format!(
            "{{\"source.ip\":\"198.51.100.{i}\",\"tlp\":\"{tlp}\",\"raw\":\"eA==\"}}\n"
        ));
    }
    body.push_str(&format!(
        "{}\n",
        env(
            Uuid::new_v4(),
            None,
            r#"{"raw":""}"#,
            r#","tags":["feed:x:1"]"#
        )
    ));
    assert_eq!(post(&ex, ADMIN, "application/x-ndjson", &body).await.0, 200);

    // Pages of 2 for the AMBER reader: sees 1,2,4,5 (not RED 3).
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (s, v, h) = get(
            &ex,
            "a-read",
            &format!("/iep04/messages?limit=2&after={after}"),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(h[CURSOR_HEADER].to_str().ok(), v["cursor"].as_str());
        for m in v["messages"].as_array().expect("array") {
            seen.push(m["payload"]["source.ip"].as_str().unwrap_or("x").to_owned());
        }
        after = v["cursor"].as_str().expect("cursor").to_owned();
        if v["count"] == 0 {
            break;
        }
    }
    assert_eq!(
        seen,
        vec!["198.51.100.0", "198.51.100.1", "198.51.100.3", "x"]
    );
    // GREEN reader of intelmq/event: the unlabelled message counts as AMBER (default_tlp).
    let (_, v, _) = get(&ex, "b-green", "/iep04/messages").await;
    assert_eq!(v["count"], 2);
    // Tag-feed reader with RED ceiling: only the tagged message.
    let (_, v, _) = get(&ex, "b-tags", "/iep04/messages").await;
    assert_eq!(v["count"], 1);
    assert_eq!(v["messages"][0]["meta"]["tags"][0], "feed:x:1");
    // Bare IntelMQ export as ND-JSON with __type; the payload-less/empty-raw one too.
    let (s, v, h) = get(
        &ex,
        "b-green",
        "/iep04/messages?export=intelmq&with_type=1&format=ndjson",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "application/x-ndjson");
    assert_eq!(h[COUNT_HEADER], "2");
    let text = v.as_str().expect("ndjson text");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(lines[0]["__type"], "Event");
    assert!(lines[0].get("meta").is_none());
    // limit=0 gives the cursor of the end: nothing after it.
    let (_, v, _) = get(&ex, "a-read", "/iep04/messages?limit=0").await;
    let end = v["cursor"].as_str().expect("cursor").to_owned();
    let (_, v, _) = get(&ex, "a-read", &format!("/iep04/messages?after={end}")).await;
    assert_eq!(v["count"], 0);
    assert_eq!(v["cursor"], end.as_str());
    // A cursor of another exchange is refused.
    let other = sighthub_exchange::record::encode_cursor(1, 12345);
    assert_eq!(
        get(&ex, "a-read", &format!("/iep04/messages?after={other}"))
            .await
            .0,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_publish() {
    let dir = tempfile::tempdir().expect("tmp");
    let ex = exchange(dir.path(), |_| {});
    let reader = {
        let ex = ex.clone();
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let r = get(&ex, "a-read", "/iep04/messages?wait=20").await;
            (r, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        post(
            &ex,
            "a-pub",
            "application/json",
            r#"{"source.ip":"198.51.100.1"}"#
        )
        .await
        .0,
        200
    );
    let ((s, v, _), took) = reader.await.expect("reader");
    assert_eq!((s, v["count"].as_u64()), (200, Some(1)));
    assert!(took < Duration::from_secs(10), "{took:?}");
    // An empty long-poll ends at its deadline with the same cursor.
    let c = v["cursor"].as_str().expect("c").to_owned();
    let t = std::time::Instant::now();
    let (_, v, _) = get(&ex, "a-read", &format!("/iep04/messages?after={c}&wait=1")).await;
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        (v["count"].as_u64(), v["cursor"].as_str()),
        (Some(0), Some(c.as_str()))
    );
}

#[tokio::test]
async fn fetch_links_updates_and_withdrawals() {
    let dir = tempfile::tempdir().expect("tmp");
    let ex = exchange(dir.path(), |_| {});
    let (x, w, r) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    post(
        &ex,
        "a-pub",
        "application/json",
        &env(
            x,
            None,
            r#"{"raw":"eA=="}"#,
            r#","tags":["t1"],"intelmq:alternate":["RT#1234"]"#,
        ),
    )
    .await;
    // Tag update.
    let (s, v) = post(
        &ex,
        "a-pub",
        "application/json",
        &env(x, None, "{}", r#","tags":["t2"]"#),
    )
    .await;
    assert_eq!(
        (s, v["results"][0]["kind"].as_str()),
        (200, Some("tag_update"))
    );
    // Replacement and withdrawal by the same organisation.
    let links = |me: Uuid, t: &str| {
        format!(r#","intelmq:links":[{{"left_side":"{me}","type":"{t}","right_side":"{x}"}}]"#)
    };
    post(
        &ex,
        "a-pub",
        "application/json",
        &env(r, None, r#"{"raw":"eQ=="}"#, &links(r, "replaces")),
    )
    .await;
    let (s, _) = post(
        &ex,
        "a-pub",
        "application/json",
        &env(w, None, "{}", &links(w, "withdraws")),
    )
    .await;
    assert_eq!(s, 200);

    let (s, v, _) = get(&ex, "a-read", &format!("/iep04/messages/{x}")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["seq"], 1);
    assert_eq!(
        v["message"]["meta"]["tags"],
        serde_json::json!(["t1", "t2"])
    );
    assert_eq!(v["withdrawn_by"], serde_json::json!([w.to_string()]));
    assert_eq!(v["replaced_by"], serde_json::json!([r.to_string()]));
    let (_, v, _) = get(
        &ex,
        "a-read",
        &format!("/iep04/messages/{x}?export=intelmq"),
    )
    .await;
    assert_eq!(v["message"]["raw"], "eA==");

    let (s, v, _) = get(&ex, "a-read", &format!("/iep04/links/{x}")).await;
    assert_eq!((s, v["count"].as_u64()), (200, Some(2)), "{v}");
    let types: Vec<&str> = v["links"]
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l["type"].as_str())
        .collect();
    assert!(types.contains(&"withdraws") && types.contains(&"replaces"));
    let (_, v, _) = get(&ex, "a-read", "/iep04/links?alternate=RT%231234").await;
    assert_eq!(v["messages"][0]["uuid"], x.to_string());
    // The log delivers the update and the withdrawal like any message, in order.
    let (_, v, _) = get(&ex, "a-read", "/iep04/messages").await;
    let kinds: Vec<String> = v["messages"]
        .as_array()
        .expect("m")
        .iter()
        .map(|m| m["meta"]["uuid"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        kinds,
        vec![x.to_string(), x.to_string(), r.to_string(), w.to_string()]
    );
    // Unknown uuid: 404; invisible to a GREEN reader (unlabelled = AMBER): 404 too.
    assert_eq!(
        get(
            &ex,
            "a-read",
            &format!("/iep04/messages/{}", Uuid::new_v4())
        )
        .await
        .0,
        404
    );
    assert_eq!(
        get(&ex, "b-green", &format!("/iep04/messages/{x}")).await.0,
        404
    );
    // Organisation B may not withdraw A's message.
    let bw = Uuid::new_v4();
    let (s, _) = post(
        &ex,
        "b-green",
        "application/json",
        &env(bw, None, "{}", &links(bw, "withdraws")),
    )
    .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn named_consumers_advance_only_on_ack() {
    let dir = tempfile::tempdir().expect("tmp");
    let ex = exchange(dir.path(), |_| {});
    for i in 0..5 {
        post(
            &ex,
            "a-pub",
            "application/json",
            &format!(r#"{{"source.ip":"198.51.100.{i}"}}"#),
        )
        .await;
    }
    let (_, v, _) = get(&ex, "a-read", "/iep04/consumers/c1").await;
    assert_eq!(
        (v["exists"].as_bool(), v["behind"].as_u64()),
        (Some(false), Some(5))
    );
    let (_, v, _) = get(&ex, "a-read", "/iep04/consumers/c1/messages?limit=3").await;
    assert_eq!(v["count"], 3);
    let c = v["cursor"].as_str().expect("c").to_owned();
    // Not acknowledged: the same page again.
    let (_, v2, _) = get(&ex, "a-read", "/iep04/consumers/c1/messages?limit=3").await;
    assert_eq!(v2["messages"], v["messages"]);
    let (s, v, _) = call(
        &ex,
        "POST",
        "/iep04/consumers/c1/ack",
        Some("a-read"),
        Some("application/json"),
        chunks(&[format!(r#"{{"cursor":"{c}"}}"#).as_bytes()]),
    )
    .await;
    assert_eq!((s, v["acked_seq"].as_u64()), (200, Some(3)), "{v}");
    let (_, v, _) = get(&ex, "a-read", "/iep04/consumers/c1/messages").await;
    assert_eq!(v["count"], 2);
    // Another organisation's consumer of the same name is another consumer.
    let (_, v, _) = get(&ex, "b-green", "/iep04/consumers/c1").await;
    assert_eq!(v["acked_seq"], 0);
    assert_eq!(
        get(&ex, "a-read", "/iep04/consumers/bad%20name").await.0,
        400
    );
    let (s, v, _) = call(
        &ex,
        "DELETE",
        "/iep04/consumers/c1",
        Some("a-read"),
        None,
        chunks(&[]),
    )
    .await;
    assert_eq!((s, v["deleted"].as_bool()), (200, Some(true)));
}

/// Streams longer than one segment are prepared on several threads; indexes, line numbers,
/// refusals and the order of sequence numbers stay those of the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_streams_keep_request_order_across_segments() {
    let dir = tempfile::tempdir().expect("tmp");
    let ex = exchange(dir.path(), |_| {});
    let mut lines = Vec::new();
    for i in 0..700 {
        lines.push(match i {
            100 | 555 => "garbage".to_owned(),
            _ => format!(r#"{{"source.ip":"198.51.100.{}","extra.i":{i}}}"#, i % 250),
        });
    }
    // A refused message far into the stream refuses the whole request.
    let mut refused = lines.clone();
    refused[650] = env(Uuid::new_v4(), Some(ORG_B), r#"{"raw":""}"#, "");
    let body = refused.join("\n");
    let (s, v, _) = call(
        &ex,
        "POST",
        "/iep04/messages",
        Some("a-pub"),
        Some("application/x-ndjson"),
        chunks(&[body.as_bytes()]),
    )
    .await;
    assert_eq!(
        (s, v["refused"][0]["index"].as_u64()),
        (403, Some(650)),
        "{v}"
    );
    let (_, st, _) = get(&ex, ADMIN, "/iep04/status").await;
    assert_eq!(st["head_seq"], 0);

    let body = lines.join("\n");
    let parts: Vec<&[u8]> = body.as_bytes().chunks(997).collect();
    let (s, v, _) = call(
        &ex,
        "POST",
        "/iep04/messages",
        Some("a-pub"),
        Some("application/x-ndjson"),
        chunks(&parts),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["errors"].as_u64()),
        (Some(698), Some(2))
    );
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 700);
    assert_eq!(
        (results[100]["line"].as_u64(), results[555]["line"].as_u64()),
        (Some(101), Some(556))
    );
    let mut last = 0;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"].as_u64(), Some(i as u64));
        if let Some(seq) = r["seq"].as_u64() {
            assert!(seq > last, "sequence follows request order");
            last = seq;
        }
    }
    let (_, page, _) = get(&ex, "a-read", "/iep04/messages?limit=1000").await;
    let order: Vec<u64> = page["messages"]
        .as_array()
        .expect("m")
        .iter()
        .filter_map(|m| m["payload"]["extra.i"].as_u64())
        .collect();
    let want: Vec<u64> = (0..700).filter(|i| *i != 100 && *i != 555).collect();
    assert_eq!(order, want);
}
