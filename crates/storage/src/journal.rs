//! fjall journal helpers shared by the sighting store and the exchange hub.
//!
//! - [`JournalSyncer`]: the group commit's persist step, an `fdatasync` of the newest journal
//!   file outside fjall's journal lock, so writers do not stall behind the fsync.
//! - [`seal`]: a clean shutdown that leaves nothing for the next start to replay.
//! - [`Rotator`]: a background thread that keeps the active journal short while the server
//!   runs, so a restart after a crash (`kill -9`) replays little.
//!
//! ## Why the journal is padded
//! A restart replays fjall's journals item by item (about 1–2 µs per item, most of it fjall
//! resolving the item's keyspace id through its meta tree), even the items already flushed
//! into tables. fjall 3.1 seals the active journal only at a flush, and only once the journal
//! has grown past a fixed 64 MB (`JOURNAL_ROTATE_AT`); it has no option and no public call
//! to seal it earlier. So both [`seal`] and [`Rotator`] write filler (values in the always
//! empty `pad` keyspace, deleted right away) until the journal is past that size and then
//! make a flush happen: fjall seals the journal, flushes what the sealed journal still holds
//! and deletes it, and the next start replays only the new, short journal.
//!
//! The sighting store runs a [`Rotator`]: its items are small (two of about 50 bytes per new
//! value), so 64 MB of journal is about a million items, 1.5–2.5 s of replay. The exchange
//! does not (yet): its log items are whole messages (about 1 KB), so its journal holds
//! several times fewer items per byte.

use crate::error::Result;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// fjall 3.1 seals its active journal, at a flush, once it is larger than this.
const JOURNAL_ROTATE_AT: u64 = 64_000_000;
/// Below this, a restart replays the journal quickly enough; [`seal`] does not pad it.
pub const CLOSE_PAD_FROM: u64 = 4 << 20;
/// The active journal size from which [`Rotator`] seals it (about 0.2–0.4 s of replay).
pub const ROTATE_FROM: u64 = 16 << 20;
/// How often [`Rotator`] looks at the active journal.
const ROTATE_CHECK: Duration = Duration::from_millis(200);
/// Size of one filler value: under fjall's journal compression threshold (4 KiB).
const PAD_VALUE: usize = 4000;
/// Filler values per write batch (about 1 MiB of journal).
const PAD_ITEMS: usize = 256;

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

/// Bytes written into the journal file at `path`, cheaply: the start of the first hole of
/// the sparse, pre-allocated file (rounded up to the file system's block). `None` when the
/// file system does not report holes (the whole pre-allocated file then looks written) or
/// the file cannot be read.
#[cfg(target_os = "linux")]
fn written_len_by_hole(path: &Path) -> Option<u64> {
    let f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let hole = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(0)).ok()?;
    // No hole before the end of a pre-allocated file: holes are not reported here.
    (hole < len || len < JOURNAL_ROTATE_AT).then_some(hole)
}

#[cfg(not(target_os = "linux"))]
fn written_len_by_hole(_path: &Path) -> Option<u64> {
    None
}

/// Bytes of journal a restart would replay: the written part of every journal file in the
/// database folder `dir` (a journal that fjall deletes while this runs counts as 0).
pub fn replay_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "jnl") {
            match written_len(&path) {
                Some(len) => total += len,
                // fjall deleted a sealed journal since the directory was listed.
                None if !path.exists() => {}
                None => {
                    return Err(std::io::Error::other(format!(
                        "unreadable journal {}",
                        path.display()
                    )))
                }
            }
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

/// One filler value. fjall compresses journal values from 4 KiB on (its default threshold),
/// which would shrink the filler and cost an LZ4 pass; a smaller value is written as it is.
/// Random bytes all the same, in case a value this size is ever compressed.
fn pad_value() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..PAD_VALUE / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// Writes filler into the journal `<dir>/<id>.jnl`, which holds `len` bytes, until it is past
/// [`JOURNAL_ROTATE_AT`] or fjall has sealed it (a flush of `pad` on the way may do that), a
/// chunk of about 1 MiB at a time: one write batch of [`PAD_ITEMS`] values into `pad`, then
/// one deleting them. `between` runs after each chunk with the number of chunks written; it
/// returns `false` to stop early (the journal is then not past the size).
fn pad_journal(
    db: &Database,
    (dir, id): (&Path, u64),
    pad: &Keyspace,
    len: u64,
    value: &[u8],
    mut between: impl FnMut(u32) -> Result<bool>,
) -> Result<bool> {
    let chunk = (PAD_ITEMS * value.len()) as u64;
    let mut left = (JOURNAL_ROTATE_AT + (1 << 20)).saturating_sub(len);
    let mut i = 0u32;
    while left > 0 && newest_journal_id(dir) == Some(id) {
        let keys = (0..PAD_ITEMS as u32).map(|j| (i * PAD_ITEMS as u32 + j).to_be_bytes());
        let mut batch = db.batch();
        for k in keys.clone() {
            batch.insert(pad, k, value);
        }
        batch.commit()?;
        let mut batch = db.batch();
        for k in keys {
            batch.remove(pad, k);
        }
        batch.commit()?;
        left = left.saturating_sub(chunk);
        i += 1;
        if !between(i)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Makes a flush happen after the journal was padded (fjall seals a journal past
/// [`JOURNAL_ROTATE_AT`] at a flush) and waits for it.
fn flush_pad(pad: &Keyspace) -> Result<()> {
    pad.insert(b"close", b"")?;
    pad.remove(b"close")?;
    // fjall marks this `doc(hidden)`; it is the only way to flush on demand in 3.1 (pinned in
    // Cargo.lock; the store's tests `close_leaves_a_small_journal_and_keeps_everything` and
    // `long_runs_of_writes_keep_the_active_journal_short` check the effect).
    pad.rotate_memtable_and_wait()?;
    Ok(())
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
    let journal = newest_journal_id(dir)
        .and_then(|id| Some((id, written_len(&dir.join(format!("{id}.jnl")))?)));
    if let Some((id, len)) =
        journal.filter(|(_, l)| (CLOSE_PAD_FROM..JOURNAL_ROTATE_AT).contains(l))
    {
        pad_journal(db, (dir, id), pad, len, &pad_value(), |_| Ok(true))?;
        db.persist(PersistMode::SyncAll)?;
    }
    for ks in keyspaces.iter().copied().chain([pad]) {
        ks.rotate_memtable_and_wait()?;
    }
    // One more rotation runs fjall's journal maintenance after the seal above.
    flush_pad(pad)?;
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

/// Keeps fjall's active journal short while the server runs: a background thread that,
/// every [`ROTATE_CHECK`], looks at how much the active journal holds and, from `from` bytes
/// (the stores use [`ROTATE_FROM`]), pads it and makes fjall seal it (see the module docs).
///
/// The cost is the filler: up to 64 MB − `from` more journal bytes written per `from` bytes
/// of writes, in chunks of about 1 MiB made durable by this thread every 8 MiB (outside fjall's
/// journal lock, as [`JournalSyncer`] does), so a concurrent group commit never waits for
/// more than a few MiB of filler. Each seal also flushes every memtable early, since fjall
/// flushes what a sealed journal still holds before deleting it. Correctness does not
/// depend on it: the filler is deleted right after it is written, a crash in between leaves
/// entries that [`pad_keyspace`] clears at the next open, and nothing acknowledged is in the
/// `pad` keyspace. Stopped (and joined) by [`Rotator::stop`] or on drop, before [`seal`].
pub struct Rotator {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Rotator {
    /// Starts the thread for the database `db` whose journal files are in `dir`, padding
    /// through the always-empty keyspace `pad` (from [`pad_keyspace`]); `keyspaces` are all
    /// of the database's other keyspaces, flushed after each seal.
    pub fn start(
        db: Database,
        dir: PathBuf,
        pad: Keyspace,
        keyspaces: Vec<Keyspace>,
        from: u64,
    ) -> Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("journal-rotate".into())
            .spawn(move || rotate_loop(&db, &dir, (&pad, &keyspaces), from, &flag))?;
        Ok(Self {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread and waits for it (at most the end of one padding step and flush).
    pub fn stop(&self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Rotator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stopped(flag: &(Mutex<bool>, Condvar)) -> bool {
    *flag.0.lock().unwrap_or_else(|e| e.into_inner())
}

fn rotate_loop(
    db: &Database,
    dir: &Path,
    spaces: (&Keyspace, &[Keyspace]),
    from: u64,
    flag: &(Mutex<bool>, Condvar),
) {
    let value = pad_value();
    let mut pause = ROTATE_CHECK;
    loop {
        {
            let (lock, wake) = flag;
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = wake
                .wait_timeout_while(guard, pause, |stop| !*stop)
                .unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
        }
        pause = ROTATE_CHECK;
        match rotate_if_long(db, dir, spaces, from, &value, flag) {
            Ok(Some(len)) => tracing::debug!(journal_bytes = len, "sealed the active journal"),
            Ok(None) => {}
            Err(e) => {
                // A poisoned database fails every time: do not log it five times a second.
                tracing::warn!(error = %e, "could not seal the active journal; next try in 30 s");
                pause = Duration::from_secs(30);
            }
        }
    }
}

/// Pads and seals the active journal if it holds at least `from` bytes, then flushes every
/// keyspace so that fjall can delete the sealed journal (it asks for those flushes itself,
/// but only in some cases); the size the journal had.
fn rotate_if_long(
    db: &Database,
    dir: &Path,
    (pad, keyspaces): (&Keyspace, &[Keyspace]),
    from: u64,
    value: &[u8],
    flag: &(Mutex<bool>, Condvar),
) -> Result<Option<u64>> {
    let Some(id) = newest_journal_id(dir) else {
        return Ok(None);
    };
    let path = dir.join(format!("{id}.jnl"));
    let Some(len) = written_len_by_hole(&path).filter(|l| (from..JOURNAL_ROTATE_AT).contains(l))
    else {
        return Ok(None);
    };
    let file = std::fs::File::open(&path)?;
    let sync = |i: u32| -> Result<bool> {
        if i.is_multiple_of(8) {
            db.persist(PersistMode::Buffer)?;
            file.sync_data()?;
        }
        Ok(!stopped(flag))
    };
    if !pad_journal(db, (dir, id), pad, len, value, sync)? {
        return Ok(None);
    }
    db.persist(PersistMode::Buffer)?;
    file.sync_data()?;
    flush_pad(pad)?;
    for ks in keyspaces {
        ks.rotate_memtable()?;
    }
    // Waits for those flushes; the journal maintenance after each deletes what is sealed
    // and fully flushed.
    flush_pad(pad)?;
    Ok(Some(len))
}
