//! Criterion benches for the request-decoding hot paths: endpoint + query parsing of a `/w`
//! request line, and bulk body decoding of 1,000 and 10,000 items.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hyper::Method;
use sighthub_api::{bulk, query::Query, router::parse_endpoint};

fn bulk_body(n: usize) -> Vec<u8> {
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"namespace":"bench/ipv4","value":"10.{}.{}.{}","timestamp":0}}"#,
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect();
    format!(r#"{{"items":[{}]}}"#, items.join(",")).into_bytes()
}

fn benches(c: &mut Criterion) {
    c.bench_function("request/parse_w", |b| {
        b.iter(|| {
            let e = parse_endpoint(&Method::GET, "/w/org1/feed%2Fx/ipv4").expect("route");
            let q = Query::parse("val=192.168.10.22&timestamp=1700000000&tags=a,b").expect("q");
            (e, q)
        })
    });
    for n in [1_000usize, 10_000] {
        let body = bulk_body(n);
        let mut g = c.benchmark_group("bulk/decode");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n}_items"), |b| {
            b.iter(|| bulk::parse(&body, usize::MAX).expect("parses").items.len())
        });
        g.finish();
    }
}

criterion_group!(decode, benches);
criterion_main!(decode);
