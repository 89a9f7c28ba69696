//! Fuzzes the envelope decoder: arbitrary bytes must never panic, and whatever parses must
//! survive emit → parse unchanged (the model round trip), also after bare-event wrapping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_iep04::uuid::Uuid;
use sighthub_iep04::{Message, Receiver};

fn assert_round_trip(msg: &Message) {
    let text = msg.to_json();
    let back = match Message::from_json(&text) {
        Ok(back) => back,
        Err(e) => panic!("emitted form does not parse: {e}\n{text}"),
    };
    assert_eq!(&back, msg, "parse(emit(m)) != m for {text}");
    assert_eq!(back.to_json(), text, "emission is not deterministic");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::from_slice(data) {
        assert_round_trip(&msg);
        // Accessors must not panic on any accepted message.
        let _ = msg.tlp();
        let _ = msg.linked_uuids();
        let _ = msg.content_hash();
        let _ = msg.decoded_raw(1 << 16);
        let _ = msg.to_bare_event(true);
    }
    let receiver = Receiver::new(Uuid::from_u128(1), Some(Uuid::from_u128(2)));
    if let Ok(decoded) = receiver.decode(data) {
        assert_round_trip(&decoded.message);
    }
});
