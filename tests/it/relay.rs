//! Peering (issue 5): real `sighthub` processes on loopback, wired with cycles (a ring, chords,
//! two hubs that relay to each other, instances that push to hubs and others that pull from
//! them), configured after start through a config rewrite + SIGHUP.
//!
//! Checked: every instance ends up with exactly the union of what was published, no log (so
//! no consumer) holds a uuid twice, and no message crossed any link twice: for each push link
//! A→B, the messages A put on the wire equal the messages of A's log whose path does not hold B
//! (the only ones it may send), and for each pull link, the messages pulled equal the hub's
//! log. Then one instance stops while the others keep publishing, restarts on the same
//! address, and catches up with nothing lost or resent.

use crate::common::ADMIN;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// One instance: its directory, config file, address, identity and process.
struct Node {
    dir: PathBuf,
    config: PathBuf,
    addr: SocketAddr,
    org: String,
    instance: String,
    child: Option<Child>,
}

fn spawn(dir: &Path, config: &Path, listen: &str) -> (Child, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sighthub"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg(listen)
        .arg("--plain-http")
        .arg("--config")
        .arg(config);
    let (child, url) =
        crate::common::spawn_until_listening(cmd, std::env::var_os("RELAY_TEST_LOG").is_some());
    let addr = url.split_once("://").expect("url").1.parse().expect("addr");
    (child, addr)
}

fn pid_signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// The static part of every node's config: identity, a relay key for every other node
/// (`peer-key-<j>`, speaking for node j's organisation), short retry delays.
fn base_config(i: usize, orgs: &[String]) -> String {
    let mut c = format!(
        "[exchange]\norg = \"{}\"\n\n[bridge]\nenabled = false\n\n[relay]\nretry_min_ms = 50\nretry_max_ms = 500\nbatch = 200\n\n",
        orgs[i]
    );
    for (j, org) in orgs.iter().enumerate() {
        if j != i {
            c += &format!(
                "[exchange.keys.\"peer-key-{j}\"]\norg = \"{org}\"\npublish = [\"*\"]\nread = [\"*\"]\ntlp_max = \"RED\"\nrelay = true\n\n"
            );
        }
    }
    c
}

/// The wiring.
#[derive(Clone, Default)]
struct Topology {
    /// Directed push links (from, to).
    push: Vec<(usize, usize)>,
    /// Pull links (puller, hub).
    pull: Vec<(usize, usize)>,
}

impl Topology {
    fn both(&mut self, a: usize, b: usize) {
        self.push.push((a, b));
        self.push.push((b, a));
    }
}

struct Net {
    nodes: Vec<Node>,
    topo: Topology,
    http: reqwest::Client,
    base: Vec<String>,
    _tmp: tempfile::TempDir,
    /// Every uuid published, by node.
    published: Vec<Vec<String>>,
}

impl Net {
    fn start(n: usize) -> Net {
        let tmp = tempfile::tempdir().expect("tempdir");
        let orgs: Vec<String> = (0..n).map(|_| uuid_v4()).collect();
        let base: Vec<String> = (0..n).map(|i| base_config(i, &orgs)).collect();
        let mut nodes = Vec::new();
        for (i, cfg) in base.iter().enumerate() {
            let dir = tmp.path().join(format!("n{i}"));
            let config = tmp.path().join(format!("n{i}.toml"));
            std::fs::write(&config, cfg).expect("config");
            let (child, addr) = spawn(&dir, &config, "127.0.0.1:0");
            nodes.push(Node {
                dir,
                config,
                addr,
                org: orgs[i].clone(),
                instance: String::new(),
                child: Some(child),
            });
        }
        Net {
            nodes,
            topo: Topology::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            base,
            _tmp: tmp,
            published: vec![Vec::new(); n],
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{}", self.nodes[i].addr, path)
    }

    async fn get(&self, i: usize, path: &str) -> Value {
        let r = self
            .http
            .get(self.url(i, path))
            .header("authorization", ADMIN)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "GET {path} on n{i}");
        r.json().await.expect("json")
    }

    async fn identify(&mut self) {
        for i in 0..self.nodes.len() {
            let s = self.get(i, "/iep04/status").await;
            assert_eq!(s["org"], self.nodes[i].org);
            self.nodes[i].instance = s["instance"].as_str().expect("instance").to_owned();
        }
    }

    /// Writes every node's config with its peers and pulls, and SIGHUPs it.
    fn wire(&mut self, topo: Topology) {
        self.topo = topo;
        for i in 0..self.nodes.len() {
            let mut c = self.base[i].clone();
            for &(a, b) in self.topo.push.iter().filter(|(a, _)| *a == i) {
                c += &format!(
                    "[[relay.peers]]\nname = \"n{b}\"\nurl = \"http://{}\"\nkey = \"peer-key-{a}\"\ntlp_max = \"RED\"\n",
                    self.nodes[b].addr
                );
                // Half the links name the peer's instance; the others ask for it.
                if (a + b) % 2 == 0 {
                    c += &format!("instance = \"{}\"\n", self.nodes[b].instance);
                }
                c += "\n";
            }
            for &(p, h) in self.topo.pull.iter().filter(|(p, _)| *p == i) {
                c += &format!(
                    "[[relay.pulls]]\nname = \"h{h}\"\nurl = \"http://{}\"\nkey = \"peer-key-{p}\"\nconsumer = \"n{p}\"\nwait_seconds = 5\n\n",
                    self.nodes[h].addr
                );
            }
            std::fs::write(&self.nodes[i].config, c).expect("config");
            pid_signal(self.nodes[i].child.as_ref().expect("running"), "-HUP");
        }
    }

    /// Publishes `count` new messages on node `i` (its own organisation).
    async fn publish(&mut self, i: usize, count: usize) {
        let mut batch = Vec::new();
        for k in 0..count {
            let uuid = uuid_v4();
            batch.push(json!({
                "format": "intelmq", "version": 1, "type": "event",
                "meta": {"uuid": uuid, "uuid_org": self.nodes[i].org, "tags": [format!("feed:n{i}")]},
                "payload": {"source.ip": format!("198.51.{}.{}", i % 250, k % 250),
                            "raw": "eA==", "tlp": "GREEN", "feed.name": format!("n{i}")}
            }));
            self.published[i].push(uuid);
        }
        let r = self
            .http
            .post(self.url(i, "/iep04/messages"))
            .header("authorization", ADMIN)
            .header("content-type", "application/json")
            .body(Value::Array(batch).to_string())
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["accepted"], count as u64, "{v}");
    }

    /// Node i's whole log, as a consumer reads it: (uuid, path + covered instances).
    async fn log(&self, i: usize) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let q = if after.is_empty() {
                "/iep04/messages?limit=1000".to_owned()
            } else {
                format!("/iep04/messages?limit=1000&after={after}")
            };
            let page = self.get(i, &q).await;
            let msgs = page["messages"].as_array().expect("messages");
            for m in msgs {
                // The instances this node must not send it to: those it crossed, and those
                // an earlier sender delivers it to.
                let path = ["sighthub:path", "sighthub:covered"]
                    .iter()
                    .filter_map(|k| m["meta"][*k].as_array())
                    .flatten()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect();
                out.push((m["meta"]["uuid"].as_str().expect("uuid").to_owned(), path));
            }
            after = page["cursor"].as_str().expect("cursor").to_owned();
            if msgs.is_empty() && page["more"] != true {
                return out;
            }
        }
    }

    fn state(&self, i: usize, kind: &str, name: &str) -> Value {
        let f = self.nodes[i]
            .dir
            .join("relay")
            .join(format!("{kind}-{name}.json"));
        match std::fs::read(&f) {
            Ok(b) => serde_json::from_slice(&b).expect("state json"),
            Err(_) => json!({}),
        }
    }

    /// Every check of the module docs; `Err` says which one failed.
    async fn check(&self, strict_wire: bool) -> Result<Stats, String> {
        let want: HashSet<&String> = self.published.iter().flatten().collect();
        let mut logs = Vec::new();
        for i in 0..self.nodes.len() {
            let log = self.log(i).await;
            let mut seen = HashSet::new();
            for (u, _) in &log {
                // A consumer reading the log never receives a uuid twice.
                assert!(seen.insert(u.clone()), "n{i}: {u} twice in the log");
            }
            let have: HashSet<&String> = log.iter().map(|(u, _)| u).collect();
            if have != want {
                return Err(format!(
                    "n{i} holds {} of {} (and {} unknown)",
                    have.intersection(&want).count(),
                    want.len(),
                    have.difference(&want).count()
                ));
            }
            logs.push(log);
        }
        let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        let mut stats = Stats::default();
        for &(a, b) in &self.topo.push {
            let st = self.state(a, "push", &format!("n{b}"));
            let target = &self.nodes[b].instance;
            let eligible = logs[a].iter().filter(|(_, p)| !p.contains(target)).count() as u64;
            if n(&st, "sent") != eligible {
                return Err(format!(
                    "n{a}→n{b}: sent {} of {eligible} eligible: {st}",
                    n(&st, "sent")
                ));
            }
            if n(&st, "accepted") + n(&st, "duplicate") != eligible || n(&st, "errors") != 0 {
                return Err(format!("n{a}→n{b}: answers {st}"));
            }
            if strict_wire && n(&st, "attempted") != n(&st, "sent") {
                return Err(format!("n{a}→n{b}: resent after a failure {st}"));
            }
            stats.wire += n(&st, "attempted");
            stats.sent += n(&st, "sent");
            stats.duplicate += n(&st, "duplicate");
        }
        for &(p, h) in &self.topo.pull {
            let st = self.state(p, "pull", &format!("h{h}"));
            let hub_log = logs[h].len() as u64;
            // Each page is read once and acknowledged once. After a crash a page may be read
            // again (its acknowledgement failed), or its acknowledgement taken with the answer
            // lost: then "read at least once, counted at most once" holds.
            let (sent, attempted) = (n(&st, "sent"), n(&st, "attempted"));
            let ok = if strict_wire {
                sent == hub_log && attempted == hub_log
            } else {
                sent <= hub_log && attempted >= hub_log
            };
            if !ok {
                return Err(format!("n{p}←h{h}: pulled {sent} of {hub_log}: {st}"));
            }
            if n(&st, "own") + n(&st, "accepted") + n(&st, "duplicate") != sent {
                return Err(format!("n{p}←h{h}: answers {st}"));
            }
            stats.wire += n(&st, "attempted");
            stats.sent += n(&st, "sent");
            stats.duplicate += n(&st, "duplicate");
        }
        stats.messages = want.len() as u64;
        Ok(stats)
    }

    /// Waits until [`Net::check`] passes, or fails with its last complaint.
    async fn converge(&self, strict_wire: bool, timeout: Duration) -> Stats {
        let start = Instant::now();
        let mut told = 0;
        loop {
            match self.check(strict_wire).await {
                Ok(s) => return s,
                Err(e) if start.elapsed() > timeout => panic!("not converged: {e}"),
                Err(e) => {
                    let secs = start.elapsed().as_secs();
                    if secs >= 10 && secs / 10 != told {
                        told = secs / 10;
                        eprintln!("still converging after {secs}s: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
            }
        }
    }

    fn stop(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("running");
        pid_signal(&child, "-TERM");
        let status = child.wait().expect("wait");
        assert!(status.success(), "n{i} did not stop cleanly: {status}");
    }

    fn kill9(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    fn restart(&mut self, i: usize) {
        let node = &self.nodes[i];
        let (child, addr) = spawn(&node.dir, &node.config, &node.addr.to_string());
        assert_eq!(addr, node.addr);
        self.nodes[i].child = Some(child);
    }

    /// Resident memory of node i, in KiB.
    fn rss_kib(&self, i: usize) -> u64 {
        let pid = self.nodes[i].child.as_ref().map_or(0, Child::id);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    /// Distinct messages.
    messages: u64,
    /// Messages put on the wire (all links).
    wire: u64,
    /// Messages answered (all links).
    sent: u64,
    /// Of those, already held by the receiver (came by another path).
    duplicate: u64,
}

pub(crate) fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    getrandom_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn getrandom_bytes(b: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(b))
        .expect("urandom");
}

/// Six instances: a ring 0-1-2-3 with the chord 0-2 (both ways), hubs 4 and 5 relaying to
/// each other, 1 and 3 pushing to hub 4, 0 pushing to hub 5, 2 pulling from hub 5 and 3
/// pulling from hub 4. Every instance publishes its own messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue5_six_instances_with_cycles_and_hubs_converge_exactly_once() {
    let mut net = Net::start(6);
    net.identify().await;
    let mut topo = Topology::default();
    for (a, b) in [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (4, 5)] {
        topo.both(a, b);
    }
    topo.push.extend([(1, 4), (3, 4), (0, 5)]);
    topo.pull.extend([(2, 5), (3, 4)]);
    // Some messages exist before the peers are configured (they are sent once wired).
    for i in 0..6 {
        net.publish(i, 5).await;
    }
    net.wire(topo);
    for round in 0..3 {
        for i in 0..6 {
            net.publish(i, 5 + round).await;
        }
    }
    let s = net.converge(true, Duration::from_secs(60)).await;
    assert_eq!(s.messages, 6 * (5 + 5 + 6 + 7));
    eprintln!("six instances: {s:?}");

    // One instance goes away; the others keep publishing; it comes back on its address.
    net.stop(2);
    for i in [0, 1, 3, 4, 5] {
        net.publish(i, 10).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for i in [0, 4] {
        net.publish(i, 10).await;
    }
    net.restart(2);
    net.publish(2, 10).await;
    // Answered batches are never resent (persisted cursors on both sides), whatever was cut
    // off by the stop itself.
    let s = net.converge(false, Duration::from_secs(60)).await;
    assert_eq!(s.messages, 6 * 23 + 5 * 10 + 20 + 10);
    eprintln!("after the restart: {s:?}");

    // A hub is killed (SIGKILL) while everyone publishes: nothing is lost. (A batch answered
    // just before the kill may be resent once; the receiver answers it `duplicate`.)
    let publishing = [0, 1, 2, 3, 5];
    for i in publishing {
        net.publish(i, 5).await;
    }
    net.kill9(4);
    for i in publishing {
        net.publish(i, 5).await;
    }
    net.restart(4);
    net.publish(4, 5).await;
    let s = net.converge(false, Duration::from_secs(60)).await;
    assert_eq!(s.messages, 218 + 10 * 5 + 5);
    eprintln!("after the kill: {s:?}");
}

/// A configuration rewrite + SIGHUP removes a peer without a restart: nothing more goes
/// there, and adding it back resumes from its persisted cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue5_peers_are_removed_and_added_back_by_sighup() {
    let mut net = Net::start(2);
    net.identify().await;
    let mut topo = Topology::default();
    topo.push.push((0, 1));
    net.wire(topo.clone());
    net.publish(0, 10).await;
    net.converge(true, Duration::from_secs(30)).await;
    net.wire(Topology::default());
    tokio::time::sleep(Duration::from_millis(500)).await;
    net.publish(0, 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        net.log(1).await.len(),
        10,
        "a removed peer still got messages"
    );
    net.wire(topo);
    let s = net.converge(true, Duration::from_secs(30)).await;
    assert_eq!((s.messages, s.sent, s.duplicate), (15, 15, 0));
}

/// The scale run (30 instances: a bidirectional ring, chords, three hubs pulled from).
/// `cargo test --release --test it relay::issue5_scale -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale run: 30 processes, run explicitly"]
async fn issue5_scale_thirty_instances() {
    const N: usize = 30;
    const PER: usize = 100;
    let mut net = Net::start(N);
    net.identify().await;
    let mut topo = Topology::default();
    for i in 0..N {
        topo.both(i, (i + 1) % N);
        if i % 3 == 0 {
            topo.both(i, (i + 10) % N);
        }
    }
    // Hubs 0, 10, 20: three instances each pull from one.
    for h in [0, 10, 20] {
        for k in [4, 5, 6] {
            topo.pull.push(((h + k) % N, h));
        }
    }
    net.wire(topo.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before: Vec<u64> = (0..N).map(|i| net.rss_kib(i)).collect();
    let t0 = Instant::now();
    for i in 0..N {
        net.publish(i, PER).await;
    }
    let s = net.converge(true, Duration::from_secs(300)).await;
    let took = t0.elapsed();
    let rss_after: Vec<u64> = (0..N).map(|i| net.rss_kib(i)).collect();
    let grew: i64 = rss_after
        .iter()
        .zip(&rss_before)
        .map(|(a, b)| *a as i64 - *b as i64)
        .sum();
    let per_uuid = grew as f64 * 1024.0 / (N as f64 * s.messages as f64);
    println!(
        "scale: {N} instances, {} push links, {} pull links, {} messages",
        topo.push.len(),
        topo.pull.len(),
        s.messages
    );
    println!(
        "scale: on the wire {} ({:.2} per message per instance reached, {:.2} per message), duplicates answered {}",
        s.wire,
        s.wire as f64 / (s.messages as f64 * (N - 1) as f64),
        s.wire as f64 / s.messages as f64,
        s.duplicate
    );
    println!("scale: converged in {took:.2?} (publishing included)");
    println!(
        "scale: resident memory grew {:.1} MiB in total, {per_uuid:.0} bytes per held uuid per instance",
        grew as f64 / 1024.0
    );
    assert_eq!(s.messages, (N * PER) as u64);
}
