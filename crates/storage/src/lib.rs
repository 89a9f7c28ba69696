//! # sighthub-storage
//!
//! Storage plumbing shared by both halves of sighthub: the sightings store
//! (`sighthub-store`) and the IEP04 exchange (`sighthub-exchange`). Both keep their data in a
//! fjall database with a manually persisted journal, and both acknowledge a write only once
//! it is fsynced, many writers sharing one fsync.
//!
//! ## Layout
//! - [`commit`]: group commit ([`GroupCommit`], [`Ticket`]), batching the fsyncs of
//!   concurrent writers.
//! - [`journal`]: fjall journal helpers: [`journal::JournalSyncer`] (the group commit's
//!   persist step), [`journal::seal`] (a clean shutdown with nothing left to replay) and
//!   [`journal::Rotator`] (a short active journal while running, so a restart after a crash
//!   replays little).
//! - [`file`]: small files replaced atomically and durably ([`file::replace_durably`]).
//! - [`docs`]: small shared documents (runtime keys, console sessions, runtime peers) behind
//!   one seam ([`docs::Documents`]), cached and changed by compare-and-set ([`docs::Shared`]).
//! - [`stats`]: a fjall database's own activity (memtables, flushes, compactions, journals).
//! - [`secret`]: the one generator of the keys and tokens the server makes.
//! - [`error`]: the crate's typed errors.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod commit;
pub mod docs;
pub mod error;
pub mod file;
pub mod journal;
pub mod secret;
pub mod stats;

pub use commit::{CommitStats, GroupCommit, HistogramSnapshot, PersistFn, Ticket};
pub use error::{Error, Result};
pub use stats::EngineStats;
