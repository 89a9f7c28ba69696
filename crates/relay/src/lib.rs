//! # sighthub-relay
//!
//! Peering between sighthub instances (and hubs, which are instances too): the local IEP04
//! exchange log is **pushed** to configured peers, and hubs' logs are **pulled** into it
//! through a named consumer, without loops and without losing or repeating anything.
//!
//! - **Push** ([`push`]): each peer is a cursor into the local log, the exchange's named
//!   consumer `relay/push/<name>` of the local organisation, read through the exchange's
//!   [`sighthub_exchange::Follower`] and moved only after the peer answered
//!   `accepted`/`duplicate`/`error` for every message of a batch (ND-JSON `POST
//!   /iep04/messages`). A peer that is down, slow or restarting is retried with exponential
//!   backoff and gets everything, in log order, when it is back.
//! - **Pull** ([`pull`]): `GET {hub}/iep04/consumers/{consumer}/messages?wait=`, append to the
//!   local log, then `POST …/ack` with the page's cursor: the hub keeps the cursor.
//! - **One front end at a time** ([`sighthub_exchange::lease`]): front ends sharing one
//!   exchange (NATS JetStream) run each push link and each pull only while they hold its
//!   lease in the exchange (`relay/push/<name>`, `relay/pull/<name>`), renewed before each
//!   batch; the others stand by (`"held_elsewhere": true` in the link's status) and one of
//!   them continues the link from its shared cursor once the holder stopped or died.
//! - **Loops** ([`path`]): a relayed message keeps its `meta.uuid` and carries
//!   `meta["sighthub:path"]`, the instance uuids it crossed. A message is never sent to an
//!   instance on its path (which includes where it came from), and the receiving exchange
//!   answers `duplicate` for a uuid it holds. `max_hops` is a last resort only.
//!
//! It is **not** the exchange (it uses its public API: the [`sighthub_exchange::Follower`],
//! named consumers, `publish`) nor the HTTP server; the binary starts it
//! ([`Relay::start`]), reloads it on `SIGHUP` ([`Relay::reload`]) and stops it
//! ([`Relay::stop`]).
//!
//! ```
//! use sighthub_relay::{LocalOptions, Relay, RelayConfig};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = std::sync::Arc::new(sighthub_exchange::ExchangeStore::open(
//!     &dir.path().join("exchange"), Default::default(), None, None).unwrap());
//! let relay = Relay::new(RelayConfig::default(), store, dir.path(), LocalOptions::default()).unwrap();
//! relay.start().await;             // no peers configured: nothing runs
//! assert!(relay.status().unwrap().is_empty());
//! relay.stop().await;
//! # });
//! ```
//!
//! ## Layout
//! - [`config`]: the `[relay]` section (peers, pulls, retry and batch settings).
//! - [`health`]: why a link fails, in the log (bounded) and in its status.
//! - [`identity`]: instance identities (public-key fingerprints) and pinned peers.
//! - [`invite`]: `sighthub peer invite` / `join`: a one-line token and both sides' configuration.
//! - [`path`]: the `sighthub:path` meta field.
//! - [`push`]: one task per peer: scan, filter, send, advance.
//! - [`pull`]: one task per hub: long-poll, ingest, acknowledge.
//! - [`runtime`]: peers added at runtime by invitation (`peers.json`), joined to `[relay]`.
//! - [`state`]: the per-peer and per-pull counters (the cursors are the exchange's).
//! - [`error`]: the error type, tagged with its source and whether it is retryable.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod config;
pub mod error;
pub mod health;
pub mod identity;
pub mod invite;
pub mod path;
pub mod pull;
pub mod push;
pub mod runtime;
pub mod state;

pub use config::{PeerConfig, PullConfig, RelayConfig, Trust};
pub use error::{Error, Result};
pub use identity::Fingerprint;
pub use state::PeerState;

use sighthub_exchange::lease::{Lease, LeaseState, LeaseWatch};
use sighthub_exchange::ExchangeStore;
use sighthub_iep04::Tlp;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// What the relay needs to know of the local exchange's configuration, and of this front
/// end.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// TLP of messages that carry none (`[exchange] default_tlp`), for peers' `tlp_max`.
    pub default_tlp: Tlp,
    /// Longest line accepted when ingesting pulled messages (`[exchange] max_line_bytes`).
    pub max_line_bytes: usize,
    /// This front end's id, the holder of the links' leases (a new random one by default;
    /// the node gives its own, the same across restarts).
    pub holder: String,
    /// Where the runtime peers are kept ([`runtime`]): the shared documents of the front
    /// ends; `None`: files in the data directory.
    pub documents: Option<Arc<dyn sighthub_storage::docs::Documents>>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            default_tlp: Tlp::Amber,
            max_line_bytes: 1024 * 1024,
            holder: Uuid::new_v4().to_string(),
            documents: None,
        }
    }
}

impl LocalOptions {
    /// From the `[exchange]` section (with a new random holder id).
    pub fn from_exchange(cfg: &sighthub_exchange::ExchangeConfig) -> Self {
        Self {
            default_tlp: cfg.default_tlp,
            max_line_bytes: cfg.max_line_bytes,
            ..Self::default()
        }
    }

    /// With `holder` as this front end's id for the links' leases.
    pub fn with_holder(mut self, holder: String) -> Self {
        self.holder = holder;
        self
    }

    /// With the runtime peers in `docs` (shared by the front ends of a cluster).
    pub fn with_documents(mut self, docs: Arc<dyn sighthub_storage::docs::Documents>) -> Self {
        self.documents = Some(docs);
        self
    }
}

/// Settings shared by every task of one configuration generation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) batch: usize,
    pub(crate) max_hops: usize,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) timeout: Duration,
    pub(crate) covered: bool,
    /// Instances whose messages are not forwarded (`forward_received = false`).
    pub(crate) no_forward: Vec<Uuid>,
    /// Largest answer read from a peer or hub.
    pub(crate) max_answer_bytes: usize,
    /// Byte budget of one request to a peer.
    pub(crate) max_batch_bytes: usize,
}

impl Settings {
    fn of(cfg: &RelayConfig) -> Settings {
        let mut no_forward: Vec<Uuid> = cfg
            .peers
            .iter()
            .filter(|p| !p.forward_received)
            .filter_map(|p| p.instance)
            .chain(
                cfg.pulls
                    .iter()
                    .filter(|p| !p.forward_received)
                    .filter_map(|p| p.instance),
            )
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        no_forward.sort();
        Settings {
            batch: cfg.batch,
            max_hops: cfg.max_hops,
            retry_min: Duration::from_millis(cfg.retry_min_ms),
            retry_max: Duration::from_millis(cfg.retry_max_ms),
            timeout: Duration::from_secs(cfg.timeout_seconds),
            covered: cfg.covered,
            no_forward,
            max_answer_bytes: cfg.max_answer_bytes,
            max_batch_bytes: cfg.max_batch_bytes,
        }
    }
}

/// What every task shares: the local store and where state lives.
pub(crate) struct Shared {
    pub(crate) store: Arc<ExchangeStore>,
    pub(crate) dir: PathBuf,
    pub(crate) local: LocalOptions,
    /// Running push tasks whose peer instance is known, with what they send: what a copy
    /// may announce as covered. Entered and left by the tasks themselves.
    pub(crate) peers: std::sync::RwLock<HashMap<String, (Uuid, sighthub_exchange::Grants)>>,
    /// Where each link (`push:<name>`, `pull:<name>`) stands with its lease, kept by its
    /// task ([`Shared::lease`]).
    pub(crate) leases: std::sync::RwLock<HashMap<String, LeaseWatch>>,
}

impl Shared {
    /// The lease of the link `label` (`push:<name>` / `pull:<name>`) named `name` in the
    /// exchange, for this front end; its state is what [`Relay::leases`] reports.
    pub(crate) fn lease(self: &Arc<Self>, label: String, name: String) -> Lease {
        let lease = Lease::new(
            Arc::clone(&self.store) as Arc<dyn sighthub_exchange::lease::LeaseEngine>,
            name,
            self.local.holder.clone(),
        );
        self.leases
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(label, lease.watch());
        lease
    }
}

/// Which task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TaskKey {
    Push(String),
    Pull(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Spec {
    Push(PeerConfig),
    Pull(PullConfig),
}

struct Task {
    spec: Spec,
    settings: Arc<Settings>,
    /// The link fails now ([`health`]): a reload restarts it (its files may be there now).
    failing: Arc<std::sync::atomic::AtomicBool>,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

struct Running {
    cfg: RelayConfig,
    tasks: HashMap<TaskKey, Task>,
}

/// The relay: one task per peer and per pulled hub. See the crate docs.
pub struct Relay {
    shared: Arc<Shared>,
    running: tokio::sync::Mutex<Running>,
    /// Peers added at runtime ([`runtime`]); changed only under `running`'s lock.
    runtime: Arc<sighthub_storage::docs::Shared<runtime::PeersFile>>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Peers and pulls started (`push:<name>`, `pull:<name>`).
    pub started: Vec<String>,
    /// Stopped (removed).
    pub stopped: Vec<String>,
    /// Restarted (from their persisted cursor): with a changed configuration, or failing
    /// (a file that appeared since, a peer fixed since, is used at once).
    pub restarted: Vec<String>,
}

impl TaskKey {
    fn label(&self) -> String {
        match self {
            TaskKey::Push(n) => format!("push:{n}"),
            TaskKey::Pull(n) => format!("pull:{n}"),
        }
    }
}

fn specs(cfg: &RelayConfig) -> HashMap<TaskKey, Spec> {
    if !cfg.enabled {
        return HashMap::new();
    }
    cfg.peers
        .iter()
        .map(|p| (TaskKey::Push(p.name.clone()), Spec::Push(p.clone())))
        .chain(
            cfg.pulls
                .iter()
                .map(|p| (TaskKey::Pull(p.name.clone()), Spec::Pull(p.clone()))),
        )
        .collect()
}

impl Relay {
    /// A relay over the local exchange `store`, keeping its state in `<data_dir>/relay`.
    /// Nothing runs until [`Relay::start`].
    pub fn new(
        cfg: RelayConfig,
        store: Arc<ExchangeStore>,
        data_dir: &Path,
        local: LocalOptions,
    ) -> Result<Relay> {
        cfg.validate().map_err(Error::Config)?;
        let dir = data_dir.join("relay");
        std::fs::create_dir_all(&dir).map_err(|source| Error::State {
            path: dir.clone(),
            source,
        })?;
        let docs = local.documents.clone().unwrap_or_else(|| {
            Arc::new(sighthub_storage::docs::FileDocuments::new(data_dir))
                as Arc<dyn sighthub_storage::docs::Documents>
        });
        let runtime = Arc::new(runtime::open(docs)?);
        let relay = Relay {
            shared: Arc::new(Shared {
                store,
                dir,
                local,
                peers: std::sync::RwLock::new(HashMap::new()),
                leases: std::sync::RwLock::new(HashMap::new()),
            }),
            running: tokio::sync::Mutex::new(Running {
                cfg,
                tasks: HashMap::new(),
            }),
            runtime,
        };
        let file = relay
            .running
            .try_lock()
            .map_err(|_| Error::Config("relay busy".into()))?
            .cfg
            .clone();
        relay.effective(&file)?.validate().map_err(Error::Config)?;
        Ok(relay)
    }

    /// The configuration in force: `file` (the `[relay]` section) and the runtime peers whose
    /// names it does not use.
    pub fn effective(&self, file: &RelayConfig) -> Result<RelayConfig> {
        let rt = self.runtime.current().1;
        let mut cfg = file.clone();
        for p in rt.peers.iter() {
            if file.peers.iter().any(|f| f.name == p.name) {
                tracing::warn!(peer = %p.name, "a [relay.peers] entry of the file has the name of a peer added by invitation; the file's entry is used");
                continue;
            }
            cfg.peers.push(p.config().map_err(Error::Config)?);
        }
        Ok(cfg)
    }

    /// Whether `peer` could be added ([`Relay::add_peer`]): a valid link whose name is not a
    /// peer of the file (a runtime peer of that name is replaced).
    pub async fn check_peer(&self, peer: &runtime::RuntimePeer) -> Result<()> {
        let run = self.running.lock().await;
        self.check_locked(&run, peer).map(|_| ())
    }

    fn check_locked(
        &self,
        run: &Running,
        peer: &runtime::RuntimePeer,
    ) -> Result<Vec<runtime::RuntimePeer>> {
        Self::with_peer(&run.cfg, &self.runtime.current().1.peers, peer)
    }

    /// `peers` with `peer` added (or replacing the one of its name), when the result is a
    /// valid configuration beside the file's peers.
    fn with_peer(
        file: &RelayConfig,
        peers: &[runtime::RuntimePeer],
        peer: &runtime::RuntimePeer,
    ) -> Result<Vec<runtime::RuntimePeer>> {
        if file.peers.iter().any(|f| f.name == peer.name) {
            return Err(Error::Config(format!(
                "a peer named '{}' is already in the configuration file; choose another name",
                peer.name
            )));
        }
        let mut next: Vec<runtime::RuntimePeer> = peers
            .iter()
            .filter(|p| p.name != peer.name)
            .cloned()
            .collect();
        next.push(peer.clone());
        let mut probe = file.clone();
        for p in &next {
            probe.peers.push(p.config().map_err(Error::Config)?);
        }
        probe.validate().map_err(Error::Config)?;
        Ok(next)
    }

    /// Adds (or replaces) a runtime peer: written durably to the shared document (the other
    /// front ends pick it up at their next [`Relay::refresh_peers`]), then started at once.
    pub async fn add_peer(&self, peer: runtime::RuntimePeer) -> Result<Reloaded> {
        let mut run = self.running.lock().await;
        self.check_locked(&run, &peer)?;
        // The document is changed from its latest version (another front end may have added
        // a peer since this one last read it); on a cluster, a round trip.
        let (doc, file, p) = (Arc::clone(&self.runtime), run.cfg.clone(), peer.clone());
        tokio::task::spawn_blocking(move || {
            doc.edit(|f: &mut runtime::PeersFile| {
                f.version = 1;
                f.peers = Self::with_peer(&file, &f.peers, &p)?;
                Ok::<_, Error>(())
            })
        })
        .await
        .map_err(|e| Error::Config(format!("adding the peer stopped: {e}")))??;
        let file = run.cfg.clone();
        tracing::info!(peer = %peer.name, url = %peer.url, "relay: peer added by invitation");
        self.apply(&mut run, file).await
    }

    /// Picks up the runtime peers other front ends added, and starts their links (each
    /// runs on the front end that holds its lease); `true` when they changed. Front ends
    /// that share their documents call it every [`sighthub_storage::docs::REFRESH`].
    pub async fn refresh_peers(&self) -> Result<bool> {
        let doc = Arc::clone(&self.runtime);
        if !tokio::task::spawn_blocking(move || doc.refresh())
            .await
            .map_err(|e| Error::Config(format!("reading the runtime peers stopped: {e}")))??
        {
            return Ok(false);
        }
        let mut run = self.running.lock().await;
        let file = run.cfg.clone();
        self.apply(&mut run, file).await?;
        Ok(true)
    }

    /// Whether other front ends share the runtime peers.
    pub fn shares_peers(&self) -> bool {
        self.runtime.is_shared()
    }

    /// Starts the tasks of the current configuration (call once, inside the runtime).
    pub async fn start(&self) {
        let mut run = self.running.lock().await;
        let cfg = match self.effective(&run.cfg) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "relay: runtime peers not started");
                run.cfg.clone()
            }
        };
        let settings = Arc::new(Settings::of(&cfg));
        for (key, spec) in specs(&cfg) {
            if let std::collections::hash_map::Entry::Vacant(slot) = run.tasks.entry(key) {
                slot.insert(self.spawn(spec, Arc::clone(&settings)));
            }
        }
    }

    /// Applies a new configuration without a restart: removed peers stop, added ones start,
    /// changed ones and failing ones restart from their persisted cursor. A stopping task finishes the
    /// request it is making first, so a cursor is never used by two tasks.
    pub async fn reload(&self, cfg: RelayConfig) -> Result<Reloaded> {
        let mut run = self.running.lock().await;
        self.apply(&mut run, cfg).await
    }

    /// Makes `file` (plus the runtime peers) the running configuration.
    async fn apply(&self, run: &mut Running, file: RelayConfig) -> Result<Reloaded> {
        let cfg = self.effective(&file)?;
        cfg.validate().map_err(Error::Config)?;
        let settings = Arc::new(Settings::of(&cfg));
        let mut want = specs(&cfg);
        let mut out = Reloaded::default();
        let keys: Vec<TaskKey> = run.tasks.keys().cloned().collect();
        for key in keys {
            let keep = match (want.get(&key), run.tasks.get(&key)) {
                (Some(spec), Some(t)) => {
                    *spec == t.spec
                        && *settings == *t.settings
                        && !t.failing.load(std::sync::atomic::Ordering::Relaxed)
                }
                _ => false,
            };
            if keep {
                want.remove(&key);
                continue;
            }
            if let Some(t) = run.tasks.remove(&key) {
                let _ = t.stop.send(true);
                let _ = t.handle.await;
            }
            match want.remove(&key) {
                Some(spec) => {
                    let t = self.spawn(spec, Arc::clone(&settings));
                    run.tasks.insert(key.clone(), t);
                    out.restarted.push(key.label());
                }
                None => out.stopped.push(key.label()),
            }
        }
        for (key, spec) in want {
            let t = self.spawn(spec, Arc::clone(&settings));
            out.started.push(key.label());
            run.tasks.insert(key, t);
        }
        run.cfg = file;
        out.started.sort();
        out.stopped.sort();
        out.restarted.sort();
        tracing::info!(started = ?out.started, stopped = ?out.stopped, restarted = ?out.restarted, "relay: configuration reloaded");
        Ok(out)
    }

    /// Stops every task, each after the request it is making (shutdown).
    pub async fn stop(&self) {
        let mut run = self.running.lock().await;
        let tasks: Vec<Task> = run.tasks.drain().map(|(_, t)| t).collect();
        for t in &tasks {
            let _ = t.stop.send(true);
        }
        for t in tasks {
            let _ = t.handle.await;
        }
    }

    /// The persisted state of every configured peer and pull (`push:<name>` /
    /// `pull:<name>`): the counters of the state files, and a push's cursor from its named
    /// consumer.
    pub fn status(&self) -> Result<Vec<(String, PeerState)>> {
        let cfg = match self.running.try_lock() {
            Ok(r) => self.effective(&r.cfg)?,
            Err(_) => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        let store = &self.shared.store;
        for p in &cfg.peers {
            let f = state::file(&self.shared.dir, "push", &p.name);
            let mut st = state::load(&f)?;
            st.epoch = store.epoch();
            st.cursor = store
                .consumer(store.org(), &push::consumer_name(&p.name))?
                .map_or(0, |c| c.acked);
            out.push((format!("push:{}", p.name), st));
        }
        for p in &cfg.pulls {
            let f = state::file(&self.shared.dir, "pull", &p.name);
            out.push((format!("pull:{}", p.name), state::load(&f)?));
        }
        Ok(out)
    }

    /// Where each running link (`push:<name>` / `pull:<name>`) stands with its lease:
    /// `Standby` while another front end of a shared exchange runs it. A link whose task
    /// has not asked yet is `Asking`.
    pub fn leases(&self) -> HashMap<String, LeaseState> {
        self.shared
            .leases
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, w)| (k.clone(), w.state()))
            .collect()
    }

    fn spawn(&self, spec: Spec, settings: Arc<Settings>) -> Task {
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::clone(&self.shared);
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handle = match spec.clone() {
            Spec::Push(p) => {
                let health = health::Health::new(format!("push:{}", p.name), Arc::clone(&failing));
                tokio::spawn(push::run(shared, Arc::clone(&settings), p, health, stopped))
            }
            Spec::Pull(p) => {
                let health = health::Health::new(format!("pull:{}", p.name), Arc::clone(&failing));
                tokio::spawn(pull::run(shared, Arc::clone(&settings), p, health, stopped))
            }
        };
        Task {
            spec,
            settings,
            failing,
            stop,
            handle,
        }
    }
}

/// Exponential backoff with jitter between `min` and `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The next delay (doubling, ±25 % jitter, capped).
    pub(crate) fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let mut b = [0u8; 2];
        let r = if getrandom::fill(&mut b).is_ok() {
            u16::from_le_bytes(b)
        } else {
            32768
        };
        // 0.75 .. 1.25 of base.
        let factor = 0.75 + f64::from(r) / f64::from(u16::MAX) * 0.5;
        base.mul_f64(factor).min(self.max)
    }

    /// After a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    /// Jump to the longest delay (a failure retrying cannot fix soon).
    pub(crate) fn give_up_soon(&mut self) {
        self.next = self.max;
    }
}

/// Sleeps `d` unless stopped first; `false` when stopped.
pub(crate) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// A client for one peer or hub, checking its certificate as `trust` says. A CA file that
/// cannot be read is [`Error::Unavailable`]: the task retries (the file may appear later).
pub(crate) fn client(timeout: Duration, trust: Trust<'_>) -> Result<reqwest::Client> {
    let b = reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60));
    let b = match trust {
        Trust::SystemRoots => b,
        Trust::Insecure => b.danger_accept_invalid_certs(true),
        Trust::Ca(ca) => {
            let pem = std::fs::read(ca).map_err(|source| Error::Unavailable {
                path: ca.to_owned(),
                source,
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| Error::Config(format!("{}: {e}", ca.display())))?;
            b.add_root_certificate(cert)
        }
        Trust::Pinned(f) => b.use_preconfigured_tls(
            identity::pinned_tls(f).map_err(|e| Error::Config(format!("TLS: {e}")))?,
        ),
    };
    b.build()
        .map_err(|e| Error::Config(format!("HTTP client: {e}")))
}

/// The client of a link, built again after a backoff while it cannot be (a `ca` file that
/// does not exist yet: said by `health`, and kept in the link's status); `None` when stopped.
pub(crate) async fn client_when_ready(
    settings: &Settings,
    trust: Trust<'_>,
    health: &mut health::Health,
    st: &mut PeerState,
    file: &Path,
    stop: &mut watch::Receiver<bool>,
) -> Option<reqwest::Client> {
    let mut backoff = Backoff::new(settings.retry_min, settings.retry_max);
    loop {
        match client(settings.timeout, trust) {
            Ok(c) => return Some(c),
            Err(e) => {
                health.failed(&e, "link not started", st, file);
                if !sleep_or_stop(backoff.next(), stop).await {
                    return None;
                }
            }
        }
    }
}

/// `base` with path segments appended (each percent-encoded).
pub(crate) fn endpoint(base: &str, segments: &[&str]) -> Result<reqwest::Url> {
    let mut url =
        reqwest::Url::parse(base).map_err(|e| Error::Config(format!("url '{base}': {e}")))?;
    url.path_segments_mut()
        .map_err(|()| Error::Config(format!("url '{base}' cannot have a path")))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Asks an instance for its uuid (`GET /iep04/status`).
pub(crate) async fn fetch_instance(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    name: &str,
    timeout: Duration,
) -> Result<Uuid> {
    let url = endpoint(base, &["iep04", "status"])?;
    let req = http.get(url).header("authorization", key).timeout(timeout);
    let body = call(req, name, false, 64 * 1024).await?;
    body.get("instance")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| Error::Answer {
            peer: name.to_owned(),
            reason: "status without an instance uuid".into(),
        })
}

/// Sends one request to the peer or hub `name` and reads its answer: the JSON body of a 2xx
/// (or of a 400 that still carries per-item results, when `allow_400`), else an error. A
/// failure to send is [`Error::Network`]; at most `max` bytes are read ([`read_bounded`]).
/// Every request of the relay to another instance goes through it.
pub(crate) async fn call(
    req: reqwest::RequestBuilder,
    name: &str,
    allow_400: bool,
    max: usize,
) -> Result<serde_json::Value> {
    let resp = req.send().await.map_err(|source| Error::Network {
        peer: name.to_owned(),
        source,
    })?;
    let status = resp.status().as_u16();
    let bytes = read_bounded(resp, name, max).await?;
    answer_of(status, &bytes, name, allow_400)
}

/// A peer's answer from its status and body: the JSON of a 2xx (or, with `allow_400`, of a
/// 400 with per-item `errors`), else [`Error::Status`] (`pub` for the fuzz targets).
pub fn answer_of(
    status: u16,
    bytes: &[u8],
    name: &str,
    allow_400: bool,
) -> Result<serde_json::Value> {
    let json: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    match json {
        Some(v) if (200..300).contains(&status) => Ok(v),
        Some(v) if allow_400 && status == 400 && v.get("errors").is_some() => Ok(v),
        _ => Err(Error::Status {
            peer: name.to_owned(),
            status,
            body: String::from_utf8_lossy(bytes.get(..bytes.len().min(300)).unwrap_or_default())
                .into_owned(),
        }),
    }
}

/// The body of an answer, read chunk by chunk and refused past `max` bytes (a declared
/// `Content-Length` over it is refused before reading): a peer cannot make this instance
/// buffer an unbounded answer.
pub(crate) async fn read_bounded(
    mut resp: reqwest::Response,
    name: &str,
    max: usize,
) -> Result<Vec<u8>> {
    let too_long = || Error::TooLong {
        peer: name.to_owned(),
        max,
    };
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX))
    {
        return Err(too_long());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|source| Error::Network {
        peer: name.to_owned(),
        source,
    })? {
        if out.len().saturating_add(chunk.len()) > max {
            return Err(too_long());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod test;
