//! Hostile input on the exchange side (issue 10): another organisation, a peer, a silent
//! socket or an oversized record must not touch another organisation's data nor stop or
//! stall the exchange, the bridge, the relay or the IntelMQ listener.

use crate::common::{connect, frame, free_port, vm_hwm_kib, Fixture, Opts};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ORG_A: &str = "aaaaaaaa-1111-4111-8111-111111111111";
const ORG_B: &str = "bbbbbbbb-2222-4222-8222-222222222222";
const KEY_A: &str = "org-a-publisher";
const KEY_B: &str = "org-b-publisher";

/// Two organisations with their own publish keys; an IntelMQ TCP listener speaking for B.
/// `exchange` goes into `[exchange]`, `extra` at the end (after the listener's table).
fn two_orgs(tcp_port: u16, exchange: &str, extra: &str) -> Opts {
    Opts {
        config: Some(format!(
            r#"
[exchange]
{exchange}

[exchange.keys."{KEY_A}"]
org = "{ORG_A}"
publish = ["intelmq/event"]
read = ["*"]

[exchange.keys."{KEY_B}"]
org = "{ORG_B}"
publish = ["intelmq/event"]
read = ["*"]

[intelmq]
enabled = true

[[intelmq.tcp_in]]
name = "org-b"
listen = "127.0.0.1:{tcp_port}"
org = "{ORG_B}"
{extra}
"#
        )),
        ..Opts::default()
    }
}

fn uuid(i: u32) -> String {
    format!("cccccccc-0000-4000-8000-{i:012}")
}

fn event(uuid: &str, org: &str, ip: &str, links: Value) -> Value {
    json!({"format":"intelmq","version":1,"type":"event",
           "meta":{"uuid":uuid,"uuid_org":org,"tags":[],"intelmq:links":links},
           "payload":{"source.ip":ip,"feed.name":"scanners","classification.taxonomy":"other",
                      "time.source":"2021-03-01T12:00:00+00:00"}})
}

fn sighting(org: &str, ip: &str) -> String {
    format!("/r/iep04/{org}/scanners/source.ip?val={ip}&noshadow")
}

/// Polls until `path` answers `status` (the bridge is asynchronous).
async fn status_becomes(f: &Fixture, path: &str, status: u16) -> Value {
    let mut last = (0, Value::Null);
    for _ in 0..400 {
        last = f.get(path).await;
        if last.0 == status {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path}: never answered {status}; last {last:?}");
}

/// Sends one length-prefixed frame and waits for its `Ok`.
async fn send_frame(s: &mut TcpStream, json: &Value) {
    s.write_all(&frame(json.to_string().as_bytes()))
        .await
        .expect("write frame");
    let mut ok = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut ok))
        .await
        .expect("Ok in time")
        .expect("Ok");
    assert_eq!(&ok, b"Ok");
}

/// Item 1: organisation B cannot withdraw or replace A's message, neither by a link between
/// two other messages (carried as data) nor by its own link, over HTTP or the IntelMQ TCP
/// listener; A's own withdrawal still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisation_cannot_withdraw_or_replace() {
    let port = free_port();
    let f = Fixture::with(&two_orgs(port, "", ""));
    let (a1, a2) = (uuid(1), uuid(2));
    for (u, ip) in [(&a1, "192.0.2.10"), (&a2, "192.0.2.11")] {
        let (s, r) = f
            .post_as(
                Some(KEY_A),
                "/iep04/messages",
                event(u, ORG_A, ip, json!([])),
            )
            .await;
        assert_eq!(s, 200, "{r}");
    }
    status_becomes(&f, &sighting(ORG_A, "192.0.2.10"), 200).await;
    status_becomes(&f, &sighting(ORG_A, "192.0.2.11"), 200).await;

    // Over HTTP: a link between two other messages is data...
    let stranger = "dddddddd-0000-4000-8000-000000000000";
    for (i, kind) in [(3, "withdraws"), (4, "replaces")] {
        let links = json!([{"left_side": stranger, "type": kind, "right_side": a1}]);
        let (s, r) = f
            .post_as(
                Some(KEY_B),
                "/iep04/messages",
                event(&uuid(i), ORG_B, "198.51.100.3", links),
            )
            .await;
        assert_eq!(s, 200, "{r}");
    }
    // ... and its own link on another organisation's message is refused.
    for (i, kind) in [(5, "withdraws"), (6, "replaces")] {
        let links = json!([{"left_side": uuid(i), "type": kind, "right_side": a1}]);
        let (s, r) = f
            .post_as(
                Some(KEY_B),
                "/iep04/messages",
                event(&uuid(i), ORG_B, "198.51.100.4", links),
            )
            .await;
        assert_eq!(s, 403, "{r}");
    }
    // Over the IntelMQ TCP listener (speaking for B), both kinds.
    let mut tcp = connect(port).await;
    let links = json!([{"left_side": stranger, "type": "withdraws", "right_side": a2}]);
    send_frame(&mut tcp, &event(&uuid(7), ORG_B, "198.51.100.7", links)).await;
    let links = json!([{"left_side": uuid(8), "type": "replaces", "right_side": a2}]);
    send_frame(&mut tcp, &event(&uuid(8), ORG_B, "198.51.100.8", links)).await;
    let links = json!([{"left_side": stranger, "type": "replaces", "right_side": a1}]);
    send_frame(&mut tcp, &event(&uuid(9), ORG_B, "198.51.100.9", links)).await;
    // A later message of B's proves the bridge went past all of them.
    let (s, _) = f
        .post_as(
            Some(KEY_B),
            "/iep04/messages",
            event(&uuid(10), ORG_B, "198.51.100.10", json!([])),
        )
        .await;
    assert_eq!(s, 200);
    status_becomes(&f, &sighting(ORG_B, "198.51.100.10"), 200).await;
    for ip in ["192.0.2.10", "192.0.2.11"] {
        let (s, v) = f.get(&sighting(ORG_A, ip)).await;
        assert_eq!((s, v["count"].clone()), (200, json!(1)), "{ip}: {v}");
    }
    for target in [&a1, &a2] {
        let (s, m) = f.get(&format!("/iep04/messages/{target}")).await;
        assert_eq!(s, 200);
        assert_eq!(m["withdrawn_by"], json!([]), "{m}");
        assert_eq!(m["replaced_by"], json!([]), "{m}");
        let (_, l) = f.get(&format!("/iep04/links/{target}")).await;
        assert_eq!(l["withdrawn_by"], json!([]), "{l}");
        assert!(l["count"].as_u64().unwrap_or(0) >= 1, "kept as data: {l}");
    }

    // The same organisation still withdraws its own message.
    let w = uuid(11);
    let links = json!([{"left_side": w, "type": "withdraws", "right_side": a1}]);
    let (s, r) = f
        .post_as(
            Some(KEY_A),
            "/iep04/messages",
            event(&w, ORG_A, "192.0.2.99", links),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    status_becomes(&f, &sighting(ORG_A, "192.0.2.10"), 404).await;
    let (_, m) = f.get(&format!("/iep04/messages/{a1}")).await;
    assert_eq!(m["withdrawn_by"], json!([w]), "{m}");
}

/// Item 3: one oversized value never stops the bridge (the rest is recorded, also after a
/// restart), and an oversized alternate id (a storage key of the exchange) is a clear 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_value_never_stops_the_bridge_nor_breaks_the_exchange() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let opts = two_orgs(free_port(), "", "");
    let f = Fixture::on(&data, &opts);
    let mut long = event(&uuid(20), ORG_A, "192.0.2.20", json!([]));
    long["payload"]["source.url"] = json!(format!("http://example.com/{}", "a".repeat(70_000)));
    let (s, r) = f.post_as(Some(KEY_A), "/iep04/messages", long).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = f
        .post_as(
            Some(KEY_A),
            "/iep04/messages",
            event(&uuid(21), ORG_A, "192.0.2.21", json!([])),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    status_becomes(&f, &sighting(ORG_A, "192.0.2.21"), 200).await;
    // The rest of the oversized event is recorded.
    status_becomes(&f, &sighting(ORG_A, "192.0.2.20"), 200).await;

    // An alternate id of 65,530 bytes: refused with a clear 400, nothing written.
    let mut alt = event(&uuid(22), ORG_A, "192.0.2.22", json!([]));
    alt["meta"]["intelmq:alternate"] = json!(["x".repeat(65_530)]);
    let (s, r) = f.post_as(Some(KEY_A), "/iep04/messages", alt).await;
    assert_eq!(s, 400, "{r}");
    assert!(r.to_string().contains("alternate"), "{r}");
    let (s, _) = f.get(&format!("/iep04/messages/{}", uuid(22))).await;
    assert_eq!(s, 404);
    let (s, r) = f
        .get(&format!("/iep04/links?alternate={}", "x".repeat(5_000)))
        .await;
    assert_eq!(s, 400, "{r}");

    // After a restart the bridge still goes on.
    assert!(f.server.terminate());
    let f = Fixture::on(&data, &opts);
    let (s, r) = f
        .post_as(
            Some(KEY_A),
            "/iep04/messages",
            event(&uuid(23), ORG_A, "192.0.2.23", json!([])),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    status_becomes(&f, &sighting(ORG_A, "192.0.2.23"), 200).await;
}

/// Item 5: no oracle on `GET /iep04/messages/<uuid>` (a dropped message is 404 for a key
/// that may not read everything, as an unknown uuid), an unrecognised TLP label is the most
/// restrictive, and every route refuses an unknown key before reading any body byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_oracles_unknown_tlp_is_red_and_keys_are_checked_before_the_body() {
    let f = Fixture::with(&two_orgs(
        free_port(),
        "log_max_bytes = 3000\nretention_interval_seconds = 1",
        "",
    ));
    // A purple message of A's: B (tlp_max AMBER) may not read it.
    let mut purple = event(&uuid(30), ORG_A, "192.0.2.30", json!([]));
    purple["payload"]["tlp"] = json!("PURPLE");
    let (s, r) = f.post_as(Some(KEY_A), "/iep04/messages", purple).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = f
        .get_as(Some(KEY_B), &format!("/iep04/messages/{}", uuid(30)))
        .await;
    assert_eq!(s, 404, "unrecognised TLP is RED: {r}");
    let (_, page) = f.get_as(Some(KEY_B), "/iep04/messages?limit=100").await;
    assert!(!page.to_string().contains(&uuid(30)), "{page}");
    let (s, _) = f.get(&format!("/iep04/messages/{}", uuid(30))).await;
    assert_eq!(s, 200, "the admin reads it");

    // Push it out of the log by retention.
    for i in 31..50 {
        let (s, _) = f
            .post_as(
                Some(KEY_A),
                "/iep04/messages",
                event(&uuid(i), ORG_A, "192.0.2.31", json!([])),
            )
            .await;
        assert_eq!(s, 200);
    }
    let gone = format!("/iep04/messages/{}", uuid(30));
    let mut dropped = false;
    for _ in 0..200 {
        if f.get(&gone).await.0 == 410 {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped, "retention dropped it");
    let never = format!("/iep04/messages/{}", uuid(99));
    let (s1, b1) = f.get_as(Some(KEY_B), &gone).await;
    let (s2, _) = f.get_as(Some(KEY_B), &never).await;
    assert_eq!((s1, s2), (404, 404), "{b1}");
    assert!(!b1.to_string().contains("seq"), "{b1}");
    for path in [&gone, &never] {
        let (s, _) = f.get_as(Some("no-such-key"), path).await;
        assert_eq!(s, 403);
    }

    // Every route refuses an unknown key, and before any body byte is read.
    for (method, path) in [
        ("GET", "/iep04/messages"),
        ("POST", "/iep04/messages"),
        ("GET", "/iep04/links/cccccccc-0000-4000-8000-000000000030"),
        ("GET", "/iep04/links?alternate=x"),
        ("GET", "/iep04/consumers/c"),
        ("DELETE", "/iep04/consumers/c"),
        ("GET", "/iep04/consumers/c/messages"),
        ("POST", "/iep04/consumers/c/ack"),
        ("GET", "/iep04/status"),
    ] {
        let mut s = TcpStream::connect(f.server.addr).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: no-such-key\r\n\
             Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("head");
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer before the body"))
            .expect("read");
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
        assert!(text.starts_with("HTTP/1.1 403"), "{method} {path}: {text}");
    }
}

async fn post_raw(f: &Fixture, content_type: &str, body: Vec<u8>) -> (u16, Value, usize) {
    let resp = f
        .http
        .post(f.server.url("/iep04/messages"))
        .header("Authorization", KEY_A)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, bytes.len())
}

/// POSTs `body` to `/iep04/messages` over a raw connection, reading the answer while the
/// body is still being written: the server may answer (413) and close before taking it all.
async fn post_early_answer(addr: SocketAddr, ct: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "POST /iep04/messages HTTP/1.1\r\nHost: x\r\nAuthorization: {KEY_A}\r\n\
         Content-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_ok() {
            let _ = wr.write_all(&body).await;
        }
        // No half-close: the server would take it for a client gone away.
        std::future::pending::<()>().await;
        drop(wr);
    });
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(_) => panic!("no answer within 60 s"),
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:.200}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    (status, body)
}

/// Item 4: a body of a million tiny items is refused at the item cap (413, nothing written,
/// bounded memory and answer) in every shape; a message over `max_line_bytes` is refused in
/// every shape; a read page keeps to its byte budget and a reader still gets everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_explosion_is_capped_and_pages_have_a_byte_budget() {
    let f = Fixture::with(&two_orgs(
        free_port(),
        "max_line_bytes = 4096\nmax_items_per_request = 1000\nmax_page_bytes = 16384",
        "",
    ));
    let pid = f.server.child.id();
    let before = vm_hwm_kib(pid);
    let ndjson = "{}\n".repeat(1_000_000).into_bytes();
    let array = format!("[{}{{}}]", "{},".repeat(1_000_000)).into_bytes();
    let addr = f.server.addr;
    let attack = tokio::spawn(async move {
        let mut out = Vec::new();
        for (ct, body) in [
            ("application/x-ndjson", ndjson.clone()),
            ("application/json", ndjson),
            ("application/json", array),
        ] {
            let (status, bytes) = post_early_answer(addr, ct, body).await;
            out.push((ct, status, bytes));
        }
        out
    });
    // An unrelated request is answered promptly while the attack runs.
    while !attack.is_finished() {
        let t = std::time::Instant::now();
        let (s, _) = f.get_as(Some(KEY_B), "/iep04/status").await;
        assert_eq!(s, 200);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "status took {:?} under attack",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (ct, s, bytes) in attack.await.expect("attack") {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(s, 413, "{ct}: {v}");
        assert_eq!(v["limit"], "max_items_per_request", "{v}");
        assert!(bytes.len() < 1024, "a short answer: {} bytes", bytes.len());
    }
    let grown = vm_hwm_kib(pid).saturating_sub(before);
    assert!(grown < 200 * 1024, "peak memory grew by {grown} KiB");
    let (_, page) = f.get("/iep04/messages?limit=10").await;
    assert_eq!(page["count"], 0, "nothing was written: {page}");

    // One message over max_line_bytes, as a single object and as a form: 413.
    let mut big = event(&uuid(40), ORG_A, "192.0.2.40", json!([]));
    big["payload"]["comment"] = json!("x".repeat(5000));
    let (s, v, _) = post_raw(&f, "application/json", big.to_string().into_bytes()).await;
    assert_eq!(
        (s, v["limit"].clone()),
        (413, json!("max_line_bytes")),
        "{v}"
    );
    let form = format!("source.ip=192.0.2.41&comment={}", "x".repeat(5000));
    let (s, v, _) = post_raw(&f, "application/x-www-form-urlencoded", form.into_bytes()).await;
    assert_eq!(
        (s, v["limit"].clone()),
        (413, json!("max_line_bytes")),
        "{v}"
    );
    // In an array, an error for that element only.
    let small = event(&uuid(41), ORG_A, "192.0.2.41", json!([]));
    let (s, v, _) = post_raw(
        &f,
        "application/json",
        json!([small, big]).to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["accepted"].clone(), v["errors"].clone()),
        (json!(1), json!(1)),
        "{v}"
    );

    // Pages of 3 KB messages keep to 16 KiB and a reader gets all of them once.
    for i in 50..70 {
        let mut m = event(&uuid(i), ORG_A, "192.0.2.50", json!([]));
        m["payload"]["comment"] = json!("y".repeat(3000));
        let (s, v) = f.post_as(Some(KEY_A), "/iep04/messages", m).await;
        assert_eq!(s, 200, "{v}");
    }
    let (mut cursor, mut seen, mut pages) = (String::new(), Vec::new(), 0);
    loop {
        let resp = f
            .http
            .get(
                f.server
                    .url(&format!("/iep04/messages?limit=1000&after={cursor}")),
            )
            .header("Authorization", KEY_A)
            .send()
            .await
            .expect("GET");
        let bytes = resp.bytes().await.expect("page");
        assert!(bytes.len() < 16384 + 1024, "page of {} bytes", bytes.len());
        let page: Value = serde_json::from_slice(&bytes).expect("JSON");
        for m in page["messages"].as_array().expect("messages") {
            seen.push(m["meta"]["uuid"].as_str().unwrap_or_default().to_owned());
        }
        cursor = page["cursor"].as_str().expect("cursor").to_owned();
        pages += 1;
        if page["more"] != json!(true) {
            break;
        }
        assert!(pages < 100, "pages never end");
    }
    let want: Vec<String> = std::iter::once(uuid(41))
        .chain((50..70).map(uuid))
        .collect();
    assert_eq!(seen, want);
    assert!(pages >= 4, "{pages} pages");
}

/// Item 6: silent and trickling sockets cannot block the IntelMQ TCP listener: a real client
/// still gets `Ok` (within a few seconds) while 70 silent and 20 trickling sockets are open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_cannot_block_the_intelmq_listener() {
    let port = free_port();
    let f = Fixture::with(&two_orgs(port, "", ""));
    let mut real = connect(port).await;
    send_frame(
        &mut real,
        &event(&uuid(60), ORG_B, "198.51.100.60", json!([])),
    )
    .await;
    drop(real);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut silent = Vec::new();
    for _ in 0..70 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let mut tricklers = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&[0])
            .await
            .expect("one byte of a length prefix");
        tricklers.push(s);
    }
    let started = std::time::Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        let mut real = connect(port).await;
        send_frame(
            &mut real,
            &event(&uuid(61), ORG_B, "198.51.100.61", json!([])),
        )
        .await;
    })
    .await;
    assert!(
        answered.is_ok(),
        "no Ok within 5 s while silent sockets are open"
    );
    eprintln!("answered in {:?}", started.elapsed());
    let (s, _) = f.get(&format!("/iep04/messages/{}", uuid(61))).await;
    assert_eq!(s, 200);
    drop((silent, tricklers));
}

/// Item 2: a message the peer refuses for good (another organisation's withdrawal of a
/// message the origin did not know) is recorded in the push state file and skipped; what
/// follows it on the link is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_does_not_wedge_a_peering_link() {
    let relay_key = "relay-from-origin";
    let peer = Fixture::with(&two_orgs(
        free_port(),
        "",
        &format!(
            "[exchange.keys.\"{relay_key}\"]\norg = \"{ORG_B}\"\npublish = [\"*\"]\nread = [\"*\"]\ntlp_max = \"RED\"\nrelay = true\n"
        ),
    ));
    // A's message, known at the peer only.
    let target = uuid(70);
    let (s, r) = peer
        .post_as(
            Some(KEY_A),
            "/iep04/messages",
            event(&target, ORG_A, "192.0.2.70", json!([])),
        )
        .await;
    assert_eq!(s, 200, "{r}");

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("origin");
    let origin = Fixture::on(
        &data,
        &two_orgs(
            free_port(),
            "",
            &format!(
                "[relay]\nretry_min_ms = 50\nretry_max_ms = 500\nbatch = 50\n\n[[relay.peers]]\nname = \"p\"\nurl = \"http://{}\"\nkey = \"{relay_key}\"\n",
                peer.server.addr
            ),
        ),
    );
    // At the origin, B's withdrawal of a message it does not know is accepted...
    let w = uuid(71);
    let links = json!([{"left_side": w, "type": "withdraws", "right_side": target}]);
    let (s, r) = origin
        .post_as(
            Some(KEY_B),
            "/iep04/messages",
            event(&w, ORG_B, "198.51.100.71", links),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    // ... and what follows must still reach the peer.
    for i in 72..75 {
        let (s, _) = origin
            .post_as(
                Some(KEY_B),
                "/iep04/messages",
                event(&uuid(i), ORG_B, "198.51.100.72", json!([])),
            )
            .await;
        assert_eq!(s, 200);
    }
    let mut delivered = false;
    for _ in 0..200 {
        if peer.get(&format!("/iep04/messages/{}", uuid(74))).await.0 == 200 {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        delivered,
        "the messages after the refused one reached the peer"
    );
    for i in 72..75 {
        assert_eq!(
            peer.get(&format!("/iep04/messages/{}", uuid(i))).await.0,
            200
        );
    }
    assert_eq!(peer.get(&format!("/iep04/messages/{w}")).await.0, 404);
    let (_, m) = peer.get(&format!("/iep04/messages/{target}")).await;
    assert_eq!(m["withdrawn_by"], json!([]), "{m}");
    let state: Value = serde_json::from_slice(
        &std::fs::read(data.join("relay").join("push-p.json")).expect("state file"),
    )
    .expect("state JSON");
    assert_eq!(state["refused"], 1, "{state}");
    assert_eq!(state["last_refused_uuid"], json!(w), "{state}");
    assert!(state["last_refused_seq"].as_u64().is_some(), "{state}");
}
