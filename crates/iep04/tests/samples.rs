//! Tests over real bytes: the IEP04 example and schema, and what IntelMQ 3.5 bots produced
//! (copied from the shared specs into `tests/data/`).

use serde_json::{Map, Value};
use sighthub_iep04::{
    content_hash, decode_ndjson, encode_ndjson, Error, Message, NdjsonReader, Receiver, Shape, Tlp,
};
use uuid::Uuid;

const LIMIT: usize = 1 << 20;

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&data(name)).expect("sample is JSON")
}

fn receiver() -> Receiver {
    Receiver::new(
        Uuid::parse_str("28bc3db3-16da-461c-b20b-b944f4058708").unwrap(),
        Some(Uuid::parse_str("03c51929-eeab-4d47-9dc0-c667f94c7d2c").unwrap()),
    )
}

/// Body of a captured HTTP request (the capture files use `\r\n` or `\n` line ends).
fn http_body(raw: &[u8]) -> &[u8] {
    for sep in [&b"\r\n\r\n"[..], b"\n\n"] {
        if let Some(at) = raw.windows(sep.len()).position(|w| w == sep) {
            return &raw[at + sep.len()..];
        }
    }
    panic!("no end of headers")
}

#[test]
fn decided_intelmq_example_round_trips_exactly() {
    let input = json("iep04-example-intelmq.json");
    let msg = Message::from_value(input.clone()).unwrap();
    assert_eq!(
        (msg.format.as_str(), msg.version, msg.kind.as_str()),
        ("intelmq", 2, "event")
    );
    let meta = msg.meta.as_ref().unwrap();
    assert_eq!(
        meta.uuid,
        Uuid::parse_str("03c51929-eeab-4d47-9dc0-aaaaaaaaaaaa").unwrap()
    );
    assert!(meta.tags.is_empty());
    assert_eq!(msg.to_value(), input);
    assert_eq!(
        msg.decoded_raw(LIMIT).unwrap().as_deref(),
        Some(&b"28bc3db3-16da-461c-b20b-b944f4058708\n"[..])
    );
}

#[test]
fn schema_example_round_trips_and_reports_bad_gzip() {
    let schema = json("iep04-schema.json");
    let example = schema["examples"][0].clone();
    let msg = Message::from_value(example.clone()).unwrap();
    assert_eq!(msg.format, "ail");
    let meta = msg.meta.as_ref().unwrap();
    assert_eq!(meta.tags, vec!["mails", "custom_tag"]);
    assert_eq!(
        (meta.encoding.as_deref(), meta.compress.as_deref()),
        (Some("base64"), Some("gzip"))
    );
    assert_eq!(meta.extensions["ail:mime-type"], "text/plain");
    assert_eq!(
        msg.to_value(),
        example,
        "unknown ail:* keys survive unchanged"
    );
    // The example's raw is base64 of plain text although it claims gzip.
    let err = msg.decoded_raw(LIMIT).unwrap_err();
    assert_eq!(err.field(), Some("payload.raw"));
    assert!(
        err.to_string().starts_with("payload.raw: invalid gzip"),
        "{err}"
    );

    // The meta example on its own is a valid meta block.
    let meta_example = schema["properties"]["meta"]["examples"][0].clone();
    let env =
        serde_json::json!({"format": "ail", "version": 1, "type": "item", "meta": meta_example});
    assert!(Message::from_value(env).is_ok());
}

#[test]
fn redis_pipeline_event_wraps_and_exports_back_byte_for_byte() {
    let raw = data("redis_pipeline_event.json");
    let original: Map<String, Value> = serde_json::from_slice(&raw).unwrap();
    let d = receiver().decode(&raw).unwrap();
    assert_eq!(d.shape, Shape::Bare);
    assert_eq!(d.message.kind, "event");
    assert_eq!(d.message.tlp(), Some(Tlp::Amber));
    let payload = d.message.payload.as_ref().unwrap();
    assert_eq!(
        payload["comment"],
        "interop test event 0 (run d2f1ef41) \u{2013} non-ASCII: äöü"
    );
    assert!(!payload.contains_key("__type"));
    assert_eq!(
        d.message.decoded_raw(LIMIT).unwrap().as_deref(),
        Some(&br#""2026-11-23 09:48:13","198.51.100.1",1024,"mirai",64496,"AT""#[..])
    );

    let back = d.message.to_bare_event(true).unwrap();
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        original.keys().collect::<Vec<_>>(),
        "same key order, __type last"
    );
    assert_eq!(back, original);
}

#[test]
fn tcp_collector_report_carries_the_same_event_and_hashes_alike() {
    let report = receiver()
        .decode(&data("redis_pipeline_report_from_tcp_collector.json"))
        .unwrap();
    assert_eq!(report.shape, Shape::Bare);
    assert_eq!(report.message.kind, "report");
    let inner = report
        .message
        .decode_payload_field_json("raw", LIMIT)
        .unwrap()
        .unwrap();
    let inner = inner.as_object().unwrap();

    // The report's raw is the TCP output's to_json() (sorted, UTF-8, no __type) of the very
    // event the pipeline sample holds (insertion order, ASCII-escaped, with __type).
    let pipeline: Map<String, Value> =
        serde_json::from_slice(&data("redis_pipeline_event.json")).unwrap();
    assert_eq!(content_hash(inner), content_hash(&pipeline));
    let wrapped = receiver()
        .decode_value(Value::Object(inner.clone()))
        .unwrap();
    assert_eq!(wrapped.message.content_hash(), content_hash(&pipeline));
    assert_ne!(report.message.content_hash(), content_hash(&pipeline));
}

#[test]
fn rest_api_output_body_is_a_bare_event() {
    let raw = data("restapi_output_request.http");
    let body = http_body(&raw);
    let d = receiver().decode(body).unwrap();
    assert_eq!(d.shape, Shape::Bare);
    assert_eq!(d.message.tlp(), Some(Tlp::Amber));
    assert_eq!(
        d.message.payload.as_ref().unwrap()["source.asn"],
        Value::from(64496)
    );
    // The same body as an ND-JSON POST without a final newline.
    let results = decode_ndjson(body, LIMIT, &receiver());
    assert_eq!(results.len(), 1);
    assert!(results[0].is_ok());
}

#[test]
fn rest_api_form_body_is_refused_without_panic() {
    let raw = data("restapi_output_request_basic_auth_use_json_false.http");
    let body = http_body(&raw);
    assert!(matches!(receiver().decode(body), Err(Error::Json(_))));
    let results = decode_ndjson(body, LIMIT, &receiver());
    assert_eq!(results.len(), 1);
    let err = results[0].as_ref().unwrap_err();
    assert_eq!(err.line(), Some(1));
    assert!(err.to_string().starts_with("line 1: invalid JSON"), "{err}");
    // Cut before its newline, the same body is the same error: it is not JSON, whatever its
    // end (only a JSON value cut short is a truncated line).
    let cut = body.strip_suffix(b"\n").unwrap_or(body);
    let results = decode_ndjson(cut, LIMIT, &receiver());
    assert_eq!(results.len(), 1);
    let err = results[0].as_ref().unwrap_err();
    assert!(err.to_string().starts_with("line 1: invalid JSON"), "{err}");
}

#[test]
fn tcp_output_with_newline_separator_streams_in_small_chunks() {
    let raw = data("tcp_output_separator_newline.bin");
    let rx = receiver();
    let mut reader = NdjsonReader::new(4096);
    let mut got = Vec::new();
    for chunk in raw.chunks(7) {
        reader.push(chunk);
        while let Some(item) = reader.next_message(&rx) {
            got.push(item.unwrap());
        }
    }
    assert_eq!(reader.finish().count(), 0);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|d| d.shape == Shape::Bare));
    let comment = got[0].message.payload.as_ref().unwrap()["comment"]
        .as_str()
        .unwrap();
    assert!(comment.ends_with("\u{2013} non-ASCII: äöü"), "{comment}");

    // A limit below the event size rejects each line, and only those lines.
    let mut small = NdjsonReader::new(512);
    small.push(&raw);
    let results: Vec<_> = std::iter::from_fn(|| small.next_line()).collect();
    let lines: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().unwrap_err().line())
        .collect();
    assert_eq!(lines, vec![Some(1), Some(2), Some(3)]);
}

#[test]
fn tcp_output_length_prefixed_frames_decode_as_bare_events() {
    let raw = data("tcp_output_length_prefixed_3frames.bin");
    let mut rest = &raw[..];
    let mut hashes = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let (frame, tail) = tail.split_at(len);
        let d = receiver().decode(frame).unwrap();
        assert_eq!(d.shape, Shape::Bare);
        hashes.push(d.message.content_hash());
        rest = tail;
    }
    assert_eq!(hashes.len(), 3);
    hashes.dedup();
    assert_eq!(hashes.len(), 3, "three distinct events");
}

#[test]
fn fifty_captured_events_wrap_dedupe_and_relay() {
    let raw = data("tcp_output_50events_decoded.jsonl");
    let rx = receiver();
    let mut reader = NdjsonReader::default();
    reader.push(&raw);
    let mut messages = Vec::new();
    // `finish` also yields the complete lines still buffered.
    for line in reader.finish() {
        let record: Value = serde_json::from_str(&line.unwrap().text).unwrap();
        let body = record["body"].clone();
        messages.push(rx.decode_value(body).unwrap().message);
    }
    assert_eq!(messages.len(), 50);

    // Hash de-duplication: a TCP retry (the same event again) is caught; distinct events are not.
    let mut seen = std::collections::HashSet::new();
    let mut resent = messages.clone();
    resent.push(
        rx.decode_value(Value::Object(messages[3].to_bare_event(false).unwrap()))
            .unwrap()
            .message,
    );
    let fresh = resent
        .iter()
        .filter(|m| seen.insert(m.content_hash()))
        .count();
    assert_eq!(fresh, 50);

    // Relaying as IEP04 ND-JSON keeps uuids and payloads.
    let stream = encode_ndjson(&messages);
    let back: Vec<Message> = decode_ndjson(stream.as_bytes(), 64 * 1024, &rx)
        .into_iter()
        .map(|d| {
            let d = d.unwrap();
            assert_eq!(d.shape, Shape::Envelope);
            d.message
        })
        .collect();
    assert_eq!(back, messages);
}
