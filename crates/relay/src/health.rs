//! Why a link fails, said where the operator looks: in the log, once at WARN when the cause
//! appears or changes and then at most once a minute while it stays the same ([`LOG_EVERY`]),
//! and in the link's status (`last_error`, `since` in its state file). A link that works
//! again says so once at INFO and clears both.
//!
//! The cause ([`cause`]) is read from the error's source chain, not from the HTTP client's
//! top-level text ("error sending request"): a TLS name mismatch, an unknown fingerprint, an
//! untrusted certificate, a refused key (401/403), a refused connection, a timeout, a file
//! that is missing; each says what to do.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::identity::UnknownFingerprint;
use crate::state::{self, PeerState};

/// The longest a failure that does not change stays unlogged.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// What went wrong, in words an operator can act on (see the module docs).
pub fn cause(e: &Error) -> String {
    match e {
        Error::Status {
            status: status @ (401 | 403),
            body,
            ..
        } if !body.contains("\"refused\"") => format!(
            "refused key (HTTP {status}): the peer does not accept this link's key; add it to the peer's [exchange.keys] (with relay = true for a push) or fix `key` here"
        ),
        Error::Network { source, .. } => network_cause(source),
        other => other.to_string(),
    }
}

fn network_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timeout: the peer did not answer in time (relay.timeout_seconds); is it overloaded, or is a firewall dropping the connection?".into();
    }
    let mut chain: Vec<String> = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = next {
        // The client wraps errors in boxes and io::Errors, which hide what they hold from
        // `source()`: look inside them too.
        let mut inner = err;
        loop {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return tls_cause(tls);
            }
            if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        return "connection refused: nothing listens at the peer's url; is the peer running, on that address and port?".into();
                    }
                    std::io::ErrorKind::TimedOut => {
                        return "timeout: connecting to the peer timed out; is the address right and the port open?".into();
                    }
                    _ => {}
                }
            }
            let unwrapped: Option<&(dyn StdError + 'static)> = inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|i| i as &(dyn StdError + 'static));
            match unwrapped {
                Some(i) => inner = i,
                None => break,
            }
        }
        let text = err.to_string();
        if chain.last().is_none_or(|l| !l.contains(&text)) {
            chain.push(text);
        }
        next = err.source();
    }
    // The innermost texts say most; the top-level one ("error sending request") least.
    chain.reverse();
    chain.truncate(3);
    chain.join(" ← ")
}

fn tls_cause(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::Other(o)) => match o.0.downcast_ref::<UnknownFingerprint>() {
            Some(u) => u.to_string(),
            None => format!("TLS: the peer's certificate is refused: {o}"),
        },
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "TLS name mismatch: the peer's certificate does not name the host of its url; pin the peer with fingerprint = its `sighthub identity`, or add the host to the peer's [tls] names".into()
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "TLS: the peer's certificate is not signed by a trusted CA (self-signed?); pin the peer with fingerprint = its `sighthub identity`, or set ca".into()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "TLS: the peer's certificate has expired; renew it on the peer (a generated one is renewed at its start), or pin the peer with fingerprint".into()
        }
        other => format!("TLS: {other}"),
    }
}

/// Whether a failure with `cause` is logged now, given the last one logged (its cause and
/// when).
pub(crate) fn should_log(last: Option<(&str, Instant)>, cause: &str, now: Instant) -> bool {
    match last {
        Some((c, at)) => c != cause || now.saturating_duration_since(at) >= LOG_EVERY,
        None => true,
    }
}

/// The health of one link (one task).
pub(crate) struct Health {
    /// `push:<name>` or `pull:<name>`.
    label: String,
    logged: Option<(String, Instant)>,
    /// Seen by the relay: a failing link is restarted by a reload.
    failing: Arc<AtomicBool>,
}

impl Health {
    pub(crate) fn new(label: String, failing: Arc<AtomicBool>) -> Health {
        Health {
            label,
            logged: None,
            failing,
        }
    }

    /// Records a failure: logged at a bounded rate, kept in `st` (persisted in `file` when
    /// the cause changes).
    pub(crate) fn failed(&mut self, e: &Error, what: &str, st: &mut PeerState, file: &Path) {
        let cause = cause(e);
        self.failing.store(true, Ordering::Relaxed);
        let now = Instant::now();
        let last = self.logged.as_ref().map(|(c, at)| (c.as_str(), *at));
        if should_log(last, &cause, now) {
            tracing::warn!(link = %self.label, cause = %cause, "relay: {what}; retrying");
            self.logged = Some((cause.clone(), now));
        }
        if st.last_error.as_deref() != Some(cause.as_str()) {
            st.last_error = Some(cause);
            st.since = Some(unix_now());
            if let Err(e) = state::store(file, st) {
                tracing::warn!(link = %self.label, error = %e, "relay: link status not persisted");
            }
        }
    }

    /// Records that the link works (logged once after a failure).
    pub(crate) fn ok(&mut self, st: &mut PeerState, file: &Path) {
        self.failing.store(false, Ordering::Relaxed);
        if self.logged.take().is_some() || st.last_error.is_some() {
            tracing::info!(link = %self.label, "relay: link works again");
        }
        if st.last_error.is_some() {
            st.last_error = None;
            st.since = None;
            if let Err(e) = state::store(file, st) {
                tracing::warn!(link = %self.label, error = %e, "relay: link status not persisted");
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_cause_is_logged_when_new_changed_or_a_minute_old() {
        let t = Instant::now();
        assert!(should_log(None, "a", t));
        assert!(!should_log(
            Some(("a", t)),
            "a",
            t + Duration::from_secs(59)
        ));
        assert!(should_log(Some(("a", t)), "a", t + LOG_EVERY));
        assert!(should_log(Some(("a", t)), "b", t + Duration::from_secs(1)));
    }

    #[test]
    fn a_refused_key_says_so_and_what_to_do() {
        let e = Error::Status {
            peer: "b".into(),
            status: 401,
            body: "{}".into(),
        };
        assert!(
            cause(&e).starts_with("refused key (HTTP 401)"),
            "{}",
            cause(&e)
        );
        let missing = Error::Unavailable {
            path: "b-cert.pem".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(
            cause(&missing).contains("then send SIGHUP"),
            "{}",
            cause(&missing)
        );
    }
}
