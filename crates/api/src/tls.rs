//! TLS 1.2 and 1.3 with rustls (ring provider), and the self-signed pair of an instance
//! without configured files: made on first start, renewed with the same key (the
//! instance's identity) when it nears its end or its names change ([`ensure_self_signed`]).

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

/// Days a generated certificate is valid.
pub const VALIDITY_DAYS: i64 = 365;
/// A generated certificate with fewer days of validity left is renewed at start.
pub const RENEW_DAYS: u64 = 30;

/// What [`ensure_self_signed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generated {
    /// Both files existed and the certificate is still right: nothing written.
    Kept,
    /// A new key and certificate (a new identity).
    New,
    /// A new certificate for the key that existed (the same identity), and why.
    Renewed(&'static str),
}

/// The self-signed pair of an instance without `[tls] cert`/`key`: the certificate names
/// `names` (the `[tls] names`: DNS names and IP addresses), its subject is `sighthub
/// <first name>`, and it is valid for [`VALIDITY_DAYS`]. On each start an existing pair is
/// kept unless the certificate expires within [`RENEW_DAYS`], lacks one of `names`, or was
/// made by an older version; it is then renewed **with the same key**, so the instance's
/// identity (its key's fingerprint) does not change. A key that exists is made 0600
/// whatever its mode was; only a missing key makes a new one.
pub fn ensure_self_signed(
    cert: &Path,
    key: &Path,
    names: &[String],
) -> Result<Generated, TlsError> {
    let existing = if key.exists() {
        owner_only(key)?;
        let pem = std::fs::read_to_string(key).map_err(io_err(key))?;
        Some(rcgen::KeyPair::from_pem(&pem)?)
    } else {
        None
    };
    let (key_pair, outcome) = match existing {
        Some(kp) if cert.exists() => match renewal_reason(cert, names)? {
            None => return Ok(Generated::Kept),
            Some(why) => (kp, Generated::Renewed(why)),
        },
        Some(kp) => (kp, Generated::Renewed("the certificate file was missing")),
        None => (rcgen::KeyPair::generate()?, Generated::New),
    };
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, subject(names));
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    let made = params.self_signed(&key_pair)?;
    if outcome == Generated::New {
        write_private(key, key_pair.serialize_pem().as_bytes())?;
    }
    std::fs::write(cert, made.pem()).map_err(io_err(cert))?;
    Ok(outcome)
}

/// The subject of a generated certificate.
fn subject(names: &[String]) -> String {
    format!(
        "sighthub {}",
        names.first().map_or("localhost", String::as_str)
    )
}

/// Why a generated certificate must be made again (`None`: it is fine).
fn renewal_reason(cert: &Path, names: &[String]) -> Result<Option<&'static str>, TlsError> {
    let pem = std::fs::read(cert).map_err(io_err(cert))?;
    let Some(Ok(der)) = rustls_pemfile::certs(&mut pem.as_slice()).next() else {
        return Ok(Some("the certificate file held no certificate"));
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(&der) else {
        return Ok(Some("the certificate could not be read"));
    };
    if !ee
        .subject()
        .windows(b"sighthub ".len())
        .any(|w| w == b"sighthub ")
    {
        return Ok(Some(
            "it was made by an older version (no sighthub subject)",
        ));
    }
    for n in names {
        let covered = rustls::pki_types::ServerName::try_from(n.as_str())
            .is_ok_and(|sn| ee.verify_is_valid_for_subject_name(&sn).is_ok());
        if !covered {
            return Ok(Some("[tls] names changed"));
        }
    }
    let Ok(anchor) = webpki::anchor_from_trusted_cert(&der) else {
        return Ok(Some("the certificate could not be read"));
    };
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + std::time::Duration::from_secs(RENEW_DAYS * 24 * 3600);
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let anchors = [anchor];
    let checked = ee.verify_for_usage(
        algs,
        &anchors,
        &[],
        rustls::pki_types::UnixTime::since_unix_epoch(soon),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    Ok(match checked.map(|_| ()) {
        Ok(()) => None,
        Err(webpki::Error::CertExpired { .. }) => Some("it expires within 30 days"),
        Err(_) => Some("it does not verify against its own key"),
    })
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

/// When a certificate file's first certificate expires (unix seconds), for the console;
/// `None` when it cannot be read. webpki exposes `notAfter` only through the expiry error,
/// so the certificate is checked against its own key at a time past any validity.
pub fn cert_not_after(cert: &Path) -> Option<u64> {
    let pem = std::fs::read(cert).ok()?;
    let der = rustls_pemfile::certs(&mut pem.as_slice()).next()?.ok()?;
    let ee = webpki::EndEntityCert::try_from(&der).ok()?;
    let anchor = webpki::anchor_from_trusted_cert(&der).ok()?;
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let far = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        253_402_300_799, // 9999-12-31
    ));
    match ee.verify_for_usage(
        algs,
        &[anchor],
        &[],
        far,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    ) {
        Err(webpki::Error::CertExpired { not_after, .. }) => Some(not_after.as_secs()),
        _ => None,
    }
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
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        assert_eq!(
            ensure_self_signed(&c, &k, &names).expect("generates"),
            Generated::New
        );
        assert_eq!(
            ensure_self_signed(&c, &k, &names).expect("keeps"),
            Generated::Kept
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&k).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // A key left world-readable is tightened on the next start.
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            assert_eq!(
                ensure_self_signed(&c, &k, &names).expect("again"),
                Generated::Kept
            );
            let mode = std::fs::metadata(&k).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        server_config(&c, &k).expect("loads");
        assert!(server_config(&k, &c).is_err(), "swapped files are refused");
    }

    fn spki_of(cert: &Path) -> Vec<u8> {
        let pem = std::fs::read(cert).expect("cert");
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .expect("one")
            .expect("der");
        let ee = webpki::EndEntityCert::try_from(&der).expect("parses");
        ee.subject_public_key_info().as_ref().to_vec()
    }

    #[test]
    fn a_generated_certificate_names_the_instance_and_is_renewed_with_the_same_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let names = vec!["b.example".to_owned(), "::1".to_owned()];
        assert_eq!(
            ensure_self_signed(&c, &k, &names).expect("new"),
            Generated::New
        );
        let pem = std::fs::read(&c).expect("cert");
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .expect("one")
            .expect("der");
        let ee = webpki::EndEntityCert::try_from(&der).expect("parses");
        for n in ["b.example", "::1"] {
            let sn = rustls::pki_types::ServerName::try_from(n).expect("name");
            ee.verify_is_valid_for_subject_name(&sn).expect(n);
        }
        let localhost = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        assert!(ee.verify_is_valid_for_subject_name(&localhost).is_err());
        assert!(ee.subject().windows(18).any(|w| w == b"sighthub b.example"));
        // Bounded: valid in 300 days, not in 400.
        let anchor = webpki::anchor_from_trusted_cert(&der).expect("anchor");
        let at = |days: u64| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("now")
                + std::time::Duration::from_secs(days * 86400);
            ee.verify_for_usage(
                rustls::crypto::ring::default_provider()
                    .signature_verification_algorithms
                    .all,
                std::slice::from_ref(&anchor),
                &[],
                rustls::pki_types::UnixTime::since_unix_epoch(t),
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .is_ok()
        };
        assert!(at(300) && !at(400));
        let key_before = std::fs::read(&k).expect("key");
        let spki_before = spki_of(&c);
        // Another name: renewed, same key, same public key.
        let more = vec!["b.example".to_owned(), "c.example".to_owned()];
        assert_eq!(
            ensure_self_signed(&c, &k, &more).expect("renews"),
            Generated::Renewed("[tls] names changed")
        );
        assert_eq!(std::fs::read(&k).expect("key"), key_before);
        assert_eq!(spki_of(&c), spki_before);
        // A certificate of an older version (rcgen's default subject, valid until 4096).
        let old = rcgen::CertificateParams::new(more.clone())
            .expect("params")
            .self_signed(
                &rcgen::KeyPair::from_pem(&String::from_utf8(key_before).expect("pem"))
                    .expect("key"),
            )
            .expect("old");
        std::fs::write(&c, old.pem()).expect("write");
        assert!(matches!(
            ensure_self_signed(&c, &k, &more).expect("renews"),
            Generated::Renewed(_)
        ));
        assert_eq!(spki_of(&c), spki_before);
        assert_eq!(
            ensure_self_signed(&c, &k, &more).expect("kept"),
            Generated::Kept
        );
    }
}
