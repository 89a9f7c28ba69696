//! Fuzzes the incremental ND-JSON reader: the first two bytes pick the line limit and the
//! chunk size; feeding the rest in chunks must give exactly what feeding it whole gives, and
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sighthub_iep04::uuid::Uuid;
use sighthub_iep04::{NdjsonReader, Receiver};

fn read(input: &[u8], max_line: usize, chunk: usize) -> Vec<Result<String, String>> {
    let receiver = Receiver::new(Uuid::from_u128(1), None);
    let mut reader = NdjsonReader::new(max_line);
    let mut out = Vec::new();
    let describe = |item: sighthub_iep04::Result<sighthub_iep04::Decoded>| match item {
        // Bare events get fresh uuids: compare payloads, not whole messages.
        Ok(d) => Ok(format!("{:?} {:?}", d.shape, d.message.payload)),
        Err(e) => {
            assert!(e.line().is_some(), "stream error without a line: {e}");
            Err(e.to_string())
        }
    };
    for part in input.chunks(chunk.max(1)) {
        reader.push(part);
        while let Some(item) = reader.next_message(&receiver) {
            out.push(describe(item));
        }
    }
    let mut rest = reader.finish();
    while let Some(item) = rest.next_message(&receiver) {
        out.push(describe(item));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [max_line, chunk, input @ ..] = data else {
        return;
    };
    let max_line = usize::from(*max_line) * 4;
    let whole = read(input, max_line, input.len());
    let chunked = read(input, max_line, usize::from(*chunk));
    assert_eq!(whole, chunked);
});
