//! Fuzzes the STIX bundle decoder (`sighthub_stix::decode`, what `import-stix` reads): never
//! panics; it stays within its limits; every observation has a value, a count of at least
//! one, a unique key and its `stix-type:` tag first, and no tag holds a separator; and an
//! observation exported again (`sighthub_stix::Exporter`) decodes to the same namespace,
//! value and count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_stix::export::Value;
use sighthub_stix::{decode, DecodeLimits, Exporter, Mapping, Settings, Untyped};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_bytes: 64 * 1024,
        max_objects: 256,
    };
    let mapping = Mapping::default();
    let Ok(decoded) = decode(data, &mapping, &limits) else {
        return;
    };
    assert!(decoded.objects <= limits.max_objects);
    let mut keys = std::collections::HashSet::new();
    for o in &decoded.observations {
        assert!(!o.value.is_empty());
        assert!(o.count >= 1);
        assert!(keys.insert(o.key.clone()), "keys are unique");
        assert!(o.tags[0].starts_with("stix-type:"));
        assert!(o.tags.iter().all(|t| !t.contains([',', ';'])), "{:?}", o.tags);
        let kind = &o.tags[0]["stix-type:".len()..];
        let plain = !kind.is_empty()
            && !kind.starts_with("file")
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !plain {
            continue;
        }
        let tags = o.tags.join(",");
        let mut ex = Exporter::new(&Settings::default(), Untyped::Skip, "bundle:fuzz");
        ex.push(
            &o.namespace,
            &Value {
                value: &o.value,
                first_seen: o.first_seen.unwrap_or(0),
                last_seen: o.last_seen.unwrap_or(0),
                count: o.count,
                tags: &tags,
                ttl: 0,
            },
        );
        let body = ex.finish().body;
        let again = decode(&body, &mapping, &DecodeLimits::default()).expect("an export decodes");
        let back = again
            .observations
            .iter()
            .find(|a| a.value == o.value)
            .expect("the value comes back");
        assert_eq!(back.namespace, o.namespace);
        assert_eq!(back.count, o.count.min(999_999_999));
    }
});
