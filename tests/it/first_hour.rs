//! The first hour of a new user (issue 15, point 5): each rough edge met on a fresh start,
//! seen as the user sees it — the real binary's exit, stdout and stderr, or the server's
//! answer.

use crate::common::{self, spawn_until_listening, Fixture, ADMIN};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What a command that is expected to end by itself printed.
struct Ended {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to its end (bounded: killed after 60 s, which fails the test).
fn run(mut cmd: Command) -> Ended {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .expect("spawn sighthub");
    for _ in 0..600 {
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            return Ended {
                success: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!("the command did not end: {out:?}");
}

fn sighthub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sighthub"))
}

/// `serve` on `data`, plain HTTP, listening on `listen`, with the test admin key.
fn serve(data: &Path, listen: &str) -> Command {
    let mut cmd = sighthub();
    cmd.args(["serve", "--plain-http", "--listen", listen])
        .arg("--data-dir")
        .arg(data)
        .env("SIGHTHUB_ADMIN_KEY", ADMIN);
    cmd
}

#[test]
fn the_same_data_directory_twice_names_the_first_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let first = common::Server::start(&data, &common::Opts::default());
    let second = run(serve(&data, "127.0.0.1:0"));
    assert!(!second.success, "{}", second.stderr);
    let expected = format!(
        "data directory {} is in use by another sighthub process (pid {})",
        data.display(),
        first.child.id()
    );
    assert!(second.stderr.contains(&expected), "{}", second.stderr);
    assert!(second.stderr.contains("--data-dir"), "{}", second.stderr);
    assert!(!second.stderr.contains("Locked"), "{}", second.stderr);
    assert!(first.terminate(), "the first server stops cleanly");
}

#[test]
fn a_port_in_use_is_found_before_a_key_is_generated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    let mut cmd = serve(&data, &addr);
    cmd.env_remove("SIGHTHUB_ADMIN_KEY");
    let out = run(cmd);
    assert!(!out.success, "{}", out.stderr);
    assert!(
        !out.stdout.contains("admin API key"),
        "a key was printed for a server that did not start: {}",
        out.stdout
    );
    assert!(!data.join("admin.key").exists(), "a key was generated");
    assert!(
        out.stderr.contains(&format!(
            "cannot listen on {addr}: {addr}: the address is in use"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--listen"), "{}", out.stderr);
}

#[test]
fn listen_accepts_a_host_name_and_says_what_it_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, url) = spawn_until_listening(serve(&dir.path().join("data"), "localhost:0"), false);
    let server = common::Server {
        child,
        addr: url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .expect("an address"),
        scheme: "http",
    };
    assert!(server.addr.ip().is_loopback(), "{url}");
    assert_ne!(server.addr.port(), 0);
    assert!(server.terminate());
}

#[test]
fn a_configuration_error_is_printed_once_with_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("sighthub.toml");
    std::fs::write(&cfg, "listen = 5\n").expect("write");
    let mut cmd = serve(&dir.path().join("data"), "127.0.0.1:0");
    cmd.arg("--config").arg(&cfg);
    let out = run(cmd);
    assert!(!out.success);
    assert_eq!(
        out.stderr.matches("expected socket address").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "configuration file {} is not valid",
            cfg.display()
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("fix it there"), "{}", out.stderr);
}

#[test]
fn rebuild_needs_no_configuration_file_and_names_a_missing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cmd = sighthub();
    cmd.args(["rebuild-sightings", "--config", "sighthub.toml"])
        .arg("--data-dir")
        .arg(&data)
        .current_dir(dir.path());
    let out = run(cmd);
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("configuration file sighthub.toml does not exist")
            && out.stderr.contains("leave out --config"),
        "{}",
        out.stderr
    );
    let mut cmd = sighthub();
    cmd.arg("rebuild-sightings").arg("--data-dir").arg(&data);
    let out = run(cmd);
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains("done: 0 sightings recorded"),
        "{}",
        out.stderr
    );
}

#[test]
fn serve_help_shows_defaults_and_environment() {
    let mut cmd = sighthub();
    cmd.args(["serve", "--help"]);
    let out = run(cmd);
    assert!(out.success);
    for expected in [
        "[default: 127.0.0.1:9999]",
        "[default: sighthub-data]",
        "SIGHTHUB_ADMIN_KEY",
        "RUST_LOG",
        "HOST:PORT",
    ] {
        assert!(out.stdout.contains(expected), "{expected}: {}", out.stdout);
    }
}

#[tokio::test]
async fn a_bearer_key_works_on_the_sighting_api() {
    let fx = Fixture::new();
    let bearer = format!("Bearer {ADMIN}");
    let (status, body) = fx.get_as(Some(&bearer), "/w/first/hour?val=x").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = fx.get_as(Some(&bearer), "/r/first/hour?val=x").await;
    assert_eq!(
        (status, &body["count"]),
        (200, &serde_json::json!(1)),
        "{body}"
    );
}

#[tokio::test]
async fn a_body_cut_in_a_json_value_says_so() {
    let fx = Fixture::new();
    let resp = fx
        .http
        .post(fx.server.url("/iep04/messages"))
        .header("Authorization", ADMIN)
        .header("content-type", "application/json")
        .body("{\"uuid")
        .send()
        .await
        .expect("request");
    let body: serde_json::Value = resp.json().await.expect("json");
    let error = body["results"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("line 1: the body ends in the middle of a JSON value (6 bytes"),
        "{body}"
    );
}

#[tokio::test]
async fn the_help_page_lists_every_route() {
    let fx = Fixture::new();
    let text = fx
        .http
        .get(fx.server.url("/"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    for route in [
        "/_api/who",
        "/_api/latest",
        "/iep04/status",
        "/iep04/consumers/{name}/ack",
    ] {
        assert!(text.contains(route), "{route} missing: {text}");
    }
}

/// A read-only data directory: owned by the user who runs the server, mode 0500. As root
/// (who writes anywhere) the server is run as `nobody` on a directory `nobody` owns.
#[test]
#[cfg(unix)]
fn a_read_only_data_directory_is_called_a_data_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let as_root = run({
        let mut id = Command::new("id");
        id.arg("-u");
        id
    })
    .stdout
    .trim()
        == "0";
    let mut cmd = if as_root {
        let chmod = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        chmod(dir.path(), 0o755).expect("chmod");
        let owned = Command::new("chown")
            .arg("nobody:nogroup")
            .arg(&data)
            .status()
            .expect("chown");
        assert!(owned.success());
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_sighthub"));
        cmd
    } else {
        sighthub()
    };
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    cmd.args(["serve", "--plain-http", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("SIGHTHUB_ADMIN_KEY");
    let out = run(cmd);
    assert!(!out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "data directory {} is not writable by this user",
            data.display()
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--data-dir"), "{}", out.stderr);
    assert!(!out.stderr.contains("key file"), "{}", out.stderr);
    assert!(!out.stdout.contains("admin API key"), "{}", out.stdout);
}

/// A start that fails after the admin key was generated (here: a configured TLS pair that is
/// not there; then an IntelMQ listener on an address in use, found once the server runs)
/// neither prints the key nor leaves it behind unseen: the next start generates one and shows
/// it.
#[test]
fn a_start_that_fails_later_leaves_no_unseen_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    for (name, config, plain) in [
        ("tls", "[tls]\ncert = \"absent.pem\"\nkey = \"absent.pem\"\n".to_owned(), false),
        (
            "intelmq",
            format!(
                "[intelmq]\nenabled = true\n\n[[intelmq.tcp_in]]\nname = \"t\"\nlisten = \"127.0.0.1:{port}\"\n"
            ),
            true,
        ),
    ] {
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, config).expect("write");
        let mut cmd = sighthub();
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&cfg)
            .env_remove("SIGHTHUB_ADMIN_KEY");
        if plain {
            cmd.arg("--plain-http");
        }
        let out = run(cmd);
        assert!(!out.success, "{name}: {}", out.stderr);
        assert!(!out.stdout.contains("admin API key"), "{name}: {}", out.stdout);
        assert!(
            !data.join("admin.key").exists(),
            "{name}: a key nobody saw was left behind"
        );
    }
}
