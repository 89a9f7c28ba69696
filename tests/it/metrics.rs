//! `GET /metrics` and `GET /iep04/peers` (issue 16, items 2 and 3) on a real server: who may
//! read them, and a failing relay link seen in both with its cause.

use crate::common::{free_port, Fixture, Opts, ADMIN};
use serde_json::Value;
use std::time::{Duration, Instant};

#[tokio::test]
async fn issue16_metrics_and_link_status_need_the_admin_key_and_show_a_failing_link() {
    let org = "6f0a3a1e-8a51-4c43-9d8a-2b8f6a4c2a11";
    let closed = free_port();
    let f = Fixture::with(&Opts {
        config: Some(format!(
            "[acl]\n\"reader-key-0123456789\" = \"r\"\n\n[exchange]\norg = \"{org}\"\n\n\
             [exchange.keys.\"ex-reader-0123456789\"]\norg = \"{org}\"\nread = [\"*\"]\n\n\
             [relay]\nretry_min_ms = 50\nretry_max_ms = 200\n\n\
             [[relay.peers]]\nname = \"down\"\nurl = \"http://127.0.0.1:{closed}\"\nkey = \"k\"\n"
        )),
        ..Opts::default()
    });
    let metrics = |key: Option<&'static str>| {
        let mut req = f.http.get(f.server.url("/metrics"));
        if let Some(k) = key {
            req = req.header("authorization", k);
        }
        async move {
            let r = req.send().await.expect("metrics");
            (r.status().as_u16(), r.text().await.expect("text"))
        }
    };
    assert_eq!(metrics(None).await.0, 401);
    assert_eq!(metrics(Some("reader-key-0123456789")).await.0, 403);

    // The link to a closed port fails, says why, and is down in the metrics.
    let end = Instant::now() + Duration::from_secs(30);
    let link = loop {
        let (s, v) = f.get("/iep04/peers").await;
        assert_eq!(s, 200, "{v}");
        let l = v["links"][0].clone();
        if l["last_error"].is_string() || Instant::now() > end {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(link["name"], "down", "{link}");
    assert_eq!(link["kind"], "push", "{link}");
    let why = link["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("connection refused"), "{link}");
    // One front end: it holds the link's lease (the link failed after taking it).
    assert_eq!(link["lease"], "held", "{link}");
    assert_eq!(link["held_elsewhere"], false, "{link}");
    assert_eq!(link["state"]["lease"], "held", "{link}");
    let (s, one) = f.get("/iep04/peers/down").await;
    assert_eq!((s, &one["name"]), (200, &Value::from("down")));
    assert_eq!(f.get("/iep04/peers/nope").await.0, 404);
    assert_eq!(
        f.get_as(Some("ex-reader-0123456789"), "/iep04/peers")
            .await
            .0,
        403
    );

    let (s, text) = metrics(Some(ADMIN)).await;
    assert_eq!(s, 200);
    assert!(
        text.contains(r#"sighthub_relay_link_up{kind="push",link="down"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sighthub_relay_link_standby{kind="push",link="down"} 0"#),
        "{text}"
    );
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
}
