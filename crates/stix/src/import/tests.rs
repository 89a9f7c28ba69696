use super::*;

fn mapping() -> Mapping {
    Mapping {
        types: [("ipv4-addr", "stix/ips"), ("file.SHA-256", "stix/hashes")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        default_namespace: "stix/other".into(),
    }
}

fn bundle(objects: &str) -> Vec<u8> {
    format!(r#"{{"type":"bundle","id":"bundle--1","objects":[{objects}]}}"#).into_bytes()
}

fn read(objects: &str) -> Decoded {
    decode(&bundle(objects), &mapping(), &DecodeLimits::default()).expect("decodes")
}

#[test]
fn observed_data_carries_its_count_and_window() {
    let d = read(
        r#"{"type":"ipv4-addr","id":"ipv4-addr--1","value":"1.2.3.4"},
        {"type":"observed-data","id":"observed-data--1","number_observed":5,
         "first_observed":"2020-09-13T12:26:40Z","last_observed":"2020-09-13T13:26:40Z",
         "object_refs":["ipv4-addr--1"]}"#,
    );
    assert_eq!(d.observations.len(), 1);
    let o = &d.observations[0];
    assert_eq!(
        (o.namespace.as_str(), o.value.as_str(), o.count),
        ("stix/ips", "1.2.3.4", 5)
    );
    assert_eq!(
        (o.first_seen, o.last_seen),
        (Some(1_600_000_000), Some(1_600_003_600))
    );
    assert_eq!(o.tags[0], "stix-type:ipv4-addr");
    assert_eq!(o.key, "observed-data--1\u{0}stix/ips\u{0}1.2.3.4");
}

#[test]
fn a_sighting_of_an_indicator_reads_its_pattern_and_tags() {
    let d = read(
        r#"{"type":"identity","id":"identity--a","name":"Alpha, Inc"},
        {"type":"indicator","id":"indicator--9299f726-ce06-492e-8472-2b52ccb53191","pattern":"[file:hashes.'SHA-256' = 'ab12'] OR [domain-name:value = 'it\\'s.example']",
         "indicator_types":["malicious-activity"],"name":"bad","valid_from":"2020-01-01T00:00:00Z",
         "object_marking_refs":["marking-definition--f88d31f6-486f-44da-b317-01333bde0b82"]},
        {"type":"sighting","id":"sighting--1","count":3,"sighting_of_ref":"indicator--9299f726-ce06-492e-8472-2b52ccb53191",
         "where_sighted_refs":["identity--a"],"confidence":70}"#,
    );
    assert_eq!(
        d.observations.len(),
        2,
        "the indicator is not imported again on its own"
    );
    let h = &d.observations[0];
    assert_eq!(
        (h.namespace.as_str(), h.value.as_str(), h.count),
        ("stix/hashes", "ab12", 3)
    );
    let tags = h.tags.join(",");
    for want in [
        "stix-type:file.SHA-256",
        "confidence:70",
        "identity:Alpha  Inc",
        "tlp:amber",
        "stix-id:indicator--9299f726-ce06-492e-8472-2b52ccb53191",
        "indicator-type:malicious-activity",
        "name:bad",
    ] {
        assert!(tags.contains(want), "{want} in {tags}");
    }
    assert_eq!(d.observations[1].value, "it's.example");
    assert_eq!(d.observations[1].namespace, "stix/other");
}

#[test]
fn an_exported_sighting_goes_back_to_its_namespace() {
    let d = read(
        r#"{"type":"indicator","id":"indicator--1","pattern":"[url:value = 'http://x.example/a\\\\b']","valid_from":"2020-01-01T00:00:00Z"},
        {"type":"sighting","id":"sighting--1","count":2,"sighting_of_ref":"indicator--1",
         "x_sightingdb_namespace":"feeds/urls"}"#,
    );
    assert_eq!(d.observations[0].namespace, "feeds/urls");
    assert_eq!(d.observations[0].value, "http://x.example/a\\b");
}

#[test]
fn a_lone_indicator_is_one_sighting_at_valid_from() {
    let d = read(
        r#"{"type":"indicator","id":"indicator--1","pattern":"[ipv4-addr:value = '10.0.0.1']","valid_from":"2020-09-13T12:26:40Z"}"#,
    );
    let o = &d.observations[0];
    assert_eq!(
        (o.count, o.first_seen, o.last_seen),
        (1, Some(1_600_000_000), None)
    );
}

#[test]
fn wrong_types_skip_the_object_with_its_reason() {
    let d = read(
        r#"{"type":"sighting","id":"sighting--1","count":"many"},
        {"type":"observed-data","id":"observed-data--1","first_observed":"soon"},
        {"type":"indicator","id":"indicator--1"},
        {"type":"sighting","count":1},
        {"type":"sighting","id":"sighting--2","where_sighted_refs":"identity--x"}"#,
    );
    assert!(d.observations.is_empty());
    let why: Vec<&str> = d.skipped.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(why.len(), 5, "{why:?}");
    assert!(why[0].contains("\"count\""), "{why:?}");
    assert!(why[1].contains("RFC 3339"), "{why:?}");
    assert!(why[2].contains("pattern"), "{why:?}");
    assert!(why[3].contains("\"id\""), "{why:?}");
    assert_eq!(d.skipped[3].0, "#3");
    assert!(why[4].contains("list of ids"), "{why:?}");
}

#[test]
fn hostile_bundles_are_refused_whole() {
    let limits = DecodeLimits {
        max_bytes: 64,
        max_objects: 2,
    };
    let m = Mapping::default();
    let big = vec![b' '; 65];
    assert!(matches!(
        decode(&big, &m, &limits),
        Err(DecodeError::TooLarge { size: 65, max: 64 })
    ));
    assert!(matches!(
        decode(b"{nope", &m, &limits),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        decode(b"42", &m, &limits),
        Err(DecodeError::NotABundle(_))
    ));
    assert!(matches!(
        decode(br#"{"objects":{}}"#, &m, &limits),
        Err(DecodeError::NotABundle(_))
    ));
    assert!(matches!(
        decode(b"[1,2,3]", &m, &limits),
        Err(DecodeError::TooManyObjects { n: 3, max: 2 })
    ));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let e = decode(deep.as_bytes(), &m, &DecodeLimits::default()).expect_err("too deep");
    assert!(e.to_string().contains("recursion limit"), "{e}");
}
