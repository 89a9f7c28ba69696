//! Peering the first time (issue 15): pinned identities and links that say why, with real
//! `sighthub` processes on loopback.
//!
//! - A peer pinned by its identity (`fingerprint`, printed by `sighthub identity` and shown
//!   by `GET /iep04/status`) is reached over TLS although its self-signed certificate does
//!   not name the host it is reached by.
//! - A wrong fingerprint, a certificate that does not name the host, a refused key and a
//!   closed port each leave their cause in the link's status and in the log.
//! - A `ca` file missing at start does not kill the link: SIGHUP after it appears restarts
//!   it and messages flow.
//! - Two organisations join by invitation (`sighthub peer invite` / `join`), add the blocks
//!   `join` prints, and exchange both ways over pinned identities.
//! - The README's three instances through a hub: pushes and a pull with a named consumer, all
//!   pinned to the hub's identity; the consumer belongs to the organisation that uses it.

use crate::common::ADMIN;
use crate::relay::uuid_v4;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A running instance and every line it logged.
struct Proc {
    child: Child,
    addr: SocketAddr,
    /// `http(s)://addr`.
    base: String,
    dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(dir: &Path, config: &str, tls: bool) -> Proc {
        Proc::start_on(dir, config, tls, "127.0.0.1:0")
    }

    fn start_on(dir: &Path, config: &str, tls: bool, listen: &str) -> Proc {
        let path = dir.with_extension("toml");
        // On the clusters when the suites run there: each instance under its own prefix and
        // stream, its runtime peers and keys in the cluster.
        let config =
            crate::common::on_clusters(dir, Some(config.to_owned()), false).unwrap_or_default();
        std::fs::write(&path, config).expect("config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sighthub"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(listen)
            .arg("--config")
            .arg(&path)
            .env("SIGHTHUB_ADMIN_KEY", ADMIN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !tls {
            cmd.arg("--plain-http");
        }
        let mut child = cmd.spawn().expect("spawn sighthub");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.trim().to_owned());
                }
                lines.lock().expect("log").push(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock()));
        Proc {
            child,
            addr: url.split_once("://").expect("url").1.parse().expect("addr"),
            base: url.clone(),
            dir: dir.to_owned(),
            log,
        }
    }

    fn logged(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().expect("log");
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    fn state(&self, name: &str) -> Value {
        let f = self.dir.join("relay").join(format!("push-{name}.json"));
        std::fs::read(f)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(json!({}))
    }

    fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }
}

/// `sighthub identity` of a data directory and config.
fn identity(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sighthub"))
        .arg("identity")
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(dir.with_extension("toml"))
        .output()
        .expect("identity");
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(id.starts_with("sha256:") && id.len() == 50, "{id}");
    id
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        // The test reads the TLS instance's API; the pinning under test is the relay's.
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
}

/// The receiving instance: TLS, `[tls] names` if given, and a relay key `a-key` for
/// organisation `a_org`.
fn receiver_config(org: &str, a_org: &str, names: Option<&str>) -> String {
    let tls = names.map_or(String::new(), |n| format!("[tls]\nnames = {n}\n\n"));
    format!(
        "[exchange]\norg = \"{org}\"\n\n[bridge]\nenabled = false\n\n{tls}\
         [exchange.keys.\"a-key\"]\norg = \"{a_org}\"\npublish = [\"*\"]\nread = [\"*\"]\ntlp_max = \"RED\"\nrelay = true\n"
    )
}

/// The sending instance (plain HTTP: only its links matter) with `peers` (TOML).
fn sender_config(org: &str, retry: (u64, u64), peers: &str) -> String {
    format!(
        "[exchange]\norg = \"{org}\"\n\n[bridge]\nenabled = false\n\n[relay]\nretry_min_ms = {}\nretry_max_ms = {}\n\n{peers}",
        retry.0, retry.1
    )
}

async fn publish(http: &reqwest::Client, a: &Proc, org: &str) -> String {
    let uuid = uuid_v4();
    let msg = json!({"format": "intelmq", "version": 1, "type": "event",
        "meta": {"uuid": uuid, "uuid_org": org},
        "payload": {"source.ip": "198.51.100.7", "raw": "eA==", "tlp": "GREEN"}});
    let r = http
        .post(format!("{}/iep04/messages", a.base))
        .header("authorization", ADMIN)
        .header("content-type", "application/json")
        .body(msg.to_string())
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200);
    uuid
}

async fn holds(http: &reqwest::Client, b: &Proc, uuid: &str) -> bool {
    http.get(format!("{}/iep04/messages/{uuid}", b.base))
        .header("authorization", ADMIN)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Polls `check` until it holds, for at most 60 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not reached within 60 s: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_a_pinned_peer_is_reached_whatever_its_certificate_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a_org, b_org) = (uuid_v4(), uuid_v4());
    let bdir = tmp.path().join("b");
    // B's certificate names only b.example; A reaches it as 127.0.0.1.
    let b = Proc::start(
        &bdir,
        &receiver_config(&b_org, &a_org, Some("[\"b.example\"]")),
        true,
    );
    let b_id = identity(&bdir);
    let http = http();
    let status: Value = http
        .get(format!("https://{}/iep04/status", b.addr))
        .header("authorization", ADMIN)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["identity"], b_id.as_str(), "{status}");
    let peers = format!(
        "[[relay.peers]]\nname = \"b\"\nurl = \"https://127.0.0.1:{}\"\nkey = \"a-key\"\nfingerprint = \"{b_id}\"\n",
        b.addr.port()
    );
    let a = Proc::start(
        &tmp.path().join("a"),
        &sender_config(&a_org, (50, 500), &peers),
        false,
    );
    let uuid = publish(&http, &a, &a_org).await;
    eventually("the message reaches the pinned peer", || {
        holds(&http, &b, &uuid)
    })
    .await;
    assert_eq!(a.state("b")["last_error"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_a_failing_link_says_why_in_its_status_and_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a_org, b_org) = (uuid_v4(), uuid_v4());
    let bdir = tmp.path().join("b");
    let b = Proc::start(
        &bdir,
        &receiver_config(&b_org, &a_org, Some("[\"b.example\"]")),
        true,
    );
    let b_id = identity(&bdir);
    let wrong = format!("sha256:{}", "A".repeat(43));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let url = format!("https://127.0.0.1:{}", b.addr.port());
    let cert = bdir.join("tls").join("cert.pem");
    let peers = format!(
        "[[relay.peers]]\nname = \"wrong\"\nurl = \"{url}\"\nkey = \"a-key\"\nfingerprint = \"{wrong}\"\n\n\
         [[relay.peers]]\nname = \"misnamed\"\nurl = \"{url}\"\nkey = \"a-key\"\nca = \"{}\"\n\n\
         [[relay.peers]]\nname = \"badkey\"\nurl = \"{url}\"\nkey = \"not-a-key\"\nfingerprint = \"{b_id}\"\n\n\
         [[relay.peers]]\nname = \"closed\"\nurl = \"http://127.0.0.1:{closed_port}\"\nkey = \"a-key\"\n",
        cert.display()
    );
    let a = Proc::start(
        &tmp.path().join("a"),
        &sender_config(&a_org, (50, 500), &peers),
        false,
    );
    let expected = [
        (
            "wrong",
            format!("unknown fingerprint: expected {wrong}, presented {b_id}"),
        ),
        ("misnamed", "TLS name mismatch".to_owned()),
        ("badkey", "refused key (HTTP 40".to_owned()),
        ("closed", "connection refused".to_owned()),
    ];
    for (name, says) in &expected {
        let end = Instant::now() + Duration::from_secs(60);
        while !a.state(name)["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with(says.as_str()))
        {
            assert!(
                Instant::now() < end,
                "push:{name} does not say '{says}': {}",
                a.state(name)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(a.state(name)["since"].as_u64().is_some());
        let warned = a.logged(&format!("link=push:{name}"));
        assert!(
            warned
                .iter()
                .any(|l| l.contains("WARN") && l.contains(says.as_str())),
            "push:{name}: {warned:?}"
        );
        assert!(
            !warned.iter().any(|l| l.contains("error sending request")),
            "the cause, not the client's top-level text: {warned:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_a_peer_missing_its_ca_at_start_recovers_on_sighup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a_org, b_org) = (uuid_v4(), uuid_v4());
    let bdir = tmp.path().join("b");
    let b = Proc::start(
        &bdir,
        // The default names include 127.0.0.1.
        &receiver_config(&b_org, &a_org, None),
        true,
    );
    let ca = tmp.path().join("b-cert.pem");
    let peers = format!(
        "[[relay.peers]]\nname = \"b\"\nurl = \"https://127.0.0.1:{}\"\nkey = \"a-key\"\nca = \"{}\"\n",
        b.addr.port(),
        ca.display()
    );
    // Retries far apart: what revives the link is the SIGHUP, not a retry.
    let a = Proc::start(
        &tmp.path().join("a"),
        &sender_config(&a_org, (600_000, 600_000), &peers),
        false,
    );
    eventually("push:b says the ca file is missing", || async {
        a.state("b")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("b-cert.pem") && e.contains("send SIGHUP"))
    })
    .await;
    let http = http();
    let uuid = publish(&http, &a, &a_org).await;
    std::fs::copy(bdir.join("tls").join("cert.pem"), &ca).expect("copy the certificate");
    a.hup();
    eventually("the reload restarts push:b", || async {
        !a.logged("restarted=[\"push:b\"]").is_empty()
    })
    .await;
    eventually("the message reaches the peer", || holds(&http, &b, &uuid)).await;
    eventually("push:b's status is clear", || async {
        a.state("b")["last_error"].is_null()
    })
    .await;
}

/// Runs `sighthub <args> --config <dir>.toml --data-dir <dir>`; its standard output.
fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sighthub"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(dir.with_extension("toml"))
        .env("SIGHTHUB_ADMIN_KEY", ADMIN)
        .output()
        .expect("sighthub");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_two_organisations_join_by_invitation_and_exchange_both_ways() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a_org, b_org) = (uuid_v4(), uuid_v4());
    let (adir, bdir) = (tmp.path().join("a"), tmp.path().join("b"));
    let (pa, pb) = (crate::common::free_port(), crate::common::free_port());
    let base = |org: &str| {
        format!("[exchange]\norg = \"{org}\"\n\n[bridge]\nenabled = false\n\n[relay]\nretry_min_ms = 50\nretry_max_ms = 500\n\n")
    };
    let (mut a_cfg, mut b_cfg) = (base(&a_org), base(&b_org));
    std::fs::write(adir.with_extension("toml"), &a_cfg).expect("a config");
    std::fs::write(bdir.with_extension("toml"), &b_cfg).expect("b config");
    let a_url = format!("https://127.0.0.1:{pa}");
    let b_url = format!("https://127.0.0.1:{pb}");
    let token = run(
        &adir,
        &[
            "peer",
            "invite",
            "--offline",
            "--url",
            &a_url,
            "--name",
            "org-a",
        ],
    );
    let token = token.trim();
    assert!(!token.contains(char::is_whitespace), "one line: {token}");
    let joined = run(
        &bdir,
        &[
            "peer",
            "join",
            "--offline",
            token,
            "--url",
            &b_url,
            "--name",
            "org-b",
        ],
    );
    let (here, there) = joined.split_once("# 2.").expect("two blocks");
    b_cfg += here;
    a_cfg += there.split_once('\n').expect("header").1;
    let a = Proc::start_on(&adir, &a_cfg, true, &format!("127.0.0.1:{pa}"));
    let b = Proc::start_on(&bdir, &b_cfg, true, &format!("127.0.0.1:{pb}"));
    let http = http();
    let from_a = publish(&http, &a, &a_org).await;
    let from_b = publish(&http, &b, &b_org).await;
    eventually("A's message reaches B", || holds(&http, &b, &from_a)).await;
    eventually("B's message reaches A", || holds(&http, &a, &from_b)).await;
    for p in [&a, &b] {
        let peer = if p.base == a.base { "org-b" } else { "org-a" };
        assert_eq!(
            p.state(peer)["last_error"],
            Value::Null,
            "{}",
            p.state(peer)
        );
    }
}

/// Issue 15's single-use invitation, with both servers running: `peer invite` asks A's server
/// for a token, `peer join` on B redeems it at A (pinned on A's identity) and both sides push
/// to each other at once, without a restart or an edited file. The token is refused the
/// second time, and the links survive a restart of A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_an_invitation_is_redeemed_once_and_links_both_sides_without_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a_org, b_org) = (uuid_v4(), uuid_v4());
    let (adir, bdir) = (tmp.path().join("a"), tmp.path().join("b"));
    let base = |org: &str| {
        format!("[exchange]\norg = \"{org}\"\n\n[bridge]\nenabled = false\n\n[relay]\nretry_min_ms = 50\nretry_max_ms = 500\n\n")
    };
    let a = Proc::start(&adir, &base(&a_org), true);
    let b = Proc::start(&bdir, &base(&b_org), true);
    let token = run(
        &adir,
        &["peer", "invite", "--url", &a.base, "--name", "org-a"],
    );
    let token = token.trim().to_owned();
    let joined = run(
        &bdir,
        &["peer", "join", &token, "--url", &b.base, "--name", "org-b"],
    );
    assert!(joined.contains("Joined org-a"), "{joined}");
    let http = http();
    let from_a = publish(&http, &a, &a_org).await;
    let from_b = publish(&http, &b, &b_org).await;
    eventually("A's message reaches B", || holds(&http, &b, &from_a)).await;
    eventually("B's message reaches A", || holds(&http, &a, &from_b)).await;

    // Used once: a second join (here from B again, under another name) is refused by A.
    let again = Command::new(env!("CARGO_BIN_EXE_sighthub"))
        .args(["peer", "join", &token, "--url", &b.base, "--name", "org-b2"])
        .arg("--data-dir")
        .arg(&bdir)
        .arg("--config")
        .arg(bdir.with_extension("toml"))
        .env("SIGHTHUB_ADMIN_KEY", ADMIN)
        .output()
        .expect("sighthub");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{err}");
    assert!(err.contains("Not a valid invitation"), "{err}");

    // The link and the keys are durable: after A restarts, B's messages still arrive.
    let a_addr = a.addr.to_string();
    drop(a);
    let a = Proc::start_on(&adir, &base(&a_org), true, &a_addr);
    let later = publish(&http, &b, &b_org).await;
    eventually("B's later message reaches the restarted A", || {
        holds(&http, &a, &later)
    })
    .await;
}

/// The README's three instances through a hub, on loopback with pinned identities: A pushes to
/// the hub; C pushes to it and pulls from it with its named consumer `org-c`. A's message
/// reaches C through the hub, C's reaches the hub, and the consumer belongs to C's
/// organisation (the hub's admin key, another organisation, does not see it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_three_instances_through_a_pinned_hub() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a_org, c_org, hub_org) = (uuid_v4(), uuid_v4(), uuid_v4());
    let hdir = tmp.path().join("hub");
    // The hub's certificate names only hub.example; everyone reaches it as 127.0.0.1.
    let hub_cfg = format!(
        "[exchange]\norg = \"{hub_org}\"\n\n[bridge]\nenabled = false\n\n[tls]\nnames = [\"hub.example\"]\n\n\
         [exchange.keys.\"a-at-hub\"]\norg = \"{a_org}\"\npublish = [\"*\"]\nread = [\"*\"]\ntlp_max = \"RED\"\nrelay = true\n\n\
         [exchange.keys.\"c-at-hub\"]\norg = \"{c_org}\"\npublish = [\"*\"]\nread = [\"*\"]\ntlp_max = \"RED\"\nrelay = true\n"
    );
    let hub = Proc::start(&hdir, &hub_cfg, true);
    let hub_id = identity(&hdir);
    let url = format!("https://127.0.0.1:{}", hub.addr.port());
    let a = Proc::start(
        &tmp.path().join("a"),
        &sender_config(
            &a_org,
            (50, 500),
            &format!(
                "[[relay.peers]]\nname = \"hub\"\nurl = \"{url}\"\nkey = \"a-at-hub\"\nfingerprint = \"{hub_id}\"\n"
            ),
        ),
        false,
    );
    let c = Proc::start(
        &tmp.path().join("c"),
        &sender_config(
            &c_org,
            (50, 500),
            &format!(
                "[[relay.peers]]\nname = \"hub\"\nurl = \"{url}\"\nkey = \"c-at-hub\"\nfingerprint = \"{hub_id}\"\n\n\
                 [[relay.pulls]]\nname = \"hub\"\nurl = \"{url}\"\nkey = \"c-at-hub\"\nconsumer = \"org-c\"\nwait_seconds = 2\nfingerprint = \"{hub_id}\"\n"
            ),
        ),
        false,
    );
    let http = http();
    let from_a = publish(&http, &a, &a_org).await;
    let from_c = publish(&http, &c, &c_org).await;
    eventually("A's message reaches the hub", || {
        holds(&http, &hub, &from_a)
    })
    .await;
    eventually("C's message reaches the hub", || {
        holds(&http, &hub, &from_c)
    })
    .await;
    eventually("A's message reaches C through the hub", || {
        holds(&http, &c, &from_a)
    })
    .await;
    let consumer = |key: &'static str| {
        let (http, hub) = (&http, &hub);
        async move {
            let v: Value = http
                .get(format!("{}/iep04/consumers/org-c", hub.base))
                .header("authorization", key)
                .send()
                .await
                .expect("consumer")
                .json()
                .await
                .expect("json");
            v
        }
    };
    let as_c = consumer("c-at-hub").await;
    assert_eq!(
        as_c["exists"], true,
        "C's consumer, asked with C's key: {as_c}"
    );
    let as_admin = consumer(ADMIN).await;
    assert_eq!(
        as_admin["exists"], false,
        "the hub's admin key is another organisation: {as_admin}"
    );
    assert_eq!(a.state("hub")["last_error"], Value::Null);
    assert_eq!(c.state("hub")["last_error"], Value::Null);
}
