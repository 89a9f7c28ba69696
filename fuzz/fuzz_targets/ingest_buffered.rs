//! Fuzzes the way every published message arrives: the buffered collector of
//! `exchange::ingest` (JSON array, one object, ND-JSON fallback, form body) and the streamed
//! ND-JSON path of `/iep04/messages`, and the one-message path of the IntelMQ TCP listener
//! and Redis reader (`Receiver::decode` + `prepare`), each followed by message preparation
//! with a fixed key. The first bytes pick the line limit, the chunk size and the key.
//!
//! Never panics, and: slots, items and refusals stay aligned; every prepared record decodes,
//! agrees with its `Prepared` (uuid, organisation, tags, payload and wrapped flags, TLP), its
//! envelope parses and round-trips, belongs to an organisation the key may speak for, and
//! prepares again to the same envelope (what a peer does with it); a body that falls back to
//! ND-JSON gives what streaming it gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_exchange::access::{Feed, Grants};
use sighthub_exchange::ingest::{prepare, BodyKind, Collector, ItemError, Slot};
use sighthub_exchange::record::{decode_log, EntryKind, FLAG_WRAPPED};
use sighthub_exchange::store::Prepared;
use sighthub_iep04::uuid::Uuid;
use sighthub_iep04::{Message, NdjsonReader, Receiver};
use std::sync::Arc;

const ORG: Uuid = Uuid::from_u128(0x28bc3db3_16da_461c_b20b_b944f4058708);
const INST: Uuid = Uuid::from_u128(0xabc);

fn grants(pick: u8) -> Grants {
    match pick % 3 {
        // A publishing key: intelmq feeds only, bare events tagged.
        0 => {
            let mut g = Grants::admin(ORG);
            g.admin = false;
            g.relay = false;
            g.publish = vec![Feed::Type("intelmq".into())];
            g.bare_tags = vec!["feed:rest".into()];
            g
        }
        // What the IntelMQ TCP and Redis transports use (`intelmq::sink::Sink::new`).
        1 => Grants {
            org: ORG,
            publish: vec![Feed::All],
            read: Vec::new(),
            tlp_max: sighthub_iep04::Tlp::Red,
            relay: false,
            admin: false,
            bare_tags: vec!["tcp".into()],
        },
        // The admin key (and the relay's pull path).
        _ => Grants::admin(ORG),
    }
}

/// Checks one prepared message against its record and the key.
fn check_prepared(p: &Prepared, g: &Grants) {
    let e = decode_log(&p.record).expect("a prepared record decodes");
    assert_eq!(e.kind, EntryKind::Message);
    assert_eq!(e.uuid, p.uuid);
    assert_eq!(e.org, p.org);
    let org = p.org.expect("a prepared message has an organisation");
    assert!(
        g.may_speak_for(org),
        "{org} prepared for a key of {}",
        g.org
    );
    assert_eq!(e.has_payload(), !p.empty_payload);
    assert_eq!(e.flags & FLAG_WRAPPED != 0, p.content_key.is_some());
    let tags: Vec<&str> = p.tags.iter().map(String::as_str).collect();
    assert_eq!(e.tags, tags);
    let text = std::str::from_utf8(e.json).expect("the stored envelope is UTF-8");
    let m = Message::from_json(text).unwrap_or_else(|err| panic!("{err}: {text}"));
    let meta = m.meta.as_ref().expect("a stored envelope has meta");
    assert_eq!(meta.uuid, p.uuid);
    assert_eq!(meta.uuid_org, p.org);
    assert_eq!(meta.tags, p.tags);
    assert_eq!(e.tlp, m.tlp());
    assert_eq!(e.format_type, format!("{}/{}", m.format, m.kind));
    let back = Message::from_json(&m.to_json()).expect("emitted envelope parses");
    assert_eq!(back, m, "stored envelope does not round-trip");
    // A peer receiving it prepares the same envelope.
    let decoded = Receiver::new(g.org, Some(INST))
        .decode(e.json)
        .expect("the stored envelope decodes");
    match prepare(decoded, g, INST) {
        Ok(again) => {
            let e2 = decode_log(&again.record).expect("record");
            assert_eq!(e2.json, e.json, "re-preparing changed the envelope");
            assert_eq!(again.uuid, p.uuid);
        }
        Err(ItemError::Invalid(err)) => panic!("stored envelope is invalid: {err}"),
        Err(ItemError::Refused(r)) => panic!("stored envelope is refused: {r}"),
    }
}

/// Checks a collector's bookkeeping and every prepared item; returns a comparable summary.
fn check(c: &Collector, g: &Grants) -> Vec<String> {
    let mut next = 0;
    let mut summary = Vec::new();
    for s in &c.slots {
        match s {
            Slot::Prepared(n) => {
                assert_eq!(*n, next, "prepared slots out of order");
                next += 1;
                let p = &c.items[*n];
                check_prepared(p, g);
                // Bare events get fresh uuids: compare what is not random.
                let e = decode_log(&p.record).expect("record");
                let m = Message::from_slice(e.json).expect("parses");
                summary.push(format!(
                    "ok {:?} {:?} {:?}",
                    p.content_key, m.payload, p.tags
                ));
            }
            Slot::Invalid(err) => {
                summary.push(format!("err {err}"));
                let _ = (err.line(), err.field());
            }
        }
    }
    assert_eq!(next, c.items.len(), "items without a slot");
    for r in &c.refused {
        assert!(
            matches!(c.slots.get(r.index), Some(Slot::Invalid(_))),
            "a refusal's slot is not invalid"
        );
    }
    summary
}

fn streamed(g: &Arc<Grants>, body: &[u8], max_line: usize, chunk: usize) -> Collector {
    let mut c = Collector::new(Arc::clone(g), INST);
    let mut r = NdjsonReader::new(max_line);
    for part in body.chunks(chunk.max(1)) {
        r.push(part);
        while let Some(line) = r.next_line() {
            c.add_line(line);
        }
    }
    for line in r.finish() {
        c.add_line(line);
    }
    c
}

fuzz_target!(|data: &[u8]| {
    let [max_line, chunk, pick, body @ ..] = data else {
        return;
    };
    let max_line = usize::from(*max_line) * 8 + 2;
    let g = Arc::new(grants(*pick));

    // Buffered, as labelled JSON (or unlabelled).
    let mut c = Collector::new(Arc::clone(&g), INST);
    let single = c.decode_buffered(BodyKind::from_content_type(None), body, max_line);
    let buffered = check(&c, &g);
    if single {
        assert!(c.len() <= 1, "a single body gave {} messages", c.len());
    }

    // Buffered, as a form.
    let mut c = Collector::new(Arc::clone(&g), INST);
    assert!(c.decode_buffered(BodyKind::Form, body, max_line));
    assert_eq!(c.len(), 1);
    check(&c, &g);

    // Streamed ND-JSON: whole, and in chunks.
    let whole = streamed(&g, body, max_line, body.len());
    let whole = check(&whole, &g);
    let chunked = streamed(&g, body, max_line, usize::from(*chunk));
    assert_eq!(check(&chunked, &g), whole, "chunking changed the messages");
    // A body that falls back to ND-JSON (a `{`, but not one JSON value) reads as streamed.
    if body.first() == Some(&b'{') && !single {
        assert_eq!(
            buffered, whole,
            "the ND-JSON fallback differs from streaming"
        );
    }

    // One TCP frame or Redis item.
    let receiver = Receiver::new(g.org, Some(INST));
    if let Ok(decoded) = receiver.decode(body) {
        if let Ok(p) = prepare(decoded, &g, INST) {
            check_prepared(&p, &g);
        }
    }
});
