//! The IEP04 exchange on a real server: concurrent publishers and consumers with exactly-once
//! cursors, de-duplication by uuid and by content, resumption, long-poll, IntelMQ's REST
//! output forms, access and TLP, links and withdrawals, and `kill -9` under load.

use crate::common::{client, uuid4, Fixture, Opts, Server};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HUB: &str = "28bc3db3-16da-461c-b20b-b944f4058708";
const ORG_A: &str = "0000000a-0000-4000-8000-00000000000a";
const ORG_B: &str = "0000000b-0000-4000-8000-00000000000b";

/// Keys: two publishers (orgs A and B), a relay, an all-seeing reader, a GREEN reader of
/// `intelmq/event`, a reader of one tag feed.
fn config() -> String {
    format!(
        r#"
[exchange]
org = "{HUB}"
content_window_seconds = 3600

[exchange.keys."pub-a"]
org = "{ORG_A}"
publish = ["intelmq"]
read = ["*"]
tlp_max = "RED"

[exchange.keys."pub-b"]
org = "{ORG_B}"
publish = ["intelmq/event"]
tags = ["feed:b"]

[exchange.keys."relay"]
org = "{HUB}"
publish = ["*"]
relay = true

[exchange.keys."reader"]
org = "{HUB}"
read = ["*"]
tlp_max = "RED"

[exchange.keys."green"]
org = "{ORG_B}"
read = ["intelmq/event"]
tlp_max = "GREEN"

[exchange.keys."feed-b"]
org = "{ORG_A}"
read = ["tag:feed:b"]
tlp_max = "RED"
"#
    )
}

fn opts() -> Opts {
    Opts {
        config: Some(config()),
        ..Opts::default()
    }
}

fn envelope(uuid: &str, org: Option<&str>, payload: Value, extra_meta: Value) -> Value {
    let mut meta = json!({"uuid": uuid});
    if let Some(o) = org {
        meta["uuid_org"] = json!(o);
    }
    if let Value::Object(extra) = extra_meta {
        for (k, v) in extra {
            meta[k] = v;
        }
    }
    json!({"format": "intelmq", "version": 1, "type": "event", "meta": meta, "payload": payload})
}

/// POSTs a body; returns status and JSON answer.
async fn post(
    http: &reqwest::Client,
    server: &Server,
    key: &str,
    content_type: &str,
    body: String,
) -> (u16, Value) {
    let r = http
        .post(server.url("/iep04/messages"))
        .header("Authorization", key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("post");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn ndjson(items: &[Value]) -> String {
    items.iter().map(|v| format!("{v}\n")).collect()
}

async fn get(http: &reqwest::Client, server: &Server, key: &str, path: &str) -> (u16, Value) {
    let r = http
        .get(server.url(path))
        .header("Authorization", key)
        .send()
        .await
        .expect("get");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Reads the whole log from `after` to its current end: (uuids in order, last cursor).
async fn read_all(server: &Server, key: &str, after: &str) -> (Vec<String>, String) {
    let http = client();
    let mut cursor = after.to_owned();
    let mut out = Vec::new();
    loop {
        let (s, v) = get(
            &http,
            server,
            key,
            &format!("/iep04/messages?limit=5000&after={cursor}"),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        for m in v["messages"].as_array().expect("messages") {
            out.push(m["meta"]["uuid"].as_str().expect("uuid").to_owned());
        }
        cursor = v["cursor"].as_str().expect("cursor").to_owned();
        if v["more"] == false {
            return (out, cursor);
        }
    }
}

/// Records of what a publisher was told: uuid → seq for each `accepted`.
type Accepted = Arc<Mutex<HashMap<String, u64>>>;

fn record(accepted: &Accepted, answer: &Value) -> (u64, u64) {
    let mut acc = accepted.lock().expect("lock");
    let (mut a, mut d) = (0, 0);
    for r in answer["results"].as_array().expect("results") {
        match r["status"].as_str() {
            Some("accepted") => {
                a += 1;
                let prev = acc.insert(
                    r["uuid"].as_str().expect("uuid").to_owned(),
                    r["seq"].as_u64().expect("seq"),
                );
                assert!(prev.is_none(), "a uuid accepted twice: {r}");
            }
            Some("duplicate") => d += 1,
            _ => panic!("unexpected result {r}"),
        }
    }
    (a, d)
}

/// Several publishers (two organisations, envelopes and bare events, resends, a relay
/// re-publishing what others published) and several consumers at once: every consumer
/// cursor reads every accepted message exactly once, in sequence order; one consumer stops
/// and resumes from its cursor with a new connection; a named consumer acknowledges pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_consumers_read_each_message_exactly_once() {
    let f = Fixture::with(&opts());
    let server = Arc::new(f.server);
    let accepted: Accepted = Arc::new(Mutex::new(HashMap::new()));
    let published_done = Arc::new(AtomicBool::new(false));
    let dup_answers = Arc::new(AtomicU64::new(0));

    let mut consumers = Vec::new();
    for c in 0..3 {
        let (server, done) = (Arc::clone(&server), Arc::clone(&published_done));
        consumers.push(tokio::spawn(async move {
            let mut http = client();
            let mut cursor = String::new();
            let mut got = Vec::new();
            let mut pages = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let (s, v) = get(
                    &http,
                    &server,
                    "reader",
                    &format!("/iep04/messages?after={cursor}&limit=300&wait=1"),
                )
                .await;
                assert_eq!(s, 200, "{v}");
                for m in v["messages"].as_array().expect("messages") {
                    got.push(m["meta"]["uuid"].as_str().expect("uuid").to_owned());
                }
                cursor = v["cursor"].as_str().expect("cursor").to_owned();
                pages += 1;
                if c == 0 && pages == 3 {
                    // Stop, forget the connection, come back later from the saved cursor.
                    drop(http);
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    http = client();
                }
                if finished && v["count"] == 0 && v["more"] == false {
                    return got;
                }
            }
        }));
    }
    // A named consumer that acknowledges each page after "processing" it, and once re-reads
    // a page it did not acknowledge.
    let named = {
        let (server, done) = (Arc::clone(&server), Arc::clone(&published_done));
        tokio::spawn(async move {
            let http = client();
            let mut got = Vec::new();
            let mut skipped_ack = false;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let (s, v) = get(
                    &http,
                    &server,
                    "reader",
                    "/iep04/consumers/named-1/messages?limit=250&wait=1",
                )
                .await;
                assert_eq!(s, 200, "{v}");
                let page: Vec<String> = v["messages"]
                    .as_array()
                    .expect("messages")
                    .iter()
                    .map(|m| m["meta"]["uuid"].as_str().expect("uuid").to_owned())
                    .collect();
                if !page.is_empty() && !skipped_ack {
                    skipped_ack = true; // "crashed" before acknowledging: read it again
                    continue;
                }
                let r = http
                    .post(server.url("/iep04/consumers/named-1/ack"))
                    .header("Authorization", "reader")
                    .header("content-type", "application/json")
                    .body(json!({"cursor": v["cursor"]}).to_string())
                    .send()
                    .await
                    .expect("ack");
                assert_eq!(r.status(), 200);
                got.extend(page);
                if finished && v["count"] == 0 {
                    return got;
                }
            }
        })
    };

    let mut publishers = Vec::new();
    for p in 0..4u64 {
        let (server, accepted, dups) = (
            Arc::clone(&server),
            Arc::clone(&accepted),
            Arc::clone(&dup_answers),
        );
        publishers.push(tokio::spawn(async move {
            let http = client();
            let key = if p % 2 == 0 { "pub-a" } else { "pub-b" };
            for b in 0..20u64 {
                let mut items = Vec::new();
                for i in 0..30u64 {
                    items.push(envelope(
                        &uuid4(),
                        None,
                        json!({"source.ip": format!("10.{p}.{b}.{i}"), "raw": "eA=="}),
                        json!({}),
                    ));
                }
                for i in 0..10u64 {
                    items.push(
                        json!({"source.fqdn": format!("p{p}-b{b}-i{i}.example"), "tlp": "GREEN"}),
                    );
                }
                let body = ndjson(&items);
                let (s, v) = post(&http, &server, key, "application/x-ndjson", body.clone()).await;
                assert_eq!(s, 200, "{v}");
                let (a, d) = record(&accepted, &v);
                assert_eq!((a, d), (40, 0));
                if b % 5 == 0 {
                    // IntelMQ-style resend: everything is a duplicate (uuid and content).
                    let (s, v) = post(&http, &server, key, "application/x-ndjson", body).await;
                    assert_eq!(s, 200);
                    assert_eq!(record(&accepted, &v), (0, 40));
                    dups.fetch_add(40, Ordering::Relaxed);
                }
            }
        }));
    }
    // The relay re-publishes, as they are, messages it reads from the hub: all duplicates.
    let relay = {
        let server = Arc::clone(&server);
        let dups = Arc::clone(&dup_answers);
        tokio::spawn(async move {
            let http = client();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (s, v) = get(&http, &server, "reader", "/iep04/messages?limit=200").await;
            assert_eq!(s, 200);
            let msgs = v["messages"].as_array().expect("messages").clone();
            if msgs.is_empty() {
                return;
            }
            let (s, v) = post(
                &http,
                &server,
                "relay",
                "application/json",
                Value::Array(msgs.clone()).to_string(),
            )
            .await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["duplicate"].as_u64(), Some(msgs.len() as u64), "{v}");
            assert_eq!(v["accepted"], 0);
            dups.fetch_add(msgs.len() as u64, Ordering::Relaxed);
        })
    };
    for p in publishers {
        p.await.expect("publisher");
    }
    relay.await.expect("relay");
    published_done.store(true, Ordering::SeqCst);

    let accepted = accepted.lock().expect("lock").clone();
    assert_eq!(accepted.len(), 4 * 20 * 40);
    let mut expected: Vec<(u64, String)> = accepted.iter().map(|(u, s)| (*s, u.clone())).collect();
    expected.sort();
    let seqs: Vec<u64> = expected.iter().map(|e| e.0).collect();
    assert_eq!(
        seqs,
        (1..=accepted.len() as u64).collect::<Vec<_>>(),
        "dense, monotonic"
    );
    let expected: Vec<String> = expected.into_iter().map(|e| e.1).collect();
    for c in consumers {
        let got = c.await.expect("consumer");
        assert_eq!(got.len(), expected.len(), "each message exactly once");
        assert!(
            got == expected,
            "consumer order differs from sequence order"
        );
    }
    assert!(named.await.expect("named consumer") == expected);
    assert!(dup_answers.load(Ordering::Relaxed) >= 4 * 4 * 40);
    // The bare events came back as envelopes with hub-assigned UUIDv4s and the org of their
    // publisher; B's got B's bare-event tag.
    let (_, v) = get(&client(), &server, "feed-b", "/iep04/messages?limit=10").await;
    assert_eq!(v["count"], 10);
    for m in v["messages"].as_array().expect("m") {
        assert_eq!(m["meta"]["uuid_org"], ORG_B);
        assert_eq!(m["meta"]["tags"], json!(["feed:b"]));
        assert_eq!(&m["meta"]["uuid"].as_str().expect("uuid")[14..15], "4");
    }
}

/// What IntelMQ's REST API output bot sends: one bare event per POST, labelled
/// `application/json; charset=utf-8`, the key in a header (`Bearer`) or as the Basic
/// password; a resend after a timeout is a duplicate by content, answered 2xx.
#[tokio::test]
async fn intelmq_rest_output_requests_are_accepted_and_deduplicated() {
    let f = Fixture::with(&opts());
    let sample = include_str!("../../crates/exchange/tests/data/restapi_output_request.http");
    let body = sample
        .split("\r\n\r\n")
        .nth(1)
        .or_else(|| sample.split("\n\n").nth(1))
        .expect("sample body")
        .trim_end()
        .to_owned();
    let send = |auth: String, body: String| {
        let http = f.http.clone();
        let url = f.server.url("/iep04/messages");
        async move {
            let r = http
                .post(url)
                .header("Authorization", auth)
                .header("Content-Type", "application/json; charset=utf-8")
                .body(body)
                .send()
                .await
                .expect("post");
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.expect("json"))
        }
    };
    let (s, v) = send("Bearer pub-a".into(), body.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "accepted");
    let uuid = v["results"][0]["uuid"].as_str().expect("uuid").to_owned();
    // Basic auth, user name anything, password = key; same event again.
    let basic = format!("Basic {}", b64("intelmq:pub-a"));
    let (s, v) = send(basic, body.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(v["results"][0]["status"], "duplicate");
    assert_eq!(v["results"][0]["by"], "content");
    // Wrong password: 403, nothing written.
    let (s, _) = send(format!("Basic {}", b64("intelmq:nope")), body.clone()).await;
    assert_eq!(s, 403);
    // use_json: false sends form fields labelled JSON.
    let form = "feed.name=Form&source.ip=198.51.100.77&raw=eA%3D%3D".to_owned();
    let (s, v) = send("pub-a".into(), form).await;
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    // It comes back from the log as an envelope with the hub-assigned uuid…
    let (s, v) = f.get(&format!("/iep04/messages/{uuid}")).await;
    assert_eq!(s, 200);
    let m = &v["message"];
    assert_eq!(m["format"], "intelmq");
    assert_eq!(m["meta"]["uuid_org"], ORG_A);
    assert_eq!(
        m["payload"]["comment"].as_str().map(|c| c.contains("äöü")),
        Some(true)
    );
    // …and as the bare event, with __type, for IntelMQ consumers.
    let (s, v) = f
        .get("/iep04/messages?export=intelmq&with_type=1&limit=1")
        .await;
    assert_eq!(s, 200);
    let ev = &v["messages"][0];
    assert_eq!(ev["__type"], "Event");
    assert_eq!(ev["source.ip"], "198.51.100.1");
    assert!(ev.get("meta").is_none());
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A long-polling consumer gets a message as soon as it is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_when_a_message_arrives() {
    let f = Fixture::with(&opts());
    let (_, v) = f.get("/iep04/messages?limit=0").await;
    let cursor = v["cursor"].as_str().expect("cursor").to_owned();
    let url = f
        .server
        .url(&format!("/iep04/messages?after={cursor}&wait=30"));
    let waiter = tokio::spawn(async move {
        let t = std::time::Instant::now();
        let v: Value = client()
            .get(url)
            .header("Authorization", "reader")
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        (v, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, _) = post(
        &f.http,
        &f.server,
        "pub-a",
        "application/json",
        json!({"source.ip": "198.51.100.9"}).to_string(),
    )
    .await;
    assert_eq!(s, 200);
    let (v, took) = waiter.await.expect("waiter");
    assert_eq!(v["count"], 1);
    assert_eq!(v["messages"][0]["payload"]["source.ip"], "198.51.100.9");
    assert!(took < Duration::from_secs(10), "long-poll took {took:?}");
}

/// Keys publish only as their organisation and into their feeds (a refusal writes nothing),
/// and read only their feeds under their TLP ceiling.
#[tokio::test]
async fn access_feeds_and_tlp() {
    let f = Fixture::with(&opts());
    let u = uuid4();
    // pub-b may not publish with A's uuid_org, nor to ail/*: the whole request is refused.
    let body = ndjson(&[
        envelope(&uuid4(), None, json!({"raw": ""}), json!({})),
        envelope(&u, Some(ORG_A), json!({"raw": ""}), json!({})),
    ]);
    let (s, v) = post(&f.http, &f.server, "pub-b", "application/x-ndjson", body).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["refused"][0]["index"], 1);
    let (_, v) = f.get("/iep04/status").await;
    assert_eq!(v["head_seq"], 0, "nothing written");
    let ail = json!({"format": "ail", "version": 1, "type": "item", "meta": {"uuid": uuid4()}, "payload": {"raw": ""}});
    assert_eq!(
        post(
            &f.http,
            &f.server,
            "pub-b",
            "application/json",
            ail.to_string()
        )
        .await
        .0,
        403
    );
    // The refused uuid is not "seen": A may publish it.
    let (s, v) = post(
        &f.http,
        &f.server,
        "pub-a",
        "application/json",
        envelope(&u, None, json!({"raw": "", "tlp": "GREEN"}), json!({})).to_string(),
    )
    .await;
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(1)));
    for tlp in ["RED", "AMBER", "WHITE"] {
        let ev = json!({"source.ip": format!("198.51.100.{}", tlp.len()), "tlp": tlp});
        assert_eq!(
            post(
                &f.http,
                &f.server,
                "pub-a",
                "application/json",
                ev.to_string()
            )
            .await
            .0,
            200
        );
    }
    let tagged = envelope(
        &uuid4(),
        None,
        json!({"raw": ""}),
        json!({"tags": ["tlp:red"]}),
    );
    assert_eq!(
        post(
            &f.http,
            &f.server,
            "pub-a",
            "application/json",
            tagged.to_string()
        )
        .await
        .0,
        200
    );
    let (all, _) = read_all(&f.server, "reader", "").await;
    assert_eq!(all.len(), 5);
    let (green, _) = read_all(&f.server, "green", "").await;
    assert_eq!(
        green.len(),
        2,
        "GREEN and WHITE only; tlp:red tag and unlabelled-as-AMBER hidden"
    );
    assert_eq!(
        f.get_as(Some("green"), &format!("/iep04/messages/{}", all[1]))
            .await
            .0,
        404
    );
    let (feed, _) = read_all(&f.server, "feed-b", "").await;
    assert!(feed.is_empty());
    assert_eq!(
        f.get_as(Some("pub-b"), "/iep04/messages").await.0,
        403,
        "publish-only key"
    );
    assert_eq!(f.get_as(None, "/iep04/messages").await.0, 401);
}

/// Links are indexed ("what links to X" is one call), an empty payload with a known uuid
/// re-tags the message, and a withdrawal marks it and is delivered like any message.
#[tokio::test]
async fn links_tag_updates_and_withdrawals() {
    let f = Fixture::with(&opts());
    let (x, y, w) = (uuid4(), uuid4(), uuid4());
    let msgs = ndjson(&[
        envelope(
            &x,
            None,
            json!({"raw": "eA=="}),
            json!({"tags": ["t1"], "intelmq:alternate": ["RT#77"]}),
        ),
        envelope(
            &y,
            None,
            json!({"raw": "eQ=="}),
            json!({"intelmq:related": [x], "intelmq:group": [x]}),
        ),
        envelope(&x, None, json!({}), json!({"tags": ["t2"]})),
        envelope(
            &w,
            None,
            json!({}),
            json!({"intelmq:links": [{"left_side": w, "type": "withdraws", "right_side": x}]}),
        ),
    ]);
    let (s, v) = post(&f.http, &f.server, "pub-a", "application/x-ndjson", msgs).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], 4);
    assert_eq!(v["results"][2]["kind"], "tag_update");
    let (s, v) = f.get(&format!("/iep04/links/{x}")).await;
    assert_eq!(s, 200);
    assert_eq!(v["count"], 3, "{v}");
    assert_eq!(v["withdrawn_by"], json!([w]));
    let (_, v) = f.get(&format!("/iep04/messages/{x}")).await;
    assert_eq!(v["message"]["meta"]["tags"], json!(["t1", "t2"]));
    assert_eq!(v["withdrawn_by"], json!([w]));
    let (_, v) = f.get("/iep04/links?alternate=RT%2377").await;
    assert_eq!(v["messages"][0]["uuid"], x.as_str());
    let (log, _) = read_all(&f.server, "reader", "").await;
    assert_eq!(
        log,
        vec![x.clone(), y, x, w],
        "update and withdrawal delivered in order"
    );
}

// ---------------------------------------------------------------------------------------------
// Crash: kill -9 under load, restart, check.

const ROUNDS: usize = 6;

/// Publishes batches (envelopes + bare events) from three tasks until `stop`; records every
/// accepted (uuid → seq) and every acknowledged bare event.
async fn crash_load(
    server: &Server,
    round: usize,
    accepted: Accepted,
    bare_acked: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for t in 0..3 {
        let (url, accepted, bare_acked, stop) = (
            server.url("/iep04/messages"),
            Arc::clone(&accepted),
            Arc::clone(&bare_acked),
            Arc::clone(&stop),
        );
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut b = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut items = Vec::new();
                let size = if t == 0 { 1 } else { 25 };
                for i in 0..size {
                    items.push(envelope(
                        &uuid4(),
                        None,
                        json!({"source.ip": format!("10.{round}.{t}.{i}"), "raw": "eA=="}),
                        json!({}),
                    ));
                }
                let bare = json!({"source.fqdn": format!("r{round}-t{t}-b{b}.example")});
                items.push(bare.clone());
                let r = http
                    .post(&url)
                    .header("Authorization", "pub-a")
                    .header("content-type", "application/x-ndjson")
                    .body(ndjson(&items))
                    .send()
                    .await;
                if let Ok(r) = r {
                    if r.status() == 200 {
                        if let Ok(v) = r.json::<Value>().await {
                            record(&accepted, &v);
                            bare_acked.lock().expect("lock").push(bare);
                        }
                    }
                }
                b += 1;
            }
        }));
    }
    tasks
}

/// Every message answered `accepted` is in the log after `kill -9` and restart, at its
/// sequence number, in order; nothing accepted is accepted again (by uuid or by content);
/// a consumer resuming from a cursor taken before the crash misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_messages_survive_kill_9_in_order_and_stay_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let accepted: Accepted = Arc::new(Mutex::new(HashMap::new()));
    let bare_acked = Arc::new(Mutex::new(Vec::new()));
    // A consumer that reads across the crashes with one cursor.
    let mut consumer_cursor = String::new();
    let mut consumer_seen: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let server = Server::start(&data, &opts());
        verify_after_crash(&server, &accepted, &bare_acked).await;
        // The consumer catches up from its saved cursor.
        let (more, c) = read_all(&server, "reader", &consumer_cursor).await;
        consumer_seen.extend(more);
        consumer_cursor = c;
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = crash_load(
            &server,
            round,
            Arc::clone(&accepted),
            Arc::clone(&bare_acked),
            Arc::clone(&stop),
        )
        .await;
        // The consumer reads while the load runs.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(80)).await;
            let (more, c) = read_all(&server, "reader", &consumer_cursor).await;
            consumer_seen.extend(more);
            consumer_cursor = c;
        }
        // Kill while requests are in flight.
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
    }
    let server = Server::start(&data, &opts());
    verify_after_crash(&server, &accepted, &bare_acked).await;
    let (more, _) = read_all(&server, "reader", &consumer_cursor).await;
    consumer_seen.extend(more);
    let (log, _) = read_all(&server, "reader", "").await;
    assert!(
        consumer_seen == log,
        "the resuming consumer missed or repeated messages"
    );
    let n = accepted.lock().expect("lock").len();
    assert!(
        n > ROUNDS * 20,
        "the load accepted too little to mean anything: {n}"
    );
}

async fn verify_after_crash(
    server: &Server,
    accepted: &Accepted,
    bare_acked: &Arc<Mutex<Vec<Value>>>,
) {
    let accepted = accepted.lock().expect("lock").clone();
    if accepted.is_empty() {
        return;
    }
    let http = client();
    // The whole log, with sequence numbers from the per-uuid fetch of a sample and from order.
    let (log, _) = read_all(server, "reader", "").await;
    let position: HashMap<&str, usize> = log
        .iter()
        .enumerate()
        .map(|(i, u)| (u.as_str(), i))
        .collect();
    assert_eq!(position.len(), log.len(), "a uuid appears twice in the log");
    let mut by_seq: Vec<(u64, &str)> = accepted.iter().map(|(u, s)| (*s, u.as_str())).collect();
    by_seq.sort();
    let mut last_pos = None;
    for (seq, uuid) in &by_seq {
        let pos = *position
            .get(uuid)
            .unwrap_or_else(|| panic!("accepted {uuid} (seq {seq}) is not in the log"));
        assert!(
            last_pos < Some(pos),
            "log order differs from the acknowledged sequence numbers"
        );
        last_pos = Some(pos);
    }
    // Sequence numbers are those answered (checked on a sample through fetch-by-uuid).
    for (seq, uuid) in by_seq.iter().step_by((by_seq.len() / 50).max(1)) {
        let (s, v) = get(&http, server, "reader", &format!("/iep04/messages/{uuid}")).await;
        assert_eq!(s, 200);
        assert_eq!(v["seq"].as_u64(), Some(*seq), "{uuid}");
    }
    // Nothing acknowledged is accepted again: every acknowledged uuid and bare event is a
    // duplicate after the restart.
    let mut again: Vec<Value> = by_seq
        .iter()
        .map(|(_, u)| {
            envelope(
                u,
                None,
                json!({"raw": "different payload, same uuid"}),
                json!({}),
            )
        })
        .collect();
    let bare: Vec<Value> = bare_acked.lock().expect("lock").clone();
    again.extend(bare.iter().cloned());
    // In requests within max_items_per_request (10,000): a fast run acknowledges more.
    for chunk in again.chunks(5_000) {
        let (s, v) = post(
            &http,
            server,
            "pub-a",
            "application/x-ndjson",
            ndjson(chunk),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["accepted"], 0,
            "a message accepted before the crash was accepted again"
        );
        assert_eq!(v["duplicate"].as_u64(), Some(chunk.len() as u64));
    }
    let seen: HashSet<&str> = log.iter().map(String::as_str).collect();
    assert!(seen.len() >= accepted.len());
}
