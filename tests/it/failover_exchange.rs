//! Failover of the exchange on NATS JetStream under load: the node leading the exchange's
//! stream is killed (SIGKILL) while publishes are being acknowledged, then started again;
//! once the cluster healed, every message the server answered `accepted` is in the log,
//! once. The loss this measures is the bound docs/SCALING.md states for one node's death
//! with three replicas: none.
//!
//! It kills a node of the shared test cluster, so it is not one of the cluster suites that
//! run in parallel (scripts/test runs it on its own after them). Needs `SIGHTHUB_TEST_NATS`
//! and `SIGHTHUB_TEST_CLUSTERS` (the directory of scripts/clusters); ignored by a plain `cargo
//! test`, run by the clusters step, failing without them.

use crate::common::{client, log_uuids, uuid4, Opts, Server, ADMIN};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn clusters(args: &[&str]) {
    let dir = std::env::var("SIGHTHUB_TEST_CLUSTERS").expect("SIGHTHUB_TEST_CLUSTERS");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/clusters");
    let st = Command::new(script)
        .arg(args[0])
        .arg(&dir)
        .args(&args[1..])
        .status()
        .expect("scripts/clusters");
    assert!(st.success(), "scripts/clusters {args:?}");
}

/// The stream's state, asked of the cluster directly.
fn stream_state(stream: &str) -> Option<sighthub_nats::log::State> {
    let servers = std::env::var("SIGHTHUB_TEST_NATS").ok()?;
    let cfg = sighthub_nats::NatsConfig {
        servers: servers.split(',').map(str::to_owned).collect(),
        request_timeout_seconds: 2,
        ..Default::default()
    };
    let nats = sighthub_nats::Nats::connect(&cfg).ok()?;
    let n = nats.clone();
    let stream = stream.to_owned();
    nats.run(async move {
        let log =
            sighthub_nats::log::LogStream::open(&n, &stream, Duration::from_secs(120)).await?;
        log.state().await
    })
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
async fn acknowledged_messages_survive_the_stream_leaders_death() {
    assert!(
        std::env::var_os("SIGHTHUB_TEST_NATS").is_some()
            && std::env::var_os("SIGHTHUB_TEST_CLUSTERS").is_some(),
        "SIGHTHUB_TEST_NATS and SIGHTHUB_TEST_CLUSTERS must name the clusters of scripts/clusters \
         (scripts/test clusters runs this test)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let server = Arc::new(Server::start(
        &data,
        &Opts {
            config: Some("[exchange]\n".into()),
            ..Opts::default()
        },
    ));
    let stream = std::fs::read_to_string(data.with_extension("nats-stream")).expect("stream");
    let leader = tokio::task::spawn_blocking({
        let stream = stream.clone();
        move || stream_state(&stream)
    })
    .await
    .expect("state")
    .and_then(|s| s.leader)
    .expect("the stream's leader");
    let node = format!("nats-{}", leader.trim_start_matches('n'));

    let accepted: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..3u64 {
        let (server, accepted, refused, stop) = (
            Arc::clone(&server),
            Arc::clone(&accepted),
            Arc::clone(&refused),
            Arc::clone(&stop),
        );
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 5000 {
                let body: String = (0..10)
                    .map(|i| {
                        format!(
                            "{}\n",
                            json!({"format": "intelmq", "version": 1, "type": "event",
                                   "meta": {"uuid": uuid4()},
                                   "payload": {"source.ip": format!("10.{t}.{}.{i}", n % 250)}})
                        )
                    })
                    .collect();
                let r = http
                    .post(server.url("/iep04/messages"))
                    .header("Authorization", ADMIN)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    // Every call of the server to the cluster is bounded: a request that
                    // hangs is a failure, not a wait.
                    .timeout(Duration::from_secs(90))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.expect("json");
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
                    Ok(r) => {
                        // 503 while the stream elects a new leader: nothing acknowledged.
                        assert_eq!(r.status(), 503, "only unavailability is allowed");
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("the server failed: {e}"),
                }
                n += 1;
            }
        }));
    }
    let count = |a: &Arc<Mutex<HashMap<String, u64>>>| a.lock().expect("lock").len();
    let wait_for = |target: usize| {
        let accepted = Arc::clone(&accepted);
        async move {
            for _ in 0..1200 {
                if count(&accepted) >= target {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(wait_for(300).await, "the load did not start");
    let before = count(&accepted);
    eprintln!("failover: {before} acknowledged; killing {node}, the stream's leader");
    clusters(&["kill", &node]);
    // Publishes go on being acknowledged by the two nodes left (a new leader).
    assert!(
        wait_for(before + 300).await,
        "no publish acknowledged after the leader died"
    );
    eprintln!(
        "failover: {} acknowledged; restarting {node}",
        count(&accepted)
    );
    clusters(&["restart", &node]);
    // Healed: every replica current again (bounded).
    let mut healed = false;
    for _ in 0..120 {
        let s = tokio::task::spawn_blocking({
            let stream = stream.clone();
            move || stream_state(&stream)
        })
        .await
        .expect("state");
        if s.is_some_and(|s| s.replicas_current) {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(healed, "the cluster did not heal");
    eprintln!("failover: healed at {} acknowledged", count(&accepted));
    let after_heal = count(&accepted);
    assert!(wait_for(after_heal + 100).await, "no publish after healing");
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("publisher");
    }

    let accepted = accepted.lock().expect("lock").clone();
    let http = client();
    let log = log_uuids(&http, &server).await;
    let in_log: HashSet<&String> = log.iter().collect();
    assert_eq!(in_log.len(), log.len(), "a message twice in the log");
    let lost = accepted.keys().filter(|u| !in_log.contains(u)).count();
    eprintln!(
        "failover: {} acknowledged, {} lost, {} requests answered 503 during the election, \
         leader {leader} killed and restarted",
        accepted.len(),
        lost,
        refused.load(Ordering::Relaxed)
    );
    assert_eq!(
        lost, 0,
        "acknowledged messages lost (the documented bound is 0)"
    );
}
