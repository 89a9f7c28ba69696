//! TLS 1.2 and 1.3 with rustls (ring provider), and the self-signed pair made on first start.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS set-up failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a PEM file failed.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM had no certificate or no key.
    #[error("{0}: no usable PEM item found")]
    Empty(PathBuf),
    /// Generating the self-signed certificate failed.
    #[error("generating the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A configured private key that every user of the machine may read or change.
    #[error("{0}: the TLS private key is accessible to every user (mode {1:o}); run chmod o-rwx on it (0600 or 0640)")]
    OpenKey(PathBuf, u32),
}

/// Refuses a configured private key that other users (not the owner, not its group) may
/// read or write: sighthub does not change an operator's file, it asks for it to be fixed.
/// Group access is allowed (a `ssl-cert`-style group that holds the keys of a machine).
pub fn refuse_world_accessible(path: &Path) -> Result<(), TlsError> {
    let mode = crate::files::mode(path).map_err(io_err(path))?;
    if mode & 0o007 != 0 {
        return Err(TlsError::OpenKey(path.to_owned(), mode));
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a self-signed certificate for localhost/127.0.0.1/::1 and its key (mode 0600)
/// unless both files exist. Returns true when it generated them. A key that exists is made
/// 0600 whatever its mode was.
pub fn ensure_self_signed(cert: &Path, key: &Path) -> Result<bool, TlsError> {
    if cert.exists() && key.exists() {
        owner_only(key)?;
        return Ok(false);
    }
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let ck = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    write_private(key, ck.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(cert, ck.cert.pem()).map_err(io_err(cert))?;
    Ok(true)
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io_err(path))?;
    // The mode above applies to a new file only; one that existed is tightened too.
    owner_only(path)?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Makes a file readable and writable by its owner only (0600), logging when it was not.
pub fn owner_only(path: &Path) -> Result<(), TlsError> {
    if let Some(old) = crate::files::tighten(path, 0o600).map_err(io_err(path))? {
        tracing::warn!(path = %path.display(), old = format!("{old:o}"), "private file tightened to mode 0600");
    }
    Ok(())
}

/// Builds the server configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = {
        let pem = std::fs::read(cert).map_err(io_err(cert))?;
        rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(io_err(cert))?
    };
    if certs.is_empty() {
        return Err(TlsError::Empty(cert.to_owned()));
    }
    let key_der: PrivateKeyDer<'static> = {
        let pem = std::fs::read(key).map_err(io_err(key))?;
        rustls_pemfile::private_key(&mut pem.as_slice())
            .map_err(io_err(key))?
            .ok_or_else(|| TlsError::Empty(key.to_owned()))?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_configured_key_open_to_every_user_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let k = dir.path().join("key.pem");
        std::fs::write(&k, b"x").expect("write");
        for (mode, ok) in [(0o600, true), (0o640, true), (0o644, false), (0o602, false)] {
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(mode)).expect("chmod");
            assert_eq!(refuse_world_accessible(&k).is_ok(), ok, "mode {mode:o}");
        }
    }

    #[test]
    fn self_signed_pair_is_made_once_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = (
            dir.path().join("tls/cert.pem"),
            dir.path().join("tls/key.pem"),
        );
        assert!(ensure_self_signed(&c, &k).expect("generates"));
        assert!(!ensure_self_signed(&c, &k).expect("keeps"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&k).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // A key left world-readable is tightened on the next start.
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            assert!(!ensure_self_signed(&c, &k).expect("again"));
            let mode = std::fs::metadata(&k).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        server_config(&c, &k).expect("loads");
        assert!(server_config(&k, &c).is_err(), "swapped files are refused");
    }
}
