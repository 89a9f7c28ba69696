//! HTTPS by default: a self-signed certificate is generated on first start, and both TLS 1.2
//! and TLS 1.3 clients connect.

use crate::common::{Opts, Server, ADMIN};

#[tokio::test]
async fn tls_12_and_13_with_generated_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &Opts {
            tls: true,
            ..Opts::default()
        },
    );
    assert_eq!(server.scheme, "https");
    let pem = std::fs::read(data.join("tls/cert.pem")).expect("certificate generated");
    let cert = reqwest::Certificate::from_pem(&pem).expect("pem");
    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let client = reqwest::Client::builder()
            .add_root_certificate(cert.clone())
            .min_tls_version(version)
            .max_tls_version(version)
            .build()
            .expect("client");
        // The certificate is valid for localhost and 127.0.0.1.
        for host in ["127.0.0.1".to_owned(), "localhost".to_owned()] {
            let url = format!("https://{host}:{}/w/tls?val=v", server.addr.port());
            let resp = client
                .get(url)
                .header("Authorization", ADMIN)
                .send()
                .await
                .expect("TLS request");
            assert_eq!(resp.status(), 200, "{version:?} via {host}");
        }
    }
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/i", server.addr))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("tls/key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn admin_key_is_generated_once_with_mode_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let run = || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sighthub"))
            .args([
                "serve",
                "--plain-http",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&data)
            .env_remove("SIGHTHUB_ADMIN_KEY")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // Wait until it listens (the key is printed before that), then stop the server. A
        // fixed sleep raced with a slow start on a loaded machine: the SIGTERM could arrive
        // before the signal handlers were installed.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on ") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("the server listens");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let out = child.wait_with_output().expect("output");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    let key = std::fs::read_to_string(data.join("admin.key")).expect("key file");
    assert!(
        first.contains(key.trim()),
        "the key is printed on first start"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("admin.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let second = run();
    assert!(!second.contains(key.trim()), "and never again");
    assert_eq!(
        std::fs::read_to_string(data.join("admin.key")).expect("key"),
        key
    );
}
