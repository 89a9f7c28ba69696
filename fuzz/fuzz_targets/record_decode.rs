//! Fuzzes the stored-record decoder: never panics; decode ∘ encode is the identity.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_store::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::decode(data) {
        let again = Record::decode(&r.encode()).expect("re-encoded record decodes");
        assert_eq!(again, r);
    }
});
