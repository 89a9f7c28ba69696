//! Keys at runtime (issue 14, item 5), against a real server: the admin API makes, lists,
//! scopes and revokes keys of both APIs; each change applies to the next request, survives
//! `kill -9`, and never shows a secret again; keys of the configuration file still work and
//! SIGHUP reloads them.

use crate::common::{client, Opts, Server, ADMIN};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

async fn call(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method, s.url(path));
    if let Some(k) = key {
        req = req.header("authorization", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(s: &Server, path: &str, key: &str) -> u16 {
    call(s, reqwest::Method::GET, path, Some(key), None).await.0
}

const ORG: &str = "6f0a3a1e-8a51-4c43-9d8a-2b8f6a4c2a11";

#[tokio::test]
async fn issue14_runtime_keys_are_made_scoped_and_revoked_at_once_and_survive_kill9() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("d");
    let s = Server::start(&data, &Opts::default());
    use reqwest::Method as M;

    // Admin only: no key 401, an unknown key 403, a non-admin key 403.
    assert_eq!(call(&s, M::GET, "/_api/keys", None, None).await.0, 401);
    assert_eq!(
        call(&s, M::GET, "/_api/keys", Some("nope"), None).await.0,
        403
    );

    // A sighting key scoped to feeds/, generated; its secret is shown once.
    let (st, made) = call(
        &s,
        M::POST,
        "/_api/keys",
        Some(ADMIN),
        Some(json!({"name": "misp", "sightings": "rw:feeds"})),
    )
    .await;
    assert_eq!(st, 201, "{made}");
    let key = made["key"].as_str().expect("key").to_owned();
    let id = made["id"].as_str().expect("id").to_owned();
    assert_eq!(key.len(), 64);
    assert_eq!(get(&s, "/w/feeds/ip?val=10.0.0.1", &key).await, 200);
    assert_eq!(get(&s, "/w/other?val=10.0.0.1", &key).await, 403);
    assert_eq!(
        get(&s, "/r/feeds/ip?val=10.0.0.1", &format!("Bearer {key}")).await,
        200
    );
    assert_eq!(
        call(&s, M::GET, "/_api/keys", Some(&key), None).await.0,
        403
    );

    // Listed without its secret or digest.
    let (st, list) = call(&s, M::GET, "/_api/keys", Some(ADMIN), None).await;
    assert_eq!(st, 200);
    let text = list.to_string();
    assert!(!text.contains(&key) && !text.contains("digest"), "{text}");
    assert_eq!(list["keys"][0]["id"], json!(id));
    assert_eq!(list["keys"][0]["sightings"], json!("rw:feeds"));

    // Scope: read only now.
    let (st, v) = call(
        &s,
        M::PATCH,
        &format!("/_api/keys/{id}"),
        Some(ADMIN),
        Some(json!({"sightings": "r:feeds"})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(get(&s, "/w/feeds/ip?val=10.0.0.2", &key).await, 403);
    assert_eq!(get(&s, "/r/feeds/ip?val=10.0.0.1", &key).await, 200);

    // An exchange key, given by the operator, publishes at once.
    let ex_key = "exchange-key-given-0123456789";
    let (st, v) = call(
        &s,
        M::POST,
        "/_api/keys",
        Some(ADMIN),
        Some(json!({"name": "org-x", "key": ex_key,
                    "exchange": {"org": ORG, "publish": ["*"], "read": ["*"]}})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let ex_id = v["id"].as_str().expect("id").to_owned();
    let event = json!({"format": "intelmq", "version": 1, "type": "event",
        "payload": {"source.ip": "198.51.100.9", "raw": "eA=="}});
    let (st, v) = call(
        &s,
        M::POST,
        "/iep04/messages",
        Some(ex_key),
        Some(event.clone()),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    // It is no sighting key, and the sighting key is no exchange key.
    assert_eq!(get(&s, "/r/feeds/ip?val=10.0.0.1", ex_key).await, 403);
    assert_eq!(get(&s, "/iep04/status", &key).await, 403);

    // Bad requests say what is wrong; a key already in use is refused.
    for (body, status) in [
        (json!({"name": "x"}), 400),
        (json!({"name": "x", "sightings": "rwx"}), 400),
        (json!({"name": "x", "sightings": "r", "key": "short"}), 400),
        (json!({"sightings": "r"}), 400),
        (json!({"name": "x", "sightings": "r", "key": ADMIN}), 409),
        (json!({"name": "x", "sightings": "r", "key": ex_key}), 409),
        (json!({"name": "x", "sightings": "r", "other": 1}), 400),
    ] {
        let (st, v) = call(&s, M::POST, "/_api/keys", Some(ADMIN), Some(body.clone())).await;
        assert_eq!(st, status, "{body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    assert_eq!(
        call(
            &s,
            M::DELETE,
            "/_api/keys/k-000000000000",
            Some(ADMIN),
            None
        )
        .await
        .0,
        404
    );

    // Revoke the exchange key, then kill -9: both changes were durable before the answer.
    let (st, _) = call(
        &s,
        M::DELETE,
        &format!("/_api/keys/{ex_id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        call(
            &s,
            M::POST,
            "/iep04/messages",
            Some(ex_key),
            Some(event.clone())
        )
        .await
        .0,
        403
    );
    s.kill9();
    let s = Server::start(&data, &Opts::default());
    assert_eq!(get(&s, "/r/feeds/ip?val=10.0.0.1", &key).await, 200);
    assert_eq!(
        get(&s, "/w/feeds/ip?val=10.0.0.3", &key).await,
        403,
        "the scope change survived"
    );
    assert_eq!(
        call(&s, M::POST, "/iep04/messages", Some(ex_key), Some(event))
            .await
            .0,
        403
    );
    let stored = match std::env::var("SIGHTHUB_TEST_REDIS") {
        // On the embedded backend: a file of the data directory, 0600.
        Err(_) => {
            let mode = std::fs::metadata(data.join("keys.json")).expect("keys.json");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(mode.permissions().mode() & 0o777, 0o600);
            }
            let _ = mode;
            std::fs::read_to_string(data.join("keys.json")).expect("read")
        }
        // On a cluster: the shared document, not a file.
        Ok(nodes) => {
            assert!(!data.join("keys.json").exists(), "kept in the cluster");
            let prefix = std::fs::read_to_string(data.with_extension("redis-prefix"))
                .expect("the redis prefix");
            let port = nodes
                .split(',')
                .next()
                .and_then(|n| n.rsplit(':').next())
                .expect("a node")
                .to_owned();
            let out = Command::new("redis-cli")
                .args(["-c", "-p", &port, "HGET"])
                .arg(format!("{}d:{{keys}}", prefix.trim()))
                .arg("b")
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    assert!(stored.contains(&id), "the key's record is stored: {stored}");
    assert!(!stored.contains(&key), "kept as a digest only");
}

#[tokio::test]
async fn issue14_sighup_reloads_the_keys_of_the_configuration_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("d");
    let config = |acl: &str, ex: &str| {
        format!(
            "[acl]\n\"{acl}\" = \"r\"\n\n[exchange]\norg = \"{ORG}\"\n\n[exchange.keys.\"{ex}\"]\norg = \"{ORG}\"\nread = [\"*\"]\n"
        )
    };
    let s = Server::start(
        &data,
        &Opts {
            config: Some(config("acl-key-one-0123456789", "ex-key-one-0123456789")),
            ..Opts::default()
        },
    );
    // A runtime key, to check it stays across the reload.
    let (st, v) = call(
        &s,
        reqwest::Method::POST,
        "/_api/keys",
        Some(ADMIN),
        Some(json!({"name": "rt", "sightings": "r"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let rt = v["key"].as_str().expect("key").to_owned();
    assert_eq!(get(&s, "/r/x?val=1", "acl-key-one-0123456789").await, 404);
    assert_eq!(get(&s, "/iep04/status", "ex-key-one-0123456789").await, 200);
    std::fs::write(
        data.with_extension("toml"),
        config("acl-key-two-0123456789", "ex-key-two-0123456789"),
    )
    .expect("rewrite");
    let ok = Command::new("kill")
        .args(["-HUP", &s.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    let mut reloaded = false;
    for _ in 0..100 {
        if get(&s, "/r/x?val=1", "acl-key-two-0123456789").await == 404 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the new [acl] key works after SIGHUP");
    assert_eq!(get(&s, "/r/x?val=1", "acl-key-one-0123456789").await, 403);
    assert_eq!(get(&s, "/iep04/status", "ex-key-two-0123456789").await, 200);
    assert_eq!(get(&s, "/iep04/status", "ex-key-one-0123456789").await, 403);
    assert_eq!(get(&s, "/r/x?val=1", &rt).await, 404, "runtime keys stay");
}
