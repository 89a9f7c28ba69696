//! Two sighthub front ends on one exchange log (`[exchange] backend = "nats"`, one JetStream
//! stream): a message published through both at once is accepted once; what one accepts the
//! other reads, long poll included; a named consumer advanced on one continues on the other;
//! killing one front end under load loses no acknowledged message.
//!
//! Needs the JetStream cluster of `SIGHTHUB_TEST_NATS` (scripts/clusters); without it each
//! test is ignored by a plain `cargo test` (the clusters step runs it, failing without it).

use crate::common::{client, uuid4, Opts, Server, ADMIN};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HUB: &str = "28bc3db3-16da-461c-b20b-b944f4058708";

fn on_cluster() -> bool {
    assert!(
        std::env::var_os("SIGHTHUB_TEST_NATS").is_some(),
        "SIGHTHUB_TEST_NATS is not set: this test needs a JetStream cluster (scripts/test clusters runs it)"
    );
    true
}

fn opts() -> Opts {
    Opts {
        config: Some(format!("[exchange]\norg = \"{HUB}\"\n")),
        ..Opts::default()
    }
}

/// Front end A on `a`, then front end B on `b` sharing A's stream (tests/it/common.rs keeps
/// a data directory's stream name beside it).
fn two_front_ends(a: &Path, b: &Path) -> (Server, Server) {
    let first = Server::start(a, &opts());
    let stream = std::fs::read_to_string(a.with_extension("nats-stream")).expect("A's stream");
    std::fs::write(b.with_extension("nats-stream"), stream).expect("share it");
    let second = Server::start(b, &opts());
    (first, second)
}

fn envelope(uuid: &str, n: u64) -> Value {
    json!({"format": "intelmq", "version": 1, "type": "event", "meta": {"uuid": uuid},
           "payload": {"source.ip": format!("10.9.{}.{}", n / 250, n % 250)}})
}

async fn publish(http: &reqwest::Client, s: &Server, items: &[Value]) -> (u16, Value) {
    let body: String = items.iter().map(|v| format!("{v}\n")).collect();
    match http
        .post(s.url("/iep04/messages"))
        .header("Authorization", ADMIN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
    {
        Ok(r) => {
            let st = r.status().as_u16();
            (st, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn get(http: &reqwest::Client, s: &Server, path: &str) -> (u16, Value) {
    let r = http
        .get(s.url(path))
        .header("Authorization", ADMIN)
        .send()
        .await
        .expect("get");
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn uuids(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["meta"]["uuid"].as_str().expect("uuid").to_owned())
        .collect()
}

/// The whole log through `s`: its uuids in order.
async fn whole_log(s: &Server) -> Vec<String> {
    let http = client();
    let mut cursor = String::new();
    let mut out = Vec::new();
    loop {
        let (st, v) = get(
            &http,
            s,
            &format!("/iep04/messages?limit=5000&after={cursor}"),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        for m in v["messages"].as_array().expect("messages") {
            out.push(m["meta"]["uuid"].as_str().expect("uuid").to_owned());
        }
        cursor = v["cursor"].as_str().expect("cursor").to_owned();
        if v["more"] == false {
            return out;
        }
    }
}

/// The same messages published through both front ends at once are accepted once each,
/// at one sequence number that both front ends report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
async fn the_same_message_through_two_front_ends_is_accepted_once() {
    if !on_cluster() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = two_front_ends(&dir.path().join("a"), &dir.path().join("b"));
    let (a, b) = (Arc::new(a), Arc::new(b));
    let items: Vec<Value> = (0..200).map(|n| envelope(&uuid4(), n)).collect();
    let mut tasks = Vec::new();
    for s in [Arc::clone(&a), Arc::clone(&b)] {
        let items = items.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut out = Vec::new();
            // In batches of 20, so that the two front ends' requests interleave.
            for chunk in items.chunks(20) {
                let (st, v) = publish(&http, &s, chunk).await;
                assert_eq!(st, 200, "{v}");
                out.extend(v["results"].as_array().expect("results").clone());
            }
            out
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("publisher"));
    }
    let mut accepted = 0;
    assert_eq!(answers[0].len(), items.len());
    for (x, y) in answers[0].iter().zip(&answers[1]) {
        let statuses = [x["status"].as_str(), y["status"].as_str()];
        assert!(
            statuses.contains(&Some("accepted")) && statuses.contains(&Some("duplicate"))
                || statuses == [Some("duplicate"), Some("duplicate")],
            "one front end accepts, the other answers duplicate: {x} {y}"
        );
        accepted += statuses.iter().filter(|s| **s == Some("accepted")).count();
        assert_eq!(x["seq"], y["seq"], "both name the same position: {x} {y}");
    }
    assert_eq!(accepted, items.len(), "each message accepted exactly once");
    // Each front end learns of the other's last appends when its head follower wakes.
    let lb = whole_log(&b).await;
    let mut la = whole_log(&a).await;
    for _ in 0..50 {
        if la.len() >= lb.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        la = whole_log(&a).await;
    }
    let lb = whole_log(&b).await;
    assert_eq!(la, lb, "both front ends read the same log");
    assert_eq!(la.len(), items.len(), "no copy twice in the log");
}

/// A long poll on one front end returns when the other accepts a message; a named consumer
/// advanced on one continues on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
async fn reads_long_polls_and_consumers_cross_front_ends() {
    if !on_cluster() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = two_front_ends(&dir.path().join("a"), &dir.path().join("b"));
    let http = client();
    let (_, v) = get(&http, &b, "/iep04/messages?limit=0").await;
    let cursor = v["cursor"].as_str().expect("cursor").to_owned();
    let url = b.url(&format!("/iep04/messages?after={cursor}&wait=30"));
    let waiter = tokio::spawn(async move {
        client()
            .get(url)
            .header("Authorization", ADMIN)
            .send()
            .await
            .expect("get")
            .json::<Value>()
            .await
            .expect("json")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = uuid4();
    let (st, v) = publish(&http, &a, &[envelope(&first, 1)]).await;
    assert_eq!(st, 200, "{v}");
    let woke = waiter.await.expect("waiter");
    assert_eq!(
        uuids(&woke),
        vec![first.clone()],
        "B's long poll returns A's message"
    );

    // A named consumer: read and acknowledge through A, continue through B.
    let more: Vec<String> = (0..5).map(|_| uuid4()).collect();
    let items: Vec<Value> = more.iter().map(|u| envelope(u, 2)).collect();
    let (st, v) = publish(&http, &b, &items).await;
    assert_eq!(st, 200, "{v}");
    // A learns of B's appends when its head follower wakes (milliseconds): wait for them.
    let mut seen_on_a = 0;
    for _ in 0..100 {
        let (st, v) = get(&http, &a, &format!("/iep04/messages?after={cursor}&wait=5")).await;
        assert_eq!(st, 200, "{v}");
        seen_on_a = uuids(&v).len();
        if seen_on_a == 6 {
            break;
        }
    }
    assert_eq!(seen_on_a, 6, "A reads what B accepted");
    let (st, page) = get(&http, &a, "/iep04/consumers/shared-1/messages?limit=3").await;
    assert_eq!(st, 200, "{page}");
    let mut got = uuids(&page);
    assert_eq!(got.len(), 3);
    let r = http
        .post(a.url("/iep04/consumers/shared-1/ack"))
        .header("Authorization", ADMIN)
        .header("content-type", "application/json")
        .body(json!({"cursor": page["cursor"]}).to_string())
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), 200);
    let (st, rest) = get(&http, &b, "/iep04/consumers/shared-1/messages?limit=100").await;
    assert_eq!(st, 200, "{rest}");
    got.extend(uuids(&rest));
    let mut all = vec![first];
    all.extend(more);
    assert_eq!(got, all, "B continues where A acknowledged, nothing twice");
}

/// Publishers on both front ends; front end A is killed (SIGKILL) under load. Every message
/// either front end answered `accepted` is in the log, once, read through B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
async fn killing_one_front_end_loses_no_acknowledged_message() {
    if !on_cluster() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = two_front_ends(&dir.path().join("a"), &dir.path().join("b"));
    let b = Arc::new(b);
    let url_a = a.url("");
    let accepted: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let (accepted, stop, b) = (Arc::clone(&accepted), Arc::clone(&stop), Arc::clone(&b));
        let url_a = url_a.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 400 {
                let items: Vec<Value> = (0..10).map(|i| envelope(&uuid4(), n * 10 + i)).collect();
                let body: String = items.iter().map(|v| format!("{v}\n")).collect();
                // Even tasks publish through A (which dies), odd ones through B.
                let target = if t % 2 == 0 {
                    format!("{url_a}/iep04/messages")
                } else {
                    b.url("/iep04/messages")
                };
                let r = http
                    .post(target)
                    .header("Authorization", ADMIN)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await;
                if let Ok(r) = r {
                    if r.status() == 200 {
                        if let Ok(v) = r.json::<Value>().await {
                            let mut acc = accepted.lock().expect("lock");
                            for x in v["results"].as_array().expect("results") {
                                if x["status"] == "accepted" {
                                    let prev = acc.insert(
                                        x["uuid"].as_str().expect("uuid").to_owned(),
                                        x["seq"].as_u64().expect("seq"),
                                    );
                                    assert!(prev.is_none(), "accepted twice: {x}");
                                }
                            }
                        }
                    }
                }
                n += 1;
            }
        }));
    }
    // Kill A once both front ends have acknowledged something.
    for _ in 0..600 {
        if accepted.lock().expect("lock").len() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("publisher");
    }
    let accepted = accepted.lock().expect("lock").clone();
    assert!(!accepted.is_empty(), "the load accepted nothing");
    let log = whole_log(&b).await;
    let in_log: HashSet<&String> = log.iter().collect();
    assert_eq!(in_log.len(), log.len(), "a message twice in the log");
    let missing: Vec<&String> = accepted.keys().filter(|u| !in_log.contains(u)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages missing after A's death",
        missing.len(),
        accepted.len()
    );
}

/// An event of `feed.name` "scanners" seen at `ip`, which the bridge makes a sighting of in
/// `iep04/<org>/scanners/source.ip`.
fn event(uuid: &str, ip: &str) -> Value {
    json!({"format": "intelmq", "version": 1, "type": "event", "meta": {"uuid": uuid},
           "payload": {"source.ip": ip, "feed.name": "scanners",
                       "classification.taxonomy": "other"}})
}

fn ip(n: u64) -> String {
    format!("10.8.{}.{}", n / 250, n % 250)
}

/// The sighting of `ip` through `s`: (status, count).
async fn sighting(http: &reqwest::Client, s: &Server, ip: &str) -> (u16, Value) {
    let (st, v) = get(
        http,
        s,
        &format!("/r/iep04/{HUB}/scanners/source.ip?val={ip}&noshadow"),
    )
    .await;
    (st, v["count"].clone())
}

/// Polls through `s` until `ip` is a sighting (the bridge is asynchronous), for at most 90 s:
/// a bound for a loaded machine and a lease takeover (15–20 s), not a timing assertion.
async fn until_sighted(http: &reqwest::Client, s: &Server, ip: &str) {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        if sighting(http, s, ip).await.0 == 200 {
            println!("{ip} sighted after {:?}", start.elapsed());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{ip} never became a sighting through {}", s.url(""));
}

/// Two front ends sharing both clusters (one stream, one key prefix), each with its bridge:
/// every message published through either, duplicates included, is one sighting, counted
/// once; killing the front end that runs the bridge (the first one started holds its lease),
/// the other takes the bridge over from the shared position, applying nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the clusters of SIGHTHUB_TEST_REDIS and SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
async fn the_bridge_applies_each_message_once_across_front_ends_and_moves_on_a_kill() {
    on_cluster();
    assert!(
        std::env::var_os("SIGHTHUB_TEST_REDIS").is_some(),
        "SIGHTHUB_TEST_REDIS is not set: this test needs a Redis Cluster too"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let first = Server::start(&a, &opts());
    for shared in ["nats-stream", "redis-prefix"] {
        std::fs::copy(a.with_extension(shared), b.with_extension(shared)).expect("share");
    }
    let second = Server::start(&b, &opts());
    let http = client();

    // 120 messages, alternately through each front end; the first 20 again through the other.
    let msgs: Vec<(String, u64)> = (0..120).map(|n| (uuid4(), n)).collect();
    for chunk in msgs.chunks(10) {
        for (i, s) in [&first, &second].into_iter().enumerate() {
            let items: Vec<Value> = chunk
                .iter()
                .filter(|(_, n)| *n as usize % 2 == i)
                .map(|(u, n)| event(u, &ip(*n)))
                .collect();
            let (st, v) = publish(&http, s, &items).await;
            assert_eq!(st, 200, "{v}");
        }
    }
    let again: Vec<Value> = msgs[..20].iter().map(|(u, n)| event(u, &ip(*n))).collect();
    assert_eq!(publish(&http, &second, &again[..10]).await.0, 200);
    assert_eq!(publish(&http, &first, &again[10..]).await.0, 200);
    // A last message through each: once both are sightings, the bridge is past the rest.
    for (s, n) in [(&first, 1000), (&second, 1001)] {
        assert_eq!(publish(&http, s, &[event(&uuid4(), &ip(n))]).await.0, 200);
    }
    until_sighted(&http, &second, &ip(1000)).await;
    until_sighted(&http, &first, &ip(1001)).await;
    for (_, n) in &msgs {
        for s in [&first, &second] {
            assert_eq!(
                sighting(&http, s, &ip(*n)).await,
                (200, json!(1)),
                "{} once, through {}",
                ip(*n),
                s.url("")
            );
        }
    }

    // The bridge's front end dies; the survivor takes the bridge over and goes on.
    first.kill9();
    let later: Vec<(String, u64)> = (200..260).map(|n| (uuid4(), n)).collect();
    let items: Vec<Value> = later.iter().map(|(u, n)| event(u, &ip(*n))).collect();
    assert_eq!(publish(&http, &second, &items).await.0, 200);
    assert_eq!(publish(&http, &second, &again).await.0, 200, "duplicates");
    assert_eq!(
        publish(&http, &second, &[event(&uuid4(), &ip(2000))])
            .await
            .0,
        200
    );
    until_sighted(&http, &second, &ip(2000)).await;
    for (_, n) in msgs.iter().chain(&later) {
        assert_eq!(
            sighting(&http, &second, &ip(*n)).await,
            (200, json!(1)),
            "{} once after the takeover",
            ip(*n)
        );
    }
}

/// Two front ends started at the same moment on a stream that does not exist yet (a new
/// deployment, or every front end restarted at once): both create the stream and its bucket
/// concurrently, both start, and they serve one log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
async fn two_front_ends_started_at_once_on_a_new_stream_share_it() {
    on_cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let stream = format!("t{}", uuid4().replace('-', ""));
    for d in [&a, &b] {
        std::fs::write(d.with_extension("nats-stream"), &stream).expect("stream name");
    }
    let starts: Vec<_> = [a, b]
        .into_iter()
        .map(|d| std::thread::spawn(move || Server::start(&d, &opts())))
        .collect();
    let servers: Vec<Server> = starts
        .into_iter()
        .map(|t| t.join().expect("a front end did not start"))
        .collect();
    let http = client();
    let m = uuid4();
    assert_eq!(publish(&http, &servers[0], &[envelope(&m, 1)]).await.0, 200);
    let (_, v) = publish(&http, &servers[1], &[envelope(&m, 1)]).await;
    assert!(v.to_string().contains("duplicate"), "{v}");
    assert_eq!(whole_log(&servers[1]).await, vec![m.clone()]);
    assert_eq!(whole_log(&servers[0]).await, vec![m]);
}

/// Acknowledgements of one named consumer sent through both front ends at once, in no
/// order: all are answered 200 and the cursor ends at the furthest one, so the consumer has
/// nothing left to read through either. (The race this guards against, a write decided on a
/// cursor another front end has since moved, rarely happens here; the store's test
/// `nats_consumer_writes_are_compare_and_set_across_front_ends` makes it happen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
async fn concurrent_acks_through_two_front_ends_never_move_a_cursor_back() {
    on_cluster();
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = two_front_ends(&dir.path().join("a"), &dir.path().join("b"));
    let http = client();
    let items: Vec<Value> = (0..30).map(|n| envelope(&uuid4(), n)).collect();
    assert_eq!(publish(&http, &a, &items).await.0, 200);
    // The cursor after each message, read one message at a time.
    let mut cursors = Vec::new();
    let mut after = String::new();
    for _ in 0..30 {
        let (st, v) = get(&http, &a, &format!("/iep04/messages?limit=1&after={after}")).await;
        assert_eq!(st, 200, "{v}");
        after = v["cursor"].as_str().expect("cursor").to_owned();
        cursors.push(after.clone());
    }
    // B learns of A's appends when its head follower wakes (milliseconds): until then a
    // cursor past what B knows is refused there (400, ahead of the log).
    for _ in 0..100 {
        if uuids(&get(&http, &b, "/iep04/messages?limit=100&wait=5").await.1).len() == 30 {
            break;
        }
    }
    let servers = [a.url(""), b.url("")];
    let mut acks = tokio::task::JoinSet::new();
    for i in 0..60usize {
        let (http, base) = (http.clone(), servers[i % 2].clone());
        // Every position, in a scrambled order, twice.
        let cursor = cursors[(i * 7) % 30].clone();
        acks.spawn(async move {
            http.post(format!("{base}/iep04/consumers/racing/ack"))
                .header("Authorization", ADMIN)
                .header("content-type", "application/json")
                .body(json!({ "cursor": cursor }).to_string())
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        });
    }
    while let Some(st) = acks.join_next().await {
        assert_eq!(st.expect("task"), 200);
    }
    for s in [&a, &b] {
        let (st, page) = get(&http, s, "/iep04/consumers/racing/messages?limit=100").await;
        assert_eq!(st, 200, "{page}");
        assert_eq!(
            uuids(&page),
            Vec::<String>::new(),
            "the cursor is at the end"
        );
    }
}
