//! # sighthub-store
//!
//! The sighting model of the SightingDB format draft and its durable storage.
//!
//! This crate knows what a sighting is (a value seen `count` times in a namespace between
//! `first_seen` and `last_seen`, with tags, a TTL and the consensus across namespaces), how
//! namespaces are normalised and which of them are private, how values are encoded per
//! namespace (RAW, SHA256, BASE64URL), and how all of it is kept on disk so that an
//! acknowledged write survives `kill -9`. It does no networking and knows nothing of HTTP
//! or API keys: that is `sighthub-api`.
//!
//! ## Layout
//! - [`namespace`]: parsing and normalising namespaces, private `_` namespaces.
//! - [`format`](mod@format): per-namespace value formats (RAW, SHA256, BASE64URL).
//! - [`record`]: the stored sighting record, its binary encoding, tag merging, hourly stats.
//! - [`store`]: the [`SightingStore`] trait, the seam the HTTP layer talks to, its types and
//!   the opaque [`Durability`] handle.
//! - [`sightings`]: the sighting rules, once, over any [`Engine`]: [`Sightings`] implements
//!   [`SightingStore`]; the durability contract.
//! - [`engine`]: the small key-value [`Engine`] trait a backend implements (what it must keep
//!   atomic) and [`MemEngine`], in memory.
//! - [`fjall_store`]: [`FjallEngine`], the default embedded engine on fjall, and
//!   [`FjallStore`] (`Sightings<FjallEngine>`).
//! - [`error`]: the crate's typed errors.
//!
//! The journal helpers and the group commit are shared with the exchange:
//! `sighthub-storage`.
//!
//! ```
//! use sighthub_store::{FjallStore, Namespace, SightingStore, StoreOptions, WriteOp, ReadOutcome};
//! let dir = tempfile::tempdir().unwrap();
//! let store = FjallStore::open(dir.path(), StoreOptions::default()).unwrap();
//! let ns = Namespace::parse("/org/ipv4/").unwrap();
//! let (out, _ticket) = store.write(&[WriteOp::new(&ns, "10.0.0.1", 1_700_000_000)], 1_700_000_000).unwrap();
//! assert_eq!((out[0].as_ref().unwrap().count, out[0].as_ref().unwrap().new), (1, true));
//! match store.read(&ns, "10.0.0.1", 1_700_000_000).unwrap() {
//!     ReadOutcome::Found(view) => assert_eq!(view.consensus, 1),
//!     other => panic!("{other:?}"),
//! }
//! ```
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod engine;
pub mod error;
pub mod fjall_store;
pub mod format;
pub mod namespace;
pub mod record;
pub mod sightings;
pub mod store;

pub use engine::{Engine, MemEngine};
pub use error::{Error, ItemError, Result};
pub use fjall_store::{FjallEngine, FjallStore};
pub use format::ValueFormat;
pub use namespace::{Namespace, NamespaceError};
pub use record::{merge_tags, split_tags, Record};
pub use sighthub_storage::Ticket;
pub use sightings::{ImportOutcome, Imported, Sightings, StoreOptions};
pub use store::{
    key_order, value_fits, Durability, Limits, ListPage, NamespaceInfo, ReadOutcome, SightingStore,
    View, WriteOp, WriteOutcome, MAX_KEY_LEN, MAX_TIMESTAMP, MAX_VALUE_LEN, MIN_TIMESTAMP,
};
