use super::*;
use crate::path::Routed;
use serde_json::json;
use sighthub_exchange::{Grants, Reader};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

fn open(dir: &Path) -> Arc<ExchangeStore> {
    Arc::new(
        ExchangeStore::open(&dir.join("exchange"), Default::default(), None, None).expect("store"),
    )
}

/// The relay's shared state over `store`, with default local options and no peers.
fn shared(dir: &Path, store: &Arc<ExchangeStore>) -> Arc<Shared> {
    Arc::new(Shared {
        store: Arc::clone(store),
        dir: dir.to_owned(),
        local: LocalOptions::default(),
        peers: Default::default(),
        leases: Default::default(),
    })
}

/// A reader of everything, as an admin key reads.
fn admin_reader(store: &Arc<ExchangeStore>) -> Reader {
    Reader::new(
        Arc::clone(store),
        Arc::new(Grants::admin(store.org())),
        Tlp::Amber,
    )
}

fn peer(name: &str) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        // Nothing listens there: the task keeps backing off.
        url: "http://127.0.0.1:9".into(),
        key: "k".into(),
        feeds: vec![sighthub_exchange::Feed::All],
        tlp_max: Tlp::Red,
        forward_received: true,
        instance: None,
        fingerprint: None,
        ca: None,
        accept_invalid_certs: false,
    }
}

fn msg(n: u32, path: &[Uuid], tags: &[&str]) -> serde_json::Value {
    let mut meta = json!({"uuid": Uuid::new_v4().to_string(), "tags": tags});
    if !path.is_empty() {
        meta["sighthub:path"] = json!(path.iter().map(Uuid::to_string).collect::<Vec<_>>());
    }
    json!({"format":"intelmq","version":1,"type":"event","meta": meta,
           "payload": {"source.ip": format!("192.0.2.{n}"), "raw": "eA==", "tlp": "GREEN"}})
}

#[tokio::test]
async fn reload_starts_stops_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = RelayConfig {
        retry_min_ms: 5,
        retry_max_ms: 20,
        peers: vec![peer("a"), peer("b")],
        ..RelayConfig::default()
    };
    let relay = Relay::new(
        cfg.clone(),
        open(dir.path()),
        dir.path(),
        LocalOptions::default(),
    )
    .expect("relay");
    relay.start().await;
    let same = relay.reload(cfg.clone()).await.expect("reload");
    assert_eq!(same, Reloaded::default());
    cfg.peers.remove(0);
    cfg.peers[0].tlp_max = Tlp::Green;
    cfg.peers.push(peer("c"));
    let r = relay.reload(cfg.clone()).await.expect("reload");
    assert_eq!(r.started, vec!["push:c"]);
    assert_eq!(r.stopped, vec!["push:a"]);
    assert_eq!(r.restarted, vec!["push:b"]);
    let names: Vec<String> = relay
        .status()
        .expect("status")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, vec!["push:b", "push:c"]);
    // An embedded exchange is one process: each running link holds its lease.
    let held = |l: &HashMap<String, LeaseState>| {
        ["push:b", "push:c"]
            .iter()
            .all(|k| l.get(*k) == Some(&LeaseState::Held))
    };
    for _ in 0..500 {
        if held(&relay.leases()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(held(&relay.leases()), "{:?}", relay.leases());
    // A bad configuration changes nothing.
    let mut bad = cfg.clone();
    bad.peers.push(peer("b"));
    assert!(relay.reload(bad).await.is_err());
    // Disabled: everything stops.
    cfg.enabled = false;
    let r = relay.reload(cfg).await.expect("reload");
    assert_eq!(r.stopped, vec!["push:b", "push:c"]);
    // A stopped link gave its lease back.
    assert_eq!(
        relay.leases().get("push:b"),
        Some(&LeaseState::Released),
        "{:?}",
        relay.leases()
    );
    relay.stop().await;
}

#[tokio::test]
async fn batches_follow_the_log_and_skip_by_path_and_feed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let sh = shared(dir.path(), &store);
    let (peer_i, other) = (Uuid::new_v4(), Uuid::new_v4());
    let page = vec![
        msg(1, &[], &["feed:x"]),
        msg(2, &[peer_i], &["feed:x"]),
        msg(3, &[other], &["feed:x"]),
        msg(4, &[], &["feed:y"]),
        msg(5, &[other, peer_i], &["feed:x"]),
        msg(6, &[], &["feed:x"]),
    ];
    let got = pull::ingest(&sh, page.clone()).await.expect("ingest");
    assert_eq!((got.accepted, got.duplicate, got.errors), (6, 0, 0));
    let again = pull::ingest(&sh, page).await.expect("again");
    assert_eq!((again.accepted, again.duplicate, again.errors), (0, 6, 0));
    let settings = Settings::of(&RelayConfig::default());
    let grants = Grants::reader(
        store.org(),
        vec![sighthub_exchange::Feed::parse("tag:feed:x").expect("feed")],
        Tlp::Amber,
    );
    let reader = Reader::new(Arc::clone(&store), Arc::new(grants), sh.local.default_tlp);
    let b = push::next_batch(&sh, &settings, &reader, peer_i, 0, 2).expect("batch");
    assert_eq!((b.count, b.skipped, b.last, b.at_end), (2, 1, 3, false));
    let lines: Vec<Routed> = b
        .body
        .split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Routed::parse(l).expect("line"))
        .collect();
    let me = store.instance();
    assert_eq!(lines[0].path, vec![me]);
    assert_eq!(lines[1].path, vec![other, me]);
    let b = push::next_batch(&sh, &settings, &reader, peer_i, b.last, 10).expect("batch");
    // 4: other feed; 5: crossed the peer; 6: sent.
    assert_eq!((b.count, b.skipped, b.last, b.at_end), (1, 2, 6, true));
    let b = push::next_batch(&sh, &settings, &reader, peer_i, 6, 10).expect("batch");
    assert_eq!((b.count, b.last, b.at_end), (0, 6, true));
}

#[test]
fn backoff_grows_and_resets() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
    let first = b.next();
    assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
    for _ in 0..10 {
        assert!(b.next() <= Duration::from_millis(1000));
    }
    assert!(b.next() >= Duration::from_millis(750));
    b.reset();
    assert!(b.next() <= Duration::from_millis(125));
}

#[test]
fn endpoints_encode_segments() {
    let u = endpoint("http://h:1/", &["iep04", "consumers", "a b/c", "ack"]).expect("url");
    assert_eq!(u.as_str(), "http://h:1/iep04/consumers/a%20b%2Fc/ack");
    let u = endpoint("http://h:1/base", &["iep04", "status"]).expect("url");
    assert_eq!(u.as_str(), "http://h:1/base/iep04/status");
}

#[tokio::test]
async fn a_refused_message_in_a_pulled_page_is_skipped_and_the_rest_ingested() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let sh = shared(dir.path(), &store);
    let (org_a, org_b) = (Uuid::from_u128(0xA), Uuid::from_u128(0xB));
    let mut target = msg(1, &[], &[]);
    target["meta"]["uuid_org"] = json!(org_a.to_string());
    let t = target["meta"]["uuid"].clone();
    let got = pull::ingest(&sh, vec![target]).await.expect("ingest");
    assert_eq!(got.accepted, 1);
    // Another organisation withdraws it (its own link): refused here, the rest goes in.
    let w = Uuid::new_v4().to_string();
    let mut withdrawal = msg(2, &[], &[]);
    withdrawal["meta"]["uuid"] = json!(w);
    withdrawal["meta"]["uuid_org"] = json!(org_b.to_string());
    withdrawal["meta"]["intelmq:links"] =
        json!([{"left_side": w, "type": "withdraws", "right_side": t}]);
    let got = pull::ingest(&sh, vec![msg(3, &[], &[]), withdrawal, msg(4, &[], &[])])
        .await
        .expect("ingest");
    assert_eq!(got.accepted, 2);
    assert_eq!(got.refused.len(), 1);
    assert_eq!(got.refused[0].0.to_string(), w);
}

#[tokio::test]
async fn a_batch_keeps_to_its_byte_budget_and_misses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let sh = shared(dir.path(), &store);
    let page: Vec<serde_json::Value> = (1..=7).map(|n| msg(n, &[], &[])).collect();
    pull::ingest(&sh, page).await.expect("ingest");
    let mut settings = Settings::of(&RelayConfig::default());
    let one = push::next_batch(&sh, &settings, &admin_reader(&store), Uuid::new_v4(), 0, 10)
        .expect("batch");
    // Room for about two and a half messages.
    settings.max_batch_bytes = one.body.len() * 5 / 14;
    let (mut after, mut sent, mut batches) = (0, 0, 0);
    loop {
        let b = push::next_batch(
            &sh,
            &settings,
            &admin_reader(&store),
            Uuid::new_v4(),
            after,
            10,
        )
        .expect("batch");
        assert!(
            b.count == 1 || b.body.len() < settings.max_batch_bytes,
            "{}",
            b.body.len()
        );
        sent += b.count;
        after = b.last;
        batches += 1;
        if b.at_end {
            break;
        }
    }
    assert_eq!((sent, after), (7, 7));
    assert!(batches >= 3, "{batches}");
}

/// A peer that answers every batch `accepted`, and reports the uuids of each batch.
async fn accepting_peer() -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut conn = tokio::io::BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end().to_ascii_lowercase();
                        if line.is_empty() {
                            break;
                        }
                        if let Some(v) = line.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if conn.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let uuids: Vec<String> = body
                        .split(|c| *c == b'\n')
                        .filter(|l| !l.is_empty())
                        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
                        .map(|v| v["meta"]["uuid"].as_str().unwrap_or_default().to_owned())
                        .collect();
                    let answer =
                        json!({"accepted": uuids.len(), "duplicate": 0, "errors": 0}).to_string();
                    let _ = tx.send(uuids);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if conn.get_mut().write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

/// The uuids of the log's messages, in order.
fn logged(store: &ExchangeStore) -> Vec<String> {
    let mut out = Vec::new();
    store
        .scan(0, usize::MAX, |_, e| {
            out.push(e.uuid.to_string());
            std::ops::ControlFlow::Continue(())
        })
        .expect("scan");
    out
}

/// Upgrade path: a state file written when the push cursor lived there is honoured once:
/// the named consumer is created at its cursor, nothing before it is sent again, nothing
/// after it is skipped, and the counters go on from the file's.
#[tokio::test]
async fn an_old_state_file_cursor_becomes_the_consumer_nothing_resent_nothing_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let sh = shared(&dir.path().join("relay"), &store);
    std::fs::create_dir_all(&sh.dir).expect("relay dir");
    let page: Vec<serde_json::Value> = (1..=6).map(|n| msg(n, &[], &[])).collect();
    pull::ingest(&sh, page).await.expect("ingest");
    let uuids = logged(&store);
    assert_eq!(uuids.len(), 6);
    // The old format: the cursor (4 sent) and its log epoch next to the counters.
    let file = state::file(&sh.dir, "push", "p");
    std::fs::write(
        &file,
        json!({"epoch": store.epoch(), "cursor": 4, "attempted": 4, "sent": 4,
               "accepted": 4, "duplicate": 0, "errors": 0, "skipped": 0, "batches": 1})
        .to_string(),
    )
    .expect("old state file");
    let (url, mut batches) = accepting_peer().await;
    let cfg = RelayConfig {
        retry_min_ms: 5,
        retry_max_ms: 20,
        peers: vec![PeerConfig {
            url,
            instance: Some(Uuid::new_v4()),
            ..peer("p")
        }],
        ..RelayConfig::default()
    };
    let relay =
        Relay::new(cfg, Arc::clone(&store), dir.path(), LocalOptions::default()).expect("relay");
    relay.start().await;
    let got = tokio::time::timeout(Duration::from_secs(10), batches.recv())
        .await
        .expect("a batch")
        .expect("peer");
    assert_eq!(
        got,
        uuids[4..].to_vec(),
        "5 and 6 only: none resent, none skipped"
    );
    // The cursor is the exchange's now; the file keeps the counters and the position they
    // cover, written before the consumer moves.
    let consumer = push::consumer_name("p");
    for _ in 0..200 {
        if store
            .consumer(store.org(), &consumer)
            .expect("consumer")
            .is_some_and(|c| c.acked == 6)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.stop().await;
    assert_eq!(
        store
            .consumer(store.org(), &consumer)
            .expect("consumer")
            .map(|c| c.acked),
        Some(6)
    );
    let st = state::load(&file).expect("state");
    assert_eq!((st.sent, st.accepted, st.batches), (6, 6, 2));
    assert_eq!(
        (st.epoch, st.cursor),
        (store.epoch(), 6),
        "the counters cover up to 6"
    );
    let status = relay.status().expect("status");
    assert_eq!(status[0].1.cursor, 6, "status reads the consumer");
    // A restart goes on from the consumer: nothing resent.
    pull::ingest(&sh, vec![msg(7, &[], &[])])
        .await
        .expect("ingest");
    relay.start().await;
    let got = tokio::time::timeout(Duration::from_secs(10), batches.recv())
        .await
        .expect("a batch")
        .expect("peer");
    assert_eq!(got, logged(&store)[6..].to_vec());
    relay.stop().await;
    assert!(batches.try_recv().is_err(), "nothing else was sent");
}

/// A state file of another log (recreated since: another epoch) does not move a new cursor.
#[tokio::test]
async fn an_old_cursor_of_another_log_is_not_carried_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let sh = shared(dir.path(), &store);
    pull::ingest(&sh, (1..=3).map(|n| msg(n, &[], &[])).collect())
        .await
        .expect("ingest");
    let file = state::file(&sh.dir, "push", "q");
    let old = PeerState {
        epoch: store.epoch().wrapping_add(1),
        cursor: 2,
        ..PeerState::default()
    };
    let f = push::open_cursor(&sh, "q", Grants::admin(store.org()), &old, &file)
        .await
        .expect("cursor");
    assert_eq!(f.position().expect("pos"), 0);
    assert_eq!(f.name(), "relay/push/q");
    let same = PeerState {
        epoch: store.epoch(),
        ..old
    };
    let f = push::open_cursor(&sh, "r", Grants::admin(store.org()), &same, &file)
        .await
        .expect("cursor");
    assert_eq!(f.position().expect("pos"), 2);
    let b = push::next_batch(
        &sh,
        &Settings::of(&RelayConfig::default()),
        f.reader(),
        Uuid::new_v4(),
        2,
        10,
    )
    .expect("batch");
    assert_eq!((b.count, b.first.map(|(s, _)| s), b.last), (1, Some(3), 3));
}

/// A crash after the counters were written and before the consumer moved (the counters count
/// a batch the peer answered): at start the consumer is moved up to the counters' position, so
/// the batch is not resent and the counters stay exact. Before the consumer moves first.
#[tokio::test]
async fn a_crash_between_the_counters_and_the_consumer_is_repaired_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let sh = shared(dir.path(), &store);
    pull::ingest(&sh, (1..=5).map(|n| msg(n, &[], &[])).collect())
        .await
        .expect("ingest");
    let file = state::file(&sh.dir, "push", "p");
    // The consumer was at 2 when the process died; the counters already covered up to 4.
    let before = push::open_cursor(
        &sh,
        "p",
        Grants::admin(store.org()),
        &PeerState::default(),
        &file,
    )
    .await
    .expect("cursor");
    before.advance(2).await.expect("advance");
    let written = PeerState {
        epoch: store.epoch(),
        cursor: 4,
        sent: 4,
        ..PeerState::default()
    };
    let f = push::open_cursor(&sh, "p", Grants::admin(store.org()), &written, &file)
        .await
        .expect("cursor");
    assert_eq!(
        f.position().expect("pos"),
        4,
        "moved up to what the counters cover"
    );
    // Never back: counters of an older position leave the consumer where it is.
    let older = PeerState {
        cursor: 3,
        ..written
    };
    let f = push::open_cursor(&sh, "p", Grants::admin(store.org()), &older, &file)
        .await
        .expect("cursor");
    assert_eq!(f.position().expect("pos"), 4);
}

/// Two front ends sharing their documents: a peer added by invitation through one is picked
/// up by the other's refresh (and the link then runs where its lease is held).
#[tokio::test]
async fn a_runtime_peer_added_through_one_front_end_reaches_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let docs: Arc<dyn sighthub_storage::docs::Documents> =
        Arc::new(sighthub_storage::docs::MemoryDocuments::default());
    let off = RelayConfig {
        enabled: false,
        ..RelayConfig::default()
    };
    let front_end = |name: &str| {
        Relay::new(
            off.clone(),
            Arc::clone(&store),
            &dir.path().join(name),
            LocalOptions::default().with_documents(Arc::clone(&docs)),
        )
        .expect("relay")
    };
    let (a, b) = (front_end("a"), front_end("b"));
    let added = runtime::RuntimePeer {
        name: "org-a".into(),
        url: "https://127.0.0.1:9".into(),
        key: "k".into(),
        fingerprint: crate::Fingerprint::of_spki(b"a").to_string(),
    };
    a.add_peer(added.clone()).await.expect("add");
    let names = |r: &Relay| -> Vec<String> {
        r.effective(&off)
            .expect("effective")
            .peers
            .into_iter()
            .map(|p| p.name)
            .collect()
    };
    assert_eq!(names(&a), vec!["org-a".to_owned()]);
    assert!(names(&b).is_empty(), "b has not refreshed yet");
    assert!(b.refresh_peers().await.expect("refresh"));
    assert_eq!(names(&b), vec!["org-a".to_owned()]);
    assert!(!b.refresh_peers().await.expect("unchanged"));
    // A second peer added through b, from b's copy: a's peer is kept.
    b.add_peer(runtime::RuntimePeer {
        name: "org-b".into(),
        ..added
    })
    .await
    .expect("add");
    assert!(a.refresh_peers().await.expect("refresh"));
    assert_eq!(names(&a), vec!["org-a".to_owned(), "org-b".to_owned()]);
    // Nothing was written to either data directory: the documents hold them.
    assert!(!dir.path().join("a/relay/peers.json").exists());
}
