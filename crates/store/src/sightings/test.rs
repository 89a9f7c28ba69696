//! The sighting rules' tests, run unchanged against every engine: each test of the suite is a
//! generic function, and `suite!` makes one `#[test]` per engine of it (modules `fjall`, on a
//! real fjall database in a temporary directory, and `mem`, on [`MemEngine`]). The tests about
//! fjall's files (reopen, journal sealing at close, data larger than the block cache) stay
//! fjall-only, each saying why.

use super::*;
use crate::engine::MemEngine;
use crate::fjall_store::{FjallEngine, FjallStore};
use crate::record::BUCKET;
use std::path::Path;

const T0: i64 = 1_700_000_000;

/// How a test opens a store on its engine.
trait Harness: Engine + Sized {
    fn open_with(dir: &Path, opts: StoreOptions) -> Result<Sightings<Self>>;
}

impl Harness for FjallEngine {
    fn open_with(dir: &Path, opts: StoreOptions) -> Result<FjallStore> {
        FjallStore::open(dir, opts)
    }
}

impl Harness for MemEngine {
    /// In memory: `dir` is not used.
    fn open_with(_dir: &Path, opts: StoreOptions) -> Result<Sightings<MemEngine>> {
        Sightings::new(MemEngine::new(), opts)
    }
}

fn open_with<E: Harness>(dir: &Path, opts: StoreOptions) -> Result<Sightings<E>> {
    E::open_with(dir, opts)
}

fn open<E: Harness>(dir: &Path) -> Sightings<E> {
    open_with(dir, StoreOptions::default()).expect("store opens")
}

fn ns(s: &str) -> Namespace {
    Namespace::parse(s).expect("valid namespace")
}

fn write1<E: Engine>(s: &Sightings<E>, n: &Namespace, v: &str, ts: i64) -> WriteOutcome {
    let (out, t) = s.write(&[WriteOp::new(n, v, ts)], ts).expect("write");
    s.durability().wait_blocking(t).expect("durable");
    out.into_iter()
        .next()
        .expect("one outcome")
        .expect("accepted")
}

fn found(o: ReadOutcome) -> View {
    match o {
        ReadOutcome::Found(v) => v,
        other => panic!("expected a value, got {other:?}"),
    }
}

fn counts_first_last_and_consensus<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let (a, b) = (ns("cons/a"), ns("cons/b"));
    assert_eq!(
        write1(&s, &a, "v", T0),
        WriteOutcome {
            count: 1,
            new: true
        }
    );
    assert_eq!(
        write1(&s, &b, "v", T0 + 10),
        WriteOutcome {
            count: 1,
            new: true
        }
    );
    assert_eq!(
        write1(&s, &b, "v", T0 - 10),
        WriteOutcome {
            count: 2,
            new: false
        }
    );
    let v = found(s.read(&b, "v", T0).expect("read"));
    assert_eq!(
        (v.record.first_seen, v.record.last_seen, v.record.count),
        (T0 - 10, T0 + 10, 2)
    );
    assert_eq!(v.consensus, 2);
    assert_eq!(found(s.read(&a, "v", T0).expect("read")).consensus, 2);
    assert_eq!(
        found(s.read(&Namespace::all(), "v", T0).expect("read"))
            .record
            .count,
        2
    );
    assert_eq!(s.read(&a, "nope", T0).expect("read"), ReadOutcome::NoValue);
    assert_eq!(
        s.read(&ns("nope"), "v", T0).expect("read"),
        ReadOutcome::NoNamespace
    );
    let (deleted, t) = s.delete(&b, T0).expect("delete");
    s.durability().wait_blocking(t).expect("durable");
    assert!(deleted);
    assert_eq!(found(s.read(&a, "v", T0).expect("read")).consensus, 1);
    assert_eq!(s.read(&b, "v", T0).expect("read"), ReadOutcome::NoNamespace);
    assert!(!s.delete(&b, T0).expect("delete").0);
}

fn client_checks_refuse_items_but_not_the_batch<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let (good, all) = (ns("x"), Namespace::all());
    let ops = [
        WriteOp::new(&good, "", T0),
        WriteOp::new(&all, "v", T0),
        WriteOp::new(&good, "v", crate::MAX_TIMESTAMP + 1),
        WriteOp::new(&good, "v", T0),
        WriteOp::new(&good, "v", T0),
    ];
    let (out, t) = s.write(&ops, T0).expect("write");
    s.durability().wait_blocking(t).expect("durable");
    assert_eq!(out[0], Err(ItemError::EmptyValue));
    assert_eq!(out[1], Err(ItemError::Internal("_all".into())));
    assert!(matches!(out[2], Err(ItemError::TimestampOutOfRange(_))));
    assert_eq!(
        out[3],
        Ok(WriteOutcome {
            count: 1,
            new: true
        })
    );
    assert_eq!(
        out[4],
        Ok(WriteOutcome {
            count: 2,
            new: false
        }),
        "a batch sees its own writes"
    );
    assert_eq!(found(s.read(&good, "v", T0).expect("read")).consensus, 1);
}

fn ttl_moves_to_expired_and_releases_consensus<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let (a, b) = (ns("t/a"), ns("t/b"));
    let mut op = WriteOp::new(&a, "v", T0);
    op.ttl = Some(60);
    op.tags = Some("x;y");
    let (_, t) = s.write(&[op], T0).expect("write");
    s.durability().wait_blocking(t).expect("durable");
    write1(&s, &a, "v", T0 + 1); // keeps ttl, moves expiry to T0+61
    write1(&s, &b, "v", T0);
    assert_eq!(found(s.read(&b, "v", T0 + 30).expect("read")).consensus, 2);
    assert_eq!(
        found(s.read(&a, "v", T0 + 60).expect("read")).record.ttl,
        60
    );
    // Expired: reading another namespace already sees the consensus given back.
    assert_eq!(found(s.read(&b, "v", T0 + 61).expect("read")).consensus, 1);
    assert_eq!(
        s.read(&a, "v", T0 + 61).expect("read"),
        ReadOutcome::NoNamespace
    );
    let moved = found(s.read(&ns("_expired/t/a"), "v", T0 + 61).expect("read"));
    assert_eq!((moved.record.count, moved.record.tags.as_str()), (2, "x,y"));
    // A later write starts a fresh count.
    assert_eq!(
        write1(&s, &a, "v", T0 + 100),
        WriteOutcome {
            count: 1,
            new: true
        }
    );
    assert_eq!(found(s.read(&b, "v", T0 + 100).expect("read")).consensus, 2);
}

fn ttl_zero_clears<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let a = ns("t");
    let mut op = WriteOp::new(&a, "v", T0);
    op.ttl = Some(5);
    let _ = s.write(&[op], T0).expect("write");
    op.ttl = Some(0);
    let _ = s.write(&[op], T0).expect("write");
    assert_eq!(
        found(s.read(&a, "v", T0 + 1000).expect("read")).record.ttl,
        0
    );
    assert_eq!(s.sweep(T0 + 1000).expect("sweep"), 0);
}

/// `read_now` answers like `read` while no sweep is due, and declines (so the caller reads on
/// a blocking thread, where the read sweeps) once one is: it never sweeps, which writes.
fn read_now_declines_a_due_sweep<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let a = ns("t");
    write1(&s, &a, "kept", T0);
    let mut op = WriteOp::new(&a, "v", T0);
    op.ttl = Some(60);
    let _ = s.write(&[op], T0).expect("write");
    let now = s
        .read_now(&a, "kept", T0 + 59)
        .expect("no sweep due")
        .expect("read");
    assert_eq!(now, s.read(&a, "kept", T0 + 59).expect("read"));
    assert_eq!(found(now).record.count, 1);
    assert!(s.read_now(&a, "kept", T0 + 60).is_none(), "a sweep is due");
    assert!(s.read_now(&a, "v", T0 + 60).is_none(), "a sweep is due");
    // The blocking read sweeps; after it nothing is due and read_now answers again.
    assert_eq!(
        s.read(&a, "v", T0 + 60).expect("read"),
        ReadOutcome::NoValue
    );
    assert_eq!(
        s.read_now(&a, "v", T0 + 60).expect("swept").expect("read"),
        ReadOutcome::NoValue
    );
}

fn value_formats<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let (h, b) = (ns("priv/h"), ns("priv/b"));
    let _ = s.set_format(&h, ValueFormat::Sha256).expect("set");
    let _ = s.set_format(&b, ValueFormat::Base64Url).expect("set");
    write1(&s, &h, "abc", T0);
    write1(&s, &b, "a?", T0);
    let v = found(s.read(&h, "abc", T0).expect("read"));
    assert_eq!(
        v.value,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(found(s.read(&b, "a?", T0).expect("read")).value, "YT8");
    assert!(matches!(
        s.set_format(&h, ValueFormat::Raw),
        Err(Error::FormatConflict(_))
    ));
    assert!(
        s.set_format(&h, ValueFormat::Sha256).is_ok(),
        "same format is not a change"
    );
    // The shadow of a hashed namespace holds the hash, never the raw value.
    s.shadow(&[(&h, "abc")], T0).expect("shadow");
    let page = s
        .list(&h.shadow(), None, usize::MAX, usize::MAX, T0)
        .expect("list")
        .expect("exists");
    assert_eq!(page.items[0].value, v.value);
    assert_eq!(s.format(&h.shadow()), ValueFormat::Sha256);
}

fn listing_pages_with_cursor<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let a = ns("l");
    let sub = ns("l/sub");
    for i in 0..25 {
        write1(&s, &a, &format!("v{i:02}"), T0);
    }
    write1(&s, &sub, "other", T0);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list(&a, after.as_deref(), 10, usize::MAX, T0)
            .expect("list")
            .expect("exists");
        seen.extend(page.items.iter().map(|v| v.value.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(
        seen,
        (0..25).map(|i| format!("v{i:02}")).collect::<Vec<_>>()
    );
    assert_eq!(s.count(&a, T0).expect("count"), Some(25));
    assert_eq!(
        s.list(&ns("none"), None, usize::MAX, usize::MAX, T0)
            .expect("list"),
        None
    );
}

fn stats_are_hourly<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let a = ns("s");
    write1(&s, &a, "v", 999_999_999);
    write1(&s, &a, "v", -5);
    let v = found(s.read(&a, "v", T0).expect("read"));
    assert_eq!(v.record.stats, vec![(-BUCKET, 1), (999_997_200, 1)]);
}

/// Reopens the data directory: only fjall keeps anything across a restart.
#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open::<FjallEngine>(dir.path());
        let _ = s.set_format(&ns("h"), ValueFormat::Sha256).expect("set");
        for i in 0..100 {
            write1(&s, &ns("r"), &format!("{i}"), T0);
        }
        let r = ns("r");
        let mut op = WriteOp::new(&r, "ttl", T0);
        op.ttl = Some(10);
        let (_, t) = s.write(&[op], T0).expect("write");
        s.durability().wait_blocking(t).expect("durable");
    }
    let s = open::<FjallEngine>(dir.path());
    assert_eq!(s.count(&ns("r"), T0).expect("count"), Some(101));
    assert_eq!(s.format(&ns("h")), ValueFormat::Sha256);
    // The expiry index survived too: the value expires after the reopen.
    assert_eq!(
        s.read(&ns("r"), "ttl", T0 + 11).expect("read"),
        ReadOutcome::NoValue
    );
    assert_eq!(s.count(&ns("_expired/r"), T0 + 11).expect("count"), Some(1));
}

fn marked_batches_retractions_and_holders<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let (a, b, h) = (ns("org1/ip"), ns("org2/ip"), ns("org3/ip"));
    let _ = s.set_format(&h, ValueFormat::Sha256).expect("format");
    assert_eq!(s.marker(b"feeder").expect("marker"), None);
    let ops = [
        WriteOp::new(&a, "v", T0),
        WriteOp::new(&b, "v", T0),
        WriteOp::new(&h, "v", T0),
    ];
    let (out, t) = s
        .apply_marked(&ops, &[], &[(b"feeder", b"1")], T0)
        .expect("apply");
    s.durability().wait_blocking(t).expect("durable");
    assert!(out.iter().all(std::result::Result::is_ok));
    assert_eq!(
        s.marker(b"feeder").expect("marker").as_deref(),
        Some(&b"1"[..])
    );
    let holders = s.holders("v", T0).expect("holders");
    let names: Vec<&str> = holders.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["org1/ip", "org2/ip", "org3/ip"]);
    // Consensus is kept per stored form: the two RAW namespaces share it, the SHA256 one
    // (which never stores the raw value) counts with other SHA256 namespaces only.
    let cons: Vec<u64> = holders.iter().map(|(_, v)| v.consensus).collect();
    assert_eq!(cons, [2, 2, 1]);
    // Retract: a second sighting in org1 comes back out; org2's only one removes the value.
    let (_, t) = s
        .apply_marked(&[WriteOp::new(&a, "v", T0)], &[], &[(b"feeder", b"2")], T0)
        .expect("apply");
    s.durability().wait_blocking(t).expect("durable");
    let (_, t) = s
        .apply_marked(
            &[],
            &[(&a, "v"), (&b, "v"), (&b, "absent")],
            &[(b"feeder", b"3")],
            T0,
        )
        .expect("retract");
    s.durability().wait_blocking(t).expect("durable");
    assert_eq!(found(s.read(&a, "v", T0).expect("read")).record.count, 1);
    assert_eq!(s.read(&b, "v", T0).expect("read"), ReadOutcome::NoNamespace);
    assert_eq!(found(s.read(&a, "v", T0).expect("read")).consensus, 1);
    assert_eq!(
        s.marker(b"feeder").expect("marker").as_deref(),
        Some(&b"3"[..])
    );
}

/// Bytes of journal a restart would replay.
fn journal_bytes(dir: &Path) -> u64 {
    sighthub_storage::journal::replay_bytes(&dir.join("db")).expect("journal files readable")
}

/// About fjall's journal files and the seal at a clean shutdown: fjall only.
#[test]
fn close_leaves_a_small_journal_and_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = ns("close/values");
    let long = "x".repeat(200);
    {
        let s = open::<FjallEngine>(dir.path());
        let values: Vec<String> = (0..30_000).map(|i| format!("{long}-{i}")).collect();
        for chunk in values.chunks(5_000) {
            let ops: Vec<WriteOp<'_>> = chunk.iter().map(|v| WriteOp::new(&n, v, T0)).collect();
            let (_, t) = s.write(&ops, T0).expect("write");
            s.durability().wait_blocking(t).expect("durable");
        }
        let before = journal_bytes(dir.path());
        assert!(
            before > sighthub_storage::journal::CLOSE_PAD_FROM,
            "journal holds {before} bytes"
        );
        s.close().expect("close");
        let after = journal_bytes(dir.path());
        // Small against what was there: once in a CI run (with the rotator and the seal's
        // 4,000-byte filler) about 1 MB was left, one filler batch (256 values, about 1 MiB);
        // why is not known yet. A restart replays that in milliseconds.
        assert!(
            after < 2 * 1024 * 1024,
            "after close the journal still holds {after} bytes (was {before})"
        );
    }
    let s = open::<FjallEngine>(dir.path());
    assert_eq!(s.count(&n, T0).expect("count"), Some(30_000));
    for i in [0, 14_999, 29_999] {
        let v = found(s.read(&n, &format!("{long}-{i}"), T0).expect("read"));
        assert_eq!((v.record.count, v.consensus), (1, 1));
    }
    // A second close with little in the journal does not pad (nothing to gain).
    write1(&s, &n, "one-more", T0);
    s.close().expect("close again");
    assert!(journal_bytes(dir.path()) < sighthub_storage::journal::CLOSE_PAD_FROM);
}

/// About fjall's journal files and the background rotation: fjall only. A long run of
/// writes leaves a short active journal (so a restart after a crash replays little), and
/// everything written survives a stop without the clean shutdown's seal.
#[test]
fn long_runs_of_writes_keep_the_active_journal_short() {
    use sighthub_storage::journal::ROTATE_FROM;
    let dir = tempfile::tempdir().expect("tempdir");
    let n = ns("rotate/values");
    let long = "y".repeat(1000);
    let total = 24_000;
    {
        let s = open::<FjallEngine>(dir.path());
        let values: Vec<String> = (0..total).map(|i| format!("{long}-{i}")).collect();
        for chunk in values.chunks(2_000) {
            let ops: Vec<WriteOp<'_>> = chunk.iter().map(|v| WriteOp::new(&n, v, T0)).collect();
            let (_, t) = s.write(&ops, T0).expect("write");
            s.durability().wait_blocking(t).expect("durable");
        }
        // About 50 MB of journal were written, past ROTATE_FROM: the rotator seals the active
        // journal in the background and fjall deletes the sealed one once flushed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut left = journal_bytes(dir.path());
        while left >= ROTATE_FROM && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            left = journal_bytes(dir.path());
        }
        assert!(left < ROTATE_FROM, "the journals still hold {left} bytes");
        // Dropped without `close`: no seal, as after a crash.
    }
    let s = open::<FjallEngine>(dir.path());
    assert_eq!(s.count(&n, T0).expect("count"), Some(total as u64));
    for i in [0, total / 2, total - 1] {
        let v = found(s.read(&n, &format!("{long}-{i}"), T0).expect("read"));
        assert_eq!((v.record.count, v.consensus), (1, 1));
    }
}

/// The control of the test above, and `journal_rotate_bytes = 0` (`[storage]
/// journal_rotate_mb = 0`): without the rotator the same run leaves the long journal, which a
/// restart replays whole, and still loses nothing.
#[test]
fn without_the_rotator_the_journal_stays_long_and_loses_nothing() {
    use sighthub_storage::journal::ROTATE_FROM;
    let dir = tempfile::tempdir().expect("tempdir");
    let n = ns("norotate/values");
    let long = "z".repeat(1000);
    let total = 24_000;
    let opts = || StoreOptions {
        journal_rotate_bytes: 0,
        ..StoreOptions::default()
    };
    {
        let s = open_with::<FjallEngine>(dir.path(), opts()).expect("open");
        let values: Vec<String> = (0..total).map(|i| format!("{long}-{i}")).collect();
        for chunk in values.chunks(2_000) {
            let ops: Vec<WriteOp<'_>> = chunk.iter().map(|v| WriteOp::new(&n, v, T0)).collect();
            let (_, t) = s.write(&ops, T0).expect("write");
            s.durability().wait_blocking(t).expect("durable");
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        let left = journal_bytes(dir.path());
        assert!(
            left >= ROTATE_FROM,
            "only {left} bytes of journal without the rotator"
        );
        // Dropped without `close`: no seal, as after a crash.
    }
    let s = open_with::<FjallEngine>(dir.path(), opts()).expect("reopen");
    assert_eq!(s.count(&n, T0).expect("count"), Some(total as u64));
    let v = found(
        s.read(&n, &format!("{long}-{}", total - 1), T0)
            .expect("read"),
    );
    assert_eq!(v.record.count, 1);
}

/// About fjall's block cache and table files on disk, and a reopen: fjall only.
#[test]
fn data_ten_times_the_block_cache_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = StoreOptions {
        cache_bytes: 1024 * 1024,
        memtable_bytes: 2 * 1024 * 1024,
        ..StoreOptions::default()
    };
    let n = ns("big/cache");
    let pad = "p".repeat(60);
    let value = |i: usize| format!("{pad}-{i:07}");
    let total = 150_000;
    {
        let s = open_with::<FjallEngine>(dir.path(), opts.clone()).expect("open");
        let values: Vec<String> = (0..total).map(value).collect();
        for chunk in values.chunks(10_000) {
            let ops: Vec<WriteOp<'_>> = chunk.iter().map(|v| WriteOp::new(&n, v, T0)).collect();
            let (_, t) = s.write(&ops, T0).expect("write");
            s.durability().wait_blocking(t).expect("durable");
        }
        s.close().expect("close");
    }
    let tables: u64 = walk_size(&dir.path().join("db").join("keyspaces"));
    assert!(
        tables > 10 * opts.cache_bytes,
        "tables hold {tables} bytes, not ten times the cache"
    );
    let s = open_with::<FjallEngine>(dir.path(), opts).expect("reopen");
    assert_eq!(s.count(&n, T0).expect("count"), Some(total as u64));
    for i in (0..total).step_by(997) {
        let v = found(s.read(&n, &value(i), T0).expect("read"));
        assert_eq!((v.record.count, v.consensus), (1, 1), "value {i}");
    }
    assert!(matches!(
        s.read(&n, "absent", T0).expect("read"),
        ReadOutcome::NoValue
    ));
    let page = s
        .list(&n, None, 1000, usize::MAX, T0)
        .expect("list")
        .expect("exists");
    assert_eq!(page.items.len(), 1000);
}

fn walk_size(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.filter_map(|e| e.ok())
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk_size(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

/// Every path that builds a key from a value refuses or ignores one longer than
/// `MAX_VALUE_LEN` before the engine sees it (the engine panics on keys over 65,535 bytes).
fn over_long_values_never_reach_the_engine<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let (a, b64) = (ns("long/raw"), ns("long/b64"));
    let _ = s.set_format(&b64, ValueFormat::Base64Url).expect("format");
    let huge = "x".repeat(70_000);
    let over = "y".repeat(crate::MAX_VALUE_LEN + 1);
    let at_limit = "z".repeat(crate::MAX_VALUE_LEN);
    let ops = [
        WriteOp::new(&a, &huge, T0),
        WriteOp::new(&a, &over, T0),
        WriteOp::new(&a, &at_limit, T0),
        WriteOp::new(&b64, &at_limit, T0),
        WriteOp::new(&b64, &huge, T0),
    ];
    let (out, t) = s.write(&ops, T0).expect("write");
    s.durability().wait_blocking(t).expect("durable");
    assert_eq!(out[0], Err(ItemError::ValueTooLong(70_000)));
    assert_eq!(
        out[1],
        Err(ItemError::ValueTooLong(crate::MAX_VALUE_LEN + 1))
    );
    assert!(out[2].is_ok(), "a value at the limit is stored");
    assert!(out[3].is_ok(), "also in a BASE64URL namespace");
    assert_eq!(out[4], Err(ItemError::ValueTooLong(70_000)));
    // Reads, shadows, retractions and holders answer "absent".
    assert_eq!(s.read(&a, &huge, T0).expect("read"), ReadOutcome::NoValue);
    assert_eq!(
        s.read(&ns("long/none"), &huge, T0).expect("read"),
        ReadOutcome::NoNamespace
    );
    s.shadow(&[(&a, &huge), (&a, &at_limit)], T0)
        .expect("shadow");
    assert_eq!(s.count(&a.shadow(), T0).expect("count"), Some(1));
    let (_, t) = s
        .apply_marked(
            &[WriteOp::new(&a, &huge, T0)],
            &[(&a, &huge)],
            &[(b"m", b"1")],
            T0,
        )
        .expect("retract");
    s.durability().wait_blocking(t).expect("durable");
    assert!(s.holders(&huge, T0).expect("holders").is_empty());
    assert_eq!(s.holders(&at_limit, T0).expect("holders").len(), 2);
    // A cursor longer than any stored value lists what follows it, without a panic.
    let page = s
        .list(&a, Some(&huge), usize::MAX, usize::MAX, T0)
        .expect("list")
        .expect("exists");
    assert_eq!(page.items.len(), 1, "z… sorts after x…");
    let page = s
        .list(&b64, Some(&"a".repeat(70_000)), usize::MAX, usize::MAX, T0)
        .expect("list")
        .expect("exists");
    assert_eq!(page.items.len(), 1, "enp6… sorts after aaa…");
    let stored = ValueFormat::Base64Url.encode(&at_limit).into_owned();
    let page = s
        .list(
            &b64,
            Some(&format!("{stored}{}", "a".repeat(70_000))),
            usize::MAX,
            usize::MAX,
            T0,
        )
        .expect("list")
        .expect("exists");
    assert!(
        page.items.is_empty(),
        "the stored value sorts before the longer cursor"
    );
}

/// Tags are bounded per write (count, length) and per value; stats buckets per value.
fn tags_and_stats_are_bounded<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        max_tags_per_item: 3,
        max_tag_len: 8,
        max_tags_per_value: 4,
        max_stats_buckets: 5,
    };
    let s = open_with::<E>(
        dir.path(),
        StoreOptions {
            limits,
            ..StoreOptions::default()
        },
    )
    .expect("store opens");
    assert_eq!(s.limits(), &limits);
    let a = ns("t/a");
    let with = |tags: &'static str| WriteOp {
        tags: Some(tags),
        ..WriteOp::new(&a, "v", T0)
    };
    let ops = [
        with("a,b,c,d"),
        with("a,a;a,a"),
        with("toolongtag"),
        with("a,b,c"),
        with("d"),
        with("e"),
        with("a,d"),
    ];
    let (out, t) = s.write(&ops, T0).expect("write");
    s.durability().wait_blocking(t).expect("durable");
    assert_eq!(out[0], Err(ItemError::TooManyTags(3)));
    assert_eq!(out[1], Err(ItemError::TooManyTags(3)), "repeats count");
    assert_eq!(out[2], Err(ItemError::TagTooLong(8)));
    assert!(out[3].is_ok() && out[4].is_ok());
    assert_eq!(out[5], Err(ItemError::TooManyTagsOnValue(4)));
    assert!(out[6].is_ok(), "tags the value already holds are fine");
    assert_eq!(out[5].clone().err().map(|e| e.http_status()), Some(413));
    let v = found(s.read(&a, "v", T0).expect("read"));
    assert_eq!(v.record.tags, "a,b,c,d");
    assert_eq!(v.record.count, 3, "refused items change nothing");
    // Stats: one write per hour over ten hours keeps the five newest buckets.
    let ops: Vec<WriteOp<'_>> = (0..10)
        .map(|h| WriteOp::new(&a, "s", T0 + h * BUCKET))
        .collect();
    let (_, t) = s.write(&ops, T0).expect("write");
    s.durability().wait_blocking(t).expect("durable");
    let v = found(s.read(&a, "s", T0).expect("read"));
    assert_eq!(v.record.stats.len(), 5);
    assert_eq!(v.record.count, 10);
}

/// A listing page stops at its byte budget (after at least one value) and says where to go on.
fn listing_pages_have_a_byte_budget<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let a = ns("budget");
    let big = |i: usize| format!("{i:02}{}", "x".repeat(1000));
    let ops_vals: Vec<String> = (0..20).map(big).collect();
    let ops: Vec<WriteOp<'_>> = ops_vals.iter().map(|v| WriteOp::new(&a, v, T0)).collect();
    let (_, t) = s.write(&ops, T0).expect("write");
    s.durability().wait_blocking(t).expect("durable");
    let page = s
        .list(&a, None, usize::MAX, 5_000, T0)
        .expect("list")
        .expect("exists");
    assert!((4..=6).contains(&page.items.len()), "{}", page.items.len());
    assert!(page.next.is_some());
    let one = s
        .list(&a, None, usize::MAX, 1, T0)
        .expect("list")
        .expect("exists");
    assert_eq!(one.items.len(), 1, "at least one value per page");
}

/// Deleting a namespace and sweeping expiries larger than one round (the writer lock is held
/// for at most `ROUND` values at a time) still does the whole job.
fn large_deletes_and_sweeps_go_in_rounds<E: Harness>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<E>(dir.path());
    let (big, other) = (ns("rounds/big"), ns("rounds/other"));
    let n = ROUND * 2 + 500;
    let vals: Vec<String> = (0..n).map(|i| format!("v{i:06}")).collect();
    let ops: Vec<WriteOp<'_>> = vals.iter().map(|v| WriteOp::new(&big, v, T0)).collect();
    let (_, t) = s.write(&ops, T0).expect("write");
    s.durability().wait_blocking(t).expect("durable");
    write1(&s, &other, "v000001", T0);
    assert_eq!(
        found(s.read(&other, "v000001", T0).expect("read")).consensus,
        2
    );
    let (deleted, t) = s.delete(&big, T0).expect("delete");
    s.durability().wait_blocking(t).expect("durable");
    assert!(deleted);
    assert_eq!(s.count(&big, T0).expect("count"), None);
    assert_eq!(
        s.list(&big, None, usize::MAX, usize::MAX, T0)
            .expect("list"),
        None
    );
    assert_eq!(
        found(s.read(&other, "v000001", T0).expect("read")).consensus,
        1
    );
    assert_eq!(s.count(&Namespace::all(), T0).expect("count"), Some(1));
    // Expiries: every value moves, over several rounds.
    let ops: Vec<WriteOp<'_>> = vals
        .iter()
        .map(|v| WriteOp {
            ttl: Some(10),
            ..WriteOp::new(&big, v, T0)
        })
        .collect();
    let (_, t) = s.write(&ops, T0).expect("write");
    s.durability().wait_blocking(t).expect("durable");
    assert_eq!(s.sweep(T0 + 100).expect("sweep"), n);
    assert_eq!(s.count(&big, T0 + 100).expect("count"), None);
    assert_eq!(
        s.count(&big.expired(), T0 + 100).expect("count"),
        Some(n as u64)
    );
}

/// One `#[test]` per test of the suite, on the engine `$engine`.
macro_rules! suite {
    ($engine:ty) => {
        #[test]
        fn counts_first_last_and_consensus() {
            super::counts_first_last_and_consensus::<$engine>();
        }
        #[test]
        fn client_checks_refuse_items_but_not_the_batch() {
            super::client_checks_refuse_items_but_not_the_batch::<$engine>();
        }
        #[test]
        fn ttl_moves_to_expired_and_releases_consensus() {
            super::ttl_moves_to_expired_and_releases_consensus::<$engine>();
        }
        #[test]
        fn ttl_zero_clears() {
            super::ttl_zero_clears::<$engine>();
        }
        #[test]
        fn read_now_declines_a_due_sweep() {
            super::read_now_declines_a_due_sweep::<$engine>();
        }
        #[test]
        fn value_formats() {
            super::value_formats::<$engine>();
        }
        #[test]
        fn listing_pages_with_cursor() {
            super::listing_pages_with_cursor::<$engine>();
        }
        #[test]
        fn stats_are_hourly() {
            super::stats_are_hourly::<$engine>();
        }
        #[test]
        fn marked_batches_retractions_and_holders() {
            super::marked_batches_retractions_and_holders::<$engine>();
        }
        #[test]
        fn over_long_values_never_reach_the_engine() {
            super::over_long_values_never_reach_the_engine::<$engine>();
        }
        #[test]
        fn tags_and_stats_are_bounded() {
            super::tags_and_stats_are_bounded::<$engine>();
        }
        #[test]
        fn listing_pages_have_a_byte_budget() {
            super::listing_pages_have_a_byte_budget::<$engine>();
        }
        #[test]
        fn large_deletes_and_sweeps_go_in_rounds() {
            super::large_deletes_and_sweeps_go_in_rounds::<$engine>();
        }
    };
}

/// The suite on fjall.
mod fjall {
    use super::*;
    suite!(FjallEngine);
}

/// The suite in memory.
mod mem {
    use super::*;
    suite!(MemEngine);
}

/// A SHA256 namespace with digest lookups answers the digest MISP sends (and its shadow and
/// `holders` agree); without the setting the digest is hashed again and not found.
#[test]
fn digest_lookups_find_the_digest_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open::<MemEngine>(dir.path());
    let h = ns("misp/hashed");
    let _ = s.set_format(&h, ValueFormat::Sha256).expect("set");
    write1(&s, &h, "abc", T0);
    let digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert!(matches!(s.read(&h, digest, T0), Ok(ReadOutcome::NoValue)));
    s.set_digest_lookups(&h, true);
    assert_eq!(found(s.read(&h, digest, T0).expect("read")).record.count, 1);
    assert_eq!(found(s.read(&h, "abc", T0).expect("read")).value, digest);
    let upper = digest.to_uppercase();
    assert_eq!(found(s.read(&h, &upper, T0).expect("read")).value, digest);
    assert_eq!(s.holders(digest, T0).expect("holders").len(), 1);
    s.shadow(&[(&h, digest)], T0).expect("shadow");
    let page = s
        .list(&h.shadow(), None, usize::MAX, usize::MAX, T0)
        .expect("list")
        .expect("exists");
    assert_eq!(
        page.items[0].value, digest,
        "the shadow records the digest looked up"
    );
    // Writes always hash: the digest written is a raw value like any other.
    write1(&s, &h, digest, T0);
    assert_eq!(found(s.read(&h, "abc", T0).expect("read")).record.count, 1);
    s.set_digest_lookups(&h, false);
    assert!(
        matches!(s.read(&h, digest, T0), Ok(ReadOutcome::Found(_))),
        "H(digest) was written"
    );
}

/// An engine shared by several stores, as a cluster is by several front ends: a
/// [`MemEngine`] behind one lock that applies a value group only when its records are still
/// what the rules layer read (compare-and-set), and reports the others as conflicts.
struct Shared {
    inner: std::sync::Arc<MemEngine>,
    lock: std::sync::Arc<Mutex<()>>,
    check: bool,
    /// Run once before the next apply: another process's write between this store's reads
    /// and its batch.
    before_apply: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Engine for Shared {
    type Value = Vec<u8>;

    fn checks_priors(&self) -> bool {
        self.check
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(space, key)
    }

    fn apply(&self, mut batch: Batch) -> Result<crate::engine::Applied> {
        let hook = lock(&self.before_apply).take();
        if let Some(hook) = hook {
            hook();
        }
        let _held = lock(&self.lock);
        let mut conflicts = Vec::new();
        let mut kept = Vec::new();
        for g in std::mem::take(&mut batch.groups) {
            let mut holds = true;
            for r in &g.records {
                if let Some(prior) = &r.prior {
                    holds &= self.inner.get(Space::Sightings, &r.key)? == *prior;
                }
            }
            if holds {
                kept.push(g);
            } else {
                conflicts.push(g.value);
            }
        }
        batch.groups = kept;
        if !conflicts.is_empty() {
            batch.markers.clear();
        }
        let ticket = self.inner.apply(batch)?.ticket;
        Ok(crate::engine::Applied { ticket, conflicts })
    }

    fn scan<F>(
        &self,
        space: Space,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        visit: F,
    ) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    {
        self.inner.scan(space, start, end, limit, visit)
    }

    fn durability(&self) -> Durability<'_> {
        Durability::immediate()
    }

    fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Two stores on one shared engine, each written by two threads at once, on the same values:
/// every sighting counted once, consensus and namespace counts exact, each feeder marker
/// written with its sightings. Without the compare-and-set (`check: false`, as the seam was
/// before) read-modify-writes of the two stores overwrite each other.
fn two_stores_on_one_engine(check: bool) -> (u64, u64, u64, u64) {
    let inner = std::sync::Arc::new(MemEngine::new());
    let shared_lock = std::sync::Arc::new(Mutex::new(()));
    let stores: Vec<std::sync::Arc<Sightings<Shared>>> = (0..2)
        .map(|_| {
            let e = Shared {
                inner: std::sync::Arc::clone(&inner),
                lock: std::sync::Arc::clone(&shared_lock),
                check,
                before_apply: Mutex::new(None),
            };
            std::sync::Arc::new(Sightings::new(e, StoreOptions::default()).expect("open"))
        })
        .collect();
    const EACH: u64 = 300;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = std::sync::Arc::clone(stores.get(t % 2).expect("store"));
            std::thread::spawn(move || {
                let (a, b) = (ns("org/a"), ns("org/b"));
                for i in 0..EACH {
                    let ops = [WriteOp::new(&a, "v", T0), WriteOp::new(&b, "v", T0)];
                    let marker = format!("feeder/{t}/{i}");
                    let _ = s
                        .apply_marked(&ops, &[], &[(marker.as_bytes(), b"1")], T0)
                        .expect("write");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    let s = stores.first().expect("store");
    let view = found(s.read(&ns("org/a"), "v", T0).expect("read"));
    let markers = (0..4)
        .flat_map(|t| (0..EACH).map(move |i| format!("feeder/{t}/{i}")))
        .filter(|k| s.marker(k.as_bytes()).expect("marker").is_some())
        .count() as u64;
    let all = s.count(&ns("_all"), T0).expect("count").unwrap_or(0);
    (view.record.count, view.consensus, all, markers)
}

#[test]
fn two_stores_on_one_engine_keep_exact_counts_with_compare_and_set() {
    assert_eq!(two_stores_on_one_engine(true), (1200, 2, 1, 1200));
}

/// Store `a` reads a value, store `b` writes it, then `a` applies its batch: the count and
/// consensus after both writes, with or without the compare-and-set.
fn interleaved_writes(check: bool) -> (u64, u64) {
    let inner = std::sync::Arc::new(MemEngine::new());
    let shared_lock = std::sync::Arc::new(Mutex::new(()));
    let open = || {
        let e = Shared {
            inner: std::sync::Arc::clone(&inner),
            lock: std::sync::Arc::clone(&shared_lock),
            check,
            before_apply: Mutex::new(None),
        };
        std::sync::Arc::new(Sightings::new(e, StoreOptions::default()).expect("open"))
    };
    let (a, b) = (open(), open());
    let b2 = std::sync::Arc::clone(&b);
    *lock(&a.engine().before_apply) = Some(Box::new(move || {
        let _ = write1(&b2, &ns("org/b"), "v", T0);
        let _ = write1(&b2, &ns("org/a"), "v", T0);
    }));
    let _ = write1(&a, &ns("org/a"), "v", T0);
    let view = found(b.read(&ns("org/a"), "v", T0).expect("read"));
    (view.record.count, view.consensus)
}

#[test]
fn a_write_between_another_stores_read_and_batch_is_not_lost() {
    // With the compare-and-set, `a`'s batch conflicts and is re-run on fresh reads.
    assert_eq!(interleaved_writes(true), (2, 2));
    // Without it (the seam as it was), `a` overwrites `b`'s records: a sighting is lost and
    // the consensus says one namespace where two hold the value.
    assert_eq!(interleaved_writes(false), (1, 1));
}
