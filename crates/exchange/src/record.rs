//! On-disk encodings of the exchange keyspaces, and the opaque read cursor.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `log` | seq (u64 BE, so keys sort in log order) | [`LogEntry`]: header + the envelope JSON as emitted |
//! | `seen` | message uuid (16 bytes) | [`Seen`]: seq (u64 LE) + accepted_at (u32 LE) — 12 bytes |
//! | `content` | 16 bytes of SHA-256(org ‖ content hash) | [`Seen`] of the first copy |
//! | `links` | target uuid ‖ source uuid ‖ relation ‖ side ‖ type | source seq (u64 LE) ‖ source org (16) |
//! | `alternates` | len (u16 BE) ‖ alternate id ‖ source uuid | source seq (u64 LE) |
//! | `consumers` | org (16) ‖ name | acked seq (u64 LE) ‖ updated_at (u64 LE) |
//! | `meta` | `epoch`, `seq`, `log_bytes`, `org`, `instance` | u64 LE or 16-byte uuid |
//!
//! A log record header keeps what a read must know without parsing JSON (TLP, feeds, payload
//! presence), so exporting envelopes is a byte copy.

use base64::Engine as _;
use sighthub_iep04::Tlp;
use uuid::Uuid;

/// Version byte of log records written by this code.
pub const LOG_VERSION: u8 = 1;

/// The record has a non-empty payload (so it can be exported as a bare IntelMQ event).
pub const FLAG_PAYLOAD: u8 = 1;
/// The message arrived without a uuid (a bare event) and was wrapped here.
pub const FLAG_WRAPPED: u8 = 2;
/// The message has link or alternate index entries (retention must remove them).
pub const FLAG_LINKED: u8 = 4;

/// Offset of `accepted_at` in a log record, patched when the record is committed.
const AT_OFFSET: usize = 4;
const HEADER_FIXED: usize = 44;

/// What a log entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A message.
    Message,
    /// A tag update of an earlier message (empty payload, known uuid): the entry holds the
    /// update as received; the earlier message's record carries the merged tags.
    TagUpdate,
}

/// A decoded log record, borrowing from the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// Message or tag update.
    pub kind: EntryKind,
    /// The message's TLP, if it has one.
    pub tlp: Option<Tlp>,
    /// [`FLAG_PAYLOAD`], [`FLAG_WRAPPED`].
    pub flags: u8,
    /// Unix seconds when the hub accepted it.
    pub accepted_at: u64,
    /// `meta.uuid`.
    pub uuid: Uuid,
    /// `meta.uuid_org`.
    pub org: Option<Uuid>,
    /// `format/type`, its type feed.
    pub format_type: &'a str,
    /// `meta.tags`, its tag feeds.
    pub tags: Vec<&'a str>,
    /// The envelope, decided form, one line of JSON.
    pub json: &'a [u8],
}

impl LogEntry<'_> {
    /// Has a non-empty payload.
    pub fn has_payload(&self) -> bool {
        self.flags & FLAG_PAYLOAD != 0
    }
}

fn tlp_code(t: Option<Tlp>) -> u8 {
    match t {
        None => 0,
        Some(Tlp::Clear) => 1,
        Some(Tlp::Green) => 2,
        Some(Tlp::Amber) => 3,
        Some(Tlp::AmberStrict) => 4,
        Some(Tlp::Red) => 5,
    }
}

fn tlp_from_code(c: u8) -> Option<Option<Tlp>> {
    Some(match c {
        0 => None,
        1 => Some(Tlp::Clear),
        2 => Some(Tlp::Green),
        3 => Some(Tlp::Amber),
        4 => Some(Tlp::AmberStrict),
        5 => Some(Tlp::Red),
        _ => return None,
    })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn get_str<'a>(buf: &mut &'a [u8]) -> Option<&'a str> {
    let len = usize::try_from(get_varint(buf)?).ok()?;
    if buf.len() < len {
        return None;
    }
    let (s, rest) = buf.split_at(len);
    *buf = rest;
    std::str::from_utf8(s).ok()
}

/// Encodes a log record (`accepted_at` can be set later with [`set_accepted_at`]).
pub fn encode_log(entry: &LogEntry<'_>) -> Vec<u8> {
    let tags_len: usize = entry.tags.iter().map(|t| t.len() + 2).sum();
    let mut out = Vec::with_capacity(
        HEADER_FIXED + 4 + entry.format_type.len() + tags_len + entry.json.len(),
    );
    out.push(LOG_VERSION);
    out.push(match entry.kind {
        EntryKind::Message => 0,
        EntryKind::TagUpdate => 1,
    });
    out.push(tlp_code(entry.tlp));
    out.push(entry.flags);
    out.extend_from_slice(&entry.accepted_at.to_le_bytes());
    out.extend_from_slice(entry.uuid.as_bytes());
    out.extend_from_slice(entry.org.unwrap_or_default().as_bytes());
    put_varint(&mut out, entry.format_type.len() as u64);
    out.extend_from_slice(entry.format_type.as_bytes());
    put_varint(&mut out, entry.tags.len() as u64);
    for t in &entry.tags {
        put_varint(&mut out, t.len() as u64);
        out.extend_from_slice(t.as_bytes());
    }
    out.extend_from_slice(entry.json);
    out
}

/// Sets the `accepted_at` of an encoded log record.
pub fn set_accepted_at(record: &mut [u8], at: u64) {
    if let Some(slot) = record.get_mut(AT_OFFSET..AT_OFFSET + 8) {
        slot.copy_from_slice(&at.to_le_bytes());
    }
}

/// Decodes a log record; `None` when it is corrupt or of an unknown version.
pub fn decode_log(bytes: &[u8]) -> Option<LogEntry<'_>> {
    let fixed = bytes.get(..HEADER_FIXED)?;
    if fixed.first() != Some(&LOG_VERSION) {
        return None;
    }
    let kind = match fixed.get(1)? {
        0 => EntryKind::Message,
        1 => EntryKind::TagUpdate,
        _ => return None,
    };
    let tlp = tlp_from_code(*fixed.get(2)?)?;
    let flags = *fixed.get(3)?;
    let accepted_at = u64::from_le_bytes(fixed.get(4..12)?.try_into().ok()?);
    let uuid = Uuid::from_slice(fixed.get(12..28)?).ok()?;
    let org = Uuid::from_slice(fixed.get(28..44)?).ok()?;
    let mut rest = bytes.get(HEADER_FIXED..)?;
    let format_type = get_str(&mut rest)?;
    let n = get_varint(&mut rest)?;
    let mut tags = Vec::with_capacity(usize::try_from(n.min(64)).unwrap_or(0));
    for _ in 0..n {
        tags.push(get_str(&mut rest)?);
    }
    Some(LogEntry {
        kind,
        tlp,
        flags,
        accepted_at,
        uuid,
        org: (!org.is_nil()).then_some(org),
        format_type,
        tags,
        json: rest,
    })
}

/// A `seen` or `content` value: where the first copy went, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Log sequence number of the accepted message.
    pub seq: u64,
    /// Unix seconds of acceptance (u32: good until 2106).
    pub at: u32,
}

impl Seen {
    /// 12 bytes.
    pub fn encode(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..].copy_from_slice(&self.at.to_le_bytes());
        out
    }

    /// From 12 bytes.
    pub fn decode(b: &[u8]) -> Option<Seen> {
        Some(Seen {
            seq: u64::from_le_bytes(b.get(..8)?.try_into().ok()?),
            at: u32::from_le_bytes(b.get(8..12)?.try_into().ok()?),
        })
    }

    /// Still within `max_age` seconds (0 = forever) at `now`?
    pub fn alive(&self, max_age: u64, now: u64) -> bool {
        max_age == 0 || u64::from(self.at).saturating_add(max_age) > now
    }
}

/// Seconds as stored in [`Seen::at`].
pub fn secs32(t: u64) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
}

/// How a source message links to a target (the `links` key's relation byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRel {
    /// `related`.
    Related,
    /// `group`.
    Group,
    /// A typed link `{left_side, type, right_side}`.
    Typed {
        /// JSON `type`.
        link_type: String,
        /// `true` when the target is `left_side`.
        target_left: bool,
        /// The other side of the link is the source message itself ("source *type* target",
        /// e.g. "W withdraws X"), rather than a third message.
        from_self: bool,
    },
}

/// Key of the `links` keyspace.
pub fn link_key(target: Uuid, source: Uuid, rel: &LinkRel) -> Vec<u8> {
    let mut k = Vec::with_capacity(34 + 16);
    k.extend_from_slice(target.as_bytes());
    k.extend_from_slice(source.as_bytes());
    match rel {
        LinkRel::Related => k.extend_from_slice(&[0, 0]),
        LinkRel::Group => k.extend_from_slice(&[1, 0]),
        LinkRel::Typed {
            link_type,
            target_left,
            from_self,
        } => {
            k.extend_from_slice(&[2, u8::from(*target_left) | (u8::from(*from_self) << 1)]);
            k.extend_from_slice(link_type.as_bytes());
        }
    }
    k
}

/// Decodes a `links` key: (target, source, relation).
pub fn decode_link_key(k: &[u8]) -> Option<(Uuid, Uuid, LinkRel)> {
    let target = Uuid::from_slice(k.get(..16)?).ok()?;
    let source = Uuid::from_slice(k.get(16..32)?).ok()?;
    let rel = match (k.get(32)?, k.get(33)?) {
        (0, _) => LinkRel::Related,
        (1, _) => LinkRel::Group,
        (2, side) if *side < 4 => LinkRel::Typed {
            link_type: std::str::from_utf8(k.get(34..)?).ok()?.to_owned(),
            target_left: side & 1 == 1,
            from_self: side & 2 == 2,
        },
        _ => return None,
    };
    Some((target, source, rel))
}

/// Value of a `links` entry.
pub fn link_value(seq: u64, org: Option<Uuid>) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v[8..].copy_from_slice(org.unwrap_or_default().as_bytes());
    v
}

/// Decodes a `links` value: (source seq, source org).
pub fn decode_link_value(v: &[u8]) -> Option<(u64, Option<Uuid>)> {
    let seq = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
    let org = Uuid::from_slice(v.get(8..24)?).ok()?;
    Some((seq, (!org.is_nil()).then_some(org)))
}

/// Longest opaque alternate id (`intelmq:alternate`) the exchange indexes, in bytes: each one
/// becomes a storage key (the engine panics on keys over 65,535 bytes). A message carrying a
/// longer one is refused at publish time; a lookup of one finds nothing.
pub const MAX_ALTERNATE_LEN: usize = 1024;

/// Whether an alternate id can be indexed ([`MAX_ALTERNATE_LEN`]); the one check every path
/// building an `alternates` key asks.
pub fn alternate_fits(alt: &str) -> bool {
    alt.len() <= MAX_ALTERNATE_LEN
}

/// Prefix of the `alternates` keys of one alternate id; `None` when it is over
/// [`MAX_ALTERNATE_LEN`] bytes.
pub fn alternate_prefix(alt: &str) -> Option<Vec<u8>> {
    if !alternate_fits(alt) {
        return None;
    }
    let len = u16::try_from(alt.len()).ok()?;
    let mut k = Vec::with_capacity(2 + alt.len() + 16);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(alt.as_bytes());
    Some(k)
}

/// Key of one `alternates` entry: [`alternate_prefix`] ‖ the message's uuid; `None` when the
/// id is over [`MAX_ALTERNATE_LEN`] bytes.
pub fn alternate_key(alt: &str, uuid: Uuid) -> Option<Vec<u8>> {
    let mut k = alternate_prefix(alt)?;
    k.extend_from_slice(uuid.as_bytes());
    Some(k)
}

/// Key of the `consumers` keyspace.
pub fn consumer_key(org: Uuid, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + name.len());
    k.extend_from_slice(org.as_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

/// Log key of a sequence number.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Sequence number of a log key.
pub fn key_seq(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

/// A u64 stored little-endian.
pub fn le_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(v.get(..8)?.try_into().ok()?))
}

/// The opaque read cursor: the last sequence number delivered and the exchange's epoch (a
/// random number fixed when the database was created), base64url. A cursor from another
/// exchange, or from before its data were wiped, is refused instead of silently skipping.
pub fn encode_cursor(seq: u64, epoch: u64) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seq.to_be_bytes());
    b[8..].copy_from_slice(&epoch.to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Decodes a cursor into (seq, epoch).
pub fn decode_cursor(c: &str) -> Option<(u64, u64)> {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c.trim())
        .ok()?;
    let seq = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let epoch = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
    (b.len() == 16).then_some((seq, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry<'a>(json: &'a [u8], tags: Vec<&'a str>) -> LogEntry<'a> {
        LogEntry {
            kind: EntryKind::Message,
            tlp: Some(Tlp::Amber),
            flags: FLAG_PAYLOAD,
            accepted_at: 0,
            uuid: Uuid::from_u128(42),
            org: Some(Uuid::from_u128(7)),
            format_type: "intelmq/event",
            tags,
            json,
        }
    }

    #[test]
    fn log_record_round_trips_and_patches_time() {
        let json = br#"{"format":"intelmq"}"#;
        let e = entry(json, vec!["tlp:amber", "feed:x"]);
        let mut bytes = encode_log(&e);
        assert_eq!(decode_log(&bytes), Some(e.clone()));
        set_accepted_at(&mut bytes, 1_700_000_000);
        let d = decode_log(&bytes).expect("decodes");
        assert_eq!(d.accepted_at, 1_700_000_000);
        assert_eq!(d.json, json);
        assert!(d.has_payload());
        // Truncations and garbage never panic and never decode.
        for n in 0..bytes.len() - json.len() {
            assert!(decode_log(&bytes[..n]).is_none(), "prefix {n}");
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(decode_log(&bad).is_none());
        let mut none_org = e.clone();
        none_org.org = None;
        assert_eq!(decode_log(&encode_log(&none_org)).expect("ok").org, None);
    }

    #[test]
    fn seen_is_twelve_bytes_and_ages() {
        let s = Seen { seq: 5, at: 100 };
        assert_eq!(Seen::decode(&s.encode()), Some(s));
        assert!(s.alive(0, u64::MAX));
        assert!(s.alive(10, 109));
        assert!(!s.alive(10, 110));
        assert_eq!(secs32(u64::MAX), u32::MAX);
    }

    #[test]
    fn link_keys_round_trip() {
        let (t, s) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for rel in [
            LinkRel::Related,
            LinkRel::Group,
            LinkRel::Typed {
                link_type: "withdraws".into(),
                target_left: false,
                from_self: true,
            },
            LinkRel::Typed {
                link_type: "is_parent_event".into(),
                target_left: true,
                from_self: false,
            },
        ] {
            let k = link_key(t, s, &rel);
            assert!(k.starts_with(t.as_bytes()));
            assert_eq!(decode_link_key(&k), Some((t, s, rel)));
        }
        let v = link_value(9, Some(Uuid::from_u128(3)));
        assert_eq!(decode_link_value(&v), Some((9, Some(Uuid::from_u128(3)))));
    }

    #[test]
    fn cursors() {
        let c = encode_cursor(17, 0xdead_beef);
        assert_eq!(decode_cursor(&c), Some((17, 0xdead_beef)));
        assert_eq!(decode_cursor("x"), None);
        assert_eq!(decode_cursor(""), None);
        assert_eq!(decode_cursor(&format!("{c}AA")), None);
    }

    proptest! {
        #[test]
        fn log_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_log(&bytes);
        }

        #[test]
        fn log_round_trip(tags in proptest::collection::vec("\\PC{0,20}", 0..5),
                          ft in "\\PC{0,20}", json in "\\PC{0,50}", at in any::<u64>(),
                          tlp in 0u8..6, flags in any::<u8>(), upd in any::<bool>()) {
            let e = LogEntry {
                kind: if upd { EntryKind::TagUpdate } else { EntryKind::Message },
                tlp: tlp_from_code(tlp).flatten(),
                flags,
                accepted_at: at,
                uuid: Uuid::from_u128(1),
                org: None,
                format_type: &ft,
                tags: tags.iter().map(String::as_str).collect(),
                json: json.as_bytes(),
            };
            let bytes = encode_log(&e);
            prop_assert_eq!(decode_log(&bytes), Some(e));
        }
    }
}
