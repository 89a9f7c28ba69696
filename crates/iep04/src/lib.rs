//! IEP04 message envelopes for exchanging IntelMQ (and AIL) events between instances.
//!
//! IEP04 wraps each event in an envelope whose `meta.uuid` is assigned once at creation, so
//! that a receiver can drop a message it already has (whichever path it came by), break relay
//! loops, and let messages refer to each other through links.
//!
//! This crate **is** the pure data layer: the [`Message`] model; parsing of the decided
//! envelope and normalisation of the older shapes (seed, variant A, AIL-A, typed links) and of
//! bare IntelMQ events into that one model; emission of the decided form and of bare events;
//! an incremental ND-JSON reader; payload decoding (`base64`, `gzip`); a content hash for
//! events without a uuid; link and TLP accessors.
//!
//! It is **not** a transport: no sockets, files, async runtime or clock. It does not keep the
//! set of seen uuids or hashes (de-duplication state belongs to the store), and it does not
//! check IntelMQ field names against IntelMQ's harmonisation.
//!
//! ```
//! use sighthub_iep04::{NdjsonReader, Receiver, Shape, Tlp};
//! use uuid::Uuid;
//!
//! let me = Receiver::new(Uuid::from_u128(0xA), Some(Uuid::from_u128(0xB)));
//! let mut reader = NdjsonReader::new(64 * 1024);
//! // Chunks may split lines anywhere.
//! reader.push(br#"{"format":"intelmq","version":2,"type":"event","meta":{"uuid":"03c51929-"#);
//! reader.push(b"eeab-4d47-9dc0-c667f94c7d2c\",\"x-rt\":42},\"payload\":{\"tlp\":\"AMBER\"}}\r\n");
//! reader.push(b"{\"source.ip\":\"198.51.100.1\",\"__type\":\"Event\"}\n");
//!
//! let first = reader.next_message(&me).unwrap()?;
//! assert_eq!(first.shape, Shape::Envelope);
//! assert_eq!(first.message.tlp(), Some(Tlp::Amber));
//! // Unknown meta keys survive re-emission.
//! assert!(first.message.to_json().contains(r#""x-rt":42"#));
//!
//! let second = reader.next_message(&me).unwrap()?;
//! assert_eq!(second.shape, Shape::Bare); // wrapped, with a fresh UUIDv4 and our org
//! assert_eq!(second.message.meta.as_ref().unwrap().uuid_org, Some(me.uuid_org));
//! let bare = second.message.to_bare_event(true)?; // back to IntelMQ, with `__type`
//! assert_eq!(bare["__type"], "Event");
//! assert!(reader.next_message(&me).is_none());
//! # Ok::<(), sighthub_iep04::Error>(())
//! ```
//!
//! # Layout
//! - [`model`]: [`Message`], [`Meta`], [`Links`] and the link vocabulary.
//! - [`authority`]: the one rule for what a message may do to another (withdraw, replace,
//!   update tags).
//! - [`envelope`]: parsing (with normalisation of older shapes) and emission.
//! - [`bare`]: bare IntelMQ events in ([`Receiver`], [`Message::wrap_bare`]) and out
//!   ([`Message::to_bare_event`]).
//! - [`ndjson`]: the incremental stream reader and the writer.
//! - [`payload`]: on-demand decoding of encoded / compressed payload fields.
//! - [`hash`]: content hash over canonical JSON.
//! - [`tlp`]: TLP extraction.
//! - [`error`]: the crate's error type.

#![deny(missing_docs)]

pub mod authority;
pub mod bare;
pub mod emit;
pub mod envelope;
pub mod error;
pub mod hash;
pub mod model;
pub mod ndjson;
pub mod payload;
pub mod tlp;

pub use authority::{claim_of_link, claims, effects, takes_effect, Act, Claim};
pub use bare::{Decoded, Receiver, Shape, TYPE_KEY};
pub use error::{Error, Result};
pub use hash::{canonical_json, content_hash, content_hash_with, ContentHash};
pub use model::{
    LinkType, LinkedUuid, Links, Message, Meta, Relation, Side, TypedLink, DEFAULT_VERSION,
    FORMAT_INTELMQ, KEY_ALTERNATE, KEY_GROUP, KEY_LINKS, KEY_RELATED, RESERVED_META_KEYS,
};
pub use ndjson::{decode_ndjson, encode_ndjson, Line, NdjsonReader, Remaining, DEFAULT_MAX_LINE};
pub use tlp::{Tlp, UnknownTlp};

// Re-exported so callers build payloads and uuids with the same versions.
pub use serde_json;
pub use uuid;
