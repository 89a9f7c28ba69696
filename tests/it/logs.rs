//! Logs and progress for operators (issue 16 item 5): `--log-format json` writes one JSON
//! object per line, and a long command without a terminal prints plain progress lines.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn issue16_json_logs_are_one_object_per_line_and_rebuild_prints_plain_progress() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("d");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sighthub"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--plain-http",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env("SIGHTHUB_ADMIN_KEY", crate::common::ADMIN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("line");
        let listening = line.contains("listening on");
        lines.push(line);
        if listening || Instant::now() > end {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.len() >= 2, "{lines:?}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    let last: serde_json::Value =
        serde_json::from_str(lines.last().expect("a line")).expect("json");
    assert!(
        last["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening on http://127.0.0.1:")),
        "{last}"
    );

    // Without a terminal (stderr is a pipe here), progress is a plain line.
    let out = Command::new(env!("CARGO_BIN_EXE_sighthub"))
        .args(["rebuild-sightings", "--data-dir"])
        .arg(&data)
        .output()
        .expect("rebuild");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("rebuild-sightings: ") && l.contains("log records in")),
        "{err}"
    );
    assert!(
        !err.contains('\r'),
        "no bar drawing without a terminal: {err:?}"
    );
}
