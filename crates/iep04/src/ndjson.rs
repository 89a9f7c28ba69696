//! Incremental ND-JSON reading and writing.
//!
//! [`NdjsonReader`] is fed byte chunks as they arrive ([`push`](NdjsonReader::push)) and hands
//! out complete lines ([`next_line`](NdjsonReader::next_line)) or decoded messages
//! ([`next_message`](NdjsonReader::next_message)), one result per line, so one bad line does not
//! end the stream. Rules:
//!
//! - Lines end with `\n`; a `\r` before it is dropped. Line numbers are 1-based and count every
//!   line, blank ones included. Blank (whitespace-only) lines are skipped. A UTF-8 byte-order
//!   mark at the start of the stream is skipped.
//! - A line longer than the limit (terminator excluded) yields [`Error::LineTooLong`] once; its
//!   bytes are discarded up to the next `\n` without being buffered, so memory stays bounded by
//!   the limit plus one chunk.
//! - A line that is not UTF-8 yields [`Error::InvalidUtf8`].
//! - At the end of input, [`finish`](NdjsonReader::finish) yields the lines still buffered and
//!   then the unterminated tail, if any: as a line (a body without a final newline, as HTTP
//!   clients send), or as [`Error::TruncatedLine`] when it ends in the middle of a JSON value.

use serde::de::IgnoredAny;

use crate::bare::{Decoded, Receiver};
use crate::error::{Error, Result};
use crate::model::Message;

/// A default line limit: 1 MiB, far above an IntelMQ event (about 1 KiB on the wire).
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One complete, non-blank line of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number.
    pub number: u64,
    /// The text, without its terminator.
    pub text: String,
}

impl Line {
    /// Decodes the line as a message (envelope or bare event); errors carry the line number.
    pub fn decode(&self, receiver: &Receiver) -> Result<Decoded> {
        receiver
            .decode(self.text.as_bytes())
            .map_err(|e| e.at_line(self.number))
    }
}

/// Incremental ND-JSON line reader; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct NdjsonReader {
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    /// `buf[start..scanned]` holds no `\n`: resume the search there.
    scanned: usize,
    max_line: usize,
    /// Lines completed so far; the line being read is `lines_done + 1`.
    lines_done: u64,
    /// Inside an over-long line (already reported), skipping to its end.
    discarding: bool,
}

impl NdjsonReader {
    /// A reader refusing lines longer than `max_line` bytes (terminator excluded).
    pub fn new(max_line: usize) -> Self {
        NdjsonReader {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_line,
            lines_done: 0,
            discarding: false,
        }
    }

    /// Appends a chunk of input.
    pub fn push(&mut self, mut chunk: &[u8]) {
        if self.discarding {
            match memchr_nl(chunk) {
                None => return,
                Some(p) => {
                    self.discarding = false;
                    self.lines_done += 1;
                    chunk = chunk.get(p + 1..).unwrap_or_default();
                }
            }
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes buffered that do not yet form a complete line.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete line, or the error of the next bad line; `None` when more input is
    /// needed.
    pub fn next_line(&mut self) -> Option<Result<Line>> {
        loop {
            if self.discarding {
                // Everything buffered belongs to the over-long line.
                self.start = self.buf.len();
                self.scanned = self.start;
                return None;
            }
            let rest = self.buf.get(self.scanned..).unwrap_or_default();
            let Some(offset) = memchr_nl(rest) else {
                self.scanned = self.buf.len();
                // A trailing `\r` may still be part of the terminator: allow one byte more.
                if self.pending_line_len() > self.max_line.saturating_add(1) {
                    self.discarding = true;
                    self.start = self.buf.len();
                    self.scanned = self.start;
                    return Some(Err(Error::LineTooLong {
                        line: self.lines_done + 1,
                        max: self.max_line,
                    }));
                }
                return None;
            };
            let end = self.scanned + offset;
            let line_start = self.start;
            self.start = end + 1;
            self.scanned = self.start;
            self.lines_done += 1;
            let raw = self.buf.get(line_start..end).unwrap_or_default();
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if let Some(item) = self.check_line(raw, self.lines_done) {
                return Some(item);
            }
        }
    }

    /// Length of the incomplete line so far, not counting a (partial) byte-order mark on
    /// line 1, so that the limit is applied the same way however the input is chunked.
    fn pending_line_len(&self) -> usize {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        if self.lines_done == 0 {
            let k = pending.len().min(BOM.len());
            if pending.get(..k) == BOM.get(..k) {
                return pending.len() - k;
            }
        }
        pending.len()
    }

    /// Validates one line's bytes; `None` for a blank line.
    fn check_line(&self, raw: &[u8], number: u64) -> Option<Result<Line>> {
        let raw = if number == 1 {
            raw.strip_prefix(BOM).unwrap_or(raw)
        } else {
            raw
        };
        if raw.len() > self.max_line {
            return Some(Err(Error::LineTooLong {
                line: number,
                max: self.max_line,
            }));
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(match std::str::from_utf8(raw) {
            Ok(text) => Ok(Line {
                number,
                text: text.to_owned(),
            }),
            Err(e) => Err(Error::InvalidUtf8 {
                line: number,
                offset: e.valid_up_to(),
            }),
        })
    }

    /// The next line decoded as a message; see [`NdjsonReader::next_line`] and
    /// [`Receiver::decode`].
    pub fn next_message(&mut self, receiver: &Receiver) -> Option<Result<Decoded>> {
        self.next_line()
            .map(|line| line.and_then(|l| l.decode(receiver)))
    }

    /// Ends the input: the returned iterator yields what is still buffered, including the
    /// unterminated tail (see the [module docs](self)).
    pub fn finish(self) -> Remaining {
        Remaining {
            reader: self,
            tail_done: false,
        }
    }
}

impl Default for NdjsonReader {
    fn default() -> Self {
        NdjsonReader::new(DEFAULT_MAX_LINE)
    }
}

/// The lines left when input has ended; from [`NdjsonReader::finish`].
#[derive(Debug, Clone)]
pub struct Remaining {
    reader: NdjsonReader,
    tail_done: bool,
}

impl Remaining {
    /// The next remaining line decoded as a message.
    pub fn next_message(&mut self, receiver: &Receiver) -> Option<Result<Decoded>> {
        self.next()
            .map(|line| line.and_then(|l| l.decode(receiver)))
    }
}

impl Iterator for Remaining {
    type Item = Result<Line>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(item) = self.reader.next_line() {
            return Some(item);
        }
        if self.tail_done {
            return None;
        }
        self.tail_done = true;
        let r = &mut self.reader;
        if r.discarding {
            // The over-long line was reported when it crossed the limit.
            return None;
        }
        let number = r.lines_done + 1;
        let tail = r.buf.get(r.start..).unwrap_or_default();
        let tail = tail.strip_suffix(b"\r").unwrap_or(tail);
        let item = match r.check_line(tail, number)? {
            // A tail that is not JSON for another reason than its end is an ordinary line:
            // decoding it says what is wrong where.
            Ok(line)
                if serde_json::from_str::<IgnoredAny>(&line.text)
                    .map_or_else(|e| !e.is_eof(), |_| true) =>
            {
                Ok(line)
            }
            Ok(line) => Err(Error::TruncatedLine {
                line: number,
                len: line.text.len(),
            }),
            Err(e) => Err(e),
        };
        r.start = r.buf.len();
        r.scanned = r.start;
        Some(item)
    }
}

/// Decodes a complete ND-JSON body (e.g. one HTTP request), one result per non-blank line.
pub fn decode_ndjson(body: &[u8], max_line: usize, receiver: &Receiver) -> Vec<Result<Decoded>> {
    let mut reader = NdjsonReader::new(max_line);
    reader.push(body);
    let mut out = Vec::new();
    while let Some(item) = reader.next_message(receiver) {
        out.push(item);
    }
    let mut rest = reader.finish();
    while let Some(item) = rest.next_message(receiver) {
        out.push(item);
    }
    out
}

/// Encodes messages as ND-JSON (decided form, one per line, each line ending with `\n`).
pub fn encode_ndjson<'a>(messages: impl IntoIterator<Item = &'a Message>) -> String {
    messages.into_iter().map(Message::to_ndjson_line).collect()
}

fn memchr_nl(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn lines(reader: &mut NdjsonReader) -> Vec<Result<Line>> {
        std::iter::from_fn(|| reader.next_line()).collect()
    }

    fn text(item: &Result<Line>) -> Option<(u64, &str)> {
        item.as_ref().ok().map(|l| (l.number, l.text.as_str()))
    }

    #[test]
    fn crlf_blank_lines_and_chunk_boundaries() {
        let input = b"\xEF\xBB\xBF{\"a\":1}\r\n\r\n  \n{\"b\":2}\n{\"c\":";
        // Every split point gives the same result.
        for split in 0..=input.len() {
            let mut r = NdjsonReader::new(64);
            r.push(&input[..split]);
            let mut got = lines(&mut r);
            r.push(&input[split..]);
            got.extend(lines(&mut r));
            let got: Vec<_> = got.iter().map(text).collect();
            assert_eq!(
                got,
                vec![Some((1, "{\"a\":1}")), Some((4, "{\"b\":2}"))],
                "split {split}"
            );
            assert_eq!(r.pending(), 5);
            let rest: Vec<_> = r.finish().collect();
            assert!(matches!(
                rest.as_slice(),
                [Err(Error::TruncatedLine { line: 5, len: 5 })]
            ));
        }
    }

    #[test]
    fn a_value_cut_short_says_so_and_other_tails_are_lines() {
        let mut r = NdjsonReader::new(64);
        r.push(b"{\"uuid");
        let rest: Vec<_> = r.finish().collect();
        let [Err(e)] = rest.as_slice() else {
            panic!("{rest:?}")
        };
        let said = e.to_string();
        assert!(
            said.starts_with("line 1: the body ends in the middle of a JSON value (6 bytes"),
            "{said}"
        );
        let mut r = NdjsonReader::new(64);
        r.push(b"{bad}");
        let rest: Vec<_> = r.finish().collect();
        assert_eq!(
            rest.iter().map(text).collect::<Vec<_>>(),
            vec![Some((1, "{bad}"))]
        );
    }

    #[test]
    fn unterminated_complete_json_is_a_line() {
        let mut r = NdjsonReader::new(64);
        r.push(b"{\"a\":1}\n{\"b\":2}\r");
        assert_eq!(lines(&mut r).len(), 1);
        let rest: Vec<_> = r.finish().collect();
        assert_eq!(
            rest.iter().map(text).collect::<Vec<_>>(),
            vec![Some((2, "{\"b\":2}"))]
        );
        let mut r = NdjsonReader::new(64);
        r.push(b"{}\n   ");
        assert_eq!(lines(&mut r).len(), 1);
        assert_eq!(r.finish().count(), 0, "blank tail is nothing");
    }

    #[test]
    fn over_long_line_is_reported_once_and_skipped() {
        // Complete over-long line in one chunk.
        let mut r = NdjsonReader::new(8);
        r.push(b"{\"a\":12345}\n{\"b\":1}\n");
        let got = lines(&mut r);
        assert!(matches!(
            got[0],
            Err(Error::LineTooLong { line: 1, max: 8 })
        ));
        assert_eq!(text(&got[1]), Some((2, "{\"b\":1}")));

        // Over-long line trickling in: reported as soon as it crosses the limit, not buffered.
        let mut r = NdjsonReader::new(8);
        let mut got = Vec::new();
        for _ in 0..1000 {
            r.push(b"xxxxxxx");
            got.extend(lines(&mut r));
            assert!(r.pending() <= 16);
        }
        r.push(b"yy\r\n{}\n");
        got.extend(lines(&mut r));
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].as_ref().unwrap_err().to_string(),
            "line 1: longer than 8 bytes"
        );
        assert_eq!(text(&got[1]), Some((2, "{}")));

        // Exactly at the limit, with CRLF, is fine.
        let mut r = NdjsonReader::new(8);
        r.push(b"12345678\r");
        assert!(lines(&mut r).is_empty());
        r.push(b"\n");
        assert_eq!(text(&lines(&mut r)[0]), Some((1, "12345678")));

        // Over-long unterminated tail.
        let mut r = NdjsonReader::new(4);
        r.push(b"{}\n123456");
        let got = lines(&mut r);
        assert!(matches!(got[1], Err(Error::LineTooLong { line: 2, .. })));
        assert_eq!(r.finish().count(), 0);
    }

    #[test]
    fn invalid_utf8_is_an_error_for_that_line_only() {
        let mut r = NdjsonReader::new(64);
        r.push(b"{\"a\":\"\xff\"}\n{}\n");
        let got = lines(&mut r);
        assert!(matches!(
            got[0],
            Err(Error::InvalidUtf8 { line: 1, offset: 6 })
        ));
        assert_eq!(text(&got[1]), Some((2, "{}")));
        let mut r = NdjsonReader::new(64);
        r.push(b"\xc3");
        assert!(matches!(
            r.finish().next(),
            Some(Err(Error::InvalidUtf8 { line: 1, .. }))
        ));
    }

    #[test]
    fn messages_per_line_and_encode() {
        let rx = Receiver::new(Uuid::from_u128(1), None);
        let body = b"{\"source.ip\":\"198.51.100.1\"}\n{\"format\":\"intelmq\",\"version\":1,\"type\":\"event\",\"meta\":{\"uuid\":\"bad\"}}\nnot json\n{\"tlp\":\"RED\"}";
        let got = decode_ndjson(body, 1024, &rx);
        assert_eq!(got.len(), 4);
        assert!(got[0].is_ok() && got[3].is_ok());
        let e = got[1].as_ref().unwrap_err();
        assert_eq!((e.line(), e.field()), (Some(2), Some("meta.uuid")));
        assert_eq!(e.to_string(), "line 2: meta.uuid: not a UUID");
        let e = got[2].as_ref().unwrap_err();
        assert_eq!(e.line(), Some(3));
        assert!(e.to_string().starts_with("line 3: invalid JSON"));

        let msgs: Vec<Message> = got
            .into_iter()
            .filter_map(|d| d.ok())
            .map(|d| d.message)
            .collect();
        let out = encode_ndjson(&msgs);
        assert_eq!(out.lines().count(), 2);
        let back = decode_ndjson(out.as_bytes(), 1024, &rx);
        let back: Vec<Message> = back
            .into_iter()
            .map(|d| d.expect("re-read").message)
            .collect();
        assert_eq!(back, msgs);
    }
}
