//! Fuzzes what the DNS front end decodes itself: the value encodings of a name
//! (`dns::encoding::decode`) and a whole query packet through `dns::answer::Responder` (the
//! header checks made before hickory-proto decodes the body, the zone and label matching, the
//! answer), over an in-memory store holding one value.
//!
//! Asserts besides "no panic": a decoded value is re-encoded by `encode` to labels that decode
//! to the same value by the same rule; the responder never answers a packet without a header
//! or a response, and otherwise answers with the query's id and the QR bit set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_dns::answer::{Reply, Responder};
use sighthub_dns::encoding::{decode, encode};
use sighthub_dns::DnsConfig;
use sighthub_store::{MemEngine, Namespace, SightingStore, Sightings, StoreOptions, WriteOp};
use std::sync::{Arc, OnceLock};

fn responder() -> &'static Responder {
    static R: OnceLock<Responder> = OnceLock::new();
    R.get_or_init(|| {
        let store = Sightings::new(MemEngine::new(), StoreOptions::default()).expect("store");
        let ns = Namespace::parse("feeds/ipv4").expect("ns");
        let _ = store
            .write(&[WriteOp::new(&ns, "1.2.3.4", 1_700_000_000)], 1_700_000_000)
            .expect("write");
        let mut cfg = DnsConfig {
            zone: "bl.example.org".into(),
            ..DnsConfig::default()
        };
        cfg.zones.insert("ip".into(), "feeds/ipv4".into());
        let store: Arc<dyn SightingStore> = Arc::new(store);
        Responder::new(cfg.build_zones().expect("zones"), store, 60, false)
    })
}

fuzz_target!(|data: &[u8]| {
    // The input as dotted labels.
    let labels: Vec<&[u8]> = data.split(|b| *b == b'.').collect();
    if let Ok((how, value)) = decode(&labels) {
        let again = encode(&value, how).expect("a decoded value has its encoding");
        let relabels: Vec<&[u8]> = again.split('.').map(str::as_bytes).collect();
        assert_eq!(decode(&relabels), Ok((how, value)), "round trip");
    }
    // The input as a packet.
    match responder().respond(data, true, 1_700_000_000) {
        Reply::Drop => assert!(data.len() < 12 || data[2] & 0x80 != 0),
        Reply::Send(answer) => {
            assert!(answer.len() >= 12);
            assert_eq!(answer[..2], data[..2], "the id is echoed");
            assert!(answer[2] & 0x80 != 0, "an answer");
        }
    }
});
