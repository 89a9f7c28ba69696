//! One relay push link on two front ends of one exchange (`[exchange] backend = "nats"`, one
//! JetStream stream), both configured with the same peer: exactly one front end pushes (the
//! holder of the link's lease), the other stands by; the holder is killed (SIGKILL) while
//! messages stream through; the other takes the link over from its shared cursor, and the
//! receiver (an embedded sighthub) ends with every message exactly once, the re-sends bounded
//! by one batch (answered `duplicate`). Both front ends also pull the receiver (a hub to
//! them): one pulls, the other stands by, and the pull moves with the holder's death too.
//! And both deliver to one IntelMQ TCP collector (an output): one front end delivers, and the
//! collector ends with every event, at most one page twice.
//!
//! Needs the JetStream cluster of `SIGHTHUB_TEST_NATS` (scripts/clusters); without it the
//! test is ignored by a plain `cargo test` (run it by hand, failing without it).

use crate::common::{client, log_uuids, uuid4, Opts, Server, ADMIN};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HUB: &str = "28bc3db3-16da-461c-b20b-b944f4058708";
const RECEIVER_ORG: &str = "5d1e4f0a-7c2b-4e9d-8a3f-6b0c1d2e3f40";
/// Messages per relay batch.
const BATCH: u64 = 20;
/// Messages published in all.
const N: u64 = 600;

fn receiver_opts() -> Opts {
    Opts {
        config: Some(format!(
            "[exchange]\norg = \"{RECEIVER_ORG}\"\n\n[bridge]\nenabled = false\n\n\
             [exchange.keys.\"hub-at-r\"]\norg = \"{HUB}\"\npublish = [\"*\"]\nread = [\"*\"]\n\
             tlp_max = \"RED\"\nrelay = true\n"
        )),
        embedded_exchange: true,
        ..Opts::default()
    }
}

fn front_end_opts(receiver: &Server, collector: &str) -> Opts {
    Opts {
        config: Some(format!(
            "[exchange]\norg = \"{HUB}\"\n\n[bridge]\nenabled = false\n\n\
             [intelmq]\nenabled = true\n\n[[intelmq.out]]\nname = \"o\"\nkind = \"tcp\"\n\
             address = \"{collector}\"\nbatch = {BATCH}\n\n\
             [relay]\nretry_min_ms = 50\nretry_max_ms = 500\nbatch = {BATCH}\n\n\
             [[relay.peers]]\nname = \"r\"\nurl = \"{url}\"\nkey = \"hub-at-r\"\ntlp_max = \"RED\"\n\n\
             [[relay.pulls]]\nname = \"h\"\nurl = \"{url}\"\nkey = \"hub-at-r\"\nconsumer = \"c\"\n",
            url = receiver.url("")
        )),
        ..Opts::default()
    }
}

/// An IntelMQ TCP collector: a length-prefixed frame per event, `Ok` after each; every
/// event it received, in order (front ends connect and reconnect at will).
async fn collector() -> (String, Arc<Mutex<Vec<Value>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::clone(&got);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let events = Arc::clone(&events);
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
                    if s.read_exact(&mut frame).await.is_err() {
                        return;
                    }
                    let ev: Value = serde_json::from_slice(&frame).expect("an event");
                    events.lock().expect("lock").push(ev);
                    if s.write_all(b"Ok").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, got)
}

/// The value of one metric line of front end `s` (`GET /metrics`), 0 when absent.
async fn metric(http: &reqwest::Client, s: &Server, line: &str) -> u64 {
    let text = http
        .get(s.url("/metrics"))
        .header("Authorization", ADMIN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

fn envelope(uuid: &str, n: u64) -> Value {
    json!({"format": "intelmq", "version": 1, "type": "event", "meta": {"uuid": uuid},
           "payload": {"source.ip": format!("10.7.{}.{}", n / 250, n % 250)}})
}

/// Publishes `uuids` through `s` in requests of 10; every one must be accepted.
async fn publish(http: &reqwest::Client, s: &Server, uuids: &[(u64, String)]) {
    for chunk in uuids.chunks(10) {
        let body: String = chunk
            .iter()
            .map(|(n, u)| format!("{}\n", envelope(u, *n)))
            .collect();
        let r = http
            .post(s.url("/iep04/messages"))
            .header("Authorization", ADMIN)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["accepted"], chunk.len(), "{v}");
    }
}

/// The push link `r` as front end `s` reports it (`GET /iep04/peers/r`).
async fn link(http: &reqwest::Client, s: &Server) -> Value {
    named_link(http, s, "r").await
}

/// The link `name` as front end `s` reports it.
async fn named_link(http: &reqwest::Client, s: &Server, name: &str) -> Value {
    let r = http
        .get(s.url(&format!("/iep04/peers/{name}")))
        .header("Authorization", ADMIN)
        .send()
        .await
        .expect("peers");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

/// Waits (bounded) until `cond` holds, polling; panics with `what` at the deadline.
async fn wait_for<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn counter(state: &Value, name: &str) -> u64 {
    state[name].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: run by hand (see scripts/test clusters)"]
async fn a_push_link_runs_on_one_front_end_and_continues_on_the_other() {
    assert!(
        std::env::var_os("SIGHTHUB_TEST_NATS").is_some(),
        "SIGHTHUB_TEST_NATS is not set: this test needs a JetStream cluster (scripts/clusters)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let receiver = Server::start(&dir.path().join("r"), &receiver_opts());
    let (collector_addr, delivered) = collector().await;
    let opts = front_end_opts(&receiver, &collector_addr);
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let a = Server::start(&a_dir, &opts);
    let stream = std::fs::read_to_string(a_dir.with_extension("nats-stream")).expect("A's stream");
    std::fs::write(b_dir.with_extension("nats-stream"), stream).expect("share it");
    let b = Server::start(&b_dir, &opts);
    let http = client();

    // One front end holds the link, the other stands by.
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder_is_a = loop {
        let (la, lb) = (link(&http, &a).await, link(&http, &b).await);
        match (la["lease"].as_str(), lb["lease"].as_str()) {
            (Some("held"), Some("standby")) => break true,
            (Some("standby"), Some("held")) => break false,
            other => assert!(
                Instant::now() < deadline,
                "not one holder and one standby: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (holder, standby, holder_dir) = if holder_is_a {
        (a, b, a_dir)
    } else {
        (b, a, b_dir)
    };
    let st = link(&http, &standby).await;
    assert_eq!(st["held_elsewhere"], true, "{st}");
    assert_eq!(st["state"]["held_elsewhere"], true, "{st}");

    // The first half, through both front ends: the holder alone sends it.
    let all: Vec<(u64, String)> = (0..N).map(|n| (n, uuid4())).collect();
    let (first, second) = all.split_at((N / 2) as usize);
    let (to_holder, to_standby) = first.split_at(first.len() / 2);
    publish(&http, &holder, to_holder).await;
    publish(&http, &standby, to_standby).await;
    wait_for(
        Duration::from_secs(60),
        "the first half accepted through the holder's link",
        || async {
            counter(&link(&http, &holder).await["state"], "accepted") >= first.len() as u64
        },
    )
    .await;
    assert_eq!(log_uuids(&http, &receiver).await.len(), first.len());
    let st = link(&http, &standby).await;
    assert_eq!(st["lease"], "standby", "{st}");
    assert_eq!(
        counter(&st["state"], "attempted"),
        0,
        "the standby sent: {st}"
    );
    let hl = link(&http, &holder).await;
    assert_eq!(hl["held_elsewhere"], false, "{hl}");
    assert_eq!(counter(&hl["state"], "duplicate"), 0, "{hl}");
    // The pull of the receiver runs on one front end too (its messages are all this
    // exchange's own: nothing is ingested again).
    let (pa, pb) = (
        named_link(&http, &holder, "h").await,
        named_link(&http, &standby, "h").await,
    );
    let pulling = match (pa["lease"].as_str(), pb["lease"].as_str()) {
        (Some("held"), Some("standby")) => &pb,
        (Some("standby"), Some("held")) => &pa,
        other => panic!("the pull: not one holder and one standby: {other:?}"),
    };
    assert_eq!(pulling["held_elsewhere"], true, "{pulling}");
    assert_eq!(
        counter(&pulling["state"], "attempted"),
        0,
        "the pull's standby pulled: {pulling}"
    );

    // The IntelMQ output: one front end delivers the first half, the other stands by.
    let out_delivered =
        r#"sighthub_intelmq_messages_total{kind="out",transport="o",outcome="delivered"}"#;
    let out_standby = r#"sighthub_intelmq_output_standby{kind="out",transport="o"}"#;
    wait_for(
        Duration::from_secs(60),
        "the first half delivered to the collector",
        || async {
            metric(&http, &holder, out_delivered).await
                + metric(&http, &standby, out_delivered).await
                >= first.len() as u64
        },
    )
    .await;
    let (da, db) = (
        metric(&http, &holder, out_delivered).await,
        metric(&http, &standby, out_delivered).await,
    );
    let (sa, sb) = (
        metric(&http, &holder, out_standby).await,
        metric(&http, &standby, out_standby).await,
    );
    assert!(
        (da, sa, db, sb) == (first.len() as u64, 0, 0, 1)
            || (da, sa, db, sb) == (0, 1, first.len() as u64, 0),
        "the output ran on one front end: delivered {da} / {db}, standby {sa} / {sb}"
    );
    let output_on_holder = sa == 0;

    // The second half streams in through the standby while the holder is killed.
    let streaming = {
        let (standby_url, second) = (standby.url(""), second.to_vec());
        tokio::spawn(async move {
            let http = client();
            for chunk in second.chunks(10) {
                let body: String = chunk
                    .iter()
                    .map(|(n, u)| format!("{}\n", envelope(u, *n)))
                    .collect();
                let r = http
                    .post(format!("{standby_url}/iep04/messages"))
                    .header("Authorization", ADMIN)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(r.status(), 200);
            }
        })
    };
    wait_for(
        Duration::from_secs(60),
        "the holder sending the second half",
        || async { log_uuids(&http, &receiver).await.len() > first.len() },
    )
    .await;
    holder.kill9();
    streaming.await.expect("the second half published");

    // The standby takes the link over (the lease expires unrenewed, then it asks again) and
    // delivers the rest.
    let lease_ms = sighthub_exchange::lease::LEASE_MS;
    let renew = sighthub_exchange::lease::RENEW;
    wait_for(
        Duration::from_millis(lease_ms) + renew + Duration::from_secs(30),
        "every message at the receiver after the takeover",
        || async { log_uuids(&http, &receiver).await.len() >= all.len() },
    )
    .await;
    let taken = link(&http, &standby).await;
    assert_eq!(taken["lease"], "held", "{taken}");
    assert_eq!(taken["held_elsewhere"], false, "{taken}");
    wait_for(
        Duration::from_millis(lease_ms) + renew + Duration::from_secs(30),
        "the pull on the surviving front end",
        || async { named_link(&http, &standby, "h").await["lease"] == "held" },
    )
    .await;

    // Every message exactly once at the receiver.
    let log = log_uuids(&http, &receiver).await;
    let unique: HashSet<&String> = log.iter().collect();
    assert_eq!(unique.len(), log.len(), "a message twice at the receiver");
    let published: HashSet<&String> = all.iter().map(|(_, u)| u).collect();
    assert_eq!(
        unique, published,
        "the receiver's log is not what was published"
    );

    // What crossed the link, by the two senders' counters (the killed holder's from its
    // state file): each message answered `accepted` once; what a takeover sent again was
    // answered `duplicate`, at most one batch (the one the holder sent and did not count).
    let dead = std::fs::read(relay_state(&holder_dir)).expect("the holder's state file");
    let dead: Value = serde_json::from_slice(&dead).expect("state");
    let live = &taken["state"];
    let accepted = counter(&dead, "accepted") + counter(live, "accepted");
    let duplicate = counter(&dead, "duplicate") + counter(live, "duplicate");
    let sent = counter(&dead, "sent") + counter(live, "sent");
    // The collector got every event, at most one page twice (the killed holder's, when it
    // held the output).
    wait_for(
        Duration::from_millis(lease_ms) + renew + Duration::from_secs(30),
        "every event at the collector",
        || async {
            let got = delivered.lock().expect("lock");
            let ips: HashSet<&str> = got.iter().filter_map(|e| e["source.ip"].as_str()).collect();
            ips.len() >= all.len()
        },
    )
    .await;
    let got = delivered.lock().expect("lock").clone();
    let ips: HashSet<&str> = got.iter().filter_map(|e| e["source.ip"].as_str()).collect();
    let want: HashSet<String> = all
        .iter()
        .map(|(n, _)| {
            envelope("", *n)["payload"]["source.ip"]
                .as_str()
                .expect("ip")
                .to_owned()
        })
        .collect();
    assert_eq!(
        ips,
        want.iter().map(String::as_str).collect::<HashSet<&str>>(),
        "the collector's events are not what was published"
    );
    let twice = got.len() - ips.len();
    assert!(
        twice as u64 <= BATCH,
        "{twice} events delivered twice (more than one page of {BATCH})"
    );
    assert!(
        output_on_holder || twice == 0,
        "{twice} events delivered twice without a takeover"
    );
    eprintln!(
        "intelmq out o: {} events for {} published, {twice} twice; it ran on the killed front end: {output_on_holder}",
        got.len(),
        all.len()
    );
    eprintln!(
        "link r: accepted {accepted}, duplicate {duplicate}, sent {sent} (killed holder: {dead}; successor: {live})"
    );
    assert_eq!(counter(&dead, "errors") + counter(live, "errors"), 0);
    assert!(
        accepted <= N && accepted + BATCH >= N,
        "accepted {accepted} of {N} (dead {dead}, live {live})"
    );
    assert!(
        duplicate <= BATCH,
        "{duplicate} re-sent (more than one batch of {BATCH}): dead {dead}, live {live}"
    );
    assert_eq!(sent, accepted + duplicate, "dead {dead}, live {live}");
}

/// A front end's relay state file of the link `r`.
fn relay_state(dir: &Path) -> std::path::PathBuf {
    dir.join("relay").join("push-r.json")
}
