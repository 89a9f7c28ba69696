"""STIX 2.1 export and import against the real binary: every bundle sighthub exports
(`GET /stix/<ns>` with `val`, `recursive`, `untyped=include`, and `POST /_api/stix`) is
valid for the OASIS validator (`stix2-validator`), and an exported bundle imported with
`sighthub import-stix` into another data directory gives the same sightings, once."""

import json
import subprocess

import pytest
import requests
import sightingdb
from stix2validator import ValidationOptions, validate_string

from conftest import binary_path

T0 = 1600000000

# (namespace, value, tags, ttl): every observable type the export infers or is told, the
# whole tag vocabulary, and values that need escaping in a pattern.
VALUES = [
    ("org/ips", "198.51.100.7", "tlp:amber,identity:Beta Cyber,confidence:80", 0),
    ("org/ips", "2001:db8::1", "indicator-type:malicious-activity,name:Scanner,description:Seen", 400_000_000),
    ("org/ips", "10.0.0.0/8", "tlp:green", 0),
    ("org/misc", "evil.example", "stix-id:indicator--9299f726-ce06-492e-8472-2b52ccb53191", 0),
    ("org/misc", "http://evil.example/a'b\\c", "tlp:red", 0),
    ("org/misc", "mallory@evil.example", "valid-until:2030-01-01T00:00:00Z", 0),
    ("org/misc/hashes", "d41d8cd98f00b204e9800998ecf8427e", "", 0),
    ("org/misc/hashes", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "tlp:white", 0),
    ("org/misc", "just some text", "", 0),
    ("org/misc", "Global\\mutex1", "stix-type:mutex", 0),
]


def get(server, path, **kw):
    return requests.get(server.url + path, headers={"Authorization": server.key}, verify=False, timeout=30, **kw)


def post(server, path, body):
    return requests.post(
        server.url + path, headers={"Authorization": server.key}, json=body, verify=False, timeout=30
    )


def fill(server):
    for i, (ns, value, tags, ttl) in enumerate(VALUES):
        for n in range(i % 3 + 1):  # counts 1..3, over two hours
            params = {"val": value, "timestamp": T0 + 3600 * n}
            if tags:
                params["tags"] = tags
            if ttl:
                params["ttl"] = ttl
            r = get(server, f"/w/{ns}", params=params)
            assert r.status_code == 200, r.text


def assert_valid(r):
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/stix+json;version=2.1"
    result = validate_string(r.text, ValidationOptions(version="2.1"))
    problems = [str(e) for e in result.errors]
    assert result.is_valid, "\n".join(problems)
    return r.json()


def test_every_exported_bundle_is_valid_stix(server):
    fill(server)
    exports = [
        get(server, "/stix/org/ips"),
        get(server, "/stix/org/misc"),
        get(server, "/stix/org/misc?untyped=include"),
        get(server, "/stix/org?recursive"),
        get(server, "/stix/org?recursive&untyped=include&limit=4"),
        get(server, "/stix/org/ips", params={"val": "198.51.100.7"}),
        get(server, "/stix/org/misc", params={"val": "http://evil.example/a'b\\c"}),
        post(server, "/_api/stix", {"namespaces": ["org/ips", "org/misc/hashes", "nope"]}),
        post(server, "/_api/stix", {"namespace": "org", "recursive": True, "untyped": "include", "q": "evil"}),
    ]
    bundles = [assert_valid(r) for r in exports]
    whole = bundles[4 - 1]
    sightings = [o for o in whole["objects"] if o["type"] == "sighting"]
    assert len(sightings) == len(VALUES) - 1, [(o["x_sightingdb_namespace"], o["sighting_of_ref"]) for o in sightings]
    assert exports[3].headers["X-SightingDB-Skipped"] == "1"
    assert exports[4].headers["X-SightingDB-Truncated"] == "true"
    assert exports[7].headers["X-SightingDB-Missing"] == "nope"
    ids = {o["id"] for o in whole["objects"] if o["type"] == "indicator"}
    assert "indicator--9299f726-ce06-492e-8472-2b52ccb53191" in ids  # the stix-id: tag


def views(server, pairs):
    con = sightingdb.connection(host="127.0.0.1", port=server.port, apikey=server.key)
    con.disable_ssl_warnings()
    r = sightingdb.reader(con)
    for ns, value in pairs:
        r.add(ns, value)
    return {(ns, v["value"]): v for (ns, _), v in zip(pairs, r.fetch())}


def import_stix(data_dir, path):
    out = subprocess.run(
        [str(binary_path()), "import-stix", "--data-dir", str(data_dir), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_an_exported_bundle_reimported_gives_the_same_sightings(start_server, tmp_path):
    source = start_server()
    fill(source)
    bundle = assert_valid(post(source, "/_api/stix", {"namespace": "org", "recursive": True}))
    path = tmp_path / "org.json"
    path.write_text(json.dumps(bundle))
    typed = [(ns, v) for ns, v, _, _ in VALUES if v != "just some text"]
    before = views(source, typed)

    copy = tmp_path / "copy"
    first = import_stix(copy, path)
    assert f"{len(typed)} values with new sightings" in first, first
    again = import_stix(copy, path)
    assert f"{len(typed)} already imported" in again, again

    target = start_server(data_dir=copy)
    after = views(target, typed)
    for key in typed:
        b, a = before[key], after[key]
        assert "error" not in a, (key, a)
        assert (a["count"], a["first_seen"], a["last_seen"]) == (b["count"], b["first_seen"], b["last_seen"]), key
    # Exported again, the copy gives the same indicators and sightings.
    round_trip = assert_valid(post(target, "/_api/stix", {"namespace": "org", "recursive": True}))

    def objects(b, kind):
        return sorted(
            (o["id"], o.get("count"), o.get("pattern"), o.get("first_seen"), o.get("last_seen"))
            for o in b["objects"]
            if o["type"] == kind
        )

    for kind in ("indicator", "sighting", "marking-definition"):
        assert objects(round_trip, kind) == objects(bundle, kind), kind


@pytest.mark.parametrize(
    "body,status,answer",
    [
        ({"namespaces": []}, 400, {"message": "Name at least one namespace to export."}),
        ({"namespaces": ["nope"]}, 404, {"error": "Path not found", "namespace": "nope", "value": ""}),
    ],
)
def test_bad_export_requests_are_4xx(server, body, status, answer):
    fill(server)
    r = post(server, "/_api/stix", body)
    assert (r.status_code, r.json()) == (status, answer)


def test_a_wrongly_typed_request_is_a_400_saying_why(server):
    r = post(server, "/_api/stix", {"namespaces": "org"})
    assert r.status_code == 400
    assert "invalid type" in r.json()["message"]
