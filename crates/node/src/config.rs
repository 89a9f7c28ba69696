//! The server's configuration: one TOML file, every field optional.
//!
//! Parse → [`Config::validate`] → CLI overrides (in the binary). A documented sample lives in
//! `docs/sighthub.example.toml`; the unit test below parses it, so it cannot drift.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `sighthub serve` can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the database, the TLS certificate and the admin key live.
    pub data_dir: PathBuf,
    /// Serve plain HTTP instead of HTTPS (explicit opt-in).
    pub plain_http: bool,
    /// Check API keys (on by default; `--no-auth` turns it off).
    pub authenticate: bool,
    /// Largest request body accepted, in bytes (larger → 413).
    pub max_body_bytes: usize,
    /// Most concurrent connections; more wait for a slot.
    pub max_connections: usize,
    /// Most concurrent connections from one client address; more are closed at once, so one
    /// address cannot hold every slot.
    pub max_connections_per_address: usize,
    /// Seconds a client may take for the TLS handshake and each request head; also how long
    /// an idle keep-alive connection is kept.
    pub header_timeout_seconds: u64,
    /// Seconds a client may take to send a whole request body (408, connection closed).
    pub body_timeout_seconds: u64,
    /// Bounds on what one request may ask for or add.
    pub limits: sighthub_api::limits::LimitsConfig,
    /// TLS certificate and key (PEM). Absent: a self-signed pair in `data_dir/tls`.
    pub tls: TlsConfig,
    /// API keys and their grants, SightingDB's syntax: `"key" = "rw:feeds/misp, r"` (a bad
    /// grant is refused when the file is read). The entry `anonymous` is not a key: the read
    /// grants of requests without a key (`anonymous = "r:misp"`, for MISP's lookups).
    pub acl: BTreeMap<String, sighthub_api::auth::KeyGrants>,
    /// Per-namespace settings: `[namespaces."org/ipv4"] value_format = "SHA256"`.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Shadow sightings.
    pub shadow: ShadowConfig,
    /// Hourly stats.
    pub stats: StatsConfig,
    /// Embedded storage.
    pub storage: StorageConfig,
    /// Capacity of the `/_api/latest` ring.
    pub latest_writes: usize,
    /// Seconds between background sweeps of expired values (reads also sweep what is due).
    pub sweep_interval: u64,
    /// The IEP04 exchange (`/iep04/`): identity, limits, retention, keys and feeds.
    pub exchange: sighthub_exchange::ExchangeConfig,
    /// How events accepted by the exchange become sightings.
    pub bridge: sighthub_bridge::BridgeConfig,
    /// Peering: peers the exchange log is pushed to, hubs it pulls from (re-read on SIGHUP).
    pub relay: sighthub_relay::RelayConfig,
    /// IntelMQ transports (TCP in, collectors out, Redis queues in and out).
    pub intelmq: sighthub_intelmq::IntelmqConfig,
    /// MISP's ZeroMQ publisher as a source of sightings (`docs/MISP.md`).
    pub zmq: sighthub_misp::ZmqConfig,
    /// The DNS blocklist front end (`[dns] listen` starts it; `[dns.zones]` maps labels to
    /// namespaces).
    pub dns: sighthub_dns::DnsConfig,
    /// `GET /metrics`: always on the main listener with the admin key; also without a key
    /// on `listen`, when set.
    pub metrics: MetricsConfig,
}

/// The `[metrics]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A second, plain-HTTP listener serving only `GET /metrics`, without a key: bind it to
    /// a monitoring network or loopback (for example `127.0.0.1:9464`).
    pub listen: Option<SocketAddr>,
}

/// TLS files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain (PEM), relative to the config file.
    pub cert: Option<PathBuf>,
    /// Private key (PEM), relative to the config file.
    pub key: Option<PathBuf>,
    /// The DNS names and IP addresses the generated certificate carries (when `cert` and
    /// `key` are not set): the names peers reach this instance by. The first one is in its
    /// subject. Changing them renews the certificate with the same key (same identity).
    pub names: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

/// One namespace's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// `RAW`, `SHA256` or `BASE64URL`.
    pub value_format: String,
    /// SHA256 only: a looked-up value of exactly 64 hex digits is the digest itself, not
    /// hashed again (MISP's `/rb` lookups send digests). Writes always hash.
    #[serde(default)]
    pub digest_lookups: bool,
}

/// Shadow sightings settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowConfig {
    /// Record reads in `_shadow/<ns>`.
    pub enabled: bool,
    /// TTL of shadow values in seconds (0 = forever).
    pub ttl: u64,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: 0,
        }
    }
}

/// Stats settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// Hourly buckets kept per value, back from the newest (0 = all).
    pub retention_hours: u64,
}

/// Storage settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Block cache in MiB; the data set may be larger, reads beyond it go to disk.
    pub cache_mb: u64,
    /// Memtable of the sightings in MiB: written values are held in memory until this much has
    /// accumulated, then flushed to a table on disk.
    pub memtable_mb: u64,
    /// Active journal size (MiB) from which it is sealed in the background, so a restart after
    /// `kill -9` replays at most about this much; each seal writes filler up to fjall's 64 MB
    /// rotation size (about twice the bytes written on a write-only load, see
    /// docs/PERFORMANCE.md). 0: off (a crash restart replays up to 64 MB, about 1.6 s with 1M
    /// values).
    pub journal_rotate_mb: u64,
    /// Where the sightings live: `embedded` (the data directory, default) or `redis` (a Redis
    /// Cluster shared by several front ends, `[storage.redis]`).
    pub backend: String,
    /// The Redis Cluster, when `backend = "redis"`.
    pub redis: RedisStorageConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            cache_mb: 64,
            memtable_mb: 16,
            journal_rotate_mb: 16,
            backend: "embedded".to_owned(),
            redis: RedisStorageConfig::default(),
        }
    }
}

/// `[storage.redis]`: the Redis Cluster (Valkey, Redis 7, Kvrocks) that holds the sightings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisStorageConfig {
    /// Seed nodes, `host:port`; the rest of the cluster is discovered.
    pub nodes: Vec<String>,
    /// Prefix of every key, so several data sets can share a cluster (no `{` or `}`).
    pub prefix: String,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (prefer `password_env`).
    pub password: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// TLS to every node, verified against the system's roots.
    pub tls: bool,
    /// Replicas that must hold a write (`WAIT`) before it is acknowledged; 0: acknowledge
    /// once the primary has it (see docs/SCALING.md for what a failover can then lose).
    pub wait_replicas: u32,
    /// How long `WAIT` waits for them, in milliseconds; past it the write answers 503.
    pub wait_timeout_ms: u64,
    /// Connection timeout, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest one store call may take (all its commands), in milliseconds; past it 503.
    pub response_timeout_ms: u64,
}

impl Default for RedisStorageConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            prefix: "sighthub:".to_owned(),
            username: None,
            password: None,
            password_env: None,
            tls: false,
            wait_replicas: 1,
            wait_timeout_ms: 1_000,
            connect_timeout_ms: 2_000,
            response_timeout_ms: 5_000,
        }
    }
}

/// Largest `journal_rotate_mb`: fjall seals its journal by itself at 64 MB.
pub const MAX_JOURNAL_ROTATE_MB: u64 = 60;

impl StorageConfig {
    /// Checks `journal_rotate_mb`, `backend` and `[storage.redis]`.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.journal_rotate_mb > MAX_JOURNAL_ROTATE_MB {
            return bad(format!(
                "[storage] journal_rotate_mb = {} is past the journal's own rotation size; give \
                 1 to {MAX_JOURNAL_ROTATE_MB}, or 0 to turn the background seal off",
                self.journal_rotate_mb
            ));
        }
        match self.backend.as_str() {
            "embedded" => Ok(()),
            "redis" => {
                let r = &self.redis;
                if r.nodes.is_empty() {
                    return bad("[storage.redis] nodes must list the cluster's seed nodes".into());
                }
                if let Err(e) = sighthub_redis::check_prefix(&r.prefix) {
                    return bad(format!("[storage.redis] {e}"));
                }
                if r.password.is_some() && r.password_env.is_some() {
                    return bad("[storage.redis] give password or password_env, not both".into());
                }
                if r.response_timeout_ms == 0 || r.connect_timeout_ms == 0 {
                    return bad("[storage.redis] timeouts must be at least 1 ms".into());
                }
                Ok(())
            }
            other => bad(format!(
                "[storage] backend = \"{other}\" is unknown; use \"embedded\" or \"redis\""
            )),
        }
    }

    /// The Redis engine's options, the password read from `password_env` if named.
    pub fn redis_options(&self) -> Result<sighthub_redis::RedisOptions, ConfigError> {
        let r = &self.redis;
        let password = match &r.password_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!(
                    "[storage.redis] password_env names {var}, which is not set"
                ))
            })?),
            None => r.password.clone(),
        };
        Ok(sighthub_redis::RedisOptions {
            nodes: r.nodes.clone(),
            prefix: r.prefix.clone(),
            username: r.username.clone(),
            password,
            tls: r.tls,
            wait_replicas: r.wait_replicas,
            wait_timeout_ms: r.wait_timeout_ms,
            connect_timeout_ms: r.connect_timeout_ms,
            response_timeout_ms: r.response_timeout_ms,
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9999)),
            data_dir: PathBuf::from("sighthub-data"),
            plain_http: false,
            authenticate: true,
            max_body_bytes: 64 * 1024 * 1024,
            max_connections: 4096,
            max_connections_per_address: 256,
            header_timeout_seconds: 30,
            body_timeout_seconds: 120,
            limits: sighthub_api::limits::LimitsConfig::default(),
            tls: TlsConfig::default(),
            acl: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            shadow: ShadowConfig::default(),
            stats: StatsConfig::default(),
            storage: StorageConfig::default(),
            latest_writes: 10_000,
            sweep_interval: 60,
            exchange: sighthub_exchange::ExchangeConfig::default(),
            bridge: sighthub_bridge::BridgeConfig::default(),
            relay: sighthub_relay::RelayConfig::default(),
            intelmq: sighthub_intelmq::IntelmqConfig::default(),
            zmq: sighthub_misp::ZmqConfig::default(),
            dns: sighthub_dns::DnsConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file does not exist.
    #[error(
        "configuration file {path} does not exist: create it (docs/sighthub.example.toml \
         documents every setting), or leave out --config to run with the defaults"
    )]
    Missing {
        /// Which file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error(
        "configuration file {path} is not valid: {}\nfix it there (docs/sighthub.example.toml \
         documents every setting)",
        source.to_string().trim_end()
    )]
    Parse {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of bounds or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A value of a file is out of bounds or inconsistent.
    #[error(
        "configuration file {path}: {reason}; fix it there (docs/sighthub.example.toml \
         documents every setting)"
    )]
    InvalidIn {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// True when users other than the owner and its group may read `path`.
fn readable_by_others(path: &Path) -> bool {
    sighthub_api::files::mode(path).is_ok_and(|m| m & 0o004 != 0)
}

impl Config {
    /// Reads a config file and validates it: every error names the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg = Self::read(path)?;
        match cfg.validate() {
            Ok(()) => Ok(cfg),
            Err(ConfigError::Invalid(reason)) => Err(ConfigError::InvalidIn {
                path: path.to_owned(),
                reason,
            }),
            Err(e) => Err(e),
        }
    }

    /// Reads a config file; relative TLS paths are resolved against its folder.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ConfigError::Missing {
                path: path.to_owned(),
            },
            _ => ConfigError::Read {
                path: path.to_owned(),
                source,
            },
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if cfg.holds_keys() && readable_by_others(path) {
            tracing::warn!(path = %path.display(), "the configuration file holds API keys and every user of this machine may read it; run chmod o-rwx on it");
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.tls.cert, &mut cfg.tls.key].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        let relay = &mut cfg.relay;
        let cas = relay.peers.iter_mut().filter_map(|p| p.ca.as_mut());
        for p in cas.chain(relay.pulls.iter_mut().filter_map(|p| p.ca.as_mut())) {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }

    /// Whether the file holds secrets: API keys (`[acl]`, `[exchange.keys]`) or the keys this
    /// instance presents to peers and hubs (`[relay]`).
    pub fn holds_keys(&self) -> bool {
        self.acl.keys().any(|k| k != sighthub_api::auth::ANONYMOUS)
            || !self.exchange.keys.is_empty()
            || !self.relay.peers.is_empty()
            || !self.relay.pulls.is_empty()
    }

    /// Checks bounds and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        self.storage.validate()?;
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes must be at least 1024".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".into());
        }
        if self.max_connections_per_address == 0 {
            return bad("max_connections_per_address must be at least 1".into());
        }
        if self.header_timeout_seconds == 0 || self.body_timeout_seconds == 0 {
            return bad(
                "header_timeout_seconds and body_timeout_seconds must be at least 1".into(),
            );
        }
        let l = &self.limits;
        if [
            l.max_bulk_items,
            l.max_list_values,
            l.max_page_bytes,
            l.max_tags_per_item,
            l.max_tag_len,
            l.max_tags_per_value,
            l.max_stats_buckets,
        ]
        .contains(&0)
        {
            return bad("every [limits] value must be at least 1".into());
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key go together".into());
        }
        if self.tls.names.is_empty() || self.tls.names.iter().any(|n| n.trim().is_empty()) {
            return bad("[tls] names must list at least one DNS name or IP address, none empty (default: [\"localhost\", \"127.0.0.1\", \"::1\"])".into());
        }
        if self.acl.keys().any(|key| key.trim().is_empty()) {
            return bad("an [acl] key is empty".into());
        }
        if let Some(anonymous) = self.acl.get(sighthub_api::auth::ANONYMOUS) {
            sighthub_api::auth::Auth::enabled()
                .set_anonymous(anonymous.clone())
                .map_err(ConfigError::Invalid)?;
        }
        for (ns, nc) in &self.namespaces {
            let parsed = sighthub_store::Namespace::parse(ns)
                .map_err(|e| ConfigError::Invalid(format!("[namespaces] '{ns}': {e}")))?;
            if parsed.is_internal() {
                return bad(format!("[namespaces] '{ns}' is a private namespace"));
            }
            let format = sighthub_store::ValueFormat::parse(&nc.value_format);
            if format.is_none() {
                return bad(format!(
                    "[namespaces] '{ns}': unknown value_format '{}' (RAW, SHA256 or BASE64URL)",
                    nc.value_format
                ));
            }
            if nc.digest_lookups && format != Some(sighthub_store::ValueFormat::Sha256) {
                return bad(format!(
                    "[namespaces] '{ns}': digest_lookups needs value_format = \"SHA256\" \
                     (only a namespace of SHA-256 digests can answer a digest)"
                ));
            }
        }
        self.exchange
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.bridge.validate().map_err(ConfigError::Invalid)?;
        self.relay.validate().map_err(ConfigError::Invalid)?;
        self.intelmq.validate().map_err(ConfigError::Invalid)?;
        self.zmq.validate().map_err(ConfigError::Invalid)?;
        if self.zmq.enabled && !self.zmq.hashed_namespace.trim().is_empty() {
            let hashed = sighthub_store::Namespace::parse(&self.zmq.hashed_namespace)
                .map_err(|e| ConfigError::Invalid(format!("[zmq] hashed_namespace: {e}")))?;
            let format = self
                .namespaces
                .iter()
                .find(|(ns, _)| sighthub_store::Namespace::parse(ns).is_ok_and(|n| n == hashed));
            if let Some((ns, nc)) = format {
                if !nc.value_format.eq_ignore_ascii_case("SHA256") {
                    return bad(format!(
                        "[zmq] hashed_namespace '{ns}' is configured as {} in [namespaces]; \
                         it holds SHA-256 digests (SHA256, made so at start): remove that entry",
                        nc.value_format
                    ));
                }
            }
        }
        if self.intelmq.enabled && !self.exchange.enabled {
            return bad("[intelmq] needs the exchange ([exchange] enabled = true)".into());
        }
        self.dns.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn storage_backends_are_checked() {
        let check = |text: &str| {
            toml::from_str::<Config>(text)
                .expect("parses")
                .validate()
                .map_err(|e| e.to_string())
        };
        let e = check("[storage]\nbackend = 'cassandra'").expect_err("unknown backend");
        assert!(e.contains("\"cassandra\" is unknown"), "{e}");
        let e = check("[storage]\nbackend = 'redis'").expect_err("no nodes");
        assert!(e.contains("nodes"), "{e}");
        let e = check(
            "[storage]\nbackend = 'redis'\n[storage.redis]\nnodes = ['h:1']\nprefix = 'a{b}'",
        )
        .expect_err("braces");
        assert!(e.contains("prefix"), "{e}");
        check("[storage]\nbackend = 'redis'\n[storage.redis]\nnodes = ['h:1']").expect("valid");
        let e = check("[storage]\njournal_rotate_mb = 64").expect_err("past 60");
        assert!(e.contains("journal_rotate_mb = 64"), "{e}");
        check("[storage]\njournal_rotate_mb = 0").expect("off");
        let cfg: Config = toml::from_str(
            "[storage.redis]\nnodes = ['h:1']\npassword_env = 'SIGHTHUB_TEST_UNSET_PW'",
        )
        .expect("parses");
        let e = cfg.storage.redis_options().expect_err("unset variable");
        assert!(e.to_string().contains("SIGHTHUB_TEST_UNSET_PW"), "{e}");
    }

    #[test]
    fn sample_config_parses_and_validates() {
        let text = include_str!("../../../docs/sighthub.example.toml");
        let cfg: Config = toml::from_str(text).expect("sample parses");
        cfg.validate().expect("sample is valid");
        assert_eq!(cfg.listen.port(), 9999);
        assert_eq!(cfg.namespaces.len(), 2);
    }

    #[test]
    fn empty_config_is_the_default() {
        let cfg: Config = toml::from_str("").expect("empty parses");
        cfg.validate().expect("default is valid");
        assert!(cfg.authenticate && !cfg.plain_http);
    }

    #[test]
    fn a_file_with_keys_that_others_may_read_is_noticed() {
        use std::os::unix::fs::PermissionsExt;
        assert!(!Config::default().holds_keys());
        let mut cfg = Config::default();
        cfg.acl
            .insert("k".into(), sighthub_api::auth::KeyGrants::default());
        assert!(cfg.holds_keys());
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("sighthub.toml");
        std::fs::write(&p, "").expect("write");
        for (mode, open) in [(0o600, false), (0o640, false), (0o644, true)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            assert_eq!(readable_by_others(&p), open, "mode {mode:o}");
        }
    }

    #[test]
    fn refuses_mistakes() {
        assert!(toml::from_str::<Config>("lisen = '127.0.0.1:1'").is_err());
        let e = toml::from_str::<Config>("[acl]\nk = 'rwx'").expect_err("not a grant");
        assert!(e.to_string().contains("unknown grant 'rwx'"), "{e}");
        let cfg: Config = toml::from_str("[acl]\nk = 'rw:feeds, admin'").expect("grants");
        assert!(cfg.acl["k"].admin);
        let cfg: Config = toml::from_str("[acl]\n' ' = 'r'").expect("parses");
        assert!(cfg.validate().is_err(), "an empty key");
        let mut cfg = Config::default();
        cfg.namespaces.insert(
            "_all".into(),
            NamespaceConfig {
                value_format: "RAW".into(),
                digest_lookups: false,
            },
        );
        assert!(cfg.validate().is_err());
    }

    /// `[acl] anonymous` reads only; `digest_lookups` only on SHA256 namespaces.
    #[test]
    fn anonymous_grants_and_digest_lookups() {
        let cfg: Config = toml::from_str("[acl]\nanonymous = 'r:misp'").expect("parses");
        cfg.validate().expect("read grants");
        assert!(!cfg.holds_keys(), "the anonymous grants are not a key");
        for spec in ["rw:misp", "w", "admin"] {
            let cfg: Config =
                toml::from_str(&format!("[acl]\nanonymous = '{spec}'")).expect("parses");
            let e = cfg.validate().expect_err(spec).to_string();
            assert!(e.contains("may only hold read grants"), "{e}");
        }
        let ok = "[namespaces.'misp/hashed']\nvalue_format = 'SHA256'\ndigest_lookups = true";
        toml::from_str::<Config>(ok)
            .expect("parses")
            .validate()
            .expect("valid");
        let raw = "[namespaces.'misp/ip']\nvalue_format = 'RAW'\ndigest_lookups = true";
        let e = toml::from_str::<Config>(raw)
            .expect("parses")
            .validate()
            .expect_err("RAW");
        assert!(e.to_string().contains("digest_lookups needs"), "{e}");
    }
}
