//! Applying SightingDB's snapshot to a sighting store: [`Source`] (which files, in which
//! order), [`import`] (decode, map, apply in batches), [`Summary`].
//!
//! - **Sets, never adds.** Every value goes through [`Sightings::import`], the store's one
//!   import operation: a value already imported is left unchanged, so a second run changes
//!   nothing; a value sighthub already holds with other counts keeps the larger of each part
//!   (SightingDB's own merge rule; see `sighthub_store::sightings` `import`). Consensus and
//!   `_all` are recomputed by the store's rules as values arrive; SightingDB's own `_all` is
//!   not read.
//! - **Resumable.** Each batch is committed with a progress marker ([`MARKER`]: the source's
//!   fingerprint, the file's index and the records done in it) in the same atomic batch. A
//!   run interrupted by anything, `kill -9` included, resumes after the last committed batch
//!   when run again on the same files; the records replayed by an interrupted batch are sets,
//!   so nothing is counted twice either way. At the end the marker says `complete`, and a
//!   later run starts from the beginning again (and changes nothing).
//! - **Hostile files.** A truncated or corrupt file is reported with its name and the reason
//!   ([`Summary::failed_files`]); what was decoded from it before the damage is applied, and
//!   the import **goes on with the other files** (the command then exits with an error naming
//!   them). Decoding is streamed and bounded per record ([`crate::snapshot`]), in its own
//!   thread, a bounded channel ahead of the store.
//! - **What is not imported** is counted per reason ([`Summary::skipped`]): SightingDB's
//!   `_config/…` namespaces (its API keys: `import-sightingdb-config` carries the configured
//!   ones into `[acl]`), other private namespaces than `_shadow/…`, namespaces sighthub cannot
//!   hold, and values the store's rules refuse (empty, count 0, over-long, out-of-range time,
//!   tags over the limits). Files beside the shards that hold no sightings (`activity.json`,
//!   `latest.json`, temporary files) are listed in [`Summary::ignored_files`].

use crate::snapshot::{self, DecodeError, SdbRecord};
use sha2::{Digest as _, Sha256};
use sighthub_store::{
    Engine, ImportOutcome, Imported, ItemError, Namespace, Record, SightingStore, Sightings, Ticket,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The store marker holding the import's progress.
pub const MARKER: &[u8] = b"sightingdb-import/position";

/// The single-file snapshot of SightingDB before 0.5.0 (still read by 0.5 to 0.7.8).
pub const LEGACY_FILE: &str = "sightingdb.json";
/// The suffix of SightingDB's shards.
pub const SHARD_SUFFIX: &str = ".json.zst";

/// Records applied per batch (one atomic store batch, one marker) by default.
pub const DEFAULT_BATCH: usize = 5_000;

/// Failures that stop the import (a bad file does not: see [`Summary::failed_files`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The path cannot be read.
    #[error("{path}: {source}; give SightingDB's data directory (its dbdir) or one of its snapshot files")]
    Source {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory holds no SightingDB snapshot.
    #[error("{0}: no SightingDB snapshot here (no sightingdb.json, no *.json.zst); give SightingDB's dbdir (see dbdir in its sightingdb.toml)")]
    Empty(PathBuf),
    /// The store failed (disk full, failed fsync…): what was committed before stays, and a
    /// re-run resumes.
    #[error("sighting store: {0}; what was imported before this is kept, and running the import again resumes")]
    Store(#[from] sighthub_store::Error),
}

/// The files of one snapshot, in the order they are applied: the single-file snapshot first,
/// then the shards by name (SightingDB's own load order).
#[derive(Debug, Clone)]
pub struct Source {
    files: Vec<(PathBuf, u64)>,
    ignored: Vec<String>,
    fingerprint: String,
}

impl Source {
    /// A data directory (every snapshot file in it) or one snapshot file.
    pub fn open(path: &Path) -> Result<Self, ImportError> {
        let err = |source| ImportError::Source {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(err)?;
        let mut files = Vec::new();
        let mut ignored = Vec::new();
        if meta.is_dir() {
            let mut legacy = None;
            let mut shards = Vec::new();
            for entry in std::fs::read_dir(path).map_err(err)? {
                let entry = entry.map_err(err)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let p = entry.path();
                let len = entry.metadata().map_err(err)?.len();
                if name == LEGACY_FILE {
                    legacy = Some((p, len));
                } else if name.ends_with(SHARD_SUFFIX) {
                    shards.push((p, len));
                } else {
                    ignored.push(name);
                }
            }
            shards.sort();
            ignored.sort();
            files.extend(legacy);
            files.extend(shards);
        } else {
            files.push((path.to_owned(), meta.len()));
        }
        if files.is_empty() {
            return Err(ImportError::Empty(path.to_owned()));
        }
        let mut h = Sha256::new();
        for (p, len) in &files {
            h.update(file_name(p).as_bytes());
            h.update([0]);
            h.update(len.to_le_bytes());
        }
        let fingerprint = hex::encode(h.finalize().get(..16).unwrap_or_default());
        Ok(Self {
            files,
            ignored,
            fingerprint,
        })
    }

    /// The snapshot files, in order, with their sizes.
    pub fn files(&self) -> &[(PathBuf, u64)] {
        &self.files
    }

    /// Their total size in bytes (what the progress counts).
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|(_, l)| *l).sum()
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Options of [`import`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Records per batch ([`DEFAULT_BATCH`]).
    pub batch: usize,
    /// The time expiry is judged at (unix seconds): normally now.
    pub now: i64,
}

/// Called as the import goes.
pub trait Progress {
    /// `bytes` of the source's `total` bytes read, `values` records applied so far.
    fn advanced(&mut self, bytes: u64, total: u64, values: u64);
    /// A file is started (`index` of `count`).
    fn file(&mut self, index: usize, count: usize, name: &str) {
        let _ = (index, count, name);
    }
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Snapshot files read (whole or in part).
    pub files: usize,
    /// Namespaces that received values.
    pub namespaces: usize,
    /// Values that were not in sighthub.
    pub new: u64,
    /// Values that were, and changed (larger of each part).
    pub updated: u64,
    /// Values that were, and already held everything: nothing written.
    pub unchanged: u64,
    /// SightingDB's `_all` records (its consensus), not imported: recomputed.
    pub consensus_recomputed: u64,
    /// Records not imported, by reason, with up to three examples (`namespace value`) each.
    pub skipped: BTreeMap<String, (u64, Vec<String>)>,
    /// Files that could not be read to the end, with the reason (what came before the
    /// damage was imported).
    pub failed_files: Vec<(PathBuf, String)>,
    /// Files beside the snapshot that hold no sightings (not imported).
    pub ignored_files: Vec<String>,
    /// Where an interrupted earlier run was resumed: file name and records skipped in it.
    pub resumed: Option<(String, u64)>,
}

impl Summary {
    /// Records not imported, all reasons.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().map(|(n, _)| n).sum()
    }

    fn skip(&mut self, reason: String, rec: &SdbRecord) {
        let e = self.skipped.entry(reason).or_default();
        e.0 += 1;
        if e.1.len() < 3 {
            let mut v = rec.value.clone();
            if v.len() > 80 {
                let mut cut = 80;
                while !v.is_char_boundary(cut) {
                    cut -= 1;
                }
                v.truncate(cut);
                v.push('…');
            }
            e.1.push(format!("{} {v}", rec.namespace));
        }
    }
}

/// The progress marker's value.
#[derive(Debug, PartialEq, Eq)]
enum Position {
    At { file: usize, records: u64 },
    Complete,
}

fn encode_marker(fingerprint: &str, pos: &Position) -> Vec<u8> {
    match pos {
        Position::At { file, records } => format!("v1 {fingerprint} {file} {records}"),
        Position::Complete => format!("v1 {fingerprint} complete"),
    }
    .into_bytes()
}

fn decode_marker(v: &[u8], fingerprint: &str) -> Option<Position> {
    let text = std::str::from_utf8(v).ok()?;
    let mut parts = text.split(' ');
    if parts.next()? != "v1" || parts.next()? != fingerprint {
        return None;
    }
    match (parts.next()?, parts.next()) {
        ("complete", None) => Some(Position::Complete),
        (file, Some(records)) => Some(Position::At {
            file: file.parse().ok()?,
            records: records.parse().ok()?,
        }),
        _ => None,
    }
}

/// Counts the compressed (file) bytes read, for the progress.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// zstd's frame magic number: a file starting with it is a compressed shard, any other is
/// read as plain JSON (the single-file snapshot).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Decodes one file (zstd or plain JSON, by its first bytes), calling `on_record` for each
/// record. Streams: memory is bounded whatever the file's size.
pub fn decode_file(
    path: &Path,
    read: Arc<AtomicU64>,
    on_record: impl FnMut(SdbRecord) -> bool,
) -> Result<snapshot::Decoded, DecodeError> {
    let file = std::fs::File::open(path).map_err(DecodeError::Io)?;
    let mut reader = std::io::BufReader::new(Counted { inner: file, read });
    let head = std::io::BufRead::fill_buf(&mut reader).map_err(DecodeError::Io)?;
    if head.starts_with(&ZSTD_MAGIC) {
        let z = zstd::stream::read::Decoder::with_buffer(reader).map_err(DecodeError::Io)?;
        snapshot::decode(z, on_record)
    } else {
        snapshot::decode(reader, on_record)
    }
}

/// Imports `source` into `store` (see the module docs). Stops only on a store failure; a bad
/// file is reported in the summary and the others are still imported.
pub fn import<E: Engine>(
    store: &Sightings<E>,
    source: &Source,
    opts: &Options,
    progress: &mut dyn Progress,
) -> Result<Summary, ImportError> {
    let batch = opts.batch.max(1);
    let fp = source.fingerprint.as_str();
    let mut summary = Summary {
        ignored_files: source.ignored.clone(),
        ..Summary::default()
    };
    let (start_file, mut start_records) =
        match store.marker(MARKER)?.and_then(|v| decode_marker(&v, fp)) {
            Some(Position::At { file, records }) if file < source.files.len() => (file, records),
            _ => (0, 0),
        };
    if start_file > 0 || start_records > 0 {
        let name = source
            .files
            .get(start_file)
            .map(|(p, _)| file_name(p))
            .unwrap_or_default();
        summary.resumed = Some((name, start_records));
    }
    let total = source.total_bytes();
    let mut done_bytes: u64 = source.files.iter().take(start_file).map(|(_, l)| *l).sum();
    let mut namespaces = BTreeSet::new();
    let mut values = 0u64;
    let mut pending = Ticket::NONE;
    for (index, (path, len)) in source.files.iter().enumerate().skip(start_file) {
        summary.files += 1;
        progress.file(index, source.files.len(), &file_name(path));
        let read = Arc::new(AtomicU64::new(0));
        let skip = std::mem::take(&mut start_records);
        let (tx, rx) = std::sync::mpsc::sync_channel::<SdbRecord>(batch.saturating_mul(2));
        let outcome =
            std::thread::scope(|scope| -> Result<Result<(), DecodeError>, ImportError> {
                // Owned by this closure: an early return drops it, which stops the decoder
                // (its send fails) before the scope waits for it.
                let rx = rx;
                let reader = {
                    let read = Arc::clone(&read);
                    scope.spawn(move || decode_file(path, read, move |r| tx.send(r).is_ok()))
                };
                let mut position = 0u64;
                let mut buf: Vec<SdbRecord> = Vec::with_capacity(batch);
                let mut flush = |buf: &mut Vec<SdbRecord>,
                                 position: u64,
                                 summary: &mut Summary,
                                 values: &mut u64|
                 -> Result<(), ImportError> {
                    let marker = encode_marker(
                        fp,
                        &Position::At {
                            file: index,
                            records: position,
                        },
                    );
                    let t = apply(store, buf, &marker, opts.now, summary, &mut namespaces)?;
                    *values += buf.len() as u64;
                    buf.clear();
                    store.durability().wait_blocking(pending)?;
                    pending = t;
                    progress.advanced(
                        done_bytes + read.load(Ordering::Relaxed).min(*len),
                        total,
                        *values,
                    );
                    Ok(())
                };
                for rec in rx.iter() {
                    position += 1;
                    if position <= skip {
                        continue;
                    }
                    buf.push(rec);
                    if buf.len() >= batch {
                        flush(&mut buf, position, &mut summary, &mut values)?;
                    }
                }
                let decoded = reader.join().unwrap_or_else(|_| {
                    Err(DecodeError::Io(std::io::Error::other(
                        "the decoder panicked",
                    )))
                });
                // What arrived before a failure is applied too; the marker then moves past the
                // file (its failure is reported, and a re-run starts over anyway once complete).
                flush(&mut buf, position, &mut summary, &mut values)?;
                Ok(decoded.map(|_| ()))
            })?;
        done_bytes += len;
        if let Err(e) = outcome {
            summary.failed_files.push((path.clone(), e.to_string()));
        }
        let next = encode_marker(
            fp,
            &Position::At {
                file: index + 1,
                records: 0,
            },
        );
        let (_, t) = store.import(&[], Some((MARKER, &next)), opts.now)?;
        store.durability().wait_blocking(pending)?;
        pending = t;
    }
    let (_, t) = store.import(
        &[],
        Some((MARKER, &encode_marker(fp, &Position::Complete))),
        opts.now,
    )?;
    store.durability().wait_blocking(pending)?;
    store.durability().wait_blocking(t)?;
    progress.advanced(total, total, values);
    summary.namespaces = namespaces.len();
    Ok(summary)
}

/// Maps a batch of SightingDB records and sets them through the store, with `marker`.
fn apply<E: Engine>(
    store: &Sightings<E>,
    records: &[SdbRecord],
    marker: &[u8],
    now: i64,
    summary: &mut Summary,
    namespaces: &mut BTreeSet<String>,
) -> Result<Ticket, ImportError> {
    let mut parsed: Vec<(usize, Namespace)> = Vec::with_capacity(records.len());
    for (i, rec) in records.iter().enumerate() {
        let ns = rec.namespace.trim_matches('/');
        if ns == sighthub_store::namespace::ALL {
            summary.consensus_recomputed += 1;
            continue;
        }
        if ns.starts_with("_config/") || ns == "_config" {
            summary.skip(
                "SightingDB's _config namespaces (its API keys and settings; the configured keys go into [acl] with import-sightingdb-config)".into(),
                rec,
            );
            continue;
        }
        match Namespace::parse(ns) {
            Ok(n) => parsed.push((i, n)),
            Err(e) => summary.skip(format!("namespace not valid in sighthub ({e})"), rec),
        }
    }
    let items: Vec<Imported<'_>> = parsed
        .iter()
        .filter_map(|(i, ns)| {
            let rec = records.get(*i)?;
            Some(Imported {
                namespace: ns,
                value: &rec.value,
                record: Record {
                    first_seen: rec.first_seen,
                    last_seen: rec.last_seen,
                    count: rec.count,
                    ttl: rec.ttl,
                    tags: rec.tags.clone(),
                    stats: rec.stats.clone(),
                },
            })
        })
        .collect();
    let (outcomes, ticket) = store.import(&items, Some((MARKER, marker)), now)?;
    for ((i, ns), outcome) in parsed.iter().zip(outcomes) {
        let Some(rec) = records.get(*i) else { continue };
        match outcome {
            Ok(o) => {
                if !namespaces.contains(ns.as_str()) {
                    namespaces.insert(ns.as_str().to_owned());
                }
                match o {
                    ImportOutcome::New => summary.new += 1,
                    ImportOutcome::Updated => summary.updated += 1,
                    ImportOutcome::Unchanged => summary.unchanged += 1,
                }
            }
            Err(e) => summary.skip(refusal(&e), rec),
        }
    }
    Ok(ticket)
}

/// The reason a refused record is counted under (without the record's own numbers, so one
/// reason is one line of the summary).
fn refusal(e: &ItemError) -> String {
    match e {
        ItemError::EmptyValue => "empty value, or a count of 0".into(),
        ItemError::ValueTooLong(_) => format!(
            "value longer than {} bytes (MAX_VALUE_LEN)",
            sighthub_store::MAX_VALUE_LEN
        ),
        ItemError::TimestampOutOfRange(_) => "first or last seen outside years 1 to 9999".into(),
        ItemError::Internal(seg) => {
            format!("private namespace {seg} (of the private ones only _shadow/… is imported)")
        }
        other => format!("refused by [limits]: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_round_trips_and_belongs_to_one_source() {
        let at = Position::At {
            file: 3,
            records: 17,
        };
        assert_eq!(decode_marker(&encode_marker("ab", &at), "ab"), Some(at));
        assert_eq!(
            decode_marker(&encode_marker("ab", &Position::Complete), "ab"),
            Some(Position::Complete)
        );
        assert_eq!(
            decode_marker(&encode_marker("ab", &Position::Complete), "cd"),
            None
        );
        assert_eq!(decode_marker(b"garbage", "ab"), None);
    }

    struct Quiet;
    impl Progress for Quiet {
        fn advanced(&mut self, _: u64, _: u64, _: u64) {}
    }

    fn mem() -> Sightings<sighthub_store::MemEngine> {
        Sightings::new(sighthub_store::MemEngine::new(), Default::default()).expect("store")
    }

    fn opts() -> Options {
        Options {
            batch: 100,
            now: crate::synthetic::T0 + 86_400,
        }
    }

    #[test]
    fn imports_every_value_once_and_a_second_run_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::synthetic::write(dir.path(), 1000, 6, 3).expect("snapshot");
        let store = mem();
        let src = Source::open(dir.path()).expect("source");
        let s = import(&store, &src, &opts(), &mut Quiet).expect("import");
        assert_eq!(
            (s.new, s.updated, s.unchanged, s.namespaces, s.files),
            (1000, 0, 0, 6, 3)
        );
        for i in [0u64, 1, 499, 999] {
            let (ns, v, count) = crate::synthetic::value(i, 6, 3);
            let ns = Namespace::parse(&ns).expect("ns");
            match store.read(&ns, &v, opts().now).expect("read") {
                sighthub_store::ReadOutcome::Found(view) => {
                    assert_eq!((view.record.count, view.consensus), (count, 1))
                }
                other => panic!("{v}: {other:?}"),
            }
        }
        let again = import(&store, &src, &opts(), &mut Quiet).expect("import");
        assert_eq!((again.new, again.updated, again.unchanged), (0, 0, 1000));
        assert_eq!(again.resumed, None);
    }

    #[test]
    fn a_truncated_shard_is_named_and_the_others_are_imported() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::synthetic::write(dir.path(), 3000, 3, 3).expect("snapshot");
        let victim = crate::synthetic::shard_file(dir.path(), "synth1");
        let bytes = std::fs::read(&victim).expect("read");
        std::fs::write(&victim, &bytes[..bytes.len() / 2]).expect("truncate");
        let store = mem();
        let src = Source::open(dir.path()).expect("source");
        let s = import(&store, &src, &opts(), &mut Quiet).expect("import");
        assert_eq!(s.failed_files.len(), 1, "{:?}", s.failed_files);
        assert_eq!(s.failed_files[0].0, victim);
        // The two intact shards whole, and some of the damaged one's first half.
        assert!(s.new >= 2000 && s.new < 3000, "{}", s.new);
        let n0 = Namespace::parse("synth0/ns0").expect("ns");
        assert_eq!(store.count(&n0, opts().now).expect("count"), Some(1000));
    }

    #[test]
    fn an_interrupted_run_resumes_after_the_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::synthetic::write(dir.path(), 1000, 2, 2).expect("snapshot");
        let store = mem();
        let src = Source::open(dir.path()).expect("source");
        // As a run killed after 300 records of the second file would have left it.
        let m = encode_marker(
            &src.fingerprint,
            &Position::At {
                file: 1,
                records: 300,
            },
        );
        let _ = store.import(&[], Some((MARKER, &m)), 0).expect("marker");
        let s = import(&store, &src, &opts(), &mut Quiet).expect("import");
        assert_eq!(s.resumed.as_ref().map(|r| r.1), Some(300));
        assert_eq!((s.new, s.files), (200, 1));
    }
}
