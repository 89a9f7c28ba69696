//! What export and import share: the UUIDv5 namespace every id is minted in, the four TLP
//! marking definitions of the STIX specification, the tag vocabulary (`key:value` tags read
//! and written the store's way), and timestamps.
//!
//! The tag vocabulary (SightingDB 0.7.8's):
//!
//! | tag | export | written by import from |
//! |---|---|---|
//! | `stix-type:<type>` | observable type, so the pattern | the observable |
//! | `stix-id:indicator--<uuid>` | indicator id instead of a minted one | the indicator |
//! | `indicator-type:<v>` (repeatable) | `indicator_types` | `indicator_types` |
//! | `tlp:<white\|green\|amber\|red>` | `object_marking_refs` + the marking | markings |
//! | `confidence:<0-100>` | `confidence` on both objects | `confidence` |
//! | `identity:<name>` (repeatable) | `where_sighted_refs` | `created_by_ref`, `where_sighted_refs` |
//! | `name:<text>`, `description:<text>` | indicator `name`, `description` | indicator `name` |
//! | `valid-until:<rfc3339 or seconds>` | indicator `valid_until` (else from the TTL) | `valid_until` |

use uuid::Uuid;

/// The namespace of every id minted here: SightingDB's own constant, so that the same value
/// gets the same ids from sighthub as from SightingDB 0.7.8.
pub const ID_NAMESPACE: Uuid = Uuid::from_u128(0x3ef1_1775_6174_4718_92bf_1670_5b73_2650);

/// The UUIDv5 of `key` in [`ID_NAMESPACE`].
pub fn uuid_for(key: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, key.as_bytes())
}

/// The TLP marking definitions of the STIX 2.1 specification, referenced by their fixed ids.
pub const TLP: [(&str, &str); 4] = [
    (
        "white",
        "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
    ),
    (
        "green",
        "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
    ),
    (
        "amber",
        "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
    ),
    (
        "red",
        "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
    ),
];

/// When the specification says the four TLP markings were created.
pub const TLP_CREATED: &str = "2017-01-20T00:00:00.000Z";

/// The index in [`TLP`] of a level (`amber`, `TLP:AMBER`, `tlp:amber`).
pub fn tlp_index(level: &str) -> Option<usize> {
    let level = level.trim().to_ascii_lowercase();
    let level = level.strip_prefix("tlp:").unwrap_or(&level);
    TLP.iter().position(|(name, _)| *name == level)
}

/// The level of one of the specification's TLP marking ids.
pub fn tlp_of_id(id: &str) -> Option<&'static str> {
    TLP.iter()
        .find(|(_, marking)| *marking == id)
        .map(|(level, _)| *level)
}

/// Every value of the `key:value` tags with this key (case-insensitive key, trimmed value),
/// in the store's tag syntax ([`sighthub_store::split_tags`]).
pub fn tag_values<'a>(tags: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> {
    sighthub_store::split_tags(tags).filter_map(move |tag| {
        let (name, value) = tag.split_once(':')?;
        let value = value.trim();
        (name.trim().eq_ignore_ascii_case(key) && !value.is_empty()).then_some(value)
    })
}

/// The first value of the tags with this key.
pub fn tag_value<'a>(tags: &'a str, key: &'a str) -> Option<&'a str> {
    tag_values(tags, key).next()
}

/// Text made safe as (part of) one tag: the store's separators (`,` `;`) become spaces.
pub fn sanitize_tag(text: &str) -> String {
    text.trim().replace([',', ';'], " ")
}

/// Unix seconds as a STIX timestamp with milliseconds (`2020-09-13T12:26:40.000Z`); an
/// instant outside years 0000–9999 is written as the epoch, as SightingDB does.
pub fn rfc3339(seconds: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .filter(|t| (0..=9999).contains(&t.year()))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A STIX (RFC 3339) timestamp as unix seconds; `None` when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_with_milliseconds() {
        assert_eq!(rfc3339(1_600_000_000), "2020-09-13T12:26:40.000Z");
        assert_eq!(
            parse_rfc3339("2020-09-13T12:26:40.000Z"),
            Some(1_600_000_000)
        );
        assert_eq!(
            parse_rfc3339("2020-09-13T14:26:40+02:00"),
            Some(1_600_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(rfc3339(i64::MAX), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn tags_are_read_the_store_way() {
        let tags = "stix-type:ipv4-addr; TLP: amber,indicator-type:a, indicator-type:b,bare";
        assert_eq!(tag_value(tags, "stix-type"), Some("ipv4-addr"));
        assert_eq!(tag_value(tags, "tlp"), Some("amber"));
        assert_eq!(
            tag_values(tags, "indicator-type").collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(tag_value(tags, "bare"), None);
        assert_eq!(sanitize_tag(" a, b; c "), "a  b  c");
        assert_eq!(tlp_index("TLP:RED"), Some(3));
    }

    #[test]
    fn ids_are_sightingdbs() {
        // The value SightingDB 0.7.8's README shows for `indicator:ipv4-addr:1.2.3.4`.
        assert_eq!(
            uuid_for("indicator:ipv4-addr:1.2.3.4").to_string(),
            "407cd7a8-da80-5fa3-b02a-9ae7ccc848e0"
        );
    }
}
