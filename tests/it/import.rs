//! `sighthub import-sightingdb` and `import-sightingdb-config` on snapshots and a
//! configuration made by SightingDB 0.7.8 itself (`tests/fixtures/sightingdb-0.7.8`, see its
//! README), read back value by value through a real server's HTTP API, and on generated
//! snapshots in SightingDB's format (a truncated shard, `kill -9` mid-import).

use crate::common::{client, now, Fixture, Opts, Server};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixture() -> PathBuf {
    fixture_of("0.7.8")
}

fn fixture_of(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/sightingdb-{version}"))
}

fn sighthub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sighthub"))
}

fn import(source: &Path, data: &Path) -> Output {
    sighthub()
        .arg("import-sightingdb")
        .arg(source)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run import-sightingdb")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Percent-encodes every byte but ASCII letters and digits.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every value SightingDB answered for (`expected.jsonl`, its own `/rs` answers), asked of
/// sighthub with the same request.
async fn every_value_as_sightingdb_answered(f: &Fixture, fixture: &Path) {
    let expected = std::fs::read_to_string(fixture.join("expected.jsonl")).expect("expected");
    let mut checked = 0;
    for line in expected.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("json line");
        let ns = e["namespace"].as_str().expect("namespace");
        let answer = &e["answer"];
        let value = answer["value"].as_str().expect("value");
        let (status, body) = f
            .get(&format!("/rs/{ns}?val={}&noshadow", enc(value)))
            .await;
        let ttl = answer["ttl"].as_i64().unwrap_or(0);
        let expires = answer["last_seen"].as_i64().unwrap_or(0) + ttl;
        if ttl > 0 && now() >= expires {
            // Expired since the fixture was made: sighthub's TTL rule took it out.
            assert_ne!(status, 200, "{ns} {value} expired at {expires}: {body}");
            continue;
        }
        assert_eq!(status, 200, "{ns} {value}: {body}");
        assert_eq!(&body, answer, "{ns} {value}");
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} values checked");
}

#[tokio::test]
async fn sightingdbs_own_snapshot_reads_back_value_by_value_and_a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let first = import(&fixture().join("db"), &data);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = text(&first.stdout);
    assert!(out.contains("values: 9 new, 0 updated"), "{out}");
    assert!(out.contains("7 _all records"), "{out}");
    assert!(out.contains("activity.json, latest.json"), "{out}");
    {
        let f = Fixture::on(&data, &Opts::default());
        every_value_as_sightingdb_answered(&f, &fixture()).await;
        let (_, count) = f.get("/r/feeds/ips?count").await;
        assert_eq!(count["values"], 3, "{count}");
        assert!(f.server.terminate());
    }
    let second = import(&fixture().join("db"), &data);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let out = text(&second.stdout);
    assert!(
        out.contains("values: 0 new, 0 updated (larger of each kept), 9 unchanged"),
        "{out}"
    );
    let f = Fixture::on(&data, &Opts::default());
    every_value_as_sightingdb_answered(&f, &fixture()).await;
}

#[tokio::test]
async fn a_truncated_shard_is_named_and_everything_else_is_imported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    std::fs::create_dir(&db).expect("mkdir");
    for entry in std::fs::read_dir(fixture().join("db")).expect("fixture") {
        let p = entry.expect("entry").path();
        std::fs::copy(&p, db.join(p.file_name().expect("name"))).expect("copy");
    }
    let victim = db.join("misp-a22d8184.json.zst");
    let bytes = std::fs::read(&victim).expect("read");
    std::fs::write(&victim, &bytes[..bytes.len() - 40]).expect("truncate");
    let data = dir.path().join("data");
    let run = import(&db, &data);
    let err = text(&run.stderr);
    assert!(
        !run.status.success(),
        "a damaged shard must fail the command"
    );
    assert!(
        err.contains("misp-a22d8184.json.zst") && err.contains("truncated or corrupt"),
        "{err}"
    );
    let f = Fixture::on(&data, &Opts::default());
    let (status, body) = f.get("/r/feeds/ips?val=1.2.3.4&noshadow").await;
    assert_eq!(
        (status, &body["count"]),
        (200, &serde_json::json!(4)),
        "{body}"
    );
    let (status, _) = f.get("/r/org1/bu1/urls?count").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn kill_9_mid_import_then_a_rerun_resumes_with_exact_counts() {
    const VALUES: u64 = 120_000;
    const NAMESPACES: u64 = 8;
    const SHARDS: u64 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snapshot");
    sighthub_migrate::synthetic::write(&snap, VALUES, NAMESPACES, SHARDS).expect("snapshot");
    let data = dir.path().join("data");
    // Killed once it has started the second of four files.
    let mut child = sighthub()
        .arg("import-sightingdb")
        .arg(&snap)
        .arg("--data-dir")
        .arg(&data)
        .arg("--batch")
        .arg("1000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut reached = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line.contains("file 3/4") {
            reached = true;
            break;
        }
    }
    assert!(reached, "the import never reached its third file");
    child.kill().expect("kill -9");
    let _ = child.wait();
    let rerun = import(&snap, &data);
    assert!(rerun.status.success(), "{}", text(&rerun.stderr));
    let out = text(&rerun.stdout);
    assert!(out.contains("resumed an interrupted import at"), "{out}");
    let f = Fixture::on(&data, &Opts::default());
    let mut total = 0;
    for ns in 0..NAMESPACES {
        let (status, body) = f
            .get(&format!("/r/synth{}/ns{ns}?count", ns % SHARDS))
            .await;
        assert_eq!(status, 200, "{body}");
        total += body["values"].as_u64().expect("values");
    }
    assert_eq!(total, VALUES);
    for i in (0..VALUES).step_by(997) {
        let (ns, value, count) = sighthub_migrate::synthetic::value(i, NAMESPACES, SHARDS);
        let (status, body) = f
            .get(&format!("/r/{ns}?val={}&noshadow", enc(&value)))
            .await;
        assert_eq!(status, 200, "{ns} {value}: {body}");
        assert_eq!(body["count"], count, "{ns} {value}: {body}");
        assert_eq!(body["consensus"], 1, "{ns} {value}: {body}");
    }
}

#[tokio::test]
async fn the_config_importer_carries_sightingdbs_keys_and_says_what_it_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("sighthub.toml");
    let run = sighthub()
        .arg("import-sightingdb-config")
        .arg(fixture().join("sightingdb.toml"))
        .arg("--output")
        .arg(&out_path)
        .output()
        .expect("run");
    assert!(run.status.success(), "{}", text(&run.stderr));
    let out = text(&run.stdout);
    assert!(out.contains("(3 API keys)"), "{out}");
    for unmapped in [
        "daemon.snapshot_interval",
        "daemon.daemonize",
        "[dns]",
        "[storage]",
    ] {
        assert!(out.contains(unmapped), "{unmapped} not reported: {out}");
    }
    assert!(out.contains("sighthub import-sightingdb"), "{out}");
    let converted = std::fs::read_to_string(&out_path).expect("written");
    assert!(
        converted.contains("listen = \"127.0.0.1:19998\""),
        "{converted}"
    );
    assert!(converted.contains("retention_hours = 720"), "{converted}");
    // Refuses to overwrite.
    let again = sighthub()
        .arg("import-sightingdb-config")
        .arg(fixture().join("sightingdb.toml"))
        .arg("--output")
        .arg(&out_path)
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    // The keys work as SightingDB granted them (served over plain HTTP on a free port: the
    // fixture's certificate is not kept).
    let data = dir.path().join("data");
    let mut cmd = sighthub();
    cmd.arg("serve")
        .arg("--config")
        .arg(&out_path)
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--plain-http");
    let (child, url) = crate::common::spawn_until_listening(cmd, false);
    let server = Server {
        child,
        addr: url.split_once("://").expect("url").1.parse().expect("addr"),
        scheme: "http",
    };
    let http = client();
    let get = |key: &'static str, path: &str| {
        http.get(server.url(path))
            .header("Authorization", key)
            .send()
    };
    let w = get("fixture-misp-key", "/w/misp/ips?val=1.1.1.1")
        .await
        .expect("w");
    assert_eq!(w.status(), 200);
    let r = get("fixture-reader-key", "/r/misp/ips?val=1.1.1.1")
        .await
        .expect("r");
    assert_eq!(r.status(), 403, "r:feeds must not read misp");
    let w = get("fixture-admin-key", "/w/feeds/ips?val=1.1.1.1")
        .await
        .expect("w");
    assert_eq!(w.status(), 200);
    let r = get("fixture-reader-key", "/r/feeds/ips?val=1.1.1.1")
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
}

/// SightingDB 0.5.9's version-1 shards (one `count`, one `stats` per value), and the single
/// `sightingdb.json` of the versions before 0.5.0, which 0.5.9 itself read back with the same
/// answers (see the fixture's README).
#[tokio::test]
async fn sightingdb_0_5_shards_and_the_single_file_read_back_value_by_value() {
    for source in ["db", "legacy/sightingdb.json"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let run = import(&fixture_of("0.5.9").join(source), &data);
        assert!(run.status.success(), "{source}: {}", text(&run.stderr));
        let out = text(&run.stdout);
        assert!(out.contains("values: 9 new, 0 updated"), "{source}: {out}");
        let f = Fixture::on(&data, &Opts::default());
        every_value_as_sightingdb_answered(&f, &fixture_of("0.5.9")).await;
    }
}
