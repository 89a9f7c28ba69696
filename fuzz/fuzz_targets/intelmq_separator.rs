//! Fuzzes IntelMQ's TCP frame decoder with a configured separator of 1..=8 fuzzer-chosen
//! bytes (the TCP output bot's `separator` parameter is free text), not only `\n`.
//!
//! Never panics, and: no frame is over the limit or contains the separator; feeding the
//! input in chunks gives exactly what feeding it whole gives; the frames, each followed by
//! the separator, are the start of the input; and frames joined by the separator decode back
//! to themselves (in any chunking) whenever the separator first occurs right after each frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_intelmq::frame::{Decoder, Framing};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn decode(sep: &[u8], max: usize, input: &[u8], chunk: usize) -> (Vec<Vec<u8>>, bool) {
    let mut d = Decoder::new(Framing::Separator(sep.to_vec()), max);
    let mut frames = Vec::new();
    for part in input.chunks(chunk.max(1)) {
        d.push(part);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.len() <= max, "frame of {} over the limit {max}", f.len());
                    assert!(!contains(&f, sep), "a frame holds the separator");
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
    let [sep_len, limit, chunk, rest @ ..] = data else {
        return;
    };
    let sep_len = usize::from(*sep_len % 8) + 1;
    if rest.len() < sep_len {
        return;
    }
    let (sep, input) = rest.split_at(sep_len);
    let max = usize::from(*limit) * 2;
    let (whole, whole_err) = decode(sep, max, input, input.len());
    let (chunked, chunked_err) = decode(sep, max, input, usize::from(*chunk));
    if !whole_err && !chunked_err {
        assert_eq!(whole, chunked, "chunking changed the frames");
    }
    // What was taken is the input's start, frame by frame.
    let mut taken = Vec::new();
    for f in &whole {
        taken.extend_from_slice(f);
        taken.extend_from_slice(sep);
    }
    assert!(
        input.starts_with(&taken),
        "the frames are not the input's start"
    );
    // Round trip: pieces of the input (cut at the chunk byte) joined by the separator decode
    // to themselves, for every piece the separator first occurs right after.
    let pieces: Vec<&[u8]> = input
        .split(|b| b == chunk)
        .filter(|f| {
            let mut w = f.to_vec();
            w.extend_from_slice(sep);
            f.len() <= max && w.windows(sep.len()).position(|x| x == sep) == Some(f.len())
        })
        .collect();
    let mut wire = Vec::new();
    for f in &pieces {
        wire.extend_from_slice(f);
        wire.extend_from_slice(sep);
    }
    let (again, err) = decode(sep, max, &wire, usize::from(*limit));
    assert!(!err, "joined frames within the limit refused");
    assert_eq!(again, pieces, "join/decode round trip");
});
