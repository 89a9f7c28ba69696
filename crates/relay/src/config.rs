//! The `[relay]` configuration section: peers to push to, hubs to pull from.
//!
//! Re-read on `SIGHUP` (the binary calls [`crate::Relay::reload`]): peers and pulls are
//! matched by `name`; an added one starts, a removed one stops, a changed one restarts from
//! its persisted cursor (nothing is lost or sent twice).

use serde::Deserialize;
use sighthub_exchange::{Feed, Grants};
use sighthub_iep04::Tlp;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use uuid::Uuid;

use crate::identity::Fingerprint;

/// How the certificate of a peer or hub is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust<'a> {
    /// Its public key must have this fingerprint (`fingerprint`).
    Pinned(Fingerprint),
    /// The system's roots and this CA file (`ca`).
    Ca(&'a Path),
    /// The system's roots.
    SystemRoots,
    /// Not checked (`accept_invalid_certs`, tests only).
    Insecure,
}

fn trust<'a>(fp: Option<Fingerprint>, ca: Option<&'a Path>, insecure: bool) -> Trust<'a> {
    match (fp, ca) {
        // A pinned key is never weakened by accept_invalid_certs.
        (Some(f), _) => Trust::Pinned(f),
        _ if insecure => Trust::Insecure,
        (None, Some(ca)) => Trust::Ca(ca),
        (None, None) => Trust::SystemRoots,
    }
}

impl PullConfig {
    /// How the hub's certificate is checked.
    pub fn trust(&self) -> Trust<'_> {
        trust(
            self.fingerprint,
            self.ca.as_deref(),
            self.accept_invalid_certs,
        )
    }
}

/// The `[relay]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Off: no peer is contacted (the section is kept so a reload can turn it on).
    pub enabled: bool,
    /// Messages per request to a peer (and per page pulled from a hub).
    pub batch: usize,
    /// A message whose path already holds this many instances is not relayed further. A last
    /// resort only: loops are broken by the path and the receiver's seen-set.
    pub max_hops: usize,
    /// First retry delay after a failure, in milliseconds (doubled up to `retry_max_ms`).
    pub retry_min_ms: u64,
    /// Longest retry delay, in milliseconds: how long a peer that came back may wait.
    pub retry_max_ms: u64,
    /// Timeout of one request to a peer or hub, in seconds.
    pub timeout_seconds: u64,
    /// Announce in each copy (`meta["sighthub:covered"]`) the peers this instance sends the
    /// message to itself, so that receivers do not send it there too: fewer duplicate copies
    /// in a mesh. Off: only the path prunes.
    pub covered: bool,
    /// Instances to push the local log to.
    pub peers: Vec<PeerConfig>,
    /// Hubs whose log is pulled into the local one through a named consumer.
    pub pulls: Vec<PullConfig>,
    /// Byte budget of one request to a peer: a batch stops before its body grows past it
    /// (its first message is always sent). Keep it under the peer's `max_request_bytes`.
    pub max_batch_bytes: usize,
    /// Largest answer read from a peer or hub (a publish answer, a pulled page), in bytes:
    /// a longer one is an error (a pull halves its page size and retries), never buffered.
    pub max_answer_bytes: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch: 500,
            max_hops: 32,
            retry_min_ms: 200,
            retry_max_ms: 60_000,
            timeout_seconds: 30,
            covered: true,
            peers: Vec::new(),
            pulls: Vec::new(),
            max_answer_bytes: 64 * 1024 * 1024,
            max_batch_bytes: 16 * 1024 * 1024,
        }
    }
}

/// One peer: another instance (or a hub, which is the same thing) the local log goes to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Unique among peers; names the persisted cursor (`<data_dir>/relay/push-<name>.json`).
    pub name: String,
    /// Base URL of the peer (`https://host:9999`); `/iep04/messages` is appended.
    pub url: String,
    /// The key this instance authenticates with at the peer (a `relay = true` key there, so
    /// it may publish other organisations' messages).
    pub key: String,
    /// Feeds sent (same syntax and parser as exchange keys: `"*"`, `"intelmq/event"`,
    /// `"tag:feed:x"`).
    #[serde(default = "all_feeds")]
    pub feeds: Vec<Feed>,
    /// Most restrictive TLP sent (messages without one count as `[exchange] default_tlp`).
    #[serde(default = "default_tlp_max")]
    pub tlp_max: Tlp,
    /// Messages received from this peer may be relayed to other peers. `false` needs
    /// `instance` (the path names instances, not peers).
    #[serde(default = "yes")]
    pub forward_received: bool,
    /// The peer's instance uuid; when absent it is asked (`GET /iep04/status`) before the
    /// first send.
    #[serde(default)]
    pub instance: Option<Uuid>,
    /// The peer's identity (`sighthub identity` on the peer): the connection is accepted
    /// when the peer presents this key, whatever its certificate's names and issuer
    /// ([`crate::identity`]). Either this or `ca`; neither: the system's roots.
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    /// Extra CA certificate (PEM) to trust for this peer (an operator's own PKI).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Do not verify the peer's certificate (tests, never in production).
    #[serde(default)]
    pub accept_invalid_certs: bool,
}

/// One hub pulled from with a server-side cursor (`/iep04/consumers/{consumer}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// Unique among pulls; names the counters file (`<data_dir>/relay/pull-<name>.json`).
    pub name: String,
    /// Base URL of the hub.
    pub url: String,
    /// The key this instance reads with at the hub.
    pub key: String,
    /// The consumer name at the hub (its cursor lives there, moved by acknowledgements).
    pub consumer: String,
    /// Long-poll seconds per request.
    #[serde(default = "default_wait")]
    pub wait_seconds: u64,
    /// Messages pulled from this hub may be relayed to peers. `false` needs `instance`.
    #[serde(default = "yes")]
    pub forward_received: bool,
    /// The hub's instance uuid; asked when absent.
    #[serde(default)]
    pub instance: Option<Uuid>,
    /// The hub's identity (`sighthub identity` on the hub), as a peer's `fingerprint`.
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    /// Extra CA certificate (PEM) to trust for this hub (an operator's own PKI).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Do not verify the hub's certificate (tests, never in production).
    #[serde(default)]
    pub accept_invalid_certs: bool,
}

fn all_feeds() -> Vec<Feed> {
    vec![Feed::All]
}
fn default_tlp_max() -> Tlp {
    Tlp::Amber
}
fn yes() -> bool {
    true
}
fn default_wait() -> u64 {
    20
}

/// A name usable as a file name part.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !n.starts_with('.')
}

fn valid_url(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://")) && reqwest::Url::parse(u).is_ok()
}

impl PeerConfig {
    /// What the peer may be sent: its feeds up to its TLP ceiling, read as `org` (the local
    /// organisation).
    pub fn grants(&self, org: Uuid) -> Grants {
        Grants::reader(org, self.feeds.clone(), self.tlp_max)
    }

    /// How the peer's certificate is checked.
    pub fn trust(&self) -> Trust<'_> {
        trust(
            self.fingerprint,
            self.ca.as_deref(),
            self.accept_invalid_certs,
        )
    }
}

/// The checks a peer and a pull share, in this order: a unique name usable in a file name,
/// an http(s) URL, no blank credential (`blank`: which one is, when one is), and an instance
/// uuid when `forward_received` is off (`needs_instance`). `kind` is `peer` or `pull`.
fn check_remote<'a>(
    kind: &str,
    names: &mut HashSet<&'a str>,
    name: &'a str,
    url: &str,
    blank: Option<&str>,
    needs_instance: bool,
    both_trusts: bool,
) -> Result<(), String> {
    if !valid_name(name) || !names.insert(name) {
        return Err(format!(
            "relay {kind} name '{name}': empty, repeated, or not [A-Za-z0-9._-]"
        ));
    }
    if !valid_url(url) {
        return Err(format!("relay {kind} '{name}': url '{url}' is not http(s)"));
    }
    if let Some(blank) = blank {
        return Err(format!("relay {kind} '{name}': {blank} is empty"));
    }
    if needs_instance {
        return Err(format!(
            "relay {kind} '{name}': forward_received = false needs its instance uuid"
        ));
    }
    if both_trusts {
        return Err(format!(
            "relay {kind} '{name}': set either fingerprint (the peer's `sighthub identity`) or ca (a CA file of your PKI), not both"
        ));
    }
    Ok(())
}

impl RelayConfig {
    /// Checks names, URLs and credentials (feeds and TLP levels were checked when the
    /// configuration was read); the message says which entry is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch_bytes < 64 * 1024 {
            return Err("relay.max_batch_bytes must be at least 65536".into());
        }
        if self.max_answer_bytes < 64 * 1024 {
            return Err("relay.max_answer_bytes must be at least 65536".into());
        }
        if self.batch == 0 || self.batch > 10_000 {
            return Err("relay.batch must be 1..=10000".into());
        }
        if self.max_hops == 0 {
            return Err("relay.max_hops must be at least 1".into());
        }
        if self.retry_min_ms == 0 || self.retry_max_ms < self.retry_min_ms {
            return Err("relay: 0 < retry_min_ms <= retry_max_ms".into());
        }
        if self.timeout_seconds == 0 {
            return Err("relay.timeout_seconds must be at least 1".into());
        }
        let mut names = HashSet::new();
        for p in &self.peers {
            let blank = p.key.trim().is_empty().then_some("key");
            let needs_instance = !p.forward_received && p.instance.is_none();
            let both = p.fingerprint.is_some() && p.ca.is_some();
            check_remote(
                "peer",
                &mut names,
                &p.name,
                &p.url,
                blank,
                needs_instance,
                both,
            )?;
        }
        let mut names = HashSet::new();
        for p in &self.pulls {
            let blank = (p.key.trim().is_empty() || p.consumer.trim().is_empty())
                .then_some("key or consumer");
            let needs_instance = !p.forward_received && p.instance.is_none();
            let both = p.fingerprint.is_some() && p.ca.is_some();
            check_remote(
                "pull",
                &mut names,
                &p.name,
                &p.url,
                blank,
                needs_instance,
                both,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn parse(s: &str) -> RelayConfig {
        let cfg: RelayConfig = toml_like(s);
        cfg
    }

    // serde_json stands in for TOML here (the api crate parses the TOML sample).
    fn toml_like(s: &str) -> RelayConfig {
        serde_json::from_str(s).expect("parses")
    }

    #[test]
    fn defaults_and_validation() {
        let cfg = parse("{}");
        assert!(cfg.enabled && cfg.peers.is_empty());
        cfg.validate().expect("default valid");
        let ok = parse(
            r#"{"peers":[{"name":"b","url":"http://127.0.0.1:1","key":"k"}],
                "pulls":[{"name":"h","url":"https://hub:9999","key":"k","consumer":"me"}]}"#,
        );
        ok.validate().expect("valid");
        assert_eq!(ok.peers[0].feeds, vec![Feed::All]);
        assert_eq!(ok.peers[0].tlp_max, Tlp::Amber);
        assert!(ok.peers[0].forward_received);
        for (bad, says) in [
            (
                r#"{"peers":[{"name":"","url":"http://x","key":"k"}]}"#,
                "relay peer name '': empty, repeated, or not [A-Za-z0-9._-]",
            ),
            (
                r#"{"peers":[{"name":"a/b","url":"http://x","key":"k"}]}"#,
                "relay peer name 'a/b': empty, repeated",
            ),
            (
                r#"{"peers":[{"name":"a","url":"ftp://x","key":"k"}]}"#,
                "relay peer 'a': url 'ftp://x' is not http(s)",
            ),
            (
                r#"{"peers":[{"name":"a","url":"http://x","key":" "}]}"#,
                "relay peer 'a': key is empty",
            ),
            (
                r#"{"peers":[{"name":"a","url":"http://x","key":"k","forward_received":false}]}"#,
                "relay peer 'a': forward_received = false needs its instance uuid",
            ),
            (
                r#"{"peers":[{"name":"a","url":"http://x","key":"k"},{"name":"a","url":"http://y","key":"k"}]}"#,
                "relay peer name 'a': empty, repeated",
            ),
            (
                r#"{"pulls":[{"name":"h","url":"https://hub","key":"k","consumer":" "}]}"#,
                "relay pull 'h': key or consumer is empty",
            ),
            (
                r#"{"pulls":[{"name":"h","url":"hub","key":"k","consumer":"c"}]}"#,
                "relay pull 'h': url 'hub' is not http(s)",
            ),
            (
                r#"{"pulls":[{"name":"h","url":"http://hub","key":"k","consumer":"c","forward_received":false}]}"#,
                "relay pull 'h': forward_received = false needs its instance uuid",
            ),
            (
                r#"{"pulls":[{"name":"h","url":"http://a","key":"k","consumer":"c"},{"name":"h","url":"http://b","key":"k","consumer":"c"}]}"#,
                "relay pull name 'h': empty, repeated",
            ),
            (r#"{"batch":0}"#, "relay.batch must be 1..=10000"),
            (
                r#"{"peers":[{"name":"a","url":"https://x","key":"k","ca":"c.pem","fingerprint":"sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"}]}"#,
                "relay peer 'a': set either fingerprint",
            ),
        ] {
            let e = parse(bad).validate().expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        // A peer and a pull may share a name: each has its own state file.
        parse(
            r#"{"peers":[{"name":"x","url":"http://a","key":"k"}],
                "pulls":[{"name":"x","url":"http://b","key":"k","consumer":"c"}]}"#,
        )
        .validate()
        .expect("names are per kind");
        // Feeds and TLP levels are refused when the configuration is read.
        for (bad, says) in [
            (
                r#"{"peers":[{"name":"a","url":"http://x","key":"k","tlp_max":"PURPLE"}]}"#,
                "not a TLP level",
            ),
            (
                r#"{"peers":[{"name":"a","url":"http://x","key":"k","feeds":["tag:"]}]}"#,
                "'tag:' needs a tag prefix",
            ),
        ] {
            let e = serde_json::from_str::<RelayConfig>(bad).expect_err(bad);
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        assert!(serde_json::from_str::<RelayConfig>(r#"{"peer":[]}"#).is_err());
        // A pinned key is never weakened by accept_invalid_certs.
        let pinned = parse(
            r#"{"peers":[{"name":"a","url":"https://x","key":"k","accept_invalid_certs":true,
                "fingerprint":"sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"}]}"#,
        );
        assert!(matches!(pinned.peers[0].trust(), Trust::Pinned(_)));
        let e = serde_json::from_str::<RelayConfig>(
            r#"{"peers":[{"name":"a","url":"https://x","key":"k","fingerprint":"sha1:abc"}]}"#,
        )
        .expect_err("bad fingerprint");
        assert!(e.to_string().contains("43 base64url"), "{e}");
    }
}
