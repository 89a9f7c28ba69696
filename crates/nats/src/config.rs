//! `[exchange.nats]`: where the JetStream cluster is and how to speak to it.
//!
//! ```toml
//! [exchange]
//! backend = "nats"
//! [exchange.nats]
//! servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"]
//! stream = "sighthub"          # name prefix of the stream and the bucket
//! replicas = 3
//! # one of: user + password, token, creds_file
//! user = "sighthub"
//! password = "..."
//! # TLS: tls_required, tls_ca_file, tls_cert_file + tls_key_file (client certificate)
//! ```

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// The `[exchange.nats]` section.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Seed URLs of the cluster (`nats://host:port`, `tls://host:port`); the client learns
    /// the others from the cluster.
    pub servers: Vec<String>,
    /// Name prefix of what this exchange keeps in JetStream: the stream `<stream>` (the log)
    /// and the KV bucket `<stream>_idx` (seen-set, content window, indexes, consumers, meta).
    /// Letters, digits, `-` and `_`, at most 64.
    pub stream: String,
    /// Replicas of the stream and the bucket (1, 3 or 5; 3 by default).
    pub replicas: usize,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password (with `user`).
    pub password: Option<String>,
    /// Token authentication.
    pub token: Option<String>,
    /// A `.creds` file (JWT and NKey seed).
    pub creds_file: Option<PathBuf>,
    /// Refuse a connection without TLS.
    pub tls_required: bool,
    /// CA certificate(s) (PEM) to verify the servers with, instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM), with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// Client key (PEM), with `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Seconds to establish the first connection.
    pub connect_timeout_seconds: u64,
    /// Seconds one request (a publish's acknowledgement, a read) may take before the
    /// exchange answers 503.
    pub request_timeout_seconds: u64,
    /// The stream's de-duplication window by `Nats-Msg-Id`, in seconds (concurrent publishes
    /// of one uuid through several front ends); older duplicates are caught by the seen-set.
    pub duplicate_window_seconds: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            stream: "sighthub".into(),
            replicas: 3,
            user: None,
            password: None,
            token: None,
            creds_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            connect_timeout_seconds: 10,
            request_timeout_seconds: 10,
            duplicate_window_seconds: 120,
        }
    }
}

/// Never prints a secret.
impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &self.servers)
            .field("stream", &self.stream)
            .field("replicas", &self.replicas)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("creds_file", &self.creds_file)
            .field("tls_required", &self.tls_required)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .finish_non_exhaustive()
    }
}

impl NatsConfig {
    /// Checks the section (start-up and reloads): servers present, a usable stream name,
    /// one credential form, TLS files in pairs.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.servers.is_empty() {
            return bad("[exchange.nats] servers: at least one server URL".into());
        }
        if self.stream.is_empty()
            || self.stream.len() > 64
            || !self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad(format!(
                "[exchange.nats] stream {:?}: 1 to 64 letters, digits, '-' or '_'",
                self.stream
            ));
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            return bad("[exchange.nats] replicas: 1, 3 or 5".into());
        }
        if self.user.is_some() != self.password.is_some() {
            return bad("[exchange.nats] user and password go together".into());
        }
        let forms = usize::from(self.user.is_some())
            + usize::from(self.token.is_some())
            + usize::from(self.creds_file.is_some());
        if forms > 1 {
            return bad(
                "[exchange.nats] one credential form: user + password, token, or creds_file".into(),
            );
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return bad("[exchange.nats] tls_cert_file and tls_key_file go together".into());
        }
        if self.request_timeout_seconds == 0 || self.connect_timeout_seconds == 0 {
            return bad("[exchange.nats] timeouts are at least 1 second".into());
        }
        Ok(())
    }

    /// The stream holding the log.
    pub fn stream_name(&self) -> String {
        self.stream.clone()
    }

    /// The KV bucket holding everything else.
    pub fn bucket_name(&self) -> String {
        format!("{}_idx", self.stream)
    }
}

/// Opens the connection `cfg` describes.
pub(crate) async fn connect(cfg: &NatsConfig) -> Result<async_nats::Client> {
    let mut opts = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(cfg.connect_timeout_seconds))
        .request_timeout(Some(Duration::from_secs(cfg.request_timeout_seconds)))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .name("sighthub");
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &cfg.token {
        opts = opts.token(t.clone());
    }
    if let Some(f) = &cfg.creds_file {
        opts = opts
            .credentials_file(f)
            .await
            .map_err(|e| Error::Config(format!("[exchange.nats] creds_file {f:?}: {e}")))?;
    }
    if cfg.tls_required {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(c), Some(k)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        opts = opts.add_client_certificate(c.clone(), k.clone());
    }
    let servers: Vec<async_nats::ServerAddr> = cfg
        .servers
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| Error::Config(format!("[exchange.nats] server {s:?}: {e}")))
        })
        .collect::<Result<_>>()?;
    // With retry_on_initial_connect the client connects in the background; the caller's
    // first JetStream request (bounded) tells whether the cluster is there.
    opts.connect(servers)
        .await
        .map_err(|e| Error::Connect(format!("connecting to {}: {e}", cfg.servers.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_parses_and_is_checked() {
        let cfg: NatsConfig = toml::from_str(
            "servers = [\"nats://127.0.0.1:4222\"]\nstream = \"ex-1\"\nuser = \"u\"\npassword = \"p\"",
        )
        .expect("parses");
        cfg.validate().expect("valid");
        assert_eq!(cfg.replicas, 3);
        assert_eq!(cfg.bucket_name(), "ex-1_idx");
        assert!(
            !format!("{cfg:?}").contains("\"p\""),
            "the password is never printed"
        );
        let mut bad = cfg.clone();
        bad.token = Some("t".into());
        assert!(bad.validate().is_err(), "two credential forms");
        let mut bad = cfg.clone();
        bad.stream = "a.b".into();
        assert!(bad.validate().is_err(), "a dot in a stream name");
        let mut bad = cfg;
        bad.servers.clear();
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<NatsConfig>("sevrers = []").is_err());
    }
}
