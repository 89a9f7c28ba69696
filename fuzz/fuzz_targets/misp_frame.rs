//! Fuzzes MISP's ZeroMQ frame decoder (`misp::frame::decode`) and the attribute mapping
//! (`misp::mapping`): arbitrary bytes never panic either, a frame over the limit is always
//! refused, and every sighting keeps the mapping's promises: a non-empty value, trimmed, no
//! longer than its attribute's; a namespace under the prefix (or the hashed one), never
//! private; tags that fit the store's limits and never split.
//!
//! Input: one byte choosing the limit and the mapping options, then the frame. Seed the corpus
//! with a few MISP frames (`misp_json {"Event": …}`, `misp_json_attribute {…}`): random bytes
//! rarely get past the topic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_misp::config::ZmqConfig;
use sighthub_misp::frame::{decode, Decoded, FrameError};
use sighthub_misp::mapping::Mapping;
use sighthub_store::Limits;

fuzz_target!(|data: &[u8]| {
    let [pick, rest @ ..] = data else {
        return;
    };
    let max = if pick & 1 == 0 { 1 << 20 } else { 64 };
    let decoded = decode(rest, max);
    if rest.len() > max {
        assert!(matches!(decoded, Err(FrameError::TooLarge(..))));
        return;
    }
    let Ok(Decoded::Attributes { attributes, .. }) = decoded else {
        return;
    };
    let cfg = ZmqConfig {
        enabled: true,
        only_to_ids: pick & 2 != 0,
        tags: pick & 4 != 0,
        hashed_namespace: if pick & 8 != 0 { "misp/hashed".into() } else { String::new() },
        ..ZmqConfig::default()
    };
    let mapping = Mapping::new(&cfg).expect("the defaults map");
    let limits = Limits {
        max_tags_per_item: 3,
        max_tag_len: 16,
        ..Limits::default()
    };
    for a in &attributes {
        assert!(!a.kind.is_empty() && !a.value.is_empty());
        for s in mapping.sightings(a, 7, &limits) {
            assert!(!s.value.is_empty() && s.value.trim() == s.value, "{:?}", s.value);
            assert!(s.value.len() <= a.value.len());
            assert!(!s.namespace.is_internal());
            assert!(s.namespace.as_str().starts_with("misp/"), "{:?}", s.namespace);
            assert!(!cfg.only_to_ids || a.to_ids);
            assert_eq!(s.timestamp, a.timestamp.unwrap_or(7));
            let tags: Vec<&str> = s.tags.split(',').filter(|t| !t.is_empty()).collect();
            assert!(tags.len() <= 3 && tags.iter().all(|t| t.len() <= 16 && !t.contains(';')));
            assert!(cfg.tags || tags.is_empty());
        }
    }
});
