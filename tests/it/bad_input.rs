//! Bad input gets a clear error and status, never a panic, and never loses stored data.

use crate::common::{Fixture, Opts, ADMIN};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn raw(f: &Fixture, request: &[u8]) -> String {
    let mut s = TcpStream::connect(f.server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_bodies_and_stored_data_survives() {
    let f = Fixture::with(&Opts {
        config: Some("max_body_bytes = 4096\n".into()),
        ..Opts::default()
    });
    f.get("/w/keep?val=v").await;
    let post = |body: &'static [u8], ct: Option<&'static str>| {
        let mut req = f
            .http
            .post(f.server.url("/wb"))
            .header("Authorization", ADMIN)
            .body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req
    };
    for (body, ct, needle) in [
        (
            &b"{not json"[..],
            Some("application/json"),
            "Invalid JSON body: Json deserialize error:",
        ),
        (b"", Some("application/json"), "Invalid JSON body"),
        (
            b"{\"items\":[{\"namespace\":\"a\",\"value\":\"\xff\"}]}",
            Some("application/json"),
            "invalid unicode",
        ),
        (
            b"{\"items\":[{\"namespace\":\"a\"}]}",
            Some("application/json"),
            "missing field `value`",
        ),
        (
            b"{\"items\":[{\"namespace\":\"a\",\"value\":\"v\",\"timestamp\":\"x\"}]}",
            Some("application/json"),
            "invalid type",
        ),
        (
            b"{\"items\":[{\"namespace\":\"a\",\"value\":\"v\",\"ttl\":-1}]}",
            Some("application/json"),
            "invalid value",
        ),
        (b"{\"items\":[]}", None, "Content type error"),
        (b"{\"items\":[]}", Some("text/plain"), "Content type error"),
    ] {
        let resp = post(body, ct).send().await.expect("send");
        assert_eq!(resp.status(), 400, "{body:?}");
        let text = resp.text().await.expect("text");
        assert!(text.contains(needle), "{body:?}: {text}");
        serde_json::from_str::<serde_json::Value>(&text).expect("error is JSON");
    }
    let big = vec![b'x'; 5000];
    let resp = f
        .http
        .post(f.server.url("/wb"))
        .header("Authorization", ADMIN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 413);
    // Chunked, no Content-Length: still refused by the limit while streaming.
    let mut req = b"POST /rb HTTP/1.1\r\nHost: x\r\nAuthorization: test-admin-key-0123456789\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"800\r\n");
        req.extend(std::iter::repeat_n(b' ', 0x800));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    assert!(raw(&f, &req).starts_with("HTTP/1.1 413"));
    // Truncated body: the connection closes before Content-Length is reached.
    let answer = raw(
        &f,
        b"POST /wb HTTP/1.1\r\nHost: x\r\nAuthorization: test-admin-key-0123456789\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"items\":[",
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    // Garbage request line.
    let answer = raw(&f, b"\x00\x01\x02 garbage\r\n\r\n");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    // Invalid UTF-8 in path and query.
    assert_eq!(f.get("/w/%ff%fe?val=v").await.0, 400);
    assert_eq!(f.get("/w/a?val=%ff").await.0, 400);
    assert_eq!(f.get("/w/a?val=v&timestamp=1e5").await.0, 400);
    assert_eq!(f.get("/w/a?val=v&ttl=99999999999999999999999").await.0, 400);
    assert_eq!(f.get("/w/a%00b?val=v").await.0, 400);
    assert_eq!(
        f.get(&format!("/w/{}?val=v", "n".repeat(2000))).await.0,
        400
    );
    // The server still answers and nothing stored was lost.
    let (s, r) = f.get("/r/keep?val=v&noshadow").await;
    assert_eq!((s, r["count"].clone()), (200, json!(1)));
    assert_eq!(f.get("/w/keep?val=v").await.1["count"], 2);
}
