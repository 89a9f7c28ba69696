//! The `[intelmq]` configuration section: listeners, outputs and Redis queues.
//!
//! ```toml
//! [intelmq]
//! enabled = true
//!
//! [[intelmq.tcp_in]]            # IntelMQ's TCP output bot connects here
//! name = "from-intelmq"
//! listen = "127.0.0.1:5140"
//!
//! [[intelmq.out]]               # sighthub delivers to IntelMQ's TCP or API collector
//! name = "to-collector"
//! kind = "tcp"                  # or "api"
//! address = "127.0.0.1:5141"    # for "api": url = "http://127.0.0.1:5000/intelmq/push"
//! ```

use serde::Deserialize;
use sighthub_exchange::Feed;
use sighthub_iep04::Tlp;
use std::collections::HashSet;
use std::net::SocketAddr;
use uuid::Uuid;

/// The `[intelmq]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntelmqConfig {
    /// Run the transports below (needs the exchange). Off: nothing is started.
    pub enabled: bool,
    /// Listeners for IntelMQ's TCP output bot.
    pub tcp_in: Vec<TcpInConfig>,
    /// Deliveries of the exchange log to IntelMQ collectors.
    pub out: Vec<OutConfig>,
    /// IntelMQ Redis pipeline queues read into the exchange.
    pub redis_in: Vec<RedisInConfig>,
    /// IntelMQ Redis pipeline queues the exchange log is written into.
    pub redis_out: Vec<RedisOutConfig>,
}

/// How a listener's frames are delimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FramingKind {
    /// 4-byte big-endian length + JSON: the TCP output bot's default.
    #[default]
    Length,
    /// JSON + `separator` (the bot's `separator` parameter).
    Separator,
}

/// What to do with a frame that is not a valid message (bad JSON, unknown shape).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Log it and answer `Ok` (the bot would otherwise resend it forever and stall).
    #[default]
    Skip,
    /// Log it and close the connection without answering.
    Close,
}

/// One `[[intelmq.tcp_in]]` listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpInConfig {
    /// Name, for logs.
    pub name: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `length` (default) or `separator`.
    #[serde(default)]
    pub framing: FramingKind,
    /// Separator for `framing = "separator"` (default `"\n"`).
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Answer `Ok` after each durably accepted frame (`counterpart_is_intelmq` of the bot).
    #[serde(default = "yes")]
    pub ack: bool,
    /// `skip` (default) or `close`.
    #[serde(default)]
    pub invalid: OnInvalid,
    /// Largest frame in bytes; a larger one closes the connection.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// Most concurrent connections. One more closes the connection that has gone longest
    /// without completing a frame (and is not storing one); see `crate::tcp_in`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most concurrent connections from one client address (same rule, within that address).
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// A connection that completes no frame for this many seconds (silent, or trickling
    /// bytes) is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    /// Organisation the incoming events are published as (`meta.uuid_org`). Absent: the
    /// exchange's own organisation.
    #[serde(default)]
    pub org: Option<Uuid>,
    /// Tags added to every incoming bare event (so feeds can select them).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Where a new cursor starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// The first message still in the log.
    #[default]
    Beginning,
    /// What arrives from now on.
    End,
}

/// Kind of IntelMQ collector a delivery talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutKind {
    /// IntelMQ's TCP collector: length-prefixed frames, one `Ok` each, one connection.
    Tcp,
    /// IntelMQ's API collector: `POST <url>` with an ND-JSON body (use its JSON parser
    /// with `splitlines: true`).
    Api,
}

/// One `[[intelmq.out]]` delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutConfig {
    /// Name, also the name of its persisted cursor: renaming restarts the delivery.
    pub name: String,
    /// `tcp` or `api`.
    pub kind: OutKind,
    /// `host:port` of a TCP collector.
    pub address: Option<String>,
    /// URL of an API collector (`http://host:port/intelmq/push`).
    pub url: Option<String>,
    /// Seconds to wait for an answer before reconnecting and resending.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Feeds delivered (`*`, `format[/type]`, `tag:<prefix>`).
    #[serde(default = "default_read")]
    pub read: Vec<Feed>,
    /// Most restrictive TLP delivered (messages without TLP count as the exchange's
    /// `default_tlp`).
    #[serde(default = "default_tlp_max")]
    pub tlp_max: Tlp,
    /// A new cursor starts at the `beginning` of the log (default) or at its `end`.
    #[serde(default)]
    pub start: Start,
    /// Most events per delivery batch (one ND-JSON POST, one cursor update).
    #[serde(default = "default_batch")]
    pub batch: usize,
}

/// One `[[intelmq.redis_in]]` reader.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisInConfig {
    /// Name, for logs.
    pub name: String,
    /// `redis://host:port/db` (IntelMQ's pipeline uses database 2).
    pub url: String,
    /// The queue read (name this reader in a bot's `destination_queues` as `<queue>`);
    /// in-flight messages wait in `<queue>-internal`.
    pub queue: String,
    /// Organisation the incoming events are published as (`meta.uuid_org`). Absent: the
    /// exchange's own organisation.
    #[serde(default)]
    pub org: Option<Uuid>,
    /// Tags added to every incoming bare event (so feeds can select them).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Largest message taken, in bytes (the TCP listener's `max_frame_bytes`); a longer one
    /// is logged and dropped without being parsed.
    #[serde(default = "default_max_frame")]
    pub max_message_bytes: usize,
}

/// One `[[intelmq.redis_out]]` writer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisOutConfig {
    /// Name, also the name of its persisted cursor.
    pub name: String,
    /// `redis://host:port/db`.
    pub url: String,
    /// The queue written (`<bot-id>-queue` of the bot that should read it).
    pub queue: String,
    /// Feeds delivered (`*`, `format[/type]`, `tag:<prefix>`).
    #[serde(default = "default_read")]
    pub read: Vec<Feed>,
    /// Most restrictive TLP delivered (messages without TLP count as the exchange's
    /// `default_tlp`).
    #[serde(default = "default_tlp_max")]
    pub tlp_max: Tlp,
    /// A new cursor starts at the `beginning` of the log (default) or at its `end`.
    #[serde(default)]
    pub start: Start,
    /// Most events per delivery batch (one ND-JSON POST, one cursor update).
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn yes() -> bool {
    true
}
fn default_separator() -> String {
    "\n".into()
}
fn default_max_frame() -> usize {
    1 << 20
}
fn default_max_connections() -> usize {
    64
}
fn default_max_connections_per_address() -> usize {
    16
}
fn default_idle_timeout() -> u64 {
    300
}
fn default_read() -> Vec<Feed> {
    vec![Feed::Type("intelmq/event".into())]
}
fn default_tlp_max() -> Tlp {
    Tlp::Amber
}
fn default_batch() -> usize {
    500
}
fn default_timeout() -> u64 {
    15
}

impl IntelmqConfig {
    /// Checks names, addresses and values; the message names the offending entry.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        let mut name = |kind: &str, n: &str| {
            if n.is_empty() || !names.insert(format!("{kind}/{n}")) {
                return Err(format!(
                    "[[intelmq.{kind}]] name '{n}' is empty or repeated"
                ));
            }
            Ok(())
        };
        for l in &self.tcp_in {
            name("tcp_in", &l.name)?;
            if l.framing == FramingKind::Separator && l.separator.is_empty() {
                return Err(format!("[[intelmq.tcp_in]] '{}': empty separator", l.name));
            }
            if l.max_frame_bytes == 0
                || l.max_connections == 0
                || l.max_connections_per_address == 0
                || l.idle_timeout_seconds == 0
            {
                return Err(format!(
                    "[[intelmq.tcp_in]] '{}': max_frame_bytes, max_connections, max_connections_per_address and idle_timeout_seconds must be > 0",
                    l.name
                ));
            }
        }
        for o in &self.out {
            name("out", &o.name)?;
            let bad = |r: String| format!("[[intelmq.out]] '{}': {r}", o.name);
            if o.batch == 0 || o.timeout_seconds == 0 {
                return Err(bad("batch and timeout_seconds must be > 0".into()));
            }
            match o.kind {
                OutKind::Tcp if o.address.as_deref().is_none_or(str::is_empty) => {
                    return Err(bad("kind = \"tcp\" needs address".into()))
                }
                OutKind::Api
                    if !o
                        .url
                        .as_deref()
                        .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://")) =>
                {
                    return Err(bad("kind = \"api\" needs an http(s) url".into()))
                }
                _ => {}
            }
        }
        for r in &self.redis_in {
            name("redis_in", &r.name)?;
            if r.max_message_bytes == 0 {
                return Err(format!(
                    "[[intelmq.redis_in]] '{}': max_message_bytes must be > 0",
                    r.name
                ));
            }
            if !r.url.starts_with("redis://") || r.queue.is_empty() {
                return Err(format!(
                    "[[intelmq.redis_in]] '{}': needs a redis:// url and a queue",
                    r.name
                ));
            }
        }
        for r in &self.redis_out {
            name("redis_out", &r.name)?;
            let bad = |m: String| format!("[[intelmq.redis_out]] '{}': {m}", r.name);
            if !r.url.starts_with("redis://") || r.queue.is_empty() || r.batch == 0 {
                return Err(bad("needs a redis:// url, a queue and batch > 0".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let cfg: IntelmqConfig = toml_like(
            r#"{"enabled": true,
                "tcp_in": [{"name": "a", "listen": "127.0.0.1:5140", "tags": ["x"]}],
                "out": [{"name": "b", "kind": "api", "url": "http://127.0.0.1:1/intelmq/push"}]}"#,
        );
        cfg.validate().expect("valid");
        assert_eq!(cfg.tcp_in[0].framing, FramingKind::Length);
        assert!(cfg.tcp_in[0].ack);
        assert_eq!(cfg.tcp_in[0].tags, vec!["x".to_owned()]);
        assert_eq!(cfg.out[0].batch, 500);

        let bad: IntelmqConfig = toml_like(r#"{"out": [{"name": "b", "kind": "tcp"}]}"#);
        assert!(bad.validate().is_err());
        let dup: IntelmqConfig = toml_like(
            r#"{"tcp_in": [{"name": "a", "listen": "127.0.0.1:1"}, {"name": "a", "listen": "127.0.0.1:2"}]}"#,
        );
        assert!(dup.validate().expect_err("dup").contains("repeated"));
    }

    /// A delivery's feeds and TLP ceiling are read by the exchange's one parser, when the
    /// configuration is read; the defaults are `intelmq/event` up to `AMBER`.
    #[test]
    fn deliveries_read_feeds_and_tlp_once() {
        let cfg: IntelmqConfig = toml_like(
            r#"{"out": [{"name": "b", "kind": "tcp", "address": "127.0.0.1:1",
                         "read": ["tag:feed:x", "*"], "tlp_max": "tlp:green"}],
                "redis_out": [{"name": "r", "url": "redis://127.0.0.1/2", "queue": "q"}]}"#,
        );
        cfg.validate().expect("valid");
        assert_eq!(cfg.out[0].read, vec![Feed::Tag("feed:x".into()), Feed::All]);
        assert_eq!(cfg.out[0].tlp_max, Tlp::Green);
        assert_eq!(
            cfg.redis_out[0].read,
            vec![Feed::Type("intelmq/event".into())]
        );
        assert_eq!(cfg.redis_out[0].tlp_max, Tlp::Amber);
        for (bad, says) in [
            (
                r#"{"out": [{"name": "b", "kind": "tcp", "read": ["a//b"]}]}"#,
                "'a//b' is not a feed",
            ),
            (
                r#"{"out": [{"name": "b", "kind": "tcp", "tlp_max": "PURPLE"}]}"#,
                "not a TLP level",
            ),
            (
                r#"{"redis_out": [{"name": "r", "url": "redis://x", "queue": "q", "read": ["tag:"]}]}"#,
                "'tag:' needs a tag prefix",
            ),
        ] {
            let e = serde_json::from_str::<IntelmqConfig>(bad).expect_err(bad);
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    fn toml_like(json: &str) -> IntelmqConfig {
        serde_json::from_str(json).expect("parses")
    }
}
