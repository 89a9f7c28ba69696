use super::*;
use crate::path::Routed;
use serde_json::json;
use sighthub_exchange::Grants;

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
    })
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
    // A bad configuration changes nothing.
    let mut bad = cfg.clone();
    bad.peers.push(peer("b"));
    assert!(relay.reload(bad).await.is_err());
    // Disabled: everything stops.
    cfg.enabled = false;
    let r = relay.reload(cfg).await.expect("reload");
    assert_eq!(r.stopped, vec!["push:b", "push:c"]);
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
    let b = push::next_batch(&sh, &settings, &grants, peer_i, 0, 2).expect("batch");
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
    let b = push::next_batch(&sh, &settings, &grants, peer_i, b.last, 10).expect("batch");
    // 4: other feed; 5: crossed the peer; 6: sent.
    assert_eq!((b.count, b.skipped, b.last, b.at_end), (1, 2, 6, true));
    let b = push::next_batch(&sh, &settings, &grants, peer_i, 6, 10).expect("batch");
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
    let one = push::next_batch(
        &sh,
        &settings,
        &Grants::admin(store.org()),
        Uuid::new_v4(),
        0,
        10,
    )
    .expect("batch");
    // Room for about two and a half messages.
    settings.max_batch_bytes = one.body.len() * 5 / 14;
    let (mut after, mut sent, mut batches) = (0, 0, 0);
    loop {
        let b = push::next_batch(
            &sh,
            &settings,
            &Grants::admin(store.org()),
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
