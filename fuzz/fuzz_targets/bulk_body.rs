//! Fuzzes the bulk-body decoder: never panics; every decoded item re-encodes to a body that
//! decodes to the same item.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_api::bulk;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = bulk::parse(data, usize::MAX) {
        for item in &body.items {
            let mut obj = serde_json::Map::new();
            obj.insert("namespace".into(), item.namespace.as_ref().into());
            obj.insert("value".into(), item.value.as_ref().into());
            if let Some(t) = item.timestamp {
                obj.insert("timestamp".into(), t.into());
            }
            if let Some(t) = item.ttl {
                obj.insert("ttl".into(), t.into());
            }
            if let Some(t) = &item.tags {
                obj.insert("tags".into(), t.as_ref().into());
            }
            obj.insert("noshadow".into(), item.noshadow.into());
            let text = serde_json::json!({ "items": [obj] }).to_string();
            let again = bulk::parse(text.as_bytes(), usize::MAX).expect("re-encoded item parses");
            assert_eq!(&again.items[0], item);
        }
    }
});
