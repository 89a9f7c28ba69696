//! Durability: every write answered 200 survives `kill -9`, round after round, and a
//! corrupt or truncated journal tail recovers to the last good record.

use crate::common::{client, Opts, Server, ADMIN};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROUNDS: usize = 20;

/// Sends with the admin key; true only when the server answered 200 (an acknowledged write).
async fn answered_200(req: reqwest::RequestBuilder) -> bool {
    req.header("Authorization", ADMIN)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Writes distinct values with /w and /wb and one shared counter value until `stop`.
async fn load(
    server: &Server,
    round: usize,
    acked: Arc<Mutex<Vec<String>>>,
    counter: Arc<Mutex<u64>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..3 {
        let (url, acked, stop) = (server.url(""), Arc::clone(&acked), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let v = format!("r{round}w{w}i{i}");
                let ok = answered_200(http.get(format!("{url}/w/crash/single?val={v}"))).await;
                if ok {
                    acked
                        .lock()
                        .expect("lock")
                        .push(format!("crash/single\0{v}"));
                }
                i += 1;
            }
        }));
    }
    {
        let (url, acked, stop) = (server.url(""), Arc::clone(&acked), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut b = 0;
            while !stop.load(Ordering::Relaxed) {
                let vals: Vec<String> = (0..50).map(|j| format!("r{round}b{b}j{j}")).collect();
                let items: Vec<_> = vals
                    .iter()
                    .map(|v| json!({"namespace":"crash/bulk","value":v}))
                    .collect();
                let req = http
                    .post(format!("{url}/wb"))
                    .header("content-type", "application/json")
                    .body(json!({ "items": items }).to_string());
                let ok = answered_200(req).await;
                if ok {
                    acked
                        .lock()
                        .expect("lock")
                        .extend(vals.iter().map(|v| format!("crash/bulk\0{v}")));
                }
                b += 1;
            }
        }));
    }
    {
        let (url, counter, stop) = (server.url(""), Arc::clone(&counter), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let ok = answered_200(http.get(format!("{url}/w/crash/counter?val=c"))).await;
                if ok {
                    *counter.lock().expect("lock") += 1;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    stop.store(true, Ordering::Relaxed);
    // Kill while requests are still in flight: tasks are not awaited first.
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(tasks);
}

/// Reads every acknowledged value back (count must be exactly 1) and the counter.
async fn verify(server: &Server, acked: &[String], counter: u64) {
    let http = client();
    for chunk in acked.chunks(5000) {
        let items: Vec<_> = chunk
            .iter()
            .map(|k| {
                let (ns, v) = k.split_once('\0').expect("key");
                json!({"namespace":ns,"value":v,"noshadow":true})
            })
            .collect();
        let r: serde_json::Value = http
            .post(server.url("/rb"))
            .header("Authorization", ADMIN)
            .header("content-type", "application/json")
            .body(json!({ "items": items }).to_string())
            .send()
            .await
            .expect("rb")
            .json()
            .await
            .expect("json");
        for (k, item) in chunk.iter().zip(r["items"].as_array().expect("items")) {
            assert_eq!(
                item["count"], 1,
                "acknowledged write lost or doubled: {k:?} → {item}"
            );
        }
    }
    if counter > 0 {
        let r: serde_json::Value = http
            .get(server.url("/r/crash/counter?val=c&noshadow"))
            .header("Authorization", ADMIN)
            .send()
            .await
            .expect("read")
            .json()
            .await
            .expect("json");
        let got = r["count"].as_u64().unwrap_or(0);
        // Each round may add at most one write that was applied but not yet answered.
        assert!(
            got >= counter,
            "counter lost acknowledged writes: {got} < {counter}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_repeatedly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let counter = Arc::new(Mutex::new(0u64));
    for round in 0..ROUNDS {
        let server = Server::start(&data, &Opts::default());
        let snapshot = acked.lock().expect("lock").clone();
        let c = *counter.lock().expect("lock");
        verify(&server, &snapshot, c).await;
        load(&server, round, Arc::clone(&acked), Arc::clone(&counter)).await;
        server.kill9();
    }
    let server = Server::start(&data, &Opts::default());
    let all = acked.lock().expect("lock").clone();
    assert!(
        all.len() > ROUNDS * 10,
        "the load wrote too little to mean anything: {}",
        all.len()
    );
    let c = *counter.lock().expect("lock");
    verify(&server, &all, c).await;
}

fn newest_journal(data: &Path) -> PathBuf {
    let mut journals: Vec<(u64, PathBuf)> = std::fs::read_dir(data.join("db"))
        .expect("db dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            let n = p
                .file_name()?
                .to_str()?
                .strip_suffix(".jnl")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    journals.sort();
    journals.pop().expect("a journal file").1
}

async fn write_acked(server: &Server, prefix: &str, n: usize) -> Vec<String> {
    let http = client();
    let mut out = Vec::new();
    for i in 0..n {
        let v = format!("{prefix}{i}");
        let r = http
            .get(server.url(&format!("/w/tail?val={v}")))
            .header("Authorization", ADMIN)
            .send()
            .await
            .expect("write");
        assert_eq!(r.status(), 200);
        out.push(format!("tail\0{v}"));
    }
    out
}

#[tokio::test]
async fn corrupt_journal_tail_recovers_to_last_good_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, &Opts::default());
    let good = write_acked(&server, "a", 200).await;
    server.kill9();
    // Garbage appended after the last record (a torn write of a record that was never acked).
    let jnl = newest_journal(&data);
    let mut bytes = std::fs::read(&jnl).expect("journal");
    let good_len = bytes.len();
    bytes.extend_from_slice(&[
        0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
    ]);
    std::fs::write(&jnl, &bytes).expect("corrupt");
    let server = Server::start(&data, &Opts::default());
    verify(&server, &good, 0).await;
    let more = write_acked(&server, "b", 50).await;
    server.kill9();
    // Now cut the journal in the middle of the last records: everything before survives.
    let jnl = newest_journal(&data);
    let len = std::fs::metadata(&jnl).expect("journal").len();
    if jnl == newest_journal(&data) && len as usize > good_len {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&jnl)
            .expect("open");
        f.set_len(len - 7).expect("truncate");
    }
    let server = Server::start(&data, &Opts::default());
    verify(&server, &good, 0).await;
    // Of the second batch, a prefix survives (all but the cut record at most).
    let http = client();
    let mut present = 0;
    for k in &more {
        let v = k.split_once('\0').expect("key").1;
        let s = http
            .get(server.url(&format!("/r/tail?val={v}&noshadow")))
            .header("Authorization", ADMIN)
            .send()
            .await
            .expect("read")
            .status();
        if s == 200 {
            present += 1;
        }
    }
    assert!(
        present >= more.len() - 1,
        "only the cut record may be lost: {present}/{}",
        more.len()
    );
    // The store keeps working after recovery.
    let after = write_acked(&server, "c", 10).await;
    verify(&server, &after, 0).await;
}
