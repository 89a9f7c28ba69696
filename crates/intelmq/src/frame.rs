//! IntelMQ's TCP framing: a 4-byte big-endian length then the payload (the TCP output and
//! collector bots), or payloads ended by a separator (the TCP output's `separator`).
//!
//! [`Decoder`] is a pure, incremental decoder: push bytes as they arrive, pull complete
//! frames. It never panics on any input (fuzzed by `fuzz/fuzz_targets/intelmq_frame.rs`),
//! and bounds memory by `max_frame` (a larger frame is an error: the connection cannot
//! resynchronise on a length prefix, so the caller closes it).

/// How frames are delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// 4-byte big-endian length, then that many bytes.
    LengthPrefixed,
    /// Payload, then this non-empty separator (e.g. `\n`).
    Separator(Vec<u8>),
}

/// A frame that cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Longer than the configured maximum.
    #[error("frame of {len} bytes is larger than the maximum of {max}")]
    TooLarge {
        /// Its length (announced, or buffered so far without a separator).
        len: usize,
        /// The maximum.
        max: usize,
    },
}

/// Incremental frame decoder; see the [module docs](self).
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    max_frame: usize,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf` (compacted lazily, so reading is linear).
    start: usize,
    /// Where the separator search resumes (relative to `start`).
    scanned: usize,
}

impl Decoder {
    /// A decoder for `framing`, refusing frames over `max_frame` bytes.
    pub fn new(framing: Framing, max_frame: usize) -> Self {
        Decoder {
            framing,
            max_frame,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet part of a complete frame (at EOF: a truncated frame).
    pub fn pending(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let avail = self.buf.get(self.start..).unwrap_or_default();
        match &self.framing {
            Framing::LengthPrefixed => {
                let Some(head) = avail.get(..4) else {
                    return Ok(None);
                };
                let mut len_bytes = [0u8; 4];
                len_bytes.copy_from_slice(head);
                let len = u32::from_be_bytes(len_bytes) as usize;
                if len > self.max_frame {
                    return Err(FrameError::TooLarge {
                        len,
                        max: self.max_frame,
                    });
                }
                let Some(frame) = avail.get(4..4 + len) else {
                    return Ok(None);
                };
                let frame = frame.to_vec();
                self.start += 4 + len;
                Ok(Some(frame))
            }
            Framing::Separator(sep) => {
                if sep.is_empty() {
                    // Not constructible through the config; treat as one frame per push.
                    return Ok(None);
                }
                let from = self.scanned.saturating_sub(sep.len() - 1);
                let found = avail
                    .get(from..)
                    .unwrap_or_default()
                    .windows(sep.len())
                    .position(|w| w == sep.as_slice())
                    .map(|p| p + from);
                match found {
                    Some(end) => {
                        if end > self.max_frame {
                            return Err(FrameError::TooLarge {
                                len: end,
                                max: self.max_frame,
                            });
                        }
                        let frame = avail.get(..end).unwrap_or_default().to_vec();
                        self.start += end + sep.len();
                        self.scanned = 0;
                        Ok(Some(frame))
                    }
                    None => {
                        self.scanned = avail.len();
                        if avail.len() > self.max_frame + sep.len() {
                            return Err(FrameError::TooLarge {
                                len: avail.len(),
                                max: self.max_frame,
                            });
                        }
                        Ok(None)
                    }
                }
            }
        }
    }
}

/// Encodes one length-prefixed frame (what IntelMQ's TCP collector reads).
///
/// # Panics
/// Never: a payload over 4 GiB is refused by the caller's batch limits long before; its
/// length is saturated here rather than wrapped.
pub fn encode_length_prefixed(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_LEN: &[u8] =
        include_bytes!("../tests/data/tcp_output_length_prefixed_3frames.bin");
    const SAMPLE_SEP: &[u8] = include_bytes!("../tests/data/tcp_output_separator_newline.bin");

    fn all(d: &mut Decoder) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame().expect("frame") {
            out.push(f);
        }
        out
    }

    #[test]
    fn real_length_prefixed_sample_in_any_chunking() {
        for chunk in [1, 3, 7, 64, SAMPLE_LEN.len()] {
            let mut d = Decoder::new(Framing::LengthPrefixed, 1 << 20);
            let mut frames = Vec::new();
            for c in SAMPLE_LEN.chunks(chunk) {
                d.push(c);
                frames.extend(all(&mut d));
            }
            assert_eq!(frames.len(), 3, "chunk {chunk}");
            assert_eq!(d.pending(), 0);
            for f in &frames {
                let v: serde_json::Value = serde_json::from_slice(f).expect("JSON");
                assert!(v.get("raw").is_some());
            }
        }
    }

    #[test]
    fn real_separator_sample() {
        for chunk in [1, 5, SAMPLE_SEP.len()] {
            let mut d = Decoder::new(Framing::Separator(b"\n".to_vec()), 1 << 20);
            let mut frames = Vec::new();
            for c in SAMPLE_SEP.chunks(chunk) {
                d.push(c);
                frames.extend(all(&mut d));
            }
            assert_eq!(frames.len(), 3, "chunk {chunk}");
            assert!(frames
                .iter()
                .all(|f| serde_json::from_slice::<serde_json::Value>(f).is_ok()));
        }
    }

    #[test]
    fn multi_byte_separator_split_across_pushes() {
        let mut d = Decoder::new(Framing::Separator(b"\r\n".to_vec()), 100);
        d.push(b"{\"a\":1}\r");
        assert_eq!(d.next_frame(), Ok(None));
        d.push(b"\n{}");
        assert_eq!(d.next_frame(), Ok(Some(b"{\"a\":1}".to_vec())));
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.pending(), 2);
    }

    #[test]
    fn truncated_and_oversized() {
        let mut d = Decoder::new(Framing::LengthPrefixed, 10);
        d.push(&[0, 0, 0, 5, b'a']);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.pending(), 5);
        let mut d = Decoder::new(Framing::LengthPrefixed, 10);
        d.push(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
        let mut d = Decoder::new(Framing::Separator(b"\n".to_vec()), 4);
        d.push(b"0123456789");
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn encode_round_trips() {
        let mut out = Vec::new();
        encode_length_prefixed(b"{}", &mut out);
        encode_length_prefixed(b"", &mut out);
        let mut d = Decoder::new(Framing::LengthPrefixed, 10);
        d.push(&out);
        assert_eq!(all(&mut d), vec![b"{}".to_vec(), Vec::new()]);
    }
}
