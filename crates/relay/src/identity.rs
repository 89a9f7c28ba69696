//! Instance identities and pinned peers.
//!
//! An instance's **identity** is the SHA-256 digest of its TLS certificate's public key (the
//! DER `SubjectPublicKeyInfo`), written `sha256:` followed by the digest in unpadded
//! base64url (43 characters), as `sighthub identity` and `GET /iep04/status` show it. It
//! depends on the key only: a renewed certificate (same key) keeps it, a new key changes it.
//!
//! A peer or pull configured with `fingerprint = "sha256:…"` is **pinned**: the TLS connection
//! is accepted when the peer presents that key, whatever names its certificate carries,
//! whoever signed it and whatever its validity dates ([`PinnedVerifier`]); the handshake
//! signature is still verified, so only the holder of the private key passes. Any other key
//! is refused with [`UnknownFingerprint`], which says both fingerprints.

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest as _;
use std::fmt;
use std::sync::Arc;

/// The SHA-256 fingerprint of a public key (see the module docs for its text form).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// Why a fingerprint or certificate could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The text is not `sha256:` and 43 base64url characters.
    #[error("fingerprint '{0}' is not 'sha256:' followed by 43 base64url characters (as `sighthub identity` prints it)")]
    Syntax(String),
    /// The certificate cannot be parsed.
    #[error("not a readable X.509 certificate: {0}")]
    Certificate(String),
}

const PREFIX: &str = "sha256:";

impl Fingerprint {
    /// The fingerprint of a DER `SubjectPublicKeyInfo`.
    pub fn of_spki(spki: &[u8]) -> Fingerprint {
        Fingerprint(sha2::Sha256::digest(spki).into())
    }

    /// The fingerprint of a DER certificate's public key.
    pub fn of_cert_der(der: &[u8]) -> Result<Fingerprint, IdentityError> {
        let der = CertificateDer::from(der);
        let cert = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        Ok(Fingerprint::of_spki(
            cert.subject_public_key_info().as_ref(),
        ))
    }

    /// The fingerprint of the first certificate of a PEM file's contents (the instance's own).
    pub fn of_cert_pem(pem: &[u8]) -> Result<Fingerprint, IdentityError> {
        let first = rustls_pemfile::certs(&mut &pem[..])
            .next()
            .ok_or_else(|| IdentityError::Certificate("no CERTIFICATE in the PEM".into()))?
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        Fingerprint::of_cert_der(first.as_ref())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0)
        )
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Fingerprint, IdentityError> {
        let bad = || IdentityError::Syntax(s.to_owned());
        let b64 = s.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| bad())?;
        Ok(Fingerprint(bytes.try_into().map_err(|_| bad())?))
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The peer presented another key than the pinned one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown fingerprint: expected {expected}, presented {presented} (if the peer's key changed on purpose, put its new `sighthub identity` in this peer's `fingerprint`)")]
pub struct UnknownFingerprint {
    /// The configured fingerprint.
    pub expected: Fingerprint,
    /// The one the peer presented.
    pub presented: Fingerprint,
}

/// A [`ServerCertVerifier`] that accepts exactly one public key (see the module docs).
#[derive(Debug)]
pub struct PinnedVerifier {
    expected: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    /// Accepts the key whose fingerprint is `expected`.
    pub fn new(expected: Fingerprint, provider: Arc<CryptoProvider>) -> PinnedVerifier {
        PinnedVerifier { expected, provider }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_cert_der(end_entity.as_ref()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if presented == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(UnknownFingerprint {
                    expected: self.expected,
                    presented,
                }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client TLS configuration of a pinned peer.
pub(crate) fn pinned_tls(expected: Fingerprint) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(expected, provider)))
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn text_form_round_trips_and_bad_ones_say_the_format() {
        let f = Fingerprint::of_spki(b"key");
        let s = f.to_string();
        assert!(s.starts_with("sha256:") && s.len() == 7 + 43, "{s}");
        assert_eq!(s.parse::<Fingerprint>().expect("parses"), f);
        for bad in [
            "",
            "sha256:",
            "md5:abc",
            &s[..s.len() - 1],
            &format!("{s}A"),
        ] {
            let e = bad.parse::<Fingerprint>().expect_err(bad).to_string();
            assert!(e.contains("43 base64url"), "{e}");
        }
    }
}
