//! Fuzzes the SightingDB snapshot decoder (`migrate::snapshot::decode`) on plain JSON and,
//! when the first byte says so, through zstd (`migrate::import::decode_file`'s path): never
//! a panic; every record is within the per-record bound; a stop request stops at once; and
//! a document that decodes gives the same records when decoded again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_migrate::snapshot::{decode, SdbRecord, MAX_RECORD_BYTES};

fn records(input: &[u8]) -> (Vec<SdbRecord>, bool) {
    let mut out = Vec::new();
    let ok = decode(input, |r| {
        // The namespace is read once for all its values; a value with its tags is read
        // within one record's budget.
        assert!(r.namespace.len() as u64 <= MAX_RECORD_BYTES, "namespace over the bound");
        assert!(
            (r.value.len() + r.tags.len()) as u64 <= MAX_RECORD_BYTES,
            "record over the bound"
        );
        assert!(r.stats.windows(2).all(|w| w[0].0 < w[1].0), "stats unsorted");
        out.push(r);
        true
    })
    .is_ok();
    (out, ok)
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    if mode & 1 == 1 {
        // Through zstd, as a shard: a bad frame is an error, never a panic.
        if let Ok(z) = zstd::stream::read::Decoder::new(rest) {
            let _ = decode(z, |_| true);
        }
        return;
    }
    let (first, ok) = records(rest);
    let (again, ok_again) = records(rest);
    assert_eq!((first.clone(), ok), (again, ok_again), "decoding is deterministic");
    // Stopping after the first record hands out exactly one.
    let mut seen = 0;
    let _ = decode(rest, |_| {
        seen += 1;
        false
    });
    assert!(seen <= 1);
    assert_eq!(seen, first.len().min(1));
});
