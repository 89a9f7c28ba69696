//! Fuzzes IntelMQ's TCP frame decoder: the first bytes pick framing, limit and chunk size;
//! feeding the rest in chunks must give exactly what feeding it whole gives, never panic,
//! and every frame must round-trip through the encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_intelmq::frame::{encode_length_prefixed, Decoder, Framing};

fn decode(framing: &Framing, max: usize, input: &[u8], chunk: usize) -> (Vec<Vec<u8>>, bool) {
    let mut d = Decoder::new(framing.clone(), max);
    let mut frames = Vec::new();
    for part in input.chunks(chunk.max(1)) {
        d.push(part);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.len() <= max, "frame over the limit");
                    frames.push(f);
                }
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let [mode, limit, chunk, rest @ ..] = data else {
        return;
    };
    let framing = match mode % 3 {
        0 => Framing::LengthPrefixed,
        1 => Framing::Separator(b"\n".to_vec()),
        _ => Framing::Separator(b"\r\n".to_vec()),
    };
    let max = usize::from(*limit) * 4;
    let (whole, whole_err) = decode(&framing, max, rest, rest.len());
    let (chunked, chunked_err) = decode(&framing, max, rest, usize::from(*chunk));
    if !whole_err && !chunked_err {
        assert_eq!(whole, chunked, "chunking changed the frames");
    }
    if framing == Framing::LengthPrefixed && !whole_err {
        let mut wire = Vec::new();
        for f in &whole {
            encode_length_prefixed(f, &mut wire);
        }
        let (again, err) = decode(&framing, max, &wire, wire.len());
        assert!(!err);
        assert_eq!(again, whole, "encode/decode round trip");
    }
});
