use super::*;
use serde_json::{json, Value as Json};

fn v<'a>(value: &'a str, tags: &'a str) -> Value<'a> {
    Value {
        value,
        first_seen: 1_600_000_000,
        last_seen: 1_600_003_600,
        count: 5,
        tags,
        ttl: 0,
    }
}

fn export(parts: &[(&str, Value<'_>)], untyped: Untyped) -> (Json, Finished) {
    let key = Exporter::namespaces_key(parts.iter().map(|(ns, _)| *ns));
    let mut e = Exporter::new(&Settings::default(), untyped, &key);
    for (ns, value) in parts {
        e.push(ns, value);
    }
    let done = e.finish();
    let bundle: Json = serde_json::from_slice(&done.body).expect("a bundle is JSON");
    (bundle, done)
}

fn of<'a>(bundle: &'a Json, kind: &str) -> Vec<&'a Json> {
    bundle["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| o["type"] == kind)
        .collect()
}

#[test]
fn a_value_becomes_an_indicator_and_a_sighting() {
    let (b, done) = export(&[("feeds/ips", v("1.2.3.4", ""))], Untyped::Skip);
    assert_eq!((done.exported, done.skipped, done.untyped), (1, 0, 0));
    assert_eq!(b["type"], "bundle");
    let ind = of(&b, "indicator")[0];
    assert_eq!(ind["pattern"], "[ipv4-addr:value = '1.2.3.4']");
    assert_eq!(ind["pattern_type"], "stix");
    assert_eq!(ind["valid_from"], "2020-09-13T12:26:40.000Z");
    assert_eq!(ind["spec_version"], "2.1");
    let s = of(&b, "sighting")[0];
    assert_eq!(s["count"], 5);
    assert_eq!(s["first_seen"], "2020-09-13T12:26:40.000Z");
    assert_eq!(s["last_seen"], "2020-09-13T13:26:40.000Z");
    assert_eq!(s["sighting_of_ref"], ind["id"]);
    assert_eq!(s["x_sightingdb_namespace"], "feeds/ips");
    let author = of(&b, "identity")[0];
    assert_eq!(author["name"], "SightingDB");
    assert_eq!(author["identity_class"], "system");
    assert_eq!(s["where_sighted_refs"], json!([author["id"]]));
    assert_eq!(ind["created_by_ref"], author["id"]);
}

/// SightingDB 0.7.8's README shows these ids for `?val=1.2.3.4` on `feeds/misp/ips`.
#[test]
fn ids_are_the_ones_sightingdb_gives() {
    let (b, _) = export(&[("feeds/misp/ips", v("1.2.3.4", ""))], Untyped::Skip);
    assert_eq!(
        of(&b, "indicator")[0]["id"],
        "indicator--407cd7a8-da80-5fa3-b02a-9ae7ccc848e0"
    );
    assert_eq!(
        of(&b, "sighting")[0]["id"],
        "sighting--43ec94b4-476f-5985-a5a2-0100e2f28153"
    );
}

#[test]
fn keys_are_in_alphabetical_order_as_sightingdb_writes_them() {
    let (_, done) = export(&[("n", v("1.2.3.4", "tlp:amber"))], Untyped::Skip);
    let text = String::from_utf8(done.body).expect("utf-8");
    assert!(text.starts_with("{\"id\":\"bundle--"), "{text}");
    assert!(text.ends_with("],\"type\":\"bundle\"}"), "{text}");
    let bundle: Json = serde_json::from_str(&text).expect("json");
    for o in bundle["objects"].as_array().expect("objects") {
        let keys: Vec<&String> = o.as_object().expect("object").keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}

#[test]
fn the_same_bundle_twice_and_one_indicator_across_namespaces() {
    let one = export(&[("a", v("evil.example", ""))], Untyped::Skip)
        .1
        .body;
    let again = export(&[("a", v("evil.example", ""))], Untyped::Skip)
        .1
        .body;
    assert_eq!(one, again);
    let (b, done) = export(
        &[("a", v("evil.example", "")), ("b", v("evil.example", ""))],
        Untyped::Skip,
    );
    assert_eq!(done.exported, 2);
    assert_eq!(of(&b, "indicator").len(), 1);
    assert_eq!(of(&b, "sighting").len(), 2);
}

#[test]
fn tags_fill_in_what_the_value_cannot_say() {
    let tags = "stix-type:ipv4-addr, tlp:amber, confidence:80, indicator-type:malicious-activity, \
                indicator-type:anomalous-activity, name:Known scanner, description:Seen, \
                identity:Beta Cyber, valid-until:2030-01-01T00:00:00Z";
    let (b, _) = export(&[("n", v("1.2.3.4", tags))], Untyped::Skip);
    let ind = of(&b, "indicator")[0];
    assert_eq!(ind["name"], "Known scanner");
    assert_eq!(ind["description"], "Seen");
    assert_eq!(
        ind["indicator_types"],
        json!(["malicious-activity", "anomalous-activity"])
    );
    assert_eq!(ind["confidence"], 80);
    assert_eq!(ind["valid_until"], "2030-01-01T00:00:00.000Z");
    assert_eq!(ind["object_marking_refs"], json!([TLP[2].1]));
    let marks = of(&b, "marking-definition");
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0]["name"], "TLP:AMBER");
    let ids = of(&b, "identity");
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[1]["name"], "Beta Cyber");
    assert_eq!(
        of(&b, "sighting")[0]["where_sighted_refs"],
        json!([ids[1]["id"]])
    );
}

#[test]
fn an_imported_indicator_keeps_its_id_and_nonsense_is_ignored() {
    let given = "indicator--9299f726-ce06-492e-8472-2b52ccb53191";
    let tags = format!("stix-id:{given}");
    let (b, _) = export(&[("n", v("1.2.3.4", &tags))], Untyped::Skip);
    assert_eq!(of(&b, "indicator")[0]["id"], given);
    let (b, _) = export(
        &[("n", v("1.2.3.4", "stix-id:indicator--nope"))],
        Untyped::Skip,
    );
    assert_ne!(of(&b, "indicator")[0]["id"], "indicator--nope");
}

#[test]
fn untyped_values_are_skipped_or_included_flagged() {
    let (b, done) = export(&[("n", v("just text", ""))], Untyped::Skip);
    assert_eq!((done.exported, done.skipped), (0, 1));
    assert!(of(&b, "indicator").is_empty());
    let (b, done) = export(&[("n", v("it's text", ""))], Untyped::Include);
    assert_eq!((done.exported, done.skipped, done.untyped), (1, 0, 1));
    let ind = of(&b, "indicator")[0];
    assert_eq!(ind["pattern"], "[x-sightingdb-value:value = 'it\\'s text']");
    assert_eq!(ind["x_sightingdb_untyped"], true);
}

#[test]
fn shapes_are_inferred() {
    for (value, kind) in [
        ("http://x.example/a", Some("url")),
        ("10.0.0.0/8", Some("ipv4-addr")),
        ("::1", Some("ipv6-addr")),
        ("a@b.example", Some("email-addr")),
        ("d41d8cd98f00b204e9800998ecf8427e", Some("file.MD5")),
        ("evil.example", Some("domain-name")),
        ("no type", None),
    ] {
        assert_eq!(infer_type(value), kind, "{value}");
    }
    assert_eq!(
        pattern_for("file.SHA-256", "ab").as_deref(),
        Some("[file:hashes.'SHA-256' = 'ab']")
    );
}

#[test]
fn a_ttl_gives_valid_until() {
    let mut value = v("1.2.3.4", "");
    value.ttl = 3600;
    let (b, _) = export(&[("n", value)], Untyped::Skip);
    assert_eq!(
        of(&b, "indicator")[0]["valid_until"],
        "2020-09-13T14:26:40.000Z"
    );
}

/// Two values imported from one indicator (`[a] OR [b]`) carry its id; the bundle keeps each
/// sighting pointing at a pattern of its own value, so a re-import gives both values back.
#[test]
fn one_given_id_for_two_values_keeps_each_pattern() {
    let tags = "stix-id:indicator--9299f726-ce06-492e-8472-2b52ccb53191";
    let (b, _) = export(
        &[("n", v("10.0.0.1", tags)), ("n", v("10.0.0.2", tags))],
        Untyped::Skip,
    );
    let indicators = of(&b, "indicator");
    assert_eq!(indicators.len(), 2);
    assert_eq!(
        indicators[0]["id"],
        "indicator--9299f726-ce06-492e-8472-2b52ccb53191"
    );
    for s in of(&b, "sighting") {
        let target = indicators
            .iter()
            .find(|i| i["id"] == s["sighting_of_ref"])
            .expect("the indicator is in the bundle");
        assert!(target["pattern"].as_str().unwrap_or("").contains("10.0.0."));
    }
    let patterns: Vec<&str> = indicators
        .iter()
        .filter_map(|i| i["pattern"].as_str())
        .collect();
    assert_eq!(
        patterns,
        [
            "[ipv4-addr:value = '10.0.0.1']",
            "[ipv4-addr:value = '10.0.0.2']"
        ]
    );
}
