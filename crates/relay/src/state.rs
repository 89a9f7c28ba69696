//! Per-peer and per-pull counters, in one JSON file each (`<data_dir>/relay/push-<name>.json`,
//! `pull-<name>.json`), replaced atomically: written to a temporary file, fsynced, renamed
//! over the old one, and the directory fsynced.
//!
//! The files hold the counters (sent, accepted, duplicate, refused, the last refusal…). The
//! cursors live in the exchange's one store of durable cursors, its named consumers: a push's
//! is `relay/push/<peer>` ([`crate::push`]), and a pull's is kept by the hub (its named
//! consumer there), so a pull holds no local cursor. A push's file also records the position
//! its counters cover (`epoch`, `cursor`), written **before** the consumer moves: after a
//! crash between the two, the consumer is moved up to it at start, so the counters and the
//! cursor always agree and an answered batch is neither resent nor left uncounted. Files
//! written before the cursor moved into the exchange carry the same two fields: the consumer
//! is created there (the upgrade path).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What is persisted for one peer or pull.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerState {
    /// Epoch of the local log `cursor` belongs to (a cursor of another epoch is ignored); in
    /// [`crate::Relay::status`], the current epoch.
    pub epoch: u64,
    /// Pushes: the last local sequence number these counters cover (sent or skipped), the
    /// write-ahead of the push's named consumer (see the module docs); in
    /// [`crate::Relay::status`], the position of the consumer.
    pub cursor: u64,
    /// Messages put on the wire, including requests that failed (no answer, or an error
    /// status) and were retried: `attempted > sent` means some may have crossed twice.
    pub attempted: u64,
    /// Messages that crossed the link (in batches the other side answered; for a pull, in
    /// pages ingested and acknowledged).
    pub sent: u64,
    /// Of those, answered `accepted`.
    pub accepted: u64,
    /// Of those, answered `duplicate` (the other side already had them).
    pub duplicate: u64,
    /// Of those, answered `error` (invalid for the other side: not retried).
    pub errors: u64,
    /// Log entries not sent: on the path, not in the peer's feeds/TLP, not forwardable, or
    /// beyond `max_hops`.
    pub skipped: u64,
    /// Requests answered.
    pub batches: u64,
    /// Pulls: messages that were ours (this instance on their path), not ingested again.
    pub own: u64,
    /// Messages the other side refused for good (a push: a non-retryable 4xx for that one
    /// message; a pull: refused by the local exchange, e.g. another organisation's
    /// withdrawal): recorded, skipped, and everything after them delivered.
    pub refused: u64,
    /// Local sequence number (push) of the last refused message.
    pub last_refused_seq: Option<u64>,
    /// Uuid of the last refused message.
    pub last_refused_uuid: Option<String>,
    /// Why it was refused (the start of the answer).
    pub last_refused_reason: Option<String>,
    /// Why the link fails now ([`crate::health`]); absent while it works.
    pub last_error: Option<String>,
    /// Since when (unix seconds) it fails with `last_error`.
    pub since: Option<u64>,
}

/// The file of one state.
pub fn file(dir: &Path, kind: &str, name: &str) -> PathBuf {
    dir.join(format!("{kind}-{name}.json"))
}

/// Reads a state; a missing file is the default state.
pub fn load(path: &Path) -> Result<PeerState> {
    read_json(path)
}

/// Reads one of the relay's JSON files (a link's state, the runtime peers); a missing file
/// is `T::default()`, an unreadable or malformed one an [`Error::State`] naming it.
pub fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::State {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(Error::State {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces a state durably (see the module docs).
pub fn store(path: &Path, state: &PeerState) -> Result<()> {
    let err = |source| Error::State {
        path: path.to_owned(),
        source,
    };
    let body = serde_json::to_vec(state).map_err(|e| err(std::io::Error::other(e)))?;
    sighthub_storage::file::replace_durably(path, &body, 0o600).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = file(dir.path(), "push", "b");
        assert_eq!(load(&p).expect("missing is default"), PeerState::default());
        let mut s = PeerState {
            sent: 40,
            accepted: 39,
            duplicate: 1,
            ..PeerState::default()
        };
        store(&p, &s).expect("store");
        assert_eq!(load(&p).expect("load"), s);
        s.sent = 43;
        store(&p, &s).expect("replace");
        assert_eq!(load(&p).expect("load").sent, 43);
        assert!(!p.with_extension("json.tmp").exists());
        std::fs::write(&p, b"{garbage").expect("write");
        assert!(load(&p).is_err());
    }

    #[test]
    fn the_covered_position_is_kept_with_the_counters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = file(dir.path(), "push", "b");
        std::fs::write(
            &p,
            br#"{"epoch":7,"cursor":42,"attempted":40,"sent":40,"accepted":39,"duplicate":1}"#,
        )
        .expect("a file of an older version");
        let old = load(&p).expect("load");
        assert_eq!((old.epoch, old.cursor, old.sent), (7, 42, 40));
        store(&p, &old).expect("store");
        assert_eq!(load(&p).expect("load"), old, "written back whole");
    }
}
