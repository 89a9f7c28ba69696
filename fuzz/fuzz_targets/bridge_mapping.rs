//! Fuzzes the bridge's mapping (`bridge::mapping`) and time parsing (`bridge::time`).
//!
//! Arbitrary JSON, as an IntelMQ event or a whole envelope, never panics the mapping, and
//! every sighting keeps the module's promises: a configured field with a non-empty, trimmed
//! value; a namespace with exactly the template's segments, under the bridge's root, never
//! private, without control characters; tags `taxonomy:`/`type:`/`identifier:`/`tlp:` that
//! never split; a timestamp that is the arrival time or a parsed time within the range of
//! four-digit years. Arbitrary text never panics `parse_rfc3339`, and a time formatted the
//! way IntelMQ writes it (any offset, with or without a fraction) parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_bridge::config::{BridgeConfig, FeedConfig};
use sighthub_bridge::mapping::{of_event, sightings};
use sighthub_bridge::time::parse_rfc3339;
use sighthub_iep04::serde_json::{Map, Value};
use sighthub_iep04::uuid::Uuid;
use sighthub_iep04::Message;
use sighthub_store::Namespace;

/// Days since 1970-01-01 of a proleptic Gregorian date (an independent implementation).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Earliest and latest instants `parse_rfc3339` can spell: years 0000..=9999, offsets up
/// to ±99:99.
fn time_range() -> (i64, i64) {
    let slack = 99 * 3600 + 99 * 60;
    (
        days_from_civil(0, 1, 1) * 86_400 - slack,
        days_from_civil(9999, 12, 31) * 86_400 + 86_400 + slack,
    )
}

fn config(pick: u8) -> BridgeConfig {
    let mut cfg = BridgeConfig::default();
    if pick % 2 == 1 {
        cfg.template = "{org}/{field}".into();
        cfg.feeds.insert(
            "f".into(),
            FeedConfig {
                template: Some("feeds/{feed}/{taxonomy}/{field}/x".into()),
                ttl: Some(5),
            },
        );
    }
    cfg
}

fn check_event(payload: &Map<String, Value>, org: Option<Uuid>, arrived: i64, cfg: &BridgeConfig) {
    let (lo, hi) = time_range();
    let feed = payload
        .get("feed.name")
        .and_then(Value::as_str)
        .map(str::trim);
    let template = feed
        .and_then(|f| cfg.feeds.get(f))
        .and_then(|f| f.template.as_deref())
        .unwrap_or(&cfg.template);
    let segments = template.trim_matches('/').split('/').count();
    let root = template
        .trim_matches('/')
        .split('/')
        .next()
        .filter(|r| !r.contains('{'));
    for s in of_event(payload, org, arrived, cfg) {
        assert!(
            cfg.fields.contains(&s.field),
            "unconfigured field {}",
            s.field
        );
        assert!(
            !s.value.is_empty() && s.value.trim() == s.value,
            "{:?}",
            s.value
        );
        assert!(
            s.timestamp == arrived || (lo..=hi).contains(&s.timestamp),
            "timestamp {} out of range",
            s.timestamp
        );
        assert!(
            !s.namespace.chars().any(char::is_control),
            "{:?}",
            s.namespace
        );
        assert_eq!(
            s.namespace.split('/').count(),
            segments,
            "substituted text added a segment: {:?} from {template:?}",
            s.namespace
        );
        if let Some(root) = root {
            assert!(
                s.namespace.starts_with(&format!("{root}/")),
                "{:?} escapes the root {root}",
                s.namespace
            );
        }
        if let Ok(ns) = Namespace::parse(&s.namespace) {
            assert!(!ns.is_internal(), "private namespace {ns:?}");
            assert_eq!(ns.as_str(), s.namespace, "the namespace is not normalised");
        }
        for t in s.tags.split(',').filter(|t| !t.is_empty()) {
            assert!(
                ["taxonomy:", "type:", "identifier:", "tlp:"]
                    .iter()
                    .any(|p| t.starts_with(p)),
                "tag {t:?} split from {:?}",
                s.tags
            );
            assert!(!t.contains(';') && !t.chars().any(char::is_control));
        }
    }
}

fn check_time_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(t) = parse_rfc3339(text) {
        let (lo, hi) = time_range();
        assert!((lo..=hi).contains(&t), "{text:?} parsed to {t}");
    }
}

/// Formats a fuzzer-chosen instant as IntelMQ does and parses it back.
fn check_time_round_trip(data: &[u8]) {
    let Some(b) = data.get(..12) else {
        return;
    };
    let raw = i64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    // Instants whose local time is within years 0000..=9999 under any offset.
    let (lo, hi) = (
        days_from_civil(0, 1, 2) * 86_400,
        days_from_civil(9999, 12, 30) * 86_400,
    );
    let t = lo + raw.rem_euclid(hi - lo);
    let offset_min = i64::from(i16::from_le_bytes([b[8], b[9]])) % (24 * 60);
    let local = t + offset_min * 60;
    let (y, m, d) = civil_from_days(local.div_euclid(86_400));
    let secs = local.rem_euclid(86_400);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let sep = match b[10] % 3 {
        0 => 'T',
        1 => 't',
        _ => ' ',
    };
    let frac = match b[11] % 3 {
        0 => String::new(),
        1 => ".5".into(),
        _ => format!(".{:06}", b[11]),
    };
    let zone = if offset_min == 0 && b[11] & 4 != 0 {
        "Z".to_owned()
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        let o = offset_min.abs();
        if b[11] & 8 != 0 {
            format!("{sign}{:02}{:02}", o / 60, o % 60)
        } else {
            format!("{sign}{:02}:{:02}", o / 60, o % 60)
        }
    };
    let text = format!("{y:04}-{m:02}-{d:02}{sep}{hh:02}:{mm:02}:{ss:02}{frac}{zone}");
    assert_eq!(parse_rfc3339(&text), Some(t), "{text}");
}

fuzz_target!(|data: &[u8]| {
    check_time_text(data);
    check_time_round_trip(data);
    let [pick, arrived, json @ ..] = data else {
        return;
    };
    let cfg = config(*pick);
    let arrived = i64::from(*arrived) * 1_000_000_007;
    let org = (pick & 2 != 0).then(|| Uuid::from_u128(0x1234));
    if let Ok(Value::Object(payload)) = sighthub_iep04::serde_json::from_slice::<Value>(json) {
        check_event(&payload, org, arrived, &cfg);
    }
    if let Ok(msg) = Message::from_slice(json) {
        let n = sightings(&msg, arrived, &cfg).len();
        if let Some(p) = msg.payload.as_ref() {
            if msg.format.eq_ignore_ascii_case("intelmq") && msg.kind.eq_ignore_ascii_case("event")
            {
                let org = msg.meta.as_ref().and_then(|m| m.uuid_org);
                check_event(p, org, arrived, &cfg);
                assert_eq!(n, of_event(p, org, arrived, &cfg).len());
            }
        }
    }
});
