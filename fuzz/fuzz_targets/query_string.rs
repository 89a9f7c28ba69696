//! Fuzzes the query-string decoder: never panics; what parses re-parses the same after
//! re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_api::query::Query;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = Query::parse(s) {
        if let Some(val) = &q.val {
            let enc: String = form_urlencoded::byte_serialize(val.as_bytes()).collect();
            let again = Query::parse(&format!("val={enc}")).expect("re-encoded val parses");
            assert_eq!(again.val.as_deref(), Some(val.as_str()));
        }
    }
});
