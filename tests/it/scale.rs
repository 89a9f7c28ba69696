//! Several front ends on one cluster (`[storage] backend = "redis"`): two `sighthub`
//! processes with their own data directories share one key prefix on the Redis Cluster of
//! `SIGHTHUB_TEST_REDIS`. Ignored by a plain `cargo test` (they have no meaning on the embedded
//! backend, where a data directory belongs to one process); the clusters step of scripts/test
//! runs them with `--include-ignored`, and they fail without the variable.

use crate::common::{client, Fixture, Opts, Server, ADMIN};
use serde_json::json;
use std::path::Path;

/// Two front ends on one key prefix, or `None` (with the reason printed) without a cluster.
fn two_front_ends(dir: &Path) -> (Fixture, Fixture) {
    assert!(std::env::var("SIGHTHUB_TEST_REDIS").is_ok(), "SIGHTHUB_TEST_REDIS is not set: this test needs a Redis Cluster (scripts/test clusters runs it)");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let first = Fixture::on(&a, &Opts::default());
    // The second front end reads the first one's prefix: one data set, two processes.
    std::fs::copy(
        a.with_extension("redis-prefix"),
        b.with_extension("redis-prefix"),
    )
    .expect("share the prefix");
    let second = Fixture::on(&b, &Opts::default());
    (first, second)
}

async fn write(http: &reqwest::Client, server: &Server, path: &str) -> (u16, serde_json::Value) {
    let resp = http
        .get(server.url(path))
        .header("Authorization", ADMIN)
        .send()
        .await;
    match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(serde_json::Value::Null))
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

#[tokio::test]
#[ignore = "needs a Redis Cluster in SIGHTHUB_TEST_REDIS: the clusters step of scripts/test"]
async fn concurrent_writers_through_two_front_ends_keep_exact_counts_and_consensus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_front_ends(dir.path());
    const EACH: usize = 60;
    let mut tasks = Vec::new();
    for (i, f) in [&a, &b, &a, &b].into_iter().enumerate() {
        let url_a = f.server.url("/w/scale/a?val=hot");
        let url_b = f.server.url("/w/scale/b?val=hot");
        let http = f.http.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                let url = if (n + i) % 2 == 0 { &url_a } else { &url_b };
                let r = http
                    .get(url)
                    .header("Authorization", ADMIN)
                    .send()
                    .await
                    .expect("write");
                assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    // Every sighting counted once, whichever front end is asked.
    for f in [&a, &b] {
        let (_, ra) = f.get("/r/scale/a?val=hot&noshadow").await;
        let (_, rb) = f.get("/r/scale/b?val=hot&noshadow").await;
        assert_eq!(
            (ra["count"].as_u64(), rb["count"].as_u64()),
            (Some(2 * EACH as u64), Some(2 * EACH as u64)),
            "{ra} {rb}"
        );
        assert_eq!(
            (ra["consensus"].clone(), rb["consensus"].clone()),
            (json!(2), json!(2))
        );
        assert_eq!(
            f.get("/r/scale/a?count").await.1["values"],
            json!(1),
            "namespace count"
        );
        assert_eq!(f.get("/r/_all?count").await.1["values"], json!(1));
    }
}

#[tokio::test]
#[ignore = "needs a Redis Cluster in SIGHTHUB_TEST_REDIS: the clusters step of scripts/test"]
async fn a_write_through_one_front_end_is_read_listed_and_deleted_through_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_front_ends(dir.path());
    assert_eq!(
        a.get("/w/shared/ns?val=10.0.0.1&tags=x").await.0,
        200,
        "write through a"
    );
    a.get("/w/shared/ns?val=10.0.0.2").await;
    let (s, r) = b.get("/r/shared/ns?val=10.0.0.1&noshadow").await;
    assert_eq!(
        (s, r["count"].clone(), r["tags"].clone()),
        (200, json!(1), json!("x"))
    );
    let (_, list) = b.get("/r/shared/ns").await;
    assert_eq!(
        list["attributes"].as_array().map(Vec::len),
        Some(2),
        "{list}"
    );
    assert_eq!(b.get("/d/shared/ns").await.0, 200);
    assert_eq!(a.get("/r/shared/ns?val=10.0.0.1&noshadow").await.0, 404);
    // Its consensus went with it: no value is left in `_all`.
    assert_eq!(a.get("/r/_all?val=10.0.0.1&noshadow").await.0, 404);
}

#[tokio::test]
#[ignore = "needs a Redis Cluster in SIGHTHUB_TEST_REDIS: the clusters step of scripts/test"]
async fn killing_one_front_end_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_front_ends(dir.path());
    let http = client();
    let mut acked = 0u64;
    let mut answered = 0u64;
    // Writes through `a`, several in flight, until `a` is killed in the middle of them.
    let mut inflight = tokio::task::JoinSet::new();
    for n in 0..400u64 {
        let (http, url) = (
            http.clone(),
            a.server.url(&format!("/w/kill/ns?val=v{}", n % 10)),
        );
        inflight.spawn(async move {
            let r = http.get(url).header("Authorization", ADMIN).send().await;
            matches!(r, Ok(r) if r.status().as_u16() == 200)
        });
        if inflight.len() >= 8 {
            if let Some(Ok(ok)) = inflight.join_next().await {
                answered += 1;
                acked += u64::from(ok);
            }
        }
        if answered == 150 {
            break;
        }
    }
    let Fixture { server, .. } = a;
    server.kill9();
    let mut unknown = 0u64;
    while let Some(r) = inflight.join_next().await {
        match r {
            Ok(true) => acked += 1,
            _ => unknown += 1,
        }
    }
    let mut total = 0u64;
    for v in 0..10 {
        let (s, r) = write(&b.http, &b.server, &format!("/r/kill/ns?val=v{v}&noshadow")).await;
        if s == 200 {
            total += r["count"].as_u64().unwrap_or(0);
        }
    }
    assert!(
        total >= acked && total <= acked + unknown,
        "acknowledged {acked}, unanswered {unknown}, stored {total}"
    );
}

/// Polls `path` through `f` with `key` (and extra headers) until it answers `want`, for at
/// most 30 s (a bound for a loaded machine, far above the 1 s refresh period, not a timing
/// assertion); the time it took, printed.
async fn until_status(
    f: &Fixture,
    key: Option<&str>,
    headers: &[(&str, &str)],
    path: &str,
    want: u16,
) {
    let start = std::time::Instant::now();
    let mut last = 0;
    while start.elapsed() < std::time::Duration::from_secs(30) {
        let mut req = f.http.get(f.server.url(path));
        if let Some(k) = key {
            req = req.header("Authorization", k);
        }
        for (h, v) in headers {
            req = req.header(*h, *v);
        }
        last = req.send().await.map_or(0, |r| r.status().as_u16());
        if last == want {
            println!("{path}: {want} after {:?}", start.elapsed());
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path}: still {last}, not {want}, after 30 s");
}

#[tokio::test]
#[ignore = "needs a Redis Cluster in SIGHTHUB_TEST_REDIS: the clusters step of scripts/test"]
async fn runtime_keys_and_console_sessions_hold_across_front_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_front_ends(dir.path());
    // A key made through a: in force on a at once, on b within its refresh period.
    let (st, made) = a
        .post(
            "/_api/keys",
            json!({"name": "misp", "sightings": "rw:feeds"}),
        )
        .await;
    assert_eq!(st, 201, "{made}");
    let key = made["key"].as_str().expect("key").to_owned();
    let id = made["id"].as_str().expect("id").to_owned();
    assert_eq!(
        a.get_as(Some(&key), "/w/feeds/ip?val=10.0.0.1").await.0,
        200
    );
    until_status(&b, Some(&key), &[], "/w/feeds/ip?val=10.0.0.2", 200).await;

    // Keys made through both front ends at once: none lost (compare-and-set on one document).
    let mut made = tokio::task::JoinSet::new();
    for n in 0..16 {
        let f = if n % 2 == 0 { &a } else { &b };
        let (http, url) = (f.http.clone(), f.server.url("/_api/keys"));
        made.spawn(async move {
            http.post(url)
                .header("Authorization", ADMIN)
                .json(&json!({"name": format!("k{n}"), "sightings": "r"}))
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        });
    }
    while let Some(st) = made.join_next().await {
        assert_eq!(st.expect("task"), 201);
    }
    for f in [&a, &b] {
        let (_, list) = f.get("/_api/keys").await;
        assert_eq!(list["keys"].as_array().map(Vec::len), Some(17), "{list}");
    }

    // Revoked through b: refused by b at once, by a within its refresh period.
    let r = b
        .http
        .delete(b.server.url(&format!("/_api/keys/{id}")))
        .header("Authorization", ADMIN)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        b.get_as(Some(&key), "/r/feeds/ip?val=10.0.0.1").await.0,
        403
    );
    until_status(&a, Some(&key), &[], "/r/feeds/ip?val=10.0.0.1", 403).await;

    // A console session opened through a is valid through b at once (it is signed, not
    // looked up); closed through b, it is refused by a within its refresh period.
    let login = a
        .http
        .post(a.server.url("/_management/login"))
        .json(&json!({"key": ADMIN}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    let csrf = login.json::<serde_json::Value>().await.expect("json")["csrf"]
        .as_str()
        .expect("csrf")
        .to_owned();
    let session = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let read = "/r/feeds/ip?val=10.0.0.1";
    let mut req = b.http.get(b.server.url(read));
    for (h, v) in session {
        req = req.header(h, v);
    }
    assert_eq!(req.send().await.expect("read").status().as_u16(), 200);
    let mut req = b.http.post(b.server.url("/_management/logout"));
    for (h, v) in session {
        req = req.header(h, v);
    }
    assert_eq!(req.send().await.expect("logout").status().as_u16(), 200);
    until_status(&b, None, &session, read, 401).await;
    until_status(&a, None, &session, read, 401).await;
}

/// The engine itself on the cluster, under a fresh prefix.
fn engine() -> sighthub_redis::RedisEngine {
    let nodes = std::env::var("SIGHTHUB_TEST_REDIS").expect(
        "SIGHTHUB_TEST_REDIS is not set: this test needs a Redis Cluster (scripts/test clusters runs it)",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = crate::common::redis_storage_lines(&dir.path().join("d")).expect("a cluster");
    let prefix = lines
        .lines()
        .find_map(|l| l.strip_prefix("prefix = "))
        .map(|p| p.trim_matches('"').to_owned())
        .expect("prefix");
    let opts = sighthub_redis::RedisOptions {
        nodes: nodes.split(',').map(str::to_owned).collect(),
        prefix,
        ..Default::default()
    };
    sighthub_redis::RedisEngine::open(&opts).expect("open the engine")
}

#[test]
#[ignore = "needs a Redis Cluster in SIGHTHUB_TEST_REDIS: the clusters step of scripts/test"]
fn engine_reports_conflicting_groups_and_applies_the_others() {
    use sighthub_store::engine::{Batch, Engine, Group, RecordWrite, Space};
    let e = engine();
    let create = |v: &str, prior: Option<Option<Vec<u8>>>| Group {
        value: v.as_bytes().to_vec(),
        records: vec![RecordWrite {
            key: format!("ns\0{v}").into_bytes(),
            value: Some(b"rec".to_vec()),
            prior,
        }],
        counts: vec![(b"ns".to_vec(), 1)],
        expiry_removed: Vec::new(),
    };
    let first = e
        .apply(Batch {
            groups: vec![create("a", Some(None))],
            ..Batch::default()
        })
        .expect("apply");
    assert!(first.conflicts.is_empty());
    // "a" exists now, so a second creation conflicts; "b" is new and applies; the marker
    // waits for a batch without conflicts.
    let second = e
        .apply(Batch {
            groups: vec![create("a", Some(None)), create("b", Some(None))],
            markers: vec![(b"m".to_vec(), b"1".to_vec())],
            ..Batch::default()
        })
        .expect("apply");
    assert_eq!(second.conflicts, vec![b"a".to_vec()]);
    assert_eq!(
        e.get(Space::Counts, b"ns").expect("count"),
        Some(2u64.to_le_bytes().to_vec()),
        "the conflicted group's increment was not applied"
    );
    assert!(e.get(Space::Markers, b"m").expect("marker").is_none());
    assert_eq!(
        e.get(Space::Sightings, b"ns\0b").expect("get"),
        Some(b"rec".to_vec())
    );
}

#[test]
#[ignore = "needs a Redis Cluster in SIGHTHUB_TEST_REDIS: the clusters step of scripts/test"]
fn leases_are_exclusive_renewable_and_taken_over_once_expired() {
    let e = engine();
    use sighthub_store::engine::Engine;
    assert!(e.lease("job", "front-a", 60_000).expect("lease"));
    assert!(!e.lease("job", "front-b", 60_000).expect("lease"));
    assert!(e.lease("job", "front-a", 60_000).expect("renewed"));
    assert!(e.lease("short", "front-a", 50).expect("lease"));
    // front-a stops renewing: front-b gets the lease once it expired (bounded wait).
    let mut taken = false;
    for _ in 0..200 {
        if e.lease("short", "front-b", 60_000).expect("lease") {
            taken = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(taken, "the expired lease was never taken over");
    assert!(!e.lease("short", "front-a", 60_000).expect("lease"));
}

#[test]
#[ignore = "needs a Redis Cluster in SIGHTHUB_TEST_REDIS: the clusters step of scripts/test"]
fn large_namespaces_page_count_and_delete_in_order() {
    use sighthub_store::{Namespace, SightingStore, StoreOptions, WriteOp};
    let e = engine();
    let store = sighthub_store::Sightings::new(e, StoreOptions::default()).expect("store");
    let ns = Namespace::parse("big/ns").expect("ns");
    let values: Vec<String> = (0..1300).map(|i| format!("v{i:05}")).collect();
    let ops: Vec<WriteOp<'_>> = values
        .iter()
        .map(|v| WriteOp::new(&ns, v, 1_700_000_000))
        .collect();
    let (out, _) = store.write(&ops, 1_700_000_000).expect("write");
    assert!(out.iter().all(Result::is_ok));
    assert_eq!(store.count(&ns, 1_700_000_000).expect("count"), Some(1300));
    // More than one index page (512) per listing page, in value order, then the rest.
    let page = store
        .list(&ns, None, 1100, usize::MAX, 1_700_000_000)
        .expect("list")
        .expect("namespace");
    let got: Vec<&str> = page.items.iter().map(|v| v.value.as_str()).collect();
    let want: Vec<&str> = values.iter().take(1100).map(String::as_str).collect();
    assert_eq!(got, want);
    let rest = store
        .list(&ns, page.next.as_deref(), 1100, usize::MAX, 1_700_000_000)
        .expect("list")
        .expect("namespace");
    assert_eq!(rest.items.len(), 200);
    assert!(rest.next.is_none());
    let (deleted, _) = store.delete(&ns, 1_700_000_000).expect("delete");
    assert!(deleted);
    assert_eq!(store.count(&ns, 1_700_000_000).expect("count"), None);
    assert_eq!(
        store
            .count(&Namespace::parse("_all").expect("ns"), 1_700_000_000)
            .expect("count"),
        None
    );
}

#[test]
fn an_unreachable_cluster_is_a_clear_error_at_start() {
    let port = crate::common::free_port();
    let opts = sighthub_redis::RedisOptions {
        nodes: vec![format!("127.0.0.1:{port}")],
        connect_timeout_ms: 500,
        response_timeout_ms: 500,
        ..Default::default()
    };
    let err = sighthub_redis::RedisEngine::open(&opts).expect_err("nothing listens there");
    let text = err.to_string();
    assert!(
        text.contains("cannot reach the Redis cluster") && text.contains(&port.to_string()),
        "{text}"
    );
}

#[tokio::test]
#[ignore = "needs a Redis Cluster in SIGHTHUB_TEST_REDIS: the clusters step of scripts/test"]
async fn migrate_copies_an_embedded_data_directory_into_the_cluster_resumably() {
    assert!(std::env::var("SIGHTHUB_TEST_REDIS").is_ok(), "SIGHTHUB_TEST_REDIS is not set: this test needs a Redis Cluster (scripts/test clusters runs it)");
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("embedded");
    // An embedded server (no [storage] lines), written through the API.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sighthub"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(&source)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--plain-http");
    let (child, url) = crate::common::spawn_until_listening(cmd, false);
    let (_, addr) = url.split_once("://").expect("url");
    let embedded = Server {
        child,
        addr: addr.parse().expect("addr"),
        scheme: "http",
    };
    let http = client();
    for path in [
        "/w/org/a?val=1.2.3.4&tags=x,y",
        "/w/org/a?val=1.2.3.4",
        "/w/org/b?val=1.2.3.4",
        "/w/org/b?val=evil.example&ttl=86400",
        "/r/org/a?val=1.2.3.4",
    ] {
        assert_eq!(write(&http, &embedded, path).await.0, 200, "{path}");
    }
    let values: Vec<String> = (0..2500).map(|i| format!("v{i}")).collect();
    for chunk in values.chunks(500) {
        let items: Vec<serde_json::Value> = chunk
            .iter()
            .map(|v| json!({"namespace": "org/bulk", "value": v}))
            .collect();
        let r = http
            .post(embedded.url("/wb"))
            .header("Authorization", ADMIN)
            .json(&json!({ "items": items }))
            .send()
            .await
            .expect("bulk");
        assert_eq!(r.status().as_u16(), 200);
    }
    // A runtime key: a file of the data directory, the cluster's after the migration.
    let made: serde_json::Value = http
        .post(embedded.url("/_api/keys"))
        .header("Authorization", ADMIN)
        .json(&json!({"name": "misp", "sightings": "r:org"}))
        .send()
        .await
        .expect("make a key")
        .json()
        .await
        .expect("json");
    let runtime_key = made["key"].as_str().expect("key").to_owned();
    // Three messages in the embedded exchange, for the exchange half.
    let uuids: Vec<String> = (0..3).map(|_| crate::common::uuid4()).collect();
    let body: String = uuids
        .iter()
        .map(|u| {
            format!(
                "{}\n",
                json!({"format": "intelmq", "version": 1, "type": "event", "meta": {"uuid": u},
                       "payload": {"event_description.text": "no sighting: not bridged"}})
            )
        })
        .collect();
    let r = http
        .post(embedded.url("/iep04/messages"))
        .header("Authorization", ADMIN)
        .header("content-type", "application/x-ndjson")
        .body(body.clone())
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 200);
    assert!(embedded.terminate(), "the embedded server stops cleanly");
    let target = dir.path().join("cluster");
    let lines = crate::common::redis_storage_lines(&target).expect("cluster lines");
    // The exchange too, when the clusters step gives a JetStream cluster.
    let nats = std::env::var_os("SIGHTHUB_TEST_NATS").is_some();
    let lines = crate::common::with_nats_exchange(&target, Some(lines)).expect("config");
    let to = dir.path().join("target.toml");
    std::fs::write(&to, lines).expect("target config");
    let migrate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sighthub"))
            .arg("migrate")
            .arg("--to")
            .arg(&to)
            .arg("--data-dir")
            .arg(&source)
            .output()
            .expect("migrate")
    };
    let first = migrate();
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&first.stderr)
    );
    // Every record: 2,503 values in public namespaces, their 2,502 consensus records (`_all`),
    // one shadow sighting.
    assert!(
        out.contains("5006 records copied, 0 already there"),
        "{out}"
    );
    assert!(out.contains("5 namespace counts checked equal"), "{out}");
    assert!(out.contains("runtime API keys: copied"), "{out}");
    if nats {
        assert!(
            out.contains("exchange: 3 log records copied (3 in the stream, checked equal), 3 seen"),
            "{out}"
        );
    }
    assert!(!out.contains("runtime peers"), "none to copy: {out}");
    // A second run resumes after the last batch: nothing left to copy, counts still equal.
    let second = migrate();
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{out}");
    assert!(
        out.contains("resumed") && out.contains("0 records copied"),
        "{out}"
    );
    assert!(out.contains("runtime API keys: already there"), "{out}");
    // A front end on the cluster serves what the embedded server held.
    let f = Fixture::on(&target, &Opts::default());
    let (_, r) = f.get("/r/org/a?val=1.2.3.4&noshadow").await;
    assert_eq!(
        (
            r["count"].clone(),
            r["tags"].clone(),
            r["consensus"].clone()
        ),
        (json!(2), json!("x,y"), json!(2))
    );
    assert_eq!(f.get("/r/org/bulk?count").await.1["values"], json!(2500));
    assert_eq!(
        f.get("/r/org/b?val=evil.example&noshadow").await.1["ttl"],
        json!(86400)
    );
    assert_eq!(f.get("/r/_shadow/org/a?val=1.2.3.4&noshadow").await.0, 200);
    assert_eq!(
        f.get_as(Some(&runtime_key), "/r/org/a?val=1.2.3.4").await.0,
        200,
        "the runtime key works on the cluster"
    );
    if nats {
        // The log came over, and so did its seen-set: the same messages are duplicates.
        let r = f
            .http
            .post(f.server.url("/iep04/messages"))
            .header("Authorization", ADMIN)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("publish again");
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(v["duplicate"], json!(3), "{v}");
        let (_, log) = f.get("/iep04/messages?limit=10").await;
        let got: Vec<&str> = log["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["meta"]["uuid"].as_str())
            .collect();
        assert_eq!(got, uuids.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
