//! Fuzzes what the relay takes from a peer (`relay::answer_of`, `relay::push`,
//! `relay::pull`): the status and body of an answer, a peer's counts for a pushed batch,
//! and a pulled page, prepared and collected the way the pull task appends it.
//!
//! Never panics (also on counts near `u64::MAX`: the target builds such answers itself), and:
//! an answer is taken only with a 2xx (or a 400 with per-item errors, when allowed); counts
//! are taken only when they add up to the batch; a page's messages are each either counted
//! as already crossed or passed on; each passed-on message is one slot of the local collector,
//! and every message the collector prepares records the hub on its path and never this
//! instance.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_exchange::access::Grants;
use sighthub_exchange::ingest::Collector;
use sighthub_exchange::record::decode_log;
use sighthub_iep04::serde_json::{json, Value};
use sighthub_iep04::uuid::Uuid;
use sighthub_relay::path::Routed;
use sighthub_relay::pull::{page_of, prepare_page};
use sighthub_relay::push::answer_counts;
use sighthub_relay::{answer_of, Error};
use std::sync::Arc;

const ME: Uuid = Uuid::from_u128(0x1111_1111_1111_4111_8111_1111_1111_1111);
const HUB: Uuid = Uuid::from_u128(0x2222_2222_2222_4222_8222_2222_2222_2222);
const ORG: Uuid = Uuid::from_u128(0x3333);

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    for (k, x) in w.iter_mut().enumerate() {
        *x = b.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(w)
}

fn check_counts(v: &Value, count: u64) {
    if let Some((a, d, e)) = answer_counts(v, count) {
        assert_eq!(
            a.checked_add(d).and_then(|x| x.checked_add(e)),
            Some(count),
            "counts taken that do not add up to the batch"
        );
    }
}

fn check_page(v: Value) {
    let Some((_cursor, messages)) = page_of(v) else {
        return;
    };
    let n = messages.len();
    let (lines, own) = prepare_page(messages, ME, HUB);
    assert_eq!(
        lines.len() as u64 + own,
        n as u64,
        "messages lost from a page"
    );
    if lines.is_empty() {
        return;
    }
    // What `pull::ingest` does with them: each parsed message taken as it is.
    let n = lines.len();
    let mut col = Collector::new(Arc::new(Grants::admin(ORG)), ME);
    for line in lines {
        col.add_value(line, 1 << 20);
    }
    assert_eq!(col.len(), n, "one slot per message of the page");
    for p in &col.items {
        let e = decode_log(&p.record).expect("record");
        let r = Routed::parse(e.json).expect("the stored envelope is an object");
        assert_eq!(r.came_from(), Some(HUB), "the hub is not last on the path");
        assert!(
            !r.crossed(&ME),
            "a message that crossed this instance was taken"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, s_lo, s_hi, count, rest @ ..] = data else {
        return;
    };
    if mode & 1 == 0 {
        // Structured counts (any u64), as a peer could answer them.
        let (a, d, e, c) = (
            u64_at(rest, 0),
            u64_at(rest, 1),
            u64_at(rest, 2),
            u64_at(rest, 3),
        );
        let v = json!({"accepted": a, "duplicate": d, "errors": e, "results": []});
        check_counts(&v, c);
        check_counts(&v, a.wrapping_add(d).wrapping_add(e));
        return;
    }
    let status = 100 + u16::from_le_bytes([*s_lo, *s_hi]) % 500;
    let allow_400 = mode & 2 != 0;
    match answer_of(status, rest, "peer", allow_400) {
        Ok(v) => {
            assert!(
                (200..300).contains(&status)
                    || (allow_400 && status == 400 && v.get("errors").is_some()),
                "answer of status {status} taken"
            );
            check_counts(&v, u64::from(*count));
            check_page(v);
        }
        Err(Error::Status {
            status: s, body, ..
        }) => {
            assert_eq!(s, status);
            assert!(body.chars().count() <= 300, "an unbounded error body");
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
});
