//! From a [`Config`] to an opened [`Node`]: the data directory, both stores, the keys, TLS,
//! and the subsystems over the exchange (bridge, relay, IntelMQ transports), none started.

use crate::config::Config;
use crate::Node;
use sighthub_api::auth::{Auth, KeyGrants};
use sighthub_api::keyring::KeyRing;
use sighthub_api::latest::Latest;
use sighthub_api::App;
use sighthub_store::{FjallEngine, Namespace, SightingStore, Sightings, StoreOptions, ValueFormat};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Environment variable that supplies the admin key (then none is generated).
pub const ADMIN_KEY_ENV: &str = "SIGHTHUB_ADMIN_KEY";

/// The admin key's file in the data directory, when `SIGHTHUB_ADMIN_KEY` is not set.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] sighthub_store::Error),
    /// The Redis Cluster of `[storage] backend = "redis"` is unusable or unreachable.
    #[error("opening the sighting store: {0}")]
    Redis(#[from] sighthub_redis::OpenError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] sighthub_api::tls::TlsError),
    /// The IEP04 exchange could not be opened.
    #[error("opening the IEP04 exchange: {0}")]
    Exchange(#[from] sighthub_exchange::Error),
    /// The relay (peering) could not be set up.
    #[error("[relay]: {0}")]
    Relay(#[from] sighthub_relay::Error),
    /// The IntelMQ transports are misconfigured.
    #[error("[intelmq]: {0}")]
    Intelmq(#[from] sighthub_intelmq::Error),
    /// MISP's ZeroMQ ingest cannot be set up.
    #[error("{0}")]
    Misp(#[from] sighthub_misp::Error),
    /// The data directory cannot be created or made private.
    #[error("data directory {path} {reason}")]
    DataDir {
        /// Which directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The instance certificate's identity cannot be read.
    #[error("{path}: {reason}; point [tls] cert at a PEM certificate")]
    Identity {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The runtime API keys cannot be read.
    #[error("{0}")]
    Keys(String),
    /// The console's sessions cannot be set up (their shared document).
    #[error("console sessions: {0}")]
    Console(String),
    /// A thread of the server could not be started.
    #[error("starting the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
    /// The admin key file is unusable.
    #[error("admin key file {path}: {reason}")]
    AdminKey {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl BootError {
    /// The error of a data directory in which a file cannot be created (read-only, another
    /// owner): called what it is, a data directory, with what to do.
    pub fn not_writable(dir: &Path, e: &std::io::Error) -> Self {
        BootError::DataDir {
            path: dir.to_owned(),
            reason: format!(
                "is not writable by this user ({e}): sighthub keeps its database, keys and \
                 certificate there; make it writable (chown or chmod), or give another --data-dir"
            ),
        }
    }
}

/// Whether an error of creating a file means its directory refuses new files.
fn refuses_files(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
}

/// The sighting API's configuration keys: the `[acl]` keys and the admin key (by its
/// digest), or authentication off. Built at start and again by SIGHUP.
pub fn config_auth(cfg: &Config, enabled: bool, admin: Option<[u8; 32]>) -> Auth {
    if !enabled {
        return Auth::disabled();
    }
    let mut auth = Auth::enabled();
    for (key, grants) in &cfg.acl {
        if key == sighthub_api::auth::ANONYMOUS {
            // `Config::validate` refused write and admin grants there already.
            if let Err(e) = auth.set_anonymous(grants.clone()) {
                tracing::warn!(error = %e, "[acl] anonymous ignored");
            }
        } else {
            auth.add_key(key, grants.clone());
        }
    }
    if let Some(d) = admin {
        auth.add_digest(
            d,
            KeyGrants {
                admin: true,
                grants: Vec::new(),
            },
        );
    }
    auth
}

/// The file of [`instance_id`] in the data directory.
pub const INSTANCE_ID_FILE: &str = "instance.id";

/// This front end's id (random, made on the first start, kept in the data directory): the
/// holder of its leases on a shared sighting store (the bridge) and on a shared exchange (the
/// relay links, the IntelMQ outputs), the same across restarts.
pub fn instance_id(data_dir: &Path) -> Result<String, BootError> {
    let path = data_dir.join(INSTANCE_ID_FILE);
    let err = |reason: String| BootError::DataDir {
        path: path.clone(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(format!("cannot be read: {e}"))),
    }
    let id =
        sighthub_storage::secret::random_hex(16).map_err(|e| err(format!("no randomness: {e}")))?;
    std::fs::write(&path, &id).map_err(|e| err(format!("cannot be written: {e}")))?;
    Ok(id)
}

/// Opens the sighting store on the configured backend (`[storage] backend`).
pub fn open_store(cfg: &Config) -> Result<crate::backend::NodeStore, BootError> {
    let opts = StoreOptions {
        cache_bytes: cfg.storage.cache_mb.saturating_mul(1024 * 1024),
        memtable_bytes: cfg.storage.memtable_mb.clamp(1, 1024) * 1024 * 1024,
        // `Config::validate` refuses more than MAX_JOURNAL_ROTATE_MB; kept under it here too.
        journal_rotate_bytes: cfg
            .storage
            .journal_rotate_mb
            .min(crate::config::MAX_JOURNAL_ROTATE_MB)
            * 1024
            * 1024,
        stats_retention_hours: cfg.stats.retention_hours,
        shadow_ttl: cfg.shadow.ttl,
        shadow: cfg.shadow.enabled,
        limits: cfg.limits.store(),
    };
    let engine = match cfg.storage.backend.as_str() {
        "redis" => crate::backend::Backend::Redis(Box::new(sighthub_redis::RedisEngine::open(
            &cfg.storage.redis_options()?,
        )?)),
        _ => crate::backend::Backend::Embedded(Box::new(FjallEngine::open(&cfg.data_dir, &opts)?)),
    };
    Ok(Sightings::new(engine, opts)?)
}

/// Opens everything the configuration names.
pub fn boot(cfg: &Config) -> Result<Node, BootError> {
    cfg.validate()?;
    private_dir(&cfg.data_dir)?;
    let store = Arc::new(open_store(cfg)?);
    for (ns, nc) in &cfg.namespaces {
        // Validated above, so both parse.
        if let (Ok(ns), Some(f)) = (Namespace::parse(ns), ValueFormat::parse(&nc.value_format)) {
            let ticket = store.set_format(&ns, f)?;
            store.durability().wait_blocking(ticket)?;
            store.set_digest_lookups(&ns, nc.digest_lookups);
        }
    }
    let mut generated = None;
    let mut exchange_admin = sighthub_exchange::AdminKey::AuthenticationOff;
    let mut admin_digest = None;
    if cfg.authenticate {
        let key = match std::env::var(ADMIN_KEY_ENV) {
            Ok(k) if !k.trim().is_empty() => k.trim().to_owned(),
            _ => {
                let path = cfg.data_dir.join(ADMIN_KEY_FILE);
                let (key, fresh) = load_or_make_admin_key(&path)?;
                if fresh {
                    generated = Some((key.clone(), path));
                }
                key
            }
        };
        admin_digest = Some(sighthub_api::auth::digest(&key));
        exchange_admin = sighthub_exchange::AdminKey::Key(key);
    }
    let auth = config_auth(cfg, cfg.authenticate, admin_digest);
    let mut cert_file = None;
    let (tls, identity) = if cfg.plain_http {
        (None, None)
    } else {
        let (cert, key) = tls_files(cfg)?;
        cert_file = Some(cert.clone());
        let identity = fingerprint_of(&cert)?;
        tracing::info!(%identity, cert = %cert.display(), "this instance's identity (peers pin it as `fingerprint`)");
        (
            Some(tokio_rustls::TlsAcceptor::from(
                sighthub_api::tls::server_config(&cert, &key)?,
            )),
            Some(identity),
        )
    };
    let exchange = sighthub_exchange::Exchange::open(&cfg.exchange, &cfg.data_dir, exchange_admin)?;
    let holder = instance_id(&cfg.data_dir)?;
    let docs = crate::backend::documents(&store, &cfg.data_dir)?;
    let bridge = match exchange.store() {
        Some(ex) if cfg.bridge.enabled => Some(Arc::new(
            sighthub_bridge::Feeder::new(
                Arc::clone(ex),
                Arc::clone(&store) as Arc<dyn SightingStore>,
                cfg.bridge.clone(),
            )
            .with_holder(holder.clone()),
        )),
        _ => None,
    };
    let intelmq = match exchange.store() {
        Some(ex) if cfg.intelmq.enabled => Some(Arc::new(
            sighthub_intelmq::Intelmq::new(&cfg.intelmq, Arc::clone(ex), cfg.exchange.default_tlp)?
                .with_holder(holder.clone()),
        )),
        _ => None,
    };
    let misp = if cfg.zmq.enabled {
        Some(Arc::new(sighthub_misp::Ingest::new(
            &cfg.zmq,
            Arc::clone(&store) as Arc<dyn SightingStore>,
        )?))
    } else {
        None
    };
    let relay = match exchange.store() {
        Some(ex) => Some(Arc::new(sighthub_relay::Relay::new(
            cfg.relay.clone(),
            Arc::clone(ex),
            &cfg.data_dir,
            sighthub_relay::LocalOptions::from_exchange(&cfg.exchange)
                .with_holder(holder.clone())
                .with_documents(Arc::clone(&docs.durable)),
        )?)),
        None => None,
    };
    let keys = KeyRing::open(auth, Some(Arc::clone(&docs.durable)))
        .map_err(|e| BootError::Keys(e.to_string()))?;
    let sessions = sighthub_api::console::Sessions::open(Arc::clone(&docs.sessions))
        .map_err(|e| BootError::Console(e.to_string()))?;
    let peering = relay.as_ref().map(|r| {
        Arc::new(crate::peering::RelayPeering::new(
            Arc::clone(r),
            Duration::from_secs(cfg.relay.timeout_seconds),
        )) as Arc<dyn sighthub_api::peering::Peering>
    });
    let dns_counters = Arc::new(std::sync::OnceLock::new());
    let app = Arc::new(App {
        writer: sighthub_api::writer::Writer::start(Arc::clone(&store) as Arc<dyn SightingStore>)
            .map_err(|e| BootError::Thread("sighting-writer", e))?,
        store: Arc::clone(&store) as Arc<dyn SightingStore>,
        keys,
        latest: Latest::new(cfg.latest_writes),
        max_body_bytes: cfg.max_body_bytes,
        limits: cfg.limits.clone(),
        started: Instant::now(),
        exchange: exchange.clone(),
        identity: identity.map(|f| f.to_string()),
        peering,
        status: Some(Arc::new(crate::status::Report {
            relay: relay.clone(),
            bridge: bridge.clone(),
            intelmq: intelmq.clone(),
            misp: misp.clone(),
            dns: Arc::clone(&dns_counters),
            cfg: cfg.clone(),
            cert: cert_file,
        })),
        metrics: Default::default(),
        sessions,
    });
    Ok(Node {
        cfg: cfg.clone(),
        app,
        store,
        exchange,
        tls,
        generated_admin_key: generated,
        dns_counters,
        admin_digest,
        bridge,
        relay,
        intelmq,
        misp,
    })
}

/// The certificate and key the instance serves: `[tls] cert`/`key`, or the generated pair in
/// `<data_dir>/tls` (made, or renewed with the same key, as [`sighthub_api::tls::ensure_self_signed`]
/// says).
pub fn tls_files(cfg: &Config) -> Result<(PathBuf, PathBuf), BootError> {
    if let (Some(c), Some(k)) = (&cfg.tls.cert, &cfg.tls.key) {
        sighthub_api::tls::refuse_world_accessible(k)?;
        return Ok((c.clone(), k.clone()));
    }
    private_dir(&cfg.data_dir)?;
    let dir = cfg.data_dir.join("tls");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    match sighthub_api::tls::ensure_self_signed(&c, &k, &cfg.tls.names)? {
        sighthub_api::tls::Generated::Kept => {}
        sighthub_api::tls::Generated::New => {
            tracing::info!(cert = %c.display(), names = ?cfg.tls.names, "generated a self-signed certificate and key ([tls] names)");
        }
        sighthub_api::tls::Generated::Renewed(why) => {
            tracing::info!(cert = %c.display(), names = ?cfg.tls.names, why, "renewed the self-signed certificate with the same key (the identity is unchanged)");
        }
    }
    Ok((c, k))
}

/// The identity of the instance `cfg` describes: its certificate's public-key fingerprint
/// (the generated pair is made first if there is none yet, so it can be given to peers
/// before the first start). Works while the server runs.
pub fn identity(cfg: &Config) -> Result<sighthub_relay::Fingerprint, BootError> {
    cfg.validate()?;
    let (cert, _) = tls_files(cfg)?;
    fingerprint_of(&cert)
}

fn fingerprint_of(cert: &Path) -> Result<sighthub_relay::Fingerprint, BootError> {
    let pem = std::fs::read(cert).map_err(|source| {
        BootError::Tls(sighthub_api::tls::TlsError::Io {
            path: cert.to_owned(),
            source,
        })
    })?;
    sighthub_relay::Fingerprint::of_cert_pem(&pem).map_err(|e| BootError::Identity {
        path: cert.to_owned(),
        reason: e.to_string(),
    })
}

/// Creates the data directory with mode 0700, or tightens an existing one that others can
/// enter (logged); refuses to start when that fails. What it holds (the database, the TLS key,
/// the admin key, the exchange and relay state) is then out of other users' reach, whatever
/// the modes of the files inside (the binary also sets a 077 umask).
pub fn private_dir(dir: &Path) -> Result<(), BootError> {
    let err = |reason: String| BootError::DataDir {
        path: dir.to_owned(),
        reason,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| {
        err(format!(
            "cannot be created ({e}); create it, or give another --data-dir"
        ))
    })?;
    let old = sighthub_api::files::tighten(dir, 0o700).map_err(|e| {
        err(format!(
            "is open to other users and could not be made 0700: {e}"
        ))
    })?;
    if let Some(old) = old {
        tracing::warn!(path = %dir.display(), old = format!("{old:o}"), "data directory tightened to mode 0700");
    }
    Ok(())
}

fn load_or_make_admin_key(path: &Path) -> Result<(String, bool), BootError> {
    let err = |reason: String| BootError::AdminKey {
        path: path.to_owned(),
        reason,
    };
    if path.exists() {
        let mode = sighthub_api::files::mode(path).map_err(|e| err(e.to_string()))?;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "readable by others (mode {mode:o}); run chmod 600 on it"
            )));
        }
        let key = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let key = key.trim().to_owned();
        if key.is_empty() {
            return Err(err("is empty".into()));
        }
        return Ok((key, false));
    }
    let key = sighthub_storage::secret::fresh_key().map_err(|e| err(e.to_string()))?;
    sighthub_api::tls::write_private(path, format!("{key}\n").as_bytes()).map_err(|e| {
        match (&e, path.parent()) {
            (sighthub_api::tls::TlsError::Io { source, .. }, Some(dir))
                if refuses_files(source) =>
            {
                BootError::not_writable(dir, source)
            }
            _ => err(e.to_string()),
        }
    })?;
    Ok((key, true))
}
