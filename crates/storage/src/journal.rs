//! fjall journal helpers shared by the sighting store and the exchange hub.
//!
//! - [`JournalSyncer`]: the group commit's persist step, an `fdatasync` of the newest journal
//!   file outside fjall's journal lock, so writers do not stall behind the fsync.
//! - [`seal`]: a clean shutdown that leaves nothing for the next start to replay.

use crate::error::Result;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::Path;

/// fjall 3.1 seals its active journal, at a flush, once it is larger than this.
const JOURNAL_ROTATE_AT: u64 = 64_000_000;
/// Below this, a restart replays the journal quickly enough; [`seal`] does not pad it.
pub const CLOSE_PAD_FROM: u64 = 4 << 20;

/// The number of the newest `N.jnl` file in `dir`.
fn newest_journal_id(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".jnl")?.parse().ok())
        .max()
}

/// Bytes written into the journal file at `path`. fjall pre-allocates journal files (a sparse
/// 64 MiB), so this is the position after the last non-zero byte, found by reading backwards;
/// trailing zeros of the last entry make it a slight underestimate.
fn written_len(path: &Path) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let mut end = f.metadata().ok()?.len();
    let mut buf = vec![0u8; 1 << 20];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = buf.get_mut(..(end - start) as usize)?;
        f.seek(SeekFrom::Start(start)).ok()?;
        f.read_exact(chunk).ok()?;
        if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
            return Some(start + i as u64 + 1);
        }
        end = start;
    }
    Some(0)
}

/// Bytes of journal a restart would replay: the written part of every journal file in the
/// database folder `dir`.
pub fn replay_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "jnl") {
            total += written_len(&path).ok_or_else(|| {
                std::io::Error::other(format!("unreadable journal {}", path.display()))
            })?;
        }
    }
    Ok(total)
}

/// Opens the always-empty `pad` keyspace that [`seal`] needs, clearing what a crash during a
/// previous `seal` may have left.
pub fn pad_keyspace(db: &Database) -> Result<Keyspace> {
    let pad = db.keyspace("pad", || {
        KeyspaceCreateOptions::default().max_memtable_size(16 * 1024 * 1024)
    })?;
    if !pad.is_empty()? {
        pad.clear()?;
    }
    Ok(pad)
}

/// Makes everything durable and flushes every memtable into tables, so the next start has
/// (almost) nothing to replay. For a clean shutdown, with no writer left.
///
/// A restart replays fjall's active journal item by item (one internal lookup each, about
/// 0.4 µs per item: ~0.8 s for 1M values), even when every item was already flushed, and
/// fjall 3.1 seals that journal only once it has grown past 64 MB, at a flush. So, when the
/// journal holds more than [`CLOSE_PAD_FROM`] bytes: pad it past the threshold with a few
/// large values in `pad` (deleted right away), flush every keyspace (the flush seals the
/// journal), then flush `pad` once more so fjall's maintenance deletes the sealed,
/// fully-flushed journal. A crash skips all this and is still safe: the journal keeps
/// everything acknowledged, and leftover pad entries are cleared at open.
///
/// `dir` is the database folder (where the `*.jnl` files are); `keyspaces` are all of the
/// database's keyspaces except `pad`.
pub fn seal(db: &Database, dir: &Path, pad: &Keyspace, keyspaces: &[&Keyspace]) -> Result<()> {
    db.persist(PersistMode::SyncAll)?;
    let journal = newest_journal_id(dir).and_then(|id| written_len(&dir.join(format!("{id}.jnl"))));
    if let Some(len) = journal.filter(|l| (CLOSE_PAD_FROM..JOURNAL_ROTATE_AT).contains(l)) {
        // The journal compresses entries: the pad must not be compressible.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let chunk: Vec<u8> = (0..(1 << 20) / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        let mut left = JOURNAL_ROTATE_AT - len + (1 << 20);
        let mut i = 0u32;
        while left > 0 {
            pad.insert(i.to_be_bytes(), chunk.as_slice())?;
            pad.remove(i.to_be_bytes())?;
            left = left.saturating_sub(chunk.len() as u64);
            i += 1;
        }
        db.persist(PersistMode::SyncAll)?;
    }
    for ks in keyspaces.iter().copied().chain([pad]) {
        // fjall marks this `doc(hidden)`; it is the only way to flush on demand in 3.1
        // (pinned in Cargo.lock; `close_leaves_a_small_journal_and_keeps_everything` in the
        // store's tests checks the effect).
        ks.rotate_memtable_and_wait()?;
    }
    // One more rotation runs fjall's journal maintenance after the seal above.
    pad.insert(b"close", b"")?;
    pad.remove(b"close")?;
    pad.rotate_memtable_and_wait()?;
    db.persist(PersistMode::SyncAll)?;
    Ok(())
}

/// Makes the journal durable without holding fjall's journal lock during the fsync.
///
/// `Database::persist(SyncData)` flushes and fsyncs while holding the journal mutex, so every
/// writer stalls for the whole fsync. Instead: `persist(Buffer)` moves the journal buffer to the
/// OS under the lock (one `write`), then the newest journal file is `fdatasync`ed through our
/// own descriptor, outside the lock, while writers keep appending. This is correct because a
/// rotation seals the previous journal with a full fsync before switching (fjall's
/// `Writer::rotate`), so whatever was flushed into an older journal is already durable, and
/// syncing the newest one covers the rest. If the journal files cannot be found (a future fjall
/// layout), it falls back to `persist(SyncData)`.
pub struct JournalSyncer {
    db: Database,
    dir: std::path::PathBuf,
    current: Option<(u64, std::fs::File)>,
}

impl JournalSyncer {
    /// A syncer for the database `db` whose files are in `dir`.
    pub fn new(db: Database, dir: std::path::PathBuf) -> Self {
        Self {
            db,
            dir,
            current: None,
        }
    }

    /// Makes everything appended so far durable (see the type's docs).
    pub fn sync(&mut self) -> Result<()> {
        self.db.persist(PersistMode::Buffer)?;
        // Follow rotations: step to the next journal while it exists.
        let mut id = match &self.current {
            Some((id, _)) => *id,
            None => match newest_journal_id(&self.dir) {
                Some(id) => id,
                None => return self.fallback(),
            },
        };
        while self.dir.join(format!("{}.jnl", id + 1)).exists() {
            id += 1;
        }
        if self.current.as_ref().map(|(c, _)| *c) != Some(id) {
            match std::fs::File::open(self.dir.join(format!("{id}.jnl"))) {
                Ok(f) => self.current = Some((id, f)),
                Err(_) => return self.fallback(),
            }
        }
        match &self.current {
            Some((_, f)) => Ok(f.sync_data()?),
            None => self.fallback(),
        }
    }

    fn fallback(&mut self) -> Result<()> {
        self.current = None;
        Ok(self.db.persist(PersistMode::SyncData)?)
    }
}
