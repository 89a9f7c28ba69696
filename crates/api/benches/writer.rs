//! Criterion bench of the single-write path from the async workers: 64 concurrent writes of
//! new values, each handed to a blocking thread of its own (every `/w` before
//! `api::writer`), against queued to the writer thread (`Writer::write`). Durability is not
//! waited for: the fsync would hide what the hand-off costs.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sighthub_api::writer::Writer;
use sighthub_store::{FjallStore, Namespace, SightingStore, StoreOptions, WriteOp};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const T0: i64 = 1_700_000_000;
const CONCURRENT: u64 = 64;

fn value(i: u64) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

fn bench_writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn SightingStore> =
        Arc::new(FjallStore::open(dir.path(), StoreOptions::default()).expect("open"));
    let writer = Arc::new(Writer::start(Arc::clone(&store)).expect("writer"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let ns = Namespace::parse("bench/w").expect("ns");
    let next = Arc::new(AtomicU64::new(0));

    let mut g = c.benchmark_group("write/64_concurrent");
    g.throughput(Throughput::Elements(CONCURRENT));
    g.bench_function("spawn_blocking", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..CONCURRENT)
                    .map(|_| {
                        let (store, ns) = (Arc::clone(&store), ns.clone());
                        let v = value(next.fetch_add(1, Ordering::Relaxed));
                        tokio::spawn(async move {
                            tokio::task::spawn_blocking(move || {
                                store
                                    .write(&[WriteOp::new(&ns, &v, T0)], T0)
                                    .expect("write")
                            })
                            .await
                            .expect("join")
                        })
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await.expect("join");
                }
            })
        })
    });
    g.bench_function("writer_queue", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..CONCURRENT)
                    .map(|_| {
                        let (w, ns) = (Arc::clone(&writer), ns.clone());
                        let v = value(next.fetch_add(1, Ordering::Relaxed));
                        tokio::spawn(async move { w.write(ns, v, T0, None, None).await })
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await.expect("join").expect("written");
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench_writes);
criterion_main!(benches);
