"""Issue 14, the MISP loop, end to end with MISP's two sides reproduced exactly
(../shared/specs/misp-integration.md): a pyzmq PUB socket sends MISP's `<topic> <json>` frames
to the real sighthub's `[zmq]` ingest, then a client sends MISP's own lookups (`GET /i`, and
`POST /rb` with SHA-256 digests, MISP's two headers and NO key) and sees the counts. The
publisher is restarted and what it publishes afterwards arrives; malformed frames are skipped
without stopping the ingest. Everything on 127.0.0.1, bounded in time."""

import hashlib
import json
import socket
import time

import pytest
import requests
import zmq

# What MISP sends, and nothing else (Sightingdb model: no API-key field, no Authorization).
MISP_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
WAIT = 60  # seconds, for anything the test waits on


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(v):
    return hashlib.sha256(v.encode()).hexdigest()


def attribute(type_, value, to_ids=True, ts="1700000000", tags=(), **extra):
    """One attribute as MISP serialises it in its ZeroMQ messages."""
    a = {
        "id": "1", "event_id": "7", "object_id": "0", "object_relation": None,
        "category": "Network activity", "type": type_, "value": value, "to_ids": to_ids,
        "uuid": "5f1c3a2e-0a4b-4c8e-9d2f-%012d" % abs(hash(value) % 10**12),
        "timestamp": ts, "distribution": "5", "sharing_group_id": "0", "comment": "",
        "deleted": False, "disable_correlation": False, "first_seen": None, "last_seen": None,
        "Tag": [{"id": "3", "name": t, "colour": "#ffc000", "exportable": True} for t in tags],
    }
    a.update(extra)
    return a


def event_frame(attributes, objects=(), tags=("tlp:amber",)):
    event = {
        "Event": {
            "id": "7", "orgc_id": "1", "org_id": "1", "date": "2023-11-14",
            "threat_level_id": "1", "info": "sighthub test event", "published": True,
            "uuid": "6a3d1c2b-4e5f-4a7b-8c9d-0e1f2a3b4c5d", "attribute_count": str(len(attributes)),
            "analysis": "2", "timestamp": "1700000900", "distribution": "1",
            "publish_timestamp": "1700001000", "sharing_group_id": "0",
            "Org": {"id": "1", "name": "ORGNAME", "uuid": "5c8f0a8e-4c3c-4a8e-9a6b-0b7c4d2e1f30"},
            "Orgc": {"id": "1", "name": "ORGNAME", "uuid": "5c8f0a8e-4c3c-4a8e-9a6b-0b7c4d2e1f30"},
            "Tag": [{"id": "1", "name": t, "colour": "#ffc000", "exportable": True} for t in tags],
            "Attribute": list(attributes),
            "Object": [{"id": "2", "name": "file", "meta-category": "file", "Attribute": list(o)}
                       for o in objects],
        }
    }
    return "misp_json " + json.dumps(event)


def attribute_frame(attr, action="add"):
    return "misp_json_attribute " + json.dumps({"Attribute": attr, "action": action})


class Publisher:
    """MISP's PUB socket (mispzmq): one string frame per message."""

    def __init__(self, port):
        self.port = port
        self.ctx = zmq.Context()
        self.open()

    def open(self):
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:%d" % self.port)

    def restart(self):
        self.sock.close(linger=0)
        time.sleep(0.5)  # the subscriber sees the connection drop
        self.open()

    def send(self, frame):
        self.sock.send_string(frame)

    def close(self):
        self.sock.close(linger=0)
        self.ctx.term()


def misp_lookup(srv, namespace, values):
    """POST /rb exactly as MISP does: digests of the values, no key."""
    body = {"items": [{"namespace": namespace, "value": sha256(v)} for v in values]}
    return requests.post(srv.url + "/rb", data=json.dumps(body), headers=MISP_HEADERS,
                         verify=False, timeout=10)


def admin_count(srv, ns, value):
    r = requests.get(srv.url + "/r/%s" % ns, params={"val": value, "noshadow": ""},
                     headers={"Authorization": srv.key}, verify=False, timeout=10)
    return r.json().get("count", 0) if r.status_code == 200 else 0


def until_subscribed(pub, srv, tag):
    """Publishes probe attributes until the server records one: ZeroMQ PUB drops what is sent
    before a subscriber is connected, so this is how a publisher knows one is."""
    deadline = time.monotonic() + WAIT
    n = 0
    while time.monotonic() < deadline:
        n += 1
        probe = "probe-%s-%d.example" % (tag, n)
        pub.send(attribute_frame(attribute("hostname", probe)))
        for _ in range(5):
            time.sleep(0.1)
            if admin_count(srv, "misp/hostname", probe):
                return
    pytest.fail("sighthub never recorded a probe frame (%s); its log:\n%s" % (tag, srv.log()))


def wait_for(what, check):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail("timed out waiting for " + what)


def test_misp_publishes_sighthub_counts_misp_looks_up(start_server):
    port = free_port()
    pub = Publisher(port)
    try:
        srv = start_server(config=(
            '[acl]\nanonymous = "r:misp"\n\n'
            '[zmq]\nenabled = true\nendpoint = "tcp://127.0.0.1:%d"\n'
            'hashed_namespace = "misp/hashed"\n' % port))

        # MISP's connection test: GET /i without a key, 200 and a non-empty implementation.
        i = requests.get(srv.url + "/i", headers=MISP_HEADERS, verify=False, timeout=10)
        assert i.status_code == 200 and i.json()["implementation"], i.text

        until_subscribed(pub, srv, "start")

        # Malformed frames first: each is skipped, and the ingest goes on.
        for bad in ["misp_json {not json", "misp_json", "misp_json [1, 2]",
                    "misp_json_attribute {\"Attribute\": \"x\"}"]:
            pub.send(bad)
        pub.sock.send_multipart([b"misp_json", b"{}"])  # not one frame

        ip, domain_ip, sha = "198.51.100.7", "evil.example|203.0.113.9", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        pub.send(event_frame(
            [attribute("ip-dst", ip, tags=["c2"]),
             attribute("domain|ip", domain_ip, to_ids=False, ts="1700000300"),
             attribute("comment", "seen on a pastebin", to_ids=False)],
            objects=[[attribute("sha256", sha, ts="1700000600", category="Payload delivery")]]))
        # The same address again, as MISP publishes an edited attribute.
        pub.send(attribute_frame(attribute("ip-dst", ip, ts="1700000500"), action="edit"))
        # A deletion records nothing.
        pub.send(attribute_frame(attribute("ip-dst", "192.0.2.250"), action="delete"))
        wait_for("the edited attribute", lambda: admin_count(srv, "misp/ip", ip) == 2)

        # MISP's lookup: one item per distinct attribute value, digests, no key.
        values = [ip, domain_ip, sha, "seen on a pastebin", "192.0.2.250"]
        r = misp_lookup(srv, "misp/hashed", values)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert "error" not in answer
        items = answer["items"]
        by_digest = {it["value"]: it for it in items if "error" not in it}
        assert set(by_digest) == {sha256(ip), sha256(domain_ip), sha256(sha)}, items
        assert by_digest[sha256(ip)]["count"] == 2
        assert (by_digest[sha256(ip)]["first_seen"], by_digest[sha256(ip)]["last_seen"]) == (
            1700000000, 1700000500)
        assert by_digest[sha256(domain_ip)]["count"] == 1
        assert by_digest[sha256(domain_ip)]["first_seen"] == 1700000300
        assert by_digest[sha256(sha)]["count"] == 1
        # Not observables, or deleted: MISP ignores entries with "error".
        assert [it.get("error") for it in items[3:]] == ["Value not found"] * 2

        # The halves of the composite, the event's and attribute's tags, under the prefix.
        assert admin_count(srv, "misp/domain", "evil.example") == 1
        assert admin_count(srv, "misp/ip", "203.0.113.9") == 1
        tagged = requests.get(srv.url + "/r/misp/ip", params={"val": ip, "noshadow": ""},
                              headers={"Authorization": srv.key}, verify=False, timeout=10).json()
        assert set(tagged["tags"].split(",")) == {"c2", "tlp:amber"}, tagged

        # Anonymous is read-only and only under misp/; a wrong key never becomes anonymous.
        w = requests.get(srv.url + "/w/misp/ip", params={"val": "x"}, verify=False, timeout=10)
        assert w.status_code == 401, w.text
        other = requests.post(srv.url + "/rb", headers=MISP_HEADERS, verify=False, timeout=10,
                              data=json.dumps({"items": [{"namespace": "all", "value": sha256(ip)}]}))
        assert other.status_code == 401, other.text
        wrong = requests.post(srv.url + "/rb", headers=dict(MISP_HEADERS, Authorization="nope"),
                              data=json.dumps({"items": [{"namespace": "misp/hashed",
                                                          "value": sha256(ip)}]}),
                              verify=False, timeout=10)
        assert wrong.status_code == 403, wrong.text

        # MISP restarts: its publisher goes away and comes back on the same port.
        pub.restart()
        until_subscribed(pub, srv, "restart")
        after = "203.0.113.77"
        pub.send(event_frame([attribute("ip-src", after, ts="1700002000")]))
        wait_for("a frame published after the restart",
                 lambda: misp_lookup(srv, "misp/hashed", [after]).json()["items"][0].get("count") == 1)
        assert misp_lookup(srv, "misp/hashed", [ip]).json()["items"][0]["count"] == 2

        assert any("[zmq] frame skipped" in line for line in srv.lines), srv.log()
        # The skipped frames are counted where an operator sees them: GET /metrics (the three
        # malformed frames of the subscribed topics; the other two never reach a subscriber).
        metrics = requests.get(f"{srv.url}/metrics", headers={"Authorization": srv.key},
                               verify=False, timeout=10).text
        malformed = [l for l in metrics.splitlines() if l.startswith(
            'sighthub_worker_records_total{worker="misp-zmq",outcome="malformed"}')]
        assert malformed and float(malformed[0].split()[-1]) == 3, metrics
    finally:
        pub.close()
