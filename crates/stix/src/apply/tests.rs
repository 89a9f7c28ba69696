use super::*;
use crate::import::{decode, DecodeLimits, Mapping};
use sighthub_store::{FjallStore, ReadOutcome, StoreOptions};

const BUNDLE: &str = r#"{"type":"bundle","id":"bundle--1","objects":[
  {"type":"indicator","id":"indicator--1","pattern":"[ipv4-addr:value = '10.0.0.1']","valid_from":"2020-01-01T00:00:00Z"},
  {"type":"sighting","id":"sighting--1","count":7,"sighting_of_ref":"indicator--1",
   "first_seen":"2020-09-13T12:26:40Z","last_seen":"2020-09-13T13:26:40Z","x_sightingdb_namespace":"feeds/ips"}]}"#;

fn read(store: &FjallStore, ns: &str, value: &str) -> sighthub_store::Record {
    let ns = Namespace::parse(ns).expect("ns");
    match store.read(&ns, value, 1_700_000_000).expect("read") {
        ReadOutcome::Found(v) => v.record,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bundle_imported_twice_counts_once_and_keeps_its_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FjallStore::open(dir.path(), StoreOptions::default()).expect("store");
    let d = decode(
        BUNDLE.as_bytes(),
        &Mapping::default(),
        &DecodeLimits::default(),
    )
    .expect("decodes");
    let opts = ApplyOptions {
        batch: 3,
        max_count: 100,
    };
    let first = apply(&store, &d.observations, &opts, 1_700_000_000).expect("applies");
    assert_eq!((first.applied, first.writes, first.unchanged), (1, 7, 0));
    let r = read(&store, "feeds/ips", "10.0.0.1");
    assert_eq!(
        (r.count, r.first_seen, r.last_seen),
        (7, 1_600_000_000, 1_600_003_600)
    );
    assert!(r.tags.contains("stix-type:ipv4-addr"), "{}", r.tags);
    let again = apply(&store, &d.observations, &opts, 1_700_000_000).expect("applies");
    assert_eq!((again.applied, again.writes, again.unchanged), (0, 0, 1));
    assert_eq!(read(&store, "feeds/ips", "10.0.0.1").count, 7);
    // The same sighting, updated with a higher count, adds the difference.
    let grown = BUNDLE.replace("\"count\":7", "\"count\":9");
    let d = decode(
        grown.as_bytes(),
        &Mapping::default(),
        &DecodeLimits::default(),
    )
    .expect("decodes");
    let more = apply(&store, &d.observations, &opts, 1_700_000_000).expect("applies");
    assert_eq!(more.writes, 2);
    assert_eq!(read(&store, "feeds/ips", "10.0.0.1").count, 9);
}

#[test]
fn what_the_store_refuses_is_reported_and_not_marked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FjallStore::open(dir.path(), StoreOptions::default()).expect("store");
    let bad = BUNDLE.replace("feeds/ips", "_all");
    let d = decode(
        bad.as_bytes(),
        &Mapping::default(),
        &DecodeLimits::default(),
    )
    .expect("decodes");
    let got = apply(
        &store,
        &d.observations,
        &ApplyOptions::default(),
        1_700_000_000,
    )
    .expect("applies");
    assert_eq!((got.applied, got.writes), (0, 0));
    assert_eq!(got.refused.len(), 1);
    assert!(
        got.refused[0].2.contains("internal namespace"),
        "{:?}",
        got.refused
    );
    let over = ApplyOptions {
        batch: 10,
        max_count: 6,
    };
    let d = decode(
        BUNDLE.as_bytes(),
        &Mapping::default(),
        &DecodeLimits::default(),
    )
    .expect("decodes");
    let got = apply(&store, &d.observations, &over, 1_700_000_000).expect("applies");
    assert!(
        got.refused[0].2.contains("--max-count"),
        "{:?}",
        got.refused
    );
}
