//! Criterion benches for the store's hot paths: single write of a new value and increment of
//! an existing one (both with group commit), journal append + group commit with concurrent
//! writers, bulk write, single read (also from an async worker: handed to a blocking thread or
//! answered in place) and the record codec.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sighthub_store::{FjallStore, Namespace, Record, SightingStore, StoreOptions, WriteOp};

const T0: i64 = 1_700_000_000;

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FjallStore::open(dir.path(), StoreOptions::default()).expect("open");
    let ns = Namespace::parse("bench/ipv4").expect("ns");
    let mut i = 0u64;

    c.bench_function("store/write_one_durable", |b| {
        b.iter(|| {
            i += 1;
            let v = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            let (_, t) = store
                .write(&[WriteOp::new(&ns, &v, T0)], T0)
                .expect("write");
            store.durability().wait_blocking(t).expect("durable");
        })
    });

    // Increment: the same 1,000 values over and over (read-modify-write of an existing record,
    // `new: false`, no consensus change), durable.
    let hot: Vec<String> = (0..1_000).map(|j| format!("hot{j}")).collect();
    for chunk in hot.chunks(500) {
        let ops: Vec<_> = chunk.iter().map(|v| WriteOp::new(&ns, v, T0)).collect();
        let (_, t) = store.write(&ops, T0).expect("write");
        store.durability().wait_blocking(t).expect("durable");
    }
    c.bench_function("store/increment_durable", |b| {
        let mut j = 0usize;
        b.iter(|| {
            j = (j + 1) % hot.len();
            let v = &hot[j];
            let (_, t) = store.write(&[WriteOp::new(&ns, v, T0)], T0).expect("write");
            store.durability().wait_blocking(t).expect("durable");
        })
    });

    // Journal append + group commit: 16 threads each append one write and wait for its fsync;
    // one iteration = 16 acknowledged writes, so the figure shows how many writes share a sync.
    let mut g = c.benchmark_group("store/group_commit");
    g.throughput(Throughput::Elements(16));
    let next = std::sync::atomic::AtomicU64::new(0);
    g.bench_function("16_concurrent_writers", |b| {
        // 16 threads started once per sample; each does `iters` acknowledged writes.
        b.iter_custom(|iters| {
            let t0 = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..16 {
                    s.spawn(|| {
                        for _ in 0..iters {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let v = format!("gc{k}");
                            let (_, t) = store
                                .write(&[WriteOp::new(&ns, &v, T0)], T0)
                                .expect("write");
                            store.durability().wait_blocking(t).expect("durable");
                        }
                    });
                }
            });
            t0.elapsed()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("store/write_bulk");
    g.throughput(Throughput::Elements(10_000));
    let mut base = 0u64;
    g.bench_function("10k_new_values", |b| {
        b.iter_batched(
            || {
                base += 10_000;
                (0..10_000)
                    .map(|j| format!("v{}", base + j))
                    .collect::<Vec<_>>()
            },
            |vals| {
                let ops: Vec<_> = vals.iter().map(|v| WriteOp::new(&ns, v, T0)).collect();
                let (_, t) = store.write(&ops, T0).expect("write");
                store.durability().wait_blocking(t).expect("durable");
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    c.bench_function("store/read_one", |b| {
        let mut j = 0u64;
        b.iter(|| {
            j = (j + 7919) % 10_000;
            let v = format!("v{}", 10_000 + j);
            store.read(&ns, &v, T0).expect("read")
        })
    });

    // What a read costs the HTTP edge from an async worker: handed to a blocking thread and
    // awaited (every read before `read_now`), against answered in place (`read_now`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let shared = std::sync::Arc::new(store);
    let mut g = c.benchmark_group("store/read_from_async");
    g.bench_function("spawn_blocking", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                for j in 0..iters {
                    let (s, ns) = (std::sync::Arc::clone(&shared), ns.clone());
                    let v = format!("v{}", 10_000 + (j * 7919) % 10_000);
                    tokio::task::spawn_blocking(move || s.read(&ns, &v, T0).expect("read"))
                        .await
                        .expect("join");
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("read_now", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                for j in 0..iters {
                    let v = format!("v{}", 10_000 + (j * 7919) % 10_000);
                    shared
                        .read_now(&ns, &v, T0)
                        .expect("no sweep due")
                        .expect("read");
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    let store = std::sync::Arc::try_unwrap(shared).ok().expect("sole owner");

    // The write path without the fsync (rules, engine batch, journal append), which the
    // durable figures above hide behind the disk's fsync latency. Tickets are not waited for.
    let mut k = 0u64;
    c.bench_function("store/write_one_buffered", |b| {
        b.iter(|| {
            k += 1;
            let v = format!("buf{k}");
            store
                .write(&[WriteOp::new(&ns, &v, T0)], T0)
                .expect("write")
        })
    });
    c.bench_function("store/increment_buffered", |b| {
        let mut j = 0usize;
        b.iter(|| {
            j = (j + 1) % hot.len();
            store
                .write(&[WriteOp::new(&ns, &hot[j], T0)], T0)
                .expect("write")
        })
    });

    let mut rec = Record::default();
    for h in 0..24 {
        rec.sight(T0 + h * 3600, 3);
    }
    rec.tags = "tlp:green,malware".into();
    let bytes = rec.encode();
    c.bench_function("record/encode", |b| b.iter(|| rec.encode()));
    c.bench_function("record/decode", |b| {
        b.iter(|| Record::decode(&bytes).expect("ok"))
    });
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
