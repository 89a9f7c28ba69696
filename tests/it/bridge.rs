//! Exchanged events become sightings: consensus across organisations, once per message
//! whatever the path, withdrawals take sightings back, scoped keys see only their namespaces
//! but the true consensus; and the log can be replayed into sightings.

use crate::common::{Fixture, Opts};
use serde_json::{json, Value};
use std::time::Duration;

const ORG: [&str; 3] = [
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "33333333-3333-4333-8333-333333333333",
];
const KEYS: [&str; 3] = ["org1-publisher", "org2-publisher", "org3-publisher"];
const RELAY: &str = "relay-key";
const ORG1_READER: &str = "org1-sightings-reader";

fn config() -> String {
    let mut c = format!("[acl]\n\"{ORG1_READER}\" = \"r:iep04/{}\"\n", ORG[0]);
    for (k, o) in KEYS.iter().zip(ORG) {
        c.push_str(&format!(
            "[exchange.keys.\"{k}\"]\norg = \"{o}\"\npublish = [\"intelmq/event\"]\nread = [\"*\"]\n"
        ));
    }
    c.push_str(&format!(
        "[exchange.keys.\"{RELAY}\"]\norg = \"44444444-4444-4444-8444-444444444444\"\npublish = [\"*\"]\nread = [\"*\"]\nrelay = true\n"
    ));
    c
}

fn envelope(uuid: &str, org: &str, ip: &str) -> Value {
    json!({"format":"intelmq","version":1,"type":"event",
           "meta":{"uuid":uuid,"uuid_org":org,"tags":[]},
           "payload":{"source.ip":ip,"feed.name":"scanners","classification.taxonomy":"other",
                      "time.source":"2021-03-01T12:00:00+00:00","tlp":"GREEN"}})
}

async fn publish(f: &Fixture, key: &str, body: &Value) -> Value {
    let (s, r) = f.post_as(Some(key), "/iep04/messages", body.clone()).await;
    assert_eq!(s, 200, "{r}");
    r
}

fn ns(org: &str) -> String {
    format!("/r/iep04/{org}/scanners/source.ip")
}

/// Polls until the sighting reads `want` as its consensus (the bridge is asynchronous).
async fn consensus_becomes(f: &Fixture, path: &str, want: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (s, r) = f.get(path).await;
        if s == 200 && r["consensus"] == want {
            return r;
        }
        last = r;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path}: consensus never became {want}; last answer {last}");
}

#[tokio::test]
async fn three_organisations_consensus_once_per_message_withdrawal_and_scopes() {
    let f = Fixture::with(&Opts {
        config: Some(config()),
        ..Opts::default()
    });
    // 192.0.2.1 seen by all three, .2 by org1 and org2, .3 by org3 only.
    let u = |i: u32| format!("aaaaaaaa-0000-4000-8000-{i:012}");
    publish(&f, KEYS[0], &envelope(&u(1), ORG[0], "192.0.2.1")).await;
    publish(&f, KEYS[1], &envelope(&u(2), ORG[1], "192.0.2.1")).await;
    publish(&f, KEYS[2], &envelope(&u(3), ORG[2], "192.0.2.1")).await;
    publish(&f, KEYS[0], &envelope(&u(4), ORG[0], "192.0.2.2")).await;
    publish(&f, KEYS[1], &envelope(&u(5), ORG[1], "192.0.2.2")).await;
    // A bare IntelMQ event: wrapped with a uuid and the publisher's org.
    publish(
        &f,
        KEYS[2],
        &json!({"source.ip":"192.0.2.3","feed.name":"scanners","classification.taxonomy":"other"}),
    )
    .await;
    let shared = format!("{}?val=192.0.2.1&noshadow", ns(ORG[0]));
    let v = consensus_becomes(&f, &shared, 3).await;
    assert_eq!(v["count"], 1);
    assert_eq!(
        v["first_seen"], 1_614_600_000,
        "time.source is the sighting time"
    );
    assert_eq!(v["tags"], "taxonomy:other,tlp:green");
    consensus_becomes(&f, &format!("{}?val=192.0.2.2&noshadow", ns(ORG[1])), 2).await;
    consensus_becomes(&f, &format!("{}?val=192.0.2.3&noshadow", ns(ORG[2])), 1).await;

    // The same message again, directly and through a relay: duplicates, counted once.
    let (_, r) = f
        .post_as(
            Some(KEYS[0]),
            "/iep04/messages",
            envelope(&u(1), ORG[0], "192.0.2.1"),
        )
        .await;
    assert!(r.to_string().contains("duplicate"), "{r}");
    let (_, r) = f
        .post_as(
            Some(RELAY),
            "/iep04/messages",
            envelope(&u(1), ORG[0], "192.0.2.1"),
        )
        .await;
    assert!(r.to_string().contains("duplicate"), "{r}");
    // A later message proves the bridge has moved past the duplicates.
    publish(&f, KEYS[0], &envelope(&u(6), ORG[0], "192.0.2.9")).await;
    consensus_becomes(&f, &format!("{}?val=192.0.2.9&noshadow", ns(ORG[0])), 1).await;
    let (_, v) = f.get(&shared).await;
    assert_eq!(
        (v["count"].clone(), v["consensus"].clone()),
        (json!(1), json!(3))
    );

    // Scoped key: sees only org1's namespaces, but the true consensus.
    let (s, who) = f.get_as(Some(ORG1_READER), "/_api/who?val=192.0.2.1").await;
    assert_eq!(s, 200);
    assert_eq!(who["consensus"], 3);
    assert_eq!(who["visible"], 1);
    assert_eq!(
        who["namespaces"][0]["namespace"],
        format!("iep04/{}/scanners/source.ip", ORG[0])
    );
    assert!(
        !who.to_string().contains(ORG[1]),
        "no other organisation's name leaks"
    );
    assert_eq!(
        f.get_as(
            Some(ORG1_READER),
            &format!("{}?val=192.0.2.1&noshadow", ns(ORG[1]))
        )
        .await
        .0,
        403
    );
    let (_, all) = f.get("/_api/who?val=192.0.2.1").await;
    assert_eq!(
        (all["consensus"].clone(), all["visible"].clone()),
        (json!(3), json!(3))
    );

    // org2 withdraws its sighting of 192.0.2.1: the consensus drops, org2's namespace loses it.
    let withdrawal = json!({"format":"intelmq","version":1,"type":"event",
        "meta":{"uuid":u(7),"uuid_org":ORG[1],"tags":[],
                "intelmq:links":[{"left_side":u(7),"type":"withdraws","right_side":u(2)}]},
        "payload":{"source.ip":"198.51.100.7","feed.name":"scanners","classification.taxonomy":"other"}});
    publish(&f, KEYS[1], &withdrawal).await;
    consensus_becomes(&f, &shared, 2).await;
    assert_eq!(
        f.get(&format!("{}?val=192.0.2.1&noshadow", ns(ORG[1])))
            .await
            .0,
        404
    );
    // Withdrawing twice does not take it out twice.
    let again = json!({"format":"intelmq","version":1,"type":"event",
        "meta":{"uuid":u(8),"uuid_org":ORG[1],"tags":[],
                "intelmq:links":[{"left_side":u(8),"type":"withdraws","right_side":u(2)}]},
        "payload":{"source.ip":"198.51.100.8","feed.name":"scanners","classification.taxonomy":"other"}});
    publish(&f, KEYS[1], &again).await;
    consensus_becomes(&f, &format!("{}?val=198.51.100.8&noshadow", ns(ORG[1])), 1).await;
    let (_, v) = f.get(&shared).await;
    assert_eq!(v["consensus"], 2);
}

#[tokio::test]
async fn rebuild_replays_the_log_into_sightings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let opts = Opts {
        config: Some(config()),
        ..Opts::default()
    };
    let f = Fixture::on(&data, &opts);
    for i in 0..50 {
        let e = envelope(
            &format!("bbbbbbbb-0000-4000-8000-{i:012}"),
            ORG[0],
            &format!("203.0.113.{}", i % 10),
        );
        publish(&f, KEYS[0], &e).await;
    }
    let path = format!("{}?val=203.0.113.3&noshadow", ns(ORG[0]));
    for _ in 0..200 {
        if f.get(&path).await.1["count"] == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(f.get(&path).await.1["count"], 5);
    // Something that is not from the log, under the bridge's root: a rebuild removes it.
    f.get(&format!("/w/iep04/{}/scanners/source.ip?val=stray", ORG[0]))
        .await;
    assert!(f.server.terminate());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sighthub"))
        .args(["rebuild-sightings", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(data.with_extension("toml"))
        .args(["--batch", "7"])
        .output()
        .expect("rebuild runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("50 sightings recorded"), "{err}");
    let f = Fixture::on(&data, &opts);
    let (_, v) = f.get(&path).await;
    assert_eq!(
        (v["count"].clone(), v["consensus"].clone()),
        (json!(5), json!(1)),
        "counted once each"
    );
    assert_eq!(
        f.get(&format!("{}?val=stray&noshadow", ns(ORG[0]))).await.0,
        404
    );
}
