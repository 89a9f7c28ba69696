"""TAXII 2.1 over the exchange log, read by the real `taxii2-client` (discovery, API root,
collections, objects and manifest with paging), every page valid for `stix2-validator`.

Many messages accepted in the same second share one `date_added`: paging by `next` (the log
cursor) must lose none of them, which timestamp-based paging would."""

import json
import uuid

import requests
import stix2validator
from taxii2client.v21 import Server, as_pages

ORG = "6f0a3a1e-8a51-4c43-9d8a-2b8f6a4c2a11"
READER = "taxii-reader-key-0123456789"
N = 120


def event(i, tags=(), links=None, uid=None):
    meta = {"uuid": uid or str(uuid.uuid4()), "uuid_org": ORG, "tags": list(tags)}
    if links:
        meta["intelmq:links"] = links
    return {
        "format": "intelmq",
        "version": 1,
        "type": "event",
        "meta": meta,
        "payload": {
            "source.ip": f"198.51.{i // 250}.{i % 250 + 1}",
            "source.fqdn": f"host{i}.evil.example",
            "classification.type": "c2-server",
            "feed.name": "test",
            "tlp": "GREEN",
        },
    }


def config():
    return (
        f'[exchange]\norg = "{ORG}"\n\n[bridge]\nenabled = false\n\n'
        f'[exchange.keys."{READER}"]\norg = "{ORG}"\nread = ["intelmq/event", "tag:feed:x"]\n'
        'tlp_max = "GREEN"\n'
    )


def publish(srv, messages):
    body = "\n".join(json.dumps(m) for m in messages)
    r = requests.post(
        f"{srv.url}/iep04/messages",
        data=body,
        headers={"Authorization": srv.key, "Content-Type": "application/x-ndjson"},
        verify=False,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()


def validate(objects):
    bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}
    results = stix2validator.validate_string(json.dumps(bundle))
    assert results.is_valid, stix2validator.print_results(results) or results.as_dict()


def test_taxii2_client_reads_every_object_with_paging_and_they_validate(start_server, monkeypatch):
    # requests lets a CA bundle named in the environment override the client's verify=False
    # (the server's certificate is self-signed here).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    srv = start_server(config=config())
    first = [event(i) for i in range(N)]
    tagged = [event(N + i, tags=["feed:x"]) for i in range(5)]
    publish(srv, first + tagged)
    withdrawn = first[3]["meta"]["uuid"]
    w = str(uuid.uuid4())
    publish(srv, [event(N + 10, uid=w, links=[{"left_side": w, "type": "withdraws", "right_side": withdrawn}])])

    server = Server(f"{srv.url}/taxii2/", user="k", password=READER, verify=False)
    assert server.title == "sighthub TAXII 2.1"
    root = server.default
    assert root.versions == ["application/taxii+json;version=2.1"]
    cols = {c.title: c for c in root.collections}
    assert set(cols) == {"IEP04 feed intelmq/event", "IEP04 feed tag:feed:x"}, cols
    events = cols["IEP04 feed intelmq/event"]
    assert events.can_read and not events.can_write

    # Pages of at most 50 objects, followed by `next`: every message's objects, none twice.
    objects = []
    for page in as_pages(events.get_objects, per_request=50):
        got = page.get("objects", [])
        assert len(got) <= 50
        validate(got)
        objects.extend(got)
    indicators = [o for o in objects if o["type"] == "indicator"]
    sightings = [o for o in objects if o["type"] == "sighting"]
    assert len(sightings) == N + 5 + 1
    live = [o for o in indicators if not o.get("revoked")]
    revoked = [o for o in indicators if o.get("revoked")]
    assert len(live) == N + 5 + 1
    assert len(revoked) == 1
    assert revoked[0]["id"] in {o["id"] for o in live}, "a later version of the withdrawn one"
    ips = {o["value"] for o in objects if o["type"] == "ipv4-addr"}
    assert len(ips) == N + 5 + 1

    # The manifest lists the same objects (same paging), and they share date_added values.
    manifest = []
    for page in as_pages(events.get_manifest, per_request=40):
        manifest.extend(page.get("objects", []))
    assert sorted((m["id"], m["version"]) for m in manifest) == sorted(
        (o["id"], o.get("modified", o.get("created"))) for o in objects
    )
    assert len({m["date_added"] for m in manifest}) < len(manifest) / 10

    # added_after past everything: nothing; match[type] filters.
    last = max(m["date_added"] for m in manifest)
    assert not events.get_objects(added_after=last).get("objects")
    only = events.get_objects(type="indicator", limit=1000)
    assert {o["type"] for o in only["objects"]} == {"indicator"}

    # The tag collection sees only the tagged messages.
    tag_objs = cols["IEP04 feed tag:feed:x"].get_objects(limit=1000)["objects"]
    assert len([o for o in tag_objs if o["type"] == "sighting"]) == 5
    validate(tag_objs)

    # No key: 401; an unknown key: 403; a TAXII error body.
    r = requests.get(f"{srv.url}/taxii2/", verify=False)
    assert r.status_code == 401
    r = requests.get(f"{srv.url}/taxii2/", auth=("k", "nope"), verify=False)
    assert r.status_code == 403 and r.json()["http_status"] == "403"
    r = requests.get(
        f"{srv.url}/taxii2/", auth=("k", READER), verify=False, headers={"Accept": "text/html"}
    )
    assert r.status_code == 406
