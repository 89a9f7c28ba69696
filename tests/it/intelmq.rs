//! IntelMQ's TCP output protocol against a real server: raw frames (the real bytes of the
//! bot, length-prefixed and newline-separated), duplicates, bad JSON, truncated and
//! oversized frames; and `kill -9` while frames are in flight: every frame answered `Ok` is
//! in the exchange log after restart.

use crate::common::{client, connect, frame, free_port, Opts, Server, ADMIN};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HUB: &str = "28bc3db3-16da-461c-b20b-b944f4058708";
const ORG_SEP: &str = "0000000c-0000-4000-8000-00000000000c";
const LEN_SAMPLE: &[u8] =
    include_bytes!("../../crates/intelmq/tests/data/tcp_output_length_prefixed_3frames.bin");
const SEP_SAMPLE: &[u8] =
    include_bytes!("../../crates/intelmq/tests/data/tcp_output_separator_newline.bin");

fn opts(len_port: u16, sep_port: u16) -> Opts {
    Opts {
        config: Some(format!(
            r#"
[exchange]
org = "{HUB}"

[intelmq]
enabled = true

[[intelmq.tcp_in]]
name = "len"
listen = "127.0.0.1:{len_port}"
tags = ["intelmq:tcp"]
max_frame_bytes = 65536

[[intelmq.tcp_in]]
name = "sep"
listen = "127.0.0.1:{sep_port}"
framing = "separator"
separator = "\n"
org = "{ORG_SEP}"
"#
        )),
        ..Opts::default()
    }
}

async fn read_answer(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut buf))
        .await
        .expect("answer in time")
        .expect("answer");
    buf
}

/// Every message in the log, as envelopes.
async fn log(server: &Server) -> Vec<Value> {
    let http = client();
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = http
            .get(server.url(&format!("/iep04/messages?limit=1000&after={cursor}")))
            .header("Authorization", ADMIN)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        out.extend(
            page["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .cloned(),
        );
        cursor = page["cursor"].as_str().expect("cursor").to_owned();
        if page["more"] != json!(true) {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_output_frames_are_answered_ok_only_once_durably_in_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lp, sp) = (free_port(), free_port());
    let server = Server::start(&dir.path().join("data"), &opts(lp, sp));

    // The bot's real bytes: three length-prefixed frames in one write, answered per frame.
    let mut s = connect(lp).await;
    s.write_all(LEN_SAMPLE).await.expect("write");
    assert_eq!(read_answer(&mut s, 6).await, b"OkOkOk");
    // A resend (the bot's behaviour after a timeout) is a duplicate: answered, not stored.
    let first_len = u32::from_be_bytes(LEN_SAMPLE[..4].try_into().expect("4")) as usize;
    s.write_all(&LEN_SAMPLE[..4 + first_len])
        .await
        .expect("write");
    assert_eq!(read_answer(&mut s, 2).await, b"Ok");
    // Bad JSON is skipped (logged) but answered, or the bot would resend it forever.
    s.write_all(&frame(b"{not json")).await.expect("write");
    assert_eq!(read_answer(&mut s, 2).await, b"Ok");
    // A frame split in many writes.
    let ev = br#"{"source.ip": "198.51.100.77", "raw": "eA==", "extra.t": "split"}"#;
    for chunk in frame(ev).chunks(5) {
        s.write_all(chunk).await.expect("write");
        s.flush().await.expect("flush");
    }
    assert_eq!(read_answer(&mut s, 2).await, b"Ok");
    drop(s);

    // Newline-separated frames, published as another organisation.
    let mut s = connect(sp).await;
    s.write_all(SEP_SAMPLE).await.expect("write");
    assert_eq!(read_answer(&mut s, 6).await, b"OkOkOk");
    drop(s);

    // A truncated frame at EOF is never answered and never stored.
    let mut s = connect(lp).await;
    let mut partial = frame(br#"{"source.ip": "198.51.100.99", "raw": "eA=="}"#);
    partial.truncate(20);
    s.write_all(&partial).await.expect("write");
    s.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "a truncated frame was answered: {rest:?}");
    // An oversized frame closes the connection without an answer.
    let mut s = connect(lp).await;
    s.write_all(&(1u32 << 30).to_be_bytes())
        .await
        .expect("write");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("closed");
    assert!(rest.is_empty());

    let log = log(&server).await;
    assert_eq!(log.len(), 7, "{log:#?}");
    let (from_len, from_sep): (Vec<&Value>, Vec<&Value>) =
        log.iter().partition(|m| m["meta"]["uuid_org"] == HUB);
    assert_eq!((from_len.len(), from_sep.len()), (4, 3));
    assert!(from_sep.iter().all(|m| m["meta"]["uuid_org"] == ORG_SEP));
    for m in &from_len {
        assert_eq!(m["format"], "intelmq");
        assert_eq!(m["meta"]["tags"], json!(["intelmq:tcp"]));
        assert_eq!(m["meta"]["uuid"].as_str().map(|u| &u[14..15]), Some("4"));
    }
    // Payloads are the bot's events, unchanged.
    let first: Value = serde_json::from_slice(&LEN_SAMPLE[4..4 + first_len]).expect("JSON");
    assert_eq!(from_len[0]["payload"], first);
    assert_eq!(from_len[3]["payload"]["extra.t"], "split");
    assert!(server.terminate(), "clean shutdown");
}

/// Senders behave like the bot (one frame in flight, wait for `Ok`); the server is killed
/// with SIGKILL mid-stream, round after round. Every event answered `Ok` is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_answered_ok_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (lp, sp) = (free_port(), free_port());
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        let server = Server::start(&data, &opts(lp, sp));
        verify(&server, &acked).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..3 {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut s = connect(lp).await;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("r{round}w{w}i{i}");
                    let ev = json!({"source.ip": "198.51.100.1", "raw": "eA==", "extra.id": id});
                    if s.write_all(&frame(ev.to_string().as_bytes()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let mut ok = [0u8; 2];
                    match s.read_exact(&mut ok).await {
                        Ok(_) if &ok == b"Ok" => acked.lock().expect("lock").push(id),
                        _ => return,
                    }
                    i += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + 100 * round as u64)).await;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
    }
    let server = Server::start(&data, &opts(lp, sp));
    verify(&server, &acked).await;
    let n = acked.lock().expect("lock").len();
    assert!(n > ROUNDS * 10, "too little load to mean anything: {n}");
}

async fn verify(server: &Server, acked: &Arc<Mutex<Vec<String>>>) {
    let want = acked.lock().expect("lock").clone();
    let log = log(server).await;
    let ids: HashSet<&str> = log
        .iter()
        .filter_map(|m| m["payload"]["extra.id"].as_str())
        .collect();
    assert_eq!(ids.len(), log.len(), "an event was stored twice");
    for id in &want {
        assert!(
            ids.contains(id.as_str()),
            "{id} was answered Ok but is not in the log"
        );
    }
}
