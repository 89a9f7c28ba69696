//! Starting and stopping a real `sighthub` process for tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The admin key every test server is started with.
pub const ADMIN: &str = "test-admin-key-0123456789";

/// A running server process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub scheme: &'static str,
}

/// How to start a server.
#[derive(Clone, Default)]
pub struct Opts {
    pub tls: bool,
    pub no_auth: bool,
    /// Extra TOML lines for a config file.
    pub config: Option<String>,
    /// Keep the exchange embedded even with `SIGHTHUB_TEST_NATS` set (an instance outside
    /// the shared exchange, e.g. a peer that receives a relay link).
    pub embedded_exchange: bool,
}

impl Server {
    /// Starts a server on `dir` (kept by the caller so restarts reuse it).
    pub fn start(dir: &Path, opts: &Opts) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sighthub"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg("127.0.0.1:0");
        if !opts.tls {
            cmd.arg("--plain-http");
        }
        if opts.no_auth {
            cmd.arg("--no-auth");
        }
        if let Some(cfg) = &on_clusters(dir, opts.config.clone(), opts.embedded_exchange) {
            let path = dir.with_extension("toml");
            std::fs::write(&path, cfg).expect("write config");
            cmd.arg("--config").arg(path);
        }
        let (child, url) = spawn_until_listening(cmd, false);
        let (scheme, addr) = url.split_once("://").expect("url");
        Server {
            child,
            addr: addr.parse().expect("addr"),
            scheme: if scheme == "https" { "https" } else { "http" },
        }
    }

    /// Full URL of a path (with query).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `config` for a server on `dir`, with the clusters' lines when the suites run on them
/// (`SIGHTHUB_TEST_REDIS`, `SIGHTHUB_TEST_NATS`; the exchange's unless `embedded_exchange`).
pub fn on_clusters(dir: &Path, config: Option<String>, embedded_exchange: bool) -> Option<String> {
    let mut config = if embedded_exchange {
        config
    } else {
        with_nats_exchange(dir, config)
    };
    if let Some(lines) = redis_storage_lines(dir) {
        config = Some(format!("{}\n{lines}", config.unwrap_or_default()));
    }
    config
}

/// The Redis Cluster the suites run on, when `SIGHTHUB_TEST_REDIS` names its nodes
/// (`host:port,...`): the `[storage]` lines of a server on `dir`, with a key prefix of its
/// own, kept in a file beside `dir` so a restart on the same data directory finds the same
/// sightings (as on the embedded backend).
pub fn redis_storage_lines(dir: &Path) -> Option<String> {
    let nodes = std::env::var("SIGHTHUB_TEST_REDIS").ok()?;
    let nodes: Vec<String> = nodes
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| format!("\"{n}\""))
        .collect();
    if nodes.is_empty() {
        return None;
    }
    let file = dir.with_extension("redis-prefix");
    let prefix = match std::fs::read_to_string(&file) {
        Ok(p) => p.trim().to_owned(),
        Err(_) => {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.write_u32(std::process::id());
            let p = format!("t{:016x}:", h.finish());
            std::fs::write(&file, &p).expect("write the redis prefix file");
            p
        }
    };
    Some(format!(
        "[storage]\nbackend = \"redis\"\n[storage.redis]\nnodes = [{}]\nprefix = \"{prefix}\"\n",
        nodes.join(", ")
    ))
}

/// Spawns `cmd` (a `sighthub serve` command) with the test admin key, and waits for its
/// `listening on <scheme>://<addr>` line; returns the process and that URL. With `echo`, the
/// server's log lines are copied to the test's stderr.
pub fn spawn_until_listening(mut cmd: Command, echo: bool) -> (Child, String) {
    cmd.env("SIGHTHUB_ADMIN_KEY", ADMIN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn sighthub");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    // The lines before `listening on`, to say why a server did not start.
    let early = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let kept = std::sync::Arc::clone(&early);
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.trim().to_owned());
                    sent = true;
                } else if let Ok(mut k) = kept.lock() {
                    k.push(line.clone());
                }
            }
            if echo {
                eprintln!("{line}");
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(url) => (child, url),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            let log = early.lock().map(|l| l.join("\n")).unwrap_or_default();
            panic!("server did not start ({status:?}); its log:\n{log}");
        }
    }
}

/// An HTTP client (plain HTTP; TLS tests build their own).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        // Below the server's keep-alive idle limit (`header_timeout_seconds`, 30 s): a
        // connection the server is closing is never picked for the next request.
        .pool_idle_timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A started server with its own temporary directory.
pub struct Fixture {
    pub server: Server,
    pub http: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    pub fn new() -> Fixture {
        Self::with(&Opts::default())
    }

    pub fn with(opts: &Opts) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(&dir.path().join("data"), opts);
        Fixture {
            server,
            http: client(),
            _dir: Some(dir),
        }
    }

    /// A server on a data directory the caller keeps (for restarts).
    pub fn on(data: &Path, opts: &Opts) -> Fixture {
        Fixture {
            server: Server::start(data, opts),
            http: client(),
            _dir: None,
        }
    }

    /// GET with the admin key; returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.get_as(Some(ADMIN), path).await
    }

    pub async fn get_as(&self, key: Option<&str>, path: &str) -> (u16, serde_json::Value) {
        send(self.http.get(self.server.url(path)), key).await
    }

    /// POST JSON with the admin key.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post_as(Some(ADMIN), path, body).await
    }

    pub async fn post_as(
        &self,
        key: Option<&str>,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let req = self
            .http
            .post(self.server.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        send(req, key).await
    }
}

/// Sends with the key (if any); returns the status and the JSON body (`Null` if not JSON).
async fn send(mut req: reqwest::RequestBuilder, key: Option<&str>) -> (u16, serde_json::Value) {
    if let Some(k) = key {
        req = req.header("Authorization", k);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A process's peak resident memory so far, in KiB (VmHWM of /proc/<pid>/status): what the
/// hostile-input tests bound while an attack runs.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A free TCP port on 127.0.0.1 (for a listener the server is told to bind, such as the
/// IntelMQ TCP listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Connects to the IntelMQ TCP listener on `port`, waiting up to 5 s for it to come up.
pub async fn connect(port: u16) -> tokio::net::TcpStream {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..100 {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the intelmq listener on {port} never came up");
}

/// One IntelMQ TCP frame: a 4-byte big-endian length, then the JSON.
pub fn frame(json: &[u8]) -> Vec<u8> {
    let mut out = (json.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(json);
    out
}

/// With `SIGHTHUB_TEST_NATS` set (scripts/clusters' JetStream cluster), `config` with the
/// exchange on it (`[exchange] backend = "nats"`), under a stream name of this data directory
/// alone: a random id kept beside it (`<dir>.nats-stream`) on the first start, so that a
/// restart on the same directory finds the same log, and servers started in parallel never
/// share one. Without the variable, `config` unchanged.
pub fn with_nats_exchange(dir: &Path, config: Option<String>) -> Option<String> {
    let Ok(servers) = std::env::var("SIGHTHUB_TEST_NATS") else {
        return config;
    };
    let servers = servers.trim();
    if servers.is_empty() {
        return config;
    }
    let id_file = dir.with_extension("nats-stream");
    let stream = match std::fs::read_to_string(&id_file) {
        Ok(s) => s.trim().to_owned(),
        Err(_) => {
            let s = format!("t{:032x}", rand_u128());
            std::fs::write(&id_file, &s).expect("write the stream id");
            s
        }
    };
    let list: Vec<String> = servers.split(',').map(|u| format!("{u:?}")).collect();
    let mut cfg = config.unwrap_or_default();
    let backend = "backend = \"nats\"\n";
    match cfg
        .find("\n[exchange]\n")
        .map(|i| i + 1)
        .or(cfg.starts_with("[exchange]\n").then_some(0))
    {
        Some(i) => cfg.insert_str(i + "[exchange]\n".len(), backend),
        None => cfg.push_str(&format!("\n[exchange]\n{backend}")),
    }
    cfg.push_str(&format!(
        "\n[exchange.nats]\nservers = [{}]\nstream = \"{stream}\"\n",
        list.join(", ")
    ));
    Some(cfg)
}

/// A random number (stream names of the tests).
fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut n = 0u128;
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        n = (n << 64) | u128::from(h.finish());
    }
    n
}

static UUID_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A random UUIDv4 (128 bits from two randomly keyed hashers, no extra dependency).
pub fn uuid4() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut b = [0u8; 16];
    for half in b.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(UUID_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Every uuid in a server's IEP04 log, in log order, read as the admin page by page.
pub async fn log_uuids(http: &reqwest::Client, r: &Server) -> Vec<String> {
    let mut cursor = String::new();
    let mut out = Vec::new();
    loop {
        let v: serde_json::Value = http
            .get(r.url(&format!("/iep04/messages?limit=5000&after={cursor}")))
            .header("Authorization", ADMIN)
            .send()
            .await
            .expect("read")
            .json()
            .await
            .expect("json");
        for m in v["messages"].as_array().expect("messages") {
            out.push(m["meta"]["uuid"].as_str().expect("uuid").to_owned());
        }
        cursor = v["cursor"].as_str().expect("cursor").to_owned();
        if v["more"] == false {
            return out;
        }
    }
}
