//! The `[dns]` section of the configuration, and the zone it describes once validated.
//!
//! ```toml
//! [dns]
//! listen = "127.0.0.1:5353"      # UDP and TCP; absent: no DNS server
//! zone = "bl.example.org"        # the zone answered; queries outside it are REFUSED
//! ttl_seconds = 60               # TTL of answers and of negative answers (SOA minimum)
//! shadow = false                 # record each lookup as a shadow sighting (_shadow/<ns>)
//! rate_limit_per_second = 500    # queries per second per client (IPv4 address, IPv6 /64)
//! max_tcp_connections = 128
//! max_tcp_connections_per_address = 8
//! tcp_idle_timeout_seconds = 10
//! max_in_flight = 256            # UDP lookups being answered at once; more are dropped
//!
//! [dns.zones]                    # DNS label → namespace; only these are exposed
//! ip = "feeds/misp/ipv4"
//! dom = "feeds/misp/domain"
//! ```

use hickory_proto::rr::Name;
use serde::Deserialize;
use sighthub_store::Namespace;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The `[dns]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Where the DNS server listens (UDP and TCP, same address). `None`: no DNS server.
    pub listen: Option<SocketAddr>,
    /// The zone answered ([`DnsConfig::DEFAULT_ZONE`]).
    pub zone: String,
    /// DNS label (one label, letters, digits, `-`) → namespace it exposes.
    pub zones: BTreeMap<String, String>,
    /// TTL of answers, also the SOA minimum (negative caching).
    pub ttl_seconds: u32,
    /// Record every lookup of a value as a shadow sighting, as an HTTP read does. Off by
    /// default: a mail server looks up every message, which would be a write per message.
    pub shadow: bool,
    /// Queries per second accepted from one client (an IPv4 address, an IPv6 /64).
    pub rate_limit_per_second: u32,
    /// TCP connections open at once; more are closed at once.
    pub max_tcp_connections: usize,
    /// TCP connections open at once from one client address.
    pub max_tcp_connections_per_address: usize,
    /// Seconds a TCP connection may stay without a complete query before it is closed.
    pub tcp_idle_timeout_seconds: u64,
    /// UDP queries being answered at once; more are dropped (the client retries).
    pub max_in_flight: usize,
}

impl DnsConfig {
    /// Default zone: a private single-label zone; set a name under your domain for
    /// resolvers that delegate to this server.
    pub const DEFAULT_ZONE: &'static str = "sighthub";
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            zone: Self::DEFAULT_ZONE.into(),
            zones: BTreeMap::new(),
            ttl_seconds: 60,
            shadow: false,
            rate_limit_per_second: 500,
            max_tcp_connections: 128,
            max_tcp_connections_per_address: 8,
            tcp_idle_timeout_seconds: 10,
            max_in_flight: 256,
        }
    }
}

/// True for a DNS label this server accepts in its configuration: 1–63 letters, digits and
/// `-`, not starting or ending with `-`.
fn is_ldh_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

impl DnsConfig {
    /// Checks the section; the error says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        self.build_zones().map(|_| ())?;
        if self.rate_limit_per_second == 0 {
            return Err("[dns] rate_limit_per_second must be at least 1".into());
        }
        if self.max_tcp_connections == 0
            || self.max_tcp_connections_per_address == 0
            || self.max_in_flight == 0
            || self.tcp_idle_timeout_seconds == 0
        {
            return Err("[dns] max_tcp_connections, max_tcp_connections_per_address, max_in_flight and tcp_idle_timeout_seconds must be at least 1".into());
        }
        if self.listen.is_some() && self.zones.is_empty() {
            return Err("[dns] listen is set but [dns.zones] is empty: map a label to each namespace to expose, e.g. ip = \"feeds/misp/ipv4\"".into());
        }
        Ok(())
    }

    /// The validated zone and label map.
    pub fn build_zones(&self) -> Result<Zones, String> {
        let zone_text = self.zone.trim_end_matches('.');
        if zone_text.is_empty() || zone_text.len() > 200 || !zone_text.split('.').all(is_ldh_label)
        {
            return Err(format!(
                "[dns] zone '{}' is not a DNS name of letters, digits and '-' (at most 200 bytes), e.g. \"bl.example.org\"",
                self.zone
            ));
        }
        let zone = Name::from_ascii(format!("{zone_text}."))
            .map_err(|e| format!("[dns] zone '{}': {e}", self.zone))?
            .to_lowercase();
        let mut labels = Vec::with_capacity(self.zones.len());
        for (label, ns) in &self.zones {
            if !is_ldh_label(label) {
                return Err(format!(
                    "[dns.zones] '{label}' is not one DNS label (letters, digits, '-', at most 63)"
                ));
            }
            let parsed =
                Namespace::parse(ns).map_err(|e| format!("[dns.zones] {label} = '{ns}': {e}"))?;
            if parsed.is_internal() {
                return Err(format!("[dns.zones] {label} = '{ns}' is a private namespace; only public ones can be exposed"));
            }
            labels.push((label.to_ascii_lowercase().into_bytes(), parsed));
        }
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        if labels.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("[dns.zones] two labels differ only in case".into());
        }
        let zone_labels = zone.iter().map(<[u8]>::to_vec).collect();
        Ok(Zones {
            zone,
            zone_labels,
            labels,
        })
    }
}

/// A validated zone: its name and the exposed namespaces by label.
#[derive(Debug, Clone)]
pub struct Zones {
    zone: Name,
    zone_labels: Vec<Vec<u8>>,
    labels: Vec<(Vec<u8>, Namespace)>,
}

impl Zones {
    /// The zone's name (lowercase, fully qualified).
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    /// The labels left of the zone (`None` when the name is not in the zone).
    pub fn strip_zone<'a, 'b>(&self, labels: &'a [&'b [u8]]) -> Option<&'a [&'b [u8]]> {
        let n = self.zone_labels.len();
        let cut = labels.len().checked_sub(n)?;
        let (rest, tail) = labels.split_at(cut);
        tail.iter()
            .zip(&self.zone_labels)
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
            .then_some(rest)
    }

    /// The namespace a label exposes (case-insensitive).
    pub fn namespace(&self, label: &[u8]) -> Option<&Namespace> {
        self.labels
            .iter()
            .find(|(l, _)| l.eq_ignore_ascii_case(label))
            .map(|(_, ns)| ns)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn cfg(zone: &str, zones: &[(&str, &str)]) -> DnsConfig {
        DnsConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            zone: zone.into(),
            zones: zones
                .iter()
                .map(|(a, b)| ((*a).into(), (*b).into()))
                .collect(),
            ..DnsConfig::default()
        }
    }

    #[test]
    fn the_zone_and_labels_are_checked() {
        assert!(cfg("bl.example.org.", &[("ip", "feeds/ipv4")])
            .validate()
            .is_ok());
        assert!(DnsConfig::default().validate().is_ok(), "off by default");
        for bad in ["", "a..b", "a_b.org", "-a.org"] {
            assert!(cfg(bad, &[("ip", "x")]).validate().is_err(), "{bad}");
        }
        assert!(
            cfg("bl.org", &[]).validate().is_err(),
            "listen without labels"
        );
        assert!(cfg("bl.org", &[("i p", "x")]).validate().is_err());
        assert!(cfg("bl.org", &[("_b32", "x")]).validate().is_err());
        let e = cfg("bl.org", &[("s", "_shadow/x")])
            .validate()
            .expect_err("private");
        assert!(e.contains("private namespace"), "{e}");
        assert!(cfg("bl.org", &[("ip", "a"), ("IP", "b")])
            .validate()
            .is_err());
    }

    #[test]
    fn names_are_matched_without_case() {
        let z = cfg("Bl.Example.org", &[("ip", "feeds/ipv4")])
            .build_zones()
            .expect("valid");
        let name: Vec<&[u8]> = vec![b"4", b"3", b"2", b"1", b"IP", b"bl", b"EXAMPLE", b"org"];
        let rest = z.strip_zone(&name).expect("in the zone");
        assert_eq!(rest.len(), 5);
        assert_eq!(
            z.namespace(rest[4]).map(Namespace::as_str),
            Some("feeds/ipv4")
        );
        assert_eq!(z.namespace(b"dom"), None);
        let outside: Vec<&[u8]> = vec![b"ip", b"example", b"org"];
        assert!(z.strip_zone(&outside).is_none());
        let short: Vec<&[u8]> = vec![b"org"];
        assert!(z.strip_zone(&short).is_none());
    }
}
