//! Fuzzes the two `after=`/cursor decoders a client reaches: the sightings listing cursor
//! (`api::app::decode_cursor`) and the exchange's read cursor (`exchange::record`). Arbitrary
//! text never panics; a cursor that decodes is the canonical encoding of what it decodes to
//! (so two texts never name one position); and decode(encode(x)) == x for the values the
//! input spells.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_api::app::{decode_cursor as listing_decode, encode_cursor as listing_encode};
use sighthub_exchange::record::{decode_cursor, encode_cursor};

fuzz_target!(|data: &[u8]| {
    // Arbitrary text, as both decoders get it from a query string.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(stored) = listing_decode(text) {
            assert_eq!(
                listing_encode(&stored),
                text,
                "non-canonical listing cursor"
            );
        }
        if let Some((seq, epoch)) = decode_cursor(text) {
            assert_eq!(
                encode_cursor(seq, epoch),
                text.trim(),
                "non-canonical exchange cursor"
            );
        }
        // The listing cursor carries a stored value: any text round-trips.
        let c = listing_encode(text);
        assert_eq!(listing_decode(&c).ok().as_deref(), Some(text));
    }
    // Any (seq, epoch) round-trips.
    if let Some(b) = data.get(..16) {
        let seq = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let epoch = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        let c = encode_cursor(seq, epoch);
        assert_eq!(decode_cursor(&c), Some((seq, epoch)));
        assert_eq!(decode_cursor(&format!(" {c}\n")), Some((seq, epoch)));
    }
});
