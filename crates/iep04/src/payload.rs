//! On-demand decoding of payload fields (`meta.encoding`, `meta.compress`).
//!
//! The envelope is relayed as received; a consumer that wants the bytes of a field (usually
//! `raw`) asks for them. Order of operations on the sender is compress, then encode, so decoding
//! is: base64-decode, then gunzip. For format `intelmq` the `raw` field is base64 by IntelMQ's
//! own convention, whatever `meta.encoding` says. Decompressed output is capped by the caller's
//! limit so a small gzip bomb cannot exhaust memory.

use std::io::Read;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{Message, FORMAT_INTELMQ};

/// Standard alphabet, padding optional (some senders strip it).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Message {
    /// Decodes payload field `key` according to `meta.encoding` and `meta.compress`.
    ///
    /// Returns `Ok(None)` when the field is absent. The field must be a string. Supported:
    /// encoding `base64` (ASCII whitespace ignored) or none, compression `gzip` or none; any
    /// other value is refused naming `meta.encoding` / `meta.compress`. `limit` caps the
    /// decoded size in bytes.
    ///
    /// ```
    /// use sighthub_iep04::Message;
    /// let msg = Message::from_json(r#"{"format":"ail","version":1,"type":"item",
    ///     "meta":{"uuid":"03c51929-eeab-4d47-9dc0-c667f94c7d2c","encoding":"base64"},
    ///     "payload":{"raw":"aGVsbG8="}}"#).unwrap();
    /// assert_eq!(msg.decode_payload_field("raw", 1024).unwrap().as_deref(), Some(&b"hello"[..]));
    /// ```
    pub fn decode_payload_field(&self, key: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        let field = format!("payload.{key}");
        let Some(value) = self.payload.as_ref().and_then(|p| p.get(key)) else {
            return Ok(None);
        };
        let Value::String(text) = value else {
            return Err(Error::wrong_type(field, "a string"));
        };
        let meta = self.meta.as_ref();
        let encoding = meta.and_then(|m| m.encoding.as_deref());
        let compress = meta.and_then(|m| m.compress.as_deref());
        let intelmq_raw = key == "raw" && self.format == FORMAT_INTELMQ;

        let bytes = match encoding.filter(|e| !e.is_empty()) {
            Some(e) if e.eq_ignore_ascii_case("base64") => decode_base64(text, &field)?,
            None if intelmq_raw => decode_base64(text, &field)?,
            None => text.as_bytes().to_vec(),
            Some(other) => {
                return Err(Error::invalid(
                    "meta.encoding",
                    format!("unsupported {other:?}"),
                ))
            }
        };
        let bytes = match compress.filter(|c| !c.is_empty()) {
            None => bytes,
            Some(c) if c.eq_ignore_ascii_case("gzip") => gunzip(&bytes, limit, &field)?,
            Some(other) => {
                return Err(Error::invalid(
                    "meta.compress",
                    format!("unsupported {other:?}"),
                ))
            }
        };
        if bytes.len() > limit {
            return Err(Error::invalid(
                field,
                format!("decoded size exceeds {limit} bytes"),
            ));
        }
        Ok(Some(bytes))
    }

    /// Decoded bytes of `payload.raw`; see [`Message::decode_payload_field`].
    pub fn decoded_raw(&self, limit: usize) -> Result<Option<Vec<u8>>> {
        self.decode_payload_field("raw", limit)
    }

    /// Decoded payload field `key` parsed as JSON (e.g. the `raw` of a report that carries an
    /// event). A parse failure is reported against `payload.<key>`.
    pub fn decode_payload_field_json(&self, key: &str, limit: usize) -> Result<Option<Value>> {
        let Some(bytes) = self.decode_payload_field(key, limit)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::invalid(format!("payload.{key}"), format!("not JSON: {e}")))
    }
}

fn decode_base64(text: &str, field: &str) -> Result<Vec<u8>> {
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    BASE64
        .decode(compact)
        .map_err(|e| Error::invalid(field, format!("invalid base64: {e}")))
}

fn gunzip(bytes: &[u8], limit: usize, field: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(bytes)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| Error::invalid(field, format!("invalid gzip: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use serde_json::json;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).expect("in-memory write");
        enc.finish().expect("in-memory finish")
    }

    fn msg(format: &str, meta_extra: Value, raw: Value) -> Message {
        let mut meta = json!({"uuid": "03c51929-eeab-4d47-9dc0-c667f94c7d2c"});
        if let (Some(m), Some(extra)) = (meta.as_object_mut(), meta_extra.as_object()) {
            m.extend(extra.clone());
        }
        Message::from_value(json!({"format": format, "version": 1, "type": "item",
            "meta": meta, "payload": {"raw": raw}}))
        .expect("valid test message")
    }

    #[test]
    fn base64_then_gzip() {
        let body = br#"{"source.ip": "198.51.100.1"}"#;
        let raw = BASE64.encode(gzip(body));
        let m = msg(
            "ail",
            json!({"encoding": "base64", "compress": "gzip"}),
            json!(raw),
        );
        assert_eq!(m.decoded_raw(1 << 20).unwrap().as_deref(), Some(&body[..]));
        assert_eq!(
            m.decode_payload_field_json("raw", 1 << 20).unwrap(),
            Some(json!({"source.ip": "198.51.100.1"}))
        );
        assert_eq!(m.decode_payload_field("absent", 10).unwrap(), None);
    }

    #[test]
    fn intelmq_raw_is_base64_by_convention_other_formats_are_text() {
        let m = msg("intelmq", json!({}), json!("aGVs\nbG8"));
        assert_eq!(m.decoded_raw(100).unwrap().as_deref(), Some(&b"hello"[..]));
        let m = msg("ail", json!({}), json!("plain"));
        assert_eq!(m.decoded_raw(100).unwrap().as_deref(), Some(&b"plain"[..]));
    }

    #[test]
    fn errors_name_the_field() {
        let m = msg("ail", json!({"encoding": "base64"}), json!("***"));
        assert!(m
            .decoded_raw(100)
            .unwrap_err()
            .to_string()
            .starts_with("payload.raw: invalid base64"));
        let m = msg(
            "ail",
            json!({"encoding": "base64", "compress": "gzip"}),
            json!("aGVsbG8="),
        );
        assert!(m
            .decoded_raw(100)
            .unwrap_err()
            .to_string()
            .starts_with("payload.raw: invalid gzip"));
        let m = msg("ail", json!({"compress": "lzma"}), json!("x"));
        assert_eq!(
            m.decoded_raw(100).unwrap_err().to_string(),
            "meta.compress: unsupported \"lzma\""
        );
        let m = msg("ail", json!({"encoding": "hex"}), json!("x"));
        assert_eq!(
            m.decoded_raw(100).unwrap_err().field(),
            Some("meta.encoding")
        );
        let m = msg("ail", json!({}), json!(5));
        assert_eq!(
            m.decoded_raw(100).unwrap_err().to_string(),
            "payload.raw: expected a string"
        );
        let m = msg("ail", json!({}), json!("not json"));
        assert_eq!(
            m.decode_payload_field_json("raw", 100).unwrap_err().field(),
            Some("payload.raw")
        );
    }

    #[test]
    fn gzip_bomb_is_capped() {
        let big = vec![0u8; 1 << 20];
        let raw = BASE64.encode(gzip(&big));
        let m = msg(
            "ail",
            json!({"encoding": "base64", "compress": "gzip"}),
            json!(raw),
        );
        let e = m.decoded_raw(4096).unwrap_err();
        assert_eq!(
            e.to_string(),
            "payload.raw: decoded size exceeds 4096 bytes"
        );
        assert_eq!(
            m.decoded_raw(1 << 20).unwrap().map(|b| b.len()),
            Some(1 << 20)
        );
    }
}
