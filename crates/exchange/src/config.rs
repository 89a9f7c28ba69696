//! The `[exchange]` section of the server configuration.
//!
//! Every field is optional; [`ExchangeConfig::default`] is a working hub that keeps
//! everything forever. Keys are listed under `[exchange.keys."<key>"]`; see
//! `docs/sighthub.example.toml` for a commented sample (parsed by a unit test in `sighthub-api`,
//! and by the one below).

use serde::Deserialize;
use sighthub_iep04::Tlp;
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::access::Feed;
use crate::error::{Error, Result};

/// The IEP04 exchange settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeConfig {
    /// Serve `/iep04/` at all. When false every exchange route answers 404 and no database
    /// is opened.
    pub enabled: bool,
    /// This instance's organisation (`meta.uuid_org` of what the admin key publishes without
    /// one). Absent: a UUIDv4 generated on the first start and kept in the database.
    pub org: Option<Uuid>,
    /// This instance's uuid (`meta.uuid_instance` of bare events wrapped here). Absent:
    /// generated on the first start and kept.
    pub instance: Option<Uuid>,
    /// Largest request body accepted by `POST /iep04/messages`, in bytes (larger: 413,
    /// nothing written). Checked while the body streams in.
    pub max_request_bytes: usize,
    /// Longest message, in bytes, in every body shape (an ND-JSON line, an element of a
    /// JSON array, a single JSON object, a form body); a longer one is an error for that
    /// message (413 when it is the whole request).
    pub max_line_bytes: usize,
    /// Most messages in one `POST /iep04/messages` (any body shape, also a relay's batch):
    /// one more and the whole request is refused with 413, nothing written, without parsing
    /// the rest. Bounds the work and the answer of one request.
    pub max_items_per_request: usize,
    /// Byte budget of one read page (`GET /iep04/messages`, a consumer's messages): a page
    /// stops before it grows past it (`more: true`); its first message is always sent.
    pub max_page_bytes: usize,
    /// How long a bare event (no uuid) stays a duplicate of an identical one from the same
    /// organisation, in seconds. IntelMQ's TCP output resends after 15 s without an answer.
    pub content_window_seconds: u64,
    /// Memory (MiB, per generation, two generations) of the Bloom filter that answers "new"
    /// for content keys without a keyspace lookup (0 = no filter). 8 MiB keeps ~1 % false
    /// positives up to ~6.7 million bare events per content window; beyond, it only helps less.
    pub content_filter_mb: u64,
    /// How long an accepted uuid stays a duplicate, in seconds (0 = forever).
    pub seen_max_age_seconds: u64,
    /// Log retention by age: messages older than this are dropped from the log, in seconds
    /// (0 = keep forever). Their uuids stay known for `seen_max_age_seconds`.
    pub log_max_age_seconds: u64,
    /// Log retention by size: the oldest messages are dropped while the log holds more than
    /// this many bytes of stored messages (0 = no limit).
    pub log_max_bytes: u64,
    /// Seconds between retention sweeps.
    pub retention_interval_seconds: u64,
    /// TLP assumed for a message that carries none (`tlp` in the payload or a `tlp:` tag),
    /// when a key's `tlp_max` is compared with it. Read once, here, for every reader of the
    /// exchange (its keys, relay peers, IntelMQ deliveries).
    pub default_tlp: Tlp,
    /// Page size when a read names no `limit`.
    pub default_limit: usize,
    /// Largest `limit` a read may ask for.
    pub max_limit: usize,
    /// Longest long-poll (`wait=`) a read may ask for, in seconds.
    pub max_wait_seconds: u64,
    /// Block cache of the exchange database, in MiB.
    pub cache_mb: u64,
    /// API keys of the exchange: `[exchange.keys."<key>"]`. The server's admin key is
    /// allowed everything without being listed.
    pub keys: BTreeMap<String, KeyConfig>,
    /// Where the log, seen-set, indexes and consumers are kept: `"embedded"` (the fjall
    /// database in `<data_dir>/exchange`, the default) or `"nats"` (a NATS JetStream cluster,
    /// `[exchange.nats]`; several front ends may share it).
    pub backend: Backend,
    /// The JetStream cluster of `backend = "nats"`.
    pub nats: sighthub_nats::NatsConfig,
}

/// The exchange's storage engine (`[exchange] backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded fjall database.
    #[default]
    Embedded,
    /// A NATS JetStream cluster (`[exchange.nats]`).
    Nats,
}

/// What one exchange key may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The organisation the key speaks for. Messages it publishes must carry this
    /// `meta.uuid_org` (one without gets it), unless `relay` is set.
    pub org: Uuid,
    /// Feeds the key may publish to (see [`Feed`]): `"*"`, `"intelmq"`, `"intelmq/event"`,
    /// `"tag:feed:shadowserver"`…
    #[serde(default)]
    pub publish: Vec<Feed>,
    /// Feeds the key may read.
    #[serde(default)]
    pub read: Vec<Feed>,
    /// Most restrictive TLP the key may read (`CLEAR`/`WHITE`, `GREEN`, `AMBER`,
    /// `AMBER+STRICT`, `RED`). Default `AMBER`: `RED` must be granted explicitly.
    #[serde(default = "default_tlp_max")]
    pub tlp_max: Tlp,
    /// May publish messages of other organisations as they are (an instance relaying what
    /// it received). Messages keep their own `meta.uuid_org`.
    #[serde(default)]
    pub relay: bool,
    /// Tags added to the bare IntelMQ events this key publishes (they have no `meta`), so
    /// that they land in a tag feed.
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_tlp_max() -> Tlp {
    Tlp::Amber
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            org: None,
            instance: None,
            max_request_bytes: 64 * 1024 * 1024,
            max_line_bytes: sighthub_iep04::DEFAULT_MAX_LINE,
            max_items_per_request: 10_000,
            max_page_bytes: 16 * 1024 * 1024,
            content_window_seconds: 3600,
            content_filter_mb: 8,
            seen_max_age_seconds: 0,
            log_max_age_seconds: 0,
            log_max_bytes: 0,
            retention_interval_seconds: 60,
            default_tlp: Tlp::Amber,
            default_limit: 1000,
            max_limit: 10_000,
            max_wait_seconds: 300,
            cache_mb: 32,
            keys: BTreeMap::new(),
            backend: Backend::Embedded,
            nats: sighthub_nats::NatsConfig::default(),
        }
    }
}

impl ExchangeConfig {
    /// The store's tunables this section sets (the one conversion: the server and
    /// `sighthub migrate` use it).
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            cache_bytes: self.cache_mb.saturating_mul(1024 * 1024),
            content_window: self.content_window_seconds,
            seen_max_age: self.seen_max_age_seconds,
            log_max_age: self.log_max_age_seconds,
            log_max_bytes: self.log_max_bytes,
            content_filter_bytes: usize::try_from(self.content_filter_mb)
                .unwrap_or(usize::MAX / 2)
                .saturating_mul(1024 * 1024),
        }
    }

    /// True when the log has a retention bound (by age or by size), so retention sweeps run.
    pub fn retains(&self) -> bool {
        self.log_max_age_seconds > 0 || self.log_max_bytes > 0
    }

    /// Checks bounds and consistency.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.max_request_bytes < 1024 {
            return bad("exchange.max_request_bytes must be at least 1024".into());
        }
        if self.max_line_bytes < 256 {
            return bad("exchange.max_line_bytes must be at least 256".into());
        }
        if self.max_items_per_request == 0 {
            return bad("exchange.max_items_per_request must be at least 1".into());
        }
        if self.max_page_bytes < 1024 {
            return bad("exchange.max_page_bytes must be at least 1024".into());
        }
        if self.default_limit == 0 || self.max_limit == 0 || self.default_limit > self.max_limit {
            return bad("exchange: need 0 < default_limit <= max_limit".into());
        }
        if self.retention_interval_seconds == 0 {
            return bad("exchange.retention_interval_seconds must be at least 1".into());
        }
        for (org, name) in [(self.org, "org"), (self.instance, "instance")] {
            if org.is_some_and(|u| u.is_nil()) {
                return bad(format!("exchange.{name} must not be the nil UUID"));
            }
        }
        if self.backend == Backend::Nats {
            self.nats
                .validate()
                .map_err(|e| Error::Config(e.to_string()))?;
            // The stream's window must not outlast the store's horizons: a message the store
            // accepts again must not be refused by the stream as a duplicate.
            let window = self.nats.duplicate_window_seconds;
            if self.content_window_seconds < window
                || (self.seen_max_age_seconds > 0 && self.seen_max_age_seconds < window)
            {
                return bad(format!(
                    "with backend = \"nats\", content_window_seconds and seen_max_age_seconds \
                     (unless 0) must be at least [exchange.nats] duplicate_window_seconds ({window})"
                ));
            }
        }
        for (key, kc) in &self.keys {
            if key.trim().is_empty() || key.trim() != key {
                return bad("an [exchange.keys] key is empty or has surrounding spaces".into());
            }
            if kc.org.is_nil() {
                return bad("[exchange.keys] org must not be the nil UUID".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_default_and_valid() {
        let cfg: ExchangeConfig = toml::from_str("").expect("parses");
        cfg.validate().expect("valid");
        assert!(cfg.enabled && cfg.keys.is_empty());
        assert_eq!(
            cfg.seen_max_age_seconds, 0,
            "duplicates are remembered forever"
        );
    }

    /// The `[exchange]` section of the documented sample parses, validates and states the
    /// defaults.
    #[test]
    fn sample_section_parses() {
        let text = include_str!("../../../docs/sighthub.example.toml");
        let all: toml::Table = toml::from_str(text).expect("sample parses");
        let section = all.get("exchange").cloned().expect("[exchange] section");
        let cfg: ExchangeConfig = section.try_into().expect("section parses");
        cfg.validate().expect("sample is valid");
        let d = ExchangeConfig::default();
        assert_eq!(
            (
                cfg.max_request_bytes,
                cfg.content_window_seconds,
                cfg.default_limit,
                cfg.max_line_bytes,
                cfg.max_items_per_request,
                cfg.max_page_bytes,
            ),
            (
                d.max_request_bytes,
                d.content_window_seconds,
                d.default_limit,
                d.max_line_bytes,
                d.max_items_per_request,
                d.max_page_bytes,
            )
        );
        assert_eq!(cfg.keys.len(), 2);
    }

    #[test]
    fn keys_parse_and_bad_values_are_refused() {
        let cfg: ExchangeConfig = toml::from_str(
            r#"
            org = "28bc3db3-16da-461c-b20b-b944f4058708"
            [keys."k1"]
            org = "03c51929-eeab-4d47-9dc0-c667f94c7d2c"
            publish = ["intelmq/event"]
            read = ["*", "tag:feed:x"]
            tlp_max = "GREEN"
            "#,
        )
        .expect("parses");
        cfg.validate().expect("valid");
        let k = &cfg.keys["k1"];
        assert_eq!(k.tlp_max, Tlp::Green);
        assert_eq!(k.publish, vec![Feed::Type("intelmq/event".into())]);
        assert_eq!(k.read, vec![Feed::All, Feed::Tag("feed:x".into())]);
        assert!(!k.relay);
        assert_eq!(cfg.default_tlp, Tlp::Amber);

        assert!(toml::from_str::<ExchangeConfig>("nope = 1").is_err());
        // Feeds and TLP levels are refused when the file is read, naming the field.
        let key = |line: &str| {
            toml::from_str::<ExchangeConfig>(&format!(
                "[keys.\"k1\"]\norg = \"03c51929-eeab-4d47-9dc0-c667f94c7d2c\"\n{line}\n"
            ))
        };
        key("tlp_max = \"amber+strict\"").expect("a level");
        let e = key("tlp_max = \"PURPLE\"").expect_err("not a level");
        assert!(e.to_string().contains("not a TLP level"), "{e}");
        assert!(e.to_string().contains("tlp_max"), "{e}");
        let e = key("read = [\"tag:\"]").expect_err("not a feed");
        assert!(e.to_string().contains("'tag:' needs a tag prefix"), "{e}");
        assert!(key("publish = [\"a//b\"]").is_err());
        let e = toml::from_str::<ExchangeConfig>("default_tlp = \"PURPLE\"").expect_err("tlp");
        assert!(e.to_string().contains("default_tlp"), "{e}");
        assert_eq!(
            toml::from_str::<ExchangeConfig>("default_tlp = \"white\"")
                .expect("a level")
                .default_tlp,
            Tlp::Clear
        );
        let mut c = cfg;
        c.default_limit = c.max_limit + 1;
        assert!(c.validate().is_err());
    }
}
